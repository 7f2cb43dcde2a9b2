//! `clip-quantize sections`: native sections made on the host for the
//! kernel paths of the boards a bundle goes to, added to the bundle and
//! listed in its manifest ([`clip_edge::engine::shipped`]). A board then
//! reads its schedule in place instead of lowering the graph at every
//! start, and a `clip-edge` built without tract runs the bundle at all.

use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use clip_edge::bundle::{Manifest, NativeSection, MANIFEST, MAX_NATIVE_SECTIONS};
use clip_edge::engine::shipped;
use clip_edge::kernels::Packing;
use clip_edge::signature::{self, SigningKey};

use crate::atomic::{write_files, IoAt};

#[derive(Debug, thiserror::Error)]
pub enum SectionsError {
    #[error(transparent)]
    Engine(#[from] clip_edge::engine::EngineError),
    #[error(transparent)]
    Io(#[from] IoAt),
    #[error("--kernels {0:?}: not a kernel path; expected `all` or some of: {names}", names = Packing::names())]
    Kernels(String),
    #[error("{0}: the bundle is signed, and adding sections changes its manifest: pass --sign KEY to sign the new one")]
    Signed(PathBuf),
    #[error("{path}: {why}; refusing to sign its manifest anew with --sign")]
    Signature { path: PathBuf, why: String },
    #[error("{path}: {why}")]
    Manifest { path: PathBuf, why: String },
}

/// The kernel paths a `--kernels` list names: comma-separated names, or
/// `all`.
pub fn parse_kernels(list: &str) -> Result<Vec<Packing>, SectionsError> {
    if list.trim() == "all" {
        return Ok(Packing::ALL.to_vec());
    }
    let mut out: Vec<Packing> = Vec::new();
    for name in list.split(',').map(str::trim) {
        let p = Packing::named(name).ok_or_else(|| SectionsError::Kernels(name.to_string()))?;
        if out.iter().all(|q| q.name != p.name) {
            out.push(p);
        }
    }
    Ok(out)
}

/// Adds to the bundle at `dir` a native section for each of `kernels`
/// (replacing one it had for that path), and lists them in its manifest,
/// signed with `sign` (required when the bundle was signed). Every file is
/// written beside its place and renamed there once all are written: a
/// failure leaves the bundle as it was. Returns the manifest's list.
pub fn add(
    dir: &Path,
    kernels: &[Packing],
    sign: Option<&SigningKey>,
    mut progress: impl FnMut(&NativeSection),
) -> Result<Vec<NativeSection>, SectionsError> {
    let sig_path = dir.join(signature::SIGNATURE);
    let mpath = dir.join(MANIFEST);
    let manifest_mode = std::fs::metadata(&mpath).map(|m| m.permissions());
    if sig_path.exists() {
        let Some(key) = sign else {
            return Err(SectionsError::Signed(sig_path));
        };
        // Sign anew only what this key signed: never a manifest changed
        // since, nor another key's bundle.
        let bad = |why: String| SectionsError::Signature {
            path: sig_path.clone(),
            why,
        };
        let read = |p: &Path| std::fs::read(p).map_err(|e| bad(format!("{}: {e}", p.display())));
        signature::verify(&key.verifying_key(), &read(&mpath)?, &read(&sig_path)?)
            .map_err(|why| bad(format!("not this key's signature of the manifest: {why}")))?;
    }
    let maker = shipped::Maker::open(dir)?;
    let mut manifest = maker.bundle().manifest.clone();
    let files: Vec<PathBuf> = kernels
        .iter()
        .map(|p| dir.join(shipped::file_name(p.name)))
        .collect();
    let mut targets: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    targets.push(&mpath);
    if sign.is_some() {
        targets.push(&sig_path);
    }
    let at = |p: &Path| {
        let p = p.to_path_buf();
        move |source| IoAt { path: p, source }
    };
    // The new manifest and signature get the manifest's mode.
    let keep_mode = |tmp: &Path| match &manifest_mode {
        Ok(mode) => std::fs::set_permissions(tmp, mode.clone()).map_err(at(tmp)),
        Err(_) => Ok(()),
    };
    let mut made = Vec::new();
    let mut text = String::new();
    write_files::<SectionsError>(&targets, |i, tmp| {
        if let Some(packing) = kernels.get(i) {
            // Writable by its owner alone, or the runtime will not map it.
            let f = std::fs::OpenOptions::new()
                .write(true)
                .read(true)
                .create(true)
                .truncate(true)
                .mode(0o644)
                .open(tmp)
                .map_err(at(tmp))?;
            let mut w = BufWriter::with_capacity(1 << 20, f);
            let bytes = maker.section(packing)?.write(&mut w).map_err(at(tmp))?;
            w.flush().map_err(at(tmp))?;
            let mut f = w.into_inner().map_err(|e| at(tmp)(e.into_error()))?;
            let mut digest = [0u8; 32];
            f.seek(SeekFrom::End(-(digest.len() as i64)))
                .and_then(|_| f.read_exact(&mut digest))
                .map_err(at(tmp))?;
            // Readable by the service's user whatever the umask.
            f.set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(at(tmp))?;
            let entry = NativeSection {
                kernels: packing.name.to_string(),
                file: shipped::file_name(packing.name),
                bytes,
                blake3: hex::encode(digest),
            };
            progress(&entry);
            made.push(entry);
        } else if i == kernels.len() {
            manifest.native.retain(|n| {
                made.iter()
                    .all(|m| m.kernels != n.kernels && m.file != n.file)
            });
            manifest.native.append(&mut made);
            if manifest.native.len() > MAX_NATIVE_SECTIONS {
                return Err(SectionsError::Manifest {
                    path: mpath.clone(),
                    why: format!(
                        "{} native sections; at most {MAX_NATIVE_SECTIONS}",
                        manifest.native.len()
                    ),
                });
            }
            text = toml::to_string(&manifest).map_err(|e| SectionsError::Manifest {
                path: mpath.clone(),
                why: e.to_string(),
            })?;
            // What the runtime will check (a section past the largest file
            // a bundle may hold, say): refused here, not on the board.
            Manifest::parse(text.as_bytes(), &mpath).map_err(|e| SectionsError::Manifest {
                path: mpath.clone(),
                why: e.to_string(),
            })?;
            std::fs::write(tmp, &text).map_err(at(tmp))?;
            keep_mode(tmp)?;
        } else if let Some(key) = sign {
            std::fs::write(tmp, signature::sign(key, text.as_bytes())).map_err(at(tmp))?;
            keep_mode(tmp)?;
        }
        Ok(())
    })?;
    Ok(manifest.native)
}
