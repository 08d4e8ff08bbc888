//! A fitted PCA on disk (its pictures: [`super::pictures`]).
//!
//! `<dir>/pca.json`           summary a person reads (scikit-learn's names)
//! `<dir>/components.parquet` component, explained_variance(_ratio), vector: list<float64>
//! `<dir>/center.parquet`     feature, mean, scale (null unless standardised)
//! `<dir>/spectrum.parquet`   every eigenvalue: component, eigenvalue, ratio, cumulative_ratio
//! `<dir>/explained_variance.svg`
//!
//! Numbers are stored as f64, so a loaded model transforms bit for bit like
//! the fitted one.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{Float64Builder, ListBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{Array, ArrayRef, Float64Array, Int32Array};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};

use super::maths::Pca;
use crate::error::{Error, Result};
use crate::part::schema::ParquetFile;
use crate::storage::files::{output_err, write_file, Staged};
use crate::storage::{Location, Storage};

/// The files a model folder holds (all that `load` reads, and the picture).
pub const FILES: [&str; 5] =
    ["pca.json", "components.parquet", "center.parquet", "spectrum.parquet", "explained_variance.svg"];

/// The readable summary, `pca.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub n_components: usize,
    pub n_features: usize,
    pub n_samples: u64,
    pub explained_variance: Vec<f64>,
    pub explained_variance_ratio: Vec<f64>,
    pub cumulative_explained_variance_ratio: Vec<f64>,
    pub total_variance: f64,
    pub standardize: bool,
    /// How k was chosen: `{"k": 50}` or `{"variance": 0.95}`.
    pub selection: BTreeMap<String, f64>,
    /// The features' model and weights, and the parts fitted on.
    pub source: BTreeMap<String, String>,
    pub parts: Vec<String>,
    pub fruits_version: String,
}

impl Summary {
    pub fn new(
        pca: &Pca,
        selection: BTreeMap<String, f64>,
        source: BTreeMap<String, String>,
        parts: Vec<String>,
    ) -> Self {
        let ratio = pca.explained_variance_ratio();
        Self {
            n_components: pca.n_components(),
            n_features: pca.n_features(),
            n_samples: pca.n_samples,
            explained_variance: pca.explained_variance().to_vec(),
            cumulative_explained_variance_ratio: pca.cumulative_ratio_all()[..pca.n_components()].to_vec(),
            explained_variance_ratio: ratio,
            total_variance: pca.total_variance(),
            standardize: pca.scale.is_some(),
            selection,
            source,
            parts,
            fruits_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

fn f64_lists(rows: &[Vec<f64>]) -> ArrayRef {
    let mut b =
        ListBuilder::new(Float64Builder::new()).with_field(Arc::new(Field::new("element", DataType::Float64, false)));
    for r in rows {
        b.values().append_slice(r);
        b.append(true);
    }
    Arc::new(b.finish())
}

fn index(n: usize) -> ArrayRef {
    Arc::new(Int32Array::from_iter_values(0..n as i32))
}

fn f64_col(v: &[f64]) -> ArrayRef {
    Arc::new(Float64Array::from(v.to_vec()))
}

/// Writes the model files and the explained-variance picture into `dir`.
pub fn save(pca: &Pca, summary: &Summary, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let list = DataType::List(Arc::new(Field::new("element", DataType::Float64, false)));
    let schema = Arc::new(Schema::new(vec![
        Field::new("component", DataType::Int32, false),
        Field::new("explained_variance", DataType::Float64, false),
        Field::new("explained_variance_ratio", DataType::Float64, false),
        Field::new("vector", list, false),
    ]));
    let columns = vec![
        index(pca.n_components()),
        f64_col(pca.explained_variance()),
        f64_col(&pca.explained_variance_ratio()),
        f64_lists(&pca.components),
    ];
    written.push(write_table(dir, "components.parquet", schema, columns)?);

    let schema = Arc::new(Schema::new(vec![
        Field::new("feature", DataType::Int32, false),
        Field::new("mean", DataType::Float64, false),
        Field::new("scale", DataType::Float64, true),
    ]));
    let scale: ArrayRef = match &pca.scale {
        Some(s) => f64_col(s),
        None => Arc::new(Float64Array::new_null(pca.n_features())),
    };
    written.push(write_table(dir, "center.parquet", schema, vec![index(pca.n_features()), f64_col(&pca.mean), scale])?);

    let schema = Arc::new(Schema::new(vec![
        Field::new("component", DataType::Int32, false),
        Field::new("eigenvalue", DataType::Float64, false),
        Field::new("ratio", DataType::Float64, false),
        Field::new("cumulative_ratio", DataType::Float64, false),
    ]));
    let columns = vec![
        index(pca.eigenvalues.len()),
        f64_col(&pca.eigenvalues),
        f64_col(&pca.ratio_all()),
        f64_col(&pca.cumulative_ratio_all()),
    ];
    written.push(write_table(dir, "spectrum.parquet", schema, columns)?);

    // pca.json last: `load` starts from it, so a model folder is whole once it is there.
    let svg = Staged::new(dir, "explained_variance.svg");
    super::pictures::plot_explained_variance(pca, &svg.tmp).map_err(|e| output_err(&svg.tmp, e))?;
    let json = Staged::new(dir, "pca.json");
    write_file(&json.tmp, (serde_json::to_string_pretty(summary).expect("serialisable") + "\n").as_bytes())?;
    written.push(svg.commit()?);
    written.push(json.commit()?);
    Ok(written)
}

/// One table of the model, written under a temporary name and renamed.
fn write_table(dir: &Path, name: &str, schema: Arc<Schema>, columns: Vec<ArrayRef>) -> Result<PathBuf> {
    let staged = Staged::new(dir, name);
    let mut f = ParquetFile::create(&staged.tmp, schema, vec![])?;
    f.write(columns)?;
    f.finish()?;
    staged.commit()
}

/// A model file that does not hold what it should.
fn bad(path: &Path, detail: impl Into<String>) -> Error {
    Error::corrupt(path.display(), detail)
}

pub(crate) fn read_table(path: &Path) -> Result<Vec<arrow_array::RecordBatch>> {
    let file = File::open(path).map_err(|e| Error::Input { path: path.to_path_buf(), source: e })?;
    let read = crate::guard::catch(|| {
        ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .map_err(|e| Error::parse(path.display(), e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::parse(path.display(), e))
    });
    read.map_err(|panic| bad(path, format!("the Parquet reader failed: {panic}")))?
}

/// A float64 column without nulls.
fn column_f64(batches: &[arrow_array::RecordBatch], name: &str, path: &Path) -> Result<Vec<f64>> {
    column_f64_nullable(batches, name, path)?
        .into_iter()
        .enumerate()
        .map(|(i, v)| v.ok_or_else(|| bad(path, format!("row {i} of {name} is null"))))
        .collect()
}

fn column_f64_nullable(batches: &[arrow_array::RecordBatch], name: &str, path: &Path) -> Result<Vec<Option<f64>>> {
    let mut out = Vec::new();
    for b in batches {
        let c = b.column_by_name(name).ok_or_else(|| bad(path, format!("no column {name}")))?;
        let c =
            c.as_primitive_opt::<Float64Type>().ok_or_else(|| bad(path, format!("column {name} is not float64")))?;
        out.extend(c.iter());
    }
    Ok(out)
}

/// The `vector` column of components.parquet: one list of float64 per row.
fn vectors(batches: &[arrow_array::RecordBatch], path: &Path) -> Result<Vec<Vec<f64>>> {
    let mut out = Vec::new();
    for b in batches {
        let c = b.column_by_name("vector").ok_or_else(|| bad(path, "no column vector"))?;
        let lists = c.as_list_opt::<i32>().ok_or_else(|| bad(path, "column vector is not a list"))?;
        let values = lists
            .values()
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(|| bad(path, "column vector does not hold float64"))?;
        let offsets = lists.value_offsets();
        for i in 0..lists.len() {
            let (a, z) = (offsets[i] as usize, offsets[i + 1] as usize);
            if lists.is_null(i) || (a..z).any(|j| values.is_null(j)) {
                return Err(bad(path, format!("component {} has nulls", out.len())));
            }
            out.push(values.values()[a..z].to_vec());
        }
    }
    Ok(out)
}

/// Loads a model written by [`save`], refusing tables that do not fit
/// together (a component of the wrong width, a missing scale, nulls).
pub fn load(dir: &Path) -> Result<(Pca, Summary)> {
    let json = dir.join("pca.json");
    let text = std::fs::read_to_string(&json).map_err(|e| Error::Input { path: json.clone(), source: e })?;
    let summary: Summary = serde_json::from_str(&text).map_err(|e| Error::parse(json.display(), e))?;
    let path = dir.join("components.parquet");
    let components = vectors(&read_table(&path)?, &path)?;
    let center = dir.join("center.parquet");
    let batches = read_table(&center)?;
    let mean = column_f64(&batches, "mean", &center)?;
    let scale = if summary.standardize { Some(column_f64(&batches, "scale", &center)?) } else { None };
    let spectrum = dir.join("spectrum.parquet");
    let eigenvalues = column_f64(&read_table(&spectrum)?, "eigenvalue", &spectrum)?;
    let d = mean.len();
    if let Some((i, c)) = components.iter().enumerate().find(|(_, c)| c.len() != d) {
        return Err(bad(&path, format!("component {i} has {} values, the model has {d} features", c.len())));
    }
    if components.is_empty() || d == 0 {
        return Err(bad(&path, "the model has no component"));
    }
    if scale.as_ref().is_some_and(|s| s.len() != d || s.iter().any(|v| v.is_nan() || *v <= 0.0)) {
        return Err(bad(&center, format!("scale must be {d} positive values")));
    }
    let pca = Pca { n_samples: summary.n_samples, mean, scale, components, eigenvalues };
    if pca.n_components() != summary.n_components || pca.n_features() != summary.n_features {
        return Err(bad(dir, "tables and pca.json disagree on the model's size"));
    }
    Ok((pca, summary))
}

/// Loads the model folder (an S3 one through scratch space).
pub fn load_model(storage: &Storage, model: &Location, scratch: &Path) -> Result<(Pca, Summary)> {
    let dir = match model {
        Location::Local(p) => p.clone(),
        Location::S3 { .. } => {
            let dir = scratch.join("model");
            std::fs::create_dir_all(&dir)?;
            for f in FILES {
                let local = storage.localize(&model.join(f), scratch)?;
                std::fs::rename(&local, dir.join(f))?;
            }
            dir
        }
    };
    load(&dir)
}
