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
//! (`None` waits forever), and never block an executor thread:
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
//! # How the wait is bridged (and why)
//!
//! A stream's wake-up is a futex word in shared memory, written by another process. Nothing
//! turns that into a readiness event an async reactor can poll: there is no file descriptor
//! (an eventfd would need the *writer* to cooperate, and pyshmem writers only `FUTEX_WAKE`).
//! So the parking has to happen on some thread, and the choices are:
//!
//! * **`tokio::task::spawn_blocking` per wait (chosen).** When the frame is not there yet,
//!   the wait moves to tokio's blocking pool, where the ordinary blocking wait runs (spin,
//!   then futex park capped at 50 ms for notify streams, back-off sleeps otherwise). Its
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
//! is woken at its deadline by one process-wide timer thread (started with the first timed
//! wait that has to wait; no tokio time driver needed), gives up its background wait, makes
//! one last non-blocking attempt inline and returns that or [`Error::Timeout`].
//!
//! **Cancellation.** Dropping the future (e.g. `tokio::time::timeout` around it, or
//! `select!`) ends its background wait at once: the wait looks at a cancel flag after every
//! pause, and the drop wakes a futex park (notify streams; other streams pause at most a
//! millisecond), so the pool thread and the wait's clone of the `Arc<Stream>` are released
//! right away (an `auto_unlink` stream goes when its last handle does). A wait abandoned
//! that way and ending meanwhile in the report of a writer's death (made once per handle and
//! invalid generation) gives the report back, so the handle's next wait makes it.
//!
//! **Bookkeeping.** `read_new_async` counts from the frame this handle last returned, like
//! `read_new`; missed-frame counters and `last_read_count` are updated exactly as by the
//! blocking calls (they share the handle).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use ndarray::ArrayD;

use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::read::Publication;
use crate::stream::Stream;

const OP: &str = "wait for a new frame";

/// A background wait's outcome, handed to its future under a lock, and whether the future
/// is gone (`cancel`, which the background wait's pauses also look at). A waiting read
/// reports each invalid generation once per handle (the report is marked in the handle when
/// made); an outcome nobody will receive gives its report back, so the handle's next wait
/// makes it instead of waiting in silence.
#[derive(Default)]
struct Handoff {
    /// The background wait has ended.
    done: bool,
    outcome: Option<Outcome>,
}

/// What the pool thread's wait returned, and the handle's report mark before it.
struct Outcome {
    result: Result<Option<u64>>,
    mark_before: i64,
}

impl Outcome {
    /// Undoes the report this outcome made, if it made one.
    fn give_back(self, stream: &Stream) {
        if matches!(self.result, Err(Error::Inconsistent { .. })) {
            stream.reads.give_back_report(self.mark_before);
        }
    }
}

/// Marks the future gone when it is dropped (finished, abandoned or past its deadline),
/// wakes a background wait still parked so that it lets go of the stream at once, and gives
/// back the report of an outcome it did not take.
struct CancelOnDrop {
    handoff: Arc<Mutex<Handoff>>,
    cancel: Arc<AtomicBool>,
    stream: Arc<Stream>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let mut h = self.handoff.lock().unwrap_or_else(PoisonError::into_inner);
        self.cancel.store(true, Ordering::Release);
        if let Some(o) = h.outcome.take() {
            o.give_back(&self.stream);
        }
        if !h.done && self.stream.notify() {
            // The flag is looked at after every pause; this ends a futex park now.
            crate::notify::wake_all(&self.stream.header);
        }
    }
}

/// The process's one deadline timer: a thread (started with the first timed async wait that
/// has to wait) sleeping until the earliest registered deadline, then waking that
/// deadline's task. It makes an async wait's timeout hold however busy tokio's blocking pool
/// is, on any runtime (tokio's timers need its time driver, which a runtime may lack). A
/// wait that ends first leaves its entry until the deadline; waking a finished task is
/// harmless.
mod timer {
    use std::cmp::Ordering;
    use std::collections::BinaryHeap;
    use std::sync::{Condvar, Mutex, Once, PoisonError};
    use std::task::Waker;
    use std::time::Instant;

    /// A task to wake at `at`; the heap's top is the earliest.
    struct Entry {
        at: Instant,
        waker: Waker,
    }

    impl PartialEq for Entry {
        fn eq(&self, other: &Self) -> bool {
            self.at == other.at
        }
    }
    impl Eq for Entry {}
    impl PartialOrd for Entry {
        fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
            Some(self.cmp(other))
        }
    }
    impl Ord for Entry {
        fn cmp(&self, other: &Self) -> Ordering {
            other.at.cmp(&self.at)
        }
    }

    static HEAP: Mutex<BinaryHeap<Entry>> = Mutex::new(BinaryHeap::new());
    static CHANGED: Condvar = Condvar::new();
    static START: Once = Once::new();

    /// Wakes `waker` at `at` (or soon after).
    pub(super) fn wake_at(at: Instant, waker: Waker) {
        START.call_once(|| {
            // Without the thread, a deadline is still seen when anything else polls the
            // future (its background wait ends at the same deadline).
            let _ = std::thread::Builder::new()
                .name("shmstream-timer".into())
                .spawn(run);
        });
        let mut heap = HEAP.lock().unwrap_or_else(PoisonError::into_inner);
        if heap.peek().is_none_or(|e| at < e.at) {
            CHANGED.notify_one();
        }
        heap.push(Entry { at, waker });
    }

    fn run() {
        let mut heap = HEAP.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let now = Instant::now();
            let mut due = Vec::new();
            while heap.peek().is_some_and(|e| e.at <= now) {
                due.extend(heap.pop());
            }
            if !due.is_empty() {
                drop(heap);
                due.into_iter().for_each(|e| e.waker.wake());
                heap = HEAP.lock().unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            heap = match heap.peek() {
                Some(e) => {
                    let left = e.at - now;
                    CHANGED
                        .wait_timeout(heap, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => CHANGED.wait(heap).unwrap_or_else(PoisonError::into_inner),
            };
        }
    }
}

impl Stream {
    /// Waits on tokio's blocking pool until the count exceeds `after` or `deadline` passes.
    /// `Ok(None)` means the deadline passed; the deadline holds even while the wait is still
    /// queued for a pool thread (see [`timer`]).
    async fn park_until_count(
        self: &Arc<Self>,
        after: u64,
        deadline: Option<Instant>,
    ) -> Result<Option<u64>> {
        let cancel = CancelOnDrop {
            handoff: Arc::default(),
            cancel: Arc::default(),
            stream: Arc::clone(self),
        };
        let (handoff, flag) = (Arc::clone(&cancel.handoff), Arc::clone(&cancel.cancel));
        let stream = Arc::clone(self);
        let mut task = tokio::task::spawn_blocking(move || {
            let mark_before = stream.reads.report_mark();
            // A wait queued until after its future was gone does not start.
            let result = if flag.load(Ordering::Acquire) {
                Ok(None)
            } else {
                let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                crate::notify::cancellable(Arc::clone(&flag), || {
                    match stream.wait_for_count(after, timeout) {
                        Ok(c) => Ok(Some(c)),
                        Err(Error::Timeout { .. }) => Ok(None),
                        Err(e) => Err(e),
                    }
                })
            };
            let outcome = Outcome {
                result,
                mark_before,
            };
            let mut h = handoff.lock().unwrap_or_else(PoisonError::into_inner);
            h.done = true;
            if flag.load(Ordering::Acquire) {
                outcome.give_back(&stream);
            } else {
                h.outcome = Some(outcome);
            }
        });
        // The background wait's end, or `None` at the deadline.
        let mut armed: Option<Waker> = None;
        let joined = std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = Pin::new(&mut task).poll(cx) {
                return Poll::Ready(Some(r));
            }
            let Some(d) = deadline else {
                return Poll::Pending;
            };
            if Instant::now() >= d {
                return Poll::Ready(None);
            }
            if !armed.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                timer::wake_at(d, cx.waker().clone());
                armed = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await;
        let out = match joined {
            None => Ok(None),
            Some(Ok(())) => cancel
                .handoff
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .outcome
                .take()
                .map_or(Ok(None), |o| o.result),
            Some(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Some(Err(_)) => Err(Error::Closed {
                name: self.name.clone(),
            }), // runtime shutting down
        };
        drop(cancel);
        out
    }

    fn timeout_error(&self, timeout: Option<Duration>) -> Error {
        Error::Timeout {
            name: self.name.clone(),
            op: OP,
            timeout: timeout.unwrap_or_default(),
        }
    }

    /// The shared loop: try `attempt` inline (it must not wait: it is the blocking twin with a
    /// zero timeout) when the count is past `after`, else park on the pool and retry. At the
    /// deadline `attempt` runs once more, so what the blocking twin reports instead of a
    /// timeout (an aborted or abandoned write, an unlinked stream) is reported here too.
    async fn wait_then<R>(
        self: &Arc<Self>,
        after: u64,
        timeout: Option<Duration>,
        mut attempt: impl FnMut(&Stream) -> Result<R>,
    ) -> Result<R> {
        self.ensure_open()?;
        let deadline = crate::deadline::after(Instant::now(), timeout);
        loop {
            let passed = deadline.is_some_and(|d| Instant::now() >= d);
            if passed || self.count() > after {
                match attempt(self) {
                    // A writer is inside its bracket right now: wait for it on the pool.
                    Err(Error::Timeout { .. }) if !passed => {}
                    Err(Error::Timeout { .. }) => return Err(self.timeout_error(timeout)),
                    other => return other,
                }
            }
            if self.park_until_count(after, deadline).await?.is_none() {
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
        self.wait_then(after, timeout, |s| {
            s.wait_for_count(after, Some(Duration::ZERO))
        })
        .await
    }

    /// Async [`Stream::read_after`]: a snapshot of a frame with count > `after`.
    pub async fn read_after_async<T: Element>(
        self: &Arc<Self>,
        after: u64,
        timeout: Option<Duration>,
    ) -> Result<ArrayD<T>> {
        self.ensure_dtype::<T>()?;
        self.host_payload()?;
        self.wait_then(after, timeout, |s| {
            s.read_after::<T>(after, Some(Duration::ZERO))
        })
        .await
    }

    /// Async [`Stream::read_after_publication`].
    pub async fn read_after_publication_async<T: Element>(
        self: &Arc<Self>,
        after: u64,
        timeout: Option<Duration>,
    ) -> Result<Publication<T>> {
        self.ensure_dtype::<T>()?;
        self.host_payload()?;
        self.wait_then(after, timeout, |s| {
            s.read_after_publication::<T>(after, Some(Duration::ZERO))
        })
        .await
    }

    /// Async [`Stream::read_after_into_slice`]: fills `dst` (no allocation); returns the count.
    pub async fn read_after_into_slice_async<T: Element>(
        self: &Arc<Self>,
        after: u64,
        dst: &mut [T],
        timeout: Option<Duration>,
    ) -> Result<u64> {
        self.ensure_dtype::<T>()?;
        self.ensure_len(dst.len())?;
        self.host_payload()?;
        self.wait_then(after, timeout, |s| {
            s.read_after_into_slice(after, dst, Some(Duration::ZERO))
        })
        .await
    }

    /// Async [`Stream::read_new`]: the first frame newer than the one this handle last returned.
    pub async fn read_new_async<T: Element>(
        self: &Arc<Self>,
        timeout: Option<Duration>,
    ) -> Result<ArrayD<T>> {
        self.read_after_async(self.last_read_count(), timeout).await
    }

    /// Async [`Stream::read_new_publication`].
    pub async fn read_new_publication_async<T: Element>(
        self: &Arc<Self>,
        timeout: Option<Duration>,
    ) -> Result<Publication<T>> {
        self.read_after_publication_async(self.last_read_count(), timeout)
            .await
    }

    /// Async [`Stream::read_new_into_slice`]; returns the frame's count.
    pub async fn read_new_into_slice_async<T: Element>(
        self: &Arc<Self>,
        dst: &mut [T],
        timeout: Option<Duration>,
    ) -> Result<u64> {
        self.read_after_into_slice_async(self.last_read_count(), dst, timeout)
            .await
    }
}
