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
    /// And AMX's bf16 tiles (Sapphire Rapids+: m7i, c7i, r7i), which the
    /// kernel lets this process use.
    Amx,
}

impl Simd {
    pub fn name(self) -> &'static str {
        match self {
            Simd::Portable => "portable",
            Simd::Avx2 => "avx2",
            Simd::Avx512 => "avx512",
            Simd::Avx512Bf16 => "avx512-bf16",
            Simd::Amx => "avx512-amx",
        }
    }
}

/// The levels `FRUITS_SIMD` takes, by name.
pub const LEVELS: [Simd; 5] = [Simd::Portable, Simd::Avx2, Simd::Avx512, Simd::Avx512Bf16, Simd::Amx];

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
        let cap = cap_from_env().ok().flatten().unwrap_or(Simd::Amx);
        detected().min(cap)
    })
}

/// What the CPU itself offers, before any cap.
pub fn detected() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512bf16") {
            return if amx_bf16() { Simd::Amx } else { Simd::Avx512Bf16 };
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

/// Whether the CPU has AMX's bf16 tiles and Linux lets this process use
/// them: their 8 KiB of state is off until a process asks for it
/// (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, Linux 5.16+);
/// an older kernel or a hypervisor that hides the state refuses, and the
/// engine stays on AVX512-BF16.
#[cfg(target_arch = "x86_64")]
fn amx_bf16() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    let f = raw_cpuid::CpuId::new().get_extended_feature_info();
    if !f.is_some_and(|f| f.has_amx_tile() && f.has_amx_bf16()) {
        return false;
    }
    // SAFETY: a plain syscall with integer arguments; it changes only
    // which state the kernel saves for this process.
    unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
}
