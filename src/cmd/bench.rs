//! `fruits bench`

use std::process::ExitCode;
use std::time::Instant;

use fruits::input::list_location;
use fruits::model::engine::Dtype;
use fruits::model::{self, DeviceChoice, Engine, Which};
use fruits::storage::{FetchLimits, Location, S3Options, Storage};
use fruits::weights::Source;

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
    }
}

fn infer(a: InferArgs) -> anyhow::Result<ExitCode> {
    let device = model::device(a.device)?;
    let mut m = fruits::weights::load(a.model, Some(&a.weights), &device)?;
    m.set_engine(a.engine, a.dtype)?;
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
