//! Outputs that appear whole or not at all: a directory is filled as a
//! hidden sibling and renamed into place, a file is written beside its
//! destination and renamed; a failed run leaves nothing half-written.

use std::path::{Path, PathBuf};

/// An I/O error and the path it happened on.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct IoAt {
    pub path: PathBuf,
    pub source: std::io::Error,
}

fn at(path: &Path) -> impl FnOnce(std::io::Error) -> IoAt + '_ {
    move |source| IoAt {
        path: path.to_path_buf(),
        source,
    }
}

/// Runs `fill` on an empty hidden sibling of `out`, then moves it to `out`,
/// replacing an existing directory only once the new one is complete. On
/// an error the sibling is removed and `out` is untouched.
pub fn write_dir<T, E: From<IoAt>>(
    out: &Path,
    fill: impl FnOnce(&Path) -> Result<T, E>,
) -> Result<T, E> {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(at(parent))?;
    let name = out.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(at(&tmp))?;
    match fill(&tmp) {
        Ok(v) => {
            if let Err(e) = replace_dir(&tmp, out) {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e.into());
            }
            Ok(v)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

fn replace_dir(tmp: &Path, out: &Path) -> Result<(), IoAt> {
    if out.exists() {
        let old = out.with_file_name(format!(
            ".{}.old-{}",
            out.file_name().and_then(|n| n.to_str()).unwrap_or("out"),
            std::process::id()
        ));
        std::fs::rename(out, &old).map_err(at(out))?;
        if let Err(e) = std::fs::rename(tmp, out) {
            let _ = std::fs::rename(&old, out);
            return Err(at(out)(e));
        }
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(tmp, out).map_err(at(out))?;
    }
    Ok(())
}

/// Writes several files: each as a temporary sibling by `write`, synced to
/// disk, and only once every one is written and synced are they renamed into
/// place. A failed write leaves every destination untouched; only a failing
/// rename (a full or read-only directory, after the writes succeeded) can
/// leave some renamed and others not.
pub fn write_files<E: From<IoAt>>(
    files: &[&Path],
    mut write: impl FnMut(usize, &Path) -> Result<(), E>,
) -> Result<(), E> {
    finish_files(files, &mut write, |t, p| std::fs::rename(t, p))
}

/// [`write_files`] for files that must not replace anything (keys): each is
/// linked into place, which fails if the destination exists, even one
/// created a moment ago.
pub fn create_files<E: From<IoAt>>(
    files: &[&Path],
    mut write: impl FnMut(usize, &Path) -> Result<(), E>,
) -> Result<(), E> {
    let mut linked: Vec<&Path> = Vec::new();
    let r = finish_files(files, &mut write, |t, p| {
        std::fs::hard_link(t, p)?;
        linked.push(p);
        std::fs::remove_file(t)
    });
    if r.is_err() {
        linked.iter().for_each(|p| drop(std::fs::remove_file(p)));
    }
    r
}

fn finish_files<'a, E: From<IoAt>>(
    files: &[&'a Path],
    write: &mut impl FnMut(usize, &Path) -> Result<(), E>,
    mut place: impl FnMut(&Path, &'a Path) -> std::io::Result<()>,
) -> Result<(), E> {
    let tmps: Vec<PathBuf> = files.iter().map(|p| tmp_name(p)).collect();
    let cleanup = |tmps: &[PathBuf]| tmps.iter().for_each(|t| drop(std::fs::remove_file(t)));
    for (i, t) in tmps.iter().enumerate() {
        let synced = write(i, t).and_then(|()| sync(t).map_err(E::from));
        if let Err(e) = synced {
            cleanup(&tmps);
            return Err(e);
        }
    }
    for (t, p) in tmps.iter().zip(files) {
        if let Err(e) = place(t, p) {
            cleanup(&tmps);
            return Err(at(p)(e).into());
        }
    }
    if let Some(dir) = files.first().and_then(|p| p.parent()) {
        // The renames themselves, on disk (best effort: some file systems
        // cannot sync a directory).
        let _ = clip_edge::durable::sync_dir(dir);
    }
    Ok(())
}

fn sync(p: &Path) -> Result<(), IoAt> {
    std::fs::File::open(p)
        .and_then(|f| f.sync_all())
        .map_err(at(p))
}

fn tmp_name(p: &Path) -> PathBuf {
    let mut name = p.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    p.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh folder of this test, removed when dropped.
    fn scratch(name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("clip-atomic-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }

    struct Scratch(PathBuf);

    impl std::ops::Deref for Scratch {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl AsRef<Path> for Scratch {
        fn as_ref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_failed_fill_leaves_the_old_directory() {
        let d = scratch("dir");
        let out = d.join("out");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("old"), b"1").unwrap();
        let r: Result<(), IoAt> = write_dir(&out, |tmp| {
            std::fs::write(tmp.join("new"), b"2").unwrap();
            Err(at(tmp)(std::io::Error::other("boom")))
        });
        assert!(r.is_err());
        assert!(out.join("old").exists() && !out.join("new").exists());
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1, "no sibling left");
        write_dir::<_, IoAt>(&out, |tmp| {
            std::fs::write(tmp.join("new"), b"2").map_err(at(tmp))
        })
        .unwrap();
        assert!(!out.join("old").exists() && out.join("new").exists());
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1, "no sibling left");
    }

    #[test]
    fn files_are_all_renamed_or_none() {
        let d = scratch("files");
        let (a, b) = (d.join("a"), d.join("b"));
        let r: Result<(), IoAt> = write_files(&[&a, &b], |i, p| {
            if i == 1 {
                return Err(at(p)(std::io::Error::other("boom")));
            }
            std::fs::write(p, b"x").map_err(at(p))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
        write_files::<IoAt>(&[&a, &b], |_, p| std::fs::write(p, b"x").map_err(at(p))).unwrap();
        assert!(a.exists() && b.exists());
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 2);
    }

    #[test]
    fn created_files_never_replace_one() {
        let d = scratch("create");
        let (a, b) = (d.join("a"), d.join("b"));
        std::fs::write(&b, b"old").unwrap();
        let r: Result<(), IoAt> =
            create_files(&[&a, &b], |_, p| std::fs::write(p, b"new").map_err(at(p)));
        assert!(r.is_err());
        assert_eq!(std::fs::read(&b).unwrap(), b"old");
        assert!(!a.exists(), "the first link is undone");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
    }
}
