//! x86_64 kernels, chosen by run-time feature detection.

use super::Kernels;

pub mod avx2;

/// AVX2 + FMA + F16C (Haswell, Zen 1 and later). AVX-512 / VNNI paths are
/// still to come; until then AVX-512 machines run these.
pub fn detect() -> Option<Kernels> {
    if is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
    {
        Some(Kernels {
            name: "x86_64-avx2",
            gemm_i8: avx2::gemm_i8,
            gemm_f16w: avx2::gemm_f16w,
            gemm_f32: avx2::gemm_f32,
        })
    } else {
        None
    }
}
