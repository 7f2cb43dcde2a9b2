//! Frame sources: the loop sees frames, never devices.
//!
//! - `dir:PATH`: image files in name order, each exactly once;
//! - `stdin:mjpeg`: concatenated JPEGs on standard input (`rpicam-vid
//!   --codec mjpeg -o -`, `ffmpeg -f mjpeg -`);
//! - `v4l2:/dev/videoN[?...]` (feature `v4l2`): a V4L2 camera.
//!
//! Live sources run in their own thread behind a [`LiveQueue`] that keeps
//! the newest frames and drops (and counts) the oldest when the loop falls
//! behind. Frames are written into buffers the caller owns and reuses.

use std::collections::VecDeque;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use thiserror::Error;

use crate::preprocess::{ImageView, Mode};

/// The largest JPEG accepted on a stream (a frame is refused beyond it,
/// rather than growing a buffer without bound).
pub const MAX_JPEG_BYTES: usize = 16 << 20;
/// Frames a live source keeps waiting for the loop.
pub const LIVE_QUEUE_DEPTH: usize = 2;
/// How long a live source waits for a frame before answering [`Next::Idle`].
pub const IDLE_TICK: std::time::Duration = std::time::Duration::from_millis(200);

#[derive(Debug, Error)]
pub enum SourceError {
    #[error("--source {0:?}: expected dir:PATH, stdin:mjpeg or v4l2:/dev/videoN")]
    BadSpec(String),
    #[error("--source {spec}: {why}")]
    Unavailable { spec: String, why: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {why}")]
    Frame { what: String, why: String },
    /// The source failed as a whole (its thread ended with an error, the
    /// device went away); a [`Reopening`] source tries again.
    #[error("{spec}: source lost: {why}")]
    Lost { spec: String, why: String },
}

/// A change in the source's health, for the event log and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceNote {
    Lost(String),
    Back,
}

/// Shortest and longest wait between attempts to reopen a lost source.
pub const REOPEN_BACKOFF: (std::time::Duration, std::time::Duration) = (
    std::time::Duration::from_millis(250),
    std::time::Duration::from_secs(10),
);

/// One RGB frame in a reused buffer.
#[derive(Debug, Default, Clone)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    /// Interleaved RGB, `width * height * 3` bytes.
    pub rgb: Vec<u8>,
    /// 0-based position of the frame in the source (dropped frames count).
    pub index: u64,
}

impl Frame {
    pub fn view(&self) -> ImageView<'_> {
        ImageView::new(self.width, self.height, Mode::Rgb, &self.rgb)
    }

    /// Resizes the buffer for `width x height` (no allocation when it
    /// already holds that many bytes or more).
    pub fn reshape(&mut self, width: u32, height: u32) -> &mut [u8] {
        self.width = width;
        self.height = height;
        self.rgb.resize(width as usize * height as usize * 3, 0);
        &mut self.rgb
    }

    /// Copies `other` in, reusing this frame's buffer.
    pub fn copy_from(&mut self, other: &Frame) {
        self.width = other.width;
        self.height = other.height;
        self.index = other.index;
        self.rgb.clear();
        self.rgb.extend_from_slice(&other.rgb);
    }
}

/// What [`FrameSource::next`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Frame,
    /// No frame within [`IDLE_TICK`] (a live source is silent): the loop
    /// gets to check for a stop and report that it is alive.
    Idle,
    /// The source has no more frames (end of a folder or of the stream).
    End,
}

/// A source of frames.
pub trait FrameSource {
    /// Writes the next frame into `frame` (reusing its buffer).
    fn next(&mut self, frame: &mut Frame) -> Result<Next, SourceError>;
    /// Frames dropped because the loop fell behind.
    fn dropped(&self) -> u64 {
        0
    }
    /// A health change since the last call (lost, back), if any.
    fn take_note(&mut self) -> Option<SourceNote> {
        None
    }
}

/// Something that opens a source (again).
pub type Opener = Box<dyn FnMut() -> Result<Box<dyn FrameSource + Send>, SourceError> + Send>;

/// A live source reopened with backoff whenever it is lost (a USB camera
/// unplugged: the device errors, then cannot be opened until it is back).
/// Frame indices go on from where they were. While it is down the loop
/// gets [`Next::Idle`], so it keeps petting the watchdog and sees a stop.
pub struct Reopening {
    spec: String,
    open: Opener,
    inner: Option<Box<dyn FrameSource + Send>>,
    /// Added to the inner source's indices (it restarts at 0).
    base: u64,
    next_index: u64,
    backoff: std::time::Duration,
    retry_at: std::time::Instant,
    note: Option<SourceNote>,
    dropped_before: u64,
}

impl Reopening {
    /// `first` is the source as opened at start (an open that fails at
    /// start is an error for the user, not something to wait for).
    pub fn new(spec: &str, first: Box<dyn FrameSource + Send>, open: Opener) -> Self {
        Reopening {
            spec: spec.into(),
            open,
            inner: Some(first),
            base: 0,
            next_index: 0,
            backoff: REOPEN_BACKOFF.0,
            retry_at: std::time::Instant::now(),
            note: None,
            dropped_before: 0,
        }
    }

    fn lose(&mut self, why: String) {
        log::warn!("{}: source lost ({why}); reopening", self.spec);
        if let Some(old) = self.inner.take() {
            self.dropped_before += old.dropped();
        }
        self.base = self.next_index;
        self.note = Some(SourceNote::Lost(why));
        self.retry_at = std::time::Instant::now() + self.backoff;
    }
}

impl FrameSource for Reopening {
    fn next(&mut self, frame: &mut Frame) -> Result<Next, SourceError> {
        let Some(inner) = self.inner.as_mut() else {
            let now = std::time::Instant::now();
            if now < self.retry_at {
                std::thread::sleep((self.retry_at - now).min(IDLE_TICK));
                return Ok(Next::Idle);
            }
            match (self.open)() {
                Ok(s) => {
                    log::warn!("{}: source back", self.spec);
                    self.inner = Some(s);
                    self.backoff = REOPEN_BACKOFF.0;
                    self.note = Some(SourceNote::Back);
                }
                Err(e) => {
                    log::debug!("{}: reopen failed: {e}", self.spec);
                    self.backoff = (self.backoff * 2).min(REOPEN_BACKOFF.1);
                    self.retry_at = std::time::Instant::now() + self.backoff;
                }
            }
            return Ok(Next::Idle);
        };
        match inner.next(frame) {
            Ok(Next::Frame) => {
                frame.index += self.base;
                self.next_index = frame.index + 1;
                Ok(Next::Frame)
            }
            Ok(Next::Idle) => Ok(Next::Idle),
            Ok(Next::End) => {
                self.lose("the stream ended".into());
                Ok(Next::Idle)
            }
            Err(SourceError::Lost { why, .. }) => {
                self.lose(why);
                Ok(Next::Idle)
            }
            Err(SourceError::Io { path, source }) => {
                self.lose(format!("{}: {source}", path.display()));
                Ok(Next::Idle)
            }
            Err(e) => Err(e),
        }
    }

    fn dropped(&self) -> u64 {
        self.dropped_before + self.inner.as_ref().map_or(0, |s| s.dropped())
    }

    fn take_note(&mut self) -> Option<SourceNote> {
        self.note.take()
    }
}

/// Opens the source `spec` names (`dir:`, `stdin:mjpeg`, `v4l2:`).
pub fn open(spec: &str) -> Result<Box<dyn FrameSource>, SourceError> {
    let (kind, rest) = spec
        .split_once(':')
        .ok_or_else(|| SourceError::BadSpec(spec.into()))?;
    match kind {
        "dir" => Ok(Box::new(DirSource::open(Path::new(rest))?)),
        "stdin" if rest == "mjpeg" => Ok(Box::new(LiveQueue::spawn(
            MjpegStream::new(std::io::stdin(), "stdin"),
            LIVE_QUEUE_DEPTH,
        ))),
        "v4l2" => open_v4l2(spec, rest),
        _ => Err(SourceError::BadSpec(spec.into())),
    }
}

#[cfg(all(feature = "v4l2", target_os = "linux"))]
fn open_v4l2(spec: &str, rest: &str) -> Result<Box<dyn FrameSource>, SourceError> {
    let (s, r) = (spec.to_string(), rest.to_string());
    let open = move || -> Result<Box<dyn FrameSource + Send>, SourceError> {
        let cam = super::v4l2::Camera::open(&s, &r)?;
        Ok(Box::new(LiveQueue::spawn(cam, LIVE_QUEUE_DEPTH)))
    };
    let mut open: Opener = Box::new(open);
    let first = open()?;
    Ok(Box::new(Reopening::new(spec, first, open)))
}

#[cfg(not(all(feature = "v4l2", target_os = "linux")))]
fn open_v4l2(spec: &str, rest: &str) -> Result<Box<dyn FrameSource>, SourceError> {
    V4l2Spec::parse(rest)?;
    Err(SourceError::Unavailable {
        spec: spec.into(),
        why: "this build has no V4L2 support (build with --features v4l2, on Linux)".into(),
    })
}

/// Pixel formats a V4L2 camera is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    Mjpg,
    Yuyv,
    Nv12,
}

/// `v4l2:/dev/videoN[?width=W&height=H&fps=F&format=MJPG|YUYV|NV12]`
/// (defaults 640x480, 30 fps, MJPG).
#[derive(Debug, Clone, PartialEq)]
pub struct V4l2Spec {
    pub device: PathBuf,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub format: PixelFormat,
}

impl V4l2Spec {
    /// `rest` is what follows `v4l2:`; errors name the key or value.
    pub fn parse(rest: &str) -> Result<Self, SourceError> {
        let bad = |why: String| SourceError::Unavailable {
            spec: format!("v4l2:{rest}"),
            why,
        };
        let (dev, query) = rest.split_once('?').unwrap_or((rest, ""));
        if dev.is_empty() {
            return Err(bad("no device (e.g. v4l2:/dev/video0)".into()));
        }
        let mut s = V4l2Spec {
            device: dev.into(),
            width: 640,
            height: 480,
            fps: 30,
            format: PixelFormat::Mjpg,
        };
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| bad(format!("{kv:?}: expected key=value")))?;
            let num = |max: u32| {
                v.parse::<u32>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| bad(format!("{k}={v}: expected 1 to {max}")))
            };
            match k {
                "width" => s.width = num(8192)?,
                "height" => s.height = num(8192)?,
                "fps" => s.fps = num(1000)?,
                "format" => {
                    s.format = match v.to_ascii_uppercase().as_str() {
                        "MJPG" | "MJPEG" => PixelFormat::Mjpg,
                        "YUYV" => PixelFormat::Yuyv,
                        "NV12" => PixelFormat::Nv12,
                        _ => return Err(bad(format!("format={v}: expected MJPG, YUYV or NV12"))),
                    }
                }
                _ => {
                    return Err(bad(format!(
                        "unknown key {k:?} (width, height, fps, format)"
                    )))
                }
            }
        }
        Ok(s)
    }
}

/// Image files of a folder, in name order, each exactly once.
pub struct DirSource {
    files: Vec<PathBuf>,
    next: usize,
    bytes: Vec<u8>,
}

/// File extensions a `dir:` source reads.
const IMAGE_EXTENSIONS: [&str; 7] = ["jpg", "jpeg", "png", "bmp", "gif", "webp", "tiff"];

impl DirSource {
    pub fn open(dir: &Path) -> Result<Self, SourceError> {
        let io = |source| SourceError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut files = Vec::new();
        for e in std::fs::read_dir(dir).map_err(io)? {
            let p = e.map_err(io)?.path();
            let ext = p
                .extension()
                .and_then(|e| e.to_str())
                .map(|e| e.to_ascii_lowercase());
            if ext.is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str())) {
                files.push(p);
            }
        }
        if files.is_empty() {
            return Err(SourceError::Unavailable {
                spec: format!("dir:{}", dir.display()),
                why: format!("no image files ({})", IMAGE_EXTENSIONS.join(", ")),
            });
        }
        files.sort();
        Ok(DirSource {
            files,
            next: 0,
            bytes: Vec::new(),
        })
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

impl FrameSource for DirSource {
    fn next(&mut self, frame: &mut Frame) -> Result<Next, SourceError> {
        let Some(path) = self.files.get(self.next) else {
            return Ok(Next::End);
        };
        let index = self.next as u64;
        self.next += 1;
        self.bytes.clear();
        std::fs::File::open(path)
            .and_then(|f| {
                f.take(crate::decode::MAX_IMAGE_FILE_BYTES)
                    .read_to_end(&mut self.bytes)
            })
            .map_err(|source| SourceError::Io {
                path: path.clone(),
                source,
            })?;
        decode_into(&self.bytes, &path.display().to_string(), frame)?;
        frame.index = index;
        Ok(Next::Frame)
    }
}

/// Decodes an encoded image (any format `decode` reads) into `frame` as RGB.
pub fn decode_into(bytes: &[u8], what: &str, frame: &mut Frame) -> Result<(), SourceError> {
    let err = |why: String| SourceError::Frame {
        what: what.into(),
        why,
    };
    if bytes.starts_with(&[0xFF, 0xD8]) {
        return decode_jpeg_into(bytes, what, frame);
    }
    let img =
        crate::decode::decode_bytes(bytes, Path::new(what)).map_err(|e| err(e.to_string()))?;
    let view = img.view();
    let out = frame.reshape(img.width, img.height);
    to_rgb(&view, out);
    Ok(())
}

/// JPEG straight into the frame's buffer (baseline and progressive; grey
/// is widened to RGB).
pub fn decode_jpeg_into(bytes: &[u8], what: &str, frame: &mut Frame) -> Result<(), SourceError> {
    use image::ImageDecoder;
    let err = |why: String| SourceError::Frame {
        what: what.into(),
        why,
    };
    let dec = image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(bytes))
        .map_err(|e| err(e.to_string()))?;
    let (w, h) = dec.dimensions();
    if w as u64 * h as u64 > crate::decode::MAX_IMAGE_PIXELS {
        return Err(err(format!("{w}x{h}: too many pixels")));
    }
    match dec.color_type() {
        image::ColorType::Rgb8 => {
            let out = frame.reshape(w, h);
            dec.read_image(out).map_err(|e| err(e.to_string()))?;
        }
        image::ColorType::L8 => {
            let out = frame.reshape(w, h);
            let n = w as usize * h as usize;
            dec.read_image(&mut out[..n])
                .map_err(|e| err(e.to_string()))?;
            // Widen in place, from the back.
            for i in (0..n).rev() {
                let v = out[i];
                out[3 * i..3 * i + 3].fill(v);
            }
        }
        other => {
            return Err(err(format!(
                "JPEG of {other:?} pixels (expected RGB or grey)"
            )))
        }
    }
    Ok(())
}

fn to_rgb(view: &ImageView<'_>, out: &mut [u8]) {
    let n = view.width as usize * view.height as usize;
    for i in 0..n {
        let px: [u8; 3] = match view.mode {
            Mode::Rgb => [view.data[3 * i], view.data[3 * i + 1], view.data[3 * i + 2]],
            // Alpha dropped as the reference's convert("RGB") does.
            Mode::Rgba => [view.data[4 * i], view.data[4 * i + 1], view.data[4 * i + 2]],
            Mode::L | Mode::Bilevel => [view.data[i]; 3],
            Mode::La => [view.data[2 * i]; 3],
            Mode::Palette => view.palette[view.data[i] as usize],
        };
        out[3 * i..3 * i + 3].copy_from_slice(&px);
    }
}

/// Concatenated JPEGs on a byte stream, split by their markers (a marker
/// segment's length is skipped, so an embedded thumbnail cannot end a frame;
/// in entropy-coded data 0xFF is always stuffed).
pub struct MjpegStream<R> {
    reader: R,
    name: String,
    buf: Vec<u8>,
    /// Bytes of `buf` from `start` not yet consumed.
    start: usize,
    jpeg: Vec<u8>,
    index: u64,
    eof: bool,
}

impl<R: Read> MjpegStream<R> {
    pub fn new(reader: R, name: &str) -> Self {
        MjpegStream {
            reader,
            name: name.into(),
            buf: Vec::with_capacity(1 << 16),
            start: 0,
            jpeg: Vec::new(),
            index: 0,
            eof: false,
        }
    }

    /// Reads more of the stream into `buf`; false at end of stream.
    fn fill(&mut self) -> Result<bool, SourceError> {
        if self.eof {
            return Ok(false);
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + (1 << 16), 0);
        let n = loop {
            match self.reader.read(&mut self.buf[old..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    self.buf.truncate(old);
                    return Err(SourceError::Io {
                        path: self.name.clone().into(),
                        source,
                    });
                }
            }
        };
        self.buf.truncate(old + n);
        if n == 0 {
            self.eof = true;
        }
        Ok(n > 0)
    }

    /// The next whole JPEG's bytes into `self.jpeg`; false at a clean end.
    pub fn next_jpeg(&mut self) -> Result<bool, SourceError> {
        // Find SOI.
        loop {
            let hay = &self.buf[self.start..];
            if let Some(p) = hay.windows(2).position(|w| w == [0xFF, 0xD8]) {
                self.start += p;
                break;
            }
            // Keep a trailing 0xFF: it may start the marker.
            self.start = self.buf.len().saturating_sub(1).max(self.start);
            if !self.fill()? {
                return Ok(false);
            }
        }
        // Walk the markers from after SOI.
        let mut pos = 2usize; // relative to start
        let mut in_scan = false;
        loop {
            let need = |this: &mut Self, n: usize| -> Result<bool, SourceError> {
                while this.buf.len() - this.start < n {
                    if n > MAX_JPEG_BYTES {
                        return Err(
                            this.skip_bad(format!("a JPEG larger than {MAX_JPEG_BYTES} bytes"))
                        );
                    }
                    if !this.fill()? {
                        return Ok(false);
                    }
                }
                Ok(true)
            };
            if !need(self, pos + 2)? {
                return self.truncated();
            }
            let b = &self.buf[self.start..];
            if in_scan {
                if b[pos] != 0xFF {
                    pos += 1;
                    continue;
                }
                match b[pos + 1] {
                    0x00 | 0xD0..=0xD7 | 0xFF => {
                        pos += if b[pos + 1] == 0xFF { 1 } else { 2 };
                        continue;
                    }
                    _ => in_scan = false,
                }
            }
            if b[pos] != 0xFF {
                return Err(self.skip_bad(format!("no JPEG marker at byte {pos}")));
            }
            let marker = b[pos + 1];
            match marker {
                0xFF => pos += 1, // fill byte
                0xD9 => {
                    let end = self.start + pos + 2;
                    self.jpeg.clear();
                    self.jpeg.extend_from_slice(&self.buf[self.start..end]);
                    self.start = end;
                    return Ok(true);
                }
                0x01 | 0xD0..=0xD7 => pos += 2,
                _ => {
                    if !need(self, pos + 4)? {
                        return self.truncated();
                    }
                    let b = &self.buf[self.start..];
                    let len = u16::from_be_bytes([b[pos + 2], b[pos + 3]]) as usize;
                    pos += 2 + len;
                    if marker == 0xDA {
                        in_scan = true;
                    }
                }
            }
        }
    }

    /// A frame that cannot be split out of the stream: counted as a frame
    /// (its index taken) and skipped, the search for the next one starting
    /// after its start-of-image marker.
    fn skip_bad(&mut self, why: String) -> SourceError {
        let e = SourceError::Frame {
            what: format!("{} frame {}", self.name, self.index),
            why,
        };
        self.start = (self.start + 2).min(self.buf.len());
        self.index += 1;
        e
    }

    fn truncated(&mut self) -> Result<bool, SourceError> {
        // A stream cut mid-frame (the camera process died): the frame is
        // lost, the stream is over.
        log::warn!(
            "{}: the stream ended inside frame {}",
            self.name,
            self.index
        );
        self.start = self.buf.len();
        Ok(false)
    }
}

impl<R: Read> FrameSource for MjpegStream<R> {
    fn next(&mut self, frame: &mut Frame) -> Result<Next, SourceError> {
        if !self.next_jpeg()? {
            return Ok(Next::End);
        }
        let what = format!("{} frame {}", self.name, self.index);
        frame.index = self.index;
        self.index += 1;
        decode_jpeg_into(&self.jpeg, &what, frame)?;
        Ok(Next::Frame)
    }
}

/// Frames decoded once and played from memory, `loops` times over (the
/// soak test; a benchmark of the loop without decoding).
pub struct MemorySource {
    frames: Vec<Frame>,
    loops: u64,
    next: u64,
}

impl MemorySource {
    pub fn new(frames: Vec<Frame>, loops: u64) -> Self {
        MemorySource {
            frames,
            loops,
            next: 0,
        }
    }
}

impl FrameSource for MemorySource {
    fn next(&mut self, frame: &mut Frame) -> Result<Next, SourceError> {
        let n = self.frames.len() as u64;
        if n == 0 || self.next >= n * self.loops {
            return Ok(Next::End);
        }
        frame.copy_from(&self.frames[(self.next % n) as usize]);
        frame.index = self.next;
        self.next += 1;
        Ok(Next::Frame)
    }
}

/// Bad frames whose messages wait for the loop; past this many, a bad
/// frame is still counted, its message replaced by a generic one.
const BAD_BACKLOG: usize = 8;

/// Bad frames in a row after which a live source counts as lost (a camera
/// that sends only undecodable frames is reopened, a pipe of them ends):
/// about two seconds at 30 fps.
pub const BAD_RUN_LOST: u32 = 60;

struct Shared {
    queue: VecDeque<Frame>,
    free: Vec<Frame>,
    dropped: u64,
    /// Bad frames (a corrupt JPEG) not yet handed to the loop, and the
    /// first [`BAD_BACKLOG`] of their (what, why).
    bad: u64,
    bad_why: VecDeque<(String, String)>,
    end: Option<Result<(), String>>,
}

/// A live source in its own thread: the newest `depth` frames wait for the
/// loop; older ones are dropped and counted. A bad frame (one corrupt JPEG)
/// reaches the loop as [`SourceError::Frame`], which skips it; only another
/// error ends the source. Buffers circulate between the thread and the loop
/// (no allocation once warm).
pub struct LiveQueue {
    shared: Arc<(Mutex<Shared>, Condvar)>,
    dropped: u64,
}

impl LiveQueue {
    pub fn spawn<S: FrameSource + Send + 'static>(mut source: S, depth: usize) -> Self {
        let shared = Arc::new((
            Mutex::new(Shared {
                queue: VecDeque::with_capacity(depth + 1),
                free: (0..depth + 2).map(|_| Frame::default()).collect(),
                dropped: 0,
                bad: 0,
                bad_why: VecDeque::with_capacity(BAD_BACKLOG),
                end: None,
            }),
            Condvar::new(),
        ));
        let s = shared.clone();
        std::thread::Builder::new()
            .name("clip-edge-source".into())
            .spawn(move || {
                let _ends = EndOnPanic(s.clone());
                let (lock, cv) = &*s;
                let mut bad_run = 0u32;
                loop {
                    let mut buf = lock
                        .lock()
                        .map(|mut g| g.free.pop().unwrap_or_default())
                        .unwrap_or_default();
                    let r = source.next(&mut buf);
                    let Ok(mut g) = lock.lock() else { return };
                    match r {
                        Ok(Next::Frame) => {
                            bad_run = 0;
                            if g.queue.len() >= depth {
                                if let Some(old) = g.queue.pop_front() {
                                    g.free.push(old);
                                    g.dropped += 1;
                                }
                            }
                            g.queue.push_back(buf);
                        }
                        Ok(Next::End) => g.end = Some(Ok(())),
                        Ok(Next::Idle) => g.free.push(buf),
                        Err(SourceError::Frame { what, why }) => {
                            g.free.push(buf);
                            bad_run += 1;
                            if bad_run >= BAD_RUN_LOST {
                                g.end = Some(Err(format!(
                                    "{bad_run} frames in a row did not decode, the last: {what}: {why}"
                                )));
                            } else {
                                g.bad += 1;
                                if g.bad_why.len() < BAD_BACKLOG {
                                    g.bad_why.push_back((what, why));
                                }
                            }
                        }
                        Err(e) => g.end = Some(Err(e.to_string())),
                    }
                    let done = g.end.is_some();
                    drop(g);
                    cv.notify_all();
                    if done {
                        return;
                    }
                }
            })
            .expect("spawn the source thread");
        LiveQueue { shared, dropped: 0 }
    }
}

/// What the loop sees when the source thread panicked while holding the
/// queue's lock.
fn thread_panicked() -> SourceError {
    SourceError::Lost {
        spec: "live source".into(),
        why: "the source thread panicked".into(),
    }
}

/// Ends the queue with an error when the source thread unwinds (a panic in
/// the source), so that the loop sees the source lost instead of idling on.
struct EndOnPanic(Arc<(Mutex<Shared>, Condvar)>);

impl Drop for EndOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let (lock, cv) = &*self.0;
        let mut g = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if g.end.is_none() {
            g.end = Some(Err("the source thread panicked".into()));
        }
        drop(g);
        cv.notify_all();
    }
}

impl FrameSource for LiveQueue {
    fn next(&mut self, frame: &mut Frame) -> Result<Next, SourceError> {
        let (lock, cv) = &*self.shared;
        let mut g = lock.lock().map_err(|_| thread_panicked())?;
        loop {
            if g.bad > 0 {
                g.bad -= 1;
                let (what, why) = g.bad_why.pop_front().unwrap_or_else(|| {
                    (
                        "live source".into(),
                        format!("a bad frame (more than {BAD_BACKLOG} waited: message not kept)"),
                    )
                });
                return Err(SourceError::Frame { what, why });
            }
            if let Some(mut f) = g.queue.pop_front() {
                std::mem::swap(frame, &mut f);
                g.free.push(f);
                self.dropped = g.dropped;
                return Ok(Next::Frame);
            }
            match &g.end {
                Some(Ok(())) => return Ok(Next::End),
                Some(Err(e)) => {
                    return Err(SourceError::Lost {
                        spec: "live source".into(),
                        why: e.clone(),
                    })
                }
                None => {}
            }
            let (guard, timeout) = cv
                .wait_timeout(g, IDLE_TICK)
                .map_err(|_| thread_panicked())?;
            g = guard;
            if timeout.timed_out() && g.queue.is_empty() && g.end.is_none() {
                return Ok(Next::Idle);
            }
        }
    }

    fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32, seed: u8) -> Vec<u8> {
        use image::ImageEncoder;
        let px: Vec<u8> = (0..w * h * 3)
            .map(|i| (i as u8).wrapping_mul(seed))
            .collect();
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .write_image(&px, w, h, image::ExtendedColorType::Rgb8)
            .unwrap();
        out
    }

    /// A reader handing out a few bytes at a time (a pipe).
    struct Trickle(Vec<u8>, usize, usize);
    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.2.min(buf.len()).min(self.0.len() - self.1);
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }

    #[test]
    fn v4l2_specs_parse_and_bad_keys_are_named() {
        let s = V4l2Spec::parse("/dev/video2?width=320&height=240&fps=15&format=nv12").unwrap();
        assert_eq!(
            (s.width, s.height, s.fps, s.format),
            (320, 240, 15, PixelFormat::Nv12)
        );
        assert_eq!(
            V4l2Spec::parse("/dev/video0").unwrap().format,
            PixelFormat::Mjpg
        );
        for (bad, needle) in [
            ("/dev/video0?widht=3", "unknown key \"widht\""),
            ("/dev/video0?fps=0", "fps=0"),
            ("/dev/video0?format=H264", "format=H264"),
            ("?fps=3", "no device"),
        ] {
            let e = V4l2Spec::parse(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn concatenated_jpegs_split_exactly() {
        let parts = [jpeg(33, 17, 3), jpeg(8, 8, 7), jpeg(64, 48, 11)];
        for chunk in [1, 7, 4096] {
            let mut all = b"garbage".to_vec();
            for p in &parts {
                all.extend_from_slice(p);
            }
            let mut s = MjpegStream::new(Trickle(all, 0, chunk), "test");
            for p in &parts {
                assert!(s.next_jpeg().unwrap());
                assert_eq!(&s.jpeg, p, "chunk {chunk}");
            }
            assert!(!s.next_jpeg().unwrap());
        }
    }

    #[test]
    fn a_cut_stream_ends_cleanly() {
        let mut all = jpeg(16, 16, 5);
        let second = jpeg(16, 16, 9);
        all.extend_from_slice(&second[..second.len() / 2]);
        let mut s = MjpegStream::new(Trickle(all, 0, 100), "test");
        let mut f = Frame::default();
        assert_eq!(s.next(&mut f).unwrap(), Next::Frame);
        assert_eq!((f.width, f.height, f.index), (16, 16, 0));
        assert_eq!(s.next(&mut f).unwrap(), Next::End);
    }

    #[test]
    fn a_malformed_frame_is_skipped_and_the_next_one_read() {
        // SOI then no marker: the walker cannot split it out.
        let mut all = vec![0xFF, 0xD8, 0x00, 0x00];
        all.extend_from_slice(&jpeg(16, 16, 5));
        for chunk in [1, 3, 4096] {
            let mut s = MjpegStream::new(Trickle(all.clone(), 0, chunk), "test");
            let mut f = Frame::default();
            match s.next(&mut f) {
                Err(SourceError::Frame { what, why }) => {
                    assert_eq!(what, "test frame 0");
                    assert!(why.contains("no JPEG marker"), "{why}");
                }
                other => panic!("chunk {chunk}: {other:?}"),
            }
            assert_eq!(s.next(&mut f).unwrap(), Next::Frame, "chunk {chunk}");
            assert_eq!((f.width, f.height, f.index), (16, 16, 1));
            assert_eq!(s.next(&mut f).unwrap(), Next::End);
        }
    }

    /// `n` frames of one pixel, frame `i` of value `i`.
    fn one_pixel_frames(n: u8) -> Vec<Frame> {
        (0..n)
            .map(|i| Frame {
                width: 1,
                height: 1,
                rgb: vec![i; 3],
                index: 0,
            })
            .collect()
    }

    #[test]
    fn live_queue_delivers_in_order_and_counts_drops() {
        let frames = one_pixel_frames(50);
        let mut q = LiveQueue::spawn(MemorySource::new(frames, 1), 2);
        let mut f = Frame::default();
        let mut seen = Vec::new();
        loop {
            match q.next(&mut f).unwrap() {
                Next::Frame => seen.push(f.index),
                Next::Idle => continue,
                Next::End => break,
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        assert_eq!(*seen.last().unwrap(), 49);
        assert_eq!(seen.len() as u64 + q.dropped(), 50);
    }

    /// Every `every`-th frame of `inner` is bad (a corrupt JPEG).
    struct SomeBad {
        inner: MemorySource,
        every: u64,
        calls: u64,
    }

    impl FrameSource for SomeBad {
        fn next(&mut self, frame: &mut Frame) -> Result<Next, SourceError> {
            self.calls += 1;
            let r = self.inner.next(frame)?;
            if r == Next::Frame && self.calls.is_multiple_of(self.every) {
                return Err(SourceError::Frame {
                    what: format!("frame {}", frame.index),
                    why: "corrupt".into(),
                });
            }
            Ok(r)
        }
    }

    #[test]
    fn a_live_source_of_only_bad_frames_is_lost() {
        let frames = vec![Frame::default(); 200];
        let source = SomeBad {
            inner: MemorySource::new(frames, 1),
            every: 1,
            calls: 0,
        };
        let mut q = LiveQueue::spawn(source, 2);
        let mut f = Frame::default();
        let mut bad = 0;
        let why = loop {
            match q.next(&mut f) {
                Ok(Next::Idle) => continue,
                Err(SourceError::Frame { .. }) => bad += 1,
                Err(SourceError::Lost { why, .. }) => break why,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(bad, BAD_RUN_LOST - 1);
        assert!(why.contains("60 frames in a row did not decode"), "{why}");
    }

    #[test]
    fn live_queue_skips_bad_frames_and_goes_on() {
        let frames = one_pixel_frames(60);
        // Slow and fast consumers: bad frames past the backlog keep their count.
        for pause_ms in [0, 2] {
            let source = SomeBad {
                inner: MemorySource::new(frames.clone(), 1),
                every: 4,
                calls: 0,
            };
            let mut q = LiveQueue::spawn(source, 2);
            let mut f = Frame::default();
            let (mut seen, mut bad) = (Vec::new(), Vec::new());
            loop {
                match q.next(&mut f) {
                    Ok(Next::Frame) => seen.push(f.index),
                    Ok(Next::Idle) => continue,
                    Ok(Next::End) => break,
                    Err(SourceError::Frame { what, why }) => bad.push(format!("{what}: {why}")),
                    Err(e) => panic!("the source ended on a bad frame: {e}"),
                }
                std::thread::sleep(std::time::Duration::from_millis(pause_ms));
            }
            assert_eq!(bad.len(), 15, "{bad:?}");
            // The messages the backlog kept are the source's own, in order;
            // the others say why they have none.
            let kept: Vec<&String> = bad
                .iter()
                .filter(|b| !b.contains("message not kept"))
                .collect();
            assert!(kept.len() >= BAD_BACKLOG.min(15), "{bad:?}");
            let mut last = None;
            for b in kept {
                let frame: u64 = b
                    .strip_prefix("frame ")
                    .and_then(|r| r.strip_suffix(": corrupt"))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("{b:?} in {bad:?}"));
                assert!(
                    (frame + 1).is_multiple_of(4) && last < Some(frame),
                    "{bad:?}"
                );
                last = Some(frame);
            }
            assert!(seen.iter().all(|i| !(i + 1).is_multiple_of(4)), "{seen:?}");
            assert_eq!(seen.len() as u64 + q.dropped() + 15, 60, "{seen:?}");
        }
    }
}
