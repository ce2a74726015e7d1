//! GPU variants of the cases (float32 streams on `cuda:N`, through the library's device API):
//!
//! - **roundtrip** (the seed's IO table, GPU column): one process writes a frame and reads
//!   it back through a second handle. `pipeline = "device-resident"` (default): from a device
//!   buffer (`write_device`, device to device) into a device buffer (`read_device_into`), as
//!   pyshmem's torch tensors do. `pipeline = "host-upload"`: from a host slice
//!   (`write_device_from_host`, through the handle's pinned staging buffer) back into host
//!   memory (`read_device_to_host`; with `mirror = true` the CPU mirror is read instead, which
//!   is what a mirror is for).
//! - **pingpong** (cross-process round trip): the writer publishes a frame, the reader reads
//!   it (same forms as above) and echoes it back on a second GPU stream; the writer reads the
//!   echo. One iteration = two cross-process hops with the whole frame, as `gpu_bench`.
//! - **mvm** (the seed's two GPU MVM tables): the driver writes the matrix into a GPU stream
//!   once; the compute process copies it once into its own device buffer (a controller keeps
//!   its matrix), then per iteration waits for x, runs cuBLAS `sgemv` and publishes y.
//!   `host-upload`: x from a host slice, y read back to host. `device-resident`: x from a
//!   device buffer, y read into a device buffer.
//!
//! Floors, measured in the same run, in one process on plain `cuMemAlloc` memory with raw
//! CUDA copies: roundtrip = the same two copies (on the synchronize path each followed by a
//! stream synchronize, as the library's write and read each wait for their copy; on the
//! GPU-side publication path the write's copy is not waited for and the wait spins on a
//! stream-written word); pingpong = the same four copies;
//! MVM = the bare `sgemv` (synchronized each iteration). Host slices go through page-locked
//! memory as the library's staging buffers do; a mirrored host-slice row's read is the CPU
//! copy of the mirror, so its floor has no device→host copy either; a mirrored device-buffer
//! row's write also copies the frame into the registered mirror, so its floor copies into a
//! page-locked buffer too.
//!
//! A GPU job is skipped with a reason ([`skip_reason`]) when no CUDA device is usable, never
//! failed.

use std::sync::Arc;

use harness_sys::gpu::{RawCopies, Sgemv, cublas_available};
use hdrhistogram::Histogram;
use shmstream::gpu::cudarc::driver::{CudaContext, CudaSlice, CudaStream};
use shmstream::{Dtype, Stream, StreamOptions, WaitStrategy};

use crate::cases::{JobStreams, MvmStreams, check_count, wait_timeout};
use crate::error::{Context, Error, Result, bail};
use crate::kernel;
use crate::measure::{Measured, timed_loop};
use crate::scenario::{Device, Job, Kind, Pipeline, Wait};
use crate::spawn::{ChildSpec, Role};

/// Why this GPU job cannot run here, or `None` when it can (CPU jobs: always `None`).
pub fn skip_reason(job: &Job) -> Option<String> {
    let Device::Cuda(ordinal) = job.device else {
        return None;
    };
    // The library's probe never panics, also without a driver or a CUDA library.
    if let Some(why) = shmstream::gpu::unavailable_reason() {
        return Some(format!("{}: {why}", job.device));
    }
    let n = shmstream::gpu::device_count();
    if ordinal as usize >= n {
        return Some(format!("{}: the driver reports {n} device(s)", job.device));
    }
    if matches!(job.kind, Kind::Mvm | Kind::AoLoop) && !cublas_available() {
        return Some(format!(
            "{}: libcublas cannot be loaded (add its folder to LD_LIBRARY_PATH)",
            job.device
        ));
    }
    None
}

/// For the report: the publication path the library's probe picks on cuda:0 and why
/// (`gpu-stream`: stream memory operations are usable; `host-sync`: the synchronize path).
/// Under `SHMSTREAM_GPU_PUBLISH=gpu` it shows what the device supports (the trial write runs
/// only then); each GPU row's `publication` note says what its writer's handle uses.
pub fn publish_probe_note() -> String {
    format!(
        "publication probe cuda:0: {}",
        shmstream::gpu::publish_path(0)
    )
}

/// Whether a CUDA device is usable from this process.
pub fn gpu_available() -> bool {
    shmstream::gpu::gpu_available()
}

fn ordinal(job: &Job) -> Result<usize> {
    match job.device {
        Device::Cuda(i) => Ok(i as usize),
        Device::Cpu => bail!("not a GPU job"),
    }
}

/// Whether this job moves frames between device buffers (else host slices).
fn device_side(job: &Job) -> bool {
    job.pipeline != Some(Pipeline::HostUpload)
}

/// Whether this job's readers are their streams' GPU consumers (`pipeline = "gpu-consumer"`).
fn consumers(job: &Job) -> bool {
    job.pipeline == Some(Pipeline::GpuConsumer)
}

fn strategy(job: &Job) -> WaitStrategy {
    match job.wait {
        Some(w) => w.strategy(),
        _ => WaitStrategy::Spin,
    }
}

fn gpu_create(job: &Job, name: &str, shape: &[usize], notify: bool) -> Result<Stream> {
    let _ = shmstream::unlink(name);
    StreamOptions::new(name)
        .shape(shape)
        .dtype(Dtype::F32)
        .gpu_device(ordinal(job)? as i32)
        .cpu_mirror(job.mirror.unwrap_or(false))
        .notify(notify)
        .create()
        .with_context(|| format!("creating GPU stream {name} on {}", job.device))
}

/// Creates the streams of a GPU job (the parent owns the device allocations until its
/// children exit: the library's producer-lifetime contract). Each is owned as it comes, so
/// that a later failure (device memory full) unlinks the earlier ones.
pub fn create_streams(job: &Job, names: &crate::spawn::Names) -> Result<JobStreams> {
    let futex = job.wait.is_some_and(Wait::notifies);
    let ctl = || super::create(&names.ctl, &[1], Dtype::U64, false);
    let mut js = JobStreams::default();
    match job.kind {
        Kind::Roundtrip => js
            .streams
            .push(gpu_create(job, &names.data, &job.shape, false)?),
        Kind::Pingpong => {
            js.streams
                .push(gpu_create(job, &names.data, &job.shape, futex)?);
            js.streams
                .push(gpu_create(job, &names.ack, &job.shape, futex)?);
            js.streams.push(ctl()?);
        }
        Kind::Mvm => {
            let (rows, cols) = (job.shape[0], job.shape[1]);
            js.streams
                .push(gpu_create(job, &names.matrix, &job.shape, false)?);
            js.streams
                .push(gpu_create(job, &names.data, &[cols], futex)?);
            js.streams
                .push(gpu_create(job, &names.ack, &[rows], futex)?);
            js.streams.push(ctl()?);
        }
        Kind::AoLoop | Kind::Op | Kind::Bridge => {
            // (The ao-loop's GPU form meets on host streams: cases::ao::create_streams.)
            crate::error::bail!("no GPU streams for kind {}", job.kind.name())
        }
    }
    Ok(js)
}

/// The child roles of a GPU job, readers first.
pub fn roles(kind: Kind) -> &'static [Role] {
    match kind {
        Kind::Roundtrip => &[Role::GpuRoundtrip],
        Kind::Pingpong => &[Role::GpuPingReader, Role::GpuPingWriter],
        Kind::Mvm => &[Role::GpuMvmCompute, Role::GpuMvmDriver],
        Kind::AoLoop | Kind::Op | Kind::Bridge => &[],
    }
}

/// The floor role of a GPU job.
pub fn floor_role(kind: Kind) -> Role {
    match kind {
        Kind::Roundtrip | Kind::Pingpong | Kind::Op | Kind::Bridge => Role::FloorGpuCopy,
        Kind::Mvm | Kind::AoLoop => Role::FloorGpuMvm,
    }
}

/// A frame with distinct values (so a wrong or stale copy is seen).
fn pattern(n: usize, salt: usize) -> Vec<f32> {
    (0..n).map(|i| ((i + salt) % 1021) as f32).collect()
}

fn stream_of(s: &Stream) -> Result<Arc<CudaStream>> {
    s.cuda_stream()
        .with_context(|| format!("the CUDA stream of {}", s.name()))
}

fn form_note(job: &Job) -> (String, String) {
    let form = match (device_side(job), job.mirror == Some(true)) {
        (true, _) => "device buffers (write_device / read_device_into)",
        (false, false) => "host slices (write_device_from_host / read_device_to_host)",
        (false, true) => "host slices (write_device_from_host / CPU read of the mirror)",
    };
    ("gpu_form".into(), form.into())
}

/// How the writer's handle publishes (`gpu-stream`: its CUDA stream stores the even
/// sequence; `host-sync`: the host waits for the copy first), and why.
fn publication_note(w: &Stream) -> (String, String) {
    let path = w
        .gpu_publish_path()
        .map_or_else(|| "no device attachment".into(), |p| p.to_string());
    ("publication".into(), path)
}

/// Roundtrip: write then read back, one process, two handles.
pub fn roundtrip(spec: &ChildSpec) -> Result<(Measured, Histogram<u64>)> {
    let job = &spec.job;
    let w = Stream::open(&spec.names.data).context("opening the roundtrip stream (writer)")?;
    let r = Stream::open(&spec.names.data).context("opening the roundtrip stream (reader)")?;
    let n = job.elements();
    let host = pattern(n, 1);
    let mut back = vec![0.0f32; n];
    let mirror_read = job.mirror == Some(true);
    let mut expect = r.count();
    let (mut m, h) = if device_side(job) {
        let src = stream_of(&w)?.clone_htod(&host)?;
        let mut dst: CudaSlice<f32> = stream_of(&r)?.alloc_zeros(n)?;
        let out = timed_loop(&job.timing, 0.0, |_| {
            w.write_device(&src)?;
            let c = r.read_device_into(&mut dst)?.count;
            expect += 1;
            check_count("GPU roundtrip read", c, expect)
        })?;
        back = stream_of(&r)?.clone_dtoh(&dst)?;
        out
    } else {
        timed_loop(&job.timing, 0.0, |_| {
            w.write_device_from_host(&host)?;
            let c = if mirror_read {
                r.read_into_slice(&mut back)?
            } else {
                r.read_device_to_host(&mut back)?.count
            };
            expect += 1;
            check_count("GPU roundtrip read", c, expect)
        })?
    };
    if back != host {
        bail!("GPU roundtrip read back a different frame");
    }
    m.notes.push(form_note(job));
    m.notes.push(publication_note(&w));
    Ok((m, h))
}

/// The three streams of a GPU pingpong job: data (writer → reader), echo (reader → writer),
/// control (the writer's stop signal).
struct PingStreams {
    data: Stream,
    ack: Stream,
    ctl: Stream,
}

impl PingStreams {
    fn open(spec: &ChildSpec) -> Result<Self> {
        Ok(Self {
            data: Stream::open(&spec.names.data).context("opening the data stream")?,
            ack: Stream::open(&spec.names.ack).context("opening the echo stream")?,
            ctl: Stream::open(&spec.names.ctl).context("opening the control stream")?,
        })
    }
}

/// Pingpong writer: publishes a frame, reads its echo; measures the round trip.
pub fn ping_writer(spec: &ChildSpec) -> Result<(Measured, Histogram<u64>)> {
    let job = &spec.job;
    if consumers(job) {
        return ping_writer_consumer(spec);
    }
    let to = wait_timeout(spec);
    let PingStreams { data, ack, ctl } = PingStreams::open(spec)?;
    ack.set_wait_strategy(strategy(job));
    let n = job.elements();
    let host = pattern(n, 2);
    let mut back = vec![0.0f32; n];
    let mirror_read = job.mirror == Some(true);
    let mut acks = ack
        .wait_for_count(0, to)
        .context("waiting for the reader to be ready")?;
    let (mut m, h) = if device_side(job) {
        let src = stream_of(&data)?.clone_htod(&host)?;
        let mut dst: CudaSlice<f32> = stream_of(&ack)?.alloc_zeros(n)?;
        let out = timed_loop(&job.timing, job.gap_us, |_| {
            data.write_device(&src)?;
            acks = ack.read_device_after_into(acks, &mut dst, to)?.count;
            Ok(())
        })?;
        back = stream_of(&ack)?.clone_dtoh(&dst)?;
        out
    } else {
        timed_loop(&job.timing, job.gap_us, |_| {
            data.write_device_from_host(&host)?;
            acks = if mirror_read {
                ack.read_after_into_slice(acks, &mut back, to)?
            } else {
                ack.read_device_to_host_after(acks, &mut back, to)?.count
            };
            Ok(())
        })?
    };
    ctl.write_slice(&[1u64])?;
    data.write_device_from_host(&host)?;
    if back != host {
        bail!("the echoed frame differs from the one written");
    }
    m.notes.push(form_note(job));
    m.notes.push(publication_note(&data));
    Ok((m, h))
}

/// Pingpong reader: reads each frame and echoes it back until the writer says stop.
pub fn ping_reader(spec: &ChildSpec) -> Result<()> {
    let job = &spec.job;
    if consumers(job) {
        return ping_reader_consumer(spec);
    }
    let to = wait_timeout(spec);
    let PingStreams { data, ack, ctl } = PingStreams::open(spec)?;
    data.set_wait_strategy(strategy(job));
    let n = job.elements();
    let mirror_read = job.mirror == Some(true);
    let mut host = vec![0.0f32; n];
    let mut dev: CudaSlice<f32> = stream_of(&data)?.alloc_zeros(n)?;
    let guard = ack.lock(to).context("locking the echo stream")?;
    let mut last = data.count();
    // "Ready": the first echo (the writer waits for any count > 0).
    guard.write_device_from_host(&host)?;
    loop {
        let c = if device_side(job) {
            data.read_device_after_into(last, &mut dev, to)
                .context("waiting for a frame")?
                .count
        } else if mirror_read {
            data.read_after_into_slice(last, &mut host, to)
                .context("waiting for a frame")?
        } else {
            data.read_device_to_host_after(last, &mut host, to)
                .context("waiting for a frame")?
                .count
        };
        if ctl.count() > 0 {
            return Ok(());
        }
        last = c;
        if device_side(job) {
            guard.write_device(&dev)?;
        } else {
            guard.write_device_from_host(&host)?;
        }
    }
}

/// x vectors on the host and their copies on the device.
type MvmVectors = (Vec<Vec<f32>>, Vec<CudaSlice<f32>>);

/// The MVM driver's three x vectors, on the host and (on `x`'s CUDA stream) on the device,
/// prepared outside the timing.
fn mvm_vectors(x: &Stream, cols: usize) -> Result<MvmVectors> {
    let xs: Vec<Vec<f32>> = (0..3)
        .map(|i| {
            let mut v = vec![0.0f32; cols];
            kernel::fill_vector(&mut v, i);
            v
        })
        .collect();
    let st = stream_of(x)?;
    let xd = xs
        .iter()
        .map(|v| st.clone_htod(v).map_err(Error::from))
        .collect::<Result<_>>()?;
    Ok((xs, xd))
}

/// MVM driver: writes the matrix once, then times x → y round trips through the compute
/// process.
pub fn mvm_driver(spec: &ChildSpec) -> Result<(Measured, Histogram<u64>)> {
    let job = &spec.job;
    if consumers(job) {
        return mvm_driver_consumer(spec);
    }
    let (rows, cols) = (job.shape[0], job.shape[1]);
    let to = wait_timeout(spec);
    let MvmStreams { matrix, x, y, ctl } = MvmStreams::open(spec)?;
    let a = kernel::test_matrix(rows, cols);
    matrix.write_device_from_host(&a)?;
    y.set_wait_strategy(strategy(job));
    let (xs, xd) = mvm_vectors(&x, cols)?;
    let mut yd: CudaSlice<f32> = stream_of(&y)?.alloc_zeros(rows)?;
    let mut yh = vec![0.0f32; rows];
    let mut ys = y
        .wait_for_count(0, to)
        .context("waiting for the compute process to be ready")?;
    let dev = job.pipeline == Some(Pipeline::DeviceResident);
    let (mut m, h) = timed_loop(&job.timing, 0.0, |i| {
        let k = (i % 3) as usize;
        if dev {
            x.write_device(&xd[k])?;
            ys = y.read_device_after_into(ys, &mut yd, to)?.count;
        } else {
            x.write_device_from_host(&xs[k])?;
            ys = y.read_device_to_host_after(ys, &mut yh, to)?.count;
        }
        Ok(())
    })?;
    // One checked iteration: the pipeline must compute the right product, of a vector no
    // timed iteration published.
    let mut checked = vec![0.0f32; cols];
    kernel::fill_vector(&mut checked, 3);
    let xv = &checked;
    x.write_device_from_host(xv)?;
    y.read_device_to_host_after(ys, &mut yh, to)?;
    let err = kernel::max_rel_error(&a, cols, xv, &yh);
    if err > 1e-4 {
        bail!("y = A·x is wrong: max relative error {err:.3e}");
    }
    ctl.write_slice(&[1u64])?;
    x.write_device_from_host(xv)?;
    m.notes.push(("kernel".into(), "cuBLAS sgemv".into()));
    m.notes.push(("max_rel_error".into(), format!("{err:.1e}")));
    m.notes.push(publication_note(&x));
    Ok((m, h))
}

/// The compute process's device buffers (on y's CUDA stream): its copy of the matrix, x, y,
/// and the `sgemv` that maps one to the other.
struct ComputeBuffers {
    a: CudaSlice<f32>,
    xd: CudaSlice<f32>,
    yd: CudaSlice<f32>,
    gemv: Sgemv,
}

impl ComputeBuffers {
    /// Waits for the matrix, copies it once into the process's own buffer (a controller keeps
    /// its matrix).
    fn new(
        matrix: &Stream,
        y: &Stream,
        rows: usize,
        cols: usize,
        to: Option<std::time::Duration>,
    ) -> Result<Self> {
        matrix
            .wait_for_count(0, to)
            .context("waiting for the matrix")?;
        let st = stream_of(y)?;
        let mut a: CudaSlice<f32> = st.alloc_zeros(rows * cols)?;
        matrix.read_device_into(&mut a)?;
        Ok(Self {
            a,
            xd: st.alloc_zeros(cols)?,
            yd: st.alloc_zeros(rows)?,
            gemv: Sgemv::new(st, rows, cols)?,
        })
    }
}

/// MVM compute: copies the matrix once into its own device buffer, then serves x → y.
pub fn mvm_compute(spec: &ChildSpec) -> Result<()> {
    let job = &spec.job;
    if consumers(job) {
        return mvm_compute_consumer(spec);
    }
    let (rows, cols) = (job.shape[0], job.shape[1]);
    let to = wait_timeout(spec);
    let MvmStreams { matrix, x, y, ctl } = MvmStreams::open(spec)?;
    x.set_wait_strategy(strategy(job));
    let ComputeBuffers {
        a,
        mut xd,
        mut yd,
        gemv,
    } = ComputeBuffers::new(&matrix, &y, rows, cols, to)?;
    let guard = y.lock(to).context("locking the y stream")?;
    // Sample x's count before saying "ready": the driver's first x may follow at once.
    let mut last = x.count();
    guard.write_device(&yd)?;
    loop {
        let c = x
            .read_device_after_into(last, &mut xd, to)
            .context("waiting for x")?
            .count;
        if ctl.count() > 0 {
            return Ok(());
        }
        last = c;
        gemv.run(&a, &xd, &mut yd)?;
        guard.write_device(&yd)?;
    }
}

// ----- pipeline = "gpu-consumer" (issue #11) -----
//
// Every reader is its stream's GPU consumer: its CUDA stream waits for the frame, copies it and
// acknowledges; writers publish on their CUDA stream. Only the timing process's host waits,
// once per iteration. Stopping: a consumer's enqueued wait cannot be taken back, so the
// timing process tells its partner the last frame number (`ctl` = frames sent + FINAL_ROUNDS)
// and runs FINAL_ROUNDS more iterations: the partner, which checks `ctl` before each frame and
// is at most two frames ahead, then ends with nothing left waiting.

/// The host wait of a consumer's stream when the job sets no timeout (it must be bounded).
const HOST_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The untimed iterations after `ctl` tells the partner where to stop.
const FINAL_ROUNDS: u64 = 2;

/// The partner's frames: it takes one more until it passes the last one the timing process
/// names on `ctl` (read once, when it appears).
struct PartnerFrames<'a> {
    ctl: &'a Stream,
    last: Option<u64>,
    next: u64,
}

impl<'a> PartnerFrames<'a> {
    fn new(ctl: &'a Stream) -> Self {
        Self {
            ctl,
            last: None,
            next: 1,
        }
    }

    /// Whether to take frame `next` (then counted).
    fn take_another(&mut self) -> Result<bool> {
        if self.last.is_none() && self.ctl.count() > 0 {
            let mut v = [0u64];
            self.ctl.read_into_slice(&mut v)?;
            self.last = Some(v[0]);
        }
        let more = self.last.is_none_or(|l| self.next <= l);
        self.next += 1;
        Ok(more)
    }
}

/// Waits until another process holds `s`'s GPU consumer (the partner's, before the "ready"
/// frame it must take as its first).
fn wait_for_consumer(s: &Stream, to: Option<std::time::Duration>) -> Result<()> {
    let deadline = std::time::Instant::now() + to.unwrap_or(HOST_WAIT);
    while s.gpu_consumer_pid().is_none() {
        if std::time::Instant::now() > deadline {
            bail!("the partner never became {}'s GPU consumer", s.name());
        }
        std::thread::yield_now();
    }
    Ok(())
}

fn consumer_of(s: &Stream) -> Result<shmstream::gpu::GpuConsumer<'_>> {
    s.gpu_consumer()
        .with_context(|| format!("making this process {}'s GPU consumer", s.name()))
}

fn consumer_note() -> (String, String) {
    (
        "gpu_form".into(),
        "device buffers; readers are GPU consumers (wait, copy, acknowledge on their CUDA stream)"
            .into(),
    )
}

fn ping_writer_consumer(spec: &ChildSpec) -> Result<(Measured, Histogram<u64>)> {
    let job = &spec.job;
    let to = wait_timeout(spec);
    let PingStreams { data, ack, ctl } = PingStreams::open(spec)?;
    let n = job.elements();
    let host = pattern(n, 2);
    // Our consumer first: the reader's "ready" frame (written once it sees us) is its first.
    let mut c = consumer_of(&ack)?;
    let src = stream_of(&data)?.clone_htod(&host)?;
    let mut dst: CudaSlice<f32> = c.cuda_stream().alloc_zeros(n)?;
    c.enqueue_next_into(&mut dst)?;
    c.synchronize(to.unwrap_or(HOST_WAIT))
        .context("waiting for the reader to be ready")?;
    let mut round = |c: &mut shmstream::gpu::GpuConsumer<'_>| -> Result<()> {
        data.write_device(&src)?;
        c.enqueue_next_into(&mut dst)?;
        c.synchronize(to.unwrap_or(HOST_WAIT))?;
        Ok(())
    };
    let mut sent = 0u64;
    let (mut m, h) = timed_loop(&job.timing, job.gap_us, |_| {
        sent += 1;
        round(&mut c)
    })?;
    ctl.write_slice(&[sent + FINAL_ROUNDS])?;
    for _ in 0..FINAL_ROUNDS {
        round(&mut c)?;
    }
    let back = c.cuda_stream().clone_dtoh(&dst)?;
    if back != host {
        bail!("the echoed frame differs from the one written");
    }
    m.notes.push(consumer_note());
    m.notes.push(publication_note(&data));
    Ok((m, h))
}

fn ping_reader_consumer(spec: &ChildSpec) -> Result<()> {
    let job = &spec.job;
    let to = wait_timeout(spec);
    let PingStreams { data, ack, ctl } = PingStreams::open(spec)?;
    let n = job.elements();
    let mut c = consumer_of(&data)?;
    let mut dev: CudaSlice<f32> = c.cuda_stream().alloc_zeros(n)?;
    let guard = ack.lock(to).context("locking the echo stream")?;
    // "Ready", after our consumer took the data stream (every frame the writer sends is ours)
    // and the writer's took the echo stream (so the ready frame is its first).
    wait_for_consumer(&ack, to)?;
    guard.write_device_from_host(&vec![0.0f32; n])?;
    let mut frames = PartnerFrames::new(&ctl);
    while frames.take_another()? {
        c.enqueue_next_into(&mut dev)?;
        guard.write_device(&dev)?;
    }
    c.synchronize(to.unwrap_or(HOST_WAIT))?;
    Ok(())
}

fn mvm_driver_consumer(spec: &ChildSpec) -> Result<(Measured, Histogram<u64>)> {
    let job = &spec.job;
    let (rows, cols) = (job.shape[0], job.shape[1]);
    let to = wait_timeout(spec);
    let MvmStreams { matrix, x, y, ctl } = MvmStreams::open(spec)?;
    let a = kernel::test_matrix(rows, cols);
    matrix.write_device_from_host(&a)?;
    let (_, xd) = mvm_vectors(&x, cols)?;
    let mut yh = vec![0.0f32; rows];
    // Our consumer first: the compute process's "ready" frame is its first.
    let mut c = consumer_of(&y)?;
    let mut yd: CudaSlice<f32> = c.cuda_stream().alloc_zeros(rows)?;
    c.enqueue_next_into(&mut yd)?;
    c.synchronize(to.unwrap_or(HOST_WAIT))
        .context("waiting for the compute process to be ready")?;
    let mut sent = 0u64;
    let (mut m, h) = timed_loop(&job.timing, 0.0, |i| {
        x.write_device(&xd[(i % 3) as usize])?;
        c.enqueue_next_into(&mut yd)?;
        sent += 1;
        c.synchronize(to.unwrap_or(HOST_WAIT))?;
        Ok(())
    })?;
    ctl.write_slice(&[sent + FINAL_ROUNDS])?;
    // The final rounds: x from the host (a vector no timed round sent), y checked in every
    // round, so a y one product behind fails on the first (it is A times a timed vector).
    let mut checked = vec![0.0f32; cols];
    kernel::fill_vector(&mut checked, 3);
    let xv = &checked;
    let mut err = 0.0f64;
    for _ in 0..FINAL_ROUNDS {
        x.write_device_from_host(xv)?;
        c.enqueue_next_into(&mut yd)?;
        c.synchronize(to.unwrap_or(HOST_WAIT))?;
        c.cuda_stream().memcpy_dtoh(&yd, &mut yh)?;
        err = err.max(kernel::max_rel_error(&a, cols, xv, &yh));
    }
    if err > 1e-4 {
        bail!("y = A·x is wrong: max relative error {err:.3e}");
    }
    m.notes.push(("kernel".into(), "cuBLAS sgemv".into()));
    m.notes.push(("max_rel_error".into(), format!("{err:.1e}")));
    m.notes.push(consumer_note());
    m.notes.push(publication_note(&x));
    Ok((m, h))
}

fn mvm_compute_consumer(spec: &ChildSpec) -> Result<()> {
    let job = &spec.job;
    let (rows, cols) = (job.shape[0], job.shape[1]);
    let to = wait_timeout(spec);
    let MvmStreams { matrix, x, y, ctl } = MvmStreams::open(spec)?;
    let ComputeBuffers {
        a,
        mut xd,
        mut yd,
        gemv,
    } = ComputeBuffers::new(&matrix, &y, rows, cols, to)?;
    let mut c = consumer_of(&x)?;
    let guard = y.lock(to).context("locking the y stream")?;
    wait_for_consumer(&y, to)?;
    guard.write_device(&yd)?;
    let mut frames = PartnerFrames::new(&ctl);
    while frames.take_another()? {
        c.enqueue_next_into(&mut xd)?;
        gemv.run(&a, &xd, &mut yd)?;
        guard.write_device(&yd)?;
    }
    c.synchronize(to.unwrap_or(HOST_WAIT))?;
    Ok(())
}

/// Floor of roundtrip and pingpong: the same copies on plain device memory, one process,
/// with the bare driver calls ([`RawCopies`]).
pub fn floor_copy(spec: &ChildSpec) -> Result<(Measured, Histogram<u64>)> {
    let job = &spec.job;
    let ctx = CudaContext::new(ordinal(job)?)?;
    let n = job.elements();
    let hops = if job.kind == Kind::Pingpong { 2 } else { 1 };
    let host = pattern(n, 3);
    let mut back = vec![0.0f32; n];
    // Device-side: buffer 0 holds the frame, 1 is the stream's payload, 2 the reader's
    // buffer. Host slices: buffer 0 is the payload.
    let mut raw = RawCopies::new(ctx.new_stream()?, 5, n).map_err(Error::msg)?;
    // GPU-side publication (the library's default where the probe passes): a write does not
    // wait for its copies on the host, and what waits (the next write, a reader of the
    // mirror) spins on a word the stream writes. The floor then enqueues its write copies
    // without waiting and waits by a stream-written word too, else it would not bound ours.
    let gpu_side = shmstream::gpu::publish_path(ordinal(job)? as i32).path
        == shmstream::gpu::probe::PublishPath::GpuStream;
    if gpu_side {
        raw.use_flag_wait().map_err(Error::msg)?;
    }
    let mirror = job.mirror == Some(true);
    let e = Error::msg;
    // One hop = the write's copies, waited for on the host only on the synchronize path,
    // then the read's, waited for.
    let (mut m, h) = if device_side(job) {
        raw.host(0).map_err(e)?.copy_from_slice(&host);
        raw.htod(0, 0).map_err(e)?;
        let out = if consumers(job) {
            // The four copies of a round trip back to back on one stream, one wait: what
            // GPU consumers order with stream memory operations instead.
            timed_loop(&job.timing, 0.0, |_| {
                raw.dtod_chain(&[0, 1, 2, 3, 4]).map_err(e)
            })?
        } else {
            timed_loop(&job.timing, 0.0, |_| {
                for _ in 0..hops {
                    raw.enqueue_dtod(0, 1).map_err(e)?;
                    if mirror {
                        // A mirrored write also copies the frame into the registered mirror.
                        raw.enqueue_dtoh(1, 1).map_err(e)?;
                    }
                    if !gpu_side {
                        raw.wait().map_err(e)?;
                    }
                    raw.enqueue_dtod(1, 2).map_err(e)?;
                    raw.wait().map_err(e)?;
                }
                Ok(())
            })?
        };
        let last = if consumers(job) { 4 } else { 2 };
        raw.dtoh(last, 1).map_err(e)?;
        back.copy_from_slice(raw.host(1).map_err(e)?);
        out
    } else {
        // Host slices cross the bus through page-locked memory, as the library's staging
        // buffers do: slice → write stage (memcpy), HtoD; then DtoH into the read stage,
        // read stage → slice. A mirrored stream's read is a CPU copy of the mirror, so its
        // floor reads back from the write stage instead of the device (issue #11: floors
        // bound); `host()` waits for the copies in flight first.
        timed_loop(&job.timing, 0.0, |_| {
            for _ in 0..hops {
                raw.host(0).map_err(e)?.copy_from_slice(&host);
                raw.enqueue_htod(0, 0).map_err(e)?;
                if !gpu_side {
                    raw.wait().map_err(e)?;
                }
                let stage = if mirror {
                    0
                } else {
                    raw.dtoh(0, 1).map_err(e)?;
                    1
                };
                back.copy_from_slice(raw.host(stage).map_err(e)?);
            }
            Ok(())
        })?
    };
    if back != host {
        bail!("the floor's copies lost data");
    }
    let write_wait = if gpu_side {
        " (not waited for)"
    } else {
        ", a wait"
    };
    let what = match (consumers(job), device_side(job), mirror) {
        (true, ..) => "cuMemcpyDtoDAsync ×4 back to back, one wait".to_owned(),
        (false, true, _) => format!(
            "cuMemcpyDtoDAsync{}{write_wait}; cuMemcpyDtoDAsync, a wait",
            if mirror {
                " + cuMemcpyDtoHAsync into a pinned buffer (the mirror)"
            } else {
                ""
            }
        ),
        (false, false, true) => format!(
            "memcpy into a pinned write stage + cuMemcpyHtoDAsync{write_wait}; memcpy out of it (the mirror read)"
        ),
        (false, false, false) => format!(
            "memcpy into a pinned write stage + cuMemcpyHtoDAsync{write_wait}; cuMemcpyDtoHAsync into a pinned read stage, a wait, memcpy out"
        ),
    };
    let times = if consumers(job) { 1 } else { hops };
    let waits = if gpu_side {
        "a wait spins on a host word the stream writes (cuStreamWriteValue64), as GPU-side publication's waiters do"
    } else {
        "a wait is cuStreamSynchronize"
    };
    m.notes.push((
        "floor".into(),
        format!(
            "{what}, {times} time(s) per iteration; {waits}; bare driver calls, no cudarc event tracking"
        ),
    ));
    Ok((m, h))
}

/// Floor of GPU MVM: the bare sgemv on plain device memory, synchronized per iteration.
pub fn floor_mvm(spec: &ChildSpec) -> Result<(Measured, Histogram<u64>)> {
    let job = &spec.job;
    let (rows, cols) = (job.shape[0], job.shape[1]);
    let ctx = CudaContext::new(ordinal(job)?)?;
    let st = ctx.new_stream()?;
    let a = st.clone_htod(&kernel::test_matrix(rows, cols))?;
    let mut xv = vec![0.0f32; cols];
    kernel::fill_vector(&mut xv, 1);
    let x = st.clone_htod(&xv)?;
    let mut y: CudaSlice<f32> = st.alloc_zeros(rows)?;
    let gemv = Sgemv::new(st.clone(), rows, cols)?;
    let (mut m, h) = timed_loop(&job.timing, 0.0, |_| {
        gemv.run(&a, &x, &mut y)?;
        st.synchronize()?;
        Ok(())
    })?;
    let yh = st.clone_dtoh(&y)?;
    let err = kernel::max_rel_error(&kernel::test_matrix(rows, cols), cols, &xv, &yh);
    if err > 1e-4 {
        bail!("bare sgemv is wrong: max relative error {err:.3e}");
    }
    m.notes.push((
        "floor".into(),
        "bare cuBLAS sgemv + sync, one process".into(),
    ));
    Ok((m, h))
}
