//! The CPU engine's layout of a schedule's weights: every product's rows
//! packed into the kernel path's panels ([`Packing::pack_f32`],
//! [`Packing::pack_f16`], [`Packing::pack_i8`]); a convolution's weights
//! packed, kept as rows, or transformed for Winograd's products, whichever
//! its shape runs fastest on.

use crate::engine::schedule::ir::{Kind, Lowered};
use crate::engine::schedule::linear::{ConvWeights, FloatWeights, Rhs, Weights};
use crate::kernels::Packing;

use super::winograd;

/// The most a float convolution's pixels may be padded (in percent of
/// them, to the turned-around tile's 32 columns) for its weights to stay
/// rows; past it they are packed into panels (RN50 fp32's 7 × 7 layer, 49
/// pixels computed as 64, is faster on panels; its 14 × 14 layer, 196 of
/// 224, is not: docs/benchmarks.md, "What the runs say").
const MAX_PADDED_PIXELS_PERCENT: usize = 120;

/// The fewest input and output channels for which an f32 3 × 3
/// convolution takes Winograd's products: below it the transforms cost
/// more than the products they save.
const WINOGRAD_MIN_CHANNELS: usize = 64;

/// The fewest 2 × 2 tiles for Winograd's products: below it (RN50's 7 × 7
/// layer, 16 tiles) the products are too narrow for the kernels' tiles,
/// above all when threads share them.
const WINOGRAD_MIN_TILES: usize = 32;

/// `p` pixels padded to whole 32-pixel tiles, in percent of `p`.
fn padded_pixels_percent(p: usize) -> usize {
    p.div_ceil(32) * 32 * 100 / p.max(1)
}

/// `n × k` float rows in `kernels`' panels.
pub(super) fn pack_float(w: Weights, n: usize, k: usize, kernels: &Packing) -> Weights {
    match w {
        Weights::F32(w) => Weights::F32(kernels.pack_f32(&w, n, k).into()),
        Weights::F16(w) => Weights::F16(kernels.pack_f16(&w, n, k).into()),
    }
}

/// Packs `l`'s weights (rows, as lowering makes them) for `kernels`, one
/// layer at a time (each layer's rows dropped once its panels exist).
/// `float`: the precision `l` was lowered in (Winograd's products are for
/// fp32 bundles only: fp16 and int8 ones keep every convolution direct,
/// their few f32 layers too); `winograd`: whether f32 3 × 3 convolutions
/// that fit may take them.
///
/// # Panics
/// When `l` is already packed (a caller's bug).
pub fn pack(l: &mut Lowered, kernels: &Packing, float: FloatWeights, winograd: bool) {
    assert!(l.packed_for.is_none(), "weights packed twice");
    for step in &mut l.steps {
        match &mut step.kind {
            Kind::MatMul { mm, .. } => {
                let (n, k) = (mm.n, mm.k);
                match &mut mm.rhs {
                    Rhs::Float(w) => {
                        let rows = std::mem::replace(w, Weights::F32(Vec::new().into()));
                        *w = pack_float(rows, n, k, kernels);
                    }
                    Rhs::Int8(w, _) => w.q = kernels.pack_i8(&w.q, n, k).into(),
                    Rhs::Act { .. } => {}
                }
            }
            Kind::Conv { conv, .. } => {
                let (o, c, kk) = (conv.o, conv.c, conv.kk());
                let rows =
                    std::mem::replace(&mut conv.weights, ConvWeights::F32Rows(Vec::new().into()));
                let fits = winograd
                    && float == FloatWeights::F32
                    && winograd::fits(
                        conv.kernel,
                        conv.stride,
                        conv.dilation,
                        conv.pad,
                        [conv.h, conv.w],
                        [conv.oh, conv.ow],
                    )
                    && c.min(o) >= WINOGRAD_MIN_CHANNELS
                    && conv.oh.div_ceil(2) * conv.ow.div_ceil(2) >= WINOGRAD_MIN_TILES;
                conv.weights = match rows {
                    // The patches are the product's left side.
                    ConvWeights::Float(w) => ConvWeights::Float(pack_float(w, o, kk, kernels)),
                    // f32 3 × 3 convolutions, stride 1, padding 1: Winograd's
                    // products (16 a tile of 4 pixels, against 36).
                    ConvWeights::F32Rows(w) if fits => {
                        ConvWeights::Winograd(winograd::weights(&w, o, c).into())
                    }
                    // Turned around, the pixels are the product's columns,
                    // computed up to 32 at a time (AVX-512's pairs of 16-pixel
                    // panels): where that pads them by more than a fifth
                    // (RN50's 7 × 7 layer: 64 for 49), the weights go into
                    // panels and the pixels are the rows (8 at a time on
                    // AVX-512, 6 on AVX2).
                    ConvWeights::F32Rows(w)
                        if padded_pixels_percent(conv.oh * conv.ow) > MAX_PADDED_PIXELS_PERCENT =>
                    {
                        ConvWeights::Float(Weights::F32(kernels.pack_f32(&w, o, kk).into()))
                    }
                    // Rows: the product's left side, the patches packed per
                    // frame.
                    w @ (ConvWeights::F32Rows(_) | ConvWeights::Int8(_)) => w,
                    // Lowering never transforms weights.
                    w @ ConvWeights::Winograd(_) => w,
                };
            }
            _ => {}
        }
    }
    l.packed_for = Some(kernels.name.to_string());
}
