//! `shmstream record NAME... --out DIR (--frames N | --duration S) [--per-file N]
//! [--format fits|npy]`: every frame of one or more streams into cube files.
//!
//! Per stream, a reader thread drains the stream (a history cursor; a plain stream with
//! `read_new`, warning that frames can be missed) into a fixed pool of preallocated
//! buffers, and a writer thread does the file I/O. A slow disk therefore shows as a cursor
//! overrun (counted as lost frames, reported), never as a stall of the producer, which never
//! waits for us. Files: `DIR/<name>_<index>.fits` (or `.npy` + `.frames.csv`), `--per-file`
//! frames each. Exit status 1 if any frame was lost or any file failed; frames already
//! written stay readable (the current file is closed with what it holds).

mod fits;
mod frame_file;
mod npy_cube;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use shmstream::{Error, FrameInfo, Stream, WaitStrategy};

use crate::Fallible;

/// Buffers in flight per stream between its reader and writer threads.
const POOL: usize = 64;
/// How often a waiting reader checks whether to stop.
const POLL: Duration = Duration::from_millis(100);

/// File format of the cubes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// FITS image cube + binary table (the AO telemetry format).
    Fits,
    /// `.npy` cube + `.frames.csv` table (every dtype).
    Npy,
}

/// What to record and where.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) names: Vec<String>,
    pub(crate) out: PathBuf,
    pub(crate) frames: Option<u64>,
    pub(crate) duration: Option<Duration>,
    pub(crate) per_file: usize,
    pub(crate) format: Format,
}

/// Per-frame metadata kept beside the cube.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameMeta {
    pub(crate) frame_id: u64,
    pub(crate) count: u64,
    pub(crate) write_time: f64,
    pub(crate) record_time: f64,
}

/// One cube file being filled.
pub(crate) trait CubeSink {
    /// Appends one frame (the stream's raw bytes).
    fn push(&mut self, bytes: &[u8], meta: FrameMeta) -> Fallible;
    /// Frames appended so far.
    fn frames(&self) -> usize;
    /// Writes what remains (sizes, tables) and closes the file. Idempotent.
    fn finish(&mut self) -> Fallible;
}

/// Counters one stream's threads update and the progress line reads.
#[derive(Debug, Default)]
struct Progress {
    frames: AtomicU64,
    lost: AtomicU64,
    files: AtomicU64,
    done: AtomicBool,
}

/// A frame buffer aligned for every element type (the bytes are viewed as pixels).
struct Buffer {
    words: Vec<u64>,
    len: usize,
}

impl Buffer {
    fn new(len: usize) -> Buffer {
        Buffer {
            words: vec![0; len.div_ceil(8)],
            len,
        }
    }
    fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.words)[..self.len]
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `shmstream record`.
pub(crate) fn record(plan: &Plan) -> Fallible {
    if plan.per_file == 0 {
        return Err("--per-file must be at least 1".into());
    }
    std::fs::create_dir_all(&plan.out).map_err(|e| {
        format!(
            "--out {}: cannot create the directory: {e}",
            plan.out.display()
        )
    })?;
    // Open everything before recording anything: a bad name or dtype fails at once.
    let mut streams = Vec::new();
    for name in &plan.names {
        let s = Stream::open_readonly(name)?;
        // The ring holds many frames: sleep in the futex between them rather than spin on a
        // core the producer and the file writer need.
        s.set_wait_strategy(WaitStrategy::Park);
        if plan.format == Format::Fits {
            fits::image_type(s.dtype()).map_err(|e| format!("stream '{name}': {e}"))?;
        }
        if s.history_depth() == 0 {
            eprintln!(
                "shmstream: warning: stream '{name}' keeps no history: frames written faster than they are read are missed (counted as lost); create it with history(n) to record every frame"
            );
        }
        streams.push(s);
    }
    crate::watch::install_handlers()?;
    let started = Instant::now();
    let progress: Vec<Arc<Progress>> = streams.iter().map(|_| Arc::default()).collect();
    // Errors cross threads as text (`Fallible`'s boxed error is not `Send`).
    let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = streams
            .iter()
            .zip(&progress)
            .map(|(s, p)| {
                scope.spawn(move || record_stream(s, plan, p, started).map_err(|e| e.to_string()))
            })
            .collect();
        show_progress(plan, &progress, started);
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a recorder thread panicked".into()))
            })
            .collect()
    });
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let mut lost_total = 0;
    for ((s, p), r) in streams.iter().zip(&progress).zip(&results) {
        let frames = p.frames.load(Ordering::Relaxed);
        let lost = p.lost.load(Ordering::Relaxed);
        lost_total += lost;
        let mb = frames as f64 * s.size_bytes() as f64 / 1e6;
        eprintln!(
            "{}: {frames} frames in {} file(s), {:.1} MB at {:.1} MB/s, {lost} lost{}",
            s.name(),
            p.files.load(Ordering::Relaxed),
            mb,
            mb / secs,
            match r {
                Ok(()) => String::new(),
                Err(e) => format!(", FAILED: {e}"),
            }
        );
    }
    if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
        return Err(e.into());
    }
    if lost_total > 0 {
        return Err(format!("{lost_total} frame(s) lost while recording (see above)").into());
    }
    Ok(())
}

/// The progress line on a terminal, until every recorder is done.
fn show_progress(plan: &Plan, progress: &[Arc<Progress>], started: Instant) {
    let tty = std::io::stderr().is_terminal();
    while !progress.iter().all(|p| p.done.load(Ordering::Acquire)) {
        std::thread::park_timeout(Duration::from_millis(250));
        if tty {
            let frames: u64 = progress
                .iter()
                .map(|p| p.frames.load(Ordering::Relaxed))
                .sum();
            let lost: u64 = progress
                .iter()
                .map(|p| p.lost.load(Ordering::Relaxed))
                .sum();
            eprint!(
                "\rrecording {} stream(s): {frames} frames, {lost} lost, {:.1} s   ",
                plan.names.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    if tty {
        eprintln!();
    }
}

/// One stream: a reader (this thread) and a writer thread joined by a buffer pool.
fn record_stream(s: &Stream, plan: &Plan, p: &Progress, started: Instant) -> Fallible {
    struct Done<'a>(&'a Progress);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.done.store(true, Ordering::Release);
        }
    }
    let _done = Done(p);
    let (free_tx, free_rx) = sync_channel::<Buffer>(POOL);
    let (full_tx, full_rx) = sync_channel::<(Buffer, FrameMeta)>(POOL);
    for _ in 0..POOL {
        let _ = free_tx.send(Buffer::new(s.size_bytes()));
    }
    std::thread::scope(|scope| {
        let writer =
            scope.spawn(|| write_files(s, plan, p, full_rx, free_tx).map_err(|e| e.to_string()));
        let read = read_frames(s, plan, p, started, &free_rx, full_tx);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err("the writer thread panicked".into()));
        written.map_err(Into::into).and(read)
    })
}

fn read_frames(
    s: &Stream,
    plan: &Plan,
    p: &Progress,
    started: Instant,
    free: &Receiver<Buffer>,
    full: SyncSender<(Buffer, FrameMeta)>,
) -> Fallible {
    let mut cursor = if s.history_depth() > 0 {
        Some(s.cursor()?)
    } else {
        None
    };
    let mut taken = 0u64;
    // A buffer that did not receive a frame (timeout, overrun) is used for the next try.
    let mut spare: Option<Buffer> = None;
    loop {
        let out_of_time = plan.duration.is_some_and(|d| started.elapsed() >= d);
        let enough = plan.frames.is_some_and(|n| taken >= n);
        if out_of_time || enough || crate::watch::stop_requested() {
            return Ok(());
        }
        // The writer hands buffers back; if it failed, it dropped its end and we stop.
        let mut buf = match spare.take() {
            Some(b) => b,
            None => match free.recv() {
                Ok(b) => b,
                Err(_) => return Ok(()),
            },
        };
        let got: Result<FrameInfo, Error> = match cursor.as_mut() {
            Some(c) => c.next_into_bytes(buf.bytes_mut(), Some(POLL)),
            None => s.read_new_into_bytes(buf.bytes_mut(), Some(POLL)),
        };
        match got {
            Ok(info) => {
                p.lost.fetch_add(info.missed, Ordering::Relaxed);
                let meta = FrameMeta {
                    frame_id: info.frame_id,
                    count: info.count,
                    write_time: info.write_time,
                    record_time: unix_now(),
                };
                taken += 1;
                if full.send((buf, meta)).is_err() {
                    return Ok(());
                }
            }
            Err(Error::Overrun { lost, .. }) => {
                p.lost.fetch_add(lost, Ordering::Relaxed);
                spare = Some(buf);
            }
            Err(Error::Timeout { .. }) | Err(Error::Inconsistent { .. }) => spare = Some(buf),
            Err(e) => return Err(e.into()),
        }
    }
}

fn write_files(
    s: &Stream,
    plan: &Plan,
    p: &Progress,
    full: Receiver<(Buffer, FrameMeta)>,
    free: SyncSender<Buffer>,
) -> Fallible {
    let mut sink: Option<Box<dyn CubeSink>> = None;
    let mut index = 0usize;
    let result = (|| -> Fallible {
        for (buf, meta) in full.iter() {
            if sink.as_ref().is_some_and(|k| k.frames() >= plan.per_file)
                && let Some(mut k) = sink.take()
            {
                k.finish()?;
            }
            if sink.is_none() {
                sink = Some(open_sink(s, plan, index)?);
                index += 1;
                p.files.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(k) = sink.as_mut() {
                k.push(buf.bytes(), meta)?;
            }
            p.frames.fetch_add(1, Ordering::Relaxed);
            let _ = free.send(buf);
        }
        Ok(())
    })();
    // Close the current file with the frames it holds, also after an error.
    let closed = sink.as_mut().map_or(Ok(()), |k| k.finish());
    result.and(closed)
}

fn open_sink(s: &Stream, plan: &Plan, index: usize) -> Fallible<Box<dyn CubeSink>> {
    let stem: String = s
        .name()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = |ext: &str| -> PathBuf { plan.out.join(format!("{stem}_{index:06}.{ext}")) };
    Ok(match plan.format {
        Format::Fits => Box::new(fits::FitsCube::create(
            &path("fits"),
            s.name(),
            s.dtype(),
            s.shape(),
            plan.per_file,
        )?),
        Format::Npy => Box::new(npy_cube::NpyCube::create(
            &path("npy"),
            s.dtype(),
            s.shape(),
            s.size_bytes(),
        )?),
    })
}
