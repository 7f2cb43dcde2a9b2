//! `clip-edge` as a process on the committed bundles, against PyTorch.
//!
//! `tests/fixtures/bundles/vit_tiny_fp32` was built from the tiny ViT with the
//! reference prompts as labels and the template "{}", so the expected
//! probabilities are softmax(logit_scale · cos(encode_image, encode_text)) of
//! the PyTorch reference embeddings.

mod common;

use common::{bin, root, scratch};
use std::path::{Path, PathBuf};

/// fp32 bundle vs PyTorch: every probability. Measured at most 3.3e-7 on an
/// Intel Xeon (KVM, AVX-512 VNNI), kernels scalar, x86_64-avx2 and the
/// default (x86_64-avx512-vnni).
const FP32_PROB_TOL: f32 = 3e-6;
/// fp16 bundle (weights rounded to f16, f32 arithmetic) vs PyTorch fp32.
/// Measured at most 1.58e-4 on the same paths.
const FP16_PROB_TOL: f32 = 1.5e-3;
/// fp16 bundle vs PyTorch fp32: image embeddings, centred over the images
/// (`common::centred_cosines`). Measured at least 0.9999933 (scalar;
/// 0.9999942 on x86_64-avx2 and the default).
const FP16_MIN_CENTRED_COSINE: f32 = 0.99994;

fn npy(p: &Path) -> (Vec<usize>, Vec<f32>) {
    let a: ndarray::ArrayD<f32> = ndarray_npy::read_npy(p).unwrap();
    (a.shape().to_vec(), a.iter().copied().collect())
}

/// The PyTorch reference of `model` (`vit_tiny` or `rn_tiny`): prompts,
/// images and per image the probabilities over the prompts.
fn reference_probs(model: &str) -> (Vec<String>, Vec<PathBuf>, Vec<Vec<f32>>) {
    let refdir = root().join("tests/fixtures/reference");
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(refdir.join(format!("{model}.json"))).unwrap(),
    )
    .unwrap();
    let prompts: Vec<String> = meta["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().into())
        .collect();
    let images: Vec<PathBuf> = meta["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| root().join(v.as_str().unwrap()))
        .collect();
    let scale = meta["logit_scale"].as_f64().unwrap() as f32;
    let (s, img) = npy(&refdir.join(format!("{model}_image.npy")));
    let (_, txt) = npy(&refdir.join(format!("{model}_text.npy")));
    let e = s[1];
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let probs = img
        .chunks(e)
        .map(|i| {
            let mut l: Vec<f32> = txt
                .chunks(e)
                .map(|t| {
                    scale * i.iter().zip(t).map(|(a, b)| a * b).sum::<f32>() / (norm(i) * norm(t))
                })
                .collect();
            let m = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let z: f32 = l.iter().map(|x| (x - m).exp()).sum();
            l.iter_mut().for_each(|x| *x = (*x - m).exp() / z);
            l
        })
        .collect();
    (prompts, images, probs)
}

fn classify_json(
    bundle: &str,
    images: &[PathBuf],
    extra: &[&str],
) -> (std::process::Output, Vec<serde_json::Value>) {
    let out = bin()
        .args(["classify", "--json", "--top-k", "5", "--bundle"])
        .arg(root().join("tests/fixtures/bundles").join(bundle))
        .args(extra)
        .args(images)
        .output()
        .unwrap();
    let lines = String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out, lines)
}

/// Every reported probability of `bundle` within `tol` of PyTorch's `model`,
/// and the top-1 label PyTorch's.
fn assert_matches_reference(bundle: &str, model: &str, tol: f32, extra: &[&str]) {
    let (labels, images, probs) = reference_probs(model);
    let (out, lines) = classify_json(bundle, &images, extra);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lines.len(), images.len(), "{bundle}: one line per image");
    for (line, want) in lines.iter().zip(&probs) {
        let top = line["top"].as_array().unwrap();
        assert_eq!(top.len(), 5);
        for t in top {
            let label = t["label"].as_str().unwrap();
            let idx = labels.iter().position(|l| l == label).unwrap();
            let got = t["score"].as_f64().unwrap() as f32;
            assert!(
                (got - want[idx]).abs() <= tol,
                "{bundle} {label}: {got} vs {}",
                want[idx]
            );
        }
        assert_eq!(top[0]["label"].as_str().unwrap(), labels[top1(want)]);
        // Each stage ran, so took time: a zero, negative or non-finite
        // figure is a broken clock or a stage that was never timed.
        for k in ["decode", "preprocess", "encode", "score"] {
            let t = line["timings_ms"][k].as_f64().unwrap();
            assert!(t.is_finite() && t > 0.0, "{bundle} timings_ms.{k} = {t}");
        }
    }
}

fn top1(p: &[f32]) -> usize {
    p.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0
}

#[test]
fn fp32_bundle_matches_pytorch_probabilities() {
    assert_matches_reference("vit_tiny_fp32", "vit_tiny", FP32_PROB_TOL, &[]);
}

#[test]
fn fp16_bundle_matches_pytorch_probabilities() {
    assert_matches_reference("rn_tiny_fp16", "rn_tiny", FP16_PROB_TOL, &[]);
}

#[test]
fn fp16_bundle_embeddings_match_pytorch() {
    let (_, images, _) = reference_probs("rn_tiny");
    let (shape, want) = npy(&root().join("tests/fixtures/reference/rn_tiny_image.npy"));
    let want: Vec<Vec<f32>> = want.chunks(shape[1]).map(<[f32]>::to_vec).collect();
    let mut engine =
        clip_edge::engine::Engine::load(&root().join("tests/fixtures/bundles/rn_tiny_fp16"))
            .unwrap();
    let got: Vec<Vec<f32>> = images
        .iter()
        .map(|p| {
            let img = clip_edge::decode::decode_file(p).unwrap();
            engine.classify(&img.view(), 1).unwrap();
            engine.embedding().to_vec()
        })
        .collect();
    assert_eq!(got.len(), want.len());
    let cos = common::centred_cosines(&got, &want);
    eprintln!("rn_tiny_fp16 centred cosines to PyTorch: {cos:?}");
    assert!(cos.iter().all(|&c| c >= FP16_MIN_CENTRED_COSINE), "{cos:?}");
}

#[test]
fn int8_bundle_agrees_on_top1() {
    let (labels, images, probs) = reference_probs("vit_tiny");
    let (out, lines) = classify_json("vit_tiny_int8", &images, &["--threads", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lines.len(), images.len(), "one line per image");
    for (line, want) in lines.iter().zip(&probs) {
        assert_eq!(
            line["top"][0]["label"].as_str().unwrap(),
            labels[top1(want)]
        );
    }
}

#[test]
fn a_bad_image_is_reported_and_the_rest_classified() {
    let (_, images, _) = reference_probs("vit_tiny");
    let bad = scratch("bad-image").join("bad.png");
    std::fs::write(&bad, b"not an image").unwrap();
    let (out, lines) = classify_json(
        "vit_tiny_fp32",
        &[images[0].clone(), bad.clone(), images[1].clone()],
        &[],
    );
    assert!(!out.status.success());
    // One line per image, the bad one an error naming it.
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[1]["image"], bad.to_str().unwrap(), "{}", lines[1]);
    assert!(
        lines[1]["error"].as_str().unwrap().contains("image") && lines[1].get("top").is_none(),
        "{}",
        lines[1]
    );
    assert!(lines[0]["top"].is_array() && lines[2]["top"].is_array());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(bad.to_str().unwrap()) && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn user_errors_are_one_line() {
    for args in [
        vec!["classify", "--bundle", "/nonexistent", "x.png"],
        vec![
            "classify",
            "--threads",
            "0",
            "--bundle",
            "tests/fixtures/bundles/vit_tiny_fp32",
            "x.png",
        ],
        vec!["info", "--bundle", "/nonexistent"],
        vec![
            "bench",
            "--iterations",
            // Past the cap, and within a 32-bit usize (armv7).
            "2000000000",
            "--bundle",
            "models/default-int8",
        ],
    ] {
        let out = bin().current_dir(root()).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(out.stdout.is_empty());
        // With --json, the same line as JSON on stdout.
        let out = bin()
            .current_dir(root())
            .args(&args)
            .arg("--json")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            format!("error: {}", json["error"].as_str().unwrap()),
            err.trim(),
            "{args:?}"
        );
    }
}

#[test]
fn info_and_bench_report_json() {
    let b = root().join("tests/fixtures/bundles/vit_tiny_int8");
    let out = bin()
        .args(["info", "--json", "--bundle"])
        .arg(&b)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["checksums"], "ok");
    assert_eq!(v["precision"], "int8");

    let out = common::output_ok(
        bin()
            .args([
                "bench",
                "--json",
                "--iterations",
                "3",
                "--board",
                "rpi4",
                "--bundle",
            ])
            .arg(&b)
            .current_dir(root()),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Each stage ran, so took time; min ≤ p50 ≤ p90 ≤ p99 ≤ max; and as each
    // frame's total spans its stages, each quantile of the total is at
    // least that of every stage.
    let stages = ["preprocess", "encode", "score", "total"];
    let q = |k: &str| -> Vec<f64> {
        ["min", "p50", "p90", "p99", "max"]
            .iter()
            .map(|q| v["latency_ms"][k][q].as_f64().unwrap())
            .collect()
    };
    for k in stages {
        let qs = q(k);
        assert!(
            qs.iter().all(|t| t.is_finite() && *t > 0.0) && qs.windows(2).all(|w| w[0] <= w[1]),
            "latency_ms.{k} {qs:?}"
        );
        assert!(
            q("total").iter().zip(&qs).all(|(t, s)| t >= s),
            "latency_ms.total below {k}: {}",
            v["latency_ms"]
        );
    }
    // The steady state allocates nothing on the native engine (the default).
    assert_eq!(v["engine"], "native");
    assert_eq!(v["allocations_per_frame"]["preprocess"], 0.0);
    assert_eq!(v["allocations_per_frame"]["encode"], 0.0);
    assert_eq!(v["allocations_per_frame"]["score"], 0.0);
    assert!(v["native"]["ops"].as_object().unwrap().len() > 3);
    assert!(v["encoder_macs"].as_f64().unwrap() > 0.0);
    // The Pi 4's int8 peak (the bundle's precision on the native engine),
    // and a plain warning where this machine is not an aarch64 one.
    assert_eq!(v["board"]["peak_gflops"], 24.0);
    assert_eq!(v["board"]["peak_basis"], "int8 x 1 thread(s)");
    assert!(v["board"]["percent_of_peak"].as_f64().unwrap() > 0.0);
    let warning = v["board"]["warning"].as_str();
    assert_eq!(
        warning.is_none(),
        std::env::consts::ARCH == "aarch64",
        "{warning:?}"
    );
    if let Some(w) = warning {
        assert!(w.contains("the profile is for aarch64"), "{w}");
    }
    // The profiles are built in: `boards` lists them anywhere.
    let out = bin()
        .args(["boards"])
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.lines().any(|l| l.starts_with("rpi5 ")),
        "{text}"
    );
}

/// Standard output that cannot be written (a full disk under
/// `> result.json`): one line and exit status 1, never a success with the
/// output cut short.
#[test]
fn output_the_disk_refuses_is_an_error() {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let out = bin()
        .args(["info", "--json", "--bundle"])
        .arg(root().join("models/default-int8"))
        .stdout(full)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("writing to standard output"), "{err}");
}
