//! The cases, by role. Each role runs in its own pinned process (see [`crate::spawn`]).
//!
//! - [`roundtrip`], [`pingpong`], [`mvm`]: the library's side ("ours").
//! - [`crate::floor`]: the same loops on plain memory.
//! - [`gpu`]: GPU variants (roundtrip, pingpong echo, MVM with cuBLAS) and their floors;
//!   skipped with a reason, never failed, where no CUDA device is usable.
//!
//! The parent creates every stream a job uses ([`create_streams`]) and keeps the
//! handles until the children are done, so names, cleanup and `notify` flags live in one
//! place; the children only open.

pub mod ao;
pub mod bridge;
pub mod gpu;
pub mod mvm;
pub mod op;
pub mod pingpong;
pub mod roundtrip;

use std::path::{Path, PathBuf};
use std::time::Duration;

use hdrhistogram::Histogram;
use shmstream::{Dtype, Stream, StreamOptions, WaitStrategy};

use crate::error::{Context, Result, bail};
use crate::measure::Measured;
use crate::scenario::{Job, Kind, Wait};
use crate::spawn::{ChildSpec, Names, Role};

/// Runs one role in this (child) process; measuring roles return their measurement.
pub fn run_role(spec: &ChildSpec) -> Result<Option<(Measured, Histogram<u64>)>> {
    let m = match spec.role {
        Role::Roundtrip => {
            Some(with_dtype!(spec.job.dtype.as_str(), T => roundtrip::run::<T>(spec))?)
        }
        Role::PingWriter => {
            Some(with_dtype!(spec.job.dtype.as_str(), T => pingpong::writer::<T>(spec))?)
        }
        Role::PingReader => {
            with_dtype!(spec.job.dtype.as_str(), T => pingpong::reader::<T>(spec))?;
            None
        }
        Role::MvmDriver => Some(mvm::driver(spec)?),
        Role::MvmCompute => {
            mvm::compute(spec)?;
            None
        }
        Role::FloorPingWriter => Some(crate::floor::ping_writer(spec)?),
        Role::FloorPingReader => {
            crate::floor::ping_reader(spec)?;
            None
        }
        Role::GpuRoundtrip => Some(gpu::roundtrip(spec)?),
        Role::GpuPingWriter => Some(gpu::ping_writer(spec)?),
        Role::GpuPingReader => {
            gpu::ping_reader(spec)?;
            None
        }
        Role::GpuMvmDriver => Some(gpu::mvm_driver(spec)?),
        Role::GpuMvmCompute => {
            gpu::mvm_compute(spec)?;
            None
        }
        Role::FloorGpuCopy => Some(gpu::floor_copy(spec)?),
        Role::FloorGpuMvm => Some(gpu::floor_mvm(spec)?),
        Role::AoCamera => ao::stage::camera(spec).map(|()| None)?,
        // The GPU form's one process takes the slopes role (slopes and recon on the device).
        Role::AoSlopes if spec.job.device.is_gpu() => ao::gpu::stage(spec).map(|()| None)?,
        Role::AoSlopes => ao::stage::slopes(spec).map(|()| None)?,
        Role::AoRecon => ao::stage::recon(spec).map(|()| None)?,
        Role::AoFloorCompute if spec.job.device.is_gpu() => {
            ao::gpu::floor_compute(spec).map(|()| None)?
        }
        Role::AoFloorCompute => ao::stage::floor_compute(spec).map(|()| None)?,
        Role::Op => Some(with_dtype!(spec.job.dtype.as_str(), T => op::run::<T>(spec))?),
    };
    Ok(m)
}

/// Runs `$body` with `$T` bound to the Rust element type of a numpy dtype name
/// (the library's [`shmstream::with_dtype`] after parsing the name).
macro_rules! with_dtype {
    ($dtype:expr, $T:ident => $body:expr) => {
        match shmstream::Dtype::from_numpy_name($dtype) {
            Some(d) => shmstream::with_dtype!(d, $T => $body),
            None => Err($crate::error::Error::msg(format!(
                "unsupported dtype {:?}",
                $dtype
            ))),
        }
    };
}
pub(crate) use with_dtype;

/// A buffer of `n` elements whose pages are really allocated. `vec![x; n]` of a zero
/// value comes from `calloc`: its pages all map the kernel's shared zero page until
/// written, so copying *from* it reads one hot 4 KiB page and flatters the copy. Every
/// element is written once here (the floors use non-zero buffers, which are written too).
pub fn touched_buffer<T: shmstream::Element>(n: usize) -> Vec<T> {
    let mut v = vec![T::default(); n];
    for x in &mut v {
        *x = std::hint::black_box(T::default());
    }
    v
}

/// `n` touched elements starting on a page boundary. Shared payloads start on a page too,
/// so the library and the floors copy at the same relative alignment of source and
/// destination (`memcpy`'s speed depends on it, e.g. through 4 KiB aliasing), whatever
/// addresses the allocator hands out on a given host.
#[derive(Debug)]
pub struct PageBuf<T> {
    v: Vec<T>,
    start: usize,
    n: usize,
}

impl<T: shmstream::Element> PageBuf<T> {
    /// A page-aligned buffer of `n` elements, every page written once.
    pub fn new(n: usize) -> Self {
        let extra = 4096 / std::mem::size_of::<T>().max(1);
        let v = touched_buffer::<T>(n + extra);
        let start = v.as_ptr().align_offset(4096).min(extra);
        PageBuf { v, start, n }
    }

    /// The elements.
    pub fn as_slice(&self) -> &[T] {
        &self.v[self.start..self.start + self.n]
    }

    /// The elements, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.v[self.start..self.start + self.n]
    }
}

/// The library's dtype for a numpy name.
pub fn dtype_of(name: &str) -> Result<Dtype> {
    Dtype::from_numpy_name(name).with_context(|| format!("shmstream does not know dtype {name:?}"))
}

/// The four streams of an MVM job, opened by its driver and compute processes alike.
pub struct MvmStreams {
    /// The matrix (written once by the driver).
    pub matrix: Stream,
    /// x, published by the driver each iteration.
    pub x: Stream,
    /// y = A·x, published by the compute process.
    pub y: Stream,
    /// Control: the driver's stop signal.
    pub ctl: Stream,
}

impl MvmStreams {
    /// Opens the job's matrix, x, y and control streams.
    pub fn open(spec: &ChildSpec) -> Result<Self> {
        let n = &spec.names;
        Ok(Self {
            matrix: Stream::open(&n.matrix).context("opening the matrix stream")?,
            x: Stream::open(&n.data).context("opening the x stream")?,
            y: Stream::open(&n.ack).context("opening the y stream")?,
            ctl: Stream::open(&n.ctl).context("opening the control stream")?,
        })
    }
}

/// The commands a driving process sends its partner on a control stream (one `u64` per
/// publication, each followed by a data frame that wakes the partner): the partner's side.
pub struct Commands<'a> {
    ctl: &'a Stream,
    seen: u64,
}

impl<'a> Commands<'a> {
    /// Reads `ctl` from its current count on: call before saying "ready".
    pub fn new(ctl: &'a Stream) -> Self {
        Commands {
            seen: ctl.count(),
            ctl,
        }
    }

    /// The command published since the last call, if any (one count load when none).
    pub fn next(&mut self) -> Result<Option<u64>> {
        if self.ctl.count() == self.seen {
            return Ok(None);
        }
        let mut v = [0u64];
        self.seen = self
            .ctl
            .read_into_slice(&mut v)
            .context("reading the control stream")?;
        Ok(Some(v[0]))
    }
}

/// The child of `job` that times the floor in alternation with ours, where one does: the
/// op child, the CPU roundtrip's, the CPU ping-pong's writer, the CPU MVM's compute process.
pub fn floor_timer(job: &Job) -> Option<Role> {
    match job.kind {
        Kind::Op => Some(Role::Op),
        _ if job.device.is_gpu() => None,
        Kind::Roundtrip => Some(Role::Roundtrip),
        Kind::Pingpong => Some(Role::PingWriter),
        Kind::Mvm => Some(Role::MvmCompute),
        _ => None,
    }
}

/// Where a child that times its floor beside ours ([`floor_timer`]) writes the floor's
/// result, given its own prefix.
pub fn floor_prefix(prefix: &Path) -> PathBuf {
    let mut name = prefix.file_name().unwrap_or_default().to_os_string();
    name.push("-floor");
    prefix.with_file_name(name)
}

/// How long one wait inside a child may block before it gives up.
pub fn wait_timeout(spec: &ChildSpec) -> Option<Duration> {
    Some(Duration::from_secs_f64(spec.wait_timeout_s))
}

/// The streams of one job, created by the parent and held until its children exit.
#[derive(Debug, Default)]
pub struct JobStreams {
    streams: Vec<Stream>,
}

impl From<Vec<Stream>> for JobStreams {
    /// Takes `streams` over: they are unlinked when it drops.
    fn from(streams: Vec<Stream>) -> Self {
        JobStreams { streams }
    }
}

impl JobStreams {
    /// Hands the streams over to a caller that owns them from then on (a creator pushes
    /// each stream here as it comes, so that a later failure unlinks the earlier ones).
    fn into_streams(mut self) -> Vec<Stream> {
        std::mem::take(&mut self.streams)
    }
}

impl Drop for JobStreams {
    fn drop(&mut self) {
        for s in self.streams.drain(..) {
            let name = s.name().to_string();
            drop(s);
            // The creator may or may not unlink on drop; make sure nothing is left behind.
            let _ = shmstream::unlink(&name);
        }
    }
}

pub(crate) fn create(name: &str, shape: &[usize], dtype: Dtype, notify: bool) -> Result<Stream> {
    create_options(name, shape, dtype, notify, 0)
}

pub(crate) fn create_options(
    name: &str,
    shape: &[usize],
    dtype: Dtype,
    notify: bool,
    history: usize,
) -> Result<Stream> {
    let _ = shmstream::unlink(name);
    StreamOptions::new(name)
        .shape(shape)
        .dtype(dtype)
        .notify(notify)
        .history(history)
        .create()
        .with_context(|| format!("creating stream {name}"))
}

/// How the MVM driver waits for y. The scenario's `wait` if given; otherwise spin, unless
/// the kernel uses every core: then the driver's core is a kernel worker's, and the driver
/// yields it between checks (a runnable worker gets it at once, and y needs no wake-up;
/// parking measured 4–8 µs slower per product at n = 1000 on a 2-core VM, a wake-up that
/// reaches an idle core).
pub fn mvm_driver_wait(job: &Job) -> WaitStrategy {
    match job.wait {
        Some(w) => w.strategy(),
        None if mvm::kernel_is_parallel(job) => WaitStrategy::Yield,
        None => WaitStrategy::Spin,
    }
}

/// Creates the streams the library side of `job` needs, under `names`.
pub fn create_streams(job: &Job, names: &Names) -> Result<JobStreams> {
    // The ao-loop's GPU form meets on host streams (cases::ao::create_streams).
    if job.device.is_gpu() && job.kind != Kind::AoLoop {
        return gpu::create_streams(job, names);
    }
    let mut js = JobStreams::default();
    let futex = job.wait.is_some_and(Wait::notifies);
    match job.kind {
        // Roundtrip and the hot-path ops (but the kernel) write one data stream; the wake
        // op's must be a notify stream.
        Kind::Roundtrip | Kind::Op => {
            if job.op != Some(crate::scenario::HotOp::Kernel) {
                js.streams.push(create(
                    &names.data,
                    &job.shape,
                    dtype_of(&job.dtype)?,
                    job.op == Some(crate::scenario::HotOp::Wake),
                )?);
            }
        }
        Kind::Pingpong => {
            js.streams.push(create(
                &names.data,
                &job.shape,
                dtype_of(&job.dtype)?,
                futex,
            )?);
            js.streams
                .push(create(&names.ack, &[1], Dtype::U64, futex)?);
            js.streams
                .push(create(&names.ctl, &[1], Dtype::U64, false)?);
        }
        Kind::Mvm => {
            let (rows, cols) = (job.shape[0], job.shape[1]);
            js.streams
                .push(create(&names.matrix, &job.shape, Dtype::F32, false)?);
            js.streams
                .push(create(&names.data, &[cols], Dtype::F32, futex)?);
            js.streams
                .push(create(&names.ack, &[rows], Dtype::F32, futex)?);
            js.streams
                .push(create(&names.ctl, &[1], Dtype::U64, false)?);
        }
        Kind::AoLoop => {
            let ao = job.ao.as_ref().context("ao-loop job without [case.ao]")?;
            // A busy-waiting loop's streams make no FUTEX_WAKE that nobody waits on.
            js.streams = ao::create_streams(job, names, ao.stage_wait(false).notifies())?;
        }
        // The bridge case creates its source stream itself (cases::bridge).
        Kind::Bridge => {}
    }
    Ok(js)
}

/// The child roles of the library side of `job`, readers first.
pub fn roles(job: &Job) -> &'static [Role] {
    if job.device.is_gpu() {
        return gpu::roles(job.kind);
    }
    match job.kind {
        Kind::Roundtrip => &[Role::Roundtrip],
        Kind::Pingpong => &[Role::PingReader, Role::PingWriter],
        Kind::Mvm => &[Role::MvmCompute, Role::MvmDriver],
        Kind::AoLoop => &[Role::AoRecon, Role::AoSlopes, Role::AoCamera],
        Kind::Op => &[Role::Op],
        // The bridge case runs its own processes (cases::bridge).
        Kind::Bridge => &[],
    }
}

/// Fails unless `got == want` (used by the children to check they read what was written).
pub fn check_count(what: &str, got: u64, want: u64) -> Result<()> {
    if got != want {
        bail!("{what}: expected count {want}, got {got}");
    }
    Ok(())
}
