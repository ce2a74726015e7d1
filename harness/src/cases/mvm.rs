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

use hdrhistogram::Histogram;
use shmstream::WaitStrategy;

use crate::cases::{MvmStreams, PageBuf, mvm_driver_wait, wait_timeout};
use crate::error::{Context, Result, bail};
use crate::kernel::{self, MvmKernel};
use crate::measure::{Measured, timed_loop};
use crate::scenario::{Job, Wait};
use crate::spawn::ChildSpec;

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
    let mut ys = y
        .wait_for_count(0, to)
        .context("waiting for the compute process to be ready")?;
    // The only writer of x, as the compute process is of y: it holds x's write lock for the
    // run, so a vector is a seqlock publication without a flock pair (what a controller
    // that owns its stream does).
    let xg = x.lock(to).context("locking the x stream")?;
    let (mut m, h) = timed_loop(&job.timing, 0.0, |i| {
        xg.write_slice(&xs[(i % 3) as usize])?;
        ys = y.read_after_into_slice(ys, &mut yv, to)?;
        Ok(())
    })?;
    // One checked iteration: the pipeline must compute the right product.
    kernel::fill_vector(&mut xv, 1);
    xg.write_slice(&xv)?;
    y.read_after_into_slice(ys, &mut yv, to)?;
    let err = kernel::max_rel_error(&a, cols, &xv, &yv);
    if err > 1e-4 {
        bail!("y = A·x is wrong: max relative error {err:.3e}");
    }
    ctl.write_slice(&[1u64])?;
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

/// Compute: reads the matrix once, then serves x → y until told to stop.
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
    k.on_first_worker(|| -> Result<()> {
        let mut xv = PageBuf::<f32>::new(cols);
        let xv = xv.as_mut_slice();
        let mut yv = PageBuf::<f32>::new(rows);
        let yv = yv.as_mut_slice();
        let guard = y.lock(to).context("locking the y stream")?;
        // Sample x's count before saying "ready": the driver's first x may follow at once.
        let mut last = x.count();
        guard.write_slice(yv)?;
        loop {
            let c = x
                .read_after_into_slice(last, xv, to)
                .context("waiting for x")?;
            if ctl.count() > 0 {
                return Ok(());
            }
            last = c;
            {
                // The case's kernel call (the floor runs the same kernel unslowed).
                let _slow = shmstream::slowdown::guard(shmstream::slowdown::HotPath::Mvm);
                k.run(a, xv, yv);
            }
            guard.write_slice(yv)?;
        }
    })
}
