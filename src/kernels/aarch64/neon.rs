//! NEON (every aarch64 core, Cortex-A53/A72 on). int8: `smull`/`smull2`
//! into i16 (one product of two i8 always fits), then `sadalp` pair-adds
//! into i32: exact, no i16 sum ever formed. f16: 8 weights widened in
//! registers (`fcvtl`/`fcvtl2`, base ARMv8), `fmla` in f32. Tiles of 2 rows
//! × 4 output channels (`kernels::drive`).

use std::arch::aarch64::*;
use std::arch::asm;

use half::f16;

use crate::kernels::{drive, scalar};

/// [`scalar::fma_peak`] on 4 lanes: `fmla` on registers alone, the core's
/// f32 multiply-add peak for `bench-kernels`.
pub fn fma_peak(steps: usize) -> (f32, usize) {
    let (a, b) = scalar::peak_operands();
    // SAFETY: NEON is part of aarch64; the intrinsics touch registers only.
    unsafe {
        let (a, b) = (vdupq_n_f32(a), vdupq_n_f32(b));
        let mut acc = [vdupq_n_f32(0.0); scalar::PEAK_CHAINS];
        for _ in 0..steps {
            for v in &mut acc {
                *v = vfmaq_f32(b, *v, a);
            }
        }
        let sum = acc.iter().map(|v| vaddvq_f32(*v)).sum();
        (sum, steps * scalar::PEAK_CHAINS * 4)
    }
}

pub fn gemm_i8(x: &[i8], w: &[i8], m: usize, n: usize, k: usize, out: &mut [i32]) {
    drive(x, w, m, n, k, out, tile_i8, scalar::dot_i8)
}

pub fn gemm_f16w(x: &[f32], w: &[f16], m: usize, n: usize, k: usize, out: &mut [f32]) {
    drive(x, w, m, n, k, out, tile_f16w, scalar::dot_f16w)
}

pub fn gemm_f32(x: &[f32], w: &[f32], m: usize, n: usize, k: usize, out: &mut [f32]) {
    drive(x, w, m, n, k, out, tile_f32, scalar::dot_f32)
}

/// The 2 × 4 dot products of two activation rows with four weight rows,
/// every row at least `xs[0].len()` long (`drive` passes `k`-long rows).
fn tile_i8(xs: [&[i8]; 2], ws: [&[i8]; 4]) -> [[i32; 4]; 2] {
    let k = xs[0].len();
    assert!(xs[1].len() >= k && ws.iter().all(|r| r.len() >= k));
    let kv = k / 16 * 16;
    // SAFETY: NEON is baseline on aarch64; every load reads 16 bytes at t
    // with t + 16 <= kv <= k, within every row (asserted above).
    let acc = unsafe {
        let mut acc = [[vdupq_n_s32(0); 4]; 2];
        let mut t = 0;
        while t < kv {
            let xv = xs.map(|xr| vld1q_s8(xr.as_ptr().add(t)));
            for (r, wr) in ws.iter().enumerate() {
                let wv = vld1q_s8(wr.as_ptr().add(t));
                for (a, x) in acc.iter_mut().zip(&xv) {
                    a[r] = vpadalq_s16(a[r], vmull_s8(vget_low_s8(*x), vget_low_s8(wv)));
                    a[r] = vpadalq_s16(a[r], vmull_high_s8(*x, wv));
                }
            }
            t += 16;
        }
        acc.map(|a| a.map(|v| vaddvq_s32(v)))
    };
    let mut out = [[0i32; 4]; 2];
    for ((o, a), xr) in out.iter_mut().zip(acc).zip(&xs) {
        for ((v, s), wr) in o.iter_mut().zip(a).zip(&ws) {
            *v = s + scalar::dot_i8(&xr[kv..], &wr[kv..k]);
        }
    }
    out
}

/// 8 f16 at `p` widened to two f32x4.
///
/// # Safety
/// `p..p+8` readable.
#[inline(always)]
unsafe fn load8h(p: *const f16) -> (float32x4_t, float32x4_t) {
    // SAFETY: the caller guarantees 8 readable f16 (16 bytes).
    let h = unsafe { vld1q_u16(p as *const u16) };
    let (lo, hi): (float32x4_t, float32x4_t);
    // SAFETY: fcvtl/fcvtl2 (base ARMv8 SIMD) only read and write the
    // registers named; no memory, no flags.
    unsafe {
        asm!(
            "fcvtl {lo:v}.4s, {h:v}.4h",
            "fcvtl2 {hi:v}.4s, {h:v}.8h",
            h = in(vreg) h,
            lo = out(vreg) lo,
            hi = out(vreg) hi,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    (lo, hi)
}

/// As [`tile_i8`] for f32 activations and f16 weights.
fn tile_f16w(xs: [&[f32]; 2], ws: [&[f16]; 4]) -> [[f32; 4]; 2] {
    let k = xs[0].len();
    assert!(xs[1].len() >= k && ws.iter().all(|r| r.len() >= k));
    let kv = k / 8 * 8;
    // SAFETY: NEON is baseline; loads of 8 values at t with t + 8 <= kv <= k,
    // within every row (asserted above).
    let acc = unsafe {
        let mut acc = [[vdupq_n_f32(0.0); 4]; 2];
        let mut t = 0;
        while t < kv {
            let xv = xs.map(|xr| {
                (
                    vld1q_f32(xr.as_ptr().add(t)),
                    vld1q_f32(xr.as_ptr().add(t + 4)),
                )
            });
            for (r, wr) in ws.iter().enumerate() {
                let (w0, w1) = load8h(wr.as_ptr().add(t));
                for (a, (x0, x1)) in acc.iter_mut().zip(&xv) {
                    a[r] = vfmaq_f32(vfmaq_f32(a[r], *x0, w0), *x1, w1);
                }
            }
            t += 8;
        }
        acc.map(|a| a.map(|v| vaddvq_f32(v)))
    };
    let mut out = [[0f32; 4]; 2];
    for ((o, a), xr) in out.iter_mut().zip(acc).zip(&xs) {
        for ((v, s), wr) in o.iter_mut().zip(a).zip(&ws) {
            *v = s + scalar::dot_f16w(&xr[kv..], &wr[kv..k]);
        }
    }
    out
}

/// As [`tile_f16w`] for f32 weights (`fmla`).
fn tile_f32(xs: [&[f32]; 2], ws: [&[f32]; 4]) -> [[f32; 4]; 2] {
    let k = xs[0].len();
    assert!(xs[1].len() >= k && ws.iter().all(|r| r.len() >= k));
    let kv = k / 8 * 8;
    // SAFETY: NEON is baseline; loads of 4 values at t and t + 4 with
    // t + 8 <= kv <= k, within every row (asserted above).
    let acc = unsafe {
        let mut acc = [[vdupq_n_f32(0.0); 4]; 2];
        let mut t = 0;
        while t < kv {
            let xv = xs.map(|xr| {
                (
                    vld1q_f32(xr.as_ptr().add(t)),
                    vld1q_f32(xr.as_ptr().add(t + 4)),
                )
            });
            for (r, wr) in ws.iter().enumerate() {
                let (w0, w1) = (
                    vld1q_f32(wr.as_ptr().add(t)),
                    vld1q_f32(wr.as_ptr().add(t + 4)),
                );
                for (a, (x0, x1)) in acc.iter_mut().zip(&xv) {
                    a[r] = vfmaq_f32(vfmaq_f32(a[r], *x0, w0), *x1, w1);
                }
            }
            t += 8;
        }
        acc.map(|a| a.map(|v| vaddvq_f32(v)))
    };
    let mut out = [[0f32; 4]; 2];
    for ((o, a), xr) in out.iter_mut().zip(acc).zip(&xs) {
        for ((v, s), wr) in o.iter_mut().zip(a).zip(&ws) {
            *v = s + scalar::dot_f32(&xr[kv..], &wr[kv..k]);
        }
    }
    out
}
