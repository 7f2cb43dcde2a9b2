//! Host side: checkpoint readers (PyTorch zip / TorchScript pickles,
//! HuggingFace safetensors), then the architecture inference.
#![no_main]
use std::path::Path;

use clip_quantize::checkpoint::load_bytes;
use clip_quantize::config::ClipConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sd) = load_bytes(Path::new("fuzz.pt"), data) {
        let _ = ClipConfig::infer(&sd);
    }
});
