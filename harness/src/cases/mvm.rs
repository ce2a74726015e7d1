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
//! while the driver sleeps, then parks for the answer, or, every other slice where the
//! pipeline's driver yields, yields beside the kernel as it does there (`RemoteFloor`). A
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
    /// Time one slice of bare kernel calls with the driver yielding beside them.
    pub const FLOOR_BESIDE: u64 = 5;
    /// The same, not recorded (warm-up).
    pub const FLOOR_BESIDE_WARM: u64 = 6;
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
        turns: FloorTurns::new(floor_beside(job)),
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

/// The floor's side of the alternation, seen from the driver: each slice is a command
/// to the compute process, which times it and answers with a y publication. The driver
/// sleeps until just before the answer is due, then parks for it, so the kernel has its
/// cores to itself, as in a bare run. Where the driver yields in the pipeline (a kernel
/// worker shares its core), every other slice it yields beside the kernel instead, as it
/// does through each product ([`FloorTurns`]), and the compute process keeps the faster of
/// the two ([`faster_floor`]). On this 2-core VM each alone has read slower than the
/// pipeline it bounds: the sleeping one 1.076× in one disturbed smoke run on 2026-12-03
/// (the pipeline at twice its usual time), after which the driver yielded through every
/// slice; the yielding one above 1 in 16 of 21 CI smoke runs on 2026-12-05 (in other runs
/// at n = 1000: 29.5 µs at p50 against the pipeline's 28.5, the sleeping one 24.0).
struct RemoteFloor<'a> {
    ctl: &'a Stream,
    xg: &'a WriteGuard<'a>,
    x: &'a [f32],
    y: &'a Stream,
    seen: &'a Cell<u64>,
    scratch: Vec<f32>,
    to: Option<Duration>,
    /// How long the last slice took from command to answer.
    last_slice: Duration,
    /// Which way each slice is timed.
    turns: FloorTurns,
}

/// Which way each floor slice is timed: where `beside`, every other slice of each phase
/// (the warm-up, each repeat) beside the yielding driver, each phase starting with one
/// of the driver asleep, so that floor has calls in every repeat.
#[derive(Debug, Clone, Copy)]
struct FloorTurns {
    beside: bool,
    /// Slices so far in this phase.
    turn: u64,
    /// Whether this phase records (a repeat) or not (the warm-up).
    recording: bool,
}

impl FloorTurns {
    fn new(beside: bool) -> Self {
        Self {
            beside,
            turn: 0,
            recording: false,
        }
    }

    /// The command of the next slice, and whether the driver yields beside it.
    fn next(&mut self, record: bool) -> (u64, bool) {
        if record != self.recording {
            (self.turn, self.recording) = (0, record);
        }
        let beside = self.beside && self.turn % 2 == 1;
        self.turn += 1;
        let cmd = match (record, beside) {
            (false, false) => command::FLOOR_WARM,
            (false, true) => command::FLOOR_BESIDE_WARM,
            (true, false) => command::FLOOR,
            (true, true) => command::FLOOR_BESIDE,
        };
        (cmd, beside)
    }

    /// A repeat ended: the next starts anew.
    fn end_repeat(&mut self) {
        self.turn = 0;
    }
}

/// Whether the floor also times the kernel beside the yielding driver ([`RemoteFloor`]):
/// where the pipeline's driver yields (the kernel uses its core too).
fn floor_beside(job: &Job) -> bool {
    mvm_driver_wait(job) == WaitStrategy::Yield
}

/// How much earlier than the last slice's answer the driver wakes for the next one.
const WAKE_EARLY: Duration = Duration::from_micros(200);

impl RemoteFloor<'_> {
    /// Sends `cmd` and waits for the answer: with the pipeline's wait when `beside`, else
    /// sleeping `sleep`, then parked. Returns the time taken.
    fn ask(&mut self, cmd: u64, sleep: Duration, beside: bool) -> Result<Duration> {
        let start = std::time::Instant::now();
        self.ctl.write_slice(&[cmd])?;
        self.xg.write_slice(self.x)?;
        let pipeline_wait = self.y.wait_strategy();
        if !beside {
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
        let (cmd, beside) = self.turns.next(record);
        let sleep = self.last_slice.saturating_sub(WAKE_EARLY).max(MVM_SLICE);
        self.last_slice = self.ask(cmd, sleep, beside)?;
        Ok(())
    }

    fn end_repeat(&mut self) -> Result<()> {
        self.ask(command::FLOOR_END_REPEAT, Duration::ZERO, false)?;
        self.turns.end_repeat();
        Ok(())
    }
}

/// The floor of the two timed ([`RemoteFloor`]) with the lower median: `alone`, the
/// kernel with the driver asleep, or `beside`, with the driver yielding beside it, where
/// that one has calls in every repeat (a repeat of a single floor slice has none). Notes
/// both medians, or why `beside` was left out where it was timed.
fn faster_floor(
    alone: (Measured, Histogram<u64>),
    beside: (Measured, Histogram<u64>),
) -> (Measured, Histogram<u64>) {
    let usable = |m: &Measured, h: &Histogram<u64>| {
        !h.is_empty() && !m.repeat_hz.is_empty() && m.repeat_hz.iter().all(|&hz| hz > 0.0)
    };
    if !usable(&beside.0, &beside.1) {
        let (mut m, h) = alone;
        if beside.0.iterations > 0 {
            m.notes.push((
                "floor driver".into(),
                "the driver asleep (beside the yielding driver: a repeat without a slice, not compared)"
                    .into(),
            ));
        }
        return (m, h);
    }
    let p50 = |h: &Histogram<u64>| h.value_at_quantile(0.5);
    let (a, b) = (p50(&alone.1), p50(&beside.1));
    let note = format!(
        "the faster median of two: the driver asleep {:.2} µs, yielding beside the kernel {:.2} µs",
        a as f64 / 1e3,
        b as f64 / 1e3
    );
    let (mut m, h) = if b < a { beside } else { alone };
    m.notes.push(("floor driver".into(), note));
    (m, h)
}

/// The floor's step: the kernel alone, on plain memory, into `y`.
fn bare_product<'a>(
    k: &'a MvmKernel,
    a: &'a [f32],
    x: &'a [f32],
    y: &'a mut [f32],
) -> impl FnMut() -> Result<()> + 'a {
    move || {
        k.run(a, std::hint::black_box(x), y);
        std::hint::black_box(&mut *y);
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
        let mut yb = PageBuf::<f32>::new(rows);
        let yb = yb.as_mut_slice();
        let mut floor = SliceSide::new(MVM_SLICE, bare_product(&k, a, xf, yf));
        // The same, timed while the driver yields beside it (`RemoteFloor`).
        let mut beside = SliceSide::new(MVM_SLICE, bare_product(&k, a, xf, yb));
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
                    command::FLOOR_BESIDE => beside.slice(true)?,
                    command::FLOOR_WARM => floor.slice(false)?,
                    command::FLOOR_BESIDE_WARM => beside.slice(false)?,
                    command::FLOOR_END_REPEAT => {
                        floor.end_repeat()?;
                        beside.end_repeat()?;
                    }
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
        let beside = beside.finish();
        let beside_ran = beside.0.iterations > 0;
        let (mut m, h) = faster_floor(floor.finish(), beside);
        if kernel::max_rel_error(a, cols, xf, yf) > 1e-4
            || (beside_ran && kernel::max_rel_error(a, cols, xf, yb) > 1e-4)
        {
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
    /// beside it in the pipeline, the floor is timed beside the yielding driver too (every
    /// other slice); elsewhere only with the driver asleep.
    #[test]
    fn the_floor_is_timed_beside_the_driver_where_the_pipelines_driver_yields() {
        let parallel = job("[1000, 1000]", "", 2);
        assert!(kernel_is_parallel(&parallel));
        assert_eq!(kernel_cpus(&parallel)[1], parallel.writer_cpu);
        assert_eq!(mvm_driver_wait(&parallel), WaitStrategy::Yield);
        assert!(floor_beside(&parallel));
        assert!(!floor_beside(&job("[100, 100]", "", 2)));
        assert!(!floor_beside(&job("[1000, 1000]", "wait=\"park\"", 2)));
    }

    /// A floor whose calls each took `ns`, over `repeats` repeats (0 Hz in a repeat where
    /// `calls` is 0).
    fn floor(ns: u64, calls: u64, repeats: usize) -> (Measured, Histogram<u64>) {
        let mut h = crate::hist::new();
        for _ in 0..calls * repeats as u64 {
            h.record(ns).unwrap();
        }
        let m = Measured {
            repeat_hz: vec![calls as f64 * 50.0; repeats],
            iterations: calls * repeats as u64,
            ..Measured::default()
        };
        (m, h)
    }

    #[test]
    fn the_floor_is_the_faster_of_the_two_waits_and_says_which() {
        // The driver asleep faster: that one, noted beside the other's median.
        let (m, h) = faster_floor(floor(24_000, 100, 3), floor(29_500, 100, 3));
        assert_eq!(h.value_at_quantile(0.5) / 1000, 24);
        let note = &m.notes.iter().find(|(k, _)| k == "floor driver").unwrap().1;
        assert!(
            note.contains("asleep 24.0") && note.contains("kernel 29.5"),
            "{note}"
        );
        // Yielding beside the kernel faster: that one.
        let (_, h) = faster_floor(floor(29_500, 100, 3), floor(24_000, 100, 3));
        assert_eq!(h.value_at_quantile(0.5) / 1000, 24);
    }

    #[test]
    fn a_floor_beside_the_driver_with_a_repeat_of_no_calls_is_not_taken() {
        // Never timed (a serial kernel: the driver does not yield): the driver-asleep
        // floor stands, without a note.
        for beside in [floor(1_000, 0, 0), floor(1_000, 0, 3)] {
            let (m, h) = faster_floor(floor(24_000, 100, 3), beside);
            assert_eq!(h.value_at_quantile(0.5) / 1000, 24);
            assert!(m.notes.is_empty());
        }
        // A repeat too short for one of its slices: the same, saying why.
        let mut part = floor(1_000, 100, 3);
        part.0.repeat_hz[1] = 0.0;
        let (m, h) = faster_floor(floor(24_000, 100, 3), part);
        assert_eq!(h.value_at_quantile(0.5) / 1000, 24);
        assert!(
            m.notes[0].1.contains("a repeat without a slice"),
            "{:?}",
            m.notes
        );
    }

    /// Every phase (warm-up, each repeat) starts with a slice of the driver asleep and
    /// alternates where the driver yields in the pipeline; elsewhere every slice sleeps.
    #[test]
    fn floor_slices_alternate_and_each_phase_starts_with_the_driver_asleep() {
        use command::*;
        let mut t = FloorTurns::new(true);
        let cmds = |t: &mut FloorTurns, record: bool, n: usize| {
            (0..n).map(|_| t.next(record).0).collect::<Vec<_>>()
        };
        assert_eq!(
            cmds(&mut t, false, 3),
            [FLOOR_WARM, FLOOR_BESIDE_WARM, FLOOR_WARM]
        );
        // After an odd warm-up, the first repeat still starts asleep.
        assert_eq!(cmds(&mut t, true, 3), [FLOOR, FLOOR_BESIDE, FLOOR]);
        t.end_repeat();
        assert_eq!(cmds(&mut t, true, 1), [FLOOR]);
        t.end_repeat();
        assert_eq!(t.next(true), (FLOOR, false));
        assert_eq!(t.next(true), (FLOOR_BESIDE, true));
        let mut serial = FloorTurns::new(false);
        assert_eq!(cmds(&mut serial, false, 2), [FLOOR_WARM, FLOOR_WARM]);
        assert_eq!(cmds(&mut serial, true, 3), [FLOOR, FLOOR, FLOOR]);
    }
}
