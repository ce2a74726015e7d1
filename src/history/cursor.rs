//! [`Cursor`]: a reader of the history ring that returns every frame strictly in order,
//! and reports exactly how many it lost (overwritten by a lap, or published without reaching
//! the ring); where it starts, how it waits on its next frame's slot, and how it skips ahead.

use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

use ndarray::ArrayD;

use super::frame::RingFrame;
use super::{Ring, SlotRead};
use crate::dtype::Element;
use crate::error::{Error, LossCause, Result};
use crate::notify::{ADAPTIVE_SPIN, WaitStrategy, Waiter};
use crate::read::{FrameInfo, Publication};
use crate::seqlock::{self, Observed};
use crate::spin::Spin;
use crate::stream::Stream;

/// Pauses a cursor spinning on its next frame's slot (spinning, or adaptive for its
/// budget) makes between the stream's checks (tens of µs).
const SLOT_SPIN_ROUNDS: u32 = 1024;

/// What [`Cursor::unrecorded_gap`] found.
enum Gap {
    /// Nothing past the last frame returned, or no last frame.
    None,
    /// A ring frame is there after all: read it.
    Moved,
    /// Publications that never reached the ring, reported.
    Lost(Error),
}

/// Reads every frame of a history stream, strictly in order ([`Stream::cursor`]).
///
/// A frame that cannot be returned is never skipped silently: when the writer lapped the
/// cursor (the ring overwrote frames it had not read), or frames were written by a writer that
/// does not append to the history (pyshmem), the next call returns [`Error::Overrun`] with the
/// exact number lost and the call after resumes with the oldest frame still held. A frame
/// counted at or below the one before it (a corrupt ring) is refused with
/// [`Error::InvalidHistory`], the cursor left on it; a new cursor's first frame may carry the
/// count it started from, and a new cursor steps past a frame counted at or below that count
/// left complete at the ring's head (published before it: by an append between its even stamp
/// and its head store, or a writer killed there).
///
/// ```
/// use shmstream::{Dtype, Error, StreamOptions};
/// use std::time::Duration;
/// let name = format!("doc-cursor-{}", std::process::id());
/// let s = StreamOptions::new(&name).shape(&[2]).dtype(Dtype::I32).history(4).create()?;
/// let mut c = s.cursor()?;
/// for i in 0..6 {
///     s.write_slice_frame(&[i, i], i as u64)?;
/// }
/// let t = Some(Duration::from_secs(1));
/// assert!(matches!(c.next::<i32>(t), Err(Error::Overrun { lost: 2, .. })));
/// for i in 2..6 {
///     assert_eq!(c.next::<i32>(t)?.as_slice().unwrap(), &[i, i]);
/// }
/// shmstream::unlink(&name)?;
/// # Ok::<(), shmstream::Error>(())
/// ```
#[derive(Debug)]
pub struct Cursor<'a> {
    stream: &'a Stream,
    ring: &'a Ring,
    /// The append index of the next frame to return.
    next: u64,
    /// The stream count of the last frame returned (or seen at creation), for gap checks.
    last_count: Option<u64>,
    /// What the next frame's count may be against `last_count`: any other is a corrupt ring.
    expect: NextCount,
}

/// What the count of a cursor's next ring frame may be, against the count before it
/// (`Cursor::last_count`). A stream's counts rise, one per publication, so a frame counted
/// lower is an old frame again, or a planted one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NextCount {
    /// Above it.
    Above,
    /// At least it: a new cursor's first frame may carry the count it started from, which
    /// an append stores into the header before its frame reaches the ring
    /// ([`Ring::finish_append`]).
    AtLeast,
    /// Anything: a new cursor whose every look at the head and the count raced an append
    /// ([`START_LOOKS`]) cannot tell its first frame from an older one by its count.
    Any,
}

/// Looks a new cursor takes at the ring's head and the header's count, each checked by a
/// second load of the head, before it starts from one it could not check.
const START_LOOKS: usize = 8;

#[cfg(test)]
thread_local! {
    /// Looks [`Cursor::after_newest`] took on this thread (tests count them).
    static LOOKS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl Stream {
    /// A cursor over this stream's history, positioned at the next frame to be written.
    /// Fails with [`Error::NoHistory`] when the stream was not created with
    /// [`StreamOptions::history`](crate::StreamOptions::history).
    pub fn cursor(&self) -> Result<Cursor<'_>> {
        self.ensure_open()?;
        let ring = self.history.as_ref().ok_or_else(|| Error::NoHistory {
            name: self.name.clone(),
            remedy: self.history_remedy(),
        })?;
        Ok(Cursor::after_newest(self, ring))
    }

    /// Frames this stream's history keeps (0 = none).
    pub fn history_depth(&self) -> usize {
        self.history.as_ref().map_or(0, |r| r.capacity() as usize)
    }

    /// How this stream, which keeps no history, gets one (advice for a message): a GPU
    /// stream only from a shmstream producer, which owns its device payload, with a CPU
    /// mirror to hold the ring (pyshmem's keep none); a CPU stream also by being made first
    /// ([`crate::name::history_remedy`]).
    pub fn history_remedy(&self) -> String {
        let how = "create it with a CPU mirror and a history (Rust: StreamOptions \
                   cpu_mirror(true), history(n))";
        if !self.gpu_enabled() {
            crate::name::history_remedy(&self.name)
        } else if self.flags & crate::format::FLAG_CUDA_IPC == 0 {
            format!(
                "pyshmem keeps no history of a GPU stream: have a shmstream producer {how} in \
                 its place"
            )
        } else {
            format!(
                "have its producer {how}: only the process that owns its device payload can \
                 make it"
            )
        }
    }
}

impl<'a> Cursor<'a> {
    /// A cursor positioned at the next frame to be written: looks at the head and the count
    /// ([`Cursor::from_look`]) until a look holds, or after [`START_LOOKS`] that raced an
    /// append each, from the last one, its first frame taken whatever its count (a writer
    /// finishing an append in every window of a few loads).
    fn after_newest(stream: &'a Stream, ring: &'a Ring) -> Self {
        let mut looks = 0;
        loop {
            let next = ring.appended();
            let count = stream.header.count().load(Ordering::Acquire);
            looks += 1;
            #[cfg(test)]
            LOOKS.with(|l| l.set(l.get() + 1));
            match Self::from_look(stream, ring, next, count) {
                Ok(cursor) => return cursor,
                Err(count) if looks == START_LOOKS => {
                    return Self::at(stream, ring, next, count, NextCount::Any);
                }
                Err(_) => {}
            }
        }
    }

    /// The rest of one look, given the head loaded (`next`), then `count`, the header's
    /// count: the count the first frame follows, the header's (frames published without an
    /// append before this cursor existed are not its loss), or the ring's newest frame's
    /// where that is higher (a writer of an earlier version moved the head before its
    /// publication moved the header's count: a cursor made inside that window found the
    /// header one behind its first frame and reported a frame lost that it never skipped;
    /// this version stores the count first, [`Ring::finish_append`]). The head loaded again
    /// after that count must still be `next`, else the count is returned to look again.
    ///
    /// Why a look that holds bounds every frame ahead: an append stores its count after a
    /// release fence that follows the head's move past the frame before it (the previous
    /// append's head store, before the lock passed on, or a recovery's in
    /// [`Ring::begin_append`]), so a count loaded (Acquire) from an append past frame `next`
    /// would show the head past `next` to the second load. Frames after `next` are counted
    /// above the count loaded; frame `next` at least it (its append may have stored its
    /// count already: [`NextCount::AtLeast`]), unless it is complete already with a count
    /// at or below it: a frame published before this cursor (an append between its even
    /// stamp and its head store, or left so by a writer killed there, perhaps with
    /// publications that skipped the ring after it), which the cursor steps past, once.
    fn from_look(
        stream: &'a Stream,
        ring: &'a Ring,
        next: u64,
        mut count: u64,
    ) -> Result<Self, u64> {
        if let Some(newest) = next.checked_sub(1) {
            match ring.read(newest, &mut |_| {}) {
                SlotRead::Frame(info) => count = count.max(info.count),
                SlotRead::Overwritten(_) => {
                    // A later append took the newest frame's slot: it began after that
                    // frame's publication stamped the header's count. The fence makes the
                    // stamp read (either load) synchronize with that append's bracket
                    // (`seqlock::begin_write`'s release fence, after the count), so the count
                    // loaded now is at least the newest frame's.
                    fence(Ordering::Acquire);
                    count = stream.header.count().load(Ordering::Acquire);
                }
            }
        }
        if ring.appended() != next {
            return Err(count);
        }
        let Some(published_before) = Self::published_before(ring, next, count) else {
            return Err(count);
        };
        // Past a frame published before it, every frame is counted above the count.
        let expect = if published_before {
            NextCount::Above
        } else {
            NextCount::AtLeast
        };
        let next = next.wrapping_add(u64::from(published_before));
        Ok(Self::at(stream, ring, next, count, expect))
    }

    fn at(stream: &'a Stream, ring: &'a Ring, next: u64, count: u64, expect: NextCount) -> Self {
        Cursor {
            stream,
            ring,
            next,
            last_count: Some(count),
            expect,
        }
    }

    /// Whether frame `next`, at the head a look loaded, is complete and counted at or below
    /// `count`, the look's: published before the cursor. `None` where a later append holds
    /// or is writing its slot: the head moved past `next` since the look loaded it, or is
    /// about to (a writer recovering past a frame left complete there stores the head,
    /// then the next slot's odd stamp), so the look is taken again; the frame it would have
    /// stepped past would otherwise be reported lost.
    fn published_before(ring: &Ring, next: u64, count: u64) -> Option<bool> {
        match ring.read(next, &mut |_| {}) {
            SlotRead::Frame(info) => Some(info.count <= count),
            SlotRead::Overwritten(by) if by > next => None,
            SlotRead::Overwritten(_) => Some(false),
        }
    }
}

impl Cursor<'_> {
    /// Moves the cursor back to the first frame of this generation of the stream: the next
    /// frame returned is its oldest the ring still holds, after an [`Error::Overrun`] for
    /// those it no longer holds. For a reader that must carry every frame of a stream made
    /// after it started waiting for it (a bridge, a recorder started first).
    pub fn rewind_to_start(&mut self) {
        self.next = 0;
        self.last_count = Some(0);
        self.expect = NextCount::Above;
    }

    /// Moves the cursor back to the oldest frame the ring still holds.
    pub fn rewind_to_oldest(&mut self) {
        let head = self.ring.appended();
        self.next = head.saturating_sub(self.ring.capacity);
        self.last_count = None;
        self.expect = NextCount::Above;
    }

    /// Moves the cursor forward so that at most `keep` written frames lie ahead of it, and
    /// returns how many frames it skipped (lost to this reader; 0 when it was already that
    /// close). A consumer slower than its producer calls this after an [`Error::Overrun`]:
    /// resuming at the oldest frame races the producer, whose next write overwrites exactly
    /// that slot, so every frame would be copied while being overwritten; `keep` frames of
    /// slack leave it time to read before the next lap.
    pub fn skip_to_recent(&mut self, keep: u64) -> u64 {
        let head = self.ring.appended();
        self.advance_to(head.saturating_sub(keep.min(self.ring.capacity)))
    }

    /// Moves the cursor forward past at most `frames` frames, not past the newest written,
    /// and returns how many it skipped. For a reader that knows the frames ahead hold
    /// nothing it wants: a bridge asked for the frames counted after a count skips those
    /// before it without copying them.
    pub fn skip(&mut self, frames: u64) -> u64 {
        let head = self.ring.appended();
        self.advance_to(self.next.saturating_add(frames).min(head))
    }

    /// Moves the cursor forward to append index `target` (nowhere where it is not ahead),
    /// returning how many frames it skipped.
    fn advance_to(&mut self, target: u64) -> u64 {
        if target <= self.next {
            return 0;
        }
        let skipped = target - self.next;
        self.next = target;
        // As `lost` does: the count is kept, so the next frame's gap check reports the
        // publications in the skipped region that never entered the ring.
        self.last_count = self.last_count.map(|c| c.saturating_add(skipped));
        skipped
    }

    /// What a consumer slower than its producer does after an [`Error::Overrun`] of `cause`,
    /// returning the frames it skipped (lost to it too): after a lap (`Overwritten`),
    /// [`Cursor::skip_to_recent`] with an eighth of the ring as slack, at least one frame (a
    /// ring under 8 deep would otherwise keep every frame, and resume at the slot the writer
    /// overwrites next); after publications
    /// that never entered the ring (`NotRecorded`), nothing: the frames after them are
    /// still there to read.
    pub fn skip_after_overrun(&mut self, cause: LossCause) -> u64 {
        match cause {
            LossCause::Overwritten => {
                let depth = self.ring.capacity;
                self.skip_to_recent(depth - (depth / 8).max(1))
            }
            LossCause::NotRecorded => 0,
        }
    }

    /// Frames written to the history and not yet returned by this cursor (more than the
    /// capacity means some are already lost).
    pub fn lag(&self) -> u64 {
        self.ring.appended().saturating_sub(self.next)
    }

    /// The next frame, copied into `dst` (no allocation). Waits up to `timeout` (`None`:
    /// forever) for it to be written; the thread that holds the stream's write lock is
    /// refused a wait ([`Error::Unsupported`]). On error, `dst` is unspecified (it may hold
    /// a torn copy).
    pub fn next_into_slice<T: Element>(
        &mut self,
        dst: &mut [T],
        timeout: Option<Duration>,
    ) -> Result<FrameInfo> {
        self.stream.ensure_dtype::<T>()?;
        self.stream.ensure_len(dst.len())?;
        let (n, ptr) = (dst.len(), dst.as_mut_ptr());
        self.next_with(timeout, |src| {
            // SAFETY: `src` is a slot's frame of `n` elements of `T` (dtype and length
            // checked above); `ptr` is the caller's exclusive buffer of `n` elements. The copy
            // may race an append; it is only used after the stamp check.
            unsafe { T::copy_from_shared(src, ptr, n) };
        })
    }

    /// The next frame's raw bytes (C order, native endian), for tools that move frames
    /// without looking at them (recorders, bridges). `dst` must be `size_bytes()` long. On
    /// error, `dst` is unspecified (it may hold a torn copy).
    pub fn next_into_bytes(
        &mut self,
        dst: &mut [u8],
        timeout: Option<Duration>,
    ) -> Result<FrameInfo> {
        // Refuse a wrong-sized buffer before waiting for a frame.
        self.stream.ensure_byte_len(dst.len())?;
        let (info, copied) = self.next_in_place(timeout, |frame| frame.copy_into(dst))?;
        copied.map(|()| info)
    }

    /// The next frame, lent to `consume` where it lies in the ring (no copy): for tools that
    /// move frames without looking at them, such as a recorder writing each frame to a file
    /// with [`RingFrame::write_at`]. The writer may overwrite the slot while `consume` runs;
    /// the cursor checks afterwards and then reports the frame lost ([`Error::Overrun`]) and
    /// drops `consume`'s result, so what `consume` does must be discardable (a write at an
    /// offset the caller advances only when this returns `Ok`). The same goes for a frame
    /// after publications that skipped the ring (a pyshmem writer's): `consume` has run on it
    /// when the gap is reported ([`LossCause::NotRecorded`]), and the next call lends it
    /// again; and for a frame refused as counted behind the one before it
    /// ([`Error::InvalidHistory`]), which the next call lends again too. Waits up to
    /// `timeout` (`None`: forever) for the frame to be written.
    pub fn next_in_place<R>(
        &mut self,
        timeout: Option<Duration>,
        consume: impl FnOnce(RingFrame<'_>) -> R,
    ) -> Result<(FrameInfo, R)> {
        let stream = self.stream;
        let mut consume = Some(consume);
        let mut result = None;
        let info = self.next_with(timeout, |ptr| {
            if let Some(f) = consume.take() {
                // SAFETY: `next_with` hands its closure only a whole frame of a slot (the
                // stream's frame size, the ring's), in the ring `stream`'s borrow keeps
                // mapped. It checks afterwards for a lap and then fails, so that `?` below
                // drops `result`.
                result = Some(f(unsafe { RingFrame::new(ptr, stream) }));
            }
        })?;
        // `next_with` returns a frame only after handing it to its closure once.
        result
            .map(|r| (info, r))
            .ok_or_else(|| Error::InvalidHistory {
                name: self.stream.name.clone(),
                reason: "a frame was returned without being read: report this as a bug".into(),
            })
    }

    /// The next frame with its metadata.
    pub fn next_publication<T: Element>(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Publication<T>> {
        let stream = self.stream;
        // SAFETY: `next_with` hands its copy only a slot's frame: `len` elements of the
        // stream's dtype.
        let (payload, info) =
            unsafe { stream.read_to_new_array(|copy| self.next_with(timeout, copy))? };
        Ok(Publication { payload, info })
    }

    /// The next frame as an array.
    pub fn next<T: Element>(&mut self, timeout: Option<Duration>) -> Result<ArrayD<T>> {
        Ok(self.next_publication(timeout)?.payload)
    }

    fn next_with(
        &mut self,
        timeout: Option<Duration>,
        mut copy: impl FnMut(*const u8),
    ) -> Result<FrameInfo> {
        let deadline = crate::deadline::from_now(timeout);
        // When an adaptive cursor stops spinning on the next frame's slot in this call (set
        // at its first spin).
        let mut spin_until: Option<Instant> = None;
        let mut spin = Spin::new();
        // The wait for the next writer after an aborted write or a dead writer (made at the
        // first such wait in this call, kept so that its pauses progress).
        let mut invalid_wait: Option<Waiter> = None;
        // Only this thread takes the lock for itself: whether it holds it stays true or false
        // for the whole call.
        let own_lock = self.stream.lock.held_here();
        loop {
            self.stream.ensure_open()?;
            // The head alone decides whether a frame is there: the header's cache line, which
            // the writer is still storing to (payload copy, even sequence), stays off the
            // hop's path.
            let head = self.ring.appended();
            if self.next < head || self.ring.finished(self.next) {
                let oldest = head.saturating_sub(self.ring.capacity);
                if self.next < oldest {
                    return Err(self.lost(oldest, LossCause::Overwritten));
                }
                match self.ring.read(self.next, &mut copy) {
                    SlotRead::Overwritten(by) => {
                        // Append `by` holds or is writing this frame's slot: with the head
                        // past `next`, it is a later lap, so this frame is gone.
                        let oldest = (by + 1).saturating_sub(self.ring.capacity);
                        if self.next < oldest {
                            return Err(self.lost(oldest, LossCause::Overwritten));
                        }
                        return Err(Error::InvalidHistory {
                            name: self.stream.name.clone(),
                            reason: format!(
                                "slot of frame {} holds stamp of frame {by} although the ring head is {head}: unlink and recreate the stream",
                                self.next
                            ),
                        });
                    }
                    SlotRead::Frame(info) => {
                        if let Some(last) = self.last_count {
                            if self.counted_behind(info.count, last) {
                                let due = match self.expect {
                                    NextCount::Above => "above",
                                    _ => "of at least",
                                };
                                return Err(Error::InvalidHistory {
                                    name: self.stream.name.clone(),
                                    reason: format!(
                                        "frame {} is counted {} where a count {due} {last} is due (a stream's counts only rise): unlink and recreate the stream",
                                        self.next, info.count
                                    ),
                                });
                            }
                            if info.count > last.saturating_add(1) {
                                let lost = info.count - last - 1;
                                self.last_count = Some(info.count - 1);
                                self.expect = NextCount::Above;
                                return Err(Error::Overrun {
                                    name: self.stream.name.clone(),
                                    lost,
                                    cause: LossCause::NotRecorded,
                                });
                            }
                        }
                        self.next = self.next.wrapping_add(1);
                        self.last_count = Some(info.count);
                        self.expect = NextCount::Above;
                        return Ok(info);
                    }
                }
            }
            if own_lock {
                // No frame to return, and none can come while this thread holds the write
                // lock: refused at once, after reporting publications that skipped the ring.
                self.stream.refuse_inside_own_fill()?;
                match self.unrecorded_gap() {
                    Gap::Lost(e) => return Err(e),
                    Gap::Moved => continue,
                    Gap::None => self.stream.refuse_wait_under_own_lock(timeout)?,
                }
            }
            let strategy = self.stream.wait_strategy();
            // One clock read serves the deadline and the adaptive spin's end.
            let now = (deadline.is_some() || strategy == WaitStrategy::Adaptive).then(Instant::now);
            let remaining = match deadline.zip(now) {
                Some((d, now)) => match d.checked_duration_since(now) {
                    Some(r) if !r.is_zero() => Some(r),
                    _ => {
                        // Publications that skipped the ring are reported before the
                        // timeout: a poller with no time to wait would never see them.
                        match self.unrecorded_gap() {
                            Gap::Lost(e) => return Err(e),
                            Gap::Moved => continue,
                            Gap::None => {}
                        }
                        return Err(Error::Timeout {
                            name: self.stream.name.clone(),
                            op: "read the next frame of the history",
                            awaited: crate::Awaited::Writer,
                            timeout: timeout.unwrap_or_default(),
                        });
                    }
                },
                None => None,
            };
            // A cursor spins on its next frame's slot alone: forever when it spins, for the
            // adaptive budget before it parks, with the stream's own checks (closed,
            // unlinked: rate limited; the deadline, above) every SLOT_SPIN_ROUNDS pauses.
            // Spinning on the head and the header instead pulled both lines away from the
            // writer in the middle of its publication: a 2-byte frame's hop took 326 ns
            // longer than a bare one's, 219 ns this way (p50, six alternations of
            // `harness/examples/hop_vs_bare.rs` each). A writer that dies mid-append leaves
            // the slot odd, and the next writer appends at the same index, ending the spin.
            let spins = match strategy {
                WaitStrategy::Spin => true,
                WaitStrategy::Adaptive => {
                    now.is_some_and(|n| n < *spin_until.get_or_insert(n + ADAPTIVE_SPIN))
                }
                _ => false,
            };
            if spins {
                if !self
                    .ring
                    .spin_until_finished(self.next, SLOT_SPIN_ROUNDS, &mut spin)
                {
                    self.stream.check_generation(false)?;
                    // This thread's own fill, which the ring's next frame is waiting on.
                    self.stream.refuse_inside_own_fill()?;
                    // Once a round, not at every pause: the header's line stays the writer's.
                    if let Gap::Lost(e) = self.unrecorded_gap() {
                        return Err(e);
                    }
                }
                continue;
            }
            match self.unrecorded_gap() {
                Gap::Lost(e) => return Err(e),
                Gap::Moved => continue,
                Gap::None => {}
            }
            let after_spin = match strategy {
                WaitStrategy::Adaptive => WaitStrategy::Park,
                s => s,
            };
            // The last write was aborted or its writer died: wait here for the next writer,
            // not in the stream's wait, which would report it again at once (the report it
            // made is given back below) and turn this wait into a busy loop. The ring is
            // untouched by it: a dead writer's slot stays odd and is never returned.
            if let Observed::Invalid(s) = seqlock::optimistic_read(&self.stream.header) {
                // Unlinked: stale. Looked at once at this call's first such wait, then at
                // the rate limit, as the stream's wait past a reported invalid generation.
                self.stream.check_generation(invalid_wait.is_none())?;
                let w = invalid_wait.get_or_insert_with(|| {
                    Waiter::new(after_spin, self.stream.notify(), remaining)
                });
                if !w.pause(&self.stream.header, s, || false) {
                    return Err(Error::Timeout {
                        name: self.stream.name.clone(),
                        op: "read the next frame of the history",
                        awaited: crate::Awaited::Writer,
                        timeout: timeout.unwrap_or_default(),
                    });
                }
                continue;
            }
            // Nothing new in the ring: wait for the stream's next publication or append
            // (futex on notify streams; an adaptive cursor, which has spun on its slot,
            // parks at once). Aborted writes append nothing; keep waiting past them.
            // With a last count, wait for a publication past it: the check above found none
            // (or none finished), and one finishing since returns at once, to be reported.
            // Without one, the count is read after the look at the ring above. An append
            // stores its frame's count before it moves the head (`Bracket::count_ahead`), so
            // this may load the count of a frame the ring does not show yet: it is still not
            // waited past, since the wait looks at the head before the count at every round
            // (`Want::AfterOrAppended`) and returns once that head moves; a publication that
            // skips the ring moves only the count, and one landing after this load ends it.
            let seen_count = self
                .last_count
                .unwrap_or_else(|| self.stream.header.count().load(Ordering::Acquire));
            // The handle reports a writer's death once to its waits (`reads.reported_invalid`,
            // marked when made); a report the cursor does not pass on is given back, so the
            // handle's next read or wait makes it (as an abandoned async wait gives it back).
            let (waited, report) = crate::read::reporting(|| {
                self.stream
                    .wait_for_append(after_spin, seen_count, self.next, remaining)
            });
            match waited {
                Ok(_) | Err(Error::WriteAborted { .. }) => {}
                Err(Error::Inconsistent { .. }) => {
                    if let Some((before, made)) = report {
                        self.stream.reads.give_back_report(before, made);
                    }
                }
                Err(Error::Timeout { .. }) => {
                    return Err(Error::Timeout {
                        name: self.stream.name.clone(),
                        op: "read the next frame of the history",
                        awaited: crate::Awaited::Writer,
                        timeout: timeout.unwrap_or_default(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// With no ring frame at `next`: publications past the last frame returned that never
    /// reached the ring (pyshmem's, which do not append), reported now rather than when a
    /// ring frame follows them (none may ever come). Reads the header: a spinning cursor asks
    /// once per spin round.
    fn unrecorded_gap(&mut self) -> Gap {
        let Some(last) = self.last_count else {
            return Gap::None;
        };
        let Some(count) = self.published_count().filter(|&c| c > last) else {
            return Gap::None;
        };
        // Race-free: `published_count` acquired the even (or aborted) sequence of the
        // publication that stored `count` (Release, after its count and, for a Rust writer,
        // after its append's head store; a dead writer's stores were done before it was
        // found dead), so the head loaded now is at or past every append of the publications
        // up to `count`. Ring frames of index >= `next` have counts above `last` (counts rise
        // with the append index; `next`'s frame follows the one of count `last`; a new
        // cursor's may carry `last` itself, an append whose publication is still odd or dead,
        // so not among those `published_count` sees), and those
        // below `next` counts up to `last`: so if the head is still at `next`, none of the
        // publications `last + 1 ..= count` appended, and all of them are lost to the ring.
        // If it moved (or the slot at `next` is already complete), the frame is read at the
        // top of the loop and its count reports the gap before it. An aborted or dead write
        // that stored its count and left its slot odd used that count up (the next writer
        // appends at `next` and counts past it), so it is reported here, once. The count is
        // not loaded on its own: an append stores it before its even stamp and head, so a
        // count loaded alone may be that of an append under way, which neither shows yet.
        if self.ring.appended() > self.next || self.ring.finished(self.next) {
            return Gap::Moved;
        }
        self.last_count = Some(count);
        self.expect = NextCount::Above;
        Gap::Lost(Error::Overrun {
            name: self.stream.name.clone(),
            lost: count - last,
            cause: LossCause::NotRecorded,
        })
    }

    /// Whether a ring frame counted `count`, after `last`, is counted behind it (a corrupt
    /// ring: it is refused where it is, nothing skipped).
    fn counted_behind(&self, count: u64, last: u64) -> bool {
        match self.expect {
            NextCount::Above => count <= last,
            NextCount::AtLeast => count < last,
            NextCount::Any => false,
        }
    }

    /// The header's count as of the last finished publication, or the last aborted or dead
    /// one (its count is final: the next writer counts past it), if none is in progress:
    /// the sequence, acquired, even or invalid, and unchanged after the count was loaded.
    fn published_count(&self) -> Option<u64> {
        let h = &self.stream.header;
        let (Observed::Stable(s) | Observed::Invalid(s)) = seqlock::optimistic_read(h) else {
            return None;
        };
        let count = h.count().load(Ordering::Relaxed);
        seqlock::validate_read(h, s).then_some(count)
    }

    fn lost(&mut self, oldest: u64, cause: LossCause) -> Error {
        let lost = oldest - self.next;
        self.next = oldest;
        // The frames lost are the ring's appends `next..oldest`, each with its own count
        // above the last one returned (counts rise with the append index): the first frame
        // still held has a count of at least `last + lost + 1`, and what lies beyond that is
        // publications that never entered the ring, which its gap check then reports
        // (NotRecorded). Forgetting the count instead (`None`) skipped that check, and those
        // frames were neither returned nor reported. Saturating: a planted head can make
        // `lost` anything.
        self.last_count = self.last_count.map(|c| c.saturating_add(lost));
        Error::Overrun {
            name: self.stream.name.clone(),
            lost,
            cause,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::stream;
    use super::super::{Append, off, writing_stamp, written_stamp};
    use super::*;

    /// The next append of `ring`, started ([`Ring::next_append`], [`Ring::begin_append`]).
    fn start_append(ring: &Ring) -> (Append, *mut u8) {
        let append = ring.next_append().unwrap();
        let frame = ring.begin_append(&append);
        (append, frame)
    }

    /// A ring-first publication completes the slot before its even sequence: a cursor
    /// returns the frame while the header still says a write is in progress (it used to
    /// wait for the count).
    #[test]
    fn a_cursor_reads_a_complete_slot_before_the_publication_ends() {
        let (name, s) = stream("ring-first", 4, 4);
        let mut c = s.cursor().unwrap();
        // The writer's lock, held: a waiting reader sees a live writer, not a dead one.
        let g = s.lock(Some(Duration::from_secs(1))).unwrap();
        let ring = s.history.as_ref().unwrap();
        let mut b = crate::seqlock::begin_write(&s.header);
        let (append, slot) = start_append(ring);
        let slot = slot.cast::<u32>();
        for i in 0..4 {
            // SAFETY: the slot holds 4 u32s (the stream's frame), 64-byte aligned; we hold
            // the write lock and the slot's stamp is odd.
            unsafe { slot.add(i).write(7) };
        }
        ring.finish_append(append, 1, 42, 0.0, |c| b.count_ahead(&s.header, c));
        let mut dst = [0u32; 4];
        let info = c
            .next_into_slice(&mut dst, Some(Duration::from_secs(1)))
            .unwrap();
        assert_eq!((info.frame_id, dst), (42, [7; 4]));
        assert_eq!(s.write_sequence(), 1, "the publication has not ended");
        // The count is stored ahead (no reader trusts it while the sequence is odd), once.
        assert_eq!(s.count(), 1);
        crate::seqlock::end_write(&s.header, b, 0.0, Some(42));
        assert_eq!((s.count(), s.write_sequence()), (1, 2));
        drop(g);
        drop(s);
        crate::unlink(&name).unwrap();
    }

    /// A parking cursor whose look at an open bracket ends just as the writer's ring-first
    /// append lands (head moved, wake made, sequence still odd) returns the frame at once:
    /// an append moves no futex word, so before, it parked on the odd sequence through
    /// that wake until the even one's (here: its timeout).
    #[test]
    fn a_cursor_about_to_park_as_a_ring_first_append_lands_returns_the_frame() {
        let name = format!("hist-early-wake-{}", std::process::id());
        let _ = crate::unlink(&name);
        let s = crate::StreamOptions::new(&name)
            .shape(&[4])
            .dtype(crate::Dtype::U32)
            .history(4)
            .notify(true)
            .create()
            .unwrap();
        let (made_tx, made) = std::sync::mpsc::channel::<()>();
        let (go, go_rx) = std::sync::mpsc::channel::<()>();
        let (at_park_tx, at_park) = std::sync::mpsc::channel::<()>();
        let (appended, appended_rx) = std::sync::mpsc::channel::<()>();
        let reader_name = name.clone();
        let reader = std::thread::spawn(move || {
            crate::notify::uncap_this_thread();
            let r = Stream::open(&reader_name).unwrap();
            r.set_wait_strategy(WaitStrategy::Park);
            let mut c = r.cursor().unwrap();
            made_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            // The writer's append runs after the wait's look, before its park.
            let mut once = Some((at_park_tx, appended_rx));
            crate::notify::BEFORE_PARK.set(Some(Box::new(move || {
                if let Some((tx, rx)) = once.take() {
                    tx.send(()).unwrap();
                    rx.recv().unwrap();
                }
            })));
            let mut dst = [0u32; 4];
            let start = Instant::now();
            // Uncapped: a lost wake would park it to this timeout (far past the bound below,
            // which a stall of the loaded machine between the two threads stays under).
            let got = c.next_into_slice(&mut dst, Some(Duration::from_secs(60)));
            crate::notify::BEFORE_PARK.set(None);
            (got.map(|i| i.frame_id), dst, start.elapsed())
        });
        made.recv_timeout(Duration::from_secs(10)).unwrap();
        let g = s.lock(Some(Duration::from_secs(1))).unwrap();
        let ring = s.history.as_ref().unwrap();
        let mut b = crate::seqlock::begin_write(&s.header);
        let (append, slot) = start_append(ring);
        for i in 0..4 {
            // SAFETY: the slot holds 4 u32s (the stream's frame), 64-byte aligned; we hold
            // the write lock and the slot's stamp is odd.
            unsafe { slot.cast::<u32>().add(i).write(7) };
        }
        go.send(()).unwrap();
        at_park
            .recv_timeout(Duration::from_secs(10))
            .expect("the cursor never came to park");
        ring.finish_append(append, 1, 42, 0.0, |c| b.count_ahead(&s.header, c));
        crate::notify::wake_all(&s.header);
        appended.send(()).unwrap();
        let (got, dst, took) = reader.join().unwrap();
        crate::seqlock::end_write(&s.header, b, 0.0, Some(42));
        drop(g);
        drop(s);
        crate::unlink(&name).unwrap();
        assert_eq!((got.unwrap(), dst), (42, [7; 4]));
        assert!(took < Duration::from_secs(30), "the cursor took {took:?}");
    }

    /// A spinning cursor, and an adaptive one for its spin, waits on its next frame's slot
    /// alone: it returns a frame whose slot holds its even stamp while the head has not
    /// moved yet, and it still times out, takes a frame written while it waits (an adaptive
    /// one parks once its spin is over), and sees the handle closed and the stream unlinked
    /// instead of waiting on.
    #[test]
    fn a_cursor_waits_on_its_slot_and_still_sees_timeouts_frames_closes_and_unlinks() {
        for (tag, strategy) in [
            ("spin-slot", WaitStrategy::Spin),
            ("adaptive-slot", WaitStrategy::Adaptive),
        ] {
            let (name, s) = stream(tag, 4, 4);
            s.set_wait_strategy(strategy);
            let mut c = s.cursor().unwrap();
            let mut dst = [0u32; 4];
            let err = c
                .next_into_slice(&mut dst, Some(Duration::from_millis(30)))
                .unwrap_err();
            assert!(
                matches!(err, Error::Timeout { .. }),
                "{strategy:?}: {err:?}"
            );
            // An append stopped between its even stamp and its head (as a writer is for an
            // instant): the frame is complete, and the cursor takes it.
            let g = s.lock(Some(Duration::from_secs(1))).unwrap();
            let ring = s.history.as_ref().unwrap();
            let b = crate::seqlock::begin_write(&s.header);
            let index = append_up_to_the_even_stamp(ring, 9, 1, 7);
            let info = c
                .next_into_slice(&mut dst, Some(Duration::from_secs(1)))
                .unwrap();
            assert_eq!((info.frame_id, dst, ring.appended()), (7, [9; 4], 0));
            ring.head().store(index + 1, Ordering::Release);
            crate::seqlock::end_write(&s.header, b, 0.0, Some(7));
            drop(g);
            // A frame written while it waits.
            let (c, written) = while_waiting(c, || s.write_slice_frame(&[5u32; 4], 8).unwrap());
            let written = written.unwrap();
            assert_eq!((written.frame_id, written.count), (8, 2), "{strategy:?}");
            // Closed while it waits: Closed, not a wait until the deadline.
            let other = Stream::open(&name).unwrap();
            other.set_wait_strategy(strategy);
            let (_, closed) = while_waiting(other.cursor().unwrap(), || other.close());
            assert!(matches!(closed, Err(Error::Closed { .. })), "{closed:?}");
            // Unlinked while it waits: Stale.
            let (_, stale) = while_waiting(c, || crate::unlink(&name).unwrap());
            assert!(matches!(stale, Err(Error::Stale { .. })), "{stale:?}");
        }
    }

    /// What a cursor's wait for its next frame returns when `act` runs while it waits, and
    /// the cursor; within 10 s, far short of its 20 s deadline. `act` runs once the wait is
    /// under way: once the waiting thread has looked at its stream's file
    /// ([`Stream::check_generation`], which a wait does only after it found no frame, at its
    /// first spin round or park; nothing else uses the handle meanwhile), not when the
    /// thread starts, so that the close or unlink does not land before the wait begins.
    fn while_waiting<'s>(mut c: Cursor<'s>, act: impl FnOnce()) -> (Cursor<'s>, Result<FrameInfo>) {
        let t0 = Instant::now();
        let checked = &c.stream.generation_checked_ms;
        let before = checked.load(Ordering::Relaxed);
        let end = std::thread::scope(|scope| {
            let waiting = scope.spawn(move || {
                let got = c.next_into_slice(&mut [0u32; 4], Some(Duration::from_secs(20)));
                (c, got)
            });
            // A wait that returned without looking is reported by the caller's checks.
            while checked.load(Ordering::Relaxed) == before && !waiting.is_finished() {
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "the cursor never waited"
                );
                std::thread::yield_now();
            }
            act();
            waiting.join().unwrap()
        });
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "seen late: {:?}",
            end.1
        );
        end
    }

    /// A cursor made while a write is between its append and the end of its publication
    /// starts after that frame and reports no loss on the next one, whether the header
    /// already holds the frame's count (this version's writer) or not yet (the head moved
    /// first: an earlier version's): it used to take the header's stale count and report
    /// one lost.
    #[test]
    fn a_cursor_made_inside_a_publication_reports_no_frame_lost() {
        for ahead in [true, false] {
            let (name, s) = stream("mid-write-cursor", 4, 4);
            s.write_slice(&[1u32; 4]).unwrap();
            let g = s.lock(Some(Duration::from_secs(1))).unwrap();
            let ring = s.history.as_ref().unwrap();
            let mut b = crate::seqlock::begin_write(&s.header);
            let (append, _) = start_append(ring);
            ring.finish_append(append, 2, 2, 0.0, |c| {
                if ahead {
                    b.count_ahead(&s.header, c);
                }
            });
            let mut c = s.cursor().unwrap();
            assert_eq!(
                s.count(),
                if ahead { 2 } else { 1 },
                "counted ahead: {ahead}"
            );
            crate::seqlock::end_write(&s.header, b, 0.0, Some(2));
            g.write_slice(&[3u32; 4]).unwrap();
            let mut dst = [0u32; 4];
            let info = c
                .next_into_slice(&mut dst, Some(Duration::from_secs(1)))
                .unwrap();
            assert_eq!((info.count, dst), (3, [3; 4]), "counted ahead: {ahead}");
            drop(g);
            drop(s);
            crate::unlink(&name).unwrap();
        }
    }

    /// A cursor that loaded the head inside a ring-first publication's window (head moved,
    /// header count not yet: a writer of an earlier version, which stored the count last)
    /// and then found the newest slot taken by the next append (a ring of one) follows the
    /// count loaded after that: it used to keep the stale header count and report the next
    /// frame's predecessor lost, a frame it never skipped.
    #[test]
    fn a_cursor_whose_newest_slot_is_taken_while_it_is_made_reports_no_frame_lost() {
        let (name, s) = stream("newest-taken", 4, 1);
        s.write_slice(&[1u32; 4]).unwrap();
        let g = s.lock(Some(Duration::from_secs(1))).unwrap();
        let ring = s.history.as_ref().unwrap();
        let b = crate::seqlock::begin_write(&s.header);
        let (append, _) = start_append(ring);
        ring.finish_append(append, 2, 2, 0.0, |_| ());
        // What `cursor` loads inside the window: the head past frame 2, the count of 1.
        let (head, count) = (ring.appended(), s.header.count().load(Ordering::Acquire));
        assert_eq!((head, count), (2, 1));
        crate::seqlock::end_write(&s.header, b, 0.0, Some(2));
        // The next publication's append takes the ring's only slot before `cursor` reads it.
        let b = crate::seqlock::begin_write(&s.header);
        let (append, _) = start_append(ring);
        let mut c = Cursor::from_look(&s, ring, head, count).unwrap();
        ring.finish_append(append, 3, 3, 0.0, |_| ());
        crate::seqlock::end_write(&s.header, b, 0.0, Some(3));
        drop(g);
        let next = c.next_into_slice(&mut [0u32; 4], Some(Duration::from_secs(1)));
        assert!(matches!(next, Ok(FrameInfo { count: 3, .. })), "{next:?}");
        drop(s);
        crate::unlink(&name).unwrap();
    }

    /// A ring frame counted at or below the frame a cursor returned before it (planted: a
    /// stream's counts only rise) is refused, naming the stream, the frame, both counts and
    /// the remedy, and the cursor stays on it: restored, it is returned, nothing lost. It
    /// used to be returned as a new frame.
    #[test]
    fn a_frame_counted_at_or_below_the_one_before_it_is_refused_in_place() {
        for planted in [1, 0] {
            let (name, s) = stream(&format!("count-back-{planted}"), 4, 4);
            for i in 1..=3u32 {
                s.write_slice(&[i; 4]).unwrap();
            }
            let ring = s.history.as_ref().unwrap();
            let mut c = s.cursor().unwrap();
            c.rewind_to_start();
            let mut dst = [0u32; 4];
            let t = Some(Duration::from_secs(1));
            assert_eq!(c.next_into_slice(&mut dst, t).unwrap().count, 1);
            let count = ring.word(ring.slot_at(1) + off::COUNT);
            count.store(planted, Ordering::Relaxed);
            for _ in 0..2 {
                let e = c.next_into_slice(&mut dst, t).unwrap_err();
                let text = e.to_string();
                assert!(
                    matches!(&e, Error::InvalidHistory { .. })
                        && text.contains(&format!("stream '{name}'"))
                        && text.contains(&format!(
                            "frame 1 is counted {planted} where a count above 1 is due"
                        ))
                        && text.contains("unlink and recreate the stream"),
                    "{text}"
                );
                assert_eq!(c.lag(), 2, "planted {planted}");
            }
            count.store(2, Ordering::Relaxed);
            let info = c.next_into_slice(&mut dst, t).unwrap();
            assert_eq!((info.count, dst), (2, [2; 4]), "planted {planted}");
            drop(s);
            crate::unlink(&name).unwrap();
        }
    }

    /// A writer killed between its slot's even stamp and its head store left a complete
    /// frame at the head, counted in the header (this version stores the count ahead) or
    /// not (an earlier one), perhaps with publications that skip the ring (pyshmem's) after
    /// it. A cursor made then steps past that frame where it is counted at or below the
    /// count the cursor starts from (published before it: neither returned nor lost), and
    /// returns the next writer's frame; the earlier version's frame, counted past the
    /// header, is the cursor's first. A cursor stepping nowhere returned the old frame as a
    /// new one, and one refusing it stayed stuck until a lap.
    #[test]
    fn a_cursor_made_after_a_frame_left_at_the_head_steps_past_it() {
        for (ahead, skipping) in [(true, 0), (true, 2), (false, 2), (false, 0)] {
            let tag = format!("head-left-{ahead}-{skipping}");
            let (name, s) = stream(&tag, 4, 4);
            kill_after_the_even_stamp(&s, ahead);
            for id in 0..skipping {
                publish_without_ring(&s, 8 + id);
            }
            let start = s.count();
            let mut c = s.cursor().unwrap();
            let stepped = start >= 1;
            let first = if stepped {
                vec![]
            } else {
                vec!["frame 1".to_string()]
            };
            assert_eq!(drain(&mut c), first, "{tag}");
            s.write_slice_frame(&[5u32; 4], 20).unwrap();
            let mut dst = [0u32; 4];
            let next = c
                .next_into_slice(&mut dst, Some(Duration::from_secs(1)))
                .unwrap();
            let count = start.max(1) + 1;
            assert_eq!(
                (next.count, next.frame_id, dst),
                (count, 20, [5; 4]),
                "{tag}"
            );
            assert_eq!(drain(&mut c), Vec::<String>::new(), "{tag}");
            drop(s);
            crate::unlink(&name).unwrap();
        }
    }

    /// A cursor made while an append is under way, its count already in the header: where
    /// the frame is not in the ring yet, it is the cursor's first frame, though it carries
    /// the count the cursor started from; where it is (its even stamp stored, the head not
    /// yet), it was published before the cursor, which steps past it. Either way the next
    /// frame follows and nothing is lost or refused.
    #[test]
    fn a_cursor_made_inside_an_append_returns_its_frame_or_steps_past_it_once() {
        for stamped in [false, true] {
            let (name, s) = stream(&format!("inside-append-{stamped}"), 4, 4);
            s.write_slice(&[1u32; 4]).unwrap();
            let ring = s.history.as_ref().unwrap();
            let g = s.lock(Some(Duration::from_secs(1))).unwrap();
            let mut b = crate::seqlock::begin_write(&s.header);
            b.count_ahead(&s.header, 2);
            let mut c = if stamped {
                let index = append_up_to_the_even_stamp(ring, 2, 2, 2);
                let c = s.cursor().unwrap();
                ring.head().store(index + 1, Ordering::Release);
                c
            } else {
                let (append, frame) = start_append(ring);
                let c = s.cursor().unwrap();
                // SAFETY: the slot's frame holds 4 u32s, 64-byte aligned; we hold the lock
                // and its stamp is odd.
                unsafe { std::ptr::copy_nonoverlapping([2u32; 4].as_ptr(), frame.cast(), 4) };
                ring.finish_append(append, 2, 2, 0.0, |n| b.count_ahead(&s.header, n));
                c
            };
            crate::seqlock::end_write(&s.header, b, 0.0, Some(2));
            drop(g);
            s.write_slice(&[3u32; 4]).unwrap();
            let expected: &[&str] = if stamped {
                &["frame 3"]
            } else {
                &["frame 2", "frame 3"]
            };
            assert_eq!(drain(&mut c), expected, "stamped {stamped}");
            drop(s);
            crate::unlink(&name).unwrap();
        }
    }

    /// A new cursor that stepped past a frame published before it (left at the head), or
    /// whose first frame may carry its starting count (made inside an append), then lapped
    /// before its first call: it reports as lost exactly the frames appended after it that
    /// the ring no longer holds, and returns the rest, none refused (returned + lost = the
    /// frames written after it).
    #[test]
    fn a_new_cursor_lapped_before_its_first_call_loses_only_frames_after_it() {
        for inside in [false, true] {
            let (name, s) = stream(&format!("lapped-new-{inside}"), 4, 4);
            let ring = s.history.as_ref().unwrap();
            let g = s.lock(Some(Duration::from_secs(1))).unwrap();
            let mut b = crate::seqlock::begin_write(&s.header);
            b.count_ahead(&s.header, 1);
            let mut c = if inside {
                let (append, _) = start_append(ring);
                let c = s.cursor().unwrap();
                ring.finish_append(append, 1, 1, 0.0, |n| b.count_ahead(&s.header, n));
                crate::seqlock::end_write(&s.header, b, 0.0, Some(1));
                c
            } else {
                // The writer killed after its even stamp: its bracket stays open.
                append_up_to_the_even_stamp(ring, 9, 1, 1);
                s.cursor().unwrap()
            };
            drop(g);
            for i in 2..=7u32 {
                s.write_slice(&[i; 4]).unwrap();
            }
            let expected = if inside {
                // Frames 1 to 7 after it, 3 of them overwritten.
                [
                    "lost 3 Overwritten",
                    "frame 4",
                    "frame 5",
                    "frame 6",
                    "frame 7",
                ]
            } else {
                // Frames 2 to 7 after it, 2 of them overwritten.
                [
                    "lost 2 Overwritten",
                    "frame 4",
                    "frame 5",
                    "frame 6",
                    "frame 7",
                ]
            };
            assert_eq!(drain(&mut c), expected, "inside {inside}");
            drop(s);
            crate::unlink(&name).unwrap();
        }
    }

    /// A frame left complete at the head by a writer killed before its head store is one a
    /// new cursor steps past, until the next writer recovers past it (its odd stamp in the
    /// slot after it, here the same slot: a ring of one; the head's move perhaps not seen
    /// yet): then the look is taken again. Stepping nowhere there, the cursor reported that
    /// frame lost.
    #[test]
    fn a_look_that_sees_the_next_writer_recover_past_the_head_is_taken_again() {
        let (name, s) = stream("recovering", 4, 1);
        let ring = s.history.as_ref().unwrap();
        let index = kill_after_the_even_stamp(&s, true);
        assert_eq!((index, ring.appended()), (0, 0));
        assert_eq!(Cursor::published_before(ring, 0, 1), Some(true));
        // The slot taken, the head's move not seen yet (the head loaded again just before it,
        // or the odd stamp seen first on a weakly ordered CPU).
        let slot = ring.word(ring.slot_at(1) + off::STAMP);
        slot.store(writing_stamp(1), Ordering::Relaxed);
        assert_eq!(ring.appended(), 0);
        assert_eq!(Cursor::published_before(ring, 0, 1), None);
        assert!(matches!(Cursor::from_look(&s, ring, 0, 1), Err(1)));
        drop(s);
        crate::unlink(&name).unwrap();
    }

    /// Past a frame it stepped over (published before it), a new cursor refuses a frame
    /// counted at its starting count (planted: the next writer counts past it), rather than
    /// returning it as its first frame.
    #[test]
    fn past_a_frame_a_new_cursor_stepped_over_a_repeat_of_its_count_is_refused() {
        let (name, s) = stream("stepped-repeat", 4, 4);
        let ring = s.history.as_ref().unwrap();
        kill_after_the_even_stamp(&s, true);
        let mut c = s.cursor().unwrap();
        let g = s.lock(Some(Duration::from_secs(1))).unwrap();
        let index = append_up_to_the_even_stamp(ring, 6, 1, 8);
        ring.head().store(index + 1, Ordering::Release);
        drop(g);
        assert_refused(&mut c, "frame 1 is counted 1 where a count above 1 is due");
        drop(s);
        crate::unlink(&name).unwrap();
    }

    /// Asserts that the cursor's next frame is refused as counted behind, saying `said`.
    fn assert_refused(c: &mut Cursor<'_>, said: &str) {
        let e = c
            .next_into_slice(&mut [0u32; 4], Some(Duration::from_secs(1)))
            .unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(&e, Error::InvalidHistory { .. }) && text.contains(said),
            "{text}"
        );
    }

    /// A new cursor made inside an append whose frame is planted with a count below the one
    /// the cursor started from refuses it, saying the count due.
    #[test]
    fn a_new_cursors_first_frame_counted_below_its_start_is_refused() {
        let (name, s) = stream("first-below", 4, 4);
        s.write_slice(&[1u32; 4]).unwrap();
        let ring = s.history.as_ref().unwrap();
        let g = s.lock(Some(Duration::from_secs(1))).unwrap();
        let mut b = crate::seqlock::begin_write(&s.header);
        b.count_ahead(&s.header, 2);
        let (append, _) = start_append(ring);
        let mut c = s.cursor().unwrap();
        assert_eq!(c.expect, NextCount::AtLeast);
        ring.finish_append(append, 2, 2, 0.0, |n| b.count_ahead(&s.header, n));
        ring.word(ring.slot_at(1) + off::COUNT)
            .store(1, Ordering::Relaxed);
        crate::seqlock::end_write(&s.header, b, 0.0, Some(2));
        drop(g);
        assert_refused(
            &mut c,
            "frame 1 is counted 1 where a count of at least 2 is due",
        );
        drop(s);
        crate::unlink(&name).unwrap();
    }

    /// A ring whose slot at the head carries a later lap's stamp (planted) fails every look:
    /// the cursor is still made, after [`START_LOOKS`] (not at the first failed look, which
    /// a writer appending at that instant makes fail too), taking its first frame whatever
    /// its count, and the next call reports what the slot's stamp says was overwritten. A
    /// look that holds is the only one.
    #[test]
    fn a_cursor_every_look_of_which_fails_is_still_made() {
        let (name, s) = stream("looks-fail", 4, 4);
        s.write_slice(&[1u32; 4]).unwrap();
        LOOKS.set(0);
        let _ = s.cursor().unwrap();
        assert_eq!(LOOKS.get(), 1, "a look that holds");
        s.write_slice(&[2u32; 4]).unwrap();
        let ring = s.history.as_ref().unwrap();
        ring.word(ring.slot_at(2) + off::STAMP)
            .store(written_stamp(6), Ordering::Release);
        LOOKS.set(0);
        let mut c = s.cursor().unwrap();
        assert_eq!(LOOKS.get(), START_LOOKS);
        assert_eq!(
            (c.next, c.last_count, c.expect),
            (2, Some(2), NextCount::Any)
        );
        assert_eq!(drain(&mut c), ["lost 1 Overwritten"]);
        drop(s);
        crate::unlink(&name).unwrap();
    }

    /// A look whose count was loaded after appends past the head it loaded (a cursor
    /// preempted between the two loads) is taken again: from it, the cursor would step past
    /// one of those frames and refuse the next, counted below the count it started from. The
    /// cursor made now returns none of them, and the next frame written.
    #[test]
    fn a_look_whose_count_ran_past_its_head_is_taken_again() {
        let (name, s) = stream("look-again", 4, 4);
        let ring = s.history.as_ref().unwrap();
        s.write_slice(&[1u32; 4]).unwrap();
        let head = ring.appended();
        for i in 2..=4u32 {
            s.write_slice(&[i; 4]).unwrap();
        }
        let count = s.header.count().load(Ordering::Acquire);
        assert_eq!((head, count), (1, 4));
        assert!(matches!(Cursor::from_look(&s, ring, head, count), Err(4)));
        let mut c = s.cursor().unwrap();
        s.write_slice(&[5u32; 4]).unwrap();
        assert_eq!(drain(&mut c), ["frame 5"]);
        drop(s);
        crate::unlink(&name).unwrap();
    }

    /// Cursors made while a writer in another thread appends as fast as it can, into rings
    /// of 1 and 4 frames: whichever window of an append each is made in, none refuses a
    /// frame as counted behind (a cursor whose count ran ahead of the head it loaded would),
    /// and the frames each returns are counted strictly rising.
    #[test]
    fn cursors_made_under_a_writer_at_full_speed_never_refuse_its_frames() {
        use std::sync::atomic::AtomicBool;
        for depth in [1, 4] {
            let (name, s) = stream(&format!("race-start-{depth}"), 4, depth);
            let stop = AtomicBool::new(false);
            std::thread::scope(|scope| {
                let writer = scope.spawn(|| {
                    let w = Stream::open(&name).unwrap();
                    let mut i = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        w.write_slice(&[i; 4]).unwrap();
                        i = i.wrapping_add(1);
                    }
                });
                // Stops the writer however this thread leaves the scope (a failed assertion
                // too), which would otherwise wait for it forever.
                struct StopOnDrop<'f>(&'f AtomicBool);
                impl Drop for StopOnDrop<'_> {
                    fn drop(&mut self) {
                        self.0.store(true, Ordering::Relaxed);
                    }
                }
                let stopper = StopOnDrop(&stop);
                let mut dst = [0u32; 4];
                for _ in 0..2000 {
                    let before = s.count();
                    let mut c = s.cursor().unwrap();
                    let after = s.count();
                    let (mut last, mut lost) = (None, 0);
                    for _ in 0..3 {
                        match c.next_into_slice(&mut dst, Some(Duration::from_secs(10))) {
                            Ok(info) => {
                                let n = info.count;
                                match last {
                                    // Each next frame follows the one before and those lost.
                                    Some(l) => assert_eq!(n, l + 1 + lost, "depth {depth}"),
                                    // The first: written once the cursor was being made.
                                    None => assert!(
                                        (before..=after + 1 + lost).contains(&n),
                                        "depth {depth}: first frame {n}, counts {before} and {after} around the cursor's making, {lost} lost"
                                    ),
                                }
                                (last, lost) = (Some(n), 0);
                            }
                            Err(Error::Overrun {
                                lost: n,
                                cause: LossCause::Overwritten,
                                ..
                            }) => lost += n,
                            Err(e) => panic!("depth {depth}: {e}"),
                        }
                    }
                }
                drop(stopper);
                writer.join().unwrap();
            });
            drop(s);
            crate::unlink(&name).unwrap();
        }
    }

    /// An append of a 4-`u32` frame of `value`s stopped after its slot's even stamp, before
    /// its head store (as a writer is for an instant, or one killed there leaves it); returns
    /// its index. The caller holds the write lock.
    fn append_up_to_the_even_stamp(ring: &Ring, value: u32, count: u64, frame_id: u64) -> u64 {
        let (Append { index, slot, .. }, frame) = start_append(ring);
        for i in 0..4 {
            // SAFETY: the slot holds 4 u32s (the stream's frame), 64-byte aligned; the caller
            // holds the write lock and the slot's stamp is odd.
            unsafe { frame.cast::<u32>().add(i).write(value) };
        }
        ring.word(slot + off::COUNT).store(count, Ordering::Relaxed);
        ring.word(slot + off::FRAME_ID)
            .store(frame_id, Ordering::Relaxed);
        ring.word(slot + off::STAMP)
            .store(written_stamp(index), Ordering::Release);
        index
    }

    /// The first frame of `s` (9s, count 1, frame id 7) left by a writer killed after its
    /// slot's even stamp and before its head store, its bracket left open, the header's count
    /// stored ahead (this version) or not (`ahead` false: an earlier one); returns its index.
    fn kill_after_the_even_stamp(s: &Stream, ahead: bool) -> u64 {
        let g = s.lock(Some(Duration::from_secs(1))).unwrap();
        let mut bracket = crate::seqlock::begin_write(&s.header);
        if ahead {
            bracket.count_ahead(&s.header, 1);
        }
        let index = append_up_to_the_even_stamp(s.history.as_ref().unwrap(), 9, 1, 7);
        drop(g);
        index
    }

    /// A publication that does not append to the ring, as pyshmem's: under the lock, a
    /// bracket that moves the header's count alone.
    fn publish_without_ring(s: &Stream, frame_id: u64) {
        let g = s.lock(Some(Duration::from_secs(1))).unwrap();
        let b = crate::seqlock::begin_write(&s.header);
        crate::seqlock::end_write(&s.header, b, 0.0, Some(frame_id));
        drop(g);
    }

    /// What a cursor returns until it times out: `frame <count>` and `lost <n> <cause>`.
    /// These tests write a few dozen frames at most: a cursor that goes on returning (a loss
    /// reported again and again, never moving past it) fails here rather than filling memory.
    fn drain(c: &mut Cursor<'_>) -> Vec<String> {
        let mut events = vec![];
        loop {
            assert!(events.len() < 1000, "no end of events: {:?}", &events[..8]);
            match c.next_into_slice(&mut [0u32; 4], Some(Duration::from_millis(20))) {
                Ok(info) => events.push(format!("frame {}", info.count)),
                Err(Error::Overrun { lost, cause, .. }) => {
                    events.push(format!("lost {lost} {cause:?}"))
                }
                Err(Error::Timeout { .. }) => return events,
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Publications that skip the ring are reported when no ring frame follows them, by a
    /// cursor of every wait strategy, made before any write or after some; and one waiting
    /// when they land reports them. They used to be reported only once a ring frame came.
    #[test]
    fn publications_that_skip_the_ring_are_reported_with_no_ring_frame_after_them() {
        for (tag, strategy) in [
            ("skip-spin", WaitStrategy::Spin),
            ("skip-adaptive", WaitStrategy::Adaptive),
            ("skip-park", WaitStrategy::Park),
            ("skip-yield", WaitStrategy::Yield),
        ] {
            let (name, s) = stream(tag, 4, 4);
            s.set_wait_strategy(strategy);
            let mut fresh = s.cursor().unwrap();
            publish_without_ring(&s, 1);
            publish_without_ring(&s, 2);
            assert_eq!(drain(&mut fresh), ["lost 2 NotRecorded"], "{strategy:?}");
            s.write_slice(&[3u32; 4]).unwrap();
            let mut later = s.cursor().unwrap();
            publish_without_ring(&s, 4);
            assert_eq!(
                drain(&mut fresh),
                ["frame 3", "lost 1 NotRecorded"],
                "{strategy:?}"
            );
            assert_eq!(drain(&mut later), ["lost 1 NotRecorded"], "{strategy:?}");
            let (_, waited) = while_waiting(later, || publish_without_ring(&s, 5));
            assert!(
                matches!(
                    waited,
                    Err(Error::Overrun {
                        lost: 1,
                        cause: LossCause::NotRecorded,
                        ..
                    })
                ),
                "{strategy:?}: {waited:?}"
            );
            drop(s);
            crate::unlink(&name).unwrap();
        }
    }

    /// A cursor a whole ring behind (its next frame the oldest kept) has lost nothing yet:
    /// it returns every frame; one frame more and the oldest is lost.
    #[test]
    fn a_cursor_a_whole_ring_behind_returns_every_frame() {
        let (name, s) = stream("whole-ring", 4, 4);
        let mut full = s.cursor().unwrap();
        let mut past = s.cursor().unwrap();
        for i in 1..=4u32 {
            s.write_slice(&[i; 4]).unwrap();
        }
        assert_eq!(
            drain(&mut full),
            ["frame 1", "frame 2", "frame 3", "frame 4"]
        );
        s.write_slice(&[5u32; 4]).unwrap();
        assert_eq!(
            drain(&mut past),
            [
                "lost 1 Overwritten",
                "frame 2",
                "frame 3",
                "frame 4",
                "frame 5"
            ]
        );
        drop(s);
        crate::unlink(&name).unwrap();
    }

    /// Frames returned plus frames reported lost equal frames written across a lap over a
    /// publication that skipped the ring, and after a rewind to the start: the lap used to
    /// forget the last count, and with it the gap check of the next frame.
    #[test]
    fn a_publication_that_skipped_the_ring_inside_a_lapped_region_is_counted_lost() {
        let (name, s) = stream("skip-lap", 4, 2);
        let mut c = s.cursor().unwrap();
        s.write_slice(&[1u32; 4]).unwrap();
        publish_without_ring(&s, 2);
        for i in 3..=5u32 {
            s.write_slice(&[i; 4]).unwrap();
        }
        let expected = [
            "lost 2 Overwritten",
            "lost 1 NotRecorded",
            "frame 4",
            "frame 5",
        ];
        assert_eq!(drain(&mut c), expected);
        c.rewind_to_start();
        assert_eq!(drain(&mut c), expected, "rewound to the start");
        drop(s);
        crate::unlink(&name).unwrap();
    }

    /// A writer killed between its slot's even stamp and its head store: a cursor waiting on
    /// the slot returns that frame, and the next writer's frame after it, counted past it
    /// (the two shared a count, and cursors returned both).
    #[test]
    fn a_frame_finished_by_a_writer_killed_before_its_head_store_is_kept() {
        let (name, s) = stream("stamp-no-head", 4, 4);
        let mut c = s.cursor().unwrap();
        let mut dst = [0u32; 4];
        let ring = s.history.as_ref().unwrap();
        let g = s.lock(Some(Duration::from_secs(1))).unwrap();
        // The killed writer: its bracket stays open, its append stops after the even stamp.
        let _bracket = crate::seqlock::begin_write(&s.header);
        append_up_to_the_even_stamp(ring, 9, 1, 7);
        drop(g);
        let first = c
            .next_into_slice(&mut dst, Some(Duration::from_secs(1)))
            .unwrap();
        assert_eq!((first.frame_id, dst), (7, [9; 4]));
        s.write_slice_frame(&[5u32; 4], 8).unwrap();
        let next = c.next_into_slice(&mut dst, Some(Duration::from_secs(1)));
        assert!(
            matches!(
                next,
                Ok(FrameInfo {
                    frame_id: 8,
                    count: 2,
                    ..
                })
            ),
            "{next:?}, after count {}",
            first.count
        );
        assert_eq!((dst, s.count()), ([5; 4], 2));
        drop(s);
        crate::unlink(&name).unwrap();
    }

    /// A writer killed after its append (head stored) and before its publication ended: the
    /// next frame is counted past the one the ring kept, so a cursor returns two frames of
    /// two counts (they shared one, breaking returned + lost = written). Whether the killed
    /// writer stored the frame's count in the header ahead (this version) or not (an
    /// earlier one, which stamped it at the end).
    #[test]
    fn a_frame_appended_by_a_writer_killed_before_its_count_stamp_is_counted_past() {
        for (tag, ring_first, ahead) in [
            ("count-ring-first", true, true),
            ("count-payload-first", false, true),
            ("count-ring-first-old", true, false),
            ("count-payload-first-old", false, false),
        ] {
            let (name, s) = stream(tag, 4, 4);
            let mut c = s.cursor().unwrap();
            let ring = s.history.as_ref().unwrap();
            let g = s.lock(Some(Duration::from_secs(1))).unwrap();
            // The killed writer: its bracket stays open after a whole append of count 1.
            let mut bracket = crate::seqlock::begin_write(&s.header);
            let (append, _) = start_append(ring);
            ring.finish_append(append, 1, 7, 0.0, |c| {
                if ahead {
                    bracket.count_ahead(&s.header, c);
                }
            });
            assert_eq!((ring.appended(), s.count()), (1, u64::from(ahead)), "{tag}");
            // The next writer: a ring-first write, or a view (ring after the payload).
            if ring_first {
                g.write_slice_frame(&[5u32; 4], 8).unwrap();
            } else {
                g.write_view_frame(8, |b: &mut [u32]| {
                    b.fill(5);
                    Ok::<_, Error>(())
                })
                .unwrap();
            }
            drop(g);
            let counts: Vec<(u64, u64)> = (0..2)
                .map(|_| {
                    let f = c
                        .next_into_slice(&mut [0u32; 4], Some(Duration::from_secs(1)))
                        .unwrap();
                    (f.count, f.frame_id)
                })
                .collect();
            assert_eq!(counts, [(1, 7), (2, 8)], "{tag}");
            assert_eq!(s.count(), 2, "{tag}");
            assert_eq!(s.read_publication::<u32>().unwrap().info.count, 2, "{tag}");
            drop(s);
            crate::unlink(&name).unwrap();
        }
    }

    /// A writer killed after its append and before its publication ended, then a writer that
    /// does not append (pyshmem, which stamps the header's `count + 1`): the killed writer's
    /// frame, which the cursor returns, and pyshmem's, reported lost, have counts of their
    /// own. The header's count used to lag the ring's frame there, so pyshmem's frame got
    /// the same count, and was neither returned nor reported. Killed after its head store
    /// (`finish_append`), or between its slot's even stamp and its head store.
    #[test]
    fn a_pyshmem_frame_after_a_writer_killed_past_its_append_is_reported_lost() {
        for (tag, head_stored) in [
            ("killed-pyshmem-head", true),
            ("killed-pyshmem-stamp", false),
        ] {
            let (name, s) = stream(tag, 4, 4);
            let mut c = s.cursor().unwrap();
            let ring = s.history.as_ref().unwrap();
            let g = s.lock(Some(Duration::from_secs(1))).unwrap();
            // The killed writer: its bracket stays open after its frame of count 1 is in the
            // ring, as this version's writer leaves it.
            let mut bracket = crate::seqlock::begin_write(&s.header);
            if head_stored {
                let (append, _) = start_append(ring);
                ring.finish_append(append, 1, 7, 0.0, |c| bracket.count_ahead(&s.header, c));
            } else {
                // What `finish_append` does up to the even stamp, the header's count included.
                bracket.count_ahead(&s.header, 1);
                append_up_to_the_even_stamp(ring, 9, 1, 7);
            }
            drop(g);
            publish_without_ring(&s, 8);
            assert_eq!(drain(&mut c), ["frame 1", "lost 1 NotRecorded"], "{tag}");
            assert_eq!(s.count(), 2, "{tag}");
            // A writer after them both goes on counting.
            s.write_slice_frame(&[5u32; 4], 9).unwrap();
            assert_eq!(drain(&mut c), ["frame 3"], "{tag}");
            drop(s);
            crate::unlink(&name).unwrap();
        }
    }

    /// A consumer that skips ahead after a lap keeps counting: publications that never
    /// entered the ring, inside the region it skipped, are reported before the next frame
    /// (skipping forgot the last count, and returned + lost fell short of written).
    #[test]
    fn a_skip_ahead_after_a_lap_still_reports_publications_that_skipped_the_ring() {
        let (name, s) = stream("skip-ahead", 4, 4);
        let mut c = s.cursor().unwrap();
        for i in 1..=5u32 {
            s.write_slice(&[i; 4]).unwrap();
        }
        publish_without_ring(&s, 6);
        for i in 7..=10u32 {
            s.write_slice(&[i; 4]).unwrap();
        }
        let lapped = c.next_into_slice(&mut [0u32; 4], Some(Duration::from_secs(1)));
        assert!(
            matches!(
                lapped,
                Err(Error::Overrun {
                    lost: 5,
                    cause: LossCause::Overwritten,
                    ..
                })
            ),
            "{lapped:?}"
        );
        assert_eq!(c.skip_to_recent(2), 2);
        // 5 lost + 2 skipped + 1 not recorded + 2 returned = 10 written.
        assert_eq!(drain(&mut c), ["lost 1 NotRecorded", "frame 9", "frame 10"]);
        drop(s);
        crate::unlink(&name).unwrap();
    }

    /// `skip` moves past the frames ahead without copying them, never past the newest
    /// written, and a frame counted after the skipped ones is returned as the next.
    #[test]
    fn a_skip_passes_frames_ahead_and_stops_at_the_newest() {
        let (name, s) = stream("skip-n", 4, 8);
        let mut c = s.cursor().unwrap();
        for i in 1..=5u32 {
            s.write_slice(&[i; 4]).unwrap();
        }
        assert_eq!(c.skip(0), 0);
        assert_eq!(c.skip(2), 2);
        assert_eq!(c.lag(), 3);
        assert_eq!(drain(&mut c), ["frame 3", "frame 4", "frame 5"]);
        s.write_slice(&[6u32; 4]).unwrap();
        assert_eq!(c.skip(10), 1, "only the one frame ahead");
        assert_eq!(c.skip(1), 0, "none ahead");
        s.write_slice(&[7u32; 4]).unwrap();
        assert_eq!(drain(&mut c), ["frame 7"]);
        drop(s);
        crate::unlink(&name).unwrap();
    }

    /// After publications that skipped the ring a consumer reads on: the frames after them
    /// are still held (it skipped ahead as after a lap, losing frames it could still read);
    /// after a lap it skips ahead.
    #[test]
    fn only_a_lap_makes_a_consumer_skip_ahead() {
        let drain_skipping = |c: &mut Cursor<'_>| {
            let mut events = vec![];
            let mut dst = [0u32; 4];
            loop {
                match c.next_into_slice(&mut dst, Some(Duration::from_millis(20))) {
                    Ok(info) => events.push(format!("frame {}", info.count)),
                    Err(Error::Overrun { lost, cause, .. }) => {
                        let skipped = c.skip_after_overrun(cause);
                        events.push(format!("lost {lost} {cause:?}, skipped {skipped}"));
                    }
                    Err(Error::Timeout { .. }) => return events,
                    Err(e) => panic!("{e}"),
                }
            }
        };
        let (name, s) = stream("skip-cause", 4, 8);
        let mut c = s.cursor().unwrap();
        // Count 1 never enters the ring; counts 2-9 fill its 8 slots, none overwritten.
        publish_without_ring(&s, 1);
        for i in 2..=9u32 {
            s.write_slice(&[i; 4]).unwrap();
        }
        let frames: Vec<String> = (2..=9).map(|n| format!("frame {n}")).collect();
        let mut expected = vec!["lost 1 NotRecorded, skipped 0".to_owned()];
        expected.extend(frames);
        assert_eq!(drain_skipping(&mut c), expected);
        // A lap: counts 10-21 over the 8 slots, 4 overwritten, then 1 skipped to keep 7 ahead.
        for i in 10..=21u32 {
            s.write_slice(&[i; 4]).unwrap();
        }
        let lapped = drain_skipping(&mut c);
        assert_eq!(lapped[0], "lost 4 Overwritten, skipped 1");
        assert_eq!(
            lapped[1..],
            (15..=21).map(|n| format!("frame {n}")).collect::<Vec<_>>()
        );
        drop(s);
        crate::unlink(&name).unwrap();
        // A ring under 8 deep (an eighth of it is no frame) still gets a frame of slack.
        let (name, s) = stream("skip-small", 4, 4);
        let mut c = s.cursor().unwrap();
        for i in 1..=10u32 {
            s.write_slice(&[i; 4]).unwrap();
        }
        let lapped = drain_skipping(&mut c);
        assert_eq!(lapped[0], "lost 6 Overwritten, skipped 1");
        assert_eq!(
            lapped[1..],
            (8..=10).map(|n| format!("frame {n}")).collect::<Vec<_>>()
        );
        drop(s);
        crate::unlink(&name).unwrap();
    }

    /// A poll with no time to wait reports publications that skipped the ring, as a wait
    /// does (it timed out before looking for them, so a poller never saw them).
    #[test]
    fn a_poll_without_a_wait_reports_publications_that_skipped_the_ring() {
        let (name, s) = stream("skip-poll", 4, 4);
        let mut c = s.cursor().unwrap();
        publish_without_ring(&s, 1);
        publish_without_ring(&s, 2);
        let polled = c.next_into_slice(&mut [0u32; 4], Some(Duration::ZERO));
        assert!(
            matches!(
                polled,
                Err(Error::Overrun {
                    lost: 2,
                    cause: LossCause::NotRecorded,
                    ..
                })
            ),
            "{polled:?}"
        );
        let again = c.next_into_slice(&mut [0u32; 4], Some(Duration::ZERO));
        assert!(matches!(again, Err(Error::Timeout { .. })), "{again:?}");
        drop(s);
        crate::unlink(&name).unwrap();
    }

    /// A publication that skipped the ring is reported with an aborted write after it, or a
    /// dead writer's bracket, and no writer since: to a poll, and to a parked cursor. The
    /// cursor took the count under an even sequence only: the poll timed out, and the parked
    /// cursor waited out its deadline. The count a dead writer stored ahead of its unfinished
    /// append is reported once: the next writer counts past it.
    #[test]
    fn a_loss_before_an_aborted_or_dead_write_is_reported_with_no_writer_after_it() {
        let (name, s) = stream("skip-abort", 4, 4);
        s.set_wait_strategy(WaitStrategy::Park);
        let mut c = s.cursor().unwrap();
        publish_without_ring(&s, 1);
        let aborted = s.write_view(|_: &mut [u32]| Err::<(), _>(std::io::Error::other("x")));
        assert!(aborted.is_err() && s.write_sequence() < 0, "{aborted:?}");
        let mut poll = || c.next_into_slice(&mut [0u32; 4], Some(Duration::ZERO));
        let polled = poll();
        assert!(
            matches!(
                polled,
                Err(Error::Overrun {
                    lost: 1,
                    cause: LossCause::NotRecorded,
                    ..
                })
            ),
            "{polled:?}"
        );
        let again = poll();
        assert!(matches!(again, Err(Error::Timeout { .. })), "{again:?}");
        s.write_slice(&[2u32; 4]).unwrap();
        assert_eq!(drain(&mut c), ["frame 2"]);
        // A writer killed after storing its frame's count ahead, its slot still odd, found
        // dead while the cursor is parked.
        let ring = s.history.as_ref().unwrap();
        let (mut c, waited) = while_waiting(c, || {
            let g = s.lock(Some(Duration::from_secs(1))).unwrap();
            let mut dead = crate::seqlock::begin_write(&s.header);
            let _ = start_append(ring);
            dead.count_ahead(&s.header, 3);
            drop(g);
            crate::seqlock::invalidate_abandoned(&s.header, s.write_sequence());
        });
        assert!(
            matches!(
                waited,
                Err(Error::Overrun {
                    lost: 1,
                    cause: LossCause::NotRecorded,
                    ..
                })
            ),
            "{waited:?}"
        );
        s.write_slice(&[4u32; 4]).unwrap();
        assert_eq!(drain(&mut c), ["frame 4"]);
        drop(s);
        crate::unlink(&name).unwrap();
    }

    /// A cursor waiting for the next writer after an aborted write returns that writer's
    /// frame when it comes (its wake ends the wait, which goes round to read it), within
    /// its deadline; it does not take the wake for the deadline.
    #[test]
    fn a_cursor_waiting_past_an_aborted_write_returns_the_next_writers_frame() {
        let (name, s) = stream("abort-then-frame", 4, 4);
        s.set_wait_strategy(WaitStrategy::Park);
        let mut c = s.cursor().unwrap();
        s.write_slice(&[1u32; 4]).unwrap();
        assert_eq!(drain(&mut c), ["frame 1"]);
        let aborted = s.write_view(|_: &mut [u32]| Err::<(), _>(std::io::Error::other("x")));
        assert!(aborted.is_err() && s.write_sequence() < 0, "{aborted:?}");
        let (_, waited) = while_waiting(c, || s.write_slice(&[2u32; 4]).unwrap());
        assert_eq!(waited.as_ref().map(|f| f.count).ok(), Some(2), "{waited:?}");
        drop(s);
        crate::unlink(&name).unwrap();
    }

    /// A cursor waiting for the next writer after an aborted write looks at the stream's
    /// file at the rate of the generation checks: it looked at every pause (two `fstat`s,
    /// thousands a second when yielding). It still notices an unlink.
    #[test]
    fn a_cursor_past_an_aborted_write_looks_at_the_file_at_the_rate_limit() {
        for strategy in [WaitStrategy::Yield, WaitStrategy::Park] {
            let (name, s) = stream(&format!("abort-rate-{strategy:?}"), 4, 4);
            s.set_wait_strategy(strategy);
            let mut c = s.cursor().unwrap();
            s.write_slice(&[1u32; 4]).unwrap();
            assert_eq!(drain(&mut c), ["frame 1"]);
            let aborted = s.write_view(|_: &mut [u32]| Err::<(), _>(std::io::Error::other("x")));
            assert!(aborted.is_err() && s.write_sequence() < 0, "{aborted:?}");
            let checks = || crate::stream::GENERATION_CHECKS.with(std::cell::Cell::get);
            let before = checks();
            let waited = c.next_into_slice(&mut [0u32; 4], Some(Duration::from_millis(30)));
            assert!(
                matches!(waited, Err(Error::Timeout { .. })),
                "{strategy:?}: {waited:?}"
            );
            let made = checks() - before;
            assert!(
                made <= 4,
                "{strategy:?}: {made} looks at the file in a 30 ms wait"
            );
            crate::unlink(&name).unwrap();
            let waited = c.next_into_slice(&mut [0u32; 4], Some(Duration::from_secs(5)));
            assert!(
                matches!(waited, Err(Error::Stale { .. })),
                "{strategy:?}: {waited:?}"
            );
        }
    }

    /// A cursor asked for its next frame inside its own thread's fill is refused, whatever
    /// its wait strategy: the frame is the fill's own, unpublished (a spinning cursor spun
    /// until its deadline, holding the write lock all along).
    #[test]
    fn a_cursor_inside_its_own_fill_is_refused_whatever_it_waits_with() {
        for (tag, strategy) in [
            ("fill-spin", WaitStrategy::Spin),
            ("fill-adaptive", WaitStrategy::Adaptive),
            ("fill-park", WaitStrategy::Park),
        ] {
            let (name, s) = stream(tag, 4, 4);
            s.set_wait_strategy(strategy);
            let mut c = s.cursor().unwrap();
            let inside = s
                .write_view(|_: &mut [u32]| {
                    Ok::<_, Error>(c.next_into_slice(&mut [0u32; 4], Some(Duration::from_secs(5))))
                })
                .unwrap();
            assert!(
                matches!(inside, Err(Error::Unsupported { .. })),
                "{strategy:?}: {inside:?}"
            );
            drop(s);
            crate::unlink(&name).unwrap();
        }
    }
}
