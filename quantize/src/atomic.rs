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

/// Writes several files so that either all of them are in place or none
/// changed: each is written as `NAME.tmp` by `write`, and only once every
/// one is written are they renamed.
pub fn write_files<E: From<IoAt>>(
    files: &[&Path],
    mut write: impl FnMut(usize, &Path) -> Result<(), E>,
) -> Result<(), E> {
    let tmps: Vec<PathBuf> = files.iter().map(|p| tmp_name(p)).collect();
    let cleanup = |tmps: &[PathBuf]| tmps.iter().for_each(|t| drop(std::fs::remove_file(t)));
    for (i, t) in tmps.iter().enumerate() {
        if let Err(e) = write(i, t) {
            cleanup(&tmps);
            return Err(e);
        }
    }
    for (t, p) in tmps.iter().zip(files) {
        if let Err(e) = std::fs::rename(t, p) {
            cleanup(&tmps);
            return Err(at(p)(e).into());
        }
    }
    Ok(())
}

fn tmp_name(p: &Path) -> PathBuf {
    let mut name = p.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    p.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("clip-atomic-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
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
}
