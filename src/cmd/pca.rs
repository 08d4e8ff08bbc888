//! `fruits pca`

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use arrow_schema::{DataType, Field, Schema};
use fruits::output::{feature_item, float_lists, id_columns, id_fields, meta, ParquetFile};
use fruits::parts::{self, PartInfo};
use fruits::pca::{self, Keep, Moments};
use fruits::pca_model::{self, Summary};
use fruits::storage::{Location, S3Options, Storage};

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
    Stats(StatsArgs),
}

/// Write the statistics file (part-NNNNN.stats.safetensors) of every part that
/// lacks a matching one, reading each such part once: for parts written by
/// other tools, so later fits read no rows.
#[derive(Debug, clap::Args)]
struct StatsArgs {
    #[arg(long)]
    features: Location,
}

/// Fit a PCA to every features part in a folder.
///
/// Merges the statistics `featurize` wrote beside each part
/// (part-NNNNN.stats.safetensors: count, sum and Gram matrix in f64), so memory
/// and time do not depend on the number of rows; a part without statistics is
/// read once, streaming. Writes pca.json, components.parquet, center.parquet,
/// spectrum.parquet and explained_variance.svg to --output.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("keep").args(["k", "variance"])))]
struct FitArgs {
    /// Folder of features parts (part-*.parquet), local or s3://bucket/prefix.
    #[arg(long)]
    features: Location,
    /// Folder receiving the model, local or s3://bucket/prefix.
    #[arg(long)]
    output: Location,
    /// Keep exactly this many components.
    #[arg(long)]
    k: Option<usize>,
    /// Keep the fewest components whose cumulative explained variance reaches this, in
    /// (0, 1]. Default when --k is not given: 0.95.
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
    features: Location,
    /// Folder written by `fruits pca fit`.
    #[arg(long)]
    model: Location,
    #[arg(long)]
    output: Location,
    /// Also draw scatter.svg.
    #[arg(long)]
    plot: bool,
}

/// `fit` keeps 95% of the variance unless told otherwise.
const DEFAULT_VARIANCE: f64 = 0.95;

pub fn run(args: Args, s3: &S3Options) -> anyhow::Result<ExitCode> {
    let storage = Storage::new(s3.clone());
    let scratch = tempfile::tempdir()?;
    let ctx = Ctx { storage: &storage, scratch: scratch.path() };
    match args.action {
        Action::Fit(a) => fit(a, &ctx),
        Action::Transform(a) => transform(a, &ctx),
        Action::Stats(a) => stats(a, &ctx),
    }
}

/// Storage, and a scratch folder for local copies of S3 objects.
struct Ctx<'a> {
    storage: &'a Storage,
    scratch: &'a Path,
}

impl Ctx<'_> {
    /// A local folder to write into: `out` itself, or scratch space to upload from.
    fn local_dir(&self, out: &Location, name: &str) -> std::path::PathBuf {
        match out {
            Location::Local(p) => p.clone(),
            Location::S3 { .. } => self.scratch.join(name),
        }
    }
    /// Puts each of `files` into `out` (nothing to do when `out` is local).
    fn publish(&self, files: &[std::path::PathBuf], out: &Location) -> anyhow::Result<Vec<String>> {
        let mut shown = Vec::new();
        for f in files {
            let dest = out.join(&name(f));
            if out.is_s3() {
                self.storage.put_file(f, &dest)?;
            }
            shown.push(dest.to_string());
        }
        Ok(shown)
    }
}

fn stats(a: StatsArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    for part in parts::list_parts(ctx.storage, &a.features)? {
        let info = parts::part_info(ctx.storage, &part)?;
        let (m, cached) = part_moments(ctx, &info, info.feature_dim()?)?;
        if cached {
            eprintln!("fruits: {part} already has its statistics");
        } else {
            let md = [meta::MODEL, meta::WEIGHTS, meta::FEATURE_DIM, meta::PREPROCESSING]
                .iter()
                .map(|k| (k.to_string(), info.get(k).to_string()))
                .collect();
            let local = ctx.scratch.join(part.file_name());
            let written = parts::write_stats(&local, &m, &md)?;
            let dest = parts::stats_location(&part);
            ctx.storage.put_file(&written, &dest)?;
            eprintln!("fruits: wrote {dest}");
        }
    }
    Ok(ExitCode::SUCCESS)
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
                    first.path,
                    first.get(key),
                    other.path,
                    other.get(key)
                );
            }
        }
    }
    Ok(())
}

/// A part's statistics: from its stats file when that matches the part, else one streaming pass.
fn part_moments(ctx: &Ctx, info: &PartInfo, dim: usize) -> anyhow::Result<(Moments, bool)> {
    let stats_loc = parts::stats_location(&info.path);
    let stats =
        if ctx.storage.exists(&stats_loc)? { Some(ctx.storage.localize(&stats_loc, ctx.scratch)?) } else { None };
    if let Some((m, md)) = match &stats {
        Some(p) => parts::read_stats(p)?,
        None => None,
    } {
        let same = m.n == info.rows
            && m.dim() == dim
            && md.get(meta::WEIGHTS).map(String::as_str) == Some(info.get(meta::WEIGHTS))
            && md.get(meta::MODEL).map(String::as_str) == Some(info.get(meta::MODEL));
        if same {
            return Ok((m, true));
        }
        eprintln!("fruits: {stats_loc} does not match its part; recomputing from the rows");
    }
    let mut m = Moments::new(dim);
    let local = ctx.storage.localize(&info.path, ctx.scratch)?;
    parts::read_rows(&local, "features", dim, |rows| {
        m.add_rows(&rows.values);
        Ok(())
    })?;
    if info.path.is_s3() {
        let _ = std::fs::remove_file(&local); // scratch space: one part at a time
    }
    Ok((m, false))
}

fn fit(a: FitArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let keep = match (a.k, a.variance) {
        (Some(k), _) => Keep::K(k),
        (None, Some(v)) => Keep::Variance(v),
        (None, None) => Keep::Variance(DEFAULT_VARIANCE),
    };
    if let Keep::Variance(v) = keep {
        if !(v > 0.0 && v <= 1.0) {
            bail!("--variance must be in (0, 1], got {v}");
        }
    }
    let start = std::time::Instant::now();
    let paths = parts::list_parts(ctx.storage, &a.features)?;
    let infos = paths.iter().map(|p| parts::part_info(ctx.storage, p)).collect::<Result<Vec<_>, _>>()?;
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
        let (m, cached) = part_moments(ctx, info, dim).with_context(|| format!("statistics of {}", info.path))?;
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
    let summary = Summary::new(&model, selection, source, paths.iter().map(|p| p.file_name()).collect());
    let local = ctx.local_dir(&a.output, "pca");
    let written = ctx.publish(&pca_model::save(&model, &summary, &local)?, &a.output)?;
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
        eprintln!("fruits: wrote {p}");
    }
    Ok(ExitCode::SUCCESS)
}

fn transform(a: TransformArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let model_dir = match &a.model {
        Location::Local(p) => p.clone(),
        Location::S3 { .. } => {
            let dir = ctx.scratch.join("model");
            std::fs::create_dir_all(&dir)?;
            for f in pca_model::FILES {
                let local = ctx.storage.localize(&a.model.join(f), ctx.scratch)?;
                std::fs::rename(&local, dir.join(f))?;
            }
            dir
        }
    };
    let (model, summary) = pca_model::load(&model_dir)?;
    let paths = parts::list_parts(ctx.storage, &a.features)?;
    let local_out = ctx.local_dir(&a.output, "reduced");
    let k = model.n_components();
    if a.plot && k < 2 {
        bail!("--plot needs at least 2 components; the model at {} has {k}", a.model);
    }
    let mut points = Vec::new();
    let schema = Arc::new(Schema::new({
        let mut f: Vec<Field> = id_fields().into();
        f.push(Field::new("pca", DataType::List(feature_item()), false));
        f
    }));
    for path in &paths {
        let info = parts::part_info(ctx.storage, path)?;
        let dim = info.feature_dim()?;
        for key in [meta::MODEL, meta::WEIGHTS] {
            let want = summary.source.get(key).map(String::as_str).unwrap_or("?");
            if info.get(key) != want {
                bail!("{path} has {key} {}, but the PCA at {} was fitted on {want}", info.get(key), a.model);
            }
        }
        if dim != model.n_features() {
            bail!("{path} has {dim} features, the PCA expects {}", model.n_features());
        }
        let kv = vec![
            ("fruits.pca.n_components".to_string(), k.to_string()),
            ("fruits.pca.model".to_string(), a.model.to_string()),
            (meta::MODEL.to_string(), info.get(meta::MODEL).to_string()),
            (meta::WEIGHTS.to_string(), info.get(meta::WEIGHTS).to_string()),
        ];
        let mut out = ParquetFile::create(&local_out, &path.file_name(), schema.clone(), kv)?;
        let local = ctx.storage.localize(path, ctx.scratch)?;
        parts::read_rows(&local, "features", dim, |rows| {
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
        let written = ctx.publish(&[out.finish()?], &a.output)?;
        if path.is_s3() {
            let _ = std::fs::remove_file(&local);
        }
        eprintln!("fruits: {} rows -> {}", rows, written[0]);
    }
    if a.plot {
        let svg = local_out.join("scatter.svg");
        pca_model::plot_scatter(&points, &svg).map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", svg.display()))?;
        eprintln!("fruits: wrote {}", ctx.publish(&[svg], &a.output)?[0]);
    }
    Ok(ExitCode::SUCCESS)
}
