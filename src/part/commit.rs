//! Writing a part so that it appears whole or not at all, even when two
//! attempts of it run at once (Spark retries and speculative tasks):
//!
//! 1. Each attempt has a random id; its files carry it ([`super::names`]),
//!    so attempts never write the same file.
//! 2. The files are made under hidden staging names (local: beside their
//!    destination; S3: in scratch space), fsynced, then renamed (local) or
//!    put whole, one request each (S3).
//! 3. Last, the manifest: fsynced and renamed over the part's manifest
//!    (local), or put in one request (S3). Readers trust only the files a
//!    manifest names, so the part changes from the old attempt to the new
//!    one in that single step: the last complete attempt wins, wholly.
//! 4. Then the files of the attempt it replaced are removed (best effort);
//!    files of attempts that never committed are left for
//!    `fruits parts clean`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::manifest::{FileEntry, Manifest, FORMAT};
use super::names::{self, Role};
use crate::error::{Error, Result};
use crate::storage::files::{output_err, write_file};
use crate::storage::{Location, Storage};

/// One attempt at writing part `part` into `folder`.
pub struct Attempt<'a> {
    storage: &'a Storage,
    folder: Location,
    part: u32,
    id: String,
    /// Where files are made before they are committed.
    staging: Staging,
    committed: bool,
}

enum Staging {
    /// Hidden names in the destination folder itself (same filesystem, so
    /// the commit is a rename).
    InPlace(PathBuf),
    /// Scratch space, uploaded at commit.
    Scratch(tempfile::TempDir),
}

/// What a commit made visible.
#[derive(Debug, Clone)]
pub struct Committed {
    pub manifest: Manifest,
    pub folder: Location,
}

impl Committed {
    pub fn location(&self, role: Role) -> Option<Location> {
        self.manifest.file(role).map(|f| self.folder.join(&f.name))
    }
}

impl<'a> Attempt<'a> {
    pub fn begin(storage: &'a Storage, folder: &Location, part: u32) -> Result<Self> {
        let staging = match folder {
            Location::Local(p) => Staging::InPlace(p.clone()),
            Location::S3 { .. } => Staging::Scratch(tempfile::tempdir()?),
        };
        Ok(Self { storage, folder: folder.clone(), part, id: names::new_attempt(), staging, committed: false })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn part(&self) -> u32 {
        self.part
    }

    /// Where the file of `role` is written before the commit.
    pub fn staging_path(&self, role: Role) -> PathBuf {
        let name = names::file_name(self.part, &self.id, role);
        match &self.staging {
            Staging::InPlace(dir) => hidden(&dir.join(&name)),
            Staging::Scratch(tmp) => tmp.path().join(&name),
        }
    }

    /// Makes the part visible: the staged files of `roles` (each with its
    /// data rows), then the manifest recording `run` and `counts`.
    pub fn commit(
        mut self,
        kind: &str,
        run: BTreeMap<String, String>,
        counts: BTreeMap<String, u64>,
        roles: &[(Role, u64)],
    ) -> Result<Committed> {
        let mut files = Vec::new();
        for &(role, rows) in roles {
            let staged = self.staging_path(role);
            let name = names::file_name(self.part, &self.id, role);
            let bytes = std::fs::metadata(&staged).map_err(|e| output_err(&staged, e))?.len();
            let sha256 = crate::digest::sha256_file(&staged).map_err(|e| output_err(&staged, e))?;
            self.publish_file(&staged, &name)?;
            files.push(FileEntry { role, name, bytes, rows, sha256 });
        }
        let manifest = Manifest {
            format: FORMAT.into(),
            kind: kind.into(),
            part: self.part,
            attempt: self.id.clone(),
            written_at: now_rfc3339(),
            fruits_version: env!("CARGO_PKG_VERSION").into(),
            run,
            counts,
            files,
        };
        let manifest_at = self.folder.join(&names::manifest_name(self.part));
        let replaced = read_manifest(self.storage, &manifest_at).ok().flatten();
        self.publish_manifest(&manifest, &manifest_at)?;
        self.committed = true;
        if let Some(old) = replaced.filter(|m| m.attempt != self.id) {
            for f in &old.files {
                let _ = self.storage.delete(&self.folder.join(&f.name));
            }
        }
        Ok(Committed { manifest, folder: self.folder.clone() })
    }

    fn publish_file(&self, staged: &Path, name: &str) -> Result<()> {
        match &self.staging {
            Staging::InPlace(dir) => {
                let dest = dir.join(name);
                std::fs::rename(staged, &dest).map_err(|e| output_err(&dest, e))?;
                sync_dir(dest.parent().unwrap_or(dir))
            }
            Staging::Scratch(_) => self.storage.put_file(staged, &self.folder.join(name)),
        }
    }

    fn publish_manifest(&self, manifest: &Manifest, dest: &Location) -> Result<()> {
        match (&self.staging, dest) {
            (Staging::InPlace(_), Location::Local(path)) => {
                let tmp = hidden(&path.with_extension(format!("json.{}", self.id)));
                write_file(&tmp, &manifest.to_json())?;
                std::fs::rename(&tmp, path).map_err(|e| output_err(path, e))?;
                sync_dir(path.parent().unwrap_or(Path::new(".")))
            }
            _ => self.storage.put_bytes(manifest.to_json(), dest),
        }
    }
}

impl Drop for Attempt<'_> {
    /// An attempt that stops before its commit leaves no staged file.
    fn drop(&mut self) {
        if !self.committed {
            if let Staging::InPlace(_) = self.staging {
                for role in [Role::Rows, Role::Errors, Role::Stats] {
                    let _ = std::fs::remove_file(self.staging_path(role));
                }
            }
        }
    }
}

/// `dir/name` → `dir/.name.tmp`: invisible to every reader.
fn hidden(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Makes renames in `dir` durable.
fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| output_err(dir, e))
}

fn now_rfc3339() -> String {
    aws_smithy_types::DateTime::from(std::time::SystemTime::now())
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default()
}

/// The manifest at `loc`; `None` if there is none. One that exists but
/// cannot be read or trusted is an error naming it.
pub fn read_manifest(storage: &Storage, loc: &Location) -> Result<Option<Manifest>> {
    let Some(bytes) = storage.read(loc)? else { return Ok(None) };
    Manifest::from_json(&bytes).map(Some).map_err(|reason| Error::corrupt(loc, reason))
}
