//! `manifest.toml`: what a bundle is (its source, model, preprocessing,
//! table, scoring, accuracy report, layers and the sha256 of every other
//! file), and the checks a manifest must pass before anything it names is
//! read.

use serde::{Deserialize, Serialize};

use super::*;
use crate::preprocess::Resize;

/// The largest logit scale accepted (CLIP's is 100, SigLIP's about 110): a
/// larger one turns rounding noise into certainty, and overflows to inf
/// (and NaN against a zero embedding).
pub const MAX_LOGIT_SCALE: f32 = 1e4;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Source {
    /// File name of the checkpoint the bundle was built from.
    pub checkpoint: String,
    pub format: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelInfo {
    pub architecture: String,
    pub family: String,
    pub embed_dim: usize,
    pub image_resolution: usize,
    /// Every inferred hyperparameter, as `clip-quantize inspect` prints them.
    pub hyperparameters: toml::Table,
}

/// How a frame's labels are scored ([`Manifest::scoring`]).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Scoring {
    /// Probabilities over the labels, summing to 1:
    /// `softmax(logit_scale · cos)`.
    #[default]
    Softmax,
    /// Each label's own probability: `sigmoid(logit_scale · cos + logit_bias)`.
    Sigmoid,
}

impl Scoring {
    pub fn is_softmax(&self) -> bool {
        *self == Scoring::Softmax
    }
}

impl std::fmt::Display for Scoring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scoring::Softmax => "softmax",
            Scoring::Sigmoid => "sigmoid",
        })
    }
}

fn is_zero(v: &f32) -> bool {
    *v == 0.0
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PreprocessInfo {
    pub resolution: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// "pillow-bicubic": the exact reference `_transform(n)`;
    /// "pillow-bilinear": the same with Pillow's bilinear filter
    /// ([`Filter`]); either with "-squash": the whole image resized to the
    /// input, no crop ([`Fit`]).
    pub resize: String,
}

impl PreprocessInfo {
    /// The resize (a manifest that passed [`Manifest::validate`] names
    /// one).
    pub fn resize(&self) -> Resize {
        Resize::from_name(&self.resize).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TableInfo {
    pub file: String,
    /// "f16" or "f32".
    pub dtype: String,
    pub rows: usize,
    pub dim: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LayerPrecision {
    pub name: String,
    pub kind: String,
    pub precision: String,
}

/// The accuracy report's summary (the whole report is `report.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ReportSummary {
    pub images: usize,
    pub cosine_mean: f64,
    pub cosine_p1: f64,
    pub cosine_min: f64,
    pub top1_agreement: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zero_shot_top1: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zero_shot_top1_fp32: Option<f64>,
}

/// A native section the bundle ships for one kernel path: the encoder
/// lowered and its weights packed on the host (`clip-quantize sections`),
/// so that a board runs it without lowering the graph, or without a graph
/// compiler at all. Readers that know no `native` key ignore it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NativeSection {
    /// The kernel path it was packed for (e.g. `aarch64-dotprod`).
    pub kernels: String,
    /// Its file in the bundle.
    pub file: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its own BLAKE3 digest (the section's last 32 bytes, which its reader
    /// checks against the rest), in hex: the manifest, and a signature of
    /// it, cover the section through it.
    pub blake3: String,
}

/// Most native sections a manifest may list.
pub const MAX_NATIVE_SECTIONS: usize = 32;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format_version: u32,
    /// tract version that wrote the graph.
    pub tract_version: String,
    pub created_by: String,
    /// fp32, fp16, int8 or auto.
    pub precision: String,
    /// Activation quantisation of int8 layers: dynamic_per_token or static_per_tensor.
    pub activation: String,
    /// `exp(logit_scale)` of the checkpoint.
    pub logit_scale: f32,
    /// How a frame's labels are scored: a softmax over the labels (CLIP),
    /// or a sigmoid of each label's own logit (SigLIP). Absent: softmax.
    #[serde(default, skip_serializing_if = "Scoring::is_softmax")]
    pub scoring: Scoring,
    /// Added to each logit before the sigmoid (SigLIP's learned bias);
    /// absent: 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub logit_bias: f32,
    pub labels: Vec<String>,
    pub templates: Vec<String>,
    pub source: Source,
    pub model: ModelInfo,
    pub preprocess: PreprocessInfo,
    pub table: TableInfo,
    pub report: ReportSummary,
    pub layers: Vec<LayerPrecision>,
    /// sha256 of every other file of the bundle.
    pub files: BTreeMap<String, String>,
    /// Native sections made on the host, one per kernel path (not in
    /// `files`: each carries its own digest, checked as it is read).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub native: Vec<NativeSection>,
}

impl Manifest {
    /// The oldest format version that holds this manifest: 3 for a resize
    /// other than bicubic with a crop, 2 for sigmoid scoring, else 1.
    pub fn needed_format(&self) -> u32 {
        if Resize::from_name(&self.preprocess.resize) != Some(Resize::default()) {
            3
        } else if !self.scoring.is_softmax() {
            2
        } else {
            FORMAT_VERSION_SOFTMAX
        }
    }

    /// Parses and validates manifest bytes; `path` names them in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self, BundleError> {
        let bad = |why: String| BundleError::Manifest {
            path: path.to_path_buf(),
            why,
        };
        let text = std::str::from_utf8(bytes).map_err(|e| bad(format!("not UTF-8: {e}")))?;
        // Check the version before the rest, so a newer format says so.
        let raw: toml::Table =
            toml::from_str(text).map_err(|e| bad(e.to_string().replace('\n', " ")))?;
        let version = raw
            .get("format_version")
            .and_then(|v| v.as_integer())
            .ok_or_else(|| bad("no integer `format_version`".into()))?;
        if version > FORMAT_VERSION as i64 {
            return Err(BundleError::NewerFormat {
                path: path.to_path_buf(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if version < 1 {
            return Err(bad(format!(
                "format_version = {version}; versions start at 1"
            )));
        }
        let m: Manifest =
            toml::from_str(text).map_err(|e| bad(e.to_string().replace('\n', " ")))?;
        m.validate().map_err(bad)?;
        Ok(m)
    }

    /// The values the runtime sizes buffers from or divides by.
    fn validate(&self) -> Result<(), String> {
        let dim = self.model.embed_dim;
        if dim == 0 || dim > MAX_EMBED_DIM {
            return Err(format!(
                "model.embed_dim = {dim}; expected 1 to {MAX_EMBED_DIM}"
            ));
        }
        let r = self.preprocess.resolution;
        if r == 0 || r > MAX_RESOLUTION {
            return Err(format!(
                "preprocess.resolution = {r}; expected 1 to {MAX_RESOLUTION}"
            ));
        }
        if self.labels.is_empty() {
            return Err("no labels".into());
        }
        if self.table.rows != self.labels.len() || self.table.dim != dim {
            return Err(format!(
                "table is [{}x{}], the manifest has {} labels of dimension {dim}",
                self.table.rows,
                self.table.dim,
                self.labels.len()
            ));
        }
        if !(self.logit_scale.is_finite()
            && self.logit_scale > 0.0
            && self.logit_scale <= MAX_LOGIT_SCALE)
        {
            return Err(format!(
                "logit_scale = {}; expected a positive number up to {MAX_LOGIT_SCALE}",
                self.logit_scale
            ));
        }
        let Some(resize) = Resize::from_name(&self.preprocess.resize) else {
            return Err(format!(
                "preprocess resize = {:?}; this clip-edge resizes with {}",
                self.preprocess.resize,
                Resize::names()
            ));
        };
        if resize != Resize::default() && self.format_version < 3 {
            return Err(format!(
                "preprocess resize = {:?} in format_version {}; it needs format 3",
                self.preprocess.resize, self.format_version
            ));
        }
        if !self.scoring.is_softmax() && self.format_version < 2 {
            return Err(format!(
                "scoring = \"{}\" in format_version {}; it needs format 2",
                self.scoring, self.format_version
            ));
        }
        if !self.logit_bias.is_finite() || (self.scoring.is_softmax() && self.logit_bias != 0.0) {
            return Err(format!(
                "logit_bias = {}; expected a finite number, and 0 with softmax scoring",
                self.logit_bias
            ));
        }
        let p = &self.preprocess;
        if p.mean.iter().chain(&p.std).any(|v| !v.is_finite()) || p.std.contains(&0.0) {
            return Err(format!(
                "preprocess mean {:?} / std {:?}: expected finite values, std not 0",
                p.mean, p.std
            ));
        }
        for name in self.files.keys() {
            if !is_plain_name(name) || name == MANIFEST || name == signature::SIGNATURE {
                return Err(format!(
                    "[files] names {name:?}: a bundle file must be a plain file name \
                     inside the bundle (letters, digits, `.`, `_`, `-`)"
                ));
            }
        }
        for file in [IMAGE_ENCODER, self.table.file.as_str()] {
            if !self.files.contains_key(file) {
                return Err(format!(
                    "no checksum for `{file}`: every file the runtime reads must be in [files]"
                ));
            }
        }
        if self.native.len() > MAX_NATIVE_SECTIONS {
            return Err(format!(
                "{} native sections; at most {MAX_NATIVE_SECTIONS}",
                self.native.len()
            ));
        }
        for (i, n) in self.native.iter().enumerate() {
            let shown = |s: &str| s.chars().take(80).collect::<String>();
            if !is_plain_name(&n.file)
                || n.file == MANIFEST
                || n.file == signature::SIGNATURE
                || self.files.contains_key(&n.file)
            {
                return Err(format!(
                    "[[native]] file {:?}: expected a plain file name of its own in the bundle",
                    shown(&n.file)
                ));
            }
            if !is_plain_name(&n.kernels) {
                return Err(format!(
                    "[[native]] kernels = {:?}: expected a kernel path's name",
                    shown(&n.kernels)
                ));
            }
            if n.bytes > MAX_FILE_BYTES {
                return Err(format!(
                    "[[native]] {:?}: bytes = {}; at most {MAX_FILE_BYTES}",
                    shown(&n.file),
                    n.bytes
                ));
            }
            if n.blake3.len() != 64 || !n.blake3.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "[[native]] {:?}: blake3 = {:?}; expected 64 hex digits",
                    shown(&n.file),
                    shown(&n.blake3)
                ));
            }
            if self.native[..i]
                .iter()
                .any(|m| m.kernels == n.kernels || m.file == n.file)
            {
                return Err(format!(
                    "[[native]] lists kernels {:?} or file {:?} twice",
                    shown(&n.kernels),
                    shown(&n.file)
                ));
            }
        }
        Ok(())
    }
}
