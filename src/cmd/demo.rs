//! `fruits demo`

use std::path::PathBuf;
use std::process::ExitCode;

use fruits::app::index::build::{build, BuildJob, Centre};
use fruits::app::index::eval::{self, EvalJob};
use fruits::app::index::vote;
use fruits::engine::{self, DeviceChoice};
use fruits::features::job::{self as featurize, Input, Job, Report, DEFAULT_RUN_ID};
use fruits::features::pipeline;
use fruits::model::weights::Source;
use fruits::model::Which;
use fruits::part::Role;
use fruits::pca::job::{FitJob, TransformJob};
use fruits::pca::Keep;
use fruits::storage::{FetchLimits, Location, S3Options, Storage};

/// The whole job on the 19 fruit photos built into the binary: featurize, fit a PCA
/// keeping 95% of the variance, reduce the features and draw them, then build the app's
/// index from the Training photos and evaluate it on the Test photos.
///
/// Writes the sample to <output>/sample, then the features, the PCA model, the reduced
/// features, the index (Training split: 14 photos of 5 fruits) and its evaluation (Test
/// split: one photo of each fruit) under --output (replacing an earlier demo's), and
/// ends by printing where everything is and how to serve the index.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Weights, as for `featurize` (a path, or random:SEED to run offline).
    #[arg(long)]
    weights: Option<Source>,
    #[arg(long, value_enum, default_value_t = Which::MobileNetV2)]
    model: Which,
    #[arg(long, default_value = "out/demo")]
    output: PathBuf,
    /// Only write the 19 photos to <output>/sample and stop (what `fruits-emr demo`
    /// uploads to its cluster).
    #[arg(long)]
    sample_only: bool,
}

pub fn run(args: Args, s3: &S3Options) -> anyhow::Result<ExitCode> {
    let storage = Storage::new(s3.clone());
    let at = |sub: &str| Location::Local(args.output.join(sub));
    let sample = args.output.join("sample");
    fruits::features::sample::write_to(&sample)?;
    if args.sample_only {
        eprintln!("fruits: the sample photos are in {}", sample.display());
        return Ok(ExitCode::SUCCESS);
    }
    let model = engine::load(args.model, args.weights.as_ref(), &super::device(DeviceChoice::Auto, None)?)?;
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
        append: false,
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
    let fit = FitJob {
        features: at("features"),
        output: at("pca"),
        keep: Keep::Variance(0.95),
        standardize: false,
        stats: vec![],
    };
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
    let evaluated = index_and_eval(&storage, &args.output)?;
    let file = |role| done.committed.location(role).map(|l| l.to_string()).unwrap_or_default();
    say!("features:        {}", file(Role::Rows));
    say!("errors:          {}", file(Role::Errors));
    say!("PCA model:       {}/pca.json (+ components.parquet, center.parquet, spectrum.parquet)", at("pca"));
    say!("reduced:         {}/", at("reduced"));
    say!("pictures:        {}/explained_variance.svg", at("pca"));
    say!("                 {}/scatter.svg", at("reduced"));
    say!("                 {}/confusion.svg", args.output.join("eval").display());
    say!("{evaluated}");
    say!("index:           {}/ (eval: {}/eval.json)", at("index"), args.output.join("eval").display());
    say!("next:            fruits serve --index {}   (then open http://127.0.0.1:8080/)", at("index"));
    Ok(ExitCode::SUCCESS)
}

/// The app's index from the Training photos, evaluated on the Test photos; the line saying how well.
fn index_and_eval(storage: &Storage, output: &std::path::Path) -> anyhow::Result<String> {
    let at = |sub: &str| Location::Local(output.join(sub));
    let index = build(
        &BuildJob {
            features: vec![at("features")],
            pca: Some(at("pca")),
            components: None,
            split: Some("Training".into()),
            output: at("index"),
            append: false,
            centre: Centre::Mean,
        },
        storage,
    )?
    .index;
    let job = EvalJob {
        features: at("features"),
        split: Some("Test".into()),
        k: vote::DEFAULT_K,
        min_score: vote::DEFAULT_MIN_SCORE,
    };
    let report = eval::eval(&index, &job, storage)?;
    eval::write(&report, &output.join("eval"))?;
    Ok(format!(
        "index:           {} Training photos of {} fruits; on the {} Test photos: top-1 {:.0}%, top-5 {:.0}%",
        index.meta.rows,
        index.meta.classes.len(),
        report.rows,
        100.0 * report.top1_accuracy,
        100.0 * report.top5_accuracy
    ))
}
