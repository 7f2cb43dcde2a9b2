//! The native engine: the bundle's graph lowered once, at load, to the
//! schedule ([`crate::engine::schedule`]: our ops over one arena), its
//! weights packed for the CPU's kernel path ([`pack`]), run by our kernels
//! ([`crate::kernels`]): products ([`matmul`]), convolutions ([`conv`],
//! [`winograd`]) and the rest ([`ops`]).
//! A frame runs the schedule in order: no allocation, no lock; on one thread
//! no system call (with more, waking parked workers, about once a frame).
//! Every offset an op will read or write is checked against its tensor at
//! load ([`crate::engine::schedule::check_bounds`]): a hostile graph is
//! refused, it cannot index out of range per frame.

mod conv;
mod depthwise;
mod exec;
mod im2col;
mod matmul;
pub mod ops;
pub mod pack;
mod scratch;
pub mod section;
pub mod winograd;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

#[cfg(feature = "tract")]
use tract_core::internal::TypedModel;

use crate::engine::schedule::ir::{self, Kind, LowerError, Step};
pub use crate::engine::schedule::linear::FloatWeights;
use crate::engine::schedule::linear::Rhs;
use crate::engine::schedule::{self as sched, op_key, plan_arena};
#[cfg(feature = "tract")]
use crate::engine::schedule::{fold, lower};
use crate::kernels::pool::Pool;
use crate::kernels::Kernels;
#[cfg(feature = "tract")]
use crate::kernels::Packing;
use scratch::{Scratch, ScratchSize};

fn winograd_on() -> bool {
    std::env::var("CLIP_EDGE_WINOGRAD").as_deref() != Ok("0")
}

/// A lowered image encoder, ready to run frames.
pub struct Native {
    steps: Vec<Step>,
    offsets: Vec<usize>,
    lens: Vec<usize>,
    consts: Vec<Vec<f32>>,
    arena: Vec<f32>,
    scratch: Scratch,
    input: usize,
    output: usize,
    kernels: Kernels,
    pool: Pool,
    weight_bytes: usize,
    mapped_weight_bytes: usize,
    /// Time spent in each step over the frames profiled (`bench --profile`).
    profile: Option<Profile>,
}

/// Per-step run time, summed over frames; allocated when profiling is
/// turned on, so a profiled frame allocates nothing either.
struct Profile {
    steps: Vec<std::time::Duration>,
    frames: u64,
}

/// One step's time per frame (`bench --profile`'s `profile_steps`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepTime {
    pub name: String,
    /// As [`Summary::ops`] names the class.
    pub op: String,
    /// Multiply-adds a frame (products and convolutions; 0 otherwise).
    pub macs: usize,
    pub ms: f64,
    pub gmacs_per_s: f64,
}

/// What a loaded native engine runs (for logs, `info` and `bench --json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    /// The kernel path, e.g. `x86_64-avx2`.
    pub kernels: &'static str,
    /// Its weights' layout ([`Kernels::packing`]): the native section it
    /// reads (`x86_64-amx` reads `x86_64-avx512-vnni`'s).
    pub packing: &'static str,
    /// Ops by class and precision (`linear/int8`, `conv/f16`, `softmax`…).
    pub ops: BTreeMap<String, usize>,
    pub arena_bytes: usize,
    pub scratch_bytes: usize,
    pub weight_bytes: usize,
    /// Of those, the bytes read in place from a native section (not copied).
    pub mapped_weight_bytes: usize,
    pub threads: usize,
    /// Each matrix product (linear layer, convolution) by graph node name,
    /// with the precision its weights run in.
    #[serde(skip)]
    pub products: Vec<(String, &'static str)>,
}

impl Native {
    /// Lowers a decluttered graph with constants folded (see
    /// [`crate::tract_graph::for_native`]).
    /// `threads`: the compute threads (the caller's included), made now.
    /// `float`: how f32 weights that are exactly f16 are kept.
    #[cfg(feature = "tract")]
    pub fn new(
        model: &TypedModel,
        kernels: Kernels,
        threads: usize,
        float: FloatWeights,
    ) -> Result<Native, LowerError> {
        Self::from_lowered(
            Self::schedule(model, &kernels.packing(), float)?,
            kernels,
            threads,
        )
    }

    /// The schedule [`Native::new`] runs: `model` lowered, its copies
    /// folded, its weights packed for the kernel path `kernels` (this
    /// CPU's, or any other's: [`Packing::named`]).
    #[cfg(feature = "tract")]
    pub fn schedule(
        model: &TypedModel,
        kernels: &Packing,
        float: FloatWeights,
    ) -> Result<ir::Lowered, LowerError> {
        let mut l = lower::lower(model, float)?;
        // Copies read only by a product: read through its tables instead
        // (`CLIP_EDGE_FOLD=0` keeps them).
        if sched::fold_on() {
            let n = fold::fold_copies(&mut l);
            log::debug!("{n} copies folded into the products that read them");
        }
        // `CLIP_EDGE_WINOGRAD=0` keeps 3 × 3 convolutions direct.
        pack::pack(&mut l, kernels, float, winograd_on());
        Ok(l)
    }

    /// What shapes the schedule besides the graph, the kernels and the
    /// weights' precision (a saved schedule made otherwise is another one).
    pub fn schedule_options() -> String {
        format!(
            "winograd={} fold={} fuse={}",
            winograd_on(),
            sched::fold_on(),
            sched::fuse_on()
        )
    }

    /// Whether `l` passes the checks [`Native::from_lowered`] makes
    /// (every offset within its tensor, an arena plan without overlaps).
    pub fn check_schedule(l: &ir::Lowered) -> Result<(), LowerError> {
        plan_arena(l).map(|_| ())
    }

    /// A schedule lowered (and maybe rewritten, [`fold`]) with its weights
    /// packed for `kernels` ([`pack`]).
    pub fn from_lowered(
        l: ir::Lowered,
        kernels: Kernels,
        threads: usize,
    ) -> Result<Native, LowerError> {
        if l.packed_for.as_deref() != Some(kernels.packing().name) {
            return Err(LowerError {
                node: "graph".into(),
                op: "weights".into(),
                why: format!(
                    "weights packed for {}, not for this CPU's {}",
                    l.packed_for
                        .as_deref()
                        .map(|p| p.chars().take(40).collect::<String>())
                        .unwrap_or_else(|| "no kernel path (rows)".into()),
                    kernels.packing().name
                ),
            });
        }
        let (offsets, total) = plan_arena(&l)?;
        let mut size = ScratchSize::default();
        let mut weight_bytes = 0;
        for s in &l.steps {
            match &s.kind {
                Kind::MatMul { mm, .. } => {
                    size = size.max(mm.scratch());
                    weight_bytes += mm.weight_bytes();
                }
                Kind::Conv { conv, .. } => {
                    size = size.max(conv.scratch());
                    weight_bytes += conv.weight_bytes();
                }
                Kind::Depthwise { dw, .. } => {
                    // A padded plane per channel, within reason.
                    if dw
                        .padded()
                        .and_then(|p| p.len().checked_mul(dw.o))
                        .is_none()
                    {
                        return Err(LowerError {
                            node: s.name.clone(),
                            op: "depthwise".into(),
                            why: "its padded input is past usize".into(),
                        });
                    }
                    size = size.max(dw.scratch());
                    weight_bytes += dw.weight_bytes();
                }
                _ => {}
            }
        }
        weight_bytes += 4 * l.consts.iter().map(Vec::len).sum::<usize>();
        let mapped_weight_bytes = section::shared_bytes(&l);
        if log::log_enabled!(log::Level::Debug) {
            for (i, s) in l.steps.iter().enumerate() {
                log::debug!(
                    "step {i}: {} {} -> v{} ({} values) reads {:?}",
                    op_key(&s.kind),
                    s.name,
                    s.out,
                    l.lens[s.out],
                    s.inputs()
                );
            }
        }
        let native = Native {
            steps: l.steps,
            offsets,
            lens: l.lens,
            consts: l.consts,
            arena: vec![0f32; total],
            scratch: Scratch::new(size),
            input: l.input,
            output: l.output,
            kernels,
            pool: Pool::new(threads),
            weight_bytes,
            mapped_weight_bytes,
            profile: None,
        };
        log::info!(
            "native engine: {} thread(s), {} ops, arena {:.1} MB, scratch {:.1} MB, weights {:.1} MB; {}",
            native.pool.threads(),
            native.steps.len(),
            native.arena.len() as f64 * 4e-6,
            native.scratch.bytes() as f64 * 1e-6,
            native.weight_bytes as f64 * 1e-6,
            native
                .summary()
                .ops
                .iter()
                .map(|(k, v)| format!("{k} x{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(native)
    }

    pub fn input_len(&self) -> usize {
        self.lens[self.input]
    }

    /// Each step's graph node name, in order (the GPU parity trace matches
    /// steps by name).
    pub fn step_names(&self) -> Vec<&str> {
        self.steps.iter().map(|s| s.name.as_str()).collect()
    }

    pub fn output_len(&self) -> usize {
        self.lens[self.output]
    }

    /// The compute threads.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn summary(&self) -> Summary {
        let mut ops = BTreeMap::new();
        let mut products = Vec::new();
        for s in &self.steps {
            match &s.kind {
                Kind::MatMul { mm, .. } if !matches!(mm.rhs, Rhs::Act { .. }) => {
                    products.push((s.name.clone(), mm.precision()))
                }
                Kind::Conv { conv, .. } => products.push((s.name.clone(), conv.precision())),
                _ => {}
            }
            *ops.entry(op_key(&s.kind)).or_insert(0) += 1;
        }
        Summary {
            kernels: self.kernels.name,
            packing: self.kernels.packing().name,
            ops,
            arena_bytes: 4 * self.arena.len(),
            scratch_bytes: self.scratch.bytes(),
            weight_bytes: self.weight_bytes,
            mapped_weight_bytes: self.mapped_weight_bytes,
            threads: self.pool.threads(),
            products,
        }
    }

    /// Starts (or with `false` stops and clears) timing each step of the
    /// frames run from now on.
    pub fn set_profiling(&mut self, on: bool) {
        self.profile = on.then(|| Profile {
            steps: vec![std::time::Duration::ZERO; self.steps.len()],
            frames: 0,
        });
    }

    /// Milliseconds per frame by op class (as [`Summary::ops`] names them)
    /// over the frames profiled so far; empty when not profiling.
    pub fn profile(&self) -> BTreeMap<String, f64> {
        let mut by = BTreeMap::new();
        if let Some(p) = &self.profile {
            let frames = p.frames.max(1) as f64;
            for (s, t) in self.steps.iter().zip(&p.steps) {
                *by.entry(op_key(&s.kind)).or_insert(0.0) += t.as_secs_f64() * 1e3 / frames;
            }
        }
        by
    }

    /// Each step over the frames profiled so far, in schedule order: its
    /// name, op class, multiply-adds and milliseconds per frame; empty when
    /// not profiling.
    pub fn profile_steps(&self) -> Vec<StepTime> {
        let Some(p) = &self.profile else {
            return Vec::new();
        };
        let frames = p.frames.max(1) as f64;
        self.steps
            .iter()
            .zip(&p.steps)
            .map(|(s, t)| {
                let ms = t.as_secs_f64() * 1e3 / frames;
                let macs = match &s.kind {
                    Kind::MatMul { mm, .. } => mm.macs(),
                    Kind::Conv { conv, .. } => conv.macs(),
                    Kind::Depthwise { dw, .. } => dw.macs(),
                    _ => 0,
                };
                StepTime {
                    name: s.name.clone(),
                    op: op_key(&s.kind),
                    macs,
                    ms,
                    gmacs_per_s: if ms > 0.0 {
                        macs as f64 / ms / 1e6
                    } else {
                        0.0
                    },
                }
            })
            .collect()
    }

    /// Runs one frame: `input` (the graph's input, e.g. 1×3×224×224) to
    /// `output` (the embedding).
    ///
    /// # Panics
    /// When a slice's length differs from [`Native::input_len`] /
    /// [`Native::output_len`] (a caller's bug).
    pub fn run(&mut self, input: &[f32], output: &mut [f32]) {
        self.run_traced(input, output, &mut |_, _| {})
    }

    /// As [`Native::run`], calling `trace(step, its output)` after each
    /// step (the GPU backend's parity check finds the first step that
    /// differs with it).
    pub fn run_traced(
        &mut self,
        input: &[f32],
        output: &mut [f32],
        trace: &mut dyn FnMut(usize, &[f32]),
    ) {
        let Native {
            steps,
            offsets,
            lens,
            consts,
            arena,
            scratch,
            kernels,
            pool,
            profile,
            ..
        } = self;
        let at = |v: usize| offsets[v]..offsets[v] + lens[v];
        arena[at(self.input)].copy_from_slice(input);
        if let Some(p) = profile.as_mut() {
            p.frames += 1;
        }
        for (i, step) in steps.iter().enumerate() {
            let t0 = profile.is_some().then(std::time::Instant::now);
            let o = at(step.out);
            let (lo, rest) = arena.split_at_mut(o.start);
            let (dst, hi) = rest.split_at_mut(o.len());
            let io = exec::Io {
                lo,
                hi,
                hi_start: o.end,
                offsets,
                lens,
                consts,
            };
            exec::exec(step, &io, dst, scratch, kernels, pool);
            trace(i, dst);
            if let (Some(p), Some(t0)) = (profile.as_mut(), t0) {
                p.steps[i] += t0.elapsed();
            }
        }
        output.copy_from_slice(&arena[at(self.output)]);
    }
}
