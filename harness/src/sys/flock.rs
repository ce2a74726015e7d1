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

    /// `flock(fd, op)`, called again when a signal interrupts it (`EINTR`: a handler
    /// installed without `SA_RESTART`, which a blocking `LOCK_EX` would otherwise return
    /// as an error and end the floor's run).
    fn call(&self, op: libc::c_int) -> io::Result<()> {
        loop {
            // SAFETY: the fd is open for the life of `self.file`; flock has no memory
            // arguments.
            if unsafe { libc::flock(self.file.as_raw_fd(), op) } == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    static CAUGHT: AtomicUsize = AtomicUsize::new(0);

    extern "C" fn caught(_: libc::c_int) {
        CAUGHT.fetch_add(1, Ordering::Relaxed);
    }

    /// A blocking `lock()` that a signal interrupts (its handler installed without
    /// `SA_RESTART`, so flock fails with `EINTR`) waits on and takes the lock once it is
    /// freed: it returned the `EINTR` as an error. The signal is sent once the waiting
    /// thread is seen inside flock (`/proc/self/task/TID/syscall`).
    #[test]
    fn a_blocking_lock_interrupted_by_a_signal_waits_on_for_the_lock() {
        let path = std::env::temp_dir().join(format!("harness-flock-eintr-{}", std::process::id()));
        let holder = LockFile::open(&path, true).unwrap();
        holder.lock().unwrap();
        let waiter = LockFile::open(&path, false).unwrap();
        // SAFETY: a zeroed sigaction is valid; the handler only touches an atomic
        // (async-signal-safe); SIGUSR2 is used by no other test of this crate.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = caught as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            assert_eq!(libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut()), 0);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let flock_nr = libc::SYS_flock.to_string();
        /// Frees the holder's lock when dropped, on a failed assertion too, so the scope's
        /// join of the waiting thread ends and the test fails rather than hangs.
        struct Unlock<'a>(&'a LockFile);
        impl Drop for Unlock<'_> {
            fn drop(&mut self) {
                let _ = self.0.unlock();
            }
        }
        std::thread::scope(|s| {
            let unlock = Unlock(&holder);
            let (tx, rx) = std::sync::mpsc::channel();
            let waiting = s.spawn(move || {
                // SAFETY: plain calls about the calling thread.
                let ids = unsafe { (libc::gettid(), libc::pthread_self()) };
                tx.send(ids).unwrap();
                waiter.lock()
            });
            let (tid, thread) = rx.recv().unwrap();
            let syscall = format!("/proc/self/task/{tid}/syscall");
            let in_flock = || {
                std::fs::read_to_string(&syscall)
                    .is_ok_and(|s| s.split(' ').next() == Some(flock_nr.as_str()))
            };
            while !in_flock() {
                assert!(
                    Instant::now() < deadline,
                    "the waiter never blocked in flock"
                );
                std::thread::yield_now();
            }
            // SAFETY: `thread` is a live thread of this process (it waits in flock until
            // `unlock` is dropped, below).
            assert_eq!(unsafe { libc::pthread_kill(thread, libc::SIGUSR2) }, 0);
            while CAUGHT.load(Ordering::Relaxed) == 0 {
                assert!(Instant::now() < deadline, "the signal was never handled");
                std::thread::yield_now();
            }
            drop(unlock);
            let got = waiting.join().unwrap();
            assert!(got.is_ok(), "lock() returned {got:?}");
        });
    }
}
