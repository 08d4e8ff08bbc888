//! `fruits info`

use std::path::PathBuf;
use std::process::ExitCode;

use fruits::engine::cuda::{self, kernel_cache, nvrtc};
use fruits::engine::simd::simd;

/// Print what this machine offers the engines: the CPU's vector instructions, and the
/// CUDA devices found (name, memory, compute capability; driver, cuBLAS and NVRTC
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
        "cpu": { "threads": rayon::current_num_threads(), "simd": simd().name() },
        "cuda": cuda,
    });
    if args.json {
        println!("{info}");
    } else {
        print_text(&info);
    }
    match &args.kernels {
        Some(arch) => compile_kernels(arch, args.out.as_deref()),
        None => Ok(ExitCode::SUCCESS),
    }
}

fn print_text(info: &serde_json::Value) {
    println!("fruits {}", info["version"].as_str().unwrap_or("?"));
    println!("cpu: {} threads, {}", info["cpu"]["threads"], info["cpu"]["simd"].as_str().unwrap_or("?"));
    let cuda = &info["cuda"];
    if let Some(why) = cuda["unavailable"].as_str() {
        println!("cuda: none usable: {why}");
        return;
    }
    println!(
        "cuda: driver supports CUDA {}, cuBLAS {}, NVRTC {}",
        cuda["driver_cuda_api"].as_str().unwrap_or("?"),
        cuda["cublas_major"],
        cuda["nvrtc"].as_str().unwrap_or("?")
    );
    for d in cuda["devices"].as_array().into_iter().flatten() {
        println!(
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
    println!(
        "kernels: src/engine/cuda/kernels.cu for {arch} with NVRTC {major}.{minor}: {} bytes of {ext}, {how}",
        image.len()
    );
    if let Some(dir) = out {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("kernels.{arch}.{ext}"));
        std::fs::write(&path, &image).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        println!("kernels: wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
