//! The native engine: the bundle's graph lowered once, at load, to a static
//! schedule of our ops ([`lower`]), every tensor at an offset of one arena
//! planned from the tensors' lifetimes ([`plan`]), weights packed in the
//! bundle's precision ([`linear`]), and our kernels ([`crate::kernels`]).
//! A frame runs the schedule in order: no allocation, no lock; on one thread
//! no system call (with more, waking parked workers, about once a frame).
//! Every offset an op will read or write is checked against its tensor at
//! load ([`check_bounds`]): a hostile graph is refused, it cannot index out
//! of range per frame.

pub mod fold;
pub mod fuse;
pub mod ir;
pub mod linear;
pub mod lower;
pub mod ops;
pub mod plan;
pub mod winograd;

use std::collections::BTreeMap;

use tract_core::internal::TypedModel;

use crate::kernels::elementwise::{self as ew, Level};
use crate::kernels::pool::Pool;
use crate::kernels::Kernels;
use ir::{Kind, LowerError, Operand, Post, Step};
pub use linear::FloatWeights;
use linear::{Scratch, ScratchSize};
use ops::Reduce;

/// A lowered image encoder, ready to run frames.
pub struct Native {
    steps: Vec<Step>,
    offsets: Vec<usize>,
    lens: Vec<usize>,
    consts: Vec<Vec<f32>>,
    arena: Vec<f32>,
    scratch: Scratch,
    input: usize,
    output: usize,
    kernels: Kernels,
    pool: Pool,
    weight_bytes: usize,
    /// Time spent in each step over the frames profiled (`bench --profile`).
    profile: Option<Profile>,
}

/// Per-step run time, summed over frames; allocated when profiling is
/// turned on, so a profiled frame allocates nothing either.
struct Profile {
    steps: Vec<std::time::Duration>,
    frames: u64,
}

/// One step's time per frame (`bench --profile`'s `profile_steps`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepTime {
    pub name: String,
    /// As [`Summary::ops`] names the class.
    pub op: String,
    /// Multiply-adds a frame (products and convolutions; 0 otherwise).
    pub macs: usize,
    pub ms: f64,
    pub gmacs_per_s: f64,
}

/// What a loaded native engine runs (for logs, `info` and `bench --json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    /// The kernel path, e.g. `x86_64-avx2`.
    pub kernels: &'static str,
    /// Ops by class and precision (`linear/int8`, `conv/f16`, `softmax`…).
    pub ops: BTreeMap<String, usize>,
    pub arena_bytes: usize,
    pub scratch_bytes: usize,
    pub weight_bytes: usize,
    pub threads: usize,
    /// Each matrix product (linear layer, convolution) by graph node name,
    /// with the precision its weights run in.
    #[serde(skip)]
    pub products: Vec<(String, &'static str)>,
}

impl Native {
    /// Lowers a decluttered graph with constants folded (see
    /// [`crate::tract_graph::for_native`]).
    /// `threads`: the compute threads (the caller's included), made now.
    /// `float`: how f32 weights that are exactly f16 are kept.
    pub fn new(
        model: &TypedModel,
        kernels: Kernels,
        threads: usize,
        float: FloatWeights,
    ) -> Result<Native, LowerError> {
        // `CLIP_EDGE_WINOGRAD=0` keeps 3 × 3 convolutions direct.
        let winograd = std::env::var("CLIP_EDGE_WINOGRAD").as_deref() != Ok("0");
        let mut l = lower::lower(model, &kernels, float, winograd)?;
        // Copies read only by a product: read through its tables instead
        // (`CLIP_EDGE_FOLD=0` keeps them).
        if std::env::var("CLIP_EDGE_FOLD").as_deref() != Ok("0") {
            let n = fold::fold_copies(&mut l);
            log::debug!("{n} copies folded into the products that read them");
        }
        Self::from_lowered(l, kernels, threads)
    }

    /// A schedule lowered (and maybe rewritten, [`fold`]) for `kernels`.
    pub fn from_lowered(
        l: ir::Lowered,
        kernels: Kernels,
        threads: usize,
    ) -> Result<Native, LowerError> {
        let (offsets, total) = plan_arena(&l)?;
        let mut size = ScratchSize::default();
        let mut weight_bytes = 0;
        for s in &l.steps {
            match &s.kind {
                Kind::MatMul { mm, .. } => {
                    size = size.max(mm.scratch());
                    weight_bytes += mm.weight_bytes();
                }
                Kind::Conv { conv, .. } => {
                    size = size.max(conv.scratch());
                    weight_bytes += conv.weight_bytes();
                }
                _ => {}
            }
        }
        weight_bytes += 4 * l.consts.iter().map(Vec::len).sum::<usize>();
        if log::log_enabled!(log::Level::Debug) {
            for (i, s) in l.steps.iter().enumerate() {
                log::debug!(
                    "step {i}: {} {} -> v{} ({} values) reads {:?}",
                    op_key(&s.kind),
                    s.name,
                    s.out,
                    l.lens[s.out],
                    s.inputs()
                );
            }
        }
        let native = Native {
            steps: l.steps,
            offsets,
            lens: l.lens,
            consts: l.consts,
            arena: vec![0f32; total],
            scratch: Scratch::new(size),
            input: l.input,
            output: l.output,
            kernels,
            pool: Pool::new(threads),
            weight_bytes,
            profile: None,
        };
        log::info!(
            "native engine: {} thread(s), {} ops, arena {:.1} MB, scratch {:.1} MB, weights {:.1} MB; {}",
            native.pool.threads(),
            native.steps.len(),
            native.arena.len() as f64 * 4e-6,
            native.scratch.bytes() as f64 * 1e-6,
            native.weight_bytes as f64 * 1e-6,
            native
                .summary()
                .ops
                .iter()
                .map(|(k, v)| format!("{k} x{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(native)
    }

    pub fn input_len(&self) -> usize {
        self.lens[self.input]
    }

    /// Each step's graph node name, in order (the GPU parity trace matches
    /// steps by name).
    pub fn step_names(&self) -> Vec<&str> {
        self.steps.iter().map(|s| s.name.as_str()).collect()
    }

    pub fn output_len(&self) -> usize {
        self.lens[self.output]
    }

    /// The compute threads.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn summary(&self) -> Summary {
        let mut ops = BTreeMap::new();
        let mut products = Vec::new();
        for s in &self.steps {
            match &s.kind {
                Kind::MatMul { mm, .. } if !matches!(mm.rhs, linear::Rhs::Act { .. }) => {
                    products.push((s.name.clone(), mm.precision()))
                }
                Kind::Conv { conv, .. } => products.push((s.name.clone(), conv.precision())),
                _ => {}
            }
            *ops.entry(op_key(&s.kind)).or_insert(0) += 1;
        }
        Summary {
            kernels: self.kernels.name,
            ops,
            arena_bytes: 4 * self.arena.len(),
            scratch_bytes: self.scratch.bytes(),
            weight_bytes: self.weight_bytes,
            threads: self.pool.threads(),
            products,
        }
    }

    /// Starts (or with `false` stops and clears) timing each step of the
    /// frames run from now on.
    pub fn set_profiling(&mut self, on: bool) {
        self.profile = on.then(|| Profile {
            steps: vec![std::time::Duration::ZERO; self.steps.len()],
            frames: 0,
        });
    }

    /// Milliseconds per frame by op class (as [`Summary::ops`] names them)
    /// over the frames profiled so far; empty when not profiling.
    pub fn profile(&self) -> BTreeMap<String, f64> {
        let mut by = BTreeMap::new();
        if let Some(p) = &self.profile {
            let frames = p.frames.max(1) as f64;
            for (s, t) in self.steps.iter().zip(&p.steps) {
                *by.entry(op_key(&s.kind)).or_insert(0.0) += t.as_secs_f64() * 1e3 / frames;
            }
        }
        by
    }

    /// Each step over the frames profiled so far, in schedule order: its
    /// name, op class, multiply-adds and milliseconds per frame; empty when
    /// not profiling.
    pub fn profile_steps(&self) -> Vec<StepTime> {
        let Some(p) = &self.profile else {
            return Vec::new();
        };
        let frames = p.frames.max(1) as f64;
        self.steps
            .iter()
            .zip(&p.steps)
            .map(|(s, t)| {
                let ms = t.as_secs_f64() * 1e3 / frames;
                let macs = match &s.kind {
                    Kind::MatMul { mm, .. } => mm.macs(),
                    Kind::Conv { conv, .. } => conv.macs(),
                    _ => 0,
                };
                StepTime {
                    name: s.name.clone(),
                    op: op_key(&s.kind),
                    macs,
                    ms,
                    gmacs_per_s: if ms > 0.0 {
                        macs as f64 / ms / 1e6
                    } else {
                        0.0
                    },
                }
            })
            .collect()
    }

    /// Runs one frame: `input` (the graph's input, e.g. 1×3×224×224) to
    /// `output` (the embedding).
    ///
    /// # Panics
    /// When a slice's length differs from [`Native::input_len`] /
    /// [`Native::output_len`] (a caller's bug).
    pub fn run(&mut self, input: &[f32], output: &mut [f32]) {
        self.run_traced(input, output, &mut |_, _| {})
    }

    /// As [`Native::run`], calling `trace(step, its output)` after each
    /// step (the GPU backend's parity check finds the first step that
    /// differs with it).
    pub fn run_traced(
        &mut self,
        input: &[f32],
        output: &mut [f32],
        trace: &mut dyn FnMut(usize, &[f32]),
    ) {
        let Native {
            steps,
            offsets,
            lens,
            consts,
            arena,
            scratch,
            kernels,
            pool,
            profile,
            ..
        } = self;
        let at = |v: usize| offsets[v]..offsets[v] + lens[v];
        arena[at(self.input)].copy_from_slice(input);
        if let Some(p) = profile.as_mut() {
            p.frames += 1;
        }
        for (i, step) in steps.iter().enumerate() {
            let t0 = profile.is_some().then(std::time::Instant::now);
            let o = at(step.out);
            let (lo, rest) = arena.split_at_mut(o.start);
            let (dst, hi) = rest.split_at_mut(o.len());
            let io = Io {
                lo,
                hi,
                hi_start: o.end,
                offsets,
                lens,
                consts,
            };
            exec(step, &io, dst, scratch, kernels, pool);
            trace(i, dst);
            if let (Some(p), Some(t0)) = (profile.as_mut(), t0) {
                p.steps[i] += t0.elapsed();
            }
        }
        output.copy_from_slice(&arena[at(self.output)]);
    }
}

/// Every tensor's offset in one arena, from the tensors' lifetimes, and
/// the arena's length; the schedule's reads and writes checked against
/// their tensors first (shared by the CPU and GPU backends).
pub fn plan_arena(l: &ir::Lowered) -> Result<(Vec<usize>, usize), LowerError> {
    let n = l.lens.len();
    let mut first = vec![usize::MAX; n];
    let mut last = vec![0usize; n];
    first[l.input] = 0;
    for (t, s) in l.steps.iter().enumerate() {
        first[s.out] = first[s.out].min(t);
        last[s.out] = last[s.out].max(t);
        for o in s.inputs() {
            if let Operand::Val(v) = o {
                last[v] = last[v].max(t);
            }
        }
    }
    last[l.output] = l.steps.len();
    let reqs: Vec<plan::Request> = (0..n)
        .map(|v| plan::Request {
            len: if first[v] == usize::MAX { 0 } else { l.lens[v] },
            first: first[v].min(last[v]),
            last: last[v],
        })
        .collect();
    check_bounds(l).map_err(|why| LowerError {
        node: "graph".into(),
        op: "bounds".into(),
        why,
    })?;
    let (offsets, total) = plan::plan(&reqs);
    if let Some((a, b)) = plan::first_conflict(&reqs, &offsets) {
        return Err(LowerError {
            node: "graph".into(),
            op: "arena".into(),
            why: format!("the arena plan overlaps values {a} and {b}"),
        });
    }
    Ok((offsets, total))
}

/// An op's class and precision, e.g. `linear/int8`, `softmax`.
pub fn op_key(kind: &Kind) -> String {
    match kind {
        Kind::MatMul { mm, .. } => format!("{}/{}", kind.class(), mm.precision()),
        Kind::Conv { conv, .. } => format!("{}/{}", kind.class(), conv.precision()),
        k => k.class().to_string(),
    }
}

/// The inputs of one step: the arena below and above its output, and the
/// constants.
struct Io<'a> {
    lo: &'a [f32],
    hi: &'a [f32],
    hi_start: usize,
    offsets: &'a [usize],
    lens: &'a [usize],
    consts: &'a [Vec<f32>],
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

fn exec(
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
                && ops::is_row_major(dims, sx)
                && ops::is_row_major(&dims[..dims.len() - 1], &so[..so.len() - 1]);
            // `max` or `max |x|` of the whole tensor (an int8
            // convolution's scale): a part per thread (one part on one
            // thread: the vectorised row kernel, not the generic loop),
            // then the max of those.
            let whole = matches!(op, Reduce::Max | Reduce::AbsMax)
                && dst.len() == 1
                && x.len() == dims.iter().product::<usize>()
                && ops::is_row_major(dims, sx);
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
                if n > 0 && whole && p.dst_off == 0 && ops::is_row_major(&p.dims, &p.sd) {
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
fn split_rows(
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
    around: ops::AroundAxis,
    dst: &mut [f32],
    f: &(dyn Fn(ops::AroundAxis, usize, &mut [f32]) + Sync),
) {
    let block = around.n * around.inner;
    if block == 0 {
        return;
    }
    split_rows(pool, dst, block, &|r0, out| {
        let part = ops::AroundAxis {
            outer: out.len() / block,
            ..around
        };
        f(part, r0 * block, out)
    });
}

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
fn check_bounds(l: &ir::Lowered) -> Result<(), String> {
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
            Kind::Pool { pool, x } => {
                within("x", st, (pool.c * pool.h * pool.w).checked_sub(1), len(*x))?;
                within("out", st, (pool.c * pool.oh * pool.ow).checked_sub(1), out)?;
            }
        }
    }
    Ok(())
}
