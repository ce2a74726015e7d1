//! Reading: seqlock snapshots (allocating or into caller buffers), publications with their
//! metadata, and waits for new frames (`read_new`, `wait_for_count`, `read_after`).
//!
//! All reads share one loop ([`Stream::read_frame`]): look at the sequence; stable → (if the
//! frame is new enough) copy and validate; writing → wait, checking whether the writer died;
//! invalid → report it. Every wait has a deadline on the monotonic clock.

use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ndarray::{ArrayD, ArrayViewMut, Dimension, IxDyn};

use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::notify::{WaitStrategy, Waiter};
use crate::seqlock::{self, Observed};
use crate::stream::Stream;

/// Metadata of one frame, sampled inside the same verified seqlock generation as its payload.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct FrameInfo {
    /// The stream's write count for this frame.
    pub count: u64,
    /// The frame id stamped by the writer.
    pub frame_id: u64,
    /// UNIX time of the write.
    pub write_time: f64,
    /// Writes skipped since this handle's previous read.
    pub missed: u64,
}

/// A payload together with its [`FrameInfo`] (pyshmem's `Publication`).
#[derive(Debug, Clone)]
pub struct Publication<T> {
    /// The frame.
    pub payload: ArrayD<T>,
    /// Its metadata.
    pub info: FrameInfo,
}

/// What `read_frame` waits for.
#[derive(Clone, Copy)]
pub(crate) enum Want {
    /// The current frame (waits only for a writer inside its bracket).
    Now,
    /// A frame with `count > after` (waits for publications).
    After(u64),
    /// `read_new`'s frame: [`Want::After`] the handle's last count, or the write that was in
    /// progress when the handle was opened (`ReadState::pending_even`), once published.
    New(u64),
    /// The same, or the history ring's head past `next` (a cursor's next frame, which a
    /// publication that fills the ring first completes before its even sequence).
    AfterOrAppended { after: u64, next: u64 },
}

thread_local! {
    /// The report of an invalid generation this thread's last wait marked in its handle:
    /// the mark it replaced and the mark it made (see [`reporting`]). Set only where a
    /// report is made, never on a read that returns a frame.
    static REPORT_MADE: Cell<Option<(i64, i64)>> = const { Cell::new(None) };
}

/// Runs `wait` (a wait on one handle, on this thread) and returns with its result the
/// report it marked in the handle, if it made one: `(before, made)`, the marks that
/// [`crate::stream::ReadState::give_back_report`] swaps back if the report is not passed on.
/// Carried from the thread that made the report, not read from the handle afterwards:
/// another wait on the handle may have made another report since.
pub(crate) fn reporting<R>(wait: impl FnOnce() -> R) -> (R, Option<(i64, i64)>) {
    REPORT_MADE.set(None);
    let result = wait();
    (result, REPORT_MADE.take())
}

impl Stream {
    /// Marks invalid generation `made` reported by this handle; returns whether it was not
    /// already (the report is this call's to make).
    #[cold]
    fn mark_reported(&self, made: i64) -> bool {
        let before = self.reads.reported_invalid.swap(made, Ordering::Relaxed);
        if before == made {
            return false;
        }
        REPORT_MADE.set(Some((before, made)));
        true
    }

    /// The core loop (does not record the read: callers returning a frame do). `copy(src)` copies the payload from `src` (null for GPU streams
    /// without a host mirror); it may run several times.
    /// Waits with the handle's strategy.
    pub(crate) fn read_frame(
        &self,
        want: Want,
        timeout: Option<Duration>,
        op: &'static str,
        copy: impl FnMut(*const u8),
    ) -> Result<FrameInfo> {
        self.read_frame_waiting(self.wait_strategy(), want, timeout, op, copy)
    }

    /// [`Stream::read_frame`], waiting with `strategy`.
    fn read_frame_waiting(
        &self,
        strategy: WaitStrategy,
        want: Want,
        timeout: Option<Duration>,
        op: &'static str,
        mut copy: impl FnMut(*const u8),
    ) -> Result<FrameInfo> {
        self.ensure_open()?;
        let h = &self.header;
        let src = self
            .payload
            .as_ref()
            .map_or(std::ptr::null(), |p| p.as_ptr().cast_const());
        let mut waiter: Option<Waiter> = None;
        loop {
            if self.appended_past(want) {
                // The caller reads the frame from the ring; it needs nothing else from here
                // (nor loads the header's line, which the writer is still storing to).
                return Ok(FrameInfo {
                    count: 0,
                    frame_id: 0,
                    write_time: 0.0,
                    missed: 0,
                });
            }
            let observed = seqlock::optimistic_read(h);
            let wait_on = match observed {
                Observed::Stable(s) => {
                    let count = h.count().load(Ordering::Relaxed);
                    let waiting = match want {
                        Want::Now => false,
                        Want::After(a) | Want::AfterOrAppended { after: a, .. } => count <= a,
                        Want::New(a) => count <= a && !self.published_since_open(s, count, a),
                    };
                    if waiting {
                        // Waiting for a publication that may never come: an unlink by
                        // pyshmem leaves the header valid, so look at the file (rate limited).
                        self.check_generation(false)?;
                        self.refuse_wait_under_own_lock(timeout)?;
                        s
                    } else {
                        let frame_id = h.frame_id().load(Ordering::Relaxed);
                        let write_time = f64::from_bits(h.write_time().load(Ordering::Relaxed));
                        let slow = crate::slowdown::guard(crate::slowdown::HotPath::Read);
                        copy(src);
                        drop(slow);
                        if seqlock::validate_read(h, s) {
                            self.check_generation(false)?;
                            return Ok(FrameInfo {
                                count,
                                frame_id,
                                write_time,
                                missed: 0,
                            });
                        }
                        // A writer overlapped the copy: retry at once, but within the deadline
                        // (a writer publishing faster than one copy would otherwise starve us),
                        // and not past a close, an unlink (rate limited: a coarse clock read
                        // when not due) or an abandoned async wait: with no deadline, this
                        // loop is all there is.
                        self.ensure_open()?;
                        self.check_generation(false)?;
                        let w = waiter
                            .get_or_insert_with(|| Waiter::new(strategy, self.notify(), timeout));
                        if w.expired() {
                            return Err(Error::Timeout {
                                name: self.name.clone(),
                                op,
                                awaited: crate::Awaited::Writer,
                                timeout: timeout.unwrap_or_default(),
                            });
                        }
                        continue;
                    }
                }
                Observed::Writing(s) => {
                    // This thread's own bracket, open around its fill: no frame to wait for
                    // (and no dead writer to report).
                    self.refuse_inside_own_fill()?;
                    // A live writer may hold its bracket open for good: an unlink meanwhile
                    // ends the wait too (rate limited, as every wait looks). The look for a
                    // dead writer is not made at every pause: see `Waiter::writer_check_due`.
                    // The waiter is made first, so a wait that parks at once looks before its
                    // first park.
                    self.check_generation(false)?;
                    let w =
                        waiter.get_or_insert_with(|| Waiter::new(strategy, self.notify(), timeout));
                    if w.writer_check_due(s) {
                        self.check_abandoned(s, want)?;
                    }
                    s
                }
                Observed::Invalid(s) => {
                    // A waiting read reports each invalid generation once per handle, then
                    // waits for the next good frame; a read of the current frame reports it
                    // without using up the handle's report (its waits still make it).
                    if matches!(want, Want::Now) || self.mark_reported(s) {
                        return Err(self.invalid_error());
                    }
                    // Reported already: wait, noticing an unlink as every wait does (rate
                    // limited: no `fstat` nor error built at every pause).
                    self.check_generation(false)?;
                    self.refuse_wait_under_own_lock(timeout)?;
                    s
                }
            };
            let w = waiter.get_or_insert_with(|| Waiter::new(strategy, self.notify(), timeout));
            // The ring's head is looked at again just before a park, after this round's
            // looks: an append moves no futex word, so its wake ends no park begun after it.
            if !w.pause(h, wait_on, || self.appended_past(want)) {
                self.check_generation(true)?;
                if let Observed::Writing(s) = seqlock::optimistic_read(h) {
                    self.check_abandoned(s, want)?;
                }
                return Err(Error::Timeout {
                    name: self.name.clone(),
                    op,
                    awaited: crate::Awaited::Writer,
                    timeout: timeout.unwrap_or_default(),
                });
            }
            self.ensure_open()?;
        }
    }

    /// Whether `want` is a cursor's and the history ring holds its next frame.
    #[inline]
    fn appended_past(&self, want: Want) -> bool {
        match want {
            Want::AfterOrAppended { next, .. } => {
                self.history.as_ref().is_some_and(|r| r.appended() > next)
            }
            _ => false,
        }
    }

    /// Refuses a read or wait from inside this thread's own `write_view` fill: the frame it
    /// would wait for is the one this thread has not published yet.
    pub(crate) fn refuse_inside_own_fill(&self) -> Result<()> {
        if self.lock.is_filling() && self.lock.held_here() {
            return Err(Error::Unsupported {
                name: self.name.clone(),
                what: "a read inside this thread's own write_view fill (its frame is not published yet): read the fill's buffer, or read before or after the write".into(),
            });
        }
        Ok(())
    }

    /// Refuses a wait for a new publication while this thread holds the stream's write
    /// lock: every other writer (pyshmem's included) waits for that lock, so none can come.
    /// A poll (`timeout` zero) waits for nothing and times out as usual.
    pub(crate) fn refuse_wait_under_own_lock(&self, timeout: Option<Duration>) -> Result<()> {
        if timeout != Some(Duration::ZERO) && self.lock.held_here() {
            return Err(Error::Unsupported {
                name: self.name.clone(),
                what: "a wait for a new frame while this thread holds the stream's write lock (no other writer can publish): release the WriteGuard first, or write the frame through it".into(),
            });
        }
        Ok(())
    }

    /// A writer's bracket is open (a wait's rate-limited look, see
    /// [`Waiter::writer_check_due`], or its timeout): if the writer is dead, mark the
    /// generation invalid and report it. Taking the lock proves nobody is writing: a live writer holds
    /// the flock for the whole bracket, and the kernel drops a dead holder's flock when it
    /// exits, reaped or not (its pid would pass for alive while it is a zombie). A try that
    /// fails costs what asking for the pid did (a system call or two). Only a wait (`want`
    /// other than [`Want::Now`]) marks the report made, as for any invalid generation.
    fn check_abandoned(&self, observed: i64, want: Want) -> Result<()> {
        // A GPU-side publication whose CUDA stream has not stored the even value yet: the
        // write lock is free, but its writer is alive.
        if crate::gpu::publication_landing(self) {
            return Ok(());
        }
        // This thread may hold the lock already (a guard, `lock_many`): then the lock stamps
        // in the header are its own, and stay.
        let held = self.lock.held_here();
        // A writer may lock a removed lock file or the one now at the path: both must be free.
        if !self
            .lock
            .try_acquire_either(&self.name, || !self.meta.is_unlinked())?
        {
            return Ok(());
        }
        let invalid = seqlock::invalidate_abandoned(&self.header, observed);
        if invalid && !held {
            self.header.lock_owner_pid().store(0, Ordering::Relaxed);
            self.header.lock_depth().store(0, Ordering::Relaxed);
        }
        self.lock.release(|_| {});
        if invalid {
            if self.notify() {
                crate::notify::wake_all(&self.header);
            }
            // The value `invalidate_abandoned` stored, not a fresh load: a writer that took
            // the lock since and aborted its own write left another invalid value, which is
            // still to be reported.
            if !matches!(want, Want::Now) {
                self.mark_reported(observed.wrapping_neg());
            }
            // A stream unlinked meanwhile (pyshmem's unlink leaves the header as it was) is
            // stale, as every other read of an invalid generation says.
            self.check_generation(true)?;
            return Err(Error::Inconsistent {
                name: self.name.clone(),
                reason: "its writer process died mid-write",
            });
        }
        Ok(())
    }

    /// Whether the stable generation `s` with `count` is the write that was in progress when
    /// this handle was opened, now published: its count is the handle's baseline `after`
    /// (stored before the even value), yet the handle never returned it. Looked at only
    /// while waiting (the frame is not new by its count).
    fn published_since_open(&self, s: i64, count: u64, after: u64) -> bool {
        let pending = self.reads.pending_even.load(Ordering::Relaxed);
        pending != 0 && s == pending && count == after
    }

    pub(crate) fn record_read(&self, f: FrameInfo) -> FrameInfo {
        // The last count only moves forward: threads sharing the handle may record their
        // frames out of order, and `read_new` must not return the newer frame again. The
        // missed counters are advisory (plain loads and stores).
        let last = self.reads.last_count.fetch_max(f.count, Ordering::Relaxed);
        // The baseline it qualified is gone.
        self.reads.pending_even.store(0, Ordering::Relaxed);
        let missed = f.count.saturating_sub(last).saturating_sub(1);
        self.reads.last_missed.store(missed, Ordering::Relaxed);
        if missed > 0 {
            let total = self.reads.total_missed.load(Ordering::Relaxed);
            self.reads
                .total_missed
                .store(total.saturating_add(missed), Ordering::Relaxed);
        }
        FrameInfo { missed, ..f }
    }

    fn slice_copier<T: Element>(&self, dst: &mut [T]) -> Result<impl FnMut(*const u8) + '_> {
        self.ensure_dtype::<T>()?;
        self.ensure_len(dst.len())?;
        self.host_payload(crate::stream::Access::Read)?;
        let n = dst.len();
        let ptr = dst.as_mut_ptr();
        Ok(move |src: *const u8| {
            // SAFETY: `src` is the host payload of `n` elements of `T` (dtype, length and
            // presence checked above); `ptr` is the caller's exclusive buffer of `n` elements.
            // The copy may race a writer; the result is only used after validation.
            unsafe { T::copy_from_shared(src, ptr, n) };
        })
    }

    fn read_into_slice_with<T: Element>(
        &self,
        want: Want,
        dst: &mut [T],
        timeout: Option<Duration>,
        op: &'static str,
    ) -> Result<FrameInfo> {
        let copy = self.slice_copier(dst)?;
        let f = self.read_frame(want, timeout, op, copy)?;
        Ok(self.record_read(f))
    }

    fn read_array<T: Element>(
        &self,
        want: Want,
        timeout: Option<Duration>,
        op: &'static str,
    ) -> Result<(ArrayD<T>, FrameInfo)> {
        self.host_payload(crate::stream::Access::Read)?;
        // SAFETY: `read_frame` hands its copy only the host payload's frame: `len` elements
        // of the stream's dtype.
        let (a, info) =
            unsafe { self.read_to_new_array(|copy| self.read_frame(want, timeout, op, copy))? };
        Ok((a, self.record_read(info)))
    }

    /// A frame read into a new array of the stream's shape, after checking that `T` is the
    /// stream's dtype. The array's memory is reserved first: running out is [`Error::Io`]
    /// (`ENOMEM`) naming the remedy, not an abort. Uninitialized, not zeroed: the copy
    /// writes every element.
    ///
    /// # Safety
    ///
    /// `read` may run the copy it is given (perhaps several times) only on a pointer to a
    /// frame of the stream's `len` elements of its dtype (the host payload, a ring slot).
    pub(crate) unsafe fn read_to_new_array<T: Element>(
        &self,
        read: impl FnOnce(&mut dyn FnMut(*const u8)) -> Result<FrameInfo>,
    ) -> Result<(ArrayD<T>, FrameInfo)> {
        // Before allocating: a wrong `T` may be wider than the stream's elements.
        self.ensure_dtype::<T>()?;
        let n = self.len;
        let mut v: Vec<T> = frame_vec(&self.name, n)?;
        let ptr = v.as_mut_ptr();
        let mut copied = false;
        let info = read(&mut |src| {
            // SAFETY: `src` is a frame of `n` elements of the stream's dtype (the contract of
            // `read`), which is `T` (checked above), and `ptr` the spare capacity of `v`, `n`
            // elements; the copy writes valid `T`s (see `Element`) even if it races a writer:
            // the frame is used only once validated.
            unsafe { T::copy_from_shared(src, ptr, n) };
            copied = true;
        })?;
        if !copied {
            return Err(Error::Unsupported {
                name: self.name.clone(),
                what: "a frame was returned without being copied: report this as a bug".into(),
            });
        }
        // SAFETY: the copy ran (checked above) and initialized all `n` elements.
        unsafe { v.set_len(n) };
        let a =
            ArrayD::from_shape_vec(IxDyn(&self.shape), v).map_err(|_| Error::ShapeMismatch {
                name: self.name.clone(),
                expected: self.shape.clone(),
                given: vec![n],
            })?;
        Ok((a, info))
    }

    // ----- snapshots -----

    /// A safe snapshot of the current frame (allocates the array). Waits up to the default
    /// timeout for a writer that is inside its bracket.
    pub fn read<T: Element>(&self) -> Result<ArrayD<T>> {
        Ok(self
            .read_array(
                Want::Now,
                Some(self.default_timeout()),
                "read a stable frame",
            )?
            .0)
    }

    /// A safe snapshot into a caller-owned buffer (no allocation). Returns the frame's count.
    /// On error, `dst` is unspecified (it may hold a torn copy).
    pub fn read_into_slice<T: Element>(&self, dst: &mut [T]) -> Result<u64> {
        Ok(self
            .read_into_slice_with(
                Want::Now,
                dst,
                Some(self.default_timeout()),
                "read a stable frame",
            )?
            .count)
    }

    /// A safe snapshot into a caller-owned array of the stream's shape (no allocation).
    /// On error, `dst` is unspecified (it may hold a torn copy).
    pub fn read_into<T: Element, D: Dimension>(
        &self,
        dst: &mut ArrayViewMut<'_, T, D>,
    ) -> Result<u64> {
        if dst.shape() != self.shape.as_slice() {
            return Err(Error::ShapeMismatch {
                name: self.name.clone(),
                expected: self.shape.clone(),
                given: dst.shape().to_vec(),
            });
        }
        let Some(flat) = dst.as_slice_mut() else {
            return Err(Error::Unsupported {
                name: self.name.clone(),
                what: "read_into needs a contiguous C-order array".into(),
            });
        };
        self.read_into_slice(flat)
    }

    /// The current frame with its count, frame id, write time and missed count, all from one
    /// verified generation.
    pub fn read_publication<T: Element>(&self) -> Result<Publication<T>> {
        let (payload, info) = self.read_array(
            Want::Now,
            Some(self.default_timeout()),
            "read a stable frame",
        )?;
        Ok(Publication { payload, info })
    }

    /// [`Stream::read_publication`] into a caller-owned buffer. On error, `dst` is
    /// unspecified (it may hold a torn copy).
    pub fn read_publication_into<T: Element>(&self, dst: &mut [T]) -> Result<FrameInfo> {
        self.read_into_slice_with(
            Want::Now,
            dst,
            Some(self.default_timeout()),
            "read a stable frame",
        )
    }

    /// [`Stream::read_new_into_slice`] into raw bytes (C order, native endian), for tools that
    /// move frames without looking at them. `dst` must be `size_bytes()` long. On error,
    /// `dst` is unspecified (it may hold a torn copy). A `bool` stream's bytes come as
    /// stored: a foreign writer's mask may hold bytes other than 0 and 1, which the typed
    /// reads give as `true` and [`Stream::write_bytes_frame`] refuses.
    pub fn read_new_into_bytes(
        &self,
        dst: &mut [u8],
        timeout: Option<Duration>,
    ) -> Result<FrameInfo> {
        self.read_bytes_with(self.want_new(), dst, timeout, "read a new frame")
    }

    /// [`Stream::read_publication_into`] into raw bytes (C order, native endian): the
    /// current frame with its count, frame id and write time. `dst` must be `size_bytes()`
    /// long. On error, `dst` is unspecified (it may hold a torn copy).
    pub fn read_publication_into_bytes(&self, dst: &mut [u8]) -> Result<FrameInfo> {
        self.read_bytes_with(
            Want::Now,
            dst,
            Some(self.default_timeout()),
            "read a stable frame",
        )
    }

    fn read_bytes_with(
        &self,
        want: Want,
        dst: &mut [u8],
        timeout: Option<Duration>,
        op: &'static str,
    ) -> Result<FrameInfo> {
        self.ensure_byte_len(dst.len())?;
        self.host_payload(crate::stream::Access::Read)?;
        let (n, ptr) = (dst.len(), dst.as_mut_ptr());
        let f = self.read_frame(want, timeout, op, |src| {
            // SAFETY: `src` is the host payload of `n` bytes (checked above), `ptr` the
            // caller's exclusive buffer of `n` bytes; the result is used only once validated.
            unsafe { std::ptr::copy_nonoverlapping(src, ptr, n) };
        })?;
        Ok(self.record_read(f))
    }

    // ----- waits -----

    /// Waits until the stream's count exceeds `after` (level-triggered: a count already past
    /// `after` returns at once) and returns the count. `None` waits forever. The thread that
    /// holds the stream's write lock is refused a wait ([`Error::Unsupported`]).
    ///
    /// Except after an aborted write or a writer that died mid-write: the handle reports it
    /// once ([`Error::Inconsistent`]), then waits for the next good write even with the
    /// count past `after`. A writer inside its bracket is waited out too.
    pub fn wait_for_count(&self, after: u64, timeout: Option<Duration>) -> Result<u64> {
        self.wait_for(Want::After(after), timeout)
    }

    /// Waits until a read for `want` would find its frame; returns the frame's count (nothing
    /// copied, nothing recorded).
    pub(crate) fn wait_for(&self, want: Want, timeout: Option<Duration>) -> Result<u64> {
        Ok(self
            .read_frame(want, timeout, "see a new frame", |_| {})?
            .count)
    }

    /// Whether a read for `want` may find its frame now, from the count alone (a cheap look
    /// before a wait; the read itself decides).
    #[cfg(feature = "tokio")]
    pub(crate) fn may_find(&self, want: Want) -> bool {
        match want {
            Want::Now => true,
            Want::After(a) | Want::AfterOrAppended { after: a, .. } => self.count() > a,
            Want::New(a) => {
                self.count() > a || self.reads.pending_even.load(Ordering::Relaxed) != 0
            }
        }
    }

    /// [`Stream::wait_for_count`], or until the history ring holds frame `next` (a cursor's
    /// wait: a ring-first publication completes the slot before its even sequence), waiting
    /// with `strategy`.
    pub(crate) fn wait_for_append(
        &self,
        strategy: WaitStrategy,
        after: u64,
        next: u64,
        timeout: Option<Duration>,
    ) -> Result<()> {
        self.read_frame_waiting(
            strategy,
            Want::AfterOrAppended { after, next },
            timeout,
            "read a new frame",
            |_| {},
        )
        .map(drop)
    }

    /// [`Stream::wait_for_count`] that returns the [`FrameInfo`] of the publication it saw
    /// (count, frame id and write time of one frame) without copying the payload: for a
    /// reader that only needs to know which frame is there. It reads no frame, so its
    /// `missed` is 0 and the handle's next read counts what it missed from its last read.
    pub fn wait_for_frame(&self, after: u64, timeout: Option<Duration>) -> Result<FrameInfo> {
        self.read_frame(Want::After(after), timeout, "see a new frame", |_| {})
    }

    /// Waits for a frame with count > `after`, then returns a snapshot of it (or a newer one).
    pub fn read_after<T: Element>(
        &self,
        after: u64,
        timeout: Option<Duration>,
    ) -> Result<ArrayD<T>> {
        Ok(self
            .read_array(Want::After(after), timeout, "read a new frame")?
            .0)
    }

    /// [`Stream::read_after`] into a caller-owned buffer; returns the frame's count.
    /// On error, `dst` is unspecified (it may hold a torn copy).
    pub fn read_after_into_slice<T: Element>(
        &self,
        after: u64,
        dst: &mut [T],
        timeout: Option<Duration>,
    ) -> Result<u64> {
        Ok(self
            .read_into_slice_with(Want::After(after), dst, timeout, "read a new frame")?
            .count)
    }

    /// [`Stream::read_after`] with the frame's metadata.
    pub fn read_after_publication<T: Element>(
        &self,
        after: u64,
        timeout: Option<Duration>,
    ) -> Result<Publication<T>> {
        let (payload, info) = self.read_array(Want::After(after), timeout, "read a new frame")?;
        Ok(Publication { payload, info })
    }

    /// Returns the newest frame, once it is newer than the one this handle last returned;
    /// frames written in between are skipped and counted in [`FrameInfo::missed`] (a history
    /// [`Cursor`](crate::Cursor) returns every frame).
    ///
    /// "Last returned" starts at the count the handle saw when it was opened (a write in
    /// progress then is returned once it is published). This differs from pyshmem 1.4.0,
    /// whose `read_new` counts from the moment of the call: there a frame published just
    /// before the call is folded into the baseline, which deadlocks ping-pong loops. Here a
    /// frame published any time after this handle's previous read is returned.
    /// A wait by the thread that holds the stream's write lock is refused
    /// ([`Error::Unsupported`]): no other writer could publish.
    ///
    /// No frame is returned twice per handle and one caller at a time: threads calling this
    /// at once on one shared handle may each get the same frame (each waits past the count
    /// the handle last returned when it started). Threads that each want the new frames open
    /// a handle each (or take a history [`Cursor`](crate::Cursor) each); sharing frames out
    /// among threads is the caller's to do.
    pub fn read_new<T: Element>(&self, timeout: Option<Duration>) -> Result<ArrayD<T>> {
        Ok(self
            .read_array(self.want_new(), timeout, "read a new frame")?
            .0)
    }

    /// [`Stream::read_new`] into a caller-owned buffer; returns the frame's count.
    /// On error, `dst` is unspecified (it may hold a torn copy).
    pub fn read_new_into_slice<T: Element>(
        &self,
        dst: &mut [T],
        timeout: Option<Duration>,
    ) -> Result<u64> {
        Ok(self
            .read_into_slice_with(self.want_new(), dst, timeout, "read a new frame")?
            .count)
    }

    /// [`Stream::read_new`] with the frame's metadata.
    pub fn read_new_publication<T: Element>(
        &self,
        timeout: Option<Duration>,
    ) -> Result<Publication<T>> {
        let (payload, info) = self.read_array(self.want_new(), timeout, "read a new frame")?;
        Ok(Publication { payload, info })
    }

    /// What `read_new` waits for: a frame past this handle's last one.
    pub(crate) fn want_new(&self) -> Want {
        Want::New(self.last_read_count())
    }
}

/// Room for `n` elements, reserved without aborting where memory runs out (a large frame
/// under `ulimit -v`): [`Error::Io`] (`ENOMEM`) for stream `name`, naming the `_into` reads
/// (its display adds the memory remedy, the `ulimit -v` limit if finite).
fn frame_vec<T>(name: &str, n: usize) -> Result<Vec<T>> {
    reserved(
        name,
        n,
        "allocating a new array for the frame (or read with read_*_into into your own buffer)",
    )
}

/// A buffer of `n` default (zero) elements for frames of stream `name`, a tool's own
/// (a recorder's, a bridge's, a file's data before it is loaded), made without aborting
/// where memory runs out: [`Error::Io`] (`ENOMEM`) naming the stream, whose display gives
/// the memory remedy (the `ulimit -v` limit, if finite). `Vec::with_capacity` and `vec!`
/// abort the process instead ("memory allocation of N bytes failed").
pub fn frame_buffer<T: Clone + Default>(name: &str, n: usize) -> Result<Vec<T>> {
    let mut v = frame_buffer_room(name, n)?;
    v.resize(n, T::default());
    Ok(v)
}

/// [`frame_buffer`] without its zeros: an empty vector with room for `n` elements, for a
/// tool that fills it itself (a copy, a file read), so that no page is written twice.
pub fn frame_buffer_room<T>(name: &str, n: usize) -> Result<Vec<T>> {
    reserved(name, n, "allocating a frame buffer")
}

/// An empty vector with room for `n` elements, or `op` failed with `ENOMEM` for `name`.
fn reserved<T>(name: &str, n: usize, op: &'static str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Error::Io {
        name: name.to_owned(),
        op,
        source: std::io::Error::from_raw_os_error(libc::ENOMEM),
    })?;
    Ok(v)
}

/// Opens a new handle to `w`'s stream inside a write of `fill` bytes made by hand (lock,
/// odd sequence, fill, count and `frame_id` stamped before or after the open, even
/// sequence), for the tests of a handle opened during a write.
#[cfg(test)]
pub(crate) fn open_during_a_write(
    w: &Stream,
    fill: u8,
    frame_id: Option<u64>,
    stamped_before_open: bool,
) -> Stream {
    let guard = w.lock(Some(std::time::Duration::from_secs(5))).unwrap();
    let b = seqlock::begin_write(&w.header);
    let payload = w.payload.as_ref().unwrap();
    // SAFETY: the payload mapping holds the stream's `len()` bytes; we hold the write lock
    // and the sequence is odd, as a writer's fill.
    unsafe { std::ptr::write_bytes(payload.as_ptr(), fill, payload.len()) };
    if stamped_before_open {
        seqlock::stamp(&w.header, 0.0, frame_id);
    }
    let r = Stream::open(&w.name).unwrap();
    if !stamped_before_open {
        seqlock::stamp(&w.header, 0.0, frame_id);
    }
    seqlock::end_write_even(&w.header, b);
    drop(guard);
    r
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::Dtype;

    /// Room that cannot be reserved is a typed error naming the stream and the remedies,
    /// not an abort (`Vec::with_capacity` aborted the process: "memory allocation of
    /// 268435456 bytes failed" under `ulimit -v`).
    #[test]
    fn a_frame_array_that_cannot_be_allocated_is_an_enomem_error_with_the_remedy() {
        let e = frame_vec::<u8>("big", isize::MAX as usize).unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(&e, Error::Io { source, .. } if source.raw_os_error() == Some(libc::ENOMEM))
                && text.contains("'big'")
                && text.contains("allocating a new array for the frame (or read with read_*_into")
                && text.contains("free some memory")
                && text.matches("ulimit -v").count()
                    == usize::from(crate::sys::address_space_limit().is_some()),
            "{text}"
        );
        assert_eq!(frame_vec::<u64>("small", 3).unwrap().capacity(), 3);
    }

    /// A tool's frame buffer: zeroed, or the same typed error where it cannot be had.
    #[test]
    fn a_frame_buffer_is_zeroed_or_an_enomem_error_naming_the_stream() {
        assert_eq!(frame_buffer::<u64>("small", 3).unwrap(), [0, 0, 0]);
        let room = frame_buffer_room::<u64>("small", 3).unwrap();
        assert!(room.is_empty() && room.capacity() == 3);
        let e = frame_buffer::<u8>("big", isize::MAX as usize).unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(&e, Error::Io { source, .. } if source.raw_os_error() == Some(libc::ENOMEM))
                && text.contains("'big'")
                && text.contains("allocating a frame buffer")
                && text.contains("free some memory"),
            "{text}"
        );
    }

    fn stream(tag: &str) -> (String, Stream) {
        let name = format!("read-{tag}-{}", crate::sys::pid());
        let _ = crate::unlink(&name);
        let s = Stream::create(&name, &[4], Dtype::U8).unwrap();
        (name, s)
    }

    /// Removes `name`'s objects by hand, taking no lock and leaving the header as it was
    /// (as pyshmem's unlink does).
    pub(crate) fn remove_objects(name: &str) {
        for id in [crate::name::segment_id(name), crate::name::meta_id(name)] {
            std::fs::remove_file(format!("/dev/shm/{id}")).unwrap();
        }
    }

    /// A waiter in an invalid generation it reported already (an aborted write) waits for
    /// the next writer looking at the stream's file at the rate of the generation checks:
    /// before, each pause made an `fstat` and built an error, thousands in a spinning wait.
    /// It still notices an unlink.
    #[test]
    fn a_waiter_past_a_reported_aborted_write_looks_at_the_file_at_the_rate_limit() {
        for strategy in [WaitStrategy::Spin, WaitStrategy::Yield] {
            let (name, w) = stream(&format!("reported-invalid-{strategy:?}"));
            w.write_slice(&[1u8; 4]).unwrap();
            let r = Stream::open(&name).unwrap();
            let aborted =
                w.write_view(|_: &mut [u8]| Err::<(), _>(std::io::Error::other("fill failed")));
            assert!(
                matches!(aborted, Err(Error::WriteAborted { .. })),
                "{aborted:?}"
            );
            let first = r.read_new::<u8>(Some(Duration::ZERO));
            assert!(
                matches!(first, Err(Error::Inconsistent { .. })),
                "{first:?}"
            );
            r.set_wait_strategy(strategy);
            let checks = || crate::stream::GENERATION_CHECKS.with(Cell::get);
            let before = checks();
            let waited = r.read_new::<u8>(Some(Duration::from_millis(30)));
            assert!(
                matches!(waited, Err(Error::Timeout { .. })),
                "{strategy:?}: {waited:?}"
            );
            let made = checks() - before;
            assert!(
                made <= 4,
                "{strategy:?}: {made} looks at the file in a 30 ms wait"
            );
            remove_objects(&name);
            let waited = r.read_new::<u8>(Some(Duration::from_secs(5)));
            assert!(
                matches!(waited, Err(Error::Stale { .. })),
                "{strategy:?}: {waited:?}"
            );
            drop((r, w));
            let _ = crate::unlink(&name);
        }
    }

    /// A live writer that holds its bracket open while its stream is unlinked by a remover
    /// that takes no lock (pyshmem's unlink, objects removed by hand): a reader waiting
    /// behind it notices the unlink, as every wait does, instead of waiting for good.
    #[test]
    fn a_wait_behind_a_bracket_held_open_notices_an_unlink() {
        for strategy in [WaitStrategy::Adaptive, WaitStrategy::Spin] {
            let (name, w) = stream(&format!("bracket-unlink-{strategy:?}"));
            w.write_slice(&[1u8; 4]).unwrap();
            let r = std::sync::Arc::new(Stream::open(&name).unwrap());
            r.set_wait_strategy(strategy);
            let guard = w.lock(Some(Duration::from_secs(5))).unwrap();
            let b = seqlock::begin_write(&w.header);
            remove_objects(&name);
            let (tx, rx) = std::sync::mpsc::channel();
            let reader = std::sync::Arc::clone(&r);
            let waiting = std::thread::spawn(move || {
                let _ = tx.send(reader.read_new::<u8>(None));
            });
            let got = rx.recv_timeout(Duration::from_secs(2));
            if got.is_err() {
                // Ends the wait (a close is looked at after every pause).
                r.close();
            }
            waiting.join().unwrap();
            seqlock::end_write_even(&w.header, b);
            drop(guard);
            drop((r, w));
            let _ = crate::unlink(&name);
            let got = got.unwrap_or_else(|_| {
                panic!("{strategy:?}: read_new(None) still waiting 2 s after the unlink")
            });
            assert!(
                matches!(got, Err(Error::Stale { .. })),
                "{strategy:?}: {got:?}"
            );
        }
    }

    /// A read starved by writes that overlap its every copy notices an unlink too, as a
    /// wait does: before, it looked only at its deadline and at a close, so with no timeout
    /// it retried for as long as the writes went on.
    #[test]
    fn a_read_starved_by_overlapping_writes_notices_an_unlink() {
        let (name, s) = stream("starved-unlink");
        s.write_slice(&[1u8; 4]).unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let (tx, rx) = std::sync::mpsc::channel();
        let got = std::thread::scope(|scope| {
            let (s, stop, name) = (&s, &stop, &name);
            scope.spawn(move || {
                let mut first = true;
                let read = s.read_frame(Want::Now, None, "read a stable frame", |_| {
                    if std::mem::take(&mut first) {
                        remove_objects(name);
                    }
                    if !stop.load(Ordering::Relaxed) {
                        let b = seqlock::begin_write(&s.header);
                        seqlock::end_write(&s.header, b, 0.0, None);
                    }
                });
                let _ = tx.send(read);
            });
            let got = rx.recv_timeout(Duration::from_secs(5));
            // Ends the writes (and so the read) if the read did not end by itself.
            stop.store(true, Ordering::Relaxed);
            got
        });
        drop(s);
        let _ = crate::unlink(&name);
        let got = got.expect("the read still retrying 5 s after the unlink");
        assert!(matches!(got, Err(Error::Stale { .. })), "{got:?}");
    }

    /// A handle opened inside a writer's bracket after the writer stored the frame's count
    /// (writers do, before the even sequence; a GPU-side publication's CUDA stream stores
    /// that value much later) took that count as already seen and waited past the frame:
    /// a ping-pong loop stalled until its timeout.
    #[test]
    fn a_handle_opened_during_a_write_returns_that_frame_once_published() {
        for stamped_before_open in [true, false] {
            let (name, w) = stream(&format!("open-mid-write-{stamped_before_open}"));
            w.write_slice(&[1u8; 4]).unwrap();
            let r = open_during_a_write(&w, 2, Some(2), stamped_before_open);
            let got = r
                .read_new_publication::<u8>(Some(Duration::from_secs(5)))
                .unwrap();
            assert_eq!(
                (
                    got.info.count,
                    got.info.frame_id,
                    got.info.missed,
                    got.payload.as_slice().unwrap()
                ),
                (2, 2, 0, &[2u8; 4][..]),
                "stamped before open: {stamped_before_open}"
            );
            // Returned once.
            let again = r.read_new::<u8>(Some(Duration::ZERO));
            assert!(matches!(again, Err(Error::Timeout { .. })), "{again:?}");
            // A handle opened with no write in progress waits for the next one.
            let idle = Stream::open(&name).unwrap();
            let waited = idle.read_new::<u8>(Some(Duration::from_millis(1)));
            assert!(matches!(waited, Err(Error::Timeout { .. })), "{waited:?}");
            drop((r, idle, w));
            crate::unlink(&name).unwrap();
        }
    }

    /// A parking reader that arrives after a writer died inside its bracket (nobody has
    /// marked it) reports the death before its first park (row 2: "a reader arriving later
    /// reports it at once"). Its first pause skipped the look, so it parked a full
    /// `MAX_PARK` first. Here the reader thread's park cap is an hour and its timeout 60 s:
    /// a read that parks before it looks returns only at its deadline, past the bound.
    #[test]
    fn a_parking_reader_reports_a_dead_writers_bracket_before_its_first_park() {
        let name = format!("read-park-dead-{}", crate::sys::pid());
        let w = crate::notify::tests::fresh_notify_stream(&name, &[4], Dtype::U8);
        w.write_slice(&[1u8; 4]).unwrap();
        let r = Stream::open_readonly(&name).unwrap();
        r.set_wait_strategy(WaitStrategy::Park);
        // The dead writer: its bracket stays open, its lock is free.
        let _abandoned = seqlock::begin_write(&w.header);
        let (tx, rx) = std::sync::mpsc::channel();
        // Detached: a read that parks first stays parked until its deadline.
        std::thread::spawn(move || {
            crate::notify::uncap_this_thread();
            let _ = tx.send(r.read_new::<u8>(Some(Duration::from_secs(60))));
        });
        let got = rx.recv_timeout(Duration::from_secs(10));
        drop(w);
        crate::unlink(&name).unwrap();
        let got = got.expect("the reader parked before it looked for the dead writer");
        assert!(matches!(got, Err(Error::Inconsistent { .. })), "{got:?}");
    }

    /// A poll (timeout zero) that finds a live writer inside its bracket times out without
    /// pausing: a spinning or adaptive one spun until its spin's first clock read (256
    /// pauses, 7-36 µs) before it looked at its deadline, also on an executor thread (an
    /// async wait's inline try is such a poll).
    #[test]
    fn a_poll_of_an_open_bracket_times_out_without_pausing() {
        for strategy in [
            WaitStrategy::Adaptive,
            WaitStrategy::Spin,
            WaitStrategy::Park,
            WaitStrategy::Yield,
        ] {
            let name = format!("read-poll-bracket-{strategy:?}-{}", crate::sys::pid());
            let w = crate::notify::tests::fresh_notify_stream(&name, &[4], Dtype::U8);
            w.write_slice(&[1u8; 4]).unwrap();
            let r = Stream::open_readonly(&name).unwrap();
            r.set_wait_strategy(strategy);
            // A live writer inside its bracket: it holds the lock (so the timeout's look
            // for a dead writer finds it alive).
            let guard = w.lock(Some(Duration::from_secs(5))).unwrap();
            let b = seqlock::begin_write(&w.header);
            let (got, pauses) = std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        let pauses = || crate::notify::PAUSES.with(Cell::get);
                        let before = pauses();
                        let got = r.read_new::<u8>(Some(Duration::ZERO));
                        (got, pauses() - before)
                    })
                    .join()
                    .unwrap()
            });
            seqlock::end_write_even(&w.header, b);
            drop(guard);
            drop((r, w));
            crate::unlink(&name).unwrap();
            assert!(
                matches!(got, Err(Error::Timeout { .. })),
                "{strategy:?}: {got:?}"
            );
            assert!(pauses <= 1, "{strategy:?}: {pauses} pauses in a poll");
        }
    }

    /// A wait for a new frame that runs out says what it waited to do in words that read
    /// (it said "waiting to wait for a new frame"): a read, to read it; a wait that copies
    /// nothing, to see it.
    #[test]
    fn a_wait_that_runs_out_says_it_waited_to_read_a_new_frame() {
        let (name, w) = stream("timeout-text");
        w.write_slice(&[1u8; 4]).unwrap();
        let r = Stream::open(&name).unwrap();
        let text = r
            .read_new::<u8>(Some(Duration::ZERO))
            .unwrap_err()
            .to_string();
        assert!(
            text.starts_with(&format!(
                "timed out after 0ns waiting to read a new frame on stream '{name}'"
            )),
            "{text}"
        );
        let text = r
            .wait_for_count(1, Some(Duration::ZERO))
            .unwrap_err()
            .to_string();
        assert!(
            text.starts_with(&format!(
                "timed out after 0ns waiting to see a new frame on stream '{name}'"
            )),
            "{text}"
        );
        drop((r, w));
        crate::unlink(&name).unwrap();
    }

    /// A snapshot `read` reports a dead writer's bracket or an aborted write and leaves the
    /// handle's one report to its waits: it used it up, so the handle's next `read_new`
    /// waited past the dead writer (row 2), timing out or waiting for good.
    #[test]
    fn a_snapshot_read_leaves_the_report_of_an_invalid_write_to_the_handles_waits() {
        let (name, w) = stream("snapshot-report");
        w.write_slice(&[1u8; 4]).unwrap();
        let r = Stream::open(&name).unwrap();
        let both_report = |r: &Stream, what: &str| {
            let read = r.read::<u8>();
            assert!(
                matches!(read, Err(Error::Inconsistent { .. })),
                "{what}: {read:?}"
            );
            let waited = r.read_new::<u8>(Some(Duration::from_millis(100)));
            assert!(
                matches!(waited, Err(Error::Inconsistent { .. })),
                "{what}: {waited:?}"
            );
        };
        // The dead writer: its bracket stays open, its lock is free.
        let _abandoned = seqlock::begin_write(&w.header);
        both_report(&r, "dead writer");
        w.write_slice(&[2u8; 4]).unwrap();
        assert_eq!(r.read_new::<u8>(Some(Duration::ZERO)).unwrap()[[0]], 2);
        let aborted =
            w.write_view(|_: &mut [u8]| Err::<(), _>(std::io::Error::other("fill failed")));
        assert!(
            matches!(aborted, Err(Error::WriteAborted { .. })),
            "{aborted:?}"
        );
        both_report(&r, "aborted write");
        drop((r, w));
        crate::unlink(&name).unwrap();
    }

    /// Threads sharing one handle may record their reads out of order: one validates frame
    /// 11, another reads and records frame 12, then the first records 11. The handle's last
    /// count went back to 11, and its next `read_new` returned frame 12 a second time
    /// (row 1).
    #[test]
    fn a_read_recorded_late_does_not_move_the_last_count_back() {
        let (name, s) = stream("record-out-of-order");
        let r = Stream::open(&name).unwrap();
        for k in 1..=12u8 {
            s.write_slice(&[k; 4]).unwrap();
        }
        assert_eq!(s.count(), 12);
        let frame = |count| FrameInfo {
            count,
            frame_id: count,
            write_time: 0.0,
            missed: 0,
        };
        r.record_read(frame(12));
        let late = r.record_read(frame(11));
        assert_eq!(late.missed, 0);
        assert_eq!(r.last_read_count(), 12);
        let again = r.read_new::<u8>(Some(Duration::ZERO));
        assert!(matches!(again, Err(Error::Timeout { .. })), "{again:?}");
        drop((r, s));
        crate::unlink(&name).unwrap();
    }

    /// A read of `s` (no timeout) that a writer starves: a whole write lands during each
    /// copy (a bounded number, so that a read that ignores `on_first_copy` still ends, with
    /// the frame). Returns the read and how many copies it made.
    fn starved_read(s: &Stream, on_first_copy: impl Fn()) -> (Result<FrameInfo>, u32) {
        s.write_slice(&[1u8; 4]).unwrap();
        let mut copies = 0;
        let read = s.read_frame(Want::Now, None, "read a stable frame", |_| {
            copies += 1;
            if copies == 1 {
                on_first_copy();
            }
            if copies < 1000 {
                let b = seqlock::begin_write(&s.header);
                seqlock::end_write(&s.header, b, 0.0, None);
            }
        });
        (read, copies)
    }

    /// The same starved read, inside an async wait that was abandoned (its cancel flag
    /// set): it ends like a wait at its deadline, without a pause to notice the flag in.
    #[cfg(feature = "tokio")]
    #[test]
    fn a_read_starved_by_overlapping_writes_ends_when_its_async_wait_is_cancelled() {
        let (name, s) = stream("starved-cancel");
        let cancel = std::sync::Arc::new(crate::notify::Cancel::default());
        let (read, copies) = crate::notify::cancellable(std::sync::Arc::clone(&cancel), || {
            starved_read(&s, || {
                cancel.cancel();
            })
        });
        assert!(matches!(read, Err(Error::Timeout { .. })), "{read:?}");
        assert_eq!(copies, 1, "ended at the first retry");
        drop(s);
        crate::unlink(&name).unwrap();
    }

    /// A writer that overlaps every copy keeps a read in the retry loop, which used to
    /// look only at the deadline: with no timeout, `close` never ended it.
    #[test]
    fn a_read_starved_by_overlapping_writes_ends_at_close() {
        let (name, s) = stream("starved-close");
        let (read, copies) = starved_read(&s, || s.close());
        assert!(matches!(read, Err(Error::Closed { .. })), "{read:?}");
        assert_eq!(copies, 1, "ended at the first retry");
        drop(s);
        crate::unlink(&name).unwrap();
    }
}
