//! Matrix products and convolutions: their offset tables and their
//! weights, read from the graph in the bundle's precision.

use super::*;

/// Floats or int8, as a product's weights come out of the graph.
pub(super) enum Got {
    Float(Weights),
    Int8(Int8),
    /// A convolution's f32 weights (not f16-exact), plain rows.
    F32Rows(Vec<f32>),
}

/// One einsum axis: its size, position in `a`, strides in a, b and out.
#[derive(Clone, Copy)]
pub(super) struct Ax {
    size: usize,
    pos_a: usize,
    a: usize,
    b: usize,
    o: usize,
}

impl Lowerer<'_> {
    /// A product's constant weights as `n × k` (row `j` at offsets
    /// `n_off[j] + k_off[t]` of the tensor `o`, of shape `dims`), in the
    /// bundle's precision: int8 read as stored when `int8` is asked and the
    /// graph dequantises i8 with a scale per output channel; f16 read as
    /// stored; else f32 values (int8 recovered from them when asked and
    /// they lie on a grid, f16 when exact).
    pub(super) fn weights(
        &self,
        o: OutletId,
        n_off: &[usize],
        k_off: &[usize],
        dims: &[usize],
        int8: bool,
        conv: bool,
    ) -> R<Got> {
        let (n, k) = (n_off.len(), k_off.len());
        // A convolution's f32 weights are `F32Rows` (in an fp32 bundle
        // every float convolution is f32).
        let float = |w: Vec<f32>| {
            if conv && (self.float == FloatWeights::F32 || !Weights::f16_exact(&w)) {
                Got::F32Rows(w)
            } else {
                Got::Float(Weights::rows(w, self.float))
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
                    return Ok(Got::Int8(Int8 { q: w.into(), scale }));
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
                return Ok(Got::Float(Weights::F16(w.into())));
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
            match Int8::recover(w, n, k) {
                Ok(w) => Ok(Got::Int8(w)),
                Err(w) => Ok(float(w)),
            }
        } else {
            Ok(float(w))
        }
    }

    pub(super) fn conv(&mut self, node: &TypedNode, op: &TConv, dims: Vec<usize>) -> R<()> {
        let ps = &op.pool_spec;
        let x_full = self.dims(node.inputs[0])?;
        let x_dims = chw(ps.data_format, &x_full);
        let out = chw(ps.data_format, &dims);
        let depthwise = op.group > 1 && x_dims.as_ref().is_some_and(|x| x[0] == op.group);
        if op.kernel_fmt != KernelFormat::OIHW
            || (op.group != 1 && !depthwise)
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
        if depthwise {
            return self.depthwise(node, op, &x_dims, &out, bias, dims);
        }
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
        // Packing for the CPU may transform f32 3 × 3 weights for Winograd's
        // products or lay them out in panels (`native::pack`).
        let (weights, int8) = self.conv_weights(node.inputs[1], &n_off, &k_off, &w_dims, fq)?;
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
        self.push_conv(node, conv, node.inputs[0], int8, dims)
    }

    /// A convolution's weights (`w_o` read at the offsets given), int8 when
    /// its input is fake-quantised (`fq`): then with that input and its
    /// scale, which the convolution reads instead.
    #[allow(clippy::type_complexity)]
    fn conv_weights(
        &self,
        w_o: OutletId,
        n_off: &[usize],
        k_off: &[usize],
        w_dims: &[usize],
        fq: Option<(OutletId, OutletId)>,
    ) -> R<(ConvWeights, Option<(OutletId, OutletId)>)> {
        Ok(
            match self.weights(w_o, n_off, k_off, w_dims, fq.is_some(), true)? {
                Got::Int8(w) => (ConvWeights::Int8(w), fq),
                Got::Float(w) => (ConvWeights::Float(w), None),
                Got::F32Rows(w) => (ConvWeights::F32Rows(w.into()), None),
            },
        )
    }

    /// Pushes `conv`, reading `x_o`, or (int8) the fake-quantised input
    /// and its scale.
    fn push_conv(
        &mut self,
        node: &TypedNode,
        conv: Conv,
        x_o: OutletId,
        int8: Option<(OutletId, OutletId)>,
        dims: Vec<usize>,
    ) -> R<()> {
        let (x, s) = match int8 {
            Some((x, s)) => (self.operand(x)?, Some(self.operand(s)?)),
            None => (self.operand(x_o)?, None),
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

    /// A convolution with one group per input channel (`x_dims`: CHW,
    /// `out`: OHW, `o` a multiple of `c`).
    fn depthwise(
        &mut self,
        node: &TypedNode,
        op: &TConv,
        x_dims: &[usize],
        out: &[usize],
        bias: Vec<f32>,
        dims: Vec<usize>,
    ) -> R<()> {
        let ps = &op.pool_spec;
        let (c, o) = (x_dims[0], out[0]);
        let [kh, kw] = [ps.kernel_shape[0], ps.kernel_shape[1]];
        let taps = kh * kw;
        if o % c != 0 {
            return Err(format!("{o} outputs over {c} groups"));
        }
        let w_dims = self.dims(node.inputs[1])?;
        if w_dims != [o, 1, kh, kw] {
            return Err(format!(
                "depthwise weights of shape {w_dims:?}, not {o}x1x{kh}x{kw}"
            ));
        }
        let weights = self
            .const_f32(node.inputs[1])
            .ok_or("weights are not constant numbers")?;
        if weights.len() != o * taps {
            return Err(format!("{} weights for {o}x{taps}", weights.len()));
        }
        let bias = match bias.len() {
            1 => vec![bias[0]; o],
            n if n == o => bias,
            n => return Err(format!("bias of {n} values for {o} channels")),
        };
        let pad = ps.computed_padding(&x_dims[1..]);
        let (strides, dil) = (ps.strides(), ps.dilations());
        let dw = Depthwise {
            c,
            h: x_dims[1],
            w: x_dims[2],
            o,
            oh: out[1],
            ow: out[2],
            kernel: [kh, kw],
            stride: [strides[0], strides[1]],
            dilation: [dil[0], dil[1]],
            pad: [pad[0].pad_before, pad[1].pad_before],
            weights: weights.into(),
            bias,
        };
        let x = self.operand(node.inputs[0])?;
        self.push(
            node,
            Kind::Depthwise {
                dw: Box::new(dw),
                x,
            },
            dims,
        );
        Ok(())
    }

    /// A 1 × 1 convolution of `x_o` (`c` channels of `h × w` pixels) by
    /// the constant `w_o` (`o` rows of `c`, read at the offsets given),
    /// in int8 when its input is fake-quantised with one scale (before a
    /// reshape, which leaves the pixels where they are).
    #[allow(clippy::type_complexity)]
    fn pointwise(
        &mut self,
        node: &TypedNode,
        (x_o, w_o): (OutletId, OutletId),
        [c, h, w, o]: [usize; 4],
        (n_off, k_off, w_dims): (&[usize], &[usize], &[usize]),
        dims: Vec<usize>,
    ) -> R<()> {
        let len = |o: OutletId| self.dims(o).map(|d| d.iter().product::<usize>()).ok();
        let fq = self
            .fake_quant(self.through_shape(x_o))
            .filter(|(x, s)| len(*s) == Some(1) && len(*x) == Some(c * h * w));
        let (weights, int8) = self.conv_weights(w_o, n_off, k_off, w_dims, fq)?;
        let conv = Conv {
            c,
            h,
            w,
            o,
            oh: h,
            ow: w,
            kernel: [1, 1],
            stride: [1, 1],
            dilation: [1, 1],
            pad: [0, 0],
            weights,
            bias: vec![0.0; o],
        };
        self.push_conv(node, conv, x_o, int8, dims)
    }

    pub(super) fn einsum(&mut self, node: &TypedNode, op: &EinSum, dims: Vec<usize>) -> R<()> {
        if op.q_params.is_some() || node.inputs.len() != 2 {
            return Err("a quantised or many-input einsum".into());
        }
        // Constant weights on the left (`W·X`, a 1 × 1 convolution as
        // tract declutters it): the product's sides swapped, the
        // activation's axes are then the rows.
        let left_val = matches!(self.value(node.inputs[0])?, Value::Val { .. });
        let right_val = matches!(self.value(node.inputs[1])?, Value::Val { .. });
        let (ia, ib) = match (left_val, right_val) {
            (true, _) => (0, 1),
            (false, true) => (1, 0),
            (false, false) => return Err("two constant operands".into()),
        };
        let (a_o, b_o) = (node.inputs[ia], node.inputs[ib]);
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
                pos(&axis.inputs[ia])?,
                pos(&axis.inputs[ib])?,
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
        // Constant weights, packed once; a constant with batch axes (a
        // learned query, as SigLIP's attention pooling folds it) is read
        // as an activation is.
        let rhs_const = !matches!(self.value(b_o)?, Value::Val { .. }) && batch.is_empty();
        let len = |o: OutletId| self.dims(o).map(|d| d.iter().product::<usize>()).ok();
        // The activation's fake quantisation: on `a` as it is, or (one
        // scale, for one row) before a reshape that moves no value.
        let fq = self
            .fake_quant(a_o)
            .filter(|(x, _)| self.dims(*x).ok() == Some(da.clone()))
            .or_else(|| {
                let t = self.through_shape(a_o);
                (t != a_o && m == 1 && batch.is_empty())
                    .then(|| self.fake_quant(t))
                    .flatten()
                    .filter(|(x, s)| len(*s) == Some(1) && len(*x) == len(a_o))
            });
        // A 1 × 1 convolution (constant `[n, k]` weights on an image of `k`
        // channels of `m` pixels, written channel by channel): the
        // convolution executor's layout, its panels over the pixels.
        let seq = |t: &[usize], step: usize| t.iter().enumerate().all(|(i, &v)| v == i * step);
        if rhs_const
            && batch.is_empty()
            && m > 1
            && seq(&table(&m_ax, |ax| ax.a), 1)
            && seq(&table(&k_ax, |ax| ax.a), m)
            && seq(&table(&m_ax, |ax| ax.o), 1)
            && seq(&table(&n_ax, |ax| ax.o), m)
        {
            let w = m_ax.last().map_or(m, |ax| ax.size);
            let (b_n, b_k) = (table(&n_ax, |ax| ax.b), table(&k_ax, |ax| ax.b));
            let geometry = [k, m / w, w, n];
            return self.pointwise(node, (a_o, b_o), geometry, (&b_n, &b_k, &db), dims);
        }
        // The scale's offsets on a's axes; it must not vary along k.
        let quant = match fq {
            // One scale for the one row.
            Some((_, s)) if rhs_const && m == 1 && batch.is_empty() && len(s) == Some(1) => {
                Some(ActQuant {
                    s_batch: vec![0],
                    s_m: vec![0],
                })
            }
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
