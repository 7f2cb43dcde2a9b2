//! NEON on 32-bit ARM (armv7 with VFPv4, which includes the half-precision
//! conversions: Cortex-A7/A53/A72 in 32-bit mode, every Raspberry Pi from
//! the 2 on). The same tiles as the aarch64 NEON path, 2 rows × 4 output
//! channels (`kernels::drive`): int8 by `vmull.s8` into i16 (one product of
//! two i8 always fits) and `vpadal.s16` pair-adds into i32, exact; f32 by
//! `vfma.f32`; f16 weights widened in registers by `vcvt.f32.f16`, f32
//! accumulation. Unlike aarch64's, ARMv7's Advanced SIMD always flushes
//! subnormal f32 values to zero: products below 1.2e-38 count as 0 here
//! (nothing CLIP computes comes near).
//!
//! Rust's 32-bit NEON intrinsics and `#[target_feature(enable = "neon")]`
//! are not stable, so each tile's loop is one `asm!` block that names its
//! registers (`.fpu neon-vfpv4` lets the assembler take the instructions;
//! the path is chosen only where `AT_HWCAP` shows them, [`has_neon`]).
//! Every block declares all of d0–d31 (q0–q15) clobbered: Advanced SIMD
//! always has the 32 double registers.

use std::arch::asm;

use half::f16;

use crate::kernels::{drive, scalar};

/// `AT_HWCAP` bits (Linux, `arch/arm/include/uapi/asm/hwcap.h`). Linux has
/// no bit for the half-precision conversions: VFPv4 includes them.
const HWCAP_NEON: u32 = 1 << 12;
const HWCAP_VFPV4: u32 = 1 << 16;

/// NEON with VFPv4 (`vfma`, `vcvt.f32.f16`): what every instruction here
/// needs. Read once; every product asserts it.
pub fn has_neon() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        // SAFETY: getauxval reads the process's auxiliary vector; it takes
        // and returns integers only.
        let caps = unsafe { libc::getauxval(libc::AT_HWCAP) } as u32;
        let need = HWCAP_NEON | HWCAP_VFPV4;
        caps & need == need
    })
}

/// Every d register, clobbered, for the `asm!` blocks below.
macro_rules! neon_asm {
    ($($body:tt)*) => {
        asm!(
            $($body)*
            out("d0") _, out("d1") _, out("d2") _, out("d3") _,
            out("d4") _, out("d5") _, out("d6") _, out("d7") _,
            out("d8") _, out("d9") _, out("d10") _, out("d11") _,
            out("d12") _, out("d13") _, out("d14") _, out("d15") _,
            out("d16") _, out("d17") _, out("d18") _, out("d19") _,
            out("d20") _, out("d21") _, out("d22") _, out("d23") _,
            out("d24") _, out("d25") _, out("d26") _, out("d27") _,
            out("d28") _, out("d29") _, out("d30") _, out("d31") _,
            options(nostack),
        )
    };
}

/// One 2 × 4 tile's loop: q8–q15 zeroed as the tile's accumulators, `$body`
/// run `$passes` times over rows `$xs` and weight rows `$ws` (the six
/// pointers post-incremented by the body's loads), the accumulators stored
/// to `$acc` (`[[_; 4]; 8]`, row-major q8..q15: `acc[4r + c]` for row `r`,
/// channel `c`). The caller's `unsafe` block states what the body reads.
macro_rules! tile_2x4 {
    ($xs:expr, $ws:expr, $passes:expr, $acc:expr, $($body:literal,)*) => {
        neon_asm!(
            ".fpu neon-vfpv4",
            "vmov.i32 q8, #0",
            "vmov.i32 q9, #0",
            "vmov.i32 q10, #0",
            "vmov.i32 q11, #0",
            "vmov.i32 q12, #0",
            "vmov.i32 q13, #0",
            "vmov.i32 q14, #0",
            "vmov.i32 q15, #0",
            "2:",
            $($body,)*
            "subs {n}, {n}, #1",
            "bne 2b",
            "vst1.32 {{d16-d19}}, [{o}]!",
            "vst1.32 {{d20-d23}}, [{o}]!",
            "vst1.32 {{d24-d27}}, [{o}]!",
            "vst1.32 {{d28-d31}}, [{o}]",
            x0 = inout(reg) $xs[0].as_ptr() => _,
            x1 = inout(reg) $xs[1].as_ptr() => _,
            w0 = inout(reg) $ws[0].as_ptr() => _,
            w1 = inout(reg) $ws[1].as_ptr() => _,
            w2 = inout(reg) $ws[2].as_ptr() => _,
            w3 = inout(reg) $ws[3].as_ptr() => _,
            n = inout(reg) $passes => _,
            o = inout(reg) $acc.as_mut_ptr() => _,
        )
    };
}

/// One step of one peak chain: `q$dst = b + q$src · a` (`b` in q1, `a` in
/// q0), the chain moving to the register the previous chain left.
macro_rules! peak {
    ($($src:literal $dst:literal),*) => {
        concat!($("vmov q", $dst, ", q1\n", "vfma.f32 q", $dst, ", q", $src, ", q0\n",)*)
    };
}

/// [`scalar::fma_peak`] on 4 lanes: `vfma` on registers alone. `vfma` only
/// accumulates, so each step copies `b` into a free register first; the 12
/// chains rotate through 13 registers (q3–q15), back in place after 13
/// steps, one `vmov` per `vfma` as on aarch64 (`fmla` accumulates too).
pub fn fma_peak(steps: usize) -> (f32, usize) {
    assert!(has_neon());
    let (a, b) = scalar::peak_operands();
    const ROTATION: usize = 13;
    let mut lanes = [0f32; 4 * scalar::PEAK_CHAINS];
    let rounds = steps / ROTATION;
    if rounds > 0 {
        // SAFETY: the instructions are NEON/VFPv4, which `has_neon` found
        // before this path was chosen; the block writes the 48 floats of
        // `lanes` (12 registers of 4) and nothing else in memory; every d
        // register is declared clobbered.
        unsafe {
            neon_asm!(
                ".fpu neon-vfpv4",
                "vdup.32 q0, {a}",
                "vdup.32 q1, {b}",
                "vmov.i32 q3, #0",
                "vmov.i32 q4, #0",
                "vmov.i32 q5, #0",
                "vmov.i32 q6, #0",
                "vmov.i32 q7, #0",
                "vmov.i32 q8, #0",
                "vmov.i32 q9, #0",
                "vmov.i32 q10, #0",
                "vmov.i32 q11, #0",
                "vmov.i32 q12, #0",
                "vmov.i32 q13, #0",
                "vmov.i32 q14, #0",
                "2:",
                peak!(3 15, 4 3, 5 4, 6 5, 7 6, 8 7, 9 8, 10 9, 11 10, 12 11, 13 12, 14 13),
                peak!(15 14, 3 15, 4 3, 5 4, 6 5, 7 6, 8 7, 9 8, 10 9, 11 10, 12 11, 13 12),
                peak!(14 13, 15 14, 3 15, 4 3, 5 4, 6 5, 7 6, 8 7, 9 8, 10 9, 11 10, 12 11),
                peak!(13 12, 14 13, 15 14, 3 15, 4 3, 5 4, 6 5, 7 6, 8 7, 9 8, 10 9, 11 10),
                peak!(12 11, 13 12, 14 13, 15 14, 3 15, 4 3, 5 4, 6 5, 7 6, 8 7, 9 8, 10 9),
                peak!(11 10, 12 11, 13 12, 14 13, 15 14, 3 15, 4 3, 5 4, 6 5, 7 6, 8 7, 9 8),
                peak!(10 9, 11 10, 12 11, 13 12, 14 13, 15 14, 3 15, 4 3, 5 4, 6 5, 7 6, 8 7),
                peak!(9 8, 10 9, 11 10, 12 11, 13 12, 14 13, 15 14, 3 15, 4 3, 5 4, 6 5, 7 6),
                peak!(8 7, 9 8, 10 9, 11 10, 12 11, 13 12, 14 13, 15 14, 3 15, 4 3, 5 4, 6 5),
                peak!(7 6, 8 7, 9 8, 10 9, 11 10, 12 11, 13 12, 14 13, 15 14, 3 15, 4 3, 5 4),
                peak!(6 5, 7 6, 8 7, 9 8, 10 9, 11 10, 12 11, 13 12, 14 13, 15 14, 3 15, 4 3),
                peak!(5 4, 6 5, 7 6, 8 7, 9 8, 10 9, 11 10, 12 11, 13 12, 14 13, 15 14, 3 15),
                peak!(4 3, 5 4, 6 5, 7 6, 8 7, 9 8, 10 9, 11 10, 12 11, 13 12, 14 13, 15 14),
                "subs {n}, {n}, #1",
                "bne 2b",
                "vst1.32 {{d6-d9}}, [{o}]!",
                "vst1.32 {{d10-d13}}, [{o}]!",
                "vst1.32 {{d14-d17}}, [{o}]!",
                "vst1.32 {{d18-d21}}, [{o}]!",
                "vst1.32 {{d22-d25}}, [{o}]!",
                "vst1.32 {{d26-d29}}, [{o}]",
                a = in(reg) a.to_bits(),
                b = in(reg) b.to_bits(),
                n = inout(reg) rounds => _,
                o = inout(reg) lanes.as_mut_ptr() => _,
            );
        }
    }
    // The last steps (fewer than a rotation), the same fused steps.
    for v in &mut lanes {
        for _ in rounds * ROTATION..steps {
            *v = v.mul_add(a, b);
        }
    }
    (lanes.iter().sum(), steps * scalar::PEAK_CHAINS * 4)
}

/// The products below run only where [`has_neon`] holds ([`super::detect`]
/// checked it); they assert it again, as the other paths assert theirs.
pub fn gemm_i8(x: &[i8], w: &[i8], m: usize, n: usize, k: usize, out: &mut [i32]) {
    assert!(has_neon());
    drive(x, w, m, n, k, out, tile_i8, scalar::dot_i8)
}

pub fn gemm_f16w(x: &[f32], w: &[f16], m: usize, n: usize, k: usize, out: &mut [f32]) {
    assert!(has_neon());
    drive(x, w, m, n, k, out, tile_f16w, scalar::dot_f16w)
}

pub fn gemm_f32(x: &[f32], w: &[f32], m: usize, n: usize, k: usize, out: &mut [f32]) {
    assert!(has_neon());
    drive(x, w, m, n, k, out, tile_f32, scalar::dot_f32)
}

/// The tile's sums: `acc[4r + c]` holds the lanes of row `r`, channel `c`
/// (the order the blocks store q8–q15), each row's tail from `kv` on added
/// by `one`.
fn finish<X, W, O: Copy + std::iter::Sum + std::ops::Add<Output = O>>(
    acc: [[O; 4]; 8],
    xs: [&[X]; 2],
    ws: [&[W]; 4],
    kv: usize,
    one: impl Fn(&[X], &[W]) -> O,
) -> [[O; 4]; 2] {
    let k = xs[0].len();
    std::array::from_fn(|r| {
        std::array::from_fn(|c| {
            acc[4 * r + c].into_iter().sum::<O>() + one(&xs[r][kv..], &ws[c][kv..k])
        })
    })
}

/// The 2 × 4 dot products of two activation rows with four weight rows,
/// every row at least `xs[0].len()` long (`drive` passes `k`-long rows).
fn tile_i8(xs: [&[i8]; 2], ws: [&[i8]; 4]) -> [[i32; 4]; 2] {
    let k = xs[0].len();
    assert!(xs[1].len() >= k && ws.iter().all(|r| r.len() >= k));
    let kv = k / 16 * 16;
    let mut acc = [[0i32; 4]; 8];
    if kv > 0 {
        // SAFETY: NEON (`has_neon` chose this path); the loop reads kv ≤ k
        // bytes from each of the six rows (16 a pass, kv/16 passes) and
        // writes the 32 i32 of `acc`; every d register is declared
        // clobbered.
        unsafe {
            tile_2x4!(
                xs,
                ws,
                kv / 16,
                acc,
                "vld1.8 {{d0-d1}}, [{x0}]!",
                "vld1.8 {{d2-d3}}, [{x1}]!",
                "vld1.8 {{d4-d5}}, [{w0}]!",
                "vld1.8 {{d6-d7}}, [{w1}]!",
                "vmull.s8 q4, d0, d4",
                "vmull.s8 q5, d1, d5",
                "vmull.s8 q6, d2, d4",
                "vmull.s8 q7, d3, d5",
                "vpadal.s16 q8, q4",
                "vpadal.s16 q8, q5",
                "vpadal.s16 q12, q6",
                "vpadal.s16 q12, q7",
                "vld1.8 {{d4-d5}}, [{w2}]!",
                "vmull.s8 q4, d0, d6",
                "vmull.s8 q5, d1, d7",
                "vmull.s8 q6, d2, d6",
                "vmull.s8 q7, d3, d7",
                "vpadal.s16 q9, q4",
                "vpadal.s16 q9, q5",
                "vpadal.s16 q13, q6",
                "vpadal.s16 q13, q7",
                "vld1.8 {{d6-d7}}, [{w3}]!",
                "vmull.s8 q4, d0, d4",
                "vmull.s8 q5, d1, d5",
                "vmull.s8 q6, d2, d4",
                "vmull.s8 q7, d3, d5",
                "vpadal.s16 q10, q4",
                "vpadal.s16 q10, q5",
                "vpadal.s16 q14, q6",
                "vpadal.s16 q14, q7",
                "vmull.s8 q4, d0, d6",
                "vmull.s8 q5, d1, d7",
                "vmull.s8 q6, d2, d6",
                "vmull.s8 q7, d3, d7",
                "vpadal.s16 q11, q4",
                "vpadal.s16 q11, q5",
                "vpadal.s16 q15, q6",
                "vpadal.s16 q15, q7",
            );
        }
    }
    finish(acc, xs, ws, kv, scalar::dot_i8)
}

/// As [`tile_i8`] for f32 activations and f16 weights: 8 depths a pass,
/// each weight row's 8 halves widened to two f32 vectors.
fn tile_f16w(xs: [&[f32]; 2], ws: [&[f16]; 4]) -> [[f32; 4]; 2] {
    let k = xs[0].len();
    assert!(xs[1].len() >= k && ws.iter().all(|r| r.len() >= k));
    let kv = k / 8 * 8;
    let mut acc = [[0f32; 4]; 8];
    if kv > 0 {
        // SAFETY: NEON and VFPv4, with its half-precision conversions
        // (`has_neon` chose this path); the loop reads kv ≤ k values from each of the six
        // rows (8 a pass) and writes the 32 f32 of `acc`; every d register
        // is declared clobbered.
        unsafe {
            tile_2x4!(
                xs,
                ws,
                kv / 8,
                acc,
                "vld1.32 {{d0-d3}}, [{x0}]!",
                "vld1.32 {{d4-d7}}, [{x1}]!",
                "vld1.16 {{d14-d15}}, [{w0}]!",
                "vcvt.f32.f16 q4, d14",
                "vcvt.f32.f16 q5, d15",
                "vld1.16 {{d14-d15}}, [{w1}]!",
                "vfma.f32 q8, q0, q4",
                "vfma.f32 q12, q2, q4",
                "vfma.f32 q8, q1, q5",
                "vfma.f32 q12, q3, q5",
                "vcvt.f32.f16 q4, d14",
                "vcvt.f32.f16 q5, d15",
                "vld1.16 {{d14-d15}}, [{w2}]!",
                "vfma.f32 q9, q0, q4",
                "vfma.f32 q13, q2, q4",
                "vfma.f32 q9, q1, q5",
                "vfma.f32 q13, q3, q5",
                "vcvt.f32.f16 q4, d14",
                "vcvt.f32.f16 q5, d15",
                "vld1.16 {{d14-d15}}, [{w3}]!",
                "vfma.f32 q10, q0, q4",
                "vfma.f32 q14, q2, q4",
                "vfma.f32 q10, q1, q5",
                "vfma.f32 q14, q3, q5",
                "vcvt.f32.f16 q4, d14",
                "vcvt.f32.f16 q5, d15",
                "vfma.f32 q11, q0, q4",
                "vfma.f32 q15, q2, q4",
                "vfma.f32 q11, q1, q5",
                "vfma.f32 q15, q3, q5",
            );
        }
    }
    finish(acc, xs, ws, kv, scalar::dot_f16w)
}

/// As [`tile_f16w`] for f32 weights.
fn tile_f32(xs: [&[f32]; 2], ws: [&[f32]; 4]) -> [[f32; 4]; 2] {
    let k = xs[0].len();
    assert!(xs[1].len() >= k && ws.iter().all(|r| r.len() >= k));
    let kv = k / 8 * 8;
    let mut acc = [[0f32; 4]; 8];
    if kv > 0 {
        // SAFETY: NEON and VFPv4 (`has_neon` chose this path); the loop
        // reads kv ≤ k values from each of the six rows (8 a pass) and
        // writes the 32 f32 of `acc`; every d register is declared
        // clobbered.
        unsafe {
            tile_2x4!(
                xs,
                ws,
                kv / 8,
                acc,
                "vld1.32 {{d0-d3}}, [{x0}]!",
                "vld1.32 {{d4-d7}}, [{x1}]!",
                "vld1.32 {{d8-d11}}, [{w0}]!",
                "vld1.32 {{d12-d15}}, [{w1}]!",
                "vfma.f32 q8, q0, q4",
                "vfma.f32 q12, q2, q4",
                "vfma.f32 q8, q1, q5",
                "vfma.f32 q12, q3, q5",
                "vld1.32 {{d8-d11}}, [{w2}]!",
                "vfma.f32 q9, q0, q6",
                "vfma.f32 q13, q2, q6",
                "vfma.f32 q9, q1, q7",
                "vfma.f32 q13, q3, q7",
                "vld1.32 {{d12-d15}}, [{w3}]!",
                "vfma.f32 q10, q0, q4",
                "vfma.f32 q14, q2, q4",
                "vfma.f32 q10, q1, q5",
                "vfma.f32 q14, q3, q5",
                "vfma.f32 q11, q0, q6",
                "vfma.f32 q15, q2, q6",
                "vfma.f32 q11, q1, q7",
                "vfma.f32 q15, q3, q7",
            );
        }
    }
    finish(acc, xs, ws, kv, scalar::dot_f32)
}
