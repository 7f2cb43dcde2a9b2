//! Row kernels of an image resize's two passes (Pillow's fixed-point
//! convolution resampler, see `preprocess`): the horizontal pass's taps
//! over a row of pixels widened to four i32 lanes each, four pixels (16
//! lanes) a step, and the vertical pass's one-tap-a-row sums.
//!
//! Every kernel is written once, plainly, in [`plain`]. The vertical ones
//! are compiled again for each x86_64 level like the element-wise rows;
//! the horizontal ones have AVX2 and AVX-512 intrinsic copies
//! (`x86_64::resample`). All sums are wrapping i32 sums, so every copy, in
//! any order of taps, gives Pillow's sums in its order (tested).

use super::elementwise::{compiled, Level};

/// The horizontal taps of one resize axis, checked once so that the
/// per-row kernels read only inside their rows: per output the first
/// input pixel (from the row's first pixel the taps read) and the number
/// of taps, and the coefficients, `steps` (the most taps, rounded up to a
/// multiple of four) an output, zero past each output's taps.
#[derive(Debug, Default, Clone)]
pub struct RowTaps {
    pub(super) bounds: Vec<(usize, usize)>,
    pub(super) k: Vec<i32>,
    pub(super) steps: usize,
    reach: usize,
}

impl RowTaps {
    /// Takes `bounds` (per output: first input pixel, taps) and
    /// `ksize`-strided coefficients `k`; reuses its buffers.
    ///
    /// Panics unless `k` holds `ksize` coefficients for every output.
    pub fn set(&mut self, bounds: &[(usize, usize)], k: &[i32], ksize: usize) {
        assert!(
            k.len() >= bounds.len() * ksize,
            "resample taps: {} coefficients for {} outputs of {ksize}",
            k.len(),
            bounds.len()
        );
        let lo = bounds.iter().map(|b| b.0).min().unwrap_or(0);
        let steps = bounds
            .iter()
            .map(|b| b.1.min(ksize).div_ceil(4) * 4)
            .max()
            .unwrap_or(0);
        self.steps = steps;
        self.bounds.clear();
        self.k.clear();
        self.k.resize(bounds.len() * steps, 0);
        self.reach = 0;
        for (j, &(xmin, n)) in bounds.iter().enumerate() {
            let n = n.min(ksize);
            self.bounds.push((xmin - lo, n));
            self.k[j * steps..j * steps + n].copy_from_slice(&k[j * ksize..j * ksize + n]);
            self.reach = self.reach.max(xmin - lo + n.div_ceil(4) * 4);
        }
    }

    /// Outputs.
    pub fn len(&self) -> usize {
        self.bounds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bounds.is_empty()
    }

    /// Widened pixels a row must hold: the taps are read four at a time.
    pub fn reach(&self) -> usize {
        self.reach
    }
}

/// The plain source of every kernel here (and the twin of the others).
pub mod plain {
    use super::RowTaps;

    /// An image resize's horizontal taps over one row widened to four i32
    /// lanes a pixel (`wide`, from the first pixel `taps` reads): output
    /// `j`'s `ch` bytes are `clamp((half + Σ_t wide[x_j + t] · k_jt) >>
    /// shift, 0, 255)` per lane, wrapping sums.
    ///
    /// Panics unless `wide` holds `taps.reach()` pixels and `out` every
    /// output's `ch` (3 or 4) bytes.
    #[inline(always)]
    pub fn taps(
        taps: &RowTaps,
        wide: &[[i32; 4]],
        (half, shift): (i32, u32),
        ch: usize,
        out: &mut [u8],
    ) {
        super::check(taps, wide, ch, out);
        let wide = wide.as_flattened();
        let steps = taps.steps;
        for (j, &(x, n)) in taps.bounds.iter().enumerate() {
            let kk = &taps.k[j * steps..(j + 1) * steps];
            let mut acc = [0i32; 16];
            for g in 0..n.div_ceil(4) {
                let px: &[i32; 16] = wide[x * 4 + g * 16..x * 4 + g * 16 + 16]
                    .try_into()
                    .expect("16 lanes");
                for l in 0..16 {
                    acc[l] = acc[l].wrapping_add(px[l].wrapping_mul(kk[g * 4 + l / 4]));
                }
            }
            for c in 0..ch {
                let s = half
                    .wrapping_add(acc[c])
                    .wrapping_add(acc[4 + c])
                    .wrapping_add(acc[8 + c])
                    .wrapping_add(acc[12 + c]);
                out[j * ch + c] = (s >> shift).clamp(0, 255) as u8;
            }
        }
    }

    /// A row of 3- or 4-channel pixels (`ch`) widened to four i32 lanes
    /// each (the fourth 0 for three channels).
    #[inline(always)]
    pub fn widen(src: &[u8], ch: usize, out: &mut [[i32; 4]]) {
        assert!(ch == 3 || ch == 4, "widen: {ch} channels");
        if ch == 3 {
            for (w, px) in out.iter_mut().zip(src.chunks_exact(3)) {
                *w = [px[0] as i32, px[1] as i32, px[2] as i32, 0];
            }
        } else {
            for (w, px) in out.iter_mut().zip(src.chunks_exact(4)) {
                *w = [px[0] as i32, px[1] as i32, px[2] as i32, px[3] as i32];
            }
        }
    }

    /// One tap of an image resize's vertical pass: `acc += row · k`,
    /// wrapping.
    #[inline(always)]
    pub fn accumulate(acc: &mut [i32], row: &[u8], k: i32) {
        for (a, &p) in acc.iter_mut().zip(row) {
            *a = a.wrapping_add((p as i32).wrapping_mul(k));
        }
    }

    /// A resize's fixed-point sums to bytes: `clamp(acc >> shift, 0, 255)`.
    #[inline(always)]
    pub fn narrow(acc: &[i32], shift: u32, out: &mut [u8]) {
        for (o, &a) in out.iter_mut().zip(acc) {
            *o = (a >> shift).clamp(0, 255) as u8;
        }
    }
}

/// What every copy of [`taps`] relies on to read and write in bounds.
pub(super) fn check(taps: &RowTaps, wide: &[[i32; 4]], ch: usize, out: &[u8]) {
    assert!(
        (ch == 3 || ch == 4) && wide.len() >= taps.reach && out.len() >= taps.len() * ch,
        "resample taps: {} outputs of {ch} channels reaching {} pixels, a row of {} and {} bytes out",
        taps.len(),
        taps.reach,
        wide.len(),
        out.len()
    );
}

/// [`plain::taps`] (intrinsics with AVX2 and AVX-512).
#[inline]
pub fn taps(
    level: Level,
    taps: &RowTaps,
    wide: &[[i32; 4]],
    sums: (i32, u32),
    ch: usize,
    out: &mut [u8],
) {
    #[cfg(target_arch = "x86_64")]
    use super::x86_64::resample as x86;
    match level {
        // SAFETY: `Level::Sse41` is only chosen where the CPU has SSE4.1.
        #[cfg(target_arch = "x86_64")]
        Level::Sse41 => unsafe { x86::taps_sse41(taps, wide, sums, ch, out) },
        // SAFETY: `Level::Avx2` is only chosen where the CPU has AVX2.
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { x86::taps_avx2(taps, wide, sums, ch, out) },
        // SAFETY: `Level::Avx512` is only chosen where the CPU has AVX-512
        // F, BW and VL and AVX2.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { x86::taps_avx512(taps, wide, sums, ch, out) },
        _ => plain::taps(taps, wide, sums, ch, out),
    }
}

/// [`plain::widen`] (intrinsics with AVX2 and AVX-512).
#[inline]
pub fn widen(level: Level, src: &[u8], ch: usize, out: &mut [[i32; 4]]) {
    #[cfg(target_arch = "x86_64")]
    use super::x86_64::resample as x86;
    match level {
        // SAFETY: `Level::Sse41` is only chosen where the CPU has SSE4.1.
        #[cfg(target_arch = "x86_64")]
        Level::Sse41 => unsafe { x86::widen_sse41(src, ch, out) },
        // SAFETY: `Level::Avx2` is only chosen where the CPU has AVX2 (and
        // so SSSE3).
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { x86::widen_avx2(src, ch, out) },
        // SAFETY: `Level::Avx512` is only chosen where the CPU has AVX-512
        // F and AVX2.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { x86::widen_avx512(src, ch, out) },
        _ => plain::widen(src, ch, out),
    }
}

/// Asks for `bytes` to be brought into the cache (the next row a pass
/// reads, while it computes this one); nothing where no copy does.
#[inline]
pub fn prefetch(level: Level, bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    if level != Level::Plain {
        super::x86_64::resample::prefetch(bytes);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (level, bytes);
}

compiled! {
    /// One tap of an image resize's vertical pass.
    fn accumulate(acc: &mut [i32], row: &[u8], k: i32);
    /// A resize's fixed-point sums to bytes.
    fn narrow(acc: &[i32], shift: u32, out: &mut [u8]);
}

#[cfg(test)]
mod tests;
