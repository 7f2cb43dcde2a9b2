//! Starting the workspace's binaries from integration tests, shared by both
//! crates' tests (the quantizer's include this file by path).

use std::process::Command;

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
    // Saved engine sections in the build's folder, not the user's
    // `~/.cache` (one that cannot be written, or that another user owns,
    // adds a warning line to what the tests read).
    if std::env::var_os("CLIP_EDGE_CACHE").is_none() {
        c.env(
            "CLIP_EDGE_CACHE",
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("clip-edge-cache"),
        );
    }
    c
}
