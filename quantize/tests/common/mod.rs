//! Helpers shared by the quantizer's integration tests.
#![allow(dead_code)]

use std::path::Path;

use clip_edge::bundle::{self, Bundle, TableData};
use clip_edge::score::widen;

/// A text table rebuilt on another machine than the one that wrote the
/// committed bundle differs in the last bits: the f32 text encoder runs on
/// tract's kernels for that CPU (AVX-512 or AVX2+FMA on x86_64, NEON on
/// aarch64), which sum in other orders. Largest difference allowed per entry
/// of an f32 table (rows are unit vectors; a changed weight, label, template
/// or tokenizer moves entries by far more).
pub const TEXT_TABLE_F32_TOL: f32 = 1e-5;
/// The same for an f16 table: the f32 values above, then rounded to f16,
/// may land one f16 step apart (at most 2^-11 for entries below 1).
pub const TEXT_TABLE_F16_TOL: f32 = 1.0 / 2048.0;

/// The committed bundles must match a rebuild on any machine: the image
/// encoder (weights transformed in plain Rust) bit for bit, labels and
/// templates exactly, the text table within [`TEXT_TABLE_F32_TOL`] /
/// [`TEXT_TABLE_F16_TOL`] of its dtype. `hint` says how to refresh them.
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
    let tol = match (&f.table, &c.table) {
        (TableData::F32(_), TableData::F32(_)) => TEXT_TABLE_F32_TOL,
        (TableData::F16(_), TableData::F16(_)) => TEXT_TABLE_F16_TOL,
        _ => panic!("{name}/{}: table dtype changed: {hint}", bundle::TEXT_TABLE),
    };
    let (a, b) = (widen(&f.table), widen(&c.table));
    assert_eq!(a.len(), b.len(), "{name}/{}: size", bundle::TEXT_TABLE);
    let worst = max_abs_diff(&a, &b);
    eprintln!("{name}: text table max |rebuilt - committed| = {worst:e} (tolerance {tol:e})");
    assert!(
        worst <= tol,
        "{name}/{} is stale: max difference {worst} > {tol} from a rebuild: {hint}",
        bundle::TEXT_TABLE
    );
}

/// Largest |a - b| over two equally long slices (NaN counts as infinite).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (x - y).abs();
            if d.is_nan() {
                f32::INFINITY
            } else {
                d
            }
        })
        .fold(0f32, f32::max)
}
