//! `v4l2:/dev/videoN[?...]`: the spec and the camera, memory-mapped
//! streaming through the ioctls of [`sys`]; MJPG frames are decoded, YUYV
//! and NV12 converted to RGB, straight into the frame's reused buffer,
//! behind a [`super::LiveQueue`] reopened when lost.

use std::path::PathBuf;

use super::{decode_into, Decode, Frame, FrameSource, Next, SourceError};
use crate::watch::convert;

#[allow(unsafe_code)]
pub mod sys;

/// Opens the camera `rest` names (what follows `v4l2:`), reopened with
/// backoff whenever it is lost.
pub fn open(spec: &str, rest: &str, decode: Decode) -> Result<Box<dyn FrameSource>, SourceError> {
    use super::{LiveQueue, Opener, Reopening, LIVE_QUEUE_DEPTH};
    V4l2Spec::parse(rest)?;
    let (s, r) = (spec.to_string(), rest.to_string());
    let open = move || -> Result<Box<dyn FrameSource>, SourceError> {
        let cam = open_camera(&s, &r)?.decoding(decode);
        Ok(Box::new(LiveQueue::spawn(cam, LIVE_QUEUE_DEPTH)))
    };
    let mut open: Opener = Box::new(open);
    let first = open()?;
    Ok(Box::new(Reopening::new(spec, first, open)))
}

/// Checks the spec.
pub fn check(_spec: &str, rest: &str) -> Result<(), SourceError> {
    V4l2Spec::parse(rest).map(|_| ())
}

/// Pixel formats a V4L2 camera is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    Mjpg,
    Yuyv,
    Nv12,
}

impl PixelFormat {
    /// The V4L2 four-character code.
    pub fn fourcc(self) -> u32 {
        sys::fourcc(match self {
            PixelFormat::Mjpg => b"MJPG",
            PixelFormat::Yuyv => b"YUYV",
            PixelFormat::Nv12 => b"NV12",
        })
    }
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

/// Buffers the driver streams into.
const BUFFERS: u32 = 4;

/// A camera that sends nothing for this long is lost (and reopened).
const FRAME_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// One buffer the driver filled.
#[derive(Debug, Clone, Copy)]
pub struct Filled<'a> {
    /// The bytes it holds.
    pub bytes: &'a [u8],
    /// The driver marked it as possibly corrupt (`V4L2_BUF_FLAG_ERROR`:
    /// a USB camera short of bandwidth, a transfer cut mid-frame); the
    /// stream goes on.
    pub corrupt: bool,
}

/// What a [`V4l2Source`] needs of a device: one filled buffer at a time.
pub trait Capture: Send {
    /// The next filled buffer (the previous one goes back to the driver
    /// first).
    fn dequeue(&mut self) -> std::io::Result<Filled<'_>>;
}

impl Capture for sys::Device {
    fn dequeue(&mut self) -> std::io::Result<Filled<'_>> {
        sys::Device::dequeue(self, FRAME_TIMEOUT)
    }
}

/// Opens the device `rest` names (`/dev/videoN?...`), sets the format and
/// rate, and starts streaming. The driver may pick another size: the one
/// it picked is used (and logged).
fn open_camera(spec: &str, rest: &str) -> Result<V4l2Source<sys::Device>, SourceError> {
    let s = V4l2Spec::parse(rest)?;
    let err = |e: std::io::Error| SourceError::Unavailable {
        spec: spec.into(),
        why: e.to_string(),
    };
    let mut device = sys::Device::open(&s.device).map_err(err)?;
    let cap = device.capability().map_err(|e| SourceError::Unavailable {
        spec: spec.into(),
        why: format!("not a V4L2 device ({e})"),
    })?;
    if !sys::Device::captures(&cap) {
        return Err(SourceError::Unavailable {
            spec: spec.into(),
            why: format!(
                "{} ({}) does not stream video capture (a metadata node? `clip-edge sources` lists the cameras)",
                sys::c_text(&cap.card),
                sys::c_text(&cap.driver)
            ),
        });
    }
    let want = s.format.fourcc();
    let got = device.set_format(s.width, s.height, want).map_err(err)?;
    if got.pixelformat != want {
        return Err(SourceError::Unavailable {
            spec: spec.into(),
            why: format!(
                "the camera does not deliver {} (it offered {}; `clip-edge sources` lists its formats)",
                sys::fourcc_text(want),
                sys::fourcc_text(got.pixelformat)
            ),
        });
    }
    if (got.width, got.height) != (s.width, s.height) {
        log::warn!("{spec}: the camera delivers {}x{}", got.width, got.height);
    }
    if let Err(e) = device.set_fps(s.fps) {
        log::warn!("{spec}: could not set {} fps: {e}", s.fps);
    }
    let stride = match s.format {
        PixelFormat::Yuyv => (got.bytesperline as usize).max(got.width as usize * 2),
        PixelFormat::Nv12 => (got.bytesperline as usize).max(got.width as usize),
        PixelFormat::Mjpg => 0,
    };
    device.start(BUFFERS).map_err(err)?;
    log::info!(
        "{spec}: {}x{} {} streaming",
        got.width,
        got.height,
        sys::fourcc_text(got.pixelformat)
    );
    Ok(V4l2Source::new(
        device, spec, s.format, got.width, got.height, stride,
    ))
}

/// Frames from a [`Capture`]: MJPG decoded, YUYV and NV12 converted to RGB,
/// straight into the frame's reused buffer.
pub struct V4l2Source<C: Capture> {
    capture: C,
    format: PixelFormat,
    width: u32,
    height: u32,
    /// Bytes a row of Y (YUYV: of pixels) takes in the buffer.
    stride: usize,
    index: u64,
    name: String,
    decode: Decode,
}

impl<C: Capture> V4l2Source<C> {
    pub fn new(
        capture: C,
        name: &str,
        format: PixelFormat,
        width: u32,
        height: u32,
        stride: usize,
    ) -> Self {
        V4l2Source {
            capture,
            format,
            width,
            height,
            stride,
            index: 0,
            name: name.into(),
            decode: Decode::Exact,
        }
    }

    /// Decodes MJPG frames the way `decode` says.
    pub fn decoding(mut self, decode: Decode) -> Self {
        self.decode = decode;
        self
    }
}

impl<C: Capture> FrameSource for V4l2Source<C> {
    fn next(&mut self, frame: &mut Frame) -> Result<Next, SourceError> {
        let filled = self.capture.dequeue().map_err(|e| SourceError::Io {
            path: self.name.clone().into(),
            source: e,
        })?;
        // The index is the frame's position in the stream, bad frames
        // included: taken before decoding.
        let index = self.index;
        self.index += 1;
        let what = || format!("{} frame {index}", self.name);
        if filled.corrupt {
            // Half a picture and the rest of the last one (or green) is
            // no frame to classify.
            return Err(SourceError::Frame {
                what: what(),
                why: "the driver marked it corrupt (V4L2_BUF_FLAG_ERROR)".into(),
            });
        }
        let data = filled.bytes;
        let (w, h) = (self.width as usize, self.height as usize);
        match self.format {
            PixelFormat::Mjpg => decode_into(data, &what(), frame, self.decode)?,
            PixelFormat::Yuyv | PixelFormat::Nv12 => {
                let need = if self.format == PixelFormat::Yuyv {
                    self.stride * h
                } else {
                    self.stride * (h + h.div_ceil(2))
                };
                if data.len() < need {
                    return Err(SourceError::Frame {
                        what: what(),
                        why: format!("{} bytes, a {w}x{h} frame needs {need}", data.len()),
                    });
                }
                let out = frame.reshape_rgb(self.width, self.height);
                if self.format == PixelFormat::Yuyv {
                    convert::yuyv_to_rgb(data, self.stride, w, h, out);
                } else {
                    convert::nv12_to_rgb(data, self.stride, w, h, out);
                }
            }
        }
        frame.index = index;
        Ok(Next::Frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
