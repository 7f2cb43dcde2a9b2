//! Image files → decoded pixels in Pillow's modes, so that preprocessing sees
//! what `PIL.Image.open` would give the reference.
//!
//! PNG is decoded with the `png` crate directly to keep what Pillow keeps:
//! palette images stay palette images (resized with nearest neighbour), 1-bit
//! greyscale is Pillow's mode "1", 16-bit channels keep their high byte.
//! JPEG is decoded straight into a reused buffer (grey stays grey). Other
//! formats go through `image`. JPEG decoders differ from Pillow's
//! libjpeg-turbo by a few levels (see docs/accuracy.md).
//!
//! This is the one decode path: `classify`, `eval` and every `watch` source
//! that carries encoded images go through [`decode_bytes_into_as`] (the
//! exact mode is [`decode_bytes_into`]), so a frame
//! reaches preprocessing in the same mode as the same file given to
//! `classify`.

use std::io::BufReader;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::preprocess::{ImageView, Mode};

#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot decode image: {why}")]
    Decode { path: PathBuf, why: String },
    #[error("{path}: unsupported image: {why}")]
    Unsupported { path: PathBuf, why: String },
}

impl DecodeError {
    /// What went wrong, without the path (for callers that name the image
    /// themselves, such as a stream's frame number).
    pub fn reason(&self) -> String {
        match self {
            DecodeError::Io { source, .. } => source.to_string(),
            DecodeError::Decode { why, .. } => format!("cannot decode image: {why}"),
            DecodeError::Unsupported { why, .. } => format!("unsupported image: {why}"),
        }
    }
}

/// Largest image decoded, in pixels, checked from the header before any
/// pixel buffer is allocated: a 12 MP camera frame is 12.3 million pixels
/// (Pillow warns at 89 million). 50 million RGBA pixels are 200 MB.
pub const MAX_IMAGE_PIXELS: u64 = 50_000_000;
/// Largest image file read (a 12 MP camera frame is about 5 MB as JPEG,
/// 30 MB as PNG).
pub const MAX_IMAGE_FILE_BYTES: u64 = 64 << 20;

/// An owned decoded image.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DecodedImage {
    pub width: u32,
    pub height: u32,
    pub mode: Mode,
    pub data: Vec<u8>,
    pub palette: Vec<[u8; 3]>,
}

impl DecodedImage {
    pub fn view(&self) -> ImageView<'_> {
        ImageView {
            width: self.width,
            height: self.height,
            mode: self.mode,
            data: &self.data,
            palette: &self.palette,
        }
    }

    /// Makes this an RGB image of `width x height` and returns its pixels
    /// (no allocation when the buffer already holds that many bytes).
    pub fn reshape(&mut self, width: u32, height: u32, mode: Mode) -> &mut [u8] {
        self.width = width;
        self.height = height;
        self.mode = mode;
        self.palette.clear();
        self.data
            .resize(width as usize * height as usize * mode.channels(), 0);
        &mut self.data
    }

    /// Copies `other` in, reusing this image's buffers.
    pub fn copy_from(&mut self, other: &DecodedImage) {
        self.width = other.width;
        self.height = other.height;
        self.mode = other.mode;
        self.data.clear();
        self.data.extend_from_slice(&other.data);
        self.palette.clear();
        self.palette.extend_from_slice(&other.palette);
    }

    /// Makes this the `w x h` part of `src` at `(x, y)`, in `src`'s mode
    /// (which must hold it), reusing this image's buffers: after the first
    /// crop of a frame size, no crop allocates.
    pub fn crop_from(&mut self, src: &DecodedImage, x: u32, y: u32, w: u32, h: u32) {
        assert!(
            x + w <= src.width && y + h <= src.height,
            "crop outside the image"
        );
        let ch = src.mode.channels();
        if self.data.capacity() < src.data.len() {
            self.data.reserve(src.data.len() - self.data.len());
        }
        self.width = w;
        self.height = h;
        self.mode = src.mode;
        self.data.clear();
        let row = src.width as usize * ch;
        for yy in y as usize..(y + h) as usize {
            let start = yy * row + x as usize * ch;
            self.data
                .extend_from_slice(&src.data[start..start + w as usize * ch]);
        }
        self.palette.clear();
        self.palette.extend_from_slice(&src.palette);
    }

    /// The pixels as interleaved RGB, as Pillow's `convert("RGB")` gives
    /// them (alpha dropped, grey widened, palette looked up): borrowed when
    /// the image is RGB already. For snapshots and pictures, not for the
    /// encoder (preprocessing resizes in the image's own mode).
    pub fn rgb(&self) -> std::borrow::Cow<'_, [u8]> {
        if self.mode == Mode::Rgb {
            return std::borrow::Cow::Borrowed(&self.data);
        }
        let n = self.width as usize * self.height as usize;
        let mut out = Vec::with_capacity(3 * n);
        for i in 0..n {
            let px: [u8; 3] = match self.mode {
                Mode::Rgb => [self.data[3 * i], self.data[3 * i + 1], self.data[3 * i + 2]],
                Mode::Rgba => [self.data[4 * i], self.data[4 * i + 1], self.data[4 * i + 2]],
                Mode::L | Mode::Bilevel => [self.data[i]; 3],
                Mode::La => [self.data[2 * i]; 3],
                Mode::Palette => self
                    .palette
                    .get(self.data[i] as usize)
                    .copied()
                    .unwrap_or([0; 3]),
            };
            out.extend_from_slice(&px);
        }
        std::borrow::Cow::Owned(out)
    }
}

/// Decodes an image file: a regular file (a link to one is followed; a
/// device or pipe is refused) of at most [`MAX_IMAGE_FILE_BYTES`].
pub fn decode_file(path: &Path) -> Result<DecodedImage, DecodeError> {
    decode_file_as(path, Decode::Exact)
}

/// [`decode_file`], the way `decode` says.
pub fn decode_file_as(path: &Path, decode: Decode) -> Result<DecodedImage, DecodeError> {
    use crate::bundle::BundleError;
    let bytes =
        crate::bundle::read_regular(path, MAX_IMAGE_FILE_BYTES, true).map_err(|e| match e {
            BundleError::Io { path, source } => DecodeError::Io { path, source },
            BundleError::Missing { path } => DecodeError::Io {
                path,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            },
            BundleError::Refused { path, why } => DecodeError::Unsupported { path, why },
            other => DecodeError::Unsupported {
                path: path.to_path_buf(),
                why: other.to_string(),
            },
        })?;
    let mut out = DecodedImage::default();
    decode_bytes_into_as(&bytes, path, &mut out, decode)?;
    Ok(out)
}

/// Refuses an image whose header declares more than [`MAX_IMAGE_PIXELS`].
fn check_size(width: u32, height: u32, path: &Path) -> Result<(), DecodeError> {
    let pixels = width as u64 * height as u64;
    if pixels > MAX_IMAGE_PIXELS {
        return Err(DecodeError::Unsupported {
            path: path.to_path_buf(),
            why: format!(
                "{width}x{height} is {pixels} pixels, more than the {MAX_IMAGE_PIXELS} this runtime decodes"
            ),
        });
    }
    Ok(())
}

/// Decodes an encoded image held in memory; `path` only names it in errors.
pub fn decode_bytes(bytes: &[u8], path: &Path) -> Result<DecodedImage, DecodeError> {
    let mut out = DecodedImage::default();
    decode_bytes_into(bytes, path, &mut out)?;
    Ok(out)
}

/// `--decode` of `watch` and `eval` (`decode = "exact" | "fast"` in a
/// watch config): the setting, made a [`Decode`] for the model's input.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecodeMode {
    /// Full size, as `classify` decodes a file.
    #[default]
    Exact,
    /// JPEG frames shrunk while decoding (DCT-domain scaling).
    Fast,
}

/// How an image is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Decode {
    /// At its full size, exactly as `classify` decodes it (the reference
    /// path).
    #[default]
    Exact,
    /// A JPEG at 1/2, 1/4 or 1/8 of its size (scaled in the DCT domain while
    /// decoding: less to decode and less to resize), the smallest of those
    /// whose shorter side keeps at least `min_side` pixels; other formats,
    /// and a JPEG too small to shrink, as [`Decode::Exact`].
    Reduced { min_side: u32 },
}

impl Decode {
    /// The fast path for a model of input side `resolution`: reduced while
    /// the shorter side keeps twice the input, so that the resize still
    /// averages at least two decoded pixels into each of its own.
    pub fn fast_for(resolution: u32) -> Decode {
        Decode::Reduced {
            min_side: resolution.saturating_mul(2),
        }
    }
}

/// Decodes an encoded image held in memory into `out`, reusing its buffer
/// for JPEG (a camera's frames); `path` only names it in errors. On an
/// error `out` holds no image that could be mistaken for this one.
pub fn decode_bytes_into(
    bytes: &[u8],
    path: &Path,
    out: &mut DecodedImage,
) -> Result<(), DecodeError> {
    decode_bytes_into_as(bytes, path, out, Decode::Exact)
}

/// [`decode_bytes_into`], the way `decode` says.
pub fn decode_bytes_into_as(
    bytes: &[u8],
    path: &Path,
    out: &mut DecodedImage,
    decode: Decode,
) -> Result<(), DecodeError> {
    let is_jpeg = bytes.starts_with(&[0xFF, 0xD8]);
    let r = if is_jpeg && !jpeg_complete(bytes) {
        // The decoder would fill the missing rows (grey): a cut file, a
        // camera frame short of bandwidth, is not a picture to classify.
        Err(DecodeError::Decode {
            path: path.to_path_buf(),
            why: "truncated JPEG (no end-of-image marker after its last scan)".into(),
        })
    } else if let (true, Decode::Reduced { min_side }) = (is_jpeg, decode) {
        // A JPEG the reduced decoder refuses may still decode exactly.
        match decode_jpeg_reduced_into(bytes, path, out, min_side) {
            Ok(true) => Ok(()),
            Ok(false) | Err(_) => decode_jpeg_into(bytes, path, out),
        }
    } else if is_jpeg {
        decode_jpeg_into(bytes, path, out)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        decode_png(bytes, path).map(|img| *out = img)
    } else {
        decode_other(bytes, path).map(|img| *out = img)
    };
    if r.is_err() {
        out.reshape(0, 0, Mode::Rgb);
    }
    r
}

/// Whether a JPEG reaches its end-of-image marker (`FF D9`), read from
/// the start as a decoder reads it: marker segments skipped by their
/// lengths, each scan's entropy-coded data up to the next marker (data
/// stuffs its `FF` bytes as `FF 00`; restart markers `FF D0`–`D7` are part
/// of it). Whatever follows the end marker (a camera's padding, a phone's
/// appended video) is not looked at.
fn jpeg_complete(bytes: &[u8]) -> bool {
    let mut i = 2; // past the start-of-image marker
    loop {
        // A marker: `FF` (fill bytes `FF` may repeat), then its code.
        while bytes.get(i) == Some(&0xFF) && bytes.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        let (Some(&0xFF), Some(&code)) = (bytes.get(i), bytes.get(i + 1)) else {
            return false;
        };
        i += 2;
        match code {
            0xD9 => return true,
            // Standalone markers: no length.
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let Some(len) = bytes
            .get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
        else {
            return false;
        };
        if len < 2 {
            return false;
        }
        i += len;
        if code == 0xDA {
            // The scan's data, up to a marker that is not a restart one.
            loop {
                let Some(off) = bytes
                    .get(i..)
                    .and_then(|d| d.iter().position(|&b| b == 0xFF))
                else {
                    return false;
                };
                i += off;
                match bytes.get(i + 1) {
                    Some(0x00 | 0xD0..=0xD7) => i += 2,
                    Some(_) => break,
                    None => return false,
                }
            }
        }
    }
}

/// A JPEG straight into `out`'s buffer: RGB as RGB, grey as grey (Pillow's
/// "L"); any other colour type through [`decode_other`].
fn decode_jpeg_into(bytes: &[u8], path: &Path, out: &mut DecodedImage) -> Result<(), DecodeError> {
    use image::ImageDecoder;
    let err = |why: String| DecodeError::Decode {
        path: path.to_path_buf(),
        why,
    };
    let dec = image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(bytes))
        .map_err(|e| err(e.to_string()))?;
    let (w, h) = dec.dimensions();
    check_size(w, h, path)?;
    let mode = match dec.color_type() {
        image::ColorType::Rgb8 => Mode::Rgb,
        image::ColorType::L8 => Mode::L,
        _ => {
            *out = decode_other(bytes, path)?;
            return Ok(());
        }
    };
    let buf = out.reshape(w, h, mode);
    dec.read_image(buf).map_err(|e| err(e.to_string()))
}

/// How many times smaller a `width × height` image may be decoded (1, 2,
/// 4 or 8) so that its shorter side keeps at least `min_side` pixels.
pub fn reduction(width: u32, height: u32, min_side: u32) -> u32 {
    let short = width.min(height);
    let mut div = 1;
    while div < 8 && short / (div * 2) >= min_side.max(1) {
        div *= 2;
    }
    div
}

/// A JPEG decoded smaller in the DCT domain (`jpeg-decoder`'s scaled
/// inverse transforms) into `out`, RGB as RGB and grey as grey. `false`
/// (nothing written) when it would not shrink, or for a colour type other
/// than those two.
fn decode_jpeg_reduced_into(
    bytes: &[u8],
    path: &Path,
    out: &mut DecodedImage,
    min_side: u32,
) -> Result<bool, DecodeError> {
    use jpeg_decoder::PixelFormat;
    let err = |why: String| DecodeError::Decode {
        path: path.to_path_buf(),
        why,
    };
    let mut dec = jpeg_decoder::Decoder::new(bytes);
    dec.read_info().map_err(|e| err(e.to_string()))?;
    let Some(info) = dec.info() else {
        return Ok(false);
    };
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    check_size(w, h, path)?;
    let mode = match info.pixel_format {
        PixelFormat::RGB24 => Mode::Rgb,
        PixelFormat::L8 => Mode::L,
        _ => return Ok(false),
    };
    let div = reduction(w, h, min_side);
    if div == 1 {
        return Ok(false);
    }
    // Both sides rounded up: the decoder picks the scale that gives at
    // least this much.
    let (sw, sh) = dec
        .scale(w.div_ceil(div) as u16, h.div_ceil(div) as u16)
        .map_err(|e| err(e.to_string()))?;
    let pixels = dec.decode().map_err(|e| err(e.to_string()))?;
    let (sw, sh) = (u32::from(sw), u32::from(sh));
    if pixels.len() != sw as usize * sh as usize * mode.channels() {
        return Err(err(format!("{} bytes decoded for {sw}x{sh}", pixels.len())));
    }
    out.reshape(sw, sh, mode).copy_from_slice(&pixels);
    Ok(true)
}

/// Any format `image` reads, its size checked from the header first.
fn decode_other(bytes: &[u8], path: &Path) -> Result<DecodedImage, DecodeError> {
    let err = |why: String| DecodeError::Decode {
        path: path.to_path_buf(),
        why,
    };
    let reader = || {
        image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| err(e.to_string()))
    };
    if reader()?.format().is_none() {
        return Err(DecodeError::Unsupported {
            path: path.to_path_buf(),
            why: "not a known image format".into(),
        });
    }
    let (w, h) = reader()?
        .into_dimensions()
        .map_err(|e| err(e.to_string()))?;
    check_size(w, h, path)?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    limits.max_alloc = Some(MAX_IMAGE_PIXELS * 4 + (16 << 20));
    let mut r = reader()?;
    r.limits(limits);
    let img = r.decode().map_err(|e| err(e.to_string()))?;
    let (width, height) = (img.width(), img.height());
    let (mode, data) = match img {
        image::DynamicImage::ImageLuma8(b) => (Mode::L, b.into_raw()),
        image::DynamicImage::ImageLumaA8(b) => (Mode::La, b.into_raw()),
        image::DynamicImage::ImageRgb8(b) => (Mode::Rgb, b.into_raw()),
        image::DynamicImage::ImageRgba8(b) => (Mode::Rgba, b.into_raw()),
        other if other.color().has_alpha() => (Mode::Rgba, other.to_rgba8().into_raw()),
        other => (Mode::Rgb, other.to_rgb8().into_raw()),
    };
    Ok(DecodedImage {
        width,
        height,
        mode,
        data,
        palette: Vec::new(),
    })
}

fn unpack_bits(row: &[u8], width: usize, depth: usize, out: &mut Vec<u8>, scale: u8) {
    let per_byte = 8 / depth;
    let mask = ((1u16 << depth) - 1) as u8;
    for x in 0..width {
        let byte = row[x / per_byte];
        let shift = 8 - depth * (x % per_byte + 1);
        out.push(((byte >> shift) & mask).wrapping_mul(scale));
    }
}

fn decode_png(bytes: &[u8], path: &Path) -> Result<DecodedImage, DecodeError> {
    use png::{BitDepth, ColorType, Transformations};
    let err = |why: String| DecodeError::Decode {
        path: path.to_path_buf(),
        why,
    };
    let mut dec = png::Decoder::new(BufReader::new(std::io::Cursor::new(bytes)));
    dec.set_transformations(Transformations::STRIP_16);
    let (iw, ih) = dec
        .read_header_info()
        .map_err(|e| err(e.to_string()))?
        .size();
    check_size(iw, ih, path)?;
    let mut reader = dec.read_info().map_err(|e| err(e.to_string()))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| err("image too large".into()))?;
    let mut buf = vec![0u8; size];
    let frame = reader
        .next_frame(&mut buf)
        .map_err(|e| err(e.to_string()))?;
    let (w, h) = (frame.width as usize, frame.height as usize);
    let line = frame.line_size;
    let depth = frame.bit_depth as usize;
    let info = reader.info();
    let mut palette = Vec::new();
    let (mode, data) = match frame.color_type {
        ColorType::Indexed => {
            let p = info
                .palette
                .as_ref()
                .ok_or_else(|| err("palette image without a palette".into()))?;
            palette = p.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect();
            let mut data = Vec::with_capacity(w * h);
            for y in 0..h {
                let row = &buf[y * line..(y + 1) * line];
                if depth == 8 {
                    data.extend_from_slice(&row[..w]);
                } else {
                    unpack_bits(row, w, depth, &mut data, 1);
                }
            }
            (Mode::Palette, data)
        }
        ColorType::Grayscale if frame.bit_depth != BitDepth::Eight => {
            let (mode, scale) = match depth {
                1 => (Mode::Bilevel, 255),
                2 => (Mode::L, 0x55),
                4 => (Mode::L, 0x11),
                _ => (Mode::L, 1),
            };
            let mut data = Vec::with_capacity(w * h);
            for y in 0..h {
                let row = &buf[y * line..(y + 1) * line];
                if depth >= 8 {
                    data.extend_from_slice(&row[..w]);
                } else {
                    unpack_bits(row, w, depth, &mut data, scale);
                }
            }
            (mode, data)
        }
        ColorType::Grayscale => (Mode::L, compact(buf, w, h, line, 1)),
        ColorType::GrayscaleAlpha => (Mode::La, compact(buf, w, h, line, 2)),
        ColorType::Rgb => (Mode::Rgb, compact(buf, w, h, line, 3)),
        ColorType::Rgba => (Mode::Rgba, compact(buf, w, h, line, 4)),
    };
    Ok(DecodedImage {
        width: w as u32,
        height: h as u32,
        mode,
        data,
        palette,
    })
}

/// The rows of `buf` without padding; the buffer itself when it has none.
fn compact(mut buf: Vec<u8>, w: usize, h: usize, line: usize, ch: usize) -> Vec<u8> {
    if line == w * ch {
        buf.truncate(w * h * ch);
        return buf;
    }
    (0..h)
        .flat_map(|y| buf[y * line..y * line + w * ch].iter().copied())
        .collect()
}

#[cfg(test)]
mod tests {

    /// A JPEG cut short (a partial download, a camera frame short of
    /// bandwidth) is refused, not decoded with its missing rows grey; one
    /// with padding after its end marker decodes.
    #[test]
    fn a_truncated_jpeg_is_refused() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let whole = std::fs::read(root.join("models/clips/shapes/00020.jpg")).unwrap();
        let mut out = DecodedImage::default();
        let p = Path::new("cut.jpg");
        for cut in [whole.len() - 2, whole.len() / 2, 3_000] {
            let e = decode_bytes_into(&whole[..cut], p, &mut out).unwrap_err();
            assert!(e.to_string().contains("truncated JPEG"), "{cut}: {e}");
            assert_eq!((out.width, out.height), (0, 0));
        }
        // Padding, and bytes with markers in them (a phone's appended
        // video), after the end marker.
        let mut padded = whole.clone();
        padded.extend_from_slice(&[0; 64]);
        padded.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x08, 1, 2, 3, 0xFF, 0xD8]);
        decode_bytes_into(&padded, p, &mut out).unwrap();
        let mut again = DecodedImage::default();
        decode_bytes_into(&whole, p, &mut again).unwrap();
        assert_eq!(out.data, again.data);
    }
    use super::*;

    /// Mean absolute difference, in levels, between a JPEG decoded at 1/2
    /// in the DCT domain and its full-size decoding averaged over 2 × 2
    /// blocks (measured 0.26 on a frame of `models/clips/yard`).
    const REDUCED_MEAN_DIFF: f64 = 2.0;

    #[test]
    fn reduction_keeps_the_shorter_side_at_least_min_side() {
        assert_eq!(reduction(1920, 1080, 128), 8);
        assert_eq!(reduction(1920, 1080, 256), 4);
        assert_eq!(reduction(960, 540, 256), 2);
        assert_eq!(reduction(640, 480, 256), 1);
        assert_eq!(reduction(100, 100, 0), 8);
        assert_eq!(reduction(0, 0, 64), 1);
    }

    #[test]
    fn a_reduced_jpeg_is_its_full_decoding_averaged() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/clips/yard/00044.jpg");
        let bytes = std::fs::read(&path).unwrap();
        let full = decode_bytes(&bytes, &path).unwrap();
        let mut half = DecodedImage::default();
        decode_bytes_into_as(&bytes, &path, &mut half, Decode::Reduced { min_side: 256 }).unwrap();
        assert_eq!((full.width, full.height), (960, 540));
        assert_eq!((half.width, half.height, half.mode), (480, 270, Mode::Rgb));
        let (w, ch) = (full.width as usize, 3);
        let mut sum = 0f64;
        for y in 0..half.height as usize {
            for x in 0..half.width as usize {
                for c in 0..ch {
                    let at = |yy: usize, xx: usize| f64::from(full.data[(yy * w + xx) * ch + c]);
                    let avg = (at(2 * y, 2 * x)
                        + at(2 * y, 2 * x + 1)
                        + at(2 * y + 1, 2 * x)
                        + at(2 * y + 1, 2 * x + 1))
                        / 4.0;
                    let got = f64::from(half.data[(y * half.width as usize + x) * ch + c]);
                    sum += (got - avg).abs();
                }
            }
        }
        let mean = sum / half.data.len() as f64;
        eprintln!("mean |reduced - averaged| = {mean:.3} levels");
        assert!(mean <= REDUCED_MEAN_DIFF, "{mean}");
        // Too small to shrink, or not a JPEG: the exact decoding.
        let mut same = DecodedImage::default();
        decode_bytes_into_as(&bytes, &path, &mut same, Decode::Reduced { min_side: 540 }).unwrap();
        assert_eq!(same, full);
    }
}
