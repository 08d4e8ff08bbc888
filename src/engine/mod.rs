//! What runs a network: [`Model`] (a loaded network and the choice of what
//! runs it), [`device`] (`--device`), [`dtype`] (`--dtype`), [`simd`] (the
//! vector instructions this CPU offers), [`cpu_id`] (which CPU it is, its
//! caches), [`peak`] (its measured multiply-add rate), and the two engines that run the
//! lowered [`crate::model::plan`]: [`cpu`] (fused NHWC kernels) and
//! [`cuda`] (cuBLAS and NVRTC kernels). Candle's CPU backend is the third
//! choice (`--engine candle`), run straight from the model.
//!
//! This file only declares and re-exports: the children never import
//! through it, so the module graph has no cycle.

pub mod cpu;
pub mod cpu_id;
pub mod cuda;
pub mod device;
pub mod dtype;
pub mod model;
pub mod peak;
pub mod simd;

pub use device::{device, DeviceChoice, Target};
pub use dtype::Dtype;
pub use model::{cpu_only, load, load_as, supported, Engine, Model};
