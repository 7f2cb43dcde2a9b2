//! A matrix product's and a convolution's launches: gather (or im2col)
//! into scratch rows, one cuBLAS product, scatter back through the
//! output's tables, with the weights uploaded as rows.

use super::super::args::*;
use super::super::CudaError;
use super::{table, up, upload_rows_f16, upload_rows_i8, K_ALIGN, ROW_ALIGN};
use crate::engine::schedule::ir::Operand;
use crate::engine::schedule::linear::{Conv, ConvWeights, MatMul, Rhs, Weights};
use crate::kernels::cuda::{DevBuf, Gemm, GemmType, Gpu, BLOCK};

/// What every product's launches are made with.
pub(super) struct Cx<'a> {
    pub gpu: &'a Gpu,
    pub batch: usize,
    pub int8_units: bool,
    pub f32_attention: bool,
    /// The three scratch buffers: rows of the left side, of the right side
    /// (a product of activations), of the result.
    pub pa: u64,
    pub pb: u64,
    pub pc: u64,
    /// An operand's device pointer and its stride between images.
    pub opnd: &'a dyn Fn(Operand) -> (u64, i64),
}

/// What the launches made so far hold.
#[derive(Default)]
pub(super) struct Made {
    pub launches: Vec<Launch>,
    /// Tables, constants and scratch.
    pub held: Vec<DevBuf>,
    pub weights: Vec<DevBuf>,
    pub weight_bytes: usize,
}

/// A product's launches; returns its op key (class and precision run).
#[allow(clippy::too_many_arguments)]
pub(super) fn matmul(
    cx: &Cx,
    made: &mut Made,
    node: &str,
    class: &str,
    mm: &MatMul,
    (a, b, s): (&Operand, &Option<Operand>, &Option<Operand>),
    (out, out_bs): (u64, i64),
    no_posts: bool,
) -> Result<String, CudaError> {
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
    let (pa_in, a_bs) = (cx.opnd)(*a);
    let a_rows = table(cx.gpu, &mut made.held, i32s(node, "an offset", &row_off)?)?;
    let a_cols = table(cx.gpu, &mut made.held, i32s(node, "an offset", &mm.a_k)?)?;
    let o_rows_t = table(cx.gpu, &mut made.held, i32s(node, "an offset", &o_rows)?)?;
    let o_cols_t = table(cx.gpu, &mut made.held, i32s(node, "an offset", &mm.o_n)?)?;
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
                out: cx.pa,
                out_type,
            },
            (
                kpad.div_ceil(BLOCK as usize) as u32,
                rows as u32,
                cx.batch as u32,
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
            let wb = upload_rows_f16(cx.gpu, &rows_f32, n, k, npad, kpad)?;
            made.weight_bytes += wb.bytes();
            let pw = wb.ptr();
            made.weights.push(wb);
            // One image whose output rows follow each other: the
            // product writes them in place (no scatter).
            let direct = cx.batch == 1
                && no_posts
                && npad == n
                && mm.out_rows_contiguous()
                && mm.o_batch.iter().enumerate().all(|(i, &o)| o == i * m * n);
            made.launches.push(gather(0, (0, 0), 0, 0));
            made.launches.push(Launch::Gemm(Gemm {
                ty: GemmType::F16,
                m: npad,
                n: cx.batch * rows,
                k: kpad,
                a: pw,
                lda: kpad,
                stride_a: 0,
                b: cx.pa,
                ldb: kpad,
                stride_b: 0,
                c: if direct { out } else { cx.pc },
                ldc: npad,
                stride_c: 0,
                batch: 1,
            }));
            if !direct {
                made.launches.push(scatter(
                    rows,
                    n,
                    npad,
                    false,
                    cx.pc,
                    o_rows_t,
                    o_cols_t,
                    (out, out_bs),
                    None,
                    cx.batch,
                    mm.o_n_unit,
                ));
            }
            Ok(format!("{}/f16", class))
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
            let s_off = table(cx.gpu, &mut made.held, i32s(node, "an offset", &s_rows)?)?;
            let ws = cx.gpu.upload(&w.scale)?;
            let pws = ws.ptr();
            made.held.push(ws);
            let (ty, wb) = if cx.int8_units {
                (
                    GemmType::I8,
                    upload_rows_i8(cx.gpu, &w.q, n, k, npad, kpad)?,
                )
            } else {
                // No int8 units: the int8 values in f16 (exact),
                // products accumulated in f32 (exact below 2^24:
                // a depth past about 1,040 may round, as f32
                // sums do on the CPU's float paths).
                let f: Vec<f32> = w.q.iter().map(|&q| q as f32).collect();
                (
                    GemmType::F16,
                    upload_rows_f16(cx.gpu, &f, n, k, npad, kpad)?,
                )
            };
            made.weight_bytes += wb.bytes() + 4 * w.scale.len();
            let pw = wb.ptr();
            made.weights.push(wb);
            let i8_ = (ty == GemmType::I8) as i32;
            made.launches.push(gather(1, (cx.opnd)(s), s_off, i8_));
            made.launches.push(Launch::Gemm(Gemm {
                ty,
                m: npad,
                n: cx.batch * rows,
                k: kpad,
                a: pw,
                lda: kpad,
                stride_a: 0,
                b: cx.pa,
                ldb: kpad,
                stride_b: 0,
                c: cx.pc,
                ldc: npad,
                stride_c: 0,
                batch: 1,
            }));
            made.launches.push(scatter(
                rows,
                n,
                npad,
                ty == GemmType::I8,
                cx.pc,
                o_rows_t,
                o_cols_t,
                (out, out_bs),
                Some(((cx.opnd)(s), s_off, pws)),
                cx.batch,
                mm.o_n_unit,
            ));
            Ok(format!(
                "{}/{}",
                class,
                if cx.int8_units { "int8" } else { "int8-as-f16" }
            ))
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
            let (pb_in, b_bs) = (cx.opnd)(b);
            let br = table(cx.gpu, &mut made.held, i32s(node, "an offset", &b_rows)?)?;
            let bc = table(cx.gpu, &mut made.held, i32s(node, "an offset", b_k)?)?;
            let (ty, out_type) = match cx.f32_attention {
                true => (GemmType::F32, 2),
                false => (GemmType::F16, 0),
            };
            made.launches.push(gather(0, (0, 0), 0, out_type));
            made.launches.push(Launch::Gather(
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
                    out: cx.pb,
                    out_type,
                    ..Default::default()
                },
                (
                    kpad.div_ceil(BLOCK as usize) as u32,
                    (batches * n) as u32,
                    cx.batch as u32,
                ),
            ));
            made.launches.push(Launch::Gemm(Gemm {
                ty,
                m: n,
                n: m,
                k: kpad,
                a: cx.pb,
                lda: kpad,
                stride_a: n * kpad,
                b: cx.pa,
                ldb: kpad,
                stride_b: m * kpad,
                c: cx.pc,
                ldc: n,
                stride_c: m * n,
                batch: cx.batch * batches,
            }));
            made.launches.push(scatter(
                rows,
                n,
                n,
                false,
                cx.pc,
                o_rows_t,
                o_cols_t,
                (out, out_bs),
                None,
                cx.batch,
                mm.o_n_unit,
            ));
            Ok(format!(
                "{}/{}",
                class,
                if cx.f32_attention { "f32" } else { "f16" }
            ))
        }
    }
}

/// A convolution's launches; returns its op key.
pub(super) fn conv(
    cx: &Cx,
    made: &mut Made,
    node: &str,
    class: &str,
    conv: &Conv,
    (x, s): (&Operand, &Option<Operand>),
    (out, out_bs): (u64, i64),
) -> Result<String, CudaError> {
    let kk = conv.c * conv.kernel[0] * conv.kernel[1];
    let (o, np) = (conv.o, conv.oh * conv.ow);
    let (kpad, ppad) = (up(kk, K_ALIGN), up(np, ROW_ALIGN));
    let (px, x_bs) = (cx.opnd)(*x);
    let bias = cx.gpu.upload(&conv.bias)?;
    let pbias = bias.ptr();
    made.held.push(bias);
    let (ty, wb, wscale, quant) = match &conv.weights {
        ConvWeights::Float(Weights::F32(v)) | ConvWeights::F32Rows(v) => (
            GemmType::F16,
            upload_rows_f16(cx.gpu, v, o, kk, o, kpad)?,
            None,
            false,
        ),
        ConvWeights::Float(Weights::F16(v)) => {
            let f: Vec<f32> = v.iter().map(|h| h.to_f32()).collect();
            (
                GemmType::F16,
                upload_rows_f16(cx.gpu, &f, o, kk, o, kpad)?,
                None,
                false,
            )
        }
        ConvWeights::Int8(w) => {
            let ws = cx.gpu.upload(&w.scale)?;
            let p = ws.ptr();
            made.held.push(ws);
            if cx.int8_units {
                (
                    GemmType::I8,
                    upload_rows_i8(cx.gpu, &w.q, o, kk, o, kpad)?,
                    Some(p),
                    true,
                )
            } else {
                let f: Vec<f32> = w.q.iter().map(|&q| q as f32).collect();
                (
                    GemmType::F16,
                    upload_rows_f16(cx.gpu, &f, o, kk, o, kpad)?,
                    Some(p),
                    true,
                )
            }
        }
        // Only the CPU engine's packing transforms weights for Winograd;
        // this backend runs rows as lowering makes them.
        ConvWeights::Winograd(_) => {
            return Err(CudaError::Unsupported {
                node: node.into(),
                why: "Winograd's transformed weights (packed for the CPU)".into(),
            })
        }
    };
    let (ps, s_bs) = match (quant, s) {
        (true, Some(s)) => (cx.opnd)(*s),
        (true, None) => {
            return Err(CudaError::Unsupported {
                node: node.into(),
                why: "an int8 convolution without its scale".into(),
            })
        }
        _ => (0, 0),
    };
    made.weight_bytes += wb.bytes() + 4 * conv.bias.len();
    let pw = wb.ptr();
    made.weights.push(wb);
    let i8_ = (ty == GemmType::I8) as i32;
    made.launches.push(Launch::Im2col(
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
            out: cx.pa,
        },
        (
            kpad.div_ceil(BLOCK as usize) as u32,
            ppad as u32,
            cx.batch as u32,
        ),
    ));
    made.launches.push(Launch::Gemm(Gemm {
        ty,
        m: cx.batch * ppad,
        n: o,
        k: kpad,
        a: cx.pa,
        lda: kpad,
        stride_a: 0,
        b: pw,
        ldb: kpad,
        stride_b: 0,
        c: cx.pc,
        ldc: cx.batch * ppad,
        stride_c: 0,
        batch: 1,
    }));
    made.launches.push(Launch::ConvOut(
        ConvOutArgs {
            posts: PostsArgs::default(),
            o: o as i32,
            np: np as i32,
            ppad: ppad as i32,
            images: cx.batch as i32,
            acc_i32: i8_,
            dequant: quant as i32,
            c: cx.pc,
            bias: pbias,
            wscale: wscale.unwrap_or(0),
            s: ps,
            s_bs,
            out,
            out_bs,
        },
        (
            np.div_ceil(BLOCK as usize) as u32,
            o as u32,
            cx.batch as u32,
        ),
    ));
    Ok(format!(
        "{}/{}",
        class,
        match (quant, cx.int8_units) {
            (false, _) => "f16",
            (true, true) => "int8",
            (true, false) => "int8-as-f16",
        }
    ))
}
