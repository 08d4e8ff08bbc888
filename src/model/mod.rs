//! The networks: the registry of models ([`Which`]), their Candle builders
//! (`mobilenetv2`, `mobilenetv4`, on the blocks in `layers`), random
//! weights for offline use (`init`, calibrated on the CPU-independent ops of
//! `fixed_order`), the CPU engine they lower to
//! (`engine`), and a loaded network ready to run ([`Model`]).
//!
//! This file only declares and re-exports: the children never import
//! through it, so the module graph has no cycle.

pub mod device;
pub mod engine;
pub mod fixed_order;
pub mod init;
pub mod layers;
pub mod mobilenetv2;
pub mod mobilenetv4;
pub mod registry;
pub mod runner;

pub use device::{device, DeviceChoice, Target};
pub use registry::{Net, Which};
pub use runner::{Engine, Model};
