//! The per-frame path ([`Engine`]): preprocess into a reused buffer, encode
//! with the bundle's graph, score against the table, top-k. The image
//! encoder is any [`Encoder`]: [`native`] (ours: lowered at load, arena, own
//! kernels; the default), [`tract::TractEncoder`] (tract's optimised plan,
//! the reference) or, in a `--features cuda` build, [`cuda`] (the native
//! schedule on a GPU). The engine knows none of them by name.

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod native;
pub mod tract;

use std::path::Path;
use std::time::Instant;

use thiserror::Error;
use tract_core::internal::*;

use crate::bundle::{Bundle, BundleError, Trust};
use crate::preprocess::{ImageView, PreprocessError, Preprocessor};
use crate::score;
use crate::tract_graph;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("{path}: {why}")]
    Graph { path: String, why: String },
    #[error(transparent)]
    Preprocess(#[from] PreprocessError),
    #[error("running the image encoder: {0:#}")]
    Run(TractError),
    #[error("{0}")]
    Device(String),
}

/// Longest error detail kept from tract (whose messages may quote a hostile
/// file's bytes).
const MAX_DETAIL_CHARS: usize = 240;

/// `s` as one short printable line: control characters and undecodable
/// bytes become `?`, the rest is cut at [`MAX_DETAIL_CHARS`].
fn one_line(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_control() || c == char::REPLACEMENT_CHARACTER {
                '?'
            } else {
                c
            }
        })
        .take(MAX_DETAIL_CHARS)
        .collect();
    if s.chars().count() > MAX_DETAIL_CHARS {
        out.push('…');
    }
    out
}

/// Which backend runs the image encoder.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// Our engine: the graph lowered at load, one arena, our kernels, no
    /// allocation per frame.
    #[default]
    Native,
    /// tract's optimised plan (the reference backend).
    Tract,
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EngineKind::Native => "native",
            EngineKind::Tract => "tract",
        })
    }
}

/// Where the image encoder runs.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// This machine's CPU cores.
    #[default]
    Cpu,
    /// The first CUDA GPU (a build with `--features cuda`), running the
    /// native engine's schedule.
    Cuda,
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        })
    }
}

/// An image encoder: one preprocessed image (`input_len` floats, NCHW) in,
/// one embedding (`output_len` floats) out, into buffers the caller owns.
/// What a backend can say about itself comes through [`Encoder::summary`]
/// and, where it times its steps, the profile.
pub trait Encoder: Send {
    fn input_len(&self) -> usize;
    fn output_len(&self) -> usize;
    /// Encodes `input` into `output` (lengths as above).
    fn run(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), EngineError>;
    /// Which backend this is.
    fn kind(&self) -> EngineKind;
    /// Where it runs.
    fn device(&self) -> Device {
        Device::Cpu
    }
    /// What runs: ops, kernels, memory.
    fn summary(&self) -> EncoderSummary;
    /// Times each step from now on; `false` where the backend has no such
    /// timing.
    fn set_profiling(&mut self, _on: bool) -> bool {
        false
    }
    /// Per-frame times since profiling was turned on (empty without it).
    fn profile(&self) -> Profile {
        Profile::default()
    }
    /// The compute threads, which preprocessing may share between frames.
    fn pool(&self) -> Option<&crate::kernels::pool::Pool> {
        None
    }
}

/// What an [`Encoder`] reports of itself, per backend.
pub enum EncoderSummary {
    Native(native::Summary),
    /// tract's plan: operator name → (count, first description).
    Tract(std::collections::BTreeMap<String, (usize, String)>),
    #[cfg(feature = "cuda")]
    Cuda(cuda::CudaSummary),
}

/// Milliseconds per frame by op class, and each step's time.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub by_class: std::collections::BTreeMap<String, f64>,
    pub steps: Vec<native::StepTime>,
}

impl Encoder for native::Native {
    fn input_len(&self) -> usize {
        native::Native::input_len(self)
    }
    fn output_len(&self) -> usize {
        native::Native::output_len(self)
    }
    fn run(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), EngineError> {
        native::Native::run(self, input, output);
        Ok(())
    }
    fn kind(&self) -> EngineKind {
        EngineKind::Native
    }
    fn summary(&self) -> EncoderSummary {
        EncoderSummary::Native(native::Native::summary(self))
    }
    fn set_profiling(&mut self, on: bool) -> bool {
        native::Native::set_profiling(self, on);
        true
    }
    fn profile(&self) -> Profile {
        Profile {
            by_class: native::Native::profile(self),
            steps: native::Native::profile_steps(self),
        }
    }
    fn pool(&self) -> Option<&crate::kernels::pool::Pool> {
        Some(native::Native::pool(self))
    }
}

#[cfg(feature = "cuda")]
impl Encoder for cuda::CudaEncoder {
    fn input_len(&self) -> usize {
        cuda::CudaEncoder::input_len(self)
    }
    fn output_len(&self) -> usize {
        cuda::CudaEncoder::output_len(self)
    }
    fn run(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), EngineError> {
        cuda::CudaEncoder::run(self, input, output).map_err(|e| EngineError::Device(e.to_string()))
    }
    fn kind(&self) -> EngineKind {
        EngineKind::Native
    }
    fn device(&self) -> Device {
        Device::Cuda
    }
    fn summary(&self) -> EncoderSummary {
        EncoderSummary::Cuda(cuda::CudaEncoder::summary(self).clone())
    }
}

/// A bundle read and verified, with its image encoder's graph checked
/// against the manifest (input `[1, 3, r, r]`, output `[1, embed_dim]`).
pub struct Opened {
    pub bundle: Bundle,
    pub model: TypedModel,
    /// The encoder's file, for errors.
    pub path: String,
}

/// Reads the bundle at `dir` (which must satisfy `trust`) and its encoder
/// graph, parsed from the bytes that were hashed.
pub fn open_encoder(dir: &Path, trust: &Trust) -> Result<Opened, EngineError> {
    let t0 = Instant::now();
    let stage = |what: &str| {
        log::info!(
            "load: {what} at {:.0} ms, {}",
            t0.elapsed().as_secs_f64() * 1e3,
            rss_mb()
        )
    };
    let mut bundle = Bundle::open_with(dir, trust)?;
    stage("bundle read and verified");
    let path = bundle.image_encoder_path();
    let gerr = |e: TractError| EngineError::Graph {
        path: path.display().to_string(),
        why: one_line(&format!("{e:#}")),
    };
    let tar = tract_graph::unpack_nnef(bundle.take_encoder_bytes()).map_err(gerr)?;
    stage("graph decompressed");
    let model = tract_graph::read_nnef_tar(&tar).map_err(gerr)?;
    drop(tar);
    stage("graph parsed");
    let r = bundle.manifest.preprocess.resolution as usize;
    let fact = model.input_fact(0).map_err(gerr)?.clone();
    if fact.shape.as_concrete() != Some(&[1, 3, r, r][..]) {
        return Err(EngineError::Graph {
            path: path.display().to_string(),
            why: format!(
                "graph input is {:?}, the manifest's resolution is {r}",
                fact.shape
            ),
        });
    }
    let dim = bundle.manifest.model.embed_dim;
    let outputs = model.output_outlets().map_err(gerr)?.len();
    let out = model.output_fact(0).map_err(gerr)?.clone();
    if outputs != 1 || out.shape.as_concrete() != Some(&[1, dim][..]) {
        return Err(EngineError::Graph {
            path: path.display().to_string(),
            why: format!(
                "graph output is {outputs} tensor(s), the first {:?}; the manifest's embed_dim is {dim} ([1, {dim}])",
                out.shape
            ),
        });
    }
    Ok(Opened {
        bundle,
        model,
        path: path.display().to_string(),
    })
}

/// The image encoder of `o` on the first CUDA GPU for `batch` images per
/// run (`bench --batch`, the parity check).
#[cfg(feature = "cuda")]
pub fn cuda_encoder(o: &Opened, batch: usize) -> Result<cuda::CudaEncoder, EngineError> {
    if batch == 0 || batch > cuda::MAX_BATCH {
        return Err(EngineError::Device(format!(
            "--batch {batch}: expected 1 to {}",
            cuda::MAX_BATCH
        )));
    }
    let model = tract_graph::for_native(o.model.clone()).map_err(|e| EngineError::Graph {
        path: o.path.clone(),
        why: one_line(&format!("{e:#}")),
    })?;
    // fp32 and int8 bundles: attention in f32, as on the CPU.
    let f32_attention = o.bundle.manifest.precision != "fp16";
    let enc = cuda::CudaEncoder::new(&model, batch, f32_attention).map_err(|e| match e {
        cuda::CudaError::Gpu(g) => EngineError::Device(g.to_string()),
        e => EngineError::Graph {
            path: o.path.clone(),
            why: one_line(&e.to_string()),
        },
    })?;
    let (r, dim) = (
        o.bundle.manifest.preprocess.resolution as usize,
        o.bundle.manifest.model.embed_dim,
    );
    if enc.input_len() != 3 * r * r || enc.output_len() != dim {
        return Err(EngineError::Graph {
            path: o.path.clone(),
            why: "the lowered graph's input or output size differs from the manifest's".into(),
        });
    }
    Ok(enc)
}

/// Milliseconds spent in each stage of one frame.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Timings {
    pub preprocess: f64,
    pub encode: f64,
    pub score: f64,
}

pub struct Engine {
    pub bundle: Bundle,
    encoder: Box<dyn Encoder>,
    pre: Preprocessor,
    input: Vec<f32>,
    emb: Vec<f32>,
    /// The table widened to f32 once at load.
    table: Vec<f32>,
    pub scores: Vec<f32>,
    top: Vec<usize>,
    top_pairs: Vec<(usize, f32)>,
    /// Multiply-accumulates of one encoder run (from tract's cost model).
    pub macs: f64,
}

impl Engine {
    pub fn load(dir: &Path) -> Result<Self, EngineError> {
        Self::load_with(dir, &Trust::default())
    }

    /// Loads a bundle that must first satisfy `trust` (a required signature),
    /// on the native engine.
    pub fn load_with(dir: &Path, trust: &Trust) -> Result<Self, EngineError> {
        Self::load_on(dir, trust, EngineKind::Native, 1)
    }

    /// Loads a bundle that must first satisfy `trust`, on the backend `kind`
    /// with `threads` compute threads (tract's are set process-wide, see
    /// `tract_linalg::multithread`). The encoder is parsed from the bytes
    /// that were hashed.
    pub fn load_on(
        dir: &Path,
        trust: &Trust,
        kind: EngineKind,
        threads: usize,
    ) -> Result<Self, EngineError> {
        Self::load_device(dir, trust, kind, threads, Device::Cpu)
    }

    /// As [`Engine::load_on`], the encoder on `device` (`Device::Cuda`
    /// runs the native engine's schedule on the GPU).
    pub fn load_device(
        dir: &Path,
        trust: &Trust,
        kind: EngineKind,
        threads: usize,
        device: Device,
    ) -> Result<Self, EngineError> {
        let t0 = Instant::now();
        let stage = |what: &str| {
            log::info!(
                "load: {what} at {:.0} ms, {}",
                t0.elapsed().as_secs_f64() * 1e3,
                rss_mb()
            )
        };
        if device == Device::Cuda && kind == EngineKind::Tract {
            return Err(EngineError::Device(
                "--device cuda runs the native engine's schedule; --engine tract runs on the CPU only".into(),
            ));
        }
        if device == Device::Cuda && !cfg!(feature = "cuda") {
            return Err(EngineError::Device(
                "--device cuda: this clip-edge was built without CUDA (cargo build --features cuda)".into(),
            ));
        }
        let opened = open_encoder(dir, trust)?;
        let path = std::path::PathBuf::from(&opened.path);
        let gerr = |e: TractError| EngineError::Graph {
            path: path.display().to_string(),
            why: one_line(&format!("{e:#}")),
        };
        let r = opened.bundle.manifest.preprocess.resolution as usize;
        let dim = opened.bundle.manifest.model.embed_dim;
        #[cfg(feature = "cuda")]
        if device == Device::Cuda {
            let enc = cuda_encoder(&opened, 1)?;
            stage("encoder ready on the GPU");
            let macs = count_macs(&opened.model);
            let Opened { bundle, .. } = opened;
            return Self::with_encoder(bundle, Box::new(enc), macs);
        }
        let Opened { bundle, model, .. } = opened;
        let macs = count_macs(&model);
        let encoder: Box<dyn Encoder> = match kind {
            EngineKind::Tract => Box::new(tract::TractEncoder::new(model, r, dim).map_err(gerr)?),
            EngineKind::Native => {
                let model = tract_graph::for_native(model).map_err(gerr)?;
                stage("graph ready for lowering");
                let kernels = crate::kernels::Kernels::detect();
                // An fp32 bundle runs its products in f32 even where its
                // weights are f16 values (OpenAI's are): widening f16 costs
                // more per product than the memory it saves is worth there.
                let float = match bundle.manifest.precision.as_str() {
                    "fp32" => native::FloatWeights::F32,
                    _ => native::FloatWeights::F16WhereExact,
                };
                let native = native::Native::new(&model, kernels, threads, float).map_err(|e| {
                    EngineError::Graph {
                        path: path.display().to_string(),
                        why: one_line(&e.to_string()),
                    }
                })?;
                Box::new(native)
            }
        };
        stage("encoder ready");
        Self::with_encoder(bundle, encoder, macs)
    }

    /// The pipeline around `encoder`, whose input and output must be the
    /// bundle's image and embedding.
    pub fn with_encoder(
        bundle: Bundle,
        encoder: Box<dyn Encoder>,
        macs: f64,
    ) -> Result<Engine, EngineError> {
        let r = bundle.manifest.preprocess.resolution as usize;
        let dim = bundle.manifest.model.embed_dim;
        let labels = bundle.manifest.labels.len();
        if encoder.input_len() != 3 * r * r || encoder.output_len() != dim {
            return Err(EngineError::Graph {
                path: bundle.image_encoder_path().display().to_string(),
                why: format!(
                    "the encoder takes {} values and gives {}; the manifest says 3 x {r} x {r} and {dim}",
                    encoder.input_len(),
                    encoder.output_len()
                ),
            });
        }
        Ok(Engine {
            table: score::widen(&bundle.table),
            bundle,
            encoder,
            pre: Preprocessor::new(),
            input: vec![0f32; 3 * r * r],
            emb: vec![0f32; dim],
            scores: vec![0f32; labels],
            top: Vec::with_capacity(labels),
            top_pairs: Vec::with_capacity(labels),
            macs,
        })
    }

    pub fn resolution(&self) -> u32 {
        self.bundle.manifest.preprocess.resolution
    }

    /// Classifies one decoded frame into [`Engine::top`] (the top `k` label
    /// indices with their probabilities); returns the stage timings.
    /// Allocates nothing on the native engine.
    pub fn classify(&mut self, img: &ImageView<'_>, k: usize) -> Result<Timings, EngineError> {
        let mut t = Timings::default();
        let k = k.min(self.scores.len());
        let t0 = Instant::now();
        self.preprocess(img)?;
        let t1 = Instant::now();
        self.encode()?;
        let t2 = Instant::now();
        self.score(k);
        let t3 = Instant::now();
        t.preprocess = (t1 - t0).as_secs_f64() * 1e3;
        t.encode = (t2 - t1).as_secs_f64() * 1e3;
        t.score = (t3 - t2).as_secs_f64() * 1e3;
        Ok(t)
    }

    /// The last frame's top `k`: (label index, probability), best first.
    pub fn top(&self) -> &[(usize, f32)] {
        &self.top_pairs
    }

    /// The frame into the encoder's input (the first step of
    /// [`Engine::classify`]; alone, for benchmarks).
    pub fn preprocess(&mut self, img: &ImageView<'_>) -> Result<(), EngineError> {
        let p = &self.bundle.manifest.preprocess;
        self.pre.run_on(
            img,
            p.resolution,
            p.mean,
            p.std,
            &mut self.input,
            self.encoder.pool(),
        )?;
        Ok(())
    }

    /// Which backend runs the encoder.
    pub fn kind(&self) -> EngineKind {
        self.encoder.kind()
    }

    /// Where the encoder runs.
    pub fn device(&self) -> Device {
        self.encoder.device()
    }

    /// What the encoder says it runs.
    pub fn summary(&self) -> EncoderSummary {
        self.encoder.summary()
    }

    /// The GPU encoder's summary (`None` on the CPU).
    #[cfg(feature = "cuda")]
    pub fn cuda_summary(&self) -> Option<cuda::CudaSummary> {
        match self.encoder.summary() {
            EncoderSummary::Cuda(c) => Some(c),
            _ => None,
        }
    }

    /// The native engine's ops, kernels and memory (`None` elsewhere).
    pub fn native_summary(&self) -> Option<native::Summary> {
        match self.encoder.summary() {
            EncoderSummary::Native(n) => Some(n),
            _ => None,
        }
    }

    /// Times each op of the encoder from now on (`bench --profile`);
    /// `false` where the backend has no such timing (tract).
    pub fn set_profiling(&mut self, on: bool) -> bool {
        self.encoder.set_profiling(on)
    }

    /// Per-frame times by op class and by step since profiling was turned on.
    pub fn profile(&self) -> Profile {
        self.encoder.profile()
    }

    /// Runs the encoder on the preprocessed input into the embedding buffer.
    pub fn encode(&mut self) -> Result<(), EngineError> {
        self.encoder.run(&self.input, &mut self.emb)
    }

    /// Scores the current embedding; fills `scores` (probabilities) and the top `k`.
    pub fn score(&mut self, k: usize) {
        let m = &self.bundle.manifest;
        score::logits(
            &self.table,
            m.model.embed_dim,
            &self.emb,
            m.logit_scale,
            &mut self.scores,
        );
        score::softmax(&mut self.scores);
        score::top_k(&self.scores, k, &mut self.top);
        self.top_pairs.clear();
        self.top_pairs
            .extend(self.top.iter().map(|&i| (i, self.scores[i])));
    }

    pub fn embedding(&self) -> &[f32] {
        &self.emb
    }

    /// The tract plan's operators: name → (count, first description),
    /// which shows the kernels tract selected (e.g. its matmul kernel
    /// names); empty on the other backends (see [`Engine::native_summary`]).
    pub fn op_summary(&self) -> std::collections::BTreeMap<String, (usize, String)> {
        match self.encoder.summary() {
            EncoderSummary::Tract(m) => m,
            _ => Default::default(),
        }
    }
}

/// `VmRSS` / `VmHWM` of this process in MB, for the load log (Linux only).
fn rss_mb() -> String {
    let Ok(s) = std::fs::read_to_string("/proc/self/status") else {
        return "?".into();
    };
    let get = |key: &str| {
        s.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or("?".to_string(), |kb| format!("{}", kb / 1024))
    };
    format!("rss {} MB, peak {} MB", get("VmRSS:"), get("VmHWM:"))
}

/// Multiply-accumulates of a graph, from tract's per-op cost model.
pub fn count_macs(model: &TypedModel) -> f64 {
    let mut total = 0f64;
    for node in &model.nodes {
        let Ok(facts) = model.node_input_facts(node.id) else {
            continue;
        };
        if let Ok(costs) = node.op.cost(&facts) {
            for (c, n) in costs {
                if let Cost::FMA(_) = c {
                    total += n.to_i64().unwrap_or(0) as f64;
                }
            }
        }
    }
    total
}
