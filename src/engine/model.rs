//! A network ready to run on a device, with the record of what it was made
//! from, and the choice of what runs it: the CPU engine, Candle, or the
//! CUDA engine.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use super::cpu::{self, bf16};
use super::cuda::{GpuDtype, GpuEngine};
use super::device::Target;
use super::dtype::Dtype;
use super::simd::simd;
use crate::error::{Error, Param, Result};
use crate::model::init;
use crate::model::registry::{Net, Which};
use crate::model::weights::{cached, fetch, verify_pinned, Source};

/// A network ready to run, with what it was made from.
pub struct Model {
    pub which: Which,
    /// Where it runs: set by [`Model::place`], CPU until then.
    pub target: Target,
    /// `sha256:<hex>` of the weights file, or `random:<seed>`.
    pub weights_id: String,
    /// Candle's network, always on the CPU: it folds BatchNorm, lowers to
    /// the engines' plan and runs `--engine candle`.
    net: Net,
    runs: Runs,
}

/// What runs the network now.
enum Runs {
    /// The native CPU engine, activations in f32 or bf16.
    CpuF32(cpu::Net<f32>),
    CpuBf16(cpu::Net<bf16>),
    /// Candle's CPU backend.
    Candle,
    /// The CUDA engine (src/engine/cuda), f32 or f16.
    Gpu(Box<GpuEngine>),
}

/// `--engine`: what runs the network on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// Fused NHWC kernels: one image per core on the CPU; cuBLAS and NVRTC kernels on CUDA
    /// (`engine::cpu`, `engine::cuda`).
    Native,
    /// Candle's CPU backend (for comparison; CPU only).
    Candle,
}

/// Why an engine and dtype run on the CPU only, if they do: automatic
/// device choice then takes the CPU instead of refusing them on a GPU machine.
pub fn cpu_only(engine: Engine, dtype: Dtype) -> Option<&'static str> {
    match (engine, dtype) {
        (Engine::Candle, _) => Some("the Candle engine runs on the CPU only"),
        (_, Dtype::Bf16) => Some("bf16 runs on the CPU only"),
        _ => None,
    }
}

/// The one rule of which engine runs which dtype on which device: bf16 is
/// the CPU engine's, f16 the CUDA engine's; Candle runs f32 on the CPU only.
pub fn supported(target: &Target, engine: Engine, dtype: Dtype) -> Result<()> {
    use Dtype::*;
    let (param, reason) = match (target, engine, dtype) {
        (_, Engine::Candle, F16 | Bf16) => {
            (Param::Dtype, format!("{dtype} needs the native engine (Candle runs f32 only)"))
        }
        (Target::Cuda(_), Engine::Candle, _) => (Param::Engine, "candle runs on the CPU only".into()),
        (Target::Cpu, Engine::Native, F16) => {
            (Param::Dtype, "f16 runs on CUDA only; on the CPU use f32 or bf16".into())
        }
        (Target::Cuda(_), Engine::Native, Bf16) => {
            (Param::Dtype, "bf16 runs on the CPU only; on CUDA use f32 or f16 (a T4 has no bf16)".into())
        }
        _ => return Ok(()),
    };
    Err(Error::invalid(param, reason))
}

impl Model {
    /// Memory-maps a safetensors file and folds its BatchNorms.
    pub fn from_file(which: Which, path: &std::path::Path) -> Result<Self> {
        let wrap = |e: Error| Error::Weights { path: path.to_path_buf(), source: Box::new(e) };
        let sha = crate::digest::sha256_file(path).map_err(|e| wrap(e.into()))?;
        // SAFETY: the file is opened read-only and not modified while mapped;
        // safetensors validates the header before any tensor is read.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, &Device::Cpu) }
            .map_err(|e| wrap(e.into()))?;
        let net = which.build(vb).map_err(|e| wrap(e.into()))?;
        Self::new(which, format!("sha256:{sha}"), net)
    }

    /// Deterministic random-init weights (see [`init`]); for tests and
    /// benchmarks only: the features mean nothing.
    pub fn random(which: Which, seed: u64) -> Result<Self> {
        let tensors = init::random_weights(which, seed)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let net = which.build(vb)?;
        Self::new(which, format!("random:{seed}"), net)
    }

    fn new(which: Which, weights_id: String, net: Net) -> Result<Self> {
        let runs = Runs::CpuF32(cpu::Net::new(&net.plan(which.resolution())?));
        Ok(Self { which, target: Target::Cpu, weights_id, net, runs })
    }

    /// Moves the network to `target` (native engine, f32).
    pub fn place(&mut self, target: &Target) -> Result<()> {
        if target.is_cpu() && self.target.is_cpu() {
            return Ok(());
        }
        self.target = target.clone();
        self.set_engine(Engine::Native, Dtype::F32)
    }

    /// Does what runs the network run on its target? (Not right after
    /// [`Model::place`] moved it.)
    fn runs_on_target(&self) -> bool {
        matches!(
            (&self.target, &self.runs),
            (Target::Cuda(_), Runs::Gpu(_)) | (Target::Cpu, Runs::CpuF32(_) | Runs::CpuBf16(_) | Runs::Candle)
        )
    }

    /// Picks what runs the network on its target (default: native, f32).
    /// bf16 is the CPU engine's, f16 the CUDA engine's; Candle runs f32 on
    /// the CPU only.
    pub fn set_engine(&mut self, engine: Engine, dtype: Dtype) -> Result<()> {
        use Dtype::*;
        if self.runs_on_target() && (engine, dtype) == self.current() {
            // Lowering copies and packs every weight: not twice at start-up.
            return Ok(());
        }
        supported(&self.target, engine, dtype)?;
        let res = self.which.resolution();
        self.runs = match (&self.target, engine, dtype) {
            (Target::Cpu, Engine::Native, F32) => Runs::CpuF32(cpu::Net::new(&self.net.plan(res)?)),
            (Target::Cpu, Engine::Native, Bf16) => Runs::CpuBf16(cpu::Net::new(&self.net.plan(res)?)),
            (Target::Cpu, Engine::Candle, _) => Runs::Candle,
            (Target::Cpu, Engine::Native, F16) | (Target::Cuda(_), Engine::Candle, _) => {
                unreachable!("refused by supported()")
            }
            (Target::Cuda(gpu), Engine::Native, d) => {
                let storage = if d == F16 { GpuDtype::F16 } else { GpuDtype::F32 };
                debug_assert!(d != Bf16, "refused by supported()");
                // The engine running now is dropped first, before the new
                // one takes device memory.
                self.runs = Runs::Candle;
                let plan = self.net.plan(res)?;
                Runs::Gpu(Box::new(GpuEngine::new(gpu.clone(), &plan, storage)?))
            }
        };
        Ok(())
    }

    fn current(&self) -> (Engine, Dtype) {
        match &self.runs {
            Runs::CpuF32(_) => (Engine::Native, Dtype::F32),
            Runs::CpuBf16(_) => (Engine::Native, Dtype::Bf16),
            Runs::Candle => (Engine::Candle, Dtype::F32),
            Runs::Gpu(g) if g.storage == GpuDtype::F16 => (Engine::Native, Dtype::F16),
            Runs::Gpu(_) => (Engine::Native, Dtype::F32),
        }
    }

    /// What the activations are stored as.
    pub fn dtype(&self) -> Dtype {
        self.current().1
    }

    /// What runs the network, for the log: `cpu (native engine, f32, avx512)`.
    pub fn describe(&self) -> String {
        match &self.runs {
            Runs::Gpu(g) => format!(
                "cuda:{} ({}, sm_{}{}, native engine, {})",
                g.gpu.info.ordinal,
                g.gpu.info.name,
                g.gpu.info.compute_capability.0,
                g.gpu.info.compute_capability.1,
                g.storage.suffix()
            ),
            Runs::CpuF32(_) => format!("cpu (native engine, f32, {})", simd().name()),
            Runs::CpuBf16(_) => format!("cpu (native engine, bf16, {})", simd().name()),
            Runs::Candle => "cpu (candle, f32)".to_string(),
        }
    }

    /// Multiply-adds one image takes ([`crate::model::plan::Plan::macs`]):
    /// what `fruits bench infer` holds its images/s against the peak with.
    pub fn macs_per_image(&self) -> Result<u64> {
        Ok(self.net.plan(self.which.resolution())?.macs())
    }

    /// Turns the native CPU engine's per-block clock on or off
    /// (`fruits bench infer --blocks`); nothing where none runs.
    pub fn clock_blocks(&self, on: bool) {
        match &self.runs {
            Runs::CpuF32(net) => net.clock.set(on),
            Runs::CpuBf16(net) => net.clock.set(on),
            _ => {}
        }
    }

    /// Each block, then the head: what it is, its multiply-adds an image,
    /// and the thread time it took since the clock went on (taken: the
    /// clock's counters start again from zero). Empty where no clock runs.
    pub fn block_times(&self) -> Result<Vec<(String, u64, std::time::Duration)>> {
        let times = match &self.runs {
            Runs::CpuF32(net) => net.clock.take(),
            Runs::CpuBf16(net) => net.clock.take(),
            _ => return Ok(Vec::new()),
        };
        let blocks = self.net.plan(self.which.resolution())?.block_macs();
        Ok(blocks.into_iter().zip(times).map(|((what, macs), t)| (what, macs, t)).collect())
    }

    pub fn is_random(&self) -> bool {
        self.weights_id.starts_with("random:")
    }

    /// n RGB8 images of r × r × 3 bytes ([`crate::image::Prepared::rgb`])
    /// → n × feature_dim features, row by row.
    pub fn features(&self, rgb: &[u8]) -> Result<Vec<f32>> {
        let r = self.which.resolution();
        if !rgb.len().is_multiple_of(r * r * 3) {
            return Err(Error::invalid(Param::BatchSize, format!("input is not a whole number of {r}x{r} RGB images")));
        }
        match &self.runs {
            Runs::CpuF32(net) => Ok(net.run(rgb)),
            Runs::CpuBf16(net) => Ok(net.run(rgb)),
            Runs::Gpu(g) => g.run(rgb),
            Runs::Candle => {
                let n = rgb.len() / (r * r * 3);
                let x = Tensor::from_vec(
                    crate::image::normalise_batch(rgb, r * r, self.which.input_norm().scale_shift()),
                    (n, 3, r, r),
                    &Device::Cpu,
                )?;
                Ok(self.net.forward(&x)?.flatten_all()?.to_vec1()?)
            }
        }
    }
}

/// The model `--weights` names: random weights (their features mean
/// nothing: callers say so, see [`Model::is_random`]), a file, or the pinned hub file, from the local
/// cache or downloaded once and checked.
pub fn load(which: Which, source: Option<&Source>, target: &Target) -> Result<Model> {
    let mut model = load_on_cpu(which, source)?;
    model.place(target)?;
    Ok(model)
}

/// [`load`], then [`Model::set_engine`]; a combination that cannot run is
/// refused before any weight is read.
pub fn load_as(which: Which, source: Option<&Source>, target: &Target, engine: Engine, dtype: Dtype) -> Result<Model> {
    supported(target, engine, dtype)?;
    let mut model = load(which, source, target)?;
    model.set_engine(engine, dtype)?;
    Ok(model)
}

fn load_on_cpu(which: Which, source: Option<&Source>) -> Result<Model> {
    match source {
        Some(Source::Random(seed)) => Model::random(which, *seed),
        Some(Source::File(path)) => Model::from_file(which, path),
        None => {
            let path = match cached(which) {
                Some(p) => p,
                None => fetch(which, None)
                    .map_err(|e| Error::NoWeights { model: which.to_string(), source: Box::new(e) })?,
            };
            verify_pinned(&path, None, which)?;
            Model::from_file(which, &path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The multiply-adds the "% of peak" figures divide by, against the
    /// papers' and timm's counts: MobileNetV2 1.0 at 224 is 300M multiply-adds
    /// (Sandler et al. 2018, table 6); timm's model cards give 0.4 GMACs for
    /// tf_efficientnet_lite0 and 0.2 for mobilenetv4_conv_small, to one
    /// decimal.
    #[test]
    fn macs_per_image_match_the_published_counts() {
        for (which, lo, hi) in [
            (Which::MobileNetV2, 294e6, 306e6),
            (Which::EfficientNetLite0, 350e6, 450e6),
            (Which::MobileNetV4Small, 150e6, 250e6),
        ] {
            let macs = Model::random(which, 0).unwrap().macs_per_image().unwrap() as f64;
            assert!((lo..hi).contains(&macs), "{which}: {macs} multiply-adds, published {lo}..{hi}");
        }
    }

    /// Fused inverted-residual blocks (engine::cpu::fused) change no bit of
    /// the features of any model, in f32 or bf16, against running every
    /// layer on its own.
    #[test]
    fn fused_blocks_give_every_models_features_bit_for_bit() {
        let mut state = 0x1234_5678_u32;
        for which in Which::ALL {
            let m = Model::random(which, 3).unwrap();
            let plan = m.net.plan(which.resolution()).unwrap();
            let r = which.resolution();
            let x: Vec<u8> = (0..3 * 3 * r * r)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    (state >> 24) as u8
                })
                .collect();
            let fused = cpu::Net::<f32>::new(&plan);
            assert!(fused.blocks.iter().any(|b| b.fused.is_some()), "{which}: nothing fused");
            assert!(fused.stack.from < fused.blocks.len(), "{which}: nothing stacked: {:?}", fused.stack);
            let (want, want16) =
                (cpu::Net::<f32>::layer_by_layer(&plan).run(&x), cpu::Net::<bf16>::layer_by_layer(&plan).run(&x));
            // An image a task, two stacked (and one left over), all three.
            for g in 1..=3 {
                assert_eq!(fused.run_stacked(&x, g), want, "{which} f32, {g} a task");
                assert_eq!(cpu::Net::<bf16>::new(&plan).run_stacked(&x, g), want16, "{which} bf16, {g} a task");
            }
        }
    }
}
