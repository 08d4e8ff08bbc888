//! A fitted PCA on disk, and its pictures.
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
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::output::{output_err, write_file, ParquetFile, Staged};
use crate::pca::Pca;

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
    plot_explained_variance(pca, &svg.tmp).map_err(|e| output_err(&svg.tmp, e))?;
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

fn bad(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Input { path: path.to_path_buf(), source: std::io::Error::other(e.to_string()) }
}

pub(crate) fn read_table(path: &Path) -> Result<Vec<arrow_array::RecordBatch>> {
    let file = File::open(path).map_err(|e| Error::Input { path: path.to_path_buf(), source: e })?;
    let read = crate::guard::catch(|| {
        ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .map_err(|e| e.to_string())?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())
    });
    read.map_err(|panic| bad(path, format!("the Parquet reader failed: {panic}")))?.map_err(|e| bad(path, e))
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
    let summary: Summary = serde_json::from_str(&text).map_err(|e| bad(&json, e))?;
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
        return Err(Error::Data(format!("{}: tables and pca.json disagree on the model's size", dir.display())));
    }
    Ok((pca, summary))
}

type PlotResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// Scree plot (ratio per component) and cumulative curve, with k marked.
pub fn plot_explained_variance(pca: &Pca, path: &Path) -> PlotResult {
    let k = pca.n_components();
    let ratio = pca.ratio_all();
    let cumulative = pca.cumulative_ratio_all();
    let shown = ratio.len().min((2 * k).max(50));
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let kept = cumulative[k - 1];
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("PCA: {k} of {} components keep {:.1}% of the variance", pca.n_features(), 100.0 * kept),
            ("sans-serif", 24),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0.5f64..shown as f64 + 0.5, 0f64..1.02f64)?;
    chart
        .configure_mesh()
        .x_desc("component")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_desc("explained variance ratio")
        .axis_desc_style(("sans-serif", 18))
        .label_style(("sans-serif", 14))
        .draw()?;
    let per: Vec<(f64, f64)> = (0..shown).map(|i| ((i + 1) as f64, ratio[i])).collect();
    let cum: Vec<(f64, f64)> = (0..shown).map(|i| ((i + 1) as f64, cumulative[i])).collect();
    chart
        .draw_series(LineSeries::new(per.clone(), BLUE.stroke_width(2)))?
        .label("per component")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    chart.draw_series(per.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))?;
    chart
        .draw_series(LineSeries::new(cum, RED.stroke_width(2)))?
        .label("cumulative")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    let kx = k as f64;
    chart
        .draw_series(LineSeries::new(vec![(kx, 0.0), (kx, 1.02)], BLACK.stroke_width(1)))?
        .label(format!("k = {k}"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(1)));
    chart.draw_series(std::iter::once(Circle::new((kx, kept), 6, BLACK.filled())))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::MiddleRight)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// First two components, one colour per label, with a legend. At most
/// `MAX_POINTS` points are drawn (an even stride through the rows).
pub fn plot_scatter(points: &[(f32, f32, Option<String>)], path: &Path) -> PlotResult {
    const MAX_POINTS: usize = 20_000;
    let stride = points.len().div_ceil(MAX_POINTS).max(1);
    let shown: Vec<&(f32, f32, Option<String>)> = points.iter().step_by(stride).collect();
    let (mut x0, mut x1, mut y0, mut y1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
    for (x, y, _) in &shown {
        (x0, x1, y0, y1) = (x0.min(*x), x1.max(*x), y0.min(*y), y1.max(*y));
    }
    let pad = |a: f32, b: f32| ((b - a) * 0.05).max(1e-3);
    let (px, py) = (pad(x0, x1), pad(y0, y1));
    let mut labels: Vec<String> = shown.iter().map(|p| p.2.clone().unwrap_or_else(|| "(none)".into())).collect();
    labels.sort();
    labels.dedup();
    let root = SVGBackend::new(path, (1100, 720)).into_drawing_area();
    root.fill(&WHITE)?;
    // The legend gets its own column, so it never hides points, and stays
    // readable with Fruits-360's 100+ labels (the first ones, then a count).
    let (plot_area, legend_area) = root.split_horizontally(860);
    let mut chart = ChartBuilder::on(&plot_area)
        .caption(format!("PCA: first two components, {} images", points.len()), ("sans-serif", 24))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d((x0 - px) as f64..(x1 + px) as f64, (y0 - py) as f64..(y1 + py) as f64)?;
    chart
        .configure_mesh()
        .x_desc("PC1")
        .y_desc("PC2")
        .axis_desc_style(("sans-serif", 18))
        .label_style(("sans-serif", 14))
        .draw()?;
    const LEGEND_ROWS: usize = 30;
    for (i, label) in labels.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let pts: Vec<(f64, f64)> = shown
            .iter()
            .filter(|p| p.2.as_deref().unwrap_or("(none)") == label)
            .map(|p| (p.0 as f64, p.1 as f64))
            .collect();
        chart.draw_series(pts.into_iter().map(move |p| Circle::new(p, 4, color.filled())))?;
        if i < LEGEND_ROWS {
            let y = 70 + 20 * i as i32;
            legend_area.draw(&Circle::new((20, y), 5, color.filled()))?;
            legend_area.draw(&Text::new(label.clone(), (32, y - 8), ("sans-serif", 15)))?;
        }
    }
    if labels.len() > LEGEND_ROWS {
        let y = 70 + 20 * LEGEND_ROWS as i32;
        legend_area.draw(&Text::new(
            format!("... and {} more labels", labels.len() - LEGEND_ROWS),
            (12, y - 8),
            ("sans-serif", 15),
        ))?;
    }
    root.present()?;
    Ok(())
}
