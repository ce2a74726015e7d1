//! The AO loop's camera hop, ours against its bare floor, alternating frame by frame in one
//! process, so the host's drift weighs on both alike (the loop's composed floor times its
//! hop between the loop's own frames where it can, in passes of their own otherwise).
//!
//! A writer on core 0 publishes a 49×49 u16 frame every `period / 2`, alternately into a
//! stream with 16 frames of history (`write_slice_frame`, no notify, as the spinning loop's
//! camera) and into a bare region of 16 slots (the floor's own publication,
//! `harness_sys::bare::BareStream::publish_in`: odd sequence, copy, write time, count, even
//! sequence). A thread on core 1 spins for each, through a cursor or on the bare sequence,
//! copies it out (`Frames::read_published`, as the floor's reader), and times it from the
//! stamp taken before the write.
//! With `work_ns`, the reader then busies itself that long, as a stage computes.
//!
//! `cargo run --release -p harness --example hop_vs_bare -- [FRAMES] [PERIOD_NS] [WORK_NS] [PIXELS] [ADAPTIVE]`
//! (defaults 4000, 1 000 000, 0, 2401: the pyRTC frame; 1 leaves the fixed cost of a hop; ADAPTIVE 1: the cursor
//! waits adaptively, spinning for its budget before it yields and sleeps (the stream has no
//! notify, so it does not park; the bare reader always spins), so frames must come sooner
//! than that: a short period). Prints p10 / p50 / p90 of each hop in ns; the first 200
//! frames are warm-up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use harness_sys::bare::{BareStream, Frames, SEQ, region_len};
use harness_sys::clock::{monotonic_ns, sleep_then_spin_until};
use harness_sys::shm::ShmRegion;
use shmstream::{Dtype, Stream, StreamOptions, WaitStrategy};

/// Pixels of the pyRTC geometry's frame (the default frame).
const PIXELS: usize = 49 * 49;
/// Frames each side keeps (the stages' input history).
const SLOTS: usize = 16;
const WARM_UP: u64 = 200;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn pin(core: usize) {
    core_affinity::set_for_current(core_affinity::CoreId { id: core });
}

fn percentiles(mut v: Vec<u64>) -> String {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
    format!("p10 {:6} p50 {:6} p90 {:6}", at(0.1), at(0.5), at(0.9))
}

/// Busy for `ns`, reading `frame` (a stage's compute).
fn work(frame: &[u16], ns: u64) {
    let until = monotonic_ns() + ns;
    let mut acc = 0u64;
    while monotonic_ns() < until {
        acc = frame.iter().fold(acc, |a, &v| a.wrapping_add(u64::from(v)));
    }
    std::hint::black_box(acc);
}

fn arg(i: usize, default: u64) -> Result<u64, Error> {
    Ok(std::env::args().nth(i).map_or(Ok(default), |a| a.parse())?)
}

fn main() -> Result<(), Error> {
    let frames = arg(1, 4000)?;
    let period = arg(2, 1_000_000)?;
    let work_ns = arg(3, 0)?;
    let pixels = arg(4, PIXELS as u64)? as usize;
    let strategy = if arg(5, 0)? == 1 {
        WaitStrategy::Adaptive
    } else {
        WaitStrategy::Spin
    };
    let name = format!("hop-vs-bare-{}", std::process::id());
    let stream = StreamOptions::new(&name)
        .shape(&[pixels])
        .dtype(Dtype::U16)
        .history(SLOTS)
        .create()?;
    let region = Arc::new(ShmRegion::create(
        &format!("{name}-bare"),
        region_len(pixels * 2, SLOTS),
    )?);
    region.prefault();
    let stamp = Arc::new(AtomicU64::new(0));
    let reader = {
        let (name, stamp, region) = (name.clone(), stamp.clone(), region.clone());
        std::thread::spawn(move || -> Result<(Vec<u64>, Vec<u64>), Error> {
            pin(1);
            let handle = Stream::open(&name)?;
            handle.set_wait_strategy(strategy);
            let mut cursor = handle.cursor()?;
            let (seq, slots) = (region.atomic_u32(SEQ), Frames::own(&region));
            let mut frame = vec![0u16; pixels];
            let (mut ours, mut bare) = (Vec::new(), Vec::new());
            for id in 1..=frames {
                let k = id / 2;
                if id % 2 == 1 {
                    cursor.next_into_slice(&mut frame, Some(Duration::from_secs(5)))?;
                } else {
                    // Frame k of the bare region; a later one if the reader fell behind.
                    // Spun as ours spins (`Spin`'s breaks keep the hypervisor from stopping
                    // the vCPU of an unbroken `pause` loop, which only the floor would pay).
                    let want = 2 * k as u32;
                    let mut spin = shmstream::spin::Spin::new();
                    loop {
                        let s = seq.load(Ordering::Acquire);
                        if s >= want && s % 2 == 0 {
                            let slot = (s / 2 - 1) as usize % SLOTS;
                            if slots.read_published(seq, s, slot, &mut frame).is_some() {
                                break;
                            }
                        }
                        spin.pause();
                    }
                }
                let hop = monotonic_ns().saturating_sub(stamp.load(Ordering::Acquire));
                if id > WARM_UP {
                    if id % 2 == 1 { &mut ours } else { &mut bare }.push(hop);
                }
                work(&frame, work_ns);
            }
            Ok((ours, bare))
        })
    };
    pin(0);
    let sources: Vec<Vec<u16>> = (0..4)
        .map(|k| (0..pixels).map(|i| (i * 7 + k) as u16).collect())
        .collect();
    let guard = stream.lock(None)?;
    // The floor's publication for a writer that holds its stream for the run (the camera).
    let bare = BareStream::held(&region);
    std::thread::sleep(Duration::from_millis(100));
    let mut next = monotonic_ns();
    for id in 1..=frames {
        next += period / 2;
        sleep_then_spin_until(next);
        let src = &sources[id as usize % sources.len()];
        stamp.store(monotonic_ns(), Ordering::Release);
        if id % 2 == 1 {
            guard.write_slice_frame(src, id)?;
        } else {
            bare.publish_in((id / 2 - 1) as usize % SLOTS, src)?;
        }
    }
    let (ours, bare) = reader.join().map_err(|_| "the reader panicked")??;
    println!("ours {}   bare {}", percentiles(ours), percentiles(bare));
    drop(guard);
    drop(stream);
    shmstream::unlink(&name)?;
    Ok(())
}
