//! The broker connection: rumqttc's options, the publisher and connection
//! threads, reconnection with backoff, and a failure told in one line.

use super::*;

/// What TLS said when `e` came from it: a certificate this client did not
/// trust, or an alert the broker sent (a client certificate it wanted).
pub(super) fn tls_failure(e: &rumqttc::ConnectionError) -> Option<String> {
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
pub(super) fn options(
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
pub(super) struct Peer {
    /// `HOST:PORT`, and the user.
    pub(super) broker: String,
    /// Its host is a `.local` name.
    pub(super) mdns: bool,
    /// `mqtts://`.
    pub(super) tls: bool,
}

impl Peer {
    pub(super) fn of(url: &MqttUrl) -> Peer {
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
pub(super) fn failure(e: &rumqttc::ConnectionError, peer: &Peer) -> (u8, bool, String) {
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
pub(super) fn scheme_hint(e: &rumqttc::ConnectionError, tls: bool) -> &'static str {
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
pub(super) fn publisher_thread(client: Client, shared: Arc<(Mutex<Outbox>, Condvar)>) {
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
pub(super) fn connection_thread(
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
