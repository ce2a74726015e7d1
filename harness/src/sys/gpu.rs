//! cuBLAS for the GPU MVM cases: `sgemv` on a row-major float32 matrix, behind a safe API
//! that checks every length before the (unsafe) cuBLAS call, and a presence probe for
//! `libcublas` (cudarc loads it on first use and panics when it is missing); page-locked
//! host buffers; and the copy floors' bare driver copies ([`RawCopies`]).

use std::sync::Arc;

use shmstream::gpu::cudarc::cublas::{CudaBlas, Gemv, GemvConfig, sys as blas_sys};
use shmstream::gpu::cudarc::driver::sys as dsys;
use shmstream::gpu::cudarc::driver::{
    CudaContext, CudaSlice, CudaStream, DeviceRepr, PinnedHostSlice, ValidAsZeroBits,
};

/// Whether `libcublas` can be loaded (never panics).
pub fn cublas_available() -> bool {
    // SAFETY: only tries to dlopen the library by its known names; no cuBLAS call is made.
    unsafe { blas_sys::is_culib_present() }
}

/// y = A·x for one row-major `rows × cols` float32 matrix, on one CUDA stream.
#[derive(Debug)]
pub struct Sgemv {
    blas: CudaBlas,
    rows: usize,
    cols: usize,
}

impl Sgemv {
    /// A cuBLAS handle bound to `stream` (check [`cublas_available`] first: this loads it).
    pub fn new(stream: Arc<CudaStream>, rows: usize, cols: usize) -> Result<Self, String> {
        if !cublas_available() {
            return Err("libcublas cannot be loaded (add its folder to LD_LIBRARY_PATH)".into());
        }
        if i32::try_from(rows.max(cols)).is_err() {
            return Err(format!("{rows}x{cols} is too large for cuBLAS sgemv"));
        }
        let blas = CudaBlas::new(stream).map_err(|e| format!("cublasCreate: {e:?}"))?;
        Ok(Self { blas, rows, cols })
    }

    /// Enqueues y = A·x on the handle's stream (no host wait).
    pub fn run(
        &self,
        a: &CudaSlice<f32>,
        x: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
    ) -> Result<(), String> {
        if a.len() != self.rows * self.cols || x.len() != self.cols || y.len() != self.rows {
            return Err(format!(
                "sgemv shapes: A has {} elements, x {}, y {}; want {}x{}",
                a.len(),
                x.len(),
                y.len(),
                self.rows,
                self.cols
            ));
        }
        // Row-major A (rows × cols) is the column-major matrix Aᵀ (cols × rows, lda = cols):
        // y = A·x is gemv with op T, m = cols, n = rows.
        let cfg = GemvConfig {
            trans: blas_sys::cublasOperation_t::CUBLAS_OP_T,
            m: self.cols as i32,
            n: self.rows as i32,
            alpha: 1.0f32,
            lda: self.cols as i32,
            incx: 1,
            beta: 0.0f32,
            incy: 1,
        };
        // SAFETY: the lengths were checked above (A holds rows·cols elements, x cols, y rows),
        // the dimensions fit in i32 (checked in `new`), and cudarc orders the three buffers on
        // the handle's stream (it waits for their pending work and records this use; where
        // a context has its events off, `ao_step`, all of its buffers live on this stream).
        unsafe { self.blas.gemv(cfg, a, x, y) }.map_err(|e| format!("cublasSgemv: {e:?}"))
    }
}

/// `len` zeroed values of page-locked host memory (`cuMemHostAlloc`, flags 0, as the
/// library's staging buffers), for floors and stages that move host data across the bus
/// as DMA.
pub fn pinned_zeroed<T: DeviceRepr + ValidAsZeroBits + Default + Copy>(
    ctx: &Arc<CudaContext>,
    len: usize,
) -> Result<PinnedHostSlice<T>, String> {
    // SAFETY: the memory is uninitialized after the call; it is filled below before anyone
    // can read it (the only access is through this function's return value), and every
    // `T` used here (f32, u16) is valid for any bit pattern anyway.
    let mut p = unsafe { ctx.alloc_pinned_with_flags::<T>(len, 0) }
        .map_err(|e| format!("cuMemHostAlloc of {len} values: {e:?}"))?;
    p.as_mut_slice()
        .map_err(|e| format!("mapping pinned memory: {e:?}"))?
        .fill(T::default());
    Ok(p)
}

/// Plain buffers for the GPU copy floors, moved with the bare driver calls: `buffers` device
/// buffers of `len` float32 (`cuMemAlloc`) and two page-locked host buffers (`cuMemHostAlloc`,
/// flags 0: a write and a read stage, as the library's handle has), copied with
/// `cuMemcpy*Async` as the library's own writes and reads copy, and waited for with
/// `cuStreamSynchronize` or, after [`RawCopies::use_flag_wait`], a stream-written host word. cudarc's safe copies would add their event
/// waits and records to every copy, which the library does not pay: such a floor is slower
/// than what it bounds (an H200 run read host-slice rows 1.4-1.7× faster than it).
#[derive(Debug)]
pub struct RawCopies {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    dev: Vec<dsys::CUdeviceptr>,
    host: [HostBuffer<f32>; 2],
    len: usize,
    /// With [`RawCopies::use_flag_wait`]: a page-locked, device-mapped word the stream writes
    /// (its host and device addresses) and the last value written, so waits spin on it.
    flag: Option<(*mut u64, dsys::CUdeviceptr)>,
    flag_value: std::cell::Cell<u64>,
    /// Copies enqueued and not yet waited for.
    in_flight: std::cell::Cell<bool>,
}

/// A driver call's result, its error naming the call.
pub(crate) fn driver(what: &str, r: dsys::CUresult) -> Result<(), String> {
    r.result().map_err(|e| format!("{what}: {e:?}"))
}

/// `len` values of page-locked host memory (`cuMemHostAlloc`, flags 0, as the library's
/// staging buffers), zeroed, freed when dropped, with no event: its owner copies it with the
/// bare driver calls and lends it out only once no copy is in flight.
#[derive(Debug)]
pub(crate) struct HostBuffer<T> {
    ctx: Arc<CudaContext>,
    ptr: *mut T,
    len: usize,
}

impl<T: Copy> HostBuffer<T> {
    /// Allocates on `ctx` (bound to this thread here).
    pub(crate) fn new(ctx: &Arc<CudaContext>, len: usize) -> Result<Self, String> {
        let bytes = (len * std::mem::size_of::<T>()).max(1);
        ctx.bind_to_thread()
            .map_err(|e| format!("binding the context: {e:?}"))?;
        let mut p: *mut std::ffi::c_void = std::ptr::null_mut();
        // SAFETY: the context is bound to this thread; `p` is a valid out-pointer.
        driver("cuMemHostAlloc", unsafe {
            dsys::cuMemHostAlloc(&mut p, bytes, 0)
        })?;
        // SAFETY: `p` points to `bytes` fresh bytes nothing else uses; all-zero bits are a
        // valid u16 and f32, the only `T` used here.
        unsafe { std::ptr::write_bytes(p.cast::<u8>(), 0, bytes) };
        Ok(Self {
            ctx: ctx.clone(),
            ptr: p.cast(),
            len,
        })
    }

    /// The first value's address (for the driver's copies, and the owner's slices).
    pub(crate) fn ptr(&self) -> *mut T {
        self.ptr
    }

    /// Values.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes.
    pub(crate) fn bytes(&self) -> usize {
        self.len * std::mem::size_of::<T>()
    }
}

impl<T> Drop for HostBuffer<T> {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: allocated by `new`, freed once; owners wait for their stream before
            // their buffers drop.
            let _ = unsafe { dsys::cuMemFreeHost(self.ptr.cast()) };
        }
    }
}

impl RawCopies {
    /// Allocates the buffers on `stream`'s context, all zeroed.
    pub fn new(stream: Arc<CudaStream>, buffers: usize, len: usize) -> Result<Self, String> {
        let ctx = stream.context().clone();
        let bytes = len * std::mem::size_of::<f32>();
        let host = [HostBuffer::new(&ctx, len)?, HostBuffer::new(&ctx, len)?];
        // Owned from here: a failure below frees what was allocated (Drop).
        let mut this = Self {
            ctx,
            stream,
            dev: Vec::with_capacity(buffers),
            host,
            len,
            flag: None,
            flag_value: std::cell::Cell::new(0),
            in_flight: std::cell::Cell::new(false),
        };
        for _ in 0..buffers {
            let mut d: dsys::CUdeviceptr = 0;
            // SAFETY: the context is bound; `d` is a valid out-pointer.
            driver("cuMemAlloc", unsafe {
                dsys::cuMemAlloc_v2(&mut d, bytes.max(1))
            })?;
            this.dev.push(d);
            // SAFETY: `d` is the device allocation of `bytes` (≥ 1) bytes just made.
            driver("cuMemsetD8", unsafe { dsys::cuMemsetD8_v2(d, 0, bytes) })?;
        }
        Ok(this)
    }

    /// Page-locked host buffer `i` (0 or 1), after waiting for copies still in flight.
    pub fn host(&mut self, i: usize) -> Result<&mut [f32], String> {
        if self.in_flight.get() {
            self.wait()?;
        }
        let p = self.host[i.min(1)].ptr();
        // SAFETY: `p` holds `len` initialized f32 (zeroed, then only written as f32), owned
        // by this value; no copy is in flight (waited for above), and none can be enqueued
        // while this borrow (of all of `self`) lives.
        Ok(unsafe { std::slice::from_raw_parts_mut(p, self.len) })
    }

    fn dev(&self, i: usize) -> Result<dsys::CUdeviceptr, String> {
        self.dev
            .get(i)
            .copied()
            .ok_or_else(|| format!("no device buffer {i} (of {})", self.dev.len()))
    }

    /// Waits for everything enqueued so far: `cuStreamSynchronize`, or with
    /// [`RawCopies::use_flag_wait`] the stream writes a new value into a mapped host word and the
    /// host spins until it is there (what GPU-side publication's readers wait for, minus the
    /// library's bookkeeping).
    pub fn wait(&self) -> Result<(), String> {
        let st = self.stream.cu_stream();
        let Some((host, dev)) = self.flag else {
            // SAFETY: our own live stream.
            driver("cuStreamSynchronize", unsafe {
                dsys::cuStreamSynchronize(st)
            })?;
            self.in_flight.set(false);
            return Ok(());
        };
        let v = self.flag_value.get() + 1;
        self.flag_value.set(v);
        let flags = dsys::CUstreamWriteValue_flags::CU_STREAM_WRITE_VALUE_DEFAULT as u32;
        // SAFETY: `dev` is the device address of the live, 8-aligned mapped word.
        driver("cuStreamWriteValue64", unsafe {
            dsys::cuStreamWriteValue64_v2(st, dev, v, flags)
        })?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut spin = shmstream::spin::Spin::new();
        // SAFETY: `host` is the live, 8-aligned word; the device writes it, so it is read
        // volatile.
        while unsafe { std::ptr::read_volatile(host) } != v {
            if std::time::Instant::now() > deadline {
                return Err("the stream's flag write did not land in 10 s".into());
            }
            spin.pause();
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        self.in_flight.set(false);
        Ok(())
    }

    /// Makes [`RawCopies::wait`] spin on a stream-written host word instead of
    /// `cuStreamSynchronize` (needs 64-bit stream memory operations: a device the library's
    /// probe puts on the GPU-side publication path).
    pub fn use_flag_wait(&mut self) -> Result<(), String> {
        let mut p: *mut std::ffi::c_void = std::ptr::null_mut();
        // SAFETY: the context is bound (by `new` on this thread); `p` is a valid out-pointer.
        driver("cuMemHostAlloc", unsafe {
            dsys::cuMemHostAlloc(&mut p, 4096, dsys::CU_MEMHOSTALLOC_DEVICEMAP)
        })?;
        // SAFETY: `p` points to 4096 fresh page-locked bytes.
        unsafe { std::ptr::write_bytes(p.cast::<u8>(), 0, 8) };
        let mut d: dsys::CUdeviceptr = 0;
        // SAFETY: `p` was allocated with DEVICEMAP just above.
        let got = driver("cuMemHostGetDevicePointer", unsafe {
            dsys::cuMemHostGetDevicePointer_v2(&mut d, p, 0)
        });
        if let Err(e) = got {
            // SAFETY: allocated above, unused.
            let _ = unsafe { dsys::cuMemFreeHost(p) };
            return Err(e);
        }
        self.flag = Some((p.cast(), d));
        Ok(())
    }

    /// Device buffer `from` → page-locked host buffer `to`, enqueued only (see
    /// [`RawCopies::wait`]).
    pub fn enqueue_dtoh(&self, from: usize, to: usize) -> Result<(), String> {
        let (d, h) = (self.dev(from)?, self.host[to.min(1)].ptr());
        // SAFETY: both buffers hold `bytes()` bytes and are owned by this value; `host()`
        // waits for the copy before it lends the host buffer out.
        let r = unsafe {
            dsys::cuMemcpyDtoHAsync_v2(h.cast(), d, self.bytes(), self.stream.cu_stream())
        };
        self.in_flight.set(true);
        driver("cuMemcpyDtoHAsync", r)
    }

    /// Device buffer `from` → device buffer `to`, enqueued only (see [`RawCopies::wait`]).
    pub fn enqueue_dtod(&self, from: usize, to: usize) -> Result<(), String> {
        let (s, d) = (self.dev(from)?, self.dev(to)?);
        // SAFETY: both device buffers hold `bytes()` bytes and are owned by this value.
        let r = unsafe { dsys::cuMemcpyDtoDAsync_v2(d, s, self.bytes(), self.stream.cu_stream()) };
        self.in_flight.set(true);
        driver("cuMemcpyDtoDAsync", r)
    }

    /// Host buffer `from` → device buffer `to`, enqueued only (see [`RawCopies::wait`]).
    pub fn enqueue_htod(&self, from: usize, to: usize) -> Result<(), String> {
        let (h, d) = (self.host[from.min(1)].ptr(), self.dev(to)?);
        // SAFETY: both buffers hold `bytes()` bytes and are owned by this value; `host()`
        // waits for the copy before it lends the host buffer out.
        let r = unsafe {
            dsys::cuMemcpyHtoDAsync_v2(d, h.cast(), self.bytes(), self.stream.cu_stream())
        };
        self.in_flight.set(true);
        driver("cuMemcpyHtoDAsync", r)
    }

    fn bytes(&self) -> usize {
        self.len * std::mem::size_of::<f32>()
    }

    /// Host buffer `from` → device buffer `to`, then waits for it.
    pub fn htod(&self, from: usize, to: usize) -> Result<(), String> {
        self.enqueue_htod(from, to)?;
        self.wait()
    }

    /// Device buffer `from` → host buffer `to`, then waits for it.
    pub fn dtoh(&self, from: usize, to: usize) -> Result<(), String> {
        self.enqueue_dtoh(from, to)?;
        self.wait()
    }

    /// Device buffer `from` → device buffer `to`, then waits for it.
    pub fn dtod(&self, from: usize, to: usize) -> Result<(), String> {
        self.enqueue_dtod(from, to)?;
        self.wait()
    }

    /// Device buffer `path[0]` → `path[1]` → … enqueued back to back on the stream, then one
    /// wait for all of them.
    pub fn dtod_chain(&self, path: &[usize]) -> Result<(), String> {
        for w in path.windows(2) {
            self.enqueue_dtod(w[0], w[1])?;
        }
        self.wait()
    }
}

impl Drop for RawCopies {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_err() {
            return;
        }
        // SAFETY: our own stream; afterwards no copy uses the buffers, each allocated above
        // and freed once here (the host buffers free themselves after this, as fields).
        unsafe {
            let _ = dsys::cuStreamSynchronize(self.stream.cu_stream());
            for d in self.dev.drain(..) {
                let _ = dsys::cuMemFree_v2(d);
            }
            if let Some((h, _)) = self.flag.take() {
                let _ = dsys::cuMemFreeHost(h.cast());
            }
        }
    }
}
