//! Soak: the watch loop over the committed clip played from memory, again
//! and again. A frame that starts or ends no event allocates nothing, and
//! the resident set stays flat after the first pass. Its own process, so
//! that no other test allocates while it counts.
//!
//! `CLIP_SOAK_FRAMES` sets the length (default [`DEFAULT_FRAMES`]; under
//! qemu, [`QEMU_FRAMES`]). The README's 100,000-frame run:
//! `CLIP_SOAK_FRAMES=100000 cargo test --release --test watch_soak -- --nocapture`.

mod common;

use clip_edge::alloc_count::{thread_allocations, Counting};

use clip_edge::watch::detect::Rules;
use clip_edge::watch::events::EventLog;
use clip_edge::watch::source::{Frame, FrameSource, MemorySource, Next};
use clip_edge::watch::{Options, Watched, Watcher};
use common::scratch;

#[global_allocator]
static ALLOC: Counting = Counting;

const DEFAULT_FRAMES: u64 = 2_000;
const QEMU_FRAMES: u64 = 400;
/// Resident-set growth allowed between the end of the first pass over the
/// clip and any later point. Measured 0 KB over 2,055 frames (x86_64, 4 KiB
/// pages); the allowance is for the allocator's and the kernel's page
/// granularity (up to 64 KiB pages on some aarch64 kernels).
const RSS_GROWTH_TOL_KB: i64 = 2048;

fn rss_kb() -> i64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: i64 = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    // statm counts pages: 4 KiB on x86_64, but 16 or 64 KiB on some aarch64
    // kernels.
    // SAFETY: sysconf reads a constant of the system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    assert!(page > 0, "sysconf(_SC_PAGESIZE) = {page}");
    pages * page as i64 / 1024
}

/// The tests take turns: the resident set is the whole process's.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn frames_without_events_allocate_nothing_and_rss_stays_flat() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let frames_total = std::env::var("CLIP_SOAK_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if std::env::var_os("CLIP_TEST_RUNNER").is_some() {
            QEMU_FRAMES
        } else {
            DEFAULT_FRAMES
        });
    let mut engine = common::default_int8_engine();
    let index = |l: &str| engine.bundle.labels().iter().position(|x| x == l).unwrap();
    let watched = vec![
        Watched {
            label: "red star".into(),
            index: index("red star"),
            threshold: 0.5,
        },
        Watched {
            label: "green square".into(),
            index: index("green square"),
            threshold: 0.5,
        },
    ];
    // Decode the clip once.
    let frames = common::clip_frames_decoded();
    let clip_len = frames.len() as u64;
    let loops = frames_total.div_ceil(clip_len);
    let mut source = MemorySource::new(frames, loops);
    let scratch = scratch("watch-soak");
    let (log, rec) = EventLog::open(&scratch.join("events.jsonl")).unwrap();
    let opts = Options {
        watched,
        rules: Rules::default(),
        fps: None,
        motion_threshold: Some(1.0),
        snapshots: Some(scratch.join("snaps")),
        snapshot_retention: Default::default(),
        source_name: "memory".into(),
        camera: None,
        decode: Default::default(),
        regions: Default::default(),
    };
    let mut watcher = Watcher::new(&mut engine, opts, Some((log, rec.last_run)), vec![]);
    let mut frame = Frame::default();
    let mut n = 0u64;
    let mut quiet_allocs = 0u64;
    let mut quiet_frames = 0u64;
    let mut event_frames = 0u64;
    let mut curve = Vec::new();
    let mut rss_after_first = 0;
    while source.next(&mut frame).unwrap() == Next::Frame {
        // This thread's: the loop runs here (one compute thread); libtest's
        // "running for over 60 seconds" note comes from another.
        let before = thread_allocations();
        let events = watcher.step(&frame).unwrap();
        let after = thread_allocations();
        if n >= clip_len {
            if events == 0 {
                quiet_allocs += after - before;
                quiet_frames += 1;
            } else {
                event_frames += 1;
            }
        }
        n += 1;
        if n == clip_len {
            rss_after_first = rss_kb();
        }
        if n.is_multiple_of((frames_total / 10).max(1)) || n == loops * clip_len {
            curve.push((n, rss_kb()));
        }
    }
    watcher.end_all("source_end").unwrap();
    let stats = watcher.stats;
    eprintln!(
        "soak: {n} frames, {} inferred, {} events",
        stats.inferred, stats.events
    );
    eprintln!("soak: RSS (frame, KB): {curve:?}");
    assert_eq!(
        quiet_allocs, 0,
        "{quiet_allocs} allocations over {quiet_frames} frames without events"
    );
    assert!(quiet_frames > 0 && event_frames > 0);
    assert_eq!(stats.events, 3 * loops);
    for (frame, kb) in &curve {
        if *frame >= clip_len {
            assert!(
                kb - rss_after_first <= RSS_GROWTH_TOL_KB,
                "RSS grew by {} KB by frame {frame} (curve {curve:?})",
                kb - rss_after_first
            );
        }
    }
}

/// Frames of the wide scene played round with `--regions motion`.
const REGIONS_CLIP_FRAMES: usize = 60;
const REGIONS_LOOPS: u64 = 3;

/// `--regions motion` on the first frames of the wide scene (a red star
/// enters, stands still, leaves; a blue circle passes), played three
/// times: after the first frame (which sizes every buffer, the
/// preprocessor's for the largest square crop), a frame that starts or
/// ends no event allocates nothing, whatever regions, crops and tracks it
/// has, the first time a crop of its size comes included. The engine is
/// shared as the cameras of one service share it (under a lock).
#[test]
fn motion_regions_allocate_nothing_on_frames_without_events() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let engine = common::default_int8_engine();
    let index = |l: &str| engine.bundle.labels().iter().position(|x| x == l).unwrap();
    let watched = vec![Watched {
        label: "red star".into(),
        index: index("red star"),
        threshold: 0.5,
    }];
    let frames = common::frames_decoded("yard", REGIONS_CLIP_FRAMES);
    let mut source = MemorySource::new(frames, REGIONS_LOOPS);
    let regions = clip_edge::watch::regions::RegionOptions {
        mode: clip_edge::watch::regions::RegionMode::Motion,
        ..Default::default()
    };
    let opts = Options {
        camera: Some("yard".into()),
        ..common::watch_options(watched, regions, "memory")
    };
    // The engine as a service of several cameras shares it: under a lock.
    let engine = std::sync::Mutex::new(engine);
    let mut watcher = Watcher::new(&engine, opts, None, vec![]);
    let mut frame = Frame::default();
    let (mut n, mut quiet_allocs, mut quiet_frames) = (0u64, 0u64, 0u64);
    while source.next(&mut frame).unwrap() == Next::Frame {
        let before = thread_allocations();
        let events = watcher.step(&frame).unwrap();
        let after = thread_allocations();
        if n >= 1 && events == 0 {
            quiet_allocs += after - before;
            quiet_frames += 1;
        }
        n += 1;
    }
    watcher.end_all("source_end").unwrap();
    let stats = watcher.stats;
    eprintln!(
        "regions soak: {n} frames, {} crops, {} events",
        stats.crops, stats.events
    );
    assert_eq!(
        quiet_allocs, 0,
        "{quiet_allocs} allocations over {quiet_frames} frames without events"
    );
    assert_eq!(stats.events, REGIONS_LOOPS);
    assert!(stats.crops > n, "{} crops over {n} frames", stats.crops);
}
