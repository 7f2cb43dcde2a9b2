//! Live sources: a source in its own thread behind a bounded queue
//! ([`LiveQueue`]), and a source reopened with backoff when it is lost
//! ([`Reopening`]).

use std::collections::VecDeque;
use std::sync::{mpsc, Arc, Condvar, Mutex};

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
            last_why: Some(why.clone()),
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

/// Bad frames whose messages wait for the loop; past this many, a bad
/// frame is still counted, its message replaced by a generic one.
const BAD_BACKLOG: usize = 8;

/// Bad frames in a row after which a live source counts as lost (a camera
/// that sends only undecodable frames is reopened, a pipe of them ends):
/// about two seconds at 30 fps.
pub const BAD_RUN_LOST: u32 = 60;

struct Shared {
    queue: VecDeque<Frame>,
    free: Vec<Frame>,
    dropped: u64,
    /// Bad frames (a corrupt JPEG) not yet handed to the loop, and the
    /// first [`BAD_BACKLOG`] of their (what, why).
    bad: u64,
    bad_why: VecDeque<(String, String)>,
    end: Option<Result<(), String>>,
    /// The [`LiveQueue`] was dropped (a reload gave its camera another
    /// source, or removed the camera): the thread stops after the source's
    /// current read and drops the source (a V4L2 device closed, an HTTP
    /// stream hung up), instead of reading it for nobody.
    closed: bool,
    /// The thread has returned (its source dropped).
    exited: bool,
}

/// How long a reload waits for a source it closes to let go of its device
/// ([`FrameSource::close`]; a V4L2 camera's read times out within 5 s).
pub const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(6);

/// A live source in its own thread: the newest `depth` frames wait for the
/// loop; older ones are dropped and counted. A bad frame (one corrupt JPEG)
/// reaches the loop as [`SourceError::Frame`], which skips it; only another
/// error ends the source. Buffers circulate between the thread and the loop
/// (no allocation once warm). Dropping it stops the thread, which drops the
/// source once its current read returns (a camera's reads time out within
/// seconds; `stdin:mjpeg`'s waits for its next bytes).
pub struct LiveQueue {
    shared: Arc<(Mutex<Shared>, Condvar)>,
    dropped: u64,
}

impl LiveQueue {
    pub fn spawn<S: FrameSource + Send + 'static>(source: S, depth: usize) -> Self {
        let shared = Arc::new((
            Mutex::new(Shared {
                queue: VecDeque::with_capacity(depth + 1),
                free: (0..depth + 2).map(|_| Frame::default()).collect(),
                dropped: 0,
                bad: 0,
                bad_why: VecDeque::with_capacity(BAD_BACKLOG),
                end: None,
                closed: false,
                exited: false,
            }),
            Condvar::new(),
        ));
        let s = shared.clone();
        std::thread::Builder::new()
            .name("clip-edge-source".into())
            .spawn(move || {
                let _ends = EndOnPanic(s.clone());
                // Dropped before `_ends` says the thread has returned.
                let mut source = source;
                let (lock, cv) = &*s;
                let mut bad_run = 0u32;
                loop {
                    let mut buf = lock
                        .lock()
                        .map(|mut g| g.free.pop().unwrap_or_default())
                        .unwrap_or_default();
                    let r = source.next(&mut buf);
                    let Ok(mut g) = lock.lock() else { return };
                    if g.closed {
                        return;
                    }
                    match r {
                        Ok(Next::Frame) => {
                            bad_run = 0;
                            if g.queue.len() >= depth {
                                if let Some(old) = g.queue.pop_front() {
                                    g.free.push(old);
                                    g.dropped += 1;
                                }
                            }
                            g.queue.push_back(buf);
                        }
                        Ok(Next::End) => g.end = Some(Ok(())),
                        Ok(Next::Idle) => g.free.push(buf),
                        Err(SourceError::Frame { what, why }) => {
                            g.free.push(buf);
                            bad_run += 1;
                            if bad_run >= BAD_RUN_LOST {
                                g.end = Some(Err(format!(
                                    "{bad_run} frames in a row did not decode, the last: {what}: {why}"
                                )));
                            } else {
                                g.bad += 1;
                                if g.bad_why.len() < BAD_BACKLOG {
                                    g.bad_why.push_back((what, why));
                                }
                            }
                        }
                        // A loss's own reason (the queue names the source
                        // when it hands it on).
                        Err(SourceError::Lost { why, .. }) => g.end = Some(Err(why)),
                        Err(e) => g.end = Some(Err(e.to_string())),
                    }
                    let done = g.end.is_some();
                    drop(g);
                    cv.notify_all();
                    if done {
                        return;
                    }
                }
            })
            .expect("spawn the source thread");
        LiveQueue { shared, dropped: 0 }
    }
}

impl LiveQueue {
    /// Tells the thread to stop after its current read; with `wait`, waits
    /// that long at most until it has dropped the source.
    fn stop(&self, wait: std::time::Duration) {
        let (lock, cv) = &*self.shared;
        let mut g = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        g.closed = true;
        let _ = cv.wait_timeout_while(g, wait, |g| !g.exited);
    }
}

impl Drop for LiveQueue {
    fn drop(&mut self) {
        self.stop(std::time::Duration::ZERO);
    }
}

/// What the loop sees when the source thread panicked while holding the
/// queue's lock.
fn thread_panicked() -> SourceError {
    SourceError::Lost {
        spec: "live source".into(),
        why: "the source thread panicked".into(),
    }
}

/// Says the thread has returned, once its source is dropped, and ends the
/// queue with an error when the thread unwinds (a panic in the source), so
/// that the loop sees the source lost instead of idling on.
struct EndOnPanic(Arc<(Mutex<Shared>, Condvar)>);

impl Drop for EndOnPanic {
    fn drop(&mut self) {
        let (lock, cv) = &*self.0;
        let mut g = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if std::thread::panicking() && g.end.is_none() {
            g.end = Some(Err("the source thread panicked".into()));
        }
        g.exited = true;
        drop(g);
        cv.notify_all();
    }
}

impl FrameSource for LiveQueue {
    fn next(&mut self, frame: &mut Frame) -> Result<Next, SourceError> {
        let (lock, cv) = &*self.shared;
        let mut g = lock.lock().map_err(|_| thread_panicked())?;
        loop {
            if g.bad > 0 {
                g.bad -= 1;
                let (what, why) = g.bad_why.pop_front().unwrap_or_else(|| {
                    (
                        "live source".into(),
                        format!("a bad frame (more than {BAD_BACKLOG} waited: message not kept)"),
                    )
                });
                return Err(SourceError::Frame { what, why });
            }
            if let Some(mut f) = g.queue.pop_front() {
                std::mem::swap(frame, &mut f);
                g.free.push(f);
                self.dropped = g.dropped;
                return Ok(Next::Frame);
            }
            match &g.end {
                Some(Ok(())) => return Ok(Next::End),
                Some(Err(e)) => {
                    return Err(SourceError::Lost {
                        spec: "live source".into(),
                        why: e.clone(),
                    })
                }
                None => {}
            }
            let (guard, timeout) = cv
                .wait_timeout(g, IDLE_TICK)
                .map_err(|_| thread_panicked())?;
            g = guard;
            if timeout.timed_out() && g.queue.is_empty() && g.end.is_none() {
                return Ok(Next::Idle);
            }
        }
    }

    fn dropped(&self) -> u64 {
        self.dropped
    }

    fn close(&mut self, wait: std::time::Duration) {
        self.stop(wait);
    }
}

#[cfg(test)]
mod tests {
    use super::super::MemorySource;
    use super::*;

    /// `n` frames of one pixel, frame `i` of value `i`.
    fn one_pixel_frames(n: u8) -> Vec<Frame> {
        (0..n)
            .map(|i| {
                let mut f = Frame::default();
                f.reshape_rgb(1, 1).fill(i);
                f
            })
            .collect()
    }

    #[test]
    fn live_queue_delivers_in_order_and_counts_drops() {
        let frames = one_pixel_frames(50);
        let mut q = LiveQueue::spawn(MemorySource::new(frames, 1), 2);
        let mut f = Frame::default();
        let mut seen = Vec::new();
        loop {
            match q.next(&mut f).unwrap() {
                Next::Frame => seen.push(f.index),
                Next::Idle => continue,
                Next::End => break,
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        assert_eq!(*seen.last().unwrap(), 49);
        assert_eq!(seen.len() as u64 + q.dropped(), 50);
    }

    /// An endless source of one-pixel frames, a read every millisecond,
    /// that says when it is dropped.
    struct Endless {
        index: u64,
        dropped: std::sync::mpsc::Sender<u64>,
    }

    impl FrameSource for Endless {
        fn next(&mut self, frame: &mut Frame) -> Result<Next, SourceError> {
            std::thread::sleep(std::time::Duration::from_millis(1));
            frame.reshape_rgb(1, 1).fill(0);
            frame.index = self.index;
            self.index += 1;
            Ok(Next::Frame)
        }
    }

    impl Drop for Endless {
        fn drop(&mut self) {
            let _ = self.dropped.send(self.index);
        }
    }

    #[test]
    fn closing_a_live_queue_drops_its_source_before_it_returns() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut q = LiveQueue::spawn(
            Endless {
                index: 0,
                dropped: tx,
            },
            2,
        );
        let mut f = Frame::default();
        while q.next(&mut f).unwrap() != Next::Frame {}
        assert!(
            rx.try_recv().is_err(),
            "the source went with the queue alive"
        );
        // Dropped by the time `close` returns (a camera a reload starts on
        // the same device finds it free).
        q.close(std::time::Duration::from_secs(5));
        let reads = rx.try_recv().expect("the source outlived its close");
        drop(q);
        assert!(reads >= 1);
    }

    /// Every `every`-th frame of `inner` is bad (a corrupt JPEG).
    struct SomeBad {
        inner: MemorySource,
        every: u64,
        calls: u64,
    }

    impl FrameSource for SomeBad {
        fn next(&mut self, frame: &mut Frame) -> Result<Next, SourceError> {
            self.calls += 1;
            let r = self.inner.next(frame)?;
            if r == Next::Frame && self.calls.is_multiple_of(self.every) {
                return Err(SourceError::Frame {
                    what: format!("frame {}", frame.index),
                    why: "corrupt".into(),
                });
            }
            Ok(r)
        }
    }

    #[test]
    fn a_live_source_of_only_bad_frames_is_lost() {
        let frames = vec![Frame::default(); 200];
        let source = SomeBad {
            inner: MemorySource::new(frames, 1),
            every: 1,
            calls: 0,
        };
        let mut q = LiveQueue::spawn(source, 2);
        let mut f = Frame::default();
        let mut bad = 0;
        let why = loop {
            match q.next(&mut f) {
                Ok(Next::Idle) => continue,
                Err(SourceError::Frame { .. }) => bad += 1,
                Err(SourceError::Lost { why, .. }) => break why,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(bad, BAD_RUN_LOST - 1);
        assert!(why.contains("60 frames in a row did not decode"), "{why}");
    }

    #[test]
    fn live_queue_skips_bad_frames_and_goes_on() {
        let frames = one_pixel_frames(60);
        // Slow and fast consumers: bad frames past the backlog keep their count.
        for pause_ms in [0, 2] {
            let source = SomeBad {
                inner: MemorySource::new(frames.clone(), 1),
                every: 4,
                calls: 0,
            };
            let mut q = LiveQueue::spawn(source, 2);
            let mut f = Frame::default();
            let (mut seen, mut bad) = (Vec::new(), Vec::new());
            loop {
                match q.next(&mut f) {
                    Ok(Next::Frame) => seen.push(f.index),
                    Ok(Next::Idle) => continue,
                    Ok(Next::End) => break,
                    Err(SourceError::Frame { what, why }) => bad.push(format!("{what}: {why}")),
                    Err(e) => panic!("the source ended on a bad frame: {e}"),
                }
                std::thread::sleep(std::time::Duration::from_millis(pause_ms));
            }
            assert_eq!(bad.len(), 15, "{bad:?}");
            // The messages the backlog kept are the source's own, in order;
            // the others say why they have none.
            let kept: Vec<&String> = bad
                .iter()
                .filter(|b| !b.contains("message not kept"))
                .collect();
            assert!(kept.len() >= BAD_BACKLOG.min(15), "{bad:?}");
            let mut last = None;
            for b in kept {
                let frame: u64 = b
                    .strip_prefix("frame ")
                    .and_then(|r| r.strip_suffix(": corrupt"))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("{b:?} in {bad:?}"));
                assert!(
                    (frame + 1).is_multiple_of(4) && last < Some(frame),
                    "{bad:?}"
                );
                last = Some(frame);
            }
            assert!(seen.iter().all(|i| !(i + 1).is_multiple_of(4)), "{seen:?}");
            assert_eq!(seen.len() as u64 + q.dropped() + 15, 60, "{seen:?}");
        }
    }

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
