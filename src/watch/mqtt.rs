//! Events to an MQTT broker (`--mqtt mqtt://HOST:PORT/PREFIX`), for Home
//! Assistant and fleets sharing one broker:
//!
//! - `PREFIX/events`: each event as its JSON log line (QoS 1);
//! - `PREFIX/<label>/state`: `ON` / `OFF`, retained;
//! - `PREFIX/status`: `online`, retained; `offline` as the last will;
//! - `homeassistant/binary_sensor/<node>/<label>/config`: Home Assistant
//!   MQTT discovery, retained, one binary sensor per watched label.
//!
//! The broker being down never stops the loop: messages wait in a bounded
//! outbox (the oldest are dropped, and counted, when it is full) and go out
//! in order on reconnect. A message leaves the outbox only when the broker
//! acknowledged it, so a broker restart loses nothing that was queued.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, Incoming, LastWill, MqttOptions, Outgoing, QoS};

/// Messages waiting for the broker, at most.
pub const OUTBOX_CAPACITY: usize = 10_000;
/// Publishes in flight (sent, not yet acknowledged), at most.
const IN_FLIGHT: usize = 100;
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// `mqtt://[USER[:PASSWORD]@]HOST[:PORT][/PREFIX]` (user and password
/// percent-encoded, as in any URL; the password may come from a file
/// instead: [`MqttUrl::with_password_file`]).
#[derive(Clone, PartialEq, Eq)]
pub struct MqttUrl {
    pub host: String,
    pub port: u16,
    pub prefix: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// Never shows the password.
impl std::fmt::Debug for MqttUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttUrl")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("prefix", &self.prefix)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// `%XX` escapes decoded (a URL's user and password); `None` when an
/// escape is malformed or the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl MqttUrl {
    /// The password read from `path` (its first line), for the user the URL
    /// names: a password kept out of the config and the command line.
    pub fn with_password_file(mut self, path: &std::path::Path) -> Result<Self, String> {
        if self.username.is_none() {
            return Err(format!(
                "mqtt_password_file {}: the --mqtt URL names no user (mqtt://USER@HOST/...)",
                path.display()
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("mqtt_password_file {}: {e}", path.display()))?;
        if world_readable(path) {
            log::warn!(
                "mqtt_password_file {}: every user of this machine can read it (chmod 600)",
                path.display()
            );
        }
        let first = text.lines().next().unwrap_or("");
        if first.is_empty() {
            return Err(format!(
                "mqtt_password_file {}: its first line is empty (the password goes there)",
                path.display()
            ));
        }
        self.password = Some(first.to_string());
        Ok(self)
    }
}

/// Whether others than the owner and group may read `path`.
fn world_readable(path: &std::path::Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}

impl std::str::FromStr for MqttUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let shown = crate::watch::config::redacted(s);
        let bad = |why: &str| {
            format!(
                "--mqtt {shown:?}: {why} (expected mqtt://[USER[:PASSWORD]@]HOST[:PORT][/PREFIX])"
            )
        };
        if s.starts_with("mqtts://") {
            return Err(bad(
                "TLS (mqtts://) is not in this build; use mqtt:// on a trusted network",
            ));
        }
        let rest = s
            .strip_prefix("mqtt://")
            .ok_or_else(|| bad("not an mqtt:// URL"))?;
        let (authority, prefix) = rest.split_once('/').unwrap_or((rest, "clip-edge"));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (user, pass) = match u.split_once(':') {
                    Some((a, b)) => (a, Some(b)),
                    None => (u, None),
                };
                let dec = |v: &str| {
                    percent_decode(v).ok_or_else(|| bad("a bad %-escape in the user or password"))
                };
                if user.is_empty() {
                    return Err(bad("an empty user name"));
                }
                (Some(dec(user)?), pass.map(dec).transpose()?)
            }
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad("the port is not a number"))?),
            None => (hostport, 1883),
        };
        let prefix = prefix.trim_matches('/');
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if prefix.is_empty() || prefix.contains(['+', '#']) {
            return Err(bad("the prefix must be a topic without wildcards"));
        }
        Ok(MqttUrl {
            host: host.into(),
            port,
            prefix: prefix.into(),
            username,
            password,
        })
    }
}

/// A label as one topic level: lower case, `_` for anything but letters and digits.
pub fn slug(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[derive(Debug, Clone)]
struct Message {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
}

#[derive(Default)]
struct Outbox {
    queue: VecDeque<Message>,
    dropped: u64,
    stop: bool,
    /// Set by the connection thread whenever it is connected.
    connected: bool,
    published: u64,
}

/// The publisher: `publish` queues; a thread owns the connection.
pub struct Mqtt {
    url: MqttUrl,
    shared: Arc<(Mutex<Outbox>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Per (zone, label) a zone watches: its events open now.
    zone_open: Vec<(String, String, u32)>,
    /// When the labels' scores were last published.
    scores_at: Option<std::time::Instant>,
}

/// The labels' live scores are published at most this often.
pub const SCORES_EVERY: Duration = Duration::from_secs(5);

/// The largest snapshot published to Home Assistant's image entity.
pub const MAX_SNAPSHOT_BYTES: u64 = 4 << 20;

/// A zone's name and the labels it watches, for Home Assistant.
pub type ZoneLabels = (String, Vec<String>);

/// The retained Home Assistant discovery configs: one occupancy binary
/// sensor per watched label (`PREFIX/<label>/state`) and, with zones, one
/// per (zone, label) the zone watches (`PREFIX/<zone>/<label>/state`).
fn discovery(
    prefix: &str,
    node: &str,
    labels: &[String],
    zones: &[ZoneLabels],
    configuration_url: Option<&str>,
) -> Vec<Message> {
    let status = format!("{prefix}/status");
    let mut device = serde_json::json!({
        "identifiers": [format!("clip_edge_{}", slug(node))],
        "name": format!("clip-edge {node}"),
        "manufacturer": "clip-edge",
        "model": "CLIP zero-shot camera",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    if let Some(url) = configuration_url {
        device["configuration_url"] = url.into();
    }
    // Who sends the configs (Home Assistant shows it in the device's info).
    let origin = serde_json::json!({
        "name": "clip-edge",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    // One entity's retained config: its fields, plus what every one has.
    // `entity_id` is the id Home Assistant gives it at first
    // (`default_entity_id`; object_id was deprecated in 2025.10).
    let entity = |kind: &str,
                  key: &str,
                  unique_id: String,
                  entity_id: &str,
                  mut config: serde_json::Value| {
        config["unique_id"] = unique_id.into();
        config["default_entity_id"] = format!("{kind}.{entity_id}").into();
        config["availability_topic"] = status.clone().into();
        config["device"] = device.clone();
        config["origin"] = origin.clone();
        Message {
            topic: format!("homeassistant/{kind}/{}/{key}/config", slug(node)),
            payload: config.to_string().into_bytes(),
            retain: true,
        }
    };
    let sensor = |name: String, key: String, state_topic: String| {
        let id = format!("clip_edge_{}_{key}", slug(node));
        let config = serde_json::json!({
            "name": name,
            "state_topic": state_topic,
            "payload_on": "ON",
            "payload_off": "OFF",
            "device_class": "occupancy",
        });
        entity("binary_sensor", &key, id.clone(), &id, config)
    };
    let mut out = Vec::new();
    for label in labels {
        let s = slug(label);
        out.push(sensor(
            label.clone(),
            s.clone(),
            format!("{prefix}/{s}/state"),
        ));
        // An event entity fired on each start and end, and an image entity
        // showing the latest start's snapshot.
        let id = format!("clip_edge_{}_{s}", slug(node));
        let event = serde_json::json!({
            "name": format!("{label} event"),
            "state_topic": format!("{prefix}/{s}/event"),
            "event_types": ["start", "end"],
        });
        out.push(entity("event", &s, format!("{id}_event"), &id, event));
        let image = serde_json::json!({
            "name": format!("{label} snapshot"),
            "image_topic": format!("{prefix}/{s}/snapshot"),
            "content_type": "image/jpeg",
        });
        out.push(entity("image", &s, format!("{id}_snapshot"), &id, image));
        // The label's live score (for choosing a threshold).
        let score = serde_json::json!({
            "name": format!("{label} score"),
            "state_topic": format!("{prefix}/{s}/score"),
            "state_class": "measurement",
            "suggested_display_precision": 2,
        });
        out.push(entity("sensor", &s, format!("{id}_score"), &id, score));
    }
    for (zone, labels) in zones {
        for label in labels {
            let (z, s) = (slug(zone), slug(label));
            out.push(sensor(
                format!("{zone} {label}"),
                format!("{z}__{s}"),
                format!("{prefix}/{z}/{s}/state"),
            ));
        }
    }
    out
}

/// Counters for `--stats` and logs.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct MqttStats {
    pub published: u64,
    pub dropped: u64,
    pub queued: usize,
    pub connected: bool,
}

impl Mqtt {
    /// Starts the connection thread (it connects, and reconnects, by
    /// itself) and queues the discovery configs and initial `OFF` states of
    /// `labels` (and of each zone's labels). `node` names this device (a
    /// topic level).
    pub fn start(
        url: MqttUrl,
        labels: &[String],
        node: &str,
        zones: &[ZoneLabels],
        configuration_url: Option<&str>,
    ) -> Mqtt {
        let status = format!("{}/status", url.prefix);
        let mut opts = MqttOptions::new(format!("clip-edge-{node}"), url.host.clone(), url.port);
        opts.set_keep_alive(Duration::from_secs(15))
            .set_clean_session(true)
            .set_inflight(IN_FLIGHT as u16)
            .set_last_will(LastWill::new(&status, "offline", QoS::AtLeastOnce, true))
            .set_max_packet_size(64 << 10, MAX_SNAPSHOT_BYTES as usize + (4 << 10));
        if let Some(user) = &url.username {
            opts.set_credentials(user.clone(), url.password.clone().unwrap_or_default());
        }
        let shared = Arc::new((Mutex::new(Outbox::default()), Condvar::new()));
        let mut mqtt = Mqtt {
            url: url.clone(),
            shared: shared.clone(),
            thread: None,
            scores_at: None,
            zone_open: zones
                .iter()
                .flat_map(|(z, ls)| ls.iter().map(move |l| (z.clone(), l.clone(), 0)))
                .collect(),
        };
        // What a (re)connection announces first.
        let mut hello = vec![Message {
            topic: status.clone(),
            payload: b"online".to_vec(),
            retain: true,
        }];
        hello.extend(discovery(
            &url.prefix,
            node,
            labels,
            zones,
            configuration_url,
        ));
        // Configs this node left on the broker for labels (or zones) it no
        // longer watches are removed when seen (an empty retained payload).
        let ours = slug(node);
        let thread = std::thread::Builder::new()
            .name("clip-edge-mqtt".into())
            .spawn(move || connection_thread(opts, hello, ours, shared))
            .expect("spawn the MQTT thread");
        mqtt.thread = Some(thread);
        for label in labels {
            mqtt.state(label, false);
        }
        for i in 0..mqtt.zone_open.len() {
            let (z, l, _) = mqtt.zone_open[i].clone();
            mqtt.zone_state(&z, &l, false);
        }
        mqtt
    }

    /// The retained state of `label` in `zone`.
    fn zone_state(&self, zone: &str, label: &str, on: bool) {
        self.push(Message {
            topic: format!("{}/{}/{}/state", self.url.prefix, slug(zone), slug(label)),
            payload: if on { b"ON".to_vec() } else { b"OFF".to_vec() },
            retain: true,
        });
    }

    /// Follows an event of a zone: the (zone, label) sensor is on while
    /// any of its events is open.
    pub fn zone_event(&mut self, zone: &str, label: &str, start: bool) {
        let Some(i) = self
            .zone_open
            .iter()
            .position(|(z, l, _)| z == zone && l == label)
        else {
            return;
        };
        let n = &mut self.zone_open[i].2;
        *n = if start { *n + 1 } else { n.saturating_sub(1) };
        let on = *n > 0;
        self.zone_state(zone, label, on);
    }

    fn push(&self, m: Message) {
        let (lock, cv) = &*self.shared;
        let Ok(mut g) = lock.lock() else { return };
        if g.queue.len() >= OUTBOX_CAPACITY {
            g.queue.pop_front();
            g.dropped += 1;
            if g.dropped.is_power_of_two() {
                log::warn!("mqtt: outbox full, {} message(s) dropped so far", g.dropped);
            }
        }
        g.queue.push_back(m);
        drop(g);
        cv.notify_all();
    }

    /// One event (its log line) on `PREFIX/events`.
    pub fn event(&self, json_line: &[u8]) {
        self.push(Message {
            topic: format!("{}/events", self.url.prefix),
            payload: json_line.to_vec(),
            retain: false,
        });
    }

    /// An event entity's firing: `{"event_type": "start"|"end", ...}` on
    /// `PREFIX/<label>/event`.
    pub fn fire(&self, label: &str, event_type: &str, record_json: &serde_json::Value) {
        let mut payload = record_json.clone();
        payload["event_type"] = event_type.into();
        self.push(Message {
            topic: format!("{}/{}/event", self.url.prefix, slug(label)),
            payload: payload.to_string().into_bytes(),
            retain: false,
        });
    }

    /// The latest start's snapshot on `PREFIX/<label>/snapshot`, retained
    /// (Home Assistant's image entity). A snapshot still waiting replaces
    /// the one before it, so the outbox holds at most one per label.
    pub fn snapshot(&self, label: &str, path: &std::path::Path) {
        let jpeg = match crate::bundle::read_regular(path, MAX_SNAPSHOT_BYTES, false) {
            Ok(j) => j,
            Err(e) => {
                log::warn!("mqtt: snapshot not published: {e}");
                return;
            }
        };
        let topic = format!("{}/{}/snapshot", self.url.prefix, slug(label));
        let (lock, cv) = &*self.shared;
        if let Ok(mut g) = lock.lock() {
            g.queue.retain(|m| m.topic != topic);
        }
        cv.notify_all();
        self.push(Message {
            topic,
            payload: jpeg,
            retain: true,
        });
    }

    /// Each watched label's score on `PREFIX/<label>/score` (a sensor in
    /// Home Assistant), at most every [`SCORES_EVERY`].
    pub fn scores(&mut self, watched: &[crate::watch::Watched], scores: &[f32]) {
        if self.scores_at.is_some_and(|t| t.elapsed() < SCORES_EVERY) {
            return;
        }
        self.scores_at = Some(std::time::Instant::now());
        for (w, score) in watched.iter().zip(scores) {
            self.push(Message {
                topic: format!("{}/{}/score", self.url.prefix, slug(&w.label)),
                payload: format!("{score:.3}").into_bytes(),
                retain: false,
            });
        }
    }

    /// The retained state of `label`.
    pub fn state(&self, label: &str, on: bool) {
        self.push(Message {
            topic: format!("{}/{}/state", self.url.prefix, slug(label)),
            payload: if on { b"ON".to_vec() } else { b"OFF".to_vec() },
            retain: true,
        });
    }

    pub fn stats(&self) -> MqttStats {
        let g = self.shared.0.lock().expect("mqtt outbox");
        MqttStats {
            published: g.published,
            dropped: g.dropped,
            queued: g.queue.len(),
            connected: g.connected,
        }
    }

    /// Sends what is queued (waiting at most `grace` for the broker), then
    /// disconnects.
    pub fn finish(mut self, grace: Duration) -> MqttStats {
        // A clean exit says so (the last will covers the others).
        self.push(Message {
            topic: format!("{}/status", self.url.prefix),
            payload: b"offline".to_vec(),
            retain: true,
        });
        {
            let (lock, cv) = &*self.shared;
            if let Ok(mut g) = lock.lock() {
                g.stop = true;
            }
            cv.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let deadline = Instant::now() + grace;
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                log::warn!(
                    "mqtt: broker unreachable; {} message(s) not sent",
                    self.stats().queued
                );
            }
        }
        self.stats()
    }
}

/// Owns the connection: publishes the outbox in order while connected,
/// removes a message when the broker acknowledged it, puts unacknowledged
/// ones back at the front on a disconnection.
fn connection_thread(
    opts: MqttOptions,
    hello: Vec<Message>,
    ours: String,
    shared: Arc<(Mutex<Outbox>, Condvar)>,
) {
    let (client, mut conn) = Client::new(opts, IN_FLIGHT + hello.len() + 8);
    let (lock, _) = &*shared;
    // Sent messages, oldest first, with their packet id once known.
    let mut sent: VecDeque<(Message, Option<u16>)> = VecDeque::new();
    let mut connected = false;
    let mut backoff = Duration::from_millis(200);
    let mut announced_down = false;
    let mut disconnecting = false;
    loop {
        match conn.recv_timeout(Duration::from_millis(50)) {
            Ok(Ok(Event::Incoming(Incoming::ConnAck(_)))) => {
                connected = true;
                backoff = Duration::from_millis(200);
                if announced_down {
                    log::info!("mqtt: connected again");
                    announced_down = false;
                } else {
                    log::info!("mqtt: connected");
                }
                if let Ok(mut g) = lock.lock() {
                    g.connected = true;
                    // Announce first, then what was not acknowledged, then the rest.
                    while let Some((m, _)) = sent.pop_back() {
                        g.queue.push_front(m);
                    }
                    for m in hello.iter().rev() {
                        g.queue.push_front(m.clone());
                    }
                }
                // The retained configs under this node's discovery topics.
                if let Err(e) = client
                    .try_subscribe(format!("homeassistant/+/{ours}/+/config"), QoS::AtMostOnce)
                {
                    log::warn!("mqtt: cannot look for stale discovery configs: {e}");
                }
            }
            Ok(Ok(Event::Incoming(Incoming::Publish(p)))) => {
                let levels: Vec<&str> = p.topic.split('/').collect();
                let stale = levels.len() == 5
                    && levels[0] == "homeassistant"
                    && levels[2] == ours
                    && levels[4] == "config"
                    && !p.payload.is_empty()
                    && !hello.iter().any(|m| m.topic == p.topic);
                if stale {
                    log::info!(
                        "mqtt: removing {} (a label or zone no longer watched)",
                        p.topic
                    );
                    if let Ok(mut g) = lock.lock() {
                        g.queue.push_back(Message {
                            topic: p.topic.clone(),
                            payload: Vec::new(),
                            retain: true,
                        });
                    }
                }
            }
            Ok(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                if let Some(slot) = sent.iter_mut().find(|(_, id)| id.is_none()) {
                    slot.1 = Some(pkid);
                }
            }
            Ok(Ok(Event::Incoming(Incoming::PubAck(ack)))) => {
                if let Some(i) = sent.iter().position(|(_, id)| *id == Some(ack.pkid)) {
                    sent.remove(i);
                    if let Ok(mut g) = lock.lock() {
                        g.published += 1;
                    }
                }
            }
            Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) => return,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                if disconnecting {
                    return;
                }
                if connected || !announced_down {
                    if let rumqttc::ConnectionError::ConnectionRefused(code) = &e {
                        log::error!(
                            "mqtt: the broker refused the connection ({code:?}: check the user and password); retrying (events keep going to the log)"
                        );
                    } else {
                        log::warn!("mqtt: {e}; reconnecting (events keep going to the log)");
                    }
                    announced_down = true;
                }
                connected = false;
                if let Ok(mut g) = lock.lock() {
                    g.connected = false;
                    while let Some((m, _)) = sent.pop_back() {
                        g.queue.push_front(m);
                    }
                    if g.stop {
                        return;
                    }
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            Err(rumqttc::RecvTimeoutError::Timeout) => {}
            Err(rumqttc::RecvTimeoutError::Disconnected) => return,
        }
        if !connected || disconnecting {
            continue;
        }
        let Ok(mut g) = lock.lock() else { return };
        while sent.len() < IN_FLIGHT {
            let Some(m) = g.queue.pop_front() else { break };
            match client.try_publish(
                m.topic.clone(),
                QoS::AtLeastOnce,
                m.retain,
                m.payload.clone(),
            ) {
                Ok(()) => sent.push_back((m, None)),
                Err(_) => {
                    g.queue.push_front(m);
                    break;
                }
            }
        }
        if g.stop && g.queue.is_empty() && sent.is_empty() {
            drop(g);
            let _ = client.try_disconnect();
            disconnecting = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_files_empty_or_readable_by_all_are_named() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("clip-edge-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("pw");
        let url = || "mqtt://ha@127.0.0.1/x".parse::<MqttUrl>().unwrap();
        std::fs::write(&p, "\nsecond\n").unwrap();
        let e = url().with_password_file(&p).unwrap_err();
        assert!(e.contains("first line is empty") && e.contains("pw"), "{e}");
        std::fs::write(&p, "s3cret\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(world_readable(&p));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(!world_readable(&p));
        assert_eq!(
            url().with_password_file(&p).unwrap().password.as_deref(),
            Some("s3cret")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn zones_get_a_sensor_per_label_they_watch_and_follow_their_events() {
        let zones = vec![("Porch".to_string(), vec!["red star".to_string()])];
        let labels = vec!["red star".to_string(), "green square".to_string()];
        let d = discovery("cam", "pi", &labels, &zones, Some("http://10.0.0.5:8080/"));
        let topics: Vec<&str> = d.iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(
            topics,
            [
                "homeassistant/binary_sensor/pi/red_star/config",
                "homeassistant/event/pi/red_star/config",
                "homeassistant/image/pi/red_star/config",
                "homeassistant/sensor/pi/red_star/config",
                "homeassistant/binary_sensor/pi/green_square/config",
                "homeassistant/event/pi/green_square/config",
                "homeassistant/image/pi/green_square/config",
                "homeassistant/sensor/pi/green_square/config",
                "homeassistant/binary_sensor/pi/porch__red_star/config",
            ]
        );
        let e: serde_json::Value = serde_json::from_slice(&d[1].payload).unwrap();
        assert_eq!(e["state_topic"], "cam/red_star/event");
        assert_eq!(e["default_entity_id"], "event.clip_edge_pi_red_star");
        let i: serde_json::Value = serde_json::from_slice(&d[2].payload).unwrap();
        assert_eq!(i["image_topic"], "cam/red_star/snapshot");
        assert_eq!(i["content_type"], "image/jpeg");
        let sc: serde_json::Value = serde_json::from_slice(&d[3].payload).unwrap();
        assert_eq!(sc["state_topic"], "cam/red_star/score");
        assert_eq!(sc["default_entity_id"], "sensor.clip_edge_pi_red_star");
        let c: serde_json::Value = serde_json::from_slice(&d[8].payload).unwrap();
        assert_eq!(c["state_topic"], "cam/porch/red_star/state");
        assert_eq!(c["name"], "Porch red star");
        assert_eq!(
            c["default_entity_id"],
            "binary_sensor.clip_edge_pi_porch__red_star"
        );
        assert!(c.get("object_id").is_none());
        assert_eq!(c["origin"]["name"], "clip-edge");
        assert_eq!(c["device"]["configuration_url"], "http://10.0.0.5:8080/");
        // No broker: the states wait in the outbox, in order.
        let url: MqttUrl = "mqtt://127.0.0.1:9/cam".parse().unwrap();
        let mut m = Mqtt::start(url, &labels, "pi", &zones, None);
        m.zone_event("Porch", "red star", true);
        m.zone_event("Porch", "red star", true);
        m.zone_event("Porch", "red star", false);
        m.zone_event("Porch", "red star", false);
        m.zone_event("Yard", "red star", true);
        // Scores: one batch now, none again within SCORES_EVERY.
        let watched = [crate::watch::Watched {
            label: "red star".into(),
            index: 0,
            threshold: 0.5,
        }];
        m.scores(&watched, &[0.9731]);
        m.scores(&watched, &[0.5]);
        let scores: Vec<String> = m
            .shared
            .0
            .lock()
            .unwrap()
            .queue
            .iter()
            .filter(|q| q.topic == "cam/red_star/score")
            .map(|q| String::from_utf8(q.payload.clone()).unwrap())
            .collect();
        assert_eq!(scores, ["0.973"]);
        let states: Vec<(String, String)> = m
            .shared
            .0
            .lock()
            .unwrap()
            .queue
            .iter()
            .filter(|q| q.topic.starts_with("cam/porch/"))
            .map(|q| {
                (
                    q.topic.clone(),
                    String::from_utf8(q.payload.clone()).unwrap(),
                )
            })
            .collect();
        let on_off: Vec<&str> = states.iter().map(|(_, p)| p.as_str()).collect();
        assert_eq!(on_off, ["OFF", "ON", "ON", "ON", "OFF"]);
        m.finish(std::time::Duration::from_millis(10));
    }

    #[test]
    fn urls_parse_and_bad_ones_are_named() {
        let u: MqttUrl = "mqtt://127.0.0.1:1884/porch/cam".parse().unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.prefix.as_str()),
            ("127.0.0.1", 1884, "porch/cam")
        );
        let u: MqttUrl = "mqtt://broker".parse().unwrap();
        assert_eq!((u.port, u.prefix.as_str()), (1883, "clip-edge"));
        for bad in ["http://x", "mqtt://:1/x", "mqtt://h:port/x", "mqtt://h/a/#"] {
            let e = bad.parse::<MqttUrl>().unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        assert_eq!(slug("Red Star!"), "red_star_");
        let u: MqttUrl = "mqtt://homeassistant:p%40ss:w@192.168.1.5/ha"
            .parse()
            .unwrap();
        assert_eq!(
            (
                u.username.as_deref(),
                u.password.as_deref(),
                u.host.as_str(),
                u.port
            ),
            (Some("homeassistant"), Some("p@ss:w"), "192.168.1.5", 1883)
        );
        assert!(!format!("{u:?}").contains("p@ss"), "{u:?}");
        let u: MqttUrl = "mqtt://cam@broker:1884/x".parse().unwrap();
        assert_eq!((u.username.as_deref(), u.password), (Some("cam"), None));
        for bad in [
            "mqtt://u:hunter2@h:port/x",
            "mqtt://:hunter2@h/x",
            "mqtts://u:hunter2@h/x",
        ] {
            let e = bad.parse::<MqttUrl>().unwrap_err();
            assert!(!e.contains("hunter2") && e.contains("***"), "{e}");
        }
        let dir = std::env::temp_dir().join(format!("clip-edge-mqtt-pass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pass"), "s3cret\n").unwrap();
        let u: MqttUrl = "mqtt://cam@broker/x".parse().unwrap();
        let u = u.with_password_file(&dir.join("pass")).unwrap();
        assert_eq!(u.password.as_deref(), Some("s3cret"));
        let anon: MqttUrl = "mqtt://broker/x".parse().unwrap();
        assert!(anon
            .with_password_file(&dir.join("pass"))
            .unwrap_err()
            .contains("no user"));
    }
}
