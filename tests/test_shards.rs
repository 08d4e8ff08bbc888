//! Shards (`fruits pack`, and `featurize` reading them): every photo
//! accounted for, each shard whole or absent, and the features of a shard
//! the same, bit for bit, as those of its loose photos. Checked with an
//! independent reader (tests/shard_helper.py: pyarrow and hashlib).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{copy_tree, fruits, part_file, python, read_parquet, repo, run, sample_dir, stderr, Dir, S3Server};

fn helper(args: &[&str]) -> Value {
    let out = Command::new(python()).arg(repo().join("tests/shard_helper.py")).args(args).output().unwrap();
    assert!(out.status.success(), "shard_helper.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn pack(input: &Path, output: &Path, extra: &[&str]) -> String {
    let mut cmd = fruits();
    cmd.args(["pack", "--input"]).arg(input).arg("--output").arg(output).args(extra);
    stderr(&run(cmd, 0))
}

fn featurize(cmd: &mut Command, input: &str, output: &Path) -> String {
    cmd.args(["featurize", "--input", input, "--output"]).arg(output);
    cmd.args(["--weights", "random:3", "--quiet", "--device", "cpu"]);
    stderr(&run(cmd, 0))
}

/// The committed shards of a folder, by part number.
fn shards(folder: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for part in 0.. {
        if !folder.join(format!("_fruits/part-{part:05}.manifest.json")).exists() {
            return out;
        }
        out.push(part_file(folder, part, "rows"));
    }
    out
}

fn sha256(path: &Path) -> String {
    fruits::digest::sha256_file(path).unwrap()
}

/// The rows of part 0 (pyarrow), and its statistics: their safetensors
/// header (a JSON object whose key order is the writer's hash map's) and
/// their bytes.
fn features_of(folder: &Path) -> (Value, Value, Vec<u8>) {
    let rows = read_parquet(&part_file(folder, 0, "rows"))["columns"].clone();
    let stats = std::fs::read(part_file(folder, 0, "stats")).unwrap();
    let n = u64::from_le_bytes(stats[..8].try_into().unwrap()) as usize;
    (rows, serde_json::from_slice(&stats[8..8 + n]).unwrap(), stats[8 + n..].to_vec())
}

/// Equal features, or which column differs (the values are too many to print).
fn assert_same(a: (Value, Value, Vec<u8>), b: (Value, Value, Vec<u8>), what: &str) {
    for (column, values) in a.0.as_object().unwrap() {
        assert!(values == &b.0[column], "{what}: column {column} differs");
    }
    assert_eq!(a.0.as_object().unwrap().len(), b.0.as_object().unwrap().len(), "{what}: columns");
    assert_eq!(a.1, b.1, "{what}: statistics' header");
    assert!(a.2 == b.2, "{what}: statistics differ");
}

#[test]
fn shards_hold_every_photo_and_featurise_bit_for_bit_as_loose_photos() {
    let dir = Dir::new("shards-sample");
    let input = dir.join("in");
    copy_tree(&sample_dir(), &input);
    let out = dir.join("shards");
    let err = pack(&input, &out, &["--shard-size", "20K"]);
    assert!(err.contains("packed 19 photos into 4 shards (0 rejected, 0 already packed"), "{err}");
    // Each shard, read by pyarrow: the photos' own bytes, named and labelled
    // as featurize names loose photos, in their order; no statistics copying photos.
    let mut paths = Vec::new();
    for shard in shards(&out) {
        let s = helper(&["read", shard.to_str().unwrap()]);
        assert_eq!(s["metadata"]["fruits.shard.format"], "fruits-shard-1");
        for g in s["row_groups"].as_array().unwrap() {
            assert_eq!(
                (g["content_statistics"].as_bool(), g["compression"].as_str()),
                (Some(false), Some("UNCOMPRESSED"))
            );
        }
        for r in s["rows"].as_array().unwrap() {
            let path = PathBuf::from(r["path"].as_str().unwrap());
            assert_eq!(r["content_sha256"].as_str().unwrap(), sha256(&path), "{path:?}");
            assert_eq!(r["sha256"], r["content_sha256"]);
            assert_eq!(r["length"].as_u64().unwrap(), std::fs::metadata(&path).unwrap().len());
            let (label, split) = (path.parent().unwrap(), path.parent().unwrap().parent().unwrap());
            assert_eq!(r["label"].as_str(), label.file_name().unwrap().to_str());
            assert_eq!(r["split"].as_str(), split.file_name().unwrap().to_str());
            paths.push(path);
        }
    }
    let mut listed = Vec::new();
    for split in ["Test", "Training"] {
        let mut fruits: Vec<_> = std::fs::read_dir(input.join(split)).unwrap().map(|e| e.unwrap().path()).collect();
        fruits.sort();
        for f in fruits {
            let mut photos: Vec<_> = std::fs::read_dir(f).unwrap().map(|e| e.unwrap().path()).collect();
            photos.sort();
            listed.extend(photos);
        }
    }
    assert_eq!(paths, listed, "every photo once, in featurize's order");

    // The same features, statistics and counts as from the loose photos.
    let (loose, from_shards) = (dir.join("loose"), dir.join("from-shards"));
    let err_loose = featurize(&mut fruits(), input.to_str().unwrap(), &loose);
    let err_shards = featurize(&mut fruits(), out.to_str().unwrap(), &from_shards);
    assert!(err_loose.contains("featurised 19 of 19") && err_shards.contains("featurised 19 of 19"), "{err_shards}");
    assert_same(features_of(&from_shards), features_of(&loose), "rows and statistics, bit for bit");
    let counts = |f: &Path| crate::util::manifest(f, 0)["counts"].clone();
    assert_eq!(counts(&from_shards), counts(&loose));

    // Nothing new: nothing packed. A new photo: one new shard, after the others.
    let err = pack(&input, &out, &["--shard-size", "20K"]);
    assert!(err.contains("packed 0 photos into 0 shards (0 rejected, 19 already packed"), "{err}");
    std::fs::copy(input.join("Test/Kiwi/f0_100.jpg"), input.join("Test/Kiwi/new.jpg")).unwrap();
    let err = pack(&input, &out, &["--shard-size", "20K"]);
    assert!(err.contains("packed 1 photos into 1 shards (0 rejected, 19 already packed"), "{err}");
    assert!(err.contains("shard 4: 1 photos"), "numbered after the others: {err}");
}

#[test]
fn bad_photos_are_accounted_for_when_packed_and_when_featurised_from_shards() {
    let dir = Dir::new("shards-bad");
    let apple = std::fs::read(sample_dir().join("Test/Apple/f0_100.jpg")).unwrap();
    dir.write("in/Kiwi/good.jpg", &apple);
    dir.write("in/Kiwi/half.jpg", &apple[..apple.len() / 2]);
    dir.write("in/Kiwi/empty.jpg", b"");
    dir.write("in/Kiwi/phone.avif", &crate::test_featurize::iso_bmff(b"avif", &[b"mif1", b"miaf"]));
    dir.write("in/Kiwi/notes.txt", b"not a photo");
    let out = dir.join("shards");
    let err = pack(&dir.join("in"), &out, &[]);
    assert!(err.contains("packed 2 photos into 1 shards (2 rejected, 0 already packed, 1 not images"), "{err}");
    let csv = std::fs::read_to_string(part_file(&out, 0, "errors")).unwrap();
    assert!(csv.contains("empty.jpg,empty,file has zero bytes"), "{csv}");
    assert!(csv.contains("phone.avif,unsupported,\"AVIF image"), "{csv}");
    // The cut JPEG is packed (pack does not decode) and refused when
    // featurised, naming its shard and row.
    let features = dir.join("features");
    let mut cmd = fruits();
    cmd.args(["featurize", "--input"]).arg(&out).arg("--output").arg(&features);
    cmd.args(["--weights", "random:3", "--quiet", "--max-rejected", "1"]);
    let err = stderr(&run(cmd, 0));
    assert!(err.contains("featurised 1 of 2"), "{err}");
    let csv = std::fs::read_to_string(part_file(&features, 0, "errors")).unwrap();
    let shard = shards(&out)[0].display().to_string();
    assert!(csv.contains("half.jpg,truncated,") && csv.contains(&format!("(in {shard}, row group 0, row 1)")), "{csv}");
}

#[test]
fn a_shard_spark_wrote_is_read_as_fruits_own() {
    let dir = Dir::new("shards-spark");
    // What spark.read.format("binaryFile").load(DIR).write.parquet(OUT)
    // gives: file: URIs, modificationTime, length, content; no labels.
    let out = dir.join("spark");
    helper(&["spark", sample_dir().to_str().unwrap(), out.to_str().unwrap()]);
    let (loose, from_spark) = (dir.join("loose"), dir.join("from-spark"));
    featurize(&mut fruits(), sample_dir().to_str().unwrap(), &loose);
    let err = featurize(&mut fruits(), out.to_str().unwrap(), &from_spark);
    assert!(err.contains("featurised 19 of 19"), "{err}");
    assert_same(features_of(&from_spark), features_of(&loose), "labels from the paths, the same features");
}

#[test]
fn a_killed_pack_leaves_whole_shards_and_the_next_run_finishes() {
    let s3 = S3Server::start();
    s3.helper("bucket", &["fruits-photos", "eu-west-1"]);
    s3.helper("upload", &[sample_dir().to_str().unwrap(), "fruits-photos", "fruits-360/"]);
    let dir = Dir::new("shards-killed");
    let out = dir.join("shards");
    // Slow S3, one request at a time: a shard of 3 photos every ~0.5 s.
    let slow = s3.proxy(&["--delay-ms", "150"]);
    let mut cmd = s3.fruits_at(&format!("http://127.0.0.1:{}", slow.port));
    cmd.args(["pack", "--input", "s3://fruits-photos/fruits-360/", "--output"]).arg(&out);
    cmd.args(["--shard-rows", "3", "--s3-concurrency", "1"]);
    let mut child = cmd.spawn().unwrap();
    let t = Instant::now();
    while !out.join("_fruits/part-00001.manifest.json").exists() {
        assert!(t.elapsed() < Duration::from_secs(60), "no second shard");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let whole = shards(&out).len();
    assert!((2..7).contains(&whole), "killed after {whole} of 7 shards");
    // What the kill left is no shard: featurize reads the whole ones only.
    let partial = dir.join("partial");
    let err = featurize(&mut s3.fruits(), out.to_str().unwrap(), &partial);
    assert!(err.contains(&format!("featurised {} of {}", 3 * whole, 3 * whole)), "{err}");
    // The next run goes on from there; every photo is in exactly one shard.
    let mut cmd = s3.fruits();
    cmd.args(["pack", "--input", "s3://fruits-photos/fruits-360/", "--output"]).arg(&out);
    cmd.args(["--shard-rows", "3"]);
    let err = stderr(&run(cmd, 0));
    assert!(err.contains(&format!("packed {} photos into {} shards", 19 - 3 * whole, 7 - whole)), "{err}");
    let mut paths: Vec<String> = shards(&out)
        .iter()
        .flat_map(|s| helper(&["read", s.to_str().unwrap()])["rows"].as_array().unwrap().clone())
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(paths.len(), 19);
    paths.dedup();
    assert_eq!(paths.len(), 19, "no photo twice");
    let mut clean = fruits();
    clean.args(["parts", "clean", "--older-than", "0"]).arg(&out);
    run(clean, 0);
    let all = dir.join("all");
    let err = featurize(&mut s3.fruits(), out.to_str().unwrap(), &all);
    assert!(err.contains("featurised 19 of 19"), "{err}");
}

/// From S3, shards are a handful of requests where loose photos are one
/// each: counted at the server (a recording proxy), same features.
#[test]
fn s3_shards_take_a_few_requests_and_give_the_same_features() {
    let s3 = S3Server::start();
    s3.helper("bucket", &["fruits-photos", "eu-west-1"]);
    s3.helper("upload", &[sample_dir().to_str().unwrap(), "fruits-photos", "fruits-360/"]);
    let dir = Dir::new("shards-s3");
    let mut cmd = s3.fruits();
    cmd.args(["pack", "--input", "s3://fruits-photos/fruits-360/", "--output", "s3://fruits-photos/shards/"]);
    let err = stderr(&run(cmd, 0));
    assert!(err.contains("packed 19 photos into 1 shards"), "{err}");
    let requests = |input: &str, out: &Path| {
        let record = dir.join(format!("{}.jsonl", out.file_name().unwrap().to_str().unwrap()));
        let proxy = s3.proxy(&["--record", record.to_str().unwrap()]);
        featurize(&mut s3.fruits_at(&format!("http://127.0.0.1:{}", proxy.port)), input, out);
        let lines = std::fs::read_to_string(&record).unwrap();
        lines.lines().filter(|l| serde_json::from_str::<Value>(l).unwrap()["method"] == "GET").count()
    };
    let (loose, from_shards) = (dir.join("loose"), dir.join("from-shards"));
    let loose_gets = requests("s3://fruits-photos/fruits-360/", &loose);
    let shard_gets = requests("s3://fruits-photos/shards/", &from_shards);
    assert!(loose_gets >= 19, "a GET per photo: {loose_gets}");
    assert!(shard_gets < 10, "a shard's footer, its names, its photos: {shard_gets} GETs");
    assert_same(features_of(&from_shards), features_of(&loose), "the same rows and statistics");
}

/// A photo written again after it was packed is packed again, into a new
/// shard, and featurised from there (the newest shard holding a path wins).
#[test]
fn a_changed_photo_is_packed_again_and_read_from_its_newest_shard() {
    let dir = Dir::new("shards-changed");
    let input = dir.join("in");
    copy_tree(&sample_dir(), &input);
    let out = dir.join("shards");
    pack(&input, &out, &["--shard-size", "20K"]);
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::copy(sample_dir().join("Test/Lemon/f0_100.jpg"), input.join("Test/Apple/f0_100.jpg")).unwrap();
    let err = pack(&input, &out, &["--shard-size", "20K"]);
    assert!(err.contains("packed 1 photos into 1 shards (0 rejected, 18 already packed"), "{err}");
    let (loose, from_shards) = (dir.join("loose"), dir.join("from-shards"));
    featurize(&mut fruits(), input.to_str().unwrap(), &loose);
    let err = featurize(&mut fruits(), out.to_str().unwrap(), &from_shards);
    assert!(err.contains("featurised 19 of 19") && err.contains("1 duplicate keys dropped"), "{err}");
    let by_path = |f: &Path| -> std::collections::BTreeMap<String, Value> {
        let c = read_parquet(&part_file(f, 0, "rows"))["columns"].clone();
        c["path"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .zip(c["features"].as_array().unwrap().iter().cloned())
            .collect()
    };
    assert!(by_path(&from_shards) == by_path(&loose), "the new bytes' features, once");
}
