//! `clip-edge watch --mqtt` against a real Mosquitto on 127.0.0.1, killed
//! (SIGKILL) and restarted mid-clip: every event still arrives, in the
//! log's words; the retained states, availability and Home Assistant
//! discovery configs are there afterwards.
//!
//! Needs the `mosquitto` binary (Debian package `mosquitto`), so it is
//! ignored by a plain `cargo test`; `.ci/run` installs Mosquitto and runs it
//! with `cargo test --test watch_mqtt -- --ignored`.

mod common;

use common::{free_port, scratch, watch_clip};
use rumqttc::{Client, Event, Incoming, MqttOptions, QoS};
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Received = Arc<Mutex<Vec<(String, Vec<u8>, bool)>>>;

fn mosquitto() -> String {
    for p in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("mosquitto not found: apt-get install mosquitto (this test is the MQTT check; it cannot pass without a broker)");
}

fn start_broker(conf: &Path, port: u16) -> Child {
    let child = Command::new(mosquitto())
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "mosquitto did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// A scratch folder `name` and an anonymous Mosquitto on a free port of
/// 127.0.0.1, its config ending with `extra` lines.
fn broker(name: &str, extra: &str) -> (std::path::PathBuf, u16, Child) {
    let dir = scratch(name);
    let port = free_port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\n{extra}"),
    )
    .unwrap();
    let child = start_broker(&conf, port);
    (dir, port, child)
}

/// A subscriber collecting everything under `filters`; `persistent` keeps
/// its session (and queued QoS 1 messages) across its reconnections.
fn subscribe(
    port: u16,
    id: &str,
    filters: &[&str],
    persistent: bool,
) -> (Received, Arc<Mutex<bool>>) {
    subscribe_as(port, id, filters, persistent, None)
}

/// [`subscribe`], logged in as `login` (user, password).
fn subscribe_as(
    port: u16,
    id: &str,
    filters: &[&str],
    persistent: bool,
    login: Option<(&str, &str)>,
) -> (Received, Arc<Mutex<bool>>) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    // Snapshots (JPEG) are larger than rumqttc's default 10 KiB.
    opts.set_max_packet_size(8 << 20, 64 << 10);
    if let Some((u, p)) = login {
        opts.set_credentials(u, p);
    }
    opts.set_clean_session(!persistent)
        .set_keep_alive(Duration::from_secs(5));
    let (client, mut conn) = Client::new(opts, 64);
    let got: Received = Arc::default();
    let subscribed = Arc::new(Mutex::new(false));
    let (g, s) = (got.clone(), subscribed.clone());
    let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
    std::thread::spawn(move || loop {
        match conn.recv() {
            Ok(Ok(Event::Incoming(Incoming::ConnAck(_)))) => {
                for f in &filters {
                    client.subscribe(f.clone(), QoS::AtLeastOnce).unwrap();
                }
            }
            Ok(Ok(Event::Incoming(Incoming::SubAck(_)))) => *s.lock().unwrap() = true,
            Ok(Ok(Event::Incoming(Incoming::Publish(p)))) => {
                g.lock()
                    .unwrap()
                    .push((p.topic.clone(), p.payload.to_vec(), p.retain));
            }
            Ok(Ok(_)) => {}
            Ok(Err(_)) => std::thread::sleep(Duration::from_millis(100)),
            Err(_) => return,
        }
    });
    let t0 = Instant::now();
    while !*subscribed.lock().unwrap() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "subscriber {id} did not subscribe"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (got, subscribed)
}

#[test]
#[ignore = "needs mosquitto (apt-get install mosquitto); .ci/run runs it with --ignored"]
fn every_event_arrives_across_a_broker_restart() {
    let dir = scratch("watch-mqtt");
    let port = free_port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location {}/\nautosave_interval 1\n",
            dir.display()
        ),
    )
    .unwrap();
    let mut broker = start_broker(&conf, port);
    let (events_got, _) = subscribe(port, "test-sub", &["test/events"], true);
    // Let the broker save the subscriber's session before it is killed.
    std::thread::sleep(Duration::from_millis(1500));

    let log = dir.join("events.jsonl");
    let watch = watch_clip()
        .args([
            "--fps",
            "25",
            "--node",
            "testcam",
            "--watch",
            "red star",
            "--watch",
            "green square",
        ])
        .arg("--events")
        .arg(&log)
        .arg("--mqtt")
        .arg(format!("mqtt://127.0.0.1:{port}/test"))
        .arg("--stats")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the broker once the first event has ended, keep it down for a
    // while (the next event starts meanwhile), then start it again.
    let t0 = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("\"end\"")
    {
        assert!(t0.elapsed() < Duration::from_secs(60), "no event ended");
        std::thread::sleep(Duration::from_millis(10));
    }
    broker.kill().unwrap();
    broker.wait().unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let lines_while_down = std::fs::read_to_string(&log).unwrap().lines().count();
    let mut broker = start_broker(&conf, port);
    let out = watch.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: Value = common::last_json_line(&out.stdout);

    let lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 6, "three events in the log");
    assert!(
        lines_while_down > 2,
        "no event happened while the broker was down"
    );
    let t0 = Instant::now();
    loop {
        let got: Vec<String> = events_got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, p, _)| String::from_utf8_lossy(p).into_owned())
            .collect();
        let missing: Vec<&String> = lines.iter().filter(|l| !got.contains(l)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "events never arrived: {missing:?} (stats {stats})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(stats["mqtt"]["dropped"], 0);
    assert_eq!(stats["mqtt"]["queued"], 0);

    // Retained: states, availability, discovery.
    let (retained, _) = subscribe(
        port,
        "test-late",
        &["test/+/state", "test/status", "homeassistant/#"],
        false,
    );
    let t0 = Instant::now();
    let want = [
        ("test/red_star/state", "OFF"),
        ("test/green_square/state", "OFF"),
        ("test/status", "offline"),
    ];
    loop {
        let got = retained.lock().unwrap().clone();
        let has = |t: &str, p: &str| {
            got.iter()
                .any(|(gt, gp, r)| gt == t && gp == p.as_bytes() && *r)
        };
        let configs: Vec<Value> = got
            .iter()
            .filter(|(t, _, r)| t.starts_with("homeassistant/binary_sensor/testcam/") && *r)
            .map(|(_, p, _)| serde_json::from_slice(p).unwrap())
            .collect();
        if want.iter().all(|(t, p)| has(t, p)) && configs.len() == 2 {
            for c in &configs {
                let name = c["name"].as_str().unwrap();
                assert!(["red star", "green square"].contains(&name), "{c}");
                assert_eq!(
                    c["state_topic"],
                    format!("test/{}/state", name.replace(' ', "_"))
                );
                assert_eq!(c["availability_topic"], "test/status");
                assert_eq!(c["payload_on"], "ON");
            }
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "retained messages missing: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    broker.kill().unwrap();
    let _ = broker.wait();
}

/// A broker that requires a login (as Home Assistant's Mosquitto add-on
/// does): the user from the URL and the password from a file get the
/// events through; a wrong password is an error line that names the
/// refusal and never the password, and the loop goes on.
#[test]
#[ignore = "needs mosquitto (apt-get install mosquitto); .ci/run runs it with --ignored"]
fn a_broker_login_gets_the_events_and_a_refused_one_is_named() {
    let dir = scratch("watch-mqtt-login");
    let port = free_port();
    let passwd = dir.join("passwd");
    let st = Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&passwd)
        .args(["clip", "s3cr@t:x"])
        .status()
        .expect("mosquitto_passwd (Debian package mosquitto)");
    assert!(st.success());
    // The broker may drop to its own user: it must be able to read the file.
    std::fs::set_permissions(&passwd, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
            passwd.display()
        ),
    )
    .unwrap();
    let mut broker = start_broker(&conf, port);
    let (got, _) = subscribe_as(
        port,
        "login-sub",
        &["test/events", "wrong/events"],
        false,
        Some(("clip", "s3cr@t:x")),
    );
    let pass = dir.join("mqtt.pass");
    std::fs::write(&pass, "s3cr@t:x\n").unwrap();
    let run = |mqtt: &str, extra: &[&str], log: &Path| {
        watch_clip()
            .env("RUST_LOG", "error")
            .args(["--watch", "red star"])
            .arg("--events")
            .arg(log)
            .args(["--mqtt", mqtt])
            .args(extra)
            .output()
            .unwrap()
    };
    let log = dir.join("events.jsonl");
    let out = run(
        &format!("mqtt://clip@127.0.0.1:{port}/test"),
        &["--mqtt-password-file", pass.to_str().unwrap()],
        &log,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert!(!lines.is_empty(), "no event in the log");
    let t0 = Instant::now();
    loop {
        let have: Vec<String> = got
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _, _)| t == "test/events")
            .map(|(_, p, _)| String::from_utf8_lossy(p).into_owned())
            .collect();
        if lines.iter().all(|l| have.contains(l)) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "events never arrived through the login: {lines:?}, got {have:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A wrong password, in the URL: refused, named, never shown.
    let out = run(
        &format!("mqtt://clip:hunter2@127.0.0.1:{port}/wrong"),
        &[],
        &dir.join("wrong.jsonl"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "mqtt: 127.0.0.1:{port} (user \"clip\") refused the connection"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(
        !got.lock()
            .unwrap()
            .iter()
            .any(|(t, _, _)| t == "wrong/events"),
        "a refused client published"
    );
    // `--check` logs in once: the right password passes, a wrong one is
    // named (never shown) with the configuration's exit status.
    let out = run(
        &format!("mqtt://clip@127.0.0.1:{port}/test"),
        &["--check", "--mqtt-password-file", pass.to_str().unwrap()],
        &log,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(
        &format!("mqtt://clip:hunter2@127.0.0.1:{port}/wrong"),
        &["--check"],
        &log,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("refused the connection") && !stderr.contains("hunter2"),
        "{stderr}"
    );
    broker.kill().unwrap();
    broker.wait().unwrap();
}

/// Two boards on one broker, their URLs naming no prefix: each has topics
/// of its own (`clip-edge/<node>/…`), so one stopping never marks the
/// other's entities unavailable.
#[test]
#[ignore = "needs mosquitto (apt-get install mosquitto); .ci/run runs it with --ignored"]
fn boards_sharing_a_broker_without_a_prefix_keep_their_topics_apart() {
    let (_dir, port, mut broker) = broker("watch-mqtt-fleet", "");
    let (got, _) = subscribe(port, "test-fleet", &["clip-edge/#"], false);
    for node in ["Board A", "board-b"] {
        common::output_ok(
            common::watch_clip()
                .env("RUST_LOG", "error")
                .args(["--watch", "red star", "--node", node])
                .args(["--mqtt", &format!("mqtt://127.0.0.1:{port}")]),
        );
    }
    let wanted = ["clip-edge/board_a/status", "clip-edge/board_b/status"];
    let t0 = Instant::now();
    loop {
        let topics: Vec<String> = got.lock().unwrap().iter().map(|m| m.0.clone()).collect();
        assert!(
            !topics.iter().any(|t| t == "clip-edge/status"),
            "a shared status topic: {topics:?}"
        );
        if wanted.iter().all(|w| topics.iter().any(|t| t == w)) {
            assert!(topics
                .iter()
                .any(|t| t == "clip-edge/board_a/red_star/state"));
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "no status of each board: {topics:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    broker.kill().unwrap();
    broker.wait().unwrap();
}

/// Discovery in Home Assistant's current schema (`default_entity_id`, no
/// `object_id`, `origin`, the status page as the device's
/// `configuration_url`; an event, an image and a score entity per label), a config a
/// previous run left for a label no longer watched is removed (a late
/// subscriber no longer gets it), events fire the event entity, and the
/// last start's snapshot is retained on the image's topic, byte for byte.
#[test]
#[ignore = "needs mosquitto (apt-get install mosquitto); .ci/run runs it with --ignored"]
fn discovery_is_current_and_a_label_no_longer_watched_leaves_no_entity() {
    let (dir, port, mut broker) = broker("watch-mqtt-discovery", "");
    // What an earlier run, watching "blue circle" too, left retained.
    let ghost = "homeassistant/binary_sensor/testcam/blue_circle/config";
    {
        let mut opts = MqttOptions::new("test-ghost", "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5));
        let (client, mut conn) = Client::new(opts, 10);
        client
            .publish(
                ghost,
                QoS::AtLeastOnce,
                true,
                br#"{"name":"blue circle"}"#.to_vec(),
            )
            .unwrap();
        for n in conn.iter() {
            if let Ok(Event::Incoming(Incoming::PubAck(_))) = n {
                break;
            }
            n.unwrap();
        }
    }
    let (fired, _) = subscribe(port, "test-fired", &["test/+/event"], false);
    let http_port = free_port();
    common::output_ok(
        watch_clip()
            .args([
                "--fps", "50", "--node", "testcam", "--watch", "red star", "-q",
            ])
            .arg("--snapshots")
            .arg(dir.join("snaps"))
            .arg("--mqtt")
            .arg(format!("mqtt://127.0.0.1:{port}/test"))
            .arg("--http")
            .arg(http_port.to_string()),
    );
    let (retained, _) = subscribe(port, "test-late", &["homeassistant/#"], false);
    let config = |kind: &str| -> Option<Value> {
        let topic = format!("homeassistant/{kind}/testcam/red_star/config");
        let got = retained.lock().unwrap();
        got.iter()
            .find(|(t, p, r)| *t == topic && *r && !p.is_empty())
            .map(|(_, p, _)| serde_json::from_slice(p).unwrap())
    };
    let t0 = Instant::now();
    let (c, ev, im) = loop {
        if let (Some(c), Some(ev), Some(im)) =
            (config("binary_sensor"), config("event"), config("image"))
        {
            break (c, ev, im);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "discovery configs missing"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        c["default_entity_id"],
        "binary_sensor.clip_edge_testcam_red_star"
    );
    assert!(c.get("object_id").is_none(), "{c}");
    assert_eq!(c["unique_id"], "clip_edge_testcam_red_star");
    assert_eq!(c["origin"]["name"], "clip-edge");
    assert_eq!(
        c["device"]["configuration_url"],
        format!("http://127.0.0.1:{http_port}/")
    );
    assert_eq!(ev["state_topic"], "test/red_star/event");
    assert_eq!(ev["event_types"], serde_json::json!(["start", "end"]));
    assert_eq!(im["image_topic"], "test/red_star/snapshot");
    let sc = config("sensor").expect("a score sensor");
    assert_eq!(sc["state_topic"], "test/red_star/score");
    // Give a ghost the time to arrive, were it still there.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !retained
            .lock()
            .unwrap()
            .iter()
            .any(|(t, p, _)| t == ghost && !p.is_empty()),
        "the stale config is still retained"
    );
    // The red star's two events fired start and end.
    let t0 = Instant::now();
    let fired: Vec<Value> = loop {
        let got: Vec<Value> = fired
            .lock()
            .unwrap()
            .iter()
            .map(|(_, p, _)| serde_json::from_slice(p).unwrap())
            .collect();
        if got.len() >= 4 || t0.elapsed() > Duration::from_secs(10) {
            break got;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let kinds: Vec<&str> = fired
        .iter()
        .map(|f| f["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["start", "end", "start", "end"], "{fired:?}");
    // The last start's snapshot, retained on the image's topic.
    let last = fired[2]["snapshot"].as_str().unwrap().to_string();
    let (image, _) = subscribe(port, "test-image", &["test/red_star/snapshot"], false);
    let t0 = Instant::now();
    loop {
        if let Some((_, jpeg, retained)) = image.lock().unwrap().first() {
            assert!(*retained);
            assert!(
                *jpeg == std::fs::read(&last).unwrap(),
                "not the last start's snapshot"
            );
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no snapshot on its topic"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    broker.kill().unwrap();
    let _ = broker.wait();
}

/// Two cameras (`[[camera]]`) publish under topics and Home Assistant
/// devices of their own, each with its own watch list.
#[test]
#[ignore = "needs mosquitto (apt-get install mosquitto); .ci/run runs it with --ignored"]
fn each_camera_is_a_device_with_topics_of_its_own() {
    let (dir, port, mut broker) = broker("watch-mqtt-cameras", "");
    let copy = dir.join("clip-copy");
    std::fs::create_dir_all(&copy).unwrap();
    for f in common::clip_jpegs() {
        std::fs::copy(&f, copy.join(f.file_name().unwrap())).unwrap();
    }
    let cfg = dir.join("watch.toml");
    std::fs::write(
        &cfg,
        format!(
            "bundle = {:?}\nmqtt = \"mqtt://127.0.0.1:{port}/test\"\nnode = \"testcam\"\nfps = 50.0\n\
             watch = [\"red star\", \"green square\"]\n\n\
             [[camera]]\nname = \"front\"\nsource = {:?}\n\n\
             [[camera]]\nname = \"back\"\nsource = {:?}\nwatch = [\"red star\"]\n",
            common::root().join("models/default-int8").display().to_string(),
            format!("dir:{}", common::root().join("models/clips/shapes").display()),
            format!("dir:{}", copy.display()),
        ),
    )
    .unwrap();
    let (fired, _) = subscribe(port, "test-fired", &["test/+/+/event"], false);
    common::output_ok(common::bin().args(["watch", "-q", "--config"]).arg(&cfg));
    let (retained, _) = subscribe(
        port,
        "test-late",
        &["homeassistant/#", "test/+/+/state", "test/+/status"],
        false,
    );
    let wanted = [
        "homeassistant/binary_sensor/testcam_front/red_star/config",
        "homeassistant/binary_sensor/testcam_front/green_square/config",
        "homeassistant/binary_sensor/testcam_back/red_star/config",
        "test/front/red_star/state",
        "test/front/green_square/state",
        "test/back/red_star/state",
        "test/front/status",
        "test/back/status",
    ];
    let t0 = Instant::now();
    let got: Vec<(String, Vec<u8>, bool)> = loop {
        let got = retained.lock().unwrap().clone();
        if wanted.iter().all(|w| got.iter().any(|(t, _, _)| t == w))
            || t0.elapsed() > Duration::from_secs(10)
        {
            break got;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let topics: Vec<&str> = got.iter().map(|(t, _, _)| t.as_str()).collect();
    for w in wanted {
        assert!(topics.contains(&w), "no {w} in {topics:?}");
    }
    // The back camera does not watch the green square.
    assert!(
        !topics
            .iter()
            .any(|t| t.contains("back") && t.contains("green_square")),
        "{topics:?}"
    );
    let config = |t: &str| -> Value {
        let (_, p, _) = got.iter().find(|(x, _, _)| x == t).unwrap();
        serde_json::from_slice(p).unwrap()
    };
    let front = config("homeassistant/binary_sensor/testcam_front/red_star/config");
    let back = config("homeassistant/binary_sensor/testcam_back/red_star/config");
    assert_eq!(front["state_topic"], "test/front/red_star/state");
    assert_eq!(back["availability_topic"], "test/back/status");
    assert_ne!(
        front["device"]["identifiers"],
        back["device"]["identifiers"]
    );
    assert_eq!(back["device"]["name"], "clip-edge testcam-back");
    // Each camera fired its own events, tagged with its name.
    let t0 = Instant::now();
    let fired: Vec<(String, Value)> = loop {
        let got: Vec<(String, Value)> = fired
            .lock()
            .unwrap()
            .iter()
            .map(|(t, p, _)| (t.clone(), serde_json::from_slice(p).unwrap()))
            .collect();
        // front: red star x2 and green square x1; back: red star x2 (start and end each).
        if got.len() >= 10 || t0.elapsed() > Duration::from_secs(10) {
            break got;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let count = |topic: &str| fired.iter().filter(|(t, _)| t == topic).count();
    assert_eq!(count("test/front/red_star/event"), 4, "{fired:?}");
    assert_eq!(count("test/front/green_square/event"), 2, "{fired:?}");
    assert_eq!(count("test/back/red_star/event"), 4, "{fired:?}");
    for (t, f) in &fired {
        let camera = t.split('/').nth(1).unwrap();
        assert_eq!(f["camera"], camera, "{t}: {f}");
    }
    broker.kill().unwrap();
    let _ = broker.wait();
}

/// A certificate authority made for one test: its certificate and key.
struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        TestCa {
            cert: params.self_signed(&key).unwrap(),
            key,
        }
    }

    /// A leaf certificate and key (PEM) for `names`, for a server or a client.
    fn issue(&self, names: &[&str], server: bool) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![if server {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        }];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// `mqtts://` against Mosquitto's TLS listeners, with a CA and
/// certificates made in the test: the right CA gets the events through;
/// a wrong CA, or none (the system's roots do not know the test's CA), is
/// one error line naming the certificate check and publishes nothing; a
/// listener that requires a client certificate takes `--mqtt-cert` and
/// `--mqtt-key` and refuses a client without them.
#[test]
#[ignore = "needs mosquitto (apt-get install mosquitto); .ci/run runs it with --ignored"]
fn mqtts_checks_the_broker_and_offers_a_client_certificate() {
    let dir = scratch("watch-mqtt-tls");
    let ca = TestCa::new("clip-edge test CA");
    let other = TestCa::new("someone else's CA");
    let (server_pem, server_key) = ca.issue(&["127.0.0.1", "localhost"], true);
    let (client_pem, client_key) = ca.issue(&["clip-edge"], false);
    let file = |name: &str, text: &str, mode: u32| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        // The broker may drop to its own user: it must be able to read its files.
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
        p
    };
    let ca_pem = file("ca.pem", &ca.cert.pem(), 0o644);
    let other_pem = file("other-ca.pem", &other.cert.pem(), 0o644);
    let server_pem = file("server.pem", &server_pem, 0o644);
    let server_key = file("server.key", &server_key, 0o644);
    let client_pem = file("client.pem", &client_pem, 0o644);
    let client_key = file("client.key", &client_key, 0o600);
    let (plain, tls, mutual) = (free_port(), free_port(), free_port());
    let tls_files = format!(
        "cafile {}\ncertfile {}\nkeyfile {}\n",
        ca_pem.display(),
        server_pem.display(),
        server_key.display()
    );
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "allow_anonymous true\nlistener {plain} 127.0.0.1\n\
             listener {tls} 127.0.0.1\n{tls_files}\
             listener {mutual} 127.0.0.1\n{tls_files}require_certificate true\n"
        ),
    )
    .unwrap();
    let mut broker = start_broker(&conf, plain);
    for port in [tls, mutual] {
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(10), "no TLS listener");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let (got, _) = subscribe(plain, "tls-sub", &["+/events"], false);
    let run = |url: String, extra: &[&std::path::PathBuf], flags: &[&str], log: &str| {
        let mut cmd = watch_clip();
        cmd.env("RUST_LOG", "error")
            .args(["--watch", "red star"])
            .arg("--events")
            .arg(dir.join(log))
            .args(["--mqtt", &url]);
        for (flag, path) in flags.iter().zip(extra) {
            cmd.arg(flag).arg(path);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The loop goes on without the broker: every run ends well.
    let ok = |(success, stderr): (bool, String)| {
        assert!(success, "{stderr}");
        stderr
    };
    let published = |topic: &str| -> Vec<String> {
        got.lock()
            .unwrap()
            .iter()
            .filter(|(t, _, _)| t == topic)
            .map(|(_, p, _)| String::from_utf8_lossy(p).into_owned())
            .collect()
    };
    let arrives = |topic: &str, log: &str| {
        let lines: Vec<String> = std::fs::read_to_string(dir.join(log))
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        assert!(!lines.is_empty(), "no event in {log}");
        let t0 = Instant::now();
        while !lines.iter().all(|l| published(topic).contains(l)) {
            assert!(
                t0.elapsed() < Duration::from_secs(15),
                "{topic}: events never arrived over TLS: {lines:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // The right CA.
    let stderr = ok(run(
        format!("mqtts://127.0.0.1:{tls}/good"),
        &[&ca_pem],
        &["--mqtt-ca"],
        "good.jsonl",
    ));
    assert!(!stderr.contains("mqtt:"), "{stderr}");
    arrives("good/events", "good.jsonl");
    // A client certificate where the listener requires one.
    ok(run(
        format!("mqtts://127.0.0.1:{mutual}/mutual"),
        &[&ca_pem, &client_pem, &client_key],
        &["--mqtt-ca", "--mqtt-cert", "--mqtt-key"],
        "mutual.jsonl",
    ));
    arrives("mutual/events", "mutual.jsonl");
    // A wrong CA; no CA (the system's roots); no client certificate.
    let wrong = ok(run(
        format!("mqtts://127.0.0.1:{tls}/wrong"),
        &[&other_pem],
        &["--mqtt-ca"],
        "wrong.jsonl",
    ));
    assert!(
        wrong.contains("TLS with 127.0.0.1:") && wrong.contains("mqtt_ca"),
        "{wrong}"
    );
    assert_eq!(
        wrong.lines().filter(|l| l.contains("TLS")).count(),
        1,
        "said once, not per retry: {wrong}"
    );
    // The system's roots do not know the test's CA (a machine with no roots
    // at all refuses to start, naming that instead).
    let (started, roots) = run(
        format!("mqtts://127.0.0.1:{tls}/roots"),
        &[],
        &[],
        "roots.jsonl",
    );
    assert!(
        (started && roots.contains("TLS with 127.0.0.1:"))
            || (!started && roots.contains("no CA certificates")),
        "{roots}"
    );
    let anonymous = ok(run(
        format!("mqtts://127.0.0.1:{mutual}/anonymous"),
        &[&ca_pem],
        &["--mqtt-ca"],
        "anonymous.jsonl",
    ));
    assert!(anonymous.contains("TLS with 127.0.0.1:"), "{anonymous}");
    for topic in ["wrong/events", "roots/events", "anonymous/events"] {
        assert!(published(topic).is_empty(), "{topic} got events");
    }
    broker.kill().unwrap();
    broker.wait().unwrap();
}

/// A TCP relay on 127.0.0.1 to `to` that holds each chunk `delay` in each
/// direction (a broker across a slow link: a VPN, a cloud broker, a Pi on
/// Wi-Fi). Returns its port.
fn slow_relay(to: u16, delay: Duration) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let pipe = move |mut from: std::net::TcpStream, mut to: std::net::TcpStream| {
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                std::thread::sleep(delay);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(std::net::Shutdown::Both);
        });
    };
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(broker) = std::net::TcpStream::connect(("127.0.0.1", to)) else {
                continue;
            };
            pipe(client.try_clone().unwrap(), broker.try_clone().unwrap());
            pipe(broker, client);
        }
    });
    port
}

/// A broker 150 ms away each way: the connection handshake and each
/// publish take longer than any poll of the connection, and still every
/// event, state and snapshot arrives, with the connection made once.
#[test]
#[ignore = "needs mosquitto (apt-get install mosquitto); .ci/run runs it with --ignored"]
fn a_broker_across_a_slow_link_gets_every_event() {
    let (dir, port, mut broker) = broker("watch-mqtt-slow", "");
    let (got, _) = subscribe(port, "slow-sub", &["slow/#"], false);
    let relay = slow_relay(port, Duration::from_millis(150));
    let log = dir.join("events.jsonl");
    let out = watch_clip()
        .env("RUST_LOG", "info")
        .args(["--fps", "25", "--watch", "red star"])
        .arg("--events")
        .arg(&log)
        .arg("--snapshots")
        .arg(dir.join("snapshots"))
        .args(["--mqtt", &format!("mqtt://127.0.0.1:{relay}/slow")])
        .arg("--stats")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("connected").count(),
        1,
        "one connection, made once: {stderr}"
    );
    let stats: Value = common::last_json_line(&out.stdout);
    assert_eq!(stats["mqtt"]["queued"], 0, "{stats}");
    assert_eq!(stats["mqtt"]["connect_failures"], 0, "{stats}");
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert!(lines.len() >= 2, "{lines:?}");
    let t0 = Instant::now();
    loop {
        let got = got.lock().unwrap().clone();
        let payloads = |topic: &str| -> Vec<String> {
            got.iter()
                .filter(|(t, _, _)| t == topic)
                .map(|(_, p, _)| String::from_utf8_lossy(p).into_owned())
                .collect()
        };
        let events = payloads("slow/events");
        let states = payloads("slow/red_star/state");
        let snapshots = got
            .iter()
            .filter(|(t, p, _)| t == "slow/red_star/snapshot" && p.starts_with(&[0xff, 0xd8]))
            .count();
        if lines.iter().all(|l| events.contains(l))
            && states.last().map(String::as_str) == Some("OFF")
            && states.iter().any(|s| s == "ON")
            && snapshots >= 1
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "missing: events {events:?}, states {states:?}, {snapshots} snapshot(s); log {lines:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    broker.kill().unwrap();
    let _ = broker.wait();
}

/// A broker that refuses messages over a size (Mosquitto's
/// `max_packet_size`; EMQX refuses over 1 MB by default) closes the
/// connection at each snapshot: the snapshot is dropped after three tries,
/// said in one line, and every event behind it still arrives.
#[test]
#[ignore = "needs mosquitto (apt-get install mosquitto); .ci/run runs it with --ignored"]
fn a_message_the_broker_refuses_does_not_block_the_rest() {
    let (dir, port, mut broker) = broker("watch-mqtt-refused", "max_packet_size 6000\n");
    let (got, _) = subscribe(port, "refused-sub", &["big/#"], false);
    let log = dir.join("events.jsonl");
    let out = watch_clip()
        .env("RUST_LOG", "warn")
        .args(["--fps", "10", "--watch", "red star"])
        .arg("--events")
        .arg(&log)
        .arg("--snapshots")
        .arg(dir.join("snapshots"))
        .args(["--mqtt", &format!("mqtt://127.0.0.1:{port}/big")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("big/red_star/snapshot (")
            && stderr.contains("dropped: the connection closed each of the 3 time(s)"),
        "{stderr}"
    );
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert!(lines.len() >= 2, "{lines:?}");
    let t0 = Instant::now();
    loop {
        let events: Vec<String> = got
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _, _)| t == "big/events")
            .map(|(_, p, _)| String::from_utf8_lossy(p).into_owned())
            .collect();
        if lines.iter().all(|l| events.contains(l)) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "events behind the refused snapshot never arrived: {events:?}; log {lines:?}; {stderr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    broker.kill().unwrap();
    let _ = broker.wait();
}

/// A camera a reload removes leaves Home Assistant: its discovery configs,
/// retained states and availability are emptied on the broker, the other
/// camera's stay.
#[test]
#[ignore = "needs mosquitto (apt-get install mosquitto); .ci/run runs it with --ignored"]
fn a_camera_removed_by_a_reload_leaves_home_assistant() {
    let (dir, port, mut broker) = broker("watch-mqtt-retire", "");
    let (cfg, stderr) = (dir.join("watch.toml"), dir.join("stderr.txt"));
    // A folder of frames per camera (two cameras may not read one source).
    for c in ["front", "back"] {
        std::fs::create_dir_all(dir.join(c)).unwrap();
        for f in common::clip_jpegs() {
            std::fs::copy(&f, dir.join(c).join(f.file_name().unwrap())).unwrap();
        }
    }
    let write = |cameras: &[&str]| {
        let mut text = format!(
            "bundle = {:?}\nmqtt = \"mqtt://127.0.0.1:{port}/test\"\nnode = \"testcam\"\nfps = 4.0\n\
             watch = [\"red star\"]\n",
            common::root().join("models/default-int8").display().to_string(),
        );
        for c in cameras {
            text += &format!(
                "\n[[camera]]\nname = \"{c}\"\nsource = {:?}\n",
                format!("dir:{}", dir.join(c).display()),
            );
        }
        std::fs::write(&cfg, text).unwrap();
    };
    write(&["front", "back"]);
    let mut cmd = common::bin();
    let mut child = common::own_group(&mut cmd)
        .args(["watch", "-q", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let retained_now = |id: &str| -> Vec<String> {
        let (got, _) = subscribe(port, id, &["homeassistant/#", "test/#"], false);
        std::thread::sleep(Duration::from_millis(1000));
        let topics = got
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, p, r)| *r && !p.is_empty())
            .map(|(t, _, _)| t.clone())
            .collect();
        topics
    };
    let back_config = "homeassistant/binary_sensor/testcam_back/red_star/config";
    let t0 = Instant::now();
    while !retained_now("before").iter().any(|t| t == back_config) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no config for back: {}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        );
    }
    write(&["front"]);
    let ok = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let t0 = Instant::now();
    while !std::fs::read_to_string(&stderr)
        .unwrap_or_default()
        .contains("reloaded: bundle")
    {
        assert!(t0.elapsed() < Duration::from_secs(60), "no reload");
        std::thread::sleep(Duration::from_millis(20));
    }
    let t0 = Instant::now();
    let left = loop {
        let topics = retained_now("after");
        let back: Vec<String> = topics
            .iter()
            .filter(|t| t.contains("testcam_back") || t.starts_with("test/back/"))
            .cloned()
            .collect();
        if back.is_empty() || t0.elapsed() > Duration::from_secs(10) {
            break (topics, back);
        }
    };
    assert!(
        left.1.is_empty(),
        "the removed camera's retained topics: {:?}",
        left.1
    );
    assert!(
        left.0
            .iter()
            .any(|t| t == "homeassistant/binary_sensor/testcam_front/red_star/config"),
        "{:?}",
        left.0
    );
    common::kill_group(&mut child, "TERM");
    assert!(child.wait().unwrap().success());
    broker.kill().unwrap();
    let _ = broker.wait();
}
