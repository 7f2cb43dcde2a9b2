//! Zero-shot detection in a wide view: `watch --regions motion|tiles` and
//! zones on the committed yard scene (`models/clips/yard`, made by
//! `clip-quantize synth --clip --scene yard`; its truth.json holds every
//! shape's span and centre per frame): small shapes enter, stop still,
//! leave, two of one label are in view at once, and the lights go on.

mod common;

use clip_edge::watch::config::WatchArgs;
use clip_edge::watch::events::{EventKind, EventRecord};
use clip_edge::watch::motion::{Motion, STEADY_FRAMES};
use clip_edge::watch::source::{DirSource, FrameSource};
use clip_edge::watch::{Options, Sink, Watcher};
use common::{root, watched_at_half as watched};
use std::sync::atomic::AtomicBool;

/// An event starts and ends at most this many frames from its object's
/// first and last frame in view (centre inside the frame). Measured: 1
/// frame at most, with motion regions, 3x2 tiles and a zone.
const EVENT_FRAMES_TOL: i64 = 4;
/// A motion event's box is at most this many times its object's area
/// (the object's bounding square). Measured: 0.80 at most.
const BOX_AREA_MAX_RATIO: f64 = 6.0;

struct Recorder(Vec<EventRecord>);

impl Sink for Recorder {
    fn event(&mut self, r: &EventRecord, _line: &[u8], _on: bool) {
        self.0.push(r.clone());
    }
}

/// A watched object of the yard: its label, frames in view, size, centres.
struct Span {
    label: String,
    start: i64,
    end: i64,
    size: f64,
    centres: Vec<(f32, f32)>,
}

fn yard_truth() -> (Vec<String>, Vec<Span>) {
    let (watched, spans) = common::truth_of("yard");
    let spans = spans
        .iter()
        .map(|s| Span {
            label: s["label"].as_str().unwrap().into(),
            start: s["start"].as_i64().unwrap(),
            end: s["end"].as_i64().unwrap(),
            size: s["size"].as_f64().unwrap(),
            centres: s["centres"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| (c[0].as_f64().unwrap() as f32, c[1].as_f64().unwrap() as f32))
                .collect(),
        })
        .collect();
    (watched, spans)
}

/// The yard through the loop with these region settings: the events.
fn run_yard(args: WatchArgs) -> Vec<EventRecord> {
    run_yard_with(args, None)
}

fn run_yard_with(args: WatchArgs, snapshots: Option<std::path::PathBuf>) -> Vec<EventRecord> {
    let mut engine = common::default_int8_engine();
    let mut rec = Recorder(Vec::new());
    play_yard(&mut engine, args, snapshots, vec![&mut rec]);
    rec.0
}

/// The yard through the loop, watching its labels with these region
/// settings, events to `sinks`.
fn play_yard<'a>(
    engine: &'a mut clip_edge::engine::Engine,
    args: WatchArgs,
    snapshots: Option<std::path::PathBuf>,
    sinks: Vec<&'a mut dyn Sink>,
) {
    let (labels, _) = yard_truth();
    let watched = watched(engine, &labels);
    let regions = args.region_options(&watched).unwrap();
    let opts = Options {
        snapshots,
        ..common::watch_options(watched, regions, "dir:models/clips/yard")
    };
    let mut watcher = Watcher::new(engine, opts, None, sinks);
    let mut source = DirSource::open(&root().join("models/clips/yard")).unwrap();
    watcher
        .run(&mut source as &mut dyn FrameSource, &AtomicBool::new(false))
        .unwrap();
}

/// Each span is one event (start and end near its frames, no split), and
/// there is no other event. Returns the largest box-to-object area ratio.
fn assert_one_event_per_object(events: &[EventRecord], spans: &[&Span]) -> f64 {
    let mut late = 0i64;
    let starts: Vec<&EventRecord> = events
        .iter()
        .filter(|e| e.event == EventKind::Start)
        .collect();
    assert_eq!(starts.len(), spans.len(), "events: {events:#?}");
    let mut worst = 0f64;
    for s in spans {
        let centre_at = |f: u64| s.centres[(f as i64 - s.start).clamp(0, s.end - s.start) as usize];
        let boxed = |e: &EventRecord, c: (f32, f32)| {
            let [x, y, w, h] = e.bbox.expect("a box");
            c.0 >= x as f32 && c.1 >= y as f32 && c.0 < (x + w) as f32 && c.1 < (y + h) as f32
        };
        let start = starts
            .iter()
            .find(|e| {
                e.label == s.label
                    && (e.frame as i64 - s.start).abs() <= EVENT_FRAMES_TOL
                    && boxed(e, centre_at(e.frame))
            })
            .unwrap_or_else(|| {
                panic!(
                    "no start for {} at {} with its centre in the box: {events:#?}",
                    s.label, s.start
                )
            });
        let end = events
            .iter()
            .find(|e| e.event == EventKind::End && e.id == start.id)
            .unwrap();
        assert!(
            (end.frame as i64 - s.end).abs() <= EVENT_FRAMES_TOL,
            "{} ({}..={}) ended at {}",
            s.label,
            s.start,
            s.end,
            end.frame
        );
        late = late
            .max((start.frame as i64 - s.start).abs())
            .max((end.frame as i64 - s.end).abs());
        assert!(start.track.is_some() && start.track == end.track);
        let [_, _, w, h] = start.bbox.expect("a box");
        worst = worst.max((w * h) as f64 / (s.size * s.size));
    }
    eprintln!("events at most {late} frames from their objects' spans");
    worst
}

#[test]
fn yard_motion_regions_find_each_object_once_with_its_box() {
    let (_, spans) = yard_truth();
    let snaps = common::scratch("yard-snapshots");
    let events = run_yard_with(
        WatchArgs {
            regions: Some("motion".into()),
            ..Default::default()
        },
        Some(snaps.clone()),
    );
    // Each start's snapshot has its box drawn (yellow) on the frame, and
    // its label in yellow on a dark band above it (or inside its top).
    for e in events.iter().filter(|e| e.event == EventKind::Start) {
        let img = image::open(e.snapshot.as_ref().unwrap()).unwrap().to_rgb8();
        let [x, y, w, h] = e.bbox.unwrap();
        let yellow = |p: [u8; 3]| p[0] > 200 && p[1] > 180 && p[2] < 80;
        for (px, py) in [
            (x + 1, y + h - 2),
            (x + w / 2, y + h - 2),
            (x + w - 2, y + h - 2),
        ] {
            let p = img.get_pixel(px, py).0;
            assert!(yellow(p), "{:?} at {px},{py}: {p:?}", e.snapshot);
        }
        let top = if y >= 18 { y - 18 } else { y };
        let text_w = 8 * 2 * e.label.len() as u32;
        let left = x.min(img.width() - text_w - 2);
        let band = (left + 1..left + text_w)
            .flat_map(|px| (top + 1..top + 17).map(move |py| (px, py)))
            .filter(|&(px, py)| px < img.width() && py < img.height())
            .map(|(px, py)| img.get_pixel(px, py).0);
        let (ink, dark) = band.fold((0, 0), |(i, d), p| {
            (i + yellow(p) as u32, d + (p.iter().all(|&v| v < 60)) as u32)
        });
        assert!(
            ink > 40 && dark > ink,
            "{:?}: label band ink {ink}, dark {dark}",
            e.snapshot
        );
    }
    let ratio = assert_one_event_per_object(&events, &spans.iter().collect::<Vec<_>>());
    eprintln!("largest box / object area: {ratio:.2}");
    assert!(
        ratio <= BOX_AREA_MAX_RATIO,
        "a box is {ratio:.1}x its object"
    );
    // Two red stars in view at once: two tracks, two events.
    let stars: Vec<_> = events
        .iter()
        .filter(|e| e.event == EventKind::Start && e.label == "red star")
        .collect();
    assert_eq!(stars.len(), 3);
    assert_ne!(stars[1].track, stars[2].track);
}

#[test]
fn yard_tiles_find_each_object_once() {
    let (_, spans) = yard_truth();
    let events = run_yard(WatchArgs {
        regions: Some("tiles:3x2".into()),
        ..Default::default()
    });
    assert_one_event_per_object(&events, &spans.iter().collect::<Vec<_>>());
}

#[test]
fn yard_zone_over_the_left_half_fires_only_for_objects_inside_it() {
    let (_, spans) = yard_truth();
    let events = run_yard(WatchArgs {
        regions: Some("motion".into()),
        zone: vec!["left=0,0,480,540".parse().unwrap()],
        ..Default::default()
    });
    let inside: Vec<&Span> = spans
        .iter()
        .filter(|s| s.centres.iter().all(|c| c.0 < 480.0))
        .collect();
    assert_eq!(inside.len(), 2, "the yard's left half holds two red stars");
    assert_one_event_per_object(&events, &inside);
    assert!(events.iter().all(|e| e.zone.as_deref() == Some("left")));
}

/// A zone far from square with the whole frame (a strip across the yard,
/// 960x100) is watched whole, in squares: the first red star, still at
/// x = 240 (far from the strip's middle square), is one event of the strip
/// with its centre in the event's box (the squares that see it, merged).
#[test]
fn yard_a_strip_zone_is_watched_whole() {
    let (_, spans) = yard_truth();
    let events = run_yard(WatchArgs {
        zone: vec!["strip=0,150,960,100".parse().unwrap()],
        ..Default::default()
    });
    assert!(events.iter().all(|e| e.zone.as_deref() == Some("strip")));
    let star = &spans[0];
    assert_eq!(
        (star.label.as_str(), star.centres[20]),
        ("red star", (240.0, 200.0))
    );
    // One event for it: the squares that see it are one detection.
    let starts: Vec<&EventRecord> = events
        .iter()
        .filter(|e| {
            e.event == EventKind::Start
                && e.label == "red star"
                && (star.start..=star.end).contains(&(e.frame as i64))
        })
        .collect();
    assert_eq!(starts.len(), 1, "{events:#?}");
    let start = starts[0];
    let [x, y, w, h] = start.bbox.expect("a box");
    assert!(h == 100 && (100..960).contains(&w), "{start:?}");
    let c = star.centres[(start.frame as i64 - star.start) as usize];
    assert!(
        c.0 >= x as f32 && c.0 < (x + w) as f32 && c.1 >= y as f32 && c.1 < (y + h) as f32,
        "{start:?} {c:?}"
    );
}

/// A triangle zone with `--regions full`: its bounding box is classified
/// with what is outside the triangle painted the encoder's mean colour, so
/// the red star that stops above the triangle's long side (inside the box)
/// is an event only while it is inside (it enters there), and the one that
/// stops inside is one.
#[test]
fn yard_a_polygon_zone_sees_only_what_is_inside_it() {
    let (_, spans) = yard_truth();
    let args: WatchArgs = toml::from_str(
        r#"
        [[zone]]
        name = "tri"
        polygon = [[0, 100], [480, 540], [0, 540]]
        "#,
    )
    .unwrap();
    let events = run_yard(args);
    assert!(events.iter().all(|e| e.zone.as_deref() == Some("tri")));
    let above = &spans[0];
    assert_eq!(above.centres[20], (240.0, 200.0));
    let inside = spans
        .iter()
        .find(|s| s.label == "red star" && s.centres.contains(&(200.0, 420.0)))
        .expect("the red star that stops at 200, 420");
    let during = |s: &Span, kind: EventKind| -> Vec<u64> {
        events
            .iter()
            .filter(|e| e.event == kind && (s.start..=s.end).contains(&(e.frame as i64)))
            .map(|e| e.frame)
            .collect()
    };
    // Above the long side from about its 8th frame: before the paint, its
    // event lasted until it left the box (frame 46).
    let ends = during(above, EventKind::End);
    assert!(
        !ends.is_empty() && ends.iter().all(|&f| (f as i64) < above.start + 16),
        "{events:#?}"
    );
    assert_eq!(during(inside, EventKind::Start).len(), 1, "{events:#?}");
}

/// Two zones from a config, the right one watching green squares only: the
/// left half's red stars are "left" events, the green square a "right"
/// one, and the red star on the right fires nothing.
#[test]
fn yard_zones_keep_their_own_watch_lists() {
    let (_, spans) = yard_truth();
    let args: WatchArgs = toml::from_str(
        r#"
        regions = "motion"
        [[zone]]
        name = "left"
        box = [0, 0, 480, 540]
        [[zone]]
        name = "right"
        box = [480, 0, 480, 540]
        watch = ["green square"]
        "#,
    )
    .unwrap();
    let events = run_yard(args);
    let left: Vec<&Span> = spans
        .iter()
        .filter(|s| s.centres.iter().all(|c| c.0 < 480.0))
        .collect();
    let right: Vec<&Span> = spans.iter().filter(|s| s.label == "green square").collect();
    assert_eq!((left.len(), right.len()), (2, 1));
    let both: Vec<&Span> = left.iter().chain(&right).copied().collect();
    assert_one_event_per_object(&events, &both);
    for e in &events {
        let want = if e.label == "green square" {
            "right"
        } else {
            "left"
        };
        assert_eq!(e.zone.as_deref(), Some(want), "{e:?}");
    }
}

/// With nothing in view (before the first shape, between shapes, when the
/// lights go on) the motion mask gives no region.
#[test]
fn yard_no_region_without_an_object_in_view_and_none_for_the_lights() {
    let t: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("models/clips/yard/truth.json")).unwrap(),
    )
    .unwrap();
    // Every shape's walk, watched or not (in part in view before its
    // centre is), and the frames after it during which the place where it
    // stood still is not background yet.
    let busy: Vec<(u64, u64)> = t["spec"]["walks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let n = ["frames_in", "still", "frames_out"]
                .map(|k| w[k].as_u64().unwrap())
                .iter()
                .sum::<u64>();
            let start = w["start"].as_u64().unwrap();
            (start, start + n + STEADY_FRAMES as u64 + 2)
        })
        .collect();
    let lights = t["spec"]["lights_on"][0].as_u64().unwrap();
    let mut motion = Motion::new();
    let mut source = DirSource::open(&root().join("models/clips/yard")).unwrap();
    let mut frame = Default::default();
    let mut quiet = 0;
    let mut quiet_around_lights = 0;
    while source.next(&mut frame).unwrap() == clip_edge::watch::source::Next::Frame {
        let f: &clip_edge::watch::source::Frame = &frame;
        let regions = motion.update(&f.image, (0.0, 1.0)).len();
        if busy.iter().any(|&(a, b)| (a..=b).contains(&f.index)) {
            continue;
        }
        assert_eq!(
            regions, 0,
            "frame {}: nothing in view, {regions} regions",
            f.index
        );
        quiet += 1;
        quiet_around_lights += (lights..=lights + 2).contains(&f.index) as u32;
    }
    assert!(
        quiet >= 15 && quiet_around_lights == 3,
        "{quiet} {quiet_around_lights}"
    );
}

/// A GPIO line follows its label: high from the first of two red stars in
/// view at once until the last of them leaves (an end of one track while
/// the other is open keeps it high).
#[test]
fn yard_a_gpio_line_stays_high_while_either_of_two_red_stars_is_in_view() {
    use clip_edge::watch::gpio::GpioLines;
    use embedded_hal_mock::eh1::digital::{Mock, State, Transaction};
    let t = Transaction::set;
    let (lo, hi) = (State::Low, State::High);
    let red = Mock::new(&[t(lo), t(hi), t(lo), t(hi), t(hi), t(hi), t(lo)]);
    let mut lines = GpioLines::new(vec![("red star".into(), red.clone(), "red".into())]);
    let motion = WatchArgs {
        regions: Some("motion".into()),
        ..Default::default()
    };
    let mut engine = common::default_int8_engine();
    play_yard(&mut engine, motion, None, vec![&mut lines]);
    assert_eq!(lines.errors, 0);
    let mut red = red;
    red.done();
}

/// A camera back at a size its zones do not fit: its frames are skipped
/// and the loop says why while it lasts (the status page shows it as
/// degraded); the next frame that fits clears it.
#[test]
fn frames_skipped_for_their_size_are_a_trouble_until_one_fits() {
    let dir = common::scratch("yard-frame-size");
    let yard = root().join("models/clips/yard");
    std::fs::copy(yard.join("00000.jpg"), dir.join("00000.jpg")).unwrap();
    image::open(yard.join("00001.jpg"))
        .unwrap()
        .resize_exact(640, 360, image::imageops::FilterType::Triangle)
        .save(dir.join("00001.png"))
        .unwrap();
    std::fs::copy(yard.join("00002.jpg"), dir.join("00002.jpg")).unwrap();
    let mut engine = common::default_int8_engine();
    let (labels, _) = yard_truth();
    let watched = watched(&engine, &labels);
    let args = WatchArgs {
        zone: vec!["right=700,0,260,540".parse().unwrap()],
        ..Default::default()
    };
    let opts = common::watch_options(
        watched.clone(),
        args.region_options(&watched).unwrap(),
        "dir:frames",
    );
    let labels = engine.bundle.labels().to_vec();
    let mut watcher = Watcher::new(&mut engine, opts, None, Vec::new());
    let mut source = DirSource::open(&dir).unwrap();
    // As the service watches it: its status after each frame.
    use clip_edge::service::http::{Families, Status};
    let status = Status::new(
        &Families::new(&[], false),
        "yard",
        labels,
        std::time::Duration::from_secs(60),
        None,
    );
    let mut seen = Vec::new();
    watcher
        .run_observed(
            &mut source as &mut dyn FrameSource,
            &AtomicBool::new(false),
            &mut |w, f| {
                status.observe(w, f);
                if let Some(f) = f {
                    seen.push((f.index, status.healthy(), status.trouble()));
                }
            },
        )
        .unwrap();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[0], (0, true, None));
    let (index, healthy, why) = &seen[1];
    let why = why.as_deref().unwrap_or_default();
    assert!(
        *index == 1
            && *healthy
            && why.contains("zone \"right\"")
            && why.contains("640x360")
            && why.contains("skipped until they fit"),
        "{seen:?}"
    );
    assert_eq!(seen[2], (2, true, None));
}

/// The yard classified at a sixth of its rate (a slow board, `--fps`):
/// each shape moves one to two of its sizes between two frames classified.
/// Every shape of the four labels is one event, the yellow triangle (in
/// view 20 frames, never still) included: it was a new track at each
/// frame, and no event, while tracks matched only within one box size of
/// the last.
#[test]
fn yard_at_a_sixth_of_its_rate_each_object_is_one_event() {
    let labels = ["red star", "blue circle", "green square", "yellow triangle"];
    let t: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("models/clips/yard/truth.json")).unwrap(),
    )
    .unwrap();
    let count = |label: &str| {
        t["spans"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["label"] == label)
            .count()
    };
    let frames = common::jpegs_of("yard");
    let mut engine = common::default_int8_engine();
    for offset in 1..=4 {
        let dir = common::scratch(&format!("yard-sixth-{offset}"));
        for (i, f) in frames.iter().skip(offset).step_by(6).enumerate() {
            std::fs::copy(f, dir.join(format!("{i:05}.jpg"))).unwrap();
        }
        let watched = watched(&engine, &labels);
        let regions = WatchArgs {
            regions: Some("motion".into()),
            ..Default::default()
        }
        .region_options(&watched)
        .unwrap();
        let opts = common::watch_options(watched, regions, "dir:yard-sixth");
        let mut rec = Recorder(Vec::new());
        let mut watcher = Watcher::new(&mut engine, opts, None, vec![&mut rec]);
        let mut source = DirSource::open(&dir).unwrap();
        watcher
            .run(&mut source as &mut dyn FrameSource, &AtomicBool::new(false))
            .unwrap();
        drop(watcher);
        for label in labels {
            let starts = rec
                .0
                .iter()
                .filter(|e| e.event == EventKind::Start && e.label == label)
                .count();
            assert_eq!(
                starts,
                count(label),
                "offset {offset}, {label}: {:#?}",
                rec.0
            );
        }
    }
}

/// A wide view made here, as the auditor's scenes were: a grey gradient
/// with ±6 levels of seeded noise (a sensor's), and shapes drawn on it
/// (a five-pointed star or a disc, `size` px across, centred at (x, y)).
struct Scene {
    w: u32,
    h: u32,
    background: Vec<u8>,
}

impl Scene {
    fn new(w: u32, h: u32) -> Scene {
        let mut seed = 0x9e37_79b9u32;
        let mut background = Vec::with_capacity((w * h * 3) as usize);
        for _y in 0..h {
            for x in 0..w {
                let level = 110.0 + 65.0 * x as f32 / w as f32;
                for _ in 0..3 {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    let noise = (seed % 13) as f32 - 6.0;
                    background.push((level + noise).round().clamp(0.0, 255.0) as u8);
                }
            }
        }
        Scene { w, h, background }
    }

    /// A frame of the scene with `shapes` (label, size, centre x, y):
    /// "red star" or "blue circle".
    fn frame(&self, shapes: &[(&str, u32, u32, u32)]) -> clip_edge::watch::source::Frame {
        let mut frame = clip_edge::watch::source::Frame::default();
        let out = frame.reshape_rgb(self.w, self.h);
        out.copy_from_slice(&self.background);
        for &(label, size, cx, cy) in shapes {
            let r = size as f32 / 2.0;
            let (colour, star) = match label {
                "red star" => ([220, 30, 50], true),
                "blue circle" => ([30, 60, 220], false),
                _ => panic!("no drawing of {label}"),
            };
            let corners: Vec<(f32, f32)> = (0..10)
                .map(|i| {
                    let rr = if i % 2 == 0 { r } else { r * 0.45 };
                    let t = -std::f32::consts::FRAC_PI_2 + i as f32 * std::f32::consts::PI / 5.0;
                    (cx as f32 + rr * t.cos(), cy as f32 + rr * t.sin())
                })
                .collect();
            let inside = |px: f32, py: f32| {
                if !star {
                    return (px - cx as f32).powi(2) + (py - cy as f32).powi(2) <= r * r;
                }
                let mut odd = false;
                for k in 0..corners.len() {
                    let (a, b) = (corners[k], corners[(k + 9) % 10]);
                    if (a.1 > py) != (b.1 > py) && px < (b.0 - a.0) * (py - a.1) / (b.1 - a.1) + a.0
                    {
                        odd = !odd;
                    }
                }
                odd
            };
            let (x0, y0) = (cx.saturating_sub(size), cy.saturating_sub(size));
            for y in y0..(cy + size).min(self.h) {
                for x in x0..(cx + size).min(self.w) {
                    if inside(x as f32 + 0.5, y as f32 + 0.5) {
                        let o = 3 * (y * self.w + x) as usize;
                        out[o..o + 3].copy_from_slice(&colour);
                    }
                }
            }
        }
        frame
    }
}

/// `frames` through the loop watching `labels` with `args`' regions: the
/// events.
fn play_scene(
    labels: &[&str],
    args: WatchArgs,
    frames: Vec<clip_edge::watch::source::Frame>,
) -> Vec<EventRecord> {
    use clip_edge::watch::source::MemorySource;
    let mut engine = common::default_int8_engine();
    let watched = watched(&engine, labels);
    let regions = args.region_options(&watched).unwrap();
    let opts = common::watch_options(watched, regions, "scene");
    let mut rec = Recorder(Vec::new());
    let mut watcher = Watcher::new(&mut engine, opts, None, vec![&mut rec]);
    let mut source = MemorySource::new(frames, 1);
    watcher
        .run(&mut source as &mut dyn FrameSource, &AtomicBool::new(false))
        .unwrap();
    drop(watcher);
    rec.0
}

fn starts(events: &[EventRecord]) -> Vec<&EventRecord> {
    events
        .iter()
        .filter(|e| e.event == EventKind::Start)
        .collect()
}

fn regions(mode: &str, zones: &[&str]) -> WatchArgs {
    WatchArgs {
        regions: Some(mode.into()),
        zone: zones.iter().map(|z| z.parse().unwrap()).collect(),
        ..Default::default()
    }
}

/// One small star where four tiles of a 6x4 grid overlap (1080p: tiles
/// of 384 px, diagonal neighbours 385 px apart) is one event, its box
/// the tiles' common part around it; two stars far apart are two.
#[test]
fn tiles_one_object_where_tiles_overlap_is_one_event() {
    let scene = Scene::new(1920, 1080);
    let one: Vec<_> = (0..8)
        .map(|_| scene.frame(&[("red star", 80, 960, 540)]))
        .collect();
    let events = play_scene(&["red star"], regions("tiles:6x4", &[]), one);
    let s = starts(&events);
    assert_eq!(s.len(), 1, "{events:#?}");
    let [x, y, w, h] = s[0].bbox.unwrap();
    assert!(
        x <= 940 && y <= 520 && x + w >= 980 && y + h >= 560 && w < 384,
        "{:?}",
        s[0].bbox
    );
    let two: Vec<_> = (0..8)
        .map(|_| scene.frame(&[("red star", 80, 960, 540), ("red star", 80, 140, 140)]))
        .collect();
    let events = play_scene(&["red star"], regions("tiles:6x4", &[]), two);
    assert_eq!(starts(&events).len(), 2, "{events:#?}");
}

/// Motion: a star in view from the first frame, standing still, is found
/// (the first frame's tiles), not only once it moves.
#[test]
fn motion_an_object_in_view_from_the_first_frame_is_found() {
    let scene = Scene::new(1920, 1080);
    let frames: Vec<_> = (0..12)
        .map(|_| scene.frame(&[("red star", 96, 950, 530)]))
        .collect();
    let events = play_scene(&["red star"], regions("motion", &[]), frames);
    let s = starts(&events);
    assert_eq!(s.len(), 1, "{events:#?}");
    assert!(s[0].frame <= 3, "{events:#?}");
}

/// Motion: a star creeping one pixel a frame across a 1080p view (each
/// 16 px cell changes a little each frame, much in all) is one event
/// to the end, not taken for background once it has crept a cell.
#[test]
fn motion_an_object_creeping_a_pixel_a_frame_stays_one_event() {
    let scene = Scene::new(1920, 1080);
    let frames: Vec<_> = (0..120)
        .map(|i| scene.frame(&[("red star", 96, 350 + i, 530)][..usize::from(i >= 5)]))
        .collect();
    let events = play_scene(&["red star"], regions("motion", &[]), frames);
    assert_eq!(starts(&events).len(), 1, "{events:#?}");
    let end = events.iter().find(|e| e.event == EventKind::End).unwrap();
    assert_eq!(end.reason.as_deref(), Some("source_end"), "{events:#?}");
}

/// Motion: a star that walked in and stopped keeps its event while a
/// circle slides by just below it (the circle's region overlaps the star's
/// box, and its crop is the circle's).
#[test]
fn motion_a_still_object_keeps_its_event_while_another_passes_beside_it() {
    let scene = Scene::new(1920, 1080);
    let frames: Vec<_> = (0..100)
        .map(|i| {
            let star = ("red star", 96, 250 + 20 * i.min(20), 450);
            if i < 40 {
                scene.frame(&[star])
            } else {
                scene.frame(&[star, ("blue circle", 96, 250 + 16 * (i - 40), 560)])
            }
        })
        .collect();
    let events = play_scene(&["red star", "blue circle"], regions("motion", &[]), frames);
    let stars: Vec<_> = events.iter().filter(|e| e.label == "red star").collect();
    assert_eq!(stars.len(), 2, "{events:#?}");
    assert_eq!(
        stars[1].reason.as_deref(),
        Some("source_end"),
        "{events:#?}"
    );
}

/// Nested zones (a porch in a yard): a star in both counts for both, in
/// motion mode as with the whole frame.
#[test]
fn nested_zones_each_see_what_is_in_both() {
    let scene = Scene::new(1920, 1080);
    let frames: Vec<_> = (0..14)
        .map(|i| scene.frame(&[("red star", 96, 950 + 4 * i, 500)]))
        .collect();
    for mode in ["motion", "full"] {
        let args = regions(mode, &["yard=600,150,700,700", "porch=800,300,400,400"]);
        let events = play_scene(&["red star"], args, frames.clone());
        let mut zones: Vec<_> = starts(&events).iter().map(|e| e.zone.clone()).collect();
        zones.sort();
        assert_eq!(
            zones,
            [Some("porch".to_string()), Some("yard".to_string())],
            "{mode}: {events:#?}"
        );
    }
}

/// Tiles with a zone: a star beside the zone (inside a tile whose centre
/// is in it) is not the zone's; one inside it, off the tiles' centres, is.
#[test]
fn tiles_with_a_zone_see_inside_it_and_not_beside_it() {
    let scene = Scene::new(1920, 1080);
    let beside: Vec<_> = (0..8)
        .map(|_| scene.frame(&[("red star", 80, 740, 190)]))
        .collect();
    let gate = regions("tiles", &["gate=860,284,200,200"]);
    let events = play_scene(&["red star"], gate, beside);
    assert!(events.is_empty(), "{events:#?}");
    let inside: Vec<_> = (0..8)
        .map(|_| scene.frame(&[("red star", 80, 1250, 700)]))
        .collect();
    let dock = regions("tiles", &["dock=1100,600,300,200"]);
    let events = play_scene(&["red star"], dock, inside);
    let s = starts(&events);
    assert_eq!(s.len(), 1, "{events:#?}");
    assert_eq!(s[0].zone.as_deref(), Some("dock"));
}

/// Motion: two still stars in view from the first frame are two events
/// (a seed tile that holds one followed star does not hide the other).
#[test]
fn motion_still_objects_in_view_from_the_start_are_each_found() {
    let scene = Scene::new(960, 540);
    let frames: Vec<_> = (0..30)
        .map(|_| scene.frame(&[("red star", 72, 100, 100), ("red star", 72, 300, 440)]))
        .collect();
    let events = play_scene(&["red star"], regions("motion", &[]), frames);
    assert_eq!(starts(&events).len(), 2, "{events:#?}");
    // 230 px apart, in one coarse tile's reach of each other.
    let frames: Vec<_> = (0..30)
        .map(|_| scene.frame(&[("red star", 72, 190, 190), ("red star", 72, 420, 190)]))
        .collect();
    let events = play_scene(&["red star"], regions("motion", &[]), frames);
    assert_eq!(starts(&events).len(), 2, "{events:#?}");
}

/// Motion: a seeded still star moves off (its tile is to be looked at
/// again), then the source's frames change size: the loop goes on.
#[test]
fn motion_a_size_change_after_a_seeded_object_moved_goes_on() {
    let wide = Scene::new(960, 540);
    let small = Scene::new(640, 360);
    let frames: Vec<_> = (0..24)
        .map(|i| match i {
            0..6 => wide.frame(&[("red star", 72, 760, 440)]),
            6..14 => wide.frame(&[("red star", 72, 760 - 40 * (i - 5), 440)]),
            _ => small.frame(&[]),
        })
        .collect();
    let events = play_scene(&["red star"], regions("motion", &[]), frames);
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("frame_size")),
        "{events:#?}"
    );
}

/// Motion: a star in view from the first frame (found by a seed tile)
/// keeps its event while another star passes by it, within a tile's reach
/// of it but outside the tile (a crop with both is one label, the one the
/// encoder sees best); the passer is its own.
#[test]
fn motion_a_passer_does_not_take_a_seeded_objects_track() {
    let scene = Scene::new(960, 540);
    let frames: Vec<_> = (0..60)
        .map(|i| {
            let still = ("red star", 72, 300, 250);
            if (20..50).contains(&i) {
                scene.frame(&[still, ("red star", 72, 30 + 30 * (i - 20), 425)])
            } else {
                scene.frame(&[still])
            }
        })
        .collect();
    let events = play_scene(&["red star"], regions("motion", &[]), frames);
    let first = starts(&events)[0].track;
    let end = events
        .iter()
        .find(|e| e.event == EventKind::End && e.track == first)
        .unwrap();
    assert_eq!(end.reason.as_deref(), Some("source_end"), "{events:#?}");
    assert!(
        starts(&events).len() >= 2,
        "no event for the passer: {events:#?}"
    );
}

/// Motion with a zone: a still star beside the zone, in a seed tile whose
/// middle the zone is in, is not the zone's.
#[test]
fn motion_a_seed_tile_counts_for_a_zone_only_when_the_zone_holds_it() {
    let scene = Scene::new(960, 540);
    let frames: Vec<_> = (0..20)
        .map(|_| scene.frame(&[("red star", 72, 320, 90)]))
        .collect();
    let events = play_scene(
        &["red star"],
        regions("motion", &["gate=150,150,80,80"]),
        frames.clone(),
    );
    assert!(events.is_empty(), "{events:#?}");
    // Nor through the found star's tile, looked at again each frame, with
    // a zone that holds the star too.
    let events = play_scene(
        &["red star"],
        regions("motion", &["gate=150,150,80,80", "all=0,0,960,540"]),
        frames,
    );
    let zones: Vec<_> = starts(&events).iter().map(|e| e.zone.clone()).collect();
    assert_eq!(zones, [Some("all".to_string())], "{events:#?}");
}
