//! The bundle: what `clip-quantize build` writes and the board loads.
//!
//! A directory holding `manifest.toml`, `image_encoder.nnef.tgz`,
//! `text_table.safetensors` and `report.json`. The manifest carries the
//! format version, the sha256 of every other file, the model's description,
//! the preprocessing constants, the labels and the precision of each layer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Version of the bundle format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST: &str = "manifest.toml";
pub const IMAGE_ENCODER: &str = "image_encoder.nnef.tgz";
pub const TEXT_TABLE: &str = "text_table.safetensors";
pub const REPORT: &str = "report.json";
/// Name of the table tensor inside [`TEXT_TABLE`].
pub const TABLE_TENSOR: &str = "text_table";

#[derive(Debug, Error)]
pub enum BundleError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: missing file (the bundle is incomplete)")]
    Missing { path: PathBuf },
    #[error("{path}: bad manifest: {why}")]
    Manifest { path: PathBuf, why: String },
    #[error("{path}: bundle format {found} is newer than this clip-edge reads ({supported}); rebuild it or upgrade")]
    NewerFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{path}: checksum mismatch (manifest says {expected}, file has {actual})")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{path}: {why}")]
    Table { path: PathBuf, why: String },
}

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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PreprocessInfo {
    pub resolution: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// "pillow-bicubic": the exact reference `_transform(n)`.
    pub resize: String,
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
}

/// The text-embedding table, rows L2-normalised, in its stored precision.
#[derive(Debug, Clone, PartialEq)]
pub enum TableData {
    F16(Vec<half::f16>),
    F32(Vec<f32>),
}

#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub table: TableData,
}

pub fn sha256_file(path: &Path) -> Result<String, BundleError> {
    let bytes = std::fs::read(path).map_err(|source| io_or_missing(path, source))?;
    Ok(sha256_hex(&bytes))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn io_or_missing(path: &Path, source: std::io::Error) -> BundleError {
    if source.kind() == std::io::ErrorKind::NotFound {
        BundleError::Missing {
            path: path.to_path_buf(),
        }
    } else {
        BundleError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Self, BundleError> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| io_or_missing(&path, e))?;
        // Check the version before the rest, so a newer format says so.
        let raw: toml::Table = toml::from_str(&text).map_err(|e| BundleError::Manifest {
            path: path.clone(),
            why: e.to_string().replace('\n', " "),
        })?;
        let version = raw
            .get("format_version")
            .and_then(|v| v.as_integer())
            .ok_or_else(|| BundleError::Manifest {
                path: path.clone(),
                why: "no integer `format_version`".into(),
            })?;
        if version > FORMAT_VERSION as i64 {
            return Err(BundleError::NewerFormat {
                path,
                found: version as u32,
                supported: FORMAT_VERSION,
            });
        }
        toml::from_str(&text).map_err(|e| BundleError::Manifest {
            path,
            why: e.to_string().replace('\n', " "),
        })
    }
}

impl Bundle {
    /// Opens a bundle: reads the manifest, verifies every checksum and the
    /// table's shape against the labels.
    pub fn open(dir: &Path) -> Result<Self, BundleError> {
        let manifest = Manifest::read(dir)?;
        for file in [IMAGE_ENCODER, TEXT_TABLE] {
            if !manifest.files.contains_key(file) {
                return Err(BundleError::Manifest {
                    path: dir.join(MANIFEST),
                    why: format!("no checksum for `{file}`"),
                });
            }
        }
        for (file, expected) in &manifest.files {
            let path = dir.join(file);
            let actual = sha256_file(&path)?;
            if &actual != expected {
                return Err(BundleError::Checksum {
                    path,
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        let table = read_table(&dir.join(&manifest.table.file), &manifest)?;
        Ok(Bundle {
            dir: dir.to_path_buf(),
            manifest,
            table,
        })
    }

    pub fn image_encoder_path(&self) -> PathBuf {
        self.dir.join(IMAGE_ENCODER)
    }

    pub fn labels(&self) -> &[String] {
        &self.manifest.labels
    }
}

fn read_table(path: &Path, m: &Manifest) -> Result<TableData, BundleError> {
    let err = |why: String| BundleError::Table {
        path: path.to_path_buf(),
        why,
    };
    let bytes = std::fs::read(path).map_err(|e| io_or_missing(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| err(e.to_string()))?;
    let t = st
        .tensor(TABLE_TENSOR)
        .map_err(|_| err(format!("no tensor `{TABLE_TENSOR}`")))?;
    let shape = t.shape().to_vec();
    if shape != [m.labels.len(), m.model.embed_dim] {
        return Err(err(format!(
            "table is {shape:?}, the manifest has {} labels of dimension {}",
            m.labels.len(),
            m.model.embed_dim
        )));
    }
    let data = t.data();
    match t.dtype() {
        safetensors::Dtype::F16 => Ok(TableData::F16(
            data.chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]))
                .collect(),
        )),
        safetensors::Dtype::F32 => Ok(TableData::F32(
            data.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        )),
        other => Err(err(format!("unsupported table dtype {other:?}"))),
    }
}
