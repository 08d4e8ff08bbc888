//! `fruits pca`: principal components from mergeable statistics.
//! [`maths`] merges moments and fits (no I/O, no flag names); [`stats`]
//! keeps a part's moments beside it; [`merge`] merges them as a tree (a
//! cluster's tasks); [`job`] runs `pca fit`, `transform`
//! and `stats` over a folder of parts; [`files`] keeps a fitted model on
//! disk; [`pictures`] draws it.
//!
//! This file only declares and re-exports: the children never import
//! through it, so the module graph has no cycle.

pub mod files;
pub mod job;
pub mod maths;
pub mod merge;
pub mod pictures;
pub mod stats;

pub use files::{load_model, Summary};
pub use job::{fit, transform, FitJob, Fitted, TransformJob, Transformed};
pub use maths::{Keep, Moments, Pca};
