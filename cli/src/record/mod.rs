//! `shmstream record NAME... --out DIR (--frames N | --duration S) [--per-file N]
//! [--format fits|npy]`: every frame of one or more streams into cube files.
//!
//! Per stream, one thread waits for each frame and puts it on file: a history stream's
//! frames through a cursor (a `.npy` cube writes them straight from the ring; FITS copies
//! and encodes them), a plain stream's with `read_new`, warning that frames can be missed.
//! A slow disk therefore shows as a cursor overrun (counted as lost frames, reported),
//! never as a stall of the producer, which never waits for us. Recording starts when that
//! thread starts waiting: frames published before (while the recorder starts) are not lost
//! ones, those it misses after are. Files: `DIR/<name>_<index>.fits` (or `.npy` +
//! `.frames.csv`), `--per-file` frames each, `<name>` as [`file_stem`] makes it; streams
//! whose files would share names, and existing files, are refused (nothing is overwritten).
//! Exit status 1 if any frame was lost or any file failed; frames already written stay
//! readable (the current file is closed with what it holds), also when SIGINT, SIGTERM,
//! SIGHUP or SIGQUIT stops the recording (one ignored when it started stays ignored, as
//! `nohup` ignores SIGHUP). SIGKILL (or a crash) leaves the current file unfinished: the
//! frames already handed to the kernel are there, but a `.npy` header still gives
//! `2**64 - 1` frames (`np.load` refuses it) beside an empty `.frames.csv`, and a FITS
//! header 0 frames, with no `FRAMES` table.

mod fits;
mod frame_file;
mod npy_cube;

use std::collections::HashMap;
use std::fs::File;
use std::io::{ErrorKind, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shmstream::{Error, RingFrame, Stream, WaitStrategy};

use crate::{Fallible, term};

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
    /// Nanoseconds from the start until the last frame was on file (set when done).
    took_ns: AtomicU64,
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
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.words)[..self.len]
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Longest [`file_stem`]: with `_`, a cube index of up to 20 digits and `.frames.csv`,
/// file names stay under the 255 bytes of `NAME_MAX`.
const MAX_STEM: usize = 200;

/// The start of a stream's file names: its name with every character but `[A-Za-z0-9._-]`
/// made `_`; one longer than [`MAX_STEM`] is cut to fit with `-` and the 14 hex digits of
/// the stream's segment id (a SHA-1 of the whole name) at the end.
fn file_stem(name: &str) -> String {
    let stem: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if stem.len() <= MAX_STEM {
        return stem;
    }
    // `ps_` + 14 hex digits.
    let hash = &shmstream::name::segment_id(name)[3..];
    // Only ASCII is left: any byte is a character boundary.
    format!("{}-{hash}", &stem[..MAX_STEM - 1 - hash.len()])
}

/// The file of cube `index` of a stream with files `stem`.
fn cube_path(plan: &Plan, stem: &str, index: usize) -> PathBuf {
    let ext = match plan.format {
        Format::Fits => "fits",
        Format::Npy => "npy",
    };
    plan.out.join(format!("{stem}_{index:06}.{ext}"))
}

/// That file and any table beside it.
fn cube_files(plan: &Plan, stem: &str, index: usize) -> Vec<PathBuf> {
    let cube = cube_path(plan, stem, index);
    match plan.format {
        Format::Fits => vec![cube],
        Format::Npy => vec![npy_cube::sidecar(&cube), cube],
    }
}

/// Refuses two streams whose files would share names (one name twice, or names that differ
/// only in characters [`file_stem`] replaces): both would write into one file.
fn refuse_shared_files(names: &[String]) -> Fallible {
    let mut seen: HashMap<String, &str> = HashMap::new();
    for name in names {
        if let Some(first) = seen.insert(file_stem(name), name) {
            return Err(if first == name {
                format!("stream '{name}' is given twice: give each stream once")
            } else {
                format!(
                    "streams '{first}' and '{name}' would both be recorded into files named '{}_*': record them in separate --out directories",
                    file_stem(name)
                )
            }
            .into());
        }
    }
    Ok(())
}

/// Refuses to record over `path` if anything is there, or if whether it is cannot be told.
pub(crate) fn refuse_existing(path: &Path) -> Fallible {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Ok(_) => Err(already_there(path)),
        Err(e) => Err(format!(
            "{}: cannot check that no file is there: {e}: record into another --out directory",
            path.display()
        )
        .into()),
    }
}

/// Creates `path` for writing, never over an existing file.
pub(crate) fn create_new(path: &Path) -> Fallible<File> {
    File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| match e.kind() {
            ErrorKind::AlreadyExists => already_there(path),
            _ => format!("{}: {e}", path.display()).into(),
        })
}

fn already_there(path: &Path) -> Box<dyn std::error::Error> {
    format!(
        "{}: already exists (record never overwrites a file): move it away or record into another --out directory",
        path.display()
    )
    .into()
}

/// `shmstream record`.
pub(crate) fn record(plan: &Plan) -> Fallible {
    if plan.per_file == 0 {
        return Err("--per-file must be at least 1".into());
    }
    refuse_shared_files(&plan.names)?;
    std::fs::create_dir_all(&plan.out).map_err(|e| {
        format!(
            "--out {}: cannot create the directory: {e}",
            plan.out.display()
        )
    })?;
    // The first files of every stream: an earlier recording there fails at once (a later
    // file found in the way fails its stream when it is due).
    for name in &plan.names {
        for path in cube_files(plan, &file_stem(name), 0) {
            refuse_existing(&path)?;
        }
    }
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
            term::errln!(
                "shmstream: warning: stream '{}' keeps no history: frames written faster than they are read are missed (counted as lost); create it with history(n) to record every frame",
                term::printable(name)
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
                let progress_line = std::thread::current();
                scope.spawn(move || {
                    let _done = Done {
                        progress: p,
                        progress_line,
                        started,
                    };
                    record_stream(s, plan, p, started).map_err(|e| e.to_string())
                })
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
    let mut lost_total = 0;
    for ((s, p), r) in streams.iter().zip(&progress).zip(&results) {
        let frames = p.frames.load(Ordering::Relaxed);
        let lost = p.lost.load(Ordering::Relaxed);
        // This stream's own time, not the progress line's tick at which we noticed it ended.
        let secs = (p.took_ns.load(Ordering::Relaxed) as f64 / 1e9).max(1e-9);
        lost_total += lost;
        let mb = frames as f64 * s.size_bytes() as f64 / 1e6;
        term::errln!(
            "{}: {frames} frames in {} file(s), {:.1} MB at {:.1} MB/s, {lost} lost{}",
            term::printable(s.name()),
            p.files.load(Ordering::Relaxed),
            mb,
            mb / secs,
            match r {
                Ok(()) => String::new(),
                Err(e) => format!(", FAILED: {}", term::printable(e)),
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

/// Marks a stream's recorder done when it ends (also by a panic): its time, and a wake-up for
/// the progress line.
struct Done<'a> {
    progress: &'a Progress,
    progress_line: std::thread::Thread,
    started: Instant,
}

impl Drop for Done<'_> {
    fn drop(&mut self) {
        let took = self.started.elapsed().as_nanos() as u64;
        self.progress.took_ns.store(took, Ordering::Relaxed);
        self.progress.done.store(true, Ordering::Release);
        self.progress_line.unpark();
    }
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
            term::err!(
                "\rrecording {} stream(s): {frames} frames, {lost} lost, {:.1} s   ",
                plan.names.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    if tty {
        term::errln!();
    }
}

/// Where the frame a read returned is.
enum Staged {
    /// Written to the file at the cube's [`CubeSink::in_place`] offset (or the write's error).
    Written(std::io::Result<()>),
    /// In the buffer as the cube stores it ([`CubeSink::store_from_ring`]).
    Stored(Result<(), String>),
    /// In the buffer as the stream's raw bytes.
    Raw,
}

/// One stream, on this thread: wait for the next frame, put it on file, repeat. A history
/// stream's frames go from the ring to the file (a `.npy` cube writes them where they lie,
/// [`shmstream::Cursor::next_in_place`]; FITS copies and encodes them first); a plain
/// stream's are copied out with `read_new`. The producer never waits for us: a disk slower
/// than the stream shows as frames the ring overwrote, counted as lost.
fn record_stream(s: &Stream, plan: &Plan, p: &Progress, started: Instant) -> Fallible {
    let mut cursor = if s.history_depth() > 0 {
        Some(s.cursor()?)
    } else {
        None
    };
    let mut buf = Buffer::new(s.size_bytes());
    let mut sink: Option<Box<dyn CubeSink>> = None;
    let mut index = 0usize;
    let mut taken = 0u64;
    // Recording starts here. A plain stream's first `read_new` counts as missed every frame
    // since it was opened (while the recorder started): its lost ones are those after this.
    let start_count = s.count();
    let result = (|| -> Fallible {
        loop {
            let out_of_time = plan.duration.is_some_and(|d| started.elapsed() >= d);
            let enough = plan.frames.is_some_and(|n| taken >= n);
            if out_of_time || enough || crate::watch::stop_requested() {
                return Ok(());
            }
            if sink.as_ref().is_some_and(|k| k.frames() >= plan.per_file)
                && let Some(mut k) = sink.take()
            {
                k.finish()?;
            }
            let k = match &mut sink {
                Some(k) => k,
                None => {
                    index += 1;
                    p.files.fetch_add(1, Ordering::Relaxed);
                    sink.insert(open_sink(s, plan, index - 1)?)
                }
            };
            let got = match (cursor.as_mut(), k.in_place()) {
                (Some(c), Some((file, at))) => c
                    .next_in_place(Some(POLL), |frame| frame.write_at(file, at))
                    .map(|(info, written)| (info, Staged::Written(written))),
                (Some(c), None) => {
                    let dst = buf.bytes_mut();
                    c.next_in_place(Some(POLL), |frame| k.store_from_ring(&frame, dst))
                        .map(|(info, stored)| (info, Staged::Stored(stored)))
                }
                (None, _) => s
                    .read_new_into_bytes(buf.bytes_mut(), Some(POLL))
                    .map(|info| (info, Staged::Raw)),
            };
            match got {
                Ok((info, staged)) => {
                    let lost = if taken == 0 && cursor.is_none() {
                        info.count.saturating_sub(start_count).saturating_sub(1)
                    } else {
                        info.missed
                    };
                    p.lost.fetch_add(lost, Ordering::Relaxed);
                    let meta = FrameMeta {
                        frame_id: info.frame_id,
                        count: info.count,
                        write_time: info.write_time,
                        record_time: unix_now(),
                    };
                    match staged {
                        Staged::Written(w) => k.commit_in_place(w, meta)?,
                        Staged::Stored(Ok(())) => k.push_stored(buf.bytes_mut(), meta)?,
                        Staged::Stored(Err(e)) => return Err(e.into()),
                        Staged::Raw => k.push(buf.bytes_mut(), meta)?,
                    }
                    taken += 1;
                    p.frames.fetch_add(1, Ordering::Relaxed);
                }
                Err(Error::Overrun { lost, cause, .. }) => {
                    // Lapped: resume an eighth of the ring ahead of the oldest frame, not at
                    // the slot the writer overwrites next (a writer faster than us would
                    // overwrite every frame we read there while we read it).
                    let skipped = cursor.as_mut().map_or(0, |c| c.skip_after_overrun(cause));
                    p.lost.fetch_add(lost + skipped, Ordering::Relaxed);
                }
                Err(Error::Timeout { .. }) | Err(Error::Inconsistent { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    })();
    // Close the current file with the frames it holds, also after an error (whose
    // consequences for the file closing may add to it).
    let closed = sink.as_mut().map_or(Ok(()), |k| k.finish());
    match (result, closed) {
        (Err(e), Err(also)) => Err(format!("{e}; {also}").into()),
        (result, closed) => result.and(closed),
    }
}

fn open_sink(s: &Stream, plan: &Plan, index: usize) -> Fallible<Box<dyn CubeSink>> {
    let path = cube_path(plan, &file_stem(s.name()), index);
    Ok(match plan.format {
        Format::Fits => Box::new(fits::FitsCube::create(
            &path,
            s.name(),
            s.dtype(),
            s.shape(),
            plan.per_file,
        )?),
        Format::Npy => Box::new(npy_cube::NpyCube::create(
            &path,
            s.dtype(),
            s.shape(),
            s.size_bytes(),
        )?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_get_short_distinct_stems_and_short_ones_keep_theirs() {
        assert_eq!(file_stem("cam 0/µ"), "cam_0__");
        let long = "a".repeat(256);
        let stem = file_stem(&long);
        assert_eq!(stem.len(), MAX_STEM);
        assert!(stem.starts_with(&"a".repeat(185)), "{stem}");
        assert_eq!(stem, file_stem(&long), "the same every time");
        let other = format!("{}b", "a".repeat(255));
        assert_ne!(file_stem(&other), stem, "the cut-off part still counts");
        assert_eq!(file_stem(&long[..MAX_STEM]), long[..MAX_STEM]);
    }

    #[test]
    fn frames_published_between_opening_a_plain_stream_and_recording_it_are_not_lost() {
        let name = format!("t-rec-unit-start-{}", std::process::id());
        let w = shmstream::scratch(&name, &[2], shmstream::Dtype::U16).unwrap();
        let s = Stream::open_readonly(&name).unwrap();
        // Published while the recorder starts: the first read takes frame 5.
        for i in 1..=5u16 {
            w.write_slice_frame(&[i; 2], u64::from(i)).unwrap();
        }
        let plan = Plan {
            names: vec![name.clone()],
            out: std::env::temp_dir().join(&name),
            frames: Some(1),
            duration: None,
            per_file: 1,
            format: Format::Npy,
        };
        std::fs::create_dir_all(&plan.out).unwrap();
        let p = Progress::default();
        let recorded = record_stream(&s, &plan, &p, Instant::now());
        let _ = std::fs::remove_dir_all(&plan.out);
        recorded.unwrap();
        assert_eq!(p.frames.load(Ordering::Relaxed), 1);
        assert_eq!(p.lost.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_path_that_cannot_be_checked_is_reported_as_itself_not_as_existing() {
        let path = std::env::temp_dir().join("x".repeat(300));
        let e = refuse_existing(&path).unwrap_err().to_string();
        let too_long = std::io::Error::from_raw_os_error(libc::ENAMETOOLONG).to_string();
        assert!(e.contains(&too_long) && e.contains("--out"), "{e}");
        assert!(!e.contains("already exists"), "{e}");
    }
}
