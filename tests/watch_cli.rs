//! `clip-edge watch` as a process on the committed clip
//! (`models/clips/shapes`, made by `clip-quantize synth --clip`; its truth
//! is `truth.json`) with the default int8 bundle.

mod common;

use common::{assert_matches_truth, bin, clip_truth as truth, read_log, root, scratch, spans_of};
use serde_json::Value;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The exit status of settings that cannot work (EX_CONFIG).
const EX_CONFIG: i32 = 78;

fn clip() -> PathBuf {
    root().join("models/clips/shapes")
}

fn bundle() -> PathBuf {
    root().join("models/default-int8")
}

fn watch_cmd(events: &Path, extra: &[&str]) -> Command {
    let (watched, _) = truth();
    let mut c = bin();
    c.arg("watch")
        .arg("--bundle")
        .arg(bundle())
        .arg("--source")
        .arg(format!("dir:{}", clip().display()))
        .arg("--events")
        .arg(events);
    for w in &watched {
        c.args(["--watch", w]);
    }
    c.args(extra);
    c
}

/// A config that watches the committed clip for "red star".
fn write_clip_config(path: &Path) {
    std::fs::write(
        path,
        format!(
            "bundle = {:?}\nsource = {:?}\nwatch = [\"red star\"]\n",
            bundle().display().to_string(),
            format!("dir:{}", clip().display())
        ),
    )
    .unwrap();
}

#[test]
fn events_match_the_clip_truth_and_motion_gating_changes_none() {
    let dir = scratch("watch-truth");
    let mut results = Vec::new();
    for (name, extra) in [
        ("plain", vec![]),
        ("gated", vec!["--motion-threshold", "2.5"]),
    ] {
        let events = dir.join(format!("{name}.jsonl"));
        let snaps = dir.join(format!("{name}-snaps"));
        let mut args = extra.clone();
        let snaps_s = snaps.display().to_string();
        args.extend(["--snapshots", &snaps_s, "--stats"]);
        let out = common::output_ok(&mut watch_cmd(&events, &args));
        let stats: Value = common::last_json_line(&out.stdout);
        assert_eq!(stats["stats"]["frames"], 137);
        assert_eq!(stats["engine"], "native");
        let log = read_log(&events);
        let spans = spans_of(&log);
        assert_matches_truth(&spans);
        // Each start names a snapshot of the start frame that exists.
        for s in log.iter().filter(|e| e["event"] == "start") {
            let p = PathBuf::from(s["snapshot"].as_str().unwrap());
            let img = image::open(&p).unwrap();
            assert_eq!((img.width(), img.height()), (320, 240));
        }
        let ids: HashSet<&str> = log.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), spans.len(), "ids are unique per event");
        if name == "gated" {
            let inferred = stats["stats"]["inferred"].as_u64().unwrap();
            assert!(inferred < 137, "--motion-threshold skipped no frame");
            eprintln!("--motion-threshold: {inferred} of 137 frames inferred");
        }
        results.push(
            spans
                .into_iter()
                .map(|(l, s, e, _)| (l, s, e))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(
        results[0], results[1],
        "--motion-threshold changed the events"
    );
}

#[test]
fn kill_9_mid_event_then_the_same_command_repairs_and_goes_on() {
    let dir = scratch("watch-kill");
    let events = dir.join("events.jsonl");
    // At 10 fps the first event is open 2 s: the kill lands in it on a
    // loaded machine too.
    let mut cmd = watch_cmd(&events, &["--fps", "10"]);
    let mut child = common::own_group(&mut cmd)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for an event to be open, then kill.
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        if text.contains("\"start\"") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "no event started");
        std::thread::sleep(Duration::from_millis(5));
    }
    common::kill_group(&mut child, "KILL");
    let before = std::fs::read_to_string(&events).unwrap();
    let complete = &before[..before.rfind('\n').map_or(0, |i| i + 1)];

    common::output_ok(&mut watch_cmd(&events, &[]));
    let after = std::fs::read_to_string(&events).unwrap();
    assert!(after.starts_with(complete), "earlier lines changed");
    let log = read_log(&events);
    let ids: Vec<&str> = log
        .iter()
        .filter(|e| e["event"] == "start")
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "ids repeat: {ids:?}"
    );
    let spans = spans_of(&log);
    let interrupted: Vec<_> = spans
        .iter()
        .filter(|s| s.3.as_deref() == Some("interrupted"))
        .collect();
    assert_eq!(interrupted.len(), 1, "{spans:?}");
    // The second run saw the whole clip.
    let second: Vec<_> = spans
        .iter()
        .skip_while(|s| s.3.as_deref() != Some("interrupted"))
        .skip(1)
        .cloned()
        .collect();
    assert_matches_truth(&second);
}

#[test]
fn stdin_mjpeg_plays_a_concatenated_stream_to_its_end() {
    let dir = scratch("watch-stdin");
    let events = dir.join("events.jsonl");
    let files = common::clip_jpegs();
    let (watched, _) = truth();
    let mut c = bin();
    c.args(["watch", "--source", "stdin:mjpeg", "--stats", "--bundle"])
        .env("RUST_LOG", "warn")
        .arg(bundle())
        .arg("--events")
        .arg(&events)
        .args(["--watch", &watched[0]])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        // Frame by frame at about 100 fps, as a camera would write them.
        for f in &files {
            stdin.write_all(&std::fs::read(f).unwrap()).unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
        // Then a corrupt one (SOI, EOI, nothing between): skipped and
        // counted, the stream goes on to its end.
        stdin.write_all(&[0xFF, 0xD8, 0xFF, 0xD9]).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: Value = common::last_json_line(&out.stdout);
    let frames = stats["stats"]["frames"].as_u64().unwrap();
    let dropped = stats["stats"]["dropped"].as_u64().unwrap();
    assert_eq!(frames + dropped, files.len() as u64, "{stats}");
    assert_eq!(stats["stats"]["bad_frames"], 1, "{stats}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let skipped = format!("stdin frame {}: ", files.len());
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(&skipped) && l.ends_with("; frame skipped")),
        "{stderr}"
    );
    // Every event is closed; the last ones by the end of the stream at the latest.
    let log = read_log(&events);
    for (_, _, _, reason) in spans_of(&log) {
        assert!(reason.is_none() || reason.as_deref() == Some("source_end"));
    }
}

/// Events the fast path may add to the exact path's on the wide scene
/// (measured: 1, a second red star at frames 44 to 48 that the exact path
/// scores below the threshold).
const FAST_EXTRA_EVENTS: usize = 1;

/// `--decode fast` on the wide scene (960x540, decoded at 1/4, 240x135, for
/// the default model's 64-pixel input; the snapshots show the size): every
/// event of the exact path, at the same frames, and at most
/// [`FAST_EXTRA_EVENTS`] more.
#[test]
fn decode_fast_keeps_the_exact_paths_events_on_the_wide_scene() {
    let dir = scratch("watch-decode-fast");
    let mut runs = Vec::new();
    for (mode, size) in [("exact", (960, 540)), ("fast", (240, 135))] {
        let events = dir.join(format!("{mode}.jsonl"));
        let snaps = dir.join(format!("{mode}-snaps"));
        let out = common::output_ok(
            bin()
                .args(["watch", "--bundle"])
                .arg(bundle())
                .arg("--source")
                .arg(format!(
                    "dir:{}",
                    root().join("models/clips/yard").display()
                ))
                .args(["--watch", "red star", "--watch", "yellow triangle"])
                .args(["--decode", mode, "--stats", "-q", "--events"])
                .arg(&events)
                .arg("--snapshots")
                .arg(&snaps),
        );
        let stats: Value = common::last_json_line(&out.stdout);
        assert_eq!(stats["stats"]["frames"], 166, "{mode}");
        assert_eq!(stats["stats"]["bad_frames"], 0, "{mode}");
        let log = read_log(&events);
        for s in log.iter().filter(|e| e["event"] == "start") {
            let img = image::open(s["snapshot"].as_str().unwrap()).unwrap();
            assert_eq!((img.width(), img.height()), size, "{mode}");
        }
        runs.push(
            spans_of(&log)
                .into_iter()
                .map(|(l, s, e, _)| (l, s, e))
                .collect::<Vec<_>>(),
        );
    }
    let (exact, fast) = (&runs[0], &runs[1]);
    assert!(!exact.is_empty());
    for e in exact {
        assert!(
            fast.contains(e),
            "{e:?} missing from the fast path's {fast:?}"
        );
    }
    assert!(
        fast.len() <= exact.len() + FAST_EXTRA_EVENTS,
        "exact {exact:?}, fast {fast:?}"
    );
}

#[test]
fn bad_settings_are_one_line_errors_naming_them() {
    let dir = scratch("watch-bad");
    let events = dir.join("e.jsonl");
    let cfg = dir.join("watch.toml");
    std::fs::write(
        &cfg,
        "source = \"dir:/nowhere\"\nwatch = [\"red star\"]\nthreshhold = 0.5\n",
    )
    .unwrap();
    let cfg_s = cfg.display().to_string();
    // A value the file gives (not the command line) is named by its line.
    let cfg_fps = dir.join("fps.toml");
    std::fs::write(&cfg_fps, "# at night\nfps = 0\n").unwrap();
    let cfg_fps_s = cfg_fps.display().to_string();
    let fps_line = format!("{cfg_fps_s}: line 2: --fps 0:");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--watch", "pink whale"], "\"pink whale\": not a label"),
        (vec!["--watch", "red star=2"], "threshold \"2\""),
        (vec!["--window", "2", "--hits", "3"], "hits 3"),
        (vec!["--fps", "0"], "--fps 0"),
        // A chip that is there (any path: only the label is wrong).
        (
            vec!["--gpio", "/dev/null:17=blue circle"],
            "\"blue circle\" is not watched",
        ),
        (vec!["--mqtt", "http://x"], "--mqtt \"http://x\""),
        (
            vec!["--config", &cfg_s],
            "line 3: unknown key `threshhold` (docs/watch.md lists the keys)",
        ),
        (vec!["--config", &cfg_fps_s], &fps_line),
        (vec!["--regions", "tiles:0x2"], "--regions \"tiles:0x2\""),
        (
            vec!["--events-max-mb", "1", "--events-keep", "0"],
            "--events-keep 0",
        ),
        (vec!["--snapshot-max-mb=-1"], "--snapshot-max-mb -1"),
        // A negative number after a space is the option's value.
        (vec!["--fps", "-1"], "--fps -1"),
        (
            vec!["--regions", "motion", "--min-area", "2"],
            "--min-area 2",
        ),
        (vec!["--zone", "porch=1,2,3"], "--zone \"porch=1,2,3\""),
        (
            vec!["--regions", "motion", "--decode", "fast"],
            "--decode fast",
        ),
        (
            vec!["--regions", "motion", "--motion-threshold", "3"],
            "--motion-threshold",
        ),
        // Places that cannot be written, and a GPIO chip the board lacks.
        (
            vec!["--snapshots", "/etc/hostname"],
            "--snapshots /etc/hostname: not a folder",
        ),
        (
            vec!["--gpio", "/dev/gpiochip97:17=red star"],
            "--gpio /dev/gpiochip97:17: no GPIO chip /dev/gpiochip97",
        ),
        // Known at the first frame (the clip is 320x240).
        (
            vec!["--zone", "far=300,0,100,100"],
            "zone \"far\" (300,0 100x100) is not inside the source's 320x240 frame",
        ),
    ];
    // A file that is not an event log, and a status page's port another
    // program holds: said before the start-up line, which never comes.
    let not_a_log = dir.join("notes.txt");
    std::fs::write(&not_a_log, "my notes\n").unwrap();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    for (out, needle) in [
        (
            watch_cmd(&not_a_log, &[]).output().unwrap(),
            "is not an event",
        ),
        (
            watch_cmd(&events, &["--http", &format!("127.0.0.1:{port}")])
                .output()
                .unwrap(),
            "Address already in use",
        ),
    ] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(EX_CONFIG), "{err}");
        assert!(err.contains(needle), "{err}");
        assert!(
            out.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert_eq!(std::fs::read(&not_a_log).unwrap(), b"my notes\n");
    // A mistyped option: one line with clap's tip, exit 2, and with --json
    // the line as JSON on stdout.
    let out = watch_cmd(&events, &["--json-events", "--thread", "2"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(
        err.trim(),
        "error: unexpected argument '--thread' found (a similar argument exists: '--threads'); see clip-edge watch --help"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["error"].as_str().unwrap().contains("--thread"), "{v}");
    // An event log that is a folder.
    let out = watch_cmd(&dir, &[]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EX_CONFIG), "{err}");
    assert!(err.contains("a folder, expected a file"), "{err}");
    for (args, needle) in cases {
        let out = watch_cmd(&events, &args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(EX_CONFIG), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
    let out = bin()
        .args([
            "watch", "--watch", "red star", "--source", "cam:0", "--bundle",
        ])
        .arg(bundle())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(EX_CONFIG) && err.contains("--source \"cam:0\""),
        "{err}"
    );
}

/// `watch --check` names every problem, one line each, exit 78 (the
/// status page's address and the broker tried whatever else is wrong); a
/// config that holds is one "ok" line, exit 0; nothing is started either
/// way.
#[test]
fn check_names_every_problem_of_a_config_and_starts_nothing() {
    let dir = scratch("watch-check");
    let cfg = dir.join("watch.toml");
    std::fs::write(
        &cfg,
        format!(
            "bundle = {:?}\nsource = \"libcamera:?zoom=2\"\nwatch = [\"pink whale\"]\nmqtt = \"http://x\"\nevents = {:?}\n",
            bundle().display().to_string(),
            dir.join("events.jsonl").display().to_string(),
        ),
    )
    .unwrap();
    let out = bin()
        .args(["watch", "--check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EX_CONFIG), "{err}");
    let lines: Vec<&str> = err.trim().lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    for needle in [
        "unknown key \"zoom\"",
        "\"pink whale\": not a label",
        "--mqtt",
    ] {
        assert!(lines.iter().any(|l| l.contains(needle)), "{needle}: {err}");
    }
    assert!(!dir.join("events.jsonl").exists(), "--check opened the log");
    // Problems of every stage at once: a value, a GPIO chip the board
    // lacks, a label the bundle lacks, an address of no interface, a
    // broker that does not answer.
    let many = dir.join("many.toml");
    std::fs::write(
        &many,
        format!(
            "bundle = {:?}\nsource = \"dir:{}\"\nwatch = [\"red star\", \"pink whale\"]\nfps = 0\ngpio = [\"/dev/gpiochip99:3=red star\"]\nhttp = \"192.0.2.1:8080\"\nmqtt = \"mqtt://127.0.0.1:{}\"\n",
            bundle().display().to_string(),
            root().join("models/clips/shapes").display(),
            common::free_port(),
        ),
    )
    .unwrap();
    let out = bin()
        .args(["watch", "--check", "--config"])
        .arg(&many)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EX_CONFIG), "{err}");
    let lines: Vec<&str> = err.trim().lines().collect();
    for needle in [
        "--fps 0",
        "\"pink whale\": not a label",
        "no GPIO chip /dev/gpiochip99",
        "--http 192.0.2.1:8080",
        "mqtt",
    ] {
        assert!(lines.iter().any(|l| l.contains(needle)), "{needle}: {err}");
    }
    assert_eq!(lines.len(), 5, "{err}");
    let good = dir.join("good.toml");
    write_clip_config(&good);
    let out = bin()
        .args(["watch", "--check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("ok: bundle ") && stdout.contains("watching red star from dir:"),
        "{stdout}"
    );
}

#[test]
fn with_no_bundle_source_or_config_flag_the_default_config_is_read() {
    let dir = scratch("watch-default-config");
    let cfg = dir.join("watch.toml");
    write_clip_config(&cfg);
    let out = common::output_ok(
        bin()
            .args(["watch", "--stats"])
            .env("CLIP_EDGE_CONFIG", &cfg),
    );
    let stats: Value = common::last_json_line(&out.stdout);
    assert_eq!(
        (
            stats["stats"]["frames"].as_u64(),
            stats["stats"]["events"].as_u64()
        ),
        (Some(137), Some(2))
    );
    // A config that says nothing: the missing setting is named.
    let empty = dir.join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let out = bin()
        .args(["watch"])
        .env("CLIP_EDGE_CONFIG", &empty)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(EX_CONFIG) && err.contains("--source is required"),
        "{err}"
    );
    // CLIP_EDGE_CONFIG naming no file is an error, not a silent default.
    let out = bin()
        .args(["watch"])
        .env("CLIP_EDGE_CONFIG", dir.join("absent.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(EX_CONFIG)
            && err.contains("CLIP_EDGE_CONFIG=")
            && err.contains("absent.toml: no such file"),
        "{err}"
    );
}

/// With nothing but bundle, source and labels, `watch` says what it runs
/// and prints a line per event; `-q` prints nothing; `--json-events`
/// prints the log's JSON lines (and the start-up line on stderr).
#[test]
fn watch_talks_a_line_per_event_quiet_says_nothing_json_events_print_json() {
    let run = |extra: &[&str]| {
        let out = common::output_ok(
            bin()
                .arg("watch")
                .arg("--bundle")
                .arg(bundle())
                .arg("--source")
                .arg(format!("dir:{}", clip().display()))
                .args(["--watch", "Red_Star"])
                .args(extra),
        );
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (out, _) = run(&[]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("watching dir:") && lines[0].contains("for red star (0.5) with "),
        "{out}"
    );
    let events: Vec<&str> = lines[1..].to_vec();
    assert_eq!(events.len(), 4, "{out}");
    for (line, kind) in events.iter().zip(["start", "end", "start", "end"]) {
        let words: Vec<&str> = line.split(' ').collect();
        assert!(words[0].ends_with('Z') && words[0].len() == 9, "{line}");
        assert_eq!(&words[1..4], [kind, "red", "star"], "{line}");
        assert!(words[5] == "frame", "{line}");
    }
    let (out, _) = run(&["-q"]);
    assert_eq!(out, "");
    let (out, err) = run(&["--json-events"]);
    assert!(err.contains("watching dir:"), "{err}");
    let json: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(json.len(), 4);
    assert!(json.iter().all(|v| v["label"] == "red star"));
}

/// Frames the loop cannot use in the middle of a `dir:` source: five of a
/// size the zone no longer fits (a camera back at another resolution), a
/// folder named as an image, an image preprocessing refuses (20000x1): each
/// skipped and counted as a bad frame, one warning for the five of one
/// size, and the frames after them watched as before.
#[test]
fn frames_the_loop_cannot_use_are_skipped_and_the_watch_goes_on() {
    let dir = scratch("watch-unusable-frames");
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    let jpegs = common::clip_jpegs();
    let mut n = 0;
    let mut next_name = |ext: &str| {
        n += 1;
        frames.join(format!("{:05}.{ext}", n - 1))
    };
    for f in &jpegs[..10] {
        std::fs::copy(f, next_name("jpg")).unwrap();
    }
    for _ in 0..5 {
        image::RgbImage::from_pixel(200, 150, image::Rgb([90, 90, 90]))
            .save(next_name("png"))
            .unwrap();
    }
    std::fs::create_dir(next_name("jpg")).unwrap();
    image::GrayImage::from_pixel(20000, 1, image::Luma([90]))
        .save(next_name("png"))
        .unwrap();
    for f in &jpegs[10..20] {
        std::fs::copy(f, next_name("jpg")).unwrap();
    }
    let run = |zone: &[&str]| {
        let out = bin()
            .args(["watch", "--watch", "red star", "--stats", "-q", "--bundle"])
            .arg(bundle())
            .arg("--source")
            .arg(format!("dir:{}", frames.display()))
            .arg("--events")
            .arg(dir.join("events.jsonl"))
            .args(zone)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        (common::last_json_line(&out.stdout), stderr)
    };
    let lines = |text: &str, needle: &str| text.lines().filter(|l| l.contains(needle)).count();
    // A zone the 200x150 frames (and the 20000x1 one) do not fit.
    let (stats, stderr) = run(&["--zone", "far=250,0,60,60"]);
    assert_eq!(stats["stats"]["frames"], 20, "{stats}");
    assert_eq!(stats["stats"]["bad_frames"], 7, "{stats}");
    let size = "frames of that size are skipped until they fit";
    assert_eq!(
        lines(
            &stderr,
            "frame 10 skipped: zone \"far\" (250,0 60x60) is not inside the source's 200x150 frame"
        ),
        1,
        "{stderr}"
    );
    assert_eq!(lines(&stderr, size), 2, "{stderr}");
    assert_eq!(lines(&stderr, "00015.jpg: Is a directory"), 1, "{stderr}");
    // The whole frame: the 200x150 frames are classified, 20000x1 is not.
    let (stats, stderr) = run(&[]);
    assert_eq!(stats["stats"]["frames"], 25, "{stats}");
    assert_eq!(stats["stats"]["bad_frames"], 2, "{stats}");
    assert_eq!(
        lines(&stderr, "frame 16 skipped: image is 20000x1"),
        1,
        "{stderr}"
    );
}
