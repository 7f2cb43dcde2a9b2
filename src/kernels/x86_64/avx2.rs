//! AVX2 + FMA + F16C. int8: 16 values sign-extended to i16
//! (`vpmovsxbw`), multiplied and pair-summed into i32 (`vpmaddwd`): exact,
//! unlike `vpmaddubsw`, whose i16 pair sums saturate. f16: 8 weights widened
//! in registers (`vcvtph2ps`), fused multiply-add in f32. Weights in rows:
//! tiles of 2 rows × 4 output channels (`kernels::drive`), tails one element
//! at a time. Float weights packed in [`float_panels`] (linear layers,
//! convolutions; per frame, a convolution's patches and the right side of
//! attention's products): an outer-product micro-tile of
//! 6 rows × 16 channels, 12 accumulators, each depth two weight vectors and
//! one broadcast activation per row (BLIS's Haswell shape: 15 of the 16
//! registers).

use std::arch::x86_64::*;

use half::f16;

use crate::kernels::drive::holds;
use crate::kernels::{drive, float_panels, scalar};

/// [`scalar::fma_peak`] on 8 lanes: `vfmadd` on registers alone, the
/// core's f32 multiply-add peak for `bench-kernels`.
pub fn fma_peak(steps: usize) -> (f32, usize) {
    assert!(is_x86_feature_detected!("avx") && is_x86_feature_detected!("fma"));
    // SAFETY: AVX and FMA are present (asserted).
    unsafe { fma_peak_256(steps) }
}

/// # Safety
/// AVX and FMA.
#[target_feature(enable = "avx,fma")]
unsafe fn fma_peak_256(steps: usize) -> (f32, usize) {
    let (a, b) = scalar::peak_operands();
    let (a, b) = (_mm256_set1_ps(a), _mm256_set1_ps(b));
    let mut acc = [_mm256_setzero_ps(); scalar::PEAK_CHAINS];
    for _ in 0..steps {
        for v in &mut acc {
            *v = _mm256_fmadd_ps(*v, a, b);
        }
    }
    let mut lanes = [0f32; 8];
    let mut sum = 0.0;
    for v in &acc {
        // SAFETY: 8 f32 into an 8-value array.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), *v) };
        sum += lanes.iter().sum::<f32>();
    }
    (sum, steps * scalar::PEAK_CHAINS * 8)
}

/// Only reached through [`super::detect`], which checked AVX2.
pub fn gemm_i8(x: &[i8], w: &[i8], m: usize, n: usize, k: usize, out: &mut [i32]) {
    assert!(is_x86_feature_detected!("avx2"));
    drive(
        x,
        w,
        m,
        n,
        k,
        out,
        // SAFETY: AVX2 is present (asserted above); `drive` hands each call
        // rows of `x` and `w`, all `k` long.
        |xs, ws| unsafe { tile_i8(xs, ws) },
        scalar::dot_i8,
    )
}

/// Only reached through [`super::detect`], which checked AVX2, FMA, F16C.
pub fn gemm_f16w(x: &[f32], w: &[f16], m: usize, n: usize, k: usize, out: &mut [f32]) {
    assert!(
        is_x86_feature_detected!("avx")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    );
    drive(
        x,
        w,
        m,
        n,
        k,
        out,
        // SAFETY: the features are present (asserted above); `drive` hands
        // each call rows all `k` long.
        |xs, ws| unsafe { tile_f16w(xs, ws) },
        scalar::dot_f16w,
    )
}

/// Only reached through [`super::detect`], which checked AVX and FMA.
pub fn gemm_f32(x: &[f32], w: &[f32], m: usize, n: usize, k: usize, out: &mut [f32]) {
    assert!(is_x86_feature_detected!("avx") && is_x86_feature_detected!("fma"));
    drive(
        x,
        w,
        m,
        n,
        k,
        out,
        // SAFETY: the features are present (asserted above); `drive` hands
        // each call rows all `k` long.
        |xs, ws| unsafe { tile_f32(xs, ws) },
        scalar::dot_f32,
    )
}

#[target_feature(enable = "avx2")]
fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}

#[target_feature(enable = "avx")]
fn hsum_f32(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0b01));
    _mm_cvtss_f32(s)
}

/// The 2 × 4 dot products of two activation rows with four weight rows:
/// 8 accumulators, 2 activation registers, 1 weight register (of 16).
///
/// # Safety
/// AVX2; every row at least `xs[0].len()` long.
#[target_feature(enable = "avx2")]
unsafe fn tile_i8(xs: [&[i8]; 2], ws: [&[i8]; 4]) -> [[i32; 4]; 2] {
    let k = xs[0].len();
    let kv = k / 16 * 16;
    let mut acc = [[_mm256_setzero_si256(); 4]; 2];
    let mut t = 0;
    while t < kv {
        // SAFETY: t + 16 <= kv <= k, the length of every row; unaligned
        // 16-byte loads.
        let xv = xs
            .map(|xr| unsafe { _mm256_cvtepi8_epi16(_mm_loadu_si128(xr.as_ptr().add(t).cast())) });
        for (r, wr) in ws.iter().enumerate() {
            // SAFETY: as above, for this weight row.
            let wv = unsafe { _mm256_cvtepi8_epi16(_mm_loadu_si128(wr.as_ptr().add(t).cast())) };
            for (a, x) in acc.iter_mut().zip(&xv) {
                a[r] = _mm256_add_epi32(a[r], _mm256_madd_epi16(*x, wv));
            }
        }
        t += 16;
    }
    let mut out = [[0i32; 4]; 2];
    for ((o, a), xr) in out.iter_mut().zip(&acc).zip(&xs) {
        for ((v, ar), wr) in o.iter_mut().zip(a).zip(&ws) {
            *v = hsum_i32(*ar) + scalar::dot_i8(&xr[kv..], &wr[kv..k]);
        }
    }
    out
}

/// As [`tile_i8`] for f32 activations and f16 weights.
///
/// # Safety
/// AVX, FMA, F16C; every row at least `xs[0].len()` long.
#[target_feature(enable = "avx,fma,f16c")]
unsafe fn tile_f16w(xs: [&[f32]; 2], ws: [&[f16]; 4]) -> [[f32; 4]; 2] {
    let k = xs[0].len();
    let kv = k / 8 * 8;
    let mut acc = [[_mm256_setzero_ps(); 4]; 2];
    let mut t = 0;
    while t < kv {
        // SAFETY: t + 8 <= kv <= k, the length of every row.
        let xv = xs.map(|xr| unsafe { _mm256_loadu_ps(xr.as_ptr().add(t)) });
        for (r, wr) in ws.iter().enumerate() {
            // SAFETY: as above; 8 f16 are 16 bytes, loaded unaligned.
            let wv = unsafe { _mm256_cvtph_ps(_mm_loadu_si128(wr.as_ptr().add(t).cast())) };
            for (a, x) in acc.iter_mut().zip(&xv) {
                a[r] = _mm256_fmadd_ps(*x, wv, a[r]);
            }
        }
        t += 8;
    }
    let mut out = [[0f32; 4]; 2];
    for ((o, a), xr) in out.iter_mut().zip(&acc).zip(&xs) {
        for ((v, ar), wr) in o.iter_mut().zip(a).zip(&ws) {
            *v = hsum_f32(*ar) + scalar::dot_f16w(&xr[kv..], &wr[kv..k]);
        }
    }
    out
}

/// As [`tile_f16w`] for f32 weights.
///
/// # Safety
/// AVX, FMA; every row at least `xs[0].len()` long.
#[target_feature(enable = "avx,fma")]
unsafe fn tile_f32(xs: [&[f32]; 2], ws: [&[f32]; 4]) -> [[f32; 4]; 2] {
    let k = xs[0].len();
    let kv = k / 8 * 8;
    let mut acc = [[_mm256_setzero_ps(); 4]; 2];
    let mut t = 0;
    while t < kv {
        // SAFETY: t + 8 <= kv <= k, the length of every row.
        let xv = xs.map(|xr| unsafe { _mm256_loadu_ps(xr.as_ptr().add(t)) });
        for (r, wr) in ws.iter().enumerate() {
            // SAFETY: as above, for this weight row.
            let wv = unsafe { _mm256_loadu_ps(wr.as_ptr().add(t)) };
            for (a, x) in acc.iter_mut().zip(&xv) {
                a[r] = _mm256_fmadd_ps(*x, wv, a[r]);
            }
        }
        t += 8;
    }
    let mut out = [[0f32; 4]; 2];
    for ((o, a), xr) in out.iter_mut().zip(&acc).zip(&xs) {
        for ((v, ar), wr) in o.iter_mut().zip(a).zip(&ws) {
            *v = hsum_f32(*ar) + scalar::dot_f32(&xr[kv..], &wr[kv..k]);
        }
    }
    out
}

/// Channels of one packed float panel (two ymm).
const PANEL: usize = float_panels::PANEL;
/// Rows of `x` per packed micro-tile.
const MR: usize = 6;

fn has_float() -> bool {
    is_x86_feature_detected!("avx")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// The outer-product loop over weights of type `$w` packed in
/// [`float_panels`], loaded 8 at a time by `$load`: each panel (16 × k,
/// in L2 while the rows pass over it) against blocks of [`MR`] rows, the
/// last block shorter; per depth, two FMAs per row with the row's
/// activation broadcast.
macro_rules! packed_float_gemm {
    ($gemm:ident, $tile:ident, $w:ty, $load:expr, $doc:literal) => {
        #[doc = $doc]
        pub fn $gemm(x: &[f32], w: &[$w], m: usize, n: usize, k: usize, out: &mut [f32]) {
            assert!(
                has_float()
                    && holds(w.len(), &[n.div_ceil(PANEL), k, PANEL])
                    && holds(x.len(), &[m, k])
                    && holds(out.len(), &[m, n])
            );
            for p in 0..n.div_ceil(PANEL) {
                let wp = &w[p * k * PANEL..(p + 1) * k * PANEL];
                let mut i = 0;
                while i < m {
                    let rows = (m - i).min(MR);
                    let j = p * PANEL;
                    // SAFETY: AVX, FMA and F16C are present (asserted); the
                    // tile reads rows i..i + rows of `x` (m × k, asserted),
                    // the panel `wp` (16 · k values) and writes rows
                    // i..i + rows, channels j..min(j + 16, n) of `out`
                    // (m × n, asserted).
                    unsafe {
                        match rows {
                            MR => $tile::<MR>(x, wp, i, j, n, k, out),
                            5 => $tile::<5>(x, wp, i, j, n, k, out),
                            4 => $tile::<4>(x, wp, i, j, n, k, out),
                            3 => $tile::<3>(x, wp, i, j, n, k, out),
                            2 => $tile::<2>(x, wp, i, j, n, k, out),
                            _ => $tile::<1>(x, wp, i, j, n, k, out),
                        }
                    }
                    i += rows;
                }
            }
        }

        /// # Safety
        /// AVX, FMA, F16C; the bounds the caller asserts.
        #[target_feature(enable = "avx,fma,f16c")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $tile<const R: usize>(
            x: &[f32],
            wp: &[$w],
            i: usize,
            j: usize,
            n: usize,
            k: usize,
            out: &mut [f32],
        ) {
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            for t in 0..k {
                // SAFETY: depth t of the panel is 16 values inside `wp`.
                let b = unsafe {
                    let at = wp.as_ptr().add(t * PANEL);
                    [$load(at), $load(at.add(8))]
                };
                for (r, ar) in acc.iter_mut().enumerate() {
                    // SAFETY: row i + r < m, t < k: within x (m × k).
                    let a = _mm256_set1_ps(unsafe { *x.get_unchecked((i + r) * k + t) });
                    ar[0] = _mm256_fmadd_ps(a, b[0], ar[0]);
                    ar[1] = _mm256_fmadd_ps(a, b[1], ar[1]);
                }
            }
            let valid = (n - j).min(PANEL);
            for (r, ar) in acc.iter().enumerate() {
                let to = &mut out[(i + r) * n + j..(i + r) * n + j + valid];
                if valid == PANEL {
                    // SAFETY: `to` holds 16 values.
                    unsafe {
                        _mm256_storeu_ps(to.as_mut_ptr(), ar[0]);
                        _mm256_storeu_ps(to.as_mut_ptr().add(8), ar[1]);
                    }
                } else {
                    let mut all = [0f32; PANEL];
                    // SAFETY: `all` holds 16 values.
                    unsafe {
                        _mm256_storeu_ps(all.as_mut_ptr(), ar[0]);
                        _mm256_storeu_ps(all.as_mut_ptr().add(8), ar[1]);
                    }
                    to.copy_from_slice(&all[..valid]);
                }
            }
        }
    };
}

/// 8 f32.
///
/// # Safety
/// AVX; 8 readable values at `p`.
#[inline(always)]
unsafe fn load_f32(p: *const f32) -> __m256 {
    // SAFETY: the caller's.
    unsafe { _mm256_loadu_ps(p) }
}

/// 8 f16 widened to f32 in one instruction.
///
/// # Safety
/// AVX, F16C; 8 readable values at `p`.
#[inline(always)]
unsafe fn load_f16(p: *const f16) -> __m256 {
    // SAFETY: the caller's (16 bytes).
    unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
}

packed_float_gemm!(
    gemm_f32p,
    tile_f32p,
    f32,
    load_f32,
    "`out = x · wᵀ`, f32 weights packed by [`float_panels::pack`]."
);
packed_float_gemm!(
    gemm_f16p,
    tile_f16p,
    f16,
    load_f16,
    "`out = x · wᵀ`, f16 weights packed by [`float_panels::pack`], widened in registers."
);
