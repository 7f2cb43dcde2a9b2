//! Patterns lowering recognises across several graph nodes: LayerNorm
//! and the fake quantisation in front of an int8 product.

use super::*;

impl Lowerer<'_> {
    /// `(x, axis, eps)` when `node` is LayerNorm's core as written:
    /// `Mul(c, Rsqrt(Add(Div(ΣSquare(c), n), eps)))` with
    /// `c = Sub(x, Mul(Σx, 1/n))`, both sums over one `axis` of `n`
    /// (`Mul` by `1/n` and `Div` by `n` accepted either way).
    pub(super) fn layer_norm(&self, node: &TypedNode) -> Option<(OutletId, usize, f32)> {
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
    pub(super) fn fake_quant(&self, o: OutletId) -> Option<(OutletId, OutletId)> {
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
    pub(super) fn quant_of(&self, q: OutletId, s: OutletId) -> Option<OutletId> {
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
}
