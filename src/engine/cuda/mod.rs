//! The GPU backend (`--features cuda`, `--device cuda`): the native engine's
//! lowered schedule ([`super::schedule`]) and arena plan
//! ([`super::schedule::plan_arena`]), run on a CUDA GPU. Not a second model
//! definition: every step of the CPU schedule becomes one or a few launches
//! of the kernels in [`crate::kernels::cuda`], in the same order, on the same
//! arena offsets, for a batch of images at once (the arena repeated per
//! image).
//!
//! At load: the weights are uploaded once (f16 rows; int8 rows where the GPU
//! has int8 matrix units, else their int8 values in f16), every offset table
//! and scratch buffer is allocated, and a whole frame (input copy, every
//! launch, output copy) is captured once as a CUDA graph. A frame is then one
//! graph launch and one synchronisation: no allocation, no compilation.
//!
//! Products: f16 × f16 with f32 accumulation, int8 × int8 → i32, or f32
//! (attention in fp32 and int8 bundles, as the CPU runs it), through
//! cuBLAS (`C = Wᵀ·X` in its column-major terms, both sides rows of depth),
//! with the activations gathered (and quantised, for int8) into contiguous
//! rows first and the result scattered (and dequantised) after, through the
//! same offset tables the CPU engine reads.

mod args;
mod build;

use std::collections::BTreeMap;

use tract_core::internal::TypedModel;

use crate::kernels::cuda::{DevBuf, Gpu, GpuError, Graph, Pinned};
use args::Launch;

/// Most images one captured frame takes (`--batch`): ViT-L/14@336 at 1,024
/// images is a 1.4 GB input alone.
pub const MAX_BATCH: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error("the CUDA backend cannot run node {node:?}: {why}")]
    Unsupported { node: String, why: String },
    #[error(transparent)]
    Lower(#[from] super::schedule::ir::LowerError),
}

/// What a loaded GPU encoder runs (for logs and `bench --json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CudaSummary {
    pub gpu: String,
    pub sm_count: u32,
    pub compute_capability: String,
    /// Images per launch of the captured frame.
    pub batch: usize,
    /// Ops by class and the precision their products run in on the GPU.
    pub ops: BTreeMap<String, usize>,
    pub launches_per_frame: usize,
    pub weight_bytes: usize,
    pub arena_bytes: usize,
    pub scratch_bytes: usize,
    pub cuda_graph: bool,
}

/// The image encoder on a CUDA GPU, for `batch` images per run.
pub struct CudaEncoder {
    launches: Vec<Launch>,
    /// For each lowered step, the end of its launches (the parity trace).
    step_ends: Vec<usize>,
    step_outs: Vec<(u64, usize)>,
    names: Vec<String>,
    _arena: DevBuf,
    arena_len: usize,
    input: (u64, usize),
    output: (u64, usize),
    batch: usize,
    pin_in: Pinned,
    pin_out: Pinned,
    graph: Option<Graph>,
    summary: CudaSummary,
    /// Device buffers the launches point into (weights, constants, tables,
    /// scratch): kept alive here.
    _held: Vec<DevBuf>,
    // Dropped last: every buffer above is freed in its context.
    gpu: Gpu,
}

impl CudaEncoder {
    /// Lowers `model` ([`super::schedule::lower`], weights kept
    /// as plain rows) and loads it on the first GPU for `batch` images.
    /// `f32_attention`: products of two activations in f32, as the CPU runs
    /// them (fp32 and int8 bundles), else in f16 (fp16 bundles).
    pub fn new(
        model: &TypedModel,
        batch: usize,
        f32_attention: bool,
    ) -> Result<CudaEncoder, CudaError> {
        let gpu = Gpu::open()?;
        let batch = batch.max(1);
        let p = build::plan(&gpu, model, batch, f32_attention)?;
        let (cc0, cc1) = gpu.compute_capability;
        let (in_len, out_len) = (p.input.1, p.output.1);
        let mut enc = CudaEncoder {
            summary: CudaSummary {
                gpu: gpu.name.clone(),
                sm_count: gpu.sm_count,
                compute_capability: format!("{cc0}.{cc1}"),
                batch,
                ops: p.ops,
                launches_per_frame: p.launches.len(),
                weight_bytes: p.weight_bytes,
                arena_bytes: p.arena.bytes(),
                scratch_bytes: p.scratch_bytes,
                cuda_graph: false,
            },
            launches: p.launches,
            step_ends: p.step_ends,
            step_outs: p.step_outs,
            names: p.names,
            input: p.input,
            output: p.output,
            arena_len: p.arena_len,
            _arena: p.arena,
            batch,
            pin_in: gpu.pinned(batch * in_len)?,
            pin_out: gpu.pinned(batch * out_len)?,
            graph: None,
            _held: p.held,
            gpu,
        };
        // One eager frame (cuBLAS picks its kernels), then the capture.
        enc.frame_eager()?;
        if std::env::var("CLIP_EDGE_CUDA_GRAPH").as_deref() != Ok("0") {
            enc.gpu.begin_capture()?;
            let captured = enc.enqueue();
            let graph = enc.gpu.end_capture();
            captured?;
            enc.graph = Some(graph?);
            enc.summary.cuda_graph = true;
        }
        log::info!(
            "CUDA encoder: {} launches per frame of {} image(s), weights {:.1} MB, arena {:.1} MB, scratch {:.1} MB, CUDA graph {}",
            enc.summary.launches_per_frame,
            batch,
            enc.summary.weight_bytes as f64 * 1e-6,
            enc.summary.arena_bytes as f64 * 1e-6,
            enc.summary.scratch_bytes as f64 * 1e-6,
            enc.summary.cuda_graph
        );
        Ok(enc)
    }

    pub fn summary(&self) -> &CudaSummary {
        &self.summary
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    pub fn input_len(&self) -> usize {
        self.input.1
    }

    pub fn output_len(&self) -> usize {
        self.output.1
    }

    /// The frame's work on the stream: inputs in, every launch, outputs out.
    fn enqueue(&mut self) -> Result<(), GpuError> {
        let (ip, il) = self.input;
        let (op, ol) = self.output;
        let stride = 4 * self.arena_len as u64;
        for i in 0..self.batch {
            self.gpu
                .copy_in(ip + i as u64 * stride, &self.pin_in, i * il, il)?;
        }
        for l in &self.launches {
            l.run(&self.gpu)?;
        }
        for i in 0..self.batch {
            self.gpu
                .copy_out(&mut self.pin_out, i * ol, op + i as u64 * stride, ol)?;
        }
        Ok(())
    }

    fn frame_eager(&mut self) -> Result<(), GpuError> {
        self.gpu.bind()?;
        self.enqueue()?;
        self.gpu.synchronize()
    }

    /// Runs `batch` images (`inputs`: `batch` preprocessed images, one
    /// after the other) into `outputs` (`batch` embeddings). No allocation.
    pub fn run(&mut self, inputs: &[f32], outputs: &mut [f32]) -> Result<(), GpuError> {
        let n = self.batch * self.input.1;
        self.pin_in.as_mut_slice()[..n].copy_from_slice(&inputs[..n]);
        match &self.graph {
            Some(g) => {
                self.gpu.bind()?;
                g.launch()?;
                self.gpu.synchronize()?;
            }
            None => self.frame_eager()?,
        }
        let m = self.batch * self.output.1;
        outputs[..m].copy_from_slice(&self.pin_out.as_slice()[..m]);
        Ok(())
    }

    /// Milliseconds of GPU time for `frames` replays of the frame (CUDA
    /// events; no host copies of inputs or outputs counted).
    pub fn time_frames(&mut self, frames: usize) -> Result<f32, GpuError> {
        self.gpu.bind()?;
        let Some(g) = &self.graph else {
            return Err(GpuError::Call {
                what: "timing",
                why: "no CUDA graph (CLIP_EDGE_CUDA_GRAPH=0)".into(),
            });
        };
        self.gpu.time(|| {
            for _ in 0..frames {
                g.launch()?;
            }
            Ok(())
        })
    }

    /// GPU milliseconds per frame by launch kind (`gemm-f16`, `copy`…),
    /// over `frames` eager frames timed launch by launch with events (the
    /// gaps between launches, which a CUDA graph shrinks, included).
    /// Allocates: a measuring aid.
    pub fn profile(&mut self, frames: usize) -> Result<BTreeMap<&'static str, f64>, GpuError> {
        self.gpu.bind()?;
        let n = self.launches.len();
        let ev = self.gpu.events(n + 1)?;
        let mut ms: BTreeMap<&'static str, f64> = BTreeMap::new();
        for _ in 0..frames.max(1) {
            for (i, l) in self.launches.iter().enumerate() {
                self.gpu.record(&ev, i)?;
                l.run(&self.gpu)?;
            }
            self.gpu.record(&ev, n)?;
            ev.synchronize(n)?;
            for (i, l) in self.launches.iter().enumerate() {
                *ms.entry(l.name()).or_insert(0.0) += ev.elapsed_ms(i, i + 1)? as f64;
            }
        }
        for v in ms.values_mut() {
            *v /= frames.max(1) as f64;
        }
        Ok(ms)
    }

    /// Runs image 0 of `input` step by step, calling `trace(step, name,
    /// its output)` after each (the parity check's search for the first
    /// step that differs from the CPU engine). Allocates: a debugging aid.
    pub fn run_traced(
        &mut self,
        input: &[f32],
        trace: &mut dyn FnMut(usize, &str, &[f32]),
    ) -> Result<(), GpuError> {
        self.gpu.bind()?;
        let il = self.input.1;
        self.pin_in.as_mut_slice()[..il].copy_from_slice(&input[..il]);
        self.gpu.copy_in(self.input.0, &self.pin_in, 0, il)?;
        let mut start = 0;
        for (i, &end) in self.step_ends.iter().enumerate() {
            for l in &self.launches[start..end] {
                l.run(&self.gpu)?;
            }
            start = end;
            self.gpu.synchronize()?;
            let (p, len) = self.step_outs[i];
            let mut host = self.gpu.pinned(len)?;
            self.gpu.copy_out(&mut host, 0, p, len)?;
            self.gpu.synchronize()?;
            trace(i, &self.names[i], host.as_slice());
        }
        Ok(())
    }
}
