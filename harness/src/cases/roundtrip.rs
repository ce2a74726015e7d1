//! Roundtrip (the seed's IO table): one process writes a whole frame through one handle
//! and reads it back through a second handle (a safe snapshot into a reused buffer).

use hdrhistogram::Histogram;
use shmstream::{Element, Stream};

use crate::error::{Context, Result};
use crate::measure::{Measured, timed_loop};
use crate::spawn::ChildSpec;

/// The measuring loop: `write_slice` then `read_into_slice`, per iteration.
pub fn solo<T: Element>(spec: &ChildSpec) -> Result<(Measured, Histogram<u64>)> {
    let w = Stream::open(&spec.names.data).context("opening the roundtrip stream (writer)")?;
    let r = Stream::open(&spec.names.data).context("opening the roundtrip stream (reader)")?;
    let n = spec.job.elements();
    // Page-aligned, as the floor's buffers and the stream's payload (see `PageBuf`).
    let src = crate::cases::PageBuf::<T>::new(n);
    let src = src.as_slice();
    let mut dst = crate::cases::PageBuf::<T>::new(n);
    let dst = dst.as_mut_slice();
    let mut expect = r.count();
    let (m, h) = timed_loop(&spec.job.timing, 0.0, |_| {
        w.write_slice(src)?;
        let c = r.read_into_slice(dst)?;
        expect += 1;
        crate::cases::check_count("roundtrip read", c, expect)
    })?;
    std::hint::black_box(&*dst);
    Ok((m, h))
}
