//! CLIP's encoders as tract `TypedModel`s, built op by op from a state dict.
//!
//! The graphs use only tract-core operators that serialise to NNEF (with the
//! `tract_core` extension), so the board loads them without tract-onnx.

pub mod precision;
pub mod resnet;
pub mod rewrite;
pub mod text;
pub mod vit;

pub use precision::{ActivationQuant, LayerRecord, PoolValues, Precision, QuantPlan, WeightPools};

use tract_core::internal::*;
use tract_core::ops::array::{Slice, TypedConcat};
use tract_core::ops::binary::TypedBinOp;
use tract_core::ops::change_axes::wire_with_rank_broadcast;
use tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec, PoolSpec, SumPool};
use tract_core::ops::einsum::EinSum;
use tract_core::ops::math;
use tract_core::ops::nn::{sigmoid, DataFormat, Reduce, Reducer, Softmax, SoftmaxKind};

use crate::checkpoint::{CheckpointError, StateDict};
use crate::config::ClipConfig;

/// LayerNorm epsilon (PyTorch's default, used by CLIP).
pub const LN_EPS: f32 = 1e-5;
/// BatchNorm epsilon (PyTorch's default).
pub const BN_EPS: f32 = 1e-5;

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("building the graph: {0:#}")]
    Tract(#[from] TractError),
}

pub type Result<T> = std::result::Result<T, GraphError>;

/// Wires ops into a `TypedModel`, reading constants from the state dict.
pub struct Builder<'a> {
    pub model: TypedModel,
    pub sd: &'a StateDict,
    /// Storage precision of the weights, per layer.
    pub plan: QuantPlan,
    /// The quantisable layers wired so far (linear and convolution weights).
    pub layers: Vec<LayerRecord>,
    /// Low-precision weights in wiring order (first pass).
    pub collected: Vec<PoolValues>,
    /// Pooled low-precision weights (second pass).
    pub pools: Option<WeightPools>,
}

impl<'a> Builder<'a> {
    pub fn new(sd: &'a StateDict) -> Self {
        Self::with_plan(sd, QuantPlan::default())
    }

    pub fn with_plan(sd: &'a StateDict, plan: QuantPlan) -> Self {
        Self {
            model: TypedModel::default(),
            sd,
            plan,
            layers: Vec::new(),
            collected: Vec::new(),
            pools: None,
        }
    }

    pub fn source(&mut self, name: &str, fact: TypedFact) -> Result<OutletId> {
        Ok(self.model.add_source(name, fact)?)
    }

    pub fn konst(&mut self, name: &str, t: Tensor) -> Result<OutletId> {
        Ok(self.model.add_const(name, t)?)
    }

    /// A state-dict tensor, checked to have `shape`.
    pub fn param_tensor(&self, key: &str, shape: &[usize]) -> Result<Tensor> {
        let p = self.sd.get_shaped(key, shape)?;
        Ok(tensor1(&p.data).into_shape(shape)?)
    }

    /// A state-dict tensor's values, checked to have `shape`.
    pub fn param_vec(&self, key: &str, shape: &[usize]) -> Result<Vec<f32>> {
        Ok(self.sd.get_shaped(key, shape)?.data.clone())
    }

    /// A state-dict tensor as a graph constant: f32, or f16 on disk (cast to
    /// f32 in the graph) for matrices when the plan stores weights in f16.
    pub fn param(&mut self, key: &str, shape: &[usize]) -> Result<OutletId> {
        if shape.len() >= 2 && self.plan.other_weights == Precision::Fp16 {
            let data = self.param_vec(key, shape)?;
            return self.weight(key, data, shape, Precision::Fp16);
        }
        let t = self.param_tensor(key, shape)?;
        self.konst(key, t)
    }

    pub fn wire(
        &mut self,
        name: &str,
        op: impl Into<Box<dyn TypedOp>>,
        inputs: &[OutletId],
    ) -> Result<OutletId> {
        let name = self.model.unique_name(name).into_owned();
        Ok(self.model.wire_node(name, op, inputs)?[0])
    }

    fn bin(
        &mut self,
        name: &str,
        op: Box<dyn tract_core::ops::binary::BinMiniOp>,
        a: OutletId,
        b: OutletId,
    ) -> Result<OutletId> {
        let name = self.model.unique_name(name).into_owned();
        Ok(wire_with_rank_broadcast(name, &mut self.model, TypedBinOp(op, None), &[a, b])?[0])
    }

    pub fn add(&mut self, name: &str, a: OutletId, b: OutletId) -> Result<OutletId> {
        self.bin(name, Box::new(math::Add), a, b)
    }
    pub fn sub(&mut self, name: &str, a: OutletId, b: OutletId) -> Result<OutletId> {
        self.bin(name, Box::new(math::Sub), a, b)
    }
    pub fn mul(&mut self, name: &str, a: OutletId, b: OutletId) -> Result<OutletId> {
        self.bin(name, Box::new(math::Mul), a, b)
    }

    pub fn scalar_mul(&mut self, name: &str, a: OutletId, s: f32) -> Result<OutletId> {
        let c = self.konst(&format!("{name}.scale"), tensor0(s))?;
        self.mul(name, a, c)
    }

    pub fn shape(&self, o: OutletId) -> Result<TVec<usize>> {
        let f = self.model.outlet_fact(o)?;
        Ok(f.shape.as_concrete().context("symbolic shape")?.into())
    }

    pub fn einsum(&mut self, name: &str, expr: &str, inputs: &[OutletId]) -> Result<OutletId> {
        let axes: AxesMapping = expr.parse()?;
        self.wire(name, EinSum::new(axes, f32::datum_type()), inputs)
    }

    /// `x @ W^T + b` over the last axis, `W` being `[out, in]` (PyTorch's Linear).
    pub fn linear(
        &mut self,
        name: &str,
        x: OutletId,
        w_key: &str,
        b_key: Option<&str>,
        out: usize,
    ) -> Result<OutletId> {
        let shape = self.shape(x)?;
        let inp = *shape.last().context("rank 0 input")?;
        let layer = w_key
            .trim_end_matches("_weight")
            .trim_end_matches(".weight")
            .to_string();
        let prec = self.plan.precision_for(&layer);
        self.layers.push(LayerRecord {
            name: layer.clone(),
            kind: "linear".into(),
            precision: prec,
            input: x,
            params: out * inp,
        });
        let data = self.param_vec(w_key, &[out, inp])?;
        let w = self.weight(&layer, data, &[out, inp], prec)?;
        let x = if prec == Precision::Int8 {
            self.fake_quant(&layer, x, &[shape.len() - 1])?
        } else {
            x
        };
        let letters = &"abcdefgh"[..shape.len() - 1];
        let y = self.einsum(name, &format!("{letters}k,nk->{letters}n"), &[x, w])?;
        match b_key {
            Some(b) => {
                let b = self.param(b, &[out])?;
                self.add(&format!("{name}.bias"), y, b)
            }
            None => Ok(y),
        }
    }

    /// `x @ P` for a `[in, out]` projection matrix (CLIP's `proj`, `text_projection`).
    pub fn project(
        &mut self,
        name: &str,
        x: OutletId,
        key: &str,
        inp: usize,
        out: usize,
    ) -> Result<OutletId> {
        let p = self.param(key, &[inp, out])?;
        self.einsum(name, "bk,kn->bn", &[x, p])
    }

    fn reduce(
        &mut self,
        name: &str,
        x: OutletId,
        axis: usize,
        reducer: Reducer,
    ) -> Result<OutletId> {
        self.wire(name, Reduce::new(tvec!(axis), reducer), &[x])
    }

    /// Mean over `axis`, keeping it as size 1.
    pub fn mean(&mut self, name: &str, x: OutletId, axis: usize) -> Result<OutletId> {
        let n = self.shape(x)?[axis];
        let s = self.reduce(&format!("{name}.sum"), x, axis, Reducer::Sum)?;
        self.scalar_mul(name, s, 1.0 / n as f32)
    }

    /// LayerNorm over the last axis, computed in f32 (CLIP's LayerNorm subclass).
    pub fn layer_norm(&mut self, name: &str, x: OutletId, prefix: &str) -> Result<OutletId> {
        let shape = self.shape(x)?;
        let axis = shape.len() - 1;
        let c = shape[axis];
        let mean = self.mean(&format!("{name}.mean"), x, axis)?;
        let xc = self.sub(&format!("{name}.center"), x, mean)?;
        let var = self.reduce(&format!("{name}.var"), xc, axis, Reducer::MeanOfSquares)?;
        let eps = self.konst(&format!("{name}.eps"), tensor0(LN_EPS))?;
        let ve = self.add(&format!("{name}.var_eps"), var, eps)?;
        let inv = self.wire(&format!("{name}.rsqrt"), math::rsqrt(), &[ve])?;
        let xn = self.mul(&format!("{name}.norm"), xc, inv)?;
        let g = self.param(&format!("{prefix}.weight"), &[c])?;
        let b = self.param(&format!("{prefix}.bias"), &[c])?;
        let y = self.mul(&format!("{name}.gamma"), xn, g)?;
        self.add(&format!("{name}.beta"), y, b)
    }

    /// `x * sigmoid(1.702 x)`.
    pub fn quick_gelu(&mut self, name: &str, x: OutletId) -> Result<OutletId> {
        let s = self.scalar_mul(&format!("{name}.1702"), x, 1.702)?;
        let sig = self.wire(&format!("{name}.sigmoid"), sigmoid(), &[s])?;
        self.mul(name, x, sig)
    }

    pub fn relu(&mut self, name: &str, x: OutletId) -> Result<OutletId> {
        let z = self.konst(&format!("{name}.zero"), tensor0(0f32))?;
        self.bin(name, Box::new(math::Max), x, z)
    }

    pub fn softmax(&mut self, name: &str, x: OutletId, axis: usize) -> Result<OutletId> {
        self.wire(
            name,
            Softmax::new(tvec!(axis), None, SoftmaxKind::Softmax),
            &[x],
        )
    }

    pub fn reshape(
        &mut self,
        name: &str,
        x: OutletId,
        axis: usize,
        from: &[usize],
        to: &[usize],
    ) -> Result<OutletId> {
        let from: TVec<TDim> = from.iter().map(|d| (*d).into()).collect();
        let to: TVec<TDim> = to.iter().map(|d| (*d).into()).collect();
        self.wire(name, AxisOp::Reshape(axis, from, to), &[x])
    }

    pub fn move_axis(
        &mut self,
        name: &str,
        x: OutletId,
        from: usize,
        to: usize,
    ) -> Result<OutletId> {
        self.wire(name, AxisOp::Move(from, to), &[x])
    }

    pub fn rm_axis(&mut self, name: &str, x: OutletId, axis: usize) -> Result<OutletId> {
        self.wire(name, AxisOp::Rm(axis), &[x])
    }

    pub fn slice(
        &mut self,
        name: &str,
        x: OutletId,
        axis: usize,
        start: usize,
        end: usize,
    ) -> Result<OutletId> {
        self.wire(name, Slice::new(axis, start, end), &[x])
    }

    pub fn concat(&mut self, name: &str, xs: &[OutletId], axis: usize) -> Result<OutletId> {
        self.wire(name, TypedConcat::new(axis), xs)
    }

    /// NCHW convolution, OIHW kernel `w`, with an optional bias `[O]`.
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &mut self,
        name: &str,
        x: OutletId,
        w: Vec<f32>,
        ws: [usize; 4],
        bias: Option<Tensor>,
        stride: usize,
        pad: usize,
    ) -> Result<OutletId> {
        let [o, i, kh, kw] = ws;
        let prec = self.plan.precision_for(name);
        self.layers.push(LayerRecord {
            name: name.to_string(),
            kind: "conv".into(),
            precision: prec,
            input: x,
            params: w.len(),
        });
        let x = if prec == Precision::Int8 {
            self.fake_quant(name, x, &[1, 2, 3])?
        } else {
            x
        };
        let pool_spec = PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: tvec!(kh, kw),
            padding: PaddingSpec::Explicit(tvec!(pad, pad), tvec!(pad, pad)),
            dilations: None,
            strides: Some(tvec!(stride, stride)),
            input_channels: i,
            output_channels: o,
        };
        let k = self.weight(&format!("{name}.weight"), w, &ws, prec)?;
        let b = self.konst(
            &format!("{name}.bias"),
            bias.unwrap_or_else(|| Tensor::zero::<f32>(&[o]).expect("zeros")),
        )?;
        self.wire(
            name,
            Conv::new(pool_spec, KernelFormat::OIHW, 1, None),
            &[x, k, b],
        )
    }

    /// `nn.AvgPool2d(k)` (kernel = stride = k, no padding).
    pub fn avg_pool(&mut self, name: &str, x: OutletId, k: usize) -> Result<OutletId> {
        let c = self.shape(x)?[1];
        let pool_spec = PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: tvec!(k, k),
            padding: PaddingSpec::Valid,
            dilations: None,
            strides: Some(tvec!(k, k)),
            input_channels: c,
            output_channels: c,
        };
        self.wire(name, SumPool::new(pool_spec, false, true), &[x])
    }

    /// Multi-head attention core on `[B, T, C]` q/k/v; `mask` is added to the
    /// `[B, H, Tq, Tk]` scores.
    pub fn attention(
        &mut self,
        name: &str,
        q: OutletId,
        k: OutletId,
        v: OutletId,
        heads: usize,
        mask: Option<OutletId>,
    ) -> Result<OutletId> {
        let qs = self.shape(q)?;
        let c = qs[2];
        let d = c / heads;
        let q = self.reshape(&format!("{name}.q_heads"), q, 2, &[c], &[heads, d])?;
        let k = self.reshape(&format!("{name}.k_heads"), k, 2, &[c], &[heads, d])?;
        let v = self.reshape(&format!("{name}.v_heads"), v, 2, &[c], &[heads, d])?;
        // PyTorch scales q before the product.
        let q = self.scalar_mul(&format!("{name}.q_scaled"), q, (d as f32).powf(-0.5))?;
        let mut s = self.einsum(&format!("{name}.scores"), "bqhd,bkhd->bhqk", &[q, k])?;
        if let Some(m) = mask {
            s = self.add(&format!("{name}.mask"), s, m)?;
        }
        let p = self.softmax(&format!("{name}.softmax"), s, 3)?;
        let o = self.einsum(&format!("{name}.context"), "bhqk,bkhd->bqhd", &[p, v])?;
        self.reshape(&format!("{name}.merge"), o, 2, &[heads, d], &[c])
    }

    /// A CLIP `ResidualAttentionBlock` on `[B, T, C]`.
    pub fn residual_block(
        &mut self,
        prefix: &str,
        x: OutletId,
        width: usize,
        heads: usize,
        mask: Option<OutletId>,
    ) -> Result<OutletId> {
        let h = self.layer_norm(&format!("{prefix}.ln_1"), x, &format!("{prefix}.ln_1"))?;
        let qkv = self.linear(
            &format!("{prefix}.attn.in_proj"),
            h,
            &format!("{prefix}.attn.in_proj_weight"),
            Some(&format!("{prefix}.attn.in_proj_bias")),
            3 * width,
        )?;
        let q = self.slice(&format!("{prefix}.attn.q"), qkv, 2, 0, width)?;
        let k = self.slice(&format!("{prefix}.attn.k"), qkv, 2, width, 2 * width)?;
        let v = self.slice(&format!("{prefix}.attn.v"), qkv, 2, 2 * width, 3 * width)?;
        let a = self.attention(&format!("{prefix}.attn"), q, k, v, heads, mask)?;
        let a = self.linear(
            &format!("{prefix}.attn.out_proj"),
            a,
            &format!("{prefix}.attn.out_proj.weight"),
            Some(&format!("{prefix}.attn.out_proj.bias")),
            width,
        )?;
        let x = self.add(&format!("{prefix}.attn.residual"), x, a)?;
        let h = self.layer_norm(&format!("{prefix}.ln_2"), x, &format!("{prefix}.ln_2"))?;
        let h = self.linear(
            &format!("{prefix}.mlp.c_fc"),
            h,
            &format!("{prefix}.mlp.c_fc.weight"),
            Some(&format!("{prefix}.mlp.c_fc.bias")),
            4 * width,
        )?;
        let h = self.quick_gelu(&format!("{prefix}.mlp.gelu"), h)?;
        let h = self.linear(
            &format!("{prefix}.mlp.c_proj"),
            h,
            &format!("{prefix}.mlp.c_proj.weight"),
            Some(&format!("{prefix}.mlp.c_proj.bias")),
            width,
        )?;
        self.add(&format!("{prefix}.mlp.residual"), x, h)
    }

    pub fn finish(mut self, output: OutletId) -> Result<TypedModel> {
        self.model.select_output_outlets(&[output])?;
        Ok(self.model)
    }

    /// The model with the quantisable layers' inputs as extra outputs (for
    /// calibration), and the layer records.
    pub fn finish_with_layers(
        mut self,
        output: OutletId,
    ) -> Result<(TypedModel, Vec<LayerRecord>)> {
        let mut outs = vec![output];
        outs.extend(self.layers.iter().map(|l| l.input));
        self.model.select_output_outlets(&outs)?;
        Ok((self.model, self.layers))
    }
}

/// The image encoder: `[batch, 3, R, R]` f32 → `[batch, embed_dim]`, fp32.
pub fn image_encoder(sd: &StateDict, cfg: &ClipConfig, batch: usize) -> Result<TypedModel> {
    let b = image_builder(sd, cfg, batch, QuantPlan::default())?;
    b.0.finish(b.1)
}

/// The image encoder with weights stored as `plan` says; also returns the
/// quantisable layers (their inputs are extra outputs when `taps` is set).
pub fn image_encoder_with(
    sd: &StateDict,
    cfg: &ClipConfig,
    batch: usize,
    plan: QuantPlan,
    taps: bool,
) -> Result<(TypedModel, Vec<LayerRecord>)> {
    let (b, out) = image_builder(sd, cfg, batch, plan)?;
    if taps {
        b.finish_with_layers(out)
    } else {
        let layers = b.layers.clone();
        Ok((b.finish(out)?, layers))
    }
}

fn image_builder<'a>(
    sd: &'a StateDict,
    cfg: &ClipConfig,
    batch: usize,
    plan: QuantPlan,
) -> Result<(Builder<'a>, OutletId)> {
    let build = |b: &mut Builder<'a>| {
        if cfg.is_vit() {
            vit::build(b, cfg, batch)
        } else {
            resnet::build(b, cfg, batch)
        }
    };
    let mut b = Builder::with_plan(sd, plan.clone());
    let out = build(&mut b)?;
    if b.collected.is_empty() {
        return Ok((b, out));
    }
    // Second pass: the same graph, its low-precision weights pooled.
    let collected = std::mem::take(&mut b.collected);
    let mut b = Builder::with_plan(sd, plan);
    b.wire_pools(&collected)?;
    let out = build(&mut b)?;
    Ok((b, out))
}

/// The text encoder: `[batch, context_length]` i64 tokens → `[batch, embed_dim]`.
pub fn text_encoder(sd: &StateDict, cfg: &ClipConfig, batch: usize) -> Result<TypedModel> {
    text::build(sd, cfg, batch)
}
