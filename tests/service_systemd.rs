//! `clip-edge watch` as systemd runs it: the test plays systemd with a
//! datagram socket as `NOTIFY_SOCKET` and a `WATCHDOG_USEC`, and asserts
//! `READY=1`, then repeated `WATCHDOG=1` while the loop idles (after a
//! `STATUS=` line has counted every frame fed); SIGTERM mid-event stops within
//! 2 s with the event closed as "shutdown"; a loop stalled on purpose stops
//! petting (timed from the stall's log line).

mod common;

use common::{bin, clip_jpegs, root, scratch};
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// systemd's budget for a stop (the unit's TimeoutStopSec is larger),
/// from the signal sent to the exit. Measured: 179 ms.
const STOP_WITHIN: Duration = Duration::from_secs(2);

/// Frames the first test writes to the loop's stdin.
const FED: usize = 22;

/// Whether `line` is a `STATUS=` line (`N frames, M dropped, …`) with
/// `N + M == fed`.
fn all_taken(line: &str, fed: usize) -> bool {
    let Some(status) = line.strip_prefix("STATUS=") else {
        return false;
    };
    let count = |unit: &str| -> Option<usize> {
        status
            .split(", ")
            .find_map(|part| part.strip_suffix(unit)?.parse().ok())
    };
    matches!((count(" frames"), count(" dropped")), (Some(n), Some(m)) if n + m == fed)
}

/// Everything received so far, as lines.
fn drain(sock: &UnixDatagram, into: &mut Vec<(Instant, String)>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = sock.recv(&mut buf) {
        for line in String::from_utf8_lossy(&buf[..n]).lines() {
            into.push((Instant::now(), line.to_string()));
        }
    }
}

fn systemd_socket(name: &str) -> (UnixDatagram, PathBuf, PathBuf) {
    let dir = scratch(name);
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    (sock, path, dir)
}

#[test]
fn ready_then_watchdog_pings_and_sigterm_closes_events_within_2_s() {
    let (sock, path, dir) = systemd_socket("systemd-notify");
    let events = dir.join("events.jsonl");
    let mut cmd = bin();
    let mut child = common::own_group(&mut cmd)
        .args([
            "watch",
            "--source",
            "stdin:mjpeg",
            "--watch",
            "red star",
            "--bundle",
        ])
        .arg(root().join("models/default-int8"))
        .arg("--events")
        .arg(&events)
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "300000")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut got = Vec::new();
    let t0 = Instant::now();
    while !got.iter().any(|(_, l): &(Instant, String)| l == "READY=1") {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no READY=1: {got:?}"
        );
        drain(&sock, &mut got);
    }
    // Frames up to the middle of the first red star, then silence: the
    // loop idles, still alive, still petting.
    let mut stdin = child.stdin.take().unwrap();
    for f in &clip_jpegs()[..FED] {
        stdin.write_all(&std::fs::read(f).unwrap()).unwrap();
        std::thread::sleep(Duration::from_millis(40));
    }
    let t0 = Instant::now();
    while !std::fs::read_to_string(&events)
        .unwrap_or_default()
        .contains("\"start\"")
    {
        assert!(t0.elapsed() < Duration::from_secs(60), "no event started");
        drain(&sock, &mut got);
    }
    // The idle window starts once the loop has taken every frame (inferred
    // or dropped, as a `STATUS=` line says): where a frame takes longer
    // than the ping period (a debug build under qemu, a loaded machine), the
    // loop pets only between frames, and that is not what this measures.
    let t0 = Instant::now();
    while !got.iter().any(|(_, l)| all_taken(l, FED)) {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no STATUS= line with {FED} frames taken: {got:?}"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the process exited: {got:?}"
        );
        drain(&sock, &mut got);
    }
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_millis(1500) {
        drain(&sock, &mut got);
    }
    let pings_idle = got
        .iter()
        .filter(|(t, l)| l == "WATCHDOG=1" && *t >= quiet)
        .count();
    assert!(
        pings_idle >= 3,
        "{pings_idle} pings in 1.5 s at WATCHDOG_USEC=0.3 s: {got:?}"
    );

    common::kill_group(&mut child, "TERM");
    let t_term = Instant::now();
    let status = child.wait().unwrap();
    let took = t_term.elapsed();
    drop(stdin);
    assert!(status.success(), "exit {status:?}");
    assert!(took <= STOP_WITHIN, "stopped in {took:?}");
    drain(&sock, &mut got);
    assert!(got.iter().any(|(_, l)| l == "STOPPING=1"), "{got:?}");
    let log = std::fs::read_to_string(&events).unwrap();
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "end");
    assert_eq!(last["reason"], "shutdown");
}

#[test]
fn a_stalled_loop_stops_petting_the_watchdog() {
    let (sock, path, dir) = systemd_socket("systemd-stall");
    let stderr = dir.join("stderr.log");
    let mut cmd = bin();
    let mut child = common::own_group(&mut cmd)
        .args(["watch", "--fps", "20", "--watch", "red star", "--bundle"])
        .arg(root().join("models/default-int8"))
        .arg("--source")
        .arg(format!(
            "dir:{}",
            root().join("models/clips/shapes").display()
        ))
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "200000")
        .env(clip_edge::service::systemd::STALL_ENV, "10")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let mut got = Vec::new();
    // 10 frames at 20 fps, pings at every frame past 0.1 s, then the loop
    // stalls on purpose and says so (after its last ping: the stall is
    // checked before the pet). Timed from that line, not from the frames,
    // whose pace under qemu is seconds.
    let t0 = Instant::now();
    while !std::fs::read_to_string(&stderr)
        .unwrap_or_default()
        .contains("stalling the frame loop on purpose")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the loop never reached its stall: {got:?}"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the process exited before its stall: {}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        );
        drain(&sock, &mut got);
    }
    // The service pets while every camera's loop turned within half the
    // watchdog's time: one more ping may come within that time of the stall.
    let grace = Instant::now();
    while grace.elapsed() < Duration::from_millis(300) {
        drain(&sock, &mut got);
    }
    let pings = |got: &[(Instant, String)]| got.iter().filter(|(_, l)| l == "WATCHDOG=1").count();
    let before = pings(&got);
    assert!(
        got.iter().any(|(_, l)| l == "READY=1") && before >= 2,
        "the loop never petted before stalling: {got:?}"
    );
    // Ten ping periods of silence, the process alive.
    let silence = Instant::now();
    while silence.elapsed() < Duration::from_secs(2) {
        drain(&sock, &mut got);
    }
    assert_eq!(pings(&got), before, "pinged while stalled: {got:?}");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the process exited: pings stopped for another reason"
    );
    common::kill_group(&mut child, "KILL");
}
