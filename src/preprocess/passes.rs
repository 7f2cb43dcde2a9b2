//! The two resize passes over blocks of rows, on the caller or split over
//! the compute pool's threads, each thread with its own scratch rows (every
//! row is computed as alone: the same bytes on any number of threads).

use std::sync::{Mutex, MutexGuard, PoisonError};

use super::resample::{resample_cols, resample_rows, AxisCoeffs, Window};
use crate::kernels::elementwise::Level;
use crate::kernels::pool::Pool;

/// Multiply-adds of a pass below which it runs on the caller alone (a
/// small image's pass takes less than waking the pool's threads).
pub(super) const MIN_PARALLEL_TAPS: usize = 1 << 18;

/// One thread's rows of the two passes.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    /// One output row's sums in the vertical pass.
    pub(super) acc: Vec<i32>,
    /// One input row of the horizontal pass for 3 and 4 channels, a pixel
    /// as four i32 lanes.
    pub(super) row: Vec<[i32; 4]>,
    /// The copy of the row kernels both passes run.
    pub(super) level: Level,
}

impl Scratch {
    /// Rows for a thread whose row kernels run on `level`'s copy.
    pub(super) fn new(level: Level) -> Scratch {
        Scratch {
            level,
            ..Scratch::default()
        }
    }
}

/// The scratch of the thread that runs the block starting at row `r0`,
/// blocks being `per` rows.
fn scratch_of(scratch: &[Mutex<Scratch>], r0: usize, per: usize) -> MutexGuard<'_, Scratch> {
    let i = (r0 / per.max(1)).min(scratch.len() - 1);
    scratch[i].lock().unwrap_or_else(PoisonError::into_inner)
}

/// The horizontal pass over `rows` rows of `src` from row `first` into
/// `out`, the rows split over `pool`'s threads when the pass is large.
#[allow(clippy::too_many_arguments)]
pub(super) fn horizontal(
    (pool, parallel_from): (Option<&Pool>, usize),
    scratch: &[Mutex<Scratch>],
    src: &[u8],
    stride: usize,
    first: usize,
    rows: usize,
    c: &AxisCoeffs,
    ch: usize,
    out: &mut [u8],
    out_stride: usize,
) {
    let job = |r0: usize, block: &mut [u8], per: usize| {
        let n = block.len() / out_stride.max(1);
        let mut s = scratch_of(scratch, r0, per);
        let s = &mut *s;
        resample_rows(
            src,
            stride,
            first + r0,
            n,
            c,
            ch,
            block,
            out_stride,
            (&mut s.row, s.level),
        );
    };
    match pool {
        Some(p) => {
            let per = p.per_thread(rows, 1);
            let per_output = c.k.len() / c.bounds.len().max(1);
            let taps = rows.saturating_mul(out_stride).saturating_mul(per_output);
            p.rows(taps, parallel_from, out, rows, out_stride, 1, &|r0, b| {
                job(r0, b, per)
            });
        }
        None => job(0, &mut out[..rows * out_stride], rows),
    }
}

/// The vertical pass into `out`'s rows (one per output of `c`), split
/// over `pool`'s threads when the pass is large.
pub(super) fn vertical(
    (pool, parallel_from): (Option<&Pool>, usize),
    scratch: &[Mutex<Scratch>],
    src: &[u8],
    w: Window,
    width: usize,
    c: &AxisCoeffs,
    out: &mut [u8],
) {
    let rows = c.bounds.len();
    let job = |r0: usize, block: &mut [u8], per: usize| {
        let n = block.len() / width.max(1);
        let mut s = scratch_of(scratch, r0, per);
        let s = &mut *s;
        resample_cols(src, w, width, c, r0..r0 + n, (&mut s.acc, s.level), block);
    };
    match pool {
        Some(p) => {
            let per = p.per_thread(rows, 1);
            let taps = width.saturating_mul(c.k.len());
            p.rows(taps, parallel_from, out, rows, width, 1, &|r0, b| {
                job(r0, b, per)
            });
        }
        None => job(0, &mut out[..rows * width], rows),
    }
}
