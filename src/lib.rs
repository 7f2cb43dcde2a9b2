//! `clip-edge`: the device runtime. It links tract-core and tract-nnef only;
//! checkpoints, tokenizer and graph building live in the host-side
//! `clip-quantize` crate.

pub mod alloc_count;
pub mod bundle;
pub mod decode;
pub mod durable;
pub mod engine;
pub mod error_line;
pub mod eval;
pub mod kernels;
pub mod preprocess;
pub mod progress;
pub mod score;
pub mod section_cache;
pub mod service;
pub mod signature;
#[cfg(feature = "tract")]
pub mod tract_graph;
pub mod watch;
