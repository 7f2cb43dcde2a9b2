//! A live source in its own thread behind a bounded queue ([`LiveQueue`]):
//! the oldest frame dropped when the loop falls behind, bad frames skipped
//! and counted, a run of them the source lost.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

use super::{Frame, FrameSource, Next, SourceError, IDLE_TICK};

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
    use super::super::tests::one_pixel_frames;
    use super::super::MemorySource;
    use super::*;

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
}
