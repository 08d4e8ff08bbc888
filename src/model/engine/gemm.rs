//! Dense convolution as a GEMM over pixels, with the epilogue fused:
//!
//! `out[p, n] = act(bias[n] + Σ_k a[p, k] · w[k, n]) (+ skip[p, n])`
//!
//! Activations are NHWC, so a 1×1 convolution's input *is* `a` (one row per
//! pixel) and a k×k convolution's `a` is an im2col tile. Weights are packed
//! once, at load, into column panels of [`NR`] so the micro-kernel reads them
//! sequentially; bias, activation and the residual add happen while the tile
//! is still in registers, so an activation is written once and never re-read
//! by a separate pass.

use crate::model::layers::Act;

/// Panel width: two AVX-512 vectors of f32.
pub const NR: usize = 32;
/// Rows (pixels) per micro-kernel call: 12 × 2 accumulators + 2 weight
/// vectors + 1 broadcast fit the 32 vector registers.
pub const MR: usize = 12;
/// Rows per cache block: a block of `a` (≤ 120 × 960 f32 = 450 KiB) and one
/// weight panel stay in L2 while every panel passes over them.
const ROW_BLOCK: usize = 10 * MR;

/// Weights of one dense convolution, BatchNorm folded, packed for [`gemm`].
#[derive(Debug, Clone)]
pub struct Packed {
    /// Reduction length: cin · k · k.
    pub k: usize,
    /// Output channels.
    pub n: usize,
    /// `ceil(n / NR)` panels, each `[k][NR]`, zero beyond `n`.
    panels: Vec<f32>,
    /// `ceil(n / NR) · NR`, zero beyond `n`.
    bias: Vec<f32>,
}

impl Packed {
    /// `w` is row-major `[k][n]`.
    pub fn new(k: usize, n: usize, w: &[f32], bias: &[f32]) -> Self {
        assert_eq!(w.len(), k * n);
        assert_eq!(bias.len(), n);
        let np = n.div_ceil(NR);
        let mut panels = vec![0f32; np * k * NR];
        for (kk, row) in w.chunks_exact(n).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                panels[(j / NR) * k * NR + kk * NR + j % NR] = v;
            }
        }
        let mut b = vec![0f32; np * NR];
        b[..n].copy_from_slice(bias);
        Self { k, n, panels, bias: b }
    }

    fn panel(&self, j: usize) -> &[f32] {
        &self.panels[j * self.k * NR..(j + 1) * self.k * NR]
    }
}

/// `rows` pixels: `a` is `[rows][lda]` (first `w.k` used), `out` and `skip`
/// are `[rows][w.n]`.
pub fn gemm(a: &[f32], lda: usize, rows: usize, w: &Packed, act: Act, skip: Option<&[f32]>, out: &mut [f32]) {
    if rows == 0 {
        return;
    }
    assert!(lda >= w.k && a.len() >= (rows - 1) * lda + w.k);
    assert!(out.len() >= rows * w.n);
    if let Some(s) = skip {
        assert!(s.len() >= rows * w.n);
    }
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: the CPU has AVX-512F (checked above); bounds asserted above
        // and kept by `drive`.
        unsafe { drive(a, lda, rows, w, act, skip, out, avx512::kernel) };
        return;
    }
    // SAFETY: as above; the portable kernel needs no CPU feature.
    unsafe { drive(a, lda, rows, w, act, skip, out, portable::kernel) };
}

/// One micro-kernel call: `rows ≤ MR` rows × one panel, `cols ≤ NR` of it valid.
type Kernel = unsafe fn(rows: usize, k: usize, a: *const f32, lda: usize, w: *const f32, bias: *const f32, tile: Tile);

/// Where a tile's results go, and what happens to them on the way.
#[derive(Clone, Copy)]
pub struct Tile {
    out: *mut f32,
    skip: *const f32,
    ld: usize,
    cols: usize,
    act: Act,
}

#[allow(clippy::too_many_arguments)]
unsafe fn drive(
    a: &[f32],
    lda: usize,
    rows: usize,
    w: &Packed,
    act: Act,
    skip: Option<&[f32]>,
    out: &mut [f32],
    kernel: Kernel,
) {
    let np = w.n.div_ceil(NR);
    let skip_ptr = skip.map_or(std::ptr::null(), |s| s.as_ptr());
    for r0 in (0..rows).step_by(ROW_BLOCK) {
        let r1 = (r0 + ROW_BLOCK).min(rows);
        for j in 0..np {
            let panel = w.panel(j).as_ptr();
            let bias = w.bias[j * NR..].as_ptr();
            let c0 = j * NR;
            let cols = (w.n - c0).min(NR);
            for i in (r0..r1).step_by(MR) {
                let m = (r1 - i).min(MR);
                let off = i * w.n + c0;
                let tile = Tile {
                    out: out.as_mut_ptr().add(off),
                    skip: if skip_ptr.is_null() { skip_ptr } else { skip_ptr.add(off) },
                    ld: w.n,
                    cols,
                    act,
                };
                kernel(m, w.k, a.as_ptr().add(i * lda), lda, panel, bias, tile);
            }
        }
    }
}

/// The same arithmetic with plain loops: every CPU without AVX-512, and the
/// reference the AVX-512 kernel is tested against.
mod portable {
    use super::*;

    pub unsafe fn kernel(rows: usize, k: usize, a: *const f32, lda: usize, w: *const f32, bias: *const f32, t: Tile) {
        let mut acc = [[0f32; NR]; MR];
        for kk in 0..k {
            let wrow = std::slice::from_raw_parts(w.add(kk * NR), NR);
            for (i, acc) in acc.iter_mut().enumerate().take(rows) {
                let av = *a.add(i * lda + kk);
                for (x, &wv) in acc.iter_mut().zip(wrow) {
                    *x += av * wv;
                }
            }
        }
        let bias = std::slice::from_raw_parts(bias, NR);
        for (i, acc) in acc.iter().enumerate().take(rows) {
            let out = std::slice::from_raw_parts_mut(t.out.add(i * t.ld), t.cols);
            for (j, o) in out.iter_mut().enumerate() {
                let mut v = t.act.apply_one(acc[j] + bias[j]);
                if !t.skip.is_null() {
                    v += *t.skip.add(i * t.ld + j);
                }
                *o = v;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::*;
    use std::arch::x86_64::*;

    pub fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
    }

    /// Dispatches on the row count so every loop below has a constant trip
    /// count and the accumulators live in registers.
    pub unsafe fn kernel(rows: usize, k: usize, a: *const f32, lda: usize, w: *const f32, bias: *const f32, t: Tile) {
        macro_rules! rows {
            ($($m:literal)*) => {
                match rows {
                    $($m => tile::<$m>(k, a, lda, w, bias, t),)*
                    _ => unreachable!("at most MR rows"),
                }
            };
        }
        rows!(1 2 3 4 5 6 7 8 9 10 11 12)
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const M: usize>(k: usize, a: *const f32, lda: usize, w: *const f32, bias: *const f32, t: Tile) {
        let mut acc = [[_mm512_setzero_ps(); 2]; M];
        for kk in 0..k {
            let w0 = _mm512_loadu_ps(w.add(kk * NR));
            let w1 = _mm512_loadu_ps(w.add(kk * NR + 16));
            for (i, acc) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(i * lda + kk));
                acc[0] = _mm512_fmadd_ps(av, w0, acc[0]);
                acc[1] = _mm512_fmadd_ps(av, w1, acc[1]);
            }
        }
        let b = [_mm512_loadu_ps(bias), _mm512_loadu_ps(bias.add(16))];
        let full = |c: usize| -> __mmask16 {
            if c >= 16 {
                0xffff
            } else {
                ((1u32 << c) - 1) as __mmask16
            }
        };
        let masks = [full(t.cols), full(t.cols.saturating_sub(16))];
        let zero = _mm512_setzero_ps();
        let six = _mm512_set1_ps(6.0);
        for (i, acc) in acc.iter().enumerate() {
            for h in 0..2 {
                if masks[h] == 0 {
                    continue;
                }
                let mut v = _mm512_add_ps(acc[h], b[h]);
                v = match t.act {
                    Act::None => v,
                    Act::Relu => _mm512_max_ps(v, zero),
                    Act::Relu6 => _mm512_min_ps(_mm512_max_ps(v, zero), six),
                };
                let at = i * t.ld + h * 16;
                if !t.skip.is_null() {
                    v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(masks[h], t.skip.add(at)));
                }
                _mm512_mask_storeu_ps(t.out.add(at), masks[h], v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain triple loop, in f64.
    fn reference(
        a: &[f32],
        rows: usize,
        k: usize,
        n: usize,
        w: &[f32],
        bias: &[f32],
        act: Act,
        skip: &[f32],
    ) -> Vec<f32> {
        let mut out = vec![0f32; rows * n];
        for p in 0..rows {
            for j in 0..n {
                let s: f64 = (0..k).map(|kk| a[p * k + kk] as f64 * w[kk * n + j] as f64).sum::<f64>() + bias[j] as f64;
                out[p * n + j] = act.apply_one(s as f32) + skip[p * n + j];
            }
        }
        out
    }

    #[test]
    fn every_kernel_matches_the_triple_loop_on_ragged_shapes() {
        let mut seed = 1u32;
        let mut rnd = move || {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        for &(rows, k, n) in &[(1, 1, 1), (13, 27, 24), (25, 96, 16), (121, 33, 70), (7, 960, 160)] {
            for act in [Act::None, Act::Relu, Act::Relu6] {
                let a: Vec<f32> = (0..rows * k).map(|_| rnd() * 8.0).collect();
                let w: Vec<f32> = (0..k * n).map(|_| rnd()).collect();
                let bias: Vec<f32> = (0..n).map(|_| rnd()).collect();
                let skip: Vec<f32> = (0..rows * n).map(|_| rnd()).collect();
                let want = reference(&a, rows, k, n, &w, &bias, act, &skip);
                let packed = Packed::new(k, n, &w, &bias);
                let mut kernels: Vec<Kernel> = vec![portable::kernel];
                #[cfg(target_arch = "x86_64")]
                if avx512::available() {
                    kernels.push(avx512::kernel);
                }
                for kernel in kernels {
                    // A sentinel after the output shows nothing is written past it.
                    let mut out = vec![f32::NAN; rows * n + 1];
                    unsafe { drive(&a, k, rows, &packed, act, Some(&skip), &mut out, kernel) };
                    assert!(out[rows * n].is_nan(), "wrote past the end");
                    for (x, y) in out.iter().zip(&want) {
                        assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{rows}x{k}x{n} {act:?}: {x} vs {y}");
                    }
                }
            }
        }
    }
}
