//! SIGHUP reloads `watch`'s config and bundle: a corrupted bundle is
//! refused with a log line and the running one goes on; a good one is
//! verified, loaded and swapped in, and the loop goes on with it.

mod common;

use common::{bin, clip_jpegs, root, scratch};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn config(path: &Path, bundle: &Path, events: &Path) {
    std::fs::write(
        path,
        format!(
            "bundle = {:?}\nsource = \"stdin:mjpeg\"\nwatch = [\"red star\"]\nevents = {:?}\n",
            bundle.display().to_string(),
            events.display().to_string()
        ),
    )
    .unwrap();
}

/// SIGHUP to clip-edge. Under qemu the child is the runner (`timeout …
/// qemu-… clip-edge`), and `timeout` takes a SIGHUP as a reason to end its
/// command: the signal goes to the emulator, the runner's child, instead.
fn hup(child: &Child) {
    let pid = child.id();
    let target = if std::env::var_os("CLIP_TEST_RUNNER").is_some() {
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .ok()
            .and_then(|c| c.split_whitespace().next().map(String::from))
            .expect("the runner's child (the emulator)")
    } else {
        pid.to_string()
    };
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &target])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn wait_for(log: &Path, needle: &str) -> String {
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no {needle:?} in:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The longest time allowed between two pings the test read during a
/// reload that waits 3 s for a camera (pings every 0.2 s; the test reads
/// them when it runs, so a paused test thread lengthens a gap). Measured:
/// 205 ms.
const PING_GAP_MAX: Duration = Duration::from_millis(2000);
#[test]
fn sighup_refuses_a_bad_bundle_and_swaps_in_a_good_one() {
    let dir = scratch("reload");
    let (cfg, events, stderr) = (
        dir.join("watch.toml"),
        dir.join("events.jsonl"),
        dir.join("stderr.txt"),
    );
    // A corrupted copy of the int8 bundle: one byte of the encoder flipped.
    let bad = dir.join("bad-bundle");
    std::fs::create_dir_all(&bad).unwrap();
    for e in std::fs::read_dir(root().join("models/default-int8")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, bad.join(p.file_name().unwrap())).unwrap();
    }
    let enc = bad.join("image_encoder.nnef.tgz");
    let mut bytes = std::fs::read(&enc).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&enc, bytes).unwrap();

    config(&cfg, &root().join("models/default-int8"), &events);
    let mut child = bin()
        .args(["watch", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let frames = clip_jpegs();
    // Up to the first red star's start on the int8 bundle.
    for f in &frames[..16] {
        stdin.write_all(&std::fs::read(f).unwrap()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_for(&events, "\"start\"");

    config(&cfg, &bad, &events);
    hup(&child);
    let err = wait_for(&stderr, "reload refused");
    assert!(
        err.contains("bad-bundle"),
        "the refusal names the bundle:\n{err}"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited on a bad bundle"
    );

    config(&cfg, &root().join("models/default-fp32"), &events);
    hup(&child);
    wait_for(&stderr, "reloaded: bundle");
    let err = std::fs::read_to_string(&stderr).unwrap();
    assert!(err.contains("default-fp32 (fp32)"), "{err}");
    // The open event was ended by the swap; the fp32 bundle sees the next one.
    wait_for(&events, "\"reason\":\"reload\"");
    // Paced for the machine: a live source drops what the loop has no time
    // for, and under qemu a frame takes a good fraction of a second.
    let pace = if std::env::var_os("CLIP_TEST_RUNNER").is_some() {
        400
    } else {
        20
    };
    let feed = |stdin: &mut std::process::ChildStdin, fs: &[PathBuf]| {
        for f in fs {
            stdin.write_all(&std::fs::read(f).unwrap()).unwrap();
            std::thread::sleep(Duration::from_millis(pace));
        }
    };
    // The second red star (frames 111..125) plays until the fp32 bundle has
    // opened its event, however slow the frames are: the loop takes only
    // the newest, and an event needs two positives in three frames taken.
    feed(&mut stdin, &frames[108..111]);
    let t0 = Instant::now();
    while std::fs::read_to_string(&events)
        .unwrap()
        .matches("\"event\":\"start\"")
        .count()
        < 2
    {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the fp32 bundle never saw the second star"
        );
        feed(&mut stdin, &frames[111..125]);
    }
    feed(&mut stdin, &frames[125..128]);
    drop(stdin);
    assert!(child.wait().unwrap().success());
    let log: Vec<serde_json::Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let starts = log.iter().filter(|e| e["event"] == "start").count();
    assert_eq!(starts, 2, "{log:?}");
    assert_eq!(log.last().unwrap()["event"], "end");
}

/// Two cameras, one of them changed in the config: SIGHUP restarts that
/// one (its open event ends as "reload", its new watch list applies) and
/// the other runs on untouched (its events are the clip's truth).
#[test]
fn sighup_restarts_the_changed_camera_and_keeps_the_other() {
    let dir = scratch("reload-cameras");
    let (cfg, events, stderr) = (
        dir.join("watch.toml"),
        dir.join("events.jsonl"),
        dir.join("stderr.txt"),
    );
    // The back camera's clip holds its red star 40 frames longer (frame 20
    // again): its event stays open 7.5 s, through the reload on a loaded
    // machine too.
    let copy = dir.join("clip-copy");
    std::fs::create_dir_all(&copy).unwrap();
    let jpegs = clip_jpegs();
    let held = jpegs[..=20]
        .iter()
        .chain(std::iter::repeat_n(&jpegs[20], 40))
        .chain(&jpegs[21..]);
    for (i, f) in held.enumerate() {
        std::fs::copy(f, copy.join(format!("{i:05}.jpg"))).unwrap();
    }
    let (watched, _) = common::clip_truth();
    let write = |back_watch: &str| {
        std::fs::write(
            &cfg,
            format!(
                "bundle = {:?}\nevents = {:?}\nfps = 8.0\n\n\
                 [[camera]]\nname = \"front\"\nsource = {:?}\nwatch = {:?}\n\n\
                 [[camera]]\nname = \"back\"\nsource = {:?}\nwatch = {back_watch}\n",
                root().join("models/default-int8").display().to_string(),
                events.display().to_string(),
                format!("dir:{}", root().join("models/clips/shapes").display()),
                watched,
                format!("dir:{}", copy.display()),
            ),
        )
        .unwrap();
    };
    write("[\"red star\"]");
    let mut child = bin()
        .args(["watch", "--quiet", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    // The back camera's red star is open (frames 12..72, 7.5 s at 8 fps).
    wait_for(&events, "\"camera\":\"back\"");
    write("[\"red star\", \"blue circle\"]");
    hup(&child);
    let err = wait_for(&stderr, "reloaded: bundle");
    assert!(err.contains("cameras front, back"), "{err}");
    assert!(child.wait().unwrap().success());
    let log = common::read_log(&events);
    let of = |name: &str| -> Vec<serde_json::Value> {
        log.iter()
            .filter(|e| e["camera"] == name)
            .cloned()
            .collect()
    };
    let front = common::spans_of(&of("front"));
    assert!(
        front.iter().all(|s| s.3.as_deref() != Some("reload")),
        "{front:?}"
    );
    common::assert_matches_truth(&front);
    let back = common::spans_of(&of("back"));
    assert_eq!(back[0].0, "red star");
    assert_eq!(back[0].3.as_deref(), Some("reload"), "{back:?}");
    assert!(
        back.iter().any(|s| s.0 == "blue circle"),
        "the new watch list did not apply: {back:?}"
    );
}

/// A reload that adds an `http://` camera slow to answer (3 s to its first
/// picture, as a camera across a weak link): the watchdog is petted all
/// the while, by the reload, not only between its steps.
#[test]
fn a_reload_opening_a_slow_camera_keeps_petting_the_watchdog() {
    use std::io::{Read, Write as _};
    use std::os::unix::net::UnixDatagram;
    let dir = scratch("reload-watchdog");
    let (cfg, stderr) = (dir.join("watch.toml"), dir.join("stderr.txt"));
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    // A snapshot URL: each request answered with one JPEG, the first 3 s late.
    let jpeg = std::fs::read(&clip_jpegs()[0]).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { continue };
            let jpeg = jpeg.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                if n == 0 {
                    std::thread::sleep(Duration::from_secs(3));
                }
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    jpeg.len()
                );
                let _ = conn.write_all(&jpeg);
            });
        }
    });
    let write = |cameras: &str| {
        std::fs::write(
            &cfg,
            format!(
                "bundle = {:?}\nwatch = [\"red star\"]\nfps = 4.0\n\n\
                 [[camera]]\nname = \"front\"\nsource = \"stdin:mjpeg\"\n{cameras}",
                root().join("models/default-int8").display().to_string(),
            ),
        )
        .unwrap();
    };
    write("");
    let mut cmd = bin();
    let mut child = common::own_group(&mut cmd)
        .args(["watch", "--quiet", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let mut got: Vec<(Instant, String)> = Vec::new();
    let drain = |got: &mut Vec<(Instant, String)>| {
        let mut buf = [0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            for line in String::from_utf8_lossy(&buf[..n]).lines() {
                got.push((Instant::now(), line.to_string()));
            }
        }
    };
    let t0 = Instant::now();
    while !got.iter().any(|(_, l)| l == "READY=1") {
        assert!(t0.elapsed() < Duration::from_secs(120), "no READY=1");
        drain(&mut got);
    }
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(&std::fs::read(&clip_jpegs()[0]).unwrap())
        .unwrap();
    // Idle and petting before the reload.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(1) {
        drain(&mut got);
    }
    write(&format!(
        "\n[[camera]]\nname = \"back\"\nsource = \"http://127.0.0.1:{port}/snapshot.jpg\"\n"
    ));
    let hup_at = Instant::now();
    hup(&child);
    let t0 = Instant::now();
    while !std::fs::read_to_string(&stderr)
        .unwrap_or_default()
        .contains("reloaded: bundle")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no reload: {}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        );
        drain(&mut got);
    }
    let done = Instant::now();
    drain(&mut got);
    let err = std::fs::read_to_string(&stderr).unwrap();
    assert!(err.contains("cameras front, back"), "{err}");
    assert!(
        done - hup_at >= Duration::from_millis(2500),
        "the camera did not take its 3 s: {err}"
    );
    // The longest time without a ping from the HUP to the reload's end.
    let mut at: Vec<Instant> = got
        .iter()
        .filter(|(t, l)| l == "WATCHDOG=1" && *t >= hup_at)
        .map(|(t, _)| *t)
        .collect();
    at.insert(0, hup_at);
    at.push(done);
    let gap = at.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(
        gap <= PING_GAP_MAX,
        "no ping for {gap:?} during the reload (pings every 0.2 s)"
    );
    common::kill_group(&mut child, "TERM");
    drop(stdin);
    assert!(child.wait().unwrap().success());
}
