//! `dir:PATH`: the image files of a folder, in name order, each once.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{decode_into, Decode, Frame, FrameSource, Next, SourceError};

/// Image files of a folder, in name order, each exactly once.
pub struct DirSource {
    files: Vec<PathBuf>,
    next: usize,
    bytes: Vec<u8>,
    decode: Decode,
}

/// File extensions a `dir:` source reads.
const IMAGE_EXTENSIONS: [&str; 7] = ["jpg", "jpeg", "png", "bmp", "gif", "webp", "tiff"];

impl DirSource {
    pub fn open(dir: &Path) -> Result<Self, SourceError> {
        let io = |source| SourceError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut files = Vec::new();
        for e in std::fs::read_dir(dir).map_err(io)? {
            let p = e.map_err(io)?.path();
            let ext = p
                .extension()
                .and_then(|e| e.to_str())
                .map(|e| e.to_ascii_lowercase());
            if ext.is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str())) {
                files.push(p);
            }
        }
        if files.is_empty() {
            return Err(SourceError::Unavailable {
                spec: format!("dir:{}", dir.display()),
                why: format!("no image files ({})", IMAGE_EXTENSIONS.join(", ")),
            });
        }
        files.sort();
        Ok(DirSource {
            files,
            next: 0,
            bytes: Vec::new(),
            decode: Decode::Exact,
        })
    }

    /// Decodes the files the way `decode` says.
    pub fn decoding(mut self, decode: Decode) -> Self {
        self.decode = decode;
        self
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

impl FrameSource for DirSource {
    fn next(&mut self, frame: &mut Frame) -> Result<Next, SourceError> {
        let Some(path) = self.files.get(self.next) else {
            return Ok(Next::End);
        };
        let index = self.next as u64;
        self.next += 1;
        self.bytes.clear();
        // A file that cannot be read (gone since the listing, unreadable,
        // a folder) or is too large is one bad frame, as a corrupt one is.
        let max = crate::decode::MAX_IMAGE_FILE_BYTES;
        let bad = |why: String| SourceError::Frame {
            what: path.display().to_string(),
            why,
        };
        std::fs::File::open(path)
            .and_then(|f| f.take(max + 1).read_to_end(&mut self.bytes))
            .map_err(|e| bad(e.to_string()))?;
        if self.bytes.len() as u64 > max {
            return Err(bad(format!("larger than the {max} bytes an image may be")));
        }
        decode_into(&self.bytes, &path.display().to_string(), frame, self.decode)?;
        frame.index = index;
        Ok(Next::Frame)
    }
}
