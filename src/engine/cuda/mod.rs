//! The CUDA engine: the lowered plan ([`crate::model::plan`]) run on an
//! NVIDIA GPU with cuBLAS and a few NVRTC-compiled kernels.
//!
//! Nothing here is linked against CUDA: cudarc opens libcuda, cuBLAS and
//! NVRTC at run time, so the one `fruits` binary runs on CPU-only and GPU
//! nodes alike and builds where no CUDA toolkit exists. [`probe`] finds
//! (or explains the absence of) a usable GPU; [`nvrtc`] compiles the kernels
//! of `kernels.cu`, once per node ([`kernel_cache`]); [`lower`] copies a plan to the device in a [`dtype`];
//! [`run`] runs it.
//!
//! This file only declares and re-exports: the children never import
//! through it, so the module graph has no cycle.

pub mod dtype;
pub mod kernel_cache;
pub mod lower;
pub mod nvrtc;
pub mod probe;
pub mod run;

pub use dtype::GpuDtype;
pub use probe::{open, probe, Gpu, Unavailable};
pub use run::GpuEngine;
