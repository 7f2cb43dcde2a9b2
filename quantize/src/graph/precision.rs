//! Storage precision of the weights and simulated int8 activations.
//!
//! - fp16: a matrix is an f16 constant followed by a cast to f32, so the file
//!   holds f16 and the arithmetic stays f32 (tract's arm64 fp16 kernels would
//!   otherwise accumulate in f16).
//! - int8: weights are symmetric per output channel (`q = round(w / s)`,
//!   `s = max|w| / 127`), stored as i8 with an f32 scale per channel. The
//!   layer's input is quantised too, dynamically per token (or per tensor for
//!   convolutions) or statically with a calibrated scale, and dequantised, so
//!   plain tract computes exactly what an int8 kernel would (up to f32
//!   accumulation). LayerNorm, softmax and residual adds stay f32.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tract_core::internal::*;
use tract_core::ops::cast::cast;
use tract_core::ops::math;
use tract_core::ops::nn::{Reduce, Reducer};

use super::{Builder, Result};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    Fp16,
    Int8,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Int8 => "int8",
        })
    }
}

/// How int8 layers quantise their input activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ActivationQuant {
    /// Scale from each token's (or, for convolutions, each image's) max |x|.
    #[default]
    DynamicPerToken,
    /// One calibrated scale per layer.
    StaticPerTensor,
}

/// Which precision each quantisable layer (and the other matrices) use.
#[derive(Debug, Clone, Default)]
pub struct QuantPlan {
    /// Precision of linear and convolution weights without an override.
    pub layers: Precision,
    /// Per-layer overrides (mixed precision).
    pub overrides: BTreeMap<String, Precision>,
    /// Embeddings and projections: fp32 or fp16.
    pub other_weights: Precision,
    pub activation: ActivationQuant,
    /// Calibrated max |x| of each int8 layer's input (static activations).
    pub activation_absmax: BTreeMap<String, f32>,
}

impl QuantPlan {
    pub fn uniform(p: Precision) -> Self {
        QuantPlan {
            layers: p,
            other_weights: if p == Precision::Fp32 {
                Precision::Fp32
            } else {
                Precision::Fp16
            },
            ..Default::default()
        }
    }

    pub fn precision_for(&self, layer: &str) -> Precision {
        *self.overrides.get(layer).unwrap_or(&self.layers)
    }
}

/// Low-precision weights gathered into one constant per dtype (see
/// [`Builder::weight`]): tract-nnef folds `cast(const)` into an f32 constant
/// when the result fits its 4 MiB folding budget, which would store small
/// matrices as f32; one pooled constant stays f16/i8 on disk.
#[derive(Debug, Clone, Default)]
pub struct WeightPools {
    pub f16: Vec<half::f16>,
    pub i8: Vec<i8>,
    /// Outlets of the pools cast to f32, once wired.
    pub f16_outlet: Option<OutletId>,
    pub i8_outlet: Option<OutletId>,
    /// Read position in each pool while wiring slices.
    pub f16_pos: usize,
    pub i8_pos: usize,
}

/// A quantisable layer as wired into a graph.
#[derive(Debug, Clone)]
pub struct LayerRecord {
    pub name: String,
    /// "linear" or "conv".
    pub kind: String,
    pub precision: Precision,
    /// The layer's input (before any activation quantisation).
    pub input: OutletId,
    /// Weight parameter count.
    pub params: usize,
}

/// Symmetric per-output-channel int8: (values, scale per channel).
pub fn quantize_per_channel(w: &[f32], out: usize) -> (Vec<i8>, Vec<f32>) {
    let per = w.len() / out;
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(out);
    for row in w.chunks(per) {
        let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let s = if amax > 0.0 { amax / 127.0 } else { 1.0 };
        scales.push(s);
        q.extend(
            row.iter()
                .map(|v| (v / s).round_ties_even().clamp(-127.0, 127.0) as i8),
        );
    }
    (q, scales)
}

/// Stored values of one low-precision weight.
#[derive(Debug, Clone)]
pub enum PoolValues {
    F16(Vec<half::f16>),
    I8(Vec<i8>),
}

impl PoolValues {
    fn len(&self) -> usize {
        match self {
            PoolValues::F16(v) => v.len(),
            PoolValues::I8(v) => v.len(),
        }
    }
}

impl Builder<'_> {
    /// A weight constant in the given storage precision, as an f32 outlet.
    pub fn weight(
        &mut self,
        name: &str,
        data: Vec<f32>,
        shape: &[usize],
        prec: Precision,
    ) -> Result<OutletId> {
        match prec {
            Precision::Fp32 => {
                let t = tensor1(&data).into_shape(shape)?;
                self.konst(name, t)
            }
            Precision::Fp16 => {
                let h: Vec<half::f16> = data.iter().map(|v| half::f16::from_f32(*v)).collect();
                self.pooled(name, PoolValues::F16(h), shape)
            }
            Precision::Int8 => {
                let (q, scales) = quantize_per_channel(&data, shape[0]);
                let f = self.pooled(name, PoolValues::I8(q), shape)?;
                let mut sshape = vec![1usize; shape.len()];
                sshape[0] = shape[0];
                let s = self.konst(
                    &format!("{name}.scale"),
                    tensor1(&scales).into_shape(&sshape)?,
                )?;
                self.mul(&format!("{name}.dequant"), f, s)
            }
        }
    }

    /// `values` as an f32 outlet of `shape`. Without pools: a constant and a
    /// cast. With pools (second build pass): a slice of the pooled constant,
    /// which the pass before collected in the same order.
    fn pooled(&mut self, name: &str, values: PoolValues, shape: &[usize]) -> Result<OutletId> {
        let len = values.len();
        let Some(pools) = self.pools.as_mut() else {
            let t = match &values {
                PoolValues::F16(h) => tensor1(h).into_shape(shape)?,
                PoolValues::I8(q) => tensor1(q).into_shape(shape)?,
            };
            self.collected.push(values);
            let c = self.konst(&format!("{name}.stored"), t)?;
            return self.wire(&format!("{name}.to_f32"), cast(f32::datum_type()), &[c]);
        };
        let (outlet, pos) = match values {
            PoolValues::F16(_) => (pools.f16_outlet, &mut pools.f16_pos),
            PoolValues::I8(_) => (pools.i8_outlet, &mut pools.i8_pos),
        };
        let start = *pos;
        *pos += len;
        let outlet = outlet.context("weight pool not wired")?;
        let s = self.slice(&format!("{name}.slice"), outlet, 0, start, start + len)?;
        self.reshape(&format!("{name}.shape"), s, 0, &[len], shape)
    }

    /// Wires the pools gathered by a first pass as constants cast to f32.
    pub fn wire_pools(&mut self, collected: &[PoolValues]) -> Result<()> {
        let mut pools = WeightPools::default();
        for v in collected {
            match v {
                PoolValues::F16(h) => pools.f16.extend_from_slice(h),
                PoolValues::I8(q) => pools.i8.extend_from_slice(q),
            }
        }
        if !pools.f16.is_empty() {
            let c = self.konst("weights.f16", tensor1(&pools.f16))?;
            pools.f16_outlet =
                Some(self.wire("weights.f16.to_f32", cast(f32::datum_type()), &[c])?);
        }
        if !pools.i8.is_empty() {
            let c = self.konst("weights.i8", tensor1(&pools.i8))?;
            pools.i8_outlet =
                Some(self.wire("weights.i8.to_f32", cast(f32::datum_type()), &[c])?);
        }
        pools.f16.clear();
        pools.i8.clear();
        self.pools = Some(pools);
        Ok(())
    }

    /// Quantise-dequantise `x` to int8 levels. Dynamic: one scale per slice
    /// reduced over `axes`; static: the calibrated scale of `layer`.
    pub fn fake_quant(&mut self, layer: &str, x: OutletId, axes: &[usize]) -> Result<OutletId> {
        let name = format!("{layer}.act_q");
        let scale = match (self.plan.activation, self.plan.activation_absmax.get(layer)) {
            (ActivationQuant::StaticPerTensor, Some(&amax)) => {
                let s = if amax > 0.0 { amax / 127.0 } else { 1.0 };
                self.konst(&format!("{name}.scale"), tensor0(s))?
            }
            _ => {
                let a = self.wire(&format!("{name}.abs"), math::abs(), &[x])?;
                let m = self.wire(
                    &format!("{name}.absmax"),
                    Reduce::new(axes.iter().copied().collect(), Reducer::Max),
                    &[a],
                )?;
                let tiny = self.konst(&format!("{name}.tiny"), tensor0(1e-12f32))?;
                let m = self.bin(&format!("{name}.nonzero"), Box::new(math::Max), m, tiny)?;
                self.scalar_mul(&format!("{name}.scale"), m, 1.0 / 127.0)?
            }
        };
        let d = self.bin(&format!("{name}.div"), Box::new(math::Div), x, scale)?;
        let r = self.wire(&format!("{name}.round"), math::round_half_to_even(), &[d])?;
        let lo = self.konst(&format!("{name}.lo"), tensor0(-127f32))?;
        let hi = self.konst(&format!("{name}.hi"), tensor0(127f32))?;
        let r = self.bin(&format!("{name}.clamp_lo"), Box::new(math::Max), r, lo)?;
        let r = self.bin(&format!("{name}.clamp_hi"), Box::new(math::Min), r, hi)?;
        self.mul(&format!("{name}.dequant"), r, scale)
    }
}
