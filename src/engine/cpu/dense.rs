//! A dense (k×k, all-channel) convolution of the plan, weights packed for
//! [`gemm`]: a 1×1 convolution multiplies the NHWC rows as they are, a
//! larger one multiplies im2col tiles built a few rows at a time.

use super::elem::Elem;
use super::gemm::{self, Packed};
use crate::model::plan::{self, Act, Hw, Padding};

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
    let n = d.weight.n;
    if d.is_plain_gemm() {
        gemm::gemm(input, cin, o.h * o.w, &d.weight, d.act, skip, out);
        return;
    }
    let kdim = d.weight.k;
    need(cols, COL_ROWS * kdim);
    let total = o.h * o.w;
    for p0 in (0..total).step_by(COL_ROWS) {
        let rows = (total - p0).min(COL_ROWS);
        im2col(d, input, i, o, cin, p0, rows, &mut cols[..rows * kdim]);
        let skip = skip.map(|s| &s[p0 * n..(p0 + rows) * n]);
        gemm::gemm(&cols[..rows * kdim], kdim, rows, &d.weight, d.act, skip, &mut out[p0 * n..(p0 + rows) * n]);
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
