//! Roundtrip (the seed's IO table): one process writes a whole frame through one handle
//! and reads it back through a second handle (a safe snapshot into a reused buffer),
//! timed in alternation with its floor ([`timed_pair`], as the op case): a bare publish
//! then a bare snapshot ([`BareStream`]), each through mappings of its own as ours' two
//! handles each map the stream, on the stream's own payload pages ([`stream_pages`]) and
//! the same two buffers. Where the floor ran in processes of its own, on pages of its own,
//! ours read above it at 1000² (1.027 in `reports/smoke/` as committed in b21000e): which pages a copy lands on moves
//! its time as much as the format's work does.

use std::cell::RefCell;

use harness_sys::shm::ShmRegion;
use hdrhistogram::Histogram;
use shmstream::{Element, Stream};

use crate::cases::{PageBuf, check_count, floor_prefix};
use crate::error::{Context, Result};
use crate::floor::{BareStream, Frames, paired_region_len, stream_pages};
use crate::measure::{Measured, PAIR_SLICE, timed_pair};
use crate::spawn::{self, ChildSpec, Role};

/// The `Role::Roundtrip` child: times the floor and ours in alternation, writes the
/// floor's result to [`floor_prefix`] and returns ours (`write_slice` then
/// `read_into_slice`, per iteration).
pub fn run<T: Element>(spec: &ChildSpec) -> Result<(Measured, Histogram<u64>)> {
    let w = Stream::open(&spec.names.data).context("opening the roundtrip stream (writer)")?;
    let r = Stream::open(&spec.names.data).context("opening the roundtrip stream (reader)")?;
    let bytes = spec.job.payload_bytes();
    let region = || {
        let region = ShmRegion::open(&spec.names.region, paired_region_len())
            .context("opening the floor region")?;
        region.prefault();
        Ok::<_, crate::error::Error>(region)
    };
    let (w_region, r_region) = (region()?, region()?);
    let w_pages = stream_pages(&spec.names.data, bytes)?;
    let r_pages = stream_pages(&spec.names.data, bytes)?;
    let bare_writer =
        BareStream::new(&w_region, &spec.names.lock)?.with_frames(Frames::of_stream(&w_pages));
    let bare_reader =
        BareStream::new(&r_region, &spec.names.lock)?.with_frames(Frames::of_stream(&r_pages));
    // Page-aligned, as the stream's payload (see `PageBuf`); one pair for both sides, the
    // destination borrowed by each in turn.
    let n = spec.job.elements();
    let src = PageBuf::<T>::new(n);
    let dst = RefCell::new(PageBuf::<T>::new(n));
    let mut expect = r.count();
    let [(mut floor, floor_hist), ours] = timed_pair(
        &spec.job.timing,
        || {
            bare_writer.publish(src.as_slice())?;
            Ok(bare_reader.snapshot(dst.borrow_mut().as_mut_slice())?)
        },
        || {
            w.write_slice(src.as_slice())?;
            let c = r.read_into_slice(dst.borrow_mut().as_mut_slice())?;
            expect += 1;
            check_count("roundtrip read", c, expect)
        },
    )?;
    std::hint::black_box(dst.borrow().as_slice());
    floor.notes.push((
        "floor passes".into(),
        format!(
            "alternating with ours in {} ms slices, in the roundtrip process",
            PAIR_SLICE.as_millis()
        ),
    ));
    spawn::write_outcome(
        &floor_prefix(&spec.result_prefix),
        Role::Roundtrip,
        true,
        Some(&(floor, floor_hist)),
    )?;
    Ok(ours)
}
