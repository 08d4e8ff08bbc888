//! `--device`: where the network runs.

use std::sync::Arc;

use super::cuda::{self, Gpu};
use crate::error::{Error, Result};

/// `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    /// The first CUDA GPU when a driver, a device, cuBLAS and NVRTC answer; else the CPU,
    /// with one line saying why.
    Auto,
    Cpu,
    /// The first CUDA GPU, or an error naming what is missing.
    Cuda,
}

/// Where a network runs.
#[derive(Debug, Clone)]
pub enum Target {
    Cpu,
    Cuda(Arc<Gpu>),
}

impl Target {
    pub fn is_cpu(&self) -> bool {
        matches!(self, Target::Cpu)
    }
}

/// Resolves `--device`. `auto` says on stderr why it runs on the CPU, since
/// a user who expected a GPU must learn what is missing. `cpu_only` names an
/// option of the run that the CPU alone runs (`runner::cpu_only`): `auto`
/// then takes the CPU without looking for a GPU, saying so.
pub fn device(choice: DeviceChoice, cpu_only: Option<&str>) -> Result<Target> {
    if let (DeviceChoice::Auto, Some(why)) = (choice, cpu_only) {
        eprintln!("fruits: --device auto: running on the CPU: {why}");
        return Ok(Target::Cpu);
    }
    match choice {
        DeviceChoice::Cpu => Ok(Target::Cpu),
        DeviceChoice::Cuda => {
            cuda::open(0).map(Target::Cuda).map_err(|why| Error::Device(format!("--device cuda: no usable GPU: {why}")))
        }
        DeviceChoice::Auto => Ok(match cuda::open(0) {
            Ok(g) => Target::Cuda(g),
            Err(why) => {
                eprintln!("fruits: --device auto: running on the CPU: {why}");
                Target::Cpu
            }
        }),
    }
}
