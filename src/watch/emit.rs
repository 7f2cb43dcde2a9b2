//! How an event leaves the loop: its log line (kept in memory while the
//! disk refuses it), its snapshot, and the sinks (GPIO, MQTT, the status
//! page).

use super::*;

/// Event lines waiting for the disk are tried again this often between
/// events.
pub const LOG_RETRY: Duration = Duration::from_secs(1);

/// A snapshots folder past its size is pruned down to this many tenths
/// of it.
const PRUNE_TO_TENTHS: u64 = 9;

/// Snapshots past their age are looked for this often between events.
pub const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// What a trouble of the loop is about: each is cleared by its own next
/// success.
#[derive(Clone, Copy)]
pub(super) enum Trouble {
    /// The event log refuses lines.
    Log,
    /// A snapshot could not be written, or the folder pruned.
    Snapshots,
}

impl Watcher<'_> {
    /// A whole-frame event of watched label `i`.
    pub(super) fn emit(
        &mut self,
        i: usize,
        t: Transition,
        reason: Option<&str>,
    ) -> Result<(), WatchError> {
        let id = match t {
            Transition::Start { .. } => {
                let id = self.ids.next_id();
                self.open_ids[i] = Some(id.clone());
                id
            }
            Transition::End { .. } => self.open_ids[i]
                .take()
                .unwrap_or_else(|| self.ids.next_id()),
        };
        self.write_event(i, t, id, reason, None)
    }

    /// An event of the track in `slot`: its box, number and zone.
    pub(super) fn emit_track(
        &mut self,
        slot: usize,
        t: Transition,
        reason: Option<&str>,
    ) -> Result<(), WatchError> {
        let new_id = matches!(t, Transition::Start { .. }).then(|| self.ids.next_id());
        let track = self.regions.tracks.get_mut(slot).expect("a live track");
        let (id, rect) = match (t, new_id) {
            (Transition::Start { frame, .. }, Some(id)) => {
                track.open_id = Some(id.clone());
                (id, track.box_at(frame))
            }
            _ => (track.open_id.take().unwrap_or_default(), track.last_box),
        };
        let place = Place {
            rect,
            track: track.number,
            zone: track.zone.map(|z| self.opts.regions.zones[z].name.clone()),
        };
        let i = track.watched;
        let id = if id.is_empty() {
            self.ids.next_id()
        } else {
            id
        };
        self.write_event(i, t, id, reason, Some(place))
    }

    pub(super) fn write_event(
        &mut self,
        i: usize,
        t: Transition,
        id: String,
        reason: Option<&str>,
        place: Option<Place>,
    ) -> Result<(), WatchError> {
        let (kind, frame, score) = match t {
            Transition::Start { frame, score } => (EventKind::Start, frame, score),
            Transition::End { frame, score } => (EventKind::End, frame, score),
        };
        let (mut snapshot, mut snapshot_error) = (None, None);
        if let (EventKind::Start, Some(dir)) = (kind, self.opts.snapshots.clone()) {
            let label = self.opts.watched[i].label.clone();
            let mark = place.as_ref().map(|p| (p.rect, label.as_str()));
            match self.snapshot(&dir, &id, frame, mark) {
                Ok(s) => snapshot = s,
                Err(e) => {
                    self.stats.snapshot_write_errors += 1;
                    let path = dir.join(format!("{id}.jpg"));
                    let why = format!("{}: {e}", path.display());
                    self.trouble(Trouble::Snapshots, why);
                    snapshot_error = Some(e.to_string());
                }
            }
        }
        let (bbox, track, zone) = match place {
            Some(p) => (Some(p.rect.to_array()), Some(p.track), p.zone),
            None => (None, None, None),
        };
        let record = EventRecord {
            event: kind,
            id,
            label: self.opts.watched[i].label.clone(),
            frame,
            time: events::now_rfc3339(),
            score,
            source: self.opts.source_name.clone(),
            camera: self.opts.camera.clone(),
            snapshot,
            reason: reason.map(str::to_string),
            bbox,
            track,
            zone,
            snapshot_error,
        };
        self.log_line(&record);
        let line = serde_json::to_vec(&record).expect("an event serialises");
        log::info!("{}", String::from_utf8_lossy(&line));
        let label_on = self.active(i);
        for s in &mut self.sinks {
            s.event(&record, &line, label_on);
        }
        if kind == EventKind::Start {
            self.stats.events += 1;
        }
        Ok(())
    }

    /// Writes the start frame (or, when it has left the window, the oldest
    /// frame kept) as `DIR/<id>.jpg` with the event's box and label, then
    /// keeps the folder within its retention.
    pub(super) fn snapshot(
        &mut self,
        dir: &Path,
        id: &str,
        frame: u64,
        mark: Option<(Rect, &str)>,
    ) -> std::io::Result<Option<String>> {
        let Some(f) = self
            .recent
            .iter()
            .filter(|f| !f.is_empty() && f.index <= frame)
            .max_by_key(|f| f.index)
            .or_else(|| {
                self.recent
                    .iter()
                    .filter(|f| !f.is_empty())
                    .min_by_key(|f| f.index)
            })
        else {
            return Ok(None);
        };
        let mut freed = 0;
        let written = match snapshots::write(dir, id, &f.image, mark) {
            Ok(p) => Ok(p),
            // A disk full of snapshots past their retention: pruned, then
            // tried once more.
            Err(e) => match snapshots::prune(dir, &self.opts.snapshot_retention) {
                Ok(p) if p.removed > 0 => {
                    freed = p.removed;
                    self.snapshot_bytes = Some(p.bytes);
                    snapshots::write(dir, id, &f.image, mark)
                }
                _ => Err(e),
            },
        };
        self.stats.snapshots_removed += freed;
        let path = written?;
        // Written: the snapshots' trouble is over, unless the prune has one.
        self.trouble_snapshots = None;
        // The folder is listed again only when the bytes it is known to
        // hold pass its cap (a large folder is slow to list), and by the
        // upkeep's timer.
        let len = std::fs::metadata(&path).map_or(0, |m| m.len());
        self.snapshot_bytes = self.snapshot_bytes.map(|b| b + len);
        if let Some(max) = self.opts.snapshot_retention.max_bytes {
            if self.snapshot_bytes.is_none_or(|b| b > max) {
                // Down to a part of the size (the next listing waits
                // until that much more is written), not to the size itself
                // (a full folder would be listed at every snapshot).
                let keep = snapshots::Retention {
                    max_bytes: Some(max / 10 * PRUNE_TO_TENTHS),
                    ..self.opts.snapshot_retention
                };
                self.prune_snapshots_to(dir, keep);
            }
        }
        Ok(Some(path.display().to_string()))
    }

    /// Keeps the snapshots folder within its retention; how many were
    /// removed (`None`: the folder could not be read, said as a trouble).
    fn prune_snapshots(&mut self, dir: &Path) -> Option<u64> {
        self.prune_snapshots_to(dir, self.opts.snapshot_retention)
    }

    /// [`Watcher::prune_snapshots`] to `keep`.
    fn prune_snapshots_to(&mut self, dir: &Path, keep: snapshots::Retention) -> Option<u64> {
        self.pruned_at = Some(Instant::now());
        match snapshots::prune(dir, &keep) {
            Ok(p) => {
                self.stats.snapshots_removed += p.removed;
                self.snapshot_bytes = Some(p.bytes);
                Some(p.removed)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(0),
            Err(e) => {
                let why = format!("snapshots {}: {e}", dir.display());
                self.trouble(Trouble::Snapshots, why);
                None
            }
        }
    }

    /// Between frames: event lines waiting for the disk are tried again
    /// (at most every [`LOG_RETRY`]: a quiet camera has no next event to
    /// write them with), and the snapshots folder pruned (at start, then
    /// every [`PRUNE_EVERY`]: a quiet camera keeps none longer than its
    /// days, a crash's temporaries go, and what the folder holds is listed
    /// again, other cameras' snapshots with it). Neither allocates unless
    /// it has work: the prune lists the folder once in [`PRUNE_EVERY`], not
    /// once a frame.
    pub(super) fn upkeep(&mut self) {
        let now = Instant::now();
        if self.log_tried_at.is_none_or(|t| now - t >= LOG_RETRY) {
            self.log_tried_at = Some(now);
            self.retry_log();
        }
        if self.pruned_at.is_none_or(|t| now - t >= PRUNE_EVERY) {
            if let Some(dir) = self.opts.snapshots.clone() {
                self.prune_snapshots(&dir);
            }
        }
    }

    /// Writes the event lines still waiting for the disk, if any.
    fn retry_log(&mut self) {
        let Some(log) = &self.log else { return };
        let mut log = lock(log);
        if log.pending() == 0 {
            // Another camera sharing the log wrote what waited.
            drop(log);
            self.trouble_log = None;
            return;
        }
        match log.flush() {
            Ok(()) => {
                say_writable_again(log.path());
                drop(log);
                self.trouble_log = None;
            }
            Err(e) => {
                drop(log);
                self.trouble(Trouble::Log, e.to_string());
            }
        }
    }

    /// Appends `record` to the event log; a line the disk refuses waits in
    /// memory and the loop goes on, degraded.
    pub(super) fn log_line(&mut self, record: &EventRecord) {
        let Some(log) = &self.log else { return };
        let mut log = lock(log);
        let was_waiting = log.pending() > 0;
        match log.append(record) {
            Ok(()) => {
                if was_waiting {
                    say_writable_again(log.path());
                }
                // Also when another camera sharing the log wrote the
                // lines that waited.
                self.trouble_log = None;
            }
            Err(e) => {
                drop(log);
                self.stats.log_write_errors += 1;
                self.trouble(Trouble::Log, e.to_string());
            }
        }
    }

    /// Records why the loop runs degraded, saying it in the log at most
    /// once a minute.
    pub(super) fn trouble(&mut self, cause: Trouble, why: String) {
        let say = self
            .trouble_said
            .is_none_or(|t| t.elapsed() >= TROUBLE_EVERY);
        if say {
            log::error!("{why}; the loop goes on");
            self.trouble_said = Some(Instant::now());
        }
        *match cause {
            Trouble::Log => &mut self.trouble_log,
            Trouble::Snapshots => &mut self.trouble_snapshots,
        } = Some(why);
    }

    /// Why the loop runs degraded (the disk refuses the event log, the
    /// source's frames do not fit the zones or tiles, or the last
    /// snapshot), if it does, in that order.
    pub fn trouble_now(&self) -> Option<&str> {
        self.trouble_log
            .as_deref()
            .or(self.trouble_frame_size.as_deref())
            .or(self.trouble_snapshots.as_deref())
    }

    /// Tries once more to write the event lines still waiting; says how
    /// many could not be written.
    pub fn flush_log(&mut self) {
        let Some(log) = &self.log else { return };
        let mut log = lock(log);
        if log.pending() == 0 {
            return;
        }
        match log.flush() {
            Ok(()) => self.trouble_log = None,
            Err(e) => log::error!("{e}: these event lines are lost"),
        }
    }
}

/// The event log took the lines that waited for the disk.
fn say_writable_again(path: &std::path::Path) {
    log::warn!(
        "{}: writable again; the waiting event lines are written",
        path.display()
    );
}
