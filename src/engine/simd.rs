//! The x86 vector instructions this CPU offers, detected once at run time
//! and capped by `FRUITS_SIMD`: the CPU engine's kernels and the index's
//! search both pick their code path from it.

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
