//! Both CPU engines (the native one and Candle's, which the GPU runs) equal
//! timm's forward pass, for both models, on real images, with the same
//! (random-init, non-trivial BatchNorm) weights.
//! Expected features: tests/fixtures/make_parity.py (needs timm; CI does not).

use candle_core::Device;
use fruits::model::{init, Engine, Model, Which};

use crate::util::{repo, Dir};

fn check(which: Which) {
    let fixtures = repo().join("tests/fixtures/parity");
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join(format!("{which}.json"))).unwrap()).unwrap();
    let seed = info["seed"].as_u64().unwrap();

    // The weights the reference ran on must be the ones init writes today.
    let dir = Dir::new(&format!("parity-{which}"));
    let wpath = dir.join("w.safetensors");
    init::write_random_weights(which, seed, &wpath).unwrap();
    let sha = fruits::weights::sha256_file(&wpath).unwrap();
    assert_eq!(
        sha,
        info["weights_sha256"].as_str().unwrap(),
        "random init for {which} changed since the fixture was made: rerun tests/fixtures/make_parity.py"
    );

    let mut model = Model::from_file(which, &wpath, &Device::Cpu).unwrap();
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
    for engine in [Engine::Native, Engine::Candle] {
        model.set_engine(engine).unwrap();
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
