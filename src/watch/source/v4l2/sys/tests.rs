//! The V4L2 structs and ioctl numbers against the kernel's headers.

use super::*;

/// [`LAYOUT`] against `<linux/videodev2.h>` as a C compiler for a
/// target sees it: `_Static_assert`s compiled with `-fsyntax-only`;
/// `wide`: the target's pointers are 64-bit.
#[cfg(target_arch = "x86_64")]
fn check_headers(cc: &str, wide: bool) {
    let dir =
        std::env::temp_dir().join(format!("clip-edge-v4l2-layout-{}-{cc}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut c =
        String::from("#include <stddef.h>\n#include <sys/time.h>\n#include <linux/videodev2.h>\n");
    for &(expr, v64, v32) in LAYOUT {
        let v = if wide { v64 } else { v32 };
        c.push_str(&format!(
            "_Static_assert((unsigned long)({expr}) == {v}ul, \"{expr} is not {v}\");\n"
        ));
    }
    let src = dir.join("layout.c");
    std::fs::write(&src, c).unwrap();
    // 32-bit ARM: the 32-bit `time_t` layout (what this build's
    // `v4l2_buffer` is, and what every kernel takes), also where the
    // compiler defaults to 64-bit time.
    let time32: &[&str] = if wide {
        &[]
    } else {
        &["-U_TIME_BITS", "-U_FILE_OFFSET_BITS"]
    };
    let out = std::process::Command::new(cc)
        .args(["-fsyntax-only", "-std=gnu11"])
        .args(time32)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("{cc}: {e}"));
    assert!(
        out.status.success(),
        "{cc}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The host's headers (x86_64: this build's own layout, which the
/// compile-time asserts also hold).
#[test]
#[cfg(target_arch = "x86_64")]
fn structs_and_ioctl_numbers_match_the_kernel_headers() {
    check_headers("cc", true);
}

/// The aarch64 and armv7 headers, as the release builds see them (each
/// of those builds asserts its own Rust layout at compile time).
#[test]
#[cfg(target_arch = "x86_64")]
#[ignore = "needs the aarch64 and armv7 cross compilers (scripts/cross-setup); .ci/run runs it once they are installed"]
fn structs_and_ioctl_numbers_match_the_cross_targets_headers() {
    check_headers("aarch64-linux-gnu-gcc", true);
    check_headers("arm-linux-gnueabihf-gcc", false);
}

#[test]
fn fourcc_codes_read_as_text() {
    assert_eq!(fourcc_text(fourcc(b"MJPG")), "MJPG");
    assert_eq!(fourcc(b"YUYV"), 0x5659_5559);
    assert_eq!(c_text(b"uvcvideo\0\0\0"), "uvcvideo");
}
