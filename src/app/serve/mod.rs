//! `fruits serve`: the app's engine over HTTP (axum on tokio, the runtime
//! the S3 layer already uses). [`routes`] answers, [`batcher`] shares one
//! network call among concurrent requests, [`metrics`] counts.
//!
//! Limits, so nothing a client sends can crash or stall the server: body
//! size (`max_body`), headers within `header_timeout`, the whole request
//! within `request_timeout`, at most `max_connections` open connections
//! and `max_in_flight` photos being read or decoded (beyond: 503), a
//! bounded queue to the network. SIGTERM or Ctrl-C stops accepting, lets
//! requests in flight finish (up to `drain_timeout`), and returns.

pub mod batcher;
pub mod metrics;
pub mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::app::identify::Identifier;
use crate::error::{Error, Result};
use batcher::{BatchOptions, Batcher};

#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub max_body: usize,
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    pub drain_timeout: Duration,
    pub max_connections: usize,
    pub max_in_flight: usize,
    pub batch: BatchOptions,
}

/// Serves until `shutdown` resolves; `on_listening` gets the bound address
/// (port 0 picks a free one).
pub async fn serve(
    engine: Arc<Identifier>,
    config: Config,
    on_listening: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let listener =
        TcpListener::bind(config.addr).await.map_err(|source| Error::Listen { addr: config.addr, source })?;
    on_listening(listener.local_addr()?);
    let metrics = Arc::new(metrics::Metrics::new());
    let state = Arc::new(routes::AppState {
        batcher: Batcher::start(engine.clone(), config.batch, metrics.clone()),
        engine,
        metrics,
        max_body: config.max_body,
        decoding: Arc::new(Semaphore::new(config.max_in_flight)),
    });
    let app = routes::router(state.clone(), config.request_timeout);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(config.header_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(config.max_connections));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    eprintln!("fruits serve: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    eprintln!("fruits serve: stopping: no new connections; finishing requests in flight");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(config.drain_timeout) => {
            eprintln!("fruits serve: requests still open after {:?}; closing them", config.drain_timeout);
        }
    }
    drop(app);
    drop(state);
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub async fn stop_signal() {
    let term = async {
        #[cfg(unix)]
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
        #[cfg(not(unix))]
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
