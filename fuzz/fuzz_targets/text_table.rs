//! `text_table.safetensors` against a valid manifest (the committed tiny
//! ViT's, and the default model's f16 one).
#![no_main]
use std::path::Path;
use std::sync::OnceLock;

use clip_edge::bundle::{parse_table, Manifest};
use libfuzzer_sys::fuzz_target;

fn manifests() -> &'static [Manifest; 2] {
    static M: OnceLock<[Manifest; 2]> = OnceLock::new();
    M.get_or_init(|| {
        let p = Path::new("manifest.toml");
        [
            include_bytes!("../../tests/fixtures/bundles/vit_tiny_fp32/manifest.toml").as_slice(),
            include_bytes!("../../models/default-int8/manifest.toml").as_slice(),
        ]
        .map(|b| Manifest::parse(b, p).expect("committed manifest"))
    })
}

fuzz_target!(|data: &[u8]| {
    for m in manifests() {
        let _ = parse_table(data, Path::new("text_table.safetensors"), m);
    }
});
