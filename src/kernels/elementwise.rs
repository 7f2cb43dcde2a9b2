//! Row kernels of the element-wise work around the products: maps
//! (sigmoid, QuickGELU…), binary ops, softmax and norm rows, `max |x|`,
//! activation quantisation and the int8 products' dequantising epilogue.
//!
//! Each is written once, plainly, in [`plain`]; the crate is built for the
//! baseline CPU (SSE2 on x86_64), so on x86_64 the same source is compiled
//! again with AVX2 + FMA and with AVX-512 enabled, and [`Level`] (chosen at
//! run time with the product kernels) picks the copy. The copies compute
//! the same operations in the same order: their results are identical, bit
//! for bit (tested), to the plain source's form for that copy: the
//! polynomial maps fuse their multiply-adds where [`Level::fuses`]. On
//! aarch64 NEON is the baseline, so the plain copy is already vectorised. Sums and maxima run in eight lanes so that they
//! vectorise at all (`max |x|` in 64: a maximum is exact in any order, and
//! more lanes are more chains in flight).

/// Which compiled copy of the row kernels runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Level {
    /// Built for the baseline CPU.
    #[default]
    Plain,
    /// x86_64 with SSE4.1 (no AVX).
    Sse41,
    /// x86_64 with AVX2 and FMA.
    Avx2,
    /// x86_64 with AVX-512 F/BW/VL (and AVX2, FMA).
    Avx512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
}

impl Binary {
    pub fn from_name(n: &str) -> Option<Binary> {
        Some(match n {
            "Add" => Binary::Add,
            "Sub" => Binary::Sub,
            "Mul" => Binary::Mul,
            "Div" => Binary::Div,
            "Max" => Binary::Max,
            "Min" => Binary::Min,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Unary {
    Abs,
    Recip,
    RoundHalfToEven,
    Sigmoid,
    Rsqrt,
    Sqrt,
    Square,
    Exp,
    Neg,
    Tanh,
    /// `x · sigmoid(α · x)` (CLIP's QuickGELU, α = 1.702): the graph's
    /// `Mul(x, Sigmoid(Mul(x, α)))`, fused.
    QuickGelu(f32),
    /// The error function.
    Erf,
    /// `x · Φ(x) = x/2 · (1 + erf(x/√2))`, GELU by erf (`nn.GELU()`), as
    /// tract fuses it (`GeluExact`).
    Gelu,
}

impl Unary {
    pub fn from_name(n: &str) -> Option<Unary> {
        Some(match n {
            "Abs" => Unary::Abs,
            "Recip" => Unary::Recip,
            "RoundHalfToEven" => Unary::RoundHalfToEven,
            "Sigmoid" => Unary::Sigmoid,
            "Rsqrt" => Unary::Rsqrt,
            "Sqrt" => Unary::Sqrt,
            "Square" => Unary::Square,
            "Exp" => Unary::Exp,
            "Neg" => Unary::Neg,
            "Tanh" => Unary::Tanh,
            "Erf" => Unary::Erf,
            "GeluExact" => Unary::Gelu,
            _ => return None,
        })
    }
}

/// `e^x` in f32, branch-free (so that loops over it vectorise; the
/// library's `expf` is a call per value): `x = n·ln2 + r` with
/// `|r| ≤ ln2/2` (Cody–Waite, two-part ln2), Cephes' `expf` polynomial for
/// `e^r`, and `2^n` built in the exponent bits. Within 2 ulp of `expf`
/// (tested); inputs are clamped to [-87.3, 88.7] (about the smallest
/// normal f32 and the largest finite).
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    fast_exp_with::<false>(x)
}

/// `a·b + c`, rounded once where `FUSED` (the CPU's FMA: [`Level::fuses`])
/// and twice otherwise.
#[inline(always)]
pub fn mad<const FUSED: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FUSED {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// [`fast_exp`], its multiply-adds fused where `FUSED` (the same bound).
#[inline(always)]
pub fn fast_exp_with<const FUSED: bool>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.336_55, 88.722_83);
    // n = round(x · log2 e), by the 1.5 · 2^23 trick (|n| ≤ 128): the
    // integer sits in the low mantissa bits of `t` (no float-to-int
    // conversion, which would not vectorise).
    let m = mad::<FUSED>;
    let t = m(x, LOG2E, MAGIC);
    let n = t - MAGIC;
    let ni = t.to_bits() as i32 - MAGIC.to_bits() as i32;
    let r = m(-n, LN2_LO, m(-n, LN2_HI, x));
    let p = m(r, 1.987_569_2e-4, 1.398_199_9e-3);
    let p = m(p, r, 8.333_452e-3);
    let p = m(p, r, 4.166_579_6e-2);
    let p = m(p, r, 1.666_666_5e-1);
    let p = m(p, r, 0.5);
    let p = m(p, r * r, r) + 1.0;
    // 2^n for n in [-126, 128]: n = 128 only where x ≥ 88.38; split it.
    let half = ni >> 1;
    let a = f32::from_bits(((half + 127) as u32) << 23);
    let b = f32::from_bits(((ni - half + 127) as u32) << 23);
    p * a * b
}

/// `erfc(z)` for `z ≥ 0`: Numerical Recipes' `erfcc` (a Chebyshev fit
/// of `erfc(z)·e^(z²)` in `t = 1/(1 + z/2)`, fractional error below 1.2e-7
/// in exact arithmetic), branch-free with [`fast_exp_with`].
#[inline(always)]
#[allow(clippy::excessive_precision)] // the coefficients as published
fn erfc_nonneg<const FUSED: bool>(z: f32) -> f32 {
    let m = mad::<FUSED>;
    let t = 1.0 / m(0.5, z, 1.0);
    let p = m(t, 0.170_872_77, -0.822_152_23);
    let p = m(t, p, 1.488_515_87);
    let p = m(t, p, -1.135_203_98);
    let p = m(t, p, 0.278_868_07);
    let p = m(t, p, -0.186_288_06);
    let p = m(t, p, 0.096_784_18);
    let p = m(t, p, 0.374_091_96);
    let p = m(t, p, 1.000_023_7);
    let p = m(t, p, -1.265_512_2);
    t * fast_exp_with::<FUSED>(m(-z, z, p))
}

/// `erf(x)` in f32, branch-free: `1 - erfc(|x|)` with `x`'s sign, and
/// for `|x| < 1/2` (where that would cancel) its Maclaurin series to
/// `x^11` instead. Within [`ERF_ABS_ERROR`] of the exact value, and within
/// [`ERF_SMALL_REL_ERROR`] of it relatively below `1/2` (tested), unfused
/// and fused alike.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    erf_with::<false>(x)
}

/// [`erf`], its multiply-adds fused where `FUSED`.
#[inline(always)]
pub fn erf_with<const FUSED: bool>(x: f32) -> f32 {
    let m = mad::<FUSED>;
    // 2/√π · (x − x³/3 + x⁵/10 − x⁷/42 + x⁹/216 − x¹¹/1320)
    let z = x * x;
    let s = m(z, -1.0 / 1320.0, 1.0 / 216.0);
    let s = m(z, s, -1.0 / 42.0);
    let s = m(z, s, 1.0 / 10.0);
    let s = m(z, s, -1.0 / 3.0);
    let series = x * (std::f32::consts::FRAC_2_SQRT_PI * m(z, s, 1.0));
    let far = (1.0 - erfc_nonneg::<FUSED>(x.abs())).copysign(x);
    if x.abs() < 0.5 {
        series
    } else {
        far
    }
}

/// Bound on `|erf(x) - erf_exact(x)|` over all f32 (tested on a dense grid
/// and the extremes; measured 1.5e-7).
pub const ERF_ABS_ERROR: f32 = 1e-6;

/// Bound on `erf`'s relative error for `|x| < 1/2` (tested; measured
/// 1.8e-7).
pub const ERF_SMALL_REL_ERROR: f32 = 1e-6;

/// Where [`gelu`] clamps its argument: `erf(5.5/√2)` is 1 to within
/// 4e-8, less than the fit's error once evaluated in f32.
const GELU_CLAMP: f32 = 5.5;

/// GELU by erf, `x/2 · (1 + erf(x/√2))`, PyTorch's formula, with
/// `erf(x/√2) ≈ x·P(x²)/Q(x²)` on `|x| ≤` [`GELU_CLAMP`]: a rational fit
/// (degree 5 over 5 in `x²`, weighted least squares towards the minimax
/// error; generator: `scripts/fit-gelu`), one division and no exponential,
/// a few times cheaper than `erf` above. Within `1e-6 · |x|/2` of the
/// exact value (tested, unfused and fused): absolute precision, as
/// PyTorch's own float GELU has, so the far negative tail (|GELU| below
/// about 1e-7 · |x|) is not kept to relative precision.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    gelu_with::<false>(x)
}

/// [`gelu`], its multiply-adds fused where `FUSED` (the products and sums
/// in half the instructions).
#[inline(always)]
#[allow(clippy::excessive_precision)] // the fit's coefficients as generated
pub fn gelu_with<const FUSED: bool>(x: f32) -> f32 {
    let m = mad::<FUSED>;
    let c = x.clamp(-GELU_CLAMP, GELU_CLAMP);
    let u = c * c;
    let p = m(u, 4.544_444_910e-8, 1.270_576_329e-5);
    let p = m(u, p, 3.381_772_424e-4);
    let p = m(u, p, 9.357_764_214e-3);
    let p = m(u, p, 6.775_838_848e-2);
    let p = m(u, p, 7.978_844_724e-1);
    let q = m(u, 1.196_766_768e-6, 7.372_577_879e-5);
    let q = m(u, q, 1.885_960_722e-3);
    let q = m(u, q, 2.866_102_327e-2);
    let q = m(u, q, 2.515_884_778e-1);
    let q = m(u, q, 1.0);
    // The fit passes 1 by about 1e-7 near the clamp: `1 + erf` held to
    // [0, 2], so that GELU never changes sign nor exceeds `x`.
    0.5 * x * (1.0 + c * p / q).clamp(0.0, 2.0)
}

/// The plain source of every row kernel (and the twin the compiled copies
/// are tested against).
pub mod plain {
    use super::{erf_with, fast_exp, fast_exp_with, gelu_with, Binary, Unary};
    use crate::kernels::quantize;

    const LANES: usize = 8;

    #[inline(always)]
    fn lanes_fold(
        row: &[f32],
        init: f32,
        f: impl Fn(f32) -> f32,
        op: impl Fn(f32, f32) -> f32,
    ) -> f32 {
        let mut acc = [init; LANES];
        let mut chunks = row.chunks_exact(LANES);
        for c in &mut chunks {
            for (l, v) in acc.iter_mut().zip(c) {
                *l = op(*l, f(*v));
            }
        }
        let mut m = init;
        for l in acc {
            m = op(m, l);
        }
        chunks.remainder().iter().fold(m, |m, v| op(m, f(*v)))
    }

    /// Lanes of [`abs_max`]: the maximum is exact in any order, so the
    /// lanes only set how many independent chains the loop keeps (four
    /// AVX-512 registers, eight AVX2 ones), not the result.
    const MAX_LANES: usize = 64;

    /// `max |v|` (`f32::max`'s NaN rule: a NaN is skipped); -∞ when empty.
    #[inline(always)]
    pub fn abs_max(row: &[f32]) -> f32 {
        let mut acc = [f32::NEG_INFINITY; MAX_LANES];
        let mut chunks = row.chunks_exact(MAX_LANES);
        for c in &mut chunks {
            for (l, v) in acc.iter_mut().zip(c) {
                *l = l.max(v.abs());
            }
        }
        let m = lanes_fold(&acc, f32::NEG_INFINITY, |v| v, f32::max);
        chunks.remainder().iter().fold(m, |m, v| m.max(v.abs()))
    }

    /// `max v`; -∞ when empty.
    #[inline(always)]
    pub fn max(row: &[f32]) -> f32 {
        lanes_fold(row, f32::NEG_INFINITY, |v| v, f32::max)
    }

    /// `out = f(x)`, or `out = f(out)` in place when `x` is `None`; the
    /// polynomial ops (exponentials, erf, GELU) with their multiply-adds
    /// fused where `fused`.
    #[inline(always)]
    pub fn map_with(fused: bool, op: Unary, x: Option<&[f32]>, out: &mut [f32]) {
        #[inline(always)]
        fn each(f: impl Fn(f32) -> f32, x: Option<&[f32]>, out: &mut [f32]) {
            match x {
                Some(x) => {
                    for (o, v) in out.iter_mut().zip(x) {
                        *o = f(*v);
                    }
                }
                None => {
                    for o in out.iter_mut() {
                        *o = f(*o);
                    }
                }
            }
        }
        #[inline(always)]
        fn polynomial<const FUSED: bool>(op: Unary, x: Option<&[f32]>, out: &mut [f32]) {
            let exp = fast_exp_with::<FUSED>;
            match op {
                Unary::Sigmoid => each(|v| 1.0 / (1.0 + exp(-v)), x, out),
                Unary::Exp => each(exp, x, out),
                Unary::QuickGelu(alpha) => each(|v| v * (1.0 / (1.0 + exp(-(v * alpha)))), x, out),
                Unary::Erf => each(erf_with::<FUSED>, x, out),
                Unary::Gelu => each(gelu_with::<FUSED>, x, out),
                _ => unreachable!("not a polynomial op: {op:?}"),
            }
        }
        match op {
            Unary::Abs => each(f32::abs, x, out),
            Unary::Recip => each(|v| 1.0 / v, x, out),
            Unary::RoundHalfToEven => each(crate::kernels::round_half_even, x, out),
            Unary::Rsqrt => each(|v| 1.0 / v.sqrt(), x, out),
            Unary::Sqrt => each(f32::sqrt, x, out),
            Unary::Square => each(|v| v * v, x, out),
            Unary::Neg => each(|v| -v, x, out),
            Unary::Tanh => each(f32::tanh, x, out),
            Unary::Sigmoid | Unary::Exp | Unary::QuickGelu(_) | Unary::Erf | Unary::Gelu => {
                if fused {
                    polynomial::<true>(op, x, out)
                } else {
                    polynomial::<false>(op, x, out)
                }
            }
        }
    }

    /// One row: `out[t] = a[t·ia] ∘ b[t·ib]` (a stride 0 repeats a value).
    #[inline(always)]
    pub fn binary(op: Binary, a: &[f32], ia: usize, b: &[f32], ib: usize, out: &mut [f32]) {
        #[inline(always)]
        fn rows(
            f: impl Fn(f32, f32) -> f32,
            a: &[f32],
            ia: usize,
            b: &[f32],
            ib: usize,
            out: &mut [f32],
        ) {
            let n = out.len();
            match (ia, ib) {
                (1, 1) => {
                    for ((r, x), y) in out.iter_mut().zip(&a[..n]).zip(&b[..n]) {
                        *r = f(*x, *y);
                    }
                }
                (1, 0) => {
                    let y = b[0];
                    for (r, x) in out.iter_mut().zip(&a[..n]) {
                        *r = f(*x, y);
                    }
                }
                (0, 1) => {
                    let x = a[0];
                    for (r, y) in out.iter_mut().zip(&b[..n]) {
                        *r = f(x, *y);
                    }
                }
                _ => {
                    for (t, r) in out.iter_mut().enumerate() {
                        *r = f(a[t * ia], b[t * ib]);
                    }
                }
            }
        }
        match op {
            Binary::Add => rows(|x, y| x + y, a, ia, b, ib, out),
            Binary::Sub => rows(|x, y| x - y, a, ia, b, ib, out),
            Binary::Mul => rows(|x, y| x * y, a, ia, b, ib, out),
            Binary::Div => rows(|x, y| x / y, a, ia, b, ib, out),
            Binary::Max => rows(f32::max, a, ia, b, ib, out),
            Binary::Min => rows(f32::min, a, ia, b, ib, out),
        }
    }

    /// One row in place: `y[t] = y[t] ∘ other[t·io]` (`other ∘ y` unless
    /// `y_first`).
    #[inline(always)]
    pub fn binary_in_place(op: Binary, y_first: bool, other: &[f32], io: usize, y: &mut [f32]) {
        #[inline(always)]
        fn rows(f: impl Fn(f32, f32) -> f32, other: &[f32], io: usize, y: &mut [f32]) {
            let n = y.len();
            match io {
                1 => {
                    for (r, o) in y.iter_mut().zip(&other[..n]) {
                        *r = f(*r, *o);
                    }
                }
                0 => {
                    let o = other[0];
                    for r in y.iter_mut() {
                        *r = f(*r, o);
                    }
                }
                _ => {
                    for (t, r) in y.iter_mut().enumerate() {
                        *r = f(*r, other[t * io]);
                    }
                }
            }
        }
        macro_rules! go {
            ($f:expr) => {
                if y_first {
                    rows($f, other, io, y)
                } else {
                    rows(|y: f32, o: f32| $f(o, y), other, io, y)
                }
            };
        }
        match op {
            Binary::Add => go!(|x: f32, z: f32| x + z),
            Binary::Sub => go!(|x: f32, z: f32| x - z),
            Binary::Mul => go!(|x: f32, z: f32| x * z),
            Binary::Div => go!(|x: f32, z: f32| x / z),
            Binary::Max => go!(f32::max),
            Binary::Min => go!(f32::min),
        }
    }

    /// Softmax of one contiguous row.
    #[inline(always)]
    pub fn softmax(x: &[f32], out: &mut [f32]) {
        let m = max(x);
        for (o, v) in out.iter_mut().zip(x) {
            *o = fast_exp(v - m);
        }
        let sum = lanes_fold(out, 0.0, |v| v, |a, b| a + b);
        let inv = 1.0 / sum;
        out.iter_mut().for_each(|o| *o *= inv);
    }

    /// `(x - mean) · rsqrt(mean((x - mean)²) + eps)` of one contiguous
    /// row (`mean` = 0 unless `center`).
    #[inline(always)]
    pub fn norm(eps: f32, center: bool, x: &[f32], out: &mut [f32]) {
        let inv_n = 1.0 / x.len().max(1) as f32;
        let mean = if center {
            lanes_fold(x, 0.0, |v| v, |a, b| a + b) * inv_n
        } else {
            0.0
        };
        let ms = lanes_fold(x, 0.0, |v| (v - mean) * (v - mean), |a, b| a + b) * inv_n;
        let r = 1.0 / (ms + eps).sqrt();
        for (o, v) in out.iter_mut().zip(x) {
            *o = (v - mean) * r;
        }
    }

    /// `q = quantize(x · r)` (see [`crate::kernels::quantize`]).
    #[inline(always)]
    pub fn quantize_into(x: &[f32], r: f32, q: &mut [i8]) {
        for (o, v) in q.iter_mut().zip(x) {
            *o = quantize(*v, r);
        }
    }

    /// An int8 convolution's epilogue for one channel: `out = acc · f + b`.
    #[inline(always)]
    pub fn dequantize_bias(acc: &[i32], f: f32, b: f32, out: &mut [f32]) {
        for (o, a) in out.iter_mut().zip(acc) {
            *o = *a as f32 * f + b;
        }
    }

    /// An int8 product's epilogue for one row: `out = acc · (sa · ws)`.
    #[inline(always)]
    pub fn dequantize(acc: &[i32], sa: f32, ws: &[f32], out: &mut [f32]) {
        for ((o, a), w) in out.iter_mut().zip(acc).zip(ws) {
            *o = *a as f32 * (sa * w);
        }
    }
}

/// Declares each row kernel's dispatching entry point and, on x86_64, its
/// SSE4.1, AVX2 and AVX-512 copies of the plain source.
macro_rules! compiled {
    ($( $(#[$doc:meta])* fn $name:ident ( $($arg:ident : $ty:ty),* ) $(-> $ret:ty)? ; )*) => {
        #[cfg(target_arch = "x86_64")]
        mod sse41 {
            use super::*;
            $(
                #[target_feature(enable = "sse4.1")]
                pub(super) unsafe fn $name($($arg: $ty),*) $(-> $ret)? {
                    plain::$name($($arg),*)
                }
            )*
        }
        #[cfg(target_arch = "x86_64")]
        mod avx2 {
            use super::*;
            $(
                #[target_feature(enable = "avx2,fma")]
                pub(super) unsafe fn $name($($arg: $ty),*) $(-> $ret)? {
                    plain::$name($($arg),*)
                }
            )*
        }
        #[cfg(target_arch = "x86_64")]
        mod avx512 {
            use super::*;
            $(
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
                pub(super) unsafe fn $name($($arg: $ty),*) $(-> $ret)? {
                    plain::$name($($arg),*)
                }
            )*
        }
        $(
            $(#[$doc])*
            #[inline]
            pub fn $name(level: Level, $($arg: $ty),*) $(-> $ret)? {
                match level {
                    // SAFETY: `Level::Sse41` is only chosen where the CPU
                    // has SSE4.1.
                    #[cfg(target_arch = "x86_64")]
                    Level::Sse41 => unsafe { sse41::$name($($arg),*) },
                    // SAFETY: `Level::Avx2` is only chosen (`Kernels`) where
                    // the CPU has AVX2 and FMA.
                    #[cfg(target_arch = "x86_64")]
                    Level::Avx2 => unsafe { avx2::$name($($arg),*) },
                    // SAFETY: `Level::Avx512` is only chosen where the CPU
                    // has AVX-512 F, BW and VL, AVX2 and FMA.
                    #[cfg(target_arch = "x86_64")]
                    Level::Avx512 => unsafe { avx512::$name($($arg),*) },
                    _ => plain::$name($($arg),*),
                }
            }
        )*
    };
}

pub(crate) use compiled;

compiled! {
    /// `max |v|` of a row.
    fn abs_max(row: &[f32]) -> f32;
    /// `max v` of a row.
    fn max(row: &[f32]) -> f32;
    /// `out = f(x)`, or in place when `x` is `None`, fused or not ([`map`]
    /// picks `level`'s form).
    fn map_with(fused: bool, op: Unary, x: Option<&[f32]>, out: &mut [f32]);
    /// One row of a binary op.
    fn binary(op: Binary, a: &[f32], ia: usize, b: &[f32], ib: usize, out: &mut [f32]);
    /// One row of a binary op in place (a fused epilogue).
    fn binary_in_place(op: Binary, y_first: bool, other: &[f32], io: usize, y: &mut [f32]);
    /// Softmax of one row.
    fn softmax(x: &[f32], out: &mut [f32]);
    /// LayerNorm's (or RMSNorm's) core on one row.
    fn norm(eps: f32, center: bool, x: &[f32], out: &mut [f32]);
    /// An activation row to int8 with the reciprocal scale `r`.
    fn quantize_into(x: &[f32], r: f32, q: &mut [i8]);
    /// An int8 product's epilogue for one row.
    fn dequantize(acc: &[i32], sa: f32, ws: &[f32], out: &mut [f32]);
    /// An int8 convolution's epilogue for one channel.
    fn dequantize_bias(acc: &[i32], f: f32, b: f32, out: &mut [f32]);
}

/// `out = f(x)`, or in place when `x` is `None`: `level`'s copy, its
/// polynomial ops' multiply-adds fused where [`Level::fuses`].
#[inline]
pub fn map(level: Level, op: Unary, x: Option<&[f32]>, out: &mut [f32]) {
    map_with(level, level.fuses(), op, x, out)
}

impl Level {
    /// Whether this copy's polynomial maps ([`map`]) and depthwise taps
    /// ([`super::depthwise`]) fuse their multiply-adds (one rounding:
    /// `f32::mul_add`, the plain twins' `FUSED` forms): x86_64's AVX2 and
    /// AVX-512 copies, and aarch64's, where FMA is the baseline. Elsewhere
    /// a fused multiply-add is a library call. The other row kernels
    /// (softmax, norms, the int8 epilogues) stay unfused on every copy.
    pub fn fuses(self) -> bool {
        match self {
            Level::Avx2 | Level::Avx512 => true,
            Level::Plain | Level::Sse41 => cfg!(target_arch = "aarch64"),
        }
    }

    /// The copy this CPU runs best (`CLIP_EDGE_KERNELS=scalar`: the plain
    /// one), for work outside the engine (an image's resize).
    pub fn detect() -> Level {
        if std::env::var("CLIP_EDGE_KERNELS").is_ok_and(|v| v == "scalar") {
            return Level::Plain;
        }
        super::Kernels::simd().map_or(Level::Plain, |k| k.level)
    }

    /// Every copy this CPU runs, the plain one first.
    pub fn available() -> Vec<Level> {
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut v = vec![Level::Plain];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("sse4.1") {
                v.push(Level::Sse41);
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                v.push(Level::Avx2);
            }
            // The AVX-512 copies are compiled with AVX2 and FMA too.
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
            {
                v.push(Level::Avx512);
            }
        }
        v
    }

    /// The copy's name in `bench-kernels`.
    pub fn name(self) -> &'static str {
        match self {
            Level::Plain => "plain",
            Level::Sse41 => "sse4.1",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod long_rows {
    use super::*;

    /// Rows far past the vector widths (whole vector loops, not only
    /// tails) come out of every compiled copy as from the plain source.
    #[test]
    fn long_rows_equal_the_plain_source() {
        for n in [100usize, 1000, 3136, 12544] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 7919) % 1000) as f32 * 0.013 - 6.0)
                .collect();
            let acc: Vec<i32> = (0..n)
                .map(|i| ((i * 7919) % 100000) as i32 - 50000)
                .collect();
            for lv in tests::levels() {
                let (mut a, mut b) = (vec![0i8; n], vec![0i8; n]);
                quantize_into(lv, &x, 0.37, &mut a);
                plain::quantize_into(&x, 0.37, &mut b);
                assert_eq!(a, b, "quantize {lv:?} {n}");
                let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
                dequantize_bias(lv, &acc, 0.37, 0.5, &mut a);
                plain::dequantize_bias(&acc, 0.37, 0.5, &mut b);
                assert_eq!(a, b, "deq {lv:?} {n}");
            }
        }
    }
}
