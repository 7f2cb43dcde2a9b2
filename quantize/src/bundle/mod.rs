//! `clip-quantize build`: checkpoint + prompt set → bundle directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use thiserror::Error;
use tract_core::internal::*;

use clip_edge::bundle::{
    self as fmt, LayerPrecision, Manifest, ModelInfo, PreprocessInfo, ReportSummary, Scoring,
    Source, TableInfo,
};
use clip_edge::decode::{decode_file, DecodeError};
use clip_edge::preprocess::{Preprocessor, Resize, CLIP_MEAN, CLIP_STD};
use clip_edge::signature;
use clip_edge::tract_graph;

use crate::checkpoint::{self, CheckpointError, StateDict};
use crate::config::ClipConfig;
use crate::graph::{self, ActivationQuant, GraphError, Precision, QuantPlan};
use crate::prompts::{self, PromptError};
use crate::tokenizer::{Tokenizer, TokenizerError};

mod accuracy;
mod from_onnx;
mod write;

use accuracy::{
    argmax_label, auto_plan, load_inputs, run_images, summary, ImageFiles, ImageFormat, Images,
};
pub use accuracy::{list_eval, list_images, MAX_CALIBRATION_IMAGES};
use write::{file_name, per_image, sha256_of, write_bundle, Contents};

/// The tract version the graphs are written with (the exact pin in Cargo.toml;
/// a test keeps the two equal).
pub const TRACT_VERSION: &str = "0.23.9";

/// Default mean-cosine target of `--precision auto`.
pub const AUTO_COSINE_TARGET: f64 = 0.995;

#[derive(Debug, Error)]
pub enum BuildError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Prompt(#[from] PromptError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    HfTokenizer(#[from] crate::hf_tokenizer::HfTokenizerError),
    #[error(transparent)]
    Image(#[from] DecodeError),
    #[error(transparent)]
    Eval(#[from] clip_edge::eval::EvalError),
    #[error("{path}: {why}")]
    Input { path: PathBuf, why: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0:#}")]
    Tract(#[from] TractError),
    #[error(transparent)]
    Bundle(#[from] clip_edge::bundle::BundleError),
    #[error(transparent)]
    Onnx(#[from] crate::onnx::OnnxError),
    /// A bad flag or combination of flags, named in the message.
    #[error("{0}")]
    Flag(String),
    /// A label that does not fit the text encoder in a template: the
    /// label's line (from 1), the template, why ([`BuildError::in_labels`]
    /// names the labels file).
    #[error("label {line} with template {template:?}: {why}")]
    LabelPrompt {
        line: usize,
        template: String,
        why: String,
    },
}

impl BuildError {
    /// A [`BuildError::LabelPrompt`] as an error of the labels file
    /// `path`, naming its line.
    pub fn in_labels(self, path: &Path) -> BuildError {
        match self {
            BuildError::LabelPrompt {
                line,
                template,
                why,
            } => BuildError::Prompt(PromptError::Line {
                path: path.to_path_buf(),
                line,
                why: format!("with template {template:?}: {why}"),
            }),
            other => other,
        }
    }
}

impl From<crate::atomic::IoAt> for BuildError {
    fn from(e: crate::atomic::IoAt) -> Self {
        BuildError::Io {
            path: e.path,
            source: e.source,
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    Fixed(Precision),
    Auto,
}

impl std::str::FromStr for Requested {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fp32" => Ok(Requested::Fixed(Precision::Fp32)),
            "fp16" => Ok(Requested::Fixed(Precision::Fp16)),
            "int8" => Ok(Requested::Fixed(Precision::Int8)),
            "auto" => Ok(Requested::Auto),
            other => Err(format!(
                "unknown precision {other:?} (fp32, fp16, int8, auto)"
            )),
        }
    }
}

impl std::fmt::Display for Requested {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Requested::Fixed(p) => write!(f, "{p}"),
            Requested::Auto => f.write_str("auto"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// A checkpoint, an ONNX export folder, or an image graph `.onnx` (with
    /// `text_checkpoint` and `preprocess`).
    pub checkpoint: PathBuf,
    /// The text graph `.onnx` beside an image graph `.onnx` checkpoint.
    pub text_checkpoint: Option<PathBuf>,
    /// open_clip's `preprocess_cfg.json` beside an `.onnx` checkpoint.
    pub preprocess: Option<PathBuf>,
    pub precision: Requested,
    pub labels: PathBuf,
    pub templates: Option<PathBuf>,
    pub calibration: PathBuf,
    pub eval: Option<PathBuf>,
    pub activation: ActivationQuant,
    pub cosine_target: f64,
    pub scoring: ScoringChoice,
    pub out: PathBuf,
    pub progress: bool,
    /// Sign the manifest with this secret key file (`manifest.sig`).
    pub sign: Option<PathBuf>,
}

/// How the bundle scores labels (its manifest's `scoring`, `logit_scale`,
/// `logit_bias`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ScoringChoice {
    pub scoring: Scoring,
    /// `None`: the model's own (the checkpoint's `exp(logit_scale)`; 100
    /// for an ONNX export, which carries none).
    pub logit_scale: Option<f32>,
    /// Added to each logit before the sigmoid: required with sigmoid
    /// scoring (a bias of 0 at CLIP's scale scores every label near 1),
    /// refused (unless 0) with softmax.
    pub logit_bias: Option<f32>,
}

impl ScoringChoice {
    /// The flags, checked before any heavy work: one line naming the flag.
    fn check_flags(&self) -> Result<(), BuildError> {
        if let Some(s) = self.logit_scale {
            if !(s.is_finite() && s > 0.0 && s <= fmt::MAX_LOGIT_SCALE) {
                return Err(BuildError::Flag(format!(
                    "--logit-scale {s}: expected a positive number up to {}",
                    fmt::MAX_LOGIT_SCALE
                )));
            }
        }
        match (self.scoring, self.logit_bias) {
            (_, Some(b)) if !b.is_finite() => Err(BuildError::Flag(format!(
                "--logit-bias {b}: expected a number"
            ))),
            (Scoring::Softmax, Some(b)) if b != 0.0 => Err(BuildError::Flag(format!(
                "--logit-bias {b} with softmax scoring: a bias shifts every label alike \
                 and changes nothing (use --scoring sigmoid)"
            ))),
            (Scoring::Sigmoid, None) => Err(BuildError::Flag(
                "--scoring sigmoid needs --logit-bias (the model's learned bias, e.g. SigLIP's \
                 about -10: without one every label scores near 1)"
                    .into(),
            )),
            _ => Ok(()),
        }
    }

    /// The scale to write: `--logit-scale`, else the model's own
    /// (`model_scale`, read from `source`), checked.
    fn scale(&self, model_scale: f32, source: &Path) -> Result<f32, BuildError> {
        self.check_flags()?;
        match self.logit_scale {
            Some(s) => Ok(s),
            None if model_scale.is_finite()
                && model_scale > 0.0
                && model_scale <= fmt::MAX_LOGIT_SCALE =>
            {
                Ok(model_scale)
            }
            None => Err(BuildError::Input {
                path: source.to_path_buf(),
                why: format!(
                    "logit scale {model_scale}: expected a positive number up to {} \
                     (give --logit-scale)",
                    fmt::MAX_LOGIT_SCALE
                ),
            }),
        }
    }
}

/// The accuracy report (`report.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub precision: String,
    pub activation: String,
    pub summary: ReportSummary,
    /// Per calibration/eval image: file and cosine to fp32.
    pub per_image: Vec<(String, f64)>,
    /// Mixed precision: the layers' sensitivity (mean cosine with only that layer in int8).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sensitivity: Vec<(String, f64)>,
    pub bundle_bytes: u64,
    pub seconds: f64,
}

fn l2_normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// The prompt-ensembled table: per label, mean of the L2-normalised
/// embeddings of every template, L2-normalised again. Rows × embed dim.
pub fn text_table(
    sd: &StateDict,
    cfg: &ClipConfig,
    labels: &[String],
    templates: &[String],
    show: bool,
) -> Result<Vec<f32>, BuildError> {
    let (prompts, ids) = prompt_tokens(labels, templates, cfg.context_length)?;
    let batch = 16.min(prompts.len());
    let plan = tract_graph::into_plan(graph::text_encoder(sd, cfg, batch)?)?;
    let e = cfg.embed_dim;
    let mut emb = vec![0f32; prompts.len() * e];
    let pb = clip_edge::progress::bar(
        show && prompts.len() > 64,
        prompts.len() as u64,
        "text encoder",
    );
    for (ci, chunk) in ids.chunks(batch).enumerate() {
        let mut flat: Vec<i64> = chunk.iter().flatten().map(|&v| v as i64).collect();
        // Pad the last batch with its first prompt.
        while flat.len() < batch * cfg.context_length {
            flat.extend_from_within(..cfg.context_length);
        }
        let t = Tensor::from_shape(&[batch, cfg.context_length], &flat)?;
        let out = tract_graph::run_f32(&plan, t)?;
        for (j, row) in out.chunks(e).take(chunk.len()).enumerate() {
            let dst = &mut emb[(ci * batch + j) * e..(ci * batch + j + 1) * e];
            dst.copy_from_slice(row);
            l2_normalize(dst);
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    Ok(average_templates(&emb, labels.len(), templates.len(), e))
}

/// Every label in every template, and its tokens (`context` each).
pub(super) fn prompt_tokens(
    labels: &[String],
    templates: &[String],
    context: usize,
) -> Result<(Vec<String>, Vec<Vec<u32>>), BuildError> {
    let tok = Tokenizer::new()?;
    prompts_tokenized(labels, templates, |p| tok.tokenize(p, context, false))
}

/// Every label in every template, and its tokens as `tokenize` makes them.
pub(super) fn prompts_tokenized<E>(
    labels: &[String],
    templates: &[String],
    tokenize: impl Fn(&str) -> Result<Vec<u32>, E>,
) -> Result<(Vec<String>, Vec<Vec<u32>>), BuildError>
where
    BuildError: From<E>,
{
    let prompts: Vec<String> = labels
        .iter()
        .flat_map(|l| templates.iter().map(move |t| prompts::fill(t, l)))
        .collect();
    let mut ids = Vec::with_capacity(prompts.len());
    for (k, p) in prompts.iter().enumerate() {
        match tokenize(p) {
            Ok(t) => ids.push(t),
            Err(e) => {
                let e = BuildError::from(e);
                // A prompt too long names its label's line and template.
                if let BuildError::Tokenizer(TokenizerError::TooLong { .. }) = &e {
                    return Err(BuildError::LabelPrompt {
                        line: k / templates.len().max(1) + 1,
                        template: templates[k % templates.len().max(1)].clone(),
                        why: e.to_string(),
                    });
                }
                return Err(e);
            }
        }
    }
    Ok((prompts, ids))
}

/// The share of `set` whose embedding's best row of `table` is its label.
fn top1(embs: &[Vec<f32>], set: &[(PathBuf, usize)], table: &[f32], e: usize) -> f64 {
    embs.iter()
        .zip(set)
        .filter(|(x, (_, y))| argmax_label(x, table, e) == *y)
        .count() as f64
        / set.len().max(1) as f64
}

/// What a build reads before any heavy work (a bad file fails it first):
/// the prompts, the calibration images (preprocessed and held) and the eval
/// set (checked, then read again on each pass).
struct Inputs {
    labels: Vec<String>,
    templates: Vec<String>,
    calib_files: Vec<PathBuf>,
    calib: Vec<Tensor>,
    eval_set: Option<Vec<(PathBuf, usize)>>,
    eval_inputs: Option<ImageFiles>,
}

impl Inputs {
    /// `n`: the input's side; `norm`: the model's mean and std; `resize`:
    /// its resize.
    fn read(
        opts: &BuildOptions,
        n: usize,
        norm: ([f32; 3], [f32; 3]),
        resize: Resize,
    ) -> Result<Self, BuildError> {
        let format = ImageFormat { n, norm, resize };
        let labels = prompts::read_labels(&opts.labels)?;
        let templates = match &opts.templates {
            Some(p) => prompts::read_templates(p)?,
            None => vec![prompts::DEFAULT_TEMPLATE.to_string()],
        };
        let calib_files = list_images(&opts.calibration)?;
        let calib = load_inputs(&opts.calibration, &calib_files, format)?;
        let eval_set = match &opts.eval {
            Some(d) => Some(list_eval(d, &labels)?),
            None => None,
        };
        let eval_inputs = match &eval_set {
            Some(set) => Some(ImageFiles::checked(
                set.iter().map(|(p, _)| p.clone()).collect(),
                format,
                opts.progress,
            )?),
            None => None,
        };
        Ok(Inputs {
            labels,
            templates,
            calib_files,
            calib,
            eval_set,
            eval_inputs,
        })
    }
}

/// Each label's row: the mean of its templates' normalised embeddings
/// (`emb`, label-major), normalised.
fn average_templates(emb: &[f32], labels: usize, templates: usize, e: usize) -> Vec<f32> {
    let mut table = vec![0f32; labels * e];
    for (li, row) in table.chunks_mut(e).enumerate() {
        for ti in 0..templates {
            let src = &emb[(li * templates + ti) * e..(li * templates + ti + 1) * e];
            row.iter_mut().zip(src).for_each(|(a, b)| *a += b);
        }
        l2_normalize(row);
    }
    table
}

/// What a build writes in a bundle folder (and `clip-quantize sections`
/// adds): a folder holding anything else is not replaced by one.
pub fn is_bundle_file(name: &str) -> bool {
    [
        fmt::MANIFEST,
        fmt::IMAGE_ENCODER,
        fmt::TEXT_TABLE,
        fmt::REPORT,
        signature::SIGNATURE,
    ]
    .contains(&name)
        || (name.starts_with("native-") && name.ends_with(".section"))
}

/// Builds a bundle; nothing is left at `out` unless the whole bundle was written.
pub fn build(opts: &BuildOptions) -> Result<Report, BuildError> {
    let start = Instant::now();
    // The output's place first: a folder of other things (the input
    // folder, a user's files) would be deleted by the replacement, and a
    // place that cannot be written fails now, not after the work.
    crate::atomic::check_out(&opts.out, "clip-quantize build", is_bundle_file)?;
    // The key: a bad key fails before any heavy work.
    let signing_key = match &opts.sign {
        Some(p) => Some(signature::read_signing_key(p)?),
        None => None,
    };
    // The flags too: a bad scale or bias fails before any heavy work.
    opts.scoring.check_flags()?;
    let onnx_file = opts.checkpoint.extension().is_some_and(|e| e == "onnx");
    let onnx_file = onnx_file
        || opts
            .checkpoint
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
    match (&opts.text_checkpoint, &opts.preprocess) {
        (None, None) if crate::onnx::is_export(&opts.checkpoint) => {
            let x = crate::onnx::Export::open(&opts.checkpoint)?;
            return from_onnx::build(opts, x, start, signing_key.as_ref());
        }
        (Some(text), Some(pre)) if onnx_file => {
            let x = crate::onnx::Export::files(&opts.checkpoint, text, pre)?;
            return from_onnx::build(opts, x, start, signing_key.as_ref());
        }
        _ if onnx_file => {
            return Err(BuildError::Input {
                path: opts.checkpoint.clone(),
                why: "an image graph .onnx needs --text-checkpoint TEXTUAL.onnx and \
                      --preprocess preprocess_cfg.json (or give the export folder)"
                    .into(),
            })
        }
        (None, None) => {}
        _ => {
            return Err(BuildError::Input {
                path: opts.checkpoint.clone(),
                why: "--text-checkpoint and --preprocess go with an image graph .onnx".into(),
            })
        }
    }
    let sd = checkpoint::load(&opts.checkpoint)?;
    let cfg = ClipConfig::infer(&sd)?;
    let n = cfg.image_resolution;
    let Inputs {
        labels,
        templates,
        calib_files,
        calib,
        eval_set,
        eval_inputs,
    } = Inputs::read(opts, n, (CLIP_MEAN, CLIP_STD), Resize::default())?;

    let table = text_table(&sd, &cfg, &labels, &templates, opts.progress)
        .map_err(|e| e.in_labels(&opts.labels))?;
    let e = cfg.embed_dim;

    // fp32 reference on the calibration images, with each layer's input range.
    let (fp32_model, layers) = graph::image_encoder_with(&sd, &cfg, 1, QuantPlan::default(), true)?;
    let (fp32_embs, absmax) = run_images(fp32_model, Images::Held(&calib), true)?;
    let mut base = QuantPlan::uniform(Precision::Int8);
    base.activation = opts.activation;
    base.activation_absmax = layers.iter().map(|l| l.name.clone()).zip(absmax).collect();

    let (plan, sensitivity) = match opts.precision {
        Requested::Fixed(Precision::Int8) => (base.clone(), Vec::new()),
        Requested::Fixed(p) => (QuantPlan::uniform(p), Vec::new()),
        Requested::Auto => auto_plan(
            &sd,
            &cfg,
            &base,
            &calib,
            &fp32_embs,
            opts.cosine_target,
            opts.progress,
        )?,
    };
    let (model, layers) = graph::image_encoder_with(&sd, &cfg, 1, plan.clone(), false)?;

    // Report on the eval set when given, else on the calibration images.
    let (summary, cos, files) = if let (Some(set), Some(inputs)) = (&eval_set, &eval_inputs) {
        let inputs = Images::Files(inputs);
        let (f, _) = run_images(graph::image_encoder(&sd, &cfg, 1)?, inputs, false)?;
        let (q, _) = run_images(model.clone(), inputs, false)?;
        let (mut s, cos) = summary(&f, &q, &table, e);
        s.zero_shot_top1 = Some(top1(&q, set, &table, e));
        s.zero_shot_top1_fp32 = Some(top1(&f, set, &table, e));
        (
            s,
            cos,
            set.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
        )
    } else {
        let (q, _) = run_images(model.clone(), Images::Held(&calib), false)?;
        let (s, cos) = summary(&fp32_embs, &q, &table, e);
        (s, cos, calib_files.clone())
    };

    let hyper = toml::Table::try_from(&cfg).map_err(|e| BuildError::Input {
        path: opts.checkpoint.clone(),
        why: e.to_string(),
    })?;
    let contents = Contents {
        table_dtype: if plan.layers == Precision::Fp32 && plan.overrides.is_empty() {
            "f32"
        } else {
            "f16"
        },
        model,
        table,
        labels,
        templates,
        summary,
        per_image: per_image(&files, &cos),
        sensitivity,
        source_path: opts.checkpoint.clone(),
        logit_scale: sd
            .get("logit_scale")?
            .data
            .first()
            .copied()
            .unwrap_or(0.0)
            .exp(),
        source: Source {
            checkpoint: file_name(&opts.checkpoint),
            format: format!("{:?}", sd.format),
            sha256: sha256_of(&opts.checkpoint)?,
        },
        model_info: ModelInfo {
            architecture: cfg.name.clone(),
            family: if cfg.is_vit() { "vit" } else { "resnet" }.into(),
            embed_dim: e,
            image_resolution: n,
            hyperparameters: hyper,
        },
        preprocess: PreprocessInfo {
            resolution: n as u32,
            mean: CLIP_MEAN,
            std: CLIP_STD,
            resize: "pillow-bicubic".into(),
        },
        layers: layers
            .iter()
            .map(|l| LayerPrecision {
                name: l.name.clone(),
                kind: l.kind.clone(),
                precision: l.precision.to_string(),
            })
            .collect(),
    };
    write_bundle(opts, start, signing_key.as_ref(), contents)
}
