//! V4L2 cameras (feature `v4l2`, Linux): memory-mapped streaming with the
//! `v4l` crate; MJPG frames are decoded, YUYV and NV12 converted to RGB,
//! straight into the frame's reused buffer. Runs behind a
//! [`super::source::LiveQueue`].

use v4l::buffer::Type;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::capture::Parameters;
use v4l::video::Capture;
use v4l::{Device, FourCC};

use super::convert;
use super::source::{
    decode_jpeg_into, Frame, FrameSource, Next, PixelFormat, SourceError, V4l2Spec,
};

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
        let (buf, meta) = CaptureStream::next(&mut self.stream).map_err(|e| SourceError::Io {
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
            PixelFormat::Mjpg => decode_jpeg_into(data, &what(), frame)?,
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
                let out = frame.reshape(self.width, self.height);
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
