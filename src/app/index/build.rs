//! `index build`: the labelled rows of one or more features folders, in
//! the index's space. Folders must agree on how their features were made
//! (model, weights, preprocessing, width, dtype: as `pca` demands of
//! parts; run ids may differ), and a PCA model must have been fitted on
//! features made the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::{files, Entry, Index, Meta, Projection, FORMAT};
use crate::error::{Error, Param, Result};
use crate::part::dataset::{sources, Source};
use crate::part::rows::read_rows;
use crate::part::schema::meta;
use crate::pca::files::load_model;
use crate::storage::{Location, Storage};

/// The run keys an index and a query must share (the run id may differ).
pub const MUST_MATCH: [&str; 5] = [meta::MODEL, meta::WEIGHTS, meta::PREPROCESSING, meta::FEATURE_DIM, meta::DTYPE];

#[derive(Debug, Clone)]
pub struct BuildJob {
    pub features: Vec<Location>,
    pub pca: Option<Location>,
    /// Keep only the first n PCA components (a narrower, faster index).
    pub components: Option<usize>,
    /// Only rows of this split (`Training`).
    pub split: Option<String>,
    pub output: Location,
    /// Add to the index at `output` instead of building anew (see [`append`]).
    pub append: bool,
    /// What is taken away from each vector before the cosine, where no
    /// PCA is given (a PCA always takes its own mean away).
    pub centre: Centre,
}

/// Whether vectors are centred before the cosine (see the module doc of
/// [`super`] for why centring is the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Centre {
    /// The mean of the indexed rows is taken away.
    #[default]
    Mean,
    /// Nothing is taken away: the cosine of the raw features.
    None,
}

pub struct Built {
    pub index: Index,
    pub written: Vec<String>,
}

/// Every part of every folder, the run keys they share, their run ids.
type Gathered = (Vec<Source>, BTreeMap<String, String>, Vec<String>);

fn gather(storage: &Storage, folders: &[Location]) -> Result<Gathered> {
    let mut parts: Vec<Source> = Vec::new();
    let mut run_ids = BTreeSet::new();
    let mut first: Option<(Location, BTreeMap<String, String>)> = None;
    for folder in folders {
        let src = sources(storage, folder)?;
        let run = &src.parts[0].run;
        let keys: BTreeMap<String, String> =
            MUST_MATCH.iter().map(|k| (k.to_string(), run.get(*k).cloned().unwrap_or_else(|| "?".into()))).collect();
        if let Some(k) = keys.iter().find(|(_, v)| *v == "?").map(|(k, _)| k) {
            return Err(Error::corrupt(
                folder,
                format!(
                    "its parts do not say their {k} (not made by fruits featurize?): \
                     an index must know how its features were made to check every query"
                ),
            ));
        }
        match &first {
            None => first = Some((folder.clone(), keys)),
            Some((f0, k0)) => {
                if let Some(k) = MUST_MATCH.iter().find(|k| k0.get(**k) != keys.get(**k)) {
                    return Err(Error::differ(
                        "features folders",
                        k.to_string(),
                        (f0.to_string(), k0[*k].clone()),
                        (folder.to_string(), keys[*k].clone()),
                    ));
                }
            }
        }
        run_ids.insert(run.get(meta::RUN_ID).cloned().unwrap_or_else(|| "?".into()));
        parts.extend(src.parts);
    }
    let (_, keys) = first.ok_or_else(|| Error::invalid(Param::Features, "needs at least one folder"))?;
    Ok((parts, keys, run_ids.into_iter().collect()))
}

/// The projection from a fitted PCA model, checked against the features.
fn pca_projection(
    storage: &Storage,
    at: &Location,
    keys: &BTreeMap<String, String>,
    keep: Option<usize>,
    scratch: &Path,
) -> Result<(Projection, String)> {
    let (pca, summary) = load_model(storage, at, scratch)?;
    for k in [meta::MODEL, meta::WEIGHTS, meta::PREPROCESSING, meta::DTYPE] {
        let (theirs, ours) = (summary.source.get(k).map(String::as_str).unwrap_or("?"), keys[k].as_str());
        if theirs != ours {
            return Err(Error::fitted_on(
                "the features".into(),
                at.to_string(),
                k.to_string(),
                ours.to_string(),
                theirs.to_string(),
            ));
        }
    }
    let d = pca.n_features();
    if d.to_string() != keys[meta::FEATURE_DIM] {
        return Err(Error::fitted_on(
            "the features".into(),
            at.to_string(),
            "width",
            keys[meta::FEATURE_DIM].clone(),
            d.to_string(),
        ));
    }
    let k = match keep {
        Some(k) if k == 0 || k > pca.n_components() => {
            let reason = format!("must be between 1 and the model's {} components, got {k}", pca.n_components());
            return Err(Error::invalid(Param::IndexComponents, reason));
        }
        Some(k) => k,
        None => pca.n_components(),
    };
    let projection = Projection {
        mean: pca.mean.iter().map(|v| *v as f32).collect(),
        scale: pca.scale.as_ref().map(|s| s.iter().map(|v| *v as f32).collect()),
        components: pca.components[..k].iter().flatten().map(|v| *v as f32).collect(),
    };
    Ok((projection, format!("pca: {k} of {} components of {at}", pca.n_components())))
}

/// Whether a row goes into the index; if not, why.
fn keep_row(
    label: &Option<String>,
    split: &Option<String>,
    want: &Option<String>,
) -> std::result::Result<(), &'static str> {
    match label {
        None => Err("no_label"),
        Some(l) if l.is_empty() => Err("no_label"),
        _ if want.as_ref().is_some_and(|w| split.as_ref() != Some(w)) => Err("other_split"),
        _ => Ok(()),
    }
}

/// Reads each part once into scratch space (S3), so both passes read local files.
fn localize_all(storage: &Storage, parts: &[Source], scratch: &Path) -> Result<Vec<PathBuf>> {
    let dir = scratch.join("parts");
    std::fs::create_dir_all(&dir)?;
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| match &p.rows {
            Location::Local(path) => Ok(path.clone()),
            s3 => {
                let local = storage.localize(s3, &dir)?;
                let named = dir.join(format!("{i}.parquet"));
                std::fs::rename(&local, &named)?;
                Ok(named)
            }
        })
        .collect()
}

pub fn build(job: &BuildJob, storage: &Storage) -> Result<Built> {
    if job.append {
        return append(job, storage);
    }
    for f in &job.features {
        if f.contains(&job.output) {
            return Err(Error::Nested {
                output: job.output.to_string(),
                input: f.to_string(),
                within: Param::Features,
            });
        }
    }
    let scratch = tempfile::tempdir()?;
    let (parts, keys, run_ids) = gather(storage, &job.features)?;
    let d: usize = keys[meta::FEATURE_DIM]
        .parse()
        .map_err(|_| Error::corrupt(&job.features[0], "the feature width is not a number"))?;
    let local = localize_all(storage, &parts, scratch.path())?;
    let (projection, described) = projection_for(job, storage, &keys, &local, d, scratch.path())?;
    let (rows, vectors, counts) = read_indexed(&local, &projection, d, &job.split)?;
    let skipped = total_skipped(counts.iter().map(|c| &c.skipped));
    if rows.is_empty() {
        let at = job.features.iter().map(|f| f.to_string()).collect::<Vec<_>>().join(", ");
        return Err(Error::NoRows { at, split: job.split.clone(), skipped: format!("{skipped:?}") });
    }
    let classes: Vec<String> = rows.iter().map(|(_, l)| l.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let mut class_rows = vec![0u64; classes.len()];
    let entries: Vec<Entry> = rows
        .into_iter()
        .map(|(path, label)| {
            let class = classes.binary_search(&label).expect("every label is a class") as u32;
            class_rows[class as usize] += 1;
            Entry { path, class }
        })
        .collect();
    let meta = Meta {
        format: FORMAT.into(),
        metric: "cosine".into(),
        run: keys,
        run_ids,
        sources: job.features.iter().map(|f| f.to_string()).collect(),
        split: job.split.clone(),
        dim: projection.output_dim(),
        rows: entries.len(),
        projection: described,
        pca: job.pca.as_ref().map(|p| p.to_string()),
        skipped,
        classes,
        class_rows,
        parts: part_rows(&parts, &counts, 0),
    };
    let vectors = super::search::Vectors::from_rows(&vectors, meta.dim);
    let index = Index { meta, projection, vectors, entries };
    index.validate()?;
    let written = files::publish(storage, &index, &job.output, scratch.path())?;
    Ok(Built { index, written })
}

/// What takes the features into the index's space: the PCA's projection,
/// the indexed rows' mean, or nothing (`Centre::None`), and its description.
fn projection_for(
    job: &BuildJob,
    storage: &Storage,
    keys: &BTreeMap<String, String>,
    local: &[PathBuf],
    d: usize,
    scratch: &Path,
) -> Result<(Projection, String)> {
    Ok(match &job.pca {
        Some(_) if job.centre == Centre::None => {
            let reason: String = "none: a PCA's components are of features less its mean, which it takes away".into();
            return Err(Error::invalid(Param::IndexCentre, reason));
        }
        Some(at) => pca_projection(storage, at, keys, job.components, scratch)?,
        None if job.components.is_some() => {
            return Err(Error::Needs { param: Param::IndexComponents, needs: Param::IndexPca })
        }
        None => match job.centre {
            Centre::Mean => {
                let mean = mean_of(local, d, &job.split)?;
                (Projection { mean, scale: None, components: Vec::new() }, "centre".into())
            }
            Centre::None => (Projection { mean: vec![0.0; d], scale: None, components: Vec::new() }, "none".into()),
        },
    })
}

/// The mean of the rows that will be indexed (first pass).
fn mean_of(local: &[PathBuf], d: usize, want: &Option<String>) -> Result<Vec<f32>> {
    let mut sum = vec![0f64; d];
    let mut n = 0u64;
    for path in local {
        read_rows(path, "features", d, |batch| {
            for (id, x) in batch.ids.iter().zip(batch.values.chunks_exact(d)) {
                if keep_row(&id.label, &id.split, want).is_ok() {
                    sum.iter_mut().zip(x).for_each(|(s, v)| *s += *v as f64);
                    n += 1;
                }
            }
            Ok(())
        })?;
    }
    Ok(sum.iter().map(|s| if n > 0 { (s / n as f64) as f32 } else { 0.0 }).collect())
}

/// What one part gave an index: its kept rows and its rows left out.
#[derive(Default)]
struct PartCount {
    rows: usize,
    skipped: BTreeMap<String, u64>,
}

/// The kept rows' (path, label), their projected vectors, and what each
/// part gave.
type Indexed = (Vec<(String, String)>, Vec<f32>, Vec<PartCount>);

/// Second pass: every kept row, projected.
fn read_indexed(local: &[PathBuf], projection: &Projection, d: usize, want: &Option<String>) -> Result<Indexed> {
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut vectors = Vec::new();
    let mut counts = Vec::with_capacity(local.len());
    for path in local {
        let mut count = PartCount::default();
        read_rows(path, "features", d, |batch| {
            let mut kept = Vec::with_capacity(batch.values.len());
            for (id, x) in batch.ids.into_iter().zip(batch.values.chunks_exact(d)) {
                match keep_row(&id.label, &id.split, want) {
                    Ok(()) => {
                        kept.extend_from_slice(x);
                        rows.push((id.path, id.label.unwrap_or_default()));
                        count.rows += 1;
                    }
                    Err(why) => *count.skipped.entry(why.into()).or_default() += 1,
                }
            }
            vectors.extend(projection.apply(&kept));
            Ok(())
        })?;
        counts.push(count);
    }
    Ok((rows, vectors, counts))
}

/// The rows left out, by reason, over the given parts.
fn total_skipped<'a>(parts: impl IntoIterator<Item = &'a BTreeMap<String, u64>>) -> BTreeMap<String, u64> {
    let mut all = BTreeMap::new();
    parts.into_iter().flatten().for_each(|(k, v)| *all.entry(k.clone()).or_default() += v);
    all
}

/// Each part's rows file and the entries it gave, from entry `first` on.
fn part_rows(parts: &[Source], counts: &[PartCount], mut first: usize) -> Vec<super::PartRows> {
    parts
        .iter()
        .zip(counts)
        .map(|(p, c)| {
            let r = super::PartRows { rows_file: p.rows.to_string(), first, count: c.rows, skipped: c.skipped.clone() };
            first += c.rows;
            r
        })
        .collect()
}

/// `--append`: the index at `job.output` keeps the rows of the parts it
/// holds that are still there as they were (same rows file: same attempt),
/// drops those of parts gone or committed again (rows removed by
/// `featurize --append`), and adds the rows of the other parts, projected
/// as its own rows were (its mean or PCA, fixed at its build: a rebuild
/// would take a mean over all rows; see docs/GUIDE.md). Nothing is read
/// again of the parts it keeps. New labels become new classes after the
/// others.
fn append(job: &BuildJob, storage: &Storage) -> Result<Built> {
    let scratch = tempfile::tempdir()?;
    let old = files::open(storage, &job.output, scratch.path())?;
    check_appendable(job, &old.meta)?;
    let (parts, keys, run_ids) = gather(storage, &job.features)?;
    if keys != old.meta.run {
        let (a, b) = (job.features[0].to_string(), job.output.to_string());
        return Err(Error::differ(
            "the features and the index",
            "how they were made",
            (a, format!("{keys:?}")),
            (b, format!("{:?}", old.meta.run)),
        ));
    }
    // The parts the index does not hold as they are now: read and projected
    // as its own rows were.
    let held: BTreeSet<&str> = old.meta.parts.iter().map(|p| p.rows_file.as_str()).collect();
    let new: Vec<Source> = parts.iter().filter(|p| !held.contains(p.rows.to_string().as_str())).cloned().collect();
    let local = localize_all(storage, &new, scratch.path())?;
    let fresh = read_indexed(&local, &old.projection, old.meta.feature_dim(), &old.meta.split)?;
    let merged = merge(&parts, &old, fresh);
    let m = &old.meta;
    let meta = Meta {
        run_ids: m.run_ids.iter().cloned().chain(run_ids).collect::<BTreeSet<_>>().into_iter().collect(),
        sources: m
            .sources
            .iter()
            .cloned()
            .chain(job.features.iter().map(|f| f.to_string()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        rows: merged.entries.len(),
        skipped: total_skipped(merged.parts.iter().map(|p| &p.skipped)),
        class_rows: merged.class_rows(),
        classes: merged.classes,
        parts: merged.parts,
        ..m.clone()
    };
    let vectors = super::search::Vectors::from_rows(&merged.vectors, meta.dim);
    let index = Index { meta, projection: old.projection.clone(), vectors, entries: merged.entries };
    index.validate()?;
    let written = files::publish(storage, &index, &job.output, scratch.path())?;
    Ok(Built { index, written })
}

/// An index can be added to when it records its parts and the job asks
/// for the split and model it was built with.
fn check_appendable(job: &BuildJob, m: &Meta) -> Result<()> {
    if m.parts.is_empty() && m.rows > 0 {
        return Err(Error::corrupt(
            &job.output,
            "the index does not say which parts it holds (built before it did): build it anew once",
        ));
    }
    if job.split != m.split || job.pca.as_ref().map(|p| p.to_string()) != m.pca || job.components.is_some() {
        let how = format!("split {:?}, {}", m.split, m.projection);
        return Err(Error::corrupt(
            &job.output,
            format!("was built otherwise ({how}): add to it with the same split and model, or build it anew"),
        ));
    }
    Ok(())
}

/// An appended index's entries, vectors, classes and parts.
struct Merged {
    entries: Vec<Entry>,
    vectors: Vec<f32>,
    classes: Vec<String>,
    parts: Vec<super::PartRows>,
}

impl Merged {
    fn class_rows(&self) -> Vec<u64> {
        let mut rows = vec![0u64; self.classes.len()];
        self.entries.iter().for_each(|e| rows[e.class as usize] += 1);
        rows
    }
}

/// Every current part in the folders' order: its old entries when the
/// index holds it, else its fresh ones (`fresh` has the parts the index
/// does not hold, in the same order).
fn merge(parts: &[Source], old: &Index, fresh: Indexed) -> Merged {
    let held: BTreeMap<&str, &super::PartRows> = old.meta.parts.iter().map(|p| (p.rows_file.as_str(), p)).collect();
    let d = old.vectors.dim;
    let old_rows = old.vectors.to_rows();
    let (rows, vectors, counts) = fresh;
    let (mut rows, mut vectors, mut counts) = (rows.into_iter(), vectors.chunks_exact(d.max(1)), counts.into_iter());
    let mut out =
        Merged { entries: Vec::new(), vectors: Vec::new(), classes: old.meta.classes.clone(), parts: Vec::new() };
    for p in parts {
        let first = out.entries.len();
        let skipped = match held.get(p.rows.to_string().as_str()) {
            Some(h) => {
                let range = h.first..h.first + h.count;
                out.entries
                    .extend(old.entries[range.clone()].iter().map(|e| Entry { path: e.path.clone(), class: e.class }));
                out.vectors.extend_from_slice(&old_rows[range.start * d..range.end * d]);
                h.skipped.clone()
            }
            None => {
                let count = counts.next().expect("a count per new part");
                for (path, label) in rows.by_ref().take(count.rows) {
                    let class = match out.classes.iter().position(|c| *c == label) {
                        Some(c) => c,
                        None => {
                            out.classes.push(label);
                            out.classes.len() - 1
                        }
                    };
                    out.entries.push(Entry { path, class: class as u32 });
                    out.vectors.extend_from_slice(vectors.next().expect("a vector per row"));
                }
                count.skipped
            }
        };
        let count = out.entries.len() - first;
        out.parts.push(super::PartRows { rows_file: p.rows.to_string(), first, count, skipped });
    }
    out
}
