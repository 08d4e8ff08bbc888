//! No input makes the process panic: a malformed key list, Parquet parts
//! written wrongly by another tool, a damaged PCA model, a file too large
//! to read. Each is an error naming the file (or line), or a rejection.

use std::path::Path;
use std::process::Command;

use crate::util::{fruits, python, repo, run, sample_dir, stderr, Dir};

fn foreign(args: &[&str]) {
    let out = Command::new(python()).arg(repo().join("tests/foreign_parts.py")).args(args).output().unwrap();
    assert!(out.status.success(), "foreign_parts.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn featurize_keys(dir: &Dir, keys: &Path) -> Command {
    let mut cmd = fruits();
    cmd.args(["featurize", "--weights", "random:0", "--quiet", "--keys"]).arg(keys);
    cmd.arg("--output").arg(dir.join("out"));
    cmd
}

#[test]
fn a_malformed_key_line_is_an_error_naming_the_file_and_line() {
    let dir = Dir::new("keys-bad");
    let good = sample_dir().join("Training/Kiwi/f0_100.jpg");
    for (line, reason) in [
        ("s3:///x.jpg", "no bucket name after s3://"),
        ("s3://bucket", "names a bucket or folder, not an object"),
        ("s3://bucket/photos/", "names a bucket or folder, not an object"),
    ] {
        let keys = dir.write("keys.txt", format!("{}\n\n{line}\n", good.display()).as_bytes());
        let err = stderr(&run(featurize_keys(&dir, &keys), 1));
        assert!(err.contains(&format!("{}, line 3:", keys.display())) && err.contains(reason), "{line}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let mut bytes = format!("{}\n", good.display()).into_bytes();
    bytes.extend(b"photos/\xFF\xFEkiwi.jpg\n");
    let keys = dir.write("latin1.txt", &bytes);
    let err = stderr(&run(featurize_keys(&dir, &keys), 1));
    assert!(err.contains("line 2: is not UTF-8 text"), "{err}");
    let keys = dir.write("empty.txt", b"\n\n");
    assert!(stderr(&run(featurize_keys(&dir, &keys), 1)).contains("the list is empty"));
}

#[test]
fn parts_written_wrongly_by_another_tool_are_errors_naming_the_file() {
    let dir = Dir::new("foreign-bad");
    for (kind, says) in [
        ("double_features", "column features does not hold float32"),
        ("large_list", "column features is not a list"),
        ("dim0", "fruits.feature_dim 0 is not a feature width"),
        ("null_row", "row 2 of features is null"),
        ("null_value", "row 1 of features has a null value"),
        ("short_row", "row 4 of features has 7 values, expected 8"),
        ("null_path", "row 1 has no path"),
        ("int_path", "column path is not a string"),
        ("not_parquet", "not a Parquet file"),
        ("bad_footer", ""),
        ("huge_footer_length", "truncated Parquet footer"),
    ] {
        let folder = dir.join(kind);
        std::fs::create_dir_all(&folder).unwrap();
        let part = folder.join("part-00000.parquet");
        foreign(&["part", kind, part.to_str().unwrap()]);
        let mut cmd = fruits();
        cmd.args(["pca", "fit", "--k", "2", "--features"])
            .arg(&folder)
            .arg("--output")
            .arg(dir.join(format!("pca-{kind}")));
        let err = stderr(&run(cmd, 1));
        assert!(err.contains(&part.display().to_string()), "{kind}: the file is named: {err}");
        assert!(err.contains(says), "{kind}: {err}");
        assert!(!err.contains("panicked"), "{kind}: {err}");
    }
}

/// Valid parts in the codecs other tools write by default (snappy: Spark,
/// pyarrow, DuckDB) are read.
#[test]
fn parts_of_other_tools_in_their_default_codecs_are_read() {
    let dir = Dir::new("foreign-ok");
    for codec in ["snappy", "gzip", "lz4"] {
        let folder = dir.join(codec);
        std::fs::create_dir_all(&folder).unwrap();
        foreign(&["part", codec, folder.join("part-00000.parquet").to_str().unwrap()]);
        let mut cmd = fruits();
        cmd.args(["pca", "fit", "--k", "2", "--features"])
            .arg(&folder)
            .arg("--output")
            .arg(dir.join(format!("pca-{codec}")));
        let err = stderr(&run(cmd, 0));
        assert!(err.contains("PCA of 5 rows from 1 parts"), "{codec}: {err}");
    }
}

#[test]
fn a_model_with_a_component_of_the_wrong_width_is_refused() {
    let dir = Dir::new("narrow");
    let mut cmd = fruits();
    cmd.args(["featurize", "--weights", "random:0", "--quiet", "--input"]).arg(sample_dir());
    cmd.arg("--output").arg(dir.join("features"));
    run(cmd, 0);
    let mut fit = fruits();
    fit.args(["pca", "fit", "--k", "4", "--features"]).arg(dir.join("features")).arg("--output").arg(dir.join("pca"));
    run(fit, 0);
    let components = dir.join("pca/components.parquet");
    foreign(&["narrow", components.to_str().unwrap()]);
    let mut t = fruits();
    t.args(["pca", "transform", "--features"]).arg(dir.join("features")).arg("--model").arg(dir.join("pca"));
    t.arg("--output").arg(dir.join("reduced"));
    let err = stderr(&run(t, 1));
    assert!(err.contains(&components.display().to_string()), "{err}");
    assert!(err.contains("component 1 has 1279 values, the model has 1280 features"), "{err}");
}

/// A 64 GiB file (sparse: no disk used) is rejected from its size, at
/// once: reading it whole would take minutes and all the memory.
#[test]
fn a_file_over_the_size_limit_is_rejected_unread() {
    let dir = Dir::new("huge-file");
    dir.write("in/Kiwi/ok.jpg", &std::fs::read(sample_dir().join("Training/Kiwi/f0_100.jpg")).unwrap());
    let huge = dir.join("in/Kiwi/huge.jpg");
    std::fs::File::create(&huge).unwrap().set_len(64 << 30).unwrap();
    let start = std::time::Instant::now();
    let mut cmd = fruits();
    cmd.args(["featurize", "--weights", "random:0", "--quiet", "--max-rejected", "0.5", "--input"]).arg(dir.join("in"));
    cmd.arg("--output").arg(dir.join("out"));
    let err = stderr(&run(cmd, 0));
    assert!(start.elapsed().as_secs() < 60, "took {:?}", start.elapsed());
    let csv = std::fs::read_to_string(crate::util::part_file(&dir.join("out"), 0, "errors")).unwrap();
    assert!(
        csv.contains(&format!("huge.jpg,too-large,\"{} bytes, more than the limit of {}", 64u64 << 30, 64u64 << 20)),
        "{csv}"
    );
    assert!(err.contains("featurised 1 of 2"), "{err}");
}
