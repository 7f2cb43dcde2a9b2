//! The load-time check that every offset a step reads or writes lies
//! within its tensor: a hostile graph is refused at load, it cannot index
//! out of range per frame.

use super::ir::{self, Kind, Operand, Post, Step};
use super::{linear, ops};

/// The largest offset `dims` reach with `strides` from `base` (`None` when
/// the shape is empty: nothing is touched).
fn reach(base: usize, dims: &[usize], strides: &[usize]) -> Option<usize> {
    if dims.contains(&0) {
        return None;
    }
    Some(
        base + dims
            .iter()
            .zip(strides)
            .map(|(d, s)| (d - 1) * s)
            .sum::<usize>(),
    )
}

fn max_of(t: &[usize]) -> usize {
    t.iter().copied().max().unwrap_or(0)
}

/// Every step's reads and writes lie within their tensors.
pub fn check_bounds(l: &ir::Lowered) -> Result<(), String> {
    let len = |o: Operand| match o {
        Operand::Val(v) => l.lens[v],
        Operand::Const(i) => l.consts[i].len(),
    };
    let within = |what: &str, step: &Step, reach: Option<usize>, len: usize| match reach {
        Some(r) if r >= len => Err(format!(
            "{:?} reads or writes {what} at {r}, past its {len} values",
            step.name
        )),
        _ => Ok(()),
    };
    for st in &l.steps {
        let out = l.lens[st.out];
        for p in &st.posts {
            if let Post::Binary {
                dims, other, so, ..
            } = p
            {
                if dims.iter().product::<usize>() != out {
                    return Err(format!(
                        "{:?}: a fused op over {dims:?}, not its {out} values",
                        st.name
                    ));
                }
                within("a fused operand", st, reach(0, dims, so), len(*other))?;
            }
        }
        match &st.kind {
            Kind::Binary {
                dims, a, sa, b, sb, ..
            } => {
                within("a", st, reach(0, dims, sa), len(*a))?;
                within("b", st, reach(0, dims, sb), len(*b))?;
                within("out", st, reach(0, dims, &ops::strides_of(dims)), out)?;
            }
            Kind::Unary { x, .. } => within("x", st, out.checked_sub(1), len(*x))?,
            Kind::Reduce {
                dims, sx, so, x, ..
            } => {
                within("x", st, reach(0, dims, sx), len(*x))?;
                within("out", st, reach(0, dims, so), out)?;
            }
            Kind::Softmax { around, x } | Kind::RmsNorm { around, x, .. } => {
                let n = around.outer * around.n * around.inner;
                within("x", st, n.checked_sub(1), len(*x))?;
                within("out", st, n.checked_sub(1), out)?;
            }
            Kind::Copy { parts } => {
                for p in parts {
                    within("src", st, reach(p.src_off, &p.dims, &p.ss), len(p.src))?;
                    within("dst", st, reach(p.dst_off, &p.dims, &p.sd), out)?;
                }
            }
            Kind::MatMul { mm, a, b, s } => {
                let rows = mm.m.min(1) * mm.k.min(1);
                if rows > 0 {
                    within(
                        "a",
                        st,
                        Some(max_of(&mm.a_batch) + max_of(&mm.a_m) + max_of(&mm.a_k)),
                        len(*a),
                    )?;
                }
                if mm.m.min(1) * mm.n.min(1) > 0 {
                    within(
                        "out",
                        st,
                        Some(max_of(&mm.o_batch) + max_of(&mm.o_m) + max_of(&mm.o_n)),
                        out,
                    )?;
                }
                match (&mm.rhs, b, s) {
                    (linear::Rhs::Act { b_batch, b_n, b_k }, Some(b), _) => within(
                        "b",
                        st,
                        Some(max_of(b_batch) + max_of(b_n) + max_of(b_k)),
                        len(*b),
                    )?,
                    (linear::Rhs::Act { .. }, None, _) => {
                        return Err(format!("{:?}: no right-hand side", st.name))
                    }
                    (linear::Rhs::Int8(_, q), _, Some(s)) => within(
                        "scales",
                        st,
                        Some(max_of(&q.s_batch) + max_of(&q.s_m)),
                        len(*s),
                    )?,
                    (linear::Rhs::Int8(..), _, None) => {
                        return Err(format!("{:?}: no activation scales", st.name))
                    }
                    _ => {}
                }
            }
            Kind::Conv { conv, x, s } => {
                within("x", st, (conv.c * conv.h * conv.w).checked_sub(1), len(*x))?;
                within("out", st, (conv.o * conv.oh * conv.ow).checked_sub(1), out)?;
                match (s, &conv.weights) {
                    (Some(s), _) => within("scale", st, Some(0), len(*s))?,
                    (None, linear::ConvWeights::Int8(_)) => {
                        return Err(format!("{:?}: no activation scale", st.name))
                    }
                    _ => {}
                }
            }
            Kind::Depthwise { dw, x } => {
                within("x", st, (dw.c * dw.h * dw.w).checked_sub(1), len(*x))?;
                within("out", st, (dw.o * dw.oh * dw.ow).checked_sub(1), out)?;
            }
            Kind::Pool { pool, x } => {
                within("x", st, (pool.c * pool.h * pool.w).checked_sub(1), len(*x))?;
                within("out", st, (pool.c * pool.oh * pool.ow).checked_sub(1), out)?;
            }
        }
    }
    Ok(())
}
