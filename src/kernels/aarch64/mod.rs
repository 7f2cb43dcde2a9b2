//! aarch64 kernels. NEON is part of the base architecture, so these always
//! run; SDOT (Cortex-A76 / Pi 5, Orin's A78AE) and SMMLA (i8mm) paths are
//! still to come.

use super::Kernels;

pub mod neon;

pub fn detect() -> Option<Kernels> {
    Some(Kernels {
        name: "aarch64-neon",
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
        level: super::elementwise::Level::Plain,
    })
}
