//! The GPU backend (`--features cuda`, `--device cuda`): the native engine's
//! lowered schedule ([`super::native::lower`]) and arena plan
//! ([`super::native::plan_arena`]), run on a CUDA GPU. Not a second model
//! definition: every step of the CPU schedule becomes one or a few launches
//! of the kernels in [`crate::kernels::cuda`], in the same order, on the same
//! arena offsets, for a batch of images at once (the arena repeated per
//! image).
//!
//! At load: the weights are uploaded once (f16 rows; int8 rows where the GPU
//! has int8 matrix units, else their int8 values in f16), every offset table
//! and scratch buffer is allocated, and a whole frame (input copy, every
//! launch, output copy) is captured once as a CUDA graph. A frame is then one
//! graph launch and one synchronisation: no allocation, no compilation.
//!
//! Products: f16 × f16 with f32 accumulation, or int8 × int8 → i32, through
//! cuBLAS (`C = Wᵀ·X` in its column-major terms, both sides rows of depth),
//! with the activations gathered (and quantised, for int8) into contiguous
//! rows first and the result scattered (and dequantised) after, through the
//! same offset tables the CPU engine reads.

use std::collections::BTreeMap;

use half::f16;
use tract_core::internal::TypedModel;

use super::native::linear::{ConvWeights, Rhs, Weights};
use super::native::lower::{self, FloatWeights, Kind, Operand, Post};
use super::native::ops::{strides_of, Binary, Reduce, Unary};
use super::native::{op_key, plan_arena};
use crate::kernels::cuda::{DevBuf, Gemm, GemmType, Gpu, GpuError, Graph, Pinned, BLOCK};
use crate::kernels::Kernels;

/// Most axes a GPU kernel walks (the CPU engine allows more).
const MAXR: usize = 8;

/// Depth of every product padded to a multiple of this (int8 matrix units
/// need multiples of 4; 16 keeps f16 and int8 rows 16-byte aligned).
const K_ALIGN: usize = 16;

/// Rows (pixels, channels) of a product padded to a multiple of this.
const ROW_ALIGN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error("the CUDA backend cannot run node {node:?}: {why}")]
    Unsupported { node: String, why: String },
    #[error(transparent)]
    Lower(#[from] lower::LowerError),
}

/// Most element-wise ops fused into one launch's write (`Posts` of
/// kernels.cu); a step with more gets launches of its own for them.
const MAXP: usize = 4;

/// A shape with its sizes' multiply-high divisors (`Dims` of kernels.cu).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct DimsArgs {
    d: [i32; MAXR],
    magic: [u32; MAXR],
    shift: [u32; MAXR],
}

/// `q = (umulhi(n, magic) + n) >> shift` is `n / d` for every `n < 2^31`
/// (PyTorch's IntDivider; checked against `/` in the tests).
fn divisor(d: u32) -> (u32, u32) {
    let d = d.max(1);
    let shift = (0..32).find(|s| (1u64 << s) >= d as u64).unwrap_or(31);
    let magic = ((1u64 << 32) * ((1u64 << shift) - d as u64)) / d as u64 + 1;
    (magic as u32, shift)
}

fn dims_args(node: &str, v: &[usize]) -> Result<DimsArgs, CudaError> {
    let d = axes(node, v)?;
    let mut a = DimsArgs {
        d,
        ..Default::default()
    };
    for k in 0..v.len() {
        (a.magic[k], a.shift[k]) = divisor(d[k] as u32);
    }
    Ok(a)
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PostsArgs {
    count: i32,
    op: [i32; MAXP],
    y_first: [i32; MAXP],
    alpha: [f32; MAXP],
    rank: [i32; MAXP],
    dims: [DimsArgs; MAXP],
    so: [[i32; MAXR]; MAXP],
    other: [u64; MAXP],
    other_bs: [i64; MAXP],
}

/// `Posts::op` for a unary op (binary ops are their own codes).
const POST_UNARY: i32 = 16;

/// kernels.cu's identity unary op: a launch that only applies posts.
const UNARY_IDENTITY: i32 = 11;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct BinaryArgs {
    op: i32,
    rank: i32,
    dims: DimsArgs,
    sa: [i32; MAXR],
    sb: [i32; MAXR],
    n: i64,
    out: u64,
    out_bs: i64,
    a: u64,
    a_bs: i64,
    b: u64,
    b_bs: i64,
    posts: PostsArgs,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct UnaryArgs {
    op: i32,
    alpha: f32,
    n: i64,
    out: u64,
    out_bs: i64,
    x: u64,
    x_bs: i64,
    posts: PostsArgs,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct ReduceArgs {
    op: i32,
    krank: i32,
    rrank: i32,
    kdims: DimsArgs,
    ksx: [i32; MAXR],
    kso: [i32; MAXR],
    rdims: DimsArgs,
    rsx: [i32; MAXR],
    nred: i64,
    count: f32,
    x: u64,
    x_bs: i64,
    out: u64,
    out_bs: i64,
    posts: PostsArgs,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct AxisArgs {
    outer: i32,
    n: i32,
    inner: i32,
    center: i32,
    eps: f32,
    x: u64,
    x_bs: i64,
    out: u64,
    out_bs: i64,
    posts: PostsArgs,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CopyArgs {
    rank: i32,
    dims: DimsArgs,
    ss: [i32; MAXR],
    sd: [i32; MAXR],
    n: i64,
    src: u64,
    src_bs: i64,
    dst: u64,
    dst_bs: i64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct GatherArgs {
    rows: i32,
    k: i32,
    kpad: i32,
    quantize: i32,
    unit: i32,
    row_off: u64,
    col_off: u64,
    a: u64,
    a_bs: i64,
    s: u64,
    s_bs: i64,
    s_off: u64,
    out: u64,
    out_type: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct ScatterArgs {
    rows: i32,
    n: i32,
    npad: i32,
    acc_i32: i32,
    dequant: i32,
    unit: i32,
    c: u64,
    row_off: u64,
    col_off: u64,
    out: u64,
    out_bs: i64,
    s: u64,
    s_bs: i64,
    s_off: u64,
    wscale: u64,
    posts: PostsArgs,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Im2colArgs {
    c: i32,
    h: i32,
    w: i32,
    oh: i32,
    ow: i32,
    kh: i32,
    kw: i32,
    sh: i32,
    sw: i32,
    dh: i32,
    dw: i32,
    ph: i32,
    pw: i32,
    kk: i32,
    kpad: i32,
    ppad: i32,
    quantize: i32,
    out_i8: i32,
    x: u64,
    x_bs: i64,
    s: u64,
    s_bs: i64,
    out: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct ConvOutArgs {
    o: i32,
    np: i32,
    ppad: i32,
    images: i32,
    acc_i32: i32,
    dequant: i32,
    c: u64,
    bias: u64,
    wscale: u64,
    s: u64,
    s_bs: i64,
    out: u64,
    out_bs: i64,
    posts: PostsArgs,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PoolArgs {
    c: i32,
    h: i32,
    w: i32,
    oh: i32,
    ow: i32,
    kh: i32,
    kw: i32,
    sh: i32,
    sw: i32,
    ph: i32,
    pw: i32,
    normalize: i32,
    count_include_pad: i32,
    x: u64,
    x_bs: i64,
    out: u64,
    out_bs: i64,
    posts: PostsArgs,
}

/// One launch of the frame.
enum Launch {
    Binary(BinaryArgs, (u32, u32, u32)),
    Unary(UnaryArgs, (u32, u32, u32)),
    Reduce(ReduceArgs, (u32, u32, u32)),
    Softmax(AxisArgs, (u32, u32, u32)),
    Norm(AxisArgs, (u32, u32, u32)),
    Copy(CopyArgs, (u32, u32, u32)),
    Gather(GatherArgs, (u32, u32, u32)),
    Scatter(ScatterArgs, (u32, u32, u32)),
    Im2col(Im2colArgs, (u32, u32, u32)),
    ConvOut(ConvOutArgs, (u32, u32, u32)),
    Pool(PoolArgs, (u32, u32, u32)),
    Gemm(Gemm),
}

impl Launch {
    /// Gives the launch a fused epilogue; `false` where it has none to give
    /// (a copy may write a value twice, a product writes through cuBLAS).
    fn set_posts(&mut self, p: PostsArgs) -> bool {
        let slot = match self {
            Launch::Binary(a, _) => &mut a.posts,
            Launch::Unary(a, _) => &mut a.posts,
            Launch::Reduce(a, _) => &mut a.posts,
            Launch::Softmax(a, _) | Launch::Norm(a, _) => &mut a.posts,
            Launch::Scatter(a, _) => &mut a.posts,
            Launch::ConvOut(a, _) => &mut a.posts,
            Launch::Pool(a, _) => &mut a.posts,
            Launch::Copy(..) | Launch::Gather(..) | Launch::Im2col(..) | Launch::Gemm(_) => {
                return false
            }
        };
        if slot.count != 0 {
            return false;
        }
        *slot = p;
        true
    }

    /// The launch's kind, for the profile.
    fn name(&self) -> &'static str {
        match self {
            Launch::Binary(..) => "binary",
            Launch::Unary(..) => "unary",
            Launch::Reduce(..) => "reduce",
            Launch::Softmax(..) => "softmax",
            Launch::Norm(..) => "norm",
            Launch::Copy(..) => "copy",
            Launch::Gather(..) => "gather",
            Launch::Scatter(..) => "scatter",
            Launch::Im2col(..) => "im2col",
            Launch::ConvOut(..) => "conv_out",
            Launch::Pool(..) => "pool",
            Launch::Gemm(g) => match g.ty {
                GemmType::F16 => "gemm-f16",
                GemmType::I8 => "gemm-int8",
                GemmType::F32 => "gemm-f32",
            },
        }
    }

    fn run(&self, gpu: &Gpu) -> Result<(), GpuError> {
        // Indices into `kernels::cuda::KERNELS`.
        match self {
            Launch::Binary(a, g) => gpu.launch(0, *g, a),
            Launch::Unary(a, g) => gpu.launch(1, *g, a),
            Launch::Reduce(a, g) => gpu.launch(2, *g, a),
            Launch::Softmax(a, g) => gpu.launch(3, *g, a),
            Launch::Norm(a, g) => gpu.launch(4, *g, a),
            Launch::Copy(a, g) => gpu.launch(5, *g, a),
            Launch::Gather(a, g) => gpu.launch(6, *g, a),
            Launch::Scatter(a, g) => gpu.launch(7, *g, a),
            Launch::Im2col(a, g) => gpu.launch(8, *g, a),
            Launch::ConvOut(a, g) => gpu.launch(9, *g, a),
            Launch::Pool(a, g) => gpu.launch(10, *g, a),
            Launch::Gemm(g) => gpu.gemm(g),
        }
    }
}

/// What a loaded GPU encoder runs (for logs and `bench --json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CudaSummary {
    pub gpu: String,
    pub sm_count: u32,
    pub compute_capability: String,
    /// Images per launch of the captured frame.
    pub batch: usize,
    /// Ops by class and the precision their products run in on the GPU.
    pub ops: BTreeMap<String, usize>,
    pub launches_per_frame: usize,
    pub weight_bytes: usize,
    pub arena_bytes: usize,
    pub scratch_bytes: usize,
    pub cuda_graph: bool,
}

/// The image encoder on a CUDA GPU, for `batch` images per run.
pub struct CudaEncoder {
    launches: Vec<Launch>,
    /// For each lowered step, the end of its launches (the parity trace).
    step_ends: Vec<usize>,
    step_outs: Vec<(u64, usize)>,
    names: Vec<String>,
    _arena: DevBuf,
    arena_len: usize,
    input: (u64, usize),
    output: (u64, usize),
    batch: usize,
    pin_in: Pinned,
    pin_out: Pinned,
    graph: Option<Graph>,
    summary: CudaSummary,
    /// Device buffers the launches point into (weights, constants, tables,
    /// scratch): kept alive here.
    _held: Vec<DevBuf>,
    // Dropped last: every buffer above is freed in its context.
    gpu: Gpu,
}

fn up(v: usize, to: usize) -> usize {
    v.div_ceil(to) * to
}

fn grid1(n: usize, images: usize) -> (u32, u32, u32) {
    (n.div_ceil(BLOCK as usize) as u32, images as u32, 1)
}

fn i32s(node: &str, what: &str, v: &[usize]) -> Result<Vec<i32>, CudaError> {
    v.iter()
        .map(|&x| {
            i32::try_from(x).map_err(|_| CudaError::Unsupported {
                node: node.into(),
                why: format!("{what} {x} is past 2^31"),
            })
        })
        .collect()
}

fn axes(node: &str, v: &[usize]) -> Result<[i32; MAXR], CudaError> {
    if v.len() > MAXR {
        return Err(CudaError::Unsupported {
            node: node.into(),
            why: format!("{} axes (at most {MAXR})", v.len()),
        });
    }
    let mut a = [0i32; MAXR];
    for (d, s) in a.iter_mut().zip(i32s(node, "a size or stride", v)?) {
        *d = s;
    }
    Ok(a)
}

fn binary_code(op: Binary) -> i32 {
    match op {
        Binary::Add => 0,
        Binary::Sub => 1,
        Binary::Mul => 2,
        Binary::Div => 3,
        Binary::Max => 4,
        Binary::Min => 5,
    }
}

fn unary_code(op: Unary) -> (i32, f32) {
    match op {
        Unary::Abs => (0, 0.0),
        Unary::Recip => (1, 0.0),
        Unary::RoundHalfToEven => (2, 0.0),
        Unary::Sigmoid => (3, 0.0),
        Unary::Rsqrt => (4, 0.0),
        Unary::Sqrt => (5, 0.0),
        Unary::Square => (6, 0.0),
        Unary::Exp => (7, 0.0),
        Unary::Neg => (8, 0.0),
        Unary::Tanh => (9, 0.0),
        Unary::QuickGelu(a) => (10, a),
    }
}

fn reduce_code(op: Reduce) -> i32 {
    match op {
        Reduce::Sum => 0,
        Reduce::Max => 1,
        Reduce::Min => 2,
        Reduce::MeanOfSquares => 3,
        Reduce::AbsMax => 4,
    }
}

/// Scratch sizes (bytes) over every product.
#[derive(Default)]
struct ScratchNeed {
    a: usize,
    b: usize,
    c: usize,
}

impl CudaEncoder {
    /// Lowers `model` (as [`super::native::Native::new`] does, weights kept
    /// as plain rows) and loads it on the first GPU for `batch` images.
    /// `f32_attention`: products of two activations in f32, as the CPU runs
    /// them (fp32 and int8 bundles), else in f16 (fp16 bundles).
    pub fn new(
        model: &TypedModel,
        batch: usize,
        f32_attention: bool,
    ) -> Result<CudaEncoder, CudaError> {
        let gpu = Gpu::open()?;
        let batch = batch.max(1);
        let mut l = lower::lower(model, &Kernels::SCALAR, FloatWeights::F32)?;
        // Copies read only by a product: read through its tables instead.
        let folded = super::native::fold::fold_copies(&mut l);
        log::info!("CUDA encoder: {folded} copies folded into the products that read them");
        let (offsets, arena_len) = plan_arena(&l)?;
        let arena_len = up(arena_len, 64);
        i32s("graph", "the arena", &[arena_len])?;
        let arena = gpu.alloc(4 * arena_len * batch)?;
        gpu.zero(arena.ptr(), arena.bytes())?;
        let int8_units = gpu.has_int8_tensor_cores();
        let mut held: Vec<DevBuf> = Vec::new();
        let mut consts = Vec::with_capacity(l.consts.len());
        for c in &l.consts {
            let b = gpu.upload(c)?;
            consts.push(b.ptr());
            held.push(b);
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
        held.extend([sa, sb, sc]);
        let mut launches: Vec<Launch> = Vec::new();
        let mut step_ends = Vec::with_capacity(l.steps.len());
        let mut step_outs = Vec::with_capacity(l.steps.len());
        let mut ops: BTreeMap<String, usize> = BTreeMap::new();
        let mut weight_bytes = 0usize;
        let mut weights: Vec<DevBuf> = Vec::new();
        for step in &l.steps {
            let step_start = launches.len();
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
                    let (pa_, a_bs) = opnd(*a);
                    let (pb_, b_bs) = opnd(*b);
                    let n: usize = dims.iter().product();
                    launches.push(Launch::Binary(
                        BinaryArgs {
                            posts: PostsArgs::default(),
                            op: binary_code(*op),
                            rank: dims.len() as i32,
                            dims: dims_args(node, dims)?,
                            sa: axes(node, sa)?,
                            sb: axes(node, sb)?,
                            n: n as i64,
                            out,
                            out_bs,
                            a: pa_,
                            a_bs,
                            b: pb_,
                            b_bs,
                        },
                        grid1(n, batch),
                    ));
                }
                Kind::Unary { op, x } => {
                    let (px, x_bs) = opnd(*x);
                    let (code, alpha) = unary_code(*op);
                    launches.push(Launch::Unary(
                        UnaryArgs {
                            posts: PostsArgs::default(),
                            op: code,
                            alpha,
                            n: out_len as i64,
                            out,
                            out_bs,
                            x: px,
                            x_bs,
                        },
                        grid1(out_len, batch),
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
                    launches.push(Launch::Reduce(
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
                    launches.push(match &step.kind {
                        Kind::Softmax { .. } => Launch::Softmax(args, g),
                        _ => Launch::Norm(args, g),
                    });
                }
                Kind::Copy { parts } => {
                    for p in parts {
                        let (ps, s_bs) = opnd(p.src);
                        let n: usize = p.dims.iter().product();
                        launches.push(Launch::Copy(
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
                    let batches = mm.a_batch.len().max(1);
                    let (m, n, k) = (mm.m, mm.n, mm.k);
                    let rows = batches * m;
                    let kpad = up(k, K_ALIGN);
                    let row_off: Vec<usize> = mm
                        .a_batch
                        .iter()
                        .flat_map(|&ab| mm.a_m.iter().map(move |&am| ab + am))
                        .collect();
                    let o_rows: Vec<usize> = mm
                        .o_batch
                        .iter()
                        .flat_map(|&ob| mm.o_m.iter().map(move |&om| ob + om))
                        .collect();
                    let (pa_in, a_bs) = opnd(*a);
                    let a_rows = table(&gpu, &mut held, i32s(node, "an offset", &row_off)?)?;
                    let a_cols = table(&gpu, &mut held, i32s(node, "an offset", &mm.a_k)?)?;
                    let o_rows_t = table(&gpu, &mut held, i32s(node, "an offset", &o_rows)?)?;
                    let o_cols_t = table(&gpu, &mut held, i32s(node, "an offset", &mm.o_n)?)?;
                    let gather = |quantize: i32, s: (u64, i64), s_off: u64, out_type: i32| {
                        Launch::Gather(
                            GatherArgs {
                                rows: rows as i32,
                                k: k as i32,
                                kpad: kpad as i32,
                                quantize,
                                unit: mm.a_k_unit as i32,
                                row_off: a_rows,
                                col_off: a_cols,
                                a: pa_in,
                                a_bs,
                                s: s.0,
                                s_bs: s.1,
                                s_off,
                                out: pa,
                                out_type,
                            },
                            (
                                kpad.div_ceil(BLOCK as usize) as u32,
                                rows as u32,
                                batch as u32,
                            ),
                        )
                    };
                    match &mm.rhs {
                        Rhs::Float(w) => {
                            let npad = up(n, ROW_ALIGN);
                            let rows_f32: Vec<f32> = match w {
                                Weights::F32(v) => v.clone(),
                                Weights::F16(v) => v.iter().map(|h| h.to_f32()).collect(),
                            };
                            let wb = upload_rows_f16(&gpu, &rows_f32, n, k, npad, kpad)?;
                            weight_bytes += wb.bytes();
                            let pw = wb.ptr();
                            weights.push(wb);
                            // One image whose output rows follow each other: the
                            // product writes them in place (no scatter).
                            let direct = batch == 1
                                && step.posts.is_empty()
                                && npad == n
                                && mm.out_rows_contiguous()
                                && mm.o_batch.iter().enumerate().all(|(i, &o)| o == i * m * n);
                            launches.push(gather(0, (0, 0), 0, 0));
                            launches.push(Launch::Gemm(Gemm {
                                ty: GemmType::F16,
                                m: npad,
                                n: batch * rows,
                                k: kpad,
                                a: pw,
                                lda: kpad,
                                stride_a: 0,
                                b: pa,
                                ldb: kpad,
                                stride_b: 0,
                                c: if direct { out } else { pc },
                                ldc: npad,
                                stride_c: 0,
                                batch: 1,
                            }));
                            if !direct {
                                launches.push(scatter(
                                    rows,
                                    n,
                                    npad,
                                    false,
                                    pc,
                                    o_rows_t,
                                    o_cols_t,
                                    (out, out_bs),
                                    None,
                                    batch,
                                    mm.o_n_unit,
                                ));
                            }
                            key = format!("{}/f16", step.kind.class());
                        }
                        Rhs::Int8(w, aq) => {
                            let npad = up(n, ROW_ALIGN);
                            let s = s.ok_or_else(|| CudaError::Unsupported {
                                node: node.into(),
                                why: "an int8 product without its scales".into(),
                            })?;
                            let s_rows: Vec<usize> = aq
                                .s_batch
                                .iter()
                                .flat_map(|&sb| aq.s_m.iter().map(move |&sm| sb + sm))
                                .collect();
                            let s_off = table(&gpu, &mut held, i32s(node, "an offset", &s_rows)?)?;
                            let ws = gpu.upload(&w.scale)?;
                            let pws = ws.ptr();
                            held.push(ws);
                            let (ty, wb) = if int8_units {
                                (GemmType::I8, upload_rows_i8(&gpu, &w.q, n, k, npad, kpad)?)
                            } else {
                                let f: Vec<f32> = w.q.iter().map(|&q| q as f32).collect();
                                (GemmType::F16, upload_rows_f16(&gpu, &f, n, k, npad, kpad)?)
                            };
                            weight_bytes += wb.bytes() + 4 * w.scale.len();
                            let pw = wb.ptr();
                            weights.push(wb);
                            let i8_ = (ty == GemmType::I8) as i32;
                            launches.push(gather(1, opnd(s), s_off, i8_));
                            launches.push(Launch::Gemm(Gemm {
                                ty,
                                m: npad,
                                n: batch * rows,
                                k: kpad,
                                a: pw,
                                lda: kpad,
                                stride_a: 0,
                                b: pa,
                                ldb: kpad,
                                stride_b: 0,
                                c: pc,
                                ldc: npad,
                                stride_c: 0,
                                batch: 1,
                            }));
                            launches.push(scatter(
                                rows,
                                n,
                                npad,
                                ty == GemmType::I8,
                                pc,
                                o_rows_t,
                                o_cols_t,
                                (out, out_bs),
                                Some((opnd(s), s_off, pws)),
                                batch,
                                mm.o_n_unit,
                            ));
                            key = format!(
                                "{}/{}",
                                step.kind.class(),
                                if int8_units { "int8" } else { "int8-as-f16" }
                            );
                        }
                        Rhs::Act { b_batch, b_n, b_k } => {
                            let b = b.ok_or_else(|| CudaError::Unsupported {
                                node: node.into(),
                                why: "a product of activations without its right side".into(),
                            })?;
                            let b_rows: Vec<usize> = b_batch
                                .iter()
                                .flat_map(|&bb| b_n.iter().map(move |&bn| bb + bn))
                                .collect();
                            let (pb_in, b_bs) = opnd(b);
                            let br = table(&gpu, &mut held, i32s(node, "an offset", &b_rows)?)?;
                            let bc = table(&gpu, &mut held, i32s(node, "an offset", b_k)?)?;
                            let (ty, out_type) = match f32_attention {
                                true => (GemmType::F32, 2),
                                false => (GemmType::F16, 0),
                            };
                            launches.push(gather(0, (0, 0), 0, out_type));
                            launches.push(Launch::Gather(
                                GatherArgs {
                                    rows: (batches * n) as i32,
                                    k: k as i32,
                                    kpad: kpad as i32,
                                    quantize: 0,
                                    unit: b_k.iter().enumerate().all(|(i, &o)| o == i) as i32,
                                    row_off: br,
                                    col_off: bc,
                                    a: pb_in,
                                    a_bs: b_bs,
                                    out: pb,
                                    out_type,
                                    ..Default::default()
                                },
                                (
                                    kpad.div_ceil(BLOCK as usize) as u32,
                                    (batches * n) as u32,
                                    batch as u32,
                                ),
                            ));
                            launches.push(Launch::Gemm(Gemm {
                                ty,
                                m: n,
                                n: m,
                                k: kpad,
                                a: pb,
                                lda: kpad,
                                stride_a: n * kpad,
                                b: pa,
                                ldb: kpad,
                                stride_b: m * kpad,
                                c: pc,
                                ldc: n,
                                stride_c: m * n,
                                batch: batch * batches,
                            }));
                            launches.push(scatter(
                                rows,
                                n,
                                n,
                                false,
                                pc,
                                o_rows_t,
                                o_cols_t,
                                (out, out_bs),
                                None,
                                batch,
                                mm.o_n_unit,
                            ));
                            key = format!(
                                "{}/{}",
                                step.kind.class(),
                                if f32_attention { "f32" } else { "f16" }
                            );
                        }
                    }
                }
                Kind::Conv { conv, x, s } => {
                    let kk = conv.c * conv.kernel[0] * conv.kernel[1];
                    let (o, np) = (conv.o, conv.oh * conv.ow);
                    let (kpad, ppad) = (up(kk, K_ALIGN), up(np, ROW_ALIGN));
                    let (px, x_bs) = opnd(*x);
                    let bias = gpu.upload(&conv.bias)?;
                    let pbias = bias.ptr();
                    held.push(bias);
                    let (ty, wb, wscale, quant) = match &conv.weights {
                        ConvWeights::Float(Weights::F32(v)) | ConvWeights::F32Rows(v) => (
                            GemmType::F16,
                            upload_rows_f16(&gpu, v, o, kk, o, kpad)?,
                            None,
                            false,
                        ),
                        ConvWeights::Float(Weights::F16(v)) => {
                            let f: Vec<f32> = v.iter().map(|h| h.to_f32()).collect();
                            (
                                GemmType::F16,
                                upload_rows_f16(&gpu, &f, o, kk, o, kpad)?,
                                None,
                                false,
                            )
                        }
                        ConvWeights::Int8(w) => {
                            let ws = gpu.upload(&w.scale)?;
                            let p = ws.ptr();
                            held.push(ws);
                            if int8_units {
                                (
                                    GemmType::I8,
                                    upload_rows_i8(&gpu, &w.q, o, kk, o, kpad)?,
                                    Some(p),
                                    true,
                                )
                            } else {
                                let f: Vec<f32> = w.q.iter().map(|&q| q as f32).collect();
                                (
                                    GemmType::F16,
                                    upload_rows_f16(&gpu, &f, o, kk, o, kpad)?,
                                    Some(p),
                                    true,
                                )
                            }
                        }
                    };
                    let (ps, s_bs) = match (quant, s) {
                        (true, Some(s)) => opnd(*s),
                        (true, None) => {
                            return Err(CudaError::Unsupported {
                                node: node.into(),
                                why: "an int8 convolution without its scale".into(),
                            })
                        }
                        _ => (0, 0),
                    };
                    weight_bytes += wb.bytes() + 4 * conv.bias.len();
                    let pw = wb.ptr();
                    weights.push(wb);
                    let i8_ = (ty == GemmType::I8) as i32;
                    launches.push(Launch::Im2col(
                        Im2colArgs {
                            c: conv.c as i32,
                            h: conv.h as i32,
                            w: conv.w as i32,
                            oh: conv.oh as i32,
                            ow: conv.ow as i32,
                            kh: conv.kernel[0] as i32,
                            kw: conv.kernel[1] as i32,
                            sh: conv.stride[0] as i32,
                            sw: conv.stride[1] as i32,
                            dh: conv.dilation[0] as i32,
                            dw: conv.dilation[1] as i32,
                            ph: conv.pad[0] as i32,
                            pw: conv.pad[1] as i32,
                            kk: kk as i32,
                            kpad: kpad as i32,
                            ppad: ppad as i32,
                            quantize: quant as i32,
                            out_i8: i8_,
                            x: px,
                            x_bs,
                            s: ps,
                            s_bs,
                            out: pa,
                        },
                        (
                            kpad.div_ceil(BLOCK as usize) as u32,
                            ppad as u32,
                            batch as u32,
                        ),
                    ));
                    launches.push(Launch::Gemm(Gemm {
                        ty,
                        m: batch * ppad,
                        n: o,
                        k: kpad,
                        a: pa,
                        lda: kpad,
                        stride_a: 0,
                        b: pw,
                        ldb: kpad,
                        stride_b: 0,
                        c: pc,
                        ldc: batch * ppad,
                        stride_c: 0,
                        batch: 1,
                    }));
                    launches.push(Launch::ConvOut(
                        ConvOutArgs {
                            posts: PostsArgs::default(),
                            o: o as i32,
                            np: np as i32,
                            ppad: ppad as i32,
                            images: batch as i32,
                            acc_i32: i8_,
                            dequant: quant as i32,
                            c: pc,
                            bias: pbias,
                            wscale: wscale.unwrap_or(0),
                            s: ps,
                            s_bs,
                            out,
                            out_bs,
                        },
                        (np.div_ceil(BLOCK as usize) as u32, o as u32, batch as u32),
                    ));
                    key = format!(
                        "{}/{}",
                        step.kind.class(),
                        match (quant, int8_units) {
                            (false, _) => "f16",
                            (true, true) => "int8",
                            (true, false) => "int8-as-f16",
                        }
                    );
                }
                Kind::Pool { pool, x } => {
                    let (px, x_bs) = opnd(*x);
                    launches.push(Launch::Pool(
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
                        let last = launches[step_start..].last_mut();
                        last.is_some_and(|l| l.set_posts(p)) || {
                            launches.push(Launch::Unary(
                                UnaryArgs {
                                    posts: p,
                                    op: UNARY_IDENTITY,
                                    alpha: 0.0,
                                    n: out_len as i64,
                                    out,
                                    out_bs,
                                    x: out,
                                    x_bs: out_bs,
                                },
                                grid1(out_len, batch),
                            ));
                            true
                        }
                    }
                    None => false,
                };
                if !fused {
                    for p in &step.posts {
                        launches.push(post_launch(node, p, (out, out_bs), out_len, &opnd, batch)?);
                    }
                }
            }
            *ops.entry(key).or_insert(0) += 1;
            step_ends.push(launches.len());
            step_outs.push((out, out_len));
        }
        held.extend(weights);
        let (cc0, cc1) = gpu.compute_capability;
        let in_len = l.lens[l.input];
        let out_len = l.lens[l.output];
        let mut enc = CudaEncoder {
            summary: CudaSummary {
                gpu: gpu.name.clone(),
                sm_count: gpu.sm_count,
                compute_capability: format!("{cc0}.{cc1}"),
                batch,
                ops,
                launches_per_frame: launches.len(),
                weight_bytes,
                arena_bytes: arena.bytes(),
                scratch_bytes,
                cuda_graph: false,
            },
            launches,
            step_ends,
            step_outs,
            names: l.steps.iter().map(|s| s.name.clone()).collect(),
            input: (arena.ptr() + 4 * offsets[l.input] as u64, in_len),
            output: (arena.ptr() + 4 * offsets[l.output] as u64, out_len),
            arena_len,
            _arena: arena,
            batch,
            pin_in: gpu.pinned(batch * in_len)?,
            pin_out: gpu.pinned(batch * out_len)?,
            graph: None,
            _held: held,
            gpu,
        };
        // One eager frame (cuBLAS picks its kernels), then the capture.
        enc.frame_eager()?;
        if std::env::var("CLIP_EDGE_CUDA_GRAPH").as_deref() != Ok("0") {
            enc.gpu.begin_capture()?;
            let captured = enc.enqueue();
            let graph = enc.gpu.end_capture();
            captured?;
            enc.graph = Some(graph?);
            enc.summary.cuda_graph = true;
        }
        log::info!(
            "CUDA encoder: {} launches per frame of {} image(s), weights {:.1} MB, arena {:.1} MB, scratch {:.1} MB, CUDA graph {}",
            enc.summary.launches_per_frame,
            batch,
            enc.summary.weight_bytes as f64 * 1e-6,
            enc.summary.arena_bytes as f64 * 1e-6,
            enc.summary.scratch_bytes as f64 * 1e-6,
            enc.summary.cuda_graph
        );
        Ok(enc)
    }

    pub fn summary(&self) -> &CudaSummary {
        &self.summary
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    pub fn input_len(&self) -> usize {
        self.input.1
    }

    pub fn output_len(&self) -> usize {
        self.output.1
    }

    /// The frame's work on the stream: inputs in, every launch, outputs out.
    fn enqueue(&mut self) -> Result<(), GpuError> {
        let (ip, il) = self.input;
        let (op, ol) = self.output;
        let stride = 4 * self.arena_len as u64;
        for i in 0..self.batch {
            self.gpu
                .copy_in(ip + i as u64 * stride, &self.pin_in, i * il, il)?;
        }
        for l in &self.launches {
            l.run(&self.gpu)?;
        }
        for i in 0..self.batch {
            self.gpu
                .copy_out(&mut self.pin_out, i * ol, op + i as u64 * stride, ol)?;
        }
        Ok(())
    }

    fn frame_eager(&mut self) -> Result<(), GpuError> {
        self.gpu.bind()?;
        self.enqueue()?;
        self.gpu.synchronize()
    }

    /// Runs `batch` images (`inputs`: `batch` preprocessed images, one
    /// after the other) into `outputs` (`batch` embeddings). No allocation.
    pub fn run(&mut self, inputs: &[f32], outputs: &mut [f32]) -> Result<(), GpuError> {
        let n = self.batch * self.input.1;
        self.pin_in.as_mut_slice()[..n].copy_from_slice(&inputs[..n]);
        match &self.graph {
            Some(g) => {
                self.gpu.bind()?;
                g.launch()?;
                self.gpu.synchronize()?;
            }
            None => self.frame_eager()?,
        }
        let m = self.batch * self.output.1;
        outputs[..m].copy_from_slice(&self.pin_out.as_slice()[..m]);
        Ok(())
    }

    /// Milliseconds of GPU time for `frames` replays of the frame (CUDA
    /// events; no host copies of inputs or outputs counted).
    pub fn time_frames(&mut self, frames: usize) -> Result<f32, GpuError> {
        self.gpu.bind()?;
        let Some(g) = &self.graph else {
            return Err(GpuError::Call {
                what: "timing",
                why: "no CUDA graph (CLIP_EDGE_CUDA_GRAPH=0)".into(),
            });
        };
        self.gpu.time(|| {
            for _ in 0..frames {
                g.launch()?;
            }
            Ok(())
        })
    }

    /// GPU milliseconds per frame by launch kind (`gemm-f16`, `copy`…),
    /// over `frames` eager frames timed launch by launch with events (the
    /// gaps between launches, which a CUDA graph shrinks, included).
    /// Allocates: a measuring aid.
    pub fn profile(&mut self, frames: usize) -> Result<BTreeMap<&'static str, f64>, GpuError> {
        self.gpu.bind()?;
        let n = self.launches.len();
        let ev = self.gpu.events(n + 1)?;
        let mut ms: BTreeMap<&'static str, f64> = BTreeMap::new();
        for _ in 0..frames.max(1) {
            for (i, l) in self.launches.iter().enumerate() {
                self.gpu.record(&ev, i)?;
                l.run(&self.gpu)?;
            }
            self.gpu.record(&ev, n)?;
            ev.synchronize(n)?;
            for (i, l) in self.launches.iter().enumerate() {
                *ms.entry(l.name()).or_insert(0.0) += ev.elapsed_ms(i, i + 1)? as f64;
            }
        }
        for v in ms.values_mut() {
            *v /= frames.max(1) as f64;
        }
        Ok(ms)
    }

    /// Runs image 0 of `input` step by step, calling `trace(step, name,
    /// its output)` after each (the parity check's search for the first
    /// step that differs from the CPU engine). Allocates: a debugging aid.
    pub fn run_traced(
        &mut self,
        input: &[f32],
        trace: &mut dyn FnMut(usize, &str, &[f32]),
    ) -> Result<(), GpuError> {
        self.gpu.bind()?;
        let il = self.input.1;
        self.pin_in.as_mut_slice()[..il].copy_from_slice(&input[..il]);
        self.gpu.copy_in(self.input.0, &self.pin_in, 0, il)?;
        let mut start = 0;
        for (i, &end) in self.step_ends.iter().enumerate() {
            for l in &self.launches[start..end] {
                l.run(&self.gpu)?;
            }
            start = end;
            self.gpu.synchronize()?;
            let (p, len) = self.step_outs[i];
            let mut host = self.gpu.pinned(len)?;
            self.gpu.copy_out(&mut host, 0, p, len)?;
            self.gpu.synchronize()?;
            trace(i, &self.names[i], host.as_slice());
        }
        Ok(())
    }
}

/// A step's epilogue as one launch's `Posts`, if it fits (at most `MAXP`
/// ops over at most `MAXR` axes, offsets within 32 bits).
fn posts_args(posts: &[Post], opnd: &dyn Fn(Operand) -> (u64, i64)) -> Option<PostsArgs> {
    if posts.len() > MAXP {
        return None;
    }
    let mut p = PostsArgs {
        count: posts.len() as i32,
        ..Default::default()
    };
    for (q, post) in posts.iter().enumerate() {
        match post {
            Post::Unary(u) => {
                let (code, alpha) = unary_code(*u);
                p.op[q] = POST_UNARY + code;
                p.alpha[q] = alpha;
            }
            Post::Binary {
                op,
                y_first,
                dims,
                other,
                so,
            } => {
                p.op[q] = binary_code(*op);
                p.y_first[q] = *y_first as i32;
                p.rank[q] = dims.len() as i32;
                p.dims[q] = dims_args("", dims).ok()?;
                p.so[q] = axes("", so).ok()?;
                (p.other[q], p.other_bs[q]) = opnd(*other);
            }
        }
    }
    Some(p)
}

/// One epilogue op as a launch of its own, in place on the output.
fn post_launch(
    node: &str,
    p: &Post,
    (out, out_bs): (u64, i64),
    out_len: usize,
    opnd: &dyn Fn(Operand) -> (u64, i64),
    batch: usize,
) -> Result<Launch, CudaError> {
    Ok(match p {
        Post::Unary(u) => {
            let (code, alpha) = unary_code(*u);
            Launch::Unary(
                UnaryArgs {
                    posts: PostsArgs::default(),
                    op: code,
                    alpha,
                    n: out_len as i64,
                    out,
                    out_bs,
                    x: out,
                    x_bs: out_bs,
                },
                grid1(out_len, batch),
            )
        }
        Post::Binary {
            op,
            y_first,
            dims,
            other,
            so,
        } => {
            let (po, o_bs) = opnd(*other);
            let sy = strides_of(dims);
            let ((a, a_bs, sa), (b, b_bs, sb)) = if *y_first {
                ((out, out_bs, &sy), (po, o_bs, so))
            } else {
                ((po, o_bs, so), (out, out_bs, &sy))
            };
            let n: usize = dims.iter().product();
            Launch::Binary(
                BinaryArgs {
                    posts: PostsArgs::default(),
                    op: binary_code(*op),
                    rank: dims.len() as i32,
                    dims: dims_args(node, dims)?,
                    sa: axes(node, sa)?,
                    sb: axes(node, sb)?,
                    n: n as i64,
                    out,
                    out_bs,
                    a,
                    a_bs,
                    b,
                    b_bs,
                },
                grid1(n, batch),
            )
        }
    })
}

/// An offset table on the device, kept in `held`.
fn table(gpu: &Gpu, held: &mut Vec<DevBuf>, v: Vec<i32>) -> Result<u64, GpuError> {
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

/// A product's result (`rows × npad` per image at `c`, f32 or i32) into the
/// output through its row and column tables, dequantised with (scales,
/// their row table, the channels' scales) for int8.
#[allow(clippy::too_many_arguments)]
fn scatter(
    rows: usize,
    n: usize,
    npad: usize,
    acc_i32: bool,
    c: u64,
    row_off: u64,
    col_off: u64,
    out: (u64, i64),
    dequant: Option<((u64, i64), u64, u64)>,
    images: usize,
    unit: bool,
) -> Launch {
    let ((s, s_bs), s_off, wscale) = dequant.unwrap_or(((0, 0), 0, 0));
    Launch::Scatter(
        ScatterArgs {
            unit: unit as i32,
            posts: PostsArgs::default(),
            rows: rows as i32,
            n: n as i32,
            npad: npad as i32,
            acc_i32: acc_i32 as i32,
            dequant: dequant.is_some() as i32,
            c,
            row_off,
            col_off,
            out: out.0,
            out_bs: out.1,
            s,
            s_bs,
            s_off,
            wscale,
        },
        (
            n.div_ceil(BLOCK as usize) as u32,
            rows as u32,
            images as u32,
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cuda::{compile_source, SOURCE};
    use std::mem::size_of;

    /// `static_assert`s that each argument struct of kernels.cu has the
    /// size of its Rust twin here (NVRTC has no `offsetof`; the fields are
    /// in the same order, 4- and 8-byte, so a missing, extra or misplaced
    /// narrow field changes the size through padding).
    fn layout_asserts() -> String {
        let mut s = String::new();
        macro_rules! check {
            ($($t:ident),+) => {
                $(s += &format!(
                    "static_assert(sizeof({}) == {}, \"{} size\");\n",
                    stringify!($t), size_of::<$t>(), stringify!($t)
                );)+
            };
        }
        s += &format!(
            "static_assert(sizeof(Posts) == {}, \"Posts size\");\n",
            size_of::<PostsArgs>()
        );
        s += &format!(
            "static_assert(sizeof(Dims) == {}, \"Dims size\");\n",
            size_of::<DimsArgs>()
        );
        check!(
            BinaryArgs,
            UnaryArgs,
            ReduceArgs,
            AxisArgs,
            CopyArgs,
            GatherArgs,
            ScatterArgs,
            Im2colArgs,
            ConvOutArgs,
            PoolArgs
        );
        s
    }

    /// Every argument struct is laid out as the kernels read it: NVRTC
    /// compiles the kernels with the Rust sizes and offsets asserted (no
    /// GPU needed). Skips, saying so, without libnvrtc, unless
    /// `CLIP_EDGE_REQUIRE_NVRTC=1`.
    #[test]
    fn argument_structs_match_the_kernels_layouts() {
        let src = format!("{SOURCE}\n{}", layout_asserts());
        match compile_source(&src, "sm_87") {
            Ok(_) => {}
            Err(GpuError::Unavailable(why)) => {
                assert!(
                    std::env::var("CLIP_EDGE_REQUIRE_NVRTC").as_deref() != Ok("1"),
                    "CLIP_EDGE_REQUIRE_NVRTC=1 but {why}"
                );
                eprintln!("SKIPPED: {why}; the argument layouts were not checked");
            }
            Err(e) => panic!("{e}"),
        }
    }

    /// The kernels' division by multiply-high, emulated: exact against `/`
    /// for every index below 2^31, small and large divisors.
    #[test]
    fn multiply_high_division_is_exact() {
        let div = |n: u32, d: u32| {
            let (magic, shift) = divisor(d);
            let t = ((n as u64 * magic as u64) >> 32) as u32;
            (t + n) >> shift
        };
        let ds = [
            1u32,
            2,
            3,
            7,
            12,
            50,
            64,
            768,
            3072,
            65_535,
            1 << 20,
            999_983,
            (1 << 31) - 1,
        ];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for d in ds {
            for n in [0u32, 1, d - 1, d, d + 1, (1 << 31) - 1] {
                assert_eq!(div(n, d), n / d, "{n} / {d}");
            }
            for _ in 0..20_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let n = (x as u32) & 0x7fff_ffff;
                assert_eq!(div(n, d), n / d, "{n} / {d}");
            }
        }
    }

    /// The check itself fails on a wrong layout.
    #[test]
    fn a_wrong_layout_fails_to_compile() {
        let src = format!("{SOURCE}\nstatic_assert(sizeof(BinaryArgs) == 3, \"x\");\n");
        match compile_source(&src, "sm_87") {
            Err(GpuError::Unavailable(_)) => eprintln!("SKIPPED: libnvrtc not found"),
            r => assert!(matches!(r, Err(GpuError::Compile { .. }))),
        }
    }
}
