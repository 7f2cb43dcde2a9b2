//! The arena plan: one offset per tensor, fixed at load, from the tensors'
//! lifetimes, placed greedily by size (as TensorFlow Lite Micro's greedy
//! memory planner does): the largest first, each at the lowest offset where
//! it overlaps no tensor placed before it that is alive at the same time.

use super::ir::{Kind, LowerError, Lowered, Operand};

/// Offsets are multiples of this many f32 (64 bytes: a cache line, and
/// aligned for every SIMD load the kernels make).
pub const ALIGN: usize = 16;

/// One tensor: `len` values, alive from step `first` to step `last`
/// (both included: an op's output never shares memory with its inputs).
#[derive(Debug, Clone, Copy)]
pub struct Request {
    pub len: usize,
    pub first: usize,
    pub last: usize,
}

/// Returns each request's offset and the arena's length.
pub fn plan(reqs: &[Request]) -> (Vec<usize>, usize) {
    let mut order: Vec<usize> = (0..reqs.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(reqs[i].len), i));
    let mut offsets = vec![0usize; reqs.len()];
    let mut placed: Vec<usize> = Vec::with_capacity(reqs.len());
    let mut total = 0;
    for &i in &order {
        let r = reqs[i];
        let len = r.len.div_ceil(ALIGN) * ALIGN;
        // Busy ranges of the placed tensors alive at the same time, by offset.
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&j| reqs[j].first <= r.last && r.first <= reqs[j].last)
            .map(|&j| (offsets[j], offsets[j] + reqs[j].len.div_ceil(ALIGN) * ALIGN))
            .collect();
        busy.sort_unstable();
        let mut at = 0;
        for (start, end) in busy {
            if at + len <= start {
                break;
            }
            at = at.max(end);
        }
        offsets[i] = at;
        total = total.max(at + len);
        placed.push(i);
    }
    (offsets, total)
}

/// Whether two placed requests that are alive together overlap (a bug).
pub fn first_conflict(reqs: &[Request], offsets: &[usize]) -> Option<(usize, usize)> {
    for i in 0..reqs.len() {
        for j in i + 1..reqs.len() {
            let (a, b) = (reqs[i], reqs[j]);
            let together = a.first <= b.last && b.first <= a.last;
            let apart = offsets[i] + a.len <= offsets[j] || offsets[j] + b.len <= offsets[i];
            if together && a.len > 0 && b.len > 0 && !apart {
                return Some((i, j));
            }
        }
    }
    None
}

/// Every tensor's offset in one arena, from the tensors' lifetimes, and
/// the arena's length; the schedule's reads and writes checked against
/// their tensors first (shared by the CPU and GPU backends).
pub fn plan_arena(l: &Lowered) -> Result<(Vec<usize>, usize), LowerError> {
    let n = l.lens.len();
    let mut first = vec![usize::MAX; n];
    let mut last = vec![0usize; n];
    first[l.input] = 0;
    for (t, s) in l.steps.iter().enumerate() {
        first[s.out] = first[s.out].min(t);
        last[s.out] = last[s.out].max(t);
        for o in s.inputs() {
            if let Operand::Val(v) = o {
                last[v] = last[v].max(t);
            }
        }
    }
    last[l.output] = l.steps.len();
    let reqs: Vec<Request> = (0..n)
        .map(|v| Request {
            len: if first[v] == usize::MAX { 0 } else { l.lens[v] },
            first: first[v].min(last[v]),
            last: last[v],
        })
        .collect();
    super::bounds::check_bounds(l).map_err(|why| LowerError {
        node: "graph".into(),
        op: "bounds".into(),
        why,
    })?;
    let (offsets, total) = plan(&reqs);
    if let Some((a, b)) = first_conflict(&reqs, &offsets) {
        return Err(LowerError {
            node: "graph".into(),
            op: "arena".into(),
            why: format!("the arena plan overlaps values {a} and {b}"),
        });
    }
    Ok((offsets, total))
}

/// An op's class and precision, e.g. `linear/int8`, `softmax`.
pub fn op_key(kind: &Kind) -> String {
    match kind {
        Kind::MatMul { mm, .. } => format!("{}/{}", kind.class(), mm.precision()),
        Kind::Conv { conv, .. } => format!("{}/{}", kind.class(), conv.precision()),
        k => k.class().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn tensors_alive_together_never_overlap(v in prop::collection::vec((1usize..500, 0usize..30, 0usize..8), 1..40)) {
            let reqs: Vec<Request> = v.iter().map(|&(len, first, span)| Request { len, first, last: first + span }).collect();
            let (offsets, total) = plan(&reqs);
            prop_assert_eq!(first_conflict(&reqs, &offsets), None);
            for (r, o) in reqs.iter().zip(&offsets) {
                prop_assert!(o % ALIGN == 0 && o + r.len <= total);
            }
        }
    }

    #[test]
    fn an_overlap_is_caught() {
        let reqs = [
            Request {
                len: 10,
                first: 0,
                last: 2,
            },
            Request {
                len: 10,
                first: 1,
                last: 3,
            },
            Request {
                len: 10,
                first: 3,
                last: 4,
            },
        ];
        // The first two are alive together at 1..=2: sharing memory is a bug.
        assert_eq!(first_conflict(&reqs, &[0, 5, 100]), Some((0, 1)));
        // Apart in memory, or apart in time: fine.
        assert_eq!(first_conflict(&reqs, &[0, 10, 100]), None);
        assert_eq!(first_conflict(&reqs, &[0, 16, 0]), None);
    }

    #[test]
    fn a_chain_reuses_memory() {
        // a -> b -> c -> d, each used only by the next: two buffers suffice.
        let reqs: Vec<Request> = (0..4)
            .map(|i| Request {
                len: 100,
                first: i,
                last: i + 1,
            })
            .collect();
        let (_, total) = plan(&reqs);
        assert_eq!(total, 2 * 112);
    }
}
