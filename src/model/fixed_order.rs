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
//! They are plain loops (about 1–2 s for a calibration batch of 8 images on
//! 2 cores): the engines stay the fast path for features.

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

/// `x` (NCHW, `shape`) convolved with `weight` ((cout, cin/groups, k, k)
/// laid out row-major) plus `bias` (cout): the output and its shape.
pub fn conv2d(x: &[f32], shape: Shape4, weight: &[f32], bias: &[f32], conv: Conv) -> (Vec<f32>, Shape4) {
    let [n, cin, h, w] = shape;
    let Conv { cout, kernel: k, stride, padding, depthwise } = conv;
    let in_per_group = if depthwise { 1 } else { cin };
    assert_eq!(x.len(), n * cin * h * w, "input size");
    assert_eq!(weight.len(), cout * in_per_group * k * k, "weight size");
    assert_eq!(bias.len(), cout, "bias size");
    assert!(!depthwise || cin == cout, "a depthwise convolution keeps its channels");
    let Hw { h: oh, w: ow } = Hw { h, w }.conv(k, stride, padding);
    let (pad_y, pad) = (padding.begin(k, stride, h), padding.begin(k, stride, w));
    // The output columns whose tap `kx` lands inside the image: ox·stride + kx - pad ∈ [0, w).
    let columns = |kx: usize| -> (usize, usize) {
        let lo = pad.saturating_sub(kx).div_ceil(stride);
        let hi = ((w + pad).saturating_sub(kx)).div_ceil(stride).min(ow);
        (lo, hi.max(lo))
    };
    let mut out = vec![0f32; n * cout * oh * ow];
    out.par_chunks_mut(oh * ow).enumerate().for_each(|(plane, out)| {
        let (img, co) = (plane / cout, plane % cout);
        let mut acc = vec![0f64; oh * ow];
        let inputs = if depthwise { co..co + 1 } else { 0..cin };
        for (g, ci) in inputs.enumerate() {
            let src = &x[(img * cin + ci) * h * w..][..h * w];
            for ky in 0..k {
                for kx in 0..k {
                    let wv = weight[((co * in_per_group + g) * k + ky) * k + kx] as f64;
                    let (lo, hi) = columns(kx);
                    for oy in 0..oh {
                        let Some(iy) = (oy * stride + ky).checked_sub(pad_y).filter(|&iy| iy < h) else { continue };
                        let row = &src[iy * w..][..w];
                        let dst = &mut acc[oy * ow..][..ow];
                        for ox in lo..hi {
                            dst[ox] += wv * row[ox * stride + kx - pad] as f64;
                        }
                    }
                }
            }
        }
        let b = bias[co] as f64;
        for (o, a) in out.iter_mut().zip(&acc) {
            *o = (a + b) as f32;
        }
    });
    (out, [n, cout, oh, ow])
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

    #[test]
    fn equals_the_definition_bit_for_bit() {
        for &(cin, cout, k, stride, depthwise, h, w) in &[
            (3, 4, 3, 2, false, 9, 8),
            (5, 5, 3, 1, true, 7, 7),
            (6, 6, 5, 2, true, 11, 10),
            (4, 3, 1, 1, false, 5, 6),
            (2, 2, 5, 1, true, 3, 4), // kernel larger than the image
        ] {
            for padding in [Padding::Symmetric(((stride - 1) + (k - 1)) / 2), Padding::Same] {
                let conv = Conv { cout, kernel: k, stride, padding, depthwise };
                let shape = [2, cin, h, w];
                let x = values(2 * cin * h * w, 7);
                let wt = values(cout * if depthwise { 1 } else { cin } * k * k, 11);
                let b = values(cout, 13);
                let (got, [_, c, oh, ow]) = conv2d(&x, shape, &wt, &b, conv);
                assert_eq!(got.len(), 2 * c * oh * ow);
                let want = naive(&x, shape, &wt, &b, conv);
                assert_eq!(got, want, "cin {cin} k {k} stride {stride} dw {depthwise} {padding:?}");
            }
        }
    }

    #[test]
    fn mean_pool_is_the_plane_mean() {
        let x = [1.0, 2.0, 3.0, 6.0, -1.0, 1.0, 0.5, 0.5];
        assert_eq!(mean_pool(&x, [1, 2, 2, 2]), vec![3.0, 0.25]);
    }
}
