//! GPU-side publication primitives (feature `cuda`): host memory registered with the driver
//! and addressed from the device, stream writes and GEQ waits on 64-bit words in it, and the
//! per-device probe that picks the publication path (see `probe.rs` for the choice).
//!
//! Only reached after `driver::probe` said the driver library is loadable, so no cudarc call
//! here can panic for want of `libcuda`.

use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, DriverError, sys};

use super::driver;
use super::probe::{self, DeviceCaps, PathChoice, PublishPath};

/// A range of host memory registered with the driver (`cuMemHostRegister_v2`, portable and
/// device-mapped) and its device address; unregistered on drop.
#[derive(Debug)]
pub(crate) struct HostRegistration {
    base: *mut u8,
    /// The device address of the first registered byte (page-aligned start).
    dbase: sys::CUdeviceptr,
    len: usize,
    ctx: Arc<CudaContext>,
}

// SAFETY: the registration is a driver handle on memory this value does not own; the driver
// calls made through it are thread-safe once the context is bound to the calling thread.
unsafe impl Send for HostRegistration {}

fn check(r: sys::CUresult) -> Result<(), DriverError> {
    r.result()
}

impl HostRegistration {
    /// Registers the pages covering `ptr .. ptr + len`.
    ///
    /// # Safety
    /// The range must stay mapped (a live `Segment` mapping, say) until this value is
    /// dropped.
    pub(crate) unsafe fn new(
        ctx: Arc<CudaContext>,
        ptr: *mut u8,
        len: usize,
    ) -> Result<Self, DriverError> {
        let pg = crate::sys::page_size();
        let start = (ptr as usize) & !(pg - 1);
        let end = (ptr as usize + len.max(1)).div_ceil(pg) * pg;
        driver::past_stale_error(|| ctx.bind_to_thread())?;
        let flags = sys::CU_MEMHOSTREGISTER_PORTABLE | sys::CU_MEMHOSTREGISTER_DEVICEMAP;
        // SAFETY: the caller keeps the pages mapped for the registration's lifetime; the range
        // is page-aligned as the driver requires.
        check(unsafe { sys::cuMemHostRegister_v2(start as *mut _, end - start, flags) })?;
        let mut dbase: sys::CUdeviceptr = 0;
        // SAFETY: `start` is the base of the range just registered with DEVICEMAP.
        let got =
            check(unsafe { sys::cuMemHostGetDevicePointer_v2(&mut dbase, start as *mut _, 0) });
        if let Err(e) = got {
            // SAFETY: unregisters exactly what was registered above.
            let _ = unsafe { sys::cuMemHostUnregister(start as *mut _) };
            return Err(e);
        }
        Ok(Self {
            base: start as *mut u8,
            dbase,
            len: end - start,
            ctx,
        })
    }

    /// The device address of host address `ptr` inside the registration.
    pub(crate) fn device_ptr(&self, ptr: *const u8) -> Option<sys::CUdeviceptr> {
        let off = (ptr as usize).checked_sub(self.base as usize)?;
        (off < self.len).then_some(self.dbase + off as u64)
    }
}

impl Drop for HostRegistration {
    fn drop(&mut self) {
        if driver::past_stale_error(|| self.ctx.bind_to_thread()).is_ok() {
            // SAFETY: `base` was registered by `new` and is unregistered once, here.
            let _ = unsafe { sys::cuMemHostUnregister(self.base as *mut _) };
        }
    }
}

/// A host range registered with the driver on first use (the CPU mirror, so device↔mirror
/// copies are DMA; the stream header, so a CUDA stream can store its sequence word).
#[derive(Debug, Default)]
pub(crate) struct LazyRegistration(Mutex<Option<(usize, Result<HostRegistration, DriverError>)>>);

impl LazyRegistration {
    /// Registers `host .. host + bytes` the first time it is seen. A failure (a read-only
    /// mapping, a driver refusing) leaves it unregistered and is not retried ([`Self::error`]).
    ///
    /// # Safety
    /// The mapping at `host` must outlive this value (a stream handle drops its GPU link
    /// before its header and its host payload).
    pub(crate) unsafe fn ensure(&self, ctx: &Arc<CudaContext>, host: *mut u8, bytes: usize) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.as_ref().is_some_and(|(p, _)| *p == host as usize) {
            return;
        }
        // SAFETY: per this function's contract, the mapping outlives the registration.
        let reg = unsafe { HostRegistration::new(ctx.clone(), host, bytes) };
        *g = Some((host as usize, reg));
    }

    /// The device address of host address `ptr`, if it lies in the registered range.
    pub(crate) fn device_ptr(&self, ptr: *const u8) -> Option<sys::CUdeviceptr> {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.as_ref()?.1.as_ref().ok()?.device_ptr(ptr)
    }

    /// Why the last registration failed (`None` if it succeeded or none was made).
    pub(crate) fn error(&self) -> Option<DriverError> {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.as_ref()?.1.as_ref().err().copied()
    }

    /// Unregisters now (before the mapping it covers goes away).
    pub(crate) fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Never unregisters: the pages stay pinned and mapped for the device, for a stream that
    /// may still store into them (a drop that timed out waiting for it). The mapping it covers
    /// must then be kept for the process's life too: a registered range that is unmapped and
    /// mapped again by something else is not what the device writes into.
    pub(crate) fn leak(&self) {
        if let Some((_, reg)) = self.0.lock().unwrap_or_else(|p| p.into_inner()).take() {
            std::mem::forget(reg);
        }
    }
}

unsafe extern "C" fn wake_parked(word: *mut std::ffi::c_void) {
    crate::sys::futex_wake_all_at(word.cast_const().cast());
}

/// Enqueues on `stream` a host function that wakes every process parked on the futex word
/// at `word`: after a GPU-side publication, readers parked on the odd sequence wake when the
/// stream has stored the even one (the driver cannot issue a `FUTEX_WAKE` itself).
///
/// # Safety
/// `stream` must be a live stream of a context bound to this thread. `word` is only a futex
/// key (never dereferenced), so it may be unmapped by the time the function runs.
pub(crate) unsafe fn enqueue_wake(
    stream: sys::CUstream,
    word: *const u32,
) -> Result<(), DriverError> {
    // SAFETY: `wake_parked` is a plain function with no captured state; the driver calls it
    // once on its own thread with `word`, which it only passes to FUTEX_WAKE.
    check(unsafe { sys::cuLaunchHostFunc(stream, Some(wake_parked), word.cast_mut().cast()) })
}

/// Enqueues on `stream` a write of `value` to the 64-bit word at device address `addr`.
/// The driver orders it after all work enqueued before it on `stream` (a system-scope
/// fence precedes the write), so a reader that sees `value` sees that work's results.
///
/// # Safety
/// `addr` must be an 8-byte aligned device address (device memory or registered host memory)
/// that stays valid until the stream has executed the write.
pub(crate) unsafe fn enqueue_write_u64(
    stream: sys::CUstream,
    addr: sys::CUdeviceptr,
    value: u64,
) -> Result<(), DriverError> {
    let flags = sys::CUstreamWriteValue_flags::CU_STREAM_WRITE_VALUE_DEFAULT as u32;
    // SAFETY: per this function's contract.
    check(unsafe { sys::cuStreamWriteValue64_v2(stream, addr, value, flags) })
}

/// Enqueues on `stream` a wait until the 64-bit word at `addr` is ≥ `value` (the driver's
/// GEQ compares the difference as signed, as `slots::geq_wrapping`). Work enqueued after it
/// runs only once the word got there; nothing on the host blocks.
///
/// # Safety
/// As [`enqueue_write_u64`]. The caller must bound the wait from the host (a timeout on a
/// later host-side wait): the driver cannot see this dependency and a word that never
/// reaches `value` stalls the stream.
pub(crate) unsafe fn enqueue_wait_geq_u64(
    stream: sys::CUstream,
    addr: sys::CUdeviceptr,
    value: u64,
) -> Result<(), DriverError> {
    let flags = sys::CUstreamWaitValue_flags::CU_STREAM_WAIT_VALUE_GEQ as u32;
    // SAFETY: per this function's contract.
    check(unsafe { sys::cuStreamWaitValue64_v2(stream, addr, value, flags) })
}

fn caps(ctx: &CudaContext) -> DeviceCaps {
    use sys::CUdevice_attribute as A;
    let q = |a| driver::past_stale_error(|| ctx.attribute(a)).ok();
    DeviceCaps {
        stream_mem_ops_64: q(A::CU_DEVICE_ATTRIBUTE_CAN_USE_64_BIT_STREAM_MEM_OPS),
        host_register: q(A::CU_DEVICE_ATTRIBUTE_HOST_REGISTER_SUPPORTED),
        can_map_host_memory: q(A::CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY),
    }
}

/// One trial: a stream writes a marker into a registered host word, the host waits for the
/// stream and checks the word.
fn trial_write(ctx: &Arc<CudaContext>) -> Result<(), String> {
    use std::sync::atomic::{AtomicU64, Ordering};
    const MARK: u64 = 0x5348_4d53_5452_4d31;
    // A page of its own: registering a page shared with other heap data could collide with
    // someone else's registration of it.
    let pg = crate::sys::page_size();
    let layout = std::alloc::Layout::from_size_align(pg, pg).map_err(|e| e.to_string())?;
    // SAFETY: the layout has a non-zero size.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    if ptr.is_null() {
        return Err("allocating one page failed".into());
    }
    let run = || -> Result<u64, String> {
        // SAFETY: the page stays allocated until after `reg` is dropped (end of this closure).
        let reg = unsafe { HostRegistration::new(ctx.clone(), ptr, 8) }
            .map_err(|e| format!("cuMemHostRegister_v2: {}", driver::describe(e)))?;
        let addr = reg
            .device_ptr(ptr)
            .ok_or("registered range misses the word")?;
        let stream = ctx
            .new_stream()
            .map_err(|e| format!("cuStreamCreate: {}", driver::describe(e)))?;
        // SAFETY: `addr` is the device address of the page-aligned, registered word, which
        // lives until after the synchronize below.
        unsafe { enqueue_write_u64(stream.cu_stream(), addr, MARK) }
            .map_err(|e| format!("cuStreamWriteValue64_v2: {}", driver::describe(e)))?;
        stream
            .synchronize()
            .map_err(|e| format!("cuStreamSynchronize: {}", driver::describe(e)))?;
        // SAFETY: `ptr` is page-aligned (so 8-byte aligned) and zero-initialized; the device
        // wrote it through the registration and the synchronize above ordered that write.
        Ok(unsafe { &*(ptr as *const AtomicU64) }.load(Ordering::Acquire))
    };
    let got = run();
    // SAFETY: allocated above with this layout; the registration was dropped inside `run`.
    unsafe { std::alloc::dealloc(ptr, layout) };
    match got? {
        MARK => Ok(()),
        other => Err(format!(
            "the word holds {other:#x} after the stream wrote {MARK:#x}"
        )),
    }
}

/// What one device was found to support, probed once per process: its three attributes,
/// and (made only when they are all set and someone needs it) one trial stream write.
struct DeviceProbe {
    device: i32,
    caps: Result<DeviceCaps, String>,
    trial: Option<Result<(), String>>,
}

/// The device's attributes and, when `trial` is asked for and the attributes allow it, the
/// trial write's result: each made once per process and device, whoever asks first (the
/// publication path, a GPU consumer).
fn probed(device: i32, trial: bool) -> (Result<DeviceCaps, String>, Option<Result<(), String>>) {
    static CACHE: Mutex<Vec<DeviceProbe>> = Mutex::new(Vec::new());
    let mut c = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let at = match c.iter().position(|p| p.device == device) {
        Some(i) => i,
        None => {
            let caps = driver::context("(probe)", device)
                .map(|ctx| caps(&ctx))
                .map_err(|e| e.to_string());
            c.push(DeviceProbe {
                device,
                caps,
                trial: None,
            });
            c.len() - 1
        }
    };
    let p = &mut c[at];
    if trial
        && p.trial.is_none()
        && p.caps
            .as_ref()
            .is_ok_and(|caps| probe::missing_capability(caps).is_none())
    {
        p.trial = Some(
            driver::context("(probe)", device)
                .map_err(|e| e.to_string())
                .and_then(|ctx| trial_write(&ctx)),
        );
    }
    (p.caps.clone(), p.trial.clone())
}

/// Whether stream memory operations work on `device` (the three attributes and the trial
/// write), whatever `SHMSTREAM_GPU_PUBLISH` says: GPU consumers ([`super::consumer`]) need
/// them.
pub(crate) fn memops_usable(device: i32) -> Result<(), String> {
    let (caps, trial) = probed(device, true);
    if let Some(missing) = probe::missing_capability(&caps?) {
        return Err(missing);
    }
    trial
        .unwrap_or_else(|| Err("not attempted".into()))
        .map_err(|e| format!("the trial stream write failed: {e}"))
}

/// The publication path of `device` under `SHMSTREAM_GPU_PUBLISH` (the device probed once
/// per process; `sync` makes no trial write).
pub(crate) fn path_for(device: i32) -> PathChoice {
    let env = std::env::var(probe::PUBLISH_ENV).ok();
    let sync = |reason| PathChoice {
        path: PublishPath::HostSync,
        reason,
    };
    match probe::env_setting(env.as_deref()) {
        Err(e) => sync(e),
        Ok(setting) => {
            let (caps, trial) = probed(device, setting != probe::PublishSetting::Sync);
            match caps {
                Err(e) => sync(e),
                // (`choose` takes the forced path before it looks at a trial a consumer made.)
                Ok(caps) => probe::choose(&caps, setting, trial),
            }
        }
    }
}
