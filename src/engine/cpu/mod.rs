//! The CPU engine: a [`Plan`] run one image per thread on NHWC buffers
//! reused from image to image.
//!
//! Why not Candle's CPU backend: it runs a batch layer by layer in NCHW,
//! allocates (and the kernel zeroes) a fresh tensor per op, and applies bias,
//! activation and the residual add as separate passes over memory. Here one
//! image's activations (≤ 4.8 MB) stay in this core's share of the caches,
//! every layer writes its output once with bias, activation and skip fused,
//! and the two cores never wait on each other inside a batch. Candle still
//! builds the network, folds BatchNorm and runs `--engine candle`; the
//! parity tests run both against timm.
//!
//! Activations are f32 or, with `--dtype bf16`, bfloat16 ([`elem`]).

pub mod dense;
pub mod depthwise;
pub mod elem;
pub mod fused;
pub mod gemm;
#[cfg(target_arch = "x86_64")]
pub mod lanes;

use std::sync::Mutex;

use rayon::prelude::*;

use dense::{dense, need, Dense};
pub use elem::{bf16, Elem};
use fused::{Bands, Fused};

use crate::model::plan::{self, Depthwise, Head, Hw, Plan};

#[derive(Debug, Clone)]
pub enum Layer<T> {
    Dense(Dense<T>),
    Depthwise(Depthwise),
}

impl<T: Elem> Layer<T> {
    fn out_hw(&self, i: Hw) -> Hw {
        match self {
            Layer::Dense(d) => d.out_hw(i),
            Layer::Depthwise(d) => d.out_hw(i),
        }
    }
    fn cout(&self) -> usize {
        match self {
            Layer::Dense(d) => d.weight.n,
            Layer::Depthwise(d) => d.channels,
        }
    }
}

/// A block of the plan, its dense layers packed.
#[derive(Debug, Clone)]
pub struct Block<T> {
    pub layers: Vec<Layer<T>>,
    pub skip: bool,
    /// The same layers run a band of rows at a time ([`fused`]), where the
    /// block is an inverted residual (1×1, depthwise, 1×1) and fusing is on.
    pub fused: Option<Fused<T>>,
}

impl<T: Elem> Block<T> {
    /// `[1×1] → depthwise → 1×1` as a [`Fused`], if the layers are that.
    fn fusable(layers: &[Layer<T>]) -> Option<Fused<T>> {
        match layers {
            [Layer::Dense(e), Layer::Depthwise(dw), Layer::Dense(p)] => {
                Fused::new(Some(e.clone()), dw.clone(), p.clone())
            }
            [Layer::Depthwise(dw), Layer::Dense(p)] => Fused::new(None, dw.clone(), p.clone()),
            _ => None,
        }
    }
}

/// A plan ready for the CPU engine, activations stored as `T`.
#[derive(Debug)]
pub struct Net<T> {
    /// Input side in pixels (square), 3 channels.
    pub resolution: usize,
    /// `x * scale - shift` per channel of an RGB8 pixel (the plan's InputNorm).
    pub normalise: ([f32; 3], [f32; 3]),
    pub blocks: Vec<Block<T>>,
    pub head: Dense<T>,
    pub head_order: Head,
    /// The L2 size fused blocks size their bands by (CPUID's; 0 = unknown).
    pub l2_bytes: usize,
    /// Buffers of finished tasks, handed to the next ones: grown to the
    /// largest activation on the first images, then reused.
    spare: Mutex<Vec<Workspace<T>>>,
}

/// One task's buffers.
#[derive(Default, Debug)]
struct Workspace<T> {
    bufs: [Vec<T>; 3],
    cols: Vec<T>,
    bands: Bands<T>,
    small: Vec<T>,
    pooled: Vec<f32>,
}

impl<T: Elem> Net<T> {
    /// Packs every dense layer of `plan` (copies; `plan` stays usable),
    /// inverted-residual blocks fused.
    pub fn new(plan: &Plan) -> Self {
        Self::build(plan, true)
    }

    /// Every block run layer by layer: the reference the fused blocks are
    /// checked against, bit for bit.
    pub fn layer_by_layer(plan: &Plan) -> Self {
        Self::build(plan, false)
    }

    fn build(plan: &Plan, fuse: bool) -> Self {
        let layer = |l: &plan::Layer| match l {
            plan::Layer::Dense(d) => Layer::Dense(Dense::new(d)),
            plan::Layer::Depthwise(d) => Layer::Depthwise(d.clone()),
        };
        let block = |b: &plan::Block| {
            let layers: Vec<Layer<T>> = b.layers.iter().map(layer).collect();
            let fused = if fuse { Block::fusable(&layers) } else { None };
            Block { layers, skip: b.skip, fused }
        };
        let blocks = plan.blocks.iter().map(block).collect();
        Self {
            resolution: plan.resolution,
            normalise: plan.input.scale_shift(),
            blocks,
            head: Dense::new(&plan.head),
            head_order: plan.head_order,
            l2_bytes: crate::engine::cpu_id::CpuId::get().l2,
            spare: Mutex::new(Vec::new()),
        }
    }

    pub fn feature_dim(&self) -> usize {
        self.head.weight.n
    }

    /// `images` is `n × [r][r][3]` RGB8 (as the preprocessing makes it);
    /// returns `n × feature_dim`. Images are spread over rayon's pool, one
    /// image per task.
    pub fn run(&self, images: &[u8]) -> Vec<f32> {
        let px = 3 * self.resolution * self.resolution;
        assert_eq!(images.len() % px, 0, "input is not a whole number of {}² RGB images", self.resolution);
        let fd = self.feature_dim();
        let mut out = vec![0f32; images.len() / px * fd];
        out.par_chunks_mut(fd).zip(images.par_chunks(px)).for_each(|(o, img)| {
            let mut ws = self.spare.lock().unwrap().pop().unwrap_or_default();
            self.run_image(img, &mut ws, o);
            self.spare.lock().unwrap().push(ws);
        });
        out
    }

    /// Fused block `f` on the `hw × ch` activation in `bufs[cur]`; returns
    /// the buffer its output went to.
    #[allow(clippy::too_many_arguments)]
    fn run_fused(
        &self,
        f: &Fused<T>,
        skip: bool,
        bufs: &mut [Vec<T>; 3],
        cur: usize,
        hw: Hw,
        ch: usize,
        bands: &mut Bands<T>,
    ) -> usize {
        let dst = (cur + 1) % 3;
        let o = f.out_hw(hw);
        let n_out = o.h * o.w * f.cout();
        let mut out = std::mem::take(&mut bufs[dst]);
        need(&mut out, n_out);
        f.run(&bufs[cur][..hw.h * hw.w * ch], hw, skip, &mut out[..n_out], bands, self.l2_bytes);
        bufs[dst] = out;
        dst
    }

    fn run_image(&self, rgb: &[u8], ws: &mut Workspace<T>, features: &mut [f32]) {
        let r = self.resolution;
        let mut hw = Hw { h: r, w: r };
        let Workspace { bufs, cols, bands, small, pooled } = ws;
        // The input, normalised, into buffer 0 (already HWC).
        need(&mut bufs[0], r * r * 3);
        normalise(rgb, self.normalise, &mut bufs[0][..r * r * 3]);
        let mut cur = 0; // buffer holding the current activation
        let mut ch = 3;
        for block in &self.blocks {
            if let Some(f) = &block.fused {
                cur = self.run_fused(f, block.skip, bufs, cur, hw, ch, bands);
                (hw, ch) = (f.out_hw(hw), f.cout());
                continue;
            }
            let input = cur;
            for (li, layer) in block.layers.iter().enumerate() {
                let last = li + 1 == block.layers.len();
                // Never overwrite the block input while the skip needs it.
                let dst = (0..3).find(|&b| b != cur && b != input).unwrap();
                let o = layer.out_hw(hw);
                let n_out = o.h * o.w * layer.cout();
                // Taken out for the layer so the others can be borrowed beside it.
                let mut out = std::mem::take(&mut bufs[dst]);
                need(&mut out, n_out);
                let src = &bufs[cur][..hw.h * hw.w * ch];
                let skip = (last && block.skip).then(|| &bufs[input][..n_out]);
                match layer {
                    Layer::Depthwise(d) => {
                        d.run(src, hw, &mut out[..n_out]);
                        if let Some(s) = skip {
                            out[..n_out].iter_mut().zip(s).for_each(|(y, x)| *y = T::from_f32(y.to_f32() + x.to_f32()));
                        }
                    }
                    Layer::Dense(d) => dense(d, src, hw, ch, skip, &mut out[..n_out], cols),
                }
                bufs[dst] = out;
                cur = dst;
                hw = o;
                ch = layer.cout();
            }
        }
        let pixels = hw.h * hw.w;
        let n = self.head.weight.n;
        match self.head_order {
            Head::BeforePool => {
                let dst = (cur + 1) % 3;
                let mut out = std::mem::take(&mut bufs[dst]);
                need(&mut out, pixels * n);
                dense(&self.head, &bufs[cur][..pixels * ch], hw, ch, None, &mut out[..pixels * n], cols);
                mean_rows(&out[..pixels * n], n, features);
                bufs[dst] = out;
            }
            Head::AfterPool => {
                pooled.resize(ch, 0.0);
                mean_rows(&bufs[cur][..pixels * ch], ch, pooled);
                need(small, ch + n);
                let (x, y) = small.split_at_mut(ch);
                x.iter_mut().zip(pooled.iter()).for_each(|(x, &p)| *x = T::from_f32(p));
                dense(&self.head, x, Hw { h: 1, w: 1 }, ch, None, &mut y[..n], cols);
                features.iter_mut().zip(&y[..n]).for_each(|(f, v)| *f = v.to_f32());
            }
        }
    }
}

/// RGB8 pixels → `x · scale[c] − shift[c]` per channel, HWC. In runs of 48
/// values (16 pixels: the channel pattern repeats, so each lane has its own
/// scale and shift and the loop vectorises without shuffles; it was ~1% of a
/// featurize as a pixel-at-a-time loop). The same multiply, then subtract,
/// for every value: the same bits as that loop.
fn normalise<T: Elem>(rgb: &[u8], (scale, shift): ([f32; 3], [f32; 3]), dst: &mut [T]) {
    const RUN: usize = 48;
    let scale_run: [f32; RUN] = std::array::from_fn(|j| scale[j % 3]);
    let shift_run: [f32; RUN] = std::array::from_fn(|j| shift[j % 3]);
    let mut src = rgb.chunks_exact(RUN);
    let mut out = dst.chunks_exact_mut(RUN);
    for (d, s) in (&mut out).zip(&mut src) {
        for j in 0..RUN {
            d[j] = T::from_f32(s[j] as f32 * scale_run[j] - shift_run[j]);
        }
    }
    let rest = out.into_remainder().iter_mut().zip(src.remainder());
    for (j, (d, &s)) in rest.enumerate() {
        *d = T::from_f32(s as f32 * scale_run[j] - shift_run[j]);
    }
}

/// Mean over rows of `[rows][n]`, in f64.
fn mean_rows<T: Elem>(x: &[T], n: usize, out: &mut [f32]) {
    let rows = x.len() / n;
    let mut acc = vec![0f64; n];
    for row in x.chunks_exact(n) {
        acc.iter_mut().zip(row).for_each(|(a, v)| *a += v.to_f32() as f64);
    }
    out.iter_mut().zip(&acc).for_each(|(o, a)| *o = (*a / rows as f64) as f32);
}

#[cfg(test)]
mod tests {
    use super::elem::bf16;
    use super::*;

    /// The runs of 48 give the pixel-at-a-time loop's bits, the tail too.
    #[test]
    fn normalise_in_runs_is_the_pixel_loop_bit_for_bit() {
        let (scale, shift) = ([0.017, 0.0175, 0.0174], [2.1, 2.03, 1.8]);
        let rgb: Vec<u8> = (0..3 * 37).map(|i| (i * 97 % 256) as u8).collect();
        let mut want = vec![0f32; rgb.len()];
        for (d, s) in want.chunks_exact_mut(3).zip(rgb.chunks_exact(3)) {
            for c in 0..3 {
                d[c] = s[c] as f32 * scale[c] - shift[c];
            }
        }
        let mut got = vec![f32::NAN; rgb.len()];
        normalise(&rgb, (scale, shift), &mut got);
        assert_eq!(
            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        let mut got16 = vec![bf16::from_f32(f32::NAN); rgb.len()];
        normalise(&rgb, (scale, shift), &mut got16);
        assert!(got16.iter().zip(&want).all(|(g, w)| g.to_f32().to_bits() == bf16::from_f32(*w).to_f32().to_bits()));
    }
}
