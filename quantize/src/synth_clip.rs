//! Scripted camera clips from the synthetic world, for `clip-edge watch`.
//!
//! A fixed scene (one gradient background) seen by a noisy sensor: every
//! frame adds fresh per-pixel noise. Shapes of the world's classes enter,
//! drift across the scene and leave, with empty stretches and unwatched
//! shapes between them. The ground truth (which label is in view from which
//! frame to which) is written beside the frames as `truth.json`. Every frame
//! is a pure function of the clip's script and seed.

use std::f32::consts::PI;
use std::path::Path;

use image::{ImageEncoder, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::synth::{draw_shape, jitter, SynthError, COLORS, COLOR_JITTER, RGB, SHAPES};

/// Per-channel amplitude of the sensor noise added to every frame.
pub const SENSOR_NOISE: i32 = 6;
/// JPEG quality of the stored frames (a camera's MJPEG stream).
pub const JPEG_QUALITY: u8 = 85;
/// The scene's background: a gradient between two greys that name no class.
const BACKGROUND: [[u8; 3]; 2] = [[110, 110, 110], [175, 175, 175]];

/// One stretch of a clip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Segment {
    /// `frames` frames of the empty scene.
    Empty { frames: usize },
    /// A shape of class `label` ("<color> <shape>") in view for `frames`
    /// frames, drifting across the scene.
    Object { label: String, frames: usize },
}

/// A clip's script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClipSpec {
    pub seed: u64,
    pub width: u32,
    pub height: u32,
    /// Labels a `watch` run on this clip is meant to watch.
    pub watched: Vec<String>,
    pub segments: Vec<Segment>,
}

/// Frames `start..=end` (0-based) show `label`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Span {
    pub label: String,
    pub start: usize,
    pub end: usize,
    /// In a wide scene: the shape's size (its bounding square's side, in
    /// pixels) and its centre in each frame `start..=end`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub centres: Vec<[f32; 2]>,
}

/// What a clip shows: written as `truth.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Truth {
    pub spec: Script,
    pub frames: usize,
    /// Every object in view, watched or not, in order.
    pub spans: Vec<Span>,
}

/// The committed clip (`models/clips/shapes`): two watched labels, each seen
/// twice, unwatched shapes and empty stretches between them; 320x240 (a
/// camera's QVGA mode) keeps the committed frames small.
pub fn default_clip() -> ClipSpec {
    let obj = |label: &str, frames| Segment::Object {
        label: label.into(),
        frames,
    };
    let empty = |frames| Segment::Empty { frames };
    ClipSpec {
        seed: 7,
        width: 320,
        height: 240,
        watched: vec!["red star".into(), "green square".into()],
        segments: vec![
            empty(12),
            obj("red star", 20),
            empty(10),
            obj("blue circle", 15),
            empty(10),
            obj("green square", 18),
            empty(6),
            obj("yellow triangle", 12),
            empty(8),
            obj("red star", 14),
            empty(12),
        ],
    }
}

fn class_parts(label: &str) -> Option<(usize, &'static str)> {
    let (color, shape) = label.split_once(' ')?;
    let c = COLORS.iter().position(|x| *x == color)?;
    let s = SHAPES.iter().find(|x| **x == shape)?;
    Some((c, s))
}

/// A frame size whose shorter side is at most `max_short` and longer side
/// at most [`MAX_CLIP_LONG_SIDE`](crate::synth::MAX_CLIP_LONG_SIDE).
fn check_size(w: u32, h: u32, max_short: u32) -> Result<(), SynthError> {
    use crate::synth::{MAX_CLIP_LONG_SIDE, MIN_SIDE};
    if (MIN_SIDE..=max_short).contains(&w.min(h)) && w.max(h) <= MAX_CLIP_LONG_SIDE {
        Ok(())
    } else {
        Err(SynthError::ClipSize(w, h, max_short))
    }
}

/// Render every frame of `spec`, and its truth. An unknown label is an error naming it.
pub fn render(spec: &ClipSpec) -> Result<(Vec<RgbImage>, Truth), SynthError> {
    let (w, h) = (spec.width, spec.height);
    check_size(w, h, crate::synth::MAX_SIDE * 2)?;
    let scene = gradient(w, h);
    let mut frames = Vec::new();
    let mut spans = Vec::new();
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    for seg in &spec.segments {
        match seg {
            Segment::Empty { frames: n } => {
                for _ in 0..*n {
                    frames.push(noisy(&scene, &mut rng));
                }
            }
            Segment::Object { label, frames: n } => {
                let (color, shape) =
                    class_parts(label).ok_or_else(|| SynthError::UnknownClass(label.clone()))?;
                let start = frames.len();
                // A path across the central square (what the centre crop
                // keeps), the whole shape in view throughout.
                let side = w.min(h) as f32;
                let (ox, oy) = ((w as f32 - side) / 2.0, (h as f32 - side) / 2.0);
                let size = side * rng.random_range(0.45..0.6);
                let reach = size / 2.0 + 2.0;
                let lo = reach;
                let hi = side - reach;
                let (x0, x1) = if rng.random_bool(0.5) {
                    (lo, hi)
                } else {
                    (hi, lo)
                };
                let (y0, y1) = (rng.random_range(lo..=hi), rng.random_range(lo..=hi));
                let fill = jitter(&mut rng, RGB[color], COLOR_JITTER);
                let a0 = match shape {
                    "square" => rng.random_range(-20f32..=20.0).to_radians(),
                    "circle" | "diamond" => 0.0,
                    _ => rng.random_range(0.0..2.0 * PI),
                };
                let spin = if matches!(shape, "square" | "circle" | "diamond") {
                    0.0
                } else {
                    0.02
                };
                for i in 0..*n {
                    let t = if *n > 1 {
                        i as f32 / (*n - 1) as f32
                    } else {
                        0.5
                    };
                    let mut img = scene.clone();
                    let centre = (ox + x0 + (x1 - x0) * t, oy + y0 + (y1 - y0) * t);
                    draw_shape(&mut img, shape, fill, centre, size, a0 + spin * i as f32);
                    frames.push(noisy(&img, &mut rng));
                }
                spans.push(Span {
                    label: label.clone(),
                    start,
                    end: frames.len() - 1,
                    size: None,
                    centres: Vec::new(),
                });
            }
        }
    }
    let truth = Truth {
        spec: Script::Clip(spec.clone()),
        frames: frames.len(),
        spans,
    };
    Ok((frames, truth))
}

/// A clip's script: a small clip of one object at a time, or a wide scene.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Script {
    Clip(ClipSpec),
    Scene(SceneSpec),
}

/// One shape's walk through a wide scene: from frame `start` it moves from
/// `from` (off the frame, to enter) to `stop` in `frames_in` frames, stands
/// still there for `still` frames, and moves to `to` in `frames_out` frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Walk {
    pub label: String,
    /// The shape's bounding square's side, pixels.
    pub size: u32,
    pub start: usize,
    pub from: [f32; 2],
    pub stop: [f32; 2],
    pub to: [f32; 2],
    pub frames_in: usize,
    pub still: usize,
    pub frames_out: usize,
}

impl Walk {
    fn frames(&self) -> usize {
        self.frames_in + self.still + self.frames_out
    }

    /// The centre `i` frames after the start.
    fn at(&self, i: usize) -> [f32; 2] {
        let lerp =
            |a: [f32; 2], b: [f32; 2], t: f32| [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t];
        if i < self.frames_in {
            lerp(self.from, self.stop, (i + 1) as f32 / self.frames_in as f32)
        } else if i < self.frames_in + self.still {
            self.stop
        } else {
            let j = i - self.frames_in - self.still;
            lerp(
                self.stop,
                self.to,
                (j + 1) as f32 / self.frames_out.max(1) as f32,
            )
        }
    }
}

/// A wide view (a camera over a yard) where the shapes are small: several
/// may be in view at once, and they stop still for a while.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneSpec {
    pub seed: u64,
    pub width: u32,
    pub height: u32,
    pub frames: usize,
    /// Labels a `watch` run on this clip is meant to watch.
    pub watched: Vec<String>,
    pub walks: Vec<Walk>,
    /// From this frame on the scene is brighter by `gain` (lights on).
    pub lights_on: Option<(usize, f32)>,
}

/// JPEG quality of a wide scene's stored frames (keeps the committed
/// clip small; the sensor noise survives it).
pub const SCENE_JPEG_QUALITY: u8 = 70;

/// The committed wide scene (`models/clips/yard`): 960x540, shapes of 70 to
/// 110 px that enter, stop still and leave; two in view at once, twice the
/// same label; unwatched shapes; the lights going on with nothing in view
/// (and after the places where shapes stood still are background again).
/// Watched objects stay on one side of the frame's middle (x = 480): the
/// left half holds the first and fourth red star only.
pub fn yard_scene() -> SceneSpec {
    let walk = |label: &str, size, start, from, stop, to, (frames_in, still, frames_out)| Walk {
        label: label.into(),
        size,
        start,
        from,
        stop,
        to,
        frames_in,
        still,
        frames_out,
    };
    SceneSpec {
        seed: 11,
        width: 960,
        height: 540,
        frames: 166,
        watched: vec!["red star".into(), "green square".into()],
        walks: vec![
            walk(
                "red star",
                90,
                8,
                [-50.0, 200.0],
                [240.0, 200.0],
                [240.0, -60.0],
                (12, 24, 10),
            ),
            walk(
                "blue circle",
                80,
                20,
                [1010.0, 400.0],
                [700.0, 400.0],
                [1010.0, 420.0],
                (12, 10, 12),
            ),
            walk(
                "green square",
                70,
                82,
                [640.0, -50.0],
                [640.0, 270.0],
                [640.0, 600.0],
                (12, 20, 12),
            ),
            walk(
                "red star",
                100,
                114,
                [-60.0, 420.0],
                [200.0, 420.0],
                [-60.0, 420.0],
                (12, 16, 12),
            ),
            walk(
                "red star",
                76,
                118,
                [1020.0, 150.0],
                [760.0, 150.0],
                [1020.0, 120.0],
                (12, 18, 12),
            ),
            walk(
                "yellow triangle",
                110,
                132,
                [480.0, 600.0],
                [480.0, 300.0],
                [480.0, -60.0],
                (12, 0, 12),
            ),
        ],
        lights_on: Some((72, 1.25)),
    }
}

/// Render every frame of a wide scene, and its truth.
pub fn render_scene(spec: &SceneSpec) -> Result<(Vec<RgbImage>, Truth), SynthError> {
    let (w, h) = (spec.width, spec.height);
    check_size(w, h, crate::synth::MAX_SIDE * 4)?;
    let scene = gradient(w, h);
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let mut looks = Vec::new();
    for walk in &spec.walks {
        let (color, shape) =
            class_parts(&walk.label).ok_or_else(|| SynthError::UnknownClass(walk.label.clone()))?;
        let fill = jitter(&mut rng, RGB[color], COLOR_JITTER);
        let angle = match shape {
            "circle" | "diamond" | "square" => 0.0,
            _ => rng.random_range(0.0..2.0 * PI),
        };
        looks.push((shape, fill, angle));
    }
    let mut spans: Vec<Span> = Vec::new();
    for walk in &spec.walks {
        let inside = |c: [f32; 2]| c[0] >= 0.0 && c[1] >= 0.0 && c[0] < w as f32 && c[1] < h as f32;
        let seen: Vec<usize> = (0..walk.frames()).filter(|&i| inside(walk.at(i))).collect();
        if let (Some(&a), Some(&b)) = (seen.first(), seen.last()) {
            spans.push(Span {
                label: walk.label.clone(),
                start: walk.start + a,
                end: walk.start + b,
                size: Some(walk.size),
                centres: (a..=b).map(|i| walk.at(i)).collect(),
            });
        }
    }
    let mut frames = Vec::with_capacity(spec.frames);
    for f in 0..spec.frames {
        let mut img = scene.clone();
        for (walk, (shape, fill, angle)) in spec.walks.iter().zip(&looks) {
            if f >= walk.start && f < walk.start + walk.frames() {
                let c = walk.at(f - walk.start);
                draw_shape(
                    &mut img,
                    shape,
                    *fill,
                    (c[0], c[1]),
                    walk.size as f32,
                    *angle,
                );
            }
        }
        if let Some((from, gain)) = spec.lights_on {
            if f >= from {
                for v in img.iter_mut() {
                    *v = (*v as f32 * gain).round().min(255.0) as u8;
                }
            }
        }
        frames.push(noisy(&img, &mut rng));
    }
    let truth = Truth {
        spec: Script::Scene(spec.clone()),
        frames: frames.len(),
        spans,
    };
    Ok((frames, truth))
}

/// The scene's background: [`BACKGROUND`]'s gradient, left to right.
fn gradient(w: u32, h: u32) -> RgbImage {
    let mut scene = RgbImage::new(w, h);
    for (x, _, p) in scene.enumerate_pixels_mut() {
        let t = x as f32 / (w - 1).max(1) as f32;
        p.0 = std::array::from_fn(|k| {
            (BACKGROUND[0][k] as f32 * (1.0 - t) + BACKGROUND[1][k] as f32 * t).round() as u8
        });
    }
    scene
}

fn noisy(img: &RgbImage, rng: &mut ChaCha8Rng) -> RgbImage {
    let mut out = img.clone();
    for v in out.iter_mut() {
        *v = (*v as i32 + rng.random_range(-SENSOR_NOISE..=SENSOR_NOISE)).clamp(0, 255) as u8;
    }
    out
}

/// Encode one frame as the clip stores it.
pub fn encode_jpeg(img: &RgbImage) -> Result<Vec<u8>, image::ImageError> {
    encode_jpeg_at(img, JPEG_QUALITY)
}

fn encode_jpeg_at(img: &RgbImage, quality: u8) -> Result<Vec<u8>, image::ImageError> {
    let mut buf = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, quality).write_image(
        img.as_raw(),
        img.width(),
        img.height(),
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(buf)
}

/// Write `spec`'s frames as `out/NNNNN.jpg` and `out/truth.json`, replacing
/// `out` whole (atomically). Returns the number of frames.
pub fn write_clip(out: &Path, spec: &ClipSpec) -> Result<usize, SynthError> {
    check_out(out)?;
    let (frames, truth) = render(spec)?;
    write_frames(out, &frames, &truth, JPEG_QUALITY)
}

/// As [`write_clip`], for a wide scene.
pub fn write_scene(out: &Path, spec: &SceneSpec) -> Result<usize, SynthError> {
    check_out(out)?;
    let (frames, truth) = render_scene(spec)?;
    write_frames(out, &frames, &truth, SCENE_JPEG_QUALITY)
}

/// `out` may be replaced by a clip (before any frame is drawn): new,
/// empty or an earlier clip.
fn check_out(out: &Path) -> Result<(), SynthError> {
    Ok(crate::atomic::check_out(out, "synth run", |name| {
        name == "truth.json"
            || (name.len() == 9
                && name.ends_with(".jpg")
                && name[..5].bytes().all(|b| b.is_ascii_digit()))
    })?)
}

fn write_frames(
    out: &Path,
    frames: &[RgbImage],
    truth: &Truth,
    quality: u8,
) -> Result<usize, SynthError> {
    crate::atomic::write_dir(out, |tmp| -> Result<usize, SynthError> {
        for (i, f) in frames.iter().enumerate() {
            let path = tmp.join(format!("{i:05}.jpg"));
            let bytes = encode_jpeg_at(f, quality).map_err(|source| SynthError::Encode {
                path: path.clone(),
                source,
            })?;
            std::fs::write(&path, bytes).map_err(|source| SynthError::Io { path, source })?;
        }
        let path = tmp.join("truth.json");
        let text = serde_json::to_string_pretty(truth).expect("truth serialises") + "\n";
        std::fs::write(&path, text).map_err(|source| SynthError::Io { path, source })?;
        Ok(frames.len())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_follow_the_script() {
        let (frames, truth) = render(&default_clip()).unwrap();
        assert_eq!(frames.len(), truth.frames);
        assert_eq!(truth.frames, 137);
        let labels: Vec<_> = truth.spans.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "red star",
                "blue circle",
                "green square",
                "yellow triangle",
                "red star"
            ]
        );
        assert_eq!((truth.spans[0].start, truth.spans[0].end), (12, 31));
    }

    #[test]
    fn unknown_label_is_named() {
        let mut spec = default_clip();
        spec.segments.push(Segment::Object {
            label: "pink whale".into(),
            frames: 1,
        });
        let e = render(&spec).err().unwrap().to_string();
        assert!(e.contains("pink whale"), "{e}");
    }
}
