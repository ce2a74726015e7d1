//! The ao-loop's GPU step, one camera frame in and its commands out, replayed as one CUDA
//! graph: the upload of the frame from page-locked memory, the signals kernel, the
//! reconstructor's `sgemv`, the integrator (modal control: the M2C `sgemv` and the clip
//! too) and the commands back into page-locked memory are captured once
//! ([`AoStep::capture`]) and launched with one call a frame instead of seven to nine. Where
//! the capture fails, or its trial frame does, the step stays with direct launches and
//! says why ([`AoStep::path`]).
//!
//! A capture may hold no cudarc bookkeeping: waiting inside a capture on an event recorded
//! outside it is invalid, and an event recorded inside one is not a node. So the step has
//! its own context handle with cudarc's per-buffer events off and one stream (every buffer
//! is used on it alone, in order), page-locked buffers of its own copied with the bare
//! driver calls, and its two timing events recorded as graph nodes
//! (`CU_EVENT_RECORD_EXTERNAL`). Host code touches the page-locked buffers only once the
//! stream has finished with them ([`AoStep::step`] waits before it returns; the accessors
//! wait first if a step failed half-way).

use std::cell::Cell;
use std::sync::Arc;

use shmstream::gpu::cudarc::driver::sys as dsys;
use shmstream::gpu::cudarc::driver::{
    CudaContext, CudaEvent, CudaGraph, CudaSlice, CudaStream, DevicePtr, DevicePtrMut,
    sys::CUevent_flags,
};

use crate::ao_gpu::{AoKernels, CentroidGrid};
use crate::gpu::{HostBuffer, Sgemv, driver};

/// How the frame becomes signals on the device.
#[derive(Debug, Clone, Copy)]
pub enum Signals<'a> {
    /// Shack-Hartmann centroids over the grid.
    Centroids(CentroidGrid),
    /// Pixel signals at these frame indices.
    Pixels(&'a [u32]),
}

/// A row-major float32 matrix.
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// `rows × cols` values, row by row.
    pub values: &'a [f32],
}

/// What [`AoStep::new`] uploads: the calibration, the signals, the matrices, the control law.
#[derive(Debug, Clone, Copy)]
pub struct Setup<'a> {
    /// Camera pixels per frame.
    pub pixels: usize,
    /// Dark frame, one value a pixel.
    pub dark: &'a [f32],
    /// Flat field, one value a pixel.
    pub flat: &'a [f32],
    /// The signals kernel.
    pub signals: Signals<'a>,
    /// Signals per frame (the reconstructor's columns).
    pub n_signals: usize,
    /// The reconstructor R (modes or actuators × signals).
    pub recon: Matrix<'a>,
    /// Modal control: M2C (actuators × modes); `None` for zonal control.
    pub m2c: Option<Matrix<'a>>,
    /// Commands per frame.
    pub actuators: usize,
    /// Integrator gain.
    pub gain: f32,
    /// Integrator leak.
    pub leak: f32,
    /// Commands are clipped to ±`clip`.
    pub clip: f32,
}

fn cuda<T>(what: &'static str) -> impl FnOnce(T) -> String
where
    T: std::fmt::Debug,
{
    move |e| format!("{what}: {e:?}")
}

#[derive(Debug)]
enum OnDevice {
    Centroids(CentroidGrid),
    Pixels { valid: CudaSlice<u32>, max: u32 },
}

/// The device side of the ao-loop: its buffers, kernels and cuBLAS handles, reused every
/// frame, and the graph that replays one frame.
pub struct AoStep {
    st: Arc<CudaStream>,
    kernels: AoKernels,
    gemv_r: Sgemv,
    signals: OnDevice,
    frame_host: HostBuffer<u16>,
    cmd_host: HostBuffer<f32>,
    frame: CudaSlice<u16>,
    dark: CudaSlice<f32>,
    flat: CudaSlice<f32>,
    sig: CudaSlice<f32>,
    r: CudaSlice<f32>,
    modes: CudaSlice<f32>,
    state: CudaSlice<f32>,
    m2c: Option<(CudaSlice<f32>, Sgemv)>,
    cmd: CudaSlice<f32>,
    start: CudaEvent,
    slopes_done: CudaEvent,
    gain: f32,
    leak: f32,
    clip: f32,
    graph: Option<(CudaGraph, usize)>,
    /// Why the step launches directly (no capture tried yet, or the capture failed).
    direct_because: String,
    /// Work enqueued on the stream and not yet waited for.
    in_flight: Cell<bool>,
}

impl AoStep {
    /// Uploads `s` to device `ordinal`; the step launches directly until [`Self::capture`].
    pub fn new(ordinal: usize, s: &Setup<'_>) -> Result<Self, String> {
        let ctx = CudaContext::new(ordinal).map_err(cuda("creating the CUDA context"))?;
        // SAFETY: cudarc's per-buffer events keep buffers used on several streams ordered.
        // This context handle is private to the step and has one stream, made just below;
        // every buffer the step makes is used on that stream only, in order, and freed on
        // it (stream-ordered) or after waiting for it (`Drop`).
        unsafe { ctx.disable_event_tracking() };
        let st = ctx.new_stream().map_err(cuda("creating a CUDA stream"))?;
        let up = |v: &[f32]| st.clone_htod(v).map_err(cuda("uploading"));
        if s.dark.len() != s.pixels || s.flat.len() != s.pixels {
            return Err(format!(
                "dark ({}) and flat ({}) must hold one value a pixel ({})",
                s.dark.len(),
                s.flat.len(),
                s.pixels
            ));
        }
        let signals = match s.signals {
            Signals::Centroids(grid) => OnDevice::Centroids(grid),
            Signals::Pixels(v) => OnDevice::Pixels {
                max: v.iter().copied().max().unwrap_or(0),
                valid: st
                    .clone_htod(v)
                    .map_err(cuda("uploading the valid pixels"))?,
            },
        };
        let m2c = match s.m2c {
            Some(m) => Some((up(m.values)?, Sgemv::new(st.clone(), m.rows, m.cols)?)),
            None => None,
        };
        let zeros = |n: usize| st.alloc_zeros::<f32>(n).map_err(cuda("cuMemAlloc"));
        let timed = Some(CUevent_flags::CU_EVENT_DEFAULT);
        Ok(Self {
            kernels: AoKernels::new(&ctx, st.clone())?,
            gemv_r: Sgemv::new(st.clone(), s.recon.rows, s.recon.cols)?,
            signals,
            frame_host: HostBuffer::new(&ctx, s.pixels)?,
            cmd_host: HostBuffer::new(&ctx, s.actuators)?,
            frame: st.alloc_zeros(s.pixels).map_err(cuda("cuMemAlloc"))?,
            dark: up(s.dark)?,
            flat: up(s.flat)?,
            sig: zeros(s.n_signals)?,
            r: up(s.recon.values)?,
            modes: zeros(s.recon.rows)?,
            state: zeros(s.recon.rows)?,
            m2c,
            cmd: zeros(s.actuators)?,
            start: ctx.new_event(timed).map_err(cuda("cuEventCreate"))?,
            slopes_done: ctx.new_event(timed).map_err(cuda("cuEventCreate"))?,
            gain: s.gain,
            leak: s.leak,
            clip: s.clip,
            graph: None,
            direct_because: "no graph captured".into(),
            in_flight: Cell::new(false),
            st,
        })
    }

    /// Captures one frame's work as a CUDA graph, instantiates it and runs it once on the
    /// frame in the page-locked buffer (a trial: its commands are that frame's, so call
    /// [`Self::reset`] after). On any failure the step keeps launching directly, and the
    /// error is returned and kept for [`Self::path`].
    pub fn capture(&mut self) -> Result<(), String> {
        let tried = self.try_capture();
        if let Err(e) = &tried {
            self.graph = None;
            self.direct_because = format!("graph capture failed: {e}");
        }
        tried
    }

    fn try_capture(&mut self) -> Result<(), String> {
        self.settle()?;
        let mode = dsys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
        self.st
            .begin_capture(mode)
            .map_err(cuda("cuStreamBeginCapture"))?;
        let enqueued = self.enqueue(true);
        // Ends the capture whatever happened: the stream leaves capture mode either way.
        let ended = self.st.end_capture(dsys::CUgraphInstantiate_flags(0));
        enqueued?;
        let graph = ended
            .map_err(cuda("cuStreamEndCapture / cuGraphInstantiate"))?
            .ok_or("the capture made no graph")?;
        let mut nodes = 0usize;
        // SAFETY: the graph is live (owned by `graph`); a null node array asks for the count.
        driver("cuGraphGetNodes", unsafe {
            dsys::cuGraphGetNodes(graph.cu_graph(), std::ptr::null_mut(), &mut nodes)
        })?;
        graph.upload().map_err(cuda("cuGraphUpload"))?;
        self.graph = Some((graph, nodes));
        // The trial: one launch, waited for, its events read.
        self.step().map(drop)
    }

    /// How each frame's device work is launched, for the report.
    pub fn path(&self) -> String {
        match &self.graph {
            Some((_, nodes)) => format!("one CUDA graph launch a frame ({nodes} nodes)"),
            None => format!("direct launches ({})", self.direct_because),
        }
    }

    /// Enqueues one frame's work on the stream; `capturing` records the timing events as
    /// graph nodes.
    fn enqueue(&mut self, capturing: bool) -> Result<(), String> {
        let st = self.st.cu_stream();
        let record = |ev: &CudaEvent| {
            let flags = if capturing {
                dsys::CUevent_record_flags::CU_EVENT_RECORD_EXTERNAL as u32
            } else {
                dsys::CUevent_record_flags::CU_EVENT_RECORD_DEFAULT as u32
            };
            // SAFETY: a live event and our own live stream, both of this context (bound
            // by `new` and by every cudarc call on this thread since).
            driver("cuEventRecordWithFlags", unsafe {
                dsys::cuEventRecordWithFlags(ev.cu_event(), st, flags)
            })
        };
        self.st
            .context()
            .bind_to_thread()
            .map_err(cuda("binding the context"))?;
        record(&self.start)?;
        let (dst, _) = self.frame.device_ptr_mut(&self.st);
        // SAFETY: `frame` and `frame_host` both hold `pixels` u16 (made so in `new`); the
        // host buffer is not lent out until the stream has run this copy (`settle`).
        driver("cuMemcpyHtoDAsync", unsafe {
            dsys::cuMemcpyHtoDAsync_v2(
                dst,
                self.frame_host.ptr().cast(),
                self.frame_host.bytes(),
                st,
            )
        })?;
        match &self.signals {
            OnDevice::Centroids(grid) => {
                self.kernels
                    .centroids(&self.frame, &self.dark, &self.flat, &mut self.sig, *grid)
            }
            OnDevice::Pixels { valid, max } => self.kernels.pixels(
                &self.frame,
                &self.dark,
                &self.flat,
                valid,
                &mut self.sig,
                *max,
            ),
        }?;
        record(&self.slopes_done)?;
        self.gemv_r.run(&self.r, &self.sig, &mut self.modes)?;
        match &self.m2c {
            Some((m2c, gemv)) => {
                self.kernels.integrate(
                    &mut self.state,
                    &self.modes,
                    self.gain,
                    self.leak,
                    None,
                    self.clip,
                )?;
                gemv.run(m2c, &self.state, &mut self.cmd)?;
                self.kernels.clip(&mut self.cmd, self.clip)?;
            }
            None => self.kernels.integrate(
                &mut self.state,
                &self.modes,
                self.gain,
                self.leak,
                Some(&mut self.cmd),
                self.clip,
            )?,
        }
        let (src, _) = self.cmd.device_ptr(&self.st);
        // SAFETY: `cmd` and `cmd_host` both hold `actuators` f32; the host buffer is not
        // lent out until the stream has run this copy (`settle`).
        driver("cuMemcpyDtoHAsync", unsafe {
            dsys::cuMemcpyDtoHAsync_v2(self.cmd_host.ptr().cast(), src, self.cmd_host.bytes(), st)
        })
    }

    /// Waits for work a failed step may have left on the stream.
    fn settle(&self) -> Result<(), String> {
        if self.in_flight.get() {
            self.st.synchronize().map_err(cuda("cuStreamSynchronize"))?;
            self.in_flight.set(false);
        }
        Ok(())
    }

    /// The page-locked frame buffer the next [`Self::step`] uploads.
    pub fn frame_mut(&mut self) -> Result<&mut [u16], String> {
        self.settle()?;
        // SAFETY: `ptr` holds `len` initialized u16 owned by this step; nothing on the
        // stream uses it now (settled), and no step can start while this borrow lives.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.frame_host.ptr(), self.frame_host.len()) })
    }

    /// One frame on the device, waited for; returns the upload + signals time, ns.
    pub fn step(&mut self) -> Result<u64, String> {
        self.settle()?;
        self.in_flight.set(true);
        match &self.graph {
            Some((g, _)) => g.launch().map_err(cuda("cuGraphLaunch"))?,
            None => self.enqueue(false)?,
        }
        self.settle()?;
        let ms = self
            .start
            .elapsed_ms(&self.slopes_done)
            .map_err(cuda("cuEventElapsedTime"))?;
        Ok((f64::from(ms) * 1e6).max(0.0) as u64)
    }

    /// The commands of the last [`Self::step`].
    pub fn commands(&self) -> Result<&[f32], String> {
        self.settle()?;
        // SAFETY: `ptr` holds `len` initialized f32 owned by this step; nothing on the
        // stream writes it now (settled), and no step can start while this borrow lives.
        Ok(unsafe { std::slice::from_raw_parts(self.cmd_host.ptr(), self.cmd_host.len()) })
    }

    /// Zeroes the integrator.
    pub fn reset(&mut self) -> Result<(), String> {
        self.settle()?;
        self.st
            .memset_zeros(&mut self.state)
            .map_err(cuda("cuMemsetD8"))?;
        self.st.synchronize().map_err(cuda("cuStreamSynchronize"))
    }
}

impl std::fmt::Debug for AoStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AoStep")
            .field("path", &self.path())
            .finish_non_exhaustive()
    }
}

impl Drop for AoStep {
    fn drop(&mut self) {
        // The page-locked buffers are freed after this: nothing may still copy into them.
        let _ = self.st.synchronize();
    }
}
