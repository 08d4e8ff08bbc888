//! `fruits`: fruit photos → MobileNet features → PCA, and the app on top.
//!
//! The rooms, each a folder with one job (the dependencies run one way:
//! `tests/test_layout.rs` fails on a cycle between files or folders):
//!
//! - [`photos`]: where photos come from: the files under a folder or
//!   prefix, or a key list, every one accounted for; and shards, photos
//!   packed into Parquet files (`fruits pack`), read back row group by row
//!   group.
//! - [`features`]: `fruits featurize`, one job = one part: stream bytes →
//!   pixels → batches → features, write the Parquet, the rejections and the
//!   statistics.
//! - [`part`]: the unit a task writes: its Parquet schema, file names,
//!   manifest and atomic commit, and a folder of parts read as a dataset.
//! - [`pca`]: mergeable statistics → components (maths, job, files, pictures).
//! - [`model`]: the registry, the timm-named Candle builders, weights, and the
//!   lowered plan every engine runs. No engine code.
//! - [`engine`]: a loaded [`engine::Model`], the device and dtype choice, and
//!   the CPU ([`engine::cpu`]) and CUDA ([`engine::cuda`]) engines.
//! - [`app`]: the classifier the phone app talks to: index, identify, fruit
//!   information, `serve`.
//! - [`storage`]: local folders and S3 behind one type, Europe-only regions,
//!   local files written safely.
//! - [`image`]: bytes → a normalised model input, or the reason it cannot be
//!   one (shared by `features` and `app`).
//!
//! And four small facts every room may use: [`error`] (the typed errors),
//! [`digest`] (the one hash), [`guard`] (third-party panics as values),
//! [`user_cache`] (the folder kept between runs).

pub mod app;
pub mod digest;
pub mod engine;
pub mod error;
pub mod features;
pub mod guard;
pub mod image;
pub mod model;
pub mod part;
pub mod pca;
pub mod photos;
pub mod storage;
pub mod user_cache;

pub use error::{Error, Result};
