//! What lowering knows of each graph outlet: a constant (maybe not cast
//! or dequantised yet) or an arena tensor; constant folding.

use super::*;

#[derive(Clone)]
pub(super) enum Value {
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

pub(super) fn materialize(v: &Value) -> R<Arc<Tensor>> {
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

/// A constant's values as f32 (widened from whatever number type it holds).
pub(super) fn tensor_f32(t: &Tensor) -> Option<Vec<f32>> {
    let t = t.cast_to::<f32>().ok()?;
    let v = t.to_plain_array_view::<f32>().ok()?;
    Some(v.iter().copied().collect())
}

pub(super) fn concrete(fact: &TypedFact) -> Option<Vec<usize>> {
    fact.shape.as_concrete().map(|s| s.to_vec())
}

/// Row-major strides.
pub(super) fn strides(dims: &[usize]) -> Vec<usize> {
    ops::strides_of(dims)
}

impl Lowerer<'_> {
    /// A node whose inputs are all constants: evaluated now (shape ops on a
    /// pending cast stay pending, on the narrow type).
    pub(super) fn fold(&mut self, node: &TypedNode, ins: Vec<Value>) -> R<Value> {
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

    pub(super) fn new_val(&mut self, dims: Vec<usize>) -> Value {
        let id = self.lens.len();
        // Shapes were checked against MAX_TENSOR_LEN when the node was
        // lowered (see `node`).
        self.lens.push(dims.iter().product());
        Value::Val { id, dims }
    }

    pub(super) fn value(&self, o: OutletId) -> R<Value> {
        self.values
            .get(&o)
            .cloned()
            .ok_or_else(|| format!("input {o:?} was not lowered"))
    }

    pub(super) fn dims(&self, o: OutletId) -> R<Vec<usize>> {
        match self.value(o)? {
            Value::Const(t) | Value::Cast(t) | Value::Dequant { q: t, .. } => {
                Ok(t.shape().to_vec())
            }
            Value::Val { dims, .. } => Ok(dims),
        }
    }

    /// An operand for generic f32 ops (constants widened to f32 once).
    pub(super) fn operand(&mut self, o: OutletId) -> R<Operand> {
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

    pub(super) fn const_scalar(&self, o: OutletId) -> Option<f32> {
        match self.values.get(&o)? {
            Value::Const(t) | Value::Cast(t) if t.len() == 1 => t.cast_to_scalar::<f32>().ok(),
            _ => None,
        }
    }

    /// `o`'s value before the reshapes (`Reshape`, `AddAxis`, `RmAxis`:
    /// the same values in the same order) that made it.
    pub(super) fn through_shape(&self, mut o: OutletId) -> OutletId {
        loop {
            let (n, name) = self.op_of(o);
            if !matches!(name.as_str(), "Reshape" | "AddAxis" | "RmAxis") || n.inputs.len() != 1 {
                return o;
            }
            o = n.inputs[0];
        }
    }

    /// `o`, or what it is a no-op f32 → f32 cast of (the NNEF reader
    /// leaves such casts around constants and values).
    pub(super) fn skip(&self, mut o: OutletId) -> OutletId {
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

    pub(super) fn op_of(&self, o: OutletId) -> (&TypedNode, String) {
        let n = &self.model.nodes[self.skip(o).node];
        (n, n.op.name().to_string())
    }

    pub(super) fn const_f32(&self, o: OutletId) -> Option<Vec<f32>> {
        match self.values.get(&o)? {
            Value::Const(t) | Value::Cast(t) => tensor_f32(t),
            v @ Value::Dequant { .. } => materialize(v).ok().and_then(|t| tensor_f32(&t)),
            _ => None,
        }
    }
}
