//! The ao-loop's GPU form (`device = "cuda:N"`): slopes and reconstructor on the device,
//! in one process on the slopes core (the merged placement). Per frame:
//!
//! 1. the stage reads the camera frame from its stream straight into page-locked memory
//!    (the copy a CPU stage makes anyway), and `cuMemcpyHtoDAsync` uploads it as DMA;
//! 2. a kernel computes the signals (centroids or pixel signals, `ao_kernels.cu`);
//! 3. cuBLAS `sgemv` R · signals, the integrator kernel, `sgemv` M2C · state, the clip
//!    kernel (zonal control: one `sgemv`, the integrator writes the clipped commands);
//! 4. the commands come back into page-locked memory, one stream synchronize, and the
//!    stage publishes them on the (CPU) commands stream, as a DM driver reads them.
//!
//! Every step is enqueued on one CUDA stream; the host waits once per frame. Events
//! around steps 1-2 give the stage log its "slopes done" time without another wait, so
//! the report's `slopes` is upload + signals and `recon` the rest up to the publish.
//!
//! Before it says ready, the stage runs [`SELF_CHECK_FRAMES`] frames through the CPU
//! stages and the GPU and fails if the commands differ: a wrong kernel cannot produce a
//! report. The floor ([`floor_compute`]) is the same device work on the same buffers with
//! no stream around it, a frame a camera period.

use std::sync::Arc;

use harness_sys::ao_gpu::{AoKernels, CentroidGrid};
use harness_sys::clock::monotonic_ns;
use harness_sys::gpu::{Sgemv, cublas_available, pinned_zeroed};
use shmstream::gpu::cudarc::driver::{
    CudaContext, CudaEvent, CudaSlice, CudaStream, PinnedHostSlice, sys::CUevent_flags,
};

use super::between_frames;
use super::camera;
use super::geometry::{Geometry, SignalKind};
use super::placement::Placement;
use super::recon::{CLIP, Recon, matrix};
use super::slopes::{Calibration, Slopes, valid_pixels};
use super::stage::{self, STOP};
use crate::cases::wait_timeout;
use crate::error::{Context, Result, bail};
use crate::scenario::Device;
use crate::spawn::ChildSpec;

/// Frames the stage checks against the CPU stages before the run.
pub const SELF_CHECK_FRAMES: usize = 3;

/// Largest difference allowed between GPU and CPU commands (normalized stroke ±1):
/// summation order and fused multiply-adds differ, nothing else.
const TOLERANCE: f32 = 1e-3;

/// The device side of the loop: buffers, kernels, cuBLAS handles, reused every frame.
#[derive(Debug)]
pub struct GpuLoop {
    st: Arc<CudaStream>,
    kernels: AoKernels,
    gemv_r: Sgemv,
    signals: SignalsOnDevice,
    frame_host: PinnedHostSlice<u16>,
    frame: CudaSlice<u16>,
    dark: CudaSlice<f32>,
    flat: CudaSlice<f32>,
    sig: CudaSlice<f32>,
    r: CudaSlice<f32>,
    modes: CudaSlice<f32>,
    state: CudaSlice<f32>,
    /// Modal control: M2C on the device and its `sgemv`.
    m2c: Option<(CudaSlice<f32>, Sgemv)>,
    cmd: CudaSlice<f32>,
    cmd_host: PinnedHostSlice<f32>,
    start: CudaEvent,
    slopes_done: CudaEvent,
    gain: f32,
    leak: f32,
}

#[derive(Debug)]
enum SignalsOnDevice {
    Centroids(CentroidGrid),
    Pixels { valid: CudaSlice<u32>, max: u32 },
}

impl GpuLoop {
    /// Uploads the calibration and matrices of `g` to device `ordinal`.
    pub fn new(g: &Geometry, ordinal: usize, gain: f32, leak: f32) -> Result<Self> {
        if !cublas_available() {
            bail!("libcublas cannot be loaded (add its folder to LD_LIBRARY_PATH)");
        }
        let ctx = CudaContext::new(ordinal)?;
        // The context's default stream: with one stream cudarc records no per-buffer
        // events around each launch and copy (it does once a second stream exists).
        let st = ctx.default_stream();
        let kernels = AoKernels::new(&ctx, st.clone())?;
        let cal = Calibration::synthetic(g);
        let signals = match g.kind {
            SignalKind::Centroids => {
                let [sy, sx] = g.subapertures;
                let [ch, cw] = g.cell();
                SignalsOnDevice::Centroids(CentroidGrid {
                    w: g.wfs[1],
                    sy,
                    sx,
                    ch,
                    cw,
                })
            }
            SignalKind::Pixels => {
                let v = valid_pixels(g);
                SignalsOnDevice::Pixels {
                    max: v.iter().copied().max().unwrap_or(0),
                    valid: st.clone_htod(&v)?,
                }
            }
        };
        let mats = g.matrices();
        let (rr, rc) = mats[0];
        let m2c = match mats.get(1) {
            Some(&(ar, ac)) => Some((
                st.clone_htod(&matrix(ar, ac))?,
                Sgemv::new(st.clone(), ar, ac)?,
            )),
            None => None,
        };
        let timed = Some(CUevent_flags::CU_EVENT_DEFAULT);
        Ok(Self {
            kernels,
            gemv_r: Sgemv::new(st.clone(), rr, rc)?,
            signals,
            frame_host: pinned_zeroed(&ctx, g.pixels())?,
            frame: st.alloc_zeros(g.pixels())?,
            dark: st.clone_htod(&cal.dark_f32())?,
            flat: st.clone_htod(&cal.flat)?,
            sig: st.alloc_zeros(g.signals)?,
            r: st.clone_htod(&matrix(rr, rc))?,
            modes: st.alloc_zeros(rr)?,
            state: st.alloc_zeros(rr)?,
            m2c,
            cmd: st.alloc_zeros(g.actuators)?,
            cmd_host: pinned_zeroed(&ctx, g.actuators)?,
            start: ctx.new_event(timed)?,
            slopes_done: ctx.new_event(timed)?,
            st,
            gain,
            leak,
        })
    }

    /// The page-locked frame buffer the next [`Self::step`] uploads (waits for the last
    /// upload to finish first).
    pub fn frame_mut(&mut self) -> Result<&mut [u16]> {
        Ok(self.frame_host.as_mut_slice()?)
    }

    /// One frame on the device, waited for; returns the upload + signals time, ns.
    pub fn step(&mut self) -> Result<u64> {
        self.start.record(&self.st)?;
        self.st.memcpy_htod(&self.frame_host, &mut self.frame)?;
        match &self.signals {
            SignalsOnDevice::Centroids(grid) => {
                self.kernels
                    .centroids(&self.frame, &self.dark, &self.flat, &mut self.sig, *grid)
            }
            SignalsOnDevice::Pixels { valid, max } => self.kernels.pixels(
                &self.frame,
                &self.dark,
                &self.flat,
                valid,
                &mut self.sig,
                *max,
            ),
        }?;
        self.slopes_done.record(&self.st)?;
        self.gemv_r.run(&self.r, &self.sig, &mut self.modes)?;
        match &self.m2c {
            Some((m2c, gemv)) => {
                self.kernels.integrate(
                    &mut self.state,
                    &self.modes,
                    self.gain,
                    self.leak,
                    None,
                    CLIP,
                )?;
                gemv.run(m2c, &self.state, &mut self.cmd)?;
                self.kernels.clip(&mut self.cmd, CLIP)?;
            }
            None => self.kernels.integrate(
                &mut self.state,
                &self.modes,
                self.gain,
                self.leak,
                Some(&mut self.cmd),
                CLIP,
            )?,
        }
        self.st.memcpy_dtoh(&self.cmd, &mut self.cmd_host)?;
        self.st.synchronize()?;
        let ms = self.start.elapsed_ms(&self.slopes_done)?;
        Ok((f64::from(ms) * 1e6).max(0.0) as u64)
    }

    /// The commands of the last [`Self::step`].
    pub fn commands(&self) -> Result<&[f32]> {
        Ok(self.cmd_host.as_slice()?)
    }

    /// Zeroes the integrator (after the self-check).
    pub fn reset(&mut self) -> Result<()> {
        self.st.memset_zeros(&mut self.state)?;
        Ok(self.st.synchronize()?)
    }
}

/// Runs [`SELF_CHECK_FRAMES`] camera frames through the CPU stages and `gpu` from a zero
/// integrator; fails naming the first command that differs by more than [`TOLERANCE`].
pub fn self_check(g: &Geometry, gpu: &mut GpuLoop, gain: f32, leak: f32) -> Result<()> {
    let frames = camera::frames(g);
    let mut slopes = Slopes::new(g);
    let mut recon = Recon::new(g, 1, &[], gain, leak)?;
    let mut sig = vec![0.0f32; g.signals];
    let mut want = vec![0.0f32; g.actuators];
    for (k, f) in frames.iter().cycle().take(SELF_CHECK_FRAMES).enumerate() {
        slopes.compute(f, &mut sig);
        recon.step(&sig, &mut want);
        gpu.frame_mut()?.copy_from_slice(f);
        gpu.step()?;
        let got = gpu.commands()?;
        if let Some((i, (a, b))) = got
            .iter()
            .zip(&want)
            .enumerate()
            .find(|(_, (a, b))| (*a - *b).abs() > TOLERANCE || !a.is_finite())
        {
            bail!(
                "the GPU form's commands differ from the CPU stages' at frame {k}, actuator \
                 {i}: {a} against {b} (tolerance {TOLERANCE})"
            );
        }
    }
    gpu.reset()
}

fn ordinal(spec: &ChildSpec) -> Result<usize> {
    match spec.job.device {
        Device::Cuda(i) => Ok(i as usize),
        Device::Cpu => bail!("the GPU form needs device = \"cuda:N\""),
    }
}

/// The GPU stage process: frame in, commands out, logged as the merged CPU stage.
pub fn stage(spec: &ChildSpec) -> Result<()> {
    let (g, ao) = stage::geometry(spec)?;
    let s = stage::open(spec)?;
    let to = wait_timeout(spec);
    let place = Placement::of(&spec.job);
    let mut wait = stage::FrameWait::new(ao, place.shares(place.slopes), &s.frame);
    let mut gpu = GpuLoop::new(&g, ordinal(spec)?, ao.gain, ao.leak)
        .with_context(|| format!("setting up the GPU form on {}", spec.job.device))?;
    self_check(&g, &mut gpu, ao.gain, ao.leak)?;
    let guard = s.commands.lock(to).context("locking the commands stream")?;
    let mut log = Vec::with_capacity(place.frames(&spec.job) as usize);
    let mut input = s.frame.cursor().context("a cursor on the frame stream")?;
    let regions = between_frames::open(spec, &g)?;
    let mut bare = regions
        .as_ref()
        .map(|r| between_frames::Receiver::camera(r, spec, &g));
    stage::mark_ready(&s.ready, 1, to)?;
    loop {
        let info = wait.next(&s.frame, &mut input, gpu.frame_mut()?, to)?;
        let t_in = monotonic_ns();
        if info.frame_id == STOP {
            guard.write_slice_frame(gpu.commands()?, STOP)?;
            break;
        }
        let slopes_ns = gpu.step()?;
        guard.write_slice_frame(gpu.commands()?, info.frame_id)?;
        log.push([info.frame_id, t_in, monotonic_ns(), t_in + slopes_ns]);
        stage::kill_me_after("slopes", log.len());
        if let Some(bare) = bare.as_mut() {
            // The hop alone: the device work keeps the passes' floor.
            bare.take(info.frame_id, gpu.frame_mut()?)?;
        }
    }
    stage::write_log(&spec.result_prefix.with_extension("aolog"), &log)
}

/// Floor of the GPU form's compute: the same device work with no stream around it, one
/// frame a camera period ([`stage::paced_floor`]). The frame is copied into page-locked
/// memory before the clock starts. Log: `[i, upload + signals ns, the rest up to the
/// commands on the host ns, their bare publication ns]`.
pub fn floor_compute(spec: &ChildSpec) -> Result<()> {
    let (g, ao) = stage::geometry(spec)?;
    let mut gpu = GpuLoop::new(&g, ordinal(spec)?, ao.gain, ao.leak)?;
    let frames = camera::frames(&g);
    let mut out = stage::Outputs::create(spec, &g, ao)?;
    stage::paced_floor(spec, |i| {
        gpu.frame_mut()?.copy_from_slice(&frames[i % frames.len()]);
        let t0 = monotonic_ns();
        let slopes_ns = gpu.step()?;
        let cmd = gpu.commands()?;
        let total = monotonic_ns() - t0;
        let sent = out.commands.publish(cmd)?;
        Ok([slopes_ns.min(total), total - slopes_ns.min(total), sent])
    })
}
