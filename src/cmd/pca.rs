//! `fruits pca`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use arrow_schema::{DataType, Field, Schema};
use fruits::output::{float_lists, id_columns, id_fields, meta, feature_item, ParquetFile};
use fruits::parts::{self, PartInfo};
use fruits::pca::{self, Keep, Moments};
use fruits::pca_model::{self, Summary};

/// Principal components of feature parts: fit a model, or reduce features with one.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    Fit(FitArgs),
    Transform(TransformArgs),
}

/// Fit a PCA to every features part in a folder.
///
/// Merges the statistics `featurize` wrote beside each part
/// (part-NNNNN.stats.safetensors: count, sum and Gram matrix in f64), so memory
/// and time do not depend on the number of rows; a part without statistics is
/// read once, streaming. Writes pca.json, components.parquet, center.parquet,
/// spectrum.parquet and explained_variance.svg to --output.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("keep").required(true).args(["k", "variance"])))]
struct FitArgs {
    /// Folder of features parts (part-*.parquet).
    #[arg(long)]
    features: PathBuf,
    /// Folder receiving the model.
    #[arg(long)]
    output: PathBuf,
    /// Keep exactly this many components.
    #[arg(long)]
    k: Option<usize>,
    /// Keep the fewest components whose cumulative explained variance reaches this, in (0, 1].
    #[arg(long)]
    variance: Option<f64>,
    /// Divide each feature by its standard deviation first (PCA of the correlation matrix).
    #[arg(long)]
    standardize: bool,
}

/// Project features parts onto a fitted PCA: one reduced part per input part.
///
/// Writes <output>/part-NNNNN.parquet with path, label, split and pca
/// (list<float32> of k), streaming; with --plot also scatter.svg (first two
/// components, one colour per label).
#[derive(Debug, clap::Args)]
struct TransformArgs {
    #[arg(long)]
    features: PathBuf,
    /// Folder written by `fruits pca fit`.
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    output: PathBuf,
    /// Also draw scatter.svg.
    #[arg(long)]
    plot: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.action {
        Action::Fit(a) => fit(a),
        Action::Transform(a) => transform(a),
    }
}

fn name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The parts must come from one model, one set of weights, one width.
fn check_consistent(infos: &[PartInfo]) -> anyhow::Result<()> {
    let first = &infos[0];
    for other in &infos[1..] {
        for key in [meta::FEATURE_DIM, meta::MODEL, meta::WEIGHTS] {
            if other.get(key) != first.get(key) {
                bail!(
                    "parts differ in {key}: {} has {}, {} has {}",
                    first.path.display(),
                    first.get(key),
                    other.path.display(),
                    other.get(key)
                );
            }
        }
    }
    Ok(())
}

/// A part's statistics: from its stats file when that matches the part, else one streaming pass.
fn part_moments(info: &PartInfo, dim: usize) -> anyhow::Result<(Moments, bool)> {
    let stats = parts::stats_path(&info.path);
    if let Some((m, md)) = parts::read_stats(&stats)? {
        let same = m.n == info.rows
            && m.dim() == dim
            && md.get(meta::WEIGHTS).map(String::as_str) == Some(info.get(meta::WEIGHTS))
            && md.get(meta::MODEL).map(String::as_str) == Some(info.get(meta::MODEL));
        if same {
            return Ok((m, true));
        }
        eprintln!("fruits: {} does not match its part; recomputing from the rows", stats.display());
    }
    let mut m = Moments::new(dim);
    parts::read_rows(&info.path, "features", dim, |rows| {
        m.add_rows(&rows.values);
        Ok(())
    })?;
    Ok((m, false))
}

fn fit(a: FitArgs) -> anyhow::Result<ExitCode> {
    let keep = match (a.k, a.variance) {
        (Some(k), _) => Keep::K(k),
        (None, Some(v)) => Keep::Variance(v),
        (None, None) => unreachable!("clap requires one"),
    };
    if let Keep::Variance(v) = keep {
        if !(v > 0.0 && v <= 1.0) {
            bail!("--variance must be in (0, 1], got {v}");
        }
    }
    let start = std::time::Instant::now();
    let paths = parts::list_parts(&a.features)?;
    let infos = paths.iter().map(|p| parts::part_info(p)).collect::<Result<Vec<_>, _>>()?;
    check_consistent(&infos)?;
    let dim = infos[0].feature_dim()?;
    if let Keep::K(k) = keep {
        if k == 0 || k > dim {
            bail!("--k must be between 1 and the feature width {dim}, got {k}");
        }
    }
    let mut merged = Moments::new(dim);
    let mut from_stats = 0;
    for info in &infos {
        let (m, cached) = part_moments(info, dim).with_context(|| format!("statistics of {}", info.path.display()))?;
        from_stats += cached as usize;
        merged.merge(&m)?;
    }
    let model = pca::fit(&merged, keep, a.standardize)?;
    let selection: BTreeMap<String, f64> = match keep {
        Keep::K(k) => [("k".to_string(), k as f64)].into(),
        Keep::Variance(v) => [("variance".to_string(), v)].into(),
    };
    let source: BTreeMap<String, String> = [meta::MODEL, meta::WEIGHTS, meta::PREPROCESSING]
        .iter()
        .map(|k| (k.to_string(), infos[0].get(k).to_string()))
        .collect();
    let summary = Summary::new(&model, selection, source, paths.iter().map(|p| name(p)).collect());
    let written = pca_model::save(&model, &summary, &a.output)?;
    eprintln!(
        "fruits: PCA of {} rows from {} parts ({} from statistics files) in {:.2} s: k = {} of {}, {:.2}% of the variance",
        model.n_samples,
        infos.len(),
        from_stats,
        start.elapsed().as_secs_f64(),
        model.n_components(),
        dim,
        100.0 * summary.cumulative_explained_variance_ratio.last().copied().unwrap_or(0.0)
    );
    for p in written {
        eprintln!("fruits: wrote {}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn transform(a: TransformArgs) -> anyhow::Result<ExitCode> {
    let (model, summary) = pca_model::load(&a.model)?;
    let paths = parts::list_parts(&a.features)?;
    let k = model.n_components();
    if a.plot && k < 2 {
        bail!("--plot needs at least 2 components; the model at {} has {k}", a.model.display());
    }
    let mut points = Vec::new();
    let schema = Arc::new(Schema::new({
        let mut f: Vec<Field> = id_fields().into();
        f.push(Field::new("pca", DataType::List(feature_item()), false));
        f
    }));
    for path in &paths {
        let info = parts::part_info(path)?;
        let dim = info.feature_dim()?;
        for key in [meta::MODEL, meta::WEIGHTS] {
            let want = summary.source.get(key).map(String::as_str).unwrap_or("?");
            if info.get(key) != want {
                bail!("{} has {key} {}, but the PCA at {} was fitted on {want}", path.display(), info.get(key), a.model.display());
            }
        }
        if dim != model.n_features() {
            bail!("{} has {dim} features, the PCA expects {}", path.display(), model.n_features());
        }
        let kv = vec![
            ("fruits.pca.n_components".to_string(), k.to_string()),
            ("fruits.pca.model".to_string(), a.model.display().to_string()),
            (meta::MODEL.to_string(), info.get(meta::MODEL).to_string()),
            (meta::WEIGHTS.to_string(), info.get(meta::WEIGHTS).to_string()),
        ];
        let mut out = ParquetFile::create(&a.output, &name(path), schema.clone(), kv)?;
        parts::read_rows(path, "features", dim, |rows| {
            let reduced = model.transform(&rows.values);
            if a.plot {
                for (item, r) in rows.items.iter().zip(reduced.chunks(k)) {
                    points.push((r[0], r[1], item.label.clone()));
                }
            }
            let mut cols: Vec<_> = id_columns(rows.items.iter()).into();
            cols.push(float_lists(&reduced, k));
            out.write(cols)
        })?;
        let rows = out.rows();
        let written = out.finish()?;
        eprintln!("fruits: {} rows -> {}", rows, written.display());
    }
    if a.plot {
        let svg = a.output.join("scatter.svg");
        pca_model::plot_scatter(&points, &svg).map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", svg.display()))?;
        eprintln!("fruits: wrote {}", svg.display());
    }
    Ok(ExitCode::SUCCESS)
}
