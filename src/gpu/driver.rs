//! The CUDA side (feature `cuda`): the driver probe, per-device contexts, the IPC-capable
//! device allocation, its interprocess event, the per-process attachment registry and the
//! pinned staging buffer. Every driver call is here or in `ops.rs`; each `unsafe` block says
//! why it is sound.
//!
//! cudarc loads `libcuda` lazily and panics on the first call when it is missing, so
//! nothing here touches the driver before [`probe`] has said it is present.

use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cudarc::driver::{CudaContext, CudaStream, DriverError, result, sys};

use super::layout::{
    self, GPU_ALLOC_ALIGN, GPU_SEGMENT_BYTES, GpuRecord, STATE_LIVE, STATE_RELEASED, gpu_offset,
};
use super::registry::{Key, Registry};
use crate::error::{Error, Result};
use crate::format::Header;
use crate::segment::{self, Segment};
use crate::{name, sys as os};

/// `CU_EVENT_DISABLE_TIMING | CU_EVENT_INTERPROCESS` (CUDA requires both for IPC events).
const IPC_EVENT_FLAGS: u32 = 2 | 4;

/// Whether the driver library loads and how many devices it reports; computed once.
pub(crate) fn probe() -> std::result::Result<usize, String> {
    static PROBE: OnceLock<std::result::Result<usize, String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            // SAFETY: `is_culib_present` only tries to dlopen the library by its usual names
            // and drops the handle; it calls no CUDA function.
            if !unsafe { sys::is_culib_present() } {
                return Err(
                    "the CUDA driver library (libcuda.so) is not loadable in this process".into(),
                );
            }
            // The library is present, so cudarc's loader does not panic from here on;
            // driver failures come back as `Err(DriverError)`.
            match CudaContext::device_count() {
                Ok(n) if n > 0 => Ok(n as usize),
                Ok(_) => Err("the CUDA driver reports no devices".into()),
                Err(e) => Err(format!(
                    "the CUDA driver failed to initialize: {}",
                    describe(e)
                )),
            }
        })
        .clone()
}

/// A driver error as text (name and the driver's description).
pub(crate) fn describe(e: DriverError) -> String {
    match e.error_string() {
        Ok(s) => format!("{:?} ({})", e.0, s.to_string_lossy()),
        Err(_) => format!("{:?}", e.0),
    }
}

/// Runs a cudarc call that first reports (and clears) an error an unrelated drop recorded
/// earlier on the context (`CudaContext::check_err`, which `bind_to_thread` and `attribute`
/// run before their own work), retrying it once: such a stale error is not this call's, and
/// taken for it, it would be cached for good (a probe's result, a registration, a handle's
/// publication path or attachment). A failure of the call itself fails the retry too.
pub(crate) fn past_stale_error<T>(
    call: impl Fn() -> std::result::Result<T, DriverError>,
) -> std::result::Result<T, DriverError> {
    call().or_else(|_| call())
}

fn gpu_err(name: &str, what: &str, e: DriverError) -> Error {
    Error::Gpu {
        name: name.to_owned(),
        reason: format!("{what}: {}", describe(e)),
    }
}

/// Stream `name` can have its payload on CUDA device `device`: a driver is loadable and
/// reports that device. Checked by a creation before it reserves any memory, so that a
/// machine without a driver says so rather than that the host payload does not fit.
pub(crate) fn check_device(name: &str, device: i32) -> Result<()> {
    let n = probe().map_err(|r| Error::Gpu {
        name: name.to_owned(),
        reason: format!("{r}: GPU streams need an NVIDIA driver"),
    })?;
    if device < 0 || device as usize >= n {
        return Err(Error::Gpu {
            name: name.to_owned(),
            reason: device_missing(
                device,
                n,
                std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref(),
            ),
        });
    }
    Ok(())
}

/// The primary context of `device`, shared by every stream of this process on it.
pub(crate) fn context(name: &str, device: i32) -> Result<Arc<CudaContext>> {
    static CTX: Mutex<Vec<(i32, Arc<CudaContext>)>> = Mutex::new(Vec::new());
    check_device(name, device)?;
    let mut c = CTX.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, ctx)) = c.iter().find(|(d, _)| *d == device) {
        return Ok(ctx.clone());
    }
    let ctx = CudaContext::new(device as usize)
        .map_err(|e| gpu_err(name, "creating the CUDA context", e))?;
    c.push((device, ctx.clone()));
    Ok(ctx)
}

/// What the registry shares between the handles of one process: the device pointer and the
/// event (a raw `CUevent`, stored as an integer so the registry is `Send`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shared {
    pub(crate) dptr: sys::CUdeviceptr,
    pub(crate) event: usize,
}

static REGISTRY: Registry<Shared> = Registry::new();

/// How long dropping a handle waits for its CUDA stream (which may wait for a GPU consumer's
/// acknowledgement) before it leaks the stream's buffers instead.
const DROP_SETTLE: Duration = Duration::from_secs(10);

/// A page-locked host buffer, reused for host↔device copies of one handle.
#[derive(Debug)]
pub(crate) struct Pinned {
    pub(crate) ptr: *mut u8,
}

// SAFETY: the buffer is plain host memory owned by this value; access is serialized by the
// Mutex that holds it.
unsafe impl Send for Pinned {}

/// Which staging buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Staging {
    Write = 0,
    Read = 1,
}

/// One handle's link to the device payload.
#[derive(Debug)]
pub(crate) struct Attachment {
    key: Key,
    pub(crate) ctx: Arc<CudaContext>,
    /// This handle's own CUDA stream (copies, event records, waits).
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) dptr: sys::CUdeviceptr,
    event: usize,
    pub(crate) bytes: usize,
    pub(crate) creator_pid: i64,
    /// The mapped `_gpu` segment (its state word says whether the allocation still lives).
    /// Unmapped by `Drop` only once the CUDA stream is idle: a stream that never got idle may
    /// still store into it through a leaked registration, so its mapping is leaked too.
    seg: ManuallyDrop<Segment>,
    /// Pinned staging buffers: one for writes, one for reads (a read waiting for a new
    /// frame must not block a writer of the same handle).
    pub(crate) staging: [Mutex<Option<Pinned>>; 2],
    /// Set by a GPU fill that brought the device (and the mirror) up to date; the publish
    /// hook clears it. Only touched under the write lock.
    pub(crate) device_written: AtomicBool,
    /// The CPU mirror, registered with the driver when a writable handle decides its
    /// publication path (at open, `on_stream::path`), else on first use (issue #11).
    pub(crate) mirror_reg: super::publish::LazyRegistration,
    /// The stream header's page, registered when a writable handle decides on the GPU-side
    /// publication path (`on_stream::path`).
    pub(crate) header_reg: super::publish::LazyRegistration,
    /// How this handle's writes are published, decided at open for a writable handle, on
    /// the first `gpu_publish_path` for a read-only one (`on_stream::path`).
    pub(crate) gpu_publish: OnceLock<super::on_stream::HandlePath>,
    /// The `_gpu` segment's page, registered on first use by a GPU consumer (it acknowledges
    /// from its CUDA stream) or a writer whose stream waits for that acknowledgement.
    pub(crate) seg_reg: super::publish::LazyRegistration,
    /// The ack value this handle's CUDA stream was last told to wait for before a write
    /// (`consumer::gate_writer`), so a writer that finds the consumer dead can release it.
    pub(crate) awaited_ack: AtomicU64,
    /// Whether this handle's GPU consumer exists: its waits come first on the handle's CUDA
    /// stream, so the handle's own reads and writes there would wait behind them.
    pub(crate) consuming: AtomicBool,
    /// Set when this handle's GPU consumer was dropped before its CUDA stream got idle, so
    /// it kept its claim: the handle's header sequence word, for the acknowledgement given
    /// when the claim is given up once the stream is idle (`consumer::settle_kept_claim`, or
    /// `Drop` here; the header is unmapped after the attachment). Null otherwise.
    pub(crate) kept_claim: AtomicPtr<AtomicI64>,
    /// [`os::forks`] when attached: another value means a child forked without exec inherited
    /// this copy ([`Attachment::inherited`]).
    forks: u64,
}

// SAFETY: the raw pointers inside (device pointer, event, pinned buffer) are handles owned by
// the attachment or the registry; CUDA driver calls on them are thread safe once the context
// is bound, and the pinned buffer is behind a Mutex.
unsafe impl Send for Attachment {}
// SAFETY: as above; shared access only reads the handles.
unsafe impl Sync for Attachment {}

impl Attachment {
    /// Whether this is a copy a child forked without exec inherited: its allocation, event,
    /// CUDA stream and registrations are the parent's (CUDA calls fail in such a child), its
    /// registry entry counts the parent's references, and a consumer claim on it is the
    /// parent's. Its drops leave all of that, and every word shared with other processes, alone.
    pub(crate) fn inherited(&self) -> bool {
        inherited(self.forks)
    }

    /// The raw event.
    pub(crate) fn event(&self) -> sys::CUevent {
        self.event as sys::CUevent
    }

    /// Whether the creator released the allocation (its last handle closed).
    pub(crate) fn released(&self) -> bool {
        self.state_word().load(Ordering::Acquire) == STATE_RELEASED
    }

    fn state_word(&self) -> &AtomicU32 {
        // SAFETY: the segment is GPU_SEGMENT_BYTES long (checked at attach), page aligned and
        // mapped while `self` lives; STATE is 4-aligned; other processes touch this word only
        // with aligned 32-bit stores.
        unsafe { &*self.seg.as_ptr().add(gpu_offset::STATE).cast::<AtomicU32>() }
    }

    /// The `_gpu` segment's publisher word: the pid whose last write its CUDA stream
    /// publishes, 0 when the host published it ([`gpu_offset::PUBLISHER_PID`]).
    pub(crate) fn publisher_pid(&self) -> &AtomicI64 {
        // SAFETY: as `state_word`; PUBLISHER_PID is 8-aligned and inside the 256 bytes; other
        // processes touch it only with aligned 64-bit atomics.
        unsafe {
            &*self
                .seg
                .as_ptr()
                .add(gpu_offset::PUBLISHER_PID)
                .cast::<AtomicI64>()
        }
    }

    /// A mutable 64-bit word of the `_gpu` segment at `off` (one of [`gpu_offset`]'s
    /// CONSUMER_ACK, CONSUMER_PID, PUBLISHED_FRAME).
    fn word_at(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off.is_multiple_of(8) && off + 8 <= GPU_SEGMENT_BYTES);
        // SAFETY: as `state_word`; `off` is 8-aligned and inside the 256 bytes; other processes
        // (and CUDA streams, through a registration) touch these words only with aligned
        // 64-bit stores.
        unsafe { &*self.seg.as_ptr().add(off).cast::<AtomicU64>() }
    }

    /// The consumer ack word ([`gpu_offset::CONSUMER_ACK`]).
    pub(crate) fn consumer_ack(&self) -> &AtomicU64 {
        self.word_at(gpu_offset::CONSUMER_ACK)
    }

    /// The last published frame ([`gpu_offset::PUBLISHED_FRAME`]).
    pub(crate) fn published_frame(&self) -> &AtomicU64 {
        self.word_at(gpu_offset::PUBLISHED_FRAME)
    }

    /// The consumer pid word ([`gpu_offset::CONSUMER_PID`]).
    pub(crate) fn consumer_pid(&self) -> &AtomicI64 {
        // SAFETY: as `word_at`; AtomicI64 has AtomicU64's size and alignment.
        unsafe { &*std::ptr::from_ref(self.word_at(gpu_offset::CONSUMER_PID)).cast::<AtomicI64>() }
    }

    /// The device address of the `_gpu` segment's word at `off`, registering the segment's
    /// page with this handle's context on first use (`None` if the driver refuses).
    pub(crate) fn seg_device_ptr(&self, off: usize) -> Option<sys::CUdeviceptr> {
        let ptr = std::ptr::from_ref(self.word_at(off))
            .cast::<u8>()
            .cast_mut();
        // SAFETY: the `_gpu` mapping is ours; `Drop` clears this registration before the
        // mapping goes.
        unsafe {
            self.seg_reg
                .ensure(&self.ctx, self.seg.as_ptr(), GPU_SEGMENT_BYTES)
        };
        self.seg_reg.device_ptr(ptr)
    }

    /// Waits up to `timeout` for everything this handle's CUDA stream has enqueued, releasing
    /// a GPU consumer that died while the stream waits for its acknowledgement
    /// ([`super::consumer`]). Whether the stream is idle (a failed stream runs nothing more).
    pub(crate) fn settle_within(&self, timeout: Duration) -> bool {
        if !self.bind_for_query() {
            return false;
        }
        let deadline = crate::deadline::after(Instant::now(), Some(timeout));
        let mut probe = super::consumer::ProbeTicker::within(timeout);
        let release_dead = || super::consumer::release_if_dead(self, os::pid());
        let idle = super::consumer::poll_until(deadline, || {
            // SAFETY: our own live stream (the Arc is a field).
            let r = unsafe { sys::cuStreamQuery(self.stream.cu_stream()) };
            if super::consumer::query_says_idle(r) {
                return Some(());
            }
            if probe.due(Instant::now()) {
                release_dead();
            }
            None
        });
        // Probed once more at the deadline: a short wait still releases a dead consumer.
        idle.is_some() || {
            release_dead();
            false
        }
    }

    /// Binds the context before a look at this handle's CUDA stream; whether it is bound
    /// (past a stale error, [`past_stale_error`]).
    pub(crate) fn bind_for_query(&self) -> bool {
        past_stale_error(|| self.ctx.bind_to_thread()).is_ok()
    }

    /// Binds the context to this thread (required before raw driver calls), past a stale
    /// error ([`past_stale_error`]).
    pub(crate) fn bind(&self, name: &str) -> Result<()> {
        past_stale_error(|| self.ctx.bind_to_thread())
            .map_err(|e| gpu_err(name, "binding the CUDA context", e))
    }

    /// A pinned staging buffer, allocated on first use (the payload's size), held for `f`
    /// only: callers keep it for one copy, never across a wait for a frame.
    pub(crate) fn with_staging<R>(
        &self,
        name: &str,
        which: Staging,
        f: impl FnOnce(*mut u8) -> Result<R>,
    ) -> Result<R> {
        let mut g = self.staging[which as usize]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            // The first use may be on a thread that never bound the context.
            self.bind(name)?;
            let mut p: *mut std::ffi::c_void = std::ptr::null_mut();
            // SAFETY: the context is bound just above; `p` is a valid out-pointer.
            unsafe { sys::cuMemHostAlloc(&mut p, self.bytes, 0) }
                .result()
                .map_err(|e| gpu_err(name, "allocating the pinned staging buffer", e))?;
            *g = Some(Pinned { ptr: p.cast() });
        }
        let ptr = g.as_ref().map(|p| p.ptr).unwrap_or(std::ptr::null_mut());
        f(ptr)
    }
}

/// Whether state made at fork count `made_at` ([`fork_count`]) was inherited across a fork
/// without exec.
fn inherited(made_at: u64) -> bool {
    made_at != os::forks()
}

/// The fork count an attachment made now records ([`os::forks`]), counting forks from here on
/// if nothing did yet.
fn fork_count() -> u64 {
    os::watch_forks();
    os::forks()
}

impl Drop for Attachment {
    fn drop(&mut self) {
        if self.inherited() {
            // The parent's attachment: marking the allocation released (the registry copy may
            // say this was the last reference) would detach every other process. Nothing is
            // freed, waited for or locked (a lock another thread of the parent held at the
            // fork stays held here): the registrations and the CUDA stream are leaked without
            // a driver call, and the `_gpu` mapping with them (`seg` is not dropped).
            for r in [
                &mut self.seg_reg,
                &mut self.header_reg,
                &mut self.mirror_reg,
            ] {
                std::mem::forget(std::mem::take(r));
            }
            std::mem::forget(Arc::clone(&self.stream));
            return;
        }
        // A stream waiting for a GPU consumer's acknowledgement that never comes (a consumer
        // alive but stopped) is not waited for forever: its buffers are leaked instead.
        let idle = self.settle_within(DROP_SETTLE);
        let kept = self
            .kept_claim
            .swap(std::ptr::null_mut(), Ordering::Relaxed);
        if idle && !kept.is_null() {
            // SAFETY: the handle's header sequence word (a dropped consumer stored it), mapped
            // until after the attachment drops (`Stream` declares its GPU link first). Not
            // idle: the claim stays while this process lives, as the consumer's drop says.
            let seq = unsafe { &*kept }.load(Ordering::SeqCst);
            super::consumer::give_up_claim(self, seq);
        }
        if idle {
            // The registrations go before the mappings they cover (fields drop after this).
            self.seg_reg.clear();
        } else {
            // The stream may still store into the registered words (the sequence, the
            // published frame) and copy into the mirror: their registrations are leaked with
            // the buffers, so those pages stay pinned and mapped for the device (unregistering
            // under work in flight may block or fault the context). The `_gpu` mapping stays
            // too (below); the header's and the mirror's belong to the stream handle, which
            // unmaps them (a known gap, `docs/format-gpu.md`).
            for r in [&self.seg_reg, &self.header_reg, &self.mirror_reg] {
                r.leak();
            }
            // The CUDA stream is kept too: dropping it would take the context's count of
            // cudarc streams back to 0 if it was the last, and cudarc's `new_stream` runs a
            // `cuCtxSynchronize` when that count goes from 0 to 1, so the next attach would
            // wait for this stream's work, which may never finish.
            std::mem::forget(Arc::clone(&self.stream));
        }
        for m in &mut self.staging {
            if let Some(p) = m.get_mut().unwrap_or_else(|p| p.into_inner()).take()
                && idle
            {
                // SAFETY: allocated by cuMemHostAlloc in `with_staging`, not freed before; no
                // copy uses it any more (the stream is idle).
                let _ = unsafe { sys::cuMemFreeHost(p.ptr.cast()) };
            }
        }
        // Freed or closed only if no handle of this process left work queued on it: each
        // handle's stream is its own, and the last one idle says nothing of the others'.
        if let Some(last) = REGISTRY.release(&self.key, idle) {
            let Shared { dptr, event } = last.value;
            if last.owned {
                // Tell other processes first: a later open reports "released" instead of
                // failing inside the driver.
                self.state_word().store(STATE_RELEASED, Ordering::Release);
                // SAFETY: the last reference in the creating process: no handle of ours uses
                // the event or the allocation any more; they came from cuEventCreate and
                // cuMemAlloc in `create`.
                unsafe {
                    let _ = sys::cuEventDestroy_v2(event as sys::CUevent);
                    if last.settled {
                        let _ = result::free_sync(dptr);
                    }
                }
            } else {
                // SAFETY: the last reference in this process to handles opened by
                // cuIpcOpenEventHandle / cuIpcOpenMemHandle in `attach`; the mapping is closed
                // only when no stream of ours may still use it.
                unsafe {
                    let _ = sys::cuEventDestroy_v2(event as sys::CUevent);
                    if last.settled {
                        let _ = sys::cuIpcCloseMemHandle(dptr);
                    }
                }
            }
        }
        if idle {
            // SAFETY: the last use of `seg` (the state word above); its registration was
            // cleared first. Not idle: never dropped, so the mapping its leaked registration
            // covers lives as long as the process.
            unsafe { ManuallyDrop::drop(&mut self.seg) };
        }
    }
}

/// Creates the device payload of a new GPU stream and its `_gpu` segment. The caller holds
/// the name lock and removes the other segments if this fails.
pub(crate) fn create(
    name: &str,
    device: i32,
    payload: usize,
    instance_id: [u8; 16],
    creator_pid: i64,
) -> Result<Attachment> {
    let ctx = context(name, device)?;
    past_stale_error(|| ctx.bind_to_thread())
        .map_err(|e| gpu_err(name, "binding the CUDA context", e))?;
    let alloc = layout::alloc_bytes(payload as u64).ok_or_else(|| Error::Gpu {
        name: name.into(),
        reason: "payload too large".into(),
    })? as usize;
    // Legacy IPC needs cuMemAlloc memory (cudarc's own allocators use the async pool on
    // devices that support it, which cuIpcGetMemHandle rejects).
    // SAFETY: the context is bound; the size is non-zero.
    let dptr = unsafe { result::malloc_sync(alloc) }.map_err(|e| {
        gpu_err(
            name,
            &format!("allocating {alloc} bytes on cuda:{device}"),
            e,
        )
    })?;
    let mut event: sys::CUevent = std::ptr::null_mut();
    let made = (|| -> std::result::Result<(sys::CUipcMemHandle, sys::CUipcEventHandle), (&'static str, DriverError)> {
        // SAFETY: `dptr` is our fresh allocation of `alloc` bytes; the out-pointers are valid;
        // the context is bound.
        unsafe {
            sys::cuMemsetD8_v2(dptr, 0, alloc).result().map_err(|e| ("zeroing the device payload", e))?;
            sys::cuEventCreate(&mut event, IPC_EVENT_FLAGS).result().map_err(|e| ("creating the interprocess event", e))?;
            let mut mh = std::mem::zeroed::<sys::CUipcMemHandle>();
            sys::cuIpcGetMemHandle(&mut mh, dptr).result().map_err(|e| ("exporting the CUDA IPC memory handle", e))?;
            let mut eh = std::mem::zeroed::<sys::CUipcEventHandle>();
            sys::cuIpcGetEventHandle(&mut eh, event).result().map_err(|e| ("exporting the CUDA IPC event handle", e))?;
            sys::cuCtxSynchronize().result().map_err(|e| ("synchronizing after the memset", e))?;
            Ok((mh, eh))
        }
    })();
    let undo = |event: sys::CUevent| {
        // SAFETY: freeing what was just created above and never shared.
        unsafe {
            if !event.is_null() {
                let _ = sys::cuEventDestroy_v2(event);
            }
            let _ = result::free_sync(dptr);
        }
    };
    let (mh, eh) = match made {
        Ok(h) => h,
        Err((what, e)) => {
            undo(event);
            return Err(gpu_err(name, what, e));
        }
    };
    let record = GpuRecord {
        device,
        alloc_bytes: alloc as u64,
        payload_bytes: payload as u64,
        alignment: GPU_ALLOC_ALIGN,
        creator_pid,
        instance_id,
        mem_handle: handle_bytes(&mh.reserved),
        event_handle: handle_bytes(&eh.reserved),
        state: STATE_LIVE,
    };
    let finish = || -> Result<Attachment> {
        let id = name::gpu_id(name);
        let seg = Segment::create(&id, GPU_SEGMENT_BYTES).map_err(|e| creating_segment(name, e))?;
        let bytes = layout::encode(&record);
        // SAFETY: a fresh private mapping of GPU_SEGMENT_BYTES; nobody opens it before the
        // stream header's magic is published (after this returns).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), seg.as_ptr(), GPU_SEGMENT_BYTES) };
        let key: Key = (device, record.mem_handle);
        let shared = Shared {
            dptr,
            event: event as usize,
        };
        if !REGISTRY.insert_owned(key, shared) {
            let _ = segment::unlink(&id);
            return Err(Error::Gpu {
                name: name.to_owned(),
                reason: "the driver returned an IPC handle that is already registered".into(),
            });
        }
        let stream = match ctx.new_stream() {
            Ok(s) => s,
            Err(e) => {
                REGISTRY.release(&key, true);
                let _ = segment::unlink(&id);
                return Err(gpu_err(name, "creating a CUDA stream", e));
            }
        };
        Ok(Attachment {
            key,
            ctx: ctx.clone(),
            stream,
            dptr,
            event: event as usize,
            bytes: payload,
            creator_pid,
            seg: ManuallyDrop::new(seg),
            staging: [Mutex::new(None), Mutex::new(None)],
            device_written: AtomicBool::new(false),
            mirror_reg: Default::default(),
            header_reg: Default::default(),
            gpu_publish: OnceLock::new(),
            seg_reg: Default::default(),
            awaited_ack: AtomicU64::new(0),
            consuming: AtomicBool::new(false),
            kept_claim: AtomicPtr::new(std::ptr::null_mut()),
            forks: fork_count(),
        })
    };
    finish().inspect_err(|_| undo(event))
}

/// The error of creating stream `name`'s `_gpu` segment: typed as the other segments' are
/// ([`Error::creating`]: a full `/dev/shm` is [`Error::NoSpace`], whose `needed` the stream's
/// create restates for the whole stream).
fn creating_segment(name: &str, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::AlreadyExists => Error::AlreadyExists {
            name: name.to_owned(),
            being_created: false,
        },
        _ => Error::creating(
            name,
            "creating the GPU handle segment",
            GPU_SEGMENT_BYTES,
            e,
        ),
    }
}

fn handle_bytes(h: &[std::ffi::c_char; 64]) -> [u8; 64] {
    let mut b = [0u8; 64];
    for (d, s) in b.iter_mut().zip(h) {
        *d = *s as u8;
    }
    b
}

fn handle_chars(b: &[u8; 64]) -> [std::ffi::c_char; 64] {
    let mut h = [0 as std::ffi::c_char; 64];
    for (d, s) in h.iter_mut().zip(b) {
        *d = *s as std::ffi::c_char;
    }
    h
}

/// Attaches an existing GPU stream's device payload. `Err(reason)` leaves the handle
/// usable for metadata and locking; payload operations report the reason.
pub(crate) fn attach(name: &str, h: &Header) -> std::result::Result<Attachment, String> {
    let rec = super::read_record(name, h)?;
    let (seg, rec) = rec;
    if rec.state == STATE_RELEASED {
        return Err(format!(
            "its producer (pid {}) released the device buffer (the creating handle was closed); recreate the stream",
            rec.creator_pid
        ));
    }
    let n =
        probe().map_err(|r| format!("{r}; open it on a machine with the GPU and its driver"))?;
    if !os::is_self_or_alive(os::pid(), rec.creator_pid) {
        return Err(format!(
            "its producer process (pid {}) has exited and the device buffer died with it (the creator must outlive the stream's users); recreate the stream",
            rec.creator_pid
        ));
    }
    // After the liveness check: a dead producer's stream needs recreating, whatever the
    // devices this process sees.
    if rec.device < 0 || rec.device as usize >= n {
        let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
        return Err(creator_device_missing(
            rec.device,
            n,
            rec.creator_pid,
            visible.as_deref(),
        ));
    }
    let ctx = context(name, rec.device).map_err(|e| e.to_string())?;
    past_stale_error(|| ctx.bind_to_thread()).map_err(describe)?;
    let key: Key = (rec.device, rec.mem_handle);
    let shared = REGISTRY.acquire(key, || -> std::result::Result<Shared, String> {
        let mh = sys::CUipcMemHandle { reserved: handle_chars(&rec.mem_handle) };
        let eh = sys::CUipcEventHandle { reserved: handle_chars(&rec.event_handle) };
        let mut dptr: sys::CUdeviceptr = 0;
        let mut event: sys::CUevent = std::ptr::null_mut();
        // SAFETY: the handles are the 64-byte blobs the creator's driver exported (CRC
        // checked); the driver validates them and fails cleanly on stale ones; the
        // out-pointers are valid; the context is bound.
        unsafe {
            sys::cuIpcOpenMemHandle_v2(&mut dptr, mh, sys::CUipcMem_flags::CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS as u32)
                .result()
                .map_err(|e| format!("opening the CUDA IPC memory handle failed: {} (is its producer, pid {}, still running, and this process run with its CUDA_VISIBLE_DEVICES?)", describe(e), rec.creator_pid))?;
            if let Err(e) = sys::cuIpcOpenEventHandle(&mut event, eh).result() {
                let _ = sys::cuIpcCloseMemHandle(dptr);
                return Err(format!("opening the CUDA IPC event handle failed: {}", describe(e)));
            }
        }
        Ok(Shared { dptr, event: event as usize })
    })?;
    let stream = match ctx.new_stream() {
        Ok(s) => s,
        Err(e) => {
            if let Some(last) = REGISTRY.release(&key, true) {
                close_imported(last.value, last.owned);
            }
            return Err(format!("creating a CUDA stream: {}", describe(e)));
        }
    };
    Ok(Attachment {
        key,
        ctx,
        stream,
        dptr: shared.dptr,
        event: shared.event,
        bytes: h.size as usize,
        creator_pid: rec.creator_pid,
        seg: ManuallyDrop::new(seg),
        staging: [Mutex::new(None), Mutex::new(None)],
        device_written: AtomicBool::new(false),
        mirror_reg: Default::default(),
        header_reg: Default::default(),
        gpu_publish: OnceLock::new(),
        seg_reg: Default::default(),
        awaited_ack: AtomicU64::new(0),
        consuming: AtomicBool::new(false),
        kept_claim: AtomicPtr::new(std::ptr::null_mut()),
        forks: fork_count(),
    })
}

/// Why `device` names none of the `n` devices this process sees (`visible`: its
/// `CUDA_VISIBLE_DEVICES`, which renumbers them).
fn device_missing(device: i32, n: usize, visible: Option<&str>) -> String {
    match visible {
        None => format!(
            "device cuda:{device} does not exist (this machine has {n} CUDA device(s); CUDA_VISIBLE_DEVICES unset)"
        ),
        Some(v) => format!(
            "device cuda:{device} does not exist in this process, which sees {n} CUDA device(s) (CUDA_VISIBLE_DEVICES={v:?}; ordinals count only the devices it makes visible, from 0)"
        ),
    }
}

/// Why a stream's device ordinal, stored in its creator's numbering (the creator's
/// `CUDA_VISIBLE_DEVICES`), names none of the `n` devices this process sees (`visible`: its
/// `CUDA_VISIBLE_DEVICES`).
fn creator_device_missing(
    device: i32,
    n: usize,
    creator_pid: i64,
    visible: Option<&str>,
) -> String {
    let here = visible.map_or_else(
        || "CUDA_VISIBLE_DEVICES unset".to_owned(),
        |v| format!("CUDA_VISIBLE_DEVICES={v:?}"),
    );
    format!(
        "its device cuda:{device} (in the numbering of its creator, pid {creator_pid}) does not exist in this process, which sees {n} CUDA device(s) ({here}): a CUDA_VISIBLE_DEVICES other than the creator's is the likely cause (ordinals count only the devices it makes visible); run with the creator's CUDA_VISIBLE_DEVICES"
    )
}

fn close_imported(s: Shared, owned: bool) {
    if owned {
        return; // never free the creator's allocation from here; its handle does
    }
    // SAFETY: the last reference to handles this process opened in `attach`.
    unsafe {
        let _ = sys::cuEventDestroy_v2(s.event as sys::CUevent);
        let _ = sys::cuIpcCloseMemHandle(s.dptr);
    }
}

/// The registry's reference count for an attachment (tests and diagnostics).
pub(crate) fn attachment_refs(a: &Attachment) -> usize {
    REGISTRY.refs(&a.key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call that first reports a stale error (cudarc's `check_err`, which clears it) is
    /// retried once; a call that fails by itself fails the retry too.
    #[test]
    fn a_stale_driver_error_is_retried_past_once() {
        use std::cell::Cell;
        let stale = DriverError(sys::CUresult::CUDA_ERROR_UNKNOWN);
        let calls = Cell::new(0);
        let pending = Cell::new(Some(stale));
        let bind = || {
            calls.set(calls.get() + 1);
            pending.take().map_or(Ok(7), Err)
        };
        assert_eq!(past_stale_error(bind), Ok(7));
        assert_eq!(calls.get(), 2);
        let own = DriverError(sys::CUresult::CUDA_ERROR_INVALID_CONTEXT);
        calls.set(0);
        let failing = || {
            calls.set(calls.get() + 1);
            Err::<(), _>(own)
        };
        assert_eq!(past_stale_error(failing), Err(own));
        assert_eq!(calls.get(), 2, "retried once, not more");
    }

    /// A stream's device ordinal this process does not have names CUDA_VISIBLE_DEVICES (the
    /// creator's numbering) and the remedy, with this process's value.
    #[test]
    fn a_missing_creator_device_names_cuda_visible_devices() {
        let e = creator_device_missing(1, 1, 42, Some("3"));
        for part in [
            "cuda:1",
            "pid 42",
            "sees 1 CUDA device(s)",
            "CUDA_VISIBLE_DEVICES=\"3\"",
            "run with the creator's CUDA_VISIBLE_DEVICES",
        ] {
            assert!(e.contains(part), "{part:?} missing from: {e}");
        }
        let e = creator_device_missing(2, 1, 42, None);
        assert!(e.contains("CUDA_VISIBLE_DEVICES unset"), "{e}");
        // The create path's message (`context`) names it too.
        let e = device_missing(2, 1, Some("3"));
        for part in [
            "cuda:2",
            "sees 1 CUDA device(s)",
            "CUDA_VISIBLE_DEVICES=\"3\"",
            "ordinals count only the devices it makes visible",
        ] {
            assert!(e.contains(part), "{part:?} missing from: {e}");
        }
        let e = device_missing(2, 1, None);
        assert!(
            e.contains("has 1 CUDA device(s)") && e.contains("CUDA_VISIBLE_DEVICES unset"),
            "{e}"
        );
    }

    /// A full `/dev/shm` when the `_gpu` segment is created is the typed no-space error the
    /// other segments give (it was an untyped I/O error).
    #[test]
    fn a_full_dev_shm_creating_the_gpu_segment_is_no_space() {
        let e = creating_segment("cam", std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(
            matches!(&e, Error::NoSpace { name, needed, .. } if name == "cam" && *needed == GPU_SEGMENT_BYTES as u64),
            "{e:?}"
        );
        let e = creating_segment("cam", std::io::Error::from_raw_os_error(libc::EEXIST));
        assert!(matches!(e, Error::AlreadyExists { .. }), "{e:?}");
    }

    /// A child forked without exec tells its copy of an attachment from one of its own, so the
    /// copy's drop leaves the shared `_gpu` state alone; the parent's stays its own.
    #[test]
    fn an_attachment_made_before_a_fork_is_inherited_in_the_child_only() {
        let made_at = fork_count();
        assert!(!inherited(made_at), "the parent's own attachment");
        // SAFETY: the child only loads an atomic and calls `_exit` (async-signal-safe) and
        // never returns here.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork failed");
        if child == 0 {
            let code = if inherited(made_at) { 0 } else { 1 };
            // SAFETY: ends the forked child without running the parent's exit handlers.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: our own child; `status` outlives the call.
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child took the parent's attachment for its own"
        );
        assert!(!inherited(made_at), "the parent's attachment stays its own");
    }
}
