//! The pixel part of a cube file: whole frames appended after a header at a known offset,
//! counting the frames known to have reached the file, so that a full disk costs only the
//! frames that did not.
//!
//! Frames of at least [`DIRECT`] bytes go to the kernel straight from the caller's buffer
//! (no copy in user space); smaller ones are gathered so that a stream of small frames does
//! not cost a system call each.

use std::fs::File;
use std::io::{ErrorKind, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::Fallible;

/// Frames of at least this many bytes bypass the gathering buffer.
const DIRECT: usize = 64 << 10;

/// Frames being appended to one file.
pub(crate) struct FrameFile {
    path: PathBuf,
    file: File,
    data_start: u64,
    frame_bytes: usize,
    /// Small frames not yet handed to the kernel.
    gathered: Vec<u8>,
    /// Frames handed to the kernel whole.
    stored: usize,
    pushed: usize,
    /// Set by the first failed write: nothing after it can land whole and in order.
    failed: bool,
}

impl FrameFile {
    /// Appends frames of `frame_bytes` to `file` from `data_start` on.
    pub(crate) fn new(
        path: &Path,
        mut file: File,
        data_start: u64,
        frame_bytes: usize,
    ) -> Fallible<FrameFile> {
        file.seek(SeekFrom::Start(data_start))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(FrameFile {
            path: path.to_owned(),
            file,
            data_start,
            frame_bytes,
            gathered: Vec::with_capacity(if frame_bytes < DIRECT { DIRECT } else { 0 }),
            stored: 0,
            pushed: 0,
            failed: false,
        })
    }

    /// Appends one frame.
    pub(crate) fn push(&mut self, frame: &[u8]) -> Fallible {
        self.pushed += 1;
        if frame.len() >= DIRECT {
            self.write_out(frame, 1)
        } else {
            self.gathered.extend_from_slice(frame);
            if self.gathered.len() + frame.len() > DIRECT {
                self.flush()?;
            }
            Ok(())
        }
    }

    /// Frames pushed so far.
    pub(crate) fn pushed(&self) -> usize {
        self.pushed
    }

    /// Hands the gathered frames to the kernel.
    pub(crate) fn flush(&mut self) -> Fallible {
        let frames = self.pushed - self.stored;
        let gathered = std::mem::take(&mut self.gathered);
        let result = self.write_out(&gathered, frames);
        self.gathered = gathered;
        self.gathered.clear();
        result
    }

    /// Writes `frames` whole frames; on failure counts those that reached the file whole.
    fn write_out(&mut self, bytes: &[u8], frames: usize) -> Fallible {
        if self.failed {
            return Err(format!("{}: an earlier write failed", self.path.display()).into());
        }
        let mut done = 0;
        while done < bytes.len() {
            match self.file.write(&bytes[done..]) {
                Ok(0) => return self.fail(done, "the file takes no more bytes".into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return self.fail(done, e.to_string()),
            }
        }
        self.stored += frames;
        Ok(())
    }

    fn fail(&mut self, done: usize, why: String) -> Fallible {
        self.failed = true;
        self.stored += done / self.frame_bytes.max(1);
        Err(format!("{}: {why}", self.path.display()).into())
    }

    /// Flushes and returns the file, where its whole frames end, how many there are, and
    /// the flush error if there was one (a full disk). Bytes of a frame that reached the
    /// file only in part lie after that end; the caller cuts or sizes the file there.
    pub(crate) fn close(mut self) -> (File, u64, usize, Result<(), String>) {
        let flushed = self.flush().map_err(|e| e.to_string());
        let end = self.data_end(self.stored);
        (self.file, end, self.stored, flushed)
    }

    /// The length of the file's frame data with `frames` whole frames.
    fn data_end(&self, frames: usize) -> u64 {
        self.data_start + (frames * self.frame_bytes) as u64
    }
}
