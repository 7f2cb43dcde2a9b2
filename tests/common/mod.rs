//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

mod command;
pub use command::command;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// A fresh scratch directory for one test of this process.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("clip-edge-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `clip-edge`, as built for these tests.
pub fn bin() -> Command {
    command(env!("CARGO_BIN_EXE_clip-edge"))
}

/// On arm64, asserts that tract picked a native f16 kernel (`arm64fp16_*`
/// for NEON FEAT_FP16, `sve_mm*_f16_*` for SVE) exactly where its ISA set has
/// FP16; `generic_f16_*` is its portable fallback. `kernels` are `Mult:` lines.
pub fn assert_native_f16_iff_fp16(kernels: &[String]) {
    if cfg!(target_arch = "aarch64") {
        let fp16 = tract_linalg::isa::native().has(tract_linalg::isa::Isa::Aarch64Fp16);
        let native = kernels.iter().any(|k| {
            k.contains("arm64fp16_") || k.contains("sve_mmm_f16") || k.contains("sve_mmv_f16")
        });
        assert_eq!(native, fp16, "{kernels:?}, FP16 {fp16}");
    }
}
