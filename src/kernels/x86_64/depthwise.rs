//! The depthwise convolution's planes of stride and dilation 1 both ways
//! (the models' commonest: MobileCLIP's 3 × 3 and 7 × 7 mixers) on
//! AVX-512, read straight from the unpadded channel: blocks of output rows
//! whose sums stay in registers, taking the block's input rows in turn.
//! Each input row's one or two vectors of [`CHUNK`] columns and the next
//! `kw − 1` are read once
//! (lanes outside the image masked to zero, rows outside it zero: the
//! padding [`pad_plane`] would write), each tap's shifted window made by a
//! permute (no load across a cache line per tap), and added into the sums
//! of every output row that reads that row. A twin of [`pad_plane`] then
//! [`plain::plane`]`::<true>`: each sum takes its taps in the same order
//! (`ky`, then `kx`), one rounding each, so the results are the same bit
//! for bit (tested).

use std::arch::x86_64::*;

use crate::kernels::depthwise::CHUNK;
#[cfg(doc)]
use crate::kernels::depthwise::{pad_plane, plain};

/// Whether [`avx512`] runs this geometry: stride 1 or 2 both ways,
/// dilation 1, 3, 5 or 7 tap rows, and at most 16 taps across.
pub fn runs(kernel: [usize; 2], stride: [usize; 2], dilation: [usize; 2]) -> bool {
    (stride == [1, 1] || stride == [2, 2])
        && dilation == [1, 1]
        && matches!(kernel[0], 3 | 5 | 7)
        && (1..=CHUNK).contains(&kernel[1])
}

/// [`plain::plane`]`::<true>` of the plane [`pad_plane`] makes of `x`
/// (`h × w`, one channel) with `pad` (rows and columns before the
/// image), for a geometry that [`runs`] (stride 1 or 2 both ways,
/// dilation 1): `out` (`oh × ow`).
///
/// # Panics
/// When the geometry is not one that [`runs`], `x` is not `h × w` values,
/// or `k` holds fewer than `kh · kw` taps (checked once, before any read).
///
/// # Safety
/// The CPU has AVX-512 F.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn avx512(
    x: &[f32],
    [h, w]: [usize; 2],
    pad: [usize; 2],
    k: &[f32],
    kernel: [usize; 2],
    stride: [usize; 2],
    bias: f32,
    ow: usize,
    out: &mut [f32],
) {
    assert!(runs(kernel, stride, [1, 1]));
    assert!(
        h.checked_mul(w) == Some(x.len()) && kernel[0] * kernel[1] <= k.len(),
        "a depthwise plane past its input"
    );
    if ow == 0 || out.len() < ow {
        return;
    }
    let oh = out.len() / ow;
    let g = Plane {
        x,
        h,
        w,
        pad,
        k,
        kernel,
        bias,
        ow,
    };
    // SAFETY: AVX-512 F (the caller's); every read is masked to the image
    // (asserted within `x`) or a tap (asserted within `k`); the kernel has
    // `KH` tap rows.
    unsafe {
        match (kernel[0], stride[0]) {
            (3, 1) => blocks::<3>(&g, oh, out),
            (5, 1) => blocks::<5>(&g, oh, out),
            (_, 1) => blocks::<7>(&g, oh, out),
            (3, _) => strided_blocks::<3>(&g, oh, out),
            (5, _) => strided_blocks::<5>(&g, oh, out),
            _ => strided_blocks::<7>(&g, oh, out),
        }
    }
}

/// Every output row of the plane in blocks of 8 rows (then 4, 2 and 1),
/// each by two vectors of columns where the row is wider than one (16
/// sums in registers), else by one.
///
/// # Safety
/// As [`columns`] for rows `0..oh`.
#[target_feature(enable = "avx512f")]
unsafe fn blocks<const KH: usize>(g: &Plane<'_>, oh: usize, out: &mut [f32]) {
    let ow = g.ow;
    let mut oy = 0;
    if ow > CHUNK {
        while oy + 8 <= oh {
            // SAFETY: the caller's, for rows oy..oy + 8 ≤ oh.
            unsafe { block::<8, 2, KH>(g, oy, &mut out[oy * ow..(oy + 8) * ow]) };
            oy += 8;
        }
        if oy + 4 <= oh {
            // SAFETY: the caller's, for rows oy..oy + 4 ≤ oh.
            unsafe { block::<4, 2, KH>(g, oy, &mut out[oy * ow..(oy + 4) * ow]) };
            oy += 4;
        }
    } else {
        while oy + 8 <= oh {
            // SAFETY: the caller's, for rows oy..oy + 8 ≤ oh.
            unsafe { block::<8, 1, KH>(g, oy, &mut out[oy * ow..(oy + 8) * ow]) };
            oy += 8;
        }
        if oy + 4 <= oh {
            // SAFETY: the caller's, for rows oy..oy + 4 ≤ oh.
            unsafe { block::<4, 1, KH>(g, oy, &mut out[oy * ow..(oy + 4) * ow]) };
            oy += 4;
        }
    }
    if oy + 2 <= oh {
        // SAFETY: the caller's, for rows oy..oy + 2 ≤ oh.
        unsafe { block::<2, 1, KH>(g, oy, &mut out[oy * ow..(oy + 2) * ow]) };
        oy += 2;
    }
    if oy < oh {
        // SAFETY: the caller's, for rows oy..oy + 1 ≤ oh.
        unsafe { block::<1, 1, KH>(g, oy, &mut out[oy * ow..(oy + 1) * ow]) };
    }
}

/// A plane's input and geometry, as [`avx512`] takes them.
struct Plane<'a> {
    x: &'a [f32],
    h: usize,
    w: usize,
    pad: [usize; 2],
    k: &'a [f32],
    kernel: [usize; 2],
    bias: f32,
    ow: usize,
}

impl Plane<'_> {
    /// The lanes of a vector of padded columns `at..at + 16` that lie
    /// inside the image (padded columns `px..px + w`).
    fn inside(&self, at: usize) -> __mmask16 {
        let px = self.pad[1];
        let lo = px.saturating_sub(at).min(CHUNK);
        let hi = self.w.saturating_add(px).saturating_sub(at).min(CHUNK);
        (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as __mmask16
    }
}

/// Output columns `col..min(col + 16, ow)` of the row starting at `row` of
/// `out` from `v`'s first lanes.
#[target_feature(enable = "avx512f")]
#[inline]
fn store(v: __m512, out: &mut [f32], row: usize, col: usize, ow: usize) {
    let n = ow.saturating_sub(col).min(CHUNK);
    let at = row + col;
    assert!(at + n <= out.len());
    let keep = ((1u32 << n) - 1) as __mmask16;
    // SAFETY: lanes under `keep` are values at..at + n of `out`.
    unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add(at), keep, v) };
}

/// `$row!(r)` for each of the 14 input rows a block may take (`r` a
/// constant in each copy).
macro_rules! each_row {
    ($row:ident) => {
        $row!(0);
        $row!(1);
        $row!(2);
        $row!(3);
        $row!(4);
        $row!(5);
        $row!(6);
        $row!(7);
        $row!(8);
        $row!(9);
        $row!(10);
        $row!(11);
        $row!(12);
        $row!(13);
    };
}

/// Output rows `oy..oy + R` (`out`: `R × ow`): `V` vectors of columns at
/// a time while all `V` start inside the row, one at a time after that.
///
/// # Safety
/// As [`columns`].
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn block<const R: usize, const V: usize, const KH: usize>(
    g: &Plane<'_>,
    oy: usize,
    out: &mut [f32],
) {
    // SAFETY: the caller's.
    unsafe {
        let c0 = columns::<R, V, KH>(g, oy, out, 0);
        if V > 1 {
            columns::<R, 1, KH>(g, oy, out, c0);
        }
    }
}

/// Output rows `oy..oy + R` (`out`: `R × ow`) of a kernel of `KH` tap
/// rows, from column `c0`, `V` vectors of [`CHUNK`] columns at a time
/// while all `V` start before `ow`; returns the first column left. Padded
/// rows `oy + r` (`r < R + KH − 1`) are taken in turn, each feeding the
/// sums of the output rows `i` with `0 ≤ r − i < KH` at tap row `r − i`
/// (a range known where it is compiled: `r` is a constant of each copy
/// of the row's code).
///
/// # Safety
/// AVX-512 F; `g.kernel[0] == KH`; `g.x` holds `h × w` values and `g.k`
/// the `kh · kw` taps.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn columns<const R: usize, const V: usize, const KH: usize>(
    g: &Plane<'_>,
    oy: usize,
    out: &mut [f32],
    mut c0: usize,
) -> usize {
    let kw = g.kernel[1];
    let ow = g.ow;
    debug_assert_eq!(g.kernel[0], KH);
    // The block's input rows are the 14 rows spelled out below.
    const { assert!(R + KH - 1 <= 14) };
    // Lanes of the vector past the last one a window starts in (`kw − 1`
    // of them): only those are read.
    let reach = ((1u32 << (kw - 1)) - 1) as __mmask16;
    let first = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let one = _mm512_set1_epi32(1);
    let [py, px] = g.pad;
    while c0 + (V - 1) * CHUNK < ow {
        // Vector c holds padded columns c0 + 16c.., image columns c0 + 16c
        // − px..: its lanes inside the image (the others read as zeros).
        let mut inside = [0 as __mmask16; 3];
        for (c, m) in inside.iter_mut().enumerate().take(V + 1) {
            *m = g.inside(c0 + c * CHUNK);
        }
        inside[V] &= reach;
        let mut acc = [[_mm512_set1_ps(g.bias); V]; R];
        // Padded row oy + $r: its columns c0.. (V vectors and the `kw − 1`
        // after them) read once, each tap's window made by a permute and
        // added into the sums of rows lo..=hi.
        macro_rules! row {
            ($r:literal) => {
                if $r < R + KH - 1 {
                    let mut win = [_mm512_setzero_ps(); 3];
                    // Padded row oy + r: image row oy + r − py where inside
                    // it, else zeros.
                    if let Some(iy) = (oy + $r).checked_sub(py).filter(|&iy| iy < g.h) {
                        let row = g.x[iy * g.w..].as_ptr();
                        for (c, v) in win.iter_mut().enumerate().take(V + 1) {
                            // SAFETY: only the lanes under `inside[c]` are
                            // read, image columns 0..w of row iy (within
                            // `x`: the caller's); masked lanes are neither
                            // read nor faulted on (their addresses are
                            // only computed, wrapping).
                            *v = unsafe {
                                _mm512_maskz_loadu_ps(
                                    inside[c],
                                    row.wrapping_add(c0 + c * CHUNK).wrapping_sub(px),
                                )
                            };
                        }
                    }
                    let (lo, hi) = (
                        ($r + 1usize).saturating_sub(KH),
                        if $r < R { $r } else { R - 1 },
                    );
                    let mut idx = first;
                    for kx in 0..kw {
                        let mut v = [_mm512_setzero_ps(); V];
                        for c in 0..V {
                            v[c] = _mm512_permutex2var_ps(win[c], idx, win[c + 1]);
                        }
                        for i in lo..=hi {
                            // SAFETY: tap kx of tap row r − i < KH, within
                            // `g.k` (the caller's).
                            let w =
                                _mm512_set1_ps(unsafe { *g.k.get_unchecked(($r - i) * kw + kx) });
                            for c in 0..V {
                                acc[i][c] = _mm512_fmadd_ps(w, v[c], acc[i][c]);
                            }
                        }
                        idx = _mm512_add_epi32(idx, one);
                    }
                }
            };
        }
        each_row!(row);
        for c in 0..V {
            for (i, acc) in acc.iter().enumerate() {
                store(acc[c], out, i * ow, c0 + c * CHUNK, ow);
            }
        }
        c0 += V * CHUNK;
    }
    c0
}

/// Every output row of a plane of stride 2 both ways, in blocks of 4, 2
/// and 1 rows.
///
/// # Safety
/// As [`strided`] for rows `0..oh`.
#[target_feature(enable = "avx512f")]
unsafe fn strided_blocks<const KH: usize>(g: &Plane<'_>, oh: usize, out: &mut [f32]) {
    let ow = g.ow;
    let mut oy = 0;
    while oy + 4 <= oh {
        // SAFETY: the caller's, for rows oy..oy + 4 ≤ oh.
        unsafe { strided::<4, KH>(g, oy, &mut out[oy * ow..(oy + 4) * ow]) };
        oy += 4;
    }
    if oy + 2 <= oh {
        // SAFETY: the caller's, for rows oy..oy + 2 ≤ oh.
        unsafe { strided::<2, KH>(g, oy, &mut out[oy * ow..(oy + 2) * ow]) };
        oy += 2;
    }
    if oy < oh {
        // SAFETY: the caller's, for rows oy..oy + 1 ≤ oh.
        unsafe { strided::<1, KH>(g, oy, &mut out[oy * ow..(oy + 1) * ow]) };
    }
}

/// Output rows `oy..oy + R` (`out`: `R × ow`) of a plane of stride 2 both
/// ways and `KH` tap rows, [`CHUNK`] columns at a time: padded rows
/// `2·oy + r` (`r < 2(R − 1) + KH`) in turn, each feeding the output rows
/// `i` with `0 ≤ r − 2i < KH` at tap row `r − 2i`. A row's 48 columns from
/// `2·c0` (three vectors, lanes outside the image masked to zero) are
/// split once into their even and odd columns; tap `kx`'s window (columns
/// `2·ox + kx`) is then the even or odd columns from `kx / 2` on, made by
/// a permute.
///
/// # Safety
/// AVX-512 F; `g.kernel[0] == KH`; `g.x` holds `h × w` values and `g.k`
/// the `kh · kw` taps.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn strided<const R: usize, const KH: usize>(g: &Plane<'_>, oy: usize, out: &mut [f32]) {
    let kw = g.kernel[1];
    let ow = g.ow;
    debug_assert_eq!(g.kernel[0], KH);
    // The block's input rows are the 14 rows spelled out below.
    const { assert!(2 * (R - 1) + KH <= 14) };
    // Columns 2·c0 + 32.. that a window reaches (tap kw − 1 of output 15:
    // 2·15 + kw − 1): only those lanes of the third vector are read.
    let reach = (1u32 << kw.saturating_sub(2)).wrapping_sub(1) as __mmask16;
    let first = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let one = _mm512_set1_epi32(1);
    let [py, px] = g.pad;
    let mut c0 = 0;
    while c0 < ow {
        // Vector c holds padded columns 2·c0 + 16c..: its lanes inside
        // the image (the others read as zeros).
        let mut inside = [0 as __mmask16; 3];
        for (c, m) in inside.iter_mut().enumerate() {
            *m = g.inside(2 * c0 + c * CHUNK);
        }
        inside[2] &= reach;
        let mut acc = [_mm512_set1_ps(g.bias); R];
        macro_rules! row {
            ($r:literal) => {
                if $r < 2 * (R - 1) + KH {
                    let mut xs = [_mm512_setzero_ps(); 3];
                    // Padded row 2·oy + r: image row 2·oy + r − py where
                    // inside it, else zeros.
                    if let Some(iy) = (2 * oy + $r).checked_sub(py).filter(|&iy| iy < g.h) {
                        let row = g.x[iy * g.w..].as_ptr();
                        for (c, v) in xs.iter_mut().enumerate() {
                            // SAFETY: only the lanes under `inside[c]` are
                            // read, image columns 0..w of row iy (within
                            // `x`: the caller's); masked lanes are neither
                            // read nor faulted on (their addresses are
                            // only computed, wrapping).
                            *v = unsafe {
                                _mm512_maskz_loadu_ps(
                                    inside[c],
                                    row.wrapping_add(2 * c0 + c * CHUNK).wrapping_sub(px),
                                )
                            };
                        }
                    }
                    // Even and odd columns: 16 from the first two vectors,
                    // 8 from the third (its lanes 0..8 of each).
                    let evens = [
                        _mm512_permutex2var_ps(xs[0], even, xs[1]),
                        _mm512_permutexvar_ps(even, xs[2]),
                    ];
                    let odds = [
                        _mm512_permutex2var_ps(xs[0], odd, xs[1]),
                        _mm512_permutexvar_ps(odd, xs[2]),
                    ];
                    let (lo, hi) = (
                        ($r + 1usize).saturating_sub(KH).div_ceil(2),
                        if $r / 2 < R { $r / 2 } else { R - 1 },
                    );
                    // Taps 2m and 2m + 1: the even and the odd columns
                    // from m on.
                    let mut idx = first;
                    let mut kx = 0;
                    while kx < kw {
                        for (tap, cols) in [(kx, &evens), (kx + 1, &odds)] {
                            if tap >= kw {
                                break;
                            }
                            let v = _mm512_permutex2var_ps(cols[0], idx, cols[1]);
                            for i in lo..=hi {
                                // SAFETY: tap `tap` of tap row r − 2i < KH,
                                // within `g.k` (the caller's).
                                let w = _mm512_set1_ps(unsafe {
                                    *g.k.get_unchecked(($r - 2 * i) * kw + tap)
                                });
                                acc[i] = _mm512_fmadd_ps(w, v, acc[i]);
                            }
                        }
                        idx = _mm512_add_epi32(idx, one);
                        kx += 2;
                    }
                }
            };
        }
        each_row!(row);
        for (i, acc) in acc.iter().enumerate() {
            store(*acc, out, i * ow, c0, ow);
        }
        c0 += CHUNK;
    }
}
