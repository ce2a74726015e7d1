//! GPU consumers (feature `cuda`): a consumer's CUDA stream waits for each frame on the GPU
//! (`cuStreamWaitValue64` on a registered word of the `_gpu` segment), reads the payload, and
//! acknowledges it (`cuStreamWriteValue64` on the `_gpu` segment's ack word); writers wait for
//! the acknowledgement before they overwrite the payload. No host synchronize on either side.
//!
//! The consumer waits on the `_gpu` segment's published-frame word, which every publication
//! stores after its even sequence (the host, or the writer's CUDA stream): a consumer that
//! gives up on frames that never came (a writer that stopped or died) can then release its own
//! stream's wait ([`RELEASED_BIT`]) without touching the sequence CPU readers trust.
//!
//! A stream cannot retry a torn read, so the consumer does not use the seqlock's
//! copy-and-check: the payload holds one frame, and the writer does not overwrite it until the
//! consumer has acknowledged that frame ([`slots::writer_gate`]). One acknowledging consumer
//! per stream (its pid in the `_gpu` segment); CPU readers and other device readers keep the
//! seqlock as before.
//!
//! Frames are numbered by their even sequence / 2. Writers, before the fill
//! ([`gate_writer`]): on the GPU-side publication path their CUDA stream waits for the ack
//! (the host does not); on the synchronize path the host waits, with the handle's timeout and
//! the consumer's liveness ([`slots::wait_ack`]). A consumer that died is released by the
//! next writer that notices (it stores the awaited ack itself: the word is host memory), so a
//! dead consumer never stalls a writer for longer than its timeout.
//!
//! Not under `SHMSTREAM_GPU_IPC_EVENT=1`: there a device-side write is published before its
//! copy is done, ordered for readers by the interprocess event, which a wait enqueued before
//! the frame cannot follow; [`Stream::gpu_consumer`] refuses.

use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

use cudarc::driver::{CudaStream, DevicePtrMut, DriverError, sys};

use super::driver::{Attachment, describe};
use super::layout::{RELEASED_BIT, gpu_offset};
use super::ops::DeviceView;
use super::publish;
use super::slots::{self, AckWaitError, WriterGate};
use crate::backoff::{Backoff, Sleeps, poll_with};
use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::stream::Stream;

/// Releases a dead consumer: acknowledges every frame published so far and at least the one
/// this handle's stream may be waiting for (the word is host memory, so the stream proceeds;
/// the stream waiting may be another writer handle's, for the ack of the frame in the
/// payload), then clears the consumer's pid.
fn release(a: &Attachment, pid: i64) {
    let target = slots::release_target(
        a.published_frame().load(Ordering::Acquire),
        a.awaited_ack.load(Ordering::Relaxed),
    );
    raise_ack(a, target);
    let _ = a
        .consumer_pid()
        .compare_exchange(pid, 0, Ordering::SeqCst, Ordering::SeqCst);
}

/// Raises the ack word to `target` (never lowers it).
fn raise_ack(a: &Attachment, target: u64) {
    let ack = a.consumer_ack();
    if let Some(v) = slots::raised_ack(ack.load(Ordering::Acquire), target) {
        ack.store(v, Ordering::SeqCst);
    }
}

/// Gives up this handle's claim once its CUDA stream is idle (no late ack of its consumer can
/// land): a writer that saw the consumer may wait for an ack of a frame it never enqueued, so
/// every frame published before `seq` (the stream's sequence) is acknowledged first, still
/// holding the claim (no new consumer's ack is overwritten; never beyond a published frame).
/// The handle's flag ([`Attachment::consuming`]) is cleared before the pid, so it never
/// clears the flag of a consumer that claims the stream next through this handle. A claim
/// this process does not hold (a forked child's copy) is left alone.
pub(crate) fn give_up_claim(a: &Attachment, seq: i64) {
    let own = crate::sys::pid();
    if a.consumer_pid().load(Ordering::SeqCst) == own {
        raise_ack(a, slots::last_frame(seq));
        a.consuming.store(false, Ordering::SeqCst);
        let _ = a
            .consumer_pid()
            .compare_exchange(own, 0, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// A claim this handle's dropped consumer kept (its CUDA stream was not idle then,
/// [`Attachment::kept_claim`]) is given up if the stream is idle now: one look, no wait.
/// Whether the handle is free of its consumer ([`Attachment::consuming`] clear).
pub(crate) fn settle_kept_claim(s: &Stream, a: &Attachment) -> bool {
    if !a.kept_claim.load(Ordering::Acquire).is_null()
        && stream_idle_now(a)
        && !a
            .kept_claim
            .swap(std::ptr::null_mut(), Ordering::AcqRel)
            .is_null()
    {
        give_up_claim(a, s.header.sequence().load(Ordering::SeqCst));
    }
    !a.consuming.load(Ordering::Acquire)
}

/// Whether a `cuStreamQuery` result says the stream runs nothing more: its work done, or an
/// error of the stream or its context (a failed context runs nothing more). Busy: work still
/// queued (`NOT_READY`), or a query refused while the caller captures a graph on the stream
/// (the waits are still queued). The one judgement of every "is it idle" look.
pub(crate) fn query_says_idle(r: sys::CUresult) -> bool {
    use sys::CUresult as R;
    !matches!(
        r,
        R::CUDA_ERROR_NOT_READY
            | R::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED
            | R::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED
            | R::CUDA_ERROR_STREAM_CAPTURE_MERGE
            | R::CUDA_ERROR_STREAM_CAPTURE_UNMATCHED
            | R::CUDA_ERROR_STREAM_CAPTURE_UNJOINED
            | R::CUDA_ERROR_STREAM_CAPTURE_ISOLATION
            | R::CUDA_ERROR_STREAM_CAPTURE_IMPLICIT
            | R::CUDA_ERROR_CAPTURED_EVENT
            | R::CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD
    )
}

/// Whether the handle's CUDA stream is idle now ([`query_says_idle`]). A context that cannot
/// be bound ([`Attachment::bind_for_query`]) says nothing of the stream: not idle.
fn stream_idle_now(a: &Attachment) -> bool {
    if !a.bind_for_query() {
        return false;
    }
    // SAFETY: the handle's live stream (the Arc is a field); the context is bound above.
    let r = unsafe { sys::cuStreamQuery(a.stream.cu_stream()) };
    query_says_idle(r)
}

/// How often a host-side wait probes whether a process it waits for is alive (`/proc`,
/// [`crate::sys::is_self_or_running`]).
const LIVENESS_POLL: Duration = Duration::from_millis(1);

/// When a host-side wait's liveness probe is due: a [`LIVENESS_POLL`] in (or at its
/// timeout, if sooner), then at most once per poll period, not on every poll of the word it
/// waits on.
#[derive(Debug)]
pub(crate) struct ProbeTicker {
    next: Instant,
}

impl ProbeTicker {
    /// A ticker for a wait of at most `timeout`: its first probe is due a [`LIVENESS_POLL`]
    /// from now (a probe reads `/proc`, and a pipelined writer starts such a wait on most
    /// frames, which mostly end sooner), or at the timeout if sooner, so that a short wait
    /// still probes before it gives up (a zombie it waits for is released, not waited out).
    pub(crate) fn within(timeout: Duration) -> Self {
        Self::starting(Instant::now(), timeout)
    }

    fn starting(now: Instant, timeout: Duration) -> Self {
        Self {
            next: now + LIVENESS_POLL.min(timeout),
        }
    }

    /// Whether a probe is due at `now`; if so, the next one is due a [`LIVENESS_POLL`] later.
    pub(crate) fn due(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now + LIVENESS_POLL;
        true
    }
}

/// How long a host-side wait for GPU work ([`host_wait`]) yields before it sleeps: waits
/// within a 1 kHz loop's period (a frame landing: a 4 MB copy takes ~160 µs) keep a yield's
/// latency; an idle wait pays this much of a core, then sleeps.
const YIELD_PHASE: Duration = Duration::from_millis(1);
/// A [`host_wait`]'s first sleep; each doubles, up to [`MAX_SLEEP`].
const FIRST_SLEEP: Duration = Duration::from_micros(20);
/// A [`host_wait`]'s longest sleep: what a wait past its yield phase (a writer paced by a
/// slower consumer's acknowledgements, a consumer's `synchronize` at a slow rate) sees its
/// event late by, at most (plus the timer's slack, ~50 µs).
const MAX_SLEEP: Duration = Duration::from_micros(100);

/// The pauses between polls of a host-side wait for GPU work (a CUDA stream, a word it
/// stores): yields for [`YIELD_PHASE`], then sleeps doubling from [`FIRST_SLEEP`] to
/// [`MAX_SLEEP`]. An idle wait then costs ~10 000 short wakes a second, not a core.
pub(crate) fn host_wait() -> Backoff {
    Backoff::yielding_for(YIELD_PHASE, Sleeps::new(FIRST_SLEEP, MAX_SLEEP))
}

/// Polls until `poll` answers, pausing between polls as [`host_wait`] does; `None` once
/// `deadline` has passed (after a last poll).
pub(crate) fn poll_until<T>(
    deadline: Option<Instant>,
    poll: impl FnMut() -> Option<T>,
) -> Option<T> {
    poll_with(&mut host_wait(), deadline, poll)
}

/// If the stream's GPU consumer has died (a zombie too), releases it (`own`: this process's
/// pid). Reads `/proc`: callers probe at most once per [`LIVENESS_POLL`].
pub(crate) fn release_if_dead(a: &Attachment, own: i64) {
    let pid = a.consumer_pid().load(Ordering::Acquire);
    if pid != 0 && pid != own && !crate::sys::process_running(pid) {
        release(a, pid);
    }
}

/// Whether the stream has a live GPU consumer (a writer's timeout names it as the cause).
pub(crate) fn has_live_consumer(a: &Attachment) -> bool {
    let pid = a.consumer_pid().load(Ordering::Acquire);
    pid != 0 && crate::sys::is_self_or_running(pid)
}

/// Publish hook before the fill (write lock held, a previous GPU-side publication landed):
/// if the stream has a GPU consumer, the payload is not overwritten before it acknowledged
/// the frame in it. `ack_word`: on the GPU-side publication path, the ack word's device
/// address, and the handle's CUDA stream waits for the ack itself; otherwise the host waits.
pub(crate) fn gate_writer(
    s: &Stream,
    a: &Attachment,
    ack_word: Option<sys::CUdeviceptr>,
) -> Result<()> {
    // Pairs with the consumer's fence between storing its pid and reading the sequence: either
    // it saw our previous frames or we see it.
    fence(Ordering::SeqCst);
    let pid = a.consumer_pid().load(Ordering::SeqCst);
    // A plain kill(2) probe here, on every write that finds the consumer behind: a `/proc`
    // read per write would cost the pipeline. A zombie consumer passes it, and is released by
    // the wait that follows, which probes with `/proc` (the host's `wait_ack` below, or the
    // next write's `on_stream::wait_for_landing` for a wait enqueued on our CUDA stream).
    let gate = slots::writer_gate(
        pid,
        || crate::sys::is_self_or_alive(crate::sys::pid(), pid),
        s.header.sequence().load(Ordering::Acquire),
        a.consumer_ack().load(Ordering::Acquire),
    );
    let ack = match gate {
        WriterGate::Free => return Ok(()),
        WriterGate::ReleaseDead => {
            release(a, pid);
            return Ok(());
        }
        WriterGate::WaitAck(ack) => ack,
    };
    if let Some(addr) = ack_word
        && a.ctx.bind_to_thread().is_ok()
    {
        a.awaited_ack.store(ack, Ordering::Relaxed);
        // SAFETY: the context is bound just above; `addr` is the registered, 8-aligned ack
        // word, mapped while the attachment lives. A consumer that dies without acknowledging
        // is released by the next writer's landing wait (`on_stream::wait_for_landing`, which
        // has a deadline); one that is dropped acknowledges every published frame first.
        let r = unsafe { publish::enqueue_wait_geq_u64(a.stream.cu_stream(), addr, ack) };
        if r.is_ok() {
            return Ok(());
        }
    }
    let timeout = s.default_timeout();
    let (mut probe, mut alive) = (ProbeTicker::within(timeout), true);
    let (mut backoff, deadline) = (
        host_wait(),
        crate::deadline::after(Instant::now(), Some(timeout)),
    );
    let got = slots::wait_ack(
        ack,
        timeout,
        || a.consumer_ack().load(Ordering::Acquire),
        || {
            if probe.due(Instant::now()) {
                alive = crate::sys::is_self_or_running(pid);
            }
            alive
        },
        || backoff.pause(deadline),
    );
    match got {
        Ok(_) => Ok(()),
        Err(AckWaitError::PeerDead) => {
            release(a, pid);
            Ok(())
        }
        Err(AckWaitError::Timeout { acked, wanted }) => Err(Error::Timeout {
            name: s.name.clone(),
            op: if acked == wanted.wrapping_sub(1) {
                "overwrite the last frame (the GPU consumer has yet to acknowledge it)"
            } else {
                "write over the frame in the payload (the GPU consumer has yet to acknowledge it)"
            },
            awaited: crate::Awaited::GpuConsumer,
            timeout,
        }),
    }
}

/// The stream's acknowledging GPU consumer ([`Stream::gpu_consumer`]): waits, reads and
/// acknowledges frames on the handle's CUDA stream, without the host waiting.
///
/// Frames written after it was made are delivered in order, and the writer waits for each
/// one's acknowledgement, so a consumer that stops enqueueing stalls the writer until the
/// writer's timeout. Not exactly once: frames are numbered by generation, and an aborted
/// write (or a dead writer's recovery) skips one, so the consumer's wait for the skipped
/// number passes on the next frame, which it gets twice (A, B, B). Dropping it waits (up to
/// the handle's timeout) for what it enqueued, then releases its CUDA stream's wait and the
/// stream.
///
/// Run producer and consumer processes under MPS: without it the processes' contexts are
/// time-sliced, and one whose stream waits on a word keeps its slice (an H200 measured ~4.5 ms
/// per frame for a cross-process MVM pipeline, 50 µs under MPS; `reports/gpu-h200/2026-11-30/`).
///
/// Open every stream handle the process needs before enqueueing waits: registering host memory
/// with the driver (which opening a writable GPU handle does) waits for work in flight on the
/// device, including these waits (`docs/format-gpu.md`), and allocating pinned memory may too:
/// a handle's first write from and read into host memory allocate its pinned buffers, so make
/// them before as well.
#[derive(Debug)]
pub struct GpuConsumer<'s> {
    s: &'s Stream,
    a: &'s Attachment,
    /// Device address of the `_gpu` segment's published-frame word.
    published: sys::CUdeviceptr,
    /// Device address of its ack word.
    ack: sys::CUdeviceptr,
    /// The next frame to consume.
    next: u64,
}

impl Stream {
    /// Makes this handle the stream's acknowledging GPU consumer (issue #11): frames are then
    /// waited for and read on the handle's CUDA stream ([`GpuConsumer::enqueue_next_into`]),
    /// and writers do not overwrite a frame before it acknowledged it.
    ///
    /// Errors: not a GPU stream or no device attachment, `SHMSTREAM_GPU_IPC_EVENT=1` (its
    /// device-side writes are published before their copy is done), a read-only handle (it
    /// writes the ack word), a device without stream memory operations, or another live
    /// process (or handle) already consuming the stream.
    pub fn gpu_consumer(&self) -> Result<GpuConsumer<'_>> {
        self.ensure_open()?;
        let a = self.attachment()?;
        if super::ops::ipc_event_mode() {
            return Err(Error::Unsupported {
                name: self.name.clone(),
                what: "a GPU consumer under SHMSTREAM_GPU_IPC_EVENT=1 (device-side writes are then published before their copy is done, ordered only for readers that wait on the interprocess event, which a consumer's wait enqueued ahead of the frame cannot): unset SHMSTREAM_GPU_IPC_EVENT in every process using the stream".into(),
            });
        }
        let fail = |reason: String| Error::Gpu {
            name: self.name.clone(),
            reason,
        };
        if self.readonly {
            return Err(Error::ReadOnly {
                name: self.name.clone(),
                op: "consume it on the GPU (the consumer writes its acknowledgement)",
            });
        }
        publish::memops_usable(self.device_index)
            .map_err(|e| fail(format!("GPU consumers need stream memory operations: {e}")))?;
        settle_kept_claim(self, a);
        a.bind(&self.name)?;
        let (Some(published), Some(ack)) = (
            a.seg_device_ptr(gpu_offset::PUBLISHED_FRAME),
            a.seg_device_ptr(gpu_offset::CONSUMER_ACK),
        ) else {
            return Err(fail(
                "registering the `_gpu` segment with the driver failed".into(),
            ));
        };
        let word = a.consumer_pid();
        let mut cur = word.load(Ordering::SeqCst);
        loop {
            if cur != 0 && crate::sys::is_self_or_running(cur) {
                if !a.kept_claim.load(Ordering::Acquire).is_null() {
                    return Err(fail(KEPT_CLAIM.into()));
                }
                return Err(fail(format!(
                    "pid {cur} already consumes it on the GPU (one acknowledging GPU consumer per stream): drop that consumer first"
                )));
            }
            match word.compare_exchange(cur, crate::sys::pid(), Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break,
                Err(v) => cur = v,
            }
        }
        // Claimed: acknowledge a frame already in the payload (a writer that saw our pid
        // before this store waits for it, a moment). Only after the claim: a process that
        // loses the claim must not move the winner's acknowledgement past the frame the
        // winner is copying.
        let (_, now) = slots::consumer_start(self.header.sequence().load(Ordering::SeqCst));
        a.consumer_ack().store(now, Ordering::SeqCst);
        // Pairs with `gate_writer`'s fence: a write that did not see our pid is visible in the
        // sequence read here, so the first frame we wait for is one written after it.
        fence(Ordering::SeqCst);
        // The first frame we take: the next one after the last published (an odd value is a
        // write in progress, maybe not gated: its frame is the one we take; we wait for its
        // even value, after its copy).
        let (next, last) = slots::consumer_start(self.header.sequence().load(Ordering::SeqCst));
        // A consumer before us gave up and released its stream: the word is not a frame
        // number until the next publication; make it one (unless a publication just did).
        let p = a.published_frame();
        let seen = p.load(Ordering::SeqCst);
        if slots::is_released(seen) {
            let _ = p.compare_exchange(seen, last, Ordering::SeqCst, Ordering::SeqCst);
        }
        a.consumer_ack().store(last, Ordering::SeqCst);
        a.consuming.store(true, Ordering::Release);
        Ok(GpuConsumer {
            s: self,
            a,
            published,
            ack,
            next,
        })
    }
}

impl<'s> GpuConsumer<'s> {
    /// The CUDA stream the consumer's work is ordered on (the handle's).
    pub fn cuda_stream(&self) -> &'s Arc<CudaStream> {
        &self.a.stream
    }

    /// The number of the next frame [`Self::enqueue_next_into`] takes (frames are numbered by
    /// the stream's even sequence / 2).
    pub fn next_frame(&self) -> u64 {
        self.next
    }

    fn ck(&self, what: &str, r: std::result::Result<(), DriverError>) -> Result<()> {
        r.map_err(|e| Error::Gpu {
            name: self.s.name.clone(),
            reason: format!("{what}: {}", describe(e)),
        })
    }

    /// Enqueues the wait for the next frame; the caller enqueues its reads, then [`Self::ack`].
    fn enqueue_wait(&self) -> Result<()> {
        self.a.bind(&self.s.name)?;
        // SAFETY: `self.published` is the registered, 8-aligned published-frame word's device
        // address, mapped while the stream handle (and so this consumer) lives; a wait that
        // never passes is released by `Drop` (RELEASED_BIT), and `synchronize` has a deadline.
        let r = unsafe {
            publish::enqueue_wait_geq_u64(self.a.stream.cu_stream(), self.published, self.next)
        };
        self.ck("enqueueing the wait for the next frame", r)
    }

    fn ack(&mut self) -> Result<u64> {
        // SAFETY: `self.ack` is the registered ack word's device address, as above.
        let r =
            unsafe { publish::enqueue_write_u64(self.a.stream.cu_stream(), self.ack, self.next) };
        self.ck("enqueueing the acknowledgement", r)?;
        let frame = self.next;
        self.next = self.next.wrapping_add(1);
        Ok(frame)
    }

    /// Enqueues on the consumer's CUDA stream: wait for the next frame, copy it into `dst`
    /// (device to device), acknowledge it. Returns the frame's number; the host does not wait
    /// (see [`Self::synchronize`]; work enqueued on [`Self::cuda_stream`] after this sees the
    /// frame in `dst`).
    pub fn enqueue_next_into<T: Element, D: DevicePtrMut<T>>(
        &mut self,
        dst: &mut D,
    ) -> Result<u64> {
        super::ops::device_element::<T>(&self.s.name, self.s.dtype)?;
        self.s.ensure_len(dst.len())?;
        self.enqueue_wait()?;
        let st = self.a.stream.cu_stream();
        {
            // Orders our stream after pending work on `dst`; records our write on it.
            let (dp, _guard) = dst.device_ptr_mut(&self.a.stream);
            // SAFETY: `dp` is the caller's exclusive device buffer of `size` bytes (dtype and
            // length checked), `dptr` the payload; the writer does not overwrite it before
            // the acknowledgement enqueued after this copy.
            let r = unsafe { sys::cuMemcpyDtoDAsync_v2(dp, self.a.dptr, self.s.size, st) };
            self.ck("enqueueing the copy of the frame", r.result())?;
        }
        self.ack()
    }

    /// Enqueues the wait for the next frame, runs `read` with the payload in place (enqueue
    /// the kernels that read it on [`DeviceView::stream`]), then enqueues the acknowledgement.
    /// Returns the frame's number and `read`'s result.
    pub fn enqueue_next_with<R>(
        &mut self,
        read: impl FnOnce(&DeviceView<'_>) -> Result<R>,
    ) -> Result<(u64, R)> {
        self.enqueue_wait()?;
        let r = read(&DeviceView::of_payload(self.s, self.a))?;
        Ok((self.ack()?, r))
    }

    /// Waits on the host until the consumer's stream has done everything enqueued so far,
    /// giving up at `timeout` (a writer that stopped or died, a stream that was unlinked):
    /// an error, never a hang.
    pub fn synchronize(&self, timeout: Duration) -> Result<()> {
        self.a.bind(&self.s.name)?;
        self.wait_idle(timeout)
    }

    /// [`Self::synchronize`] with the context bound: its errors are the stream query's own
    /// failure or the timeout.
    fn wait_idle(&self, timeout: Duration) -> Result<()> {
        self.wait_idle_with(&mut host_wait(), timeout)
    }

    /// [`Self::wait_idle`] pausing with `backoff` (kept across the calls of one wait).
    fn wait_idle_with(&self, backoff: &mut Backoff, timeout: Duration) -> Result<()> {
        let st = self.a.stream.cu_stream();
        let deadline = crate::deadline::after(Instant::now(), Some(timeout));
        let done = poll_with(backoff, deadline, || {
            // SAFETY: our live stream.
            match unsafe { sys::cuStreamQuery(st) } {
                sys::CUresult::CUDA_SUCCESS => Some(Ok(())),
                r if !query_says_idle(r) => None,
                other => Some(self.ck("waiting for the consumer's stream", other.result())),
            }
        });
        done.unwrap_or_else(|| {
            Err(Error::Timeout {
                name: self.s.name.clone(),
                op: "read frames on the GPU consumer's stream (no writer published the awaited frame: stopped, died, or the stream was unlinked)",
                awaited: crate::Awaited::GpuFrame,
                timeout,
            })
        })
    }
}

impl GpuConsumer<'_> {
    /// Waits for the consumer's stream to be idle: up to the handle's timeout for the frames
    /// it waits for, then up to [`RELEASE_SETTLE`] with its waits released ([`RELEASED_BIT`],
    /// set again while a publication may have stored a frame number over it). Whether it got
    /// idle: a stream whose query failed runs nothing more (idle); a context that cannot be
    /// bound ([`Attachment::bind_for_query`]) says nothing of the stream (not idle).
    fn settle_for_drop(&self) -> bool {
        if !self.a.bind_for_query() {
            return false;
        }
        let idle = |r: Result<()>| !matches!(r, Err(Error::Timeout { .. }));
        if idle(self.wait_idle(self.s.default_timeout())) {
            return true;
        }
        // One backoff for the whole phase: each short wait starting its own would only yield.
        let (start, mut backoff) = (Instant::now(), host_wait());
        loop {
            self.a
                .published_frame()
                .fetch_or(RELEASED_BIT, Ordering::SeqCst);
            if idle(self.wait_idle_with(&mut backoff, LIVENESS_POLL)) {
                return true;
            }
            if start.elapsed() >= RELEASE_SETTLE {
                return false;
            }
        }
    }
}

impl Drop for GpuConsumer<'_> {
    fn drop(&mut self) {
        // Frames we wait for may never come (a writer that stopped or died): after the
        // handle's timeout our stream's waits are released (each then copies whatever the
        // payload holds into the caller's buffer, unacknowledged). The stream is given up only
        // once idle, so no late ack of ours lands after another consumer took the stream. One
        // not idle yet (the caller's own work on it stuck) keeps the claim, recorded on the
        // attachment: it is given up the next time the handle finds its stream idle (its
        // next IO or `gpu_consumer`, one look each; its drop, with a bounded wait), and
        // meanwhile writers wait for it as for any live consumer that stopped acknowledging
        // (their timeout, never a hang).
        if self.a.inherited() {
            // A child forked without exec: the claim and the stream's waits are the parent's.
            return;
        }
        let seq = self.s.header.sequence();
        if !self.settle_for_drop() {
            self.a
                .kept_claim
                .store(std::ptr::from_ref(seq).cast_mut(), Ordering::Release);
            return;
        }
        give_up_claim(self.a, seq.load(Ordering::SeqCst));
    }
}

/// Why a handle whose dropped consumer kept its claim still refuses.
pub(crate) const KEPT_CLAIM: &str = "this handle's GPU consumer was dropped while its CUDA stream still had work queued, so it keeps its claim on the stream until that work is done: finish the work enqueued on the handle's CUDA stream (Stream::cuda_stream), or drop the handle";

/// How long a dropped consumer waits for its released stream to finish.
const RELEASE_SETTLE: Duration = Duration::from_secs(5);

impl Stream {
    /// The pid of the process holding this stream's GPU consumer ([`Stream::gpu_consumer`]),
    /// if any; `None` also for CPU streams and handles without a device attachment.
    pub fn gpu_consumer_pid(&self) -> Option<i64> {
        match &self.gpu {
            super::GpuLink::Attached(a) => {
                Some(a.consumer_pid().load(Ordering::Acquire)).filter(|&p| p != 0)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_liveness_probe_is_due_a_poll_period_in_then_once_per_period() {
        let now = Instant::now();
        let mut t = ProbeTicker::starting(now, Duration::from_secs(5));
        assert!(!t.due(now), "not at once: most waits end sooner");
        assert!(!t.due(now + LIVENESS_POLL / 2));
        assert!(t.due(now + LIVENESS_POLL), "the first probe, a period in");
        assert!(!t.due(now + LIVENESS_POLL), "not again on the next poll");
        assert!(t.due(now + 2 * LIVENESS_POLL), "due again a period later");
        let mut short = ProbeTicker::starting(now, Duration::ZERO);
        assert!(
            short.due(now),
            "a wait shorter than a period probes at once"
        );
    }

    /// An idle host-side wait backs off: past its yield phase, 200 ms of polls that never
    /// answer stay in the thousands (a `yield_now` loop makes hundreds of thousands), and it
    /// gives up at the deadline; one answering at its k-th poll returns at once.
    #[test]
    fn an_idle_poll_backs_off_and_gives_up_at_its_deadline() {
        let wait = Duration::from_millis(200);
        let mut polls = 0u32;
        let start = Instant::now();
        let got: Option<()> = poll_until(Some(start + wait), || {
            polls += u32::from(start.elapsed() > YIELD_PHASE);
            None
        });
        let took = start.elapsed();
        assert_eq!(got, None);
        assert!(took >= wait, "gave up early, after {took:?}");
        assert!(took < wait * 5, "gave up late, after {took:?}");
        assert!(
            polls < 5000,
            "{polls} polls after the yield phase: no backoff"
        );

        // A wait made of short polls (a drop's settling, 1 ms each) keeps one backoff: each
        // starting its own would never get past its yield phase.
        let (mut backoff, mut polls) = (host_wait(), 0u32);
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(100) {
            let short = Instant::now() + Duration::from_millis(1);
            let got: Option<()> = poll_with(&mut backoff, Some(short), || {
                polls += u32::from(start.elapsed() > YIELD_PHASE);
                None
            });
            assert_eq!(got, None);
        }
        assert!(polls < 3000, "{polls} polls over short waits: no backoff");

        let (k, mut polls) = (5, 0);
        let start = Instant::now();
        let got = poll_until(Some(start + Duration::from_secs(10)), || {
            polls += 1;
            (polls == k).then_some(polls)
        });
        assert_eq!(got, Some(k));
        assert!(start.elapsed() < Duration::from_secs(1), "not promptly");
    }
}
