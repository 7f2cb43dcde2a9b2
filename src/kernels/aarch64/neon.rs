//! NEON (every aarch64 core, Cortex-A53/A72 on). int8: `smull`/`smull2`
//! into i16 (one product of two i8 always fits), then `sadalp` pair-adds
//! into i32: exact, no i16 sum ever formed. f16: 8 weights widened in
//! registers (`fcvtl`/`fcvtl2`, base ARMv8), `fmla` in f32. Four output
//! channels per pass share each activation load.

use std::arch::aarch64::*;
use std::arch::asm;

use half::f16;

pub fn gemm_i8(x: &[i8], w: &[i8], m: usize, n: usize, k: usize, out: &mut [i32]) {
    assert!(x.len() >= m * k && w.len() >= n * k && out.len() >= m * n);
    let kv = k / 16 * 16;
    for i in 0..m {
        let xr = &x[i * k..(i + 1) * k];
        let mut j = 0;
        while j + 4 <= n {
            let rows = [0, 1, 2, 3].map(|r| &w[(j + r) * k..(j + r + 1) * k]);
            // SAFETY: NEON is baseline on aarch64; every load reads 16
            // bytes at t with t + 16 <= kv <= k, each row's length.
            let acc = unsafe {
                let mut acc = [vdupq_n_s32(0); 4];
                let mut t = 0;
                while t < kv {
                    let xv = vld1q_s8(xr.as_ptr().add(t));
                    for (a, wr) in acc.iter_mut().zip(&rows) {
                        let wv = vld1q_s8(wr.as_ptr().add(t));
                        *a = vpadalq_s16(*a, vmull_s8(vget_low_s8(xv), vget_low_s8(wv)));
                        *a = vpadalq_s16(*a, vmull_high_s8(xv, wv));
                    }
                    t += 16;
                }
                acc.map(|a| vaddvq_s32(a))
            };
            for (r, (a, wr)) in acc.iter().zip(&rows).enumerate() {
                out[i * n + j + r] = a + tail_i8(&xr[kv..], &wr[kv..]);
            }
            j += 4;
        }
        for j in j..n {
            let wr = &w[j * k..(j + 1) * k];
            // SAFETY: as above, for one weight row.
            let a = unsafe {
                let mut a = vdupq_n_s32(0);
                let mut t = 0;
                while t < kv {
                    let (xv, wv) = (vld1q_s8(xr.as_ptr().add(t)), vld1q_s8(wr.as_ptr().add(t)));
                    a = vpadalq_s16(a, vmull_s8(vget_low_s8(xv), vget_low_s8(wv)));
                    a = vpadalq_s16(a, vmull_high_s8(xv, wv));
                    t += 16;
                }
                vaddvq_s32(a)
            };
            out[i * n + j] = a + tail_i8(&xr[kv..], &wr[kv..]);
        }
    }
}

fn tail_i8(x: &[i8], w: &[i8]) -> i32 {
    x.iter().zip(w).map(|(a, b)| *a as i32 * *b as i32).sum()
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

pub fn gemm_f16w(x: &[f32], w: &[f16], m: usize, n: usize, k: usize, out: &mut [f32]) {
    assert!(x.len() >= m * k && w.len() >= n * k && out.len() >= m * n);
    let kv = k / 8 * 8;
    for i in 0..m {
        let xr = &x[i * k..(i + 1) * k];
        let mut j = 0;
        while j + 4 <= n {
            let rows = [0, 1, 2, 3].map(|r| &w[(j + r) * k..(j + r + 1) * k]);
            // SAFETY: NEON is baseline; loads of 8 values at t with
            // t + 8 <= kv <= k, each row's length.
            let acc = unsafe {
                let mut acc = [vdupq_n_f32(0.0); 4];
                let mut t = 0;
                while t < kv {
                    let (x0, x1) = (
                        vld1q_f32(xr.as_ptr().add(t)),
                        vld1q_f32(xr.as_ptr().add(t + 4)),
                    );
                    for (a, wr) in acc.iter_mut().zip(&rows) {
                        let (w0, w1) = load8h(wr.as_ptr().add(t));
                        *a = vfmaq_f32(vfmaq_f32(*a, x0, w0), x1, w1);
                    }
                    t += 8;
                }
                acc.map(|a| vaddvq_f32(a))
            };
            for (r, (a, wr)) in acc.iter().zip(&rows).enumerate() {
                out[i * n + j + r] = a + tail_f16w(&xr[kv..], &wr[kv..]);
            }
            j += 4;
        }
        for j in j..n {
            let wr = &w[j * k..(j + 1) * k];
            // SAFETY: as above, for one weight row.
            let a = unsafe {
                let mut a = vdupq_n_f32(0.0);
                let mut t = 0;
                while t < kv {
                    let (x0, x1) = (
                        vld1q_f32(xr.as_ptr().add(t)),
                        vld1q_f32(xr.as_ptr().add(t + 4)),
                    );
                    let (w0, w1) = load8h(wr.as_ptr().add(t));
                    a = vfmaq_f32(vfmaq_f32(a, x0, w0), x1, w1);
                    t += 8;
                }
                vaddvq_f32(a)
            };
            out[i * n + j] = a + tail_f16w(&xr[kv..], &wr[kv..]);
        }
    }
}

fn tail_f16w(x: &[f32], w: &[f16]) -> f32 {
    x.iter().zip(w).map(|(a, b)| a * b.to_f32()).sum()
}
