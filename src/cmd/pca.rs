//! `fruits pca`

use std::process::ExitCode;

use fruits::pca::job::{self as pca_job, FitJob, TransformJob};
use fruits::pca::merge::{self as pca_merge, PartSet};
use fruits::pca::Keep;
use fruits::storage::{Location, S3Options, Storage};

use super::parse::{parse_parts, parse_positive_fraction};

/// Principal components of feature parts: fit a model, or reduce features with one.
///
/// A folder written by `fruits featurize` is read as its manifests say: complete parts
/// only, leftovers of unfinished attempts ignored. A folder with no manifest is read as
/// another tool's `part-*.parquet` files. Parts must agree on model, weights, dtype,
/// preprocessing, feature width and run id.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    Fit(FitArgs),
    Transform(TransformArgs),
    Stats(StatsArgs),
    Merge(MergeArgs),
}

/// Merge statistics into one file: of a range of parts (--features, --parts), or of
/// files this command wrote (--stats). A cluster merges as a tree, a task per group
/// of parts then per group of files, so that `pca fit --stats` reads a few files
/// however many parts the run has.
///
/// Each part is found by its manifest's name (no listing of the folder). The file
/// records which parts it holds: a merge refuses a part held twice, `pca fit --stats`
/// a part missing.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("from").args(["parts", "stats"]).required(true)))]
struct MergeArgs {
    /// Folder of features parts (with --parts).
    #[arg(long, requires = "parts")]
    features: Option<Location>,
    /// The parts to merge, as ranges: 0-63 or 0-9,12,14-20 (with --features).
    #[arg(long, requires = "features", value_parser = parse_parts)]
    parts: Option<PartSet>,
    /// Files written by `pca merge` (or folders of them) to merge into one.
    #[arg(long, num_args = 1..)]
    stats: Vec<Location>,
    /// The merged file, local or s3://…, named *.stats.safetensors.
    #[arg(long)]
    output: Location,
}

/// Write the statistics file of every part that lacks one (parts written by other
/// tools), reading each such part once, so later fits read no rows.
#[derive(Debug, clap::Args)]
struct StatsArgs {
    #[arg(long)]
    features: Location,
}

/// Fit a PCA to every features part in a folder.
///
/// Merges the statistics `featurize` wrote for each part (count, sum and Gram matrix
/// in f64), so memory and time do not depend on the number of rows; a part without
/// statistics is read once, streaming. Writes pca.json, components.parquet,
/// center.parquet, spectrum.parquet and explained_variance.svg to --output.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("keep").args(["k", "variance"])))]
struct FitArgs {
    /// Folder of features parts, local or s3://bucket/prefix.
    #[arg(long)]
    features: Location,
    /// Fit from these files of `pca merge` (or folders of them) instead of every part's
    /// own statistics; they must hold exactly the parts whose manifests --features has.
    #[arg(long, num_args = 1..)]
    stats: Vec<Location>,
    /// Folder receiving the model, local or s3://bucket/prefix (not inside --features).
    #[arg(long)]
    output: Location,
    /// Keep exactly this many components (at most the feature width).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    k: Option<u32>,
    /// Keep the fewest components whose cumulative explained variance reaches this, in
    /// (0, 1]. Default when --k is not given: 0.95.
    #[arg(long, value_parser = parse_positive_fraction)]
    variance: Option<f64>,
    /// Divide each feature by its standard deviation first (PCA of the correlation matrix).
    #[arg(long)]
    standardize: bool,
}

/// Project features parts onto a fitted PCA: one reduced part per input part.
///
/// Writes the parts as `featurize` does (part-NNNNN-<attempt>.parquet with path, label,
/// split and pca: list<float32> of k; a manifest per part in _fruits/), streaming; with
/// --plot also scatter.svg (first two components, one colour per label).
#[derive(Debug, clap::Args)]
struct TransformArgs {
    #[arg(long)]
    features: Location,
    /// Folder written by `fruits pca fit`.
    #[arg(long)]
    model: Location,
    /// Folder receiving the reduced parts (not inside --features).
    #[arg(long)]
    output: Location,
    /// Also draw scatter.svg.
    #[arg(long, conflicts_with = "part")]
    plot: bool,
    /// Reduce only this part (a cluster runs one task per part).
    #[arg(long)]
    part: Option<u32>,
    /// Remove reduced parts of another model or features run from --output first,
    /// instead of refusing.
    #[arg(long)]
    overwrite: bool,
}

/// `fit` keeps 95% of the variance unless told otherwise.
pub const DEFAULT_VARIANCE: f64 = 0.95;

pub fn run(args: Args, s3: &S3Options) -> anyhow::Result<ExitCode> {
    let storage = Storage::new(s3.clone());
    match args.action {
        Action::Fit(a) => fit(fit_job(&a), &storage),
        Action::Transform(a) => transform(
            TransformJob {
                features: a.features,
                model: a.model,
                output: a.output,
                plot: a.plot,
                overwrite: a.overwrite,
                part: a.part,
            },
            &storage,
        ),
        Action::Merge(a) => merge(a, &storage),
        Action::Stats(a) => {
            for (part, written) in pca_job::write_missing_stats(&storage, &a.features)? {
                let what = if written { "statistics written" } else { "already has its statistics" };
                eprintln!("fruits: {part}: {what}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn fit_job(a: &FitArgs) -> FitJob {
    let keep = match (a.k, a.variance) {
        (Some(k), _) => Keep::K(k as usize),
        (None, Some(v)) => Keep::Variance(v),
        (None, None) => Keep::Variance(DEFAULT_VARIANCE),
    };
    FitJob {
        features: a.features.clone(),
        output: a.output.clone(),
        keep,
        standardize: a.standardize,
        stats: a.stats.clone(),
    }
}

fn merge(a: MergeArgs, storage: &Storage) -> anyhow::Result<ExitCode> {
    let start = std::time::Instant::now();
    let merged = match (&a.features, &a.parts) {
        (Some(features), Some(parts)) => pca_merge::merge_parts(storage, features, parts)?,
        _ => pca_merge::merge_files(storage, &a.stats)?,
    };
    pca_merge::write_merged(storage, &merged, &a.output)?;
    eprintln!(
        "fruits: statistics of {} rows, parts {}, from {} files ({} bytes) in {:.2} s -> {}",
        merged.moments.n,
        merged.parts,
        merged.files_read,
        merged.bytes_read,
        start.elapsed().as_secs_f64(),
        a.output
    );
    Ok(ExitCode::SUCCESS)
}

pub fn fit(job: FitJob, storage: &Storage) -> anyhow::Result<ExitCode> {
    let start = std::time::Instant::now();
    let f = pca_job::fit(&job, storage)?;
    leftovers(f.leftovers, &job.features);
    eprintln!(
        "fruits: PCA of {} rows from {} parts ({} from statistics files, {} bytes) in {:.2} s: k = {} of {}, {:.2}% of the variance",
        f.pca.n_samples,
        f.parts,
        f.from_stats,
        f.bytes_read,
        start.elapsed().as_secs_f64(),
        f.pca.n_components(),
        f.pca.n_features(),
        100.0 * f.summary.cumulative_explained_variance_ratio.last().copied().unwrap_or(0.0)
    );
    for p in f.written {
        eprintln!("fruits: wrote {p}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn transform(job: TransformJob, storage: &Storage) -> anyhow::Result<ExitCode> {
    let t = pca_job::transform(&job, storage)?;
    leftovers(t.leftovers, &job.features);
    for (rows, at) in &t.parts {
        eprintln!("fruits: {rows} rows -> {at}");
    }
    if let Some(svg) = t.scatter {
        eprintln!("fruits: wrote {svg}");
    }
    Ok(ExitCode::SUCCESS)
}

fn leftovers(n: usize, folder: &Location) {
    if n > 0 {
        eprintln!(
            "fruits: ignored {n} leftover files of unfinished or replaced attempts in {folder} \
             (`fruits parts clean {folder}` removes them)"
        );
    }
}
