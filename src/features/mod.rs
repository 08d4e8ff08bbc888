//! `fruits featurize`, one job = one part: the images come from
//! [`crate::photos`] (every file accounted for; loose or packed in shards),
//! [`pipeline`] streams bytes → pixels → batches
//! → features → rows with memory bounded, [`writers`] writes the Parquet
//! and the rejections, [`job`] runs it in named steps and commits the part
//! (through [`crate::part`]). [`sample`] is the embedded photo set the demo
//! runs on.
//!
//! This file only declares and re-exports: the children never import
//! through it, so the module graph has no cycle.

pub mod append;
pub mod job;
pub mod pipeline;
pub mod sample;
pub mod writers;

pub use job::{run, run_meta, Done, Input, Job, Report, DEFAULT_RUN_ID};
