//! HuggingFace `CLIPModel` weights (`model.safetensors`): split q/k/v,
//! `[out, in]` projections. Renamed to OpenAI's names (ViT only).

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use super::{CheckpointError, Format, Param, SourceDtype, StateDict};

fn convert(
    path: &Path,
    name: &str,
    view: &safetensors::tensor::TensorView<'_>,
) -> Result<Param, CheckpointError> {
    let raw = view.data();
    let (dtype, data): (SourceDtype, Vec<f32>) = match view.dtype() {
        Dtype::F32 => (
            SourceDtype::F32,
            raw.chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4")))
                .collect(),
        ),
        Dtype::F16 => (
            SourceDtype::F16,
            raw.chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        ),
        Dtype::BF16 => (
            SourceDtype::BF16,
            raw.chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        ),
        Dtype::I64 => (
            SourceDtype::I64,
            raw.chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8")) as f32)
                .collect(),
        ),
        other => {
            return Err(CheckpointError::Dtype {
                path: path.to_path_buf(),
                key: name.to_string(),
                dtype: format!("{other:?}"),
            })
        }
    };
    Ok(Param {
        shape: view.shape().to_vec(),
        data,
        dtype,
    })
}

/// The checkpoint's `[out, in]` matrix as OpenAI's `[in, out]`; anything
/// but a matrix is an error naming the tensor.
fn transpose(path: &Path, key: &str, p: Param) -> Result<Param, CheckpointError> {
    let &[r, c] = p.shape.as_slice() else {
        return Err(CheckpointError::Layout {
            path: path.to_path_buf(),
            key: key.to_string(),
            why: format!("has shape {:?}, expected a matrix [out, in]", p.shape),
        });
    };
    let mut data = vec![0.0; r * c];
    for i in 0..r {
        for j in 0..c {
            data[j * r + i] = p.data[i * c + j];
        }
    }
    Ok(Param {
        shape: vec![c, r],
        data,
        dtype: p.dtype,
    })
}

/// q, k and v stacked along their first axis; they must agree on the rest.
fn concat(path: &Path, key: &str, parts: [Param; 3]) -> Result<Param, CheckpointError> {
    let rest = |p: &Param| p.shape.get(1..).map(<[usize]>::to_vec);
    if parts[0].shape.is_empty() || parts.iter().any(|p| rest(p) != rest(&parts[0])) {
        return Err(CheckpointError::Layout {
            path: path.to_path_buf(),
            key: key.to_string(),
            why: format!(
                "q, k and v must share a shape of rank >= 1 (found {:?}, {:?}, {:?})",
                parts[0].shape, parts[1].shape, parts[2].shape
            ),
        });
    }
    let mut shape = parts[0].shape.clone();
    shape[0] = parts.iter().map(|p| p.shape[0]).sum();
    let dtype = parts[0].dtype;
    let data = parts.into_iter().flat_map(|p| p.data).collect();
    Ok(Param { shape, data, dtype })
}

/// Largest `config.json` read beside a safetensors file.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The HuggingFace `config.json` beside the weights, when there is one,
/// against what the graphs built from them run (OpenAI's architecture:
/// QuickGELU, heads of width 64): a model they would run wrongly (a LAION
/// model's GELU, heads of another width) is refused, naming the key and
/// value, instead of becoming a bundle that is quietly wrong.
fn check_config(path: &Path) -> Result<(), CheckpointError> {
    let config = path.with_file_name("config.json");
    if !config.is_file() {
        return Ok(());
    }
    let unsupported = |why: String| CheckpointError::Unsupported {
        path: config.clone(),
        why,
    };
    let text = clip_edge::bundle::read_regular(&config, MAX_CONFIG_BYTES, true)
        .map_err(|e| unsupported(e.to_string()))?;
    let v: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| unsupported(format!("not JSON: {e}")))?;
    for tower in ["vision_config", "text_config"] {
        let c = &v[tower];
        if let Some(act) = c["hidden_act"].as_str() {
            if act != "quick_gelu" {
                return Err(unsupported(format!(
                    "{tower}.hidden_act {act:?}: these graphs run OpenAI's quick_gelu; build from the model's ONNX export instead (docs/bundles.md)"
                )));
            }
        }
        if let (Some(heads), Some(width)) =
            (c["num_attention_heads"].as_u64(), c["hidden_size"].as_u64())
        {
            if heads == 0 || width / heads != 64 || width % heads != 0 {
                return Err(unsupported(format!(
                    "{tower}.num_attention_heads {heads} with hidden_size {width}: these graphs run heads of width 64; build from the model's ONNX export instead (docs/bundles.md)"
                )));
            }
        }
    }
    Ok(())
}

pub fn load(path: &Path, bytes: &[u8]) -> Result<StateDict, CheckpointError> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    let mut src: BTreeMap<String, Param> = BTreeMap::new();
    for (name, view) in st.tensors() {
        src.insert(name.clone(), convert(path, &name, &view)?);
    }
    let has = |p: &str| src.keys().any(|k| k.starts_with(p));
    if !has("vision_model.") || !has("text_model.") || !src.contains_key("visual_projection.weight")
    {
        return Err(CheckpointError::NotACheckpoint {
            path: path.to_path_buf(),
            why: "safetensors file without the `vision_model.*`, `text_model.*` and `visual_projection.weight` tensors of a HuggingFace CLIPModel".into(),
        });
    }
    check_config(path)?;
    let mut out = BTreeMap::new();
    let blocks = |take: &mut dyn FnMut(&str) -> Result<Param, CheckpointError>,
                  src_prefix: &str,
                  dst_prefix: &str,
                  layers: usize,
                  out: &mut BTreeMap<String, Param>|
     -> Result<(), CheckpointError> {
        for i in 0..layers {
            let s = format!("{src_prefix}.encoder.layers.{i}.");
            let d = format!("{dst_prefix}.resblocks.{i}.");
            for wb in ["weight", "bias"] {
                let q = take(&format!("{s}self_attn.q_proj.{wb}"))?;
                let k = take(&format!("{s}self_attn.k_proj.{wb}"))?;
                let v = take(&format!("{s}self_attn.v_proj.{wb}"))?;
                let key = format!("{s}self_attn.q_proj.{wb}");
                out.insert(
                    format!("{d}attn.in_proj_{wb}"),
                    concat(path, &key, [q, k, v])?,
                );
                out.insert(
                    format!("{d}attn.out_proj.{wb}"),
                    take(&format!("{s}self_attn.out_proj.{wb}"))?,
                );
                out.insert(
                    format!("{d}ln_1.{wb}"),
                    take(&format!("{s}layer_norm1.{wb}"))?,
                );
                out.insert(
                    format!("{d}ln_2.{wb}"),
                    take(&format!("{s}layer_norm2.{wb}"))?,
                );
                out.insert(
                    format!("{d}mlp.c_fc.{wb}"),
                    take(&format!("{s}mlp.fc1.{wb}"))?,
                );
                out.insert(
                    format!("{d}mlp.c_proj.{wb}"),
                    take(&format!("{s}mlp.fc2.{wb}"))?,
                );
            }
        }
        Ok(())
    };
    let count = |prefix: &str, keys: &BTreeMap<String, Param>| {
        keys.keys()
            .filter_map(|k| k.strip_prefix(prefix))
            .filter_map(|r| r.split('.').next()?.parse::<usize>().ok())
            .max()
            .map_or(0, |m| m + 1)
    };
    let tl = count("text_model.encoder.layers.", &src);
    let vl = count("vision_model.encoder.layers.", &src);
    let mut take = |k: &str| {
        src.remove(k).ok_or_else(|| CheckpointError::MissingKey {
            path: path.to_path_buf(),
            key: k.to_string(),
        })
    };
    blocks(&mut take, "text_model", "transformer", tl, &mut out)?;
    blocks(
        &mut take,
        "vision_model",
        "visual.transformer",
        vl,
        &mut out,
    )?;
    let simple = [
        (
            "text_model.embeddings.token_embedding.weight",
            "token_embedding.weight",
        ),
        (
            "text_model.embeddings.position_embedding.weight",
            "positional_embedding",
        ),
        ("text_model.final_layer_norm.weight", "ln_final.weight"),
        ("text_model.final_layer_norm.bias", "ln_final.bias"),
        (
            "vision_model.embeddings.class_embedding",
            "visual.class_embedding",
        ),
        (
            "vision_model.embeddings.patch_embedding.weight",
            "visual.conv1.weight",
        ),
        (
            "vision_model.embeddings.position_embedding.weight",
            "visual.positional_embedding",
        ),
        ("vision_model.pre_layrnorm.weight", "visual.ln_pre.weight"),
        ("vision_model.pre_layrnorm.bias", "visual.ln_pre.bias"),
        (
            "vision_model.post_layernorm.weight",
            "visual.ln_post.weight",
        ),
        ("vision_model.post_layernorm.bias", "visual.ln_post.bias"),
        ("logit_scale", "logit_scale"),
    ];
    for (s, d) in simple {
        out.insert(d.to_string(), take(s)?);
    }
    out.insert(
        "text_projection".into(),
        transpose(
            path,
            "text_projection.weight",
            take("text_projection.weight")?,
        )?,
    );
    out.insert(
        "visual.proj".into(),
        transpose(
            path,
            "visual_projection.weight",
            take("visual_projection.weight")?,
        )?,
    );
    Ok(StateDict {
        path: path.to_path_buf(),
        format: Format::HfSafetensors,
        tensors: out,
    })
}
