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

pub mod region;
mod s3;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::image::{RejectKind, Rejection};

pub use s3::S3Options;

/// A folder or file, local or in S3.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    Local(PathBuf),
    S3 { bucket: String, key: String },
}

impl std::str::FromStr for Location {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.strip_prefix("s3://") {
            None => Ok(Location::Local(PathBuf::from(s))),
            Some(rest) => {
                let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(format!("'{s}': no bucket name after s3://"));
                }
                Ok(Location::S3 { bucket: bucket.to_string(), key: key.to_string() })
            }
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
        }
    }
}

impl Location {
    pub fn is_s3(&self) -> bool {
        matches!(self, Location::S3 { .. })
    }

    /// `self` as a folder, with `name` inside it.
    pub fn join(&self, name: &str) -> Location {
        match self {
            Location::Local(p) => Location::Local(p.join(name)),
            Location::S3 { bucket, key } => {
                let key =
                    if key.is_empty() || key.ends_with('/') { format!("{key}{name}") } else { format!("{key}/{name}") };
                Location::S3 { bucket: bucket.clone(), key }
            }
        }
    }

    /// The last path segment.
    pub fn file_name(&self) -> String {
        match self {
            Location::Local(p) => p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            Location::S3 { key, .. } => key.trim_end_matches('/').rsplit('/').next().unwrap_or("").to_string(),
        }
    }
}

/// Every file under `root` whose name passes `keep`, sorted by path.
pub fn walk_files(root: &Path, keep: &dyn Fn(&str) -> bool) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(root).follow_links(true) {
        let entry = entry.map_err(|e| Error::Input {
            path: e.path().unwrap_or(root).to_path_buf(),
            source: e.into_io_error().unwrap_or_else(|| std::io::Error::other("filesystem loop")),
        })?;
        if entry.file_type().is_file() && keep(&entry.file_name().to_string_lossy()) {
            out.push(entry.into_path());
        }
    }
    out.sort();
    Ok(out)
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

    /// The S3 client, after checking the region and the bucket's location.
    fn s3(&self, bucket: &str) -> Result<&s3::S3> {
        if self.s3.get().is_none() {
            let client = s3::S3::connect(&self.options)?;
            let _ = self.s3.set(client);
        }
        let s3 = self.s3.get().expect("set above");
        s3.check_bucket(bucket)?;
        Ok(s3)
    }

    /// Every object or file under `loc` whose name passes `keep`, in byte
    /// order, as location strings (`s3://bucket/key` or paths).
    pub fn list(&self, loc: &Location, keep: &dyn Fn(&str) -> bool) -> Result<Vec<Location>> {
        match loc {
            Location::Local(root) => Ok(walk_files(root, keep)?.into_iter().map(Location::Local).collect()),
            Location::S3 { bucket, key } => {
                let keys = self.s3(bucket)?.list(bucket, key)?;
                Ok(keys
                    .into_iter()
                    .filter(|k| keep(k.rsplit('/').next().unwrap_or(k)))
                    .map(|k| Location::S3 { bucket: bucket.clone(), key: k })
                    .collect())
            }
        }
    }

    /// The whole object or file; a missing or forbidden one is a [`Rejection`].
    pub fn get(&self, loc: &Location) -> std::result::Result<Vec<u8>, Fetch> {
        match loc {
            Location::Local(p) => {
                std::fs::read(p).map_err(|e| Fetch::Rejected(Rejection::new(RejectKind::Unreadable, e.to_string())))
            }
            Location::S3 { bucket, key } => self.s3(bucket).map_err(Fetch::Fatal)?.get(bucket, key),
        }
    }

    /// The last `n` bytes (for a Parquet footer).
    pub fn get_tail(&self, loc: &Location, n: u64) -> Result<Vec<u8>> {
        match loc {
            Location::Local(p) => {
                use std::io::{Read, Seek, SeekFrom};
                let mut f = std::fs::File::open(p).map_err(|e| Error::Input { path: p.clone(), source: e })?;
                let len = f.metadata()?.len();
                f.seek(SeekFrom::Start(len.saturating_sub(n)))?;
                let mut buf = Vec::new();
                f.read_to_end(&mut buf)?;
                Ok(buf)
            }
            Location::S3 { bucket, key } => self.s3(bucket)?.get_tail(bucket, key, n),
        }
    }

    pub fn exists(&self, loc: &Location) -> Result<bool> {
        match loc {
            Location::Local(p) => Ok(p.exists()),
            Location::S3 { bucket, key } => self.s3(bucket)?.exists(bucket, key),
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
                    std::fs::copy(local, p).map_err(|e| Error::Output { path: p.clone(), reason: e.to_string() })?;
                }
                Ok(())
            }
            Location::S3 { bucket, key } => self.s3(bucket)?.put_file(local, bucket, key),
        }
    }

    pub fn delete(&self, loc: &Location) -> Result<()> {
        match loc {
            Location::Local(p) => match std::fs::remove_file(p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(()),
            },
            Location::S3 { bucket, key } => self.s3(bucket)?.delete(bucket, key),
        }
    }

    /// Fetches `locs` with up to `concurrency` requests in flight, sending
    /// `(index, bytes or why not)` in input order. Stops early if `send` fails.
    pub fn fetch_all(
        &self,
        locs: &[Location],
        concurrency: usize,
        send: &mut dyn FnMut(usize, std::result::Result<Vec<u8>, Fetch>) -> bool,
    ) -> Result<()> {
        let Some(Location::S3 { bucket, .. }) = locs.iter().find(|l| l.is_s3()) else {
            for (i, l) in locs.iter().enumerate() {
                if !send(i, self.get(l)) {
                    break;
                }
            }
            return Ok(());
        };
        self.s3(bucket)?.fetch_all(locs, concurrency, send)
    }

    /// A local copy of `loc` (the file itself when local), kept in `scratch`.
    pub fn localize(&self, loc: &Location, scratch: &Path) -> Result<PathBuf> {
        match loc {
            Location::Local(p) => Ok(p.clone()),
            Location::S3 { .. } => {
                let bytes = self.get(loc).map_err(|f| f.into_error(loc))?;
                let path = scratch.join(loc.file_name());
                std::fs::write(&path, bytes)
                    .map_err(|e| Error::Output { path: path.clone(), reason: e.to_string() })?;
                Ok(path)
            }
        }
    }
}

/// Why a read gave no bytes: the object alone is bad (a rejected image), or
/// the run cannot go on (no bucket, no credentials).
#[derive(Debug)]
pub enum Fetch {
    Rejected(Rejection),
    Fatal(Error),
}

impl Fetch {
    pub fn into_error(self, loc: &Location) -> Error {
        match self {
            Fetch::Rejected(r) => {
                Error::Input { path: PathBuf::from(loc.to_string()), source: std::io::Error::other(r.to_string()) }
            }
            Fetch::Fatal(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_join() {
        let l: Location = "s3://fruits-photos/fruits-360/Training/".parse().unwrap();
        assert_eq!(l, Location::S3 { bucket: "fruits-photos".into(), key: "fruits-360/Training/".into() });
        assert_eq!(l.join("x.jpg").to_string(), "s3://fruits-photos/fruits-360/Training/x.jpg");
        let b: Location = "s3://bucket".parse().unwrap();
        assert_eq!(b.join("p").to_string(), "s3://bucket/p");
        assert!("s3:///key".parse::<Location>().is_err());
        assert_eq!("out/x".parse::<Location>().unwrap(), Location::Local("out/x".into()));
        assert_eq!("s3://b/a/part-00001.parquet".parse::<Location>().unwrap().file_name(), "part-00001.parquet");
    }
}
