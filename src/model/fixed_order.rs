//! Convolution and pooling whose every output is one fixed sequence of IEEE
//! operations, whatever the CPU, its vector width, its caches or the number
//! of threads: the random initialiser's calibration runs the network on
//! these (see `init.rs`), so `random:SEED` names the same bytes everywhere.
//!
//! Why not Candle's CPU ops, as the forward pass used before: Candle's
//! convolution is an im2col + `gemm` crate GEMM, and `gemm` chooses its
//! micro-kernel (AVX-512, AVX2, NEON, scalar) and its blocking from the CPU's
//! features and cache sizes at run time. Each choice sums the products of a
//! dot product in another order, and float addition is not associative, so
//! two machines got other running statistics, hence other weight files.
//!
//! Here each output value is `bias + Σ w·x` with the products taken in the
//! order (input channel, kernel row, kernel column), accumulated in f64 from
//! 0 and rounded to f32 once at the end. The products of two f32 are exact in
//! f64, every addition is one correctly rounded IEEE operation, and Rust
//! neither reorders float additions nor fuses a multiply and an add unless
//! told to, so the compiler may vectorise the loops across output pixels
//! (each lane is its own accumulator) without changing a bit. Threads split
//! the work by whole output planes, never inside a sum.
//!
//! They are plain loops, written so the compiler vectorises them (slices
//! zipped, no index arithmetic inside), compiled three times (SSE2, AVX2,
//! AVX-512) and picked from the CPU at run time: wider vectors hold more
//! lanes, each lane the same sequence, so every width gives the same bits
//! (the tests below run each width this CPU has against the definition).
//! Each plane is computed a band of output rows at a time, every input
//! channel for the band before the next band, so its f64 sums stay in L1
//! instead of streaming the whole plane through the caches once per input
//! channel. A calibration batch of 8 images takes a fraction of a second on
//! 2 cores; the engines stay the fast path for features.

use rayon::prelude::*;

use super::plan::{Hw, Padding};

/// An NCHW tensor's shape.
pub type Shape4 = [usize; 4];

/// A convolution's geometry: `kernel`×`kernel`, `stride`, `padding`;
/// `depthwise` means one input channel per output channel.
#[derive(Debug, Clone, Copy)]
pub struct Conv {
    pub cout: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: Padding,
    pub depthwise: bool,
}

/// Output values per band of rows: 8 KiB of f64 sums, well inside L1.
const BAND: usize = 1024;

/// The vector width a plane is computed with; the same bits at each.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Width {
    Sse2,
    Avx2,
    Avx512,
}

impl Width {
    /// The widest this CPU runs. Detected here, not taken from
    /// `engine::simd`: the model knows no engine (tests/test_layout.rs), and
    /// `FRUITS_SIMD` has nothing to cap where every width gives the same bits.
    fn detected() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Width::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return Width::Avx2;
            }
        }
        Width::Sse2
    }
}

/// One convolution's operands and geometry, as each plane reads them.
struct Job<'a> {
    x: &'a [f32],
    weight: &'a [f32],
    shape: Shape4,
    conv: Conv,
    /// The output's height and width.
    out: Hw,
    /// Zeros before the first row and before the first column.
    pad_y: usize,
    pad_x: usize,
}

/// `x` (NCHW, `shape`) convolved with `weight` ((cout, cin/groups, k, k)
/// laid out row-major) plus `bias` (cout): the output and its shape.
pub fn conv2d(x: &[f32], shape: Shape4, weight: &[f32], bias: &[f32], conv: Conv) -> (Vec<f32>, Shape4) {
    conv2d_at(Width::detected(), x, shape, weight, bias, conv)
}

fn conv2d_at(width: Width, x: &[f32], shape: Shape4, weight: &[f32], bias: &[f32], conv: Conv) -> (Vec<f32>, Shape4) {
    let [n, cin, h, w] = shape;
    let Conv { cout, kernel: k, stride, padding, depthwise } = conv;
    let in_per_group = if depthwise { 1 } else { cin };
    assert_eq!(x.len(), n * cin * h * w, "input size");
    assert_eq!(weight.len(), cout * in_per_group * k * k, "weight size");
    assert_eq!(bias.len(), cout, "bias size");
    assert!(!depthwise || cin == cout, "a depthwise convolution keeps its channels");
    let out = Hw { h, w }.conv(k, stride, padding);
    let (pad_y, pad_x) = (padding.begin(k, stride, h), padding.begin(k, stride, w));
    let job = Job { x, weight, shape, conv, out, pad_y, pad_x };
    let mut y = vec![0f32; n * cout * out.h * out.w];
    y.par_chunks_mut(out.h * out.w).enumerate().for_each(|(plane, y)| {
        let (img, co) = (plane / cout, plane % cout);
        let mut acc = vec![0f64; out.h * out.w];
        match width {
            // SAFETY: the CPU has the features each function is compiled
            // for (Width::detected, or the tests' `available`).
            #[cfg(target_arch = "x86_64")]
            Width::Avx512 => unsafe { plane_avx512(&job, img, co, &mut acc) },
            #[cfg(target_arch = "x86_64")]
            Width::Avx2 => unsafe { plane_avx2(&job, img, co, &mut acc) },
            _ => plane_sums(&job, img, co, &mut acc),
        }
        let b = bias[co] as f64;
        for (o, a) in y.iter_mut().zip(&acc) {
            *o = (a + b) as f32;
        }
    });
    (y, [n, cout, out.h, out.w])
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn plane_avx512(job: &Job, img: usize, co: usize, acc: &mut [f64]) {
    plane_sums(job, img, co, acc)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn plane_avx2(job: &Job, img: usize, co: usize, acc: &mut [f64]) {
    plane_sums(job, img, co, acc)
}

/// Σ w·x of output plane (`img`, `co`) into `acc` (zeros, out.h × out.w):
/// per output, the products in (input channel, kernel row, kernel column)
/// order, whatever the band.
#[inline(always)]
fn plane_sums(job: &Job, img: usize, co: usize, acc: &mut [f64]) {
    let [_, cin, h, w] = job.shape;
    let Conv { kernel: k, stride, depthwise, .. } = job.conv;
    let Hw { h: oh, w: ow } = job.out;
    let in_per_group = if depthwise { 1 } else { cin };
    let inputs = if depthwise { co..co + 1 } else { 0..cin };
    // The output columns whose tap `kx` lands inside the image: ox·stride + kx - pad ∈ [0, w).
    let columns = |kx: usize| -> (usize, usize) {
        let lo = job.pad_x.saturating_sub(kx).div_ceil(stride);
        let hi = ((w + job.pad_x).saturating_sub(kx)).div_ceil(stride).min(ow);
        (lo, hi.max(lo))
    };
    let band = (BAND / ow).max(1);
    if k == 1 && stride == 1 && job.pad_x == 0 && job.pad_y == 0 {
        // Pointwise (most of the work): a band of output rows is one run of
        // the input plane, the same values the loops below would pair.
        for top in (0..oh * ow).step_by(band * ow) {
            let dst = &mut acc[top..(top + band * ow).min(oh * ow)];
            for (g, ci) in inputs.clone().enumerate() {
                let wv = job.weight[co * in_per_group + g] as f64;
                for (d, &v) in dst.iter_mut().zip(&job.x[(img * cin + ci) * h * w + top..]) {
                    *d += wv * v as f64;
                }
            }
        }
        return;
    }
    for top in (0..oh).step_by(band) {
        for (g, ci) in inputs.clone().enumerate() {
            let src = &job.x[(img * cin + ci) * h * w..][..h * w];
            for ky in 0..k {
                for kx in 0..k {
                    let wv = job.weight[((co * in_per_group + g) * k + ky) * k + kx] as f64;
                    let (lo, hi) = columns(kx);
                    if lo == hi {
                        continue;
                    }
                    for oy in top..(top + band).min(oh) {
                        let Some(iy) = (oy * stride + ky).checked_sub(job.pad_y).filter(|&iy| iy < h) else { continue };
                        // The first tap of this row lands at column `start`.
                        let start = lo * stride + kx - job.pad_x;
                        let row = &src[iy * w + start..(iy + 1) * w];
                        let dst = &mut acc[oy * ow + lo..oy * ow + hi];
                        if stride == 1 {
                            for (d, &v) in dst.iter_mut().zip(row) {
                                *d += wv * v as f64;
                            }
                        } else {
                            for (d, &v) in dst.iter_mut().zip(row.iter().step_by(stride)) {
                                *d += wv * v as f64;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The mean of each (image, channel) plane of `x`, summed in f64 in pixel
/// order: (n, c) values.
pub fn mean_pool(x: &[f32], [n, c, h, w]: Shape4) -> Vec<f32> {
    assert_eq!(x.len(), n * c * h * w, "input size");
    x.chunks(h * w).map(|plane| (plane.iter().map(|&v| v as f64).sum::<f64>() / (h * w) as f64) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Zeros (before, after) an axis of `x`: PyTorch's `p` on both sides,
    /// or TensorFlow's SAME as its documentation words it (ceil(x / s)
    /// outputs, the odd zero after).
    fn zeros(c: &Conv, x: usize) -> (usize, usize) {
        match c.padding {
            Padding::Symmetric(p) => (p, p),
            Padding::Same => {
                let out = x.div_ceil(c.stride);
                let total = ((out - 1) * c.stride + c.kernel).max(x) - x;
                (total / 2, total - total / 2)
            }
        }
    }

    /// The textbook definition, one output at a time, with the same order
    /// of products: an independent reading of the index arithmetic above.
    fn naive(x: &[f32], [n, cin, h, w]: Shape4, weight: &[f32], bias: &[f32], c: Conv) -> Vec<f32> {
        let ((top, bottom), (left, right)) = (zeros(&c, h), zeros(&c, w));
        let oh = (h + top + bottom - c.kernel) / c.stride + 1;
        let ow = (w + left + right - c.kernel) / c.stride + 1;
        let ipg = if c.depthwise { 1 } else { cin };
        let mut out = Vec::new();
        for img in 0..n {
            for co in 0..c.cout {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut s = 0f64;
                        for g in 0..ipg {
                            let ci = if c.depthwise { co } else { g };
                            for ky in 0..c.kernel {
                                for kx in 0..c.kernel {
                                    let iy = (oy * c.stride + ky) as isize - top as isize;
                                    let ix = (ox * c.stride + kx) as isize - left as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    let xv = x[((img * cin + ci) * h + iy as usize) * w + ix as usize] as f64;
                                    s += weight[((co * ipg + g) * c.kernel + ky) * c.kernel + kx] as f64 * xv;
                                }
                            }
                        }
                        out.push((s + bias[co] as f64) as f32);
                    }
                }
            }
        }
        out
    }

    fn values(len: usize, salt: u32) -> Vec<f32> {
        (0..len as u32).map(|i| ((i.wrapping_mul(2_654_435_761) ^ salt) % 2001) as f32 / 1000.0 - 1.0).collect()
    }

    /// Every width this CPU runs, saying loudly which it cannot.
    fn available() -> Vec<Width> {
        let best = Width::detected();
        let all = [Width::Sse2, Width::Avx2, Width::Avx512];
        let n = all.iter().position(|&w| w == best).expect("a width") + 1;
        if n < all.len() {
            eprintln!("fixed_order: this CPU has no {:?}: those widths are not checked here", &all[n..]);
        }
        all[..n].to_vec()
    }

    #[test]
    fn equals_the_definition_bit_for_bit() {
        for &(cin, cout, k, stride, depthwise, h, w) in &[
            (3, 4, 3, 2, false, 9, 8),
            (5, 5, 3, 1, true, 7, 7),
            (6, 6, 5, 2, true, 11, 10),
            (4, 3, 1, 1, false, 5, 6),
            (2, 2, 5, 1, true, 3, 4),    // kernel larger than the image
            (3, 2, 3, 1, false, 40, 40), // two bands of rows
            (2, 2, 3, 2, true, 3, 2101), // rows wider than a band
        ] {
            for padding in [Padding::Symmetric(((stride - 1) + (k - 1)) / 2), Padding::Same] {
                let conv = Conv { cout, kernel: k, stride, padding, depthwise };
                let shape = [2, cin, h, w];
                let x = values(2 * cin * h * w, 7);
                let wt = values(cout * if depthwise { 1 } else { cin } * k * k, 11);
                let b = values(cout, 13);
                let want = naive(&x, shape, &wt, &b, conv);
                for width in available() {
                    let (got, [_, c, oh, ow]) = conv2d_at(width, &x, shape, &wt, &b, conv);
                    assert_eq!(got.len(), 2 * c * oh * ow);
                    assert_eq!(got, want, "{width:?} cin {cin} k {k} stride {stride} dw {depthwise} {padding:?}");
                }
            }
        }
    }

    #[test]
    fn mean_pool_is_the_plane_mean() {
        let x = [1.0, 2.0, 3.0, 6.0, -1.0, 1.0, 0.5, 0.5];
        assert_eq!(mean_pool(&x, [1, 2, 2, 2]), vec![3.0, 0.25]);
    }
}
