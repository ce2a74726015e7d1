//! Async waits for tokio (feature `tokio`, off by default).
//!
//! ```toml
//! shmstream = { version = "0.1", features = ["tokio"] }
//! ```
//!
//! | async | blocking twin |
//! |---|---|
//! | [`Stream::wait_for_count_async`] | [`Stream::wait_for_count`] |
//! | [`Stream::read_after_async`], [`Stream::read_after_publication_async`], [`Stream::read_after_into_slice_async`] | `read_after*` |
//! | [`Stream::read_new_async`], [`Stream::read_new_publication_async`], [`Stream::read_new_into_slice_async`] | `read_new*` |
//!
//! They take `self: &Arc<Stream>` (the stream must outlive a wait that may continue on
//! another thread), have the same semantics, errors and timeouts as their blocking twins
//! (`None` waits forever), with the two exceptions below, and never block an executor
//! thread:
//!
//! ```no_run
//! # async fn demo() -> shmstream::Result<()> {
//! use std::{sync::Arc, time::Duration};
//! let cam = Arc::new(shmstream::Stream::open_readonly("cam0")?);
//! loop {
//!     let frame = cam.read_new_async::<u16>(Some(Duration::from_secs(1))).await?;
//!     // ... process `frame`; other tasks run while this one waits ...
//! #   drop(frame);
//! }
//! # }
//! ```
//!
//! The exceptions:
//!
//! * **They need a tokio runtime.** Polled outside one (e.g. by
//!   `futures::executor::block_on`), they return [`Error::Unsupported`] on the first poll,
//!   whether or not the frame is already there, and so does a later poll outside one that
//!   would have to wait (a future moved off the runtime): call them from within a tokio
//!   runtime, or use the blocking read.
//! * **A wait under this thread's own write lock is not refused.** The blocking twin
//!   refuses it ([`Error::Unsupported`]: no other writer can publish while the lock is
//!   held). The async wait cannot tell the task holding a [`WriteGuard`](crate::WriteGuard)
//!   from another task on the same executor thread, which may well publish the frame and
//!   release the lock; so it waits. A task that holds the guard itself across the `.await`
//!   therefore waits until its timeout (forever with `None`): drop the guard first, or write
//!   the frame through it.
//!
//! # How the wait is bridged (and why)
//!
//! A stream's wake-up is a futex word in shared memory, written by another process. Nothing
//! turns that into a readiness event an async reactor can poll: there is no file descriptor
//! (an eventfd would need the *writer* to cooperate, and pyshmem writers only `FUTEX_WAKE`).
//! So the parking has to happen on some thread, and the choices are:
//!
//! * **`tokio::task::spawn_blocking` per wait (chosen).** When the frame is not there yet,
//!   the wait moves to tokio's blocking pool, where the ordinary blocking wait runs under
//!   the handle's [`WaitStrategy`](crate::WaitStrategy) (adaptive: spin, then as park;
//!   park: futex parks capped at 50 ms on notify streams, yields then back-off sleeps
//!   otherwise; `Spin` and `Yield` keep their pool thread busy for as long as the wait
//!   lasts). Its
//!   wake-up latency is the blocking path's plus one hand-off to the executor (tens of
//!   microseconds), no thread is created per stream, nothing runs while nobody waits, and
//!   it works for every stream, notify or not, Rust- or pyshmem-written.
//! * A per-stream waker thread parking on the futex and fanning out to wakers: saves the
//!   hand-off into the pool but costs a thread per watched stream for its whole life and
//!   needs its own shutdown protocol; not worth it at frame rates where a hand-off of tens
//!   of microseconds matters little.
//! * `block_in_place`: panics on the current-thread runtime and still stalls the worker's
//!   other tasks' timers; rejected.
//!
//! **Hot path, no hop.** If the wanted frame is already published (count past the
//! baseline), the copy happens inline on the calling task: no thread hop, no allocation
//! beyond the frame itself. Only a wait that would actually block goes to the pool, and it
//! comes back to copy the frame on the calling task (so `_into_slice` variants can fill a
//! caller-owned buffer).
//!
//! **Each pending wait occupies a blocking-pool thread** while it waits (tokio's
//! `max_blocking_threads`, 512 by default, bounds them; past it, waits queue for a thread,
//! as does the application's other blocking work). Timeouts hold regardless: a timed wait
//! is woken at its deadline by one process-wide timer thread (started with the first wait
//! that has to wait; no tokio time driver needed; a wait that ends first withdraws its
//! deadline), gives up its background wait, makes one last non-blocking attempt inline and
//! returns that or [`Error::Timeout`]. The same timer polls a wait still queued for a pool
//! thread every 50 ms, so [`Stream::close`] (or an unlink) ends it with [`Error::Closed`]
//! (or [`Error::Stale`]) as it ends a running one. One exception: where the process cannot
//! start that timer thread (its thread limit reached, `EAGAIN`; each later timed wait tries
//! again), a wait still queued for a pool thread ends only once it gets one.
//!
//! **Cancellation.** Dropping the future (e.g. `tokio::time::timeout` around it, or
//! `select!`) ends its background wait: the wait looks at a cancel flag after every pause,
//! and the drop wakes the stream's futex if (and only if) that wait is parked on it (notify
//! streams; other streams pause at most a millisecond). So the pool thread and the wait's
//! clone of the `Arc<Stream>` are released at once, or after at most one park cap (50 ms)
//! when the drop races the park (an `auto_unlink` stream goes when its last handle does).
//! A wait still queued for a pool thread holds no clone at all (only a weak reference, up
//! to the moment it starts), so a full pool keeps no stream alive for dropped or timed-out
//! waits.
//! A wait that returns at its deadline wakes nobody: its background wait ends at the same
//! deadline.
//!
//! The futures are cancel-safe: one dropped before it returned consumed no frame (its
//! background wait only waits; the copy happens on the polling task as the future returns),
//! so the handle's next read returns what it would have. A `select!` loop that makes a
//! new future on each turn still pays for it: a hand-off to the pool per turn, and once the
//! wait parked, a wake of every waiter of the stream per drop. Pin one future outside the
//! loop and poll it by `&mut` instead. A wait abandoned and ending meanwhile in the report of a writer's death (made
//! once per handle and invalid generation) gives the report back, so the handle's next wait
//! makes it.
//!
//! **Fork.** Async waits in a child forked without exec are not supported (nor are tokio
//! runtimes there): the child may inherit the process-wide timer's lock held by a thread
//! that does not exist in it.
//!
//! **Runtime shutdown.** Dropping a runtime waits for its blocking pool, so a future polled
//! outside the runtime's tasks (e.g. by hand under `Runtime::enter`) and still alive keeps
//! its untimed wait there, and the drop hangs until a frame comes: drop such futures or
//! [`close`](Stream::close) the stream before dropping the runtime, or use
//! `Runtime::shutdown_background`.
//!
//! **Bookkeeping.** `read_new_async` counts from the frame this handle last returned, like
//! `read_new`; missed-frame counters and `last_read_count` are updated exactly as by the
//! blocking calls (they share the handle).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use ndarray::ArrayD;

use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::notify::Cancel;
use crate::read::{Publication, Want};
use crate::stream::Stream;

const OP: &str = "read a new frame";

/// A background wait's outcome, handed to its future under a lock (whether the future is
/// gone is its [`Cancel`], which the background wait's pauses also look at). A waiting read
/// reports each invalid generation once per handle (the report is marked in the handle when
/// made); an outcome nobody will receive gives its report back, so the handle's next wait
/// makes it instead of waiting in silence.
#[derive(Default)]
struct Handoff {
    outcome: Option<Outcome>,
}

/// What the pool thread's wait returned, and the report it marked in the handle (the mark
/// it replaced, the mark it made: [`crate::read::reporting`]), if it made one.
struct Outcome {
    result: Result<Option<u64>>,
    report: Option<(i64, i64)>,
}

impl Outcome {
    /// Undoes the report this outcome made, if it made one (and only that one: a report
    /// another wait on the handle made since stays).
    fn give_back(self, stream: &Stream) {
        if let (Err(Error::Inconsistent { .. }), Some((before, made))) = (&self.result, self.report)
        {
            stream.reads.give_back_report(before, made);
        }
    }
}

/// Marks the future gone when it is dropped (finished, abandoned or past its deadline),
/// wakes a background wait still parked so that it lets go of the stream at once (unless
/// its deadline passed: then it ends by itself), and gives back the report of an outcome it
/// did not take.
struct CancelOnDrop {
    handoff: Arc<Mutex<Handoff>>,
    cancel: Arc<Cancel>,
    stream: Arc<Stream>,
    /// The deadline passed: the background wait's park ends at it too, no wake needed.
    expired: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let mut h = self.handoff.lock().unwrap_or_else(PoisonError::into_inner);
        let parked = self.cancel.cancel();
        if let Some(o) = h.outcome.take() {
            o.give_back(&self.stream);
        }
        if parked && !self.expired {
            // The flag is looked at after every pause; this ends a futex park now.
            crate::notify::wake_all(&self.stream.header);
        }
    }
}

/// The process's one deadline timer: a thread (started with the first async wait that has
/// to wait) sleeping until the earliest registered deadline, then waking that
/// deadline's task. It makes an async wait's timeout hold however busy tokio's blocking pool
/// is, on any runtime (tokio's timers need its time driver, which a runtime may lack). A
/// wait that ends first removes its entry ([`Alarm`]'s drop).
mod timer {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
    use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
    use std::task::Waker;
    use std::time::Instant;

    /// A task to wake, unless its flag is set by then.
    type Entry = (Waker, Option<Arc<AtomicBool>>);

    /// The tasks to wake, and when the timer thread looks next by itself.
    struct Due {
        /// By deadline (and a number telling equal deadlines apart).
        map: BTreeMap<(Instant, u64), Entry>,
        /// When the timer thread wakes without a notify (`None`: never, it waits for one).
        /// An alarm earlier than it notifies; a later one does not (the thread looks at the
        /// map when it wakes): a queued-poll alarm per wait costs no thread wake-up each.
        looks_at: Option<Instant>,
    }

    static DUE: Mutex<Due> = Mutex::new(Due {
        map: BTreeMap::new(),
        looks_at: None,
    });
    static CHANGED: Condvar = Condvar::new();
    /// The process that started the timer thread (a child forked since has none).
    static STARTED_IN: AtomicU32 = AtomicU32::new(0);
    static NEXT: AtomicU64 = AtomicU64::new(0);

    fn due() -> MutexGuard<'static, Due> {
        DUE.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A task to wake at a deadline; dropping it removes it from the timer.
    pub(super) struct Alarm((Instant, u64));

    impl Alarm {
        /// Wakes `waker` at `at` (or soon after).
        pub(super) fn set(at: Instant, waker: &Waker) -> Alarm {
            Alarm::set_unless(at, waker, None)
        }

        /// Wakes `waker` at `at` (or soon after), unless `skip` is set by then.
        pub(super) fn set_unless(
            at: Instant,
            waker: &Waker,
            skip: Option<Arc<AtomicBool>>,
        ) -> Alarm {
            // Without the thread, a deadline is still seen when anything else polls the
            // future (its background wait ends at the same deadline).
            start_once(&STARTED_IN, || {
                std::thread::Builder::new()
                    .name("shmstream-timer".into())
                    .spawn(run)
            });
            let key = (at, NEXT.fetch_add(1, Ordering::Relaxed));
            let mut due = due();
            if due.looks_at.is_none_or(|t| at < t) {
                due.looks_at = Some(at);
                CHANGED.notify_one();
            }
            due.map.insert(key, (waker.clone(), skip));
            Alarm(key)
        }

        /// Wakes `waker` instead, if it is another task's (the future moved).
        pub(super) fn rearm(&self, waker: &Waker) {
            // The waker replaced is dropped after the lock: dropping a task's last waker may
            // drop its future, and with it another alarm, which takes the lock.
            let replaced = due()
                .map
                .get_mut(&self.0)
                .map(|(w, _)| w)
                .filter(|w| !w.will_wake(waker))
                .map(|w| std::mem::replace(w, waker.clone()));
            drop(replaced);
        }
    }

    impl Drop for Alarm {
        fn drop(&mut self) {
            // The waker removed is dropped after the lock (see `rearm`).
            let removed = due().map.remove(&self.0);
            drop(removed);
        }
    }

    /// Runs `spawn` unless this process started the timer thread already (`started_in`
    /// holds the pid that did). A spawn that fails (`EAGAIN`) is not recorded, so the next
    /// timed wait tries again instead of every later one going without the timer.
    fn start_once<T>(started_in: &AtomicU32, spawn: impl FnOnce() -> std::io::Result<T>) {
        let pid = std::process::id();
        if started_in.swap(pid, Ordering::AcqRel) != pid && spawn().is_err() {
            started_in.store(0, Ordering::Release);
        }
    }

    /// How many tasks wait to be woken with `waker`.
    #[cfg(test)]
    pub(super) fn armed_with(waker: &Waker) -> usize {
        due()
            .map
            .values()
            .filter(|(w, _)| w.will_wake(waker))
            .count()
    }

    fn run() {
        let mut due = due();
        loop {
            let now = Instant::now();
            let mut wake = Vec::new();
            while let Some(e) = due.map.first_entry().filter(|e| e.key().0 <= now) {
                wake.push(e.remove());
            }
            if !wake.is_empty() {
                // It looks again once these are woken: no notify needed meanwhile.
                due.looks_at = Some(now);
                drop(due);
                wake.into_iter()
                    .filter(|(_, skip)| !skip.as_ref().is_some_and(|s| s.load(Ordering::Acquire)))
                    .for_each(|(w, _)| w.wake());
                due = self::due();
                continue;
            }
            let first = due.map.first_key_value().map(|((at, _), _)| *at);
            due.looks_at = first;
            due = match first {
                Some(at) => {
                    CHANGED
                        .wait_timeout(due, at - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => CHANGED.wait(due).unwrap_or_else(PoisonError::into_inner),
            };
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// A timer thread that failed to start is started by the next timed wait; one that
        /// started is not started again.
        #[test]
        fn a_timer_thread_that_failed_to_spawn_is_spawned_by_the_next_wait() {
            let started_in = AtomicU32::new(0);
            let tries = std::cell::Cell::new(0);
            let spawn = |ok: bool| {
                tries.set(tries.get() + 1);
                if ok {
                    Ok(())
                } else {
                    Err(std::io::Error::from(std::io::ErrorKind::WouldBlock))
                }
            };
            start_once(&started_in, || spawn(false));
            assert_eq!(tries.get(), 1);
            start_once(&started_in, || spawn(true));
            assert_eq!(tries.get(), 2, "a failed spawn was never retried");
            start_once(&started_in, || spawn(true));
            assert_eq!(tries.get(), 2, "the timer thread was started twice");
        }
    }
}

impl Stream {
    /// Waits on tokio's blocking pool until a read for `want` would find its frame or
    /// `deadline` passes. `Ok(None)` means the deadline passed; the deadline holds even while
    /// the wait is still queued for a pool thread (see [`timer`]).
    async fn park_until_count(
        self: &Arc<Self>,
        want: Want,
        deadline: Option<Instant>,
    ) -> Result<Option<u64>> {
        self.ensure_runtime()?;
        let mut cancel = CancelOnDrop {
            handoff: Arc::default(),
            cancel: Arc::default(),
            stream: Arc::clone(self),
            expired: false,
        };
        let (handoff, flag) = (Arc::clone(&cancel.handoff), Arc::clone(&cancel.cancel));
        let started = Arc::new(AtomicBool::new(false));
        let starts = Arc::clone(&started);
        // Weak while queued: a wait whose future is gone before a pool thread frees up
        // must not keep the stream (an `auto_unlink` stream goes with its last handle).
        let stream = Arc::downgrade(self);
        let mut task = tokio::task::spawn_blocking(move || {
            // A wait queued until after its future was gone does not start: the upgrade
            // fails if the stream went with it, the flag tells if the stream lives on.
            let Some(stream) = stream.upgrade() else {
                return;
            };
            if flag.is_set() {
                return;
            }
            starts.store(true, Ordering::Release);
            let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let (result, report) = crate::read::reporting(|| {
                crate::notify::cancellable(Arc::clone(&flag), || {
                    match stream.wait_for(want, timeout) {
                        Ok(c) => Ok(Some(c)),
                        Err(Error::Timeout { .. }) => Ok(None),
                        Err(e) => Err(e),
                    }
                })
            });
            let outcome = Outcome { result, report };
            let mut h = handoff.lock().unwrap_or_else(PoisonError::into_inner);
            if flag.is_set() {
                outcome.give_back(&stream);
            } else {
                h.outcome = Some(outcome);
            }
        });
        // The background wait's end, or `None` at the deadline.
        let (mut alarm, mut queued): (Option<timer::Alarm>, Option<timer::Alarm>) = (None, None);
        let joined = std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = Pin::new(&mut task).poll(cx) {
                return Poll::Ready(Ok(Some(r)));
            }
            // A background wait queued for a pool thread sees no close or unlink: look here.
            if let Err(e) = self
                .ensure_open()
                .and_then(|()| self.check_generation(false))
            {
                return Poll::Ready(Err(e));
            }
            let now = Instant::now();
            if let Some(d) = deadline {
                if now >= d {
                    return Poll::Ready(Ok(None));
                }
                match &alarm {
                    Some(a) => a.rearm(cx.waker()),
                    None => alarm = Some(timer::Alarm::set(d, cx.waker())),
                }
            }
            // Until it starts, poll again every park cap (the timer skips it once started).
            let again = now + crate::notify::MAX_PARK;
            if !started.load(Ordering::Acquire) && deadline.is_none_or(|d| again < d) {
                let skip = Some(Arc::clone(&started));
                queued = Some(timer::Alarm::set_unless(again, cx.waker(), skip));
            }
            Poll::Pending
        })
        .await;
        drop((alarm, queued));
        let joined = joined?;
        let out = match joined {
            None => {
                cancel.expired = true;
                Ok(None)
            }
            Some(Ok(())) => cancel
                .handoff
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .outcome
                .take()
                .map_or(Ok(None), |o| o.result),
            Some(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Cancelled, not panicked: the runtime shut down before the pool ran the wait
            // (nothing here aborts it). The handle is fine; the runtime is what went.
            Some(Err(_)) => Err(Error::Unsupported {
                name: self.name.clone(),
                what: "the tokio runtime shut down while this wait was queued for its blocking \
                       pool: wait on a running runtime"
                    .into(),
            }),
        };
        drop(cancel);
        out
    }

    /// Refuses a wait polled outside a tokio runtime (`spawn_blocking` would panic there).
    /// Checked at the first poll and before every spawn: a future first polled inside a
    /// runtime may be polled again outside one (moved to another executor, or after the
    /// guard of `Runtime::enter` was dropped).
    fn ensure_runtime(&self) -> Result<()> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Unsupported {
                name: self.name.clone(),
                what: "an async wait outside a tokio runtime (its wait runs on the runtime's \
                       blocking pool): call it from within a tokio runtime, or use the \
                       blocking read"
                    .into(),
            });
        }
        Ok(())
    }

    fn timeout_error(&self, timeout: Option<Duration>) -> Error {
        Error::Timeout {
            name: self.name.clone(),
            op: OP,
            awaited: crate::Awaited::Writer,
            timeout: timeout.unwrap_or_default(),
        }
    }

    /// The shared loop: try `attempt` inline (it must not wait: it is the blocking twin with a
    /// zero timeout) when the frame `want` names may be there, else park on the pool and
    /// retry. At the deadline `attempt` runs once more, so what the blocking twin reports
    /// instead of a timeout (an aborted or abandoned write, an unlinked stream) is reported
    /// here too.
    async fn wait_then<R>(
        self: &Arc<Self>,
        want: impl Fn(&Stream) -> Want,
        timeout: Option<Duration>,
        mut attempt: impl FnMut(&Stream) -> Result<R>,
    ) -> Result<R> {
        self.ensure_open()?;
        // Refused before the inline try, so that whether it is refused does not depend on
        // whether the frame happens to be there.
        self.ensure_runtime()?;
        let deadline = crate::deadline::from_now(timeout);
        loop {
            // Taken afresh each round, as `attempt` takes it: a `read_new`'s baseline moves
            // when another reader of this handle returns the frame it waited for (a stale
            // one would find that frame at once, every round: a spin).
            let want = want(self);
            let passed = deadline.is_some_and(|d| Instant::now() >= d);
            if passed || self.may_find(want) {
                match attempt(self) {
                    // A writer is inside its bracket right now: wait for it on the pool.
                    Err(Error::Timeout { .. }) if !passed => {}
                    Err(Error::Timeout { .. }) => return Err(self.timeout_error(timeout)),
                    other => return other,
                }
            }
            if self.park_until_count(want, deadline).await?.is_none() {
                // The deadline passed: the next round's last attempt says how.
                continue;
            }
        }
    }

    /// Async [`Stream::wait_for_count`]: resolves with the count once it exceeds `after`.
    pub async fn wait_for_count_async(
        self: &Arc<Self>,
        after: u64,
        timeout: Option<Duration>,
    ) -> Result<u64> {
        self.wait_then(
            |_| Want::After(after),
            timeout,
            |s| s.wait_for_count(after, Some(Duration::ZERO)),
        )
        .await
    }

    /// Async [`Stream::read_after`]: a snapshot of a frame with count > `after`.
    pub async fn read_after_async<T: Element>(
        self: &Arc<Self>,
        after: u64,
        timeout: Option<Duration>,
    ) -> Result<ArrayD<T>> {
        self.ensure_dtype::<T>()?;
        self.host_payload(crate::stream::Access::Read)?;
        self.wait_then(
            |_| Want::After(after),
            timeout,
            |s| s.read_after::<T>(after, Some(Duration::ZERO)),
        )
        .await
    }

    /// Async [`Stream::read_after_publication`].
    pub async fn read_after_publication_async<T: Element>(
        self: &Arc<Self>,
        after: u64,
        timeout: Option<Duration>,
    ) -> Result<Publication<T>> {
        self.ensure_dtype::<T>()?;
        self.host_payload(crate::stream::Access::Read)?;
        self.wait_then(
            |_| Want::After(after),
            timeout,
            |s| s.read_after_publication::<T>(after, Some(Duration::ZERO)),
        )
        .await
    }

    /// Async [`Stream::read_after_into_slice`]: fills `dst` (no allocation); returns the count.
    /// On error, `dst` is unspecified (it may hold a torn copy).
    pub async fn read_after_into_slice_async<T: Element>(
        self: &Arc<Self>,
        after: u64,
        dst: &mut [T],
        timeout: Option<Duration>,
    ) -> Result<u64> {
        self.ensure_dtype::<T>()?;
        self.ensure_len(dst.len())?;
        self.host_payload(crate::stream::Access::Read)?;
        self.wait_then(
            |_| Want::After(after),
            timeout,
            |s| s.read_after_into_slice(after, dst, Some(Duration::ZERO)),
        )
        .await
    }

    /// Async [`Stream::read_new`]: the first frame newer than the one this handle last returned.
    pub async fn read_new_async<T: Element>(
        self: &Arc<Self>,
        timeout: Option<Duration>,
    ) -> Result<ArrayD<T>> {
        self.ensure_dtype::<T>()?;
        self.host_payload(crate::stream::Access::Read)?;
        self.wait_then(Stream::want_new, timeout, |s| {
            s.read_new::<T>(Some(Duration::ZERO))
        })
        .await
    }

    /// Async [`Stream::read_new_publication`].
    pub async fn read_new_publication_async<T: Element>(
        self: &Arc<Self>,
        timeout: Option<Duration>,
    ) -> Result<Publication<T>> {
        self.ensure_dtype::<T>()?;
        self.host_payload(crate::stream::Access::Read)?;
        self.wait_then(Stream::want_new, timeout, |s| {
            s.read_new_publication::<T>(Some(Duration::ZERO))
        })
        .await
    }

    /// Async [`Stream::read_new_into_slice`]; returns the frame's count. On error, `dst` is
    /// unspecified (it may hold a torn copy).
    pub async fn read_new_into_slice_async<T: Element>(
        self: &Arc<Self>,
        dst: &mut [T],
        timeout: Option<Duration>,
    ) -> Result<u64> {
        self.ensure_dtype::<T>()?;
        self.ensure_len(dst.len())?;
        self.host_payload(crate::stream::Access::Read)?;
        self.wait_then(Stream::want_new, timeout, |s| {
            s.read_new_into_slice(dst, Some(Duration::ZERO))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::task::{Context, Wake, Waker};

    /// A waker that counts its wakes and signals each.
    struct Counting(AtomicUsize, Mutex<mpsc::Sender<()>>);

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
            let _ = self.1.lock().unwrap().send(());
        }
    }

    fn counting() -> (Arc<Counting>, mpsc::Receiver<()>) {
        let (tx, rx) = mpsc::channel();
        (Arc::new(Counting(AtomicUsize::new(0), Mutex::new(tx))), rx)
    }

    const LONG: Duration = Duration::from_secs(30);

    /// Polls `wait` each time `woken` says its task was woken, until it is ready; panics
    /// with `what` if no wake comes within [`LONG`].
    fn ready_when_woken<F: Future>(
        mut wait: std::pin::Pin<&mut F>,
        cx: &mut Context<'_>,
        woken: &mpsc::Receiver<()>,
        what: &str,
    ) -> F::Output {
        loop {
            woken.recv_timeout(LONG).expect(what);
            if let Poll::Ready(r) = wait.as_mut().poll(cx) {
                return r;
            }
        }
    }

    /// A notify stream named `tag` and this process's id, created anew.
    fn notify_stream(tag: &str) -> Arc<Stream> {
        let name = format!("async-{tag}-{}", std::process::id());
        let s = crate::notify::tests::fresh_notify_stream(&name, &[2], crate::Dtype::U8);
        Arc::new(s)
    }

    /// A multi-thread runtime whose threads, its blocking pool's (where background waits
    /// park) included, have the park cap and look interval raised to an hour
    /// ([`crate::notify::PARK_CAP`]): a background wait that a wake misses stays parked past
    /// any bound of these tests instead of looking again within 50 ms. Dropped, it shuts down
    /// without waiting for such a wait.
    struct Uncapped(Option<tokio::runtime::Runtime>);

    impl Uncapped {
        fn new() -> Uncapped {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .on_thread_start(crate::notify::uncap_this_thread)
                .build()
                .unwrap();
            Uncapped(Some(rt))
        }
    }

    impl std::ops::Deref for Uncapped {
        type Target = tokio::runtime::Runtime;
        fn deref(&self) -> &Self::Target {
            self.0.as_ref().unwrap()
        }
    }

    impl Drop for Uncapped {
        fn drop(&mut self) {
            if let Some(rt) = self.0.take() {
                rt.shutdown_background();
            }
        }
    }

    use crate::notify::tests::wait_parked;

    /// A parked async read is woken by a write on another handle (another mapping of the
    /// stream, as another process's is), not by its park cap: the read has no timeout and the
    /// cap is an hour ([`Uncapped`]), so a wake that missed the word it parks on leaves it
    /// parked past the bound. tests/async_waits.rs has the writer in another process.
    #[test]
    fn a_parked_async_read_is_woken_by_the_writers_wake_not_its_cap() {
        let w = notify_stream("woken");
        let r = Arc::new(crate::Stream::open_readonly(&w.name).unwrap());
        let rt = Uncapped::new();
        let (tx, rx) = mpsc::channel();
        rt.spawn({
            let r = Arc::clone(&r);
            async move {
                let got = r.read_new_publication_async::<u8>(None).await;
                let _ = tx.send(got.map(|p| (p.payload.into_raw_vec_and_offset().0, p.info.count)));
            }
        });
        wait_parked(&r, "the read's background wait");
        w.write_slice(&[5u8, 6]).unwrap();
        let got = rx.recv_timeout(LONG);
        crate::unlink(&w.name).unwrap();
        let got = got.expect("the write's wake missed the parked read");
        assert_eq!(got.unwrap(), (vec![5, 6], 1));
    }

    /// Dropping a wait whose background wait is parked wakes it, so it lets go of the stream
    /// (its clone of the `Arc`) at once, not after a park cap: the cap is an hour here
    /// ([`Uncapped`]), so a drop that did not wake it leaves the clone held past the bound.
    /// tests/async_waits.rs shows the same of an `auto_unlink` stream being unlinked.
    #[test]
    fn a_dropped_parked_wait_lets_go_of_the_stream_on_the_drops_wake_not_its_cap() {
        let s = notify_stream("released");
        let rt = Uncapped::new();
        let in_runtime = rt.enter();
        let mut wait = Box::pin(s.read_new_async::<u8>(None));
        let polled = wait.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        assert!(polled.is_pending(), "{polled:?}");
        wait_parked(&s, "the background wait");
        // The handle, the future's clone, and the background wait's.
        assert_eq!(Arc::strong_count(&s), 3);
        drop(wait);
        let t0 = Instant::now();
        while Arc::strong_count(&s) != 1 && t0.elapsed() < LONG {
            std::thread::yield_now();
        }
        let held = Arc::strong_count(&s);
        drop(in_runtime);
        crate::unlink(&s.name).unwrap();
        assert_eq!(held, 1, "the drop's wake missed the parked background wait");
    }

    /// Runs `wait` on `rt`; its output, or `None` if it has not ended within [`LONG`] (it is
    /// left running: [`Uncapped`] shuts down without waiting for it).
    fn ended_within_long<R: Send + 'static>(
        rt: &Uncapped,
        wait: impl std::future::Future<Output = R> + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = mpsc::channel();
        rt.spawn(async move {
            let _ = tx.send(wait.await);
        });
        rx.recv_timeout(LONG).ok()
    }

    /// A handle opened inside a write whose count was already stamped returns that frame
    /// once published, from the async `read_new`s too: they waited for the count to pass
    /// the baseline, which that frame's count equals (`read::tests` has the blocking twin).
    /// The waits here have no timeout: one whose cheap look before waiting misses a frame
    /// that is there (the handle's pending baseline, or a count past `after`) goes round
    /// its background wait, which finds the frame at once, without end; with a deadline it
    /// would find it only there.
    #[test]
    fn an_async_read_new_returns_the_write_in_progress_at_open() {
        let w = notify_stream("open-mid-write");
        w.write_slice(&[1u8, 1]).unwrap();
        let r = Arc::new(crate::read::open_during_a_write(&w, 2, None, true));
        let rt = Uncapped::new();
        let got = ended_within_long(&rt, {
            let r = Arc::clone(&r);
            async move { r.read_new_publication_async::<u8>(None).await }
        })
        .expect("the read of the frame published since open never ended")
        .unwrap();
        assert_eq!(
            (got.info.count, got.payload.as_slice().unwrap()),
            (2, &[2u8, 2][..])
        );
        let there = ended_within_long(&rt, {
            let r = Arc::clone(&r);
            async move { r.wait_for_count_async(1, None).await }
        });
        assert_eq!(
            there
                .expect("the wait for a count already passed never ended")
                .unwrap(),
            2
        );
        let again = rt.block_on(r.read_new_async::<u8>(Some(Duration::from_millis(1))));
        assert!(matches!(again, Err(Error::Timeout { .. })), "{again:?}");
        drop(r);
        crate::unlink(&w.name).unwrap();
    }

    /// An async `read_new` whose frame another read of the same handle took first waits for
    /// the next one: it kept the baseline it started with, found the taken frame again on
    /// every round, and spun through the blocking pool until its deadline.
    #[test]
    fn an_async_read_new_whose_frame_another_read_took_waits_for_the_next() {
        let s = notify_stream("moved-baseline");
        let rt = tokio::runtime::Runtime::new().unwrap();
        let _in_runtime = rt.enter();
        let (counter, woken) = counting();
        let waker = Waker::from(Arc::clone(&counter));
        let mut cx = Context::from_waker(&waker);
        let mut wait = Box::pin(s.read_new_async::<u8>(Some(LONG)));
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        // The first background wait started (a queued one holds only a weak reference).
        let t0 = Instant::now();
        while Arc::strong_count(&s) != 3 {
            assert!(
                t0.elapsed() < LONG,
                "the first background wait never started"
            );
            std::thread::yield_now();
        }
        s.write_slice(&[1u8, 1]).unwrap();
        let taken = s.read_new::<u8>(Some(LONG)).unwrap();
        assert_eq!(taken.as_slice().unwrap(), &[1, 1]);
        woken
            .recv_timeout(LONG)
            .expect("the parked wait saw the frame");
        // The handle, the future's clone and a running background wait's: the first wait
        // ended (it dropped its clone) before the poll, the next one started after it.
        let count_is = |n: usize, what: &str| {
            let t0 = Instant::now();
            while Arc::strong_count(&s) != n {
                assert!(t0.elapsed() < LONG, "{what}");
                std::thread::yield_now();
            }
        };
        count_is(2, "the first background wait never ended");
        assert!(
            wait.as_mut().poll(&mut cx).is_pending(),
            "the frame was taken: the wait goes on"
        );
        count_is(3, "the background wait never started");
        // A poll while it was queued (the timer's, every 50 ms until it starts) may have
        // woken the task already; once started, the timer skips it.
        while woken.try_recv().is_ok() {}
        // Nothing more is published, so nothing wakes the wait (a spin woke it at once).
        assert!(
            woken.recv_timeout(Duration::from_millis(300)).is_err(),
            "woken with no new frame"
        );
        s.write_slice(&[2u8, 2]).unwrap();
        let got = ready_when_woken(wait.as_mut(), &mut cx, &woken, "the next frame woke nobody");
        assert_eq!(got.unwrap().as_slice().unwrap(), &[2, 2]);
        crate::unlink(&s.name).unwrap();
    }

    /// Timed waits that end early (a frame is published) withdraw their deadlines from the
    /// timer: no entry is left behind, and the task is not woken once they are done, even
    /// after their deadlines passed (a later deadline's wake shows the timer got past them).
    #[test]
    fn a_timed_wait_that_ends_early_leaves_nothing_in_the_timer() {
        let s = notify_stream("timer");
        let rt = tokio::runtime::Runtime::new().unwrap();
        let _in_runtime = rt.enter();
        let (counter, woken) = counting();
        let waker = Waker::from(Arc::clone(&counter));
        let timeout = Duration::from_secs(1);
        for i in 0..8u8 {
            let mut wait = Box::pin(s.read_new_async::<u8>(Some(timeout)));
            let mut cx = Context::from_waker(&waker);
            assert!(wait.as_mut().poll(&mut cx).is_pending());
            // Its deadline, and maybe a poll while it is queued for a pool thread.
            assert!((1..=2).contains(&timer::armed_with(&waker)));
            s.write_slice(&[i, i]).unwrap();
            let got = ready_when_woken(
                wait.as_mut(),
                &mut cx,
                &woken,
                "the finished wait woke nobody",
            );
            assert_eq!(got.unwrap().as_slice().unwrap(), &[i, i]);
            assert_eq!(timer::armed_with(&waker), 0, "wait {i} left its deadline");
        }
        let wakes = counter.0.load(Ordering::SeqCst);
        let (fence, fenced) = counting();
        let _fence = timer::Alarm::set(Instant::now() + timeout, &Waker::from(fence));
        fenced.recv_timeout(LONG + timeout).unwrap();
        assert_eq!(counter.0.load(Ordering::SeqCst), wakes, "woken after done");
        crate::unlink(&s.name).unwrap();
    }

    /// An async read whose frame is there while a writer is inside its next bracket waits
    /// for that writer on the pool, as a blocking read does: its try's timeout is no answer
    /// before the deadline.
    #[test]
    fn an_async_read_waits_out_a_writer_inside_its_bracket() {
        let w = notify_stream("mid-bracket");
        w.write_slice(&[1u8, 1]).unwrap();
        let r = Arc::new(Stream::open(&w.name).unwrap());
        let rt = tokio::runtime::Runtime::new().unwrap();
        let _in_runtime = rt.enter();
        let (inside_tx, inside) = mpsc::channel();
        let (go_tx, go) = mpsc::channel::<()>();
        let writer = std::thread::spawn({
            let w = Arc::clone(&w);
            move || {
                w.write_view(|buf: &mut [u8]| {
                    inside_tx.send(()).unwrap();
                    go.recv_timeout(LONG)?;
                    buf.fill(2);
                    Ok::<_, mpsc::RecvTimeoutError>(())
                })
            }
        });
        inside.recv_timeout(LONG).expect("the writer never filled");
        let (counter, woken) = counting();
        let waker = Waker::from(Arc::clone(&counter));
        let mut cx = Context::from_waker(&waker);
        let mut wait = Box::pin(r.read_after_async::<u8>(0, Some(LONG)));
        let first = wait.as_mut().poll(&mut cx);
        assert!(first.is_pending(), "{first:?}");
        go_tx.send(()).unwrap();
        writer.join().unwrap().unwrap();
        let got = ready_when_woken(
            wait.as_mut(),
            &mut cx,
            &woken,
            "the writer's publication woke nobody",
        );
        assert_eq!(got.unwrap().as_slice().unwrap(), &[2, 2]);
        crate::unlink(&w.name).unwrap();
    }

    /// Whether the timer thread sleeps until an alarm: blocked in a futex wait with a
    /// timeout (a wait for a notify has none), seen in `/proc/self/task/*/syscall`.
    fn timer_sleeps_until_an_alarm() -> bool {
        use crate::notify::tests::{blocked_in, own_tasks};
        own_tasks().iter().any(|task| {
            let comm = std::path::Path::new("/proc").join(task).join("comm");
            let call = blocked_in(task);
            std::fs::read_to_string(comm).is_ok_and(|c| c.trim() == "shmstream-timer")
                && call.first() == Some(&libc::SYS_futex.to_string())
                && call.get(4).is_some_and(|timeout| timeout != "0x0")
        })
    }

    /// An alarm earlier than the one the timer thread sleeps until wakes the thread, and its
    /// task at its own time, not at the later alarm's.
    #[test]
    fn an_earlier_alarm_rings_before_the_later_one_the_timer_sleeps_until() {
        let (late, _) = counting();
        let _late = timer::Alarm::set(Instant::now() + 2 * LONG, &Waker::from(late));
        let t0 = Instant::now();
        while !timer_sleeps_until_an_alarm() {
            assert!(
                t0.elapsed() < LONG,
                "the timer thread never slept until an alarm"
            );
            std::thread::yield_now();
        }
        let (early, rung) = counting();
        let _early = timer::Alarm::set(
            Instant::now() + Duration::from_millis(20),
            &Waker::from(early),
        );
        rung.recv_timeout(LONG)
            .expect("the earlier alarm waited for the later one");
    }

    /// A wait's future moved to another task (polled with another waker) moves its alarm
    /// there: the timer wakes the task that polls it now, not the one before.
    #[test]
    fn a_rearmed_alarm_wakes_the_new_task_only() {
        let (first, _) = counting();
        let (second, _) = counting();
        let (first, second) = (Waker::from(first), Waker::from(second));
        let alarm = timer::Alarm::set(Instant::now() + LONG, &first);
        assert_eq!(timer::armed_with(&first), 1);
        alarm.rearm(&second);
        assert_eq!(
            (timer::armed_with(&first), timer::armed_with(&second)),
            (0, 1)
        );
        drop(alarm);
        assert_eq!(timer::armed_with(&second), 0);
    }

    /// Dropping a wait whose background wait is not parked (queued for the pool's only
    /// thread, which another stream's endless wait holds), or one that returned at its
    /// deadline, wakes nobody: every waiter of the stream, in every process, would be.
    #[test]
    fn a_dropped_wait_wakes_the_stream_only_if_it_is_parked() {
        let (a, b) = (notify_stream("drop-a"), notify_stream("drop-b"));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(1)
            .build()
            .unwrap();
        let _in_runtime = rt.enter();
        let mut cx = Context::from_waker(Waker::noop());
        let mut endless = Box::pin(a.read_new_async::<u8>(None));
        assert!(endless.as_mut().poll(&mut cx).is_pending());
        let mut queued = Box::pin(b.read_new_async::<u8>(None));
        assert!(queued.as_mut().poll(&mut cx).is_pending());
        let wakes = || crate::notify::WAKES.with(std::cell::Cell::get);
        let before = wakes();
        drop(queued);
        assert_eq!(wakes(), before, "the drop of a queued wait woke the stream");
        a.close();
        drop(endless);
        let c = notify_stream("drop-c");
        let before = wakes();
        let timed_out = rt.block_on(c.read_new_async::<u8>(Some(Duration::from_millis(20))));
        assert!(
            matches!(timed_out, Err(Error::Timeout { .. })),
            "{timed_out:?}"
        );
        assert_eq!(wakes(), before, "a wait at its deadline woke the stream");
        for s in [a, b, c] {
            crate::unlink(&s.name).unwrap();
        }
    }
}
