//! The `flock(2)` pair a pyshmem-compatible writer takes around each write, as the C
//! floor `pingpong_payload.c` does. (`File::lock` is newer than the workspace MSRV.)

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// An open lock file; the fd stays open for the handle's life, as in the library.
#[derive(Debug)]
pub struct LockFile {
    file: File,
    path: PathBuf,
    is_owner: bool,
}

impl LockFile {
    /// Opens (creating if needed) the lock file at `path`. `is_owner` removes it on drop.
    pub fn open(path: &Path, is_owner: bool) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            is_owner,
        })
    }

    fn call(&self, op: libc::c_int) -> io::Result<()> {
        // SAFETY: the fd is open for the life of `self.file`; flock has no memory arguments.
        let rc = unsafe { libc::flock(self.file.as_raw_fd(), op) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// `flock(fd, LOCK_EX)`.
    pub fn lock(&self) -> io::Result<()> {
        self.call(libc::LOCK_EX)
    }

    /// `flock(fd, LOCK_EX | LOCK_NB)`: whether it took the lock (`false`: held through
    /// another open file description).
    pub fn try_lock(&self) -> io::Result<bool> {
        match self.call(libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `flock(fd, LOCK_UN)`.
    pub fn unlock(&self) -> io::Result<()> {
        self.call(libc::LOCK_UN)
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        if self.is_owner {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
