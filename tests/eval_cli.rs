//! `clip-edge eval` as a process: the default bundles on the committed
//! held-out set of the synthetic world (issue 5's accuracy targets), and its
//! errors.

mod common;

use common::{bin, root, scratch};
use std::path::{Path, PathBuf};

/// The fp32 default bundle's zero-shot top-1 on the held-out set, at least.
const FP32_MIN_TOP1: f64 = 0.95;
/// int8 top-1 may trail fp32 by at most this (1 point).
const INT8_MAX_TOP1_DROP: f64 = 0.01;

fn eval_json(bundle: &str, images: &Path) -> serde_json::Value {
    let out = bin()
        .args(["eval", "--json", "--bundle"])
        .arg(root().join("models").join(bundle))
        .arg("--images")
        .arg(images)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn default_bundles_meet_the_accuracy_targets() {
    let set = root().join("models/synthetic/eval");
    let fp32 = eval_json("default-fp32", &set);
    let int8 = eval_json("default-int8", &set);
    for v in [&fp32, &int8] {
        assert_eq!(v["n"], 490);
        assert_eq!(v["per_class"].as_array().unwrap().len(), 49);
        assert_eq!(v["failed"].as_array().unwrap().len(), 0);
        assert!(v["top5"].as_f64().unwrap() >= v["top1"].as_f64().unwrap());
    }
    let (f, q) = (
        fp32["top1"].as_f64().unwrap(),
        int8["top1"].as_f64().unwrap(),
    );
    assert!(f >= FP32_MIN_TOP1, "fp32 top-1 {f} < {FP32_MIN_TOP1}");
    assert!(
        q >= f - INT8_MAX_TOP1_DROP,
        "int8 top-1 {q} trails fp32 {f} by more than {INT8_MAX_TOP1_DROP}"
    );
}

#[test]
fn a_bad_image_is_reported_and_the_rest_are_counted() {
    let d = scratch("bad");
    // Folders named as the label and with underscores both work.
    for (from, to) in [("red_star", "red star"), ("blue_circle", "blue_circle")] {
        std::fs::create_dir_all(d.join(to)).unwrap();
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(root().join("models/synthetic/eval").join(from))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
        files.sort();
        for p in &files[..2] {
            std::fs::copy(p, d.join(to).join(p.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(d.join("blue_circle/broken.png"), b"not a png").unwrap();
    let out = bin()
        .args(["eval", "--json", "--bundle"])
        .arg(root().join("models/default-int8"))
        .arg("--images")
        .arg(&d)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.png"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = v["n"].as_u64().unwrap();
    assert_eq!(n, 4, "{v}");
    assert_eq!(v["failed"].as_array().unwrap().len(), 1);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn unknown_folder_or_missing_dir_is_one_line_and_fails() {
    let d = scratch("unknown");
    std::fs::create_dir_all(d.join("pink_hexagon")).unwrap();
    for images in [d.clone(), d.join("missing")] {
        let out = bin()
            .args(["eval", "--bundle"])
            .arg(root().join("models/default-int8"))
            .arg("--images")
            .arg(&images)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(&*images.to_string_lossy()), "{err}");
    }
    std::fs::remove_dir_all(&d).unwrap();
}
