//! [`Stream`]: the handle users hold. Creation, opening and closing live here; the options
//! that create one in `options`, the opening of its header in `open_meta`, and the error for
//! a name without a stream in `not_found`. What a handle tells about its stream is in
//! `metadata.rs`; writing and reading are in `write.rs` and `read.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::dtype::{Dtype, Element};
use crate::error::{Error, Result};
use crate::format::{self, FLAG_NOTIFY, Header};
use crate::header::MappedHeader;
use crate::lock::LockFile;
use crate::notify::{self, WaitStrategy};
use crate::segment::Segment;
use crate::{catalog, name, sys};

mod not_found;
mod open_meta;
mod options;

use not_found::creation_at_work;
pub(crate) use not_found::not_found;
use open_meta::wait_until;
pub(crate) use open_meta::{clear_dead_lock_stamps, decode_retrying, open_meta};
pub use options::{StreamConfig, StreamOptions};

/// How long `open` keeps re-validating a header that looks torn (a writer may be between
/// two metadata stores) before calling it corrupt. Same as pyshmem.
const DECODE_RETRY: Duration = Duration::from_millis(50);
/// Default timeout for calls that take none (`read`, `write`, ...).
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often reads and writes check that the stream was not unlinked under the handle.
const GENERATION_CHECK_MS: u64 = 20;
/// `generation_checked_ms` once the handle learned its stream is gone (sticky).
const GENERATION_STALE: u64 = u64::MAX;

#[cfg(test)]
thread_local! {
    /// How many generation checks past the rate limit this thread made (unit tests).
    pub(crate) static GENERATION_CHECKS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Per-handle read bookkeeping (pyshmem's `last_read_count` / missed counters).
#[derive(Debug, Default)]
pub(crate) struct ReadState {
    /// The count of the frame this handle last returned (at open: the count then).
    pub(crate) last_count: AtomicU64,
    /// The even sequence value that publishes the write in progress when the handle was
    /// opened (0: none). Its count is stored before that value, so `last_count` may be the
    /// count of a frame not yet published; `read_new` returns that frame once published
    /// (sequence this value, count `last_count`) instead of waiting past it. Qualifies the
    /// baseline only: every read that moves `last_count` clears it.
    pub(crate) pending_even: AtomicI64,
    pub(crate) last_missed: AtomicU64,
    pub(crate) total_missed: AtomicU64,
    /// The last invalid generation reported by a waiting read (reported once per handle).
    pub(crate) reported_invalid: AtomicI64,
}

impl ReadState {
    /// Undoes the report of an invalid generation a wait made but did not pass on (an
    /// abandoned async wait, a cursor that waits on past it), so the handle's next read or
    /// wait makes it: the mark `made` goes back to the mark `before` it replaced (both from
    /// [`crate::read::reporting`], on the thread that made the report). A report made
    /// meanwhile by another wait (another generation's) stays, else the handle's next read
    /// would report that generation a second time.
    pub(crate) fn give_back_report(&self, before: i64, made: i64) {
        let _ = self.reported_invalid.compare_exchange(
            made,
            before,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
}

/// A handle on a named shared-memory stream: a latest-value n-d array with a seqlock,
/// a cross-process write lock and optional futex wake-ups.
///
/// `Stream` is `Send + Sync`: share it across threads by reference or `Arc`. Dropping it
/// closes it (and unlinks the stream if it was created with `auto_unlink`).
///
/// ```
/// use shmstream::{Dtype, Stream};
/// let name = format!("doc-stream-{}", std::process::id());
/// let w = Stream::create(&name, &[2, 2], Dtype::F32)?;
/// w.write_slice(&[1.0f32, 2.0, 3.0, 4.0])?;
/// let r = Stream::open_readonly(&name)?;
/// let a = r.read::<f32>()?;
/// assert_eq!(a.shape(), &[2, 2]);
/// assert_eq!(a[[1, 0]], 3.0);
/// shmstream::unlink(&name)?;
/// # Ok::<(), shmstream::Error>(())
/// ```
#[derive(Debug)]
pub struct Stream {
    pub(crate) name: String,
    pub(crate) dtype: Dtype,
    pub(crate) shape: Vec<usize>,
    /// Elements in one frame.
    pub(crate) len: usize,
    /// Bytes in one frame.
    pub(crate) size: usize,
    pub(crate) flags: u32,
    pub(crate) device_index: i32,
    pub(crate) creator_pid: i64,
    pub(crate) instance_id: [u8; 16],
    pub(crate) readonly: bool,
    pub(crate) owner: bool,
    pub(crate) auto_unlink: bool,
    /// [`sys::forks`] when opened: a copy a child forked without exec inherited is its
    /// parent's, whose auto-unlink the child's drop leaves alone.
    forks: u64,
    /// GPU streams: the device payload (or why this handle has none). Declared before
    /// `meta` and `payload` so it drops first: it may hold driver registrations of the
    /// header and payload pages, and its drop waits for its CUDA stream, which may still
    /// store the header's sequence (GPU-side publication).
    pub(crate) gpu: crate::gpu::GpuLink,
    pub(crate) header: MappedHeader,
    pub(crate) meta: Segment,
    /// The host payload; `None` for a GPU stream without a CPU mirror.
    pub(crate) payload: Option<Segment>,
    /// The history ring, for streams created with `history(n)`.
    pub(crate) history: Option<crate::history::Ring>,
    pub(crate) lock: Arc<LockFile>,
    pub(crate) reads: ReadState,
    pub(crate) closed: AtomicBool,
    pub(crate) strategy: AtomicU8,
    pub(crate) timeout_ns: AtomicU64,
    /// Coarse-clock milliseconds of the last "was the stream unlinked?" check.
    pub(crate) generation_checked_ms: AtomicU64,
}

fn check_name(name: &str) -> Result<()> {
    name::check(name).map_err(|reason| Error::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

/// Checks `shape` of `dtype` as a creation of stream `name` does, before anything is made or
/// read (a tool that reads a file of that shape first): 1 to 19 dimensions, none empty, a
/// payload this machine can map. Returns the payload's bytes, or [`Error::InvalidShape`].
pub fn check_shape(name: &str, shape: &[usize], dtype: Dtype) -> Result<usize> {
    let bad = |reason| Error::InvalidShape {
        name: name.to_owned(),
        shape: shape.to_vec(),
        reason,
    };
    if shape.is_empty() {
        return Err(bad("a stream needs at least one dimension"));
    }
    if shape.len() > format::MAX_DIMS {
        return Err(bad("a stream has at most 19 dimensions"));
    }
    if shape.contains(&0) {
        return Err(bad("every dimension must be positive"));
    }
    let bytes = format::payload_bytes(shape, dtype)
        .ok_or_else(|| bad("the payload size overflows 64 bits"))?;
    usize::try_from(bytes)
        .ok()
        .filter(|&b| isize::try_from(b).is_ok())
        .ok_or_else(|| bad("the payload is larger than this machine can map"))
}

/// Holds the write lock for a lifecycle operation (create, unlink) without touching a header:
/// the lock of the file at the lock path, even if the file this process opened was removed
/// meanwhile ([`LockFile::acquire_at_path`]).
pub(crate) struct NameLock<'a> {
    lock: &'a LockFile,
}

impl<'a> NameLock<'a> {
    pub(crate) fn take(lock: &'a LockFile, stream: &str) -> Result<NameLock<'a>> {
        NameLock::take_within(lock, stream, DEFAULT_TIMEOUT)
    }

    /// [`NameLock::take`], waiting at most `wait`.
    pub(crate) fn take_within(
        lock: &'a LockFile,
        stream: &str,
        wait: Duration,
    ) -> Result<NameLock<'a>> {
        lock.acquire_at_path(Some(wait), stream)?;
        Ok(NameLock { lock })
    }

    /// The lock if nobody holds it now, else `None`.
    pub(crate) fn try_take(lock: &'a LockFile, stream: &str) -> Result<Option<NameLock<'a>>> {
        // Lazily: a NameLock made for nothing would release a lock it never took on drop.
        Ok(lock.try_acquire_at_path(stream)?.then(|| NameLock { lock }))
    }
}

impl Drop for NameLock<'_> {
    fn drop(&mut self) {
        self.lock.release(|_| {});
    }
}

impl Stream {
    /// Creates a CPU stream (no notify). Shorthand for [`StreamOptions`].
    pub fn create(name: &str, shape: &[usize], dtype: Dtype) -> Result<Stream> {
        StreamOptions::new(name).shape(shape).dtype(dtype).create()
    }

    /// Creates a stream from a [`StreamConfig`].
    pub fn create_from_config(config: &StreamConfig) -> Result<Stream> {
        let mut o = StreamOptions::new(&config.name);
        o.history = config.history;
        o.shape(&config.shape)
            .dtype(config.dtype)
            .notify(config.notify);
        if let Some(dev) = &config.gpu_device {
            // A name that is none is said by `create`, after the stream's name and shape.
            o.device(dev);
            o.cpu_mirror = config.cpu_mirror.unwrap_or(false);
        }
        o.create()
    }

    fn create_with(o: &StreamOptions, wait: Duration) -> Result<Stream> {
        let name = o.name.as_str();
        check_name(name)?;
        let size = check_shape(name, &o.shape, o.dtype)?;
        // A device that is none is said first: no other setting's remedy applies without one.
        let device = match &o.gpu_device {
            None => None,
            Some(Ok(dev)) if *dev >= 0 => Some(*dev),
            Some(bad) => {
                return Err(Error::Unsupported {
                    name: name.to_owned(),
                    what: match bad {
                        Err(what) => what.clone(),
                        Ok(dev) => format!(
                            "invalid GPU device {dev}: use \"cuda:N\" or a non-negative ordinal"
                        ),
                    },
                });
            }
        };
        if o.history > 0 {
            crate::history::ring_bytes(o.history, size).map_err(|reason| {
                Error::InvalidHistory {
                    name: name.to_owned(),
                    reason,
                }
            })?;
            if device.is_some() && !o.cpu_mirror {
                return Err(Error::InvalidHistory {
                    name: name.to_owned(),
                    reason: "a GPU stream keeps history in its CPU mirror: set cpu_mirror(true)"
                        .into(),
                });
            }
        }
        let notify = if o.notify { FLAG_NOTIFY } else { 0 };
        let (flags, device_index) = match device {
            None => (notify, -1),
            Some(dev) => {
                crate::gpu::check_gpu_dtype(name, o.dtype)?;
                #[cfg(not(feature = "cuda"))]
                {
                    let _ = dev;
                    return Err(Error::Unsupported {
                        name: name.to_owned(),
                        what: "this build has no CUDA support: enable the `cuda` feature".into(),
                    });
                }
                #[cfg(feature = "cuda")]
                {
                    crate::gpu::driver::check_device(name, dev)?;
                    let mirror = if o.cpu_mirror {
                        format::FLAG_CPU_MIRROR
                    } else {
                        0
                    };
                    (
                        notify | format::FLAG_GPU | format::FLAG_CUDA_IPC | mirror,
                        dev,
                    )
                }
            }
        };
        // A live stream's writer may hold the name's lock for its whole run: say the name is
        // taken now, not after waiting for that lock.
        crate::create::refuse_taken(name)?;
        let lock = LockFile::attach(&name::lock_path(name), name)?;
        let _held = match NameLock::take_within(&lock, name, wait) {
            // Held past the wait by a creator at work (a large or GPU build takes seconds),
            // or by the writer of a stream published meanwhile: the name is taken.
            Err(e @ Error::Timeout { .. }) => {
                crate::create::refuse_taken(name)?;
                return Err(if creation_at_work(name) {
                    Error::AlreadyExists {
                        name: name.to_owned(),
                        being_created: true,
                    }
                } else {
                    e
                });
            }
            held => held?,
        };
        let built = crate::create::build(o, size, flags, device_index);
        if built.is_err() && !crate::segment::stream_parts_exist(&name::segment_id(name)) {
            // No segment has this name (the build failed and left none): the lock file
            // attach made would only leak. One that is there (a stream, an abandoned
            // creation, another name's stream whose id collides) keeps the lock file.
            let _ = std::fs::remove_file(name::lock_path(name));
        }
        let (decoded, header, meta, payload, gpu, history) = built?;
        let payload = if decoded.cpu_mirror() {
            Some(payload)
        } else {
            None
        };
        let mut s = Stream::assemble(
            decoded,
            header,
            meta,
            payload,
            lock.clone(),
            false,
            true,
            o.auto_unlink,
        );
        s.gpu = gpu;
        s.history = history;
        crate::gpu::prepare(&s);
        Ok(s)
    }

    /// Opens an existing stream for reading and writing.
    pub fn open(name: &str) -> Result<Stream> {
        Stream::open_with(name, false, DEFAULT_TIMEOUT)
    }

    /// [`Stream::open`], waiting at most `wait` (instead of 5 s) for a creation at work under
    /// the name's lock (a `_meta` still empty or without its header while another process
    /// holds the lock): past it, [`Error::NotFound`] with `unfinished` set.
    pub fn open_within(name: &str, wait: Duration) -> Result<Stream> {
        Stream::open_with(name, false, wait)
    }

    /// Opens an existing stream for reading only: writes and locking return [`Error::ReadOnly`].
    pub fn open_readonly(name: &str) -> Result<Stream> {
        Stream::open_with(name, true, DEFAULT_TIMEOUT)
    }

    fn open_with(name: &str, readonly: bool, wait: Duration) -> Result<Stream> {
        check_name(name)?;
        let start = Instant::now();
        // The retry of a missing payload inside the caller's wait (a header left without its
        // payload took 50 ms of `open_within(name, 0)`), 2 ms at least: a creator between
        // its renames, which follow each other, or a recreation racing us finishes in that.
        let deadline = start + DECODE_RETRY.min(wait).max(Duration::from_millis(2));
        let until = wait_until(start, wait);
        let (meta, decoded, payload, history) = loop {
            let (meta, decoded) = open_meta(name, until.saturating_duration_since(Instant::now()))?;
            #[cfg(test)]
            tests::between_opens();
            let parts = open_payload(name, &decoded, readonly).and_then(|payload| {
                #[cfg(test)]
                tests::before_ring();
                // A ring keeps copies of the host payload: a stream without one (a GPU stream
                // without a CPU mirror, which `create` gives no history) attaches none, whatever
                // segment was planted under its name.
                if payload.is_none() {
                    return Ok((payload, None));
                }
                let ring = crate::history::Ring::attach(
                    name,
                    decoded.size as usize,
                    decoded.instance_id,
                    !readonly,
                )?;
                Ok((payload, ring))
            });
            match parts {
                // `_meta` still linked after the payload and ring were opened: they are this
                // header's (a new generation's need the name, which the header held; a ring
                // is published before its payload and unlinked after its `_meta`).
                Ok((payload, ring)) if !meta.is_unlinked() => {
                    break (meta, decoded, payload, ring);
                }
                // The generation was unlinked (perhaps recreated) between the opens: the
                // payload may be the next one's, under this header's seqlock, and the ring
                // gone or the next one's (ignored: no history).
                Ok(_) if Instant::now() < deadline => {}
                Ok(_) => return Err(not_found(name)),
                // A creator between publishing `_meta` and the payload, or a generation
                // unlinked (and perhaps recreated) under us: look again for a moment.
                Err(Error::NotFound { .. } | Error::PayloadTooSmall { .. })
                    if Instant::now() < deadline =>
                {
                    #[cfg(test)]
                    tests::PAYLOAD_RETRIES.with(|n| n.set(n.get() + 1));
                    std::thread::sleep(Duration::from_millis(1));
                }
                // Still a header without its payload: a creation under way or one whose
                // creator died, which `create` calls existing and `list` shows, so say so.
                Err(
                    e @ Error::NotFound {
                        unfinished: true, ..
                    },
                ) if !meta.is_unlinked() => return Err(e),
                Err(Error::NotFound { .. }) => return Err(not_found(name)),
                Err(e) => return Err(e),
            }
        };
        // SAFETY: `meta` is a writable mapping of at least META_BYTES (checked by decode)
        // kept alive next to `header` in the Stream.
        let header = unsafe { MappedHeader::new(&meta) };
        let lock = LockFile::attach(&name::lock_path(name), name)?;
        let gpu = crate::gpu::attach_at_open(name, &decoded);
        let mut s = Stream::assemble(decoded, header, meta, payload, lock, readonly, false, false);
        s.gpu = gpu;
        s.history = history;
        crate::gpu::prepare(&s);
        Ok(s)
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        h: Header,
        header: MappedHeader,
        meta: Segment,
        payload: Option<Segment>,
        lock: Arc<LockFile>,
        readonly: bool,
        owner: bool,
        auto_unlink: bool,
    ) -> Stream {
        let reads = ReadState::default();
        let (count, pending_even) = crate::seqlock::count_at_open(&header);
        reads.last_count.store(count, Ordering::Relaxed);
        reads.pending_even.store(pending_even, Ordering::Relaxed);
        let len = h.shape.iter().product();
        Stream {
            size: h.size as usize,
            len,
            dtype: h.dtype,
            shape: h.shape,
            flags: h.flags,
            device_index: h.device_index,
            creator_pid: h.creator_pid,
            instance_id: h.instance_id,
            name: h.name,
            readonly,
            owner,
            auto_unlink,
            forks: sys::forks(),
            header,
            meta,
            payload,
            gpu: crate::gpu::GpuLink::None,
            history: None,
            lock,
            reads,
            closed: AtomicBool::new(false),
            strategy: AtomicU8::new(WaitStrategy::default() as u8),
            timeout_ns: AtomicU64::new(DEFAULT_TIMEOUT.as_nanos() as u64),
            generation_checked_ms: AtomicU64::new(sys::coarse_now_ms()),
        }
    }

    /// Closes the handle: later reads, writes, locks and waits return [`Error::Closed`]
    /// ([`Stream::unlink`] still removes the stream by its name), and readers of this
    /// handle blocked in a wait wake up and return [`Error::Closed`], as do its writes and
    /// locks waiting for another holder of the write lock (within about a millisecond; not
    /// a held guard's write moving to a replaced lock file). (Other processes' waiters
    /// are woken too; they re-check and go back to waiting.) Idempotent.
    pub fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            notify::wake_all(&self.header);
        }
    }

    /// Whether [`Stream::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Unlinks this stream. Fails with [`Error::Stale`] if the name now belongs to a newer
    /// stream (this handle's generation is gone already), and with [`Error::ReadOnly`]
    /// through a read-only handle (as pyshmem's `unlink` does; [`crate::unlink`] removes a
    /// stream by name).
    pub fn unlink(&self) -> Result<()> {
        if self.readonly {
            return Err(Error::ReadOnly {
                name: self.name.clone(),
                op: "unlink it (or use shmstream::unlink(name))",
            });
        }
        catalog::unlink_generation(&self.name, Some(self.instance_id))
    }

    #[inline]
    pub(crate) fn ensure_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(Error::Closed {
                name: self.name.clone(),
            });
        }
        Ok(())
    }

    pub(crate) fn ensure_writable(&self, op: &'static str) -> Result<()> {
        self.ensure_open()?;
        if self.readonly {
            return Err(Error::ReadOnly {
                name: self.name.clone(),
                op,
            });
        }
        Ok(())
    }

    pub(crate) fn ensure_dtype<T: Element>(&self) -> Result<()> {
        if T::DTYPE != self.dtype {
            return Err(Error::DtypeMismatch {
                name: self.name.clone(),
                expected: self.dtype,
                given: T::DTYPE,
            });
        }
        Ok(())
    }

    #[inline]
    pub(crate) fn ensure_len(&self, given: usize) -> Result<()> {
        if given != self.len {
            return Err(self.len_mismatch(given));
        }
        Ok(())
    }

    #[cold]
    fn len_mismatch(&self, given: usize) -> Error {
        Error::SliceLength {
            name: self.name.clone(),
            shape: self.shape.clone(),
            expected_len: self.len,
            given_len: given,
        }
    }

    pub(crate) fn ensure_byte_len(&self, given: usize) -> Result<()> {
        if given == self.size {
            return Ok(());
        }
        Err(Error::BufferSize {
            name: self.name.clone(),
            expected_bytes: self.size,
            given_bytes: given,
        })
    }

    /// The host payload, or the error explaining why this handle has none, whose remedy
    /// suits `access` (a read, a write or a live view).
    #[inline]
    pub(crate) fn host_payload(&self, access: Access) -> Result<&Segment> {
        match &self.payload {
            Some(p) => Ok(p),
            None => Err(self.no_host_payload(access)),
        }
    }

    #[cold]
    fn no_host_payload(&self, access: Access) -> Error {
        let (verb, with) = match access {
            Access::Read => ("read", "read_device_to_host / read_device_into"),
            Access::Write => ("write", "write_device_from_host / write_device"),
            Access::View => ("view", "WriteGuard::device_view"),
        };
        // No shmstream reads pyshmem's device payload (its torch IPC pickle), on any host.
        let pyshmem_gpu = self.flags & format::FLAG_CUDA_IPC == 0;
        Error::Unsupported {
            name: self.name.clone(),
            what: match self.gpu.detached_reason() {
                Some(_) if pyshmem_gpu => format!(
                    "this GPU stream was created by pyshmem without a CPU mirror, and shmstream cannot read pyshmem's device payload (torch IPC pickle) on any host: {verb} it with pyshmem on the GPU host, or have its producer create it with cpu_mirror=True"
                ),
                Some(r) => format!(
                    "this GPU stream has no CPU mirror and this handle cannot reach the device ({r}): {verb} it where the GPU and its producer are, with {with}, or recreate it with cpu_mirror(true)"
                ),
                None => format!(
                    "this GPU stream has no CPU mirror: {verb} it with {with}, or recreate it with cpu_mirror(true)"
                ),
            },
        }
    }

    /// Reports [`Error::Stale`] once this handle's stream was unlinked (by us or by pyshmem,
    /// whose unlink leaves the old header looking valid), its `_meta` or its payload. An
    /// `fstat` of each at most every [`GENERATION_CHECK_MS`], timed on the coarse monotonic
    /// clock (a few ns per call); `now` skips the rate limit (slow paths: an invalid
    /// generation, a timed-out wait). Sticky: once a handle learns its stream is gone, it
    /// stays stale.
    #[inline]
    pub(crate) fn check_generation(&self, now: bool) -> Result<()> {
        let last = self.generation_checked_ms.load(Ordering::Relaxed);
        if !now
            && last != GENERATION_STALE
            && sys::coarse_now_ms().wrapping_sub(last) < GENERATION_CHECK_MS
        {
            return Ok(());
        }
        self.check_generation_now(last)
    }

    /// [`Stream::check_generation`] past its rate limit: looks at the file.
    #[cold]
    fn check_generation_now(&self, last: u64) -> Result<()> {
        #[cfg(test)]
        GENERATION_CHECKS.with(|c| c.set(c.get() + 1));
        let t = sys::coarse_now_ms();
        // The payload too: an unlinker stopped between the payload and `_meta` (killed, or
        // its `_meta` unlink failed) leaves `_meta` linked beside a payload nobody can open.
        if last == GENERATION_STALE
            || self.meta.is_unlinked()
            || self.payload.as_ref().is_some_and(Segment::is_unlinked)
        {
            self.generation_checked_ms
                .store(GENERATION_STALE, Ordering::Relaxed);
            return Err(Error::Stale {
                name: self.name.clone(),
            });
        }
        self.generation_checked_ms.store(t, Ordering::Relaxed);
        Ok(())
    }

    /// The error for an invalid generation: stale if the stream was unlinked, else inconsistent.
    pub(crate) fn invalid_error(&self) -> Error {
        match self.check_generation(true) {
            Err(stale) => stale,
            Ok(()) => Error::Inconsistent {
                name: self.name.clone(),
                reason: "the last write was aborted or its writer died",
            },
        }
    }
}

/// What a caller of [`Stream::host_payload`] does with it: the remedy its error gives.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Access {
    /// A copy out of the payload.
    Read,
    /// A new frame written into it.
    Write,
    /// A live view borrowed under the lock ([`crate::WriteGuard::live`]).
    View,
}

impl Drop for Stream {
    fn drop(&mut self) {
        // Closed without `close`'s wake: `&mut self` means no thread waits on this handle
        // (an async wait holds an `Arc` of it while it waits), and a wake here would only
        // rouse every other process's waiters for nothing.
        self.closed.store(true, Ordering::Release);
        if self.owner && self.auto_unlink && self.forks == sys::forks() {
            crate::gpu::settle(self);
            // Never panic in drop; a stream replaced meanwhile is left alone (Stale).
            let _ = catalog::unlink_generation(&self.name, Some(self.instance_id));
        }
    }
}

/// Maps the declared frame of a stream's host payload, if it has one. A missing payload is
/// an `unfinished` `NotFound` (the header exists; the caller says otherwise if it was unlinked).
fn open_payload(name: &str, decoded: &Header, readonly: bool) -> Result<Option<Segment>> {
    if !decoded.cpu_mirror() {
        return Ok(None);
    }
    let too_small = |actual, unwritten| Error::PayloadTooSmall {
        name: name.to_owned(),
        declared: decoded.size,
        actual,
        unwritten,
    };
    // Map only the declared frame (decode bounded it by isize::MAX), and only if written.
    let seg = Segment::open_written(&name::segment_id(name), !readonly, decoded.size as usize)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                name: name.to_owned(),
                known: Vec::new(),
                unfinished: true,
            },
            std::io::ErrorKind::InvalidData => match crate::segment::unwritten(&e) {
                Some(u) => too_small(u.stored, true),
                None => too_small(0, false),
            },
            _ => Error::io(name, "opening the payload segment", e),
        })?;
    if (seg.len() as u64) < decoded.size {
        return Err(too_small(seg.len() as u64, false));
    }
    Ok(Some(seg))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::RefCell;

    use super::*;

    /// A test hook: a closure a thread sets ([`set`]) for its next pass through a point of
    /// the library, where [`run`] takes and runs it once.
    pub(crate) type Hook = RefCell<Option<Box<dyn FnOnce()>>>;

    thread_local! {
        /// Run once between an open's `_meta` and its payload (by this thread's next open).
        static BETWEEN_OPENS: Hook = RefCell::new(None);
        /// Run once between an open's payload and its history ring (by this thread's next
        /// open that finds a payload).
        static BEFORE_RING: Hook = RefCell::new(None);
        /// How many times this thread's opens looked again for a missing or short payload.
        pub(super) static PAYLOAD_RETRIES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    /// Runs `hook`, if this thread set it, once.
    pub(crate) fn run(hook: &'static std::thread::LocalKey<Hook>) {
        if let Some(f) = hook.with(|h| h.borrow_mut().take()) {
            f();
        }
    }

    /// Sets `hook` to `f` for this thread's next [`run`] of it.
    pub(crate) fn set(hook: &'static std::thread::LocalKey<Hook>, f: impl FnOnce() + 'static) {
        hook.with(|h| *h.borrow_mut() = Some(Box::new(f)));
    }

    pub(super) fn between_opens() {
        run(&BETWEEN_OPENS);
    }

    pub(super) fn before_ring() {
        run(&BEFORE_RING);
    }

    /// A stream with a history ring of `depth` frames of 4 bytes.
    fn with_history(name: &str, depth: usize) -> Stream {
        StreamOptions::new(name)
            .shape(&[4])
            .dtype(Dtype::U8)
            .history(depth)
            .create()
            .unwrap()
    }

    /// An unlink (and a recreate, with a new ring) landing between an open's payload and its
    /// ring: the open looks again, and returns the new generation with its history, or
    /// `NotFound`, never a handle without the history its stream keeps.
    #[test]
    fn an_open_racing_an_unlink_before_its_ring_never_drops_the_history() {
        for recreate in [true, false] {
            let name = format!("open-ring-race-{recreate}-{}", sys::pid());
            let _ = catalog::unlink(&name);
            let first = with_history(&name, 4);
            let second: std::rc::Rc<RefCell<Option<Stream>>> = Default::default();
            let made = second.clone();
            let recreated = name.clone();
            set(&BEFORE_RING, move || {
                catalog::unlink(&recreated).unwrap();
                if recreate {
                    *made.borrow_mut() = Some(with_history(&recreated, 8));
                }
            });
            let opened = Stream::open(&name);
            match second.borrow_mut().take() {
                Some(second) => {
                    let opened = opened.unwrap();
                    assert_eq!(opened.history_depth(), 8, "the new generation's ring");
                    assert_eq!(opened.instance_id, second.instance_id);
                    assert!(opened.cursor().is_ok());
                    second.unlink().unwrap();
                }
                None => assert!(
                    matches!(opened, Err(Error::NotFound { .. })),
                    "{:?}",
                    opened.map(|s| s.history_depth())
                ),
            }
            drop(first);
        }
    }

    #[test]
    fn an_open_racing_an_unlink_and_recreate_never_pairs_two_generations() {
        let name = format!("open-race-{}", sys::pid());
        let _ = catalog::unlink(&name);
        let first = Stream::create(&name, &[4], Dtype::U8).unwrap();
        let second: std::rc::Rc<RefCell<Option<Stream>>> = Default::default();
        let made = second.clone();
        let recreated = name.clone();
        set(&BETWEEN_OPENS, move || {
            catalog::unlink(&recreated).unwrap();
            let s = Stream::create(&recreated, &[4], Dtype::U8).unwrap();
            s.write_slice(&[9u8; 4]).unwrap();
            *made.borrow_mut() = Some(s);
        });
        let opened = Stream::open(&name).unwrap();
        let second = second.borrow_mut().take().unwrap();
        assert_ne!(first.instance_id, second.instance_id);
        assert_eq!(
            opened.instance_id, second.instance_id,
            "header of the old generation"
        );
        let mut out = [0u8; 4];
        let info = opened.read_publication_into(&mut out).unwrap();
        assert_eq!((out, info.count), ([9u8; 4], 1));
        drop(first);
        second.unlink().unwrap();
    }

    /// Review item: `open_within` looked for a missing payload for 50 ms whatever its wait,
    /// so a header left without its payload (a creator killed between its renames) took
    /// 50 ms of `open_within(name, 1 ms)`. It looks for 2 ms at most now: a few retries.
    #[test]
    fn open_within_looks_for_a_missing_payload_only_within_its_wait() {
        let stream = format!("open-within-nopayload-{}", sys::pid());
        let _ = catalog::unlink(&stream);
        drop(Stream::create(&stream, &[4], Dtype::U8).unwrap());
        std::fs::remove_file(crate::segment::path(&name::segment_id(&stream))).unwrap();
        PAYLOAD_RETRIES.with(|n| n.set(0));
        let got = Stream::open_within(&stream, Duration::from_millis(1)).map(drop);
        let retries = PAYLOAD_RETRIES.with(std::cell::Cell::get);
        let _ = catalog::unlink(&stream);
        let meta = crate::segment::path(&name::meta_id(&stream));
        for left in [meta, name::lock_path(&stream)] {
            let _ = std::fs::remove_file(left);
        }
        assert!(
            matches!(
                got,
                Err(Error::NotFound {
                    unfinished: true,
                    ..
                })
            ),
            "{got:?}"
        );
        // Each retry sleeps 1 ms or more, inside 2 ms: two at most (some 50 before).
        assert!(retries <= 2, "retried {retries} times");
    }

    /// A payload missing at an open's first look (a creator between publishing `_meta` and
    /// its payload) is looked for again within the wait, and the stream opened once it is
    /// there.
    #[test]
    fn an_open_looks_again_for_a_payload_published_after_its_header() {
        let stream = format!("open-late-payload-{}", sys::pid());
        let _ = catalog::unlink(&stream);
        let made = Stream::create(&stream, &[4], Dtype::U8).unwrap();
        made.write_slice(&[5u8; 4]).unwrap();
        let payload = crate::segment::path(&name::segment_id(&stream));
        let aside = payload.with_extension("aside");
        let (from, to) = (payload.clone(), aside.clone());
        set(&BETWEEN_OPENS, move || {
            std::fs::rename(&from, &to).unwrap();
            // The creator publishes it before the open's next look.
            set(&BETWEEN_OPENS, move || std::fs::rename(to, from).unwrap());
        });
        PAYLOAD_RETRIES.with(|n| n.set(0));
        let opened = Stream::open_within(&stream, Duration::from_secs(1));
        let retries = PAYLOAD_RETRIES.with(std::cell::Cell::get);
        BETWEEN_OPENS.with(|h| h.borrow_mut().take());
        if aside.exists() {
            std::fs::rename(&aside, &payload).unwrap();
        }
        let opened = opened.unwrap();
        assert_eq!(retries, 1);
        assert_eq!(opened.read::<u8>().unwrap().as_slice().unwrap(), &[5; 4]);
        drop(opened);
        made.unlink().unwrap();
    }

    /// A handle whose `_meta` alone was removed (by hand; a GPU stream without a CPU
    /// mirror has nothing else), or whose payload alone was (an unlinker stopped between
    /// the two), is stale: each object is looked at.
    #[test]
    fn a_handle_whose_meta_or_payload_alone_was_removed_is_stale() {
        for removed in [name::meta_id, name::segment_id] {
            let stream = format!("stale-one-object-{}", sys::pid());
            let _ = catalog::unlink(&stream);
            let s = Stream::create(&stream, &[4], Dtype::U8).unwrap();
            assert!(s.check_generation(true).is_ok());
            std::fs::remove_file(crate::segment::path(&removed(&stream))).unwrap();
            let got = s.check_generation(true);
            drop(s);
            let _ = catalog::unlink(&stream);
            for id in [name::meta_id(&stream), name::segment_id(&stream)] {
                let _ = std::fs::remove_file(crate::segment::path(&id));
            }
            let _ = std::fs::remove_file(name::lock_path(&stream));
            assert!(matches!(got, Err(Error::Stale { .. })), "{got:?}");
        }
    }

    /// Giving back an abandoned wait's report undoes only the mark that wait made: a report
    /// of another generation made meanwhile by another wait on the handle stays (else the
    /// handle's next read reported that generation a second time).
    #[test]
    fn giving_back_a_report_leaves_one_made_meanwhile() {
        let (before, g1, g2) = (0, -3, -5);
        let reads = ReadState::default();
        reads.reported_invalid.store(g2, Ordering::Relaxed);
        reads.give_back_report(before, g1);
        assert_eq!(reads.reported_invalid.load(Ordering::Relaxed), g2);
        reads.reported_invalid.store(g1, Ordering::Relaxed);
        reads.give_back_report(before, g1);
        assert_eq!(reads.reported_invalid.load(Ordering::Relaxed), before);
    }

    /// Dropping a handle wakes nobody (every waiter of the stream, in every process, would
    /// wake for nothing); `close` wakes the handle's own waiters.
    #[test]
    fn a_dropped_handle_wakes_no_waiter_and_a_closed_one_does() {
        let name = format!("stream-drop-wake-{}", std::process::id());
        let w = crate::notify::tests::fresh_notify_stream(&name, &[1], crate::Dtype::U8);
        let wakes = || crate::notify::WAKES.with(std::cell::Cell::get);
        let before = wakes();
        drop(Stream::open_readonly(&name).unwrap());
        assert_eq!(wakes(), before, "dropping a handle woke the stream");
        let r = Stream::open_readonly(&name).unwrap();
        r.close();
        assert_eq!(wakes(), before + 1, "close did not wake the stream");
        drop(r);
        drop(w);
        crate::unlink(&name).unwrap();
    }
}
