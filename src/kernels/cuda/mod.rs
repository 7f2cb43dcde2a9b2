//! The CUDA backend's device layer (`--features cuda`): the GPU, its memory,
//! the kernels of `kernels.cu` compiled by NVRTC at load for the GPU present,
//! cuBLAS products, and a stream captured once as a CUDA graph. Everything is
//! loaded at run time through `cudarc`'s dynamic loading, so a build needs no
//! CUDA toolkit and a machine without a GPU gets an error, not a crash.
//!
//! This module knows nothing of graphs: [`crate::engine::cuda`] turns the
//! native engine's schedule into calls of it. Every `unsafe` block of the
//! backend is here.

use std::ffi::{c_void, CString};
use std::sync::Arc;

use cudarc::cublas::sys as cb;
use cudarc::driver::{result as dr, sys as ds, CudaContext, CudaGraph, CudaStream};
use cudarc::nvrtc::{result as nr, sys as ns};

/// The kernels' source (CUDA C, no headers).
pub const SOURCE: &str = include_str!("kernels.cu");

/// Every kernel of [`SOURCE`], by name.
pub const KERNELS: [&str; 11] = [
    "ce_binary",
    "ce_unary",
    "ce_reduce",
    "ce_softmax",
    "ce_norm",
    "ce_copy",
    "ce_gather",
    "ce_scatter",
    "ce_im2col",
    "ce_conv_out",
    "ce_pool",
];

/// Threads per block of every launch (the reductions assume this size).
pub const BLOCK: u32 = 256;

/// cuBLAS's workspace, set once so that a captured product allocates nothing.
const CUBLAS_WORKSPACE_BYTES: usize = 32 << 20;

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no usable CUDA GPU: {0}")]
    Unavailable(String),
    #[error("CUDA {what}: {why}")]
    Call { what: &'static str, why: String },
    #[error("compiling the CUDA kernels with NVRTC for {arch}: {log}")]
    Compile { arch: String, log: String },
}

fn call<E: std::fmt::Debug>(what: &'static str) -> impl FnOnce(E) -> GpuError {
    move |e| GpuError::Call {
        what,
        why: format!("{e:?}"),
    }
}

/// Whether the driver, cuBLAS and NVRTC libraries can be loaded (before any
/// call into them: a missing library would otherwise panic in `cudarc`).
pub fn libraries_present() -> Result<(), GpuError> {
    // SAFETY: these only try `dlopen` on the candidate names.
    let (cuda, cublas, nvrtc) = unsafe {
        (
            ds::is_culib_present(),
            cb::is_culib_present(),
            ns::is_culib_present(),
        )
    };
    let missing: Vec<&str> = [
        (cuda, "libcuda (the NVIDIA driver)"),
        (cublas, "libcublas"),
        (nvrtc, "libnvrtc"),
    ]
    .iter()
    .filter(|(ok, _)| !ok)
    .map(|(_, n)| *n)
    .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(GpuError::Unavailable(format!(
            "cannot load {} (is LD_LIBRARY_PATH set to the CUDA libraries?)",
            missing.join(", ")
        )))
    }
}

/// Compiles [`SOURCE`] for `arch` (e.g. `sm_87`) to a CUBIN; needs only
/// libnvrtc, no GPU (the tests compile it for each supported Jetson).
pub fn compile(arch: &str) -> Result<Vec<u8>, GpuError> {
    compile_source(SOURCE, arch)
}

/// As [`compile`], any source (the layout tests add assertions to it).
pub fn compile_source(source: &str, arch: &str) -> Result<Vec<u8>, GpuError> {
    // SAFETY: only loads the library.
    if !unsafe { ns::is_culib_present() } {
        return Err(GpuError::Unavailable("cannot load libnvrtc".into()));
    }
    let src =
        CString::new(source).map_err(|_| GpuError::Unavailable("a NUL in the source".into()))?;
    let prog = nr::create_program(&src, None).map_err(call("nvrtcCreateProgram"))?;
    let opts = [
        format!("--gpu-architecture={arch}"),
        "-default-device".into(),
    ];
    // SAFETY: `prog` was just created and is destroyed once, below.
    let compiled = unsafe { nr::compile_program(prog, &opts) };
    let out = match compiled {
        Ok(()) => {
            let mut size = 0usize;
            // SAFETY: `prog` compiled; the buffer has the size NVRTC gives.
            unsafe {
                ns::nvrtcGetCUBINSize(prog, &mut size)
                    .result()
                    .map_err(call("nvrtcGetCUBINSize"))?;
                let mut bin = vec![0u8; size];
                ns::nvrtcGetCUBIN(prog, bin.as_mut_ptr().cast())
                    .result()
                    .map_err(call("nvrtcGetCUBIN"))?;
                Ok(bin)
            }
        }
        Err(_) => {
            // SAFETY: `prog` exists; the log is a C string NVRTC filled.
            let log = unsafe { nr::get_program_log(prog) }
                .map(|l| {
                    let bytes: Vec<u8> =
                        l.iter().map(|c| *c as u8).take_while(|c| *c != 0).collect();
                    String::from_utf8_lossy(&bytes).into_owned()
                })
                .unwrap_or_default();
            Err(GpuError::Compile {
                arch: arch.into(),
                log: log.lines().take(20).collect::<Vec<_>>().join(" | "),
            })
        }
    };
    // SAFETY: created above, destroyed once.
    let _ = unsafe { nr::destroy_program(prog) };
    out
}

/// A device allocation, freed on drop.
pub struct DevBuf {
    ptr: ds::CUdeviceptr,
    bytes: usize,
}

impl DevBuf {
    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for DevBuf {
    fn drop(&mut self) {
        if self.ptr != 0 {
            // SAFETY: allocated by `Gpu::alloc`, freed once.
            let _ = unsafe { dr::free_sync(self.ptr) };
        }
    }
}

/// Page-locked host memory (the input and output of a frame: copies from
/// it can be captured in a CUDA graph).
pub struct Pinned {
    ptr: *mut f32,
    len: usize,
}

impl Pinned {
    pub fn as_slice(&self) -> &[f32] {
        // SAFETY: `len` f32 allocated by `cuMemHostAlloc`, owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: as above, borrowed mutably through self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // SAFETY: allocated by `cuMemHostAlloc`, freed once.
        let _ = unsafe { dr::free_host(self.ptr.cast()) };
    }
}

// SAFETY: the pinned block is owned by this value alone.
unsafe impl Send for Pinned {}

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

/// The GPU: its context, one stream, a cuBLAS handle on it, and the
/// compiled kernels.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    cublas: cb::cublasHandle_t,
    module: ds::CUmodule,
    funcs: Vec<ds::CUfunction>,
    _workspace: DevBuf,
    pub name: String,
    pub sm_count: u32,
    pub compute_capability: (i32, i32),
}

// SAFETY: the GPU is owned by one encoder, which runs frames through
// `&mut self` (so one thread at a time uses the stream and handles; `Gpu`
// is not `Sync`); the context is bound to the calling thread first.
unsafe impl Send for Gpu {}

impl Gpu {
    /// The first GPU, with the kernels compiled for it.
    pub fn open() -> Result<Gpu, GpuError> {
        libraries_present()?;
        let count = CudaContext::device_count()
            .map_err(|e| GpuError::Unavailable(format!("the driver found no device ({e:?})")))?;
        if count < 1 {
            return Err(GpuError::Unavailable("the driver found no device".into()));
        }
        let ctx = CudaContext::new(0).map_err(call("cuCtx (device 0)"))?;
        let name = ctx.name().map_err(call("cuDeviceGetName"))?;
        let cc = ctx
            .compute_capability()
            .map_err(call("compute capability"))?;
        let sm_count = ctx
            .attribute(ds::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(call("SM count"))? as u32;
        let stream = ctx.new_stream().map_err(call("cuStreamCreate"))?;
        let arch = format!("sm_{}{}", cc.0, cc.1);
        let cubin = compile(&arch)?;
        ctx.bind_to_thread().map_err(call("cuCtxSetCurrent"))?;
        // SAFETY: `cubin` is NVRTC's image for this GPU, alive for the call.
        let module = unsafe { dr::module::load_data(cubin.as_ptr().cast()) }
            .map_err(call("cuModuleLoadData"))?;
        let mut funcs = Vec::with_capacity(KERNELS.len());
        for k in KERNELS {
            let n = CString::new(k).expect("kernel names have no NUL");
            // SAFETY: `module` was just loaded.
            funcs.push(
                unsafe { dr::module::get_function(module, n) }
                    .map_err(call("cuModuleGetFunction"))?,
            );
        }
        let cublas = cudarc::cublas::result::create_handle().map_err(call("cublasCreate"))?;
        // SAFETY: a plain allocation of the workspace's size.
        let ws = unsafe { dr::malloc_sync(CUBLAS_WORKSPACE_BYTES) }.map_err(call("cuMemAlloc"))?;
        let workspace = DevBuf {
            ptr: ws,
            bytes: CUBLAS_WORKSPACE_BYTES,
        };
        // SAFETY: the handle and stream are live; the workspace outlives
        // the handle (both owned by the returned value, the handle
        // destroyed first in `drop`).
        unsafe {
            cudarc::cublas::result::set_stream(cublas, stream.cu_stream().cast())
                .map_err(call("cublasSetStream"))?;
            cb::cublasSetWorkspace_v2(cublas, ws as *mut c_void, CUBLAS_WORKSPACE_BYTES)
                .result()
                .map_err(call("cublasSetWorkspace"))?;
        }
        log::info!(
            "CUDA: {name} (sm_{}{}, {sm_count} SMs), kernels compiled by NVRTC",
            cc.0,
            cc.1
        );
        Ok(Gpu {
            ctx,
            stream,
            cublas,
            module,
            funcs,
            _workspace: workspace,
            name,
            sm_count,
            compute_capability: cc,
        })
    }

    /// Whether this GPU has int8 matrix units (IMMA: sm_72 Xavier, sm_75
    /// and later).
    pub fn has_int8_tensor_cores(&self) -> bool {
        self.compute_capability >= (7, 2)
    }

    pub fn bind(&self) -> Result<(), GpuError> {
        self.ctx.bind_to_thread().map_err(call("cuCtxSetCurrent"))
    }

    /// `bytes` of device memory (uninitialised).
    pub fn alloc(&self, bytes: usize) -> Result<DevBuf, GpuError> {
        self.bind()?;
        // SAFETY: a plain allocation; at least one byte.
        let ptr = unsafe { dr::malloc_sync(bytes.max(1)) }.map_err(|e| GpuError::Call {
            what: "cuMemAlloc",
            why: format!("{bytes} bytes: {e:?}"),
        })?;
        Ok(DevBuf { ptr, bytes })
    }

    /// A device copy of `data` (weights, tables: once, at load).
    pub fn upload<T: Copy>(&self, data: &[T]) -> Result<DevBuf, GpuError> {
        let buf = self.alloc(std::mem::size_of_val(data))?;
        if !data.is_empty() {
            // SAFETY: `buf` holds exactly `data`'s bytes; synchronous copy.
            unsafe { dr::memcpy_htod_sync(buf.ptr, data) }.map_err(call("cuMemcpyHtoD"))?;
        }
        Ok(buf)
    }

    /// Zeroes `bytes` at `ptr` (synchronously).
    pub fn zero(&self, ptr: u64, bytes: usize) -> Result<(), GpuError> {
        self.bind()?;
        // SAFETY: the caller's `ptr..ptr+bytes` lies in one of its buffers.
        unsafe { dr::memset_d8_sync(ptr, 0, bytes) }.map_err(call("cuMemsetD8"))
    }

    /// `len` f32 of page-locked host memory.
    pub fn pinned(&self, len: usize) -> Result<Pinned, GpuError> {
        self.bind()?;
        // SAFETY: a plain host allocation; zeroed below before any read.
        let ptr = unsafe { dr::malloc_host(4 * len.max(1), 0) }.map_err(call("cuMemHostAlloc"))?;
        let mut p = Pinned {
            ptr: ptr.cast(),
            len,
        };
        p.as_mut_slice().fill(0.0);
        Ok(p)
    }

    /// Launches kernel `which` (an index into [`KERNELS`]) with one argument
    /// struct, on the stream.
    pub fn launch<A: Copy>(
        &self,
        which: usize,
        grid: (u32, u32, u32),
        args: &A,
    ) -> Result<(), GpuError> {
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return Ok(());
        }
        let mut params = [args as *const A as *mut c_void];
        // SAFETY: `A` is the #[repr(C)] twin of the kernel's one argument
        // struct (engine::cuda builds each from checked offsets); the
        // stream and function belong to this context.
        unsafe {
            dr::launch_kernel(
                self.funcs[which],
                grid,
                (BLOCK, 1, 1),
                0,
                self.stream.cu_stream(),
                &mut params,
            )
        }
        .map_err(|e| GpuError::Call {
            what: "cuLaunchKernel",
            why: format!("{}: {e:?}", KERNELS[which]),
        })
    }

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

    /// Copies `src` (pinned) to the device at `dst`, on the stream.
    pub fn copy_in(&self, dst: u64, src: &Pinned, at: usize, len: usize) -> Result<(), GpuError> {
        let s = &src.as_slice()[at..at + len];
        // SAFETY: `dst` holds `len` f32 (checked by the caller at load);
        // `s` is pinned and outlives the stream's use (owned by the engine).
        unsafe { dr::memcpy_htod_async(dst, s, self.stream.cu_stream()) }
            .map_err(call("cuMemcpyHtoDAsync"))
    }

    /// Copies `len` f32 from the device at `src` into `dst` (pinned).
    pub fn copy_out(
        &self,
        dst: &mut Pinned,
        at: usize,
        src: u64,
        len: usize,
    ) -> Result<(), GpuError> {
        let d = &mut dst.as_mut_slice()[at..at + len];
        // SAFETY: as `copy_in`, the other way.
        unsafe { dr::memcpy_dtoh_async(d, src, self.stream.cu_stream()) }
            .map_err(call("cuMemcpyDtoHAsync"))
    }

    pub fn synchronize(&self) -> Result<(), GpuError> {
        self.stream
            .synchronize()
            .map_err(call("cuStreamSynchronize"))
    }

    /// Starts recording the stream's work into a graph.
    pub fn begin_capture(&self) -> Result<(), GpuError> {
        self.stream
            .begin_capture(ds::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(call("cuStreamBeginCapture"))
    }

    /// The graph recorded since [`Gpu::begin_capture`], instantiated.
    pub fn end_capture(&self) -> Result<Graph, GpuError> {
        let g = self
            .stream
            .end_capture(ds::CUgraphInstantiate_flags(0))
            .map_err(call("cuStreamEndCapture"))?
            .ok_or_else(|| GpuError::Call {
                what: "cuStreamEndCapture",
                why: "nothing was captured".into(),
            })?;
        g.upload().map_err(call("cuGraphUpload"))?;
        Ok(Graph(g))
    }

    /// Milliseconds the stream takes for `f`'s work (CUDA events).
    pub fn time<F: FnMut() -> Result<(), GpuError>>(&self, mut f: F) -> Result<f32, GpuError> {
        let a = self
            .ctx
            .new_event(Some(ds::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(call("cuEventCreate"))?;
        let b = self
            .ctx
            .new_event(Some(ds::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(call("cuEventCreate"))?;
        a.record(&self.stream).map_err(call("cuEventRecord"))?;
        f()?;
        b.record(&self.stream).map_err(call("cuEventRecord"))?;
        b.synchronize().map_err(call("cuEventSynchronize"))?;
        a.elapsed_ms(&b).map_err(call("cuEventElapsedTime"))
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        // SAFETY: created in `open`, destroyed once, before the workspace
        // (a field dropped after this body) and the context.
        unsafe {
            let _ = cudarc::cublas::result::destroy_handle(self.cublas);
            let _ = dr::module::unload(self.module);
        }
    }
}

/// CUDA events with timing, for the per-launch profile (`check-cuda`).
pub struct Events(Vec<ds::CUevent>);

impl Events {
    /// Milliseconds between events `i` and `j` (both recorded, `j` done).
    pub fn elapsed_ms(&self, i: usize, j: usize) -> Result<f32, GpuError> {
        // SAFETY: both events were created by `Gpu::events` and recorded.
        unsafe { dr::event::elapsed(self.0[i], self.0[j]) }.map_err(call("cuEventElapsedTime"))
    }

    /// Waits for event `i`.
    pub fn synchronize(&self, i: usize) -> Result<(), GpuError> {
        // SAFETY: created by `Gpu::events`.
        unsafe { dr::event::synchronize(self.0[i]) }.map_err(call("cuEventSynchronize"))
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        for e in &self.0 {
            // SAFETY: created by `Gpu::events`, destroyed once.
            let _ = unsafe { dr::event::destroy(*e) };
        }
    }
}

impl Gpu {
    /// `n` timing events.
    pub fn events(&self, n: usize) -> Result<Events, GpuError> {
        self.bind()?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(
                dr::event::create(ds::CUevent_flags::CU_EVENT_DEFAULT)
                    .map_err(call("cuEventCreate"))?,
            );
        }
        Ok(Events(v))
    }

    /// Records event `i` of `e` on the stream.
    pub fn record(&self, e: &Events, i: usize) -> Result<(), GpuError> {
        // SAFETY: the event and stream belong to this context.
        unsafe { dr::event::record(e.0[i], self.stream.cu_stream()) }.map_err(call("cuEventRecord"))
    }
}

/// A captured frame, replayed with one launch.
pub struct Graph(CudaGraph);

// SAFETY: CUDA requires calls on one graph to be serialized, not made from
// the thread that captured it; a `Graph` is only used through its owner
// (one encoder, under `&mut` or a lock), and `launch` binds the stream's
// context to the calling thread first.
unsafe impl Send for Graph {}

impl Graph {
    pub fn launch(&self) -> Result<(), GpuError> {
        self.0.launch().map_err(call("cuGraphLaunch"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The GPUs the CUDA build is for: Xavier (sm_72; CUDA 11 NVRTC only),
    /// Turing, Ampere, Orin (sm_87), Ada, Hopper.
    const ARCHS: [&str; 6] = ["sm_72", "sm_75", "sm_80", "sm_87", "sm_89", "sm_90"];

    /// NVRTC needs no GPU: the kernels are compiled here for every target
    /// this NVRTC knows (CUDA 13's dropped sm_72). Fails where libnvrtc
    /// cannot be loaded (`.ci/run` installs it from PyPI).
    #[test]
    fn kernels_compile_with_nvrtc_for_each_target() {
        // SAFETY: only tries to load the library.
        assert!(
            unsafe { ns::is_culib_present() },
            "libnvrtc cannot be loaded (LD_LIBRARY_PATH?): the CUDA kernels cannot be compiled"
        );
        let mut compiled = 0;
        for arch in ARCHS {
            match compile(arch) {
                Ok(bin) => {
                    assert!(bin.len() > 1000, "{arch}: a {}-byte CUBIN", bin.len());
                    compiled += 1;
                }
                // An NVRTC too new for an old target says so; anything
                // else (a syntax error) fails.
                Err(GpuError::Compile { log, .. })
                    if log.contains("invalid value for --gpu-architecture") =>
                {
                    eprintln!("{arch}: not a target of this NVRTC ({log})")
                }
                Err(e) => panic!("{arch}: {e}"),
            }
        }
        assert!(compiled >= 4, "only {compiled} targets compiled");
    }

    #[test]
    fn the_kernel_list_names_every_kernel_of_the_source() {
        for k in KERNELS {
            assert!(
                SOURCE.contains(&format!("__global__ void {k}(")),
                "{k} is not a kernel of kernels.cu"
            );
        }
        assert_eq!(SOURCE.matches("__global__").count(), KERNELS.len());
    }
}
