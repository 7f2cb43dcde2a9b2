//! The float weight layout of the outer-product kernels (x86_64 AVX2 and
//! AVX-512): panels of 16 output channels laid out `[k][16]`, one row of 16
//! channels per depth (two ymm or one zmm); channels past `n` are zero.
//! Plain code, no SIMD: packing runs at load, and per frame for a
//! convolution's patches and the right side of a product of activations.

/// Output channels of one panel.
pub const PANEL: usize = 16;

/// `w` (`n × k`, a row per output channel) packed.
pub fn pack<T: Copy + Default>(w: &[T], n: usize, k: usize) -> Vec<T> {
    let mut out = vec![T::default(); n.div_ceil(PANEL) * k * PANEL];
    pack_into(w, n, k, &mut out);
    out
}

/// [`pack`] into `out` (at least `⌈n/16⌉ · 16 · k` values).
pub fn pack_into<T: Copy + Default>(w: &[T], n: usize, k: usize, out: &mut [T]) {
    let panels = n.div_ceil(PANEL);
    out[..panels * k * PANEL].fill(T::default());
    for j in 0..n {
        let (p, c) = (j / PANEL, j % PANEL);
        for t in 0..k {
            out[(p * k + t) * PANEL + c] = w[j * k + t];
        }
    }
}

/// [`pack`]'s layout of the matrix whose row `j` is column `first + j` of
/// `src` (`k` rows of `ld`), into `out` (at least `⌈n/16⌉ · 16 · k`
/// values): each depth of a panel is 16 consecutive values of one row of
/// `src`, the last panel's missing channels zero.
pub fn pack_cols<T: Copy + Default>(
    src: &[T],
    ld: usize,
    first: usize,
    n: usize,
    k: usize,
    out: &mut [T],
) {
    for p in 0..n.div_ceil(PANEL) {
        let (j0, cols) = (first + p * PANEL, PANEL.min(n - p * PANEL));
        for t in 0..k {
            let to = &mut out[(p * k + t) * PANEL..(p * k + t + 1) * PANEL];
            to[..cols].copy_from_slice(&src[t * ld + j0..t * ld + j0 + cols]);
            to[cols..].fill(T::default());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Columns packed per frame are the rows packed at load, padding
    /// included, from any first column.
    #[test]
    fn columns_pack_as_their_rows() {
        for (n, k, first, ld) in [(1, 1, 0, 1), (16, 3, 2, 20), (17, 5, 1, 19), (40, 7, 0, 40)] {
            let src: Vec<f32> = (0..k * ld).map(|i| i as f32 + 1.0).collect();
            let rows: Vec<f32> = (0..n * k)
                .map(|i| src[(i % k) * ld + first + i / k])
                .collect();
            let mut cols = vec![f32::NAN; n.div_ceil(PANEL) * PANEL * k];
            pack_cols(&src, ld, first, n, k, &mut cols);
            let packed = pack(&rows, n, k);
            assert_eq!(cols, packed, "{n}x{k} from {first}");
            // Channel j, depth t sits at panel j / 16, row t, lane j % 16.
            for j in 0..n {
                for t in 0..k {
                    let at = ((j / PANEL) * k + t) * PANEL + j % PANEL;
                    assert_eq!(packed[at], rows[j * k + t]);
                }
            }
            assert!(packed.len() == n.div_ceil(PANEL) * PANEL * k);
        }
    }
}
