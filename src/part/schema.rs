//! The features Parquet schema, in one place: its columns, the key-value
//! metadata every part carries, and the Parquet file writer every table of
//! `fruits` goes through (features, reduced features, PCA tables, the index).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{Float32Builder, ListBuilder};
use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use crate::error::Result;
use crate::storage::files::{create_file, output_err};

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
