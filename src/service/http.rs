//! The status server (`watch --http ADDR:PORT`, off by default): `/healthz`,
//! `/metrics` (Prometheus text, `prometheus-client`), `/api/state` (JSON),
//! `/snapshot.jpg` (the latest frame) and `/` (a status page: plain HTML
//! and a little JavaScript, no external assets). Served by `tiny_http` on
//! its own thread from a state the frame loop updates in place (no
//! allocation per frame).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use super::history::History;
use crate::watch::events::{EventKind, EventRecord};
use crate::watch::mqtt::{MqttStats, MqttStatsSource};
use crate::watch::regions::Rect;
use crate::watch::source::Frame;
use crate::watch::{Sink, Watcher};

/// Events kept for the page and `/api/state`.
pub const RECENT_EVENTS: usize = 20;
/// Labels listed with their scores in `/api/state`.
pub const TOP_K: usize = 5;
/// The largest snapshot `/snapshots/ID.jpg` serves.
const MAX_SNAPSHOT_BYTES: u64 = 16 << 20;

struct Metrics {
    registry: Registry,
    frames: Counter,
    inferred: Counter,
    dropped: Counter<u64, AtomicU64>,
    latency: Histogram,
    events: Family<Vec<(String, String)>, Counter>,
    active: Gauge,
    source_lost: Counter,
    crops: Counter,
    encode_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    log_write_failures: Counter,
    snapshot_write_failures: Counter,
    snapshots_removed: Counter,
    mqtt: Option<MqttMetrics>,
}

/// The MQTT publisher's counters, read when `/metrics` is scraped.
struct MqttMetrics {
    source: MqttStatsSource,
    published: Counter,
    dropped: Counter,
    connect_failures: Counter,
    connected: Gauge,
    /// What the counters were last raised to.
    seen: Mutex<MqttStats>,
}

impl MqttMetrics {
    fn register(registry: &mut Registry, source: MqttStatsSource) -> Self {
        let m = MqttMetrics {
            source,
            published: Counter::default(),
            dropped: Counter::default(),
            connect_failures: Counter::default(),
            connected: Gauge::default(),
            seen: Mutex::new(MqttStats::default()),
        };
        registry.register(
            "mqtt_published",
            "Messages the MQTT broker acknowledged",
            m.published.clone(),
        );
        registry.register(
            "mqtt_dropped",
            "Messages dropped from a full MQTT outbox",
            m.dropped.clone(),
        );
        registry.register(
            "mqtt_connect_failures",
            "MQTT connection attempts that failed (login refused, certificate rejected, broker unreachable)",
            m.connect_failures.clone(),
        );
        registry.register(
            "mqtt_connected",
            "1 while connected to the MQTT broker",
            m.connected.clone(),
        );
        m
    }

    fn sync(&self) {
        let now = self.source.get();
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        self.published
            .inc_by(now.published.saturating_sub(seen.published));
        self.dropped
            .inc_by(now.dropped.saturating_sub(seen.dropped));
        self.connect_failures
            .inc_by(now.connect_failures.saturating_sub(seen.connect_failures));
        self.connected.set(i64::from(now.connected));
        *seen = now;
    }
}

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

/// What the server reads and the loop writes.
pub struct Status {
    state: Mutex<State>,
    metrics: Metrics,
    silent_after: Duration,
}

impl Status {
    /// `labels`: the bundle's; `silent_after`: how long without a frame
    /// makes `/healthz` answer 503; `mqtt`: the publisher's counters, when
    /// events go to a broker.
    pub fn new(
        labels: Vec<String>,
        info: &[(&str, String)],
        silent_after: Duration,
        mqtt: Option<MqttStatsSource>,
    ) -> Arc<Self> {
        let mut registry = Registry::with_prefix("clip_edge");
        let mqtt = mqtt.map(|m| MqttMetrics::register(&mut registry, m));
        let frames = Counter::default();
        let inferred = Counter::default();
        let dropped = Counter::<u64, AtomicU64>::default();
        let latency = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        let events = Family::<Vec<(String, String)>, Counter>::default();
        let active = Gauge::default();
        let source_lost = Counter::default();
        let crops = Counter::default();
        let encode_seconds = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "encode_seconds",
            "Time in the image encoder (over crops_total: the time a crop)",
            encode_seconds.clone(),
        );
        let log_write_failures = Counter::default();
        let snapshot_write_failures = Counter::default();
        let snapshots_removed = Counter::default();
        registry.register(
            "log_write_failures",
            "Event lines the disk refused (they wait in memory)",
            log_write_failures.clone(),
        );
        registry.register(
            "snapshot_write_failures",
            "Snapshots the disk refused (the event says snapshot_error)",
            snapshot_write_failures.clone(),
        );
        registry.register(
            "snapshots_removed",
            "Snapshots removed to keep the folder within its size and age",
            snapshots_removed.clone(),
        );
        registry.register(
            "crops",
            "Regions of frames classified (with --regions or zones)",
            crops.clone(),
        );
        registry.register("frames", "Frames taken from the source", frames.clone());
        registry.register(
            "inferred_frames",
            "Frames the image encoder ran on",
            inferred.clone(),
        );
        registry.register(
            "dropped_frames",
            "Frames a live source dropped because the loop fell behind",
            dropped.clone(),
        );
        registry.register(
            "inference_latency_seconds",
            "Preprocess, encode and score of one frame",
            latency.clone(),
        );
        registry.register("events", "Events started, by label", events.clone());
        registry.register("active_events", "Events open now", active.clone());
        registry.register(
            "source_reconnects",
            "Times the source was lost (and reopened, with backoff)",
            source_lost.clone(),
        );
        let info: Vec<(String, String)> = info
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        registry.register("build", "Model, engine and version", Info::new(info));
        let n = labels.len();
        Arc::new(Status {
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
            metrics: Metrics {
                registry,
                frames,
                inferred,
                dropped,
                latency,
                events,
                active,
                source_lost,
                crops,
                encode_seconds,
                log_write_failures,
                snapshot_write_failures,
                snapshots_removed,
                mqtt,
            },
            silent_after,
        })
    }

    /// After each frame (`frame`) and while idle (`None`).
    pub fn observe(&self, w: &Watcher<'_>, frame: Option<&Frame>) {
        let Some(frame) = frame else { return };
        let Ok(mut s) = self.state.lock() else { return };
        let st = &w.stats;
        if st.frames < s.frames {
            // A reload's new watcher counts from zero again.
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
        if s.trouble.as_deref() != w.trouble_now() {
            s.trouble = w.trouble_now().map(str::to_string);
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
        let scores = &w.engine().scores;
        if s.scores.len() != scores.len() {
            // A reload swapped in a bundle with other labels.
            s.labels = w.engine().bundle.labels().to_vec();
            s.scores.resize(scores.len(), 0.0);
        }
        s.scores.copy_from_slice(scores);
        s.frame.copy_from(frame);
    }

    fn healthy(&self) -> bool {
        let s = self.state.lock().expect("status");
        s.last_at.is_some_and(|t| t.elapsed() <= self.silent_after)
    }

    /// Why the loop runs degraded, if it does.
    fn trouble(&self) -> Option<String> {
        self.state.lock().ok()?.trouble.clone()
    }

    fn state_json(&self) -> serde_json::Value {
        let s = self.state.lock().expect("status");
        let mut order: Vec<usize> = (0..s.scores.len()).collect();
        order.sort_by(|&a, &b| s.scores[b].total_cmp(&s.scores[a]));
        let top: Vec<_> = order
            .iter()
            .take(TOP_K)
            .map(|&i| serde_json::json!({"label": s.labels[i], "score": s.scores[i]}))
            .collect();
        serde_json::json!({
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

    fn snapshot_jpeg(&self) -> Option<Vec<u8>> {
        use image::ImageEncoder;
        let s = self.state.lock().ok()?;
        if s.frame.is_empty() {
            return None;
        }
        let img = &s.frame.image;
        let mut rgb = img.rgb();
        for (l, r) in &s.boxes {
            use crate::watch::draw::{draw_box, draw_label};
            draw_box(rgb.to_mut(), img.width, img.height, *r);
            let label = s.labels.get(*l).map_or("", String::as_str);
            draw_label(rgb.to_mut(), img.width, img.height, *r, label);
        }
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
            .write_image(&rgb, img.width, img.height, image::ExtendedColorType::Rgb8)
            .ok()?;
        Some(out)
    }

    /// The snapshot of recent event `id`, if the service wrote one: only
    /// files named by its own events are ever read.
    fn event_snapshot(&self, id: &str) -> Option<Vec<u8>> {
        let path = {
            let s = self.state.lock().ok()?;
            s.recent
                .iter()
                .find(|e| e.id == id)
                .and_then(|e| e.snapshot.clone())?
        };
        crate::bundle::read_regular(std::path::Path::new(&path), MAX_SNAPSHOT_BYTES, false).ok()
    }

    fn metrics_text(&self) -> String {
        if let Some(m) = &self.metrics.mqtt {
            m.sync();
        }
        let mut out = String::new();
        encode(&mut out, &self.metrics.registry).expect("metrics encode to a String");
        out
    }
}

/// The server's view of events (a [`Sink`]).
pub struct StatusSink(pub Arc<Status>);

impl Sink for StatusSink {
    fn event(&mut self, _watched: usize, r: &EventRecord, _line: &[u8], _label_on: bool) {
        let Ok(mut s) = self.0.state.lock() else {
            return;
        };
        match r.event {
            EventKind::Start => {
                self.0
                    .metrics
                    .events
                    .get_or_create(&vec![("label".to_string(), r.label.clone())])
                    .inc();
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

/// Starts serving `status` on `addr`; the thread lives as long as the process.
pub fn serve(addr: SocketAddr, status: Arc<Status>) -> Result<SocketAddr, String> {
    let server = tiny_http::Server::http(addr).map_err(|e| format!("--http {addr}: {e}"))?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| format!("--http {addr}: not an IP address"))?;
    std::thread::Builder::new()
        .name("clip-edge-http".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                respond(&status, req);
            }
        })
        .map_err(|e| format!("--http {addr}: {e}"))?;
    log::info!("status page on http://{bound}/");
    Ok(bound)
}

fn header(k: &str, v: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).expect("a valid header")
}

fn respond(status: &Status, req: tiny_http::Request) {
    use tiny_http::Response;
    let path = req.url().split('?').next().unwrap_or("").to_string();
    let ok = |body: Vec<u8>, ctype: &str| {
        Response::from_data(body)
            .with_header(header("Content-Type", ctype))
            .with_header(header("Cache-Control", "no-store"))
    };
    let r = match (req.method(), path.as_str()) {
        (tiny_http::Method::Get, "/healthz") => {
            if status.healthy() {
                match status.trouble() {
                    // Frames flow and events are delivered: up, but say why
                    // something is not kept.
                    Some(why) => ok(format!("degraded: {why}\n").into_bytes(), "text/plain"),
                    None => ok(b"ok\n".to_vec(), "text/plain"),
                }
            } else {
                ok(b"no frame lately\n".to_vec(), "text/plain").with_status_code(503)
            }
        }
        (tiny_http::Method::Get, "/metrics") => ok(
            status.metrics_text().into_bytes(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        (tiny_http::Method::Get, "/api/state") => ok(
            status.state_json().to_string().into_bytes(),
            "application/json",
        ),
        (tiny_http::Method::Get, "/snapshot.jpg") => match status.snapshot_jpeg() {
            Some(j) => ok(j, "image/jpeg"),
            None => ok(b"no frame yet\n".to_vec(), "text/plain").with_status_code(404),
        },
        (tiny_http::Method::Get, "/") => ok(PAGE.as_bytes().to_vec(), "text/html; charset=utf-8"),
        (tiny_http::Method::Get, p) if p.starts_with("/snapshots/") => {
            let id = p["/snapshots/".len()..].strip_suffix(".jpg").unwrap_or("");
            match status.event_snapshot(id) {
                Some(j) => ok(j, "image/jpeg"),
                None => ok(b"no such snapshot\n".to_vec(), "text/plain").with_status_code(404),
            }
        }
        (tiny_http::Method::Get, _) => {
            ok(b"not found\n".to_vec(), "text/plain").with_status_code(404)
        }
        _ => ok(b"GET only\n".to_vec(), "text/plain").with_status_code(405),
    };
    if let Err(e) = req.respond(r) {
        log::debug!("http: {e}");
    }
}

/// The status page: a banner when the feed is stale, the latest frame (with
/// the open events' boxes), the watched labels with their thresholds and
/// live scores, a chart of fps and latency over the last ten minutes, the
/// top labels, and recent events with their snapshots, times (the
/// browser's) and durations. No external assets; fits a phone.
const PAGE: &str = include_str!("page.html");
