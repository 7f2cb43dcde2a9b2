//! The lowered schedule as GPU launches: weights uploaded, tables and
//! scratch allocated, every step turned into one or a few launches of
//! `kernels.cu` in order (the plan [`super::CudaEncoder`] captures).

use std::collections::BTreeMap;

use half::f16;
use tract_core::internal::TypedModel;

use super::args::*;
use super::CudaError;
use crate::engine::native::ir::{Kind, Operand};
use crate::engine::native::linear::{ConvWeights, Rhs, Weights};
use crate::engine::native::lower;
use crate::engine::native::FloatWeights;
use crate::engine::native::{op_key, plan_arena};
use crate::kernels::cuda::{DevBuf, Gemm, GemmType, Gpu, GpuError, BLOCK};
use crate::kernels::Kernels;

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
    let mut l = lower::lower(model, &Kernels::SCALAR, FloatWeights::F32, false)?;
    // Copies read only by a product: read through its tables instead.
    let folded = crate::engine::native::fold::fold_copies(&mut l);
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
                let ((pa_, a_bs), (pb_, b_bs)) = (opnd(*a), opnd(*b));
                launches.push(binary_launch(
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
                launches.push(unary_launch(
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
                let a_rows = table(gpu, &mut held, i32s(node, "an offset", &row_off)?)?;
                let a_cols = table(gpu, &mut held, i32s(node, "an offset", &mm.a_k)?)?;
                let o_rows_t = table(gpu, &mut held, i32s(node, "an offset", &o_rows)?)?;
                let o_cols_t = table(gpu, &mut held, i32s(node, "an offset", &mm.o_n)?)?;
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
                            Weights::F32(v) => v.to_vec(),
                            Weights::F16(v) => v.iter().map(|h| h.to_f32()).collect(),
                        };
                        let wb = upload_rows_f16(gpu, &rows_f32, n, k, npad, kpad)?;
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
                        let s_off = table(gpu, &mut held, i32s(node, "an offset", &s_rows)?)?;
                        let ws = gpu.upload(&w.scale)?;
                        let pws = ws.ptr();
                        held.push(ws);
                        let (ty, wb) = if int8_units {
                            (GemmType::I8, upload_rows_i8(gpu, &w.q, n, k, npad, kpad)?)
                        } else {
                            // No int8 units: the int8 values in f16 (exact),
                            // products accumulated in f32 (exact below 2^24:
                            // a depth past about 1,040 may round, as f32
                            // sums do on the CPU's float paths).
                            let f: Vec<f32> = w.q.iter().map(|&q| q as f32).collect();
                            (GemmType::F16, upload_rows_f16(gpu, &f, n, k, npad, kpad)?)
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
                        let br = table(gpu, &mut held, i32s(node, "an offset", &b_rows)?)?;
                        let bc = table(gpu, &mut held, i32s(node, "an offset", b_k)?)?;
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
                        upload_rows_f16(gpu, v, o, kk, o, kpad)?,
                        None,
                        false,
                    ),
                    ConvWeights::Float(Weights::F16(v)) => {
                        let f: Vec<f32> = v.iter().map(|h| h.to_f32()).collect();
                        (
                            GemmType::F16,
                            upload_rows_f16(gpu, &f, o, kk, o, kpad)?,
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
                                upload_rows_i8(gpu, &w.q, o, kk, o, kpad)?,
                                Some(p),
                                true,
                            )
                        } else {
                            let f: Vec<f32> = w.q.iter().map(|&q| q as f32).collect();
                            (
                                GemmType::F16,
                                upload_rows_f16(gpu, &f, o, kk, o, kpad)?,
                                Some(p),
                                true,
                            )
                        }
                    }
                    // Lowered above without them.
                    ConvWeights::Winograd(_) => {
                        return Err(CudaError::Unsupported {
                            node: node.into(),
                            why: "Winograd's transformed weights (lowered for the CPU)".into(),
                        })
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
                        let y = (out, out_bs);
                        launches.push(unary_launch(UNARY_IDENTITY, 0.0, out_len, y, y, p, batch));
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
        if let Some(l) = launches[step_start..].iter().find(|l| !l.grid_fits()) {
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
        step_ends.push(launches.len());
        step_outs.push((out, out_len));
    }
    held.extend(weights);
    Ok(Plan {
        names: l.steps.iter().map(|s| s.name.clone()).collect(),
        input: (arena.ptr() + 4 * offsets[l.input] as u64, l.lens[l.input]),
        output: (arena.ptr() + 4 * offsets[l.output] as u64, l.lens[l.output]),
        launches,
        step_ends,
        step_outs,
        ops,
        weight_bytes,
        scratch_bytes,
        held,
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
