//! A convolution's patches (im2col): each output pixel's receptive field
//! as one row or column of the product, gathered per frame from the NCHW
//! input, whole or in blocks, plain or straight into packed panels.

use crate::engine::schedule::linear::Conv;
use crate::kernels::float_panels;

impl Conv {
    /// A 1×1 convolution, stride 1, no padding: its patches, a row per
    /// depth, are its input.
    pub(super) fn pointwise(&self) -> bool {
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
    pub(super) fn im2col_rows<T: Copy + Default>(&self, x: &[T], t0: usize, rows: &mut [T]) {
        self.im2col_part(x, t0, 0, self.oh * self.ow, rows)
    }

    /// As [`Conv::im2col_rows`], each patch row holding only the output
    /// pixels `j0..j0 + p` (any span, whole output rows or not).
    pub(super) fn im2col_part<T: Copy + Default>(
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
    pub(super) fn im2col_panels(&self, x: &[f32], j0: usize, p: usize, out: &mut [f32]) {
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
    pub(super) fn tap_run<T: Copy + Default>(
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
    pub(super) fn im2col<T: Copy + Default>(&self, x: &[T], first: usize, cols: &mut [T]) {
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
}
