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

/// Whether a tract `Mult:` kernel line names a native f16 kernel on arm64:
/// `arm64fp16_*` (NEON FEAT_FP16) or `sve_mm*_f16_*` (SVE). `generic_f16_*`
/// is tract's portable fallback.
pub fn is_native_f16_kernel(line: &str) -> bool {
    line.contains("arm64fp16_") || line.contains("sve_mmm_f16") || line.contains("sve_mmv_f16")
}
