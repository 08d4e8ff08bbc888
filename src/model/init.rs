//! Deterministic random-init weights with the real timm tensor names and
//! shapes, for offline tests and benchmarks (no model hub here).
//!
//! The names come from the model code itself: the network is built through
//! a [`SimpleBackend`] that invents each tensor it is asked for, so the file
//! can never drift from what the loader reads. Each tensor's values depend
//! only on (seed, name), not on load order.
//!
//! BatchNorm gets non-trivial statistics (running mean and variance, scale,
//! shift): with the defaults (0, 1, 1, 0) a wrong BatchNorm fold would pass
//! every parity test. Convolutions get He-normal weights, and the running
//! statistics are calibrated on smooth random images ([`calibrate`]), so
//! activations neither vanish nor explode through the ~60 layers and the
//! features still depend on the image.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Module, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};

use super::layers::{with_calibrator, Calibrator, BN_EPS};
use super::registry::Which;
use crate::error::Result;

/// ImageNet classes of the timm checkpoints' `classifier` (unused by
/// `fruits`, written so the file loads into timm with `strict=True`).
const CLASSES: usize = 1000;

/// A backend that invents each tensor it is asked for and keeps a copy.
struct Inventing {
    seed: u64,
    made: Arc<Mutex<HashMap<String, Tensor>>>,
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// Values for one tensor, chosen by what its name says it is.
fn invent(seed: u64, name: &str, shape: &Shape, scale: f32) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ fnv1a(name));
    let n = shape.elem_count();
    let uniform = |rng: &mut ChaCha8Rng, lo: f32, hi: f32| -> Vec<f32> {
        let d = Uniform::new(lo, hi).expect("valid range");
        (0..n).map(|_| d.sample(rng)).collect()
    };
    let normal = |rng: &mut ChaCha8Rng, std: f32| -> Vec<f32> {
        let d = Normal::new(0.0, std).expect("valid std");
        (0..n).map(|_| d.sample(rng)).collect()
    };
    if name.ends_with("running_var") {
        vec![1.0; n] // replaced by calibration
    } else if name.ends_with("running_mean") {
        vec![0.0; n] // replaced by calibration
    } else if shape.rank() == 4 {
        // He-normal over fan-in = cin/groups · k · k.
        let dims = shape.dims();
        let fan_in = (dims[1] * dims[2] * dims[3]) as f32;
        normal(&mut rng, (2.0 / fan_in).sqrt())
    } else if name.ends_with("weight") {
        uniform(&mut rng, 0.6 * scale, 1.4 * scale)
    } else {
        normal(&mut rng, 0.2)
    }
}

impl SimpleBackend for Inventing {
    fn get(&self, s: Shape, name: &str, hint: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        // Layers pass their typical scale as a constant hint (see `layers.rs`).
        let scale = match hint {
            Init::Const(c) if c > 0.0 => c as f32,
            _ => 1.0,
        };
        let t = Tensor::from_vec(invent(self.seed, name, &s, scale), s, &Device::Cpu)?;
        self.made.lock().expect("not poisoned").insert(name.to_string(), t.clone());
        t.to_dtype(dtype)?.to_device(dev)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("random init needs a shape for {name}")
    }
    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// Every tensor of the timm checkpoint for `which`, randomly initialised:
/// the ones the network reads, plus `num_batches_tracked` and `classifier.*`.
pub fn random_weights(which: Which, seed: u64) -> Result<HashMap<String, Tensor>> {
    let made = Arc::new(Mutex::new(HashMap::new()));
    let backend: Box<dyn SimpleBackend> = Box::new(Inventing { seed, made: made.clone() });
    which.build(VarBuilder::from_backend(backend, DType::F32, Device::Cpu))?;
    let mut made = std::mem::take(&mut *made.lock().expect("not poisoned"));
    calibrate(which, seed, &mut made)?;
    let bn_prefixes: Vec<String> =
        made.keys().filter_map(|k| k.strip_suffix(".running_mean").map(str::to_string)).collect();
    for p in bn_prefixes {
        made.insert(format!("{p}.num_batches_tracked"), Tensor::new(0i64, &Device::Cpu)?);
    }
    let dim = which.feature_dim();
    let cls_w = Shape::from((CLASSES, dim));
    let w = invent(seed, "classifier.weight", &cls_w, 0.01);
    made.insert("classifier.weight".into(), Tensor::from_vec(w, cls_w, &Device::Cpu)?);
    made.insert("classifier.bias".into(), Tensor::zeros(CLASSES, DType::F32, &Device::Cpu)?);
    Ok(made)
}

/// Sets every BatchNorm's running statistics to those its input really has
/// on smooth random images, give or take a random shift (±0.1 σ) and scale
/// (0.8–1.25× variance), layer by layer in forward order, as training would
/// leave them. Without this, a random deep ReLU network maps every input to
/// nearly the same output (cosine ≈ 1), and a parity test on its features
/// could not tell one image, or one preprocessing, from another.
fn calibrate(which: Which, seed: u64, tensors: &mut HashMap<String, Tensor>) -> Result<()> {
    let net = which.build(VarBuilder::from_tensors(tensors.clone(), DType::F32, &Device::Cpu))?;
    let affine: HashMap<String, (Tensor, Tensor)> = tensors
        .keys()
        .filter_map(|k| k.strip_suffix(".running_mean"))
        .map(|p| (p.to_string(), (tensors[&format!("{p}.weight")].clone(), tensors[&format!("{p}.bias")].clone())))
        .collect();
    let stats = Arc::new(Mutex::new(Vec::new()));
    let record = stats.clone();
    let calibrator: Calibrator = Box::new(move |name: &str, y: &Tensor| {
        let (gamma, beta) = &affine[name];
        let c = gamma.dim(0)?;
        let per_channel = |t: &Tensor| t.reshape((1, c, 1, 1));
        // The layer ran with identity statistics (mean 0, var 1): undo γ, β.
        let s0 = (gamma / (1.0 + BN_EPS).sqrt())?;
        let raw = y.broadcast_sub(&per_channel(beta)?)?.broadcast_div(&per_channel(&s0)?)?;
        let flat = raw.transpose(0, 1)?.flatten_from(1)?; // (c, n·h·w)
        let mean = flat.mean(1)?;
        let var = flat.broadcast_sub(&mean.unsqueeze(1)?)?.sqr()?.mean(1)?.clamp(1e-3f32, f32::MAX)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ fnv1a(name) ^ 0xCA11_B4A7);
        let shift = Normal::new(0f32, 0.1).expect("valid std");
        let scale = Uniform::new(0.8f32, 1.25).expect("valid range");
        let shift: Vec<f32> = (0..c).map(|_| shift.sample(&mut rng)).collect();
        let scale: Vec<f32> = (0..c).map(|_| scale.sample(&mut rng)).collect();
        let mean = (&mean + (Tensor::new(shift, &Device::Cpu)? * var.sqrt()?)?)?;
        let var = (var * Tensor::new(scale, &Device::Cpu)?)?;
        record.lock().expect("not poisoned").push((name.to_string(), mean.clone(), var.clone()));
        let s = (gamma / (&var + BN_EPS)?.sqrt()?)?;
        raw.broadcast_sub(&per_channel(&mean)?)?.broadcast_mul(&per_channel(&s)?)?.broadcast_add(&per_channel(beta)?)
    });
    let x = calibration_images(seed, which.resolution())?;
    with_calibrator(calibrator, || net.forward(&x))?;
    for (name, mean, var) in stats.lock().expect("not poisoned").drain(..) {
        tensors.insert(format!("{name}.running_mean"), mean);
        tensors.insert(format!("{name}.running_var"), var);
    }
    Ok(())
}

/// Eight smooth random images (a bilinear 8×8 grid plus some pixel noise),
/// already normalised: closer to photos than white noise.
fn calibration_images(seed: u64, res: usize) -> Result<Tensor> {
    const N: usize = 8;
    const GRID: usize = 8;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x1A6E);
    let normal = Normal::new(0f32, 1.0).expect("valid std");
    let mut out = Vec::with_capacity(N * 3 * res * res);
    for _ in 0..N * 3 {
        let grid: Vec<f32> = (0..GRID * GRID).map(|_| normal.sample(&mut rng)).collect();
        for y in 0..res {
            let gy = y as f32 / res as f32 * (GRID - 1) as f32;
            let (y0, fy) = (gy as usize, gy.fract());
            for x in 0..res {
                let gx = x as f32 / res as f32 * (GRID - 1) as f32;
                let (x0, fx) = (gx as usize, gx.fract());
                let at = |r: usize, c: usize| grid[r.min(GRID - 1) * GRID + c.min(GRID - 1)];
                let v = (1.0 - fy) * ((1.0 - fx) * at(y0, x0) + fx * at(y0, x0 + 1))
                    + fy * ((1.0 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1));
                out.push(v + 0.3 * normal.sample(&mut rng));
            }
        }
    }
    Ok(Tensor::from_vec(out, (N, 3, res, res), &Device::Cpu)?)
}

/// Writes [`random_weights`] as a safetensors file.
pub fn write_random_weights(which: Which, seed: u64, path: &std::path::Path) -> Result<()> {
    let tensors = random_weights(which, seed)?;
    candle_core::safetensors::save(&tensors, path)
        .map_err(|e| crate::error::Error::Output { path: path.to_path_buf(), reason: e.to_string() })
}
