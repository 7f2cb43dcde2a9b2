//! Sources that are programs writing MJPEG to a pipe, supervised:
//!
//! - `ffmpeg:INPUT`: anything ffmpeg opens (a video file, RTSP, HLS, an
//!   HTTP stream), decoded and written as MJPEG; `rtsp://…` and
//!   `rtsps://…` are short for `ffmpeg:` of that URL (over TCP);
//! - `libcamera:?width=W&height=H&fps=F[&camera=N]`: a Raspberry Pi camera
//!   module through `rpicam-vid` (else `libcamera-vid`).
//!
//! clip-edge stays the process systemd watches: the program is its child,
//! its stderr goes to the log, it is killed when the source is dropped (a
//! stop, a reload), and it is started again with backoff when it dies
//! ([`Reopening`]). A video file played to its end (the program exits 0)
//! ends the source; a live input never ends, so any exit is a lost source.
//! Credentials in a URL never reach a log line ([`crate::watch::secrets::redacted`]).

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{
    redacted, Decode, Frame, FrameSource, LiveQueue, MjpegStream, Next, Opener, Reopening,
    SourceError, LIVE_QUEUE_DEPTH,
};

/// How long a program may take to exit once it has closed its output.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// A program to run, and how its frames are read.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    /// The source as the user wrote it, credentials hidden (log lines,
    /// errors, frame names).
    pub spec: String,
    /// Binaries tried in this order (the first found on `PATH` runs).
    pub candidates: Vec<String>,
    pub args: Vec<String>,
    /// A live input (a camera, a stream): read in a thread behind a
    /// [`LiveQueue`] that drops the oldest frames, and any exit is a lost
    /// source. Otherwise (a file) the loop reads at its own pace, nothing
    /// is dropped, and a clean exit ends the source.
    pub live: bool,
    /// The level of the program's stderr lines in the log (ffmpeg prints
    /// only errors; rpicam-vid tells its settings).
    pub stderr_level: log::Level,
    /// Text replaced in the program's stderr lines: the raw input with its
    /// credentials, and what replaces it.
    redact: Option<(String, String)>,
    /// The file a file input reads (checked by [`check`]).
    input_file: Option<std::path::PathBuf>,
    /// How its frames are decoded.
    decode: Decode,
    /// Its stderr lines already said at `stderr_level`, over its restarts.
    seen: SeenLines,
}

/// The shapes of the stderr lines a program's runs said (digits and
/// addresses made `#`: a retry's `[rtsp @ 0x55…]` is the line said before),
/// the last [`SEEN_LINES`] of them. Shared by a program's restarts; not
/// part of what the program is (equal whatever it holds).
#[derive(Debug, Clone, Default)]
struct SeenLines(Arc<Mutex<std::collections::VecDeque<(String, Instant)>>>);

/// Line shapes a program's stderr keeps, at most.
const SEEN_LINES: usize = 64;
/// A shape said this long ago is said again at its level (an outage a
/// day later is worth its warning).
const SEEN_FOR: Duration = Duration::from_secs(3600);

impl PartialEq for SeenLines {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl SeenLines {
    /// Whether `line`'s shape is new (and now remembered).
    fn said_first(&self, line: &str) -> bool {
        let shape = line_shape(line);
        let mut seen = crate::watch::lock(&self.0);
        seen.retain(|(_, at)| at.elapsed() < SEEN_FOR);
        if seen.iter().any(|(s, _)| *s == shape) {
            return false;
        }
        if seen.len() == SEEN_LINES {
            seen.pop_front();
        }
        seen.push_back((shape, Instant::now()));
        true
    }
}

/// `line` with each run of digits (a hex address with them, and a minus
/// sign before them) made `#`.
fn line_shape(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '-' && chars.peek().is_some_and(char::is_ascii_digit) {
            continue;
        }
        if c.is_ascii_digit() {
            while chars
                .peek()
                .is_some_and(|c| c.is_ascii_hexdigit() || *c == 'x')
            {
                chars.next();
            }
            out.push('#');
        } else {
            out.push(c);
        }
    }
    out
}

/// ffmpeg's `Last message repeated N times`: no reason of its own.
fn is_repeat_summary(line: &str) -> bool {
    line.trim_start().starts_with("Last message repeated")
}

impl Program {
    /// Decodes the program's frames the way `decode` says.
    pub fn decoding(mut self, decode: Decode) -> Self {
        self.decode = decode;
        self
    }
}

/// Inputs read live: streams from a network (an HTTP URL is taken for a
/// camera's MJPEG stream; a video file on a web server plays live too),
/// and devices (a V4L2 camera, `/dev/video0`). Anything else is a file.
const LIVE_PREFIXES: [&str; 17] = [
    "rtsp://",
    "rtsps://",
    "rtmp://",
    "rtmps://",
    "rtmpt://",
    "rtmpe://",
    "rtmpte://",
    "rtmpts://",
    "rtp://",
    "mms://",
    "mmsh://",
    "mmst://",
    "http://",
    "https://",
    "udp://",
    "tcp://",
    "srt://",
];

/// A live program that sends no frame for this long is taken for stuck (an
/// RTSP camera that keeps its connection open and sends nothing) and
/// started again.
pub const CHILD_STALL: Duration = Duration::from_secs(15);

/// The lowest `--fps` ffmpeg cuts a live stream to (below it the stream
/// comes at its own rate and the loop drops the rest).
const MIN_FILTER_FPS: f64 = 0.2;

/// `ffmpeg:INPUT` (`input` is what follows `ffmpeg:`), or an `rtsp://` URL.
/// A live input with `fps` (the loop's `--fps`) is cut to that rate by
/// ffmpeg itself (`-vf fps=`), so frames the loop would drop are neither
/// encoded by ffmpeg nor decoded here; a file plays every frame, at the
/// loop's pace.
pub fn ffmpeg(spec: &str, input: &str, fps: Option<f64>) -> Result<Program, SourceError> {
    if input.is_empty() {
        return Err(SourceError::Unavailable {
            spec: redacted(spec),
            why: "no input (e.g. ffmpeg:/path/clip.mp4 or ffmpeg:rtsp://camera/stream)".into(),
        });
    }
    let lower = input.to_ascii_lowercase();
    let live = LIVE_PREFIXES.iter().any(|s| lower.starts_with(s)) || input.starts_with("/dev/");
    let mut args: Vec<String> = ["-hide_banner", "-nostdin", "-loglevel", "error"]
        .map(String::from)
        .to_vec();
    if lower.starts_with("rtsp://") || lower.starts_with("rtsps://") {
        args.extend(["-rtsp_transport", "tcp"].map(String::from));
    }
    args.extend(["-i".to_string(), input.to_string()]);
    // Not below a frame every 5 s: a slower filter would leave the stream
    // silent long enough to count as lost.
    if let Some(f) = fps.filter(|f| live && f.is_finite() && *f >= MIN_FILTER_FPS) {
        args.extend(["-vf".to_string(), format!("fps={f}")]);
    }
    // Each frame as it came: left to itself, ffmpeg's MJPEG output keeps a
    // constant rate and fills a jump in the camera's timestamps (a camera
    // or its encoder restarted) with copies, tens of thousands a second.
    args.extend([passthrough_flag().to_string(), "passthrough".to_string()]);
    args.extend(["-an", "-f", "mjpeg", "-q:v", "2", "-"].map(String::from));
    let shown = redacted(input);
    Ok(Program {
        spec: redacted(spec),
        candidates: vec!["ffmpeg".into()],
        args,
        live,
        stderr_level: log::Level::Warn,
        redact: (shown != input).then(|| (input.to_string(), shown)),
        input_file: (!live && !input.contains("://")).then(|| input.into()),
        decode: Decode::Exact,
        seen: SeenLines::default(),
    })
}

/// The option that passes frames through unchanged in time: `-fps_mode`
/// from ffmpeg 5.1 on (ffmpeg 9 has only it), `-vsync` before (ffmpeg 4,
/// as Ubuntu 22.04 and JetPack 6 ship it). Asked of `ffmpeg -version` once;
/// a version it cannot read is taken for a new one.
fn passthrough_flag() -> &'static str {
    static FLAG: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let version = find_on_path("ffmpeg")
            .and_then(|exe| {
                Command::new(exe)
                    .arg("-version")
                    .stdin(Stdio::null())
                    .stderr(Stdio::null())
                    .output()
                    .ok()
            })
            .and_then(|o| ffmpeg_version(&String::from_utf8_lossy(&o.stdout)));
        match version {
            Some(v) if v < (5, 1) => "-vsync",
            _ => "-fps_mode",
        }
    })
}

/// `(major, minor)` from `ffmpeg -version`'s first line (`ffmpeg version
/// 5.1.9-0+deb12u1`, `ffmpeg version n6.1.1`); None for a git build's
/// (`ffmpeg version N-113000-g…`) or anything else.
fn ffmpeg_version(text: &str) -> Option<(u32, u32)> {
    let v = text.lines().next()?.strip_prefix("ffmpeg version ")?;
    let v = v.strip_prefix('n').unwrap_or(v);
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

/// `libcamera:?width=W&height=H&fps=F[&camera=N]` (`query` is what follows
/// `libcamera:`; defaults 640x480, 30 fps, camera 0).
pub fn libcamera(spec: &str, query: &str) -> Result<Program, SourceError> {
    let bad = |why: String| SourceError::Unavailable {
        spec: spec.into(),
        why,
    };
    let query = query.strip_prefix('?').unwrap_or(query);
    let (mut width, mut height, mut fps, mut camera) = (640u32, 480u32, 30u32, 0u32);
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| bad(format!("{kv:?}: expected key=value")))?;
        let num = |min: u32, max: u32| {
            v.parse::<u32>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| bad(format!("{k}={v}: expected {min} to {max}")))
        };
        match k {
            "width" => width = num(1, 8192)?,
            "height" => height = num(1, 8192)?,
            "fps" => fps = num(1, 1000)?,
            "camera" => camera = num(0, 15)?,
            _ => {
                return Err(bad(format!(
                    "unknown key {k:?} (width, height, fps, camera)"
                )))
            }
        }
    }
    let args = [
        "-t",
        "0",
        "-n",
        "--codec",
        "mjpeg",
        "--width",
        &width.to_string(),
        "--height",
        &height.to_string(),
        "--framerate",
        &fps.to_string(),
        "--camera",
        &camera.to_string(),
        // Each frame written through at once, not held in stdio's buffer
        // until the next (a frame period late).
        "--flush",
        "-o",
        "-",
    ]
    .map(String::from)
    .to_vec();
    Ok(Program {
        spec: spec.into(),
        candidates: vec!["rpicam-vid".into(), "libcamera-vid".into()],
        args,
        live: true,
        stderr_level: log::Level::Info,
        redact: None,
        input_file: None,
        decode: Decode::Exact,
        seen: SeenLines::default(),
    })
}

/// Starts `program` supervised: the first start's failure (no such binary,
/// say) is the caller's error; later deaths are restarted with backoff.
pub fn open(program: Program) -> Result<Box<dyn FrameSource>, SourceError> {
    let spec = program.spec.clone();
    let live = program.live;
    let mut open: Opener = Box::new(move || start(&program));
    let first = open()?;
    Ok(Box::new(if live {
        Reopening::new(&spec, first, open)
    } else {
        Reopening::until_end(&spec, first, open)
    }))
}

/// Where `bin` is: itself when it names a path, else the first executable
/// file of that name in a `PATH` folder. Looked up before spawning, so a
/// missing program is the same one-line error wherever spawn reports it
/// late (under emulation, `exec` fails in the child).
fn find_on_path(bin: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if bin.contains('/') {
        let p = std::path::PathBuf::from(bin);
        return runnable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(bin))
        .find(|p| runnable(p))
}

/// Whether one of `program`'s candidates is on `PATH`, and its input file
/// (if it reads one) is there.
pub fn check(program: &Program) -> Result<(), SourceError> {
    let found = program
        .candidates
        .iter()
        .any(|bin| find_on_path(bin).is_some());
    if !found {
        return Err(not_found(program));
    }
    match &program.input_file {
        Some(f) if !f.is_file() => Err(SourceError::Unavailable {
            spec: program.spec.clone(),
            why: format!("{}: no such file", f.display()),
        }),
        _ => Ok(()),
    }
}

fn not_found(program: &Program) -> SourceError {
    SourceError::Unavailable {
        spec: program.spec.clone(),
        why: format!("{} not found on PATH", program.candidates.join(" or ")),
    }
}

/// The running child, shared by the reader and the source the loop holds
/// (which kills it when dropped).
#[derive(Clone)]
struct Proc(Arc<Mutex<Child>>);

impl Proc {
    fn kill(&self) {
        if let Ok(mut c) = self.0.lock() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Its exit status, waiting up to [`EXIT_WAIT`] (then it is killed).
    fn exit_status(&self) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + EXIT_WAIT;
        loop {
            if let Ok(Some(s)) = self.0.lock().map(|mut c| c.try_wait().ok().flatten()) {
                return Some(s);
            }
            if Instant::now() >= until {
                self.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// One run of the program: its output split into frames.
struct Run {
    proc: Proc,
    stream: MjpegStream<ChildStdout>,
    spec: String,
    name: String,
    live: bool,
    /// The last line the program wrote on stderr (its reason, when it
    /// exits: "Connection refused", "401 Unauthorized"), and the thread
    /// that reads them.
    last_line: Arc<Mutex<String>>,
    stderr: Option<std::thread::JoinHandle<()>>,
}

/// The longest stderr line kept for a reason.
const REASON_CHARS: usize = 300;

impl Run {
    /// Why the program ended, in its own last words when it said any.
    fn exited(&mut self, how: String) -> String {
        // Its stderr read to the end (it closed with the program).
        if let Some(t) = self.stderr.take() {
            let until = Instant::now() + Duration::from_millis(500);
            while !t.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let last = self.last_line.lock().map(|l| l.clone()).unwrap_or_default();
        if last.is_empty() {
            how
        } else {
            format!("{how}: {last}")
        }
    }
}

impl FrameSource for Run {
    fn next(&mut self, frame: &mut Frame) -> Result<Next, SourceError> {
        match self.stream.next(frame)? {
            Next::End => {
                let status = self.proc.exit_status();
                match status {
                    Some(s) if s.success() && !self.live => Ok(Next::End),
                    Some(s) => Err(SourceError::Lost {
                        spec: self.spec.clone(),
                        why: self.exited(format!("{} exited ({s})", self.name)),
                    }),
                    None => Err(SourceError::Lost {
                        spec: self.spec.clone(),
                        why: format!("{} closed its output and did not exit", self.name),
                    }),
                }
            }
            n => Ok(n),
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.proc.kill();
    }
}

/// A live run behind its queue; dropping it kills the program, which ends
/// the reader thread. Silent for [`CHILD_STALL`]: lost.
struct LiveRun {
    queue: LiveQueue,
    proc: Proc,
    spec: String,
    last_frame: Instant,
}

impl FrameSource for LiveRun {
    fn next(&mut self, frame: &mut Frame) -> Result<Next, SourceError> {
        let n = self.queue.next(frame)?;
        match n {
            Next::Frame => self.last_frame = Instant::now(),
            Next::Idle if self.last_frame.elapsed() >= CHILD_STALL => {
                return Err(SourceError::Lost {
                    spec: self.spec.clone(),
                    why: format!("no frame for {} s", CHILD_STALL.as_secs()),
                })
            }
            _ => {}
        }
        Ok(n)
    }
    fn dropped(&self) -> u64 {
        self.queue.dropped()
    }

    fn close(&mut self, wait: std::time::Duration) {
        // The program gone, its pipe ends the thread's read at once.
        self.proc.kill();
        self.queue.close(wait);
    }
}

impl Drop for LiveRun {
    fn drop(&mut self) {
        self.proc.kill();
    }
}

/// Spawns the first of `program`'s candidates found on `PATH`.
fn spawn(program: &Program) -> Result<(Child, String), SourceError> {
    for bin in &program.candidates {
        let Some(exe) = find_on_path(bin) else {
            continue;
        };
        match Command::new(exe)
            .args(&program.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => return Ok((c, bin.clone())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(SourceError::Unavailable {
                    spec: program.spec.clone(),
                    why: format!("starting {bin}: {e}"),
                })
            }
        }
    }
    Err(not_found(program))
}

/// One start of the program, its stderr forwarded to the log.
fn start(program: &Program) -> Result<Box<dyn FrameSource>, SourceError> {
    let (mut child, bin) = spawn(program)?;
    log::info!("{}: started {bin} (pid {})", program.spec, child.id());
    let stdout = child.stdout.take().expect("stdout is piped");
    let last_line = Arc::new(Mutex::new(String::new()));
    let mut stderr = None;
    if let Some(err) = child.stderr.take() {
        let (level, name, redact) = (program.stderr_level, bin.clone(), program.redact.clone());
        let seen = program.seen.clone();
        let last = last_line.clone();
        stderr = std::thread::Builder::new()
            .name("clip-edge-child-log".into())
            .spawn(move || {
                // Bytes, not UTF-8 lines: the pipe is drained whatever the
                // program writes, so it never blocks on a full stderr.
                let mut r = BufReader::new(err);
                let mut buf = Vec::new();
                while matches!(r.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    buf.clear();
                    let line = match &redact {
                        Some((raw, shown)) => line.replace(raw, shown),
                        None => line,
                    };
                    // Other URLs it quotes (an HLS playlist's segments).
                    let line = crate::watch::secrets::secret_values_hidden(&line);
                    // A line said before (by this run or an earlier one
                    // of this source: a camera refusing the password at
                    // every retry, a lossy stream's decoding errors), and
                    // ffmpeg's `Last message repeated`, go to the debug
                    // log only.
                    let new = !is_repeat_summary(&line) && seen.said_first(&line);
                    log::log!(
                        if new { level } else { log::Level::Debug },
                        "{name}: {line}"
                    );
                    if !line.trim().is_empty() && !is_repeat_summary(&line) {
                        if let Ok(mut l) = last.lock() {
                            *l = line.chars().take(REASON_CHARS).collect();
                        }
                    }
                }
            })
            .ok();
    }
    let proc = Proc(Arc::new(Mutex::new(child)));
    let run = Run {
        proc: proc.clone(),
        stream: MjpegStream::new(stdout, &bin).decoding(program.decode),
        spec: program.spec.clone(),
        name: bin,
        live: program.live,
        last_line,
        stderr,
    };
    if program.live {
        Ok(Box::new(LiveRun {
            queue: LiveQueue::spawn(run, LIVE_QUEUE_DEPTH),
            proc,
            spec: program.spec.clone(),
            last_frame: Instant::now(),
        }))
    } else {
        Ok(Box::new(run))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ffmpeg_versions_are_read_and_frames_pass_through_in_time() {
        assert_eq!(
            ffmpeg_version("ffmpeg version 5.1.9-0+deb12u1 Copyright"),
            Some((5, 1))
        );
        assert_eq!(
            ffmpeg_version("ffmpeg version 4.4.2-0ubuntu0.22.04.1 Copyright"),
            Some((4, 4))
        );
        assert_eq!(
            ffmpeg_version("ffmpeg version n6.1.1 Copyright"),
            Some((6, 1))
        );
        assert_eq!(ffmpeg_version("ffmpeg version 7 Copyright"), Some((7, 0)));
        assert_eq!(
            ffmpeg_version("ffmpeg version N-113000-gabc Copyright"),
            None
        );
        assert_eq!(ffmpeg_version(""), None);
        let p = ffmpeg("rtsp://cam/stream", "rtsp://cam/stream", Some(2.0)).unwrap();
        assert!(
            p.args
                .windows(2)
                .any(|w| (w[0] == "-fps_mode" || w[0] == "-vsync") && w[1] == "passthrough"),
            "{:?}",
            p.args
        );
    }

    #[test]
    fn a_stderr_line_said_again_is_not_new() {
        let seen = SeenLines::default();
        assert!(seen.said_first("[rtsp @ 0x5616aa00] method DESCRIBE failed: 401 Unauthorized"));
        // The next run's line, at another address.
        assert!(!seen.said_first("[rtsp @ 0x55e0bb10] method DESCRIBE failed: 401 Unauthorized"));
        assert!(!seen
            .clone()
            .said_first("[rtsp @ 0x1] method DESCRIBE failed: 401 Unauthorized"));
        assert!(seen.said_first("[h264 @ 0x1] error while decoding MB 12 34, bytestream -5"));
        assert!(!seen.said_first("[h264 @ 0x2] error while decoding MB 7 1, bytestream -19"));
        assert!(!seen.said_first("[h264 @ 0x2] error while decoding MB 7 1, bytestream 2124"));
        for k in 0..SEEN_LINES {
            seen.said_first(&format!("line {}", "x".repeat(k)));
        }
        assert_eq!(crate::watch::lock(&seen.0).len(), SEEN_LINES);
        // Said an hour ago: said again.
        let old = Instant::now().checked_sub(SEEN_FOR);
        if let Some(old) = old {
            crate::watch::lock(&seen.0)
                .iter_mut()
                .for_each(|(_, at)| *at = old);
            assert!(seen.said_first("line x"));
        }
        assert!(is_repeat_summary("    Last message repeated 148 times"));
    }

    #[test]
    fn ffmpeg_reads_files_at_the_loops_pace_and_streams_live() {
        let p = ffmpeg("ffmpeg:/v/clip.mkv", "/v/clip.mkv", Some(2.0)).unwrap();
        assert!(!p.live);
        let i = p.args.iter().position(|a| a == "-i").unwrap();
        assert_eq!(p.args[i + 1], "/v/clip.mkv");
        assert_eq!(p.args.last().unwrap(), "-");
        // A file plays every frame: no rate filter.
        assert!(!p.args.iter().any(|a| a == "-vf"), "{:?}", p.args);
        let p = ffmpeg(
            "rtsp://admin:secret@10.0.0.9/live",
            "rtsp://admin:secret@10.0.0.9/live",
            Some(2.5),
        )
        .unwrap();
        assert!(p.live);
        // A live stream is cut to the loop's rate by ffmpeg.
        assert!(
            p.args.windows(2).any(|w| w == ["-vf", "fps=2.5"]),
            "{:?}",
            p.args
        );
        // Not below a frame every 5 s (the stream would seem lost).
        let slow = ffmpeg("rtsp://cam/live", "rtsp://cam/live", Some(0.1)).unwrap();
        assert!(!slow.args.iter().any(|a| a == "-vf"), "{:?}", slow.args);
        assert!(p.args.windows(2).any(|w| w == ["-rtsp_transport", "tcp"]));
        assert!(!p.spec.contains("secret"), "{}", p.spec);
        assert!(
            ffmpeg("ffmpeg:/dev/video0", "/dev/video0", None)
                .unwrap()
                .live
        );
        assert!(ffmpeg("ffmpeg:", "", None).is_err());
    }

    #[test]
    fn libcamera_specs_parse_and_bad_keys_are_named() {
        let p = libcamera(
            "libcamera:?width=1280&height=720&fps=15&camera=1",
            "?width=1280&height=720&fps=15&camera=1",
        )
        .unwrap();
        assert!(p.live);
        assert_eq!(p.candidates, ["rpicam-vid", "libcamera-vid"]);
        for w in [
            ["--width", "1280"],
            ["--height", "720"],
            ["--framerate", "15"],
            ["--camera", "1"],
        ] {
            assert!(p.args.windows(2).any(|a| a == w), "{w:?} in {:?}", p.args);
        }
        for (q, needle) in [
            ("?width=0", "width=0"),
            ("?fps=x", "fps=x"),
            ("?zoom=2", "zoom"),
            ("?width", "width"),
        ] {
            let e = libcamera(&format!("libcamera:{q}"), q)
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle) && e.contains("libcamera:"), "{e}");
        }
    }

    #[test]
    fn a_missing_program_is_one_line_naming_it() {
        let mut p = libcamera("libcamera:", "").unwrap();
        p.candidates = vec!["clip-edge-no-such-a".into(), "clip-edge-no-such-b".into()];
        let e = open(p).err().unwrap().to_string();
        assert!(
            e.contains("clip-edge-no-such-a or clip-edge-no-such-b not found on PATH")
                && !e.contains('\n'),
            "{e}"
        );
    }
}
