//! Helpers shared by the quantizer's integration tests.
#![allow(dead_code)]

use std::path::Path;

use clip_edge::bundle::{self, Bundle};
use clip_edge::score::widen;

/// A text table rebuilt on another architecture than the one that wrote the
/// committed bundle may differ in the last bits (f32 text encoder on other
/// kernels, then rounding to f16): at most this much per entry.
pub const TEXT_TABLE_CROSS_ARCH_TOL: f32 = 1e-3;

/// The committed bundles are written on x86_64; a rebuild must match them.
/// The image encoder (weights transformed in plain Rust) must match bit for
/// bit everywhere; the text table bit for bit on x86_64 and within
/// [`TEXT_TABLE_CROSS_ARCH_TOL`] elsewhere. `hint` says how to refresh them.
pub fn assert_fresh(fresh: &Path, committed: &Path, hint: &str) {
    let f = Bundle::open(fresh).unwrap();
    let c = Bundle::open(committed).unwrap();
    let name = committed.display();
    assert_eq!(
        f.manifest.files[bundle::IMAGE_ENCODER],
        c.manifest.files[bundle::IMAGE_ENCODER],
        "{name}/{} is stale: {hint}",
        bundle::IMAGE_ENCODER
    );
    assert_eq!(f.manifest.labels, c.manifest.labels, "{name}: labels");
    assert_eq!(
        f.manifest.templates, c.manifest.templates,
        "{name}: templates"
    );
    let same = f.manifest.files[bundle::TEXT_TABLE] == c.manifest.files[bundle::TEXT_TABLE];
    if cfg!(target_arch = "x86_64") {
        assert!(same, "{name}/{} is stale: {hint}", bundle::TEXT_TABLE);
    } else if !same {
        let (a, b) = (widen(&f.table), widen(&c.table));
        assert_eq!(a.len(), b.len());
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= TEXT_TABLE_CROSS_ARCH_TOL,
            "{name}/{}: max difference {worst} from the committed table",
            bundle::TEXT_TABLE
        );
    }
}
