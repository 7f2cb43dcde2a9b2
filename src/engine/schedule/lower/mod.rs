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
use super::linear::{
    ActQuant, Conv, ConvWeights, Depthwise, FloatWeights, Int8, MatMul, Rhs, Weights,
};
use super::ops::{self, AroundAxis, Binary, Pool2d, Reduce, Unary, MAX_RANK};

mod patterns;
mod products;
mod values;

use values::{concrete, strides, Value};

struct Lowerer<'m> {
    model: &'m TypedModel,
    float: FloatWeights,
    /// Consumers left of each outlet: large constants are dropped after
    /// their last one (weights live on as rows, not twice).
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

/// Lowers `model`, its weights as rows in the bundle's precision (`float`:
/// how f32 weights that are exactly f16 are kept).
pub fn lower(model: &TypedModel, float: FloatWeights) -> Result<Lowered, LowerError> {
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
        float,
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
        packed_for: None,
    })
}

type R<T> = Result<T, String>;

/// Most constant indices one gather may take (each is a copy of its own).
const MAX_GATHER_INDICES: usize = 4096;

/// Most values one tensor of the schedule may hold (1 GiB of f32): a
/// graph asking for more is refused at load, never allocated.
pub const MAX_TENSOR_LEN: usize = 1 << 28;

/// Constants larger than this many values are dropped after their last
/// consumer (small ones stay: the int8 pattern reads scalars late).
const RELEASE_CONST_LEN: usize = 4096;

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
        if let Some(op) = node.op_as::<tract_core::ops::array::Gather>() {
            return self.gather(node, op.axis, dims);
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

    /// Input 0 indexed along `axis` by constant indices (input 1), as an
    /// ONNX export picks attention's q, k and v: one strided copy per index.
    fn gather(&mut self, node: &TypedNode, axis: usize, dims: Vec<usize>) -> R<()> {
        let src = self.dims(node.inputs[0])?;
        let indices = match self.values.get(&node.inputs[1]) {
            Some(Value::Const(t)) => t
                .cast_to::<i64>()
                .map_err(|e| e.to_string())?
                .to_plain_array_view::<i64>()
                .map_err(|e| e.to_string())?
                .iter()
                .copied()
                .collect::<Vec<_>>(),
            _ => return Err("gather indices that are not constant".into()),
        };
        let n = *src.get(axis).ok_or("a gather axis past the input's rank")?;
        let want = (src.iter().product::<usize>() / n.max(1)).checked_mul(indices.len());
        if indices.len() > MAX_GATHER_INDICES || want != Some(dims.iter().product::<usize>()) {
            return Err(format!(
                "a gather of {} indices from {src:?} into {dims:?}",
                indices.len()
            ));
        }
        let st = ops::strides_of(&src);
        // The output seen as the input with the indices flattened at `axis`.
        let mut view = src.clone();
        view[axis] = indices.len();
        let sd = ops::strides_of(&view);
        let mut one = src.clone();
        one[axis] = 1;
        let x = self.operand(node.inputs[0])?;
        let mut parts = Vec::with_capacity(indices.len());
        for (j, &index) in indices.iter().enumerate() {
            let i = if index < 0 { index + n as i64 } else { index };
            let i = usize::try_from(i)
                .ok()
                .filter(|&i| i < n)
                .ok_or_else(|| format!("a gather index {index} out of -{n}..{n}"))?;
            parts.push(CopyPart {
                src: x,
                dims: one.clone(),
                src_off: i * st[axis],
                ss: st.clone(),
                dst_off: j * sd[axis],
                sd: sd.clone(),
            });
        }
        self.push(node, Kind::Copy { parts }, dims);
        Ok(())
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
}
