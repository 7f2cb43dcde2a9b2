//! `v4l2:/dev/videoN[?...]`: the spec, and (feature `v4l2`, Linux) the
//! camera: memory-mapped streaming with the `v4l` crate; MJPG frames are
//! decoded, YUYV and NV12 converted to RGB, straight into the frame's
//! reused buffer, behind a [`super::LiveQueue`] reopened when lost.

use std::path::PathBuf;

use super::{FrameSource, SourceError};

/// Opens the camera `rest` names (what follows `v4l2:`), reopened with
/// backoff whenever it is lost.
#[cfg(all(feature = "v4l2", target_os = "linux"))]
pub fn open(spec: &str, rest: &str) -> Result<Box<dyn FrameSource>, SourceError> {
    use super::{LiveQueue, Opener, Reopening, LIVE_QUEUE_DEPTH};
    let (s, r) = (spec.to_string(), rest.to_string());
    let open = move || -> Result<Box<dyn FrameSource + Send>, SourceError> {
        let cam = camera::Camera::open(&s, &r)?;
        Ok(Box::new(LiveQueue::spawn(cam, LIVE_QUEUE_DEPTH)))
    };
    let mut open: Opener = Box::new(open);
    let first = open()?;
    Ok(Box::new(Reopening::new(spec, first, open)))
}

/// Checks the spec (and, in a build without V4L2, refuses it).
pub fn check(spec: &str, rest: &str) -> Result<(), SourceError> {
    V4l2Spec::parse(rest)?;
    if cfg!(all(feature = "v4l2", target_os = "linux")) {
        Ok(())
    } else {
        Err(no_support(spec))
    }
}

fn no_support(spec: &str) -> SourceError {
    SourceError::Unavailable {
        spec: spec.into(),
        why: "this build has no V4L2 support (build with --features v4l2, on Linux; or read the camera with ffmpeg:/dev/videoN)".into(),
    }
}

/// This build has no camera support: the spec is checked, then refused.
#[cfg(not(all(feature = "v4l2", target_os = "linux")))]
pub fn open(spec: &str, rest: &str) -> Result<Box<dyn FrameSource>, SourceError> {
    V4l2Spec::parse(rest)?;
    Err(no_support(spec))
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

/// The camera itself (feature `v4l2`, Linux).
#[cfg(all(feature = "v4l2", target_os = "linux"))]
mod camera {
    use v4l::buffer::Type;
    use v4l::io::mmap::Stream;
    use v4l::io::traits::CaptureStream;
    use v4l::video::capture::Parameters;
    use v4l::video::Capture;
    use v4l::{Device, FourCC};

    use super::{PixelFormat, V4l2Spec};
    use crate::watch::convert;
    use crate::watch::source::{decode_into, Frame, FrameSource, Next, SourceError};

    /// Buffers the driver streams into.
    const BUFFERS: u32 = 4;

    pub struct Camera {
        stream: Stream<'static>,
        _device: Device,
        format: PixelFormat,
        width: u32,
        height: u32,
        stride: usize,
        index: u64,
        name: String,
    }

    impl Camera {
        /// Opens the device `rest` names (`/dev/videoN?...`), sets the format
        /// and rate, and starts streaming. The driver may pick another size: the
        /// one it picked is used (and logged).
        pub fn open(spec: &str, rest: &str) -> Result<Camera, SourceError> {
            let s = V4l2Spec::parse(rest)?;
            let err = |e: std::io::Error| SourceError::Unavailable {
                spec: spec.into(),
                why: e.to_string(),
            };
            let device = Device::with_path(&s.device).map_err(err)?;
            let mut fmt = device.format().map_err(err)?;
            fmt.width = s.width;
            fmt.height = s.height;
            fmt.fourcc = FourCC::new(match s.format {
                PixelFormat::Mjpg => b"MJPG",
                PixelFormat::Yuyv => b"YUYV",
                PixelFormat::Nv12 => b"NV12",
            });
            let got = device.set_format(&fmt).map_err(err)?;
            if got.fourcc != fmt.fourcc {
                return Err(SourceError::Unavailable {
                    spec: spec.into(),
                    why: format!(
                        "the camera does not deliver {} (it offered {})",
                        fmt.fourcc, got.fourcc
                    ),
                });
            }
            if (got.width, got.height) != (s.width, s.height) {
                log::warn!("{spec}: the camera delivers {}x{}", got.width, got.height);
            }
            if let Err(e) = device.set_params(&Parameters::with_fps(s.fps)) {
                log::warn!("{spec}: could not set {} fps: {e}", s.fps);
            }
            let stride = match s.format {
                PixelFormat::Yuyv => (got.stride as usize).max(got.width as usize * 2),
                PixelFormat::Nv12 => (got.stride as usize).max(got.width as usize),
                PixelFormat::Mjpg => 0,
            };
            let stream = Stream::with_buffers(&device, Type::VideoCapture, BUFFERS).map_err(err)?;
            log::info!(
                "{spec}: {}x{} {} streaming",
                got.width,
                got.height,
                got.fourcc
            );
            Ok(Camera {
                stream,
                _device: device,
                format: s.format,
                width: got.width,
                height: got.height,
                stride,
                index: 0,
                name: spec.into(),
            })
        }
    }

    impl FrameSource for Camera {
        fn next(&mut self, frame: &mut Frame) -> Result<Next, SourceError> {
            let (buf, meta) =
                CaptureStream::next(&mut self.stream).map_err(|e| SourceError::Io {
                    path: self.name.clone().into(),
                    source: e,
                })?;
            let data = &buf[..(meta.bytesused as usize).min(buf.len())];
            // The index is the frame's position in the stream, bad frames
            // included: taken before decoding.
            let index = self.index;
            self.index += 1;
            let what = || format!("{} frame {index}", self.name);
            let (w, h) = (self.width as usize, self.height as usize);
            match self.format {
                PixelFormat::Mjpg => decode_into(data, &what(), frame)?,
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
