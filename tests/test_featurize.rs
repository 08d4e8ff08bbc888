//! `fruits featurize` as a user runs it: the real binary, real images, and
//! the Parquet read back by pyarrow and DuckDB.

use std::path::Path;

use fruits::engine::Model;
use fruits::model::Which;

use crate::util::{files_under, fruits, manifest, part_file, read_parquet, repo, run, sample_dir, stderr, Dir};

const SEED: &str = "random:3";

fn featurize(dir: &Dir, input: &Path, extra: &[&str]) -> std::process::Command {
    let mut cmd = fruits();
    cmd.arg("featurize").arg("--input").arg(input).arg("--output").arg(dir.join("out"));
    cmd.args(["--weights", SEED, "--quiet"]).args(extra);
    cmd
}

/// Features the library computes in-process for `paths`, to compare with the file.
fn expected_features(which: Which, paths: &[String]) -> Vec<Vec<f32>> {
    let model = Model::random(which, 3).unwrap();
    let res = which.resolution();
    let mut rgb = Vec::new();
    for p in paths {
        rgb.extend(fruits::image::prepare(&std::fs::read(p).unwrap(), res as u32).unwrap().rgb);
    }
    model.features(&rgb).unwrap().chunks(which.feature_dim()).map(<[f32]>::to_vec).collect()
}

fn strings(v: &serde_json::Value) -> Vec<Option<String>> {
    v.as_array().unwrap().iter().map(|s| s.as_str().map(str::to_string)).collect()
}

fn features_of(v: &serde_json::Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|row| row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
        .collect()
}

#[test]
fn sample_to_parquet_read_by_pyarrow_and_duckdb() {
    for which in Which::ALL {
        let dir = Dir::new("sample");
        // On the CPU: the file must hold the CPU engine's numbers to 1e-5
        // (the CUDA engine's own parity is tests/test_gpu.rs's).
        let args = ["--model", which.name(), "--batch", "5", "--device", "cpu"];
        let out = run(featurize(&dir, &sample_dir(), &args), 0);
        let err = stderr(&out);
        assert!(err.contains("featurised 19 of 19 images"), "{err}");
        assert!(err.contains("random weights"), "random weights must be announced: {err}");

        let pq = read_parquet(&part_file(&dir.join("out"), 0, "rows"));
        assert_eq!(pq["rows"], 19);
        assert_eq!(pq["duckdb"]["rows"], 19);
        assert_eq!(pq["duckdb"]["min_len"], 1280);
        assert_eq!(pq["duckdb"]["max_len"], 1280);
        assert_eq!(pq["schema"]["path"], "string");
        assert_eq!(pq["schema"]["label"], "string");
        assert_eq!(pq["schema"]["split"], "string");
        assert_eq!(pq["schema"]["features"], "list<element: float not null>");
        assert_eq!(pq["schema"]["width"], "int32");
        assert_eq!(pq["compression"], "ZSTD");
        assert_eq!(pq["nullable"]["label"], true);
        let meta = &pq["metadata"];
        assert_eq!(meta["fruits.model"], which.name());
        assert_eq!(meta["fruits.weights"], SEED);
        assert_eq!(meta["fruits.feature_dim"], "1280");
        assert_eq!(meta["fruits.dtype"], "f32");
        assert_eq!(meta["fruits.run_id"], "default");
        assert!(meta["fruits.preprocessing"].as_str().unwrap().contains("catmull-rom"));
        assert_eq!(meta["fruits.version"], env!("CARGO_PKG_VERSION"));

        let cols = &pq["columns"];
        let paths: Vec<String> = strings(&cols["path"]).into_iter().map(Option::unwrap).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted, "rows come in path order");
        assert!(paths[0].ends_with("Test/Apple/f0_100.jpg"), "{}", paths[0]);
        let labels = strings(&cols["label"]);
        let splits = strings(&cols["split"]);
        assert_eq!(labels[0].as_deref(), Some("Apple"));
        assert_eq!(splits[0].as_deref(), Some("Test"));
        assert_eq!(splits.iter().filter(|s| s.as_deref() == Some("Training")).count(), 14);
        assert!(cols["width"].as_array().unwrap().iter().all(|w| w == 100));

        // The file holds exactly what the model computes for each image.
        let got = features_of(&cols["features"]);
        let want = expected_features(which, &paths);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let diff = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(diff < 1e-5, "{which} row {i} ({}): max diff {diff}", paths[i]);
        }

        let errors = std::fs::read_to_string(part_file(&dir.join("out"), 0, "errors")).unwrap();
        assert_eq!(errors.trim(), "path,kind,reason");
    }
}

/// The kernels for CPUs without AVX-512 (AVX2 laptops, and the portable
/// loops for everything else), forced here with FRUITS_SIMD, compute the
/// features the AVX-512 kernels do, up to rounding.
///
/// Not bit for bit, and cannot be: the AVX-512 and AVX2 GEMMs fuse each
/// multiply-add (one rounding), the portable loops round twice, and the
/// vector widths split the dot products' partial sums differently. Each
/// step is within 2^-24 relative, and the error grows through ~60 layers to
/// a measured 1.4e-5 × max |f| for mobilenetv2 and 1.8e-6 for
/// mobilenetv4-small (portable against AVX512-BF16, random:3, the 19 sample
/// photos). The bound, 1e-4 × max |f|, leaves 7× of the worst and is the
/// one the parity test holds both engines to against timm.
#[test]
fn every_simd_level_gives_the_same_features() {
    for which in Which::ALL {
        for level in ["avx2", "portable"] {
            let dir = Dir::new(&format!("simd-{level}-{which}"));
            let mut cmd = featurize(&dir, &sample_dir(), &["--model", which.name(), "--device", "cpu"]);
            run(cmd.env("FRUITS_SIMD", level), 0);
            let pq = read_parquet(&part_file(&dir.join("out"), 0, "rows"));
            let cols = &pq["columns"];
            let paths: Vec<String> = strings(&cols["path"]).into_iter().map(Option::unwrap).collect();
            let got = features_of(&cols["features"]);
            let want = expected_features(which, &paths);
            let max_abs = want.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
            let diff = got.iter().flatten().zip(want.iter().flatten()).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert_eq!(got.len(), 19);
            assert!(diff <= 1e-4 * max_abs, "{which} {level}: max diff {diff:e} (max |f| {max_abs})");
        }
    }
}

/// Bit for bit: the CPU engine computes each image alone, in one order of
/// operations that neither the batch nor the thread count changes (on the
/// same machine; other SIMD levels round otherwise, see above). The CUDA
/// engine's batch test, to a tolerance, is in test_gpu.
#[test]
fn batch_size_and_threads_do_not_change_results() {
    let a = Dir::new("batch-a");
    let b = Dir::new("batch-b");
    run(featurize(&a, &sample_dir(), &["--batch", "1", "--threads", "1", "--device", "cpu"]), 0);
    run(featurize(&b, &sample_dir(), &["--batch", "64", "--threads", "2", "--device", "cpu"]), 0);
    let fa = read_parquet(&part_file(&a.join("out"), 0, "rows"));
    let fb = read_parquet(&part_file(&b.join("out"), 0, "rows"));
    assert_eq!(fa["columns"]["path"], fb["columns"]["path"]);
    let (ga, gb) = (features_of(&fa["columns"]["features"]), features_of(&fb["columns"]["features"]));
    assert_eq!(ga, gb, "batch 1 on 1 thread against batch 64 on 2");
}

/// Writes a corpus of bad and odd images beside one good one.
fn corpus(dir: &Dir) -> std::path::PathBuf {
    let root = dir.join("in");
    let good = std::fs::read(sample_dir().join("Training/Apple/0_100.jpg")).unwrap();
    let odd = crate::util::repo().join("tests/data/odd");
    dir.write("in/good.jpg", &good);
    dir.write("in/empty.jpg", b"");
    dir.write("in/truncated.jpg", &good[..good.len() / 2]);
    let mut corrupt = good[..20].to_vec();
    corrupt.extend(std::iter::repeat_n(0x5Au8, 400));
    corrupt.extend([0xFF, 0xDA, 0x00, 0x02, 0x11, 0xFF, 0xD9]);
    dir.write("in/corrupt.jpg", &corrupt);
    dir.write("in/text.jpg", b"this is a shopping list, not a photo\n");
    dir.write("in/huge.png", &huge_png(100_000, 100_000));
    dir.write("in/notes.txt", b"not an image name: counted, not read");
    // Phones write AVIF and HEIC: recognised by content, rejected naming the format.
    dir.write("in/phone.avif", &iso_bmff(b"avif", &[b"mif1", b"miaf"]));
    dir.write("in/IMG_0001.HEIC", &iso_bmff(b"heic", &[b"mif1", b"heic"]));
    for f in ["cmyk.jpg", "grey16.png", "alpha.png", "grey.jpg", "palette.png", "exif_rotate90.jpg"] {
        dir.write(&format!("in/{f}"), &std::fs::read(odd.join(f)).unwrap());
    }
    // A 16-bit RGB PNG made here, and a truncated PNG.
    let img = image::ImageBuffer::<image::Rgb<u16>, _>::from_fn(30, 20, |x, y| {
        image::Rgb([x as u16 * 2000, y as u16 * 3000, 40000])
    });
    img.save(root.join("rgb16.png")).unwrap();
    let png = std::fs::read(odd.join("alpha.png")).unwrap();
    dir.write("in/truncated.png", &png[..png.len() / 2]);
    root
}

/// The start of an ISO base media file (AVIF, HEIF): an `ftyp` box with
/// its major and compatible brands, then an empty `meta` box.
pub(crate) fn iso_bmff(major: &[u8; 4], compatible: &[&[u8; 4]]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(((16 + 4 * compatible.len()) as u32).to_be_bytes());
    b.extend(b"ftyp");
    b.extend(major);
    b.extend([0, 0, 0, 0]);
    for c in compatible {
        b.extend(*c);
    }
    b.extend(12u32.to_be_bytes());
    b.extend(b"meta");
    b.extend([0, 0, 0, 0]);
    b
}

/// A valid PNG header declaring `w`×`h` pixels, with a tiny IDAT: a
/// decompression bomb's shape, refused on its declared size.
fn huge_png(w: u32, h: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend(kind);
        out.extend(data);
        let crc = crc32(&out[start..]);
        out.extend(crc.to_be_bytes());
    }
    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &b in bytes {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(&mut out, b"IEND", &[]);
    out
}

#[test]
fn bad_inputs_are_recorded_and_the_run_goes_on() {
    let dir = Dir::new("bad");
    let input = corpus(&dir);
    let out = run(featurize(&dir, &input, &["--max-rejected", "0.5"]), 0);
    let err = stderr(&out);

    let csv = std::fs::read_to_string(part_file(&dir.join("out"), 0, "errors")).unwrap();
    let mut rejected: Vec<(String, String)> = csv
        .lines()
        .skip(1)
        .map(|l| {
            let mut f = l.splitn(3, ',');
            let path = f.next().unwrap();
            let name = Path::new(path).file_name().unwrap().to_string_lossy().into_owned();
            (name, f.next().unwrap().to_string())
        })
        .collect();
    rejected.sort();
    let want: Vec<(String, String)> = [
        ("IMG_0001.HEIC", "unsupported"),
        ("corrupt.jpg", "corrupt"),
        ("empty.jpg", "empty"),
        ("huge.png", "too-large"),
        ("phone.avif", "unsupported"),
        ("text.jpg", "unsupported"),
        ("truncated.jpg", "truncated"),
        ("truncated.png", "truncated"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(rejected, want, "errors file:\n{csv}\nstderr:\n{err}");
    assert!(csv.contains("phone.avif,unsupported,\"AVIF image: fruits decodes JPEG, PNG"), "{csv}");
    assert!(csv.contains("IMG_0001.HEIC,unsupported,\"HEIF/HEIC image"), "{csv}");
    assert!(err.contains("featurised 8 of 16 images"), "{err}");
    // The one file that is no image by name is counted, not lost.
    assert!(err.contains("1 files are not images, not read:") && err.contains("notes.txt"), "{err}");
    let m = manifest(&dir.join("out"), 0);
    assert_eq!(m["counts"]["inputs"], 16);
    assert_eq!(m["counts"]["featurised"], 8);
    assert_eq!(m["counts"]["rejected"], 8);
    assert_eq!(m["counts"]["not_images"], 1);

    let pq = read_parquet(&part_file(&dir.join("out"), 0, "rows"));
    let names: Vec<String> = strings(&pq["columns"]["path"])
        .into_iter()
        .map(|p| Path::new(&p.unwrap()).file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "alpha.png",
            "cmyk.jpg",
            "exif_rotate90.jpg",
            "good.jpg",
            "grey.jpg",
            "grey16.png",
            "palette.png",
            "rgb16.png"
        ]
    );
    let size = |name: &str| {
        let i = names.iter().position(|n| n == name).unwrap();
        (pq["columns"]["width"][i].as_i64().unwrap(), pq["columns"]["height"][i].as_i64().unwrap())
    };
    // Stored 64×48 with EXIF orientation 6: upright it is 48×64.
    assert_eq!(size("exif_rotate90.jpg"), (48, 64));
    assert_eq!(size("cmyk.jpg"), (64, 48));
    assert_eq!(size("rgb16.png"), (30, 20));
    // Every accepted row has finite, non-constant features.
    for row in features_of(&pq["columns"]["features"]) {
        assert!(row.iter().all(|v| v.is_finite()));
        assert!(row.iter().any(|v| (v - row[0]).abs() > 1e-6));
    }
}

#[test]
fn too_many_rejections_exit_3_but_keep_outputs() {
    let dir = Dir::new("too-many");
    let input = corpus(&dir);
    let out = run(&mut featurize(&dir, &input, &[]), 3);
    assert!(stderr(&out).contains("more than --max-rejected 0.01"), "{}", stderr(&out));
    assert!(part_file(&dir.join("out"), 0, "rows").exists(), "the part is committed all the same");
    assert!(part_file(&dir.join("out"), 0, "errors").exists());
}

#[test]
fn exif_orientation_is_applied_to_pixels() {
    // The rotated file, decoded, equals the plain image turned 90° clockwise
    // (up to JPEG noise): compare against the unrotated source re-encoded the same way.
    let odd = crate::util::repo().join("tests/data/odd");
    let rotated = fruits::image::decode_rgb8(&std::fs::read(odd.join("exif_rotate90.jpg")).unwrap()).unwrap();
    assert_eq!(rotated.dimensions(), (48, 64));
    let plain = fruits::image::decode_rgb8(&std::fs::read(odd.join("cmyk.jpg")).unwrap()).unwrap();
    let turned = image::imageops::rotate90(&plain);
    let mean_diff: f64 = rotated
        .pixels()
        .zip(turned.pixels())
        .map(|(a, b)| (0..3).map(|c| (a[c] as f64 - b[c] as f64).abs()).sum::<f64>())
        .sum::<f64>()
        / (48.0 * 64.0 * 3.0);
    assert!(mean_diff < 12.0, "mean abs pixel difference {mean_diff}");
}

#[test]
fn key_list_from_stdin_keeps_its_order() {
    let dir = Dir::new("keys");
    let a = sample_dir().join("Training/Orange/1_100.jpg");
    let b = sample_dir().join("Test/Kiwi/f0_100.jpg");
    let mut cmd = fruits();
    cmd.args(["featurize", "--keys", "-", "--weights", SEED, "--quiet", "--output"]).arg(dir.join("out"));
    cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    use std::io::Write;
    // A blank line, and `a` listed again: featurised once.
    writeln!(child.stdin.take().unwrap(), "{}\n\n{}\n{}", a.display(), b.display(), a.display()).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("featurised 2 of 2 images") && err.contains("1 duplicate keys dropped"), "{err}");
    assert_eq!(manifest(&dir.join("out"), 0)["counts"]["duplicates"], 1);
    let pq = read_parquet(&part_file(&dir.join("out"), 0, "rows"));
    let paths = strings(&pq["columns"]["path"]);
    assert_eq!(paths, vec![Some(a.display().to_string()), Some(b.display().to_string())]);
    assert_eq!(strings(&pq["columns"]["label"]), vec![Some("Orange".into()), Some("Kiwi".into())]);
    assert_eq!(strings(&pq["columns"]["split"]), vec![Some("Training".into()), Some("Test".into())]);
}

#[test]
fn part_id_names_the_files_and_a_rerun_replaces_the_part() {
    let dir = Dir::new("part");
    run(featurize(&dir, &sample_dir(), &["--part-id", "42"]), 0);
    let first = manifest(&dir.join("out"), 42);
    run(featurize(&dir, &sample_dir(), &["--part-id", "42"]), 0);
    let second = manifest(&dir.join("out"), 42);
    assert_ne!(first["attempt"], second["attempt"], "each attempt has its own id");
    let att = second["attempt"].as_str().unwrap();
    assert_eq!(
        files_under(&dir.join("out")),
        [
            format!("_fruits/part-00042-{att}.errors.csv"),
            format!("_fruits/part-00042-{att}.stats.safetensors"),
            "_fruits/part-00042.manifest.json".to_string(),
            format!("part-00042-{att}.parquet"),
        ],
        "the replaced attempt's files are gone, no temporary file is left"
    );
    assert_eq!(read_parquet(&part_file(&dir.join("out"), 42, "rows"))["rows"], 19);
    // The manifest records every file's size, rows and sha256 (checked here by Python).
    for f in second["files"].as_array().unwrap() {
        let path = dir.join("out").join(f["name"].as_str().unwrap());
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(f["bytes"].as_u64().unwrap(), bytes.len() as u64);
        let sha = std::process::Command::new(crate::util::python())
            .args(["-c", "import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],'rb').read()).hexdigest())"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(f["sha256"].as_str().unwrap(), String::from_utf8_lossy(&sha.stdout).trim(), "{}", path.display());
    }
}

#[test]
fn fatal_errors_stop_with_one_clear_message() {
    let dir = Dir::new("fatal");
    // Missing input folder.
    let out = run(&mut featurize(&dir, &dir.join("nope"), &[]), 1);
    let err = stderr(&out);
    assert!(err.contains("nope") && err.contains("cannot read input"), "{err}");
    assert_eq!(err.matches("fruits: error").count(), 1, "printed once: {err}");
    assert_eq!(err.matches("No such file").count(), 1, "cause printed once: {err}");

    // A folder with no images.
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    dir.write("empty/readme.txt", b"hi");
    let err = stderr(&run(&mut featurize(&dir, &dir.join("empty"), &[]), 1));
    assert!(err.contains("no images in") && err.contains("1 files, none named as an image"), "{err}");

    // Missing weights file: named.
    let mut cmd = fruits();
    cmd.args(["featurize", "--quiet", "--input"])
        .arg(sample_dir())
        .arg("--weights")
        .arg(dir.join("missing.safetensors"))
        .arg("--output")
        .arg(dir.join("o"));
    let err = stderr(&run(&mut cmd, 1));
    assert!(err.contains("missing.safetensors"), "{err}");

    // No weights and no hub (tests have no network): says what to do.
    let mut cmd = fruits();
    cmd.args(["featurize", "--quiet", "--input"]).arg(sample_dir()).arg("--output").arg(dir.join("o"));
    let err = stderr(&run(&mut cmd, 1));
    assert!(err.contains("--weights") && err.contains("timm/mobilenetv2_100.ra_in1k"), "{err}");
}

#[test]
fn bad_flags_are_usage_errors_naming_the_flag() {
    let dir = Dir::new("flags");
    for (args, needle) in [
        (vec!["--max-rejected", "1.5"], "--max-rejected"),
        (vec!["--batch", "0"], "--batch"),
        (vec!["--model", "resnet"], "--model"),
        (vec!["--weights", "random:abc"], "--weights"),
        (vec!["--bogus"], "--bogus"),
        (vec!["--dtype", "f16", "--device", "cpu"], "--dtype"),
        (vec!["--engine", "onnx"], "--engine"),
        (vec!["--dtype", "bf16", "--engine", "candle"], "--dtype bf16 needs the native engine"),
        (vec!["--threads", "0"], "--threads"),
        (vec!["--max-image-bytes", "12X"], "--max-image-bytes"),
        (vec!["--max-image-bytes", "0"], "--max-image-bytes"),
        (vec!["--run-id", "a/b"], "--run-id"),
        (vec!["--part-id=-1"], "--part-id"),
    ] {
        let err = stderr(&run(&mut featurize(&dir, &sample_dir(), &args), 2));
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// The resize is Pillow's BICUBIC, which the timm/PyTorch world (and the
/// ONNX Runtime comparison in benches/compare) feeds its models: the same
/// pixels up to rounding. Fixtures: tests/fixtures/make_resize.py.
#[test]
fn resize_matches_pillow_bicubic() {
    let dir = repo().join("tests/fixtures/resize");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let small = entry.unwrap().path();
        let Some(name) = small.file_name().unwrap().to_str().unwrap().strip_suffix("_100.png") else { continue };
        let got = fruits::image::prepare(&std::fs::read(&small).unwrap(), 224).unwrap();
        assert_eq!((got.width, got.height), (100, 100));
        let want = image::open(dir.join(format!("{name}_224.png"))).unwrap().into_rgb8().into_raw();
        assert_eq!(got.rgb.len(), want.len());
        let diffs: Vec<u32> = got.rgb.iter().zip(&want).map(|(&a, &b)| a.abs_diff(b) as u32).collect();
        let max = *diffs.iter().max().unwrap();
        let mean = diffs.iter().sum::<u32>() as f64 / diffs.len() as f64;
        // Both round in fixed point, in a different order: a few levels at
        // most on a hard edge, a small fraction of a level on average.
        assert!(max <= 3 && mean <= 0.2, "{name}: |fruits - Pillow| max {max}, mean {mean:.3} (allowed 3, 0.2)");
        checked += 1;
    }
    assert_eq!(checked, 3);
}
