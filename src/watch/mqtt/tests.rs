//! Home Assistant discovery for zones and the payloads that follow their events, without a broker.

use super::*;

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
    let mut m = Mqtt::start(url, None, &labels, "pi", &zones, None);
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
    // Only the newest state of a topic waits (an outage's changes are not
    // replayed at reconnection).
    let on_off: Vec<&str> = states.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(on_off, ["OFF"]);
    m.finish(std::time::Duration::from_millis(10));
}

fn message(topic: &str, payload: &str) -> Message {
    Message {
        topic: topic.into(),
        payload: payload.as_bytes().to_vec(),
        retain: false,
        expires: None,
    }
}

/// A broker that drops every connection before anything is sent: each
/// connection announces `hello` again, and the queue holds one copy of it,
/// the events in their order, and no more than the outbox's capacity.
#[test]
fn reconnections_queue_hello_once_and_keep_the_outbox_bounded() {
    let hello = vec![message("cam/status", "online"), message("ha/config", "{}")];
    let mut outbox = Outbox::default();
    let events: Vec<Message> = (0..5)
        .map(|i| message("cam/events", &i.to_string()))
        .collect();
    for e in &events {
        outbox.push_back(e.clone());
    }
    for _ in 0..1000 {
        // Hello and the first event were sent, none acknowledged.
        for _ in 0..3 {
            let m = outbox.queue.pop_front().unwrap();
            outbox.sent.push_back((m, None));
        }
        outbox.requeue_on_connect(&hello);
    }
    let queued: Vec<&Message> = outbox.queue.iter().collect();
    let want: Vec<&Message> = hello.iter().chain(&events).collect();
    assert_eq!(queued, want);
    assert_eq!(outbox.dropped, 0);
    // Full: the oldest messages after hello go, and are counted.
    for i in 0..OUTBOX_CAPACITY {
        outbox.push_back(message("cam/events", &format!("later {i}")));
    }
    assert_eq!(outbox.queue.len(), OUTBOX_CAPACITY);
    outbox
        .sent
        .push_back((message("cam/events", "in flight"), None));
    outbox.requeue_on_connect(&hello);
    assert_eq!(outbox.queue.len(), OUTBOX_CAPACITY);
    assert_eq!(outbox.queue[0], hello[0]);
    assert_eq!(outbox.queue[1], hello[1]);
    assert_eq!(outbox.queue[2], message("cam/events", "later 2"));
    assert_eq!(
        outbox.queue.back(),
        Some(&message(
            "cam/events",
            &format!("later {}", OUTBOX_CAPACITY - 1)
        ))
    );
    // 7 as the queue filled (hello and the five events), then 3 (the
    // message in flight, later 0 and later 1).
    assert_eq!(outbox.dropped, 10);
}

/// A broker restarted without persistence has forgotten the retained
/// states: each connection sends the current ones again (after hello, not
/// twice when one is still waiting); scores and snapshots keep only their
/// newest waiting copy, so an outage does not fill the outbox with them.
#[test]
fn connections_resend_current_states_and_live_values_keep_their_newest() {
    let hello = vec![message("cam/status", "online")];
    let state = |label: &str, p: &str| Message {
        retain: true,
        ..message(&format!("cam/{label}/state"), p)
    };
    let mut outbox = Outbox::default();
    outbox.push_back(state("a", "ON"));
    outbox.push_back(state("b", "OFF"));
    outbox.push_back(state("a", "OFF"));
    // All sent and acknowledged.
    outbox.queue.clear();
    outbox.push_back(state("b", "ON"));
    for i in 0..1000 {
        outbox.push_latest(message("cam/a/score", &i.to_string()));
    }
    outbox.requeue_on_connect(&hello);
    let queued: Vec<&Message> = outbox.queue.iter().collect();
    assert_eq!(
        queued,
        [
            &hello[0],
            &state("a", "OFF"),
            &state("b", "ON"),
            &message("cam/a/score", "999")
        ]
    );
}

/// Labels in other scripts get topic levels of their own; two names that
/// would still be one level (and one Home Assistant entity) are refused.
#[test]
fn slugs_keep_labels_apart_or_say_which_two_clash() {
    assert_eq!(slug("行人"), "u884cu4eba");
    assert_ne!(slug("行人"), slug("汽车"));
    assert_eq!(slug("Café 2"), "cafue9_2");
    assert!(check_slugs("watched label", ["行人", "汽车", "red star"]).is_ok());
    let e = check_slugs("watched label", ["t-shirt", "dog", "T shirt"])
        .unwrap_err()
        .0;
    assert_eq!(
        e,
        "watched labels \"t-shirt\" and \"T shirt\": one name in MQTT topics and Home Assistant ids (\"t_shirt\"); keep one"
    );
    let e = check_slugs("camera", ["front-door", "front_door"])
        .unwrap_err()
        .0;
    assert!(
        e.starts_with("cameras \"front-door\" and \"front_door\""),
        "{e}"
    );
    let e = check_slugs("--node", [""]).unwrap_err().0;
    assert_eq!(e, "--node \"\": empty as an MQTT topic level");
}

/// A broker that closes the connection at a message over its size limit
/// (and the acknowledgements before it are lost with the reset): the
/// largest message in flight at three disconnections in a row is dropped
/// when it is larger than any the broker took; from then on such a one
/// goes at its first.
#[test]
fn the_largest_message_in_flight_at_each_disconnection_is_dropped_after_three() {
    let mut outbox = Outbox::default();
    let big = message("cam/a/snapshot", &"x".repeat(10_000));
    // Nothing acknowledged yet: nothing is taken for refused.
    for _ in 0..5 {
        outbox.sent.push_back((big.clone(), None));
        outbox.requeue_unacked();
    }
    assert_eq!(outbox.dropped, 0);
    outbox.queue.clear();
    outbox.largest_acked = 500;
    let fly = |outbox: &mut Outbox, ms: &[&Message]| {
        for m in ms {
            outbox.queue.retain(|q| q != *m);
            outbox.sent.push_back(((*m).clone(), None));
        }
        outbox.requeue_unacked();
    };
    let events: Vec<Message> = (0..3)
        .map(|i| message("cam/events", &i.to_string()))
        .collect();
    for round in 1..=3 {
        fly(&mut outbox, &[&events[0], &big, &events[1]]);
        assert_eq!(outbox.queue.contains(&big), round < 3, "round {round}");
    }
    assert_eq!(outbox.dropped, 1);
    assert_eq!(outbox.refused_bytes, Some(10_000));
    assert_eq!(
        outbox
            .queue
            .iter()
            .filter(|m| m.topic == "cam/events")
            .count(),
        2
    );
    // Known now: another one larger than any the broker took goes at its
    // first disconnection.
    let other = message("cam/b/snapshot", &"y".repeat(9_000));
    fly(&mut outbox, &[&events[2], &other]);
    assert!(!outbox.queue.contains(&other));
    assert_eq!((outbox.dropped, outbox.refused_bytes), (2, Some(9_000)));
    assert!(outbox.queue.contains(&events[2]));
}

/// After an outage: an event entity's firing that waited past
/// [`FIRING_MAX_AGE`] is not sent (an automation would run for a scene long
/// over); the events topic keeps every event, and a fresh firing goes.
#[test]
fn firings_that_waited_out_an_outage_are_not_sent() {
    let mut outbox = Outbox::default();
    let t0 = std::time::Instant::now();
    let firing = |p: &str| Message {
        expires: Some(t0 + FIRING_MAX_AGE),
        ..message("cam/red_star/event", p)
    };
    outbox.push_back(firing("start"));
    outbox.push_back(message("cam/events", "{}"));
    outbox.push_back(firing("end"));
    let later = t0 + FIRING_MAX_AGE + std::time::Duration::from_secs(1);
    assert_eq!(
        outbox.next_to_send(later),
        Some(message("cam/events", "{}"))
    );
    assert_eq!(outbox.next_to_send(later), None);
    assert_eq!((outbox.expired, outbox.dropped), (2, 2));
    outbox.push_back(firing("start"));
    assert_eq!(outbox.next_to_send(t0), Some(firing("start")));
}

/// The source lost and back while the broker was away: the connection
/// says `online`, and no older `offline` is left queued to undo it; an
/// `offline` queued last wins over hello's `online`; with nothing queued,
/// a lost source is `offline` at every reconnection until it is back.
#[test]
fn the_newest_availability_wins_at_a_reconnection() {
    let hello = vec![message("cam/status", "online"), message("ha/config", "{}")];
    let mut outbox = Outbox {
        source_lost: true,
        ..Default::default()
    };
    outbox.push_back(message("cam/status", "offline"));
    outbox.push_back(message("cam/events", "1"));
    outbox.source_lost = false;
    outbox.push_back(message("cam/status", "online"));
    outbox.requeue_on_connect(&hello);
    let status: Vec<&[u8]> = outbox
        .queue
        .iter()
        .filter(|m| m.topic == "cam/status")
        .map(|m| m.payload.as_slice())
        .collect();
    assert_eq!(status, vec![&b"online"[..]], "{:?}", outbox.queue);
    outbox.push_back(message("cam/status", "offline"));
    outbox.requeue_on_connect(&hello);
    assert_eq!(outbox.queue[0].topic, "cam/status");
    assert_eq!(outbox.queue[0].payload, b"offline", "{:?}", outbox.queue);
    assert_eq!(
        outbox
            .queue
            .iter()
            .filter(|m| m.topic == "cam/status")
            .count(),
        1
    );
    // Lost, nothing queued: a reconnection says `offline`; back (the flag
    // cleared): `online`.
    outbox.source_lost = true;
    outbox.queue.clear();
    outbox.requeue_on_connect(&hello);
    assert_eq!(outbox.queue[0].payload, b"offline", "{:?}", outbox.queue);
    outbox.source_lost = false;
    outbox.queue.clear();
    outbox.requeue_on_connect(&hello);
    assert_eq!(outbox.queue[0].payload, b"online");
}
