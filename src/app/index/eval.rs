//! `index eval`: how well the index names held-out photos. Every labelled
//! row of a features folder (optionally one split) is a query; its answer
//! is the index's weighted vote, exactly as `identify` gives it. Reports
//! top-1 and top-5 accuracy, per-class recall and the confusion matrix,
//! as JSON and as an SVG picture.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::build::MUST_MATCH;
use super::search::nearest;
use super::vote::vote;
use super::Index;
use crate::error::{Error, Result};
use crate::part::dataset::sources;
use crate::part::rows::read_rows;
use crate::storage::{Location, Storage};

/// Queries per scan of the index.
const QUERY_BATCH: usize = 256;

#[derive(Debug, Clone)]
pub struct EvalJob {
    pub features: Location,
    pub split: Option<String>,
    pub k: usize,
    pub min_score: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassReport {
    pub label: String,
    pub rows: u64,
    /// Share of its rows answered with its label.
    pub recall: f64,
    pub top5: f64,
    /// Whether the index has this label at all.
    pub indexed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub features: String,
    pub split: Option<String>,
    pub rows: u64,
    pub k: usize,
    pub min_score: f64,
    /// Answer (unknown counts as wrong) equals the label.
    pub top1_accuracy: f64,
    /// The label is among the five best-voted labels.
    pub top5_accuracy: f64,
    pub unknown: u64,
    /// Rows left out (no label, other split).
    pub skipped: BTreeMap<String, u64>,
    pub classes: Vec<ClassReport>,
    /// Rows: true labels (`labels`); columns: `labels` then `unknown`.
    pub labels: Vec<String>,
    pub confusion: Vec<Vec<u64>>,
}

/// Query labels, their projected vectors, and the rows left out.
type Queries = (Vec<String>, Vec<f32>, BTreeMap<String, u64>);

/// The labelled query rows of `job.features`, checked against the index.
fn queries(storage: &Storage, index: &Index, job: &EvalJob, scratch: &Path) -> Result<Queries> {
    let src = sources(storage, &job.features)?;
    for k in MUST_MATCH {
        let (ours, theirs) = (src.parts[0].run.get(k).map(String::as_str).unwrap_or("?"), index.meta.get(k));
        if ours != theirs {
            return Err(Error::differ(
                "the features and the index",
                k.to_string(),
                (job.features.to_string(), ours.to_string()),
                ("the index".into(), theirs.to_string()),
            ));
        }
    }
    let d = src.dim;
    let (mut labels, mut vectors, mut skipped) = (Vec::new(), Vec::new(), BTreeMap::<String, u64>::new());
    for part in &src.parts {
        let local = storage.localize(&part.rows, scratch)?;
        read_rows(&local, "features", d, |batch| {
            let mut kept = Vec::new();
            for (id, x) in batch.ids.into_iter().zip(batch.values.chunks_exact(d)) {
                let other_split = job.split.as_ref().is_some_and(|s| id.split.as_ref() != Some(s));
                match id.label.filter(|l| !l.is_empty()) {
                    _ if other_split => *skipped.entry("other_split".into()).or_default() += 1,
                    None => *skipped.entry("no_label".into()).or_default() += 1,
                    Some(l) => {
                        labels.push(l);
                        kept.extend_from_slice(x);
                    }
                }
            }
            vectors.extend(index.projection.apply(&kept));
            Ok(())
        })?;
        if part.rows.is_s3() {
            let _ = std::fs::remove_file(&local);
        }
    }
    if labels.is_empty() {
        return Err(Error::NoRows {
            at: job.features.to_string(),
            split: job.split.clone(),
            skipped: format!("{skipped:?}"),
        });
    }
    Ok((labels, vectors, skipped))
}

pub fn eval(index: &Index, job: &EvalJob, storage: &Storage) -> Result<Report> {
    let scratch = tempfile::tempdir()?;
    let (truth, vectors, skipped) = queries(storage, index, job, scratch.path())?;
    // Labels: the index's classes, then labels only the queries have.
    let mut labels = index.meta.classes.clone();
    for t in &truth {
        if !labels.contains(t) {
            labels.push(t.clone());
        }
    }
    let at = |l: &str| labels.iter().position(|x| x == l).expect("every label is listed");
    let n = labels.len();
    let mut confusion = vec![vec![0u64; n + 1]; n];
    let (mut top1, mut top5, mut unknown) = (0u64, 0u64, 0u64);
    let mut per_class = vec![(0u64, 0u64, 0u64); n];
    let dim = index.dim();
    for (chunk, truths) in vectors.chunks(QUERY_BATCH * dim).zip(truth.chunks(QUERY_BATCH)) {
        for (hits, t) in nearest(&index.vectors, chunk, job.k).iter().zip(truths) {
            let p = vote(hits, |row| index.entries[row as usize].class, job.min_score);
            let row = at(t);
            let answered = p.best().filter(|_| !p.unknown).map(|b| index.label(b.class).to_string());
            let col = answered.as_deref().map_or(n, at);
            confusion[row][col] += 1;
            unknown += p.unknown as u64;
            let hit1 = answered.as_deref() == Some(t.as_str());
            let hit5 = p.ranked.iter().take(5).any(|r| index.label(r.class) == t);
            top1 += hit1 as u64;
            top5 += hit5 as u64;
            let c = &mut per_class[row];
            *c = (c.0 + 1, c.1 + hit1 as u64, c.2 + hit5 as u64);
        }
    }
    let rows = truth.len() as u64;
    let classes = labels
        .iter()
        .zip(&per_class)
        .filter(|(_, c)| c.0 > 0)
        .map(|(l, c)| ClassReport {
            label: l.clone(),
            rows: c.0,
            recall: c.1 as f64 / c.0 as f64,
            top5: c.2 as f64 / c.0 as f64,
            indexed: index.meta.classes.contains(l),
        })
        .collect();
    Ok(Report {
        features: job.features.to_string(),
        split: job.split.clone(),
        rows,
        k: job.k,
        min_score: job.min_score,
        top1_accuracy: top1 as f64 / rows as f64,
        top5_accuracy: top5 as f64 / rows as f64,
        unknown,
        skipped,
        classes,
        labels,
        confusion,
    })
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The confusion matrix as an SVG picture: true labels down, answers
/// across (last column: unknown), darker for more rows, counts written in.
pub fn confusion_svg(report: &Report) -> String {
    let n = report.labels.len();
    let cell = if n > 60 { 8 } else { 28 };
    let margin = 12 + 7 * report.labels.iter().map(|l| l.chars().count()).max().unwrap_or(4).max(7);
    let side = margin + cell * (n + 1) + 20;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{side}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"8\" y=\"16\" font-size=\"13\">Confusion: {} rows, top-1 {:.1}%, top-5 {:.1}% (rows: true label; columns: answer)</text>\n",
        side + 20,
        report.rows,
        100.0 * report.top1_accuracy,
        100.0 * report.top5_accuracy
    );
    let top = margin + 10;
    let mut columns: Vec<String> = report.labels.clone();
    columns.push("unknown".into());
    for (j, l) in columns.iter().enumerate() {
        let x = margin + j * cell + cell / 2;
        s += &format!("<text transform=\"translate({x},{}) rotate(-60)\">{}</text>\n", top - 4, xml(l));
    }
    for (i, row) in report.confusion.iter().enumerate() {
        let total: u64 = row.iter().sum();
        let y = top + i * cell;
        s += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n",
            margin - 4,
            y + cell / 2 + 4,
            xml(&report.labels[i])
        );
        for (j, count) in row.iter().enumerate() {
            let share = if total > 0 { *count as f64 / total as f64 } else { 0.0 };
            let shade = (255.0 * (1.0 - share)).round() as u8;
            let color = if j == i {
                format!("rgb({shade},{},{shade})", 255 - (share * 80.0) as u8)
            } else {
                format!("rgb(255,{shade},{shade})")
            };
            let x = margin + j * cell;
            s += &format!(
                "<rect x=\"{x}\" y=\"{y}\" width=\"{cell}\" height=\"{cell}\" fill=\"{color}\" stroke=\"#ccc\"/>\n"
            );
            if *count > 0 && cell >= 20 {
                let ink = if share > 0.6 { "white" } else { "black" };
                s += &format!(
                    "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"{ink}\">{count}</text>\n",
                    x + cell / 2,
                    y + cell / 2 + 4
                );
            }
        }
    }
    s + "</svg>\n"
}

/// Writes `eval.json` and `confusion.svg` into `dir`.
pub fn write(report: &Report, dir: &Path) -> Result<Vec<PathBuf>> {
    let json = dir.join("eval.json");
    crate::storage::files::write_file(&json, &serde_json::to_vec_pretty(report).expect("the report serialises"))?;
    let svg = dir.join("confusion.svg");
    crate::storage::files::write_file(&svg, confusion_svg(report).as_bytes())?;
    Ok(vec![json, svg])
}
