//! Convolutions by pixel blocks, Winograd and the patch layouts against
//! their definitions on every kernel path.

use super::*;
use crate::engine::native::pack::pack_float;
use crate::engine::schedule::linear::{FloatWeights, Weights};
use crate::kernels::float_panels;
use proptest::prelude::*;

/// A test's values: a 64-bit LCG's states.
fn lcg(seed: u64) -> impl FnMut() -> u64 {
    let mut r = seed;
    move || {
        r = r
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        r
    }
}

/// `f(t, i)` for each tap of output pixel `j` (`ow` a row) inside the
/// image, in order (channel, kernel row, kernel column): `t` its depth in
/// a weight row, `i` its input value. `[c, h, w, kernel, stride, pad]`.
fn each_tap(
    [c, h, w, k, st, pd]: [usize; 6],
    ow: usize,
    j: usize,
    mut f: impl FnMut(usize, usize),
) {
    let (oy, ox) = (j / ow, j % ow);
    for ch in 0..c {
        for ky in 0..k {
            for kx in 0..k {
                let (y, x) = (
                    (oy * st + ky).wrapping_sub(pd),
                    (ox * st + kx).wrapping_sub(pd),
                );
                if y < h && x < w {
                    f((ch * k + ky) * k + kx, (ch * h + y) * w + x);
                }
            }
        }
    }
}

/// `conv` on 1, 2 and 3 threads with an epilogue that must see each value
/// once, in whole output rows, and adds `offset / 4` to it: the output is
/// `want` bit for bit.
fn check_on_threads(conv: &Conv, kern: &Kernels, x: &[f32], s: &[f32], want: &[f32], what: &str) {
    let (o, p, ow) = (conv.o, conv.oh * conv.ow, conv.ow);
    for threads in 1..=3 {
        let pool = Pool::new(threads);
        let mut scr = Scratch::new(conv.scratch());
        let seen = std::sync::Mutex::new(vec![0u8; o * p]);
        let post = |first: usize, y: &mut [f32]| {
            assert!(
                first.is_multiple_of(ow) && y.len().is_multiple_of(ow),
                "{what}: a cut row at {first}+{}",
                y.len()
            );
            let mut seen = seen.lock().unwrap();
            for (i, v) in y.iter_mut().enumerate() {
                seen[first + i] += 1;
                *v += (first + i) as f32 * 0.25;
            }
        };
        let mut out = vec![f32::NAN; o * p];
        conv.run(kern, &pool, x, s, &mut out, &mut scr, &post);
        assert!(
            seen.into_inner().unwrap().iter().all(|&n| n == 1),
            "{what}, {threads} threads: epilogue coverage"
        );
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert!(bits(&out) == bits(want), "{what}, {threads} threads");
    }
}

/// The float convolutions by pixel blocks (weight rows and packed
/// panels, f32 and f16) and, where they fit, by Winograd's tiles
/// against the definition, on 1, 2 and 3 threads:
/// blocks that cut output rows (13 and 11 wide), strides, a pointwise
/// convolution, and an epilogue that must see each value once, in whole
/// output rows, at its own offset. Values are small multiples of powers
/// of two, so every sum is exact in any order and the comparison is
/// exact.
#[test]
fn float_convolutions_in_pixel_blocks_match_the_definition() {
    // (c, h, w, kernel, stride, pad, o)
    for (c, h, w, kh, st, pd, o) in [
        (64, 13, 13, 3, 1, 1, 8),
        (64, 20, 20, 3, 1, 1, 8),
        (64, 40, 40, 3, 1, 1, 8),
        (40, 11, 11, 1, 1, 0, 24),
        (32, 15, 15, 3, 2, 1, 12),
        (3, 20, 20, 3, 1, 0, 5),
    ] {
        let (oh, ow) = ((h + 2 * pd - kh) / st + 1, (w + 2 * pd - kh) / st + 1);
        let (p, kk) = (oh * ow, c * kh * kh);
        let mut next = lcg(7);
        let mut small = |scale: f32| ((next() >> 59) as f32 - 16.0) * scale;
        let x: Vec<f32> = (0..c * h * w).map(|_| small(0.125)).collect();
        let wt: Vec<f32> = (0..o * kk).map(|_| small(0.0625)).collect();
        let bias: Vec<f32> = (0..o).map(|_| small(0.5)).collect();
        let mut want = vec![0f32; o * p];
        for oc in 0..o {
            for (j, v) in want[oc * p..(oc + 1) * p].iter_mut().enumerate() {
                let mut sum = 0f32;
                each_tap([c, h, w, kh, st, pd], ow, j, |t, i| {
                    sum += wt[oc * kk + t] * x[i];
                });
                *v = (sum + bias[oc]) + (oc * p + j) as f32 * 0.25;
            }
        }
        // Every kernel path (their packed layouts differ), each kind of
        // float weights.
        let kinds = std::iter::once(Kernels::SCALAR)
            .chain(Kernels::available())
            .flat_map(|kern| {
                let winograd =
                    winograd::fits([kh, kh], [st, st], [1, 1], [pd, pd], [h, w], [oh, ow])
                        .then(|| ConvWeights::Winograd(winograd::weights(&wt, o, c).into()));
                [
                    ConvWeights::F32Rows(wt.clone().into()),
                    ConvWeights::Float(pack_float(
                        Weights::rows(wt.clone(), FloatWeights::F32),
                        o,
                        kk,
                        &kern.packing(),
                    )),
                    ConvWeights::Float(pack_float(
                        Weights::rows(wt.clone(), FloatWeights::F16WhereExact),
                        o,
                        kk,
                        &kern.packing(),
                    )),
                ]
                .into_iter()
                .chain(winograd)
                .map(move |w| (kern, w))
            });
        for (kern, weights) in kinds {
            let conv = Conv {
                c,
                h,
                w,
                o,
                oh,
                ow,
                kernel: [kh, kh],
                stride: [st, st],
                dilation: [1, 1],
                pad: [pd, pd],
                weights,
                bias: bias.clone(),
            };
            let what = format!(
                "{c}x{h}x{w} k{kh} s{st} o{o} {} on {}",
                conv.precision(),
                kern.name
            );
            check_on_threads(&conv, &kern, &x, &[], &want, &what);
            // These shapes run in several blocks (on 2 threads too, 40 × 40).
            if c == 64 && h >= 20 && !matches!(conv.weights, ConvWeights::Winograd(_)) {
                assert!(conv.float_block() < p, "{what}: one block only");
            }
        }
    }
}

/// The int8 convolutions (by pixel blocks on one thread and on several,
/// by channels where a split by pixels leaves a thread nothing) against
/// the definition of their arithmetic on every kernel path, bit for bit:
/// the input quantised with the activations' scale, exact i32 sums of the
/// int8 products (zeros outside the image), each channel's sum times its
/// scale plus its bias. Pointwise and spatial convolutions, strides,
/// panels that cut output rows, several blocks per thread, several
/// products per block, and an
/// epilogue that must see each value once, in whole output rows.
#[test]
fn int8_convolutions_match_their_arithmetic() {
    use crate::engine::schedule::linear::Int8;
    // (c, h, w, kernel, stride, pad, o)
    for (c, h, w, kh, st, pd, o) in [
        (40, 11, 11, 1, 1, 0, 24),
        (64, 40, 40, 1, 1, 0, 96),
        (32, 32, 32, 1, 1, 0, 200),
        (16, 20, 20, 3, 1, 1, 8),
        (3, 33, 33, 3, 2, 1, 20),
        (8, 13, 13, 3, 1, 0, 5),
    ] {
        let (oh, ow) = ((h + 2 * pd - kh) / st + 1, (w + 2 * pd - kh) / st + 1);
        let (p, kk) = (oh * ow, c * kh * kh);
        let mut state = lcg(11);
        let mut next = |n: u64| (state() >> 33) % n;
        let x: Vec<f32> = (0..c * h * w)
            .map(|_| next(2001) as f32 / 500.0 - 2.0)
            .collect();
        let q: Vec<i8> = (0..o * kk)
            .map(|_| (next(255) as i32 - 127) as i8)
            .collect();
        let scale: Vec<f32> = (0..o).map(|_| (next(100) + 1) as f32 * 1e-3).collect();
        let bias: Vec<f32> = (0..o).map(|_| next(200) as f32 * 0.01 - 1.0).collect();
        let sa = 2.0 / 127.0;
        let mut qx = vec![0i8; c * h * w];
        ew::plain::quantize_into(&x, 1.0 / sa, &mut qx);
        let mut want = vec![0f32; o * p];
        for oc in 0..o {
            let mut acc = vec![0i32; p];
            for (j, a) in acc.iter_mut().enumerate() {
                each_tap([c, h, w, kh, st, pd], ow, j, |t, i| {
                    *a += q[oc * kk + t] as i32 * qx[i] as i32;
                });
            }
            let plane = &mut want[oc * p..(oc + 1) * p];
            ew::plain::dequantize_bias(&acc, sa * scale[oc], bias[oc], plane);
            for (j, v) in plane.iter_mut().enumerate() {
                *v += (oc * p + j) as f32 * 0.25;
            }
        }
        let conv = Conv {
            c,
            h,
            w,
            o,
            oh,
            ow,
            kernel: [kh, kh],
            stride: [st, st],
            dilation: [1, 1],
            pad: [pd, pd],
            weights: ConvWeights::Int8(Int8 {
                q: q.clone().into(),
                scale: scale.clone(),
            }),
            bias: bias.clone(),
        };
        for kern in std::iter::once(Kernels::SCALAR).chain(Kernels::available()) {
            let what = format!("{c}x{h}x{w} k{kh} s{st} o{o} int8 on {}", kern.name);
            check_on_threads(&conv, &kern, &x, &[sa], &want, &what);
        }
        // The larger pointwise shape runs in several blocks a thread; the
        // one of many channels and small weights in several products a
        // block (the last one shorter).
        if c == 64 {
            assert!(3 * conv.int8_block() < p, "{c}x{h}x{w}: too few blocks");
        }
        if o == 200 {
            let (block, sub) = (conv.int8_block(), conv.int8_sub_block(conv.int8_block()));
            assert!(
                sub < block && block % sub != 0,
                "{c}x{h}x{w}: {block} / {sub}"
            );
        }
    }
}

proptest! {
    /// The patches a row per depth are the patches a row per pixel,
    /// transposed, and built in panels the rows packed, for any kernel,
    /// stride, dilation and padding.
    #[test]
    fn patch_rows_are_pixel_rows_transposed(
        c in 1usize..4, h in 1usize..9, w in 1usize..40,
        kh in 1usize..4, kw in 1usize..4,
        sy in 1usize..3, sx in 1usize..3, dy in 1usize..3, dx in 1usize..3,
        py in 0usize..3, px in 0usize..3,
    ) {
        let span = |n: usize, k: usize, s: usize, d: usize, p: usize| (n + 2 * p).checked_sub(d * (k - 1) + 1).map(|v| v / s + 1);
        let (Some(oh), Some(ow)) = (span(h, kh, sy, dy, py), span(w, kw, sx, dx, px)) else { return Ok(()) };
        let conv = Conv {
            c, h, w, o: 1, oh, ow,
            kernel: [kh, kw], stride: [sy, sx], dilation: [dy, dx], pad: [py, px],
            weights: ConvWeights::F32Rows(vec![0.0; c * kh * kw].into()),
            bias: vec![0.0],
        };
        let x: Vec<f32> = (0..c * h * w).map(|i| i as f32 + 1.0).collect();
        let (p, kk) = (oh * ow, c * kh * kw);
        let mut by_pixel = vec![-1f32; p * kk];
        conv.im2col(&x, 0, &mut by_pixel);
        let mut by_depth = vec![-1f32; kk * p];
        conv.im2col_rows(&x, 0, &mut by_depth);
        for j in 0..p {
            for t in 0..kk {
                prop_assert_eq!(by_depth[t * p + j], by_pixel[j * kk + t], "pixel {} depth {}", j, t);
            }
        }
        // Any span of pixels (a block of the float paths, rows cut
        // anywhere), from any first depth: the same values.
        for (j0, n, t0) in [(0, p, 0), (p / 3, p - p / 3, kk / 2), (1.min(p - 1), p / 2, 1.min(kk - 1)), (p - 1, 1, kk - 1)] {
            let mut part = vec![-1f32; (kk - t0) * n];
            conv.im2col_part(&x, t0, j0, n, &mut part);
            for t in t0..kk {
                for j in 0..n {
                    prop_assert_eq!(part[(t - t0) * n + j], by_depth[t * p + j0 + j], "span {}+{} depth {}", j0, n, t);
                }
            }
            // Built straight into the float kernels' panels: the rows
            // packed, padding included.
            let mut want = vec![-1f32; packed_f32_len(n, kk)];
            float_panels::pack_cols(&by_depth, p, j0, n, kk, &mut want);
            let mut panels = vec![-2f32; packed_f32_len(n, kk)];
            conv.im2col_panels(&x, j0, n, &mut panels);
            prop_assert_eq!(&panels, &want, "span {}+{} in panels", j0, n);
        }
    }
}
