//! `shmstream record NAME... --out DIR (--frames N | --duration S) [--per-file N]
//! [--format fits|npy] [--fsync]`: every frame of one or more streams into cube files.
//!
//! Per stream, one thread waits for each frame and puts it on file: a history stream's
//! frames through a cursor (a `.npy` cube writes them straight from the ring; FITS copies
//! and encodes them), a plain stream's with `read_new`, warning that frames can be missed.
//! A slow disk therefore shows as a cursor overrun (counted as lost frames, reported),
//! never as a stall of the producer, which never waits for us. Recording starts when that
//! thread starts waiting: frames published before (while the recorder starts) are not lost
//! ones, those it misses after are. When `--duration` is up it still takes the frames
//! published by then, without waiting for more; SIGINT, SIGTERM, SIGHUP or SIGQUIT stops it
//! at once (one ignored when it started stays ignored, as `nohup` ignores SIGHUP), counting
//! the frames left unread (of those it still wanted). A file-size limit (`ulimit -f`) acts as
//! a full disk (said as the limit, with its remedy: a smaller `--per-file` or a higher
//! limit): SIGXFSZ is ignored, so the write past it fails and the file is finished. A
//! recording whose streams and files (the one filling and the one being finished, per
//! stream) would need more descriptors than the open-file limit (`ulimit -n`; its soft limit
//! is raised to the hard one at start) is refused before anything is created. A FITS file
//! says in its `LOST` and `COMPLETE` cards the frames lost before or within it and whether it
//! is complete (see the `fits` module).
//! Files: `DIR/<name>_<index>.fits` (or `.npy` + `.frames.csv`; `<index>` 9 digits),
//! `--per-file` frames each, `<name>` as [`file_stem`] makes it: the first is created when
//! recording starts, each next one when its first frame is in hand. Streams whose files
//! would share names, and existing files, are refused (nothing is overwritten). A full file
//! is finished (table, header) and closed on a thread of its own while the next one fills
//! (a network file system, NFS, CIFS or FUSE, writes it back in the close, failing it on the
//! write errors it meets then), left to the page cache; with `--fsync` it is first put on
//! the disk (`fdatasync`, failing on the write errors a disk reports only then), and so is
//! its entry in `DIR` (`fsync` of the directory), so the recording goes at the disk's write
//! speed; a file failing there stops the recording at the next frame (or poll) after. A
//! `DIR` it creates (and each directory created above it) has its own entry put on the
//! disk once, before recording. A stream whose recording fails (replaced by a newer stream of
//! its name) is reported at once, the others record on; so is one unlinked with no newer
//! stream of its name (its producer ended): its recording ends there, its files closed with
//! every frame read (frames published since the last one read are lost: a plain stream's,
//! or a pyshmem writer's that skipped a history stream's ring): complete, or, before
//! `--frames` are taken, a short recording, which fails it. The summary counts the frames
//! on file.
//! Exit status 1 if any frame was lost or any file failed, else 0, also when a reader of
//! stderr went away (`2>&1 | tee log`, Ctrl-C stopping `tee` too: SIGPIPE is ignored, so
//! the summary's write fails instead of killing the recorder); frames already written stay
//! readable (the current file is closed with what it holds), also after a signal. A killed
//! recorder (SIGKILL, an OOM kill, a crash of the recorder) leaves the current file (and one
//! still being finished) readable as it stood at its last checkpoint ([`CHECKPOINT_S`],
//! about once a second): a `.npy` that `np.load` reads with the frames counted then, beside
//! a `.frames.csv` with at least their rows (before the first checkpoint: no frame, an
//! empty table); a FITS file that astropy opens (warning it may be truncated) with that
//! many frames, `LOST` undefined and `COMPLETE = F`, but no `FRAMES` table (its frame ids
//! and times are lost), its length off a FITS block boundary (`FrameFile::keep_length_off`).
//! Checkpoints come only as frames arrive: a camera that pauses leaves
//! the last second before the pause uncounted until its next frame. A checkpoint writes
//! the data, then the rows, then the count, into the page cache: that order holds for the
//! kernel, not for the disk, which can receive the header's page before the data's. After
//! a power loss or kernel crash a file being filled (also with `--fsync`, which puts a file
//! on the disk only when it is finished) can therefore count frames that never reached
//! the disk (read back as zeros or stale bytes), or rows the table lacks.
//!
//! [`CHECKPOINT_S`]: checkpoint::CHECKPOINT_S

mod checkpoint;
mod cubes;
mod files;
mod fits;
mod frame_file;
mod losses;
mod npy_cube;
mod progress;
mod recorder;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shmstream::{RingFrame, Stream, WaitStrategy};

use crate::{Fallible, term};
use files::{
    cube_files, file_stem, refuse_existing, refuse_shared_files, refuse_too_many_open_files,
};
use progress::{Done, Progress, show_progress};
use recorder::record_stream;

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
    /// Put each file on the disk as it is finished (`--fsync`).
    pub(crate) fsync: bool,
}

#[cfg(test)]
impl Plan {
    /// A plan of `format` into `out`: no streams, no limit, a frame a file, no `--fsync`;
    /// what a unit test changes.
    pub(crate) fn for_test(format: Format, out: impl Into<PathBuf>) -> Plan {
        Plan {
            names: Vec::new(),
            out: out.into(),
            frames: None,
            duration: None,
            per_file: 1,
            format,
            fsync: false,
        }
    }
}

/// Per-frame metadata kept beside the cube.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameMeta {
    pub(crate) frame_id: u64,
    pub(crate) count: u64,
    pub(crate) write_time: f64,
    pub(crate) record_time: f64,
}

#[cfg(test)]
impl FrameMeta {
    /// Frame `frame_id`, the first of its count, written and recorded at `t`.
    pub(crate) fn at(frame_id: u64, t: f64) -> FrameMeta {
        FrameMeta {
            frame_id,
            count: 1,
            write_time: t,
            record_time: t,
        }
    }
}

/// One cube file being filled.
pub(crate) trait CubeSink {
    /// Appends one frame (the stream's raw bytes, which the cube may encode in place).
    fn push(&mut self, frame: &mut [u8], meta: FrameMeta) -> Fallible;
    /// Copies a frame still in a history ring into `dst` as this cube stores it (encoded on
    /// the way), for [`CubeSink::push_stored`] once the cursor confirms the frame whole.
    fn store_from_ring(&self, frame: &RingFrame<'_>, dst: &mut [u8]) -> Result<(), String>;
    /// Appends a frame made by [`CubeSink::store_from_ring`].
    fn push_stored(&mut self, frame: &[u8], meta: FrameMeta) -> Fallible;
    /// The file and offset where the caller may write the next frame unchanged itself
    /// (straight from a history ring), when this cube stores frames so.
    fn in_place(&self) -> Option<(&std::fs::File, u64)>;
    /// Counts the frame written at [`CubeSink::in_place`], or fails with that write's error.
    fn commit_in_place(&mut self, written: std::io::Result<()>, meta: FrameMeta) -> Fallible;
    /// Frames appended so far.
    fn frames(&self) -> usize;
    /// Says in the file, when it is finished, the frames lost since the stream's previous
    /// file was closed (`lost`) and whether its recording ended without an error
    /// (`complete`), where the format has a place for them (FITS header cards).
    fn ending(&mut self, lost: u64, complete: bool);
    /// Writes what remains (sizes, tables), with `sync` puts the file on the disk
    /// (`sync_data`, which reports the write errors a disk reports late: NFS ENOSPC or
    /// quota, writeback EIO), and closes it, reporting the errors `close` returns (where a
    /// network file system reports those without `sync`). A second call finds nothing to
    /// finish (0 frames).
    fn finish(&mut self, sync: bool) -> Finished;
}

/// A cube file finished: the frames it holds, and why not all those appended (or why they
/// may not be on the disk).
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) frames: usize,
    pub(crate) result: Result<(), String>,
}

impl Finished {
    /// `frames` on file, and the errors met finishing it (none: it holds every frame).
    pub(crate) fn new(frames: usize, errors: Vec<String>) -> Finished {
        Finished {
            frames,
            result: if errors.is_empty() {
                Ok(())
            } else {
                Err(errors.join("; "))
            },
        }
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `shmstream record`.
pub(crate) fn record(plan: &Plan) -> Fallible {
    // A reader of stdout or stderr that went away (`record ... 2>&1 | tee log`, and Ctrl-C
    // stops `tee` too) makes a write fail, not kill the recorder before its exit status:
    // the files are finished either way, and the status says whether they hold every frame.
    term::fail_on_closed_pipe();
    if plan.per_file == 0 {
        return Err("--per-file must be at least 1".into());
    }
    if plan.frames == Some(0) {
        return Err("--frames must be at least 1".into());
    }
    if plan.duration.is_some_and(|d| d.is_zero()) {
        return Err("--duration must be more than 0 seconds".into());
    }
    refuse_shared_files(&plan.names)?;
    // Open everything before creating or recording anything: a bad name or dtype fails at
    // once, and leaves no directory behind.
    let mut streams = Vec::new();
    for name in &plan.names {
        let s = Stream::open_readonly(name)?;
        // The ring holds many frames: sleep in the futex between them rather than spin on a
        // core the producer and the file writer need.
        s.set_wait_strategy(WaitStrategy::Park);
        if s.gpu_enabled() && !s.cpu_mirror() {
            return Err(format!(
                "stream '{name}' is a GPU stream without a CPU mirror, and record reads frames from host memory: have its producer create it with a CPU mirror (Rust: cpu_mirror(true), and history(n) to record every frame; pyshmem: cpu_mirror=True)"
            )
            .into());
        }
        if plan.format == Format::Fits {
            fits::image_type(s.dtype()).map_err(|e| format!("stream '{name}': {e}"))?;
        }
        streams.push(s);
    }
    refuse_too_many_open_files(plan)?;
    // With `--fsync`, the directories created for `--out` are put on the disk too.
    let created = if plan.fsync {
        frame_file::missing_dirs(&plan.out)
    } else {
        Vec::new()
    };
    std::fs::create_dir_all(&plan.out).map_err(|e| match plan.out.is_file() {
        true => format!(
            "--out {} is a file, not a directory: give a directory",
            plan.out.display()
        ),
        false => format!(
            "--out {}: cannot create the directory: {e}: {}",
            plan.out.display(),
            match e.kind() {
                std::io::ErrorKind::PermissionDenied => {
                    "this user may not create it there: give another --out (or have it made \
                     for this user)"
                }
                // The directory above is there, but its file system makes none (`/proc`).
                std::io::ErrorKind::NotFound
                    if plan.out.parent().is_some_and(std::path::Path::is_dir) =>
                {
                    "its file system makes no new directories there: give another --out"
                }
                _ => "give another --out",
            }
        ),
    })?;
    frame_file::sync_created_dirs(&created)?;
    // The first files of every stream: an earlier recording there fails at once (a later
    // file found in the way fails its stream when it is due).
    for name in &plan.names {
        for path in cube_files(plan, &file_stem(name), 0) {
            refuse_existing(&path)?;
        }
    }
    // Warned only once nothing stands in the way of the recording.
    for (name, s) in plan.names.iter().zip(&streams) {
        if s.history_depth() == 0 {
            term::errln!(
                "shmstream: warning: stream '{}' keeps no history: frames written faster than they are read are missed (counted as lost); to record every frame, {}",
                term::printable(name),
                s.history_remedy()
            );
        }
    }
    // With `--fsync`, files count as on the disk only with their entries in the directory.
    let dir = if plan.fsync {
        Some(Arc::new(frame_file::Directory::open(&plan.out)?))
    } else {
        None
    };
    // SIGXFSZ is ignored from the start (`main`, for every command): a write past the
    // file-size limit (`ulimit -f`) fails with EFBIG as one to a full disk does, where
    // SIGXFSZ would kill the recorder and leave the current files unfinished; the full-disk
    // path then keeps the whole frames and finishes the file.
    crate::watch::install_handlers()?;
    let started = Instant::now();
    let progress: Vec<Arc<Progress>> = streams.iter().map(|_| Arc::default()).collect();
    // Errors cross threads as text (`Fallible`'s boxed error is not `Send`).
    let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = streams
            .iter()
            .zip(&progress)
            .map(|(s, p)| {
                let progress_line = std::thread::current();
                let dir = dir.clone();
                let spawned = std::thread::Builder::new().spawn_scoped(scope, move || {
                    let _done = Done {
                        progress: p,
                        progress_line,
                        started,
                    };
                    let r = record_stream(s, plan, p, started, dir).map_err(|e| e.to_string());
                    if let Err(e) = &r {
                        let _ = p.error.set(e.clone());
                    }
                    r
                });
                // Out of threads (`ulimit -u`, the cgroup's pids.max): this stream is not
                // recorded, and the others stop as at a signal, finishing their files.
                spawned.map_err(|e| {
                    let said = format!(
                        "starting its recorder thread failed: {e} (the process or thread \
                         limit, `ulimit -u` or the cgroup's pids.max?); every recording stops"
                    );
                    let _ = p.error.set(said.clone());
                    p.done.store(true, Ordering::Release);
                    crate::watch::request_stop();
                    said
                })
            })
            .collect();
        show_progress(plan, &progress, started);
        handles
            .into_iter()
            .map(|h| {
                h?.join()
                    .unwrap_or_else(|_| Err("a recorder thread panicked".into()))
            })
            .collect()
    });
    for ((s, p), r) in streams.iter().zip(&progress).zip(&results) {
        term::errln!("{}", progress::summary(s.name(), s.size_bytes(), p, r));
    }
    let failed = results.iter().filter(|r| r.is_err()).count();
    if failed > 0 {
        return Err(format!("the recording of {failed} stream(s) failed (see above)").into());
    }
    let lost_total = progress::total(&progress, |p| &p.lost);
    if lost_total > 0 {
        return Err(format!("{lost_total} frame(s) lost while recording (see above)").into());
    }
    Ok(())
}

/// `a`, and `b`'s error too.
fn both(a: Fallible, b: Fallible) -> Fallible {
    match (a, b) {
        (Err(a), Err(b)) => Err(format!("{a}; {b}").into()),
        (a, b) => a.and(b),
    }
}
