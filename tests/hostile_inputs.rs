//! Hostile files never crash the runtime, never make it read outside a
//! bundle or without bound, and are refused with one line naming them.
//! Each case here was found by trying it (docs/security.md).

mod common;

use std::path::{Path, PathBuf};

use clip_edge::bundle::{Bundle, BundleError, Trust, MANIFEST, TEXT_TABLE};
use clip_edge::decode::{decode_bytes, DecodeError, MAX_IMAGE_PIXELS};
use clip_edge::engine::Engine;
use clip_edge::signature;
use common::{bin, root, scratch};

/// A copy of the committed fp32 tiny-ViT bundle to tamper with.
fn bundle_copy(name: &str) -> PathBuf {
    let src = root().join("tests/fixtures/bundles/vit_tiny_fp32");
    let d = scratch(name).join("bundle");
    std::fs::create_dir_all(&d).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, d.join(p.file_name().unwrap())).unwrap();
    }
    d
}

fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut toml::Table)) {
    let p = dir.join(MANIFEST);
    let mut t: toml::Table = toml::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    edit(&mut t);
    std::fs::write(&p, toml::to_string(&t).unwrap()).unwrap();
}

fn open_err(dir: &Path) -> String {
    let e = Bundle::open(dir).unwrap_err().to_string();
    assert!(!e.contains('\n'), "one line: {e}");
    e
}

/// A PNG of a few bytes whose header declares `w` x `h` RGBA.
fn png_declaring(w: u32, h: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(kind);
        h.update(data);
        out.extend(kind);
        out.extend(data);
        out.extend(h.finalize().to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 6, 0, 0, 0]); // 8-bit RGBA, deflate, no interlace
    chunk(&mut out, b"IHDR", &ihdr);
    // One zlib stream of a few zero rows: far less than the header declares.
    chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9c, 0x63, 0x60, 0, 0, 0, 2, 0, 1],
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

#[test]
fn huge_declared_images_are_refused_before_allocating() {
    for (w, h) in [(60_000, 60_000), (30_000, 30_000), (u32::MAX >> 1, 2)] {
        let e = decode_bytes(&png_declaring(w, h), Path::new("huge.png")).unwrap_err();
        assert!(matches!(e, DecodeError::Unsupported { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("huge.png") && msg.contains(&MAX_IMAGE_PIXELS.to_string()),
            "{msg}"
        );
    }
    // Within the limit the same header is only a truncated image.
    let e = decode_bytes(&png_declaring(64, 64), Path::new("small.png")).unwrap_err();
    assert!(matches!(e, DecodeError::Decode { .. }), "{e}");
}

#[test]
fn a_huge_png_is_reported_and_the_rest_of_the_batch_classified() {
    let d = scratch("huge-png");
    let bad = d.join("bomb.png");
    std::fs::write(&bad, png_declaring(60_000, 60_000)).unwrap();
    let good = root().join("models/calibration/rgb_640x480.png");
    let out = bin()
        .args(["classify", "--json", "--bundle"])
        .arg(root().join("models/default-int8"))
        .arg(&bad)
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "exit status, not a signal");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bomb.png") && stderr.contains("pixels"),
        "{stderr}"
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "a line per image: {stdout}");
    assert!(
        lines[0]["error"].as_str().unwrap().contains("pixels"),
        "{stdout}"
    );
    assert!(lines[1]["image"]
        .as_str()
        .unwrap()
        .ends_with("rgb_640x480.png"));
    assert!(lines[1]["top"].is_array(), "the good image: {stdout}");
}

#[test]
fn bundle_files_must_be_plain_names_inside_the_bundle() {
    for name in [
        "../../../../dev/zero",
        "/dev/zero",
        "sub/file",
        "..",
        ".hidden",
        "",
        MANIFEST,
    ] {
        let d = bundle_copy("names");
        edit_manifest(&d, |t| {
            t["files"]
                .as_table_mut()
                .unwrap()
                .insert(name.into(), "00".into());
        });
        let e = open_err(&d);
        assert!(e.contains("plain file name"), "{name:?}: {e}");
    }
}

#[test]
fn listed_native_sections_must_be_plain_names_with_digests_listed_once() {
    let sized = |kernels: &str, file: &str, blake3: &str, bytes: i64| {
        let mut e = toml::Table::new();
        e.insert("kernels".into(), kernels.into());
        e.insert("file".into(), file.into());
        e.insert("bytes".into(), bytes.into());
        e.insert("blake3".into(), blake3.into());
        toml::Value::Table(e)
    };
    let entry = |kernels: &str, file: &str, blake3: &str| sized(kernels, file, blake3, 64);
    let good = "ab".repeat(32);
    let cases = [
        (
            vec![entry("scalar", "../../etc/passwd", &good)],
            "plain file name",
        ),
        (vec![entry("scalar", MANIFEST, &good)], "plain file name"),
        (vec![entry("scalar", TEXT_TABLE, &good)], "plain file name"),
        (vec![entry("scalar", "s.section", "zz")], "64 hex digits"),
        (
            vec![entry("scal\u{1b}[2Jar", "s.section", &good)],
            "kernel path's name",
        ),
        (
            vec![
                entry("scalar", "a.section", &good),
                entry("scalar", "b.section", &good),
            ],
            "twice",
        ),
        (
            (0..33)
                .map(|i| entry(&format!("k{i}"), &format!("{i}.section"), &good))
                .collect(),
            "at most 32",
        ),
        (
            vec![sized("scalar", "s.section", &good, 1 << 40)],
            "bytes = 1099511627776",
        ),
    ];
    for (entries, want) in cases {
        let d = bundle_copy("native");
        edit_manifest(&d, |t| {
            t.insert("native".into(), toml::Value::Array(entries));
        });
        let e = open_err(&d);
        assert!(e.contains(want) && e.contains(MANIFEST), "{want}: {e}");
    }
}

#[test]
fn bundle_files_must_be_regular_files() {
    let d = bundle_copy("symlink");
    std::fs::rename(d.join(TEXT_TABLE), d.join("elsewhere")).unwrap();
    std::os::unix::fs::symlink(d.join("elsewhere"), d.join(TEXT_TABLE)).unwrap();
    let e = open_err(&d);
    assert!(e.contains(TEXT_TABLE) && e.contains("symbolic link"), "{e}");

    let d = bundle_copy("dir");
    std::fs::remove_file(d.join(TEXT_TABLE)).unwrap();
    std::fs::create_dir(d.join(TEXT_TABLE)).unwrap();
    let e = open_err(&d);
    assert!(e.contains("a directory"), "{e}");
}

#[test]
fn every_file_read_is_covered_by_a_checksum() {
    let d = bundle_copy("uncovered");
    std::fs::copy(d.join(TEXT_TABLE), d.join("other.safetensors")).unwrap();
    edit_manifest(&d, |t| {
        t["table"]["file"] = "other.safetensors".into();
    });
    let e = open_err(&d);
    assert!(e.contains("no checksum for `other.safetensors`"), "{e}");
}

#[test]
fn manifest_values_are_validated() {
    type Edit = fn(&mut toml::Table);
    let cases: [(&str, Edit); 6] = [
        ("format_version = 0", |t| {
            t["format_version"] = 0.into();
        }),
        ("format_version = -3", |t| {
            t["format_version"] = (-3).into();
        }),
        ("embed_dim = 0", |t| {
            t["model"]["embed_dim"] = 0.into();
        }),
        ("resolution = 65536", |t| {
            t["preprocess"]["resolution"] = 65536.into();
        }),
        ("logit_scale = -1", |t| {
            t["logit_scale"] = (-1.0).into();
        }),
        ("table is [", |t| {
            t["table"]["rows"] = 1.into();
        }),
    ];
    for (want, edit) in cases {
        let d = bundle_copy("values");
        edit_manifest(&d, edit);
        let e = open_err(&d);
        assert!(e.contains(want) && e.contains(MANIFEST), "{want}: {e}");
    }
    // A version past u32 is reported whole, as newer.
    let d = bundle_copy("version");
    edit_manifest(&d, |t| t["format_version"] = (1i64 << 40).into());
    let e = Bundle::open(&d).unwrap_err();
    assert!(matches!(e, BundleError::NewerFormat { .. }), "{e}");
    assert!(e.to_string().contains(&(1i64 << 40).to_string()), "{e}");
}

#[test]
fn the_graph_output_must_match_embed_dim() {
    // A consistent manifest and table of dimension 8 around an encoder that
    // outputs the tiny ViT's dimension.
    let d = bundle_copy("outdim");
    let labels = Bundle::open(&d).unwrap().manifest.labels.len();
    let data = vec![0u8; labels * 8 * 4];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![labels, 8], &data)
            .unwrap();
    let bytes = safetensors::serialize([("text_table", view)], None).unwrap();
    std::fs::write(d.join(TEXT_TABLE), &bytes).unwrap();
    edit_manifest(&d, |t| {
        t["model"]["embed_dim"] = 8.into();
        t["table"]["dim"] = 8.into();
        t["files"][TEXT_TABLE] = clip_edge::bundle::sha256_hex(&bytes).into();
    });
    Bundle::open(&d).unwrap();
    let e = Engine::load(&d).err().unwrap().to_string();
    assert!(e.contains("embed_dim is 8"), "{e}");
}

#[test]
fn absurd_flags_are_one_line_errors() {
    let image = root().join("models/calibration/rgb_640x480.png");
    let image = image.to_str().unwrap();
    for args in [
        vec!["classify", "--threads", "100000", image],
        vec!["classify", "--threads", "0", image],
        vec!["eval", "--threads", "100000", "--images", "x"],
        vec!["bench", "--threads", "100000", "--iterations", "1"],
    ] {
        let out = bin()
            .args(&args)
            .arg("--bundle")
            .arg(root().join("models/default-int8"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains("--threads"), "{stderr}");
    }
    let out = bin()
        .args(["preprocess", "--resolution", "65536"])
        .arg(root().join("models/calibration/rgb_640x480.png"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("65536"), "{stderr}");
}

fn write_key(dir: &Path, seed: u8) -> (signature::SigningKey, PathBuf) {
    let key = signature::SigningKey::from_bytes(&[seed; 32]);
    let p = dir.join(format!("key{seed}.pub"));
    std::fs::write(&p, signature::key_file(&key.verifying_key().to_bytes())).unwrap();
    (key, p)
}

fn sign_bundle(dir: &Path, key: &signature::SigningKey) {
    let m = std::fs::read(dir.join(MANIFEST)).unwrap();
    std::fs::write(dir.join(signature::SIGNATURE), signature::sign(key, &m)).unwrap();
}

fn trust(pubkey: &Path) -> Trust {
    Trust {
        require_signature: Some(signature::read_public_key(pubkey).unwrap()),
    }
}

#[test]
fn a_required_signature_refuses_unsigned_tampered_and_foreign_bundles() {
    let d = bundle_copy("signed");
    let keys = d.parent().unwrap().to_path_buf();
    let (key, pubkey) = write_key(&keys, 1);
    let (_, other) = write_key(&keys, 2);

    let e = Bundle::open_with(&d, &trust(&pubkey))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unsigned"), "{e}");
    Bundle::open(&d).unwrap();

    sign_bundle(&d, &key);
    Bundle::open_with(&d, &trust(&pubkey)).unwrap();
    let e = Bundle::open_with(&d, &trust(&other))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("manifest.sig") && e.contains("does not match"),
        "{e}"
    );

    // A changed label keeps every checksum valid but breaks the signature.
    edit_manifest(&d, |t| t["labels"][0] = "a photo of a bomb.".into());
    let e = Bundle::open_with(&d, &trust(&pubkey))
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not match"), "{e}");

    // The command line: one line, exit 1.
    sign_bundle(&d, &key);
    let run = |k: &Path| {
        bin()
            .args(["info", "--bundle"])
            .arg(&d)
            .arg("--require-signature")
            .arg(k)
            .output()
            .unwrap()
    };
    assert!(run(&pubkey).status.success());
    let out = run(&other);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("does not match"), "{stderr}");
    let out = run(&d.join(MANIFEST));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not an ed25519 public key"), "{stderr}");
    // The secret half of a pair, KEY beside KEY.pub (as keygen writes
    // them), named as such.
    let secret = keys.join("key1");
    std::fs::write(&secret, signature::key_file(&key.to_bytes())).unwrap();
    let out = run(&secret);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("this is a secret key") && stderr.contains("key1.pub"),
        "{stderr}"
    );
}

#[test]
fn a_checksummed_garbage_encoder_is_one_printable_line() {
    let d = bundle_copy("garbage");
    // Bytes that tract's tar reader quotes back in its error.
    let bytes: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(d.join(clip_edge::bundle::IMAGE_ENCODER), &bytes).unwrap();
    edit_manifest(&d, |t| {
        t["files"][clip_edge::bundle::IMAGE_ENCODER] = clip_edge::bundle::sha256_hex(&bytes).into();
    });
    let e = Engine::load(&d).err().unwrap().to_string();
    assert!(e.contains(clip_edge::bundle::IMAGE_ENCODER), "{e}");
    assert!(!e.chars().any(|c| c.is_control()), "{e:?}");
    assert!(e.chars().count() < 400, "{e}");
}

#[test]
fn pipes_and_devices_are_refused_without_blocking() {
    let d = bundle_copy("fifo");
    std::fs::remove_file(d.join(TEXT_TABLE)).unwrap();
    let st = std::process::Command::new("mkfifo")
        .arg(d.join(TEXT_TABLE))
        .status()
        .unwrap();
    assert!(st.success());
    // Before: opening the pipe blocked for ever.
    let e = open_err(&d);
    assert!(e.contains("a device, pipe or socket"), "{e}");

    // An image that is a pipe or a device: refused, the rest classified.
    let good = root().join("models/calibration/rgb_640x480.png");
    let out = bin()
        .args(["classify", "--json", "--bundle"])
        .arg(root().join("models/default-int8"))
        .arg(d.join(TEXT_TABLE))
        .arg("/dev/zero")
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("not a regular file").count(), 2, "{stderr}");
    // A line per image: the two refused ones as errors, then the good one.
    let stdout = String::from_utf8(out.stdout).unwrap();
    let errors = stdout.lines().filter(|l| l.contains("\"error\"")).count();
    let tops = stdout.lines().filter(|l| l.contains("\"top\"")).count();
    assert_eq!((errors, tops), (2, 1), "{stdout}");
}

#[test]
fn a_jpeg_declaring_a_huge_size_is_refused_from_its_header() {
    // The committed JPEG with its frame header (SOF0) patched to 65535 x 65535.
    let mut b = std::fs::read(root().join("tests/fixtures/jpeg/franz-kafka.jpg")).unwrap();
    let sof = b
        .windows(2)
        .position(|w| w == [0xff, 0xc0])
        .expect("baseline JPEG");
    b[sof + 5..sof + 9].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
    let e = decode_bytes(&b, Path::new("huge.jpg")).unwrap_err();
    assert!(matches!(e, DecodeError::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("65535x65535"), "{e}");
}

#[test]
fn an_nnef_tensor_declaring_more_than_its_archive_holds_is_refused() {
    // A tar whose one tensor header claims 4 GB (tract allocates what the
    // header says before reading).
    let mut header = [0u8; 128];
    header[..4].copy_from_slice(&[0x4e, 0xef, 1, 0]);
    header[4..8].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    header[8..12].copy_from_slice(&1u32.to_le_bytes());
    header[12..16].copy_from_slice(&0x3fff_fffcu32.to_le_bytes());
    header[44..48].copy_from_slice(&32u32.to_le_bytes());
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("graph.nnef", &b"version 1.0;\n"[..]),
        ("w.dat", &header[..]),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, data).unwrap();
    }
    let bytes = tar.into_inner().unwrap();
    let e = clip_edge::tract_graph::read_nnef(&bytes)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("w.dat") && e.contains("header declares"), "{e}");
}
