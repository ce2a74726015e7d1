//! Hot paths timed alone (`kind = "op"`), each beside its bare twin: the CI gate's cases
//! (`scenarios/gate.toml`, `scenarios/README.md`). One process on the writer core times
//! both in alternating 5 ms slices ([`timed_pair`]), so that a host that changes speed
//! changes both sides alike; the floor's result goes to its own files beside ours.
//!
//! Each floor does what any implementation of the format must do for that call, and no
//! more, so a ratio near 1 is host-independent and a slowdown of the path shows in full:
//!
//! | op       | ours                              | floor                                          |
//! |----------|-----------------------------------|------------------------------------------------|
//! | `write`  | `write_slice` of a whole frame    | `flock` pair, odd/even sequence, `memcpy`, the write time (`CLOCK_REALTIME`), count |
//! | `read`   | `read_into_slice` of a frame      | sequence load, `memcpy` out, re-check          |
//! | `lock`   | `lock()` then drop the guard      | `flock(LOCK_EX)`, `flock(LOCK_UN)`             |
//! | `wake`   | `wake_waiters()` (notify stream)  | `FUTEX_WAKE` on a bare word                    |
//! | `kernel` | the cases' MVM kernel, one thread | the bare `sgemv_rows` call on the same operands |

use harness_sys::flock::LockFile;
use harness_sys::shm::ShmRegion;
use hdrhistogram::Histogram;
use shmstream::slowdown::{HotPath, guard};
use shmstream::{Element, Stream};

use crate::cases::{PageBuf, check_count, floor_prefix, wait_timeout};
use crate::error::{Context, Result, bail};
use crate::floor::{BareStream, Frames, paired_region_len, stream_pages};
use crate::kernel::{self, MvmKernel};
use crate::measure::{Measured, timed_pair};
use crate::scenario::HotOp;
use crate::spawn::{self, ChildSpec, Role};

fn op_of(spec: &ChildSpec) -> Result<HotOp> {
    spec.job.op.context("kind = \"op\" without an op")
}

type Sides = [(Measured, Histogram<u64>); 2];

/// The `Role::Op` child: times the floor and ours in alternation, writes the floor's
/// result to [`floor_prefix`] and returns ours.
pub fn run<T: Element>(spec: &ChildSpec) -> Result<(Measured, Histogram<u64>)> {
    let [floor, ours] = match op_of(spec)? {
        HotOp::Kernel => kernel(spec)?,
        op => {
            let region = ShmRegion::open(&spec.names.region, paired_region_len())
                .context("opening the floor region")?;
            region.prefault();
            let stream = || Stream::open(&spec.names.data).context("opening the op stream");
            match op {
                HotOp::Write => write::<T>(spec, &region, stream()?)?,
                HotOp::Read => read::<T>(spec, &region, stream()?, stream()?)?,
                HotOp::Lock => lock(spec, stream()?)?,
                _ => wake(spec, &region, stream()?)?,
            }
        }
    };
    spawn::write_outcome(
        &floor_prefix(&spec.result_prefix),
        Role::Op,
        true,
        Some(&floor),
    )?;
    Ok(ours)
}

fn write<T: Element>(spec: &ChildSpec, region: &ShmRegion, w: Stream) -> Result<Sides> {
    let pages = stream_pages(&spec.names.data, spec.job.payload_bytes())?;
    let bare = BareStream::new(region, &spec.names.lock)?.with_frames(Frames::of_stream(&pages));
    // One buffer for both, and the stream's own payload pages: see `pingpong::writer`.
    let src = PageBuf::<T>::new(spec.job.elements());
    timed_pair(
        &spec.job.timing,
        || Ok(bare.publish(src.as_slice())?),
        || Ok(w.write_slice(src.as_slice())?),
    )
}

fn read<T: Element>(spec: &ChildSpec, region: &ShmRegion, w: Stream, r: Stream) -> Result<Sides> {
    let n = spec.job.elements();
    let pages = stream_pages(&spec.names.data, spec.job.payload_bytes())?;
    let bare = BareStream::new(region, &spec.names.lock)?.with_frames(Frames::of_stream(&pages));
    // One buffer for both, and the stream's own payload pages (see `pingpong::writer`),
    // the buffer borrowed by each side in turn.
    let dst = PageBuf::<T>::new(n);
    bare.publish(dst.as_slice())?;
    w.write_slice(dst.as_slice())?;
    let want = r.count();
    let dst = std::cell::RefCell::new(dst);
    timed_pair(
        &spec.job.timing,
        || Ok(bare.snapshot(dst.borrow_mut().as_mut_slice())?),
        || {
            let c = r.read_into_slice(dst.borrow_mut().as_mut_slice())?;
            check_count("op read", c, want)
        },
    )
}

fn lock(spec: &ChildSpec, s: Stream) -> Result<Sides> {
    let lock = LockFile::open(&spec.names.lock, false)?;
    let to = wait_timeout(spec);
    timed_pair(
        &spec.job.timing,
        || {
            lock.lock()?;
            lock.unlock()?;
            Ok(())
        },
        || {
            drop(s.lock(to)?);
            Ok(())
        },
    )
}

fn wake(spec: &ChildSpec, region: &ShmRegion, s: Stream) -> Result<Sides> {
    if !s.notify() {
        bail!("the wake op needs a notify stream");
    }
    let bare = BareStream::new(region, &spec.names.lock)?;
    let word = bare.word();
    timed_pair(
        &spec.job.timing,
        || {
            harness_sys::futex::wake_all(word);
            Ok(())
        },
        || {
            s.wake_waiters();
            Ok(())
        },
    )
}

fn kernel(spec: &ChildSpec) -> Result<Sides> {
    let (rows, cols) = (spec.job.shape[0], spec.job.shape[1]);
    // Page-aligned operands: the kernel's speed must not depend on where the allocator
    // put x this run (a vector straddling cache lines costs split loads).
    let mut a = PageBuf::<f32>::new(rows * cols);
    kernel::fill_test_matrix(a.as_mut_slice());
    let mut x = PageBuf::<f32>::new(cols);
    kernel::fill_vector(x.as_mut_slice(), 1);
    let mut y = PageBuf::<f32>::new(rows);
    let mut y_floor = PageBuf::<f32>::new(rows);
    let k = MvmKernel::new(rows, cols, 1, vec![spec.cpu])?;
    let sides = timed_pair(
        &spec.job.timing,
        || {
            harness_sys::kernel::sgemv_rows(
                a.as_slice(),
                cols,
                std::hint::black_box(x.as_slice()),
                y_floor.as_mut_slice(),
            );
            Ok(())
        },
        || {
            let _slow = guard(HotPath::Mvm);
            k.run(a.as_slice(), x.as_slice(), y.as_mut_slice());
            Ok(())
        },
    )?;
    std::hint::black_box((y.as_slice(), y_floor.as_slice()));
    Ok(sides)
}
