//! 16 lanes of `T` to and from f32 vectors, for the AVX-512 kernels; only
//! ever inlined into functions compiled with the features [`Elem::avx512`](super::elem::Elem::avx512)
//! checked.

use super::elem::{bf16, Elem};
use std::arch::x86_64::*;

pub trait Lanes: Elem {
    /// The lanes of `m` from `p`, widened to f32 (others zero).
    ///
    /// # Safety
    /// The CPU has the features [`Elem::avx512`] checks for `Self`, and
    /// the lanes of `m` at `p` are readable.
    unsafe fn load16(p: *const Self, m: __mmask16) -> __m512;
    /// The lanes of `m` of `v`, rounded to `Self`, to `p`.
    ///
    /// # Safety
    /// As [`Lanes::load16`], with the lanes writable.
    unsafe fn store16(p: *mut Self, m: __mmask16, v: __m512);
}

impl Lanes for f32 {
    #[inline(always)]
    unsafe fn load16(p: *const f32, m: __mmask16) -> __m512 {
        _mm512_maskz_loadu_ps(m, p)
    }
    #[inline(always)]
    unsafe fn store16(p: *mut f32, m: __mmask16, v: __m512) {
        _mm512_mask_storeu_ps(p, m, v)
    }
}

impl Lanes for bf16 {
    #[inline(always)]
    unsafe fn load16(p: *const bf16, m: __mmask16) -> __m512 {
        let h = _mm256_maskz_loadu_epi16(m, p as *const i16);
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
    }
    #[inline(always)]
    unsafe fn store16(p: *mut bf16, m: __mmask16, v: __m512) {
        let h: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
        _mm256_mask_storeu_epi16(p as *mut i16, m, h)
    }
}

/// ReLU / ReLU6 / nothing on 16 lanes.
///
/// # Safety
/// The CPU has AVX-512F.
#[inline(always)]
pub unsafe fn act(v: __m512, a: crate::model::plan::Act) -> __m512 {
    use crate::model::plan::Act;
    match a {
        Act::None => v,
        Act::Relu => _mm512_max_ps(v, _mm512_setzero_ps()),
        Act::Relu6 => _mm512_min_ps(_mm512_max_ps(v, _mm512_setzero_ps()), _mm512_set1_ps(6.0)),
    }
}

/// A GEMM's last step on 16 output lanes: `act(sum + bias)`, plus the skip
/// where there is one (null: none), rounded to `T` and stored to the lanes
/// of `m` at `out`. The AVX-512 and the AMX kernels' epilogues both end so.
///
/// # Safety
/// As [`Lanes::store16`], with the lanes of `m` at `skip` readable.
#[inline(always)]
pub unsafe fn finish16<T: Lanes>(
    sum: __m512,
    bias: __m512,
    a: crate::model::plan::Act,
    skip: *const T,
    out: *mut T,
    m: __mmask16,
) {
    let mut v = act(_mm512_add_ps(sum, bias), a);
    if !skip.is_null() {
        v = _mm512_add_ps(v, T::load16(skip, m));
    }
    T::store16(out, m, v);
}

/// The same on 8 lanes, for the AVX2 kernels.
///
/// # Safety
/// The CPU has AVX.
#[inline(always)]
pub unsafe fn act8(v: __m256, a: crate::model::plan::Act) -> __m256 {
    use crate::model::plan::Act;
    match a {
        Act::None => v,
        Act::Relu => _mm256_max_ps(v, _mm256_setzero_ps()),
        Act::Relu6 => _mm256_min_ps(_mm256_max_ps(v, _mm256_setzero_ps()), _mm256_set1_ps(6.0)),
    }
}

/// The first `n` (≤ 16, saturating) lanes.
#[inline(always)]
pub fn mask(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}
