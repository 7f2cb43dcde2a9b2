//! Where native sections ([`crate::engine::native::section`]) are kept
//! between runs: one file per bundle folder and kernel path, in a private
//! cache folder, written whole or not at all and mapped read-only.
//!
//! The folder: `CLIP_EDGE_CACHE` (`off` turns the cache off), else
//! systemd's `CACHE_DIRECTORY` (`CacheDirectory=` in the unit), else
//! `$XDG_CACHE_HOME/clip-edge`, else `~/.cache/clip-edge`. A section is
//! trusted as far as that folder is: the folder and the file must belong to
//! this user (or root) and be writable by no one else, or they are not
//! used. A section's key binds it to the manifest's bytes (which carry the
//! encoder's sha256 and are what a signature covers), to the encoder
//! file's identity (size, time, inode), to this executable's and to the
//! options that shape a schedule.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::bundle::{open_regular, Bundle, OpenError};
use crate::engine::schedule::blob::SharedBytes;

/// Why the section cache could not be used (a path and what went wrong):
/// the engine then loads without it and says so.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CacheError(pub String);

impl From<String> for CacheError {
    fn from(message: String) -> Self {
        CacheError(message)
    }
}

/// Files kept in the cache folder; beyond this the least recently written
/// ones go (a board runs one or two bundles).
const MAX_FILES: usize = 8;
const SUFFIX: &str = ".section";
/// A temporary file older than this is a save that died.
const STALE_TMP: std::time::Duration = std::time::Duration::from_secs(600);

/// A folder of native sections.
#[derive(Debug, Clone)]
pub struct SectionCache {
    dir: PathBuf,
}

/// One bundle's section in the cache: its file and the key it must carry.
pub struct Entry {
    pub path: PathBuf,
    pub key: String,
}

impl SectionCache {
    pub fn at(dir: impl Into<PathBuf>) -> SectionCache {
        SectionCache { dir: dir.into() }
    }

    /// The cache folder from the environment (see the module's docs);
    /// `None` when it is turned off or no folder can be named.
    pub fn from_env() -> Option<SectionCache> {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        if let Some(v) = var("CLIP_EDGE_CACHE") {
            return (v != "off").then(|| Self::at(v));
        }
        if let Some(v) = var("CACHE_DIRECTORY") {
            // systemd lists several folders with `:` when the unit names several.
            let first = v
                .to_string_lossy()
                .split(':')
                .next()
                .unwrap_or("")
                .to_string();
            return Some(Self::at(first));
        }
        if let Some(v) = var("XDG_CACHE_HOME") {
            return Some(Self::at(Path::new(&v).join("clip-edge")));
        }
        var("HOME").map(|h| Self::at(Path::new(&h).join(".cache").join("clip-edge")))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry of `bundle` (its encoder's file not necessarily read) for
    /// the `kernels` path and `options` (precision, schedule options).
    pub fn entry(
        &self,
        bundle: &Bundle,
        kernels: &str,
        options: &str,
    ) -> Result<Entry, CacheError> {
        let dir =
            fs::canonicalize(&bundle.dir).map_err(|e| format!("{}: {e}", bundle.dir.display()))?;
        let enc = bundle.image_encoder_path();
        let m = fs::symlink_metadata(&enc).map_err(|e| format!("{}: {e}", enc.display()))?;
        if !m.is_file() {
            return Err(format!("{}: not a regular file", enc.display()).into());
        }
        // A build must never read another build's section: without this
        // executable's identity there is no key.
        let exe = std::env::current_exe()
            .and_then(fs::metadata)
            .map(|x| identity(&x))
            .map_err(|e| format!("this executable's identity: {e}"))?;
        let key = format!(
            "clip-edge {} section {}; exe {exe}; bundle {}; manifest sha256 {}; encoder {}; kernels {kernels}; {options}",
            env!("CARGO_PKG_VERSION"),
            crate::engine::native::section::VERSION,
            dir.display(),
            bundle.manifest_sha256,
            identity(&m),
        );
        let name =
            hex::encode(&Sha256::digest(format!("{}\n{kernels}\n{options}", dir.display()))[..12]);
        Ok(Entry {
            path: self.dir.join(format!("{name}{SUFFIX}")),
            key,
        })
    }

    /// The section at `e` mapped read-only, `Ok(None)` when there is none;
    /// an error when it (or the folder) is not private to this user.
    pub fn open(&self, e: &Entry) -> Result<Option<SharedBytes>, CacheError> {
        match fs::metadata(&self.dir) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            _ => private(&self.dir)?,
        }
        map_private(&e.path)
    }

    /// Writes a section at `e` with `write`: into a new file, synced, then
    /// renamed over the old one (a reader sees the old section or the new,
    /// never part of one). Returns the bytes written.
    pub fn save(
        &self,
        e: &Entry,
        write: impl FnOnce(&mut BufWriter<&mut File>) -> std::io::Result<u64>,
    ) -> Result<u64, CacheError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|err| format!("{}: {err}", self.dir.display()))?;
        private(&self.dir)?;
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let tmp = self.dir.join(format!(
            ".{}.{}.{}.tmp",
            e.path.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let done = crate::durable::replace(&e.path, &tmp, 0o600, |f| {
            let mut w = BufWriter::with_capacity(1 << 20, f);
            let n = write(&mut w)?;
            w.flush()?;
            Ok(n)
        });
        match done {
            Ok(n) => {
                self.prune(&e.path);
                Ok(n)
            }
            Err(err) => Err(format!("{}: {err}", e.path.display()).into()),
        }
    }

    /// Removes the least recently written sections beyond [`MAX_FILES`]
    /// (never `keep`), and what a writer that died mid-save left.
    fn prune(&self, keep: &Path) {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return;
        };
        let now = std::time::SystemTime::now();
        let mut files: Vec<(i64, PathBuf)> = Vec::new();
        for d in rd.flatten() {
            let name = d.file_name().to_string_lossy().into_owned();
            let Ok(m) = d.metadata() else { continue };
            if is_temporary(&name) {
                let age = m.modified().ok().and_then(|t| now.duration_since(t).ok());
                if age.is_some_and(|a| a > STALE_TMP) {
                    let _ = fs::remove_file(d.path());
                }
            } else if is_section(&name) && d.path() != keep {
                files.push((m.mtime(), d.path()));
            }
        }
        files.sort();
        let extra = (files.len() + 1).saturating_sub(MAX_FILES);
        for (_, p) in files.into_iter().take(extra) {
            log::info!(
                "native section cache: removing {} (least recently written)",
                p.display()
            );
            let _ = fs::remove_file(p);
        }
    }
}

/// A section's name as [`SectionCache::entry`] makes it: 24 hex digits
/// and the suffix (nothing else in the folder is ever removed).
fn is_section(name: &str) -> bool {
    name.strip_suffix(SUFFIX)
        .is_some_and(|h| h.len() == 24 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A temporary file of [`SectionCache::save`]: `.NAME.PID.SEQ.tmp`.
fn is_temporary(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else {
        return false;
    };
    let mut parts = rest.rsplitn(3, '.');
    let (seq, pid, section) = (parts.next(), parts.next(), parts.next());
    let digits =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    digits(seq) && digits(pid) && section.is_some_and(is_section)
}

/// The file at `path` mapped read-only, `Ok(None)` when there is none; an
/// error when it is not a regular file, or not private to this user (or
/// root): a file another user may write could change, or shrink, under the
/// mapping.
pub fn map_private(path: &Path) -> Result<Option<SharedBytes>, CacheError> {
    // Not through a link, never blocking on a pipe: a regular file or
    // nothing.
    let file = match open_regular(path, false) {
        Ok(f) => f,
        Err(OpenError::Io(err)) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(OpenError::Io(err)) => return Err(err.to_string().into()),
        Err(OpenError::NotRegular(what)) => {
            return Err(format!("{what}, not a regular file").into())
        }
    };
    let meta = file.metadata().map_err(|err| err.to_string())?;
    check_private(&meta, "the file")?;
    // SAFETY: the file is this user's (or root's) and writable by no one
    // else (checked above), and neither this cache nor `clip-quantize`
    // writes a section in place: each writes a new file and renames it
    // over the old, so the mapped bytes do not change while they are
    // mapped. Only this user or root writing into the file itself (an
    // operator copying a bundle over the one in use, against the docs)
    // could change or shrink them under the engine.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|err| err.to_string())?;
    Ok(Some(Arc::new(map)))
}

/// A file's identity: size, modification time, inode and device.
fn identity(m: &fs::Metadata) -> String {
    format!(
        "{} bytes, mtime {}.{:09}, inode {}:{}",
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.dev(),
        m.ino()
    )
}

/// The cache folder belongs to this user (or root) and no one else may
/// write in it.
fn private(dir: &Path) -> Result<(), CacheError> {
    let m = fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    check_private(&m, &format!("the folder {}", dir.display()))
}

fn check_private(m: &fs::Metadata, what: &str) -> Result<(), CacheError> {
    // The owner of /proc/self is this process's effective user.
    let me = fs::metadata("/proc/self").map(|p| p.uid()).ok();
    if m.uid() != 0 && me.is_some_and(|u| u != m.uid()) {
        return Err(format!("{what} belongs to user {}, not this one: not used", m.uid()).into());
    }
    if m.mode() & 0o022 != 0 {
        return Err(format!(
            "{what} is writable by others (mode {:o}): not used",
            m.mode() & 0o777
        )
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_its_own_files_are_pruned() {
        assert!(is_section("0123456789abcdef01234567.section"));
        assert!(!is_section("notes.section"));
        assert!(!is_section("0123456789abcdef0123456z.section"));
        assert!(is_temporary(".0123456789abcdef01234567.section.42.0.tmp"));
        assert!(!is_temporary(".vimrc.swp.tmp"));
        assert!(!is_temporary(".0123456789abcdef01234567.section.x.0.tmp"));
    }
}
