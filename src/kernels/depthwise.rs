//! The depthwise convolution's kernel: one output channel's plane from its
//! input channel's, zero-padded beforehand ([`pad_plane`]) so that no tap
//! needs a bound: sixteen output columns at a time, their sums kept in
//! registers across every tap of the kernel (a loop that vectorises).
//!
//! Written once, plainly, in [`plain`], and compiled again on x86_64 with
//! SSE4.1, AVX2 + FMA and AVX-512 as the element-wise kernels are
//! ([`super::elementwise`]): every copy computes the same operations in the
//! same order (no fused multiply-add is formed), so their results are
//! identical bit for bit (tested), and equal to the direct sum per output
//! value with the padding's zeros (tested).

#![allow(clippy::too_many_arguments)]

use super::elementwise::{compiled, Level};

/// Output columns computed at once (one AVX-512 vector, two AVX2 ones).
pub const CHUNK: usize = 16;

/// The zero-padded input a depthwise convolution's kernel reads, one
/// channel: `rows` rows, each split into `phases` (the horizontal stride)
/// runs of `cols` values, run `r` holding the padded row's columns `c ≡ r
/// (mod phases)` at `c / phases`, so that every tap reads its outputs'
/// inputs contiguously. The image sits at (`pad[0]`, `pad[1]`) of the
/// padded row; there is room for `oh` output rows and `ow` output columns
/// rounded up to [`CHUNK`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Padded {
    pub rows: usize,
    pub phases: usize,
    pub cols: usize,
}

impl Padded {
    /// The padded plane's shape for a convolution's geometry (`None`: past
    /// `usize`).
    pub fn of(
        [oh, ow]: [usize; 2],
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
    ) -> Option<Padded> {
        let rows = match oh {
            0 => 0,
            _ => (oh - 1)
                .checked_mul(stride[0])?
                .checked_add(kernel[0].checked_sub(1)?.checked_mul(dilation[0])?)?
                .checked_add(1)?,
        };
        let phases = stride[1].max(1);
        let cols = match ow {
            0 => 0,
            _ => ow
                .div_ceil(CHUNK)
                .checked_mul(CHUNK)?
                .checked_add(kernel[1].checked_sub(1)?.checked_mul(dilation[1])? / phases)?,
        };
        rows.checked_mul(phases)?.checked_mul(cols)?;
        Some(Padded { rows, phases, cols })
    }

    /// Values in one channel's padded plane.
    pub fn len(&self) -> usize {
        self.rows * self.phases * self.cols
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `x` (`h × w`, one channel) into `out` (one [`Padded`] plane) at
/// (`pad[0]`, `pad[1]`), zeros around it; the parts of `x` past the padded
/// plane are left out (no output reads them).
pub fn pad_plane(x: &[f32], w: usize, pad: [usize; 2], p: Padded, out: &mut [f32]) {
    out.fill(0.0);
    if w == 0 || p.cols == 0 {
        return;
    }
    let row_len = p.phases * p.cols;
    for (iy, row) in x.chunks_exact(w).enumerate() {
        let y = iy + pad[0];
        if y >= p.rows {
            break;
        }
        let dst = &mut out[y * row_len..(y + 1) * row_len];
        if p.phases == 1 {
            let at = pad[1].min(p.cols);
            let n = w.min(p.cols - at);
            dst[at..at + n].copy_from_slice(&row[..n]);
        } else {
            // Run `r` holds padded columns `j·phases + r`, input columns
            // `j·phases + r − pad`: those inside the row, `lo..hi`.
            for (r, run) in dst.chunks_exact_mut(p.cols).enumerate() {
                let lo = pad[1].saturating_sub(r).div_ceil(p.phases);
                let hi = (w + pad[1])
                    .saturating_sub(r)
                    .div_ceil(p.phases)
                    .min(p.cols);
                if lo >= hi {
                    continue;
                }
                let first = lo * p.phases + r - pad[1];
                let src = &row[first..first + (hi - lo - 1) * p.phases + 1];
                if p.phases == 2 {
                    // (A constant stride, which vectorises.)
                    for (v, s) in run[lo..hi].iter_mut().zip(src.iter().step_by(2)) {
                        *v = *s;
                    }
                } else {
                    for (v, s) in run[lo..hi].iter_mut().zip(src.iter().step_by(p.phases)) {
                        *v = *s;
                    }
                }
            }
        }
    }
}

/// The plain source (and the twin the compiled copies are tested against).
pub mod plain {
    use super::CHUNK;

    /// One output channel from its padded input `xp` ([`super::Padded`]:
    /// rows of `phases` runs of `cols`): `out[oy·ow + ox] = bias + Σ
    /// k[ky·kw + kx] · xpad[oy·sy + ky·dy, ox·sx + kx·dx]` over every tap,
    /// in order (`ky`, then `kx`), `xpad` the padded image (`sx` =
    /// `phases`). `out` holds `oh × ow` values.
    #[inline(always)]
    pub fn plane(
        xp: &[f32],
        phases: usize,
        cols: usize,
        k: &[f32],
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
        bias: f32,
        ow: usize,
        out: &mut [f32],
    ) {
        let [kh, kw] = kernel;
        debug_assert_eq!(phases, stride[1].max(1));
        let (sx, dx) = (phases.max(1), dilation[1]);
        let row_len = sx * cols;
        if ow == 0 {
            return;
        }
        for (oy, row) in out.chunks_exact_mut(ow).enumerate() {
            let mut ox0 = 0;
            while ox0 < ow {
                let n = (ow - ox0).min(CHUNK);
                let mut acc = [bias; CHUNK];
                for ky in 0..kh {
                    let r = (oy * stride[0] + ky * dilation[0]) * row_len;
                    // Column `ox·sx + kx·dx` is in run `(kx·dx) mod sx`, at
                    // `ox + (kx·dx) / sx`: (quotient, remainder) kept as
                    // `kx` steps, no division per tap.
                    if sx == 1 {
                        for kx in 0..kw {
                            let wv = k[ky * kw + kx];
                            let at = r + ox0 + kx * dx;
                            let src: &[f32; CHUNK] =
                                xp[at..at + CHUNK].try_into().expect("CHUNK values");
                            for (a, v) in acc.iter_mut().zip(src) {
                                *a += wv * v;
                            }
                        }
                        continue;
                    }
                    let (mut q, mut rem) = (0usize, 0usize);
                    for kx in 0..kw {
                        let wv = k[ky * kw + kx];
                        let at = r + rem * cols + ox0 + q;
                        let src: &[f32; CHUNK] =
                            xp[at..at + CHUNK].try_into().expect("CHUNK values");
                        for (a, v) in acc.iter_mut().zip(src) {
                            *a += wv * v;
                        }
                        rem += dx;
                        while rem >= sx {
                            rem -= sx;
                            q += 1;
                        }
                    }
                }
                row[ox0..ox0 + n].copy_from_slice(&acc[..n]);
                ox0 += n;
            }
        }
    }
}

compiled! {
    /// One output channel of a depthwise convolution, from its padded input.
    fn plane(xp: &[f32], phases: usize, cols: usize, k: &[f32], kernel: [usize; 2], stride: [usize; 2], dilation: [usize; 2], bias: f32, ow: usize, out: &mut [f32]);
}

#[cfg(test)]
mod tests;
