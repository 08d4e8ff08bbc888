//! The features Parquet schema, in one place, and the writers of a part's
//! files: features (Parquet), rejections (CSV). Each writer writes one path
//! and, on `finish`, flushes and fsyncs it; where the file goes and when it
//! becomes visible is [`crate::part`]'s business.

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
    /// The job the part belongs to (`featurize --run-id`).
    pub const RUN_ID: &str = "fruits.run_id";
    /// The keys that must agree across the parts of one folder.
    pub const RUN: [&str; 6] = [MODEL, WEIGHTS, PREPROCESSING, FEATURE_DIM, DTYPE, RUN_ID];
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

/// What a features part says about how it was made.
#[derive(Debug, Clone)]
pub struct RunMeta {
    pub model: String,
    pub weights: String,
    pub preprocessing: String,
    pub feature_dim: usize,
    pub dtype: String,
    pub run_id: String,
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
            (meta::RUN_ID.into(), self.run_id.clone()),
        ]
    }
}

pub(crate) fn output_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Output { path: path.to_path_buf(), reason: e.to_string() }
}

/// Creates `path` (and its folder) for writing, with the ordinary
/// permissions the user's umask gives new files.
pub(crate) fn create_file(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| output_err(dir, e))?;
    }
    File::create(path).map_err(|e| output_err(path, e))
}

/// Writes `bytes` to `path` and fsyncs it.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = create_file(path)?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| output_err(path, e))
}

/// A file written under a hidden temporary name beside its destination and
/// renamed into place by `commit`, for files that stand alone (a PCA
/// model's tables); a part's files go through [`crate::part`] instead.
pub struct Staged {
    pub tmp: PathBuf,
    dest: PathBuf,
}

impl Staged {
    pub fn new(dir: &Path, name: &str) -> Self {
        Self { tmp: dir.join(format!(".{name}.tmp")), dest: dir.join(name) }
    }
    pub fn commit(self) -> Result<PathBuf> {
        std::fs::rename(&self.tmp, &self.dest).map_err(|e| output_err(&self.dest, e))?;
        Ok(self.dest)
    }
}

/// The columns that name a row: `path`, `label`, `split`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowId {
    pub path: String,
    pub label: Option<String>,
    pub split: Option<String>,
}

/// One image's row, without its features.
pub struct RowInfo {
    pub id: RowId,
    pub width: u32,
    pub height: u32,
}

/// A Parquet file (zstd, row groups of [`ROW_GROUP_ROWS`]) at one path.
pub struct ParquetFile {
    writer: ArrowWriter<File>,
    path: PathBuf,
    schema: SchemaRef,
    rows: usize,
}

impl ParquetFile {
    pub fn create(path: &Path, schema: SchemaRef, kv: Vec<(String, String)>) -> Result<Self> {
        let file = create_file(path)?;
        let mut kv: Vec<KeyValue> = kv.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect();
        kv.push(KeyValue::new(meta::VERSION.into(), env!("CARGO_PKG_VERSION").to_string()));
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("valid level")))
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_key_value_metadata(Some(kv))
            .build();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(|e| output_err(path, e))?;
        Ok(Self { writer, path: path.to_path_buf(), schema, rows: 0 })
    }

    pub fn write(&mut self, columns: Vec<ArrayRef>) -> Result<()> {
        let batch = RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| output_err(&self.path, e))?;
        self.writer.write(&batch).map_err(|e| output_err(&self.path, e))?;
        self.rows += batch.num_rows();
        Ok(())
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Writes the footer and fsyncs the file; returns its path and rows.
    pub fn finish(mut self) -> Result<(PathBuf, usize)> {
        self.writer.finish().map_err(|e| output_err(&self.path, e))?;
        self.writer.inner().sync_all().map_err(|e| output_err(&self.path, e))?;
        Ok((self.path, self.rows))
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
pub fn id_columns<'a>(rows: impl Iterator<Item = &'a RowId> + Clone) -> [ArrayRef; 3] {
    let path: StringArray = rows.clone().map(|i| Some(i.path.as_str())).collect();
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

/// A features part's Parquet file.
pub struct FeatureWriter {
    file: ParquetFile,
    dim: usize,
}

impl FeatureWriter {
    pub fn create(path: &Path, run: &RunMeta) -> Result<Self> {
        Ok(Self { file: ParquetFile::create(path, schema(), run.key_values())?, dim: run.feature_dim })
    }

    /// Appends rows; `features` holds `rows.len() × dim` values, row-major.
    pub fn write(&mut self, rows: &[RowInfo], features: &[f32]) -> Result<()> {
        assert_eq!(features.len(), rows.len() * self.dim, "one feature vector per row");
        if rows.is_empty() {
            return Ok(());
        }
        let [path, label, split] = id_columns(rows.iter().map(|r| &r.id));
        let width: Int32Array = rows.iter().map(|r| Some(r.width as i32)).collect();
        let height: Int32Array = rows.iter().map(|r| Some(r.height as i32)).collect();
        self.file.write(vec![path, label, split, float_lists(features, self.dim), Arc::new(width), Arc::new(height)])
    }

    pub fn rows(&self) -> usize {
        self.file.rows()
    }

    pub fn finish(self) -> Result<(PathBuf, usize)> {
        self.file.finish()
    }
}

/// A part's rejections: CSV `path,kind,reason`, one row per rejected image.
pub struct ErrorWriter {
    writer: csv::Writer<File>,
    path: PathBuf,
    rows: usize,
}

impl ErrorWriter {
    pub fn create(path: &Path) -> Result<Self> {
        let mut writer = csv::Writer::from_writer(create_file(path)?);
        writer.write_record(["path", "kind", "reason"]).map_err(|e| output_err(path, e))?;
        Ok(Self { writer, path: path.to_path_buf(), rows: 0 })
    }

    pub fn write(&mut self, path: &str, why: &Rejection) -> Result<()> {
        self.writer
            .write_record([path, why.kind.as_str(), why.detail.as_str()])
            .map_err(|e| output_err(&self.path, e))?;
        self.rows += 1;
        Ok(())
    }

    /// Flushes and fsyncs the file; returns its path and rows.
    pub fn finish(self) -> Result<(PathBuf, usize)> {
        let file = self.writer.into_inner().map_err(|e| output_err(&self.path, e.error()))?;
        file.sync_all().map_err(|e| output_err(&self.path, e))?;
        Ok((self.path, self.rows))
    }
}
