//! Principal components from mergeable statistics; no I/O here.
//!
//! [`Moments`] are the sufficient statistics of a set of rows: their count,
//! and their sum and Gram matrix taken about a shift vector (the first row
//! seen), in f64. The shift keeps `Σxxᵀ − n·μμᵀ` from cancelling
//! catastrophically when the mean is large next to the spread. Moments of
//! different parts merge exactly (Chan et al.'s pairwise update), in any
//! order, so many cluster nodes can each summarise their part and one
//! driver fits the whole without ever holding a row.
//!
//! [`fit`] centres (and optionally standardises) the covariance, takes its
//! eigen-decomposition with `faer`, and keeps the top `k` components.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, Par, Side};

use crate::error::{Error, Param, Result};

/// Sufficient statistics of rows of width `dim`.
#[derive(Debug, Clone, PartialEq)]
pub struct Moments {
    pub n: u64,
    /// Subtracted from every row before summing.
    pub shift: Vec<f64>,
    /// Σ (x − shift)
    pub sum: Vec<f64>,
    /// Σ (x − shift)(x − shift)ᵀ, dim × dim, symmetric.
    pub gram: Mat<f64>,
}

impl Moments {
    pub fn new(dim: usize) -> Self {
        Self { n: 0, shift: vec![0.0; dim], sum: vec![0.0; dim], gram: Mat::zeros(dim, dim) }
    }

    pub fn dim(&self) -> usize {
        self.shift.len()
    }

    /// Adds `rows.len() / dim` rows, row-major.
    pub fn add_rows(&mut self, rows: &[f32]) {
        let d = self.dim();
        assert_eq!(rows.len() % d, 0, "rows must be a whole number of width-{d} rows");
        let n = rows.len() / d;
        if n == 0 {
            return;
        }
        if self.n == 0 {
            self.shift = rows[..d].iter().map(|&v| v as f64).collect();
        }
        let x = Mat::<f64>::from_fn(n, d, |i, j| rows[i * d + j] as f64 - self.shift[j]);
        for i in 0..n {
            for j in 0..d {
                self.sum[j] += x[(i, j)];
            }
        }
        matmul(self.gram.as_mut(), Accum::Add, x.transpose(), x.as_ref(), 1.0, Par::rayon(0));
        self.n += n as u64;
    }

    pub fn mean(&self) -> Vec<f64> {
        let n = self.n.max(1) as f64;
        self.shift.iter().zip(&self.sum).map(|(s, t)| s + t / n).collect()
    }

    /// Σ (x − mean)(x − mean)ᵀ.
    pub fn scatter(&self) -> Mat<f64> {
        let n = self.n.max(1) as f64;
        let d = self.dim();
        Mat::from_fn(d, d, |i, j| self.gram[(i, j)] - self.sum[i] * self.sum[j] / n)
    }

    /// Folds `other` in; the result is about the merged mean.
    pub fn merge(&mut self, other: &Moments) -> Result<()> {
        if other.dim() != self.dim() {
            return Err(Error::differ(
                "statistics",
                "width",
                ("the merged statistics".into(), self.dim().to_string()),
                ("the next part's".into(), other.dim().to_string()),
            ));
        }
        if other.n == 0 {
            return Ok(());
        }
        if self.n == 0 {
            *self = other.clone();
            return Ok(());
        }
        let (na, nb) = (self.n as f64, other.n as f64);
        let n = na + nb;
        let (ma, mb) = (self.mean(), other.mean());
        let delta: Vec<f64> = mb.iter().zip(&ma).map(|(b, a)| b - a).collect();
        let (sa, sb) = (self.scatter(), other.scatter());
        let w = na * nb / n;
        let d = self.dim();
        self.gram = Mat::from_fn(d, d, |i, j| sa[(i, j)] + sb[(i, j)] + w * delta[i] * delta[j]);
        self.shift = ma.iter().zip(&delta).map(|(a, dl)| a + dl * nb / n).collect();
        self.sum = vec![0.0; d];
        self.n += other.n;
        Ok(())
    }

    /// The upper triangle of the Gram matrix, row by row (d(d+1)/2 values).
    pub fn gram_upper(&self) -> Vec<f64> {
        let d = self.dim();
        let mut out = Vec::with_capacity(d * (d + 1) / 2);
        for i in 0..d {
            for j in i..d {
                out.push(self.gram[(i, j)]);
            }
        }
        out
    }

    pub fn from_parts(n: u64, shift: Vec<f64>, sum: Vec<f64>, gram_upper: &[f64]) -> Result<Self> {
        let d = shift.len();
        if sum.len() != d || gram_upper.len() != d * (d + 1) / 2 {
            return Err(Error::corrupt(
                "statistics",
                format!(
                    "width {d} needs {d} sums and {} Gram values, got {} and {}",
                    d * (d + 1) / 2,
                    sum.len(),
                    gram_upper.len()
                ),
            ));
        }
        let mut gram = Mat::zeros(d, d);
        let mut it = gram_upper.iter();
        for i in 0..d {
            for j in i..d {
                let v = *it.next().expect("length checked");
                gram[(i, j)] = v;
                gram[(j, i)] = v;
            }
        }
        Ok(Self { n, shift, sum, gram })
    }
}

/// How many components to keep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Keep {
    /// Exactly this many.
    K(usize),
    /// The fewest whose cumulative explained-variance ratio reaches this, in (0, 1].
    Variance(f64),
}

impl Keep {
    /// Refuses what cannot be kept of `d` features: no component, more
    /// than `d`, or a share outside (0, 1].
    pub fn check(self, d: usize) -> Result<()> {
        match self {
            Keep::K(k) if k == 0 || k > d => {
                Err(Error::invalid(Param::Components, format!("must be between 1 and the feature width {d}, got {k}")))
            }
            Keep::Variance(v) if !(v > 0.0 && v <= 1.0) => {
                Err(Error::invalid(Param::Variance, format!("must be in (0, 1], got {v}")))
            }
            _ => Ok(()),
        }
    }
}

/// A fitted PCA, with scikit-learn's names where they exist.
#[derive(Debug, Clone, PartialEq)]
pub struct Pca {
    pub n_samples: u64,
    pub mean: Vec<f64>,
    /// Per-feature divisor when standardised (std, or 1 for a constant feature).
    pub scale: Option<Vec<f64>>,
    /// k × d, rows are unit-norm components, largest variance first.
    pub components: Vec<Vec<f64>>,
    /// Every eigenvalue of the covariance, largest first (d values).
    pub eigenvalues: Vec<f64>,
}

impl Pca {
    pub fn n_components(&self) -> usize {
        self.components.len()
    }
    pub fn n_features(&self) -> usize {
        self.mean.len()
    }
    pub fn total_variance(&self) -> f64 {
        self.eigenvalues.iter().sum()
    }
    pub fn explained_variance(&self) -> &[f64] {
        &self.eigenvalues[..self.n_components()]
    }
    /// Each eigenvalue over the total, for all d components.
    pub fn ratio_all(&self) -> Vec<f64> {
        let t = self.total_variance();
        self.eigenvalues.iter().map(|v| if t > 0.0 { v / t } else { 0.0 }).collect()
    }
    pub fn explained_variance_ratio(&self) -> Vec<f64> {
        self.ratio_all()[..self.n_components()].to_vec()
    }
    pub fn cumulative_ratio_all(&self) -> Vec<f64> {
        self.ratio_all()
            .iter()
            .scan(0.0, |acc, r| {
                *acc += r;
                Some(*acc)
            })
            .collect()
    }

    /// Projects rows (row-major, width d) onto the components: (x − mean)/scale · Cᵀ.
    /// f64 throughout, so a model loaded back reproduces this bit for bit.
    pub fn transform(&self, rows: &[f32]) -> Vec<f32> {
        let d = self.n_features();
        let k = self.n_components();
        let mut out = Vec::with_capacity(rows.len() / d * k);
        let mut centred = vec![0f64; d];
        for row in rows.chunks(d) {
            for j in 0..d {
                let c = row[j] as f64 - self.mean[j];
                centred[j] = match &self.scale {
                    Some(s) => c / s[j],
                    None => c,
                };
            }
            for comp in &self.components {
                let dot: f64 = comp.iter().zip(&centred).map(|(a, b)| a * b).sum();
                out.push(dot as f32);
            }
        }
        out
    }
}

/// Fits a PCA to merged moments. The covariance is the scatter over n − 1
/// (scikit-learn's convention); with `standardize`, the correlation matrix.
pub fn fit(m: &Moments, keep: Keep, standardize: bool) -> Result<Pca> {
    let d = m.dim();
    if m.n < 2 {
        return Err(Error::TooFewRows { what: "PCA", need: 2, got: m.n });
    }
    keep.check(d)?;
    let mut cov = m.scatter();
    let denom = (m.n - 1) as f64;
    for i in 0..d {
        for j in 0..d {
            cov[(i, j)] /= denom;
        }
    }
    let scale = standardize.then(|| standardise(&mut cov));
    let evd = cov
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| Error::NotConverged { what: "the eigen-decomposition", detail: format!("{e:?}") })?;
    let (vals, vecs) = (evd.S(), evd.U());
    // faer sorts ascending; we want largest first. Tiny negative eigenvalues
    // are rounding of a singular covariance: clamp them to zero.
    let eigenvalues: Vec<f64> = (0..d).rev().map(|i| vals[i].max(0.0)).collect();
    let k = match keep {
        Keep::K(k) => k,
        Keep::Variance(v) => components_for(&eigenvalues, v),
    };
    let components = (0..k)
        .map(|c| {
            let col = d - 1 - c;
            let mut v: Vec<f64> = (0..d).map(|i| vecs[(i, col)]).collect();
            // scikit-learn's sign convention: the largest |entry| is positive.
            let big = v.iter().cloned().fold(0.0f64, |m, x| if x.abs() > m.abs() { x } else { m });
            if big < 0.0 {
                v.iter_mut().for_each(|x| *x = -*x);
            }
            v
        })
        .collect();
    Ok(Pca { n_samples: m.n, mean: m.mean(), scale, components, eigenvalues })
}

/// Turns a covariance into a correlation matrix in place; returns each
/// feature's standard deviation (1 for a constant feature).
fn standardise(cov: &mut Mat<f64>) -> Vec<f64> {
    let d = cov.nrows();
    let s: Vec<f64> = (0..d)
        .map(|i| {
            let s = cov[(i, i)].max(0.0).sqrt();
            if s > 0.0 {
                s
            } else {
                1.0
            }
        })
        .collect();
    for i in 0..d {
        for j in 0..d {
            cov[(i, j)] /= s[i] * s[j];
        }
    }
    s
}

/// The fewest components (largest first) whose share of the total reaches `v`.
fn components_for(eigenvalues: &[f64], v: f64) -> usize {
    let total: f64 = eigenvalues.iter().sum();
    let mut acc = 0.0;
    for (i, e) in eigenvalues.iter().enumerate() {
        acc += e / total;
        // A hair of tolerance so 0.95 is reached by a cumulative sum
        // that rounds to 0.9499999999999999.
        if acc >= v - 1e-12 {
            return i + 1;
        }
    }
    eigenvalues.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, d: usize, seed: u64) -> Vec<f32> {
        // A small LCG: deterministic, no dependency.
        let mut s = seed;
        (0..n * d)
            .map(|i| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * (1.0 + (i % d) as f32) + 100.0
            })
            .collect()
    }

    #[test]
    fn merging_in_any_split_equals_one_pass() {
        let d = 5;
        let x = rows(40, d, 1);
        let mut whole = Moments::new(d);
        whole.add_rows(&x);
        let mut parts = Vec::new();
        for (a, b) in [(0, 7), (7, 8), (8, 30), (30, 40)] {
            let mut m = Moments::new(d);
            m.add_rows(&x[a * d..b * d]);
            parts.push(m);
        }
        for order in [[0, 1, 2, 3], [3, 1, 0, 2]] {
            let mut merged = Moments::new(d);
            for i in order {
                merged.merge(&parts[i]).unwrap();
            }
            assert_eq!(merged.n, 40);
            let (s1, s2) = (whole.scatter(), merged.scatter());
            for i in 0..d {
                assert!((whole.mean()[i] - merged.mean()[i]).abs() < 1e-10);
                for j in 0..d {
                    assert!((s1[(i, j)] - s2[(i, j)]).abs() < 1e-8 * s1[(i, i)].abs().max(1.0));
                }
            }
        }
    }

    #[test]
    fn packing_round_trips() {
        let mut m = Moments::new(4);
        m.add_rows(&rows(9, 4, 2));
        let back = Moments::from_parts(m.n, m.shift.clone(), m.sum.clone(), &m.gram_upper()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn bad_k_and_variance_are_refused() {
        let mut m = Moments::new(3);
        m.add_rows(&rows(10, 3, 3));
        assert!(fit(&m, Keep::K(4), false).is_err());
        assert!(fit(&m, Keep::K(0), false).is_err());
        assert!(fit(&m, Keep::Variance(0.0), false).is_err());
        assert!(fit(&m, Keep::Variance(1.5), false).is_err());
        assert_eq!(fit(&m, Keep::Variance(1.0), false).unwrap().n_components(), 3);
    }
}
