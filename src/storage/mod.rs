//! One storage layer for every command: a local path and an
//! `s3://bucket/prefix` are the same kind of [`Location`] for listing,
//! reading and writing.
//!
//! S3 goes through `aws-sdk-s3` with the standard credential chain, the
//! SDK's retry (throttling, resets, timeouts: exponential backoff with
//! jitter) and `--s3-endpoint` / `AWS_ENDPOINT_URL` with path-style
//! addressing for S3-compatible servers. Every region and bucket is checked
//! against [`region::EUROPEAN_REGIONS`] before any request that reads or
//! writes data.

pub mod fetch;
pub mod files;
mod location;
pub mod region;
mod s3;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{Error, Result};

pub use fetch::{read_local, Fetch, FetchLimits, Fetched, DEFAULT_MAX_IMAGE_BYTES};
pub use location::Location;
pub use s3::{KeyRange, S3Options};

/// Every file under `root`, sorted by its path relative to `root` (bytes,
/// `/` between folders: the order S3 lists keys in). Symbolic links are
/// followed; a broken one is listed (reading it is then a rejection), a
/// folder that cannot be read stops the listing, naming it.
pub fn walk_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(root).follow_links(true) {
        match entry {
            Ok(e) if e.file_type().is_file() => out.push(e.into_path()),
            Ok(_) => {}
            Err(e) => {
                let path = e.path().unwrap_or(root).to_path_buf();
                let dangling = e.loop_ancestor().is_none()
                    && std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink())
                    && std::fs::metadata(&path).is_err();
                if dangling {
                    out.push(path);
                } else {
                    let source = e.into_io_error().unwrap_or_else(|| std::io::Error::other("filesystem loop"));
                    return Err(Error::Input { path, source });
                }
            }
        }
    }
    out.sort_by_cached_key(|p| relative_key(root, p));
    Ok(out)
}

/// The relative-path sort key of a local file (see the module doc).
fn relative_key(root: &Path, path: &Path) -> Vec<u8> {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let mut key = Vec::new();
    for (i, c) in rel.iter().enumerate() {
        if i > 0 {
            key.push(b'/');
        }
        key.extend_from_slice(c.as_encoded_bytes());
    }
    key
}

/// A file or object found by [`Storage::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub location: Location,
    pub size: u64,
    /// When it was last written, where the storage says.
    pub modified: Option<std::time::SystemTime>,
}

/// Reads and writes locations; S3 is set up on first use.
pub struct Storage {
    options: S3Options,
    s3: OnceLock<s3::S3>,
}

impl Storage {
    pub fn new(options: S3Options) -> Self {
        Self { options, s3: OnceLock::new() }
    }

    fn s3(&self) -> Result<&s3::S3> {
        if self.s3.get().is_none() {
            let client = s3::S3::connect(&self.options)?;
            let _ = self.s3.set(client);
        }
        Ok(self.s3.get().expect("set above"))
    }

    /// Checks that `bucket` is in Europe and reachable (done before any
    /// data request to it anyway; this only makes it happen now).
    pub fn check_bucket(&self, bucket: &str) -> Result<()> {
        self.s3()?.bucket(bucket).map(|_| ())
    }

    /// Every object or file under `loc`, with its size, in byte order of
    /// their paths relative to `loc` (S3 "folder" markers, keys ending in
    /// `/`, are no files). A local folder that does not exist lists nothing.
    pub fn list(&self, loc: &Location) -> Result<Vec<Listed>> {
        self.list_range(loc, &KeyRange::default())
    }

    /// [`Storage::list`] of the files whose path relative to `loc` lies
    /// strictly between the ends of `range` (relative paths, `/` between
    /// folders): in S3, only the pages of that slice are asked for.
    pub fn list_range(&self, loc: &Location, range: &KeyRange) -> Result<Vec<Listed>> {
        match loc {
            Location::Local(root) if !root.exists() => Ok(Vec::new()),
            Location::Local(root) => Ok(walk_files(root)?
                .into_iter()
                .filter(|p| {
                    let rel = relative_key(root, p);
                    range.after.as_ref().is_none_or(|a| rel.as_slice() > a.as_bytes())
                        && range.before.as_ref().is_none_or(|b| rel.as_slice() < b.as_bytes())
                })
                .take(range.first.unwrap_or(usize::MAX))
                .map(|p| {
                    let meta = std::fs::metadata(&p).ok();
                    let size = meta.as_ref().map_or(0, |m| m.len());
                    let modified = meta.and_then(|m| m.modified().ok());
                    Listed { location: Location::Local(p), size, modified }
                })
                .collect()),
            Location::S3 { bucket, key } => {
                let full = |name: &String| format!("{key}{name}");
                let range = KeyRange {
                    after: range.after.as_ref().map(full),
                    before: range.before.as_ref().map(full),
                    first: range.first,
                };
                Ok(self
                    .s3()?
                    .list(bucket, key, &range)?
                    .into_iter()
                    .filter(|(k, _, _)| !k.ends_with('/'))
                    .map(|(k, size, modified)| Listed {
                        location: Location::S3 { bucket: bucket.clone(), key: k },
                        size,
                        modified,
                    })
                    .collect())
            }
        }
    }

    /// The folders right inside the folder `loc`, as paths relative to it
    /// ending in `/`, in byte order (in S3: one listing with the delimiter
    /// `/`, whatever the objects below them).
    pub fn folders(&self, loc: &Location) -> Result<Vec<String>> {
        match loc {
            Location::Local(root) => {
                let io = |e| Error::Input { path: root.clone(), source: e };
                let mut out = Vec::new();
                for entry in std::fs::read_dir(root).map_err(io)? {
                    let path = entry.map_err(io)?.path();
                    if path.is_dir() {
                        out.push(format!("{}/", String::from_utf8_lossy(&relative_key(root, &path))));
                    }
                }
                out.sort();
                Ok(out)
            }
            Location::S3 { bucket, key } => Ok(self
                .s3()?
                .folders(bucket, key)?
                .into_iter()
                .filter_map(|f| f.strip_prefix(key.as_str()).map(str::to_string))
                .collect()),
        }
    }

    /// A whole small file or object (a manifest, statistics, a model
    /// table); `None` if it does not exist.
    pub fn read(&self, loc: &Location) -> Result<Option<Vec<u8>>> {
        match loc {
            Location::Local(p) => match std::fs::read(p) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::Input { path: p.clone(), source: e }),
            },
            Location::S3 { bucket, key } => self.s3()?.read(bucket, key),
        }
    }

    /// The last `n` bytes (for a Parquet footer).
    pub fn get_tail(&self, loc: &Location, n: u64) -> Result<Vec<u8>> {
        match loc {
            Location::Local(p) => {
                use std::io::{Read, Seek, SeekFrom};
                let io = |e| Error::Input { path: p.clone(), source: e };
                let mut f = std::fs::File::open(p).map_err(io)?;
                let len = f.metadata().map_err(io)?.len();
                f.seek(SeekFrom::Start(len.saturating_sub(n))).map_err(io)?;
                let mut buf = Vec::new();
                f.read_to_end(&mut buf).map_err(io)?;
                Ok(buf)
            }
            Location::S3 { bucket, key } => self.s3()?.get_tail(bucket, key, n),
        }
    }

    /// `len` bytes from `start` (a shard's row group: one ranged GET in S3).
    pub fn get_range(&self, loc: &Location, start: u64, len: u64) -> Result<Vec<u8>> {
        match loc {
            Location::Local(p) => {
                use std::io::{Read, Seek, SeekFrom};
                let io = |e| Error::Input { path: p.clone(), source: e };
                let mut f = std::fs::File::open(p).map_err(io)?;
                f.seek(SeekFrom::Start(start)).map_err(io)?;
                let mut buf = vec![0; usize::try_from(len).unwrap_or(usize::MAX)];
                f.read_exact(&mut buf).map_err(io)?;
                Ok(buf)
            }
            Location::S3 { bucket, key } => self.s3()?.get_range(bucket, key, start, len),
        }
    }

    /// The size of a file or object; `None` if there is none.
    pub fn size(&self, loc: &Location) -> Result<Option<u64>> {
        match loc {
            Location::Local(p) => match std::fs::metadata(p) {
                Ok(m) => Ok(Some(m.len())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::Input { path: p.clone(), source: e }),
            },
            Location::S3 { bucket, key } => self.s3()?.size(bucket, key),
        }
    }

    pub fn exists(&self, loc: &Location) -> Result<bool> {
        match loc {
            Location::Local(p) => Ok(p.exists()),
            Location::S3 { bucket, key } => self.s3()?.exists(bucket, key),
        }
    }

    /// Puts a finished local file at `dest` (a single PUT, or a multipart
    /// upload for large files); it becomes visible only once complete.
    pub fn put_file(&self, local: &Path, dest: &Location) -> Result<()> {
        match dest {
            Location::Local(p) => {
                if p != local {
                    if let Some(dir) = p.parent() {
                        std::fs::create_dir_all(dir)?;
                    }
                    std::fs::copy(local, p).map_err(|e| Error::output(p.clone(), e))?;
                }
                Ok(())
            }
            Location::S3 { bucket, key } => self.s3()?.put_file(local, bucket, key),
        }
    }

    /// Puts `bytes` whole at `dest` (an S3 object appears complete or not
    /// at all; a local file is written and fsynced in place: files that
    /// must appear whole are staged and renamed by their writers).
    pub fn put_bytes(&self, bytes: Vec<u8>, dest: &Location) -> Result<()> {
        match dest {
            Location::Local(p) => crate::storage::files::write_file(p, &bytes),
            Location::S3 { bucket, key } => self.s3()?.put_bytes(bytes, bucket, key),
        }
    }

    /// Removes a file or object; one that is already gone is fine.
    pub fn delete(&self, loc: &Location) -> Result<()> {
        match loc {
            Location::Local(p) => match std::fs::remove_file(p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::output(p.clone(), e)),
                _ => Ok(()),
            },
            Location::S3 { bucket, key } => self.s3()?.delete(bucket, key),
        }
    }

    /// Fetches `locs`' bytes with up to `--s3-concurrency` requests in
    /// flight, sending `(index, bytes or why not)` as each completes, in
    /// any order. A fetch starts only once `window` gives it a permit (the
    /// caller adds permits as it consumes results), and fetched bytes are
    /// held against `limits.memory` until dropped. Stops early if `send`
    /// returns false.
    pub fn fetch_all(
        &self,
        locs: &[Location],
        limits: &FetchLimits,
        window: &std::sync::Arc<tokio::sync::Semaphore>,
        send: &mut dyn FnMut(usize, std::result::Result<Fetched, Fetch>) -> bool,
    ) -> Result<()> {
        if !locs.iter().any(Location::is_s3) {
            for (i, l) in locs.iter().enumerate() {
                let Location::Local(p) = l else { unreachable!("no S3 location here") };
                if !send(i, fetch::read_local(p, limits.max_image_bytes).map(Fetched::new).map_err(Fetch::Rejected)) {
                    break;
                }
            }
            return Ok(());
        }
        self.s3()?.fetch_all(locs, limits, window, send)
    }

    /// A local copy of `loc` (the file itself when local), kept in `scratch`.
    pub fn localize(&self, loc: &Location, scratch: &Path) -> Result<PathBuf> {
        match loc {
            Location::Local(p) => Ok(p.clone()),
            Location::S3 { .. } => {
                let bytes = self.read(loc)?.ok_or_else(|| Error::Input {
                    path: PathBuf::from(loc.to_string()),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such object"),
                })?;
                let path = scratch.join(loc.file_name());
                std::fs::write(&path, bytes).map_err(|e| Error::output(path.clone(), e))?;
                Ok(path)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_keys_sort_like_s3() {
        let root = Path::new("/r");
        let mut v = [Path::new("/r/Apple/a.jpg"), Path::new("/r/Apple Braeburn/a.jpg"), Path::new("/r/Apple2/a.jpg")];
        v.sort_by_key(|p| relative_key(root, p));
        assert_eq!(
            v,
            [Path::new("/r/Apple Braeburn/a.jpg"), Path::new("/r/Apple/a.jpg"), Path::new("/r/Apple2/a.jpg")]
        );
    }
}
