//! What the loop does with regions (`--regions motion|tiles`, zones): each
//! region of a frame (a motion region, a followed object's last box, a
//! tile, a zone) is cut into a reused buffer, classified as `classify`
//! would classify an image of it, and its detection fed to the tracks.

use std::time::Instant;

use super::motion::{Motion, MAX_REGIONS};
use super::regions::{self, Rect, RegionMode};
use super::track::{self, Detection, Tracks};
use super::{classify_counted, Frame, WatchError, Watcher};
use crate::decode::DecodedImage;
use crate::watch::detect::Transition;

/// A region to classify: `rect` is where the object is (the event's box),
/// `crop` what the encoder sees.
#[derive(Debug, Clone, Copy)]
pub(super) struct Proposal {
    rect: Rect,
    pub(super) crop: Rect,
    track_slot: Option<usize>,
    /// The zone this region is (with whole-frame zones).
    zone: Option<usize>,
    /// The crop's pixels outside its zone's polygon:
    /// `RegionState::outside[spans.0..spans.1]`.
    spans: (usize, usize),
    /// A seed tile (motion): its detection is a new object only where no
    /// track of its label is (its box is the tile's, not the object's).
    seed: bool,
    /// `rect` is a coarse box (a seed tile's, or a track's that has
    /// only such), not the object's box.
    coarse: bool,
}

impl Proposal {
    /// A region of no zone and no track: `rect` where the object is,
    /// `crop` what the encoder sees.
    fn at(rect: Rect, crop: Rect) -> Proposal {
        Proposal {
            rect,
            crop,
            track_slot: None,
            zone: None,
            spans: (0, 0),
            seed: false,
            coarse: false,
        }
    }
}

/// The watcher's state for regions: buffers sized at the first frame.
#[derive(Debug)]
pub(super) struct RegionState {
    pub(super) motion: Motion,
    pub(super) tiles: Vec<Rect>,
    /// With zones: each zone's crops, the squares that cover it (the whole
    /// frame) or the tiles that overlap it (tiles), each with the range of
    /// `outside` that is its pixels outside the zone.
    pub(super) zone_proposals: Vec<Proposal>,
    /// With motion: the tiles looked at once after the background is
    /// learnt (what stands in view then is no motion), [`SEEDS_PER_FRAME`]
    /// a frame from `seed_next` on.
    pub(super) seed_tiles: Vec<Rect>,
    pub(super) seed_next: usize,
    /// Tiles whose seed's track took another object's own box (the frame
    /// it did): looked at again once no followed object's box is in them
    /// (what the seed saw may have been something else, still there).
    pub(super) rechecks: Vec<(Rect, u64)>,
    /// Row spans of zone crops outside their zones, painted the encoder's
    /// mean colour before a crop is classified: what is beside a zone, in
    /// its crop, is not seen as in it.
    pub(super) outside: Vec<regions::Span>,
    /// The mean colour of the encoder's preprocessing, as RGB bytes.
    pub(super) fill: [u8; 3],
    /// The frame size the tiles and the zones were checked for.
    pub(super) sized_for: (u32, u32),
    /// A later frame size they do not fit, whose frames are skipped
    /// ((0, 0): none since the last frame that fitted).
    pub(super) refused: (u32, u32),
    pub(super) proposals: Vec<Proposal>,
    pub(super) detections: Vec<Detection>,
    pub(super) transitions: Vec<(usize, Transition)>,
    pub(super) tracks: Tracks,
    pub(super) crop_pixels: DecodedImage,
}

/// Most regions classified in one frame: the motion regions, the seed
/// tiles and the tracks' last boxes, the tiles, or the zones.
pub(super) const MAX_PROPOSALS: usize = MAX_REGIONS + track::MAX_TRACKS + 64;

/// Seed tiles looked at a frame after the motion background is learnt
/// (spread over frames: the start's first frame is not held up by them).
pub(super) const SEEDS_PER_FRAME: usize = 2;

/// A seed tile's box: the part of the tile whose context square is the
/// tile (a track it starts is looked at again through the same crop).
fn seed_box(t: Rect) -> Rect {
    let side =
        ((t.w as f32 / (1.0 + 2.0 * regions::CROP_MARGIN)).round() as u32).clamp(1, t.w.max(1));
    let inset = t.w.saturating_sub(side) / 2;
    Rect::new(t.x + inset, t.y + inset, side, side)
}

/// A tile to look at again is given up after this many frames.
pub(super) const RECHECK_WITHIN: u64 = 600;

impl RegionState {
    pub(super) fn new(rules: super::detect::Rules) -> RegionState {
        RegionState {
            motion: Motion::new(),
            tiles: Vec::with_capacity(64),
            zone_proposals: Vec::with_capacity(regions::MAX_ZONE_CROPS),
            seed_tiles: Vec::with_capacity(2 * 64),
            seed_next: 0,
            rechecks: Vec::with_capacity(track::MAX_TRACKS),
            outside: Vec::new(),
            fill: [0; 3],
            sized_for: (0, 0),
            refused: (0, 0),
            proposals: Vec::with_capacity(MAX_PROPOSALS),
            detections: Vec::with_capacity(MAX_PROPOSALS),
            transitions: Vec::with_capacity(2 * track::MAX_TRACKS),
            tracks: Tracks::new(rules),
            crop_pixels: DecodedImage::default(),
        }
    }
}

/// Overlapping regions that see one label (in one zone) are one
/// detection, their boxes folded by `combine`, the best score the score
/// (in place: no allocation): a zone's squares (their union the box: an
/// object in two or three of them), or tiles (their common part: an
/// object where two or four tiles overlap).
fn merge_overlapping(ds: &mut Vec<Detection>, combine: fn(&Rect, &Rect) -> Rect) {
    regions::merge_all(
        ds,
        |a, b| a.zone == b.zone && a.watched == b.watched && a.rect.overlap(&b.rect) > 0,
        |a, b| {
            a.rect = combine(&a.rect, &b.rect);
            a.score = a.score.max(b.score);
        },
    );
}

impl RegionState {
    /// With motion: the seed tiles of this frame ([`SEEDS_PER_FRAME`], from
    /// the start after the background is learnt: what stands in view then
    /// is no motion), and in the room they leave, tiles to look at again.
    fn seed_proposals(&mut self, frame: u64) {
        if self.motion.learned {
            // The background learnt: what stands in view now is in
            // it, and would be seen only when it moves. The seed
            // tiles look for it, a few a frame.
            self.seed_next = 0;
        }
        let seeds = self.seed_next..(self.seed_next + SEEDS_PER_FRAME).min(self.seed_tiles.len());
        self.seed_next = seeds.end;
        let room = SEEDS_PER_FRAME - seeds.len();
        // Tiles to look at again, once no followed object is in
        // them (the one that took the seed's track has left).
        let tracks = &self.tracks;
        self.rechecks
            .retain(|&(_, at)| frame.saturating_sub(at) <= RECHECK_WITHIN);
        let mut again = [Rect::default(); SEEDS_PER_FRAME];
        let mut n = 0;
        let mut k = 0;
        while k < self.rechecks.len() && n < room {
            let t = self.rechecks[k].0;
            let middle = seed_box(t);
            let held = tracks
                .iter()
                .any(|(_, tr)| tr.last_box.overlap(if tr.coarse() { &middle } else { &t }) > 0);
            if held {
                k += 1;
            } else {
                again[n] = t;
                n += 1;
                self.rechecks.swap_remove(k);
            }
        }
        for &t in self.seed_tiles[seeds].iter().chain(&again[..n]) {
            self.proposals.push(Proposal {
                seed: true,
                coarse: true,
                ..Proposal::at(seed_box(t), t)
            });
        }
    }
}

impl Watcher<'_> {
    /// [`Watcher::step`] for regions: each region (motion, the tracks'
    /// last boxes, tiles or zones) is cropped and classified as `classify`
    /// would classify an image of it; detections feed the tracks.
    pub(super) fn step_regions(&mut self, frame: &Frame, t0: Instant) -> Result<usize, WatchError> {
        let img = &frame.image;
        let (w, h) = (img.width, img.height);
        if self.regions.sized_for != (w, h) {
            self.size_regions(img, frame.index)?;
        } else {
            self.regions.refused = (0, 0);
            self.trouble_frame_size = None;
        }
        let ropts = &self.opts.regions;
        let p = &mut self.regions;
        p.proposals.clear();
        match ropts.mode {
            RegionMode::Motion => {
                // Sizes outside --min-area..--max-area are left out before
                // the largest regions are kept.
                for &r in p.motion.update(img, (ropts.min_area, ropts.max_area)) {
                    p.proposals
                        .push(Proposal::at(r, regions::context_square(r, w, h)));
                }
                p.seed_proposals(frame.index);
            }
            RegionMode::Tiles { .. } if ropts.zones.is_empty() => {
                for &r in &p.tiles {
                    p.proposals.push(Proposal::at(r, r));
                }
            }
            RegionMode::Tiles { .. } | RegionMode::Full => {
                p.proposals.extend_from_slice(&p.zone_proposals);
            }
        }
        p.detections.clear();
        if !p.proposals.is_empty() {
            self.scores.fill(0.0);
        }
        let mode = ropts.mode;
        self.classify_proposals(frame, 0)?;
        if mode == RegionMode::Motion {
            // Objects no detection explains (standing still: no motion on
            // them; or beside one that moves, whose crop is its label):
            // their last box, as the encoder saw them there.
            let p = &mut self.regions;
            let start = p.proposals.len();
            for (slot, t) in p.tracks.iter() {
                // A coarse track's tile is looked at every frame: its box
                // is no object's, so no detection explains it.
                let explained = !t.coarse()
                    && p.detections.iter().any(|d| {
                        d.watched == t.watched
                            && d.zone == t.zone
                            && (d.rect.overlap(&t.last_box) > 0 || t.moved_to(&d.rect))
                    });
                if !explained && p.proposals.len() < MAX_PROPOSALS {
                    p.proposals.push(Proposal {
                        track_slot: Some(slot),
                        coarse: t.coarse(),
                        ..Proposal::at(t.last_box, regions::context_square(t.last_box, w, h))
                    });
                }
            }
            if start < p.proposals.len() {
                if start == 0 {
                    self.scores.fill(0.0);
                }
                self.classify_proposals(frame, start)?;
            }
        }
        let ropts = &self.opts.regions;
        let p = &mut self.regions;
        if !p.proposals.is_empty() {
            self.stats.inferred += 1;
        }
        match ropts.mode {
            RegionMode::Full => merge_overlapping(&mut p.detections, Rect::union),
            RegionMode::Tiles { .. } => merge_overlapping(&mut p.detections, Rect::intersection),
            RegionMode::Motion => {}
        }
        let t1 = Instant::now();
        self.stats.classify_ms += (t1 - t0).as_secs_f64() * 1e3;
        p.transitions.clear();
        p.tracks
            .step(frame.index, &mut p.detections, &mut p.transitions);
        for &r in p.tracks.refined() {
            if p.rechecks.len() < p.rechecks.capacity() {
                let tile = regions::context_square(r, w, h);
                p.rechecks.push((tile, frame.index));
            }
        }
        self.stats.tracks_dropped = self.counted_before.1 + p.tracks.dropped;
        let n = p.transitions.len();
        for k in 0..n {
            let (slot, t) = self.regions.transitions[k];
            self.emit_track(slot, t, None)?;
        }
        self.regions.tracks.retire_idle();
        self.stats.loop_ms += t1.elapsed().as_secs_f64() * 1e3;
        Ok(n)
    }

    /// Classifies the proposals from `from` on, each crop as `classify`
    /// would classify an image of it; a top-1 watched label at its
    /// threshold is a detection, for the region's zone, or (a region of
    /// no zone) for every zone its centre is in that watches the label.
    fn classify_proposals(&mut self, frame: &Frame, from: usize) -> Result<(), WatchError> {
        let img = &frame.image;
        let ropts = &self.opts.regions;
        let p = &mut self.regions;
        for k in from..p.proposals.len() {
            let q = p.proposals[k];
            p.crop_pixels
                .crop_from(img, q.crop.x, q.crop.y, q.crop.w, q.crop.h);
            paint(&mut p.crop_pixels, &p.outside[q.spans.0..q.spans.1], p.fill);
            let (stats, label_scores) = (&mut self.stats, &mut self.label_scores);
            let (top, prob) = self.engine.with(|e| {
                classify_counted(e, stats, &p.crop_pixels, frame.index)?;
                label_scores.copy_from_slice(&e.scores);
                Ok::<_, WatchError>(e.top()[0])
            })?;
            self.stats.crops += 1;
            for (sc, w) in self.scores.iter_mut().zip(&self.opts.watched) {
                *sc = sc.max(self.label_scores[w.index]);
            }
            let Some(i) = self.opts.watched.iter().position(|w| w.index == top) else {
                continue;
            };
            let own = self.opts.watched[i].threshold;
            let (tracks, detections) = (&p.tracks, &mut p.detections);
            let mut detect = |zone: Option<usize>, threshold: f32| {
                // A seed tile whose crop holds a followed object's box
                // of its label, or a detection of this frame (an object
                // motion found, a tile's middle another seed found), sees
                // that one again.
                // (A followed coarse box is a tile's middle: it is met by
                // the seed's middle, not by its whole tile, so that a still
                // object beside it is found by a finer tile; one found this
                // frame by the seed's whole tile: the same object seen by
                // two neighbouring tiles.)
                let known = q.seed
                    && (tracks.iter().any(|(_, t)| {
                        let seed = if t.coarse() { &q.rect } else { &q.crop };
                        t.watched == i && t.zone == zone && t.last_box.overlap(seed) > 0
                    }) || detections
                        .iter()
                        .any(|d| d.watched == i && d.zone == zone && d.rect.overlap(&q.crop) > 0));
                if prob >= threshold && !known {
                    detections.push(Detection {
                        watched: i,
                        zone,
                        rect: q.rect,
                        score: prob,
                        track_slot: q.track_slot,
                        coarse: q.coarse,
                    });
                }
            };
            let zones = &ropts.zones;
            match q.zone {
                Some(z) => {
                    if let Some(t) = zones[z].threshold(i, own) {
                        detect(Some(z), t);
                    }
                }
                None if zones.is_empty() => detect(None, own),
                None => {
                    // A seed's box is a tile's middle, not its object's:
                    // it counts for a zone only when the zone holds it
                    // whole.
                    let r = q.rect;
                    // Its corner pixels' centres.
                    let (x0, y0) = (r.x as f32 + 0.5, r.y as f32 + 0.5);
                    let (x1, y1) = (x0 + r.w as f32 - 1.0, y0 + r.h as f32 - 1.0);
                    let corners = [(x0, y0), (x1, y0), (x0, y1), (x1, y1)];
                    for (z, zone) in zones.iter().enumerate() {
                        let inside = zone.area.contains(r.centre())
                            && (!q.coarse || corners.iter().all(|&c| zone.area.contains(c)));
                        if let Some(t) = zone.threshold(i, own).filter(|_| inside) {
                            detect(Some(z), t);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Sizes the regions' state for `w x h` frames (the first frame, or a
    /// source that changed its size): the tracks' events end (their boxes
    /// are in the old frame), the zones and tiles are checked, and the
    /// preprocessor's buffers grown for the largest square crop, so that
    /// no later crop allocates. Zones or tiles that do not fit the first
    /// frame are the settings' error; a later size they do not fit (a
    /// camera back at another resolution) ends the tracks' events and its
    /// frames are skipped, one by one, until the source's frames fit again.
    pub(super) fn size_regions(
        &mut self,
        img: &DecodedImage,
        frame: u64,
    ) -> Result<(), WatchError> {
        let (w, h) = (img.width, img.height);
        if let Err(why) = self.opts.regions.check_frame(w, h) {
            if self.regions.sized_for == (0, 0) {
                return Err(WatchError::Settings(why));
            }
            let why = format!("{why} (frames of that size are skipped until they fit)");
            if self.regions.refused != (w, h) {
                self.regions.refused = (w, h);
                self.end_all("frame_size")?;
                self.regions.tracks.clear();
                // The status page says it while it lasts.
                self.trouble_frame_size = Some(why.clone());
            }
            return Err(WatchError::Frame { frame, why });
        }
        self.regions.refused = (0, 0);
        self.trouble_frame_size = None;
        if self.regions.sized_for != (0, 0) {
            log::warn!(
                "the source's frames changed size from {}x{} to {w}x{h}: tracks start again",
                self.regions.sized_for.0,
                self.regions.sized_for.1
            );
            self.end_all("frame_size")?;
            self.regions.tracks.clear();
        }
        self.regions.motion.reset();
        let ropts = &self.opts.regions;
        let p = &mut self.regions;
        if let RegionMode::Tiles { cols, rows } = ropts.mode {
            regions::tiles(w, h, cols, rows, &mut p.tiles);
        }
        p.zone_proposals.clear();
        p.outside.clear();
        let mut xs = Vec::new();
        for (i, z) in ropts.zones.iter().enumerate() {
            let bbox = z.area.bbox();
            let mut add = |crop: Rect, rect: Rect| {
                let start = p.outside.len();
                z.area.outside_spans(crop, &mut xs, &mut p.outside);
                p.zone_proposals.push(Proposal {
                    zone: Some(i),
                    spans: (start, p.outside.len()),
                    ..Proposal::at(rect, crop)
                });
            };
            match ropts.mode {
                RegionMode::Full => regions::squares(bbox).for_each(|r| add(r, r)),
                RegionMode::Tiles { .. } => {
                    let side = p.tiles.first().map_or(1, |t| t.w);
                    regions::zone_tiles(bbox, side).for_each(|r| add(r, r));
                }
                RegionMode::Motion => {}
            }
        }
        p.seed_tiles.clear();
        // Tiles of another frame size.
        p.rechecks.clear();
        p.seed_next = 0;
        if ropts.mode == RegionMode::Motion {
            // Two grids of square tiles that cover the frame: the default
            // one and one twice as fine (an object a tenth of the view
            // across, as motion finds them), each at most MAX_TILES a side
            // (a frame too long for them is covered in part).
            let mut grid = Vec::new();
            let side = w.min(h).max(1);
            for scale in [1, 2] {
                let (cols, rows) = (
                    (scale * regions::DEFAULT_TILES.0)
                        .max(w.div_ceil(side))
                        .min(regions::MAX_TILES),
                    (scale * regions::DEFAULT_TILES.1)
                        .max(h.div_ceil(side))
                        .min(regions::MAX_TILES),
                );
                regions::tiles(w, h, cols, rows, &mut grid);
                for &t in &grid {
                    if !p.seed_tiles.contains(&t) {
                        p.seed_tiles.push(t);
                    }
                }
            }
        }
        // A region of no zone is a detection for each zone it is in.
        p.detections.clear();
        p.detections
            .reserve(MAX_PROPOSALS * ropts.zones.len().max(1));
        let mean = self.engine.with(|e| e.bundle.manifest.preprocess.mean);
        self.regions.fill = mean.map(|m| (m * 255.0).round().clamp(0.0, 255.0) as u8);
        let p = &mut self.regions;
        let mut notes = Vec::new();
        ropts.notes(w, h, &p.tiles, &mut notes);
        for n in &notes {
            log::warn!("{n}");
        }
        p.sized_for = (w, h);
        if ropts.mode == RegionMode::Motion && w > 0 && h > 0 {
            // The largest crop a region or a track's box can take.
            let side = w.min(h);
            p.crop_pixels.crop_from(img, 0, 0, side, side);
            let crop = &self.regions.crop_pixels;
            self.engine
                .with(|e| e.preprocess(&crop.view()))
                .map_err(|source| WatchError::Engine { frame: 0, source })?;
        }
        Ok(())
    }

    /// The size of the frames coming now: the one the regions were last
    /// sized for, or a later one they do not fit, whose frames are
    /// skipped (a reload is checked against it).
    pub fn frame_size(&self) -> Option<(u32, u32)> {
        let p = &self.regions;
        [p.refused, p.sized_for].into_iter().find(|&s| s != (0, 0))
    }
}

/// Paints `spans` of `img` `rgb` (grey images its luma; alpha opaque).
/// Bilevel and palette images are left as they are (no such colour).
fn paint(img: &mut DecodedImage, spans: &[regions::Span], rgb: [u8; 3]) {
    use crate::preprocess::Mode;
    let luma =
        ((299 * rgb[0] as u32 + 587 * rgb[1] as u32 + 114 * rgb[2] as u32 + 500) / 1000) as u8;
    let px: &[u8] = match img.mode {
        Mode::Rgb => &rgb,
        Mode::Rgba => &[rgb[0], rgb[1], rgb[2], 255],
        Mode::L => &[luma],
        Mode::La => &[luma, 255],
        Mode::Bilevel | Mode::Palette => return,
    };
    let (ch, row) = (px.len(), img.width as usize * px.len());
    for s in spans {
        let start = s.y as usize * row + s.x0 as usize * ch;
        let end = s.y as usize * row + s.x1 as usize * ch;
        for p in img.data[start..end].chunks_exact_mut(ch) {
            p.copy_from_slice(px);
        }
    }
}
