//! `fruits featurize`

use std::path::PathBuf;
use std::process::ExitCode;

use fruits::engine::simd::{simd, Simd};
use fruits::engine::{self, DeviceChoice, Dtype, Engine, Model};
use fruits::features::job::{self as featurize, Input, Job, Report, DEFAULT_RUN_ID};
use fruits::features::pipeline;
use fruits::model::weights::Source;
use fruits::model::Which;
use fruits::part::Role;
use fruits::storage::{FetchLimits, Location, S3Options, Storage, DEFAULT_MAX_IMAGE_BYTES};

use super::parse::{parse_bytes, parse_fraction, parse_run_id, parse_sha256};
use super::EXIT_TOO_MANY_REJECTED;

/// Turn fruit photos into MobileNet feature vectors: one part of a Parquet dataset.
///
/// Reads every file under --input (Fruits-360 layout: <root>/[Training|Test]/<Label>/<file>)
/// or the locations listed in --keys, decodes and resizes each image to 224×224 on
/// --threads threads, runs the model in batches of --batch, and writes part --part-id of
/// --output: part-NNNNN-<attempt>.parquet (path, label, split, features: list<float32> of
/// 1280, width, height), and in _fruits/ its errors file (path, kind, reason), its PCA
/// statistics and, last, its manifest, which makes the part complete. Two attempts of one
/// part (a retried or speculative task) may run at once: the last to finish wins wholly.
///
/// Every file is featurised, rejected with its reason, or counted as not an image; a bad
/// image never stops the run. Memory stays bounded whatever the input. Speed on 2 CPU
/// cores with AVX-512: ~500 images/s (mobilenetv2) and ~870 (mobilenetv4-small) for
/// 100×100 JPEGs (benches/README.md).
/// Where photos are read from: `--input` or `--keys` (featurize, pack).
#[derive(Debug, clap::Args)]
pub struct PhotosArgs {
    /// Folder of photos (or of shards: `fruits pack`), local or s3://bucket/prefix.
    #[arg(long, required_unless_present = "keys", conflicts_with = "keys")]
    input: Option<Location>,

    /// File listing photo paths or s3:// keys, one per line (`-` reads stdin), instead
    /// of --input (see `fruits list`); or listing shards (.parquet). A key listed twice
    /// is read once.
    #[arg(long)]
    keys: Option<PathBuf>,
}

impl PhotosArgs {
    pub fn input(&self) -> Input {
        match (&self.keys, &self.input) {
            (Some(keys), _) => Input::Keys(keys.clone()),
            (None, Some(folder)) => Input::Folder(folder.clone()),
            (None, None) => unreachable!("clap requires --input or --keys"),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    photos: PhotosArgs,

    /// Folder receiving the part (local or s3://bucket/prefix).
    #[arg(long, default_value = "out/features")]
    output: Location,

    /// Number of this part (its file names).
    #[arg(long, default_value_t = 0)]
    part_id: u32,

    /// The job this part belongs to. Parts of one folder share it: featurize refuses a
    /// folder holding parts of another run (other run id, model, weights, dtype or
    /// preprocessing) unless --overwrite.
    #[arg(long, default_value = DEFAULT_RUN_ID, value_parser = parse_run_id)]
    run_id: String,

    /// Remove the output folder's parts of other runs first, instead of refusing.
    #[arg(long)]
    overwrite: bool,

    /// Do nothing if this part is already complete in --output (resuming a run).
    #[arg(long)]
    skip_existing: bool,

    /// Featurise only the photos no complete part of --output holds yet (new ones, and
    /// ones written again since their part: their old rows are removed), as the next part
    /// (--part-id is ignored); with --input, rows of photos no longer there are removed
    /// too. Nothing new: nothing written.
    #[arg(long, conflicts_with_all = ["overwrite", "skip_existing"])]
    append: bool,

    #[arg(long, value_enum, default_value_t = Which::MobileNetV2)]
    model: Which,

    /// Weights: a safetensors PATH, or random:SEED for deterministic random weights
    /// (offline tests; the features mean nothing). Default: the pinned hub file,
    /// downloaded once and checked against weights/manifest.json.
    #[arg(long)]
    weights: Option<Source>,

    /// Refuse to run unless the --weights file hashes to this sha256 (a cluster driver
    /// passes the hash of the copy it staged, so every executor checks its own copy).
    #[arg(long, value_parser = parse_sha256)]
    weights_sha256: Option<String>,

    /// Also write what this run did as one JSON object (rows, rejections by kind,
    /// seconds, device, host, weights, files) to FILE, or `-` for stdout: for a driver.
    #[arg(long)]
    report: Option<PathBuf>,

    /// Images per inference batch.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    batch: u32,

    /// Threads decoding and resizing images (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Option<u32>,

    /// Largest image file or object read (bytes; K, M, G suffixes); a larger one is
    /// rejected as too-large without being read.
    #[arg(long, default_value_t = DEFAULT_MAX_IMAGE_BYTES, value_parser = parse_bytes)]
    max_image_bytes: u64,

    /// Largest fraction of rejected images, in [0, 1], for which the run still succeeds.
    #[arg(long, default_value_t = 0.01, value_parser = parse_fraction)]
    max_rejected: f64,

    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,

    /// What runs the network: native (on the CPU fused NHWC kernels, one image per core; on
    /// CUDA cuBLAS and NVRTC kernels) or candle (Candle's CPU backend, for comparison; CPU only).
    #[arg(long, value_enum, default_value_t = Engine::Native)]
    engine: Engine,

    /// Activations between layers: f32, or bf16 (native engine; ~1.5× faster on CPUs
    /// with AVX512-BF16). bf16 features are within cosine 0.99 of f32's on random
    /// weights; on trained weights their accuracy is not yet measured.
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    dtype: Dtype,

    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(args: Args, s3: &S3Options) -> anyhow::Result<ExitCode> {
    let storage = Storage::new(s3.clone());
    let model = load_model(&args)?;
    if let Some(want) = &args.weights_sha256 {
        if model.weights_id != format!("sha256:{want}") {
            return Err(fruits::Error::Checksum {
                path: match &args.weights {
                    Some(Source::File(p)) => p.clone(),
                    _ => PathBuf::from("(weights)"),
                },
                expected: want.clone(),
                actual: model.weights_id.trim_start_matches("sha256:").to_string(),
            }
            .into());
        }
    }
    let job = job(&args);
    let bar = progress_bar(args.quiet);
    let report = featurize::run(&job, &model, &storage, &|done, bad| {
        bar.set_position((done + bad) as u64);
        bar.set_message(format!("{bad} rejected"));
    })?;
    bar.finish_and_clear();
    // Over --max-rejected: exit EXIT_TOO_MANY_REJECTED, and the report says
    // so, so that a driver reads the outcome, not the number.
    let (rejected, total) = match &report {
        Report::Skipped(_, m) => {
            let count = |k: &str| m.counts.get(k).copied().unwrap_or(0);
            (count("rejected"), count("rejected") + count("featurised"))
        }
        Report::Done(done) => (done.streamed.rejected.len() as u64, done.streamed.total() as u64),
        Report::UpToDate(_) => (0, 0),
    };
    let fraction = rejected as f64 / total.max(1) as f64;
    let too_many = fraction > args.max_rejected;
    if let Some(to) = &args.report {
        let mut json = super::featurize_json::featurize(&report, &model, args.part_id);
        json["too_many_rejected"] = too_many.into();
        write_report(to, &json)?;
    }
    let done = match report {
        Report::Skipped(manifest, _) => {
            eprintln!("fruits: part {} is complete ({manifest}); skipping (--skip-existing)", args.part_id);
            return Ok(ExitCode::SUCCESS);
        }
        Report::UpToDate(a) => {
            print_appended(&a);
            eprintln!("fruits: nothing new to featurise in {}", args.output);
            return Ok(ExitCode::SUCCESS);
        }
        Report::Done(done) => done,
    };
    print_summary(&done, &model);
    if too_many {
        eprintln!(
            "fruits: error: {:.2}% of images rejected, more than --max-rejected {}",
            100.0 * fraction,
            args.max_rejected
        );
        return Ok(ExitCode::from(EXIT_TOO_MANY_REJECTED));
    }
    Ok(ExitCode::SUCCESS)
}

fn load_model(args: &Args) -> anyhow::Result<Model> {
    let device = super::device(args.device, engine::cpu_only(args.engine, args.dtype))?;
    let model = engine::load_as(args.model, args.weights.as_ref(), &device, args.engine, args.dtype)?;
    if model.is_random() {
        eprintln!(
            "fruits: warning: random weights ({}): features are for testing only and mean nothing",
            model.weights_id
        );
    }
    eprintln!("fruits: model {}, {}", args.model, model.describe());
    if args.dtype == Dtype::Bf16 && simd() < Simd::Avx512Bf16 {
        eprintln!("fruits: warning: this CPU has no AVX512-BF16: bf16 runs portable loops, slower than --dtype f32");
    }
    Ok(model)
}

fn job(args: &Args) -> Job {
    let input = args.photos.input();
    let threads =
        args.threads.map_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()), |t| t as usize);
    Job {
        input,
        output: args.output.clone(),
        part: args.part_id,
        run_id: args.run_id.clone(),
        skip_existing: args.skip_existing,
        overwrite: args.overwrite,
        append: args.append,
        stream: pipeline::Options {
            batch: args.batch as usize,
            decode_threads: threads,
            limits: FetchLimits::new(args.max_image_bytes),
        },
    }
}

/// What happened to every input, and where the part's files are.
/// What `--append` found beside the new photos.
fn print_appended(a: &featurize::Appended) {
    eprintln!(
        "fruits: --append: {} photos held already, {} changed and {} deleted since ({} parts rewritten without them)",
        a.held, a.changed, a.deleted, a.rewritten
    );
}

pub fn print_summary(done: &featurize::Done, model: &Model) {
    let s = &done.streamed;
    if let Some(a) = &done.appended {
        print_appended(a);
    }
    if done.removed > 0 {
        eprintln!("fruits: removed {} parts of other runs (--overwrite)", done.removed);
    }
    eprintln!(
        "fruits: featurised {} of {} images in {:.1} s ({:.1} images/s)",
        s.featurised,
        s.total(),
        s.elapsed.as_secs_f64(),
        s.images_per_sec()
    );
    if !s.rejected.is_empty() {
        let kinds: Vec<String> = s.rejected_by_kind().iter().map(|(k, n)| format!("{n} {}", k.as_str())).collect();
        eprintln!("fruits: rejected {} ({}):", s.rejected.len(), kinds.join(", "));
        for (path, why) in s.rejected.iter().take(10) {
            eprintln!("  {path}: {why}");
        }
        if s.rejected.len() > 10 {
            eprintln!("  ... and {} more", s.rejected.len() - 10);
        }
    }
    if !done.not_images.is_empty() {
        let shown: Vec<&str> = done.not_images.iter().take(5).map(String::as_str).collect();
        let more = done.not_images.len().saturating_sub(5);
        let more = if more > 0 { format!(", ... and {more} more") } else { String::new() };
        eprintln!("fruits: {} files are not images, not read: {}{more}", done.not_images.len(), shown.join(", "));
    }
    if done.duplicates > 0 {
        eprintln!("fruits: {} duplicate keys dropped (each featurised once)", done.duplicates);
    }
    let at = |role| done.committed.location(role).map(|l| l.to_string()).unwrap_or_default();
    eprintln!("fruits: features: {}", at(Role::Rows));
    eprintln!("fruits: errors:   {}", at(Role::Errors));
    eprintln!(
        "fruits: part {} complete: {}",
        done.committed.manifest.part,
        done.committed.folder.join(&fruits::part::names::manifest_name(done.committed.manifest.part))
    );
    if model.is_random() {
        eprintln!("fruits: warning: these features come from random weights ({})", model.weights_id);
    }
}

/// `--report`: the JSON object, to a file or stdout.
fn write_report(to: &std::path::Path, report: &serde_json::Value) -> anyhow::Result<()> {
    let text = serde_json::to_string(report)? + "\n";
    if to == std::path::Path::new("-") {
        use std::io::Write;
        std::io::stdout().write_all(text.as_bytes())?;
    } else {
        std::fs::write(to, text).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", to.display()))?;
    }
    Ok(())
}

fn progress_bar(quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    // Draws to stderr only when it is a terminal; logs stay clean.
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos} images, {per_sec}, {msg}").expect("valid template"),
    );
    bar
}
