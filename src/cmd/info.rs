//! `fruits info`

use std::path::PathBuf;
use std::process::ExitCode;

use fruits::engine::cpu_id::CpuId;
use fruits::engine::cuda::{self, kernel_cache, nvrtc};
use fruits::engine::peak;
use fruits::engine::simd::{detected, simd};

/// Print what this machine offers the engines: the CPU (its micro-architecture, caches,
/// vector instructions and measured multiply-add peak, a quarter-second's measurement
/// per dtype; `fruits bench peak` measures longer and every level), and the CUDA devices found (name, memory, compute capability; driver, cuBLAS and NVRTC
/// versions) or why none can be used. `--device auto` takes the first device listed.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Also compile the CUDA kernels with NVRTC for ARCH (`sm_75` gives a T4's machine
    /// code, as the engine loads it; `compute_75` gives PTX) and report their size: checks
    /// NVRTC on a node, with or without a GPU. Exit status 1 if they do not compile.
    #[arg(long, value_name = "ARCH", value_parser = parse_arch)]
    kernels: Option<String>,
    /// With --kernels: write the result to DIR/kernels.ARCH.cubin (or .ptx).
    #[arg(long, value_name = "DIR", requires = "kernels")]
    out: Option<PathBuf>,
    /// As one JSON object.
    #[arg(long)]
    json: bool,
}

fn parse_arch(s: &str) -> Result<String, String> {
    let digits = s.strip_prefix("sm_").or_else(|| s.strip_prefix("compute_"));
    match digits {
        Some(d) if d.len() >= 2 && d.chars().all(|c| c.is_ascii_digit()) => Ok(s.to_string()),
        _ => Err(format!("'{s}' is no CUDA architecture: use sm_XY (machine code) or compute_XY (PTX), e.g. sm_75")),
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cuda = match cuda::probe() {
        Ok(found) => serde_json::json!({
            "driver_cuda_api": cuda::probe::api_version(found.driver_api),
            "cublas_major": found.cublas_version,
            "nvrtc": format!("{}.{}", found.nvrtc_version.0, found.nvrtc_version.1),
            "devices": found.devices.iter().map(|d| serde_json::json!({
                "ordinal": d.ordinal,
                "name": d.name,
                "memory_bytes": d.memory_bytes,
                "arch": d.arch(),
            })).collect::<Vec<_>>(),
        }),
        Err(why) => serde_json::json!({ "unavailable": why.0 }),
    };
    let info = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "cpu": cpu_json(),
        "cuda": cuda,
    });
    if args.json {
        say!("{info}");
    } else {
        print_text(&info);
    }
    match &args.kernels {
        Some(arch) => compile_kernels(arch, args.out.as_deref()),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// The CPU as figures name it: which one, its caches, the level the engine
/// uses (`simd`; `detected` is the CPU's own, before `FRUITS_SIMD`), and
/// that level's measured peak on all threads.
pub fn cpu_json() -> serde_json::Value {
    let id = CpuId::get();
    let p = peak::measure(simd(), std::time::Duration::from_millis(250));
    serde_json::json!({
        "uarch": id.uarch(),
        "describe": id.describe(),
        "brand": id.brand,
        "vendor": id.vendor,
        "family": id.family,
        "model": id.model,
        "stepping": id.stepping,
        "cache_bytes": { "l1d": id.l1d, "l2": id.l2, "l3": id.l3 },
        "threads": rayon::current_num_threads(),
        "simd": simd().name(),
        "detected": detected().name(),
        "peak_gflops": { "f32": p.f32_gflops, "bf16": p.bf16_gflops },
    })
}

fn print_text(info: &serde_json::Value) {
    say!("fruits {}", info["version"].as_str().unwrap_or("?"));
    let cpu = &info["cpu"];
    let str_of = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_string();
    say!("cpu: {}, {}", str_of(&cpu["describe"]), str_of(&cpu["brand"]));
    let kib = |level: &str| cpu["cache_bytes"][level].as_u64().unwrap_or(0) / 1024;
    say!("cpu: caches L1d {} KiB, L2 {} KiB, L3 {} KiB (as a core sees them)", kib("l1d"), kib("l2"), kib("l3"));
    let capped = if cpu["simd"] == cpu["detected"] {
        String::new()
    } else {
        format!(" (capped by FRUITS_SIMD; the CPU has {})", str_of(&cpu["detected"]))
    };
    let bf16 = cpu["peak_gflops"]["bf16"].as_f64().map(|g| format!(", bf16 {g:.0}")).unwrap_or_default();
    say!(
        "cpu: {} threads, {}{capped}; measured peak f32 {:.0} GFLOP/s{bf16} (`fruits bench peak`)",
        cpu["threads"],
        str_of(&cpu["simd"]),
        cpu["peak_gflops"]["f32"].as_f64().unwrap_or(0.0)
    );
    let cuda = &info["cuda"];
    if let Some(why) = cuda["unavailable"].as_str() {
        say!("cuda: none usable: {why}");
        return;
    }
    say!(
        "cuda: driver supports CUDA {}, cuBLAS {}, NVRTC {}",
        cuda["driver_cuda_api"].as_str().unwrap_or("?"),
        cuda["cublas_major"],
        cuda["nvrtc"].as_str().unwrap_or("?")
    );
    for d in cuda["devices"].as_array().into_iter().flatten() {
        say!(
            "cuda:{} {}, {:.1} GiB, {}",
            d["ordinal"],
            d["name"].as_str().unwrap_or("?"),
            d["memory_bytes"].as_f64().unwrap_or(0.0) / (1u64 << 30) as f64,
            d["arch"].as_str().unwrap_or("?")
        );
    }
}

fn compile_kernels(arch: &str, out: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    let (output, ext) =
        if arch.starts_with("sm_") { (nvrtc::Output::Cubin, "cubin") } else { (nvrtc::Output::Ptx, "ptx") };
    let (image, got) = kernel_cache::compiled(arch, output)?;
    let (major, minor) = nvrtc::version()?;
    let how = match got {
        kernel_cache::Got::Cached(at) => format!("from the cache {}", at.display()),
        kernel_cache::Got::Compiled { seconds, kept: Some(at) } => {
            format!("compiled in {seconds:.2} s, kept in {}", at.display())
        }
        kernel_cache::Got::Compiled { seconds, kept: None } => format!("compiled in {seconds:.2} s, no cache"),
    };
    say!(
        "kernels: src/engine/cuda/kernels.cu for {arch} with NVRTC {major}.{minor}: {} bytes of {ext}, {how}",
        image.len()
    );
    if let Some(dir) = out {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("kernels.{arch}.{ext}"));
        std::fs::write(&path, &image).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        say!("kernels: wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
