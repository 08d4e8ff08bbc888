//! `--device`: where the network runs.

use candle_core::Device;

use crate::error::{Error, Result};

/// `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    /// CUDA when this binary was built with it and a GPU answers, else CPU.
    Auto,
    Cpu,
    Cuda,
}

/// Resolves `--device`; says on stderr which one runs, since `auto` may pick either.
pub fn device(choice: DeviceChoice) -> Result<Device> {
    let dev = match choice {
        DeviceChoice::Cpu => Device::Cpu,
        DeviceChoice::Cuda => Device::new_cuda(0).map_err(|e| {
            Error::Device(format!(
                "--device cuda: no CUDA device usable ({e}); this binary was built {} the `cuda` feature",
                if cfg!(feature = "cuda") { "with" } else { "without" }
            ))
        })?,
        DeviceChoice::Auto => {
            if candle_core::utils::cuda_is_available() {
                Device::new_cuda(0)?
            } else {
                Device::Cpu
            }
        }
    };
    Ok(dev)
}
