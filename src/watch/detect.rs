//! Event detection for one detector (a watched label over whole frames, or
//! one track of a label with `--regions`): per-frame positives debounced
//! into start and end transitions. Pure logic over frame indices; no
//! allocation.
//!
//! A frame is *positive* for the label when the label is the top-1 label with
//! probability at least its threshold (decided by the caller). An event
//! starts when `hits` of the last `window` frames are positive, and ends after
//! `end_after` consecutive frames without a positive. After an end, this
//! detector starts no event for `cooldown` frames.

use crate::watch::SettingError;
/// The debouncing rules, shared by every watched label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Rules {
    /// Positives needed in the window to start an event (N).
    pub hits: u32,
    /// Frames in the window (M, at most [`MAX_WINDOW`]).
    pub window: u32,
    /// Consecutive frames without a positive that end an event (K).
    pub end_after: u32,
    /// Frames after an end during which no event starts.
    pub cooldown: u32,
}

/// The largest window: the history is one 64-bit mask.
pub const MAX_WINDOW: u32 = 64;

impl Default for Rules {
    fn default() -> Self {
        Rules {
            hits: 2,
            window: 3,
            end_after: 3,
            cooldown: 0,
        }
    }
}

impl Rules {
    /// One-line description of what is wrong, naming the setting.
    pub fn validate(&self) -> Result<(), SettingError> {
        if self.window == 0 || self.window > MAX_WINDOW {
            return Err(
                format!("window {}: expected 1 to {MAX_WINDOW} frames", self.window).into(),
            );
        }
        if self.hits == 0 || self.hits > self.window {
            return Err(format!(
                "hits {}: expected 1 to the window ({})",
                self.hits, self.window
            )
            .into());
        }
        if self.end_after == 0 {
            return Err("end_after 0: expected at least 1 frame".into());
        }
        Ok(())
    }
}

/// A change of a label's state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transition {
    /// `frame` is the first positive frame of the window that opened the
    /// event; `score` the highest probability among the window's positives.
    Start { frame: u64, score: f32 },
    /// `frame` is the event's last positive frame; `score` the highest
    /// probability over the event.
    End { frame: u64, score: f32 },
}

/// One label's detector.
#[derive(Debug, Clone)]
pub struct Detector {
    rules: Rules,
    /// Bit i: the frame fed i feeds before the newest was positive.
    history: u64,
    /// Frames fed so far: the last 64 feeds' scores and frame indices are
    /// at `feed % 64` (a live source's frame indices have gaps where
    /// frames were dropped, so a feed is not a frame).
    fed: u64,
    scores: [f32; 64],
    frames: [u64; 64],
    active: bool,
    misses: u32,
    last_positive: u64,
    peak: f32,
    cooldown_left: u32,
}

impl Detector {
    /// `rules` must have passed [`Rules::validate`].
    pub fn new(rules: Rules) -> Self {
        debug_assert!(rules.validate().is_ok());
        Detector {
            rules,
            history: 0,
            fed: 0,
            scores: [0.0; 64],
            frames: [u64::MAX; 64],
            active: false,
            misses: 0,
            last_positive: 0,
            peak: 0.0,
            cooldown_left: 0,
        }
    }

    pub fn active(&self) -> bool {
        self.active
    }

    /// No event open, no positive frame in the window and no cooldown
    /// running: the detector holds nothing a fresh one would not.
    pub fn idle(&self) -> bool {
        !self.active && self.history & self.window_mask() == 0 && self.cooldown_left == 0
    }

    fn window_mask(&self) -> u64 {
        if self.rules.window == 64 {
            u64::MAX
        } else {
            (1u64 << self.rules.window) - 1
        }
    }

    /// The ring slot the next feed takes (a track keeps its boxes by it).
    pub fn next_slot(&self) -> usize {
        (self.fed % 64) as usize
    }

    /// The ring slot of `frame`, if it is among the last 64 fed.
    pub fn slot_of(&self, frame: u64) -> Option<usize> {
        (0..self.fed.min(64))
            .map(|back| ((self.fed - 1 - back) % 64) as usize)
            .find(|&s| self.frames[s] == frame)
    }

    /// Feed the next frame, `frame` (called once per frame stepped, in the
    /// source's order; a frame `--motion-threshold` skipped repeats the last
    /// result; dropped frames leave gaps in the indices). `score`
    /// is the label's probability in it.
    pub fn feed(&mut self, frame: u64, positive: bool, score: f32) -> Option<Transition> {
        self.history = self.history << 1 | positive as u64;
        let slot = self.next_slot();
        self.scores[slot] = if positive { score } else { 0.0 };
        self.frames[slot] = frame;
        self.fed += 1;
        if positive {
            if self.active {
                self.misses = 0;
                self.last_positive = frame;
                self.peak = self.peak.max(score);
                return None;
            }
            if self.cooldown_left > 0 {
                self.cooldown_left -= 1;
                return None;
            }
            let in_window = self.history & self.window_mask();
            if in_window.count_ones() >= self.rules.hits {
                let oldest = 63 - in_window.leading_zeros() as u64;
                let back = |i: u64| ((self.fed - 1 - i) % 64) as usize;
                let mut peak = 0f32;
                for i in 0..=oldest {
                    if in_window >> i & 1 == 1 {
                        peak = peak.max(self.scores[back(i)]);
                    }
                }
                self.active = true;
                self.misses = 0;
                self.last_positive = frame;
                self.peak = peak;
                return Some(Transition::Start {
                    frame: self.frames[back(oldest)],
                    score: peak,
                });
            }
            None
        } else {
            self.after_negative()
        }
    }

    fn after_negative(&mut self) -> Option<Transition> {
        if !self.active {
            self.cooldown_left = self.cooldown_left.saturating_sub(1);
            return None;
        }
        self.misses += 1;
        if self.misses >= self.rules.end_after {
            return self.end();
        }
        None
    }

    /// Ends an active event now (the source ended, the service stops).
    pub fn end(&mut self) -> Option<Transition> {
        if !self.active {
            return None;
        }
        self.active = false;
        self.misses = 0;
        self.history = 0;
        self.cooldown_left = self.rules.cooldown;
        Some(Transition::End {
            frame: self.last_positive,
            score: self.peak,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(rules: Rules, pattern: &str) -> Vec<Transition> {
        let mut d = Detector::new(rules);
        let mut out = Vec::new();
        for (i, c) in pattern.chars().enumerate() {
            if let Some(t) = d.feed(i as u64, c == '1', if c == '1' { 0.9 } else { 0.1 }) {
                out.push(t);
            }
        }
        out.extend(d.end());
        out
    }

    fn frames(ts: &[Transition]) -> Vec<(char, u64)> {
        ts.iter()
            .map(|t| match t {
                Transition::Start { frame, .. } => ('s', *frame),
                Transition::End { frame, .. } => ('e', *frame),
            })
            .collect()
    }

    #[test]
    fn two_of_three_starts_at_the_first_positive_of_the_window() {
        let t = run(Rules::default(), "0010111000");
        assert_eq!(frames(&t), [('s', 2), ('e', 6)]);
    }

    #[test]
    fn a_single_positive_starts_nothing() {
        assert!(run(Rules::default(), "0100010001000").is_empty());
    }

    #[test]
    fn short_gaps_do_not_end_an_event() {
        let t = run(Rules::default(), "11001100111000");
        assert_eq!(frames(&t), [('s', 0), ('e', 10)]);
    }

    #[test]
    fn cooldown_holds_off_the_next_start() {
        let rules = Rules {
            cooldown: 5,
            ..Rules::default()
        };
        // Ends at frame 1 (decided at 4); frames 5..=9 cannot start one, so
        // frame 10 does, with the window 8..=10 that opened it.
        let t = run(rules, "110001111111");
        assert_eq!(frames(&t), [('s', 0), ('e', 1), ('s', 8), ('e', 11)]);
    }

    #[test]
    fn rules_are_validated() {
        for bad in [
            Rules {
                hits: 0,
                ..Rules::default()
            },
            Rules {
                hits: 4,
                window: 3,
                ..Rules::default()
            },
            Rules {
                window: 65,
                ..Rules::default()
            },
            Rules {
                end_after: 0,
                ..Rules::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    /// The plain statement of the rules, frame by frame over a `Vec`.
    fn reference(rules: Rules, pos: &[bool]) -> Vec<(char, u64)> {
        let (n, m, k) = (
            rules.hits as usize,
            rules.window as usize,
            rules.end_after as usize,
        );
        let mut out = Vec::new();
        let mut active = false;
        let mut last_pos = 0;
        let mut misses = 0;
        let mut cool = 0usize;
        let mut since_end_history_start = 0usize;
        for f in 0..pos.len() {
            if active {
                if pos[f] {
                    misses = 0;
                    last_pos = f;
                } else {
                    misses += 1;
                    if misses == k {
                        out.push(('e', last_pos as u64));
                        active = false;
                        cool = rules.cooldown as usize;
                        since_end_history_start = f + 1;
                    }
                }
                continue;
            }
            if !pos[f] {
                cool = cool.saturating_sub(1);
                continue;
            }
            if cool > 0 {
                cool -= 1;
                continue;
            }
            let lo = (f + 1).saturating_sub(m).max(since_end_history_start);
            let hits: Vec<usize> = (lo..=f).filter(|&i| pos[i]).collect();
            if hits.len() >= n {
                out.push(('s', hits[0] as u64));
                active = true;
                misses = 0;
                last_pos = f;
            }
        }
        if active {
            out.push(('e', last_pos as u64));
        }
        out
    }

    /// A live source drops frames: the start is the first positive frame
    /// fed (not a frame that was never seen), its score the window's best.
    #[test]
    fn a_start_after_dropped_frames_names_a_frame_fed_and_its_best_score() {
        let rules = Rules {
            hits: 2,
            window: 3,
            end_after: 3,
            cooldown: 0,
        };
        let mut d = Detector::new(rules);
        assert_eq!(d.feed(100, true, 0.8), None);
        assert_eq!(
            d.feed(131, true, 0.6),
            Some(Transition::Start {
                frame: 100,
                score: 0.8
            })
        );
        assert_eq!(d.slot_of(100), Some(0));
        assert_eq!(d.slot_of(130), None);
    }

    proptest! {
        #[test]
        fn matches_the_plain_statement(
            pos in proptest::collection::vec(any::<bool>(), 0..200),
            window in 1u32..8, hits_frac in 0.0f64..1.0, end_after in 1u32..5, cooldown in 0u32..4,
            gaps in proptest::collection::vec(1u64..40, 200),
        ) {
            let hits = 1 + ((window - 1) as f64 * hits_frac) as u32;
            let rules = Rules { hits, window, end_after, cooldown };
            // The frames fed, with gaps (frames a live source dropped).
            let index: Vec<u64> = gaps.iter().scan(0, |f, g| { *f += g; Some(*f) }).collect();
            let mut d = Detector::new(rules);
            let mut got = Vec::new();
            for (i, &p) in pos.iter().enumerate() {
                if let Some(t) = d.feed(index[i], p, 0.5) {
                    got.push(t);
                }
            }
            got.extend(d.end());
            let want: Vec<(char, u64)> = reference(rules, &pos)
                .into_iter()
                .map(|(k, i)| (k, index[i as usize]))
                .collect();
            prop_assert_eq!(frames(&got), want);
        }
    }
}
