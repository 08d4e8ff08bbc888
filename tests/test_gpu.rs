//! The CUDA engine: parity with timm and with the CPU engine where a GPU is
//! present (each such test prints "skipped: no CUDA device (reason)" on the
//! terminal where none is, never a silent pass); and, everywhere, what this
//! binary does without one: `fruits info`, `--device auto` and `cuda`, the
//! kernels compiled by NVRTC for a T4 (sm_75), and no CUDA library linked.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use fruits::engine::cuda::{self, Gpu};
use fruits::engine::{Dtype, Engine, Model, Target};
use fruits::model::Which;

use crate::test_parity::{parity_inputs, sample_photos, worst_cosine};
use crate::util::{fruits, repo, run, sample_dir, stderr, Dir};

/// The first GPU, or `None` after saying on the terminal why the test did
/// not run. Written past the test harness's capture, so `cargo test` shows it.
fn gpu_or_skip(test: &str) -> Option<Arc<Gpu>> {
    match cuda::open(0) {
        Ok(g) => Some(g),
        Err(why) => {
            let _ = writeln!(std::io::stderr(), "test_gpu::{test}: skipped: no CUDA device ({why})");
            None
        }
    }
}

/// GPU f32 against timm's features, with the CPU engine's tolerance; a
/// batch of more than one chunk gives the same rows.
fn f32_matches_timm(which: Which, test: &str) {
    let Some(g) = gpu_or_skip(test) else { return };
    let (mut model, rgb, want, max_abs) = parity_inputs(which);
    model.place(&Target::Cuda(g)).unwrap();
    assert!(model.describe().starts_with("cuda:0"), "{}", model.describe());
    let d = which.feature_dim();
    let got = model.features(&rgb).unwrap();
    let max_diff = got.iter().zip(want.iter().flatten()).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        max_diff <= 1e-4 * max_abs,
        "{which}, CUDA f32: max |fruits - timm| = {max_diff:e}, allowed {:e}",
        1e-4 * max_abs
    );
    let images = rgb.len() / (3 * which.resolution().pow(2));
    let copies = cuda::run::CHUNK / images + 2;
    let many: Vec<u8> = std::iter::repeat_n(rgb.as_slice(), copies).flatten().copied().collect();
    let rows = model.features(&many).unwrap();
    for (i, row) in rows.chunks(d).enumerate() {
        let first = &got[(i % images) * d..][..d];
        let diff = row.iter().zip(first).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff <= 1e-5 * max_abs, "{which}: row {i} of a {} image batch differs by {diff:e}", images * copies);
    }
}

#[test]
fn cuda_f32_matches_timm_mobilenetv2() {
    f32_matches_timm(Which::MobileNetV2, "cuda_f32_matches_timm_mobilenetv2");
}

#[test]
fn cuda_f32_matches_timm_mobilenetv4_small() {
    f32_matches_timm(Which::MobileNetV4Small, "cuda_f32_matches_timm_mobilenetv4_small");
}

/// TensorFlow's SAME padding (the kernels' first zero row and column
/// only; the last show in the output's size) and 5×5 depthwise kernels.
#[test]
fn cuda_f32_matches_timm_efficientnet_lite0() {
    f32_matches_timm(Which::EfficientNetLite0, "cuda_f32_matches_timm_efficientnet_lite0");
}

/// GPU f16 (tensor cores, f32 accumulation) against the CPU engine in f32
/// on the sample photos: cosine ≥ 0.999 for every photo.
fn f16_close_to_f32(which: Which, test: &str) {
    let Some(g) = gpu_or_skip(test) else { return };
    let mut model = Model::random(which, 0).unwrap();
    let rgb = sample_photos(which);
    let cpu = model.features(&rgb).unwrap();
    model.place(&Target::Cuda(g)).unwrap();
    model.set_engine(Engine::Native, Dtype::F16).unwrap();
    let f16s = model.features(&rgb).unwrap();
    assert!(cpu != f16s, "the f16 run gave the f32 numbers");
    let worst = worst_cosine(&cpu, &f16s, which.feature_dim());
    assert!(worst >= 0.999, "{which}: CUDA f16 vs CPU f32 worst cosine {worst:.5} < 0.999");
}

#[test]
fn cuda_f16_close_to_cpu_f32_mobilenetv2() {
    f16_close_to_f32(Which::MobileNetV2, "cuda_f16_close_to_cpu_f32_mobilenetv2");
}

#[test]
fn cuda_f16_close_to_cpu_f32_mobilenetv4_small() {
    f16_close_to_f32(Which::MobileNetV4Small, "cuda_f16_close_to_cpu_f32_mobilenetv4_small");
}

#[test]
fn cuda_f16_close_to_cpu_f32_efficientnet_lite0() {
    f16_close_to_f32(Which::EfficientNetLite0, "cuda_f16_close_to_cpu_f32_efficientnet_lite0");
}

/// `fruits info --json`'s CUDA section.
fn info_cuda() -> serde_json::Value {
    let out = run(fruits().args(["info", "--json"]), 0);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("info --json prints JSON");
    assert!(info["cpu"]["simd"].is_string(), "{info}");
    info["cuda"].clone()
}

fn featurize(dir: &Dir, device: &str) -> Command {
    let mut cmd = fruits();
    cmd.args(["featurize", "--quiet", "--weights", "random:1", "--device", device, "--input"])
        .arg(sample_dir())
        .arg("--output")
        .arg(dir.join(format!("out-{device}")));
    cmd
}

/// Without a GPU, `auto` runs on the CPU saying why, `cuda` stops naming the
/// same cause, and `info` agrees; with one, `auto` takes it.
#[test]
fn device_auto_and_cuda_say_why_there_is_no_gpu() {
    let cuda = info_cuda();
    let dir = Dir::new("gpu-device");
    match cuda["unavailable"].as_str() {
        Some(why) => {
            let out = run(featurize(&dir, "auto"), 0);
            let err = stderr(&out);
            let line = format!("fruits: --device auto: running on the CPU: {why}");
            assert_eq!(err.matches(&line).count(), 1, "one line saying why, got:\n{err}");
            assert!(err.contains("cpu (native engine"), "{err}");
            let out = run(featurize(&dir, "cuda"), 1);
            let err = stderr(&out);
            assert!(err.contains(&format!("--device cuda: no usable GPU: {why}")), "{err}");
            assert!(!err.contains("panicked"), "{err}");
            assert!(!dir.join("out-cuda").exists(), "nothing is written when the device is refused");
        }
        None => {
            let name = cuda["devices"][0]["name"].as_str().expect("a device is listed");
            let out = run(featurize(&dir, "auto"), 0);
            let err = stderr(&out);
            assert!(err.contains(&format!("cuda:0 ({name}")), "{err}");
            assert!(!err.contains("running on the CPU"), "{err}");
        }
    }
}

/// `auto` with an option that only the CPU runs (bf16) takes the CPU and
/// says why, GPU or not, instead of refusing the option on a GPU machine.
#[test]
fn device_auto_takes_the_cpu_for_bf16() {
    let dir = Dir::new("gpu-auto-bf16");
    let mut cmd = featurize(&dir, "auto");
    cmd.args(["--dtype", "bf16"]);
    let err = stderr(&run(cmd, 0));
    let line = "fruits: --device auto: running on the CPU: bf16 runs on the CPU only";
    assert_eq!(err.matches(line).count(), 1, "one line saying why, got:\n{err}");
    assert!(err.contains("cpu (native engine") && err.contains("bf16"), "{err}");
}

/// On a machine without libcuda (this repository's CI), the reason is that.
#[test]
fn info_names_the_missing_driver() {
    let cache = Command::new("ldconfig").arg("-p").output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if cache.as_deref().unwrap_or("libcuda.so.1").contains("libcuda.so.1") {
        let _ = writeln!(
            std::io::stderr(),
            "test_gpu::info_names_the_missing_driver: skipped: this machine has a libcuda.so.1"
        );
        return;
    }
    let out = run(fruits().env_remove("LD_LIBRARY_PATH").arg("info"), 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("cuda: none usable: no libcuda.so.1"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("cpu: ")), "{text}");
}

/// The folder of PyPI's libnvrtc.so.12 (nvidia-cuda-nvrtc-cu12 in
/// tests/requirements.txt), as the test Python sees it.
pub(crate) fn nvrtc_lib_dir() -> PathBuf {
    let code = "import nvidia.cuda_nvrtc as m, os; print(os.path.join(os.path.dirname(m.__file__), 'lib'))";
    let out = Command::new(crate::util::python()).args(["-c", code]).output().expect("python runs");
    assert!(
        out.status.success(),
        "no nvidia-cuda-nvrtc-cu12 in the test Python (tests/requirements.txt; .ci/run installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The kernel names kernels.cu instantiates: every `__global__ void NAME_##S`
/// for every `INSTANTIATE(T, S)`.
fn kernel_names_in_source() -> Vec<String> {
    let src = std::fs::read_to_string(repo().join("src/engine/cuda/kernels.cu")).unwrap();
    let bases: Vec<&str> = src
        .split("__global__ void ")
        .skip(1)
        .filter_map(|s| s.split("_##S(").next().filter(|b| !b.contains(' ')))
        .collect();
    let suffixes: Vec<&str> = src
        .lines()
        .filter_map(|l| l.strip_prefix("INSTANTIATE("))
        .filter_map(|l| l.split(", ").nth(1))
        .map(|s| s.trim_end_matches(')'))
        .collect();
    assert!(bases.len() >= 5 && suffixes == ["f32", "f16"], "{bases:?} {suffixes:?}");
    suffixes.iter().flat_map(|s| bases.iter().map(move |b| format!("{b}_{s}"))).collect()
}

/// NVRTC (no GPU needed) compiles every kernel for a T4: PTX for
/// compute_75 with every entry point, and sm_75 machine code (an ELF for
/// the CUDA machine, what the engine loads).
#[test]
fn kernels_compile_for_a_t4_with_nvrtc() {
    let dir = Dir::new("gpu-kernels");
    let lib = nvrtc_lib_dir();
    let cache = dir.join("cache");
    let kernels = |arch: &str, out: &str| {
        let mut cmd = fruits();
        cmd.env("LD_LIBRARY_PATH", &lib).env("FRUITS_KERNEL_CACHE", &cache);
        let out = run(cmd.args(["info", "--kernels", arch, "--out"]).arg(dir.join(out)), 0);
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(said.contains(&format!("src/engine/cuda/kernels.cu for {arch}")), "{said}");
        said
    };
    for arch in ["compute_75", "sm_75"] {
        let said = kernels(arch, "k");
        assert!(said.contains("compiled in") && said.contains("kept in"), "{said}");
    }
    // Compiled once: the next process reads the same bytes from the cache,
    // and a damaged cache file is compiled again, not loaded.
    let said = kernels("sm_75", "again");
    assert!(said.contains("from the cache"), "{said}");
    assert_eq!(
        std::fs::read(dir.join("again/kernels.sm_75.cubin")).unwrap(),
        std::fs::read(dir.join("k/kernels.sm_75.cubin")).unwrap()
    );
    let kept: Vec<PathBuf> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(kept.len(), 2, "one file per architecture and output: {kept:?}");
    let cubin_file = kept.iter().find(|p| p.extension().is_some_and(|e| e == "cubin")).unwrap();
    std::fs::write(cubin_file, b"half a file").unwrap();
    assert!(kernels("sm_75", "damaged").contains("compiled in"));
    assert_eq!(std::fs::read(cubin_file).unwrap(), std::fs::read(dir.join("k/kernels.sm_75.cubin")).unwrap());
    let ptx = std::fs::read_to_string(dir.join("k/kernels.compute_75.ptx")).unwrap();
    assert!(ptx.contains(".target sm_75"), "{}", &ptx[..ptx.len().min(400)]);
    let names = kernel_names_in_source();
    for name in &names {
        assert!(ptx.contains(&format!(".entry {name}(")), "no .entry {name} in the PTX");
    }
    assert_eq!(ptx.matches(".entry ").count(), names.len(), "PTX entries beyond the source's kernels");
    let cubin = std::fs::read(dir.join("k/kernels.sm_75.cubin")).unwrap();
    assert_eq!(&cubin[..4], b"\x7fELF", "a cubin is an ELF file");
    assert_eq!(u16::from_le_bytes([cubin[18], cubin[19]]), 190, "e_machine is EM_CUDA");
    for name in &names {
        assert!(cubin.windows(name.len()).any(|w| w == name.as_bytes()), "no {name} in the cubin");
    }
    // Without NVRTC the same command stops, naming the library.
    let cache = Command::new("ldconfig").arg("-p").output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if cache.as_deref().unwrap_or("").contains("libnvrtc.so.12") {
        let _ = writeln!(
            std::io::stderr(),
            "test_gpu::kernels_compile_for_a_t4_with_nvrtc: NVRTC is installed system-wide: its absence is not checked"
        );
    } else {
        let out = run(fruits().env_remove("LD_LIBRARY_PATH").args(["info", "--kernels", "sm_75"]), 1);
        assert!(stderr(&out).contains("no libnvrtc.so.12"), "{}", stderr(&out));
    }
}

/// One binary for every node: CUDA is opened at run time, never linked.
#[test]
fn binary_links_no_cuda_library() {
    let out = Command::new("ldd").arg(env!("CARGO_BIN_EXE_fruits")).output().expect("ldd runs");
    assert!(out.status.success());
    let deps = String::from_utf8_lossy(&out.stdout);
    assert!(deps.contains("libc.so"), "{deps}");
    for lib in ["libcuda", "libcublas", "libnvrtc", "libcudart"] {
        assert!(!deps.contains(lib), "the binary links {lib}:\n{deps}");
    }
}
