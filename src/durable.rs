//! Files written whole or not at all, and still there after a power cut:
//! a new file beside the old, synced, renamed over it, then its folder
//! synced. One way of doing it for the section cache, event snapshots, the
//! event log's rotation and the quantizer's bundles.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Syncs a folder, so that the names made, removed and renamed in it are on
/// disk (`""`: the current folder). Some file systems cannot sync a folder:
/// callers treat it as best effort.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)?.sync_all()
}

/// Writes `path` through `tmp` (a name of the same folder, created here with
/// permissions `mode` and never followed through a link): `write` fills it,
/// then it is synced, renamed over `path` and the folder synced (best
/// effort). On any failure `tmp` is removed and `path` is as it was. A `tmp`
/// left by a process that died is replaced.
pub fn replace<T>(
    path: &Path,
    tmp: &Path,
    mode: u32,
    write: impl FnOnce(&mut File) -> io::Result<T>,
) -> io::Result<T> {
    let create = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(tmp)
    };
    let mut f = match create() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(tmp)?;
            create()?
        }
        other => other?,
    };
    let done = write(&mut f)
        .and_then(|r| f.sync_all().map(|()| r))
        .and_then(|r| std::fs::rename(tmp, path).map(|()| r));
    match done {
        Ok(r) => {
            if let Some(dir) = path.parent() {
                let _ = sync_dir(dir);
            }
            Ok(r)
        }
        Err(e) => {
            drop(f);
            let _ = std::fs::remove_file(tmp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let d = std::env::temp_dir().join(format!("clip-durable-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let (path, tmp) = (d.join("a"), d.join(".a.tmp"));
        std::fs::write(&path, b"old").unwrap();
        let e = replace(&path, &tmp, 0o600, |f| {
            io::Write::write_all(f, b"half")?;
            Err::<(), _>(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "disk full");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert!(!tmp.exists());
        // A temporary left by a dead process does not block the next write.
        std::fs::write(&tmp, b"stale").unwrap();
        let n = replace(&path, &tmp, 0o600, |f| {
            io::Write::write_all(f, b"new").map(|()| 3)
        })
        .unwrap();
        assert_eq!((n, std::fs::read(&path).unwrap()), (3, b"new".to_vec()));
        assert!(!tmp.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
