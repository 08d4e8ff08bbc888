//! Reading a folder of parts as its manifests say: which parts are
//! complete, which files are leftovers of attempts that never committed,
//! and whether the folder belongs to a given run.
//!
//! A folder with at least one manifest is a `fruits` folder: only the files
//! its manifests name count. A folder with none is read as plain Parquet
//! parts written by another tool (`part-*.parquet` directly inside).

use std::collections::{BTreeMap, BTreeSet};

use super::commit::read_manifest;
use super::manifest::Manifest;
use super::names::{self, Role};
use crate::error::{Error, Result};
use crate::storage::{KeyRange, Listed, Location, Storage};

/// A file no committed part needs.
#[derive(Debug, Clone)]
pub struct Leftover {
    /// Relative to the folder.
    pub name: String,
    pub size: u64,
    pub modified: Option<std::time::SystemTime>,
}

/// A complete part.
#[derive(Debug, Clone)]
pub struct Part {
    pub manifest: Manifest,
    pub folder: Location,
}

impl Part {
    pub fn location(&self, role: Role) -> Option<Location> {
        self.manifest.file(role).map(|f| self.folder.join(&f.name))
    }
    pub fn rows(&self) -> u64 {
        self.manifest.file(Role::Rows).map_or(0, |f| f.rows)
    }
}

/// What a folder holds.
#[derive(Debug, Clone)]
pub struct Folder {
    pub location: Location,
    /// Complete parts, by part number.
    pub parts: Vec<Part>,
    /// With no manifest at all: the `part-*.parquet` files directly inside.
    pub foreign: Vec<Location>,
    /// Part-shaped files no manifest names, and staging files: what
    /// unfinished or replaced attempts left.
    pub leftovers: Vec<Leftover>,
}

impl Folder {
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty() && self.foreign.is_empty()
    }

    pub fn part(&self, number: u32) -> Option<&Part> {
        self.parts.iter().find(|p| p.manifest.part == number)
    }
}

/// `loc` as a folder: an S3 prefix ending in `/`.
pub fn as_folder(loc: &Location) -> Location {
    match loc {
        Location::S3 { bucket, key } if !key.is_empty() && !key.ends_with('/') => {
            Location::S3 { bucket: bucket.clone(), key: format!("{key}/") }
        }
        other => other.clone(),
    }
}

/// A listed file's path relative to `folder` (`/`-separated).
fn relative(folder: &Location, file: &Location) -> Option<String> {
    match (folder, file) {
        (Location::Local(dir), Location::Local(p)) => {
            let rel = p.strip_prefix(dir).ok()?;
            Some(rel.iter().map(|c| c.to_string_lossy()).collect::<Vec<_>>().join("/"))
        }
        (Location::S3 { bucket: b1, key: prefix }, Location::S3 { bucket: b2, key }) if b1 == b2 => {
            key.strip_prefix(prefix.as_str()).map(str::to_string)
        }
        _ => None,
    }
}

/// Reads `folder`'s manifests and checks that every file they name is
/// there with its recorded size. A folder that does not exist is empty.
pub fn open(storage: &Storage, folder: &Location) -> Result<Folder> {
    let folder = as_folder(folder);
    let files: BTreeMap<String, Listed> =
        storage.list(&folder)?.into_iter().filter_map(|l| Some((relative(&folder, &l.location)?, l))).collect();
    let listed: BTreeMap<String, u64> = files.iter().map(|(k, l)| (k.clone(), l.size)).collect();
    let mut parts = Vec::new();
    for rel in listed.keys().filter(|r| names::manifest_part(r).is_some()) {
        let at = folder.join(rel);
        let bad = |reason: String| Error::corrupt(&at, reason);
        // Listed a moment ago: gone now means another attempt replaced it mid-read.
        let manifest = read_manifest(storage, &at)?.ok_or_else(|| bad("vanished while being read".into()))?;
        if Some(manifest.part) != names::manifest_part(rel) {
            return Err(bad(format!("says part {}, its name another", manifest.part)));
        }
        for f in &manifest.files {
            match listed.get(&f.name) {
                Some(&size) if size == f.bytes => {}
                Some(&size) => {
                    return Err(bad(format!("names {} of {} bytes, the folder has {size}", f.name, f.bytes)))
                }
                None => return Err(bad(format!("names {}, which is not in the folder", f.name))),
            }
        }
        parts.push(Part { manifest, folder: folder.clone() });
    }
    parts.sort_by_key(|p| p.manifest.part);
    let named: BTreeSet<&str> = parts.iter().flat_map(|p| p.manifest.files.iter().map(|f| f.name.as_str())).collect();
    // Without a manifest, attempt-named rows files are still leftovers (an
    // attempt that never committed), not another tool's parts.
    let leftover = |rel: &str| {
        names::is_staging(rel)
            || if parts.is_empty() {
                names::is_attempt_rows(rel)
            } else {
                names::is_part_file(rel) && !named.contains(rel)
            }
    };
    let leftovers = files
        .iter()
        .filter(|(rel, _)| leftover(rel))
        .map(|(rel, l)| Leftover { name: rel.clone(), size: l.size, modified: l.modified })
        .collect();
    let foreign = if parts.is_empty() {
        listed
            .keys()
            .filter(|rel| !rel.contains('/') && rel.starts_with("part-") && rel.ends_with(".parquet"))
            .filter(|rel| !names::is_attempt_rows(rel))
            .map(|rel| folder.join(rel))
            .collect()
    } else {
        Vec::new()
    };
    Ok(Folder { location: folder, parts, foreign, leftovers })
}

/// The parts of a folder that pass `keep`, removed: each manifest first (the
/// part stops existing in one step), then its files.
pub fn remove_parts(storage: &Storage, folder: &Folder, keep: impl Fn(&Part) -> bool) -> Result<usize> {
    let mut removed = 0;
    for part in folder.parts.iter().filter(|p| !keep(p)) {
        storage.delete(&folder.location.join(&names::manifest_name(part.manifest.part)))?;
        for f in &part.manifest.files {
            storage.delete(&folder.location.join(&f.name))?;
        }
        removed += 1;
    }
    Ok(removed)
}

/// What `featurize` needs to know of its output folder before it writes,
/// for a few requests whatever the folder's size (a task must not list
/// every part of its output: that grows with the run): its own part's
/// files and manifest, and one other part's (all parts of a folder belong
/// to one run, so one stands for all), from the first page of `_fruits/`.
#[derive(Debug, Clone, Default)]
pub struct Peek {
    pub folder: Option<Location>,
    /// Relative name → size.
    pub listed: BTreeMap<String, u64>,
    pub own: Option<Manifest>,
    /// Another part's manifest, and where it is.
    pub other: Option<(Location, Manifest)>,
}

impl Peek {
    /// Whether `own` is complete: every file it names is there, whole.
    pub fn own_complete(&self) -> bool {
        self.own.as_ref().is_some_and(|m| m.files.iter().all(|f| self.listed.get(&f.name) == Some(&f.bytes)))
    }
}

pub fn peek(storage: &Storage, folder: &Location, part: u32) -> Result<Peek> {
    let folder = as_folder(folder);
    let stem = names::stem(part);
    let side = names::SIDE_DIR;
    // The part's rows files (`part-00042-*`) and side files
    // (`_fruits/part-00042[-.]*`), each a slice of the listing.
    let slices = [(format!("{stem}-"), format!("{stem}.")), (format!("{side}/{stem}"), format!("{side}/{stem}/"))];
    let mut listed = BTreeMap::new();
    for (after, before) in slices {
        let range = KeyRange { after: Some(after), before: Some(before), first: None };
        for l in storage.list_range(&folder, &range)? {
            listed.extend(relative(&folder, &l.location).map(|rel| (rel, l.size)));
        }
    }
    let own_name = names::manifest_name(part);
    let own = if listed.contains_key(&own_name) { read_manifest(storage, &folder.join(&own_name))? } else { None };
    let first_page = KeyRange { after: Some(format!("{side}/")), before: Some(format!("{side}0")), first: Some(1000) };
    let others: Vec<String> = storage
        .list_range(&folder, &first_page)?
        .iter()
        .filter_map(|l| relative(&folder, &l.location))
        .filter(|r| names::manifest_part(r).is_some_and(|p| p != part))
        .collect();
    let other = match others.first() {
        Some(rel) => {
            let at = folder.join(rel);
            read_manifest(storage, &at)?.map(|m| (at, m))
        }
        None => None,
    };
    Ok(Peek { folder: Some(folder), listed, own, other })
}

/// A folder holds one run: refuses when `peek` shows a part of another
/// (`ours`: the run's [`crate::part::schema::meta::RUN`] values).
pub fn check_run(peek: &Peek, ours: &BTreeMap<String, String>) -> Result<()> {
    let own = peek.own.iter().map(|m| (format!("part {}", m.part), m));
    let other = peek.other.iter().map(|(at, m)| (at.to_string(), m));
    for (which, m) in own.chain(other) {
        if let Some(diff) = m.run_difference(ours) {
            let folder = peek.folder.as_ref().map(|f| f.to_string()).unwrap_or_default();
            return Err(Error::OtherRun { folder, which, key: diff });
        }
    }
    Ok(())
}

/// The numbers of the parts that have a manifest, from the names in a
/// listing of `_fruits/` alone: no manifest is read.
pub fn manifest_numbers(storage: &Storage, folder: &Location) -> Result<BTreeSet<u32>> {
    let folder = as_folder(folder);
    let side = names::SIDE_DIR;
    let range = KeyRange { after: Some(format!("{side}/")), before: Some(format!("{side}0")), first: None };
    Ok(storage
        .list_range(&folder, &range)?
        .iter()
        .filter_map(|l| relative(&folder, &l.location))
        .filter_map(|rel| names::manifest_part(&rel))
        .collect())
}

/// `--overwrite`: removes the parts of `folder` whose run is not `ours`.
pub fn remove_other_runs(storage: &Storage, folder: &Location, ours: &BTreeMap<String, String>) -> Result<usize> {
    let f = open(storage, folder)?;
    remove_parts(storage, &f, |p| p.manifest.run_difference(ours).is_none())
}
