//! Reading images' bytes with memory bounded: what a read gives (bytes, a
//! rejection, or a reason to stop), and the limits it keeps to.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::location::Location;
use crate::error::Error;
use crate::image::{RejectKind, Rejection};

/// Largest image file or object read by default (`--max-image-bytes`):
/// ten times a 48 MP phone JPEG. A larger one is rejected unread.
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 64 << 20;

/// Bytes of fetched, not yet decoded images held at once: S3 keeps many
/// requests in flight, and this, not their number, bounds their memory.
pub const FETCH_MEMORY: u64 = 256 << 20;

#[derive(Debug, Clone, Copy)]
pub struct FetchLimits {
    pub max_image_bytes: u64,
    /// Bytes held by fetched images not yet decoded (an image larger than
    /// this waits until it can be held alone).
    pub memory: u64,
}

impl Default for FetchLimits {
    fn default() -> Self {
        Self { max_image_bytes: DEFAULT_MAX_IMAGE_BYTES, memory: FETCH_MEMORY.max(2 * DEFAULT_MAX_IMAGE_BYTES) }
    }
}

impl FetchLimits {
    pub fn new(max_image_bytes: u64) -> Self {
        Self { max_image_bytes, memory: FETCH_MEMORY.max(2 * max_image_bytes) }
    }

    /// Semaphore permits (KiB) standing for `bytes`.
    pub(crate) fn permits(bytes: u64) -> u32 {
        bytes.div_ceil(1024).clamp(1, u32::MAX as u64 >> 3) as u32
    }
}

/// An image's bytes, holding their share of the fetch memory until dropped.
#[derive(Debug)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    _hold: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Fetched {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self { bytes, _hold: None }
    }
    pub(crate) fn held(bytes: Vec<u8>, hold: tokio::sync::OwnedSemaphorePermit) -> Self {
        Self { bytes, _hold: Some(hold) }
    }
}

/// Why a read gave no bytes: the object alone is bad (a rejected image), or
/// the run cannot go on (no bucket, no credentials).
#[derive(Debug)]
pub enum Fetch {
    Rejected(Rejection),
    /// Boxed: a fetch's result stays small on the hot path.
    Fatal(Box<Error>),
}

impl Fetch {
    pub fn fatal(e: Error) -> Self {
        Fetch::Fatal(Box::new(e))
    }

    pub fn into_error(self, loc: &Location) -> Error {
        match self {
            Fetch::Rejected(r) => {
                Error::Input { path: PathBuf::from(loc.to_string()), source: std::io::Error::other(r) }
            }
            Fetch::Fatal(e) => *e,
        }
    }
}

/// An image over the size limit, rejected unread (or from a shard's row).
pub fn too_large(size: u64, max: u64) -> Rejection {
    Rejection::new(RejectKind::TooLarge, format!("{size} bytes, more than the limit of {max}"))
}

/// A local image file, refused unread when larger than `max_bytes`.
pub fn read_local(path: &Path, max_bytes: u64) -> Result<Vec<u8>, Rejection> {
    let unreadable = |e: std::io::Error| Rejection::new(RejectKind::Unreadable, e.to_string());
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let size = file.metadata().map_err(unreadable)?.len();
    if size > max_bytes {
        return Err(too_large(size, max_bytes));
    }
    // A file growing while read is cut at the limit, and refused.
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(max_bytes + 1).read_to_end(&mut bytes).map_err(unreadable)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(bytes.len() as u64, max_bytes));
    }
    Ok(bytes)
}
