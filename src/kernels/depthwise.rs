//! The depthwise convolution's kernel: one output channel's plane from its
//! input channel's, zero-padded beforehand ([`pad_plane`]) so that no tap
//! needs a bound (all of them checked once per plane): four output rows of
//! sixteen columns at a time, their sums kept in registers across every
//! tap of the kernel (a loop that vectorises; on 16-register ISAs some
//! spill).
//!
//! Written once, plainly, in [`plain`], in two forms: each tap's product
//! rounded then added (`plain::plane::<false>`), or fused into one rounding
//! (`plain::plane::<true>`, `f32::mul_add`, for CPUs with FMA). It is
//! compiled again on x86_64 with SSE4.1 (unfused), AVX2 + FMA and AVX-512
//! (fused) as the element-wise kernels are ([`super::elementwise`]); on
//! aarch64, where FMA is the baseline, the plain copy runs fused
//! ([`Level::fuses`]). Every copy of a form computes the same operations in the
//! same order, so its results equal, bit for bit, the direct sum per output
//! value with the padding's zeros, taps in order, in that form (tested).
//! On AVX-512, planes of stride 1 or 2 and dilation 1 with 3, 5 or 7 tap
//! rows are read unpadded instead ([`plane_unpadded`], `x86_64::depthwise`): the
//! same sums in the same order, each input row read once for every output
//! row that needs it.

#![allow(clippy::too_many_arguments)]

use super::elementwise::Level;

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
        } else if p.phases == 2 {
            // Input column `i` lands in run `(i + pad) mod 2` at `(i +
            // pad) / 2`: the row split into pairs, one value to each run
            // (a loop that vectorises); those past the runs left out.
            let (run0, run1) = dst.split_at_mut(p.cols);
            let n = w.min((2 * p.cols).saturating_sub(pad[1]));
            if n == 0 {
                continue;
            }
            let mut i = 0;
            if pad[1] % 2 == 1 {
                run1[pad[1] / 2] = row[0];
                i = 1;
            }
            let (base, pairs) = ((i + pad[1]) / 2, (n - i) / 2);
            for ((a, b), pair) in run0[base..base + pairs]
                .iter_mut()
                .zip(&mut run1[base..base + pairs])
                .zip(row[i..i + 2 * pairs].chunks_exact(2))
            {
                *a = pair[0];
                *b = pair[1];
            }
            if (n - i) % 2 == 1 {
                run0[base + pairs] = row[n - 1];
            }
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
                for (v, s) in run[lo..hi].iter_mut().zip(src.iter().step_by(p.phases)) {
                    *v = *s;
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
    /// `phases`). `out` holds `oh × ow` values. [`ROWS`] output rows at a
    /// time (their sums are independent chains, so a tap's additions
    /// overlap), the last rows one at a time.
    ///
    /// `FUSED`: each tap's product and sum in one rounding
    /// (`acc = k.mul_add(x, acc)`), for CPUs with FMA (elsewhere a library
    /// call per tap). A kernel of no taps gives the bias everywhere.
    ///
    /// # Panics
    /// When `xp` or `cols` is too short for the geometry, or `k` holds
    /// fewer than `kh · kw` taps (checked once, before any read).
    #[inline(always)]
    pub fn plane<const FUSED: bool>(
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
        debug_assert_eq!(phases, stride[1].max(1));
        if ow == 0 || out.len() < ow {
            return;
        }
        let (oh, sx) = (out.len() / ow, phases.max(1));
        let ([kh, kw], [sy, _], [dy, dx]) = (kernel, stride, dilation);
        if kh == 0 || kw == 0 {
            out.fill(bias);
            return;
        }
        // Every read below lies within `xp`: the last tap of the last
        // output row reads padded row `(oh−1)·sy + (kh−1)·dy`, and within
        // a run at most `⌈ow/16⌉·16 + (kw−1)·dx / sx` values from its
        // start (see `Padded::of`).
        let last_row = (oh - 1)
            .checked_mul(sy)
            .zip(kh.checked_sub(1).and_then(|k| k.checked_mul(dy)))
            .and_then(|(a, b)| a.checked_add(b));
        let run = kw
            .checked_sub(1)
            .and_then(|k| k.checked_mul(dx))
            .and_then(|r| (ow.div_ceil(CHUNK) * CHUNK).checked_add(r / sx));
        let fits = match (last_row, run) {
            (Some(r), Some(run)) => {
                run <= cols
                    && r.checked_add(1)
                        .and_then(|n| n.checked_mul(sx))
                        .and_then(|n| n.checked_mul(cols))
                        .is_some_and(|n| n <= xp.len())
            }
            _ => false,
        };
        assert!(
            fits && kh.checked_mul(kw).is_some_and(|n| n <= k.len()),
            "a depthwise plane past its padded input"
        );
        let g = Geometry {
            sx,
            cols,
            kernel,
            stride,
            dilation,
            bias,
            ow,
        };
        let mut blocks = out.chunks_exact_mut(ROWS * ow);
        let mut oy = 0;
        for block in &mut blocks {
            // SAFETY: `plane`'s assertion above covers rows oy..oy + ROWS.
            unsafe {
                match (sx, dx) {
                    (1, 1) => rows::<ROWS, true, FUSED>(xp, k, &g, oy, block),
                    _ => rows::<ROWS, false, FUSED>(xp, k, &g, oy, block),
                }
            };
            oy += ROWS;
        }
        for row in blocks.into_remainder().chunks_exact_mut(ow) {
            // SAFETY: as above, row oy < oh.
            unsafe { rows::<1, false, FUSED>(xp, k, &g, oy, row) };
            oy += 1;
        }
    }

    /// Output rows computed at once.
    pub const ROWS: usize = 4;

    /// A plane's geometry, as [`plane`] takes it.
    struct Geometry {
        sx: usize,
        cols: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
        bias: f32,
        ow: usize,
    }

    /// Output rows `oy..oy + R` (`out`: `R × ow`), [`CHUNK`] columns at a
    /// time: per tap, each row's [`CHUNK`] inputs read at once and added
    /// into its sums (no bound checked per tap: the caller checked them
    /// all). `DENSE`: stride and dilation 1 across, a tap's inputs one
    /// value after the last one's. `FUSED`: each multiply-add in one
    /// rounding.
    ///
    /// # Safety
    /// `xp`, `cols` and `k` hold what [`plane`] asserts for output rows
    /// `oy..oy + R`.
    #[inline(always)]
    unsafe fn rows<const R: usize, const DENSE: bool, const FUSED: bool>(
        xp: &[f32],
        k: &[f32],
        g: &Geometry,
        oy: usize,
        out: &mut [f32],
    ) {
        let ([kh, kw], [sy, _], [dy, dx]) = (g.kernel, g.stride, g.dilation);
        let (sx, cols, ow) = (g.sx, g.cols, g.ow);
        let row_len = sx * cols;
        let base = xp.as_ptr();
        let mut ox0 = 0;
        while ox0 < ow {
            let n = (ow - ox0).min(CHUNK);
            let mut acc = [[g.bias; CHUNK]; R];
            for ky in 0..kh {
                let starts: [usize; R] =
                    std::array::from_fn(|i| ((oy + i) * sy + ky * dy) * row_len + ox0);
                // Column `ox·sx + kx·dx` is in run `(kx·dx) mod sx`, at
                // `ox + (kx·dx) / sx`: (quotient, remainder) kept as `kx`
                // steps, no division per tap.
                let (mut q, mut rem) = (0usize, 0usize);
                for &wv in &k[ky * kw..(ky + 1) * kw] {
                    let off = if DENSE { q } else { rem * cols + q };
                    for (acc, start) in acc.iter_mut().zip(starts) {
                        // SAFETY: `start + off + CHUNK` is at most the end
                        // of padded row `(oy + i)·sy + ky·dy`, which the
                        // caller checked lies within `xp`; an unaligned
                        // read of plain f32 values.
                        let v: [f32; CHUNK] = unsafe {
                            std::ptr::read_unaligned(base.add(start + off).cast::<[f32; CHUNK]>())
                        };
                        for (a, v) in acc.iter_mut().zip(&v) {
                            *a = if FUSED {
                                wv.mul_add(*v, *a)
                            } else {
                                *a + wv * v
                            };
                        }
                    }
                    if DENSE {
                        q += 1;
                    } else if sx == 1 {
                        q += dx;
                    } else {
                        rem += dx;
                        while rem >= sx {
                            rem -= sx;
                            q += 1;
                        }
                    }
                }
            }
            for (i, acc) in acc.iter().enumerate() {
                let dst = &mut out[i * ow + ox0..i * ow + ox0 + n];
                if n == CHUNK {
                    // A whole chunk: a copy of known length (vector stores,
                    // not a library call).
                    dst.copy_from_slice(acc);
                } else {
                    dst.copy_from_slice(&acc[..n]);
                }
            }
            ox0 += n;
        }
    }
}

/// One output channel of a depthwise convolution, from its padded input:
/// [`plain::plane`], fused where [`Level::fuses`], compiled for `level`.
#[inline]
pub fn plane(
    level: Level,
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
    let args = (xp, phases, cols, k, kernel, stride, dilation, bias, ow, out);
    if level.fuses() {
        plane_as::<true>(level, args)
    } else {
        plane_as::<false>(level, args)
    }
}

/// Whether `level` computes this geometry's planes straight from the
/// unpadded channel ([`plane_unpadded`]): AVX-512, for stride 1 or 2 both
/// ways and dilation 1, with 3, 5 or 7 tap rows and at most 16 across.
pub fn reads_unpadded(
    level: Level,
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx512 {
        return super::x86_64::depthwise::runs(kernel, stride, dilation);
    }
    let _ = (level, kernel, stride, dilation);
    false
}

/// [`plane`] (dilation 1) of the plane [`pad_plane`] makes of
/// `x` (`h × w`, one channel) with `pad`, read straight from `x` where
/// [`reads_unpadded`] says `level` can: the same values, bit for bit
/// (tested), with no padded copy written or read.
///
/// # Panics
/// Where [`reads_unpadded`] is false, `x` is not `h × w` values, or `k`
/// holds fewer than the kernel's taps.
pub fn plane_unpadded(
    level: Level,
    x: &[f32],
    hw: [usize; 2],
    pad: [usize; 2],
    k: &[f32],
    kernel: [usize; 2],
    stride: [usize; 2],
    bias: f32,
    ow: usize,
    out: &mut [f32],
) {
    assert!(
        reads_unpadded(level, kernel, stride, [1, 1]),
        "no unpadded depthwise kernel for {level:?}"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `Level::Avx512` (asserted above) is only chosen where the
    // CPU has AVX-512 F.
    unsafe {
        super::x86_64::depthwise::avx512(x, hw, pad, k, kernel, stride, bias, ow, out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (x, hw, pad, k, stride, bias, ow, out);
}

/// [`plane`]'s arguments, in order.
type PlaneArgs<'a> = (
    &'a [f32],
    usize,
    usize,
    &'a [f32],
    [usize; 2],
    [usize; 2],
    [usize; 2],
    f32,
    usize,
    &'a mut [f32],
);

/// [`plain::plane`] (`FUSED` as [`Level::fuses`] says) compiled for `level`.
#[inline(always)]
fn plane_as<const FUSED: bool>(level: Level, args: PlaneArgs<'_>) {
    match level {
        // SAFETY: `Level::Sse41` is only chosen where the CPU has SSE4.1.
        #[cfg(target_arch = "x86_64")]
        Level::Sse41 => unsafe { x86::sse41::<FUSED>(args) },
        // SAFETY: `Level::Avx2` is only chosen where the CPU has AVX2 and
        // FMA.
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { x86::avx2::<FUSED>(args) },
        // SAFETY: `Level::Avx512` is only chosen where the CPU has AVX-512
        // F, BW and VL, AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { x86::avx512::<FUSED>(args) },
        _ => {
            let (xp, phases, cols, k, kernel, stride, dilation, bias, ow, out) = args;
            plain::plane::<FUSED>(xp, phases, cols, k, kernel, stride, dilation, bias, ow, out)
        }
    }
}

/// The plain source compiled for each x86_64 level.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{plain, PlaneArgs};

    #[target_feature(enable = "sse4.1")]
    pub(super) unsafe fn sse41<const FUSED: bool>(
        (xp, phases, cols, k, kernel, stride, dilation, bias, ow, out): PlaneArgs<'_>,
    ) {
        plain::plane::<FUSED>(xp, phases, cols, k, kernel, stride, dilation, bias, ow, out)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2<const FUSED: bool>(
        (xp, phases, cols, k, kernel, stride, dilation, bias, ow, out): PlaneArgs<'_>,
    ) {
        plain::plane::<FUSED>(xp, phases, cols, k, kernel, stride, dilation, bias, ow, out)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    pub(super) unsafe fn avx512<const FUSED: bool>(
        (xp, phases, cols, k, kernel, stride, dilation, bias, ow, out): PlaneArgs<'_>,
    ) {
        plain::plane::<FUSED>(xp, phases, cols, k, kernel, stride, dilation, bias, ow, out)
    }
}

#[cfg(test)]
mod tests;
