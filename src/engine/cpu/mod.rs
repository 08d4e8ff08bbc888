//! The CPU engine: a [`Plan`] run one image per thread on NHWC buffers
//! reused from image to image, but for the last, small blocks, which a
//! thread runs on several of its images at once ([`Stack`]).
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

pub mod amx;
pub mod clock;
pub mod dense;
pub mod depthwise;
pub mod elem;
pub mod fused;
pub mod gemm;
#[cfg(target_arch = "x86_64")]
pub mod lanes;

use std::sync::Mutex;

use rayon::prelude::*;

use crate::engine::cpu_id::l2_budget;
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
    /// Where a task's images are stacked ([`Stack`]).
    pub stack: Stack,
    /// Thread time per block, then the head's, while it is on.
    pub clock: clock::Clock,
    /// Buffers of finished tasks, handed to the next ones: grown to the
    /// largest activation on the first images, then reused.
    spare: Mutex<Vec<Workspace<T>>>,
}

/// The blocks run on several images at once: from block `from` on, every
/// block's images are small (a fused block's no taller than its bands, an
/// other block's input within the L2 budget), so a task stacks `images`
/// images there and runs the rest, head included, on all of them at once
/// ([`Fused::run_images`], [`Net::run_layers`]). Before, each image runs
/// alone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stack {
    pub from: usize,
    /// The activation's size where stacking starts: `hw × ch` an image.
    pub hw: Hw,
    pub ch: usize,
    pub images: usize,
}

/// One task's buffers.
#[derive(Default, Debug)]
struct Workspace<T> {
    bufs: [Vec<T>; 3],
    cols: Vec<T>,
    bands: Bands<T>,
    small: Vec<T>,
    pooled: Vec<f32>,
    /// The stacked images' activations, as `bufs` holds one image's.
    stacked: [Vec<T>; 3],
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
        let blocks: Vec<Block<T>> = plan.blocks.iter().map(block).collect();
        let l2_bytes = crate::engine::cpu_id::CpuId::get().l2;
        let stack = Stack::find(&blocks, plan.resolution, l2_bytes, if fuse { STACK_IMAGES } else { 1 });
        Self {
            resolution: plan.resolution,
            normalise: plan.input.scale_shift(),
            blocks,
            head: Dense::new(&plan.head),
            head_order: plan.head_order,
            l2_bytes,
            stack,
            clock: clock::Clock::new(plan.blocks.len() + 1),
            spare: Mutex::new(Vec::new()),
        }
    }

    pub fn feature_dim(&self) -> usize {
        self.head.weight.n
    }

    /// `images` is `n × [r][r][3]` RGB8 (as the preprocessing makes it);
    /// returns `n × feature_dim`. Images are spread over rayon's pool, up
    /// to [`Stack::images`] a task but at least two tasks a thread where
    /// there are images enough (a 16-core node's batch of 32 runs an image a
    /// task, not 4 tasks of 8 and 12 idle cores).
    pub fn run(&self, images: &[u8]) -> Vec<f32> {
        let px = 3 * self.resolution * self.resolution;
        let g = images.len() / px / (2 * rayon::current_num_threads());
        self.run_stacked(images, g.clamp(1, self.stack.images))
    }

    /// [`Net::run`], `g` images a task (stacked from [`Stack::from`] on):
    /// the same bits whatever `g`.
    pub fn run_stacked(&self, images: &[u8], g: usize) -> Vec<f32> {
        let px = 3 * self.resolution * self.resolution;
        assert_eq!(images.len() % px, 0, "input is not a whole number of {}² RGB images", self.resolution);
        let fd = self.feature_dim();
        let mut out = vec![0f32; images.len() / px * fd];
        out.par_chunks_mut(g * fd).zip(images.par_chunks(g * px)).for_each(|(o, imgs)| {
            let mut ws = self.spare.lock().unwrap().pop().unwrap_or_default();
            self.run_task(imgs, &mut ws, o);
            self.spare.lock().unwrap().push(ws);
        });
        out
    }

    /// One task's images: each alone up to [`Stack::from`], then stacked.
    fn run_task(&self, rgb: &[u8], ws: &mut Workspace<T>, features: &mut [f32]) {
        let Stack { from, hw, ch, .. } = self.stack;
        let n = hw.h * hw.w * ch;
        let images = rgb.len() / (3 * self.resolution * self.resolution);
        need(&mut ws.stacked[0], images * n);
        for (j, img) in rgb.chunks_exact(rgb.len() / images).enumerate() {
            let cur = self.run_image(img, ws);
            let Workspace { bufs, stacked, .. } = ws;
            stacked[0][j * n..(j + 1) * n].copy_from_slice(&bufs[cur][..n]);
        }
        let Workspace { stacked, bands, cols, .. } = ws;
        let (cur, hw, ch) = self.run_blocks(from..self.blocks.len(), stacked, (0, hw, ch), images, bands, cols);
        let x = std::mem::take(&mut ws.stacked[cur]);
        let t = self.clock.start();
        self.head(&x[..images * hw.h * hw.w * ch], images, hw, ch, ws, features);
        self.clock.stop(self.blocks.len(), t);
        ws.stacked[cur] = x;
    }

    /// Fused block `f` on `images` stacked `hw × ch` activations in
    /// `bufs[cur]`, one image in bands ([`Fused::run`]), several whole
    /// ([`Fused::run_images`]); returns the buffer its output went to.
    #[allow(clippy::too_many_arguments)]
    fn run_fused(
        &self,
        f: &Fused<T>,
        skip: bool,
        bufs: &mut [Vec<T>; 3],
        cur: usize,
        hw: Hw,
        ch: usize,
        images: usize,
        bands: &mut Bands<T>,
    ) -> usize {
        let dst = (cur + 1) % 3;
        let o = f.out_hw(hw);
        let n_out = images * o.h * o.w * f.cout();
        let mut out = std::mem::take(&mut bufs[dst]);
        need(&mut out, n_out);
        let x = &bufs[cur][..images * hw.h * hw.w * ch];
        if images == 1 {
            f.run(x, hw, skip, &mut out[..n_out], bands, self.l2_bytes);
        } else {
            f.run_images(x, images, hw, skip, &mut out[..n_out], bands, self.l2_bytes);
        }
        bufs[dst] = out;
        dst
    }

    /// One image, normalised, through the blocks before [`Stack::from`];
    /// returns the buffer of `ws.bufs` its activation is in.
    fn run_image(&self, rgb: &[u8], ws: &mut Workspace<T>) -> usize {
        let r = self.resolution;
        let Workspace { bufs, cols, bands, .. } = ws;
        // The input, normalised, into buffer 0 (already HWC).
        need(&mut bufs[0], r * r * 3);
        normalise(rgb, self.normalise, &mut bufs[0][..r * r * 3]);
        self.run_blocks(0..self.stack.from, bufs, (0, Hw { h: r, w: r }, 3), 1, bands, cols).0
    }

    /// The blocks of `range` on `images` stacked activations: `at` is the
    /// buffer of `bufs` holding them and their size an image, as is what it
    /// returns.
    fn run_blocks(
        &self,
        range: std::ops::Range<usize>,
        bufs: &mut [Vec<T>; 3],
        at: (usize, Hw, usize),
        images: usize,
        bands: &mut Bands<T>,
        cols: &mut Vec<T>,
    ) -> (usize, Hw, usize) {
        let (mut cur, mut hw, mut ch) = at;
        for (i, block) in self.blocks.iter().enumerate().take(range.end).skip(range.start) {
            let t = self.clock.start();
            (cur, hw, ch) = match &block.fused {
                Some(f) => (self.run_fused(f, block.skip, bufs, cur, hw, ch, images, bands), f.out_hw(hw), f.cout()),
                None => Self::run_layers(block, bufs, cur, hw, ch, images, cols),
            };
            self.clock.stop(i, t);
        }
        (cur, hw, ch)
    }

    /// `block`'s layers one by one on `images` stacked `hw × ch`
    /// activations in `bufs[cur]`: a 1×1 layer multiplies every image's rows
    /// in one GEMM, the others run image by image. Returns the buffer the
    /// output went to and its size an image.
    #[allow(clippy::too_many_arguments)]
    fn run_layers(
        block: &Block<T>,
        bufs: &mut [Vec<T>; 3],
        mut cur: usize,
        mut hw: Hw,
        mut ch: usize,
        images: usize,
        cols: &mut Vec<T>,
    ) -> (usize, Hw, usize) {
        let input = cur;
        for (li, layer) in block.layers.iter().enumerate() {
            let last = li + 1 == block.layers.len();
            // Never overwrite the block input while the skip needs it.
            let dst = (0..3).find(|&b| b != cur && b != input).unwrap();
            let o = layer.out_hw(hw);
            let (n_in, n_out) = (hw.h * hw.w * ch, o.h * o.w * layer.cout());
            // Taken out for the layer so the others can be borrowed beside it.
            let mut out = std::mem::take(&mut bufs[dst]);
            need(&mut out, images * n_out);
            let src = &bufs[cur][..images * n_in];
            let skip = (last && block.skip).then(|| &bufs[input][..images * n_out]);
            let y = &mut out[..images * n_out];
            match layer {
                Layer::Dense(d) => dense_images(d, src, images, hw, ch, skip, y, cols),
                Layer::Depthwise(d) => {
                    for (x, y) in src.chunks_exact(n_in).zip(y.chunks_exact_mut(n_out)) {
                        d.run(x, hw, y);
                    }
                    if let Some(s) = skip {
                        y.iter_mut().zip(s).for_each(|(y, x)| *y = T::from_f32(y.to_f32() + x.to_f32()));
                    }
                }
            }
            bufs[dst] = out;
            cur = dst;
            hw = o;
            ch = layer.cout();
        }
        (cur, hw, ch)
    }

    /// The head on `images` stacked `hw × ch` activations, their features
    /// into `features`.
    fn head(&self, x: &[T], images: usize, hw: Hw, ch: usize, ws: &mut Workspace<T>, features: &mut [f32]) {
        let Workspace { bufs, cols, small, pooled, .. } = ws;
        let (pixels, n) = (hw.h * hw.w, self.head.weight.n);
        match self.head_order {
            Head::BeforePool => {
                let y = &mut bufs[0];
                need(y, images * pixels * n);
                let y = &mut y[..images * pixels * n];
                dense_images(&self.head, x, images, hw, ch, None, y, cols);
                for (y, f) in y.chunks_exact(pixels * n).zip(features.chunks_exact_mut(n)) {
                    mean_rows(y, n, f);
                }
            }
            Head::AfterPool => {
                for (x, f) in x.chunks_exact(pixels * ch).zip(features.chunks_exact_mut(n)) {
                    pooled.resize(ch, 0.0);
                    mean_rows(x, ch, pooled);
                    need(small, ch + n);
                    let (p, y) = small.split_at_mut(ch);
                    p.iter_mut().zip(pooled.iter()).for_each(|(p, &v)| *p = T::from_f32(v));
                    dense(&self.head, p, Hw { h: 1, w: 1 }, ch, None, &mut y[..n], cols);
                    f.iter_mut().zip(&y[..n]).for_each(|(f, v)| *f = v.to_f32());
                }
            }
        }
    }
}

/// [`dense`] on `images` stacked `hw × ch` activations: a 1×1 layer
/// multiplies every image's rows in one GEMM (the same bits: the GEMM
/// computes each row alone), a larger one runs image by image.
#[allow(clippy::too_many_arguments)]
fn dense_images<T: Elem>(
    d: &Dense<T>,
    x: &[T],
    images: usize,
    hw: Hw,
    ch: usize,
    skip: Option<&[T]>,
    y: &mut [T],
    cols: &mut Vec<T>,
) {
    if d.is_plain_gemm() {
        return dense(d, x, Hw { h: images * hw.h, w: hw.w }, ch, skip, y, cols);
    }
    let (n_in, n_out) = (x.len() / images, y.len() / images);
    for (j, (x, y)) in x.chunks_exact(n_in).zip(y.chunks_exact_mut(n_out)).enumerate() {
        dense(d, x, hw, ch, skip.map(|s| &s[j * n_out..(j + 1) * n_out]), y, cols);
    }
}

/// Images a task stacks where its blocks allow ([`Stack`]): the late
/// blocks' 1×1 weights (1.2 MB a block in MobileNetV2's 7 × 7 stage, more
/// than a core's L2) stream from L3 once for this many images, not once an
/// image. Measured on Zen 3 (benches/README), batches of 32, against one
/// image a task in the same process: 2 → 1.02×, 4 → 1.04×, 8 → 1.04×,
/// 16 → 1.03× for MobileNetV2; 4 → 1.05×, 8 → 1.08× for EfficientNet-Lite0.
/// The features are the same bits whatever the number: it moves speed only.
const STACK_IMAGES: usize = 8;

impl Stack {
    /// The first block from which every block's images are small;
    /// `images` (1 where nothing is stacked) a task.
    fn find<T: Elem>(blocks: &[Block<T>], resolution: usize, l2: usize, images: usize) -> Self {
        // Each block's input size.
        let mut sizes = Vec::with_capacity(blocks.len() + 1);
        let (mut hw, mut ch) = (Hw { h: resolution, w: resolution }, 3);
        for block in blocks {
            sizes.push((hw, ch));
            for layer in &block.layers {
                (hw, ch) = (layer.out_hw(hw), layer.cout());
            }
        }
        sizes.push((hw, ch));
        let small = |b: &Block<T>, (i, ch): (Hw, usize)| match &b.fused {
            Some(f) => f.band_rows(i, l2) >= f.out_hw(i).h,
            None => i.h * i.w * ch * std::mem::size_of::<T>() <= l2_budget(l2),
        };
        let mut from = blocks.len();
        while images > 1 && from > 0 && small(&blocks[from - 1], sizes[from - 1]) {
            from -= 1;
        }
        let (hw, ch) = sizes[from];
        Self { from, hw, ch, images }
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
