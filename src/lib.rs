//! `fruits`: fruit photos → MobileNet features → PCA.
//!
//! The flow of `fruits featurize`: [`input`] lists the images, [`image`]
//! decodes and normalises each, [`model`] turns batches into feature vectors
//! (Candle, CPU or CUDA), [`output`] writes them to Parquet; [`pipeline`]
//! ties these together with bounded memory. [`weights`] says where the model
//! weights come from.

pub mod error;
pub mod image;
pub mod input;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod weights;

pub use error::{Error, Result};
