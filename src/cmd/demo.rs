//! `fruits demo`

use std::path::PathBuf;
use std::process::ExitCode;

use fruits::featurize::{self, Input, Job, Report, DEFAULT_RUN_ID};
use fruits::model::{self, DeviceChoice, Which};
use fruits::part::Role;
use fruits::pca::Keep;
use fruits::pca_job::{FitJob, TransformJob};
use fruits::pipeline;
use fruits::storage::{FetchLimits, Location, S3Options, Storage};
use fruits::weights::{self, Source};

/// The whole job on the 19 fruit photos built into the binary: featurize, fit a PCA
/// keeping 95% of the variance, reduce the features and draw them.
///
/// Writes the sample to <output>/sample, then the features, the PCA model and the
/// reduced features under --output (replacing an earlier demo's), and ends by printing
/// where the features, the errors file, the model and the pictures are.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Weights, as for `featurize` (a path, or random:SEED to run offline).
    #[arg(long)]
    weights: Option<Source>,
    #[arg(long, value_enum, default_value_t = Which::MobileNetV2)]
    model: Which,
    #[arg(long, default_value = "out/demo")]
    output: PathBuf,
}

pub fn run(args: Args, s3: &S3Options) -> anyhow::Result<ExitCode> {
    let storage = Storage::new(s3.clone());
    let at = |sub: &str| Location::Local(args.output.join(sub));
    let sample = args.output.join("sample");
    fruits::sample::write_to(&sample)?;
    let model = weights::load(args.model, args.weights.as_ref(), &model::device(DeviceChoice::Auto)?)?;
    if model.is_random() {
        eprintln!(
            "fruits: warning: random weights ({}): features are for testing only and mean nothing",
            model.weights_id
        );
    }
    let job = Job {
        input: Input::Folder(Location::Local(sample)),
        output: at("features"),
        part: 0,
        run_id: DEFAULT_RUN_ID.into(),
        skip_existing: false,
        overwrite: true,
        stream: pipeline::Options {
            batch: 64,
            decode_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            limits: FetchLimits::default(),
        },
    };
    let Report::Done(done) = featurize::run(&job, &model, &storage, &|_, _| {})? else {
        unreachable!("the demo never skips")
    };
    super::featurize::print_summary(&done, &model);
    let fit = FitJob { features: at("features"), output: at("pca"), keep: Keep::Variance(0.95), standardize: false };
    super::pca::fit(fit, &storage)?;
    let reduce = TransformJob {
        features: at("features"),
        model: at("pca"),
        output: at("reduced"),
        plot: true,
        overwrite: true,
        part: None,
    };
    super::pca::transform(reduce, &storage)?;
    let file = |role| done.committed.location(role).map(|l| l.to_string()).unwrap_or_default();
    println!("features:        {}", file(Role::Rows));
    println!("errors:          {}", file(Role::Errors));
    println!("PCA model:       {}/pca.json (+ components.parquet, center.parquet, spectrum.parquet)", at("pca"));
    println!("reduced:         {}/", at("reduced"));
    println!("pictures:        {}/explained_variance.svg", at("pca"));
    println!("                 {}/scatter.svg", at("reduced"));
    Ok(ExitCode::SUCCESS)
}
