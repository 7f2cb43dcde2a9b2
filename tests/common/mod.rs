//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

mod command;
pub mod numeric;
pub use command::command;

/// The camera loop's options for these watched labels and regions: the
/// default rules, every frame, no snapshots, no camera name.
pub fn watch_options(
    watched: Vec<clip_edge::watch::Watched>,
    regions: clip_edge::watch::regions::RegionOptions,
    source_name: &str,
) -> clip_edge::watch::Options {
    clip_edge::watch::Options {
        watched,
        rules: clip_edge::watch::detect::Rules::default(),
        fps: None,
        motion_threshold: None,
        snapshots: None,
        snapshot_retention: Default::default(),
        source_name: source_name.into(),
        camera: None,
        decode: Default::default(),
        regions,
    }
}

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Every committed bundle: both default models, and a ViT (fp32, int8), a
/// ResNet (fp16) and a MobileCLIP (int8: depthwise and 1 × 1 convolutions,
/// GELU by erf) fixture.
pub const COMMITTED_BUNDLES: [&str; 6] = [
    "models/default-fp32",
    "models/default-int8",
    "tests/fixtures/bundles/vit_tiny_fp32",
    "tests/fixtures/bundles/vit_tiny_int8",
    "tests/fixtures/bundles/rn_tiny_fp16",
    "tests/fixtures/bundles/mobileclip_tiny_int8",
];

pub mod scratch;

/// A fresh scratch directory for one test of this process, removed when
/// the test process exits (`CLIP_EDGE_KEEP_SCRATCH=1` keeps them, for a
/// look after a failure).
pub fn scratch(name: &str) -> PathBuf {
    scratch::dir("clip-edge-test", name)
}

/// Runs `cmd` to its end; fails the test with its stderr unless it
/// succeeded.
pub fn output_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        cmd.get_program(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `clip-edge`, as built for these tests.
pub fn bin() -> Command {
    command(env!("CARGO_BIN_EXE_clip-edge"))
}

/// `clip-edge watch` of the committed clip (`models/clips/shapes`) with the
/// default int8 bundle; the test adds what it watches and where events go.
pub fn watch_clip() -> Command {
    let mut c = bin();
    c.arg("watch")
        .arg("--bundle")
        .arg(root().join("models/default-int8"))
        .arg("--source")
        .arg(format!(
            "dir:{}",
            root().join("models/clips/shapes").display()
        ));
    c
}

/// On arm64, asserts that tract picked a native f16 kernel (`arm64fp16_*`
/// for NEON FEAT_FP16, `sve_mm*_f16_*` for SVE) exactly where its ISA set has
/// FP16; `generic_f16_*` is its portable fallback. `kernels` are `Mult:` lines.
pub fn assert_native_f16_iff_fp16(kernels: &[String]) {
    if cfg!(target_arch = "aarch64") {
        let fp16 = tract_linalg::isa::native().has(tract_linalg::isa::Isa::Aarch64Fp16);
        let native = kernels.iter().any(|k| {
            k.contains("arm64fp16_") || k.contains("sve_mmm_f16") || k.contains("sve_mmv_f16")
        });
        assert_eq!(native, fp16, "{kernels:?}, FP16 {fp16}");
    }
}

/// Per image, the cosine between `got[i]` and `want[i]` after each set's
/// mean over the images is subtracted: what tells images apart. The tiny
/// random-weight encoders map every image to nearly the same direction
/// (plain cosines between images are 0.999999), so plain cosines or
/// probabilities could not catch a broken encoder; centred ones can.
pub fn centred_cosines(got: &[Vec<f32>], want: &[Vec<f32>]) -> Vec<f32> {
    assert_eq!(got.len(), want.len());
    let centre = |set: &[Vec<f32>]| -> Vec<Vec<f32>> {
        let n = set.len() as f32;
        let mean: Vec<f32> = (0..set[0].len())
            .map(|d| set.iter().map(|v| v[d]).sum::<f32>() / n)
            .collect();
        set.iter()
            .map(|v| v.iter().zip(&mean).map(|(a, m)| a - m).collect())
            .collect()
    };
    let (g, w) = (centre(got), centre(want));
    g.iter()
        .zip(&w)
        .map(|(a, b)| {
            let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
            dot / (n(a) * n(b))
        })
        .collect()
}

/// Puts `cmd`'s process in a process group of its own, so that
/// [`kill_group`] reaches what it starts too: under qemu the child is the
/// runner (`timeout … qemu-… clip-edge`), and a signal to `timeout` alone
/// would leave the emulated program running.
pub fn own_group(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0)
}

/// Sends `signal` (e.g. "KILL", "TERM") to the process group of `child`
/// (started through [`own_group`]) and, for KILL, reaps it.
pub fn kill_group(child: &mut std::process::Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{}", child.id()))
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} failed");
    if signal == "KILL" {
        child.wait().unwrap();
    }
}

/// A TCP port free on 127.0.0.1 just now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The committed clip's frames (`models/clips/shapes/NNNNN.jpg`), in order.
pub fn clip_jpegs() -> Vec<PathBuf> {
    jpegs_of("shapes")
}

/// The frames of committed clip `models/clips/NAME` (`NNNNN.jpg`), in order.
pub fn jpegs_of(name: &str) -> Vec<PathBuf> {
    let mut f: Vec<PathBuf> = std::fs::read_dir(root().join("models/clips").join(name))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    f.sort();
    f
}

/// The default int8 bundle on the native engine, one thread.
pub fn default_int8_engine() -> clip_edge::engine::Engine {
    clip_edge::engine::Engine::load_on(
        &root().join("models/default-int8"),
        &Default::default(),
        clip_edge::engine::EngineKind::Native,
        1,
    )
    .unwrap()
}

/// The committed clip decoded, frame by frame.
pub fn clip_frames_decoded() -> Vec<clip_edge::watch::source::Frame> {
    frames_decoded("shapes", usize::MAX)
}

/// The first `limit` frames of committed clip `models/clips/NAME`, decoded.
pub fn frames_decoded(name: &str, limit: usize) -> Vec<clip_edge::watch::source::Frame> {
    use clip_edge::watch::source::{DirSource, Frame, FrameSource, Next};
    let mut dir = DirSource::open(&root().join("models/clips").join(name)).unwrap();
    let mut frames = Vec::new();
    let mut f = Frame::default();
    while frames.len() < limit && dir.next(&mut f).unwrap() == Next::Frame {
        frames.push(f.clone());
    }
    frames
}

/// The committed clip's truth: (watched labels, spans of watched labels
/// as (label, start, end)).
pub fn clip_truth() -> (Vec<String>, Vec<(String, i64, i64)>) {
    let (watched, spans) = truth_of("shapes");
    let spans = spans
        .iter()
        .map(|s| {
            (
                s["label"].as_str().unwrap().to_string(),
                s["start"].as_i64().unwrap(),
                s["end"].as_i64().unwrap(),
            )
        })
        .collect();
    (watched, spans)
}

/// `models/clips/NAME/truth.json`: the watched labels and the spans of
/// watched labels, as JSON.
pub fn truth_of(name: &str) -> (Vec<String>, Vec<serde_json::Value>) {
    let path = root().join("models/clips").join(name).join("truth.json");
    let t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let watched: Vec<String> = t["spec"]["watched"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let spans = t["spans"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| watched.iter().any(|w| w == s["label"].as_str().unwrap()))
        .cloned()
        .collect();
    (watched, spans)
}

/// The last line of a command's stdout as JSON (`watch --stats` prints its
/// object after the start-up and event lines).
pub fn last_json_line(stdout: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    let line = text.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// An event log's lines as JSON (none when there is no log yet); a log
/// must never end mid-line.
pub fn read_log(p: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{p:?} ends mid-line"
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// `labels` as watched labels of `engine`'s bundle, at threshold 0.5.
pub fn watched_at_half<S: AsRef<str>>(
    engine: &clip_edge::engine::Engine,
    labels: &[S],
) -> Vec<clip_edge::watch::Watched> {
    labels
        .iter()
        .map(|l| clip_edge::watch::Watched {
            label: l.as_ref().to_string(),
            index: engine
                .bundle
                .labels()
                .iter()
                .position(|x| x == l.as_ref())
                .unwrap(),
            threshold: 0.5,
        })
        .collect()
}

/// An event's start and end frames may differ from the committed clip's
/// truth by this many frames (the 2-of-3 window and 3-frame end lag are
/// within it). Measured: 0 at both ends of all 15 spans of the watch
/// tests on x86_64; another kernel path may classify a frame near a
/// threshold the other way.
pub const SPAN_TOL_FRAMES: i64 = 3;

/// (label, start frame, end frame, end reason) of each event of a log,
/// checking that every start has one end with the same id and label.
pub fn spans_of(log: &[serde_json::Value]) -> Vec<(String, i64, i64, Option<String>)> {
    let mut out = Vec::new();
    for s in log.iter().filter(|e| e["event"] == "start") {
        let ends: Vec<&serde_json::Value> = log
            .iter()
            .filter(|e| e["event"] == "end" && e["id"] == s["id"])
            .collect();
        assert_eq!(ends.len(), 1, "event {} has {} ends", s["id"], ends.len());
        assert_eq!(ends[0]["label"], s["label"]);
        out.push((
            s["label"].as_str().unwrap().to_string(),
            s["frame"].as_i64().unwrap(),
            ends[0]["frame"].as_i64().unwrap(),
            ends[0]["reason"].as_str().map(String::from),
        ));
    }
    out
}

/// The events are the committed clip's watched spans, in order, each
/// within [`SPAN_TOL_FRAMES`].
pub fn assert_matches_truth(got: &[(String, i64, i64, Option<String>)]) {
    let (_, want) = clip_truth();
    assert_eq!(got.len(), want.len(), "events {got:?}, truth {want:?}");
    for ((gl, gs, ge, _), (wl, ws, we)) in got.iter().zip(&want) {
        assert_eq!(gl, wl);
        assert!(
            (gs - ws).abs() <= SPAN_TOL_FRAMES && (ge - we).abs() <= SPAN_TOL_FRAMES,
            "{gl}: event {gs}..={ge}, truth {ws}..={we}"
        );
    }
}
