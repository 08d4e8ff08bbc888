//! A shard: photos' original bytes in one Parquet file, a row per photo,
//! so that a million photos are a few thousand S3 objects, not a million
//! (each GET and LIST request is paid for, and each object's latency
//! bounds a node). The schema is in one place, here.
//!
//! The columns are Spark's `binaryFile` source's (`path`,
//! `modificationTime`, `length`, `content`), plus what a reader needs
//! (`label`, `split`, `sha256`): a shard Spark wrote from
//! `spark.read.format("binaryFile")`, with or without label columns, is
//! read the same way (only `path` and `content` are required; labels then
//! come from the path, the sha256 from the bytes).
//!
//! Written in row groups of at most [`ROW_GROUP_BYTES`] of photos, the unit
//! a reader fetches (one ranged GET), so reading a shard takes memory flat
//! in its size; photos uncompressed (they are compressed already), without
//! column statistics (the min/max of `content` would copy photos into the
//! footer); `content` last, so a row group's other columns are one range.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{
    Array, ArrayRef, BinaryArray, Int64Array, LargeBinaryArray, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::Compression;
use parquet::file::metadata::{KeyValue, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::reader::{ChunkReader, Length};

use crate::error::{Error, Result};
use crate::storage::files::{create_file, output_err};
use crate::storage::{Location, Storage};

/// The columns, by name.
pub mod col {
    pub const PATH: &str = "path";
    pub const MODIFIED: &str = "modificationTime";
    pub const LENGTH: &str = "length";
    pub const LABEL: &str = "label";
    pub const SPLIT: &str = "split";
    pub const SHA256: &str = "sha256";
    pub const CONTENT: &str = "content";
}

/// Photos' bytes per row group at most (one photo larger than this is a
/// row group of its own).
pub const ROW_GROUP_BYTES: usize = 16 << 20;

/// A shard's size at which `fruits pack` starts the next one.
pub const DEFAULT_SHARD_BYTES: u64 = 256 << 20;

/// Photos per shard at most.
pub const DEFAULT_SHARD_ROWS: usize = 100_000;

/// Key-value metadata of a shard: what wrote it.
pub const FORMAT_KEY: &str = "fruits.shard.format";
pub const FORMAT: &str = "fruits-shard-1";

/// The schema `fruits pack` writes.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(col::PATH, DataType::Utf8, false),
        Field::new(col::MODIFIED, DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
        Field::new(col::LENGTH, DataType::Int64, false),
        Field::new(col::LABEL, DataType::Utf8, true),
        Field::new(col::SPLIT, DataType::Utf8, true),
        Field::new(col::SHA256, DataType::Utf8, false),
        Field::new(col::CONTENT, DataType::Binary, false),
    ]))
}

/// One photo as a shard holds it.
#[derive(Debug, Clone)]
pub struct Photo {
    pub path: String,
    pub modified: Option<SystemTime>,
    pub label: Option<String>,
    pub split: Option<String>,
    pub sha256: String,
    pub content: Vec<u8>,
}

/// Writes a shard, a row group each [`ROW_GROUP_BYTES`] of photos.
pub struct ShardWriter {
    writer: ArrowWriter<File>,
    path: PathBuf,
    pending: Vec<Photo>,
    pending_bytes: usize,
    rows: usize,
    bytes: u64,
}

impl ShardWriter {
    pub fn create(path: &Path) -> Result<Self> {
        let file = create_file(path)?;
        let kv = vec![
            KeyValue::new(FORMAT_KEY.into(), FORMAT.to_string()),
            KeyValue::new(crate::part::schema::meta::VERSION.into(), env!("CARGO_PKG_VERSION").to_string()),
        ];
        let props = WriterProperties::builder()
            .set_compression(Compression::UNCOMPRESSED)
            .set_statistics_enabled(EnabledStatistics::None)
            .set_key_value_metadata(Some(kv))
            .set_max_row_group_row_count(None)
            .build();
        let writer = ArrowWriter::try_new(file, schema(), Some(props)).map_err(|e| output_err(path, e))?;
        Ok(Self { writer, path: path.to_path_buf(), pending: Vec::new(), pending_bytes: 0, rows: 0, bytes: 0 })
    }

    /// Photos' bytes written or waiting: what the shard will weigh.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn push(&mut self, photo: Photo) -> Result<()> {
        self.pending_bytes += photo.content.len();
        self.bytes += photo.content.len() as u64;
        self.rows += 1;
        self.pending.push(photo);
        if self.pending_bytes >= ROW_GROUP_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// The photos waiting, as one row group.
    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let micros = |t: &SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).ok().map(|d| d.as_micros() as i64);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(rows.iter().map(|p| Some(p.path.as_str())).collect::<StringArray>()),
            Arc::new(
                rows.iter()
                    .map(|p| p.modified.as_ref().and_then(micros))
                    .collect::<TimestampMicrosecondArray>()
                    .with_timezone("UTC"),
            ),
            Arc::new(rows.iter().map(|p| Some(p.content.len() as i64)).collect::<Int64Array>()),
            Arc::new(rows.iter().map(|p| p.label.as_deref()).collect::<StringArray>()),
            Arc::new(rows.iter().map(|p| p.split.as_deref()).collect::<StringArray>()),
            Arc::new(rows.iter().map(|p| Some(p.sha256.as_str())).collect::<StringArray>()),
            Arc::new(rows.iter().map(|p| Some(p.content.as_slice())).collect::<BinaryArray>()),
        ];
        let batch = RecordBatch::try_new(schema(), columns).map_err(|e| output_err(&self.path, e))?;
        self.writer.write(&batch).map_err(|e| output_err(&self.path, e))?;
        self.writer.flush().map_err(|e| output_err(&self.path, e))
    }

    /// Writes the last row group and the footer, and fsyncs the file.
    pub fn finish(mut self) -> Result<(PathBuf, usize)> {
        self.flush()?;
        self.writer.finish().map_err(|e| output_err(&self.path, e))?;
        self.writer.inner().sync_all().map_err(|e| output_err(&self.path, e))?;
        Ok((self.path, self.rows))
    }
}

/// A photo's place and name in a shard, without its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    /// When the photo was last written, where the shard says.
    pub modified: Option<SystemTime>,
    pub label: Option<String>,
    pub split: Option<String>,
    /// When the shard holds one.
    pub sha256: Option<String>,
    pub row_group: usize,
    /// The row within its row group.
    pub row: usize,
}

/// A shard opened for reading: its footer, and where its columns are.
#[derive(Debug, Clone)]
pub struct Shard {
    pub location: Location,
    metadata: Arc<ParquetMetaData>,
    arrow: ArrowReaderMetadata,
}

impl Shard {
    /// Reads the footer (two small reads: two ranged GETs in S3) and checks
    /// the columns a shard needs.
    pub fn open(storage: &Storage, loc: &Location) -> Result<Self> {
        let tail = storage.get_tail(loc, 8)?;
        if tail.len() != 8 || &tail[4..] != b"PAR1" {
            return Err(Error::corrupt(loc, "not a Parquet file"));
        }
        let len = u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")) as u64;
        let footer = storage.get_tail(loc, len + 8)?;
        if footer.len() as u64 != len + 8 {
            return Err(Error::corrupt(loc, "truncated Parquet footer"));
        }
        let decoded = crate::guard::catch(|| ParquetMetaDataReader::decode_metadata(&footer[..len as usize]))
            .map_err(|panic| Error::corrupt(loc, format!("the Parquet reader failed on its footer: {panic}")))?;
        let metadata = Arc::new(decoded.map_err(|e| Error::parse(loc, e))?);
        let arrow = ArrowReaderMetadata::try_new(metadata.clone(), ArrowReaderOptions::new())
            .map_err(|e| Error::parse(loc, e))?;
        let shard = Self { location: loc.clone(), metadata, arrow };
        shard.check_columns()?;
        Ok(shard)
    }

    fn check_columns(&self) -> Result<()> {
        let schema = self.arrow.schema();
        let bad = |what: String| Error::corrupt(&self.location, format!("not a shard: {what}"));
        for (name, ok) in [
            (col::PATH, &[DataType::Utf8, DataType::LargeUtf8][..]),
            (col::CONTENT, &[DataType::Binary, DataType::LargeBinary][..]),
        ] {
            match schema.field_with_name(name) {
                Ok(f) if ok.contains(f.data_type()) => {}
                Ok(f) => return Err(bad(format!("column {name} is {}", f.data_type()))),
                Err(_) => return Err(bad(format!("no column {name}"))),
            }
        }
        Ok(())
    }

    pub fn rows(&self) -> u64 {
        self.metadata.file_metadata().num_rows().max(0) as u64
    }

    pub fn row_groups(&self) -> usize {
        self.metadata.num_row_groups()
    }

    /// Every photo's name, in order: the columns other than `content`, one
    /// row group at a time.
    pub fn entries(&self, storage: &Storage) -> Result<Vec<Entry>> {
        let names = [col::PATH, col::MODIFIED, col::LABEL, col::SPLIT, col::SHA256];
        let mut out = Vec::with_capacity(self.rows() as usize);
        for rg in 0..self.row_groups() {
            let batch = self.read(storage, rg, &names)?;
            let text = |name: &str| -> Option<Vec<Option<String>>> {
                let c = batch.column_by_name(name)?;
                match c.data_type() {
                    DataType::Utf8 => Some(c.as_string::<i32>().iter().map(|v| v.map(str::to_string)).collect()),
                    DataType::LargeUtf8 => Some(c.as_string::<i64>().iter().map(|v| v.map(str::to_string)).collect()),
                    _ => None,
                }
            };
            let paths = text(col::PATH).ok_or_else(|| Error::corrupt(&self.location, "no path column"))?;
            let [labels, splits, shas] = [col::LABEL, col::SPLIT, col::SHA256].map(text);
            let modified = batch.column_by_name(col::MODIFIED).and_then(|c| times(c.as_ref()));
            for (row, path) in paths.into_iter().enumerate() {
                let at = |v: &Option<Vec<Option<String>>>| v.as_ref().and_then(|v| v[row].clone());
                let path =
                    path.ok_or_else(|| Error::corrupt(&self.location, format!("row group {rg}, row {row}: no path")))?;
                let modified = modified.as_ref().and_then(|m| m[row]);
                out.push(Entry {
                    path,
                    modified,
                    label: at(&labels),
                    split: at(&splits),
                    sha256: at(&shas),
                    row_group: rg,
                    row,
                });
            }
        }
        Ok(out)
    }

    /// The photos of row group `rg`, in order (`None` for a null content).
    pub fn contents(&self, storage: &Storage, rg: usize) -> Result<Vec<Option<Vec<u8>>>> {
        let batch = self.read(storage, rg, &[col::CONTENT])?;
        let c = batch.column_by_name(col::CONTENT).ok_or_else(|| Error::corrupt(&self.location, "no content"))?;
        let values: Vec<Option<Vec<u8>>> = match c.data_type() {
            DataType::LargeBinary => {
                let a = c.as_any().downcast_ref::<LargeBinaryArray>().expect("large binary");
                a.iter().map(|v| v.map(<[u8]>::to_vec)).collect()
            }
            _ => c.as_binary::<i32>().iter().map(|v| v.map(<[u8]>::to_vec)).collect(),
        };
        Ok(values)
    }

    /// The photos' lengths as the shard records them (`length`), if it does.
    pub fn lengths(&self, storage: &Storage, rg: usize) -> Result<Option<Vec<i64>>> {
        let batch = self.read(storage, rg, &[col::LENGTH])?;
        Ok(batch
            .column_by_name(col::LENGTH)
            .and_then(|c| c.as_primitive_opt::<Int64Type>().map(|c| c.iter().map(|v| v.unwrap_or(-1)).collect())))
    }

    /// The named columns (those the shard has) of row group `rg`, fetched
    /// with as few ranged reads as their byte ranges allow.
    fn read(&self, storage: &Storage, rg: usize, names: &[&str]) -> Result<RecordBatch> {
        let schema = self.metadata.file_metadata().schema_descr();
        let roots: Vec<usize> = names
            .iter()
            .filter_map(|n| {
                (0..schema.root_schema().get_fields().len())
                    .find(|&i| schema.root_schema().get_fields()[i].name() == *n)
            })
            .collect();
        let group = self.metadata.row_group(rg);
        let mut ranges: Vec<(u64, u64)> = (0..group.num_columns())
            .filter(|&c| roots.contains(&schema.get_column_root_idx(c)))
            .map(|c| group.column(c).byte_range())
            .collect();
        ranges.sort();
        let mut pieces: Vec<(u64, Bytes)> = Vec::new();
        for (start, len) in merge(ranges) {
            pieces.push((start, Bytes::from(storage.get_range(&self.location, start, len)?)));
        }
        let sparse = Sparse { len: self.file_len(), pieces };
        let read = crate::guard::catch(|| -> parquet::errors::Result<Vec<RecordBatch>> {
            ParquetRecordBatchReaderBuilder::new_with_metadata(sparse, self.arrow.clone())
                .with_row_groups(vec![rg])
                .with_projection(ProjectionMask::roots(schema, roots.clone()))
                .with_batch_size(usize::MAX >> 8)
                .build()?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
        })
        .map_err(|panic| Error::corrupt(&self.location, format!("the Parquet reader failed: {panic}")))?;
        let batches = read.map_err(|e| Error::parse(&self.location, e))?;
        let projected = Arc::new(self.arrow.schema().project(&roots).map_err(|e| Error::parse(&self.location, e))?);
        arrow_select::concat::concat_batches(&projected, &batches).map_err(|e| Error::parse(&self.location, e))
    }

    /// The file's length, as its footer implies it (the last column chunk
    /// ends before the footer; readers only need an upper bound).
    fn file_len(&self) -> u64 {
        let end = (0..self.row_groups())
            .flat_map(|rg| {
                let g = self.metadata.row_group(rg);
                (0..g.num_columns()).map(move |c| {
                    let (s, l) = g.column(c).byte_range();
                    s + l
                })
            })
            .max()
            .unwrap_or(0);
        end + 8
    }
}

/// A timestamp column as times (Spark writes microseconds, or nanoseconds
/// read back from INT96).
fn times(c: &dyn Array) -> Option<Vec<Option<SystemTime>>> {
    use arrow_array::types::{TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType};
    let at = |v: Option<i64>, nanos: i64| {
        v.and_then(|v| u64::try_from(v).ok())
            .map(|v| SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(v * nanos as u64))
    };
    match c.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            Some(c.as_primitive::<TimestampMicrosecondType>().iter().map(|v| at(v, 1_000)).collect())
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            Some(c.as_primitive::<TimestampMillisecondType>().iter().map(|v| at(v, 1_000_000)).collect())
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            Some(c.as_primitive::<TimestampNanosecondType>().iter().map(|v| at(v, 1)).collect())
        }
        _ => None,
    }
}

/// Adjacent (or overlapping) byte ranges as one.
fn merge(ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (start, len) in ranges {
        match out.last_mut() {
            Some((s, l)) if start <= *s + *l => *l = (*l).max(start + len - *s),
            _ => out.push((start, len)),
        }
    }
    out
}

/// Some byte ranges of a file, as the Parquet reader reads it: a range it
/// asks for must lie within one piece (the reader only reads the column
/// chunks it was asked to).
struct Sparse {
    len: u64,
    pieces: Vec<(u64, Bytes)>,
}

impl Length for Sparse {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for Sparse {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        use bytes::Buf;
        let piece = self.piece(start, 0)?;
        Ok(piece.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        Ok(self.piece(start, length)?.slice(..length))
    }
}

impl Sparse {
    /// The bytes from `start` to the end of its piece (at least `length`).
    fn piece(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.pieces
            .iter()
            .find(|(s, b)| start >= *s && start + length as u64 <= *s + b.len() as u64)
            .map(|(s, b)| b.slice((start - s) as usize..))
            .ok_or_else(|| parquet::errors::ParquetError::General(format!("bytes {start}+{length} were not fetched")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_when_they_touch() {
        assert_eq!(merge(vec![(0, 10), (10, 5), (20, 5), (22, 10)]), vec![(0, 15), (20, 12)]);
        assert_eq!(merge(vec![]), vec![]);
    }
}
