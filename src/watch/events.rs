//! The event log: JSON lines, appended and fsync'd before the sinks (GPIO,
//! MQTT) are told, so it stays the source of truth whatever happens to
//! them; a line the disk refuses waits in memory, is written when the disk
//! takes it again, and the sinks act meanwhile.
//!
//! On open, a partial last line (a crash mid-write) is cut off and events
//! left open by a crash are closed with `"reason": "interrupted"`, so the
//! file is always valid JSON lines. Ids are `<run>-<n>`: `run` is the
//! start time in milliseconds (hex), above every run id already in the log,
//! so ids stay unique across restarts.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A log larger than this is refused at open (rotate it): it is read whole.
pub const MAX_LOG_BYTES: u64 = 256 << 20;

#[derive(Debug, Error)]
pub enum EventLogError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: line {line} is not an event ({why}); move the log aside or repair it")]
    Corrupt {
        path: PathBuf,
        line: usize,
        why: String,
    },
    #[error("{path}: {bytes} bytes, more than the {MAX_LOG_BYTES} read at start-up; rotate it")]
    TooLarge { path: PathBuf, bytes: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Start,
    End,
    /// The source failed (a camera unplugged); `reason` says how. Open
    /// events were ended with reason "source_lost" just before.
    SourceLost,
    /// The source is open again.
    SourceBack,
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub event: EventKind,
    pub id: String,
    pub label: String,
    /// 0-based position of the frame in the source.
    pub frame: u64,
    /// RFC 3339, UTC.
    pub time: String,
    pub score: f32,
    pub source: String,
    /// The camera, when the service has several (`[[camera]]` tables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub camera: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Where the object was, `[x, y, w, h]` in source pixels (at the start
    /// frame on a start, its last box on an end), when `watch` looks at
    /// regions of the frame.
    #[serde(rename = "box", default, skip_serializing_if = "Option::is_none")]
    pub bbox: Option<[u32; 4]>,
    /// The track's number in its run (two objects of one label are two tracks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Why the start's snapshot could not be written (a full disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_error: Option<String>,
}

/// The current time as RFC 3339 (UTC, milliseconds).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// Ids for this run: `<run>-<n>`.
#[derive(Debug)]
pub struct Ids {
    run: u64,
    next: u64,
}

impl Ids {
    /// A run id above `after` (the largest run id seen in the log).
    pub fn new(after: Option<u64>) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let run = match after {
            Some(a) => now.max(a + 1),
            None => now,
        };
        Ids { run, next: 0 }
    }

    pub fn run(&self) -> u64 {
        self.run
    }

    pub fn next_id(&mut self) -> String {
        self.next += 1;
        format!("{:x}-{}", self.run, self.next)
    }
}

fn run_of(id: &str) -> Option<u64> {
    u64::from_str_radix(id.split_once('-')?.0, 16).ok()
}

/// Where the log's lines go: the file (each line written and synced), or
/// in tests a writer that fails on purpose.
pub trait LogWriter: Send + std::fmt::Debug {
    /// Writes `line` whole and waits until it is on disk.
    fn append_synced(&mut self, line: &[u8]) -> std::io::Result<()>;
}

impl LogWriter for File {
    fn append_synced(&mut self, line: &[u8]) -> std::io::Result<()> {
        let before = self.metadata()?.len();
        if let Err(e) = self.write_all(line).and_then(|_| self.sync_data()) {
            // No partial line stays behind (a full disk takes part of it).
            let _ = self.set_len(before);
            return Err(e);
        }
        Ok(())
    }
}

/// Lines that could not be written (a full disk, a read-only remount) are
/// kept for the next try, up to this many bytes; beyond it the oldest are
/// dropped (and counted).
pub const MAX_PENDING_BYTES: usize = 1 << 20;

/// An open event log.
#[derive(Debug)]
pub struct EventLog {
    path: PathBuf,
    file: Box<dyn LogWriter>,
    /// Lines waiting for the disk, oldest first.
    pending: std::collections::VecDeque<Vec<u8>>,
    pending_bytes: usize,
    /// Lines dropped because the queue was full.
    pub lost: u64,
    rotation: Option<Rotation>,
    /// Bytes in the current file.
    bytes: u64,
    /// When a rotation last failed: the next is tried a minute later, not
    /// at every line.
    rotate_failed_at: Option<std::time::Instant>,
    /// The last line on disk lacks its newline (a crash, then a full
    /// disk): the next line written starts with one.
    newline_owed: bool,
}

/// How long after a failed rotation the next is tried.
const ROTATE_RETRY: std::time::Duration = std::time::Duration::from_secs(60);

/// When the log is rotated: past `max_bytes`, `events.jsonl` becomes
/// `events.jsonl.1` (`.1` becomes `.2`, …, up to `keep` old files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub max_bytes: u64,
    pub keep: u32,
}

/// `path` with `.n` appended (`events.jsonl.1`).
fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Reads the lines of `text` into `rec` and `open`; returns the end of the
/// last complete (or valid unterminated) line. A line that is not an event
/// is an error naming `path` and the line, unless it is a partial last line.
fn scan(
    text: &[u8],
    path: &Path,
    rec: &mut Recovery,
    open: &mut Vec<EventRecord>,
) -> Result<usize, EventLogError> {
    let mut good_end = 0usize;
    let mut pos = 0usize;
    let mut line_no = 0usize;
    while pos < text.len() {
        line_no += 1;
        let (line, next, complete) = match text[pos..].iter().position(|&b| b == b'\n') {
            Some(n) => (&text[pos..pos + n], pos + n + 1, true),
            None => (&text[pos..], text.len(), false),
        };
        match serde_json::from_slice::<EventRecord>(line) {
            Ok(r) => {
                rec.last_run = rec.last_run.max(run_of(&r.id));
                match r.event {
                    EventKind::Start => open.push(r),
                    EventKind::End => open.retain(|o| o.id != r.id),
                    EventKind::SourceLost | EventKind::SourceBack => {}
                }
                good_end = if complete { next } else { text.len() };
            }
            // Only the last line can be a partial write.
            Err(_) if !complete => break,
            Err(e) => {
                return Err(EventLogError::Corrupt {
                    path: path.to_path_buf(),
                    line: line_no,
                    why: e.to_string(),
                })
            }
        }
        pos = next;
    }
    Ok(good_end)
}

/// The log could not take a line: it waits in memory.
#[derive(Debug, Error)]
#[error("{path}: {source} ({pending} event line(s) waiting in memory)")]
pub struct Deferred {
    pub path: PathBuf,
    pub source: std::io::Error,
    pub pending: usize,
}

/// What opening a log found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Bytes of a partial last line that were cut off.
    pub cut_bytes: u64,
    /// The events left open, now closed with reason "interrupted".
    pub closed: Vec<EventRecord>,
    /// The largest run id in the log.
    pub last_run: Option<u64>,
}

impl EventLog {
    /// Opens (creating) the log at `path`, repairs it, and closes the events
    /// a crash left open.
    pub fn open(path: &Path) -> Result<(EventLog, Recovery), EventLogError> {
        Self::open_rotating(path, None)
    }

    /// As [`EventLog::open`], rotating the file by `rotation`; the newest
    /// rotated file (`.1`) is read too, so that ids stay above its runs
    /// and an event it left open is closed.
    pub fn open_rotating(
        path: &Path,
        rotation: Option<Rotation>,
    ) -> Result<(EventLog, Recovery), EventLogError> {
        // Its folder made when missing (as the snapshots' is).
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| EventLogError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let mut rec = Recovery::default();
        let mut open: Vec<EventRecord> = Vec::new();
        let older = numbered(path, 1);
        if rotation.is_some() && older.is_file() {
            let text = crate::bundle::read_regular(&older, MAX_LOG_BYTES, true).map_err(|e| {
                EventLogError::Io {
                    path: older.clone(),
                    source: std::io::Error::other(e.to_string()),
                }
            })?;
            scan(&text, &older, &mut rec, &mut open)?;
        }
        let io = |source| EventLogError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len > MAX_LOG_BYTES {
            return Err(EventLogError::TooLarge {
                path: path.to_path_buf(),
                bytes: len,
            });
        }
        let mut text = Vec::with_capacity(len as usize);
        file.read_to_end(&mut text).map_err(io)?;

        let good_end = scan(&text, path, &mut rec, &mut open)?;
        if good_end < text.len() {
            rec.cut_bytes = (text.len() - good_end) as u64;
            file.set_len(good_end as u64).map_err(io)?;
            log::warn!(
                "{}: cut a partial last line ({} bytes) left by a crash",
                path.display(),
                rec.cut_bytes
            );
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        // A complete last object without its newline: finish the line (on
        // a full disk, the newline waits in memory as the lines below do).
        let unfinished =
            good_end > 0 && text[good_end - 1] != b'\n' && file.write_all(b"\n").is_err();
        file.sync_data().map_err(io)?;
        let bytes = file.metadata().map_err(io)?.len();
        let mut log = EventLog::with_writer(path, Box::new(file));
        log.rotation = rotation;
        log.bytes = bytes;
        log.newline_owed = unfinished;
        for o in open {
            let end = EventRecord {
                event: EventKind::End,
                time: now_rfc3339(),
                snapshot: None,
                snapshot_error: None,
                reason: Some("interrupted".into()),
                ..o
            };
            // A disk that refuses it (full) does not stop the start: the
            // line waits in memory, written when the disk takes it.
            if let Err(d) = log.append(&end) {
                log::warn!("{d}: the interrupted event's end is written when the disk takes it");
            }
            rec.closed.push(end);
        }
        Ok((log, rec))
    }

    /// A log writing to `file` (tests give a failing writer).
    pub fn with_writer(path: &Path, file: Box<dyn LogWriter>) -> EventLog {
        EventLog {
            path: path.to_path_buf(),
            file,
            pending: Default::default(),
            pending_bytes: 0,
            lost: 0,
            rotation: None,
            bytes: 0,
            rotate_failed_at: None,
            newline_owed: false,
        }
    }

    /// Appends one line and waits until it is on disk, after the lines
    /// still waiting. When the disk refuses, the line waits in memory (the
    /// oldest dropped beyond [`MAX_PENDING_BYTES`]) and the error says so:
    /// the caller goes on, and the next append (or [`EventLog::flush`])
    /// tries again.
    pub fn append(&mut self, r: &EventRecord) -> Result<(), Deferred> {
        let mut line = serde_json::to_vec(r).expect("an event serialises");
        line.push(b'\n');
        self.pending_bytes += line.len();
        self.pending.push_back(line);
        while self.pending_bytes > MAX_PENDING_BYTES && self.pending.len() > 1 {
            let old = self.pending.pop_front().expect("a pending line");
            self.pending_bytes -= old.len();
            self.lost += 1;
        }
        self.flush()
    }

    /// Writes the lines waiting, oldest first, until one is refused.
    pub fn flush(&mut self) -> Result<(), Deferred> {
        // The newline a crash's last line lacks goes with the first line
        // written (whichever that is after the oldest were dropped).
        if self.newline_owed {
            if let Some(first) = self.pending.front_mut() {
                first.insert(0, b'\n');
                self.pending_bytes += 1;
                self.newline_owed = false;
            }
        }
        while let Some(line) = self.pending.front() {
            if let Err(source) = self.file.append_synced(line) {
                return Err(Deferred {
                    path: self.path.clone(),
                    source,
                    pending: self.pending.len(),
                });
            }
            let done = self.pending.pop_front().expect("a pending line");
            self.pending_bytes -= done.len();
            self.bytes += done.len() as u64;
            if let Some(r) = self.rotation {
                let retry = self
                    .rotate_failed_at
                    .is_none_or(|t| t.elapsed() >= ROTATE_RETRY);
                if self.bytes >= r.max_bytes && retry {
                    match self.rotate(r.keep) {
                        Ok(()) => self.rotate_failed_at = None,
                        Err(e) => {
                            log::warn!(
                                "{}: cannot rotate: {e}; it goes on growing (tried again in a minute)",
                                self.path.display()
                            );
                            self.rotate_failed_at = Some(std::time::Instant::now());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// `events.jsonl` → `.1` → `.2` … (the oldest beyond `keep` removed),
    /// and a new, empty `events.jsonl`. The new file is made first, under a
    /// name of its own: a failure at any step leaves the live log at its
    /// name, written through, so the next rotation starts from where this
    /// one stopped (never from a log already moved away).
    fn rotate(&mut self, keep: u32) -> std::io::Result<()> {
        let keep = keep.max(1);
        let fresh = {
            let mut name = self.path.clone().into_os_string();
            name.push(".new");
            PathBuf::from(name)
        };
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .truncate(false)
            .open(&fresh)?;
        file.set_len(0)?;
        let moved = (|| {
            match std::fs::remove_file(numbered(&self.path, keep)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            // Beyond `keep` (an earlier run kept more): removed too.
            let mut n = keep + 1;
            while std::fs::remove_file(numbered(&self.path, n)).is_ok() {
                n += 1;
            }
            for n in (1..keep).rev() {
                match std::fs::rename(numbered(&self.path, n), numbered(&self.path, n + 1)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::rename(&self.path, numbered(&self.path, 1))?;
            if let Err(e) = std::fs::rename(&fresh, &self.path) {
                // The live log back at its name; if even that fails, it is
                // written on as `.1` and never rotated again this run (a
                // later rotation would remove it).
                if let Err(back) = std::fs::rename(numbered(&self.path, 1), &self.path) {
                    log::error!(
                        "{}: rotation failed ({e}) and the log could not be put back ({back}): it goes on as {}, not rotated again",
                        self.path.display(),
                        numbered(&self.path, 1).display()
                    );
                    self.rotation = None;
                }
                return Err(e);
            }
            Ok(())
        })();
        if let Err(e) = moved {
            let _ = std::fs::remove_file(&fresh);
            return Err(e);
        }
        if let Some(dir) = self.path.parent() {
            let _ = crate::durable::sync_dir(dir);
        }
        self.file = Box::new(file);
        self.bytes = 0;
        Ok(())
    }

    /// Lines waiting for the disk.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: EventKind, id: &str) -> EventRecord {
        EventRecord {
            event: kind,
            id: id.into(),
            label: "red star".into(),
            frame: 3,
            time: now_rfc3339(),
            score: 0.9,
            source: "dir:x".into(),
            camera: None,
            snapshot: None,
            reason: None,
            bbox: None,
            track: None,
            zone: None,
            snapshot_error: None,
        }
    }

    fn lines(p: &Path) -> Vec<EventRecord> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_partial_line_is_cut_and_open_events_closed() {
        let dir = tempdir();
        let p = dir.join("events.jsonl");
        {
            let (mut log, r) = EventLog::open(&p).unwrap();
            assert!(r.closed.is_empty());
            log.append(&rec(EventKind::Start, "5-1")).unwrap();
            log.append(&rec(EventKind::End, "5-1")).unwrap();
            log.append(&rec(EventKind::Start, "5-2")).unwrap();
        }
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(br#"{"event":"end","id":"5-2","la"#).unwrap();
        drop(f);
        let (_, r) = EventLog::open(&p).unwrap();
        assert_eq!(r.cut_bytes, 29);
        assert_eq!(r.last_run, Some(5));
        assert_eq!(r.closed.len(), 1);
        let all = lines(&p);
        assert_eq!(all.len(), 4);
        assert_eq!(all[3].id, "5-2");
        assert_eq!(all[3].event, EventKind::End);
        assert_eq!(all[3].reason.as_deref(), Some("interrupted"));
        // Nothing left open: a third open changes nothing.
        let (_, r) = EventLog::open(&p).unwrap();
        assert!(r.closed.is_empty() && r.cut_bytes == 0);
        assert_eq!(lines(&p).len(), 4);
        assert!(Ids::new(r.last_run).run > 5);
    }

    /// Refuses `fail` appends (as a full disk does), then writes.
    #[derive(Debug)]
    struct Flaky {
        fail: u32,
        lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl LogWriter for Flaky {
        fn append_synced(&mut self, line: &[u8]) -> std::io::Result<()> {
            if self.fail > 0 {
                self.fail -= 1;
                return Err(std::io::Error::other("No space left on device"));
            }
            self.lines
                .lock()
                .unwrap()
                .push(String::from_utf8(line.to_vec()).unwrap());
            Ok(())
        }
    }

    #[test]
    fn lines_the_disk_refuses_wait_and_are_written_in_order_when_it_takes_them() {
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let flaky = Flaky {
            fail: 3,
            lines: lines.clone(),
        };
        let mut log = EventLog::with_writer(Path::new("/full/events.jsonl"), Box::new(flaky));
        for (i, id) in ["5-1", "5-2", "5-3"].iter().enumerate() {
            let e = log.append(&rec(EventKind::Start, id)).unwrap_err();
            assert_eq!(e.pending, i + 1);
            let msg = e.to_string();
            assert!(
                msg.contains("/full/events.jsonl") && msg.contains("No space left"),
                "{msg}"
            );
        }
        log.append(&rec(EventKind::End, "5-1")).unwrap();
        assert_eq!(log.pending(), 0);
        let ids: Vec<String> = lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str::<EventRecord>(l).unwrap().id)
            .collect();
        assert_eq!(ids, ["5-1", "5-2", "5-3", "5-1"]);
        assert_eq!(log.lost, 0);
    }

    #[test]
    fn the_waiting_queue_is_bounded() {
        let flaky = Flaky {
            fail: u32::MAX,
            lines: Default::default(),
        };
        let mut log = EventLog::with_writer(Path::new("/ro/events.jsonl"), Box::new(flaky));
        let line_len = serde_json::to_vec(&rec(EventKind::Start, "5-1"))
            .unwrap()
            .len()
            + 1;
        let n = MAX_PENDING_BYTES / line_len + 10;
        for _ in 0..n {
            let _ = log.append(&rec(EventKind::Start, "5-1"));
        }
        assert!(log.pending_bytes <= MAX_PENDING_BYTES);
        assert_eq!(log.lost as usize, n - log.pending());
        assert!(log.lost >= 10);
    }

    #[test]
    fn the_log_rotates_keeps_its_old_files_and_recovers_across_them() {
        let dir = tempdir();
        let p = dir.join("events.jsonl");
        let (line, rotation) = three_lines_a_file(2);
        let (mut log, _) = EventLog::open_rotating(&p, rotation).unwrap();
        for n in 1..=10 {
            log.append(&rec(EventKind::Start, &format!("5-{n}")))
                .unwrap();
            log.append(&rec(EventKind::End, &format!("5-{n}"))).unwrap();
        }
        // An event left open across a rotation, then a crash.
        log.append(&rec(EventKind::Start, "7-1")).unwrap();
        log.append(&rec(EventKind::Start, "7-2")).unwrap();
        log.append(&rec(EventKind::Start, "7-3")).unwrap();
        drop(log);
        assert!(numbered(&p, 1).is_file() && numbered(&p, 2).is_file());
        assert!(!numbered(&p, 3).exists());
        // A file is rotated once it reaches the size: at most one line over.
        for f in [p.clone(), numbered(&p, 1), numbered(&p, 2)] {
            assert!(std::fs::metadata(&f).unwrap().len() < 4 * line + 8, "{f:?}");
        }
        let (_, r) = EventLog::open_rotating(&p, rotation).unwrap();
        assert_eq!(r.last_run, Some(7));
        let mut closed: Vec<&str> = r.closed.iter().map(|c| c.id.as_str()).collect();
        closed.sort();
        assert_eq!(closed, ["7-1", "7-2", "7-3"]);
    }

    /// An earlier run kept five rotated files, this one keeps two: its
    /// first rotation leaves two.
    #[test]
    fn a_lower_keep_removes_the_older_files_at_the_next_rotation() {
        let dir = tempdir();
        let p = dir.join("events.jsonl");
        for n in 1..=5 {
            std::fs::write(numbered(&p, n), b"").unwrap();
        }
        let (_, rotation) = three_lines_a_file(2);
        let (mut log, _) = EventLog::open_rotating(&p, rotation).unwrap();
        for n in 1..=3 {
            log.append(&rec(EventKind::Start, &format!("5-{n}")))
                .unwrap();
            log.append(&rec(EventKind::End, &format!("5-{n}"))).unwrap();
        }
        assert!(numbered(&p, 1).is_file() && numbered(&p, 2).is_file());
        for n in 3..=5 {
            assert!(!numbered(&p, n).exists(), ".{n} kept");
        }
    }

    /// A rotation that fails (here: its new file cannot be made) loses
    /// nothing: every line stays in the live log at its name, the rotated
    /// file is untouched, and the failure is not retried at every line.
    #[test]
    fn a_failed_rotation_keeps_every_line_in_the_live_log() {
        let dir = tempdir();
        let p = dir.join("events.jsonl");
        let (_, rotation) = three_lines_a_file(1);
        let (mut log, _) = EventLog::open_rotating(&p, rotation).unwrap();
        for n in 1..=4 {
            log.append(&rec(EventKind::Start, &format!("5-{n}")))
                .unwrap();
        }
        let rotated = std::fs::read(numbered(&p, 1)).unwrap();
        std::fs::create_dir(dir.join("events.jsonl.new")).unwrap();
        for n in 5..=20 {
            log.append(&rec(EventKind::Start, &format!("5-{n}")))
                .unwrap();
        }
        assert!(log.rotate_failed_at.is_some());
        // Not tried again at the next lines, though it would now succeed.
        std::fs::remove_dir(dir.join("events.jsonl.new")).unwrap();
        for n in 21..=25 {
            log.append(&rec(EventKind::Start, &format!("5-{n}")))
                .unwrap();
        }
        assert_eq!(std::fs::read(numbered(&p, 1)).unwrap(), rotated);
        let text = std::fs::read_to_string(&p).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<EventRecord>(l).unwrap().id)
            .collect();
        let want: Vec<String> = (4..=25).map(|n| format!("5-{n}")).collect();
        assert_eq!(ids, want);
    }

    #[test]
    fn a_corrupt_middle_line_is_refused_by_number() {
        let dir = tempdir();
        let p = dir.join("events.jsonl");
        std::fs::write(&p, "not json\n{}\n").unwrap();
        let e = EventLog::open(&p).unwrap_err().to_string();
        assert!(e.contains("line 1 is not an event"), "{e}");
    }

    /// The length of one test line, and a rotation past three of them.
    fn three_lines_a_file(keep: u32) -> (u64, Option<Rotation>) {
        let line = serde_json::to_vec(&rec(EventKind::Start, "5-1"))
            .unwrap()
            .len() as u64
            + 1;
        let rotation = Rotation {
            max_bytes: 3 * line,
            keep,
        };
        (line, Some(rotation))
    }

    /// A fresh folder of this test's thread, removed when dropped.
    fn tempdir() -> TempDir {
        let d = std::env::temp_dir().join(format!(
            "clip-edge-events-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    struct TempDir(PathBuf);

    impl std::ops::Deref for TempDir {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
