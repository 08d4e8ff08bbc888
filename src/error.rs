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
    #[error("no images in {input}: {detail}")]
    NoImages { input: String, detail: String },

    /// A line of a `--keys` list is not the location of one file.
    #[error("{path}, line {line}: {reason}")]
    KeyList { path: PathBuf, line: usize, reason: String },

    /// A weights file is missing, unreadable or not what the model needs.
    #[error("weights {path}")]
    Weights {
        path: PathBuf,
        #[source]
        source: Box<Error>,
    },

    /// No `--weights`, and the pinned file is neither cached nor downloadable.
    #[error(
        "no --weights given and the pinned {model} weights are not cached ({reason}); \
         pass --weights PATH, or --weights random:SEED for a test run"
    )]
    NoWeights { model: String, reason: String },

    /// The downloaded weights do not hash to the pinned value.
    #[error("sha256 mismatch for {path}: expected {expected}, got {actual}")]
    Checksum { path: PathBuf, expected: String, actual: String },

    /// Downloading weights from the model hub failed.
    #[error("cannot fetch {repo}/{file} from the model hub: {reason}")]
    Fetch { repo: String, file: String, reason: String },

    /// `serve` cannot listen on its address (in use, not this machine's, no
    /// permission): the run cannot proceed, though the flag parsed (exit 1).
    #[error("cannot listen on {addr}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },

    /// Writing an output file failed.
    #[error("cannot write {path}: {reason}")]
    Output { path: PathBuf, reason: String },

    /// S3 refused or failed a request that the run cannot do without.
    #[error("{0}")]
    Storage(String),

    /// A region or bucket outside Europe.
    #[error("{0}")]
    Region(String),

    /// A value on the command line is out of range or conflicts with
    /// another (exit 2, like the parser's own errors).
    #[error("{0}")]
    Usage(String),

    /// Refused, to keep data safe: writing would mix or replace parts the
    /// user did not ask to replace.
    #[error("{0}")]
    Refused(String),

    /// The data cannot give what was asked (too few rows, parts that
    /// disagree, a file that does not hold what it should).
    #[error("{0}")]
    Data(String),

    /// The requested device cannot be used.
    #[error("{0}")]
    Device(String),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
