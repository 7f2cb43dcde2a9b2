//! cuBLAS products in the backend's "TN" form.

use std::ffi::c_void;

use cudarc::cublas::sys as cb;

use super::{Gpu, GpuError};

/// A product's element types: f16 × f16 → f32 (f32 accumulation),
/// int8 × int8 → i32 (the int8 matrix units), or f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmType {
    F16,
    I8,
    /// f32 × f32 → f32 on the CUDA cores (no TF32: cuBLAS's default math
    /// mode): attention of fp32 and int8 bundles, as the CPU runs it.
    F32,
}

/// One product `C = op(A) · op(B)` in cuBLAS's column-major terms, both
/// operands transposed as "TN" (A's columns and B's columns are rows of
/// `k` in memory, as our row-major layouts store them): `C (m × n, ldc)`
/// = `Aᵀ · B` with A `k × m` (lda) and B `k × n` (ldb), `batch` of them
/// `stride_*` elements apart.
#[derive(Debug, Clone, Copy)]
pub struct Gemm {
    pub ty: GemmType,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: u64,
    pub lda: usize,
    pub stride_a: usize,
    pub b: u64,
    pub ldb: usize,
    pub stride_b: usize,
    pub c: u64,
    pub ldc: usize,
    pub stride_c: usize,
    pub batch: usize,
}

impl Gpu {
    /// Runs one product on the stream.
    pub fn gemm(&self, g: &Gemm) -> Result<(), GpuError> {
        let (one_f, zero_f, one_i, zero_i) = (1f32, 0f32, 1i32, 0i32);
        let (alpha, beta, ab, ct, compute): (*const c_void, *const c_void, _, _, _) = match g.ty {
            GemmType::F16 => (
                (&one_f as *const f32).cast(),
                (&zero_f as *const f32).cast(),
                cb::cudaDataType::CUDA_R_16F,
                cb::cudaDataType::CUDA_R_32F,
                cb::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            ),
            GemmType::F32 => (
                (&one_f as *const f32).cast(),
                (&zero_f as *const f32).cast(),
                cb::cudaDataType::CUDA_R_32F,
                cb::cudaDataType::CUDA_R_32F,
                cb::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            ),
            GemmType::I8 => (
                (&one_i as *const i32).cast(),
                (&zero_i as *const i32).cast(),
                cb::cudaDataType::CUDA_R_8I,
                cb::cudaDataType::CUDA_R_32I,
                cb::cublasComputeType_t::CUBLAS_COMPUTE_32I,
            ),
        };
        let i = |v: usize| v as i32;
        let (ta, tb) = (
            cb::cublasOperation_t::CUBLAS_OP_T,
            cb::cublasOperation_t::CUBLAS_OP_N,
        );
        let algo = cb::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT;
        let (pa, pb, pc) = (
            g.a as *const c_void,
            g.b as *const c_void,
            g.c as *mut c_void,
        );
        // SAFETY: the operands lie in buffers the engine sized at load for
        // these shapes and strides; alpha/beta outlive the call (cuBLAS
        // reads host scalars before it returns, also under capture).
        let status = unsafe {
            if g.batch == 1 {
                cb::cublasGemmEx(
                    self.cublas,
                    ta,
                    tb,
                    i(g.m),
                    i(g.n),
                    i(g.k),
                    alpha,
                    pa,
                    ab,
                    i(g.lda),
                    pb,
                    ab,
                    i(g.ldb),
                    beta,
                    pc,
                    ct,
                    i(g.ldc),
                    compute,
                    algo,
                )
            } else {
                cb::cublasGemmStridedBatchedEx(
                    self.cublas,
                    ta,
                    tb,
                    i(g.m),
                    i(g.n),
                    i(g.k),
                    alpha,
                    pa,
                    ab,
                    i(g.lda),
                    g.stride_a as i64,
                    pb,
                    ab,
                    i(g.ldb),
                    g.stride_b as i64,
                    beta,
                    pc,
                    ct,
                    i(g.ldc),
                    g.stride_c as i64,
                    i(g.batch),
                    compute,
                    algo,
                )
            }
        };
        status.result().map_err(|e| GpuError::Call {
            what: "cublasGemmEx",
            why: format!("{:?} {}x{}x{} x{}: {e:?}", g.ty, g.m, g.n, g.k, g.batch),
        })
    }
}
