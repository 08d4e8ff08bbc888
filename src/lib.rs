//! `fruits`: fruit photos → MobileNet features → PCA.
//!
//! The flow of `fruits featurize` ([`featurize`], one job = one part):
//! [`input`] lists the images and accounts for every file, [`storage`]
//! reads their bytes (local or S3, memory bounded), [`image`] decodes and
//! resizes each, [`model`] turns batches into feature vectors (the CPU engine,
//! or [`gpu`]'s CUDA engine), [`output`] writes Parquet, errors and statistics;
//! [`pipeline`] streams these together, and [`part`] commits the files as
//! one atomic part behind a manifest. [`weights`] says where the model
//! weights come from.
//!
//! `fruits pca` ([`pca_job`]): [`part`] reads the committed parts and their
//! statistics, [`pca`] merges statistics and fits, [`pca_model`] persists
//! the model and draws its pictures.
//!
//! The app's engine: [`index`] turns labelled features into an exact
//! nearest-neighbour classifier, [`identify`] answers a photo with it
//! (the CLI, `index eval` and `serve` all through it), [`fruit_info`]
//! says what the fruit is.

pub mod budget;
pub mod digest;
pub mod error;
pub mod featurize;
pub mod fruit_info;
pub mod gpu;
pub mod guard;
pub mod identify;
pub mod image;
pub mod index;
pub mod input;
pub mod model;
pub mod output;
pub mod part;
pub mod pca;
pub mod pca_job;
pub mod pca_model;
pub mod pipeline;
pub mod sample;
pub mod serve;
pub mod storage;
pub mod weights;

pub use error::{Error, Result};
