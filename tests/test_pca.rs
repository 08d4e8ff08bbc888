//! `fruits pca fit` / `transform` against numpy and scikit-learn
//! (expected values: tests/fixtures/make_pca.py), on synthetic data with a
//! known spectrum and on real features of the sample photos.

use std::path::{Path, PathBuf};

use candle_core::Device;
use fruits::pca::files as pca_model;

use crate::util::{fruits, part_file, read_parquet, repo, run, sample_dir, stderr, Dir};

fn fixtures() -> PathBuf {
    repo().join("tests/fixtures/pca")
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn fit(features: &Path, out: &Path, extra: &[&str]) -> String {
    let mut cmd = fruits();
    cmd.args(["pca", "fit", "--features"]).arg(features).arg("--output").arg(out).args(extra);
    stderr(&run(cmd, 0))
}

/// `got` equals `want` or `-want`, within `tol` relative to max |want|.
fn assert_equal_up_to_sign(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    let diff = |s: f64| got.iter().zip(want).fold(0f64, |m, (g, w)| m.max((g - s * w).abs()));
    let best = diff(1.0).min(diff(-1.0));
    assert!(best <= tol * scale, "{what}: max diff {best:e} > {tol:e} × {scale}");
}

fn assert_close(got: &[f64], want: &[f64], rel: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= rel * w.abs().max(1e-300), "{what}[{i}]: {g} vs {w}");
    }
}

#[test]
fn synthetic_matches_sklearn_and_merging_is_exact() {
    let want = json(&fixtures().join("synthetic.json"));
    let dir = Dir::new("pca-synthetic");
    let err = fit(&fixtures().join("synthetic"), &dir.join("parts"), &["--k", "12"]);
    assert!(err.contains("PCA of 600 rows from 3 parts (0 from statistics files,"), "{err}");
    fit(&fixtures().join("synthetic-whole"), &dir.join("whole"), &["--k", "12"]);

    let (parts, summary) = pca_model::load(&dir.join("parts")).unwrap();
    let (whole, _) = pca_model::load(&dir.join("whole")).unwrap();
    assert_eq!(summary.n_samples, 600);
    assert_close(parts.explained_variance(), &floats(&want["explained_variance"]), 1e-9, "explained_variance");
    assert_close(&parts.explained_variance_ratio(), &floats(&want["explained_variance_ratio"]), 1e-9, "ratio");
    assert_close(&parts.mean, &floats(&want["mean"]), 1e-12, "mean");
    for (i, c) in want["components"].as_array().unwrap().iter().enumerate() {
        assert_equal_up_to_sign(&parts.components[i], &floats(c), 1e-6, &format!("component {i}"));
        // Three parts merged = one part.
        assert_equal_up_to_sign(&parts.components[i], &whole.components[i], 1e-9, &format!("merged component {i}"));
    }
    assert_close(parts.explained_variance(), whole.explained_variance(), 1e-9, "merged variance");

    // Standardised: the correlation matrix's eigenpairs.
    fit(&fixtures().join("synthetic"), &dir.join("std"), &["--k", "12", "--standardize"]);
    let (std, summary) = pca_model::load(&dir.join("std")).unwrap();
    assert!(summary.standardize);
    let s = &want["standardized"];
    assert_close(std.explained_variance(), &floats(&s["explained_variance"]), 1e-9, "standardized variance");
    assert_close(std.scale.as_ref().unwrap(), &floats(&s["scale"]), 1e-9, "scale");
    for (i, c) in s["components"].as_array().unwrap().iter().enumerate() {
        assert_equal_up_to_sign(&std.components[i], &floats(c), 1e-6, &format!("standardized component {i}"));
    }

    // The known spectrum is what the data was drawn from: the first
    // eigenvalues are near 50, 20, 10 (sampling noise of 600 rows).
    let ev = parts.explained_variance();
    assert!((ev[0] / 50.0 - 1.0).abs() < 0.2 && (ev[1] / 20.0 - 1.0).abs() < 0.2, "{ev:?}");
}

#[test]
fn variance_target_picks_the_smallest_k() {
    let dir = Dir::new("pca-variance");
    let ratio = floats(&json(&fixtures().join("synthetic.json"))["explained_variance_ratio"]);
    let reference_k = |v: f64| {
        let mut acc = 0.0;
        ratio
            .iter()
            .position(|r| {
                acc += r;
                acc >= v - 1e-12
            })
            .unwrap()
            + 1
    };
    for v in ["0.5", "0.7", "0.9", "0.99", "0.999", "1"] {
        let k = reference_k(v.parse().unwrap());
        fit(&fixtures().join("synthetic"), &dir.join(v), &["--variance", v]);
        let (m, s) = pca_model::load(&dir.join(v)).unwrap();
        assert_eq!(m.n_components(), k, "--variance {v}");
        if v == "0.99" {
            // Neither --k nor --variance: 0.95.
            fit(&fixtures().join("synthetic"), &dir.join("default"), &[]);
            let (d, s) = pca_model::load(&dir.join("default")).unwrap();
            assert_eq!(s.selection["variance"], 0.95);
            assert_eq!(d.n_components(), reference_k(0.95));
        }
        assert_eq!(s.selection["variance"], v.parse::<f64>().unwrap());
        let cum = &s.cumulative_explained_variance_ratio;
        assert!(*cum.last().unwrap() >= v.parse::<f64>().unwrap() - 1e-12);
        if k > 1 {
            assert!(cum[k - 2] < v.parse::<f64>().unwrap());
        }
    }
}

#[test]
fn real_features_match_sklearn_and_transform_reproduces_bit_for_bit() {
    let want = json(&fixtures().join("sample.json"));
    let exp = candle_core::safetensors::load(fixtures().join("sample.safetensors"), &Device::Cpu).unwrap();
    let dir = Dir::new("pca-sample");
    let features = fixtures().join("sample-features");
    fit(&features, &dir.join("pca"), &["--variance", "0.95"]);
    let (model, summary) = pca_model::load(&dir.join("pca")).unwrap();
    assert_eq!(model.n_components() as u64, want["n_components"].as_u64().unwrap());
    assert_close(model.explained_variance(), &floats(&want["explained_variance"]), 1e-9, "explained_variance");
    assert_close(&summary.explained_variance_ratio, &floats(&want["explained_variance_ratio"]), 1e-9, "ratio");
    let comps: Vec<Vec<f64>> = exp["components"].to_vec2().unwrap();
    for (i, c) in comps.iter().enumerate() {
        assert_equal_up_to_sign(&model.components[i], c, 1e-6, &format!("component {i}"));
    }

    // Transform: reduced parts read back by pyarrow equal numpy's projection.
    let mut cmd = fruits();
    cmd.args(["pca", "transform", "--plot", "--features"]).arg(&features).arg("--model").arg(dir.join("pca"));
    cmd.arg("--output").arg(dir.join("reduced"));
    run(cmd, 0);
    let pq = read_parquet(&part_file(&dir.join("reduced"), 0, "rows"));
    assert_eq!(pq["schema"]["pca"], "list<element: float not null>");
    assert_eq!(pq["columns"]["path"], want["paths"]);
    let got: Vec<Vec<f64>> = pq["columns"]["pca"].as_array().unwrap().iter().map(floats).collect();
    let reduced: Vec<Vec<f64>> = exp["reduced"].to_vec2().unwrap();
    for (r, (g, w)) in got.iter().zip(&reduced).enumerate() {
        assert_eq!(g.len(), model.n_components());
        for c in 0..w.len() {
            let sign = if (model.components[c][0] * comps[c][0]) < 0.0 { -1.0 } else { 1.0 };
            assert!((g[c] - sign * w[c]).abs() < 1e-4 * w[c].abs().max(1.0), "row {r} pc {c}: {} vs {}", g[c], w[c]);
        }
    }

    // The loaded model gives the very same f32 values as the fitted one.
    // Bit for bit because both fits run here, on one CPU, with one thread
    // count (the binary sets RAYON_NUM_THREADS to the count rayon defaults
    // to in this process), and the model file stores f64: nothing here is
    // compared with numbers made on another machine.
    let mut moments = fruits::pca::Moments::new(model.n_features());
    let mut rows = Vec::new();
    fruits::part::read_rows(&features.join("part-00000.parquet"), "features", 1280, |r| {
        moments.add_rows(&r.values);
        rows.extend(r.values);
        Ok(())
    })
    .unwrap();
    let fitted = fruits::pca::maths::fit(&moments, fruits::pca::Keep::Variance(0.95), false).unwrap();
    let from_fit = fitted.transform(&rows);
    let from_file: Vec<f32> = got.iter().flatten().map(|&v| v as f32).collect();
    assert_eq!(from_fit, from_file, "transform after loading must be bit for bit the fitted one");

    let svg = std::fs::read_to_string(dir.join("reduced/scatter.svg")).unwrap();
    for label in ["Apple", "Kiwi", "Lemon", "Lime", "Orange", "PC1", "PC2"] {
        assert!(svg.contains(label), "scatter.svg lacks {label}");
    }
    let svg = std::fs::read_to_string(dir.join("pca/explained_variance.svg")).unwrap();
    assert!(svg.contains(&format!("k = {}", model.n_components())), "the chosen k is marked");
}

#[test]
fn featurize_statistics_equal_a_pass_over_the_rows() {
    let dir = Dir::new("pca-stats");
    let mut cmd = fruits();
    cmd.args(["featurize", "--weights", "random:3", "--quiet", "--input"]).arg(sample_dir());
    cmd.arg("--output").arg(dir.join("features"));
    run(cmd, 0);
    let err = fit(&dir.join("features"), &dir.join("a"), &["--k", "5"]);
    assert!(err.contains("(1 from statistics files,"), "{err}");
    // The same rows as another tool's part (no manifest, no statistics): read once.
    let plain = dir.join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    std::fs::copy(part_file(&dir.join("features"), 0, "rows"), plain.join("part-00000.parquet")).unwrap();
    let err = fit(&plain, &dir.join("b"), &["--k", "5"]);
    assert!(err.contains("(0 from statistics files,"), "{err}");
    // `pca stats` writes the missing file, and fit uses it.
    let mut cmd = fruits();
    cmd.args(["pca", "stats", "--features"]).arg(&plain);
    assert!(stderr(&run(cmd, 0)).contains("statistics written"));
    let err = fit(&plain, &dir.join("c"), &["--k", "5"]);
    assert!(err.contains("(1 from statistics files,"), "{err}");
    let (a, _) = pca_model::load(&dir.join("a")).unwrap();
    let (b, _) = pca_model::load(&dir.join("b")).unwrap();
    let (c, _) = pca_model::load(&dir.join("c")).unwrap();
    assert_close(c.explained_variance(), b.explained_variance(), 1e-12, "variance after pca stats");
    assert_close(a.explained_variance(), b.explained_variance(), 1e-9, "variance");
    for i in 0..5 {
        assert_equal_up_to_sign(&a.components[i], &b.components[i], 1e-8, &format!("component {i}"));
    }
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = Dir::new("pca-bad");
    let fail = |features: &Path, extra: &[&str], code: i32| {
        let mut cmd = fruits();
        cmd.args(["pca", "fit", "--features"]).arg(features).arg("--output").arg(dir.join("out")).args(extra);
        stderr(&run(cmd, code))
    };
    // Parts from different models / widths.
    let mixed = dir.join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    std::fs::copy(fixtures().join("synthetic/part-00000.parquet"), mixed.join("part-00000.parquet")).unwrap();
    std::fs::copy(fixtures().join("sample-features/part-00000.parquet"), mixed.join("part-00001.parquet")).unwrap();
    let err = fail(&mixed, &["--k", "2"], 1);
    assert!(
        err.contains("parts differ") && err.contains("part-00000.parquet") && err.contains("part-00001.parquet"),
        "{err}"
    );

    std::fs::create_dir_all(dir.join("empty")).unwrap();
    let err = fail(&dir.join("empty"), &["--k", "2"], 1);
    assert!(err.contains("no features parts"), "{err}");

    let synthetic = fixtures().join("synthetic");
    let err = fail(&synthetic, &["--k", "13"], 2);
    assert!(err.contains("--k must be between 1 and the feature width 12"), "{err}");
    let err = fail(&synthetic, &["--k", "0"], 2);
    assert!(err.contains("--k"), "{err}");
    for v in ["0", "1.5", "-0.1", "x"] {
        let err = fail(&synthetic, &[&format!("--variance={v}")], 2);
        assert!(err.contains("--variance") && err.contains("not a fraction in (0, 1]"), "{v}: {err}");
    }
    let err = fail(&synthetic, &["--k", "2", "--variance", "0.5"], 2);
    assert!(err.contains("--k") && err.contains("--variance"), "{err}");

    // Transform refuses features of another model than the PCA's.
    fit(&synthetic, &dir.join("pca"), &["--k", "2"]);
    let mut cmd = fruits();
    cmd.args(["pca", "transform", "--features"]).arg(fixtures().join("sample-features"));
    cmd.arg("--model").arg(dir.join("pca")).arg("--output").arg(dir.join("r"));
    let err = stderr(&run(cmd, 1));
    assert!(err.contains("but the PCA at") && err.contains("part-00000.parquet"), "{err}");
}

/// The README's first command: the whole job on the shipped sample.
#[test]
fn demo_runs_featurize_fit_and_transform() {
    let dir = Dir::new("demo");
    let mut cmd = fruits();
    cmd.args(["demo", "--weights", "random:0", "--output"]).arg(dir.join("demo"));
    let out = run(cmd, 0);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let demo = dir.join("demo");
    let features = part_file(&demo.join("features"), 0, "rows");
    let errors = part_file(&demo.join("features"), 0, "errors");
    for f in [&features, &errors, &part_file(&demo.join("reduced"), 0, "rows")] {
        assert!(f.exists(), "{} missing", f.display());
    }
    for f in [&features, &errors] {
        assert!(stdout.contains(&f.display().to_string()), "stdout does not say where {} is:\n{stdout}", f.display());
    }
    for f in ["pca/pca.json", "pca/explained_variance.svg", "reduced/scatter.svg"] {
        assert!(demo.join(f).exists(), "{f} missing");
        assert!(stdout.contains(f), "stdout does not say where {f} is:\n{stdout}");
    }
    assert_eq!(read_parquet(&features)["rows"], 19);
    let summary = json(&demo.join("pca/pca.json"));
    assert_eq!(summary["n_samples"], 19);
    assert!(
        summary["cumulative_explained_variance_ratio"].as_array().unwrap().last().unwrap().as_f64().unwrap() >= 0.95
    );
}
