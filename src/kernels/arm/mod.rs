//! 32-bit ARM kernels (armv7 Linux: 32-bit Raspberry Pi OS on Pi 2/3/4/5;
//! the ARMv6 Pi Zero/1 are not a target). The NEON path runs where the CPU
//! has NEON and VFPv4 (every Pi from the 2 on); elsewhere the scalar twins
//! run.
//! Weights stay in the plain layout (a row per output channel), as on the
//! aarch64 NEON path.

use super::Kernels;

pub mod neon;

pub fn detect() -> Option<Kernels> {
    if !neon::has_neon() {
        return None;
    }
    Some(Kernels {
        name: "armv7-neon",
        gemm_i8: neon::gemm_i8,
        pack_i8: super::rows,
        pack_i8_cols: super::rows_of_cols,
        i8_panel_len: super::rows_panel_len,
        gemm_f16w: neon::gemm_f16w,
        gemm_f32: neon::gemm_f32,
        pack_f16: super::rows,
        gemm_f16p: neon::gemm_f16w,
        pack_f32: super::rows,
        pack_f32_into: super::rows_into,
        pack_f32_cols: super::rows_of_cols,
        gemm_f32p: neon::gemm_f32,
        float_panels: false,
        fma_peak: neon::fma_peak,
        level: super::elementwise::Level::Plain,
    })
}
