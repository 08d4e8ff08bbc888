//! What an activation is stored as between layers: f32, or bfloat16 (half
//! the bytes; with AVX512-BF16 one instruction does 32 multiply-adds instead
//! of 16). Arithmetic always accumulates in f32; only storage and the GEMM's
//! inputs are bf16.

pub use half::bf16;

/// `--dtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Dtype {
    F32,
    /// bfloat16 activations: the CPU engine (AVX512-BF16 where the CPU has it).
    Bf16,
    /// IEEE half activations with f32 accumulation: the CUDA engine (tensor cores).
    F16,
}

impl Dtype {
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::Bf16 => "bf16",
            Dtype::F16 => "f16",
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The vector instructions the kernels may use, best last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Simd {
    Portable,
    /// AVX2 + FMA: most x86 laptops.
    Avx2,
    Avx512,
    /// AVX-512 with BF16 (Zen 4+, Sapphire Rapids+).
    Avx512Bf16,
}

impl Simd {
    pub fn name(self) -> &'static str {
        match self {
            Simd::Portable => "portable",
            Simd::Avx2 => "avx2",
            Simd::Avx512 => "avx512",
            Simd::Avx512Bf16 => "avx512-bf16",
        }
    }
}

/// What this CPU offers, capped by `FRUITS_SIMD=portable|avx2|avx512` so the
/// fallbacks can be measured on a machine that has more (`fruits bench infer`).
pub fn simd() -> Simd {
    static LEVEL: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = match std::env::var("FRUITS_SIMD").as_deref() {
            Ok("portable") => Simd::Portable,
            Ok("avx2") => Simd::Avx2,
            Ok("avx512") => Simd::Avx512,
            _ => Simd::Avx512Bf16,
        };
        detected().min(cap)
    })
}

fn detected() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512bf16") {
            return Simd::Avx512Bf16;
        }
        if has!("avx512f") {
            return Simd::Avx512;
        }
        if has!("avx2") && has!("fma") {
            return Simd::Avx2;
        }
    }
    Simd::Portable
}

pub trait Elem: Copy + Default + Send + Sync + std::fmt::Debug + 'static {
    /// Reduction steps one instruction takes (bf16 multiplies pairs), so
    /// GEMM rows are padded to a multiple of it.
    const K_STEP: usize;
    fn from_f32(x: f32) -> Self;
    fn to_f32(self) -> f32;
    /// Whether this CPU has the AVX-512 kernels for this type.
    fn avx512() -> bool;
}

impl Elem for f32 {
    const K_STEP: usize = 1;
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    fn avx512() -> bool {
        simd() >= Simd::Avx512
    }
}

impl Elem for bf16 {
    const K_STEP: usize = 2;
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x) // round to nearest even, like vcvtneps2bf16
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn avx512() -> bool {
        simd() >= Simd::Avx512Bf16
    }
}

/// `x` as a slice of `U` when `T` is `U` (generic code handing a slice to
/// a kernel written for one type).
pub fn same<T: 'static, U: 'static>(x: &[T]) -> Option<&[U]> {
    // SAFETY: the types are identical, so is the layout.
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<U>())
        .then(|| unsafe { std::slice::from_raw_parts(x.as_ptr() as *const U, x.len()) })
}

pub fn same_mut<T: 'static, U: 'static>(x: &mut [T]) -> Option<&mut [U]> {
    // SAFETY: as in `same`.
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<U>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr() as *mut U, x.len()) })
}

/// 16 lanes of `T` to and from f32 vectors, for the AVX-512 kernels; only
/// ever inlined into functions compiled with the features [`Elem::avx512`]
/// checked.
#[cfg(target_arch = "x86_64")]
pub mod simd {
    use super::{bf16, Elem};
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
    pub unsafe fn act(v: __m512, a: crate::model::engine::act::Act) -> __m512 {
        use crate::model::engine::act::Act;
        match a {
            Act::None => v,
            Act::Relu => _mm512_max_ps(v, _mm512_setzero_ps()),
            Act::Relu6 => _mm512_min_ps(_mm512_max_ps(v, _mm512_setzero_ps()), _mm512_set1_ps(6.0)),
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
}
