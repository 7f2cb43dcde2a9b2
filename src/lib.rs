//! `clip-edge`: the device runtime. It links tract-core and tract-nnef only;
//! checkpoints, tokenizer and graph building live in the host-side
//! `clip-quantize` crate.
//!
//! `unsafe` lives in the kernel modules, and in the three thin edges that
//! cannot do without it (the counting allocator, the section cache's
//! read-only `mmap`, the V4L2 ioctls); everything else is refused it.

#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod alloc_count;
pub mod bundle;
pub mod decode;
pub mod durable;
pub mod engine;
pub mod error_line;
pub mod eval;
#[allow(unsafe_code)]
pub mod kernels;
pub mod preprocess;
pub mod progress;
pub mod score;
#[allow(unsafe_code)]
pub mod section_cache;
pub mod service;
pub mod signature;
#[cfg(feature = "tract")]
pub mod tract_graph;
pub mod watch;
