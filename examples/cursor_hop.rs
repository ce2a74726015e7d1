//! The hop from a history stream's writer to a cursor reading it, for the two publication
//! orders, interleaved in one run so the host's drift weighs on both: frames written with
//! `write_slice_frame` (the ring's slot filled first, then the payload; payload first too
//! where the ring appends with streaming stores, from about 262 144 elements) and with
//! `write_view_frame` (the payload in place first, then the ring), to two streams, one frame
//! every period (500 µs by default; make it longer than a write, or a frame's hop is timed
//! from the next frame's stamp), alternating. The writer runs on core 0 and stamps each frame
//! before its write; a thread on core 1 reads both streams through cursors and times each
//! frame from that stamp to its copy out of the ring.
//!
//! `cargo run --release --example cursor_hop -- [ELEMENTS] [spin|park] [FRAMES] [PERIOD_US]`
//! (defaults: 2401 u16, as a 49×49 camera; spin; 4000; 500). `park` makes notify streams and
//! parked cursors. Prints p10 / p50 / p90 of each order's hop in ns.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shmstream::{Dtype, Stream, StreamOptions, WaitStrategy};

fn pin(core: usize) {
    core_affinity::set_for_current(core_affinity::CoreId { id: core });
}

/// Sleeps to 50 µs before `t`, then spins to it (a paced camera).
fn pace(t: Instant) {
    if let Some(d) = t.checked_duration_since(Instant::now())
        && d > Duration::from_micros(60)
    {
        std::thread::sleep(d - Duration::from_micros(50));
    }
    while Instant::now() < t {
        std::hint::spin_loop();
    }
}

fn percentiles(mut v: Vec<u64>) -> String {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
    format!("p10 {:7} p50 {:7} p90 {:7}", at(0.1), at(0.5), at(0.9))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().map_or(Ok(2401), |a| a.parse())?;
    let park = args.get(1).is_some_and(|a| a == "park");
    let frames: u64 = args.get(2).map_or(Ok(4000), |a| a.parse())?;
    let period = Duration::from_micros(args.get(3).map_or(Ok(500), |a| a.parse())?);
    let wait = if park {
        WaitStrategy::Park
    } else {
        WaitStrategy::Spin
    };
    let names = ["ring-first", "payload-first"].map(|o| format!("hop-{o}-{}", std::process::id()));
    let streams = names
        .iter()
        .map(|name| {
            StreamOptions::new(name)
                .shape(&[n])
                .dtype(Dtype::U16)
                .notify(park)
                .history(16)
                .create()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let t0 = Instant::now();
    let stamp = Arc::new(AtomicU64::new(0));
    let reader = {
        let (names, stamp) = (names.clone(), stamp.clone());
        std::thread::spawn(move || -> Result<[Vec<u64>; 2], shmstream::Error> {
            pin(1);
            let handles = names
                .iter()
                .map(|name| Stream::open(name))
                .collect::<Result<Vec<_>, _>>()?;
            let mut cursors = Vec::new();
            for h in &handles {
                h.set_wait_strategy(wait);
                cursors.push(h.cursor()?);
            }
            let mut dst = vec![0u16; n];
            let mut hops = [Vec::new(), Vec::new()];
            for id in 1..=frames {
                let k = usize::from(id % 2 == 0);
                cursors[k].next_into_slice(&mut dst, Some(Duration::from_secs(5)))?;
                let hop =
                    (t0.elapsed().as_nanos() as u64).saturating_sub(stamp.load(Ordering::Acquire));
                if id > 100 {
                    hops[k].push(hop);
                }
            }
            Ok(hops)
        })
    };
    pin(0);
    let sources: Vec<Vec<u16>> = (0..4)
        .map(|k| (0..n).map(|i| (i * 7 + k) as u16).collect())
        .collect();
    let guards = streams
        .iter()
        .map(|s| s.lock(None))
        .collect::<Result<Vec<_>, _>>()?;
    std::thread::sleep(Duration::from_millis(100));
    let mut next = Instant::now();
    for id in 1..=frames {
        next += period;
        pace(next);
        let src = &sources[id as usize % sources.len()];
        stamp.store(t0.elapsed().as_nanos() as u64, Ordering::Release);
        if id % 2 == 1 {
            guards[0].write_slice_frame(src, id)?;
        } else {
            guards[1].write_view_frame(id, |dst: &mut [u16]| {
                dst.copy_from_slice(src);
                Ok::<(), std::convert::Infallible>(())
            })?;
        }
    }
    let [first, then] = reader.join().map_err(|_| "the reader panicked")??;
    let how = if park { "parked" } else { "spinning" };
    // A ring that appends with streaming stores (8 MiB or more of frames of 16 KiB or more,
    // on x86-64: the library's rule, up to the slots' headers) is not filled first.
    let streaming = cfg!(target_arch = "x86_64") && 16 * n * 2 >= 8 << 20 && n * 2 >= 16 << 10;
    let order = if streaming {
        "payload first, a streaming ring"
    } else {
        "ring first"
    };
    println!(
        "{n} u16, {how} cursor: {order} (write_slice_frame)  {}",
        percentiles(first)
    );
    println!(
        "{n} u16, {how} cursor: payload first (write_view_frame) {}",
        percentiles(then)
    );
    drop(guards);
    drop(streams);
    for name in &names {
        shmstream::unlink(name)?;
    }
    Ok(())
}
