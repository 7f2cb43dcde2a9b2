//! Read-ahead for sources whose every frame counts (a folder): a thread
//! takes the next frames (reading and decoding; up to [`AHEAD`] waiting and
//! one more in hand) while the loop classifies the current one. Nothing is dropped and the order is kept; frames go
//! round between the two threads, so a warm read-ahead allocates nothing.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use super::{Frame, FrameSource, Next, SourceError};

/// How many frames the thread may have ready ahead of the loop.
pub const AHEAD: usize = 2;

/// A source read ahead by its own thread.
pub struct Prefetch {
    ready: Receiver<(Result<Next, SourceError>, Frame)>,
    spare: SyncSender<Frame>,
    /// The reading thread, joined when it stops sending.
    thread: Option<std::thread::JoinHandle<()>>,
    /// The source, as errors name it.
    name: String,
    /// The end (or the error that ended it), once seen.
    ended: bool,
}

impl Prefetch {
    pub fn spawn<S: FrameSource + 'static>(mut source: S, name: &str) -> Result<Self, SourceError> {
        let (ready_tx, ready) = sync_channel(AHEAD);
        let (spare, spare_rx) = sync_channel::<Frame>(AHEAD + 2);
        for _ in 0..AHEAD + 1 {
            let _ = spare.try_send(Frame::default());
        }
        let thread = std::thread::Builder::new()
            .name("clip-edge-read".into())
            .spawn(move || {
                // Ends when the loop drops its side, or at the source's end.
                while let Ok(mut frame) = spare_rx.recv() {
                    let r = source.next(&mut frame);
                    let last = !goes_on(&r);
                    if ready_tx.send((r, frame)).is_err() || last {
                        return;
                    }
                }
            })
            .map_err(|e| SourceError::Unavailable {
                spec: name.into(),
                why: format!("cannot start its reading thread: {e}"),
            })?;
        Ok(Prefetch {
            ready,
            spare,
            thread: Some(thread),
            name: name.into(),
            ended: false,
        })
    }
}

impl FrameSource for Prefetch {
    fn next(&mut self, frame: &mut Frame) -> Result<Next, SourceError> {
        if self.ended {
            return Ok(Next::End);
        }
        let Ok((r, mut got)) = self.ready.recv() else {
            // The thread stopped without saying why: it panicked.
            self.ended = true;
            let panicked = self.thread.take().is_some_and(|t| t.join().is_err());
            if panicked {
                return Err(SourceError::Lost {
                    spec: self.name.clone(),
                    why: "its reading thread panicked".into(),
                });
            }
            return Ok(Next::End);
        };
        if !goes_on(&r) {
            self.ended = true;
        }
        // A frame, or a bad one (emptied by the decoder, as the loop's own
        // frame would be).
        if matches!(r, Ok(Next::Frame) | Err(SourceError::Frame { .. })) {
            std::mem::swap(frame, &mut got);
        }
        // The loop's last frame goes back for the thread to fill.
        let _ = self.spare.try_send(got);
        r
    }
}

/// Whether the source has more to give after this answer (a bad frame is
/// skipped and counted, not an end).
fn goes_on(r: &Result<Next, SourceError>) -> bool {
    matches!(
        r,
        Ok(Next::Frame) | Ok(Next::Idle) | Err(SourceError::Frame { .. })
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames 0..n with a bad one at `bad`, then a panic at `panic_at`
    /// (if any) or the end.
    struct Counting {
        at: u64,
        n: u64,
        bad: u64,
        panic_at: Option<u64>,
    }

    impl FrameSource for Counting {
        fn next(&mut self, frame: &mut Frame) -> Result<Next, SourceError> {
            let i = self.at;
            self.at += 1;
            if Some(i) == self.panic_at {
                panic!("a decoder bug");
            }
            if i == self.n {
                return Ok(Next::End);
            }
            frame.index = i;
            if i == self.bad {
                frame.image.reshape(0, 0, crate::preprocess::Mode::Rgb);
                return Err(SourceError::Frame {
                    what: format!("frame {i}"),
                    why: "corrupt".into(),
                });
            }
            frame.reshape_rgb(1, 1)[0] = i as u8;
            Ok(Next::Frame)
        }
    }

    #[test]
    fn every_frame_in_order_a_bad_one_said_and_emptied_then_the_end() {
        let src = Counting {
            at: 0,
            n: 9,
            bad: 4,
            panic_at: None,
        };
        let mut p = Prefetch::spawn(src, "dir:test").unwrap();
        let mut frame = Frame::default();
        let mut seen = Vec::new();
        loop {
            match p.next(&mut frame) {
                Ok(Next::Frame) => seen.push((frame.index, frame.image.data[0])),
                Err(SourceError::Frame { what, .. }) => {
                    assert_eq!(what, "frame 4");
                    assert!(frame.is_empty());
                }
                Ok(Next::End) => break,
                other => panic!("{other:?}"),
            }
        }
        let want: Vec<(u64, u8)> = (0..9).filter(|&i| i != 4).map(|i| (i, i as u8)).collect();
        assert_eq!(seen, want);
        assert!(matches!(p.next(&mut frame), Ok(Next::End)));
    }

    #[test]
    fn a_panic_in_the_reading_thread_is_a_lost_source_not_an_end() {
        let src = Counting {
            at: 0,
            n: 9,
            bad: 99,
            panic_at: Some(2),
        };
        let mut p = Prefetch::spawn(src, "dir:test").unwrap();
        let mut frame = Frame::default();
        assert!(matches!(p.next(&mut frame), Ok(Next::Frame)));
        assert!(matches!(p.next(&mut frame), Ok(Next::Frame)));
        match p.next(&mut frame) {
            Err(SourceError::Lost { spec, why }) => {
                assert_eq!(spec, "dir:test");
                assert!(why.contains("panicked"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }
}
