//! The camera loop (`clip-edge watch`): frames in, events out.
//!
//! [`Watcher::step`] classifies one frame with the engine, feeds each
//! watched label's [`detect::Detector`], and for every start or end appends
//! the event to the log (fsync'd; a line the disk refuses waits in memory)
//! and then hands it to each [`Sink`] (GPIO, MQTT). Once warm a step allocates nothing unless an event starts or ends.
//! Sources, sinks and the log are separate modules; the service layer
//! (systemd, HTTP) builds on this one.

pub mod config;
pub mod convert;
pub mod detect;
pub mod draw;
mod emit;
pub mod events;
pub mod gpio;
pub mod motion;
pub mod mqtt;
mod region_step;
pub mod regions;
mod run;
pub mod secrets;
mod sink;
pub mod snapshots;
pub mod source;
pub mod track;
mod whole_frame;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::decode::DecodedImage;
use crate::engine::{Engine, EngineError};
use detect::{Detector, Rules, Transition};
use events::{EventKind, EventLog, EventLogError, EventRecord, Ids};
use region_step::RegionState;
use regions::{Rect, RegionOptions};
pub use sink::Sink;
use source::{Frame, FrameSource, Next, SourceError};

/// A setting `watch` cannot use (a flag, a config file's key, a zone, a
/// password file): the message names it and its value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct SettingError(pub String);

impl From<String> for SettingError {
    fn from(message: String) -> Self {
        SettingError(message)
    }
}

impl From<&str> for SettingError {
    fn from(message: &str) -> Self {
        SettingError(message.into())
    }
}

#[derive(Debug, Error)]
pub enum WatchError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Log(#[from] EventLogError),
    #[error("classifying frame {frame}: {source}")]
    Engine { frame: u64, source: EngineError },
    /// The settings do not fit the source (a zone outside its first
    /// frame).
    #[error(transparent)]
    Settings(#[from] SettingError),
    /// One frame the loop cannot use (one preprocessing refuses, or of a
    /// size the zones no longer fit after the first): skipped and counted
    /// as a bad frame, the loop goes on.
    #[error("frame {frame}: {why}")]
    Frame { frame: u64, why: String },
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

/// What the loop does besides classifying.
#[derive(Debug, Clone)]
pub struct Options {
    pub watched: Vec<Watched>,
    pub rules: Rules,
    /// The loop's highest frame rate, whatever the source (None: as fast as
    /// frames come).
    pub fps: Option<f64>,
    /// Skip inference on a frame whose mean absolute difference to the last
    /// inferred frame (0-255 scale, sampled) is below this.
    pub motion_threshold: Option<f32>,
    /// Where to write a JPEG of each event's start frame.
    pub snapshots: Option<PathBuf>,
    /// How much of the snapshots folder to keep.
    pub snapshot_retention: snapshots::Retention,
    /// The source as given (`dir:...`), written in every event.
    pub source_name: String,
    /// Where in a frame to look (default: the whole frame).
    pub regions: RegionOptions,
    /// The camera's name, written in every event when the service has
    /// several (`[[camera]]` tables).
    pub camera: Option<String>,
    /// How the source decodes its JPEG frames (`--decode`).
    pub decode: crate::decode::Decode,
}

/// The engine a watcher classifies with: its own, or one that several
/// cameras share (each frame classified under the lock, in turn).
pub enum EngineRef<'a> {
    Own(&'a mut Engine),
    Shared(&'a Mutex<Engine>),
}

impl<'a> From<&'a mut Engine> for EngineRef<'a> {
    fn from(e: &'a mut Engine) -> Self {
        EngineRef::Own(e)
    }
}

impl<'a> From<&'a Mutex<Engine>> for EngineRef<'a> {
    fn from(e: &'a Mutex<Engine>) -> Self {
        EngineRef::Shared(e)
    }
}

impl EngineRef<'_> {
    /// Runs `f` with the engine (holding the lock while it runs).
    pub fn with<R>(&mut self, f: impl FnOnce(&mut Engine) -> R) -> R {
        match self {
            EngineRef::Own(e) => f(e),
            EngineRef::Shared(m) => f(&mut lock(m)),
        }
    }
}

/// A lock whose holder panicked is still the data: a camera's panic must
/// not stop the others.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The event log, shared by the cameras of one service.
pub type SharedLog = Arc<Mutex<EventLog>>;

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
    /// Frames the encoder ran on (the rest were skipped by
    /// `--motion-threshold`, or, with regions, had no region to classify).
    pub inferred: u64,
    pub bad_frames: u64,
    pub dropped: u64,
    pub events: u64,
    /// Regions of frames classified (with `--regions` other than the whole frame).
    pub crops: u64,
    /// Detections not followed because 16 tracks were (a crowded view).
    pub tracks_dropped: u64,
    /// Event lines the disk refused (they wait in memory) and snapshots
    /// it refused (the event says `snapshot_error`).
    pub log_write_errors: u64,
    pub snapshot_write_errors: u64,
    /// Snapshots removed to keep the folder within its size and age.
    pub snapshots_removed: u64,
    /// Milliseconds in total: waiting for frames (what the loop waits on
    /// the source; decoding runs on the source's own thread, for folders
    /// and live sources alike),
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
    engine: EngineRef<'a>,
    /// The bundle's labels, and each one's probability in the last frame
    /// classified (the last crop, with regions).
    labels: Vec<String>,
    label_scores: Vec<f32>,
    opts: Options,
    detectors: Vec<Detector>,
    open_ids: Vec<Option<String>>,
    log: Option<SharedLog>,
    ids: Ids,
    sinks: Vec<&'a mut dyn Sink>,
    /// The last `window` frames (for start-frame snapshots).
    recent: Vec<Frame>,
    /// The slot of `recent` the next frame takes, modulo its length.
    recent_next: u64,
    /// The last inferred frame (`--motion-threshold`'s skip).
    last_inferred: Frame,
    have_last_inferred: bool,
    /// Bad frames said, and counted to be said (over reload pauses).
    bad: run::BadFrames,
    /// Index of the last frame stepped.
    last_index: u64,
    /// Regions, zones and tracks (unused for the whole frame).
    regions: RegionState,
    /// Each watched label's probability in the last frame (with regions:
    /// its highest over the frame's crops).
    scores: Vec<f32>,
    /// Why the loop runs degraded, per cause (the disk refuses the event
    /// log; the snapshots), each cleared by that cause's next success, and
    /// when a trouble was last said in the log.
    trouble_log: Option<String>,
    trouble_snapshots: Option<String>,
    /// The source's frames are skipped: the zones or tiles do not fit
    /// their size (cleared by the next frame that fits).
    trouble_frame_size: Option<String>,
    trouble_said: Option<Instant>,
    /// When event lines waiting for the disk were last tried, and the
    /// snapshots last pruned, between frames ([`Watcher::upkeep`]).
    log_tried_at: Option<Instant>,
    pruned_at: Option<Instant>,
    /// The bytes of snapshots the folder holds, as last listed plus those
    /// written since (`None`: not listed yet).
    snapshot_bytes: Option<u64>,
    /// What an earlier watcher of this camera counted of the frames its
    /// source dropped and of the detections beyond the tracks
    /// ([`Watcher::carry_on`]).
    counted_before: (u64, u64),
    pub stats: Stats,
}

/// A write problem is said in the log at most once in this long.
const TROUBLE_EVERY: Duration = Duration::from_secs(60);

impl<'a> Watcher<'a> {
    /// `log`: the opened event log (its recovery already done), whose ids
    /// the new ones must stay above.
    pub fn new(
        engine: impl Into<EngineRef<'a>>,
        opts: Options,
        log: Option<(EventLog, Option<u64>)>,
        sinks: Vec<&'a mut dyn Sink>,
    ) -> Self {
        let (log, last_run) = match log {
            Some((l, r)) => (Some(Arc::new(Mutex::new(l))), r),
            None => (None, None),
        };
        Self::with_ids(engine, opts, log, Ids::new(last_run), sinks)
    }

    /// As [`Watcher::new`], writing to a log other watchers may share,
    /// with ids from `ids` (a run of its own for each watcher).
    pub fn with_ids(
        engine: impl Into<EngineRef<'a>>,
        opts: Options,
        log: Option<SharedLog>,
        ids: Ids,
        sinks: Vec<&'a mut dyn Sink>,
    ) -> Self {
        let mut engine = engine.into();
        let labels = engine.with(|e| e.bundle.labels().to_vec());
        let n = opts.watched.len();
        let rules = opts.rules;
        let keep = if opts.snapshots.is_some() {
            opts.rules.window as usize
        } else {
            0
        };
        Watcher {
            engine,
            label_scores: vec![0.0; labels.len()],
            labels,
            detectors: vec![Detector::new(opts.rules); n],
            open_ids: vec![None; n],
            opts,
            log,
            ids,
            sinks,
            recent: vec![Frame::default(); keep],
            recent_next: 0,
            last_inferred: Frame::default(),
            have_last_inferred: false,
            bad: run::BadFrames::default(),
            last_index: 0,
            regions: RegionState::new(rules),
            scores: vec![0.0; n],
            trouble_log: None,
            trouble_snapshots: None,
            trouble_frame_size: None,
            trouble_said: None,
            log_tried_at: None,
            pruned_at: None,
            snapshot_bytes: None,
            counted_before: (0, 0),
            stats: Stats::default(),
        }
    }

    /// Goes on from `stats`, an earlier watcher's of this camera (a
    /// restart with other settings): its counters and times grow from
    /// there. `source_dropped` is what the source this watcher reads has
    /// dropped so far (the earlier one's, or 0 for a new source).
    pub fn carry_on(&mut self, stats: Stats, source_dropped: u64) {
        self.stats = stats;
        self.counted_before = (
            stats.dropped.saturating_sub(source_dropped),
            stats.tracks_dropped,
        );
    }

    /// Runs `f` with the engine (a shared one locked while it runs).
    pub fn with_engine<R>(&mut self, f: impl FnOnce(&mut Engine) -> R) -> R {
        self.engine.with(f)
    }

    /// The bundle's labels.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Each of the bundle's labels' probability in the last frame
    /// classified (with regions: in its last crop).
    pub fn label_scores(&self) -> &[f32] {
        &self.label_scores
    }

    /// The camera's name, when the service has several.
    pub fn camera(&self) -> Option<&str> {
        self.opts.camera.as_deref()
    }

    /// The labels watched, with their thresholds.
    pub fn watched(&self) -> &[Watched] {
        &self.opts.watched
    }

    /// Each watched label's probability in the last frame classified (with
    /// regions: its highest over that frame's crops).
    pub fn watched_scores(&self) -> &[f32] {
        &self.scores
    }

    /// Whether watched label `i` has an event open.
    pub fn active(&self, i: usize) -> bool {
        if self.opts.regions.whole_frame() {
            self.detectors[i].active()
        } else {
            self.regions.tracks.label_active(i)
        }
    }

    /// The boxes of the tracks with an event open, with their labels'
    /// indices in the bundle.
    pub fn open_boxes(&self) -> impl Iterator<Item = (usize, Rect)> + '_ {
        let watched = &self.opts.watched;
        self.regions
            .tracks
            .iter()
            .filter(|(_, t)| t.detector.active())
            .map(move |(_, t)| (watched[t.watched].index, t.last_box))
    }

    /// Classifies `frame` (unless `--motion-threshold` skips it), updates the
    /// detectors and emits the events. Returns how many events started or
    /// ended. A frame it cannot use ([`WatchError::Frame`]) is counted as a
    /// bad frame, not a frame.
    pub fn step(&mut self, frame: &Frame) -> Result<usize, WatchError> {
        let r = self.step_frame(frame);
        match &r {
            Ok(_) => {
                self.stats.frames += 1;
                self.recent_next += 1;
            }
            Err(WatchError::Frame { .. }) => self.stats.bad_frames += 1,
            Err(_) => self.stats.frames += 1,
        }
        r
    }

    fn step_frame(&mut self, frame: &Frame) -> Result<usize, WatchError> {
        self.last_index = frame.index;
        let t0 = Instant::now();
        if !self.recent.is_empty() {
            // By frames stepped, as the detectors count (a live source's
            // indices have gaps); a frame skipped is written over.
            let k = self.recent.len() as u64;
            self.recent[(self.recent_next % k) as usize].copy_from(frame);
        }
        if !self.opts.regions.whole_frame() {
            return self.step_regions(frame, t0);
        }
        self.step_whole_frame(frame, t0)
    }

    /// Writes a source note (lost / back) to the log and the sinks; a lost
    /// source first ends the open events with reason "source_lost".
    pub fn source_note(&mut self, note: source::SourceNote) -> Result<(), WatchError> {
        let (kind, reason) = match note {
            source::SourceNote::Lost(why) => {
                self.end_all("source_lost")?;
                (EventKind::SourceLost, Some(why))
            }
            source::SourceNote::Back => {
                // The scene may have changed while the source was away.
                self.regions.motion.reset();
                (EventKind::SourceBack, None)
            }
        };
        let record = EventRecord {
            event: kind,
            id: self.ids.next_id(),
            label: String::new(),
            frame: self.last_index,
            time: events::now_rfc3339(),
            score: 0.0,
            source: self.opts.source_name.clone(),
            camera: self.opts.camera.clone(),
            snapshot: None,
            reason,
            bbox: None,
            track: None,
            zone: None,
            snapshot_error: None,
        };
        self.log_line(&record);
        let line = serde_json::to_vec(&record).expect("an event serialises");
        log::warn!("{}", String::from_utf8_lossy(&line));
        for s in &mut self.sinks {
            s.event(&record, &line, false);
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
        let mut ends = std::mem::take(&mut self.regions.transitions);
        ends.clear();
        self.regions.tracks.end_all(&mut ends);
        for &(slot, t) in &ends {
            self.emit_track(slot, t, Some(reason))?;
        }
        self.regions.transitions = ends;
        self.regions.tracks.retire_idle();
        Ok(())
    }

    /// Open events, as (label, event id).
    pub fn open_events(&self) -> impl Iterator<Item = (&str, &str)> {
        let frame = self
            .opts
            .watched
            .iter()
            .zip(&self.open_ids)
            .filter_map(|(w, id)| Some((w.label.as_str(), id.as_deref()?)));
        let watched = &self.opts.watched;
        let tracks = self.regions.tracks.iter().filter_map(move |(_, t)| {
            Some((watched[t.watched].label.as_str(), t.open_id.as_deref()?))
        });
        frame.chain(tracks)
    }
}

/// Classifies `img` with `engine` (top-1), adding its stage times to `stats`.
fn classify_counted(
    engine: &mut Engine,
    stats: &mut Stats,
    img: &DecodedImage,
    frame: u64,
) -> Result<(), WatchError> {
    let t = engine
        .classify(&img.view(), 1)
        .map_err(|source| match source {
            EngineError::Preprocess(e) => WatchError::Frame {
                frame,
                why: e.to_string(),
            },
            source => WatchError::Engine { frame, source },
        })?;
    stats.preprocess_ms += t.preprocess;
    stats.encode_ms += t.encode;
    stats.score_ms += t.score;
    Ok(())
}

/// Where a track's event happened.
struct Place {
    rect: Rect,
    track: u64,
    zone: Option<String>,
}
