//! Precision rewrites of a graph made elsewhere (an ONNX export), into the
//! patterns this quantizer's own graphs use and the runtime recognises:
//! matrices stored as f16 and cast to f32, or a product's constant weights
//! stored as int8 with a scale per output channel (`Cast(q) · s`) and its
//! activation quantised per row (`fake_quant`: `round(x / s)` clamped to
//! ±127, times `s`, `s` from each row's max |x|).

use tract_core::internal::*;
use tract_core::ops::array::Slice;
use tract_core::ops::binary::{BinMiniOp, TypedBinOp};
use tract_core::ops::cast::cast;
use tract_core::ops::change_axes::{wire_with_rank_broadcast, AxisOp};
use tract_core::ops::cnn::{Conv, KernelFormat};
use tract_core::ops::einsum::EinSum;
use tract_core::ops::konst::Const;
use tract_core::ops::math;
use tract_core::ops::nn::DataFormat;
use tract_core::ops::nn::{Reduce, Reducer};

use super::precision::quantize_per_channel;

/// The fewest values of an f32 constant stored as f16: matrices, not
/// biases or norms' scales.
pub const F16_MIN_VALUES: usize = 1024;

/// The fewest weights of a product stored as int8 (smaller ones stay f32).
pub const INT8_MIN_WEIGHTS: usize = 1024;

fn const_of(model: &TypedModel, o: OutletId) -> Option<Arc<Tensor>> {
    model.outlet_fact(o).ok()?.konst.clone()
}

/// `model` with every f32 constant of [`F16_MIN_VALUES`] or more stored as
/// f16 and cast to f32 where it is read.
pub fn f16_weights(mut model: TypedModel) -> TractResult<TypedModel> {
    let big: Vec<usize> = model
        .nodes
        .iter()
        .filter(|n| {
            n.op_as::<Const>()
                .map(|c| {
                    c.val().datum_type() == f32::datum_type() && c.val().len() >= F16_MIN_VALUES
                })
                .unwrap_or(false)
        })
        .map(|n| n.id)
        .collect();
    for id in big {
        let name = model.nodes[id].name.clone();
        let val = const_of(&model, OutletId::new(id, 0)).context("a constant")?;
        let h = val.cast_to::<half::f16>()?.into_owned();
        let mut patch = TypedModelPatch::default();
        let c = patch.add_const(format!("{name}.f16"), h)?;
        let y = patch.wire_node(format!("{name}.to_f32"), cast(f32::datum_type()), &[c])?;
        patch.shunt_outside(&model, OutletId::new(id, 0), y[0])?;
        patch.apply(&mut model)?;
    }
    model.compact()?;
    Ok(model)
}

/// A product `x · W` that can run in int8: which input is the constant
/// weight, how its axes map to `[n, k...]`, and the activation's dims (its
/// last axes are the depth; the output is `x`'s other axes and the
/// channels, in any order (see `order`), up to axes of size 1).
struct Int8Product {
    w_slot: usize,
    /// The weights' axes in the order `[n, k...]` (the depth axes in the
    /// order `x` holds them).
    w_perm: Vec<usize>,
    /// The activation's dims once its depth axes are moved last (`moves`):
    /// its depth is its last `depth_axes` axes, merged into one before the
    /// product.
    x_dims: Vec<usize>,
    /// `AxisOp::Move(from, to)`s, in order, that take the activation's
    /// depth axes to its end (none when they are already there).
    moves: Vec<(usize, usize)>,
    depth_axes: usize,
    w: Arc<Tensor>,
    /// The canonical product's output and the original's.
    y_canonical: TVec<usize>,
    y_dims: TVec<usize>,
    /// The canonical output's axes of more than one value, in the order
    /// the original's holds them (tract's declutter may fold a transpose
    /// into the product): indices into those axes.
    order: Vec<usize>,
}

fn int8_product(model: &TypedModel, node: &TypedNode) -> Option<Int8Product> {
    let op = node.op_as::<EinSum>()?;
    if node.inputs.len() != 2 || op.q_params.is_some() || op.operating_dt != f32::datum_type() {
        return None;
    }
    // A 1 × 1 convolution is one (its channels, not last, are a depth
    // too): one scale for the image, run over the pixels.
    if int8_pointwise(model, node).is_some() {
        return None;
    }
    let w_slot = (0..2).find(|&s| const_of(model, node.inputs[s]).is_some())?;
    let x_slot = 1 - w_slot;
    if const_of(model, node.inputs[x_slot]).is_some() {
        return None;
    }
    let w = const_of(model, node.inputs[w_slot])?;
    if w.datum_type() != f32::datum_type() || w.len() < INT8_MIN_WEIGHTS {
        return None;
    }
    let axes: Vec<_> = op.axes.iter_all_axes().collect();
    let sole = |v: &TVec<usize>| (v.len() == 1).then(|| v[0]);
    // Output channels: in the weights and the output, not in x (their
    // position in the weights and in the output).
    let n: Vec<(usize, usize)> = axes
        .iter()
        .filter(|a| {
            !a.inputs[w_slot].is_empty() && a.inputs[x_slot].is_empty() && !a.outputs[0].is_empty()
        })
        .filter_map(|a| Some((sole(&a.inputs[w_slot])?, sole(&a.outputs[0])?)))
        .collect();
    // Depth: in both inputs, summed away.
    let k: Vec<(usize, usize)> = axes
        .iter()
        .filter(|a| {
            !a.inputs[w_slot].is_empty() && !a.inputs[x_slot].is_empty() && a.outputs[0].is_empty()
        })
        .filter_map(|a| Some((sole(&a.inputs[w_slot])?, sole(&a.inputs[x_slot])?)))
        .collect();
    // Any other axis of the weights (a batch of weights) keeps it f32. The
    // product is rewritten as the quantizer's own linear layers are
    // (`...k,nk->...n`, which the runtime reads as int8), then its axes
    // moved where the export has them (a transpose declutter folded into
    // it) and reshaped (axes of size 1: an exporter's reshapes).
    let x_dims = model
        .outlet_fact(node.inputs[x_slot])
        .ok()?
        .shape
        .as_concrete()?
        .to_vec();
    let y_dims = model
        .outlet_fact(OutletId::new(node.id, 0))
        .ok()?
        .shape
        .as_concrete()?
        .to_vec();
    let ([(n, n_out)], false) = (n.as_slice(), k.is_empty()) else {
        return None;
    };
    let mut k = k;
    k.sort_by_key(|&(_, kx)| kx);
    let depth_axes = k.len();
    let r = x_dims.len();
    // The depth: `x`'s last axes, in order (an exporter's head merge,
    // which declutter folds into the product, splits it in two). Depth
    // axes elsewhere (a transpose folded into the product: attention on an
    // image's `C, H·W` features) are moved there first, in order: `held`
    // is which of `x`'s axes each position then holds (no move when the
    // depth is last already).
    let target: Vec<usize> = (0..r)
        .filter(|a| !k.iter().any(|&(_, kx)| kx == *a))
        .chain(k.iter().map(|&(_, kx)| kx))
        .collect();
    // Two ways there, the one of fewer copies: each axis into its place
    // in turn, or each depth axis to the end in turn.
    let mut into_place = Vec::new();
    let mut held: Vec<usize> = (0..r).collect();
    for (i, &a) in target.iter().enumerate() {
        let from = held.iter().position(|&h| h == a)?;
        if from != i {
            into_place.push((from, i));
            held.remove(from);
            held.insert(i, a);
        }
    }
    let mut to_end = Vec::new();
    let mut held: Vec<usize> = (0..r).collect();
    for &(_, kx) in &k {
        let from = held.iter().position(|&h| h == kx)?;
        to_end.push((from, r - 1));
        held.remove(from);
        held.push(kx);
    }
    let moves = if !into_place.is_empty() && to_end.len() < into_place.len() {
        to_end
    } else {
        into_place
    };
    let held = target;
    let x_dims: Vec<usize> = held.iter().map(|&a| x_dims[a]).collect();
    // One row (a squeeze-and-excitation's or a head's pooled vector, its
    // channels first): little to gain, and int8 would cost accuracy on
    // the one vector. It stays f32, as such 1 × 1 convolutions do.
    if !moves.is_empty() && x_dims[..r - depth_axes].iter().product::<usize>() == 1 {
        return None;
    }
    let w_perm: Vec<usize> = std::iter::once(*n)
        .chain(k.iter().map(|&(kw, _)| kw))
        .collect();
    let y_canonical: TVec<usize> = x_dims[..r - depth_axes]
        .iter()
        .copied()
        .chain([w.shape()[*n]])
        .collect();
    // Where each of the output's axes (those of more than one value) comes
    // from: `x`'s other axes, then the channels. Sizes alone would let a
    // transposed output of equal sizes through, reshaped instead of
    // transposed: the axes are followed by identity and moved.
    let mut out_pos: Vec<usize> = Vec::new();
    for (&p, &d) in held.iter().zip(&x_dims).take(r.saturating_sub(depth_axes)) {
        if d == 1 {
            continue;
        }
        let axis = axes.iter().find(|a| a.inputs[x_slot][..] == [p])?;
        out_pos.push(sole(&axis.outputs[0])?);
    }
    if w.shape()[*n] != 1 {
        out_pos.push(*n_out);
    }
    // The canonical axes by their place in the output: the product is
    // rewritten, then those axes moved to where the export has them.
    let mut order: Vec<usize> = (0..out_pos.len()).collect();
    order.sort_by_key(|&i| out_pos[i]);
    let canonical = not_one(&y_canonical);
    let moved: Vec<usize> = order.iter().map(|&i| canonical[i]).collect();
    (w.rank() == 1 + depth_axes
        && (1..=8).contains(&r)
        && out_pos.len() == canonical.len()
        && not_one(&y_dims) == moved)
        .then(|| Int8Product {
            w_slot,
            w_perm,
            depth_axes,
            y_canonical,
            y_dims: y_dims.into(),
            x_dims,
            moves,
            w,
            order,
        })
}

/// A 1 × 1 convolution as tract declutters one: a product of one image
/// `x` (`[1,] C, H, W`) by constant `[O, C]` weights (of
/// [`INT8_MIN_WEIGHTS`] or more) into `[1,] O, H, W` (the batch axis kept
/// or dropped), the channels summed away. Returns the
/// weights' input slot and the weights.
fn int8_pointwise(model: &TypedModel, node: &TypedNode) -> Option<(usize, Arc<Tensor>)> {
    let op = node.op_as::<EinSum>()?;
    if node.inputs.len() != 2 || op.q_params.is_some() || op.operating_dt != f32::datum_type() {
        return None;
    }
    let w_slot = (0..2).find(|&s| const_of(model, node.inputs[s]).is_some())?;
    let x_slot = 1 - w_slot;
    let w = const_of(model, node.inputs[w_slot])?;
    let xf = model.outlet_fact(node.inputs[x_slot]).ok()?;
    if const_of(model, node.inputs[x_slot]).is_some()
        || xf.datum_type != f32::datum_type()
        || w.datum_type() != f32::datum_type()
        || w.rank() != 2
        || w.len() < INT8_MIN_WEIGHTS
    {
        return None;
    }
    let x = xf.shape.as_concrete()?.to_vec();
    let y = model
        .outlet_fact(OutletId::new(node.id, 0))
        .ok()?
        .shape
        .as_concrete()?
        .to_vec();
    // Each axis by where it sits: (in w, in x, in the output).
    let at = |v: &TVec<usize>| match v.len() {
        0 => Some(None),
        1 => Some(Some(v[0])),
        _ => None,
    };
    let mut roles = Vec::new();
    for a in op.axes.iter_all_axes() {
        roles.push((
            at(&a.inputs[w_slot])?,
            at(&a.inputs[x_slot])?,
            at(&a.outputs[0])?,
        ));
    }
    roles.sort();
    // `[1,] C, H, W` (declutter drops the batch axis of one image).
    let b = x
        .len()
        .checked_sub(3)
        .filter(|&b| b <= 1 && x[..b].iter().all(|&d| d == 1))?;
    // The output `[1,] O, H, W`: the batch axis kept or dropped.
    let yb = y.len().checked_sub(3).filter(|&yb| yb <= b)?;
    let mut want = vec![
        (None, Some(b + 1), Some(yb + 1)),
        (None, Some(b + 2), Some(yb + 2)),
        (Some(0), None, Some(yb)),
        (Some(1), Some(b), None),
    ];
    if b == 1 {
        want.push((None, Some(0), (yb == 1).then_some(0)));
    }
    want.sort();
    // One pixel (a squeeze-and-excitation's pooled vector): a product of
    // one row, which stays f32 (the runtime's int8 convolution wants an
    // image).
    let pixels = x[b + 1] * x[b + 2];
    (roles == want && pixels > 1).then_some((w_slot, w))
}

/// The sizes other than 1, in order.
fn not_one(dims: &[usize]) -> Vec<usize> {
    dims.iter().copied().filter(|&d| d != 1).collect()
}

/// A convolution that can run in int8: one NCHW image, OIHW constant
/// weights (of [`INT8_MIN_WEIGHTS`] or more), one group, a constant bias.
fn int8_conv(model: &TypedModel, node: &TypedNode) -> Option<Arc<Tensor>> {
    let op = node.op_as::<Conv>()?;
    let xf = model.outlet_fact(node.inputs[0]).ok()?;
    if xf.datum_type != f32::datum_type() {
        return None;
    }
    let x = xf.shape.as_concrete()?.to_vec();
    let w = const_of(model, *node.inputs.get(1)?)?;
    (node.inputs.len() == 3
        && op.kernel_fmt == KernelFormat::OIHW
        && op.group == 1
        && op.q_params.is_none()
        && op.pool_spec.data_format == DataFormat::NCHW
        && x.len() == 4
        && x[0] == 1
        && w.rank() == 4
        && w.datum_type() == f32::datum_type()
        && w.len() >= INT8_MIN_WEIGHTS
        && const_of(model, node.inputs[2]).is_some())
    .then_some(w)
}

fn bin(
    patch: &mut TypedModelPatch,
    name: String,
    op: Box<dyn BinMiniOp>,
    a: OutletId,
    b: OutletId,
) -> TractResult<OutletId> {
    Ok(wire_with_rank_broadcast(name, patch, TypedBinOp(op, None), &[a, b])?[0])
}

/// A layer's int8 weights read back from the pooled constant `all` (f32):
/// `shape`'s values from `start`, times each output channel's scale (the
/// first axis; the scale broadcast over the others).
fn pooled_weights(
    patch: &mut TypedModelPatch,
    name: &str,
    all: OutletId,
    start: usize,
    shape: &[usize],
    scales: &[f32],
) -> TractResult<OutletId> {
    let len: usize = shape.iter().product();
    let sl = patch.wire_node(
        format!("{name}.weight.slice"),
        Slice::new(0, start, start + len),
        &[all],
    )?[0];
    let dims: TVec<TDim> = shape.iter().map(|&d| d.to_dim()).collect();
    let w = patch.wire_node(
        format!("{name}.weight.shape"),
        AxisOp::Reshape(0, tvec![len.to_dim()], dims),
        &[sl],
    )?[0];
    let mut scale_shape = vec![1usize; shape.len()];
    scale_shape[0] = shape[0];
    let sc = patch.add_const(
        format!("{name}.weight.scale"),
        Tensor::from_shape(&scale_shape, scales)?,
    )?;
    bin(
        patch,
        format!("{name}.weight.dequant"),
        Box::new(math::Mul),
        w,
        sc,
    )
}

/// `x` quantised to int8 levels with one scale per slice over `axes`
/// (a row's depth; a convolution's whole image), dequantised: the pattern
/// the runtime reads as an int8 product's input.
fn fake_quant(
    patch: &mut TypedModelPatch,
    name: &str,
    x: OutletId,
    axes: &[usize],
) -> TractResult<OutletId> {
    let n = format!("{name}.act_q");
    let a = patch.wire_node(format!("{n}.abs"), math::abs(), &[x])?[0];
    let m = patch.wire_node(
        format!("{n}.absmax"),
        Reduce::new(axes.iter().copied().collect(), Reducer::Max),
        &[a],
    )?[0];
    let tiny = patch.add_const(format!("{n}.tiny"), tensor0(1e-12f32))?;
    let m = bin(patch, format!("{n}.nonzero"), Box::new(math::Max), m, tiny)?;
    let inv = patch.add_const(format!("{n}.scale.scale"), tensor0(1.0f32 / 127.0))?;
    let scale = bin(patch, format!("{n}.scale"), Box::new(math::Mul), m, inv)?;
    let d = bin(patch, format!("{n}.div"), Box::new(math::Div), x, scale)?;
    let r = patch.wire_node(format!("{n}.round"), math::round_half_to_even(), &[d])?[0];
    let lo = patch.add_const(format!("{n}.lo"), tensor0(-127f32))?;
    let hi = patch.add_const(format!("{n}.hi"), tensor0(127f32))?;
    let r = bin(patch, format!("{n}.clamp_lo"), Box::new(math::Max), r, lo)?;
    let r = bin(patch, format!("{n}.clamp_hi"), Box::new(math::Min), r, hi)?;
    bin(patch, format!("{n}.dequant"), Box::new(math::Mul), r, scale)
}

/// `model` with every product of an activation by constant weights (of
/// [`INT8_MIN_WEIGHTS`] or more, one output-channel axis; the depth moved
/// to the activation's last axes when it is elsewhere, except for a
/// product of one row) in int8: weights per output channel, activations
/// per row (dynamic); and every convolution of one image by constant OIHW
/// weights, and every 1 × 1 convolution: weights per output channel, one
/// scale for the image. Returns the graph and the
/// names and kinds (`linear`, `conv`) of the layers rewritten.
pub fn int8_products(
    mut model: TypedModel,
) -> TractResult<(TypedModel, Vec<(String, &'static str)>)> {
    let ids: Vec<usize> = model
        .nodes
        .iter()
        .filter(|n| int8_product(&model, n).is_some())
        .map(|n| n.id)
        .collect();
    // Every product's weights as int8 rows `[n, k]`, gathered into one
    // constant (as the quantizer's own graphs do: a constant cast to f32
    // per layer would be stored as f32).
    let mut pool: Vec<i8> = Vec::new();
    let mut layers = Vec::with_capacity(ids.len());
    for &id in &ids {
        let p = int8_product(&model, &model.nodes[id]).context("an int8 product")?;
        let rows_first = p.w.clone().into_tensor().permute_axes(&p.w_perm)?;
        let rows = rows_first.shape()[0];
        let depth = rows_first.len() / rows.max(1);
        let data: Vec<f32> = rows_first
            .to_plain_array_view::<f32>()?
            .iter()
            .copied()
            .collect();
        let (q, scales) = quantize_per_channel(&data, rows);
        layers.push((id, p, pool.len(), rows, depth, scales));
        pool.extend(q);
    }
    let convs: Vec<(usize, Arc<Tensor>)> = model
        .nodes
        .iter()
        .filter_map(|n| int8_conv(&model, n).map(|w| (n.id, w)))
        .collect();
    let mut conv_layers = Vec::with_capacity(convs.len());
    for (id, w) in convs {
        let rows = w.shape()[0];
        let data: Vec<f32> = w.to_plain_array_view::<f32>()?.iter().copied().collect();
        let (q, scales) = quantize_per_channel(&data, rows);
        conv_layers.push((id, w.shape().to_vec(), pool.len(), scales));
        pool.extend(q);
    }
    let pointwise: Vec<(usize, usize, Arc<Tensor>)> = model
        .nodes
        .iter()
        .filter_map(|n| int8_pointwise(&model, n).map(|(slot, w)| (n.id, slot, w)))
        .collect();
    let mut pointwise_layers = Vec::with_capacity(pointwise.len());
    for (id, slot, w) in pointwise {
        let rows = w.shape()[0];
        let data: Vec<f32> = w.to_plain_array_view::<f32>()?.iter().copied().collect();
        let (q, scales) = quantize_per_channel(&data, rows);
        pointwise_layers.push((id, slot, w.shape().to_vec(), pool.len(), scales));
        pool.extend(q);
    }
    if layers.is_empty() && conv_layers.is_empty() && pointwise_layers.is_empty() {
        return Ok((model, Vec::new()));
    }
    // Read by the products once rewritten (until then, by nothing).
    let c = model.add_const("weights.i8", tensor1(&pool))?;
    let pool_f32 = model.wire_node("weights.i8.to_f32", cast(f32::datum_type()), &[c])?[0];
    let mut names = Vec::with_capacity(layers.len());
    for (id, p, start, rows, depth, scales) in layers {
        let node = &model.nodes[id];
        let name = node.name.clone();
        let x_in = node.inputs[1 - p.w_slot];
        let mut patch = TypedModelPatch::default();
        let mut x = patch.tap_model(&model, x_in)?;
        for (i, &(from, to)) in p.moves.iter().enumerate() {
            x = patch.wire_node(
                format!("{name}.depth_last.{i}"),
                AxisOp::Move(from, to),
                &[x],
            )?[0];
        }
        let r = p.x_dims.len();
        let dims = |d: &[usize]| d.iter().map(|&v| v.to_dim()).collect::<TVec<_>>();
        if p.depth_axes > 1 {
            x = patch.wire_node(
                format!("{name}.depth"),
                AxisOp::Reshape(
                    r - p.depth_axes,
                    dims(&p.x_dims[r - p.depth_axes..]),
                    tvec![depth.to_dim()],
                ),
                &[x],
            )?[0];
        }
        // A moved depth's other axes (an image's pixels) merged into one
        // row axis: the product as the runtime reads an int8 linear layer
        // (tract would merge them after the activation's quantisation).
        let lead = &p.x_dims[..r - p.depth_axes];
        let rows_merged = !p.moves.is_empty() && not_one(lead).len() > 1;
        let tokens: usize = lead.iter().product();
        if rows_merged {
            x = patch.wire_node(
                format!("{name}.rows"),
                AxisOp::Reshape(0, dims(lead), tvec![tokens.to_dim()]),
                &[x],
            )?[0];
        }
        let x_rank = if rows_merged { 2 } else { r - p.depth_axes + 1 };
        let xq = fake_quant(&mut patch, &name, x, &[x_rank - 1])?;
        let all = patch.tap_model(&model, pool_f32)?;
        let wd = pooled_weights(&mut patch, &name, all, start, &[rows, depth], &scales)?;
        let letters = &"abcdefgh"[..x_rank - 1];
        let axes: AxesMapping = format!("{letters}k,nk->{letters}n").parse()?;
        let mut y = patch.wire_node(
            format!("{name}.int8"),
            EinSum::new(axes, f32::datum_type()),
            &[xq, wd],
        )?[0];
        if rows_merged {
            y = patch.wire_node(
                format!("{name}.int8.rows"),
                AxisOp::Reshape(0, tvec![tokens.to_dim()], dims(lead)),
                &[y],
            )?[0];
        }
        let mut at: TVec<usize> = p.y_canonical.clone();
        if p.order.windows(2).any(|o| o[0] > o[1]) {
            // The axes of more than one value alone, moved into the
            // export's order one at a time.
            let bare: TVec<usize> = not_one(&at).into_iter().collect();
            if bare != at {
                y = patch.wire_node(
                    format!("{name}.int8.bare"),
                    AxisOp::Reshape(0, dims(&at), dims(&bare)),
                    &[y],
                )?[0];
                at = bare;
            }
            let mut current: Vec<usize> = (0..p.order.len()).collect();
            for (i, &axis) in p.order.iter().enumerate() {
                let j = current.iter().position(|&a| a == axis).context("an axis")?;
                if j != i {
                    y = patch.wire_node(
                        format!("{name}.int8.move{i}"),
                        AxisOp::Move(j, i),
                        &[y],
                    )?[0];
                    let a = current.remove(j);
                    current.insert(i, a);
                    let d = at.remove(j);
                    at.insert(i, d);
                }
            }
        }
        if at != p.y_dims {
            y = patch.wire_node(
                format!("{name}.int8.reshape"),
                AxisOp::Reshape(0, dims(&at), dims(&p.y_dims)),
                &[y],
            )?[0];
        }
        patch.shunt_outside(&model, OutletId::new(id, 0), y)?;
        patch.apply(&mut model)?;
        names.push((name, "linear"));
    }
    for (id, shape, start, scales) in conv_layers {
        let node = &model.nodes[id];
        let name = node.name.clone();
        let (op, inputs) = (node.op.clone(), node.inputs.clone());
        let mut patch = TypedModelPatch::default();
        let x = patch.tap_model(&model, inputs[0])?;
        // One scale for the image, as the quantizer's own convolutions.
        let xq = fake_quant(&mut patch, &name, x, &[1, 2, 3])?;
        let all = patch.tap_model(&model, pool_f32)?;
        let wd = pooled_weights(&mut patch, &name, all, start, &shape, &scales)?;
        let b = patch.tap_model(&model, inputs[2])?;
        let y = patch.wire_node(format!("{name}.int8"), op, &[xq, wd, b])?[0];
        patch.shunt_outside(&model, OutletId::new(id, 0), y)?;
        patch.apply(&mut model)?;
        names.push((name, "conv"));
    }
    for (id, slot, shape, start, scales) in pointwise_layers {
        let node = &model.nodes[id];
        let name = node.name.clone();
        let (op, inputs) = (node.op.clone(), node.inputs.clone());
        let mut patch = TypedModelPatch::default();
        let x = patch.tap_model(&model, inputs[1 - slot])?;
        let rank = patch.outlet_fact(x)?.rank();
        // One scale for the image, as the convolutions.
        let xq = fake_quant(&mut patch, &name, x, &(0..rank).collect::<Vec<_>>())?;
        let all = patch.tap_model(&model, pool_f32)?;
        let wd = pooled_weights(&mut patch, &name, all, start, &shape, &scales)?;
        let mut wires = [xq, xq];
        wires[slot] = wd;
        let y = patch.wire_node(format!("{name}.int8"), op, &wires)?[0];
        patch.shunt_outside(&model, OutletId::new(id, 0), y)?;
        patch.apply(&mut model)?;
        names.push((name, "conv"));
    }
    model.compact()?;
    Ok((model, names))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// int8 against f32 on values spread over [-1, 1]: the largest
    /// difference relative to the largest output. Measured 3.7e-3.
    const INT8_REL_TOL: f32 = 3e-2;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// `x` (a source of `x_dims`) times the constant `w` by `expr`.
    fn one_product(expr: &str, x_dims: &[usize], w: Tensor) -> TypedModel {
        let mut m = TypedModel::default();
        let x = m.add_source("x", f32::fact(x_dims)).unwrap();
        let w = m.add_const("w", w).unwrap();
        let axes: AxesMapping = expr.parse().unwrap();
        let y = m
            .wire_node("p", EinSum::new(axes, f32::datum_type()), &[x, w])
            .unwrap();
        m.select_output_outlets(&y).unwrap();
        m
    }

    fn run(model: &TypedModel, x: &Tensor) -> Vec<f32> {
        let plan = model.clone().into_runnable().unwrap();
        let y = plan.run(tvec!(x.clone().into_tvalue())).unwrap();
        y[0].to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect()
    }

    /// int8 against f32 over the outputs, relative to the largest.
    fn rel_error(want: &[f32], got: &[f32]) -> f32 {
        let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
        want.iter()
            .zip(got)
            .map(|(a, b)| (a - b).abs() / scale)
            .fold(
                0f32,
                |a, d| if d.is_nan() { f32::INFINITY } else { a.max(d) },
            )
    }

    /// `expr`'s product of `x_dims` by `w` rewritten as one `kind` layer
    /// (`linear` or `conv`) of output `y_dims`, its values as f32's
    /// within int8's error.
    fn rewritten_agrees(expr: &str, x_dims: &[usize], w: Tensor, y_dims: &[usize], kind: &str) {
        let m = one_product(expr, x_dims, w);
        let input = Tensor::from_shape(x_dims, &values(x_dims.iter().product(), 5)).unwrap();
        let want = run(&m, &input);
        let (q, names) = int8_products(m).unwrap();
        assert_eq!(names, [("p".to_string(), kind)], "{expr}");
        assert_eq!(
            q.output_fact(0).unwrap().shape.as_concrete(),
            Some(y_dims),
            "{expr}"
        );
        let worst = rel_error(&want, &run(&q, &input));
        assert!(worst > 0.0 && worst <= INT8_REL_TOL, "{expr}: {worst}");
    }

    /// A product whose output is transposed (`mk,nk->nm`, equal sizes, as
    /// tract's declutter folds a transpose into a ViT's products) is
    /// rewritten, its output moved back into place, not reshaped: the
    /// values agree with f32's.
    #[test]
    fn a_transposed_product_is_rewritten_and_moved_back() {
        for (expr, x_dims, y_dims) in [
            ("mk,nk->nm", vec![48, 32], vec![48, 48]),
            ("bmk,nk->bnm", vec![1, 16, 32], vec![1, 48, 16]),
            // Three axes each way round (a permutation that is not its
            // own inverse).
            ("bmk,nk->nbm", vec![4, 16, 32], vec![48, 4, 16]),
            ("bmk,nk->mnb", vec![4, 16, 32], vec![16, 48, 4]),
        ] {
            let w = Tensor::from_shape(&[48, 32], &values(48 * 32, 3)).unwrap();
            rewritten_agrees(expr, &x_dims, w, &y_dims, "linear");
        }
    }

    /// A product whose depth is not the activation's last axis (a
    /// transpose folded into it: attention over an image's `C, H·W`
    /// features) is rewritten, the depth moved last first: the values as
    /// f32's within int8's error.
    #[test]
    fn a_product_with_its_depth_first_is_rewritten_and_agrees() {
        for (expr, x_dims, y_dims, w_dims) in [
            (
                "bkm,nk->bmn",
                vec![1, 32, 20],
                vec![1, 20, 48],
                vec![48, 32],
            ),
            ("km,nk->mn", vec![32, 20], vec![20, 48], vec![48, 32]),
            (
                "bkm,nk->bnm",
                vec![2, 32, 20],
                vec![2, 48, 20],
                vec![48, 32],
            ),
            // An image's `C, H, W` (two pixel axes, merged into rows).
            ("kab,nk->abn", vec![32, 4, 5], vec![4, 5, 48], vec![48, 32]),
            // A depth split around a row axis.
            ("kma,nka->mn", vec![4, 5, 8], vec![5, 48], vec![48, 4, 8]),
        ] {
            let w = Tensor::from_shape(&w_dims, &values(48 * 32, 13)).unwrap();
            let m = one_product(expr, &x_dims, w);
            // One copy each: the depth moved in one step.
            let node = m.nodes.iter().find(|n| n.name == "p").unwrap();
            assert_eq!(int8_product(&m, node).expect(expr).moves.len(), 1, "{expr}");
            let w = Tensor::from_shape(&w_dims, &values(48 * 32, 13)).unwrap();
            rewritten_agrees(expr, &x_dims, w, &y_dims, "linear");
        }
    }

    /// A 1 × 1 convolution as tract declutters one, the batch axis kept,
    /// dropped or absent, is an int8 convolution (one scale for the
    /// image): the values as f32's within int8's error.
    #[test]
    fn a_pointwise_convolution_is_rewritten_and_agrees() {
        for (expr, x_dims, y_dims) in [
            ("nihw,oi->ohw", vec![1, 32, 4, 5], vec![48, 4, 5]),
            ("nihw,oi->nohw", vec![1, 32, 4, 5], vec![1, 48, 4, 5]),
            ("ihw,oi->ohw", vec![32, 4, 5], vec![48, 4, 5]),
        ] {
            let w = Tensor::from_shape(&[48, 32], &values(48 * 32, 19)).unwrap();
            rewritten_agrees(expr, &x_dims, w, &y_dims, "conv");
        }
    }

    /// Where the depth is the activation's last axes already (one or
    /// split over two), nothing is moved: one row included.
    #[test]
    fn a_trailing_depth_is_not_moved() {
        for (expr, x_dims, w_dims, y_dims) in [
            (
                "mak,nak->bmn",
                vec![5, 2, 32],
                vec![24, 2, 32],
                vec![1, 5, 24],
            ),
            ("mak,nak->mn", vec![1, 2, 32], vec![24, 2, 32], vec![1, 24]),
            ("bmk,nk->bmn", vec![1, 7, 64], vec![24, 64], vec![1, 7, 24]),
        ] {
            let n: usize = w_dims.iter().product();
            let w = || Tensor::from_shape(&w_dims, &values(n, 29)).unwrap();
            let m = one_product(expr, &x_dims, w());
            let node = m.nodes.iter().find(|n| n.name == "p").unwrap();
            let p = int8_product(&m, node).expect(expr);
            assert!(p.moves.is_empty(), "{expr}: {:?}", p.moves);
            rewritten_agrees(expr, &x_dims, w(), &y_dims, "linear");
        }
    }

    /// A product whose depth is split over two axes (an export's head
    /// merge folded into it) and whose output gains an axis is rewritten:
    /// the depth merged, the output reshaped back, the values as f32's
    /// within int8's error.
    #[test]
    fn a_product_with_a_split_depth_is_rewritten_and_agrees() {
        let w = Tensor::from_shape(&[24, 2, 32], &values(24 * 64, 7)).unwrap();
        let m = one_product("mak,nak->bmn", &[5, 2, 32], w);
        let input = Tensor::from_shape(&[5, 2, 32], &values(320, 11)).unwrap();
        let want = run(&m, &input);
        let (q, names) = int8_products(m).unwrap();
        assert_eq!(names, [("p".to_string(), "linear")]);
        assert_eq!(
            q.output_fact(0).unwrap().shape.as_concrete(),
            Some(&[1usize, 5, 24][..])
        );
        let worst = rel_error(&want, &run(&q, &input));
        eprintln!("int8 vs f32: {worst:.2e} of the largest output");
        assert!(worst > 0.0 && worst <= INT8_REL_TOL, "{worst}");
    }
}
