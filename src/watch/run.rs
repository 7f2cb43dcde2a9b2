//! The loop over a source: frames stepped at the pace asked, idle ticks
//! observed, a lost source noted, a stop or a reload honoured.

use super::*;

impl Watcher<'_> {
    /// Runs `source` to its end (or until `stop` is set), at most `fps`
    /// frames a second whatever the source; ends open events with "source_end" or "shutdown".
    pub fn run(
        &mut self,
        source: &mut dyn FrameSource,
        stop: &AtomicBool,
    ) -> Result<Stats, WatchError> {
        self.run_observed(source, stop, &mut |_: &Watcher<'_>, _: Option<&Frame>| {})
    }

    /// As [`Watcher::run`], calling `observe` after every frame (with the
    /// frame) and at least every [`source::IDLE_TICK`] while a live source
    /// is silent (with `None`): the service's watchdog, status and HTTP
    /// state live there.
    pub fn run_observed(
        &mut self,
        source: &mut dyn FrameSource,
        stop: &AtomicBool,
        observe: &mut dyn FnMut(&Watcher<'_>, Option<&Frame>),
    ) -> Result<Stats, WatchError> {
        self.run_until(source, stop, &AtomicBool::new(false), observe)?;
        Ok(self.stats)
    }

    /// As [`Watcher::run_observed`], also returning (with events left
    /// open, [`Ended::Paused`]) as soon as `pause` is set: the service
    /// reloads, then runs this watcher again or ends its events and
    /// replaces it.
    pub fn run_until(
        &mut self,
        source: &mut dyn FrameSource,
        stop: &AtomicBool,
        pause: &AtomicBool,
        observe: &mut dyn FnMut(&Watcher<'_>, Option<&Frame>),
    ) -> Result<Ended, WatchError> {
        let start = Instant::now() - Duration::from_secs_f64(self.stats.wall_ms / 1e3);
        let period = self.opts.fps.map(source::period);
        let mut frame = Frame::default();
        let mut due = Instant::now();
        // Why the frames now are skipped, once said.
        let mut skipping: Option<String> = None;
        let reason = loop {
            if stop.load(Ordering::Relaxed) {
                break "shutdown";
            }
            if pause.load(Ordering::Relaxed) {
                self.bad.flush();
                self.stats.wall_ms = start.elapsed().as_secs_f64() * 1e3;
                return Ok(Ended::Paused);
            }
            self.upkeep();
            self.bad.tick();
            let t0 = Instant::now();
            let next = source.next(&mut frame);
            self.stats.source_ms += t0.elapsed().as_secs_f64() * 1e3;
            if let Some(note) = source.take_note() {
                self.source_note(note)?;
            }
            match next {
                Ok(Next::Frame) => {}
                Ok(Next::Idle) => {
                    observe(self, None);
                    continue;
                }
                Ok(Next::End) => break "source_end",
                Err(SourceError::Frame { what, why }) => {
                    // One bad frame (a corrupt file or JPEG) is skipped, not
                    // fatal; the loop is alive (the watchdog's pets go on).
                    self.bad.skipped(&what, &why);
                    self.stats.bad_frames += 1;
                    self.stats.wall_ms = start.elapsed().as_secs_f64() * 1e3;
                    observe(self, None);
                    continue;
                }
                Err(e) => {
                    self.bad.flush();
                    self.end_all("source_error")?;
                    return Err(e.into());
                }
            }
            match self.step(&frame) {
                Ok(_) => skipping = None,
                Err(WatchError::Frame { frame: index, why }) => {
                    // Said once for a run of frames skipped for one reason
                    // (a camera now at a size the zones do not fit).
                    if skipping.as_deref() != Some(why.as_str()) {
                        log::warn!("frame {index} skipped: {why}");
                        skipping = Some(why);
                    }
                    self.stats.wall_ms = start.elapsed().as_secs_f64() * 1e3;
                    // It came (the camera is not silent), decoded, and was
                    // not classified: the status page shows it, and why.
                    observe(self, Some(&frame));
                    continue;
                }
                Err(e) => {
                    self.bad.flush();
                    // The camera stops on an engine error: its open events
                    // end first (a GPIO line, a retained state left on).
                    if let Err(end) = self.end_all("error") {
                        log::warn!("ending the open events: {end}");
                    }
                    return Err(e);
                }
            }
            for sink in &mut self.sinks {
                sink.scores(&self.opts.watched, &self.scores);
            }
            self.stats.dropped = self.counted_before.0 + source.dropped();
            self.stats.wall_ms = start.elapsed().as_secs_f64() * 1e3;
            observe(self, Some(&frame));
            if let Some(p) = period {
                due += p;
                // Late: go on at once (no catching up). Early: sleep in
                // short steps, so that a stop is seen at once.
                if due <= Instant::now() {
                    due = Instant::now();
                }
                loop {
                    let now = Instant::now();
                    if due <= now || stop.load(Ordering::Relaxed) || pause.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep((due - now).min(source::IDLE_TICK));
                }
            }
        };
        self.bad.flush();
        self.end_all(reason)?;
        self.flush_log();
        self.stats.dropped = self.counted_before.0 + source.dropped();
        self.stats.wall_ms = start.elapsed().as_secs_f64() * 1e3;
        Ok(if reason == "shutdown" {
            Ended::Shutdown
        } else {
            Ended::SourceEnd
        })
    }
}

/// Bad frames said one by one, at most [`BAD_FRAMES_SAID`] of them, then
/// counted and said together at most every [`BAD_FRAMES_EVERY`] (a camera
/// sending one corrupt JPEG in five would otherwise write thousands of
/// lines an hour).
#[derive(Debug, Default)]
pub(super) struct BadFrames {
    said: u32,
    /// Bad frames not said yet, the last one's words, and when the count
    /// was last said.
    unsaid: u64,
    last: String,
    said_at: Option<Instant>,
}

/// Bad frames said one line each before they are only counted.
const BAD_FRAMES_SAID: u32 = 10;
/// How often the count of bad frames not said is said.
const BAD_FRAMES_EVERY: Duration = Duration::from_secs(60);

impl BadFrames {
    fn skipped(&mut self, what: &str, why: &str) {
        if self.said < BAD_FRAMES_SAID {
            self.said += 1;
            let more = if self.said == BAD_FRAMES_SAID {
                " (further bad frames are counted, and said once a minute)"
            } else {
                ""
            };
            log::warn!("{what}: {why}; frame skipped{more}");
            self.said_at = Some(Instant::now());
            return;
        }
        self.unsaid += 1;
        self.last = format!("{what}: {why}");
        self.tick();
    }

    /// Says the count now if a minute has passed since the last line (a
    /// burst that stopped is not left unsaid until the next bad frame).
    fn tick(&mut self) {
        if self.unsaid > 0 && self.said_at.is_none_or(|t| t.elapsed() >= BAD_FRAMES_EVERY) {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.unsaid > 0 {
            log::warn!(
                "{} more bad frames skipped (the last: {})",
                self.unsaid,
                self.last
            );
            self.unsaid = 0;
            self.said_at = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_frames_are_said_ten_times_then_counted() {
        let mut bad = BadFrames::default();
        for i in 0..15 {
            bad.skipped(&format!("frame {i}"), "cannot decode");
        }
        assert_eq!((bad.said, bad.unsaid), (BAD_FRAMES_SAID, 5));
        assert!(bad.last.starts_with("frame 14"), "{}", bad.last);
        // Within the minute: still counted; at the end: said.
        bad.tick();
        assert_eq!(bad.unsaid, 5);
        bad.flush();
        assert_eq!(bad.unsaid, 0);
        // A minute later a tick says what came meanwhile.
        bad.skipped("frame 15", "cannot decode");
        bad.said_at = Instant::now().checked_sub(BAD_FRAMES_EVERY);
        bad.tick();
        assert_eq!(bad.unsaid, 0);
    }
}
