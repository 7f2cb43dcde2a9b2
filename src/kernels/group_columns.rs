//! Packing a row-per-depth matrix's columns (a convolution's patches, per
//! frame) into [`group_panels`]' layout of four depths a group, whole
//! groups of whole panels at a time by a vector path's interleave of four
//! 16-byte rows; the last partial group and partial panel by
//! [`group_panels::pack_cols`], the plain twin (the same bytes, tested).
//! [`quantize_pack_cols`] does the same from f32 columns, quantising each
//! 16-value line on its way into the group (no row-per-depth int8 copy).

use super::elementwise::plain::quantize_into;
use super::group_panels::{self, PANEL};

/// Depths of one group.
const D: usize = 4;

/// [`group_panels::pack_cols`]`::<4>` of columns `first..first + n` of
/// `src` (`k` rows of `ld`), each value `^ flip`, into `out`: each whole
/// group of a whole panel by `interleave(rows, group)`, which writes
/// column `c`'s four depths `rows[0..4][c]`, each `^ flip`, at bytes
/// `4c..4c + 4` of the group.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn pack_cols(
    src: &[i8],
    ld: usize,
    first: usize,
    n: usize,
    k: usize,
    flip: i8,
    out: &mut [i8],
    interleave: impl Fn([&[i8; PANEL]; D], &mut [i8; D * PANEL]),
) {
    let full = n / PANEL;
    if k < D || full == 0 {
        return group_panels::pack_cols::<D>(src, ld, first, n, k, flip, out);
    }
    let plen = group_panels::panel_len::<D>(k);
    let groups = k / D;
    let out = &mut out[..n.div_ceil(PANEL) * plen];
    let (whole, rest) = out.split_at_mut(full * plen);
    for (p, panel) in whole.chunks_exact_mut(plen).enumerate() {
        let j0 = first + p * PANEL;
        let line = |t: usize| -> &[i8; PANEL] {
            src[t * ld + j0..t * ld + j0 + PANEL]
                .try_into()
                .expect("16 columns")
        };
        let (done, part) = panel.split_at_mut(groups * PANEL * D);
        for (g, dst) in done.chunks_exact_mut(PANEL * D).enumerate() {
            let t = D * g;
            let dst = dst.try_into().expect("one group");
            interleave([line(t), line(t + 1), line(t + 2), line(t + 3)], dst);
        }
        if !part.is_empty() {
            part.fill(flip);
            for t in D * groups..k {
                for (c, v) in line(t).iter().enumerate() {
                    part[c * D + t % D] = v ^ flip;
                }
            }
        }
    }
    if n > full * PANEL {
        let left = n - full * PANEL;
        group_panels::pack_cols::<D>(src, ld, first + full * PANEL, left, k, flip, rest);
    }
}

/// [`group_panels::pack_cols`]`::<4>` of the int8 matrix `quantize(v, r)`
/// of columns `first..first + n` of `x` (`k` rows of `ld`, f32; `quantize`
/// as [`crate::kernels::elementwise::plain::quantize_into`]), each value
/// `^ flip`, into `out`, in one pass: each whole group's four lines of 16
/// columns quantised into registers by `quantize4` (as `quantize` does),
/// then `interleave`d as [`pack_cols`] does (a partial panel's lines padded
/// with zeros, which `^ flip` makes the padding `pack_cols` writes); a
/// partial group's lines by the plain `quantize_into` itself.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn quantize_pack_cols<Q>(
    x: &[f32],
    ld: usize,
    first: usize,
    n: usize,
    k: usize,
    r: f32,
    flip: i8,
    out: &mut [i8],
    quantize4: impl Fn([&[f32; PANEL]; D]) -> [Q; D],
    interleave: impl Fn([Q; D], &mut [i8; D * PANEL]),
) {
    let plen = group_panels::panel_len::<D>(k);
    if plen == 0 {
        return; // no depth: nothing to pack
    }
    let groups = k / D;
    let out = &mut out[..n.div_ceil(PANEL) * plen];
    // A partial group's line, by the plain quantiser.
    let line = |t: usize, j0: usize, cols: usize| -> [i8; PANEL] {
        let mut q = [0i8; PANEL];
        quantize_into(&x[t * ld + j0..t * ld + j0 + cols], r, &mut q[..cols]);
        q
    };
    // Group by group, each across every panel: four input rows read
    // straight through (not `k` rows a panel at a time).
    let full = n / PANEL;
    for g in 0..groups {
        let t = D * g;
        for (p, panel) in out.chunks_exact_mut(plen).enumerate() {
            let dst = (&mut panel[g * PANEL * D..(g + 1) * PANEL * D])
                .try_into()
                .expect("one group");
            let j0 = first + p * PANEL;
            if p < full {
                // A whole panel: the four lines straight from `x`.
                let line = |t: usize| -> &[f32; PANEL] {
                    x[t * ld + j0..t * ld + j0 + PANEL]
                        .try_into()
                        .expect("16 columns")
                };
                interleave(
                    quantize4([line(t), line(t + 1), line(t + 2), line(t + 3)]),
                    dst,
                );
            } else {
                // The last, partial panel: its lines padded with zeros.
                let cols = n - p * PANEL;
                let pad = |t: usize| -> [f32; PANEL] {
                    let mut v = [0f32; PANEL];
                    v[..cols].copy_from_slice(&x[t * ld + j0..t * ld + j0 + cols]);
                    v
                };
                let rows = [pad(t), pad(t + 1), pad(t + 2), pad(t + 3)];
                interleave(quantize4([&rows[0], &rows[1], &rows[2], &rows[3]]), dst);
            }
        }
    }
    if groups * D < k {
        for (p, panel) in out.chunks_exact_mut(plen).enumerate() {
            let (j0, cols) = (first + p * PANEL, PANEL.min(n - p * PANEL));
            let part = &mut panel[groups * PANEL * D..];
            part.fill(flip);
            for t in D * groups..k {
                for (c, v) in line(t, j0, cols)[..cols].iter().enumerate() {
                    part[c * D + t % D] = v ^ flip;
                }
            }
        }
    }
}
