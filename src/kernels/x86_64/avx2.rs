//! AVX2 + FMA + F16C. int8: 16 values sign-extended to i16
//! (`vpmovsxbw`), multiplied and pair-summed into i32 (`vpmaddwd`): exact,
//! unlike `vpmaddubsw`, whose i16 pair sums saturate. f16: 8 weights widened
//! in registers (`vcvtph2ps`), fused multiply-add in f32. Four output
//! channels per pass share each activation load; tails go one channel or
//! one element at a time.

use std::arch::x86_64::*;

use half::f16;

/// Only reached through [`super::detect`], which checked AVX2.
pub fn gemm_i8(x: &[i8], w: &[i8], m: usize, n: usize, k: usize, out: &mut [i32]) {
    assert!(x.len() >= m * k && w.len() >= n * k && out.len() >= m * n);
    assert!(is_x86_feature_detected!("avx2"));
    // SAFETY: AVX2 is present (asserted above) and every slice holds its
    // shape (asserted above), which is all `gemm_i8_avx2` reads or writes.
    unsafe { gemm_i8_avx2(x, w, m, n, k, out) }
}

/// Only reached through [`super::detect`], which checked AVX2, FMA, F16C.
pub fn gemm_f16w(x: &[f32], w: &[f16], m: usize, n: usize, k: usize, out: &mut [f32]) {
    assert!(x.len() >= m * k && w.len() >= n * k && out.len() >= m * n);
    assert!(is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c"));
    // SAFETY: the features are present and the slices hold their shapes
    // (asserted above).
    unsafe { gemm_f16w_avx2(x, w, m, n, k, out) }
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

/// 16 i8 at `p` sign-extended to 16 i16.
///
/// # Safety
/// `p..p+16` must be readable.
#[target_feature(enable = "avx2")]
unsafe fn load16(p: *const i8) -> __m256i {
    // SAFETY: the caller guarantees 16 readable bytes; unaligned load.
    unsafe { _mm256_cvtepi8_epi16(_mm_loadu_si128(p as *const __m128i)) }
}

/// # Safety
/// AVX2; `x` holds `m·k`, `w` `n·k`, `out` `m·n` values.
#[target_feature(enable = "avx2")]
unsafe fn gemm_i8_avx2(x: &[i8], w: &[i8], m: usize, n: usize, k: usize, out: &mut [i32]) {
    let kv = k / 16 * 16;
    for i in 0..m {
        let xr = &x[i * k..(i + 1) * k];
        let mut j = 0;
        while j + 4 <= n {
            let rows = [0, 1, 2, 3].map(|r| &w[(j + r) * k..(j + r + 1) * k]);
            let mut acc = [_mm256_setzero_si256(); 4];
            let mut t = 0;
            while t < kv {
                // SAFETY: t + 16 <= kv <= k = each row's length.
                let xv = unsafe { load16(xr.as_ptr().add(t)) };
                for (a, wr) in acc.iter_mut().zip(&rows) {
                    // SAFETY: as above, for this weight row.
                    let wv = unsafe { load16(wr.as_ptr().add(t)) };
                    *a = _mm256_add_epi32(*a, _mm256_madd_epi16(xv, wv));
                }
                t += 16;
            }
            for (r, (a, wr)) in acc.iter().zip(&rows).enumerate() {
                out[i * n + j + r] = hsum_i32(*a) + tail_i8(&xr[kv..], &wr[kv..]);
            }
            j += 4;
        }
        for j in j..n {
            let wr = &w[j * k..(j + 1) * k];
            let mut a = _mm256_setzero_si256();
            let mut t = 0;
            while t < kv {
                // SAFETY: t + 16 <= kv <= k for both rows.
                let (xv, wv) = unsafe { (load16(xr.as_ptr().add(t)), load16(wr.as_ptr().add(t))) };
                a = _mm256_add_epi32(a, _mm256_madd_epi16(xv, wv));
                t += 16;
            }
            out[i * n + j] = hsum_i32(a) + tail_i8(&xr[kv..], &wr[kv..]);
        }
    }
}

fn tail_i8(x: &[i8], w: &[i8]) -> i32 {
    x.iter().zip(w).map(|(a, b)| *a as i32 * *b as i32).sum()
}

/// 8 f16 at `p` widened to f32.
///
/// # Safety
/// F16C; `p..p+8` readable.
#[target_feature(enable = "avx,f16c")]
unsafe fn load8h(p: *const f16) -> __m256 {
    // SAFETY: the caller guarantees 8 readable f16 (16 bytes); unaligned.
    unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
}

/// # Safety
/// AVX, FMA, F16C; `x` holds `m·k`, `w` `n·k`, `out` `m·n` values.
#[target_feature(enable = "avx,fma,f16c")]
unsafe fn gemm_f16w_avx2(x: &[f32], w: &[f16], m: usize, n: usize, k: usize, out: &mut [f32]) {
    let kv = k / 8 * 8;
    for i in 0..m {
        let xr = &x[i * k..(i + 1) * k];
        let mut j = 0;
        while j + 4 <= n {
            let rows = [0, 1, 2, 3].map(|r| &w[(j + r) * k..(j + r + 1) * k]);
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut t = 0;
            while t < kv {
                // SAFETY: t + 8 <= kv <= k = the row's length.
                let xv = unsafe { _mm256_loadu_ps(xr.as_ptr().add(t)) };
                for (a, wr) in acc.iter_mut().zip(&rows) {
                    // SAFETY: as above, for this weight row.
                    let wv = unsafe { load8h(wr.as_ptr().add(t)) };
                    *a = _mm256_fmadd_ps(xv, wv, *a);
                }
                t += 8;
            }
            for (r, (a, wr)) in acc.iter().zip(&rows).enumerate() {
                out[i * n + j + r] = hsum_f32(*a) + tail_f16w(&xr[kv..], &wr[kv..]);
            }
            j += 4;
        }
        for j in j..n {
            let wr = &w[j * k..(j + 1) * k];
            let mut a = _mm256_setzero_ps();
            let mut t = 0;
            while t < kv {
                // SAFETY: t + 8 <= kv <= k for both rows.
                let (xv, wv) = unsafe {
                    (
                        _mm256_loadu_ps(xr.as_ptr().add(t)),
                        load8h(wr.as_ptr().add(t)),
                    )
                };
                a = _mm256_fmadd_ps(xv, wv, a);
                t += 8;
            }
            out[i * n + j] = hsum_f32(a) + tail_f16w(&xr[kv..], &wr[kv..]);
        }
    }
}

fn tail_f16w(x: &[f32], w: &[f16]) -> f32 {
    x.iter().zip(w).map(|(a, b)| a * b.to_f32()).sum()
}
