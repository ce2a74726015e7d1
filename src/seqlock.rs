//! The publication protocol over the mapped header (pyshmem's seqlock, with real atomics).
//!
//! The sequence word is even when the payload is stable, odd while a writer is inside the
//! write bracket, and negative when the last write was aborted or its writer died
//! ("invalid generation"). Writers are serialized by the write lock; readers never lock.
//!
//! Shape after crossbeam-utils' `seq_lock.rs`:
//! - writer: [`begin_write`] stores the odd value, then `fence(Release)` so no payload store
//!   can become visible before it; [`end_write`] stores the metadata and then the next even
//!   value with `Release`, so every payload and metadata store happens-before any reader that
//!   acquires that even value; [`abort_write`] publishes the negative value instead.
//! - reader: [`optimistic_read`] loads the sequence with `Acquire` (synchronizes with the
//!   `Release` store in `end_write`), the caller copies, then [`validate_read`] runs
//!   `fence(Acquire)` and reloads with `Relaxed`: if the value is unchanged no write
//!   overlapped the copy.
//!
//! The copy itself races with a writer that starts meanwhile. Like crossbeam's
//! `AtomicCell::atomic_load` we accept that compromise: the racy bytes are copied into the
//! caller's buffer and are only *used* after [`validate_read`] proves no writer touched them
//! (bytes that must be valid for their type, `bool`, are checked element by element).
//! The memory is shared with other processes that Rust cannot see, so the copy is a plain
//! `memcpy` from a raw pointer, never a Rust reference into the mapping.

use std::sync::atomic::{Ordering, fence};

use crate::header::MappedHeader;

/// What a reader found when it looked at the sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Observed {
    /// Stable at this (even) value: copy, then validate against it.
    Stable(i64),
    /// A writer is inside the bracket (odd value).
    Writing(i64),
    /// The last write was aborted or its writer died (negative value).
    Invalid(i64),
}

/// Loads the sequence for a read attempt.
#[inline]
pub(crate) fn optimistic_read(h: &MappedHeader) -> Observed {
    // Acquire: synchronizes with the Release store in `end_write` (and `abort_write`).
    let s = h.sequence().load(Ordering::Acquire);
    if s < 0 {
        Observed::Invalid(s)
    } else if s & 1 == 1 {
        Observed::Writing(s)
    } else {
        Observed::Stable(s)
    }
}

/// True when no write overlapped the copy made since `optimistic_read` returned `stamp`.
#[inline]
pub(crate) fn validate_read(h: &MappedHeader, stamp: i64) -> bool {
    // The fence orders the payload loads before the reload; paired with the writer's
    // `fence(Release)` after its odd store, a copy that saw any byte of a new write also
    // sees the odd (or later) sequence here.
    fence(Ordering::Acquire);
    h.sequence().load(Ordering::Relaxed) == stamp
}

/// A write in progress (between the odd and the even store). Must end in `end_write` or
/// `abort_write`.
#[derive(Debug)]
#[must_use]
pub(crate) struct Bracket {
    odd: i64,
    /// The count [`Bracket::count_ahead`] stored, which the end then leaves as it is.
    counted: Option<u64>,
}

/// The generation a sequence value stands for (its magnitude: valid, aborted or invalid
/// alike), capped 3 below `i64::MAX` so that the odd and even values after it, and its
/// negation, never overflow, whatever a corrupt or hostile header holds.
#[inline]
pub(crate) fn generation(s: i64) -> i64 {
    s.unsigned_abs().min((i64::MAX - 3) as u64) as i64
}

/// The odd value a write after sequence `s` stores: the next beyond its generation, or 1
/// again once the generation reached the cap (a hostile header can put it there). Every
/// write must change the sequence, else a reader whose copy overlapped a whole write would
/// find the same value on both sides of it and accept a torn frame.
#[inline]
fn next_odd(s: i64) -> i64 {
    match generation(s) {
        a if a >= i64::MAX - 3 => 1,
        a if a & 1 == 1 => a + 2,
        a => a + 1,
    }
}

/// Starts a write. The caller holds the write lock.
///
/// A negative sequence (aborted write) or an odd one (a writer that died without anybody
/// marking it) is recovered here: the new write fully replaces the payload, so it starts the
/// next odd value beyond it. (pyshmem 1.4.0 starts an *even* value after an unmarked odd one,
/// which leaves the stream odd at rest until a shmstream reader or writer marks it; we don't.)
#[inline]
pub(crate) fn begin_write(h: &MappedHeader) -> Bracket {
    // Relaxed: the host stores of the sequence are the lock holder's, and taking the lock
    // ordered us after the previous holder's. A GPU-side publication's even value is stored
    // by its CUDA stream after that writer released the lock; `gpu::begin_publication`,
    // called before this, waits for that landing with Acquire loads of the sequence (or
    // judges its publisher dead), so this load reads it or a later value.
    let s = h.sequence().load(Ordering::Relaxed);
    let odd = next_odd(s);
    h.sequence().store(odd, Ordering::Relaxed);
    // Keeps the payload stores that follow from becoming visible before the odd value.
    fence(Ordering::Release);
    Bracket { odd, counted: None }
}

/// Publishes the write: metadata, count (unless [`Bracket::count_ahead`] stored it), then
/// the even sequence (Release).
#[inline]
pub(crate) fn end_write(
    h: &MappedHeader,
    b: Bracket,
    write_time: f64,
    frame_id: Option<u64>,
) -> u64 {
    let count = stamp_bracket(h, &b, write_time, frame_id);
    end_write_even(h, b);
    count
}

/// Stores the even value of a bracket whose metadata [`stamp`] already stored.
#[inline]
pub(crate) fn end_write_even(h: &MappedHeader, b: Bracket) {
    // Release: synchronizes with the Acquire load in `optimistic_read`.
    h.sequence().store(b.even(), Ordering::Release);
}

/// Stores the write's metadata and count while the sequence is still odd (readers trust
/// neither before the even value). [`end_write`] then stores the even value; a GPU-side
/// publication has its CUDA stream store it ([`Bracket::even`]) once the payload is written.
#[inline]
pub(crate) fn stamp(h: &MappedHeader, write_time: f64, frame_id: Option<u64>) -> u64 {
    stamp_metadata(h, write_time, frame_id);
    // `Stream::publish_locked` refused a count with no next value before the bracket.
    let count = h.count().load(Ordering::Relaxed).wrapping_add(1);
    h.count().store(count, Ordering::Relaxed);
    count
}

/// [`stamp`] for the bracket `b`: the count is left as it is where
/// [`Bracket::count_ahead`] already stored it (a history append), so a publication moves
/// the count once. Returns the publication's count.
#[inline]
pub(crate) fn stamp_bracket(
    h: &MappedHeader,
    b: &Bracket,
    write_time: f64,
    frame_id: Option<u64>,
) -> u64 {
    match b.counted {
        Some(count) => {
            stamp_metadata(h, write_time, frame_id);
            count
        }
        None => stamp(h, write_time, frame_id),
    }
}

/// Stores the write time and the frame id (if given), while the sequence is odd.
#[inline]
fn stamp_metadata(h: &MappedHeader, write_time: f64, frame_id: Option<u64>) {
    h.write_time()
        .store(write_time.to_bits(), Ordering::Relaxed);
    if let Some(f) = frame_id {
        h.frame_id().store(f, Ordering::Relaxed);
    }
}

impl Bracket {
    /// The even value that ends this bracket.
    pub(crate) fn even(&self) -> i64 {
        self.odd + 1
    }

    /// Stores this publication's count now, inside the bracket (readers trust no count while
    /// the sequence is odd); the end then stores no second count ([`stamp_bracket`]). A
    /// history append calls it before its frame becomes visible in the ring (its slot's even
    /// stamp): a writer killed after that leaves the header's count at its frame's, so the
    /// next writer, pyshmem's included (which stamps `count + 1`), counts past that frame
    /// and no two frames share a count.
    #[inline]
    pub(crate) fn count_ahead(&mut self, h: &MappedHeader, count: u64) {
        h.count().store(count, Ordering::Relaxed);
        self.counted = Some(count);
    }
}

/// Publishes the invalid generation for an abandoned bracket (pyshmem's `-max(seq, 1)`).
pub(crate) fn abort_write(h: &MappedHeader, b: Bracket) {
    h.sequence().store(-b.odd.max(1), Ordering::Release);
}

/// Marks an abandoned odd generation invalid, if it is still `observed`; returns whether it
/// did. A value already invalid is not claimed: another reader's mark, or an unlink's, which
/// the reader classifies when it reads it. The caller holds the write lock (so the dead
/// writer's bracket cannot be resumed by anyone).
///
/// A compare-and-swap, not a load then a store: a writer still on a removed lock file (one
/// the lock we took does not exclude) may publish in between, and its frame must not be
/// overwritten with the invalid value.
pub(crate) fn invalidate_abandoned(h: &MappedHeader, observed: i64) -> bool {
    observed > 0
        && observed & 1 == 1
        && h.sequence()
            .compare_exchange(observed, -observed, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
}

/// Tries [`count_at_open`] makes before it takes an unverified sample: each retry means a
/// publication landed between its loads, so a writer this fast publishes again soon.
const COUNT_SAMPLES: usize = 8;

/// The count a new handle starts from, sampled under the seqlock, and the even value that
/// will publish a write in progress at the sample (0 when none was).
///
/// Writers store the count while the sequence is still odd ([`stamp`]), so the count of a
/// write in progress may be the unpublished one: a handle that took it as "already seen"
/// would wait past that frame. The caller keeps the count and lets the even value, once
/// published with that same count, pass as new. Never waits for the writer: a GPU-side
/// publication, or a dead writer, can keep the sequence odd for long.
pub(crate) fn count_at_open(h: &MappedHeader) -> (u64, i64) {
    let mut sample = (0, 0);
    for _ in 0..COUNT_SAMPLES {
        let s = h.sequence().load(Ordering::Acquire);
        let count = h.count().load(Ordering::Relaxed);
        // (A hostile header's `i64::MAX` has no even value after it: no writer stores it.)
        let pending_even = match s {
            s if s > 0 && s & 1 == 1 => s.checked_add(1).unwrap_or(0),
            _ => 0,
        };
        sample = (count, pending_even);
        if validate_read(h, s) {
            break;
        }
    }
    sample
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::Mapping;

    #[test]
    fn generations_of_extreme_sequences_leave_room_for_the_next_write() {
        for s in [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX] {
            let g = generation(s);
            assert!((0..=i64::MAX - 3).contains(&g), "{s}: {g}");
            // The next odd and even values and the invalid mark all exist.
            let odd = next_odd(s);
            assert!(
                odd & 1 == 1 && odd.checked_add(1).is_some() && (-g.max(1)) < 0,
                "{s}"
            );
            // Each write stores values the last one did not.
            assert!(odd != s && odd + 1 != s, "{s}: {odd}");
        }
        // Writes from the cap restart low, so the sequence keeps changing.
        let (mut s, mut seen) = (i64::MAX - 1, vec![]);
        for _ in 0..4 {
            let odd = next_odd(s);
            assert!(!seen.contains(&(odd + 1)), "{seen:?} then {}", odd + 1);
            s = odd + 1;
            seen.push(s);
        }
        assert_eq!(seen, [2, 4, 6, 8]);
        // Below the cap, however high (a hostile header's), writes count on from it: only the
        // cap itself restarts the sequence.
        for s in [i64::MAX / 2, i64::MAX - 5, i64::MAX - 6] {
            let odd = next_odd(s);
            assert_eq!(odd, s + if s & 1 == 1 { 2 } else { 1 }, "{s}");
        }
        assert_eq!(next_odd(i64::MAX - 3), 1);
        assert_eq!(generation(-6), 6);
        assert_eq!(generation(7), 7);
    }

    /// A fresh header over an anonymous mapping (the protocol is the same over a shm
    /// object's), so Miri checks these tests too.
    fn header() -> (Mapping, MappedHeader) {
        let map = Mapping::anonymous(crate::format::META_BYTES);
        // SAFETY: `map` is returned with the header, and each test keeps it while it uses
        // the header.
        let h = unsafe { MappedHeader::over(&map) };
        (map, h)
    }

    #[test]
    fn write_bracket_moves_even_odd_even_and_counts() {
        let (_map, sut) = header();
        assert_eq!(optimistic_read(&sut), Observed::Stable(0));
        let b = begin_write(&sut);
        assert_eq!(optimistic_read(&sut), Observed::Writing(1));
        assert_eq!(end_write(&sut, b, 1.5, Some(9)), 1);
        assert_eq!(optimistic_read(&sut), Observed::Stable(2));
        assert_eq!(sut.frame_id().load(Ordering::Relaxed), 9);
        assert!(validate_read(&sut, 2));
        let b = begin_write(&sut);
        assert!(!validate_read(&sut, 2));
        abort_write(&sut, b);
        assert_eq!(optimistic_read(&sut), Observed::Invalid(-3));
        let b = begin_write(&sut);
        assert_eq!(optimistic_read(&sut), Observed::Writing(5));
        end_write(&sut, b, 2.0, None);
        assert_eq!(optimistic_read(&sut), Observed::Stable(6));
        assert_eq!(sut.count().load(Ordering::Relaxed), 2);
    }

    /// A count stored ahead (a history append's) is the publication's: the end stores the
    /// metadata and the even value, and no second count.
    #[test]
    fn a_count_stored_ahead_is_published_once() {
        let (_map, sut) = header();
        let mut b = begin_write(&sut);
        b.count_ahead(&sut, 5);
        assert_eq!(sut.count().load(Ordering::Relaxed), 5);
        assert_eq!(end_write(&sut, b, 1.5, Some(9)), 5);
        assert_eq!(sut.count().load(Ordering::Relaxed), 5);
        assert_eq!(sut.frame_id().load(Ordering::Relaxed), 9);
        assert_eq!(optimistic_read(&sut), Observed::Stable(2));
        // Without it, the end counts on from the header.
        let b = begin_write(&sut);
        assert_eq!(end_write(&sut, b, 2.0, None), 6);
    }

    #[test]
    fn an_unmarked_dead_writer_is_recovered_to_an_odd_value() {
        let (_map, sut) = header();
        let _abandoned = begin_write(&sut); // writer "dies" here
        assert_eq!(optimistic_read(&sut), Observed::Writing(1));
        let b = begin_write(&sut);
        assert_eq!(optimistic_read(&sut), Observed::Writing(3));
        end_write(&sut, b, 1.0, None);
        assert_eq!(optimistic_read(&sut), Observed::Stable(4));
        let _abandoned = begin_write(&sut);
        assert!(invalidate_abandoned(&sut, 5));
        assert_eq!(optimistic_read(&sut), Observed::Invalid(-5));
        // Already invalid (this mark, or an unlink's): not claimed again.
        assert!(!invalidate_abandoned(&sut, 5));
        assert!(!invalidate_abandoned(&sut, -5));
        assert_eq!(optimistic_read(&sut), Observed::Invalid(-5));
        // A writer (on a removed lock file) that published since the observation keeps
        // its frame.
        let b = begin_write(&sut);
        let observed = b.odd;
        end_write(&sut, b, 1.0, None);
        assert!(!invalidate_abandoned(&sut, observed));
        assert_eq!(optimistic_read(&sut), Observed::Stable(observed + 1));
    }

    #[test]
    fn the_count_at_open_names_the_write_in_progress() {
        let (_map, sut) = header();
        assert_eq!(count_at_open(&sut), (0, 0));
        let b = begin_write(&sut);
        assert_eq!(count_at_open(&sut), (0, 2), "before the stamp");
        stamp(&sut, 1.0, None);
        assert_eq!(count_at_open(&sut), (1, 2), "the unpublished count");
        end_write_even(&sut, b);
        assert_eq!(count_at_open(&sut), (1, 0));
        let b = begin_write(&sut);
        abort_write(&sut, b);
        assert_eq!(
            count_at_open(&sut),
            (1, 0),
            "an aborted write publishes nothing"
        );
        sut.sequence().store(i64::MAX, Ordering::Relaxed);
        assert_eq!(count_at_open(&sut), (1, 0), "no even value after it");
    }
}
