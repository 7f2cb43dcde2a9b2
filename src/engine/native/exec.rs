//! One step of the schedule run over the arena: the op's kernels, its
//! fused epilogues, and element-wise work split by rows over the pool's
//! threads.

use super::ops;
use super::scratch::Scratch;
use crate::engine::schedule::fuse;
use crate::engine::schedule::ir::{Kind, Operand, Post, Step};
use crate::engine::schedule::ops::{is_row_major, AroundAxis, Reduce};
use crate::kernels::elementwise::{self as ew, Level};
use crate::kernels::pool::Pool;
use crate::kernels::Kernels;

/// The inputs of one step: the arena below and above its output, and the
/// constants.
pub(super) struct Io<'a> {
    pub(super) lo: &'a [f32],
    pub(super) hi: &'a [f32],
    pub(super) hi_start: usize,
    pub(super) offsets: &'a [usize],
    pub(super) lens: &'a [usize],
    pub(super) consts: &'a [Vec<f32>],
}

impl<'a> Io<'a> {
    fn get(&self, o: Operand) -> &'a [f32] {
        match o {
            Operand::Const(i) => &self.consts[i],
            Operand::Val(v) => {
                let (off, len) = (self.offsets[v], self.lens[v]);
                if off + len <= self.lo.len() {
                    &self.lo[off..off + len]
                } else {
                    // The plan keeps inputs apart from the output.
                    &self.hi[off - self.hi_start..off - self.hi_start + len]
                }
            }
        }
    }

    fn opt(&self, o: Option<Operand>) -> &'a [f32] {
        o.map(|o| self.get(o)).unwrap_or(&[])
    }
}

fn apply_posts(lv: Level, posts: &[Post], io: &Io<'_>, first: usize, y: &mut [f32]) {
    for p in posts {
        match p {
            Post::Unary(op) => ops::unary_in_place(lv, *op, y),
            Post::Binary {
                op,
                y_first,
                dims,
                other,
                so,
            } => {
                let row = dims.last().copied().unwrap_or(1).max(1);
                ops::binary_post(lv, *op, *y_first, dims, io.get(*other), so, first / row, y)
            }
        }
    }
}

pub(super) fn exec(
    step: &Step,
    io: &Io<'_>,
    dst: &mut [f32],
    scratch: &mut Scratch,
    kernels: &Kernels,
    pool: &Pool,
) {
    let posts = &step.posts[..];
    let lv = kernels.level;
    let post = |first: usize, y: &mut [f32]| apply_posts(lv, posts, io, first, y);
    match &step.kind {
        Kind::Binary {
            op,
            dims,
            a,
            sa,
            b,
            sb,
        } => {
            let (a, b) = (io.get(*a), io.get(*b));
            let n = dims.last().copied().unwrap_or(1);
            if n > 0 {
                split_rows(pool, dst, n, &|r0, out| {
                    ops::binary_rows(lv, *op, dims, a, sa, b, sb, r0, out);
                    post(r0 * n, out);
                });
            }
        }
        Kind::Unary { op, x } => {
            let x = io.get(*x);
            let row = fuse::unary_row(posts);
            split_rows(pool, dst, row, &|r0, out| {
                let first = r0 * row;
                ops::unary(lv, *op, &x[first..first + out.len()], out);
                post(first, out);
            });
        }
        Kind::Reduce {
            op,
            dims,
            sx,
            so,
            count,
            x,
        } => {
            let x = io.get(*x);
            let n = dims.last().copied().unwrap_or(1);
            // `max` or `max |x|` of each innermost row, the rows in order (an
            // int8 layer's per-token scale): split by rows.
            let rowwise = matches!(op, Reduce::Max | Reduce::AbsMax)
                && n > 0
                && so.last() == Some(&0)
                && dst.len() * n == dims.iter().product::<usize>()
                && is_row_major(dims, sx)
                && is_row_major(&dims[..dims.len() - 1], &so[..so.len() - 1]);
            // `max` or `max |x|` of the whole tensor (an int8
            // convolution's scale): a part per thread (one part on one
            // thread: the vectorised row kernel, not the generic loop),
            // then the max of those.
            let whole = matches!(op, Reduce::Max | Reduce::AbsMax)
                && dst.len() == 1
                && x.len() == dims.iter().product::<usize>()
                && is_row_major(dims, sx);
            if whole {
                let f = if *op == Reduce::Max {
                    ew::max
                } else {
                    ew::abs_max
                };
                let mut parts = [f32::NEG_INFINITY; MAX_THREAD_PARTS];
                let t = pool.threads().min(MAX_THREAD_PARTS);
                let each = x.len().div_ceil(t);
                pool.rows(
                    x.len(),
                    MIN_PARALLEL_ELEMS,
                    &mut parts[..t],
                    t,
                    1,
                    1,
                    &|i0, out| {
                        for (i, o) in out.iter_mut().enumerate() {
                            let lo = ((i0 + i) * each).min(x.len());
                            *o = f(lv, &x[lo..(lo + each).min(x.len())]);
                        }
                    },
                );
                dst[0] = parts.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
            } else if rowwise {
                let f = if *op == Reduce::Max {
                    ew::max
                } else {
                    ew::abs_max
                };
                pool.rows(
                    x.len(),
                    MIN_PARALLEL_ELEMS,
                    dst,
                    dst.len(),
                    1,
                    1,
                    &|r0, out| {
                        for (i, o) in out.iter_mut().enumerate() {
                            *o = f32::NEG_INFINITY.max(f(lv, &x[(r0 + i) * n..(r0 + i + 1) * n]));
                        }
                    },
                );
            } else {
                ops::reduce(lv, *op, dims, x, sx, so, *count, dst);
            }
        }
        Kind::Softmax { around, x } => {
            let x = io.get(*x);
            split_around(pool, *around, dst, &|a, r0, out| {
                ops::softmax(lv, a, &x[r0..r0 + out.len()], out);
                post(r0, out);
            });
        }
        Kind::RmsNorm {
            around,
            eps,
            center,
            x,
        } => {
            let x = io.get(*x);
            split_around(pool, *around, dst, &|a, r0, out| {
                ops::rms_norm(lv, a, *eps, *center, &x[r0..r0 + out.len()], out);
                post(r0, out);
            });
        }
        Kind::Copy { parts } => {
            if let [p] = &parts[..] {
                let n = p.dims.last().copied().unwrap_or(1);
                let whole = p.dims.iter().product::<usize>() == dst.len();
                if n > 0 && whole && p.dst_off == 0 && is_row_major(&p.dims, &p.sd) {
                    let src = io.get(p.src);
                    split_rows(pool, dst, n, &|r0, out| {
                        ops::copy_rows(&p.dims, src, p.src_off, &p.ss, r0, out)
                    });
                    return;
                }
            }
            for p in parts {
                ops::copy(
                    &p.dims,
                    io.get(p.src),
                    p.src_off,
                    &p.ss,
                    dst,
                    p.dst_off,
                    &p.sd,
                );
            }
        }
        Kind::MatMul { mm, a, b, s } => mm.run(
            kernels,
            pool,
            io.get(*a),
            io.opt(*b),
            io.opt(*s),
            dst,
            scratch,
            &post,
        ),
        Kind::Conv { conv, x, s } => {
            conv.run(kernels, pool, io.get(*x), io.opt(*s), dst, scratch, &post)
        }
        Kind::Depthwise { dw, x } => dw.run(lv, pool, io.get(*x), dst, &mut scratch.pa, &post),
        Kind::Pool { pool: p, x } => {
            let x = io.get(*x);
            split_rows(pool, dst, p.oh * p.ow, &|c0, out| {
                ops::sum_pool(p, x, c0, out)
            });
        }
    }
}

/// Most threads a whole-tensor maximum keeps a part for (more threads than
/// this share the parts).
const MAX_THREAD_PARTS: usize = 64;

/// Element-wise ops with fewer outputs than this run on the caller alone
/// (waking the other threads costs about as much as they would save).
const MIN_PARALLEL_ELEMS: usize = 1 << 14;

/// `f(first_row, rows)` over blocks of whole rows of `dst` (`row_len` each)
/// on the pool's threads, or on the caller alone for a small `dst`.
pub(super) fn split_rows(
    pool: &Pool,
    dst: &mut [f32],
    row_len: usize,
    f: &(dyn Fn(usize, &mut [f32]) + Sync),
) {
    let rows = dst.len() / row_len.max(1);
    pool.rows(dst.len(), MIN_PARALLEL_ELEMS, dst, rows, row_len, 1, f);
}

/// `f(part, first_element, out)` over blocks of the outer index of a tensor
/// seen `around` an axis, each block's `part` describing it alone.
fn split_around(
    pool: &Pool,
    around: AroundAxis,
    dst: &mut [f32],
    f: &(dyn Fn(AroundAxis, usize, &mut [f32]) + Sync),
) {
    let block = around.n * around.inner;
    if block == 0 {
        return;
    }
    split_rows(pool, dst, block, &|r0, out| {
        let part = AroundAxis {
            outer: out.len() / block,
            ..around
        };
        f(part, r0 * block, out)
    });
}
