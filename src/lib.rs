//! `fruits`: fruit photos → MobileNet features → PCA.
//!
//! The flow of `fruits featurize`: [`input`] lists the images, [`image`]
//! decodes and normalises each, [`model`] turns batches into feature vectors
//! (Candle, CPU or CUDA), [`output`] writes them to Parquet; [`pipeline`]
//! ties these together with bounded memory. [`weights`] says where the model
//! weights come from.
//!
//! `fruits pca`: [`parts`] reads the features parts and the statistics beside
//! them, [`pca`] merges statistics and fits, [`pca_model`] persists the model
//! and draws its pictures.

pub mod error;
pub mod image;
pub mod input;
pub mod model;
pub mod output;
pub mod parts;
pub mod pca;
pub mod pca_model;
pub mod pipeline;
pub mod storage;
pub mod weights;

pub use error::{Error, Result};
