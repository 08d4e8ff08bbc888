//! Both CPU engines (the native one and Candle's) equal timm's forward
//! pass, for both models, on real images, with the same (random-init,
//! non-trivial BatchNorm) weights. The CUDA engine's tests (test_gpu) reuse
//! these inputs.
//! Expected features: tests/fixtures/make_parity.py (needs timm; CI does not).

use candle_core::Device;
use fruits::engine::{Dtype, Engine, Model};
use fruits::model::{init, Which};

use crate::util::{repo, Dir};

/// The model on the fixture's weights, the parity images as RGB8, timm's
/// features for them and their largest magnitude.
pub(crate) fn parity_inputs(which: Which) -> (Model, Vec<u8>, Vec<Vec<f32>>, f32) {
    let fixtures = repo().join("tests/fixtures/parity");
    let info = parity_fixture(which);
    let seed = info["seed"].as_u64().unwrap();

    // The weights the reference ran on must be the ones init writes today.
    let dir = Dir::new(&format!("parity-{which}"));
    let wpath = dir.join("w.safetensors");
    init::write_random_weights(which, seed, &wpath).unwrap();
    let sha = fruits::digest::sha256_file(&wpath).unwrap();
    assert_eq!(
        sha,
        info["weights_sha256"].as_str().unwrap(),
        "random init for {which} changed since the fixture was made: rerun tests/fixtures/make_parity.py"
    );

    let model = Model::from_file(which, &wpath).unwrap();
    let res = which.resolution() as u32;
    let mut rgb = Vec::new();
    let images = info["images"].as_array().unwrap();
    for name in images {
        let bytes = std::fs::read(repo().join("tests/data/parity").join(name.as_str().unwrap())).unwrap();
        let p = fruits::image::prepare(&bytes, res).unwrap();
        assert_eq!((p.width, p.height), (res, res), "parity images are already at model size");
        rgb.extend(p.rgb);
    }
    let expected = candle_core::safetensors::load(fixtures.join(format!("{which}.safetensors")), &Device::Cpu).unwrap();
    let want: Vec<Vec<f32>> = expected["features"].to_vec2().unwrap();
    let max_abs = want.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
    assert!(max_abs > 0.1, "reference features are degenerate (max |f| = {max_abs})");
    (model, rgb, want, max_abs)
}

/// `tests/fixtures/parity/<model>.json`: the seed, the sha256 of its
/// random weights, the images and the timm/torch versions.
pub(crate) fn parity_fixture(which: Which) -> serde_json::Value {
    let path = repo().join(format!("tests/fixtures/parity/{which}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn check(which: Which) {
    let (mut model, rgb, want, max_abs) = parity_inputs(which);
    for engine in [Engine::Native, Engine::Candle] {
        model.set_engine(engine, Dtype::F32).unwrap();
        let got: Vec<Vec<f32>> =
            model.features(&rgb).unwrap().chunks(which.feature_dim()).map(<[f32]>::to_vec).collect();
        assert_eq!(got.len(), want.len());
        let max_diff = got.iter().flatten().zip(want.iter().flatten()).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            max_diff <= 1e-4 * max_abs,
            "{which}, {engine:?} engine: max |fruits - timm| = {max_diff:e}, allowed {:e} (1e-4 × max |f| = {max_abs})",
            1e-4 * max_abs
        );
        // Every row differs from the others: the images really went through.
        assert!(got[0].iter().zip(&got[1]).any(|(a, b)| (a - b).abs() > 1e-3));
    }
}

#[test]
fn mobilenetv2_matches_timm() {
    check(Which::MobileNetV2);
}

#[test]
fn mobilenetv4_small_matches_timm() {
    check(Which::MobileNetV4Small);
}

/// timm's `tf_efficientnet_lite0`: TensorFlow's SAME padding, BatchNorm
/// epsilon 1e-3, inputs in [-1, 1] and 5×5 depthwise kernels; a symmetric
/// pad, PyTorch's epsilon or ImageNet's normalisation each fail this.
#[test]
fn efficientnet_lite0_matches_timm() {
    check(Which::EfficientNetLite0);
}

/// Worst cosine similarity between matching rows of two feature matrices.
pub(crate) fn worst_cosine(a: &[f32], b: &[f32], d: usize) -> f64 {
    let cos = |a: &[f32], b: &[f32]| {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        dot / (na * nb)
    };
    a.chunks(d).zip(b.chunks(d)).map(|(x, y)| cos(x, y)).fold(1.0, f64::min)
}

/// `--dtype bf16` (bfloat16 weights and activations, f32 accumulation)
/// against the f32 engine on the 19 sample photos. Random weights make a
/// chaotic network: raising a seventh of the input bytes by one level (an
/// invisible change) already moves f32 features to cosine ~0.98, and bf16
/// rounding of the weights alone to ~0.9965. So this checks what random
/// weights can show: bf16 stays closer to f32 than that invisible input
/// change does, and above 0.99. Whether trained weights reach the 0.999 of
/// issue 5 needs the real checkpoint (not on this machine).
fn bf16_close_to_f32(which: Which) {
    let mut model = Model::random(which, 0).unwrap();
    let res = which.resolution() as u32;
    let rgb = sample_photos(which);
    let d = which.feature_dim();
    assert_eq!(rgb.len() / (3 * (res * res) as usize), 19);
    let f32s = model.features(&rgb).unwrap();
    let nudged: Vec<u8> =
        rgb.iter().enumerate().map(|(i, &v)| if i % 7 == 0 { v.saturating_add(1) } else { v }).collect();
    let invisible = worst_cosine(&f32s, &model.features(&nudged).unwrap(), d);
    model.set_engine(Engine::Native, Dtype::Bf16).unwrap();
    let bf16s = model.features(&rgb).unwrap();
    assert!(f32s != bf16s, "the bf16 run gave the f32 numbers: it did not run in bf16");
    let worst = worst_cosine(&f32s, &bf16s, d);
    // The figures docs/REVIEW.md quotes (`cargo test bf16 -- --nocapture`).
    println!("{which}: bf16 vs f32 worst cosine {worst:.5}; a one-level change of 1/7 of the input: {invisible:.5}");
    assert!(
        worst > invisible && worst >= 0.99,
        "{which}: bf16 vs f32 cosine {worst:.5}; a one-level change of 1/7 of the input gives {invisible:.5}"
    );
}

#[test]
fn mobilenetv2_bf16_stays_close_to_f32() {
    bf16_close_to_f32(Which::MobileNetV2);
}

#[test]
fn mobilenetv4_small_bf16_stays_close_to_f32() {
    bf16_close_to_f32(Which::MobileNetV4Small);
}

#[test]
fn efficientnet_lite0_bf16_stays_close_to_f32() {
    bf16_close_to_f32(Which::EfficientNetLite0);
}

/// The 19 sample photos, prepared for `which`, as one RGB8 batch.
pub(crate) fn sample_photos(which: Which) -> Vec<u8> {
    let res = which.resolution() as u32;
    let mut rgb = Vec::new();
    for entry in walkdir::WalkDir::new(repo().join("tests/data/fruits-360-sample")).sort_by_file_name() {
        let entry = entry.unwrap();
        if entry.path().extension().is_some_and(|e| e == "jpg") {
            rgb.extend(fruits::image::prepare(&std::fs::read(entry.path()).unwrap(), res).unwrap().rgb);
        }
    }
    rgb
}
