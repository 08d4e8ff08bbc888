//! `fruits bench`

use std::process::ExitCode;
use std::time::Instant;

use fruits::engine::cpu_id::CpuId;
use fruits::engine::peak;
use fruits::engine::simd::{simd, Simd, LEVELS};
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
    /// This CPU's measured multiply-add peak, all threads together, for every vector
    /// level it has (up to FRUITS_SIMD's cap): the figure `bench infer` gives its
    /// "% of peak" against. One line per level, with the CPU it was measured on.
    Peak(PeakArgs),
}

#[derive(Debug, clap::Args)]
struct PeakArgs {
    /// Seconds of measurement per level and dtype.
    #[arg(long, default_value_t = 1.0, value_parser = positive_seconds)]
    seconds: f64,
    /// As one JSON object.
    #[arg(long)]
    json: bool,
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x > 0.0 && x <= 60.0 => Ok(x),
        _ => Err(format!("'{s}' is not a number of seconds in (0, 60]")),
    }
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
    /// Then run the images again with a clock on each block, and print each
    /// block's share of the time, GFLOP/s per thread and % of a thread's peak
    /// (the native engine on the CPU only).
    #[arg(long)]
    blocks: bool,
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
            say!(
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
        What::Peak(a) => peak(a),
    }
}

fn infer(a: InferArgs) -> anyhow::Result<ExitCode> {
    let device = super::device(a.device, engine::cpu_only(a.engine, a.dtype))?;
    if a.blocks && !(device.is_cpu() && a.engine == Engine::Native) {
        return Err(super::usage(
            "--blocks times the native engine's blocks on the CPU: not with --engine candle or a GPU",
        ));
    }
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
                     // This CPU's peak on the same threads, just before and just after the
                     // run: a neighbour's load on a shared machine shows as a spread.
    let measure_peak = || {
        (m.target.is_cpu() && a.engine == Engine::Native)
            .then(|| peak::measure(simd(), std::time::Duration::from_millis(300)))
    };
    let before = measure_peak();
    let batches = a.images.div_ceil(b).max(1);
    let start = Instant::now();
    for _ in 0..batches {
        // Returns once the features are back in host memory (on a GPU too).
        m.features(&x)?;
    }
    let secs = start.elapsed().as_secs_f64();
    let rate = (batches * b) as f64 / secs;
    say!(
        "{} images, {} batches of {b}, {} {}: {:.1} images/s inference only",
        batches * b,
        batches,
        a.model,
        a.dtype,
        rate
    );
    if let (Some(p0), Some(p1)) = (before, measure_peak()) {
        print_share_of_peak(rate, m.macs_per_image()?, a.dtype, &p0, &p1);
        if a.blocks {
            let per_thread = |p: &peak::Peak| match a.dtype {
                Dtype::Bf16 => p.bf16_gflops.unwrap_or(p.f32_gflops),
                _ => p.f32_gflops,
            } / p.threads as f64;
            m.clock_blocks(true);
            for _ in 0..batches {
                m.features(&x)?;
            }
            m.clock_blocks(false);
            print_blocks(&m.block_times()?, batches * b, (per_thread(&p0) + per_thread(&p1)) / 2.0);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--blocks`: each block's share of the thread time, and its speed per
/// thread against a thread's share of the peak (`peak`, GFLOP/s).
fn print_blocks(blocks: &[(String, u64, std::time::Duration)], images: usize, peak: f64) {
    let total: f64 = blocks.iter().map(|(_, _, t)| t.as_secs_f64()).sum();
    say!("per block, {images} images again with a clock on each (thread time, summed over threads):");
    say!("{:>5} {:>9} {:>7} {:>10} {:>7}  what", "block", "MMAC/img", "time %", "GF/s/thr", "% peak");
    for (i, (what, macs, t)) in blocks.iter().enumerate() {
        let gflops = 2.0 * *macs as f64 * images as f64 / t.as_secs_f64().max(1e-9) / 1e9;
        say!(
            "{:>5} {:>9.1} {:>7.1} {:>10.1} {:>7.0}  {what}",
            if i + 1 == blocks.len() { "head".to_string() } else { i.to_string() },
            *macs as f64 / 1e6,
            100.0 * t.as_secs_f64() / total,
            gflops,
            100.0 * gflops / peak
        );
    }
    say!("a thread's peak: {peak:.1} GFLOP/s (the run's measured peak over its threads)");
}

/// The rate as a share of the CPU's FMA peak (the mean of the measurements
/// before and after; a GPU's peak is not measured here).
fn print_share_of_peak(rate: f64, macs: u64, dtype: Dtype, p0: &peak::Peak, p1: &peak::Peak) {
    let gflop = 2.0 * macs as f64 / 1e9;
    let gflops = rate * gflop;
    let f32_peak = (p0.f32_gflops + p1.f32_gflops) / 2.0;
    let spread = (p0.f32_gflops - p1.f32_gflops).abs() / f32_peak;
    let of_bf16 = match (dtype, p0.bf16_gflops, p1.bf16_gflops) {
        (Dtype::Bf16, Some(g0), Some(g1)) => {
            format!(", {:.0}% of its bf16 peak {:.0}", 200.0 * gflops / (g0 + g1), (g0 + g1) / 2.0)
        }
        _ => String::new(),
    };
    say!(
        "{gflops:.1} GFLOP/s ({gflop:.2} GFLOP an image) = {:.0}% of this CPU's f32 peak {f32_peak:.0} GFLOP/s{of_bf16} \
         ({}, {}, {} threads; `fruits bench peak`)",
        100.0 * gflops / f32_peak,
        CpuId::get().describe(),
        p0.level.name(),
        p0.threads
    );
    if spread > 0.1 {
        say!(
            "warning: the peak measured {:.0} before and {:.0} GFLOP/s after the run: this machine is shared \
             or throttling, and the share above is only as good as that",
            p0.f32_gflops,
            p1.f32_gflops
        );
    }
}

fn peak(a: PeakArgs) -> anyhow::Result<ExitCode> {
    let each = std::time::Duration::from_secs_f64(a.seconds);
    let levels: Vec<Simd> = LEVELS.iter().copied().filter(|&l| l <= simd()).collect();
    let peaks: Vec<peak::Peak> = levels.iter().map(|&l| peak::measure(l, each)).collect();
    let id = CpuId::get();
    if a.json {
        let out = serde_json::json!({ "cpu": super::info::cpu_json(), "peaks": peaks });
        say!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    say!("{}: {}", id.describe(), id.brand);
    for p in &peaks {
        let bf16 = p.bf16_gflops.map(|g| format!(", bf16 {g:.1} GFLOP/s")).unwrap_or_default();
        say!(
            "peak {:<12} f32 {:.1} GFLOP/s{bf16} ({} threads, {:.1} per thread; {:.1} s)",
            p.level.name(),
            p.f32_gflops,
            p.threads,
            p.f32_gflops / p.threads as f64,
            p.seconds
        );
    }
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
    say!(
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
    say!(
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
