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
//! Steps 1-4 are captured once as a CUDA graph and replayed with one launch a frame
//! (`harness_sys::ao_step`; direct launches where the capture fails, or with
//! `SHMSTREAM_AO_GPU_GRAPH=0`); the host waits once per frame. Events around steps 1-2
//! give the stage log its "slopes done" time without another wait, so the report's
//! `slopes` is upload + signals and `recon` the rest up to the publish. The stage's
//! `device work` note says which launch path ran.
//!
//! Before it says ready, the stage runs [`SELF_CHECK_FRAMES`] frames through the CPU
//! stages and the GPU and fails if the commands differ: a wrong kernel cannot produce a
//! report. The floor ([`floor_compute`]) is the same device work on the same buffers with
//! no stream around it, a frame a camera period.

use std::path::{Path, PathBuf};

use harness_sys::ao_gpu::CentroidGrid;
use harness_sys::ao_step::{AoStep, Matrix, Setup, Signals};
use harness_sys::clock::monotonic_ns;
use harness_sys::gpu::cublas_available;

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

/// Set to `0` to launch the GPU form's device work directly each frame instead of replaying
/// it as one CUDA graph (to compare the two on a GPU).
pub const GRAPH_ENV: &str = "SHMSTREAM_AO_GPU_GRAPH";

/// The device side of the loop for geometry `g` on device `ordinal` ([`AoStep`]: its
/// buffers, kernels, cuBLAS handles), with one frame's work captured as a CUDA graph (unless
/// [`GRAPH_ENV`] is `0`; a failed capture leaves direct launches, [`AoStep::path`] says
/// which).
pub fn gpu_loop(g: &Geometry, ordinal: usize, gain: f32, leak: f32) -> Result<AoStep> {
    if !cublas_available() {
        bail!("libcublas cannot be loaded (add its folder to LD_LIBRARY_PATH)");
    }
    let cal = Calibration::synthetic(g);
    let valid: Vec<u32>;
    let signals = match g.kind {
        SignalKind::Centroids => {
            let [sy, sx] = g.subapertures;
            let [ch, cw] = g.cell();
            Signals::Centroids(CentroidGrid {
                w: g.wfs[1],
                sy,
                sx,
                ch,
                cw,
            })
        }
        SignalKind::Pixels => {
            valid = valid_pixels(g);
            Signals::Pixels(&valid)
        }
    };
    let mats = g.matrices();
    let values: Vec<Vec<f32>> = mats.iter().map(|&(r, c)| matrix(r, c)).collect();
    let as_matrix = |i: usize| Matrix {
        rows: mats[i].0,
        cols: mats[i].1,
        values: &values[i],
    };
    let mut step = AoStep::new(
        ordinal,
        &Setup {
            pixels: g.pixels(),
            dark: &cal.dark_f32(),
            flat: &cal.flat,
            signals,
            n_signals: g.signals,
            recon: as_matrix(0),
            m2c: (mats.len() > 1).then(|| as_matrix(1)),
            actuators: g.actuators,
            gain,
            leak,
            clip: CLIP,
        },
    )?;
    if std::env::var(GRAPH_ENV).as_deref() != Ok("0") {
        // A failure is kept for the report's note; the loop runs with direct launches.
        let _ = step.capture();
        step.reset()?;
    }
    Ok(step)
}

/// Runs [`SELF_CHECK_FRAMES`] camera frames through the CPU stages and `gpu` from a zero
/// integrator; fails naming the first command that differs by more than [`TOLERANCE`].
pub fn self_check(g: &Geometry, gpu: &mut AoStep, gain: f32, leak: f32) -> Result<()> {
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
    Ok(gpu.reset()?)
}

/// The file beside a GPU process's results that holds its [`AoStep::path`].
fn path_file(result_prefix: &Path) -> PathBuf {
    result_prefix.with_extension("aopath")
}

/// The launch path a GPU stage or floor process with results at `result_prefix` wrote, if
/// it wrote one (the note `device work`).
pub fn read_path(result_prefix: &Path) -> Option<String> {
    std::fs::read_to_string(path_file(result_prefix)).ok()
}

fn write_path(spec: &ChildSpec, gpu: &AoStep) -> Result<()> {
    let f = path_file(&spec.result_prefix);
    std::fs::write(&f, gpu.path()).with_context(|| format!("writing {}", f.display()))
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
    let mut wait = stage::FrameWait::new(ao, place.shares_here(place.slopes), &s.frame);
    let mut gpu = gpu_loop(&g, ordinal(spec)?, ao.gain, ao.leak)
        .with_context(|| format!("setting up the GPU form on {}", spec.job.device))?;
    self_check(&g, &mut gpu, ao.gain, ao.leak).with_context(|| gpu.path())?;
    write_path(spec, &gpu)?;
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
    let mut gpu = gpu_loop(&g, ordinal(spec)?, ao.gain, ao.leak)?;
    write_path(spec, &gpu)?;
    let frames = camera::frames(&g);
    let mut out = stage::Outputs::open(spec, &g, ao)?;
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
