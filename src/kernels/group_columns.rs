//! Packing a row-per-depth matrix's columns (a convolution's patches, per
//! frame) into [`group_panels`]' layout of four depths a group, whole
//! groups of whole panels at a time by a vector path's interleave of four
//! 16-byte rows; the last partial group and partial panel by
//! [`group_panels::pack_cols`], the plain twin (the same bytes, tested).

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
