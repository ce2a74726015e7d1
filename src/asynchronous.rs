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
//! **Cancellation.** Dropping the future (e.g. `tokio::time::timeout` around it, or
//! `select!`) stops the background wait within one slice of at most 100 ms: the pool thread
//! waits in slices and checks between them whether its future is gone, so an abandoned
//! `None`-timeout wait never pins a pool thread forever. A wait abandoned that way and ending meanwhile in the
//! report of a writer's death (made once per handle and invalid generation) gives the report
//! back, so the handle's next wait makes it.
//!
//! **Bookkeeping.** `read_new_async` counts from the frame this handle last returned, like
//! `read_new`; missed-frame counters and `last_read_count` are updated exactly as by the
//! blocking calls (they share the handle).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ndarray::ArrayD;

use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::read::Publication;
use crate::stream::Stream;

/// Longest slice of one background wait; whether its future is gone is checked between slices.
const SLICE: Duration = Duration::from_millis(100);
const OP: &str = "wait for a new frame";

/// A background wait's outcome, handed to its future under a lock, and whether the future
/// is gone. A waiting read reports each invalid generation once per handle (the report is
/// marked in the handle when made); an outcome nobody will receive gives its report back,
/// so the handle's next wait makes it instead of waiting in silence.
#[derive(Default)]
struct Handoff {
    gone: bool,
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

/// Marks the future gone when it is dropped (finished or abandoned), and gives back the
/// report of an outcome it did not take.
struct CancelOnDrop {
    handoff: Arc<Mutex<Handoff>>,
    stream: Arc<Stream>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let mut h = self.handoff.lock().unwrap_or_else(PoisonError::into_inner);
        h.gone = true;
        if let Some(o) = h.outcome.take() {
            o.give_back(&self.stream);
        }
    }
}

impl Stream {
    /// Waits on tokio's blocking pool until the count exceeds `after` or `deadline` passes.
    /// `Ok(None)` means the deadline passed.
    async fn park_until_count(
        self: &Arc<Self>,
        after: u64,
        deadline: Option<Instant>,
    ) -> Result<Option<u64>> {
        let cancel = CancelOnDrop {
            handoff: Arc::default(),
            stream: Arc::clone(self),
        };
        let handoff = Arc::clone(&cancel.handoff);
        // Whether the future is gone (looked at once a slice, at most every 100 ms).
        let gone = |h: &Mutex<Handoff>| h.lock().unwrap_or_else(PoisonError::into_inner).gone;
        let stream = Arc::clone(self);
        let task = tokio::task::spawn_blocking(move || {
            let mark_before = stream.reads.report_mark();
            let result = loop {
                let slice = match deadline {
                    Some(d) => {
                        let left = d.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break Ok(None);
                        }
                        left.min(SLICE)
                    }
                    None => SLICE,
                };
                match stream.wait_for_count(after, Some(slice)) {
                    Ok(c) => break Ok(Some(c)),
                    Err(Error::Timeout { .. }) if !gone(&handoff) => continue,
                    Err(Error::Timeout { .. }) => break Ok(None),
                    Err(e) => break Err(e),
                }
            };
            let outcome = Outcome {
                result,
                mark_before,
            };
            let mut h = handoff.lock().unwrap_or_else(PoisonError::into_inner);
            if h.gone {
                outcome.give_back(&stream);
            } else {
                h.outcome = Some(outcome);
            }
        });
        let out = match task.await {
            Ok(()) => cancel
                .handoff
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .outcome
                .take()
                .map_or(Ok(None), |o| o.result),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(Error::Closed {
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
