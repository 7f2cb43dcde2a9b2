//! The resize's row kernels, every copy, against their definitions.

use super::*;
use crate::kernels::elementwise::tests::levels;
use proptest::prelude::*;

fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed | 1;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every copy of the row widening and the horizontal taps (the
    /// intrinsic ones included) gives the taps' sums in tap order, shifted
    /// and clamped, for 3 and 4 channels, any tap counts and rows whose
    /// length is not a multiple of the copies' steps.
    #[test]
    fn taps_equal_the_sums_in_tap_order(
        pixels in 1usize..90,
        ch in prop::sample::select(vec![3usize, 4]),
        ksize in 1usize..30,
        outputs in 1usize..20,
        shift in prop::sample::select(vec![0u32, 14, 22]),
        seed in any::<u64>(),
    ) {
        let mut next = xorshift(seed);
        let src: Vec<u8> = (0..pixels * ch).map(|_| next() as u8).collect();
        let mut bounds = Vec::new();
        let mut k = vec![0i32; outputs * ksize];
        for j in 0..outputs {
            let xmin = next() as usize % pixels;
            let n = (1 + next() as usize % ksize).min(pixels - xmin);
            for t in 0..n {
                // Pillow's coefficients: 22-bit fixed point, either sign.
                k[j * ksize + t] = (next() % (1 << 23)) as i32 - (1 << 22);
            }
            bounds.push((xmin, n));
        }
        let lo = bounds.iter().map(|b| b.0).min().unwrap();
        let mut taps = RowTaps::default();
        taps.set(&bounds, &k, ksize);
        let half: i32 = 1 << 21;
        let mut want = vec![0u8; outputs * ch];
        for (j, &(xmin, n)) in bounds.iter().enumerate() {
            for c in 0..ch {
                let mut s = half;
                for t in 0..n {
                    s = s.wrapping_add((src[(xmin + t) * ch + c] as i32).wrapping_mul(k[j * ksize + t]));
                }
                want[j * ch + c] = (s >> shift).clamp(0, 255) as u8;
            }
        }
        for lv in levels() {
            let mut wide = vec![[0i32; 4]; taps.reach().max(pixels - lo)];
            widen(lv, &src[lo * ch..], ch, &mut wide[..pixels - lo]);
            for (i, w) in wide[..pixels - lo].iter().enumerate() {
                for c in 0..4 {
                    let p = if c < ch { src[(lo + i) * ch + c] as i32 } else { 0 };
                    prop_assert_eq!(w[c], p, "{:?} widen pixel {} lane {}", lv, i, c);
                }
            }
            // Sentinels past the row: a copy's wide stores end inside it.
            let mut got = vec![0xA5u8; outputs * ch + 8];
            super::taps(lv, &taps, &wide, (half, shift), ch, &mut got[..outputs * ch]);
            prop_assert_eq!(&got[..outputs * ch], &want[..], "{:?}", lv);
            prop_assert!(got[outputs * ch..].iter().all(|&b| b == 0xA5), "{:?} wrote past the row", lv);
        }
    }

    /// Every copy of the vertical pass's tap and narrowing gives the plain
    /// sums, on rows whose length is not a multiple of any vector.
    #[test]
    fn vertical_rows_equal_the_plain_source(
        len in 0usize..300,
        k in any::<i32>(),
        shift in 0u32..31,
        seed in any::<u64>(),
    ) {
        let mut next = xorshift(seed);
        let row: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let start: Vec<i32> = (0..len).map(|_| next() as i32).collect();
        let mut want = start.clone();
        for (a, &p) in want.iter_mut().zip(&row) {
            *a = a.wrapping_add((p as i32).wrapping_mul(k));
        }
        let want8: Vec<u8> = want.iter().map(|&a| (a >> shift).clamp(0, 255) as u8).collect();
        for lv in levels() {
            let mut acc = start.clone();
            accumulate(lv, &mut acc, &row, k);
            prop_assert_eq!(&acc, &want, "{:?}", lv);
            let mut out = vec![0u8; len];
            narrow(lv, &acc, shift, &mut out);
            prop_assert_eq!(&out, &want8, "{:?}", lv);
        }
    }
}

/// Outputs without taps give `half`'s byte, and taps past `ksize` are cut
/// to it, in every copy.
#[test]
fn empty_and_overlong_taps() {
    let mut taps = RowTaps::default();
    // Output 0: no taps; output 1: 9 taps asked, `ksize` 3 kept.
    taps.set(&[(2, 0), (0, 9)], &[7, 7, 7, 1, 2, 3], 3);
    let src: Vec<u8> = (0..12u8).collect();
    for lv in levels() {
        let mut wide = vec![[0i32; 4]; taps.reach().max(4)];
        widen(lv, &src, 3, &mut wide[..4]);
        let mut out = [0u8; 6];
        super::taps(lv, &taps, &wide, (5, 0), 3, &mut out);
        // Output 1: 5 + p0·1 + p1·2 + p2·3 per channel.
        let want1: Vec<u8> = (0..3)
            .map(|c| (5 + c + 2 * (3 + c) + 3 * (6 + c)) as u8)
            .collect();
        assert_eq!(&out[..3], &[5, 5, 5], "{lv:?}");
        assert_eq!(&out[3..], &want1[..], "{lv:?}");
    }
}

/// Coefficients shorter than the outputs need are refused.
#[test]
#[should_panic(expected = "resample taps")]
fn short_coefficients_are_refused() {
    RowTaps::default().set(&[(0, 2), (1, 2)], &[1, 2, 3], 2);
}

/// A row too short for the taps' reach is refused before any copy reads.
#[test]
#[should_panic(expected = "resample taps")]
fn short_rows_are_refused() {
    let mut taps = RowTaps::default();
    taps.set(&[(0, 5)], &[1, 2, 3, 4, 5], 5);
    assert_eq!(taps.reach(), 8);
    let wide = vec![[0i32; 4]; 7];
    let mut out = [0u8; 3];
    super::taps(Level::detect(), &taps, &wide, (0, 0), 3, &mut out);
}
