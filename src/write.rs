//! Writing: whole-frame copies, zero-copy `write_view`, the write lock guard, `clear`.
//!
//! Every publication goes through one bracket ([`Stream::publish_locked`]): odd sequence →
//! fill the payload (and append it to the history ring, storing the count before the frame
//! is visible there) → stamp time, frame id and count (unless the append stored it) →
//! even sequence → futex wake (notify streams). On a GPU stream whose writes publish on the
//! GPU, the fill only enqueues its copies and the writer's CUDA stream stores the even
//! sequence once they are done (`gpu::on_stream`). A whole-frame write to a history stream
//! fills the ring's slot first and copies it into the payload after
//! ([`Fill::Whole`]), so cursors get it one copy earlier. If the fill fails or panics, [`Abort`] publishes the invalid generation instead,
//! so readers get [`Error::Inconsistent`], never a torn frame, and the next good write recovers.

use std::marker::PhantomData;
use std::time::Duration;

use ndarray::{ArrayBase, ArrayRef, ArrayViewD, Data, Dimension, IxDyn};

use crate::dtype::{Dtype, Element, as_bytes};
use crate::error::{Error, Result};
use crate::header::MappedHeader;
use crate::seqlock::{self, Bracket};
use crate::stream::Stream;
use crate::{notify, sys};

/// What a publication's fill writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fill {
    /// Into the payload, which holds the previous frame (views, GPU uploads).
    InPlace,
    /// The whole frame, wherever it is pointed.
    Whole,
}

/// Frames from this size on wake parked readers twice when they go through the ring first
/// ([`Fill::Whole`]): once the slot is complete, so a parked cursor wakes
/// while the payload copy runs, and after the even sequence. Below it the copy costs less
/// than the second `FUTEX_WAKE` (about a microsecond here).
const EARLY_WAKE_MIN_FRAME: usize = 16 << 10;

/// Publishes the invalid generation unless disarmed (runs on error returns and on unwinding).
/// A GPU-side publication's guard first waits, up to the handle's timeout, for what its fill
/// enqueued; copies still enqueued after that may land after the invalid mark, on the next
/// writer's frame ([`crate::gpu::settle`]).
struct Abort<'a> {
    header: &'a MappedHeader,
    notify: bool,
    bracket: Option<Bracket>,
    /// The stream written: a failed fill's device work (on the GPU-side path or not) is
    /// waited for, up to the handle's timeout, before the abort.
    stream: &'a Stream,
}

impl Abort<'_> {
    #[inline]
    fn disarm(mut self) -> Option<Bracket> {
        self.bracket.take()
    }

    /// Stores the publication's count now ([`Bracket::count_ahead`]): a history append's,
    /// before its frame is visible in the ring.
    #[inline]
    fn count_ahead(&mut self, count: u64) {
        if let Some(b) = self.bracket.as_mut() {
            b.count_ahead(self.header, count);
        }
    }
}

impl Drop for Abort<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.bracket.take() {
            crate::gpu::settle(self.stream);
            seqlock::abort_write(self.header, b);
            if self.notify {
                notify::wake_all(self.header);
            }
        }
    }
}

/// The write lock, held. Writes through it don't re-lock; dropping it releases the lock.
///
/// The lock is reentrant per thread and excludes other threads and processes (pyshmem's
/// Python writers included). The guard is neither `Send` nor `Sync`: it belongs to the
/// thread that took it, and its writes assume that thread holds the lock. Do not hold it
/// across an `.await`: tasks that run on the same thread (a `LocalSet`, a current-thread
/// runtime) share the thread's hold, so another task's write would land between this
/// guard's frames.
///
/// ```
/// use shmstream::{Dtype, Stream};
/// let name = format!("doc-guard-{}", std::process::id());
/// let s = Stream::create(&name, &[3], Dtype::I32)?;
/// {
///     let g = s.lock(Some(std::time::Duration::from_secs(1)))?;
///     g.write_slice(&[1i32, 2, 3])?;
///     assert_eq!(g.live::<i32>()?.as_slice().unwrap(), &[1, 2, 3]);
/// }
/// shmstream::unlink(&name)?;
/// # Ok::<(), shmstream::Error>(())
/// ```
/// Neither `Send`:
///
/// ```compile_fail,E0277
/// let s = shmstream::Stream::open("any").unwrap();
/// let g = s.lock(None).unwrap();
/// fn send<T: Send>(_: T) {}
/// send(g);
/// ```
///
/// nor `Sync` (a scoped thread would write through it while its owner holds the lock):
///
/// ```compile_fail,E0277
/// let s = shmstream::Stream::open("any").unwrap();
/// let g = s.lock(None).unwrap();
/// fn sync<T: Sync>(_: &T) {}
/// sync(&g);
/// ```
///
/// and neither are a [`LiveView`] or a [`ManyGuard`](crate::ManyGuard), whose loans end on
/// the thread that holds the lock:
///
/// ```compile_fail,E0277
/// let s = shmstream::Stream::open("any").unwrap();
/// let g = s.lock(None).unwrap();
/// let v = g.live::<u8>().unwrap();
/// fn sync<T: Sync>(_: &T) {}
/// sync(&v);
/// ```
///
/// ```compile_fail,E0277
/// let s = shmstream::Stream::open("any").unwrap();
/// let g = shmstream::lock_many(&[&s], None).unwrap();
/// fn sync<T: Sync>(_: &T) {}
/// sync(&g);
/// ```
#[derive(Debug)]
#[must_use = "the write lock is released when this guard is dropped"]
pub struct WriteGuard<'a> {
    stream: &'a Stream,
    /// [`sys::forks`] when taken: a copy a child forked without exec
    /// inherited is its parent's hold, which the child's drop leaves alone.
    forks: u64,
    _not_send: PhantomData<*const ()>,
}

impl Stream {
    /// Takes the write lock (reentrant in this thread) under one deadline for the thread
    /// lock and the cross-process `flock`. `None` waits forever. [`Error::Stale`] once the
    /// stream was unlinked (noticed within the rate limit of its generation check).
    pub fn lock(&self, timeout: Option<Duration>) -> Result<WriteGuard<'_>> {
        self.ensure_writable("take the write lock")?;
        // An unlink that left the header valid (pyshmem's): the lock file is the new
        // generation's writers' to take (rate limited: a coarse clock read when not due).
        self.check_generation(false)?;
        self.acquire_stamped(timeout)?;
        Ok(WriteGuard {
            stream: self,
            forks: crate::sys::forks(),
            _not_send: PhantomData,
        })
    }

    fn acquire_stamped(&self, timeout: Option<Duration>) -> Result<()> {
        let _slow = crate::slowdown::guard(crate::slowdown::HotPath::Lock);
        let generation = u64::from_le_bytes(self.instance_id[..8].try_into().unwrap_or([0; 8])) | 1;
        // The take follows a lock file removed from its path (`LockFile::follow_path`).
        let depth = self.lock.acquire_for(
            generation,
            timeout,
            &self.name,
            || !self.meta.is_unlinked(),
            &self.closed,
        )?;
        // Closed after the wait's last look: the level is let go unused, so nothing is
        // locked or published through the closed handle.
        if let Err(e) = self.ensure_open() {
            self.lock.release(|_| {});
            return Err(e);
        }
        // Diagnostic owner stamp (pyshmem does the same); readers use the pid to detect a
        // writer that died mid-write.
        self.header
            .lock_depth()
            .store(depth, std::sync::atomic::Ordering::Relaxed);
        self.header
            .lock_owner_pid()
            .store(crate::sys::pid(), std::sync::atomic::Ordering::Relaxed);
        if depth == 1 {
            self.invalidate_inherited_bracket();
        }
        Ok(())
    }

    /// Marks invalid a bracket a writer that died mid-write left odd, found by the next
    /// holder of the lock (whose holding proves that writer gone), and wakes the waiters: they
    /// report the dead writer now, not at this holder's first write (a guard may be held idle
    /// for long, and the readers' own check cannot take the lock meanwhile). One load when the
    /// sequence is even. Left alone: a GPU-side publication still landing, and any bracket
    /// while the lock file held was removed (a live writer may hold the one now at the path,
    /// which this holder has not followed yet: guarantees row 38).
    fn invalidate_inherited_bracket(&self) {
        let h = &self.header;
        let s = h.sequence().load(std::sync::atomic::Ordering::Acquire);
        if s > 0
            && s & 1 == 1
            && !crate::gpu::publication_landing(self)
            && !self.lock.is_unlinked()
            && seqlock::invalidate_abandoned(h, s)
            && self.notify()
        {
            notify::wake_all(h);
        }
    }

    pub(crate) fn release_stamped(&self) {
        // The lock hot path is the pair: taking (`acquire_stamped`) and releasing.
        let _slow = crate::slowdown::guard(crate::slowdown::HotPath::Lock);
        let h = &self.header;
        self.lock.release(|depth| {
            use std::sync::atomic::Ordering::Relaxed;
            if depth == 0 {
                h.lock_owner_pid().store(0, Relaxed);
                h.lock_depth().store(0, Relaxed);
            } else {
                h.lock_depth().store(depth, Relaxed);
            }
        });
    }

    /// Runs one publication bracket; the caller holds the write lock.
    ///
    /// `fill` receives the host payload pointer (null for GPU streams without a mirror,
    /// whose fill writes the device buffer instead), or, for a [`Fill::Whole`] write to a
    /// history stream, the ring's next slot, which the bracket then copies into the
    /// payload: cursors get the frame one copy earlier.
    pub(crate) fn publish_locked<R>(
        &self,
        frame_id: Option<u64>,
        how: Fill,
        fill: impl FnOnce(*mut u8) -> Result<R>,
    ) -> Result<R> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.lock.is_lent() {
            return Err(Error::Unsupported {
                name: self.name.clone(),
                what: "a write while this thread has the payload lent out (inside a write_view fill, or while a WriteGuard::live view lives): finish the fill or drop the view first".into(),
            });
        }
        let _loan = self.lock.lend(crate::lock::Lent::Fill);
        let slow = crate::slowdown::guard(crate::slowdown::HotPath::Write);
        let h = &self.header;
        // Our own unlink leaves a negative sequence: check at once then, else rate-limited.
        self.check_generation(h.sequence().load(Relaxed) < 0)?;
        crate::gpu::check_writable(self)?;
        let dst = self
            .payload
            .as_ref()
            .map_or(std::ptr::null_mut(), |p| p.as_ptr());
        // The count this publication stamps (we hold the lock: nobody else moves it),
        // refused before anything is written where there is none.
        let count = h.count().load(Relaxed);
        let Some(next_count) = count.checked_add(1) else {
            return Err(Error::CorruptHeader {
                name: self.name.clone(),
                rule: crate::format::FormatError::CountExhausted(count),
            });
        };
        // The ring's next append (a stream without a host payload has no ring), refused
        // before anything is written where the newest frame is counted `u64::MAX`: that
        // frame and the sequence stay as they are.
        let ring = match self.history.as_ref().filter(|_| !dst.is_null()) {
            Some(ring) => Some((
                ring,
                ring.next_append()
                    .map_err(|rule| self.no_next_count(rule))?,
            )),
            None => None,
        };
        // GPU streams: whether the writer's CUDA stream stores the even sequence (after a
        // previous such publication landed).
        let on_gpu = crate::gpu::begin_publication(self)?;
        let mut abort = Abort {
            header: h,
            notify: self.notify(),
            bracket: Some(seqlock::begin_write(h)),
            stream: self,
        };
        // The ring's metadata for this publication: the count it is about to stamp
        // (`next_count`; the append may count past a frame the ring kept) and its frame id.
        // The append stores the count into the header before its frame becomes visible in
        // the ring, so a writer killed after that leaves the frame counted there, and the
        // end stores no second count (`seqlock::stamp_bracket`).
        let id = || frame_id.unwrap_or_else(|| h.frame_id().load(Relaxed));
        let ring_first = how == Fill::Whole
            && ring.as_ref().is_some_and(|(r, _)| r.fills_first())
            && crate::gpu::is_cpu(self);
        let (out, now) = match ring {
            Some((ring, append)) if ring_first => {
                // Ring first: cursors read the frame from its slot while it is copied into
                // the payload, one copy earlier than through the payload.
                let slot = ring.begin_append(&append);
                let out = fill(slot)?;
                let now = sys::unix_now();
                ring.finish_append(append, next_count, id(), now, |c| abort.count_ahead(c));
                if self.notify() && self.size >= EARLY_WAKE_MIN_FRAME {
                    // Parked cursors wake now; plain readers see the odd sequence and park
                    // again until the wake after the even one.
                    notify::wake_all(h);
                }
                // SAFETY: `slot` and `dst` are the ring slot's frame and the host payload,
                // each `size` bytes (the ring was attached for this frame size), distinct
                // mappings; we hold the write lock inside the bracket, so only cursors read
                // the slot (reads never race this copy's source) and readers of the payload
                // detect the copy through the odd sequence.
                unsafe { std::ptr::copy_nonoverlapping(slot.cast_const(), dst, self.size) };
                (out, now)
            }
            ring => {
                let out = fill(dst)?;
                crate::gpu::after_fill(self, dst)?;
                let now = sys::unix_now();
                // Same bracket, before the even sequence: the frame just filled (from the host
                // payload).
                if let Some((ring, append)) = ring {
                    ring.append(append, dst, next_count, id(), now, |c| abort.count_ahead(c));
                }
                (out, now)
            }
        };
        if let Some(b) = abort.disarm() {
            crate::gpu::end_publication(self, b, now, frame_id, on_gpu);
        }
        drop(slow);
        if self.notify() {
            notify::wake_all(h);
        }
        Ok(out)
    }

    /// The refusal of a write to a ring whose newest frame is counted `u64::MAX` (`rule`,
    /// from [`crate::history::Ring::next_append`]): no frame can follow it.
    #[cold]
    fn no_next_count(&self, rule: crate::format::FormatError) -> Error {
        Error::InvalidHistory {
            name: self.name.clone(),
            reason: format!(
                "its newest frame's {rule}: {}",
                crate::error::count_exhausted_remedy(&self.name)
            ),
        }
    }

    /// Wakes every process parked on this stream (notify streams; a no-op on others)
    /// without publishing: each waiter re-checks what it waits for (the sequence, the
    /// stream's generation) and parks again if nothing changed. Publications wake waiters
    /// by themselves; this is the wake alone, the hot path the CI gate times
    /// (`scenarios/gate.toml`).
    pub fn wake_waiters(&self) {
        if self.notify() {
            notify::wake_all(&self.header);
        }
    }

    /// Takes the lock (default timeout), runs one bracket ([`Stream::publish_locked`]),
    /// releases.
    pub(crate) fn publish<R>(
        &self,
        frame_id: Option<u64>,
        how: Fill,
        fill: impl FnOnce(*mut u8) -> Result<R>,
    ) -> Result<R> {
        self.ensure_writable("write")?;
        // This handle's own refusal (no device payload here, its GPU consumer held) is said
        // at once, not after waiting for another writer's lock; the bracket checks again.
        crate::gpu::check_writable(self)?;
        self.acquire_stamped(Some(self.default_timeout()))?;
        struct Release<'a>(&'a Stream);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.release_stamped();
            }
        }
        let _release = Release(self);
        self.publish_locked(frame_id, how, fill)
    }

    fn host_fill<'a, T: Element>(
        &'a self,
        data: &'a [T],
    ) -> Result<impl FnOnce(*mut u8) -> Result<()> + 'a> {
        self.ensure_dtype::<T>()?;
        self.ensure_len(data.len())?;
        self.host_payload(crate::stream::Access::Write)?;
        Ok(move |dst: *mut u8| {
            let src = as_bytes(data);
            // SAFETY: `dst` is the host payload or the history ring's next slot, each of
            // exactly `self.size == src.len()` bytes (dtype and length checked above); we
            // hold the write lock, so no cooperating writer touches it, and readers detect
            // this copy through the odd sequence (the slot's stamp).
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
            Ok(())
        })
    }

    /// Writes one whole frame from a flat slice in C order.
    pub fn write_slice<T: Element>(&self, data: &[T]) -> Result<()> {
        let fill = self.host_fill(data)?;
        self.publish(None, Fill::Whole, fill)
    }

    /// [`Stream::write_slice`], stamping `frame_id` in the same publication.
    pub fn write_slice_frame<T: Element>(&self, data: &[T], frame_id: u64) -> Result<()> {
        let fill = self.host_fill(data)?;
        self.publish(Some(frame_id), Fill::Whole, fill)
    }

    /// Writes one whole frame from raw bytes (C order, native endian; `size_bytes()` long),
    /// stamping `frame_id`: for tools that move frames without looking at them (bridges).
    /// For `bool` streams every byte must be 0 or 1.
    pub fn write_bytes_frame(&self, bytes: &[u8], frame_id: u64) -> Result<()> {
        self.ensure_byte_len(bytes.len())?;
        if self.dtype == Dtype::Bool && bytes.iter().any(|&b| b > 1) {
            return Err(Error::InvalidData {
                name: self.name.clone(),
                dtype: self.dtype,
                reason: "a bool byte other than 0 or 1 given to the write: pass only 0 or 1 (nothing was written)",
            });
        }
        self.host_payload(crate::stream::Access::Write)?;
        self.publish(Some(frame_id), Fill::Whole, |dst: *mut u8| {
            // SAFETY: `dst` is the host payload or the history ring's next slot, each of
            // exactly `self.size == bytes.len()` bytes (checked above); we hold the write
            // lock, and readers detect the copy through the odd sequence (the slot's stamp).
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) };
            Ok(())
        })
    }

    /// Writes one whole frame from an array of the stream's shape (any layout).
    pub fn write<T: Element, S: Data<Elem = T>, D: Dimension>(
        &self,
        array: &ArrayBase<S, D>,
    ) -> Result<()> {
        self.write_array(array, None, false)
    }

    /// [`Stream::write`], stamping `frame_id` in the same publication.
    pub fn write_frame<T: Element, S: Data<Elem = T>, D: Dimension>(
        &self,
        array: &ArrayBase<S, D>,
        frame_id: u64,
    ) -> Result<()> {
        self.write_array(array, Some(frame_id), false)
    }

    fn write_array<T: Element, S: Data<Elem = T>, D: Dimension>(
        &self,
        array: &ArrayBase<S, D>,
        frame_id: Option<u64>,
        locked: bool,
    ) -> Result<()> {
        self.ensure_dtype::<T>()?;
        if array.shape() != self.shape.as_slice() {
            return Err(Error::ShapeMismatch {
                name: self.name.clone(),
                expected: self.shape.clone(),
                given: array.shape().to_vec(),
            });
        }
        let run = |fill: &mut dyn FnMut(*mut u8) -> Result<()>| {
            if locked {
                self.publish_locked(frame_id, Fill::Whole, fill)
            } else {
                self.publish(frame_id, Fill::Whole, fill)
            }
        };
        match array.as_slice() {
            Some(flat) => {
                let mut fill = Some(self.host_fill(flat)?);
                run(&mut |dst| fill.take().map_or(Ok(()), |f| f(dst)))
            }
            None => {
                self.host_payload(crate::stream::Access::Write)?;
                run(&mut |dst| {
                    let dst = dst.cast::<T>();
                    for (i, v) in array.iter().enumerate() {
                        // SAFETY: the array has the stream's shape, so `i < self.len`, and `dst`
                        // is the host payload (page aligned) or the history ring's next slot
                        // (64-byte aligned), each of `self.len` elements of `T` (dtype
                        // checked); we hold the write lock inside the bracket.
                        unsafe { dst.add(i).write(*v) };
                    }
                    Ok(())
                })
            }
        }
    }

    /// Zero-copy publication: `fill` writes the frame in place in shared memory.
    ///
    /// If `fill` returns an error or panics, the generation is **aborted**: readers get
    /// [`Error::Inconsistent`] (never the half-written frame) until the next good write.
    /// The buffer holds the previous frame when `fill` starts; after an aborted write (or a
    /// writer that died mid-write) it may hold that write's bytes instead: write every
    /// element then. The lock keeps other writers out of the buffer only while its file stays
    /// at its path (one removed by a temp cleaner is followed within 20 ms: guarantees row 38);
    /// on a `bool` stream where a foreign writer may race that, fill through
    /// [`Stream::write_bytes_view_frame`] (a byte other than 0 or 1 under a `&mut [bool]` is
    /// undefined behaviour).
    ///
    /// ```
    /// use shmstream::{Dtype, Stream};
    /// let name = format!("doc-view-{}", std::process::id());
    /// let s = Stream::create(&name, &[4], Dtype::U16)?;
    /// s.write_view(|buf: &mut [u16]| -> Result<(), std::io::Error> {
    ///     for (i, v) in buf.iter_mut().enumerate() { *v = i as u16; }
    ///     Ok(())
    /// })?;
    /// assert_eq!(s.read::<u16>()?.as_slice().unwrap(), &[0, 1, 2, 3]);
    /// shmstream::unlink(&name)?;
    /// # Ok::<(), shmstream::Error>(())
    /// ```
    pub fn write_view<T, R, E>(
        &self,
        fill: impl FnOnce(&mut [T]) -> std::result::Result<R, E>,
    ) -> Result<R>
    where
        T: Element,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.write_view_frame_opt(None, fill, false)
    }

    /// [`Stream::write_view`], stamping `frame_id` in the same publication.
    pub fn write_view_frame<T, R, E>(
        &self,
        frame_id: u64,
        fill: impl FnOnce(&mut [T]) -> std::result::Result<R, E>,
    ) -> Result<R>
    where
        T: Element,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.write_view_frame_opt(Some(frame_id), fill, false)
    }

    fn write_view_frame_opt<T, R, E>(
        &self,
        frame_id: Option<u64>,
        fill: impl FnOnce(&mut [T]) -> std::result::Result<R, E>,
        locked: bool,
    ) -> Result<R>
    where
        T: Element,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.ensure_dtype::<T>()?;
        self.host_payload(crate::stream::Access::Write)?;
        let len = self.len;
        let name = &self.name;
        let body = move |dst: *mut u8| {
            if T::DTYPE == Dtype::Bool {
                // Bytes from another process may be any value; a `&mut [bool]` over them would
                // be undefined behaviour, so normalize them first (we own the bracket).
                // SAFETY: `dst` is the payload of `len` one-byte elements; any byte is a valid
                // `u8`, and this borrow ends before the one below is made.
                crate::dtype::bool_bytes_as_0_or_1(unsafe {
                    std::slice::from_raw_parts_mut(dst, len)
                });
            }
            // SAFETY: `dst` is the host payload, page aligned, of `len` elements of `T` (dtype
            // checked); we hold the write lock inside the bracket, so no cooperating writer
            // aliases it; bools were normalized above; the borrow ends before the bracket does.
            let buf = unsafe { std::slice::from_raw_parts_mut(dst.cast::<T>(), len) };
            fill(buf).map_err(|e| Error::WriteAborted {
                name: name.clone(),
                source: e.into(),
            })
        };
        if locked {
            self.publish_locked(frame_id, Fill::InPlace, body)
        } else {
            self.publish(frame_id, Fill::InPlace, body)
        }
    }

    /// Zero-copy publication of raw bytes, for tools that move frames of any dtype without
    /// looking at them (bridges filling a frame from received pieces): `fill` writes the
    /// frame's `size_bytes()` bytes (C order, native endian) in place, stamped `frame_id`.
    /// A failing `fill` aborts the generation as in [`Stream::write_view`]; so does, on `bool`
    /// streams, a byte other than 0 or 1 that `fill` wrote ([`Error::InvalidData`]): check such
    /// input first (one a foreign writer left, which `fill` does not overwrite, is stored as 1).
    pub fn write_bytes_view_frame<R, E>(
        &self,
        frame_id: u64,
        fill: impl FnOnce(&mut [u8]) -> std::result::Result<R, E>,
    ) -> Result<R>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.write_bytes_view_opt(frame_id, fill, false)
    }

    fn write_bytes_view_opt<R, E>(
        &self,
        frame_id: u64,
        fill: impl FnOnce(&mut [u8]) -> std::result::Result<R, E>,
        locked: bool,
    ) -> Result<R>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.host_payload(crate::stream::Access::Write)?;
        let (size, dtype, name) = (self.size, self.dtype, &self.name);
        let body = move |dst: *mut u8| {
            // SAFETY: `dst` is the host payload of `size` bytes; we hold the write lock inside
            // the bracket, so no cooperating writer aliases it, and any byte is a valid `u8`;
            // the borrow ends before the bracket does.
            let buf = unsafe { std::slice::from_raw_parts_mut(dst, size) };
            if dtype == Dtype::Bool {
                // A foreign writer's byte other than 0 or 1 (true, as numpy reads it) that a
                // partial fill leaves in place is not the fill's: stored as 1 first.
                crate::dtype::bool_bytes_as_0_or_1(buf);
            }
            let out = fill(buf).map_err(|e| Error::WriteAborted {
                name: name.clone(),
                source: e.into(),
            })?;
            if dtype == Dtype::Bool && buf.iter().any(|&b| b > 1) {
                return Err(Error::InvalidData {
                    name: name.clone(),
                    dtype,
                    reason: "the fill wrote a bool byte other than 0 or 1: write only 0 or 1 (the write was aborted)",
                });
            }
            Ok(out)
        };
        if locked {
            self.publish_locked(Some(frame_id), Fill::InPlace, body)
        } else {
            self.publish(Some(frame_id), Fill::InPlace, body)
        }
    }

    /// Writes zeros as a new frame.
    pub fn clear(&self) -> Result<()> {
        self.host_payload(crate::stream::Access::Write)?;
        let size = self.size;
        self.publish(None, Fill::Whole, |dst| {
            // SAFETY: `dst` is the host payload or the history ring's next slot, each of
            // `size` bytes, under the lock in the bracket.
            unsafe { std::ptr::write_bytes(dst, 0, size) };
            Ok(())
        })
    }
}

impl WriteGuard<'_> {
    /// The stream this guard locks.
    pub fn stream(&self) -> &Stream {
        self.stream
    }
    /// Before each write through the guard: the guard is this process's (a copy a child
    /// forked without exec inherited is the parent's hold), the stream is open and not
    /// unlinked (a guard held across an unlink that left the header valid lends no dead
    /// payload), and a lock file removed from its path is followed
    /// ([`crate::lock::LockFile::follow_path`]: a guard kept for a producer's run takes no
    /// lock per write, so its writes look). Both rate limited: a coarse clock read each when
    /// not due.
    pub(crate) fn ready(&self) -> Result<&Stream> {
        let s = self.stream;
        if self.forks != crate::sys::forks() {
            return Err(Error::Unsupported {
                name: s.name.clone(),
                what: "a write through a WriteGuard taken before this process was forked (the lock is its parent's): take the lock in this process".into(),
            });
        }
        s.ensure_open()?;
        s.check_generation(false)?;
        s.lock
            .follow_path(&s.name, Some(s.default_timeout()), || !s.meta.is_unlinked())?;
        Ok(s)
    }
    /// [`Stream::write_slice`] without re-locking.
    pub fn write_slice<T: Element>(&self, data: &[T]) -> Result<()> {
        self.ready()?;
        let fill = self.stream.host_fill(data)?;
        self.stream.publish_locked(None, Fill::Whole, fill)
    }
    /// [`Stream::write_slice_frame`] without re-locking.
    pub fn write_slice_frame<T: Element>(&self, data: &[T], frame_id: u64) -> Result<()> {
        self.ready()?;
        let fill = self.stream.host_fill(data)?;
        self.stream
            .publish_locked(Some(frame_id), Fill::Whole, fill)
    }
    /// [`Stream::write`] without re-locking.
    pub fn write<T: Element, S: Data<Elem = T>, D: Dimension>(
        &self,
        array: &ArrayBase<S, D>,
    ) -> Result<()> {
        self.ready()?;
        self.stream.write_array(array, None, true)
    }
    /// [`Stream::write_view`] without re-locking.
    pub fn write_view<T, R, E>(
        &self,
        fill: impl FnOnce(&mut [T]) -> std::result::Result<R, E>,
    ) -> Result<R>
    where
        T: Element,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.ready()?;
        self.stream.write_view_frame_opt(None, fill, true)
    }
    /// [`Stream::write_view_frame`] without re-locking.
    pub fn write_view_frame<T, R, E>(
        &self,
        frame_id: u64,
        fill: impl FnOnce(&mut [T]) -> std::result::Result<R, E>,
    ) -> Result<R>
    where
        T: Element,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.ready()?;
        self.stream.write_view_frame_opt(Some(frame_id), fill, true)
    }

    /// [`Stream::write_bytes_view_frame`] without re-locking.
    pub fn write_bytes_view_frame<R, E>(
        &self,
        frame_id: u64,
        fill: impl FnOnce(&mut [u8]) -> std::result::Result<R, E>,
    ) -> Result<R>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.ready()?;
        self.stream.write_bytes_view_opt(frame_id, fill, true)
    }

    /// The live payload, borrowed without a copy (pyshmem's `read(safe=False)` under the
    /// lock). Cooperating writers are excluded while the guard lives, and while the view
    /// lives this thread's own writes to the stream are refused ([`Error::Unsupported`]),
    /// so the view is stable: read it, drop it, then write. Exclusive only while the lock
    /// file stays at its path: one removed (a temp cleaner) lets a writer lock the new file
    /// there and write under the view (guarantees, row 38). So a `bool` stream is lent as
    /// its bytes, `live::<u8>()` (0 false, any other byte true, as numpy reads them), never
    /// as `bool` ([`Error::Unsupported`]): a foreign writer's 255 under a `&[bool]` would be
    /// undefined behaviour. After an aborted write, or a writer that died mid-write, the
    /// payload holds a half-written frame: [`Error::Inconsistent`] until a whole frame is
    /// written ([`WriteGuard::write_slice`], [`WriteGuard::write`]). Another process's
    /// GPU-side publication still landing is waited for, up to the handle's default
    /// timeout ([`Error::Timeout`]).
    pub fn live<T: Element>(&self) -> Result<LiveView<'_, T>> {
        let s = self.ready()?;
        // A bool stream's bytes are lent as `u8`, which any byte is.
        if !(T::DTYPE == Dtype::U8 && s.dtype == Dtype::Bool) {
            s.ensure_dtype::<T>()?;
        }
        if T::DTYPE == Dtype::Bool {
            return Err(Error::Unsupported {
                name: s.name.clone(),
                what: "a live view of a bool stream as bool (a writer on a lock file put at the path after this one was removed could store a byte other than 0 or 1 under it, which no bool may hold): take live::<u8>() (0 is false, any other byte true) or read the frame".into(),
            });
        }
        let p = s.host_payload(crate::stream::Access::View)?.as_ptr();
        if s.lock.is_filling() {
            return Err(Error::Unsupported {
                name: s.name.clone(),
                what: "a live view inside this thread's own write_view fill (it would alias the buffer being filled): use the fill's buffer".into(),
            });
        }
        crate::gpu::wait_for_landing(s)?;
        // An aborted write (negative sequence) or a dead writer's open bracket (odd, the lock
        // now ours) may have left a half-written frame: refused, as readers refuse it.
        if !matches!(
            seqlock::optimistic_read(&s.header),
            seqlock::Observed::Stable(_)
        ) {
            s.check_generation(true)?;
            return Err(Error::Inconsistent {
                name: s.name.clone(),
                reason: "the last write was aborted or its writer died: write a whole frame (write, write_slice) before a live view",
            });
        }
        let loan = s.lock.lend(crate::lock::Lent::View);
        // SAFETY: the payload holds `s.len` valid `T` (dtype checked; `T` is never `bool`, a
        // bool stream is lent as `u8`, and any byte is a valid `u8`, whoever stored it), is
        // page aligned and mapped while `s` lives; the write lock held by this guard keeps
        // cooperating writers out for the borrow's lifetime (tied to `&self`) while the lock
        // file stays at its path, and the loan, which lives as long as the view, makes this
        // thread's own publications refuse.
        let slice = unsafe { std::slice::from_raw_parts(p.cast_const().cast::<T>(), s.len) };
        let view =
            ArrayViewD::from_shape(IxDyn(&s.shape), slice).map_err(|_| Error::ShapeMismatch {
                name: s.name.clone(),
                expected: s.shape.clone(),
                given: vec![s.len],
            })?;
        Ok(LiveView {
            view,
            _loan: loan,
            _not_send: PhantomData,
        })
    }
}

/// A view of the live payload ([`WriteGuard::live`]); it dereferences to an
/// [`ArrayRef`], so every borrow of the payload it gives (`as_slice`,
/// `view`, indexing, iterators) lives no longer than it. While it lives, writes to the
/// stream from the guard's thread are refused.
///
/// ```
/// use shmstream::{Dtype, Stream};
/// let name = format!("doc-live-{}", std::process::id());
/// let s = Stream::create(&name, &[4], Dtype::U32)?;
/// let g = s.lock(None)?;
/// let v = g.live::<u32>()?;
/// let old: &[u32] = v.as_slice().unwrap();
/// assert_eq!(old, &[0; 4]);
/// drop(v);
/// g.write_view(|b: &mut [u32]| { b[0] = 7; Ok::<_, std::io::Error>(()) })?;
/// # drop(g);
/// # shmstream::unlink(&name)?;
/// # Ok::<(), shmstream::Error>(())
/// ```
///
/// A borrow kept past the view (the write below would alias it) does not compile:
///
/// ```compile_fail,E0505
/// use shmstream::{Dtype, Stream};
/// let name = format!("doc-live-escape-{}", std::process::id());
/// let s = Stream::create(&name, &[4], Dtype::U32)?;
/// let g = s.lock(None)?;
/// let v = g.live::<u32>()?;
/// let old: &[u32] = v.as_slice().unwrap();
/// drop(v);
/// g.write_view(|b: &mut [u32]| { b[0] = 7; Ok::<_, std::io::Error>(()) })?;
/// assert_eq!(old[0], 7);
/// # Ok::<(), shmstream::Error>(())
/// ```
///
/// nor does one through a temporary view:
///
/// ```compile_fail,E0716
/// use shmstream::{Dtype, Stream};
/// let name = format!("doc-live-escape-{}", std::process::id());
/// let s = Stream::create(&name, &[4], Dtype::U32)?;
/// let g = s.lock(None)?;
/// let old: &[u32] = g.live::<u32>()?.as_slice().unwrap();
/// g.write_view(|b: &mut [u32]| { b[0] = 7; Ok::<_, std::io::Error>(()) })?;
/// assert_eq!(old[0], 7);
/// # Ok::<(), shmstream::Error>(())
/// ```
///
/// and the `ArrayView` methods whose borrows would carry the guard's lifetime instead
/// (`to_slice`, `clone`) are not reached:
///
/// ```compile_fail,E0599
/// use shmstream::{Dtype, Stream};
/// let name = format!("doc-live-escape-{}", std::process::id());
/// let s = Stream::create(&name, &[4], Dtype::U32)?;
/// let g = s.lock(None)?;
/// let old: &[u32] = g.live::<u32>()?.to_slice().unwrap();
/// g.write_view(|b: &mut [u32]| { b[0] = 7; Ok::<_, std::io::Error>(()) })?;
/// assert_eq!(old[0], 7);
/// # Ok::<(), shmstream::Error>(())
/// ```
#[derive(Debug)]
#[must_use = "a live view does nothing unless read"]
pub struct LiveView<'a, T> {
    view: ArrayViewD<'a, T>,
    _loan: crate::lock::Loan<'a>,
    /// Not `Send`: the loan ends on the thread that holds the lock.
    _not_send: PhantomData<*const ()>,
}

/// To the view's `ArrayRef`, not the `ArrayViewD` itself: that one's borrows (`to_slice`,
/// `clone`) carry the guard's lifetime and would outlive the view, and its loan.
impl<T> std::ops::Deref for LiveView<'_, T> {
    type Target = ArrayRef<T, IxDyn>;

    fn deref(&self) -> &ArrayRef<T, IxDyn> {
        &self.view
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        if self.forks == crate::sys::forks() {
            self.stream.release_stamped();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that died inside its bracket, and a guard then held without a write (a
    /// producer idling before its first frame): readers report the dead writer at once.
    /// Their own check needs the lock the guard holds, so they waited out their timeout.
    #[test]
    fn a_dead_writers_bracket_is_reported_once_the_next_holder_takes_the_lock() {
        let name = format!("write-inherited-bracket-{}", std::process::id());
        let s = crate::notify::tests::fresh_notify_stream(&name, &[4], Dtype::U32);
        s.write_slice(&[1u32; 4]).unwrap();
        let reader = Stream::open_readonly(&name).unwrap();
        // The dead writer: its bracket stays open, its lock is gone.
        let _abandoned = seqlock::begin_write(&s.header);
        let g = s.lock(Some(Duration::from_secs(1))).unwrap();
        // Taking the lock marked it invalid (negative), before any reader looked.
        assert!(s.write_sequence() < 0, "{}", s.write_sequence());
        let read =
            std::thread::scope(|t| t.spawn(|| reader.read_publication::<u32>()).join().unwrap());
        assert!(matches!(read, Err(Error::Inconsistent { .. })), "{read:?}");
        g.write_slice(&[2u32; 4]).unwrap();
        drop(g);
        assert_eq!(reader.read::<u32>().unwrap().as_slice().unwrap(), &[2; 4]);
        drop((reader, s));
        crate::unlink(&name).unwrap();
    }

    /// A live writer on the lock file now at the path, inside its bracket, while this
    /// handle still holds the removed one (its path check is rate limited): taking the lock
    /// there proves nothing about that writer, whose bracket stays as it is.
    #[test]
    fn a_bracket_is_left_alone_by_a_holder_of_a_removed_lock_file() {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let name = format!("write-removed-lock-{}", std::process::id());
        let _ = crate::unlink(&name);
        let s = Stream::create(&name, &[4], Dtype::U32).unwrap();
        s.write_slice(&[1u32; 4]).unwrap();
        let path = crate::name::lock_path(&name);
        let mut theirs: Option<std::fs::File> = None;
        for attempt in 0.. {
            assert!(attempt < 100, "the path check fell due at every attempt");
            drop(theirs.take());
            // A take makes this handle's path check if it is due: the next one falls due
            // 20 ms from now at the earliest.
            drop(s.lock(Some(Duration::from_secs(5))).unwrap());
            std::fs::remove_file(&path).unwrap();
            // The live writer: the file now at the path, locked (another open file
            // description excludes this handle's), and its bracket open.
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .unwrap();
            assert!(crate::sys::flock_fd(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB).unwrap());
            theirs = Some(file);
            let open = seqlock::begin_write(&s.header);
            let odd = s.write_sequence();
            // Whether the lock was taken on the removed file, and the sequence after.
            let taken = match s.lock(Some(Duration::from_millis(50))) {
                Ok(_g) => Some((s.lock.is_unlinked(), s.write_sequence())),
                Err(Error::Timeout { .. }) => None,
                Err(e) => panic!("{e:?}"),
            };
            seqlock::end_write_even(&s.header, open);
            // None: the path check fell due meanwhile (a loaded machine) and this handle
            // followed the path to the writer's file. Again, after a fresh check.
            let Some((held_removed, after)) = taken else {
                continue;
            };
            assert!(held_removed, "the lock taken on the file at the path");
            assert_eq!(after, odd, "a live writer's bracket was marked");
            break;
        }
        drop(theirs);
        drop(s);
        crate::unlink(&name).unwrap();
    }

    /// A writer that died inside its bracket (the sequence left odd) and this process then
    /// taking the lock: the live view is refused, not lent as the half-written frame.
    #[test]
    fn a_live_view_over_a_dead_writers_open_bracket_is_refused() {
        let name = format!("write-live-dead-{}", std::process::id());
        let _ = crate::unlink(&name);
        let s = Stream::create(&name, &[4], Dtype::U32).unwrap();
        s.write_slice(&[1u32; 4]).unwrap();
        // The dead writer: its bracket stays open, its lock is gone.
        let _abandoned = seqlock::begin_write(&s.header);
        let g = s.lock(Some(Duration::from_secs(1))).unwrap();
        let e = g.live::<u32>().map(|_| ()).unwrap_err();
        assert!(matches!(e, Error::Inconsistent { .. }), "{e:?}");
        g.write_slice(&[2u32; 4]).unwrap();
        assert_eq!(g.live::<u32>().unwrap().as_slice().unwrap(), &[2; 4]);
        drop(g);
        drop(s);
        crate::unlink(&name).unwrap();
    }

    /// A GPU-side publication still landing (odd sequence, the write lock free, a live
    /// publisher in `_gpu`) seen under the lock by a handle without a device attachment (no
    /// CUDA here): `live` waits for the landing as readers do, and times out on the publisher.
    /// It called the landing an aborted write (`Inconsistent`: "write a whole frame", which
    /// this handle cannot do).
    #[test]
    fn a_live_view_on_a_handle_without_the_device_waits_for_a_gpu_publication_landing() {
        use crate::gpu::layout;
        use std::sync::atomic::Ordering;
        if crate::gpu::gpu_available() {
            return; // the fake handles are not real IPC handles
        }
        let name = format!("write-live-landing-{}", std::process::id());
        let _ = crate::unlink(&name);
        crate::gpu::tests::fake_gpu_stream(&name, true, true, layout::STATE_LIVE);
        let s = Stream::open(&name).unwrap();
        assert!(s.gpu.detached_reason().is_some(), "no device attachment");
        // The publisher (this process, alive) whose CUDA stream has yet to store 4.
        let g = crate::segment::Segment::open_prefix(
            &crate::name::gpu_id(&name),
            true,
            layout::GPU_SEGMENT_BYTES,
        )
        .unwrap();
        let pid = crate::sys::pid().to_le_bytes();
        // SAFETY: a live mapping of GPU_SEGMENT_BYTES; PUBLISHER_PID + 8 is inside it.
        unsafe {
            std::ptr::copy_nonoverlapping(
                pid.as_ptr(),
                g.as_ptr().add(layout::gpu_offset::PUBLISHER_PID),
                8,
            );
        };
        drop(g);
        s.header.sequence().store(3, Ordering::Release);
        s.set_default_timeout(Duration::from_millis(60));
        let guard = s.lock(Some(Duration::from_secs(1))).unwrap();
        let e = guard.live::<f32>().map(|_| ()).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Timeout {
                    awaited: crate::Awaited::GpuPublisher,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(s.write_sequence(), 3, "left landing");
        // The landing ends (its CUDA stream stores the even value) while `live` waits: the
        // frame is lent.
        s.set_default_timeout(Duration::from_secs(10));
        std::thread::scope(|t| {
            t.spawn(|| s.header.sequence().store(4, Ordering::Release));
            assert_eq!(guard.live::<f32>().unwrap().as_slice().unwrap(), &[0.0; 4]);
        });
        drop(guard);
        drop(s);
        crate::unlink(&name).unwrap();
    }

    /// A stream unlinked as pyshmem does (objects removed, the header left valid, so the
    /// sequence stays stable): a lock and a live view through a guard taken before give
    /// `Stale`. Before, neither looked at the files: a `lock` + `live` loop read the dead
    /// payload for good, taking the lock file the new generation's writers need.
    #[test]
    fn a_lock_and_a_live_view_after_an_unlink_that_leaves_the_header_valid_are_stale() {
        let name = format!("write-live-unlinked-{}", std::process::id());
        let _ = crate::unlink(&name);
        let w = Stream::create(&name, &[4], Dtype::U8).unwrap();
        w.write_slice(&[1u8; 4]).unwrap();
        let r = Stream::open(&name).unwrap();
        let g = w.lock(Some(Duration::from_secs(1))).unwrap();
        assert_eq!(g.live::<u8>().unwrap().as_slice().unwrap(), &[1; 4]);
        crate::read::tests::remove_objects(&name);
        // Past the rate limit (time based): as if each handle last looked long ago.
        for s in [&w, &r] {
            s.generation_checked_ms
                .store(0, std::sync::atomic::Ordering::Relaxed);
        }
        let e = g.live::<u8>().map(|_| ()).unwrap_err();
        assert!(matches!(e, Error::Stale { .. }), "{e:?}");
        drop(g);
        let e = r
            .lock(Some(Duration::from_secs(1)))
            .map(|_| ())
            .unwrap_err();
        assert!(matches!(e, Error::Stale { .. }), "{e:?}");
        drop((r, w));
        let _ = crate::unlink(&name);
    }

    /// A write through a guard held across an unlink of its stream is `Stale`, even just
    /// after the handle looked at its files: the unlink left the sequence negative, and a
    /// write then looks at once, past the rate limit. A write that waited for the limit
    /// would have published its frame into objects nobody can open again, and said `Ok`.
    #[test]
    fn a_guards_write_after_an_unlink_is_stale_within_the_rate_limit() {
        let name = format!("write-guard-unlinked-{}", std::process::id());
        let _ = crate::unlink(&name);
        let w = Stream::create(&name, &[4], Dtype::U8).unwrap();
        w.write_slice(&[1u8; 4]).unwrap();
        let g = w.lock(Some(Duration::from_secs(1))).unwrap();
        w.unlink().unwrap();
        assert!(
            w.header
                .sequence()
                .load(std::sync::atomic::Ordering::Relaxed)
                < 0
        );
        // As if the handle had looked at its files just now.
        w.generation_checked_ms.store(
            crate::sys::coarse_now_ms(),
            std::sync::atomic::Ordering::Relaxed,
        );
        let e = g.write_slice(&[2u8; 4]).unwrap_err();
        assert!(matches!(e, Error::Stale { .. }), "{e:?}");
        drop(g);
        drop(w);
        let _ = crate::unlink(&name);
    }

    /// `wake_waiters` wakes a reader parked on the stream, which looks again: here it finds
    /// the stream unlinked the way pyshmem unlinks (objects removed, the header left valid,
    /// nobody woken) and returns `Stale`. Its thread's park cap is an hour
    /// ([`crate::notify::uncap_this_thread`]), so without the wake it stays parked past the
    /// bound.
    #[test]
    fn wake_waiters_wakes_a_parked_reader_to_look_again() {
        use std::sync::atomic::Ordering::Relaxed;
        const LONG: Duration = Duration::from_secs(30);
        let name = format!("write-wake-waiters-{}", std::process::id());
        let w = crate::notify::tests::fresh_notify_stream(&name, &[4], Dtype::U8);
        let r = std::sync::Arc::new(Stream::open(&name).unwrap());
        r.set_wait_strategy(crate::WaitStrategy::Park);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn({
            let r = std::sync::Arc::clone(&r);
            move || {
                crate::notify::uncap_this_thread();
                let _ = tx.send(r.read_new::<u8>(None).map(drop));
            }
        });
        crate::notify::tests::wait_parked(&r, "the reader");
        crate::read::tests::remove_objects(&name);
        // The reader's next look at its files is due (the limit is time based).
        r.generation_checked_ms.store(0, Relaxed);
        w.wake_waiters();
        let got = rx.recv_timeout(LONG);
        drop(w);
        let _ = crate::unlink(&name);
        let got = got.expect("the wake never reached the parked reader");
        assert!(matches!(got, Err(Error::Stale { .. })), "{got:?}");
    }

    /// A bool stream is lent as its bytes, never as `bool`: the lock excludes other writers
    /// only while its file stays at its path, and a writer on a new file there (pyshmem's
    /// uint8 mask viewed as bool) could store 255 under a `&[bool]`. The refusal names the
    /// remedy; the `u8` view shows a foreign byte as it is.
    #[test]
    fn a_live_view_of_a_bool_stream_is_lent_as_bytes_not_as_bool() {
        let name = format!("write-live-bool-{}", std::process::id());
        let _ = crate::unlink(&name);
        let s = Stream::create(&name, &[4], Dtype::Bool).unwrap();
        s.write_slice(&[true, false, true, true]).unwrap();
        let g = s.lock(Some(Duration::from_secs(1))).unwrap();
        let e = g.live::<bool>().map(|_| ()).unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(e, Error::Unsupported { .. })
                && text.contains(&name)
                && text.contains("live::<u8>()"),
            "{text}"
        );
        assert_eq!(g.live::<u8>().unwrap().as_slice().unwrap(), &[1, 0, 1, 1]);
        // As a foreign writer stores a uint8 mask viewed as bool.
        plant_in_payload(&name, 2, &[255]);
        assert_eq!(g.live::<u8>().unwrap().as_slice().unwrap(), &[1, 0, 255, 1]);
        let e = g.live::<i8>().map(|_| ()).unwrap_err();
        assert!(matches!(e, Error::DtypeMismatch { .. }), "{e:?}");
        drop(g);
        drop(s);
        crate::unlink(&name).unwrap();
    }

    /// Stores `bytes` at `at` in `name`'s payload through its `/dev/shm` file, as a foreign
    /// writer (a uint8 mask viewed as bool) leaves them.
    fn plant_in_payload(name: &str, at: u64, bytes: &[u8]) {
        std::os::unix::fs::FileExt::write_all_at(
            &std::fs::OpenOptions::new()
                .write(true)
                .open(format!("/dev/shm/{}", crate::name::segment_id(name)))
                .unwrap(),
            bytes,
            at,
        )
        .unwrap();
    }

    /// A partial byte fill over a foreign writer's bool frame (255: true to numpy) publishes,
    /// the byte kept as true (1): it was refused as the fill's invalid byte, and the frame
    /// aborted.
    #[test]
    fn a_partial_byte_fill_over_a_foreign_bool_byte_publishes_it_as_true() {
        let name = format!("write-bytes-bool-{}", std::process::id());
        let _ = crate::unlink(&name);
        let s = Stream::create(&name, &[4], Dtype::Bool).unwrap();
        s.write_slice(&[false; 4]).unwrap();
        plant_in_payload(&name, 2, &[255]);
        s.write_bytes_view_frame(7, |b| {
            b[0] = 1;
            Ok::<(), std::io::Error>(())
        })
        .unwrap();
        assert_eq!(
            s.read::<bool>().unwrap().as_slice().unwrap(),
            &[true, false, true, false]
        );
        let mut raw = [9u8; 4];
        s.read_publication_into_bytes(&mut raw).unwrap();
        assert_eq!(raw, [1, 0, 1, 0]);
        assert!(
            s.write_bytes_view_frame(8, |b| {
                b[3] = 2;
                Ok::<(), std::io::Error>(())
            })
            .is_err()
        );
        drop(s);
        crate::unlink(&name).unwrap();
    }
}
