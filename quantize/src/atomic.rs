//! Outputs that appear whole or not at all: a directory is filled as a
//! hidden sibling and renamed into place, a file is written beside its
//! destination and renamed; a failed run leaves nothing half-written, and
//! what a run that died left (Ctrl-C, a power cut) goes at the next.

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

fn refused(path: &Path, why: String) -> IoAt {
    IoAt {
        path: path.to_path_buf(),
        source: std::io::Error::other(why),
    }
}

fn parent_of(out: &Path) -> &Path {
    out.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Checks, before any work, that `out` can be an output folder that a run
/// replaces whole ([`write_dir`]): missing, under a folder this process can
/// write in (nothing is made yet), or a folder (or a link to one) holding
/// only entries `ours` says such a run writes (an earlier output), and
/// temporaries of theirs (`NAME.tmp-PID`). A file, or a folder of anything
/// else, is refused naming what it holds: replacing it would delete it.
/// `what` names the run (`clip-quantize build`).
pub fn check_out(out: &Path, what: &str, ours: impl Fn(&str) -> bool) -> Result<(), IoAt> {
    let again = "refusing to replace it (give a new or empty folder)";
    let ours = |name: &str| {
        let base = match name.rsplit_once(".tmp-") {
            Some((b, pid)) if !pid.is_empty() && pid.bytes().all(|c| c.is_ascii_digit()) => b,
            _ => name,
        };
        ours(base)
    };
    match std::fs::metadata(out) {
        Ok(m) if m.is_dir() => {
            for e in std::fs::read_dir(out).map_err(at(out))? {
                let name = e.map_err(at(out))?.file_name();
                let name = name.to_string_lossy();
                if !ours(&name) {
                    return Err(refused(
                        out,
                        format!("holds {name:?}, which no {what} writes; {again}"),
                    ));
                }
            }
        }
        Ok(_) => return Err(refused(out, format!("not a folder; {again}"))),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) => {}
        Err(e) => return Err(at(out)(e)),
    }
    // The first folder above it that exists (the current one for a bare
    // name) must be one (a path under a file is named as such); a probe is
    // made and removed there (a read-only or full disk fails now, not
    // after the work; nothing is left).
    let existing = out
        .ancestors()
        .skip(1)
        .map(|a| {
            if a.as_os_str().is_empty() {
                Path::new(".")
            } else {
                a
            }
        })
        .find(|a| a.exists())
        .unwrap_or(Path::new("."));
    if !existing.is_dir() {
        return Err(refused(
            existing,
            format!("not a folder, so {} cannot be made in it", out.display()),
        ));
    }
    // One name per call: two checks in one process (threads) never meet.
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = existing.join(format!(".clip-quantize-probe-{}-{n}", std::process::id()));
    std::fs::create_dir(&probe).map_err(at(existing))?;
    let _ = std::fs::remove_dir(&probe);
    Ok(())
}

/// Removes what a run that died left in `dir`: entries named `prefix`
/// and a process id whose process is gone.
fn remove_stale(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        let p = e.path();
        let _ = if e.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
    }
}

/// Runs `fill` on an empty hidden sibling of `out`, then moves it to `out`,
/// replacing an existing directory only once the new one is complete. On
/// an error the sibling is removed and `out` is untouched. Siblings that a
/// run that died left are removed first.
pub fn write_dir<T, E: From<IoAt>>(
    out: &Path,
    fill: impl FnOnce(&Path) -> Result<T, E>,
) -> Result<T, E> {
    let parent = parent_of(out);
    std::fs::create_dir_all(parent).map_err(at(parent))?;
    let name = out.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    remove_stale(parent, &format!(".{name}.tmp-"));
    remove_stale(parent, &format!(".{name}.old-"));
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
    for p in files {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        remove_stale(parent_of(p), &format!("{name}.tmp-"));
    }
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

    /// An output folder is replaced only when it is missing, empty or an
    /// earlier output: a file, or a folder holding anything else, is
    /// refused naming it (replacing it would delete it); a path under a
    /// file fails before any work.
    #[test]
    fn only_earlier_outputs_are_replaced() {
        let d = scratch("check");
        let ours = |n: &str| n == "manifest.toml";
        assert!(check_out(&d.join("new/deeper"), "build", ours).is_ok());
        assert!(!d.join("new").exists(), "nothing made before the work");
        let earlier = d.join("earlier");
        std::fs::create_dir_all(&earlier).unwrap();
        std::fs::write(earlier.join("manifest.toml"), b"x").unwrap();
        assert!(check_out(&earlier, "build", ours).is_ok());
        // A killed run's temporary of one of its files, and a link to an
        // earlier output.
        std::fs::write(earlier.join("manifest.toml.tmp-4194305"), b"half").unwrap();
        assert!(check_out(&earlier, "build", ours).is_ok());
        std::os::unix::fs::symlink(&earlier, d.join("current")).unwrap();
        assert!(check_out(&d.join("current"), "build", ours).is_ok());
        std::fs::write(earlier.join("thesis.txt"), b"mine").unwrap();
        let e = check_out(&earlier, "build", ours).unwrap_err().to_string();
        assert!(
            e.contains("holds \"thesis.txt\", which no build writes"),
            "{e}"
        );
        let file = d.join("afile");
        std::fs::write(&file, b"important").unwrap();
        let e = check_out(&file, "build", ours).unwrap_err().to_string();
        assert!(e.contains("not a folder"), "{e}");
        let e = check_out(&file.join("b32"), "build", ours).unwrap_err();
        assert_eq!(e.path, file);
        assert_eq!(std::fs::read(&file).unwrap(), b"important");
    }

    /// Checks from threads of one process, in one folder, at once: each
    /// makes its own probe (one name per process made all but one fail).
    #[test]
    fn checks_at_once_in_one_folder_all_pass() {
        let d = scratch("probes");
        std::thread::scope(|s| {
            for t in 0..8 {
                let d = &d;
                s.spawn(move || {
                    for i in 0..50 {
                        let out = d.join(format!("out-{t}-{i}"));
                        check_out(&out, "build", |_| false).unwrap();
                    }
                });
            }
        });
        assert_eq!(std::fs::read_dir(&*d).unwrap().count(), 0, "no probe left");
    }

    /// What a run that died left (a folder being filled, a file being
    /// written) goes at the next run; a live process's is kept.
    #[test]
    fn leftovers_of_dead_runs_are_removed() {
        let d = scratch("stale");
        // No process has this id (above the kernel's pid_max).
        let dead = 4_194_305;
        std::fs::create_dir_all(d.join(format!(".out.tmp-{dead}/sub"))).unwrap();
        std::fs::write(d.join(format!("a.tmp-{dead}")), b"half").unwrap();
        std::fs::write(d.join("a.tmp-1"), b"init's").unwrap();
        write_dir::<_, IoAt>(&d.join("out"), |tmp| {
            std::fs::write(tmp.join("x"), b"1").map_err(at(tmp))
        })
        .unwrap();
        write_files::<IoAt>(&[&d.join("a")], |_, p| {
            std::fs::write(p, b"x").map_err(at(p))
        })
        .unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&*d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["a", "a.tmp-1", "out"]);
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
