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
//!
//! **The same bytes on every machine.** `random:SEED` names a network: an
//! index built on one machine is queried on another, and the parity
//! fixtures record the sha256 of the file. So every number here is fixed
//! by IEEE arithmetic alone:
//! - random bits come from ChaCha8 (integer arithmetic), uniforms from
//!   their bits by exact scaling, normals by Marsaglia's polar method with
//!   the `libm` crate's pure-Rust `log` ([`Gaussian`]): not `rand_distr`'s
//!   normal, whose ziggurat calls the platform's `exp`/`ln` (glibc picks an
//!   FMA or SSE2 build of them at run time, macOS has its own);
//! - the calibration's forward pass convolves and pools with
//!   [`fixed_order`](super::fixed_order) (each output one fixed sequence of f64 operations), not
//!   Candle's GEMM, which picks its kernels and blocking from the CPU;
//! - the statistics are f64 sums in one order, and threads split work only
//!   by whole output planes, so the thread count changes nothing.
//!
//! `tests/fixtures/parity/*.json` hold the sha256 for seed 7; the unit test
//! below checks them under several thread counts, and `tests/test_weights.rs`
//! checks the binary under every `FRUITS_SIMD` level.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Module, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Uniform};

use super::layers::{with_calibrator, Calibrator};
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

/// Standard normal samples by Marsaglia's polar method: uniforms from the
/// generator's bits (exact), then `+ × ÷ √` (each one correctly rounded
/// IEEE operation) and `libm::log` (pure Rust, no run-time dispatch).
struct Gaussian {
    spare: Option<f64>,
}

impl Gaussian {
    fn new() -> Self {
        Self { spare: None }
    }

    fn sample(&mut self, rng: &mut ChaCha8Rng) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        loop {
            // `random::<f64>()` is the top 53 bits scaled by 2^-53: exact.
            let u = 2.0 * rng.random::<f64>() - 1.0;
            let v = 2.0 * rng.random::<f64>() - 1.0;
            let s = u * u + v * v;
            if s > 0.0 && s < 1.0 {
                let m = (-2.0 * libm::log(s) / s).sqrt();
                self.spare = Some(v * m);
                return u * m;
            }
        }
    }

    /// `n` samples of N(0, std²), as f32.
    fn take(&mut self, rng: &mut ChaCha8Rng, n: usize, std: f32) -> Vec<f32> {
        (0..n).map(|_| (self.sample(rng) * std as f64) as f32).collect()
    }
}

/// Values for one tensor, chosen by what its name says it is.
fn invent(seed: u64, name: &str, shape: &Shape, scale: f32) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ fnv1a(name));
    let n = shape.elem_count();
    let uniform = |rng: &mut ChaCha8Rng, lo: f32, hi: f32| -> Vec<f32> {
        let d = Uniform::new(lo, hi).expect("valid range");
        (0..n).map(|_| d.sample(rng)).collect()
    };
    let normal = |rng: &mut ChaCha8Rng, std: f32| Gaussian::new().take(rng, n, std);
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
///
/// Every value is computed in one fixed order (module doc): the network's
/// layers run on [`fixed_order`](super::fixed_order) while the calibrator is set, and the
/// statistics below are f64 sums over (image, pixel) in order.
fn calibrate(which: Which, seed: u64, tensors: &mut HashMap<String, Tensor>) -> Result<()> {
    let net = which.build(VarBuilder::from_tensors(tensors.clone(), DType::F32, &Device::Cpu))?;
    let vec =
        |name: &str| -> Result<Vec<f64>> { Ok(tensors[name].to_vec1::<f32>()?.into_iter().map(f64::from).collect()) };
    let mut affine: HashMap<String, (Vec<f64>, Vec<f64>)> = HashMap::new();
    for p in tensors.keys().filter_map(|k| k.strip_suffix(".running_mean")) {
        affine.insert(p.to_string(), (vec(&format!("{p}.weight"))?, vec(&format!("{p}.bias"))?));
    }
    let stats = Arc::new(Mutex::new(Vec::new()));
    let record = stats.clone();
    let calibrator: Calibrator = Box::new(move |name: &str, eps: f64, y: &Tensor| {
        let (gamma, beta) = &affine[name];
        let (n, c, h, w) = y.dims4()?;
        let plane = h * w;
        let count = (n * plane) as f64;
        // The layer ran with identity statistics (mean 0, var 1): undo γ, β.
        let y = y.flatten_all()?.to_vec1::<f32>()?;
        let mut raw = vec![0f64; y.len()];
        for (i, (raw, y)) in raw.chunks_mut(plane).zip(y.chunks(plane)).enumerate() {
            let ch = i % c;
            let s0 = gamma[ch] / (1.0 + eps).sqrt();
            for (r, &v) in raw.iter_mut().zip(y) {
                *r = (v as f64 - beta[ch]) / s0;
            }
        }
        // Per channel, over every image and pixel, in that order (one add
        // after another from -0.0, as `Iterator::sum` adds).
        let raw = raw;
        let planes = |ch: usize| (0..n).map(move |img| (img * c + ch) * plane).flat_map(|at| &raw[at..at + plane]);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ fnv1a(name) ^ 0xCA11_B4A7);
        let shift = Gaussian::new().take(&mut rng, c, 0.1);
        let scale = Uniform::new(0.8f32, 1.25).expect("valid range");
        let scale: Vec<f32> = (0..c).map(|_| scale.sample(&mut rng)).collect();
        let (mut means, mut vars) = (Vec::with_capacity(c), Vec::with_capacity(c));
        for ch in 0..c {
            let (mut sum, mut squares) = (-0.0f64, -0.0f64);
            planes(ch).for_each(|&r| sum += r);
            let mean = sum / count;
            planes(ch).for_each(|&r| squares += (r - mean).powi(2));
            let var = (squares / count).max(1e-3);
            // Stored as f32, as a checkpoint holds them.
            means.push((mean + shift[ch] as f64 * var.sqrt()) as f32);
            vars.push((var * scale[ch] as f64) as f32);
        }
        let mut out = vec![0f32; raw.len()];
        for (i, (out, raw)) in out.chunks_mut(plane).zip(raw.chunks(plane)).enumerate() {
            let ch = i % c;
            let s = gamma[ch] / (vars[ch] as f64 + eps).sqrt();
            let (m, b) = (means[ch] as f64, beta[ch]);
            for (o, &r) in out.iter_mut().zip(raw) {
                *o = ((r - m) * s + b) as f32;
            }
        }
        record.lock().expect("not poisoned").push((name.to_string(), means, vars));
        Tensor::from_vec(out, (n, c, h, w), &Device::Cpu)
    });
    let x = calibration_images(seed, which.resolution())?;
    with_calibrator(calibrator, || net.forward(&x))?;
    for (name, mean, var) in stats.lock().expect("not poisoned").drain(..) {
        let c = mean.len();
        tensors.insert(format!("{name}.running_mean"), Tensor::from_vec(mean, c, &Device::Cpu)?);
        tensors.insert(format!("{name}.running_var"), Tensor::from_vec(var, c, &Device::Cpu)?);
    }
    Ok(())
}

/// Eight smooth random images (a bilinear 8×8 grid plus some pixel noise),
/// already normalised: closer to photos than white noise.
fn calibration_images(seed: u64, res: usize) -> Result<Tensor> {
    const N: usize = 8;
    const GRID: usize = 8;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x1A6E);
    let mut normal = Gaussian::new();
    let mut out = Vec::with_capacity(N * 3 * res * res);
    for _ in 0..N * 3 {
        let grid: Vec<f32> = normal.take(&mut rng, GRID * GRID, 1.0);
        for y in 0..res {
            let gy = y as f32 / res as f32 * (GRID - 1) as f32;
            let (y0, fy) = (gy as usize, gy.fract());
            for x in 0..res {
                let gx = x as f32 / res as f32 * (GRID - 1) as f32;
                let (x0, fx) = (gx as usize, gx.fract());
                let at = |r: usize, c: usize| grid[r.min(GRID - 1) * GRID + c.min(GRID - 1)];
                let v = (1.0 - fy) * ((1.0 - fx) * at(y0, x0) + fx * at(y0, x0 + 1))
                    + fy * ((1.0 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1));
                out.push(v + 0.3 * (normal.sample(&mut rng) as f32));
            }
        }
    }
    Ok(Tensor::from_vec(out, (N, 3, res, res), &Device::Cpu)?)
}

/// Writes [`random_weights`] as a safetensors file.
pub fn write_random_weights(which: Which, seed: u64, path: &std::path::Path) -> Result<()> {
    let tensors = random_weights(which, seed)?;
    candle_core::safetensors::save(&tensors, path).map_err(|e| crate::error::Error::output(path.to_path_buf(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sha256 the parity fixture (made by timm on these weights) records
    /// for `which` and its seed: the one place that holds it.
    fn committed(which: Which) -> (u64, String) {
        let json = match which {
            Which::MobileNetV2 => include_str!("../../tests/fixtures/parity/mobilenetv2.json"),
            Which::MobileNetV4Small => include_str!("../../tests/fixtures/parity/mobilenetv4-small.json"),
            Which::EfficientNetLite0 => include_str!("../../tests/fixtures/parity/efficientnet-lite0.json"),
        };
        let v: serde_json::Value = serde_json::from_str(json).expect("fixture JSON");
        (v["seed"].as_u64().expect("seed"), v["weights_sha256"].as_str().expect("sha256").to_string())
    }

    /// The bytes of `random:SEED` do not depend on how many threads make
    /// them (the SIMD levels: tests/test_weights.rs, through the binary).
    #[test]
    fn same_bytes_under_any_thread_count() {
        let dir = tempfile::tempdir().unwrap();
        for which in Which::ALL {
            let (seed, want) = committed(which);
            for threads in [1, 2, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let path = dir.path().join(format!("{which}-{threads}.safetensors"));
                pool.install(|| write_random_weights(which, seed, &path)).unwrap();
                let got = crate::digest::sha256_file(&path).unwrap();
                assert_eq!(got, want, "{which} seed {seed} on {threads} threads: rerun tests/fixtures/make_parity.py?");
            }
        }
    }

    /// The polar method's samples have the moments of N(0, 1).
    #[test]
    fn gaussian_is_standard_normal() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let z = Gaussian::new().take(&mut rng, 200_000, 1.0);
        let n = z.len() as f64;
        let mean = z.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = z.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let kurt = z.iter().map(|&v| (v as f64 - mean).powi(4)).sum::<f64>() / n / var.powi(2);
        // Standard errors at n = 200k: mean 0.0022, variance 0.0032, kurtosis 0.011.
        assert!(mean.abs() < 0.01 && (var - 1.0).abs() < 0.015 && (kurt - 3.0).abs() < 0.06, "{mean} {var} {kurt}");
    }
}
