//! `fruits featurize`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use fruits::image::preprocessing_description;
use fruits::input::{list_folder, read_key_list};
use fruits::model::{self, DeviceChoice, Model, Which};
use fruits::output::RunMeta;
use fruits::pipeline::{self, Options};
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
    /// Folder of images. Defaults to the small sample shipped in the repository.
    #[arg(long, default_value = SAMPLE, conflicts_with = "keys")]
    input: PathBuf,

    /// File listing image paths, one per line (`-` reads stdin), instead of --input.
    #[arg(long)]
    keys: Option<PathBuf>,

    /// Folder receiving the Parquet part and its errors file.
    #[arg(long, default_value = "out/features")]
    output: PathBuf,

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
            eprintln!("fruits: warning: random weights (random:{seed}): features are for testing only and mean nothing");
            Model::random(which, *seed, device)?
        }
        Some(Source::File(path)) => Model::from_file(which, path, device)?,
        None => {
            let path = match weights::cached(which) {
                Some(p) => p,
                None => weights::fetch(which, None).with_context(|| {
                    format!("no --weights given and the pinned {which} weights are not cached; \
                             pass --weights PATH, or --weights random:SEED for a test run")
                })?,
            };
            weights::verify(&path, weights::pin(which).sha256.as_deref(), which)?;
            Model::from_file(which, &path, device)?
        }
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let items = match &args.keys {
        Some(list) => read_key_list(list)?,
        None => list_folder(&args.input)?,
    };
    let device = model::device(args.device)?;
    eprintln!("fruits: {} images, model {}, device {}", items.len(), args.model, describe(&device));
    let model = load_model(args.model, args.weights.as_ref(), &device)?;
    let run = RunMeta {
        model: args.model.name().to_string(),
        weights: model.weights_id.clone(),
        preprocessing: preprocessing_description(args.model.resolution()),
        feature_dim: args.model.feature_dim(),
    };
    let opts = Options {
        batch: args.batch as usize,
        decode_threads: args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        part_id: args.part_id,
    };
    if opts.decode_threads == 0 {
        bail!("--threads must be at least 1");
    }
    let bar = progress_bar(items.len() as u64, args.quiet);
    let summary = pipeline::featurize(&items, &model, &run, &args.output, &opts, &|done, bad| {
        bar.set_position((done + bad) as u64);
        bar.set_message(format!("{bad} rejected"));
    })?;
    bar.finish_and_clear();

    eprintln!(
        "fruits: featurised {} of {} images in {:.1} s ({:.1} images/s)",
        summary.featurised,
        summary.total(),
        summary.elapsed.as_secs_f64(),
        summary.images_per_sec()
    );
    if !summary.rejected.is_empty() {
        let kinds: Vec<String> = summary.rejected_by_kind().iter().map(|(k, n)| format!("{n} {}", k.as_str())).collect();
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

fn describe(device: &candle_core::Device) -> &'static str {
    if device.is_cuda() {
        "cuda:0"
    } else {
        "cpu"
    }
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
