//! `pca fit`, `pca transform` and `pca stats` as jobs over a folder of
//! parts: which parts count (the committed ones, or another tool's
//! `part-*.parquet`), whether they agree on how they were made, and the
//! steps of each job. The maths is [`super::maths`]; the model files are
//! [`super::files`]; the folder read as a dataset is [`crate::part::dataset`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema};

use super::files::{self as pca_model, load_model, Summary};
use super::maths::{self as pca, Keep, Moments, Pca};
use super::merge::{self, part_moments as moments, with_local, Merged};
use super::pictures;
use super::stats::write_stats;
use crate::error::{Error, Param, Result};
use crate::part::dataset::{foreign_stats, part_source, sources, Source, Sources};
use crate::part::folder;
use crate::part::schema::{feature_item, float_lists, id_columns, id_fields, meta, ParquetFile};
use crate::part::{read_rows, Attempt, Role};
use crate::storage::{Location, Storage};

/// Refuses an output folder that is, or is inside, an input folder.
fn refuse_nested(output: &Location, input: &Location, within: Param) -> Result<()> {
    if input.contains(output) {
        return Err(Error::Nested { output: output.to_string(), input: input.to_string(), within });
    }
    Ok(())
}

/// `pca fit`.
#[derive(Debug, Clone)]
pub struct FitJob {
    pub features: Location,
    pub output: Location,
    pub keep: Keep,
    pub standardize: bool,
    /// Fit from these merged statistics (`pca merge` files, or folders of
    /// them) instead of the parts' own: they must hold exactly the parts
    /// whose manifests `features` has.
    pub stats: Vec<Location>,
}

pub struct Fitted {
    pub pca: Pca,
    pub summary: Summary,
    pub parts: usize,
    pub from_stats: usize,
    pub leftovers: usize,
    /// Where the model's files went.
    pub written: Vec<String>,
    /// Bytes of statistics files read.
    pub bytes_read: u64,
}

/// The moments a fit starts from, how the rows were made, and what was read.
struct FitInput {
    moments: Moments,
    run: BTreeMap<String, String>,
    /// The parts, as pca.json names them, and how many.
    parts: Vec<String>,
    count: usize,
    from_stats: usize,
    leftovers: usize,
    bytes_read: u64,
}

pub fn fit(job: &FitJob, storage: &Storage) -> Result<Fitted> {
    refuse_nested(&job.output, &job.features, Param::Features)?;
    let scratch = tempfile::tempdir()?;
    let input =
        if job.stats.is_empty() { from_parts(job, storage, scratch.path())? } else { from_merged(job, storage)? };
    let pca = pca::fit(&input.moments, job.keep, job.standardize)?;
    let selection: BTreeMap<String, f64> = match job.keep {
        Keep::K(k) => [("k".to_string(), k as f64)].into(),
        Keep::Variance(v) => [("variance".to_string(), v)].into(),
    };
    let source: BTreeMap<String, String> =
        [meta::MODEL, meta::WEIGHTS, meta::PREPROCESSING, meta::DTYPE, meta::RUN_ID, meta::FEATURE_DIM]
            .iter()
            .map(|k| (k.to_string(), input.run.get(*k).cloned().unwrap_or_else(|| "?".into())))
            .collect();
    let parts = input.count;
    let summary = Summary::new(&pca, selection, source, input.parts);
    let local = match &job.output {
        Location::Local(p) => p.clone(),
        Location::S3 { .. } => scratch.path().join("pca"),
    };
    let written = publish(storage, &pca_model::save(&pca, &summary, &local)?, &job.output)?;
    let (from_stats, leftovers, bytes_read) = (input.from_stats, input.leftovers, input.bytes_read);
    Ok(Fitted { pca, summary, parts, from_stats, leftovers, written, bytes_read })
}

/// Every part's own statistics (or rows), merged here.
fn from_parts(job: &FitJob, storage: &Storage, scratch: &Path) -> Result<FitInput> {
    let src = sources(storage, &job.features)?;
    // Before any part is read.
    job.keep.check(src.dim)?;
    let mut merged = Moments::new(src.dim);
    let (mut from_stats, mut bytes_read) = (0, 0);
    for s in &src.parts {
        let (m, cached, bytes) = moments(storage, s, src.dim, scratch)?;
        from_stats += cached as usize;
        bytes_read += bytes;
        merged.merge(&m)?;
    }
    Ok(FitInput {
        moments: merged,
        run: src.parts[0].run.clone(),
        parts: src.parts.iter().map(|p| p.rows.file_name()).collect(),
        count: src.parts.len(),
        from_stats,
        leftovers: src.leftovers,
        bytes_read,
    })
}

/// Merged statistics (`pca merge`), checked to hold exactly the parts the
/// features folder's manifests name (one listing of `_fruits/`, no
/// manifest read) and to come from the folder's run (one manifest read).
fn from_merged(job: &FitJob, storage: &Storage) -> Result<FitInput> {
    let merged: Merged = merge::merge_files(storage, &job.stats)?;
    job.keep.check(merged.moments.dim())?;
    let committed = merge::PartSet(folder::manifest_numbers(storage, &job.features)?);
    if committed != merged.parts {
        return Err(Error::StatsCoverage {
            features: job.features.to_string(),
            held: merged.parts.to_string(),
            detail: format!(
                "missing: {}; not in the folder: {}",
                committed.minus(&merged.parts),
                merged.parts.minus(&committed)
            ),
        });
    }
    let first = *committed.0.first().expect("equal to the merged parts, never empty");
    let source = part_source(storage, &job.features, first)?
        .ok_or_else(|| Error::NoPart { at: job.features.to_string(), part: first })?;
    if let Some(key) = meta::RUN.iter().find(|k| source.run.get(**k) != merged.run.get(**k)) {
        let value = |run: &BTreeMap<String, String>| run.get(*key).cloned().unwrap_or_else(|| "?".into());
        let stats = job.stats.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ");
        return Err(Error::differ(
            "statistics and parts",
            key.to_string(),
            (stats, value(&merged.run)),
            (source.rows.to_string(), value(&source.run)),
        ));
    }
    Ok(FitInput {
        parts: vec![format!("parts {}", merged.parts)],
        count: merged.parts.0.len(),
        run: merged.run,
        from_stats: merged.parts.0.len(),
        moments: merged.moments,
        leftovers: 0,
        bytes_read: merged.bytes_read,
    })
}

/// Puts each of `files` into `out` (nothing to do when `out` is local).
fn publish(storage: &Storage, files: &[PathBuf], out: &Location) -> Result<Vec<String>> {
    let mut shown = Vec::new();
    for f in files {
        let dest = out.join(&f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        if out.is_s3() {
            storage.put_file(f, &dest)?;
        }
        shown.push(dest.to_string());
    }
    Ok(shown)
}

/// `pca transform`.
#[derive(Debug, Clone)]
pub struct TransformJob {
    pub features: Location,
    pub model: Location,
    pub output: Location,
    pub plot: bool,
    /// Replace reduced parts of another model in `output` instead of refusing.
    pub overwrite: bool,
    /// Only this part (one task of a cluster job); `None`: every part.
    pub part: Option<u32>,
}

pub struct Transformed {
    /// Each reduced part: rows, where.
    pub parts: Vec<(u64, String)>,
    pub scatter: Option<String>,
    pub leftovers: usize,
}

pub fn transform(job: &TransformJob, storage: &Storage) -> Result<Transformed> {
    refuse_nested(&job.output, &job.features, Param::Features)?;
    let scratch = tempfile::tempdir()?;
    let (model, summary) = load_model(storage, &job.model, scratch.path())?;
    let k = model.n_components();
    if job.plot && k < 2 {
        let reason = format!("needs at least 2 components; the model at {} has {k}", job.model);
        return Err(Error::invalid(Param::Plot, reason));
    }
    let mut src = match job.part {
        // One task of a cluster job: its part alone, by its manifest's name.
        Some(n) => match part_source(storage, &job.features, n)? {
            Some(s) => Sources { dim: s.info.feature_dim()?, parts: vec![s], leftovers: 0 },
            None => sources(storage, &job.features)?,
        },
        None => sources(storage, &job.features)?,
    };
    check_fitted_on(&src, &summary, &model, &job.model)?;
    if let Some(n) = job.part {
        src.parts.retain(|s| s.part == n);
        if src.parts.is_empty() {
            return Err(Error::NoPart { at: job.features.to_string(), part: n });
        }
    }
    let run = reduced_run(&src.parts[0], &job.model, k);
    let out = folder::as_folder(&job.output);
    if job.overwrite {
        folder::remove_other_runs(storage, &out, &run)?;
    } else {
        folder::check_run(&folder::peek(storage, &out, src.parts[0].part)?, &run)?;
    }
    let mut points = Vec::new();
    let mut parts = Vec::new();
    for s in &src.parts {
        let attempt = Attempt::begin(storage, &out, s.part)?;
        let staged = attempt.staging_path(Role::Rows);
        let rows = reduce_part(storage, s, &model, &staged, scratch.path(), job.plot.then_some(&mut points))?;
        let counts = [("rows".to_string(), rows)].into();
        let committed = attempt.commit("reduced", run.clone(), counts, &[(Role::Rows, rows)])?;
        parts.push((rows, committed.location(Role::Rows).expect("committed rows").to_string()));
    }
    let scatter = if job.plot { Some(draw_scatter(storage, &points, &out, scratch.path())?) } else { None };
    Ok(Transformed { parts, scatter, leftovers: src.leftovers })
}

/// The features must be what the model was fitted on: same model, weights,
/// dtype, preprocessing, width.
fn check_fitted_on(src: &Sources, summary: &Summary, model: &Pca, at: &Location) -> Result<()> {
    let first = &src.parts[0];
    for key in [meta::MODEL, meta::WEIGHTS, meta::DTYPE, meta::PREPROCESSING] {
        let (have, want) = (first.run.get(key).map(String::as_str).unwrap_or("?"), summary.source.get(key));
        // Models fitted before dtype was recorded say nothing of it.
        if let Some(want) = want.filter(|w| *w != have) {
            return Err(Error::fitted_on(
                first.rows.to_string(),
                at.to_string(),
                key.to_string(),
                have.to_string(),
                want.to_string(),
            ));
        }
    }
    if src.dim != model.n_features() {
        return Err(Error::fitted_on(
            first.rows.to_string(),
            at.to_string(),
            "width",
            src.dim.to_string(),
            model.n_features().to_string(),
        ));
    }
    Ok(())
}

/// How reduced parts are made: the features' run, and the PCA.
fn reduced_run(features: &Source, model: &Location, k: usize) -> BTreeMap<String, String> {
    let mut run = features.run.clone();
    run.insert("fruits.pca.model".into(), model.to_string());
    run.insert("fruits.pca.n_components".into(), k.to_string());
    run
}

/// Streams one features part through the model into `staged`; returns its rows.
fn reduce_part(
    storage: &Storage,
    s: &Source,
    model: &Pca,
    staged: &Path,
    scratch: &Path,
    mut points: Option<&mut Vec<(f32, f32, Option<String>)>>,
) -> Result<u64> {
    let k = model.n_components();
    let schema = Arc::new(Schema::new({
        let mut f: Vec<Field> = id_fields().into();
        f.push(Field::new("pca", DataType::List(feature_item()), false));
        f
    }));
    let kv: Vec<(String, String)> = reduced_run(s, &Location::Local(PathBuf::new()), k)
        .into_iter()
        .filter(|(key, _)| key != "fruits.pca.model")
        .collect();
    let mut out = ParquetFile::create(staged, schema, kv)?;
    with_local(storage, &s.rows, scratch, |local| {
        read_rows(local, "features", s.info.feature_dim()?, |rows| {
            let reduced = model.transform(&rows.values);
            if let Some(points) = points.as_deref_mut() {
                for (id, r) in rows.ids.iter().zip(reduced.chunks(k)) {
                    points.push((r[0], r[1], id.label.clone()));
                }
            }
            let mut cols: Vec<_> = id_columns(rows.ids.iter()).into();
            cols.push(float_lists(&reduced, k));
            out.write(cols)
        })
    })?;
    Ok(out.finish()?.1 as u64)
}

fn draw_scatter(
    storage: &Storage,
    points: &[(f32, f32, Option<String>)],
    out: &Location,
    scratch: &Path,
) -> Result<String> {
    let local = match out {
        Location::Local(p) => p.join("scatter.svg"),
        Location::S3 { .. } => scratch.join("scatter.svg"),
    };
    pictures::plot_scatter(points, &local).map_err(|e| Error::output(local.clone(), e))?;
    Ok(publish(storage, &[local], out)?.remove(0))
}

/// `pca stats`: writes the statistics of every part of another tool that
/// lacks them, reading each such part once. Returns (part, written now).
pub fn write_missing_stats(storage: &Storage, features: &Location) -> Result<Vec<(Location, bool)>> {
    let scratch = tempfile::tempdir()?;
    let src = sources(storage, features)?;
    let mut done = Vec::new();
    for s in &src.parts {
        let (m, cached, _) = moments(storage, s, src.dim, scratch.path())?;
        if !cached {
            let md: HashMap<String, String> = s.run.clone().into_iter().collect();
            let dest = s.stats.clone().unwrap_or_else(|| foreign_stats(&folder::as_folder(features), &s.rows));
            let local = scratch.path().join("stats.safetensors");
            write_stats(&local, &m, &md)?;
            match &dest {
                Location::Local(p) => {
                    std::fs::create_dir_all(p.parent().unwrap_or(Path::new(".")))?;
                    std::fs::rename(&local, p).map_err(|e| Error::output(p.clone(), e))?;
                }
                Location::S3 { .. } => storage.put_file(&local, &dest)?,
            }
        }
        done.push((s.rows.clone(), !cached));
    }
    Ok(done)
}
