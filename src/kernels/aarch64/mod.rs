//! aarch64 kernels. NEON is part of the base architecture, so its path
//! always runs; where the CPU has the dot-product extension (FEAT_DotProd:
//! Cortex-A76 / Pi 5, A78AE / Orin; not Xavier's Carmel), int8 runs on `sdot`
//! over packed panels instead, and where it has the int8 matrix multiply
//! (FEAT_I8MM: Cortex-A710 and later, none of the boards we target) on
//! `smmla`.

use super::{Kernels, Packing};

pub mod dotprod;
pub mod i8mm;
pub mod neon;

/// The best path of this core: [`paths`]' last.
pub fn detect() -> Option<Kernels> {
    paths().pop()
}

/// Every path this core runs, the best last: NEON always, the dot product
/// where FEAT_DotProd is, `smmla` where FEAT_I8MM is (the int8 products
/// change; the float ones stay NEON's).
pub fn paths() -> Vec<Kernels> {
    let mut v = vec![neon_only()];
    if dotprod::has_dotprod() {
        v.push(neon_only().with_packed_i8(
            Packing::AARCH64_DOTPROD,
            dotprod::gemm_i8,
            dotprod::pack_i8_cols,
            Some(dotprod::quantize_pack_i8_cols),
            dotprod::i8_panel_len,
        ));
    }
    if i8mm::has_i8mm() {
        v.push(neon_only().with_packed_i8(
            Packing::AARCH64_I8MM,
            i8mm::gemm_i8,
            i8mm::pack_i8_cols,
            None,
            i8mm::i8_panel_len,
        ));
    }
    v
}

/// The NEON kernels alone (SMLAL int8): every aarch64 core, and on a
/// dot-product core for tests, `bench-kernels` and
/// `CLIP_EDGE_KERNELS=aarch64-neon`.
pub fn neon_only() -> Kernels {
    Kernels::plain_rows(
        Packing::AARCH64_NEON,
        neon::gemm_i8,
        neon::gemm_f16w,
        neon::gemm_f32,
        neon::fma_peak,
    )
}
