//! Scratch directories of a test process, removed when it exits (a C
//! `atexit` handler: a test that fails still leaves nothing behind);
//! `CLIP_EDGE_KEEP_SCRATCH=1` keeps them, for a look after a failure.
//! Shared by the runtime's and the quantizer's integration tests.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The directories this process made, removed by [`remove_all`] as it
/// exits.
static MADE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// `std::env::temp_dir()/PREFIX-PID-NAME`, emptied and made, removed when
/// the process exits.
pub fn dir(prefix: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("{prefix}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    remove_at_exit(&d);
    d
}

/// `d` (made by the caller) removed when the process exits.
fn remove_at_exit(d: &Path) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a plain function with the C library's exit
        // handlers; it touches only `MADE` and the file system.
        unsafe { libc::atexit(remove_all) };
    });
    MADE.lock().unwrap().push(d.to_path_buf());
}

extern "C" fn remove_all() {
    if std::env::var_os("CLIP_EDGE_KEEP_SCRATCH").is_some() {
        return;
    }
    if let Ok(dirs) = MADE.lock() {
        for d in dirs.iter() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
