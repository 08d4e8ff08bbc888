//! An inverted-residual block (1×1 expand, k×k depthwise, 1×1 project,
//! skip) run a band of output rows at a time.
//!
//! Why: the expanded activation is the block's largest (112 × 112 × 96 f32
//! is 4.8 MB in MobileNetV2's second block), larger than a core's L2. Run
//! layer by layer it is written out to L3 or memory by the expansion and
//! read back by the depthwise, whose output goes the same way to the
//! projection; those layers ran at a third of the FMA peak (per-layer
//! timing, benches/README "The CPU engine on other CPUs"). A band keeps the
//! expanded rows it needs, and the depthwise rows it makes, in L2. The band's
//! height comes from this CPU's L2 size (CPUID), not from a constant tuned on
//! one machine.
//!
//! The same kernels do the same arithmetic on each output as the layers run
//! one by one (a GEMM's row blocking never changes a dot product's order,
//! and the depthwise computes each pixel alone), so the features are bit for
//! bit those of the unfused path.

use std::ops::Range;

use super::dense::{need, Dense};
use super::elem::Elem;
use super::gemm;
use crate::engine::cpu_id::l2_budget;
use crate::model::plan::{Depthwise, Hw};

/// The fewest [`gemm::MR`]-row micro-kernel tiles of pixels a band holds
/// ([`Fused::band_rows`]), whatever the L2: 4 measured faster than the L2's
/// one-row bands on Zen 3 (benches/README).
const MIN_BAND_TILES: usize = 4;

/// The three layers of a block that fuses; `expand` is absent where the
/// expansion ratio is 1 (MobileNetV2's first block).
#[derive(Debug, Clone)]
pub struct Fused<T> {
    pub expand: Option<Dense<T>>,
    pub dw: Depthwise,
    pub project: Dense<T>,
}

/// A band's buffers, reused from block to block and image to image.
#[derive(Debug, Default)]
pub struct Bands<T> {
    /// Expanded input rows, `[rows][i.w][ce]`.
    expanded: Vec<T>,
    /// The depthwise's output rows, `[rows][o.w][ce]`.
    mid: Vec<T>,
}

impl<T: Elem> Fused<T> {
    /// `None` unless both 1×1 layers multiply their input rows as they are.
    pub fn new(expand: Option<Dense<T>>, dw: Depthwise, project: Dense<T>) -> Option<Self> {
        let plain = expand.as_ref().is_none_or(|e| e.is_plain_gemm() && e.weight.n == dw.channels);
        (plain && project.is_plain_gemm() && project.cin == dw.channels).then_some(Self { expand, dw, project })
    }

    pub fn out_hw(&self, i: Hw) -> Hw {
        self.dw.out_hw(i)
    }

    pub fn cout(&self) -> usize {
        self.project.weight.n
    }

    /// Output rows per band for an `i`-sized input: as many as keep the
    /// expanded rows and the depthwise rows of one band within `l2`'s budget,
    /// but never fewer than [`MIN_BAND_TILES`] micro-kernel tiles of pixels.
    pub fn band_rows(&self, i: Hw, l2: usize) -> usize {
        let o = self.out_hw(i);
        let (ce, s, k) = (self.dw.channels, self.dw.stride, self.dw.kernel);
        let bytes = std::mem::size_of::<T>();
        let in_row = if self.expand.is_some() { i.w * ce * bytes } else { 0 };
        let out_row = o.w * ce * bytes;
        let fits = |b: usize| ((b - 1) * s + k) * in_row + b * out_row <= l2_budget(l2);
        let mut b = 1;
        while b < o.h && fits(b + 1) {
            b += 1;
        }
        // At least a few micro-kernel tiles of pixels a band: each band's
        // two GEMMs stream their weights through the caches again, and a
        // band the L2 alone would size can be one row: 14 pixels for
        // EfficientNet-Lite0's 14 × 14 × 672 5 × 5 blocks, whose 1 × 1
        // weights are 301 KB each, paid 14 times an image. Then as even as
        // that many bands allow.
        gemm::even_piece(o.h, b.max((MIN_BAND_TILES * gemm::MR).div_ceil(o.w)).min(o.h))
    }

    /// `input` is `[i.h][i.w][cin]`, `out` `[o.h][o.w][cout]`; `skip` adds
    /// the block's input to the projection (stride 1, cin = cout).
    pub fn run(&self, input: &[T], i: Hw, skip: bool, out: &mut [T], bands: &mut Bands<T>, l2: usize) {
        self.run_bands(input, i, skip, out, bands, self.band_rows(i, l2));
    }

    /// `images` whole images stacked, `input` `images × [i.h][i.w][cin]`,
    /// `out` `images × [o.h][o.w][cout]`: for images no taller than a band
    /// ([`Fused::band_rows`]), where one image's few pixels would stream the
    /// two 1×1 layers' weights from L3 once each, the 1×1 layers multiply
    /// every image's rows in one GEMM and the depthwise runs image by image.
    /// Bit for bit [`Fused::run`] on each image (the GEMM computes each row
    /// alone).
    ///
    /// The images go in groups whose expanded and depthwise activations fit
    /// `l2`'s budget together: all 8 at once, a 28 × 28 × 192 expansion is
    /// 4.8 MB in f32, and went through L3 and back: mobilenetv2's block 7
    /// ran at 35–41% of a thread's peak, 53–65% in groups of one
    /// (`fruits bench infer --blocks`, benches/README).
    #[allow(clippy::too_many_arguments)]
    pub fn run_images(
        &self,
        input: &[T],
        images: usize,
        i: Hw,
        skip: bool,
        out: &mut [T],
        bands: &mut Bands<T>,
        l2: usize,
    ) {
        let o = self.out_hw(i);
        let (px_in, px_out) = (i.h * i.w, o.h * o.w);
        let (cin, cout) = (input.len() / (images * px_in), self.cout());
        let per_image = (px_in + px_out) * self.dw.channels * std::mem::size_of::<T>();
        let group = (l2_budget(l2) / per_image).clamp(1, images);
        for first in (0..images).step_by(group) {
            let n = group.min(images - first);
            let x = &input[first * px_in * cin..(first + n) * px_in * cin];
            self.run_group(x, n, i, skip, &mut out[first * px_out * cout..(first + n) * px_out * cout], bands);
        }
    }

    /// [`Fused::run_images`] on one group of `images`.
    fn run_group(&self, input: &[T], images: usize, i: Hw, skip: bool, out: &mut [T], bands: &mut Bands<T>) {
        let o = self.out_hw(i);
        let ce = self.dw.channels;
        let (px_in, px_out) = (i.h * i.w, o.h * o.w);
        if let Some(e) = &self.expand {
            need(&mut bands.expanded, images * px_in * ce);
            gemm::gemm(input, e.cin, images * px_in, &e.weight, e.act, None, &mut bands.expanded);
        }
        let dw_in = if self.expand.is_some() { &bands.expanded[..] } else { input };
        need(&mut bands.mid, images * px_out * ce);
        for j in 0..images {
            let x = &dw_in[j * px_in * ce..(j + 1) * px_in * ce];
            self.dw.run(x, i, &mut bands.mid[j * px_out * ce..(j + 1) * px_out * ce]);
        }
        let (rows, w) = (images * px_out, &self.project.weight);
        let skip = skip.then(|| &input[..rows * w.n]);
        gemm::gemm(&bands.mid[..rows * ce], ce, rows, w, self.project.act, skip, &mut out[..rows * w.n]);
    }

    /// [`Fused::run`] in bands of `band` output rows.
    fn run_bands(&self, input: &[T], i: Hw, skip: bool, out: &mut [T], bands: &mut Bands<T>, band: usize) {
        let o = self.out_hw(i);
        let (ce, cout) = (self.dw.channels, self.cout());
        need(&mut bands.mid, band * o.w * ce);
        if self.expand.is_some() {
            need(&mut bands.expanded, ((band - 1) * self.dw.stride + self.dw.kernel).min(i.h) * i.w * ce);
        }
        // The expanded image rows `expanded` holds, from its start.
        let mut held = 0..0;
        for oy0 in (0..o.h).step_by(band) {
            let rows = oy0..(oy0 + band).min(o.h);
            let want = self.dw.input_rows(rows.clone(), i.h);
            let mid = &mut bands.mid[..rows.len() * o.w * ce];
            match &self.expand {
                Some(e) => {
                    held = expand_rows(e, input, i, &held, &want, &mut bands.expanded);
                    self.dw.run_rows(&bands.expanded, want.start, i, rows.clone(), mid);
                }
                None => self.dw.run_rows(&input[want.start * i.w * ce..], want.start, i, rows.clone(), mid),
            }
            let px = rows.start * o.w..rows.end * o.w;
            let skip = skip.then(|| &input[px.start * cout..px.end * cout]);
            let w = &self.project.weight;
            gemm::gemm(mid, ce, px.len(), w, self.project.act, skip, &mut out[px.start * cout..px.end * cout]);
        }
    }
}

/// Makes `expanded` hold the expansion of image rows `want`: rows already
/// held from the previous band move to the front, the rest are computed.
/// Returns the rows it now holds.
fn expand_rows<T: Elem>(
    e: &Dense<T>,
    input: &[T],
    i: Hw,
    held: &Range<usize>,
    want: &Range<usize>,
    expanded: &mut [T],
) -> Range<usize> {
    let (cin, ce) = (e.cin, e.weight.n);
    let row = i.w * ce;
    // Bands only move down: what is kept is a tail of what was held.
    let kept = want.start.max(held.start)..held.end.min(want.end);
    let fresh = if kept.is_empty() {
        want.start
    } else {
        expanded.copy_within((kept.start - held.start) * row..(kept.end - held.start) * row, 0);
        kept.end
    };
    debug_assert!(kept.is_empty() || kept.start == want.start);
    let n = (want.end - fresh) * i.w;
    let src = &input[fresh * i.w * cin..want.end * i.w * cin];
    let dst = &mut expanded[(fresh - want.start) * row..(want.end - want.start) * row];
    gemm::gemm(src, cin, n, &e.weight, e.act, None, dst);
    want.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::dense::dense;
    use crate::engine::cpu::elem::bf16;
    use crate::model::plan::{self, Act, Padding};

    fn rnd_source(mut seed: u32) -> impl FnMut() -> f32 {
        move || {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
        }
    }

    fn pointwise(rnd: &mut impl FnMut() -> f32, cin: usize, cout: usize, act: Act) -> plan::Dense {
        plan::Dense {
            cin,
            cout,
            kernel: 1,
            stride: 1,
            padding: Padding::Symmetric(0),
            act,
            weight: (0..cin * cout).map(|_| rnd() * 0.5).collect(),
            bias: (0..cout).map(|_| rnd()).collect(),
        }
    }

    /// The layers one by one, as the engine runs an unfused block.
    fn layer_by_layer<T: Elem>(f: &Fused<T>, input: &[T], i: Hw, skip: bool) -> Vec<T> {
        let mut cols = Vec::new();
        let ce = f.dw.channels;
        let expanded = match &f.expand {
            Some(e) => {
                let mut x = vec![T::default(); i.h * i.w * ce];
                dense(e, input, i, e.cin, None, &mut x, &mut cols);
                x
            }
            None => input.to_vec(),
        };
        let o = f.out_hw(i);
        let mut mid = vec![T::default(); o.h * o.w * ce];
        f.dw.run(&expanded, i, &mut mid);
        let mut out = vec![T::default(); o.h * o.w * f.cout()];
        dense(&f.project, &mid, o, ce, skip.then_some(input), &mut out, &mut cols);
        out
    }

    /// Fused bands give the layer-by-layer result bit for bit, whatever the
    /// band height (one row, a few with the overlap carried over, the whole
    /// image), for stride 1 and 2, 3×3 and 5×5, symmetric and TensorFlow
    /// padding, with and without expansion and skip, in f32 and bf16.
    #[test]
    fn bands_of_any_height_give_the_layers_results_bit_for_bit() {
        let mut rnd = rnd_source(11);
        // (h, w, cin, ce, cout, k, stride, padding, expand, skip)
        let cases = [
            (13, 11, 8, 40, 8, 3, 1, Padding::Symmetric(1), true, true),
            (14, 9, 6, 24, 10, 3, 2, Padding::Symmetric(1), true, false),
            (15, 12, 16, 48, 24, 5, 2, Padding::Same, true, false),
            (10, 10, 16, 16, 16, 3, 1, Padding::Symmetric(1), false, true),
            (9, 7, 4, 20, 4, 5, 1, Padding::Same, true, true),
        ];
        for (h, w, cin, ce, cout, k, s, padding, expand, skip) in cases {
            let dw = Depthwise {
                channels: ce,
                kernel: k,
                stride: s,
                padding,
                act: Act::Relu6,
                weight: (0..k * k * ce).map(|_| rnd()).collect(),
                bias: (0..ce).map(|_| rnd()).collect(),
            };
            let e = expand.then(|| pointwise(&mut rnd, cin, ce, Act::Relu6));
            let p = pointwise(&mut rnd, ce, cout, Act::None);
            let input: Vec<f32> = (0..h * w * if expand { cin } else { ce }).map(|_| rnd() * 4.0).collect();
            check::<f32>(&e, &dw, &p, &input, Hw { h, w }, skip);
            check::<bf16>(&e, &dw, &p, &input, Hw { h, w }, skip);
        }
    }

    fn check<T: Elem>(e: &Option<plan::Dense>, dw: &Depthwise, p: &plan::Dense, input: &[f32], i: Hw, skip: bool) {
        let f = Fused::<T>::new(e.as_ref().map(Dense::new), dw.clone(), Dense::new(p)).expect("fusable");
        let input: Vec<T> = input.iter().map(|&x| T::from_f32(x)).collect();
        let want: Vec<f32> = layer_by_layer(&f, &input, i, skip).iter().map(|x| x.to_f32()).collect();
        let o = f.out_hw(i);
        // One row, a few (rows carried over from band to band, a short last
        // band), the whole image, and what `run` picks for a tiny L2.
        for band in [1, 2, 3, 4, o.h, f.band_rows(i, 1)] {
            let mut out = vec![T::from_f32(f32::NAN); want.len() + 1];
            f.run_bands(&input, i, skip, &mut out[..want.len()], &mut Bands::default(), band);
            let got: Vec<f32> = out[..want.len()].iter().map(|x| x.to_f32()).collect();
            assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "band {band}: {i:?} {dw:?}");
            assert!(out[want.len()].to_f32().is_nan(), "wrote past the end");
        }
    }

    /// Stacked images give each image's own result bit for bit, whatever
    /// the L2 makes of the groups: one image a group, two (and one left
    /// over), all at once; in f32 and bf16, with and without expansion.
    #[test]
    fn stacked_images_in_any_grouping_give_each_images_result_bit_for_bit() {
        let mut rnd = rnd_source(13);
        // (h, w, cin, ce, cout, stride, expand, skip)
        for (h, w, cin, ce, cout, s, expand, skip) in
            [(7, 7, 8, 48, 8, 1, true, true), (8, 6, 6, 24, 10, 2, true, false), (5, 5, 12, 12, 12, 1, false, true)]
        {
            let dw = Depthwise {
                channels: ce,
                kernel: 3,
                stride: s,
                padding: Padding::Symmetric(1),
                act: Act::Relu6,
                weight: (0..9 * ce).map(|_| rnd()).collect(),
                bias: (0..ce).map(|_| rnd()).collect(),
            };
            let e = expand.then(|| pointwise(&mut rnd, cin, ce, Act::Relu6));
            let p = pointwise(&mut rnd, ce, cout, Act::None);
            let input: Vec<f32> = (0..3 * h * w * if expand { cin } else { ce }).map(|_| rnd() * 4.0).collect();
            check_stacked::<f32>(&e, &dw, &p, &input, Hw { h, w }, skip);
            check_stacked::<bf16>(&e, &dw, &p, &input, Hw { h, w }, skip);
        }
    }

    fn check_stacked<T: Elem>(e: &Option<plan::Dense>, dw: &Depthwise, p: &plan::Dense, x: &[f32], i: Hw, skip: bool) {
        let f = Fused::<T>::new(e.as_ref().map(Dense::new), dw.clone(), Dense::new(p)).expect("fusable");
        let input: Vec<T> = x.iter().map(|&v| T::from_f32(v)).collect();
        let o = f.out_hw(i);
        let (n_in, n_out) = (input.len() / 3, o.h * o.w * f.cout());
        let mut want = vec![T::default(); 3 * n_out];
        for (x, out) in input.chunks_exact(n_in).zip(want.chunks_exact_mut(n_out)) {
            f.run_bands(x, i, skip, out, &mut Bands::default(), o.h);
        }
        // The L2 whose budget holds exactly `g` images' expanded and
        // depthwise activations.
        let per_image = (i.h * i.w + o.h * o.w) * dw.channels * std::mem::size_of::<T>();
        for g in [1, 2, 3] {
            let l2 = 2 * g * per_image;
            let mut out = vec![T::from_f32(f32::NAN); want.len() + 1];
            f.run_images(&input, 3, i, skip, &mut out[..want.len()], &mut Bands::default(), l2);
            let same = out[..want.len()].iter().zip(&want).all(|(a, b)| a.to_f32().to_bits() == b.to_f32().to_bits());
            assert!(same, "{g} images a group: {i:?} {dw:?}");
            assert!(out[want.len()].to_f32().is_nan(), "wrote past the end");
        }
    }

    /// Band heights: within the L2's budget where that leaves enough pixels,
    /// never under [`MIN_BAND_TILES`] tiles of pixels.
    #[test]
    fn bands_fit_the_l2_but_never_starve_the_gemm() {
        let mut rnd = rnd_source(12);
        let dw = |ce| Depthwise {
            channels: ce,
            kernel: 5,
            stride: 1,
            padding: Padding::Symmetric(2),
            act: Act::Relu6,
            weight: vec![0.0; 25 * ce],
            bias: vec![0.0; ce],
        };
        let block = |rnd: &mut _, cin, ce| {
            let e = Dense::<f32>::new(&pointwise(rnd, cin, ce, Act::Relu6));
            Fused::new(Some(e), dw(ce), Dense::new(&pointwise(rnd, ce, cin, Act::None))).expect("fusable")
        };
        let min_px = MIN_BAND_TILES * gemm::MR;
        // 14 × 14 × 672: the L2 would allow one row (14 pixels); the GEMMs
        // get 4 rows a band (4, 4, 4 and 2).
        let narrow = block(&mut rnd, 112, 672);
        assert_eq!(narrow.band_rows(Hw { h: 14, w: 14 }, 512 << 10), 4);
        // 7 × 7 × 672: one band, the whole image.
        assert_eq!(narrow.band_rows(Hw { h: 7, w: 7 }, 512 << 10), 7);
        // 56 × 56 × 144, 56-pixel rows: the L2 decides. The tallest band
        // whose 5 × 5 window's expanded rows and depthwise rows fit half of
        // it, as many bands as that height needs, none taller.
        let wide = block(&mut rnd, 24, 144);
        let (big, row) = (Hw { h: 56, w: 56 }, 56 * 144 * 4);
        for l2 in [64 << 10, 256 << 10, 512 << 10, 640 << 10, 1 << 20, 2 << 20, 1 << 30] {
            let fit = (1..=56).rev().find(|&b| (b + 4) * row + b * row <= l2 / 2).unwrap_or(1);
            let want = fit.max(min_px.div_ceil(56));
            let b = wide.band_rows(big, l2);
            assert!(b <= want && 56usize.div_ceil(b) == 56usize.div_ceil(want), "L2 {l2}: {b}, not {want}");
        }
    }
}
