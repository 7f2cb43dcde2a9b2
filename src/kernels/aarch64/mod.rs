//! aarch64 kernels. NEON is part of the base architecture, so its path
//! always runs; where the CPU has the dot-product extension (FEAT_DotProd:
//! Cortex-A76 / Pi 5, A78AE / Orin; not Xavier's Carmel), int8 runs on `sdot`
//! over packed panels instead. SMMLA (i8mm: Cortex-A710 and later, none of
//! the boards we target) is still to come.

use super::Kernels;

pub mod dotprod;
pub mod neon;

pub fn detect() -> Option<Kernels> {
    let mut k = neon_only();
    if dotprod::has_dotprod() {
        k.name = "aarch64-dotprod";
        k.gemm_i8 = dotprod::gemm_i8;
        k.pack_i8 = dotprod::pack_i8;
        k.pack_i8_cols = dotprod::pack_i8_cols;
        k.i8_panel_len = dotprod::i8_panel_len;
    }
    Some(k)
}

/// The NEON kernels alone (SMLAL int8): every aarch64 core, and on a
/// dot-product core for tests, `bench-kernels` and
/// `CLIP_EDGE_KERNELS=aarch64-neon`.
pub fn neon_only() -> Kernels {
    Kernels {
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
        float_panels: false,
        fma_peak: neon::fma_peak,
        level: super::elementwise::Level::Plain,
    }
}
