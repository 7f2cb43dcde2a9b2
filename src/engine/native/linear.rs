//! Matrix products with their packed weights: `EinSum` (linear layers, 1×1
//! convolutions, attention) and 2-D convolutions (im2col, then one product).
//! Weights are packed once at load, `n × k` (a row per output channel), in
//! the bundle's precision: int8 with a scale per output channel, f16, or f32.
//! An int8 layer quantises its activation rows as the graph does
//! (`q = clamp(round_half_even(x · (1/s)), ±127)`), multiplies in integers
//! and scales the i32 sums by `s · w_scale` in the epilogue.

use half::f16;

use crate::kernels::pool::Pool;
use crate::kernels::Kernels;

/// Packed weights, `n × k`.
pub enum Weights {
    F32(Vec<f32>),
    F16(Vec<f16>),
    I8 { q: Vec<i8>, scale: Vec<f32> },
}

/// How far an int8 weight may sit from its channel's grid (relative to the
/// channel's max |w|) and still be read as int8: the graph's dequantised
/// `q · s` is within a few f32 ulps of it; a real f32 weight is off by up
/// to `max|w| / 254`.
pub const INT8_GRID_TOL: f32 = 1e-5;

impl Weights {
    /// Packs `n × k` f32 values: int8 when `int8` is asked and every output
    /// channel lies on a symmetric int8 grid (`s = max|w| / 127`); f16 when
    /// every value is exactly an f16; f32 otherwise.
    pub fn pack(w: Vec<f32>, n: usize, k: usize, int8: bool) -> Weights {
        if int8 {
            if let Some((q, scale)) = recover_int8(&w, n, k) {
                return Weights::I8 { q, scale };
            }
        }
        if w.iter().all(|v| f16::from_f32(*v).to_f32() == *v) {
            return Weights::F16(w.iter().map(|v| f16::from_f32(*v)).collect());
        }
        Weights::F32(w)
    }

    pub fn precision(&self) -> &'static str {
        match self {
            Weights::F32(_) => "f32",
            Weights::F16(_) => "f16",
            Weights::I8 { .. } => "int8",
        }
    }

    pub fn bytes(&self) -> usize {
        match self {
            Weights::F32(w) => 4 * w.len(),
            Weights::F16(w) => 2 * w.len(),
            Weights::I8 { q, scale } => q.len() + 4 * scale.len(),
        }
    }
}

fn recover_int8(w: &[f32], n: usize, k: usize) -> Option<(Vec<i8>, Vec<f32>)> {
    let mut q = Vec::with_capacity(n * k);
    let mut scale = Vec::with_capacity(n);
    for row in w.chunks(k.max(1)).take(n) {
        let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let s = amax / 127.0;
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
    pub c: Vec<f32>,
    pub qa: Vec<i8>,
    pub qx: Vec<i8>,
    pub acc: Vec<i32>,
}

/// Lengths of the scratch buffers one op needs.
#[derive(Debug, Default, Clone, Copy)]
pub struct ScratchSize {
    pub pa: usize,
    pub pb: usize,
    pub c: usize,
    pub qa: usize,
    pub qx: usize,
    pub acc: usize,
}

impl ScratchSize {
    pub fn max(self, o: ScratchSize) -> ScratchSize {
        ScratchSize {
            pa: self.pa.max(o.pa),
            pb: self.pb.max(o.pb),
            c: self.c.max(o.c),
            qa: self.qa.max(o.qa),
            qx: self.qx.max(o.qx),
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
            c: vec![0.0; n.c],
            qa: vec![0; n.qa],
            qx: vec![0; n.qx],
            acc: vec![0; n.acc],
        }
    }

    pub fn bytes(&self) -> usize {
        4 * (self.pa.len() + self.pb.len() + self.c.len() + self.acc.len())
            + self.qa.len()
            + self.qx.len()
    }
}

/// int8 activation quantisation: the scale tensor's offset for each batch
/// and row.
pub struct ActQuant {
    pub s_batch: Vec<usize>,
    pub s_m: Vec<usize>,
}

/// The right-hand side of a product.
pub enum Rhs {
    /// Packed weights; an int8 layer's come with how to find each row's
    /// activation scale (`a` is then the unquantised activation).
    Weights(Weights, Option<ActQuant>),
    /// Another activation (attention): its offsets per batch, row, depth.
    Act {
        b_batch: Vec<usize>,
        b_n: Vec<usize>,
        b_k: Vec<usize>,
    },
}

/// `out[b][m][n] = Σ_k a[b][m][k] · rhs[b][n][k]`, each index spread over
/// any axes of its tensor through the offset tables built at load.
pub struct MatMul {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a_batch: Vec<usize>,
    pub a_m: Vec<usize>,
    pub a_k: Vec<usize>,
    pub rhs: Rhs,
    pub o_batch: Vec<usize>,
    pub o_m: Vec<usize>,
    pub o_n: Vec<usize>,
}

#[inline]
fn quantize(v: f32, r: f32) -> i8 {
    (v * r).round_ties_even().clamp(-127.0, 127.0) as i8
}

impl MatMul {
    pub fn scratch(&self) -> ScratchSize {
        let (m, n, k) = (self.m, self.n, self.k);
        match &self.rhs {
            Rhs::Weights(Weights::I8 { .. }, Some(_)) => ScratchSize {
                qa: m * k,
                acc: m * n,
                ..Default::default()
            },
            Rhs::Weights(..) => ScratchSize {
                pa: m * k,
                c: m * n,
                ..Default::default()
            },
            Rhs::Act { .. } => ScratchSize {
                pa: m * k,
                pb: n * k,
                c: m * n,
                ..Default::default()
            },
        }
    }

    pub fn precision(&self) -> &'static str {
        match &self.rhs {
            Rhs::Weights(w, _) => w.precision(),
            Rhs::Act { .. } => "f32",
        }
    }

    /// `b`: the right-hand activation (or empty); `s`: the activation
    /// scales of an int8 layer (or empty).
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
    ) {
        let (m, n, k) = (self.m, self.n, self.k);
        for (bi, (&ab, &ob)) in self.a_batch.iter().zip(&self.o_batch).enumerate() {
            if let Rhs::Weights(Weights::I8 { q, scale }, Some(aq)) = &self.rhs {
                let qa = &mut scr.qa[..m * k];
                for (mi, row) in qa.chunks_exact_mut(k.max(1)).enumerate().take(m) {
                    let r = 1.0 / s[aq.s_batch[bi] + aq.s_m[mi]];
                    let base = ab + self.a_m[mi];
                    for (d, &ko) in row.iter_mut().zip(&self.a_k) {
                        *d = quantize(a[base + ko], r);
                    }
                }
                let qa: &[i8] = qa;
                let acc = &mut scr.acc[..m * n];
                pool.gemm_rows(m * n * k, acc, m, n, &|r0, c| {
                    let rows = c.len() / n.max(1);
                    kern.gemm_i8(&qa[r0 * k..(r0 + rows) * k], q, rows, n, k, c)
                });
                for mi in 0..m {
                    let sa = s[aq.s_batch[bi] + aq.s_m[mi]];
                    let base = ob + self.o_m[mi];
                    for ni in 0..n {
                        out[base + self.o_n[ni]] = acc[mi * n + ni] as f32 * (sa * scale[ni]);
                    }
                }
                continue;
            }
            let pa = &mut scr.pa[..m * k];
            for (mi, row) in pa.chunks_exact_mut(k.max(1)).enumerate().take(m) {
                let base = ab + self.a_m[mi];
                for (d, &ko) in row.iter_mut().zip(&self.a_k) {
                    *d = a[base + ko];
                }
            }
            let pa: &[f32] = pa;
            let c = &mut scr.c[..m * n];
            let macs = m * n * k;
            let rows_of = |r0: usize, c: &[f32]| {
                let rows = c.len() / n.max(1);
                (&pa[r0 * k..(r0 + rows) * k], rows)
            };
            match &self.rhs {
                Rhs::Weights(Weights::F32(w), _) => pool.gemm_rows(macs, c, m, n, &|r0, c| {
                    let (x, rows) = rows_of(r0, c);
                    kern.gemm_f32(x, w, rows, n, k, c)
                }),
                Rhs::Weights(Weights::F16(w), _) => pool.gemm_rows(macs, c, m, n, &|r0, c| {
                    let (x, rows) = rows_of(r0, c);
                    kern.gemm_f16w(x, w, rows, n, k, c)
                }),
                Rhs::Weights(Weights::I8 { q, scale }, None) => {
                    // int8 weights with an f32 activation (the lowering
                    // never builds this; kept correct all the same).
                    for mi in 0..m {
                        for ni in 0..n {
                            let dot: f32 = pa[mi * k..(mi + 1) * k]
                                .iter()
                                .zip(&q[ni * k..(ni + 1) * k])
                                .map(|(x, w)| x * *w as f32)
                                .sum();
                            c[mi * n + ni] = dot * scale[ni];
                        }
                    }
                }
                Rhs::Weights(Weights::I8 { .. }, Some(_)) => {}
                Rhs::Act { b_batch, b_n, b_k } => {
                    let pb = &mut scr.pb[..n * k];
                    for (ni, row) in pb.chunks_exact_mut(k.max(1)).enumerate().take(n) {
                        let base = b_batch[bi] + b_n[ni];
                        for (d, &ko) in row.iter_mut().zip(b_k) {
                            *d = b[base + ko];
                        }
                    }
                    let pb: &[f32] = pb;
                    pool.gemm_rows(macs, c, m, n, &|r0, c| {
                        let (x, rows) = rows_of(r0, c);
                        kern.gemm_f32(x, pb, rows, n, k, c)
                    });
                }
            }
            for mi in 0..m {
                let base = ob + self.o_m[mi];
                for ni in 0..n {
                    out[base + self.o_n[ni]] = c[mi * n + ni];
                }
            }
        }
    }
}

/// A 2-D convolution over one NCHW image, OIHW weights, one group.
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
    pub weights: Weights,
    pub bias: Vec<f32>,
    /// int8 layer: `x` is then the unquantised input, one scale for all.
    pub quant: bool,
}

impl Conv {
    fn kk(&self) -> usize {
        self.c * self.kernel[0] * self.kernel[1]
    }

    fn int8(&self) -> bool {
        self.quant && matches!(self.weights, Weights::I8 { .. })
    }

    pub fn scratch(&self) -> ScratchSize {
        let (p, kk) = (self.oh * self.ow, self.kk());
        if self.int8() {
            ScratchSize {
                qa: p * kk,
                qx: self.c * self.h * self.w,
                acc: p * self.o,
                ..Default::default()
            }
        } else {
            ScratchSize {
                pa: p * kk,
                c: p * self.o,
                ..Default::default()
            }
        }
    }

    /// The rows of the patch matrix: `p × (c · kh · kw)`, zero outside.
    fn im2col<T: Copy + Default>(&self, x: &[T], cols: &mut [T]) {
        let kk = self.kk();
        let [kh, kw] = self.kernel;
        for oy in 0..self.oh {
            for ox in 0..self.ow {
                let row = &mut cols[(oy * self.ow + ox) * kk..(oy * self.ow + ox + 1) * kk];
                let mut t = 0;
                for ch in 0..self.c {
                    let plane = &x[ch * self.h * self.w..(ch + 1) * self.h * self.w];
                    for ky in 0..kh {
                        let y =
                            (oy * self.stride[0] + ky * self.dilation[0]).wrapping_sub(self.pad[0]);
                        for kx in 0..kw {
                            let xx = (ox * self.stride[1] + kx * self.dilation[1])
                                .wrapping_sub(self.pad[1]);
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
    }

    /// `s`: the int8 layer's activation scale (or empty).
    pub fn run(
        &self,
        kern: &Kernels,
        pool: &Pool,
        x: &[f32],
        s: &[f32],
        out: &mut [f32],
        scr: &mut Scratch,
    ) {
        let (p, kk, o) = (self.oh * self.ow, self.kk(), self.o);
        let macs = p * kk * o;
        match (&self.weights, self.quant) {
            (Weights::I8 { q, scale }, true) => {
                let sa = s[0];
                let r = 1.0 / sa;
                let qx = &mut scr.qx[..self.c * self.h * self.w];
                for (d, v) in qx.iter_mut().zip(x) {
                    *d = quantize(*v, r);
                }
                let cols = &mut scr.qa[..p * kk];
                self.im2col(qx, cols);
                let cols: &[i8] = cols;
                let acc = &mut scr.acc[..p * o];
                pool.gemm_rows(macs, acc, p, o, &|r0, c| {
                    let rows = c.len() / o.max(1);
                    kern.gemm_i8(&cols[r0 * kk..(r0 + rows) * kk], q, rows, o, kk, c)
                });
                for oc in 0..o {
                    let (f, b) = (sa * scale[oc], self.bias[oc]);
                    for (pi, d) in out[oc * p..(oc + 1) * p].iter_mut().enumerate() {
                        *d = acc[pi * o + oc] as f32 * f + b;
                    }
                }
            }
            (w, _) => {
                let cols = &mut scr.pa[..p * kk];
                self.im2col(x, cols);
                let cols: &[f32] = cols;
                let c = &mut scr.c[..p * o];
                let rows_of = |r0: usize, c: &[f32]| {
                    let rows = c.len() / o.max(1);
                    (&cols[r0 * kk..(r0 + rows) * kk], rows)
                };
                match w {
                    Weights::F32(w) => pool.gemm_rows(macs, c, p, o, &|r0, c| {
                        let (x, rows) = rows_of(r0, c);
                        kern.gemm_f32(x, w, rows, o, kk, c)
                    }),
                    Weights::F16(w) => pool.gemm_rows(macs, c, p, o, &|r0, c| {
                        let (x, rows) = rows_of(r0, c);
                        kern.gemm_f16w(x, w, rows, o, kk, c)
                    }),
                    Weights::I8 { q, scale } => {
                        // Not built by the lowering; kept correct.
                        for pi in 0..p {
                            for oc in 0..o {
                                let dot: f32 = cols[pi * kk..(pi + 1) * kk]
                                    .iter()
                                    .zip(&q[oc * kk..(oc + 1) * kk])
                                    .map(|(x, w)| x * *w as f32)
                                    .sum();
                                c[pi * o + oc] = dot * scale[oc];
                            }
                        }
                    }
                }
                for oc in 0..o {
                    let b = self.bias[oc];
                    for (pi, d) in out[oc * p..(oc + 1) * p].iter_mut().enumerate() {
                        *d = c[pi * o + oc] + b;
                    }
                }
            }
        }
    }
}
