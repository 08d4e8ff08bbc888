//! Dense convolution as a GEMM over pixels, with the epilogue fused:
//!
//! `out[p, n] = act(bias[n] + Σ_k a[p, k] · w[k, n]) (+ skip[p, n])`
//!
//! Activations are NHWC, so a 1×1 convolution's input *is* `a` (one row per
//! pixel) and a k×k convolution's `a` is an im2col tile, or in f32 on
//! AVX2 and AVX-512 the image itself, each row's window read in place
//! ([`gemm_windows`]).
//! Weights are packed once, at load, into column panels of [`NR`] so the
//! micro-kernel reads them sequentially; bias, activation and the residual
//! add happen while the tile is still in registers, so an activation is
//! written once and never re-read by a separate pass.

use super::amx;
use super::elem::Elem;
use crate::engine::cpu_id::{l2_budget, CpuId};
use crate::model::plan::Act;

/// Panel width: two AVX-512 vectors of f32 accumulators.
pub const NR: usize = 32;
const _: () = assert!(NR == amx::PANEL, "the AMX GEMM reads these panels");
/// Rows (pixels) per micro-kernel call: 12 × 2 accumulators + 2 weight
/// vectors + 1 broadcast fit the 32 vector registers.
pub const MR: usize = 12;
/// Rows per cache block: as many as keep their `k` inputs and `n` outputs
/// (`elem` bytes each) within this CPU's L2 budget ([`l2_budget`], from
/// CPUID), in whole micro-kernel calls, so the block stays in L2 while every
/// weight panel passes over it: 108 rows of MobileNetV2's last projection
/// (k = 960, n = 160, f32) on a 1 MiB L2, 24 on a laptop's 256 KiB, where a
/// constant 120 rows (470 KiB there) overflowed the small one. Blocking
/// never changes a dot product's order: the same bits whatever the L2.
fn row_block(k: usize, n: usize, elem: usize, l2: usize) -> usize {
    (l2_budget(l2) / ((k + n) * elem).max(1) / MR).max(1) * MR
}

/// The smallest piece of `len` that needs no more pieces than pieces of
/// `most` do: 7 rows at most 6 a piece as 4 + 3, not 6 + 1. Row blocks here
/// and the fused blocks' bands are cut this way.
pub fn even_piece(len: usize, most: usize) -> usize {
    len.div_ceil(len.div_ceil(most).max(1))
}

/// `block` shrunk (in whole [`MR`]) by [`even_piece`]: 49 rows in blocks of
/// 48 left a block of one row, which streamed every weight panel again for a
/// single row (the 7 × 7 layers' 49 pixels, benches/README).
fn even_blocks(rows: usize, block: usize) -> usize {
    even_piece(rows, block).div_ceil(MR) * MR
}

/// The micro-kernel calls over `rows`: `(first row, rows)`, [`MR`] at a time,
/// but a remainder of under `MR / 2` rows shares the last whole tile's rows
/// (13 rows as 7 and 6, not 12 and 1): a call's cost is mostly its row
/// count's share of the registers, and a 1- or 2-row call leaves most of
/// them idle.
fn tiles(rows: std::ops::Range<usize>) -> impl Iterator<Item = (usize, usize)> {
    let (n, rem) = (rows.len() / MR, rows.len() % MR);
    let split = n > 0 && rem > 0 && rem < MR / 2;
    let whole = if split { n - 1 } else { n };
    let last = rows.start + whole * MR;
    let tail = if split {
        let first = (MR + rem).div_ceil(2);
        [(last, first), (last + first, MR + rem - first)]
    } else {
        [(last, rem), (last + rem, 0)]
    };
    (0..whole).map(move |t| (rows.start + t * MR, MR)).chain(tail.into_iter().filter(|t| t.1 > 0))
}

/// Weights of one dense convolution, BatchNorm folded, packed for [`gemm`].
#[derive(Debug, Clone)]
pub struct Packed<T> {
    /// Reduction length (cin · k · k), rounded up to `T::K_STEP`; rows of
    /// `a` must be at least this long (zero-padded).
    pub k: usize,
    /// Output channels.
    pub n: usize,
    /// The reduction rows a panel holds: `k`, or `k` rounded up to a whole
    /// AMX tile's 32 for bf16 on AMX ([`amx::pad`]; the rows past `k` are
    /// zeros, which the other kernels never read).
    kpanel: usize,
    /// `ceil(n / NR)` panels, each `[kpanel / S][NR][S]` with `S =
    /// T::K_STEP` (a bf16 vector holds 16 columns × 2 consecutive k),
    /// zero-padded.
    panels: Vec<T>,
    /// `ceil(n / NR) · NR`, zero beyond `n`.
    bias: Vec<f32>,
}

impl<T: Elem> Packed<T> {
    /// `w` is row-major `[k][n]`.
    pub fn new(k: usize, n: usize, w: &[f32], bias: &[f32]) -> Self {
        assert_eq!(w.len(), k * n);
        assert_eq!(bias.len(), n);
        let s = T::K_STEP;
        let kp = k.div_ceil(s) * s;
        let kpanel = amx::pad::<T>(kp);
        let np = n.div_ceil(NR);
        let mut panels = vec![T::default(); np * kpanel * NR];
        for (kk, row) in w.chunks_exact(n).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                panels[(j / NR) * kpanel * NR + (kk / s) * NR * s + (j % NR) * s + kk % s] = T::from_f32(v);
            }
        }
        let mut b = vec![0f32; np * NR];
        b[..n].copy_from_slice(bias);
        Self { k: kp, n, kpanel, panels, bias: b }
    }

    /// `self` as what it is when `T` is `U` (generic code handing the
    /// weights to a kernel written for one type).
    #[cfg(target_arch = "x86_64")]
    fn same<U: 'static>(&self) -> Option<&Packed<U>> {
        // SAFETY: `T` is `U`, so the two types are the same type.
        (std::any::TypeId::of::<T>() == std::any::TypeId::of::<U>())
            .then(|| unsafe { &*(self as *const Self as *const Packed<U>) })
    }

    fn panel(&self, j: usize) -> &[T] {
        &self.panels[j * self.kpanel * NR..(j + 1) * self.kpanel * NR]
    }
}

/// `rows` pixels: `a` is `[rows][lda]` (first `w.k` used), `out` and `skip`
/// are `[rows][w.n]`.
pub fn gemm<T: Elem>(a: &[T], lda: usize, rows: usize, w: &Packed<T>, act: Act, skip: Option<&[T]>, out: &mut [T]) {
    if rows == 0 {
        return;
    }
    assert!(lda >= w.k && a.len() >= (rows - 1) * lda + w.k);
    assert!(out.len() >= rows * w.n);
    if let Some(s) = skip {
        assert!(s.len() >= rows * w.n);
    }
    #[cfg(target_arch = "x86_64")]
    if amx::runs::<T>() {
        use super::elem::{bf16, same, same_mut};
        let (a, w, out) = (same::<T, bf16>(a).unwrap(), w.same::<bf16>().unwrap(), same_mut::<T, bf16>(out).unwrap());
        let w = amx::Weights { k: w.k, n: w.n, kpanel: w.kpanel, panels: &w.panels, bias: &w.bias };
        // SAFETY: bounds asserted above; AMX is on (`runs`).
        return unsafe { amx::gemm(a, lda, rows, w, act, skip.and_then(same::<T, bf16>), out) };
    }
    // SAFETY: bounds asserted above and kept by `drive`; the kernel picked
    // runs on this CPU (`kernel_for`).
    unsafe { drive(a, lda, rows, w, act, skip, out, kernel_for::<T>(), CpuId::get().l2) };
}

/// Whether this CPU runs [`gemm_windows`] for `T`: f32 on AVX2 or AVX-512
/// (bf16 and the portable kernel take im2col rows: `vdpbf16ps` pairs
/// adjacent k, and a window's segments of 3 · 3 values split the pairs).
pub fn has_windows<T: Elem>() -> bool {
    #[cfg(target_arch = "x86_64")]
    if crate::engine::simd::simd() >= crate::engine::simd::Simd::Avx2 {
        return std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>();
    }
    false
}

/// [`gemm`] on `rows` rows whose reduction elements lie in `a` as `k`
/// says ([`Reduction`]), row `i`'s from `a[i · lda]` on: a convolution's
/// windows read where they are. Needs [`has_windows`]; the same bits as
/// [`gemm`] on the rows copied out (each output's sum in the same order).
pub fn gemm_windows<T: Elem>(a: &[T], lda: usize, rows: usize, k: Reduction, w: &Packed<T>, act: Act, out: &mut [T]) {
    assert!(has_windows::<T>(), "no windowed GEMM on this CPU for this type");
    assert_eq!(k.len * k.count, w.k, "windows of {} × {} elements for a k of {}", k.count, k.len, w.k);
    if rows == 0 {
        return;
    }
    assert!(a.len() >= (rows - 1) * lda + (k.count - 1) * k.step + k.len && out.len() >= rows * w.n);
    #[cfg(target_arch = "x86_64")]
    if let (Some(a), Some(out)) = (super::elem::same::<T, f32>(a), super::elem::same_mut::<T, f32>(out)) {
        let w = w.same::<f32>().expect("f32 weights");
        let kernel = if f32::avx512() { avx512::kernel_windows } else { avx2::kernel_windows };
        // SAFETY: `kernel` runs on this CPU (`has_windows`); bounds asserted above.
        unsafe { drive_windows(a, lda, rows, k, w, act, out, kernel) };
    }
}

/// A micro-kernel of [`gemm_windows`]: [`Kernel`] with a [`Reduction`].
#[cfg(target_arch = "x86_64")]
type WindowKernel =
    unsafe fn(rows: usize, k: Reduction, a: *const f32, lda: usize, w: *const f32, bias: *const f32, tile: Tile<f32>);

/// [`gemm_windows`]'s loops: every panel, every tile of rows.
///
/// # Safety
/// `kernel` runs on this CPU; `a` and `out` hold what [`gemm_windows`] asserts.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn drive_windows(
    a: &[f32],
    lda: usize,
    rows: usize,
    k: Reduction,
    w: &Packed<f32>,
    act: Act,
    out: &mut [f32],
    kernel: WindowKernel,
) {
    for j in 0..w.n.div_ceil(NR) {
        let (c0, panel) = (j * NR, w.panel(j).as_ptr());
        for (i, m) in tiles(0..rows) {
            let tile = Tile {
                out: out[i * w.n + c0..].as_mut_ptr(),
                skip: std::ptr::null(),
                ld: w.n,
                cols: (w.n - c0).min(NR),
                act,
            };
            kernel(m, k, a[i * lda..].as_ptr(), lda, panel, w.bias[c0..].as_ptr(), tile);
        }
    }
}

/// The fastest kernel this CPU runs for `T`.
fn kernel_for<T: Elem>() -> Kernel<T> {
    #[cfg(target_arch = "x86_64")]
    if T::avx512() {
        use std::any::TypeId;
        // Monomorphised away: exactly one branch survives per `T`.
        if TypeId::of::<T>() == TypeId::of::<f32>() {
            // SAFETY: same signature with `T` = f32.
            return unsafe { std::mem::transmute::<Kernel<f32>, Kernel<T>>(avx512::kernel_f32) };
        }
        if TypeId::of::<T>() == TypeId::of::<super::elem::bf16>() {
            // SAFETY: same signature with `T` = bf16.
            return unsafe { std::mem::transmute::<Kernel<super::elem::bf16>, Kernel<T>>(avx512::kernel_bf16) };
        }
    }
    #[cfg(target_arch = "x86_64")]
    if crate::engine::simd::simd() >= crate::engine::simd::Simd::Avx2 {
        if let Some(k) = avx2::kernel::<T>() {
            return k;
        }
    }
    portable::kernel::<T>
}

/// Where a row of `a` holds its `count · len` reduction elements: `count`
/// segments of `len` adjacent ones, `step` apart. A plain row is one
/// segment; a k × k convolution's window on an NHWC image is k segments
/// (its rows: k · cin values each, an image row apart), read in place
/// where im2col would copy them ([`gemm_windows`]).
#[derive(Debug, Clone, Copy)]
pub struct Reduction {
    pub len: usize,
    pub count: usize,
    pub step: usize,
}

impl Reduction {
    pub fn plain(k: usize) -> Self {
        Self { len: k, count: 1, step: 0 }
    }

    /// Each segment's start in `a` and in a panel `w` (`NR` wide).
    #[inline(always)]
    fn segments<T>(self, a: *const T, w: *const T) -> impl Iterator<Item = (*const T, *const T)> {
        (0..self.count).map(move |s| (a.wrapping_add(s * self.step), w.wrapping_add(s * self.len * NR)))
    }
}

/// One micro-kernel call: `rows ≤ MR` rows × one panel, `cols ≤ NR` of it valid.
type Kernel<T> =
    unsafe fn(rows: usize, k: usize, a: *const T, lda: usize, w: *const T, bias: *const f32, tile: Tile<T>);

/// Where a tile's results go, and what happens to them on the way.
#[derive(Clone, Copy)]
pub struct Tile<T> {
    out: *mut T,
    skip: *const T,
    ld: usize,
    cols: usize,
    act: Act,
}

#[allow(clippy::too_many_arguments)]
unsafe fn drive<T: Elem>(
    a: &[T],
    lda: usize,
    rows: usize,
    w: &Packed<T>,
    act: Act,
    skip: Option<&[T]>,
    out: &mut [T],
    kernel: Kernel<T>,
    l2: usize,
) {
    let np = w.n.div_ceil(NR);
    let skip_ptr = skip.map_or(std::ptr::null(), |s| s.as_ptr());
    let block = even_blocks(rows, row_block(w.k, w.n, std::mem::size_of::<T>(), l2));
    for r0 in (0..rows).step_by(block) {
        let r1 = (r0 + block).min(rows);
        for j in 0..np {
            let panel = w.panel(j).as_ptr();
            let bias = w.bias[j * NR..].as_ptr();
            let c0 = j * NR;
            let cols = (w.n - c0).min(NR);
            for (i, m) in tiles(r0..r1) {
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
/// reference the AVX-512 kernels are tested against.
mod portable {
    use super::*;

    pub unsafe fn kernel<T: Elem>(
        rows: usize,
        k: usize,
        a: *const T,
        lda: usize,
        w: *const T,
        bias: *const f32,
        t: Tile<T>,
    ) {
        let s = T::K_STEP;
        let mut acc = [[0f32; NR]; MR];
        for kk in 0..k {
            let base = w.add((kk / s) * NR * s + kk % s);
            for (i, acc) in acc.iter_mut().enumerate().take(rows) {
                let av = (*a.add(i * lda + kk)).to_f32();
                for (j, x) in acc.iter_mut().enumerate() {
                    *x += av * (*base.add(j * s)).to_f32();
                }
            }
        }
        let bias = std::slice::from_raw_parts(bias, NR);
        for (i, acc) in acc.iter().enumerate().take(rows) {
            for j in 0..t.cols {
                let mut v = t.act.apply_one(acc[j] + bias[j]);
                if !t.skip.is_null() {
                    v += (*t.skip.add(i * t.ld + j)).to_f32();
                }
                *t.out.add(i * t.ld + j) = T::from_f32(v);
            }
        }
    }
}

/// AVX2 + FMA (16 vector registers): a 12 × 32 tile as four 6 × 16
/// sub-tiles, each 12 accumulators + 2 weight vectors + 1 broadcast. f32
/// only; bf16 storage on such CPUs takes the portable kernel.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::lanes::act8;
    use super::*;
    use std::arch::x86_64::*;

    /// `$f::<A, M> $args` for the activation `$act` (as the constant `A`,
    /// [`act_of`]) and the run-time row count `$m`, one of `$n`.
    macro_rules! by_act_rows {
        ($f:ident, $act:expr, $m:expr, [$($n:literal)*], $args:tt) => {
            match $act {
                Act::None => by_act_rows!(@rows $f, 0, $m, [$($n)*], $args),
                Act::Relu => by_act_rows!(@rows $f, 1, $m, [$($n)*], $args),
                Act::Relu6 => by_act_rows!(@rows $f, 2, $m, [$($n)*], $args),
            }
        };
        (@rows $f:ident, $a:literal, $m:expr, [$($n:literal)*], $args:tt) => {
            match $m {
                $($n => $f::<$a, $n> $args,)*
                _ => unreachable!("a row count the kernel has no instance for"),
            }
        };
    }

    pub fn kernel<T: Elem>() -> Option<Kernel<T>> {
        // SAFETY: same signature with `T` = f32.
        (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>())
            .then(|| unsafe { std::mem::transmute::<Kernel<f32>, Kernel<T>>(kernel_f32) })
    }

    pub unsafe fn kernel_f32(
        rows: usize,
        k: usize,
        a: *const f32,
        lda: usize,
        w: *const f32,
        bias: *const f32,
        t: Tile<f32>,
    ) {
        kernel_windows(rows, Reduction::plain(k), a, lda, w, bias, t)
    }

    /// [`kernel_f32`] with each row's `k` elements in segments ([`Reduction`]).
    pub unsafe fn kernel_windows(
        rows: usize,
        k: Reduction,
        a: *const f32,
        lda: usize,
        w: *const f32,
        bias: *const f32,
        t: Tile<f32>,
    ) {
        // Two strips of as even a height as they can be (7 rows as 4 + 3,
        // not 6 + 1): a strip of 1 or 2 rows is load-bound.
        let first = if rows <= 6 { rows } else { rows.div_ceil(2) };
        for (r0, m) in [(0, first), (first, rows - first)] {
            if m == 0 {
                break;
            }
            for h in 0..2 {
                let cols = t.cols.saturating_sub(h * 16).min(16);
                if cols == 0 {
                    break;
                }
                if cols <= 8 {
                    // At most 8 columns in this half (24 or 40 channels):
                    // every row (with the first strip) against one vector
                    // of weights ([`eighth`]).
                    if r0 == 0 {
                        let sub = Tile {
                            out: t.out.add(h * 16),
                            skip: if t.skip.is_null() { t.skip } else { t.skip.add(h * 16) },
                            cols,
                            ..t
                        };
                        let (w, bias) = (w.add(h * 16), bias.add(h * 16));
                        by_act_rows!(eighth, t.act, rows, [1 2 3 4 5 6 7 8 9 10 11 12], (k, a, lda, w, bias, sub));
                    }
                    continue;
                }
                let sub = Tile {
                    out: t.out.add(r0 * t.ld + h * 16),
                    skip: if t.skip.is_null() { t.skip } else { t.skip.add(r0 * t.ld + h * 16) },
                    cols,
                    ..t
                };
                let (a, w, bias) = (a.add(r0 * lda), w.add(h * 16), bias.add(h * 16));
                // A constant row count and activation (the AVX-512
                // kernel's `by_tile` says why).
                by_act_rows!(half, t.act, m, [1 2 3 4 5 6], (k, a, lda, w, bias, sub));
            }
        }
    }

    /// `M` rows × at most 8 columns of a panel: one accumulator a row (up
    /// to 12 + 1 weight vector + 1 broadcast). [`half`] there spent half
    /// its multiply-adds on the panel's zero padding: a 24-channel
    /// projection is a 16-column half and an 8-column one.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn eighth<const A: u8, const M: usize>(
        k: Reduction,
        a: *const f32,
        lda: usize,
        w: *const f32,
        bias: *const f32,
        t: Tile<f32>,
    ) {
        let mut acc = [_mm256_setzero_ps(); M];
        for (a, w) in k.segments(a, w) {
            for kk in 0..k.len {
                let w0 = _mm256_loadu_ps(w.add(kk * NR));
                for (i, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm256_fmadd_ps(_mm256_set1_ps(*a.add(i * lda + kk)), w0, *acc);
                }
            }
        }
        let b = _mm256_loadu_ps(bias);
        let mut part = [[std::mem::MaybeUninit::<f32>::uninit(); 8]; M];
        for (i, acc) in acc.iter().enumerate() {
            let mut x = act8(_mm256_add_ps(*acc, b), act_of(A));
            if t.cols == 8 {
                if !t.skip.is_null() {
                    x = _mm256_add_ps(x, _mm256_loadu_ps(t.skip.add(i * t.ld)));
                }
                _mm256_storeu_ps(t.out.add(i * t.ld), x);
            } else {
                _mm256_storeu_ps(part[i].as_mut_ptr() as *mut f32, x);
            }
        }
        if t.cols == 8 {
            return;
        }
        for (i, v) in part.iter().enumerate() {
            let out = std::slice::from_raw_parts_mut(t.out.add(i * t.ld), t.cols);
            for (j, o) in out.iter_mut().enumerate() {
                // SAFETY: every row was stored above.
                let v = v[j].assume_init();
                *o = if t.skip.is_null() { v } else { v + *t.skip.add(i * t.ld + j) };
            }
        }
    }

    /// `M` rows × 16 columns of a panel (row stride `NR`).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn half<const A: u8, const M: usize>(
        k: Reduction,
        a: *const f32,
        lda: usize,
        w: *const f32,
        bias: *const f32,
        t: Tile<f32>,
    ) {
        let mut acc = [[_mm256_setzero_ps(); 2]; M];
        for (a, w) in k.segments(a, w) {
            for kk in 0..k.len {
                let w0 = _mm256_loadu_ps(w.add(kk * NR));
                let w1 = _mm256_loadu_ps(w.add(kk * NR + 8));
                for (i, acc) in acc.iter_mut().enumerate() {
                    let av = _mm256_set1_ps(*a.add(i * lda + kk));
                    acc[0] = _mm256_fmadd_ps(av, w0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(av, w1, acc[1]);
                }
            }
        }
        let b = [_mm256_loadu_ps(bias), _mm256_loadu_ps(bias.add(8))];
        // A sub-tile of fewer than 16 columns goes through `part`, so the
        // accumulators themselves are never indexed at run time (which
        // would keep them on the stack).
        let mut part = [[std::mem::MaybeUninit::<f32>::uninit(); 16]; M];
        for (i, acc) in acc.iter().enumerate() {
            for h in 0..2 {
                let mut x = act8(_mm256_add_ps(acc[h], b[h]), act_of(A));
                let at = i * t.ld + h * 8;
                if t.cols == 16 {
                    // A whole row of the sub-tile: straight from the
                    // registers (the same additions as below).
                    if !t.skip.is_null() {
                        x = _mm256_add_ps(x, _mm256_loadu_ps(t.skip.add(at)));
                    }
                    _mm256_storeu_ps(t.out.add(at), x);
                } else {
                    _mm256_storeu_ps(part[i].as_mut_ptr().add(h * 8) as *mut f32, x);
                }
            }
        }
        if t.cols == 16 {
            return;
        }
        for (i, v) in part.iter().enumerate() {
            let out = std::slice::from_raw_parts_mut(t.out.add(i * t.ld), t.cols);
            for (j, o) in out.iter_mut().enumerate() {
                // SAFETY: both halves of every row were stored above.
                let v = v[j].assume_init();
                *o = if t.skip.is_null() { v } else { v + *t.skip.add(i * t.ld + j) };
            }
        }
    }
}

/// The activation a kernel's constant `A` stands for: kernels take it as a
/// const parameter (see the AVX-512 kernel's `by_tile`).
#[inline(always)]
const fn act_of(a: u8) -> Act {
    match a {
        0 => Act::None,
        1 => Act::Relu,
        _ => Act::Relu6,
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::super::elem::bf16;
    use super::super::lanes::{finish16, mask, Lanes};
    use super::*;
    use std::arch::x86_64::*;

    /// Dispatches on the row count so every loop below has a constant trip
    /// count and the accumulators live in registers.
    /// `H` is the number of 16-column halves of the panel computed: a
    /// panel with at most 16 valid columns (the last one of 16, 80, 144 or
    /// 240 channels) skips the other half's multiply-adds, which would all
    /// land in its zero padding.
    /// `A` is the activation ([`act_of`]): a constant, so the epilogue's
    /// row loop is unrolled and reads the accumulators from registers. With
    /// the activation chosen at run time LLVM kept the loop, spilled the 24
    /// accumulators to the stack and zeroed them there with a `memset` call
    /// per tile: 2.5% of a featurize, most of it on the expand layers
    /// whose k is 16–32 (perf, benches/README).
    macro_rules! by_rows {
        ($rows:expr, $f:ident, $a:literal, $h:literal, $($arg:expr),*) => {
            match $rows {
                1 => $f::<$a, 1, $h>($($arg),*), 2 => $f::<$a, 2, $h>($($arg),*),
                3 => $f::<$a, 3, $h>($($arg),*), 4 => $f::<$a, 4, $h>($($arg),*),
                5 => $f::<$a, 5, $h>($($arg),*), 6 => $f::<$a, 6, $h>($($arg),*),
                7 => $f::<$a, 7, $h>($($arg),*), 8 => $f::<$a, 8, $h>($($arg),*),
                9 => $f::<$a, 9, $h>($($arg),*), 10 => $f::<$a, 10, $h>($($arg),*),
                11 => $f::<$a, 11, $h>($($arg),*), 12 => $f::<$a, 12, $h>($($arg),*),
                _ => unreachable!("at most MR rows"),
            }
        };
    }

    /// [`by_rows`] for the tile's activation and halves.
    macro_rules! by_tile {
        ($rows:expr, $t:expr, $f:ident, $($arg:expr),*) => {
            match ($t.act, $t.cols <= 16) {
                (Act::None, true) => by_rows!($rows, $f, 0, 1, $($arg),*),
                (Act::None, false) => by_rows!($rows, $f, 0, 2, $($arg),*),
                (Act::Relu, true) => by_rows!($rows, $f, 1, 1, $($arg),*),
                (Act::Relu, false) => by_rows!($rows, $f, 1, 2, $($arg),*),
                (Act::Relu6, true) => by_rows!($rows, $f, 2, 1, $($arg),*),
                (Act::Relu6, false) => by_rows!($rows, $f, 2, 2, $($arg),*),
            }
        };
    }

    pub unsafe fn kernel_f32(
        rows: usize,
        k: usize,
        a: *const f32,
        lda: usize,
        w: *const f32,
        bias: *const f32,
        t: Tile<f32>,
    ) {
        by_tile!(rows, t, tile_f32, k, a, lda, w, bias, t)
    }

    /// [`kernel_f32`] with each row's `k` elements in segments ([`Reduction`]).
    pub unsafe fn kernel_windows(
        rows: usize,
        k: Reduction,
        a: *const f32,
        lda: usize,
        w: *const f32,
        bias: *const f32,
        t: Tile<f32>,
    ) {
        by_tile!(rows, t, tile_windows, k, a, lda, w, bias, t)
    }

    pub unsafe fn kernel_bf16(
        rows: usize,
        k: usize,
        a: *const bf16,
        lda: usize,
        w: *const bf16,
        bias: *const f32,
        t: Tile<bf16>,
    ) {
        by_tile!(rows, t, tile_bf16, k, a, lda, w, bias, t)
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn tile_f32<const A: u8, const M: usize, const H: usize>(
        k: usize,
        a: *const f32,
        lda: usize,
        w: *const f32,
        bias: *const f32,
        t: Tile<f32>,
    ) {
        let mut acc = [[_mm512_setzero_ps(); H]; M];
        span(&mut acc, k, a, lda, w);
        epilogue::<f32, A, M, H>(&acc, bias, t);
    }

    /// [`tile_f32`] over a [`Reduction`]'s segments, one [`span`] each (the
    /// plain tile keeps its single loop: no segment loop around it).
    #[target_feature(enable = "avx512f")]
    unsafe fn tile_windows<const A: u8, const M: usize, const H: usize>(
        k: Reduction,
        a: *const f32,
        lda: usize,
        w: *const f32,
        bias: *const f32,
        t: Tile<f32>,
    ) {
        let mut acc = [[_mm512_setzero_ps(); H]; M];
        for (a, w) in k.segments(a, w) {
            span(&mut acc, k.len, a, lda, w);
        }
        epilogue::<f32, A, M, H>(&acc, bias, t);
    }

    /// `len` reduction steps of `M` rows (`lda` apart) into `acc`.
    #[inline(always)]
    unsafe fn span<const M: usize, const H: usize>(
        acc: &mut [[__m512; H]; M],
        len: usize,
        a: *const f32,
        lda: usize,
        w: *const f32,
    ) {
        for kk in 0..len {
            let mut wv = [_mm512_setzero_ps(); H];
            for (h, wv) in wv.iter_mut().enumerate() {
                *wv = _mm512_loadu_ps(w.add(kk * NR + h * 16));
            }
            for (i, acc) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(i * lda + kk));
                for (acc, wv) in acc.iter_mut().zip(&wv) {
                    *acc = _mm512_fmadd_ps(av, *wv, *acc);
                }
            }
        }
    }

    /// `vdpbf16ps`: each f32 lane adds the products of one pair of
    /// consecutive k, so a step covers two k for 16 columns. The pair of `a`
    /// is adjacent in memory (NHWC rows), read as one 32-bit broadcast.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    unsafe fn tile_bf16<const A: u8, const M: usize, const H: usize>(
        k: usize,
        a: *const bf16,
        lda: usize,
        w: *const bf16,
        bias: *const f32,
        t: Tile<bf16>,
    ) {
        let mut acc = [[_mm512_setzero_ps(); H]; M];
        for kp in 0..k / 2 {
            let mut wv = [_mm512_setzero_ps(); H];
            for (h, wv) in wv.iter_mut().enumerate() {
                *wv = _mm512_castsi512_ps(_mm512_loadu_si512(w.add(kp * NR * 2 + h * 32) as *const _));
            }
            for (i, acc) in acc.iter_mut().enumerate() {
                let pair = (a.add(i * lda + 2 * kp) as *const i32).read_unaligned();
                let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                for (acc, wv) in acc.iter_mut().zip(&wv) {
                    *acc = _mm512_dpbf16_ps(*acc, av, std::mem::transmute::<__m512, __m512bh>(*wv));
                }
            }
        }
        epilogue::<bf16, A, M, H>(&acc, bias, t);
    }

    /// Bias, activation, skip, store: on registers, once per output. A
    /// half with no valid column is never computed (`H` = 1), so every
    /// half stores (a mask of 0 would store nothing anyway).
    #[inline(always)]
    unsafe fn epilogue<T: Lanes, const A: u8, const M: usize, const H: usize>(
        acc: &[[__m512; H]; M],
        bias: *const f32,
        t: Tile<T>,
    ) {
        let b = [_mm512_loadu_ps(bias), _mm512_loadu_ps(bias.add(16))];
        let masks = [mask(t.cols), mask(t.cols.saturating_sub(16))];
        for (i, acc) in acc.iter().enumerate() {
            for h in 0..H {
                let at = i * t.ld + h * 16;
                let skip = if t.skip.is_null() { t.skip } else { t.skip.add(at) };
                finish16(acc[h], b[h], act_of(A), skip, t.out.add(at), masks[h]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rnd_source(mut seed: u32) -> impl FnMut() -> f32 {
        move || {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
        }
    }

    // n = 24 and 40 end in a panel half of 8 columns (AVX2's `eighth`), 70 in one of 6.
    const SHAPES: [(usize, usize, usize); 6] =
        [(1, 1, 1), (13, 27, 24), (25, 96, 16), (121, 33, 70), (7, 960, 160), (30, 144, 40)];

    /// One problem: `a` (rows × k) times `w` (k × n), plus bias and skip.
    struct Case {
        rows: usize,
        k: usize,
        n: usize,
        a: Vec<f32>,
        w: Vec<f32>,
        bias: Vec<f32>,
        skip: Vec<f32>,
    }

    impl Case {
        /// Random operands; `q` rounds the ones a kernel stores in its own
        /// type (bias is always f32).
        fn random(rnd: &mut impl FnMut() -> f32, (rows, k, n): (usize, usize, usize), q: fn(f32) -> f32) -> Self {
            let a = (0..rows * k).map(|_| q(rnd() * 8.0)).collect();
            let w = (0..k * n).map(|_| q(rnd())).collect();
            let bias = (0..n).map(|_| rnd()).collect();
            let skip = (0..rows * n).map(|_| q(rnd())).collect();
            Self { rows, k, n, a, w, bias, skip }
        }

        /// Plain triple loop, in f64.
        fn reference(&self, act: Act) -> Vec<f32> {
            let Case { rows, k, n, .. } = *self;
            let mut out = vec![0f32; rows * n];
            for p in 0..rows {
                for j in 0..n {
                    let s: f64 = (0..k).map(|kk| self.a[p * k + kk] as f64 * self.w[kk * n + j] as f64).sum::<f64>()
                        + self.bias[j] as f64;
                    out[p * n + j] = act.apply_one(s as f32) + self.skip[p * n + j];
                }
            }
            out
        }

        /// `kernel` on `T` copies of the operands (`a` rows padded to the
        /// packed k with zeros), results back in f32.
        /// `l2`: the L2 size the row blocks are cut for.
        fn run<T: Elem>(&self, kernel: Kernel<T>, act: Act, l2: usize) -> Vec<f32> {
            self.run_with(|at, lda, packed, skip, out| unsafe {
                drive(at, lda, self.rows, packed, act, Some(skip), out, kernel, l2)
            })
        }

        /// [`gemm`] itself (AMX for bf16 where it runs), on the rows before
        /// `split` and the rest in two calls.
        fn run_gemm<T: Elem>(&self, act: Act, split: usize) -> Vec<f32> {
            self.run_with(|at: &[T], lda, packed, skip, out| {
                let n = self.n;
                let (top, rest) = out.split_at_mut(split * n);
                gemm(at, lda, split, packed, act, Some(skip), top);
                let bottom = &mut rest[..(self.rows - split) * n];
                gemm(&at[split * lda..], lda, self.rows - split, packed, act, Some(&skip[split * n..]), bottom);
            })
        }

        /// `f(a, lda, packed, skip, out)` on `T` copies of the operands.
        fn run_with<T: Elem>(&self, f: impl FnOnce(&[T], usize, &Packed<T>, &[T], &mut [T])) -> Vec<f32> {
            let Case { rows, k, n, .. } = *self;
            let packed = Packed::<T>::new(k, n, &self.w, &self.bias);
            let lda = packed.k;
            let mut at = vec![T::default(); rows * lda];
            for p in 0..rows {
                for kk in 0..k {
                    at[p * lda + kk] = T::from_f32(self.a[p * k + kk]);
                }
            }
            let skip: Vec<T> = self.skip.iter().map(|&x| T::from_f32(x)).collect();
            // A sentinel after the output shows nothing is written past it.
            let sentinel = T::from_f32(12345.0);
            let mut out = vec![sentinel; rows * n + 1];
            f(&at, lda, &packed, &skip, &mut out);
            assert_eq!(out[rows * n].to_f32(), sentinel.to_f32(), "wrote past the end");
            out[..rows * n].iter().map(|x| x.to_f32()).collect()
        }
    }

    #[test]
    fn tiles_cover_every_row_once_and_leave_no_sliver() {
        for start in [0, 5] {
            for len in 0..100 {
                let got: Vec<_> = tiles(start..start + len).collect();
                let mut next = start;
                for &(i, m) in &got {
                    assert_eq!(i, next, "{len} rows: {got:?}");
                    assert!((1..=MR).contains(&m), "{len} rows: {got:?}");
                    assert!(len < MR || m >= MR / 2, "{len} rows: a sliver in {got:?}");
                    next += m;
                }
                assert_eq!(next, start + len, "{len} rows: {got:?}");
            }
        }
        // Blocks: no more of them than `row_block` asked for, none larger.
        for rows in 1..300 {
            for block in [MR, 2 * MR, 4 * MR, 9 * MR] {
                let even = even_blocks(rows, block);
                assert!(even <= block && even.is_multiple_of(MR), "{rows} in {block}: {even}");
                assert_eq!(rows.div_ceil(even), rows.div_ceil(block), "{rows} in {block}: {even}");
            }
        }
    }

    #[test]
    fn f32_kernels_match_the_triple_loop_on_ragged_shapes() {
        let mut rnd = rnd_source(1);
        for &(rows, k, n) in &SHAPES {
            for act in [Act::None, Act::Relu, Act::Relu6] {
                let case = Case::random(&mut rnd, (rows, k, n), |x| x);
                let want = case.reference(act);
                let mut kernels: Vec<Kernel<f32>> = vec![portable::kernel::<f32>];
                #[cfg(target_arch = "x86_64")]
                if f32::avx512() {
                    kernels.push(avx512::kernel_f32);
                }
                #[cfg(target_arch = "x86_64")]
                if crate::engine::simd::simd() >= crate::engine::simd::Simd::Avx2 {
                    kernels.push(avx2::kernel_f32);
                }
                for kernel in kernels {
                    let got = case.run(kernel, act, CpuId::get().l2);
                    for (x, y) in got.iter().zip(&want) {
                        assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{rows}x{k}x{n} {act:?}: {x} vs {y}");
                    }
                    // Row blocks cut for other L2 sizes (one micro-kernel's
                    // rows at a time, a few, all): the same bits.
                    for l2 in [1, 64 << 10, 64 << 20] {
                        let other = case.run(kernel, act, l2);
                        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(&other), bits(&got), "{rows}x{k}x{n} {act:?}, L2 {l2}");
                    }
                }
            }
        }
    }

    /// Each windowed kernel on this CPU gives its plain kernel's bits on the
    /// windows copied out into rows, whatever the rows, segments and
    /// columns (stem-like 3 × 9, 5 × 40, ragged panels).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn windowed_kernels_give_their_plain_kernels_bits() {
        use crate::engine::simd::{simd, Simd};
        let mut pairs: Vec<(&str, WindowKernel, Kernel<f32>)> = Vec::new();
        if simd() >= Simd::Avx2 {
            pairs.push(("avx2", avx2::kernel_windows, avx2::kernel_f32));
        }
        if f32::avx512() {
            pairs.push(("avx512", avx512::kernel_windows, avx512::kernel_f32));
        }
        if pairs.is_empty() {
            eprintln!("SKIPPED: this CPU has no windowed kernel (no AVX2)");
            return;
        }
        let mut rnd = rnd_source(3);
        for (rows, len, count, n, act) in
            [(110, 9, 3, 32, Act::Relu6), (13, 9, 3, 24, Act::None), (7, 40, 5, 70, Act::Relu), (1, 3, 1, 8, Act::None)]
        {
            let (step, lda) = (len * 7 + 5, 2 * len + 1);
            let image: Vec<f32> = (0..(rows - 1) * lda + (count - 1) * step + len).map(|_| rnd() * 4.0).collect();
            let k = len * count;
            // The windows copied out into rows are `a` of a plain case (no
            // skip: the windowed GEMM has none).
            let mut case = Case::random(&mut rnd, (rows, k, n), |x| x);
            case.a = (0..rows)
                .flat_map(|r| (0..count).flat_map(move |c| r * lda + c * step..r * lda + c * step + len))
                .map(|at| image[at])
                .collect();
            case.skip.fill(0.0);
            let reference = case.reference(act);
            let packed = Packed::<f32>::new(k, n, &case.w, &case.bias);
            let red = Reduction { len, count, step };
            for &(name, windowed, plain) in &pairs {
                let (mut got, mut want) = (vec![f32::NAN; rows * n + 1], vec![f32::NAN; rows * n]);
                unsafe { drive_windows(&image, lda, rows, red, &packed, act, &mut got, windowed) };
                unsafe { drive(&case.a, k, rows, &packed, act, None, &mut want, plain, CpuId::get().l2) };
                assert!(got[rows * n].is_nan(), "{name}: wrote past the end");
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got[..rows * n]), bits(&want), "{name}: {rows} rows, {count} × {len}, n {n}");
                for (i, (y, r)) in want.iter().zip(&reference).enumerate() {
                    assert!((y - r).abs() <= 1e-4 * (1.0 + r.abs()), "{name}: output {i}: {y} vs {r}");
                }
            }
        }
    }

    /// bf16 operands, f32 accumulation, bf16 result: the triple loop on the
    /// same (rounded) operands, within the output's rounding (2⁻⁸ relative).
    #[test]
    fn bf16_kernels_match_the_triple_loop_within_bf16_rounding() {
        use super::super::elem::bf16;
        let mut rnd = rnd_source(2);
        for &(rows, k, n) in &SHAPES {
            for act in [Act::None, Act::Relu, Act::Relu6] {
                let case = Case::random(&mut rnd, (rows, k, n), |x| bf16::from_f32(x).to_f32());
                let want = case.reference(act);
                let mut kernels: Vec<Kernel<bf16>> = vec![portable::kernel::<bf16>];
                #[cfg(target_arch = "x86_64")]
                if bf16::avx512() {
                    kernels.push(avx512::kernel_bf16);
                }
                let close = |got: &[f32], what: &str| {
                    for (x, y) in got.iter().zip(&want) {
                        let near = (x - y).abs() <= 4e-3 * y.abs() + 1e-5 * (k as f32);
                        assert!(near, "{what}: {rows}x{k}x{n} {act:?}: {x} vs {y}");
                    }
                };
                for kernel in kernels {
                    close(&case.run(kernel, act, CpuId::get().l2), "kernel");
                }
                // What `gemm` runs (AMX where it does): every row the same
                // bits wherever the call's rows start and end.
                let whole = case.run_gemm::<bf16>(act, rows);
                close(&whole, "gemm");
                for split in [0, 1, rows / 2, rows.saturating_sub(17)] {
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&case.run_gemm::<bf16>(act, split)), bits(&whole), "{rows}x{k}x{n}, split {split}");
                }
            }
        }
        if !amx::runs::<bf16>() {
            eprintln!("NOT TESTED HERE: AMX (this CPU or kernel has none); gemm ran AVX512-BF16 or portable");
        }
    }
}
