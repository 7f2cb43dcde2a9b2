//! Image decode (PNG through `png`, the rest through `image`) and the
//! reference preprocessing of whatever decodes.
#![no_main]
use std::path::Path;

use clip_edge::decode::decode_bytes;
use clip_edge::preprocess::{Preprocessor, CLIP_MEAN, CLIP_STD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = decode_bytes(data, Path::new("fuzz")) {
        let mut out = vec![0f32; Preprocessor::output_len(32)];
        let _ = Preprocessor::new().run(&img.view(), 32, CLIP_MEAN, CLIP_STD, &mut out);
    }
});
