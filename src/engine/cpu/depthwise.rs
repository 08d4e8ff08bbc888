//! Depthwise k×k convolution on one NHWC image, BatchNorm folded into
//! `weight`/`bias`, activation fused: vectorised across channels (contiguous
//! in NHWC), padding handled by clipping the tap ranges, never by copying.

use super::elem::Elem;
#[cfg(target_arch = "x86_64")]
use super::lanes::{act, act8, mask, Lanes};
use crate::model::plan::{Depthwise, Hw};

use std::ops::Range;

/// One output row of an `i`-sized input and `o`-sized output.
#[derive(Debug, Clone, Copy)]
struct Row {
    oy: usize,
    i: Hw,
    o: Hw,
}

/// Where a span reads and writes: `line0` is its first tap row's first
/// input pixel, `line_step` apart from row to row; `taps` the kernel rows
/// inside the image, `cols` the kernel columns (all but at a border); `dst`
/// its first output pixel.
#[cfg(target_arch = "x86_64")]
struct Span<T> {
    line0: *const T,
    line_step: usize,
    taps: Range<usize>,
    cols: Range<usize>,
    dst: *mut T,
}

/// Which part of the image a call sees: `input` starts at image row
/// `in_row0`, `out` holds output rows `rows`.
#[derive(Debug, Clone)]
struct Window {
    in_row0: usize,
    rows: Range<usize>,
}

// The plan's layer, run here: the engine adds its kernels to the plan's
// type (the plan itself knows no engine).
impl Depthwise {
    pub fn out_hw(&self, i: Hw) -> Hw {
        i.conv(self.kernel, self.stride, self.padding)
    }

    /// Zeros before an axis of `len` pixels.
    fn pad(&self, len: usize) -> usize {
        self.padding.begin(self.kernel, self.stride, len)
    }

    /// The taps of output coordinate `o` that land inside `0..len`.
    fn taps(&self, o: usize, len: usize) -> (usize, usize) {
        let start = (o * self.stride) as isize - self.pad(len) as isize;
        let lo = (-start).max(0) as usize;
        let hi = ((len as isize - start).min(self.kernel as isize)).max(0) as usize;
        (lo, hi)
    }

    /// Output columns whose taps all land inside the row (no clipping):
    /// the span kernels' columns; the borders go a pixel at a time.
    fn full_columns(&self, i: Hw, o: Hw) -> Range<usize> {
        let full = |ox: usize| self.taps(ox, i.w) == (0, self.kernel);
        let first = (0..o.w).find(|&ox| full(ox)).unwrap_or(o.w);
        first..(first..o.w).find(|&ox| !full(ox)).unwrap_or(o.w)
    }

    /// The input rows output rows `rows` read: the clipped tap rows of the
    /// first to those of the last.
    pub fn input_rows(&self, rows: Range<usize>, ih: usize) -> Range<usize> {
        let (first, last) = (rows.start, rows.end - 1);
        let start = first * self.stride + self.taps(first, ih).0 - self.pad(ih);
        let end = last * self.stride + self.taps(last, ih).1 - self.pad(ih);
        start..end
    }

    /// `input` is `[i.h][i.w][c]`, `out` is `[o.h][o.w][c]`; f32 arithmetic
    /// whatever `T` stores.
    pub fn run<T: Elem>(&self, input: &[T], i: Hw, out: &mut [T]) {
        self.run_rows(input, 0, i, 0..self.out_hw(i).h, out)
    }

    /// Output rows `rows` of an `i`-sized image into `out` (`[rows][o.w][c]`),
    /// from `input`, which holds the image's rows from `in_row0` on (at least
    /// [`Depthwise::input_rows`]): the fused block's band. Each output is
    /// computed as [`Depthwise::run`] computes it, bit for bit.
    pub fn run_rows<T: Elem>(&self, input: &[T], in_row0: usize, i: Hw, rows: Range<usize>, out: &mut [T]) {
        let o = self.out_hw(i);
        let c = self.channels;
        assert!(rows.end <= o.h && (rows.is_empty() || self.input_rows(rows.clone(), i.h).start >= in_row0));
        let need_in = if rows.is_empty() { 0 } else { self.input_rows(rows.clone(), i.h).end - in_row0 };
        assert!(input.len() >= need_in * i.w * c && out.len() >= rows.len() * o.w * c);
        let w = Window { in_row0, rows };
        #[cfg(target_arch = "x86_64")]
        if T::avx512() {
            use super::elem::{bf16, same, same_mut};
            // SAFETY: the CPU has the features `T::avx512` checks; every
            // index stays inside the shapes asserted above (tap ranges are
            // clipped). `same` only converts a slice to its own type.
            unsafe {
                if let (Some(x), Some(y)) = (same::<T, f32>(input), same_mut::<T, f32>(out)) {
                    return self.avx512_f32(x, i, o, w, y, true);
                }
                if let (Some(x), Some(y)) = (same::<T, bf16>(input), same_mut::<T, bf16>(out)) {
                    return self.avx512_bf16(x, i, o, w, y, true);
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        if crate::engine::simd::simd() >= crate::engine::simd::Simd::Avx2 {
            use super::elem::{same, same_mut};
            // SAFETY: the CPU has AVX2 and FMA; indices as above.
            unsafe {
                if let (Some(x), Some(y)) = (same::<T, f32>(input), same_mut::<T, f32>(out)) {
                    return self.avx2_f32(x, i, o, w, y);
                }
                return self.portable_avx2(input, i, o, w, out);
            }
        }
        self.run_portable(input, i, o, w, out);
    }

    /// The portable loops compiled for AVX2 (the channel loop vectorises).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn portable_avx2<T: Elem>(&self, input: &[T], i: Hw, o: Hw, w: Window, out: &mut [T]) {
        self.run_portable(input, i, o, w, out)
    }

    #[inline(always)]
    fn run_portable<T: Elem>(&self, input: &[T], i: Hw, o: Hw, win: Window, out: &mut [T]) {
        let mut acc = vec![0f32; self.channels];
        for oy in win.rows.clone() {
            for ox in 0..o.w {
                self.portable_pixel(input, &win, Row { oy, i, o }, out, ox, &mut acc);
            }
        }
    }

    /// One output pixel, a multiply and then an add per tap (as the
    /// compiler may not fuse them), taps row by row, then `kx` up.
    #[inline(always)]
    fn portable_pixel<T: Elem>(&self, input: &[T], win: &Window, row: Row, out: &mut [T], ox: usize, acc: &mut [f32]) {
        let (c, k, Row { oy, i, o }) = (self.channels, self.kernel, row);
        let (ky0, ky1) = self.taps(oy, i.h);
        let iy0 = oy * self.stride + ky0 - self.pad(i.h) - win.in_row0;
        let (kx0, kx1) = self.taps(ox, i.w);
        let ix0 = ox * self.stride + kx0 - self.pad(i.w);
        acc.copy_from_slice(&self.bias);
        for ky in ky0..ky1 {
            for kx in kx0..kx1 {
                let src = &input[((iy0 + ky - ky0) * i.w + ix0 + kx - kx0) * c..][..c];
                let wt = &self.weight[(ky * k + kx) * c..][..c];
                for ((d, s), w) in acc.iter_mut().zip(src).zip(wt) {
                    *d += s.to_f32() * w;
                }
            }
        }
        let dst = &mut out[((oy - win.rows.start) * o.w + ox) * c..][..c];
        for (d, &v) in dst.iter_mut().zip(acc.iter()) {
            *d = T::from_f32(self.act.apply_one(v));
        }
    }

    /// Where output `ox` of row `row.oy` and its neighbours read and write.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn span<T>(&self, input: &[T], win: &Window, row: Row, out: &mut [T], ox: usize) -> Span<T> {
        let (c, Row { oy, i, o }) = (self.channels, row);
        let (ky0, ky1) = self.taps(oy, i.h);
        let (kx0, kx1) = self.taps(ox, i.w);
        let (row0, col0) =
            (oy * self.stride + ky0 - self.pad(i.h) - win.in_row0, ox * self.stride + kx0 - self.pad(i.w));
        Span {
            line0: input.as_ptr().add((row0 * i.w + col0) * c),
            line_step: i.w * c,
            taps: ky0..ky1,
            cols: kx0..kx1,
            dst: out.as_mut_ptr().add(((oy - win.rows.start) * o.w + ox) * c),
        }
    }

    /// f32 on AVX2: the columns whose taps all land inside the row in spans
    /// of 4 outputs (the last of 1 to 3), each input pixel loaded once for
    /// every output it feeds; the borders a pixel at a time with their taps
    /// clipped. Every output adds its taps in the portable loop's order, but
    /// each as one fused multiply-add, as the AVX-512 kernels do (the
    /// portable loop rounds the product first): the separate multiply and
    /// add were twice the vector instructions for the same work, and the
    /// fused ones run the layers 1–19% faster on Zen 3 (one thread, a band
    /// of each of the two models' 9 kinds of depthwise layer; 56 × 56 × 144
    /// 3 × 3: 49–54 → 56–65 GF/s, benches/README). The borders and the
    /// short spans were the portable loop's, its sums in memory: at 7 × 7
    /// that was 3 of 7 columns under a 3 × 3 kernel and all 7 under a 5 × 5
    /// one.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_f32(&self, input: &[f32], i: Hw, o: Hw, win: Window, out: &mut [f32]) {
        // Spans of up to `N` outputs, `B` blocks of 8 channels at a time:
        // 4 × 2 (8 sums) everywhere but 5 × 5 at stride 2, whose 11 input
        // columns a tap row and 10 weights spilled the 16 registers; there
        // 6 × 1 (6 sums, 5 weights, 1 input), one thread: 56 × 56 × 144
        // 47.5 → 71.5 GF/s, 14 × 14 × 672 44 → 59 (benches/README); with
        // the fused multiply-adds, 8 × 1 and 6 × 1 measured no better. Either
        // way every output adds its taps in the same order: the same bits.
        match (self.kernel, self.stride) {
            (3, 1) => self.avx2_rows::<3, 1, 4, 2>(input, i, o, win, out),
            (3, 2) => self.avx2_rows::<3, 2, 4, 2>(input, i, o, win, out),
            (5, 1) => self.avx2_rows::<5, 1, 4, 2>(input, i, o, win, out),
            (5, 2) => self.avx2_rows::<5, 2, 6, 1>(input, i, o, win, out),
            _ => self.run_portable(input, i, o, win, out),
        }
    }

    /// [`Self::avx2_f32`] for a `K` × `K` kernel at stride `S`, in spans of
    /// up to `N` outputs, `B` blocks of channels at a time.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn avx2_rows<const K: usize, const S: usize, const N: usize, const B: usize>(
        &self,
        input: &[f32],
        i: Hw,
        o: Hw,
        win: Window,
        out: &mut [f32],
    ) {
        let full = self.full_columns(i, o);
        for oy in win.rows.clone() {
            let row = Row { oy, i, o };
            let mut ox = 0;
            while ox < o.w {
                let n = if full.contains(&ox) { (full.end - ox).min(N) } else { 1 };
                match n {
                    6 => self.avx2_span::<K, S, 6, B>(input, &win, row, out, ox),
                    5 => self.avx2_span::<K, S, 5, B>(input, &win, row, out, ox),
                    4 => self.avx2_span::<K, S, 4, B>(input, &win, row, out, ox),
                    3 => self.avx2_span::<K, S, 3, B>(input, &win, row, out, ox),
                    2 => self.avx2_span::<K, S, 2, B>(input, &win, row, out, ox),
                    _ => self.avx2_span::<K, S, 1, B>(input, &win, row, out, ox),
                }
                ox += n;
            }
        }
    }

    /// `G` neighbouring outputs of one row, as [`Self::avx512_span`] with 8
    /// lanes, `B` (1 or 2) blocks of 8 channels at a time (at `B` = 2, 8
    /// sums, 2 × `K` weights, one input: 16 registers at `K` = 3; a sum's
    /// every add waits on its last, and 4 sums left the adds idle: the
    /// 56 × 56 × 144 3 × 3 layer 34 → 40 GF/s a thread); a border output (`G` = 1) has its taps
    /// clipped to the image. Whole blocks of
    /// 8 channels take plain loads and stores, only the last partial block
    /// masked ones: on Zen 3 a `vmaskmovps` costs so much that the masked
    /// loads everywhere held the depthwise layers to 15 GF/s a thread, 23%
    /// of MobileNetV2's time (per-layer timing, benches/README).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn avx2_span<const K: usize, const S: usize, const G: usize, const B: usize>(
        &self,
        input: &[f32],
        win: &Window,
        row: Row,
        out: &mut [f32],
        ox: usize,
    ) {
        let (c, at) = (self.channels, self.span(input, win, row, out, ox));
        let (pairs, whole) = (if B == 2 { c / 16 * 16 } else { 0 }, c / 8 * 8);
        for c0 in (0..pairs).step_by(16) {
            self.avx2_block::<K, S, G, 2, false>(&at, c0);
        }
        for c0 in (pairs..whole).step_by(8) {
            self.avx2_block::<K, S, G, 1, false>(&at, c0);
        }
        if whole < c {
            self.avx2_block::<K, S, G, 1, true>(&at, whole);
        }
    }

    /// Channels `c0..c0 + 8 B` (fewer where `MASKED`, with `B` = 1) of a span.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn avx2_block<const K: usize, const S: usize, const G: usize, const B: usize, const MASKED: bool>(
        &self,
        at: &Span<f32>,
        c0: usize,
    ) {
        use std::arch::x86_64::*;
        let c = self.channels;
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        // Lanes below `c - c0` (all 8 but in the last block).
        let m = _mm256_cmpgt_epi32(_mm256_set1_epi32((c - c0).min(8) as i32), lanes);
        let load = |p: *const f32| if MASKED { _mm256_maskload_ps(p, m) } else { _mm256_loadu_ps(p) };
        let (wp, bp) = (self.weight.as_ptr().add(c0), self.bias.as_ptr().add(c0));
        let mut acc: [[__m256; B]; G] = [std::array::from_fn(|b| load(bp.add(8 * b))); G];
        for ky in at.taps.clone() {
            let line = at.line0.add((ky - at.taps.start) * at.line_step + c0);
            if G == 1 {
                // One output, its kernel columns perhaps clipped.
                for (j, kx) in at.cols.clone().enumerate() {
                    for (b, acc) in acc[0].iter_mut().enumerate() {
                        let (x, w) = (load(line.add(j * c + 8 * b)), load(wp.add((ky * K + kx) * c + 8 * b)));
                        *acc = _mm256_fmadd_ps(x, w, *acc);
                    }
                }
                continue;
            }
            let w: [[__m256; K]; B] =
                std::array::from_fn(|b| std::array::from_fn(|kx| load(wp.add((ky * K + kx) * c + 8 * b))));
            for j in 0..(G - 1) * S + K {
                for b in 0..B {
                    let x = load(line.add(j * c + 8 * b));
                    for (g, acc) in acc.iter_mut().enumerate() {
                        if j >= g * S && j - g * S < K {
                            acc[b] = _mm256_fmadd_ps(x, w[b][j - g * S], acc[b]);
                        }
                    }
                }
            }
        }
        for (g, acc) in acc.iter().enumerate() {
            for (b, acc) in acc.iter().enumerate() {
                let (p, v) = (at.dst.add(g * c + c0 + 8 * b), act8(*acc, self.act));
                if MASKED {
                    _mm256_maskstore_ps(p, m, v)
                } else {
                    _mm256_storeu_ps(p, v)
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_f32(&self, input: &[f32], i: Hw, o: Hw, w: Window, out: &mut [f32], spans: bool) {
        self.avx512_body(input, i, o, w, out, spans)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    unsafe fn avx512_bf16(
        &self,
        input: &[super::elem::bf16],
        i: Hw,
        o: Hw,
        w: Window,
        out: &mut [super::elem::bf16],
        spans: bool,
    ) {
        self.avx512_body(input, i, o, w, out, spans)
    }

    /// Inlined into the entry points above, which carry the CPU features
    /// (closures inside inherit them: the blocks' `array::from_fn`).
    /// `spans` false: a pixel at a time everywhere (the tests' reference).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn avx512_body<T: Lanes>(&self, input: &[T], i: Hw, o: Hw, win: Window, out: &mut [T], spans: bool) {
        // The common shapes get the span kernels with the taps unrolled;
        // any other shape, one pixel at a time.
        match (self.kernel, self.stride) {
            _ if !spans => {}
            (3, 1) => return self.avx512_rows::<T, 3, 1>(input, i, o, win, out),
            (3, 2) => return self.avx512_rows::<T, 3, 2>(input, i, o, win, out),
            (5, 1) => return self.avx512_rows::<T, 5, 1>(input, i, o, win, out),
            (5, 2) => return self.avx512_rows::<T, 5, 2>(input, i, o, win, out),
            _ => {}
        }
        for oy in win.rows.clone() {
            for ox in 0..o.w {
                self.avx512_pixel(input, i, o, &win, out, oy, ox);
            }
        }
    }

    /// A `K` × `K` kernel at stride `S`: the columns whose taps all land
    /// inside the row in spans of 8 outputs (at stride 1), then 4, then the
    /// last 1 to 3 in one span; each border output alone with its taps
    /// clipped. At stride 2 a span of 8 reads 17 or 19 input pixels a tap
    /// row and ran at under half the speed of spans of 4 on an Emerald
    /// Rapids (one thread, a band of rows: 112 × 112 × 96 3 × 3 15.5 → 34.0
    /// GF/s, 56 × 56 × 144 5 × 5 20.7 → 46.9; benches/README). The short
    /// spans and the borders take 2 or 4 blocks of 16 channels at a time:
    /// alone, a block's one sum waits on its last add at every tap, and the
    /// 7 × 7 layers, whose columns are all borders or short spans, ran
    /// slower than the AVX2 kernel's (7 × 7 × 1152 5 × 5: 19–23 against
    /// 30–43 GF/s a thread).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn avx512_rows<T: Lanes, const K: usize, const S: usize>(
        &self,
        input: &[T],
        i: Hw,
        o: Hw,
        win: Window,
        out: &mut [T],
    ) {
        let full = self.full_columns(i, o);
        for oy in win.rows.clone() {
            let row = Row { oy, i, o };
            let mut ox = 0;
            while ox < o.w {
                let n = if full.contains(&ox) { full.end - ox } else { 0 };
                ox += match n {
                    _ if S == 1 && n >= 8 => self.avx512_span::<T, K, S, 8, 1>(input, &win, row, out, ox),
                    4.. => self.avx512_span::<T, K, S, 4, 1>(input, &win, row, out, ox),
                    3 => self.avx512_span::<T, K, S, 3, 2>(input, &win, row, out, ox),
                    2 => self.avx512_span::<T, K, S, 2, 2>(input, &win, row, out, ox),
                    _ => self.avx512_span::<T, K, S, 1, 4>(input, &win, row, out, ox),
                };
            }
        }
    }

    /// `G` neighbouring outputs of row `row.oy` from column `ox` on (a
    /// border output when `G` = 1, its taps clipped), `B` blocks of 16
    /// channels at a time, then the channels left one block at a time (the
    /// last masked); returns `G`.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn avx512_span<T: Lanes, const K: usize, const S: usize, const G: usize, const B: usize>(
        &self,
        input: &[T],
        win: &Window,
        row: Row,
        out: &mut [T],
        ox: usize,
    ) -> usize {
        let (c, at) = (self.channels, self.span(input, win, row, out, ox));
        let groups = c / (16 * B) * (16 * B);
        for c0 in (0..groups).step_by(16 * B) {
            self.avx512_block::<T, K, S, G, B>(&at, c0);
        }
        for c0 in (groups..c).step_by(16) {
            self.avx512_block::<T, K, S, G, 1>(&at, c0);
        }
        G
    }

    /// Channels `c0..c0 + 16 B` (fewer in the last block) of a span. Input
    /// column `j` of the span feeds output `g` through tap `kx = j - g·S`:
    /// each is loaded once per tap row and used by all the outputs it feeds
    /// (`(G-1)·S + K` loads for `G·K` multiply-adds, where a pixel at a time
    /// loads `G·K`). Every output still adds its taps in
    /// [`Depthwise::run_portable`]'s order (row by row, then `kx` up), so the
    /// results are the same bits as a pixel at a time.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn avx512_block<T: Lanes, const K: usize, const S: usize, const G: usize, const B: usize>(
        &self,
        at: &Span<T>,
        c0: usize,
    ) {
        use std::arch::x86_64::*;
        let c = self.channels;
        let m: [__mmask16; B] = std::array::from_fn(|b| mask(c - c0 - 16 * b));
        let (wp, bp) = (self.weight.as_ptr().add(c0), self.bias.as_ptr().add(c0));
        let mut acc: [[__m512; B]; G] = [std::array::from_fn(|b| _mm512_maskz_loadu_ps(m[b], bp.add(16 * b))); G];
        for ky in at.taps.clone() {
            let line = at.line0.add((ky - at.taps.start) * at.line_step + c0);
            if G == 1 {
                // One output, its kernel columns perhaps clipped.
                for (j, kx) in at.cols.clone().enumerate() {
                    for (b, acc) in acc[0].iter_mut().enumerate() {
                        let x = T::load16(line.add(j * c + 16 * b), m[b]);
                        let w = _mm512_maskz_loadu_ps(m[b], wp.add((ky * K + kx) * c + 16 * b));
                        *acc = _mm512_fmadd_ps(x, w, *acc);
                    }
                }
                continue;
            }
            let w: [[__m512; K]; B] = std::array::from_fn(|b| {
                std::array::from_fn(|kx| _mm512_maskz_loadu_ps(m[b], wp.add((ky * K + kx) * c + 16 * b)))
            });
            for j in 0..(G - 1) * S + K {
                for b in 0..B {
                    let x = T::load16(line.add(j * c + 16 * b), m[b]);
                    for (g, acc) in acc.iter_mut().enumerate() {
                        if j >= g * S && j - g * S < K {
                            acc[b] = _mm512_fmadd_ps(x, w[b][j - g * S], acc[b]);
                        }
                    }
                }
            }
        }
        for (g, acc) in acc.iter().enumerate() {
            for (b, acc) in acc.iter().enumerate() {
                T::store16(at.dst.add(g * c + c0 + 16 * b), m[b], act(*acc, self.act));
            }
        }
    }

    /// One output pixel with clipped taps (the borders).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn avx512_pixel<T: Lanes>(
        &self,
        input: &[T],
        i: Hw,
        o: Hw,
        win: &Window,
        out: &mut [T],
        oy: usize,
        ox: usize,
    ) {
        use std::arch::x86_64::*;
        let (c, k, s) = (self.channels, self.kernel, self.stride);
        let (inp, outp) = (input.as_ptr(), out.as_mut_ptr());
        let (wp, bp) = (self.weight.as_ptr(), self.bias.as_ptr());
        let (ky0, ky1) = self.taps(oy, i.h);
        let (kx0, kx1) = self.taps(ox, i.w);
        let (iy0, ix0) = (oy * s + ky0 - self.pad(i.h) - win.in_row0, ox * s + kx0 - self.pad(i.w));
        let out_row = oy - win.rows.start;
        for c0 in (0..c).step_by(16) {
            let m = mask(c - c0);
            let mut acc = _mm512_maskz_loadu_ps(m, bp.add(c0));
            for ky in ky0..ky1 {
                for kx in kx0..kx1 {
                    let x = T::load16(inp.add(((iy0 + ky - ky0) * i.w + ix0 + kx - kx0) * c + c0), m);
                    let w = _mm512_maskz_loadu_ps(m, wp.add((ky * k + kx) * c + c0));
                    acc = _mm512_fmadd_ps(x, w, acc);
                }
            }
            T::store16(outp.add((out_row * o.w + ox) * c + c0), m, act(acc, self.act));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::plan::{Act, Padding};

    #[test]
    fn avx512_and_portable_agree_with_a_direct_sum() {
        let mut seed = 7u32;
        let mut rnd = move || {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        for &(h, w, c, k, s) in &[
            (7, 9, 20, 3, 1),
            (8, 8, 16, 3, 2),
            (11, 13, 48, 5, 1),
            (9, 10, 3, 5, 2),
            (1, 1, 16, 3, 1),
            // Rows wide enough for spans of 8 and of 4 and a remainder.
            (3, 31, 40, 3, 1),
            (4, 29, 17, 3, 2),
            (3, 27, 24, 5, 1),
            (5, 41, 33, 5, 2),
            // Short spans of 2 and 1, and blocks of 2 or 4 × 16 channels
            // with a masked block after them.
            (2, 16, 40, 3, 1),
            (7, 7, 100, 5, 1),
            (7, 7, 72, 3, 1),
            (6, 9, 70, 5, 2),
        ] {
            let symmetric = Padding::Symmetric(((s - 1) + (k - 1)) / 2);
            for (act, padding) in [(Act::None, symmetric), (Act::Relu6, symmetric), (Act::Relu6, Padding::Same)] {
                let (pad_y, pad_x) = (padding.begin(k, s, h), padding.begin(k, s, w));
                let dw = Depthwise {
                    channels: c,
                    kernel: k,
                    stride: s,
                    padding,
                    act,
                    weight: (0..k * k * c).map(|_| rnd()).collect(),
                    bias: (0..c).map(|_| rnd()).collect(),
                };
                let i = Hw { h, w };
                let o = dw.out_hw(i);
                let input: Vec<f32> = (0..h * w * c).map(|_| rnd() * 10.0).collect();
                let mut want = vec![0f32; o.h * o.w * c];
                // And in f32 with a fused multiply-add per tap, taps row by
                // row: what the AVX2 spans must give bit for bit.
                let mut fused = vec![0f32; o.h * o.w * c];
                for oy in 0..o.h {
                    for ox in 0..o.w {
                        for ch in 0..c {
                            let mut acc = dw.bias[ch] as f64;
                            let mut acc32 = dw.bias[ch];
                            for ky in 0..k {
                                for kx in 0..k {
                                    let (iy, ix) = (
                                        (oy * s + ky) as isize - pad_y as isize,
                                        (ox * s + kx) as isize - pad_x as isize,
                                    );
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                        let (x, wt) = (
                                            input[((iy as usize * w) + ix as usize) * c + ch],
                                            dw.weight[(ky * k + kx) * c + ch],
                                        );
                                        acc += x as f64 * wt as f64;
                                        acc32 = x.mul_add(wt, acc32);
                                    }
                                }
                            }
                            want[(oy * o.w + ox) * c + ch] = act.apply_one(acc as f32);
                            fused[(oy * o.w + ox) * c + ch] = act.apply_one(acc32);
                        }
                    }
                }
                let mut got = vec![f32::NAN; want.len() + 1];
                dw.run(&input, i, &mut got);
                let mut portable = vec![f32::NAN; want.len() + 1];
                dw.run_portable(&input, i, o, Window { in_row0: 0, rows: 0..o.h }, &mut portable);
                same_bits_as_a_pixel_at_a_time(&dw, &input, i, &got);
                // AVX2's spans: the fused sums exactly (== as floats: a ReLU
                // may give 0 where the loop gives -0).
                #[cfg(target_arch = "x86_64")]
                if crate::engine::simd::simd() >= crate::engine::simd::Simd::Avx2 {
                    let mut avx2 = vec![f32::NAN; want.len() + 1];
                    // SAFETY: the CPU has AVX2; shapes as `run_rows` checks.
                    unsafe { dw.avx2_f32(&input, i, o, Window { in_row0: 0, rows: 0..o.h }, &mut avx2) };
                    assert!(avx2[want.len()].is_nan(), "wrote past the end");
                    assert!(avx2.iter().zip(&fused).all(|(x, y)| x == y), "{h}x{w}x{c} k{k} s{s} AVX2");
                }
                for out in [&got, &portable] {
                    assert!(out[want.len()].is_nan(), "wrote past the end");
                    for (x, y) in out.iter().zip(&want) {
                        assert!(
                            (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                            "{h}x{w}x{c} k{k} s{s} {padding:?}: {x} vs {y}"
                        );
                    }
                }
                // bf16 storage, f32 arithmetic: the same within the input's
                // and the output's rounding (2⁻⁸ relative each, plus the sum
                // of |terms| for cancellation).
                use crate::engine::cpu::elem::bf16;
                let input16: Vec<bf16> = input.iter().map(|&x| bf16::from_f32(x)).collect();
                let nan = bf16::from_f32(f32::NAN);
                let (mut got16, mut portable16) = (vec![nan; want.len() + 1], vec![nan; want.len() + 1]);
                dw.run(&input16, i, &mut got16);
                dw.run_portable(&input16, i, o, Window { in_row0: 0, rows: 0..o.h }, &mut portable16);
                same_bits_as_a_pixel_at_a_time(&dw, &input16, i, &got16);
                let scale = input.iter().fold(0f32, |m, x| m.max(x.abs())) * k as f32 * k as f32;
                for out in [&got16, &portable16] {
                    assert!(out[want.len()].is_nan(), "wrote past the end");
                    for (x, y) in out.iter().zip(&want) {
                        let x = x.to_f32();
                        assert!((x - y).abs() <= 4e-3 * (y.abs() + scale), "bf16 {h}x{w}x{c} k{k} s{s}: {x} vs {y}");
                    }
                }
            }
        }
    }

    /// The AVX-512 spans give the pixel-at-a-time kernel's bits (the
    /// spans' claim); nothing to compare without AVX-512.
    fn same_bits_as_a_pixel_at_a_time<T: Elem>(dw: &Depthwise, input: &[T], i: Hw, got: &[T]) {
        #[cfg(target_arch = "x86_64")]
        if T::avx512() {
            use crate::engine::cpu::elem::{bf16, same, same_mut};
            let o = dw.out_hw(i);
            let win = Window { in_row0: 0, rows: 0..o.h };
            let mut pixels = vec![T::from_f32(f32::NAN); got.len()];
            // SAFETY: as in `run_rows`, whose checks these shapes pass.
            unsafe {
                if let (Some(x), Some(y)) = (same::<T, f32>(input), same_mut::<T, f32>(&mut pixels)) {
                    dw.avx512_f32(x, i, o, win.clone(), y, false);
                }
                if let (Some(x), Some(y)) = (same::<T, bf16>(input), same_mut::<T, bf16>(&mut pixels)) {
                    dw.avx512_bf16(x, i, o, win, y, false);
                }
            }
            let bits = |v: &[T]| v.iter().map(|x| x.to_f32().to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&got[..o.h * o.w * dw.channels]),
                bits(&pixels[..o.h * o.w * dw.channels]),
                "{i:?} k{} s{}",
                dw.kernel,
                dw.stride
            );
        }
    }
}
