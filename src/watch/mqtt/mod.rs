//! Events to an MQTT broker (`--mqtt mqtt[s]://HOST:PORT/PREFIX`), for Home
//! Assistant and fleets sharing one broker:
//!
//! - `PREFIX/events`: each event as its JSON log line (QoS 1);
//! - `PREFIX/<label>/state`: `ON` / `OFF`, retained;
//! - `PREFIX/status`: `online`, retained; `offline` as the last will, and
//!   while the camera's source is lost;
//! - `PREFIX/<label>/{event,snapshot,score}`: the label's event, its last
//!   start's JPEG (retained) and its live score;
//! - `homeassistant/<kind>/<node>/<key>/config`: Home Assistant MQTT
//!   discovery, retained ([`discovery`]).
//!
//! The broker being down never stops the loop: messages wait in a bounded
//! outbox (the oldest are dropped, and counted, when it is full) and go out
//! in order on reconnect. A message leaves the outbox only when the broker
//! acknowledged it, so a broker restart loses nothing that was queued.

use crate::watch::SettingError;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{
    Client, Connection, Event, Incoming, LastWill, MqttOptions, Outgoing, QoS, TlsConfiguration,
    Transport,
};

mod connection;
mod discovery;
mod outbox;
mod tls;
mod url;

pub use connection::probe;
use connection::*;
use discovery::discovery;
pub use discovery::ZoneLabels;
use outbox::*;
pub use tls::{client_config, TlsFiles};
pub use url::MqttUrl;

/// Messages waiting for the broker, at most.
pub const OUTBOX_CAPACITY: usize = 10_000;
/// Publishes in flight (sent, not yet acknowledged), at most.
const IN_FLIGHT: usize = 100;
/// How long a connection's handshake, or one write to the broker, may
/// take.
const NETWORK_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Shortest wait before reconnecting.
const MIN_BACKOFF: Duration = Duration::from_millis(200);

/// How long a connection must have held for the next reconnection to
/// wait only [`MIN_BACKOFF`].
const CONNECTION_HELD: Duration = Duration::from_secs(10);

/// A label as one topic level and Home Assistant id: lower case ASCII
/// letters and digits as they are, `u` and the hex code point for any other
/// letter or digit (`行人` → `u884cu4eba`, so labels in other scripts stay
/// apart), `_` for anything else.
pub fn slug(label: &str) -> String {
    let mut out = String::with_capacity(label.len());
    for c in label.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if c.is_alphanumeric() {
            out.push_str(&format!("u{:x}", c as u32));
        } else {
            out.push('_');
        }
    }
    out
}

/// The first two of `names` that are one topic level as slugs (`what`
/// names them in the error), or an empty slug.
pub fn check_slugs<'a>(
    what: &str,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<(), SettingError> {
    let mut seen: Vec<(&str, String)> = Vec::new();
    for n in names {
        let s = slug(n);
        if s.is_empty() {
            return Err(format!("{what} {n:?}: empty as an MQTT topic level").into());
        }
        if let Some((other, _)) = seen.iter().find(|(o, x)| *x == s && *o != n) {
            return Err(format!(
                "{what}s {other:?} and {n:?}: one name in MQTT topics and Home Assistant ids ({s:?}); keep one"
            ).into());
        }
        seen.push((n, s));
    }
    Ok(())
}

/// The publisher: `publish` queues; a thread owns the connection.
pub struct Mqtt {
    url: MqttUrl,
    shared: Arc<(Mutex<Outbox>, Condvar)>,
    /// The connection thread (it reads what the broker says) and the
    /// publisher (it sends the outbox in order while connected).
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Per (zone, label) a zone watches: its events open now.
    zone_open: Vec<(String, String, u32)>,
    /// When the labels' scores were last published.
    scores_at: Option<std::time::Instant>,
    /// The discovery configs this device announces (a retired device
    /// empties them).
    configs: Vec<String>,
}

/// The labels' live scores are published at most this often.
pub const SCORES_EVERY: Duration = Duration::from_secs(5);

/// The largest snapshot published to Home Assistant's image entity.
pub const MAX_SNAPSHOT_BYTES: u64 = 4 << 20;

/// Counters for `--stats` and logs.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct MqttStats {
    pub published: u64,
    pub dropped: u64,
    pub queued: usize,
    pub connected: bool,
    /// Connection attempts that failed: refused logins, certificates the
    /// broker or this client rejected, an unreachable broker.
    pub connect_failures: u64,
}

/// Reads a publisher's counters from elsewhere (the status page's metrics).
#[derive(Clone)]
pub struct MqttStatsHandle(Arc<(Mutex<Outbox>, Condvar)>);

impl MqttStatsHandle {
    pub fn get(&self) -> MqttStats {
        stats_of(&self.0 .0)
    }
}

fn stats_of(outbox: &Mutex<Outbox>) -> MqttStats {
    match outbox.lock() {
        Ok(g) => MqttStats {
            published: g.published,
            dropped: g.dropped,
            queued: g.queue.len(),
            connected: g.connected,
            connect_failures: g.connect_failures,
        },
        Err(_) => MqttStats::default(),
    }
}

impl Mqtt {
    /// Starts the connection thread (it connects, and reconnects, by
    /// itself) and queues the discovery configs and initial `OFF` states of
    /// `labels` (and of each zone's labels). `node` names this device (a
    /// topic level). `tls` is the configuration an `mqtts://` URL connects
    /// with ([`client_config`]).
    pub fn start(
        url: MqttUrl,
        tls: Option<Arc<rustls::ClientConfig>>,
        labels: &[String],
        node: &str,
        zones: &[ZoneLabels],
        configuration_url: Option<&str>,
    ) -> Mqtt {
        let status = format!("{}/status", url.prefix);
        let mut opts = options(&url, tls, format!("clip-edge-{node}"));
        opts.set_last_will(LastWill::new(&status, "offline", QoS::AtLeastOnce, true));
        let shared = Arc::new((Mutex::new(Outbox::default()), Condvar::new()));
        let mut mqtt = Mqtt {
            url: url.clone(),
            shared: shared.clone(),
            threads: Vec::new(),
            scores_at: None,
            configs: Vec::new(),
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
            expires: None,
        }];
        hello.extend(discovery(
            &url.prefix,
            node,
            labels,
            zones,
            configuration_url,
        ));
        mqtt.configs = hello.iter().skip(1).map(|m| m.topic.clone()).collect();
        // Configs this node left on the broker for labels (or zones) it no
        // longer watches are removed when seen (an empty retained payload).
        let ours = slug(node);
        let peer = Peer::of(&url);
        let (client, mut conn) = Client::new(opts, IN_FLIGHT + hello.len() + 8);
        // A connection's handshake and each write (a snapshot of a few MB
        // on a slow link) may take this long before it counts as failed.
        let mut network = rumqttc::NetworkOptions::new();
        network.set_connection_timeout(NETWORK_TIMEOUT.as_secs());
        conn.eventloop.set_network_options(network);
        let reader = {
            let (client, shared) = (client.clone(), shared.clone());
            std::thread::Builder::new()
                .name("clip-edge-mqtt".into())
                .spawn(move || connection_thread(conn, client, hello, ours, shared, peer))
                .expect("spawn the MQTT thread")
        };
        let publisher = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("clip-edge-mqtt-out".into())
                .spawn(move || publisher_thread(client, shared))
                .expect("spawn the MQTT publisher thread")
        };
        mqtt.threads = vec![reader, publisher];
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
            expires: None,
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

    /// `change` applied to the outbox, then the publisher woken.
    fn with_outbox(&self, change: impl FnOnce(&mut Outbox)) {
        let (lock, cv) = &*self.shared;
        let Ok(mut g) = lock.lock() else { return };
        change(&mut g);
        drop(g);
        cv.notify_all();
    }

    fn push(&self, m: Message) {
        self.with_outbox(|g| g.push_back(m));
    }

    /// The camera's source lost (`false`) or back: its availability says
    /// `offline` while it is lost (Home Assistant shows its entities as
    /// unavailable, not as seeing nothing), `online` again once it is back.
    pub fn source_available(&self, available: bool) {
        let status = format!("{}/status", self.url.prefix);
        let payload: &[u8] = if available { b"online" } else { b"offline" };
        self.with_outbox(|g| {
            g.source_lost = !available;
            g.push_back(Message {
                topic: status,
                payload: payload.to_vec(),
                retain: true,
                expires: None,
            });
        });
    }

    fn push_latest(&self, m: Message) {
        self.with_outbox(|g| g.push_latest(m));
    }

    /// One event (its log line) on `PREFIX/events`.
    pub fn event(&self, json_line: &[u8]) {
        self.push(Message {
            topic: format!("{}/events", self.url.prefix),
            payload: json_line.to_vec(),
            retain: false,
            expires: None,
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
            expires: Some(Instant::now() + FIRING_MAX_AGE),
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
        self.push_latest(Message {
            topic,
            payload: jpeg,
            retain: true,
            expires: None,
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
            self.push_latest(Message {
                topic: format!("{}/{}/score", self.url.prefix, slug(&w.label)),
                payload: format!("{score:.3}").into_bytes(),
                retain: false,
                expires: None,
            });
        }
    }

    /// The retained state of `label`.
    pub fn state(&self, label: &str, on: bool) {
        self.push(Message {
            topic: format!("{}/{}/state", self.url.prefix, slug(label)),
            payload: if on { b"ON".to_vec() } else { b"OFF".to_vec() },
            retain: true,
            expires: None,
        });
    }

    pub fn stats(&self) -> MqttStats {
        stats_of(&self.shared.0)
    }

    /// A handle that reads [`Mqtt::stats`] from another thread.
    pub fn stats_handle(&self) -> MqttStatsHandle {
        MqttStatsHandle(self.shared.clone())
    }

    /// Sends what is queued (waiting at most `grace` for the broker), then
    /// disconnects.
    pub fn finish(self, grace: Duration) -> MqttStats {
        self.stop();
        self.wait(grace)
    }

    /// A camera gone from the config (a reload removed or renamed it): its
    /// device leaves Home Assistant (each discovery config emptied, and its
    /// retained states, snapshots and availability cleared), then as
    /// [`Mqtt::finish`].
    pub fn retire(self, grace: Duration) -> MqttStats {
        let (lock, _) = &*self.shared;
        let retained: Vec<String> = match lock.lock() {
            Ok(g) => g.retained.iter().cloned().collect(),
            Err(_) => Vec::new(),
        };
        let status = format!("{}/status", self.url.prefix);
        for topic in self.configs.iter().chain(&retained) {
            if *topic != status {
                self.push(Message {
                    topic: topic.clone(),
                    payload: Vec::new(),
                    retain: true,
                    expires: None,
                });
            }
        }
        self.stop_saying(b"");
        self.wait(grace)
    }

    fn wait(mut self, grace: Duration) -> MqttStats {
        let deadline = Instant::now() + grace;
        while self.threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let threads = std::mem::take(&mut self.threads);
        if threads.iter().all(|t| t.is_finished()) {
            threads.into_iter().for_each(|t| drop(t.join()));
        }
        let (lock, _) = &*self.shared;
        let (unsent, why) = lock.lock().map_or((0, None), |g| {
            (g.queue.len() + g.sent.len(), g.last_failure.clone())
        });
        if unsent > 0 {
            match why {
                Some(why) => log::warn!("mqtt: {unsent} message(s) not sent: {why}"),
                None => log::warn!(
                    "mqtt: {unsent} message(s) not sent: the broker took no more in {:.1} s",
                    grace.as_secs_f64()
                ),
            }
        }
        self.stats()
    }

    /// Queues `offline` (a clean exit says so; the last will covers the
    /// others) and asks the threads to send what is queued, then
    /// disconnect.
    fn stop(&self) {
        self.stop_saying(b"offline");
    }

    fn stop_saying(&self, status: &[u8]) {
        self.push(Message {
            topic: format!("{}/status", self.url.prefix),
            payload: status.to_vec(),
            retain: true,
            expires: None,
        });
        self.with_outbox(|g| g.stop = true);
    }
}

impl Drop for Mqtt {
    /// Dropped without [`Mqtt::finish`] (its camera's thread ended by a
    /// panic): the connection is not left running on its own, announcing a
    /// camera that is gone as available.
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop();
        }
    }
}

#[cfg(test)]
mod tests;
