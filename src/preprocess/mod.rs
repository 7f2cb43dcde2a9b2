//! Exact CLIP preprocessing: the reference `_transform(n)` of OpenAI's `clip.py`
//! (`Resize(n, BICUBIC)`, `CenterCrop(n)`, `convert("RGB")`, `ToTensor()`,
//! `Normalize(mean, std)`), reproduced bit for bit from the decoded pixels.
//!
//! The resize is Pillow's convolution resampler (`libImaging/Resample.c`):
//! bicubic with `a = -0.5` (or, for models trained so, bilinear: see
//! [`Filter`]), support scaled by the downscale factor
//! (antialiasing), coefficients normalised in f64 and rounded to 22-bit fixed
//! point, a horizontal pass into `u8` followed by a vertical pass. Every output
//! pixel depends only on its own coefficients, so only the centre-cropped
//! window is computed, which is exact and cheaper.
//!
//! Images are resized *in their own mode*, as Pillow does, and only then turned
//! into RGB: `RGBA`/`LA` are resized premultiplied, palette and 1-bit images
//! with nearest neighbour.
//!
//! The per-frame entry point [`Preprocessor::run`] writes into a caller buffer
//! and keeps its scratch space between calls: after the first frame of a given
//! size it does not allocate.

use thiserror::Error;

mod passes;
mod resample;

use passes::{horizontal, vertical, Scratch, MIN_PARALLEL_TAPS};
#[cfg(test)]
use resample::plain;
pub use resample::Filter;

/// How the image is brought to the model's square input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fit {
    /// The shorter side resized to the input's side, then the centre cut
    /// out (torchvision's `Resize(n)`, `CenterCrop(n)`: CLIP's).
    #[default]
    Crop,
    /// The whole image resized to the input, its aspect not kept
    /// (`Resize((n, n))`: SigLIP's, open_clip's `squash`).
    Squash,
}

/// The resize as a bundle's manifest names it (`[preprocess] resize`): the
/// filter's Pillow name, then `-squash` for [`Fit::Squash`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resize {
    pub filter: Filter,
    pub fit: Fit,
}

impl Resize {
    /// `pillow-bicubic`, `pillow-bilinear-squash`, …
    pub fn name(self) -> String {
        let squash = if self.fit == Fit::Squash {
            "-squash"
        } else {
            ""
        };
        format!("{}{squash}", self.filter.pillow_name())
    }

    /// The resize a manifest names, if one this runtime does.
    pub fn from_name(name: &str) -> Option<Resize> {
        let (base, fit) = match name.strip_suffix("-squash") {
            Some(b) => (b, Fit::Squash),
            None => (name, Fit::Crop),
        };
        let filter = [Filter::Bicubic, Filter::Bilinear]
            .into_iter()
            .find(|f| f.pillow_name() == base)?;
        Some(Resize { filter, fit })
    }

    /// Every name [`Resize::from_name`] reads, for messages.
    pub fn names() -> String {
        let mut v = Vec::new();
        for filter in [Filter::Bicubic, Filter::Bilinear] {
            for fit in [Fit::Crop, Fit::Squash] {
                v.push(format!("{:?}", Resize { filter, fit }.name()));
            }
        }
        v.join(", ")
    }
}
use resample::{copy_window, nearest_table, span, AxisCoeffs, Window};

use crate::kernels::pool::Pool;

/// CLIP's normalisation constants (`clip.py`, `_transform`).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// CLIP's normalisation constants (`clip.py`, `_transform`), written as the
/// reference writes them.
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// Largest output resolution (released CLIPs use 224 to 448): keeps the
/// output and every intermediate size far from overflow.
pub const MAX_RESOLUTION: u32 = 4096;
/// Largest long side after `Resize(n)`: bounds the work of the nearest
/// neighbour tables (which walk up to the crop) for absurd aspect ratios.
pub const MAX_RESIZED_SIDE: u32 = 1 << 20;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PreprocessError {
    #[error("image is empty ({width}x{height})")]
    Empty { width: u32, height: u32 },
    #[error("pixel buffer holds {actual} bytes, {mode:?} {width}x{height} needs {expected}")]
    BadBuffer {
        mode: Mode,
        width: u32,
        height: u32,
        expected: usize,
        actual: usize,
    },
    #[error("output buffer holds {actual} floats, resolution {resolution} needs {expected}")]
    BadOutput {
        resolution: u32,
        expected: usize,
        actual: usize,
    },
    #[error("palette image refers to colour {index}, the palette has {len}")]
    BadPaletteIndex { index: u8, len: usize },
    #[error("resolution {0} is out of range: expected 1 to {MAX_RESOLUTION}")]
    BadResolution(u32),
    #[error("image is {width}x{height}: resizing its short side to {n} makes the long side more than {MAX_RESIZED_SIDE} pixels")]
    ExtremeAspect { width: u32, height: u32, n: u32 },
}

/// Pixel modes, named after Pillow's. All are 8 bits per channel, interleaved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Bilevel, one byte per pixel holding 0 or 255 (Pillow's "1").
    Bilevel,
    /// Grey.
    L,
    /// Grey + alpha.
    La,
    #[default]
    Rgb,
    Rgba,
    /// One byte per pixel indexing a palette of RGB colours (Pillow's "P").
    Palette,
}

impl Mode {
    pub fn channels(self) -> usize {
        match self {
            Mode::Bilevel | Mode::L | Mode::Palette => 1,
            Mode::La => 2,
            Mode::Rgb => 3,
            Mode::Rgba => 4,
        }
    }
}

/// A borrowed decoded image.
#[derive(Debug, Clone, Copy)]
pub struct ImageView<'a> {
    pub width: u32,
    pub height: u32,
    pub mode: Mode,
    pub data: &'a [u8],
    /// RGB palette for [`Mode::Palette`], empty otherwise.
    pub palette: &'a [[u8; 3]],
}

impl<'a> ImageView<'a> {
    pub fn new(width: u32, height: u32, mode: Mode, data: &'a [u8]) -> Self {
        Self {
            width,
            height,
            mode,
            data,
            palette: &[],
        }
    }

    fn validate(&self) -> Result<(), PreprocessError> {
        if self.width == 0 || self.height == 0 {
            return Err(PreprocessError::Empty {
                width: self.width,
                height: self.height,
            });
        }
        let expected = self.width as usize * self.height as usize * self.mode.channels();
        if self.data.len() != expected {
            return Err(PreprocessError::BadBuffer {
                mode: self.mode,
                width: self.width,
                height: self.height,
                expected,
                actual: self.data.len(),
            });
        }
        Ok(())
    }
}

/// Size of the image after `Resize(n)`: the short side becomes `n`, the long
/// side `int(n * long / short)` (torchvision's `_compute_resized_output_size`).
pub fn resized_size(width: u32, height: u32, n: u32) -> (u32, u32) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    let new_long = (n as f64 * long as f64 / short as f64) as u32;
    if width <= height {
        (n, new_long)
    } else {
        (new_long, n)
    }
}

/// Offset of a centre crop of `crop` inside `size`: `int(round((size - crop) / 2.0))`
/// with Python's round-half-to-even.
pub fn center_crop_offset(size: u32, crop: u32) -> u32 {
    let d = size as f64 - crop as f64;
    let half = d / 2.0;
    let r = half.round_ties_even();
    r.max(0.0) as u32
}

/// Reusable preprocessing state: coefficient tables and intermediate rows.
#[derive(Debug)]
pub struct Preprocessor {
    horiz: AxisCoeffs,
    vert: AxisCoeffs,
    /// Premultiplied copy of an `RGBA`/`LA` input.
    premul: Vec<u8>,
    /// First pass output.
    tmp: Vec<u8>,
    /// Per compute thread (one without a pool): the passes' reused rows.
    scratch: Vec<std::sync::Mutex<Scratch>>,
    /// The copy of the horizontal taps that runs.
    level: crate::kernels::elementwise::Level,
    /// The resize's filter.
    filter: Filter,
    /// Crop or squash.
    fit: Fit,
    /// Multiply-adds of a pass from which its rows are split over the
    /// pool's threads.
    parallel_from: usize,
    /// Final cropped u8 image, in the working mode's channels.
    out8: Vec<u8>,
    nearest_x: Vec<usize>,
    nearest_y: Vec<usize>,
    /// Each channel's 256 normalised values.
    normalised: Option<Normalised>,
}

/// `ToTensor` then `Normalize` of each channel's 256 values, in f32 as
/// torch computes them, for one mean and std.
#[derive(Debug)]
struct Normalised {
    mean: [f32; 3],
    std: [f32; 3],
    table: Box<[[f32; 256]; 3]>,
}

impl Normalised {
    fn new(mean: [f32; 3], std: [f32; 3]) -> Normalised {
        let mut table = Box::new([[0f32; 256]; 3]);
        for (c, t) in table.iter_mut().enumerate() {
            for (v, slot) in t.iter_mut().enumerate() {
                *slot = (v as f32 / 255.0f32 - mean[c]) / std[c];
            }
        }
        Normalised { mean, std, table }
    }

    fn is_for(&self, mean: [f32; 3], std: [f32; 3]) -> bool {
        self.mean.map(f32::to_bits) == mean.map(f32::to_bits)
            && self.std.map(f32::to_bits) == std.map(f32::to_bits)
    }
}

#[inline]
fn muldiv255(a: u8, b: u8) -> u8 {
    let t = a as u32 * b as u32 + 128;
    (((t >> 8) + t) >> 8) as u8
}

#[inline]
fn unpremultiply(v: u8, alpha: u8) -> u8 {
    if alpha == 0 || alpha == 255 {
        v
    } else {
        ((255 * v as u32) / alpha as u32).min(255) as u8
    }
}

impl Default for Preprocessor {
    fn default() -> Self {
        Self::new()
    }
}

impl Preprocessor {
    /// Buffers empty; the resize's row kernels the best this CPU runs.
    pub fn new() -> Self {
        Self::with_level(crate::kernels::elementwise::Level::detect())
    }

    /// [`Preprocessor::new`] with the resize's row kernels of `level`
    /// (their copies give the same bytes; tests run each).
    pub fn with_level(level: crate::kernels::elementwise::Level) -> Self {
        Preprocessor {
            horiz: AxisCoeffs::default(),
            vert: AxisCoeffs::default(),
            premul: Vec::new(),
            tmp: Vec::new(),
            scratch: Vec::new(),
            level,
            filter: Filter::Bicubic,
            fit: Fit::Crop,
            parallel_from: MIN_PARALLEL_TAPS,
            out8: Vec::new(),
            nearest_x: Vec::new(),
            nearest_y: Vec::new(),
            normalised: None,
        }
    }

    /// Resizes with `r`'s filter and fit from now on (bicubic with a crop
    /// until then).
    pub fn with_resize(mut self, r: Resize) -> Self {
        self.filter = r.filter;
        self.fit = r.fit;
        self
    }

    /// Number of floats [`Preprocessor::run`] writes for resolution `n`.
    pub fn output_len(n: u32) -> usize {
        3 * n as usize * n as usize
    }

    /// Runs `_transform(n)` on `img` and writes the `[3, n, n]` CHW tensor
    /// into `out`, normalised with `mean`/`std`.
    pub fn run(
        &mut self,
        img: &ImageView<'_>,
        n: u32,
        mean: [f32; 3],
        std: [f32; 3],
        out: &mut [f32],
    ) -> Result<(), PreprocessError> {
        self.run_on(img, n, mean, std, out, None)
    }

    /// [`Preprocessor::run`] with the resize's rows split over `pool`'s
    /// threads (the same bytes: each row is computed as alone).
    pub fn run_on(
        &mut self,
        img: &ImageView<'_>,
        n: u32,
        mean: [f32; 3],
        std: [f32; 3],
        out: &mut [f32],
        pool: Option<&Pool>,
    ) -> Result<(), PreprocessError> {
        img.validate()?;
        if n == 0 || n > MAX_RESOLUTION {
            return Err(PreprocessError::BadResolution(n));
        }
        let expected = Self::output_len(n);
        if out.len() != expected {
            return Err(PreprocessError::BadOutput {
                resolution: n,
                expected,
                actual: out.len(),
            });
        }
        self.resize_crop_u8_on(img, n, pool)?;
        let plane = n as usize * n as usize;
        let ch = match img.mode {
            Mode::Palette => 3,
            m => m.channels(),
        };
        // Each of the 256 values normalised once: the same bits as per pixel.
        if !self
            .normalised
            .as_ref()
            .is_some_and(|t| t.is_for(mean, std))
        {
            self.normalised = Some(Normalised::new(mean, std));
        }
        let table = &self.normalised.as_ref().expect("set above").table;
        debug_assert_eq!(self.out8.len(), plane * ch);
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        match ch {
            1 | 2 => {
                for (((px, r), g), b) in self.out8.chunks_exact(ch).zip(r).zip(g).zip(b) {
                    let v = px[0] as usize;
                    (*r, *g, *b) = (table[0][v], table[1][v], table[2][v]);
                }
            }
            _ => {
                for (((px, r), g), b) in self.out8.chunks_exact(ch).zip(r).zip(g).zip(b) {
                    (*r, *g, *b) = (
                        table[0][px[0] as usize],
                        table[1][px[1] as usize],
                        table[2][px[2] as usize],
                    );
                }
            }
        }
        Ok(())
    }

    /// The resized, centre-cropped image before RGB conversion and
    /// normalisation, as interleaved u8 (palette images already looked up).
    pub fn resize_crop_u8(
        &mut self,
        img: &ImageView<'_>,
        n: u32,
    ) -> Result<&[u8], PreprocessError> {
        self.resize_crop_u8_on(img, n, None)
    }

    /// [`Preprocessor::resize_crop_u8`] on `pool`'s threads.
    pub fn resize_crop_u8_on(
        &mut self,
        img: &ImageView<'_>,
        n: u32,
        pool: Option<&Pool>,
    ) -> Result<&[u8], PreprocessError> {
        img.validate()?;
        if n == 0 || n > MAX_RESOLUTION {
            return Err(PreprocessError::BadResolution(n));
        }
        let (rw, rh) = match self.fit {
            Fit::Crop => resized_size(img.width, img.height, n),
            Fit::Squash => (n, n),
        };
        if rw.max(rh) > MAX_RESIZED_SIDE {
            return Err(PreprocessError::ExtremeAspect {
                width: img.width,
                height: img.height,
                n,
            });
        }
        let crop = n.min(rw).min(rh);
        let x0 = center_crop_offset(rw, crop) as usize;
        let y0 = center_crop_offset(rh, crop) as usize;
        let (crop_w, crop_h) = (crop as usize, crop as usize);
        let (iw, ih) = (img.width as usize, img.height as usize);
        match img.mode {
            Mode::Bilevel | Mode::Palette => {
                let identity = (rw as usize, rh as usize) == (iw, ih);
                if identity {
                    self.nearest_x.clear();
                    self.nearest_x.extend(x0..x0 + crop_w);
                    self.nearest_y.clear();
                    self.nearest_y.extend(y0..y0 + crop_h);
                } else {
                    nearest_table(iw, rw as usize, x0, crop_w, &mut self.nearest_x);
                    nearest_table(ih, rh as usize, y0, crop_h, &mut self.nearest_y);
                }
                let out_ch = if img.mode == Mode::Palette { 3 } else { 1 };
                self.out8.clear();
                self.out8.resize(crop_w * crop_h * out_ch, 0);
                for (oy, &sy) in self.nearest_y.iter().enumerate() {
                    for (ox, &sx) in self.nearest_x.iter().enumerate() {
                        let v = img.data[sy * iw + sx];
                        let o = (oy * crop_w + ox) * out_ch;
                        if img.mode == Mode::Palette {
                            let c = img.palette.get(v as usize).ok_or(
                                PreprocessError::BadPaletteIndex {
                                    index: v,
                                    len: img.palette.len(),
                                },
                            )?;
                            self.out8[o..o + 3].copy_from_slice(c);
                        } else {
                            self.out8[o] = v;
                        }
                    }
                }
            }
            Mode::L | Mode::Rgb | Mode::La | Mode::Rgba => {
                let ch = img.mode.channels();
                // With alpha: resized premultiplied, as Pillow does.
                let alpha = matches!(img.mode, Mode::La | Mode::Rgba);
                let mut premul = std::mem::take(&mut self.premul);
                let src: &[u8] = if alpha {
                    premul.clear();
                    premul.extend_from_slice(img.data);
                    for px in premul.chunks_exact_mut(ch) {
                        let a = px[ch - 1];
                        for v in &mut px[..ch - 1] {
                            *v = muldiv255(*v, a);
                        }
                    }
                    &premul
                } else {
                    img.data
                };
                self.resample(
                    src,
                    iw,
                    ih,
                    ch,
                    rw as usize,
                    rh as usize,
                    x0,
                    y0,
                    crop_w,
                    crop_h,
                    pool,
                );
                self.premul = premul;
                if alpha {
                    for px in self.out8.chunks_exact_mut(ch) {
                        let a = px[ch - 1];
                        for v in &mut px[..ch - 1] {
                            *v = unpremultiply(*v, a);
                        }
                    }
                }
            }
        }
        Ok(&self.out8)
    }

    /// Pillow's two-pass 8-bit resize (bicubic or bilinear) of `src` (`iw`x`ih`, `ch`
    /// channels) to `rw`x`rh`, computing only the `cw`x`chh` window at
    /// (`x0`, `y0`). The pass order is Pillow's (>= 12): vertical first when
    /// the height shrinks by more than twice as many pixels as the width.
    #[allow(clippy::too_many_arguments)]
    fn resample(
        &mut self,
        src: &[u8],
        iw: usize,
        ih: usize,
        ch: usize,
        rw: usize,
        rh: usize,
        x0: usize,
        y0: usize,
        cw: usize,
        chh: usize,
        pool: Option<&Pool>,
    ) {
        let need_h = rw != iw;
        let need_v = rh != ih;
        let shrink_h = ih as i64 - rh as i64;
        let shrink_w = iw as i64 - rw as i64;
        let horizontal_first = !(shrink_h > 0 && shrink_h > shrink_w * 2);
        self.out8.clear();
        self.out8.resize(cw * chh * ch, 0);
        if need_v {
            self.vert.compute(self.filter, ih, rh, y0, chh);
        }
        if need_h {
            self.horiz.compute(self.filter, iw, rw, x0, cw);
            if ch >= 3 {
                self.horiz.set_taps();
            }
        }
        let threads = pool.map_or(1, Pool::threads);
        while self.scratch.len() < threads {
            self.scratch
                .push(std::sync::Mutex::new(Scratch::new(self.level)));
        }
        if horizontal_first {
            // Rows of the input that the vertical pass reads.
            let (first, last) = if need_v {
                span(&self.vert.bounds)
            } else {
                (y0, y0 + chh)
            };
            let rows = last - first;
            self.tmp.clear();
            self.tmp.resize(rows * cw * ch, 0);
            if need_h {
                horizontal(
                    (pool, self.parallel_from),
                    &self.scratch,
                    src,
                    iw * ch,
                    first,
                    rows,
                    &self.horiz,
                    ch,
                    &mut self.tmp,
                    cw * ch,
                );
            } else {
                copy_window(src, iw * ch, first, rows, x0 * ch, cw * ch, &mut self.tmp);
            }
            if need_v {
                let rows_src = Window {
                    stride: cw * ch,
                    x: 0,
                    first_row: first,
                };
                vertical(
                    (pool, self.parallel_from),
                    &self.scratch,
                    &self.tmp,
                    rows_src,
                    cw * ch,
                    &self.vert,
                    &mut self.out8,
                );
            } else {
                self.out8.copy_from_slice(&self.tmp);
            }
        } else {
            // Columns of the input that the horizontal pass reads.
            let (first, last) = if need_h {
                span(&self.horiz.bounds)
            } else {
                (x0, x0 + cw)
            };
            let cols = last - first;
            self.tmp.clear();
            self.tmp.resize(chh * cols * ch, 0);
            if need_v {
                // Vertical pass on the needed columns only, read in place.
                let cols_src = Window {
                    stride: iw * ch,
                    x: first * ch,
                    first_row: 0,
                };
                vertical(
                    (pool, self.parallel_from),
                    &self.scratch,
                    src,
                    cols_src,
                    cols * ch,
                    &self.vert,
                    &mut self.tmp,
                );
            } else {
                copy_window(src, iw * ch, y0, chh, first * ch, cols * ch, &mut self.tmp);
            }
            if need_h {
                let shifted = &mut self.horiz;
                for b in &mut shifted.bounds {
                    b.0 -= first;
                }
                horizontal(
                    (pool, self.parallel_from),
                    &self.scratch,
                    &self.tmp,
                    cols * ch,
                    0,
                    chh,
                    &self.horiz,
                    ch,
                    &mut self.out8,
                    cw * ch,
                );
            } else {
                self.out8.copy_from_slice(&self.tmp);
            }
        }
    }
}

#[cfg(test)]
mod tests;
