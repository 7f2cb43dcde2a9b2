//! AVX2 + FMA + F16C. int8: weights packed once at load in
//! [`group_panels`]' layout, signed (16 channels × 4 depths per 64 bytes);
//! each group's 64 bytes sign-extended to i16 in four registers
//! (`vpmovsxbw`), each row's four activations likewise (the four repeated),
//! multiplied and pair-summed into i32 (`vpmaddwd`): exact, unlike
//! `vpmaddubsw`, whose i16 pair sums saturate; each channel's two pair
//! sums added once at the end of the tile. f16 and f32 rows: 8 weights
//! (widened in registers, `vcvtph2ps`), fused multiply-add in f32, tiles of
//! 2 rows × 4 output channels (`kernels::drive`), tails one element at a
//! time. Float weights packed in [`float_panels`] (linear layers,
//! convolutions; per frame, a convolution's patches and the right side of
//! attention's products): an outer-product micro-tile of
//! 6 rows × 16 channels, 12 accumulators, each depth two weight vectors and
//! one broadcast activation per row (BLIS's Haswell shape: 15 of the 16
//! registers).

use std::arch::x86_64::*;

use half::f16;

use crate::kernels::drive::holds;
use crate::kernels::group_panels::{self, for_each_tile};
use crate::kernels::{drive, float_panels, group_columns, scalar};

use super::{group, interleave4_regs};

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

#[target_feature(enable = "avx")]
fn hsum_f32(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0b01));
    _mm_cvtss_f32(s)
}

/// The 2 × 4 dot products of two activation rows with four weight rows
/// (f32 activations, f16 weights): 8 accumulators, 2 activation registers,
/// 1 weight register (of 16).
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

/// Rows of `x` per int8 micro-tile: 2 rows × one panel's four quarters
/// (4 channels, two depth pairs each) keep 8 accumulators, beside the
/// 4 widened weight quarters and 1 widened activation group: 13 of the 16
/// registers.
const I8_MR: usize = 2;

/// One int8 panel: 16 rows by `⌈k/4⌉` groups of 4 depths.
pub fn i8_panel_len(k: usize) -> usize {
    group_panels::panel_len::<4>(k)
}

/// [`super::pack_signed_i8_cols`] of the int8 matrix `quantize(v, r)` of
/// `x`'s columns,
/// quantised on the way ([`group_columns::quantize_pack_cols`]; AVX2,
/// checked).
pub fn quantize_pack_i8_cols(
    x: &[f32],
    ld: usize,
    first: usize,
    n: usize,
    k: usize,
    r: f32,
    out: &mut [i8],
) {
    assert!(is_x86_feature_detected!("avx2"));
    // SAFETY: the CPU has AVX2 (asserted); every access in the driver is
    // bounds-checked, `quantize16` reads its two arrays.
    unsafe { quantize_pack_cols(x, ld, first, n, k, r, 0, out) }
}

/// [`group_columns::quantize_pack_cols`] with [`quantize16`], each byte
/// `^ flip` (0 here; `i8::MIN` for the AVX-VNNI path's unsigned panels).
///
/// # Safety
/// AVX2.
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn quantize_pack_cols(
    x: &[f32],
    ld: usize,
    first: usize,
    n: usize,
    k: usize,
    r: f32,
    flip: i8,
    out: &mut [i8],
) {
    group_columns::quantize_pack_cols(
        x,
        ld,
        first,
        n,
        k,
        r,
        flip,
        out,
        // SAFETY: AVX2 is enabled here (the caller's).
        |rows| rows.map(|row| unsafe { quantize16(row, r) }),
        |q, dst| interleave4_regs(q, flip, dst),
    )
}

/// 16 values quantised as [`crate::kernels::quantize`] does: scaled by `r`,
/// NaN to 0, clamped to ±127, rounded to nearest even (the default
/// rounding of `vcvtps2dq`), narrowed with saturation (which the clamp
/// leaves nothing to do).
///
/// # Safety
/// AVX2.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn quantize16(row: &[f32; 16], r: f32) -> __m128i {
    let rv = _mm256_set1_ps(r);
    let (lo, hi) = (_mm256_set1_ps(-127.0), _mm256_set1_ps(127.0));
    let q = |v: __m256| {
        let v = _mm256_mul_ps(v, rv);
        let ordered = _mm256_cmp_ps::<_CMP_ORD_Q>(v, v);
        _mm256_cvtps_epi32(_mm256_and_ps(
            ordered,
            _mm256_min_ps(_mm256_max_ps(v, lo), hi),
        ))
    };
    // SAFETY: two 8-value loads inside the 16-value array.
    let (a, b) = unsafe {
        (
            q(_mm256_loadu_ps(row.as_ptr())),
            q(_mm256_loadu_ps(row.as_ptr().add(8))),
        )
    };
    // i16 lanes a0..3 b0..3 | a4..7 b4..7, put back in order.
    let w = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(a, b));
    _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w))
}

/// Only reached through [`super::detect`], which checked AVX2. `w` is
/// [`Packing::AVX2`](crate::kernels::Packing::AVX2)'s int8 layout;
/// [`for_each_tile`]'s loop, rows 2 and 1 at a time.
pub fn gemm_i8(x: &[i8], w: &[i8], m: usize, n: usize, k: usize, out: &mut [i32]) {
    let panel = i8_panel_len(k);
    assert!(
        is_x86_feature_detected!("avx2")
            && holds(w.len(), &[n.div_ceil(group_panels::PANEL), panel])
            && holds(x.len(), &[m, k])
            && holds(out.len(), &[m, n])
    );
    if k == 0 {
        out[..m * n].fill(0);
        return;
    }
    for_each_tile(w, m, n, panel, I8_MR, |rows, i, j, wp| {
        // SAFETY: AVX2 is present (asserted); the tile reads rows
        // i..i + rows of `x` (k each, within m · k), the panel `wp`
        // (⌈k/4⌉ groups of 64 bytes: `panel` long), and writes rows
        // i..i + rows, channels j..min(j + 16, n) of `out` (m × n).
        unsafe {
            match rows {
                I8_MR => tile_i8::<I8_MR>(x, wp, i, j, n, k, out),
                _ => tile_i8::<1>(x, wp, i, j, n, k, out),
            }
        }
    });
}

/// `R` rows × one panel of 16 channels. Each group of four depths: the
/// panel's 64 bytes widened to four registers of i16 (quarter `q`:
/// channels `4q..4q + 4`, four depths each), each row's four activations
/// widened and repeated across one register; `vpmaddwd` gives each
/// channel two i32 lanes (depths 0–1 and 2–3), added to the sums. At the
/// end each channel's two lanes are added (`vphaddd`, lanes put back in
/// order).
///
/// # Safety
/// AVX2; rows i..i + R of `x` hold `k` values each; `wp` holds one panel
/// (⌈k/4⌉ groups of 64 bytes); `out` is `m × n` with i + R ≤ m and j < n.
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_i8<const R: usize>(
    x: &[i8],
    wp: &[i8],
    i: usize,
    j: usize,
    n: usize,
    k: usize,
    out: &mut [i32],
) {
    let kg = k.div_ceil(4);
    let full = k / 4;
    debug_assert!(wp.len() >= kg * group_panels::PANEL * 4 && x.len() >= (i + R) * k);
    let mut acc = [[_mm256_setzero_si256(); 4]; R];
    // One group of four depths: its four quarters widened, then per row
    // its four activations (`v(r)`: loaded straight from memory where
    // whole) widened and repeated.
    let mut step = |g: usize, v: &dyn Fn(usize) -> __m256i| {
        // SAFETY: group g < kg is 64 bytes inside the panel (the caller's).
        let wv: [__m256i; 4] = std::array::from_fn(|q| unsafe {
            _mm256_cvtepi8_epi16(_mm_loadu_si128(wp.as_ptr().add(g * 64 + 16 * q).cast()))
        });
        for (r, ar) in acc.iter_mut().enumerate() {
            let xv = v(r);
            for (a, wq) in ar.iter_mut().zip(&wv) {
                *a = _mm256_add_epi32(*a, _mm256_madd_epi16(*wq, xv));
            }
        }
    };
    for g in 0..full {
        // SAFETY: bytes (i + r)·k + 4g .. + 4 lie within row i + r of x; a
        // broadcast load from memory.
        step(g, &|r| unsafe {
            _mm256_cvtepi8_epi16(_mm_set1_epi32(std::ptr::read_unaligned(
                x.as_ptr().add((i + r) * k + g * 4).cast::<i32>(),
            )))
        });
    }
    if full < kg {
        step(full, &|r| {
            _mm256_cvtepi8_epi16(_mm_set1_epi32(group(
                x,
                (i + r) * k + full * 4,
                (i + r + 1) * k,
            )))
        });
    }
    let valid = (n - j).min(group_panels::PANEL);
    for (r, ar) in acc.iter().enumerate() {
        // Lanes c0 c1 c4 c5 | c2 c3 c6 c7 after the pairwise add: qwords
        // 0, 2, 1, 3 put them in order.
        let sums = [
            _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_hadd_epi32(ar[0], ar[1])),
            _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_hadd_epi32(ar[2], ar[3])),
        ];
        store16(&sums, &mut out[(i + r) * n + j..(i + r) * n + j + valid]);
    }
}

/// The first `to.len()` (at most 16) of the 16 i32 in `v` into `to`:
/// stored straight where all 16 fit, else under a lane mask (no copy
/// through memory, no call that would spill the caller's sums).
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn store16(v: &[__m256i; 2], to: &mut [i32]) {
    assert!(to.len() <= 16);
    if to.len() == 16 {
        for (h, v) in v.iter().enumerate() {
            // SAFETY: `to` holds 16 i32.
            unsafe { _mm256_storeu_si256(to.as_mut_ptr().add(8 * h).cast(), *v) };
        }
    } else {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        for (h, v) in v.iter().enumerate().take(to.len().div_ceil(8)) {
            // Lanes 8h + l < len: all ones where the value is stored.
            let left = _mm256_set1_epi32(to.len() as i32 - 8 * h as i32);
            let mask = _mm256_cmpgt_epi32(left, lanes);
            // SAFETY: 8h < to.len(), and only lanes 8h + l < to.len() are
            // written (masked lanes are neither written nor faulted on).
            unsafe { _mm256_maskstore_epi32(to.as_mut_ptr().add(8 * h), mask, *v) };
        }
    }
}
