//! The per-frame path ([`Engine`]): preprocess into a reused buffer, encode
//! with the bundle's graph, score against the table, top-k. The image
//! encoder is any [`Encoder`]: [`native`] (ours: lowered at load, arena, own
//! kernels; the default), [`tract::TractEncoder`] (tract's optimised plan,
//! the reference) or, in a `--features cuda` build, [`cuda`] (the native
//! schedule on a GPU). The engine knows none of them by name.

#[cfg(feature = "cuda")]
pub mod cuda;
mod encoder;
mod load;
pub mod native;
pub mod schedule;
pub mod shipped;
#[cfg(feature = "tract")]
pub mod tract;

#[cfg(feature = "cuda")]
pub use encoder::cuda_encoder;
#[cfg(feature = "tract")]
pub use encoder::{open_encoder, parse_encoder, Opened};
pub use encoder::{Encoder, EncoderSummary, Profile};
#[cfg(feature = "tract")]
pub use load::count_macs;
#[cfg(feature = "tract")]
use load::log_stage;
pub use load::{section_options, SectionUse};

use std::time::Instant;

use thiserror::Error;

use crate::bundle::{Bundle, BundleError, Scoring};
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
    #[error("running the image encoder: {0}")]
    Run(String),
    #[error("{0}")]
    Device(String),
    /// What this build leaves out (a build without tract: the graph).
    #[error("{0}")]
    Unsupported(String),
}

/// Longest error detail kept from tract (whose messages may quote a hostile
/// file's bytes).
#[cfg(feature = "tract")]
const MAX_DETAIL_CHARS: usize = 240;

/// `s` as one short printable line: control characters and undecodable
/// bytes become `?`, the rest is cut at [`MAX_DETAIL_CHARS`].
#[cfg(feature = "tract")]
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
    /// Where the native schedule came from: the bundle's section, or with
    /// a section cache, the cache (read or saved); `None` when the graph
    /// was lowered without a cache (or another backend runs).
    section: Option<SectionUse>,
    /// Whether the resize's rows are split over the encoder's threads.
    preprocess_on_pool: bool,
}

impl Engine {
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
        let resize = bundle.manifest.preprocess.resize();
        Ok(Engine {
            table: score::widen(&bundle.table),
            bundle,
            encoder,
            pre: Preprocessor::new().with_resize(resize),
            input: vec![0f32; 3 * r * r],
            emb: vec![0f32; dim],
            scores: vec![0f32; labels],
            top: Vec::with_capacity(labels),
            top_pairs: Vec::with_capacity(labels),
            macs,
            section: None,
            preprocess_on_pool: true,
        })
    }

    /// Where the native schedule came from ([`Engine::load_cached`]): a
    /// section the bundle ships, or the section cache.
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
        let pool = self.encoder.pool().filter(|_| self.preprocess_on_pool);
        self.pre
            .run_on(img, p.resolution, p.mean, p.std, &mut self.input, pool)?;
        Ok(())
    }

    /// Splits the resize's rows over the encoder's threads (the default:
    /// the same bytes either way), or runs it on the caller alone: better
    /// where another busy thread (a source decoding frames) leaves no core
    /// free for the split, which would wait on a descheduled thread.
    pub fn set_preprocess_on_pool(&mut self, on: bool) {
        self.preprocess_on_pool = on;
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

    /// Scores the current embedding; fills `scores` (probabilities: over
    /// the labels, or each label's own with sigmoid scoring) and the top `k`.
    pub fn score(&mut self, k: usize) {
        let m = &self.bundle.manifest;
        score::logits(
            &self.table,
            m.model.embed_dim,
            &self.emb,
            m.logit_scale,
            &mut self.scores,
        );
        match m.scoring {
            Scoring::Softmax => score::softmax(&mut self.scores),
            Scoring::Sigmoid => score::sigmoid(&mut self.scores, m.logit_bias),
        }
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
