//! `fruits pca merge` and `pca fit --stats`: the parts' statistics merged as a
//! tree (what a cluster's tasks do) give the fit the flat merge of every
//! part gives (`pca fit --features`, itself checked against scikit-learn in
//! test_pca.rs), to the last bits f64 summation order allows; a part counted
//! twice or left out is refused, naming it.

use std::path::{Path, PathBuf};

use fruits::pca::files as pca_model;

use crate::util::{fruits, run, sample_dir, stderr, Dir};

/// Six parts of one run, each from a sixth of the sample photos.
fn six_parts(dir: &Dir) -> PathBuf {
    let mut photos: Vec<PathBuf> = walkdir::WalkDir::new(sample_dir())
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    photos.sort();
    assert!(photos.len() >= 12, "the sample has {} photos", photos.len());
    let features = dir.join("features");
    for part in 0..6 {
        let keys: Vec<String> = photos.iter().skip(part).step_by(6).map(|p| p.display().to_string()).collect();
        let list = dir.write(&format!("keys-{part}.txt"), (keys.join("\n") + "\n").as_bytes());
        let mut cmd = fruits();
        cmd.args(["featurize", "--weights", "random:3", "--quiet", "--run-id", "tree", "--keys"]).arg(list);
        cmd.arg("--output").arg(&features).args(["--part-id", &part.to_string()]);
        run(cmd, 0);
    }
    features
}

fn merge(args: &[&str], paths: &[&Path], code: i32) -> String {
    let mut cmd = fruits();
    cmd.args(["pca", "merge"]).args(args);
    for p in paths {
        cmd.arg(p);
    }
    stderr(&run(cmd, code))
}

fn fit(features: &Path, out: &Path, stats: &[&Path], code: i32) -> String {
    let mut cmd = fruits();
    cmd.args(["pca", "fit", "--k", "6", "--features"]).arg(features).arg("--output").arg(out);
    if !stats.is_empty() {
        cmd.arg("--stats").args(stats);
    }
    stderr(&run(cmd, code))
}

fn max_relative(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs() / scale))
}

#[test]
fn a_tree_of_merges_fits_what_the_flat_merge_fits() {
    let dir = Dir::new("pca-tree");
    let features = six_parts(&dir);
    fit(&features, &dir.join("flat"), &[], 0);

    // Level 1: three parts a file; level 2: the two files into one.
    let (g0, g1, top) = (
        dir.join("m/1/g0.stats.safetensors"),
        dir.join("m/1/g1.stats.safetensors"),
        dir.join("m/top.stats.safetensors"),
    );
    let err = merge(&["--parts", "0-2", "--features"], &[&features, Path::new("--output"), &g0], 0);
    assert!(err.contains("parts 0-2, from 3 files"), "{err}");
    merge(&["--parts", "3,4-5", "--features"], &[&features, Path::new("--output"), &g1], 0);
    let err = merge(&["--stats"], &[&g0, &g1, Path::new("--output"), &top], 0);
    assert!(err.contains("parts 0-5, from 2 files"), "{err}");

    let err = fit(&features, &dir.join("tree"), &[&top], 0);
    assert!(err.contains("from 6 parts (6 from statistics files"), "{err}");
    // A folder of merged files is read as its files.
    fit(&features, &dir.join("folder"), &[&dir.join("m/1")], 0);

    let (flat, flat_summary) = pca_model::load(&dir.join("flat")).unwrap();
    for name in ["tree", "folder"] {
        let (tree, summary) = pca_model::load(&dir.join(name)).unwrap();
        assert_eq!(summary.n_samples, flat_summary.n_samples, "{name}: rows");
        assert_eq!(summary.source, flat_summary.source, "{name}: the run it was fitted on");
        assert_eq!(summary.parts, vec!["parts 0-5".to_string()], "{name}: parts");
        // The same sums added in another order: equal to ~1e-15 relative.
        let d = max_relative(&tree.mean, &flat.mean);
        assert!(d < 1e-12, "{name}: mean differs by {d:e}");
        let d = max_relative(tree.explained_variance(), flat.explained_variance());
        assert!(d < 1e-10, "{name}: spectrum differs by {d:e}");
        for (i, (t, f)) in tree.components.iter().zip(&flat.components).enumerate() {
            let sign = if t.iter().zip(f).map(|(a, b)| a * b).sum::<f64>() < 0.0 { -1.0 } else { 1.0 };
            let f: Vec<f64> = f.iter().map(|x| sign * x).collect();
            let d = max_relative(t, &f);
            assert!(d < 1e-8, "{name}: component {i} differs by {d:e}");
        }
    }
}

#[test]
fn a_part_counted_twice_or_left_out_is_refused_by_name() {
    let dir = Dir::new("pca-tree-bad");
    let features = six_parts(&dir);
    let (a, b) = (dir.join("a.stats.safetensors"), dir.join("b.stats.safetensors"));
    merge(&["--parts", "0-3", "--features"], &[&features, Path::new("--output"), &a], 0);
    merge(&["--parts", "3-4", "--features"], &[&features, Path::new("--output"), &b], 0);

    let err = merge(&["--stats"], &[&a, &b, Path::new("--output"), &dir.join("ab.stats.safetensors")], 1);
    assert!(err.contains("holds part 3, which another statistics file also holds"), "{err}");
    assert!(!dir.join("ab.stats.safetensors").exists());

    // Part 5 is in the folder and in no file.
    let err = fit(&features, &dir.join("pca"), &[&a], 1);
    assert!(
        err.contains("the statistics hold parts 0-3, not the parts")
            && err.contains("(missing: 4-5; not in the folder: none)"),
        "{err}"
    );
    assert!(!dir.join("pca/pca.json").exists());

    let err = merge(
        &["--parts", "4-9", "--features"],
        &[&features, Path::new("--output"), &dir.join("c.stats.safetensors")],
        1,
    );
    assert!(err.contains("has no complete part 6"), "{err}");
    let err = merge(
        &["--parts", "5-2", "--features"],
        &[&features, Path::new("--output"), &dir.join("d.stats.safetensors")],
        2,
    );
    assert!(err.contains("--parts") && err.contains("runs backwards"), "{err}");
    // A part's own statistics file is not a merged one.
    let own = std::fs::read_dir(features.join("_fruits"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".stats.safetensors"))
        .unwrap();
    let err = merge(&["--stats"], &[&own, Path::new("--output"), &dir.join("e.stats.safetensors")], 1);
    assert!(err.contains("names no parts: not written by `fruits pca merge`"), "{err}");
}
