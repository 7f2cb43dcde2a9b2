//! The row kernels' compiled copies against the plain ones, and against their definitions.

use super::*;
use proptest::prelude::*;

/// The larger of a running worst and a new error, NaN once either is
/// (`f64::max` would skip a NaN, and a NaN result would pass).
fn nan_max(worst: f64, err: f64) -> f64 {
    if worst.is_nan() || err.is_nan() {
        f64::NAN
    } else {
        worst.max(err)
    }
}

pub(crate) fn levels() -> Vec<Level> {
    let v = Level::available();
    // The copies exist on x86_64 only, where every CPU CI runs on
    // has SSE4.1 at least: a test that compared nothing would fail.
    #[cfg(target_arch = "x86_64")]
    assert!(
        v.len() > 1,
        "no compiled copy beyond the plain one on this CPU: nothing to compare"
    );
    v
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

const UNARIES: [Unary; 13] = [
    Unary::Abs,
    Unary::Recip,
    Unary::RoundHalfToEven,
    Unary::Sigmoid,
    Unary::Rsqrt,
    Unary::Sqrt,
    Unary::Square,
    Unary::Exp,
    Unary::Neg,
    Unary::Tanh,
    Unary::QuickGelu(1.702),
    Unary::Erf,
    Unary::Gelu,
];
const BINARIES: [Binary; 6] = [
    Binary::Add,
    Binary::Sub,
    Binary::Mul,
    Binary::Div,
    Binary::Max,
    Binary::Min,
];

/// A softmax row's sum from one; measured at most 3.0e-7 (256 rows of
/// 2–300 values).
const SOFTMAX_SUM_TOL: f32 = 3e-6;
/// A normalised row's mean from 0, and mean square from one; measured
/// at most 5.9e-8 and 6.0e-7 over the same rows.
const NORM_MEAN_TOL: f32 = 1e-6;
const NORM_MEAN_SQUARE_TOL: f32 = 1e-5;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// `max |v|` over any length, NaNs among the values included, is the
    /// one-by-one fold's (NaNs skipped; -∞ when empty or all NaN) on
    /// every copy.
    #[test]
    fn abs_max_is_the_fold_in_order(
        x in prop::collection::vec(prop_oneof![9 => -1e6f32..1e6, 1 => Just(f32::NAN)], 0..300),
    ) {
        let want = x.iter().fold(f32::NEG_INFINITY, |m, v| m.max(v.abs()));
        prop_assert_eq!(plain::abs_max(&x).to_bits(), want.to_bits());
        for lv in levels() {
            prop_assert_eq!(abs_max(lv, &x).to_bits(), want.to_bits(), "{:?}", lv);
        }
    }

    /// Every compiled copy gives the plain copy's results bit for bit,
    /// on odd lengths (tails) and strides.
    #[test]
    fn compiled_copies_equal_the_plain_source(
        x in prop::collection::vec(-30f32..30.0, 0..77),
        y in prop::collection::vec(-30f32..30.0, 77),
        r in 0.01f32..10.0,
        stride in 0usize..3,
        eps in 1e-6f32..1e-2,
    ) {
        let n = x.len();
        let acc: Vec<i32> = x.iter().map(|v| (v * 1000.0) as i32).collect();
        for lv in levels() {
            prop_assert_eq!(abs_max(lv, &x).to_bits(), plain::abs_max(&x).to_bits());
            prop_assert_eq!(max(lv, &x).to_bits(), plain::max(&x).to_bits());
            for op in UNARIES {
                let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
                map(lv, op, Some(&x), &mut a);
                plain::map_with(lv.fuses(), op, Some(&x), &mut b);
                prop_assert_eq!(bits(&a), bits(&b), "{:?}", op);
                map(lv, op, None, &mut a);
                plain::map_with(lv.fuses(), op, None, &mut b);
                prop_assert_eq!(bits(&a), bits(&b), "{:?} in place", op);
            }
            let other = &y[..if stride == 0 { 1 } else { (n * stride).clamp(1, 77) }];
            let n2 = if stride == 0 { n } else { n.min(other.len().div_ceil(stride)) };
            for op in BINARIES {
                let (mut a, mut b) = (vec![0f32; n2], vec![0f32; n2]);
                binary(lv, op, &x, 1, other, stride, &mut a);
                plain::binary(op, &x, 1, other, stride, &mut b);
                prop_assert_eq!(bits(&a), bits(&b), "{:?}", op);
                for y_first in [true, false] {
                    let (mut a, mut b) = (x[..n2].to_vec(), x[..n2].to_vec());
                    binary_in_place(lv, op, y_first, other, stride, &mut a);
                    plain::binary_in_place(op, y_first, other, stride, &mut b);
                    prop_assert_eq!(bits(&a), bits(&b), "{:?} in place", op);
                }
            }
            let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
            softmax(lv, &x, &mut a);
            plain::softmax(&x, &mut b);
            prop_assert_eq!(bits(&a), bits(&b));
            for center in [true, false] {
                norm(lv, eps, center, &x, &mut a);
                plain::norm(eps, center, &x, &mut b);
                prop_assert_eq!(bits(&a), bits(&b));
            }
            let (mut qa, mut qb) = (vec![0i8; n], vec![0i8; n]);
            quantize_into(lv, &x, r, &mut qa);
            plain::quantize_into(&x, r, &mut qb);
            prop_assert_eq!(qa, qb);
            dequantize(lv, &acc, r, &y, &mut a);
            plain::dequantize(&acc, r, &y, &mut b);
            prop_assert_eq!(bits(&a), bits(&b));
            dequantize_bias(lv, &acc, r, eps, &mut a);
            plain::dequantize_bias(&acc, r, eps, &mut b);
            prop_assert_eq!(bits(&a), bits(&b));
        }
    }

    /// The row kernels against their definitions: softmax sums to one,
    /// the norm's output has mean 0 and unit mean square.
    #[test]
    fn softmax_and_norm_rows_meet_their_definitions(
        x in prop::collection::vec(-20f32..20.0, 2..300),
    ) {
        let mut out = vec![0f32; x.len()];
        plain::softmax(&x, &mut out);
        let sum: f32 = out.iter().sum();
        prop_assert!((sum - 1.0).abs() <= SOFTMAX_SUM_TOL, "sum {}", sum);
        prop_assert!(out.iter().all(|o| (0.0..=1.0).contains(o)));
        plain::norm(0.0, true, &x, &mut out);
        let n = x.len() as f32;
        let mean: f32 = out.iter().sum::<f32>() / n;
        let ms: f32 = out.iter().map(|v| v * v).sum::<f32>() / n;
        let spread = x.iter().cloned().fold(0f32, |a, v| a.max((v - x[0]).abs()));
        if spread > 1e-2 {
            prop_assert!(mean.abs() <= NORM_MEAN_TOL, "mean {}", mean);
            prop_assert!((ms - 1.0).abs() <= NORM_MEAN_SQUARE_TOL, "mean square {}", ms);
        }
    }
}

/// Bound on GELU's error relative to `|x|/2` (measured 4.7e-7 over the
/// grid below).
const GELU_REL_ERROR: f64 = 1e-6;

/// `erf` and GELU, unfused and fused, against f64's (libm) on a dense grid, the extremes, the
/// signed zeros and NaN: within [`super::ERF_ABS_ERROR`] and
/// [`GELU_REL_ERROR`]; GELU's far negative tail is near zero, and its far
/// positive side is `x`.
#[test]
fn erf_and_gelu_meet_their_definitions() {
    erf_and_gelu_meet_their_definitions_in::<false>();
    erf_and_gelu_meet_their_definitions_in::<true>();
}

fn erf_and_gelu_meet_their_definitions_in<const FUSED: bool>() {
    use super::{ERF_ABS_ERROR, ERF_SMALL_REL_ERROR};
    let (erf, gelu) = (super::erf_with::<FUSED>, super::gelu_with::<FUSED>);
    let mut worst_erf = 0f64;
    let mut worst_small = 0f64;
    for i in 1..=200_000 {
        // Down to 1e-30, relative.
        let x = 0.5f32 * (i as f32 / 200_000.0).powi(40);
        if x < 1e-30 {
            continue; // (results near f32's subnormals hold fewer digits)
        }
        for x in [x, -x] {
            let e = libm::erf(x as f64);
            worst_small = nan_max(worst_small, ((erf(x) as f64 - e) / e).abs());
        }
    }
    eprintln!("erf (fused: {FUSED}) within {worst_small:.2e} relatively below 1/2");
    assert!(
        worst_small <= ERF_SMALL_REL_ERROR as f64,
        "erf off by {worst_small:e} near 0"
    );
    let mut worst_gelu = 0f64;
    let grid = (-80_000..=80_000).map(|i| i as f32 * 1e-4);
    for x in grid.chain([
        f32::MAX,
        -f32::MAX,
        f32::MIN_POSITIVE,
        1e-30,
        -1e-30,
        30.0,
        -30.0,
    ]) {
        let e = libm::erf(x as f64);
        worst_erf = nan_max(worst_erf, (erf(x) as f64 - e).abs());
        let g = x as f64 * 0.5 * libm::erfc(-(x as f64) * std::f64::consts::FRAC_1_SQRT_2);
        let scale = (x as f64).abs() * 0.5;
        if scale > 0.0 && scale.is_finite() {
            worst_gelu = nan_max(worst_gelu, (gelu(x) as f64 - g).abs() / scale);
        }
    }
    eprintln!("erf (fused: {FUSED}) within {worst_erf:.2e}, gelu within {worst_gelu:.2e} of |x|/2");
    assert!(
        worst_erf <= ERF_ABS_ERROR as f64,
        "erf off by {worst_erf:e}"
    );
    assert!(
        worst_gelu <= GELU_REL_ERROR,
        "gelu off by {worst_gelu:e} of |x|/2"
    );
    // Beyond the fit's clamp: the tails.
    for x in [-6.0f32, -30.0, -1e30] {
        assert!(
            gelu(x) <= 0.0 && gelu(x).abs() <= x.abs() * 1e-6,
            "gelu({x}) = {}",
            gelu(x)
        );
    }
    for x in [6.0f32, 30.0, 1e30, f32::MAX] {
        assert_eq!(gelu(x), x);
    }
    assert_eq!(erf(0.0).to_bits(), 0f32.to_bits());
    assert_eq!(erf(-0.0).to_bits(), (-0f32).to_bits());
    assert!(erf(f32::NAN).is_nan() && gelu(f32::NAN).is_nan());
    assert_eq!((erf(f32::INFINITY), erf(f32::NEG_INFINITY)), (1.0, -1.0));
}
