//! Progress: the counters each stream's recorder updates, and the line on stderr that shows
//! them while recording and reports a stream's failure or end as soon as it happens.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::Plan;
use crate::term;

/// Counters one stream's threads update and the progress line reads.
#[derive(Debug, Default)]
pub(super) struct Progress {
    /// Frames taken from the stream.
    pub(super) frames: AtomicU64,
    /// Frames in finished files.
    pub(super) kept: AtomicU64,
    pub(super) lost: AtomicU64,
    /// Files opened.
    pub(super) files: AtomicU64,
    /// Frames published and not read when a signal stopped the recording (of those it still
    /// wanted: no more than `--frames` left to take, none past the end of `--duration`).
    pub(super) unread: AtomicU64,
    pub(super) done: AtomicBool,
    /// Nanoseconds from the start until the last frame was on file (set when done).
    pub(super) took_ns: AtomicU64,
    /// Why the recording failed (set before `done`): reported at once.
    pub(super) error: OnceLock<String>,
    /// The stream was unlinked and no newer one has its name (its producer ended): its
    /// recording ended without an error (set before `done`), reported at once.
    pub(super) unlinked: AtomicBool,
}

impl Progress {
    /// Counts `n` more frames lost, saturating: a count another process planted in the
    /// stream's header (outside its CRC) can make a loss of nearly 2^64 frames.
    pub(super) fn add_lost(&self, n: u64) {
        // Only this stream's thread adds (once a frame): a load and a store, no read-modify-
        // write; the progress line and the summary only load.
        let lost = self.lost.load(Ordering::Relaxed);
        self.lost.store(lost.saturating_add(n), Ordering::Relaxed);
    }
}

/// The sum of one counter (`of`) over every stream's progress, saturating: a planted count
/// can put a stream's lost frames near 2^64 (the sum overflowed, a panic in the summary).
pub(super) fn total(progress: &[Arc<Progress>], of: impl Fn(&Progress) -> &AtomicU64) -> u64 {
    progress
        .iter()
        .map(|p| of(p).load(Ordering::Relaxed))
        .fold(0, u64::saturating_add)
}

/// The summary line of stream `name`'s recording, of frames of `frame_bytes`: its frames on
/// file, their megabytes and the rate it recorded them at, the frames lost, those taken but
/// not on file and those left unread (where there are any), and how it ended (`result`).
pub(super) fn summary(
    name: &str,
    frame_bytes: usize,
    p: &Progress,
    result: &Result<(), String>,
) -> String {
    let kept = p.kept.load(Ordering::Relaxed);
    // Taken but not on file (a full disk, a file that failed): the error says why.
    let not_recorded = p.frames.load(Ordering::Relaxed).saturating_sub(kept);
    let unread = p.unread.load(Ordering::Relaxed);
    let lost = p.lost.load(Ordering::Relaxed);
    // This stream's own time, not the progress line's tick at which we noticed it ended.
    let secs = (p.took_ns.load(Ordering::Relaxed) as f64 / 1e9).max(1e-9);
    let mb = kept as f64 * frame_bytes as f64 / 1e6;
    let count = |n: u64, what: &str| {
        if n > 0 {
            format!(", {n} {what}")
        } else {
            String::new()
        }
    };
    format!(
        "{}: {kept} frames in {} file(s), {:.1} MB at {:.1} MB/s, {lost} lost{}{}{}",
        term::printable(name),
        p.files.load(Ordering::Relaxed),
        mb,
        mb / secs,
        count(not_recorded, "not recorded"),
        count(unread, "left unread"),
        match result {
            Ok(()) if p.unlinked.load(Ordering::Relaxed) => {
                ", ended: stream unlinked (its producer ended?)".to_owned()
            }
            Ok(()) => String::new(),
            Err(e) => format!(", FAILED: {}", term::printable(e)),
        }
    )
}

/// Marks a stream's recorder done when it ends (also by a panic): its time, and a wake-up for
/// the progress line.
pub(super) struct Done<'a> {
    pub(super) progress: &'a Progress,
    pub(super) progress_line: std::thread::Thread,
    pub(super) started: Instant,
}

impl Drop for Done<'_> {
    fn drop(&mut self) {
        let took = self.started.elapsed().as_nanos() as u64;
        self.progress.took_ns.store(took, Ordering::Relaxed);
        self.progress.done.store(true, Ordering::Release);
        self.progress_line.unpark();
    }
}

/// The progress line on a terminal, until every recorder is done; a recorder that fails, or
/// whose stream was unlinked, is reported at once (an hour before the end of `--duration`).
pub(super) fn show_progress(plan: &Plan, progress: &[Arc<Progress>], started: Instant) {
    let tty = std::io::stderr().is_terminal();
    let mut reported = vec![false; progress.len()];
    // Whether the progress line is drawn (and the cursor still on it).
    let mut drawn = false;
    loop {
        // Read before the reporting pass: a recorder done after the pass but before this
        // check would end the loop with its error unsaid.
        let all_done = progress.iter().all(|p| p.done.load(Ordering::Acquire));
        for ((name, p), reported) in plan.names.iter().zip(progress).zip(&mut reported) {
            if *reported || !p.done.load(Ordering::Acquire) {
                continue;
            }
            *reported = true;
            let said = if let Some(e) = p.error.get() {
                format!(
                    "shmstream: error: {}: recording stopped with {} frame(s) on file: {}",
                    term::printable(name),
                    p.kept.load(Ordering::Relaxed),
                    term::printable(e)
                )
            } else if p.unlinked.load(Ordering::Relaxed) {
                let taken = p.frames.load(Ordering::Relaxed);
                let kept = p.kept.load(Ordering::Relaxed);
                let lost = p.lost.load(Ordering::Relaxed);
                format!(
                    "shmstream: stream '{0}' was unlinked (its producer ended?) after {taken} frames, {1}",
                    term::printable(name),
                    if kept == taken && lost == 0 {
                        "all on file".to_owned()
                    } else {
                        format!("{kept} on file, {lost} lost")
                    }
                )
            } else {
                continue;
            };
            if std::mem::take(&mut drawn) {
                term::errln!();
            }
            term::errln!("{said}");
        }
        if all_done {
            break;
        }
        std::thread::park_timeout(Duration::from_millis(250));
        if tty {
            let frames = total(progress, |p| &p.frames);
            let lost = total(progress, |p| &p.lost);
            term::err!(
                "\rrecording {} stream(s): {frames} frames, {lost} lost, {:.1} s   ",
                plan.names.len(),
                started.elapsed().as_secs_f64()
            );
            drawn = true;
        }
    }
    if drawn {
        term::errln!();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counts of frames on file, lost, not recorded and left unread, the megabytes on
    /// file and the rate over the stream's own time, and how it ended.
    #[test]
    fn a_streams_summary_counts_its_frames_and_says_how_it_ended() {
        let p = Progress::default();
        let set = |c: &AtomicU64, n: u64| c.store(n, Ordering::Relaxed);
        set(&p.frames, 10);
        set(&p.kept, 10);
        set(&p.files, 2);
        set(&p.took_ns, 2_000_000_000);
        assert_eq!(
            summary("cam0", 1_000_000, &p, &Ok(())),
            "cam0: 10 frames in 2 file(s), 10.0 MB at 5.0 MB/s, 0 lost"
        );
        set(&p.frames, 12);
        set(&p.lost, 4);
        set(&p.unread, 3);
        assert_eq!(
            summary("cam\n1", 300_000, &p, &Err("the disk is full".into())),
            "cam\\n1: 10 frames in 2 file(s), 3.0 MB at 1.5 MB/s, 4 lost, 2 not recorded, \
             3 left unread, FAILED: the disk is full"
        );
        p.unlinked.store(true, Ordering::Relaxed);
        set(&p.took_ns, 0);
        assert_eq!(
            summary("cam0", 100, &p, &Ok(())),
            "cam0: 10 frames in 2 file(s), 0.0 MB at 1000000.0 MB/s, 4 lost, 2 not recorded, \
             3 left unread, ended: stream unlinked (its producer ended?)"
        );
    }

    /// Losses near 2^64 (a planted count) saturate, in a stream and in the sum over
    /// streams: they overflowed, a panic in the summary (`attempt to add with overflow`)
    /// before the second stream's line.
    #[test]
    fn lost_frames_near_2_64_saturate_in_a_stream_and_in_the_total() {
        let a = Arc::new(Progress::default());
        let b = Arc::new(Progress::default());
        a.add_lost(3);
        a.add_lost(u64::MAX - 4);
        assert_eq!(a.lost.load(Ordering::Relaxed), u64::MAX - 1);
        a.add_lost(5);
        assert_eq!(a.lost.load(Ordering::Relaxed), u64::MAX);
        b.add_lost(u64::MAX - 4);
        let both = [a, b];
        assert_eq!(total(&both, |p| &p.lost), u64::MAX);
        both[1].frames.store(7, Ordering::Relaxed);
        assert_eq!(total(&both, |p| &p.frames), 7);
    }
}
