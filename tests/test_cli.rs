//! The command line as a user meets it: bad values exit 2 naming the flag,
//! help texts that say what was measured, and a demo that runs from an
//! installed binary with no source tree at hand.

use std::process::Command;

use crate::util::{fruits, part_file, read_parquet, repo, run, stderr, Dir};

#[test]
fn every_bad_flag_value_exits_2_naming_the_flag() {
    let dir = Dir::new("cli-flags");
    let out = dir.join("o");
    let out = out.to_str().unwrap();
    let sample = crate::util::sample_dir();
    let sample = sample.to_str().unwrap();
    for (args, needle) in [
        (vec!["featurize", "--input", sample, "--threads", "0"], "--threads"),
        (vec!["featurize", "--output", out], "--input"),
        (vec!["featurize", "--input", sample, "--keys", "k.txt"], "--keys"),
        (vec!["pca", "fit", "--features", out, "--output", out, "--k", "0"], "--k"),
        (vec!["pca", "fit", "--features", out, "--output", out, "--variance", "1.5"], "--variance"),
        (vec!["pca", "fit", "--features", out, "--output", out, "--variance", "0"], "--variance"),
        (vec!["demo", "--model", "x"], "--model"),
        (vec!["demo", "--weights", "random:x"], "--weights"),
        (vec!["bench", "infer", "--batch", "0"], "--batch"),
        (vec!["parts", "clean", out, "--older-than=-1"], "--older-than"),
        (vec!["--s3-concurrency", "0", "list", out], "--s3-concurrency"),
    ] {
        let mut cmd = fruits();
        cmd.args(&args).current_dir(&dir.path);
        let err = stderr(&run(cmd, 2));
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn help_texts_say_what_was_measured() {
    let mut cmd = fruits();
    cmd.args(["featurize", "--help"]);
    let help = String::from_utf8(run(cmd, 0).stdout).unwrap();
    assert!(!help.contains("tens of images per second"), "{help}");
    assert!(help.contains("~500 images/s") && help.contains("benches/README.md"), "{help}");
    let dtype = help.split("--dtype").nth(1).unwrap().split("--quiet").next().unwrap();
    assert!(!dtype.contains("0.999"), "bf16 accuracy to 0.999 is not shown: {dtype}");
    assert!(dtype.contains("not yet measured"), "{dtype}");
}

/// `cargo install --path .` then `fruits demo` in an empty folder: the
/// binary carries its sample; no path into the source tree is needed.
#[test]
fn demo_runs_from_an_installed_binary_in_an_empty_folder() {
    let dir = Dir::new("installed");
    let bin = dir.join("bin/fruits");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_fruits"), &bin).unwrap();
    let bytes = std::fs::read(&bin).unwrap();
    let source = format!("{}/tests/data/fruits-360-sample", repo().display());
    assert!(!bytes.windows(source.len()).any(|w| w == source.as_bytes()), "the binary names the source tree's sample");
    let work = dir.join("empty");
    std::fs::create_dir_all(&work).unwrap();
    let mut cmd = Command::new(&bin);
    cmd.args(["demo", "--weights", "random:0"]).current_dir(&work);
    cmd.env("HF_ENDPOINT", "http://127.0.0.1:9").env("HF_HOME", dir.join("hf"));
    let out = run(cmd, 0);
    let features = part_file(&work.join("out/demo/features"), 0, "rows");
    let pq = read_parquet(&features);
    assert_eq!(pq["rows"], 19);
    let first = pq["columns"]["path"][0].as_str().unwrap();
    assert!(first.starts_with("out/demo/sample/"), "rows name the sample the demo wrote: {first}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("errors:"), "the demo says where the errors file is: {stdout}");
}
