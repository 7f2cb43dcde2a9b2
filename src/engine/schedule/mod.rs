//! The schedule both backends run, made once at load from the bundle's
//! graph: a static list of steps over value ids (arena tensors) and
//! constants ([`ir`]), lowered from a decluttered tract graph ([`lower`]),
//! element-wise ops fused into their producers' epilogues ([`fuse`]),
//! copies folded into the products that read them ([`fold`]), every read
//! and write checked against its tensor ([`bounds`]) and every tensor
//! placed in one arena ([`plan`]). Weights come out as plain rows in the
//! bundle's precision ([`linear`]); each executor lays them out for its own
//! kernels (the CPU engine packs them, [`crate::engine::native`]; the CUDA
//! backend uploads the rows).

pub mod blob;
mod bounds;
pub mod fold;
pub mod fuse;
pub mod ir;
pub mod linear;
#[cfg(feature = "tract")]
pub mod lower;
pub mod ops;
pub mod plan;

pub use bounds::check_bounds;
pub use plan::{op_key, plan_arena};

/// `CLIP_EDGE_FOLD=0` keeps copies that only a product reads.
pub fn fold_on() -> bool {
    std::env::var("CLIP_EDGE_FOLD").as_deref() != Ok("0")
}

/// `CLIP_EDGE_FUSE=0` keeps element-wise ops as steps of their own.
pub fn fuse_on() -> bool {
    std::env::var("CLIP_EDGE_FUSE").as_deref() != Ok("0")
}
