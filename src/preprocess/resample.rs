//! Pillow's 8-bit convolution resampler (`Resample.c`; bicubic or
//! bilinear), windowed: the
//! fixed-point coefficients of each axis, the horizontal and vertical
//! passes over the rows and columns the centre crop keeps, Pillow's
//! nearest-neighbour tables, and the plain twin the property tests
//! compare them with.

use crate::kernels::elementwise::Level;
use crate::kernels::resample::{self, RowTaps};

/// Fixed-point precision of Pillow's 8-bit resampler (`32 - 8 - 2`).
pub(super) const PRECISION_BITS: u32 = 32 - 8 - 2;
/// Pillow's resampling filters that the preprocessing implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Filter {
    /// `Image.BICUBIC` (`a = -0.5`, support 2): CLIP's, SigLIP's.
    #[default]
    Bicubic,
    /// `Image.BILINEAR` (the triangle, support 1): MobileCLIP's.
    Bilinear,
}

impl Filter {
    /// The filter's support at scale 1.
    fn support(self) -> f64 {
        match self {
            Filter::Bicubic => 2.0,
            Filter::Bilinear => 1.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            Filter::Bicubic => bicubic(x),
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
        }
    }

    /// Pillow's name for it, as a bundle's manifest writes it.
    pub fn pillow_name(self) -> &'static str {
        match self {
            Filter::Bicubic => "pillow-bicubic",
            Filter::Bilinear => "pillow-bilinear",
        }
    }
}

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Fixed-point coefficients of one resampling axis, for a window of outputs.
#[derive(Debug, Default, Clone)]
pub(super) struct AxisCoeffs {
    ksize: usize,
    /// `ksize` coefficients per output.
    pub k: Vec<i32>,
    /// The same as the horizontal pass of 3- and 4-channel rows reads
    /// them ([`resample::taps`]).
    pub taps: RowTaps,
    /// First input index and number of taps, per output.
    pub bounds: Vec<(usize, usize)>,
    /// Scratch for the f64 coefficients of one output.
    kk: Vec<f64>,
}

impl AxisCoeffs {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the outputs
    /// `first..first + count` of a resize from `in_size` to `out_size`.
    pub(super) fn compute(
        &mut self,
        filter: Filter,
        in_size: usize,
        out_size: usize,
        first: usize,
        count: usize,
    ) {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filter.support() * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        self.ksize = ksize;
        self.k.clear();
        self.k.resize(count * ksize, 0);
        self.bounds.clear();
        self.kk.clear();
        self.kk.resize(ksize, 0.0);
        let ss = 1.0 / filterscale;
        for (i, xx) in (first..first + count).enumerate() {
            let center = (xx as f64 + 0.5) * scale;
            // C casts truncate towards zero.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = xmax.saturating_sub(xmin).min(ksize);
            let mut ww = 0.0;
            for x in 0..n {
                let w = filter.weight((x as f64 + xmin as f64 - center + 0.5) * ss);
                self.kk[x] = w;
                ww += w;
            }
            let out = &mut self.k[i * ksize..(i + 1) * ksize];
            for (x, slot) in out.iter_mut().enumerate().take(n) {
                let mut v = self.kk[x];
                if ww != 0.0 {
                    v /= ww;
                }
                let scaled = v * (1u32 << PRECISION_BITS) as f64;
                *slot = if v < 0.0 {
                    (scaled - 0.5) as i32
                } else {
                    (scaled + 0.5) as i32
                };
            }
            self.bounds.push((xmin, n));
        }
    }

    /// Fills [`AxisCoeffs::taps`] for a horizontal pass of 3 or 4 channels.
    pub(super) fn set_taps(&mut self) {
        self.taps.set(&self.bounds, &self.k, self.ksize);
    }
}

#[inline]
pub(super) fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow's nearest-neighbour scaling (`ImagingScaleAffine`): source
/// coordinates accumulated in f64 from the pixel centre.
pub(super) fn nearest_table(
    in_size: usize,
    out_size: usize,
    first: usize,
    count: usize,
    out: &mut Vec<usize>,
) {
    let step = in_size as f64 / out_size as f64;
    let mut pos = step * 0.5;
    out.clear();
    for x in 0..first + count {
        if x >= first {
            let xin = if pos < 0.0 { 0 } else { pos as usize };
            out.push(xin.min(in_size - 1));
        }
        pos += step;
    }
}

/// First and one-past-last input index used by a set of bounds.
pub(super) fn span(bounds: &[(usize, usize)]) -> (usize, usize) {
    let first = bounds.iter().map(|b| b.0).min().unwrap_or(0);
    let last = bounds.iter().map(|b| b.0 + b.1).max().unwrap_or(first);
    (first, last)
}

/// Copies `rows` rows starting at `first`, bytes `x..x + w` of each.
pub(super) fn copy_window(
    src: &[u8],
    stride: usize,
    first: usize,
    rows: usize,
    x: usize,
    w: usize,
    out: &mut [u8],
) {
    for r in 0..rows {
        let s = (first + r) * stride + x;
        out[r * w..(r + 1) * w].copy_from_slice(&src[s..s + w]);
    }
}

/// Horizontal pass (`ImagingResampleHorizontal_8bpc`) over `rows` rows of
/// `src` starting at row `first`.
#[allow(clippy::too_many_arguments)]
pub(super) fn resample_rows(
    src: &[u8],
    stride: usize,
    first: usize,
    rows: usize,
    c: &AxisCoeffs,
    ch: usize,
    out: &mut [u8],
    out_stride: usize,
    wide: (&mut Vec<[i32; 4]>, Level),
) {
    match ch {
        1 => resample_rows_ch::<1>(src, stride, first, rows, c, out, out_stride),
        2 => resample_rows_ch::<2>(src, stride, first, rows, c, out, out_stride),
        3 => resample_rows_wide::<3>(src, stride, first, rows, c, out, out_stride, wide),
        _ => resample_rows_wide::<4>(src, stride, first, rows, c, out, out_stride, wide),
    }
}

/// [`resample_rows`] for 3 and 4 channels: the row's pixels the taps read
/// are first widened to four i32 lanes each (`row`, reused), so that the
/// taps run four pixels, 16 lanes, a step ([`resample::taps`], the copy
/// `level` names), while the next row is prefetched. The same integer sums
/// as [`resample_rows_ch`], so bit for bit Pillow's.
#[allow(clippy::too_many_arguments)]
fn resample_rows_wide<const CH: usize>(
    src: &[u8],
    stride: usize,
    first: usize,
    rows: usize,
    c: &AxisCoeffs,
    out: &mut [u8],
    out_stride: usize,
    (row, level): (&mut Vec<[i32; 4]>, Level),
) {
    let (lo, hi) = span(&c.bounds);
    row.clear();
    row.resize(c.taps.reach().max(hi - lo), [0; 4]);
    let pixels = |r: usize| &src[(first + r) * stride + lo * CH..(first + r) * stride + hi * CH];
    for r in 0..rows {
        if r + 1 < rows {
            resample::prefetch(level, pixels(r + 1));
        }
        resample::widen(level, pixels(r), CH, &mut row[..hi - lo]);
        resample::taps(
            level,
            &c.taps,
            row,
            (1 << (PRECISION_BITS - 1), PRECISION_BITS),
            CH,
            &mut out[r * out_stride..(r + 1) * out_stride],
        );
    }
}

/// [`resample_rows`] for `CH` channels: each output pixel's taps read as
/// one slice of whole pixels, the channels summed side by side. Integer
/// sums in Pillow's order of taps, so bit for bit Pillow's.
fn resample_rows_ch<const CH: usize>(
    src: &[u8],
    stride: usize,
    first: usize,
    rows: usize,
    c: &AxisCoeffs,
    out: &mut [u8],
    out_stride: usize,
) {
    let ks = c.ksize;
    for r in 0..rows {
        let srow = &src[(first + r) * stride..(first + r + 1) * stride];
        let orow = &mut out[r * out_stride..(r + 1) * out_stride];
        for ((&(xmin, n), k), o) in c
            .bounds
            .iter()
            .zip(c.k.chunks_exact(ks))
            .zip(orow.chunks_exact_mut(CH))
        {
            let mut ss = [1i32 << (PRECISION_BITS - 1); CH];
            for (px, &kv) in srow[xmin * CH..(xmin + n) * CH]
                .chunks_exact(CH)
                .zip(&k[..n])
            {
                for cc in 0..CH {
                    ss[cc] = ss[cc].wrapping_add(px[cc] as i32 * kv);
                }
            }
            for cc in 0..CH {
                o[cc] = clip8(ss[cc]);
            }
        }
    }
}

/// Where the vertical pass reads: rows of `stride` bytes, starting at byte
/// `x` of each row, the buffer's row 0 being input row `first_row`.
#[derive(Clone, Copy)]
pub(super) struct Window {
    pub stride: usize,
    pub x: usize,
    pub first_row: usize,
}

/// Vertical pass (`ImagingResampleVertical_8bpc`) over `width` bytes of each
/// row of `src`, into `out` rows of `width` bytes. An output row's sums are
/// accumulated a whole input row at a time (`acc`, reused; the copy of the
/// row kernels `level` names); integer sums, so bit for bit Pillow's.
pub(super) fn resample_cols(
    src: &[u8],
    w: Window,
    width: usize,
    c: &AxisCoeffs,
    outputs: std::ops::Range<usize>,
    (acc, level): (&mut Vec<i32>, Level),
    out: &mut [u8],
) {
    let ks = c.ksize;
    acc.clear();
    acc.resize(width, 0);
    let first = outputs.start;
    for (yy, &(ymin, n)) in c.bounds[outputs].iter().enumerate() {
        let k = &c.k[(first + yy) * ks..(first + yy) * ks + n];
        let base = ymin - w.first_row;
        acc.fill(1 << (PRECISION_BITS - 1));
        for (y, &kv) in k.iter().enumerate() {
            let row = &src[(base + y) * w.stride + w.x..][..width];
            resample::accumulate(level, acc, row, kv);
        }
        resample::narrow(
            level,
            acc,
            PRECISION_BITS,
            &mut out[yy * width..(yy + 1) * width],
        );
    }
}

#[cfg(test)]
pub(crate) mod plain {
    use super::*;
    use crate::preprocess::{center_crop_offset, resized_size};

    fn coeffs(filter: Filter, in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
        let mut c = AxisCoeffs::default();
        c.compute(filter, in_size, out_size, 0, out_size);
        c.bounds
            .iter()
            .enumerate()
            .map(|(i, &(xmin, n))| (xmin, c.k[i * c.ksize..i * c.ksize + n].to_vec()))
            .collect()
    }

    /// One pass along x of an image `w`x`h`x`ch`.
    fn pass_x(filter: Filter, src: &[u8], w: usize, h: usize, ch: usize, ow: usize) -> Vec<u8> {
        let cs = coeffs(filter, w, ow);
        let mut out = vec![0u8; ow * h * ch];
        for y in 0..h {
            for (x, (xmin, k)) in cs.iter().enumerate() {
                for c in 0..ch {
                    let mut ss: i32 = 1 << (PRECISION_BITS - 1);
                    for (i, kv) in k.iter().enumerate() {
                        ss += src[(y * w + xmin + i) * ch + c] as i32 * kv;
                    }
                    out[(y * ow + x) * ch + c] = clip8(ss);
                }
            }
        }
        out
    }

    fn transpose(src: &[u8], w: usize, h: usize, ch: usize) -> Vec<u8> {
        let mut out = vec![0u8; src.len()];
        for y in 0..h {
            for x in 0..w {
                for c in 0..ch {
                    out[(x * h + y) * ch + c] = src[(y * w + x) * ch + c];
                }
            }
        }
        out
    }

    pub fn resize(
        filter: Filter,
        src: &[u8],
        w: usize,
        h: usize,
        ch: usize,
        ow: usize,
        oh: usize,
    ) -> Vec<u8> {
        let vertical_first =
            (h as i64 - oh as i64) > 0 && (h as i64 - oh as i64) > (w as i64 - ow as i64) * 2;
        let xs = |img: &[u8], w, h, ow| {
            if ow == w {
                img.to_vec()
            } else {
                pass_x(filter, img, w, h, ch, ow)
            }
        };
        let ys = |img: &[u8], w, h, oh| {
            if oh == h {
                img.to_vec()
            } else {
                transpose(
                    &pass_x(filter, &transpose(img, w, h, ch), h, w, ch, oh),
                    oh,
                    w,
                    ch,
                )
            }
        };
        if vertical_first {
            xs(&ys(src, w, h, oh), w, oh, ow)
        } else {
            ys(&xs(src, w, h, ow), ow, h, oh)
        }
    }

    pub fn resize_crop(
        filter: Filter,
        src: &[u8],
        w: usize,
        h: usize,
        ch: usize,
        n: u32,
    ) -> Vec<u8> {
        let (rw, rh) = resized_size(w as u32, h as u32, n);
        let full = resize(filter, src, w, h, ch, rw as usize, rh as usize);
        let crop = n.min(rw).min(rh) as usize;
        let x0 = center_crop_offset(rw, crop as u32) as usize;
        let y0 = center_crop_offset(rh, crop as u32) as usize;
        let mut out = Vec::with_capacity(crop * crop * ch);
        for y in y0..y0 + crop {
            let s = (y * rw as usize + x0) * ch;
            out.extend_from_slice(&full[s..s + crop * ch]);
        }
        out
    }
}
