//! The lowered schedule as GPU launches: weights uploaded, tables and
//! scratch allocated, every step turned into one or a few launches of
//! `kernels.cu` in order (the plan [`super::CudaEncoder`] captures).

use std::collections::BTreeMap;

use half::f16;
use tract_core::internal::TypedModel;

use super::args::*;
use super::CudaError;

mod products;
use crate::engine::schedule::ir::{Kind, Operand};
use crate::engine::schedule::linear::{FloatWeights, Rhs};
use crate::engine::schedule::{fold, lower, op_key, plan_arena};
use crate::kernels::cuda::{DevBuf, Gpu, GpuError};

/// Depth of every product padded to a multiple of this (int8 matrix units
/// need multiples of 4; 16 keeps f16 and int8 rows 16-byte aligned).
const K_ALIGN: usize = 16;

/// Rows (pixels, channels) of a product padded to a multiple of this.
const ROW_ALIGN: usize = 16;

/// What [`plan`] made: the launches of one frame and what they point into.
pub(super) struct Plan {
    pub launches: Vec<Launch>,
    /// For each lowered step, the end of its launches.
    pub step_ends: Vec<usize>,
    /// Each step's output (device pointer, length).
    pub step_outs: Vec<(u64, usize)>,
    pub names: Vec<String>,
    pub ops: BTreeMap<String, usize>,
    pub weight_bytes: usize,
    pub scratch_bytes: usize,
    /// Weights, constants, tables and scratch the launches point into.
    pub held: Vec<DevBuf>,
    pub arena: DevBuf,
    /// f32 per image.
    pub arena_len: usize,
    pub input: (u64, usize),
    pub output: (u64, usize),
}

fn up(v: usize, to: usize) -> usize {
    v.div_ceil(to) * to
}

/// Scratch sizes (bytes) over every product.
#[derive(Default)]
struct ScratchNeed {
    a: usize,
    b: usize,
    c: usize,
}

/// Lowers `model` (weights as plain rows), folds its copies, plans its
/// arena for `batch` images and turns each step into launches on `gpu`.
pub(super) fn plan(
    gpu: &Gpu,
    model: &TypedModel,
    batch: usize,
    f32_attention: bool,
) -> Result<Plan, CudaError> {
    let batch = batch.max(1);
    let mut l = lower::lower(model, FloatWeights::F32)?;
    // Copies read only by a product: read through its tables instead.
    let folded = fold::fold_copies(&mut l);
    log::info!("CUDA encoder: {folded} copies folded into the products that read them");
    let (offsets, arena_len) = plan_arena(&l)?;
    let arena_len = up(arena_len, 64);
    i32s("graph", "the arena", &[arena_len])?;
    let arena = gpu.alloc(4 * arena_len * batch)?;
    gpu.zero(arena.ptr(), arena.bytes())?;
    let int8_units = gpu.has_int8_tensor_cores();
    let mut made = products::Made::default();
    let mut consts = Vec::with_capacity(l.consts.len());
    for c in &l.consts {
        let b = gpu.upload(c)?;
        consts.push(b.ptr());
        made.held.push(b);
    }
    let abs = arena_len as i64;
    let val = |v: usize| (arena.ptr() + 4 * offsets[v] as u64, abs);
    let opnd = |o: Operand| match o {
        Operand::Val(v) => val(v),
        Operand::Const(c) => (consts[c], 0i64),
    };
    // Pass 1: scratch sizes.
    let mut need = ScratchNeed::default();
    for s in &l.steps {
        match &s.kind {
            Kind::MatMul { mm, .. } => {
                let rows = batch * mm.a_batch.len().max(1) * mm.m;
                let (kpad, npad) = (up(mm.k, K_ALIGN), up(mm.n, ROW_ALIGN));
                // f32 rows for a product of activations (at most).
                need.a = need.a.max(4 * rows * kpad);
                need.c = need.c.max(4 * rows * npad);
                if matches!(mm.rhs, Rhs::Act { .. }) {
                    need.b = need.b.max(4 * batch * mm.a_batch.len() * mm.n * kpad);
                }
            }
            Kind::Conv { conv, .. } => {
                let kk = conv.c * conv.kernel[0] * conv.kernel[1];
                let ppad = up(conv.oh * conv.ow, ROW_ALIGN);
                need.a = need.a.max(2 * batch * ppad * up(kk, K_ALIGN));
                need.c = need.c.max(4 * batch * ppad * conv.o);
            }
            _ => {}
        }
    }
    let (sa, sb, sc) = (gpu.alloc(need.a)?, gpu.alloc(need.b)?, gpu.alloc(need.c)?);
    let scratch_bytes = sa.bytes() + sb.bytes() + sc.bytes();
    let (pa, pb, pc) = (sa.ptr(), sb.ptr(), sc.ptr());
    made.held.extend([sa, sb, sc]);
    let cx = products::Cx {
        gpu,
        batch,
        int8_units,
        f32_attention,
        pa,
        pb,
        pc,
        opnd: &opnd,
    };
    let mut step_ends = Vec::with_capacity(l.steps.len());
    let mut step_outs = Vec::with_capacity(l.steps.len());
    let mut ops: BTreeMap<String, usize> = BTreeMap::new();
    for step in &l.steps {
        let step_start = made.launches.len();
        let node = step.name.as_str();
        let (out, out_bs) = val(step.out);
        let out_len = l.lens[step.out];
        let mut key = op_key(&step.kind);
        match &step.kind {
            Kind::Binary {
                op,
                dims,
                a,
                sa,
                b,
                sb,
            } => {
                let ((pa_, a_bs), (pb_, b_bs)) = (opnd(*a), opnd(*b));
                made.launches.push(binary_launch(
                    node,
                    *op,
                    dims,
                    (pa_, a_bs, sa),
                    (pb_, b_bs, sb),
                    (out, out_bs),
                    batch,
                )?);
            }
            Kind::Unary { op, x } => {
                let (code, alpha) = unary_code(*op);
                let (o, x) = ((out, out_bs), opnd(*x));
                made.launches.push(unary_launch(
                    code,
                    alpha,
                    out_len,
                    o,
                    x,
                    PostsArgs::default(),
                    batch,
                ));
            }
            Kind::Reduce {
                op,
                dims,
                sx,
                so,
                count,
                x,
            } => {
                let (px, x_bs) = opnd(*x);
                let (mut kd, mut ksx, mut kso, mut rd, mut rsx) =
                    (vec![], vec![], vec![], vec![], vec![]);
                for a in 0..dims.len() {
                    if dims[a] == 1 {
                        continue;
                    }
                    if so[a] != 0 {
                        kd.push(dims[a]);
                        ksx.push(sx[a]);
                        kso.push(so[a]);
                    } else {
                        rd.push(dims[a]);
                        rsx.push(sx[a]);
                    }
                }
                let nout: usize = kd.iter().product();
                let nred: usize = rd.iter().product();
                made.launches.push(Launch::Reduce(
                    ReduceArgs {
                        posts: PostsArgs::default(),
                        op: reduce_code(*op),
                        krank: kd.len() as i32,
                        rrank: rd.len() as i32,
                        kdims: dims_args(node, &kd)?,
                        ksx: axes(node, &ksx)?,
                        kso: axes(node, &kso)?,
                        rdims: dims_args(node, &rd)?,
                        rsx: axes(node, &rsx)?,
                        nred: nred as i64,
                        count: (*count).max(1) as f32,
                        x: px,
                        x_bs,
                        out,
                        out_bs,
                    },
                    (nout as u32, batch as u32, 1),
                ));
            }
            Kind::Softmax { around, x } | Kind::RmsNorm { around, x, .. } => {
                let (px, x_bs) = opnd(*x);
                let (eps, center) = match &step.kind {
                    Kind::RmsNorm { eps, center, .. } => (*eps, *center as i32),
                    _ => (0.0, 0),
                };
                let args = AxisArgs {
                    posts: PostsArgs::default(),
                    outer: around.outer as i32,
                    n: around.n as i32,
                    inner: around.inner as i32,
                    center,
                    eps,
                    x: px,
                    x_bs,
                    out,
                    out_bs,
                };
                i32s(
                    node,
                    "a size",
                    &[32 * around.outer * around.inner, around.n],
                )?;
                let lines = around.outer * around.inner;
                let g = match &step.kind {
                    // A warp (32 threads) per line.
                    Kind::Softmax { .. } => grid1(32 * lines, batch),
                    // A block per line.
                    _ => (lines as u32, batch as u32, 1),
                };
                made.launches.push(match &step.kind {
                    Kind::Softmax { .. } => Launch::Softmax(args, g),
                    _ => Launch::Norm(args, g),
                });
            }
            Kind::Copy { parts } => {
                for p in parts {
                    let (ps, s_bs) = opnd(p.src);
                    let n: usize = p.dims.iter().product();
                    made.launches.push(Launch::Copy(
                        CopyArgs {
                            rank: p.dims.len() as i32,
                            dims: dims_args(node, &p.dims)?,
                            ss: axes(node, &p.ss)?,
                            sd: axes(node, &p.sd)?,
                            n: n as i64,
                            src: ps + 4 * p.src_off as u64,
                            src_bs: s_bs,
                            dst: out + 4 * p.dst_off as u64,
                            dst_bs: out_bs,
                        },
                        grid1(n, batch),
                    ));
                }
            }
            Kind::MatMul { mm, a, b, s } => {
                key = products::matmul(
                    &cx,
                    &mut made,
                    node,
                    step.kind.class(),
                    mm,
                    (a, b, s),
                    (out, out_bs),
                    step.posts.is_empty(),
                )?;
            }
            Kind::Conv { conv, x, s } => {
                key = products::conv(
                    &cx,
                    &mut made,
                    node,
                    step.kind.class(),
                    conv,
                    (x, s),
                    (out, out_bs),
                )?;
            }
            Kind::Depthwise { .. } => {
                return Err(CudaError::Unsupported {
                    node: node.into(),
                    why: "a depthwise convolution (the CPU engine runs it)".into(),
                });
            }
            Kind::Pool { pool, x } => {
                let (px, x_bs) = opnd(*x);
                made.launches.push(Launch::Pool(
                    PoolArgs {
                        posts: PostsArgs::default(),
                        c: pool.c as i32,
                        h: pool.h as i32,
                        w: pool.w as i32,
                        oh: pool.oh as i32,
                        ow: pool.ow as i32,
                        kh: pool.k[0] as i32,
                        kw: pool.k[1] as i32,
                        sh: pool.stride[0] as i32,
                        sw: pool.stride[1] as i32,
                        ph: pool.pad[0] as i32,
                        pw: pool.pad[1] as i32,
                        normalize: pool.normalize as i32,
                        count_include_pad: pool.count_include_pad as i32,
                        x: px,
                        x_bs,
                        out,
                        out_bs,
                    },
                    grid1(pool.c * pool.oh * pool.ow, batch),
                ));
            }
        }
        // The fused epilogue: applied by the step's last launch as it
        // writes each value, where that launch writes every output
        // value once; else by a launch of its own (or one per op).
        if !step.posts.is_empty() {
            let fused = match posts_args(&step.posts, &opnd) {
                Some(p) => {
                    let last = made.launches[step_start..].last_mut();
                    last.is_some_and(|l| l.set_posts(p)) || {
                        let y = (out, out_bs);
                        made.launches.push(unary_launch(
                            UNARY_IDENTITY,
                            0.0,
                            out_len,
                            y,
                            y,
                            p,
                            batch,
                        ));
                        true
                    }
                }
                None => false,
            };
            if !fused {
                for p in &step.posts {
                    made.launches
                        .push(post_launch(node, p, (out, out_bs), out_len, &opnd, batch)?);
                }
            }
        }
        if let Some(l) = made.launches[step_start..].iter().find(|l| !l.grid_fits()) {
            return Err(CudaError::Unsupported {
                node: node.into(),
                why: format!(
                    "a {} launch of {:?} blocks (at most 65,535 along y and z)",
                    l.name(),
                    l.kernel().map(|k| k.1)
                ),
            });
        }
        *ops.entry(key).or_insert(0) += 1;
        step_ends.push(made.launches.len());
        step_outs.push((out, out_len));
    }
    made.held.extend(made.weights);
    Ok(Plan {
        names: l.steps.iter().map(|s| s.name.clone()).collect(),
        input: (arena.ptr() + 4 * offsets[l.input] as u64, l.lens[l.input]),
        output: (arena.ptr() + 4 * offsets[l.output] as u64, l.lens[l.output]),
        launches: made.launches,
        step_ends,
        step_outs,
        ops,
        weight_bytes: made.weight_bytes,
        scratch_bytes,
        held: made.held,
        arena,
        arena_len,
    })
}

/// An offset table on the device, kept in `held`.
pub(super) fn table(gpu: &Gpu, held: &mut Vec<DevBuf>, v: Vec<i32>) -> Result<u64, GpuError> {
    let b = gpu.upload(&v)?;
    let p = b.ptr();
    held.push(b);
    Ok(p)
}

/// `n × k` rows as f16 rows of `kpad` (zero-padded), `npad` rows.
fn upload_rows_f16(
    gpu: &Gpu,
    w: &[f32],
    n: usize,
    k: usize,
    npad: usize,
    kpad: usize,
) -> Result<DevBuf, GpuError> {
    let mut h = vec![f16::ZERO; npad * kpad];
    for (r, row) in w.chunks(k.max(1)).take(n).enumerate() {
        for (d, v) in h[r * kpad..r * kpad + k].iter_mut().zip(row) {
            *d = f16::from_f32(*v);
        }
    }
    gpu.upload(&h)
}

/// As [`upload_rows_f16`] for int8 rows.
fn upload_rows_i8(
    gpu: &Gpu,
    w: &[i8],
    n: usize,
    k: usize,
    npad: usize,
    kpad: usize,
) -> Result<DevBuf, GpuError> {
    let mut q = vec![0i8; npad * kpad];
    for (r, row) in w.chunks(k.max(1)).take(n).enumerate() {
        q[r * kpad..r * kpad + k].copy_from_slice(row);
    }
    gpu.upload(&q)
}
