//! CLIP's `VisionTransformer`: patch conv, class token, positions, ln_pre,
//! residual blocks, ln_post on the class token, projection.

use tract_core::internal::*;

use super::{Builder, Result};
use crate::config::{ClipConfig, Vision};

pub fn build(b: &mut Builder<'_>, cfg: &ClipConfig, batch: usize) -> Result<OutletId> {
    let Vision::Vit {
        width,
        layers,
        patch_size,
        grid,
        heads,
    } = cfg.vision
    else {
        unreachable!("vit::build on a ResNet config")
    };
    let r = cfg.image_resolution;
    let x = b.source("image", f32::fact([batch, 3, r, r]))?;
    let ws = [width, 3, patch_size, patch_size];
    let w = b.param_vec("visual.conv1.weight", &ws)?;
    let x = b.conv("visual.conv1", x, w, ws, None, patch_size, 0)?;
    let x = b.reshape("visual.flatten", x, 2, &[grid, grid], &[grid * grid])?;
    let x = b.move_axis("visual.tokens", x, 1, 2)?; // [B, G², W]
    let cls_rows: Vec<f32> = b
        .param_vec("visual.class_embedding", &[width])?
        .repeat(batch);
    let cls = b.konst(
        "visual.class_embedding",
        tensor1(&cls_rows).into_shape(&[batch, 1, width])?,
    )?;
    let x = b.concat("visual.with_class", &[cls, x], 1)?;
    let pos = b.param("visual.positional_embedding", &[grid * grid + 1, width])?;
    let mut x = b.add("visual.pos", x, pos)?;
    x = b.layer_norm("visual.ln_pre", x, "visual.ln_pre")?;
    for i in 0..layers {
        x = b.residual_block(
            &format!("visual.transformer.resblocks.{i}"),
            x,
            width,
            heads,
            None,
        )?;
    }
    let x = b.slice("visual.class_token", x, 1, 0, 1)?;
    let x = b.rm_axis("visual.class_token.squeeze", x, 1)?;
    let x = b.layer_norm("visual.ln_post", x, "visual.ln_post")?;
    let x = b.project("visual.proj", x, "visual.proj", width, cfg.embed_dim)?;
    Ok(x)
}
