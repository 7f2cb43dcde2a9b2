//! Device memory, freed on drop, and page-locked host memory.

use cudarc::driver::{result as dr, sys as ds};

/// A device allocation, freed on drop.
pub struct DevBuf {
    pub(super) ptr: ds::CUdeviceptr,
    pub(super) bytes: usize,
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
    pub(super) ptr: *mut f32,
    pub(super) len: usize,
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
