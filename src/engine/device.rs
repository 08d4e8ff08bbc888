//! Where the network runs: the choice, and the target it resolves to.

use std::sync::Arc;

use super::cuda::{self, Gpu};
use crate::error::{Error, Result};

/// Where to run (the CLI's `--device`).
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

/// A resolved device, and why it is the CPU when a GPU was looked for and
/// not taken (the caller tells the user: who expected a GPU must learn what
/// is missing).
pub struct Resolved {
    pub target: Target,
    pub cpu_because: Option<String>,
}

/// Resolves a device choice. `cpu_only` names an option of the run that
/// the CPU alone runs ([`super::cpu_only`]): `Auto` then takes the CPU
/// without looking for a GPU, and says why.
pub fn device(choice: DeviceChoice, cpu_only: Option<&str>) -> Result<Resolved> {
    let cpu = |why: String| Resolved { target: Target::Cpu, cpu_because: Some(why) };
    if let (DeviceChoice::Auto, Some(why)) = (choice, cpu_only) {
        return Ok(cpu(why.to_string()));
    }
    match choice {
        DeviceChoice::Cpu => Ok(Resolved { target: Target::Cpu, cpu_because: None }),
        DeviceChoice::Cuda => cuda::open(0)
            .map(|g| Resolved { target: Target::Cuda(g), cpu_because: None })
            .map_err(|why| Error::NoGpu { reason: why.0 }),
        DeviceChoice::Auto => Ok(match cuda::open(0) {
            Ok(g) => Resolved { target: Target::Cuda(g), cpu_because: None },
            Err(why) => cpu(why.0),
        }),
    }
}
