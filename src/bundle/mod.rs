//! The bundle: what `clip-quantize build` writes and the board loads.
//!
//! A directory holding `manifest.toml`, `image_encoder.nnef.tgz`,
//! `text_table.safetensors` and `report.json`. The manifest carries the
//! format version, the sha256 of every other file, the model's description,
//! the preprocessing constants, the labels and the precision of each layer.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::signature::{self, VerifyingKey};

mod manifest;

pub use manifest::{
    LayerPrecision, Manifest, ModelInfo, NativeSection, PreprocessInfo, ReportSummary, Scoring,
    Source, TableInfo, MAX_LOGIT_SCALE, MAX_NATIVE_SECTIONS,
};

/// The newest version of the bundle format this build reads: 2 adds
/// sigmoid scoring (`scoring`, `logit_bias`), which a reader of version 1
/// would silently score with softmax; 3 adds a bilinear resize
/// (`[preprocess] resize = "pillow-bilinear"`), which readers of 1 and 2
/// would silently resize bicubic. A bundle is written with the oldest
/// version that holds it ([`Manifest::needed_format`]): one that scores
/// with softmax and resizes bicubic is still version 1, which every
/// reader reads.
pub const FORMAT_VERSION: u32 = 3;
/// The version written for a bundle that scores with softmax and resizes
/// bicubic (what every reader reads).
pub const FORMAT_VERSION_SOFTMAX: u32 = 1;
pub const MANIFEST: &str = "manifest.toml";
pub const IMAGE_ENCODER: &str = "image_encoder.nnef.tgz";
pub const TEXT_TABLE: &str = "text_table.safetensors";
pub const REPORT: &str = "report.json";
/// Name of the table tensor inside [`TEXT_TABLE`].
pub const TABLE_TENSOR: &str = "text_table";

/// Largest manifest read (ImageNet's 1,000 labels and 80 templates make
/// about 100 KB).
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;
/// Largest bundle file read (ViT-L/14@336px's image encoder at fp32 is
/// about 1.2 GB).
pub const MAX_FILE_BYTES: u64 = 2 << 30;
/// Largest text table file (ImageNet's 1,000 labels × 768 at f32 are
/// 3 MB; a million labels × 64 would fit).
pub const MAX_TABLE_BYTES: u64 = 256 << 20;
/// Largest embedding dimension a manifest may declare (released CLIPs: 512
/// to 1,024).
pub const MAX_EMBED_DIM: usize = 16_384;
/// Largest input resolution a manifest may declare (released CLIPs: 224 to
/// 448).
pub const MAX_RESOLUTION: u32 = crate::preprocess::MAX_RESOLUTION;

#[derive(Debug, Error)]
pub enum BundleError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: missing file (the bundle is incomplete)")]
    Missing { path: PathBuf },
    #[error("{path}: no such bundle folder")]
    NoFolder { path: PathBuf },
    #[error("{path}: a file; a bundle is the folder that holds manifest.toml")]
    NotFolder { path: PathBuf },
    #[error("{path}: bad manifest: {why}")]
    Manifest { path: PathBuf, why: String },
    #[error("{path}: bundle format {found} is newer than this clip-edge reads ({supported}); rebuild it or upgrade")]
    NewerFormat {
        path: PathBuf,
        found: i64,
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
    /// A file the bundle may not read: a name that is not a plain file name
    /// inside the bundle, something other than a regular file, too large.
    #[error("{path}: {why}")]
    Refused { path: PathBuf, why: String },
    #[error("{path}: {why}")]
    Signature { path: PathBuf, why: String },
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
    /// sha256 of the manifest's bytes (which name every other file's).
    pub manifest_sha256: String,
    /// The image encoder's bytes, as hashed.
    encoder: Vec<u8>,
}

/// sha256 of a file, streamed (host side: checkpoints of any size).
pub fn sha256_file(path: &Path) -> Result<String, BundleError> {
    let mut f = std::fs::File::open(path).map_err(|e| io_or_missing(path, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| io_or_missing(path, e))?;
    Ok(hex::encode(h.finalize()))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A file name the manifest may name: one plain component of ASCII letters,
/// digits, `.`, `_` and `-`, not starting with a dot, so it stays inside the
/// bundle directory.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Reads a regular file (not a link, device or pipe) of at most `max` bytes,
/// whole. The size is checked before anything is allocated, and the read
/// stops at `max + 1` bytes whatever the file does meanwhile.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, BundleError> {
    read_regular(path, max, false)
}

/// [`read_bounded`], following a symbolic link when `follow_links` (for
/// files a user names, such as images; never inside a bundle).
pub fn read_regular(path: &Path, max: u64, follow_links: bool) -> Result<Vec<u8>, BundleError> {
    let refused = |why: String| BundleError::Refused {
        path: path.to_path_buf(),
        why,
    };
    let f = open_checked(path, follow_links)?;
    let len = f.metadata().map_err(|e| io_or_missing(path, e))?.len();
    if len > max {
        return Err(refused(format!(
            "{len} bytes, more than the {max} this runtime reads"
        )));
    }
    let mut buf = Vec::new();
    buf.try_reserve_exact(len as usize)
        .map_err(|_| refused(format!("cannot allocate {len} bytes")))?;
    f.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| io_or_missing(path, e))?;
    if buf.len() as u64 > max {
        return Err(refused(format!(
            "grew past the {max} bytes this runtime reads"
        )));
    }
    Ok(buf)
}

fn open_checked(path: &Path, follow_links: bool) -> Result<std::fs::File, BundleError> {
    open_regular(path, follow_links).map_err(|e| match e {
        OpenError::Io(e) => io_or_missing(path, e),
        OpenError::NotRegular(kind) => BundleError::Refused {
            path: path.to_path_buf(),
            why: if follow_links {
                format!("not a regular file ({kind})")
            } else {
                format!("not a regular file ({kind}); a bundle holds plain files only")
            },
        },
    })
}

/// Why [`open_regular`] refused.
#[derive(Debug)]
pub enum OpenError {
    Io(std::io::Error),
    /// What it is instead: a symbolic link, a directory, a device, pipe or socket.
    NotRegular(&'static str),
}

/// Opens `path` for reading only if it is a regular file, without blocking
/// on a pipe and, unless `follow_links`, without following a symbolic link
/// in its last component: the check and the open are one (`O_NONBLOCK`,
/// `O_NOFOLLOW`, then `fstat` on the open file), so the file cannot be
/// swapped in between.
pub fn open_regular(path: &Path, follow_links: bool) -> Result<std::fs::File, OpenError> {
    use std::os::unix::fs::OpenOptionsExt;
    let nofollow = if follow_links { 0 } else { libc::O_NOFOLLOW };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nofollow | libc::O_NONBLOCK)
        .open(path);
    let f = match f {
        Ok(f) => f,
        // O_NOFOLLOW on a link: ELOOP.
        Err(e) if !follow_links && e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(OpenError::NotRegular("a symbolic link"))
        }
        Err(e) => return Err(OpenError::Io(e)),
    };
    let t = f.metadata().map_err(OpenError::Io)?.file_type();
    if !t.is_file() {
        return Err(OpenError::NotRegular(kind_of(&t)));
    }
    Ok(f)
}

/// sha256 of a regular file of at most `max` bytes, streamed.
fn hash_bounded(path: &Path, max: u64) -> Result<String, BundleError> {
    let refused = |why: String| BundleError::Refused {
        path: path.to_path_buf(),
        why,
    };
    let f = open_checked(path, false)?;
    let mut h = Sha256::new();
    let n = std::io::copy(&mut f.take(max + 1), &mut h).map_err(|e| io_or_missing(path, e))?;
    if n > max {
        return Err(refused(format!(
            "more than the {max} bytes this runtime reads"
        )));
    }
    Ok(hex::encode(h.finalize()))
}

fn kind_of(t: &std::fs::FileType) -> &'static str {
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else {
        "a device, pipe or socket"
    }
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

/// What a bundle must prove before it is used, beyond its checksums.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Refuse the bundle unless `manifest.sig` is this key's signature of
    /// the manifest.
    pub require_signature: Option<VerifyingKey>,
}

impl Bundle {
    /// Opens a bundle: reads the manifest, verifies every checksum and the
    /// table's shape against the labels.
    pub fn open(dir: &Path) -> Result<Self, BundleError> {
        Self::open_with(dir, &Trust::default())
    }

    /// [`Bundle::open`], first checking the manifest's signature when
    /// `trust` requires one. Every file is read once: the bytes hashed are
    /// the bytes parsed.
    pub fn open_with(dir: &Path, trust: &Trust) -> Result<Self, BundleError> {
        let mut b = Self::open_without_encoder(dir, trust)?;
        b.read_encoder()?;
        Ok(b)
    }

    /// As [`Bundle::open_with`], the image encoder's file left unread
    /// ([`Bundle::read_encoder`] reads and verifies it): for a caller that
    /// may not need the graph (a saved native section of this manifest).
    pub fn open_without_encoder(dir: &Path, trust: &Trust) -> Result<Self, BundleError> {
        if dir.is_file() {
            return Err(BundleError::NotFolder {
                path: dir.to_path_buf(),
            });
        }
        if !dir.is_dir() {
            return Err(BundleError::NoFolder {
                path: dir.to_path_buf(),
            });
        }
        let mpath = dir.join(MANIFEST);
        let mbytes = read_bounded(&mpath, MAX_MANIFEST_BYTES)?;
        if let Some(key) = &trust.require_signature {
            let spath = dir.join(signature::SIGNATURE);
            let sig = match read_bounded(&spath, signature::MAX_SIGNATURE_FILE_BYTES) {
                Err(BundleError::Missing { .. }) => {
                    return Err(BundleError::Signature {
                        path: spath,
                        why: "missing: the bundle is unsigned and a signature is required".into(),
                    })
                }
                other => other?,
            };
            signature::verify(key, &mbytes, &sig).map_err(|why| BundleError::Signature {
                path: spath,
                why: why.to_string(),
            })?;
        }
        let manifest = Manifest::parse(&mbytes, &mpath)?;
        let mut table_bytes = Vec::new();
        for (file, expected) in &manifest.files {
            let path = dir.join(file);
            let is_table = *file == manifest.table.file;
            if file == IMAGE_ENCODER {
                continue;
            }
            let (bytes, actual) = if is_table {
                let bytes = read_bounded(&path, MAX_TABLE_BYTES)?;
                let h = sha256_hex(&bytes);
                (bytes, h)
            } else {
                // Only hashed (report.json): streamed, never held.
                (Vec::new(), hash_bounded(&path, MAX_FILE_BYTES)?)
            };
            if &actual != expected {
                return Err(BundleError::Checksum {
                    path,
                    expected: expected.clone(),
                    actual,
                });
            }
            if is_table {
                table_bytes = bytes;
            }
        }
        let table = parse_table(&table_bytes, &dir.join(&manifest.table.file), &manifest)?;
        Ok(Bundle {
            dir: dir.to_path_buf(),
            manifest_sha256: sha256_hex(&mbytes),
            manifest,
            table,
            encoder: Vec::new(),
        })
    }

    /// Reads the image encoder's file and checks it against the manifest
    /// (the bytes hashed are the bytes kept, for
    /// [`Bundle::take_encoder_bytes`]).
    pub fn read_encoder(&mut self) -> Result<(), BundleError> {
        let path = self.image_encoder_path();
        let Some(expected) = self.manifest.files.get(IMAGE_ENCODER) else {
            return Err(BundleError::Manifest {
                path: self.dir.join(MANIFEST),
                why: format!("[files] lists no {IMAGE_ENCODER}"),
            });
        };
        let bytes = read_bounded(&path, MAX_FILE_BYTES)?;
        let actual = sha256_hex(&bytes);
        if &actual != expected {
            return Err(BundleError::Checksum {
                path,
                expected: expected.clone(),
                actual,
            });
        }
        self.encoder = bytes;
        Ok(())
    }

    pub fn image_encoder_path(&self) -> PathBuf {
        self.dir.join(IMAGE_ENCODER)
    }

    /// Hands over the encoder's verified bytes, so that they are not kept
    /// once parsed.
    pub fn take_encoder_bytes(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.encoder)
    }

    pub fn labels(&self) -> &[String] {
        &self.manifest.labels
    }
}

/// Parses the table file's bytes against the manifest's labels and dimension.
pub fn parse_table(bytes: &[u8], path: &Path, m: &Manifest) -> Result<TableData, BundleError> {
    let err = |why: String| BundleError::Table {
        path: path.to_path_buf(),
        why,
    };
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| err(e.to_string()))?;
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
    let dtype = match t.dtype() {
        safetensors::Dtype::F16 => "f16",
        safetensors::Dtype::F32 => "f32",
        other => return Err(err(format!("unsupported table dtype {other:?}"))),
    };
    if dtype != m.table.dtype {
        return Err(err(format!(
            "table is {dtype}, the manifest says {}",
            m.table.dtype
        )));
    }
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
