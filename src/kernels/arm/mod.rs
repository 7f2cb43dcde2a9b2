//! 32-bit ARM kernels (armv7 Linux: 32-bit Raspberry Pi OS on Pi 2/3/4/5;
//! the ARMv6 Pi Zero/1 are not a target). The NEON path runs where the CPU
//! has NEON and VFPv4 (every Pi from the 2 on); elsewhere the scalar twins
//! run.
//! Weights stay in the plain layout (a row per output channel), as on the
//! aarch64 NEON path.

use super::{Kernels, Packing};

pub mod neon;

pub fn detect() -> Option<Kernels> {
    if !neon::has_neon() {
        return None;
    }
    Some(Kernels::plain_rows(
        Packing::ARMV7_NEON,
        neon::gemm_i8,
        neon::gemm_f16w,
        neon::gemm_f32,
        neon::fma_peak,
    ))
}
