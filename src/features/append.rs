//! `featurize --append`: a run into a folder that already holds complete
//! parts featurises only what no part holds yet, as one new part after the
//! last, so a daily run costs the day's new photos, not all of them.
//!
//! - **Held**: a photo whose path a complete part holds (a row, or a
//!   rejection in its errors file), and which was not written after that
//!   part (its listing's modification time, when the listing gives one, is
//!   not after the part's `written_at`).
//! - **Changed**: held, but written again since (same path, new bytes):
//!   featurised again; its old row is removed from its part first.
//! - **Deleted**: held, but no longer under `--input` (a folder or prefix,
//!   whose listing is the whole truth; a key list names what to add, and
//!   deletes nothing): its row is removed.
//!
//! A row is removed by committing the part again without it (its features
//! copied, its statistics recomputed from the rows kept), as any attempt
//! commits: readers see the old part or the new one. Removals come before
//! the new part is written, so a run stopped between the two leaves photos
//! missing, never twice, and the next `--append` featurises them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::SystemTime;

use arrow_array::{BooleanArray, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{Error, Result};
use crate::part::folder::{Folder, Part};
use crate::part::schema::{schema, ParquetFile, RunMeta};
use crate::part::{read_rows, Attempt, Committed, Role};
use crate::pca::maths::Moments;
use crate::photos::input::{Input, Inventory, Item};
use crate::storage::{Location, Storage};

/// Which part holds a path, and when that part was written.
#[derive(Debug, Clone, Copy)]
struct Holder {
    part: u32,
    written: Option<SystemTime>,
}

/// What an `--append` run does.
#[derive(Debug, Default)]
pub struct Plan {
    /// To featurise: new and changed photos, in input order.
    pub todo: Vec<Item>,
    /// Paths to remove, by part: changed and deleted photos.
    pub remove: BTreeMap<u32, HashSet<String>>,
    pub held: usize,
    pub changed: usize,
    pub deleted: usize,
}

/// Compares the inventory with what the folder's parts hold.
pub fn plan(storage: &Storage, folder: &Folder, input: &Input, inventory: &Inventory) -> Result<Plan> {
    let holders = holders(storage, folder)?;
    let mut plan = Plan::default();
    let mut listed = HashSet::new();
    for item in &inventory.items {
        let path = item.name();
        match holders.get(&path) {
            Some(h) if !written_after(item, h) => plan.held += 1,
            Some(h) => {
                plan.changed += 1;
                plan.remove.entry(h.part).or_default().insert(path.clone());
                plan.todo.push(item.clone());
            }
            None => plan.todo.push(item.clone()),
        }
        listed.insert(path);
    }
    if matches!(input, Input::Folder(_)) {
        for (path, h) in &holders {
            if !listed.contains(path) {
                plan.deleted += 1;
                plan.remove.entry(h.part).or_default().insert(path.clone());
            }
        }
    }
    Ok(plan)
}

fn written_after(item: &Item, h: &Holder) -> bool {
    matches!((item.modified, h.written), (Some(m), Some(w)) if m > w)
}

/// Every path the folder's parts hold (rows and rejections), with its part.
fn holders(storage: &Storage, folder: &Folder) -> Result<HashMap<String, Holder>> {
    let scratch = tempfile::tempdir()?;
    let mut out = HashMap::new();
    for p in &folder.parts {
        let holder = Holder { part: p.manifest.part, written: p.manifest.written() };
        for path in part_paths(storage, p, scratch.path())? {
            out.insert(path, holder);
        }
    }
    Ok(out)
}

/// The paths of a part's rows and rejections.
fn part_paths(storage: &Storage, p: &Part, scratch: &Path) -> Result<Vec<String>> {
    let mut paths = Vec::new();
    if let Some(rows) = p.location(Role::Rows) {
        let local = storage.localize(&rows, scratch)?;
        paths.extend(batches(&local, Some(&["path"]))?.iter().flat_map(string_column("path")));
    }
    if let Some(errors) = p.location(Role::Errors) {
        let local = storage.localize(&errors, scratch)?;
        paths.extend(error_rows(&local)?.into_iter().map(|r| r[0].clone()));
    }
    Ok(paths)
}

fn string_column(name: &'static str) -> impl Fn(&RecordBatch) -> Vec<String> {
    move |b| {
        use arrow_array::cast::AsArray;
        b.column_by_name(name)
            .and_then(|c| c.as_string_opt::<i32>())
            .map(|c| c.iter().map(|v| v.unwrap_or_default().to_string()).collect())
            .unwrap_or_default()
    }
}

/// A Parquet file's batches, only `columns` if given.
fn batches(path: &Path, columns: Option<&[&str]>) -> Result<Vec<RecordBatch>> {
    let file = std::fs::File::open(path).map_err(|e| Error::Input { path: path.to_path_buf(), source: e })?;
    let read = crate::guard::catch(|| -> parquet::errors::Result<Vec<RecordBatch>> {
        let mut b = ParquetRecordBatchReaderBuilder::try_new(file)?;
        if let Some(names) = columns {
            let fields = b.parquet_schema().root_schema().get_fields().to_vec();
            let roots: Vec<usize> = (0..fields.len()).filter(|&i| names.contains(&fields[i].name())).collect();
            let mask = parquet::arrow::ProjectionMask::roots(b.parquet_schema(), roots);
            b = b.with_projection(mask);
        }
        b.build()?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
    })
    .map_err(|panic| Error::corrupt(path.display(), format!("the Parquet reader failed: {panic}")))?;
    read.map_err(|e| Error::parse(path.display(), e))
}

/// An errors file's rows: path, kind, reason.
fn error_rows(path: &Path) -> Result<Vec<[String; 3]>> {
    let mut r = csv::Reader::from_path(path).map_err(|e| Error::parse(path.display(), e))?;
    r.records()
        .map(|rec| {
            let rec = rec.map_err(|e| Error::parse(path.display(), e))?;
            Ok([0, 1, 2].map(|i| rec.get(i).unwrap_or_default().to_string()))
        })
        .collect()
}

/// Commits part `part` again without the rows and rejections of `paths`.
pub fn remove(
    storage: &Storage,
    folder: &Folder,
    part: &Part,
    paths: &HashSet<String>,
    run: &RunMeta,
) -> Result<Committed> {
    let scratch = tempfile::tempdir()?;
    let attempt = Attempt::begin(storage, &folder.location, part.manifest.part)?;
    let [rows_at, errors_at, stats_at] = [Role::Rows, Role::Errors, Role::Stats].map(|r| attempt.staging_path(r));
    // The rows kept, as they are.
    let mut kept_rows = 0;
    let mut out = ParquetFile::create(&rows_at, schema(), run.key_values())?;
    if let Some(rows) = part.location(Role::Rows) {
        for b in batches(&storage.localize(&rows, scratch.path())?, None)? {
            let keep: BooleanArray = string_column("path")(&b).iter().map(|p| Some(!paths.contains(p))).collect();
            let kept = arrow_select::filter::filter_record_batch(&b, &keep).map_err(|e| Error::output(&rows_at, e))?;
            kept_rows += kept.num_rows();
            out.write(kept.columns().to_vec())?;
        }
    }
    out.finish()?;
    // Their statistics, from their features.
    let mut m = Moments::new(run.feature_dim);
    read_rows(&rows_at, "features", run.feature_dim, |r| {
        m.add_rows(&r.values);
        Ok(())
    })?;
    crate::pca::stats::write_stats(&stats_at, &m, &run.key_values().into_iter().collect())?;
    // The rejections kept.
    let mut kept_errors = 0u64;
    let mut w = csv::Writer::from_writer(crate::storage::files::create_file(&errors_at)?);
    w.write_record(["path", "kind", "reason"]).map_err(|e| Error::output(&errors_at, e))?;
    if let Some(errors) = part.location(Role::Errors) {
        for r in error_rows(&storage.localize(&errors, scratch.path())?)?.iter().filter(|r| !paths.contains(&r[0])) {
            w.write_record(r).map_err(|e| Error::output(&errors_at, e))?;
            kept_errors += 1;
        }
    }
    let file = w.into_inner().map_err(|e| Error::output(&errors_at, e.into_error()))?;
    file.sync_all().map_err(|e| Error::output(&errors_at, e))?;
    let mut counts = part.manifest.counts.clone();
    let removed = part.rows().saturating_sub(kept_rows as u64)
        + counts.get("rejected").copied().unwrap_or(0).saturating_sub(kept_errors);
    counts.insert("featurised".into(), kept_rows as u64);
    counts.insert("rejected".into(), kept_errors);
    counts.entry("inputs".into()).and_modify(|n| *n = n.saturating_sub(removed));
    let roles = [(Role::Rows, kept_rows as u64), (Role::Errors, kept_errors), (Role::Stats, kept_rows as u64)];
    attempt.commit("features", run.key_values().into_iter().collect(), counts, &roles)
}

/// The folder's next part number.
pub fn next_part(folder: &Folder) -> u32 {
    folder.parts.iter().map(|p| p.manifest.part + 1).max().unwrap_or(0)
}

/// The folder at `out`, whose parts must all be of run `run`.
pub fn open(storage: &Storage, out: &Location, run: &RunMeta) -> Result<Folder> {
    let f = crate::part::folder::open(storage, out)?;
    let ours: BTreeMap<String, String> = run.key_values().into_iter().collect();
    for p in &f.parts {
        if let Some(key) = p.manifest.run_difference(&ours) {
            let which = format!("part {}", p.manifest.part);
            return Err(Error::OtherRun { folder: out.to_string(), which, key });
        }
    }
    Ok(f)
}
