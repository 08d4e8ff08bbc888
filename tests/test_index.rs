//! `fruits index build | eval` and `fruits identify`, against an
//! independent numpy reference (tests/knn_reference.py: the features read
//! by pyarrow, neighbours and votes computed as the docs define them).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::util::{fruits, part_file, python, repo, run, sample_dir, stderr, Dir, S3Server};

/// Features (random:7) of the whole sample, and a PCA fitted on them. On
/// the CPU, as `identify` computes its query: the reference's neighbours come
/// from these rows and identify's from the photo, compared below by path.
fn features_and_pca(dir: &Dir, weights: &str) -> (PathBuf, PathBuf) {
    let (features, pca) = (dir.join("features"), dir.join("pca"));
    let mut cmd = fruits();
    cmd.args(["featurize", "--device", "cpu", "--weights", weights, "--input"])
        .arg(sample_dir())
        .arg("--output")
        .arg(&features);
    run(cmd, 0);
    let mut cmd = fruits();
    cmd.args(["pca", "fit", "--features"]).arg(&features).arg("--output").arg(&pca);
    run(cmd, 0);
    (features, pca)
}

fn build(features: &Path, out: &Path, extra: &[&str]) -> String {
    let mut cmd = fruits();
    cmd.args(["index", "build", "--split", "Training", "--features"])
        .arg(features)
        .arg("--output")
        .arg(out)
        .args(extra);
    String::from_utf8_lossy(&run(cmd, 0).stdout).into_owned()
}

/// knn_reference.py's answers; `projection`: a PCA folder, `none` (raw
/// features), or None (centred on the Training rows).
fn reference(features: &Path, projection: Option<&Path>, k: usize) -> Value {
    let rows = part_file(features, 0, "rows");
    let mut cmd = Command::new(python());
    cmd.arg(repo().join("tests/knn_reference.py")).arg(rows).args(["Training", "Test", &k.to_string(), "0.5"]);
    if let Some(p) = projection {
        cmd.arg(p);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "knn_reference.py: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn test_photos() -> Vec<PathBuf> {
    ["Apple", "Kiwi", "Lemon", "Lime", "Orange"]
        .iter()
        .map(|f| sample_dir().join(format!("Test/{f}/f0_100.jpg")))
        .collect()
}

fn identify_json(index: &Path, photos: &[PathBuf], extra: &[&str]) -> Vec<Value> {
    let mut cmd = fruits();
    cmd.arg("identify").args(photos).arg("--index").arg(index).arg("--json").args(extra);
    serde_json::from_slice::<Vec<Value>>(&run(cmd, 0).stdout).unwrap()
}

/// identify's neighbours, similarities and vote equal the reference's, with
/// and without PCA; index eval's accuracy equals the reference's too.
#[test]
fn identify_and_eval_match_a_numpy_reference() {
    let dir = Dir::new("index-ref");
    let (features, pca) = features_and_pca(&dir, "random:7");
    // (index, `index build`'s flags, the reference's projection: a PCA
    // folder, `none` for raw features, else the Training rows' mean).
    let none = Path::new("none");
    let cases: [(&str, Vec<&str>, Option<&Path>); 3] = [
        ("centre", vec![], None),
        ("none", vec!["--centre", "none"], Some(none)),
        ("pca", vec!["--pca", pca.to_str().unwrap()], Some(pca.as_path())),
    ];
    for (name, extra, projection) in cases {
        let index = dir.join(format!("index-{name}"));
        let printed = build(&features, &index, &extra);
        assert!(printed.contains("14 rows of 5 labels"), "{printed}");
        let want = reference(&features, projection, fruits::app::index::vote::DEFAULT_K);
        let got = identify_json(&index, &test_photos(), &[]);
        for answer in &got {
            let photo = answer["photo"].as_str().unwrap();
            let key = photo;
            let w = &want["rows"][key];
            assert!(w.is_object(), "the reference has no row {key}");
            let paths = |v: &Value, field: &str| -> Vec<String> {
                v[field].as_array().unwrap().iter().map(|n| n["path"].as_str().unwrap().to_string()).collect()
            };
            // Features come from the photo here and from the Parquet part in the
            // reference: the same network, so equal to float rounding.
            assert_eq!(paths(answer, "neighbours"), paths(w, "neighbours"), "{name} {key}");
            for (g, r) in answer["neighbours"].as_array().unwrap().iter().zip(w["neighbours"].as_array().unwrap()) {
                let (g, r) = (g["similarity"].as_f64().unwrap(), r["similarity"].as_f64().unwrap());
                assert!((g - r).abs() < 1e-4, "{name} {key}: similarity {g} vs {r}");
            }
            let ranked: Vec<(String, f64)> = w["ranked"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| (r["label"].as_str().unwrap().into(), r["score"].as_f64().unwrap()))
                .collect();
            let top: Vec<(String, f64)> = answer["top"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| (r["label"].as_str().unwrap().into(), r["score"].as_f64().unwrap()))
                .collect();
            assert_eq!(top.len(), ranked.len().min(5));
            for ((gl, gs), (rl, rs)) in top.iter().zip(&ranked) {
                assert_eq!(gl, rl, "{name} {key}");
                assert!((gs - rs).abs() < 1e-4, "{name} {key}: score {gs} vs {rs}");
            }
            assert_eq!(answer["unknown"], w["unknown"], "{name} {key}");
            let fruit = answer["fruit"].as_str();
            assert_eq!(fruit.is_none(), w["unknown"].as_bool().unwrap());
            if let Some(f) = fruit {
                assert_eq!(f, ranked[0].0);
                assert_eq!(
                    answer["info"]["label"].as_str(),
                    Some(f),
                    "the sample's labels are base species rows of the table"
                );
            }
        }
        // eval on the Test split: same accuracy as the reference.
        let out = dir.join(format!("eval-{name}"));
        let mut cmd = fruits();
        cmd.args(["index", "eval", "--split", "Test", "--index"])
            .arg(&index)
            .arg("--features")
            .arg(&features)
            .arg("--output")
            .arg(&out);
        run(cmd, 0);
        let report: Value = serde_json::from_str(&std::fs::read_to_string(out.join("eval.json")).unwrap()).unwrap();
        assert_eq!(report["rows"], 5);
        assert!((report["top1_accuracy"].as_f64().unwrap() - want["top1"].as_f64().unwrap()).abs() < 1e-9, "{name}");
        assert!((report["top5_accuracy"].as_f64().unwrap() - want["top5"].as_f64().unwrap()).abs() < 1e-9, "{name}");
        let confusion: u64 = report["confusion"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap())
            .map(|c| c.as_u64().unwrap())
            .sum();
        assert_eq!(confusion, 5);
        let svg = std::fs::read_to_string(out.join("confusion.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("Kiwi") && svg.contains("unknown"));
    }
    // A PCA takes its own mean away: raw features and a PCA do not go together.
    let mut cmd = fruits();
    cmd.args(["index", "build", "--centre", "none", "--pca"]).arg(&pca).arg("--features").arg(&features);
    let err = stderr(&run(cmd.arg("--output").arg(dir.join("index-refused")), 2));
    assert!(err.contains("--centre") && err.contains("--pca"), "{err}");
    // A reader that stops early (`fruits identify … | head -1`): the pipe is
    // closed before identify has loaded its model, so every line it prints
    // meets a closed pipe. It ends quietly with success, as other tools do
    // (it panicked in println! before).
    let mut child = fruits()
        .arg("identify")
        .args(test_photos())
        .arg("--index")
        .arg(dir.join("index-centre"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "identify into a closed pipe: {err}");
    assert!(!err.contains("panicked") && !err.contains("error"), "{err}");
}

/// Features of another model, weights or dtype never mix into an index, and
/// a query made differently is refused, naming what differs.
#[test]
fn mixed_runs_and_mismatched_models_are_refused() {
    let dir = Dir::new("index-mixed");
    let (f7, pca7) = features_and_pca(&dir, "random:7");
    let other = Dir::new("index-mixed-8");
    let (f8, _) = features_and_pca(&other, "random:8");
    let mut cmd = fruits();
    cmd.args(["index", "build", "--features"])
        .arg(&f7)
        .arg("--features")
        .arg(&f8)
        .arg("--output")
        .arg(dir.join("mixed"));
    let err = stderr(&run(cmd, 1));
    assert!(err.contains("differ in fruits.weights") && err.contains("random:7") && err.contains("random:8"), "{err}");
    // A PCA fitted on other features.
    let mut cmd = fruits();
    cmd.args(["index", "build", "--features"]).arg(&f8).arg("--pca").arg(&pca7).arg("--output").arg(dir.join("x"));
    let err = stderr(&run(cmd, 1));
    assert!(err.contains("fitted on features with fruits.weights random:7"), "{err}");
    // Two runs of the same model do go together (run ids may differ).
    let again = dir.join("features-again");
    let mut cmd = fruits();
    cmd.args(["featurize", "--weights", "random:7", "--run-id", "second", "--input"])
        .arg(sample_dir().join("Test"))
        .arg("--output")
        .arg(&again);
    run(cmd, 0);
    let index = dir.join("both");
    let printed = build(&f7, &index, &["--features", again.to_str().unwrap()]);
    assert!(printed.contains("14 rows of 5 labels"), "--split Training keeps the first run's 14: {printed}");
    // identify with other weights, or another dtype, than the index's.
    for (flag, value, names) in [("--weights", "random:8", "fruits.weights random:7"), ("--k", "0", "--k")] {
        let mut cmd = fruits();
        cmd.arg("identify").arg(&test_photos()[0]).arg("--index").arg(&index).args([flag, value]);
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        assert!(stderr(&out).contains(names), "{}", stderr(&out));
    }
    // --components narrows a PCA index; without --pca it is a usage error.
    let narrow = dir.join("narrow");
    let printed = build(&f7, &narrow, &["--pca", pca7.to_str().unwrap(), "--components", "4"]);
    assert!(printed.contains("4 values each"), "{printed}");
    let mut cmd = fruits();
    cmd.args(["index", "build", "--components", "4", "--features"]).arg(&f7);
    assert!(stderr(&run(cmd, 2)).contains("--pca"));
    // A damaged index is an error naming it, not a panic.
    std::fs::write(narrow.join("vectors.safetensors"), b"garbage").unwrap();
    let mut cmd = fruits();
    cmd.arg("identify").arg(&test_photos()[0]).arg("--index").arg(&narrow);
    let err = stderr(&run(cmd, 1));
    assert!(err.contains("vectors.safetensors"), "{err}");
    // A photo that is no image: the others are answered, exit 1 names it.
    let mut cmd = fruits();
    cmd.arg("identify")
        .arg(&test_photos()[1])
        .arg(repo().join("tests/data/LICENSE-opencv"))
        .arg("--index")
        .arg(&index)
        .arg("--json");
    let out = run(cmd, 1);
    let lines: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(lines[0]["top"].is_array() && lines[1]["error"].as_str().unwrap().contains("not a known image format"));
}

/// Index and photos in S3 (a real S3-compatible server on loopback).
#[test]
fn index_build_and_identify_through_s3() {
    let s3 = S3Server::start();
    s3.helper("bucket", &["fruits-app", "eu-west-1"]);
    s3.helper("upload", &[sample_dir().to_str().unwrap(), "fruits-app", "photos/"]);
    let mut cmd = s3.fruits();
    cmd.args([
        "featurize",
        "--device",
        "cpu",
        "--weights",
        "random:7",
        "--input",
        "s3://fruits-app/photos/",
        "--output",
        "s3://fruits-app/features/",
    ]);
    run(cmd, 0);
    let mut cmd = s3.fruits();
    cmd.args([
        "index",
        "build",
        "--split",
        "Training",
        "--features",
        "s3://fruits-app/features/",
        "--output",
        "s3://fruits-app/index/",
    ]);
    run(cmd, 0);
    let keys = s3.keys("fruits-app", "index/");
    assert_eq!(keys, ["index/entries.parquet", "index/index.json", "index/vectors.safetensors"]);
    let mut cmd = s3.fruits();
    cmd.args([
        "identify",
        "s3://fruits-app/photos/Test/Kiwi/f0_100.jpg",
        "--index",
        "s3://fruits-app/index/",
        "--json",
    ]);
    let answers: Vec<Value> = serde_json::from_slice(&run(cmd, 0).stdout).unwrap();
    // The same answer as a local index of the same features (both on the
    // CPU engine, whose features do not depend on the order S3 answers in).
    let dir = Dir::new("index-s3");
    let local = dir.join("features");
    let mut cmd = fruits();
    cmd.args(["featurize", "--device", "cpu", "--weights", "random:7", "--input"])
        .arg(sample_dir())
        .arg("--output")
        .arg(&local);
    run(cmd, 0);
    build(&local, &dir.join("index"), &[]);
    let want = identify_json(&dir.join("index"), &[sample_dir().join("Test/Kiwi/f0_100.jpg")], &[]);
    assert_eq!(answers[0]["top"], want[0]["top"]);
    let mut cmd = s3.fruits();
    cmd.args([
        "index",
        "eval",
        "--index",
        "s3://fruits-app/index/",
        "--features",
        "s3://fruits-app/features/",
        "--split",
        "Test",
        "--output",
    ])
    .arg(dir.join("eval"));
    run(cmd, 0);
    assert!(dir.join("eval/confusion.svg").exists());
}

/// The demo's evaluation: the Training photos index the Test photos, with
/// the PCA index and the default k, equals the numpy reference on the demo's own
/// features and PCA.
///
/// Random weights (random:7) still separate these fruits somewhat: colour
/// and texture survive a random network. Chance is 1 in 5; measured with
/// the init of issue 19 (the same on every CPU): 3 of the 5 Test photos
/// named right (60%), 4 of 5 within the top five labels. The bound below
/// is only "better than chance" (2 of 5): the exact figures are the
/// reference's, and an init change moves them.
#[test]
fn demo_evaluates_the_index_on_the_test_split() {
    let dir = Dir::new("index-demo");
    let mut cmd = fruits();
    cmd.args(["demo", "--weights", "random:7", "--output"]).arg(dir.join("demo"));
    let out = String::from_utf8_lossy(&run(cmd, 0).stdout).into_owned();
    assert!(out.contains("14 Training photos of 5 fruits; on the 5 Test photos"), "{out}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("demo/eval/eval.json")).unwrap()).unwrap();
    assert_eq!(report["rows"], 5);
    let want = reference(&dir.join("demo/features"), Some(&dir.join("demo/pca")), fruits::app::index::vote::DEFAULT_K);
    for key in ["top1", "top5"] {
        let got = report[format!("{key}_accuracy")].as_f64().unwrap();
        assert!((got - want[key].as_f64().unwrap()).abs() < 1e-9, "{key}: {report} vs the reference's {want}");
    }
    assert!(report["top1_accuracy"].as_f64().unwrap() >= 0.4, "no better than chance: {report}");
    assert!(out.contains("fruits serve --index"), "{out}");
}
