//! The floors' bare publication over a [`ShmRegion`]: what every writer and reader of the
//! format does at the least (the `flock` pair, the odd/even sequence, the copy, the write
//! time, the count; then sequence, copy out, re-check), on plain shared memory. Safe code,
//! kept beside [`crate::shm`] so that the harness's floors and its examples
//! (`examples/hop_vs_bare.rs`) time one and the same bare hop.
//!
//! The region: control words on their own cache lines, then [`PAYLOAD`]-aligned frame slots
//! of whole pages ([`slot_stride`]).

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use shmstream::Element;

use crate::flock::LockFile;
use crate::shm::ShmRegion;

/// The sequence word: odd while a frame is written, 2·k once frame k is published (the
/// floor's futex word).
pub const SEQ: usize = 0;
/// The reader's acknowledgement: the generation it last took (ping-pong floors).
pub const ACK: usize = 64;
/// The reader is ready (ping-pong floors).
pub const READY: usize = 128;
/// The writer is done (ping-pong floors).
pub const STOP: usize = 192;
/// Publications so far, as the format's count.
pub const COUNT: usize = 256;
/// The write time, as the format's (seconds since the epoch, an f64's bits).
pub const TIME: usize = 320;
/// When the reader held the payload (monotonic ns), for one-way floors.
pub const ARRIVED: usize = 384;
/// Set by a paired ping-pong writer before the frame after which its reader goes back to
/// ours.
pub const LEAVE: usize = 448;
/// The payload starts on its own page.
pub const PAYLOAD: usize = 4096;

/// Bytes from one payload slot to the next: whole pages, so every slot starts on one.
pub fn slot_stride(payload: usize) -> usize {
    payload.next_multiple_of(4096)
}

/// Size of a [`BareStream`] region for `slots` frames of `payload` bytes.
pub fn region_len(payload: usize, slots: usize) -> usize {
    PAYLOAD + slots.max(1) * slot_stride(payload)
}

/// Where a floor's frames lie: after the control words of its own region, or on the
/// payload pages of the stream it bounds.
#[derive(Debug, Clone, Copy)]
pub struct Frames<'a> {
    pages: &'a ShmRegion,
    /// Offset of slot 0.
    base: usize,
}

impl<'a> Frames<'a> {
    /// In `region`, from [`PAYLOAD`] on (as many slots as the region was made for).
    pub fn own(region: &'a ShmRegion) -> Self {
        Frames {
            pages: region,
            base: PAYLOAD,
        }
    }

    /// On a stream's payload pages (one slot, at offset 0).
    pub fn of_stream(pages: &'a ShmRegion) -> Self {
        Frames { pages, base: 0 }
    }

    /// Copies `src` into slot `slot`.
    pub fn copy_in<T: Element>(&self, slot: usize, src: &[T]) {
        let at = self.base + slot * slot_stride(std::mem::size_of_val(src));
        self.pages.copy_in(at, src);
    }

    /// Copies slot `slot` into `dst`.
    pub fn copy_out<T: Element>(&self, slot: usize, dst: &mut [T]) {
        let at = self.base + slot * slot_stride(std::mem::size_of_val(dst));
        self.pages.copy_out(at, dst)
    }

    /// Copies the frame published as sequence value `s` (even) from slot `slot` into `dst`
    /// and re-checks `seq`: `Some(())` when it still reads `s` (the copy is whole), `None`
    /// when a writer moved on meanwhile.
    pub fn read_published<T: Element>(
        &self,
        seq: &AtomicU32,
        s: u32,
        slot: usize,
        dst: &mut [T],
    ) -> Option<()> {
        self.copy_out(slot, dst);
        // Acquire fence: the copy is complete before the re-check.
        fence(Ordering::Acquire);
        (seq.load(Ordering::Relaxed) == s).then_some(())
    }
}

/// The least any writer and reader of the format do, over a bare region and lock file:
/// the floor of every publication and snapshot.
#[derive(Debug)]
pub struct BareStream<'a> {
    region: &'a ShmRegion,
    frames: Frames<'a>,
    /// `None`: the writer owns the stream for the run, as an AO stage holds its output
    /// stream's write lock, so a publication is the seqlock bracket without the flock pair.
    lock: Option<LockFile>,
}

impl<'a> BareStream<'a> {
    /// Over `region` (control words, then the payload at [`PAYLOAD`]) and the lock file
    /// `lock`.
    pub fn new(region: &'a ShmRegion, lock: &Path) -> io::Result<Self> {
        Ok(BareStream {
            region,
            frames: Frames::own(region),
            lock: Some(LockFile::open(lock, false)?),
        })
    }

    /// Over `region`, for a writer that holds the stream's lock for the run: no flock pair.
    pub fn held(region: &'a ShmRegion) -> Self {
        BareStream {
            region,
            frames: Frames::own(region),
            lock: None,
        }
    }

    /// The same, with its frames on `frames`.
    pub fn with_frames(self, frames: Frames<'a>) -> Self {
        BareStream { frames, ..self }
    }

    /// The region of its control words.
    pub fn region(&self) -> &'a ShmRegion {
        self.region
    }

    /// Publishes `src`: `flock`, odd sequence, copy, write time, count, even sequence,
    /// unlock (no `flock` pair for a writer that [holds](Self::held) the lock).
    pub fn publish<T: Element>(&self, src: &[T]) -> io::Result<()> {
        self.publish_in(0, src)
    }

    /// [`Self::publish`] into payload slot `slot` (the region must have it).
    pub fn publish_in<T: Element>(&self, slot: usize, src: &[T]) -> io::Result<()> {
        self.publish_waking(slot, None, src, || {})
    }

    /// [`Self::publish_in`] as publication `generation` when one is given (sequence
    /// `2·generation`, later than the last: for a writer that numbers its publications by
    /// frame ids it skips some of), calling `wake` once the even sequence is stored and
    /// before the unlock: where the library wakes its waiters, inside the write lock (its
    /// bracket wakes, then its guard unlocks), so a floor that wakes pays no more on the way
    /// to the wake than ours does.
    pub fn publish_waking<T: Element>(
        &self,
        slot: usize,
        generation: Option<u32>,
        src: &[T],
        wake: impl FnOnce(),
    ) -> io::Result<()> {
        let seq = self.region.atomic_u32(SEQ);
        if let Some(lock) = &self.lock {
            lock.lock()?;
        }
        let s = seq.load(Ordering::Relaxed);
        let even = generation.map_or((s | 1) + 1, |g| g.saturating_mul(2).max(2));
        // Odd: a write is in progress. Release fence: odd before any payload byte.
        seq.store(even - 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.frames.copy_in(slot, src);
        stamp(self.region.atomic_u64(TIME));
        // A load and a store, as the library's count, not a locked add it does not pay: one
        // writer publishes at a time (the flock pair, or the one writer that holds the
        // stream for the run), so nothing else stores the count between them.
        let count = self.region.atomic_u64(COUNT);
        count.store(
            count.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
        seq.store(even, Ordering::Release);
        // The wake before the unlock, as the library's: the unlock is a system call a
        // woken reader would otherwise wait behind.
        wake();
        if let Some(lock) = &self.lock {
            lock.unlock()?;
        }
        Ok(())
    }

    /// Copies the published frame into `dst`: sequence, copy, re-check.
    pub fn snapshot<T: Element>(&self, dst: &mut [T]) -> io::Result<()> {
        let seq = self.region.atomic_u32(SEQ);
        let s = seq.load(Ordering::Acquire);
        match self.frames.read_published(seq, s, 0, dst) {
            Some(()) if s & 1 == 0 => Ok(()),
            _ => Err(io::Error::other(
                "the floor's frame changed under its reader",
            )),
        }
    }

    /// The sequence word (the floor's futex word).
    pub fn word(&self) -> &'a AtomicU32 {
        self.region.atomic_u32(SEQ)
    }
}

/// Stores the write time, as every publication of the format does (the pyshmem header's
/// write time: seconds since the epoch, an f64), taken as the library takes its own.
#[inline]
pub fn stamp(word: &AtomicU64) {
    word.store(crate::clock::unix_now_s().to_bits(), Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A publication lands whole in its slot with its count, write time and even sequence;
    /// a reader whose sequence value moved on retries; a frame mid-write is refused; a bool
    /// byte other than 0 or 1 reads as `true`, as the library reads it.
    #[test]
    fn a_bare_publication_reads_back_whole_and_a_moved_sequence_is_retried() {
        let name = format!("bare-test-{}", std::process::id());
        let region = ShmRegion::create(&name, region_len(64, 2)).unwrap();
        let bare = BareStream::held(&region);
        let frames = Frames::own(&region);
        bare.publish_in(1, &[7u8; 64]).unwrap();
        let seq = bare.word();
        assert_eq!(seq.load(Ordering::Relaxed), 2);
        assert_eq!(region.atomic_u64(COUNT).load(Ordering::Relaxed), 1);
        let written = f64::from_bits(region.atomic_u64(TIME).load(Ordering::Relaxed));
        assert!(written > 1.7e9, "write time {written}");

        let mut dst = [0u8; 64];
        assert_eq!(frames.read_published(seq, 2, 1, &mut dst), Some(()));
        assert_eq!(dst, [7u8; 64]);
        assert_eq!(frames.read_published(seq, 4, 1, &mut dst), None);

        bare.publish(&[2u8; 64]).unwrap();
        let mut flags = [false; 64];
        assert_eq!(frames.read_published(seq, 4, 0, &mut flags), Some(()));
        assert_eq!(flags, [true; 64], "a bool byte of 2 reads as true");
        flags = [false; 64];
        bare.snapshot(&mut flags).unwrap();
        assert_eq!(flags, [true; 64], "a bool byte of 2 reads as true");
        assert!(bare.snapshot(&mut dst).is_ok());
        assert_eq!(dst, [2u8; 64]);
        seq.store(5, Ordering::Relaxed);
        assert!(bare.snapshot(&mut dst).is_err(), "mid-write");
    }

    /// A publication wakes once its frame is published and before it unlocks, as the
    /// library's: at the wake, the sequence is even and a non-blocking lock of the same lock
    /// file through another open file description finds it held; after the publication, the
    /// same lock is free.
    #[test]
    fn a_publication_wakes_after_its_even_sequence_and_before_its_unlock() {
        let name = format!("bare-wake-test-{}", std::process::id());
        let region = ShmRegion::create(&name, region_len(64, 1)).unwrap();
        let path = std::env::temp_dir().join(format!("{name}.lock"));
        let bare = BareStream::new(&region, &path).unwrap();
        // Whether another open file description takes the lock (released at once).
        let try_lock = || {
            let other = LockFile::open(&path, false).unwrap();
            let took = other.try_lock().unwrap();
            if took {
                other.unlock().unwrap();
            }
            took
        };
        let mut at_wake = None;
        bare.publish_waking(0, Some(3), &[1u8; 64], || {
            at_wake = Some((bare.word().load(Ordering::Relaxed), try_lock()));
        })
        .unwrap();
        let after = try_lock();
        let _ = std::fs::remove_file(&path);
        assert_eq!(
            at_wake,
            Some((6, false)),
            "(sequence, another took the lock) at the wake: the wake must follow the even \
             sequence and come while the lock is held"
        );
        assert!(after, "the lock stayed held after the publication");
    }
}
