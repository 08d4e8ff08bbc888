//! The networks, engine-free: the registry of models ([`Which`]), their
//! Candle builders with timm's tensor names (`efficientnet`: MobileNetV2
//! and EfficientNet-Lite0; `mobilenetv4`,
//! on the blocks in `layers`), the lowered [`plan`] every engine runs,
//! where weights come from ([`weights`]), and random weights for offline
//! use (`init`, calibrated on the CPU-independent ops of `fixed_order`).
//! What runs a plan is `crate::engine`, which depends on this folder and
//! never the reverse.
//!
//! This file only declares and re-exports: the children never import
//! through it, so the module graph has no cycle.

pub mod efficientnet;
pub mod fixed_order;
pub mod init;
pub mod layers;
pub mod mobilenetv4;
pub mod plan;
pub mod pth;
pub mod registry;
pub mod weights;

pub use plan::Plan;
pub use registry::{Net, Which};
