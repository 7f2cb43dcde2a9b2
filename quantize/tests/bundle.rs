//! `clip-quantize build` → bundle → `clip_edge::bundle::Bundle::open`.

mod common;

use common::{root, scratch};
use std::path::{Path, PathBuf};

use clip_edge::bundle::{self, Bundle, BundleError, TableData};
use clip_edge::tract_graph;
use clip_quantize::bundle::{build, BuildOptions, Requested};
use clip_quantize::graph::{ActivationQuant, Precision};
use tract_core::prelude::*;

/// fp32 bundle vs fp32 graph: least image-embedding cosine. Measured
/// 1.000000000 (printed to 9 places) on an Intel Xeon (KVM, AVX-512 VNNI).
const FP32_MIN_COSINE: f64 = 0.99999999;
/// fp16 bundle vs fp32 graph: mean image-embedding cosine. Measured at least
/// 0.999999985 (vit_tiny).
const FP16_MIN_COSINE: f64 = 0.99999985;
/// int8 bundle vs fp32 graph (random-weight tiny models): mean cosine.
/// Measured at least 0.9998965 (rn_tiny, dynamic per-token activations;
/// 0.9999637 with static per-tensor ones).
const INT8_MIN_MEAN_COSINE: f64 = 0.999;
/// int8: top-1 zero-shot agreement with fp32 on the 9 calibration images,
/// at least 8 of them. Measured 9 of 9.
const INT8_MIN_AGREEMENT: f64 = 8.0 / 9.0;
/// `auto` (int8 where its accuracy report allows, else fp16) vs the fp32
/// graph: mean cosine. Measured at least 0.99990 (rn_tiny).
const AUTO_MIN_MEAN_COSINE: f64 = 0.999;
/// An fp32 text-table entry vs PyTorch's normalised text embedding.
/// Measured at most 3.3e-7.
const TEXT_TABLE_TOL: f32 = 3e-6;

fn labels_file(dir: &Path, labels: &[&str]) -> PathBuf {
    let p = dir.join("labels.txt");
    std::fs::write(&p, labels.join("\n") + "\n").unwrap();
    p
}

fn opts(ckpt: &str, precision: Requested, labels: PathBuf, out: PathBuf) -> BuildOptions {
    common::build_options(
        root().join("tests/fixtures/models").join(ckpt),
        precision,
        labels,
        out,
    )
}

#[test]
fn bundles_at_every_precision_meet_their_targets() {
    for ckpt in ["vit_tiny_jit.pt", "rn_tiny_sd.pt"] {
        let d = scratch(&format!("all-{ckpt}"));
        let labels = labels_file(&d, &["cat", "dog", "a diagram", "a red square"]);
        for (name, p) in [
            ("fp32", Requested::Fixed(Precision::Fp32)),
            ("fp16", Requested::Fixed(Precision::Fp16)),
            ("int8", Requested::Fixed(Precision::Int8)),
            ("auto", Requested::Auto),
        ] {
            let out = d.join(name);
            let report = build(&opts(ckpt, p, labels.clone(), out.clone())).unwrap();
            let s = &report.summary;
            eprintln!(
                "{ckpt} {name}: cos mean {:.9} p1 {:.9} min {:.9} agree {:.3} bytes {}",
                s.cosine_mean, s.cosine_p1, s.cosine_min, s.top1_agreement, report.bundle_bytes
            );
            match name {
                "fp32" => assert!(s.cosine_min >= FP32_MIN_COSINE, "{ckpt} fp32 {s:?}"),
                "fp16" => assert!(s.cosine_mean >= FP16_MIN_COSINE, "{ckpt} fp16 {s:?}"),
                "int8" => {
                    assert!(s.cosine_mean >= INT8_MIN_MEAN_COSINE, "{ckpt} int8 {s:?}");
                    assert!(s.top1_agreement >= INT8_MIN_AGREEMENT, "{ckpt} int8 {s:?}");
                }
                _ => assert!(s.cosine_mean >= AUTO_MIN_MEAN_COSINE, "{ckpt} auto {s:?}"),
            }
            let b = Bundle::open(&out).unwrap();
            assert_eq!(b.manifest.labels.len(), 4);
            assert_eq!(b.manifest.precision, name);
            assert_eq!(b.manifest.report, *s);
            assert!(!b.manifest.layers.is_empty());
            match (&b.table, name) {
                (TableData::F32(t), "fp32") => assert_eq!(t.len(), 4 * b.manifest.model.embed_dim),
                (TableData::F16(t), "fp16" | "int8" | "auto") => {
                    assert_eq!(t.len(), 4 * b.manifest.model.embed_dim)
                }
                (t, n) => panic!("{n}: table {t:?}"),
            }
            // The board's path: load the NNEF, run it.
            let model = tract_graph::load_nnef(&b.image_encoder_path()).unwrap();
            let plan = tract_graph::into_plan(model).unwrap();
            let r = b.manifest.preprocess.resolution as usize;
            let out =
                tract_graph::run_f32(&plan, Tensor::zero::<f32>(&[1, 3, r, r]).unwrap()).unwrap();
            assert_eq!(out.len(), b.manifest.model.embed_dim);
            assert!(out.iter().all(|v| v.is_finite()));
            let layer_precisions: Vec<&str> = b
                .manifest
                .layers
                .iter()
                .map(|l| l.precision.as_str())
                .collect();
            match name {
                "fp32" => assert!(layer_precisions.iter().all(|p| *p == "fp32")),
                "fp16" => assert!(layer_precisions.iter().all(|p| *p == "fp16")),
                "int8" => assert!(layer_precisions.iter().all(|p| *p == "int8")),
                // Random weights tolerate int8 (README): an auto search
                // that ends all-fp16 has failed, whatever its cosine.
                _ => assert!(
                    layer_precisions.contains(&"int8"),
                    "{ckpt} auto kept every layer in fp16"
                ),
            }
        }
    }
}

#[test]
fn static_activations_use_calibrated_scales() {
    let d = scratch("static");
    let labels = labels_file(&d, &["cat", "dog"]);
    let mut o = opts(
        "vit_tiny_sd.pt",
        Requested::Fixed(Precision::Int8),
        labels,
        d.join("b"),
    );
    o.activation = ActivationQuant::StaticPerTensor;
    let r = build(&o).unwrap();
    assert!(
        r.summary.cosine_mean >= INT8_MIN_MEAN_COSINE,
        "{:?}",
        r.summary
    );
    assert_eq!(
        Bundle::open(&d.join("b")).unwrap().manifest.activation,
        "static_per_tensor"
    );
}

#[test]
fn text_table_is_the_normalised_reference_embedding() {
    // One template "{}" and the reference prompts as labels: each row is the
    // L2-normalised PyTorch encode_text of that prompt.
    let d = scratch("table");
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/reference/vit_tiny.json")).unwrap(),
    )
    .unwrap();
    let prompts: Vec<&str> = meta["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let labels = labels_file(&d, &prompts);
    let templates = d.join("templates.txt");
    std::fs::write(&templates, "{}\n").unwrap();
    let mut o = opts(
        "vit_tiny_jit.pt",
        Requested::Fixed(Precision::Fp32),
        labels,
        d.join("b"),
    );
    o.templates = Some(templates);
    build(&o).unwrap();
    let b = Bundle::open(&d.join("b")).unwrap();
    let TableData::F32(table) = b.table else {
        panic!("fp32 table")
    };
    let want: ndarray::ArrayD<f32> =
        ndarray_npy::read_npy(root().join("tests/fixtures/reference/vit_tiny_text.npy")).unwrap();
    let e = b.manifest.model.embed_dim;
    for (i, row) in want.as_slice().unwrap().chunks(e).enumerate() {
        let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        for (a, w) in table[i * e..(i + 1) * e].iter().zip(row) {
            assert!(
                (a - w / n).abs() <= TEXT_TABLE_TOL,
                "row {i}: {a} vs {}",
                w / n
            );
        }
    }
    // Measured equal; a few f32 steps allow another platform's `exp`.
    let want = meta["logit_scale"].as_f64().unwrap() as f32;
    assert!(
        (b.manifest.logit_scale - want).abs() <= 4.0 * f32::EPSILON * want,
        "logit_scale {} vs {want}",
        b.manifest.logit_scale
    );
}

#[test]
fn failed_builds_leave_the_old_bundle_alone() {
    let d = scratch("atomic");
    let good = labels_file(&d, &["cat", "dog"]);
    let out = d.join("b");
    build(&opts(
        "vit_tiny_sd.pt",
        Requested::Fixed(Precision::Fp16),
        good,
        out.clone(),
    ))
    .unwrap();
    let before = std::fs::read(out.join(bundle::MANIFEST)).unwrap();

    let bad = d.join("bad.txt");
    std::fs::write(&bad, "cat\n\ndog\n").unwrap();
    let e = build(&opts(
        "vit_tiny_sd.pt",
        Requested::Fixed(Precision::Int8),
        bad.clone(),
        out.clone(),
    ))
    .unwrap_err();
    assert!(e.to_string().contains("bad.txt:2"), "{e}");
    std::fs::write(&bad, "cat\ndog\ncat\n").unwrap();
    let e = build(&opts(
        "vit_tiny_sd.pt",
        Requested::Fixed(Precision::Int8),
        bad,
        out.clone(),
    ))
    .unwrap_err();
    assert!(
        e.to_string().contains(":3") && e.to_string().contains("line 1"),
        "{e}"
    );

    let empty = scratch("empty-calib");
    let mut o = opts(
        "vit_tiny_sd.pt",
        Requested::Fixed(Precision::Int8),
        d.join("labels.txt"),
        out.clone(),
    );
    o.calibration = empty.clone();
    let e = build(&o).unwrap_err();
    assert!(e.to_string().contains(empty.to_str().unwrap()), "{e}");

    std::fs::write(empty.join("broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let e = build(&o).unwrap_err();
    assert!(e.to_string().contains("broken.png"), "{e}");

    // More calibration images than a build holds in memory: refused by
    // count, before any is read.
    let many = scratch("many-calib");
    for i in 0..=clip_quantize::bundle::MAX_CALIBRATION_IMAGES {
        std::fs::write(many.join(format!("{i:05}.png")), b"").unwrap();
    }
    o.calibration = many.clone();
    let e = build(&o).unwrap_err().to_string();
    assert!(
        e.contains(many.to_str().unwrap()) && e.contains("1001 calibration images, at most 1000"),
        "{e}"
    );

    assert_eq!(std::fs::read(out.join(bundle::MANIFEST)).unwrap(), before);
    let leftovers: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".b."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    Bundle::open(&out).unwrap();
}

#[test]
fn bad_bundles_are_refused_with_a_reason() {
    let d = scratch("refuse");
    let labels = labels_file(&d, &["cat", "dog"]);
    let out = d.join("b");
    build(&opts(
        "rn_tiny_jit.pt",
        Requested::Fixed(Precision::Fp32),
        labels,
        out.clone(),
    ))
    .unwrap();
    let copy = |name: &str| {
        let c = d.join(name);
        std::fs::create_dir_all(&c).unwrap();
        for f in std::fs::read_dir(&out).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, c.join(f.file_name().unwrap())).unwrap();
        }
        c
    };

    let c = copy("missing");
    std::fs::remove_file(c.join(bundle::IMAGE_ENCODER)).unwrap();
    let e = Bundle::open(&c).unwrap_err();
    assert!(matches!(e, BundleError::Missing { .. }), "{e}");
    assert!(e.to_string().contains(bundle::IMAGE_ENCODER));

    let c = copy("checksum");
    let p = c.join(bundle::TEXT_TABLE);
    let mut bytes = std::fs::read(&p).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&p, bytes).unwrap();
    let e = Bundle::open(&c).unwrap_err();
    assert!(matches!(e, BundleError::Checksum { .. }), "{e}");

    let c = copy("newer");
    let m = c.join(bundle::MANIFEST);
    let text = std::fs::read_to_string(&m)
        .unwrap()
        .replace("format_version = 1", "format_version = 99");
    std::fs::write(&m, text).unwrap();
    let e = Bundle::open(&c).unwrap_err();
    assert!(
        matches!(e, BundleError::NewerFormat { found: 99, .. }),
        "{e}"
    );

    let c = copy("labels");
    let m = c.join(bundle::MANIFEST);
    let text = std::fs::read_to_string(&m).unwrap().replace(
        "labels = [\"cat\", \"dog\"]",
        "labels = [\"cat\", \"dog\", \"bird\"]",
    );
    std::fs::write(&m, &text).unwrap();
    // The manifest disagrees with itself ([table] rows = 2)...
    let e = Bundle::open(&c).unwrap_err();
    assert!(matches!(e, BundleError::Manifest { .. }), "{e}");
    assert!(e.to_string().contains("3 labels"), "{e}");
    // ...and, made consistent, with the table file.
    std::fs::write(&m, text.replace("rows = 2", "rows = 3")).unwrap();
    let e = Bundle::open(&c).unwrap_err();
    assert!(matches!(e, BundleError::Table { .. }), "{e}");
    assert!(e.to_string().contains("3 labels"), "{e}");

    let e = Bundle::open(&d.join("nonexistent")).unwrap_err();
    assert!(matches!(e, BundleError::NoFolder { .. }), "{e}");
    assert!(
        e.to_string()
            .ends_with("nonexistent: no such bundle folder"),
        "{e}"
    );
}

#[test]
fn tract_version_in_manifest_matches_the_pin() {
    let cargo = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    assert!(cargo.contains(&format!(
        "tract-core = \"={}\"",
        clip_quantize::bundle::TRACT_VERSION
    )));
}

#[test]
fn committed_test_bundles_are_fresh() {
    // Rebuild what scripts/build-fixture-bundles wrote; graphs and tables must match.
    let dir = root().join("tests/fixtures/bundles");
    for (ckpt, name, p) in [
        ("vit_tiny_jit.pt", "vit_tiny_fp32", Precision::Fp32),
        ("vit_tiny_jit.pt", "vit_tiny_int8", Precision::Int8),
        ("rn_tiny_jit.pt", "rn_tiny_fp16", Precision::Fp16),
        (
            "../onnx/mobileclip_tiny",
            "mobileclip_tiny_int8",
            Precision::Int8,
        ),
    ] {
        let d = scratch(&format!("fresh-{name}"));
        let mut o = opts(
            ckpt,
            Requested::Fixed(p),
            dir.join("labels.txt"),
            d.join(name),
        );
        o.templates = Some(dir.join("templates.txt"));
        build(&o).unwrap();
        common::assert_fresh(
            &d.join(name),
            &dir.join(name),
            "run scripts/build-fixture-bundles",
        );
    }
}

#[test]
fn eval_folder_reports_zero_shot_accuracy() {
    let d = scratch("eval");
    let labels = labels_file(&d, &["cat", "dog"]);
    let calib = root().join("models/calibration");
    for (label, files) in [
        ("cat", ["rgb_640x480.png", "l_129x400.png"]),
        ("dog", ["p_300x200.png", "rgb_97x301.png"]),
    ] {
        std::fs::create_dir_all(d.join("eval").join(label)).unwrap();
        for f in files {
            std::fs::copy(calib.join(f), d.join("eval").join(label).join(f)).unwrap();
        }
    }
    let mut o = opts(
        "rn_tiny_sd.pt",
        Requested::Fixed(Precision::Int8),
        labels,
        d.join("b"),
    );
    o.eval = Some(d.join("eval"));
    let r = build(&o).unwrap();
    assert_eq!(r.summary.images, 4);
    let (q, f) = (
        r.summary.zero_shot_top1.unwrap(),
        r.summary.zero_shot_top1_fp32.unwrap(),
    );
    assert_eq!(r.per_image.len(), 4);
    // The reported accuracy is what the board gets with the bundle it wrote.
    let mut engine = clip_edge::engine::Engine::load(&d.join("b")).unwrap();
    let labels = engine.bundle.labels().to_vec();
    let images = clip_edge::eval::list_labelled(&d.join("eval"), &labels).unwrap();
    assert_eq!(images.len(), 4);
    let mut right = 0;
    for (path, truth) in &images {
        let img = clip_edge::decode::decode_file(path).unwrap();
        engine.classify(&img.view(), 1).unwrap();
        right += usize::from(engine.top()[0].0 == *truth);
    }
    assert_eq!(q, right as f64 / 4.0, "reported top-1 vs the bundle's");
    assert!(
        [0.0, 0.25, 0.5, 0.75, 1.0].contains(&f),
        "fp32 top-1 {f} is not a count of 4 images"
    );

    // An eval image that does not decode fails the build before any
    // graph runs (the eval set is read again on each pass, not held).
    std::fs::write(
        d.join("eval/dog/broken.png"),
        b"\x89PNG\r\n\x1a\nnot really",
    )
    .unwrap();
    let e = build(&o).unwrap_err().to_string();
    assert!(e.contains("broken.png"), "{e}");
    std::fs::remove_file(d.join("eval/dog/broken.png")).unwrap();

    std::fs::create_dir_all(d.join("eval/bird")).unwrap();
    std::fs::copy(calib.join("rgb_17x13.png"), d.join("eval/bird/x.png")).unwrap();
    let e = build(&o).unwrap_err().to_string();
    assert!(
        e.contains("bird") && e.contains("not one of the labels"),
        "{e}"
    );
}
