//! Reading a part's rows file back: its footer (row count, how it was
//! made) and its rows in batches. Parts written by other tools are read
//! too, so every surprise (a wrong type, nulls, a width of 0, a damaged
//! footer, even a panic in the Parquet reader) is an error naming the file.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::ParquetMetaDataReader;

use crate::error::{Error, Result};
use crate::part::schema::{meta, RowId};
use crate::storage::{Location, Storage};

/// Rows per batch when streaming a part.
pub const READ_BATCH_ROWS: usize = 2048;

/// Widest feature vector accepted (MobileNets give 1280).
pub const MAX_FEATURE_DIM: usize = 1 << 16;

/// A part that does not hold what it should.
fn bad(path: impl std::fmt::Display, detail: impl Into<String>) -> Error {
    Error::corrupt(path, detail)
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

    /// The feature width its metadata records, in 1..=[`MAX_FEATURE_DIM`].
    pub fn feature_dim(&self) -> Result<usize> {
        let raw = self.get(meta::FEATURE_DIM);
        match raw.parse::<usize>() {
            Ok(d) if (1..=MAX_FEATURE_DIM).contains(&d) => Ok(d),
            Ok(d) => Err(bad(
                &self.path,
                format!("{} {d} is not a feature width (1 to {MAX_FEATURE_DIM})", meta::FEATURE_DIM),
            )),
            Err(_) => Err(bad(
                &self.path,
                format!("no valid {} in its metadata ({raw:?}): not written by fruits featurize?", meta::FEATURE_DIM),
            )),
        }
    }
}

/// Reads only the footer: two small reads (two ranged GETs in S3).
pub fn part_info(storage: &Storage, loc: &Location) -> Result<PartInfo> {
    let tail = storage.get_tail(loc, 8)?;
    if tail.len() != 8 || &tail[4..] != b"PAR1" {
        return Err(bad(loc, "not a Parquet file"));
    }
    let len = u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")) as u64;
    let footer = storage.get_tail(loc, len + 8)?;
    if footer.len() as u64 != len + 8 {
        return Err(bad(loc, "truncated Parquet footer"));
    }
    let decoded = crate::guard::catch(|| ParquetMetaDataReader::decode_metadata(&footer[..len as usize]))
        .map_err(|panic| bad(loc, format!("the Parquet reader failed on its footer: {panic}")))?;
    let md = decoded.map_err(|e| Error::parse(loc, e))?;
    let fmd = md.file_metadata();
    let metadata = fmd
        .key_value_metadata()
        .into_iter()
        .flatten()
        .filter_map(|kv| kv.value.as_ref().map(|v| (kv.key.clone(), v.clone())))
        .collect();
    let rows = u64::try_from(fmd.num_rows()).map_err(|_| bad(loc, format!("{} rows", fmd.num_rows())))?;
    Ok(PartInfo { path: loc.clone(), rows, metadata })
}

/// One batch of rows read back: ids and a row-major matrix.
pub struct Rows {
    pub ids: Vec<RowId>,
    pub values: Vec<f32>,
}

/// Streams `column` (a list<float32> of width `dim`) with the id columns.
pub fn read_rows(path: &Path, column: &str, dim: usize, mut each: impl FnMut(Rows) -> Result<()>) -> Result<()> {
    let file = File::open(path).map_err(|e| Error::Input { path: path.to_path_buf(), source: e })?;
    let reader = crate::guard::catch(|| {
        ParquetRecordBatchReaderBuilder::try_new(file).and_then(|b| b.with_batch_size(READ_BATCH_ROWS).build())
    })
    .map_err(|panic| bad(path.display(), format!("the Parquet reader failed: {panic}")))?;
    let mut reader = reader.map_err(|e| Error::parse(path.display(), e))?;
    let mut first_row = 0;
    loop {
        let next = crate::guard::catch(|| reader.next())
            .map_err(|panic| bad(path.display(), format!("the Parquet reader failed: {panic}")))?;
        let Some(batch) = next else { return Ok(()) };
        let batch = batch.map_err(|e| Error::parse(path.display(), e))?;
        let rows = batch_rows(&batch, column, dim, first_row).map_err(|e| bad(path.display(), e))?;
        first_row += batch.num_rows();
        each(rows)?;
    }
}

/// One record batch as ids and a matrix; the error names the column and row.
fn batch_rows(batch: &RecordBatch, column: &str, dim: usize, first_row: usize) -> std::result::Result<Rows, String> {
    let col = |name: &str| batch.column_by_name(name).ok_or_else(|| format!("no column {name}"));
    let strings = |name: &str, nullable: bool| -> std::result::Result<Vec<Option<String>>, String> {
        let c = col(name)?;
        let c = c.as_string_opt::<i32>().ok_or_else(|| format!("column {name} is not a string"))?;
        if !nullable {
            if let Some(i) = (0..c.len()).find(|&i| c.is_null(i)) {
                return Err(format!("row {} has no {name}", first_row + i));
            }
        }
        Ok(c.iter().map(|s| s.map(str::to_string)).collect())
    };
    let (paths, labels, splits) = (strings("path", false)?, strings("label", true)?, strings("split", true)?);
    let lists = col(column)?;
    let lists = lists.as_list_opt::<i32>().ok_or_else(|| format!("column {column} is not a list"))?;
    let values = lists
        .values()
        .as_primitive_opt::<Float32Type>()
        .ok_or_else(|| format!("column {column} does not hold float32"))?;
    let offsets = lists.value_offsets();
    let mut flat = Vec::with_capacity(lists.len() * dim);
    for i in 0..lists.len() {
        if lists.is_null(i) {
            return Err(format!("row {} of {column} is null", first_row + i));
        }
        let (a, b) = (offsets[i] as usize, offsets[i + 1] as usize);
        if b - a != dim {
            return Err(format!("row {} of {column} has {} values, expected {dim}", first_row + i, b - a));
        }
        if (a..b).any(|j| values.is_null(j)) {
            return Err(format!("row {} of {column} has a null value", first_row + i));
        }
        flat.extend_from_slice(&values.values()[a..b]);
    }
    let ids = paths
        .into_iter()
        .zip(labels)
        .zip(splits)
        .map(|((p, label), split)| RowId { path: p.unwrap_or_default(), label, split })
        .collect();
    Ok(Rows { ids, values: flat })
}
