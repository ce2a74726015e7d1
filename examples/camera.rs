//! A synthetic camera: writes `u16` frames at a fixed rate into a stream with history, frame
//! `i` holding `i % 65536` in every pixel and frame id `i`, so a recorder or a bridge on the
//! other end can check every frame's content and id.
//!
//! `cargo run --release --example camera -- NAME [HEIGHTxWIDTH] [RATE_HZ] [SECONDS] [HISTORY]`
//! (defaults: 240x240, 2000 Hz, 30 s, 256 frames). Rate 0 writes as fast as it can. Prints
//! the frames written, the achieved rate and the worst pacing error; unlinks the stream at
//! the end unless `KEEP=1`.

use std::time::{Duration, Instant};

use shmstream::{Dtype, StreamOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.into());
    let name = args
        .first()
        .ok_or("usage: camera NAME [HxW] [RATE] [SECONDS] [HISTORY]")?;
    let shape: Vec<usize> = arg(1, "240x240")
        .split('x')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let rate: f64 = arg(2, "2000").parse()?;
    let seconds: f64 = arg(3, "30").parse()?;
    let history: usize = arg(4, "256").parse()?;
    let s = StreamOptions::new(name)
        .shape(&shape)
        .dtype(Dtype::U16)
        .notify(true)
        .history(history)
        .auto_unlink(std::env::var("KEEP").as_deref() != Ok("1"))
        .create()?;
    let mut frame = vec![0u16; s.len()];
    let start = Instant::now();
    let period = (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate));
    let (mut i, mut worst) = (0u64, Duration::ZERO);
    while start.elapsed().as_secs_f64() < seconds {
        i += 1;
        if let Some(p) = period {
            // Absolute deadlines: sleep to near the deadline, spin the rest.
            let due = start + p * (i as u32);
            if let Some(left) = due.checked_duration_since(Instant::now())
                && left > Duration::from_micros(200)
            {
                std::thread::sleep(left - Duration::from_micros(100));
            }
            while Instant::now() < due {
                std::hint::spin_loop();
            }
            worst = worst.max(Instant::now() - due);
        }
        frame.fill((i % 65536) as u16);
        s.write_slice_frame(&frame, i)?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{name}: {i} frames in {secs:.2} s ({:.1} Hz, {:.1} MB/s), worst pacing error {worst:?}",
        i as f64 / secs,
        i as f64 * s.size_bytes() as f64 / secs / 1e6
    );
    Ok(())
}
