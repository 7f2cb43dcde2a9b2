//! `/metrics`: one Prometheus registry (`prometheus-client`) whose series
//! carry a `camera` label; each camera's status holds its own handles on
//! them.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::watch::mqtt::{MqttStats, MqttStatsHandle};

type Labels = Vec<(String, String)>;
type F64Counter = Counter<f64, AtomicU64>;

/// A label value as the text format writes it: `prometheus-client` writes
/// values as given, and a label holding a `"`, a `\` or a line break (a
/// bundle's labels are free text) would make every scrape unreadable.
fn label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

/// Every metric the service exports, each a family over cameras.
pub struct Families {
    registry: Registry,
    frames: Family<Labels, Counter>,
    inferred: Family<Labels, Counter>,
    dropped: Family<Labels, Counter>,
    bad_frames: Family<Labels, Counter>,
    latency: Family<Labels, Histogram, fn() -> Histogram>,
    events: Family<Labels, Counter>,
    active: Family<Labels, Gauge>,
    source_lost: Family<Labels, Counter>,
    crops: Family<Labels, Counter>,
    encode_seconds: Family<Labels, F64Counter>,
    log_write_failures: Family<Labels, Counter>,
    snapshot_write_failures: Family<Labels, Counter>,
    snapshots_removed: Family<Labels, Counter>,
    mqtt_published: Family<Labels, Counter>,
    mqtt_dropped: Family<Labels, Counter>,
    mqtt_connect_failures: Family<Labels, Counter>,
    mqtt_connected: Family<Labels, Gauge>,
}

impl Families {
    /// The registry, with `info` (model, engine, version) as `build_info`;
    /// the MQTT publisher's series when `mqtt`.
    pub fn new(info: &[(&str, String)], mqtt: bool) -> Self {
        let mut registry = Registry::with_prefix("clip_edge");
        let f = Families {
            registry: Registry::default(),
            frames: Family::default(),
            inferred: Family::default(),
            dropped: Family::default(),
            bad_frames: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            events: Family::default(),
            active: Family::default(),
            source_lost: Family::default(),
            crops: Family::default(),
            encode_seconds: Family::default(),
            log_write_failures: Family::default(),
            snapshot_write_failures: Family::default(),
            snapshots_removed: Family::default(),
            mqtt_published: Family::default(),
            mqtt_dropped: Family::default(),
            mqtt_connect_failures: Family::default(),
            mqtt_connected: Family::default(),
        };
        let r = &mut registry;
        r.register(
            "encode_seconds",
            "Time in the image encoder (over crops_total: the time a crop)",
            f.encode_seconds.clone(),
        );
        r.register(
            "log_write_failures",
            "Event lines the disk refused (they wait in memory)",
            f.log_write_failures.clone(),
        );
        r.register(
            "snapshot_write_failures",
            "Snapshots the disk refused (the event says snapshot_error)",
            f.snapshot_write_failures.clone(),
        );
        r.register(
            "snapshots_removed",
            "Snapshots removed to keep the folder within its size and age",
            f.snapshots_removed.clone(),
        );
        r.register(
            "crops",
            "Regions of frames classified (with --regions or zones)",
            f.crops.clone(),
        );
        r.register("frames", "Frames taken from the source", f.frames.clone());
        r.register(
            "inferred_frames",
            "Frames the image encoder ran on",
            f.inferred.clone(),
        );
        r.register(
            "dropped_frames",
            "Frames a live source dropped because the loop fell behind",
            f.dropped.clone(),
        );
        r.register(
            "bad_frames",
            "Frames that could not be used (undecodable, or of a size the zones do not fit)",
            f.bad_frames.clone(),
        );
        r.register(
            "inference_latency_seconds",
            "Preprocess, encode and score of one frame",
            f.latency.clone(),
        );
        r.register("events", "Events started, by label", f.events.clone());
        r.register("active_events", "Events open now", f.active.clone());
        r.register(
            "source_reconnects",
            "Times the source was lost (and reopened, with backoff)",
            f.source_lost.clone(),
        );
        if mqtt {
            f.register_mqtt(r);
        }
        let info: Labels = info
            .iter()
            .map(|(k, v)| (k.to_string(), label_value(v)))
            .collect();
        r.register("build", "Model, engine and version", Info::new(info));
        Families { registry, ..f }
    }

    fn register_mqtt(&self, r: &mut Registry) {
        let f = self;
        r.register(
            "mqtt_published",
            "Messages the MQTT broker acknowledged",
            f.mqtt_published.clone(),
        );
        r.register(
            "mqtt_dropped",
            "Messages dropped from a full MQTT outbox",
            f.mqtt_dropped.clone(),
        );
        r.register(
            "mqtt_connect_failures",
            "MQTT connection attempts that failed (login refused, certificate rejected, broker unreachable)",
            f.mqtt_connect_failures.clone(),
        );
        r.register(
            "mqtt_connected",
            "1 while connected to the MQTT broker",
            f.mqtt_connected.clone(),
        );
    }

    /// The text `/metrics` answers with.
    pub fn text(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("metrics encode to a String");
        out
    }
}

/// One camera's handles on the families.
pub struct Metrics {
    camera: String,
    pub frames: Counter,
    pub inferred: Counter,
    pub dropped: Counter,
    pub bad_frames: Counter,
    pub latency: Histogram,
    events: Family<Labels, Counter>,
    /// The labels whose events this camera counted (their series go with it).
    event_labels: Mutex<Vec<String>>,
    pub active: Gauge,
    pub source_lost: Counter,
    pub crops: Counter,
    pub encode_seconds: F64Counter,
    pub log_write_failures: Counter,
    pub snapshot_write_failures: Counter,
    pub snapshots_removed: Counter,
    mqtt: Option<MqttMetrics>,
}

impl Metrics {
    /// `camera`'s series (created at zero); `mqtt`: its publisher's
    /// counters, read at each scrape.
    pub fn new(f: &Families, camera: &str, mqtt: Option<MqttStatsHandle>) -> Self {
        let l: Labels = vec![("camera".into(), camera.into())];
        Metrics {
            camera: camera.to_string(),
            frames: f.frames.get_or_create_owned(&l),
            inferred: f.inferred.get_or_create_owned(&l),
            dropped: f.dropped.get_or_create_owned(&l),
            bad_frames: f.bad_frames.get_or_create_owned(&l),
            latency: f.latency.get_or_create_owned(&l),
            events: f.events.clone(),
            event_labels: Mutex::new(Vec::new()),
            active: f.active.get_or_create_owned(&l),
            source_lost: f.source_lost.get_or_create_owned(&l),
            crops: f.crops.get_or_create_owned(&l),
            encode_seconds: f.encode_seconds.get_or_create_owned(&l),
            log_write_failures: f.log_write_failures.get_or_create_owned(&l),
            snapshot_write_failures: f.snapshot_write_failures.get_or_create_owned(&l),
            snapshots_removed: f.snapshots_removed.get_or_create_owned(&l),
            mqtt: mqtt.map(|source| MqttMetrics {
                source,
                published: f.mqtt_published.get_or_create_owned(&l),
                dropped: f.mqtt_dropped.get_or_create_owned(&l),
                connect_failures: f.mqtt_connect_failures.get_or_create_owned(&l),
                connected: f.mqtt_connected.get_or_create_owned(&l),
                seen: Mutex::new(MqttStats::default()),
            }),
        }
    }

    /// An event of `label` started.
    pub fn event_started(&self, label: &str) {
        let label = label_value(label);
        if let Ok(mut seen) = self.event_labels.lock() {
            if !seen.contains(&label) {
                seen.push(label.clone());
            }
        }
        self.events.get_or_create(&self.event_series(label)).inc();
    }

    fn event_series(&self, label: String) -> Labels {
        vec![
            ("camera".to_string(), self.camera.clone()),
            ("label".to_string(), label),
        ]
    }

    /// Removes the camera's series (gone from the config after a reload).
    pub fn remove(&self, f: &Families) {
        let l: Labels = vec![("camera".into(), self.camera.clone())];
        f.frames.remove(&l);
        f.inferred.remove(&l);
        f.dropped.remove(&l);
        f.bad_frames.remove(&l);
        f.latency.remove(&l);
        f.active.remove(&l);
        f.source_lost.remove(&l);
        f.crops.remove(&l);
        f.encode_seconds.remove(&l);
        f.log_write_failures.remove(&l);
        f.snapshot_write_failures.remove(&l);
        f.snapshots_removed.remove(&l);
        f.mqtt_published.remove(&l);
        f.mqtt_dropped.remove(&l);
        f.mqtt_connect_failures.remove(&l);
        f.mqtt_connected.remove(&l);
        if let Ok(seen) = self.event_labels.lock() {
            for label in seen.iter() {
                f.events.remove(&self.event_series(label.clone()));
            }
        }
    }

    /// Brings the MQTT counters up to date (before a scrape).
    pub fn sync(&self) {
        if let Some(m) = &self.mqtt {
            m.sync();
        }
    }
}

/// The MQTT publisher's counters, read when `/metrics` is scraped.
struct MqttMetrics {
    source: MqttStatsHandle,
    published: Counter,
    dropped: Counter,
    connect_failures: Counter,
    connected: Gauge,
    /// What the counters were last raised to.
    seen: Mutex<MqttStats>,
}

impl MqttMetrics {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The label values of one sample line, unescaped; `None` when the line
    /// does not parse as the text format writes them.
    fn label_values(line: &str) -> Option<Vec<String>> {
        let inner = line.split_once('{')?.1;
        let mut values = Vec::new();
        let mut chars = inner.chars();
        loop {
            // name="
            let mut c = chars.next()?;
            if c == '}' {
                return Some(values);
            }
            while c != '=' {
                if !(c.is_ascii_alphanumeric() || c == '_' || c == ',') {
                    return None;
                }
                c = chars.next()?;
            }
            if chars.next()? != '"' {
                return None;
            }
            let mut v = String::new();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => match chars.next()? {
                        'n' => v.push('\n'),
                        c @ ('\\' | '"') => v.push(c),
                        _ => return None,
                    },
                    '\n' => return None,
                    c => v.push(c),
                }
            }
            values.push(v);
        }
    }

    #[test]
    fn free_text_labels_keep_the_scrape_readable_and_go_with_their_camera() {
        let f = Families::new(&[("bundle", "/srv/a \"b\"\\c".into())], false);
        let m = Metrics::new(&f, "door", None);
        let label = "12\" pizza\\slice\nsecond line";
        m.event_started(label);
        m.event_started(label);
        let text = f.text();
        let mut found = (false, false);
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let values = label_values(line).unwrap_or_else(|| panic!("unreadable: {line}"));
            found.0 |= line.starts_with("clip_edge_events_total")
                && values == ["door", label]
                && line.ends_with(" 2");
            found.1 |= values.iter().any(|v| v == "/srv/a \"b\"\\c");
        }
        assert!(found.0 && found.1, "{text}");
        m.remove(&f);
        assert!(
            !f.text().contains("clip_edge_events_total{"),
            "{}",
            f.text()
        );
    }
}
