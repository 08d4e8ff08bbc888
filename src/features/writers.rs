//! The writers of a part's files: features (Parquet, in the schema of
//! [`crate::part::schema`]), rejections (CSV). Each writer writes one path
//! and, on `finish`, flushes and fsyncs it; where the file goes and when it
//! becomes visible is [`crate::part`]'s business.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::Int32Array;

use crate::error::Result;
use crate::image::Rejection;
use crate::part::schema::{float_lists, id_columns, schema, ParquetFile, RowInfo, RunMeta};
use crate::storage::files::{create_file, output_err};

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
        let file = self.writer.into_inner().map_err(|e| output_err(&self.path, e.into_error()))?;
        file.sync_all().map_err(|e| output_err(&self.path, e))?;
        Ok((self.path, self.rows))
    }
}
