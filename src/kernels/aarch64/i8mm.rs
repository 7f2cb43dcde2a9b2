//! aarch64 with the int8 matrix multiply (FEAT_I8MM: Cortex-A510/A710/X2
//! and later, Neoverse V1/N2, Apple M2; none of the boards we target: Pi 5's
//! A76 and Orin's A78AE have the dot product only). int8: weights packed
//! once at load in [`group_panels`]' layout with groups of 8 depths, signed
//! (each 16 bytes: the 8 depths of two channels). One `smmla` multiplies a
//! 2 × 8 block of activations (the same 8 depths of two rows) by the 8 × 2
//! block of two channels, adding the 2 × 2 products into one i32 vector:
//! 32 multiply-adds an instruction (`sdot` does 16), exact (a sum of eight
//! i8 products never leaves i32). A micro-tile of 4 rows (two pairs) × 16
//! channels keeps 16 accumulators; a pair of 16-byte row loads gives both
//! 8-depth halves by `zip1`/`zip2` on 64-bit lanes.

use std::arch::aarch64::*;
use std::arch::asm;

use crate::kernels::group_panels::{self, PANEL};

/// Depths of one group: one `smmla`'s 8.
const D: usize = 8;
/// Rows of `x` per micro-tile: 2 pairs × 8 channel pairs = 16
/// accumulators, 4 activation and 8 weight registers of the 32.
const MR: usize = 4;

pub fn has_i8mm() -> bool {
    std::arch::is_aarch64_feature_detected!("i8mm")
}

/// One panel: 16 rows by `⌈k/8⌉` groups of 8 depths.
pub fn i8_panel_len(k: usize) -> usize {
    group_panels::panel_len::<D>(k)
}

/// [`Packing::AARCH64_I8MM`](crate::kernels::Packing::AARCH64_I8MM)'s int8 layout of the matrix whose row `j` is column `first + j`
/// of `src` (`k` rows of `ld`).
pub fn pack_i8_cols(src: &[i8], ld: usize, first: usize, n: usize, k: usize, out: &mut [i8]) {
    group_panels::pack_cols::<D>(src, ld, first, n, k, 0, out)
}

/// Only reached through [`super::detect`], which checked FEAT_I8MM. `w` is
/// [`Packing::AARCH64_I8MM`](crate::kernels::Packing::AARCH64_I8MM)'s int8 layout; [`group_panels::for_each_tile`]'s loop, rows 4, 2
/// and 1 at a time.
pub fn gemm_i8(x: &[i8], w: &[i8], m: usize, n: usize, k: usize, out: &mut [i32]) {
    let panel = i8_panel_len(k);
    assert!(
        has_i8mm()
            && w.len() >= n.div_ceil(PANEL) * panel
            && x.len() >= m * k
            && out.len() >= m * n
    );
    if k == 0 {
        out[..m * n].fill(0);
        return;
    }
    group_panels::for_each_tile(w, m, n, panel, MR, |rows, i, j, wp| {
        // SAFETY: FEAT_I8MM is present (asserted); the tile reads rows
        // i..i + rows of `x` (k each, within m · k), the panel `wp`
        // (⌈k/8⌉ groups of 128 bytes: `panel` long), and writes rows
        // i..i + rows, channels j..min(j + 16, n) of `out` (m × n).
        unsafe {
            match rows {
                MR => tile::<MR, 2>(x, wp, i, j, n, k, out),
                2 => tile::<2, 1>(x, wp, i, j, n, k, out),
                _ => tile::<1, 1>(x, wp, i, j, n, k, out),
            }
        }
    });
}

/// One group of 8 depths: the group's eight weight vectors (channel pairs
/// 2q, 2q + 1) times each row pair's activation block `$xa`.
macro_rules! group {
    ($acc:ident, $xa:expr, $wp:expr, $g:expr) => {{
        let base = $wp.as_ptr().add($g * PANEL * D);
        let wv: [int8x16_t; 8] = std::array::from_fn(|q| vld1q_s8(base.add(16 * q)));
        for (ar, xr) in $acc.iter_mut().zip($xa) {
            for (a, wq) in ar.iter_mut().zip(&wv) {
                asm!(
                    "smmla {a:v}.4s, {x:v}.16b, {w:v}.16b",
                    a = inout(vreg) *a,
                    x = in(vreg) xr,
                    w = in(vreg) *wq,
                    options(pure, nomem, nostack, preserves_flags),
                );
            }
        }
    }};
}

/// The two 8-depth blocks of each row pair from 16-byte loads of its rows:
/// `[row 2p, depths 0–7 | row 2p+1, depths 0–7]` and the same for depths
/// 8–15. A pair without its second row (`R` odd) pairs with zeros.
///
/// # Safety
/// NEON (baseline on aarch64); registers only.
#[inline(always)]
unsafe fn pairs<const R: usize, const P: usize>(
    xv: [int8x16_t; R],
) -> ([int8x16_t; P], [int8x16_t; P]) {
    // SAFETY: register-only NEON operations.
    unsafe {
        let zero = vdupq_n_s8(0);
        let row = |r: usize| {
            if r < R {
                vreinterpretq_s64_s8(xv[r])
            } else {
                vreinterpretq_s64_s8(zero)
            }
        };
        let lo =
            std::array::from_fn(|p| vreinterpretq_s8_s64(vzip1q_s64(row(2 * p), row(2 * p + 1))));
        let hi =
            std::array::from_fn(|p| vreinterpretq_s8_s64(vzip2q_s64(row(2 * p), row(2 * p + 1))));
        (lo, hi)
    }
}

/// `R` rows (`P` = ⌈R/2⌉ pairs) × one panel of 16 channels.
///
/// # Safety
/// FEAT_I8MM; rows i..i + R of `x` hold `k` values each; `wp` holds one
/// panel (⌈k/8⌉ groups of 128 bytes); `out` is `m × n` with i + R ≤ m and
/// j < n.
#[target_feature(enable = "neon,i8mm")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const R: usize, const P: usize>(
    x: &[i8],
    wp: &[i8],
    i: usize,
    j: usize,
    n: usize,
    k: usize,
    out: &mut [i32],
) {
    let kg = k.div_ceil(D);
    debug_assert!(P == R.div_ceil(2) && wp.len() >= kg * PANEL * D && x.len() >= (i + R) * k);
    // acc[p][q]: rows 2p, 2p + 1 × channels 2q, 2q + 1, as
    // [r0·c0, r0·c1, r1·c0, r1·c1].
    let mut acc = [[vdupq_n_s32(0); 8]; P];
    let k16 = k / 16 * 16;
    let mut t = 0;
    // SAFETY: (the loads and `smmla`s below) 16 activations at row·k + t
    // with t + 16 ≤ k16 ≤ k lie within the row; groups t/8, t/8 + 1 < kg
    // lie within the panel; `smmla` only reads and writes the registers
    // named (FEAT_I8MM is enabled for this function).
    unsafe {
        while t < k16 {
            let xv: [int8x16_t; R] =
                std::array::from_fn(|r| vld1q_s8(x.as_ptr().add((i + r) * k + t)));
            let (lo, hi) = pairs::<R, P>(xv);
            let g = t / D;
            group!(acc, lo, wp, g);
            group!(acc, hi, wp, g + 1);
            t += 16;
        }
    }
    if t < k {
        // The last 1..15 depths, zero-padded to 16 (the panel's padding
        // weights are zero too); only the groups the panel holds.
        let xv: [int8x16_t; R] = std::array::from_fn(|r| {
            let mut b = [0i8; 16];
            b[..k - t].copy_from_slice(&x[(i + r) * k + t..(i + r + 1) * k]);
            // SAFETY: `b` is 16 bytes.
            unsafe { vld1q_s8(b.as_ptr()) }
        });
        let g = t / D;
        // SAFETY: groups g .. kg lie within the panel (kg − g ≤ 2).
        unsafe {
            let (lo, hi) = pairs::<R, P>(xv);
            group!(acc, lo, wp, g);
            if g + 1 < kg {
                group!(acc, hi, wp, g + 1);
            }
        }
    }
    let valid = (n - j).min(PANEL);
    for (p, ap) in acc.iter().enumerate() {
        // Row 2p is the low half of each channel pair's vector, row 2p + 1
        // the high half: two pairs' halves make four channels.
        let mut rows = [[0i32; PANEL]; 2];
        for q in (0..8).step_by(2) {
            // SAFETY: register-only NEON, then stores of 4 i32 at channels
            // 2q..2q + 4 of the 16-wide rows of `rows`.
            unsafe {
                let (a, b) = (
                    vreinterpretq_s64_s32(ap[q]),
                    vreinterpretq_s64_s32(ap[q + 1]),
                );
                vst1q_s32(
                    rows[0].as_mut_ptr().add(2 * q),
                    vreinterpretq_s32_s64(vzip1q_s64(a, b)),
                );
                vst1q_s32(
                    rows[1].as_mut_ptr().add(2 * q),
                    vreinterpretq_s32_s64(vzip2q_s64(a, b)),
                );
            }
        }
        for (h, row) in rows.iter().enumerate().take(R - 2 * p) {
            let at = (i + 2 * p + h) * n + j;
            out[at..at + valid].copy_from_slice(&row[..valid]);
        }
    }
}
