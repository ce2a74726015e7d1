//! The pixel part of a cube file: whole frames appended after a header at a known offset,
//! counting the frames known to have reached the file, so that a full disk costs only the
//! frames that did not.
//!
//! Every write names its offset (the end of the frames stored so far), so frames may reach
//! the file three ways: gathered (frames under [`DIRECT`] bytes, so that a stream of small
//! frames does not cost a system call each), straight from the caller's buffer, or written
//! by the caller itself at [`FrameFile::in_place`] (straight from a history ring) and
//! counted with [`FrameFile::commit_in_place`]. A frame that did not land whole is never
//! counted, and the next one overwrites its bytes.

use std::fs::File;
use std::io::ErrorKind;
use std::os::fd::IntoRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::Fallible;

/// What to do about a write that failed for another reason than room.
pub(crate) const NOT_ROOM_REMEDY: &str =
    "check the disk (the kernel log names its errors) and record again";

/// Frames of at least this many bytes bypass the gathering buffer.
const DIRECT: usize = 64 << 10;

/// How far ahead of its frames a file is made long ([`FrameFile::keep_length_off`]): a
/// size change per this many bytes, not per write (on NFS and XFS one waits for the data
/// written before it).
const LENGTHEN_STEP: u64 = 8 << 20;

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
    /// Set by the first failed write: nothing after it can land whole and in order.
    failed: bool,
    /// Why that write had no room, if that was why it failed.
    full: Option<Full>,
    /// Where the bytes of a failed write of ours reached (its offset and what landed).
    reached: Option<u64>,
    /// With `Some(block)`, see [`FrameFile::keep_length_off`].
    off: Option<u64>,
    /// How long the file was made ahead of a write (0: never).
    lengthened: u64,
}

impl FrameFile {
    /// Appends frames of `frame_bytes` to `file` from `data_start` on.
    pub(crate) fn new(path: &Path, file: File, data_start: u64, frame_bytes: usize) -> FrameFile {
        FrameFile {
            path: path.to_owned(),
            file,
            data_start,
            frame_bytes,
            gathered: Vec::with_capacity(if frame_bytes < DIRECT { DIRECT } else { 0 }),
            stored: 0,
            failed: false,
            full: None,
            reached: None,
            off: None,
            lengthened: 0,
        }
    }

    /// Keeps the file's length off multiples of `block` while frames are appended (until
    /// the caller cuts it): before a write past the length, the file is made longer than
    /// the write's end (by [`LENGTHEN_STEP`]: a hole, no disk space), to a length off them,
    /// so that a process killed at any moment, mid-write included, leaves such a length.
    /// (A FITS reader takes what follows the frames a checkpoint counted for the next
    /// header: one that ends on a block boundary without an END card stops astropy, where
    /// one cut short is a warning.)
    pub(crate) fn keep_length_off(mut self, block: u64) -> FrameFile {
        self.off = Some(block);
        self
    }

    /// Makes the file at least `end` bytes long, off a multiple of the block
    /// ([`FrameFile::keep_length_off`]): a step ahead, or where that fails (a file-size
    /// limit) only as far as the write. A failure of both is left to the write (it meets
    /// the same limit, or lands and leaves the length where it ends).
    fn lengthen_to(&mut self, end: u64) {
        let Some(block) = self.off else { return };
        if self.lengthened >= end {
            return;
        }
        let off = |len: u64| len + u64::from(len.is_multiple_of(block));
        for len in [off(end.max(self.lengthened + LENGTHEN_STEP)), off(end)] {
            if self.file.set_len(len).is_ok() {
                self.lengthened = len;
                return;
            }
        }
    }

    /// Where the whole frames stored so far end.
    fn end(&self) -> u64 {
        self.data_start + (self.stored * self.frame_bytes) as u64
    }

    /// Appends one frame.
    pub(crate) fn push(&mut self, frame: &[u8]) -> Fallible {
        if frame.len() >= DIRECT {
            return self.store(Some(frame));
        }
        self.gathered.extend_from_slice(frame);
        if self.gathered.len() + frame.len() > DIRECT {
            self.store(None)?;
        }
        Ok(())
    }

    /// Hands the gathered frames to the kernel: the whole frames on file.
    pub(crate) fn flush(&mut self) -> Fallible<usize> {
        if !self.gathered.is_empty() {
            self.store(None)?;
        }
        Ok(self.stored)
    }

    /// The file the frames are appended to.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// The file and offset at which the caller may write the next frame itself, for frames
    /// large enough to skip gathering (none is pending then) and while no write has failed.
    pub(crate) fn in_place(&self) -> Option<(&File, u64)> {
        (self.frame_bytes >= DIRECT && !self.failed).then(|| (&self.file, self.end()))
    }

    /// Counts the frame the caller wrote at [`FrameFile::in_place`], or fails with its error.
    pub(crate) fn commit_in_place(&mut self, written: std::io::Result<()>) -> Fallible {
        match written {
            Ok(()) => {
                self.stored += 1;
                Ok(())
            }
            Err(e) => Err(self.fail(&e).into()),
        }
    }

    /// Hands `frame`, or with `None` the gathered frames, to the kernel, counting the frames
    /// that reach the file whole (also those before a failure part-way).
    fn store(&mut self, frame: Option<&[u8]>) -> Fallible {
        if self.failed {
            return Err(format!("{}: an earlier write failed", self.path.display()).into());
        }
        let (at, len) = (self.end(), frame.map_or(self.gathered.len(), <[u8]>::len));
        self.lengthen_to(at + len as u64);
        let bytes = frame.unwrap_or(&self.gathered);
        let (done, written) = write_counted(&self.file, bytes, at);
        self.stored += done / self.frame_bytes.max(1);
        self.gathered.clear();
        written.map_err(|why| {
            self.reached = Some(at + done as u64);
            self.fail(&why).into()
        })
    }

    /// Marks the file failed by `e`: its error, with what ran out of room and the remedy
    /// when that is why.
    fn fail(&mut self, e: &std::io::Error) -> String {
        self.failed = true;
        self.full = Full::of(e);
        write_failed(&self.path, "", e, NOT_ROOM_REMEDY)
    }

    /// Flushes and closes: the file, where its whole frames end, how many there are, the
    /// flush error if there was one (a full disk), and after any failed write the room the
    /// file had. Bytes of a frame that reached the file only in part lie after that end; the
    /// caller cuts or sizes the file there.
    pub(crate) fn close(mut self) -> Closed {
        let flushed = self.flush().map(drop).map_err(|e| e.to_string());
        let end = self.end();
        // The file grew as far as the disk let the failed write take it: where its bytes
        // reached (the file may have been made longer ahead of them), or for a write the
        // caller made in place, the file's length.
        let room = self.failed.then(|| {
            self.reached
                .or_else(|| self.file.metadata().ok().map(|m| m.len()))
                .map_or(end, |r| r.max(end))
        });
        Closed {
            file: self.file,
            end,
            frames: self.stored,
            flushed,
            room,
            full: self.full,
        }
    }
}

/// A [`FrameFile`] closed: see [`FrameFile::close`].
pub(crate) struct Closed {
    pub(crate) file: File,
    /// Where the whole frames end.
    pub(crate) end: u64,
    /// Whole frames on file.
    pub(crate) frames: usize,
    pub(crate) flushed: Result<(), String>,
    /// After a failed write (a full disk), the bytes the file could hold: where that write's
    /// bytes reached (the file's length, for a write the caller made in place).
    pub(crate) room: Option<u64>,
    /// Why the failed write had no room, if that was why it failed.
    pub(crate) full: Option<Full>,
}

/// Writes `bytes` to `file` at `at`: how many landed (from the start), and why not all.
pub(crate) fn write_counted(file: &File, bytes: &[u8], at: u64) -> (usize, std::io::Result<()>) {
    let mut done = 0;
    while done < bytes.len() {
        match file.write_at(&bytes[done..], at + done as u64) {
            Ok(0) => {
                let e = std::io::Error::new(ErrorKind::WriteZero, "the file takes no more bytes");
                return (done, Err(e));
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return (done, Err(e)),
        }
    }
    (done, Ok(()))
}

/// The step of finishing a cube file (its header, its cut, its frame table) that failed,
/// and its error.
pub(crate) struct TailError {
    pub(crate) step: String,
    pub(crate) e: std::io::Error,
}

/// A write to `path` that failed with `e` (at `step`, said before the error: empty, or
/// ending in ": "), with what ran out of room and the remedy, or `otherwise`, the remedy of
/// another failure.
pub(crate) fn write_failed(path: &Path, step: &str, e: &std::io::Error, otherwise: &str) -> String {
    match Full::of(e) {
        Some(full) => format!(
            "{}: {step}{e}: {}; {}",
            path.display(),
            full.said(),
            full.remedy()
        ),
        None => format!("{}: {step}{e}: {otherwise}", path.display()),
    }
}

/// What had no room for a write: a full disk (or quota), or a file-size limit, which a
/// full disk's remedy does not lift.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Full {
    Disk,
    FileSize,
}

impl Full {
    /// What ran out of room for a write that failed with `e`, if that is why it failed
    /// (ENOSPC, EDQUOT, EFBIG): only then can fewer frames fit.
    pub(crate) fn of(e: &std::io::Error) -> Option<Full> {
        match e.raw_os_error()? {
            libc::ENOSPC | libc::EDQUOT => Some(Full::Disk),
            libc::EFBIG => Some(Full::FileSize),
            _ => None,
        }
    }

    /// What ran out of room.
    pub(crate) fn said(self) -> &'static str {
        match self {
            Full::Disk => "the disk is full",
            Full::FileSize => {
                "the file reached the file-size limit (`ulimit -f`, RLIMIT_FSIZE, or the largest file the file system holds)"
            }
        }
    }

    /// What to do about it.
    pub(crate) fn remedy(self) -> &'static str {
        match self {
            Full::Disk => "free some space and record again",
            Full::FileSize => {
                "record again with a smaller --per-file, or raise the limit (`ulimit -f`)"
            }
        }
    }
}

impl TailError {
    /// Why the disk or a file-size limit had no room for it, if so: only then can fewer
    /// frames fit.
    pub(crate) fn no_room(&self) -> Option<Full> {
        Full::of(&self.e)
    }

    /// What to do about it.
    pub(crate) fn remedy(&self) -> &'static str {
        self.no_room().map_or(NOT_ROOM_REMEDY, Full::remedy)
    }
}

impl std::fmt::Display for TailError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.step, self.e)
    }
}

/// Puts `file` (at `path`) on the disk: a write the disk refuses after accepting it (NFS
/// ENOSPC or quota, a writeback EIO) is reported here (a network file system also reports
/// its own at [`close`]; a local disk nowhere else).
pub(crate) fn sync(path: &Path, file: &File) -> Result<(), String> {
    file.sync_data().map_err(|e| {
        format!(
            "{}: putting it on the disk: {e}: it may not hold what was written; check the disk (space, quota, errors) and record again",
            path.display()
        )
    })
}

/// Closes `file` (at `path`), reporting its error: without `--fsync`, a network or FUSE
/// file system (NFS, CIFS, sshfs) writes the data back at the latest then, and reports
/// the write errors it meets there (ENOSPC, EDQUOT, EIO), which dropping a `File` ignores.
/// Not retried: Linux releases the descriptor whatever `close` returns (EINTR included),
/// so a second call could close a descriptor another thread just opened.
pub(crate) fn close(path: &Path, file: File) -> Result<(), String> {
    let fd = file.into_raw_fd();
    // SAFETY: `fd` is the open descriptor `file` owned and gave up (`into_raw_fd`): nothing
    // else closes or uses it, and it is closed once, here.
    if unsafe { libc::close(fd) } == 0 {
        return Ok(());
    }
    Err(format!(
        "{}: closing it: {}: it may not hold what was written; check the disk (space, quota, errors) and record again",
        path.display(),
        std::io::Error::last_os_error()
    ))
}

/// The directory the files are created in, kept open to put its entries on the disk: a new
/// file's entry reaches the disk with the directory, not with the file (`fsync(2)`).
pub(crate) struct Directory {
    path: PathBuf,
    dir: File,
}

impl Directory {
    /// Opens the directory `path` (for `--fsync`).
    pub(crate) fn open(path: &Path) -> Fallible<Directory> {
        let dir = File::open(path).map_err(|e| {
            format!(
                "--out {}: cannot open the directory to put its files' entries on the disk (--fsync): {e}",
                path.display()
            )
        })?;
        Ok(Directory {
            path: path.to_owned(),
            dir,
        })
    }

    /// Puts the directory's entries on the disk (`fsync`): the files created in it so far
    /// can be found after a crash.
    pub(crate) fn sync(&self) -> Result<(), String> {
        self.dir.sync_all().map_err(|e| {
            format!(
                "{}: putting the directory's entries on the disk: {e}: its files may not be found after a crash; check the disk (space, quota, errors) and record again",
                self.path.display()
            )
        })
    }
}

/// The directories of `path` that do not exist yet, `path` first: those `create_dir_all`
/// is about to create.
pub(crate) fn missing_dirs(path: &Path) -> Vec<PathBuf> {
    path.ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && matches!(d.try_exists(), Ok(false)))
        .map(Path::to_owned)
        .collect()
}

/// Puts the entry of each directory in `created` on the disk (`fsync` of the directory
/// holding it): a directory the recorder created is found after a crash, with the files in
/// it, only then. Every failure is reported.
pub(crate) fn sync_created_dirs(created: &[PathBuf]) -> Fallible {
    let failed: Vec<String> = created
        .iter()
        .filter_map(|dir| {
            let parent = match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            let synced = File::open(parent).and_then(|p| p.sync_all());
            synced.err().map(|e| {
                format!(
                    "{}: putting the directory's entries on the disk: {e}: the directory {} created in it may not be found after a crash, nor the files recorded there; check the disk (space, quota, errors) and record again",
                    parent.display(),
                    dir.display()
                )
            })
        })
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; ").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file in the temporary directory, removed on drop.
    struct Scratch(PathBuf);
    impl Scratch {
        fn new(tag: &str) -> (Scratch, File) {
            let path = std::env::temp_dir()
                .join(format!("shmstream-frame-file-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_file(&path);
            let file = crate::record::files::create_new(&path).unwrap();
            (Scratch(path), file)
        }
        fn len(&self) -> u64 {
            std::fs::metadata(&self.0).unwrap().len()
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// Small frames reach the kernel in one write once the gathering buffer could not take
    /// another: batches of at most [`DIRECT`] bytes, in a buffer that never grows.
    #[test]
    fn small_frames_are_written_in_batches_that_fill_the_gathering_buffer() {
        let (scratch, file) = Scratch::new("gather");
        let frame = [7u8; 1024];
        let mut f = FrameFile::new(&scratch.0, file, 100, frame.len());
        // 64 frames fill the buffer exactly: the first 63 leave room for one more.
        for _ in 0..63 {
            f.push(&frame).unwrap();
        }
        assert_eq!(scratch.len(), 0, "63 frames are still gathered");
        f.push(&frame).unwrap();
        assert_eq!(
            scratch.len(),
            100 + DIRECT as u64,
            "64 frames written at once"
        );
        f.push(&frame).unwrap();
        assert_eq!(f.gathered.capacity(), DIRECT, "the buffer never grew");
        assert_eq!(f.flush().unwrap(), 65);
        let closed = f.close();
        assert_eq!(
            (closed.frames, closed.end, closed.room),
            (65, 100 + 65 * 1024, None)
        );
        assert_eq!(scratch.len(), closed.end);
    }

    /// Kept off block multiples, a file is made a step longer than its frames, and one byte
    /// past where that would end on a block; again a step on once the frames pass it.
    #[test]
    fn a_file_kept_off_block_multiples_is_made_a_step_ahead_of_its_frames() {
        let (scratch, file) = Scratch::new("lengthen");
        let block = 1 << 20;
        assert!(LENGTHEN_STEP.is_multiple_of(block));
        let frame = vec![1u8; DIRECT];
        let mut f = FrameFile::new(&scratch.0, file, 0, frame.len()).keep_length_off(block);
        f.push(&frame).unwrap();
        assert_eq!(scratch.len(), LENGTHEN_STEP + 1);
        // The frames reach the step's end: no change.
        let in_a_step = (LENGTHEN_STEP / DIRECT as u64) as usize;
        for _ in 1..in_a_step {
            f.push(&frame).unwrap();
        }
        assert_eq!(scratch.len(), LENGTHEN_STEP + 1);
        // One more passes it.
        f.push(&frame).unwrap();
        assert_eq!(scratch.len(), 2 * LENGTHEN_STEP + 1);
        let closed = f.close();
        assert_eq!(closed.frames, in_a_step + 1);
        assert_eq!(closed.end, (in_a_step as u64 + 1) * DIRECT as u64);
    }

    /// A directory created in the working directory (a relative name with no parent) has its
    /// entry put on the disk through `.`; one whose parent is gone is an error naming both.
    #[test]
    fn created_directories_are_synced_through_their_parent_or_the_working_directory() {
        sync_created_dirs(&[PathBuf::from("a-directory-here")]).unwrap();
        let gone = std::env::temp_dir().join(format!("no-such-dir-{}", std::process::id()));
        let e = sync_created_dirs(&[gone.join("made")])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!(
                "{}: putting the directory's entries on the disk: ",
                gone.display()
            )) && e.contains(&format!(
                "the directory {} created in it",
                gone.join("made").display()
            )) && e.ends_with("check the disk (space, quota, errors) and record again"),
            "{e}"
        );
    }
}
