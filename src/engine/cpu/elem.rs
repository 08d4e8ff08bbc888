//! What an activation is stored as between layers: f32, or bfloat16 (half
//! the bytes; with AVX512-BF16 one instruction does 32 multiply-adds instead
//! of 16). Arithmetic always accumulates in f32; only storage and the GEMM's
//! inputs are bf16.

pub use half::bf16;

use crate::engine::simd::{simd, Simd};

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
