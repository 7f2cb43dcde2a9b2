//! The plain twins: the definition, one multiply-add at a time, in the
//! plainest loop order (not through `drive`, so a tiling bug there cannot
//! hide in both sides of a comparison). The SIMD kernels use [`dot_i8`],
//! [`dot_f16w`] and [`dot_f32`] for their tails.

use half::f16;

pub fn dot_i8(x: &[i8], w: &[i8]) -> i32 {
    x.iter().zip(w).map(|(a, b)| *a as i32 * *b as i32).sum()
}

/// The weights are widened a block at a time (`half`'s slice conversion:
/// one feature check a block, not one a weight), then multiplied and
/// summed in order, as `x·w` term by term: the same sum, bit for bit, as
/// widening each weight where it is used.
pub fn dot_f16w(x: &[f32], w: &[f16]) -> f32 {
    use half::slice::HalfFloatSliceExt;
    const BLOCK: usize = 256;
    let mut wide = [0f32; BLOCK];
    // f32's own `sum` starting value, so an empty or all-zero dot is
    // what `Iterator::sum` gives.
    let mut sum: f32 = std::iter::empty::<f32>().sum();
    for (xb, wb) in x.chunks(BLOCK).zip(w.chunks(BLOCK)) {
        let wide = &mut wide[..wb.len().min(xb.len())];
        wb[..wide.len()].convert_to_f32_slice(wide);
        for (a, b) in xb.iter().zip(wide.iter()) {
            sum += a * b;
        }
    }
    sum
}

pub fn dot_f32(x: &[f32], w: &[f32]) -> f32 {
    x.iter().zip(w).map(|(a, b)| a * b).sum()
}

/// The multiply-add peak loop (`bench-kernels`' measure of a core), plainly:
/// `steps` rounds of [`PEAK_CHAINS`] independent chains `v ← v·a + b`, with
/// `a = 1 − 10⁻⁶`, `b = 10⁻⁷`, each chain from 0. Returns the chains' sum
/// (so no step can be optimised away) and the multiply-adds done.
pub fn fma_peak(steps: usize) -> (f32, usize) {
    let (a, b) = peak_operands();
    let mut acc = [0f32; PEAK_CHAINS];
    for _ in 0..steps {
        for v in &mut acc {
            *v = v.mul_add(a, b);
        }
    }
    (acc.iter().sum(), steps * PEAK_CHAINS)
}

/// Independent chains of the peak loops: enough registers to hide the
/// multiply-add's latency on two pipes.
pub const PEAK_CHAINS: usize = 12;

/// `a` and `b` of the peak loops, opaque to the optimiser.
pub fn peak_operands() -> (f32, f32) {
    (std::hint::black_box(1.0 - 1e-6), std::hint::black_box(1e-7))
}

pub fn gemm_f32(x: &[f32], w: &[f32], m: usize, n: usize, k: usize, out: &mut [f32]) {
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = dot_f32(&x[i * k..(i + 1) * k], &w[j * k..(j + 1) * k]);
        }
    }
}

pub fn gemm_i8(x: &[i8], w: &[i8], m: usize, n: usize, k: usize, out: &mut [i32]) {
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = dot_i8(&x[i * k..(i + 1) * k], &w[j * k..(j + 1) * k]);
        }
    }
}

pub fn gemm_f16w(x: &[f32], w: &[f16], m: usize, n: usize, k: usize, out: &mut [f32]) {
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = dot_f16w(&x[i * k..(i + 1) * k], &w[j * k..(j + 1) * k]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Widening a block of weights at a time is widening each weight
        /// where it is used: the same sum, bit for bit, across block edges.
        #[test]
        fn dot_f16w_is_the_term_by_term_sum(
            x in prop::collection::vec(-4f32..4.0, 0..700),
            w in prop::collection::vec(-2f32..2.0, 0..700),
        ) {
            let w: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
            let plain: f32 = x.iter().zip(&w).map(|(a, b)| a * b.to_f32()).sum();
            prop_assert_eq!(dot_f16w(&x, &w).to_bits(), plain.to_bits());
        }
    }
}
