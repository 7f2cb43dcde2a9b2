//! The frame rate and the latency over the last minutes, for the status
//! page's chart: one sample a second, kept in rings allocated once.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One sample this often.
pub const EVERY: Duration = Duration::from_secs(1);
/// Samples kept: ten minutes.
pub const SAMPLES: usize = 600;

/// What the loop had counted when the last sample was taken.
#[derive(Clone, Copy)]
struct Mark {
    at: Instant,
    frames: u64,
    inferred: u64,
    classify_ms: f64,
}

pub struct History {
    last: Option<Mark>,
    /// Frames a second over each sample's span.
    fps: VecDeque<f32>,
    /// Preprocess, encode and score of one frame, in ms, averaged over the
    /// span (NaN when no frame was classified in it).
    latency_ms: VecDeque<f32>,
}

impl Default for History {
    fn default() -> Self {
        History {
            last: None,
            fps: VecDeque::with_capacity(SAMPLES),
            latency_ms: VecDeque::with_capacity(SAMPLES),
        }
    }
}

impl History {
    /// After a frame: the loop's running counts (they carry on across a
    /// reload). Adds a sample when [`EVERY`] has passed since the last.
    pub fn observe(&mut self, now: Instant, frames: u64, inferred: u64, classify_ms: f64) {
        let mark = Mark {
            at: now,
            frames,
            inferred,
            classify_ms,
        };
        let Some(last) = self.last else {
            self.last = Some(mark);
            return;
        };
        if frames < last.frames || inferred < last.inferred {
            // Counts that went back (defensive): start the span again.
            self.last = Some(mark);
            return;
        }
        let span = now.saturating_duration_since(last.at);
        if span < EVERY {
            return;
        }
        // Seconds with no frame at all (a silent source): no frames a
        // second, no latency, so the samples stay one a second.
        let silent = (span.as_secs_f64() / EVERY.as_secs_f64()) as usize - 1;
        for _ in 0..silent.min(SAMPLES) {
            self.push(0.0, f32::NAN);
        }
        let n = inferred - last.inferred;
        let latency = if n == 0 {
            f32::NAN
        } else {
            ((classify_ms - last.classify_ms) / n as f64) as f32
        };
        // The span's frames over what is left of it after the silent seconds.
        let counted = span.as_secs_f64() - silent as f64 * EVERY.as_secs_f64();
        self.push(((frames - last.frames) as f64 / counted) as f32, latency);
        self.last = Some(mark);
    }

    fn push(&mut self, fps: f32, latency_ms: f32) {
        if self.fps.len() == SAMPLES {
            self.fps.pop_front();
            self.latency_ms.pop_front();
        }
        self.fps.push_back(fps);
        self.latency_ms.push_back(latency_ms);
    }

    /// `{"every_s", "fps": [...], "latency_ms": [...]}`, oldest first (a
    /// span with no frame classified has a null latency).
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "every_s": EVERY.as_secs_f64(),
            "fps": self.fps,
            "latency_ms": self.latency_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_each_second_and_keep_ten_minutes() {
        let t0 = Instant::now();
        let mut h = History::default();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        h.observe(at(0.0), 0, 0, 0.0);
        h.observe(at(0.5), 5, 5, 10.0);
        assert!(h.fps.is_empty());
        h.observe(at(1.0), 10, 10, 20.0);
        assert_eq!(h.fps, [10.0]);
        assert_eq!(h.latency_ms, [2.0]);
        // No frame classified (skipped by --motion-threshold): the latency is unknown.
        h.observe(at(2.0), 30, 10, 20.0);
        assert_eq!(h.fps[1], 20.0);
        assert!(h.latency_ms[1].is_nan());
        assert!(h.json()["latency_ms"][1].is_null());
        // A reload counts from zero: no negative rate, a new span.
        h.observe(at(3.0), 2, 2, 4.0);
        assert_eq!(h.fps.len(), 2);
        // Three seconds without a frame but one: two silent samples, then
        // the frame's.
        h.observe(at(6.0), 3, 3, 5.0);
        assert_eq!(h.fps.len(), 5);
        assert_eq!((h.fps[2], h.fps[3], h.fps[4]), (0.0, 0.0, 1.0));
        assert!(h.latency_ms[2].is_nan() && h.latency_ms[3].is_nan());
        assert_eq!(h.latency_ms[4], 1.0);
        for k in 1..=SAMPLES + 10 {
            h.observe(
                at(6.0 + k as f64),
                3 + k as u64,
                3 + k as u64,
                5.0 + k as f64,
            );
        }
        assert_eq!((h.fps.len(), h.latency_ms.len()), (SAMPLES, SAMPLES));
        assert_eq!(h.fps.capacity(), SAMPLES);
        assert_eq!(h.json()["fps"].as_array().unwrap().len(), SAMPLES);
    }
}
