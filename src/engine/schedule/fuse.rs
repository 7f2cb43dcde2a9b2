//! Fusion, once at load, on the lowered schedule:
//!
//! - **Epilogues**: an element-wise op (`Unary`, or `Binary` reading the
//!   producer's whole output in order) whose input is read by nothing else
//!   becomes a [`Post`] of the step that produces that input, applied to
//!   each block of the output while the block is still in cache (a linear
//!   layer's bias and residual add, a convolution's ReLU, a norm's scale and
//!   shift). The intermediate tensor disappears from the arena.
//! - **QuickGELU**: `Mul(x, Sigmoid(Mul(x, α)))` with nothing else reading
//!   `x` becomes one `Unary(QuickGelu(α))`, then fuses like any unary op
//!   (into the product before it).
//! - **`|x|` then max**: `Reduce(Max)` of a `Unary(Abs)` that nothing else
//!   reads becomes one `Reduce(AbsMax)` pass (an int8 layer's activation
//!   scale).
//!
//! Arithmetic is unchanged: each value goes through the same f32 operations
//! in the same order, only sooner. `CLIP_EDGE_FUSE=0` turns fusion off (to
//! measure what it gains).

use super::ir::{Kind, Operand, Post, Step};
use super::linear::MatMul;
use super::ops::{self, Binary, Reduce, Unary};

/// Fuses `steps` in place (`input`: the graph's input, written before the
/// first step; `output`: the value the frame returns, never fused away).
pub fn fuse(
    steps: &mut Vec<Step>,
    lens: &[usize],
    consts: &[Vec<f32>],
    input: usize,
    output: usize,
) {
    if !super::fuse_on() {
        log::info!("CLIP_EDGE_FUSE=0: no fused epilogues");
        return;
    }
    abs_max(steps);
    let before = steps.len();
    epilogues(steps, lens, input, output);
    if quick_gelu(steps, lens, consts) {
        epilogues(steps, lens, input, output);
    }
    log::debug!(
        "fusion: {} element-wise ops into their producers",
        before - steps.len()
    );
}

/// How many times each value is read (fused epilogues included).
fn reads(steps: &[Step], values: usize) -> Vec<usize> {
    let mut n = vec![0usize; values];
    for s in steps {
        for o in s.inputs() {
            if let Operand::Val(v) = o {
                n[v] += 1;
            }
        }
    }
    n
}

fn abs_max(steps: &mut [Step]) {
    let values = steps.iter().map(|s| s.out + 1).max().unwrap_or(0);
    let n = reads(steps, values.max(1));
    let abs_of: Vec<Option<Operand>> = {
        let mut m = vec![None; values];
        for s in steps.iter() {
            if let (Kind::Unary { op: Unary::Abs, x }, true) = (&s.kind, s.posts.is_empty()) {
                m[s.out] = Some(*x);
            }
        }
        m
    };
    for s in steps.iter_mut() {
        if let Kind::Reduce {
            op: op @ Reduce::Max,
            x: x @ Operand::Val(_),
            ..
        } = &mut s.kind
        {
            let Operand::Val(a) = *x else { continue };
            if let (Some(src), 1) = (abs_of.get(a).copied().flatten(), n[a]) {
                *op = Reduce::AbsMax;
                *x = src;
            }
        }
    }
}

/// Rewrites each step that computes `x · sigmoid(α · x)` from an `x` it
/// alone reads (the epilogue pass leaves QuickGELU as `Mul(x, α)` with the
/// sigmoid and the product by `x` fused after it) into one
/// `Unary(QuickGelu(α))`. Whether any was found.
fn quick_gelu(steps: &mut [Step], lens: &[usize], consts: &[Vec<f32>]) -> bool {
    let n = reads(steps, lens.len());
    let mut found = false;
    for s in steps.iter_mut() {
        let Kind::Binary {
            op: Binary::Mul,
            dims,
            a,
            sa,
            b,
            sb,
        } = &s.kind
        else {
            continue;
        };
        let whole = ops::strides_of(dims);
        // A one-value constant (its strides reach nothing else).
        let scalar = |o: &Operand| match o {
            Operand::Const(c) if consts[*c].len() == 1 => Some(consts[*c][0]),
            _ => None,
        };
        let (x, alpha) = match (a, b) {
            (Operand::Val(_), _) if *sa == whole => match scalar(b) {
                Some(c) => (*a, c),
                None => continue,
            },
            (_, Operand::Val(_)) if *sb == whole => match scalar(a) {
                Some(c) => (*b, c),
                None => continue,
            },
            _ => continue,
        };
        let Operand::Val(v) = x else { continue };
        let gate = matches!(
            &s.posts[..],
            [Post::Unary(Unary::Sigmoid), Post::Binary { op: Binary::Mul, dims: d, other, so, .. }]
                if *other == x && *d == *dims && *so == whole
        );
        if gate && n[v] == 2 && dims.iter().product::<usize>() == lens[v] {
            s.kind = Kind::Unary {
                op: Unary::QuickGelu(alpha),
                x,
            };
            s.posts.clear();
            found = true;
        }
    }
    found
}

/// The block size (in values) a producer writes its output in, each block
/// starting at a multiple of it: a fused op's rows must tile it. `None`:
/// the op takes no epilogue.
fn granularity(s: &Step, len: usize) -> Option<usize> {
    match &s.kind {
        Kind::MatMul { mm, .. } => matmul_block(mm, len),
        // Whole output rows (a thread's pixels, when split by pixels).
        Kind::Conv { conv, .. } => Some(conv.ow),
        // Whole channels (a thread's planes).
        Kind::Depthwise { dw, .. } => Some(dw.oh * dw.ow),
        Kind::Binary { dims, .. } => Some(dims.last().copied().unwrap_or(1)),
        Kind::Unary { .. } => Some(unary_row(&s.posts)),
        Kind::Softmax { around, .. } | Kind::RmsNorm { around, .. } => {
            Some(around.n * around.inner)
        }
        Kind::Reduce { .. } | Kind::Copy { .. } | Kind::Pool { .. } => None,
    }
}

/// A product writes rows of `n` in place when its output rows are
/// contiguous (each batch must then start on a row); else it scatters, and
/// the epilogue runs on the whole output at once.
fn matmul_block(mm: &MatMul, len: usize) -> Option<usize> {
    if !mm.out_rows_contiguous() {
        Some(len)
    } else if mm.o_batch.iter().all(|b| b % mm.n.max(1) == 0) {
        Some(mm.n)
    } else {
        None
    }
}

/// The rows a `Unary` step splits its output into: its first fused binary
/// op's row (so that op sees whole rows), else single values.
pub fn unary_row(posts: &[Post]) -> usize {
    posts
        .iter()
        .find_map(|p| match p {
            Post::Binary { dims, .. } => dims.last().copied(),
            Post::Unary(_) => None,
        })
        .unwrap_or(1)
}

/// The post-op `consumer` becomes when it reads `v` (`len` values) once, in
/// order, and its other operand (if any) is ready before step `at`.
fn as_post(consumer: &Step, v: usize, len: usize, ready: &dyn Fn(Operand) -> bool) -> Option<Post> {
    if !consumer.posts.is_empty() {
        return None;
    }
    match &consumer.kind {
        Kind::Unary { op, x } if *x == Operand::Val(v) => Some(Post::Unary(*op)),
        Kind::Binary {
            op,
            dims,
            a,
            sa,
            b,
            sb,
        } => {
            let whole = ops::strides_of(dims);
            if dims.iter().product::<usize>() != len {
                return None;
            }
            let (y_first, other, so) = if *a == Operand::Val(v) && *b != *a && *sa == whole {
                (true, *b, sb)
            } else if *b == Operand::Val(v) && *a != *b && *sb == whole {
                (false, *a, sa)
            } else {
                return None;
            };
            ready(other).then(|| Post::Binary {
                op: *op,
                y_first,
                dims: dims.clone(),
                other,
                so: so.clone(),
            })
        }
        _ => None,
    }
}

fn epilogues(steps: &mut Vec<Step>, lens: &[usize], input: usize, output: usize) {
    let mut i = 0;
    while i < steps.len() {
        loop {
            let v = steps[i].out;
            if v == output {
                break;
            }
            let n = reads(steps, lens.len());
            if n[v] != 1 {
                break;
            }
            let Some(j) =
                (i + 1..steps.len()).find(|&j| steps[j].inputs().contains(&Operand::Val(v)))
            else {
                break;
            };
            // The other operand must exist when step `i` runs.
            let ready = |o: Operand| match o {
                Operand::Const(_) => true,
                Operand::Val(w) => w == input || steps[..i].iter().any(|s| s.out == w),
            };
            let Some(post) = as_post(&steps[j], v, lens[v], &ready) else {
                break;
            };
            let Some(g) = granularity(&steps[i], lens[v]) else {
                break;
            };
            if let Post::Binary { dims, .. } = &post {
                let row = dims.last().copied().unwrap_or(1).max(1);
                // A Unary producer with no binary post yet takes this row.
                let free =
                    matches!(steps[i].kind, Kind::Unary { .. }) && unary_row(&steps[i].posts) == 1;
                if !free && g % row != 0 {
                    break;
                }
            }
            let consumer = steps.remove(j);
            steps[i].posts.push(post);
            steps[i].out = consumer.out;
        }
        i += 1;
    }
}
