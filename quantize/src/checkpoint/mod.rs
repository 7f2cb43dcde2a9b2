//! Checkpoint readers: every format ends as a [`StateDict`] with OpenAI's
//! parameter names (`visual.conv1.weight`, `transformer.resblocks.0.attn.in_proj_weight`, …).

pub mod hf_safetensors;
pub mod openai_jit;
pub mod torch_zip;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a CLIP checkpoint: {why}")]
    NotACheckpoint { path: PathBuf, why: String },
    /// A model these graphs would run wrongly (another activation, heads
    /// of another width).
    #[error("{path}: {why}")]
    Unsupported { path: PathBuf, why: String },
    #[error("{path}: corrupt or truncated archive: {why}")]
    Corrupt { path: PathBuf, why: String },
    #[error("{path}: missing tensor `{key}`")]
    MissingKey { path: PathBuf, key: String },
    #[error("{path}: tensor `{key}` has shape {actual:?}, expected {expected:?}")]
    Shape {
        path: PathBuf,
        key: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    #[error("{path}: tensor `{key}` {why}")]
    Layout {
        path: PathBuf,
        key: String,
        why: String,
    },
    #[error("{path}: tensor `{key}` has unsupported dtype {dtype}")]
    Dtype {
        path: PathBuf,
        key: String,
        dtype: String,
    },
}

/// The storage type a tensor had in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum SourceDtype {
    F16,
    BF16,
    F32,
    F64,
    I64,
    I32,
    U8,
}

/// One tensor, converted to f32 (row-major).
#[derive(Debug, Clone)]
pub struct Param {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    pub dtype: SourceDtype,
}

impl Param {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The checkpoint formats we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Format {
    /// OpenAI's released TorchScript archive.
    OpenAiJit,
    /// `torch.save(state_dict)` zip.
    TorchStateDict,
    /// HuggingFace `CLIPModel` safetensors.
    HfSafetensors,
}

#[derive(Debug, Clone)]
pub struct StateDict {
    pub path: PathBuf,
    pub format: Format,
    pub tensors: BTreeMap<String, Param>,
}

impl StateDict {
    pub fn get(&self, key: &str) -> Result<&Param, CheckpointError> {
        self.tensors
            .get(key)
            .ok_or_else(|| CheckpointError::MissingKey {
                path: self.path.clone(),
                key: key.to_string(),
            })
    }

    /// The tensor `key`, checked to have `shape`.
    pub fn get_shaped(&self, key: &str, shape: &[usize]) -> Result<&Param, CheckpointError> {
        let p = self.get(key)?;
        if p.shape != shape {
            return Err(CheckpointError::Shape {
                path: self.path.clone(),
                key: key.to_string(),
                expected: shape.to_vec(),
                actual: p.shape.clone(),
            });
        }
        Ok(p)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(|s| s.as_str())
    }
}

/// Reads any supported checkpoint, telling the format from the file itself.
pub fn load(path: &Path) -> Result<StateDict, CheckpointError> {
    let io = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = std::fs::read(path).map_err(io)?;
    load_bytes(path, &bytes)
}

/// [`load`] on a checkpoint held in memory; `path` only names it in errors.
pub fn load_bytes(path: &Path, bytes: &[u8]) -> Result<StateDict, CheckpointError> {
    if bytes.starts_with(b"PK") {
        torch_zip::load_zip(path, bytes)
    } else if bytes.len() >= 8 && looks_like_safetensors(bytes) {
        hf_safetensors::load(path, bytes)
    } else {
        Err(CheckpointError::NotACheckpoint {
            path: path.to_path_buf(),
            why: "neither a PyTorch zip archive nor a safetensors file".into(),
        })
    }
}

fn looks_like_safetensors(bytes: &[u8]) -> bool {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    n > 0 && n < bytes.len() && bytes.get(8) == Some(&b'{')
}
