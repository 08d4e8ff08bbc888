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

pub mod depthwise;
pub mod elem;
pub mod gemm;
#[cfg(target_arch = "x86_64")]
pub mod lanes;

use std::sync::Mutex;

use rayon::prelude::*;

pub use elem::{bf16, Elem};
use gemm::Packed;

use crate::model::plan::{self, Act, Depthwise, Head, Hw, Padding, Plan};

/// A dense convolution of the plan with its weights packed for [`gemm`].
#[derive(Debug, Clone)]
pub struct Dense<T> {
    pub cin: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: Padding,
    pub act: Act,
    /// Reduction order `(ky, kx, ci)`, matching [`im2col`].
    pub weight: Packed<T>,
}

impl<T: Elem> Dense<T> {
    fn new(d: &plan::Dense) -> Self {
        let weight = Packed::new(d.k(), d.cout, &d.weight, &d.bias);
        Self { cin: d.cin, kernel: d.kernel, stride: d.stride, padding: d.padding, act: d.act, weight }
    }

    fn out_hw(&self, i: Hw) -> Hw {
        i.conv(self.kernel, self.stride, self.padding)
    }

    /// A 1×1 convolution whose input rows are already the GEMM's rows.
    fn is_plain_gemm(&self) -> bool {
        self.kernel == 1 && self.stride == 1 && self.weight.k == self.cin
    }
}

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
    /// Buffers of finished tasks, handed to the next ones: grown to the
    /// largest activation on the first images, then reused.
    spare: Mutex<Vec<Workspace<T>>>,
}

/// One task's buffers.
#[derive(Default, Debug)]
struct Workspace<T> {
    bufs: [Vec<T>; 3],
    cols: Vec<T>,
    small: Vec<T>,
    pooled: Vec<f32>,
}

/// Rows of im2col built (and multiplied) at a time: ≤ 120 × 288 f32 stays in L2.
const COL_ROWS: usize = 120;

fn need<T: Elem>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize(n, T::default());
    }
}

impl<T: Elem> Net<T> {
    /// Packs every dense layer of `plan` (copies; `plan` stays usable).
    pub fn new(plan: &Plan) -> Self {
        let layer = |l: &plan::Layer| match l {
            plan::Layer::Dense(d) => Layer::Dense(Dense::new(d)),
            plan::Layer::Depthwise(d) => Layer::Depthwise(d.clone()),
        };
        let blocks =
            plan.blocks.iter().map(|b| Block { layers: b.layers.iter().map(layer).collect(), skip: b.skip }).collect();
        Self {
            resolution: plan.resolution,
            normalise: plan.input.scale_shift(),
            blocks,
            head: Dense::new(&plan.head),
            head_order: plan.head_order,
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

    fn run_image(&self, rgb: &[u8], ws: &mut Workspace<T>, features: &mut [f32]) {
        let r = self.resolution;
        let mut hw = Hw { h: r, w: r };
        let Workspace { bufs, cols, small, pooled } = ws;
        // The input, normalised, into buffer 0 (already HWC).
        need(&mut bufs[0], r * r * 3);
        let (scale, shift) = self.normalise;
        for (dst, src) in bufs[0].chunks_exact_mut(3).zip(rgb.chunks_exact(3)) {
            for c in 0..3 {
                dst[c] = T::from_f32(src[c] as f32 * scale[c] - shift[c]);
            }
        }
        let mut cur = 0; // buffer holding the current activation
        let mut ch = 3;
        for block in &self.blocks {
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

/// Mean over rows of `[rows][n]`, in f64.
fn mean_rows<T: Elem>(x: &[T], n: usize, out: &mut [f32]) {
    let rows = x.len() / n;
    let mut acc = vec![0f64; n];
    for row in x.chunks_exact(n) {
        acc.iter_mut().zip(row).for_each(|(a, v)| *a += v.to_f32() as f64);
    }
    out.iter_mut().zip(&acc).for_each(|(o, a)| *o = (*a / rows as f64) as f32);
}

/// A dense convolution of one `[hw][cin]` image into `out`.
fn dense<T: Elem>(d: &Dense<T>, input: &[T], i: Hw, cin: usize, skip: Option<&[T]>, out: &mut [T], cols: &mut Vec<T>) {
    let o = d.out_hw(i);
    let n = d.weight.n;
    if d.is_plain_gemm() {
        gemm::gemm(input, cin, o.h * o.w, &d.weight, d.act, skip, out);
        return;
    }
    let kdim = d.weight.k;
    need(cols, COL_ROWS * kdim);
    let total = o.h * o.w;
    for p0 in (0..total).step_by(COL_ROWS) {
        let rows = (total - p0).min(COL_ROWS);
        im2col(d, input, i, o, cin, p0, rows, &mut cols[..rows * kdim]);
        let skip = skip.map(|s| &s[p0 * n..(p0 + rows) * n]);
        gemm::gemm(&cols[..rows * kdim], kdim, rows, &d.weight, d.act, skip, &mut out[p0 * n..(p0 + rows) * n]);
    }
}

/// Rows `p0..p0+rows` of the patch matrix: one row per output pixel, the
/// k×k×cin window in `(ky, kx, ci)` order, zeros outside the image and in
/// the row's padding up to the packed k.
#[allow(clippy::too_many_arguments)]
fn im2col<T: Elem>(d: &Dense<T>, input: &[T], i: Hw, o: Hw, cin: usize, p0: usize, rows: usize, cols: &mut [T]) {
    let k = d.kernel;
    let kdim = d.weight.k;
    let (pad_y, pad_x) = (d.padding.begin(k, d.stride, i.h), d.padding.begin(k, d.stride, i.w));
    for (r, row) in cols.chunks_exact_mut(kdim).take(rows).enumerate() {
        let p = p0 + r;
        let (oy, ox) = (p / o.w, p % o.w);
        let x0 = (ox * d.stride) as isize - pad_x as isize;
        let inside_x = x0 >= 0 && x0 as usize + k <= i.w;
        for ky in 0..k {
            let iy = (oy * d.stride + ky) as isize - pad_y as isize;
            let dst = &mut row[ky * k * cin..(ky + 1) * k * cin];
            if iy < 0 || iy as usize >= i.h {
                dst.fill(T::default());
            } else if inside_x {
                // The k pixels of this window row are adjacent in NHWC: one copy.
                let at = (iy as usize * i.w + x0 as usize) * cin;
                dst.copy_from_slice(&input[at..at + k * cin]);
            } else {
                for (kx, dst) in dst.chunks_exact_mut(cin).enumerate() {
                    let ix = x0 + kx as isize;
                    if ix < 0 || ix as usize >= i.w {
                        dst.fill(T::default());
                    } else {
                        dst.copy_from_slice(&input[(iy as usize * i.w + ix as usize) * cin..][..cin]);
                    }
                }
            }
        }
        row[k * k * cin..].fill(T::default());
    }
}
