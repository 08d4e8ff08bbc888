pub mod bench;
pub mod demo;
pub mod featurize;
pub mod list;
pub mod pca;
pub mod weights;

/// The run could not proceed (missing weights, unreadable input, ...).
pub const EXIT_ERROR: u8 = 1;
/// More images were rejected than `--max-rejected` allows.
pub const EXIT_TOO_MANY_REJECTED: u8 = 3;
