//! `stdin:mjpeg`: concatenated JPEGs on a byte stream (a pipe from
//! `rpicam-vid` or `ffmpeg`), split by their markers.

use std::io::Read;

use super::{decode_into, Decode, Frame, FrameSource, Next, SourceError, MAX_JPEG_BYTES};

/// Concatenated JPEGs on a byte stream, split by their markers (a marker
/// segment's length is skipped, so an embedded thumbnail cannot end a frame;
/// in entropy-coded data 0xFF is always stuffed).
pub struct MjpegStream<R> {
    reader: R,
    name: String,
    buf: Vec<u8>,
    /// Bytes of `buf` from `start` not yet consumed.
    start: usize,
    jpeg: Vec<u8>,
    index: u64,
    eof: bool,
    decode: Decode,
}

impl<R: Read> MjpegStream<R> {
    pub fn new(reader: R, name: &str) -> Self {
        MjpegStream {
            reader,
            name: name.into(),
            buf: Vec::with_capacity(1 << 16),
            start: 0,
            jpeg: Vec::new(),
            index: 0,
            eof: false,
            decode: Decode::Exact,
        }
    }

    /// Decodes the frames the way `decode` says.
    pub fn decoding(mut self, decode: Decode) -> Self {
        self.decode = decode;
        self
    }

    /// Reads more of the stream into `buf`; false at end of stream.
    fn fill(&mut self) -> Result<bool, SourceError> {
        if self.eof {
            return Ok(false);
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + (1 << 16), 0);
        let n = loop {
            match self.reader.read(&mut self.buf[old..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    self.buf.truncate(old);
                    return Err(SourceError::Io {
                        path: self.name.clone().into(),
                        source,
                    });
                }
            }
        };
        self.buf.truncate(old + n);
        if n == 0 {
            self.eof = true;
        }
        Ok(n > 0)
    }

    /// The next whole JPEG's bytes into `self.jpeg`; false at a clean end.
    pub fn next_jpeg(&mut self) -> Result<bool, SourceError> {
        // Find SOI.
        loop {
            let hay = &self.buf[self.start..];
            if let Some(p) = hay.windows(2).position(|w| w == [0xFF, 0xD8]) {
                self.start += p;
                break;
            }
            // Keep a trailing 0xFF: it may start the marker.
            self.start = self.buf.len().saturating_sub(1).max(self.start);
            if !self.fill()? {
                return Ok(false);
            }
        }
        // Walk the markers from after SOI.
        let mut pos = 2usize; // relative to start
        let mut in_scan = false;
        loop {
            let need = |this: &mut Self, n: usize| -> Result<bool, SourceError> {
                while this.buf.len() - this.start < n {
                    if n > MAX_JPEG_BYTES {
                        return Err(
                            this.skip_bad(format!("a JPEG larger than {MAX_JPEG_BYTES} bytes"))
                        );
                    }
                    if !this.fill()? {
                        return Ok(false);
                    }
                }
                Ok(true)
            };
            if !need(self, pos + 2)? {
                return self.truncated();
            }
            let b = &self.buf[self.start..];
            if in_scan {
                if b[pos] != 0xFF {
                    pos += 1;
                    continue;
                }
                match b[pos + 1] {
                    0x00 | 0xD0..=0xD7 | 0xFF => {
                        pos += if b[pos + 1] == 0xFF { 1 } else { 2 };
                        continue;
                    }
                    _ => in_scan = false,
                }
            }
            if b[pos] != 0xFF {
                return Err(self.skip_bad(format!("no JPEG marker at byte {pos}")));
            }
            let marker = b[pos + 1];
            match marker {
                0xFF => pos += 1, // fill byte
                0xD9 => {
                    let end = self.start + pos + 2;
                    self.jpeg.clear();
                    self.jpeg.extend_from_slice(&self.buf[self.start..end]);
                    self.start = end;
                    return Ok(true);
                }
                0x01 | 0xD0..=0xD7 => pos += 2,
                _ => {
                    if !need(self, pos + 4)? {
                        return self.truncated();
                    }
                    let b = &self.buf[self.start..];
                    let len = u16::from_be_bytes([b[pos + 2], b[pos + 3]]) as usize;
                    pos += 2 + len;
                    if marker == 0xDA {
                        in_scan = true;
                    }
                }
            }
        }
    }

    /// A frame that cannot be split out of the stream: counted as a frame
    /// (its index taken) and skipped, the search for the next one starting
    /// after its start-of-image marker.
    fn skip_bad(&mut self, why: String) -> SourceError {
        let e = SourceError::Frame {
            what: format!("{} frame {}", self.name, self.index),
            why,
        };
        self.start = (self.start + 2).min(self.buf.len());
        self.index += 1;
        e
    }

    fn truncated(&mut self) -> Result<bool, SourceError> {
        // A stream cut mid-frame (the camera process died): the frame is
        // lost, the stream is over.
        log::warn!(
            "{}: the stream ended inside frame {}",
            self.name,
            self.index
        );
        self.start = self.buf.len();
        Ok(false)
    }
}

impl<R: Read + Send> FrameSource for MjpegStream<R> {
    fn next(&mut self, frame: &mut Frame) -> Result<Next, SourceError> {
        if !self.next_jpeg()? {
            return Ok(Next::End);
        }
        let what = format!("{} frame {}", self.name, self.index);
        frame.index = self.index;
        self.index += 1;
        decode_into(&self.jpeg, &what, frame, self.decode)?;
        Ok(Next::Frame)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::jpeg;
    use super::*;

    /// A reader handing out a few bytes at a time (a pipe).
    struct Trickle(Vec<u8>, usize, usize);
    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.2.min(buf.len()).min(self.0.len() - self.1);
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }

    #[test]
    fn concatenated_jpegs_split_exactly() {
        let parts = [jpeg(33, 17, 3), jpeg(8, 8, 7), jpeg(64, 48, 11)];
        for chunk in [1, 7, 4096] {
            let mut all = b"garbage".to_vec();
            for p in &parts {
                all.extend_from_slice(p);
            }
            let mut s = MjpegStream::new(Trickle(all, 0, chunk), "test");
            for p in &parts {
                assert!(s.next_jpeg().unwrap());
                assert_eq!(&s.jpeg, p, "chunk {chunk}");
            }
            assert!(!s.next_jpeg().unwrap());
        }
    }

    #[test]
    fn a_cut_stream_ends_cleanly() {
        let mut all = jpeg(16, 16, 5);
        let second = jpeg(16, 16, 9);
        all.extend_from_slice(&second[..second.len() / 2]);
        let mut s = MjpegStream::new(Trickle(all, 0, 100), "test");
        let mut f = Frame::default();
        assert_eq!(s.next(&mut f).unwrap(), Next::Frame);
        assert_eq!((f.image.width, f.image.height, f.index), (16, 16, 0));
        assert_eq!(s.next(&mut f).unwrap(), Next::End);
    }

    #[test]
    fn a_malformed_frame_is_skipped_and_the_next_one_read() {
        // SOI then no marker: the walker cannot split it out.
        let mut all = vec![0xFF, 0xD8, 0x00, 0x00];
        all.extend_from_slice(&jpeg(16, 16, 5));
        for chunk in [1, 3, 4096] {
            let mut s = MjpegStream::new(Trickle(all.clone(), 0, chunk), "test");
            let mut f = Frame::default();
            match s.next(&mut f) {
                Err(SourceError::Frame { what, why }) => {
                    assert_eq!(what, "test frame 0");
                    assert!(why.contains("no JPEG marker"), "{why}");
                }
                other => panic!("chunk {chunk}: {other:?}"),
            }
            assert_eq!(s.next(&mut f).unwrap(), Next::Frame, "chunk {chunk}");
            assert_eq!((f.image.width, f.image.height, f.index), (16, 16, 1));
            assert_eq!(s.next(&mut f).unwrap(), Next::End);
        }
    }
}
