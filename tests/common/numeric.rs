//! Numeric helpers shared by both crates' tests (the quantizer's include
//! this file by path).

/// Largest |a - b| over two equally long slices, a NaN difference counting
/// as infinite (`f32::max` alone would skip it: an all-NaN output would
/// pass as exact).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (x - y).abs();
            if d.is_nan() {
                f32::INFINITY
            } else {
                d
            }
        })
        .fold(0f32, f32::max)
}
