//! Where photos come from: [`input`] lists the files under a folder or an
//! `s3://` prefix, or the lines of a key list, every file accounted for;
//! [`shard`] is photos packed into Parquet files (`fruits pack`, [`pack`]),
//! read back a row group at a time.
//!
//! This file only declares: the children never import through it, so the
//! module graph has no cycle.

pub mod input;
pub mod pack;
pub mod shard;
