//! A part is one atomic unit: attempts racing on one part id (Spark's
//! retries and speculative tasks), attempts killed mid-way, leftovers that
//! readers must ignore, folders of one run only, nothing overwritten that
//! was not asked for, ordinary file permissions.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::{
    files_under, fruits, manifest, part_file, python, read_parquet, run, sample_dir, stderr, Dir, S3Server,
};

/// `n` images (the sample photos cycled, Fruits-360 layout) under `dir/in`.
fn photos(dir: &Dir, n: usize) -> PathBuf {
    let mut sample: Vec<PathBuf> = Vec::new();
    for split in ["Training", "Test"] {
        for label in std::fs::read_dir(sample_dir().join(split)).unwrap() {
            for f in std::fs::read_dir(label.unwrap().path()).unwrap() {
                sample.push(f.unwrap().path());
            }
        }
    }
    sample.sort();
    for i in 0..n {
        let src = &sample[i % sample.len()];
        let label = src.parent().unwrap().file_name().unwrap().to_string_lossy();
        dir.write(&format!("in/Training/{label}/{i:05}.jpg"), &std::fs::read(src).unwrap());
    }
    dir.join("in")
}

fn featurize_cmd(input: &Path, output: &str, extra: &[&str]) -> Command {
    let mut cmd = fruits();
    cmd.args(["featurize", "--weights", "random:5", "--quiet", "--input"]).arg(input);
    cmd.args(["--output", output]).args(extra);
    cmd
}

/// One attempt of a race. On the CPU, whatever the machine: on a GPU the
/// attempts finish in a fraction of a second and their writes may never
/// overlap (seen on an H200); the protocol under test is the same.
fn spawn(mut cmd: Command) -> Child {
    cmd.args(["--device", "cpu"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
}

/// The paths of a rows file, read back by pyarrow.
fn paths_of(file: &Path) -> Vec<String> {
    let pq = read_parquet(file);
    pq["columns"]["path"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect()
}

/// Every input exactly once, nothing else.
fn assert_every_image_once(paths: &[String], input: &Path, n: usize) {
    let unique: BTreeSet<&String> = paths.iter().collect();
    assert_eq!(paths.len(), n, "rows");
    assert_eq!(unique.len(), n, "each image once");
    assert!(paths.iter().all(|p| p.starts_with(&input.display().to_string())), "only the inputs");
}

fn pca_rows(features: &str, out: &Path, env: Option<&S3Server>) -> (String, u64) {
    let mut cmd = match env {
        Some(s3) => s3.fruits(),
        None => fruits(),
    };
    cmd.args(["pca", "fit", "--k", "3", "--features", features, "--output"]).arg(out);
    let err = stderr(&run(cmd, 0));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("pca.json")).unwrap()).unwrap();
    (err, json["n_samples"].as_u64().unwrap())
}

/// Waits until two attempts are streaming into `out` (two staging rows files).
fn wait_until_both_write(out: &Path) {
    let start = std::time::Instant::now();
    loop {
        let staging = std::fs::read_dir(out)
            .map(|d| d.filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".parquet.tmp")).count())
            .unwrap_or(0);
        if staging >= 2 {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the two attempts never started writing");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn two_attempts_at_once_one_killed_leave_one_complete_part_locally() {
    let dir = Dir::new("race-local");
    let n = 800;
    let input = photos(&dir, n);
    // Kill B as both start writing, mid-way, or never.
    for (i, kill_after) in [Some(Duration::ZERO), Some(Duration::from_millis(700)), None].into_iter().enumerate() {
        let out = dir.join(format!("out-{i}"));
        let out_s = out.to_str().unwrap();
        let a = spawn(featurize_cmd(&input, out_s, &["--part-id", "5"]));
        let mut b = spawn(featurize_cmd(&input, out_s, &["--part-id", "5"]));
        if let Some(after) = kill_after {
            wait_until_both_write(&out);
            std::thread::sleep(after);
            b.kill().unwrap();
        }
        let a = a.wait_with_output().unwrap();
        assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
        let _ = b.wait();

        // Exactly one complete part, every image once, whoever won.
        let m = manifest(&out, 5);
        assert_eq!(m["counts"]["featurised"], n as u64);
        assert_every_image_once(&paths_of(&part_file(&out, 5, "rows")), &input, n);
        let (_, rows) = pca_rows(out_s, &dir.join(format!("pca-{i}")), None);
        assert_eq!(rows, n as u64, "pca fit reads the committed part only");

        // The losers' leftovers (a killed attempt's staging files, a replaced
        // attempt not cleaned in a tie) are invisible to readers; `parts
        // clean` removes them and leaves exactly the manifest's files.
        let mut clean = fruits();
        clean.args(["parts", "clean", "--older-than", "0", out_s]);
        run(clean, 0);
        let mut want: Vec<String> =
            m["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().into()).collect();
        want.push("_fruits/part-00005.manifest.json".into());
        want.sort();
        assert_eq!(files_under(&out), want, "kill after {kill_after:?}");
    }
}

#[test]
fn a_crash_between_data_and_manifest_leaves_nothing_a_reader_takes() {
    let dir = Dir::new("leftover");
    let input = photos(&dir, 40);
    let out = dir.join("out");
    let out_s = out.to_str().unwrap();
    run(featurize_cmd(&input, out_s, &["--part-id", "1"]), 0);
    // What an attempt killed after putting its files, before its manifest,
    // leaves: complete files under an attempt's names, named by no manifest.
    let rows = part_file(&out, 1, "rows");
    std::fs::copy(&rows, out.join("part-00001-00000000deadbeef.parquet")).unwrap();
    std::fs::copy(&rows, out.join("part-00002-00000000deadbeef.parquet")).unwrap();
    std::fs::write(out.join("_fruits/part-00002-00000000deadbeef.errors.csv"), "path,kind,reason\n").unwrap();
    std::fs::write(out.join(".part-00003-00000000deadbeef.parquet.tmp"), b"half a file").unwrap();

    let (err, n) = pca_rows(out_s, &dir.join("pca"), None);
    assert_eq!(n, 40, "leftovers are not read");
    assert!(err.contains("ignored 4 leftover files"), "{err}");
    // --skip-existing: part 1 is complete; part 2 has only leftovers, so it runs.
    let err = stderr(&run(featurize_cmd(&input, out_s, &["--part-id", "1", "--skip-existing"]), 0));
    assert!(err.contains("part 1 is complete"), "{err}");
    let err = stderr(&run(featurize_cmd(&input, out_s, &["--part-id", "2", "--skip-existing"]), 0));
    assert!(err.contains("featurised 40 of 40"), "{err}");
    // A manifest naming a missing file is an error naming it, for readers,
    // and not "complete" for --skip-existing.
    std::fs::remove_file(part_file(&out, 2, "errors")).unwrap();
    let mut fit = fruits();
    fit.args(["pca", "fit", "--features", out_s, "--output"]).arg(dir.join("pca2"));
    let err = stderr(&run(fit, 1));
    assert!(err.contains("part-00002.manifest.json") && err.contains("which is not in the folder"), "{err}");
    let err = stderr(&run(featurize_cmd(&input, out_s, &["--part-id", "2", "--skip-existing"]), 0));
    assert!(err.contains("featurised 40 of 40"), "an incomplete part is made again: {err}");

    let mut list = fruits();
    list.args(["parts", "list", out_s]);
    let listed = String::from_utf8(run(list, 0).stdout).unwrap();
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(listed.lines().all(|l| l.split('\t').nth(1) == Some("40")), "{listed}");
}

#[test]
fn two_attempts_at_once_one_killed_leave_one_complete_part_in_s3() {
    let s3 = S3Server::start();
    s3.helper("bucket", &["results", "eu-west-1"]);
    let dir = Dir::new("race-s3");
    let n = 400;
    let input = photos(&dir, n);
    let with_s3 = |cmd: Command| {
        let mut c = s3.fruits();
        c.args(cmd.get_args());
        c
    };
    for kill_after in [Duration::from_millis(400), Duration::from_millis(1500)] {
        let a = spawn(with_s3(featurize_cmd(&input, "s3://results/features/", &["--part-id", "3"])));
        let mut b = spawn(with_s3(featurize_cmd(&input, "s3://results/features/", &["--part-id", "3"])));
        std::thread::sleep(kill_after);
        b.kill().unwrap();
        let a = a.wait_with_output().unwrap();
        assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
        let _ = b.wait();
        let key = s3.part_key("results", "features/", 3, "rows");
        let local = dir.join("rows.parquet");
        s3.get("results", &key, &local);
        assert_every_image_once(&paths_of(&local), &input, n);
    }
    // A complete but uncommitted upload (killed before its manifest) is not read.
    let key = s3.part_key("results", "features/", 3, "rows");
    let local = dir.join("rows.parquet");
    s3.get("results", &key, &local);
    s3.helper("put", &["results", "features/part-00003-00000000deadbeef.parquet", local.to_str().unwrap()]);
    let (err, rows) = pca_rows("s3://results/features/", &dir.join("pca"), Some(&s3));
    assert_eq!(rows, n as u64);
    assert!(err.contains("ignored 1 leftover files"), "{err}");
}

#[test]
fn a_folder_holds_one_run_unless_overwrite() {
    let dir = Dir::new("runs");
    let input = photos(&dir, 10);
    let out = dir.join("out");
    let out_s = out.to_str().unwrap();
    run(featurize_cmd(&input, out_s, &["--part-id", "0", "--run-id", "job-a"]), 0);
    // Same run, another part: fine.
    run(featurize_cmd(&input, out_s, &["--part-id", "1", "--run-id", "job-a"]), 0);
    for (extra, differs) in [
        (vec!["--run-id", "job-b"], "fruits.run_id: job-a vs job-b"),
        (vec!["--run-id", "job-a", "--model", "mobilenetv4-small"], "fruits.model"),
        (vec!["--run-id", "job-a", "--dtype", "bf16"], "fruits.dtype: f32 vs bf16"),
    ] {
        let mut args = vec!["--part-id", "2"];
        args.extend(extra.iter().copied());
        let err = stderr(&run(featurize_cmd(&input, out_s, &args), 1));
        assert!(err.contains("holds parts of another run") && err.contains(differs), "{extra:?}: {err}");
        assert!(err.contains("--overwrite"), "says how to proceed: {err}");
    }
    assert!(!out.join("_fruits/part-00002.manifest.json").exists(), "nothing written when refused");
    let err = stderr(&run(featurize_cmd(&input, out_s, &["--part-id", "2", "--run-id", "job-b", "--overwrite"]), 0));
    assert!(err.contains("removed 2 parts of other runs"), "{err}");
    let names = files_under(&out);
    assert_eq!(names.iter().filter(|f| f.ends_with(".manifest.json")).count(), 1, "{names:?}");
    assert_eq!(manifest(&out, 2)["run"]["fruits.run_id"], "job-b");
}

#[test]
fn pca_refuses_parts_that_mix_dtypes_or_preprocessing() {
    let dir = Dir::new("mix");
    let input = photos(&dir, 8);
    let (a, b) = (dir.join("a"), dir.join("b"));
    run(featurize_cmd(&input, a.to_str().unwrap(), &["--part-id", "0"]), 0);
    run(featurize_cmd(&input, b.to_str().unwrap(), &["--part-id", "1", "--dtype", "bf16"]), 0);
    // A folder put together by hand from two runs.
    for f in files_under(&b) {
        std::fs::create_dir_all(a.join(&f).parent().unwrap()).unwrap();
        std::fs::copy(b.join(&f), a.join(&f)).unwrap();
    }
    let fit = |features: &Path, code: i32| {
        let mut cmd = fruits();
        cmd.args(["pca", "fit", "--k", "2", "--features"]).arg(features).arg("--output").arg(dir.join("pca"));
        stderr(&run(cmd, code))
    };
    let err = fit(&a, 1);
    assert!(err.contains("parts differ in fruits.dtype"), "{err}");
    // The same with the preprocessing, edited in part 1's manifest.
    let at = b.join("_fruits/part-00001.manifest.json");
    let mut m = manifest(&b, 1);
    m["run"]["fruits.dtype"] = "f32".into();
    m["run"]["fruits.preprocessing"] = "resize to 256, centre crop 224".into();
    std::fs::write(a.join("_fruits/part-00001.manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
    assert!(at.exists());
    let err = fit(&a, 1);
    assert!(err.contains("parts differ in fruits.preprocessing"), "{err}");
}

#[test]
fn outputs_inside_inputs_are_refused() {
    let dir = Dir::new("nested");
    let input = photos(&dir, 6);
    let features = dir.join("features");
    let fs = features.to_str().unwrap();
    let err = stderr(&run(featurize_cmd(&input, input.join("Training/out").to_str().unwrap(), &[]), 2));
    assert!(err.contains("is inside --input"), "{err}");
    run(featurize_cmd(&input, fs, &[]), 0);
    let mut fit = fruits();
    fit.args(["pca", "fit", "--k", "2", "--features", fs, "--output"]).arg(features.join("pca"));
    assert!(stderr(&run(fit, 2)).contains("is inside --features"));
    let mut fit = fruits();
    fit.args(["pca", "fit", "--k", "2", "--features", fs, "--output"]).arg(dir.join("pca"));
    run(fit, 0);
    for output in [features.clone(), features.join("reduced"), features.join("./sub/../reduced")] {
        let mut t = fruits();
        t.args(["pca", "transform", "--features", fs, "--model"]).arg(dir.join("pca")).arg("--output").arg(&output);
        let err = stderr(&run(t, 2));
        assert!(err.contains("is inside --features"), "{}: {err}", output.display());
    }
    assert_eq!(files_under(&features).len(), 4, "the features folder is untouched");
}

#[test]
fn output_files_have_ordinary_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Dir::new("modes");
    // What this process's umask gives a new file.
    let probe = dir.write("probe", b"");
    let ordinary = std::fs::metadata(&probe).unwrap().permissions().mode() & 0o777;
    let mut cmd = fruits();
    cmd.args(["demo", "--weights", "random:0", "--output"]).arg(dir.join("demo"));
    run(cmd, 0);
    let demo = dir.join("demo");
    let files = files_under(&demo);
    assert!(files.len() > 10);
    for f in files {
        let mode = std::fs::metadata(demo.join(&f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, ordinary, "{f}: {mode:o}, other files get {ordinary:o}");
    }
    // And the manifest's sha256 of the statistics is Python's.
    let stats = part_file(&demo.join("features"), 0, "stats");
    let out = std::process::Command::new(python())
        .args(["-c", "import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],'rb').read()).hexdigest())"])
        .arg(&stats)
        .output()
        .unwrap();
    let m = manifest(&demo.join("features"), 0);
    let entry = m["files"].as_array().unwrap().iter().find(|f| f["role"] == "stats").unwrap().clone();
    assert_eq!(entry["sha256"].as_str().unwrap(), String::from_utf8_lossy(&out.stdout).trim());
}
