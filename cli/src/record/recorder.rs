//! One stream's recorder: the loop, on a thread of its own, that waits for each frame, puts
//! it on file and counts the frames it missed, until `--frames`, `--duration`, a signal, an
//! error or the stream's end stops it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shmstream::{Error, Stream};

use super::cubes::Cubes;
use super::losses::{at_most, lost_by, unread, wanted};
use super::progress::Progress;
use super::{FrameMeta, Plan, both, frame_file, unix_now};
use crate::Fallible;

/// How often a waiting reader checks whether to stop.
const POLL: Duration = Duration::from_millis(100);

/// A frame buffer aligned for every element type (the bytes are viewed as pixels).
struct Buffer {
    words: Vec<u64>,
    len: usize,
}

impl Buffer {
    /// Room for a frame of `len` bytes of stream `name`; a typed error where memory runs
    /// out (a `vec!` aborted the process, and every other stream's recorder with it).
    fn new(name: &str, len: usize) -> shmstream::Result<Buffer> {
        Ok(Buffer {
            words: shmstream::frame_buffer(name, len.div_ceil(8))?,
            len,
        })
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.words)[..self.len]
    }
}

/// Where the frame a read returned is.
enum Staged {
    /// Written to the file at the cube's [`CubeSink::in_place`](super::CubeSink::in_place)
    /// offset (or the write's error).
    Written(std::io::Result<()>),
    /// In the buffer as the cube stores it
    /// ([`CubeSink::store_from_ring`](super::CubeSink::store_from_ring)).
    Stored(Result<(), String>),
    /// In the buffer as the stream's raw bytes.
    Raw,
}

/// One stream, on this thread: wait for the next frame, put it on file, repeat. A history
/// stream's frames go from the ring to the file (a `.npy` cube writes them where they lie,
/// [`shmstream::Cursor::next_in_place`]; FITS copies and encodes them first); a plain
/// stream's, and the first of each file after the first, are copied out (`read_new`,
/// [`shmstream::Cursor::next_into_bytes`]). The producer never waits for us: a disk slower
/// than the stream shows as frames the ring overwrote, counted as lost.
/// With `--fsync` (`dir`), each file and its entry in the directory are put on the disk.
pub(super) fn record_stream(
    s: &Stream,
    plan: &Plan,
    p: &Progress,
    started: Instant,
    dir: Option<Arc<frame_file::Directory>>,
) -> Fallible {
    let mut cursor = if s.history_depth() > 0 {
        Some(s.cursor()?)
    } else {
        None
    };
    let mut buf = Buffer::new(s.name(), s.size_bytes())?;
    let mut cubes = Cubes::new(s, plan, p, dir);
    let mut taken = 0u64;
    // Where recording starts: a history stream's here, just after its cursor was made (it
    // returns every frame from there on); a plain stream's once its first file is there
    // (below), when it starts waiting. Its first `read_new` counts as missed every frame
    // since it was opened (while the recorder started, and the first file was created):
    // its lost ones are those after this count.
    let mut start_count = s.count();
    // The count of the last frame taken.
    let mut last = start_count;
    // Once `--duration` is up, the stream's count then: the frames up to it are still taken.
    let mut drain_to = None;
    // Whether a cursor that found none of the frames counted by then that it had still to
    // take has waited once for them.
    let mut drain_waited = false;
    let result = (|| -> Fallible {
        // The first file is there from the start.
        cubes.current()?;
        if cursor.is_none() {
            start_count = s.count();
            last = start_count;
        }
        loop {
            if plan.frames.is_some_and(|n| taken >= n) {
                return Ok(());
            }
            if crate::watch::stop_requested() {
                let wanted = wanted(plan, taken);
                p.unread
                    .store(unread(s.count(), last, drain_to, wanted), Ordering::Relaxed);
                return Ok(());
            }
            if drain_to.is_none() && plan.duration.is_some_and(|d| started.elapsed() >= d) {
                drain_to = Some(s.count());
            }
            if drain_to.is_some_and(|to| last >= to) {
                return Ok(());
            }
            // After the time is up, only frames already there (but for the one wait below).
            let wait = Some(if drain_to.is_some() && !drain_waited {
                Duration::ZERO
            } else {
                POLL
            });
            let got = match (cursor.as_mut(), cubes.current.as_deref()) {
                (Some(c), Some(k)) => match k.in_place() {
                    Some((file, at)) => c
                        .next_in_place(wait, |frame| frame.write_at(file, at))
                        .map(|(info, written)| (info, Staged::Written(written))),
                    None => {
                        let dst = buf.bytes_mut();
                        c.next_in_place(wait, |frame| k.store_from_ring(&frame, dst))
                            .map(|(info, stored)| (info, Staged::Stored(stored)))
                    }
                },
                // No file open: the frame waits in the buffer while the next one is opened.
                (Some(c), None) => c
                    .next_into_bytes(buf.bytes_mut(), wait)
                    .map(|info| (info, Staged::Raw)),
                (None, _) => s
                    .read_new_into_bytes(buf.bytes_mut(), wait)
                    .map(|info| (info, Staged::Raw)),
            };
            match got {
                Ok((info, staged)) => {
                    let lost = if taken == 0 && cursor.is_none() {
                        info.count.saturating_sub(start_count).saturating_sub(1)
                    } else {
                        info.missed
                    };
                    let lost = lost_by(last, drain_to, lost, 0);
                    p.add_lost(at_most(lost, wanted(plan, taken)));
                    taken += 1;
                    last = info.count;
                    p.frames.fetch_add(1, Ordering::Relaxed);
                    let meta = FrameMeta {
                        frame_id: info.frame_id,
                        count: info.count,
                        write_time: info.write_time,
                        record_time: unix_now(),
                    };
                    let k = cubes.current()?;
                    match staged {
                        Staged::Written(w) => k.commit_in_place(w, meta)?,
                        Staged::Stored(Ok(())) => k.push_stored(buf.bytes_mut(), meta)?,
                        Staged::Stored(Err(e)) => return Err(e.into()),
                        Staged::Raw => k.push(buf.bytes_mut(), meta)?,
                    }
                    if k.frames() >= plan.per_file {
                        cubes.close(true)?;
                    } else {
                        cubes.check_finished()?;
                    }
                }
                Err(Error::Overrun { lost, cause, .. }) => {
                    // Lapped: resume an eighth of the ring (at least a frame) ahead of the oldest frame, not at
                    // the slot the writer overwrites next (a writer faster than us would
                    // overwrite every frame we read there while we read it).
                    let skipped = cursor.as_mut().map_or(0, |c| c.skip_after_overrun(cause));
                    let lost = lost_by(last, drain_to, lost, skipped);
                    p.add_lost(at_most(lost, wanted(plan, taken)));
                    // Counted (or not wanted): not to be counted again as unread, nor
                    // drained past.
                    last = last.saturating_add(lost);
                }
                // Drained: no more frames are there. Those published by the deadline and
                // neither taken nor counted lost yet are lost: a plain stream's read found
                // none (a write in flight, with no time to wait for it); a cursor neither
                // returned nor reported them (publications that skipped the ring, a pyshmem
                // writer's, with a write in flight when it looked; normally none are left).
                // A cursor first waits once: on a weakly ordered CPU the count can be seen
                // before the ring's head, so frames appended by then may not be in sight yet.
                Err(Error::Timeout { .. }) | Err(Error::Inconsistent { .. })
                    if let Some(to) = drain_to =>
                {
                    if cursor.is_some() && last < to && !drain_waited {
                        drain_waited = true;
                        continue;
                    }
                    // `last` already covers every frame counted lost (the overrun arm), and the
                    // cursor reports nothing more: counted once.
                    p.add_lost(to.saturating_sub(last));
                    return Ok(());
                }
                Err(Error::Timeout { .. }) | Err(Error::Inconsistent { .. }) => {
                    cubes.check_finished()?;
                }
                Err(Error::Stale { name }) => {
                    // Frames published since the last one taken (and still wanted) went
                    // unread: lost with it. A plain stream's latest only, and a history
                    // stream's that skipped the ring (a pyshmem writer's), which its cursor
                    // never returned.
                    let wanted = wanted(plan, taken);
                    p.add_lost(unread(s.count(), last, drain_to, wanted));
                    // Its producer ended (unlinking it): the recording holds every frame the
                    // stream published (but those counted lost); short of `--frames`, it is
                    // a short recording.
                    if unlinked(&name) {
                        if let Some(n) = plan.frames.filter(|&n| taken < n) {
                            return Err(format!(
                                "stream '{name}' was unlinked (its producer ended?) after {taken} of the {n} frames asked"
                            )
                            .into());
                        }
                        p.unlinked.store(true, Ordering::Relaxed);
                        return Ok(());
                    }
                    return Err(format!(
                        "stream '{name}' was replaced by a newer stream of the same name: record the new stream again, into another --out directory"
                    )
                    .into());
                }
                Err(e) => return Err(e.into()),
            }
        }
    })();
    // Close the current file with the frames it holds, also after an error (whose
    // consequences for the file closing may add to it).
    let complete = result.is_ok();
    both(result, cubes.finish_all(complete))
}

/// Whether, once a recorded stream went stale, no stream of `name` exists: it was unlinked,
/// not replaced. A creation of the name under way, or a stream there that cannot be read,
/// counts as a newer stream.
fn unlinked(name: &str) -> bool {
    matches!(
        shmstream::stat_within(name, Duration::ZERO),
        Err(Error::NotFound {
            unfinished: false,
            ..
        })
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Format;

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
            frames: Some(1),
            ..Plan::for_test(Format::Npy, std::env::temp_dir().join(&name))
        };
        std::fs::create_dir_all(&plan.out).unwrap();
        let p = Progress::default();
        let recorded = record_stream(&s, &plan, &p, Instant::now(), None);
        let _ = std::fs::remove_dir_all(&plan.out);
        recorded.unwrap();
        assert_eq!(p.frames.load(Ordering::Relaxed), 1);
        assert_eq!(p.lost.load(Ordering::Relaxed), 0);
    }
}
