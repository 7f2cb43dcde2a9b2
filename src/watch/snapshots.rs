//! Event snapshots: `DIR/<event id>.jpg`, written atomically, with the
//! event's box and label drawn on the frame; kept within a size and an age
//! (the oldest removed first), so that months of events do not fill a
//! board's SD card.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::draw::{draw_box, draw_label};
use super::regions::Rect;
use crate::decode::DecodedImage;

/// JPEG quality of a snapshot.
pub const QUALITY: u8 = 85;

/// How much of the snapshots folder to keep.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Retention {
    /// Total bytes of snapshots kept (`snapshot_max_mb`).
    pub max_bytes: Option<u64>,
    /// Age beyond which a snapshot is removed (`snapshot_retain_days`).
    pub max_age: Option<Duration>,
}

/// Writes `image` (with `mark`'s box and label) as `dir/<id>.jpg`: through
/// a temporary file renamed into place, removed again when the disk
/// refuses it (a full disk keeps no partial file).
pub fn write(
    dir: &Path,
    id: &str,
    image: &DecodedImage,
    mark: Option<(Rect, &str)>,
) -> std::io::Result<PathBuf> {
    use image::ImageEncoder;
    std::fs::create_dir_all(dir)?;
    let mut rgb = image.rgb();
    if let Some((r, label)) = mark {
        let (w, h) = (image.width, image.height);
        draw_box(rgb.to_mut(), w, h, r);
        draw_label(rgb.to_mut(), w, h, r, label);
    }
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, QUALITY)
        .write_image(
            &rgb,
            image.width,
            image.height,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let path = dir.join(format!("{id}.jpg"));
    let tmp = dir.join(format!(".{id}.jpg.tmp"));
    // On disk before the event line that names it (written after it, and
    // synced): a power cut leaves the snapshot whole or absent, never a
    // name without its picture.
    crate::durable::replace(&path, &tmp, 0o644, |f| {
        use std::io::Write;
        f.write_all(&bytes)
    })?;
    Ok(path)
}

/// Whether `name` is a snapshot `watch` writes (`<run hex>-<n>.jpg`):
/// nothing else in the folder is ever removed.
fn ours(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".jpg") else {
        return false;
    };
    let Some((run, n)) = stem.split_once('-') else {
        return false;
    };
    !run.is_empty()
        && !n.is_empty()
        && run.bytes().all(|b| b.is_ascii_hexdigit())
        && n.bytes().all(|b| b.is_ascii_digit())
}

/// How old a snapshot's temporary (`.<id>.jpg.tmp`) must be to be taken
/// for one a crash left: a write in progress takes far less.
const STALE_TEMPORARY: Duration = Duration::from_secs(60);

/// Whether `name` is the temporary of a snapshot `watch` writes.
fn our_temporary(name: &str) -> bool {
    name.strip_prefix('.')
        .and_then(|n| n.strip_suffix(".tmp"))
        .is_some_and(ours)
}

/// What [`prune`] did: snapshots removed, and the bytes of those left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub removed: u64,
    pub bytes: u64,
}

/// Removes the snapshots in `dir` older than the retention's age, then the
/// oldest until the rest fit its size, and the temporaries a crash left
/// (kept whatever the retention).
pub fn prune(dir: &Path, keep: &Retention) -> std::io::Result<Pruned> {
    let mut files: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
    // A file gone meanwhile (another camera pruning the same folder) is
    // not an error.
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let now = SystemTime::now();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        if name.to_str().is_some_and(our_temporary) {
            let stale = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).is_ok_and(|d| d > STALE_TEMPORARY));
            if stale {
                let _ = std::fs::remove_file(e.path());
            }
            continue;
        }
        if !name.to_str().is_some_and(ours) {
            continue;
        }
        let meta = match e.metadata() {
            Err(e) if gone(&e) => continue,
            meta => meta?,
        };
        if meta.is_file() {
            files.push((meta.modified()?, meta.len(), e.path()));
        }
    }
    if keep.max_bytes.is_none() && keep.max_age.is_none() {
        return Ok(Pruned {
            removed: 0,
            bytes: files.iter().map(|f| f.1).sum(),
        });
    }
    // Oldest first; ids of one run grow with time, so ties go by name.
    files.sort_by(|a, b| (a.0, &a.2).cmp(&(b.0, &b.2)));
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    let mut removed = 0;
    for (modified, len, path) in &files {
        let too_old = keep
            .max_age
            .is_some_and(|age| now.duration_since(*modified).is_ok_and(|d| d > age));
        let too_much = keep.max_bytes.is_some_and(|max| total > max);
        if !(too_old || too_much) {
            continue;
        }
        match std::fs::remove_file(path) {
            Err(e) if gone(&e) => {}
            r => {
                r?;
                removed += 1;
            }
        }
        total -= len;
    }
    Ok(Pruned {
        removed,
        bytes: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_snapshots_go_first_and_nothing_else_is_touched() {
        let dir = std::env::temp_dir().join(format!("clip-edge-snaps-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let base = SystemTime::now() - Duration::from_secs(10 * 86_400);
        for i in 0..10u64 {
            let p = dir.join(format!("1a2b-{i}.jpg"));
            std::fs::write(&p, vec![0u8; 1000]).unwrap();
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(base + Duration::from_secs(86_400 * i))
                .unwrap();
        }
        std::fs::write(dir.join("notes.jpg"), b"mine").unwrap();
        std::fs::write(dir.join("photo.txt"), b"mine").unwrap();
        // Temporaries: one a crash left 2 minutes ago goes (whatever the
        // retention), one being written now stays, another's stays.
        for (name, age) in [
            (".1a2b-99.jpg.tmp", 120),
            (".1a2b-98.jpg.tmp", 0),
            (".x.tmp", 120),
        ] {
            let p = dir.join(name);
            std::fs::write(&p, b"half").unwrap();
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(SystemTime::now() - Duration::from_secs(age))
                .unwrap();
        }
        assert_eq!(
            prune(&dir, &Retention::default()).unwrap(),
            Pruned {
                removed: 0,
                bytes: 10_000
            }
        );
        assert!(!dir.join(".1a2b-99.jpg.tmp").exists());
        // Older than 5.5 days: 1a2b-0..=4 (10 to 6 days old).
        let keep = Retention {
            max_bytes: None,
            max_age: Some(Duration::from_secs(5 * 86_400 + 43_200)),
        };
        assert_eq!(prune(&dir, &keep).unwrap().removed, 5);
        // 5 kB left; keep 2.5 kB: the two newest stay.
        let keep = Retention {
            max_bytes: Some(2500),
            max_age: None,
        };
        assert_eq!(
            prune(&dir, &keep).unwrap(),
            Pruned {
                removed: 3,
                bytes: 2000
            }
        );
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".1a2b-98.jpg.tmp",
                ".x.tmp",
                "1a2b-8.jpg",
                "1a2b-9.jpg",
                "notes.jpg",
                "photo.txt"
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
