//! AVX-512 (F + BW) and AVX-512 VNNI. int8: an outer-product micro-tile of
//! 12 rows × 32 output channels (8, 4, 2 and 1 rows for the last rows and
//! the AMX path's leftovers) over weights packed once at load
//! ([`Packing::AVX512_VNNI`](crate::kernels::Packing::AVX512_VNNI)): each `vpdpbusd` multiplies one 64-byte panel group (16
//! channels × 4 depths) by four activations of one row broadcast to every
//! lane and adds the four products into each channel's i32 sum, exactly
//! (the non-saturating form): 64 multiply-adds an instruction and no
//! horizontal sum. `vpdpbusd` wants one unsigned operand: the packed
//! weights are stored as `w + 128` (one byte each, as the bundle's), and
//! the sums corrected by `128 · Σ_k x[i][k]`. f32 and f16 weights packed
//! in [`float_panels`](crate::kernels::float_panels): outer-product tiles of 14 rows × 32 channels, 16
//! lanes a vector (`vcvtph2ps` widens 16 f16 in one instruction); weights
//! in rows (the reference layout): tiles of 2 rows × 4 output channels
//! (`kernels::drive`), tails one element at a time.

use std::arch::x86_64::*;

use half::f16;

use crate::kernels::drive::holds;
use crate::kernels::{drive, group_columns, group_panels, scalar};

use super::{group, interleave4_regs};

pub(super) fn has_vnni() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}

fn has_avx512() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")
}

/// Channels of one packed weight panel (one zmm of i32 sums).
const PANEL: usize = group_panels::PANEL;
/// Rows of `x` per int8 micro-tile of the AMX path's leftover rows, and the
/// last rows of [`INT8_MR`]'s blocks.
const MR: usize = 8;
/// Rows of `x` per int8 micro-tile: 12 rows × 2 panels keep 24 of the 32
/// zmm registers as sums, so each row block reads its pair of panels for
/// 12 rows (a ViT's 50 tokens in 5 passes, 7 with 8-row tiles).
const INT8_MR: usize = 12;
/// Rows of `x` per float micro-tile: 14 rows × 2 panels keep 28 of the 32
/// zmm registers as sums. A pair of panels at a ViT's depths does not fit
/// the L1 cache, so every row block reads it again from L2: 14 rows a pass
/// instead of 8 read it less often (a ViT's 50 tokens in 4 passes).
const FLOAT_MR: usize = 14;

/// One panel: 16 rows by `⌈k/4⌉` groups of 4 depths.
pub fn i8_panel_len(k: usize) -> usize {
    group_panels::panel_len::<4>(k)
}

/// [`super::pack_unsigned_i8_cols`] of the int8 matrix `quantize(v, r)` of
/// `x`'s columns,
/// quantised on the way ([`group_columns::quantize_pack_cols`]): the VNNI
/// and AMX paths' (AVX-512 F, checked).
pub fn quantize_pack_i8_cols(
    x: &[f32],
    ld: usize,
    first: usize,
    n: usize,
    k: usize,
    r: f32,
    out: &mut [i8],
) {
    #[target_feature(enable = "avx512f")]
    unsafe fn run(x: &[f32], ld: usize, first: usize, n: usize, k: usize, r: f32, out: &mut [i8]) {
        group_columns::quantize_pack_cols(
            x,
            ld,
            first,
            n,
            k,
            r,
            i8::MIN,
            out,
            |rows| {
                // SAFETY: AVX-512 F is enabled here; each load reads one
                // of the 16-value arrays.
                unsafe {
                    let rv = _mm512_set1_ps(r);
                    let (lo, hi) = (_mm512_set1_ps(-127.0), _mm512_set1_ps(127.0));
                    rows.map(|row| {
                        let v = _mm512_mul_ps(_mm512_loadu_ps(row.as_ptr()), rv);
                        // NaN to 0, the rest clamped, rounded to nearest
                        // even (the default rounding) and narrowed.
                        let ordered = _mm512_cmp_ps_mask::<_CMP_ORD_Q>(v, v);
                        let c =
                            _mm512_maskz_mov_ps(ordered, _mm512_min_ps(_mm512_max_ps(v, lo), hi));
                        _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(c))
                    })
                }
            },
            |q, dst| interleave4_regs(q, i8::MIN, dst),
        )
    }
    assert!(has_avx512());
    // SAFETY: the CPU has AVX-512 F (asserted); every access in `run` is
    // bounds-checked.
    unsafe { run(x, ld, first, n, k, r, out) }
}

/// Rows whose `128 · Σ_k x` biases are taken once, before the panels pass
/// over them: a ViT-L's 257 tokens in one block (the panels, the weights of
/// a linear layer, are then read from memory once). Past it, each block of
/// rows reads every panel again.
const SUM_ROWS: usize = 512;

/// Only reached through [`super::detect`], which checked AVX-512 VNNI.
/// `w` is [`Packing::AVX512_VNNI`](crate::kernels::Packing::AVX512_VNNI)'s
/// int8 layout; the bias of the unsigned weights is taken out with the
/// activations' row sums, once per block of `SUM_ROWS` rows, in which
/// `walk` goes.
pub fn gemm_i8(x: &[i8], w: &[i8], m: usize, n: usize, k: usize, out: &mut [i32]) {
    let kg = k.div_ceil(4);
    assert!(
        has_vnni()
            && holds(w.len(), &[n.div_ceil(PANEL), kg, PANEL * 4])
            && holds(x.len(), &[m, k])
            && holds(out.len(), &[m, n])
    );
    let mut bias = [0i32; SUM_ROWS];
    let mut r0 = 0;
    while r0 < m {
        let r1 = (r0 + SUM_ROWS).min(m);
        for (b, i) in bias.iter_mut().zip(r0..r1) {
            // SAFETY: AVX-512 VNNI is present (asserted).
            *b = 128 * unsafe { row_sum(&x[i * k..(i + 1) * k]) };
        }
        walk(r1 - r0, n, INT8_MR, |rows, panels, i, j| {
            let wp = &w[(j / PANEL) * kg * PANEL * 4..];
            // The first row block of a pair of panels fetches the next
            // pair ahead (the weights come from memory once a block of
            // rows; the later row blocks find this pair in cache).
            let ahead = if i == 0 && j + panels * PANEL < n {
                panels * kg * PANEL * 4
            } else {
                0
            };
            let (bias, i) = (&bias[i..], r0 + i);
            // SAFETY: VNNI is present (asserted); the tile reads rows
            // i..i + rows ≤ m of `x` (k each), panels j / 16 .. + `panels`
            // of `w` (asserted long enough), the rows' biases (`rows` of
            // `bias`), and writes rows i..i + rows, channels
            // j..min(j + 16 · panels, n) of `out` (m × n); it only
            // prefetches at `ahead`.
            unsafe {
                match (rows, panels) {
                    (INT8_MR, 2) => tile::<INT8_MR, 2>(x, wp, i, j, n, k, bias, out, ahead),
                    (INT8_MR, _) => tile::<INT8_MR, 1>(x, wp, i, j, n, k, bias, out, ahead),
                    _ => dispatch!(tile, rows, panels, x, wp, i, j, n, k, bias, out, ahead),
                }
            }
        });
        r0 = r1;
    }
}

/// Rows `i..m` of `x` × the `panels` (1 or 2) panels at `wp` (channels
/// `j..`), in blocks of 8, 4, 2 and 1 rows: the rows the AMX tiles leave
/// (fewer than 16) on the panels those tiles just read.
///
/// # Safety
/// AVX-512 VNNI; `x` holds `m` rows of `k`, `wp` `panels` panels of
/// `⌈k/4⌉` groups, `out` `m` rows of `n` with `j + 16 · (panels - 1) < n`.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn panel_rows(
    x: &[i8],
    wp: &[i8],
    mut i: usize,
    m: usize,
    panels: usize,
    j: usize,
    n: usize,
    k: usize,
    out: &mut [i32],
) {
    while i < m {
        let rows = row_block(m - i, MR);
        let mut bias = [0i32; MR];
        for (b, r) in bias.iter_mut().zip(i..i + rows) {
            // SAFETY: VNNI is present (the caller's).
            *b = 128 * unsafe { row_sum(&x[r * k..(r + 1) * k]) };
        }
        // SAFETY: the caller's bounds, rows i..i + rows ≤ m.
        unsafe { dispatch!(tile, rows, panels, x, wp, i, j, n, k, &bias, out, 0) };
        i += rows;
    }
}

/// Rows of the next micro-tile when `left` rows remain: `tall` (`MR` or
/// `FLOAT_MR`), the last ones 8, 4, 2 and 1 at a time.
fn row_block(left: usize, tall: usize) -> usize {
    match left {
        r if r >= tall => tall,
        r if r >= MR => MR,
        r if r >= 4 => 4,
        r if r >= 2 => 2,
        _ => 1,
    }
}

/// Depths of one slice of a product run by [`deep_float_walk`].
const FLOAT_DEPTHS: usize = 256;
/// Depths (floats) whose rows lie a multiple of 4 KiB apart: at a depth
/// that is a multiple of this, every row of `x` starts in the same set of
/// the L1 cache.
const ALIASED_DEPTHS: usize = 1024;
/// Row stride of a block's copied slice: 1,088 bytes, 17 cache lines, so
/// that its rows fall in different sets of the L1 cache.
const COPY_LD: usize = FLOAT_DEPTHS + 16;

/// Whether a float product of depth `k` runs by [`deep_float_walk`]: a
/// depth past 1,024 and a multiple of it (ViT-B/32's `c_proj`: 3,072;
/// RN50's attention pool and its last 1 × 1 convolutions: 2,048), where the 14 rows of a tile, read at the
/// same depth, all fall in one set of the L1 cache (8 ways on Zen 4, 12 on
/// Intel's cores since Ice Lake) and evict each other before their next
/// depths are read (docs/benchmarks.md). At other depths the
/// rows spread over sets, and the copies cost more than they save (RN50's
/// 3 × 3 convolutions of 2,304 and 4,608 depths, with few panels to share
/// each copy).
fn runs_in_slices(k: usize) -> bool {
    k > ALIASED_DEPTHS && k.is_multiple_of(ALIASED_DEPTHS)
}

/// The walk of a product whose rows alias ([`runs_in_slices`]): the depths
/// in equal slices of at most [`FLOAT_DEPTHS`]; in each, every block of
/// [`FLOAT_MR`] rows (the last ones 8, 4, 2 and 1 at a time) copied once
/// into padded rows and handed to `f(rows, first row, the rows' slice, its
/// stride, (t0, t1))`, which runs it over every panel (a slice of 768
/// channels' panels, 768 KiB, stays in a 1 MiB L2 for the next block). Each slice after the first adds to the
/// sums the slices before stored: f32 sums stored and loaded again are
/// exact, so the results are those of one pass over every depth.
// Not inlined: its 15 KiB copy would sit in the frame of every product
// (stack probes on every call of the small products).
#[inline(never)]
fn deep_float_walk(
    x: &[f32],
    m: usize,
    k: usize,
    mut f: impl FnMut(usize, usize, &[f32], usize, (usize, usize)),
) {
    let depths = k.div_ceil(k.div_ceil(FLOAT_DEPTHS));
    let mut copy = [0f32; FLOAT_MR * COPY_LD];
    let mut t0 = 0;
    while t0 < k {
        let t1 = (t0 + depths).min(k);
        let mut i = 0;
        while i < m {
            let rows = row_block(m - i, FLOAT_MR);
            for r in 0..rows {
                copy[r * COPY_LD..r * COPY_LD + (t1 - t0)]
                    .copy_from_slice(&x[(i + r) * k + t0..(i + r) * k + t1]);
            }
            f(rows, i, &copy, COPY_LD, (t0, t1));
            i += rows;
        }
        t0 = t1;
    }
}

/// The pairs of panels over `n` channels, the last one alone where 16 or
/// fewer channels remain: (first channel, panels).
pub(super) fn pairs(n: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n)
        .step_by(2 * PANEL)
        .map(move |j| (j, if n - j > PANEL { 2 } else { 1 }))
}

/// The lanes of the 16 channels from `j0` that lie below `n`.
#[inline(always)]
pub(super) fn channel_mask(n: usize, j0: usize) -> __mmask16 {
    let valid = n.saturating_sub(j0).min(PANEL);
    ((1u32 << valid) - 1) as __mmask16
}

/// Panels outer (one pair, 32 channels × k, stays in L2 while every row
/// block passes over it), then blocks of `tall` rows, the last rows 8, 4,
/// 2 and 1 at a time: `f(rows, panels, first row, first channel)`.
fn walk(m: usize, n: usize, tall: usize, mut f: impl FnMut(usize, usize, usize, usize)) {
    for (j, panels) in pairs(n) {
        let mut i = 0;
        while i < m {
            let rows = row_block(m - i, tall);
            f(rows, panels, i, j);
            i += rows;
        }
    }
}

/// The micro-tile for `rows` (8, 4, 2 or 1) × `panels` (2 or 1).
macro_rules! dispatch {
    ($tile:ident, $rows:expr, $panels:expr, $($arg:expr),*) => {
        match ($rows, $panels) {
            (MR, 2) => $tile::<MR, 2>($($arg),*),
            (MR, _) => $tile::<MR, 1>($($arg),*),
            (4, 2) => $tile::<4, 2>($($arg),*),
            (4, _) => $tile::<4, 1>($($arg),*),
            (2, 2) => $tile::<2, 2>($($arg),*),
            (2, _) => $tile::<2, 1>($($arg),*),
            (_, 2) => $tile::<1, 2>($($arg),*),
            _ => $tile::<1, 1>($($arg),*),
        }
    };
}
use dispatch;

/// `Σ_k x[k]` of one activation row, 64 bytes a step (`vpdpbusd` of ones).
///
/// # Safety
/// AVX-512 F/BW/VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) fn row_sum(x: &[i8]) -> i32 {
    let ones = _mm512_set1_epi8(1);
    let mut acc = _mm512_setzero_si512();
    let mut t = 0;
    while t < x.len() {
        let left = x.len() - t;
        let mask: __mmask64 = if left >= 64 { !0 } else { (1u64 << left) - 1 };
        // SAFETY: the mask covers bytes t..min(t + 64, len) of `x`;
        // masked-out bytes are not read.
        let v = unsafe { _mm512_maskz_loadu_epi8(mask, x.as_ptr().add(t)) };
        acc = _mm512_dpbusd_epi32(acc, ones, v);
        t += 64;
    }
    _mm512_reduce_add_epi32(acc)
}

/// `R` rows × `P` panels of 16 channels: `R · P` accumulators, each
/// `vpdpbusd` multiplying one packed (unsigned) panel group by four signed
/// activations of one row broadcast to every lane; stored less each row's
/// `128 · Σ_k x` (`bias[r]`), the bias of the unsigned weights.
///
/// # Safety
/// AVX-512 F/BW/VNNI; the bounds [`gemm_i8`] asserts; `bias` holds at
/// least `R` values.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const R: usize, const P: usize>(
    x: &[i8],
    wp: &[i8],
    i: usize,
    j: usize,
    n: usize,
    k: usize,
    bias: &[i32],
    out: &mut [i32],
    ahead: usize,
) {
    let kg = k.div_ceil(4);
    let full = k / 4;
    debug_assert!(bias.len() >= R);
    let mut acc = [[_mm512_setzero_si512(); P]; R];
    let panel_bytes = kg * PANEL * 4;
    // One group of four depths: the panels' 64 bytes each, then per row
    // `r` its four activations broadcast (`$v`) into `P` multiply-adds. A
    // macro, not a closure: a closure over the sums kept them in memory
    // (zeroed by a call to `memset` and stored after the loop, each call).
    macro_rules! step {
        ($g:expr, $r:ident => $v:expr) => {{
            let g = $g;
            let mut b = [_mm512_setzero_si512(); P];
            for (p, bp) in b.iter_mut().enumerate() {
                let at = p * panel_bytes + g * 64;
                // SAFETY: panel p's group g is 64 bytes inside `wp`
                // (asserted by the caller: every panel up to j / 16 + P
                // holds kg groups).
                *bp = unsafe { _mm512_loadu_si512(wp.as_ptr().add(at).cast()) };
                if ahead > 0 {
                    // A hint, never a read: the address need not be valid.
                    _mm_prefetch::<_MM_HINT_T0>(wp.as_ptr().wrapping_add(at + ahead));
                }
            }
            for ($r, ar) in acc.iter_mut().enumerate() {
                let a = $v;
                for (acc, bp) in ar.iter_mut().zip(&b) {
                    *acc = _mm512_dpbusd_epi32(*acc, *bp, a);
                }
            }
        }};
    }
    for g in 0..full {
        // SAFETY: bytes (i + r)·k + 4g .. + 4 lie within row i + r of x;
        // a broadcast load from memory (no general register on the way).
        step!(g, r => unsafe {
            _mm512_set1_epi32(std::ptr::read_unaligned(
                x.as_ptr().add((i + r) * k + g * 4).cast::<i32>(),
            ))
        });
    }
    if full < kg {
        // The rows' last partial groups gathered first, so that the step
        // over the sums stays as short as the loop's (and the sums stay
        // in registers).
        let mut last = [0i32; R];
        for (r, v) in last.iter_mut().enumerate() {
            *v = group(x, (i + r) * k + full * 4, (i + r + 1) * k);
        }
        step!(full, r => _mm512_set1_epi32(last[r]));
    }
    // The panels' channel masks once (the same for every row).
    let mut masks = [0 as __mmask16; P];
    for (p, m) in masks.iter_mut().enumerate() {
        *m = channel_mask(n, j + p * PANEL);
    }
    for (r, ar) in acc.iter().enumerate() {
        let bias = _mm512_set1_epi32(bias[r]);
        for (p, v) in ar.iter().enumerate() {
            // SAFETY: row i + r, channels j + 16p .. under the mask lie
            // within out.
            unsafe {
                _mm512_mask_storeu_epi32(
                    out.as_mut_ptr().add((i + r) * n + j + p * PANEL),
                    masks[p],
                    _mm512_sub_epi32(*v, bias),
                )
            };
        }
    }
}

/// Only reached through [`super::detect`], which checked AVX-512 F/BW.
pub fn gemm_f32(x: &[f32], w: &[f32], m: usize, n: usize, k: usize, out: &mut [f32]) {
    assert!(has_avx512());
    drive(
        x,
        w,
        m,
        n,
        k,
        out,
        // SAFETY: AVX-512 F is present (asserted above); rows all `k` long.
        |xs, ws| unsafe { tile_f32(xs, ws) },
        scalar::dot_f32,
    )
}

/// Only reached through [`super::detect`], which checked AVX-512 F/BW.
pub fn gemm_f16w(x: &[f32], w: &[f16], m: usize, n: usize, k: usize, out: &mut [f32]) {
    assert!(has_avx512());
    drive(
        x,
        w,
        m,
        n,
        k,
        out,
        // SAFETY: AVX-512 F is present (asserted above); rows all `k` long.
        |xs, ws| unsafe { tile_f16w(xs, ws) },
        scalar::dot_f16w,
    )
}

/// # Safety
/// AVX-512 F; every row at least `xs[0].len()` long.
#[target_feature(enable = "avx512f")]
unsafe fn tile_f32(xs: [&[f32]; 2], ws: [&[f32]; 4]) -> [[f32; 4]; 2] {
    let k = xs[0].len();
    let kv = k / 16 * 16;
    let mut acc = [[_mm512_setzero_ps(); 4]; 2];
    let mut t = 0;
    while t < kv {
        // SAFETY: t + 16 <= kv <= k, the length of every row.
        let xv = xs.map(|xr| unsafe { _mm512_loadu_ps(xr.as_ptr().add(t)) });
        for (r, wr) in ws.iter().enumerate() {
            // SAFETY: as above, for this weight row.
            let wv = unsafe { _mm512_loadu_ps(wr.as_ptr().add(t)) };
            for (a, x) in acc.iter_mut().zip(&xv) {
                a[r] = _mm512_fmadd_ps(*x, wv, a[r]);
            }
        }
        t += 16;
    }
    let mut out = [[0f32; 4]; 2];
    for ((o, a), xr) in out.iter_mut().zip(&acc).zip(&xs) {
        for ((v, ar), wr) in o.iter_mut().zip(a).zip(&ws) {
            *v = _mm512_reduce_add_ps(*ar) + scalar::dot_f32(&xr[kv..], &wr[kv..k]);
        }
    }
    out
}

/// # Safety
/// AVX-512 F; every row at least `xs[0].len()` long.
#[target_feature(enable = "avx512f")]
unsafe fn tile_f16w(xs: [&[f32]; 2], ws: [&[f16]; 4]) -> [[f32; 4]; 2] {
    let k = xs[0].len();
    let kv = k / 16 * 16;
    let mut acc = [[_mm512_setzero_ps(); 4]; 2];
    let mut t = 0;
    while t < kv {
        // SAFETY: t + 16 <= kv <= k, the length of every row.
        let xv = xs.map(|xr| unsafe { _mm512_loadu_ps(xr.as_ptr().add(t)) });
        for (r, wr) in ws.iter().enumerate() {
            // SAFETY: as above; 16 f16 are 32 bytes, loaded unaligned.
            let wv = unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(wr.as_ptr().add(t).cast())) };
            for (a, x) in acc.iter_mut().zip(&xv) {
                a[r] = _mm512_fmadd_ps(*x, wv, a[r]);
            }
        }
        t += 16;
    }
    let mut out = [[0f32; 4]; 2];
    for ((o, a), xr) in out.iter_mut().zip(&acc).zip(&xs) {
        for ((v, ar), wr) in o.iter_mut().zip(a).zip(&ws) {
            *v = _mm512_reduce_add_ps(*ar) + scalar::dot_f16w(&xr[kv..], &wr[kv..k]);
        }
    }
    out
}

/// [`scalar::fma_peak`] on 16 lanes: `vfmadd` on registers alone, the
/// core's f32 multiply-add peak for `bench-kernels`.
pub fn fma_peak(steps: usize) -> (f32, usize) {
    assert!(has_avx512());
    // SAFETY: AVX-512 F is present (asserted).
    unsafe { fma_peak_512(steps) }
}

/// # Safety
/// AVX-512 F.
#[target_feature(enable = "avx512f")]
unsafe fn fma_peak_512(steps: usize) -> (f32, usize) {
    let (a, b) = scalar::peak_operands();
    let (a, b) = (_mm512_set1_ps(a), _mm512_set1_ps(b));
    let mut acc = [_mm512_setzero_ps(); scalar::PEAK_CHAINS];
    for _ in 0..steps {
        for v in &mut acc {
            *v = _mm512_fmadd_ps(*v, a, b);
        }
    }
    let sum = acc.iter().map(|v| _mm512_reduce_add_ps(*v)).sum();
    (sum, steps * scalar::PEAK_CHAINS * PANEL)
}

/// [`float_panels`](crate::kernels::float_panels)' layout of the matrix whose row `j` is column
/// `first + j` of `src` (`k` rows of `ld`): each depth of a panel is 16
/// consecutive values of one row of `src`.
pub fn pack_f32_cols(src: &[f32], ld: usize, first: usize, n: usize, k: usize, out: &mut [f32]) {
    let panels = n.div_ceil(PANEL);
    assert!(
        has_avx512()
            && out.len() >= panels * k * PANEL
            && (k == 0 || n == 0 || src.len() >= (k - 1) * ld + first + n)
    );
    // SAFETY: AVX-512 F is present (asserted); see `pack_cols_512`.
    unsafe { pack_cols_512(src, ld, first, n, k, out) }
}

/// [`pack_f32_cols`]' loop, one (masked) vector per depth of a panel.
///
/// # Safety
/// AVX-512 F; `src` holds `k` rows of `ld` with columns `first..first + n`
/// and `out` `⌈n/16⌉ · 16 · k` values (the caller asserts both).
#[target_feature(enable = "avx512f")]
unsafe fn pack_cols_512(src: &[f32], ld: usize, first: usize, n: usize, k: usize, out: &mut [f32]) {
    for p in 0..n.div_ceil(PANEL) {
        let (j0, cols) = (first + p * PANEL, PANEL.min(n - p * PANEL));
        let mask: __mmask16 = ((1u32 << cols) - 1) as __mmask16;
        for t in 0..k {
            // SAFETY: columns j0..j0 + cols of row t are within `src`; the
            // panel's depth t is 16 values within `out` (asserted by the
            // caller); masked lanes are neither read nor stored past them.
            unsafe {
                let v = _mm512_maskz_loadu_ps(mask, src.as_ptr().add(t * ld + j0));
                _mm512_storeu_ps(out.as_mut_ptr().add((p * k + t) * PANEL), v);
            }
        }
    }
}

/// The outer-product loop of the float paths, over weights of type `$w`
/// loaded 16 at a time by `$load`: `R` rows × `P` panels, one FMA per
/// (row, panel) and depth with the row's activation broadcast.
macro_rules! packed_float_gemm {
    ($gemm:ident, $tile:ident, $w:ty, $load:expr, $doc:literal) => {
        #[doc = $doc]
        pub fn $gemm(x: &[f32], w: &[$w], m: usize, n: usize, k: usize, out: &mut [f32]) {
            assert!(
                has_avx512()
                    && holds(w.len(), &[n.div_ceil(PANEL), k, PANEL])
                    && holds(x.len(), &[m, k])
                    && holds(out.len(), &[m, n])
            );
            // `rows` rows (from `xs`, at stride `ldx`, depths d.0..d.1) ×
            // `panels` panels from channel j.
            //
            // Safety: AVX-512 F; `xs` holds `rows` rows of d.1 - d.0 at
            // stride `ldx`, d.0 ≤ d.1 ≤ k; `w` holds ⌈n/16⌉ panels of `k`
            // depths; j < n (and j + 16 < n with two panels); rows
            // i..i + rows of `out` (n each) exist and, where d.0 > 0, hold
            // the sums of depths 0..d.0.
            #[allow(clippy::too_many_arguments)]
            #[inline(always)]
            unsafe fn run(
                rows: usize,
                panels: usize,
                xs: &[f32],
                ldx: usize,
                w: &[$w],
                i: usize,
                j: usize,
                n: usize,
                k: usize,
                d: (usize, usize),
                out: &mut [f32],
                ahead: usize,
            ) {
                let wp = &w[(j / PANEL) * k * PANEL..];
                // SAFETY: the caller's.
                unsafe {
                    match (rows, panels) {
                        (FLOAT_MR, 2) => {
                            $tile::<FLOAT_MR, 2>(xs, ldx, wp, i, j, n, k, d, out, ahead)
                        }
                        (FLOAT_MR, _) => {
                            $tile::<FLOAT_MR, 1>(xs, ldx, wp, i, j, n, k, d, out, ahead)
                        }
                        _ => dispatch!($tile, rows, panels, xs, ldx, wp, i, j, n, k, d, out, ahead),
                    }
                }
            }
            // As in `gemm_i8`: the first row block over a pair of panels
            // (over a slice of it, when the depths run in slices) fetches
            // the next pair (its same depths) ahead.
            let ahead = |i: usize, j: usize, panels: usize| {
                if i == 0 && j + panels * PANEL < n {
                    panels * k * PANEL
                } else {
                    0
                }
            };
            if !runs_in_slices(k) {
                walk(m, n, FLOAT_MR, |rows, panels, i, j| {
                    // SAFETY: AVX-512 F is present (asserted); the tile
                    // reads rows i..i + rows of `x` and panels j / 16 ..
                    // + `panels` of `w` (asserted long enough), writes rows
                    // i..i + rows, channels j..min(j + 16 · panels, n), and
                    // only prefetches at `ahead`.
                    unsafe {
                        run(
                            rows,
                            panels,
                            &x[i * k..],
                            k,
                            w,
                            i,
                            j,
                            n,
                            k,
                            (0, k),
                            out,
                            ahead(i, j, panels),
                        )
                    };
                });
                return;
            }
            deep_float_walk(x, m, k, |rows, i, xs, ldx, d| {
                for (j, panels) in pairs(n) {
                    let ahead = ahead(i, j, panels);
                    // SAFETY: as above, with the rows' slice from `xs`
                    // (rows × d.1 - d.0 at stride `ldx`).
                    unsafe { run(rows, panels, xs, ldx, w, i, j, n, k, d, out, ahead) };
                }
            });
        }

        /// Rows i..i + R of the product (their depths t0..t1 from `xs`,
        /// a row every `ldx` values) by panels j / 16 .. + P of `wp`, into
        /// `out`: from zero where t0 = 0, else adding to what `out` holds.
        ///
        /// # Safety
        /// AVX-512 F; `xs` holds (R − 1) · `ldx` + t1 − t0 values,
        /// t0 ≤ t1 ≤ k, `wp` P panels of `k` depths, `out` rows i..i + R
        /// of `n` with j < n.
        #[target_feature(enable = "avx512f")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $tile<const R: usize, const P: usize>(
            xs: &[f32],
            ldx: usize,
            wp: &[$w],
            i: usize,
            j: usize,
            n: usize,
            k: usize,
            (t0, t1): (usize, usize),
            out: &mut [f32],
            ahead: usize,
        ) {
            let mask = |p: usize| channel_mask(n, j + p * PANEL);
            // The first slice of depths starts from zero, the others from
            // the sums the slices before stored (f32 stores and reloads
            // exactly: the sums are those of one pass over every depth).
            let mut acc = [[_mm512_setzero_ps(); P]; R];
            if t0 > 0 {
                for (r, ar) in acc.iter_mut().enumerate() {
                    for (p, v) in ar.iter_mut().enumerate() {
                        // SAFETY: row i + r, channels j + 16p.. under the
                        // mask are in out.
                        *v = unsafe {
                            _mm512_maskz_loadu_ps(
                                mask(p),
                                out.as_ptr().add((i + r) * n + j + p * PANEL),
                            )
                        };
                    }
                }
            }
            for t in t0..t1 {
                let mut b = [_mm512_setzero_ps(); P];
                for (p, bp) in b.iter_mut().enumerate() {
                    let at = (p * k + t) * PANEL;
                    // SAFETY: panel p's depth t is 16 values inside `wp`.
                    *bp = unsafe { $load(wp.as_ptr().add(at)) };
                    if ahead > 0 {
                        // A hint, never a read: the address need not be
                        // valid.
                        _mm_prefetch::<_MM_HINT_T0>(wp.as_ptr().wrapping_add(at + ahead).cast());
                    }
                }
                for (r, ar) in acc.iter_mut().enumerate() {
                    // SAFETY: row r < R, depth t - t0 of the rows' slices.
                    let a = _mm512_set1_ps(unsafe { *xs.get_unchecked(r * ldx + t - t0) });
                    for (acc, bp) in ar.iter_mut().zip(&b) {
                        *acc = _mm512_fmadd_ps(a, *bp, *acc);
                    }
                }
            }
            for (r, ar) in acc.iter().enumerate() {
                for (p, v) in ar.iter().enumerate() {
                    // SAFETY: row i + r, channels j + 16p.. under the mask
                    // are in out.
                    unsafe {
                        _mm512_mask_storeu_ps(
                            out.as_mut_ptr().add((i + r) * n + j + p * PANEL),
                            mask(p),
                            *v,
                        )
                    };
                }
            }
        }
    };
}

/// 16 f32.
///
/// # Safety
/// AVX-512 F; 16 readable values at `p`.
#[inline(always)]
unsafe fn load_f32(p: *const f32) -> __m512 {
    // SAFETY: the caller's.
    unsafe { _mm512_loadu_ps(p) }
}

/// 16 f16 widened to f32 in one instruction.
///
/// # Safety
/// AVX-512 F; 16 readable values at `p`.
#[inline(always)]
unsafe fn load_f16(p: *const f16) -> __m512 {
    // SAFETY: the caller's (32 bytes).
    unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
}

packed_float_gemm!(
    gemm_f32p,
    tile_f32p,
    f32,
    load_f32,
    "`out = x · wᵀ`, f32 weights packed by [`float_panels::pack`](crate::kernels::float_panels::pack)."
);
packed_float_gemm!(
    gemm_f16p,
    tile_f16p,
    f16,
    load_f16,
    "`out = x · wᵀ`, f16 weights packed by [`float_panels::pack`](crate::kernels::float_panels::pack), widened in registers."
);
