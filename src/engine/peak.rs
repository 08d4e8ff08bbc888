//! The CPU's measured multiply-add peak: what the engine's images/s are
//! held against (`fruits bench peak`, `fruits info`, `fruits bench infer`'s
//! "% of peak").
//!
//! Measured, not computed from a data sheet: a cloud vCPU's clock under
//! AVX-512 load, whether a core has one or two 512-bit FMA units (Zen 4
//! splits each 512-bit FMA in two), and what the hypervisor leaves are all
//! in the one number. Every thread of rayon's pool (the threads inference
//! runs on) runs independent chains of fused multiply-adds at once, enough
//! chains to cover the FMA latency on every unit.

use std::time::{Duration, Instant};

use rayon::prelude::*;

use super::simd::Simd;

/// Multiply-add throughput of every thread together, in GFLOP/s (a fused
/// multiply-add counts 2).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Peak {
    /// The instructions measured: the engine's level (`FRUITS_SIMD` caps it).
    #[serde(serialize_with = "level_name")]
    pub level: Simd,
    pub threads: usize,
    /// f32 FMAs at `level`'s widest vector.
    pub f32_gflops: f64,
    /// `vdpbf16ps` (bf16 pairs into f32), where `level` has it; AMX's
    /// `tdpbf16ps` at `avx512-amx`, what the engine's bf16 GEMMs run there.
    pub bf16_gflops: Option<f64>,
    /// Wall time the measurement took.
    pub seconds: f64,
}

fn level_name<S: serde::Serializer>(l: &Simd, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(l.name())
}

/// Measures `level`'s peak on every pool thread for about `each` per dtype.
pub fn measure(level: Simd, each: Duration) -> Peak {
    let start = Instant::now();
    let threads = rayon::current_num_threads();
    let f32_gflops = all_threads(each, |iters| f32_chains(level, iters));
    let bf16_gflops = (level >= Simd::Avx512Bf16).then(|| all_threads(each, |iters| bf16_chains(level, iters)));
    Peak { level, threads, f32_gflops, bf16_gflops, seconds: start.elapsed().as_secs_f64() }
}

/// Runs `kernel(iters)` (which returns the flops it did) on every pool
/// thread at once until `each` has passed, after a short warm-up that lets
/// the clock settle; GFLOP/s of all threads together.
fn all_threads(each: Duration, kernel: impl Fn(usize) -> f64 + Sync) -> f64 {
    const ITERS: usize = 1 << 16;
    let per_thread = |d: Duration| {
        let t = Instant::now();
        let mut flops = 0.0;
        while t.elapsed() < d {
            flops += kernel(ITERS);
        }
        flops / t.elapsed().as_secs_f64()
    };
    let threads = rayon::current_num_threads();
    (0..threads).into_par_iter().for_each(|_| {
        per_thread(each / 4);
    });
    // One task per thread (rayon may still run two on one thread if a thread
    // is late; `broadcast` guarantees one each).
    rayon::broadcast(|_| per_thread(each)).iter().sum::<f64>() / 1e9
}

/// Independent chains `acc = acc · m + a`: 16 AVX-512 or 12 AVX2 vectors
/// (32 or 16 registers), more than latency × FMA units on any x86 core.
/// `m` is just under one, so the chains converge and never overflow.
fn f32_chains(level: Simd, iters: usize) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: the level was detected on this CPU (simd::simd caps, never raises).
        if level >= Simd::Avx512 {
            return unsafe { x86::avx512_f32(iters) };
        }
        if level >= Simd::Avx2 {
            return unsafe { x86::avx2_f32(iters) };
        }
    }
    let _ = level;
    portable_f32(iters)
}

fn bf16_chains(level: Simd, iters: usize) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: only called when the level has AVX512-BF16 (see `measure`),
        // AMX where it is `Amx` (detected, and granted by the kernel).
        if level >= Simd::Amx {
            // An AMX iteration is 4 instructions of about 16 cycles each:
            // fewer of them keep a call as short as the others'.
            return unsafe { super::cpu::amx::peak(iters / 16) };
        }
        unsafe { x86::avx512_bf16(iters) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (level, iters);
        unreachable!("bf16 is measured on x86 only")
    }
}

/// What the portable kernels get: plain f32 loops at the baseline target
/// (a multiply and an add, 2 flops).
fn portable_f32(iters: usize) -> f64 {
    const N: usize = 32;
    let mut acc = [1f32; N];
    let (m, a) = (std::hint::black_box(0.999_9f32), std::hint::black_box(1e-3f32));
    for _ in 0..iters {
        for x in &mut acc {
            *x = *x * m + a;
        }
    }
    std::hint::black_box(acc);
    (iters * N * 2) as f64
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub unsafe fn avx512_f32(iters: usize) -> f64 {
        const N: usize = 16;
        let (m, a) = (_mm512_set1_ps(std::hint::black_box(0.999_9)), _mm512_set1_ps(std::hint::black_box(1e-3)));
        let mut acc = [_mm512_set1_ps(1.0); N];
        for _ in 0..iters {
            for x in &mut acc {
                *x = _mm512_fmadd_ps(*x, m, a);
            }
        }
        std::hint::black_box(acc);
        (iters * N * 16 * 2) as f64
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2_f32(iters: usize) -> f64 {
        const N: usize = 12;
        let (m, a) = (_mm256_set1_ps(std::hint::black_box(0.999_9)), _mm256_set1_ps(std::hint::black_box(1e-3)));
        let mut acc = [_mm256_set1_ps(1.0); N];
        for _ in 0..iters {
            for x in &mut acc {
                *x = _mm256_fmadd_ps(*x, m, a);
            }
        }
        std::hint::black_box(acc);
        (iters * N * 8 * 2) as f64
    }

    /// `vdpbf16ps`: 16 lanes × 2 products, added into f32 (64 flops).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub unsafe fn avx512_bf16(iters: usize) -> f64 {
        const N: usize = 16;
        let v = _mm512_set1_ps(std::hint::black_box(1e-3));
        let (x, y) = (_mm512_cvtne2ps_pbh(v, v), _mm512_cvtne2ps_pbh(v, v));
        let mut acc = [_mm512_setzero_ps(); N];
        for _ in 0..iters {
            for a in &mut acc {
                *a = _mm512_dpbf16_ps(*a, x, y);
            }
        }
        std::hint::black_box(acc);
        (iters * N * 16 * 2 * 2) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every level this CPU has gives a finite, positive figure for every
    /// thread of the pool, and a bf16 figure exactly where it has bf16.
    /// (How fast is benches' business: no speed is asserted here.)
    #[test]
    fn every_level_of_this_cpu_measures_and_bf16_only_where_present() {
        let top = super::super::simd::simd();
        for level in super::super::simd::LEVELS {
            if level > top {
                continue;
            }
            let p = measure(level, Duration::from_millis(20));
            assert_eq!(p.threads, rayon::current_num_threads());
            assert!(p.f32_gflops.is_finite() && p.f32_gflops > 0.0, "{p:?}");
            assert_eq!(p.bf16_gflops.is_some(), level >= Simd::Avx512Bf16, "{p:?}");
            assert!(p.bf16_gflops.is_none_or(|g| g.is_finite() && g > 0.0), "{p:?}");
        }
    }
}
