//! The write lock: a thread-reentrant lock inside the process plus `flock(2)` on the stream's
//! lock file across processes, both under one deadline (pyshmem's protocol, so a Python writer
//! and a Rust writer exclude each other).
//!
//! One [`LockFile`] exists per lock path per process (a registry of weak references), so two
//! handles of one stream in one process share the reentrancy state and the file descriptor,
//! which stays open for the handles' lifetime (no open/close on the hot path).
//!
//! The lock directory (made private, refused, the errors naming it) is in `dir`; the open
//! lock file ([`LockFd`], opened without following a link) in `fd`.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::backoff::{Backoff, Sleeps, poll_with};
use crate::error::{Error, Result};
use crate::sys;

mod dir;
mod fd;

use dir::{dir_of, lock_io};
pub(crate) use dir::{dir_refusal, prepare_dir};
use fd::{LockFd, open_at_path, open_file};

/// A per-thread token: the address of a thread-local (never 0, unique among live threads,
/// and cheaper than `thread::current().id()`, which clones an `Arc`).
fn thread_token() -> usize {
    thread_local!(static TOKEN: u8 = const { 0 });
    TOKEN.with(|t| t as *const u8 as usize)
}

/// The per-process state of one lock file.
///
/// `owner` holds the token of the thread that holds (or is taking) the lock, 0 when free;
/// only that thread touches `depth` and the flock. The fd is replaced while the lock is free
/// (`refresh_if_unlinked`), by a thread that owns the owner word without the flock (`take`,
/// `try_acquire_either`) or by the holder (`move_held`), under the `file` mutex.
#[derive(Debug)]
pub(crate) struct LockFile {
    path: PathBuf,
    owner: AtomicUsize,
    depth: AtomicU32,
    fd: AtomicI32,
    file: Mutex<LockFd>,
    /// Threads of this process waiting for `owner` to become 0.
    waiters: AtomicU32,
    /// The stream generation (instance id bits) the lock file was last checked for.
    generation: AtomicU64,
    wake: (Mutex<()>, Condvar),
    /// Loans of the payload by the lock holder ([`LockFile::lend`]): a fill in progress, a
    /// live view.
    lent: AtomicU32,
    /// When [`LockFile::follow_path`] last looked at the path (coarse clock, ms).
    path_checked_ms: AtomicU64,
    /// Removed files the holder moved away from ([`LockFile::move_held`]), still locked until
    /// its last release, so a writer waiting on one does not get in meanwhile; and whether
    /// there are any (the holder's thread alone sets and clears both).
    retired: Mutex<Vec<LockFd>>,
    has_retired: AtomicBool,
    /// [`sys::forks`] when this process's state was made: another value means a child forked
    /// without exec inherited it ([`LockFile::adopt_after_fork`]).
    forks: AtomicU64,
}

/// How often a first-level write lock looks whether its file is still at the path.
const PATH_CHECK_MS: u64 = 20;

/// The lock holder's loan of the payload (a write's fill, a `WriteGuard::live` view) of a
/// weight, made at a [`sys::forks`] count; it ends when dropped.
#[derive(Debug)]
pub(crate) struct Loan<'a>(&'a LockFile, u32, u64);

/// What a [`Loan`] lends: a write's fill borrows the payload mutably, a live view shares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lent {
    Fill,
    View,
}

/// A fill's weight in [`LockFile::lent`], above any count of live views.
const FILL: u32 = 1 << 16;

impl Drop for Loan<'_> {
    fn drop(&mut self) {
        // Plain load and store: only the lock holder's thread lends, and a loan does not
        // leave it (a fill is a call, a live view is neither `Send` nor outlives the guard);
        // the lock's handover orders them for the next holder. A copy a child forked without
        // exec inherited is its parent's loan, which the child's first lock clears
        // (`LockFile::adopt_after_fork`).
        if self.2 != sys::forks() {
            return;
        }
        let n = self.0.lent.load(Ordering::Relaxed);
        self.0.lent.store(n - self.1, Ordering::Relaxed);
    }
}

fn registry() -> &'static Mutex<HashMap<PathBuf, Weak<LockFile>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<PathBuf, Weak<LockFile>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

fn lock_poisoned<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these small mutexes leaves consistent data (plain fields).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LockFile {
    /// The process-wide state for `path`, created on first use. A file that was unlinked
    /// since (the stream was removed and perhaps recreated) is reopened, so every process
    /// converges on the inode now at `path`.
    pub(crate) fn attach(path: &Path, stream: &str) -> Result<Arc<LockFile>> {
        if let Some(dir) = path.parent() {
            prepare_dir(dir, stream)?;
        }
        // Before the lock file opens: one that takes the last descriptor is still dropped
        // in a forked child.
        sys::prepare_lock_fd_cover();
        let mut reg = lock_poisoned(registry());
        if let Some(existing) = reg.get(path).and_then(Weak::upgrade) {
            existing.refresh_if_unlinked(stream)?;
            return Ok(existing);
        }
        let file = open_file(path, stream)?;
        let lock = Arc::new(LockFile {
            path: path.to_owned(),
            owner: AtomicUsize::new(0),
            depth: AtomicU32::new(0),
            fd: AtomicI32::new(file.as_raw_fd()),
            file: Mutex::new(file),
            waiters: AtomicU32::new(0),
            generation: AtomicU64::new(0),
            wake: (Mutex::new(()), Condvar::new()),
            lent: AtomicU32::new(0),
            path_checked_ms: AtomicU64::new(sys::coarse_now_ms()),
            retired: Mutex::new(Vec::new()),
            has_retired: AtomicBool::new(false),
            forks: AtomicU64::new(sys::forks()),
        });
        reg.retain(|_, w| w.strong_count() > 0);
        reg.insert(path.to_owned(), Arc::downgrade(&lock));
        Ok(lock)
    }

    /// Moves to the file at the path if ours was unlinked, unless a thread of this process
    /// holds the lock (that thread's next take looks: [`LockFile::acquire_for`]).
    fn refresh_if_unlinked(&self, stream: &str) -> Result<()> {
        // Only while nobody in this process holds the lock: claim it with a sentinel token.
        // Not in a forked child before its adoption, which resets the owner word (a claim
        // made before it would be given back over a lock taken after it) and reopens anyway.
        const REFRESHING: usize = 1;
        if self.inherited() {
            return Ok(());
        }
        if self
            .owner
            .compare_exchange(0, REFRESHING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Ok(());
        }
        let result = self.reopen_if_unlinked(stream, || true).map(|_| ());
        self.free_owner();
        result
    }

    /// Moves to the file now at the path if ours was unlinked; returns whether it did. The
    /// caller owns the owner word and holds no flock (so nobody in this process uses the old
    /// descriptor). Lock files are only ever removed, never renamed, so a file that still has
    /// a link is the one at the path. A file removed with the caller's stream (not
    /// `stream_linked`: an unlink removes `_meta` before the lock file) is not made again,
    /// which would leave it until purge: [`Error::Stale`].
    fn reopen_if_unlinked(
        &self,
        stream: &str,
        stream_linked: impl FnOnce() -> bool,
    ) -> Result<bool> {
        let mut file = lock_poisoned(&self.file);
        if sys::nlink(&file).map(|n| n == 0).unwrap_or(false) {
            if !stream_linked() {
                return Err(Error::Stale {
                    name: stream.to_owned(),
                });
            }
            *file = open_at_path(&self.path, stream)?;
            self.fd.store(file.as_raw_fd(), Ordering::Relaxed);
            return Ok(true);
        }
        Ok(false)
    }

    /// Moves to the file at the path when ours was removed from it while its stream lives
    /// (`stream_linked`): a temporary-file cleaner ages out an old, never written lock file,
    /// and pyshmem's next lock makes and locks a new one there, as this does. A file removed
    /// with its stream is kept (the caller reports the stream gone; a new one would leak).
    /// Looks at most every [`PATH_CHECK_MS`] (a write lock's hot path: a coarse clock read
    /// otherwise); a file replaced since is followed within that time.
    /// This is the look of a thread that holds the lock (a guard kept for a producer's whole
    /// run, whose writes take no lock): it takes the flock of the file at the path, waiting up
    /// to `timeout` for a writer that locked that one meanwhile, and keeps the removed one
    /// locked until its last release, so writers on either file wait for it. A take looks
    /// itself ([`LockFile::acquire_for`]): a reentrant one as here, a first-level one once it
    /// owns the owner word (a look before, which another thread's hold prevented, kept two
    /// threads writing in turns on the removed file for good).
    /// (A writer of this process that has not followed yet may hold the removed file
    /// meanwhile: see [`LockFile::try_acquire_either`].)
    pub(crate) fn follow_path(
        &self,
        stream: &str,
        timeout: Option<Duration>,
        stream_linked: impl Fn() -> bool,
    ) -> Result<()> {
        if self.held_here() {
            self.follow_path_held(stream, timeout, stream_linked)?;
        }
        Ok(())
    }

    /// [`LockFile::follow_path`] for the thread that holds the lock.
    #[inline]
    fn follow_path_held(
        &self,
        stream: &str,
        timeout: Option<Duration>,
        stream_linked: impl Fn() -> bool,
    ) -> Result<()> {
        let now = sys::coarse_now_ms();
        if now.wrapping_sub(self.path_checked_ms.load(Ordering::Relaxed)) < PATH_CHECK_MS {
            return Ok(());
        }
        self.look_at_path_held(stream, timeout, stream_linked, false)
    }

    /// The holder's look at the path: moves to the file there if its own was removed while
    /// the stream lives. With `new_generation` (a handle's first take of its generation), a
    /// file removed with the handle's stream is that stream gone ([`Error::Stale`]), as
    /// [`LockFile::reopen_if_unlinked`] says for a first-level take.
    #[cold]
    fn look_at_path_held(
        &self,
        stream: &str,
        timeout: Option<Duration>,
        stream_linked: impl Fn() -> bool,
        new_generation: bool,
    ) -> Result<()> {
        if self.is_unlinked() {
            if stream_linked() {
                self.move_held(stream, timeout, stream_linked)?;
            } else if new_generation {
                return Err(Error::Stale {
                    name: stream.to_owned(),
                });
            }
        }
        self.path_checked_ms
            .store(sys::coarse_now_ms(), Ordering::Relaxed);
        Ok(())
    }

    /// [`LockFile::follow_path`]'s look for a first-level take: the caller owns the owner
    /// word and holds no flock (so nobody in this process uses the descriptor), and moves to
    /// the file at the path if ours was removed while the stream lives.
    #[cold]
    fn follow_path_unheld(&self, stream: &str, stream_linked: impl FnOnce() -> bool) -> Result<()> {
        if self.is_unlinked() && stream_linked() {
            self.reopen_if_unlinked(stream, || true)?;
        }
        self.path_checked_ms
            .store(sys::coarse_now_ms(), Ordering::Relaxed);
        Ok(())
    }

    /// The holder's move to the file now at the path (see [`LockFile::follow_path`]). Only
    /// the holder's thread uses the descriptor while it holds the lock, so swapping it here
    /// races with nobody. A stream unlinked meanwhile (its lock file with it) is not followed:
    /// a file this made again for it is removed, under its flock.
    fn move_held(
        &self,
        stream: &str,
        timeout: Option<Duration>,
        stream_linked: impl Fn() -> bool,
    ) -> Result<()> {
        let file = open_at_path(&self.path, stream)?;
        let deadline = crate::deadline::from_now(timeout);
        match Self::poll_flock(file.as_raw_fd(), deadline, &|| false) {
            Ok(true) => {}
            Ok(false) => {
                return Err(Error::Timeout {
                    name: stream.to_owned(),
                    op: "take the write lock (its lock file was removed, and another writer holds the one made again at its path)",
                    awaited: crate::Awaited::Writer,
                    timeout: timeout.unwrap_or_default(),
                });
            }
            Err(e) => return Err(lock_io(stream, dir_of(&self.path), "flock", e)),
        }
        if !stream_linked() {
            if sys::same_file_at(&file, &self.path) {
                let _ = std::fs::remove_file(&self.path);
            }
            let _ = sys::flock_fd(file.as_raw_fd(), libc::LOCK_UN);
            return Ok(());
        }
        let mut held = lock_poisoned(&self.file);
        self.fd.store(file.as_raw_fd(), Ordering::Relaxed);
        let removed = std::mem::replace(&mut *held, file);
        lock_poisoned(&self.retired).push(removed);
        self.has_retired.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Whether the file we hold was removed from the path.
    pub(crate) fn is_unlinked(&self) -> bool {
        sys::nlink(&lock_poisoned(&self.file)).is_ok_and(|n| n == 0)
    }

    fn flock(&self, op: libc::c_int) -> io::Result<bool> {
        sys::flock_fd(self.fd.load(Ordering::Relaxed), op)
    }

    /// Takes the lock for the calling thread, or deepens it if the thread already holds it.
    /// Returns the depth now held. `None` waits forever. (The tests' plain acquisition.)
    #[cfg(test)]
    pub(crate) fn acquire(&self, timeout: Option<Duration>, stream: &str) -> Result<u32> {
        Self::within(
            self.take(0, timeout, stream, false, || true, &|| false),
            timeout,
            stream,
        )
    }

    /// Takes the lock for the calling thread (or deepens its hold) for a lifecycle operation
    /// (create, unlink, purge's sweep), which must exclude every other process that locks the
    /// path. A file removed while this
    /// process waited for its flock (another process's unlink or purge removes the file under
    /// the lock, and a waiter then gets the flock of a file nobody else will open) is dropped
    /// after the flock, and the file now at the path locked instead; a thread that holds a
    /// removed file already moves its hold there first ([`LockFile::move_held`]). Writes need
    /// no such check: a lock file is removed only with its stream, and a write into a removed
    /// stream reports [`Error::Stale`] under whatever lock it took.
    pub(crate) fn acquire_at_path(&self, timeout: Option<Duration>, stream: &str) -> Result<u32> {
        Self::within(
            self.take(0, timeout, stream, true, || true, &|| false),
            timeout,
            stream,
        )
    }

    /// Takes the lock for the calling thread (or deepens its hold) for a handle of stream
    /// generation `generation` (non-zero): the first time a generation takes the lock, a lock
    /// file unlinked since it was opened (the stream was removed and recreated, perhaps by
    /// pyshmem) is replaced by the one now at the path before the flock is taken, so every
    /// process converges on one inode; one removed
    /// with the handle's stream (not `stream_linked`) is [`Error::Stale`], also in a child
    /// forked without exec ([`LockFile::adopt_after_fork`]). One compare per acquisition
    /// otherwise. A wait for another holder ends with [`Error::Closed`] within about a
    /// millisecond of the handle's `closed` flag being set.
    pub(crate) fn acquire_for(
        &self,
        generation: u64,
        timeout: Option<Duration>,
        stream: &str,
        stream_linked: impl Fn() -> bool,
        closed: &AtomicBool,
    ) -> Result<u32> {
        let closed = || closed.load(Ordering::Relaxed);
        let took = self.take(generation, timeout, stream, false, stream_linked, &closed);
        Self::within(took, timeout, stream)
    }

    /// An acquisition's depth, or [`Error::Timeout`] where [`LockFile::take`] ran out of
    /// time: the error is built here, where it is reported, not by a try that fails (a
    /// dead-writer check against a live writer) and throws it away.
    fn within(took: Result<Option<u32>>, timeout: Option<Duration>, stream: &str) -> Result<u32> {
        took?.ok_or_else(|| Error::Timeout {
            name: stream.to_owned(),
            op: "take the write lock",
            awaited: crate::Awaited::Writer,
            timeout: timeout.unwrap_or_default(),
        })
    }

    /// The acquisitions above: the depth now held, or `None` once the deadline passed (a
    /// try, `timeout` zero: somebody holds the lock). `at_path` re-checks, after a fresh
    /// flock, that the file is still the one at the path. A wait stops when `closed` says so
    /// ([`Error::Closed`]).
    fn take(
        &self,
        generation: u64,
        timeout: Option<Duration>,
        stream: &str,
        at_path: bool,
        stream_linked: impl Fn() -> bool,
        closed: &dyn Fn() -> bool,
    ) -> Result<Option<u32>> {
        if self.inherited() {
            self.adopt_after_fork(stream, &stream_linked)?;
        }
        let me = thread_token();
        if self.owner.load(Ordering::Relaxed) == me {
            // A write lock's path check, as a guard's writes make it ([`LockFile::follow_path`]);
            // a generation's first take moves to the file at the path at once, as a
            // first-level take does, not only once the last check is `PATH_CHECK_MS` old: this
            // thread may hold an earlier generation's file, which excludes nobody from this one.
            if generation != 0 && self.generation.load(Ordering::Relaxed) != generation {
                self.look_at_path_held(stream, timeout, &stream_linked, true)?;
                self.generation.store(generation, Ordering::Relaxed);
            } else if generation != 0 {
                self.follow_path_held(stream, timeout, &stream_linked)?;
            }
            // A lifecycle take must exclude whoever locks the path: a hold on a removed file
            // (a guard's, whose file a cleaner removed) moves there first, waiting for a
            // writer that holds it; the removed file stays locked until the last release.
            if at_path && self.is_unlinked() {
                self.move_held(stream, timeout, &stream_linked)?;
            }
            let d = self.depth.load(Ordering::Relaxed) + 1;
            self.depth.store(d, Ordering::Relaxed);
            return Ok(Some(d));
        }
        // The deadline is computed only on a contended path (a clock read costs ~25 ns).
        let started = std::cell::OnceCell::new();
        let deadline = || crate::deadline::after(*started.get_or_init(Instant::now), timeout);
        // A wait that stopped short of the lock: the handle closed meanwhile, or the deadline
        // (`None`, no error built: a try's caller throws it away).
        let timed_out = || {
            if closed() {
                return Err(Error::Closed {
                    name: stream.to_owned(),
                });
            }
            Ok(None)
        };
        // Thread part: claim the owner word (Acquire pairs with `free_owner`'s swap); a try
        // (zero timeout) still spins a moment, over another thread's short hold (`attach`'s
        // refresh, another try), which one-shot dead-writer checks would otherwise lose to.
        if self
            .owner
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
            && !self.wait_for_owner(me, deadline(), closed)
        {
            return timed_out();
        }
        // Until the flock is ours, the claim is given back on every way out, a panic
        // included: a thread that kept the owner word without the flock would lock every
        // other thread out, and pass for the holder at its next `lock`.
        let claim = OwnerClaim(self);
        if generation != 0 {
            if self.generation.load(Ordering::Relaxed) != generation {
                self.reopen_if_unlinked(stream, &stream_linked)?;
                self.generation.store(generation, Ordering::Relaxed);
            } else if sys::coarse_now_ms()
                .wrapping_sub(self.path_checked_ms.load(Ordering::Relaxed))
                >= PATH_CHECK_MS
            {
                // A write lock's path check (see `follow_path`), here where this thread owns
                // the owner word: a look before the claim fails whenever another thread of
                // this process holds the lock.
                self.follow_path_unheld(stream, &stream_linked)?;
            }
        }
        // Process part: the flock, non-blocking first, then polled until the deadline.
        loop {
            let got = match self.flock(libc::LOCK_EX | libc::LOCK_NB) {
                Ok(true) => Ok(true),
                // A try (a dead-writer check's): the one attempt was made.
                Ok(false) if timeout == Some(Duration::ZERO) => Ok(false),
                Ok(false) => Self::poll_flock(self.fd.load(Ordering::Relaxed), deadline(), closed),
                Err(e) => Err(e),
            };
            match got {
                Ok(true) if at_path && self.is_unlinked() => {
                    // Locked a removed file: let it go and lock the one at the path.
                    let _ = self.flock(libc::LOCK_UN);
                    self.reopen_if_unlinked(stream, || true)?;
                }
                Ok(true) => {
                    self.depth.store(1, Ordering::Relaxed);
                    std::mem::forget(claim);
                    return Ok(Some(1));
                }
                Ok(false) => return timed_out(),
                Err(e) => return Err(lock_io(stream, dir_of(&self.path), "flock", e)),
            }
        }
    }

    /// Whether this state came from a parent through a fork without exec.
    fn inherited(&self) -> bool {
        // Acquire: a thread that sees the adoption's count sees its descriptor.
        self.forks.load(Ordering::Acquire) != sys::forks()
    }

    /// Makes the state a forked child inherited its own: a flock belongs to the open file
    /// description, which fork shares, so the parent's descriptor would let the child in
    /// while the parent holds the lock (and its unlock would free the parent's). The child
    /// opens the file afresh and starts with nobody here holding it: a hold the forking
    /// thread had is the parent's. The inherited descriptors are `/dev/null` by now (the
    /// fork handler made them so, see [`sys::register_lock_fd`], lest a child that never
    /// locks keep a dead parent's flock); closing them leaves the parent's flock alone
    /// either way (the parent still has its own open). Runs once, under the `file` mutex
    /// (a parent thread inside that mutex at the fork would leave it locked for good: it is
    /// held across an `fstat`, at a writer's path check every 20 ms at most and at a reader's
    /// dead-writer check, and across the `open` of a move; as is the registry's, across the
    /// `open` of a first [`LockFile::attach`]). A file removed with
    /// the caller's stream (not `stream_linked`) is not made again at the path, as in
    /// [`LockFile::reopen_if_unlinked`]: [`Error::Stale`], the state left inherited.
    #[cold]
    fn adopt_after_fork(&self, stream: &str, stream_linked: impl FnOnce() -> bool) -> Result<()> {
        let mut file = lock_poisoned(&self.file);
        if !self.inherited() {
            return Ok(()); // another thread of this child did it
        }
        // Its descriptor is `/dev/null` here (see `sys::register_lock_fd`): the path tells
        // whether the file was removed, as its link count did.
        if !file.is_at(&self.path) && !stream_linked() {
            return Err(Error::Stale {
                name: stream.to_owned(),
            });
        }
        let fresh = open_at_path(&self.path, stream)?;
        self.fd.store(fresh.as_raw_fd(), Ordering::Relaxed);
        *file = fresh;
        lock_poisoned(&self.retired).clear();
        self.has_retired.store(false, Ordering::Relaxed);
        self.owner.store(0, Ordering::Relaxed);
        self.depth.store(0, Ordering::Relaxed);
        self.lent.store(0, Ordering::Relaxed);
        self.waiters.store(0, Ordering::Relaxed);
        self.generation.store(0, Ordering::Relaxed);
        self.forks.store(sys::forks(), Ordering::Release);
        Ok(())
    }

    /// Waits until this thread claims the owner word, or the deadline passes, or `closed`
    /// says so (looked at every step).
    fn wait_for_owner(
        &self,
        me: usize,
        deadline: Option<Instant>,
        closed: &dyn Fn() -> bool,
    ) -> bool {
        for _ in 0..100 {
            std::hint::spin_loop();
            if self
                .owner
                .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return true;
            }
        }
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let (m, cv) = &self.wake;
        let mut g = lock_poisoned(m);
        let claimed = loop {
            if self
                .owner
                .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                break true;
            }
            if closed() {
                break false;
            }
            // Bounded waits: a release between our check and the wait is caught next round.
            let step = Duration::from_millis(1);
            let step = match deadline {
                None => step,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break false;
                    }
                    step.min(left)
                }
            };
            g = cv
                .wait_timeout(g, step)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        };
        drop(g);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        claimed
    }

    /// Frees the owner word and wakes the threads waiting for it. A swap, not a store: the
    /// waiter count is read after it, and a plain store could be ordered after that read (a
    /// store-load reorder), so a thread that registered and then saw the word still taken
    /// slept its whole 1 ms step.
    fn free_owner(&self) {
        self.owner.swap(0, Ordering::SeqCst);
        self.wake_waiters();
    }

    fn wake_waiters(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            let _g = lock_poisoned(&self.wake.0);
            self.wake.1.notify_all();
        }
    }

    /// Polls a non-blocking flock of `fd` until `deadline`, or until `stop` says so (looked at
    /// before each try): yields first, then sleeps growing to 1 ms.
    fn poll_flock(
        fd: RawFd,
        deadline: Option<Instant>,
        stop: &dyn Fn() -> bool,
    ) -> io::Result<bool> {
        let mut backoff = Backoff::yielding_rounds(
            64,
            Sleeps::new(Duration::from_micros(5), Duration::from_millis(1)),
        );
        let taken = poll_with(&mut backoff, deadline, || {
            if stop() {
                return Some(Ok(false));
            }
            match sys::flock_fd(fd, libc::LOCK_EX | libc::LOCK_NB) {
                Ok(false) => None,
                taken => Some(taken),
            }
        });
        taken.unwrap_or(Ok(false))
    }

    /// Lends the payload until the loan drops. Only the lock holder lends (a fill runs under
    /// the lock, a live view borrows a guard), so only its thread sees the count move.
    pub(crate) fn lend(&self, what: Lent) -> Loan<'_> {
        let weight = match what {
            Lent::Fill => FILL,
            Lent::View => 1,
        };
        let n = self.lent.load(Ordering::Relaxed);
        self.lent.store(n + weight, Ordering::Relaxed);
        Loan(self, weight, sys::forks())
    }

    /// Whether a write's fill is in progress: on the lock holder's thread (check
    /// [`LockFile::held_here`]), the payload must not be read or viewed then either.
    pub(crate) fn is_filling(&self) -> bool {
        self.lent.load(Ordering::Relaxed) >= FILL
    }

    /// Whether the payload is lent out: then the holder must not publish (its thread is
    /// inside a fill, or holds a view of the payload that a write would change under it).
    pub(crate) fn is_lent(&self) -> bool {
        self.lent.load(Ordering::Relaxed) > 0
    }

    /// Whether the calling thread holds this lock (a hold inherited through a fork is the
    /// parent's).
    pub(crate) fn held_here(&self) -> bool {
        self.owner.load(Ordering::Relaxed) == thread_token() && !self.inherited()
    }

    /// Takes the lock only if nobody (no thread, no process) holds it.
    pub(crate) fn try_acquire(&self, stream: &str) -> Result<bool> {
        Self::taken(self.take(0, Some(Duration::ZERO), stream, false, || true, &|| false))
    }

    /// [`LockFile::try_acquire`] proving that no writer holds the lock, in this file or in the
    /// one now at the path: when ours was removed while its stream lives (`stream_linked`), a
    /// writer may lock either (one that followed the path, one that has not yet), so the
    /// lock is ours only if both are free. Returns with the lock held (one level more) or not.
    /// A thread that holds the removed file already (a guard that has not followed yet)
    /// tries the one at the path as its write's move does ([`LockFile::move_held`], without
    /// waiting): free, its hold moves there (keeping the removed file locked), so it holds
    /// both and nobody writes; locked by a writer, not proven, `false`. (Waiting for that
    /// guard's next write to move it would wait for good on its own thread: a read there
    /// blocks it.)
    pub(crate) fn try_acquire_either(
        &self,
        stream: &str,
        stream_linked: impl Fn() -> bool,
    ) -> Result<bool> {
        let held_before = self.held_here();
        let take = self.take(
            0,
            Some(Duration::ZERO),
            stream,
            false,
            &stream_linked,
            &|| false,
        );
        if !Self::taken(take)? {
            return Ok(false);
        }
        if !self.is_unlinked() || !stream_linked() {
            return Ok(true);
        }
        if held_before {
            // Both files held at one level more on success: the caller's release drops only
            // that level, and the last release unlocks the removed one too.
            let moved = self.move_held(stream, Some(Duration::ZERO), &stream_linked);
            return match moved {
                Ok(()) if !self.is_unlinked() => Ok(true),
                // A writer holds the file at the path, or the stream went meanwhile.
                Ok(()) | Err(Error::Timeout { .. }) => {
                    self.release(|_| {});
                    Ok(false)
                }
                Err(e) => {
                    self.release(|_| {});
                    Err(e)
                }
            };
        }
        // The removed file is free. Still owning the owner word (no other thread of this
        // process takes either file meanwhile, nor keeps this one from moving), let it go and
        // try the file at the path.
        let _ = self.flock(libc::LOCK_UN);
        let moved = self.reopen_if_unlinked(stream, || true).and_then(|_| {
            self.flock(libc::LOCK_EX | libc::LOCK_NB)
                .map_err(|e| lock_io(stream, dir_of(&self.path), "flock", e))
        });
        if let Ok(true) = moved {
            return Ok(true);
        }
        self.release(|_| {});
        moved
    }

    /// [`LockFile::try_acquire`] with [`LockFile::acquire_at_path`]'s check.
    pub(crate) fn try_acquire_at_path(&self, stream: &str) -> Result<bool> {
        Self::taken(self.take(0, Some(Duration::ZERO), stream, true, || true, &|| false))
    }

    /// Whether a try took the lock. Not taken: somebody holds it (`None`, no error built),
    /// or a move to the file now at the path found it held ([`LockFile::move_held`]'s
    /// timeout).
    fn taken(took: Result<Option<u32>>) -> Result<bool> {
        match took {
            Ok(depth) => Ok(depth.is_some()),
            Err(Error::Timeout { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Drops one level; the last level releases the flock. Returns the depth left.
    ///
    /// `before_unlock` runs while the lock is still held, just before the flock is released
    /// (the stream clears the owner fields in the header there).
    pub(crate) fn release(&self, before_unlock: impl FnOnce(u32)) -> u32 {
        debug_assert_eq!(self.owner.load(Ordering::Relaxed), thread_token());
        let depth = self.depth.load(Ordering::Relaxed).saturating_sub(1);
        self.depth.store(depth, Ordering::Relaxed);
        before_unlock(depth);
        if depth == 0 {
            let _ = self.flock(libc::LOCK_UN);
            if self.has_retired.load(Ordering::Relaxed) {
                // Unlocked before they close: a child forked without exec shares them.
                let mut retired = lock_poisoned(&self.retired);
                for f in retired.iter() {
                    let _ = sys::flock_fd(f.as_raw_fd(), libc::LOCK_UN);
                }
                retired.clear();
                self.has_retired.store(false, Ordering::Relaxed);
            }
            self.free_owner();
        }
        depth
    }
}

/// This thread's claim on a lock's owner word before it holds the flock: dropped (an error,
/// a panic), it frees the word and wakes the threads waiting for it.
struct OwnerClaim<'a>(&'a LockFile);

impl Drop for OwnerClaim<'_> {
    fn drop(&mut self) {
        self.0.free_owner();
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    fn temp_lock(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("shmstream-lock-test-{}-{tag}", std::process::id()));
        dir.join("x.lock")
    }

    #[test]
    fn reentrant_in_one_thread_exclusive_across_threads() {
        let path = temp_lock("reent");
        let sut = LockFile::attach(&path, "t").expect("attach");
        assert_eq!(sut.acquire(None, "t").unwrap(), 1);
        assert_eq!(sut.acquire(None, "t").unwrap(), 2);
        let other = sut.clone();
        let blocked =
            std::thread::spawn(move || other.acquire(Some(Duration::from_millis(30)), "t"));
        assert!(matches!(
            blocked.join().unwrap(),
            Err(Error::Timeout { .. })
        ));
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
    fn a_lifecycle_lock_taken_on_a_removed_file_moves_to_the_file_at_the_path() {
        let path = temp_lock("moved");
        let sut = LockFile::attach(&path, "t").unwrap();
        // Another process's unlink: it removes the file under its flock, then lets go.
        let unlinker = open_file(&path, "t").unwrap();
        assert!(sys::flock(&unlinker, libc::LOCK_EX | libc::LOCK_NB).unwrap());
        std::fs::remove_file(&path).unwrap();
        sys::flock(&unlinker, libc::LOCK_UN).unwrap();

        assert_eq!(
            sut.acquire_at_path(Some(Duration::from_secs(5)), "t")
                .unwrap(),
            1
        );
        let newcomer = open_file(&path, "t").unwrap();
        assert!(
            !sys::flock(&newcomer, libc::LOCK_EX | libc::LOCK_NB).unwrap(),
            "the lock is held on the removed file: a process opening the path takes it too"
        );
        sut.release(|_| {});
        assert!(sys::flock(&newcomer, libc::LOCK_EX | libc::LOCK_NB).unwrap());
        // The same with nobody waiting: a zero timeout moves too.
        std::fs::remove_file(&path).unwrap();
        sys::flock(&newcomer, libc::LOCK_UN).unwrap();
        assert!(sut.try_acquire_at_path("t").unwrap());
        assert!(
            !sys::flock(
                &open_file(&path, "t").unwrap(),
                libc::LOCK_EX | libc::LOCK_NB
            )
            .unwrap()
        );
        sut.release(|_| {});
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// A writer that waited for another thread of its process moves to the file at the path
    /// when its look is due: its look before the take found the lock held (two threads
    /// writing in turns always do), and the take itself never looked, so the process kept
    /// the removed file for good while other processes locked the new one.
    #[test]
    fn a_writer_that_waited_for_another_thread_moves_to_the_file_at_the_path() {
        let path = temp_lock("contended-move");
        let sut = LockFile::attach(&path, "t").unwrap();
        sut.acquire_for(7, None, "t", || true, &AtomicBool::new(false))
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        // The look is due (as 20 ms after the last one).
        sut.path_checked_ms.store(
            sys::coarse_now_ms().wrapping_sub(PATH_CHECK_MS),
            Ordering::Relaxed,
        );
        let other = sut.clone();
        let writer = std::thread::spawn(move || {
            // A write's lock, as `Stream::acquire_stamped` takes it.
            other.follow_path("t", None, || true).unwrap();
            other
                .acquire_for(
                    7,
                    Some(Duration::from_secs(10)),
                    "t",
                    || true,
                    &AtomicBool::new(false),
                )
                .unwrap();
            let moved = !other.is_unlinked();
            other.release(|_| {});
            moved
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while sut.waiters.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the writer never waited");
            std::thread::yield_now();
        }
        sut.release(|_| {});
        assert!(writer.join().unwrap(), "the writer locked the removed file");
        assert!(path.exists());
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// A lifecycle take (create, unlink, purge) by a thread that already holds the lock on
    /// the file at the path deepens its hold: it does not try to move to that same file,
    /// whose flock (another open of it) its own hold would refuse until the deadline.
    #[test]
    fn a_reentrant_lifecycle_take_on_the_file_at_the_path_deepens_the_hold() {
        let path = temp_lock("reentrant-at-path");
        let sut = LockFile::attach(&path, "t").unwrap();
        assert_eq!(sut.acquire(None, "t").unwrap(), 1);
        assert_eq!(
            sut.acquire_at_path(Some(Duration::from_millis(200)), "t")
                .unwrap(),
            2
        );
        assert!(sut.try_acquire_at_path("t").unwrap());
        assert_eq!(sut.release(|_| {}), 2);
        assert_eq!(sut.release(|_| {}), 1);
        assert_eq!(sut.release(|_| {}), 0);
        let foreign = open_file(&path, "t").unwrap();
        assert!(sys::flock(&foreign, libc::LOCK_EX | libc::LOCK_NB).unwrap());
        sys::flock(&foreign, libc::LOCK_UN).unwrap();
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// A guard's reentrant write lock (same generation, as its writes take it) looks at the
    /// path when its look is due, and moves its hold to the file made again there, so a
    /// process that opens the path is excluded while the guard lives.
    #[test]
    fn a_reentrant_take_of_a_generation_moves_to_the_file_at_the_path_when_its_look_is_due() {
        let path = temp_lock("reentrant-look");
        let sut = LockFile::attach(&path, "t").unwrap();
        let closed = AtomicBool::new(false);
        assert_eq!(sut.acquire_for(7, None, "t", || true, &closed).unwrap(), 1);
        std::fs::remove_file(&path).unwrap();
        // The look is due (as 20 ms after the last one).
        sut.path_checked_ms.store(
            sys::coarse_now_ms().wrapping_sub(PATH_CHECK_MS),
            Ordering::Relaxed,
        );
        assert_eq!(
            sut.acquire_for(7, Some(Duration::from_secs(5)), "t", || true, &closed)
                .unwrap(),
            2
        );
        assert!(
            !sut.is_unlinked(),
            "the reentrant take kept the removed file"
        );
        let newcomer = open_file(&path, "t").unwrap();
        assert!(
            !sys::flock(&newcomer, libc::LOCK_EX | libc::LOCK_NB).unwrap(),
            "a process opening the path takes the lock the guard holds"
        );
        sut.release(|_| {});
        sut.release(|_| {});
        assert!(sys::flock(&newcomer, libc::LOCK_EX | libc::LOCK_NB).unwrap());
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn two_attachments_share_state_and_separate_files_exclude() {
        let path = temp_lock("share");
        let a = LockFile::attach(&path, "t").unwrap();
        // Another stream's attachment in between prunes the registry, of dead entries only.
        let between = LockFile::attach(&temp_lock("share-between"), "u").unwrap();
        let b = LockFile::attach(&path, "t").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &between));
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
        let _ = std::fs::remove_dir_all(temp_lock("share-between").parent().unwrap());
    }

    /// A process that opens and closes many streams keeps no entry for a closed one: the
    /// next attachment drops it from the registry.
    #[test]
    fn the_registry_forgets_a_lock_file_nobody_uses() {
        let gone = temp_lock("forgotten");
        drop(LockFile::attach(&gone, "t").unwrap());
        let next = temp_lock("forgetting");
        let _kept = LockFile::attach(&next, "u").unwrap();
        let reg = lock_poisoned(registry());
        assert!(
            !reg.contains_key(&gone),
            "a dead entry outlived the next attach"
        );
        assert!(reg.contains_key(&next));
        drop(reg);
        for p in [gone, next] {
            let _ = std::fs::remove_dir_all(p.parent().unwrap());
        }
    }

    /// A try (zero timeout, as a dead-writer check makes) on a lock another process holds
    /// makes one `flock`, not a second one in the poll; on a lock another thread of this
    /// process holds, none.
    #[test]
    fn a_lock_try_makes_one_flock() {
        let path = temp_lock("try");
        let a = LockFile::attach(&path, "t").unwrap();
        let foreign = open_file(&path, "t").unwrap();
        assert!(sys::flock(&foreign, libc::LOCK_EX | libc::LOCK_NB).unwrap());
        let flocks = || sys::FLOCKS.with(std::cell::Cell::get);
        let before = flocks();
        assert!(!a.try_acquire("t").unwrap());
        assert_eq!(flocks() - before, 1, "flock calls of one try");
        sys::flock(&foreign, libc::LOCK_UN).unwrap();
        a.acquire(None, "t").unwrap();
        let (took, flocks_there) = std::thread::scope(|s| {
            s.spawn(|| {
                let before = flocks();
                (a.try_acquire("t").unwrap(), flocks() - before)
            })
            .join()
            .unwrap()
        });
        a.release(|_| {});
        assert_eq!((took, flocks_there), (false, 0));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_new_generation_moves_to_the_lock_file_now_at_the_path() {
        let path = temp_lock("generation");
        let sut = LockFile::attach(&path, "t").unwrap();
        sut.acquire_for(11, None, "t", || true, &AtomicBool::new(false))
            .unwrap();
        sut.release(|_| {});
        // The stream is unlinked and recreated elsewhere: a new file at the path, held by
        // another process (here: another open file description).
        std::fs::remove_file(&path).unwrap();
        let foreign = open_file(&path, "t").unwrap();
        assert!(sys::flock(&foreign, libc::LOCK_EX | libc::LOCK_NB).unwrap());
        // A handle of the new generation must contend on the new file, not the orphan.
        let err = sut
            .acquire_for(
                22,
                Some(Duration::ZERO),
                "t",
                || true,
                &AtomicBool::new(false),
            )
            .unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        sys::flock(&foreign, libc::LOCK_UN).unwrap();
        assert_eq!(
            sut.acquire_for(
                22,
                Some(Duration::from_secs(1)),
                "t",
                || true,
                &AtomicBool::new(false)
            )
            .unwrap(),
            1
        );
        assert!(!sys::flock(&foreign, libc::LOCK_EX | libc::LOCK_NB).unwrap());
        sut.release(|_| {});
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// A thread holding the lock for one generation, its file removed and a new one at the
    /// path (the stream made again by another process), takes the new generation's lock
    /// re-entrantly: it moves to the file at the path at once, though the held lock's last
    /// path check is not `PATH_CHECK_MS` old; one whose stream is gone too is `Stale`.
    #[test]
    fn a_new_generations_reentrant_take_moves_to_the_file_at_the_path_at_once() {
        let path = temp_lock("reentrant-generation");
        let sut = LockFile::attach(&path, "t").unwrap();
        let open = AtomicBool::new(false);
        sut.acquire_for(7, None, "t", || true, &open).unwrap();
        std::fs::remove_file(&path).unwrap();
        let fresh = open_file(&path, "t").unwrap();
        let gone = sut.acquire_for(8, Some(Duration::ZERO), "t", || false, &open);
        assert!(matches!(gone, Err(Error::Stale { .. })), "{gone:?}");
        sut.path_checked_ms
            .store(sys::coarse_now_ms(), Ordering::Relaxed);
        assert_eq!(
            sut.acquire_for(8, Some(Duration::ZERO), "t", || true, &open)
                .unwrap(),
            2
        );
        assert!(!sut.is_unlinked(), "the hold stayed on the removed file");
        assert!(
            !sys::flock(&fresh, libc::LOCK_EX | libc::LOCK_NB).unwrap(),
            "the file at the path is not held"
        );
        sut.release(|_| {});
        sut.release(|_| {});
        assert!(sys::flock(&fresh, libc::LOCK_EX | libc::LOCK_NB).unwrap());
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// A second attachment of a lock file this process still uses, removed since and made
    /// again at the path (the stream removed and recreated), moves to the file there: a try
    /// by generation 0, as `clear_dead_lock_stamps` makes after attaching, contends with the
    /// writer that holds the new file, not with nobody on the removed one.
    #[test]
    fn an_attachment_moves_to_the_lock_file_made_again_at_the_path() {
        let path = temp_lock("attach-refresh");
        let sut = LockFile::attach(&path, "t").unwrap();
        std::fs::remove_file(&path).unwrap();
        let writer = open_file(&path, "t").unwrap();
        assert!(sys::flock(&writer, libc::LOCK_EX | libc::LOCK_NB).unwrap());
        let again = LockFile::attach(&path, "t").unwrap();
        assert!(Arc::ptr_eq(&sut, &again));
        assert!(!again.is_unlinked(), "the attachment kept the removed file");
        assert!(
            !again.try_acquire("t").unwrap(),
            "a try took the removed file while a writer holds the one at the path"
        );
        sys::flock(&writer, libc::LOCK_UN).unwrap();
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// A guard's write whose path look is long overdue (a producer that paused) follows a
    /// lock file a cleaner removed while the stream lives to the one made again at the path.
    #[test]
    fn a_holder_whose_look_is_long_overdue_follows_the_path() {
        let path = temp_lock("overdue-look");
        let sut = LockFile::attach(&path, "t").unwrap();
        sut.acquire_for(7, None, "t", || true, &AtomicBool::new(false))
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        sut.path_checked_ms
            .store(sys::coarse_now_ms().wrapping_sub(60_000), Ordering::Relaxed);
        sut.follow_path("t", Some(Duration::from_secs(5)), || true)
            .unwrap();
        assert!(!sut.is_unlinked(), "the hold stayed on the removed file");
        let newcomer = open_file(&path, "t").unwrap();
        assert!(!sys::flock(&newcomer, libc::LOCK_EX | libc::LOCK_NB).unwrap());
        sut.release(|_| {});
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// A first-level write lock whose path look is due, on a lock file removed with its
    /// stream, does not make the file again: nothing would remove it but a purge.
    #[test]
    fn a_take_on_a_lock_file_removed_with_its_stream_makes_no_new_one() {
        let path = temp_lock("removed-with-stream");
        let sut = LockFile::attach(&path, "t").unwrap();
        let open = AtomicBool::new(false);
        sut.acquire_for(7, None, "t", || true, &open).unwrap();
        sut.release(|_| {});
        std::fs::remove_file(&path).unwrap();
        sut.path_checked_ms.store(
            sys::coarse_now_ms().wrapping_sub(PATH_CHECK_MS),
            Ordering::Relaxed,
        );
        sut.acquire_for(7, Some(Duration::ZERO), "t", || false, &open)
            .unwrap();
        sut.release(|_| {});
        assert!(
            !path.exists(),
            "a lock file was made again for a removed stream"
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// A dead-writer check's try by a thread that holds no lock, its lock file removed while
    /// the stream lives: free, it lets the removed file go and takes the one at the path;
    /// the one at the path held by a writer, it is not proven (`false`).
    #[test]
    fn a_try_for_either_file_takes_the_one_at_the_path() {
        let path = temp_lock("either-unheld");
        let sut = LockFile::attach(&path, "t").unwrap();
        std::fs::remove_file(&path).unwrap();
        let writer = open_file(&path, "t").unwrap();
        assert!(sys::flock(&writer, libc::LOCK_EX | libc::LOCK_NB).unwrap());
        assert!(!sut.try_acquire_either("t", || true).unwrap());
        sys::flock(&writer, libc::LOCK_UN).unwrap();
        assert!(sut.try_acquire_either("t", || true).unwrap());
        assert!(!sut.is_unlinked(), "the try kept the removed file");
        assert!(!sys::flock(&writer, libc::LOCK_EX | libc::LOCK_NB).unwrap());
        assert_eq!(sut.release(|_| {}), 0);
        assert!(sys::flock(&writer, libc::LOCK_EX | libc::LOCK_NB).unwrap());
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// The same try by a thread that holds the removed file (a guard that has not followed
    /// yet): the file at the path free, its hold moves there, one level deeper; the stream
    /// removed while it moved, it is not proven (`false`) and its hold is as before.
    #[test]
    fn a_holders_try_for_either_file_moves_its_hold_or_gives_up() {
        let path = temp_lock("either-held");
        let sut = LockFile::attach(&path, "t").unwrap();
        let open = AtomicBool::new(false);
        sut.acquire_for(7, None, "t", || true, &open).unwrap();
        std::fs::remove_file(&path).unwrap();
        let looks = std::cell::Cell::new(0);
        let linked_at_first_look = || looks.replace(looks.get() + 1) == 0;
        assert!(!sut.try_acquire_either("t", linked_at_first_look).unwrap());
        assert!(sut.is_unlinked(), "the hold followed a removed stream");
        assert!(
            !path.exists(),
            "the file made again for a removed stream stayed"
        );
        assert!(sut.try_acquire_either("t", || true).unwrap());
        assert!(!sut.is_unlinked(), "the hold stayed on the removed file");
        let newcomer = open_file(&path, "t").unwrap();
        assert!(!sys::flock(&newcomer, libc::LOCK_EX | libc::LOCK_NB).unwrap());
        assert_eq!(sut.release(|_| {}), 1);
        assert_eq!(sut.release(|_| {}), 0);
        assert!(sys::flock(&newcomer, libc::LOCK_EX | libc::LOCK_NB).unwrap());
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// pyshmem makes the default directory and each lock file with the umask's modes (0755 and
    /// 0644 under umask 022): another user could open the file, read-only even, and hold its
    /// flock. Attaching makes both private; a `PYSHMEM_LOCK_DIR` (not the default name) keeps
    /// its mode, its lock file is made private all the same.
    #[test]
    fn a_lock_directory_and_file_pyshmem_made_readable_are_made_private() {
        let base =
            std::env::temp_dir().join(format!("shmstream-lockdir-644-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        let set =
            |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        let default = std::env::var_os("PYSHMEM_LOCK_DIR").is_none_or(|d| d.is_empty());
        for (dir, want_dir) in [
            (base.join(crate::name::default_lock_dir_name()), 0o700),
            (base.join("named"), 0o755),
        ] {
            std::fs::create_dir_all(&dir).unwrap();
            set(&dir, 0o755);
            let path = dir.join("x.lock");
            File::create(&path).unwrap();
            set(&path, 0o644);
            let held = LockFile::attach(&path, "cam").unwrap();
            if default || want_dir == 0o755 {
                assert_eq!(
                    format!("{:o}", mode(&dir)),
                    format!("{want_dir:o}"),
                    "{dir:?}"
                );
            }
            assert_eq!(format!("{:o}", mode(&path)), "600", "{path:?}");
            drop(held);
        }
        let _ = std::fs::remove_dir_all(&base);
    }
}
