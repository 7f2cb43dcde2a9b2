//! Hyperparameters inferred from a state dict exactly as the reference
//! `clip.model.build_model` does.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::checkpoint::{CheckpointError, StateDict};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "family", rename_all = "snake_case")]
pub enum Vision {
    Vit {
        width: usize,
        layers: usize,
        patch_size: usize,
        grid: usize,
        heads: usize,
    },
    ResNet {
        width: usize,
        layers: [usize; 4],
        heads: usize,
        output_grid: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClipConfig {
    /// The released model this matches (`ViT-B/32`, `RN50`, …), or `custom`.
    pub name: String,
    pub vision: Vision,
    pub image_resolution: usize,
    pub embed_dim: usize,
    pub context_length: usize,
    pub vocab_size: usize,
    pub transformer_width: usize,
    pub transformer_heads: usize,
    pub transformer_layers: usize,
}

fn bad(sd: &StateDict, key: &str, why: &str) -> CheckpointError {
    CheckpointError::NotACheckpoint {
        path: sd.path.clone(),
        why: format!("`{key}`: {why}"),
    }
}

fn dim(sd: &StateDict, key: &str, axis: usize) -> Result<usize, CheckpointError> {
    let p = sd.get(key)?;
    p.shape.get(axis).copied().ok_or_else(|| {
        bad(
            sd,
            key,
            &format!("rank {} has no axis {axis}", p.shape.len()),
        )
    })
}

fn isqrt_exact(sd: &StateDict, key: &str, n: usize) -> Result<usize, CheckpointError> {
    let r = ((n as f64).sqrt()).round() as usize;
    if r * r != n {
        return Err(bad(
            sd,
            key,
            &format!("{n} positions is not a square grid plus one"),
        ));
    }
    Ok(r)
}

impl ClipConfig {
    pub fn infer(sd: &StateDict) -> Result<Self, CheckpointError> {
        if !sd.contains("visual.proj") && !sd.contains("visual.layer1.0.conv1.weight") {
            return Err(CheckpointError::NotACheckpoint {
                path: sd.path.clone(),
                why: "no `visual.proj` (ViT) nor `visual.layer1.0.conv1.weight` (ResNet): not a CLIP model".into(),
            });
        }
        let vision = if sd.contains("visual.proj") {
            let width = dim(sd, "visual.conv1.weight", 0)?;
            let layers = sd
                .keys()
                .filter(|k| k.starts_with("visual.") && k.ends_with(".attn.in_proj_weight"))
                .count();
            let patch_size = *sd.get("visual.conv1.weight")?.shape.last().unwrap_or(&0);
            let npos = dim(sd, "visual.positional_embedding", 0)?;
            let grid = isqrt_exact(sd, "visual.positional_embedding", npos.saturating_sub(1))?;
            Vision::Vit {
                width,
                layers,
                patch_size,
                grid,
                heads: width / 64,
            }
        } else {
            let mut layers = [0usize; 4];
            for (b, l) in layers.iter_mut().enumerate() {
                let prefix = format!("visual.layer{}", b + 1);
                let set: BTreeSet<&str> = sd
                    .keys()
                    .filter(|k| k.starts_with(&prefix))
                    .filter_map(|k| k.split('.').nth(2))
                    .collect();
                *l = set.len();
            }
            let width = dim(sd, "visual.layer1.0.conv1.weight", 0)?;
            let npos = dim(sd, "visual.attnpool.positional_embedding", 0)?;
            let output_grid = isqrt_exact(
                sd,
                "visual.attnpool.positional_embedding",
                npos.saturating_sub(1),
            )?;
            Vision::ResNet {
                width,
                layers,
                heads: width * 32 / 64,
                output_grid,
            }
        };
        let image_resolution = match &vision {
            Vision::Vit {
                patch_size, grid, ..
            } => patch_size * grid,
            Vision::ResNet { output_grid, .. } => output_grid * 32,
        };
        let transformer_width = dim(sd, "ln_final.weight", 0)?;
        let transformer_layers = sd
            .keys()
            .filter(|k| k.starts_with("transformer.resblocks"))
            .filter_map(|k| k.split('.').nth(2))
            .collect::<BTreeSet<_>>()
            .len();
        let mut cfg = ClipConfig {
            name: "custom".into(),
            vision,
            image_resolution,
            embed_dim: dim(sd, "text_projection", 1)?,
            context_length: dim(sd, "positional_embedding", 0)?,
            vocab_size: dim(sd, "token_embedding.weight", 0)?,
            transformer_width,
            transformer_heads: transformer_width / 64,
            transformer_layers,
        };
        if cfg.transformer_heads == 0 {
            return Err(bad(
                sd,
                "ln_final.weight",
                "text width below 64 gives zero heads",
            ));
        }
        cfg.name = cfg.released_name().unwrap_or("custom").to_string();
        Ok(cfg)
    }

    /// The released architecture with these hyperparameters, if any.
    pub fn released_name(&self) -> Option<&'static str> {
        let text = (
            self.context_length,
            self.vocab_size,
            self.transformer_layers,
        );
        if text != (77, 49408, 12) {
            return None;
        }
        match (&self.vision, self.image_resolution, self.embed_dim) {
            (
                Vision::ResNet {
                    width: 64,
                    layers: [3, 4, 6, 3],
                    ..
                },
                224,
                1024,
            ) => Some("RN50"),
            (
                Vision::ResNet {
                    width: 64,
                    layers: [3, 4, 23, 3],
                    ..
                },
                224,
                512,
            ) => Some("RN101"),
            (
                Vision::ResNet {
                    width: 80,
                    layers: [4, 6, 10, 6],
                    ..
                },
                288,
                640,
            ) => Some("RN50x4"),
            (
                Vision::ResNet {
                    width: 96,
                    layers: [6, 8, 18, 8],
                    ..
                },
                384,
                768,
            ) => Some("RN50x16"),
            (
                Vision::ResNet {
                    width: 128,
                    layers: [3, 15, 36, 10],
                    ..
                },
                448,
                1024,
            ) => Some("RN50x64"),
            (
                Vision::Vit {
                    width: 768,
                    layers: 12,
                    patch_size: 32,
                    ..
                },
                224,
                512,
            ) => Some("ViT-B/32"),
            (
                Vision::Vit {
                    width: 768,
                    layers: 12,
                    patch_size: 16,
                    ..
                },
                224,
                512,
            ) => Some("ViT-B/16"),
            (
                Vision::Vit {
                    width: 1024,
                    layers: 24,
                    patch_size: 14,
                    ..
                },
                224,
                768,
            ) => Some("ViT-L/14"),
            (
                Vision::Vit {
                    width: 1024,
                    layers: 24,
                    patch_size: 14,
                    ..
                },
                336,
                768,
            ) => Some("ViT-L/14@336px"),
            _ => None,
        }
    }

    pub fn is_vit(&self) -> bool {
        matches!(self.vision, Vision::Vit { .. })
    }
}
