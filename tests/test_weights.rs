//! `fruits weights`: random init is deterministic and loads back; a weights
//! file missing a tensor is refused with the tensor's name.

use std::collections::HashMap;

use candle_core::Device;
use fruits::model::{init, Model, Which};

use crate::util::{fruits, run, Dir};

#[test]
fn init_is_deterministic_and_seed_dependent() {
    let dir = Dir::new("init");
    let sha = |seed: &str, name: &str| {
        let out = run(
            fruits().args(["weights", "init", "--model", "mobilenetv4-small", "--seed", seed, "--out"]).arg(dir.join(name)),
            0,
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (a, b, c) = (sha("1", "a"), sha("1", "b"), sha("2", "c"));
    assert_eq!(a.len(), 64);
    assert_eq!(a, b);
    assert_ne!(a, c);
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
    let err = Model::from_file(Which::MobileNetV2, &path, &Device::Cpu).err().expect("refused");
    let msg = format!("{:#}", anyhow::Error::from(err)); // the chain, as the CLI prints it
    assert!(msg.contains("blocks.3.2.conv_dw.weight") && msg.contains("broken.safetensors"), "{msg}");
    // Weights of the other model are refused too (wrong names / shapes).
    let v4 = dir.join("v4.safetensors");
    init::write_random_weights(Which::MobileNetV4Small, 0, &v4).unwrap();
    assert!(Model::from_file(Which::MobileNetV2, &v4, &Device::Cpu).is_err());
}

#[test]
fn a_wrong_checksum_is_refused() {
    let dir = Dir::new("checksum");
    let p = dir.write("w.safetensors", b"not the weights");
    let err = fruits::weights::verify(&p, Some(&"0".repeat(64)), Which::MobileNetV2).unwrap_err();
    assert!(err.to_string().contains("sha256 mismatch"), "{err}");
    let err = fruits::weights::verify(&p, None, Which::MobileNetV4Small).unwrap_err();
    assert!(err.to_string().contains("--sha256"), "{err}");
}
