//! The synthetic world the default model is trained and evaluated on.
//!
//! 49 classes: 48 named `"<color> <shape>"`, one filled shape per image on a
//! solid, gradient or noise background, at varied sizes, positions, rotations
//! and aspect ratios, some of them JPEG-compressed; and [`EMPTY_CLASS`], the
//! same backgrounds with no shape (so a model can say a scene is empty). Every image is a pure function
//! of `(seed, class, index)`, so sets are reproducible and can be made in any
//! order or in parallel. `models/synthetic/train.py` calls this generator
//! (through `clip-quantize synth`) for its training images.

use std::f32::consts::PI;
use std::path::{Path, PathBuf};

use image::{ImageEncoder, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use thiserror::Error;

/// Color names, in class order.
pub const COLORS: [&str; 8] = [
    "red", "green", "blue", "yellow", "orange", "purple", "white", "black",
];
/// Shape names, in class order.
pub const SHAPES: [&str; 6] = ["circle", "square", "triangle", "star", "cross", "diamond"];

/// Nominal RGB of each color in [`COLORS`]; shapes are drawn within
/// [`COLOR_JITTER`] of it.
pub(crate) const RGB: [[u8; 3]; 8] = [
    [215, 35, 35],
    [35, 165, 55],
    [35, 70, 215],
    [240, 215, 35],
    [245, 135, 25],
    [135, 45, 175],
    [245, 245, 245],
    [20, 20, 20],
];
/// Extra background colors that name no class.
const BACKGROUND_EXTRA: [[u8; 3]; 5] = [
    [128, 128, 128],
    [190, 190, 190],
    [70, 70, 70],
    [120, 80, 50],
    [60, 170, 170],
];
pub(crate) const COLOR_JITTER: i32 = 14;
/// Noise backgrounds: per-channel amplitude around their base color.
const NOISE_AMPLITUDE: i32 = 40;
/// Supersampling per axis for anti-aliased edges.
const SUPERSAMPLE: usize = 4;
/// Smallest and largest image side.
pub const MIN_SIDE: u32 = 48;
pub const MAX_SIDE: u32 = 512;

/// The longest side of a synthetic clip's frames.
pub const MAX_CLIP_LONG_SIDE: u32 = 4096;

/// The class with no shape: a background alone. Last in class order.
pub const EMPTY_CLASS: &str = "plain background";
/// Number of classes: every color × shape, then [`EMPTY_CLASS`].
pub const CLASS_COUNT: usize = COLORS.len() * SHAPES.len() + 1;

/// The class labels: the 48 `"<color> <shape>"` ones, colors major, then
/// [`EMPTY_CLASS`].
pub fn class_names() -> Vec<String> {
    COLORS
        .iter()
        .flat_map(|c| SHAPES.iter().map(move |s| format!("{c} {s}")))
        .chain(std::iter::once(EMPTY_CLASS.to_string()))
        .collect()
}

/// Folder name of a class in an ImageNet-style tree (`red_circle`).
pub fn folder_name(class: &str) -> String {
    class.replace(' ', "_")
}

#[derive(Debug, Error)]
pub enum SynthError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Encode {
        path: PathBuf,
        source: image::ImageError,
    },
    #[error("--max-side {0}: expected {MIN_SIDE} to {MAX_SIDE}")]
    MaxSide(u32),
    #[error("clip frame {0}x{1}: the shorter side must be {MIN_SIDE} to {2} pixels, the longer at most {MAX_CLIP_LONG_SIDE}")]
    ClipSize(u32, u32, u32),
    #[error("clip label {0:?}: not a class of the synthetic world (\"<color> <shape>\")")]
    UnknownClass(String),
}

/// What to make.
#[derive(Debug, Clone)]
pub struct SynthOptions {
    pub seed: u64,
    pub per_class: usize,
    /// Largest image side (at most [`MAX_SIDE`]); smaller keeps committed sets small.
    pub max_side: u32,
    /// Fraction of images written as JPEG (the rest are PNG).
    pub jpeg_fraction: f32,
}

/// One drawn image and what it shows.
pub struct Sample {
    pub image: RgbImage,
    pub class: usize,
    /// JPEG quality when the sample is to be stored as JPEG.
    pub jpeg_quality: Option<u8>,
}

fn rng_for(seed: u64, class: usize, index: usize) -> ChaCha8Rng {
    // SplitMix-style mixing so neighbouring (class, index) pairs get unrelated streams.
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((class as u64) << 32 | index as u64);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ChaCha8Rng::seed_from_u64(z ^ (z >> 31))
}

pub(crate) fn jitter(rng: &mut ChaCha8Rng, c: [u8; 3], amount: i32) -> [u8; 3] {
    c.map(|v| (v as i32 + rng.random_range(-amount..=amount)).clamp(0, 255) as u8)
}

/// A background color: any palette entry except the shape's own color
/// (`shape_color` out of range, as for [`EMPTY_CLASS`]: any entry).
pub(crate) fn background_color(rng: &mut ChaCha8Rng, shape_color: usize) -> [u8; 3] {
    let excluded = shape_color < RGB.len();
    let n = RGB.len() - usize::from(excluded) + BACKGROUND_EXTRA.len();
    let mut k = rng.random_range(0..n);
    if excluded && k >= shape_color {
        k += 1;
    }
    let base = if k < RGB.len() {
        RGB[k]
    } else {
        BACKGROUND_EXTRA[k - RGB.len()]
    };
    jitter(rng, base, COLOR_JITTER)
}

/// Outline of a shape centred on the origin, `size` across, as polygons
/// (a circle is handled apart). Angles in radians.
fn outline(shape: &str, size: f32, angle: f32) -> Vec<[f32; 2]> {
    let r = size / 2.0;
    let pts: Vec<[f32; 2]> = match shape {
        "square" => {
            let h = r * 0.72;
            vec![[-h, -h], [h, -h], [h, h], [-h, h]]
        }
        "diamond" => {
            let (w, h) = (r * 0.7, r);
            vec![[0.0, -h], [w, 0.0], [0.0, h], [-w, 0.0]]
        }
        "triangle" => (0..3)
            .map(|i| {
                let a = -PI / 2.0 + i as f32 * 2.0 * PI / 3.0;
                [r * a.cos(), r * a.sin()]
            })
            .collect(),
        "star" => (0..10)
            .map(|i| {
                let a = -PI / 2.0 + i as f32 * PI / 5.0;
                let rr = if i % 2 == 0 { r } else { r * 0.42 };
                [rr * a.cos(), rr * a.sin()]
            })
            .collect(),
        "cross" => {
            let t = r / 3.0;
            vec![
                [-t, -r],
                [t, -r],
                [t, -t],
                [r, -t],
                [r, t],
                [t, t],
                [t, r],
                [-t, r],
                [-t, t],
                [-r, t],
                [-r, -t],
                [-t, -t],
            ]
        }
        other => unreachable!("not a polygon shape: {other}"),
    };
    let (s, c) = angle.sin_cos();
    pts.into_iter()
        .map(|[x, y]| [x * c - y * s, x * s + y * c])
        .collect()
}

/// Even-odd point-in-polygon.
fn inside(poly: &[[f32; 2]], x: f32, y: f32) -> bool {
    let mut hit = false;
    let mut j = poly.len() - 1;
    for i in 0..poly.len() {
        let ([xi, yi], [xj, yj]) = (poly[i], poly[j]);
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            hit = !hit;
        }
        j = i;
    }
    hit
}

fn fill_background(rng: &mut ChaCha8Rng, img: &mut RgbImage, shape_color: usize) {
    let (w, h) = img.dimensions();
    match rng.random_range(0..3) {
        0 => {
            let c = background_color(rng, shape_color);
            for p in img.pixels_mut() {
                p.0 = c;
            }
        }
        1 => {
            let a = background_color(rng, shape_color);
            let b = background_color(rng, shape_color);
            let theta = rng.random_range(0.0..2.0 * PI);
            let (dx, dy) = (theta.cos(), theta.sin());
            let half = 0.5 * (w as f32 * dx.abs() + h as f32 * dy.abs()).max(1.0);
            let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
            for (x, y, p) in img.enumerate_pixels_mut() {
                let t =
                    (((x as f32 + 0.5 - cx) * dx + (y as f32 + 0.5 - cy) * dy) / half + 1.0) * 0.5;
                let t = t.clamp(0.0, 1.0);
                p.0 = std::array::from_fn(|k| {
                    (a[k] as f32 * (1.0 - t) + b[k] as f32 * t).round() as u8
                });
            }
        }
        _ => {
            let base = background_color(rng, shape_color);
            for p in img.pixels_mut() {
                p.0 = jitter(rng, base, NOISE_AMPLITUDE);
            }
        }
    }
}

/// Draw image `index` of class `class` (0..[`CLASS_COUNT`]) for `seed`.
pub fn sample(seed: u64, class: usize, index: usize, max_side: u32, jpeg_fraction: f32) -> Sample {
    let mut rng = rng_for(seed, class, index);
    // The empty class (color index past the palette) draws its background
    // with no color excluded, and no shape.
    let color = class / SHAPES.len();
    let shape = (color < COLORS.len()).then(|| SHAPES[class % SHAPES.len()]);
    let max_side = max_side.clamp(MIN_SIDE, MAX_SIDE);

    // Shorter side log-uniform, aspect ratio up to 1.8 either way.
    let short = (rng.random_range((MIN_SIDE as f32).ln()..=(max_side as f32).ln()))
        .exp()
        .round() as u32;
    let long = ((short as f32 * rng.random_range(1.0..1.8)).round() as u32).min(max_side);
    let (w, h) = if rng.random_bool(0.5) {
        (long, short)
    } else {
        (short, long)
    };
    let mut img = RgbImage::new(w, h);
    fill_background(&mut rng, &mut img, color);
    if let Some(shape) = shape {
        draw_class_shape(&mut rng, &mut img, shape, color, short);
    }
    let jpeg_quality = rng
        .random_bool(jpeg_fraction.clamp(0.0, 1.0) as f64)
        .then(|| rng.random_range(55..=95));
    Sample {
        image: img,
        class,
        jpeg_quality,
    }
}

/// A class's shape on `img` (whose shorter side is `short`).
fn draw_class_shape(
    rng: &mut ChaCha8Rng,
    img: &mut RgbImage,
    shape: &str,
    color: usize,
    short: u32,
) {
    let (w, h) = img.dimensions();
    // Size a quarter to three quarters of the shorter side; centred so the
    // whole shape stays inside the central square (what a centre crop keeps).
    let side = short as f32;
    let size = side * rng.random_range(0.25..0.75);
    let reach = size / 2.0;
    let (ox, oy) = ((w as f32 - side) / 2.0, (h as f32 - side) / 2.0);
    let cx = ox + rng.random_range(reach..=side - reach);
    let cy = oy + rng.random_range(reach..=side - reach);
    let angle = match shape {
        "square" => rng.random_range(-30f32..=30.0).to_radians(),
        "diamond" => rng.random_range(-15f32..=15.0).to_radians(),
        "circle" => 0.0,
        _ => rng.random_range(0.0..2.0 * PI),
    };
    let fill = jitter(rng, RGB[color], COLOR_JITTER);
    draw_shape(img, shape, fill, (cx, cy), size, angle);
}

/// Draw `shape` filled with `fill`, `size` across, centred on `centre`,
/// turned by `angle` radians, anti-aliased by supersampling; clipped to the image.
pub(crate) fn draw_shape(
    img: &mut RgbImage,
    shape: &str,
    fill: [u8; 3],
    (cx, cy): (f32, f32),
    size: f32,
    angle: f32,
) {
    let (w, h) = img.dimensions();
    let reach = size / 2.0;
    let poly = (shape != "circle").then(|| outline(shape, size, angle));

    let x0 = (cx - reach).floor().max(0.0) as u32;
    let y0 = (cy - reach).floor().max(0.0) as u32;
    let x1 = ((cx + reach).ceil() as u32).min(w);
    let y1 = ((cy + reach).ceil() as u32).min(h);
    let n = SUPERSAMPLE * SUPERSAMPLE;
    for y in y0..y1 {
        for x in x0..x1 {
            let mut covered = 0usize;
            for sy in 0..SUPERSAMPLE {
                for sx in 0..SUPERSAMPLE {
                    let px = x as f32 + (sx as f32 + 0.5) / SUPERSAMPLE as f32 - cx;
                    let py = y as f32 + (sy as f32 + 0.5) / SUPERSAMPLE as f32 - cy;
                    let hit = match &poly {
                        Some(p) => inside(p, px, py),
                        None => px * px + py * py <= reach * reach,
                    };
                    covered += hit as usize;
                }
            }
            if covered > 0 {
                let a = covered as f32 / n as f32;
                let p = img.get_pixel_mut(x, y);
                p.0 = std::array::from_fn(|k| {
                    (p.0[k] as f32 * (1.0 - a) + fill[k] as f32 * a).round() as u8
                });
            }
        }
    }
}

/// Write `options.per_class` images per class under `out/<color>_<shape>/`
/// (`NNNNN.png` or `NNNNN.jpg`). Returns the number written. `progress` is
/// called once per image.
pub fn write_set(
    out: &Path,
    options: &SynthOptions,
    progress: &(dyn Fn() + Sync),
) -> Result<usize, SynthError> {
    if !(MIN_SIDE..=MAX_SIDE).contains(&options.max_side) {
        return Err(SynthError::MaxSide(options.max_side));
    }
    refuse_foreign_dir(out)?;
    crate::atomic::write_dir(out, |tmp| write_set_into(tmp, options, progress))
}

/// `out` is replaced whole, so it must be empty or an earlier output: a
/// folder holding anything but the class folders is left alone.
fn refuse_foreign_dir(out: &Path) -> Result<(), SynthError> {
    let classes: Vec<String> = class_names().iter().map(|c| folder_name(c)).collect();
    Ok(crate::atomic::check_out(out, "synth run", |name| {
        classes.iter().any(|c| c == name)
    })?)
}

impl From<crate::atomic::IoAt> for SynthError {
    fn from(e: crate::atomic::IoAt) -> Self {
        SynthError::Io {
            path: e.path,
            source: e.source,
        }
    }
}

fn write_set_into(
    out: &Path,
    options: &SynthOptions,
    progress: &(dyn Fn() + Sync),
) -> Result<usize, SynthError> {
    let classes = class_names();
    for c in &classes {
        let dir = out.join(folder_name(c));
        std::fs::create_dir_all(&dir).map_err(|source| SynthError::Io { path: dir, source })?;
    }
    let jobs: Vec<(usize, usize)> = (0..classes.len())
        .flat_map(|c| (0..options.per_class).map(move |i| (c, i)))
        .collect();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = jobs.len().div_ceil(workers).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .chunks(chunk)
            .map(|part| {
                let classes = &classes;
                s.spawn(move || -> Result<(), SynthError> {
                    for &(c, i) in part {
                        let smp =
                            sample(options.seed, c, i, options.max_side, options.jpeg_fraction);
                        write_sample(&out.join(folder_name(&classes[c])), i, &smp)?;
                        progress();
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("synth worker panicked"))
    })?;
    Ok(jobs.len())
}

fn write_sample(dir: &Path, index: usize, smp: &Sample) -> Result<(), SynthError> {
    let (w, h) = smp.image.dimensions();
    let (path, result) = match smp.jpeg_quality {
        Some(q) => {
            let path = dir.join(format!("{index:05}.jpg"));
            let mut buf = Vec::new();
            let r = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, q)
                .write_image(smp.image.as_raw(), w, h, image::ExtendedColorType::Rgb8)
                .map(|_| buf);
            (path, r)
        }
        None => {
            let path = dir.join(format!("{index:05}.png"));
            let mut buf = Vec::new();
            let r = image::codecs::png::PngEncoder::new_with_quality(
                &mut buf,
                image::codecs::png::CompressionType::Best,
                image::codecs::png::FilterType::Adaptive,
            )
            .write_image(smp.image.as_raw(), w, h, image::ExtendedColorType::Rgb8)
            .map(|_| buf);
            (path, r)
        }
    };
    let bytes = result.map_err(|source| SynthError::Encode {
        path: path.clone(),
        source,
    })?;
    std::fs::write(&path, bytes).map_err(|source| SynthError::Io { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_classes_in_color_major_order_then_the_empty_one() {
        let names = class_names();
        assert_eq!(names.len(), CLASS_COUNT);
        assert_eq!(names.len(), 49);
        assert_eq!(names[0], "red circle");
        assert_eq!(names[7], "green square");
        assert_eq!(names[47], "black diamond");
        assert_eq!(names[48], EMPTY_CLASS);
    }

    #[test]
    fn empty_class_is_a_background_alone() {
        // Each background kind is one color, a two-color gradient or noise
        // around one color: an image with no shape has no hard edge, so
        // neighbouring pixels stay within the noise amplitude of each other.
        for i in 0..12 {
            let s = sample(1, CLASS_COUNT - 1, i, 128, 0.0);
            let img = &s.image;
            for y in 0..img.height() {
                for x in 1..img.width() {
                    let (a, b) = (img.get_pixel(x - 1, y).0, img.get_pixel(x, y).0);
                    for k in 0..3 {
                        let d = (a[k] as i32 - b[k] as i32).abs();
                        assert!(
                            d <= 2 * NOISE_AMPLITUDE + 2 * COLOR_JITTER,
                            "image {i} at ({x}, {y}): step {d}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn deterministic_from_seed() {
        let a = sample(7, 13, 4, 128, 0.5);
        let b = sample(7, 13, 4, 128, 0.5);
        let c = sample(8, 13, 4, 128, 0.5);
        assert_eq!(a.image, b.image);
        assert_eq!(a.jpeg_quality, b.jpeg_quality);
        assert_ne!(a.image, c.image);
    }

    #[test]
    fn sizes_in_range_and_shape_drawn_in_its_color() {
        for class in 0..CLASS_COUNT - 1 {
            for i in 0..6 {
                let s = sample(1, class, i, MAX_SIDE, 0.0);
                let (w, h) = s.image.dimensions();
                assert!((MIN_SIDE..=MAX_SIDE).contains(&w.min(h)), "{w}x{h}");
                assert!(w.max(h) <= MAX_SIDE);
                // Some pixel is within jitter of the shape's color.
                let target = RGB[class / SHAPES.len()];
                let close = s.image.pixels().any(|p| {
                    (0..3).all(|k| (p.0[k] as i32 - target[k] as i32).abs() <= COLOR_JITTER * 2)
                });
                assert!(close, "class {class} image {i}");
            }
        }
    }

    #[test]
    fn polygons_contain_their_centre() {
        for shape in ["square", "diamond", "triangle", "star", "cross"] {
            let p = outline(shape, 100.0, 0.3);
            assert!(inside(&p, 0.0, 0.0), "{shape}");
            assert!(!inside(&p, 60.0, 60.0), "{shape}");
        }
    }
}
