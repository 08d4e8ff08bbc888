//! `fruits featurize`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use fruits::image::preprocessing_description;
use fruits::input::{list_location, read_key_list};
use fruits::model::engine::Dtype;
use fruits::model::{self, DeviceChoice, Engine, Model, Which};
use fruits::output::part_stem;
use fruits::output::RunMeta;
use fruits::pipeline::ImageSource;
use fruits::pipeline::{self, Options};
use fruits::storage::{Location, S3Options, Storage};
use fruits::weights::{self, Source};

use super::EXIT_TOO_MANY_REJECTED;

/// The sample committed with the sources (real fruit photos, BSD licence).
const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fruits-360-sample");

/// Turn fruit photos into MobileNet feature vectors, written as Parquet.
///
/// Reads every image under --input (Fruits-360 layout: <root>/[Training|Test]/<Label>/<file>),
/// or the paths listed in --keys, decodes and resizes each to 224×224 on --threads threads,
/// runs the model in batches of --batch, and writes <output>/part-NNNNN.parquet
/// (path, label, split, features: list<float32> of 1280, width, height) plus
/// <output>/part-NNNNN.errors.csv (path, kind, reason) for images that could not be read.
/// A bad image never stops the run. Memory stays flat whatever the number of images;
/// on 2 CPU cores expect tens of images per second.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder of images, local or s3://bucket/prefix. Defaults to the small
    /// sample shipped in the repository.
    #[arg(long, default_value = SAMPLE, conflicts_with = "keys")]
    input: Location,

    /// File listing image paths or s3:// keys, one per line (`-` reads stdin), instead
    /// of --input (see `fruits list`).
    #[arg(long)]
    keys: Option<PathBuf>,

    /// Folder receiving the Parquet part, its statistics and its errors file
    /// (local or s3://bucket/prefix).
    #[arg(long, default_value = "out/features")]
    output: Location,

    /// Do nothing if this part is already complete at --output (resuming a run).
    #[arg(long)]
    skip_existing: bool,

    #[arg(long, value_enum, default_value_t = Which::MobileNetV2)]
    model: Which,

    /// Weights: a safetensors PATH, or random:SEED for deterministic random weights
    /// (offline tests; the features mean nothing). Default: the pinned hub file,
    /// downloaded once and checked against weights/manifest.json.
    #[arg(long)]
    weights: Option<Source>,

    /// Images per inference batch.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    batch: u32,

    /// Threads decoding and resizing images (default: one per core).
    #[arg(long)]
    threads: Option<usize>,

    /// Largest fraction of rejected images, in [0, 1], for which the run still succeeds.
    #[arg(long, default_value_t = 0.01, value_parser = parse_fraction)]
    max_rejected: f64,

    /// Number of this part (its file name); a retried part overwrites its own file.
    #[arg(long, default_value_t = 0)]
    part_id: u32,

    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,

    /// What runs the network on the CPU: native (fused NHWC kernels, one image per core)
    /// or candle (Candle's CPU backend, for comparison). The GPU always runs Candle.
    #[arg(long, value_enum, default_value_t = Engine::Native)]
    engine: Engine,

    /// Activations between layers: f32, or bf16 (native engine; twice the multiply-adds per
    /// instruction on CPUs with AVX512-BF16, features within cosine 0.999 of f32).
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    dtype: Dtype,

    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not a fraction in [0, 1]")),
    }
}

/// Loads the model from `--weights`, or from the pinned hub file.
pub fn load_model(which: Which, source: Option<&Source>, device: &candle_core::Device) -> anyhow::Result<Model> {
    Ok(match source {
        Some(Source::Random(seed)) => {
            eprintln!(
                "fruits: warning: random weights (random:{seed}): features are for testing only and mean nothing"
            );
            Model::random(which, *seed, device)?
        }
        Some(Source::File(path)) => Model::from_file(which, path, device)?,
        None => {
            let path = match weights::cached(which) {
                Some(p) => p,
                None => weights::fetch(which, None).with_context(|| {
                    format!(
                        "no --weights given and the pinned {which} weights are not cached; \
                             pass --weights PATH, or --weights random:SEED for a test run"
                    )
                })?,
            };
            weights::verify_pinned(&path, None, which)?;
            Model::from_file(which, &path, device)?
        }
    })
}

pub fn run(args: Args, s3: &S3Options) -> anyhow::Result<ExitCode> {
    if args.dtype == Dtype::Bf16 && args.engine == Engine::Candle {
        use clap::CommandFactory;
        let msg = "--dtype bf16 needs --engine native (Candle runs f32 only)";
        crate::cli::Cli::command().error(clap::error::ErrorKind::ArgumentConflict, msg).exit();
    }
    let storage = Storage::new(s3.clone());
    let part = args.output.join(&format!("{}.parquet", part_stem(args.part_id)));
    if args.skip_existing && storage.exists(&part)? {
        eprintln!("fruits: {part} is complete; skipping (--skip-existing)");
        return Ok(ExitCode::SUCCESS);
    }
    let items = match &args.keys {
        Some(list) => read_key_list(list)?,
        None => list_location(&storage, &args.input)?,
    };
    let device = model::device(args.device)?;
    let mut model = load_model(args.model, args.weights.as_ref(), &device)?;
    model.set_engine(args.engine, args.dtype)?;
    eprintln!("fruits: {} images, model {}, {}", items.len(), args.model, model.describe());
    if args.dtype == Dtype::Bf16 && model::engine::elem::simd() < model::engine::elem::Simd::Avx512Bf16 {
        eprintln!("fruits: warning: this CPU has no AVX512-BF16: bf16 runs portable loops, slower than --dtype f32");
    }
    let run = RunMeta {
        model: args.model.name().to_string(),
        weights: model.weights_id.clone(),
        preprocessing: preprocessing_description(args.model.resolution()),
        feature_dim: args.model.feature_dim(),
        dtype: args.dtype.name().to_string(),
    };
    let opts = Options {
        batch: args.batch as usize,
        decode_threads: args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        part_id: args.part_id,
    };
    if opts.decode_threads == 0 {
        bail!("--threads must be at least 1");
    }
    let source = if items.iter().any(|it| pipeline::location_of(it).is_s3()) {
        ImageSource::Storage { storage: &storage, concurrency: s3.s3_concurrency as usize }
    } else {
        ImageSource::Files
    };
    // S3 output: the part is made locally, then put whole (never half-visible).
    let scratch = tempfile::tempdir()?;
    let local_out = match &args.output {
        Location::Local(p) => p.clone(),
        Location::S3 { .. } => scratch.path().to_path_buf(),
    };
    let bar = progress_bar(items.len() as u64, args.quiet);
    let mut summary = pipeline::featurize(&items, &model, &run, &local_out, &opts, &source, &|done, bad| {
        bar.set_position((done + bad) as u64);
        bar.set_message(format!("{bad} rejected"));
    })?;
    bar.finish_and_clear();
    if args.output.is_s3() {
        summary = publish(&storage, summary, &args.output)?;
    }

    eprintln!(
        "fruits: featurised {} of {} images in {:.1} s ({:.1} images/s)",
        summary.featurised,
        summary.total(),
        summary.elapsed.as_secs_f64(),
        summary.images_per_sec()
    );
    if !summary.rejected.is_empty() {
        let kinds: Vec<String> =
            summary.rejected_by_kind().iter().map(|(k, n)| format!("{n} {}", k.as_str())).collect();
        eprintln!("fruits: rejected {} ({}):", summary.rejected.len(), kinds.join(", "));
        for (path, why) in summary.rejected.iter().take(10) {
            eprintln!("  {}: {why}", path.display());
        }
        if summary.rejected.len() > 10 {
            eprintln!("  ... and {} more", summary.rejected.len() - 10);
        }
    }
    eprintln!("fruits: features: {}", summary.features_path.display());
    eprintln!("fruits: errors:   {}", summary.errors_path.display());
    if model.is_random() {
        eprintln!("fruits: warning: these features come from random weights ({})", model.weights_id);
    }
    if summary.rejected_fraction() > args.max_rejected {
        eprintln!(
            "fruits: error: {:.2}% of images rejected, more than --max-rejected {}",
            100.0 * summary.rejected_fraction(),
            args.max_rejected
        );
        return Ok(ExitCode::from(EXIT_TOO_MANY_REJECTED));
    }
    Ok(ExitCode::SUCCESS)
}

/// Puts a locally made part into S3: the stale statistics go first, then the
/// features, the errors and the fresh statistics, each in one request.
fn publish(storage: &Storage, mut summary: pipeline::Summary, out: &Location) -> anyhow::Result<pipeline::Summary> {
    let stats = fruits::parts::stats_path(&summary.features_path);
    let dest = |p: &std::path::Path| out.join(&p.file_name().expect("a file").to_string_lossy());
    storage.delete(&dest(&stats))?;
    for local in [&summary.features_path, &summary.errors_path, &stats] {
        storage.put_file(local, &dest(local))?;
    }
    summary.features_path = PathBuf::from(dest(&summary.features_path).to_string());
    summary.errors_path = PathBuf::from(dest(&summary.errors_path).to_string());
    Ok(summary)
}

fn progress_bar(len: u64, quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    // Draws to stderr only when it is a terminal; logs stay clean.
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} images, {per_sec}, eta {eta} {msg}")
            .expect("valid template"),
    );
    bar
}
