//! The image resize's horizontal pass on x86_64: the row widened to four
//! i32 lanes a pixel, then each output's taps four pixels (16 lanes, one
//! AVX-512 multiply) or two (AVX2) at a time, each tap's coefficient
//! spread over its pixel's lanes by a permute. Twins of
//! [`plain::taps`] and [`plain::widen`]: wrapping integer sums, so the
//! same results in any order (tested against them).

use std::arch::x86_64::*;

use crate::kernels::resample::{check, plain, RowTaps};

/// The sums' lanes to bytes, stored at `out` (`ch` of them).
///
/// # Safety
/// `out` must be valid for `ch` bytes, or 4 when `wide_store`.
#[inline(always)]
unsafe fn store_bytes(
    s: __m128i,
    (half, shift): (i32, u32),
    ch: usize,
    out: *mut u8,
    wide_store: bool,
) {
    // SAFETY: SSE4.1 is enabled by every caller; `out` as the caller says.
    unsafe {
        let s = _mm_add_epi32(s, _mm_set1_epi32(half));
        let s = _mm_sra_epi32(s, _mm_cvtsi32_si128(shift as i32));
        let s = _mm_packus_epi16(_mm_packs_epi32(s, s), _mm_setzero_si128());
        let v = _mm_cvtsi128_si32(s).to_le_bytes();
        if wide_store {
            out.cast::<[u8; 4]>().write_unaligned(v);
        } else {
            std::ptr::copy_nonoverlapping(v.as_ptr(), out, ch);
        }
    }
}

/// Every output of `taps` through `sum` (its four lanes' sums from the
/// output's first widened pixel, its first coefficient and its groups of
/// four taps), stored as bytes.
///
/// # Safety
/// SSE4.1 and whatever `sum` needs must be enabled (the callers' target
/// features; `sum` reads `groups` groups of 16 lanes from both pointers).
#[inline(always)]
unsafe fn each_output(
    taps: &RowTaps,
    wide: &[[i32; 4]],
    sums: (i32, u32),
    ch: usize,
    out: &mut [u8],
    sum: impl Fn(*const i32, *const i32, usize) -> __m128i,
) {
    check(taps, wide, ch, out);
    let (bounds, k, steps) = (&taps.bounds, &taps.k, taps.steps);
    for (j, &(x, n)) in bounds.iter().enumerate() {
        // SAFETY: `check` put the `n.div_ceil(4)` groups of 16 lanes from
        // pixel `x` inside `wide` (its reach), output `j`'s `4 * groups <=
        // steps` coefficients inside `k`, and `out` holds `ch` bytes an
        // output: 4 from this one's start when another follows.
        unsafe {
            let s = sum(
                wide.as_ptr().cast::<i32>().add(x * 4),
                k.as_ptr().add(j * steps),
                n.div_ceil(4),
            );
            store_bytes(
                s,
                sums,
                ch,
                out.as_mut_ptr().add(j * ch),
                j + 1 < bounds.len() || ch == 4,
            );
        }
    }
}

/// [`plain::taps`] with AVX-512 F.
///
/// # Safety
/// The CPU must have AVX-512 F, AVX2 and SSE4.1.
#[target_feature(enable = "avx512f,avx2,sse4.1")]
pub unsafe fn taps_avx512(
    taps: &RowTaps,
    wide: &[[i32; 4]],
    sums: (i32, u32),
    ch: usize,
    out: &mut [u8],
) {
    let spread = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    // SAFETY: this function's features are `each_output`'s and the
    // closure's; `each_output` bounds the closure's reads.
    unsafe {
        each_output(taps, wide, sums, ch, out, |p, q, groups| {
            let group = |g: usize| {
                let kq = _mm_loadu_si128(q.add(g * 4).cast());
                let kv = _mm512_permutexvar_epi32(spread, _mm512_castsi128_si512(kq));
                _mm512_mullo_epi32(_mm512_loadu_si512(p.add(g * 16).cast()), kv)
            };
            let (mut a0, mut a1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
            let mut g = 0;
            while g + 2 <= groups {
                a0 = _mm512_add_epi32(a0, group(g));
                a1 = _mm512_add_epi32(a1, group(g + 1));
                g += 2;
            }
            if g < groups {
                a0 = _mm512_add_epi32(a0, group(g));
            }
            let a = _mm512_add_epi32(a0, a1);
            let s = _mm256_add_epi32(_mm512_castsi512_si256(a), _mm512_extracti64x4_epi64::<1>(a));
            _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s))
        })
    }
}

/// [`plain::taps`] with AVX2.
///
/// # Safety
/// The CPU must have AVX2 and SSE4.1.
#[target_feature(enable = "avx2,sse4.1")]
pub unsafe fn taps_avx2(
    taps: &RowTaps,
    wide: &[[i32; 4]],
    sums: (i32, u32),
    ch: usize,
    out: &mut [u8],
) {
    let spread = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    // SAFETY: as in `taps_avx512` (each group of 16 lanes read as two
    // halves of 8, and its four coefficients).
    unsafe {
        each_output(taps, wide, sums, ch, out, |p, q, groups| {
            let (mut a0, mut a1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
            for g in 0..groups {
                let kq = _mm_loadu_si128(q.add(g * 4).cast());
                let k0 = _mm256_permutevar8x32_epi32(_mm256_castsi128_si256(kq), spread);
                let k1 = _mm256_permutevar8x32_epi32(
                    _mm256_castsi128_si256(_mm_unpackhi_epi64(kq, kq)),
                    spread,
                );
                let x0 = _mm256_loadu_si256(p.add(g * 16).cast());
                let x1 = _mm256_loadu_si256(p.add(g * 16 + 8).cast());
                a0 = _mm256_add_epi32(a0, _mm256_mullo_epi32(x0, k0));
                a1 = _mm256_add_epi32(a1, _mm256_mullo_epi32(x1, k1));
            }
            let a = _mm256_add_epi32(a0, a1);
            _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256::<1>(a))
        })
    }
}

/// [`plain::taps`] compiled with SSE4.1 (its `pmulld`).
///
/// # Safety
/// The CPU must have SSE4.1.
#[target_feature(enable = "sse4.1")]
pub unsafe fn taps_sse41(
    taps: &RowTaps,
    wide: &[[i32; 4]],
    sums: (i32, u32),
    ch: usize,
    out: &mut [u8],
) {
    plain::taps(taps, wide, sums, ch, out)
}

/// The byte shuffle that spreads four RGB pixels over four lanes each,
/// the fourth lane's byte zero.
const RGB_TO_LANES: [i8; 16] = [0, 1, 2, -1, 3, 4, 5, -1, 6, 7, 8, -1, 9, 10, 11, -1];

/// [`plain::widen`] four pixels at a time through `store` (the four
/// pixels' 16 bytes, as RGBA, to four pixels of `out`), the rest plainly.
///
/// # Safety
/// SSSE3 and whatever `store` needs must be enabled (the callers' target
/// features); `store` writes four pixels at the pointer it is given.
#[inline(always)]
unsafe fn widen_by_four(
    src: &[u8],
    ch: usize,
    out: &mut [[i32; 4]],
    store: impl Fn(*mut [i32; 4], __m128i),
) {
    assert!(ch == 3 || ch == 4, "widen: {ch} channels");
    let n = out.len().min(src.len() / ch);
    let mut i = 0;
    // SAFETY: each 16-byte load ends inside `src` (`i * ch + 16` bytes,
    // checked), each store covers pixels `i..i + 4 <= n` of `out`.
    unsafe {
        let shuffle = _mm_loadu_si128(RGB_TO_LANES.as_ptr().cast());
        while i + 4 <= n && i * ch + 16 <= src.len() {
            let v = _mm_loadu_si128(src.as_ptr().add(i * ch).cast());
            let v = if ch == 3 {
                _mm_shuffle_epi8(v, shuffle)
            } else {
                v
            };
            store(out.as_mut_ptr().add(i), v);
            i += 4;
        }
    }
    plain::widen(&src[i * ch..], ch, &mut out[i..n]);
}

/// [`plain::widen`] with AVX-512 F.
///
/// # Safety
/// The CPU must have AVX-512 F, AVX2 and SSSE3.
#[target_feature(enable = "avx512f,avx2,ssse3,sse4.1")]
pub unsafe fn widen_avx512(src: &[u8], ch: usize, out: &mut [[i32; 4]]) {
    // SAFETY: this function's features are the helper's and the
    // closure's; the helper gives the closure four pixels of `out`.
    unsafe {
        widen_by_four(src, ch, out, |o, v| {
            _mm512_storeu_si512(o.cast(), _mm512_cvtepu8_epi32(v))
        })
    }
}

/// [`plain::widen`] with AVX2.
///
/// # Safety
/// The CPU must have AVX2 and SSSE3.
#[target_feature(enable = "avx2,ssse3,sse4.1")]
pub unsafe fn widen_avx2(src: &[u8], ch: usize, out: &mut [[i32; 4]]) {
    // SAFETY: as in `widen_avx512`: two 32-byte stores, four pixels.
    unsafe {
        widen_by_four(src, ch, out, |o, v| {
            let o = o.cast::<__m256i>();
            _mm256_storeu_si256(o, _mm256_cvtepu8_epi32(v));
            _mm256_storeu_si256(o.add(1), _mm256_cvtepu8_epi32(_mm_srli_si128::<8>(v)));
        })
    }
}

/// [`plain::widen`] compiled with SSE4.1.
///
/// # Safety
/// The CPU must have SSE4.1.
#[target_feature(enable = "sse4.1")]
pub unsafe fn widen_sse41(src: &[u8], ch: usize, out: &mut [[i32; 4]]) {
    plain::widen(src, ch, out)
}

/// Prefetches every cache line of `bytes` (a hint: no effect on results).
pub fn prefetch(bytes: &[u8]) {
    for line in bytes.chunks(64) {
        // SAFETY: SSE (the x86_64 baseline) has `prefetcht0`; the address
        // is inside `bytes` (and a prefetch never faults).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) };
    }
}
