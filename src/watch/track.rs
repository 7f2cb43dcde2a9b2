//! Tracks: the objects `watch` follows when it looks at regions of a frame.
//!
//! A region whose top-1 label is a watched label at its threshold is a
//! *detection*, with a box. Each frame's detections are matched to the
//! tracks of the same label (and zone) by the distance between box centres,
//! each track's centre moved on by its last step (an object crossing the
//! view between two frames classified far apart, at a low `--fps`), so two
//! objects of one label in view are two tracks; an unmatched detection
//! opens a new track. Every track's [`Detector`] is fed once per
//! frame (positive when a detection matched it), so the N-of-M start and
//! K-to-end rules hold per track. Pure logic over fixed-size tables: no
//! allocation per frame.

use super::detect::{Detector, Rules, Transition};
use super::regions::Rect;

/// The most tracks followed at once; a detection beyond them is dropped
/// (and said once in the log).
pub const MAX_TRACKS: usize = 16;

/// A detection matches a track when their box centres are at most this
/// far apart, in units of the larger box's longer side (the track's centre
/// moved on by its last step, [`Track::gap`]).
pub const MATCH_DISTANCE: f32 = 1.0;

/// The same for a track seen once (whose step is not known yet): an
/// object crossing a wide view at a low `--fps` moves one to two of its
/// own sizes between two frames classified.
pub const FIRST_MATCH_DISTANCE: f32 = 2.5;

/// A coarse track (found by a seed tile) takes an object's own box anywhere
/// in its tile for this many positives (what the seed found may have been
/// moving), then only in the tile's middle (a passer by a still object is
/// not it).
pub const COARSE_NEW_FRAMES: u32 = 15;

/// A track missed for `n` frames fed matches `1 + n` times as far, up to
/// this many times (an object hidden for a frame or two went on moving).
pub const MAX_GATE_WIDENING: u32 = 3;

/// A watched label seen in one region of a frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// Index into the watched labels.
    pub watched: usize,
    pub zone: Option<usize>,
    pub rect: Rect,
    pub score: f32,
    /// The track whose last box this region was (an object standing still).
    pub track_slot: Option<usize>,
    /// The box is a coarse box (a seed tile's middle), not the object's
    /// own: no step is learnt from it.
    pub coarse: bool,
}

/// One followed object.
#[derive(Debug, Clone)]
pub struct Track {
    /// This run's number of the track (from 1), as events carry it.
    pub number: u64,
    pub watched: usize,
    pub zone: Option<usize>,
    pub detector: Detector,
    /// The box at each positive frame of the last 64 fed, by the
    /// detector's ring slot ([`Detector::next_slot`]).
    boxes: [Rect; 64],
    /// The box of the latest positive frame.
    pub last_box: Rect,
    /// The id of the track's open event.
    pub open_id: Option<String>,
    matched: bool,
    /// Pixels its centre moved per frame fed, between its last two
    /// positives.
    step: (f32, f32),
    /// Positive frames so far (saturating).
    positives: u32,
    /// Frames fed since its last positive.
    missed: u32,
    /// Its last box is a coarse box, not the object's box.
    coarse: bool,
}

impl Track {
    fn new(number: u64, d: &Detection, rules: Rules) -> Track {
        Track {
            number,
            watched: d.watched,
            zone: d.zone,
            detector: Detector::new(rules),
            boxes: [Rect::default(); 64],
            last_box: d.rect,
            open_id: None,
            matched: false,
            step: (0.0, 0.0),
            positives: 0,
            missed: 0,
            coarse: d.coarse,
        }
    }

    /// How far `r` is from where this track's object should be now (its
    /// last centre moved on by its step for each frame since) or from its
    /// last centre, whichever is nearer, in units of its gate: at most 1
    /// matches. The gate is [`MATCH_DISTANCE`] (or
    /// [`FIRST_MATCH_DISTANCE`] for a track seen once) times the larger
    /// box's longer side, widened for the frames it was missed.
    fn gap(&self, r: &Rect) -> f32 {
        let b = &self.last_box;
        let gate = if self.positives >= 2 {
            MATCH_DISTANCE
        } else {
            FIRST_MATCH_DISTANCE
        };
        let widening = (1 + self.missed).min(MAX_GATE_WIDENING) as f32;
        // Near where it should be, or still near where it was (boxes
        // that jump between fixed places, tiles, make no steady step).
        scaled(self.predicted(), b, r).min(distance(b, r)) / (gate * widening)
    }

    /// Where its object's centre should be now: its last centre moved on
    /// by its step for each frame fed since.
    fn predicted(&self) -> (f32, f32) {
        let (lx, ly) = self.last_box.centre();
        let ahead = (self.missed + 1) as f32;
        (lx + self.step.0 * ahead, ly + self.step.1 * ahead)
    }

    /// Whether region `r` is where this track's object went: for a track
    /// seen once, `r`'s centre within [`FIRST_MATCH_DISTANCE`] of its last
    /// (an object first seen moving, whose step is not known yet); for a
    /// moving track (a step learnt, not zero), within [`MATCH_DISTANCE`] of
    /// the centre its step predicts; a still object's track, never (a
    /// passer-by beside it leaves it its own box).
    pub fn moved_to(&self, r: &Rect) -> bool {
        let (gate, at) = match self.positives {
            0 => return false,
            1 => (FIRST_MATCH_DISTANCE, self.last_box.centre()),
            _ if self.step == (0.0, 0.0) => return false,
            _ => (MATCH_DISTANCE, self.predicted()),
        };
        scaled(at, &self.last_box, r) <= gate
    }

    /// A detection matched: its box is the track's last, its step learnt
    /// (not from or to a coarse box: the first box of the object's own
    /// after coarse ones is as if it were seen for the first time).
    fn matched_to(&mut self, r: Rect, coarse: bool) {
        if self.coarse || coarse {
            self.step = (0.0, 0.0);
            if !coarse {
                self.positives = 0;
            }
        } else if self.positives > 0 {
            let ((lx, ly), (rx, ry)) = (self.last_box.centre(), r.centre());
            let gap = (self.missed + 1) as f32;
            self.step = ((rx - lx) / gap, (ry - ly) / gap);
        }
        self.positives = self.positives.saturating_add(1);
        self.missed = 0;
        self.matched = true;
        self.boxes[self.detector.next_slot()] = r;
        self.last_box = r;
        self.coarse = coarse;
    }

    /// Whether its last box is a coarse box, not the object's box.
    pub fn coarse(&self) -> bool {
        self.coarse
    }

    /// Whether a coarse track's object may be at `p`: in its box (a seed
    /// tile's middle), or for its first [`COARSE_NEW_FRAMES`] positives
    /// anywhere in the tile around it.
    fn holds(&self, p: (f32, f32)) -> bool {
        let b = &self.last_box;
        if b.contains(p) {
            return true;
        }
        let m = super::regions::CROP_MARGIN * b.w.max(b.h) as f32;
        self.positives <= COARSE_NEW_FRAMES
            && p.0 >= b.x as f32 - m
            && p.1 >= b.y as f32 - m
            && p.0 < (b.x + b.w) as f32 + m
            && p.1 < (b.y + b.h) as f32 + m
    }

    /// The box at positive frame `frame` (of the last 64 fed; else the
    /// latest box).
    pub fn box_at(&self, frame: u64) -> Rect {
        self.detector
            .slot_of(frame)
            .map_or(self.last_box, |s| self.boxes[s])
    }
}

/// The tracks of one watcher.
#[derive(Debug)]
pub struct Tracks {
    rules: Rules,
    slots: Vec<Option<Track>>,
    numbers: u64,
    /// Detections dropped because every slot was taken.
    pub dropped: u64,
    /// The coarse boxes of this step's tracks that took an object's own
    /// box (`refined[..refined_count]`): the place is looked at again, in
    /// case what the seed tile saw was another object that stays.
    refined: [Rect; MAX_TRACKS],
    refined_count: usize,
}

/// How far point `p` is from `b`'s centre, in units of the longer side of
/// the larger of boxes `a` and `b`.
fn scaled((px, py): (f32, f32), a: &Rect, b: &Rect) -> f32 {
    let (bx, by) = b.centre();
    let scale = a.w.max(a.h).max(b.w).max(b.h).max(1) as f32;
    ((px - bx).powi(2) + (py - by).powi(2)).sqrt() / scale
}

/// The distance between two boxes' centres, [`scaled`].
fn distance(a: &Rect, b: &Rect) -> f32 {
    scaled(a.centre(), a, b)
}

impl Tracks {
    pub fn new(rules: Rules) -> Tracks {
        Tracks {
            rules,
            slots: vec![None; MAX_TRACKS],
            numbers: 0,
            dropped: 0,
            refined: [Rect::default(); MAX_TRACKS],
            refined_count: 0,
        }
    }

    /// The coarse boxes that tracks left for an object's own box in the
    /// last step.
    pub fn refined(&self) -> &[Rect] {
        &self.refined[..self.refined_count]
    }

    /// The live tracks, with their slots.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Track)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, t)| Some((i, t.as_ref()?)))
    }

    pub fn get_mut(&mut self, slot: usize) -> Option<&mut Track> {
        self.slots.get_mut(slot)?.as_mut()
    }

    /// Feeds frame `frame`'s detections to the tracks: first those made at
    /// a track's own last box (an object standing still keeps its track),
    /// then the rest, best score first; coarse ones (seed tiles) after all
    /// the others (an object's own box takes a coarse track before the
    /// tile does). `out` receives each track's start or end.
    pub fn step(
        &mut self,
        frame: u64,
        detections: &mut [Detection],
        out: &mut Vec<(usize, Transition)>,
    ) {
        detections.sort_unstable_by(|a, b| {
            a.coarse
                .cmp(&b.coarse)
                .then(b.track_slot.is_some().cmp(&a.track_slot.is_some()))
                .then(b.score.total_cmp(&a.score))
                .then((a.rect.x, a.rect.y).cmp(&(b.rect.x, b.rect.y)))
        });
        for t in self.slots.iter_mut().flatten() {
            t.matched = false;
        }
        self.refined_count = 0;
        for d in detections.iter() {
            let same = |t: &Track| t.watched == d.watched && t.zone == d.zone;
            let own = d
                .track_slot
                .filter(|&s| matches!(&self.slots[s], Some(t) if same(t) && !t.matched));
            let near = || {
                self.slots
                    .iter()
                    .enumerate()
                    .filter_map(|(i, t)| Some((i, t.as_ref()?)))
                    .filter(|(_, t)| same(t) && !t.matched)
                    // A coarse track (a seed tile's middle) is taken by an
                    // object's own box only where that box's centre is in
                    // it (its object moving off, not a passer beside it),
                    // or while it is new anywhere in its tile (what the
                    // seed found was moving).
                    .filter(|(_, t)| !t.coarse || d.coarse || t.holds(d.rect.centre()))
                    .map(|(i, t)| (i, t.gap(&d.rect)))
                    .filter(|&(_, gap)| gap <= 1.0)
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(i, _)| i)
            };
            let slot = match own.or_else(near) {
                Some(s) => s,
                None => {
                    // The same object seen by a second region of this frame.
                    // (A coarse track's box is a tile's middle, not its
                    // object's: it hides no other object's own box.)
                    let twice = self.slots.iter().flatten().any(|t| {
                        same(t)
                            && t.matched
                            && (d.coarse || !t.coarse)
                            && distance(&t.last_box, &d.rect) <= MATCH_DISTANCE
                    });
                    if twice {
                        continue;
                    }
                    let Some(free) = self.slots.iter().position(Option::is_none) else {
                        self.dropped += 1;
                        // Said at 1, 2, 4, … dropped so far.
                        if self.dropped.is_power_of_two() {
                            log::warn!(
                                "{MAX_TRACKS} tracks followed at once: {} detection(s) not tracked so far",
                                self.dropped
                            );
                        }
                        continue;
                    };
                    self.numbers += 1;
                    self.slots[free] = Some(Track::new(self.numbers, d, self.rules));
                    free
                }
            };
            let t = self.slots[slot].as_mut().expect("a live slot");
            if t.coarse && !d.coarse && self.refined_count < MAX_TRACKS {
                self.refined[self.refined_count] = t.last_box;
                self.refined_count += 1;
            }
            t.matched_to(d.rect, d.coarse);
            if let Some(tr) = t.detector.feed(frame, true, d.score) {
                out.push((slot, tr));
            }
        }
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(t) = slot else { continue };
            if !t.matched {
                t.missed = t.missed.saturating_add(1);
                if let Some(tr) = t.detector.feed(frame, false, 0.0) {
                    out.push((i, tr));
                }
            }
        }
    }

    /// Forgets the tracks that hold nothing: no open event, no positive in
    /// the start window, no cooldown (call after the transitions are handled).
    pub fn retire_idle(&mut self) {
        for slot in self.slots.iter_mut() {
            if slot
                .as_ref()
                .is_some_and(|t| t.detector.idle() && t.open_id.is_none())
            {
                *slot = None;
            }
        }
    }

    /// Ends every track's open event now; `out` receives the ends.
    pub fn end_all(&mut self, out: &mut Vec<(usize, Transition)>) {
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(tr) = slot.as_mut().and_then(|t| t.detector.end()) {
                out.push((i, tr));
            }
        }
    }

    /// Forgets every track (their events must have ended).
    pub fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = None);
    }

    /// Whether a track of watched label `watched` has an event open.
    pub fn label_active(&self, watched: usize) -> bool {
        self.slots
            .iter()
            .flatten()
            .any(|t| t.watched == watched && t.detector.active())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(watched: usize, x: u32, y: u32) -> Detection {
        Detection {
            watched,
            zone: None,
            rect: Rect::new(x, y, 60, 60),
            score: 0.9,
            track_slot: None,
            coarse: false,
        }
    }

    /// Runs `frames` (each a list of detections) and returns the starts and
    /// ends as (track number, 's'|'e', frame).
    fn run(frames: &[Vec<Detection>]) -> Vec<(u64, char, u64)> {
        let mut tracks = Tracks::new(Rules::default());
        let mut got = Vec::new();
        let mut out = Vec::new();
        for (f, dets) in frames.iter().enumerate() {
            let mut dets = dets.clone();
            out.clear();
            tracks.step(f as u64, &mut dets, &mut out);
            for &(slot, tr) in &out {
                let t = tracks.get_mut(slot).unwrap();
                let (c, frame) = match tr {
                    Transition::Start { frame, .. } => {
                        t.open_id = Some("open".into());
                        ('s', frame)
                    }
                    Transition::End { frame, .. } => {
                        t.open_id = None;
                        ('e', frame)
                    }
                };
                got.push((t.number, c, frame));
            }
            tracks.retire_idle();
        }
        out.clear();
        tracks.end_all(&mut out);
        for &(slot, _) in &out {
            got.push((tracks.get_mut(slot).unwrap().number, 'e', 99));
        }
        got
    }

    /// Frames dropped between two positives (a live source behind): the
    /// start's box is the box of its first positive frame.
    #[test]
    fn a_start_after_dropped_frames_has_the_box_of_its_frame() {
        let mut tracks = Tracks::new(Rules::default());
        let mut out = Vec::new();
        let mut starts = Vec::new();
        for (frame, x) in [(100, 100), (131, 110), (190, 120)] {
            out.clear();
            tracks.step(frame, &mut [det(0, x, 100)], &mut out);
            for &(slot, tr) in &out {
                if let Transition::Start { frame, .. } = tr {
                    starts.push((frame, tracks.get_mut(slot).unwrap().box_at(frame)));
                }
            }
        }
        assert_eq!(starts, [(100, Rect::new(100, 100, 60, 60))]);
    }

    #[test]
    fn two_objects_of_one_label_are_two_tracks() {
        // One moves right slowly, the other stands still far away.
        let frames: Vec<Vec<Detection>> = (0..8)
            .map(|f| vec![det(0, 100 + 10 * f, 100), det(0, 600, 300)])
            .chain((0..4).map(|_| vec![]))
            .collect();
        let got = run(&frames);
        assert_eq!(got, [(1, 's', 0), (2, 's', 0), (1, 'e', 7), (2, 'e', 7)]);
    }

    #[test]
    fn a_second_region_on_the_same_object_opens_no_track() {
        let frames: Vec<Vec<Detection>> = (0..5)
            .map(|f| vec![det(0, 100 + 5 * f, 100), det(0, 110 + 5 * f, 105)])
            .collect();
        let got = run(&frames);
        assert_eq!(got, [(1, 's', 0), (1, 'e', 99)]);
    }

    #[test]
    fn labels_and_zones_keep_their_own_tracks() {
        let mut other_zone = det(0, 100, 100);
        other_zone.zone = Some(1);
        let frames: Vec<Vec<Detection>> = (0..3)
            .map(|_| vec![det(0, 100, 100), det(1, 100, 100), other_zone])
            .collect();
        let got = run(&frames);
        assert_eq!(got.iter().filter(|g| g.1 == 's').count(), 3, "{got:?}");
    }

    #[test]
    fn a_cooldown_holds_off_the_same_object_in_its_track() {
        let rules = Rules {
            cooldown: 6,
            ..Rules::default()
        };
        let mut tracks = Tracks::new(rules);
        let mut starts = Vec::new();
        let mut out = Vec::new();
        // Seen 3 frames, gone 3 (the event ends), back for 4, gone 3, back.
        let pattern = "111000111100011111";
        for (f, c) in pattern.chars().enumerate() {
            let mut dets = if c == '1' {
                vec![det(0, 100, 100)]
            } else {
                vec![]
            };
            out.clear();
            tracks.step(f as u64, &mut dets, &mut out);
            for &(slot, tr) in &out {
                let t = tracks.get_mut(slot).unwrap();
                match tr {
                    Transition::Start { frame, .. } => {
                        t.open_id = Some("open".into());
                        starts.push(frame);
                    }
                    Transition::End { .. } => t.open_id = None,
                }
            }
            tracks.retire_idle();
        }
        // The end is decided at frame 5; frames 6..=11 cannot start one
        // (the cooldown counts every frame), frame 13 does.
        assert_eq!(starts, [0, 13]);
    }

    #[test]
    fn a_still_objects_own_box_keeps_its_track_against_a_better_neighbour() {
        let mut tracks = Tracks::new(Rules::default());
        let mut out = Vec::new();
        for f in 0..3 {
            tracks.step(f, &mut [det(0, 300, 200)], &mut out);
        }
        let mut still = det(0, 300, 200);
        still.track_slot = Some(0);
        still.score = 0.6;
        let passer = det(0, 350, 200);
        tracks.step(3, &mut [passer, still], &mut out);
        let (_, t) = tracks.iter().next().unwrap();
        assert_eq!(t.last_box, still.rect);
        // The passer, this close to the matched track, is taken for the
        // same object seen twice.
        assert_eq!(tracks.iter().count(), 1);
    }

    /// At a low `--fps` an object crossing the view moves more than its
    /// own size between two frames classified: one track, one event (it
    /// was a new track, and no event, at each frame).
    #[test]
    fn an_object_crossing_the_view_at_a_low_rate_is_one_track() {
        // 60 px boxes, 130 px a frame: seen, missed once, seen again.
        let mut frames: Vec<Vec<Detection>> =
            (0..4).map(|f| vec![det(0, 100 + 130 * f, 200)]).collect();
        frames.push(vec![]);
        frames.extend((5..7).map(|f| vec![det(0, 100 + 130 * f, 200)]));
        frames.extend((0..4).map(|_| vec![]));
        let got = run(&frames);
        assert_eq!(got, [(1, 's', 0), (1, 'e', 6)]);
        // Two such objects crossing towards each other keep their tracks
        // until they meet.
        let frames: Vec<Vec<Detection>> = (0..3)
            .map(|f| vec![det(0, 100 + 130 * f, 200), det(0, 900 - 130 * f, 200)])
            .collect();
        let got = run(&frames);
        assert_eq!(got, [(1, 's', 0), (2, 's', 0), (1, 'e', 99), (2, 'e', 99)]);
    }

    /// A still object's track keeps its own box against motion beside it
    /// (a passer-by); a moving one is taken to have gone where its step
    /// says, and only there.
    #[test]
    fn only_a_moving_track_is_taken_to_have_moved_on() {
        let mut tracks = Tracks::new(Rules::default());
        let mut out = Vec::new();
        for f in 0..3 {
            tracks.step(
                f,
                &mut [det(0, 300, 200), det(0, 100 + 130 * f as u32, 400)],
                &mut out,
            );
        }
        let still = tracks.iter().find(|(_, t)| t.last_box.y == 200).unwrap().1;
        let moving = tracks.iter().find(|(_, t)| t.last_box.y == 400).unwrap().1;
        let passer = Rect::new(370, 200, 60, 60);
        assert!(!still.moved_to(&passer));
        assert!(moving.moved_to(&Rect::new(100 + 130 * 3, 400, 60, 60)));
        assert!(!moving.moved_to(&Rect::new(100 + 130 * 5, 400, 60, 60)));
        assert!(!moving.moved_to(&Rect::new(360, 200, 60, 60)));
    }

    /// A crowded view: the 17th object is not followed, and counted.
    #[test]
    fn detections_beyond_the_tracks_are_counted() {
        let mut tracks = Tracks::new(Rules::default());
        let mut out = Vec::new();
        for f in 0..3 {
            let mut dets: Vec<Detection> = (0..=MAX_TRACKS as u32)
                .map(|i| det(0, 1000 * i, 100))
                .collect();
            tracks.step(f, &mut dets, &mut out);
        }
        assert_eq!(tracks.iter().count(), MAX_TRACKS);
        assert_eq!(tracks.dropped, 3);
    }

    #[test]
    fn an_object_that_jumps_away_is_a_new_track() {
        let mut frames: Vec<Vec<Detection>> = (0..3).map(|_| vec![det(0, 100, 100)]).collect();
        frames.extend((0..3).map(|_| vec![det(0, 500, 100)]));
        let got = run(&frames);
        assert_eq!(got, [(1, 's', 0), (2, 's', 3), (1, 'e', 2), (2, 'e', 99)]);
    }
}
