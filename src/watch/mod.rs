//! The camera loop (`clip-edge watch`): frames in, events out.
//!
//! [`Watcher::step`] classifies one frame with the engine, feeds each
//! watched label's [`detect::Detector`], and for every start or end writes
//! the event to the log (fsync'd) before any [`Sink`] (GPIO, MQTT) acts on
//! it. Once warm a step allocates nothing unless an event starts or ends.
//! Sources, sinks and the log are separate modules; the service layer
//! (systemd, HTTP) builds on this one.

pub mod config;
pub mod convert;
pub mod detect;
pub mod events;
pub mod gpio;
pub mod mqtt;
pub mod source;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::engine::{Engine, EngineError};
use detect::{Detector, Rules, Transition};
use events::{EventKind, EventLog, EventLogError, EventRecord, Ids};
use source::{Frame, FrameSource, Next, SourceError};

#[derive(Debug, Error)]
pub enum WatchError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Log(#[from] EventLogError),
    #[error("classifying frame {frame}: {source}")]
    Engine { frame: u64, source: EngineError },
    #[error("{path}: {source}")]
    Snapshot {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A label the loop watches.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Watched {
    pub label: String,
    /// Its index in the bundle's labels.
    pub index: usize,
    /// Probability a top-1 frame must reach to count as positive.
    pub threshold: f32,
}

/// Default probability threshold of a watched label.
pub const DEFAULT_THRESHOLD: f32 = 0.5;

/// Something that acts on events (a GPIO line, an MQTT publisher). Called
/// after the event is on disk.
pub trait Sink {
    /// `watched` indexes [`Options::watched`]; `line` is the log line.
    fn event(&mut self, watched: usize, record: &EventRecord, line: &[u8]);
}

impl<P: embedded_hal::digital::OutputPin> Sink for gpio::GpioLines<P> {
    fn event(&mut self, _watched: usize, record: &EventRecord, _line: &[u8]) {
        match record.event {
            EventKind::Start => self.set(&record.label, true),
            EventKind::End => self.set(&record.label, false),
            EventKind::SourceLost | EventKind::SourceBack => {}
        }
    }
}

impl Sink for mqtt::Mqtt {
    fn event(&mut self, _watched: usize, record: &EventRecord, line: &[u8]) {
        mqtt::Mqtt::event(self, line);
        match record.event {
            EventKind::Start => self.state(&record.label, true),
            EventKind::End => self.state(&record.label, false),
            EventKind::SourceLost | EventKind::SourceBack => {}
        }
    }
}

/// What the loop does besides classifying.
#[derive(Debug, Clone)]
pub struct Options {
    pub watched: Vec<Watched>,
    pub rules: Rules,
    /// Frames per second to pace a `dir:` source at (None: as fast as it goes).
    pub fps: Option<f64>,
    /// Skip inference on a frame whose mean absolute difference to the last
    /// inferred frame (0-255 scale, sampled) is below this.
    pub motion_threshold: Option<f32>,
    /// Where to write a JPEG of each event's start frame.
    pub snapshots: Option<PathBuf>,
    /// The source as given (`dir:...`), written in every event.
    pub source_name: String,
}

/// Why [`Watcher::run_until`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    SourceEnd,
    Shutdown,
    /// `pause` was set: events are still open, the watcher can run again.
    Paused,
}

/// Counters and time spent, for `--stats`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Stats {
    pub frames: u64,
    /// Frames the encoder ran on (the rest were skipped by motion gating).
    pub inferred: u64,
    pub bad_frames: u64,
    pub dropped: u64,
    pub events: u64,
    /// Milliseconds in total: getting frames (decode, convert, queue),
    /// classifying (preprocess, encode, score), the loop's own work
    /// (detection, events, snapshots, actions).
    pub source_ms: f64,
    pub classify_ms: f64,
    /// The parts of `classify_ms`: resize/crop/normalise, the image
    /// encoder, scoring against the text table.
    pub preprocess_ms: f64,
    pub encode_ms: f64,
    pub score_ms: f64,
    pub loop_ms: f64,
    pub wall_ms: f64,
}

/// The loop's state: engine, detectors, log and sinks.
pub struct Watcher<'a> {
    engine: &'a mut Engine,
    opts: Options,
    detectors: Vec<Detector>,
    open_ids: Vec<Option<String>>,
    log: Option<EventLog>,
    ids: Ids,
    sinks: Vec<&'a mut dyn Sink>,
    /// The last `window` frames (for start-frame snapshots).
    recent: Vec<Frame>,
    /// The last inferred frame (motion gating).
    reference: Frame,
    have_reference: bool,
    /// Index of the last frame stepped.
    last_index: u64,
    pub stats: Stats,
}

impl<'a> Watcher<'a> {
    /// `log`: the opened event log (its recovery already done), whose ids
    /// the new ones must stay above.
    pub fn new(
        engine: &'a mut Engine,
        opts: Options,
        log: Option<(EventLog, Option<u64>)>,
        sinks: Vec<&'a mut dyn Sink>,
    ) -> Self {
        let n = opts.watched.len();
        let (log, last_run) = match log {
            Some((l, r)) => (Some(l), r),
            None => (None, None),
        };
        let keep = if opts.snapshots.is_some() {
            opts.rules.window as usize
        } else {
            0
        };
        Watcher {
            engine,
            detectors: vec![Detector::new(opts.rules); n],
            open_ids: vec![None; n],
            opts,
            log,
            ids: Ids::new(last_run),
            sinks,
            recent: vec![Frame::default(); keep],
            reference: Frame::default(),
            have_reference: false,
            last_index: 0,
            stats: Stats::default(),
        }
    }

    pub fn engine(&self) -> &Engine {
        self.engine
    }

    /// Whether watched label `i` has an event open.
    pub fn active(&self, i: usize) -> bool {
        self.detectors[i].active()
    }

    /// Classifies `frame` (unless motion gating skips it), updates the
    /// detectors and emits the events. Returns how many events started or ended.
    pub fn step(&mut self, frame: &Frame) -> Result<usize, WatchError> {
        self.stats.frames += 1;
        self.last_index = frame.index;
        let t0 = Instant::now();
        if !self.recent.is_empty() {
            let k = self.recent.len();
            self.recent[(frame.index % k as u64) as usize].copy_from(frame);
        }
        let skip = match self.opts.motion_threshold {
            Some(thr) if self.have_reference => mean_abs_diff(&self.reference, frame) < thr,
            _ => false,
        };
        if !skip {
            let t =
                self.engine
                    .classify(&frame.view(), 1)
                    .map_err(|source| WatchError::Engine {
                        frame: frame.index,
                        source,
                    })?;
            self.stats.preprocess_ms += t.preprocess;
            self.stats.encode_ms += t.encode;
            self.stats.score_ms += t.score;
            self.stats.inferred += 1;
            if self.opts.motion_threshold.is_some() {
                self.reference.copy_from(frame);
                self.have_reference = true;
            }
        }
        let t1 = Instant::now();
        self.stats.classify_ms += (t1 - t0).as_secs_f64() * 1e3;
        let (top, top_p) = self.engine.top()[0];
        let mut n = 0;
        for i in 0..self.opts.watched.len() {
            let w = &self.opts.watched[i];
            let positive = top == w.index && top_p >= w.threshold;
            let score = self.engine.scores[w.index];
            if let Some(t) = self.detectors[i].feed(frame.index, positive, score) {
                self.emit(i, t, None)?;
                n += 1;
            }
        }
        self.stats.loop_ms += t1.elapsed().as_secs_f64() * 1e3;
        Ok(n)
    }

    /// Writes a source note (lost / back) to the log and the sinks; a lost
    /// source first ends the open events with reason "source_lost".
    pub fn source_note(&mut self, note: source::SourceNote) -> Result<(), WatchError> {
        let (kind, reason) = match note {
            source::SourceNote::Lost(why) => {
                self.end_all("source_lost")?;
                (EventKind::SourceLost, Some(why))
            }
            source::SourceNote::Back => (EventKind::SourceBack, None),
        };
        let record = EventRecord {
            event: kind,
            id: self.ids.next_id(),
            label: String::new(),
            frame: self.last_index,
            time: events::now_rfc3339(),
            score: 0.0,
            source: self.opts.source_name.clone(),
            snapshot: None,
            reason,
        };
        if let Some(log) = &mut self.log {
            log.append(&record)?;
        }
        let line = serde_json::to_vec(&record).expect("an event serialises");
        log::warn!("{}", String::from_utf8_lossy(&line));
        for s in &mut self.sinks {
            s.event(usize::MAX, &record, &line);
        }
        Ok(())
    }

    /// Ends every open event with `reason` ("source_end", "shutdown").
    pub fn end_all(&mut self, reason: &str) -> Result<(), WatchError> {
        for i in 0..self.detectors.len() {
            if let Some(t) = self.detectors[i].end() {
                self.emit(i, t, Some(reason))?;
            }
        }
        Ok(())
    }

    fn emit(&mut self, i: usize, t: Transition, reason: Option<&str>) -> Result<(), WatchError> {
        let (kind, frame, score) = match t {
            Transition::Start { frame, score } => (EventKind::Start, frame, score),
            Transition::End { frame, score } => (EventKind::End, frame, score),
        };
        let id = match kind {
            EventKind::Start => {
                let id = self.ids.next_id();
                self.open_ids[i] = Some(id.clone());
                id
            }
            _ => self.open_ids[i]
                .take()
                .unwrap_or_else(|| self.ids.next_id()),
        };
        let snapshot = match (kind, &self.opts.snapshots) {
            (EventKind::Start, Some(dir)) => self.snapshot(dir, &id, frame)?,
            _ => None,
        };
        let record = EventRecord {
            event: kind,
            id,
            label: self.opts.watched[i].label.clone(),
            frame,
            time: events::now_rfc3339(),
            score,
            source: self.opts.source_name.clone(),
            snapshot,
            reason: reason.map(str::to_string),
        };
        if let Some(log) = &mut self.log {
            log.append(&record)?;
        }
        let line = serde_json::to_vec(&record).expect("an event serialises");
        log::info!("{}", String::from_utf8_lossy(&line));
        for s in &mut self.sinks {
            s.event(i, &record, &line);
        }
        if kind == EventKind::Start {
            self.stats.events += 1;
        }
        Ok(())
    }

    /// Writes the start frame (or, when it has left the window, the oldest
    /// frame kept) as `DIR/<id>.jpg`, atomically.
    fn snapshot(&self, dir: &Path, id: &str, frame: u64) -> Result<Option<String>, WatchError> {
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
        let path = dir.join(format!("{id}.jpg"));
        let err = |source| WatchError::Snapshot {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let mut bytes = Vec::new();
        {
            use image::ImageEncoder;
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 85)
                .write_image(
                    &f.image.rgb(),
                    f.image.width,
                    f.image.height,
                    image::ExtendedColorType::Rgb8,
                )
                .map_err(|e| err(std::io::Error::other(e.to_string())))?;
        }
        let tmp = dir.join(format!(".{id}.jpg.tmp"));
        std::fs::write(&tmp, &bytes)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(err)?;
        Ok(Some(path.display().to_string()))
    }

    /// Runs `source` to its end (or until `stop` is set), pacing a folder
    /// at `fps`; ends open events with "source_end" or "shutdown".
    pub fn run(
        &mut self,
        source: &mut dyn FrameSource,
        stop: &AtomicBool,
    ) -> Result<Stats, WatchError> {
        self.run_observed(source, stop, &mut |_: &Watcher<'_>, _: Option<&Frame>| {})
    }

    /// This run's id prefix (new ids after a reload must stay above it).
    pub fn run_id(&self) -> u64 {
        self.ids.run()
    }

    /// The event log, for the next watcher (after a reload).
    pub fn into_log(self) -> Option<EventLog> {
        self.log
    }

    /// Open events, as (label, event id).
    pub fn open_events(&self) -> impl Iterator<Item = (&str, &str)> {
        self.opts
            .watched
            .iter()
            .zip(&self.open_ids)
            .filter_map(|(w, id)| Some((w.label.as_str(), id.as_deref()?)))
    }

    /// As [`Watcher::run`], calling `observe` after every frame (with the
    /// frame) and at least every [`source::IDLE_TICK`] while a live source
    /// is silent (with `None`): the service's watchdog, status and HTTP
    /// state live there.
    pub fn run_observed(
        &mut self,
        source: &mut dyn FrameSource,
        stop: &AtomicBool,
        observe: &mut dyn FnMut(&Watcher<'_>, Option<&Frame>),
    ) -> Result<Stats, WatchError> {
        self.run_until(source, stop, &AtomicBool::new(false), observe)?;
        Ok(self.stats)
    }

    /// As [`Watcher::run_observed`], also returning (with events left
    /// open, [`Ended::Paused`]) as soon as `pause` is set: the service
    /// reloads, then runs this watcher again or ends its events and
    /// replaces it.
    pub fn run_until(
        &mut self,
        source: &mut dyn FrameSource,
        stop: &AtomicBool,
        pause: &AtomicBool,
        observe: &mut dyn FnMut(&Watcher<'_>, Option<&Frame>),
    ) -> Result<Ended, WatchError> {
        let start = Instant::now() - Duration::from_secs_f64(self.stats.wall_ms / 1e3);
        let period = self.opts.fps.map(|f| Duration::from_secs_f64(1.0 / f));
        let mut frame = Frame::default();
        let mut due = Instant::now();
        let reason = loop {
            if stop.load(Ordering::Relaxed) {
                break "shutdown";
            }
            if pause.load(Ordering::Relaxed) {
                self.stats.wall_ms = start.elapsed().as_secs_f64() * 1e3;
                return Ok(Ended::Paused);
            }
            let t0 = Instant::now();
            let next = source.next(&mut frame);
            self.stats.source_ms += t0.elapsed().as_secs_f64() * 1e3;
            if let Some(note) = source.take_note() {
                self.source_note(note)?;
            }
            match next {
                Ok(Next::Frame) => {}
                Ok(Next::Idle) => {
                    observe(self, None);
                    continue;
                }
                Ok(Next::End) => break "source_end",
                Err(SourceError::Frame { what, why }) => {
                    // One bad frame (a corrupt file or JPEG) is skipped, not
                    // fatal; the loop is alive (the watchdog's pets go on).
                    log::warn!("{what}: {why}; frame skipped");
                    self.stats.bad_frames += 1;
                    self.stats.wall_ms = start.elapsed().as_secs_f64() * 1e3;
                    observe(self, None);
                    continue;
                }
                Err(e) => {
                    self.end_all("source_error")?;
                    return Err(e.into());
                }
            }
            self.step(&frame)?;
            self.stats.dropped = source.dropped();
            self.stats.wall_ms = start.elapsed().as_secs_f64() * 1e3;
            observe(self, Some(&frame));
            if let Some(p) = period {
                due += p;
                // Late: go on at once (no catching up). Early: sleep in
                // short steps, so that a stop is seen at once.
                if due <= Instant::now() {
                    due = Instant::now();
                }
                loop {
                    let now = Instant::now();
                    if due <= now || stop.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep((due - now).min(source::IDLE_TICK));
                }
            }
        };
        self.end_all(reason)?;
        self.stats.dropped = source.dropped();
        self.stats.wall_ms = start.elapsed().as_secs_f64() * 1e3;
        Ok(if reason == "shutdown" {
            Ended::Shutdown
        } else {
            Ended::SourceEnd
        })
    }
}

/// Mean absolute difference of two frames over every 7th byte (0-255
/// scale); frames of different sizes or modes differ completely.
pub fn mean_abs_diff(a: &Frame, b: &Frame) -> f32 {
    let (a, b) = (&a.image, &b.image);
    if (a.width, a.height, a.mode) != (b.width, b.height, b.mode) || a.data.len() != b.data.len() {
        return f32::INFINITY;
    }
    let (mut sum, mut n) = (0u64, 0u64);
    for (x, y) in a.data.iter().zip(&b.data).step_by(7) {
        sum += x.abs_diff(*y) as u64;
        n += 1;
    }
    if n == 0 {
        0.0
    } else {
        sum as f32 / n as f32
    }
}
