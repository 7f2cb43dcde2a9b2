//! Where in a frame `watch` looks: the whole frame (as `classify` sees an
//! image), the regions that moved, fixed tiles, or the user's zones.
//!
//! Here: the geometry (rectangles, the crops' squares, tiles), the modes,
//! the zones and their checks. The motion mask is `motion.rs`; what the
//! loop does with regions, `region_step.rs`.

use crate::watch::SettingError;
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

    /// The rectangle both cover (empty, at `self`'s corner, when they do
    /// not overlap).
    pub fn intersection(&self, o: &Rect) -> Rect {
        let (x, y) = (self.x.max(o.x), self.y.max(o.y));
        let (w, h) = (
            self.right().min(o.right()).saturating_sub(x),
            self.bottom().min(o.bottom()).saturating_sub(y),
        );
        if w == 0 || h == 0 {
            return Rect::new(self.x, self.y, 0, 0);
        }
        Rect::new(x, y, w, h)
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
    /// The regions that moved, and the last boxes of the objects being tracked.
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
            // Even-odd rule: crossings of a ray to the right.
            ZoneArea::Polygon(p) => crossings(p, py).filter(|&x| px < x).count() % 2 == 1,
        }
    }
}

/// Where the edges of polygon `p` cross the row `y = py` (an edge counts
/// once, its lower end in and its upper end out).
fn crossings(p: &[[f32; 2]], py: f32) -> impl Iterator<Item = f32> + '_ {
    (0..p.len()).filter_map(move |i| {
        let ([xi, yi], [xj, yj]) = (p[i], p[(i + p.len() - 1) % p.len()]);
        ((yi > py) != (yj > py)).then(|| (xj - xi) * (py - yi) / (yj - yi) + xi)
    })
}

/// Pixels of one row of a crop, `x0..x1` of row `y` (crop coordinates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub y: u32,
    pub x0: u32,
    pub x1: u32,
}

impl ZoneArea {
    /// The pixels of `crop` (source pixels) whose centres are outside the
    /// area, as row spans appended to `out`. `xs` is scratch for one row's
    /// edge crossings.
    pub fn outside_spans(&self, crop: Rect, xs: &mut Vec<f32>, out: &mut Vec<Span>) {
        let p = match self {
            ZoneArea::Polygon(p) => p,
            ZoneArea::Box(r) => {
                // Columns of the crop inside the box, for the rows inside it.
                let x0 = r.x.saturating_sub(crop.x).min(crop.w);
                let x1 = r.right().saturating_sub(crop.x).min(crop.w);
                for row in 0..crop.h {
                    let y = crop.y + row;
                    let inside = y >= r.y && y < r.bottom() && x0 < x1;
                    let (a, b) = if inside { (x0, x1) } else { (crop.w, crop.w) };
                    for (s, e) in [(0, a), (b, crop.w)] {
                        if s < e {
                            out.push(Span {
                                y: row,
                                x0: s,
                                x1: e,
                            });
                        }
                    }
                }
                return;
            }
        };
        for row in 0..crop.h {
            let py = (crop.y + row) as f32 + 0.5;
            // Even-odd rule, as `contains`.
            xs.clear();
            xs.extend(crossings(p, py));
            xs.sort_by(f32::total_cmp);
            // Inside from xs[0] to xs[1], xs[2] to xs[3], …: pixel x is
            // inside when its centre x + 0.5 is, i.e. x >= ceil(a - 0.5).
            let first = |a: f32| ((a - 0.5).ceil().max(0.0) as u32).saturating_sub(crop.x);
            let mut x = 0;
            for pair in xs.chunks_exact(2) {
                let (a, b) = (first(pair[0]).min(crop.w), first(pair[1]).min(crop.w));
                if a > x {
                    out.push(Span {
                        y: row,
                        x0: x,
                        x1: a,
                    });
                }
                x = x.max(b);
            }
            if x < crop.w {
                out.push(Span {
                    y: row,
                    x0: x,
                    x1: crop.w,
                });
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
    pub fn check_frame(&self, width: u32, height: u32) -> Result<(), SettingError> {
        if let RegionMode::Tiles { cols, rows } = self.mode {
            // Square tiles are at most the frame's shorter side.
            let side = width.min(height).max(1);
            let (need_c, need_r) = (width.div_ceil(side), height.div_ceil(side));
            if cols < need_c || rows < need_r {
                let (c, r) = (cols.max(need_c), rows.max(need_r));
                let instead = if c <= MAX_TILES && r <= MAX_TILES {
                    format!("use at least tiles:{c}x{r}")
                } else {
                    format!("it would take tiles:{c}x{r}, more than {MAX_TILES} a side: use --regions motion or full")
                };
                return Err(format!(
                    "--regions tiles:{cols}x{rows}: square tiles cannot cover the source's {width}x{height} frame ({instead})"
                )
                .into());
            }
        }
        for z in &self.zones {
            let b = z.area.bbox();
            if !b.within(width, height) {
                return Err(format!(
                    "zone {:?} ({},{} {}x{}) is not inside the source's {width}x{height} frame",
                    z.name, b.x, b.y, b.w, b.h
                )
                .into());
            }
        }
        match self.mode {
            RegionMode::Full => {
                let n: usize = self.zones.iter().map(|z| square_count(z.area.bbox())).sum();
                if n > MAX_ZONE_CROPS {
                    return Err(format!(
                        "the zones take {n} square crops a frame (a zone is classified in squares of its shorter side), more than {MAX_ZONE_CROPS}: make them squarer or fewer, or use --regions motion"
                    ).into());
                }
            }
            RegionMode::Tiles { cols, rows } if !self.zones.is_empty() => {
                let mut t = Vec::new();
                tiles(width, height, cols, rows, &mut t);
                let n = zone_tile_count(&self.zones, &t);
                if n > MAX_ZONE_CROPS {
                    return Err(format!(
                        "the zones take {n} crops a frame with tiles:{cols}x{rows} (each zone is covered by squares of the tiles' size), more than {MAX_ZONE_CROPS}: fewer or smaller zones, fewer tiles, or --regions motion"
                    ).into());
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// What a person should know about these regions on `width x height`
    /// frames (they fit: [`RegionOptions::check_frame`]) and their tiles
    /// `t` ([`tiles`] of the grid): a tile grid with more tiles along a
    /// side than its square tiles need (they would be copies, or no
    /// smaller).
    pub fn notes(&self, width: u32, height: u32, t: &[Rect], out: &mut Vec<String>) {
        out.clear();
        let RegionMode::Tiles { cols, rows } = self.mode else {
            return;
        };
        let Some(side) = t.first().map(|r| r.w) else {
            return;
        };
        // Tiles a side needs: one when a tile spans it, else each at most
        // its share of the side, larger by the overlap.
        let need = |extent: u32| {
            if side >= extent {
                1
            } else {
                (extent as f32 * (1.0 + TILE_OVERLAP) / side as f32).ceil() as u32
            }
        };
        let (nc, nr) = (need(width).min(cols), need(height).min(rows));
        if (nc, nr) != (cols, rows) {
            out.push(format!(
                "--regions tiles:{cols}x{rows} on {width}x{height} frames: its tiles are {side} px squares, so tiles:{nc}x{nr} cover the frame as well (the others would repeat them); more tiles along both sides make them smaller"
            ));
        }
    }
}

/// How many crops `zones` take with tiles `t`: each zone is covered by
/// squares of the tiles' side (its own shorter side when smaller), inside
/// it ([`zone_tiles`]).
pub fn zone_tile_count(zones: &[Zone], t: &[Rect]) -> usize {
    let side = t.first().map_or(1, |r| r.w);
    zones
        .iter()
        .map(|z| zone_tiles(z.area.bbox(), side).count())
        .sum()
}

/// The crops that cover zone box `r` with `--regions tiles` of `side` px:
/// squares of `side` (of `r`'s shorter side when that is smaller, as
/// [`squares`] cuts a zone), spread edge to edge over `r` and overlapping
/// by at least [`TILE_OVERLAP`], all inside `r`: a small object in a large
/// zone is seen at the tiles' scale, and nothing beside the zone is seen
/// in it.
pub fn zone_tiles(r: Rect, side: u32) -> impl Iterator<Item = Rect> {
    let s = side.min(r.w).min(r.h).max(1);
    let need = move |extent: u32| {
        if s >= extent {
            1
        } else {
            (extent as f32 * (1.0 + TILE_OVERLAP) / s as f32).ceil() as u32
        }
    };
    let (cols, rows) = (need(r.w), need(r.h));
    (0..rows * cols).map(move |k| {
        let (i, j) = (k % cols, k / cols);
        Rect::new(
            r.x + spread(i, cols, r.w, s),
            r.y + spread(j, rows, r.h, s),
            s,
            s,
        )
    })
}

/// The most crops zones take a frame (`--regions full`: their squares;
/// `tiles`: their squares of the tiles' size).
pub const MAX_ZONE_CROPS: usize = 64;

/// A region (a zone) is classified as itself (its middle square, as
/// `classify` crops an image) while its longer side is at most this many
/// times its shorter one; a longer one in several squares.
pub const ONE_SQUARE_STRETCH: f32 = 1.25;

/// How many squares [`squares`] cuts `r` into.
pub fn square_count(r: Rect) -> usize {
    let (long, short) = (r.w.max(r.h) as f32, r.w.min(r.h).max(1) as f32);
    if long <= ONE_SQUARE_STRETCH * short {
        1
    } else {
        (long * (1.0 + TILE_OVERLAP) / short).ceil() as usize
    }
}

/// The crops that cover region `r`: `r` itself when it is about square
/// ([`ONE_SQUARE_STRETCH`]), else squares of its shorter side along its
/// longer one, spread edge to edge, overlapping by at least
/// [`TILE_OVERLAP`] (a strip along a driveway is watched whole, not in its
/// middle square only).
pub fn squares(r: Rect) -> impl Iterator<Item = Rect> {
    let n = square_count(r) as u32;
    let side = r.w.min(r.h);
    (0..n).map(move |i| match n {
        1 => r,
        _ if r.w >= r.h => Rect::new(r.x + spread(i, n, r.w, side), r.y, side, side),
        _ => Rect::new(r.x, r.y + spread(i, n, r.h, side), side, side),
    })
}

/// Where the `i`-th of `n` squares of `side` starts along an `extent`
/// (at least `side`) when they are spread evenly from edge to edge (one:
/// in the middle).
fn spread(i: u32, n: u32, extent: u32, side: u32) -> u32 {
    if n == 1 {
        (extent - side) / 2
    } else {
        ((extent - side) as f64 * i as f64 / (n - 1) as f64).round() as u32
    }
}

/// Merges items of `items` that `mergeable` says go together (`merge`
/// folds the second into the first, which stays) until no two do, in
/// place (no allocation).
pub fn merge_all<T>(
    items: &mut Vec<T>,
    mergeable: impl Fn(&T, &T) -> bool,
    merge: impl Fn(&mut T, T),
) {
    let mut i = 0;
    while i < items.len() {
        let mut merged = false;
        let mut j = i + 1;
        while j < items.len() {
            if mergeable(&items[i], &items[j]) {
                let b = items.swap_remove(j);
                merge(&mut items[i], b);
                merged = true;
            } else {
                j += 1;
            }
        }
        // A merged item may now go with one before it: look again from
        // the start.
        i = if merged { 0 } else { i + 1 };
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
    if width == 0 || height == 0 {
        return;
    }
    let share = width.div_ceil(cols).max(height.div_ceil(rows)) as f32;
    let side = ((share * (1.0 + TILE_OVERLAP)).round() as u32).clamp(1, width.min(height));
    for r in 0..rows {
        for c in 0..cols {
            let t = Rect::new(
                spread(c, cols, width, side),
                spread(r, rows, height, side),
                side,
                side,
            );
            // More tiles along a side than it has room for are copies of
            // one another: each is classified once.
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spans outside a polygon are the pixels whose centres
    /// `contains` puts outside, for a triangle, a concave shape and a bow
    /// tie, over crops at, across and beyond their edges.
    #[test]
    fn outside_spans_are_the_pixels_outside_the_polygon() {
        let shapes = [
            vec![[0.0, 100.0], [480.0, 540.0], [0.0, 540.0]],
            vec![
                [10.0, 10.0],
                [90.0, 10.0],
                [50.0, 50.0],
                [90.0, 90.0],
                [10.0, 90.0],
            ],
            vec![[0.0, 0.0], [100.0, 0.0], [0.0, 100.0], [100.0, 100.0]],
            vec![[20.3, 5.7], [77.1, 33.3], [41.9, 95.5]],
        ];
        let crops = [
            Rect::new(0, 0, 100, 100),
            Rect::new(0, 100, 480, 440),
            Rect::new(30, 20, 41, 57),
            Rect::new(200, 300, 64, 64),
        ];
        let (mut xs, mut spans) = (Vec::new(), Vec::new());
        for p in &shapes {
            let area = ZoneArea::Polygon(p.clone());
            for crop in crops {
                spans.clear();
                area.outside_spans(crop, &mut xs, &mut spans);
                let mut outside = vec![false; (crop.w * crop.h) as usize];
                for s in &spans {
                    assert!(s.x0 < s.x1 && s.x1 <= crop.w && s.y < crop.h, "{s:?}");
                    for x in s.x0..s.x1 {
                        let o = &mut outside[(s.y * crop.w + x) as usize];
                        assert!(!*o, "{s:?} overlaps another span");
                        *o = true;
                    }
                }
                for y in 0..crop.h {
                    for x in 0..crop.w {
                        let centre = ((crop.x + x) as f32 + 0.5, (crop.y + y) as f32 + 0.5);
                        assert_eq!(
                            outside[(y * crop.w + x) as usize],
                            !area.contains(centre),
                            "{p:?} {crop:?} at {x},{y}"
                        );
                    }
                }
            }
        }
        spans.clear();
        ZoneArea::Box(Rect::new(0, 0, 9, 9)).outside_spans(
            Rect::new(0, 0, 9, 9),
            &mut xs,
            &mut spans,
        );
        assert!(spans.is_empty());
    }

    #[test]
    fn a_tile_grid_that_cannot_cover_the_frame_is_named() {
        let r = RegionOptions {
            mode: RegionMode::Tiles { cols: 1, rows: 1 },
            ..Default::default()
        };
        let e = r.check_frame(960, 540).unwrap_err().0;
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

    /// A zone far from square is classified in squares that cover it
    /// (a strip along a driveway, not its middle square only); too many
    /// squares are refused; tile grids with copies are said; with tiles, a
    /// zone takes the tiles it overlaps.
    #[test]
    fn long_zones_are_squares_and_tiles_are_not_copies() {
        let out: Vec<Rect> = squares(Rect::new(0, 150, 960, 100)).collect();
        assert_eq!(out.len(), 12);
        for x in (0..960).step_by(5) {
            assert!(out.iter().any(|r| r.contains((x as f32, 200.0))), "{x}");
        }
        assert!(out
            .iter()
            .all(|r| r.w == 100 && r.h == 100 && r.within(960, 250)));
        let out: Vec<Rect> = squares(Rect::new(10, 20, 110, 100)).collect();
        assert_eq!(out, [Rect::new(10, 20, 110, 100)]);
        let out: Vec<Rect> = squares(Rect::new(10, 20, 100, 300)).collect();
        assert_eq!(out.len(), 4);
        assert_eq!(out[3], Rect::new(10, 220, 100, 100));
        let zone = |name: &str, r: Rect| Zone {
            name: name.into(),
            area: ZoneArea::Box(r),
            watch: None,
        };
        let thin = RegionOptions {
            zones: (0..6)
                .map(|i| zone(&format!("z{i}"), Rect::new(0, i * 10, 960, 10)))
                .collect(),
            ..Default::default()
        };
        let e = thin.check_frame(960, 540).unwrap_err().0;
        assert!(e.contains("696 square crops"), "{e}");
        // Portrait frames with the default grid: two tiles, not six.
        let mut t = Vec::new();
        tiles(540, 960, 3, 2, &mut t);
        assert_eq!(t.len(), 2, "{t:?}");
        let mut notes = Vec::new();
        let tiled = RegionOptions {
            mode: RegionMode::Tiles { cols: 3, rows: 2 },
            zones: vec![zone("corner", Rect::new(0, 0, 60, 60))],
            ..Default::default()
        };
        tiled.notes(540, 960, &t, &mut notes);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("tiles:1x2"), "{notes:?}");
        // With zones, each zone is covered by squares of the tiles' side
        // inside it: a small corner zone one square, a zone across the
        // middle (tiles of 384 px, the zone 300 px tall) three squares of 300; too many is refused, and a
        // grid that would need more than MAX_TILES a side is not suggested.
        tiles(960, 540, 3, 2, &mut t);
        assert_eq!(t[0].w, 384);
        assert_eq!(zone_tile_count(&tiled.zones, &t), 1);
        let r = Rect::new(200, 100, 560, 300);
        let z: Vec<Rect> = zone_tiles(r, 384).collect();
        assert_eq!(
            z,
            [200, 330, 460].map(|x| Rect::new(x, 100, 300, 300)),
            "squares of the zone's shorter side, overlapping"
        );
        let r = Rect::new(100, 50, 800, 450);
        let z: Vec<Rect> = zone_tiles(r, 384).collect();
        assert_eq!(z.len(), 3 * 2, "{z:?}");
        for y in (50..500).step_by(5) {
            for x in (100..900).step_by(5) {
                assert!(
                    z.iter().any(|q| q.contains((x as f32, y as f32))),
                    "{x},{y}"
                );
            }
        }
        assert!(
            z.iter()
                .all(|q| q.w == 384 && q.h == 384 && r.union(q) == r),
            "{z:?}"
        );
        let many = RegionOptions {
            mode: RegionMode::Tiles { cols: 8, rows: 8 },
            zones: (0..4)
                .map(|i| zone(&format!("z{i}"), Rect::new(0, 0, 900, 500)))
                .collect(),
            ..Default::default()
        };
        let e = many.check_frame(960, 960).unwrap_err().0;
        assert!(e.contains("160 crops") && e.contains("more than 64"), "{e}");
        let long = RegionOptions {
            mode: RegionMode::Tiles { cols: 3, rows: 2 },
            ..Default::default()
        };
        let e = long.check_frame(3, 2000).unwrap_err().0;
        assert!(
            e.contains("--regions motion or full") && !e.contains("use at least"),
            "{e}"
        );
        let e = long.check_frame(500, 100).unwrap_err().0;
        assert!(e.contains("use at least tiles:5x2"), "{e}");
    }

    /// A box zone's outside spans are the crop's pixels beside it.
    #[test]
    fn a_box_zone_paints_what_is_beside_it() {
        let z = ZoneArea::Box(Rect::new(10, 20, 30, 40));
        let mut xs = Vec::new();
        let crop = Rect::new(0, 0, 50, 70);
        let mut out = Vec::new();
        z.outside_spans(crop, &mut xs, &mut out);
        for y in 0..70 {
            for x in 0..50 {
                let painted = out.iter().any(|s| s.y == y && s.x0 <= x && x < s.x1);
                let inside = z.contains((x as f32 + 0.5, y as f32 + 0.5));
                assert_eq!(painted, !inside, "{x},{y}");
            }
        }
        out.clear();
        z.outside_spans(Rect::new(15, 25, 10, 10), &mut xs, &mut out);
        assert!(out.is_empty(), "{out:?}");
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
