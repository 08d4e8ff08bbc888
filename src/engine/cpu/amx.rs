//! The bf16 GEMM on AMX tiles (Intel Sapphire Rapids and later: EC2's m7i,
//! c7i and r7i): `tdpbf16ps` multiplies a 16 × 32 tile of `a` by a 32 × 16
//! tile of weights into 16 × 16 f32 sums, 16,384 flops an instruction.
//!
//! Why: on these cores `vdpbf16ps` retires at half the rate of f32 FMAs, so
//! `--dtype bf16` ran slower than f32 (benches/README, "The CPU engine on
//! other CPUs"); the tiles are the bf16 unit these cores have.
//!
//! Each output is one dot product in k order, the same whatever the rows
//! around it: `a`'s rows are copied into a zero-padded block of 32
//! rows, so a tile always multiplies whole tiles, and the fused blocks'
//! bands and stacked images give the bits of the layers run one by one. The
//! sums differ from `vdpbf16ps`'s in the last bit (the tile adds a pair's
//! even product first, `vdpbf16ps` its odd one): a machine with AMX runs
//! every bf16 GEMM here, and its features are the same on every run.

use std::any::TypeId;

use super::elem::{bf16, Elem};
use crate::engine::simd::{simd, Simd};

/// Reduction elements a tile row holds: 64 bytes of bf16.
const TILE_K: usize = 32;

/// The weight panels' width this GEMM takes: two 16-column tiles (the
/// GEMM's `NR`, which it checks at compile time).
pub const PANEL: usize = 32;

/// One dense layer's packed weights, as [`gemm`] reads them.
pub struct Weights<'a> {
    /// The reduction length `a`'s rows hold (even).
    pub k: usize,
    pub n: usize,
    /// Reduction rows a panel holds: `k` rounded up by [`pad`], zeros past `k`.
    pub kpanel: usize,
    /// `ceil(n / PANEL)` panels, each `[kpanel / 2][PANEL][2]`.
    pub panels: &'a [bf16],
    /// `ceil(n / PANEL) · PANEL`, zero past `n`.
    pub bias: &'a [f32],
}

/// Whether bf16 GEMMs run on AMX here (`FRUITS_SIMD=avx512-bf16` keeps them
/// on `vdpbf16ps`).
pub fn runs<T: Elem>() -> bool {
    TypeId::of::<T>() == TypeId::of::<bf16>() && simd() >= Simd::Amx
}

/// The reduction rows a weight panel is packed with: whole tiles where
/// AMX runs `T`, so a tile's load never reads past the panel.
pub fn pad<T: Elem>(k: usize) -> usize {
    if runs::<T>() {
        k.div_ceil(TILE_K) * TILE_K
    } else {
        k
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{gemm, peak};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::asm;
    use std::arch::x86_64::*;
    use std::cell::RefCell;

    use super::super::lanes::{finish16, mask};
    use super::{bf16, Weights, PANEL as NR, TILE_K};
    use crate::model::plan::Act;

    /// Rows a block of `a` holds: two tiles of 16, each multiplied by both
    /// halves of a 32-wide weight panel (4 accumulator tiles, 2 of `a`, 2
    /// of weights: the 8 tile registers).
    const ROWS: usize = 32;

    /// The tile registers' shapes (`ldtilecfg`'s 64-byte layout, palette
    /// 1): every tile 16 rows of 64 bytes.
    #[repr(C, align(64))]
    struct Config {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        colsb: [u16; 16],
        rows: [u8; 16],
    }

    const CONFIG: Config = {
        let mut c = Config { palette: 1, start_row: 0, reserved: [0; 14], colsb: [0; 16], rows: [0; 16] };
        let mut t = 0;
        while t < 8 {
            c.colsb[t] = 64;
            c.rows[t] = 16;
            t += 1;
        }
        c
    };

    thread_local! {
        /// A block of `a`'s rows, zero-padded to whole tiles, and its sums.
        static SCRATCH: RefCell<(Vec<bf16>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    }

    /// The GEMM's `out[p, n] = act(bias[n] + Σ_k a[p, k] · w[k, n]) (+
    /// skip[p, n])` on AMX: `a` is `[rows][lda]` (first `w.k` used), `out`
    /// and `skip` `[rows][w.n]`.
    ///
    /// # Safety
    /// AMX is usable ([`super::runs`]); `a` holds `(rows - 1) · lda + w.k`
    /// values, `out` and `skip` `rows · w.n`; `w` is as [`Weights`] says.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub unsafe fn gemm(
        a: &[bf16],
        lda: usize,
        rows: usize,
        w: Weights<'_>,
        act: Act,
        skip: Option<&[bf16]>,
        out: &mut [bf16],
    ) {
        let kt = w.kpanel;
        debug_assert!(kt.is_multiple_of(TILE_K) && kt >= w.k);
        SCRATCH.with_borrow_mut(|(block, sums)| {
            block.resize(ROWS * kt, bf16::ZERO);
            sums.resize(ROWS * NR, 0.0);
            asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly));
            for r0 in (0..rows).step_by(ROWS) {
                let m = ROWS.min(rows - r0);
                for (i, dst) in block.chunks_exact_mut(kt).enumerate() {
                    let src = if i < m { &a[(r0 + i) * lda..(r0 + i) * lda + w.k] } else { &[][..] };
                    dst[..src.len()].copy_from_slice(src);
                    dst[src.len()..].fill(bf16::ZERO);
                }
                for j in 0..w.n.div_ceil(NR) {
                    let panel = w.panels[j * kt * NR..].as_ptr();
                    multiply(block.as_ptr(), kt, panel, m > 16, sums.as_mut_ptr());
                    let at = r0 * w.n + j * NR;
                    let skip = skip.map(|s| &s[at..]);
                    epilogue(sums, m, &w.bias[j * NR..], act, skip, &mut out[at..], w.n, (w.n - j * NR).min(NR));
                }
            }
            asm!("tilerelease", options(nostack, nomem));
        });
    }

    /// Bias, activation, skip, bf16: `m` rows of `sums` (`[m][NR]`) to
    /// `out` (`ld` apart, `cols` valid), as the vector kernels' epilogue.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn epilogue(
        sums: &[f32],
        m: usize,
        bias: &[f32],
        a: Act,
        skip: Option<&[bf16]>,
        out: &mut [bf16],
        ld: usize,
        cols: usize,
    ) {
        let b = [_mm512_loadu_ps(bias.as_ptr()), _mm512_loadu_ps(bias[16..].as_ptr())];
        let masks = [mask(cols), mask(cols.saturating_sub(16))];
        for i in 0..m {
            for h in 0..2 {
                // Pointers, not slices: a half with no valid column (mask
                // 0) may start past the end, and touches nothing.
                let at = i * ld + h * 16;
                let skip = skip.map_or(std::ptr::null(), |s| s.as_ptr().wrapping_add(at));
                let sum = _mm512_loadu_ps(sums[i * NR + h * 16..].as_ptr());
                finish16(sum, b[h], a, skip, out.as_mut_ptr().wrapping_add(at), masks[h]);
            }
        }
    }

    /// `tdpbf16ps` on tiles already in registers, 4 independent sums an
    /// iteration (one instruction's latency is about 4 of its issue
    /// intervals): the flops done (`fruits bench peak`).
    ///
    /// # Safety
    /// AMX is usable ([`super::runs`]).
    pub unsafe fn peak(iters: usize) -> f64 {
        asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly));
        asm!("tilezero tmm4", "tilezero tmm5", "tilezero tmm6", "tilezero tmm7", options(nostack, nomem));
        for _ in 0..iters {
            asm!(
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                options(nostack, nomem),
            );
        }
        asm!("tilerelease", options(nostack, nomem));
        (iters * 4 * 16 * 16 * TILE_K * 2) as f64
    }

    /// `sums` (`[32][NR]` f32) = the block's rows (`[32][kt]` bf16; only
    /// the first 16 when `both` is false) times one weight panel
    /// (`[kt / 2][NR][2]`), `kt / 32` tile steps.
    #[inline(always)]
    unsafe fn multiply(block: *const bf16, kt: usize, panel: *const bf16, both: bool, sums: *mut f32) {
        let (a_stride, w_stride, c_stride) = (kt * 2, NR * 2 * 2, NR * 4);
        asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
        for step in 0..kt / TILE_K {
            let a0 = block.add(step * TILE_K);
            let w0 = panel.add(step * TILE_K * NR);
            asm!(
                "tileloadd tmm4, [{a} + {sa}*1]",
                "tileloadd tmm6, [{w} + {sw}*1]",
                "tileloadd tmm7, [{w} + {sw}*1 + 64]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                a = in(reg) a0, w = in(reg) w0, sa = in(reg) a_stride, sw = in(reg) w_stride,
                options(nostack, readonly),
            );
            if both {
                asm!(
                    "tileloadd tmm5, [{a} + {sa}*1]",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a = in(reg) a0.add(16 * kt), sa = in(reg) a_stride,
                    options(nostack, readonly),
                );
            }
        }
        asm!(
            "tilestored [{c} + {sc}*1], tmm0",
            "tilestored [{c} + {sc}*1 + 64], tmm1",
            c = in(reg) sums, sc = in(reg) c_stride,
            options(nostack),
        );
        if both {
            asm!(
                "tilestored [{c} + {sc}*1], tmm2",
                "tilestored [{c} + {sc}*1 + 64], tmm3",
                c = in(reg) sums.add(16 * NR), sc = in(reg) c_stride,
                options(nostack),
            );
        }
    }
}
