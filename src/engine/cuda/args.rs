//! The launches of the CUDA backend: each kernel's argument struct, the
//! `#[repr(C)]` twin of its struct in `kernels.cu` (field for field; the
//! tests have NVRTC check every size), and the helpers that fill them.

use super::CudaError;
use crate::engine::schedule::ir::{Operand, Post};
use crate::engine::schedule::ops::{strides_of, Binary, Reduce, Unary};
use crate::kernels::cuda::{Gemm, GemmType, Gpu, GpuError, BLOCK, KERNELS};

/// Most axes a GPU kernel walks (the CPU engine allows more).
pub(super) const MAXR: usize = 8;

/// Most element-wise ops fused into one launch's write (`Posts` of
/// kernels.cu); a step with more gets launches of its own for them.
pub(super) const MAXP: usize = 4;

/// A shape with its sizes' multiply-high divisors (`Dims` of kernels.cu).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(super) struct DimsArgs {
    pub(super) d: [i32; MAXR],
    pub(super) magic: [u32; MAXR],
    pub(super) shift: [u32; MAXR],
}

/// `q = (umulhi(n, magic) + n) >> shift` is `n / d` for every `n < 2^31`
/// (PyTorch's IntDivider; checked against `/` in the tests).
pub(super) fn divisor(d: u32) -> (u32, u32) {
    let d = d.max(1);
    let shift = (0..32).find(|s| (1u64 << s) >= d as u64).unwrap_or(31);
    let magic = ((1u64 << 32) * ((1u64 << shift) - d as u64)) / d as u64 + 1;
    (magic as u32, shift)
}

pub(super) fn dims_args(node: &str, v: &[usize]) -> Result<DimsArgs, CudaError> {
    let d = axes(node, v)?;
    let mut a = DimsArgs {
        d,
        ..Default::default()
    };
    for (k, &size) in d.iter().enumerate().take(v.len()) {
        (a.magic[k], a.shift[k]) = divisor(size as u32);
    }
    Ok(a)
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(super) struct PostsArgs {
    pub(super) count: i32,
    pub(super) op: [i32; MAXP],
    pub(super) y_first: [i32; MAXP],
    pub(super) alpha: [f32; MAXP],
    pub(super) rank: [i32; MAXP],
    pub(super) dims: [DimsArgs; MAXP],
    pub(super) so: [[i32; MAXR]; MAXP],
    pub(super) other: [u64; MAXP],
    pub(super) other_bs: [i64; MAXP],
}

/// `Posts::op` for a unary op (binary ops are their own codes).
pub(super) const POST_UNARY: i32 = 16;

/// kernels.cu's identity unary op: a launch that only applies posts.
pub(super) const UNARY_IDENTITY: i32 = 11;

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(super) struct BinaryArgs {
    pub(super) op: i32,
    pub(super) rank: i32,
    pub(super) dims: DimsArgs,
    pub(super) sa: [i32; MAXR],
    pub(super) sb: [i32; MAXR],
    pub(super) n: i64,
    pub(super) out: u64,
    pub(super) out_bs: i64,
    pub(super) a: u64,
    pub(super) a_bs: i64,
    pub(super) b: u64,
    pub(super) b_bs: i64,
    pub(super) posts: PostsArgs,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(super) struct UnaryArgs {
    pub(super) op: i32,
    pub(super) alpha: f32,
    pub(super) n: i64,
    pub(super) out: u64,
    pub(super) out_bs: i64,
    pub(super) x: u64,
    pub(super) x_bs: i64,
    pub(super) posts: PostsArgs,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(super) struct ReduceArgs {
    pub(super) op: i32,
    pub(super) krank: i32,
    pub(super) rrank: i32,
    pub(super) kdims: DimsArgs,
    pub(super) ksx: [i32; MAXR],
    pub(super) kso: [i32; MAXR],
    pub(super) rdims: DimsArgs,
    pub(super) rsx: [i32; MAXR],
    pub(super) nred: i64,
    pub(super) count: f32,
    pub(super) x: u64,
    pub(super) x_bs: i64,
    pub(super) out: u64,
    pub(super) out_bs: i64,
    pub(super) posts: PostsArgs,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(super) struct AxisArgs {
    pub(super) outer: i32,
    pub(super) n: i32,
    pub(super) inner: i32,
    pub(super) center: i32,
    pub(super) eps: f32,
    pub(super) x: u64,
    pub(super) x_bs: i64,
    pub(super) out: u64,
    pub(super) out_bs: i64,
    pub(super) posts: PostsArgs,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(super) struct CopyArgs {
    pub(super) rank: i32,
    pub(super) dims: DimsArgs,
    pub(super) ss: [i32; MAXR],
    pub(super) sd: [i32; MAXR],
    pub(super) n: i64,
    pub(super) src: u64,
    pub(super) src_bs: i64,
    pub(super) dst: u64,
    pub(super) dst_bs: i64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(super) struct GatherArgs {
    pub(super) rows: i32,
    pub(super) k: i32,
    pub(super) kpad: i32,
    pub(super) quantize: i32,
    pub(super) unit: i32,
    pub(super) row_off: u64,
    pub(super) col_off: u64,
    pub(super) a: u64,
    pub(super) a_bs: i64,
    pub(super) s: u64,
    pub(super) s_bs: i64,
    pub(super) s_off: u64,
    pub(super) out: u64,
    pub(super) out_type: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(super) struct ScatterArgs {
    pub(super) rows: i32,
    pub(super) n: i32,
    pub(super) npad: i32,
    pub(super) acc_i32: i32,
    pub(super) dequant: i32,
    pub(super) unit: i32,
    pub(super) c: u64,
    pub(super) row_off: u64,
    pub(super) col_off: u64,
    pub(super) out: u64,
    pub(super) out_bs: i64,
    pub(super) s: u64,
    pub(super) s_bs: i64,
    pub(super) s_off: u64,
    pub(super) wscale: u64,
    pub(super) posts: PostsArgs,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(super) struct Im2colArgs {
    pub(super) c: i32,
    pub(super) h: i32,
    pub(super) w: i32,
    pub(super) oh: i32,
    pub(super) ow: i32,
    pub(super) kh: i32,
    pub(super) kw: i32,
    pub(super) sh: i32,
    pub(super) sw: i32,
    pub(super) dh: i32,
    pub(super) dw: i32,
    pub(super) ph: i32,
    pub(super) pw: i32,
    pub(super) kk: i32,
    pub(super) kpad: i32,
    pub(super) ppad: i32,
    pub(super) quantize: i32,
    pub(super) out_i8: i32,
    pub(super) x: u64,
    pub(super) x_bs: i64,
    pub(super) s: u64,
    pub(super) s_bs: i64,
    pub(super) out: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(super) struct ConvOutArgs {
    pub(super) o: i32,
    pub(super) np: i32,
    pub(super) ppad: i32,
    pub(super) images: i32,
    pub(super) acc_i32: i32,
    pub(super) dequant: i32,
    pub(super) c: u64,
    pub(super) bias: u64,
    pub(super) wscale: u64,
    pub(super) s: u64,
    pub(super) s_bs: i64,
    pub(super) out: u64,
    pub(super) out_bs: i64,
    pub(super) posts: PostsArgs,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(super) struct PoolArgs {
    pub(super) c: i32,
    pub(super) h: i32,
    pub(super) w: i32,
    pub(super) oh: i32,
    pub(super) ow: i32,
    pub(super) kh: i32,
    pub(super) kw: i32,
    pub(super) sh: i32,
    pub(super) sw: i32,
    pub(super) ph: i32,
    pub(super) pw: i32,
    pub(super) normalize: i32,
    pub(super) count_include_pad: i32,
    pub(super) x: u64,
    pub(super) x_bs: i64,
    pub(super) out: u64,
    pub(super) out_bs: i64,
    pub(super) posts: PostsArgs,
}

/// One launch of the frame.
pub(super) enum Launch {
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
    pub(super) fn set_posts(&mut self, p: PostsArgs) -> bool {
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

    /// Which kernel of [`KERNELS`] (its index) and the launch's grid;
    /// `None` for a product (cuBLAS).
    pub(super) fn kernel(&self) -> Option<(usize, (u32, u32, u32))> {
        Some(match self {
            Launch::Binary(_, g) => (0, *g),
            Launch::Unary(_, g) => (1, *g),
            Launch::Reduce(_, g) => (2, *g),
            Launch::Softmax(_, g) => (3, *g),
            Launch::Norm(_, g) => (4, *g),
            Launch::Copy(_, g) => (5, *g),
            Launch::Gather(_, g) => (6, *g),
            Launch::Scatter(_, g) => (7, *g),
            Launch::Im2col(_, g) => (8, *g),
            Launch::ConvOut(_, g) => (9, *g),
            Launch::Pool(_, g) => (10, *g),
            Launch::Gemm(_) => return None,
        })
    }

    /// Whether the grid is within CUDA's limits (65,535 blocks along y and
    /// z; x is far larger).
    pub(super) fn grid_fits(&self) -> bool {
        self.kernel()
            .is_none_or(|(_, g)| g.1 <= MAX_GRID_YZ && g.2 <= MAX_GRID_YZ)
    }

    /// The launch's kind, for the profile: its kernel's name without the
    /// `ce_` prefix, or the product's types.
    pub(super) fn name(&self) -> &'static str {
        match (self, self.kernel()) {
            (Launch::Gemm(g), _) => match g.ty {
                GemmType::F16 => "gemm-f16",
                GemmType::I8 => "gemm-int8",
                GemmType::F32 => "gemm-f32",
            },
            (_, Some((k, _))) => KERNELS[k].trim_start_matches("ce_"),
            (_, None) => "?",
        }
    }

    pub(super) fn run(&self, gpu: &Gpu) -> Result<(), GpuError> {
        let Some((k, g)) = self.kernel() else {
            let Launch::Gemm(p) = self else {
                unreachable!("only a product has no kernel")
            };
            return gpu.gemm(p);
        };
        match self {
            Launch::Binary(a, _) => gpu.launch(k, g, a),
            Launch::Unary(a, _) => gpu.launch(k, g, a),
            Launch::Reduce(a, _) => gpu.launch(k, g, a),
            Launch::Softmax(a, _) | Launch::Norm(a, _) => gpu.launch(k, g, a),
            Launch::Copy(a, _) => gpu.launch(k, g, a),
            Launch::Gather(a, _) => gpu.launch(k, g, a),
            Launch::Scatter(a, _) => gpu.launch(k, g, a),
            Launch::Im2col(a, _) => gpu.launch(k, g, a),
            Launch::ConvOut(a, _) => gpu.launch(k, g, a),
            Launch::Pool(a, _) => gpu.launch(k, g, a),
            Launch::Gemm(p) => gpu.gemm(p),
        }
    }
}

/// CUDA's limit on a grid's y and z.
const MAX_GRID_YZ: u32 = 65_535;

pub(super) fn grid1(n: usize, images: usize) -> (u32, u32, u32) {
    (n.div_ceil(BLOCK as usize) as u32, images as u32, 1)
}

pub(super) fn i32s(node: &str, what: &str, v: &[usize]) -> Result<Vec<i32>, CudaError> {
    v.iter()
        .map(|&x| {
            i32::try_from(x).map_err(|_| CudaError::Unsupported {
                node: node.into(),
                why: format!("{what} {x} is past 2^31"),
            })
        })
        .collect()
}

pub(super) fn axes(node: &str, v: &[usize]) -> Result<[i32; MAXR], CudaError> {
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

pub(super) fn binary_code(op: Binary) -> i32 {
    match op {
        Binary::Add => 0,
        Binary::Sub => 1,
        Binary::Mul => 2,
        Binary::Div => 3,
        Binary::Max => 4,
        Binary::Min => 5,
    }
}

pub(super) fn unary_code(op: Unary) -> (i32, f32) {
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
        Unary::Erf => (12, 0.0),
        Unary::Gelu => (13, 0.0),
    }
}

pub(super) fn reduce_code(op: Reduce) -> i32 {
    match op {
        Reduce::Sum => 0,
        Reduce::Max => 1,
        Reduce::Min => 2,
        Reduce::MeanOfSquares => 3,
        Reduce::AbsMax => 4,
    }
}

/// A step's epilogue as one launch's `Posts`, if it fits (at most `MAXP`
/// ops over at most `MAXR` axes, offsets within 32 bits).
pub(super) fn posts_args(
    posts: &[Post],
    opnd: &dyn Fn(Operand) -> (u64, i64),
) -> Option<PostsArgs> {
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
pub(super) fn post_launch(
    node: &str,
    p: &Post,
    (out, out_bs): (u64, i64),
    out_len: usize,
    opnd: &dyn Fn(Operand) -> (u64, i64),
    batch: usize,
) -> Result<Launch, CudaError> {
    let y = (out, out_bs);
    Ok(match p {
        Post::Unary(u) => {
            let (code, alpha) = unary_code(*u);
            unary_launch(code, alpha, out_len, y, y, PostsArgs::default(), batch)
        }
        Post::Binary {
            op,
            y_first,
            dims,
            other,
            so,
        } => {
            let sy = strides_of(dims);
            let (po, o_bs) = opnd(*other);
            let (mine, theirs) = ((out, out_bs, &sy[..]), (po, o_bs, &so[..]));
            let (a, b) = if *y_first {
                (mine, theirs)
            } else {
                (theirs, mine)
            };
            binary_launch(node, *op, dims, a, b, y, batch)?
        }
    })
}

/// `out = a op b` over `dims` (`out` contiguous; `a` and `b` as pointer,
/// batch stride and broadcast strides).
pub(super) fn binary_launch(
    node: &str,
    op: Binary,
    dims: &[usize],
    (a, a_bs, sa): (u64, i64, &[usize]),
    (b, b_bs, sb): (u64, i64, &[usize]),
    (out, out_bs): (u64, i64),
    batch: usize,
) -> Result<Launch, CudaError> {
    let n: usize = dims.iter().product();
    Ok(Launch::Binary(
        BinaryArgs {
            posts: PostsArgs::default(),
            op: binary_code(op),
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
    ))
}

/// `out = f(x)` over `n` values (`code`, `alpha` from [`unary_code`], or
/// [`UNARY_IDENTITY`] for a launch that only applies `posts`).
pub(super) fn unary_launch(
    code: i32,
    alpha: f32,
    n: usize,
    (out, out_bs): (u64, i64),
    (x, x_bs): (u64, i64),
    posts: PostsArgs,
    batch: usize,
) -> Launch {
    Launch::Unary(
        UnaryArgs {
            posts,
            op: code,
            alpha,
            n: n as i64,
            out,
            out_bs,
            x,
            x_bs,
        },
        grid1(n, batch),
    )
}

/// A product's result (`rows × npad` per image at `c`, f32 or i32) into the
/// output through its row and column tables, dequantised with (scales,
/// their row table, the channels' scales) for int8.
#[allow(clippy::too_many_arguments)]
pub(super) fn scatter(
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
mod tests;
