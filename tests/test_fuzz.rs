//! Mutated images (bit flips, truncations, header edits, splices of the
//! test corpus) through decode, and through the whole pipeline, for a
//! bounded time: no panic escapes, and every input has an outcome.
//!
//! `FRUITS_FUZZ_SECS` sets the in-process budget (default 20 s; CI runs the
//! default); the seed is printed, and a failing input is saved under
//! `target/fuzz-failures/` to replay.

use std::io::Cursor;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fruits::image::{prepare, RejectKind};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::util::{fruits, manifest, repo, run, sample_dir, stderr, Dir};

/// Every format the decoder reads, from the sample photos and odd files,
/// plus each sample re-encoded as PNG, GIF, BMP, TIFF and WebP.
fn corpus() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in [sample_dir().join("Training/Apple"), sample_dir().join("Test/Kiwi"), repo().join("tests/data/odd")] {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.push((p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()));
        }
    }
    let img = image::open(sample_dir().join("Training/Orange/0_100.jpg")).unwrap();
    let small = img.resize_exact(40, 30, image::imageops::FilterType::Triangle);
    for (name, format) in [
        ("o.png", image::ImageFormat::Png),
        ("o.gif", image::ImageFormat::Gif),
        ("o.bmp", image::ImageFormat::Bmp),
        ("o.tiff", image::ImageFormat::Tiff),
        ("o.webp", image::ImageFormat::WebP),
    ] {
        let mut bytes = Vec::new();
        small.to_rgba8().write_to(&mut Cursor::new(&mut bytes), format).unwrap_or_else(|_| {
            small.to_rgb8().write_to(&mut Cursor::new(&mut bytes), format).unwrap();
        });
        out.push((name.to_string(), bytes));
    }
    out
}

/// One random mutation of `bytes`.
fn mutate(rng: &mut ChaCha8Rng, bytes: &mut Vec<u8>, corpus: &[(String, Vec<u8>)]) {
    if bytes.is_empty() {
        bytes.push(rng.random());
        return;
    }
    match rng.random_range(0..6) {
        // Bit flips anywhere.
        0 => {
            for _ in 0..rng.random_range(1..=8) {
                let i = rng.random_range(0..bytes.len());
                bytes[i] ^= 1 << rng.random_range(0..8);
            }
        }
        // Truncation.
        1 => {
            let n = rng.random_range(0..bytes.len());
            bytes.truncate(n);
        }
        // Header edits: sizes, lengths, markers in the first 64 bytes.
        2 => {
            let i = rng.random_range(0..bytes.len().min(64));
            let v: &[u8] = match rng.random_range(0..5) {
                0 => &[0x00, 0x00],
                1 => &[0xFF, 0xFF],
                2 => &[0x7F, 0xFF, 0xFF, 0xFF],
                3 => &[0x80, 0x00, 0x00, 0x00],
                _ => &[0x00, 0x01],
            };
            for (k, b) in v.iter().enumerate() {
                if let Some(x) = bytes.get_mut(i + k) {
                    *x = *b;
                }
            }
        }
        // Random bytes over a random span.
        3 => {
            let a = rng.random_range(0..bytes.len());
            let z = (a + rng.random_range(1..64)).min(bytes.len());
            rng.fill_bytes(&mut bytes[a..z]);
        }
        // Splice: the head of this file, the tail of another.
        4 => {
            let other = &corpus[rng.random_range(0..corpus.len())].1;
            let a = rng.random_range(0..bytes.len());
            let b = rng.random_range(0..other.len());
            bytes.truncate(a);
            bytes.extend_from_slice(&other[b..]);
        }
        // Duplicate a span (repeated chunks, doubled markers).
        _ => {
            let a = rng.random_range(0..bytes.len());
            let z = (a + rng.random_range(1..256)).min(bytes.len());
            let span = bytes[a..z].to_vec();
            let at = rng.random_range(0..bytes.len());
            bytes.splice(at..at, span);
        }
    }
}

fn seed() -> u64 {
    std::env::var("FRUITS_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_f00d)
}

#[test]
fn mutated_images_never_panic_the_decoder() {
    let budget = Duration::from_secs(std::env::var("FRUITS_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20));
    let corpus = corpus();
    let mut rng = ChaCha8Rng::seed_from_u64(seed());
    let start = Instant::now();
    let (mut iterations, mut ok, mut crashes) = (0u64, 0u64, 0u64);
    let mut kinds = std::collections::BTreeMap::new();
    while start.elapsed() < budget {
        let (name, original) = &corpus[rng.random_range(0..corpus.len())];
        let mut bytes = original.clone();
        for _ in 0..rng.random_range(1..=3) {
            mutate(&mut rng, &mut bytes, &corpus);
        }
        // A panic escaping `prepare` fails the test: keep the input to replay.
        let result = std::panic::catch_unwind(|| prepare(&bytes, 224));
        match result {
            Ok(Ok(p)) => {
                assert_eq!(p.rgb.len(), 224 * 224 * 3);
                ok += 1;
            }
            Ok(Err(r)) => {
                crashes += (r.kind == RejectKind::DecoderCrash) as u64;
                *kinds.entry(r.kind.as_str()).or_insert(0u64) += 1;
            }
            Err(_) => {
                let dir = repo().join("target/fuzz-failures");
                std::fs::create_dir_all(&dir).unwrap();
                let path = dir.join(format!("{iterations}-{name}"));
                std::fs::write(&path, &bytes).unwrap();
                panic!("prepare panicked on a mutation of {name} (seed {}): saved to {}", seed(), path.display());
            }
        }
        iterations += 1;
    }
    eprintln!(
        "fuzz: {iterations} mutated inputs in {:.1} s (seed {}): {ok} decoded, rejected {kinds:?}, {crashes} decoder panics caught",
        start.elapsed().as_secs_f64(),
        seed()
    );
    assert!(iterations >= 200, "only {iterations} inputs in {budget:?}: the fuzz run proves little");
    assert!(ok > 0 && !kinds.is_empty(), "mutations should give both outcomes");
}

/// 150 mutated files through the real binary: every one is a row or a
/// rejection, the manifest counts them all, and nothing panics.
#[test]
fn mutated_images_through_the_pipeline_all_end_somewhere() {
    let dir = Dir::new("fuzz-pipeline");
    let corpus = corpus();
    let mut rng = ChaCha8Rng::seed_from_u64(seed() ^ 1);
    let mut names = Vec::new();
    for i in 0..150 {
        let (name, original) = &corpus[i % corpus.len()];
        let mut bytes = original.clone();
        mutate(&mut rng, &mut bytes, &corpus);
        let ext = PathBuf::from(name).extension().unwrap().to_string_lossy().into_owned();
        let file = format!("in/m{i:03}.{ext}");
        dir.write(&file, &bytes);
        names.push(file);
    }
    let mut cmd = fruits();
    cmd.args(["featurize", "--weights", "random:1", "--quiet", "--batch", "16", "--max-rejected", "1", "--input"])
        .arg(dir.join("in"))
        .arg("--output")
        .arg(dir.join("out"));
    let err = stderr(&run(cmd, 0));
    assert!(!err.contains("panicked"), "{err}");
    let m = manifest(&dir.join("out"), 0);
    let (featurised, rejected) =
        (m["counts"]["featurised"].as_u64().unwrap(), m["counts"]["rejected"].as_u64().unwrap());
    assert_eq!(featurised + rejected, names.len() as u64, "{m}");
    assert_eq!(m["counts"]["inputs"], names.len() as u64);
    let mut errors = csv::Reader::from_path(crate::util::part_file(&dir.join("out"), 0, "errors")).unwrap();
    assert_eq!(errors.records().count() as u64, rejected, "one errors row per rejection");
    eprintln!("fuzz pipeline: {featurised} featurised, {rejected} rejected of {}", names.len());
}
