//! Bad input gives a clear error naming the file (and tensor, shape), never a panic.

use std::path::{Path, PathBuf};

use clip_quantize::checkpoint::{self, CheckpointError};
use clip_quantize::config::ClipConfig;
use clip_quantize::graph;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/models")
        .join(name)
}

/// A scratch file, removed when dropped (the checkpoints copied here are
/// large, and many test runs share /tmp).
struct TmpFile(PathBuf);

impl std::ops::Deref for TmpFile {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TmpFile {
    fn drop(&mut self) {
        // The folder stays until the process exits: other tests of this
        // process write there.
        let _ = std::fs::remove_file(&self.0);
    }
}

#[path = "../../tests/common/scratch.rs"]
mod scratch_dirs;

fn tmp(name: &str, bytes: &[u8]) -> TmpFile {
    // One folder for the process, removed when it exits.
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| scratch_dirs::dir("clip-bad-input", "files"));
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    TmpFile(p)
}

#[test]
fn truncated_archives_are_reported() {
    for name in [
        "vit_tiny_sd.pt",
        "rn_tiny_jit.pt",
        "vit_tiny_hf.safetensors",
    ] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        for cut in [bytes.len() / 2, bytes.len() - 100, 200] {
            let p = tmp(&format!("cut-{cut}-{name}"), &bytes[..cut]);
            let err = checkpoint::load(&p).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(p.to_str().unwrap()), "{msg}");
            assert!(
                matches!(
                    err,
                    CheckpointError::Corrupt { .. } | CheckpointError::NotACheckpoint { .. }
                ),
                "{name} cut at {cut}: {msg}"
            );
        }
    }
}

#[test]
fn corrupted_tensor_data_is_reported() {
    // Flip bytes in the middle of the zip: CRC or structure errors, not a panic.
    let mut bytes = std::fs::read(fixture("vit_tiny_sd.pt")).unwrap();
    let mid = bytes.len() / 3;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x5a;
    }
    let p = tmp("flipped.pt", &bytes);
    let e = checkpoint::load(&p).unwrap_err();
    assert!(matches!(e, CheckpointError::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("flipped.pt"), "{e}");
}

#[test]
fn non_checkpoints_are_refused() {
    let p = tmp("notes.txt", b"just some text, not a model");
    let e = checkpoint::load(&p).unwrap_err();
    assert!(matches!(e, CheckpointError::NotACheckpoint { .. }), "{e}");
    assert!(e.to_string().contains("notes.txt"));

    let e = checkpoint::load(Path::new("/nonexistent/model.pt")).unwrap_err();
    assert!(matches!(e, CheckpointError::Io { .. }), "{e}");
    assert!(e.to_string().contains("/nonexistent/model.pt"));

    // A zip that is not a PyTorch archive.
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        z.start_file("readme.txt", zip::write::SimpleFileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut z, b"hello").unwrap();
        z.finish().unwrap();
    }
    let p = tmp("plain.zip", buf.get_ref());
    let e = checkpoint::load(&p).unwrap_err();
    assert!(e.to_string().contains("data.pkl"), "{e}");
}

fn safetensors_file(name: &str, tensors: &[(&str, safetensors::Dtype, Vec<usize>)]) -> TmpFile {
    let data: Vec<(String, Vec<u8>, safetensors::Dtype, Vec<usize>)> = tensors
        .iter()
        .map(|(n, dt, shape)| {
            let numel: usize = shape.iter().product();
            let size = match dt {
                safetensors::Dtype::F32 | safetensors::Dtype::I32 => 4,
                safetensors::Dtype::F16 => 2,
                _ => 1,
            };
            (n.to_string(), vec![0u8; numel * size], *dt, shape.clone())
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(n, b, dt, s)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*dt, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    tmp(name, &bytes)
}

#[test]
fn hf_files_of_other_models_are_refused() {
    let p = safetensors_file(
        "bert.safetensors",
        &[(
            "bert.embeddings.word_embeddings.weight",
            safetensors::Dtype::F32,
            vec![4, 2],
        )],
    );
    let e = checkpoint::load(&p).unwrap_err();
    assert!(matches!(e, CheckpointError::NotACheckpoint { .. }), "{e}");
    assert!(e.to_string().contains("CLIPModel"), "{e}");
}

#[test]
fn unknown_dtypes_name_the_tensor() {
    let p = safetensors_file(
        "int8.safetensors",
        &[
            (
                "vision_model.embeddings.class_embedding",
                safetensors::Dtype::I8,
                vec![4],
            ),
            (
                "text_model.final_layer_norm.weight",
                safetensors::Dtype::F32,
                vec![4],
            ),
            (
                "visual_projection.weight",
                safetensors::Dtype::F32,
                vec![4, 4],
            ),
        ],
    );
    let e = checkpoint::load(&p).unwrap_err();
    assert!(matches!(e, CheckpointError::Dtype { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("vision_model.embeddings.class_embedding"),
        "{e}"
    );
}

#[test]
fn missing_keys_and_wrong_shapes_are_named() {
    let mut sd = checkpoint::load(&fixture("vit_tiny_sd.pt")).unwrap();
    let cfg = ClipConfig::infer(&sd).unwrap();
    sd.tensors.remove("visual.ln_pre.weight");
    let e = graph::image_encoder(&sd, &cfg, 1)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("visual.ln_pre.weight") && e.contains("vit_tiny_sd.pt"),
        "{e}"
    );

    let mut sd = checkpoint::load(&fixture("rn_tiny_sd.pt")).unwrap();
    let cfg = ClipConfig::infer(&sd).unwrap();
    let p = sd.tensors.get_mut("visual.layer2.0.conv2.weight").unwrap();
    p.shape = vec![p.shape[0], p.shape[1], 1, p.shape[2] * p.shape[3]];
    let e = graph::image_encoder(&sd, &cfg, 1)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("visual.layer2.0.conv2.weight") && e.contains("expected [32, 32, 3, 3]"),
        "{e}"
    );

    let mut sd = checkpoint::load(&fixture("vit_tiny_sd.pt")).unwrap();
    sd.tensors.remove("visual.proj");
    sd.tensors.retain(|k, _| !k.starts_with("visual.layer"));
    let e = ClipConfig::infer(&sd).unwrap_err().to_string();
    assert!(e.contains("not a CLIP model"), "{e}");

    let mut sd = checkpoint::load(&fixture("vit_tiny_sd.pt")).unwrap();
    sd.tensors.remove("text_projection");
    let e = ClipConfig::infer(&sd).unwrap_err().to_string();
    assert!(e.contains("text_projection"), "{e}");
}

#[test]
fn hf_projections_and_attention_of_the_wrong_rank_are_named() {
    // The tiny HF fixture with one tensor replaced.
    let bytes = std::fs::read(fixture("vit_tiny_hf.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let rewrite = |name: &str, key: &str, shape: Vec<usize>| -> TmpFile {
        let numel: usize = shape.iter().product();
        let zeros = vec![0u8; numel * 4];
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
            .tensors()
            .into_iter()
            .map(|(n, v)| {
                if n == key {
                    let v = safetensors::tensor::TensorView::new(
                        safetensors::Dtype::F32,
                        shape.clone(),
                        &zeros,
                    )
                    .unwrap();
                    (n, v)
                } else {
                    (n, v)
                }
            })
            .collect();
        tmp(name, &safetensors::serialize(views, None).unwrap())
    };
    // Before: a panic indexing shape[1].
    let p = rewrite("proj1d.safetensors", "visual_projection.weight", vec![32]);
    let e = checkpoint::load(&p).unwrap_err().to_string();
    assert!(
        e.contains("visual_projection.weight") && e.contains("expected a matrix"),
        "{e}"
    );
    let p = rewrite(
        "q0d.safetensors",
        "vision_model.encoder.layers.0.self_attn.q_proj.weight",
        vec![],
    );
    let e = checkpoint::load(&p).unwrap_err().to_string();
    assert!(
        e.contains("q_proj.weight") && e.contains("q, k and v"),
        "{e}"
    );
}

/// A HuggingFace `config.json` beside the weights that names what these
/// graphs do not run (a LAION model's GELU, heads of another width) is
/// refused, naming the key and value; OpenAI's values load.
#[test]
fn an_hf_config_the_graphs_would_run_wrongly_is_refused() {
    let weights = std::fs::read(fixture("vit_tiny_hf.safetensors")).unwrap();
    let dir = scratch_dirs::dir("clip-bad-input", "hf-config");
    let p = dir.join("model.safetensors");
    std::fs::write(&p, &weights).unwrap();
    let config = dir.join("config.json");
    let cases = [
        (
            r#"{"vision_config": {"hidden_act": "gelu"}}"#,
            Some("vision_config.hidden_act \"gelu\""),
        ),
        (
            r#"{"text_config": {"hidden_act": "quick_gelu", "num_attention_heads": 16, "hidden_size": 1280}}"#,
            Some("text_config.num_attention_heads 16 with hidden_size 1280"),
        ),
        ("not json", Some("not JSON")),
        (
            r#"{"vision_config": {"hidden_act": "quick_gelu", "num_attention_heads": 12, "hidden_size": 768}}"#,
            None,
        ),
    ];
    for (text, refused) in cases {
        std::fs::write(&config, text).unwrap();
        match (checkpoint::load(&p), refused) {
            (Err(e), Some(needle)) => {
                let msg = e.to_string();
                assert!(msg.contains(needle) && msg.contains("config.json"), "{msg}");
                assert!(matches!(e, CheckpointError::Unsupported { .. }), "{msg}");
            }
            (Ok(_), None) => {}
            (r, _) => panic!("{text}: {:?}", r.err()),
        }
    }
}
