//! Events to an MQTT broker (`--mqtt mqtt[s]://HOST:PORT/PREFIX`), for Home
//! Assistant and fleets sharing one broker:
//!
//! - `PREFIX/events`: each event as its JSON log line (QoS 1);
//! - `PREFIX/<label>/state`: `ON` / `OFF`, retained;
//! - `PREFIX/status`: `online`, retained; `offline` as the last will;
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

mod discovery;
mod tls;
mod url;

use discovery::discovery;
pub use discovery::ZoneLabels;
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

#[derive(Debug, Clone, PartialEq)]
struct Message {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
    /// Not sent after this (an event entity's firing: one that waited out
    /// an outage would fire an automation for a scene long over).
    expires: Option<Instant>,
}

/// An event entity's firing not sent within this long is dropped (the
/// event stays on `PREFIX/events`, and the state topic says what is on).
pub const FIRING_MAX_AGE: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Outbox {
    queue: VecDeque<Message>,
    /// Sent and not yet acknowledged, oldest first, with their packet id
    /// once the connection has said it.
    sent: VecDeque<(Message, Option<u16>)>,
    /// The last retained state queued for each `…/state` topic: sent again
    /// after each (re)connection, so that a broker restarted without
    /// persistence shows the current states, not "unknown".
    states: BTreeMap<String, Message>,
    dropped: u64,
    stop: bool,
    /// The publisher asked the broker to disconnect (after `stop`, with
    /// nothing left to send).
    disconnecting: bool,
    /// The connection thread has ended; the publisher ends with it.
    closed: bool,
    /// Set by the connection thread whenever it is connected.
    connected: bool,
    published: u64,
    /// Connections refused or failed (a login, a certificate, the network).
    connect_failures: u64,
    /// The largest message in flight at the last disconnections, and how
    /// many in a row it was.
    suspect: Option<(Message, u32)>,
    /// The smallest size of a message dropped as refused: messages as large
    /// are dropped before they are sent (the broker's limit, learnt once).
    refused_bytes: Option<usize>,
    /// Messages dropped before they were sent for that size.
    refused_since: u64,
    /// Event firings dropped for waiting past [`FIRING_MAX_AGE`].
    expired: u64,
    /// Why the last connection failed, while none has come up since.
    last_failure: Option<String>,
    /// Every retained topic queued (states, snapshots, availability).
    retained: std::collections::BTreeSet<String>,
    /// The largest message the broker acknowledged: one no larger is never
    /// taken for refused.
    largest_acked: usize,
}

/// A message that was the largest in flight at this many disconnections
/// in a row is dropped: a broker that refuses it (a size over its limit)
/// would otherwise close every connection at it, and nothing after it
/// would ever be sent.
const REFUSED_AFTER: u32 = 3;

impl Outbox {
    /// Queues `m`, the oldest message dropped (and counted) when the queue
    /// is full.
    fn push_back(&mut self, m: Message) {
        if m.retain && m.topic.ends_with("/state") {
            self.states.insert(m.topic.clone(), m.clone());
            // Only the newest state waits: an outage's ON and OFF are not
            // replayed at reconnection, as if the scene happened then.
            self.queue.retain(|q| q.topic != m.topic);
        }
        if m.retain && !m.payload.is_empty() && !self.retained.contains(&m.topic) {
            self.retained.insert(m.topic.clone());
        }
        if self.queue.len() >= OUTBOX_CAPACITY {
            self.queue.pop_front();
            self.count_dropped(1);
        }
        self.queue.push_back(m);
    }

    /// Queues `m` in place of any message of its topic still waiting (a
    /// live score or the latest snapshot: only the newest is worth sending,
    /// and an outage does not fill the outbox with them).
    fn push_latest(&mut self, m: Message) {
        self.queue.retain(|q| q.topic != m.topic);
        self.push_back(m);
    }

    fn count_dropped(&mut self, n: u64) {
        let before = self.dropped;
        self.dropped += n;
        // Said at 1, 2, 4, … dropped so far.
        if n > 0 && (before + 1..=self.dropped).any(u64::is_power_of_two) {
            log::warn!(
                "mqtt: outbox full, {} message(s) dropped so far",
                self.dropped
            );
        }
    }

    /// A connection is up: `hello` first, then the current states that are
    /// not waiting to be sent anyway, then what was sent and not
    /// acknowledged (oldest first), then the rest. A copy of a `hello`
    /// message still queued from an earlier connection goes (so that a
    /// broker that drops each connection at once does not grow the queue
    /// by `hello` each time), and the queue is held to [`OUTBOX_CAPACITY`]
    /// by dropping its oldest messages after that head.
    fn requeue_on_connect(&mut self, hello: &[Message]) {
        self.sent_to_front();
        self.queue.retain(|m| !hello.contains(m));
        let mut head: Vec<Message> = hello.to_vec();
        for (topic, m) in &self.states {
            if !self.queue.iter().any(|q| &q.topic == topic) {
                head.push(m.clone());
            }
        }
        for m in head.iter().rev() {
            self.queue.push_front(m.clone());
        }
        let over = self
            .queue
            .len()
            .saturating_sub(OUTBOX_CAPACITY.max(head.len()));
        if over > 0 {
            self.queue.drain(head.len()..head.len() + over);
            self.count_dropped(over as u64);
        }
    }

    /// The connection went down: what was sent and not acknowledged goes
    /// back to the front, to be sent again on the next connection.
    fn requeue_unacked(&mut self) {
        // The largest message in flight is the suspect (a broker that
        // closes the connection at a message resets it, and the
        // acknowledgements of those before it are lost with it).
        // Only one larger than any the broker took, and once it took one
        // (a flaky link at the first connection proves nothing).
        let largest = (0..self.sent.len())
            .max_by_key(|&i| self.sent[i].0.payload.len())
            .filter(|&i| {
                self.largest_acked > 0 && self.sent[i].0.payload.len() > self.largest_acked
            });
        if let Some(i) = largest {
            let m = &self.sent[i].0;
            let n = match &self.suspect {
                Some((s, n)) if s == m => n + 1,
                _ => 1,
            };
            // Once the broker is known to refuse messages over a size, one
            // larger than any it took is not tried again at a disconnection
            // (each try costs a reconnection); one no larger than what it
            // took is never dropped, and every drop is said.
            let after = if self.refused_bytes.is_some() {
                1
            } else {
                REFUSED_AFTER
            };
            if n >= after {
                if let Some((m, _)) = self.sent.remove(i) {
                    log::warn!(
                        "mqtt: {} ({} bytes) dropped: the connection closed each of the {n} time(s) it was sent (over the broker's message size limit?); messages as large are dropped from now on",
                        m.topic,
                        m.payload.len()
                    );
                    self.dropped += 1;
                    let b = self.refused_bytes.get_or_insert(m.payload.len());
                    *b = (*b).min(m.payload.len());
                }
                self.suspect = None;
            } else {
                self.suspect = Some((m.clone(), n));
            }
        }
        self.sent_to_front();
    }

    /// The next message to send at `now`, past those that are not to be
    /// sent (and counted): a firing that waited past [`FIRING_MAX_AGE`],
    /// one as large as a message the broker refused.
    fn next_to_send(&mut self, now: Instant) -> Option<Message> {
        while let Some(m) = self.queue.pop_front() {
            if m.expires.is_some_and(|t| now > t) {
                self.expired += 1;
                self.dropped += 1;
                // Said at 1, 2, 4, … such firings.
                if self.expired.is_power_of_two() {
                    log::warn!(
                        "mqtt: {} not sent: the firing waited over {} s for the broker ({} so far; the event is on the events topic)",
                        m.topic,
                        FIRING_MAX_AGE.as_secs(),
                        self.expired
                    );
                }
                continue;
            }
            if self.refused_bytes.is_some_and(|b| m.payload.len() >= b) {
                self.refused_since += 1;
                // Said at 1, 2, 4, … such messages.
                if self.refused_since.is_power_of_two() {
                    log::warn!(
                        "mqtt: {} ({} bytes) dropped, as large as one the broker refused ({} so far)",
                        m.topic,
                        m.payload.len(),
                        self.refused_since
                    );
                }
                self.dropped += 1;
                continue;
            }
            return Some(m);
        }
        None
    }

    /// What was sent and not acknowledged, back at the front of the queue
    /// in its order.
    fn sent_to_front(&mut self) {
        while let Some((m, _)) = self.sent.pop_back() {
            self.queue.push_front(m);
        }
    }
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

/// What TLS said when `e` came from it: a certificate this client did not
/// trust, or an alert the broker sent (a client certificate it wanted).
fn tls_failure(e: &rumqttc::ConnectionError) -> Option<String> {
    if let rumqttc::ConnectionError::Tls(t) = e {
        return Some(t.to_string());
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        let inner = c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map_or(c, |i| i as &(dyn std::error::Error + 'static));
        if let Some(r) = inner.downcast_ref::<rustls::Error>() {
            return Some(r.to_string());
        }
        cause = c.source();
    }
    None
}

/// How this client connects to `url`'s broker as `client_id`.
fn options(
    url: &MqttUrl,
    tls: Option<Arc<rustls::ClientConfig>>,
    client_id: String,
) -> MqttOptions {
    let mut opts = MqttOptions::new(client_id, url.host.clone(), url.port);
    opts.set_keep_alive(Duration::from_secs(15))
        .set_clean_session(true)
        .set_inflight(IN_FLIGHT as u16)
        .set_max_packet_size(64 << 10, MAX_SNAPSHOT_BYTES as usize + (4 << 10));
    if let Some(config) = tls {
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
    }
    if let Some(user) = &url.username {
        opts.set_credentials(user.clone(), url.password.clone().unwrap_or_default());
    }
    opts
}

/// Connects to `url`'s broker once (`watch --check`), as a client of its
/// own (a running service with `node`'s id is not pushed off), and hangs
/// up: what a failed connection said, in one line, or no answer within
/// `wait`.
pub fn probe(
    url: &MqttUrl,
    tls: Option<Arc<rustls::ClientConfig>>,
    node: &str,
    wait: Duration,
) -> Result<(), String> {
    let peer = Peer::of(url);
    let (client, mut conn) = Client::new(options(url, tls, format!("clip-edge-{node}-check")), 4);
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match conn.recv_timeout(left) {
            Ok(Ok(Event::Incoming(Incoming::ConnAck(_)))) => {
                let _ = client.try_disconnect();
                return Ok(());
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("mqtt: {}", failure(&e, &peer).2)),
            Err(_) => {
                return Err(format!(
                    "mqtt: {}: no answer within {} s",
                    peer.broker,
                    wait.as_secs()
                ))
            }
        }
    }
}

/// The broker as the connection thread names it in the log.
struct Peer {
    /// `HOST:PORT`, and the user.
    broker: String,
    /// Its host is a `.local` name.
    mdns: bool,
    /// `mqtts://`.
    tls: bool,
}

impl Peer {
    fn of(url: &MqttUrl) -> Peer {
        Peer {
            broker: match &url.username {
                Some(user) => format!("{} (user {user:?})", url.authority()),
                None => url.authority(),
            },
            // A `.local` broker: a failed lookup says what it needs.
            mdns: url.host.to_ascii_lowercase().ends_with(".local"),
            tls: url.tls,
        }
    }
}

/// What a failed connection to `peer` said, in one line naming it and what
/// to check, with its kind (refused 1, TLS 2, anything else 3: a cause is
/// said again when its kind changes) and whether it needs the user (an
/// error; a network that comes and goes is a warning).
fn failure(e: &rumqttc::ConnectionError, peer: &Peer) -> (u8, bool, String) {
    let broker = &peer.broker;
    match e {
        rumqttc::ConnectionError::ConnectionRefused(code) => (
            1,
            true,
            format!("{broker} refused the connection ({code:?}: check the user and password)"),
        ),
        _ => match tls_failure(e) {
            Some(t) => (
                2,
                true,
                format!(
                    "TLS with {broker} failed ({t}{}: check mqtt_ca, or mqtt_cert and mqtt_key{})",
                    tls::v1_hint(&t),
                    scheme_hint(e, peer.tls)
                ),
            ),
            None if peer.mdns && format!("{e:?}").contains("lookup") => (
                3,
                true,
                format!(
                    "{broker}: {e} (a .local name needs the system's mDNS resolver, nss-mdns with avahi; the broker's IP address always works)"
                ),
            ),
            None => (3, false, format!("{broker}: {e}{}", scheme_hint(e, peer.tls))),
        },
    }
}

/// What to check when a connection failed at the handshake: a plain-text
/// listener answering TLS (a reset), or a TLS one answering plain MQTT
/// (bytes that are not MQTT).
fn scheme_hint(e: &rumqttc::ConnectionError, tls: bool) -> &'static str {
    let text = format!("{e} {e:?}").to_ascii_lowercase();
    if tls && (text.contains("reset") || text.contains("corrupt") || text.contains("eof")) {
        "; is that port a plain-text listener? mqtts:// needs the broker's TLS one, 8883 by default"
    } else if !tls && (text.contains("deserializ") || text.contains("malformed")) {
        "; is that port a TLS listener? then use mqtts://"
    } else {
        ""
    }
}

/// Sends the outbox in order while connected, at most [`IN_FLIGHT`]
/// unacknowledged; asks the broker to disconnect once stopped with nothing
/// left. Ends with the connection thread.
fn publisher_thread(client: Client, shared: Arc<(Mutex<Outbox>, Condvar)>) {
    let (lock, cv) = &*shared;
    let Ok(mut g) = lock.lock() else { return };
    while !g.closed {
        if g.connected && !g.disconnecting {
            while g.sent.len() < IN_FLIGHT {
                let Some(m) = g.next_to_send(Instant::now()) else {
                    break;
                };
                match client.try_publish(
                    m.topic.clone(),
                    QoS::AtLeastOnce,
                    m.retain,
                    m.payload.clone(),
                ) {
                    Ok(()) => g.sent.push_back((m, None)),
                    Err(_) => {
                        // The request channel is full: again after the wait.
                        g.queue.push_front(m);
                        break;
                    }
                }
            }
            if g.stop && g.queue.is_empty() && g.sent.is_empty() {
                g.disconnecting = true;
                let _ = client.try_disconnect();
            }
        }
        g = match cv.wait_timeout(g, Duration::from_millis(100)) {
            Ok((g, _)) => g,
            Err(_) => return,
        };
    }
}

/// Owns the connection: reads what the broker says (never cancelled
/// midway: a connection handshake or a large publish takes as long as the
/// link needs), removes a message when the broker acknowledged it, puts
/// unacknowledged ones back at the front on a disconnection, and says when
/// the publisher may send. `broker` names it in the log; `mdns`: its host
/// is a `.local` name.
fn connection_thread(
    mut conn: Connection,
    client: Client,
    hello: Vec<Message>,
    ours: String,
    shared: Arc<(Mutex<Outbox>, Condvar)>,
    peer: Peer,
) {
    let broker = &peer.broker;
    let (lock, cv) = &*shared;
    let mut connected = false;
    let mut backoff = MIN_BACKOFF;
    // When the connection last came up: the backoff starts again from its
    // shortest only after one that held (a broker that accepts and drops
    // each connection at once, an ACL, another client with this node's
    // client id, is retried ever more slowly).
    let mut up_since = Instant::now();
    let mut announced_down = false;
    // What the last failure said: refused (1), TLS (2), anything else (3).
    let mut down_kind = 0;
    loop {
        let Ok(event) = conn.recv() else { break };
        match event {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                connected = true;
                up_since = Instant::now();
                if announced_down {
                    log::info!("mqtt: {broker}: connected again");
                    announced_down = false;
                } else {
                    log::info!("mqtt: {broker}: connected");
                }
                if let Ok(mut g) = lock.lock() {
                    g.connected = true;
                    g.last_failure = None;
                    g.requeue_on_connect(&hello);
                }
                cv.notify_all();
                // The retained configs under this node's discovery topics.
                if let Err(e) = client
                    .try_subscribe(format!("homeassistant/+/{ours}/+/config"), QoS::AtMostOnce)
                {
                    log::warn!("mqtt: cannot look for stale discovery configs: {e}");
                }
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
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
                    let removal = Message {
                        topic: p.topic.clone(),
                        payload: Vec::new(),
                        retain: true,
                        expires: None,
                    };
                    if let Ok(mut g) = lock.lock() {
                        // Seen again at each connection until it is sent.
                        if !g.queue.contains(&removal) {
                            g.push_back(removal);
                        }
                    }
                    cv.notify_all();
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                if let Ok(mut g) = lock.lock() {
                    if let Some(slot) = g.sent.iter_mut().find(|(_, id)| id.is_none()) {
                        slot.1 = Some(pkid);
                    }
                }
            }
            Ok(Event::Incoming(Incoming::PubAck(ack))) => {
                if let Ok(mut g) = lock.lock() {
                    if let Some(i) = g.sent.iter().position(|(_, id)| *id == Some(ack.pkid)) {
                        if let Some((m, _)) = g.sent.remove(i) {
                            g.largest_acked = g.largest_acked.max(m.payload.len());
                        }
                        g.published += 1;
                    }
                }
                cv.notify_all();
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(_) => {}
            Err(e) => {
                let Ok(mut g) = lock.lock() else { break };
                if g.disconnecting {
                    break;
                }
                // Said once an outage, and again when its cause changes
                // (the network back, then a login or certificate refused).
                let (kind, loud, why) = failure(&e, &peer);
                if connected || !announced_down || down_kind != kind {
                    if loud {
                        log::error!("mqtt: {why}; retrying (events keep going to the log)");
                    } else {
                        log::warn!("mqtt: {why}; reconnecting (events keep going to the log)");
                    }
                    announced_down = true;
                    down_kind = kind;
                }
                g.last_failure = Some(why);
                if !connected {
                    g.connect_failures += 1;
                }
                if connected && up_since.elapsed() >= CONNECTION_HELD {
                    backoff = MIN_BACKOFF;
                }
                connected = false;
                g.connected = false;
                g.requeue_unacked();
                if g.stop {
                    break;
                }
                drop(g);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    if let Ok(mut g) = lock.lock() {
        g.closed = true;
        g.connected = false;
    }
    cv.notify_all();
}

#[cfg(test)]
mod tests;
