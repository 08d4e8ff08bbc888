//! The features Parquet schema, in one place, and the writers of a part:
//! `part-NNNNN.parquet` (features) and `part-NNNNN.errors.csv` (rejections).
//!
//! Both are written to a hidden temporary name and renamed when complete,
//! so a reader never sees half a part, and a retried part overwrites its
//! own file instead of adding rows.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{Float32Builder, ListBuilder};
use arrow_array::{ArrayRef, Int32Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};
use crate::image::Rejection;
use crate::input::Item;

/// Rows per Parquet row group: ~20 MB of features buffered at most.
pub const ROW_GROUP_ROWS: usize = 4096;

/// Key-value metadata keys written in every features part.
pub mod meta {
    pub const MODEL: &str = "fruits.model";
    pub const WEIGHTS: &str = "fruits.weights";
    pub const PREPROCESSING: &str = "fruits.preprocessing";
    pub const VERSION: &str = "fruits.version";
    pub const FEATURE_DIM: &str = "fruits.feature_dim";
    /// What the network's activations were stored as: f32 or bf16.
    pub const DTYPE: &str = "fruits.dtype";
}

/// Columns: `path`, `label`, `split`, `features` (list<float32>), `width`, `height`.
/// `array<float>` in Spark; `int` widths, since Spark has no unsigned types.
pub fn schema() -> SchemaRef {
    let features = DataType::List(feature_item());
    let [path, label, split] = id_fields();
    Arc::new(Schema::new(vec![
        path,
        label,
        split,
        Field::new("features", features, false),
        Field::new("width", DataType::Int32, false),
        Field::new("height", DataType::Int32, false),
    ]))
}

/// The list's item field, named `element` as the Parquet spec's LIST type says.
pub fn feature_item() -> Arc<Field> {
    Arc::new(Field::new("element", DataType::Float32, false))
}

pub fn part_stem(part_id: u32) -> String {
    format!("part-{part_id:05}")
}

/// What a features part says about how it was made.
#[derive(Debug, Clone)]
pub struct RunMeta {
    pub model: String,
    pub weights: String,
    pub preprocessing: String,
    pub feature_dim: usize,
    pub dtype: String,
}

impl RunMeta {
    /// The Parquet key-value metadata of a features part (and its statistics).
    pub fn key_values(&self) -> Vec<(String, String)> {
        vec![
            (meta::MODEL.into(), self.model.clone()),
            (meta::WEIGHTS.into(), self.weights.clone()),
            (meta::PREPROCESSING.into(), self.preprocessing.clone()),
            (meta::FEATURE_DIM.into(), self.feature_dim.to_string()),
            (meta::DTYPE.into(), self.dtype.clone()),
        ]
    }
}

pub(crate) fn output_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Output { path: path.to_path_buf(), reason: e.to_string() }
}

/// A file written under a temporary name and renamed into place by `commit`.
pub(crate) struct Staged {
    pub(crate) tmp: PathBuf,
    dest: PathBuf,
}

impl Staged {
    pub(crate) fn new(dir: &Path, name: &str) -> Self {
        Self { tmp: dir.join(format!(".{name}.tmp")), dest: dir.join(name) }
    }
    pub(crate) fn commit(self) -> Result<PathBuf> {
        std::fs::rename(&self.tmp, &self.dest).map_err(|e| output_err(&self.dest, e))?;
        Ok(self.dest)
    }
}

/// One image's row, without its features.
pub struct RowInfo<'a> {
    pub item: &'a Item,
    pub width: u32,
    pub height: u32,
}

/// A Parquet file (zstd, row groups of [`ROW_GROUP_ROWS`]) written under a
/// temporary name and renamed into place by [`ParquetFile::finish`].
pub struct ParquetFile {
    writer: ArrowWriter<File>,
    staged: Staged,
    schema: SchemaRef,
    rows: usize,
}

impl ParquetFile {
    pub fn create(dir: &Path, name: &str, schema: SchemaRef, kv: Vec<(String, String)>) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| output_err(dir, e))?;
        let staged = Staged::new(dir, name);
        let file = File::create(&staged.tmp).map_err(|e| output_err(&staged.tmp, e))?;
        let mut kv: Vec<KeyValue> = kv.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect();
        kv.push(KeyValue::new(meta::VERSION.into(), env!("CARGO_PKG_VERSION").to_string()));
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("valid level")))
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_key_value_metadata(Some(kv))
            .build();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(|e| output_err(&staged.tmp, e))?;
        Ok(Self { writer, staged, schema, rows: 0 })
    }

    pub fn write(&mut self, columns: Vec<ArrayRef>) -> Result<()> {
        let batch = RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| output_err(&self.staged.tmp, e))?;
        self.writer.write(&batch).map_err(|e| output_err(&self.staged.tmp, e))?;
        self.rows += batch.num_rows();
        Ok(())
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Closes the file and makes it visible under its final name.
    pub fn finish(self) -> Result<PathBuf> {
        self.writer.close().map_err(|e| output_err(&self.staged.tmp, e))?;
        self.staged.commit()
    }
}

/// A `list<float32>` column, one list of `dim` values per row.
pub fn float_lists(values: &[f32], dim: usize) -> ArrayRef {
    let rows = values.len() / dim.max(1);
    let mut b =
        ListBuilder::with_capacity(Float32Builder::with_capacity(values.len()), rows).with_field(feature_item());
    for v in values.chunks(dim) {
        b.values().append_slice(v);
        b.append(true);
    }
    Arc::new(b.finish())
}

/// The `path`, `label`, `split` columns every part starts with.
pub fn id_columns<'a>(rows: impl Iterator<Item = &'a Item> + Clone) -> [ArrayRef; 3] {
    let path: StringArray = rows.clone().map(|i| Some(i.path.to_string_lossy())).collect();
    let label: StringArray = rows.clone().map(|i| i.label.as_deref()).collect();
    let split: StringArray = rows.map(|i| i.split.as_deref()).collect();
    [Arc::new(path), Arc::new(label), Arc::new(split)]
}

pub fn id_fields() -> [Field; 3] {
    [
        Field::new("path", DataType::Utf8, false),
        Field::new("label", DataType::Utf8, true),
        Field::new("split", DataType::Utf8, true),
    ]
}

pub struct FeatureWriter {
    file: ParquetFile,
    dim: usize,
}

impl FeatureWriter {
    pub fn create(dir: &Path, part_id: u32, run: &RunMeta) -> Result<Self> {
        let file = ParquetFile::create(dir, &format!("{}.parquet", part_stem(part_id)), schema(), run.key_values())?;
        Ok(Self { file, dim: run.feature_dim })
    }

    /// Appends rows; `features` holds `rows.len() × dim` values, row-major.
    pub fn write(&mut self, rows: &[RowInfo], features: &[f32]) -> Result<()> {
        assert_eq!(features.len(), rows.len() * self.dim, "one feature vector per row");
        if rows.is_empty() {
            return Ok(());
        }
        let [path, label, split] = id_columns(rows.iter().map(|r| r.item));
        let width: Int32Array = rows.iter().map(|r| Some(r.width as i32)).collect();
        let height: Int32Array = rows.iter().map(|r| Some(r.height as i32)).collect();
        self.file.write(vec![path, label, split, float_lists(features, self.dim), Arc::new(width), Arc::new(height)])
    }

    pub fn rows(&self) -> usize {
        self.file.rows()
    }

    pub fn finish(self) -> Result<PathBuf> {
        self.file.finish()
    }
}

/// `part-NNNNN.errors.csv`: `path,kind,reason`, one row per rejected image.
pub struct ErrorWriter {
    writer: csv::Writer<File>,
    staged: Staged,
    rows: usize,
}

impl ErrorWriter {
    pub fn create(dir: &Path, part_id: u32) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| output_err(dir, e))?;
        let staged = Staged::new(dir, &format!("{}.errors.csv", part_stem(part_id)));
        let mut writer = csv::Writer::from_path(&staged.tmp).map_err(|e| output_err(&staged.tmp, e))?;
        writer.write_record(["path", "kind", "reason"]).map_err(|e| output_err(&staged.tmp, e))?;
        Ok(Self { writer, staged, rows: 0 })
    }

    pub fn write(&mut self, item: &Item, why: &Rejection) -> Result<()> {
        let path = item.path.to_string_lossy();
        self.writer
            .write_record([path.as_ref(), why.kind.as_str(), why.detail.as_str()])
            .map_err(|e| output_err(&self.staged.tmp, e))?;
        self.rows += 1;
        Ok(())
    }

    pub fn finish(mut self) -> Result<PathBuf> {
        self.writer.flush().map_err(|e| output_err(&self.staged.tmp, e))?;
        drop(self.writer);
        self.staged.commit()
    }
}
