//! A folder of parts read as one dataset: the committed parts its manifests
//! name (or, with no manifest, another tool's `part-*.parquet`), each with
//! its footer read, checked to agree on how they were made. What `pca` and
//! the app's index read; neither reads the other's job to get it.

use std::collections::BTreeMap;

use super::commit::read_manifest;
use super::folder::{self, Folder};
use super::names::{self, Role};
use super::rows::{part_info, PartInfo};
use super::schema::meta;
use crate::error::{Error, Result};
use crate::storage::{Location, Storage};

/// A part to read: fruits' (committed) or another tool's.
#[derive(Debug, Clone)]
pub struct Source {
    /// Its number: the manifest's, or its rank among another tool's parts.
    pub part: u32,
    pub rows: Location,
    pub info: PartInfo,
    /// Its statistics file, if it has one.
    pub stats: Option<Location>,
    /// How it was made ([`meta::RUN`] keys; `?` where another tool said nothing).
    pub run: BTreeMap<String, String>,
}

/// The parts of a folder, checked to agree on how they were made, and how
/// many leftover files of unfinished attempts were passed over.
pub struct Sources {
    pub parts: Vec<Source>,
    pub leftovers: usize,
    pub dim: usize,
}

/// Opens `features` and reads every part's footer.
pub fn sources(storage: &Storage, features: &Location) -> Result<Sources> {
    let f = folder::open(storage, features)?;
    if f.is_empty() {
        return Err(Error::NoParts { at: f.location.to_string() });
    }
    let parts = if f.parts.is_empty() { foreign(storage, &f)? } else { committed(storage, &f)? };
    let first = &parts[0];
    for other in &parts[1..] {
        if let Some(key) = meta::RUN.iter().find(|k| first.run.get(**k) != other.run.get(**k)) {
            let value = |s: &Source| s.run.get(*key).cloned().unwrap_or_else(|| "?".into());
            return Err(Error::differ(
                "parts",
                key.to_string(),
                (first.rows.to_string(), value(first)),
                (other.rows.to_string(), value(other)),
            ));
        }
    }
    let dim = first.info.feature_dim()?;
    Ok(Sources { parts, leftovers: f.leftovers.len(), dim })
}

fn committed(storage: &Storage, f: &Folder) -> Result<Vec<Source>> {
    let mut out = Vec::new();
    for p in &f.parts {
        let rows = p.location(Role::Rows).expect("a manifest names its rows");
        let info = part_info(storage, &rows)?;
        if info.rows != p.rows() {
            return Err(Error::corrupt(&rows, format!("{} rows, its manifest says {}", info.rows, p.rows())));
        }
        out.push(Source {
            part: p.manifest.part,
            rows,
            info,
            stats: p.location(Role::Stats),
            run: p.manifest.run.clone(),
        });
    }
    Ok(out)
}

/// One committed part of `features`, found by its manifest's name: one small
/// GET and the rows file's footer, whatever the folder holds (a task of a
/// cluster job must not list every part of the run). `None` when the folder
/// has no manifest for it.
pub fn part_source(storage: &Storage, features: &Location, part: u32) -> Result<Option<Source>> {
    let folder = folder::as_folder(features);
    let Some(manifest) = read_manifest(storage, &folder.join(&names::manifest_name(part)))? else {
        return Ok(None);
    };
    let p = folder::Part { manifest, folder };
    let rows = p.location(Role::Rows).ok_or_else(|| Error::corrupt(&p.folder, format!("part {part} names no rows")))?;
    let info = part_info(storage, &rows)?;
    if info.rows != p.rows() {
        return Err(Error::corrupt(&rows, format!("{} rows, its manifest says {}", info.rows, p.rows())));
    }
    let stats = p.location(Role::Stats);
    Ok(Some(Source { part, rows, info, stats, run: p.manifest.run }))
}

/// Another tool's parts: numbered in name order; statistics from `pca stats`.
fn foreign(storage: &Storage, f: &Folder) -> Result<Vec<Source>> {
    let listed: Vec<Location> = f.foreign.clone();
    let mut out = Vec::new();
    for (i, rows) in listed.into_iter().enumerate() {
        let info = part_info(storage, &rows)?;
        let stats = foreign_stats(&f.location, &rows);
        let stats = storage.exists(&stats)?.then_some(stats);
        let run = meta::RUN.iter().map(|k| (k.to_string(), info.get(k).to_string())).collect();
        out.push(Source { part: i as u32, rows, info, stats, run });
    }
    Ok(out)
}

/// Where `pca stats` keeps another tool's part's statistics.
pub fn foreign_stats(folder: &Location, rows: &Location) -> Location {
    let name = rows.file_name();
    folder.join(&format!("{}/{}.stats.safetensors", names::SIDE_DIR, name.trim_end_matches(".parquet")))
}
