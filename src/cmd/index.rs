//! `fruits index build | eval`

use clap::builder::TypedValueParser as _;
use std::process::ExitCode;

use fruits::app::index::build::{build, BuildJob, Centre};
use fruits::app::index::eval::{self, EvalJob};
use fruits::app::index::{files, vote};
use fruits::storage::{Location, S3Options, Storage};

use super::parse::parse_fraction;

/// The app's classifier: labelled feature vectors searched for the nearest neighbours.
///
/// `build` turns features folders (optionally PCA-reduced) into an index; `eval` measures
/// it on held-out features. `fruits identify` and `fruits serve` answer with an index.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    Build(BuildArgs),
    Eval(EvalArgs),
}

/// Build an index from the labelled rows of one or more features folders.
///
/// Folders must agree on model, weights, preprocessing, width and dtype (run ids may
/// differ). Each vector is centred (by the PCA's mean, or the indexed rows' mean, unless
/// --centre none), reduced with --pca if given, and scaled to unit length: similarity is
/// the cosine.
/// Writes index.json, vectors.safetensors and entries.parquet to --output.
#[derive(Debug, clap::Args)]
struct BuildArgs {
    /// Folder of features parts, local or s3://bucket/prefix (repeat for several runs).
    #[arg(long, required = true)]
    features: Vec<Location>,
    /// A PCA model folder (`fruits pca fit`) fitted on features made the same way.
    #[arg(long)]
    pca: Option<Location>,
    /// Keep only the first N components of --pca (narrower vectors, faster search).
    #[arg(long, requires = "pca", value_parser = clap::value_parser!(u32).range(1..))]
    components: Option<u32>,
    /// Only rows of this split (the Fruits-360 folder above the label: Training, Test).
    #[arg(long)]
    split: Option<String>,
    /// Folder receiving the index, local or s3://bucket/prefix.
    #[arg(long, default_value = "out/index")]
    output: Location,
    /// Add to the index in --output (same --split and --pca): keep the rows of the parts it
    /// holds that are unchanged, drop those of parts gone or rewritten, add the other parts'
    /// rows projected as its own (its mean or PCA, not recomputed). Nothing of the kept parts
    /// is read again.
    #[arg(long, conflicts_with = "components")]
    append: bool,
    /// What each vector has taken away before the cosine, without --pca: the indexed rows'
    /// mean, or none (raw features). With --append: the index's own.
    #[arg(long, value_enum, default_value_t = CentreArg::Mean, conflicts_with_all = ["pca", "append"])]
    centre: CentreArg,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CentreArg {
    Mean,
    None,
}

/// Measure an index on held-out features: top-1 and top-5 accuracy, per-class recall and
/// the confusion matrix. Writes eval.json and confusion.svg to --output.
#[derive(Debug, clap::Args)]
struct EvalArgs {
    #[arg(long)]
    index: Location,
    /// Features to answer (made with the index's model, weights and dtype).
    #[arg(long)]
    features: Location,
    /// Only rows of this split (e.g. Test).
    #[arg(long)]
    split: Option<String>,
    /// Neighbours that vote.
    #[arg(long, default_value_t = vote::DEFAULT_K, value_parser = clap::value_parser!(u64).range(1..10_001).map(|v| v as usize))]
    k: usize,
    /// Below this share of the neighbours' vote the answer is "unknown" (counted wrong).
    #[arg(long, default_value_t = vote::DEFAULT_MIN_SCORE, value_parser = parse_fraction)]
    min_score: f64,
    /// Local folder receiving eval.json and confusion.svg.
    #[arg(long, default_value = "out/eval")]
    output: std::path::PathBuf,
}

pub fn run(args: Args, s3: &S3Options) -> anyhow::Result<ExitCode> {
    let storage = Storage::new(s3.clone());
    match args.action {
        Action::Build(a) => {
            let job = BuildJob {
                features: a.features,
                pca: a.pca,
                components: a.components.map(|c| c as usize),
                split: a.split,
                output: a.output,
                append: a.append,
                centre: match a.centre {
                    CentreArg::Mean => Centre::Mean,
                    CentreArg::None => Centre::None,
                },
            };
            let built = build(&job, &storage)?;
            let m = &built.index.meta;
            say!(
                "index: {} rows of {} labels, {} values each ({}), from {}",
                m.rows,
                m.classes.len(),
                m.dim,
                m.projection,
                m.sources.join(", ")
            );
            if !m.skipped.is_empty() {
                let s: Vec<String> = m.skipped.iter().map(|(k, v)| format!("{k} {v}")).collect();
                say!("left out: {}", s.join(", "));
            }
            for w in &built.written {
                say!("wrote {w}");
            }
        }
        Action::Eval(a) => {
            let scratch = tempfile::tempdir()?;
            let index = files::open(&storage, &a.index, scratch.path())?;
            let job = EvalJob { features: a.features, split: a.split, k: a.k, min_score: a.min_score };
            let report = eval::eval(&index, &job, &storage)?;
            print_report(&report);
            for w in eval::write(&report, &a.output)? {
                say!("wrote {}", w.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_report(r: &eval::Report) {
    say!(
        "{} rows: top-1 {:.1}%, top-5 {:.1}%, unknown {} (k = {}, min score {})",
        r.rows,
        100.0 * r.top1_accuracy,
        100.0 * r.top5_accuracy,
        r.unknown,
        r.k,
        r.min_score
    );
    for c in &r.classes {
        let note = if c.indexed { "" } else { "  (not in the index)" };
        say!(
            "  {:<28} {:>6} rows  recall {:>5.1}%  top-5 {:>5.1}%{note}",
            c.label,
            c.rows,
            100.0 * c.recall,
            100.0 * c.top5
        );
    }
}
