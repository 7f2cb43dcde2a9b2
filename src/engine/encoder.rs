//! The encoder contract every backend implements (one preprocessed image
//! in, one embedding out, into the caller's buffers), the native and CUDA
//! backends' sides of it, and opening a bundle's encoder.

#[cfg(feature = "tract")]
use std::path::Path;
#[cfg(feature = "tract")]
use std::time::Instant;

#[cfg(feature = "tract")]
use tract_core::internal::*;

#[cfg(feature = "cuda")]
use super::cuda;
#[cfg(feature = "tract")]
use super::{log_stage, one_line};
use super::{native, Device, EngineError, EngineKind};
#[cfg(feature = "tract")]
use crate::bundle::{Bundle, Trust};
#[cfg(feature = "tract")]
use crate::tract_graph;

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
#[cfg(feature = "tract")]
pub struct Opened {
    pub bundle: Bundle,
    pub model: TypedModel,
    /// The encoder's file, for errors.
    pub path: String,
}

/// Reads the bundle at `dir` (which must satisfy `trust`) and its encoder
/// graph, parsed from the bytes that were hashed.
#[cfg(feature = "tract")]
pub fn open_encoder(dir: &Path, trust: &Trust) -> Result<Opened, EngineError> {
    let t0 = Instant::now();
    let bundle = Bundle::open_with(dir, trust)?;
    log_stage(t0, "bundle read and verified");
    parse_encoder(bundle, t0)
}

/// The encoder graph of `bundle`, whose encoder bytes were read and
/// verified ([`Bundle::read_encoder`]), parsed and checked against the
/// manifest; `t0` starts the load log's clock.
#[cfg(feature = "tract")]
pub fn parse_encoder(mut bundle: Bundle, t0: Instant) -> Result<Opened, EngineError> {
    let stage = |what: &str| log_stage(t0, what);
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
