//! The schedule the executors run: a static list of steps over value ids
//! (arena tensors) and constants, as [`super::lower`] makes it from a
//! graph, [`super::fuse`] and [`super::fold`] rewrite it and
//! [`super::plan`] places it in one arena. The CPU engine
//! ([`crate::engine::native`]) and the CUDA backend both run it.

use super::linear::{Conv, Depthwise, MatMul, Rhs};
use super::ops::{AroundAxis, Binary, Pool2d, Reduce, Unary};

/// Where an op reads a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Operand {
    /// An arena tensor (value id).
    Val(usize),
    /// A constant (index into the constants).
    Const(usize),
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct CopyPart {
    pub src: Operand,
    pub dims: Vec<usize>,
    pub src_off: usize,
    pub ss: Vec<usize>,
    pub dst_off: usize,
    pub sd: Vec<usize>,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub enum Kind {
    Binary {
        op: Binary,
        dims: Vec<usize>,
        a: Operand,
        sa: Vec<usize>,
        b: Operand,
        sb: Vec<usize>,
    },
    Unary {
        op: Unary,
        x: Operand,
    },
    Reduce {
        op: Reduce,
        dims: Vec<usize>,
        sx: Vec<usize>,
        so: Vec<usize>,
        count: usize,
        x: Operand,
    },
    Softmax {
        around: AroundAxis,
        x: Operand,
    },
    RmsNorm {
        around: AroundAxis,
        eps: f32,
        /// LayerNorm's core: `x - mean(x)` normalised.
        center: bool,
        x: Operand,
    },
    Copy {
        parts: Vec<CopyPart>,
    },
    MatMul {
        mm: Box<MatMul>,
        a: Operand,
        b: Option<Operand>,
        s: Option<Operand>,
    },
    Conv {
        conv: Box<Conv>,
        x: Operand,
        s: Option<Operand>,
    },
    Depthwise {
        dw: Box<Depthwise>,
        x: Operand,
    },
    Pool {
        pool: Pool2d,
        x: Operand,
    },
}

impl Kind {
    /// The class of op, for logs and `bench --json`.
    pub fn class(&self) -> &'static str {
        match self {
            Kind::Binary { .. } | Kind::Unary { .. } => "elementwise",
            Kind::Reduce { .. } => "reduce",
            Kind::Softmax { .. } => "softmax",
            Kind::RmsNorm { .. } => "norm",
            Kind::Copy { .. } => "copy",
            Kind::MatMul { mm, .. } => match mm.rhs {
                Rhs::Act { .. } => "matmul-activations",
                Rhs::Float(_) | Rhs::Int8(..) => "linear",
            },
            Kind::Conv { .. } => "conv",
            Kind::Depthwise { .. } => "depthwise",
            Kind::Pool { .. } => "pool",
        }
    }

    pub fn inputs(&self) -> Vec<Operand> {
        match self {
            Kind::Binary { a, b, .. } => vec![*a, *b],
            Kind::Unary { x, .. }
            | Kind::Reduce { x, .. }
            | Kind::Softmax { x, .. }
            | Kind::RmsNorm { x, .. }
            | Kind::Depthwise { x, .. }
            | Kind::Pool { x, .. } => vec![*x],
            Kind::Copy { parts } => parts.iter().map(|p| p.src).collect(),
            Kind::MatMul { a, b, s, .. } => [Some(*a), *b, *s].into_iter().flatten().collect(),
            Kind::Conv { x, s, .. } => [Some(*x), *s].into_iter().flatten().collect(),
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Step {
    pub name: String,
    pub kind: Kind,
    pub out: usize,
    /// Element-wise ops fused into this one's epilogue ([`super::fuse`]):
    /// applied in order to each block of the output as it is written.
    pub posts: Vec<Post>,
}

impl Step {
    /// Every tensor the step reads, its fused epilogue's included.
    pub fn inputs(&self) -> Vec<Operand> {
        let mut v = self.kind.inputs();
        v.extend(self.posts.iter().filter_map(|p| match p {
            Post::Binary { other, .. } => Some(*other),
            Post::Unary(_) => None,
        }));
        v
    }
}

/// An element-wise op applied in place to a producer's output as it is
/// written: `y = f(y)`, or `y = y ∘ other` (`other ∘ y` unless `y_first`),
/// `other` read through its broadcast strides over the output's `dims`.
#[derive(serde::Serialize, serde::Deserialize)]
pub enum Post {
    Unary(Unary),
    Binary {
        op: Binary,
        y_first: bool,
        dims: Vec<usize>,
        other: Operand,
        so: Vec<usize>,
    },
}

/// The lowered graph, before arena planning.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Lowered {
    pub steps: Vec<Step>,
    /// Length of each value id.
    pub lens: Vec<usize>,
    pub consts: Vec<Vec<f32>>,
    pub input: usize,
    pub output: usize,
    /// The CPU kernel path (`Kernels::name`) whose layout the weights are
    /// packed in; `None`: rows, as lowering makes them.
    pub packed_for: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "the native engine cannot run node {node:?} ({op}): {why} (`--engine tract` runs this bundle)"
)]
pub struct LowerError {
    pub node: String,
    pub op: String,
    pub why: String,
}

/// Drops the steps whose output nothing needed reads.
pub fn prune(steps: &mut Vec<Step>, values: usize, output: usize) {
    let mut needed = vec![false; values];
    needed[output] = true;
    let mut keep = vec![false; steps.len()];
    for (i, s) in steps.iter().enumerate().rev() {
        if needed[s.out] {
            keep[i] = true;
            for o in s.inputs() {
                if let Operand::Val(v) = o {
                    needed[v] = true;
                }
            }
        }
    }
    let mut k = keep.iter();
    steps.retain(|_| *k.next().unwrap());
}
