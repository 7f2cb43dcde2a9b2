//! The native engine's ops against their definitions: pools, fast_exp (unfused and fused), row splits.

use super::*;
use crate::engine::schedule::ops::{broadcast_strides, strides_of};
use proptest::prelude::*;

/// `fast_exp` against the library's `expf`, in units of the result's
/// last place.
const FAST_EXP_MAX_ULPS: f32 = 2.0;

proptest! {
    /// Average and sum pools, padded or not (the padless ones take the
    /// row-at-a-time path), are their definition bit for bit: each
    /// window's values summed in order from 0, divided by the count.
    #[test]
    fn pools_sum_their_windows(
        c in 1usize..3, h in 1usize..10, w in 1usize..10,
        k0 in 1usize..4, k1 in 1usize..4, s0 in 1usize..3, s1 in 1usize..3,
        pad0 in 0usize..2, pad1 in 0usize..2,
        normalize in any::<bool>(), count_include_pad in any::<bool>(),
        seed in any::<u64>(),
    ) {
        prop_assume!(h + 2 * pad0 >= k0 && w + 2 * pad1 >= k1);
        let (oh, ow) = ((h + 2 * pad0 - k0) / s0 + 1, (w + 2 * pad1 - k1) / s1 + 1);
        let p = Pool2d {
            c, h, w, oh, ow, k: [k0, k1], stride: [s0, s1], pad: [pad0, pad1],
            normalize, count_include_pad,
        };
        let mut r = seed;
        let x: Vec<f32> = (0..c * h * w)
            .map(|_| {
                r = r.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (r >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect();
        let mut out = vec![f32::NAN; c * oh * ow];
        sum_pool(&p, &x, 0, &mut out);
        for ch in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let (mut sum, mut n) = (0f32, 0usize);
                    for ky in 0..k0 {
                        for kx in 0..k1 {
                            let (y, xx) = ((oy * s0 + ky).wrapping_sub(pad0), (ox * s1 + kx).wrapping_sub(pad1));
                            if y < h && xx < w {
                                sum += x[(ch * h + y) * w + xx];
                                n += 1;
                            }
                        }
                    }
                    let n = if count_include_pad { k0 * k1 } else { n };
                    let want = if normalize && n > 0 { sum / n as f32 } else { sum };
                    let got = out[(ch * oh + oy) * ow + ox];
                    prop_assert_eq!(got.to_bits(), want.to_bits(), "channel {} at {},{}", ch, oy, ox);
                }
            }
        }
    }

    #[test]
    fn fast_exp_is_within_two_ulps(x in -87.0f32..88.0) {
        let b = x.exp();
        let ulp = f32::from_bits(b.to_bits() + 1) - b;
        for a in [fast_exp(x), ew::fast_exp_with::<true>(x)] {
            prop_assert!((a - b).abs() <= FAST_EXP_MAX_ULPS * ulp, "{} -> {} vs {}", x, a, b);
        }
    }
}

proptest! {
    /// A thread's share of the rows, from any first row, is exactly the
    /// whole walk's rows from there on; and split into blocks, a
    /// broadcast product is the same as in one piece.
    #[test]
    fn rows_from_any_row_and_split_binary_agree(
        dims in proptest::collection::vec(1usize..5, 0..5),
        cut in 0usize..64,
        bshape in proptest::collection::vec(any::<bool>(), 5),
    ) {
        let out_len: usize = dims.iter().product();
        let bdims: Vec<usize> = dims.iter().zip(&bshape).map(|(d, keep)| if *keep { *d } else { 1 }).collect();
        let (sa, sb) = (strides_of(&dims), broadcast_strides(&bdims, &dims));
        let mut all = Vec::new();
        for_each_row(&dims, [&sa[..], &sb[..]], |o| all.push(o));
        let rows = all.len();
        let first = cut % (rows + 1);
        let mut part = Vec::new();
        for_each_row_from(&dims, [&sa[..], &sb[..]], first, usize::MAX, |o| part.push(o));
        prop_assert_eq!(&part[..], &all[first..]);
        let mut two = Vec::new();
        for_each_row_from(&dims, [&sa[..], &sb[..]], first, 2, |o| two.push(o));
        prop_assert_eq!(&two[..], &all[first..(first + 2).min(rows)]);

        let a: Vec<f32> = (0..out_len).map(|i| i as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..bdims.iter().product::<usize>()).map(|i| i as f32 + 1.0).collect();
        let mut whole = vec![0f32; out_len];
        binary_rows(Level::Plain, Binary::Div, &dims, &a, &sa, &b, &sb, 0, &mut whole);
        let n = dims.last().copied().unwrap_or(1);
        let mut split = vec![0f32; out_len];
        let (lo, hi) = split.split_at_mut(first * n);
        binary_rows(Level::Plain, Binary::Div, &dims, &a, &sa, &b, &sb, 0, lo);
        binary_rows(Level::Plain, Binary::Div, &dims, &a, &sa, &b, &sb, first, hi);
        prop_assert_eq!(whole, split);
    }
}

#[test]
fn fast_exp_ends() {
    // Clamped below: the smallest normal f32 or so, never 0 or NaN.
    for exp in [fast_exp, ew::fast_exp_with::<true>] {
        let tiny = exp(-1000.0);
        assert!(tiny > 0.0 && tiny <= 1.2e-38 && tiny == exp(-87.336_55));
        // Near the top (2^n with n = 128 split in two factors): finite.
        for x in [88.0f32, 88.5, 88.722] {
            let (a, b) = (exp(x), x.exp());
            let ulp = f32::from_bits(b.to_bits() + 1) - b;
            assert!(
                a.is_finite() && (a - b).abs() <= FAST_EXP_MAX_ULPS * ulp,
                "{x}: {a} vs {b}"
            );
        }
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan() || exp(f32::NAN) >= 0.0);
    }
}

#[test]
fn broadcast_add_and_rows() {
    // [2, 3] + [2, 1]
    let a = [1f32, 2., 3., 4., 5., 6.];
    let b = [10f32, 20.];
    let mut out = [0f32; 6];
    binary_rows(
        Level::Plain,
        Binary::Add,
        &[2, 3],
        &a,
        &[3, 1],
        &b,
        &broadcast_strides(&[2, 1], &[2, 3]),
        0,
        &mut out,
    );
    assert_eq!(out, [11., 12., 13., 24., 25., 26.]);
}

#[test]
fn reduce_middle_axis_and_transpose() {
    // [2, 3, 2] summed over axis 1.
    let x: Vec<f32> = (0..12).map(|v| v as f32).collect();
    let mut out = [0f32; 4];
    let so = broadcast_strides(&[2, 1, 2], &[2, 3, 2]);
    reduce(
        Level::Plain,
        Reduce::Sum,
        &[2, 3, 2],
        &x,
        &strides_of(&[2, 3, 2]),
        &so,
        3,
        &mut out,
    );
    assert_eq!(out, [6., 9., 24., 27.]);
    // [2, 3] transposed into [3, 2].
    let mut t = [0f32; 6];
    copy(&[3, 2], &x, 0, &[1, 3], &mut t, 0, &[2, 1]);
    assert_eq!(t, [0., 3., 1., 4., 2., 5.]);
}
