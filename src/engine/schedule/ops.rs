//! The shapes of the schedule's element-wise, reduction, normalisation
//! and pooling ops, and the stride helpers lowering and the executors share.

pub use crate::kernels::elementwise::{Binary, Unary};

/// Row-major strides of `dims`.
pub fn strides_of(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// Strides of a tensor of `dims` read as if it had `out` (same rank,
/// numpy broadcasting): 0 along axes where it has size 1.
pub fn broadcast_strides(dims: &[usize], out: &[usize]) -> Vec<usize> {
    strides_of(dims)
        .into_iter()
        .zip(dims.iter().zip(out))
        .map(|(s, (d, o))| if *d == 1 && *o != 1 { 0 } else { s })
        .collect()
}

/// Most axes any op's tensors have (`for_each_row`'s index array).
pub const MAX_RANK: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Reduce {
    Sum,
    Max,
    Min,
    MeanOfSquares,
    /// `max |x|` (a `Max` of an `Abs`, fused).
    AbsMax,
}

/// A tensor seen as `[outer, n, inner]` around one axis.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct AroundAxis {
    pub outer: usize,
    pub n: usize,
    pub inner: usize,
}

impl AroundAxis {
    pub fn new(dims: &[usize], axis: usize) -> Self {
        AroundAxis {
            outer: dims[..axis].iter().product(),
            n: dims[axis],
            inner: dims[axis + 1..].iter().product(),
        }
    }
}

/// Whether `strides` are `dims`' row-major strides (allocation-free).
pub fn is_row_major(dims: &[usize], strides: &[usize]) -> bool {
    let mut expect = 1usize;
    for (d, s) in dims.iter().zip(strides).rev() {
        if *d != 1 && *s != expect {
            return false;
        }
        expect = expect.saturating_mul(*d);
    }
    dims.len() == strides.len()
}

/// An average (or sum) pool over NCHW, padding ignored in the count.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Pool2d {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub k: [usize; 2],
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    pub normalize: bool,
    pub count_include_pad: bool,
}
