//! aarch64 with the dot-product extension (FEAT_DotProd: Cortex-A76 /
//! Raspberry Pi 5, Cortex-A78AE / Jetson Orin, Neoverse; not Xavier's
//! Carmel, which has none). int8: weights packed once at load in
//! [`group_panels`]' layout, signed (16 channels × 4 depths per 64 bytes);
//! a micro-tile of 4 rows × 16 channels keeps 16 accumulators, and each
//! `sdot` (by element) multiplies four channels' four depths by four
//! activations of one row, picked from a 16-byte load of that row by lane,
//! adding into each channel's i32 sum: exact (a sum of four i8 products
//! never leaves i32), 16 multiply-adds an instruction, no horizontal sum.
//! The SMLAL path ([`super::neon`]) does 8 an instruction with a pair-add
//! and a horizontal sum per tile.

use std::arch::aarch64::*;
use std::arch::asm;

use crate::kernels::group_columns;
use crate::kernels::group_panels::{self, PANEL};

/// Rows of `x` per micro-tile: 4 × 4 accumulators, 4 activation and 4
/// weight registers of the 32.
const MR: usize = 4;

pub fn has_dotprod() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
}

/// One panel: 16 rows by `⌈k/4⌉` groups of 4 depths.
pub fn i8_panel_len(k: usize) -> usize {
    group_panels::panel_len::<4>(k)
}

/// [`Packing::AARCH64_DOTPROD`](crate::kernels::Packing::AARCH64_DOTPROD)'s int8 layout of the matrix whose row `j` is column `first + j`
/// of `src` (`k` rows of `ld`): whole groups of whole panels by
/// [`interleave4`].
pub fn pack_i8_cols(src: &[i8], ld: usize, first: usize, n: usize, k: usize, out: &mut [i8]) {
    group_columns::pack_cols(src, ld, first, n, k, 0, out, |rows, dst| {
        interleave4(rows, 0, dst)
    })
}

/// [`pack_i8_cols`] of the int8 matrix `quantize(v, r)` of `x`'s columns,
/// quantised on the way ([`group_columns::quantize_pack_cols`]).
pub fn quantize_pack_i8_cols(
    x: &[f32],
    ld: usize,
    first: usize,
    n: usize,
    k: usize,
    r: f32,
    out: &mut [i8],
) {
    group_columns::quantize_pack_cols(
        x,
        ld,
        first,
        n,
        k,
        r,
        0,
        out,
        |rows| {
            rows.map(|row| {
                let mut q = [0i8; PANEL];
                crate::kernels::elementwise::plain::quantize_into(row, r, &mut q);
                q
            })
        },
        |q, dst| interleave4([&q[0], &q[1], &q[2], &q[3]], 0, dst),
    )
}

/// One group of a panel: column `c`'s four depths `rows[0..4][c]` (each
/// `^ flip`) at bytes `4c..4c + 4`: two rounds of byte and half-word zips
/// (NEON, part of every aarch64 CPU).
#[inline(always)]
fn interleave4(rows: [&[i8; PANEL]; 4], flip: i8, dst: &mut [i8; 4 * PANEL]) {
    // SAFETY: NEON is part of aarch64; each load reads one of the 16-byte
    // arrays, the stores write the four 16-byte quarters of `dst`.
    #[allow(unused_unsafe)]
    unsafe {
        let f = vdupq_n_s8(flip);
        let [a, b, c, d] = rows.map(|r| veorq_s8(vld1q_s8(r.as_ptr()), f));
        let ab0 = vreinterpretq_s16_s8(vzip1q_s8(a, b));
        let ab1 = vreinterpretq_s16_s8(vzip2q_s8(a, b));
        let cd0 = vreinterpretq_s16_s8(vzip1q_s8(c, d));
        let cd1 = vreinterpretq_s16_s8(vzip2q_s8(c, d));
        let quarters = [
            vzip1q_s16(ab0, cd0),
            vzip2q_s16(ab0, cd0),
            vzip1q_s16(ab1, cd1),
            vzip2q_s16(ab1, cd1),
        ];
        let at = dst.as_mut_ptr();
        for (q, v) in quarters.into_iter().enumerate() {
            vst1q_s8(at.add(16 * q), vreinterpretq_s8_s16(v));
        }
    }
}

/// Only reached through [`super::detect`], which checked FEAT_DotProd.
/// `w` is [`Packing::AARCH64_DOTPROD`](crate::kernels::Packing::AARCH64_DOTPROD)'s int8 layout; [`group_panels::for_each_tile`]'s loop,
/// rows 4, 2 and 1 at a time.
pub fn gemm_i8(x: &[i8], w: &[i8], m: usize, n: usize, k: usize, out: &mut [i32]) {
    let panel = i8_panel_len(k);
    assert!(
        has_dotprod()
            && w.len() >= n.div_ceil(PANEL) * panel
            && x.len() >= m * k
            && out.len() >= m * n
    );
    if k == 0 {
        out[..m * n].fill(0);
        return;
    }
    group_panels::for_each_tile(w, m, n, panel, MR, |rows, i, j, wp| {
        // SAFETY: FEAT_DotProd is present (asserted); the tile reads
        // rows i..i + rows of `x` (k each, within m · k), the panel `wp`
        // (⌈k/4⌉ groups of 64 bytes: `panel` long), and writes rows
        // i..i + rows, channels j..min(j + 16, n) of `out` (m × n).
        unsafe {
            match rows {
                MR => tile::<MR>(x, wp, i, j, n, k, out),
                2 => tile::<2>(x, wp, i, j, n, k, out),
                _ => tile::<1>(x, wp, i, j, n, k, out),
            }
        }
    });
}

/// One group of four depths: the group's four weight vectors (channels
/// 4q..4q + 4 each) times lane `$lane` of each row's activation vector.
macro_rules! group {
    ($acc:ident, $xv:ident, $wp:expr, $g:expr, $lane:literal) => {{
        let base = $wp.as_ptr().add($g * PANEL * 4);
        let wv = [
            vld1q_s8(base),
            vld1q_s8(base.add(16)),
            vld1q_s8(base.add(32)),
            vld1q_s8(base.add(48)),
        ];
        for (ar, xr) in $acc.iter_mut().zip(&$xv) {
            for (a, wq) in ar.iter_mut().zip(&wv) {
                asm!(
                    "sdot {a:v}.4s, {w:v}.16b, {x:v}.4b[{lane}]",
                    a = inout(vreg) *a,
                    w = in(vreg) *wq,
                    x = in(vreg) *xr,
                    lane = const $lane,
                    options(pure, nomem, nostack, preserves_flags),
                );
            }
        }
    }};
}

/// `R` rows × one panel of 16 channels.
///
/// # Safety
/// FEAT_DotProd; rows i..i + R of `x` hold `k` values each; `wp` holds one
/// panel (⌈k/4⌉ groups of 64 bytes); `out` is `m × n` with i + R ≤ m and
/// j < n.
#[target_feature(enable = "neon,dotprod")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const R: usize>(
    x: &[i8],
    wp: &[i8],
    i: usize,
    j: usize,
    n: usize,
    k: usize,
    out: &mut [i32],
) {
    let kg = k.div_ceil(4);
    debug_assert!(wp.len() >= kg * PANEL * 4 && x.len() >= (i + R) * k);
    let mut acc = [[vdupq_n_s32(0); 4]; R];
    let k16 = k / 16 * 16;
    let mut t = 0;
    // SAFETY: (the loads and `sdot`s below) 16 activations at row·k + t
    // with t + 16 ≤ k16 ≤ k lie within the row; groups t/4 .. t/4 + 4 ≤ kg
    // lie within the panel; `sdot` only reads and writes the registers
    // named (FEAT_DotProd is enabled for this function).
    unsafe {
        while t < k16 {
            let xv: [int8x16_t; R] =
                std::array::from_fn(|r| vld1q_s8(x.as_ptr().add((i + r) * k + t)));
            let g = t / 4;
            group!(acc, xv, wp, g, 0);
            group!(acc, xv, wp, g + 1, 1);
            group!(acc, xv, wp, g + 2, 2);
            group!(acc, xv, wp, g + 3, 3);
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
        let g = t / 4;
        // SAFETY: groups g .. kg lie within the panel (kg − g ≤ 4).
        unsafe {
            group!(acc, xv, wp, g, 0);
            if g + 1 < kg {
                group!(acc, xv, wp, g + 1, 1);
            }
            if g + 2 < kg {
                group!(acc, xv, wp, g + 2, 2);
            }
            if g + 3 < kg {
                group!(acc, xv, wp, g + 3, 3);
            }
        }
    }
    let valid = (n - j).min(PANEL);
    for (r, ar) in acc.iter().enumerate() {
        let row = &mut out[(i + r) * n + j..(i + r) * n + j + valid];
        if valid == PANEL {
            for (q, a) in ar.iter().enumerate() {
                // SAFETY: channels 4q..4q + 4 of the 16 in `row`.
                unsafe { vst1q_s32(row.as_mut_ptr().add(4 * q), *a) };
            }
        } else {
            let mut b = [0i32; PANEL];
            for (q, a) in ar.iter().enumerate() {
                // SAFETY: `b` holds 16 i32.
                unsafe { vst1q_s32(b.as_mut_ptr().add(4 * q), *a) };
            }
            row.copy_from_slice(&b[..valid]);
        }
    }
}
