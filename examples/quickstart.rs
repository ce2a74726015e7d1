//! Quick start: create a stream, write frames, read them back from a second handle, and
//! print what a reader sees. Run with `cargo run --release --example quickstart`.

use std::time::{Duration, Instant};

use shmstream::{Dtype, Stream, StreamOptions};

fn main() -> shmstream::Result<()> {
    let name = format!("quickstart-{}", std::process::id());
    let writer = StreamOptions::new(&name)
        .shape(&[480, 640])
        .dtype(Dtype::F32)
        .notify(true)
        .auto_unlink(true)
        .create()?;
    let reader = Stream::open_readonly(&name)?;
    println!("{writer}\n");

    let mut frame = vec![0f32; writer.len()];
    let mut out = vec![0f32; reader.len()];
    let n = 2_000u64;
    // Only the write and the read are timed, not the frame's fill and check.
    let mut dt = Duration::ZERO;
    for i in 1..=n {
        frame.fill(i as f32);
        let start = Instant::now();
        writer.write_slice_frame(&frame, i)?;
        let info = reader.read_publication_into(&mut out)?;
        dt += start.elapsed();
        assert_eq!(info.frame_id, i);
        assert!(out.iter().all(|&v| v == i as f32));
    }
    println!(
        "{n} write+read round trips of {}x{} float32 in {:.3} s: {:.0} Hz, {:.2} GB/s (write + read bytes)",
        writer.shape()[0],
        writer.shape()[1],
        dt.as_secs_f64(),
        n as f64 / dt.as_secs_f64(),
        2.0 * writer.size_bytes() as f64 * n as f64 / dt.as_secs_f64() / 1e9
    );
    let latest = reader.read_new::<f32>(Some(Duration::from_millis(10)));
    println!(
        "read_new with nothing new: {}",
        latest.err().map(|e| e.to_string()).unwrap_or_default()
    );
    println!("streams now: {:?}", shmstream::list_streams()?);
    Ok(())
}
