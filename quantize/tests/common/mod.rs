//! Helpers shared by the quantizer's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

#[path = "../../../tests/common/numeric.rs"]
mod numeric;
pub use numeric::max_abs_diff;

use clip_edge::bundle::{self, Bundle, TableData};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Build options with the defaults the tests share: the committed
/// calibration images, one template, dynamic activations, softmax.
pub fn build_options(
    checkpoint: PathBuf,
    precision: clip_quantize::bundle::Requested,
    labels: PathBuf,
    out: PathBuf,
) -> clip_quantize::bundle::BuildOptions {
    clip_quantize::bundle::BuildOptions {
        checkpoint,
        text_checkpoint: None,
        preprocess: None,
        precision,
        labels,
        templates: None,
        calibration: root().join("models/calibration"),
        eval: None,
        activation: clip_quantize::graph::ActivationQuant::DynamicPerToken,
        cosine_target: 0.995,
        scoring: Default::default(),
        out,
        progress: false,
        sign: None,
    }
}

#[path = "../../../tests/common/scratch.rs"]
pub mod scratch_dirs;

/// An empty scratch folder of this test process, removed when it exits
/// (`CLIP_EDGE_KEEP_SCRATCH=1` keeps it).
pub fn scratch(name: &str) -> PathBuf {
    scratch_dirs::dir("clip-quantize", name)
}

/// A text table rebuilt on another machine than the one that wrote the
/// committed bundle differs in the last bits: the f32 text encoder runs on
/// tract's kernels for that CPU (AVX-512 or AVX2+FMA on x86_64, NEON on
/// aarch64), which sum in other orders. Largest difference allowed per entry
/// of an f32 table (rows are unit vectors; a changed weight, label, template
/// or tokenizer moves entries by far more).
/// Measured: 0 on the writer's kernels (AVX-512), 3.9e-7 on tract's
/// AVX2+FMA ones (the test fixtures' `vit_tiny_fp32`).
pub const TEXT_TABLE_F32_TOL: f32 = 4e-6;
/// The same for an f16 table, in f16 steps: the f32 values above, rounded
/// to f16, may land one step apart.
pub const TEXT_TABLE_F16_STEPS: u16 = 1;

/// The committed bundles must match a rebuild on any machine: the image
/// encoder (weights transformed in plain Rust) bit for bit, labels and
/// templates exactly, the text table within [`TEXT_TABLE_F32_TOL`] (f32) or
/// [`TEXT_TABLE_F16_STEPS`] (f16). `hint` says how to refresh them.
pub fn assert_fresh(fresh: &Path, committed: &Path, hint: &str) {
    let f = Bundle::open(fresh).unwrap();
    let c = Bundle::open(committed).unwrap();
    let name = committed.display();
    if f.manifest.files[bundle::IMAGE_ENCODER] != c.manifest.files[bundle::IMAGE_ENCODER] {
        // tract's NNEF writer numbers a few helper nodes of an ONNX
        // export's attention in an order that changes from run to run:
        // such graphs must compute the same embeddings, bit for bit.
        assert_eq!(
            f.manifest.model.family,
            "onnx",
            "{name}/{} is stale: {hint}",
            bundle::IMAGE_ENCODER
        );
        for image in ["rgb_640x480.png", "l_129x400.png", "p_300x200.png"] {
            let img =
                clip_edge::decode::decode_file(&root().join("tests/fixtures/images").join(image))
                    .unwrap();
            let embed = |b: &Path| {
                let kind = clip_edge::engine::EngineKind::Native;
                let trust = clip_edge::bundle::Trust::default();
                let mut e = clip_edge::engine::Engine::load_on(b, &trust, kind, 1).unwrap();
                e.classify(&img.view(), 1).unwrap();
                e.embedding()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                embed(fresh),
                embed(committed),
                "{name}/{} is stale ({image} embeds otherwise): {hint}",
                bundle::IMAGE_ENCODER
            );
        }
    }
    assert_eq!(f.manifest.labels, c.manifest.labels, "{name}: labels");
    assert_eq!(
        f.manifest.templates, c.manifest.templates,
        "{name}: templates"
    );
    match (&f.table, &c.table) {
        (TableData::F32(a), TableData::F32(b)) => {
            assert_eq!(a.len(), b.len(), "{name}/{}: size", bundle::TEXT_TABLE);
            let worst = max_abs_diff(a, b);
            eprintln!("{name}: f32 text table max |rebuilt - committed| = {worst:e}");
            assert!(
                worst <= TEXT_TABLE_F32_TOL,
                "{name}/{} is stale: max difference {worst} > {TEXT_TABLE_F32_TOL} from a rebuild: {hint}",
                bundle::TEXT_TABLE
            );
        }
        (TableData::F16(a), TableData::F16(b)) => {
            assert_eq!(a.len(), b.len(), "{name}/{}: size", bundle::TEXT_TABLE);
            let worst = a
                .iter()
                .zip(b)
                .map(|(x, y)| f16_steps(*x, *y))
                .max()
                .unwrap_or(0);
            eprintln!("{name}: f16 text table max {worst} step(s) from the committed");
            assert!(
                worst <= TEXT_TABLE_F16_STEPS as u32,
                "{name}/{} is stale: {worst} f16 steps > {TEXT_TABLE_F16_STEPS} from a rebuild: {hint}",
                bundle::TEXT_TABLE
            );
        }
        _ => panic!("{name}/{}: table dtype changed: {hint}", bundle::TEXT_TABLE),
    }
}

/// How many representable f16 values apart `a` and `b` are (NaN: any).
pub fn f16_steps(a: half::f16, b: half::f16) -> u32 {
    if a.is_nan() || b.is_nan() {
        return u32::MAX;
    }
    // Sign-magnitude bits to a monotonic integer line.
    let line = |v: half::f16| {
        let bits = v.to_bits() as i32;
        if bits & 0x8000 != 0 {
            -(bits & 0x7fff)
        } else {
            bits
        }
    };
    line(a).abs_diff(line(b))
}
