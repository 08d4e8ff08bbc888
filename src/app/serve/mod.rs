//! `fruits serve`: the app's engine over HTTP (axum on tokio, the runtime
//! the S3 layer already uses). [`routes`] answers, [`batcher`] shares one
//! network call among concurrent requests, [`metrics`] counts.
//!
//! Nothing a client sends, or does not send, may crash or stall the server:
//!
//! - **Connections** ([`serve`]): at most `max_connections` open; each gets
//!   `header_timeout` for its request headers, from its first byte as for
//!   every later request on it (so a socket that sends nothing, or stays
//!   idle between requests, is closed). HTTP/1.1 only: no browser speaks
//!   HTTP/2 without TLS, TLS ends at the load balancer (which speaks
//!   HTTP/1.1 to its targets), and HTTP/2's protocol detection, idle
//!   streams and pings would each need a deadline of their own.
//! - **Requests** ([`routes::router`], as layers): `request_timeout` for the
//!   whole answer (408), `max_in_flight` photos received at once (503
//!   beyond, at once: load shedding, not a queue), `max_body` bytes (413);
//!   each upload must have arrived within `upload_timeout` (408), so a slow
//!   uploader holds its slot for that long at most.
//! - **Work**: a photo's header is read first, and one over `max_pixels` is
//!   refused before any pixel is decoded (413); decodes take a permit of
//!   their own (`max_decoding`), held by the decoding thread itself, so a
//!   request that timed out frees it only once its decode is over; a
//!   bounded queue to the network (503 beyond).
//!
//! SIGTERM or Ctrl-C stops accepting, lets requests in flight finish (up to
//! `drain_timeout`), and returns. SIGHUP takes up a new index from where
//! the first came from ([`IndexSource`]) without stopping: requests in
//! flight finish with the old one, the next ones get the new one; one that
//! does not load, or that the model cannot answer for, is refused and the
//! old one kept. `/metrics` is served on its own address (`metrics_addr`),
//! never on the public one.

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
use tokio::sync::{watch, Semaphore};

use crate::app::identify::Identifier;
use crate::app::index::Index;
use crate::error::{Error, Result};
use batcher::{BatchOptions, Batcher};

#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    /// Where `/metrics` is served; `None`: nowhere.
    pub metrics_addr: Option<SocketAddr>,
    pub header_timeout: Duration,
    pub drain_timeout: Duration,
    pub max_connections: usize,
    pub limits: routes::Limits,
    pub batch: BatchOptions,
}

/// Loads the index again (from its folder or S3 prefix) for SIGHUP.
pub type IndexSource = Arc<dyn Fn() -> Result<Index> + Send + Sync>;

/// Serves until `shutdown` resolves; `on_listening` gets the bound
/// addresses, the app's then the metrics' (port 0 picks a free one).
pub async fn serve(
    engine: Arc<Identifier>,
    config: Config,
    reload: Option<IndexSource>,
    on_listening: impl FnOnce(SocketAddr, Option<SocketAddr>),
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr).await.map_err(|source| Error::Listen { addr, source })
    };
    let listener = bind(config.addr).await?;
    let metrics_listener = match config.metrics_addr {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    on_listening(listener.local_addr()?, metrics_listener.as_ref().map(|l| l.local_addr()).transpose()?);
    let metrics = Arc::new(metrics::Metrics::new());
    let state = Arc::new(routes::AppState {
        batcher: Batcher::start(engine.clone(), config.batch, metrics.clone()),
        engine,
        metrics: metrics.clone(),
        decoding: Arc::new(Semaphore::new(config.limits.max_decoding)),
        limits: config.limits.clone(),
    });
    let (stop, stopped) = watch::channel(false);
    let side = metrics_listener.map(|l| {
        let (app, config, stopped) = (routes::metrics_router(metrics), config.clone(), stopped.clone());
        tokio::spawn(async move { accept(l, app, &config, stopped).await })
    });
    if let Some(source) = reload {
        tokio::spawn(reload_on_hangup(engine_of(&state), source));
    }
    let main = accept(listener, routes::router(state.clone()), &config, stopped);
    tokio::pin!(main);
    tokio::select! {
        () = &mut main => {}
        () = shutdown => {
            let _ = stop.send(true);
            main.await;
        }
    }
    if let Some(side) = side {
        let _ = side.await;
    }
    drop(state);
    Ok(())
}

/// Accepts connections on `listener` and serves `app` on each until `stop`
/// turns true, then drains. The loop is ours, not `axum::serve`'s: that one
/// exposes neither a cap on open connections nor hyper's header timeout.
async fn accept(listener: TcpListener, app: axum::Router, config: &Config, mut stop: watch::Receiver<bool>) {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder.http1().timer(TokioTimer::new()).header_read_timeout(config.header_timeout).keep_alive(true);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(config.max_connections));
    loop {
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = stopped(&mut stop) => break,
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
            () = stopped(&mut stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service).into_owned());
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
}

fn engine_of(state: &routes::AppState) -> Arc<Identifier> {
    state.engine.clone()
}

/// Each SIGHUP: load the index again and answer from it, or say why not
/// and keep the one answering now.
async fn reload_on_hangup(engine: Arc<Identifier>, source: IndexSource) {
    #[cfg(unix)]
    {
        let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            eprintln!("fruits serve: cannot listen for SIGHUP: the index will not be reloaded");
            return;
        };
        while hangups.recv().await.is_some() {
            let (engine, source) = (engine.clone(), source.clone());
            // A thread of its own, outside the runtime: reading from S3
            // runs the storage's own runtime, which cannot start inside this one.
            let (done, loaded) = tokio::sync::oneshot::channel();
            std::thread::spawn(move || {
                let _ = done.send(source().and_then(|i| engine.replace_index(i).map(|()| engine)));
            });
            match loaded.await {
                Ok(Ok(engine)) => {
                    let index = engine.index();
                    eprintln!("fruits serve: index reloaded: version {}, {} rows", index.version(), index.len());
                }
                Ok(Err(e)) => eprintln!("fruits serve: index not reloaded, the old one still answers: {}", chain(&e)),
                Err(_) => eprintln!("fruits serve: index not reloaded: the loading thread died"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (engine, source);
}

/// An error and its causes, `a: b: c`.
fn chain(e: &Error) -> String {
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        out = format!("{out}: {c}");
        cause = c.source();
    }
    out
}

/// Resolves once `stop` says so (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
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
