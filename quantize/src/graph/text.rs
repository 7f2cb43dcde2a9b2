//! CLIP's text tower: token + position embeddings, causal residual blocks,
//! ln_final, the features at the end-of-text token (argmax), projection.

use tract_core::internal::*;
use tract_core::ops::array::Gather;
use tract_core::ops::binary::TypedBinOp;
use tract_core::ops::cast::cast;
use tract_core::ops::logic::comp_eq;
use tract_core::ops::nn::{Reduce, Reducer};

use super::{Builder, Result};
use crate::checkpoint::StateDict;
use crate::config::ClipConfig;

pub fn build(sd: &StateDict, cfg: &ClipConfig, batch: usize) -> Result<TypedModel> {
    let (ctx, width, heads) = (
        cfg.context_length,
        cfg.transformer_width,
        cfg.transformer_heads,
    );
    let mut b = Builder::new(sd);
    let tokens = b.source("tokens", i64::fact([batch, ctx]))?;
    let emb = b.param("token_embedding.weight", &[cfg.vocab_size, width])?;
    let x = b.wire("token_embedding", Gather::new(0), &[emb, tokens])?; // [B, T, W]
    let pos = b.param("positional_embedding", &[ctx, width])?;
    let mut x = b.add("positional_embedding.add", x, pos)?;
    // Causal mask: -inf above the diagonal.
    let mut mask = vec![0f32; ctx * ctx];
    for i in 0..ctx {
        for j in i + 1..ctx {
            mask[i * ctx + j] = f32::NEG_INFINITY;
        }
    }
    let mask = b.konst("attn_mask", tensor1(&mask).into_shape(&[ctx, ctx])?)?;
    for i in 0..cfg.transformer_layers {
        x = b.residual_block(
            &format!("transformer.resblocks.{i}"),
            x,
            width,
            heads,
            Some(mask),
        )?;
    }
    let x = b.layer_norm("ln_final", x, "ln_final")?;
    // One-hot of the first maximum token (EOT has the largest id).
    let eot = b.wire(
        "eot.argmax",
        Reduce::new(tvec!(1), Reducer::ArgMax(false)),
        &[tokens],
    )?; // [B, 1]
    let iota: Vec<i64> = (0..ctx as i64).collect();
    let iota = b.konst("eot.positions", tensor1(&iota).into_shape(&[1, ctx])?)?;
    let hit = b.wire("eot.onehot", TypedBinOp(comp_eq(), None), &[iota, eot])?;
    let hit = b.wire("eot.onehot.f32", cast(f32::datum_type()), &[hit])?;
    let x = b.einsum("eot.pool", "bt,btc->bc", &[hit, x])?;
    let x = b.project(
        "text_projection",
        x,
        "text_projection",
        width,
        cfg.embed_dim,
    )?;
    b.finish(x)
}
