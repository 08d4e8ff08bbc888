//! Writing local files so that a crash leaves no half file under a final
//! name: create (with its folder), write and fsync; or stage beside the
//! destination and rename into place. Every failure names the path.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{BoxError, Error, Result};

pub fn output_err(path: &Path, e: impl Into<BoxError>) -> Error {
    Error::output(path, e)
}

/// Creates `path` (and its folder) for writing, with the ordinary
/// permissions the user's umask gives new files.
pub fn create_file(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| output_err(dir, e))?;
    }
    File::create(path).map_err(|e| output_err(path, e))
}

/// Writes `bytes` to `path` and fsyncs it.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = create_file(path)?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| output_err(path, e))
}

/// A file written under a hidden temporary name beside its destination and
/// renamed into place by `commit`, for files that stand alone (a PCA
/// model's tables); a part's files are committed by `part::commit` instead.
pub struct Staged {
    pub tmp: PathBuf,
    dest: PathBuf,
}

impl Staged {
    pub fn new(dir: &Path, name: &str) -> Self {
        Self { tmp: dir.join(format!(".{name}.tmp")), dest: dir.join(name) }
    }
    pub fn commit(self) -> Result<PathBuf> {
        std::fs::rename(&self.tmp, &self.dest).map_err(|e| output_err(&self.dest, e))?;
        Ok(self.dest)
    }
}
