//! From neighbours to an answer: a weighted vote of the k nearest.
//!
//! Each neighbour votes for its label with weight max(cosine, 0): a
//! neighbour pointing away from the query says nothing. A label's score is
//! its share of the votes, so scores are in [0, 1] and sum to 1. The answer
//! is "unknown" when the best share is below `min_score` (default 0.5: no
//! weighted majority among the neighbours), or when no neighbour is
//! similar at all.

use super::search::Hit;

/// The default `--min-score`.
pub const DEFAULT_MIN_SCORE: f64 = 0.5;
/// The default `--k`. Measured on the trained network (benches/app_accuracy.py,
/// issue 24): k = 3 names held-out views as well as k = 5 or better at every
/// index size tried, and k = 10 worse; k = 1 names a few more but is one vote,
/// so its score is always 100% and "unknown" never comes.
pub const DEFAULT_K: usize = 3;

/// A label's share of the vote.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranked {
    pub class: u32,
    pub score: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Every label that got votes, best first (ties: lower class first).
    pub ranked: Vec<Ranked>,
    /// The best label is below `min_score`, or nothing voted.
    pub unknown: bool,
}

impl Prediction {
    pub fn best(&self) -> Option<Ranked> {
        self.ranked.first().copied()
    }
}

/// `classes[row]` is the class of indexed row `row`.
pub fn vote(hits: &[Hit], class_of: impl Fn(u32) -> u32, min_score: f64) -> Prediction {
    let mut totals: Vec<(u32, f64)> = Vec::new();
    for h in hits {
        let w = (h.similarity as f64).max(0.0);
        let c = class_of(h.row);
        match totals.iter_mut().find(|(k, _)| *k == c) {
            Some((_, t)) => *t += w,
            None => totals.push((c, w)),
        }
    }
    let sum: f64 = totals.iter().map(|(_, t)| t).sum();
    let mut ranked: Vec<Ranked> = if sum > 0.0 {
        totals.into_iter().filter(|(_, t)| *t > 0.0).map(|(class, t)| Ranked { class, score: t / sum }).collect()
    } else {
        Vec::new()
    };
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.class.cmp(&b.class)));
    let unknown = ranked.first().is_none_or(|r| r.score < min_score);
    Prediction { ranked, unknown }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(row: u32, similarity: f32) -> Hit {
        Hit { row, similarity }
    }

    #[test]
    fn weighted_majority() {
        // rows 0, 1 are class 7; row 2 class 9.
        let class = |r: u32| if r < 2 { 7 } else { 9 };
        let p = vote(&[hit(2, 0.9), hit(0, 0.6), hit(1, 0.5)], class, 0.5);
        assert_eq!(p.best().map(|r| r.class), Some(7));
        assert!((p.ranked[0].score - 1.1 / 2.0).abs() < 1e-6 && !p.unknown, "{p:?}");
        let p = vote(&[hit(2, 0.9), hit(0, 0.6), hit(1, 0.5)], class, 0.6);
        assert!(p.unknown, "0.55 < 0.6");
    }

    #[test]
    fn nothing_similar_is_unknown() {
        let p = vote(&[hit(0, -0.2), hit(1, 0.0)], |_| 0, 0.5);
        assert!(p.unknown && p.ranked.is_empty());
    }
}
