//! The engine the app calls: photo bytes → the fruit, its score, the
//! nearest indexed photos and what the fruit is. One [`Identifier`] holds
//! the network, the index and the fruit table; `fruits identify`, `fruits
//! serve` and `index eval` all answer through it, so they cannot differ.

use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::app::fruit_info::{Info, Table};
use crate::app::index::build::MUST_MATCH;
use crate::app::index::search::{self, Hit};
use crate::app::index::vote::{self, Prediction};
use crate::app::index::Index;
use crate::engine::model::Model;
use crate::error::{Error, Param, Result};
use crate::features::job::run_meta;
use crate::image::{prepare_within, Prepared, Rejection};

/// How answers are made.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Neighbours that vote.
    pub k: usize,
    /// Below this share of the vote the answer is "unknown".
    pub min_score: f64,
    /// Labels listed in an answer.
    pub top: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self { k: vote::DEFAULT_K, min_score: vote::DEFAULT_MIN_SCORE, top: 5 }
    }
}

pub struct Identifier {
    pub model: Model,
    /// Swapped whole by [`Identifier::replace_index`] while answers are
    /// being made: each batch of answers reads one index from start to end.
    index: ArcSwap<Index>,
    pub info: Table,
    pub options: Options,
}

#[derive(Debug, Clone, Serialize)]
pub struct Scored {
    pub label: String,
    pub score: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Neighbour {
    /// The indexed photo's file; `None` where it is not to be shown (the
    /// server's disk is nobody's business: `serve --show-paths`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub label: String,
    pub similarity: f32,
}

/// One photo's answer (the JSON of `identify --json` and of the API).
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    /// The best label, or `None` when unknown.
    pub fruit: Option<String>,
    pub unknown: bool,
    /// The best label's share of the vote (also when unknown).
    pub score: f64,
    pub info: Option<Info>,
    pub top: Vec<Scored>,
    pub neighbours: Vec<Neighbour>,
}

/// Refuses a model that makes features differently from the index's.
pub fn check_compatible(model: &Model, index: &Index) -> Result<()> {
    // The keys featurize writes for this model, the run id aside.
    let ours: std::collections::BTreeMap<String, String> = run_meta(model, "").key_values().into_iter().collect();
    for key in MUST_MATCH {
        let ours = &ours[key];
        let theirs = index.meta.get(key);
        if theirs != ours {
            return Err(Error::NotTheIndexModel {
                key: key.to_string(),
                index: theirs.to_string(),
                model: ours.clone(),
            });
        }
    }
    Ok(())
}

impl Identifier {
    pub fn new(model: Model, index: Index, info: Table, options: Options) -> Result<Self> {
        check_compatible(&model, &index)?;
        if options.k == 0 {
            return Err(Error::invalid(Param::Neighbours, "must be at least 1"));
        }
        Ok(Self { model, index: ArcSwap::from_pointee(index), info, options })
    }

    /// Decodes one photo for the network (never panics).
    pub fn prepare(&self, bytes: &[u8]) -> std::result::Result<Prepared, Rejection> {
        self.prepare_within(bytes, u64::MAX)
    }

    /// [`Identifier::prepare`], refusing from its header a photo of more
    /// than `max_pixels` pixels, before decoding any.
    pub fn prepare_within(&self, bytes: &[u8], max_pixels: u64) -> std::result::Result<Prepared, Rejection> {
        prepare_within(bytes, self.model.which.resolution() as u32, max_pixels)
    }

    /// The network on a batch of prepared photos: n × feature_dim.
    pub fn features(&self, photos: &[&Prepared]) -> Result<Vec<f32>> {
        let rgb: Vec<u8> = photos.iter().flat_map(|p| p.rgb.iter().copied()).collect();
        self.model.features(&rgb)
    }

    /// The index answering now.
    pub fn index(&self) -> Arc<Index> {
        self.index.load_full()
    }

    /// Answers from `index` from now on; a batch being answered finishes
    /// with the one it started with. Refused, the old one kept, when the
    /// model would not make the features `index` holds.
    pub fn replace_index(&self, index: Index) -> Result<()> {
        check_compatible(&self.model, &index)?;
        self.index.store(Arc::new(index));
        Ok(())
    }

    /// The neighbours of n feature vectors (one scan of the index for all).
    pub fn nearest(index: &Index, features: &[f32], k: usize) -> Vec<Vec<Hit>> {
        let queries = index.projection.apply(features);
        search::nearest(&index.vectors, &queries, k)
    }

    /// Answers for n feature vectors, all from the same index.
    pub fn answer(&self, features: &[f32]) -> Vec<Answer> {
        let index = self.index.load();
        Self::nearest(&index, features, self.options.k).iter().map(|hits| self.answer_one(&index, hits)).collect()
    }

    pub fn predict(&self, index: &Index, hits: &[Hit]) -> Prediction {
        vote::vote(hits, |row| index.entries[row as usize].class, self.options.min_score)
    }

    fn answer_one(&self, index: &Index, hits: &[Hit]) -> Answer {
        let p = self.predict(index, hits);
        let label = |c: u32| index.label(c).to_string();
        let best = p.best();
        let fruit = best.filter(|_| !p.unknown).map(|b| label(b.class));
        Answer {
            info: fruit.as_deref().and_then(|f| self.info.lookup(f)).cloned(),
            fruit,
            unknown: p.unknown,
            score: best.map_or(0.0, |b| b.score),
            top: p
                .ranked
                .iter()
                .take(self.options.top)
                .map(|r| Scored { label: label(r.class), score: r.score })
                .collect(),
            neighbours: hits
                .iter()
                .map(|h| {
                    let e = &index.entries[h.row as usize];
                    Neighbour { path: Some(e.path.clone()), label: label(e.class), similarity: h.similarity }
                })
                .collect(),
        }
    }
}
