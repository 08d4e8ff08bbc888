//! 1×1 convolution + bias + activation as one Candle custom op (CPU).
//!
//! Why: as Candle ops, a 1×1 convolution is a batched matmul, then a
//! broadcast add, then a clamp: three passes over the output and two extra
//! allocations per layer. Here each image is one GEMM
//! (cout × cin) · (cin × h·w) written straight into the output, and bias and
//! activation are applied to that image's output while it is still in cache.
//! Images run in parallel on rayon, each GEMM single-threaded.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape};
use rayon::prelude::*;

use super::depthwise::contiguous;
use super::layers::Act;

#[derive(Debug, Clone, Copy)]
pub struct Pointwise {
    pub act: Act,
}

impl CustomOp3 for Pointwise {
    fn name(&self) -> &'static str {
        "pointwise-conv2d"
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
        let (n, cin, h, w) = l_x.shape().dims4()?;
        let (cout, wcin) = l_w.shape().dims2()?;
        if wcin != cin {
            candle_core::bail!("pointwise: weight {:?} does not fit input {:?}", l_w.shape(), l_x.shape());
        }
        let x = contiguous(s_x, l_x, "pointwise input")?;
        let wt = contiguous(s_w, l_w, "pointwise weight")?;
        let b = contiguous(s_b, l_b, "pointwise bias")?;
        let hw = h * w;
        let mut out = vec![0f32; n * cout * hw];
        out.par_chunks_mut(cout * hw).enumerate().for_each(|(i, dst)| {
            let src = &x[i * cin * hw..(i + 1) * cin * hw];
            // SAFETY: dst is cout×hw, wt cout×cin, src cin×hw, all row-major
            // and in bounds for the strides given.
            unsafe {
                gemm::gemm(
                    cout,
                    hw,
                    cin,
                    dst.as_mut_ptr(),
                    1,
                    hw as isize,
                    false,
                    wt.as_ptr(),
                    1,
                    cin as isize,
                    src.as_ptr(),
                    1,
                    hw as isize,
                    0.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            for (row, bias) in dst.chunks_mut(hw).zip(b) {
                row.iter_mut().for_each(|v| *v += bias);
                self.act.apply_slice(row);
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((n, cout, h, w))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn matches_matmul_bias_act() -> Result<()> {
        let dev = Device::Cpu;
        for &(n, cin, cout, h, w) in &[(1, 3, 5, 4, 4), (3, 16, 24, 7, 5), (2, 8, 1, 1, 1)] {
            let x = Tensor::randn(0f32, 1.0, (n, cin, h, w), &dev)?;
            let wt = Tensor::randn(0f32, 1.0, (cout, cin), &dev)?;
            let b = Tensor::randn(0f32, 1.0, cout, &dev)?;
            for act in [Act::None, Act::Relu, Act::Relu6] {
                let got = x.apply_op3_no_bwd(&wt, &b, &Pointwise { act })?;
                let y = wt.broadcast_matmul(&x.reshape((n, cin, h * w))?)?;
                let want = act.apply(&y.broadcast_add(&b.reshape((cout, 1))?)?.reshape((n, cout, h, w))?)?;
                let diff = (got - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                assert!(diff < 1e-4, "{n}x{cin}x{h}x{w} -> {cout} {act:?}: {diff}");
            }
        }
        Ok(())
    }
}
