//! The native engine's element-wise, reduction, normalisation, pooling and
//! data-movement ops, on f32 slices with shapes and strides fixed at load.
//! Plain loops: these move little data next to the matrix products.

use crate::engine::schedule::ops::{
    is_row_major, AroundAxis, Binary, Pool2d, Reduce, Unary, MAX_RANK,
};
use crate::kernels::elementwise::{self as ew, fast_exp, Level};

/// Calls `f` with the start offsets (in each of `N` operands) of every
/// innermost row of `dims`; the caller walks the row (length
/// `dims[last]`) with the operands' last strides. No allocation.
pub fn for_each_row<const N: usize>(
    dims: &[usize],
    strides: [&[usize]; N],
    f: impl FnMut([usize; N]),
) {
    for_each_row_from(dims, strides, 0, usize::MAX, f)
}

/// As [`for_each_row`], for the `count` rows from row `first` on (rows
/// numbered in order, the last outer axis fastest): a thread's share.
pub fn for_each_row_from<const N: usize>(
    dims: &[usize],
    strides: [&[usize]; N],
    first: usize,
    count: usize,
    mut f: impl FnMut([usize; N]),
) {
    let r = dims.len();
    if count == 0 {
        return;
    }
    if r == 0 {
        if first == 0 {
            f([0; N]);
        }
        return;
    }
    if dims.contains(&0) {
        return;
    }
    let outer = &dims[..r - 1];
    let mut idx = [0usize; MAX_RANK];
    let mut off = [0usize; N];
    let mut rest = first;
    for a in (0..outer.len()).rev() {
        idx[a] = rest % outer[a];
        rest /= outer[a];
        for (o, s) in off.iter_mut().zip(&strides) {
            *o += s[a] * idx[a];
        }
    }
    if rest > 0 {
        return; // `first` is past the last row
    }
    let mut left = count;
    loop {
        f(off);
        left -= 1;
        if left == 0 {
            return;
        }
        // Increment the outer index (last outer axis fastest).
        let mut a = outer.len();
        loop {
            if a == 0 {
                return;
            }
            a -= 1;
            idx[a] += 1;
            for (o, s) in off.iter_mut().zip(&strides) {
                *o += s[a];
            }
            if idx[a] < outer[a] {
                break;
            }
            for (o, s) in off.iter_mut().zip(&strides) {
                *o -= s[a] * outer[a];
            }
            idx[a] = 0;
        }
    }
}

/// `out = a ∘ b` over `dims` (`sa`, `sb` broadcast strides), for the
/// innermost rows from `first_row` on, as many as `out` (contiguous) holds:
/// the whole output, or one thread's share of it.
#[allow(clippy::too_many_arguments)]
pub fn binary_rows(
    lv: Level,
    op: Binary,
    dims: &[usize],
    a: &[f32],
    sa: &[usize],
    b: &[f32],
    sb: &[usize],
    first_row: usize,
    out: &mut [f32],
) {
    let n = dims.last().copied().unwrap_or(1);
    let (ia, ib) = (
        sa.last().copied().unwrap_or(0),
        sb.last().copied().unwrap_or(0),
    );
    let rows = out.len() / n.max(1);
    let mut o = 0;
    for_each_row_from(dims, [sa, sb], first_row, rows, |[oa, ob]| {
        ew::binary(lv, op, &a[oa..], ia, &b[ob..], ib, &mut out[o..o + n]);
        o += n;
    });
}

pub fn unary(lv: Level, op: Unary, x: &[f32], out: &mut [f32]) {
    ew::map(lv, op, Some(x), out)
}

/// `y = f(y)` in place (a fused epilogue).
pub fn unary_in_place(lv: Level, op: Unary, y: &mut [f32]) {
    ew::map(lv, op, None, y)
}

/// A fused binary epilogue in place: `y = y ∘ other` (`other ∘ y` unless
/// `y_first`) over the rows of `dims` from `first_row` on that `y` holds,
/// `other` read through its broadcast strides `so`.
#[allow(clippy::too_many_arguments)]
pub fn binary_post(
    lv: Level,
    op: Binary,
    y_first: bool,
    dims: &[usize],
    other: &[f32],
    so: &[usize],
    first_row: usize,
    y: &mut [f32],
) {
    let n = dims.last().copied().unwrap_or(1);
    let io = so.last().copied().unwrap_or(0);
    let rows = y.len() / n.max(1);
    if is_row_major(dims, so) {
        // `other` laid out as the output (a residual): one call.
        let from = first_row * n;
        let len = rows * n;
        if let Some(other) = other.get(from..from + len) {
            return ew::binary_in_place(lv, op, y_first, other, 1, &mut y[..len]);
        }
    }
    let mut at = 0;
    for_each_row_from(dims, [so], first_row, rows, |[oo]| {
        ew::binary_in_place(lv, op, y_first, &other[oo..], io, &mut y[at..at + n]);
        at += n;
    });
}

/// Reduces `x` (of `dims`, strides `sx`) into `out` (contiguous, the
/// reduced axes of size 1); `so` is `out`'s broadcast strides over `dims`;
/// `count` is the number of values reduced into each output (for means).
#[allow(clippy::too_many_arguments)]
pub fn reduce(
    lv: Level,
    op: Reduce,
    dims: &[usize],
    x: &[f32],
    sx: &[usize],
    so: &[usize],
    count: usize,
    out: &mut [f32],
) {
    let init = match op {
        Reduce::Sum | Reduce::MeanOfSquares => 0.0,
        Reduce::Max | Reduce::AbsMax => f32::NEG_INFINITY,
        Reduce::Min => f32::INFINITY,
    };
    out.fill(init);
    let n = dims.last().copied().unwrap_or(1);
    let io = so.last().copied().unwrap_or(0);
    for_each_row(dims, [sx, so], |[ox, oo]| {
        let row = &x[ox..ox + n];
        if io == 0 {
            let acc = &mut out[oo];
            match op {
                Reduce::Sum => *acc += row.iter().sum::<f32>(),
                Reduce::MeanOfSquares => *acc += row.iter().map(|v| v * v).sum::<f32>(),
                Reduce::Max => *acc = acc.max(ew::max(lv, row)),
                Reduce::AbsMax => *acc = acc.max(ew::abs_max(lv, row)),
                Reduce::Min => *acc = row.iter().fold(*acc, |m, v| m.min(*v)),
            }
        } else {
            for (t, v) in row.iter().enumerate() {
                let acc = &mut out[oo + t * io];
                match op {
                    Reduce::Sum => *acc += v,
                    Reduce::MeanOfSquares => *acc += v * v,
                    Reduce::Max => *acc = acc.max(*v),
                    Reduce::AbsMax => *acc = acc.max(v.abs()),
                    Reduce::Min => *acc = acc.min(*v),
                }
            }
        }
    });
    if op == Reduce::MeanOfSquares {
        let c = count.max(1) as f32;
        out.iter_mut().for_each(|v| *v /= c);
    }
}

/// Softmax along the axis.
pub fn softmax(lv: Level, a: AroundAxis, x: &[f32], out: &mut [f32]) {
    if a.inner == 1 {
        // The axis is the last: contiguous rows.
        for (xr, or) in x
            .chunks_exact(a.n.max(1))
            .zip(out.chunks_exact_mut(a.n.max(1)))
        {
            ew::softmax(lv, xr, or);
        }
        return;
    }
    for o in 0..a.outer {
        for i in 0..a.inner {
            let at = |t: usize| o * a.n * a.inner + t * a.inner + i;
            let max = (0..a.n).fold(f32::NEG_INFINITY, |m, t| m.max(x[at(t)]));
            let mut sum = 0f32;
            for t in 0..a.n {
                let e = fast_exp(x[at(t)] - max);
                out[at(t)] = e;
                sum += e;
            }
            let inv = 1.0 / sum;
            for t in 0..a.n {
                out[at(t)] *= inv;
            }
        }
    }
}

/// `x · rsqrt(mean(x²) + eps)` along the axis (tract's `RmsNorm`); with
/// `center`, of `x - mean(x)` (LayerNorm's core: the graph's ten-odd
/// element-wise passes in two).
pub fn rms_norm(lv: Level, a: AroundAxis, eps: f32, center: bool, x: &[f32], out: &mut [f32]) {
    if a.inner == 1 {
        // The axis is the last: contiguous rows.
        for (xr, or) in x
            .chunks_exact(a.n.max(1))
            .zip(out.chunks_exact_mut(a.n.max(1)))
        {
            ew::norm(lv, eps, center, xr, or);
        }
        return;
    }
    let inv_n = 1.0 / a.n.max(1) as f32;
    for o in 0..a.outer {
        for i in 0..a.inner {
            let at = |t: usize| o * a.n * a.inner + t * a.inner + i;
            let mean = if center {
                (0..a.n).map(|t| x[at(t)]).sum::<f32>() * inv_n
            } else {
                0.0
            };
            let ms = (0..a.n)
                .map(|t| (x[at(t)] - mean) * (x[at(t)] - mean))
                .sum::<f32>()
                * inv_n;
            let r = 1.0 / (ms + eps).sqrt();
            for t in 0..a.n {
                out[at(t)] = (x[at(t)] - mean) * r;
            }
        }
    }
}

/// Copies a strided view of `src` (its `dims`, starting at `src_off`, with
/// `ss` strides) into `dst` at `dst_off` with `sd` strides.
pub fn copy(
    dims: &[usize],
    src: &[f32],
    src_off: usize,
    ss: &[usize],
    dst: &mut [f32],
    dst_off: usize,
    sd: &[usize],
) {
    let n = dims.last().copied().unwrap_or(1);
    let (is, id) = (
        ss.last().copied().unwrap_or(1),
        sd.last().copied().unwrap_or(1),
    );
    for_each_row(dims, [ss, sd], |[os, od]| {
        let (os, od) = (os + src_off, od + dst_off);
        if is == 1 && id == 1 {
            dst[od..od + n].copy_from_slice(&src[os..os + n]);
        } else {
            for t in 0..n {
                dst[od + t * id] = src[os + t * is];
            }
        }
    });
}

/// As [`copy`] into a destination written whole and in order (`dst_off`
/// 0, row-major strides): the rows from `first_row` on that `out` holds
/// (one thread's share).
pub fn copy_rows(
    dims: &[usize],
    src: &[f32],
    src_off: usize,
    ss: &[usize],
    first_row: usize,
    out: &mut [f32],
) {
    let n = dims.last().copied().unwrap_or(1);
    let is = ss.last().copied().unwrap_or(1);
    let rows = out.len() / n.max(1);
    let mut at = 0;
    for_each_row_from(dims, [ss], first_row, rows, |[os]| {
        let (os, row) = (os + src_off, &mut out[at..at + n]);
        if is == 1 {
            row.copy_from_slice(&src[os..os + n]);
        } else {
            for (t, d) in row.iter_mut().enumerate() {
                *d = src[os + t * is];
            }
        }
        at += n;
    });
}

/// Channels `c0..` of the output, as many as `out` holds (one thread's
/// share, or all).
pub fn sum_pool(p: &Pool2d, x: &[f32], c0: usize, out: &mut [f32]) {
    let planes = out.len() / (p.oh * p.ow).max(1);
    // Every window inside the plane (RN50's 2 × 2 and 7 × 7 pools): an
    // output row at a time, each window's values added in the same order
    // as below (rows, then columns, from 0), so the same sums, bit for
    // bit, without a bounds test per value.
    let inside = p.pad == [0, 0]
        && p.oh > 0
        && p.ow > 0
        && (p.oh - 1) * p.stride[0] + p.k[0] <= p.h
        && (p.ow - 1) * p.stride[1] + p.k[1] <= p.w;
    if inside {
        let div = (p.k[0] * p.k[1]) as f32;
        for c in c0..(c0 + planes).min(p.c) {
            let plane = &x[c * p.h * p.w..(c + 1) * p.h * p.w];
            let base = (c - c0) * p.oh * p.ow;
            for (oy, row) in out[base..base + p.oh * p.ow]
                .chunks_exact_mut(p.ow)
                .enumerate()
            {
                row.fill(0.0);
                for ky in 0..p.k[0] {
                    let line = &plane[(oy * p.stride[0] + ky) * p.w..][..p.w];
                    for kx in 0..p.k[1] {
                        for (ox, v) in row.iter_mut().enumerate() {
                            *v += line[ox * p.stride[1] + kx];
                        }
                    }
                }
                if p.normalize {
                    for v in row.iter_mut() {
                        *v /= div;
                    }
                }
            }
        }
        return;
    }
    for c in c0..(c0 + planes).min(p.c) {
        let plane = &x[c * p.h * p.w..(c + 1) * p.h * p.w];
        for oy in 0..p.oh {
            for ox in 0..p.ow {
                let (mut sum, mut count) = (0f32, 0usize);
                for ky in 0..p.k[0] {
                    let y = (oy * p.stride[0] + ky).wrapping_sub(p.pad[0]);
                    for kx in 0..p.k[1] {
                        let xx = (ox * p.stride[1] + kx).wrapping_sub(p.pad[1]);
                        if y < p.h && xx < p.w {
                            sum += plane[y * p.w + xx];
                            count += 1;
                        }
                    }
                }
                let count = if p.count_include_pad {
                    p.k[0] * p.k[1]
                } else {
                    count
                };
                out[((c - c0) * p.oh + oy) * p.ow + ox] = if p.normalize && count > 0 {
                    sum / count as f32
                } else {
                    sum
                };
            }
        }
    }
}

#[cfg(test)]
mod tests;
