//! Matrix products on the CPU: `EinSum` (linear layers, 1×1 convolutions,
//! attention) on weights packed in the kernel path's layout. An int8
//! layer quantises its activation rows as tract's optimised plan does
//! (`q = clamp(round_half_even(x · (1/s)), ±127)`; the graph as written
//! divides: a rounding tie can differ), multiplies in integers and scales
//! the i32 sums by `s · w_scale` in the epilogue. Large products are split
//! by rows over the thread pool.

use crate::engine::schedule::linear::{MatMul, Rhs, Weights};
use crate::kernels::elementwise as ew;
use crate::kernels::pool::{Pool, Split, MIN_PARALLEL_MACS};
use crate::kernels::{packed_f32_len, quantize, Kernels};

use super::scratch::{PostFn, Scratch, ScratchSize};

impl Weights {
    /// `c = x · wᵀ` for `m` rows of `x` (`m × k`) on the packed weights.
    pub(super) fn gemm(
        &self,
        kern: &Kernels,
        x: &[f32],
        m: usize,
        n: usize,
        k: usize,
        c: &mut [f32],
    ) {
        self.gemm_from(kern, x, 0, m, n, k, c)
    }

    /// As [`Weights::gemm`] for output channels `first..first + n`, `first`
    /// a multiple of 16 (a whole panel: every float layout holds channel
    /// `j`'s panel from `j · k` on).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn gemm_from(
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

impl MatMul {
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
