//! The outbox: messages waiting for the broker, in order, bounded (the
//! oldest dropped and counted), kept until the broker acknowledges them.

use super::*;

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Message {
    pub(super) topic: String,
    pub(super) payload: Vec<u8>,
    pub(super) retain: bool,
    /// Not sent after this (an event entity's firing: one that waited out
    /// an outage would fire an automation for a scene long over).
    pub(super) expires: Option<Instant>,
}

/// An event entity's firing not sent within this long is dropped (the
/// event stays on `PREFIX/events`, and the state topic says what is on).
pub const FIRING_MAX_AGE: Duration = Duration::from_secs(30);

#[derive(Default)]
pub(super) struct Outbox {
    pub(super) queue: VecDeque<Message>,
    /// Sent and not yet acknowledged, oldest first, with their packet id
    /// once the connection has said it.
    pub(super) sent: VecDeque<(Message, Option<u16>)>,
    /// The last retained state queued for each `…/state` topic: sent again
    /// after each (re)connection, so that a broker restarted without
    /// persistence shows the current states, not "unknown".
    pub(super) states: BTreeMap<String, Message>,
    pub(super) dropped: u64,
    pub(super) stop: bool,
    /// The publisher asked the broker to disconnect (after `stop`, with
    /// nothing left to send).
    pub(super) disconnecting: bool,
    /// The connection thread has ended; the publisher ends with it.
    pub(super) closed: bool,
    /// Set by the connection thread whenever it is connected.
    pub(super) connected: bool,
    pub(super) published: u64,
    /// Connections refused or failed (a login, a certificate, the network).
    pub(super) connect_failures: u64,
    /// The largest message in flight at the last disconnections, and how
    /// many in a row it was.
    pub(super) suspect: Option<(Message, u32)>,
    /// The smallest size of a message dropped as refused: messages as large
    /// are dropped before they are sent (the broker's limit, learnt once).
    pub(super) refused_bytes: Option<usize>,
    /// Messages dropped before they were sent for that size.
    pub(super) refused_since: u64,
    /// Event firings dropped for waiting past [`FIRING_MAX_AGE`].
    pub(super) expired: u64,
    /// Why the last connection failed, while none has come up since.
    pub(super) last_failure: Option<String>,
    /// Every retained topic queued (states, snapshots, availability).
    pub(super) retained: std::collections::BTreeSet<String>,
    /// The largest message the broker acknowledged: one no larger is never
    /// taken for refused.
    pub(super) largest_acked: usize,
    /// The camera's source is lost: a (re)connection says `offline` on the
    /// availability topic, not `online`, until it is back.
    pub(super) source_lost: bool,
}

/// A message that was the largest in flight at this many disconnections
/// in a row is dropped: a broker that refuses it (a size over its limit)
/// would otherwise close every connection at it, and nothing after it
/// would ever be sent.
pub(super) const REFUSED_AFTER: u32 = 3;

impl Outbox {
    /// Queues `m`, the oldest message dropped (and counted) when the queue
    /// is full.
    pub(super) fn push_back(&mut self, m: Message) {
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
    pub(super) fn push_latest(&mut self, m: Message) {
        self.queue.retain(|q| q.topic != m.topic);
        self.push_back(m);
    }

    pub(super) fn count_dropped(&mut self, n: u64) {
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
    pub(super) fn requeue_on_connect(&mut self, hello: &[Message]) {
        self.sent_to_front();
        // The availability a connection announces: the newest one queued
        // (a stop's, a lost or returned source's, unsent or unacknowledged),
        // else `offline` while the source is lost, else hello's `online`;
        // no older one is left queued behind it to undo it.
        let status = hello
            .iter()
            .find(|m| m.topic.ends_with("/status"))
            .map(|m| m.topic.clone());
        let queued = status
            .as_ref()
            .and_then(|t| self.queue.iter().rev().find(|m| &m.topic == t).cloned());
        self.queue
            .retain(|m| !hello.contains(m) && Some(&m.topic) != status.as_ref());
        let mut head: Vec<Message> = hello.to_vec();
        for m in head
            .iter_mut()
            .filter(|m| Some(&m.topic) == status.as_ref())
        {
            if let Some(q) = &queued {
                m.payload = q.payload.clone();
            } else if self.source_lost {
                m.payload = b"offline".to_vec();
            }
        }
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
    pub(super) fn requeue_unacked(&mut self) {
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
    pub(super) fn next_to_send(&mut self, now: Instant) -> Option<Message> {
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
    pub(super) fn sent_to_front(&mut self) {
        while let Some((m, _)) = self.sent.pop_back() {
            self.queue.push_front(m);
        }
    }
}
