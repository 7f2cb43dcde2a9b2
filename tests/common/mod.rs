//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

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

/// A command that runs `exe`, through `$CLIP_TEST_RUNNER` when set (e.g.
/// `qemu-aarch64 -cpu cortex-a72` for cross-built tests: cargo's runner only
/// wraps the test binaries, not the programs they start).
///
/// Logging is set to errors only, so tests that count stderr lines see what a
/// user sees whatever `RUST_LOG` the test run has (cross-test sets `info`, and
/// under qemu tract warns that `/proc/cpuinfo` has no arm64 features).
pub fn command(exe: &str) -> Command {
    let mut c = match std::env::var("CLIP_TEST_RUNNER") {
        Ok(r) if !r.trim().is_empty() => {
            let mut parts = r.split_whitespace();
            let mut c = Command::new(parts.next().unwrap());
            c.args(parts).arg(exe);
            c
        }
        _ => Command::new(exe),
    };
    c.env("RUST_LOG", "error");
    c
}

/// `clip-edge`, as built for these tests.
pub fn bin() -> Command {
    command(env!("CARGO_BIN_EXE_clip-edge"))
}
