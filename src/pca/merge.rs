//! Statistics merged as a tree (`fruits pca merge`): a cluster's tasks each
//! merge the statistics of a range of parts, or of a few merged files, into
//! one file, so the fit on the driver reads a number of files that does not
//! grow with the parts. A merged file is a statistics file ([`super::stats`])
//! whose metadata also says which parts it holds ([`PARTS_KEY`]), so a merge
//! refuses to count a part twice and a fit refuses to miss one.
//!
//! Merging is exact up to f64 summation order: [`Moments::merge`] adds sums
//! and Gram matrices, so a tree and a flat merge differ only in the order of
//! the additions (last bits, see the test in `tests/test_pca_merge.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use super::maths::Moments;
use super::stats::{parse_stats, write_stats};
use crate::error::{Error, Result};
use crate::part::dataset::{part_source, Source};
use crate::part::read_rows;
use crate::part::schema::meta;
use crate::storage::{Location, Storage};

/// The metadata key of a merged file: the parts it holds, as a [`PartSet`].
pub const PARTS_KEY: &str = "fruits.parts";

/// A set of part numbers, written as ranges: `0-63,70,72-80` (`none` when empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartSet(pub BTreeSet<u32>);

impl FromStr for PartSet {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let mut set = BTreeSet::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let number = |t: &str| t.trim().parse::<u32>().map_err(|_| format!("{t:?} is not a part number"));
            let (first, last) = match item.split_once('-') {
                Some((a, b)) => (number(a)?, number(b)?),
                None => (number(item)?, number(item)?),
            };
            if first > last {
                return Err(format!("{item}: the range runs backwards"));
            }
            set.extend(first..=last);
        }
        if set.is_empty() {
            return Err("names no part".into());
        }
        Ok(PartSet(set))
    }
}

impl fmt::Display for PartSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        for &n in &self.0 {
            match ranges.last_mut() {
                Some((_, last)) if *last + 1 == n => *last = n,
                _ => ranges.push((n, n)),
            }
        }
        if ranges.is_empty() {
            return f.write_str("none");
        }
        let text: Vec<String> =
            ranges.iter().map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
        f.write_str(&text.join(","))
    }
}

impl PartSet {
    /// The parts in `self` and not in `other`.
    pub fn minus(&self, other: &PartSet) -> PartSet {
        PartSet(self.0.difference(&other.0).copied().collect())
    }
}

/// Merged statistics: the moments, how the rows were made, which parts.
pub struct Merged {
    pub moments: Moments,
    /// The run's [`meta::RUN`] values, as every part's manifest gives them.
    pub run: BTreeMap<String, String>,
    pub parts: PartSet,
    /// Statistics files read, and their bytes.
    pub files_read: usize,
    pub bytes_read: u64,
}

/// A part's statistics: from its statistics file when that matches the
/// part, else one streaming pass over its rows. `true` when from the file;
/// the file's size (0 when not read).
pub fn part_moments(storage: &Storage, s: &Source, dim: usize, scratch: &Path) -> Result<(Moments, bool, u64)> {
    if let Some(at) = &s.stats {
        if let Some(bytes) = storage.read(at)? {
            let (m, md) = parse_stats(&bytes).map_err(|e| Error::parse(at, e))?;
            let same = m.n == s.info.rows
                && m.dim() == dim
                && [meta::MODEL, meta::WEIGHTS].iter().all(|k| md.get(*k).map(String::as_str) == Some(s.info.get(k)));
            if same {
                return Ok((m, true, bytes.len() as u64));
            }
            eprintln!("fruits: {at} does not match its part; recomputing from the rows");
        }
    }
    let mut m = Moments::new(dim);
    with_local(storage, &s.rows, scratch, |local| {
        read_rows(local, "features", dim, |rows| {
            m.add_rows(&rows.values);
            Ok(())
        })
    })?;
    Ok((m, false, 0))
}

/// Runs `f` on a local copy of `loc` (the file itself when local; S3: one
/// part at a time in scratch space, removed after).
pub fn with_local<T>(
    storage: &Storage,
    loc: &Location,
    scratch: &Path,
    f: impl FnOnce(&Path) -> Result<T>,
) -> Result<T> {
    let local = storage.localize(loc, scratch)?;
    let r = f(&local);
    if loc.is_s3() {
        let _ = std::fs::remove_file(&local);
    }
    r
}

/// The statistics of `parts` of the features folder, each part found by its
/// manifest's name (no listing of the folder).
pub fn merge_parts(storage: &Storage, features: &Location, parts: &PartSet) -> Result<Merged> {
    let scratch = tempfile::tempdir()?;
    let mut merged: Option<(Merged, Source)> = None;
    for &n in &parts.0 {
        let s =
            part_source(storage, features, n)?.ok_or_else(|| Error::NoPart { at: features.to_string(), part: n })?;
        let dim = s.info.feature_dim()?;
        let (m, _, bytes) = part_moments(storage, &s, dim, scratch.path())?;
        match &mut merged {
            None => {
                let run = s.run.clone();
                let first = Merged { moments: m, run, parts: PartSet::default(), files_read: 0, bytes_read: 0 };
                merged = Some((first, s));
            }
            Some((acc, first)) => {
                if let Some(key) = meta::RUN.iter().find(|k| first.run.get(**k) != s.run.get(**k)) {
                    let value = |s: &Source| s.run.get(*key).cloned().unwrap_or_else(|| "?".into());
                    let sides = ((first.rows.to_string(), value(first)), (s.rows.to_string(), value(&s)));
                    return Err(Error::differ("parts", key.to_string(), sides.0, sides.1));
                }
                acc.moments.merge(&m)?;
            }
        }
        let (acc, _) = merged.as_mut().expect("set above");
        acc.parts.0.insert(n);
        acc.files_read += (bytes > 0) as usize;
        acc.bytes_read += bytes;
    }
    merged.map(|(m, _)| m).ok_or_else(|| Error::NoParts { at: features.to_string() })
}

/// Merges merged files (each a file, or a folder of `*.stats.safetensors`);
/// refuses a part held by two of them, or files of different runs.
pub fn merge_files(storage: &Storage, inputs: &[Location]) -> Result<Merged> {
    let mut merged: Option<(Merged, Location)> = None;
    for at in expand(storage, inputs)? {
        let bytes = storage.read(&at)?.ok_or_else(|| Error::corrupt(&at, "is not there"))?;
        let (m, md) = parse_stats(&bytes).map_err(|e| Error::parse(&at, e))?;
        let parts: PartSet = md
            .get(PARTS_KEY)
            .ok_or_else(|| Error::corrupt(&at, "names no parts: not written by `fruits pca merge`"))?
            .parse()
            .map_err(|e: String| Error::corrupt(&at, e))?;
        let run: BTreeMap<String, String> =
            meta::RUN.iter().map(|k| (k.to_string(), md.get(*k).cloned().unwrap_or_else(|| "?".into()))).collect();
        match &mut merged {
            None => {
                let first = Merged { moments: m, run, parts, files_read: 1, bytes_read: bytes.len() as u64 };
                merged = Some((first, at));
            }
            Some((acc, first_at)) => {
                if let Some(key) = meta::RUN.iter().find(|k| acc.run.get(**k) != run.get(**k)) {
                    let sides = ((first_at.to_string(), acc.run[*key].clone()), (at.to_string(), run[*key].clone()));
                    return Err(Error::differ("statistics files", key.to_string(), sides.0, sides.1));
                }
                if let Some(&part) = acc.parts.0.intersection(&parts.0).next() {
                    return Err(Error::StatsOverlap { file: at.to_string(), part });
                }
                acc.moments.merge(&m)?;
                acc.parts.0.extend(parts.0);
                acc.files_read += 1;
                acc.bytes_read += bytes.len() as u64;
            }
        }
    }
    let at = inputs.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ");
    merged.map(|(m, _)| m).ok_or(Error::NoParts { at })
}

/// Each input as files: a name ending in `.safetensors` is a file; anything
/// else a folder, listed for its `*.stats.safetensors`, in name order.
fn expand(storage: &Storage, inputs: &[Location]) -> Result<Vec<Location>> {
    let mut files = Vec::new();
    for at in inputs {
        if at.to_string().ends_with(".safetensors") {
            files.push(at.clone());
        } else {
            let mut listed: Vec<Location> = storage
                .list(at)?
                .into_iter()
                .map(|l| l.location)
                .filter(|l| l.file_name().ends_with(".stats.safetensors"))
                .collect();
            listed.sort_by_key(ToString::to_string);
            files.extend(listed);
        }
    }
    Ok(files)
}

/// Writes `merged` to `output` (a file, local or S3).
pub fn write_merged(storage: &Storage, merged: &Merged, output: &Location) -> Result<()> {
    let mut md: HashMap<String, String> = merged.run.clone().into_iter().collect();
    md.insert(PARTS_KEY.into(), merged.parts.to_string());
    match output {
        Location::Local(p) => {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| Error::output(dir.to_path_buf(), e))?;
            }
            // Under a temporary name, renamed into place: a retried task
            // never leaves half a file under the final name.
            let tmp = p.with_file_name(format!(".{}.tmp", output.file_name()));
            write_stats(&tmp, &merged.moments, &md)?;
            std::fs::rename(&tmp, p).map_err(|e| Error::output(p.clone(), e))
        }
        Location::S3 { .. } => {
            let scratch = tempfile::tempdir()?;
            let local = scratch.path().join("merged.stats.safetensors");
            write_stats(&local, &merged.moments, &md)?;
            storage.put_file(&local, output)
        }
    }
}
