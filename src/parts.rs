//! Reading what `featurize` wrote: the features parts of a folder, their
//! metadata, their rows in batches, and the statistics file beside each
//! (`part-NNNNN.stats.safetensors`: count, shift, sum and upper Gram
//! triangle in f64; see [`crate::pca::Moments`]).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use arrow_array::Array;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::ParquetMetaDataReader;
use safetensors::tensor::{Dtype, TensorView};

use crate::error::{Error, Result};
use crate::input::Item;
use crate::output::{meta, output_err, Staged};
use crate::pca::Moments;
use crate::storage::{Location, Storage};

/// Rows per batch when streaming a part.
pub const READ_BATCH_ROWS: usize = 2048;

fn read_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Input { path: path.to_path_buf(), source: std::io::Error::other(e.to_string()) }
}

fn is_part_name(name: &str) -> bool {
    name.starts_with("part-") && name.ends_with(".parquet")
}

/// The features parts (`part-*.parquet`) directly in `dir` (a folder or an
/// `s3://bucket/prefix`), by name.
pub fn list_parts(storage: &Storage, dir: &Location) -> Result<Vec<Location>> {
    let folder = match dir {
        Location::S3 { bucket, key } if !key.is_empty() && !key.ends_with('/') => {
            Location::S3 { bucket: bucket.clone(), key: format!("{key}/") }
        }
        other => other.clone(),
    };
    if let Location::Local(p) = &folder {
        if !p.is_dir() {
            return Err(Error::Input { path: p.clone(), source: std::io::Error::other("not a folder") });
        }
    }
    let prefix_len = folder.to_string().len();
    let parts: Vec<Location> = storage
        .list(&folder, &|name| is_part_name(name))?
        .into_iter()
        .filter(|l| {
            // Directly in the folder, not in a subfolder.
            let s = l.to_string();
            let rest = s.get(prefix_len..).unwrap_or("").trim_start_matches('/');
            !rest.contains('/')
        })
        .collect();
    if parts.is_empty() {
        return Err(Error::Usage(format!("no features parts (part-*.parquet) in {folder}")));
    }
    Ok(parts)
}

/// What a part's footer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    pub path: Location,
    pub rows: u64,
    pub metadata: HashMap<String, String>,
}

impl PartInfo {
    pub fn get(&self, key: &str) -> &str {
        self.metadata.get(key).map(String::as_str).unwrap_or("?")
    }
    pub fn feature_dim(&self) -> Result<usize> {
        self.get(meta::FEATURE_DIM).parse().map_err(|_| {
            loc_err(
                &self.path,
                format!("no valid {} in its metadata: not written by fruits featurize?", meta::FEATURE_DIM),
            )
        })
    }
}

fn loc_err(loc: &Location, e: impl std::fmt::Display) -> Error {
    Error::Input { path: PathBuf::from(loc.to_string()), source: std::io::Error::other(e.to_string()) }
}

/// Reads only the footer: two small reads (two ranged GETs in S3).
pub fn part_info(storage: &Storage, loc: &Location) -> Result<PartInfo> {
    let tail = storage.get_tail(loc, 8)?;
    if tail.len() != 8 || &tail[4..] != b"PAR1" {
        return Err(loc_err(loc, "not a Parquet file"));
    }
    let len = u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")) as u64;
    let footer = storage.get_tail(loc, len + 8)?;
    if footer.len() as u64 != len + 8 {
        return Err(loc_err(loc, "truncated Parquet footer"));
    }
    let md = ParquetMetaDataReader::decode_metadata(&footer[..len as usize]).map_err(|e| loc_err(loc, e))?;
    let fmd = md.file_metadata();
    let metadata = fmd
        .key_value_metadata()
        .into_iter()
        .flatten()
        .filter_map(|kv| kv.value.as_ref().map(|v| (kv.key.clone(), v.clone())))
        .collect();
    Ok(PartInfo { path: loc.clone(), rows: fmd.num_rows() as u64, metadata })
}

/// One batch of rows read back: ids and a row-major feature matrix.
pub struct Rows {
    pub items: Vec<Item>,
    pub values: Vec<f32>,
}

/// Streams `column` (a list<float32> of width `dim`) with the id columns.
pub fn read_rows(path: &Path, column: &str, dim: usize, mut each: impl FnMut(Rows) -> Result<()>) -> Result<()> {
    let file = File::open(path).map_err(|e| Error::Input { path: path.to_path_buf(), source: e })?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(READ_BATCH_ROWS).build())
        .map_err(|e| read_err(path, e))?;
    for batch in reader {
        let batch = batch.map_err(|e| read_err(path, e))?;
        let col = |name: &str| batch.column_by_name(name).ok_or_else(|| read_err(path, format!("no column {name}")));
        let strings = |name: &str| -> Result<Vec<Option<String>>> {
            let c = col(name)?;
            let c = c.as_string_opt::<i32>().ok_or_else(|| read_err(path, format!("column {name} is not a string")))?;
            Ok(c.iter().map(|s| s.map(str::to_string)).collect())
        };
        let (paths, labels, splits) = (strings("path")?, strings("label")?, strings("split")?);
        let lists = col(column)?;
        let lists =
            lists.as_list_opt::<i32>().ok_or_else(|| read_err(path, format!("column {column} is not a list")))?;
        let values = lists
            .values()
            .as_primitive_opt::<Float32Type>()
            .ok_or_else(|| read_err(path, format!("column {column} does not hold float32")))?;
        if lists.null_count() > 0 || values.null_count() > 0 {
            return Err(read_err(path, format!("column {column} has nulls")));
        }
        let offsets = lists.value_offsets();
        let mut flat = Vec::with_capacity(lists.len() * dim);
        for i in 0..lists.len() {
            let (a, b) = (offsets[i] as usize, offsets[i + 1] as usize);
            if b - a != dim {
                return Err(read_err(path, format!("row {i} of {column} has {} values, expected {dim}", b - a)));
            }
            flat.extend_from_slice(&values.values()[a..b]);
        }
        let items = paths
            .into_iter()
            .zip(labels)
            .zip(splits)
            .map(|((p, label), split)| Item { path: PathBuf::from(p.unwrap_or_default()), label, split })
            .collect();
        each(Rows { items, values: flat })?;
    }
    Ok(())
}

/// `part-NNNNN.parquet` → `part-NNNNN.stats.safetensors`.
pub fn stats_path(part: &Path) -> PathBuf {
    let name = part.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    part.with_file_name(stats_name(&name))
}

pub fn stats_name(part_name: &str) -> String {
    format!("{}.stats.safetensors", part_name.trim_end_matches(".parquet"))
}

/// The statistics file beside the part at `loc`.
pub fn stats_location(loc: &Location) -> Location {
    let s = loc.to_string();
    let name = loc.file_name();
    format!("{}{}", &s[..s.len() - name.len()], stats_name(&name)).parse().expect("parses")
}

fn f64_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f64s(bytes: &[u8]) -> Vec<f64> {
    bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect()
}

/// Writes `m` beside its part, with the part's metadata (model, weights).
pub fn write_stats(part: &Path, m: &Moments, metadata: &HashMap<String, String>) -> Result<PathBuf> {
    let dest = stats_path(part);
    let dir = dest.parent().unwrap_or(Path::new("."));
    let staged = Staged::new(dir, &dest.file_name().expect("has a name").to_string_lossy());
    let n = f64_bytes(&[m.n as f64]);
    let (shift, sum, gram) = (f64_bytes(&m.shift), f64_bytes(&m.sum), f64_bytes(&m.gram_upper()));
    let d = m.dim();
    fn view(b: &[u8], len: usize) -> TensorView<'_> {
        TensorView::new(Dtype::F64, vec![len], b).expect("consistent length")
    }
    let tensors = vec![
        ("n", view(&n, 1)),
        ("shift", view(&shift, d)),
        ("sum", view(&sum, d)),
        ("gram_upper", view(&gram, d * (d + 1) / 2)),
    ];
    let mut info = metadata.clone();
    info.insert("rows".into(), m.n.to_string());
    safetensors::serialize_to_file(tensors, Some(info), &staged.tmp).map_err(|e| output_err(&staged.tmp, e))?;
    staged.commit()
}

/// Reads a statistics file; `None` if it does not exist.
pub fn read_stats(path: &Path) -> Result<Option<(Moments, HashMap<String, String>)>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::Input { path: path.to_path_buf(), source: e }),
    };
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| read_err(path, e))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| read_err(path, e))?;
    let get = |name: &str| -> Result<Vec<f64>> {
        let t = st.tensor(name).map_err(|e| read_err(path, format!("{name}: {e}")))?;
        if t.dtype() != Dtype::F64 {
            return Err(read_err(path, format!("{name} is not f64")));
        }
        Ok(f64s(t.data()))
    };
    let n = get("n")?.first().copied().unwrap_or(0.0) as u64;
    let m = Moments::from_parts(n, get("shift")?, get("sum")?, &get("gram_upper")?).map_err(|e| read_err(path, e))?;
    Ok(Some((m, header.metadata().clone().unwrap_or_default())))
}
