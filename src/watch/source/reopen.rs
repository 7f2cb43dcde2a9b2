//! A source reopened with backoff when it is lost ([`Reopening`]): a camera
//! unplugged, a stream that drops, a program that dies.

use std::sync::{mpsc, Arc, Mutex};

use super::{Frame, FrameSource, Next, SourceError, SourceNote, IDLE_TICK};

/// Shortest and longest wait between attempts to reopen a lost source.
pub const REOPEN_BACKOFF: (std::time::Duration, std::time::Duration) = (
    std::time::Duration::from_millis(250),
    std::time::Duration::from_secs(10),
);

/// Something that opens a source (again).
pub type Opener = Box<dyn FnMut() -> Result<Box<dyn FrameSource>, SourceError> + Send>;

/// A live source reopened with backoff whenever it is lost (a USB camera
/// unplugged: the device errors, then cannot be opened until it is back).
/// Frame indices go on from where they were. While it is down the loop
/// gets [`Next::Idle`], so it keeps petting the watchdog and sees a stop;
/// each attempt to reopen runs in a thread of its own, so that one that
/// takes long (a camera's host that does not answer, a slow login) does not
/// hold the loop.
pub struct Reopening {
    spec: String,
    open: Arc<Mutex<Opener>>,
    /// The attempt under way: its answer comes on this channel.
    opening: Option<mpsc::Receiver<Result<Box<dyn FrameSource>, SourceError>>>,
    inner: Option<Box<dyn FrameSource>>,
    /// Added to the inner source's indices (it restarts at 0).
    base: u64,
    next_index: u64,
    backoff: std::time::Duration,
    retry_at: std::time::Instant,
    note: Option<SourceNote>,
    dropped_before: u64,
    /// The inner source's end ends this one (a file played to its end);
    /// otherwise an end is a loss (a camera's stream stopped).
    end_ends: bool,
    /// Frames since the inner source was (re)opened: one that is lost
    /// before its first frame waits longer each time, and (with
    /// `end_ends`) a file that fails before its first frame is an error.
    frames_this_run: u64,
    /// When the inner source was (re)opened.
    run_started: std::time::Instant,
    /// A loss was announced and no return since: the source is back at its
    /// first frame (not when a program starts, or a stream's headers come),
    /// and attempts that fail meanwhile announce nothing more.
    down: bool,
    /// Why the last attempt failed, as last logged (said again when it
    /// changes).
    last_why: Option<String>,
}

/// A run of a reopened source that held this long (with frames) makes the
/// next loss wait only the shortest backoff; a shorter one doubles it.
const RUN_HELD: std::time::Duration = std::time::Duration::from_secs(30);

impl Reopening {
    /// `first` is the source as opened at start (an open that fails at
    /// start is an error for the user, not something to wait for).
    pub fn new(spec: &str, first: Box<dyn FrameSource>, open: Opener) -> Self {
        Reopening {
            spec: spec.into(),
            open: Arc::new(Mutex::new(open)),
            opening: None,
            inner: Some(first),
            base: 0,
            next_index: 0,
            backoff: REOPEN_BACKOFF.0,
            retry_at: std::time::Instant::now(),
            note: None,
            dropped_before: 0,
            end_ends: false,
            frames_this_run: 0,
            run_started: std::time::Instant::now(),
            down: false,
            last_why: None,
        }
    }

    /// A source that could not be opened at start (`why`), opened again
    /// with backoff: the loop begins with it lost. For a camera of several,
    /// whose absence must not stop the others.
    pub fn waiting(spec: &str, why: String, open: Opener) -> Self {
        Reopening {
            spec: spec.into(),
            open: Arc::new(Mutex::new(open)),
            opening: None,
            inner: None,
            base: 0,
            next_index: 0,
            backoff: REOPEN_BACKOFF.0,
            retry_at: std::time::Instant::now() + REOPEN_BACKOFF.0,
            last_why: Some(without_spec(spec, &why).to_string()),
            note: Some(SourceNote::Lost(why)),
            dropped_before: 0,
            end_ends: false,
            frames_this_run: 0,
            run_started: std::time::Instant::now(),
            down: true,
        }
    }

    /// As [`Reopening::new`], but the inner source's end is the end (a
    /// program that plays a file and exits 0); a failure after the first
    /// frame reopens (the file plays again from its start, its indices going
    /// on), a failure before it is the caller's error (a file that cannot be
    /// read).
    pub fn until_end(spec: &str, first: Box<dyn FrameSource>, open: Opener) -> Self {
        Reopening {
            end_ends: true,
            ..Self::new(spec, first, open)
        }
    }

    fn lose(&mut self, why: String) {
        if let Some(old) = self.inner.take() {
            self.dropped_before += old.dropped();
        }
        self.base = self.next_index;
        if self.frames_this_run == 0 || self.run_started.elapsed() < RUN_HELD {
            // Dead at once, or soon (a program that exits on start, a
            // stream that dies after a frame): wait longer each time.
            self.backoff = (self.backoff * 2).min(REOPEN_BACKOFF.1);
        } else {
            self.backoff = REOPEN_BACKOFF.0;
        }
        self.retry_at = std::time::Instant::now() + self.backoff;
        if self.down {
            // Still down since the last announced loss: said again only
            // when the reason changes.
            self.failed(&why);
            return;
        }
        log::warn!("{}: source lost ({why}); reopening", self.spec);
        self.down = true;
        self.last_why = Some(why.clone());
        self.note = Some(SourceNote::Lost(why));
    }

    /// An attempt to bring the source back failed (`why`): a warning when
    /// the reason is new (a camera that answers 401 now, a device busy),
    /// else a debug line.
    fn failed(&mut self, why: &str) {
        let why = without_spec(&self.spec, why);
        if self.last_why.as_deref() == Some(why) {
            log::debug!("{}: still down ({why})", self.spec);
        } else {
            log::warn!("{}: still down: {why}", self.spec);
            self.last_why = Some(why.to_string());
        }
    }

    /// Starts an attempt to reopen in a thread of its own (on this thread
    /// if no thread can start); its answer is taken by [`Reopening::opened`].
    fn start_opening(&mut self) {
        let (tx, rx) = mpsc::channel();
        let open = self.open.clone();
        let attempt = move || {
            // An attempt that panicked left the opener as it was.
            let mut open = open.lock().unwrap_or_else(|p| p.into_inner());
            let _ = tx.send(open());
        };
        let spawned = std::thread::Builder::new()
            .name("clip-edge-reopen".into())
            .spawn(attempt.clone());
        if let Err(e) = spawned {
            log::debug!(
                "{}: no thread to reopen in ({e}); reopening here",
                self.spec
            );
            attempt();
        }
        self.opening = Some(rx);
    }

    /// The answer of the attempt under way, if it came within `wait`.
    fn opened(
        &mut self,
        wait: std::time::Duration,
    ) -> Option<Result<Box<dyn FrameSource>, SourceError>> {
        let rx = self.opening.as_ref()?;
        let r = match rx.recv_timeout(wait) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => return None,
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(SourceError::Lost {
                spec: self.spec.clone(),
                why: "the attempt to reopen it panicked".into(),
            }),
        };
        self.opening = None;
        Some(r)
    }
}

impl FrameSource for Reopening {
    fn next(&mut self, frame: &mut Frame) -> Result<Next, SourceError> {
        let Some(inner) = self.inner.as_mut() else {
            let now = std::time::Instant::now();
            if self.opening.is_none() {
                if now < self.retry_at {
                    std::thread::sleep((self.retry_at - now).min(IDLE_TICK));
                    return Ok(Next::Idle);
                }
                self.start_opening();
            }
            let Some(opened) = self.opened(IDLE_TICK) else {
                return Ok(Next::Idle);
            };
            match opened {
                Ok(s) => {
                    log::debug!("{}: reopened; back at its first frame", self.spec);
                    self.inner = Some(s);
                    self.frames_this_run = 0;
                    self.run_started = std::time::Instant::now();
                }
                Err(e) => {
                    self.failed(&e.to_string());
                    self.backoff = (self.backoff * 2).min(REOPEN_BACKOFF.1);
                    self.retry_at = std::time::Instant::now() + self.backoff;
                }
            }
            return Ok(Next::Idle);
        };
        match inner.next(frame) {
            Ok(Next::Frame) => {
                frame.index += self.base;
                self.next_index = frame.index + 1;
                self.frames_this_run += 1;
                if self.down {
                    log::warn!("{}: source back", self.spec);
                    self.down = false;
                    self.last_why = None;
                    self.note = Some(SourceNote::Back);
                }
                Ok(Next::Frame)
            }
            Ok(Next::Idle) => Ok(Next::Idle),
            Ok(Next::End) if self.end_ends => Ok(Next::End),
            Ok(Next::End) => {
                self.lose("the stream ended".into());
                Ok(Next::Idle)
            }
            Err(SourceError::Lost { why, .. }) if self.end_ends && self.frames_this_run == 0 => {
                Err(SourceError::Lost {
                    spec: self.spec.clone(),
                    why,
                })
            }
            Err(SourceError::Lost { why, .. }) => {
                self.lose(why);
                Ok(Next::Idle)
            }
            Err(SourceError::Io { path, source }) => {
                self.lose(format!("{}: {source}", path.display()));
                Ok(Next::Idle)
            }
            Err(e) => Err(e),
        }
    }

    fn dropped(&self) -> u64 {
        self.dropped_before + self.inner.as_ref().map_or(0, |s| s.dropped())
    }

    fn take_note(&mut self) -> Option<SourceNote> {
        self.note.take()
    }

    fn close(&mut self, wait: std::time::Duration) {
        let t0 = std::time::Instant::now();
        // An attempt to reopen under way may be taking the device now: its
        // answer waited for, and closed too.
        if let Some(Ok(opened)) = self.opened(wait) {
            self.inner = Some(opened);
        }
        if let Some(inner) = self.inner.as_mut() {
            inner.close(wait.saturating_sub(t0.elapsed()));
        }
    }
}

/// An error's words without the `--source SPEC: ` it starts with (the
/// line names the source already: once is enough).
fn without_spec<'a>(spec: &str, why: &'a str) -> &'a str {
    why.strip_prefix("--source ")
        .and_then(|w| w.strip_prefix(spec))
        .and_then(|w| w.strip_prefix(": "))
        .unwrap_or(why)
}

#[cfg(test)]
mod tests {
    use super::super::tests::one_pixel_frames;
    use super::super::MemorySource;
    use super::*;

    /// Plays `frames` then fails as lost (a program that dies), or fails at
    /// once when `frames` is empty.
    struct Dies(MemorySource);

    impl FrameSource for Dies {
        fn next(&mut self, frame: &mut Frame) -> Result<Next, SourceError> {
            match self.0.next(frame)? {
                Next::End => Err(SourceError::Lost {
                    spec: "p".into(),
                    why: "exited (exit status: 1)".into(),
                }),
                n => Ok(n),
            }
        }
    }

    /// A reopening that takes long (a camera's host that does not answer)
    /// runs in its own thread: the loop gets `Idle` within a tick meanwhile,
    /// then the source's frames.
    #[test]
    fn a_slow_reopening_does_not_hold_the_loop() {
        let slow = std::time::Duration::from_millis(1500);
        let open: Opener = Box::new(move || {
            std::thread::sleep(slow);
            Ok(Box::new(MemorySource::new(one_pixel_frames(3), 1)) as Box<dyn FrameSource>)
        });
        let mut r = Reopening::waiting("http://cam", "no answer".into(), open);
        assert!(matches!(r.take_note(), Some(SourceNote::Lost(_))));
        let mut f = Frame::default();
        let t0 = std::time::Instant::now();
        let mut idles = 0;
        loop {
            let t = std::time::Instant::now();
            let next = r.next(&mut f).unwrap();
            // A tick's wait, and a loaded machine's pause; the opening's
            // 1.5 s would be a held loop.
            assert!(
                t.elapsed() < 5 * IDLE_TICK,
                "one call held the loop {:?}",
                t.elapsed()
            );
            match next {
                Next::Idle => idles += 1,
                Next::Frame => break,
                Next::End => panic!("ended"),
            }
            assert!(t0.elapsed() < std::time::Duration::from_secs(10));
        }
        assert!(t0.elapsed() >= slow && idles >= 5, "{idles} idle calls");
        assert_eq!(r.take_note(), Some(SourceNote::Back));
    }

    #[test]
    fn a_file_source_that_fails_before_its_first_frame_is_an_error_after_one_a_restart() {
        let dies = |n: u8| -> Box<dyn FrameSource> {
            Box::new(Dies(MemorySource::new(one_pixel_frames(n), 1)))
        };
        // Fails at once: the caller's error, no reopening.
        let mut r = Reopening::until_end("ffmpeg:x", dies(0), Box::new(move || Ok(dies(0))));
        let mut f = Frame::default();
        let e = r.next(&mut f).unwrap_err().to_string();
        assert!(e.contains("ffmpeg:x") && e.contains("exited"), "{e}");
        // Fails after frames: lost, reopened, indices going on.
        let mut r = Reopening::until_end("ffmpeg:x", dies(3), Box::new(move || Ok(dies(3))));
        let mut seen = Vec::new();
        let t0 = std::time::Instant::now();
        while seen.len() < 5 {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(10),
                "{seen:?}"
            );
            if r.next(&mut f).unwrap() == Next::Frame {
                seen.push(f.index);
            }
        }
        assert_eq!(seen, [0, 1, 2, 3, 4]);
        assert_eq!(r.take_note(), Some(SourceNote::Back));
    }
    /// Opens, then is lost before any frame (a program that starts and
    /// exits: ffmpeg on a camera that refuses it).
    struct DeadAtOnce;

    impl FrameSource for DeadAtOnce {
        fn next(&mut self, _: &mut Frame) -> Result<Next, SourceError> {
            Err(SourceError::Lost {
                spec: "cam".into(),
                why: "ffmpeg exited (exit status: 1)".into(),
            })
        }
    }

    /// A camera that is down: each reopening starts a program that dies at
    /// once. The loss is announced once, never a return, until a frame
    /// comes: then the return, once.
    #[test]
    fn a_source_is_back_at_its_first_frame_not_when_it_opens() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let opens = Arc::new(AtomicU32::new(0));
        let o = opens.clone();
        let open: Opener = Box::new(move || -> Result<Box<dyn FrameSource>, SourceError> {
            if o.fetch_add(1, Ordering::SeqCst) < 2 {
                Ok(Box::new(DeadAtOnce))
            } else {
                Ok(Box::new(MemorySource::new(one_pixel_frames(3), 1)))
            }
        });
        let mut r = Reopening::new("cam", Box::new(DeadAtOnce), open);
        let mut f = Frame::default();
        let mut notes = Vec::new();
        let t0 = std::time::Instant::now();
        let frame = loop {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(20),
                "{notes:?}"
            );
            let next = r.next(&mut f).unwrap();
            notes.extend(r.take_note());
            if next == Next::Frame {
                break f.index;
            }
        };
        assert_eq!(opens.load(Ordering::SeqCst), 3);
        assert_eq!(
            notes,
            [
                SourceNote::Lost("ffmpeg exited (exit status: 1)".into()),
                SourceNote::Back
            ]
        );
        assert_eq!(frame, 0);
    }
}
