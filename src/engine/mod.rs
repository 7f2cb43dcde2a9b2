//! The per-frame path: preprocess into a reused buffer, encode with the
//! bundle's graph, score against the table, top-k. Two backends run the
//! encoder: [`native`] (ours: lowered at load, arena, own kernels; the
//! default) and tract's optimised plan (the reference).

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod native;

use std::path::Path;
use std::time::Instant;

use thiserror::Error;
use tract_core::internal::*;

use crate::bundle::{Bundle, BundleError, Trust};
use crate::encoder::{self, Plan};
use crate::preprocess::{ImageView, PreprocessError, Preprocessor};
use crate::score;

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

enum Backend {
    Tract(Plan),
    Native(Box<native::Native>),
    #[cfg(feature = "cuda")]
    Cuda(Box<cuda::CudaEncoder>),
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
    let tar = encoder::unpack_nnef(bundle.take_encoder_bytes()).map_err(gerr)?;
    stage("graph decompressed");
    let model = encoder::read_nnef_tar(&tar).map_err(gerr)?;
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
    let model = encoder::for_native(o.model.clone()).map_err(|e| EngineError::Graph {
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
    backend: Backend,
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
            return Ok(Self::with_backend(
                bundle,
                Backend::Cuda(Box::new(enc)),
                macs,
            ));
        }
        let Opened { bundle, model, .. } = opened;
        let mut model = model;
        let macs = count_macs(&model);
        let backend = match kind {
            EngineKind::Tract => {
                encoder::fold_constants(&mut model).map_err(gerr)?;
                let plan = encoder::into_plan(model).map_err(gerr)?;
                log::info!(
                    "image encoder on tract, kernels: {}",
                    encoder::matmul_kernels(&plan).join(" | ")
                );
                Backend::Tract(plan)
            }
            EngineKind::Native => {
                let model = encoder::for_native(model).map_err(gerr)?;
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
                if native.input_len() != 3 * r * r || native.output_len() != dim {
                    return Err(EngineError::Graph {
                        path: path.display().to_string(),
                        why: "the lowered graph's input or output size differs from the manifest's"
                            .into(),
                    });
                }
                Backend::Native(Box::new(native))
            }
        };
        stage("encoder ready");
        Ok(Self::with_backend(bundle, backend, macs))
    }

    fn with_backend(bundle: Bundle, backend: Backend, macs: f64) -> Engine {
        let r = bundle.manifest.preprocess.resolution as usize;
        let dim = bundle.manifest.model.embed_dim;
        let labels = bundle.manifest.labels.len();
        Engine {
            table: score::widen(&bundle.table),
            bundle,
            backend,
            pre: Preprocessor::new(),
            input: vec![0f32; 3 * r * r],
            emb: vec![0f32; dim],
            scores: vec![0f32; labels],
            top: Vec::with_capacity(labels),
            top_pairs: Vec::with_capacity(labels),
            macs,
        }
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
        let p = &self.bundle.manifest.preprocess;
        self.pre
            .run(img, p.resolution, p.mean, p.std, &mut self.input)?;
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

    /// Preprocess only (for benchmarks).
    pub fn preprocess(&mut self, img: &ImageView<'_>) -> Result<(), EngineError> {
        let p = &self.bundle.manifest.preprocess;
        self.pre
            .run(img, p.resolution, p.mean, p.std, &mut self.input)?;
        Ok(())
    }

    /// Which backend runs the encoder.
    pub fn kind(&self) -> EngineKind {
        match self.backend {
            Backend::Tract(_) => EngineKind::Tract,
            _ => EngineKind::Native,
        }
    }

    /// Where the encoder runs.
    pub fn device(&self) -> Device {
        match self.backend {
            #[cfg(feature = "cuda")]
            Backend::Cuda(_) => Device::Cuda,
            _ => Device::Cpu,
        }
    }

    /// The GPU encoder's summary (`None` on the CPU).
    #[cfg(feature = "cuda")]
    pub fn cuda_summary(&self) -> Option<cuda::CudaSummary> {
        match &self.backend {
            Backend::Cuda(c) => Some(c.summary().clone()),
            _ => None,
        }
    }

    /// The native engine's ops, kernels and memory (`None` on tract).
    pub fn native_summary(&self) -> Option<native::Summary> {
        match &self.backend {
            Backend::Native(n) => Some(n.summary()),
            _ => None,
        }
    }

    /// Times each op of the native engine from now on (`bench --profile`);
    /// `false` on tract, which has no such timing.
    pub fn set_profiling(&mut self, on: bool) -> bool {
        match &mut self.backend {
            Backend::Native(n) => {
                n.set_profiling(on);
                true
            }
            _ => false,
        }
    }

    /// Milliseconds per frame by op class since profiling was turned on.
    pub fn profile(&self) -> std::collections::BTreeMap<String, f64> {
        match &self.backend {
            Backend::Native(n) => n.profile(),
            _ => Default::default(),
        }
    }

    /// Each native step's time per frame since profiling was turned on.
    pub fn profile_steps(&self) -> Vec<native::StepTime> {
        match &self.backend {
            Backend::Native(n) => n.profile_steps(),
            _ => Vec::new(),
        }
    }

    /// Runs the encoder on the preprocessed input into the embedding buffer.
    pub fn encode(&mut self) -> Result<(), EngineError> {
        let plan = match &mut self.backend {
            Backend::Native(n) => {
                n.run(&self.input, &mut self.emb);
                return Ok(());
            }
            #[cfg(feature = "cuda")]
            Backend::Cuda(c) => {
                return c
                    .run(&self.input, &mut self.emb)
                    .map_err(|e| EngineError::Device(e.to_string()));
            }
            Backend::Tract(plan) => plan,
        };
        let r = self.bundle.manifest.preprocess.resolution as usize;
        let input = Tensor::from_shape(&[1, 3, r, r], &self.input).map_err(EngineError::Run)?;
        let out = plan
            .run(tvec!(input.into_tvalue()))
            .map_err(EngineError::Run)?;
        let view = out[0]
            .to_plain_array_view::<f32>()
            .map_err(EngineError::Run)?;
        for (d, s) in self.emb.iter_mut().zip(view.iter()) {
            *d = *s;
        }
        Ok(())
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
    /// names); empty on the native engine (see [`Engine::native_summary`]).
    pub fn op_summary(&self) -> std::collections::BTreeMap<String, (usize, String)> {
        let mut m = std::collections::BTreeMap::new();
        let Backend::Tract(plan) = &self.backend else {
            return m;
        };
        for node in &plan.model().nodes {
            let e = m
                .entry(node.op.name().to_string())
                .or_insert((0, String::new()));
            e.0 += 1;
            if e.1.is_empty() {
                e.1 = node.op.info().unwrap_or_default().join("; ");
            }
        }
        m
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
