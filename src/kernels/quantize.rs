//! Activations to int8, exactly as the bundles' graphs quantise
//! dynamically per token.

/// `v` rounded to the nearest integer, ties to even, as
/// `f32::round_ties_even`, which compiles to a slow library call on x86_64
/// without SSE4.1 (the baseline this crate is built for): adding and
/// subtracting 1.5 · 2²³ rounds in the FPU's default mode (to nearest,
/// ties to even) wherever |v| < 2²²; past that every f32 is handled by the
/// library call (and past 2²³ already integral).
#[inline(always)]
pub fn round_half_even(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    if v.abs() < 4_194_304.0 {
        (v + MAGIC) - MAGIC
    } else {
        v.round_ties_even()
    }
}

/// `clamp(round_half_even(v · r), -127, 127)` as i8: an activation's int8
/// value for the reciprocal scale `r` (NaN gives 0). Branch-free, so that
/// loops over it vectorise.
#[inline(always)]
pub fn quantize(v: f32, r: f32) -> i8 {
    const MAGIC: f32 = 12_582_912.0;
    // Clamping to integer bounds first rounds the same, and keeps |v| far
    // below 2^22, where the 1.5 · 2^23 trick of `round_half_even` holds.
    let c = (v * r).clamp(-127.0, 127.0);
    let c = if c.is_nan() { 0.0 } else { c };
    // The rounded integer sits in the low mantissa bits of `c + MAGIC`
    // (|c| ≤ 127): read it there, without a float-to-int conversion (a
    // saturating `as` does not vectorise).
    ((c + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32) as i8
}

/// Quantises one activation row to int8 as the bundles' graphs do
/// dynamically per token, once tract has decluttered them:
/// `s = max(max|x|, 1e-12) · (1/127)`,
/// `q = clamp(round_half_even(x · (1/s)), -127, 127)`. Returns `s`.
pub fn quantize_row(x: &[f32], q: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let s = amax.max(1e-12) * (1.0 / 127.0);
    let r = 1.0 / s;
    for (o, v) in q.iter_mut().zip(x) {
        *o = quantize(*v, r);
    }
    s
}
