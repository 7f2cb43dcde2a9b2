//! One camera's live state for the status server: updated in place by
//! its loop after each frame (no allocation per frame), read by the
//! server's thread for `/api/state`, `/snapshot.jpg` and `/metrics`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::history::History;
use super::metrics::{Families, Metrics};
use crate::watch::events::{EventKind, EventRecord};
use crate::watch::mqtt::MqttStatsHandle;
use crate::watch::regions::Rect;
use crate::watch::source::Frame;
use crate::watch::{Sink, Watcher};

/// Events kept for the page and `/api/state`.
pub const RECENT_EVENTS: usize = 20;
/// Labels listed with their scores in `/api/state`.
pub const TOP_K: usize = 5;
/// The largest snapshot `/snapshots/ID.jpg` serves.
const MAX_SNAPSHOT_BYTES: u64 = 16 << 20;

struct State {
    labels: Vec<String>,
    frames: u64,
    last_index: u64,
    last_at: Option<Instant>,
    last_wall: Option<std::time::SystemTime>,
    classify_ms_seen: f64,
    scores: Vec<f32>,
    fps: f64,
    frame: Frame,
    active: Vec<(String, String)>,
    recent: VecDeque<EventRecord>,
    dropped_seen: u64,
    bad_frames_seen: u64,
    inferred_seen: u64,
    crops_seen: u64,
    encode_ms_seen: f64,
    /// The open events' boxes: (label index, box).
    boxes: Vec<(usize, Rect)>,
    /// Why the loop runs degraded (a disk refusing writes).
    trouble: Option<String>,
    /// The watched labels: (index in `labels`, threshold), and their
    /// scores in the last frame.
    watched: Vec<(usize, f32)>,
    watched_scores: Vec<f32>,
    writes_seen: [u64; 3],
    /// fps and latency over the last minutes (the page's chart).
    history: History,
}

/// One camera's state: what the server reads and its loop writes.
pub struct Status {
    camera: String,
    state: Mutex<State>,
    metrics: Metrics,
    silent_after: Duration,
}

impl Status {
    /// `camera`: its name (the metrics' label); `labels`: the bundle's;
    /// `silent_after`: how long without a frame makes `/healthz` answer
    /// 503; `mqtt`: the publisher's counters, when events go to a broker.
    pub fn new(
        families: &Families,
        camera: &str,
        labels: Vec<String>,
        silent_after: Duration,
        mqtt: Option<MqttStatsHandle>,
    ) -> Arc<Self> {
        let metrics = Metrics::new(families, camera, mqtt);
        let n = labels.len();
        Arc::new(Status {
            camera: camera.to_string(),
            state: Mutex::new(State {
                labels,
                frames: 0,
                last_index: 0,
                last_at: None,
                last_wall: None,
                classify_ms_seen: 0.0,
                scores: vec![0.0; n],
                fps: 0.0,
                frame: Frame::default(),
                active: Vec::new(),
                recent: VecDeque::with_capacity(RECENT_EVENTS + 1),
                dropped_seen: 0,
                bad_frames_seen: 0,
                inferred_seen: 0,
                crops_seen: 0,
                encode_ms_seen: 0.0,
                boxes: Vec::with_capacity(crate::watch::track::MAX_TRACKS),
                trouble: None,
                watched: Vec::new(),
                watched_scores: Vec::new(),
                writes_seen: [0; 3],
                history: History::default(),
            }),
            metrics,
            silent_after,
        })
    }

    /// After each frame (`frame`: classified, or skipped as unusable) and
    /// while idle (`None`: only why the loop runs degraded, if it does).
    pub fn observe(&self, w: &Watcher<'_>, frame: Option<&Frame>) {
        let Ok(mut s) = self.state.lock() else { return };
        if s.trouble.as_deref() != w.trouble_now() {
            s.trouble = w.trouble_now().map(str::to_string);
        }
        let st = &w.stats;
        // Bad frames are observed without a frame (skipped before a step).
        if st.bad_frames > s.bad_frames_seen {
            self.metrics
                .bad_frames
                .inc_by(st.bad_frames - s.bad_frames_seen);
            s.bad_frames_seen = st.bad_frames;
        }
        let Some(frame) = frame else { return };
        if st.frames < s.frames {
            // Counters carry on across a reload (`Watcher::carry_on`):
            // fewer frames than seen is a defensive guard only.
            s.inferred_seen = 0;
            s.classify_ms_seen = 0.0;
            s.crops_seen = 0;
            s.encode_ms_seen = 0.0;
            s.writes_seen = [0; 3];
        }
        self.metrics.frames.inc();
        if st.inferred > s.inferred_seen {
            self.metrics.inferred.inc_by(st.inferred - s.inferred_seen);
            let ms = (st.classify_ms - s.classify_ms_seen) / (st.inferred - s.inferred_seen) as f64;
            self.metrics.latency.observe(ms / 1e3);
            s.classify_ms_seen = st.classify_ms;
            s.inferred_seen = st.inferred;
        }
        if st.encode_ms > s.encode_ms_seen {
            self.metrics
                .encode_seconds
                .inc_by((st.encode_ms - s.encode_ms_seen) / 1e3);
            s.encode_ms_seen = st.encode_ms;
        }
        if st.crops > s.crops_seen {
            self.metrics.crops.inc_by(st.crops - s.crops_seen);
            s.crops_seen = st.crops;
        }
        s.boxes.clear();
        s.boxes.extend(w.open_boxes());
        let writes = [
            st.log_write_errors,
            st.snapshot_write_errors,
            st.snapshots_removed,
        ];
        for (k, c) in [
            &self.metrics.log_write_failures,
            &self.metrics.snapshot_write_failures,
            &self.metrics.snapshots_removed,
        ]
        .into_iter()
        .enumerate()
        {
            if writes[k] > s.writes_seen[k] {
                c.inc_by(writes[k] - s.writes_seen[k]);
                s.writes_seen[k] = writes[k];
            }
        }
        let same = s.watched.len() == w.watched().len()
            && s.watched
                .iter()
                .zip(w.watched())
                .all(|(a, b)| *a == (b.index, b.threshold));
        if !same {
            // At start and after a reload only.
            s.watched = w.watched().iter().map(|x| (x.index, x.threshold)).collect();
            s.watched_scores = vec![0.0; s.watched.len()];
        }
        s.watched_scores.copy_from_slice(w.watched_scores());
        if st.dropped < s.dropped_seen {
            // Defensive: drops carry on across a reload.
            s.dropped_seen = 0;
        }
        if st.dropped > s.dropped_seen {
            self.metrics.dropped.inc_by(st.dropped - s.dropped_seen);
            s.dropped_seen = st.dropped;
        }
        s.frames = st.frames;
        s.last_index = frame.index;
        let now = Instant::now();
        s.history
            .observe(now, st.frames, st.inferred, st.classify_ms);
        s.last_at = Some(now);
        s.last_wall = Some(std::time::SystemTime::now());
        s.fps = st.frames as f64 / (st.wall_ms / 1e3).max(1e-9);
        let scores = w.label_scores();
        if s.scores.len() != scores.len() || s.labels.as_slice() != w.labels() {
            // A reload swapped in a bundle with other labels (or the same
            // number of labels, renamed or reordered).
            s.labels = w.labels().to_vec();
            s.scores.resize(scores.len(), 0.0);
        }
        s.scores.copy_from_slice(scores);
        s.frame.copy_from(frame);
    }

    /// The camera's name.
    pub fn camera(&self) -> &str {
        &self.camera
    }

    /// Whether a frame came within `silent_after` (`/healthz` 200).
    pub fn healthy(&self) -> bool {
        let s = self.state.lock().expect("status");
        s.last_at.is_some_and(|t| t.elapsed() <= self.silent_after)
    }

    /// Why the loop runs degraded, if it does.
    pub fn trouble(&self) -> Option<String> {
        self.state.lock().ok()?.trouble.clone()
    }

    pub(super) fn state_json(&self) -> serde_json::Value {
        let s = self.state.lock().expect("status");
        let mut order: Vec<usize> = (0..s.scores.len()).collect();
        order.sort_by(|&a, &b| s.scores[b].total_cmp(&s.scores[a]));
        let top: Vec<_> = order
            .iter()
            .take(TOP_K)
            .map(|&i| serde_json::json!({"label": s.labels[i], "score": s.scores[i]}))
            .collect();
        serde_json::json!({
            "camera": self.camera,
            "frames": s.frames,
            "last_frame": {
                "index": s.last_index,
                "time": s.last_wall.map(|t| humantime::format_rfc3339_millis(t).to_string()),
                "age_s": s.last_at.map(|t| t.elapsed().as_secs_f64()),
            },
            "fps": s.fps,
            "degraded": s.trouble,
            "stale": s.last_at.is_none_or(|t| t.elapsed() > self.silent_after),
            "watched": s.watched.iter().zip(&s.watched_scores).map(|(&(i, t), score)| serde_json::json!({
                "label": s.labels.get(i),
                "threshold": t,
                "score": score,
            })).collect::<Vec<_>>(),
            "top": top,
            "active": s.active.iter().map(|(l, id)| serde_json::json!({"label": l, "id": id})).collect::<Vec<_>>(),
            "boxes": s.boxes.iter().map(|(l, r)| serde_json::json!({"label": s.labels.get(*l), "box": r.to_array()})).collect::<Vec<_>>(),
            "recent_events": s.recent,
            "history": s.history.json(),
        })
    }

    /// The last frame with its boxes, as a JPEG. The frame is copied under
    /// the lock and encoded after it, so that the camera loop (which takes
    /// the lock every frame) never waits for an encoding.
    pub(super) fn latest_frame_jpeg(&self) -> Option<Vec<u8>> {
        use image::ImageEncoder;
        let (rgb, width, height) = {
            let s = self.state.lock().ok()?;
            if s.frame.is_empty() {
                return None;
            }
            let img = &s.frame.image;
            let mut rgb = img.rgb().into_owned();
            for (l, r) in &s.boxes {
                use crate::watch::draw::{draw_box, draw_label};
                draw_box(&mut rgb, img.width, img.height, *r);
                let label = s.labels.get(*l).map_or("", String::as_str);
                draw_label(&mut rgb, img.width, img.height, *r, label);
            }
            (rgb, img.width, img.height)
        };
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
            .write_image(&rgb, width, height, image::ExtendedColorType::Rgb8)
            .ok()?;
        Some(out)
    }

    /// The snapshot of recent event `id`, if the service wrote one: only
    /// files named by its own events are ever read.
    pub(super) fn event_snapshot(&self, id: &str) -> Option<Vec<u8>> {
        let path = {
            let s = self.state.lock().ok()?;
            s.recent
                .iter()
                .find(|e| e.id == id)
                .and_then(|e| e.snapshot.clone())?
        };
        crate::bundle::read_regular(std::path::Path::new(&path), MAX_SNAPSHOT_BYTES, false).ok()
    }

    /// Removes the camera's series from `families`.
    pub(super) fn remove_metrics(&self, families: &Families) {
        self.metrics.remove(families);
    }

    /// Brings the counters read elsewhere up to date (before a scrape).
    pub(super) fn sync_metrics(&self) {
        self.metrics.sync();
    }
}

/// The server's view of events (a [`Sink`]).
pub struct StatusSink(pub Arc<Status>);

impl Sink for StatusSink {
    fn event(&mut self, r: &EventRecord, _line: &[u8], _label_on: bool) {
        let Ok(mut s) = self.0.state.lock() else {
            return;
        };
        match r.event {
            EventKind::Start => {
                self.0.metrics.event_started(&r.label);
                s.active.push((r.label.clone(), r.id.clone()));
            }
            EventKind::End => s.active.retain(|(_, id)| *id != r.id),
            EventKind::SourceLost => {
                self.0.metrics.source_lost.inc();
            }
            EventKind::SourceBack => {}
        }
        self.0.metrics.active.set(s.active.len() as i64);
        if s.recent.len() == RECENT_EVENTS {
            s.recent.pop_front();
        }
        s.recent.push_back(r.clone());
    }
}
