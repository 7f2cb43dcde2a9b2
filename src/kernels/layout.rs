//! The plain weight layout (a row per output channel) and its packing
//! helpers: what the scalar twins and the CUDA backend read.

/// The plain layout: a row per output channel.
pub fn rows<T: Copy>(w: &[T], n: usize, k: usize) -> Vec<T> {
    w[..n * k].to_vec()
}

/// [`PackI8Cols`] / [`PackF32Cols`] for the plain layout: a transpose.
pub fn rows_of_cols<T: Copy>(
    src: &[T],
    ld: usize,
    first: usize,
    n: usize,
    k: usize,
    out: &mut [T],
) {
    if n == 0 {
        return;
    }
    for (t, line) in src.chunks(ld.max(1)).take(k).enumerate() {
        for (j, v) in line[first..first + n].iter().enumerate() {
            out[j * k + t] = *v;
        }
    }
}

/// The plain layout's 16 rows.
pub fn rows_panel_len(k: usize) -> usize {
    16 * k
}

/// [`rows`] into a buffer.
pub fn rows_into(w: &[f32], n: usize, k: usize, out: &mut [f32]) {
    out[..n * k].copy_from_slice(&w[..n * k]);
}
