//! 2-D convolutions on the CPU: im2col, then one product, over weights
//! packed in the bundle's precision (f16 panels, f32 or int8 rows with the
//! patches packed per frame, or Winograd's transformed f32 weights); split
//! by pixels or by channels over the thread pool.

use crate::engine::schedule::linear::{Conv, ConvWeights, Int8, Weights};
use crate::kernels::elementwise::{self as ew, Binary};
use crate::kernels::pool::{Columns, Pool, Split, MIN_PARALLEL_MACS};
use crate::kernels::{packed_f32_len, packed_i8_len, Kernels};

use super::scratch::{PostFn, Scratch, ScratchSize};
use super::winograd;

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

/// What one block of the int8 path by pixels may take of a core's cache:
/// its quantised patches, their packed panels and its i32 sums.
const INT8_BLOCK_BYTES: usize = 128 * 1024;

/// The fewest pixels a block of the int8 path by pixels takes, cache or
/// not: each block calls the dequantising and the fused epilogue once per
/// output channel (as [`FLOAT_BLOCK_MIN_PIXELS`] for the float paths).
const INT8_BLOCK_MIN_PIXELS: usize = 256;

/// Int8 weights small enough to be read again for each product of a
/// block ([`Conv::int8_sub_block`]).
const INT8_SUB_WEIGHT_BYTES: usize = 32 * 1024;

/// The most i32 sums one product of an int8 block writes
/// ([`Conv::int8_sub_block`]) when its weights are small: about twice a
/// core's first-level cache (measured: docs/benchmarks.md).
const INT8_SUB_SUM_BYTES: usize = 96 * 1024;

/// Element-wise work below this many values runs on the caller alone.
const MIN_PARALLEL_ELEMS: usize = 1 << 14;

impl Conv {
    pub fn scratch(&self) -> ScratchSize {
        let (p, kk) = (self.oh * self.ow, self.kk());
        match self.weights {
            // Room for either int8 path (by channels, or by pixel panels).
            ConvWeights::Int8(_) => {
                let padded = p.div_ceil(PIXEL_PANEL) * PIXEL_PANEL;
                ScratchSize {
                    qa: kk * padded,
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

    /// Pixels of one block of the int8 path by pixels: whole multiples of
    /// [`Conv::pixel_block`] (whole packed panels and whole output rows),
    /// as many as keep a block's quantised patches, their packed panels
    /// and its i32 sums (`2 · c · kh · kw + 4 · o` bytes a pixel) within
    /// [`INT8_BLOCK_BYTES`], and at least [`INT8_BLOCK_MIN_PIXELS`].
    fn int8_block(&self) -> usize {
        let unit = self.pixel_block().max(1);
        let per_pixel = 2 * self.kk() + 4 * self.o;
        let fit = INT8_BLOCK_BYTES / per_pixel.max(1).saturating_mul(unit);
        fit.max(INT8_BLOCK_MIN_PIXELS.div_ceil(unit))
            .saturating_mul(unit)
    }

    /// Pixels of one product within a block of the int8 path
    /// ([`Conv::int8_block`]): the whole block, or where the weights are
    /// small (at most [`INT8_SUB_WEIGHT_BYTES`]: read again for each
    /// product at little cost) and the block's i32 sums are not (more
    /// than [`INT8_SUB_SUM_BYTES`]) and one [`Conv::pixel_block`]'s are
    /// (whole panels, whole output rows for the epilogue), as many of
    /// those as keep one product's sums within that size: its tiles are
    /// then stored to lines that are still in (or near) the core's
    /// first-level cache, and read back from there by the epilogue.
    fn int8_sub_block(&self, block: usize) -> usize {
        let (o, unit) = (self.o.max(1), self.pixel_block().max(1));
        let fit = INT8_SUB_SUM_BYTES / (4 * o) / unit * unit;
        if o * self.kk() > INT8_SUB_WEIGHT_BYTES || fit == 0 || fit >= block {
            return block;
        }
        // Whole panels: each product's packed patches start at one.
        debug_assert!(fit.is_multiple_of(PIXEL_PANEL));
        fit
    }

    /// The int8 path by output pixels: each thread takes a share of the
    /// pixels and runs it in blocks ([`Conv::int8_block`]) that stay in
    /// a core's cache: a block's patches quantised and packed (a pointwise
    /// convolution's straight from its input into the panels, one pass),
    /// multiplied against every output channel (in several products where
    /// [`Conv::int8_sub_block`] says), then dequantised into its pixels of
    /// each NCHW plane, epilogue included. A chain of convolutions so
    /// keeps each thread on the pixels it wrote (no cache lines passed
    /// between cores at each step, as splitting by channels does), and no
    /// pass over the whole image's i32 sums. `false`: on several threads,
    /// too few pixels for every thread or too little work to split;
    /// nothing done.
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
        if o == 0 {
            return true; // no output
        }
        let panels = p.div_ceil(PIXEL_PANEL);
        let align = self.pixel_block() / PIXEL_PANEL;
        if pool.threads() > 1
            && (pool.per_thread(panels, align) >= panels || p * kk * o < MIN_PARALLEL_MACS)
        {
            return false;
        }
        let (c, hw) = (self.c, self.h * self.w);
        let r = 1.0 / sa;
        let pointwise = self.pointwise();
        if !pointwise {
            // The whole input quantised first (a block's patches read
            // its neighbours' pixels), by the same kind of blocks of its
            // own pixels.
            let in_panels = hw.div_ceil(PIXEL_PANEL);
            let in_align = {
                let (mut g, mut b) = (PIXEL_PANEL, self.w.max(1));
                while b != 0 {
                    (g, b) = (b, g % b);
                }
                self.w.max(1) / g
            };
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
        }
        let qx: &[i8] = &scr.qx[..c * hw];
        let panel_len = kern.i8_panel_len(kk);
        let patches = PIXEL_PANEL * kk;
        let block = self.int8_block();
        let sub = self.int8_sub_block(block);
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
                let (j0, share) = (planes.first(), planes.row(0).len());
                let mut b0 = 0;
                while b0 < share {
                    let (jb, nb) = (j0 + b0, block.min(share - b0));
                    let cols = &mut qa[..kk * nb];
                    if pointwise {
                        // The block's pixels of each input channel,
                        // quantised on their way into the panels.
                        kern.quantize_pack_i8_cols(x, hw, jb, nb, kk, r, cols, qp);
                    } else {
                        self.im2col_part(qx, 0, jb, nb, cols);
                        kern.pack_i8_cols(cols, nb, 0, nb, kk, qp);
                    }
                    let mut s0 = 0;
                    while s0 < nb {
                        let sn = sub.min(nb - s0);
                        let acc = &mut acc[..o * sn];
                        kern.gemm_i8(&w.q, &qp[s0 / PIXEL_PANEL * panel_len..], o, sn, kk, acc);
                        for (oc, acc) in acc.chunks_exact(sn).enumerate() {
                            let plane = &mut planes.row(oc)[b0 + s0..b0 + s0 + sn];
                            ew::dequantize_bias(lv, acc, sa * w.scale[oc], self.bias[oc], plane);
                            post(oc * p + jb + s0, plane);
                        }
                        s0 += sn;
                    }
                    b0 += nb;
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
mod tests;
