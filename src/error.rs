//! Typed errors of the library. Each names the file, key or tensor it is
//! about; the CLI prints them once, with their chain (`{:#}`).

use std::path::PathBuf;

/// Failures that stop a run: missing weights, unreadable input, bad output.
/// A bad *image* is not one of these: it becomes a [`crate::image::Rejection`]
/// and the run goes on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input folder or key list could not be read.
    #[error("cannot read input {path}")]
    Input { path: PathBuf, source: std::io::Error },

    /// The input holds no image at all.
    #[error("no images found under {0} (looked for {exts})", exts = crate::input::IMAGE_EXTENSIONS.join(", "))]
    NoImages(PathBuf),

    /// A weights file is missing, unreadable or not what the model needs.
    #[error("weights {path}")]
    Weights {
        path: PathBuf,
        #[source]
        source: Box<Error>,
    },

    /// The downloaded weights do not hash to the pinned value.
    #[error("sha256 mismatch for {path}: expected {expected}, got {actual}")]
    Checksum { path: PathBuf, expected: String, actual: String },

    /// Downloading weights from the model hub failed.
    #[error("cannot fetch {repo}/{file} from the model hub: {reason}")]
    Fetch { repo: String, file: String, reason: String },

    /// Writing an output file failed.
    #[error("cannot write {path}: {reason}")]
    Output { path: PathBuf, reason: String },

    /// S3 refused or failed a request that the run cannot do without.
    #[error("{0}")]
    Storage(String),

    /// A region or bucket outside Europe.
    #[error("{0}")]
    Region(String),

    /// A value given by the user is out of range.
    #[error("{0}")]
    Usage(String),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
