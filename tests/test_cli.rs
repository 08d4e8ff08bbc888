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

/// A `FRUITS_SIMD` that names no level stops every command at once, naming
/// the variable and the levels; empty counts as unset.
#[test]
fn a_bad_fruits_simd_stops_at_once_naming_it() {
    let err = stderr(&run(fruits().env("FRUITS_SIMD", "avx9").args(["regions"]), 2));
    let levels = "portable, avx2, avx512, avx512-bf16, avx512-amx";
    assert!(err.contains("FRUITS_SIMD=\"avx9\"") && err.contains(levels), "{err}");
    run(fruits().env("FRUITS_SIMD", "").args(["regions"]), 0);
}

/// `fruits info` names the CPU as the kernel does: vendor, family, model,
/// stepping and brand as /proc/cpuinfo has them, the data caches as
/// /sys/devices/system/cpu/cpu0/cache has them (both read CPUID
/// independently of the raw-cpuid crate), the level `FRUITS_SIMD` caps, and
/// a measured peak; `bench peak` measures every level up to the cap.
#[test]
fn info_and_bench_peak_name_this_cpu_as_the_kernel_does() {
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        eprintln!("info_and_bench_peak_name_this_cpu_as_the_kernel_does: SKIPPED LOUDLY: needs Linux on x86-64");
        return;
    }
    let info: serde_json::Value =
        serde_json::from_slice(&run(fruits().env("FRUITS_SIMD", "avx2").args(["info", "--json"]), 0).stdout).unwrap();
    let cpu = &info["cpu"];
    let proc = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let field = |name: &str| {
        proc.lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim() == name).map(|(_, v)| v.trim().to_string()))
            .unwrap_or_else(|| panic!("/proc/cpuinfo has no {name}"))
    };
    assert_eq!(cpu["vendor"], field("vendor_id").as_str(), "{cpu}");
    assert_eq!(cpu["brand"], field("model name").as_str(), "{cpu}");
    for (ours, theirs) in [("family", "cpu family"), ("model", "model"), ("stepping", "stepping")] {
        assert_eq!(cpu[ours].as_u64().unwrap().to_string(), field(theirs), "{ours}: {cpu}");
    }
    for index in std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache").unwrap().flatten() {
        let read = |f: &str| std::fs::read_to_string(index.path().join(f)).map(|s| s.trim().to_string());
        let (Ok(level), Ok(kind), Ok(size)) = (read("level"), read("type"), read("size")) else { continue };
        let name = match (level.as_str(), kind.as_str()) {
            ("1", "Data") => "l1d",
            ("2", "Unified") => "l2",
            ("3", "Unified") => "l3",
            _ => continue,
        };
        let bytes = match size.strip_suffix('K') {
            Some(k) => k.parse::<u64>().unwrap() << 10,
            None => size.strip_suffix('M').expect("size in K or M").parse::<u64>().unwrap() << 20,
        };
        assert_eq!(cpu["cache_bytes"][name].as_u64(), Some(bytes), "{name} ({size}): {cpu}");
    }
    assert_eq!(cpu["simd"], "avx2", "{cpu}");
    assert!(cpu["peak_gflops"]["f32"].as_f64().unwrap() > 0.0, "{cpu}");
    assert!(cpu["peak_gflops"]["bf16"].is_null(), "no bf16 under an avx2 cap: {cpu}");

    // AMX's bf16 tiles never where the kernel does not list them, and
    // where it does unless it refuses the tile state (a sandbox's seccomp
    // may): said loudly, since bf16 then runs at half the f32 rate.
    let uncapped: serde_json::Value =
        serde_json::from_slice(&run(fruits().env_remove("FRUITS_SIMD").args(["info", "--json"]), 0).stdout).unwrap();
    let flags = field("flags");
    let listed = flags.split_whitespace().filter(|f| ["amx_tile", "amx_bf16"].contains(f)).count() == 2;
    let used = uncapped["cpu"]["simd"] == "avx512-amx";
    assert!(listed || !used, "AMX used where /proc/cpuinfo lists none: {}", uncapped["cpu"]);
    if listed && !used {
        eprintln!("NOTE LOUDLY: /proc/cpuinfo lists AMX but fruits does not use it (arch_prctl refused?)");
    }

    let text = String::from_utf8(run(fruits().arg("info"), 0).stdout).unwrap();
    let line = text.lines().find(|l| l.starts_with("cpu: ") && l.contains("model")).unwrap_or_default();
    assert!(line.contains(&format!("family {} model {}", field("cpu family"), field("model"))), "{text}");

    let out = run(fruits().env("FRUITS_SIMD", "avx2").args(["bench", "peak", "--seconds", "0.05", "--json"]), 0);
    let peaks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let levels: Vec<&str> = peaks["peaks"].as_array().unwrap().iter().map(|p| p["level"].as_str().unwrap()).collect();
    assert_eq!(levels, ["portable", "avx2"], "{peaks}");
}

/// `bench infer` gives its images/s as a share of the peak, with the CPU
/// it ran on.
#[test]
fn bench_infer_says_its_share_of_the_measured_peak() {
    let out = run(fruits().args(["bench", "infer", "--images", "4", "--batch", "2"]), 0);
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text.lines().find(|l| l.contains("of this CPU's f32 peak")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("0.60 GFLOP an image") && line.contains("family"), "{line}");
}

/// `bench infer --blocks` times each block and the head of mobilenetv2
/// (timm's conv_stem, 17 inverted-residual blocks, conv_head): their
/// multiply-adds add up to the image's (the line above, checked against
/// timm's published count in engine::model), their shares of the time to
/// 100%; an engine it cannot clock is refused, naming the flag.
#[test]
fn bench_infer_blocks_accounts_for_every_block() {
    let out = run(fruits().args(["bench", "infer", "--images", "4", "--batch", "2", "--blocks"]), 0);
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("block "))
        .skip(1)
        .take_while(|l| !l.starts_with("a thread's peak"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 19, "{text}");
    assert_eq!(rows[18][0], "head", "{text}");
    let column = |i: usize| rows.iter().map(|r| r[i].parse::<f64>().unwrap()).sum::<f64>();
    assert_eq!(format!("{:.2}", 2.0 * column(1) / 1e3), "0.60", "{text}");
    assert!((column(2) - 100.0).abs() < 1.0, "{text}");
    assert!(rows.iter().all(|r| r[3].parse::<f64>().unwrap() > 0.0), "{text}");
    let err = stderr(&run(fruits().args(["bench", "infer", "--images", "2", "--engine", "candle", "--blocks"]), 2));
    assert!(err.contains("--blocks"), "{err}");
}

/// docker/build.sh (the node build .ci/run runs as `--test`) stops at once,
/// before installing or building anything, on a flag it does not know or
/// on two that contradict each other, naming them.
#[test]
fn the_node_build_script_refuses_bad_flags_at_once() {
    let cases: [(&[&str], &str); 2] = [
        (&["--test", "--check-only"], "--test builds and runs the tests, --check-only builds nothing"),
        (&["--bogus"], "unknown option --bogus"),
    ];
    for (args, says) in cases {
        let out = Command::new("bash").arg("docker/build.sh").args(args).current_dir(repo()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
