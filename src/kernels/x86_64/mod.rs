//! x86_64 kernels, chosen by run-time feature detection: AVX-512 F/BW for
//! f32 and f16 weights where present, AMX tiles for int8 where present
//! (over the AVX-512 VNNI layout), else AVX-512 VNNI,
//! AVX2 + FMA + F16C otherwise (Haswell, Zen 1 and later), with AVX-VNNI's
//! int8 products where present (Alder Lake and later client cores, the
//! N100 class), SSE4.1 on CPUs without AVX (Nehalem, Atom, Celeron); the
//! element-wise row kernels compiled for the same level.

use std::arch::x86_64::*;

use super::elementwise::Level;
use super::group_columns;
use super::group_panels::PANEL;
use super::{Kernels, Packing};

pub mod amx;
pub mod avx2;
pub mod avx512;
pub mod avx_vnni;
pub mod depthwise;
pub mod resample;
pub mod sse41;

/// Whether this CPU runs the AVX2 kernels (AVX2, FMA, F16C).
fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

pub fn detect() -> Option<Kernels> {
    if !has_avx2() {
        return sse41_only();
    }
    amx_only()
        .or_else(vnni_only)
        .or_else(avx512_only)
        .or_else(avx_vnni_only)
        .or_else(avx2_only)
}

/// The AVX-512 kernels with VNNI's int8 products (on an AMX machine too:
/// for tests, `bench-kernels` and `CLIP_EDGE_KERNELS=x86_64-avx512-vnni`).
pub fn vnni_only() -> Option<Kernels> {
    let k = avx512_only()?;
    is_x86_feature_detected!("avx512vnni").then(|| {
        k.with_packed_i8(
            Packing::AVX512_VNNI,
            avx512::gemm_i8,
            pack_unsigned_i8_cols,
            Some(avx512::quantize_pack_i8_cols),
            avx512::i8_panel_len,
        )
    })
}

/// The VNNI path with its int8 products on AMX tiles: the same weight
/// layout (and native sections), the same sums.
pub fn amx_only() -> Option<Kernels> {
    let k = vnni_only()?;
    amx::has().then_some(Kernels {
        name: "x86_64-amx",
        gemm_i8: amx::gemm_i8,
        ..k
    })
}

/// The AVX-512 kernels without VNNI (int8 products by AVX2's), on a VNNI
/// machine too: for tests, `bench-kernels`, a bundle that ships an
/// `x86_64-avx512` section only, and `CLIP_EDGE_KERNELS=x86_64-avx512`.
pub fn avx512_only() -> Option<Kernels> {
    let avx512 = has_avx2()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl");
    avx512.then(|| {
        let mut k = avx2_kernels();
        k.weights = Packing::AVX512;
        k.name = k.weights.name;
        k.gemm_f16w = avx512::gemm_f16w;
        k.gemm_f32 = avx512::gemm_f32;
        k.gemm_f16p = avx512::gemm_f16p;
        k.pack_f32_cols = avx512::pack_f32_cols;
        k.gemm_f32p = avx512::gemm_f32p;
        k.fma_peak = avx512::fma_peak;
        k.level = Level::Avx512;
        k
    })
}

/// The AVX2 kernels with AVX-VNNI's int8 products (`vpdpbusd` on 256
/// bits) over the AVX-512 VNNI path's int8 layout (on an AVX-512 machine
/// that has it too: for tests, `bench-kernels` and
/// `CLIP_EDGE_KERNELS=x86_64-avx-vnni`).
pub fn avx_vnni_only() -> Option<Kernels> {
    avx_vnni::has().then(|| {
        avx2_kernels().with_packed_i8(
            Packing::AVX_VNNI,
            avx_vnni::gemm_i8,
            pack_unsigned_i8_cols,
            Some(avx_vnni::quantize_pack_i8_cols),
            avx_vnni::i8_panel_len,
        )
    })
}

/// The AVX2 kernels alone (on an AVX-512 machine too: for tests and
/// `bench-kernels`, and `CLIP_EDGE_KERNELS=x86_64-avx2`).
pub fn avx2_only() -> Option<Kernels> {
    has_avx2().then(avx2_kernels)
}

/// The SSE4.1 kernels alone (on an AVX machine too: for tests and
/// `bench-kernels`, and `CLIP_EDGE_KERNELS=x86_64-sse41`): int8 and f32
/// weights in rows, f16 weights in [`super::float_panels`] (each widened once for
/// several rows).
pub fn sse41_only() -> Option<Kernels> {
    sse41::has().then_some(Kernels {
        name: Packing::SSE41.name,
        weights: Packing::SSE41,
        gemm_i8: sse41::gemm_i8,
        pack_i8_cols: super::rows_of_cols,
        quantize_pack_i8_cols: None,
        i8_panel_len: super::rows_panel_len,
        gemm_f16w: sse41::gemm_f16w,
        gemm_f32: sse41::gemm_f32,
        gemm_f16p: sse41::gemm_f16p,
        pack_f32_into: super::rows_into,
        pack_f32_cols: super::rows_of_cols,
        gemm_f32p: sse41::gemm_f32,
        float_panels: false,
        fma_peak: sse41::fma_peak,
        level: Level::Sse41,
    })
}

/// AVX2 + FMA + F16C everywhere; reached only once those are detected. The
/// float weights are packed in [`super::float_panels`] on both AVX levels,
/// the int8 weights in [`super::group_panels`] of 4 depths, signed.
fn avx2_kernels() -> Kernels {
    Kernels {
        name: Packing::AVX2.name,
        weights: Packing::AVX2,
        gemm_i8: avx2::gemm_i8,
        pack_i8_cols: pack_signed_i8_cols,
        quantize_pack_i8_cols: Some(avx2::quantize_pack_i8_cols),
        i8_panel_len: avx2::i8_panel_len,
        gemm_f16w: avx2::gemm_f16w,
        gemm_f32: avx2::gemm_f32,
        gemm_f16p: avx2::gemm_f16p,
        pack_f32_into: super::float_panels::pack_into::<f32>,
        pack_f32_cols: super::float_panels::pack_cols::<f32>,
        gemm_f32p: avx2::gemm_f32p,
        float_panels: true,
        fma_peak: avx2::fma_peak,
        level: Level::Avx2,
    }
}

/// The VNNI layout's int8 packing (groups of 4 depths, `w + 128`: the
/// `x86_64-avx512-vnni`, `x86_64-amx` and `x86_64-avx-vnni` paths) of the
/// matrix whose row `j` is column `first + j` of `src` (`k` rows of `ld`):
/// whole groups of whole panels by `interleave4`.
pub fn pack_unsigned_i8_cols(
    src: &[i8],
    ld: usize,
    first: usize,
    n: usize,
    k: usize,
    out: &mut [i8],
) {
    group_columns::pack_cols(src, ld, first, n, k, i8::MIN, out, |rows, dst| {
        interleave4(rows, i8::MIN, dst)
    })
}

/// As [`pack_unsigned_i8_cols`], signed (AVX2's layout: `x86_64-avx2`,
/// `x86_64-avx512`).
pub fn pack_signed_i8_cols(
    src: &[i8],
    ld: usize,
    first: usize,
    n: usize,
    k: usize,
    out: &mut [i8],
) {
    group_columns::pack_cols(src, ld, first, n, k, 0, out, |rows, dst| {
        interleave4(rows, 0, dst)
    })
}

/// One group of a panel: column `c`'s four depths `rows[0..4][c]` (each
/// `^ flip`) at bytes `4c..4c + 4`: two rounds of byte and word unpacking
/// (SSE2, part of every x86_64 CPU).
#[inline(always)]
pub(super) fn interleave4(rows: [&[i8; PANEL]; 4], flip: i8, dst: &mut [i8; 4 * PANEL]) {
    // SAFETY: SSE2 is part of x86_64; each load reads one of the 16-byte
    // arrays.
    #[allow(unused_unsafe)]
    let q = unsafe { rows.map(|r| _mm_loadu_si128(r.as_ptr().cast())) };
    interleave4_regs(q, flip, dst)
}

/// [`interleave4`] of four rows already in registers.
#[inline(always)]
pub(super) fn interleave4_regs(rows: [__m128i; 4], flip: i8, dst: &mut [i8; 4 * PANEL]) {
    // SAFETY: SSE2 is part of x86_64; the stores write the four 16-byte
    // quarters of `dst`.
    #[allow(unused_unsafe)]
    unsafe {
        let f = _mm_set1_epi8(flip);
        let [a, b, c, d] = rows;
        let (ab0, ab1) = (_mm_unpacklo_epi8(a, b), _mm_unpackhi_epi8(a, b));
        let (cd0, cd1) = (_mm_unpacklo_epi8(c, d), _mm_unpackhi_epi8(c, d));
        let quarters = [
            _mm_unpacklo_epi16(ab0, cd0),
            _mm_unpackhi_epi16(ab0, cd0),
            _mm_unpacklo_epi16(ab1, cd1),
            _mm_unpackhi_epi16(ab1, cd1),
        ];
        let at = dst.as_mut_ptr();
        for (q, v) in quarters.into_iter().enumerate() {
            _mm_storeu_si128(at.add(16 * q).cast(), _mm_xor_si128(v, f));
        }
    }
}

/// Four activations from `x[at..]` (fewer past `end`, zero-padded) as one
/// i32 to broadcast.
#[inline(always)]
pub(super) fn group(x: &[i8], at: usize, end: usize) -> i32 {
    let mut b = [0u8; 4];
    for (t, v) in b.iter_mut().enumerate() {
        if at + t < end {
            *v = x[at + t] as u8;
        }
    }
    i32::from_le_bytes(b)
}
