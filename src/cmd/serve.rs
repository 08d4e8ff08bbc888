//! `fruits serve`

use clap::builder::TypedValueParser as _;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use fruits::app::index::files;
use fruits::app::serve::batcher::BatchOptions;
use fruits::app::serve::routes::Limits;
use fruits::app::serve::{serve, stop_signal, Config, IndexSource};
use fruits::storage::{S3Options, Storage};

use super::identify::EngineArgs;
use super::parse::parse_bytes;

/// Serve the app's engine over HTTP: a page for phones and a JSON API.
///
///   GET  /             a page: take or choose a photo, see the fruit and what it is
///   POST /v1/identify  the photo's bytes (raw body, or a multipart form's file) →
///                      JSON: fruit, score, top labels, nearest photos, information, timings
///   GET  /healthz      JSON: model, weights, index size
///   GET  /metrics      on --metrics-addr only: requests by status, latency, batch sizes
///
/// Photos are read into memory, answered and dropped: never written to disk nor logged.
/// Answers name the nearest indexed photos by label, not by file, unless --show-paths.
/// Every client meets a deadline (--header-timeout, --upload-timeout, --request-timeout)
/// and a bound (--max-connections, --max-in-flight, --max-body, --max-pixels): silent,
/// slow or huge-pixel clients cannot stall the others (HTTP/1.1 only: put TLS and HTTP/2
/// on the load balancer in front).
/// Concurrent requests share one network call (up to --max-batch, waiting at most
/// --max-wait-ms for company). SIGTERM or Ctrl-C stops accepting, finishes what is in
/// flight and exits 0. Listens on 127.0.0.1 unless --addr says otherwise.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    engine: EngineArgs,
    /// Address to listen on (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Where to serve GET /metrics (e.g. 127.0.0.1:9090, for Prometheus); not at all
    /// without it. Never on --addr: the counts are the operator's, not the public's.
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// Answers name the indexed photos' files (paths on this machine's disk).
    #[arg(long)]
    show_paths: bool,
    /// Largest upload accepted (413 beyond).
    #[arg(long, default_value = "16M", value_parser = parse_bytes)]
    max_body: u64,
    /// Photos per network call at most.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..1025).map(|v| v as usize))]
    max_batch: usize,
    /// How long the first photo of a batch waits for others, in milliseconds.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(0..1001))]
    max_wait_ms: u64,
    /// Photos queued for the network at most (503 beyond).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..100_001).map(|v| v as usize))]
    queue: usize,
    /// Photos being received at once at most (503 beyond, at once).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..100_001).map(|v| v as usize))]
    max_in_flight: usize,
    /// Photos being decoded at once at most (more wait; default: the CPU's threads).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..10_001).map(|v| v as usize))]
    max_decoding: Option<usize>,
    /// Largest photo in pixels, read from its header before any is decoded (413 beyond).
    /// The default takes a 48-megapixel phone photo.
    #[arg(long, default_value_t = 50_000_000, value_parser = clap::value_parser!(u64).range(1..=1_073_741_824))]
    max_pixels: u64,
    /// Open connections at most (more wait to be accepted).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..1_000_001).map(|v| v as usize))]
    max_connections: usize,
    /// Seconds a connection has to send its request headers, from its first byte and
    /// between requests (a silent or idle connection is closed after it).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..3601))]
    header_timeout: u64,
    /// Seconds an upload may take to arrive (408 beyond): how long a slow uploader
    /// holds one of --max-in-flight.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..3601))]
    upload_timeout: u64,
    /// Seconds a request may take, upload included (408 beyond).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..3601))]
    request_timeout: u64,
    /// Seconds to let requests in flight finish after SIGTERM.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..3601))]
    drain_timeout: u64,
}

pub fn run(args: Args, s3: &S3Options) -> anyhow::Result<ExitCode> {
    let storage = Storage::new(s3.clone());
    let engine = Arc::new(super::identify::open(&args.engine, &storage)?);
    if !args.addr.ip().is_loopback() {
        eprintln!("fruits serve: warning: listening on {}, reachable from other machines", args.addr);
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let config = Config {
        addr: args.addr,
        metrics_addr: args.metrics_addr,
        header_timeout: Duration::from_secs(args.header_timeout),
        drain_timeout: Duration::from_secs(args.drain_timeout),
        max_connections: args.max_connections,
        limits: Limits {
            max_body: usize::try_from(args.max_body).unwrap_or(usize::MAX),
            request_timeout: Duration::from_secs(args.request_timeout),
            upload_timeout: Duration::from_secs(args.upload_timeout),
            max_in_flight: args.max_in_flight,
            max_decoding: args.max_decoding.unwrap_or(threads),
            max_pixels: args.max_pixels,
            show_paths: args.show_paths,
        },
        batch: BatchOptions {
            max_batch: args.max_batch,
            max_wait: Duration::from_millis(args.max_wait_ms),
            queue: args.queue,
        },
    };
    let index = engine.index();
    let described =
        format!("{} rows of {} labels, version {}", index.meta.rows, index.meta.classes.len(), index.version());
    // SIGHUP loads the index again from where it came from.
    let at = args.engine.index.clone();
    let reload: IndexSource = Arc::new(move || {
        let scratch = tempfile::tempdir()?;
        files::open(&storage, &at, scratch.path())
    });
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("fruits-serve").build()?;
    runtime.block_on(serve(
        engine,
        config,
        Some(reload),
        |at, metrics| {
            say!("fruits serve: listening on http://{at} (index: {described})");
            if let Some(m) = metrics {
                say!("fruits serve: metrics on http://{m}/metrics");
            }
            let _ = std::io::stdout().flush();
        },
        stop_signal(),
    ))?;
    say!("fruits serve: stopped");
    Ok(ExitCode::SUCCESS)
}
