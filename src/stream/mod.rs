//! [`Stream`]: the handle users hold. Creation, opening and closing live here; what a
//! handle tells about its stream is in `metadata.rs`;
//! writing and reading are in `write.rs` and `read.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::dtype::{Dtype, Element};
use crate::error::{Error, Result};
use crate::format::{self, FLAG_NOTIFY, FormatError, Header, META_BYTES};
use crate::header::MappedHeader;
use crate::lock::LockFile;
use crate::notify::{self, WaitStrategy};
use crate::segment::Segment;
use crate::{catalog, name, sys};

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

/// Settings for creating a stream. Start with [`StreamOptions::new`].
///
/// ```
/// use shmstream::{Dtype, StreamOptions};
/// let name = format!("doc-options-{}", std::process::id());
/// let s = StreamOptions::new(&name).shape(&[2, 3]).dtype(Dtype::F64).notify(true).auto_unlink(true).create()?;
/// assert_eq!(s.shape(), &[2, 3]);
/// # Ok::<(), shmstream::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct StreamOptions {
    pub(crate) name: String,
    pub(crate) shape: Vec<usize>,
    pub(crate) dtype: Dtype,
    pub(crate) notify: bool,
    pub(crate) auto_unlink: bool,
    pub(crate) gpu_device: Option<i32>,
    pub(crate) cpu_mirror: bool,
    pub(crate) history: usize,
}

impl StreamOptions {
    /// Options for a stream called `name`: shape `[1]`, `float32`, no notify.
    pub fn new(name: &str) -> StreamOptions {
        StreamOptions {
            name: name.to_owned(),
            shape: vec![1],
            dtype: Dtype::F32,
            notify: false,
            auto_unlink: false,
            gpu_device: None,
            cpu_mirror: false,
            history: 0,
        }
    }
    /// The array shape (1 to 19 positive dimensions), C order.
    pub fn shape(&mut self, shape: &[usize]) -> &mut Self {
        self.shape = shape.to_vec();
        self
    }
    /// The element type.
    pub fn dtype(&mut self, dtype: Dtype) -> &mut Self {
        self.dtype = dtype;
        self
    }
    /// Writers wake blocked readers through a futex (readers park instead of polling).
    pub fn notify(&mut self, notify: bool) -> &mut Self {
        self.notify = notify;
        self
    }
    /// Unlink the stream when the creating handle is dropped (in the creating process: a
    /// child forked without exec that drops its copy leaves the stream). The drop takes the
    /// name's lock as [`Stream::unlink`] does, so it waits up to 5 s while another process
    /// holds it; a drop that cannot unlink then (or out of descriptors) leaves the stream,
    /// silently (drops cannot fail), for `unlink` or `purge` to remove. A GPU stream's drop
    /// first waits for its queued GPU work (up to the handle's default timeout, then up to
    /// 10 s for its CUDA stream). So do not drop the last handle on an async executor's
    /// thread; call [`Stream::unlink`] where its error can be seen.
    pub fn auto_unlink(&mut self, auto_unlink: bool) -> &mut Self {
        self.auto_unlink = auto_unlink;
        self
    }
    /// Puts the payload on a CUDA device: `"cuda:N"`, `"cudaN"` or `"N"` (see
    /// [`StreamOptions::gpu_device`]). An invalid name is reported by `create`.
    pub fn device(&mut self, device: &str) -> &mut Self {
        self.gpu_device = Some(crate::gpu::parse_device(&self.name, device).unwrap_or(i32::MIN));
        self
    }
    /// Puts the payload on CUDA device `ordinal` (one IPC-capable allocation shared with other
    /// processes; the dtype must be in [`crate::GPU_SUPPORTED_DTYPES`]). The creating process
    /// owns the allocation: see the producer lifetime contract in [`crate::gpu`].
    pub fn gpu_device(&mut self, ordinal: i32) -> &mut Self {
        self.gpu_device = Some(ordinal);
        self
    }
    /// GPU streams: also keep a host copy of the payload, current after every write, so
    /// CPU-only processes can read it (default false; costs a device-to-host copy per write).
    pub fn cpu_mirror(&mut self, cpu_mirror: bool) -> &mut Self {
        self.cpu_mirror = cpu_mirror;
        self
    }
    /// Also keep the last `frames` frames in a history ring (`1..=MAX_HISTORY`; 0, the
    /// default, keeps none), read in order by [`Stream::cursor`]. Every write through this
    /// library appends to it in the same publication; pyshmem still opens, reads and writes
    /// the stream (its writes are reported as gaps by cursors). Costs one more copy of the
    /// frame per write. GPU streams need a CPU mirror for it.
    pub fn history(&mut self, frames: usize) -> &mut Self {
        self.history = frames;
        self
    }
    /// Creates the stream; fails with [`Error::AlreadyExists`] if the name is taken (by a
    /// stream, or by another process's creation at work).
    pub fn create(&self) -> Result<Stream> {
        Stream::create_with(self, DEFAULT_TIMEOUT)
    }
    /// [`StreamOptions::create`], waiting at most `wait` (instead of 5 s) for the name's lock
    /// held by another process: past it, [`Error::AlreadyExists`] (`being_created`) for a
    /// creation at work, else [`Error::Timeout`].
    pub fn create_within(&self, wait: Duration) -> Result<Stream> {
        Stream::create_with(self, wait)
    }
}

/// A stream's configuration, as plain data (serde): [`Stream::to_config`] and
/// [`Stream::create_from_config`] round-trip it. Same keys as pyshmem's `to_config()`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamConfig {
    /// Name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Element type: its numpy name in serialized form, and only that (`"uint8"`; `"u8"`,
    /// which numpy reads as `uint64`, is refused: [`Dtype::from_numpy_name_only`]).
    #[serde(
        default = "default_dtype",
        deserialize_with = "crate::dtype::deserialize_numpy_name"
    )]
    pub dtype: Dtype,
    /// `"cuda:N"` for GPU streams.
    #[serde(default)]
    pub gpu_device: Option<String>,
    /// Whether a GPU stream keeps a host mirror (always true for CPU streams).
    #[serde(default)]
    pub cpu_mirror: Option<bool>,
    /// Futex wake-ups.
    #[serde(default)]
    pub notify: bool,
    /// Frames of history kept (0 = none; the key is left out then, as pyshmem has none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub history: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn default_dtype() -> Dtype {
    Dtype::F32
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

/// Validates a shape for a stream and returns its payload bytes.
pub(crate) fn check_shape(name: &str, shape: &[usize], dtype: Dtype) -> Result<usize> {
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
            o.gpu_device = Some(crate::gpu::parse_device(&config.name, dev)?);
            o.cpu_mirror = config.cpu_mirror.unwrap_or(false);
        }
        o.create()
    }

    fn create_with(o: &StreamOptions, wait: Duration) -> Result<Stream> {
        let name = o.name.as_str();
        check_name(name)?;
        let size = check_shape(name, &o.shape, o.dtype)?;
        if o.history > 0 {
            crate::history::ring_bytes(o.history, size).map_err(|reason| {
                Error::InvalidHistory {
                    name: name.to_owned(),
                    reason,
                }
            })?;
            if o.gpu_device.is_some() && !o.cpu_mirror {
                return Err(Error::InvalidHistory {
                    name: name.to_owned(),
                    reason: "a GPU stream keeps history in its CPU mirror: set cpu_mirror(true)"
                        .into(),
                });
            }
        }
        let notify = if o.notify { FLAG_NOTIFY } else { 0 };
        let (flags, device_index) = match o.gpu_device {
            None => (notify, -1),
            Some(dev) => {
                if dev < 0 {
                    return Err(Error::Unsupported {
                        name: name.to_owned(),
                        what: "invalid GPU device: use \"cuda:N\" or a non-negative ordinal".into(),
                    });
                }
                crate::gpu::check_gpu_dtype(name, o.dtype)?;
                #[cfg(not(feature = "cuda"))]
                return Err(Error::Unsupported {
                    name: name.to_owned(),
                    what: "this build has no CUDA support: enable the `cuda` feature".into(),
                });
                #[cfg(feature = "cuda")]
                {
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

pub(crate) fn not_found(name: &str) -> Error {
    Error::NotFound {
        name: name.to_owned(),
        known: known_streams(name),
        unfinished: false,
    }
}

/// The streams [`not_found`] names as a hint (`except` left out), sorted: each `_meta` of
/// ours that [`hinted`] names, those that may settle looked at again after one pause for all
/// ([`catalog::settled`]). Reads only: no mapping, no lock taken, no lock file made, no
/// stamp cleared. It runs in waits' polling loops and under other names' locks, so it must
/// cost little and change nothing of other streams (`list` clears such stamps).
fn known_streams(except: &str) -> Vec<String> {
    use std::os::unix::fs::FileExt;
    let Ok(dir) = std::fs::read_dir(sys::SHM_DIR) else {
        return Vec::new();
    };
    let ids: Vec<String> = dir
        .filter_map(|e| {
            let file = e.ok()?.file_name();
            let id = file.to_str()?.strip_suffix("_meta")?;
            name::looks_like_segment_id(id).then(|| id.to_owned())
        })
        .collect();
    // Each look reads the `_meta` afresh: none is held open across the pause.
    let look = |id: &String, last: bool| {
        let read = || {
            let meta_id = format!("{id}_meta");
            let file = sys::shm_open(&meta_id, libc::O_RDONLY | crate::trust::OPEN_FLAGS).ok()?;
            crate::trust::check_file(&file, &crate::segment::path(&meta_id)).ok()?;
            let mut b = vec![0u8; META_BYTES];
            file.read_exact_at(&mut b, 0).ok().map(|()| b)
        };
        Ok::<_, std::convert::Infallible>(hinted(id, last, read))
    };
    let Ok(looked) = catalog::settled(&ids, look);
    let mut known: Vec<String> = looked
        .into_iter()
        .flatten()
        .filter(|k| k != except)
        .collect();
    known.sort();
    known
}

/// One look of the not-found hint at the `_meta` under segment id `id`, whose header `read`
/// reads: its stored name, when that hashes back to `id` and the header is valid, or valid
/// but for lock stamps (a dead writer's, which `open` clears, or a live one's between its
/// two stores). [`catalog::Look::Again`] when it fails with an error that may settle (a
/// pyshmem creation in progress) and this is not the `last` look.
fn hinted(
    id: &str,
    last: bool,
    read: impl FnOnce() -> Option<Vec<u8>>,
) -> catalog::Look<Option<String>> {
    use catalog::Look;
    let Some(bytes) = read() else {
        return Look::Final(None);
    };
    let Some(stored) = format::stored_name(&bytes).filter(|s| name::segment_id(s) == id) else {
        return Look::Final(None);
    };
    Look::Final(match format::decode(&bytes, Some(&stored)) {
        Ok(h) => Some(h.name),
        Err(rule) if format::valid_but_for_lock_stamps(&bytes, Some(&stored), &rule) => {
            Some(stored)
        }
        Err(rule) if !last && catalog::may_settle(&rule) => return Look::Again,
        Err(_) => None,
    })
}

/// `NotFound` for a name without `_meta`: `unfinished` when its payload is there (a regular
/// file of ours), which a pyshmem creator makes before its `_meta` and leaves when it is
/// killed in between, or while a creator of ours is at work ([`creation_at_work`]).
/// `create` calls the name taken, so "create it first" would mislead.
fn meta_not_found(name: &str) -> Error {
    let payload = crate::segment::path(&name::segment_id(name));
    let ours = std::fs::symlink_metadata(&payload)
        .is_ok_and(|m| crate::trust::check_metadata(&m, &payload).is_ok());
    match ours || creation_at_work(name) {
        true => Error::NotFound {
            name: name.to_owned(),
            known: Vec::new(),
            unfinished: true,
        },
        false => not_found(name),
    }
}

/// Whether a running process (this one included) is building `name`'s segments under their
/// private ids (`<id>.creating-<pid>`, regular files of ours): a creation at work, which holds
/// the name's lock for its whole build (seconds for a large or GPU stream) and publishes
/// nothing before its end. A dead creator's are abandoned ([`crate::purge`] removes them).
/// Lists `/dev/shm` where the name has a lock file: for paths that already failed or waited.
fn creation_at_work(name: &str) -> bool {
    // A creator makes the name's lock file before it builds: without one, no listing (an
    // open polling for a stream not made yet pays a `stat`, not a `readdir`).
    if std::fs::symlink_metadata(name::lock_path(name)).is_err() {
        return false;
    }
    let id = name::segment_id(name);
    let Ok(dir) = std::fs::read_dir(sys::SHM_DIR) else {
        return false;
    };
    dir.filter_map(|e| e.ok()).any(|e| {
        let path = e.path();
        e.file_name()
            .to_str()
            .and_then(crate::segment::abandoned_creation)
            .is_some_and(|(of, pid)| of == id && sys::is_self_or_running(pid))
            && std::fs::symlink_metadata(&path)
                .is_ok_and(|m| crate::trust::check_metadata(&m, &path).is_ok())
    })
}

/// Opens and validates a `_meta` segment, retrying a torn-looking header for a moment.
/// A `_meta` shorter than a header (pyshmem sizes it after creating it) is reopened for
/// [`DECODE_RETRY`]; still short then, it is a creation in progress while somebody else
/// holds the name's lock (pyshmem 1.4.0's `create` makes and sizes it under the lock, and
/// its creator may be descheduled in between): it is waited for as
/// [`wait_for_creation`] does (row 19). Short with the lock free (a creator killed before
/// sizing it), it is corrupt. A header still invalid after [`DECODE_RETRY`] in a way that
/// pyshmem's `create`, writing it in place under the lock, leaves it for a moment
/// ([`format::may_be_mid_creation`]) is waited for the same way ([`decode_after_creation`]);
/// one that breaks any other rule is corrupt at once. Short, or without its magic or name,
/// beside a lock this process cannot take (a refused lock directory), it is that lock's
/// error: whether a creation holds it is unknown. All waiting for a creation (the retry of
/// a short `_meta` included) ends `wait` after the call, as the waits above end theirs.
pub(crate) fn open_meta(name: &str, wait: Duration) -> Result<(Segment, Header)> {
    let start = Instant::now();
    let deadline = start + DECODE_RETRY.min(wait);
    let until = wait_until(start, wait);
    let id = name::meta_id(name);
    let open = || Segment::open_prefix(&id, true, META_BYTES);
    // Empty (`InvalidData`), or shorter than a header (but a whole pyshmem v2 one).
    let short = |r: &std::io::Result<Segment>| match r {
        Ok(m) => m.len() < META_BYTES && !format::is_legacy_v2(&m.snapshot(META_BYTES)),
        Err(e) => e.kind() == std::io::ErrorKind::InvalidData,
    };
    // A `_meta` removed under a creation we waited for (it failed) is looked for again: a
    // new generation may have taken the name since.
    'look: loop {
        let mut opened = loop {
            let r = open();
            if !short(&r) || Instant::now() >= deadline {
                break r;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        if short(&opened) {
            opened = match wait_for_creation(
                name,
                until,
                || {
                    let r = open();
                    (!short(&r)).then_some(r)
                },
                open,
            ) {
                Waited::Saw(r) => r,
                // Short as a creation leaves it: whether one is under way is unknown.
                Waited::Unknown(e) => return Err(e),
                Waited::TimedOut => return Err(creation_unfinished(name)),
            };
        }
        let meta = opened.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => meta_not_found(name),
            std::io::ErrorKind::InvalidData => Error::CorruptHeader {
                name: name.to_owned(),
                rule: FormatError::TooShort(0),
            },
            _ => Error::io(name, "opening the metadata segment", e),
        })?;
        // A dead writer's stamps, in a header valid but for them, cleared where nobody holds
        // the lock: a look-alike that breaks another rule too is left byte for byte, and no
        // lock file is made for it.
        let stamps_of_a_dead_writer = |rule: &FormatError| -> Result<bool> {
            Ok(
                format::valid_but_for_lock_stamps(&meta.snapshot(META_BYTES), Some(name), rule)
                    && clear_dead_lock_stamps(&meta, name)?,
            )
        };
        // The 50 ms retry inside what is left of the caller's wait (a zeroed `_meta`,
        // pyshmem's longest creation step, took 50 ms of a 5 ms `stat_within`), 2 ms at
        // least: a live writer between its two lock stamps is not called corrupt at once.
        let left = until.saturating_duration_since(Instant::now());
        let retry = DECODE_RETRY.min(left).max(Duration::from_millis(2));
        let h = match decode_retrying_for(&meta, Some(name), retry) {
            // Stamps cleared: decoded again within the same retry as the first look.
            Err(rule) if stamps_of_a_dead_writer(&rule)? => {
                decode_retrying_for(&meta, Some(name), retry)
            }
            // pyshmem writes its header in place under the name's lock, in steps that each
            // leave it invalid for a moment, and a live writer stores its two lock stamps one
            // after the other: only the rules those steps break are waited for (a header
            // corrupt for good is said at once, though a writer holds the lock).
            Err(e)
                if format::may_be_mid_creation(&e)
                    || format::valid_but_for_lock_stamps(
                        &meta.snapshot(META_BYTES),
                        Some(name),
                        &e,
                    ) =>
            {
                match decode_after_creation(&meta, name, e, until)? {
                    // Its holder died between its stamps while we waited: leftovers now.
                    Some(Err(rule)) if stamps_of_a_dead_writer(&rule)? => {
                        decode_retrying_for(&meta, Some(name), retry)
                    }
                    Some(decoded) => decoded,
                    None if Instant::now() < until => continue 'look,
                    None => return Err(not_found(name)),
                }
            }
            decoded => decoded,
        };
        let h = h.map_err(|rule| match rule {
            // Another stream's header, whose name has this name's ids: not corrupt, and not
            // this name's to unlink.
            FormatError::NameMismatch { ref found, .. } if collides_by_name(name, &rule) => {
                catalog::collision(name, found)
            }
            rule => Error::CorruptHeader {
                name: name.to_owned(),
                rule,
            },
        })?;
        return Ok((meta, h));
    }
}

/// `start + wait`; a wait too long for the clock (`Duration::MAX`, "forever") is 136 years.
fn wait_until(start: Instant, wait: Duration) -> Instant {
    crate::deadline::after(start, Some(wait))
        .unwrap_or_else(|| start + Duration::from_secs(u32::MAX.into()))
}

/// Whether `e` says the header under `name`'s ids is another stream's, whose name has the
/// same ids ([`catalog::collides`]): not corrupt, and no creation of `name`'s.
fn collides_by_name(name: &str, e: &FormatError) -> bool {
    matches!(e, FormatError::NameMismatch { found, .. } if catalog::collides(name, found))
}

/// pyshmem's `create` writes the header in place under the name's lock, in steps: it
/// zero-fills the payload before the magic, sets up CUDA before the name, and stores the
/// version, header size, instance id flag and CRC each after the word before it (the CRC
/// flag before the CRC). A header that breaks a rule those steps break
/// ([`format::may_be_mid_creation`]) while somebody else holds the lock may be a creation
/// in progress (seconds for a large or GPU stream): waits for it ([`wait_for_creation`],
/// until `until`), decoding it again every millisecond. A header still without its magic or
/// name then is not there yet (`NotFound`, row 19); one that breaks another rule is
/// returned as it last decoded (corrupt), as is one a creator that died left. A lock this
/// process cannot take is its error for a header without its magic or name (a creation
/// under way, for all it can tell), else the rule last broken. `None`: the creation failed
/// and removed this `_meta` (look at the name again).
fn decode_after_creation(
    meta: &Segment,
    name: &str,
    first: FormatError,
    until: Instant,
) -> Result<Option<std::result::Result<Header, FormatError>>> {
    let decode = || format::decode(&meta.snapshot(META_BYTES), Some(name));
    let last = std::cell::RefCell::new(first);
    let waited = wait_for_creation(
        name,
        until,
        || match decode() {
            Ok(h) => Some(Some(Ok(h))),
            Err(e) => {
                *last.borrow_mut() = e;
                None
            }
        },
        // A creation that failed removed what it made (pyshmem unlinks its segments when its
        // CUDA setup fails): the stream is not there, whatever our mapping shows.
        || (!meta.is_unlinked()).then(decode),
    );
    let last = last.into_inner();
    Ok(match waited {
        Waited::Saw(decoded) => decoded,
        Waited::TimedOut if matches!(last, FormatError::BadMagic | FormatError::MissingName) => {
            return Err(creation_unfinished(name));
        }
        // A header not there yet may be a creation under way, which the lock would tell.
        Waited::Unknown(e) if matches!(last, FormatError::BadMagic | FormatError::MissingName) => {
            return Err(e);
        }
        Waited::TimedOut | Waited::Unknown(_) => Some(Err(last)),
    })
}

/// `NotFound` for a name whose creation somebody still held the lock over when
/// [`wait_for_creation`] gave up: `unfinished`, as `create` calls the name taken.
fn creation_unfinished(name: &str) -> Error {
    Error::NotFound {
        name: name.to_owned(),
        known: Vec::new(),
        unfinished: true,
    }
}

/// What [`wait_for_creation`] saw.
enum Waited<T> {
    /// The creation's work (`look`), or what `under_lock` saw.
    Saw(T),
    /// Somebody else held the lock for all of the wait.
    TimedOut,
    /// A lock this process cannot take or look at (a refused lock directory, a lock file not
    /// ours, out of descriptors): why.
    Unknown(Error),
}

/// Waits for a creation in progress under `name`'s lock, which every creator holds while it
/// builds (ours, and pyshmem 1.4.0's `create`, under its `_locked_stream_name`): while
/// somebody else holds the lock, calls `look` every millisecond until it sees the creation's
/// work (`Some`), up to `until` and at least once (the caller says what that means: row 19).
/// Once this call takes the lock (the creator finished, or died and the kernel dropped its
/// flock), returns what `under_lock` sees while it holds it. No lock file at the path:
/// nobody holds it, so `under_lock` runs at once, and none is made here.
fn wait_for_creation<T>(
    name: &str,
    until: Instant,
    mut look: impl FnMut() -> Option<T>,
    under_lock: impl FnOnce() -> T,
) -> Waited<T> {
    #[cfg(test)]
    tests::CREATION_WAITS.with(|n| n.set(n.get() + 1));
    let path = name::lock_path(name);
    // Any other failure to look is said as attaching says it (a lock directory that is a
    // file: refused, not a directory).
    if std::fs::symlink_metadata(&path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
        return Waited::Saw(under_lock());
    }
    let lock = match LockFile::attach(&path, name) {
        Ok(lock) => lock,
        Err(e) => return Waited::Unknown(e),
    };
    loop {
        match NameLock::try_take(&lock, name) {
            Ok(Some(_held)) => return Waited::Saw(under_lock()),
            Ok(None) => {}
            Err(e) => return Waited::Unknown(e),
        }
        if let Some(seen) = look() {
            return Waited::Saw(seen);
        }
        if Instant::now() >= until {
            return Waited::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A writer killed between its two lock stamps (owner pid, then depth; or the reverse on
/// release) leaves them inconsistent, which the format refuses, so nobody could open the
/// stream again. When nobody holds the write lock (the kernel dropped the dead holder's
/// flock), the stamps are leftovers: clear them under the lock. Returns whether it did.
/// A mapping shorter than a header (a `_meta` replaced by a short one since it was decoded)
/// is left alone (`false`).
pub(crate) fn clear_dead_lock_stamps(meta: &Segment, name: &str) -> Result<bool> {
    if meta.len() < META_BYTES {
        return Ok(false);
    }
    let lock = LockFile::attach(&name::lock_path(name), name)?;
    if !lock.try_acquire(name)? {
        return Ok(false);
    }
    // SAFETY: `meta` is a writable mapping of at least META_BYTES (checked above), alive for
    // this scope.
    let h = unsafe { MappedHeader::new(meta) };
    h.lock_owner_pid().store(0, Ordering::Relaxed);
    h.lock_depth().store(0, Ordering::Relaxed);
    lock.release(|_| {});
    Ok(true)
}

/// Decodes a header from private snapshots, retrying for [`DECODE_RETRY`] while it fails
/// (a live writer may be between two metadata stores, or a creator still initializing).
pub(crate) fn decode_retrying(
    meta: &Segment,
    expected: Option<&str>,
) -> std::result::Result<Header, FormatError> {
    decode_retrying_for(meta, expected, DECODE_RETRY)
}

/// [`decode_retrying`] for `retry` instead of [`DECODE_RETRY`] (one look at least).
fn decode_retrying_for(
    meta: &Segment,
    expected: Option<&str>,
    retry: Duration,
) -> std::result::Result<Header, FormatError> {
    if meta.len() < META_BYTES {
        return Err(match format::is_legacy_v2(&meta.snapshot(META_BYTES)) {
            true => FormatError::LegacyV2,
            false => FormatError::TooShort(meta.len()),
        });
    }
    let deadline = Instant::now() + retry;
    loop {
        match format::decode(&meta.snapshot(META_BYTES), expected) {
            Ok(h) => return Ok(h),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(FormatError::NameMismatch { .. }) => {}
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    type Hook = RefCell<Option<Box<dyn FnOnce()>>>;

    thread_local! {
        /// Run once between an open's `_meta` and its payload (by this thread's next open).
        static BETWEEN_OPENS: Hook = RefCell::new(None);
        /// Run once between an open's payload and its history ring (by this thread's next
        /// open that finds a payload).
        static BEFORE_RING: Hook = RefCell::new(None);
        /// How many times this thread entered [`wait_for_creation`].
        pub(super) static CREATION_WAITS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
        /// How many times this thread's opens looked again for a missing or short payload.
        pub(super) static PAYLOAD_RETRIES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    fn run(hook: &'static std::thread::LocalKey<Hook>) {
        if let Some(f) = hook.with(|h| h.borrow_mut().take()) {
            f();
        }
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
            BEFORE_RING.with(|h| {
                *h.borrow_mut() = Some(Box::new(move || {
                    catalog::unlink(&recreated).unwrap();
                    if recreate {
                        *made.borrow_mut() = Some(with_history(&recreated, 8));
                    }
                }))
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
        BETWEEN_OPENS.with(|h| {
            *h.borrow_mut() = Some(Box::new(move || {
                catalog::unlink(&recreated).unwrap();
                let s = Stream::create(&recreated, &[4], Dtype::U8).unwrap();
                s.write_slice(&[9u8; 4]).unwrap();
                *made.borrow_mut() = Some(s);
            }))
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

    /// A mapping shorter than a header (a scan reopens a `_meta` that may have been replaced
    /// by a short one) is left alone: no store past its end, no lock file made.
    #[test]
    fn clearing_lock_stamps_leaves_a_short_mapping_alone() {
        use std::os::unix::fs::FileExt;
        let name = format!("short-stamps-{}", sys::pid());
        let id = format!("ps_test_short_stamps_{}", sys::pid());
        let _ = crate::segment::unlink(&id);
        let _ = std::fs::remove_file(name::lock_path(&name));
        let object = Segment::create(&id, META_BYTES).unwrap();
        let stamp = 4_000_000i64.to_le_bytes();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(crate::segment::path(&id))
            .unwrap();
        file.write_all_at(&stamp, format::offset::LOCK_OWNER_PID as u64)
            .unwrap();
        let short = Segment::open_prefix(&id, true, 64).unwrap();
        assert_eq!(short.len(), 64);
        assert!(!clear_dead_lock_stamps(&short, &name).unwrap());
        let after = object.snapshot(META_BYTES);
        assert_eq!(after[format::offset::LOCK_OWNER_PID..][..8], stamp);
        assert!(!name::lock_path(&name).exists());
        crate::segment::unlink(&id).unwrap();
    }

    /// The not-found hint reads the other streams without touching them: a dead writer's
    /// stamps left in a header are not cleared and no lock file is made for it (the hint
    /// scanned as `list` does, which clears them, in waits' loops and under other locks).
    #[test]
    fn a_not_found_hint_leaves_other_streams_untouched() {
        use std::os::unix::fs::FileExt;
        let planted = format!("hint-planted-{}", sys::pid());
        let _ = catalog::unlink(&planted);
        drop(Stream::create(&planted, &[4], Dtype::U8).unwrap());
        let lock = name::lock_path(&planted);
        std::fs::remove_file(&lock).unwrap();
        let meta = crate::segment::path(&name::meta_id(&planted));
        // A writer killed between its two stamps: its pid stored, the depth not.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&meta)
            .unwrap()
            .write_all_at(
                &4_000_000i64.to_le_bytes(),
                format::offset::LOCK_OWNER_PID as u64,
            )
            .unwrap();
        let before = std::fs::read(&meta).unwrap();
        let missing = format!("hint-missing-{}", sys::pid());
        match Stream::open(&missing) {
            Err(Error::NotFound {
                known,
                unfinished: false,
                ..
            }) => assert!(known.contains(&planted), "{known:?}"),
            other => panic!("{:?}", other.map(drop)),
        }
        assert_eq!(
            std::fs::read(&meta).unwrap(),
            before,
            "the hint wrote a header"
        );
        assert!(!lock.exists(), "the hint made another stream's lock file");
        catalog::unlink(&planted).unwrap();
    }

    /// Review item: the hint decodes a header as a scan does: a pyshmem stream caught
    /// between its CRC flag and its CRC (stored 0) is looked at again (after the scan's
    /// pause) and named (the hint decoded each header once and left it out); dead lock
    /// stamps alone are overlooked; a bad CRC is not.
    #[test]
    fn the_hint_names_a_pyshmem_stream_caught_mid_crc() {
        use catalog::Look;
        let stream = "hint-mid-crc";
        let id = name::segment_id(stream);
        let valid = format::encode_new(&format::NewHeader {
            name: stream,
            dtype: Dtype::U8,
            shape: &[4],
            flags: 0,
            device_index: -1,
            creator_pid: 2,
            instance_id: [3; 16],
        })
        .to_vec();
        let named = Look::Final(Some(stream.to_owned()));
        let mut creating = valid.clone();
        creating[format::offset::HEADER_CRC..][..4].fill(0);
        assert_eq!(hinted(&id, false, || Some(creating.clone())), Look::Again);
        assert_eq!(hinted(&id, true, || Some(valid.clone())), named);
        assert_eq!(
            hinted(&id, true, || Some(creating.clone())),
            Look::Final(None)
        );
        // A dead writer's stamps are named at the first look: no second one after a pause,
        // which every not-found paid for each such leftover on the host (a poller at every
        // poll).
        let mut stamped = valid.clone();
        stamped[format::offset::LOCK_OWNER_PID] = 9;
        assert_eq!(hinted(&id, false, || Some(stamped.clone())), named);
        let mut corrupt = valid.clone();
        corrupt[format::offset::HEADER_CRC] ^= 1;
        assert_eq!(
            hinted(&id, false, || Some(corrupt.clone())),
            Look::Final(None)
        );
        // Under another name's id: not this stream's.
        assert_eq!(
            hinted(&name::segment_id("other"), false, || Some(valid.clone())),
            Look::Final(None)
        );
    }

    /// Review item: a header corrupt for good (a stored CRC of 5, its flag set) is said at
    /// once while somebody holds the name's lock, without waiting for a creation:
    /// `open_meta` waited the whole creation timeout (5 s) on any rule broken, so
    /// `shmstream watch` beside a writer holding a long lock froze 5 s per tick.
    #[test]
    fn a_header_corrupt_for_good_is_said_at_once_under_a_held_lock() {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::FileExt;
        let stream = format!("crc5-locked-{}", sys::pid());
        let _ = catalog::unlink(&stream);
        drop(Stream::create(&stream, &[4], Dtype::U8).unwrap());
        std::fs::OpenOptions::new()
            .write(true)
            .open(crate::segment::path(&name::meta_id(&stream)))
            .unwrap()
            .write_all_at(&5u32.to_le_bytes(), format::offset::HEADER_CRC as u64)
            .unwrap();
        let lock = std::fs::File::open(name::lock_path(&stream)).unwrap();
        // SAFETY: flock on a descriptor this scope owns.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
        CREATION_WAITS.with(|n| n.set(0));
        let got = catalog::stat(&stream).map(drop);
        let waits = CREATION_WAITS.with(std::cell::Cell::get);
        drop(lock);
        let _ = catalog::unlink(&stream);
        assert!(
            matches!(
                got,
                Err(Error::CorruptHeader {
                    rule: FormatError::Crc { stored: 5, .. },
                    ..
                })
            ),
            "{got:?}"
        );
        assert_eq!(waits, 0, "waited for a creation");
    }

    /// Review item: a `_meta` still zeroed (no magic), or still empty, after the creation
    /// wait while somebody holds the name's lock is `NotFound` with `unfinished` set, as
    /// `create` calls the name taken (it said "create it first").
    #[test]
    fn a_creation_held_past_the_wait_is_an_unfinished_not_found() {
        use std::os::fd::AsRawFd;
        let stream = format!("held-creation-{}", sys::pid());
        let _ = catalog::unlink(&stream);
        drop(Stream::create(&stream, &[4], Dtype::U8).unwrap());
        let meta = crate::segment::path(&name::meta_id(&stream));
        let lock = std::fs::File::open(name::lock_path(&stream)).unwrap();
        // SAFETY: flock on a descriptor this scope owns.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
        let mut got = Vec::new();
        for planted in [vec![0u8; META_BYTES], Vec::new()] {
            std::fs::write(&meta, planted).unwrap();
            CREATION_WAITS.with(|n| n.set(0));
            got.push((
                catalog::stat_within(&stream, Duration::from_millis(100)).map(drop),
                CREATION_WAITS.with(std::cell::Cell::get),
            ));
        }
        drop(lock);
        let _ = catalog::unlink(&stream);
        let payload = crate::segment::path(&name::segment_id(&stream));
        for left in [meta, payload, name::lock_path(&stream)] {
            let _ = std::fs::remove_file(left);
        }
        for (got, waits) in got {
            assert!(
                matches!(&got, Err(Error::NotFound { unfinished: true, known, .. }) if known.is_empty()),
                "{got:?}"
            );
            assert_eq!(waits, 1, "{got:?}");
            let text = got.unwrap_err().to_string();
            assert!(!text.contains("create it first"), "{text}");
            assert!(text.contains("holding the name's lock"), "{text}");
        }
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
        let _ = crate::unlink(&name);
        let w = crate::StreamOptions::new(&name)
            .shape(&[1])
            .dtype(crate::Dtype::U8)
            .notify(true)
            .create()
            .unwrap();
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
