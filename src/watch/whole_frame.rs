//! [`Watcher::step`] over whole frames (`--regions full` with no zone):
//! each frame classified once, unless `--motion-threshold` finds it nearly
//! the frame classified last, and each watched label's detector fed.

use std::time::Instant;

use super::*;

impl Watcher<'_> {
    pub(super) fn step_whole_frame(
        &mut self,
        frame: &Frame,
        t0: Instant,
    ) -> Result<usize, WatchError> {
        let skip = match self.opts.motion_threshold {
            Some(thr) if self.have_last_inferred => mean_abs_diff(&self.last_inferred, frame) < thr,
            _ => false,
        };
        let mut top = None;
        if !skip {
            let (stats, label_scores) = (&mut self.stats, &mut self.label_scores);
            top = Some(self.engine.with(|e| {
                classify_counted(e, stats, &frame.image, frame.index)?;
                label_scores.copy_from_slice(&e.scores);
                Ok::<_, WatchError>(e.top()[0])
            })?);
            self.stats.inferred += 1;
            if self.opts.motion_threshold.is_some() {
                self.last_inferred.copy_from(frame);
                self.have_last_inferred = true;
            }
        }
        let t1 = Instant::now();
        self.stats.classify_ms += (t1 - t0).as_secs_f64() * 1e3;
        // A skipped frame repeats the last one's result.
        let (top, top_p) = top.unwrap_or_else(|| {
            let s = &self.label_scores;
            let i = (0..s.len()).max_by(|&a, &b| s[a].total_cmp(&s[b]));
            i.map_or((usize::MAX, 0.0), |i| (i, s[i]))
        });
        let mut n = 0;
        for i in 0..self.opts.watched.len() {
            let w = &self.opts.watched[i];
            let positive = top == w.index && top_p >= w.threshold;
            let score = self.label_scores[w.index];
            self.scores[i] = score;
            if let Some(t) = self.detectors[i].feed(frame.index, positive, score) {
                self.emit(i, t, None)?;
                n += 1;
            }
        }
        self.stats.loop_ms += t1.elapsed().as_secs_f64() * 1e3;
        Ok(n)
    }
}

/// Mean absolute difference of two frames over every 7th byte (0-255
/// scale); frames of different sizes or modes differ completely.
fn mean_abs_diff(a: &Frame, b: &Frame) -> f32 {
    let (a, b) = (&a.image, &b.image);
    if (a.width, a.height, a.mode) != (b.width, b.height, b.mode) || a.data.len() != b.data.len() {
        return f32::INFINITY;
    }
    let (mut sum, mut n) = (0u64, 0u64);
    for (x, y) in a.data.iter().zip(&b.data).step_by(7) {
        sum += x.abs_diff(*y) as u64;
        n += 1;
    }
    if n == 0 {
        0.0
    } else {
        sum as f32 / n as f32
    }
}
