//! A part: the unit `featurize` writes (one per task on a cluster) and
//! everything else reads. Its Parquet schema ([`schema`]), its files and
//! their names ([`names`]), the manifest that makes it complete
//! ([`manifest`]), writing it atomically ([`commit`]), reading a folder of
//! parts as the manifests say ([`folder`]) and as one dataset
//! ([`dataset`]), and reading its rows ([`rows`]).
//!
//! This file only declares and re-exports: the children never import
//! through it, so the module graph has no cycle.

pub mod commit;
pub mod dataset;
pub mod folder;
pub mod manifest;
pub mod names;
pub mod rows;
pub mod schema;

pub use commit::{read_manifest, Attempt, Committed};
pub use dataset::{sources, Source, Sources};
pub use folder::{Folder, Part};
pub use manifest::Manifest;
pub use names::Role;
pub use rows::{part_info, read_rows, PartInfo, Rows};
