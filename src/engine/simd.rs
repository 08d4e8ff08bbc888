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

/// The levels `FRUITS_SIMD` takes, by name.
pub const LEVELS: [Simd; 4] = [Simd::Portable, Simd::Avx2, Simd::Avx512, Simd::Avx512Bf16];

/// `FRUITS_SIMD`, read: `None` when unset. A value that names no level is
/// an error naming the variable and the levels (the binary checks it before
/// anything runs, [`check_env`]), never a silent "no cap".
pub fn cap_from_env() -> Result<Option<Simd>, String> {
    match std::env::var("FRUITS_SIMD") {
        // Empty counts as unset, as a shell's `FRUITS_SIMD= fruits …` means.
        Err(std::env::VarError::NotPresent) => Ok(None),
        Ok(v) if v.is_empty() => Ok(None),
        Ok(v) => LEVELS.iter().find(|l| l.name() == v).map(|&l| Some(l)).ok_or_else(|| {
            let names: Vec<&str> = LEVELS.iter().map(|l| l.name()).collect();
            format!("FRUITS_SIMD={v:?} names no vector level: use one of {}", names.join(", "))
        }),
        Err(e) => Err(format!("FRUITS_SIMD: {e}")),
    }
}

/// Stops a bad `FRUITS_SIMD` before any work starts.
pub fn check_env() -> Result<(), String> {
    cap_from_env().map(|_| ())
}

/// What this CPU offers, capped by `FRUITS_SIMD` (a [`LEVELS`] name) so the
/// fallbacks can be measured and tested on a machine that has more
/// (`fruits bench infer`, tests/test_featurize.rs).
pub fn simd() -> Simd {
    static LEVEL: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        // A bad value was refused by the binary at start (check_env); the
        // library's other users get no cap from it.
        let cap = cap_from_env().ok().flatten().unwrap_or(Simd::Avx512Bf16);
        detected().min(cap)
    })
}

/// What the CPU itself offers, before any cap.
pub fn detected() -> Simd {
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
