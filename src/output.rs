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
}

/// Columns: `path`, `label`, `split`, `features` (list<float32>), `width`, `height`.
/// `array<float>` in Spark; `int` widths, since Spark has no unsigned types.
pub fn schema() -> SchemaRef {
    let features = DataType::List(feature_item());
    Arc::new(Schema::new(vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("label", DataType::Utf8, true),
        Field::new("split", DataType::Utf8, true),
        Field::new("features", features, false),
        Field::new("width", DataType::Int32, false),
        Field::new("height", DataType::Int32, false),
    ]))
}

/// The list's item field, named `element` as the Parquet spec's LIST type says.
fn feature_item() -> Arc<Field> {
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
}

fn output_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Output { path: path.to_path_buf(), reason: e.to_string() }
}

/// A file written under a temporary name and renamed into place by `commit`.
struct Staged {
    tmp: PathBuf,
    dest: PathBuf,
}

impl Staged {
    fn new(dir: &Path, name: &str) -> Self {
        Self { tmp: dir.join(format!(".{name}.tmp")), dest: dir.join(name) }
    }
    fn commit(self) -> Result<PathBuf> {
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

pub struct FeatureWriter {
    writer: ArrowWriter<File>,
    staged: Staged,
    dim: usize,
    rows: usize,
}

impl FeatureWriter {
    pub fn create(dir: &Path, part_id: u32, run: &RunMeta) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| output_err(dir, e))?;
        let staged = Staged::new(dir, &format!("{}.parquet", part_stem(part_id)));
        let file = File::create(&staged.tmp).map_err(|e| output_err(&staged.tmp, e))?;
        let kv = vec![
            KeyValue::new(meta::MODEL.into(), run.model.clone()),
            KeyValue::new(meta::WEIGHTS.into(), run.weights.clone()),
            KeyValue::new(meta::PREPROCESSING.into(), run.preprocessing.clone()),
            KeyValue::new(meta::VERSION.into(), env!("CARGO_PKG_VERSION").to_string()),
            KeyValue::new(meta::FEATURE_DIM.into(), run.feature_dim.to_string()),
        ];
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("valid level")))
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_key_value_metadata(Some(kv))
            .build();
        let writer = ArrowWriter::try_new(file, schema(), Some(props)).map_err(|e| output_err(&staged.tmp, e))?;
        Ok(Self { writer, staged, dim: run.feature_dim, rows: 0 })
    }

    /// Appends rows; `features` holds `rows.len() × dim` values, row-major.
    pub fn write(&mut self, rows: &[RowInfo], features: &[f32]) -> Result<()> {
        assert_eq!(features.len(), rows.len() * self.dim, "one feature vector per row");
        if rows.is_empty() {
            return Ok(());
        }
        let path: StringArray = rows.iter().map(|r| Some(r.item.path.to_string_lossy())).collect();
        let label: StringArray = rows.iter().map(|r| r.item.label.as_deref()).collect();
        let split: StringArray = rows.iter().map(|r| r.item.split.as_deref()).collect();
        let mut feats = ListBuilder::with_capacity(Float32Builder::with_capacity(features.len()), rows.len())
            .with_field(feature_item());
        for v in features.chunks(self.dim) {
            feats.values().append_slice(v);
            feats.append(true);
        }
        let width: Int32Array = rows.iter().map(|r| Some(r.width as i32)).collect();
        let height: Int32Array = rows.iter().map(|r| Some(r.height as i32)).collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(path),
            Arc::new(label),
            Arc::new(split),
            Arc::new(feats.finish()),
            Arc::new(width),
            Arc::new(height),
        ];
        let batch = RecordBatch::try_new(schema(), columns).map_err(|e| output_err(&self.staged.tmp, e))?;
        self.writer.write(&batch).map_err(|e| output_err(&self.staged.tmp, e))?;
        self.rows += rows.len();
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
