//! The app's classifier: the labelled feature vectors of one or more runs
//! as a nearest-neighbour index. [`build`] makes one from features parts
//! (optionally PCA-reduced), [`search`] finds the nearest vectors exactly,
//! [`vote`] turns neighbours into a fruit and a score, [`eval`] measures it
//! on a held-out split, [`files`] keeps it on disk or in S3.
//!
//! Similarity is the cosine of centred vectors: each vector has the mean of
//! the indexed features taken away (the PCA's mean when reduced) and is
//! scaled to unit length, so one dot product is the cosine. Centring
//! matters: pooled ReLU features all point into the positive orthant, and
//! without it every pair of photos looks alike (cosine ≈ 0.9). Measured on a
//! trained network (issue 24, benches/app_accuracy.py), raw features
//! ([`build::Centre::None`]) name as many held-out views at small k and far
//! fewer once k outgrows a label's rows, so centring is the default.

pub mod build;
pub mod eval;
pub mod files;
pub mod search;
pub mod vote;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::part::schema::meta;

/// The format `index.json` says it is.
pub const FORMAT: &str = "fruits-index/1";

/// How the index was made: enough to refuse a query made differently.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub format: String,
    /// Always `cosine` (of centred vectors; see the module doc).
    pub metric: String,
    /// The features' run keys ([`meta::RUN`] less the run id): model,
    /// weights, preprocessing, feature_dim, dtype.
    pub run: BTreeMap<String, String>,
    /// The run ids of the features folders it holds.
    pub run_ids: Vec<String>,
    pub sources: Vec<String>,
    /// Only rows of this split (`Training`), if one was asked for.
    pub split: Option<String>,
    /// Width of the stored vectors.
    pub dim: usize,
    pub rows: usize,
    /// `pca` (with the model's location and how many components), `centre`,
    /// or `none` (raw features).
    pub projection: String,
    pub pca: Option<String>,
    /// Rows left out: no label, or another split.
    pub skipped: BTreeMap<String, u64>,
    /// The labels (sorted at a build; those an `--append` adds come after);
    /// `classes[i]` is class i.
    pub classes: Vec<String>,
    /// Rows per class, in `classes` order.
    pub class_rows: Vec<u64>,
    /// The parts its rows came from, in entry order: what `index build
    /// --append` compares with the features folders (empty in an index
    /// built before it was recorded).
    #[serde(default)]
    pub parts: Vec<PartRows>,
}

/// A part's rows in an index: its rows file (which names its attempt) and
/// the range of entries they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRows {
    pub rows_file: String,
    pub first: usize,
    pub count: usize,
    /// Its rows left out, by reason: `--append` drops them with the part,
    /// so the index's `skipped` stays the sum over the parts it holds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub skipped: BTreeMap<String, u64>,
}

impl Meta {
    pub fn feature_dim(&self) -> usize {
        self.run.get(meta::FEATURE_DIM).and_then(|d| d.parse().ok()).unwrap_or(0)
    }
    pub fn get(&self, key: &str) -> &str {
        self.run.get(key).map(String::as_str).unwrap_or("?")
    }
}

/// What takes a feature vector into the index's space: `(x − mean) / scale`,
/// then the components (if reduced), then unit length. f32, and the same
/// code for the indexed rows and the queries.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    pub mean: Vec<f32>,
    pub scale: Option<Vec<f32>>,
    /// k × d, row-major; empty: not reduced.
    pub components: Vec<f32>,
}

impl Projection {
    pub fn input_dim(&self) -> usize {
        self.mean.len()
    }
    pub fn output_dim(&self) -> usize {
        if self.components.is_empty() {
            self.mean.len()
        } else {
            self.components.len() / self.mean.len()
        }
    }

    /// Rows of width [`Self::input_dim`] → unit rows of width [`Self::output_dim`].
    /// A row that is all mean (length 0 after centring) stays 0: it is
    /// similar to nothing.
    pub fn apply(&self, rows: &[f32]) -> Vec<f32> {
        let (d, k) = (self.input_dim(), self.output_dim());
        let mut out = Vec::with_capacity(rows.len() / d * k);
        let mut centred = vec![0f32; d];
        for row in rows.chunks_exact(d) {
            for j in 0..d {
                let c = row[j] - self.mean[j];
                centred[j] = match &self.scale {
                    Some(s) => c / s[j],
                    None => c,
                };
            }
            let start = out.len();
            if self.components.is_empty() {
                out.extend_from_slice(&centred);
            } else {
                out.extend(self.components.chunks_exact(d).map(|c| search::dot(c, &centred)));
            }
            normalise(&mut out[start..]);
        }
        out
    }
}

fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>().sqrt();
    if norm > 0.0 {
        let inv = (1.0 / norm) as f32;
        v.iter_mut().for_each(|x| *x *= inv);
    }
}

/// One indexed image.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub path: String,
    pub class: u32,
}

/// A loaded index.
#[derive(Debug, Clone)]
pub struct Index {
    pub meta: Meta,
    pub projection: Projection,
    /// rows × dim, unit rows, stored for the scan.
    pub vectors: search::Vectors,
    pub entries: Vec<Entry>,
}

impl Index {
    /// Names this index among its rebuilds (what `serve`'s `/healthz`
    /// reports): the first 16 hex digits of the sha256 of its description
    /// and of its vectors' bytes.
    pub fn version(&self) -> String {
        let meta = serde_json::to_vec(&self.meta).expect("the meta serialises");
        let mut h = <sha2::Sha256 as sha2::Digest>::new();
        sha2::Digest::update(&mut h, &meta);
        sha2::Digest::update(&mut h, self.vectors.as_bytes());
        let digest = sha2::Digest::finalize(h);
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    pub fn dim(&self) -> usize {
        self.meta.dim
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    pub fn label(&self, class: u32) -> &str {
        &self.meta.classes[class as usize]
    }

    /// Checks that its parts agree with each other (a damaged or hand-made
    /// index is refused, naming what is wrong).
    pub fn validate(&self) -> Result<()> {
        let m = &self.meta;
        let bad = |what: String| Err(Error::corrupt("the index", what));
        if m.format != FORMAT {
            return bad(format!("format {:?}, expected {FORMAT:?}", m.format));
        }
        if m.dim == 0
            || m.dim != self.projection.output_dim()
            || (self.vectors.rows, self.vectors.dim) != (m.rows, m.dim)
        {
            return bad(format!(
                "{} vectors of width {} ({} projected) do not fit {} rows × {} ({})",
                self.vectors.rows,
                self.vectors.dim,
                self.projection.output_dim(),
                m.rows,
                m.dim,
                m.projection
            ));
        }
        if self.projection.input_dim() != m.feature_dim() {
            return bad(format!(
                "its mean has {} values, the features {}",
                self.projection.input_dim(),
                m.feature_dim()
            ));
        }
        if self.entries.len() != m.rows || m.class_rows.len() != m.classes.len() {
            return bad(format!("{} entries for {} rows", self.entries.len(), m.rows));
        }
        if let Some(e) = self.entries.iter().find(|e| e.class as usize >= m.classes.len()) {
            return bad(format!("{} has class {} of {}", e.path, e.class, m.classes.len()));
        }
        if !self.vectors.all_finite() {
            return bad("a vector holds NaN or infinity".into());
        }
        Ok(())
    }
}
