//! An open lock file ([`LockFd`]): opened without following a link, refused unless it is a
//! regular file of ours, made private (0600), and listed for a child forked without exec to
//! drop.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::dir::{dir_of, lock_io, prepare_dir};
use crate::error::{Error, Result};
use crate::{sys, trust};

/// An open lock file: listed for a child forked without exec to drop
/// ([`sys::register_lock_fd`]) from its open until just before its close, so that a child
/// that never locks does not keep its parent's flock alive after the parent dies. Also the
/// file's identity, which in such a child (its descriptor then `/dev/null`) tells whether
/// the file is still the one at the path.
#[derive(Debug)]
pub(super) struct LockFd {
    file: File,
    dev: u64,
    ino: u64,
}

impl LockFd {
    fn new(file: File) -> io::Result<LockFd> {
        // Listed first: the drop below takes it off again on an error.
        sys::register_lock_fd(file.as_raw_fd());
        let mut fd = LockFd {
            file,
            dev: 0,
            ino: 0,
        };
        let meta = fd.file.metadata()?;
        (fd.dev, fd.ino) = (meta.dev(), meta.ino());
        Ok(fd)
    }

    /// Whether `path` still names this file, judged by the identity recorded at its open
    /// (no descriptor needed): missing or another inode means it was removed from there. A
    /// path that cannot be looked at counts as still there.
    pub(super) fn is_at(&self, path: &Path) -> bool {
        match std::fs::symlink_metadata(path) {
            Ok(m) => m.dev() == self.dev && m.ino() == self.ino,
            Err(e) => e.kind() != io::ErrorKind::NotFound,
        }
    }
}

impl std::ops::Deref for LockFd {
    type Target = File;

    fn deref(&self) -> &File {
        &self.file
    }
}

impl Drop for LockFd {
    fn drop(&mut self) {
        // Off the list before the field's drop closes the number, which may then be reused.
        sys::unregister_lock_fd(self.file.as_raw_fd());
    }
}

/// Opens (creating, 0600) a lock file. A symlink is not followed (a dangling one would
/// otherwise create a file at its target), a FIFO does not block, and anything but a
/// regular file of ours is refused ([`Error::Untrusted`]). One that others may open
/// (pyshmem makes it with the umask's mode, 0644 under umask 022) is made 0600: another
/// user could hold its flock through a read-only descriptor and block every writer.
pub(super) fn open_file(path: &Path, stream: &str) -> Result<LockFd> {
    let (file, meta) = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | trust::OPEN_FLAGS)
        .open(path)
        .map_err(|e| trust::open_error(e, path))
        .and_then(LockFd::new)
        .and_then(|f| {
            let meta = f.metadata()?;
            trust::check_metadata(&meta, path).map(|()| (f, meta))
        })
        .map_err(|e| lock_io(stream, dir_of(path), "opening the lock file", e))?;
    if meta.mode() & 0o077 != 0 {
        match file.set_permissions(std::fs::Permissions::from_mode(0o600)) {
            // A file system whose modes are the mount's (vfat, exfat: `EPERM`) keeps the file
            // as it is, as it did before lock files were made private.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EOPNOTSUPP)) => {}
            r => r.map_err(|e| Error::io(stream, "making the lock file private (0600)", e))?,
        }
    }
    Ok(file)
}

/// [`open_file`] at a path whose directory may have been removed since it was prepared (a
/// temporary-file cleaner ages out an empty one): made again first.
pub(super) fn open_at_path(path: &Path, stream: &str) -> Result<LockFd> {
    if let Some(dir) = path.parent() {
        prepare_dir(dir, stream)?;
    }
    open_file(path, stream)
}
