//! Exact nearest-neighbour search: every indexed vector's dot product with
//! the query (unit vectors: the cosine), the best k kept. A scan is memory
//! bound (1,000,000 × 64 f32 is 256 MB per query), so rows are split across
//! the rayon pool and a batch of queries shares one pass over the rows.

use rayon::prelude::*;

use crate::engine::simd::{simd, Simd};

/// One neighbour: the row and its cosine similarity to the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub row: u32,
    pub similarity: f32,
}

/// Rows per task: big enough that the per-task top-k merge is noise.
const ROWS_PER_TASK: usize = 16 * 1024; // a multiple of BLOCK

/// `a · b`, on the best vector unit this CPU has.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if simd() >= Simd::Avx2 {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { dot_avx2(a, b) };
    }
    dot_portable(a, b)
}

/// Eight independent sums, so the compiler may keep them in vector lanes
/// (a single running sum must be added in order and cannot be vectorised).
#[inline(always)]
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_portable(a, b)
}

/// Rows in a block: one vector register of f32 lanes (AVX2), each lane a row.
pub const BLOCK: usize = 8;

/// The indexed vectors, stored for the scan: blocks of [`BLOCK`] rows,
/// dimension-major inside a block (value j of rows 0..8, then value j+1 ...),
/// so one multiply-add updates eight rows' dot products at once and a scan
/// reads memory front to back with no horizontal sums. The last block is
/// padded with zero rows, never returned.
#[derive(Debug, Clone, PartialEq)]
pub struct Vectors {
    pub dim: usize,
    pub rows: usize,
    blocked: Vec<f32>,
}

impl Vectors {
    /// From rows × dim, row-major.
    pub fn from_rows(rows: &[f32], dim: usize) -> Self {
        let n = rows.len() / dim.max(1);
        let mut blocked = vec![0f32; n.div_ceil(BLOCK) * BLOCK * dim];
        for (i, row) in rows.chunks_exact(dim).enumerate() {
            let (b, lane) = (i / BLOCK, i % BLOCK);
            for (j, v) in row.iter().enumerate() {
                blocked[b * BLOCK * dim + j * BLOCK + lane] = *v;
            }
        }
        Self { dim, rows: n, blocked }
    }

    /// Back to rows × dim, row-major (what the index file stores).
    pub fn to_rows(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.rows * self.dim);
        for i in 0..self.rows {
            let (b, lane) = (i / BLOCK, i % BLOCK);
            out.extend((0..self.dim).map(|j| self.blocked[b * BLOCK * self.dim + j * BLOCK + lane]));
        }
        out
    }

    /// The stored values' bytes (little-endian f32, blocked as scanned).
    pub fn as_bytes(&self) -> Vec<u8> {
        self.blocked.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    pub fn all_finite(&self) -> bool {
        self.blocked.iter().all(|v| v.is_finite())
    }
}

/// One task's blocks against every query; the inner loop is eight lanes
/// wide, so the compiler keeps `acc` in one vector register.
#[inline(always)]
fn scan_portable(blocks: &[f32], dim: usize, rows: usize, queries: &[f32], first: usize, tops: &mut [TopK]) {
    for (b, block) in blocks.chunks_exact(BLOCK * dim).enumerate() {
        let row0 = first + b * BLOCK;
        for (q, top) in queries.chunks_exact(dim).zip(tops.iter_mut()) {
            let mut acc = [0f32; BLOCK];
            for (qj, lanes) in q.iter().zip(block.chunks_exact(BLOCK)) {
                for l in 0..BLOCK {
                    acc[l] += qj * lanes[l];
                }
            }
            for (l, s) in acc.iter().enumerate().take(rows.saturating_sub(row0).min(BLOCK)) {
                top.offer(Hit { row: (row0 + l) as u32, similarity: *s });
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scan_avx2(blocks: &[f32], dim: usize, rows: usize, queries: &[f32], first: usize, tops: &mut [TopK]) {
    scan_portable(blocks, dim, rows, queries, first, tops)
}

fn scan(blocks: &[f32], dim: usize, rows: usize, queries: &[f32], first: usize, tops: &mut [TopK]) {
    #[cfg(target_arch = "x86_64")]
    if simd() >= Simd::Avx2 {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { scan_avx2(blocks, dim, rows, queries, first, tops) };
    }
    scan_portable(blocks, dim, rows, queries, first, tops)
}

/// The k best hits of each query, best first (ties: lower row first).
/// `queries` is n × dim, row-major.
pub fn nearest(vectors: &Vectors, queries: &[f32], k: usize) -> Vec<Vec<Hit>> {
    let dim = vectors.dim;
    let n_queries = queries.len() / dim.max(1);
    if k == 0 || vectors.rows == 0 {
        return vec![Vec::new(); n_queries];
    }
    let partial: Vec<Vec<TopK>> = vectors
        .blocked
        .par_chunks(ROWS_PER_TASK * dim)
        .enumerate()
        .map(|(task, blocks)| {
            let mut tops: Vec<TopK> = (0..n_queries).map(|_| TopK::new(k)).collect();
            scan(blocks, dim, vectors.rows, queries, task * ROWS_PER_TASK, &mut tops);
            tops
        })
        .collect();
    (0..n_queries)
        .map(|q| {
            let mut all = TopK::new(k);
            partial.iter().flat_map(|tops| &tops[q].hits).for_each(|h| all.offer(*h));
            all.into_sorted()
        })
        .collect()
}

/// The k best so far, kept sorted (k is small: 5 to 50).
struct TopK {
    k: usize,
    hits: Vec<Hit>,
}

impl TopK {
    fn new(k: usize) -> Self {
        Self { k, hits: Vec::with_capacity(k + 1) }
    }

    fn better(a: &Hit, b: &Hit) -> bool {
        a.similarity > b.similarity || (a.similarity == b.similarity && a.row < b.row)
    }

    #[inline(always)]
    fn offer(&mut self, hit: Hit) {
        if self.hits.len() == self.k && !Self::better(&hit, self.hits.last().expect("k > 0")) {
            return;
        }
        let at = self.hits.partition_point(|h| Self::better(h, &hit));
        self.hits.insert(at, hit);
        self.hits.truncate(self.k);
    }

    fn into_sorted(self) -> Vec<Hit> {
        self.hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scan against a sort of every similarity (f64 dot products).
    #[test]
    fn nearest_matches_a_full_sort() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (rows, dim, k) = (40_000, 13, 7);
        let vectors: Vec<f32> = (0..rows * dim).map(|_| rng.random_range(-1.0..1.0)).collect();
        let queries: Vec<f32> = (0..3 * dim).map(|_| rng.random_range(-1.0..1.0)).collect();
        let got = nearest(&Vectors::from_rows(&vectors, dim), &queries, k);
        for (q, hits) in queries.chunks(dim).zip(got) {
            let mut all: Vec<(f64, usize)> = vectors
                .chunks(dim)
                .enumerate()
                .map(|(i, r)| (r.iter().zip(q).map(|(a, b)| *a as f64 * *b as f64).sum(), i))
                .collect();
            all.sort_by(|a, b| b.0.total_cmp(&a.0));
            let want: Vec<usize> = all[..k].iter().map(|x| x.1).collect();
            let rows: Vec<usize> = hits.iter().map(|h| h.row as usize).collect();
            assert_eq!(rows, want);
            for (h, w) in hits.iter().zip(&all) {
                assert!((h.similarity as f64 - w.0).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn blocks_round_trip() {
        let rows: Vec<f32> = (0..11 * 3).map(|i| i as f32).collect();
        assert_eq!(Vectors::from_rows(&rows, 3).to_rows(), rows);
    }

    #[test]
    fn fewer_rows_than_k() {
        let hits = nearest(&Vectors::from_rows(&[1.0, 0.0, 0.0, 1.0], 2), &[0.0, 1.0], 5);
        assert_eq!(hits[0].iter().map(|h| h.row).collect::<Vec<_>>(), vec![1, 0]);
    }
}
