//! `featurize --append`: a daily run featurises only what is new or
//! changed, removes what was deleted, and the folder then holds what a run
//! from scratch over the same photos gives: the same rows, the same PCA.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::util::{copy_tree, fruits, part_file, read_parquet, run, sample_dir, stderr, Dir};

fn featurize(input: &Path, output: &Path, extra: &[&str]) -> String {
    let mut cmd = fruits();
    cmd.args(["featurize", "--input"]).arg(input).arg("--output").arg(output);
    cmd.args(["--weights", "random:3", "--quiet", "--device", "cpu"]).args(extra);
    stderr(&run(cmd, 0))
}

/// Every row of a folder's complete parts: path → features.
fn rows(folder: &Path) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for part in 0.. {
        if !folder.join(format!("_fruits/part-{part:05}.manifest.json")).exists() {
            return out;
        }
        let cols = read_parquet(&part_file(folder, part, "rows"))["columns"].clone();
        for (p, f) in cols["path"].as_array().unwrap().iter().zip(cols["features"].as_array().unwrap()) {
            assert!(out.insert(p.as_str().unwrap().to_string(), f.clone()).is_none(), "{p} twice");
        }
    }
    out
}

fn eigenvalues(features: &Path, out: &Path) -> Vec<f64> {
    let mut cmd = fruits();
    cmd.args(["pca", "fit", "--features"]).arg(features).args(["--k", "3", "--output"]).arg(out);
    run(cmd, 0);
    let pca: Value = serde_json::from_slice(&std::fs::read(out.join("pca.json")).unwrap()).unwrap();
    pca["explained_variance"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

#[test]
fn append_featurises_only_what_changed_and_equals_a_run_from_scratch() {
    let dir = Dir::new("append");
    let input = dir.join("in");
    copy_tree(&sample_dir(), &input);
    let out = dir.join("features");
    featurize(&input, &out, &[]);
    // A day later (a second is enough: the part's time is the line): two new
    // photos, one written again with other bytes, one deleted.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::copy(sample_dir().join("Test/Kiwi/f0_100.jpg"), input.join("Test/Kiwi/new.jpg")).unwrap();
    std::fs::copy(sample_dir().join("Test/Lemon/f0_100.jpg"), input.join("Training/Lemon/new.jpg")).unwrap();
    std::fs::copy(sample_dir().join("Test/Lemon/f0_100.jpg"), input.join("Test/Apple/f0_100.jpg")).unwrap();
    std::fs::remove_file(input.join("Test/Lime/f0_100.jpg")).unwrap();
    let err = featurize(&input, &out, &["--append"]);
    assert!(
        err.contains("--append: 17 photos held already, 1 changed and 1 deleted since (1 parts rewritten"),
        "{err}"
    );
    assert!(err.contains("featurised 3 of 3"), "only the new and the changed: {err}");
    let counts = |part| crate::util::manifest(&out, part)["counts"].clone();
    assert_eq!((counts(0)["featurised"].as_u64(), counts(1)["featurised"].as_u64()), (Some(17), Some(3)));
    // What a run from scratch over the same photos gives, row for row.
    let scratch = dir.join("scratch");
    featurize(&input, &scratch, &[]);
    let (appended, fresh) = (rows(&out), rows(&scratch));
    assert_eq!(appended.len(), 20);
    assert_eq!(appended.keys().collect::<Vec<_>>(), fresh.keys().collect::<Vec<_>>());
    assert!(appended == fresh, "the same features for every photo");
    // The PCA from the parts' statistics: the same spectrum (merged in
    // another order: equal to f64 rounding).
    let (a, b) = (eigenvalues(&out, &dir.join("pca-a")), eigenvalues(&scratch, &dir.join("pca-b")));
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-9 * y.abs(), "{a:?} vs {b:?}");
    }
    // Nothing new: nothing written.
    let err = featurize(&input, &out, &["--append"]);
    assert!(err.contains("nothing new to featurise"), "{err}");
    assert!(!out.join("_fruits/part-00002.manifest.json").exists());
}

fn index(features: &Path, pca: &Path, output: &Path, append: bool) -> String {
    let mut cmd = fruits();
    // Training rows only: the Test rows are left out and counted, so the
    // counts of parts dropped on --append are checked too.
    cmd.args(["index", "build", "--split", "Training", "--features"]).arg(features);
    cmd.arg("--pca").arg(pca).arg("--output").arg(output);
    if append {
        cmd.arg("--append");
    }
    String::from_utf8(run(cmd, 0).stdout).unwrap()
}

/// `index build --append` keeps the rows of unchanged parts without reading
/// them again, drops those of rewritten parts and adds the new ones: the
/// same index, entry for entry and bit for bit, as a build from scratch
/// with the same PCA.
#[test]
fn index_append_gives_the_index_a_build_from_scratch_gives() {
    let dir = Dir::new("index-append");
    let input = dir.join("in");
    copy_tree(&sample_dir(), &input);
    let (features, pca, idx) = (dir.join("features"), dir.join("pca"), dir.join("index"));
    featurize(&input, &features, &[]);
    eigenvalues(&features, &pca);
    index(&features, &pca, &idx, false);
    let load = |d: &Path| fruits::app::index::files::load(d).unwrap();
    let first_part = load(&idx).meta.parts[0].rows_file.clone();
    // Day 1: two new photos, a new part; part 0 is kept as it is.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::copy(sample_dir().join("Test/Kiwi/f0_100.jpg"), input.join("Test/Kiwi/new.jpg")).unwrap();
    std::fs::copy(sample_dir().join("Test/Lemon/f0_100.jpg"), input.join("Training/Lemon/new.jpg")).unwrap();
    featurize(&input, &features, &["--append"]);
    let out = index(&features, &pca, &idx, true);
    assert!(out.contains("index: 15 rows"), "{out}");
    let appended = load(&idx);
    assert_eq!(appended.meta.parts[0].rows_file, first_part, "part 0's rows kept, not read again");
    let fresh = dir.join("fresh-1");
    index(&features, &pca, &fresh, false);
    assert_eq!(appended.version(), load(&fresh).version(), "the same index as from scratch");
    // Day 2: a photo changed, one deleted: part 0 rewritten, a new part.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::copy(sample_dir().join("Test/Lemon/f0_100.jpg"), input.join("Test/Apple/f0_100.jpg")).unwrap();
    std::fs::remove_file(input.join("Test/Lime/f0_100.jpg")).unwrap();
    featurize(&input, &features, &["--append"]);
    let out = index(&features, &pca, &idx, true);
    assert!(out.contains("index: 15 rows"), "{out}");
    let fresh = dir.join("fresh-2");
    index(&features, &pca, &fresh, false);
    let (a, b) = (load(&idx), load(&fresh));
    // Test: 5 photos, 1 added on day 1, 1 deleted on day 2.
    assert_eq!(a.meta.skipped.get("other_split"), Some(&5), "{:?}", a.meta.skipped);
    assert_eq!(a.meta, b.meta);
    assert_eq!(a.version(), b.version(), "the same index as from scratch");
}
