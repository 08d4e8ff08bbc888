//! A part: the unit `featurize` writes (one per task on a cluster) and
//! everything else reads. Its files and their names ([`names`]), the
//! manifest that makes it complete ([`manifest`]), writing it atomically
//! ([`commit`]), reading a folder of parts as the manifests say
//! ([`folder`]), and reading its rows ([`rows`]) and statistics ([`stats`]).

pub mod commit;
pub mod folder;
pub mod manifest;
pub mod names;
pub mod rows;
pub mod stats;

pub use commit::{read_manifest, Attempt, Committed};
pub use folder::{Folder, Part};
pub use manifest::Manifest;
pub use names::Role;
pub use rows::{part_info, read_rows, PartInfo, Rows};
