//! `fruits bench`

use std::process::ExitCode;
use std::time::Instant;

use fruits::engine::Dtype;
use fruits::engine::{self, DeviceChoice, Engine};
use fruits::model::weights::Source;
use fruits::model::Which;
use fruits::photos::input::list_location;
use fruits::storage::{FetchLimits, Location, S3Options, Storage};

/// Measure one stage of the pipeline on its own.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// Fetch every image under a folder or s3://bucket/prefix with --s3-concurrency
    /// requests in flight, decode nothing, and report objects/s and MB/s.
    Fetch { location: Location },
    /// Run the model alone on --images synthetic inputs in batches of --batch (no decode,
    /// no output) and report images/s: the inference-only number to hold against
    /// ONNX Runtime's (benches/compare).
    Infer(InferArgs),
    /// `identify` of one photo, warm, --runs times in one process: read, decode,
    /// network and search, as `fruits identify` does them; p50/p90/p99 in ms.
    Identify(IdentifyArgs),
    /// The engine's table: decode+resize, inference only and end to end, per dtype and
    /// batch size (1-256), on --device; peak host and device memory; --json FILE.
    Sweep(super::bench_sweep::SweepArgs),
    /// Exact nearest-neighbour search over --vectors synthetic unit vectors of width
    /// --dim: ms per query, one query per scan and --batch queries per scan.
    Search(SearchArgs),
}

#[derive(Debug, clap::Args)]
struct IdentifyArgs {
    photo: Location,
    #[command(flatten)]
    engine: super::identify::EngineArgs,
    #[arg(long, default_value_t = 200)]
    runs: usize,
}

#[derive(Debug, clap::Args)]
struct SearchArgs {
    #[arg(long, default_value_t = 1_000_000)]
    vectors: usize,
    #[arg(long, default_value_t = 64)]
    dim: usize,
    #[arg(long, default_value_t = 50)]
    queries: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    #[arg(long, default_value_t = 5)]
    k: usize,
}

#[derive(Debug, clap::Args)]
struct InferArgs {
    #[arg(long, value_enum, default_value_t = Which::MobileNetV2)]
    model: Which,
    /// A safetensors PATH, or random:SEED.
    #[arg(long, default_value = "random:0")]
    weights: Source,
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    batch: u32,
    /// Images in all (rounded up to whole batches); one extra batch warms up first.
    #[arg(long, default_value_t = 2000)]
    images: usize,
    #[arg(long, value_enum, default_value_t = Engine::Native)]
    engine: Engine,
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    dtype: Dtype,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Cpu)]
    device: DeviceChoice,
}

pub fn run(args: Args, s3: &S3Options) -> anyhow::Result<ExitCode> {
    match args.what {
        What::Fetch { location } => {
            let storage = Storage::new(s3.clone());
            let items = list_location(&storage, &location)?.items;
            let locs: Vec<Location> = items.iter().map(|it| it.location.clone()).collect();
            let start = Instant::now();
            let (mut bytes, mut failed) = (0usize, 0usize);
            // Nothing is kept: the window never needs to close.
            let window = std::sync::Arc::new(tokio::sync::Semaphore::new(locs.len().max(1)));
            storage.fetch_all(&locs, &FetchLimits::default(), &window, &mut |_, got| {
                match got {
                    Ok(b) => bytes += b.bytes.len(),
                    Err(_) => failed += 1,
                }
                true
            })?;
            let secs = start.elapsed().as_secs_f64();
            println!(
                "fetched {} objects ({} failed, {:.1} MB) in {secs:.2} s with {} in flight: {:.0} objects/s, {:.2} MB/s",
                locs.len(),
                failed,
                bytes as f64 / 1e6,
                s3.s3_concurrency,
                locs.len() as f64 / secs,
                bytes as f64 / 1e6 / secs
            );
            Ok(ExitCode::SUCCESS)
        }
        What::Infer(a) => infer(a),
        What::Identify(a) => identify(a, s3),
        What::Search(a) => search(a),
        What::Sweep(a) => super::bench_sweep::sweep(a, s3),
    }
}

fn infer(a: InferArgs) -> anyhow::Result<ExitCode> {
    let device = super::device(a.device, engine::cpu_only(a.engine, a.dtype))?;
    let m = fruits::engine::load_as(a.model, Some(&a.weights), &device, a.engine, a.dtype)?;
    let (b, r) = (a.batch as usize, a.model.resolution());
    // Fixed pseudo-random pixels: the kernels' cost does not depend on what
    // the image shows.
    let mut state = 0x9e37_79b9_u32;
    let x: Vec<u8> = (0..b * 3 * r * r)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect();
    m.features(&x)?; // warm-up: buffers grown, pages touched
    let batches = a.images.div_ceil(b).max(1);
    let start = Instant::now();
    for _ in 0..batches {
        // Returns once the features are back in host memory (on a GPU too).
        m.features(&x)?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} images, {} batches of {b}, {} {}: {:.1} images/s inference only",
        batches * b,
        batches,
        a.model,
        a.dtype,
        (batches * b) as f64 / secs
    );
    Ok(ExitCode::SUCCESS)
}

/// (p50, p90, p99) of `ms`.
fn percentiles(mut ms: Vec<f64>) -> (f64, f64, f64) {
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.9), at(0.99))
}

fn identify(a: IdentifyArgs, s3: &S3Options) -> anyhow::Result<ExitCode> {
    let storage = Storage::new(s3.clone());
    let engine = super::identify::open(&a.engine, &storage)?;
    let once = || -> anyhow::Result<[f64; 4]> {
        let t = Instant::now();
        let bytes = storage.read(&a.photo)?.ok_or_else(|| anyhow::anyhow!("{}: no such file", a.photo))?;
        let prepared = engine.prepare(&bytes).map_err(|r| anyhow::anyhow!("{}: {r}", a.photo))?;
        let decoded = t.elapsed().as_secs_f64() * 1e3;
        let features = engine.features(&[&prepared])?;
        let modelled = t.elapsed().as_secs_f64() * 1e3;
        let answer = engine.answer(&features);
        std::hint::black_box(answer);
        let total = t.elapsed().as_secs_f64() * 1e3;
        Ok([total, decoded, modelled - decoded, total - modelled])
    };
    for _ in 0..5 {
        once()?; // warm-up
    }
    let runs: Vec<[f64; 4]> = (0..a.runs.max(1)).map(|_| once()).collect::<anyhow::Result<_>>()?;
    let col = |i: usize| runs.iter().map(|r| r[i]).collect::<Vec<f64>>();
    let (p50, p90, p99) = percentiles(col(0));
    let median = |i: usize| percentiles(col(i)).0;
    println!(
        "identify {} ({} runs, index of {} × {}): p50 {p50:.2} ms, p90 {p90:.2} ms, p99 {p99:.2} ms \
         (medians: read+decode {:.2}, network {:.2}, search+vote {:.3})",
        a.photo,
        runs.len(),
        engine.index().len(),
        engine.index().dim(),
        median(1),
        median(2),
        median(3)
    );
    Ok(ExitCode::SUCCESS)
}

fn search(a: SearchArgs) -> anyhow::Result<ExitCode> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let unit = |rng: &mut rand_chacha::ChaCha8Rng, n: usize| -> Vec<f32> {
        let mut v: Vec<f32> = (0..n * a.dim).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        for row in v.chunks_mut(a.dim) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            row.iter_mut().for_each(|x| *x /= norm);
        }
        v
    };
    let vectors = fruits::app::index::search::Vectors::from_rows(&unit(&mut rng, a.vectors), a.dim);
    let queries = unit(&mut rng, a.queries.max(1));
    let nearest = fruits::app::index::search::nearest;
    nearest(&vectors, &queries[..a.dim], a.k); // warm-up: pages touched
    let mut single = Vec::new();
    for q in queries.chunks(a.dim) {
        let t = Instant::now();
        std::hint::black_box(nearest(&vectors, q, a.k));
        single.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (p50, _, p99) = percentiles(single);
    let batch = a.batch.clamp(1, a.queries.max(1));
    let t = Instant::now();
    let mut done = 0;
    for qs in queries.chunks(batch * a.dim) {
        std::hint::black_box(nearest(&vectors, qs, a.k));
        done += qs.len() / a.dim;
    }
    let per_query = t.elapsed().as_secs_f64() * 1e3 / done as f64;
    println!(
        "search {} vectors × {} f32 ({:.0} MB), k {}: one query per scan p50 {p50:.2} ms, p99 {p99:.2} ms; \
         {batch} queries per scan {per_query:.2} ms per query ({} threads, {})",
        a.vectors,
        a.dim,
        (a.vectors * a.dim * 4) as f64 / 1e6,
        a.k,
        rayon::current_num_threads(),
        fruits::engine::simd::simd().name()
    );
    Ok(ExitCode::SUCCESS)
}
