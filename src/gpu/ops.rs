//! Device reads and writes of GPU streams (feature `cuda`).
//!
//! Writes run inside the stream's one publication bracket (`publish` / `publish_locked`)
//! with the device copy in the fill; reads run inside its one read loop (`read_frame`) with
//! the device copy in the copy closure, which waits for its copy to finish before the loop
//! re-checks the sequence. Nothing here re-implements locking, sequencing or waiting.

use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cudarc::driver::{
    CudaContext, CudaSlice, CudaStream, CudaViewMut, DevicePtr, DevicePtrMut, DeviceRepr,
    DriverError, sys,
};

use super::GpuLink;
use super::driver::{Attachment, Staging, describe, past_stale_error};
use crate::dtype::{Dtype, Element, as_bytes};
use crate::error::{Error, Result};
use crate::read::{FrameInfo, Want};
use crate::stream::Stream;
use crate::write::Fill;
use crate::write::WriteGuard;

fn gpu_err(name: &str, what: &str, e: DriverError) -> Error {
    Error::Gpu {
        name: name.to_owned(),
        reason: format!("{what}: {}", describe(e)),
    }
}

/// Whether cross-process ordering uses the interprocess event (opt-in, experimental:
/// `SHMSTREAM_GPU_IPC_EVENT=1`, which every process using the stream must set alike).
///
/// Default (off): every writer waits for its own CUDA stream (`cuStreamSynchronize`, never the
/// device) before the even sequence, so a published frame is complete in device memory and
/// readers need no event. Measured on an H200: recording and waiting on an interprocess event
/// cost ~150 us per hop, ten times the synchronize (see `reports/gpu-h200/`).
/// On: device-side writes without a mirror publish without a host wait, readers' copies wait
/// on the event (`cuStreamWaitEvent`), and writers wait for the previous write's event; GPU
/// consumers are refused (their waits, enqueued ahead of the frame, cannot follow the event).
pub(crate) fn ipc_event_mode() -> bool {
    static MODE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *MODE.get_or_init(|| std::env::var("SHMSTREAM_GPU_IPC_EVENT").is_ok_and(|v| v == "1"))
}

const OK: sys::CUresult = sys::CUresult::CUDA_SUCCESS;

/// Orders `st` after the last published write (event mode only).
///
/// # Safety
/// `st` must be a live stream of `a`'s context, bound to this thread.
unsafe fn wait_event(a: &Attachment, st: sys::CUstream) -> sys::CUresult {
    if ipc_event_mode() {
        // SAFETY: caller contract; the event lives as long as the attachment.
        unsafe { sys::cuStreamWaitEvent(st, a.event(), 0) }
    } else {
        OK
    }
}

/// Records the publication point on `st` (event mode only).
///
/// # Safety
/// As [`wait_event`].
unsafe fn record_event(a: &Attachment, st: sys::CUstream) -> sys::CUresult {
    if ipc_event_mode() {
        // SAFETY: caller contract; the event lives as long as the attachment.
        unsafe { sys::cuEventRecord(a.event(), st) }
    } else {
        OK
    }
}

/// A device-side writer waits for the previous write's work (event mode only: otherwise
/// every write completed before it was published).
///
/// # Safety
/// The context must be bound to this thread.
unsafe fn writer_wait(a: &Attachment) -> sys::CUresult {
    if ipc_event_mode() {
        // SAFETY: caller contract; the event lives as long as the attachment.
        unsafe { sys::cuEventSynchronize(a.event()) }
    } else {
        OK
    }
}

/// The end of a fill: the host waits for the stream, unless the write is published by the
/// stream itself (GPU-side publication: its even sequence lands after these copies, and the
/// next write waits for it before reusing the staging buffer or the mirror).
///
/// # Safety
/// `st` must be a live stream of `a`'s context, bound to this thread.
unsafe fn host_wait(a: &Attachment, st: sys::CUstream) -> sys::CUresult {
    if super::on_stream::on_gpu(a) {
        OK
    } else {
        // SAFETY: caller contract.
        unsafe { sys::cuStreamSynchronize(st) }
    }
}

/// Checks a driver result, naming the stream, the step and (if it died) the producer.
fn ck(s: &Stream, a: &Attachment, what: &str, r: sys::CUresult) -> Result<()> {
    r.result().map_err(|e| {
        let mut err = gpu_err(&s.name, what, e);
        if !crate::sys::is_self_or_alive(crate::sys::pid(), a.creator_pid) {
            err = Error::Gpu {
                name: s.name.clone(),
                reason: format!("{what} failed ({}): the stream's producer (pid {}) has exited, taking the device buffer with it", describe(e), a.creator_pid),
            };
        }
        err
    })
}

/// The device payload, borrowed for reading while the write lock is held
/// ([`WriteGuard::device_view`]). Work that reads it must be complete before the guard that
/// lent it is dropped (synchronize [`DeviceView::stream`], or an event recorded on it, first):
/// dropping the guard releases the lock without waiting for the device, and another writer
/// (its own CUDA stream, maybe another process) may then overwrite the payload. A GPU consumer lends it too ([`crate::gpu::GpuConsumer::enqueue_next_with`]): there
/// the acknowledgement enqueued after the reads keeps writers off the frame.
#[derive(Debug)]
pub struct DeviceView<'a> {
    ptr: sys::CUdeviceptr,
    len: usize,
    dtype: Dtype,
    stream: &'a Arc<CudaStream>,
    /// The stream's name, for errors.
    name: &'a str,
    _lock: PhantomData<&'a ()>,
}

/// The device payload, borrowed for writing in place inside a publication bracket
/// ([`Stream::write_device_in_place`]). Enqueue the writes on [`DeviceViewMut::stream`].
#[derive(Debug)]
pub struct DeviceViewMut<'a> {
    view: DeviceView<'a>,
}

impl<'a> DeviceView<'a> {
    /// The payload of `s`, on `a`'s stream.
    pub(super) fn of_payload(s: &'a Stream, a: &'a Attachment) -> Self {
        DeviceView {
            ptr: a.dptr,
            len: s.len,
            dtype: s.dtype,
            stream: &a.stream,
            name: &s.name,
            _lock: PhantomData,
        }
    }
    /// The raw device pointer (`CUdeviceptr`), valid while the borrow lasts.
    pub fn device_ptr(&self) -> u64 {
        self.ptr
    }
    /// Elements in the frame.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Always false (a stream has at least one element).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Bytes in the frame.
    pub fn num_bytes(&self) -> usize {
        self.len * self.dtype.itemsize()
    }
    /// The element type.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }
    /// The handle's CUDA stream: enqueue work on the payload here.
    pub fn stream(&self) -> &'a Arc<CudaStream> {
        self.stream
    }

    /// Runs `f` with the payload as a borrowed `CudaSlice<T>` (for cudarc APIs such as
    /// cuBLAS). The slice is never freed by cudarc; `T` must be the stream's dtype (`u8` for a
    /// bool stream, whose device bytes a foreign writer may leave other than 0 or 1).
    pub fn with_slice<T: Element + DeviceRepr, R>(
        &self,
        f: impl FnOnce(&CudaSlice<T>) -> R,
    ) -> Result<R> {
        device_element::<T>(self.name, self.dtype)?;
        // SAFETY: `ptr` is the stream's device allocation of at least `len` elements of `T`
        // (dtype checked: one byte each for a bool stream's u8), alive while the borrow lasts; ManuallyDrop + leak below hand the
        // pointer back without cudarc freeing it, also if `f` panics (then it is leaked).
        let slice = unsafe { self.borrow_slice::<T>() }?;
        let r = f(&slice);
        ManuallyDrop::into_inner(slice).leak();
        Ok(r)
    }
}

impl DeviceView<'_> {
    /// The payload as a `CudaSlice<T>` that must never drop (hand it back with `leak`).
    /// cudarc's `upgrade_device_ptr` panics (`new_event(..).unwrap()`, event tracking on)
    /// when the context reports an error: a stale one is cleared by binding first
    /// ([`past_stale_error`]), and a panic left (a sticky fault, or an error recorded in
    /// between) becomes [`Error::Gpu`].
    ///
    /// # Safety
    /// `T` is the stream's dtype; the caller leaks the slice, never drops it.
    unsafe fn borrow_slice<T: DeviceRepr>(&self) -> Result<ManuallyDrop<CudaSlice<T>>> {
        past_stale_error(|| self.stream.context().bind_to_thread())
            .map_err(|e| gpu_err(self.name, "binding the CUDA context", e))?;
        let upgrade = std::panic::AssertUnwindSafe(|| {
            // SAFETY: caller contract; `ptr` is the payload of `len` elements, alive while
            // `self` borrows it.
            ManuallyDrop::new(unsafe { self.stream.upgrade_device_ptr::<T>(self.ptr, self.len) })
        });
        std::panic::catch_unwind(upgrade).map_err(|p| slice_panic(self.name, p.as_ref()))
    }
}

/// A panic of cudarc's `upgrade_device_ptr` as [`Error::Gpu`] (the events it made are
/// dropped by the unwind; nothing else was created).
fn slice_panic(name: &str, payload: &(dyn std::any::Any + Send)) -> Error {
    let msg = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("no message");
    Error::Gpu {
        name: name.to_owned(),
        reason: format!(
            "borrowing the device payload as a CudaSlice failed (cudarc panicked: {msg}): retry; if it fails again, the CUDA context holds a fault and this process must be restarted"
        ),
    }
}

impl<'a> DeviceViewMut<'a> {
    /// The read-side view (pointer, length, dtype, stream).
    pub fn view(&self) -> &DeviceView<'a> {
        &self.view
    }
    /// The raw device pointer (`CUdeviceptr`).
    pub fn device_ptr(&self) -> u64 {
        self.view.ptr
    }
    /// The handle's CUDA stream: enqueue the writes here.
    pub fn stream(&self) -> &'a Arc<CudaStream> {
        self.view.stream
    }
    /// Runs `f` with the payload as a mutable view, `CudaViewMut<T>` (for cudarc APIs that
    /// write a `DevicePtrMut`, such as `CudaStream::memcpy_htod` or cuBLAS outputs). A view,
    /// not a `&mut CudaSlice`: nothing owned can be swapped out of it (an owned slice of the
    /// payload would free the shared device buffer when dropped). `T` must be the stream's
    /// dtype (`u8` for a bool stream, whose device bytes may be other than 0 or 1).
    ///
    /// Taking the payload out as an owned slice does not compile:
    ///
    /// ```compile_fail,E0308
    /// # fn f(s: &shmstream::Stream) -> shmstream::Result<()> {
    /// let mine = s.cuda_stream()?.alloc_zeros::<f32>(s.len()).unwrap();
    /// s.write_device_in_place(|v| {
    ///     let payload = v.with_slice_mut::<f32, _>(|buf| std::mem::replace(buf, mine))?;
    ///     drop(payload); // would free the stream's device buffer
    ///     Ok::<_, shmstream::Error>(())
    /// })?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_slice_mut<T: Element + DeviceRepr, R>(
        &mut self,
        f: impl FnOnce(&mut CudaViewMut<'_, T>) -> R,
    ) -> Result<R> {
        let v = &self.view;
        device_element::<T>(v.name, v.dtype)?;
        // SAFETY: as in `DeviceView::with_slice`; we are inside the write bracket under the
        // lock, so this is the only writer. `f` gets only a view borrowed from `slice`, so the
        // slice handed to `leak` is the one made here (the payload pointer), never one `f`
        // swapped in.
        let mut slice = unsafe { v.borrow_slice::<T>() }?;
        let r = f(&mut slice.as_view_mut());
        ManuallyDrop::into_inner(slice).leak();
        Ok(r)
    }
}

/// The publish hook for CPU fills of a mirrored GPU stream: upload the host payload.
pub(crate) fn after_fill(s: &Stream, a: &Attachment, host: *mut u8) -> Result<()> {
    if a.device_written.swap(false, Ordering::Relaxed) {
        return Ok(());
    }
    if host.is_null() {
        return Err(Error::Gpu {
            name: s.name.clone(),
            reason: "internal: a host fill without a host payload".into(),
        });
    }
    a.bind(&s.name)?;
    // SAFETY: `host` is this handle's host payload mapping, which the handle drops after its
    // GPU link (and so after the registration).
    unsafe { a.mirror_reg.ensure(&a.ctx, host, a.bytes) };
    let st = a.stream.cu_stream();
    // SAFETY: `host` is the mapped host payload of `a.bytes` bytes, written by the fill under
    // the lock; `a.dptr` is the device payload of at least `a.bytes` bytes; both outlive the
    // copy, which is waited for before returning (`host_wait`), or on the GPU-side path
    // before the next bracket's fill (its landing wait, as for the staging buffer).
    unsafe {
        ck(s, a, "ordering after the previous write", wait_event(a, st))?;
        ck(
            s,
            a,
            "uploading the host mirror",
            sys::cuMemcpyHtoDAsync_v2(a.dptr, host.cast_const().cast(), a.bytes, st),
        )?;
        ck(
            s,
            a,
            "recording the interprocess event",
            record_event(a, st),
        )?;
        ck(s, a, "waiting for the upload", host_wait(a, st))
    }
}

impl Stream {
    /// The device attachment, or the error saying why there is none.
    pub(super) fn attachment(&self) -> Result<&Attachment> {
        match &self.gpu {
            GpuLink::Attached(a) => {
                if a.released() && a.creator_pid != crate::sys::pid() {
                    return Err(Error::Gpu {
                        name: self.name.clone(),
                        reason: format!(
                            "its producer (pid {}) released the device buffer (the creating handle was closed); recreate the stream",
                            a.creator_pid
                        ),
                    });
                }
                Ok(a)
            }
            GpuLink::Detached(r) => Err(super::detached_error(&self.name, r)),
            GpuLink::None => Err(Error::Unsupported {
                name: self.name.clone(),
                what: "this is a CPU stream: use the CPU read and write methods".into(),
            }),
        }
    }

    /// [`Stream::attachment`] for a read or write of the device payload, refused while this
    /// handle has a GPU consumer ([`Stream::refuse_while_consuming`]).
    fn attachment_for_io(&self) -> Result<&Attachment> {
        let a = self.attachment()?;
        self.refuse_while_consuming(a)?;
        Ok(a)
    }

    /// Refuses IO through a handle that holds its GPU consumer: the consumer's waits come
    /// first on the handle's CUDA stream, and IO queued behind them (a device read or write,
    /// or the upload of a CPU write to a mirrored stream) would wait for a frame that it
    /// alone could publish, past any timeout and, on a host-synchronized write, holding the
    /// write lock. A claim a dropped consumer kept is given up here once the stream is idle
    /// (`consumer::settle_kept_claim`).
    pub(super) fn refuse_while_consuming(&self, a: &Attachment) -> Result<()> {
        if a.consuming.load(Ordering::Acquire) && !super::consumer::settle_kept_claim(self, a) {
            if !a.kept_claim.load(Ordering::Acquire).is_null() {
                return Err(Error::Unsupported {
                    name: self.name.clone(),
                    what: super::consumer::KEPT_CLAIM.into(),
                });
            }
            return Err(Error::Unsupported {
                name: self.name.clone(),
                what: "a read or write through the handle that holds the stream's GPU consumer (both would queue on one CUDA stream, behind the consumer's waits): use another handle (Stream::open) or drop the consumer first".into(),
            });
        }
        Ok(())
    }

    /// Whether this handle reaches the device payload (a GPU stream opened where the driver
    /// works and the producer lives).
    pub fn gpu_attached(&self) -> bool {
        matches!(self.gpu, GpuLink::Attached(_))
    }

    /// This handle's CUDA stream (device reads and writes of the handle are ordered on it).
    pub fn cuda_stream(&self) -> Result<Arc<CudaStream>> {
        Ok(self.attachment()?.stream.clone())
    }

    /// The CUDA context of the stream's device (the device's primary context).
    pub fn cuda_context(&self) -> Result<Arc<CudaContext>> {
        Ok(self.attachment()?.ctx.clone())
    }

    /// References this process holds on the device attachment (diagnostics).
    pub fn gpu_attachment_refs(&self) -> usize {
        match &self.gpu {
            GpuLink::Attached(a) => super::driver::attachment_refs(a),
            _ => 0,
        }
    }

    // ----- writes -----

    fn host_to_device_fill<'a, T: Element>(
        &'a self,
        data: &'a [T],
    ) -> Result<impl FnOnce(*mut u8) -> Result<()> + 'a> {
        self.ensure_dtype::<T>()?;
        self.ensure_len(data.len())?;
        let a = self.attachment_for_io()?;
        Ok(move |host: *mut u8| {
            let src = as_bytes(data);
            a.bind(&self.name)?;
            let st = a.stream.cu_stream();
            a.with_staging(&self.name, Staging::Write, |stage| {
                // SAFETY: `stage` is our pinned buffer of `a.bytes == src.len()` bytes (dtype
                // and length checked), used only by this handle's writes, under the write
                // lock. No earlier copy reads it any more: on the host-synchronized path each
                // use ends with a stream synchronize (`host_wait`); on the GPU-side path the
                // stream stores the previous write's even sequence after its copy, and this
                // bracket's `on_stream::begin` waited for that to land (a failed write's
                // abort waits for its copies instead, up to the handle's timeout: a copy
                // still queued past it lands before this one, on the same CUDA stream, into
                // the frame this write replaces). `host`, when not null, is the host payload
                // of the same size, written under the lock inside the bracket; `a.dptr` is the
                // device payload, which the copy writes before this bracket's publication.
                unsafe {
                    std::ptr::copy_nonoverlapping(src.as_ptr(), stage, src.len());
                    ck(
                        self,
                        a,
                        "ordering after the previous write",
                        wait_event(a, st),
                    )?;
                    ck(
                        self,
                        a,
                        "copying host to device",
                        sys::cuMemcpyHtoDAsync_v2(a.dptr, stage.cast_const().cast(), src.len(), st),
                    )?;
                    if !host.is_null() {
                        std::ptr::copy_nonoverlapping(src.as_ptr(), host, src.len());
                    }
                    ck(
                        self,
                        a,
                        "recording the interprocess event",
                        record_event(a, st),
                    )?;
                    ck(
                        self,
                        a,
                        "waiting for the host-to-device copy",
                        host_wait(a, st),
                    )
                }
            })?;
            a.device_written.store(true, Ordering::Relaxed);
            Ok(())
        })
    }

    /// Ends a device-side fill: mirror update (waited for) or event record (not waited for).
    fn finish_device_fill(&self, a: &Attachment, host: *mut u8) -> Result<()> {
        if !host.is_null() {
            // SAFETY: `host` is this handle's host payload mapping, which the handle drops
            // after its GPU link (and so after the registration).
            unsafe { a.mirror_reg.ensure(&a.ctx, host, a.bytes) };
        }
        let st = a.stream.cu_stream();
        // SAFETY: `host`, when not null, is the host payload of `a.bytes` bytes (the mirror),
        // written only by us under the lock inside the bracket; the copy is waited for here
        // (`host_wait`), or on the GPU-side path before the next bracket's fill (its landing
        // wait), and CPU readers see the odd sequence until the stream stores the even one
        // after it.
        unsafe {
            if !host.is_null() {
                ck(
                    self,
                    a,
                    "copying device to the host mirror",
                    sys::cuMemcpyDtoHAsync_v2(host.cast(), a.dptr, a.bytes, st),
                )?;
            }
            ck(
                self,
                a,
                "recording the interprocess event",
                record_event(a, st),
            )?;
            if !host.is_null() || !ipc_event_mode() {
                ck(self, a, "waiting for the device write", host_wait(a, st))?;
            }
        }
        a.device_written.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn device_to_device_fill<'a, T: Element, S: DevicePtr<T>>(
        &'a self,
        src: &'a S,
    ) -> Result<impl FnOnce(*mut u8) -> Result<()> + 'a> {
        self.ensure_dtype::<T>()?;
        self.ensure_len(src.len())?;
        let a = self.attachment_for_io()?;
        Ok(move |host: *mut u8| {
            a.bind(&self.name)?;
            let st = a.stream.cu_stream();
            // Depth-1 pipelining: the previous write's device work (any process) is complete
            // before this one starts, so a writer never runs ahead of readers by more than one
            // frame. SAFETY: the attachment's live event.
            ck(self, a, "waiting for the previous write", unsafe {
                writer_wait(a)
            })?;
            {
                // `device_ptr` makes our stream wait for pending writes to `src` and records a
                // read of it on our stream when the guard drops (cudarc's event tracking).
                let (sp, _guard) = src.device_ptr(&a.stream);
                // SAFETY: `sp` is the caller's device buffer of `self.size` bytes (dtype and
                // length checked), `a.dptr` the device payload of at least that many; the copy
                // is ordered on our stream after the last published write.
                ck(self, a, "copying device to device", unsafe {
                    sys::cuMemcpyDtoDAsync_v2(a.dptr, sp, self.size, st)
                })?;
            }
            self.finish_device_fill(a, host)
        })
    }

    /// Writes one frame from a host slice through the handle's pinned staging buffer (reused;
    /// allocated on first use). Waits for the copy before publishing. On a mirrored stream the
    /// host mirror is written from the slice too.
    pub fn write_device_from_host<T: Element>(&self, data: &[T]) -> Result<()> {
        let fill = self.host_to_device_fill(data)?;
        self.publish(None, Fill::InPlace, fill)
    }

    /// [`Stream::write_device_from_host`], stamping `frame_id` in the same publication.
    pub fn write_device_from_host_frame<T: Element>(
        &self,
        data: &[T],
        frame_id: u64,
    ) -> Result<()> {
        let fill = self.host_to_device_fill(data)?;
        self.publish(Some(frame_id), Fill::InPlace, fill)
    }

    /// Writes one frame from a device buffer (device to device, on this handle's CUDA stream,
    /// after `src`'s pending writes). On the `host-sync` path ([`Stream::gpu_publish_path`])
    /// the host waits for the copy, then publishes, except on a stream without a CPU mirror
    /// under `SHMSTREAM_GPU_IPC_EVENT=1`: there it publishes at once, without waiting, and
    /// readers' copies wait on the interprocess event recorded after the copy. On the
    /// `gpu-stream` path (the default where the probe passes) the CUDA stream publishes the
    /// frame after the copy and the host does not wait.
    ///
    /// Without a host wait the call returns before the copy out of `src` has run: `src` may
    /// then be written or freed through cudarc (its event tracking orders that after the
    /// copy), provided no other CUDA stream reads `src` in between (cudarc keeps one read
    /// event per buffer, and such a read replaces the copy's); otherwise, and for raw
    /// pointers, other libraries or event tracking disabled, only once this handle's CUDA
    /// stream ([`Stream::cuda_stream`]) has been synchronized.
    pub fn write_device<T: Element, S: DevicePtr<T>>(&self, src: &S) -> Result<()> {
        let fill = self.device_to_device_fill(src)?;
        self.publish(None, Fill::InPlace, fill)
    }

    /// [`Stream::write_device`], stamping `frame_id` in the same publication.
    pub fn write_device_frame<T: Element, S: DevicePtr<T>>(
        &self,
        src: &S,
        frame_id: u64,
    ) -> Result<()> {
        let fill = self.device_to_device_fill(src)?;
        self.publish(Some(frame_id), Fill::InPlace, fill)
    }

    /// Zero-copy device publication: `fill` writes the frame in place on the device (enqueue
    /// the work on [`DeviceViewMut::stream`]). The buffer holds the previous frame when `fill`
    /// starts. An error or panic in `fill` aborts the generation, as [`Stream::write_view`].
    pub fn write_device_in_place<R, E>(
        &self,
        fill: impl FnOnce(&mut DeviceViewMut<'_>) -> std::result::Result<R, E>,
    ) -> Result<R>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.in_place(None, fill, false)
    }

    fn in_place<R, E>(
        &self,
        frame_id: Option<u64>,
        fill: impl FnOnce(&mut DeviceViewMut<'_>) -> std::result::Result<R, E>,
        locked: bool,
    ) -> Result<R>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let a = self.attachment_for_io()?;
        let body = |host: *mut u8| -> Result<R> {
            a.bind(&self.name)?;
            // Depth-1 pipelining, as in `device_to_device_fill`. SAFETY: the live event.
            ck(self, a, "waiting for the previous write", unsafe {
                writer_wait(a)
            })?;
            let mut v = DeviceViewMut {
                view: DeviceView::of_payload(self, a),
            };
            let r = fill(&mut v).map_err(|e| Error::WriteAborted {
                name: self.name.clone(),
                source: e.into(),
            })?;
            self.finish_device_fill(a, host)?;
            Ok(r)
        };
        if locked {
            self.publish_locked(frame_id, Fill::InPlace, body)
        } else {
            self.publish(frame_id, Fill::InPlace, body)
        }
    }

    // ----- reads -----

    /// The read loop of the device reads. Each attempt (`attempt`, on this handle's CUDA
    /// stream, the context bound) copies the frame; it may run several times, never while
    /// the loop waits for a frame.
    fn device_read(
        &self,
        a: &Attachment,
        want: Want,
        timeout: Option<Duration>,
        op: &'static str,
        mut attempt: impl FnMut(sys::CUstream) -> Result<()>,
    ) -> Result<FrameInfo> {
        a.bind(&self.name)?;
        let st = a.stream.cu_stream();
        let mut failed: Option<Error> = None;
        let info = self.read_frame(want, timeout, op, |_host| {
            failed = attempt(st).err();
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(self.record_read(info))
    }

    /// One device read's copy: ordered after the last write, enqueued by `enqueue`, and
    /// complete when this returns (snapshot safety: `read_frame` re-checks the sequence next).
    fn copy_and_wait(
        &self,
        a: &Attachment,
        st: sys::CUstream,
        enqueue: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        // SAFETY: our live stream handle (the context bound by `device_read`) and the
        // attachment's event.
        ck(self, a, "ordering after the last write", unsafe {
            wait_event(a, st)
        })?;
        enqueue()?;
        // SAFETY: `st` is our live stream handle.
        let rc = unsafe { sys::cuStreamSynchronize(st) };
        ck(self, a, "waiting for the device copy", rc)
    }

    fn read_device_into_with<T: Element, D: DevicePtrMut<T>>(
        &self,
        want: Want,
        dst: &mut D,
        timeout: Option<Duration>,
        op: &'static str,
    ) -> Result<FrameInfo> {
        device_element::<T>(&self.name, self.dtype)?;
        self.ensure_len(dst.len())?;
        let a = self.attachment_for_io()?;
        let size = self.size;
        // `device_ptr_mut` orders our stream after pending work on `dst` and records our
        // write on it when the guard drops.
        let (dp, _guard) = dst.device_ptr_mut(&a.stream);
        self.device_read(a, want, timeout, op, |st| {
            self.copy_and_wait(a, st, || {
                // SAFETY: `dp` is the caller's exclusive device buffer of `size` bytes (dtype
                // and length checked), `a.dptr` the payload; the bytes are used only after
                // validation.
                ck(self, a, "copying device to device", unsafe {
                    sys::cuMemcpyDtoDAsync_v2(dp, a.dptr, size, st)
                })
            })
        })
    }

    fn read_device_to_host_with<T: Element>(
        &self,
        want: Want,
        dst: &mut [T],
        timeout: Option<Duration>,
        op: &'static str,
    ) -> Result<FrameInfo> {
        self.ensure_dtype::<T>()?;
        self.ensure_len(dst.len())?;
        let a = self.attachment_for_io()?;
        let (n, size, ptr) = (dst.len(), self.size, dst.as_mut_ptr());
        // The staging buffer is taken per attempt, not across the loop's waits: a read of
        // this handle waiting for a new frame must not hold up another thread's read.
        self.device_read(a, want, timeout, op, |st| {
            a.with_staging(&self.name, Staging::Read, |stage| {
                self.copy_and_wait(a, st, || {
                    // SAFETY: `stage` is our pinned read buffer of `size` bytes (held under
                    // its mutex until the staged bytes are copied out below), `a.dptr` the
                    // payload.
                    ck(self, a, "copying device to host", unsafe {
                        sys::cuMemcpyDtoHAsync_v2(stage.cast(), a.dptr, size, st)
                    })
                })?;
                // SAFETY: after the stream synchronize, so the staged bytes are complete;
                // `ptr` is the caller's buffer of `n` elements of `T` (checked);
                // `copy_from_shared` writes `n` valid `T` from any bytes.
                unsafe { T::copy_from_shared(stage.cast_const(), ptr, n) };
                Ok(())
            })
        })
    }

    /// A snapshot of the current frame into a caller-owned device buffer (no allocation).
    pub fn read_device_into<T: Element, D: DevicePtrMut<T>>(
        &self,
        dst: &mut D,
    ) -> Result<FrameInfo> {
        self.read_device_into_with(
            Want::Now,
            dst,
            Some(self.default_timeout()),
            "read a stable frame",
        )
    }

    /// Waits for a frame with count > `after`, then copies it into a caller-owned device buffer.
    pub fn read_device_after_into<T: Element, D: DevicePtrMut<T>>(
        &self,
        after: u64,
        dst: &mut D,
        timeout: Option<Duration>,
    ) -> Result<FrameInfo> {
        self.read_device_into_with(Want::After(after), dst, timeout, "read a new frame")
    }

    /// The first frame newer than this handle's last read, into a device buffer.
    pub fn read_device_new_into<T: Element, D: DevicePtrMut<T>>(
        &self,
        dst: &mut D,
        timeout: Option<Duration>,
    ) -> Result<FrameInfo> {
        self.read_device_into_with(self.want_new(), dst, timeout, "read a new frame")
    }

    /// A snapshot of the current frame, copied from the device into host memory (through the
    /// handle's pinned staging buffer; works with or without a mirror).
    pub fn read_device_to_host<T: Element>(&self, dst: &mut [T]) -> Result<FrameInfo> {
        self.read_device_to_host_with(
            Want::Now,
            dst,
            Some(self.default_timeout()),
            "read a stable frame",
        )
    }

    /// Waits for a frame with count > `after`, then copies it from the device into `dst`.
    pub fn read_device_to_host_after<T: Element>(
        &self,
        after: u64,
        dst: &mut [T],
        timeout: Option<Duration>,
    ) -> Result<FrameInfo> {
        self.read_device_to_host_with(Want::After(after), dst, timeout, "read a new frame")
    }

    /// The first frame newer than this handle's last read, from the device into `dst`.
    pub fn read_device_to_host_new<T: Element>(
        &self,
        dst: &mut [T],
        timeout: Option<Duration>,
    ) -> Result<FrameInfo> {
        self.read_device_to_host_with(self.want_new(), dst, timeout, "read a new frame")
    }
}

impl WriteGuard<'_> {
    /// The device payload, borrowed while this guard holds the write lock (cooperating
    /// writers are excluded, so it is stable). The handle's CUDA stream has been ordered
    /// after the last write; enqueue reads on [`DeviceView::stream`] and let them complete
    /// (synchronize it) before dropping the guard, which does not wait for the device.
    /// Refused through the handle that holds
    /// the stream's GPU consumer, as its reads are: work on the view would queue behind the
    /// consumer's waits while the lock keeps their frame from being written.
    pub fn device_view(&self) -> Result<DeviceView<'_>> {
        let s = self.stream();
        s.ensure_open()?;
        // Not the payload of a stream unlinked under the guard (rate limited).
        s.check_generation(false)?;
        let a = s.attachment_for_io()?;
        a.bind(&s.name)?;
        super::on_stream::wait_for_landing(s, a)?;
        // SAFETY: our live stream handle and the attachment's event.
        ck(s, a, "ordering after the last write", unsafe {
            wait_event(a, a.stream.cu_stream())
        })?;
        Ok(DeviceView::of_payload(s, a))
    }
    /// [`Stream::write_device_from_host`] without re-locking.
    pub fn write_device_from_host<T: Element>(&self, data: &[T]) -> Result<()> {
        let s = self.ready()?;
        let fill = s.host_to_device_fill(data)?;
        s.publish_locked(None, Fill::InPlace, fill)
    }
    /// [`Stream::write_device`] without re-locking.
    pub fn write_device<T: Element, S: DevicePtr<T>>(&self, src: &S) -> Result<()> {
        let s = self.ready()?;
        let fill = s.device_to_device_fill(src)?;
        s.publish_locked(None, Fill::InPlace, fill)
    }
    /// [`Stream::write_device_in_place`] without re-locking.
    pub fn write_device_in_place<R, E>(
        &self,
        fill: impl FnOnce(&mut DeviceViewMut<'_>) -> std::result::Result<R, E>,
    ) -> Result<R>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let s = self.ready()?;
        s.in_place(None, fill, true)
    }
}

/// Whether the device payload of a stream of `dtype` may be handed to the device as `T`:
/// as its own dtype, but a bool stream's as `u8`, never as `bool`: its device bytes may be
/// any value (a foreign writer's mask of 255s), and a `CudaSlice<bool>` holding one would
/// make such a `bool` when copied to the host.
pub(crate) fn device_element<T: Element>(name: &str, dtype: Dtype) -> Result<()> {
    match (dtype, T::DTYPE) {
        (Dtype::Bool, Dtype::U8) => Ok(()),
        (Dtype::Bool, Dtype::Bool) => Err(Error::Unsupported {
            name: name.to_owned(),
            what: "a bool GPU stream's device bytes as bool (a foreign writer may store any \
                   byte, e.g. 255, which no bool may hold): borrow or read it on the device as \
                   u8 (nonzero = true), or read it to the host with read_device_to_host"
                .to_owned(),
        }),
        (d, t) if d == t => Ok(()),
        (d, t) => Err(Error::DtypeMismatch {
            name: name.to_owned(),
            expected: d,
            given: t,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bool stream is handed to the device as u8, never as bool; other dtypes as
    /// themselves only.
    #[test]
    fn a_bool_stream_goes_to_the_device_as_u8_not_bool() {
        assert!(device_element::<u8>("m", Dtype::Bool).is_ok());
        let e = device_element::<bool>("m", Dtype::Bool).unwrap_err();
        assert!(
            matches!(&e, Error::Unsupported { name, .. } if name == "m")
                && e.to_string().contains("as u8"),
            "{e}"
        );
        assert!(device_element::<f32>("m", Dtype::F32).is_ok());
        assert!(matches!(
            device_element::<u8>("m", Dtype::I8),
            Err(Error::DtypeMismatch { .. })
        ));
        assert!(matches!(
            device_element::<f32>("m", Dtype::Bool),
            Err(Error::DtypeMismatch { .. })
        ));
    }

    /// A panic inside cudarc's slice upgrade is reported as `Error::Gpu` naming the stream
    /// and the remedy, with the panic's message.
    #[test]
    fn a_cudarc_panic_while_borrowing_the_payload_is_a_gpu_error() {
        // What `panic!` with a formatted message carries (`Result::unwrap` panics so).
        let p: Box<dyn std::any::Any + Send> = Box::new(String::from(
            "called `Result::unwrap()` on an `Err` value: CUDA_ERROR_UNKNOWN",
        ));
        match slice_panic("cam", p.as_ref()) {
            Error::Gpu { name, reason } => {
                assert_eq!(name, "cam");
                assert!(reason.contains("CUDA_ERROR_UNKNOWN"), "{reason}");
                assert!(reason.contains("restarted"), "{reason}");
            }
            e => panic!("{e:?}"),
        }
    }
}
