//! Read-ahead for sources whose every frame counts (a folder): a thread
//! takes the next frames (reading and decoding) while the loop classifies
//! the current one. Nothing is dropped and the order is kept; frames go
//! round between the two threads, so a warm read-ahead allocates nothing.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use super::{Frame, FrameSource, Next, SourceError};

/// How many frames the thread may have ready ahead of the loop.
pub const AHEAD: usize = 2;

/// A source read ahead by its own thread.
pub struct Prefetch {
    ready: Receiver<(Result<Next, SourceError>, Frame)>,
    spare: SyncSender<Frame>,
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
        std::thread::Builder::new()
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
            self.ended = true;
            return Ok(Next::End);
        };
        if !goes_on(&r) {
            self.ended = true;
        }
        if matches!(r, Ok(Next::Frame)) {
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
