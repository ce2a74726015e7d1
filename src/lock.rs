//! The write lock: a thread-reentrant lock inside the process plus `flock(2)` on the stream's
//! lock file across processes, both under one deadline (pyshmem's protocol, so a Python writer
//! and a Rust writer exclude each other).
//!
//! One [`LockFile`] exists per lock path per process (a registry of weak references), so two
//! handles of one stream in one process share the reentrancy state and the file descriptor,
//! which stays open for the handles' lifetime (no open/close on the hot path).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::sys;

#[derive(Debug)]
struct Owner {
    /// The thread holding (or acquiring) the lock.
    thread: Option<ThreadId>,
    /// Reentrant depth; 0 while the owner is still taking the flock.
    depth: u32,
    file: File,
}

/// The per-process state of one lock file.
#[derive(Debug)]
pub(crate) struct LockFile {
    path: PathBuf,
    owner: Mutex<Owner>,
    released: Condvar,
}

fn registry() -> &'static Mutex<HashMap<PathBuf, Weak<LockFile>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<PathBuf, Weak<LockFile>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

fn lock_poisoned<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these small mutexes leaves consistent data (plain fields).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Checks (and creates, 0700) the lock directory: it must belong to us and not be writable
/// by group or others.
pub(crate) fn prepare_dir(dir: &Path, stream: &str) -> Result<()> {
    let refuse = |reason| Error::LockDir { name: stream.to_owned(), path: dir.to_owned(), reason };
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut b = std::fs::DirBuilder::new();
            std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
            match b.recursive(true).create(dir) {
                Ok(()) => {
                    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(stream, "creating the lock directory", e)),
            }
            prepare_dir_checked(dir, stream)
        }
        Err(e) => Err(Error::io(stream, "checking the lock directory", e)),
        Ok(meta) if !meta.is_dir() => Err(refuse("it is not a directory")),
        Ok(_) => prepare_dir_checked(dir, stream),
    }
}

fn prepare_dir_checked(dir: &Path, stream: &str) -> Result<()> {
    let refuse = |reason| Error::LockDir { name: stream.to_owned(), path: dir.to_owned(), reason };
    let meta = std::fs::metadata(dir).map_err(|e| Error::io(stream, "checking the lock directory", e))?;
    if meta.uid() != sys::uid() {
        return Err(refuse("it is owned by another user"));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(refuse("it is writable by group or others"));
    }
    Ok(())
}

fn open_file(path: &Path, stream: &str) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io(stream, "opening the lock file", e))
}

impl LockFile {
    /// The process-wide state for `path`, created on first use. A file that was unlinked
    /// since (the stream was removed and perhaps recreated) is reopened, so every process
    /// converges on the inode now at `path`.
    pub(crate) fn attach(path: &Path, stream: &str) -> Result<Arc<LockFile>> {
        if let Some(dir) = path.parent() {
            prepare_dir(dir, stream)?;
        }
        let mut reg = lock_poisoned(registry());
        if let Some(existing) = reg.get(path).and_then(Weak::upgrade) {
            existing.refresh_if_unlinked(stream)?;
            return Ok(existing);
        }
        let file = open_file(path, stream)?;
        let lock = Arc::new(LockFile {
            path: path.to_owned(),
            owner: Mutex::new(Owner { thread: None, depth: 0, file }),
            released: Condvar::new(),
        });
        reg.retain(|_, w| w.strong_count() > 0);
        reg.insert(path.to_owned(), Arc::downgrade(&lock));
        Ok(lock)
    }

    fn refresh_if_unlinked(&self, stream: &str) -> Result<()> {
        let mut owner = lock_poisoned(&self.owner);
        if owner.thread.is_none() && sys::nlink(&owner.file).map(|n| n == 0).unwrap_or(false) {
            owner.file = open_file(&self.path, stream)?;
        }
        Ok(())
    }

    /// Takes the lock for the calling thread, or deepens it if the thread already holds it.
    /// Returns the depth now held. `None` waits forever.
    pub(crate) fn acquire(&self, timeout: Option<Duration>, stream: &str) -> Result<u32> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let me = std::thread::current().id();
        let timed_out = || Error::Timeout { name: stream.to_owned(), op: "take the write lock", timeout: timeout.unwrap_or_default() };
        let mut owner = lock_poisoned(&self.owner);
        loop {
            match owner.thread {
                Some(t) if t == me => {
                    owner.depth += 1;
                    return Ok(owner.depth);
                }
                None => break,
                Some(_) => match deadline {
                    None => owner = self.released.wait(owner).unwrap_or_else(|p| p.into_inner()),
                    Some(d) => {
                        let left = d.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return Err(timed_out());
                        }
                        owner = self.released.wait_timeout(owner, left).unwrap_or_else(|p| p.into_inner()).0;
                    }
                },
            }
        }
        // Fast path: an uncontended flock while holding the small mutex (no blocking call).
        if sys::flock(&owner.file, libc::LOCK_EX | libc::LOCK_NB).map_err(|e| Error::io(stream, "flock", e))? {
            owner.thread = Some(me);
            owner.depth = 1;
            return Ok(1);
        }
        // Contended: mark ourselves as the acquiring thread, then poll the flock outside the
        // mutex so other threads wait on the condvar rather than on us.
        owner.thread = Some(me);
        owner.depth = 0;
        let file = owner.file.try_clone().map_err(|e| Error::io(stream, "dup lock fd", e))?;
        drop(owner);
        let got = poll_flock(&file, deadline);
        let mut owner = lock_poisoned(&self.owner);
        match got {
            Ok(true) => {
                owner.depth = 1;
                Ok(1)
            }
            other => {
                owner.thread = None;
                drop(owner);
                self.released.notify_one();
                match other {
                    Err(e) => Err(Error::io(stream, "flock", e)),
                    _ => Err(timed_out()),
                }
            }
        }
    }

    /// Takes the lock only if nobody (no thread, no process) holds it.
    pub(crate) fn try_acquire(&self, stream: &str) -> Result<bool> {
        match self.acquire(Some(Duration::ZERO), stream) {
            Ok(_) => Ok(true),
            Err(Error::Timeout { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Drops one level; the last level releases the flock. Returns the depth left.
    ///
    /// `before_unlock` runs while the lock is still held, just before the flock is released
    /// (the stream clears the owner fields in the header there).
    pub(crate) fn release(&self, before_unlock: impl FnOnce(u32)) -> u32 {
        let mut owner = lock_poisoned(&self.owner);
        debug_assert_eq!(owner.thread, Some(std::thread::current().id()));
        owner.depth = owner.depth.saturating_sub(1);
        let depth = owner.depth;
        before_unlock(depth);
        if depth == 0 {
            let _ = sys::flock(&owner.file, libc::LOCK_UN);
            owner.thread = None;
            drop(owner);
            self.released.notify_one();
        }
        depth
    }
}

/// Polls a non-blocking flock until `deadline`: spin-yield first, then sleeps growing to 1 ms.
fn poll_flock(file: &File, deadline: Option<Instant>) -> io::Result<bool> {
    let mut pause = Duration::from_micros(5);
    let mut tries = 0u32;
    loop {
        if sys::flock(file, libc::LOCK_EX | libc::LOCK_NB)? {
            return Ok(true);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(false);
        }
        tries += 1;
        if tries < 64 {
            std::thread::yield_now();
        } else {
            let left = deadline.map_or(pause, |d| d.saturating_duration_since(Instant::now()));
            std::thread::sleep(pause.min(left));
            pause = (pause * 2).min(Duration::from_millis(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_lock(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shmstream-lock-test-{}-{tag}", std::process::id()));
        dir.join("x.lock")
    }

    #[test]
    fn reentrant_in_one_thread_exclusive_across_threads() {
        let path = temp_lock("reent");
        let sut = LockFile::attach(&path, "t").expect("attach");
        assert_eq!(sut.acquire(None, "t").unwrap(), 1);
        assert_eq!(sut.acquire(None, "t").unwrap(), 2);
        let other = sut.clone();
        let blocked = std::thread::spawn(move || other.acquire(Some(Duration::from_millis(30)), "t"));
        assert!(matches!(blocked.join().unwrap(), Err(Error::Timeout { .. })));
        assert_eq!(sut.release(|_| {}), 1);
        assert_eq!(sut.release(|_| {}), 0);
        let other = sut.clone();
        let t = std::thread::spawn(move || {
            let d = other.acquire(Some(Duration::from_secs(5)), "t").unwrap();
            other.release(|_| {});
            d
        });
        assert_eq!(t.join().unwrap(), 1);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn two_attachments_share_state_and_separate_files_exclude() {
        let path = temp_lock("share");
        let a = LockFile::attach(&path, "t").unwrap();
        let b = LockFile::attach(&path, "t").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        a.acquire(None, "t").unwrap();
        // A second open file description (as another process would have) is excluded.
        let foreign = open_file(&path, "t").unwrap();
        assert!(!sys::flock(&foreign, libc::LOCK_EX | libc::LOCK_NB).unwrap());
        a.release(|_| {});
        assert!(sys::flock(&foreign, libc::LOCK_EX | libc::LOCK_NB).unwrap());
        assert!(!a.try_acquire("t").unwrap());
        sys::flock(&foreign, libc::LOCK_UN).unwrap();
        assert!(a.try_acquire("t").unwrap());
        a.release(|_| {});
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn world_writable_lock_dir_is_refused() {
        let dir = std::env::temp_dir().join(format!("shmstream-lockdir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = prepare_dir(&dir, "cam").unwrap_err();
        assert!(err.to_string().contains("writable by group or others"), "{err}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        prepare_dir(&dir, "cam").unwrap();
        let fresh = dir.join("sub");
        prepare_dir(&fresh, "cam").unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().mode() & 0o777, 0o700);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
