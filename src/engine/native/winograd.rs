//! Winograd's F(2×2, 3×3) for float 3×3 convolutions, stride 1, padding 1
//! (ResNets' bottleneck convolutions; Lavin and Gray, arXiv 1509.09308):
//! each 2 × 2 block of output pixels (a tile) takes 16 products a pair of
//! channels instead of 36.
//!
//! - At load the weights become `U = G g Gᵀ`: 16 matrices `o × c`
//!   ([`weights`]), rows for the kernels' left side.
//! - Per frame, a block of tile rows at a time: each tile's 4 × 4 input
//!   window becomes `V = Bᵀ d B`, 16 values a channel, written straight
//!   into the kernels' right-side layout (one product per position ξ); the
//!   16 products `M[ξ] = U[ξ] · V[ξ]ᵀ`; then `Y = Aᵀ M A`, the bias, into
//!   the NCHW planes, and the fused epilogue on the block's output rows.
//!
//! The transforms are additions and halvings: exact in the weights (a
//! power of two) and a few roundings in the sums, against 9 · c in the
//! definition.

use crate::kernels::pool::{Columns, Pool, Split, MIN_PARALLEL_MACS};
use crate::kernels::{float_panels, packed_f32_len, Kernels};

use super::scratch::{PostFn, Scratch};
use crate::engine::schedule::linear::Conv;

/// Positions ξ of a transformed tile (4 × 4).
const XI: usize = 16;

/// Tiles a block's products aim at (whole tile rows, at least one): a few
/// pairs of the kernels' 16-tile panels, and the block's transformed
/// inputs and products (`16 · (c + o)` values a tile) near L2.
const BLOCK_TILES: usize = 64;

/// Whether a convolution of this kernel, stride, dilation, padding (before),
/// input and output size is one this path computes: 3 × 3, stride 1,
/// padding 1, the output as large as the input.
pub fn fits(
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    pad: [usize; 2],
    input: [usize; 2],
    output: [usize; 2],
) -> bool {
    kernel == [3, 3] && stride == [1, 1] && dilation == [1, 1] && pad == [1, 1] && input == output
}

/// `w` (OIHW, `o × c × 3 × 3`) as `U[ξ] = (G g Gᵀ)[ξ]`, 16 matrices `o ×
/// c` in a row per output channel.
pub fn weights(w: &[f32], o: usize, c: usize) -> Vec<f32> {
    // G · (g0, g1, g2): the 3-tap filter at the 4 points.
    let g = |a: f32, b: f32, d: f32| [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d];
    let mut u = vec![0f32; XI * o * c];
    for oc in 0..o {
        for ch in 0..c {
            let k = &w[(oc * c + ch) * 9..(oc * c + ch) * 9 + 9];
            // Columns first (G g), then rows (· Gᵀ).
            let cols = [0, 1, 2].map(|kx| g(k[kx], k[3 + kx], k[6 + kx]));
            for i in 0..4 {
                let row = g(cols[0][i], cols[1][i], cols[2][i]);
                for (j, v) in row.into_iter().enumerate() {
                    u[((i * 4 + j) * o + oc) * c + ch] = v;
                }
            }
        }
    }
    u
}

/// `Bᵀ · (d0, d1, d2, d3)`.
#[inline(always)]
fn bt(d: [f32; 4]) -> [f32; 4] {
    [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]
}

/// `Aᵀ · (m0, m1, m2, m3)`.
#[inline(always)]
fn at(m: [f32; 4]) -> [f32; 2] {
    [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]
}

/// Tiles along (rows, columns).
fn tiles(conv: &Conv) -> (usize, usize) {
    (conv.oh.div_ceil(2), conv.ow.div_ceil(2))
}

/// Scratch per tile row: transformed inputs (with a panel's padding) and
/// products.
pub fn scratch_per_tile_row(conv: &Conv) -> (usize, usize) {
    let tw = tiles(conv).1;
    (XI * conv.c * (tw + 15), XI * conv.o * tw)
}

/// Multiply-adds of one frame's products (against [`Conv::macs`] for the
/// definition).
pub fn macs(conv: &Conv) -> usize {
    let (th, tw) = tiles(conv);
    XI * th * tw * conv.c * conv.o
}

/// Runs `conv` (one that [`fits`]) with its weights as [`weights`] made them.
/// Threads take whole tile rows (pairs of output rows).
#[allow(clippy::too_many_arguments)]
pub fn run(
    conv: &Conv,
    u: &[f32],
    kern: &Kernels,
    pool: &Pool,
    x: &[f32],
    out: &mut [f32],
    scr: &mut Scratch,
    post: &PostFn<'_>,
) {
    let (c, o, h, w) = (conv.c, conv.o, conv.h, conv.w);
    let (p, (th, tw)) = (h * w, tiles(conv));
    let (v_row, m_row) = scratch_per_tile_row(conv);
    let block_rows = (BLOCK_TILES / tw.max(1)).max(1);
    let in_panels = kern.packs_f32_in_float_panels();
    pool.split_columns(
        macs(conv),
        MIN_PARALLEL_MACS,
        th,
        2 * w,
        1,
        Split::new(&mut scr.pa[..th * v_row], v_row),
        Split::new(&mut scr.c[..th * m_row], m_row),
        Split::<()>::empty(),
        Columns {
            buf: &mut out[..o * p],
            rows: o,
            row_len: p,
        },
        &|_, vs, ms, _, mut planes| {
            let first = planes.first();
            let end = first + planes.row(0).len();
            let (ty_end, mut ty) = (end.div_ceil(2 * w), first / (2 * w));
            while ty < ty_end {
                let rows = block_rows.min(ty_end - ty);
                let n = rows * tw;
                let v_len = packed_f32_len(n, c);
                let v = &mut vs[..XI * v_len];
                transform_input(conv, x, ty, n, in_panels, v_len, v);
                let m = &mut ms[..XI * o * n];
                for (xi, m) in m.chunks_exact_mut(o * n).enumerate() {
                    let (u, v) = (&u[xi * o * c..(xi + 1) * o * c], &v[xi * v_len..]);
                    kern.gemm_f32p(u, v, o, n, c, m);
                }
                // Output rows 2·ty .. of the block, in every plane.
                let (y0, y1) = (2 * ty, (2 * (ty + rows)).min(h));
                for oc in 0..o {
                    let plane = planes.row(oc);
                    let block = &mut plane[y0 * w - first..y1 * w - first];
                    transform_output(conv, m, oc, n, conv.bias[oc], block);
                    post(oc * p + y0 * w, block);
                }
                ty += rows;
            }
        },
    );
}

/// Tiles transformed together: one panel of the kernels' right side, a
/// vector of lanes for each value of the transforms.
const LANES: usize = float_panels::PANEL;

/// One value of each of [`LANES`] tiles.
type Lanes = [f32; LANES];

/// `Bᵀ · (d0, d1, d2, d3)`, lane by lane.
#[inline(always)]
fn bt_lanes(d: [&Lanes; 4]) -> [Lanes; 4] {
    let mut out = [[0f32; LANES]; 4];
    for l in 0..LANES {
        [out[0][l], out[1][l], out[2][l], out[3][l]] = bt([d[0][l], d[1][l], d[2][l], d[3][l]]);
    }
    out
}

/// `Aᵀ · (m0, m1, m2, m3)`, lane by lane.
#[inline(always)]
fn at_lanes(m: [&Lanes; 4]) -> [Lanes; 2] {
    let mut out = [[0f32; LANES]; 2];
    for l in 0..LANES {
        [out[0][l], out[1][l]] = at([m[0][l], m[1][l], m[2][l], m[3][l]]);
    }
    out
}

/// `V = Bᵀ d B` of the `n` tiles from tile row `ty` (whole tile rows), for
/// every channel: position ξ's matrix (`n` tiles × `c`) at `v[ξ · v_len..]`
/// in the kernels' layout: [`float_panels`] where `in_panels` (16 tiles a
/// panel, a vector store a channel and position), else a row per tile.
/// Missing tiles of the last panel are zero.
fn transform_input(
    conv: &Conv,
    x: &[f32],
    ty: usize,
    n: usize,
    in_panels: bool,
    v_len: usize,
    v: &mut [f32],
) {
    let (c, h, w) = (conv.c, conv.h, conv.w);
    let tw = tiles(conv).1;
    for q in 0..n.div_ceil(LANES) {
        let lanes = LANES.min(n - q * LANES);
        // Each lane's window: its first value's offset in a plane, or
        // `None` where it crosses the image's edge.
        let mut corner = [None; LANES];
        let mut origin = [(0usize, 0usize); LANES];
        for (l, (k, o)) in corner
            .iter_mut()
            .zip(origin.iter_mut())
            .enumerate()
            .take(lanes)
        {
            let j = q * LANES + l;
            let (y, xx) = (2 * (ty + j / tw), 2 * (j % tw));
            *o = (y, xx);
            if y >= 1 && y + 2 < h && xx >= 1 && xx + 2 < w {
                *k = Some((y - 1) * w + xx - 1);
            }
        }
        for ch in 0..c {
            let plane = &x[ch * h * w..(ch + 1) * h * w];
            // d[r][s]: the windows' value at row r, column s, by lane.
            let mut d = [[[0f32; LANES]; 4]; 4];
            for l in 0..lanes {
                match corner[l] {
                    Some(at) => {
                        for (r, dr) in d.iter_mut().enumerate() {
                            let row: &[f32; 4] =
                                plane[at + r * w..at + r * w + 4].try_into().expect("4");
                            for (s, v) in row.iter().enumerate() {
                                dr[s][l] = *v;
                            }
                        }
                    }
                    None => {
                        let (y, xx) = origin[l];
                        for (r, dr) in d.iter_mut().enumerate() {
                            let yy = (y + r).wrapping_sub(1);
                            for (s, ds) in dr.iter_mut().enumerate() {
                                let xs = (xx + s).wrapping_sub(1);
                                if yy < h && xs < w {
                                    ds[l] = plane[yy * w + xs];
                                }
                            }
                        }
                    }
                }
            }
            // Bᵀ d (columns), then · B (rows). Plain loops, not
            // `array::from_fn`, whose closures the compiler has left out of
            // line here (a call and a copy of 256 bytes for each column).
            let mut cols = [[[0f32; LANES]; 4]; 4];
            for (s, col) in cols.iter_mut().enumerate() {
                *col = bt_lanes([&d[0][s], &d[1][s], &d[2][s], &d[3][s]]);
            }
            for i in 0..4 {
                let row = bt_lanes([&cols[0][i], &cols[1][i], &cols[2][i], &cols[3][i]]);
                for (s, vals) in row.iter().enumerate() {
                    let m = &mut v[(i * 4 + s) * v_len..(i * 4 + s + 1) * v_len];
                    if in_panels {
                        let at = (q * c + ch) * LANES;
                        m[at..at + LANES].copy_from_slice(vals);
                    } else {
                        for (l, val) in vals.iter().enumerate().take(lanes) {
                            m[(q * LANES + l) * c + ch] = *val;
                        }
                    }
                }
            }
        }
    }
}

/// `Y = Aᵀ M A` + `bias` of output channel `oc` for the block's `n` tiles
/// (products `m`, position ξ's `o × n` at `ξ · o · n`) into `block`: the
/// plane's output rows of the block (whole rows; a last tile row's second
/// row and a last tile column's second column dropped where the plane
/// ends).
fn transform_output(conv: &Conv, m: &[f32], oc: usize, n: usize, bias: f32, block: &mut [f32]) {
    let (o, w) = (conv.o, conv.w);
    let tw = tiles(conv).1;
    let rows = block.len() / w.max(1);
    for q in 0..n.div_ceil(LANES) {
        let (j0, lanes) = (q * LANES, LANES.min(n - q * LANES));
        // Position ξ's products for the lanes' tiles.
        let mut v = [[0f32; LANES]; XI];
        for (xi, vx) in v.iter_mut().enumerate() {
            let at = (xi * o + oc) * n + j0;
            if lanes == LANES {
                // A constant length: vector moves, no call.
                *vx = m[at..at + LANES].try_into().expect("16 lanes");
            } else {
                vx[..lanes].copy_from_slice(&m[at..at + lanes]);
            }
        }
        // Aᵀ M (columns), then · A (rows); plain loops, as above.
        let mut cols = [[[0f32; LANES]; 2]; 4];
        for (s, col) in cols.iter_mut().enumerate() {
            *col = at_lanes([&v[s], &v[4 + s], &v[8 + s], &v[12 + s]]);
        }
        let mut rows_a = [[[0f32; LANES]; 2]; 2];
        for (i, row) in rows_a.iter_mut().enumerate() {
            *row = at_lanes([&cols[0][i], &cols[1][i], &cols[2][i], &cols[3][i]]);
        }
        for (i, row) in rows_a.iter().enumerate() {
            for l in 0..lanes {
                let (ty, tx) = ((j0 + l) / tw, (j0 + l) % tw);
                let y = 2 * ty + i;
                if y >= rows {
                    continue;
                }
                for (s, vals) in row.iter().enumerate() {
                    let xx = 2 * tx + s;
                    if xx < w {
                        block[y * w + xx] = vals[l] + bias;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `U`, `V` and `Y` as the paper's matrices give, on one tile: the
    /// 2 × 2 correlation of a 4 × 4 window with a 3 × 3 filter, exact for
    /// small integers.
    #[test]
    fn one_tile_is_the_correlation() {
        let g: Vec<f32> = (0..9).map(|i| (i as f32 - 4.0) * 0.5).collect();
        let d: Vec<f32> = (0..16).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
        let u = weights(&g, 1, 1);
        let mut vd = [[0f32; 4]; 4];
        for r in 0..4 {
            for s in 0..4 {
                vd[r][s] = d[r * 4 + s];
            }
        }
        let cols = [0, 1, 2, 3].map(|s| bt([vd[0][s], vd[1][s], vd[2][s], vd[3][s]]));
        let mut prod = [0f32; XI];
        for i in 0..4 {
            let row = bt([cols[0][i], cols[1][i], cols[2][i], cols[3][i]]);
            for s in 0..4 {
                prod[i * 4 + s] = row[s] * u[i * 4 + s];
            }
        }
        let cols = [0, 1, 2, 3].map(|s| at([prod[s], prod[4 + s], prod[8 + s], prod[12 + s]]));
        for i in 0..2 {
            let row = at([cols[0][i], cols[1][i], cols[2][i], cols[3][i]]);
            for (s, got) in row.into_iter().enumerate() {
                let mut want = 0f32;
                for ky in 0..3 {
                    for kx in 0..3 {
                        want += d[(i + ky) * 4 + s + kx] * g[ky * 3 + kx];
                    }
                }
                assert_eq!(got, want, "output ({i}, {s})");
            }
        }
    }
}
