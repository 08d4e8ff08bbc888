//! Which CPU this is: vendor, family, model and stepping from CPUID, the
//! micro-architecture they name, and the data caches a core sees. Read with
//! raw-cpuid (the crate Candle's gemm already uses), so the leaves and their
//! AMD and Intel variants are not decoded by hand here.
//!
//! The name is a label for the figures (`fruits info`, benches/README): a
//! figure says where it was made. The engine's blocking reads the cache
//! sizes, never the name, so an unknown CPU runs as well as a known one.

/// What CPUID says of this CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuId {
    /// `GenuineIntel`, `AuthenticAMD`, … (empty off x86).
    pub vendor: String,
    /// The brand string, e.g. `AMD EPYC 9R14 96-Core Processor`.
    pub brand: String,
    /// Display family and model (extended fields folded in), stepping.
    pub family: u8,
    pub model: u8,
    pub stepping: u8,
    /// Data (or unified) cache sizes in bytes, per level 1-3 (0 = unknown).
    pub l1d: usize,
    pub l2: usize,
    pub l3: usize,
}

impl CpuId {
    /// This machine's, read once.
    pub fn get() -> &'static CpuId {
        static ID: std::sync::OnceLock<CpuId> = std::sync::OnceLock::new();
        ID.get_or_init(read)
    }

    /// The micro-architecture family and model name, as vendors and the
    /// kernel's tables call them; `None` where this table does not know it.
    pub fn uarch(&self) -> Option<&'static str> {
        uarch(&self.vendor, self.family, self.model, self.stepping)
    }

    /// One line for figures: `Zen 4 (AMD family 25 model 17 stepping 1)`.
    pub fn describe(&self) -> String {
        let vendor = match self.vendor.as_str() {
            "AuthenticAMD" => "AMD",
            "GenuineIntel" => "Intel",
            "" => "non-x86",
            v => v,
        };
        let id = format!("{vendor} family {} model {} stepping {}", self.family, self.model, self.stepping);
        match self.uarch() {
            Some(name) => format!("{name} ({id})"),
            None => format!("unknown micro-architecture ({id})"),
        }
    }
}

/// What one working set of a kernel may fill of a core's L2 of `l2` bytes:
/// half of it (the rest holds the weights streaming through and the output
/// rows). Where CPUID gave no size (0), half of 256 KiB, the smallest L2 of
/// the x86 cores this runs on.
pub fn l2_budget(l2: usize) -> usize {
    let l2 = if l2 == 0 { 256 << 10 } else { l2 };
    l2 / 2
}

#[cfg(target_arch = "x86_64")]
fn read() -> CpuId {
    use raw_cpuid::{CacheType, CpuId as Raw};
    let raw = Raw::new();
    let vendor = raw.get_vendor_info().map(|v| v.as_str().to_string()).unwrap_or_default();
    let brand = raw.get_processor_brand_string().map(|b| b.as_str().trim().to_string()).unwrap_or_default();
    let (family, model, stepping) =
        raw.get_feature_info().map(|f| (f.family_id(), f.model_id(), f.stepping_id())).unwrap_or_default();
    let mut size = [0usize; 4];
    for c in raw.get_cache_parameters().into_iter().flatten() {
        let level = c.level() as usize;
        if level < size.len() && matches!(c.cache_type(), CacheType::Data | CacheType::Unified) {
            size[level] = c.associativity() * c.physical_line_partitions() * c.coherency_line_size() * c.sets();
        }
    }
    CpuId { vendor, brand, family, model, stepping, l1d: size[1], l2: size[2], l3: size[3] }
}

#[cfg(not(target_arch = "x86_64"))]
fn read() -> CpuId {
    CpuId {
        vendor: String::new(),
        brand: std::env::consts::ARCH.to_string(),
        family: 0,
        model: 0,
        stepping: 0,
        l1d: 0,
        l2: 0,
        l3: 0,
    }
}

/// The x86 servers and laptops the engine meets, by display family/model:
/// AMD's from its family 17h/19h/1Ah model ranges, Intel's family 6 models
/// from the kernel's `intel-family.h` (Skylake-SP and Cascade Lake share a
/// model and differ by stepping).
fn uarch(vendor: &str, family: u8, model: u8, stepping: u8) -> Option<&'static str> {
    match (vendor, family) {
        ("AuthenticAMD", 0x17) => Some(match model {
            0x00..=0x2f => "Zen / Zen+",
            _ => "Zen 2",
        }),
        ("AuthenticAMD", 0x19) => Some(match model {
            0x10..=0x1f | 0x60..=0x7f | 0xa0..=0xaf => "Zen 4",
            _ => "Zen 3",
        }),
        ("AuthenticAMD", 0x1a) => Some("Zen 5"),
        ("GenuineIntel", 6) => match model {
            0x3f => Some("Haswell-EP"),
            0x4f => Some("Broadwell-EP"),
            0x55 if stepping >= 10 => Some("Cooper Lake"),
            0x55 if stepping >= 5 => Some("Cascade Lake"),
            0x55 => Some("Skylake-SP"),
            0x6a | 0x6c => Some("Ice Lake-SP"),
            0x8f => Some("Sapphire Rapids"),
            0xcf => Some("Emerald Rapids"),
            0xad | 0xae => Some("Granite Rapids"),
            0xaf => Some("Sierra Forest"),
            0x4e | 0x5e | 0x8e | 0x9e | 0xa5 | 0xa6 => Some("Skylake (client)"),
            0x7d | 0x7e => Some("Ice Lake (client)"),
            0x8c | 0x8d => Some("Tiger Lake"),
            0x97 | 0x9a => Some("Alder Lake"),
            0xb7 | 0xba | 0xbf => Some("Raptor Lake"),
            0xaa | 0xac => Some("Meteor Lake"),
            0xbd => Some("Lunar Lake"),
            0xc5 | 0xc6 => Some("Arrow Lake"),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The machines the issue and the EMR node types name, by the
    /// family/model/stepping their CPUs report (AMD's and Intel's manuals).
    #[test]
    fn the_server_cpus_of_emr_nodes_are_named() {
        let amd = "AuthenticAMD";
        let intel = "GenuineIntel";
        assert_eq!(uarch(amd, 25, 17, 1), Some("Zen 4")); // EPYC 9R14 (m7a/c7a)
        assert_eq!(uarch(amd, 25, 1, 1), Some("Zen 3")); // EPYC 7R13 (m6a)
        assert_eq!(uarch(amd, 26, 2, 0), Some("Zen 5")); // EPYC 9005 (Turin)
        assert_eq!(uarch(amd, 23, 49, 0), Some("Zen 2")); // EPYC 7R32 (c5a)
        assert_eq!(uarch(intel, 6, 85, 4), Some("Skylake-SP")); // m5, c5 (Platinum 8175M)
        assert_eq!(uarch(intel, 6, 85, 7), Some("Cascade Lake")); // m5, g4dn (Platinum 8259CL)
        assert_eq!(uarch(intel, 6, 106, 6), Some("Ice Lake-SP")); // m6i, c6i (Platinum 8375C)
        assert_eq!(uarch(intel, 6, 143, 8), Some("Sapphire Rapids")); // m7i
        assert_eq!(uarch(intel, 6, 207, 2), Some("Emerald Rapids"));
        assert_eq!(uarch(intel, 6, 1, 0), None);
        assert_eq!(uarch("HygonGenuine", 24, 0, 0), None);
    }

    #[test]
    fn this_cpu_reports_its_caches_innermost_smallest() {
        let id = CpuId::get();
        if cfg!(target_arch = "x86_64") {
            assert!(!id.vendor.is_empty(), "CPUID gave no vendor: {id:?}");
            // Every x86-64 CPU since the first has an L1 data cache and an L2.
            assert!(id.l1d >= 16 << 10 && id.l2 > id.l1d, "{id:?}");
            assert!(id.l3 == 0 || id.l3 >= id.l2, "{id:?}");
        }
        assert!(id.describe().contains(&format!("family {} model {}", id.family, id.model)));
    }
}
