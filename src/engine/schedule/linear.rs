//! The schedule's matrix products and convolutions, as data: their
//! geometry (offset tables built at load) and their weights in the
//! bundle's precision, int8 with a scale per output channel, f16 or f32.
//! Lowering makes every weight a row per output channel; an executor may
//! repack them for its kernels (the CPU engine's [`crate::engine::native`]
//! packs them into its kernel path's panels) and records that in
//! [`super::ir::Lowered::packed_for`].

use half::f16;

pub use super::blob::Blob;

/// How f32 weights that are exactly f16 values are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatWeights {
    /// As f32: the fastest products (no widening per use), twice the
    /// memory of f16. For fp32 bundles.
    F32,
    /// As f16 where that loses nothing (OpenAI's weights are fp16), else
    /// f32: half the memory.
    F16WhereExact,
}

/// f32 or f16 weights, `n × k`: a row per output channel, or in a CPU
/// kernel path's layout once packed ([`crate::kernels::Kernels::pack_f32`],
/// [`crate::kernels::Kernels::pack_f16`]).
#[derive(serde::Serialize, serde::Deserialize)]
pub enum Weights {
    F32(Blob<f32>),
    F16(Blob<f16>),
}

/// int8 weights: `q` as rows or packed
/// ([`crate::kernels::Kernels::pack_i8`]),
/// a scale per output channel.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Int8 {
    pub q: Blob<i8>,
    pub scale: Vec<f32>,
}

impl Int8 {
    pub fn bytes(&self) -> usize {
        self.q.len() + 4 * self.scale.len()
    }
}

/// How far an int8 weight may sit from its channel's grid (relative to the
/// channel's max |w|) and still be read as int8: the graph's dequantised
/// `q · s` is within a few f32 ulps of it; a real f32 weight is off by up
/// to `max|w| / 254`.
pub const INT8_GRID_TOL: f32 = 1e-5;

impl Weights {
    /// `n × k` f32 values as f16 when every one is exactly an f16 (as in
    /// OpenAI's fp16 checkpoints and in fp16 bundles: lossless), else f32.
    /// Every value is exactly an f16.
    pub fn f16_exact(w: &[f32]) -> bool {
        w.iter().all(|v| f16::from_f32(*v).to_f32() == *v)
    }

    /// `n × k` f32 values as rows: f16 when `float` allows it and every
    /// value is exactly an f16, else f32.
    pub fn rows(w: Vec<f32>, float: FloatWeights) -> Weights {
        if float == FloatWeights::F16WhereExact && Self::f16_exact(&w) {
            let h: Vec<f16> = w.iter().map(|v| f16::from_f32(*v)).collect();
            drop(w);
            Weights::F16(h.into())
        } else {
            Weights::F32(w.into())
        }
    }

    pub fn precision(&self) -> &'static str {
        match self {
            Weights::F32(_) => "f32",
            Weights::F16(_) => "f16",
        }
    }

    pub fn bytes(&self) -> usize {
        match self {
            Weights::F32(w) => 4 * w.len(),
            Weights::F16(w) => 2 * w.len(),
        }
    }
}

impl Int8 {
    /// `n × k` dequantised weights back as int8 rows, when every output
    /// channel lies on a symmetric int8 grid (`s = max|w| / 127`); else the
    /// values unchanged.
    pub fn recover(w: Vec<f32>, n: usize, k: usize) -> Result<Int8, Vec<f32>> {
        match recover_int8(&w, n, k) {
            Some((q, scale)) => Ok(Int8 { q: q.into(), scale }),
            None => Err(w),
        }
    }

    pub fn precision(&self) -> &'static str {
        "int8"
    }
}

fn recover_int8(w: &[f32], n: usize, k: usize) -> Option<(Vec<i8>, Vec<f32>)> {
    let mut q = Vec::with_capacity(n * k);
    let mut scale = Vec::with_capacity(n);
    for row in w.chunks(k.max(1)).take(n) {
        let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let s = amax / 127.0;
        if !s.is_finite() || row.iter().any(|v| !v.is_finite()) {
            return None;
        }
        for v in row {
            let r = if s > 0.0 {
                (v / s).round_ties_even()
            } else {
                0.0
            };
            if r.abs() > 127.0 || (r * s - v).abs() > INT8_GRID_TOL * amax {
                return None;
            }
            q.push(r as i8);
        }
        scale.push(s);
    }
    Some((q, scale))
}

/// int8 activation quantisation: the scale tensor's offset for each batch
/// and row.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct ActQuant {
    pub s_batch: Vec<usize>,
    pub s_m: Vec<usize>,
}

/// The right-hand side of a product.
#[derive(serde::Serialize, serde::Deserialize)]
pub enum Rhs {
    Float(Weights),
    /// An int8 layer: `a` is then the unquantised activation, quantised
    /// per row with the scales `ActQuant` finds.
    Int8(Int8, ActQuant),
    /// Another activation (attention): its offsets per batch, row, depth.
    Act {
        b_batch: Vec<usize>,
        b_n: Vec<usize>,
        b_k: Vec<usize>,
    },
}

/// `out[b][m][n] = Σ_k a[b][m][k] · rhs[b][n][k]`, each index spread over
/// any axes of its tensor through the offset tables built at load.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct MatMul {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a_batch: Vec<usize>,
    pub a_m: Vec<usize>,
    pub a_k: Vec<usize>,
    /// `a_k[t] == t`: each row of `a` is contiguous.
    pub a_k_unit: bool,
    pub rhs: Rhs,
    pub o_batch: Vec<usize>,
    pub o_m: Vec<usize>,
    pub o_n: Vec<usize>,
    /// `o_n[j] == j`: each output row is contiguous.
    pub o_n_unit: bool,
}

impl MatMul {
    /// Multiply-adds of one frame.
    pub fn macs(&self) -> usize {
        self.a_batch.len().max(1) * self.m * self.n * self.k
    }

    pub fn precision(&self) -> &'static str {
        match &self.rhs {
            Rhs::Float(w) => w.precision(),
            Rhs::Int8(w, _) => w.precision(),
            Rhs::Act { .. } => "f32",
        }
    }

    pub fn weight_bytes(&self) -> usize {
        match &self.rhs {
            Rhs::Float(w) => w.bytes(),
            Rhs::Int8(w, _) => w.bytes(),
            Rhs::Act { .. } => 0,
        }
    }

    /// Each output row is contiguous and follows the previous one: the
    /// threads write their rows of the result in place.
    pub fn out_rows_contiguous(&self) -> bool {
        self.o_n_unit && self.o_m.iter().enumerate().all(|(i, &o)| o == i * self.n)
    }
}

/// A convolution's weights. As lowering makes them: `Float` (f16 or f32
/// rows), `F32Rows` (f32 rows) or `Int8` (rows; the input quantised with
/// one scale for the whole tensor). Packed for a CPU kernel path, `Float`
/// holds panels (the patches are the product's left side), `F32Rows` and
/// `Int8` stay rows (the product's left side, the patches packed per
/// frame), and `Winograd` holds 3 × 3 weights transformed for Winograd's
/// products.
#[derive(serde::Serialize, serde::Deserialize)]
pub enum ConvWeights {
    Float(Weights),
    F32Rows(Blob<f32>),
    Int8(Int8),
    /// A 3 × 3 convolution's f32 weights transformed for Winograd's
    /// products (by the CPU engine's packing, never by lowering).
    Winograd(Blob<f32>),
}

/// A 2-D convolution over one NCHW image, OIHW weights, one group.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Conv {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub oh: usize,
    pub ow: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    pub pad: [usize; 2],
    pub weights: ConvWeights,
    pub bias: Vec<f32>,
}

impl Conv {
    /// Multiply-adds of one frame.
    pub fn macs(&self) -> usize {
        self.oh * self.ow * self.kk() * self.o
    }

    /// The length of one output channel's weights: `c · kh · kw`.
    pub fn kk(&self) -> usize {
        self.c * self.kernel[0] * self.kernel[1]
    }

    pub fn precision(&self) -> &'static str {
        match &self.weights {
            ConvWeights::Float(w) => w.precision(),
            ConvWeights::F32Rows(_) => "f32",
            ConvWeights::Winograd(_) => "f32-winograd",
            ConvWeights::Int8(w) => w.precision(),
        }
    }

    pub fn weight_bytes(&self) -> usize {
        4 * self.bias.len()
            + match &self.weights {
                ConvWeights::Float(w) => w.bytes(),
                ConvWeights::F32Rows(w) | ConvWeights::Winograd(w) => 4 * w.len(),
                ConvWeights::Int8(w) => w.bytes(),
            }
    }
}

/// A depthwise convolution over one NCHW image (a grouped convolution
/// with one group per input channel): output channel `j` reads input
/// channel `j / (o / c)` alone. Its weights, `kh · kw` per output
/// channel, are few next to the products': f32 at every precision.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Depthwise {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub oh: usize,
    pub ow: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    pub pad: [usize; 2],
    /// `o × kh · kw`, row-major.
    pub weights: Blob<f32>,
    pub bias: Vec<f32>,
}

impl Depthwise {
    /// Multiply-adds of one frame (taps in the padding included).
    pub fn macs(&self) -> usize {
        self.o * self.oh * self.ow * self.kernel[0] * self.kernel[1]
    }

    pub fn weight_bytes(&self) -> usize {
        4 * (self.bias.len() + self.weights.len())
    }
}
