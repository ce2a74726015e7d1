//! MVM pipeline (the seed's "Shared-Memory MVM Pipeline", CPU column): the matrix sits
//! in a stream; per iteration the driver publishes a vector x, the compute process waits
//! for it, computes y = A·x and publishes y, and the driver waits for y and reads it.
//!
//! The compute process reads the matrix once at start (a real-time controller keeps its
//! control matrix until the matrix stream changes), unlike the seed, whose loop re-copied
//! the matrix every iteration (pyshmem adopter review, 03-performance.md). Like the
//! pingpong reader, the compute process holds the y stream's write lock for the run (it
//! is its only writer), and the driver holds x's.
//!
//! Waiting: when the kernel uses every core, the driver's core is one of the kernel's,
//! so the driver must not spin: it yields the core between checks
//! ([`shmstream::WaitStrategy::Yield`]), so the worker runs whenever it has rows to do and
//! the driver sees y without a wake-up. Otherwise both sides spin. `wait` in the scenario
//! overrides this (a notify wait then parks on the futex).
//!
//! The floor (the same kernel alone, on the compute process's own matrix, vectors,
//! threads and pinning) alternates with the pipeline in [`MVM_SLICE`] slices
//! ([`crate::measure::alternate`]): the driver times a slice of round trips, then tells
//! the compute process (through the control stream) to time a slice of bare kernel calls
//! while the driver sleeps, or yields where it yields in the pipeline ([`FloorWait`]). A
//! product of an L3-sized matrix changes speed by up to 2× between consecutive seconds on
//! a shared host, so a floor run in its own process before and after ours (as the other
//! CPU floors) could read slower than the pipeline it bounds. The compute process writes
//! the floor's result beside its own ([`crate::cases::floor_prefix`]).

use std::cell::Cell;
use std::time::Duration;

use hdrhistogram::Histogram;
use shmstream::{Stream, WaitStrategy, WriteGuard};

use crate::cases::{Commands, MvmStreams, PageBuf, floor_prefix, mvm_driver_wait, wait_timeout};
use crate::error::{Context, Result, bail};
use crate::kernel::{self, MvmKernel};
use crate::measure::{Measured, SliceSide, Slicer, alternate};
use crate::scenario::{Job, Wait};
use crate::spawn::{self, ChildSpec};

/// How long the pipeline and its floor each run before the other takes over: tens of
/// products at n = 3000, far below the seconds over which the host's speed drifts.
pub const MVM_SLICE: Duration = Duration::from_millis(20);

/// What the driver asks of the compute process through the control stream (its value;
/// every command is followed by an x publication that wakes the compute process, which
/// answers with a y publication).
mod command {
    /// Stop serving and exit.
    pub const STOP: u64 = 1;
    /// Time one slice of bare kernel calls, not recorded (warm-up).
    pub const FLOOR_WARM: u64 = 2;
    /// Time one slice of bare kernel calls.
    pub const FLOOR: u64 = 3;
    /// Close the floor's repeat.
    pub const FLOOR_END_REPEAT: u64 = 4;
}

/// Whether this job's kernel runs row-parallel.
pub fn kernel_is_parallel(job: &Job) -> bool {
    kernel::is_parallel(job.shape[0], job.shape[1], job.threads)
}

/// The cores of the kernel's workers: the compute core first, then the rest.
pub fn kernel_cpus(job: &Job) -> Vec<usize> {
    let mut cpus = vec![job.reader_cpu, job.writer_cpu];
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    cpus.extend((0..n).filter(|c| *c != job.reader_cpu && *c != job.writer_cpu));
    cpus.dedup();
    cpus
}

/// Driver: writes the matrix once, then times x → y round trips.
pub fn driver(spec: &ChildSpec) -> Result<(Measured, Histogram<u64>)> {
    let job = &spec.job;
    let (rows, cols) = (job.shape[0], job.shape[1]);
    let to = wait_timeout(spec);
    let MvmStreams { matrix, x, y, ctl } = MvmStreams::open(spec)?;
    let a = kernel::test_matrix(rows, cols);
    matrix.write_slice(&a)?;
    y.set_wait_strategy(mvm_driver_wait(job));
    // Three vectors prepared outside the timing; iteration i publishes xs[i % 3].
    let xs: Vec<Vec<f32>> = (0..3)
        .map(|i| {
            let mut v = vec![0.0f32; cols];
            kernel::fill_vector(&mut v, i);
            v
        })
        .collect();
    let mut xv = vec![0.0f32; cols];
    let mut yv = vec![0.0f32; rows];
    let ys = y
        .wait_for_count(0, to)
        .context("waiting for the compute process to be ready")?;
    // The only writer of x, as the compute process is of y: it holds x's write lock for the
    // run, so a vector is a seqlock publication without a flock pair (what a controller
    // that owns its stream does).
    let xg = x.lock(to).context("locking the x stream")?;
    let seen = Cell::new(ys);
    let mut i = 0usize;
    let mut ours = SliceSide::new(MVM_SLICE, || {
        i += 1;
        xg.write_slice(&xs[i % 3])?;
        seen.set(y.read_after_into_slice(seen.get(), &mut yv, to)?);
        Ok(())
    });
    let mut floor = RemoteFloor {
        ctl: &ctl,
        xg: &xg,
        x: &xs[0],
        y: &y,
        seen: &seen,
        scratch: vec![0.0f32; rows],
        to,
        last_slice: MVM_SLICE,
        wait: floor_wait(job),
    };
    alternate(&job.timing, &mut ours, &mut floor)?;
    let (mut m, h) = ours.finish();
    // One checked iteration: the pipeline must compute the right product, of a vector no
    // timed iteration published (a y one product behind would not match it).
    kernel::fill_vector(&mut xv, 3);
    xg.write_slice(&xv)?;
    y.read_after_into_slice(seen.get(), &mut yv, to)?;
    let err = kernel::max_rel_error(&a, cols, &xv, &yv);
    if err > 1e-4 {
        bail!("y = A·x is wrong: max relative error {err:.3e}");
    }
    ctl.write_slice(&[command::STOP])?;
    xg.write_slice(&xv)?;
    m.notes.push((
        "driver_wait".into(),
        format!("{:?}", mvm_driver_wait(job)).to_lowercase(),
    ));
    m.notes.push((
        "kernel_isa".into(),
        harness_sys::kernel::isa().name().into(),
    ));
    Ok((m, h))
}

/// How the driver waits out a floor slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FloorWait {
    /// Sleeps until just before the previous slice's answer came, then parks for the
    /// answer: its core is the kernel's alone, as in a bare run.
    SleepThenPark,
    /// Yields throughout, as in the pipeline: a kernel worker shares the driver's core,
    /// and on a core left idle that worker would fall asleep between products and need
    /// a wake-up, so the floor would time the kernel on a core in another state.
    Yield,
}

/// The driver's wait in a floor slice: the pipeline's own when that yields
/// ([`mvm_driver_wait`]), else a sleep then a park.
fn floor_wait(job: &Job) -> FloorWait {
    match mvm_driver_wait(job) {
        WaitStrategy::Yield => FloorWait::Yield,
        _ => FloorWait::SleepThenPark,
    }
}

/// The floor's side of the alternation, seen from the driver: each slice is a command
/// to the compute process, which times it and answers with a y publication; the driver
/// waits for the answer as [`FloorWait`] says.
struct RemoteFloor<'a> {
    ctl: &'a Stream,
    xg: &'a WriteGuard<'a>,
    x: &'a [f32],
    y: &'a Stream,
    seen: &'a Cell<u64>,
    scratch: Vec<f32>,
    to: Option<Duration>,
    /// How long the last recorded slice took from command to answer.
    last_slice: Duration,
    wait: FloorWait,
}

/// How much earlier than the last slice's answer the driver wakes for the next one.
const WAKE_EARLY: Duration = Duration::from_micros(200);

impl RemoteFloor<'_> {
    /// Sends `cmd`, waits for the answer as `self.wait` says (sleeping `sleep` first
    /// when it sleeps); returns the time taken.
    fn ask(&mut self, cmd: u64, sleep: Duration) -> Result<Duration> {
        let start = std::time::Instant::now();
        self.ctl.write_slice(&[cmd])?;
        self.xg.write_slice(self.x)?;
        let pipeline_wait = self.y.wait_strategy();
        if self.wait == FloorWait::SleepThenPark {
            std::thread::sleep(sleep);
            // Parked for the answer; the pipeline's wait comes back after it.
            self.y.set_wait_strategy(WaitStrategy::Park);
        }
        let got = self
            .y
            .read_after_into_slice(self.seen.get(), &mut self.scratch, self.to)
            .context("waiting for the compute process's floor slice");
        self.y.set_wait_strategy(pipeline_wait);
        self.seen.set(got?);
        Ok(start.elapsed())
    }
}

impl Slicer for RemoteFloor<'_> {
    fn slice(&mut self, record: bool) -> Result<()> {
        let cmd = if record {
            command::FLOOR
        } else {
            command::FLOOR_WARM
        };
        let sleep = self.last_slice.saturating_sub(WAKE_EARLY).max(MVM_SLICE);
        self.last_slice = self.ask(cmd, sleep)?;
        Ok(())
    }

    fn end_repeat(&mut self) -> Result<()> {
        self.ask(command::FLOOR_END_REPEAT, Duration::ZERO)?;
        Ok(())
    }
}

/// Compute: reads the matrix once, then serves x → y, and times the floor's slices when
/// asked, until told to stop; writes the floor's result beside its own.
pub fn compute(spec: &ChildSpec) -> Result<()> {
    let job = &spec.job;
    let (rows, cols) = (job.shape[0], job.shape[1]);
    let to = wait_timeout(spec);
    let MvmStreams { matrix, x, y, ctl } = MvmStreams::open(spec)?;
    x.set_wait_strategy(job.wait.map_or(WaitStrategy::Spin, Wait::strategy));
    matrix
        .wait_for_count(0, to)
        .context("waiting for the matrix")?;
    // Page-aligned operands, as the floor's (split loads would make the two differ).
    let mut a = PageBuf::<f32>::new(rows * cols);
    matrix.read_into_slice(a.as_mut_slice())?;
    let a = a.as_slice();
    let k = MvmKernel::new(rows, cols, job.threads, kernel_cpus(job))?;
    let floor = k.on_first_worker(|| -> Result<(Measured, Histogram<u64>)> {
        let mut xv = PageBuf::<f32>::new(cols);
        let xv = xv.as_mut_slice();
        let mut yv = PageBuf::<f32>::new(rows);
        let yv = yv.as_mut_slice();
        // The floor's operands: plain memory, x written once.
        let mut xf = PageBuf::<f32>::new(cols);
        kernel::fill_vector(xf.as_mut_slice(), 1);
        let xf = xf.as_slice();
        let mut yf = PageBuf::<f32>::new(rows);
        let yf = yf.as_mut_slice();
        let mut floor = SliceSide::new(MVM_SLICE, || {
            k.run(a, std::hint::black_box(xf), yf);
            std::hint::black_box(&mut *yf);
            Ok(())
        });
        let guard = y.lock(to).context("locking the y stream")?;
        // Sample both counts before saying "ready": the driver's first x may follow at once.
        let mut last = x.count();
        let mut commands = Commands::new(&ctl);
        guard.write_slice(yv)?;
        loop {
            let c = x
                .read_after_into_slice(last, xv, to)
                .context("waiting for x")?;
            last = c;
            if let Some(cmd) = commands.next()? {
                match cmd {
                    command::STOP => break,
                    command::FLOOR => floor.slice(true)?,
                    command::FLOOR_WARM => floor.slice(false)?,
                    command::FLOOR_END_REPEAT => floor.end_repeat()?,
                    other => bail!("unknown command {other} on the control stream"),
                }
                guard.write_slice(yv)?;
            } else {
                // The case's kernel call (the floor runs the same kernel unslowed), writing y
                // in place in the stream: each worker's rows stay in its core's cache
                // until the driver reads them, and no copy follows the product.
                let _slow = shmstream::slowdown::guard(shmstream::slowdown::HotPath::Mvm);
                guard.write_view(|y: &mut [f32]| {
                    k.run(a, xv, y);
                    Ok::<(), std::convert::Infallible>(())
                })?;
            }
        }
        let (mut m, h) = floor.finish();
        if kernel::max_rel_error(a, cols, xf, yf) > 1e-4 {
            bail!("the floor's kernel computed a wrong product");
        }
        m.notes.push((
            "floor passes".into(),
            format!(
                "alternating with ours in {} ms slices, in the compute process",
                MVM_SLICE.as_millis()
            ),
        ));
        m.notes.push((
            "kernel_isa".into(),
            harness_sys::kernel::isa().name().into(),
        ));
        m.notes
            .push(("kernel_threads".into(), k.threads().to_string()));
        Ok((m, h))
    })?;
    spawn::write_outcome(
        &floor_prefix(&spec.result_prefix),
        spec.role,
        true,
        Some(&floor),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(size: &str, wait: &str, threads: usize) -> Job {
        let mut j = crate::scenario::Scenario::parse(&format!(
            "name=\"x\"\n[defaults]\nwriter_cpu=0\nreader_cpu=1\n[[case]]\nkind=\"mvm\"\n\
             sizes=[{size}]\n{wait}"
        ))
        .unwrap()
        .jobs(false, None)
        .remove(0);
        j.threads = threads;
        j
    }

    /// Where the kernel's second worker shares the driver's core and the driver yields
    /// beside it in the pipeline, it yields beside it through the floor's slices too;
    /// elsewhere it sleeps, then parks.
    #[test]
    fn the_floor_slices_driver_yields_where_the_pipelines_does() {
        let parallel = job("[1000, 1000]", "", 2);
        assert!(kernel_is_parallel(&parallel));
        assert_eq!(kernel_cpus(&parallel)[1], parallel.writer_cpu);
        assert_eq!(mvm_driver_wait(&parallel), WaitStrategy::Yield);
        assert_eq!(floor_wait(&parallel), FloorWait::Yield);
        let serial = job("[100, 100]", "", 2);
        assert_eq!(floor_wait(&serial), FloorWait::SleepThenPark);
        let parked = job("[1000, 1000]", "wait=\"park\"", 2);
        assert_eq!(floor_wait(&parked), FloorWait::SleepThenPark);
    }
}
