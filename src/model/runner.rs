//! A network ready to run on a device, with the record of what it was made
//! from, and the choice of what runs it on the CPU.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use super::registry::{Net, Which};
use super::{engine, init};
use crate::error::{Error, Result};

/// A network ready to run, with what it was made from.
pub struct Model {
    pub which: Which,
    pub device: Device,
    /// `sha256:<hex>` of the weights file, or `random:<seed>`.
    pub weights_id: String,
    net: Net,
    /// The CPU engine's copy of the network; `None` on other devices or
    /// with [`Engine::Candle`].
    plan: Option<CpuPlan>,
}

/// The native engine's network, in the activation type `--dtype` picked.
enum CpuPlan {
    F32(engine::Plan<f32>),
    Bf16(engine::Plan<engine::bf16>),
}

/// `--engine`: what runs the network on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// Fused NHWC kernels, one image per core (`model::engine`).
    Native,
    /// Candle's CPU backend (for comparison; the GPU always uses Candle).
    Candle,
}

impl Model {
    /// Memory-maps a safetensors file and folds its BatchNorms.
    pub fn from_file(which: Which, path: &std::path::Path, device: &Device) -> Result<Self> {
        let wrap = |e: Error| Error::Weights { path: path.to_path_buf(), source: Box::new(e) };
        let sha = crate::digest::sha256_file(path).map_err(|e| wrap(e.into()))?;
        // SAFETY: the file is opened read-only and not modified while mapped;
        // safetensors validates the header before any tensor is read.
        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, device) }.map_err(|e| wrap(e.into()))?;
        let net = which.build(vb).map_err(|e| wrap(e.into()))?;
        Self::new(which, device, format!("sha256:{sha}"), net)
    }

    /// Deterministic random-init weights (see [`init`]); for tests and
    /// benchmarks only: the features mean nothing.
    pub fn random(which: Which, seed: u64, device: &Device) -> Result<Self> {
        let tensors = init::random_weights(which, seed)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let net = which.build(vb)?;
        Self::new(which, device, format!("random:{seed}"), net)
    }

    fn new(which: Which, device: &Device, weights_id: String, net: Net) -> Result<Self> {
        let plan = if device.is_cpu() { Some(CpuPlan::F32(net.plan(which.resolution())?)) } else { None };
        Ok(Self { which, device: device.clone(), weights_id, net, plan })
    }

    /// Picks what runs the network on the CPU (default: native, f32); a GPU
    /// always runs Candle in f32. bf16 is the native engine's alone.
    pub fn set_engine(&mut self, engine: Engine, dtype: engine::Dtype) -> Result<()> {
        let res = self.which.resolution();
        let unchanged = match &self.plan {
            Some(CpuPlan::F32(_)) => (engine, dtype) == (Engine::Native, engine::Dtype::F32),
            Some(CpuPlan::Bf16(_)) => (engine, dtype) == (Engine::Native, engine::Dtype::Bf16),
            None => false,
        };
        if unchanged {
            // Lowering copies and packs every weight: not twice at start-up.
            return Ok(());
        }
        self.plan = match (engine, dtype) {
            (_, engine::Dtype::Bf16) if !self.device.is_cpu() => {
                return Err(Error::Usage("--dtype bf16 runs on the CPU only (--device cpu)".into()))
            }
            (Engine::Candle, engine::Dtype::Bf16) => {
                return Err(Error::Usage("--dtype bf16 needs --engine native".into()))
            }
            (Engine::Native, engine::Dtype::F32) if self.device.is_cpu() => Some(CpuPlan::F32(self.net.plan(res)?)),
            (Engine::Native, engine::Dtype::Bf16) => Some(CpuPlan::Bf16(self.net.plan(res)?)),
            _ => None,
        };
        Ok(())
    }

    /// What the activations are stored as (Candle and the GPU run f32).
    pub fn dtype(&self) -> engine::Dtype {
        match &self.plan {
            Some(CpuPlan::Bf16(_)) => engine::Dtype::Bf16,
            _ => engine::Dtype::F32,
        }
    }

    /// What runs the network, for the log: `cpu (native engine, f32, avx512)`.
    pub fn describe(&self) -> String {
        match &self.plan {
            _ if self.device.is_cuda() => "cuda:0 (candle, f32)".to_string(),
            Some(CpuPlan::F32(_)) => format!("cpu (native engine, f32, {})", engine::elem::simd().name()),
            Some(CpuPlan::Bf16(_)) => format!("cpu (native engine, bf16, {})", engine::elem::simd().name()),
            None => "cpu (candle, f32)".to_string(),
        }
    }

    pub fn is_random(&self) -> bool {
        self.weights_id.starts_with("random:")
    }

    /// n RGB8 images of r × r × 3 bytes ([`crate::image::Prepared::rgb`])
    /// → n × feature_dim features, row by row.
    pub fn features(&self, rgb: &[u8]) -> Result<Vec<f32>> {
        let r = self.which.resolution();
        if !rgb.len().is_multiple_of(r * r * 3) {
            return Err(Error::Data(format!("model input is not a whole number of {r}x{r} RGB images")));
        }
        match &self.plan {
            Some(CpuPlan::F32(plan)) => Ok(plan.run(rgb)),
            Some(CpuPlan::Bf16(plan)) => Ok(plan.run(rgb)),
            None => {
                let n = rgb.len() / (r * r * 3);
                let x = Tensor::from_vec(crate::image::normalise_batch(rgb, r * r), (n, 3, r, r), &self.device)?;
                Ok(self.net.forward(&x)?.to_device(&Device::Cpu)?.flatten_all()?.to_vec1()?)
            }
        }
    }
}
