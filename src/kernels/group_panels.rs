//! The int8 weight layout of the packed int8 kernels: panels of 16 output
//! channels, each panel `⌈k/D⌉` groups of `[16 channels][D depths]`.
//! `D = 4` for the dot-product kernels (x86_64 `vpdpbusd`, aarch64 `sdot`:
//! 64 bytes a group, what one instruction multiplies against four
//! activations of one row, four at a time per channel; AVX2's `vpmaddwd`
//! widens a group to i16 in four registers); `D = 8` for aarch64's
//! `smmla` (128 bytes a group: each 16 bytes are the 8 depths of two
//! channels, the 8 × 2 matrix one instruction multiplies). Every byte is
//! stored XOR `flip`: `i8::MIN` makes the weights unsigned (`w + 128`, for
//! `vpdpbusd`), 0 keeps them signed (`sdot`, `smmla`, `vpmaddwd`).
//! Padding (channels past `n`, depths past `k`) holds a zero weight.
//! Plain code, no SIMD: packing runs at load, and per frame for a
//! convolution's patches.

/// Output channels of one panel.
pub const PANEL: usize = 16;

/// Values one panel of depth `k` takes, in groups of `D` depths.
pub fn panel_len<const D: usize>(k: usize) -> usize {
    PANEL * k.div_ceil(D) * D
}

/// `w` (`n × k`, a row per output channel) packed, with `flip`.
pub fn pack<const D: usize>(w: &[i8], n: usize, k: usize, flip: i8) -> Vec<i8> {
    let mut out = vec![flip; n.div_ceil(PANEL) * panel_len::<D>(k)];
    let kg = k.div_ceil(D);
    if kg == 0 {
        return out;
    }
    for (p, panel) in out.chunks_exact_mut(kg * PANEL * D).enumerate() {
        for c in 0..PANEL.min(n - p * PANEL) {
            let row = &w[(p * PANEL + c) * k..(p * PANEL + c + 1) * k];
            for (g, group) in row.chunks(D).enumerate() {
                let at = (g * PANEL + c) * D;
                for (d, v) in panel[at..at + group.len()].iter_mut().zip(group) {
                    *d = v ^ flip;
                }
            }
        }
    }
    out
}

/// [`pack`]'s layout of the matrix whose row `j` is column `first + j` of
/// `src` (`k` rows of `ld`), into `out` (at least `⌈n/16⌉` panels): `D`
/// depth rows are read 16 columns at a time into each group of a panel.
pub fn pack_cols<const D: usize>(
    src: &[i8],
    ld: usize,
    first: usize,
    n: usize,
    k: usize,
    flip: i8,
    out: &mut [i8],
) {
    let kg = k.div_ceil(D);
    let out = &mut out[..n.div_ceil(PANEL) * panel_len::<D>(k)];
    if !n.is_multiple_of(PANEL) || !k.is_multiple_of(D) {
        out.fill(flip);
    }
    if kg == 0 {
        return;
    }
    for (p, panel) in out.chunks_exact_mut(kg * PANEL * D).enumerate() {
        let (j0, cols) = (first + p * PANEL, PANEL.min(n - p * PANEL));
        for (g, group) in panel.chunks_exact_mut(PANEL * D).enumerate() {
            for t in D * g..(D * g + D).min(k) {
                let line = &src[t * ld + j0..t * ld + j0 + cols];
                for (c, v) in line.iter().enumerate() {
                    group[c * D + t % D] = v ^ flip;
                }
            }
        }
    }
}

/// The loop the packed int8 kernels share: panels outer (one panel, 16
/// channels × `k`, stays in cache while every row passes over it), then
/// blocks of `mr`, 2 and 1 rows. `tile(rows, i, j, panel)` computes rows
/// `i..i + rows` × channels `j..min(j + 16, n)`; `panel` is `panel_len`
/// values of `w`.
pub fn for_each_tile(
    w: &[i8],
    m: usize,
    n: usize,
    panel_len: usize,
    mr: usize,
    tile: impl FnMut(usize, usize, usize, &[i8]),
) {
    for_each_tile_of(w, 0..m, n, panel_len, mr, tile)
}

/// [`for_each_tile`] over the rows `block` only (a block of rows whose
/// per-row values a kernel took once).
pub fn for_each_tile_of(
    w: &[i8],
    block: std::ops::Range<usize>,
    n: usize,
    panel_len: usize,
    mr: usize,
    mut tile: impl FnMut(usize, usize, usize, &[i8]),
) {
    let m = block.end;
    for (p, wp) in w
        .chunks_exact(panel_len)
        .take(n.div_ceil(PANEL))
        .enumerate()
    {
        let mut i = block.start;
        while i < m {
            let rows = match m - i {
                r if r >= mr => mr,
                r if r >= 2 => 2,
                _ => 1,
            };
            tile(rows, i, p * PANEL, wp);
            i += rows;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both packers put `w[j][t]` (XOR flip) where the kernels read it, and
    /// a zero weight everywhere else.
    #[test]
    fn weights_sit_where_the_kernels_read_them() {
        weights_sit_where_read::<4>();
        weights_sit_where_read::<8>();
    }

    fn weights_sit_where_read<const D: usize>() {
        for (n, k, flip) in [
            (5usize, 7usize, 0i8),
            (17, 9, i8::MIN),
            (16, 8, 0),
            (1, 0, 0),
        ] {
            let w: Vec<i8> = (0..n * k).map(|i| (i * 37 % 251) as u8 as i8).collect();
            let packed = pack::<D>(&w, n, k, flip);
            assert_eq!(packed.len(), n.div_ceil(PANEL) * panel_len::<D>(k));
            // The columns of wᵀ (k rows of n) give the same bytes.
            let wt: Vec<i8> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect();
            let mut cols = vec![3i8; packed.len()];
            pack_cols::<D>(&wt, n, 0, n, k, flip, &mut cols);
            assert_eq!(cols, packed, "{n}x{k}, groups of {D}");
            let kg = k.div_ceil(D);
            for (at, v) in packed.iter().enumerate() {
                let (p, rest) = (at / (kg * PANEL * D), at % (kg * PANEL * D));
                let (g, c, d) = (rest / (PANEL * D), rest % (PANEL * D) / D, rest % D);
                let (j, t) = (p * PANEL + c, g * D + d);
                let want = if j < n && t < k { w[j * k + t] } else { 0 };
                assert_eq!(*v, want ^ flip, "{n}x{k}/{D} channel {j} depth {t}");
            }
        }
    }
}
