//! Pingpong: the writer process publishes a frame, the reader process waits for it,
//! reads a safe snapshot and acknowledges on a second stream; the writer times the
//! round trip. The same two processes run the floor ([`crate::floor::FloorPing`] and
//! [`crate::floor::FloorEcho`] on a bare region) in slices of [`PING_SLICE`] that alternate
//! with ours ([`crate::measure::alternate`]): the wake-up of an idle core, most of a
//! parked round trip, changes speed from one second to the next on a shared host, and
//! floor passes in processes of their own, even alternating with ours pass by pass, left
//! the park form at 0.98–1.15 of its floor over six runs. The writer writes the floor's
//! result beside its own ([`crate::cases::floor_prefix`]).
//!
//! Protocol (ours through the library's streams):
//! 1. the reader takes the ack stream's write lock for the whole run (it is that stream's
//!    only writer, so each ack is a seqlock publish without the `flock` pair) and
//!    publishes once: "ready";
//! 2. per iteration the writer `write_slice`s the data (lock pair, seqlock, wake if
//!    notify) and waits for the ack count to pass its last value; the reader
//!    `read_after_into_slice`s the next frame and publishes its count on the ack stream;
//! 3. to switch to the floor, the writer publishes a [`command`] on the control stream,
//!    then one data frame, which the reader acknowledges before it serves the bare
//!    region; to switch back, the writer marks its next floor frame as the last
//!    ([`crate::floor::FloorPing::mark_leave`]); to stop, it publishes the stop command
//!    and one more data frame.
//!
//! The wait forms, each against the floor of the same mechanism: `wait = "spin"`: both
//! sides busy-spin. `"adaptive"`: notify streams, spin for the library's budget, then
//! park. `"park"` (or `"futex"`): notify streams, both sides sleep in `FUTEX_WAIT` at once,
//! with `gap_us` (default 100) of idle time before each round trip.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use harness_sys::shm::ShmRegion;
use hdrhistogram::Histogram;
use shmstream::{Element, Stream, WaitStrategy};

use crate::cases::{Commands, floor_prefix, wait_timeout};
use crate::error::{Context, Result, bail};
use crate::floor::{Echo, FloorEcho, FloorPing, Frames, paired_region_len, stream_pages};
use crate::measure::{Measured, SliceSide, Slicer, alternate};
use crate::scenario::Wait;
use crate::spawn::{self, ChildSpec};

/// How long ours and the floor each run before the other takes over: tens of parked
/// round trips, thousands of spinning ones at small payloads.
pub const PING_SLICE: Duration = Duration::from_millis(10);

/// What the writer asks of the reader through the control stream (its value; each is
/// followed by a data frame that wakes the reader).
mod command {
    /// Stop and exit.
    pub const STOP: u64 = 1;
    /// Acknowledge this frame, then serve the floor's bare region until told to leave it.
    pub const FLOOR: u64 = 2;
}

fn strategy(spec: &ChildSpec) -> WaitStrategy {
    spec.job.wait.map_or(WaitStrategy::Spin, Wait::strategy)
}

fn floor_region(spec: &ChildSpec) -> Result<ShmRegion> {
    ShmRegion::open(&spec.names.region, paired_region_len()).context("opening the floor region")
}

/// A side of the writer's alternation that first brings the reader over to it.
struct Entered<'a, F> {
    side: SliceSide<F>,
    enter: &'a dyn Fn() -> Result<()>,
}

impl<F: FnMut() -> Result<()>> Slicer for Entered<'_, F> {
    fn slice(&mut self, record: bool) -> Result<()> {
        (self.enter)()?;
        self.side.slice(record)
    }

    fn end_repeat(&mut self) -> Result<()> {
        self.side.end_repeat()
    }
}

/// Writer side: measures every round trip, ours and the floor's in alternation.
pub fn writer<T: Element>(spec: &ChildSpec) -> Result<(Measured, Histogram<u64>)> {
    let data = Stream::open(&spec.names.data).context("opening the data stream")?;
    let ack = Stream::open(&spec.names.ack).context("opening the ack stream")?;
    let ctl = Stream::open(&spec.names.ctl).context("opening the control stream")?;
    ack.set_wait_strategy(strategy(spec));
    let to = wait_timeout(spec);
    let region = floor_region(spec)?;
    let pages = stream_pages(&spec.names.data, spec.job.payload_bytes())?;
    let ping = RefCell::new(FloorPing::new(&region, spec)?.with_frames(Frames::of_stream(&pages)));
    // Page-aligned, as the stream's payload: every run copies at the same relative
    // alignment (see `PageBuf`). The floor publishes from it too, onto the data stream's
    // own payload pages: at 1-16 MB, which physical pages each side copied from and into
    // made ours up to 12% faster than its floor here.
    let src = crate::cases::PageBuf::<T>::new(spec.job.elements());
    let src = src.as_slice();
    let acks = Cell::new(
        ack.wait_for_count(0, to)
            .context("waiting for the reader to be ready")?,
    );
    let ours_round_trip = || -> Result<()> {
        data.write_slice(src)?;
        acks.set(ack.wait_for_count(acks.get(), to)?);
        Ok(())
    };
    // Where the reader is: serving ours (the streams) or the floor (the bare region).
    let on_floor = Cell::new(false);
    let to_ours = || -> Result<()> {
        if on_floor.get() {
            let mut p = ping.borrow_mut();
            p.mark_leave();
            p.round_trip(src)?;
            on_floor.set(false);
        }
        Ok(())
    };
    let to_floor = || -> Result<()> {
        if !on_floor.get() {
            ctl.write_slice(&[command::FLOOR])?;
            ours_round_trip()?;
            on_floor.set(true);
        }
        Ok(())
    };
    let gap = spec.job.gap_us;
    let mut floor = Entered {
        side: SliceSide::new(PING_SLICE, || ping.borrow_mut().round_trip(src)).with_gap_us(gap),
        enter: &to_floor,
    };
    let mut ours = Entered {
        side: SliceSide::new(PING_SLICE, ours_round_trip).with_gap_us(gap),
        enter: &to_ours,
    };
    alternate(&spec.job.timing, &mut floor, &mut ours)?;
    to_ours()?;
    ctl.write_slice(&[command::STOP])?;
    data.write_slice(src)?;
    let (mut fm, fh) = floor.side.finish();
    fm.notes.push((
        "floor passes".into(),
        format!(
            "alternating with ours in {} ms slices, in the writer and reader processes",
            PING_SLICE.as_millis()
        ),
    ));
    spawn::write_outcome(
        &floor_prefix(&spec.result_prefix),
        spec.role,
        true,
        Some(&(fm, fh)),
    )?;
    Ok(ours.side.finish())
}

/// Reader side: reads and acknowledges, serving the floor when told, until told to stop.
pub fn reader<T: Element>(spec: &ChildSpec) -> Result<()> {
    let data = Stream::open(&spec.names.data).context("opening the data stream")?;
    let ack = Stream::open(&spec.names.ack).context("opening the ack stream")?;
    let ctl = Stream::open(&spec.names.ctl).context("opening the control stream")?;
    data.set_wait_strategy(strategy(spec));
    let to = wait_timeout(spec);
    let region = floor_region(spec)?;
    let pages = stream_pages(&spec.names.data, spec.job.payload_bytes())?;
    let mut echo = FloorEcho::new(&region, spec).with_frames(Frames::of_stream(&pages));
    // The floor copies into it too (see the writer's buffer).
    let mut buf = crate::cases::PageBuf::<T>::new(spec.job.elements());
    let buf = buf.as_mut_slice();
    let guard = ack.lock(to).context("locking the ack stream")?;
    let mut last = data.count();
    let mut commands = Commands::new(&ctl);
    guard.write_slice(&[last])?;
    loop {
        let c = data
            .read_after_into_slice(last, buf, to)
            .context("waiting for a frame")?;
        last = c;
        let cmd = commands.next()?;
        if cmd == Some(command::STOP) {
            break;
        }
        guard.write_slice(&[c])?;
        match cmd {
            None => {}
            Some(command::FLOOR) => loop {
                match echo.serve(buf)? {
                    Echo::Frame => {}
                    Echo::Leave => break,
                    Echo::Stop => bail!("the writer stopped the floor mid-slice"),
                }
            },
            Some(other) => bail!("unknown command {other} on the control stream"),
        }
    }
    std::hint::black_box(&buf);
    Ok(())
}
