//! AVX2 + FMA + F16C. int8: 16 values sign-extended to i16
//! (`vpmovsxbw`), multiplied and pair-summed into i32 (`vpmaddwd`): exact,
//! unlike `vpmaddubsw`, whose i16 pair sums saturate. f16: 8 weights widened
//! in registers (`vcvtph2ps`), fused multiply-add in f32. Tiles of 2 rows ×
//! 4 output channels (`kernels::drive`); tails go one element at a time.

use std::arch::x86_64::*;

use half::f16;

use crate::kernels::{drive, scalar};

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
