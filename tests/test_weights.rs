//! `fruits weights`: random init is deterministic and loads back; a weights
//! file missing a tensor is refused with the tensor's name.

use std::collections::HashMap;

use fruits::engine::Model;
use fruits::model::{init, Which};

use crate::util::{fruits, run, Dir};

#[test]
fn init_is_deterministic_and_seed_dependent() {
    let dir = Dir::new("init");
    let sha = |seed: &str, name: &str| {
        let out = run(
            fruits()
                .args(["weights", "init", "--model", "mobilenetv4-small", "--seed", seed, "--out"])
                .arg(dir.join(name)),
            0,
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (a, b, c) = (sha("1", "a"), sha("1", "b"), sha("2", "c"));
    assert_eq!(a.len(), 64);
    assert_eq!(a, b);
    assert_ne!(a, c);
}

/// `random:SEED` is the same file on every machine (issue 19): the binary
/// writes, for both models, the sha256 the parity fixtures record, under
/// every `FRUITS_SIMD` cap and several thread counts. On another CPU (an
/// AVX2 laptop, an aarch64 Mac) this test is the check: nothing in the
/// init may depend on what the CPU offers.
#[test]
fn init_gives_the_committed_bytes_under_every_simd_level_and_thread_count() {
    let dir = Dir::new("init-everywhere");
    for which in Which::ALL {
        let info = crate::test_parity::parity_fixture(which);
        let (seed, want) = (info["seed"].as_u64().unwrap().to_string(), info["weights_sha256"].as_str().unwrap());
        for (simd, threads) in [("portable", "1"), ("avx2", "3"), ("avx512", "2"), ("", "4")] {
            let out = dir.join(format!("{which}-{simd}-{threads}.safetensors"));
            let mut cmd = fruits();
            cmd.args(["weights", "init", "--model", which.name(), "--seed", &seed, "--out"]).arg(&out);
            let got = run(cmd.env("FRUITS_SIMD", simd).env("RAYON_NUM_THREADS", threads), 0);
            let got = String::from_utf8(got.stdout).unwrap();
            assert_eq!(got.trim(), want, "{which} seed {seed}, FRUITS_SIMD={simd:?}, {threads} threads");
        }
    }
}

#[test]
fn init_writes_every_timm_tensor() {
    let t = init::random_weights(Which::MobileNetV2, 0).unwrap();
    // timm mobilenetv2_100's state_dict: 52 conv + 52 BatchNorm (×5 tensors) + classifier (2).
    assert_eq!(t.len(), 52 + 52 * 5 + 2);
    assert_eq!(t["blocks.6.0.conv_pwl.weight"].dims(), [320, 960, 1, 1]);
    assert_eq!(t["bn2.running_var"].dims(), [1280]);
    let t = init::random_weights(Which::MobileNetV4Small, 0).unwrap();
    assert_eq!(t["norm_head.running_mean"].dims(), [1280]);
    assert_eq!(t["blocks.2.0.dw_start.conv.weight"].dims(), [64, 1, 5, 5]);
    // BatchNorm statistics are not the defaults (0, 1).
    let var: Vec<f32> = t["blocks.3.1.pw_exp.bn.running_var"].to_vec1().unwrap();
    assert!(var.iter().any(|v| (v - 1.0).abs() > 0.1));
}

#[test]
fn a_missing_tensor_is_named() {
    let dir = Dir::new("missing-tensor");
    let mut t: HashMap<_, _> = init::random_weights(Which::MobileNetV2, 0).unwrap();
    t.remove("blocks.3.2.conv_dw.weight");
    let path = dir.join("broken.safetensors");
    candle_core::safetensors::save(&t, &path).unwrap();
    let err = Model::from_file(Which::MobileNetV2, &path).err().expect("refused");
    let msg = format!("{:#}", anyhow::Error::from(err)); // the chain, as the CLI prints it
    assert!(msg.contains("blocks.3.2.conv_dw.weight") && msg.contains("broken.safetensors"), "{msg}");
    // Weights of the other model are refused too (wrong names / shapes).
    let v4 = dir.join("v4.safetensors");
    init::write_random_weights(Which::MobileNetV4Small, 0, &v4).unwrap();
    assert!(Model::from_file(Which::MobileNetV2, &v4).is_err());
}

#[test]
fn a_wrong_checksum_is_refused() {
    let dir = Dir::new("checksum");
    let p = dir.write("w.safetensors", b"not the weights");
    let err = fruits::model::weights::verify(&p, Some(&"0".repeat(64)), Which::MobileNetV2).unwrap_err();
    assert!(err.to_string().contains("sha256 mismatch"), "{err}");
    // Nothing pinned: refused, with the file's own hash for a person to
    // compare (the CLI adds which flag takes it: src/cmd/mod.rs's tests).
    let err = fruits::model::weights::verify(&p, None, Which::MobileNetV4Small).unwrap_err();
    let fruits::Error::Unpinned { actual, path, .. } = &err else { panic!("{err:?}") };
    assert_eq!((actual.as_str(), path), (fruits::digest::sha256_bytes(b"not the weights").as_str(), &p), "{err}");
}

#[test]
fn a_fetched_file_is_checked_against_the_hash_the_hub_published() {
    // hf-hub's cache layout: snapshots/<rev>/<file> -> ../../blobs/<sha256 of the LFS file>.
    let dir = Dir::new("hub-cache");
    let bytes = b"pretend weights";
    let sha = {
        let p = dir.write("tmp", bytes);
        fruits::digest::sha256_file(&p).unwrap()
    };
    let blob = dir.write(&format!("blobs/{sha}"), bytes);
    std::fs::create_dir_all(dir.join("snapshots/rev")).unwrap();
    let link = dir.join("snapshots/rev/model.safetensors");
    std::os::unix::fs::symlink(&blob, &link).unwrap();
    assert_eq!(fruits::model::weights::hub_sha256(&link).as_deref(), Some(sha.as_str()));
    // mobilenetv4-small has no hash in the manifest: the hub's hash is the check.
    fruits::model::weights::verify_pinned(&link, None, Which::MobileNetV4Small).unwrap();

    // Content that does not match the hub's hash (a corrupted download) is refused.
    let bad_blob = dir.write(&format!("blobs2/{sha}"), b"corrupted weights");
    let bad_link = dir.join("snapshots/rev/bad.safetensors");
    std::os::unix::fs::symlink(&bad_blob, &bad_link).unwrap();
    let err = fruits::model::weights::verify_pinned(&bad_link, None, Which::MobileNetV4Small).unwrap_err();
    assert!(err.to_string().contains("sha256 mismatch"), "{err}");
    // mobilenetv2's manifest hash must agree with the hub's.
    let err = fruits::model::weights::verify_pinned(&link, None, Which::MobileNetV2).unwrap_err();
    assert!(err.to_string().contains("sha256 mismatch"), "{err}");
}
