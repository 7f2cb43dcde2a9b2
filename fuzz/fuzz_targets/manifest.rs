//! `manifest.toml`: TOML, the version check, the field validation.
#![no_main]
use std::path::Path;

use clip_edge::bundle::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Manifest::parse(data, Path::new("manifest.toml"));
});
