//! The motion mask of `watch --regions motion`: the regions of a frame that
//! differ from the scene's background.
//!
//! A grid of cells (8 px on a 960x540 frame): each cell's mean colour is
//! compared with the background's (a running mean of the still scene),
//! after the whole view's change is taken out (a gain and an offset per
//! channel: a camera's exposure, a cloud, the lights), fitted over the half
//! of the cells that fit best, so that a large object close to the camera
//! does not bend the fit for the rest of the view). Averaging a cell's pixels leaves little of a sensor's
//! per-pixel noise, so a still scene gives no cell; a change over most of
//! the frame gives no region at all. A cell that differs from the
//! background but stays unchanged for [`STEADY_FRAMES`] (within
//! [`MOTION_LEVEL`] of its colour when it last changed: an object creeping
//! a pixel a frame changes a cell a little each frame) becomes background
//! (an object that stopped: its track goes on at its last box); a moving
//! object's cells keep changing, so it leaves no trail. Cells that differ,
//! grown by one cell, make connected areas whose bounding boxes are the
//! regions. Everything is sized at the first frame (and again only when
//! the frame size changes): no allocation per frame.

use super::regions::Rect;
use crate::decode::DecodedImage;
use crate::preprocess::Mode;

/// A cell's colour must change by more than this (0-255, any channel,
/// after the whole view's change is taken out) to count as motion. Sensor
/// noise of ±6 levels per pixel leaves a cell mean within ±1.
pub const MOTION_LEVEL: f32 = 10.0;
/// Motion over more than this fraction of the cells is a change of the
/// whole view (lights, exposure, a camera moved): no region.
pub const GLOBAL_CHANGE: f32 = 0.3;
/// How fast the background follows a cell that matches it (per frame).
pub const FOLLOW_RATE: f32 = 0.25;
/// A cell that differs from the background but has not changed for this
/// many frames becomes background: an object that stopped (its track goes
/// on at its last box), or the place an object left. A cell that keeps
/// changing (a moving object) never does, so a moving object leaves no trail.
pub const STEADY_FRAMES: u16 = 15;
/// Moving cells an area needs to be a region (one cell is a speck).
pub const MIN_CELLS: u32 = 2;
/// The most regions a frame gives (the largest ones are kept).
pub const MAX_REGIONS: usize = 8;
/// Cells along the frame's longer side (about).
const GRID_LONG_SIDE: u32 = 120;

/// Regions that differ from the scene's background.
#[derive(Debug, Default)]
pub struct Motion {
    width: u32,
    height: u32,
    mode: Mode,
    cell: u32,
    gw: usize,
    gh: usize,
    /// Per cell: the sum of each channel over the cell's pixels.
    sums: Vec<[u32; 3]>,
    counts: Vec<u32>,
    /// Per cell: this frame's mean colour.
    now: Vec<[f32; 3]>,
    /// Per cell: its mean colour when it last changed, what "unchanged"
    /// is measured from (not the previous frame: an object moving a pixel
    /// a frame changes each cell a little each frame, and much in all).
    anchor: Vec<[f32; 3]>,
    /// Per cell: frames since its colour last changed.
    steady: Vec<u16>,
    /// Per cell: the background, a running mean of the still scene.
    background: Vec<[f32; 3]>,
    have_background: bool,
    moving: Vec<bool>,
    grown: Vec<bool>,
    seen: Vec<bool>,
    stack: Vec<u32>,
    regions: Vec<Rect>,
    /// Per cell: how far it is from the fitted change (the trimmed fit's
    /// work buffer, and its copy to select the median from).
    residual: Vec<f32>,
    ranked: Vec<f32>,
    /// Whether the last frame was a change of the whole view.
    pub global_change: bool,
    /// Whether the last frame was taken as the background whole (the
    /// first frame, or the first after a reset): what stood in it then is
    /// not motion.
    pub learned: bool,
}

/// The trimmed fit is used only when the best half of the cells is this
/// close to it (median, 0-255 levels): a still scene's cells are (sensor
/// noise of ±6 levels a pixel leaves a cell's median residual at 0.63 on
/// the tests' scenes).
const TRIMMED_FIT_NOISE: f32 = MOTION_LEVEL / 4.0;

/// Refits of the whole view's change over the cells that fit best
/// (each a least-trimmed-squares step: the fit never gets worse on the
/// half it keeps).
const TRIM_STEPS: usize = 2;

impl Motion {
    pub fn new() -> Motion {
        Motion::default()
    }

    fn resize(&mut self, img: &DecodedImage) {
        self.width = img.width;
        self.height = img.height;
        self.mode = img.mode;
        self.cell = img
            .width
            .max(img.height)
            .div_ceil(GRID_LONG_SIDE)
            .clamp(4, 32);
        self.gw = img.width.div_ceil(self.cell) as usize;
        self.gh = img.height.div_ceil(self.cell) as usize;
        let n = self.gw * self.gh;
        self.sums = vec![[0; 3]; n];
        self.counts = vec![0; n];
        for (i, c) in self.counts.iter_mut().enumerate() {
            let (cx, cy) = ((i % self.gw) as u32, (i / self.gw) as u32);
            let w = (img.width - cx * self.cell).min(self.cell);
            let h = (img.height - cy * self.cell).min(self.cell);
            *c = w * h;
        }
        self.now = vec![[0.0; 3]; n];
        self.anchor = vec![[0.0; 3]; n];
        self.steady = vec![0; n];
        self.background = vec![[0.0; 3]; n];
        self.moving = vec![false; n];
        self.grown = vec![false; n];
        self.seen = vec![false; n];
        self.stack = Vec::with_capacity(n);
        self.regions = Vec::with_capacity(n);
        self.residual = vec![0.0; n];
        self.ranked = vec![0.0; n];
        self.have_background = false;
    }

    /// Forgets the background (after a gap in the source).
    pub fn reset(&mut self) {
        self.have_background = false;
    }

    /// The regions of `img` that differ from the background, largest
    /// first (none for the first frame, which is taken as the background),
    /// those whose share of the frame's area is outside `area` left out
    /// before the largest [`MAX_REGIONS`] are kept.
    pub fn update(&mut self, img: &DecodedImage, area: (f32, f32)) -> &[Rect] {
        if (img.width, img.height, img.mode) != (self.width, self.height, self.mode)
            || self.sums.is_empty()
        {
            self.resize(img);
        }
        self.regions.clear();
        self.global_change = false;
        self.learned = false;
        if img.width == 0 || img.height == 0 {
            return &self.regions;
        }
        self.cell_means(img);
        if !self.have_background {
            self.background.copy_from_slice(&self.now);
            self.anchor.copy_from_slice(&self.now);
            self.steady.fill(0);
            self.have_background = true;
            self.learned = true;
            return &self.regions;
        }
        let n = self.now.len();
        // The whole view's change, per channel: now = gain * background +
        // offset, taken out before the threshold. Least squares over all
        // cells, then again over the half that fits best: an object close
        // to the camera (a fifth of the view) would otherwise bend the fit
        // and make the whole view look changed.
        let all = self.fit_change(None);
        let mut fit = all;
        for step in 0..=TRIM_STEPS {
            for (i, r) in self.residual.iter_mut().enumerate() {
                let (a, b) = (self.now[i], self.background[i]);
                *r = (0..3)
                    .map(|k| (a[k] - (fit[k].0 * b[k] + fit[k].1)).abs())
                    .fold(0.0, f32::max);
            }
            self.ranked.copy_from_slice(&self.residual);
            let (_, &mut median, _) = self.ranked.select_nth_unstable_by(n / 2, f32::total_cmp);
            if step == TRIM_STEPS {
                // The best half must fit as a still scene does (its
                // median within sensor noise): else no one change fits
                // most of the view (half of it lit anew), and the fit over
                // all cells is kept.
                if median > TRIMMED_FIT_NOISE {
                    fit = all;
                }
                break;
            }
            fit = self.fit_change(Some(median));
        }
        let mut count = 0usize;
        for i in 0..n {
            let (a, b) = (self.now[i], &mut self.background[i]);
            let mut d = 0f32;
            let mut changed = 0f32;
            let anchor = &mut self.anchor[i];
            for k in 0..3 {
                // The whole view's change (exposure, dusk) taken out of
                // both, as out of the frame.
                b[k] = fit[k].0 * b[k] + fit[k].1;
                anchor[k] = fit[k].0 * anchor[k] + fit[k].1;
                d = d.max((a[k] - b[k]).abs());
                changed = changed.max((a[k] - anchor[k]).abs());
            }
            self.steady[i] = if changed > MOTION_LEVEL {
                self.anchor[i] = a;
                0
            } else {
                self.steady[i].saturating_add(1)
            };
            if d <= MOTION_LEVEL {
                for k in 0..3 {
                    b[k] += FOLLOW_RATE * (a[k] - b[k]);
                }
            } else if self.steady[i] >= STEADY_FRAMES {
                *b = a;
            } else {
                self.moving[i] = true;
                count += 1;
                continue;
            }
            self.moving[i] = false;
        }
        if count as f32 > GLOBAL_CHANGE * n as f32 {
            self.global_change = true;
            self.background.copy_from_slice(&self.now);
            return &self.regions;
        }
        if count == 0 {
            return &self.regions;
        }
        self.find_areas(area);
        &self.regions
    }

    /// Least squares of `now = gain · background + offset` per channel,
    /// over the cells whose residual is at most `within` (all cells when
    /// `None`); the gain held to 1/4..4, and 1 where the background is
    /// too flat to say.
    fn fit_change(&self, within: Option<f32>) -> [(f32, f32); 3] {
        let mut fit = [(1f32, 0f32); 3];
        for (k, f) in fit.iter_mut().enumerate() {
            let (mut sx, mut sy, mut sxx, mut sxy, mut nn) = (0f64, 0f64, 0f64, 0f64, 0f64);
            for ((a, b), r) in self.now.iter().zip(&self.background).zip(&self.residual) {
                if within.is_some_and(|w| *r > w) {
                    continue;
                }
                let (x, y) = (b[k] as f64, a[k] as f64);
                sx += x;
                sy += y;
                sxx += x * x;
                sxy += x * y;
                nn += 1.0;
            }
            if nn == 0.0 {
                continue;
            }
            let var = sxx - sx * sx / nn;
            let gain = if var > nn {
                ((sxy - sx * sy / nn) / var).clamp(0.25, 4.0)
            } else {
                1.0
            };
            *f = (gain as f32, ((sy - gain * sx) / nn) as f32);
        }
        fit
    }

    fn cell_means(&mut self, img: &DecodedImage) {
        let (w, cell, gw) = (img.width as usize, self.cell as usize, self.gw);
        for s in self.sums.iter_mut() {
            *s = [0; 3];
        }
        let ch = img.mode.channels();
        for y in 0..img.height as usize {
            let row = &img.data[y * w * ch..(y + 1) * w * ch];
            let base = (y / cell) * gw;
            for (cx, chunk) in row.chunks(cell * ch).enumerate() {
                let s = &mut self.sums[base + cx];
                match img.mode {
                    Mode::Rgb | Mode::Rgba => {
                        for p in chunk.chunks_exact(ch) {
                            s[0] += p[0] as u32;
                            s[1] += p[1] as u32;
                            s[2] += p[2] as u32;
                        }
                    }
                    Mode::L | Mode::La | Mode::Bilevel => {
                        for p in chunk.chunks_exact(ch) {
                            s[0] += p[0] as u32;
                        }
                    }
                    Mode::Palette => {
                        for &p in chunk {
                            let c = img.palette.get(p as usize).copied().unwrap_or([0; 3]);
                            s[0] += c[0] as u32;
                            s[1] += c[1] as u32;
                            s[2] += c[2] as u32;
                        }
                    }
                }
            }
        }
        for ((m, s), &c) in self.now.iter_mut().zip(&self.sums).zip(&self.counts) {
            *m = s.map(|v| v as f32 / c as f32);
        }
    }

    /// Connected areas of the moving cells (grown by one cell, 8-connected)
    /// as the bounding boxes of their moving cells; overlapping boxes
    /// merged; those whose share of the frame is outside `area` left out,
    /// then the largest [`MAX_REGIONS`] kept.
    fn find_areas(&mut self, area: (f32, f32)) {
        let (gw, gh) = (self.gw, self.gh);
        for y in 0..gh {
            for x in 0..gw {
                let mut any = false;
                for yy in y.saturating_sub(1)..(y + 2).min(gh) {
                    for xx in x.saturating_sub(1)..(x + 2).min(gw) {
                        any |= self.moving[yy * gw + xx];
                    }
                }
                self.grown[y * gw + x] = any;
            }
        }
        self.seen.iter_mut().for_each(|s| *s = false);
        for start in 0..gw * gh {
            if !self.grown[start] || self.seen[start] {
                continue;
            }
            self.seen[start] = true;
            self.stack.clear();
            self.stack.push(start as u32);
            let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
            let mut cells = 0u32;
            while let Some(i) = self.stack.pop() {
                let i = i as usize;
                let (x, y) = (i % gw, i / gw);
                if self.moving[i] {
                    cells += 1;
                    (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
                }
                for yy in y.saturating_sub(1)..(y + 2).min(gh) {
                    for xx in x.saturating_sub(1)..(x + 2).min(gw) {
                        let j = yy * gw + xx;
                        if self.grown[j] && !self.seen[j] {
                            self.seen[j] = true;
                            self.stack.push(j as u32);
                        }
                    }
                }
            }
            if cells < MIN_CELLS {
                continue;
            }
            let c = self.cell;
            let (px0, py0) = (x0 as u32 * c, y0 as u32 * c);
            let px1 = ((x1 as u32 + 1) * c).min(self.width);
            let py1 = ((y1 as u32 + 1) * c).min(self.height);
            self.regions.push(Rect::new(px0, py0, px1 - px0, py1 - py0));
        }
        merge_overlapping(&mut self.regions);
        let frame_area = (self.width as u64 * self.height as u64).max(1) as f32;
        self.regions.retain(|r| {
            let share = r.area() as f32 / frame_area;
            share >= area.0 && share <= area.1
        });
        self.regions
            .sort_unstable_by_key(|r| std::cmp::Reverse(r.area()));
        self.regions.truncate(MAX_REGIONS);
    }
}

/// Replaces rectangles that overlap by their union until none overlap.
fn merge_overlapping(rs: &mut Vec<Rect>) {
    super::regions::merge_all(rs, |a, b| a.overlap(b) > 0, |a, b| *a = a.union(&b));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uniform noise in -6..=6 (xorshift).
    struct Noise(u64);

    impl Noise {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % 13) as f32 - 6.0
        }
    }

    /// Regions of any size.
    const ALL: (f32, f32) = (0.0, 1.0);

    fn scene(w: u32, h: u32, rng: &mut Noise, gain: f32) -> DecodedImage {
        let mut img = DecodedImage::default();
        let data = img.reshape(w, h, Mode::Rgb);
        for y in 0..h as usize {
            for x in 0..w as usize {
                let base = 110.0 + 65.0 * x as f32 / w as f32;
                for k in 0..3 {
                    let v = base * gain + rng.next();
                    data[(y * w as usize + x) * 3 + k] = v.round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        img
    }

    fn paint(img: &mut DecodedImage, r: Rect, c: [u8; 3]) {
        let w = img.width as usize;
        for y in r.y..r.y + r.h {
            for x in r.x..r.x + r.w {
                let i = (y as usize * w + x as usize) * 3;
                img.data[i..i + 3].copy_from_slice(&c);
            }
        }
    }

    #[test]
    fn sensor_noise_and_the_lights_give_no_region_and_a_moving_square_one() {
        let mut rng = Noise(0x9e37_79b9_7f4a_7c15);
        let mut m = Motion::new();
        for _ in 0..30 {
            let img = scene(960, 540, &mut rng, 1.0);
            assert!(m.update(&img, ALL).is_empty());
        }
        // The lights: a gain over the whole view.
        let bright = scene(960, 540, &mut rng, 1.3);
        assert!(m.update(&bright, ALL).is_empty());
        assert!(!m.global_change);
        // A shadow over the left half: most cells change, no region.
        let mut shadow = scene(960, 540, &mut rng, 1.3);
        for row in shadow.data.chunks_exact_mut(960 * 3) {
            for v in &mut row[..480 * 3] {
                *v = (*v as f32 * 0.6) as u8;
            }
        }
        assert!(m.update(&shadow, ALL).is_empty());
        assert!(m.global_change);
        assert!(m.update(&scene(960, 540, &mut rng, 1.3), ALL).is_empty());
        assert!(m.update(&scene(960, 540, &mut rng, 1.3), ALL).is_empty());
        assert!(!m.global_change);
        // A green square (as bright as the grey behind it) moving right.
        for step in 0..5u32 {
            let mut img = scene(960, 540, &mut rng, 1.3);
            let obj = Rect::new(300 + 10 * step, 200, 70, 70);
            paint(&mut img, obj, [60, 200, 60]);
            let regions = m.update(&img, ALL);
            assert_eq!(regions.len(), 1, "step {step}: {regions:?}");
            let r = regions[0];
            assert!(r.contains(obj.centre()), "{r:?} {obj:?}");
            assert!(r.area() <= 2 * obj.area(), "{r:?} {obj:?}");
        }
        // It stops: still a region until the background takes it in.
        let mut still = 0;
        for _ in 0..100 {
            let mut img = scene(960, 540, &mut rng, 1.3);
            paint(&mut img, Rect::new(340, 200, 70, 70), [60, 200, 60]);
            if m.update(&img, ALL).is_empty() {
                break;
            }
            still += 1;
        }
        let steady = STEADY_FRAMES as i32;
        assert!((steady - 2..=steady).contains(&still), "{still}");
    }

    /// An object close to the camera covering a fifth of the view (and
    /// the lights changing with it) is a region, and so is a small object
    /// beside it: the whole view's change is fitted on the cells that fit
    /// it, not bent by the large one into a change of the whole view.
    #[test]
    fn a_large_object_near_the_camera_is_a_region_not_a_change_of_the_view() {
        let mut rng = Noise(0x2545_f491_4f6c_dd1d);
        let mut m = Motion::new();
        for _ in 0..5 {
            assert!(m.update(&scene(960, 540, &mut rng, 1.0), ALL).is_empty());
        }
        let near = Rect::new(40, 40, 440, 250);
        let small = Rect::new(700, 350, 48, 48);
        for (step, gain) in [1.0, 1.2].into_iter().enumerate() {
            let mut img = scene(960, 540, &mut rng, gain);
            paint(&mut img, near, [250, 250, 250]);
            paint(&mut img, small, [60, 200, 60]);
            let regions = m.update(&img, ALL).to_vec();
            assert!(!m.global_change, "step {step}");
            assert_eq!(regions.len(), 2, "step {step}: {regions:?}");
            assert!(regions[0].contains(near.centre()), "{regions:?}");
            assert!(regions[1].contains(small.centre()), "{regions:?}");
        }
    }

    /// `--max-area` leaves out large moving areas (swaying trees) before the
    /// largest regions are kept: nine of them do not push out the small
    /// object.
    #[test]
    fn sizes_outside_the_area_band_do_not_take_the_places_of_others() {
        let mut rng = Noise(0x1234_5678_9abc_def1);
        let mut m = Motion::new();
        assert!(m.update(&scene(960, 540, &mut rng, 1.0), ALL).is_empty());
        let trees: Vec<Rect> = (0..9)
            .map(|i| Rect::new(20 + 140 * (i % 3), 20 + 140 * (i / 3), 100, 100))
            .collect();
        let small = Rect::new(700, 400, 40, 40);
        for step in 0..3u32 {
            let mut img = scene(960, 540, &mut rng, 1.0);
            let sway = if step % 2 == 0 {
                [200, 60, 40]
            } else {
                [40, 60, 200]
            };
            for &t in &trees {
                paint(&mut img, t, sway);
            }
            paint(
                &mut img,
                Rect::new(small.x + 8 * step, small.y, 40, 40),
                [60, 200, 60],
            );
            let all = m.update(&img, ALL).to_vec();
            assert_eq!(all.len(), MAX_REGIONS, "step {step}: {all:?}");
            assert!(all.iter().all(|r| r.area() > 5000), "{all:?}");
        }
        let mut img = scene(960, 540, &mut rng, 1.0);
        for &t in &trees {
            paint(&mut img, t, [200, 60, 40]);
        }
        paint(
            &mut img,
            Rect::new(small.x + 24, small.y, 40, 40),
            [60, 200, 60],
        );
        let small_only = m.update(&img, (0.0, 0.01));
        assert_eq!(small_only.len(), 1, "{small_only:?}");
        assert!(small_only[0].x >= 700, "{small_only:?}");
    }

    #[test]
    fn overlapping_regions_are_merged_whatever_their_order() {
        let mut rs = vec![
            Rect::new(0, 0, 10, 10),
            Rect::new(20, 0, 10, 30),
            Rect::new(5, 20, 20, 10),
        ];
        merge_overlapping(&mut rs);
        assert_eq!(rs, [Rect::new(0, 0, 30, 30)]);
    }
}
