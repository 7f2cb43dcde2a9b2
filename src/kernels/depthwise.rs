//! The depthwise convolution's kernel: one output channel's plane from its
//! input channel's, as a sum of shifted rows (each tap of the kernel adds
//! `weight · input row` to an output row over the columns it reaches, a
//! loop that vectorises for stride 1).
//!
//! Written once, plainly, in [`plain`], and compiled again on x86_64 with
//! SSE4.1, AVX2 + FMA and AVX-512 as the element-wise kernels are
//! ([`super::elementwise`]): every copy computes the same operations in the
//! same order (no fused multiply-add is formed), so their results are
//! identical bit for bit (tested), and equal to the direct sum per output
//! value (tested).

#![allow(clippy::too_many_arguments)]

use super::elementwise::{compiled, Level};

/// The plain source (and the twin the compiled copies are tested against).
pub mod plain {
    /// Output columns `lo..hi` that tap offset `off` (input column
    /// `ox · stride + off`) keeps inside `0..w`.
    #[inline(always)]
    fn reach(off: isize, stride: usize, w: usize, ow: usize) -> (usize, usize) {
        let lo = if off >= 0 {
            0
        } else {
            off.unsigned_abs().div_ceil(stride)
        };
        let hi = if off >= w as isize {
            0
        } else {
            ((w as isize - off) as usize).div_ceil(stride).min(ow)
        };
        (lo, hi.max(lo))
    }

    /// One output channel: `out[oy·ow + ox] = bias + Σ k[ky·kw + kx] ·
    /// x[iy·w + ix]` over the taps inside the image, with `iy = oy·sy +
    /// ky·dy − py` and `ix = ox·sx + kx·dx − px`, summed in tap order
    /// (`ky`, then `kx`). `x` holds the input channel (`h × w`), `k` the
    /// channel's `kh × kw` weights; `out` holds `oh × ow` values.
    #[inline(always)]
    pub fn plane(
        x: &[f32],
        w: usize,
        k: &[f32],
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
        pad: [usize; 2],
        bias: f32,
        ow: usize,
        out: &mut [f32],
    ) {
        let [kh, kw] = kernel;
        let h = x.len() / w.max(1);
        out.fill(bias);
        if ow == 0 || w == 0 {
            return;
        }
        for (oy, row) in out.chunks_exact_mut(ow).enumerate() {
            for ky in 0..kh {
                let iy = (oy * stride[0] + ky * dilation[0]) as isize - pad[0] as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                let input = &x[iy as usize * w..(iy as usize + 1) * w];
                for kx in 0..kw {
                    let wv = k[ky * kw + kx];
                    let off = (kx * dilation[1]) as isize - pad[1] as isize;
                    let (lo, hi) = reach(off, stride[1], w, ow);
                    if lo == hi {
                        continue;
                    }
                    let first = (lo * stride[1]) as isize + off;
                    let first = first as usize;
                    let outs = &mut row[lo..hi];
                    if stride[1] == 1 {
                        for (o, v) in outs.iter_mut().zip(&input[first..first + (hi - lo)]) {
                            *o += wv * v;
                        }
                    } else {
                        for (i, o) in outs.iter_mut().enumerate() {
                            *o += wv * input[first + i * stride[1]];
                        }
                    }
                }
            }
        }
    }
}

compiled! {
    /// One output channel of a depthwise convolution.
    fn plane(x: &[f32], w: usize, k: &[f32], kernel: [usize; 2], stride: [usize; 2], dilation: [usize; 2], pad: [usize; 2], bias: f32, ow: usize, out: &mut [f32]);
}

#[cfg(test)]
mod tests;
