//! Depthwise convolution (`groups == channels`) as one Candle custom op.
//!
//! Why: Candle's `conv2d` with `groups = C` splits the input into C tensors
//! and runs C tiny convolutions (`candle-core/src/conv.rs`), tens of µs of
//! overhead per channel per layer. Here one pass over the NCHW planes does
//! the whole layer, with the folded BatchNorm bias and the activation fused
//! in, parallel over (image, channel) planes on rayon.
//!
//! The CPU path is this kernel; other devices take Candle's grouped conv
//! (see [`super::layers::ConvBn`]), which is correct, only slower.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape};
use rayon::prelude::*;

use super::layers::Act;

/// Geometry of one depthwise layer; the weights and bias are the op's inputs.
#[derive(Debug, Clone, Copy)]
pub struct Depthwise {
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    pub act: Act,
}

impl Depthwise {
    pub fn out_size(&self, n: usize) -> usize {
        (n + 2 * self.pad - self.kernel) / self.stride + 1
    }
}

/// The f32 values of a contiguous CPU tensor, for the custom ops.
pub(super) fn contiguous<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        _ => candle_core::bail!("{what} must be f32"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}

impl CustomOp3 for Depthwise {
    fn name(&self) -> &'static str {
        "depthwise-conv2d"
    }

    fn cpu_fwd(
        &self,
        s_x: &CpuStorage,
        l_x: &Layout,
        s_w: &CpuStorage,
        l_w: &Layout,
        s_b: &CpuStorage,
        l_b: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l_x.shape().dims4()?;
        let (wc, one, kh, kw) = l_w.shape().dims4()?;
        if wc != c || one != 1 || kh != self.kernel || kw != self.kernel {
            candle_core::bail!(
                "depthwise: weight {:?} does not fit input {:?} with kernel {}",
                l_w.shape(),
                l_x.shape(),
                self.kernel
            );
        }
        let x = contiguous(s_x, l_x, "depthwise input")?;
        let wt = contiguous(s_w, l_w, "depthwise weight")?;
        let b = contiguous(s_b, l_b, "depthwise bias")?;
        let (ho, wo) = (self.out_size(h), self.out_size(w));
        let mut out = vec![0f32; n * c * ho * wo];
        let k2 = self.kernel * self.kernel;
        out.par_chunks_mut(ho * wo).enumerate().for_each(|(plane, dst)| {
            let ch = plane % c;
            self.plane(
                &x[plane * h * w..(plane + 1) * h * w],
                (h, w),
                &wt[ch * k2..(ch + 1) * k2],
                b[ch],
                dst,
                (ho, wo),
            );
        });
        Ok((CpuStorage::F32(out), Shape::from((n, c, ho, wo))))
    }
}

impl Depthwise {
    /// One channel of one image. Padding is folded into the loop bounds, so
    /// no padded copy of the input is made; with stride 1 the inner loop is a
    /// plain `out += w * in` over a row slice, which the compiler vectorises.
    fn plane(
        &self,
        src: &[f32],
        (h, w): (usize, usize),
        kernel: &[f32],
        bias: f32,
        dst: &mut [f32],
        (ho, wo): (usize, usize),
    ) {
        let (k, s, p) = (self.kernel, self.stride, self.pad);
        for oy in 0..ho {
            let row = &mut dst[oy * wo..(oy + 1) * wo];
            row.fill(bias);
            for ky in 0..k {
                let iy = (oy * s + ky) as isize - p as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                let src_row = &src[iy as usize * w..(iy as usize + 1) * w];
                for kx in 0..k {
                    let wv = kernel[ky * k + kx];
                    // Output columns whose input column ox*s + kx - p is inside [0, w).
                    let lo = (p.saturating_sub(kx)).div_ceil(s);
                    let hi = if w + p > kx { ((w + p - kx - 1) / s + 1).min(wo) } else { 0 };
                    if lo >= hi {
                        continue;
                    }
                    let first = lo * s + kx - p;
                    if s == 1 {
                        let len = hi - lo;
                        for (o, i) in row[lo..hi].iter_mut().zip(&src_row[first..first + len]) {
                            *o += wv * i;
                        }
                    } else {
                        for (j, o) in row[lo..hi].iter_mut().enumerate() {
                            *o += wv * src_row[first + j * s];
                        }
                    }
                }
            }
            self.act.apply_slice(row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// The kernel against Candle's grouped conv2d, which is slow but plainly
    /// correct, over the shapes the models use and some odd ones.
    #[test]
    fn matches_candle_grouped_conv() -> Result<()> {
        let dev = Device::Cpu;
        for &(k, s, h, w) in &[(3, 1, 7, 7), (3, 2, 8, 8), (3, 2, 7, 9), (5, 1, 6, 5), (5, 2, 11, 11), (3, 1, 1, 1)] {
            let c = 5;
            let x = Tensor::randn(0f32, 1.0, (2, c, h, w), &dev)?;
            let wt = Tensor::randn(0f32, 1.0, (c, 1, k, k), &dev)?;
            let b = Tensor::randn(0f32, 1.0, c, &dev)?;
            let pad = ((s - 1) + (k - 1)) / 2;
            for act in [Act::None, Act::Relu, Act::Relu6] {
                let op = Depthwise { kernel: k, stride: s, pad, act };
                let got = x.apply_op3_no_bwd(&wt, &b, &op)?;
                let want = act.apply(&x.conv2d(&wt, pad, s, 1, c)?.broadcast_add(&b.reshape((c, 1, 1))?)?)?;
                assert_eq!(got.dims(), want.dims(), "k{k} s{s} {h}x{w}");
                let diff = (got - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                assert!(diff < 1e-5, "k{k} s{s} {h}x{w} {act:?}: max diff {diff}");
            }
        }
        Ok(())
    }
}
