//! The per-frame path ([`Engine`]): preprocess into a reused buffer, encode
//! with the bundle's graph, score against the table, top-k. The image
//! encoder is any [`Encoder`]: [`native`] (ours: lowered at load, arena, own
//! kernels; the default), [`tract::TractEncoder`] (tract's optimised plan,
//! the reference) or, in a `--features cuda` build, [`cuda`] (the native
//! schedule on a GPU). The engine knows none of them by name.

#[cfg(feature = "cuda")]
pub mod cuda;
mod encoder;
pub mod native;
pub mod tract;

#[cfg(feature = "cuda")]
pub use encoder::cuda_encoder;
pub use encoder::{open_encoder, parse_encoder, Encoder, EncoderSummary, Opened, Profile};

use std::path::Path;
use std::time::Instant;

use thiserror::Error;
use tract_core::internal::*;

use crate::bundle::{Bundle, BundleError, Trust};
use crate::preprocess::{ImageView, PreprocessError, Preprocessor};
use crate::score;
use crate::section_cache::SectionCache;
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

/// Milliseconds spent in each stage of one frame.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Timings {
    pub preprocess: f64,
    pub encode: f64,
    pub score: f64,
}

/// What became of the native section on a load with a section cache.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SectionUse {
    /// The schedule was read from the saved section.
    Read,
    /// The graph was lowered and its section saved; `refused`: why the
    /// section that was there could not be used.
    Saved { refused: Option<String> },
    /// The graph was lowered and no section saved: why.
    NotSaved(String),
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
    /// With a section cache: whether the schedule came from it.
    section: Option<SectionUse>,
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
        Self::load_cached(dir, trust, kind, threads, device, None)
    }

    /// As [`Engine::load_device`]; the native engine on the CPU with a
    /// `cache` reads its schedule from the bundle's native section there
    /// when one was saved for this bundle and kernel path (no graph parsed,
    /// no weight packed or copied: see [`native::section`]), else lowers the
    /// graph and saves the section for the next start.
    pub fn load_cached(
        dir: &Path,
        trust: &Trust,
        kind: EngineKind,
        threads: usize,
        device: Device,
        cache: Option<&SectionCache>,
    ) -> Result<Self, EngineError> {
        if let (Some(cache), EngineKind::Native, Device::Cpu) = (cache, kind, device) {
            return Self::load_native_cached(dir, trust, threads, cache);
        }
        let t0 = Instant::now();
        let stage = |what: &str| log_stage(t0, what);
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
                let float = float_weights(&bundle);
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

    fn load_native_cached(
        dir: &Path,
        trust: &Trust,
        threads: usize,
        cache: &SectionCache,
    ) -> Result<Self, EngineError> {
        let t0 = Instant::now();
        let stage = |what: &str| log_stage(t0, what);
        let mut bundle = Bundle::open_without_encoder(dir, trust)?;
        stage("manifest and table read and verified");
        let kernels = crate::kernels::Kernels::detect();
        let float = float_weights(&bundle);
        let options = section_options(&bundle);
        let graph_err = |path: &str, e: native::ir::LowerError| EngineError::Graph {
            path: path.to_string(),
            why: one_line(&e.to_string()),
        };
        let entry = match cache.entry(&bundle, kernels.name, &options) {
            Ok(e) => Some(e),
            Err(why) => {
                log::warn!("native section: {why}; the cache is not used");
                None
            }
        };
        let mut refused = None;
        let mut not_saved = match &entry {
            Some(_) => None,
            None => Some("no cache entry for this bundle".to_string()),
        };
        if let Some(e) = &entry {
            let shown = e.path.display();
            match cache.open(e) {
                Ok(Some(bytes)) => {
                    let mb = (*bytes).as_ref().len() as f64 / 1e6;
                    let read = native::section::read(bytes, &kernels, &e.key).and_then(|sec| {
                        native::Native::from_lowered(sec.schedule, kernels, threads)
                            .map(|n| (n, sec.macs))
                            .map_err(|err| native::section::SectionError::Invalid(err.why))
                    });
                    match read {
                        Ok((native, macs)) => {
                            log::info!("native section {shown}: read ({mb:.1} MB, {} kernels)", kernels.name);
                            stage("encoder ready from its native section");
                            let mut engine = Self::with_encoder(bundle, Box::new(native), macs)?;
                            engine.section = Some(SectionUse::Read);
                            return Ok(engine);
                        }
                        Err(why) => {
                            log::warn!("native section {shown}: {why}; lowering the graph again");
                            refused = Some(why.to_string());
                        }
                    }
                }
                Ok(None) => log::info!(
                    "native section: none in {} for this bundle and the {} kernels yet; lowering the graph (saved for the next start)",
                    cache.dir().display(),
                    kernels.name
                ),
                Err(why) => {
                    log::warn!("native section {shown}: {why}");
                    not_saved = Some(why);
                }
            }
        }
        bundle.read_encoder()?;
        stage("encoder file read and verified");
        let Opened {
            bundle,
            model,
            path,
        } = parse_encoder(bundle, t0)?;
        let macs = count_macs(&model);
        let gerr = |e: TractError| EngineError::Graph {
            path: path.clone(),
            why: one_line(&format!("{e:#}")),
        };
        let model = tract_graph::for_native(model).map_err(gerr)?;
        let schedule =
            native::Native::schedule(&model, &kernels, float).map_err(|e| graph_err(&path, e))?;
        drop(model);
        native::Native::check_schedule(&schedule).map_err(|e| graph_err(&path, e))?;
        stage("graph lowered");
        let section = match (not_saved, &entry) {
            (None, Some(e)) => {
                let t = Instant::now();
                match cache.save(e, |w| {
                    native::section::write(&schedule, kernels.name, &e.key, macs, w)
                }) {
                    Ok(n) => {
                        log::info!(
                            "native section {}: saved ({:.1} MB in {:.0} ms)",
                            e.path.display(),
                            n as f64 / 1e6,
                            t.elapsed().as_secs_f64() * 1e3
                        );
                        SectionUse::Saved { refused }
                    }
                    Err(why) => {
                        log::warn!("native section: not saved: {why}");
                        SectionUse::NotSaved(why)
                    }
                }
            }
            (why, _) => SectionUse::NotSaved(why.unwrap_or_default()),
        };
        let native = native::Native::from_lowered(schedule, kernels, threads)
            .map_err(|e| graph_err(&path, e))?;
        stage("encoder ready");
        let mut engine = Self::with_encoder(bundle, Box::new(native), macs)?;
        engine.section = Some(section);
        Ok(engine)
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
            section: None,
        })
    }

    /// With a section cache ([`Engine::load_cached`]): whether the
    /// schedule came from a saved native section.
    pub fn section_use(&self) -> Option<&SectionUse> {
        self.section.as_ref()
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

/// How the native engine keeps f32 weights that are exactly f16: an fp32
/// bundle runs its products in f32 even where its weights are f16 values
/// (OpenAI's are): widening f16 costs more per product than the memory it
/// saves is worth there.
fn float_weights(bundle: &Bundle) -> native::FloatWeights {
    match bundle.manifest.precision.as_str() {
        "fp32" => native::FloatWeights::F32,
        _ => native::FloatWeights::F16WhereExact,
    }
}

/// What a native section of `bundle` depends on besides the bundle, the
/// build and the kernel path: the weights' precision and the options that
/// shape a schedule (its cache entry's options, [`SectionCache::entry`]).
pub fn section_options(bundle: &Bundle) -> String {
    format!(
        "{:?} {}",
        float_weights(bundle),
        native::Native::schedule_options()
    )
}

/// A load stage in the log: the time since `t0` and the process's memory.
fn log_stage(t0: Instant, what: &str) {
    log::info!(
        "load: {what} at {:.0} ms, {}",
        t0.elapsed().as_secs_f64() * 1e3,
        rss_mb()
    )
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
