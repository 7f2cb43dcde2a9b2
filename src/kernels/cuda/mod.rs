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
mod compile;
mod gemm;
mod memory;

pub use compile::{compile, compile_source, libraries_present};
pub use gemm::{Gemm, GemmType};
pub use memory::{DevBuf, Pinned};

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
    use cudarc::nvrtc::sys as ns;

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
