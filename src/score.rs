//! Scoring an image embedding against the text table: cosine, logit scale,
//! softmax over all labels, top-k. Allocation-free: callers own the buffers.

use crate::bundle::TableData;

/// `out[i] = scale * cos(emb, table[i])` for L2-normalised table rows
/// (`table` is `out.len()` rows of `dim`).
pub fn logits(table: &[f32], dim: usize, emb: &[f32], scale: f32, out: &mut [f32]) {
    if dim == 0 {
        // No dimensions, no similarity (manifests refuse embed_dim = 0).
        out.fill(0.0);
        return;
    }
    let norm = emb.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    let k = scale / norm;
    for (o, r) in out.iter_mut().zip(table.chunks_exact(dim)) {
        *o = k * dot(r, emb);
    }
}

/// The table as f32 rows: f16 tables are widened once (exactly), so that
/// per-frame scoring is plain f32 arithmetic on the stored values.
pub fn widen(table: &TableData) -> Vec<f32> {
    match table {
        TableData::F32(t) => t.clone(),
        TableData::F16(t) => t.iter().map(|v| v.to_f32()).collect(),
    }
}

/// Dot product with four independent accumulators (vectorises well).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 4];
    let (ca, ra) = a.split_at(a.len() / 4 * 4);
    let (cb, rb) = b.split_at(ca.len());
    for (x, y) in ca.chunks_exact(4).zip(cb.chunks_exact(4)) {
        for i in 0..4 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = acc[0] + acc[1] + acc[2] + acc[3];
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// The cosine of two vectors, summed in f64 (0 where one is all zeros,
/// NaN where either holds a NaN): how close two embeddings are.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (*x as f64, *y as f64);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    ab / (aa.sqrt() * bb.sqrt()).max(1e-30)
}

/// In-place `sigmoid(v + bias)` of each value: a probability per label,
/// each on its own (SigLIP's scoring). Exact to f32 rounding at both ends:
/// `exp` overflows to infinity for large negative inputs (giving 0), and
/// large positive ones give 1.
pub fn sigmoid(v: &mut [f32], bias: f32) {
    for x in v.iter_mut() {
        *x = 1.0 / (1.0 + (-(*x + bias)).exp());
    }
}

/// In-place softmax.
pub fn softmax(v: &mut [f32]) {
    let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - m).exp();
        sum += *x;
    }
    for x in v.iter_mut() {
        *x /= sum;
    }
}

/// The indices of the `k` largest scores, best first, written into `out`
/// (cleared; its capacity is reused).
pub fn top_k(scores: &[f32], k: usize, out: &mut Vec<usize>) {
    out.clear();
    for (i, &s) in scores.iter().enumerate() {
        if out.len() < k {
            out.push(i);
        } else if k > 0 && s > scores[out[k - 1]] {
            out[k - 1] = i;
        } else {
            continue;
        }
        // Keep `out` sorted, best first (insertion step).
        let mut j = out.len() - 1;
        while j > 0 && scores[out[j]] > scores[out[j - 1]] {
            out.swap(j, j - 1);
            j -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cosine_of_known_pairs() {
        assert_eq!(cosine(&[1.0, 0.0], &[0.0, 2.0]), 0.0);
        // Exact: integer products and sums, square roots of squares.
        assert_eq!(cosine(&[3.0, 4.0], &[6.0, 8.0]), 1.0);
        assert_eq!(cosine(&[1.0, 0.0], &[-1.0, 0.0]), -1.0);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 2.0]), 0.0);
        assert!(cosine(&[f32::NAN, 1.0], &[1.0, 1.0]).is_nan());
    }

    fn dot_plain(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    /// `dot` against the plain sum, relative to 1 + |sum| (up to 70 pairs
    /// in ±10, summed in another order); measured at most 9.4e-6.
    const DOT_REL_TOL: f32 = 1e-4;

    proptest! {
        #[test]
        fn dot_matches_plain_twin(v in prop::collection::vec((-10f32..10.0, -10f32..10.0), 0..70)) {
            let (a, b): (Vec<f32>, Vec<f32>) = v.into_iter().unzip();
            let got = dot(&a, &b);
            let want = dot_plain(&a, &b);
            prop_assert!((got - want).abs() <= DOT_REL_TOL * (1.0 + want.abs()), "{} vs {}", got, want);
        }

        #[test]
        fn top_k_matches_sort(scores in prop::collection::vec(-100f32..100.0, 0..60), k in 0usize..10) {
            let mut got = Vec::new();
            top_k(&scores, k, &mut got);
            let mut idx: Vec<usize> = (0..scores.len()).collect();
            idx.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
            idx.truncate(k);
            let g: Vec<f32> = got.iter().map(|&i| scores[i]).collect();
            let w: Vec<f32> = idx.iter().map(|&i| scores[i]).collect();
            prop_assert_eq!(g, w);
        }
    }

    /// `sigmoid` against f64 arithmetic, largest absolute difference over
    /// logits from -200 to 200 and biases from -20 to 20. Measured 8.5e-8
    /// (f32 rounding of values near 1).
    const SIGMOID_MAX_ERR: f64 = 5e-7;

    #[test]
    fn sigmoid_is_each_labels_own_probability() {
        let mut worst = 0f64;
        for bias in [-20f32, -10.0, -2.5, 0.0, 3.0, 20.0] {
            let v: Vec<f32> = (-20_000..=20_000).map(|i| i as f32 * 0.01).collect();
            let mut p = v.clone();
            sigmoid(&mut p, bias);
            for (x, y) in v.iter().zip(&p) {
                let want = 1.0 / (1.0 + (-(*x as f64 + bias as f64)).exp());
                assert!((0.0..=1.0).contains(y), "{x} + {bias} -> {y}");
                let d = (*y as f64 - want).abs();
                worst = if d.is_nan() {
                    f64::INFINITY
                } else {
                    worst.max(d)
                };
            }
        }
        eprintln!("sigmoid: within {worst:.2e} of f64");
        assert!(worst <= SIGMOID_MAX_ERR, "{worst}");
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut v = vec![1.0, 2.0, 3.0, 1000.0];
        softmax(&mut v);
        // Measured exact: the three small terms vanish beside e^0.
        assert_eq!(v.iter().sum::<f32>(), 1.0);
        assert!(v[3] > 0.999);
    }
}
