//! Pingpong: the writer process publishes a frame, the reader process waits for it,
//! reads a safe snapshot and acknowledges on a second stream; the writer times the
//! round trip.
//!
//! Protocol (all through the library's streams):
//! 1. the reader takes the ack stream's write lock for the whole run (it is that stream's
//!    only writer, so each ack is a seqlock publish without the `flock` pair) and
//!    publishes once: "ready";
//! 2. per iteration the writer `write_slice`s the data (lock pair, seqlock, wake if
//!    notify) and waits for the ack count to pass its last value; the reader
//!    `read_after_into_slice`s the next frame and publishes its count on the ack stream;
//! 3. to stop, the writer publishes the control stream once, then one more data frame.
//!
//! The wait forms, each against the floor of the same mechanism: `wait = "spin"`: both
//! sides busy-spin. `"adaptive"`: notify streams, spin for the library's budget, then
//! park. `"park"` (or `"futex"`): notify streams, both sides sleep in `FUTEX_WAIT` at once,
//! with `gap_us` (default 100) of idle time before each round trip.

use hdrhistogram::Histogram;
use shmstream::{Element, Stream, WaitStrategy};

use crate::cases::wait_timeout;
use crate::error::{Context, Result};
use crate::measure::{Measured, timed_loop};
use crate::scenario::Wait;
use crate::spawn::ChildSpec;

fn strategy(spec: &ChildSpec) -> WaitStrategy {
    spec.job.wait.map_or(WaitStrategy::Spin, Wait::strategy)
}

/// Writer side: measures every round trip.
pub fn writer<T: Element>(spec: &ChildSpec) -> Result<(Measured, Histogram<u64>)> {
    let data = Stream::open(&spec.names.data).context("opening the data stream")?;
    let ack = Stream::open(&spec.names.ack).context("opening the ack stream")?;
    let ctl = Stream::open(&spec.names.ctl).context("opening the control stream")?;
    ack.set_wait_strategy(strategy(spec));
    let to = wait_timeout(spec);
    // Page-aligned, as the floor's buffers and the stream's payload: every run copies at
    // the same relative alignment (see `PageBuf`).
    let src = crate::cases::PageBuf::<T>::new(spec.job.elements());
    let src = src.as_slice();
    let mut acks = ack
        .wait_for_count(0, to)
        .context("waiting for the reader to be ready")?;
    let (m, h) = timed_loop(&spec.job.timing, spec.job.gap_us, |_| {
        data.write_slice(src)?;
        acks = ack.wait_for_count(acks, to)?;
        Ok(())
    })?;
    ctl.write_slice(&[1u64])?;
    data.write_slice(src)?;
    Ok((m, h))
}

/// Reader side: reads and acknowledges until the writer says stop.
pub fn reader<T: Element>(spec: &ChildSpec) -> Result<()> {
    let data = Stream::open(&spec.names.data).context("opening the data stream")?;
    let ack = Stream::open(&spec.names.ack).context("opening the ack stream")?;
    let ctl = Stream::open(&spec.names.ctl).context("opening the control stream")?;
    data.set_wait_strategy(strategy(spec));
    let to = wait_timeout(spec);
    let mut buf = crate::cases::PageBuf::<T>::new(spec.job.elements());
    let buf = buf.as_mut_slice();
    let guard = ack.lock(to).context("locking the ack stream")?;
    let mut last = data.count();
    guard.write_slice(&[last])?;
    loop {
        let c = data
            .read_after_into_slice(last, buf, to)
            .context("waiting for a frame")?;
        if ctl.count() > 0 {
            break;
        }
        last = c;
        guard.write_slice(&[c])?;
    }
    std::hint::black_box(&buf);
    Ok(())
}
