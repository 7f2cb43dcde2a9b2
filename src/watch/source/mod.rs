//! Frame sources: the loop sees frames, never devices.
//!
//! - `dir:PATH` ([`dir`]): image files in name order, each exactly once;
//! - `stdin:mjpeg` ([`mjpeg`]): concatenated JPEGs on standard input
//!   (`rpicam-vid --codec mjpeg -o -`, `ffmpeg -f mjpeg -`);
//! - `v4l2:/dev/videoN[?...]` ([`v4l2`]): a V4L2 camera;
//! - `ffmpeg:INPUT`, `rtsp://…`, `libcamera:?…` ([`child`]): a program
//!   writing MJPEG to a pipe, supervised;
//! - `http://…`, `https://…` ([`http`]): an IP camera's MJPEG stream or
//!   snapshot URL.
//!
//! Live sources run in their own thread behind a [`LiveQueue`] ([`queue`])
//! that keeps the newest frames and drops (and counts) the oldest when the
//! loop falls behind; a lost one is reopened with backoff ([`Reopening`],
//! [`reopen`]). Frames are written into buffers the caller owns and
//! reuses, decoded by [`crate::decode`] in the image's own mode, as
//! `classify` decodes a file.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::decode::DecodedImage;
use crate::preprocess::ImageView;

pub mod child;
pub mod dir;
pub mod http;
pub mod mjpeg;
pub mod prefetch;
mod queue;
mod reopen;
pub mod v4l2;

pub use crate::decode::Decode;
pub use crate::watch::secrets::redacted;
pub use dir::DirSource;
pub use mjpeg::MjpegStream;
pub use queue::{LiveQueue, BAD_RUN_LOST, CLOSE_WAIT};
pub use reopen::{Opener, Reopening, REOPEN_BACKOFF};
pub use v4l2::{PixelFormat, V4l2Spec};

/// The largest JPEG accepted on a stream (a frame is refused beyond it,
/// rather than growing a buffer without bound).
pub const MAX_JPEG_BYTES: usize = 16 << 20;
/// Frames a live source keeps waiting for the loop.
pub const LIVE_QUEUE_DEPTH: usize = 2;
/// How long a live source waits for a frame before answering [`Next::Idle`].
pub const IDLE_TICK: std::time::Duration = std::time::Duration::from_millis(200);

/// The time between two frames at `fps` frames a second; a rate too small
/// for a period (the settings refuse one) waits a day.
pub fn period(fps: f64) -> std::time::Duration {
    std::time::Duration::try_from_secs_f64(1.0 / fps)
        .unwrap_or(std::time::Duration::from_secs(86_400))
}

#[derive(Debug, Error)]
pub enum SourceError {
    #[error("--source {0:?}: expected dir:PATH, stdin:mjpeg, v4l2:/dev/videoN, ffmpeg:INPUT, rtsp(s)://URL, http(s)://URL or libcamera:[?width=W&height=H&fps=F]")]
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

/// One decoded frame in a reused buffer.
#[derive(Debug, Default, Clone)]
pub struct Frame {
    /// The pixels, in the mode the source delivered them (a camera's RGB; a
    /// file's own mode, as `classify` sees it).
    pub image: DecodedImage,
    /// 0-based position of the frame in the source (dropped frames count).
    pub index: u64,
}

impl Frame {
    pub fn view(&self) -> ImageView<'_> {
        self.image.view()
    }

    /// Makes the frame RGB of `width x height` and returns its pixels (no
    /// allocation when the buffer already holds that many bytes or more).
    pub fn reshape_rgb(&mut self, width: u32, height: u32) -> &mut [u8] {
        self.image
            .reshape(width, height, crate::preprocess::Mode::Rgb)
    }

    /// Copies `other` in, reusing this frame's buffers.
    pub fn copy_from(&mut self, other: &Frame) {
        self.image.copy_from(&other.image);
        self.index = other.index;
    }

    /// No pixels yet (a frame never written).
    pub fn is_empty(&self) -> bool {
        self.image.data.is_empty()
    }
}

/// Decodes an encoded image (any format [`crate::decode`] reads) into
/// `frame`, reusing its buffer; `what` names it in the error.
pub fn decode_into(
    bytes: &[u8],
    what: &str,
    frame: &mut Frame,
    decode: Decode,
) -> Result<(), SourceError> {
    crate::decode::decode_bytes_into_as(bytes, Path::new(what), &mut frame.image, decode).map_err(
        |e| SourceError::Frame {
            what: what.into(),
            why: e.reason(),
        },
    )
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
pub trait FrameSource: Send {
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
    /// Stops reading and waits, at most `wait`, until the device or
    /// program behind the source is let go (a source read in a thread of
    /// its own lets go when that thread's read returns): before a camera
    /// that a reload starts may open the same device. Dropping a source
    /// lets go too, without waiting.
    fn close(&mut self, wait: std::time::Duration) {
        let _ = wait;
    }
}

/// Opens the source `spec` names (`dir:`, `stdin:mjpeg`, `v4l2:`,
/// `ffmpeg:`, `rtsp://`, `libcamera:`, `http://`). `fps`: the loop's
/// rate, at which a camera's snapshot URL is asked.
pub fn open(
    spec: &str,
    fps: Option<f64>,
    decode: Decode,
) -> Result<Box<dyn FrameSource>, SourceError> {
    let (kind, rest) = spec
        .split_once(':')
        .ok_or_else(|| SourceError::BadSpec(redacted(spec)))?;
    match kind {
        "ffmpeg" => child::open(child::ffmpeg(spec, rest, fps)?.decoding(decode)),
        "rtsp" | "rtsps" => child::open(child::ffmpeg(spec, spec, fps)?.decoding(decode)),
        "libcamera" => child::open(child::libcamera(spec, rest)?.decoding(decode)),
        "dir" => Ok(Box::new(prefetch::Prefetch::spawn(
            DirSource::open(Path::new(rest))?.decoding(decode),
            spec,
        )?)),
        "stdin" if rest == "mjpeg" => Ok(Box::new(LiveQueue::spawn(
            MjpegStream::new(std::io::stdin(), "stdin").decoding(decode),
            LIVE_QUEUE_DEPTH,
        ))),
        "v4l2" => v4l2::open(spec, rest, decode),
        "http" | "https" => http::open(spec, fps, decode),
        _ => Err(SourceError::BadSpec(redacted(spec))),
    }
}

/// Checks `spec` as far as can be done without opening it: its syntax,
/// the folder it names, the program it runs (on `PATH`). A device is not
/// required to be there (a camera may be plugged in later).
pub fn check(spec: &str) -> Result<(), SourceError> {
    let (kind, rest) = spec
        .split_once(':')
        .ok_or_else(|| SourceError::BadSpec(redacted(spec)))?;
    match kind {
        "dir" if Path::new(rest).is_dir() => Ok(()),
        "dir" => Err(SourceError::Unavailable {
            spec: spec.into(),
            why: if Path::new(rest).exists() {
                "not a folder (dir: plays a folder of frames; a video file is ffmpeg:FILE)".into()
            } else {
                "no such folder".into()
            },
        }),
        "stdin" if rest == "mjpeg" => Ok(()),
        "v4l2" => v4l2::check(spec, rest),
        "http" | "https" => http::check(spec),
        "ffmpeg" => child::check(&child::ffmpeg(spec, rest, None)?),
        "rtsp" | "rtsps" => child::check(&child::ffmpeg(spec, spec, None)?),
        "libcamera" => child::check(&child::libcamera(spec, rest)?),
        _ => Err(SourceError::BadSpec(redacted(spec))),
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

#[cfg(test)]
pub(crate) mod tests {
    /// A JPEG of `w x h` seeded pixels.
    pub fn jpeg(w: u32, h: u32, seed: u8) -> Vec<u8> {
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

    /// `n` frames of one pixel, frame `i` of value `i`.
    pub fn one_pixel_frames(n: u8) -> Vec<super::Frame> {
        (0..n)
            .map(|i| {
                let mut f = super::Frame::default();
                f.reshape_rgb(1, 1).fill(i);
                f
            })
            .collect()
    }
}
