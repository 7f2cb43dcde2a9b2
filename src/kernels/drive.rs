//! The loop every kernel shares ([`drive`]): blocks of output channels
//! sized to the L2 cache, tiles of two rows by four channels, the tails
//! one dot product at a time; and the kernels' own bounds checks.

/// Bytes of weights one block holds: the block stays in the L2 cache while
/// every row of `x` passes over it (without blocking, each pair of rows
/// streamed the whole matrix from memory).
const WEIGHT_BLOCK_BYTES: usize = 96 << 10;

/// The loop every kernel shares: blocks of output channels whose weights
/// fit [`WEIGHT_BLOCK_BYTES`]; in each, tiles of two rows of `x` by four
/// output channels through `tile` (each weight load serves two rows, each
/// activation load four channels), an odd last row as a tile of that row
/// twice, the remaining channels one dot product at a time through `one`.
#[allow(clippy::too_many_arguments)]
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")),
    allow(dead_code)
)]
pub(crate) fn drive<X, W, O: Copy>(
    x: &[X],
    w: &[W],
    m: usize,
    n: usize,
    k: usize,
    out: &mut [O],
    tile: impl Fn([&[X]; 2], [&[W]; 4]) -> [[O; 4]; 2],
    one: impl Fn(&[X], &[W]) -> O,
) {
    let row = |i: usize| &x[i * k..(i + 1) * k];
    let per_channel = (k * std::mem::size_of::<W>()).max(1);
    let block = (WEIGHT_BLOCK_BYTES / per_channel / 4 * 4).max(4);
    let mut j0 = 0;
    while j0 < n {
        let j1 = (j0 + block).min(n);
        let mut i = 0;
        while i < m {
            let pair = i + 1 < m;
            let xs = [row(i), row(if pair { i + 1 } else { i })];
            let mut j = j0;
            while j + 4 <= j1 {
                let ws = [0, 1, 2, 3].map(|r| &w[(j + r) * k..(j + r + 1) * k]);
                let t = tile(xs, ws);
                out[i * n + j..i * n + j + 4].copy_from_slice(&t[0]);
                if pair {
                    out[(i + 1) * n + j..(i + 1) * n + j + 4].copy_from_slice(&t[1]);
                }
                j += 4;
            }
            for j in j..j1 {
                let wr = &w[j * k..(j + 1) * k];
                out[i * n + j] = one(xs[0], wr);
                if pair {
                    out[(i + 1) * n + j] = one(xs[1], wr);
                }
            }
            i += 2;
        }
        j0 = j1;
    }
}

/// `len` holds the product of `factors` (which does not overflow): the
/// kernels' own bound checks, safe for any sizes a caller passes.
pub(crate) fn holds(len: usize, factors: &[usize]) -> bool {
    factors
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .is_some_and(|need| len >= need)
}

pub(crate) fn check(x: usize, w: usize, out: usize, m: usize, n: usize, k: usize) {
    assert!(
        holds(x, &[m, k]) && holds(w, &[n, k]) && holds(out, &[m, n]),
        "gemm {m}x{n}x{k}: x {x}, w {w}, out {out}"
    );
}
