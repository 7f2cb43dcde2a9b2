//! `clip-quantize`: the host-side half of the project. Reads CLIP checkpoints,
//! builds tract graphs, tokenizes prompts. Nothing here ships to a board.

#![forbid(unsafe_code)]

pub mod atomic;
pub mod bundle;
pub mod checkpoint;
pub mod config;
pub mod graph;
pub mod hf_tokenizer;
pub mod nnef;
pub mod onnx;
pub mod prompts;
pub mod sections;
pub mod synth;
pub mod synth_clip;
pub mod tokenizer;
