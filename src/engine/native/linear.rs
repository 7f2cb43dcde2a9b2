//! Matrix products with their packed weights: `EinSum` (linear layers, 1×1
//! convolutions, attention) and 2-D convolutions (im2col, then one product).
//! Weights are packed once at load in the bundle's precision: int8 with a
//! scale per output channel (in the kernel path's own layout), f16, or f32
//! (a row per output channel). An int8 layer quantises its activation rows
//! as tract's optimised plan does (`q = clamp(round_half_even(x · (1/s)),
//! ±127)`; the graph as written divides: a rounding tie can differ),
//! multiplies in integers and scales the i32 sums by `s · w_scale` in the
//! epilogue. Large products are split by rows over the thread pool.

use half::f16;

use crate::kernels::elementwise::{self as ew, Binary};
use crate::kernels::pool::{Columns, Pool, Split, MIN_PARALLEL_MACS};
use crate::kernels::{float_panels, packed_f32_len, packed_i8_len, quantize, Kernels};

pub use super::blob::Blob;
use super::winograd;

/// A fused epilogue ([`super::fuse`]) on one block of an op's output,
/// `first` the block's first value's index in the output.
pub type PostFn<'a> = dyn Fn(usize, &mut [f32]) + Sync + 'a;

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

/// f32 or f16 weights, `n × k`, in the kernel path's layout
/// ([`Kernels::pack_f32`], [`Kernels::pack_f16`]).
#[derive(serde::Serialize, serde::Deserialize)]
pub enum Weights {
    F32(Blob<f32>),
    F16(Blob<f16>),
}

/// int8 weights: `q` in the kernel path's layout ([`Kernels::pack_i8`]),
/// a scale per output channel.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Int8 {
    pub q: Blob<i8>,
    pub scale: Vec<f32>,
}

impl Int8 {
    fn bytes(&self) -> usize {
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

    pub fn new(w: Vec<f32>, n: usize, k: usize, kernels: &Kernels, float: FloatWeights) -> Weights {
        if float == FloatWeights::F16WhereExact && Self::f16_exact(&w) {
            let h: Vec<f16> = w.iter().map(|v| f16::from_f32(*v)).collect();
            drop(w);
            Weights::F16(kernels.pack_f16(&h, n, k).into())
        } else {
            Weights::F32(kernels.pack_f32(&w, n, k).into())
        }
    }

    pub fn precision(&self) -> &'static str {
        match self {
            Weights::F32(_) => "f32",
            Weights::F16(_) => "f16",
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Weights::F32(w) => 4 * w.len(),
            Weights::F16(w) => 2 * w.len(),
        }
    }

    /// `c = x · wᵀ` for `m` rows of `x` (`m × k`) on the packed weights.
    fn gemm(&self, kern: &Kernels, x: &[f32], m: usize, n: usize, k: usize, c: &mut [f32]) {
        self.gemm_from(kern, x, 0, m, n, k, c)
    }

    /// As [`Weights::gemm`] for output channels `first..first + n`, `first`
    /// a multiple of 16 (a whole panel: every float layout holds channel
    /// `j`'s panel from `j · k` on).
    #[allow(clippy::too_many_arguments)]
    fn gemm_from(
        &self,
        kern: &Kernels,
        x: &[f32],
        first: usize,
        m: usize,
        n: usize,
        k: usize,
        c: &mut [f32],
    ) {
        match self {
            Weights::F32(w) => kern.gemm_f32p(x, &w[first * k..], m, n, k, c),
            Weights::F16(w) => kern.gemm_f16p(x, &w[first * k..], m, n, k, c),
        }
    }
}

impl Int8 {
    /// `n × k` dequantised weights back as int8, when every output channel
    /// lies on a symmetric int8 grid (`s = max|w| / 127`); else the values
    /// unchanged.
    /// `kernels`: pack for them; `None`: keep plain rows (a convolution's
    /// weights, the left side of its product).
    pub fn recover(
        w: Vec<f32>,
        n: usize,
        k: usize,
        kernels: Option<&Kernels>,
    ) -> Result<Int8, Vec<f32>> {
        match recover_int8(&w, n, k) {
            Some((q, scale)) => Ok(Int8::from_parts(q, scale, n, k, kernels)),
            None => Err(w),
        }
    }

    pub fn precision(&self) -> &'static str {
        "int8"
    }

    /// `n × k` int8 weights (a row per output channel) with their scales,
    /// packed for `kernels` (or kept as rows).
    pub fn from_parts(
        q: Vec<i8>,
        scale: Vec<f32>,
        n: usize,
        k: usize,
        kernels: Option<&Kernels>,
    ) -> Int8 {
        match kernels {
            Some(kern) => Int8 {
                q: kern.pack_i8(&q, n, k).into(),
                scale,
            },
            None => Int8 { q: q.into(), scale },
        }
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

/// Per-frame work buffers, sized at load for the largest op.
#[derive(Default)]
pub struct Scratch {
    pub pa: Vec<f32>,
    pub pb: Vec<f32>,
    /// `pb` in the kernel path's packed layout.
    pub pp: Vec<f32>,
    pub c: Vec<f32>,
    pub qa: Vec<i8>,
    pub qx: Vec<i8>,
    /// `qa` in the kernel path's packed layout.
    pub qp: Vec<i8>,
    pub acc: Vec<i32>,
}

/// Lengths of the scratch buffers one op needs.
#[derive(Debug, Default, Clone, Copy)]
pub struct ScratchSize {
    pub pa: usize,
    pub pb: usize,
    pub pp: usize,
    pub c: usize,
    pub qa: usize,
    pub qx: usize,
    pub qp: usize,
    pub acc: usize,
}

impl ScratchSize {
    pub fn max(self, o: ScratchSize) -> ScratchSize {
        ScratchSize {
            pa: self.pa.max(o.pa),
            pb: self.pb.max(o.pb),
            pp: self.pp.max(o.pp),
            c: self.c.max(o.c),
            qa: self.qa.max(o.qa),
            qx: self.qx.max(o.qx),
            qp: self.qp.max(o.qp),
            acc: self.acc.max(o.acc),
        }
    }
}

impl Scratch {
    /// Allocated once, at load.
    pub fn new(n: ScratchSize) -> Scratch {
        Scratch {
            pa: vec![0.0; n.pa],
            pb: vec![0.0; n.pb],
            pp: vec![0.0; n.pp],
            c: vec![0.0; n.c],
            qa: vec![0; n.qa],
            qx: vec![0; n.qx],
            qp: vec![0; n.qp],
            acc: vec![0; n.acc],
        }
    }

    pub fn bytes(&self) -> usize {
        4 * (self.pa.len() + self.pb.len() + self.pp.len() + self.c.len() + self.acc.len())
            + self.qa.len()
            + self.qx.len()
            + self.qp.len()
    }
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

    pub fn scratch(&self) -> ScratchSize {
        let (m, n, k) = (self.m, self.n, self.k);
        match &self.rhs {
            Rhs::Int8(..) => ScratchSize {
                qa: m * k,
                acc: m * n,
                ..Default::default()
            },
            Rhs::Float(..) => ScratchSize {
                pa: m * k,
                c: m * n,
                ..Default::default()
            },
            // Room for every batch at once ([`MatMul::run_batches`]).
            Rhs::Act { .. } => {
                let batches = self.a_batch.len().max(1);
                ScratchSize {
                    pa: batches * m * k,
                    pb: batches * (n * k + packed_f32_len(n, k)),
                    pp: packed_f32_len(n, k),
                    c: m * n,
                    ..Default::default()
                }
            }
        }
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

    /// A product of two activations over several batches (attention's
    /// heads) whose outputs follow each other: the threads split the
    /// batches, each gathering, packing and multiplying its own (one head is
    /// too small to split by rows). `false`: not such a product, nothing
    /// done.
    #[allow(clippy::too_many_arguments)]
    fn run_batches(
        &self,
        kern: &Kernels,
        pool: &Pool,
        a: &[f32],
        b: &[f32],
        out: &mut [f32],
        scr: &mut Scratch,
        post: &PostFn<'_>,
    ) -> bool {
        let Rhs::Act { b_batch, b_n, b_k } = &self.rhs else {
            return false;
        };
        let (m, n, k, batches) = (self.m, self.n, self.k, self.a_batch.len());
        let each = m * n;
        let in_order = self.o_batch.iter().enumerate().all(|(i, &o)| o == i * each);
        if batches < 2 || each * k == 0 || !in_order || !self.out_rows_contiguous() {
            return false;
        }
        let plen = packed_f32_len(n, k);
        pool.rows3(
            batches * each * k,
            MIN_PARALLEL_MACS,
            batches,
            1,
            Split::new(&mut out[..batches * each], each),
            Split::new(&mut scr.pa[..batches * m * k], m * k),
            Split::new(&mut scr.pb[..batches * (n * k + plen)], n * k + plen),
            &|b0, outs, pas, pbs| {
                let blocks = outs
                    .chunks_exact_mut(each)
                    .zip(pas.chunks_exact_mut(m * k))
                    .zip(pbs.chunks_exact_mut(n * k + plen));
                for (i, ((o, pa), pb)) in blocks.enumerate() {
                    let bi = b0 + i;
                    for (mi, row) in pa.chunks_exact_mut(k).enumerate() {
                        self.gather_a(a, self.a_batch[bi], mi, row, |v| v);
                    }
                    let (rows, packed) = pb.split_at_mut(n * k);
                    for (ni, row) in rows.chunks_exact_mut(k).enumerate() {
                        let base = b_batch[bi] + b_n[ni];
                        for (d, &ko) in row.iter_mut().zip(b_k) {
                            *d = b[base + ko];
                        }
                    }
                    kern.pack_f32_into(rows, n, k, packed);
                    kern.gemm_f32p(pa, packed, m, n, k, o);
                    post(bi * each, o);
                }
            },
        );
        true
    }

    /// A linear layer of few rows (a ViT's tokens) on several threads: the
    /// threads split the output channels (each reads only its share of the
    /// weights, and every thread gets whole tiles of rows), after the rows
    /// are gathered (and quantised) and before the epilogue, each split by
    /// rows. `false`: not such a product, nothing done.
    #[allow(clippy::too_many_arguments)]
    fn run_columns(
        &self,
        kern: &Kernels,
        pool: &Pool,
        a: &[f32],
        s: &[f32],
        out: &mut [f32],
        scr: &mut Scratch,
        post: &PostFn<'_>,
    ) -> bool {
        let (m, n, k) = (self.m, self.n, self.k);
        let per = pool.per_thread(n, COLUMN_BLOCK);
        let fits = pool.threads() > 1
            && self.a_batch.len() == 1
            && self.o_batch == [0]
            && m * n * k >= MIN_PARALLEL_MACS
            && (1..=COLUMN_SPLIT_MAX_ROWS).contains(&m)
            && k > 0
            && per < n
            && self.out_rows_contiguous()
            && matches!(self.rhs, Rhs::Int8(..) | Rhs::Float(_));
        if !fits {
            return false;
        }
        let ab = self.a_batch[0];
        let blocks = n.div_ceil(per);
        let block = |b: usize| (b * per, ((b + 1) * per).min(n));
        let out = &mut out[..m * n];
        match &self.rhs {
            Rhs::Int8(w, aq) => {
                let scale = |mi: usize| s[aq.s_batch[0] + aq.s_m[mi]];
                let qa = &mut scr.qa[..m * k];
                pool.rows(m * k, 0, qa, m, k, 1, &|r0, rows| {
                    for (i, row) in rows.chunks_exact_mut(k).enumerate() {
                        let r = 1.0 / scale(r0 + i);
                        if self.a_k_unit {
                            let base = ab + self.a_m[r0 + i];
                            ew::quantize_into(kern.level, &a[base..base + k], r, row);
                        } else {
                            self.gather_a(a, ab, r0 + i, row, |v| quantize(v, r));
                        }
                    }
                });
                let qa: &[i8] = qa;
                let panel = kern.i8_panel_len(k);
                pool.rows(
                    m * n * k,
                    0,
                    &mut scr.acc[..m * n],
                    n,
                    m,
                    COLUMN_BLOCK,
                    &|n0, acc| {
                        let nb = acc.len() / m;
                        kern.gemm_i8(qa, &w.q[n0 / 16 * panel..], m, nb, k, acc);
                    },
                );
                let acc: &[i32] = &scr.acc[..m * n];
                pool.rows(m * n, 0, out, m, n, 1, &|r0, rows| {
                    for (i, row) in rows.chunks_exact_mut(n).enumerate() {
                        let sa = scale(r0 + i);
                        for b in 0..blocks {
                            let (n0, n1) = block(b);
                            let nb = n1 - n0;
                            let part = &acc[m * n0 + (r0 + i) * nb..][..nb];
                            ew::dequantize(
                                kern.level,
                                part,
                                sa,
                                &w.scale[n0..n1],
                                &mut row[n0..n1],
                            );
                        }
                    }
                    post(r0 * n, rows);
                });
            }
            Rhs::Float(w) => {
                let pa = &mut scr.pa[..m * k];
                pool.rows(m * k, 0, pa, m, k, 1, &|r0, rows| {
                    for (i, row) in rows.chunks_exact_mut(k).enumerate() {
                        self.gather_a(a, ab, r0 + i, row, |v| v);
                    }
                });
                let pa: &[f32] = pa;
                pool.rows(
                    m * n * k,
                    0,
                    &mut scr.c[..m * n],
                    n,
                    m,
                    COLUMN_BLOCK,
                    &|n0, c| {
                        w.gemm_from(kern, pa, n0, m, c.len() / m, k, c);
                    },
                );
                let c: &[f32] = &scr.c[..m * n];
                pool.rows(m * n, 0, out, m, n, 1, &|r0, rows| {
                    for (i, row) in rows.chunks_exact_mut(n).enumerate() {
                        for b in 0..blocks {
                            let (n0, n1) = block(b);
                            let nb = n1 - n0;
                            row[n0..n1].copy_from_slice(&c[m * n0 + (r0 + i) * nb..][..nb]);
                        }
                    }
                    post(r0 * n, rows);
                });
            }
            Rhs::Act { .. } => unreachable!("checked above"),
        }
        true
    }

    /// Row `mi` of `a` (batch offset `ab`) into `row`.
    fn gather_a<T>(&self, a: &[f32], ab: usize, mi: usize, row: &mut [T], f: impl Fn(f32) -> T) {
        let base = ab + self.a_m[mi];
        if self.a_k_unit {
            for (d, v) in row.iter_mut().zip(&a[base..base + self.k]) {
                *d = f(*v);
            }
        } else {
            for (d, &ko) in row.iter_mut().zip(&self.a_k) {
                *d = f(a[base + ko]);
            }
        }
    }

    /// `b`: the right-hand activation (or empty); `s`: the activation
    /// scales of an int8 layer (or empty). The threads each take a block of
    /// rows through the whole op: gathering (and quantising) their rows of
    /// `a`, the product, and the epilogue into `out` when its rows are
    /// contiguous (else the caller scatters them after); then `post`, the
    /// fused epilogue, on the same rows (or on the whole output after the
    /// scatter).
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        kern: &Kernels,
        pool: &Pool,
        a: &[f32],
        b: &[f32],
        s: &[f32],
        out: &mut [f32],
        scr: &mut Scratch,
        post: &PostFn<'_>,
    ) {
        let (m, n, k) = (self.m, self.n, self.k);
        let direct = self.out_rows_contiguous();
        let rows_of = |len: usize| len.checked_div(n).unwrap_or(0);
        if self.run_batches(kern, pool, a, b, out, scr, post)
            || self.run_columns(kern, pool, a, s, out, scr, post)
        {
            return;
        }
        for (bi, (&ab, &ob)) in self.a_batch.iter().zip(&self.o_batch).enumerate() {
            let dst_rows = match direct {
                true => Split::new(&mut out[ob..ob + m * n], n),
                false => Split::empty(),
            };
            if let Rhs::Int8(w, aq) = &self.rhs {
                // Not direct: the i32 sums stay in `acc`, scattered below
                // (an int8 product has no `c` scratch).
                let scale = |mi: usize| s[aq.s_batch[bi] + aq.s_m[mi]];
                pool.rows3(
                    m * n * k,
                    MIN_PARALLEL_MACS,
                    m,
                    2,
                    Split::new(&mut scr.qa[..m * k], k),
                    Split::new(&mut scr.acc[..m * n], n),
                    dst_rows,
                    &|r0, qa, acc, o| {
                        let rows = rows_of(acc.len());
                        for (i, row) in qa.chunks_exact_mut(k.max(1)).take(rows).enumerate() {
                            let r = 1.0 / scale(r0 + i);
                            if self.a_k_unit {
                                let base = ab + self.a_m[r0 + i];
                                ew::quantize_into(kern.level, &a[base..base + k], r, row);
                            } else {
                                self.gather_a(a, ab, r0 + i, row, |v| quantize(v, r));
                            }
                        }
                        kern.gemm_i8(qa, &w.q, rows, n, k, acc);
                        for (i, (o, acc)) in o
                            .chunks_exact_mut(n.max(1))
                            .zip(acc.chunks_exact(n.max(1)))
                            .enumerate()
                        {
                            ew::dequantize(kern.level, acc, scale(r0 + i), &w.scale, o);
                        }
                        if !o.is_empty() {
                            post(ob + r0 * n, o);
                        }
                    },
                );
                if !direct {
                    for mi in 0..m {
                        let sa = scale(mi);
                        let base = ob + self.o_m[mi];
                        for ni in 0..n {
                            out[base + self.o_n[ni]] =
                                scr.acc[mi * n + ni] as f32 * (sa * w.scale[ni]);
                        }
                    }
                }
                continue;
            }
            let c_rows = match direct {
                true => Split::empty(),
                false => Split::new(&mut scr.c[..m * n], n),
            };
            if let Rhs::Act { b_batch, b_n, b_k } = &self.rhs {
                for (ni, row) in scr.pb[..n * k]
                    .chunks_exact_mut(k.max(1))
                    .enumerate()
                    .take(n)
                {
                    let base = b_batch[bi] + b_n[ni];
                    for (d, &ko) in row.iter_mut().zip(b_k) {
                        *d = b[base + ko];
                    }
                }
            }
            let pb: &[f32] = match &self.rhs {
                Rhs::Act { .. } => {
                    let pp = &mut scr.pp[..packed_f32_len(n, k)];
                    kern.pack_f32_into(&scr.pb[..n * k], n, k, pp);
                    pp
                }
                _ => &[],
            };
            pool.rows3(
                m * n * k,
                MIN_PARALLEL_MACS,
                m,
                2,
                Split::new(&mut scr.pa[..m * k], k),
                c_rows,
                dst_rows,
                &|r0, pa, c, o| {
                    let in_place = !o.is_empty();
                    let dst = if in_place { o } else { c };
                    let rows = rows_of(dst.len());
                    for (i, row) in pa.chunks_exact_mut(k.max(1)).take(rows).enumerate() {
                        self.gather_a(a, ab, r0 + i, row, |v| v);
                    }
                    match &self.rhs {
                        Rhs::Float(w) => w.gemm(kern, pa, rows, n, k, dst),
                        Rhs::Act { .. } => kern.gemm_f32p(pa, pb, rows, n, k, dst),
                        Rhs::Int8(..) => unreachable!("int8 products run above"),
                    }
                    if in_place {
                        post(ob + r0 * n, dst);
                    }
                },
            );
            if !direct {
                for mi in 0..m {
                    let base = ob + self.o_m[mi];
                    for ni in 0..n {
                        out[base + self.o_n[ni]] = scr.c[mi * n + ni];
                    }
                }
            }
        }
        if !direct {
            post(0, out);
        }
    }
}

/// Output channels of one block when a product splits its channels over
/// the threads (a multiple of every kernel path's panel: 16).
const COLUMN_BLOCK: usize = 32;

/// Products of at most this many rows split their output channels over the
/// threads instead of their rows.
const COLUMN_SPLIT_MAX_ROWS: usize = 256;

/// Pixels of one packed panel of a convolution's patches (the int8
/// kernels' panel width).
const PIXEL_PANEL: usize = 16;
// Every path's packed panels are that wide (int8 and float alike).
const _: () = assert!(
    PIXEL_PANEL == crate::kernels::group_panels::PANEL
        && PIXEL_PANEL == crate::kernels::float_panels::PANEL
);

/// What one block of a float convolution by pixels may take of a core's
/// cache: its patches and its product (a quarter of a 1 MiB L2).
const FLOAT_BLOCK_BYTES: usize = 256 * 1024;

/// The fewest pixels a block of a float convolution takes, cache or not:
/// each block calls the bias and the fused epilogue once per output
/// channel, and below this those calls cost more than the cache saves
/// (RN50 fp32 measured with 32, 256, 512 and whole images:
/// docs/benchmarks.md, "What the runs say").
const FLOAT_BLOCK_MIN_PIXELS: usize = 256;

/// Element-wise work below this many values runs on the caller alone.
const MIN_PARALLEL_ELEMS: usize = 1 << 14;

/// A convolution's weights: f16 (packed: the patches are the product's
/// left side), f32 rows or int8 rows (the product's left side, the patches
/// packed per frame), int8 with the input quantised with one scale for the
/// whole tensor, or f32 transformed for Winograd's 3 × 3 products.
#[derive(serde::Serialize, serde::Deserialize)]
pub enum ConvWeights {
    Float(Weights),
    F32Rows(Blob<f32>),
    Int8(Int8),
    /// A 3 × 3 convolution's f32 weights as [`winograd::weights`] made them.
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

    fn kk(&self) -> usize {
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

    pub fn scratch(&self) -> ScratchSize {
        let (p, kk) = (self.oh * self.ow, self.kk());
        match self.weights {
            // Room for either int8 path (by channels, or by pixel panels).
            ConvWeights::Int8(_) => {
                let padded = p.div_ceil(PIXEL_PANEL) * PIXEL_PANEL;
                ScratchSize {
                    qa: if self.pointwise() { 0 } else { kk * padded },
                    qx: self.c * self.h * self.w,
                    qp: packed_i8_len(p, kk),
                    acc: padded * self.o,
                    ..Default::default()
                }
            }
            // The blocked paths split these by output rows (only each
            // thread's first block of them is touched).
            ConvWeights::Float(_) => ScratchSize {
                pa: p * kk,
                c: p * self.o,
                ..Default::default()
            },
            ConvWeights::Winograd(_) => {
                let (v, m) = winograd::scratch_per_tile_row(self);
                let rows = self.oh.div_ceil(2);
                ScratchSize {
                    pa: rows * v,
                    c: rows * m,
                    ..Default::default()
                }
            }
            ConvWeights::F32Rows(_) => ScratchSize {
                pa: if self.pointwise() { 0 } else { kk * p },
                // A row's pixels and a panel's padding, per output row; at
                // least the whole image packed (the split by channels).
                pp: packed_f32_len(p, kk).max(self.oh * (self.ow + PIXEL_PANEL - 1) * kk),
                c: p * self.o,
                ..Default::default()
            },
        }
    }

    /// Output pixels of one block when the threads split a convolution by
    /// pixels: whole packed panels (16) and whole output rows.
    fn pixel_block(&self) -> usize {
        let (a, mut b) = (PIXEL_PANEL, self.ow.max(1));
        let mut g = a;
        while b != 0 {
            (g, b) = (b, g % b);
        }
        PIXEL_PANEL / g * self.ow.max(1)
    }

    /// The int8 path split by output pixels on several threads: each thread
    /// quantises its share of the input, builds, packs and multiplies its
    /// pixels' patches against every output channel, and writes its pixels
    /// of each NCHW plane, epilogue included. A chain of convolutions so
    /// keeps each thread on the pixels it wrote (no cache lines passed
    /// between cores at each step, as splitting by channels does). `false`:
    /// too few pixels for every thread, nothing done.
    #[allow(clippy::too_many_arguments)]
    fn int8_by_pixels(
        &self,
        kern: &Kernels,
        pool: &Pool,
        w: &Int8,
        x: &[f32],
        sa: f32,
        out: &mut [f32],
        scr: &mut Scratch,
        post: &PostFn<'_>,
    ) -> bool {
        let (p, kk, o, lv) = (self.oh * self.ow, self.kk(), self.o, kern.level);
        let panels = p.div_ceil(PIXEL_PANEL);
        let align = self.pixel_block() / PIXEL_PANEL;
        if pool.threads() < 2
            || pool.per_thread(panels, align) >= panels
            || p * kk * o < MIN_PARALLEL_MACS
        {
            return false;
        }
        let (c, hw) = (self.c, self.h * self.w);
        // The input by the same kind of blocks of its own pixels.
        let in_panels = hw.div_ceil(PIXEL_PANEL);
        let in_align = {
            let (mut g, mut b) = (PIXEL_PANEL, self.w.max(1));
            while b != 0 {
                (g, b) = (b, g % b);
            }
            self.w.max(1) / g
        };
        let r = 1.0 / sa;
        pool.split_columns(
            c * hw,
            0,
            in_panels,
            PIXEL_PANEL,
            in_align,
            Split::<()>::empty(),
            Split::<()>::empty(),
            Split::<()>::empty(),
            Columns {
                buf: &mut scr.qx[..c * hw],
                rows: c,
                row_len: hw,
            },
            &|_, _, _, _, mut cols| {
                let j0 = cols.first();
                for ch in 0..c {
                    let q = cols.row(ch);
                    ew::quantize_into(lv, &x[ch * hw + j0..ch * hw + j0 + q.len()], r, q);
                }
            },
        );
        let qx: &[i8] = &scr.qx[..c * hw];
        let pointwise = self.pointwise();
        let panel_len = kern.i8_panel_len(kk);
        let patches = if pointwise { 0 } else { PIXEL_PANEL * kk };
        pool.split_columns(
            p * kk * o,
            0,
            panels,
            PIXEL_PANEL,
            align,
            Split::new(&mut scr.qa[..panels * patches], patches),
            Split::new(&mut scr.qp[..panels * panel_len], panel_len),
            Split::new(&mut scr.acc[..panels * PIXEL_PANEL * o], PIXEL_PANEL * o),
            Columns {
                buf: &mut out[..o * p],
                rows: o,
                row_len: p,
            },
            &|_, qa, qp, acc, mut planes| {
                let j0 = planes.first();
                let nb = planes.row(0).len();
                if pointwise {
                    kern.pack_i8_cols(qx, p, j0, nb, kk, qp);
                } else {
                    let cols = &mut qa[..kk * nb];
                    self.im2col_part(qx, 0, j0, nb, cols);
                    kern.pack_i8_cols(cols, nb, 0, nb, kk, qp);
                }
                let acc = &mut acc[..o * nb];
                kern.gemm_i8(&w.q, qp, o, nb, kk, acc);
                for (oc, acc) in acc.chunks_exact(nb.max(1)).enumerate() {
                    let plane = planes.row(oc);
                    ew::dequantize_bias(lv, acc, sa * w.scale[oc], self.bias[oc], plane);
                    post(oc * p + j0, plane);
                }
            },
        );
        true
    }

    /// Pixels of one block of the float paths by pixels: whole pairs of
    /// panels (the kernels' widest tile, 32 pixels), as many as keep a
    /// block's patches and products (`(c · kh · kw + o)` values a pixel)
    /// within [`FLOAT_BLOCK_BYTES`], and at least
    /// [`FLOAT_BLOCK_MIN_PIXELS`].
    fn float_block(&self) -> usize {
        let pair = 2 * PIXEL_PANEL;
        let per_pixel = 4 * (self.kk() + self.o);
        (FLOAT_BLOCK_BYTES / per_pixel.max(1)).max(FLOAT_BLOCK_MIN_PIXELS) / pair * pair
    }

    /// The float paths by output pixels, in blocks that stay in the
    /// core's cache: each block's patches are built (and for weights kept
    /// as rows, packed), multiplied by every output channel's weights into
    /// a small product, and written to the NCHW planes with the bias and
    /// the fused epilogue while they are hot; each thread takes its own
    /// share of the blocks. `false`: int8 weights, or several threads with
    /// too few pixels for each (the caller splits otherwise), nothing done.
    fn float_by_pixels(
        &self,
        kern: &Kernels,
        pool: &Pool,
        x: &[f32],
        out: &mut [f32],
        scr: &mut Scratch,
        post: &PostFn<'_>,
    ) -> bool {
        /// The two float layouts of the weights.
        enum Float<'w> {
            /// Rows, the product's left side: `c` (o × nb) = w · patchesᵀ.
            Rows(&'w [f32]),
            /// Packed panels, the right side: `c` (nb × o) = patches · wᵀ.
            Panels(&'w Weights),
        }
        let weights = match &self.weights {
            ConvWeights::F32Rows(w) => Float::Rows(w),
            ConvWeights::Float(w) => Float::Panels(w),
            ConvWeights::Int8(_) | ConvWeights::Winograd(_) => return false,
        };
        let (p, kk, o) = (self.oh * self.ow, self.kk(), self.o);
        let (oh, ow) = (self.oh, self.ow.max(1));
        let macs = self.macs();
        let several = pool.threads() > 1 && macs >= MIN_PARALLEL_MACS;
        // The threads take whole output rows (the fused epilogue's unit),
        // as evenly as rows allow; each packs its own pixels from its
        // first, so no thread's share need start on a panel.
        if several && pool.per_thread(oh, 1) >= oh {
            return false;
        }
        let pointwise = self.pointwise();
        let block = self.float_block();
        let rows = matches!(weights, Float::Rows(_));
        // Patches built straight into the kernels' panels.
        let in_panels = kern.packs_f32_in_float_panels();
        // Per output row: patches (none for a pointwise convolution on
        // weight rows, which packs its input as is, nor for patches built
        // in panels), packed patches (weight rows only: a row's pixels and
        // a panel's padding), products.
        let patches = if rows && (pointwise || in_panels) {
            0
        } else {
            ow * kk
        };
        let panel_len = if rows { (ow + PIXEL_PANEL - 1) * kk } else { 0 };
        pool.split_columns(
            macs,
            MIN_PARALLEL_MACS,
            oh,
            ow,
            1,
            Split::new(&mut scr.pa[..oh * patches], patches),
            Split::new(&mut scr.pp[..oh * panel_len], panel_len),
            Split::new(&mut scr.c[..oh * ow * o], ow * o),
            Columns {
                buf: &mut out[..o * p],
                rows: o,
                row_len: p,
            },
            &|_, pa, pp, c, mut planes| {
                let first = planes.first();
                let end = first + planes.row(0).len();
                // The fused epilogue takes whole output rows: each block
                // ends it on the rows it completes (the thread's share is
                // whole rows).
                let (mut j0, mut posted) = (first, first);
                while j0 < end {
                    let nb = block.min(end - j0);
                    let done = if j0 + nb == end {
                        end
                    } else {
                        (j0 + nb) / ow * ow
                    };
                    let c = &mut c[..o * nb];
                    // Channel `oc`'s value at pixel `j0 + j` is
                    // `c[oc · cs + j · js]`.
                    let (cs, js) = match weights {
                        Float::Rows(w) => {
                            if pointwise {
                                kern.pack_f32_cols(x, p, j0, nb, kk, pp);
                            } else if in_panels {
                                self.im2col_panels(x, j0, nb, pp);
                            } else {
                                let cols = &mut pa[..kk * nb];
                                self.im2col_part(x, 0, j0, nb, cols);
                                kern.pack_f32_cols(cols, nb, 0, nb, kk, pp);
                            }
                            kern.gemm_f32p(w, pp, o, nb, kk, c);
                            (nb, 1)
                        }
                        Float::Panels(w) => {
                            let cols = &mut pa[..nb * kk];
                            self.im2col(x, j0, cols);
                            w.gemm(kern, cols, nb, o, kk, c);
                            (1, o)
                        }
                    };
                    for oc in 0..o {
                        let row = planes.row(oc);
                        let plane = &mut row[j0 - first..j0 - first + nb];
                        let (b, c) = (self.bias[oc], &c[oc * cs..]);
                        if js == 1 {
                            ew::binary(kern.level, Binary::Add, &c[..nb], 1, &[b], 0, plane);
                        } else {
                            for (d, v) in plane.iter_mut().zip(c.iter().step_by(js)) {
                                *d = v + b;
                            }
                        }
                        if done > posted {
                            post(oc * p + posted, &mut row[posted - first..done - first]);
                        }
                    }
                    (j0, posted) = (j0 + nb, done.max(posted));
                }
            },
        );
        true
    }

    /// A 1×1 convolution, stride 1, no padding: its patches, a row per
    /// depth, are its input.
    fn pointwise(&self) -> bool {
        self.kernel == [1, 1]
            && self.stride == [1, 1]
            && self.pad == [0, 0]
            && (self.oh, self.ow) == (self.h, self.w)
    }

    /// Rows `t0..t0 + rows.len() / p` of the patch matrix a row per depth
    /// (`(c · kh · kw) × p`, depth `t` = channel, kernel row, kernel column):
    /// row `t` holds, for every output pixel, the input value under that
    /// kernel tap, zero outside the image. With stride 1 a row is runs of
    /// the input's rows, copied whole.
    fn im2col_rows<T: Copy + Default>(&self, x: &[T], t0: usize, rows: &mut [T]) {
        self.im2col_part(x, t0, 0, self.oh * self.ow, rows)
    }

    /// As [`Conv::im2col_rows`], each patch row holding only the output
    /// pixels `j0..j0 + p` (any span, whole output rows or not).
    fn im2col_part<T: Copy + Default>(
        &self,
        x: &[T],
        t0: usize,
        j0: usize,
        p: usize,
        rows: &mut [T],
    ) {
        let [kh, kw] = self.kernel;
        let taps = kh * kw;
        let ow = self.ow.max(1);
        for (i, row) in rows.chunks_exact_mut(p.max(1)).enumerate() {
            let t = t0 + i;
            let (ch, ky, kx) = (t / taps, t % taps / kw, t % kw);
            let plane = &x[ch * self.h * self.w..(ch + 1) * self.h * self.w];
            // Output row by output row: columns `a..b` of row `oy`.
            let mut j = j0;
            while j < j0 + p {
                let (oy, a) = (j / ow, j % ow);
                let b = ow.min(a + j0 + p - j);
                self.tap_run(plane, ky, kx, oy, a, &mut row[j - j0..j - j0 + b - a]);
                j += b - a;
            }
        }
    }

    /// The patches of the output pixels `j0..j0 + p` packed for the float
    /// kernels' right side ([`float_panels`]: panels of 16 pixels, `[depth]
    /// [16]`, the last panel's missing pixels zero): what
    /// [`Conv::im2col_part`] then [`float_panels::pack_cols`] make, in one
    /// pass and with no row-per-depth copy between.
    fn im2col_panels(&self, x: &[f32], j0: usize, p: usize, out: &mut [f32]) {
        const PANEL: usize = float_panels::PANEL;
        let [kh, kw] = self.kernel;
        let (kk, hw, ow) = (self.kk(), self.h * self.w, self.ow.max(1));
        for (q, panel) in out[..p.div_ceil(PANEL) * kk * PANEL]
            .chunks_exact_mut(kk * PANEL)
            .enumerate()
        {
            let first = j0 + q * PANEL;
            let cols = PANEL.min(j0 + p - first);
            // The panel's pixels by output row: (row, first column, first
            // lane, lanes); at most 16 runs.
            let mut runs = [(0, 0, 0, 0); PANEL];
            let (mut n, mut j) = (0, first);
            while j < first + cols {
                let (oy, a) = (j / ow, j % ow);
                let len = (ow - a).min(first + cols - j);
                runs[n] = (oy, a, j - first, len);
                (n, j) = (n + 1, j + len);
            }
            let runs = &runs[..n];
            // Depth `t` is channel `ch`, kernel row `ky`, column `kx`.
            let (mut ch, mut ky, mut kx) = (0, 0, 0);
            for lanes in panel.chunks_exact_mut(PANEL) {
                let plane = &x[ch * hw..(ch + 1) * hw];
                match runs {
                    // The whole panel in one output row (a constant length:
                    // the copy is a few vector moves).
                    [(oy, a, 0, PANEL)] => {
                        let lanes: &mut [f32; PANEL] = lanes.try_into().expect("16 lanes");
                        self.tap_run(plane, ky, kx, *oy, *a, lanes)
                    }
                    _ => {
                        for &(oy, a, l, len) in runs {
                            self.tap_run(plane, ky, kx, oy, a, &mut lanes[l..l + len]);
                        }
                        lanes[cols..].fill(0.0);
                    }
                }
                kx += 1;
                if kx == kw {
                    (kx, ky) = (0, ky + 1);
                    if ky == kh {
                        (ky, ch) = (0, ch + 1);
                    }
                }
            }
        }
    }

    /// The input values under kernel tap (`ky`, `kx`) of one channel's
    /// `plane` for output row `oy`, columns `a..a + out.len()`: zero
    /// outside the image. With stride 1 a run of the input's row, copied
    /// whole.
    #[inline(always)]
    fn tap_run<T: Copy + Default>(
        &self,
        plane: &[T],
        ky: usize,
        kx: usize,
        oy: usize,
        a: usize,
        out: &mut [T],
    ) {
        let b = a + out.len();
        let y = (oy * self.stride[0] + ky * self.dilation[0]).wrapping_sub(self.pad[0]);
        if y >= self.h {
            out.fill(T::default());
            return;
        }
        let line = &plane[y * self.w..(y + 1) * self.w];
        let dx = kx * self.dilation[1];
        if self.stride[1] == 1 {
            // Output columns whose input column `ox + dx - pad` is in the
            // row, within `a..b`.
            let lo = self.pad[1].saturating_sub(dx).clamp(a, b);
            let hi = (self.w + self.pad[1]).saturating_sub(dx).clamp(lo, b);
            if (lo, hi) == (a, b) {
                let from = a + dx - self.pad[1];
                out.copy_from_slice(&line[from..from + b - a]);
                return;
            }
            out[..lo - a].fill(T::default());
            out[hi - a..].fill(T::default());
            if hi > lo {
                let from = lo + dx - self.pad[1];
                out[lo - a..hi - a].copy_from_slice(&line[from..from + hi - lo]);
            }
        } else {
            for (ox, v) in (a..b).zip(out.iter_mut()) {
                let xx = (ox * self.stride[1] + dx).wrapping_sub(self.pad[1]);
                *v = if xx < self.w { line[xx] } else { T::default() };
            }
        }
    }

    /// Rows `first..first + cols.len() / kk` of the patch matrix
    /// (`p × (c · kh · kw)`, a row per output pixel), zero outside the image.
    fn im2col<T: Copy + Default>(&self, x: &[T], first: usize, cols: &mut [T]) {
        let kk = self.kk();
        let [kh, kw] = self.kernel;
        for (i, row) in cols.chunks_exact_mut(kk.max(1)).enumerate() {
            let (oy, ox) = ((first + i) / self.ow, (first + i) % self.ow);
            let mut t = 0;
            for ch in 0..self.c {
                let plane = &x[ch * self.h * self.w..(ch + 1) * self.h * self.w];
                for ky in 0..kh {
                    let y = (oy * self.stride[0] + ky * self.dilation[0]).wrapping_sub(self.pad[0]);
                    for kx in 0..kw {
                        let xx =
                            (ox * self.stride[1] + kx * self.dilation[1]).wrapping_sub(self.pad[1]);
                        row[t] = if y < self.h && xx < self.w {
                            plane[y * self.w + xx]
                        } else {
                            T::default()
                        };
                        t += 1;
                    }
                }
            }
        }
    }

    /// `s`: the int8 layer's activation scale (or empty). The threads split
    /// the output pixels for im2col and the product, then the output
    /// channels for the epilogue (bias, int8 scales, then `post`, the
    /// fused epilogue) into NCHW.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        kern: &Kernels,
        pool: &Pool,
        x: &[f32],
        s: &[f32],
        out: &mut [f32],
        scr: &mut Scratch,
        post: &PostFn<'_>,
    ) {
        let (p, kk, o) = (self.oh * self.ow, self.kk(), self.o);
        let macs = self.macs();
        match &self.weights {
            ConvWeights::Winograd(u) => {
                return winograd::run(self, u, kern, pool, x, out, scr, post)
            }
            ConvWeights::Int8(w) if self.int8_by_pixels(kern, pool, w, x, s[0], out, scr, post) => {
                return
            }
            ConvWeights::Int8(_) => {}
            _ if self.float_by_pixels(kern, pool, x, out, scr, post) => return,
            _ => {}
        }
        let nchw = &mut out[..o * p];
        match &self.weights {
            ConvWeights::Int8(w) => {
                // The product runs turned around, `out (o × p) = w · colsᵀ`:
                // the weights are its left side (plain rows), the patches
                // its right side, packed per frame; each output channel's
                // row is then its NCHW plane, written in place.
                let (sa, lv) = (s[0], kern.level);
                let (c, hw) = (self.c, self.h * self.w);
                let qx = &mut scr.qx[..c * hw];
                pool.rows(c * hw, MIN_PARALLEL_ELEMS, qx, c, hw, 1, &|c0, q| {
                    ew::quantize_into(lv, &x[c0 * hw..c0 * hw + q.len()], 1.0 / sa, q)
                });
                let qx: &[i8] = qx;
                // The patches a row per depth (`kk × p`): the quantised
                // input itself for a pointwise convolution.
                let cols: &[i8] = if self.pointwise() {
                    qx
                } else {
                    let cols = &mut scr.qa[..kk * p];
                    pool.rows(kk * p, MIN_PARALLEL_ELEMS, cols, kk, p, 1, &|t0, rows| {
                        self.im2col_rows(qx, t0, rows)
                    });
                    cols
                };
                // Packed for the kernels, 16 pixels (one panel) at a time.
                let (panels, panel_len) = (p.div_ceil(PIXEL_PANEL), kern.i8_panel_len(kk));
                pool.rows(
                    p * kk,
                    MIN_PARALLEL_ELEMS,
                    &mut scr.qp[..panels * panel_len],
                    panels,
                    panel_len,
                    1,
                    &|b0, qp| {
                        let first = b0 * PIXEL_PANEL;
                        let n = (qp.len() / panel_len.max(1) * PIXEL_PANEL).min(p - first);
                        kern.pack_i8_cols(cols, p, first, n, kk, qp);
                    },
                );
                let right: &[i8] = &scr.qp[..panels * panel_len];
                pool.rows3(
                    macs,
                    MIN_PARALLEL_MACS,
                    o,
                    1,
                    Split::new(&mut scr.acc[..o * p], p),
                    Split::new(nchw, p),
                    Split::<()>::empty(),
                    &|oc0, acc, planes, _| {
                        let rows = planes.len() / p.max(1);
                        kern.gemm_i8(&w.q[oc0 * kk..], right, rows, p, kk, acc);
                        for (i, (plane, acc)) in planes
                            .chunks_exact_mut(p.max(1))
                            .zip(acc.chunks_exact(p.max(1)))
                            .enumerate()
                        {
                            let oc = oc0 + i;
                            ew::dequantize_bias(lv, acc, sa * w.scale[oc], self.bias[oc], plane);
                        }
                        post(oc0 * p, planes);
                    },
                );
            }
            ConvWeights::F32Rows(w) => {
                // Turned around as the int8 path: `out = w · colsᵀ`, the
                // product written straight into the NCHW planes.
                // Patches a row per depth, unless built straight into the
                // kernels' panels.
                let in_panels = !self.pointwise() && kern.packs_f32_in_float_panels();
                let cols: &[f32] = if self.pointwise() {
                    &x[..kk * p]
                } else if in_panels {
                    &[]
                } else {
                    let cols = &mut scr.pa[..kk * p];
                    pool.rows(kk * p, MIN_PARALLEL_ELEMS, cols, kk, p, 1, &|t0, rows| {
                        self.im2col_rows(x, t0, rows)
                    });
                    cols
                };
                let (panels, panel_len) =
                    (p.div_ceil(PIXEL_PANEL), packed_f32_len(PIXEL_PANEL, kk));
                pool.rows(
                    p * kk,
                    MIN_PARALLEL_ELEMS,
                    &mut scr.pp[..panels * panel_len],
                    panels,
                    panel_len,
                    1,
                    &|b0, pp| {
                        let first = b0 * PIXEL_PANEL;
                        let n = (pp.len() / panel_len.max(1) * PIXEL_PANEL).min(p - first);
                        if in_panels {
                            self.im2col_panels(x, first, n, pp);
                        } else {
                            kern.pack_f32_cols(cols, p, first, n, kk, pp);
                        }
                    },
                );
                let right: &[f32] = &scr.pp[..panels * panel_len];
                pool.rows(macs, MIN_PARALLEL_MACS, nchw, o, p, 1, &|oc0, planes| {
                    let rows = planes.len() / p.max(1);
                    kern.gemm_f32p(&w[oc0 * kk..], right, rows, p, kk, planes);
                    for (i, plane) in planes.chunks_exact_mut(p.max(1)).enumerate() {
                        let b = [self.bias[oc0 + i]];
                        ew::binary_in_place(kern.level, Binary::Add, true, &b, 0, plane);
                    }
                    post(oc0 * p, planes);
                });
            }
            ConvWeights::Winograd(_) => unreachable!("Winograd convolutions return above"),
            ConvWeights::Float(w) => {
                pool.rows3(
                    macs,
                    MIN_PARALLEL_MACS,
                    p,
                    2,
                    Split::new(&mut scr.pa[..p * kk], kk),
                    Split::new(&mut scr.c[..p * o], o),
                    Split::<()>::empty(),
                    &|r0, cols, c, _| {
                        self.im2col(x, r0, cols);
                        w.gemm(kern, cols, c.len() / o.max(1), o, kk, c);
                    },
                );
                let c: &[f32] = &scr.c[..p * o];
                split_channels(pool, macs, nchw, p, &|oc, plane| {
                    let b = self.bias[oc];
                    for (pi, d) in plane.iter_mut().enumerate() {
                        *d = c[pi * o + oc] + b;
                    }
                    post(oc * p, plane);
                });
            }
        }
    }
}

/// `f(channel, plane)` for every output channel's plane (`p` values) of an
/// NCHW output, the channels split over the threads for a large product.
fn split_channels(
    pool: &Pool,
    macs: usize,
    nchw: &mut [f32],
    p: usize,
    f: &(dyn Fn(usize, &mut [f32]) + Sync),
) {
    let channels = nchw.len() / p.max(1);
    let each = |c0: usize, block: &mut [f32]| {
        for (i, plane) in block.chunks_exact_mut(p.max(1)).enumerate() {
            f(c0 + i, plane);
        }
    };
    pool.rows(macs, MIN_PARALLEL_MACS, nchw, channels, p, 1, &each);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The float convolutions by pixel blocks (weight rows and packed
    /// panels, f32 and f16) and, where they fit, by Winograd's tiles
    /// against the definition, on 1, 2 and 3 threads:
    /// blocks that cut output rows (13 and 11 wide), strides, a pointwise
    /// convolution, and an epilogue that must see each value once, in whole
    /// output rows, at its own offset. Values are small multiples of powers
    /// of two, so every sum is exact in any order and the comparison is
    /// exact.
    #[test]
    fn float_convolutions_in_pixel_blocks_match_the_definition() {
        use super::FloatWeights;
        // (c, h, w, kernel, stride, pad, o)
        for (c, h, w, kh, st, pd, o) in [
            (64, 13, 13, 3, 1, 1, 8),
            (64, 20, 20, 3, 1, 1, 8),
            (64, 40, 40, 3, 1, 1, 8),
            (40, 11, 11, 1, 1, 0, 24),
            (32, 15, 15, 3, 2, 1, 12),
            (3, 20, 20, 3, 1, 0, 5),
        ] {
            let (oh, ow) = ((h + 2 * pd - kh) / st + 1, (w + 2 * pd - kh) / st + 1);
            let (p, kk) = (oh * ow, c * kh * kh);
            let mut r = 7u64;
            let mut small = |scale: f32| {
                r = r
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((r >> 59) as f32 - 16.0) * scale
            };
            let x: Vec<f32> = (0..c * h * w).map(|_| small(0.125)).collect();
            let wt: Vec<f32> = (0..o * kk).map(|_| small(0.0625)).collect();
            let bias: Vec<f32> = (0..o).map(|_| small(0.5)).collect();
            let mut want = vec![0f32; o * p];
            for oc in 0..o {
                for (j, v) in want[oc * p..(oc + 1) * p].iter_mut().enumerate() {
                    let (oy, ox) = (j / ow, j % ow);
                    let mut sum = 0f32;
                    for ch in 0..c {
                        for ky in 0..kh {
                            for kx in 0..kh {
                                let (y, xx) = (
                                    (oy * st + ky).wrapping_sub(pd),
                                    (ox * st + kx).wrapping_sub(pd),
                                );
                                if y < h && xx < w {
                                    sum += wt[oc * kk + (ch * kh + ky) * kh + kx]
                                        * x[(ch * h + y) * w + xx];
                                }
                            }
                        }
                    }
                    *v = (sum + bias[oc]) + (oc * p + j) as f32 * 0.25;
                }
            }
            // Every kernel path (their packed layouts differ), each kind of
            // float weights.
            let kinds = std::iter::once(Kernels::SCALAR)
                .chain(Kernels::available())
                .flat_map(|kern| {
                    let winograd =
                        winograd::fits([kh, kh], [st, st], [1, 1], [pd, pd], [h, w], [oh, ow])
                            .then(|| ConvWeights::Winograd(winograd::weights(&wt, o, c).into()));
                    [
                        ConvWeights::F32Rows(wt.clone().into()),
                        ConvWeights::Float(Weights::new(
                            wt.clone(),
                            o,
                            kk,
                            &kern,
                            FloatWeights::F32,
                        )),
                        ConvWeights::Float(Weights::new(
                            wt.clone(),
                            o,
                            kk,
                            &kern,
                            FloatWeights::F16WhereExact,
                        )),
                    ]
                    .into_iter()
                    .chain(winograd)
                    .map(move |w| (kern, w))
                });
            for (kern, weights) in kinds {
                let conv = Conv {
                    c,
                    h,
                    w,
                    o,
                    oh,
                    ow,
                    kernel: [kh, kh],
                    stride: [st, st],
                    dilation: [1, 1],
                    pad: [pd, pd],
                    weights,
                    bias: bias.clone(),
                };
                let what = format!(
                    "{c}x{h}x{w} k{kh} s{st} o{o} {} on {}",
                    conv.precision(),
                    kern.name
                );
                for threads in 1..=3 {
                    let pool = Pool::new(threads);
                    let mut scr = Scratch::new(conv.scratch());
                    let seen = std::sync::Mutex::new(vec![0u8; o * p]);
                    let post = |first: usize, y: &mut [f32]| {
                        assert!(
                            first.is_multiple_of(ow) && y.len().is_multiple_of(ow),
                            "{what}: a cut row at {first}+{}",
                            y.len()
                        );
                        let mut seen = seen.lock().unwrap();
                        for (i, v) in y.iter_mut().enumerate() {
                            seen[first + i] += 1;
                            *v += (first + i) as f32 * 0.25;
                        }
                    };
                    let mut out = vec![f32::NAN; o * p];
                    conv.run(&kern, &pool, &x, &[], &mut out, &mut scr, &post);
                    assert!(
                        seen.into_inner().unwrap().iter().all(|&n| n == 1),
                        "{what}, {threads} threads: epilogue coverage"
                    );
                    assert_eq!(out, want, "{what}, {threads} threads");
                }
                // These shapes run in several blocks (on 2 threads too, 40 × 40).
                if c == 64 && h >= 20 && !matches!(conv.weights, ConvWeights::Winograd(_)) {
                    assert!(conv.float_block() < p, "{what}: one block only");
                }
            }
        }
    }

    proptest! {
        /// The patches a row per depth are the patches a row per pixel,
        /// transposed, and built in panels the rows packed, for any kernel,
        /// stride, dilation and padding.
        #[test]
        fn patch_rows_are_pixel_rows_transposed(
            c in 1usize..4, h in 1usize..9, w in 1usize..40,
            kh in 1usize..4, kw in 1usize..4,
            sy in 1usize..3, sx in 1usize..3, dy in 1usize..3, dx in 1usize..3,
            py in 0usize..3, px in 0usize..3,
        ) {
            let span = |n: usize, k: usize, s: usize, d: usize, p: usize| (n + 2 * p).checked_sub(d * (k - 1) + 1).map(|v| v / s + 1);
            let (Some(oh), Some(ow)) = (span(h, kh, sy, dy, py), span(w, kw, sx, dx, px)) else { return Ok(()) };
            let conv = Conv {
                c, h, w, o: 1, oh, ow,
                kernel: [kh, kw], stride: [sy, sx], dilation: [dy, dx], pad: [py, px],
                weights: ConvWeights::F32Rows(vec![0.0; c * kh * kw].into()),
                bias: vec![0.0],
            };
            let x: Vec<f32> = (0..c * h * w).map(|i| i as f32 + 1.0).collect();
            let (p, kk) = (oh * ow, c * kh * kw);
            let mut by_pixel = vec![-1f32; p * kk];
            conv.im2col(&x, 0, &mut by_pixel);
            let mut by_depth = vec![-1f32; kk * p];
            conv.im2col_rows(&x, 0, &mut by_depth);
            for j in 0..p {
                for t in 0..kk {
                    prop_assert_eq!(by_depth[t * p + j], by_pixel[j * kk + t], "pixel {} depth {}", j, t);
                }
            }
            // Any span of pixels (a block of the float paths, rows cut
            // anywhere), from any first depth: the same values.
            for (j0, n, t0) in [(0, p, 0), (p / 3, p - p / 3, kk / 2), (1.min(p - 1), p / 2, 1.min(kk - 1)), (p - 1, 1, kk - 1)] {
                let mut part = vec![-1f32; (kk - t0) * n];
                conv.im2col_part(&x, t0, j0, n, &mut part);
                for t in t0..kk {
                    for j in 0..n {
                        prop_assert_eq!(part[(t - t0) * n + j], by_depth[t * p + j0 + j], "span {}+{} depth {}", j0, n, t);
                    }
                }
                // Built straight into the float kernels' panels: the rows
                // packed, padding included.
                let mut want = vec![-1f32; packed_f32_len(n, kk)];
                float_panels::pack_cols(&by_depth, p, j0, n, kk, &mut want);
                let mut panels = vec![-2f32; packed_f32_len(n, kk)];
                conv.im2col_panels(&x, j0, n, &mut panels);
                prop_assert_eq!(&panels, &want, "span {}+{} in panels", j0, n);
            }
        }
    }
}
