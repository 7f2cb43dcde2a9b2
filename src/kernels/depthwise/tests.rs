//! The depthwise kernel's compiled copies against the plain ones, and the
//! plain one (after [`pad_plane`]) against the direct sum.

use super::*;
use crate::kernels::elementwise::tests::levels;
use proptest::prelude::*;

/// The definition, one output value at a time, taps in the same order,
/// zero outside the image; `fused`: each multiply-add in one rounding.
#[allow(clippy::too_many_arguments)]
fn direct(
    fused: bool,
    x: &[f32],
    [h, w]: [usize; 2],
    k: &[f32],
    [kh, kw]: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    pad: [usize; 2],
    bias: f32,
    [oh, ow]: [usize; 2],
) -> Vec<f32> {
    let mut out = vec![0f32; oh * ow];
    for oy in 0..oh {
        for ox in 0..ow {
            let mut acc = bias;
            for ky in 0..kh {
                for kx in 0..kw {
                    let iy = (oy * stride[0] + ky * dilation[0]) as isize - pad[0] as isize;
                    let ix = (ox * stride[1] + kx * dilation[1]) as isize - pad[1] as isize;
                    let v = if (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix) {
                        x[iy as usize * w + ix as usize]
                    } else {
                        0.0
                    };
                    let w = k[ky * kw + kx];
                    acc = if fused {
                        w.mul_add(v, acc)
                    } else {
                        acc + w * v
                    };
                }
            }
            out[oy * ow + ox] = acc;
        }
    }
    out
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Every geometry (kernel, stride, dilation, padding, including
    /// padding wider than the kernel reaches and rows past one block): the
    /// plain copies are the direct sums (unfused and fused) and every
    /// compiled copy is the one of its form, bit for bit.
    #[test]
    fn every_copy_is_the_direct_sum(
        h in 1usize..24, w in 1usize..48,
        kh in 1usize..8, kw in 1usize..10,
        sy in 1usize..4, sx in 1usize..5,
        dy in 1usize..3, dx in 1usize..4,
        py in 0usize..5, px in 0usize..6,
        seed in any::<u64>(),
    ) {
        copies_are_the_direct_sum([h, w], [kh, kw], [sy, sx], [dy, dx], [py, px], [0, 0], seed)?;
    }

    /// As above for stride and dilation 1 both ways, the models'
    /// commonest depthwise geometry (rarely drawn above), which the
    /// AVX-512 copy runs for 3, 5 and 7 tap rows and up to 16 taps across
    /// (17 falls back to the plain copy).
    #[test]
    fn every_copy_is_the_direct_sum_when_dense(
        h in 1usize..30, w in 1usize..48,
        kh in 1usize..8, kw in 1usize..18,
        py in 0usize..4, px in 0usize..4,
        seed in any::<u64>(),
    ) {
        copies_are_the_direct_sum([h, w], [kh, kw], [1, 1], [1, 1], [py, px], [0, 0], seed)?;
    }

    /// Stride 1 or 2 both ways, dilation 1 (the geometries the AVX-512
    /// copy reads unpadded), with padding past a whole vector and fewer
    /// output rows and columns than the padding allows (the image
    /// reaching past what the outputs read, as an asymmetric padding
    /// leaves it).
    #[test]
    fn every_copy_is_the_direct_sum_when_read_unpadded(
        h in 1usize..40, w in 1usize..70,
        kh in prop::sample::select(vec![3usize, 5, 7]), kw in 1usize..18,
        stride in 1usize..3,
        py in 0usize..20, px in 0usize..20,
        trim_h in 0usize..4, trim_w in 0usize..20,
        seed in any::<u64>(),
    ) {
        copies_are_the_direct_sum(
            [h, w], [kh, kw], [stride, stride], [1, 1], [py, px], [trim_h, trim_w], seed,
        )?;
    }
}

/// The plain copies against the direct sums, and every compiled copy
/// against the one of its form, bit for bit, for one geometry (`trim`:
/// output rows and columns left out at the end, at least one kept).
fn copies_are_the_direct_sum(
    [h, w]: [usize; 2],
    [kh, kw]: [usize; 2],
    [sy, sx]: [usize; 2],
    [dy, dx]: [usize; 2],
    [py, px]: [usize; 2],
    trim: [usize; 2],
    seed: u64,
) -> Result<(), TestCaseError> {
    let span = |n: usize, k: usize, s: usize, d: usize, p: usize, t: usize| {
        (n + 2 * p)
            .checked_sub(d * (k - 1) + 1)
            .map(|r| (r / s + 1).saturating_sub(t).max(1))
    };
    let (Some(oh), Some(ow)) = (
        span(h, kh, sy, dy, py, trim[0]),
        span(w, kw, sx, dx, px, trim[1]),
    ) else {
        return Ok(());
    };
    let mut r = seed | 1;
    let mut next = || {
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        (r % 2001) as f32 / 1000.0 - 1.0
    };
    let x: Vec<f32> = (0..h * w).map(|_| next()).collect();
    let k: Vec<f32> = (0..kh * kw).map(|_| next()).collect();
    let bias = next();
    let (kernel, stride, dilation, pad) = ([kh, kw], [sy, sx], [dy, dx], [py, px]);
    let want = |fused| {
        direct(
            fused,
            &x,
            [h, w],
            &k,
            kernel,
            stride,
            dilation,
            pad,
            bias,
            [oh, ow],
        )
    };
    let (unfused, fused) = (want(false), want(true));
    let p = Padded::of([oh, ow], kernel, stride, dilation).unwrap();
    let mut xp = vec![f32::NAN; p.len()];
    pad_plane(&x, w, pad, p, &mut xp);
    let mut got = vec![f32::NAN; oh * ow];
    plain::plane::<false>(
        &xp, p.phases, p.cols, &k, kernel, stride, dilation, bias, ow, &mut got,
    );
    prop_assert_eq!(bits(&got), bits(&unfused));
    got.fill(f32::NAN);
    plain::plane::<true>(
        &xp, p.phases, p.cols, &k, kernel, stride, dilation, bias, ow, &mut got,
    );
    prop_assert_eq!(bits(&got), bits(&fused));
    for lv in levels() {
        let mut c = vec![f32::NAN; oh * ow];
        plane(
            lv, &xp, p.phases, p.cols, &k, kernel, stride, dilation, bias, ow, &mut c,
        );
        let want = if lv.fuses() { &fused } else { &unfused };
        prop_assert_eq!(bits(&c), bits(want), "{:?}", lv);
        if reads_unpadded(lv, kernel, stride, dilation) {
            c.fill(f32::NAN);
            plane_unpadded(lv, &x, [h, w], pad, &k, kernel, stride, bias, ow, &mut c);
            prop_assert_eq!(bits(&c), bits(want), "{:?} unpadded", lv);
        }
    }
    Ok(())
}

proptest! {
    /// Each input value lands where the padded layout puts it (column `i`
    /// of row `y` in run `(i + pad) mod phases` of padded row `y + pad`,
    /// at `(i + pad) / phases`, when inside the run and the rows), zeros
    /// everywhere else: any width, stride and padding, padding past the
    /// runs and rows past the plane included.
    #[test]
    fn padded_runs_hold_each_value_where_it_belongs(
        h in 1usize..5, w in 1usize..40, py in 0usize..4, px in 0usize..80,
        phases in 1usize..4, cols in 1usize..30, rows in 1usize..7,
    ) {
        let p = Padded { rows, phases, cols };
        let x: Vec<f32> = (0..h * w).map(|i| i as f32 + 1.0).collect();
        let mut want = vec![0f32; p.len()];
        for (iy, row) in x.chunks_exact(w).enumerate() {
            let y = iy + py;
            for (i, v) in row.iter().enumerate() {
                let c = i + px;
                if y < rows && c / phases < cols {
                    want[(y * phases + c % phases) * cols + c / phases] = *v;
                }
            }
        }
        let mut got = vec![f32::NAN; p.len()];
        pad_plane(&x, w, [py, px], p, &mut got);
        prop_assert_eq!(bits(&got), bits(&want));
    }
}

/// A padded plane one value short of what the geometry reads is refused
/// before any read (the kernel reads it unchecked), as is a kernel with
/// too few taps.
#[test]
fn a_short_padded_plane_is_refused() {
    let (kernel, stride, dilation, [oh, ow]) = ([3, 3], [2, 2], [1, 1], [5, 7]);
    let p = Padded::of([oh, ow], kernel, stride, dilation).unwrap();
    let k = [0.5f32; 9];
    let run = |xp: &[f32], k: &[f32]| {
        std::panic::catch_unwind(|| {
            let mut out = vec![0f32; oh * ow];
            plain::plane::<false>(
                xp, p.phases, p.cols, k, kernel, stride, dilation, 0.0, ow, &mut out,
            );
        })
        .is_ok()
    };
    let xp = vec![1f32; p.len()];
    assert!(run(&xp, &k));
    assert!(!run(&xp[..p.len() - 1], &k));
    assert!(!run(&xp, &k[..8]));
}
