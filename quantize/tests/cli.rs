//! `clip-quantize` as a process: output formats, exit codes, nothing half-written.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `embed`'s image and text embeddings against PyTorch's (the fixture
/// reference), largest difference; measured 5.1e-7 (image), 1.0e-6 (text).
const EMBED_MAX_ABS: f32 = 1e-5;

#[path = "../../tests/common/command.rs"]
mod command;

/// `clip-quantize`, as built for these tests (through `$CLIP_TEST_RUNNER`
/// when set, logging errors only).
fn bin() -> Command {
    command::command(env!("CARGO_BIN_EXE_clip-quantize"))
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

#[path = "../../tests/common/scratch.rs"]
mod scratch_dirs;

/// An empty folder of this test process, removed when it exits.
fn outdir(name: &str) -> PathBuf {
    scratch_dirs::dir("clip-cli", name)
}

#[test]
fn tokenize_prints_rows_and_refuses_long_text() {
    let out = bin()
        .args(["tokenize", "a photo of a cat.", "a diagram"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let rows: Vec<Vec<u32>> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].len(), 77);
    assert_eq!(
        &rows[0][..8],
        &[49406, 320, 1125, 539, 320, 2368, 269, 49407]
    );

    let long = "many words ".repeat(60);
    let out = bin().args(["tokenize", &long]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("many words") && err.lines().count() == 1,
        "{err}"
    );

    let out = bin()
        .args(["tokenize", "--truncate", "--context-length", "16", &long])
        .output()
        .unwrap();
    assert!(out.status.success());
    let rows: Vec<Vec<u32>> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0].len(), 16);
    assert_eq!(rows[0][15], 49407);
}

#[test]
fn inspect_json_reports_the_architecture() {
    let ckpt = fixtures().join("models/rn_tiny_jit.pt");
    let out = bin()
        .args(["inspect", "--json"])
        .arg(&ckpt)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["format"], "OpenAiJit");
    assert_eq!(v["family"], "resnet");
    assert_eq!(v["config"]["image_resolution"], 64);
    assert_eq!(v["config"]["vision"]["heads"], 8);
    assert!(v["parameters"].as_u64().unwrap() > 4_000_000);
}

#[test]
fn preprocess_writes_npy_and_fails_cleanly() {
    let d = outdir("pre");
    let out_path = d.join("x.npy");
    let img = fixtures().join("images/rgb_97x301.png");
    let st = bin()
        .args(["preprocess", "--resolution", "32"])
        .arg(&img)
        .arg("--out")
        .arg(&out_path)
        .status()
        .unwrap();
    assert!(st.success());
    let a: ndarray::ArrayD<f32> = ndarray_npy::read_npy(&out_path).unwrap();
    assert_eq!(a.shape(), &[1, 3, 32, 32]);

    let bad = d.join("bad.npy");
    let out = bin()
        .args([
            "preprocess",
            "--resolution",
            "32",
            "/nonexistent.png",
            "--out",
        ])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.png"));
    assert!(!bad.exists());
}

#[test]
fn embed_writes_both_matrices() {
    let d = outdir("embed");
    let out = bin()
        .arg("embed")
        .arg("--checkpoint")
        .arg(fixtures().join("models/vit_tiny_sd.pt"))
        .arg("--image")
        .arg(fixtures().join("images/rgb_640x480.png"))
        .args([
            "--text",
            "a photo of a cat.",
            "--text",
            "a diagram",
            "--out-dir",
        ])
        .arg(&d)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let i: ndarray::ArrayD<f32> = ndarray_npy::read_npy(d.join("image_embeddings.npy")).unwrap();
    let t: ndarray::ArrayD<f32> = ndarray_npy::read_npy(d.join("text_embeddings.npy")).unwrap();
    assert_eq!(i.shape(), &[1, 32]);
    assert_eq!(t.shape(), &[2, 32]);
    // The reference: first image of the fixture set, first two prompts.
    let want_i: ndarray::ArrayD<f32> =
        ndarray_npy::read_npy(fixtures().join("reference/vit_tiny_image.npy")).unwrap();
    let want_t: ndarray::ArrayD<f32> =
        ndarray_npy::read_npy(fixtures().join("reference/vit_tiny_text.npy")).unwrap();
    for (g, w) in i.iter().zip(want_i.iter()) {
        assert!((g - w).abs() <= EMBED_MAX_ABS, "{g} vs {w}");
    }
    for (g, w) in t.iter().zip(want_t.iter().take(64)) {
        assert!((g - w).abs() <= EMBED_MAX_ABS, "{g} vs {w}");
    }

    // A bad image among inputs: error, and no output written.
    let d2 = outdir("embed-bad");
    let out = bin()
        .arg("embed")
        .arg("--checkpoint")
        .arg(fixtures().join("models/vit_tiny_sd.pt"))
        .args(["--image", "/nonexistent.png", "--text", "x", "--out-dir"])
        .arg(&d2)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!d2.join("text_embeddings.npy").exists());
}

#[test]
fn keygen_and_build_sign_a_bundle_that_clip_edge_verifies() {
    use clip_edge::bundle::{Bundle, Trust};
    use clip_edge::signature;
    let d = outdir("sign");
    let key = d.join("key");
    let out = bin().args(["keygen", "--out"]).arg(&key).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = d.join("key.pub");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "secret key mode {mode:o}");
    }
    // A second keygen never overwrites a key.
    let before = std::fs::read(&key).unwrap();
    let out = bin().args(["keygen", "--out"]).arg(&key).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to overwrite"));
    assert_eq!(std::fs::read(&key).unwrap(), before);

    let build = |sign: &Path, out_dir: &Path| {
        bin()
            .args(["build", "--precision", "fp32", "--checkpoint"])
            .arg(fixtures().join("models/vit_tiny_sd.pt"))
            .arg("--labels")
            .arg(fixtures().join("bundles/labels.txt"))
            .arg("--sign")
            .arg(sign)
            .arg("--out")
            .arg(out_dir)
            .output()
            .unwrap()
    };
    let out = build(&key, &d.join("b"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trust = Trust {
        require_signature: Some(signature::read_public_key(&public).unwrap()),
    };
    Bundle::open_with(&d.join("b"), &trust).unwrap();

    // A bad key fails the build before anything is written.
    let out = build(&d.join("nokey"), &d.join("b2"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nokey"));
    assert!(!d.join("b2").exists());
}

#[test]
fn synth_writes_its_folder_whole() {
    let d = outdir("synth");
    let out = bin()
        .args(["synth", "--seed", "3", "--per-class", "1", "--out"])
        .arg(d.join("s"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_dir(d.join("s")).unwrap().count(), 49);
    let names: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["s"], "no staging directory left");

    // A folder holding anything else is never replaced.
    std::fs::write(d.join("s/notes.txt"), b"mine").unwrap();
    let out = bin()
        .args(["synth", "--seed", "3", "--per-class", "1", "--out"])
        .arg(d.join("s"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("notes.txt"));
    assert_eq!(std::fs::read(d.join("s/notes.txt")).unwrap(), b"mine");
}

/// The files of `dir`, sorted, with their bytes.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn sections_adds_each_paths_section_and_refuses_what_it_cannot_do() {
    use clip_edge::bundle::{Bundle, Trust};
    use clip_edge::engine::native::section;
    let d = outdir("sections");
    let b = d.join("b");
    std::fs::create_dir_all(&b).unwrap();
    let committed = fixtures().join("bundles/vit_tiny_int8");
    for e in std::fs::read_dir(&committed).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), b.join(e.file_name())).unwrap();
    }
    let sections = |b: &Path, kernels: &str| {
        bin()
            .arg("sections")
            .arg(b)
            .args(["--kernels", kernels, "--json"])
            .output()
            .unwrap()
    };
    // The manifest's list after adding `kernels`, by path.
    let added = |kernels: &str| {
        let out = sections(&b, kernels);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let list: Vec<clip_edge::bundle::NativeSection> =
            serde_json::from_slice(&out.stdout).unwrap();
        let names: Vec<String> = list.iter().map(|n| n.kernels.clone()).collect();
        (list, names)
    };
    let (_, names) = added("aarch64-neon,armv7-neon");
    assert_eq!(names, ["aarch64-neon", "armv7-neon"]);
    // Again, with one more: replaced, not listed twice.
    let (list, names) = added("armv7-neon,aarch64-dotprod");
    assert_eq!(names, ["aarch64-neon", "armv7-neon", "aarch64-dotprod"]);
    let bundle = Bundle::open(&b).unwrap();
    assert_eq!(bundle.manifest.native, list);
    for n in &list {
        let bytes = std::fs::read(b.join(&n.file)).unwrap();
        assert_eq!(bytes.len() as u64, n.bytes, "{}", n.file);
        assert_eq!(
            section::digest_hex(&bytes).as_deref(),
            Some(n.blake3.as_str())
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(b.join(&n.file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o022, 0, "{}: mode {mode:o}", n.file);
    }
    // The graph is unchanged: the bundle's other files are as committed.
    for f in ["image_encoder.nnef.tgz", "text_table.safetensors"] {
        assert_eq!(
            std::fs::read(b.join(f)).unwrap(),
            std::fs::read(committed.join(f)).unwrap()
        );
    }

    // Refused, nothing changed: an unknown path, a signed bundle without
    // the key, a damaged encoder.
    let before = contents(&b);
    let out = sections(&b, "aarch64-neon,riscv64-v");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"riscv64-v\"") && err.contains("aarch64-i8mm"),
        "{err}"
    );
    let keygen = |key: &Path| {
        let ok = bin().args(["keygen", "--out"]).arg(key).status().unwrap();
        assert!(ok.success());
    };
    let key = d.join("key");
    keygen(&key);
    std::fs::write(b.join("manifest.sig"), "0").unwrap();
    let out = sections(&b, "scalar");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("manifest.sig") && err.contains("--sign"),
        "{err}"
    );
    std::fs::remove_file(b.join("manifest.sig")).unwrap();
    assert_eq!(contents(&b), before);
    let broken = d.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    for (name, bytes) in &before {
        std::fs::write(broken.join(name), bytes).unwrap();
    }
    std::fs::write(broken.join("image_encoder.nnef.tgz"), b"not a graph").unwrap();
    let out = sections(&broken, "scalar");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("image_encoder.nnef.tgz"), "{err}");
    assert_eq!(std::fs::read_dir(&broken).unwrap().count(), before.len());

    // A failure once every section is written (a folder where the first
    // one goes): nothing renamed into place, no temporary file left.
    std::fs::create_dir_all(b.join("native-scalar.section/x")).unwrap();
    let before = contents(&b);
    let out = sections(&b, "scalar,x86_64-avx2");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("native-scalar.section"), "{err}");
    assert_eq!(contents(&b), before);
    std::fs::remove_dir_all(b.join("native-scalar.section")).unwrap();

    // With --sign: the new manifest is signed, and clip-edge verifies it.
    let out = bin()
        .arg("sections")
        .arg(&b)
        .args(["--kernels", "scalar", "--sign"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trust = Trust {
        require_signature: Some(clip_edge::signature::read_public_key(&d.join("key.pub")).unwrap()),
    };
    let bundle = Bundle::open_with(&b, &trust).unwrap();
    assert_eq!(bundle.manifest.native.len(), 4);
    // Signed anew only what that key signed: not another key's bundle, nor
    // a manifest changed since it was signed.
    let other = d.join("other");
    keygen(&other);
    let resign = |key: &Path| {
        bin()
            .arg("sections")
            .arg(&b)
            .args(["--kernels", "scalar", "--sign"])
            .arg(key)
            .output()
            .unwrap()
    };
    let out = resign(&other);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not this key's signature"), "{err}");
    let text = std::fs::read_to_string(b.join("manifest.toml")).unwrap();
    std::fs::write(b.join("manifest.toml"), format!("{text}# changed\n")).unwrap();
    let out = resign(&key);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not this key's signature"), "{err}");
}

/// Values past what a command can do are one line naming the flag and its
/// range, before any allocation they would size, and nothing is written.
#[test]
fn values_out_of_range_are_named_before_any_work() {
    let d = outdir("ranges");
    let img = fixtures().join("images/rgb_97x301.png");
    let out = |args: &[&str]| {
        let o = bin().args(args).output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let npy = d.join("x.npy");
    let npy = npy.to_str().unwrap();
    let synth = d.join("synth");
    let synth = synth.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "preprocess",
                "--resolution",
                "100000",
                img.to_str().unwrap(),
                "--out",
                npy,
            ],
            "--resolution 100000: expected 1 to 4096",
        ),
        (
            vec!["tokenize", "--context-length", "1000000000000", "a photo"],
            "context length 1000000000000 is out of range",
        ),
        (
            vec!["synth", "--clip", "--size", "4000000000x48", "--out", synth],
            "clip frame 4000000000x48",
        ),
        (
            vec![
                "synth",
                "--per-class",
                "1",
                "--max-side",
                "2000",
                "--out",
                synth,
            ],
            "--max-side 2000: expected 48 to 512",
        ),
        (
            vec![
                "build",
                "--checkpoint",
                "/nonexistent.pt",
                "--labels",
                "/nonexistent.txt",
                "--precision",
                "auto",
                "--cosine-target",
                "1.5",
                "--out",
                synth,
            ],
            "--cosine-target 1.5",
        ),
    ];
    for (args, needle) in cases {
        let (code, err) = out(&args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
    assert!(!Path::new(npy).exists() && !Path::new(synth).exists());
}

/// `build`'s inputs and output as a user's files come: a folder that is
/// not a bundle (the input folder, a user's own) and a path under a file
/// are refused before any work and left as they were; a labels file with
/// a byte-order mark reads as its labels; a hidden file in the calibration
/// folder is not an image; a label too long for the text encoder is named
/// by file and line, shortly; a public key given to --sign is refused;
/// with --json a failure is JSON on stdout too.
#[test]
fn build_refuses_to_replace_what_it_did_not_write() {
    let d = outdir("out-place");
    let build = |labels: &Path, calibration: Option<&Path>, out_dir: &Path, extra: &[&str]| {
        let mut c = bin();
        c.args(["build", "--precision", "fp32", "--checkpoint"])
            .arg(fixtures().join("models/vit_tiny_sd.pt"))
            .arg("--labels")
            .arg(labels)
            .arg("--out")
            .arg(out_dir)
            .args(extra);
        if let Some(cal) = calibration {
            c.arg("--calibration").arg(cal);
        }
        let o = c.output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let labels = fixtures().join("bundles/labels.txt");
    // A folder of the user's: refused, kept.
    let precious = d.join("precious");
    std::fs::create_dir_all(&precious).unwrap();
    std::fs::write(precious.join("thesis.txt"), b"mine").unwrap();
    let (code, stdout, err) = build(&labels, None, &precious, &["--json"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("holds \"thesis.txt\"") && err.contains("refusing to replace it"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(
        json["error"].as_str().unwrap().contains("thesis.txt"),
        "{json}"
    );
    assert_eq!(std::fs::read(precious.join("thesis.txt")).unwrap(), b"mine");
    assert_eq!(std::fs::read_dir(&precious).unwrap().count(), 1);
    // Under a file: the file is named, once (no doubled OS message).
    let afile = d.join("afile");
    std::fs::write(&afile, b"important").unwrap();
    let (code, _, err) = build(&labels, None, &afile.join("b"), &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("afile: not a folder"), "{err}");
    assert_eq!(std::fs::read(&afile).unwrap(), b"important");
    // A byte-order mark, and a hidden file among the calibration images.
    let bom = d.join("bom.txt");
    let mut text = b"\xef\xbb\xbf".to_vec();
    text.extend(std::fs::read(&labels).unwrap());
    std::fs::write(&bom, &text).unwrap();
    let cal = d.join("cal");
    std::fs::create_dir_all(&cal).unwrap();
    for e in std::fs::read_dir(fixtures().join("../../models/calibration")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, cal.join(p.file_name().unwrap())).unwrap();
    }
    std::fs::write(cal.join(".DS_Store"), b"junk").unwrap();
    let b = d.join("b");
    let (code, _, err) = build(&bom, Some(&cal), &b, &[]);
    assert_eq!(code, Some(0), "{err}");
    let first = std::fs::read_to_string(&labels)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    let bundle = clip_edge::bundle::Bundle::open(&b).unwrap();
    assert_eq!(bundle.labels()[0], first);
    // An earlier bundle is replaced.
    let (code, _, err) = build(&labels, Some(&cal), &b, &[]);
    assert_eq!(code, Some(0), "{err}");
    // A label too long: the file, its line, the start of the label.
    let long = d.join("long.txt");
    std::fs::write(&long, format!("cat\n{}\n", "word ".repeat(2000))).unwrap();
    let (code, _, err) = build(&long, Some(&cal), &d.join("b3"), &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("{}:2: with template", long.display())),
        "{err}"
    );
    assert!(
        err.len() < 400 && err.contains("more than the context length"),
        "{err}"
    );
    // The public half of a key.
    let key = d.join("key");
    let o = bin().args(["keygen", "--out"]).arg(&key).output().unwrap();
    assert!(o.status.success());
    let (code, _, err) = build(
        &labels,
        Some(&cal),
        &d.join("b4"),
        &["--sign", d.join("key.pub").to_str().unwrap()],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("this is a public key"), "{err}");
    assert!(!d.join("b3").exists() && !d.join("b4").exists());
}
