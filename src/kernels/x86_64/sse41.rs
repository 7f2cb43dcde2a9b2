//! SSE4.1, for x86_64 CPUs without AVX (Nehalem, and the Atom, Celeron and
//! Pentium Silver cores of small boxes and NAS). int8: 8 values
//! sign-extended to i16 (`pmovsxbw`), multiplied and pair-summed into i32
//! (`pmaddwd`): exact. f32: multiply, then add (no FMA here), 4 lanes.
//! f16 weights: widened 4 at a time in registers by integer shifts and one
//! multiply ([`widen`]; no F16C here), exact for every finite value.
//! int8 and f32 weights in rows: tiles of 2 rows × 4 output channels
//! (`kernels::drive`), no broadcast (SSE has no broadcast load: the
//! outer-product tile of the AVX paths spends a shuffle per row and depth,
//! and ran slower than these tiles). f16 weights packed in
//! [`float_panels`], where each weight is widened once for [`MR`] rows:
//! each panel's two halves of 8 channels in turn against blocks of rows,
//! 12 accumulators, each depth two weight vectors and one broadcast
//! activation per row (15 of the 16 registers).

use std::arch::x86_64::*;

use half::f16;

use crate::kernels::drive::holds;
use crate::kernels::{drive, float_panels, scalar};

/// Whether this CPU runs these kernels.
pub fn has() -> bool {
    is_x86_feature_detected!("sse4.1")
}

/// [`scalar::fma_peak`] on 4 lanes, a multiply and an add a step (no fused
/// multiply-add here): the core's peak for `bench-kernels`.
pub fn fma_peak(steps: usize) -> (f32, usize) {
    assert!(has());
    // SAFETY: SSE4.1 is present (asserted).
    unsafe { fma_peak_128(steps) }
}

/// # Safety
/// SSE4.1.
#[target_feature(enable = "sse4.1")]
unsafe fn fma_peak_128(steps: usize) -> (f32, usize) {
    let (a, b) = scalar::peak_operands();
    let (a, b) = (_mm_set1_ps(a), _mm_set1_ps(b));
    let mut acc = [_mm_setzero_ps(); scalar::PEAK_CHAINS];
    for _ in 0..steps {
        for v in &mut acc {
            *v = _mm_add_ps(_mm_mul_ps(*v, a), b);
        }
    }
    let mut lanes = [0f32; 4];
    let mut sum = 0.0;
    for v in &acc {
        // SAFETY: 4 f32 into a 4-value array.
        unsafe { _mm_storeu_ps(lanes.as_mut_ptr(), *v) };
        sum += lanes.iter().sum::<f32>();
    }
    (sum, steps * scalar::PEAK_CHAINS * 4)
}

/// Only reached where [`has`] said yes.
pub fn gemm_i8(x: &[i8], w: &[i8], m: usize, n: usize, k: usize, out: &mut [i32]) {
    assert!(has());
    drive(
        x,
        w,
        m,
        n,
        k,
        out,
        // SAFETY: SSE4.1 is present (asserted above); `drive` hands each
        // call rows of `x` and `w`, all `k` long.
        |xs, ws| unsafe { tile_i8(xs, ws) },
        scalar::dot_i8,
    )
}

/// Only reached where [`has`] said yes.
pub fn gemm_f16w(x: &[f32], w: &[f16], m: usize, n: usize, k: usize, out: &mut [f32]) {
    assert!(has());
    drive(
        x,
        w,
        m,
        n,
        k,
        out,
        // SAFETY: SSE4.1 is present (asserted above); `drive` hands each
        // call rows all `k` long.
        |xs, ws| unsafe { tile_f16w(xs, ws) },
        scalar::dot_f16w,
    )
}

/// Only reached where [`has`] said yes.
pub fn gemm_f32(x: &[f32], w: &[f32], m: usize, n: usize, k: usize, out: &mut [f32]) {
    assert!(has());
    drive(
        x,
        w,
        m,
        n,
        k,
        out,
        // SAFETY: SSE4.1 is present (asserted above); `drive` hands each
        // call rows all `k` long.
        |xs, ws| unsafe { tile_f32(xs, ws) },
        scalar::dot_f32,
    )
}

#[target_feature(enable = "sse4.1")]
fn hsum_i32(v: __m128i) -> i32 {
    let s = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}

#[target_feature(enable = "sse4.1")]
fn hsum_f32(v: __m128) -> f32 {
    let s = _mm_add_ps(v, _mm_movehl_ps(v, v));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0b01));
    _mm_cvtss_f32(s)
}

/// Four f16 (the low 16 bits of each 32-bit lane, the rest zero) as f32,
/// bit for bit what `f16::to_f32` gives for every non-NaN value (a NaN
/// stays a NaN): the exponent and mantissa shifted into f32's places and
/// rescaled by 2¹¹² (which also makes subnormals normal, exactly), the sign
/// put back, infinities and NaNs given f32's all-ones exponent.
#[target_feature(enable = "sse4.1")]
fn widen(h: __m128i) -> __m128 {
    let exp_mant = _mm_and_si128(h, _mm_set1_epi32(0x7fff));
    let sign = _mm_slli_epi32(_mm_xor_si128(h, exp_mant), 16);
    let rescale = _mm_castsi128_ps(_mm_set1_epi32((127 + 112) << 23));
    let scaled = _mm_mul_ps(_mm_castsi128_ps(_mm_slli_epi32(exp_mant, 13)), rescale);
    let inf_nan = _mm_cmpgt_epi32(exp_mant, _mm_set1_epi32(0x7bff));
    let top = _mm_or_si128(sign, _mm_and_si128(inf_nan, _mm_set1_epi32(0xff << 23)));
    _mm_or_ps(scaled, _mm_castsi128_ps(top))
}

/// 4 f16 at `p`, widened.
///
/// # Safety
/// SSE4.1; 4 readable values at `p`.
#[inline]
#[target_feature(enable = "sse4.1")]
unsafe fn load_f16(p: *const f16) -> __m128 {
    // SAFETY: the caller's (8 bytes, unaligned).
    let v = unsafe { _mm_loadl_epi64(p.cast()) };
    widen(_mm_unpacklo_epi16(v, _mm_setzero_si128()))
}

/// 16 int8 at `p` as two vectors of 8 i16.
///
/// # Safety
/// SSE4.1; 16 readable bytes at `p`.
#[inline]
#[target_feature(enable = "sse4.1")]
unsafe fn load_i8(p: *const i8) -> [__m128i; 2] {
    // SAFETY: the caller's (16 bytes, unaligned).
    let v = unsafe { _mm_loadu_si128(p.cast()) };
    [
        _mm_cvtepi8_epi16(v),
        _mm_cvtepi8_epi16(_mm_srli_si128(v, 8)),
    ]
}

/// 4 f32 at `p`.
///
/// # Safety
/// SSE; 4 readable values at `p`.
#[inline(always)]
unsafe fn load_f32(p: *const f32) -> __m128 {
    // SAFETY: the caller's.
    unsafe { _mm_loadu_ps(p) }
}

/// The 2 × 4 dot products of two activation rows with four weight rows,
/// 16 depths a step: 8 accumulators, 4 activation registers, 2 weight
/// registers (of 16).
///
/// # Safety
/// SSE4.1; every row at least `xs[0].len()` long.
#[target_feature(enable = "sse4.1")]
unsafe fn tile_i8(xs: [&[i8]; 2], ws: [&[i8]; 4]) -> [[i32; 4]; 2] {
    let k = xs[0].len();
    let kv = k / 16 * 16;
    let mut acc = [[_mm_setzero_si128(); 4]; 2];
    let mut t = 0;
    while t < kv {
        // SAFETY: t + 16 <= kv <= k, the length of every row.
        let xv = xs.map(|xr| unsafe { load_i8(xr.as_ptr().add(t)) });
        for (r, wr) in ws.iter().enumerate() {
            // SAFETY: as above, for this weight row.
            let wv = unsafe { load_i8(wr.as_ptr().add(t)) };
            for (a, x) in acc.iter_mut().zip(&xv) {
                let lo = _mm_madd_epi16(x[0], wv[0]);
                let hi = _mm_madd_epi16(x[1], wv[1]);
                a[r] = _mm_add_epi32(a[r], _mm_add_epi32(lo, hi));
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

/// The 2 × 4 float dot products over weights of type `$w` in rows, loaded
/// 4 at a time by `$load`.
macro_rules! row_float_tile {
    ($tile:ident, $w:ty, $load:ident, $tail:path) => {
        /// # Safety
        /// SSE4.1; every row at least `xs[0].len()` long.
        #[target_feature(enable = "sse4.1")]
        unsafe fn $tile(xs: [&[f32]; 2], ws: [&[$w]; 4]) -> [[f32; 4]; 2] {
            let k = xs[0].len();
            let kv = k / 4 * 4;
            let mut acc = [[_mm_setzero_ps(); 4]; 2];
            let mut t = 0;
            while t < kv {
                // SAFETY: t + 4 <= kv <= k, the length of every row.
                let xv = xs.map(|xr| unsafe { _mm_loadu_ps(xr.as_ptr().add(t)) });
                for (r, wr) in ws.iter().enumerate() {
                    // SAFETY: as above, for this weight row.
                    let wv = unsafe { $load(wr.as_ptr().add(t)) };
                    for (a, x) in acc.iter_mut().zip(&xv) {
                        a[r] = _mm_add_ps(a[r], _mm_mul_ps(*x, wv));
                    }
                }
                t += 4;
            }
            let mut out = [[0f32; 4]; 2];
            for ((o, a), xr) in out.iter_mut().zip(&acc).zip(&xs) {
                for ((v, ar), wr) in o.iter_mut().zip(a).zip(&ws) {
                    *v = hsum_f32(*ar) + $tail(&xr[kv..], &wr[kv..k]);
                }
            }
            out
        }
    };
}

row_float_tile!(tile_f32, f32, load_f32, scalar::dot_f32);
row_float_tile!(tile_f16w, f16, load_f16, scalar::dot_f16w);

/// Channels of one packed float panel.
const PANEL: usize = float_panels::PANEL;
/// Channels of one half panel (two xmm).
const HALF: usize = PANEL / 2;
/// Rows of `x` per packed micro-tile.
const MR: usize = 6;

/// The outer-product loop over weights of type `$w` packed in
/// [`float_panels`], loaded (and widened) 4 at a time by `$load`: each half panel
/// (8 × k) against blocks of [`MR`] rows, the last block shorter; per
/// depth, two multiplies and two adds per row with the row's activation
/// broadcast.
macro_rules! packed_float_gemm {
    ($gemm:ident, $tile:ident, $w:ty, $load:ident, $doc:literal) => {
        #[doc = $doc]
        pub fn $gemm(x: &[f32], w: &[$w], m: usize, n: usize, k: usize, out: &mut [f32]) {
            assert!(
                has()
                    && holds(w.len(), &[n.div_ceil(PANEL), k, PANEL])
                    && holds(x.len(), &[m, k])
                    && holds(out.len(), &[m, n])
            );
            for p in 0..n.div_ceil(PANEL) {
                let wp = &w[p * k * PANEL..(p + 1) * k * PANEL];
                for h in 0..2 {
                    let j = p * PANEL + h * HALF;
                    if j >= n {
                        break;
                    }
                    let mut i = 0;
                    while i < m {
                        let rows = (m - i).min(MR);
                        // SAFETY: SSE4.1 is present (asserted); the tile
                        // reads rows i..i + rows of `x` (m × k, asserted),
                        // the half `h` of the panel `wp` (16 · k values),
                        // and writes rows i..i + rows, channels
                        // j..min(j + 8, n) of `out` (m × n, asserted).
                        unsafe {
                            match rows {
                                MR => $tile::<MR>(x, wp, h, i, j, n, k, out),
                                5 => $tile::<5>(x, wp, h, i, j, n, k, out),
                                4 => $tile::<4>(x, wp, h, i, j, n, k, out),
                                3 => $tile::<3>(x, wp, h, i, j, n, k, out),
                                2 => $tile::<2>(x, wp, h, i, j, n, k, out),
                                _ => $tile::<1>(x, wp, h, i, j, n, k, out),
                            }
                        }
                        i += rows;
                    }
                }
            }
        }

        /// # Safety
        /// SSE4.1; the bounds the caller asserts.
        #[target_feature(enable = "sse4.1")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $tile<const R: usize>(
            x: &[f32],
            wp: &[$w],
            h: usize,
            i: usize,
            j: usize,
            n: usize,
            k: usize,
            out: &mut [f32],
        ) {
            let mut acc = [[_mm_setzero_ps(); 2]; R];
            for t in 0..k {
                // SAFETY: depth t of the panel is 16 values inside `wp`,
                // of which this half reads 8.
                let b = unsafe {
                    let at = wp.as_ptr().add(t * PANEL + h * HALF);
                    [$load(at), $load(at.add(4))]
                };
                for (r, ar) in acc.iter_mut().enumerate() {
                    // SAFETY: row i + r < m, t < k: within x (m × k).
                    let a = _mm_set1_ps(unsafe { *x.get_unchecked((i + r) * k + t) });
                    ar[0] = _mm_add_ps(ar[0], _mm_mul_ps(a, b[0]));
                    ar[1] = _mm_add_ps(ar[1], _mm_mul_ps(a, b[1]));
                }
            }
            let valid = (n - j).min(HALF);
            for (r, ar) in acc.iter().enumerate() {
                let mut all = [0f32; HALF];
                // SAFETY: `all` holds 8 values.
                unsafe {
                    _mm_storeu_ps(all.as_mut_ptr(), ar[0]);
                    _mm_storeu_ps(all.as_mut_ptr().add(4), ar[1]);
                }
                out[(i + r) * n + j..(i + r) * n + j + valid].copy_from_slice(&all[..valid]);
            }
        }
    };
}

packed_float_gemm!(
    gemm_f16p,
    tile_f16p,
    f16,
    load_f16,
    "`out = x · wᵀ`, f16 weights packed by [`float_panels::pack`], widened in registers."
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Every f16 widens to what `half` says, bit for bit (NaNs to NaNs).
    #[test]
    fn widen_is_half_to_f32_for_every_value() {
        assert!(has(), "this CPU has no SSE4.1: nothing to compare");
        for first in (0..=u16::MAX).step_by(4) {
            let bits: [u16; 4] = std::array::from_fn(|i| first + i as u16);
            let mut got = [0f32; 4];
            // SAFETY: SSE4.1 is present (asserted); 4 values read, 4 written.
            unsafe { _mm_storeu_ps(got.as_mut_ptr(), load_f16(bits.as_ptr().cast())) };
            for (b, g) in bits.iter().zip(got) {
                let want = f16::from_bits(*b).to_f32();
                if want.is_nan() {
                    assert!(g.is_nan(), "{b:#06x}: {g}");
                } else {
                    assert_eq!(g.to_bits(), want.to_bits(), "{b:#06x}");
                }
            }
        }
    }
}
