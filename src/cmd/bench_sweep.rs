//! `fruits bench sweep`: the engine's table, per device, dtype and batch size.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;

use fruits::engine::Dtype;
use fruits::engine::{self, DeviceChoice, Engine, Model, Target};
use fruits::features::job::{self as featurize, Input, Job, Report};
use fruits::features::pipeline;
use fruits::model::weights::Source;
use fruits::model::Which;
use fruits::storage::{FetchLimits, Location, S3Options, Storage};

/// images/s for decode+resize, inference only and end to end (`featurize` into a
/// scratch folder), for every dtype and batch size asked, with peak host memory (the
/// process's peak RSS over that measurement) and the device memory in use; printed as a
/// table and written as JSON.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    #[arg(long, value_enum, default_value_t = Which::MobileNetV2)]
    model: Which,
    /// A safetensors PATH, or random:SEED (speed does not depend on the values).
    #[arg(long, default_value = "random:0")]
    weights: Source,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// Activation types to measure [default: f32,bf16 on the CPU; f32,f16 on CUDA].
    #[arg(long, value_enum, value_delimiter = ',')]
    dtypes: Vec<Dtype>,
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,64,128,256",
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    batches: Vec<u32>,
    /// Images per measurement (rounded up to whole batches), after one warm-up batch.
    #[arg(long, default_value_t = 512)]
    images: usize,
    /// JPEG/PNG photos to decode and featurise, cycled up to --images [default: the 19
    /// embedded sample photos].
    #[arg(long, value_name = "DIR")]
    photos: Option<PathBuf>,
    /// Skip the end-to-end runs (they write and delete a scratch folder per point).
    #[arg(long)]
    no_end_to_end: bool,
    /// Write the table as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// One measured point.
#[derive(Debug, serde::Serialize)]
struct Point {
    stage: &'static str,
    device: String,
    dtype: Option<String>,
    batch: Option<usize>,
    images: usize,
    images_per_sec: f64,
    peak_host_mib: f64,
    device_used_mib: Option<f64>,
}

pub fn sweep(a: SweepArgs, s3: &S3Options) -> anyhow::Result<std::process::ExitCode> {
    let target = super::device(a.device, None)?;
    let mut m = engine::load(a.model, Some(&a.weights), &target)?;
    let dtypes = if !a.dtypes.is_empty() {
        a.dtypes.clone()
    } else if target.is_cpu() {
        vec![Dtype::F32, Dtype::Bf16]
    } else {
        vec![Dtype::F32, Dtype::F16]
    };
    let scratch = tempfile::Builder::new().prefix("fruits-bench-").tempdir()?;
    let (photos, bytes) = photo_folder(a.photos.as_deref(), a.images, scratch.path())?;
    let device = device_name(&target);
    let mut points = vec![decode(&bytes, a.model, a.images)?];
    print_point(&points[0]);
    let rgb = fruits::image::prepare(&bytes[0], a.model.resolution() as u32)
        .map_err(|r| anyhow::anyhow!("the first photo: {r}"))?
        .rgb;
    for dtype in dtypes {
        m.set_engine(Engine::Native, dtype)?;
        for &b in &a.batches {
            let p = infer(&m, &rgb, b as usize, a.images, &device, &target)?;
            print_point(&p);
            points.push(p);
            if !a.no_end_to_end {
                let p = end_to_end(&m, &photos, b as usize, scratch.path(), s3, &device, &target)?;
                print_point(&p);
                points.push(p);
            }
        }
    }
    if let Some(path) = &a.json {
        let doc = serde_json::json!({
            "model": a.model.name(),
            "weights": m.weights_id,
            "device": device,
            "threads": rayon::current_num_threads(),
            "version": env!("CARGO_PKG_VERSION"),
            "points": points,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        eprintln!("fruits: wrote {}", path.display());
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// A folder of `n` photos (the given ones or the embedded sample, cycled)
/// under `scratch`, and the bytes of each (kept for the decode measurement).
fn photo_folder(from: Option<&Path>, n: usize, scratch: &Path) -> anyhow::Result<(PathBuf, Vec<Vec<u8>>)> {
    let mut sources: Vec<(String, Vec<u8>)> = match from {
        Some(dir) => walkdir::WalkDir::new(dir)
            .sort_by_file_name()
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file())
            .map(|e| Ok((e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path())?)))
            .collect::<std::io::Result<_>>()?,
        None => fruits::features::sample::FILES.iter().map(|(name, b)| (name.replace('/', "_"), b.to_vec())).collect(),
    };
    sources.retain(|(_, b)| fruits::image::prepare(b, 8).is_ok());
    anyhow::ensure!(
        !sources.is_empty(),
        "no decodable photo in {}",
        from.map_or("the sample".into(), |d| d.display().to_string())
    );
    let dir = scratch.join("photos");
    std::fs::create_dir_all(&dir)?;
    let mut files = Vec::with_capacity(n.max(1));
    for i in 0..n.max(1) {
        let (name, bytes) = &sources[i % sources.len()];
        std::fs::write(dir.join(format!("{i:06}-{name}")), bytes)?;
        files.push(bytes.clone());
    }
    Ok((dir, files))
}

fn device_name(target: &Target) -> String {
    match target {
        Target::Cpu => {
            format!("cpu ({} threads, {})", rayon::current_num_threads(), fruits::engine::simd::simd().name())
        }
        Target::Cuda(g) => format!("cuda:{} ({})", g.info.ordinal, g.info.name),
    }
}

/// Resets the process's peak RSS (Linux ≥ 4.0), so each point reports its own.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The process's peak RSS since [`reset_peak`], in MiB.
fn peak_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kib.map_or(f64::NAN, |k| k / 1024.0)
}

fn device_used(target: &Target) -> Option<f64> {
    match target {
        Target::Cpu => None,
        Target::Cuda(g) => g.ctx.mem_get_info().ok().map(|(free, total)| (total - free) as f64 / (1u64 << 20) as f64),
    }
}

fn decode(bytes: &[Vec<u8>], which: Which, n: usize) -> anyhow::Result<Point> {
    let r = which.resolution() as u32;
    reset_peak();
    let start = Instant::now();
    let ok = bytes.par_iter().filter(|b| fruits::image::prepare(b, r).is_ok()).count();
    let secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(ok == bytes.len(), "{} of {} photos did not decode", bytes.len() - ok, bytes.len());
    Ok(Point {
        stage: "decode+resize",
        device: format!("cpu ({} threads)", rayon::current_num_threads()),
        dtype: None,
        batch: None,
        images: n,
        images_per_sec: ok as f64 / secs,
        peak_host_mib: peak_mib(),
        device_used_mib: None,
    })
}

fn infer(m: &Model, one: &[u8], b: usize, n: usize, device: &str, target: &Target) -> anyhow::Result<Point> {
    let x: Vec<u8> = std::iter::repeat_n(one, b).flatten().copied().collect();
    m.features(&x)?; // warm-up: buffers grown, kernels loaded
    reset_peak();
    let batches = n.div_ceil(b).max(1);
    let start = Instant::now();
    for _ in 0..batches {
        // Returns once the features are back in host memory (on a GPU too).
        std::hint::black_box(m.features(&x)?);
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Point {
        stage: "inference",
        device: device.to_string(),
        dtype: Some(m.dtype().name().to_string()),
        batch: Some(b),
        images: batches * b,
        images_per_sec: (batches * b) as f64 / secs,
        peak_host_mib: peak_mib(),
        device_used_mib: device_used(target),
    })
}

#[allow(clippy::too_many_arguments)]
fn end_to_end(
    m: &Model,
    photos: &Path,
    b: usize,
    scratch: &Path,
    s3: &S3Options,
    device: &str,
    target: &Target,
) -> anyhow::Result<Point> {
    let out = scratch.join(format!("out-{}-{b}", m.dtype()));
    let job = Job {
        input: Input::Folder(Location::Local(photos.to_path_buf())),
        output: Location::Local(out.clone()),
        part: 0,
        run_id: featurize::DEFAULT_RUN_ID.to_string(),
        skip_existing: false,
        overwrite: false,
        append: false,
        stream: pipeline::Options {
            batch: b,
            decode_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            limits: FetchLimits::default(),
        },
    };
    reset_peak();
    let report = featurize::run(&job, m, &Storage::new(s3.clone()), &|_, _| {})?;
    let peak = peak_mib();
    let Report::Done(done) = report else { anyhow::bail!("{}: the part was skipped", out.display()) };
    std::fs::remove_dir_all(&out)?;
    let s = &done.streamed;
    anyhow::ensure!(s.rejected.is_empty(), "{} photos rejected in the end-to-end run", s.rejected.len());
    Ok(Point {
        stage: "end to end",
        device: device.to_string(),
        dtype: Some(m.dtype().name().to_string()),
        batch: Some(b),
        images: s.featurised,
        images_per_sec: s.images_per_sec(),
        peak_host_mib: peak,
        device_used_mib: device_used(target),
    })
}

fn print_point(p: &Point) {
    say!(
        "{:<14} {:<28} {:<5} {:>5} {:>7} images {:>9.1} images/s  peak host {:>7.1} MiB{}",
        p.stage,
        p.device,
        p.dtype.as_deref().unwrap_or("-"),
        p.batch.map_or("-".to_string(), |b| b.to_string()),
        p.images,
        p.images_per_sec,
        p.peak_host_mib,
        p.device_used_mib.map_or(String::new(), |d| format!("  device {d:.0} MiB"))
    );
}
