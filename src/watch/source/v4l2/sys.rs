//! The few V4L2 ioctls a capture needs, through `libc` (no bindings
//! generated at build time, so every build has them): the structs as the
//! kernel's `<linux/videodev2.h>` lays them out, checked at compile time
//! against [`LAYOUT`], which a test checks against the C headers of each
//! target the release builds for.
//!
//! Why not a crate (docs/watch.md, "V4L2 without a crate"): `v4l` and
//! `v4l2r` run bindgen at build time (libclang and each target's kernel
//! headers on every build machine); `linuxvideo` 0.3.5 does not compile
//! for 32-bit ARM and ends the process on a card name a driver cut inside a
//! UTF-8 character; `moq-v4l` 0.1 ends it on a colorspace or field value it
//! does not know.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use std::mem::{offset_of, size_of};

pub const BUF_TYPE_VIDEO_CAPTURE: u32 = 1;
const MEMORY_MMAP: u32 = 1;
const FIELD_NONE: u32 = 1;
/// `V4L2_BUF_FLAG_ERROR`: the buffer was filled, its data may be corrupt.
const BUF_FLAG_ERROR: u32 = 0x0000_0040;
pub const CAP_VIDEO_CAPTURE: u32 = 0x0000_0001;
const CAP_STREAMING: u32 = 0x0400_0000;
const CAP_DEVICE_CAPS: u32 = 0x8000_0000;
const CAP_TIMEPERFRAME: u32 = 0x1000;
const FRMSIZE_TYPE_DISCRETE: u32 = 1;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Capability {
    pub driver: [u8; 16],
    pub card: [u8; 32],
    pub bus_info: [u8; 32],
    pub version: u32,
    pub capabilities: u32,
    pub device_caps: u32,
    reserved: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct FmtDesc {
    pub index: u32,
    pub type_: u32,
    pub flags: u32,
    pub description: [u8; 32],
    pub pixelformat: u32,
    pub mbus_code: u32,
    reserved: [u32; 3],
}

/// `v4l2_frmsizeenum`: the union holds a discrete size (`w`, `h`) or a
/// stepwise range (min, max, step of the width, then of the height).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FrmSizeEnum {
    pub index: u32,
    pub pixel_format: u32,
    pub type_: u32,
    pub size: [u32; 6],
    reserved: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PixFormat {
    pub width: u32,
    pub height: u32,
    pub pixelformat: u32,
    pub field: u32,
    pub bytesperline: u32,
    pub sizeimage: u32,
    pub colorspace: u32,
    pub priv_: u32,
    pub flags: u32,
    pub ycbcr_enc: u32,
    pub quantization: u32,
    pub xfer_func: u32,
}

/// `v4l2_format` with its union read as the capture's `v4l2_pix_format`;
/// the union's other members hold pointers, hence its alignment.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Format {
    pub type_: u32,
    pub pix: FormatUnion,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct FormatUnion {
    pub pix: PixFormat,
    rest: [u8; 200 - size_of::<PixFormat>()],
    _align: [*const u8; 0],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct StreamParm {
    pub type_: u32,
    pub capability: u32,
    pub capturemode: u32,
    /// `timeperframe`: numerator, denominator (seconds per frame).
    pub timeperframe: [u32; 2],
    pub extendedmode: u32,
    pub readbuffers: u32,
    rest: [u8; 200 - 24],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct RequestBuffers {
    pub count: u32,
    pub type_: u32,
    pub memory: u32,
    pub capabilities: u32,
    pub flags: u8,
    reserved: [u8; 3],
}

/// `v4l2_buffer` for MMAP: `m` is the offset to map (a `long`-sized union);
/// the timestamp a `struct timeval` of `long`s (32-bit time on 32-bit
/// ARM, which every kernel accepts).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Buffer {
    pub index: u32,
    pub type_: u32,
    pub bytesused: u32,
    pub flags: u32,
    pub field: u32,
    pub timestamp: [libc::c_long; 2],
    pub timecode: [u32; 4],
    pub sequence: u32,
    pub memory: u32,
    pub m: libc::c_ulong,
    pub length: u32,
    reserved2: u32,
    request_fd: i32,
}

/// All-zero values, as the ioctls expect them before filling in.
macro_rules! zeroed {
    ($($t:ident { $($f:ident : $v:expr),* $(,)? })*) => {
        $(impl $t {
            pub const ZERO: $t = $t { $($f: $v),* };
        })*
    };
}

zeroed! {
    Capability { driver: [0; 16], card: [0; 32], bus_info: [0; 32], version: 0, capabilities: 0, device_caps: 0, reserved: [0; 3] }
    FmtDesc { index: 0, type_: 0, flags: 0, description: [0; 32], pixelformat: 0, mbus_code: 0, reserved: [0; 3] }
    FrmSizeEnum { index: 0, pixel_format: 0, type_: 0, size: [0; 6], reserved: [0; 2] }
    PixFormat { width: 0, height: 0, pixelformat: 0, field: 0, bytesperline: 0, sizeimage: 0, colorspace: 0, priv_: 0, flags: 0, ycbcr_enc: 0, quantization: 0, xfer_func: 0 }
    Format { type_: 0, pix: FormatUnion::ZERO }
    FormatUnion { pix: PixFormat::ZERO, rest: [0; 200 - size_of::<PixFormat>()], _align: [] }
    StreamParm { type_: 0, capability: 0, capturemode: 0, timeperframe: [0; 2], extendedmode: 0, readbuffers: 0, rest: [0; 176] }
    RequestBuffers { count: 0, type_: 0, memory: 0, capabilities: 0, flags: 0, reserved: [0; 3] }
    Buffer { index: 0, type_: 0, bytesused: 0, flags: 0, field: 0, timestamp: [0; 2], timecode: [0; 4], sequence: 0, memory: 0, m: 0, length: 0, reserved2: 0, request_fd: 0 }
}

/// `_IOC(dir, 'V', nr, size)` as Linux encodes it on x86 and ARM.
const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | ((b'V' as u32) << 8) | nr
}
const fn ior(nr: u32, size: usize) -> u32 {
    ioc(2, nr, size)
}
const fn iow(nr: u32, size: usize) -> u32 {
    ioc(1, nr, size)
}
const fn iowr(nr: u32, size: usize) -> u32 {
    ioc(3, nr, size)
}

pub const VIDIOC_QUERYCAP: u32 = ior(0, size_of::<Capability>());
pub const VIDIOC_ENUM_FMT: u32 = iowr(2, size_of::<FmtDesc>());
pub const VIDIOC_G_FMT: u32 = iowr(4, size_of::<Format>());
pub const VIDIOC_S_FMT: u32 = iowr(5, size_of::<Format>());
pub const VIDIOC_REQBUFS: u32 = iowr(8, size_of::<RequestBuffers>());
pub const VIDIOC_QUERYBUF: u32 = iowr(9, size_of::<Buffer>());
pub const VIDIOC_QBUF: u32 = iowr(15, size_of::<Buffer>());
pub const VIDIOC_DQBUF: u32 = iowr(17, size_of::<Buffer>());
pub const VIDIOC_STREAMON: u32 = iow(18, size_of::<i32>());
pub const VIDIOC_STREAMOFF: u32 = iow(19, size_of::<i32>());
pub const VIDIOC_G_PARM: u32 = iowr(21, size_of::<StreamParm>());
pub const VIDIOC_S_PARM: u32 = iowr(22, size_of::<StreamParm>());
pub const VIDIOC_ENUM_FRAMESIZES: u32 = iowr(74, size_of::<FrmSizeEnum>());

/// The layout this module relies on: (C expression, its value where
/// pointers are 64-bit, where they are 32-bit), each also asserted against
/// the Rust definitions above at compile time.
macro_rules! layout {
    ($($c:literal => $rust:expr, $v64:expr, $v32:expr;)*) => {
        pub const LAYOUT: &[(&str, usize, usize)] = &[$(($c, $v64, $v32)),*];
        const _: () = {
            $(assert!(
                $rust == if cfg!(target_pointer_width = "64") { $v64 } else { $v32 },
                $c
            );)*
        };
    };
}

layout! {
    "sizeof(struct v4l2_capability)" => size_of::<Capability>(), 104, 104;
    "offsetof(struct v4l2_capability, device_caps)" => offset_of!(Capability, device_caps), 88, 88;
    "sizeof(struct v4l2_fmtdesc)" => size_of::<FmtDesc>(), 64, 64;
    "offsetof(struct v4l2_fmtdesc, pixelformat)" => offset_of!(FmtDesc, pixelformat), 44, 44;
    "sizeof(struct v4l2_frmsizeenum)" => size_of::<FrmSizeEnum>(), 44, 44;
    "offsetof(struct v4l2_frmsizeenum, discrete)" => offset_of!(FrmSizeEnum, size), 12, 12;
    "sizeof(struct v4l2_pix_format)" => size_of::<PixFormat>(), 48, 48;
    "offsetof(struct v4l2_pix_format, bytesperline)" => offset_of!(PixFormat, bytesperline), 16, 16;
    "sizeof(struct v4l2_format)" => size_of::<Format>(), 208, 204;
    "offsetof(struct v4l2_format, fmt)" => offset_of!(Format, pix), 8, 4;
    "sizeof(struct v4l2_streamparm)" => size_of::<StreamParm>(), 204, 204;
    "offsetof(struct v4l2_streamparm, parm.capture.timeperframe)" => offset_of!(StreamParm, timeperframe), 12, 12;
    "sizeof(struct v4l2_requestbuffers)" => size_of::<RequestBuffers>(), 20, 20;
    "sizeof(struct v4l2_buffer)" => size_of::<Buffer>(), 88, 68;
    "offsetof(struct v4l2_buffer, bytesused)" => offset_of!(Buffer, bytesused), 8, 8;
    "offsetof(struct v4l2_buffer, timestamp)" => offset_of!(Buffer, timestamp), 24, 20;
    "offsetof(struct v4l2_buffer, sequence)" => offset_of!(Buffer, sequence), 56, 44;
    "offsetof(struct v4l2_buffer, memory)" => offset_of!(Buffer, memory), 60, 48;
    "offsetof(struct v4l2_buffer, m)" => offset_of!(Buffer, m), 64, 52;
    "offsetof(struct v4l2_buffer, length)" => offset_of!(Buffer, length), 72, 56;
    "VIDIOC_QUERYCAP" => VIDIOC_QUERYCAP as usize, 0x8068_5600, 0x8068_5600;
    "VIDIOC_ENUM_FMT" => VIDIOC_ENUM_FMT as usize, 0xc040_5602, 0xc040_5602;
    "VIDIOC_G_FMT" => VIDIOC_G_FMT as usize, 0xc0d0_5604, 0xc0cc_5604;
    "VIDIOC_S_FMT" => VIDIOC_S_FMT as usize, 0xc0d0_5605, 0xc0cc_5605;
    "VIDIOC_REQBUFS" => VIDIOC_REQBUFS as usize, 0xc014_5608, 0xc014_5608;
    "VIDIOC_QUERYBUF" => VIDIOC_QUERYBUF as usize, 0xc058_5609, 0xc044_5609;
    "VIDIOC_QBUF" => VIDIOC_QBUF as usize, 0xc058_560f, 0xc044_560f;
    "VIDIOC_DQBUF" => VIDIOC_DQBUF as usize, 0xc058_5611, 0xc044_5611;
    "VIDIOC_STREAMON" => VIDIOC_STREAMON as usize, 0x4004_5612, 0x4004_5612;
    "VIDIOC_STREAMOFF" => VIDIOC_STREAMOFF as usize, 0x4004_5613, 0x4004_5613;
    "VIDIOC_G_PARM" => VIDIOC_G_PARM as usize, 0xc0cc_5615, 0xc0cc_5615;
    "VIDIOC_S_PARM" => VIDIOC_S_PARM as usize, 0xc0cc_5616, 0xc0cc_5616;
    "VIDIOC_ENUM_FRAMESIZES" => VIDIOC_ENUM_FRAMESIZES as usize, 0xc02c_564a, 0xc02c_564a;
}

/// A four-character code (`MJPG`) as V4L2 packs it.
pub const fn fourcc(code: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*code)
}

/// A four-character code as text.
pub fn fourcc_text(code: u32) -> String {
    code.to_le_bytes()
        .iter()
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect()
}

/// A NUL-padded C string field as text.
pub fn c_text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// One ioctl on `fd` with its argument `arg`, retried when a signal
/// interrupts it.
fn ioctl<T>(fd: &OwnedFd, request: u32, arg: &mut T) -> io::Result<()> {
    loop {
        // SAFETY: `request` is one of the VIDIOC_* numbers above, each
        // encoding the size of the `T` it takes (the layout asserted at
        // compile time and tested against the kernel's headers), and `arg`
        // is a live, exclusive `T` for the duration of the call.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg as *mut T) };
        if r != -1 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// A buffer the driver fills, mapped into this process.
struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned for this
        // mapping, and no slice of it outlives `self` (slices borrow the
        // device that owns it).
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// A frame size a camera offers for one format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSize {
    Discrete(u32, u32),
    /// Any width `min..=max` in `step`s, and any height likewise.
    Range {
        width: [u32; 3],
        height: [u32; 3],
    },
}

/// An open V4L2 device; streaming once [`Device::start`] ran.
pub struct Device {
    fd: OwnedFd,
    buffers: Vec<Mapped>,
    streaming: bool,
    /// The buffer the caller holds between `dequeue` and `enqueue`.
    held: Option<u32>,
}

// SAFETY: the mappings are reached only through `&self`/`&mut self` of the
// one `Device` that owns them; moving it to another thread moves them all.
unsafe impl Send for Device {}

impl Device {
    /// Opens `path` non-blocking (a dequeue waits with a timeout instead).
    pub fn open(path: &Path) -> io::Result<Device> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the path"))?;
        // SAFETY: `c` is a NUL-terminated path that lives across the call.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened by this process and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Device {
            fd,
            buffers: Vec::new(),
            streaming: false,
            held: None,
        })
    }

    pub fn capability(&self) -> io::Result<Capability> {
        let mut cap = Capability::ZERO;
        ioctl(&self.fd, VIDIOC_QUERYCAP, &mut cap)?;
        Ok(cap)
    }

    /// Whether the device captures video and streams (not a metadata node).
    pub fn captures(cap: &Capability) -> bool {
        let caps = if cap.capabilities & CAP_DEVICE_CAPS != 0 {
            cap.device_caps
        } else {
            cap.capabilities
        };
        caps & CAP_VIDEO_CAPTURE != 0 && caps & CAP_STREAMING != 0
    }

    /// The pixel formats the device offers: (fourcc, description).
    pub fn formats(&self) -> Vec<(u32, String)> {
        let mut out = Vec::new();
        for index in 0..64 {
            let mut d = FmtDesc::ZERO;
            d.index = index;
            d.type_ = BUF_TYPE_VIDEO_CAPTURE;
            if ioctl(&self.fd, VIDIOC_ENUM_FMT, &mut d).is_err() {
                break;
            }
            out.push((d.pixelformat, c_text(&d.description)));
        }
        out
    }

    /// The frame sizes the device offers for `format`.
    pub fn frame_sizes(&self, format: u32) -> Vec<FrameSize> {
        let mut out = Vec::new();
        for index in 0..256 {
            let mut f = FrmSizeEnum::ZERO;
            f.index = index;
            f.pixel_format = format;
            if ioctl(&self.fd, VIDIOC_ENUM_FRAMESIZES, &mut f).is_err() {
                break;
            }
            if f.type_ == FRMSIZE_TYPE_DISCRETE {
                out.push(FrameSize::Discrete(f.size[0], f.size[1]));
            } else {
                let s = f.size;
                out.push(FrameSize::Range {
                    width: [s[0], s[1], s[2]],
                    height: [s[3], s[4], s[5]],
                });
                break;
            }
        }
        out
    }

    /// Asks for `width`x`height` in `format`; returns what the driver chose.
    pub fn set_format(&self, width: u32, height: u32, format: u32) -> io::Result<PixFormat> {
        let mut f = Format::ZERO;
        f.type_ = BUF_TYPE_VIDEO_CAPTURE;
        ioctl(&self.fd, VIDIOC_G_FMT, &mut f)?;
        f.pix.pix.width = width;
        f.pix.pix.height = height;
        f.pix.pix.pixelformat = format;
        f.pix.pix.field = FIELD_NONE;
        f.pix.pix.bytesperline = 0;
        ioctl(&self.fd, VIDIOC_S_FMT, &mut f)?;
        Ok(f.pix.pix)
    }

    /// Asks for `fps` frames a second, where the driver lets it be set.
    pub fn set_fps(&self, fps: u32) -> io::Result<()> {
        let mut p = StreamParm::ZERO;
        p.type_ = BUF_TYPE_VIDEO_CAPTURE;
        ioctl(&self.fd, VIDIOC_G_PARM, &mut p)?;
        if p.capability & CAP_TIMEPERFRAME == 0 {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the driver has a fixed frame rate",
            ));
        }
        p.timeperframe = [1, fps];
        ioctl(&self.fd, VIDIOC_S_PARM, &mut p)
    }

    /// Asks for `count` memory-mapped buffers, maps and queues them, and
    /// starts streaming.
    pub fn start(&mut self, count: u32) -> io::Result<()> {
        let mut req = RequestBuffers::ZERO;
        req.count = count;
        req.type_ = BUF_TYPE_VIDEO_CAPTURE;
        req.memory = MEMORY_MMAP;
        ioctl(&self.fd, VIDIOC_REQBUFS, &mut req)?;
        if req.count == 0 {
            return Err(io::Error::other("the driver gave no buffers"));
        }
        for index in 0..req.count {
            let mut b = Buffer::ZERO;
            b.index = index;
            b.type_ = BUF_TYPE_VIDEO_CAPTURE;
            b.memory = MEMORY_MMAP;
            ioctl(&self.fd, VIDIOC_QUERYBUF, &mut b)?;
            let len = b.length as usize;
            // The MMAP member of the union: a 32-bit offset (the union is
            // pointer-sized: 32 bits already on armv7).
            #[allow(clippy::unnecessary_cast)]
            let offset = b.m as u32 as libc::off_t;
            // SAFETY: maps `len` bytes of the device at the offset the
            // driver gave for this buffer; the result is checked before use
            // and unmapped when the `Mapped` drops.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    self.fd.as_raw_fd(),
                    offset,
                )
            };
            if ptr == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            self.buffers.push(Mapped { ptr, len });
            ioctl(&self.fd, VIDIOC_QBUF, &mut b)?;
        }
        let mut kind = BUF_TYPE_VIDEO_CAPTURE as i32;
        ioctl(&self.fd, VIDIOC_STREAMON, &mut kind)?;
        self.streaming = true;
        Ok(())
    }

    /// Waits up to `timeout` for a filled buffer; returns its bytes and
    /// whether the driver flagged them. The previous one goes back to the
    /// driver first.
    pub fn dequeue(&mut self, timeout: Duration) -> io::Result<super::Filled<'_>> {
        self.requeue()?;
        let deadline = std::time::Instant::now() + timeout;
        let b = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `pfd` is one valid pollfd for the duration of the call.
            let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as libc::c_int) };
            if r == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no frame for {} s", timeout.as_secs()),
                ));
            }
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut b = Buffer::ZERO;
            b.type_ = BUF_TYPE_VIDEO_CAPTURE;
            b.memory = MEMORY_MMAP;
            match ioctl(&self.fd, VIDIOC_DQBUF, &mut b) {
                Ok(()) => break b,
                // Woken with nothing to take after all: wait again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        let m = self
            .buffers
            .get(b.index as usize)
            .ok_or_else(|| io::Error::other(format!("the driver returned buffer {}", b.index)))?;
        self.held = Some(b.index);
        let used = (b.bytesused as usize).min(m.len);
        // SAFETY: the mapping is `m.len` readable bytes, dequeued (the
        // driver does not write it until it is queued again, which only
        // `requeue` does, taking `&mut self` and so ending this borrow).
        let bytes = unsafe { std::slice::from_raw_parts(m.ptr as *const u8, used) };
        Ok(super::Filled {
            bytes,
            corrupt: b.flags & BUF_FLAG_ERROR != 0,
        })
    }

    /// Gives the held buffer back to the driver.
    fn requeue(&mut self) -> io::Result<()> {
        if let Some(index) = self.held.take() {
            let mut b = Buffer::ZERO;
            b.index = index;
            b.type_ = BUF_TYPE_VIDEO_CAPTURE;
            b.memory = MEMORY_MMAP;
            ioctl(&self.fd, VIDIOC_QBUF, &mut b)?;
        }
        Ok(())
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if self.streaming {
            let mut kind = BUF_TYPE_VIDEO_CAPTURE as i32;
            let _ = ioctl(&self.fd, VIDIOC_STREAMOFF, &mut kind);
        }
        // The mappings go before the descriptor.
        self.buffers.clear();
    }
}

#[cfg(test)]
mod tests;
