//! Where in a frame `watch` looks: the whole frame (as `classify` sees an
//! image), the regions that moved, fixed tiles, or the user's zones.
//!
//! Motion is found on a grid of cells (8 px on a 960x540 frame): each
//! cell's mean colour is compared with the background's (a running mean of
//! the still scene), after the whole view's change is taken out (a gain and
//! an offset per channel, fitted over all cells: a camera's exposure, a
//! cloud, the lights). Averaging a cell's pixels leaves little of a
//! sensor's per-pixel noise, so a still scene gives no cell; a change over
//! most of the frame gives no region at all. A cell that differs from the
//! background but stays unchanged for [`STEADY_FRAMES`] becomes background
//! (an object that stopped: its track goes on at its last box); a moving
//! object's cells keep changing, so it leaves no trail. Cells that differ,
//! grown by one cell, make connected areas whose bounding boxes are the
//! regions. Everything is sized at the first frame (and again only when
//! the frame size changes): no allocation per frame.

use crate::decode::DecodedImage;
use crate::preprocess::Mode;

/// A rectangle in source pixels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl Rect {
    pub fn new(x: u32, y: u32, w: u32, h: u32) -> Rect {
        Rect { x, y, w, h }
    }

    pub fn area(&self) -> u64 {
        self.w as u64 * self.h as u64
    }

    pub fn centre(&self) -> (f32, f32) {
        (
            self.x as f32 + self.w as f32 / 2.0,
            self.y as f32 + self.h as f32 / 2.0,
        )
    }

    fn right(&self) -> u32 {
        self.x + self.w
    }

    fn bottom(&self) -> u32 {
        self.y + self.h
    }

    /// The area both cover.
    pub fn overlap(&self, o: &Rect) -> u64 {
        let w = self.right().min(o.right()).saturating_sub(self.x.max(o.x));
        let h = self
            .bottom()
            .min(o.bottom())
            .saturating_sub(self.y.max(o.y));
        w as u64 * h as u64
    }

    /// Intersection over union (0 for two empty rectangles).
    pub fn iou(&self, o: &Rect) -> f32 {
        let i = self.overlap(o);
        let u = self.area() + o.area() - i;
        if u == 0 {
            0.0
        } else {
            i as f32 / u as f32
        }
    }

    /// The smallest rectangle holding both.
    pub fn union(&self, o: &Rect) -> Rect {
        let (x, y) = (self.x.min(o.x), self.y.min(o.y));
        Rect::new(
            x,
            y,
            self.right().max(o.right()) - x,
            self.bottom().max(o.bottom()) - y,
        )
    }

    pub fn contains(&self, (px, py): (f32, f32)) -> bool {
        px >= self.x as f32
            && py >= self.y as f32
            && px < self.right() as f32
            && py < self.bottom() as f32
    }

    /// Whether it lies inside a `width x height` frame.
    pub fn within(&self, width: u32, height: u32) -> bool {
        self.w > 0 && self.h > 0 && self.right() <= width && self.bottom() <= height
    }

    /// `[x, y, w, h]`, as events carry it.
    pub fn to_array(self) -> [u32; 4] {
        [self.x, self.y, self.w, self.h]
    }
}

/// How `watch` chooses what to classify in a frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RegionMode {
    /// The whole frame, as `classify` sees an image.
    #[default]
    Full,
    /// The regions that moved, and the places of the objects being tracked.
    Motion,
    /// `cols x rows` overlapping square tiles covering the frame.
    Tiles { cols: u32, rows: u32 },
}

/// The tiles `tiles` means.
pub const DEFAULT_TILES: (u32, u32) = (3, 2);
/// The most tiles in a row or a column.
pub const MAX_TILES: u32 = 8;

impl std::str::FromStr for RegionMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("--regions {s:?}: expected full, motion, tiles or tiles:CxR (C and R from 1 to {MAX_TILES})")
        };
        match s {
            "full" => Ok(RegionMode::Full),
            "motion" => Ok(RegionMode::Motion),
            "tiles" => Ok(RegionMode::Tiles {
                cols: DEFAULT_TILES.0,
                rows: DEFAULT_TILES.1,
            }),
            _ => {
                let grid = s.strip_prefix("tiles:").ok_or_else(bad)?;
                let (c, r) = grid.split_once(['x', 'X']).ok_or_else(bad)?;
                let (cols, rows): (u32, u32) =
                    (c.parse().map_err(|_| bad())?, r.parse().map_err(|_| bad())?);
                if !(1..=MAX_TILES).contains(&cols) || !(1..=MAX_TILES).contains(&rows) {
                    return Err(bad());
                }
                Ok(RegionMode::Tiles { cols, rows })
            }
        }
    }
}

impl std::fmt::Display for RegionMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegionMode::Full => f.write_str("full"),
            RegionMode::Motion => f.write_str("motion"),
            RegionMode::Tiles { cols, rows } => write!(f, "tiles:{cols}x{rows}"),
        }
    }
}

/// A part of the view a user names (`--zone porch=0,300,480,240`): a
/// detection counts for the zone when its box's centre is inside it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Zone {
    pub name: String,
    pub area: ZoneArea,
    /// The zone's own watch list, as (index into the watched labels,
    /// threshold); `None`: every watched label at its own threshold.
    pub watch: Option<Vec<(usize, f32)>>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ZoneArea {
    Box(Rect),
    /// At least three corners, in source pixels.
    Polygon(Vec<[f32; 2]>),
}

impl ZoneArea {
    /// The smallest rectangle holding the area.
    pub fn bbox(&self) -> Rect {
        match self {
            ZoneArea::Box(r) => *r,
            ZoneArea::Polygon(p) => {
                let lo = |k: usize| {
                    p.iter()
                        .map(|c| c[k])
                        .fold(f32::INFINITY, f32::min)
                        .max(0.0)
                        .floor() as u32
                };
                let hi = |k: usize| p.iter().map(|c| c[k]).fold(0f32, f32::max).ceil() as u32;
                let (x, y) = (lo(0), lo(1));
                Rect::new(x, y, hi(0).saturating_sub(x), hi(1).saturating_sub(y))
            }
        }
    }

    pub fn contains(&self, (px, py): (f32, f32)) -> bool {
        match self {
            ZoneArea::Box(r) => r.contains((px, py)),
            ZoneArea::Polygon(p) => {
                // Even-odd rule: crossings of a ray to the right.
                let mut inside = false;
                let mut j = p.len() - 1;
                for i in 0..p.len() {
                    let ([xi, yi], [xj, yj]) = (p[i], p[j]);
                    if (yi > py) != (yj > py) && px < (xj - xi) * (py - yi) / (yj - yi) + xi {
                        inside = !inside;
                    }
                    j = i;
                }
                inside
            }
        }
    }
}

impl Zone {
    /// The threshold watched label `watched` needs in this zone (`None`:
    /// the zone does not watch it); `default` is the label's own.
    pub fn threshold(&self, watched: usize, default: f32) -> Option<f32> {
        match &self.watch {
            None => Some(default),
            Some(list) => list.iter().find(|(w, _)| *w == watched).map(|(_, t)| *t),
        }
    }
}

/// Where `watch` looks, and what it ignores.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RegionOptions {
    pub mode: RegionMode,
    pub zones: Vec<Zone>,
    /// Motion regions smaller than this fraction of the frame are ignored.
    pub min_area: f32,
    /// Motion regions larger than this fraction of the frame are ignored.
    pub max_area: f32,
}

impl Default for RegionOptions {
    fn default() -> Self {
        RegionOptions {
            mode: RegionMode::Full,
            zones: Vec::new(),
            min_area: 0.0,
            max_area: 1.0,
        }
    }
}

impl RegionOptions {
    /// The whole frame and no zone: `watch` as `classify` sees a frame.
    pub fn whole_frame(&self) -> bool {
        self.mode == RegionMode::Full && self.zones.is_empty()
    }

    /// The first zone that does not lie inside a `width x height` frame, or
    /// a tile grid that cannot cover it, as a one-line error.
    pub fn check_frame(&self, width: u32, height: u32) -> Result<(), String> {
        if let RegionMode::Tiles { cols, rows } = self.mode {
            // Square tiles are at most the frame's shorter side.
            let side = width.min(height).max(1);
            let (need_c, need_r) = (width.div_ceil(side), height.div_ceil(side));
            if cols < need_c || rows < need_r {
                return Err(format!(
                    "--regions tiles:{cols}x{rows}: square tiles cannot cover the source's {width}x{height} frame (use at least tiles:{}x{})",
                    cols.max(need_c),
                    rows.max(need_r)
                ));
            }
        }
        for z in &self.zones {
            let b = z.area.bbox();
            if !b.within(width, height) {
                return Err(format!(
                    "zone {:?} ({},{} {}x{}) is not inside the source's {width}x{height} frame",
                    z.name, b.x, b.y, b.w, b.h
                ));
            }
        }
        Ok(())
    }
}

/// Context kept around a region when it is cropped for the encoder, per
/// side, as a fraction of the region's longer side: the model sees the
/// object at about 60 % of its input, as CLIP's training photos show things.
pub const CROP_MARGIN: f32 = 0.3;

/// The square crop the encoder sees for region `r`: `r`'s longer side plus
/// [`CROP_MARGIN`] on each side, centred on `r`, moved (and at most shrunk
/// to the frame's shorter side) to lie inside the `width x height` frame.
pub fn context_square(r: Rect, width: u32, height: u32) -> Rect {
    let long = r.w.max(r.h) as f32;
    let side = ((long * (1.0 + 2.0 * CROP_MARGIN)).round() as u32)
        .max(1)
        .min(width.min(height));
    let (cx, cy) = r.centre();
    let place = |c: f32, extent: u32| -> u32 {
        let lo = (c - side as f32 / 2.0).round().max(0.0) as u32;
        lo.min(extent - side)
    };
    Rect::new(place(cx, width), place(cy, height), side, side)
}

/// Overlap between neighbouring tiles, as a fraction of a tile's side
/// (at least): an object on a tile's edge is whole in its neighbour.
pub const TILE_OVERLAP: f32 = 0.2;

/// `cols x rows` square tiles covering a `width x height` frame, each
/// [`TILE_OVERLAP`] larger than its share (at most the frame's shorter
/// side), spread evenly from edge to edge.
pub fn tiles(width: u32, height: u32, cols: u32, rows: u32, out: &mut Vec<Rect>) {
    out.clear();
    let share = width.div_ceil(cols).max(height.div_ceil(rows)) as f32;
    let side = ((share * (1.0 + TILE_OVERLAP)).round() as u32).clamp(1, width.min(height));
    let at = |i: u32, n: u32, extent: u32| -> u32 {
        if n == 1 {
            (extent - side) / 2
        } else {
            ((extent - side) as f64 * i as f64 / (n - 1) as f64).round() as u32
        }
    };
    for r in 0..rows {
        for c in 0..cols {
            out.push(Rect::new(
                at(c, cols, width),
                at(r, rows, height),
                side,
                side,
            ));
        }
    }
}

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
    /// Per cell: the mean colour, this frame and the previous one.
    now: Vec<[f32; 3]>,
    /// Per cell: the previous frame's mean colour.
    before: Vec<[f32; 3]>,
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
    /// Whether the last frame was a change of the whole view.
    pub global_change: bool,
}

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
        self.before = vec![[0.0; 3]; n];
        self.steady = vec![0; n];
        self.background = vec![[0.0; 3]; n];
        self.moving = vec![false; n];
        self.grown = vec![false; n];
        self.seen = vec![false; n];
        self.stack = Vec::with_capacity(n);
        self.regions = Vec::with_capacity(n);
        self.have_background = false;
    }

    /// Forgets the background (after a gap in the source).
    pub fn reset(&mut self) {
        self.have_background = false;
    }

    /// The regions of `img` that differ from the background, largest
    /// first (none for the first frame, which is taken as the background).
    pub fn update(&mut self, img: &DecodedImage) -> &[Rect] {
        if (img.width, img.height, img.mode) != (self.width, self.height, self.mode)
            || self.sums.is_empty()
        {
            self.resize(img);
        }
        self.regions.clear();
        self.global_change = false;
        if img.width == 0 || img.height == 0 {
            return &self.regions;
        }
        self.cell_means(img);
        if !self.have_background {
            self.background.copy_from_slice(&self.now);
            self.before.copy_from_slice(&self.now);
            self.steady.fill(0);
            self.have_background = true;
            return &self.regions;
        }
        let n = self.now.len();
        // The whole view's change, per channel: now = gain * background +
        // offset (least squares over the cells), taken out before the threshold.
        let mut fit = [(1f32, 0f32); 3];
        for (k, f) in fit.iter_mut().enumerate() {
            let (mut sx, mut sy, mut sxx, mut sxy) = (0f64, 0f64, 0f64, 0f64);
            for (a, b) in self.now.iter().zip(&self.background) {
                let (x, y) = (b[k] as f64, a[k] as f64);
                sx += x;
                sy += y;
                sxx += x * x;
                sxy += x * y;
            }
            let nn = n as f64;
            let var = sxx - sx * sx / nn;
            let gain = if var > nn {
                ((sxy - sx * sy / nn) / var).clamp(0.25, 4.0)
            } else {
                1.0
            };
            *f = (gain as f32, ((sy - gain * sx) / nn) as f32);
        }
        let mut count = 0usize;
        for i in 0..n {
            let (a, b) = (self.now[i], &mut self.background[i]);
            let mut d = 0f32;
            let mut changed = 0f32;
            for k in 0..3 {
                b[k] = fit[k].0 * b[k] + fit[k].1;
                d = d.max((a[k] - b[k]).abs());
                changed = changed.max((a[k] - self.before[i][k]).abs());
            }
            self.steady[i] = if changed > MOTION_LEVEL {
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
        self.before.copy_from_slice(&self.now);
        if count as f32 > GLOBAL_CHANGE * n as f32 {
            self.global_change = true;
            self.background.copy_from_slice(&self.now);
            return &self.regions;
        }
        if count == 0 {
            return &self.regions;
        }
        self.find_areas();
        &self.regions
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
    /// as the bounding boxes of their moving cells; overlapping boxes merged.
    fn find_areas(&mut self) {
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
        self.regions
            .sort_unstable_by_key(|r| std::cmp::Reverse(r.area()));
        self.regions.truncate(MAX_REGIONS);
    }
}

/// Replaces rectangles that overlap by their union until none overlap.
fn merge_overlapping(rs: &mut Vec<Rect>) {
    let mut i = 0;
    while i < rs.len() {
        let mut merged = false;
        let mut j = i + 1;
        while j < rs.len() {
            if rs[i].overlap(&rs[j]) > 0 {
                rs[i] = rs[i].union(&rs[j]);
                rs.swap_remove(j);
                merged = true;
            } else {
                j += 1;
            }
        }
        // A union may now overlap one before it: look again from the start.
        i = if merged { 0 } else { i + 1 };
    }
}

/// Draws `r` on an RGB image as a 3-pixel yellow frame (clipped).
pub fn draw_box(rgb: &mut [u8], width: u32, height: u32, r: Rect) {
    const COLOR: [u8; 3] = [255, 220, 0];
    const THICK: u32 = 3;
    let (w, h) = (width as usize, height as usize);
    let x1 = (r.x + r.w).min(width) as usize;
    let y1 = (r.y + r.h).min(height) as usize;
    let (x0, y0) = ((r.x as usize).min(w), (r.y as usize).min(h));
    let mut put = |x: usize, y: usize| {
        let i = 3 * (y * w + x);
        rgb[i..i + 3].copy_from_slice(&COLOR);
    };
    for y in y0..y1 {
        for x in x0..x1 {
            let edge = x < x0 + THICK as usize
                || x + THICK as usize >= x1
                || y < y0 + THICK as usize
                || y + THICK as usize >= y1;
            if edge {
                put(x, y);
            }
        }
    }
}

/// Scale of [`draw_label`]'s 8x8 glyphs.
const LABEL_SCALE: usize = 2;

/// Writes `text` (ASCII; anything else as `?`) in yellow on a dark band
/// just above `r` (inside its top when there is no room above; moved left
/// to stay in the frame), clipped to the `width x height` RGB image.
pub fn draw_label(rgb: &mut [u8], width: u32, height: u32, r: Rect, text: &str) {
    const INK: [u8; 3] = [255, 220, 0];
    const PAPER: [u8; 3] = [20, 20, 20];
    let (w, h) = (width as usize, height as usize);
    let glyph = 8 * LABEL_SCALE;
    let band = glyph + 2;
    let y0 = if r.y as usize >= band {
        r.y as usize - band
    } else {
        r.y as usize
    };
    let chars = text.chars().count();
    // Moved left so that the text stays in the frame.
    let x0 = (r.x as usize).min(w.saturating_sub(chars * glyph + 2));
    for y in y0..(y0 + band).min(h) {
        for x in x0..(x0 + chars * glyph + 2).min(w) {
            let i = 3 * (y * w + x);
            rgb[i..i + 3].copy_from_slice(&PAPER);
        }
    }
    for (k, c) in text.chars().enumerate() {
        let rows = font8x8::legacy::BASIC_LEGACY[if c.is_ascii() {
            c as usize
        } else {
            b'?' as usize
        }];
        for (gy, bits) in rows.iter().enumerate() {
            for gx in 0..8 {
                if bits >> gx & 1 == 0 {
                    continue;
                }
                for sy in 0..LABEL_SCALE {
                    for sx in 0..LABEL_SCALE {
                        let x = x0 + 1 + k * glyph + gx * LABEL_SCALE + sx;
                        let y = y0 + 1 + gy * LABEL_SCALE + sy;
                        if x < w && y < h {
                            let i = 3 * (y * w + x);
                            rgb[i..i + 3].copy_from_slice(&INK);
                        }
                    }
                }
            }
        }
    }
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
            assert!(m.update(&img).is_empty());
        }
        // The lights: a gain over the whole view.
        let bright = scene(960, 540, &mut rng, 1.3);
        assert!(m.update(&bright).is_empty());
        assert!(!m.global_change);
        // A shadow over the left half: most cells change, no region.
        let mut shadow = scene(960, 540, &mut rng, 1.3);
        for row in shadow.data.chunks_exact_mut(960 * 3) {
            for v in &mut row[..480 * 3] {
                *v = (*v as f32 * 0.6) as u8;
            }
        }
        assert!(m.update(&shadow).is_empty());
        assert!(m.global_change);
        assert!(m.update(&scene(960, 540, &mut rng, 1.3)).is_empty());
        assert!(m.update(&scene(960, 540, &mut rng, 1.3)).is_empty());
        assert!(!m.global_change);
        // A green square (as bright as the grey behind it) moving right.
        for step in 0..5u32 {
            let mut img = scene(960, 540, &mut rng, 1.3);
            let obj = Rect::new(300 + 10 * step, 200, 70, 70);
            paint(&mut img, obj, [60, 200, 60]);
            let regions = m.update(&img);
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
            if m.update(&img).is_empty() {
                break;
            }
            still += 1;
        }
        let steady = STEADY_FRAMES as i32;
        assert!((steady - 2..=steady).contains(&still), "{still}");
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

    #[test]
    fn a_tile_grid_that_cannot_cover_the_frame_is_named() {
        let r = RegionOptions {
            mode: RegionMode::Tiles { cols: 1, rows: 1 },
            ..Default::default()
        };
        let e = r.check_frame(960, 540).unwrap_err();
        assert!(e.contains("tiles:1x1") && e.contains("tiles:2x1"), "{e}");
        assert!(r.check_frame(540, 540).is_ok());
    }

    #[test]
    fn region_modes_parse_and_bad_ones_are_named() {
        assert_eq!("full".parse(), Ok(RegionMode::Full));
        assert_eq!("motion".parse(), Ok(RegionMode::Motion));
        assert_eq!("tiles".parse(), Ok(RegionMode::Tiles { cols: 3, rows: 2 }));
        assert_eq!(
            "tiles:4x1".parse(),
            Ok(RegionMode::Tiles { cols: 4, rows: 1 })
        );
        for bad in ["tiles:0x2", "tiles:3x", "tiles:9x1", "boxes", "tiles3x2"] {
            let e = bad.parse::<RegionMode>().unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn tiles_cover_the_frame_and_crops_stay_inside() {
        let mut t = Vec::new();
        tiles(960, 540, 3, 2, &mut t);
        assert_eq!(t.len(), 6);
        for r in &t {
            assert!(r.within(960, 540) && r.w == r.h, "{r:?}");
        }
        for y in (0..540).step_by(7) {
            for x in (0..960).step_by(7) {
                assert!(t.iter().any(|r| r.contains((x as f32, y as f32))));
            }
        }
        for r in [
            Rect::new(0, 0, 10, 10),
            Rect::new(900, 500, 60, 40),
            Rect::new(100, 100, 700, 100),
        ] {
            let c = context_square(r, 960, 540);
            assert!(c.within(960, 540) && c.w == c.h, "{r:?} -> {c:?}");
            assert!(c.contains(r.centre()) || c.w == 540, "{r:?} -> {c:?}");
        }
    }
}
