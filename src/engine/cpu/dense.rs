//! A dense (k×k, all-channel) convolution of the plan, weights packed for
//! [`gemm`]: a 1×1 convolution multiplies the NHWC rows as they are, a
//! larger one multiplies im2col tiles built a few rows at a time.

use super::elem::Elem;
use super::gemm::{self, Packed};
use crate::model::plan::{self, Act, Hw, Padding};
use std::ops::Range;

/// A dense convolution of the plan with its weights packed for [`gemm`].
#[derive(Debug, Clone)]
pub struct Dense<T> {
    pub cin: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: Padding,
    pub act: Act,
    /// Reduction order `(ky, kx, ci)`, matching [`im2col`].
    pub weight: Packed<T>,
}

impl<T: Elem> Dense<T> {
    pub fn new(d: &plan::Dense) -> Self {
        let weight = Packed::new(d.k(), d.cout, &d.weight, &d.bias);
        Self { cin: d.cin, kernel: d.kernel, stride: d.stride, padding: d.padding, act: d.act, weight }
    }

    pub fn out_hw(&self, i: Hw) -> Hw {
        i.conv(self.kernel, self.stride, self.padding)
    }

    /// A 1×1 convolution whose input rows are already the GEMM's rows.
    pub fn is_plain_gemm(&self) -> bool {
        self.kernel == 1 && self.stride == 1 && self.weight.k == self.cin
    }
}

/// Rows of im2col built (and multiplied) at a time: ≤ 120 × 288 f32 stays in L2.
const COL_ROWS: usize = 120;

pub fn need<T: Elem>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize(n, T::default());
    }
}

/// A dense convolution of one `[hw][cin]` image into `out`.
pub fn dense<T: Elem>(
    d: &Dense<T>,
    input: &[T],
    i: Hw,
    cin: usize,
    skip: Option<&[T]>,
    out: &mut [T],
    cols: &mut Vec<T>,
) {
    let o = d.out_hw(i);
    if d.is_plain_gemm() {
        gemm::gemm(input, cin, o.h * o.w, &d.weight, d.act, skip, out);
        return;
    }
    if skip.is_none() && gemm::has_windows::<T>() && d.weight.k == d.kernel * d.kernel * cin {
        return windows(d, input, i, cin, out, cols);
    }
    im2col_gemm(d, input, i, cin, 0..o.h * o.w, skip, out, cols);
}

/// Output pixels `pixels` of [`dense`] through im2col rows, [`COL_ROWS`]
/// at a time; `skip` and `out` hold every pixel.
#[allow(clippy::too_many_arguments)]
fn im2col_gemm<T: Elem>(
    d: &Dense<T>,
    input: &[T],
    i: Hw,
    cin: usize,
    pixels: Range<usize>,
    skip: Option<&[T]>,
    out: &mut [T],
    cols: &mut Vec<T>,
) {
    let (o, n, kdim) = (d.out_hw(i), d.weight.n, d.weight.k);
    need(cols, COL_ROWS * kdim);
    for p0 in pixels.clone().step_by(COL_ROWS) {
        let rows = (pixels.end - p0).min(COL_ROWS);
        im2col(d, input, i, o, cin, p0, rows, &mut cols[..rows * kdim]);
        let skip = skip.map(|s| &s[p0 * n..(p0 + rows) * n]);
        gemm::gemm(&cols[..rows * kdim], kdim, rows, &d.weight, d.act, skip, &mut out[p0 * n..(p0 + rows) * n]);
    }
}

/// [`dense`] reading each output pixel's window where it lies in the
/// image ([`gemm::gemm_windows`]: its k rows of k · cin adjacent values),
/// a row of outputs at a time; only the pixels whose window crosses the
/// image's edge go through im2col. The stem (3 × 3 × 3, k = 27) spent 205
/// of its 571 µs an image building im2col rows (7% of MobileNetV2's time);
/// read in place it takes 281–292 µs (one thread, Zen 3, benches/README);
/// on an AVX-512 Emerald Rapids, 466–474 → 247–262 µs. The same bits
/// either way.
fn windows<T: Elem>(d: &Dense<T>, input: &[T], i: Hw, cin: usize, out: &mut [T], cols: &mut Vec<T>) {
    let (o, n, k, s) = (d.out_hw(i), d.weight.n, d.kernel, d.stride);
    let (pad_y, pad_x) = (d.padding.begin(k, s, i.h), d.padding.begin(k, s, i.w));
    // The outputs (of `out` along an axis of `len`) whose k taps all land
    // inside it.
    let inside = |out: usize, len: usize, pad: usize| {
        let ok = |o: usize| o * s >= pad && o * s - pad + k <= len;
        let first = (0..out).find(|&o| ok(o)).unwrap_or(out);
        first..(first..out).find(|&o| !ok(o)).unwrap_or(out)
    };
    let (ys, xs) = (inside(o.h, i.h, pad_y), inside(o.w, i.w, pad_x));
    let red = gemm::Reduction { len: k * cin, count: k, step: i.w * cin };
    for oy in 0..o.h {
        let row = oy * o.w..(oy + 1) * o.w;
        if !ys.contains(&oy) || xs.is_empty() {
            im2col_gemm(d, input, i, cin, row, None, out, cols);
            continue;
        }
        let at = ((oy * s - pad_y) * i.w + xs.start * s - pad_x) * cin;
        let y = &mut out[(row.start + xs.start) * n..(row.start + xs.end) * n];
        gemm::gemm_windows(&input[at..], s * cin, xs.len(), red, &d.weight, d.act, y);
        im2col_gemm(d, input, i, cin, row.start..row.start + xs.start, None, out, cols);
        im2col_gemm(d, input, i, cin, row.start + xs.end..row.end, None, out, cols);
    }
}

/// Rows `p0..p0+rows` of the patch matrix: one row per output pixel, the
/// k×k×cin window in `(ky, kx, ci)` order, zeros outside the image and in
/// the row's padding up to the packed k.
#[allow(clippy::too_many_arguments)]
fn im2col<T: Elem>(d: &Dense<T>, input: &[T], i: Hw, o: Hw, cin: usize, p0: usize, rows: usize, cols: &mut [T]) {
    let k = d.kernel;
    let kdim = d.weight.k;
    let (pad_y, pad_x) = (d.padding.begin(k, d.stride, i.h), d.padding.begin(k, d.stride, i.w));
    for (r, row) in cols.chunks_exact_mut(kdim).take(rows).enumerate() {
        let p = p0 + r;
        let (oy, ox) = (p / o.w, p % o.w);
        let x0 = (ox * d.stride) as isize - pad_x as isize;
        let inside_x = x0 >= 0 && x0 as usize + k <= i.w;
        for ky in 0..k {
            let iy = (oy * d.stride + ky) as isize - pad_y as isize;
            let dst = &mut row[ky * k * cin..(ky + 1) * k * cin];
            if iy < 0 || iy as usize >= i.h {
                zero(dst);
            } else if inside_x {
                // The k pixels of this window row are adjacent in NHWC: one copy.
                let at = (iy as usize * i.w + x0 as usize) * cin;
                copy(dst, &input[at..at + k * cin]);
            } else {
                for (kx, dst) in dst.chunks_exact_mut(cin).enumerate() {
                    let ix = x0 + kx as isize;
                    if ix < 0 || ix as usize >= i.w {
                        zero(dst);
                    } else {
                        copy(dst, &input[(iy as usize * i.w + ix as usize) * cin..][..cin]);
                    }
                }
            }
        }
        zero(&mut row[k * k * cin..]);
    }
}

/// `dst.copy_from_slice(src)`, inlined for the stem's short window rows
/// (3 pixels × 3 channels): a library `memcpy` call per 36 bytes, three per
/// output pixel, was ~2% of a MobileNetV2 featurize (perf).
#[inline(always)]
fn copy<T: Copy>(dst: &mut [T], src: &[T]) {
    fn fixed<T: Copy, const N: usize>(dst: &mut [T], src: &[T]) {
        let (d, s): (&mut [T; N], &[T; N]) = (dst.try_into().unwrap(), src.try_into().unwrap());
        *d = *s;
    }
    match dst.len() {
        3 => fixed::<T, 3>(dst, src),
        9 => fixed::<T, 9>(dst, src),
        _ => dst.copy_from_slice(src),
    }
}

/// `dst.fill(zero)` without a library `memset` call for the few elements
/// of a row's padding (none in f32, one in bf16, for the stem) or a window
/// row above or below the image.
#[inline(always)]
fn zero<T: Elem>(dst: &mut [T]) {
    fn fixed<T: Elem, const N: usize>(dst: &mut [T]) {
        let d: &mut [T; N] = dst.try_into().unwrap();
        *d = [T::default(); N];
    }
    match dst.len() {
        0 => {}
        1 => fixed::<T, 1>(dst),
        3 => fixed::<T, 3>(dst),
        9 => fixed::<T, 9>(dst),
        _ => dst.fill(T::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The windows read in place give im2col's bits, and both the direct
    /// sum's values: stem shapes (both paddings, odd and even sizes),
    /// wider inputs, 5 × 5, images smaller than a window, 8-column panels.
    #[test]
    fn windows_give_the_im2col_bits_and_the_direct_sum() {
        if !gemm::has_windows::<f32>() {
            eprintln!("SKIPPED: this CPU has no windowed GEMM (no AVX2); im2col alone runs here");
            return;
        }
        let mut seed = 11u32;
        let mut rnd = move || {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        for &(h, w, cin, k, s, padding, n) in &[
            (224, 224, 3, 3, 2, Padding::Symmetric(1), 32),
            (225, 223, 3, 3, 2, Padding::Same, 32),
            (9, 11, 8, 3, 1, Padding::Symmetric(1), 24),
            (13, 12, 5, 5, 2, Padding::Same, 40),
            (2, 3, 3, 3, 2, Padding::Same, 16),
            (2, 2, 3, 5, 1, Padding::Symmetric(2), 32),
        ] {
            for act in [Act::None, Act::Relu6] {
                let plan = plan::Dense {
                    cin,
                    cout: n,
                    kernel: k,
                    stride: s,
                    padding,
                    act,
                    weight: (0..k * k * cin * n).map(|_| rnd()).collect(),
                    bias: (0..n).map(|_| rnd()).collect(),
                };
                let d = Dense::<f32>::new(&plan);
                let i = Hw { h, w };
                let o = d.out_hw(i);
                let input: Vec<f32> = (0..h * w * cin).map(|_| rnd() * 4.0).collect();
                let (mut got, mut want, mut cols) =
                    (vec![f32::NAN; o.h * o.w * n + 1], vec![f32::NAN; o.h * o.w * n], Vec::new());
                windows(&d, &input, i, cin, &mut got, &mut cols);
                im2col_gemm(&d, &input, i, cin, 0..o.h * o.w, None, &mut want, &mut cols);
                assert!(got[o.h * o.w * n].is_nan(), "wrote past the end");
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got[..o.h * o.w * n]), bits(&want), "{h}x{w}x{cin} k{k} s{s} {padding:?}");
                let (py, px) = (padding.begin(k, s, h) as isize, padding.begin(k, s, w) as isize);
                for (p, y) in got.chunks_exact(n).enumerate() {
                    let (oy, ox) = ((p / o.w) as isize, (p % o.w) as isize);
                    for (c, &y) in y.iter().enumerate() {
                        let mut sum = plan.bias[c] as f64;
                        for (ky, kx, ci) in
                            (0..k).flat_map(|a| (0..k).flat_map(move |b| (0..cin).map(move |c| (a, b, c))))
                        {
                            let (iy, ix) = (oy * s as isize + ky as isize - py, ox * s as isize + kx as isize - px);
                            if (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix) {
                                let x = input[(iy as usize * w + ix as usize) * cin + ci] as f64;
                                sum += x * plan.weight[((ky * k + kx) * cin + ci) * n + c] as f64;
                            }
                        }
                        let want = act.apply_one(sum as f32);
                        assert!(
                            (y - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "{h}x{w} ({oy}, {ox}, {c}): {y} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
