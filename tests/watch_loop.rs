//! The watch loop in process: GPIO pins (embedded-hal mocks) follow the
//! events of the committed clip exactly.

mod common;

use clip_edge::watch::detect::Rules;
use clip_edge::watch::gpio::GpioLines;
use clip_edge::watch::source::{DirSource, FrameSource};
use clip_edge::watch::{Options, Sink, Watcher};
use common::{root, watched_at_half as watched};
use embedded_hal_mock::eh1::digital::{Mock, State, Transaction};
use std::sync::atomic::AtomicBool;

#[test]
fn gpio_lines_follow_the_clip_events_exactly() {
    let mut engine = common::default_int8_engine();
    let w = watched(&engine, &["red star", "green square", "yellow triangle"]);
    let t = |s| Transaction::set(s);
    // Low at start; red star is seen twice, green square and yellow triangle once.
    let red = Mock::new(&[
        t(State::Low),
        t(State::High),
        t(State::Low),
        t(State::High),
        t(State::Low),
    ]);
    let green = Mock::new(&[t(State::Low), t(State::High), t(State::Low)]);
    // Two lines may follow one label.
    let yellow_a = Mock::new(&[t(State::Low), t(State::High), t(State::Low)]);
    let yellow_b = Mock::new(&[t(State::Low), t(State::High), t(State::Low)]);
    let mut lines = GpioLines::new(vec![
        ("red star".into(), red.clone(), "red".into()),
        ("green square".into(), green.clone(), "green".into()),
        (
            "yellow triangle".into(),
            yellow_a.clone(),
            "yellow a".into(),
        ),
        (
            "yellow triangle".into(),
            yellow_b.clone(),
            "yellow b".into(),
        ),
    ]);
    let mut source = DirSource::open(&root().join("models/clips/shapes")).unwrap();
    assert_eq!(source.len(), 137);
    {
        let sinks: Vec<&mut dyn Sink> = vec![&mut lines];
        let opts = Options {
            watched: w,
            rules: Rules::default(),
            fps: None,
            motion_threshold: None,
            snapshots: None,
            snapshot_retention: Default::default(),
            source_name: "dir:models/clips/shapes".into(),
            camera: None,
            decode: Default::default(),
            regions: Default::default(),
        };
        let mut watcher = Watcher::new(&mut engine, opts, None, sinks);
        let stats = watcher
            .run(&mut source as &mut dyn FrameSource, &AtomicBool::new(false))
            .unwrap();
        assert_eq!((stats.frames, stats.events), (137, 4));
    }
    assert_eq!(lines.errors, 0);
    for mut m in [red, green, yellow_a, yellow_b] {
        m.done();
    }
}

/// Mean absolute difference (0-255) allowed between a frame and its
/// YUYV / NV12 capture converted back (limited-range rounding and chroma
/// subsampling at the shapes' edges). Measured: 0.38–0.66 (YUYV),
/// 0.46–0.87 (NV12) over the clip's frames at each capture size.
const CAPTURE_MEAN_ABS_TOL: f64 = 2.5;

/// Buffers as a V4L2 driver hands them out, one per dequeue, each with
/// the driver's "may be corrupt" flag; then the device is gone.
struct Captured {
    buffers: std::collections::VecDeque<(Vec<u8>, bool)>,
    current: Vec<u8>,
}

impl clip_edge::watch::source::v4l2::Capture for Captured {
    fn dequeue(&mut self) -> std::io::Result<clip_edge::watch::source::v4l2::Filled<'_>> {
        let (bytes, corrupt) = self
            .buffers
            .pop_front()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotConnected, "unplugged"))?;
        self.current = bytes;
        Ok(clip_edge::watch::source::v4l2::Filled {
            bytes: &self.current,
            corrupt,
        })
    }
}

/// A V4L2 camera's MJPG, YUYV and NV12 captures of clip frames (the JPEG
/// files as they are; YUYV and NV12 made here from the RGB frame with
/// BT.601, chroma averaged as a sensor's ISP does, NV12 with padded rows)
/// through the V4L2 source's `V4l2Source`: MJPG decodes to the frame itself,
/// YUYV and NV12 close to it with the same top-1 label; a short buffer,
/// garbage for a JPEG and a whole buffer the driver flagged as corrupt are
/// bad frames (skipped, their index counted), and an unplugged device is
/// the source's error.
#[test]
fn v4l2_camera_turns_mjpg_yuyv_and_nv12_captures_into_the_frame() {
    use clip_edge::watch::convert::rgb_to_ycbcr;
    use clip_edge::watch::source::v4l2::{PixelFormat, V4l2Source};
    use clip_edge::watch::source::{Frame, Next, SourceError};
    let mut engine = common::default_int8_engine();
    let files = common::clip_jpegs();
    let mut source = DirSource::open(&root().join("models/clips/shapes")).unwrap();
    let mut frame = Frame::default();
    let mut checked = 0;
    while source.next(&mut frame).unwrap() == Next::Frame {
        if frame.index % 23 != 20 {
            continue;
        }
        assert_eq!(frame.image.mode, clip_edge::preprocess::Mode::Rgb);
        let (w, h) = (frame.image.width as usize, frame.image.height as usize);
        let frame_rgb = frame.image.data.clone();
        let px = |x: usize, y: usize| {
            let i = 3 * (y * w + x);
            rgb_to_ycbcr([frame_rgb[i], frame_rgb[i + 1], frame_rgb[i + 2]])
        };
        // YUYV: chroma averaged over each pixel pair.
        let mut yuyv = vec![0u8; w * h * 2];
        for y in 0..h {
            for x in (0..w).step_by(2) {
                let (a, b) = (px(x, y), px(x + 1, y));
                let o = y * w * 2 + x * 2;
                yuyv[o..o + 4].copy_from_slice(&[
                    a[0],
                    (a[1] as u16 + b[1] as u16).div_ceil(2) as u8,
                    b[0],
                    (a[2] as u16 + b[2] as u16).div_ceil(2) as u8,
                ]);
            }
        }
        // NV12: chroma averaged over each 2x2 block; rows padded to a
        // 64-byte stride, as drivers do.
        let stride = w.next_multiple_of(64) + 64;
        let mut nv12 = vec![0u8; stride * (h + h / 2)];
        for y in 0..h {
            for x in 0..w {
                nv12[y * stride + x] = px(x, y)[0];
            }
        }
        for y in (0..h).step_by(2) {
            for x in (0..w).step_by(2) {
                let q = [px(x, y), px(x + 1, y), px(x, y + 1), px(x + 1, y + 1)];
                let avg = |k: usize| ((q.iter().map(|p| p[k] as u16).sum::<u16>() + 2) / 4) as u8;
                let o = stride * h + (y / 2) * stride + x;
                nv12[o] = avg(1);
                nv12[o + 1] = avg(2);
            }
        }
        engine.classify(&frame.view(), 1).unwrap();
        let want = engine.top()[0].0;
        let jpeg = std::fs::read(&files[frame.index as usize]).unwrap();
        let (w32, h32) = (w as u32, h as u32);
        for (name, format, good, stride) in [
            ("mjpg", PixelFormat::Mjpg, jpeg, 0),
            ("yuyv", PixelFormat::Yuyv, yuyv, w * 2),
            ("nv12", PixelFormat::Nv12, nv12, stride),
        ] {
            let bad = if format == PixelFormat::Mjpg {
                b"\xff\xd8 garbage from a camera".to_vec()
            } else {
                good[..good.len() - 1].to_vec()
            };
            let mut cam = V4l2Source::new(
                Captured {
                    buffers: [(bad, false), (good.clone(), true), (good, false)]
                        .into_iter()
                        .collect(),
                    current: Vec::new(),
                },
                "v4l2:/dev/video9",
                format,
                w32,
                h32,
                stride,
            );
            let mut got = Frame::default();
            let e = cam.next(&mut got).unwrap_err();
            assert!(
                matches!(e, SourceError::Frame { .. }) && e.to_string().contains("frame 0"),
                "{name}: {e}"
            );
            let e = cam.next(&mut got).unwrap_err();
            assert!(
                matches!(e, SourceError::Frame { .. })
                    && e.to_string().contains("frame 1")
                    && e.to_string().contains("corrupt"),
                "{name}: {e}"
            );
            assert_eq!(cam.next(&mut got).unwrap(), Next::Frame);
            assert_eq!(got.index, 2, "{name}: bad frames keep their index");
            assert_eq!((got.image.width, got.image.height), (w32, h32));
            let rgb = &got.image.data;
            let mad = rgb
                .iter()
                .zip(&frame_rgb)
                .map(|(a, b)| a.abs_diff(*b) as f64)
                .sum::<f64>()
                / rgb.len() as f64;
            if format == PixelFormat::Mjpg {
                assert_eq!(*rgb, frame_rgb, "frame {} mjpg", frame.index);
            }
            assert!(
                mad <= CAPTURE_MEAN_ABS_TOL,
                "frame {} {name}: mean abs {mad}",
                frame.index
            );
            engine.classify(&got.view(), 1).unwrap();
            assert_eq!(
                engine.top()[0].0,
                want,
                "frame {} {name}: top-1 changed",
                frame.index
            );
            let gone = cam.next(&mut got).unwrap_err();
            assert!(
                matches!(gone, SourceError::Io { .. }) && gone.to_string().contains("unplugged"),
                "{name}: {gone}"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 6);
}

/// The clip's first `cut` frames, then the source fails (Lost).
struct Unplugged {
    frames: Vec<clip_edge::watch::source::Frame>,
    next: usize,
    cut: usize,
}

impl FrameSource for Unplugged {
    fn next(
        &mut self,
        frame: &mut clip_edge::watch::source::Frame,
    ) -> Result<clip_edge::watch::source::Next, clip_edge::watch::source::SourceError> {
        use clip_edge::watch::source::{Next, SourceError};
        if self.next == self.cut {
            return Err(SourceError::Lost {
                spec: "test camera".into(),
                why: "No such device (os error 19)".into(),
            });
        }
        if self.next == self.frames.len() {
            return Ok(Next::End);
        }
        frame.copy_from(&self.frames[self.next]);
        frame.index = self.next as u64;
        self.next += 1;
        Ok(Next::Frame)
    }
}

/// A camera unplugged in the middle of an event (ENODEV), absent for two
/// attempts, then back: the event ends as "source_lost", the log records
/// the loss and the return, frames go on from where they were, and the
/// loop never stops.
#[test]
fn a_lost_camera_is_reopened_and_the_log_says_so() {
    use clip_edge::watch::events::{EventKind, EventLog};
    use clip_edge::watch::source::{Reopening, SourceError};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    let mut engine = common::default_int8_engine();
    let w = watched(&engine, &["red star"]);
    let frames = common::clip_frames_decoded();
    let (first_part, rest) = (frames[..40].to_vec(), frames[40..].to_vec());
    let attempts = Arc::new(AtomicU32::new(0));
    let a = attempts.clone();
    let opener = Box::new(move || -> Result<Box<dyn FrameSource>, SourceError> {
        if a.fetch_add(1, Ordering::SeqCst) < 2 {
            return Err(SourceError::Unavailable {
                spec: "test camera".into(),
                why: "No such file or directory".into(),
            });
        }
        Ok(Box::new(Unplugged {
            frames: rest.clone(),
            next: 0,
            cut: usize::MAX,
        }))
    });
    // Unplugged at frame 20, inside the first red star (12..=31).
    let first = Box::new(Unplugged {
        frames: first_part,
        next: 0,
        cut: 20,
    });
    let mut source = Reopening::new("test camera", first, opener);
    let dir = common::scratch("watch-reopen");
    let (log, rec) = EventLog::open(&dir.join("events.jsonl")).unwrap();
    let opts = Options {
        watched: w,
        rules: Rules::default(),
        fps: None,
        motion_threshold: None,
        snapshots: None,
        snapshot_retention: Default::default(),
        source_name: "test camera".into(),
        camera: None,
        decode: Default::default(),
        regions: Default::default(),
    };
    let stats = {
        let mut watcher = Watcher::new(&mut engine, opts, Some((log, rec.last_run)), vec![]);
        // The reopened source's end would be a loss too: stop at its last frame.
        let stop = AtomicBool::new(false);
        watcher
            .run_observed(&mut source, &stop, &mut |w, _| {
                if w.stats.frames >= 20 + 97 {
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            })
            .unwrap()
    };
    assert_eq!(stats.frames, 20 + 97);
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    let log: Vec<clip_edge::watch::events::EventRecord> =
        std::fs::read_to_string(dir.join("events.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let kinds: Vec<(EventKind, Option<&str>)> =
        log.iter().map(|r| (r.event, r.reason.as_deref())).collect();
    assert_eq!(
        kinds[..4],
        [
            (EventKind::Start, None),
            (EventKind::End, Some("source_lost")),
            (EventKind::SourceLost, Some("No such device (os error 19)")),
            (EventKind::SourceBack, None),
        ],
        "{kinds:?}"
    );
    // Frame indices went on from 20: the reopened camera's first frame is
    // the clip's frame 40, so the second red star (clip 111..=124) starts
    // at index 91.
    let starts: Vec<u64> = log
        .iter()
        .filter(|r| r.event == EventKind::Start)
        .map(|r| r.frame)
        .collect();
    assert_eq!(starts.len(), 2, "{kinds:?}");
    assert!((starts[1] as i64 - 91).abs() <= 3, "{starts:?}");
}

/// The default model has an empty-scene class: on every frame of the clip
/// that shows no object (outside every span of its truth), the top-1 label
/// is that class, and no shape label reaches the default threshold there.
#[test]
fn empty_scene_frames_read_as_plain_background() {
    let truth: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("models/clips/shapes/truth.json")).unwrap(),
    )
    .unwrap();
    let spans: Vec<(u64, u64)> = truth["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["start"].as_u64().unwrap(), s["end"].as_u64().unwrap()))
        .collect();
    let mut engine = common::default_int8_engine();
    let empty = engine
        .bundle
        .labels()
        .iter()
        .position(|l| l == "plain background")
        .expect("the default bundle has the empty-scene label");
    let mut checked = 0;
    for frame in common::clip_frames_decoded() {
        if spans.iter().any(|&(s, e)| (s..=e).contains(&frame.index)) {
            continue;
        }
        engine.classify(&frame.view(), 2).unwrap();
        let top = engine.top();
        let name = |i: usize| engine.bundle.labels()[i].clone();
        assert_eq!(
            top[0].0,
            empty,
            "frame {}: top-1 {:?} at {:.3}",
            frame.index,
            name(top[0].0),
            top[0].1
        );
        assert!(
            top[1].1 < clip_edge::watch::DEFAULT_THRESHOLD,
            "frame {}: {:?} at {:.3} on an empty scene",
            frame.index,
            name(top[1].0),
            top[1].1
        );
        checked += 1;
    }
    assert!(checked >= 50, "only {checked} empty frames in the clip");
}

/// The one decode path: a folder of images in every mode Pillow opens (RGB,
/// RGBA, L, LA, P and 1-bit PNGs, an RGB and a grey JPEG) played through
/// `watch`'s `dir:` source and the loop's step gives, image by image, the
/// embedding that `classify`'s decode of the same file gives, bit for bit:
/// a frame keeps its mode up to the resize.
#[test]
fn dir_frames_embed_exactly_as_classify_embeds_the_same_files() {
    use clip_edge::decode::decode_file;
    use clip_edge::preprocess::Mode;
    use clip_edge::watch::source::{Frame, Next};
    let dir = common::scratch("one-decode-path");
    let fixtures = root().join("tests/fixtures");
    for name in [
        "images/rgba_333x250.png",
        "images/la_256x300.png",
        "images/p_300x200.png",
        "images/l_129x400.png",
        "images/bilevel_150x151.png",
        "images/rgb_227x229.png",
        "jpeg/franz-kafka.jpg",
    ] {
        let from = fixtures.join(name);
        std::fs::copy(&from, dir.join(from.file_name().unwrap())).unwrap();
    }
    let grey: Vec<u8> = (0..97u32 * 61).map(|i| (i * 7 % 251) as u8).collect();
    let mut jpeg = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90),
        &grey,
        97,
        61,
        image::ExtendedColorType::L8,
    )
    .unwrap();
    std::fs::write(dir.join("grey_97x61.jpg"), jpeg).unwrap();

    let mut engine = common::default_int8_engine();
    // classify's path, in the order a dir: source plays the files.
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut want = Vec::new();
    for path in &files {
        let img = decode_file(path).unwrap();
        engine.classify(&img.view(), 1).unwrap();
        want.push((img.mode, engine.embedding().to_vec()));
    }
    // watch's path: the dir: source and the loop's step.
    let opts = Options {
        watched: watched(&engine, &["red star"]),
        rules: Rules::default(),
        fps: None,
        motion_threshold: None,
        snapshots: None,
        snapshot_retention: Default::default(),
        source_name: "dir".into(),
        camera: None,
        decode: Default::default(),
        regions: Default::default(),
    };
    let mut watcher = Watcher::new(&mut engine, opts, None, vec![]);
    let mut source = DirSource::open(&dir).unwrap();
    let mut frame = Frame::default();
    let mut got = Vec::new();
    while source.next(&mut frame).unwrap() == Next::Frame {
        watcher.step(&frame).unwrap();
        got.push((
            frame.image.mode,
            watcher.with_engine(|e| e.embedding().to_vec()),
        ));
    }
    assert_eq!(got.len(), files.len());
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for (i, path) in files.iter().enumerate() {
        assert_eq!(got[i].0, want[i].0, "{}: mode", path.display());
        assert!(
            got[i].1.iter().all(|x| x.is_finite()),
            "{}: embedding not finite",
            path.display()
        );
        assert_eq!(
            bits(&got[i].1),
            bits(&want[i].1),
            "{}: watch's embedding differs from classify's",
            path.display()
        );
    }
    // Every mode is covered, and the encoder tells the images apart (equal
    // embeddings everywhere would make the comparison empty).
    let modes: Vec<Mode> = got.iter().map(|g| g.0).collect();
    for m in [
        Mode::Rgb,
        Mode::Rgba,
        Mode::L,
        Mode::La,
        Mode::Palette,
        Mode::Bilevel,
    ] {
        assert!(modes.contains(&m), "no {m:?} image in {modes:?}");
    }
    let mut distinct: Vec<Vec<u32>> = got.iter().map(|g| bits(&g.1)).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), files.len(), "two images embed the same");
}

/// The default rules over the whole frame, snapshots in `snaps`.
fn with_snapshots(
    watched: Vec<clip_edge::watch::Watched>,
    snaps: &std::path::Path,
    source_name: &str,
) -> Options {
    Options {
        snapshots: Some(snaps.to_path_buf()),
        ..common::watch_options(watched, Default::default(), source_name)
    }
}

/// A snapshot the disk refuses makes the loop degraded; the next snapshot
/// written clears it (a full disk that was freed is not "degraded" for
/// good).
#[test]
fn a_snapshot_trouble_clears_with_the_next_snapshot_written() {
    let mut engine = common::default_int8_engine();
    let w = watched(&engine, &["red star"]);
    let dir = common::scratch("watch-snapshot-trouble");
    let snaps = dir.join("snaps");
    // A file where the folder should be: every snapshot is refused.
    std::fs::write(&snaps, b"not a folder").unwrap();
    let opts = with_snapshots(w, &snaps, "dir:models/clips/shapes");
    let mut watcher = Watcher::new(&mut engine, opts, None, vec![]);
    let frames = common::clip_frames_decoded();
    let starts = |watcher: &mut Watcher<'_>| {
        let before = watcher.stats.events;
        for f in &frames {
            watcher.step(f).unwrap();
        }
        watcher.end_all("source_end").unwrap();
        watcher.stats.events - before
    };
    assert!(starts(&mut watcher) > 0);
    assert!(watcher.stats.snapshot_write_errors > 0);
    let why = watcher.trouble_now().expect("degraded").to_string();
    assert!(why.contains("snaps"), "{why}");
    std::fs::remove_file(&snaps).unwrap();
    assert!(starts(&mut watcher) > 0);
    assert_eq!(watcher.trouble_now(), None);
    assert!(std::fs::read_dir(&snaps).unwrap().count() > 0);
}

/// A live source that dropped frames (every frame's index 3 past the last,
/// a multiple of the 3-frame window): each start's snapshot is that start's
/// frame, the one the event names, not a later frame the loop saw.
#[test]
fn a_snapshot_after_dropped_frames_is_the_frame_the_event_names() {
    let mut engine = common::default_int8_engine();
    let w = watched(&engine, &["red star", "green square", "yellow triangle"]);
    let dir = common::scratch("watch-snapshot-gaps");
    let snaps = dir.join("snaps");
    let (log, rec) = clip_edge::watch::events::EventLog::open(&dir.join("events.jsonl")).unwrap();
    let opts = with_snapshots(w, &snaps, "live");
    let mut frames = common::clip_frames_decoded();
    for (i, f) in frames.iter_mut().enumerate() {
        f.index = 3 * i as u64;
    }
    {
        let mut watcher = Watcher::new(&mut engine, opts, Some((log, rec.last_run)), vec![]);
        for f in &frames {
            watcher.step(f).unwrap();
        }
        watcher.end_all("source_end").unwrap();
    }
    let log = common::read_log(&dir.join("events.jsonl"));
    let starts: Vec<&serde_json::Value> = log.iter().filter(|e| e["event"] == "start").collect();
    assert!(starts.len() >= 3, "{log:?}");
    let mean_diff = |a: &[u8], b: &[u8]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| x.abs_diff(*y) as f64)
            .sum::<f64>()
            / a.len() as f64
    };
    for s in starts {
        let at = s["frame"].as_u64().unwrap();
        let shot =
            clip_edge::decode::decode_file(std::path::Path::new(s["snapshot"].as_str().unwrap()))
                .unwrap();
        let k = (at / 3) as usize;
        let own = mean_diff(&shot.rgb(), &frames[k].image.rgb());
        for other in [k.saturating_sub(1), k + 1, k + 2] {
            if other != k && other < frames.len() {
                let d = mean_diff(&shot.rgb(), &frames[other].image.rgb());
                assert!(
                    own < d,
                    "start at frame {at}: its snapshot is {own:.2} from it, {d:.2} from frame {}",
                    3 * other
                );
            }
        }
    }
}
