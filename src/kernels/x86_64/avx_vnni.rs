//! AVX-VNNI: `vpdpbusd` on 256-bit registers, on the client cores that
//! have it without AVX-512 (Alder Lake and later, the Atom cores of the
//! N100 class). The AVX-512 VNNI path's int8 layout ([`group_panels`] of
//! 4 depths, weights made unsigned: `w + 128`), read half a group at a
//! time: a micro-tile of 6 rows × 16 channels keeps 12 accumulators, each
//! `vpdpbusd` multiplying 8 channels' four depths by four activations of
//! one row broadcast to every lane, adding into each channel's i32 sum:
//! exact, 32 multiply-adds an instruction, no horizontal sum; the
//! `128 · Σ_k x` bias of the unsigned weights taken out at the end. The
//! float and element-wise kernels are AVX2's.

use std::arch::x86_64::*;

use crate::kernels::drive::holds;
use crate::kernels::group_panels::{self, for_each_tile_of, PANEL};

use super::{avx2, group};

/// Rows of `x` per micro-tile: 6 rows × 2 accumulators, beside the group's
/// 2 weight registers and 1 broadcast activation: 15 of the 16 registers.
const MR: usize = 6;

/// Whether this CPU runs these kernels (AVX-VNNI and AVX2's).
pub fn has() -> bool {
    is_x86_feature_detected!("avxvnni")
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// One panel: 16 rows by `⌈k/4⌉` groups of 4 depths.
pub fn i8_panel_len(k: usize) -> usize {
    group_panels::panel_len::<4>(k)
}

/// [`super::pack_unsigned_i8_cols`] of the int8 matrix `quantize(v, r)` of
/// `x`'s columns,
/// quantised on the way (AVX2's quantiser; checked).
pub fn quantize_pack_i8_cols(
    x: &[f32],
    ld: usize,
    first: usize,
    n: usize,
    k: usize,
    r: f32,
    out: &mut [i8],
) {
    assert!(has());
    // SAFETY: the CPU has AVX2 (asserted); every access is bounds-checked.
    unsafe { avx2::quantize_pack_cols(x, ld, first, n, k, r, i8::MIN, out) }
}

/// Rows whose `128 · Σ_k x` biases are taken once, before the panels pass
/// over them (as the AVX-512 VNNI kernel's blocks).
const SUM_ROWS: usize = 512;

/// Only reached through [`super::detect`], which checked AVX-VNNI. `w` is
/// [`Packing::AVX_VNNI`](crate::kernels::Packing::AVX_VNNI)'s int8 layout.
/// Blocks of `SUM_ROWS` rows (their sums taken once), in each
/// [`for_each_tile_of`]'s loop, rows 6, 2 and 1 at a time.
pub fn gemm_i8(x: &[i8], w: &[i8], m: usize, n: usize, k: usize, out: &mut [i32]) {
    let panel = i8_panel_len(k);
    assert!(
        has()
            && holds(w.len(), &[n.div_ceil(PANEL), panel])
            && holds(x.len(), &[m, k])
            && holds(out.len(), &[m, n])
    );
    if k == 0 {
        out[..m * n].fill(0);
        return;
    }
    let mut bias = [0i32; SUM_ROWS];
    let mut r0 = 0;
    while r0 < m {
        let r1 = (r0 + SUM_ROWS).min(m);
        for (b, i) in bias.iter_mut().zip(r0..r1) {
            // SAFETY: AVX2 and AVX-VNNI are present (asserted).
            *b = 128 * unsafe { row_sum(&x[i * k..(i + 1) * k]) };
        }
        for_each_tile_of(w, r0..r1, n, panel, MR, |rows, i, j, wp| {
            let bias = &bias[i - r0..];
            // SAFETY: AVX-VNNI and AVX2 are present (asserted); the tile
            // reads rows i..i + rows ≤ m of `x` (k each, within m · k), the
            // panel `wp` (⌈k/4⌉ groups of 64 bytes: `panel` long), their
            // biases (`rows` of `bias`), and writes rows i..i + rows,
            // channels j..min(j + 16, n) of `out` (m × n).
            unsafe {
                match rows {
                    MR => tile::<MR>(x, wp, i, j, n, k, bias, out),
                    2 => tile::<2>(x, wp, i, j, n, k, bias, out),
                    _ => tile::<1>(x, wp, i, j, n, k, bias, out),
                }
            }
        });
        r0 = r1;
    }
}

/// `Σ_k x[k]` of one activation row, 32 bytes a step (`vpdpbusd` of ones),
/// the last bytes one at a time.
///
/// # Safety
/// AVX2 and AVX-VNNI.
#[target_feature(enable = "avx2,avxvnni")]
fn row_sum(x: &[i8]) -> i32 {
    let ones = _mm256_set1_epi8(1);
    let mut acc = _mm256_setzero_si256();
    let mut chunks = x.chunks_exact(32);
    for c in &mut chunks {
        // SAFETY: `c` is 32 bytes.
        let v = unsafe { _mm256_loadu_si256(c.as_ptr().cast()) };
        acc = _mm256_dpbusd_avx_epi32(acc, ones, v);
    }
    let mut lanes = [0i32; 8];
    // SAFETY: 8 i32 into an 8-value array.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), acc) };
    lanes.iter().sum::<i32>() + chunks.remainder().iter().map(|&v| v as i32).sum::<i32>()
}

/// `R` rows × one panel of 16 channels: `2R` accumulators, each group's two
/// halves (channels 0–7 and 8–15, four depths each) against each row's
/// four activations broadcast; stored less each row's `128 · Σ_k x`
/// (`bias[r]`).
///
/// # Safety
/// AVX2 and AVX-VNNI; rows i..i + R of `x` hold `k` values each; `wp` holds
/// one panel (⌈k/4⌉ groups of 64 bytes); `bias` at least `R` values; `out`
/// is `m × n` with i + R ≤ m and j < n.
#[target_feature(enable = "avx2,avxvnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const R: usize>(
    x: &[i8],
    wp: &[i8],
    i: usize,
    j: usize,
    n: usize,
    k: usize,
    bias: &[i32],
    out: &mut [i32],
) {
    let kg = k.div_ceil(4);
    let full = k / 4;
    debug_assert!(wp.len() >= kg * PANEL * 4 && x.len() >= (i + R) * k && bias.len() >= R);
    let mut acc = [[_mm256_setzero_si256(); 2]; R];
    // One group of four depths: its two halves, then per row its four
    // activations broadcast (`v(r)`: straight from memory where whole).
    let mut step = |g: usize, v: &dyn Fn(usize) -> __m256i| {
        // SAFETY: group g < kg is 64 bytes inside the panel (the caller's).
        let b: [__m256i; 2] = std::array::from_fn(|h| unsafe {
            _mm256_loadu_si256(wp.as_ptr().add(g * 64 + 32 * h).cast())
        });
        for (r, ar) in acc.iter_mut().enumerate() {
            let a = v(r);
            for (s, bh) in ar.iter_mut().zip(&b) {
                *s = _mm256_dpbusd_avx_epi32(*s, *bh, a);
            }
        }
    };
    for g in 0..full {
        // SAFETY: bytes (i + r)·k + 4g .. + 4 lie within row i + r of x; a
        // broadcast load from memory.
        step(g, &|r| unsafe {
            _mm256_set1_epi32(std::ptr::read_unaligned(
                x.as_ptr().add((i + r) * k + g * 4).cast::<i32>(),
            ))
        });
    }
    if full < kg {
        step(full, &|r| {
            _mm256_set1_epi32(group(x, (i + r) * k + full * 4, (i + r + 1) * k))
        });
    }
    let valid = (n - j).min(PANEL);
    for (r, ar) in acc.iter().enumerate() {
        let b = _mm256_set1_epi32(bias[r]);
        let sums = ar.map(|v| _mm256_sub_epi32(v, b));
        super::avx2::store16(&sums, &mut out[(i + r) * n + j..(i + r) * n + j + valid]);
    }
}
