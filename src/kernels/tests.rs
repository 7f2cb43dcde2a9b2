//! The kernels against their plain twins: property tests on random
//! shapes, values and tails for every path this CPU runs, and the
//! shapes of the engine's deep layers and convolutions.

use super::*;
use proptest::prelude::*;

/// Relative difference allowed between sums of the same chains added in
/// another order, and between the twin's f32 sum and the chains' exact
/// value. Measured on x86_64: the twin 7.2e-6 from the exact value, the
/// SSE4.1 path (no fused multiply-add) 6.0e-6 from the twin, the FMA
/// paths 0.
const PEAK_SUM_TOLERANCE: f64 = 7e-5;

/// Two float sums of the same exact products in different orders (with
/// or without FMA) differ by at most this many `k·ε·Σ|x·w|` (Higham:
/// each is within one of the exact sum).
pub(super) const SUM_ORDER_BOUND: f32 = 2.0;

/// The SIMD paths a SIMD-vs-twin test compares with the twins. A CPU
/// without any (none of CI's) fails such a test: it would compare
/// nothing there.
pub(super) fn simd_paths() -> Vec<Kernels> {
    let v = Kernels::available();
    assert!(
        !v.is_empty(),
        "no SIMD kernel path on this CPU: this SIMD-vs-twin test has nothing to compare"
    );
    v
}

#[test]
fn the_paths_under_test_are_named() {
    let names: Vec<&str> = Kernels::available().iter().map(|k| k.name).collect();
    eprintln!("SIMD kernel paths under test: {names:?}");
    // scripts/cross-test names the path each qemu CPU model must run
    // (a feature qemu failed to show would otherwise leave its path
    // untested here, and this test passing).
    if let (Ok(want), Err(_)) = (
        std::env::var("CLIP_EDGE_EXPECT_KERNELS"),
        std::env::var("CLIP_EDGE_KERNELS"),
    ) {
        assert_eq!(
            names.last().copied(),
            Some(want.as_str()),
            "CLIP_EDGE_EXPECT_KERNELS"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        let mut want = vec!["aarch64-neon"];
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            want.push("aarch64-dotprod");
        }
        if std::arch::is_aarch64_feature_detected!("i8mm") {
            want.push("aarch64-i8mm");
        }
        assert_eq!(names, want);
    }
    #[cfg(all(target_arch = "arm", target_os = "linux"))]
    if arm::neon::has_neon() {
        assert_eq!(names, ["armv7-neon"]);
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
    {
        assert!(names.contains(&"x86_64-avx2"), "{names:?}");
    }
}

/// `len` activations for the quantising packs: mostly uniform in ±300,
/// with NaNs, infinities, signed zeros, halves (ties at `r = 1`) and
/// values past the int8 range mixed in.
fn quantize_case(len: usize, seed: u64) -> Vec<f32> {
    const SPECIAL: [f32; 14] = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        0.5,
        -0.5,
        1.5,
        -2.5,
        126.5,
        -126.5,
        127.5,
        -1e30,
        3e38,
    ];
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if s >> 60 == 0 {
                SPECIAL[(s >> 40) as usize % SPECIAL.len()]
            } else {
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 600.0
            }
        })
        .collect()
}

fn shapes() -> impl Strategy<Value = (usize, usize, usize)> {
    // Odd sizes and tails around the tiles (2 rows × 4 channels) and
    // the SIMD widths (8, 16 lanes).
    (1usize..20, 1usize..40, 0usize..150)
}

/// Random int8 operands (every byte value) from `seed`: each SIMD path's
/// product equals the scalar twin's exactly.
fn gemm_i8_is_exact_on_every_path(
    m: usize,
    n: usize,
    k: usize,
    seed: u64,
) -> Result<(), TestCaseError> {
    let mut r = seed;
    let mut next = || {
        r = r
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (r >> 33) as u8 as i8
    };
    let x: Vec<i8> = (0..m * k).map(|_| next()).collect();
    let w: Vec<i8> = (0..n * k).map(|_| next()).collect();
    let mut want = vec![0i32; m * n];
    Kernels::SCALAR.gemm_i8(&x, &w, m, n, k, &mut want);
    for simd in simd_paths() {
        let mut got = vec![1i32; m * n];
        simd.gemm_i8(&x, &simd.pack_i8(&w, n, k), m, n, k, &mut got);
        prop_assert_eq!(&got, &want, "{} {}x{}x{}", simd.name, m, n, k);
    }
    Ok(())
}

/// A product whose right side is columns `skip..skip + n` of a
/// row-per-depth matrix (`k` rows of `ld = n + skip`), as a
/// convolution's patches are: `w` holds the same values a row per
/// column, as weights packed at load would be.
struct ColumnsCase<T> {
    ld: usize,
    n: usize,
    skip: usize,
    split: usize,
    x: Vec<T>,
    src: Vec<T>,
    w: Vec<T>,
}

impl<T: Copy> ColumnsCase<T> {
    /// `value` turns each step of a seeded LCG into an element.
    #[allow(clippy::too_many_arguments)]
    fn new(
        m: usize,
        n: usize,
        k: usize,
        skip: usize,
        split: usize,
        seed: u64,
        value: impl Fn(u64) -> T,
    ) -> Self {
        let mut r = seed;
        let mut next = || {
            r = r
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            value(r)
        };
        let ld = n + skip;
        let x: Vec<T> = (0..m * k).map(|_| next()).collect();
        let src: Vec<T> = (0..k * ld).map(|_| next()).collect();
        let kk = k.max(1);
        let w = (0..n * k)
            .map(|i| src[(i % kk) * ld + skip + i / kk])
            .collect();
        ColumnsCase {
            ld,
            n,
            skip,
            split,
            x,
            src,
            w,
        }
    }

    /// The columns packed by `pack(src, first column, columns, out)`
    /// in panels of 16 of `panel` values (`fill` elsewhere): the first
    /// `split` panels apart from the rest, as blocks of pixels are.
    fn packed(&self, panel: usize, fill: T, pack: impl Fn(&[T], usize, usize, &mut [T])) -> Vec<T> {
        let panels = self.n.div_ceil(16);
        let mut packed = vec![fill; panels * panel];
        let cut = self.split.min(panels);
        let head = (cut * 16).min(self.n);
        let (lo, hi) = packed.split_at_mut(cut * panel);
        pack(&self.src, self.skip, head, lo);
        pack(&self.src, self.skip + head, self.n - head, hi);
        packed
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn simd_gemm_i8_is_exact((m, n, k) in shapes(), seed in any::<u64>()) {
        gemm_i8_is_exact_on_every_path(m, n, k, seed)?;
    }

    /// Taller products than [`shapes`]: several 16-row tiles and pairs of
    /// them (the AMX path's blocks), with rows, channels and depths past
    /// the last whole tile.
    #[test]
    fn tall_int8_products_are_exact(m in 1usize..100, n in 1usize..50, k in 0usize..200, seed in any::<u64>()) {
        gemm_i8_is_exact_on_every_path(m, n, k, seed)?;
    }

    /// Columns of a row-per-depth matrix packed per frame (a
    /// convolution's patches), from any first column and in blocks of
    /// whole panels, give the same exact product as the rows packed at
    /// load; on every path, the scalar twins included.
    #[test]
    fn columns_packed_per_frame_multiply_exactly(
        (m, n, k) in shapes(),
        skip in 0usize..5,
        split in 0usize..3,
        seed in any::<u64>(),
    ) {
        let case = ColumnsCase::new(m, n, k, skip, split, seed, |r| (r >> 33) as u8 as i8);
        let mut want = vec![0i32; m * n];
        Kernels::SCALAR.gemm_i8(&case.x, &case.w, m, n, k, &mut want);
        for kern in Kernels::available().into_iter().chain([Kernels::SCALAR]) {
            let packed = case.packed(kern.i8_panel_len(k), 7, |src, first, cols, out| {
                kern.pack_i8_cols(src, case.ld, first, cols, k, out)
            });
            let mut got = vec![1i32; m * n];
            kern.gemm_i8(&case.x, &packed, m, n, k, &mut got);
            prop_assert_eq!(&got, &want, "{} {}x{}x{}", kern.name, m, n, k);
        }
    }

    /// The vector packing of int8 columns (the AVX-512 VNNI and AVX2
    /// paths', the dot-product path's) writes the same bytes as its plain twin,
    /// padding included.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    #[test]
    fn int8_columns_pack_as_the_plain_twin(
        n in 0usize..70,
        k in 0usize..150,
        skip in 0usize..5,
        seed in any::<u64>(),
    ) {
        type Pack = fn(&[i8], usize, usize, usize, usize, &mut [i8]);
        #[cfg(target_arch = "x86_64")]
        let packs: [(Pack, i8); 2] = [
            (x86_64::pack_unsigned_i8_cols, i8::MIN),
            (x86_64::pack_signed_i8_cols, 0),
        ];
        #[cfg(target_arch = "aarch64")]
        let packs: [(Pack, i8); 1] = [(aarch64::dotprod::pack_i8_cols, 0)];
        let case = ColumnsCase::new(0, n, k, skip, 0, seed, |r| (r >> 33) as u8 as i8);
        let len = n.div_ceil(16) * group_panels::panel_len::<4>(k);
        for (pack, flip) in packs {
            let mut want = vec![7i8; len];
            group_panels::pack_cols::<4>(&case.src, case.ld, skip, n, k, flip, &mut want);
            let mut got = vec![7i8; len];
            pack(&case.src, case.ld, skip, n, k, &mut got);
            prop_assert_eq!(got, want, "{}x{} flip {}", n, k, flip);
        }
    }

    /// Quantising f32 columns on their way into the int8 panels
    /// ([`Kernels::quantize_pack_i8_cols`]: one pass on the x86_64 paths
    /// from AVX2 up and the dot-product path, quantise-then-pack on the
    /// others) writes the
    /// bytes of quantising them row by row and packing those, on every
    /// path: partial panels, partial groups, NaNs, infinities, signed
    /// zeros, ties and saturation included.
    #[test]
    fn columns_quantised_on_the_way_pack_as_quantised_rows(
        n in 0usize..70,
        k in 0usize..40,
        skip in 0usize..5,
        extra in 0usize..3,
        r in prop_oneof![3 => 0.01f32..4.0, 1 => Just(1.0f32)],
        seed in any::<u64>(),
    ) {
        let ld = skip + n + extra;
        let x = quantize_case(k * ld, seed);
        let mut rows = vec![0i8; k * n];
        for (t, q) in rows.chunks_exact_mut(n.max(1)).enumerate() {
            elementwise::plain::quantize_into(&x[t * ld + skip..t * ld + skip + n], r, q);
        }
        for kern in Kernels::available().into_iter().chain([Kernels::SCALAR]) {
            let len = n.div_ceil(16) * kern.i8_panel_len(k);
            let mut want = vec![7i8; len];
            kern.pack_i8_cols(&rows, n, 0, n, k, &mut want);
            let (mut got, mut tmp) = (vec![7i8; len], vec![5i8; k * n]);
            kern.quantize_pack_i8_cols(&x, ld, skip, n, k, r, &mut tmp, &mut got);
            prop_assert_eq!(got, want, "{} {}x{}", kern.name, n, k);
        }
    }

    /// The one-pass driver itself ([`group_columns::quantize_pack_cols`])
    /// with a value-by-value quantiser and interleave, on every host (the
    /// vector paths that use it need AVX2, AVX-512 or aarch64): the bytes of
    /// [`group_panels::pack_cols`] over the rows quantised first, for both
    /// flips.
    #[test]
    fn the_quantising_pack_driver_packs_as_the_plain_twin(
        n in 0usize..70,
        k in 0usize..40,
        skip in 0usize..5,
        r in prop_oneof![3 => 0.01f32..4.0, 1 => Just(1.0f32)],
        seed in any::<u64>(),
    ) {
        let ld = skip + n;
        let x = quantize_case(k * ld, seed);
        let mut rows = vec![0i8; k * n];
        for (t, q) in rows.chunks_exact_mut(n.max(1)).enumerate() {
            elementwise::plain::quantize_into(&x[t * ld + skip..t * ld + skip + n], r, q);
        }
        let len = n.div_ceil(16) * group_panels::panel_len::<4>(k);
        for flip in [0i8, i8::MIN] {
            let mut want = vec![7i8; len];
            group_panels::pack_cols::<4>(&rows, n, 0, n, k, flip, &mut want);
            let mut got = vec![7i8; len];
            group_columns::quantize_pack_cols(
                &x, ld, skip, n, k, r, flip, &mut got,
                |lines| lines.map(|l| l.map(|v| quantize(v, r))),
                |q: [[i8; 16]; 4], dst| {
                    for (d, line) in q.iter().enumerate() {
                        for (c, v) in line.iter().enumerate() {
                            dst[4 * c + d] = v ^ flip;
                        }
                    }
                },
            );
            prop_assert_eq!(got, want, "{}x{} flip {}", n, k, flip);
        }
    }

    /// As above for f32 ([`Kernels::pack_f32_cols`], the float
    /// convolutions' patches): small integers, so every sum is exact in
    /// any order and the products must agree exactly.
    #[test]
    fn f32_columns_packed_per_frame_multiply_exactly(
        (m, n, k) in shapes(),
        skip in 0usize..5,
        split in 0usize..3,
        seed in any::<u64>(),
    ) {
        let case = ColumnsCase::new(m, n, k, skip, split, seed, |r| (r >> 59) as f32 - 16.0);
        let mut want = vec![0f32; m * n];
        Kernels::SCALAR.gemm_f32(&case.x, &case.w, m, n, k, &mut want);
        for kern in Kernels::available().into_iter().chain([Kernels::SCALAR]) {
            let packed = case.packed(packed_f32_len(16, k), 7.0, |src, first, cols, out| {
                kern.pack_f32_cols(src, case.ld, first, cols, k, out)
            });
            let mut got = vec![1f32; m * n];
            kern.gemm_f32p(&case.x, &packed, m, n, k, &mut got);
            prop_assert_eq!(&got, &want, "{} {}x{}x{}", kern.name, m, n, k);
        }
    }

    #[test]
    fn simd_gemm_f16w_matches_scalar((m, n, k) in shapes(), x in prop::collection::vec(-4f32..4.0, 3000), w in prop::collection::vec(-2f32..2.0, 6000)) {
        for simd in simd_paths() {
        let x = &x[..m * k];
        let w: Vec<f16> = w[..n * k].iter().map(|v| f16::from_f32(*v)).collect();
        let (mut a, mut b) = (vec![0f32; m * n], vec![1f32; m * n]);
        Kernels::SCALAR.gemm_f16w(x, &w, m, n, k, &mut a);
        simd.gemm_f16w(x, &w, m, n, k, &mut b);
        let mut c = vec![2f32; m * n];
        simd.gemm_f16p(x, &simd.pack_f16(&w, n, k), m, n, k, &mut c);
        for (idx, ((p, q), r)) in a.iter().zip(&b).zip(&c).enumerate() {
            // The same exact products (f16 widens exactly), summed in
            // another order and with FMA: each sum is within
            // k·eps·Σ|x·w| of the exact one (Higham), so the two within
            // twice that.
            let (i, j) = (idx / n, idx % n);
            let abs: f32 = (0..k).map(|t| (x[i * k + t] * w[j * k + t].to_f32()).abs()).sum();
            let bound = SUM_ORDER_BOUND * k as f32 * f32::EPSILON * abs + f32::MIN_POSITIVE;
            prop_assert!((p - q).abs() <= bound, "{} [{}] {} vs {} ({}x{}x{})", simd.name, idx, p, q, m, n, k);
            prop_assert!((p - r).abs() <= bound, "{} packed [{}] {} vs {} ({}x{}x{})", simd.name, idx, p, r, m, n, k);
        }
        }
    }

    #[test]
    fn simd_gemm_f32_matches_scalar((m, n, k) in shapes(), x in prop::collection::vec(-4f32..4.0, 3000), w in prop::collection::vec(-2f32..2.0, 6000)) {
        for simd in simd_paths() {
        let (x, w) = (&x[..m * k], &w[..n * k]);
        let (mut a, mut b) = (vec![0f32; m * n], vec![1f32; m * n]);
        Kernels::SCALAR.gemm_f32(x, w, m, n, k, &mut a);
        simd.gemm_f32(x, w, m, n, k, &mut b);
        let mut c = vec![2f32; m * n];
        simd.gemm_f32p(x, &simd.pack_f32(w, n, k), m, n, k, &mut c);
        for (idx, ((p, q), r)) in a.iter().zip(&b).zip(&c).enumerate() {
            // As for f16 weights: the same products in another order.
            let (i, j) = (idx / n, idx % n);
            let abs: f32 = (0..k).map(|t| (x[i * k + t] * w[j * k + t]).abs()).sum();
            let bound = SUM_ORDER_BOUND * k as f32 * f32::EPSILON * abs + f32::MIN_POSITIVE;
            prop_assert!((p - q).abs() <= bound, "{} [{}] {} vs {} ({}x{}x{})", simd.name, idx, p, q, m, n, k);
            prop_assert!((p - r).abs() <= bound, "{} packed [{}] {} vs {} ({}x{}x{})", simd.name, idx, p, r, m, n, k);
        }
        }
    }

    #[test]
    fn round_half_even_is_the_library_call(v in prop_oneof![-300f32..300.0, any::<f32>(), (-2000i32..2000).prop_map(|i| i as f32 * 0.5), (-9_000_000i32..9_000_000).prop_map(|i| i as f32 + 0.5)]) {
        let (a, b) = (round_half_even(v), v.round_ties_even());
        prop_assert!(a == b || (a.is_nan() && b.is_nan()), "{} -> {} vs {}", v, a, b);
    }

    #[test]
    fn quantize_is_its_definition(v in prop_oneof![-200f32..200.0, any::<f32>()], r in 0.01f32..100.0) {
        let want = if v.is_nan() { 0 } else { (v * r).round_ties_even().clamp(-127.0, 127.0) as i8 };
        prop_assert_eq!(quantize(v, r), want, "{} * {}", v, r);
    }

    #[test]
    fn quantize_row_matches_its_definition(x in prop::collection::vec(-100f32..100.0, 0..50)) {
        let mut q = vec![0i8; x.len()];
        let s = quantize_row(&x, &mut q);
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        prop_assert_eq!(s, amax.max(1e-12) * (1.0 / 127.0));
        let r = 1.0 / s;
        for (v, qi) in x.iter().zip(&q) {
            // The definition, ties to even included.
            prop_assert_eq!(*qi, (v * r).round_ties_even().clamp(-127.0, 127.0) as i8, "{} * {}", v, r);
        }
    }
}

#[test]
fn scalar_twins_compute_the_definition() {
    let x = [1i8, -2, 3, -128, 127];
    let w = [-128i8, -128, -128, -128, -128, 1, 2, 1, 1, 1];
    let mut out = [0i32; 2];
    Kernels::SCALAR.gemm_i8(&x, &w, 1, 2, 5, &mut out);
    // -128 · (1 - 2 + 3 - 128 + 127) = -128; 1 - 4 + 3 - 128 + 127 = -1.
    assert_eq!(out, [-128, -1]);
    let xf = [0.5f32, -1.0, 2.0];
    let wf: Vec<f16> = [2.0f32, 1.0, 0.25]
        .iter()
        .map(|v| f16::from_f32(*v))
        .collect();
    let mut of = [0f32; 1];
    Kernels::SCALAR.gemm_f16w(&xf, &wf, 1, 1, 3, &mut of);
    assert_eq!(of, [0.5]);
}

/// Each path's peak loop runs the twin's chains in every lane: the same
/// fused multiply-adds, so each lane equals a twin chain and the sums
/// differ only by the order they are added in.
#[test]
fn peak_loops_compute_the_twins_chains() {
    let steps = 1000;
    let (twin, twin_macs) = Kernels::SCALAR.fma_peak(steps);
    assert_eq!(twin_macs, steps * scalar::PEAK_CHAINS);
    // Each chain is b·(1 − aˢ)/(1 − a) after s steps.
    let (a, b) = (1.0f64 - 1e-6, 1e-7f64);
    let chain = b * (1.0 - a.powi(steps as i32)) / (1.0 - a);
    let want = chain * scalar::PEAK_CHAINS as f64;
    assert!(
        (twin as f64 - want).abs() <= PEAK_SUM_TOLERANCE * want,
        "{twin} vs {want}"
    );
    for kern in Kernels::available() {
        let (sum, macs) = kern.fma_peak(steps);
        let lanes = macs / twin_macs;
        assert!(
            lanes >= 4 && macs == lanes * twin_macs,
            "{}: {macs}",
            kern.name
        );
        let want = twin * lanes as f32;
        assert!(
            (sum - want).abs() <= PEAK_SUM_TOLERANCE as f32 * want,
            "{}: {sum} vs {want}",
            kern.name
        );
    }
}

/// Products taller than the blocks of rows whose sums the VNNI kernels
/// take once (512 rows on AVX-VNNI and AVX-512 VNNI), on either side of a
/// block's end, with partial panels and depth groups, and whole groups.
#[test]
fn int8_products_past_the_row_sum_blocks_are_exact() {
    for (m, k) in [(511, 23), (512, 9), (513, 23), (1030, 8)] {
        gemm_i8_is_exact_on_every_path(m, 37, k, m as u64).unwrap();
    }
}

#[test]
fn extreme_int8_values_do_not_saturate() {
    // k = 1024 of (-128)·(-128): 16,777,216, far past i16; every pairwise
    // sum of products past i16 too (the trap of maddubs-style kernels).
    // n = 5: one full 2 x 4 tile (the SIMD code) and a tail channel.
    let k = 1024;
    let x = vec![-128i8; 2 * k];
    let w = vec![-128i8; 5 * k];
    for kern in std::iter::once(Kernels::SCALAR).chain(Kernels::available()) {
        let mut out = vec![0i32; 10];
        kern.gemm_i8(&x, &kern.pack_i8(&w, 5, k), 2, 5, k, &mut out);
        assert!(
            out.iter().all(|&v| v == 128 * 128 * k as i32),
            "{}: {out:?}",
            kern.name
        );
    }
}

mod deep_shapes {
    use crate::kernels::*;

    /// Float products far deeper and taller than the property tests'
    /// shapes (up to 1,000 depths, 131 rows; a convolution's patches run to
    /// thousands), with tails, agree with the twins within the
    /// summation-order bound on the packed layouts.
    #[test]
    fn deep_float_products_match_the_twins() {
        let paths = super::tests::simd_paths();
        for (m, n, k) in [
            (131usize, 37usize, 601usize),
            (1, 17, 257),
            (129, 33, 256),
            (3, 5, 1000),
        ] {
            let mut r = 99u64;
            let mut next = || {
                r = r
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((r >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            };
            let x: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let w: Vec<f32> = (0..n * k).map(|_| f16::from_f32(next()).to_f32()).collect();
            let wh: Vec<f16> = w.iter().map(|v| f16::from_f32(*v)).collect();
            let mut want = vec![0f32; m * n];
            Kernels::SCALAR.gemm_f32(&x, &w, m, n, k, &mut want);
            for kern in &paths {
                let mut a = vec![7f32; m * n];
                kern.gemm_f32p(&x, &kern.pack_f32(&w, n, k), m, n, k, &mut a);
                let mut b = vec![7f32; m * n];
                kern.gemm_f16p(&x, &kern.pack_f16(&wh, n, k), m, n, k, &mut b);
                for (idx, ((p, q), v)) in a.iter().zip(&b).zip(&want).enumerate() {
                    let (i, j) = (idx / n, idx % n);
                    let abs: f32 = (0..k).map(|t| (x[i * k + t] * w[j * k + t]).abs()).sum();
                    let bound = super::tests::SUM_ORDER_BOUND * k as f32 * f32::EPSILON * abs
                        + f32::MIN_POSITIVE;
                    assert!(
                        (p - v).abs() <= bound,
                        "{} f32 {m}x{n}x{k} [{idx}] {p} vs {v}",
                        kern.name
                    );
                    assert!(
                        (q - v).abs() <= bound,
                        "{} f16 {m}x{n}x{k} [{idx}] {q} vs {v}",
                        kern.name
                    );
                }
            }
        }
    }

    /// Products whose depth is a multiple of 1,024 floats (past it), which
    /// the AVX-512 float kernels run in slices of 256 depths, each slice
    /// adding to the sums the ones before stored: small integers, exact in
    /// any order, so every path must give the twin's sums exactly; the
    /// outputs start as NaN (a slice that read them before writing would
    /// show). Row blocks of 14, 8, 4, 2 and 1, whole and partial panels and
    /// pairs, one row and one channel, and ViT-B/32's c_proj's depth (the
    /// sliced path runs where the CPU has AVX-512; elsewhere this checks
    /// the other paths at these depths).
    #[test]
    fn products_in_slices_of_depths_are_exact() {
        for (m, n, k) in [
            (1usize, 1usize, 2048usize),
            (7, 16, 2048),
            (15, 33, 2048),
            (29, 17, 5120),
            (50, 40, 3072),
        ] {
            let mut r = 7u64;
            let mut next = |span: u64| {
                r = r
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((r >> 33) % span) as f32 - (span / 2) as f32
            };
            let x: Vec<f32> = (0..m * k).map(|_| next(17)).collect();
            let w: Vec<f32> = (0..n * k).map(|_| next(15)).collect();
            let wh: Vec<f16> = w.iter().map(|v| f16::from_f32(*v)).collect();
            let mut want = vec![0f32; m * n];
            Kernels::SCALAR.gemm_f32(&x, &w, m, n, k, &mut want);
            for kern in super::tests::simd_paths()
                .into_iter()
                .chain([Kernels::SCALAR])
            {
                let mut a = vec![f32::NAN; m * n];
                kern.gemm_f32p(&x, &kern.pack_f32(&w, n, k), m, n, k, &mut a);
                assert_eq!(a, want, "{} f32 {m}x{n}x{k}", kern.name);
                let mut b = vec![f32::NAN; m * n];
                kern.gemm_f16p(&x, &kern.pack_f16(&wh, n, k), m, n, k, &mut b);
                assert_eq!(b, want, "{} f16 {m}x{n}x{k}", kern.name);
            }
        }
    }
}

mod conv_shapes {
    use crate::kernels::*;

    /// Convolution-sized products on patches packed per frame (CLIP's RN
    /// stem, bottleneck and late layers: depths not a multiple of 4, tens of
    /// thousands of pixels) are exact on every SIMD path.
    #[test]
    fn patches_packed_per_frame_multiply_exactly_at_convolution_sizes() {
        let paths = super::tests::simd_paths();
        for (m, n, k) in [
            (32usize, 12544usize, 27usize),
            (32, 100, 27),
            (8, 16, 27),
            (64usize, 3136usize, 576usize),
            (64, 3136, 64),
            (256, 196, 2304),
            (2048, 49, 512),
            (64, 12544, 147),
            (300, 40, 130),
        ] {
            let mut r = 12345u64;
            let mut next = || {
                r = r
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((r >> 33) as u8 as i8).clamp(-127, 127)
            };
            let x: Vec<i8> = (0..m * k).map(|_| next()).collect();
            let src: Vec<i8> = (0..k * n).map(|_| next()).collect();
            let w: Vec<i8> = (0..n * k).map(|i| src[(i % k) * n + i / k]).collect();
            let mut want = vec![0i32; m * n];
            Kernels::SCALAR.gemm_i8(&x, &w, m, n, k, &mut want);
            for kern in &paths {
                let panels = n.div_ceil(16);
                let mut packed = vec![0i8; panels * kern.i8_panel_len(k)];
                kern.pack_i8_cols(&src, n, 0, n, k, &mut packed);
                let mut got = vec![0i32; m * n];
                kern.gemm_i8(&x, &packed, m, n, k, &mut got);
                let bad = got.iter().zip(&want).filter(|(a, b)| a != b).count();
                assert_eq!(bad, 0, "{} {m}x{n}x{k}", kern.name);
            }
        }
    }
}

const PACKING_SHAPES: [(usize, usize); 7] = [
    (1, 1),
    (5, 3),
    (16, 8),
    (17, 9),
    (33, 64),
    (768, 50),
    (3, 4097),
];

#[test]
fn packed_lengths_are_what_packing_makes() {
    // Every path's layout, those this machine cannot run too.
    for pack in Packing::ALL {
        for (n, k) in PACKING_SHAPES {
            let i8s = pack.pack_i8(&vec![1; n * k], n, k).len();
            let f16s = pack.pack_f16(&vec![f16::ONE; n * k], n, k).len();
            let f32s = pack.pack_f32(&vec![1.0; n * k], n, k).len();
            let name = pack.name;
            assert_eq!(
                pack.packed_i8_len_of(n, k),
                Some(i8s),
                "{name} int8 {n}x{k}"
            );
            assert_eq!(
                pack.packed_f16_len_of(n, k),
                Some(f16s),
                "{name} f16 {n}x{k}"
            );
            assert_eq!(
                pack.packed_f32_len_of(n, k),
                Some(f32s),
                "{name} f32 {n}x{k}"
            );
        }
        assert_eq!(pack.packed_i8_len_of(usize::MAX, 2), None, "{}", pack.name);
    }
}

/// What a host packs for a path by its name is, byte for byte, what the
/// path packs on a machine that runs it (the cross-compiled tests run this
/// on the ARM paths).
#[test]
fn named_packing_is_each_paths_own() {
    let mut paths = Kernels::available();
    paths.push(Kernels::SCALAR);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for kern in paths {
        let own = kern.packing();
        // A path's name names its own layout; the one exception runs
        // another path's layout under its own name.
        let named = match Packing::named(kern.name) {
            Some(named) => named,
            None => {
                assert_eq!(
                    (kern.name, own.name),
                    ("x86_64-amx", Packing::AVX512_VNNI.name),
                    "{}: not in Packing::ALL",
                    kern.name
                );
                Packing::AVX512_VNNI
            }
        };
        for (n, k) in PACKING_SHAPES {
            let w8: Vec<i8> = (0..n * k).map(|_| next() as i8).collect();
            let w16: Vec<f16> = (0..n * k)
                .map(|_| f16::from_f32((next() % 2001) as f32 / 1000.0 - 1.0))
                .collect();
            let w32: Vec<f32> = (0..n * k)
                .map(|_| (next() % 2001) as f32 - 1000.0)
                .collect();
            let name = kern.name;
            assert_eq!(
                own.pack_i8(&w8, n, k),
                named.pack_i8(&w8, n, k),
                "{name} int8 {n}x{k}"
            );
            assert_eq!(
                own.pack_f16(&w16, n, k),
                named.pack_f16(&w16, n, k),
                "{name} f16 {n}x{k}"
            );
            assert_eq!(
                own.pack_f32(&w32, n, k),
                named.pack_f32(&w32, n, k),
                "{name} f32 {n}x{k}"
            );
        }
    }
    assert!(Packing::named("x86_64-avx9").is_none());
}
