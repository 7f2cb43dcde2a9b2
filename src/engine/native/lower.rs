//! Lowering: a decluttered tract graph becomes, once at load, a static list
//! of our ops over value ids (arena tensors) and f32 constants. int8 layers
//! are recognised by their pattern: the activation's fake quantisation
//! (`Mul(Min(Max(RoundHalfToEven(Mul(x, Recip(s))), -127), 127), s)`)
//! feeding a product whose constant weights lie on a per-channel int8 grid;
//! such a product reads `x` and `s` and runs in integers.

use std::collections::HashMap;

use tract_core::internal::*;
use tract_core::ops::array::{Slice, TypedConcat};
use tract_core::ops::cast::Cast;
use tract_core::ops::change_axes::AxisOp;
use tract_core::ops::cnn::{Conv as TConv, KernelFormat, SumPool};
use tract_core::ops::einsum::EinSum;
use tract_core::ops::konst::Const;
use tract_core::ops::nn::{DataFormat, Reduce as TReduce, Reducer, RmsNorm, Softmax, SoftmaxKind};

use super::ir::{prune, CopyPart, Kind, LowerError, Lowered, Operand, Step};
use super::linear::{ActQuant, Conv, ConvWeights, FloatWeights, Int8, MatMul, Rhs, Weights};
use super::ops::{self, AroundAxis, Binary, Pool2d, Reduce, Unary, MAX_RANK};
use super::winograd;
use crate::kernels::Kernels;

#[derive(Clone)]
enum Value {
    Const(Arc<Tensor>),
    /// A constant that is `src` cast to f32, not done yet: the weight blob
    /// of an int8 or fp16 bundle is sliced per layer first, so its f32
    /// image never exists whole.
    Cast(Arc<Tensor>),
    /// `q · scale` for an i8 `q` (an int8 layer's weights as the graph
    /// dequantises them), not done yet: the product reads `q` as is.
    Dequant {
        q: Arc<Tensor>,
        scale: Arc<Tensor>,
    },
    Val {
        id: usize,
        dims: Vec<usize>,
    },
}

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

struct Lowerer<'m> {
    model: &'m TypedModel,
    kernels: Kernels,
    float: FloatWeights,
    /// Whether f32 3 × 3 convolutions may take Winograd's products.
    winograd: bool,
    /// Consumers left of each outlet: large constants are dropped after
    /// their last one (weights live on packed, not twice).
    uses: HashMap<OutletId, usize>,
    values: HashMap<OutletId, Value>,
    lens: Vec<usize>,
    consts: Vec<Vec<f32>>,
    const_ids: HashMap<OutletId, usize>,
    steps: Vec<Step>,
}

/// `[c, h, w]` of one channels-first image (NCHW with one image, or CHW).
fn chw(format: DataFormat, dims: &[usize]) -> Option<[usize; 3]> {
    match (format, dims) {
        (DataFormat::NCHW, [1, c, h, w]) | (DataFormat::CHW, [c, h, w]) => Some([*c, *h, *w]),
        _ => None,
    }
}

/// A constant's values as f32 (widened from whatever number type it holds).
fn tensor_f32(t: &Tensor) -> Option<Vec<f32>> {
    let t = t.cast_to::<f32>().ok()?;
    let v = t.to_plain_array_view::<f32>().ok()?;
    Some(v.iter().copied().collect())
}

fn concrete(fact: &TypedFact) -> Option<Vec<usize>> {
    fact.shape.as_concrete().map(|s| s.to_vec())
}

/// Lowers `model`, packing int8 weights for `kernels`; `winograd`: f32 3 ×
/// 3 convolutions that fit take Winograd's products (the CPU engine), else
/// every convolution keeps its weights as they are (the CUDA backend reads
/// them as plain rows).
pub fn lower(
    model: &TypedModel,
    kernels: &Kernels,
    float: FloatWeights,
    winograd: bool,
) -> Result<Lowered, LowerError> {
    let fail = |node: &str, op: &str, why: String| LowerError {
        node: node.to_string(),
        op: op.to_string(),
        why,
    };
    if model.input_outlets().map(|o| o.len()).unwrap_or(0) != 1
        || model.output_outlets().map(|o| o.len()).unwrap_or(0) != 1
    {
        return Err(fail(
            "graph",
            "graph",
            "one input and one output are expected".into(),
        ));
    }
    let order = model
        .eval_order()
        .map_err(|e| fail("graph", "graph", format!("{e}")))?;
    let mut uses = HashMap::new();
    for node in &model.nodes {
        for i in &node.inputs {
            *uses.entry(*i).or_insert(0usize) += 1;
        }
    }
    let mut l = Lowerer {
        model,
        kernels: *kernels,
        float,
        winograd,
        uses,
        values: HashMap::new(),
        lens: Vec::new(),
        consts: Vec::new(),
        const_ids: HashMap::new(),
        steps: Vec::new(),
    };
    for id in order {
        let node = &model.nodes[id];
        l.node(node)
            .map_err(|why| fail(&node.name, &node.op.name(), why))?;
        l.release(node, &model.output_outlets().unwrap()[0]);
    }
    let input = match l.values.get(&model.input_outlets().unwrap()[0]) {
        Some(Value::Val { id, .. }) => *id,
        _ => return Err(fail("graph", "graph", "the input is not a tensor".into())),
    };
    let output = match l.values.get(&model.output_outlets().unwrap()[0]) {
        Some(Value::Val { id, .. }) => *id,
        _ => return Err(fail("graph", "graph", "the output is a constant".into())),
    };
    // Dead steps (the fake quantisation an int8 product no longer reads),
    // then element-wise ops fused into their producers' epilogues.
    prune(&mut l.steps, l.lens.len(), output);
    super::fuse::fuse(&mut l.steps, &l.lens, &l.consts, input, output);
    prune(&mut l.steps, l.lens.len(), output);
    Ok(Lowered {
        steps: l.steps,
        lens: l.lens,
        consts: l.consts,
        input,
        output,
    })
}

type R<T> = Result<T, String>;

/// One einsum axis: its size, position in `a`, strides in a, b and out.
#[derive(Clone, Copy)]
struct Ax {
    size: usize,
    pos_a: usize,
    a: usize,
    b: usize,
    o: usize,
}

/// Most values one tensor of the schedule may hold (1 GiB of f32): a
/// graph asking for more is refused at load, never allocated.
pub const MAX_TENSOR_LEN: usize = 1 << 28;

/// Constants larger than this many values are dropped after their last
/// consumer (small ones stay: the int8 pattern reads scalars late).
const RELEASE_CONST_LEN: usize = 4096;

fn materialize(v: &Value) -> R<Arc<Tensor>> {
    match v {
        Value::Const(t) => Ok(t.clone()),
        Value::Cast(src) => Ok(src
            .cast_to::<f32>()
            .map_err(|e| format!("casting a constant: {e}"))?
            .into_owned()
            .into_arc_tensor()),
        Value::Dequant { q, scale } => {
            let op: Box<dyn TypedOp> = Box::new(tract_core::ops::math::mul());
            let q = q
                .cast_to::<f32>()
                .map_err(|e| format!("casting a constant: {e}"))?;
            let out = op
                .eval_out_of_plan(tvec!(
                    q.into_owned().into_tvalue(),
                    scale.clone().into_tvalue()
                ))
                .map_err(|e| format!("dequantising: {e}"))?
                .ok_or("dequantising: no value")?;
            Ok(out[0].clone().into_arc_tensor())
        }
        Value::Val { .. } => Err("not a constant".into()),
    }
}

/// Floats or int8, as a product's weights come out of the graph.
enum Got {
    Float(Weights),
    Int8(Int8),
    /// A convolution's f32 weights (not f16-exact), plain rows.
    F32Rows(Vec<f32>),
}

/// Row-major strides.
fn strides(dims: &[usize]) -> Vec<usize> {
    ops::strides_of(dims)
}

impl Lowerer<'_> {
    fn release(&mut self, node: &TypedNode, output: &OutletId) {
        for i in &node.inputs {
            let left = self.uses.get_mut(i).map(|u| {
                *u = u.saturating_sub(1);
                *u
            });
            let large = match self.values.get(i) {
                Some(Value::Const(t)) | Some(Value::Cast(t)) => t.len() > RELEASE_CONST_LEN,
                Some(Value::Dequant { q, .. }) => q.len() > RELEASE_CONST_LEN,
                _ => false,
            };
            if left == Some(0) && large && i != output {
                self.values.remove(i);
            }
        }
    }

    /// A node whose inputs are all constants: evaluated now (shape ops on a
    /// pending cast stay pending, on the narrow type).
    fn fold(&mut self, node: &TypedNode, ins: Vec<Value>) -> R<Value> {
        if let (Some(c), [v]) = (node.op_as::<Cast>(), &ins[..]) {
            if c.to == f32::datum_type() {
                match v {
                    Value::Const(t)
                        if t.datum_type() != f32::datum_type() && t.datum_type().is_number() =>
                    {
                        return Ok(Value::Cast(t.clone()));
                    }
                    // Already f32, or pending as f32: the cast is a no-op.
                    Value::Const(t) if t.datum_type() == f32::datum_type() => return Ok(v.clone()),
                    Value::Cast(_) | Value::Dequant { .. } => return Ok(v.clone()),
                    _ => {}
                }
            }
        }
        let shape_op = node.op_is::<Slice>()
            || node.op_is::<AxisOp>()
            || node.op_is::<tract_core::ops::array::DynSlice>();
        if shape_op {
            if let [Value::Cast(src), rest @ ..] = &ins[..] {
                let mut inputs = tvec!(src.clone().into_tvalue());
                for v in rest {
                    inputs.push(materialize(v)?.into_tvalue());
                }
                let out = node
                    .op
                    .eval_out_of_plan(inputs)
                    .map_err(|e| format!("folding: {e}"))?
                    .ok_or("folding: no value")?;
                return Ok(Value::Cast(out[0].clone().into_arc_tensor()));
            }
        }
        // Axes added, removed or moved on dequantised weights: the same on
        // the int8 values and on their scales (same rank).
        if let (Some(op), [Value::Dequant { q, scale }]) = (node.op_as::<AxisOp>(), &ins[..]) {
            if matches!(op, AxisOp::Add(_) | AxisOp::Rm(_) | AxisOp::Move(..)) {
                let eval = |t: &Arc<Tensor>| -> Option<Arc<Tensor>> {
                    let out = node
                        .op
                        .eval_out_of_plan(tvec!(t.clone().into_tvalue()))
                        .ok()??;
                    Some(out[0].clone().into_arc_tensor())
                };
                if let (Some(q), Some(scale)) = (eval(q), eval(scale)) {
                    return Ok(Value::Dequant { q, scale });
                }
            }
        }
        if node
            .op_as::<tract_core::ops::binary::TypedBinOp>()
            .is_some()
            && node.op.name() == "Mul"
        {
            let pair = match &ins[..] {
                [Value::Cast(q), Value::Const(s)] | [Value::Const(s), Value::Cast(q)] => {
                    Some((q, s))
                }
                _ => None,
            };
            if let Some((q, s)) = pair {
                if q.datum_type() == i8::datum_type()
                    && q.rank() == s.rank()
                    && s.datum_type() == f32::datum_type()
                {
                    return Ok(Value::Dequant {
                        q: q.clone(),
                        scale: s.clone(),
                    });
                }
            }
        }
        let inputs = ins
            .iter()
            .map(|v| materialize(v).map(|t| t.into_tvalue()))
            .collect::<R<TVec<_>>>()?;
        let out = node
            .op
            .eval_out_of_plan(inputs)
            .map_err(|e| format!("folding: {e}"))?
            .ok_or("folding: no value")?;
        Ok(Value::Const(out[0].clone().into_arc_tensor()))
    }

    fn new_val(&mut self, dims: Vec<usize>) -> Value {
        let id = self.lens.len();
        // Shapes were checked against MAX_TENSOR_LEN when the node was
        // lowered (see `node`).
        self.lens.push(dims.iter().product());
        Value::Val { id, dims }
    }

    fn value(&self, o: OutletId) -> R<Value> {
        self.values
            .get(&o)
            .cloned()
            .ok_or_else(|| format!("input {o:?} was not lowered"))
    }

    fn dims(&self, o: OutletId) -> R<Vec<usize>> {
        match self.value(o)? {
            Value::Const(t) | Value::Cast(t) | Value::Dequant { q: t, .. } => {
                Ok(t.shape().to_vec())
            }
            Value::Val { dims, .. } => Ok(dims),
        }
    }

    /// An operand for generic f32 ops (constants widened to f32 once).
    fn operand(&mut self, o: OutletId) -> R<Operand> {
        match self.value(o)? {
            Value::Val { id, .. } => Ok(Operand::Val(id)),
            v @ (Value::Const(_) | Value::Cast(_) | Value::Dequant { .. }) => {
                let t = materialize(&v)?;
                if let Some(&i) = self.const_ids.get(&o) {
                    return Ok(Operand::Const(i));
                }
                let v = tensor_f32(&t).ok_or("a constant that is not a plain number tensor")?;
                self.consts.push(v);
                let i = self.consts.len() - 1;
                self.const_ids.insert(o, i);
                Ok(Operand::Const(i))
            }
        }
    }

    fn push(&mut self, node: &TypedNode, kind: Kind, dims: Vec<usize>) {
        let v = self.new_val(dims);
        let Value::Val { id, .. } = v else {
            unreachable!()
        };
        self.steps.push(Step {
            name: node.name.clone(),
            kind,
            out: id,
            posts: Vec::new(),
        });
        self.values.insert(OutletId::new(node.id, 0), v);
    }

    fn const_scalar(&self, o: OutletId) -> Option<f32> {
        match self.values.get(&o)? {
            Value::Const(t) | Value::Cast(t) if t.len() == 1 => t.cast_to_scalar::<f32>().ok(),
            _ => None,
        }
    }

    /// `o`, or what it is a no-op f32 → f32 cast of (the NNEF reader
    /// leaves such casts around constants and values).
    fn skip(&self, mut o: OutletId) -> OutletId {
        loop {
            let n = &self.model.nodes[o.node];
            let noop = n.op_as::<Cast>().is_some_and(|c| {
                c.to == f32::datum_type()
                    && n.inputs.len() == 1
                    && self
                        .model
                        .outlet_fact(n.inputs[0])
                        .map(|f| f.datum_type)
                        .is_ok_and(|d| d == f32::datum_type())
            });
            if !noop {
                return o;
            }
            o = n.inputs[0];
        }
    }

    fn op_of(&self, o: OutletId) -> (&TypedNode, String) {
        let n = &self.model.nodes[self.skip(o).node];
        (n, n.op.name().to_string())
    }

    /// `(x, axis, eps)` when `node` is LayerNorm's core as written:
    /// `Mul(c, Rsqrt(Add(Div(ΣSquare(c), n), eps)))` with
    /// `c = Sub(x, Mul(Σx, 1/n))`, both sums over one `axis` of `n`
    /// (`Mul` by `1/n` and `Div` by `n` accepted either way).
    fn layer_norm(&self, node: &TypedNode) -> Option<(OutletId, usize, f32)> {
        let scalar = |o: OutletId| self.const_scalar(self.skip(o));
        let two = |n: &TypedNode| -> Option<(OutletId, OutletId)> {
            (n.inputs.len() == 2).then(|| (n.inputs[0], n.inputs[1]))
        };
        let (a, b) = two(node)?;
        for (c, r) in [(a, b), (b, a)] {
            let (cn, cname) = self.op_of(c);
            let (rn, rname) = self.op_of(r);
            if cname != "Sub" || rname != "Rsqrt" {
                continue;
            }
            let (x, mean) = two(cn)?;
            // mean = Σx · (1/n) or Σx / n, over one axis.
            let (mn, mname) = self.op_of(mean);
            let (sum, k) = two(mn)?;
            let (sn, _) = self.op_of(sum);
            let red = sn.op_as::<TReduce>()?;
            if red.reducer != Reducer::Sum
                || red.axes.len() != 1
                || self.skip(sn.inputs[0]) != self.skip(x)
            {
                continue;
            }
            let axis = red.axes[0];
            let n = *self.dims(x).ok()?.get(axis)? as f32;
            let k = scalar(k)?;
            let mean_ok =
                (mname == "Mul" && (k * n - 1.0).abs() < 1e-6) || (mname == "Div" && k == n);
            // var = ΣSquare(c) / n (or · 1/n); eps added; rsqrt.
            let (add, name) = self.op_of(rn.inputs[0]);
            if !mean_ok || name != "Add" {
                continue;
            }
            let (v, e) = two(add)?;
            let (var, eps) = match (scalar(v), scalar(e)) {
                (None, Some(eps)) => (v, eps),
                (Some(eps), None) => (e, eps),
                _ => continue,
            };
            let (vn, vname) = self.op_of(var);
            let (vsum, vk) = two(vn)?;
            let vk = scalar(vk)?;
            let var_ok =
                (vname == "Div" && vk == n) || (vname == "Mul" && (vk * n - 1.0).abs() < 1e-6);
            let (vs, _) = self.op_of(vsum);
            let vred = vs.op_as::<TReduce>()?;
            let (sq, sqname) = self.op_of(vs.inputs[0]);
            if var_ok
                && vred.reducer == Reducer::Sum
                && vred.axes[..] == [axis]
                && sqname == "Square"
                && self.skip(sq.inputs[0]) == self.skip(c)
                && self.dims(x).ok().as_deref()
                    == self
                        .model
                        .outlet_fact(OutletId::new(node.id, 0))
                        .ok()
                        .and_then(|f| f.shape.as_concrete())
            {
                return Some((x, axis, eps));
            }
        }
        None
    }

    /// `(x, s)` when `o` is an activation's fake quantisation.
    fn fake_quant(&self, o: OutletId) -> Option<(OutletId, OutletId)> {
        let (d, name) = self.op_of(o);
        if name != "Mul" || d.inputs.len() != 2 {
            return None;
        }
        for (qi, si) in [(0, 1), (1, 0)] {
            let (q, s) = (d.inputs[qi], self.skip(d.inputs[si]));
            if let Some(x) = self.quant_of(q, s) {
                return Some((x, s));
            }
        }
        None
    }

    /// `x` when `q = Min(Max(RoundHalfToEven(Mul(x, 1/s)), -127), 127)`.
    fn quant_of(&self, q: OutletId, s: OutletId) -> Option<OutletId> {
        let clamp = |o: OutletId, op: &str, bound: f32| -> Option<OutletId> {
            let (n, name) = self.op_of(o);
            if name != op || n.inputs.len() != 2 {
                return None;
            }
            (0..2).find_map(|i| {
                (self.const_scalar(n.inputs[1 - i]) == Some(bound)).then_some(n.inputs[i])
            })
        };
        let lo = clamp(q, "Min", 127.0)?;
        let round = clamp(lo, "Max", -127.0)?;
        let (rn, name) = self.op_of(round);
        if name != "RoundHalfToEven" {
            return None;
        }
        let (mul, name) = self.op_of(rn.inputs[0]);
        // As written (`x / s`), or as tract's declutter leaves it
        // (`x · recip(s)`).
        if name == "Div" && mul.inputs.len() == 2 && self.skip(mul.inputs[1]) == s {
            return Some(mul.inputs[0]);
        }
        if name != "Mul" || mul.inputs.len() != 2 {
            return None;
        }
        for (xi, ri) in [(0, 1), (1, 0)] {
            let (x, r) = (mul.inputs[xi], mul.inputs[ri]);
            let (rnode, rname) = self.op_of(r);
            let is_recip = rname == "Recip" && self.skip(rnode.inputs[0]) == s;
            let is_const_recip = match (self.const_scalar(r), self.const_scalar(s)) {
                (Some(r), Some(s)) => r == 1.0 / s,
                _ => false,
            };
            if is_recip || is_const_recip {
                return Some(x);
            }
        }
        None
    }

    fn node(&mut self, node: &TypedNode) -> R<()> {
        let model = self.model;
        let out_fact = model
            .outlet_fact(OutletId::new(node.id, 0))
            .map_err(|e| e.to_string())?;
        let name = node.op.name().to_string();
        if let Some(k) = node.op_as::<Const>() {
            self.values
                .insert(OutletId::new(node.id, 0), Value::Const(k.val().clone()));
            return Ok(());
        }
        if node.outputs.len() != 1 {
            return Err("ops with several outputs are not supported".into());
        }
        let consts: Option<Vec<Value>> = node
            .inputs
            .iter()
            .map(|o| match self.values.get(o) {
                Some(v @ (Value::Const(_) | Value::Cast(_) | Value::Dequant { .. })) => {
                    Some(v.clone())
                }
                _ => None,
            })
            .collect();
        if let Some(ins) = consts.filter(|v| !v.is_empty()) {
            let v = self.fold(node, ins)?;
            self.values.insert(OutletId::new(node.id, 0), v);
            return Ok(());
        }
        let dims = concrete(out_fact).ok_or("the output shape is not fixed")?;
        let len = dims.iter().try_fold(1usize, |a, d| a.checked_mul(*d));
        if len.is_none_or(|l| l > MAX_TENSOR_LEN) {
            return Err(format!(
                "a tensor of shape {dims:?} (more than {MAX_TENSOR_LEN} values)"
            ));
        }
        if dims.len() > MAX_RANK {
            return Err(format!("rank {} is past {MAX_RANK}", dims.len()));
        }
        if name == "Source" {
            if out_fact.datum_type != f32::datum_type() {
                return Err(format!("input type {:?}", out_fact.datum_type));
            }
            let v = self.new_val(dims);
            self.values.insert(OutletId::new(node.id, 0), v);
            return Ok(());
        }
        if out_fact.datum_type != f32::datum_type() {
            return Err(format!(
                "output type {:?} (only f32 tensors run natively)",
                out_fact.datum_type
            ));
        }
        let input = |i: usize| -> R<OutletId> {
            node.inputs
                .get(i)
                .copied()
                .ok_or_else(|| format!("input {i} missing"))
        };
        // Same memory, new shape.
        let alias = |this: &mut Self| -> R<()> {
            let v = match this.value(input(0)?)? {
                Value::Val { id, .. } => Value::Val {
                    id,
                    dims: dims.clone(),
                },
                Value::Const(_) | Value::Cast(_) | Value::Dequant { .. } => {
                    return Err("a shape op on a constant (fold constants first)".into())
                }
            };
            this.values.insert(OutletId::new(node.id, 0), v);
            Ok(())
        };
        if let Some(c) = node.op_as::<Cast>() {
            let from = model
                .outlet_fact(input(0)?)
                .map_err(|e| e.to_string())?
                .datum_type;
            if c.to == f32::datum_type() && from == f32::datum_type() {
                return alias(self);
            }
            return Err(format!("cast to {:?}", c.to));
        }
        if let Some(op) = node.op_as::<AxisOp>() {
            return match op {
                AxisOp::Add(_) | AxisOp::Rm(_) | AxisOp::Reshape(..) => alias(self),
                AxisOp::Move(from, to) => {
                    let src = self.dims(input(0)?)?;
                    let mut axes: Vec<usize> = (0..src.len()).collect();
                    let a = axes.remove(*from);
                    axes.insert(*to, a);
                    let st = ops::strides_of(&src);
                    let ss = axes.iter().map(|&a| st[a]).collect();
                    let part = CopyPart {
                        src: self.operand(input(0)?)?,
                        dims: dims.clone(),
                        src_off: 0,
                        ss,
                        dst_off: 0,
                        sd: ops::strides_of(&dims),
                    };
                    self.push(node, Kind::Copy { parts: vec![part] }, dims);
                    Ok(())
                }
            };
        }
        if let Some(op) = node.op_as::<Slice>() {
            let start = op.start.to_usize().map_err(|e| e.to_string())?;
            return self.slice(node, op.axis, start, dims);
        }
        if let Some(op) = node.op_as::<tract_core::ops::array::DynSlice>() {
            let start = match self.values.get(&input(1)?) {
                Some(Value::Const(t)) if t.len() == 1 => t
                    .cast_to_scalar::<i64>()
                    .ok()
                    .or_else(|| {
                        t.cast_to::<TDim>().ok().and_then(|d| {
                            d.to_plain_array_view::<TDim>()
                                .ok()?
                                .iter()
                                .next()?
                                .to_i64()
                                .ok()
                        })
                    })
                    .and_then(|v| usize::try_from(v).ok())
                    .ok_or("a slice start that is not a number")?,
                _ => return Err("a slice start that is not a constant".into()),
            };
            return self.slice(node, op.axis, start, dims);
        }
        if let Some(op) = node.op_as::<TypedConcat>() {
            let sd = ops::strides_of(&dims);
            let mut parts = Vec::new();
            let mut at = 0;
            for &i in &node.inputs {
                let d = self.dims(i)?;
                parts.push(CopyPart {
                    src: self.operand(i)?,
                    dims: d.clone(),
                    src_off: 0,
                    ss: ops::strides_of(&d),
                    dst_off: at * sd[op.axis],
                    sd: sd.clone(),
                });
                at += d[op.axis];
            }
            self.push(node, Kind::Copy { parts }, dims);
            return Ok(());
        }
        if name == "Mul" {
            if let Some((x, axis, eps)) = self.layer_norm(node) {
                let around = AroundAxis::new(&dims, axis);
                let x = self.operand(x)?;
                let kind = Kind::RmsNorm {
                    around,
                    eps,
                    center: true,
                    x,
                };
                self.push(node, kind, dims);
                return Ok(());
            }
        }
        if let Some(op) = Binary::from_name(&name) {
            if node
                .op_as::<tract_core::ops::binary::TypedBinOp>()
                .is_none()
                || node.inputs.len() != 2
            {
                return Err("not a two-input op".into());
            }
            let (da, db) = (self.dims(input(0)?)?, self.dims(input(1)?)?);
            if da.len() != dims.len() || db.len() != dims.len() {
                return Err(format!("ranks {da:?} {db:?} -> {dims:?}"));
            }
            let kind = Kind::Binary {
                op,
                sa: ops::broadcast_strides(&da, &dims),
                sb: ops::broadcast_strides(&db, &dims),
                a: self.operand(input(0)?)?,
                b: self.operand(input(1)?)?,
                dims: dims.clone(),
            };
            self.push(node, kind, dims);
            return Ok(());
        }
        if let Some(op) = Unary::from_name(&name) {
            if node
                .op_as::<tract_core::ops::element_wise::ElementWiseOp>()
                .is_none()
            {
                return Err("not an element-wise op".into());
            }
            let x = self.operand(input(0)?)?;
            self.push(node, Kind::Unary { op, x }, dims);
            return Ok(());
        }
        if let Some(op) = node.op_as::<TReduce>() {
            let kind = match op.reducer {
                Reducer::Sum => Reduce::Sum,
                Reducer::Max => Reduce::Max,
                Reducer::Min => Reduce::Min,
                Reducer::MeanOfSquares => Reduce::MeanOfSquares,
                ref r => return Err(format!("reducer {r:?}")),
            };
            let src = self.dims(input(0)?)?;
            let count = op.axes.iter().map(|&a| src[a]).product();
            let kind = Kind::Reduce {
                op: kind,
                sx: ops::strides_of(&src),
                so: ops::broadcast_strides(&dims, &src),
                dims: src,
                count,
                x: self.operand(input(0)?)?,
            };
            self.push(node, kind, dims);
            return Ok(());
        }
        if let Some(op) = node.op_as::<Softmax>() {
            if op.axes.len() != 1 || op.kind != SoftmaxKind::Softmax || op.quant_output_dt.is_some()
            {
                return Err(format!("softmax over {:?} ({:?})", op.axes, op.kind));
            }
            let around = AroundAxis::new(&dims, op.axes[0]);
            let x = self.operand(input(0)?)?;
            self.push(node, Kind::Softmax { around, x }, dims);
            return Ok(());
        }
        if let Some(op) = node.op_as::<RmsNorm>() {
            let eps = op.eps.cast_to_scalar::<f32>().map_err(|e| e.to_string())?;
            let around = AroundAxis::new(&dims, op.axis);
            let x = self.operand(input(0)?)?;
            self.push(
                node,
                Kind::RmsNorm {
                    around,
                    eps,
                    center: false,
                    x,
                },
                dims,
            );
            return Ok(());
        }
        if let Some(op) = node.op_as::<SumPool>() {
            let full = self.dims(input(0)?)?;
            let ps = &op.pool_spec;
            let (Some(src), Some(out)) = (chw(ps.data_format, &full), chw(ps.data_format, &dims))
            else {
                return Err(format!("pool over {full:?} ({:?})", ps.data_format));
            };
            if ps.kernel_shape.len() != 2 {
                return Err(format!("pool of kernel {:?}", ps.kernel_shape));
            }
            let pad = ps.computed_padding(&src[1..]);
            let strides = ps.strides();
            let pool = Pool2d {
                c: src[0],
                h: src[1],
                w: src[2],
                oh: out[1],
                ow: out[2],
                k: [ps.kernel_shape[0], ps.kernel_shape[1]],
                stride: [strides[0], strides[1]],
                pad: [pad[0].pad_before, pad[1].pad_before],
                normalize: op.normalize,
                count_include_pad: op.count_include_pad,
            };
            if ps.dilations().iter().any(|&d| d != 1) {
                return Err("dilated pooling".into());
            }
            let x = self.operand(input(0)?)?;
            self.push(node, Kind::Pool { pool, x }, dims);
            return Ok(());
        }
        if let Some(op) = node.op_as::<TConv>() {
            return self.conv(node, op, dims);
        }
        if let Some(op) = node.op_as::<EinSum>() {
            return self.einsum(node, op, dims);
        }
        Err("no native op for it".into())
    }

    /// `dims` of input 0 from `start` along `axis`: a strided copy.
    fn slice(&mut self, node: &TypedNode, axis: usize, start: usize, dims: Vec<usize>) -> R<()> {
        let src = self.dims(node.inputs[0])?;
        let st = ops::strides_of(&src);
        let part = CopyPart {
            src: self.operand(node.inputs[0])?,
            dims: dims.clone(),
            src_off: start * st[axis],
            ss: st,
            dst_off: 0,
            sd: ops::strides_of(&dims),
        };
        self.push(node, Kind::Copy { parts: vec![part] }, dims);
        Ok(())
    }

    fn const_f32(&self, o: OutletId) -> Option<Vec<f32>> {
        match self.values.get(&o)? {
            Value::Const(t) | Value::Cast(t) => tensor_f32(t),
            v @ Value::Dequant { .. } => materialize(v).ok().and_then(|t| tensor_f32(&t)),
            _ => None,
        }
    }

    /// A product's constant weights as `n × k` (row `j` at offsets
    /// `n_off[j] + k_off[t]` of the tensor `o`, of shape `dims`), in the
    /// bundle's precision: int8 read as stored when `int8` is asked and the
    /// graph dequantises i8 with a scale per output channel; f16 read as
    /// stored; else f32 values (int8 recovered from them when asked and
    /// they lie on a grid, f16 when exact).
    fn weights(
        &self,
        o: OutletId,
        n_off: &[usize],
        k_off: &[usize],
        dims: &[usize],
        int8: bool,
        conv: bool,
    ) -> R<Got> {
        let (n, k) = (n_off.len(), k_off.len());
        let kern = &self.kernels;
        // A convolution's int8 and f32 weights stay plain rows (the left
        // side of its product); in an fp32 bundle every float convolution
        // is f32.
        let pack = (!conv).then_some(kern);
        let float = |w: Vec<f32>| {
            if conv && (self.float == FloatWeights::F32 || !Weights::f16_exact(&w)) {
                Got::F32Rows(w)
            } else {
                Got::Float(Weights::new(w, n, k, kern, self.float))
            }
        };
        match self.value(o)? {
            Value::Dequant { q, scale } if int8 && q.shape() == dims => {
                let ss = ops::broadcast_strides(scale.shape(), dims);
                let sb = strides(dims);
                let at = |flat: usize| -> usize {
                    sb.iter()
                        .zip(dims)
                        .zip(&ss)
                        .map(|((st, d), s)| (flat / st % d) * s)
                        .sum()
                };
                let flat_k_varies = k_off.iter().any(|&t| {
                    at(n_off.first().copied().unwrap_or(0) + t)
                        != at(n_off.first().copied().unwrap_or(0))
                });
                if !flat_k_varies {
                    let qv = q.to_plain_array_view::<i8>().map_err(|e| e.to_string())?;
                    let qv = qv.as_slice().ok_or("weights not contiguous")?;
                    let sv = scale
                        .to_plain_array_view::<f32>()
                        .map_err(|e| e.to_string())?;
                    let sv = sv.as_slice().ok_or("scales not contiguous")?;
                    let mut w = Vec::with_capacity(n * k);
                    for &nn in n_off {
                        w.extend(k_off.iter().map(|&kk| qv[nn + kk]));
                    }
                    let scale: Vec<f32> = n_off.iter().map(|&nn| sv[at(nn)]).collect();
                    return Ok(Got::Int8(Int8::from_parts(w, scale, n, k, pack)));
                }
            }
            Value::Cast(src) if src.datum_type() == f16::datum_type() && src.shape() == dims => {
                let v = src
                    .to_plain_array_view::<f16>()
                    .map_err(|e| e.to_string())?;
                let v = v.as_slice().ok_or("weights not contiguous")?;
                let mut w = Vec::with_capacity(n * k);
                for &nn in n_off {
                    w.extend(k_off.iter().map(|&kk| v[nn + kk]));
                }
                return Ok(Got::Float(Weights::F16(kern.pack_f16(&w, n, k).into())));
            }
            _ => {}
        }
        log::debug!(
            "weights of {:?} read through f32 ({})",
            self.model.nodes[o.node].name,
            match self.values.get(&o) {
                Some(Value::Dequant { q, scale }) =>
                    format!("dequant {:?} x {:?}", q.shape(), scale.shape()),
                Some(Value::Cast(t)) => format!("cast {:?}", t.datum_type()),
                Some(Value::Const(t)) => format!("const {:?}", t.datum_type()),
                _ => "value".into(),
            }
        );
        let bv = self
            .const_f32(o)
            .ok_or("weights are not constant numbers")?;
        let mut w = Vec::with_capacity(n * k);
        for &nn in n_off {
            w.extend(k_off.iter().map(|&kk| bv[nn + kk]));
        }
        drop(bv);
        if int8 {
            match Int8::recover(w, n, k, pack) {
                Ok(w) => Ok(Got::Int8(w)),
                Err(w) => Ok(float(w)),
            }
        } else {
            Ok(float(w))
        }
    }

    fn conv(&mut self, node: &TypedNode, op: &TConv, dims: Vec<usize>) -> R<()> {
        let ps = &op.pool_spec;
        let x_full = self.dims(node.inputs[0])?;
        let x_dims = chw(ps.data_format, &x_full);
        let out = chw(ps.data_format, &dims);
        if op.kernel_fmt != KernelFormat::OIHW
            || op.group != 1
            || op.q_params.is_some()
            || x_dims.is_none()
            || out.is_none()
            || ps.kernel_shape.len() != 2
            || node.inputs.len() != 3
        {
            return Err(format!(
                "convolution {:?} {:?} group {} on {x_dims:?}",
                ps.data_format, op.kernel_fmt, op.group
            ));
        }
        let (x_dims, out) = (x_dims.unwrap(), out.unwrap());
        let w_dims = self.dims(node.inputs[1])?;
        let bias = self
            .const_f32(node.inputs[2])
            .ok_or("bias is not constant")?;
        let (o, c) = (out[0], x_dims[0]);
        let [kh, kw] = [ps.kernel_shape[0], ps.kernel_shape[1]];
        let kk = c * kh * kw;
        if w_dims.iter().product::<usize>() != o * kk || w_dims.first() != Some(&o) {
            return Err(format!("weights of shape {w_dims:?}, not {o}x{kk}"));
        }
        let bias = match bias.len() {
            1 => vec![bias[0]; o],
            n if n == o => bias,
            n => return Err(format!("bias of {n} values for {o} channels")),
        };
        // An int8 layer: a fake-quantised input with one scale.
        let fq = self.fake_quant(node.inputs[0]).filter(|(x, s)| {
            self.dims(*s)
                .map(|d| d.iter().product::<usize>() == 1)
                .unwrap_or(false)
                && self.dims(*x).ok() == Some(x_full.clone())
        });
        // OIHW, row-major: output channel j at j·kk, then kk in order.
        let n_off: Vec<usize> = (0..o).map(|j| j * kk).collect();
        let k_off: Vec<usize> = (0..kk).collect();
        let pad = ps.computed_padding(&x_dims[1..]);
        let (strides, dil) = (ps.strides(), ps.dilations());
        let [pad, strides, dil] = [
            [pad[0].pad_before, pad[1].pad_before],
            [strides[0], strides[1]],
            [dil[0], dil[1]],
        ];
        // fp32 bundles only (fp16 and int8 ones keep every convolution
        // direct, their few f32 layers too).
        let winograd = self.winograd
            && self.float == FloatWeights::F32
            && winograd::fits(
                [kh, kw],
                strides,
                dil,
                pad,
                [x_dims[1], x_dims[2]],
                [out[1], out[2]],
            )
            && c.min(o) >= WINOGRAD_MIN_CHANNELS
            && out[1].div_ceil(2) * out[2].div_ceil(2) >= WINOGRAD_MIN_TILES;
        let (weights, quant) =
            match self.weights(node.inputs[1], &n_off, &k_off, &w_dims, fq.is_some(), true)? {
                Got::Int8(w) => (ConvWeights::Int8(w), true),
                Got::Float(w) => (ConvWeights::Float(w), false),
                // f32 3 × 3 convolutions, stride 1, padding 1: Winograd's
                // products (16 a tile of 4 pixels, against 36).
                Got::F32Rows(w) if winograd => (
                    ConvWeights::Winograd(winograd::weights(&w, o, c).into()),
                    false,
                ),
                // Turned around, the pixels are the product's columns,
                // computed up to 32 at a time (AVX-512's pairs of 16-pixel
                // panels): where that pads them by more than a fifth (RN50's
                // 7 × 7 layer: 64 for 49), the weights go into panels and
                // the pixels are the rows (8 at a time on AVX-512, 6 on
                // AVX2).
                Got::F32Rows(w)
                    if padded_pixels_percent(out[1] * out[2]) > MAX_PADDED_PIXELS_PERCENT =>
                {
                    let w = Weights::new(w, o, kk, &self.kernels, FloatWeights::F32);
                    (ConvWeights::Float(w), false)
                }
                Got::F32Rows(w) => (ConvWeights::F32Rows(w.into()), false),
            };
        let conv = Conv {
            c,
            h: x_dims[1],
            w: x_dims[2],
            o,
            oh: out[1],
            ow: out[2],
            kernel: [kh, kw],
            stride: strides,
            dilation: dil,
            pad,
            weights,
            bias,
        };
        let (x, s) = match (quant, fq) {
            (true, Some((x, s))) => (self.operand(x)?, Some(self.operand(s)?)),
            _ => (self.operand(node.inputs[0])?, None),
        };
        self.push(
            node,
            Kind::Conv {
                conv: Box::new(conv),
                x,
                s,
            },
            dims,
        );
        Ok(())
    }

    fn einsum(&mut self, node: &TypedNode, op: &EinSum, dims: Vec<usize>) -> R<()> {
        if op.q_params.is_some() || node.inputs.len() != 2 {
            return Err("a quantised or many-input einsum".into());
        }
        let (a_o, b_o) = (node.inputs[0], node.inputs[1]);
        if !matches!(self.value(a_o)?, Value::Val { .. }) {
            return Err("a constant left operand".into());
        }
        let (da, db) = (self.dims(a_o)?, self.dims(b_o)?);
        let (sa, sb, so) = (
            ops::strides_of(&da),
            ops::strides_of(&db),
            ops::strides_of(&dims),
        );
        // Axes by role: (size, stride in a, in b, in out).
        let mut batch = Vec::new();
        let mut m_ax = Vec::new();
        let mut n_ax = Vec::new();
        let mut k_ax = Vec::new();
        for axis in op.axes.iter_all_axes() {
            let pos = |v: &TVec<usize>| -> R<Option<usize>> {
                match v.len() {
                    0 => Ok(None),
                    1 => Ok(Some(v[0])),
                    _ => Err(format!("axis {} repeated", axis.repr)),
                }
            };
            let (pa, pb, po) = (
                pos(&axis.inputs[0])?,
                pos(&axis.inputs[1])?,
                pos(&axis.outputs[0])?,
            );
            // tract broadcasts size-1 axes: the axis's size is the one
            // that is not 1; a side of size 1 is read with stride 0.
            let sizes = [pa.map(|p| da[p]), pb.map(|p| db[p]), po.map(|p| dims[p])];
            let size = sizes.iter().flatten().copied().max().unwrap_or(1);
            if sizes.iter().flatten().any(|&d| d != 1 && d != size) {
                return Err(format!("axis {} has sizes {sizes:?}", axis.repr));
            }
            let stride = |p: Option<usize>, d: &[usize], st: &[usize]| {
                p.filter(|&p| d[p] != 1).map_or(0, |p| st[p])
            };
            if po.map(|p| dims[p]) == Some(1) && size != 1 {
                return Err(format!(
                    "axis {} of size {size} is 1 in the output",
                    axis.repr
                ));
            }
            let st = Ax {
                size,
                pos_a: pa.unwrap_or(0),
                a: stride(pa, &da, &sa),
                b: stride(pb, &db, &sb),
                o: stride(po, &dims, &so),
            };
            match (pa.is_some(), pb.is_some(), po.is_some()) {
                _ if size == 1 => {}
                (true, true, true) => batch.push(st),
                (true, false, true) => m_ax.push(st),
                (false, true, true) => n_ax.push(st),
                (true, true, false) => k_ax.push(st),
                _ => {
                    return Err(format!(
                        "axis {} of size {size} summed on one side",
                        axis.repr
                    ))
                }
            }
        }
        // Offset tables: every combination of the role's axes, row-major.
        fn table(axes: &[Ax], pick: fn(&Ax) -> usize) -> Vec<usize> {
            let mut t = vec![0usize];
            for ax in axes {
                let s = pick(ax);
                t = t
                    .iter()
                    .flat_map(|&b| (0..ax.size).map(move |i| b + i * s))
                    .collect();
            }
            t
        }
        let (m, n, k) = (
            m_ax.iter().map(|a| a.size).product::<usize>(),
            n_ax.iter().map(|a| a.size).product::<usize>(),
            k_ax.iter().map(|a| a.size).product::<usize>(),
        );
        let rhs_const = !matches!(self.value(b_o)?, Value::Val { .. });
        let fq = self
            .fake_quant(a_o)
            .filter(|(x, _)| self.dims(*x).ok() == Some(da.clone()));
        // The scale's offsets on a's axes; it must not vary along k.
        let quant = match fq {
            Some((_, s)) if rhs_const => {
                let ds = self.dims(s)?;
                (ds.len() == da.len())
                    .then(|| ops::broadcast_strides(&ds, &da))
                    .and_then(|ss| {
                        // The role's axes with their strides in s as `a`.
                        let on_s = |role: &[Ax]| -> Vec<Ax> {
                            role.iter()
                                .map(|ax| Ax {
                                    a: ss[ax.pos_a],
                                    ..*ax
                                })
                                .collect()
                        };
                        if on_s(&k_ax).iter().any(|ax| ax.a != 0) {
                            return None;
                        }
                        Some(ActQuant {
                            s_batch: table(&on_s(&batch), |ax| ax.a),
                            s_m: table(&on_s(&m_ax), |ax| ax.a),
                        })
                    })
            }
            _ => None,
        };
        let rhs = if rhs_const {
            if !batch.is_empty() {
                return Err("batched product with constant weights".into());
            }
            let (b_n, b_k) = (table(&n_ax, |ax| ax.b), table(&k_ax, |ax| ax.b));
            match (
                self.weights(b_o, &b_n, &b_k, &db, quant.is_some(), false)?,
                quant,
            ) {
                (Got::Int8(w), Some(q)) => Rhs::Int8(w, q),
                (Got::Float(w), _) => Rhs::Float(w),
                (Got::F32Rows(_), _) => unreachable!("only convolutions keep f32 rows"),
                (Got::Int8(_), None) => {
                    return Err("int8 weights without a quantised activation".into())
                }
            }
        } else {
            Rhs::Act {
                b_batch: table(&batch, |ax| ax.b),
                b_n: table(&n_ax, |ax| ax.b),
                b_k: table(&k_ax, |ax| ax.b),
            }
        };
        let int8 = matches!(rhs, Rhs::Int8(..));
        let a_k = table(&k_ax, |ax| ax.a);
        let mm = MatMul {
            m,
            n,
            k,
            a_batch: table(&batch, |ax| ax.a),
            a_m: table(&m_ax, |ax| ax.a),
            a_k_unit: a_k.iter().enumerate().all(|(t, &o)| o == t),
            a_k,
            rhs,
            o_batch: table(&batch, |ax| ax.o),
            o_m: table(&m_ax, |ax| ax.o),
            o_n_unit: table(&n_ax, |ax| ax.o)
                .iter()
                .enumerate()
                .all(|(j, &o)| o == j),
            o_n: table(&n_ax, |ax| ax.o),
        };
        let (a, s) = match (int8, fq) {
            (true, Some((x, s))) => (self.operand(x)?, Some(self.operand(s)?)),
            _ => (self.operand(a_o)?, None),
        };
        let b = if rhs_const {
            None
        } else {
            Some(self.operand(b_o)?)
        };
        self.push(
            node,
            Kind::MatMul {
                mm: Box::new(mm),
                a,
                b,
                s,
            },
            dims,
        );
        Ok(())
    }
}
