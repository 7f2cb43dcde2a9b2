//! Copies folded into the products that read them: a step that only
//! rearranges a tensor (a transpose, a head split, a slice), whose one
//! reader is a matrix product, disappears; the product reads the copy's
//! source through offset tables composed with the copy's strides. The
//! products already read their operands through offset tables (per batch,
//! row and depth), so this moves no arithmetic: it drops a pass over the
//! tensor, and on the GPU a launch (about 48 of ViT-B/32's 87 copies).
//!
//! Run on the lowered schedule before the arena is planned (the source
//! then lives until the product runs).

use super::ir::{Kind, Lowered, Operand};
use super::ops::{is_row_major, MAX_RANK};

/// Most (batch, row, depth) combinations checked for one fold (at load).
const MAX_CHECKS: usize = 1 << 22;

/// The copy's map from an offset in its (row-major) output to one in its
/// source, less the source offset: linear in each coordinate.
struct View<'a> {
    dims: &'a [usize],
    ss: &'a [usize],
}

impl View<'_> {
    fn at(&self, mut o: usize) -> usize {
        let mut off = 0;
        for (d, s) in self.dims.iter().zip(self.ss).rev() {
            off += (o % d.max(&1)) * s;
            o /= d.max(&1);
        }
        off
    }

    /// Composed tables `(batch, rows, depths)` when the map splits over
    /// them: `at(b + r + t) == at(b) + at(r) + at(t)` for every triple.
    fn compose(
        &self,
        batch: &[usize],
        rows: &[usize],
        depths: &[usize],
    ) -> Option<(Vec<usize>, Vec<usize>, Vec<usize>)> {
        if batch.len() * rows.len() * depths.len() > MAX_CHECKS {
            return None;
        }
        let (b2, r2, t2): (Vec<usize>, Vec<usize>, Vec<usize>) = (
            batch.iter().map(|&o| self.at(o)).collect(),
            rows.iter().map(|&o| self.at(o)).collect(),
            depths.iter().map(|&o| self.at(o)).collect(),
        );
        for (b, bb) in batch.iter().zip(&b2) {
            for (r, rr) in rows.iter().zip(&r2) {
                for (t, tt) in depths.iter().zip(&t2) {
                    if self.at(b + r + t) != bb + rr + tt {
                        return None;
                    }
                }
            }
        }
        Some((b2, r2, t2))
    }
}

/// Folds every foldable copy; returns how many.
pub fn fold_copies(l: &mut Lowered) -> usize {
    let n = l.lens.len();
    let mut readers = vec![0usize; n];
    for s in &l.steps {
        for o in s.inputs() {
            if let Operand::Val(v) = o {
                readers[v] += 1;
            }
        }
    }
    readers[l.output] += 1;
    // A value made by a single-part copy into the whole of a row-major
    // output, read once: (the copy's step).
    let mut copy_of = vec![None; n];
    for (i, s) in l.steps.iter().enumerate() {
        if let Kind::Copy { parts } = &s.kind {
            if let [p] = &parts[..] {
                let whole = p.dims.iter().product::<usize>() == l.lens[s.out];
                if whole
                    && p.dst_off == 0
                    && s.posts.is_empty()
                    && p.dims.len() <= MAX_RANK
                    && is_row_major(&p.dims, &p.sd)
                    && readers[s.out] == 1
                {
                    copy_of[s.out] = Some(i);
                }
            }
        }
    }
    let mut folded = 0;
    for j in 0..l.steps.len() {
        for side in [false, true] {
            let Kind::MatMul { a, b, .. } = &l.steps[j].kind else {
                break;
            };
            let operand = if side { *b } else { Some(*a) };
            let Some(Operand::Val(v)) = operand else {
                continue;
            };
            let Some(ci) = copy_of[v] else { continue };
            if ci >= j {
                continue;
            }
            let Kind::Copy { parts } = &l.steps[ci].kind else {
                continue;
            };
            let p = &parts[0];
            let (dims, ss, src, src_off) = (p.dims.clone(), p.ss.clone(), p.src, p.src_off);
            let view = View {
                dims: &dims,
                ss: &ss,
            };
            let Kind::MatMul { mm, a, b, .. } = &mut l.steps[j].kind else {
                continue;
            };
            if side {
                let super::linear::Rhs::Act { b_batch, b_n, b_k } = &mut mm.rhs else {
                    continue;
                };
                let Some((bb, bn, bk)) = view.compose(b_batch, b_n, b_k) else {
                    continue;
                };
                *b_batch = bb.iter().map(|o| o + src_off).collect();
                *b_n = bn;
                *b_k = bk;
                *b = Some(src);
            } else {
                let Some((ab, am, ak)) = view.compose(&mm.a_batch, &mm.a_m, &mm.a_k) else {
                    continue;
                };
                mm.a_batch = ab.iter().map(|o| o + src_off).collect();
                mm.a_m = am;
                mm.a_k_unit = ak.iter().enumerate().all(|(t, &o)| o == t);
                mm.a_k = ak;
                *a = src;
            }
            copy_of[v] = None;
            folded += 1;
        }
    }
    if folded > 0 {
        super::ir::prune(&mut l.steps, n, l.output);
    }
    folded
}
