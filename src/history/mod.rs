//! Frame history: the last `n` frames of a stream in a ring beside the latest frame, and
//! [`Cursor`], which returns every frame strictly in order and says exactly how many it lost.
//!
//! The ring lives in its own segment, `<segment id>_hist` (pyshmem never opens it, so the
//! stream stays byte-compatible: pyshmem opens, reads and writes it as before). Layout, all
//! little-endian, every word 8-byte aligned:
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 8 | magic `SHMHIST1` (stored last, Release: the ring is complete when it is there) |
//! | 8 | 4 | version (1) |
//! | 12 | 4 | capacity `n` |
//! | 16 | 8 | frame bytes |
//! | 24 | 16 | the stream generation's instance id (a ring of another generation is ignored) |
//! | 40 | 8 | head: frames appended so far (atomic) |
//! | 64 + i·stride | 64 | slot `i`: stamp, count, frame id, write time (atomics) |
//! | 128 + i·stride | frame | slot `i`'s frame (`stride` = 64 + frame bytes rounded up to 64) |
//!
//! Append `k` (the writer holds the write lock, inside the publication bracket, so CPU and
//! GPU writes share it): slot `k mod n` gets stamp `2k+1` (odd: being written), the frame
//! and its metadata; the stream's header gets the frame's count (the sequence is still
//! odd, so no reader trusts it yet); then the slot stamp `2k+2` (Release), then head `k+1`
//! (Release); the publication's end stores no second count. A writer killed
//! mid-append leaves an odd stamp and the head unmoved: no cursor ever returns that slot, and
//! the next writer appends at the same index. A cursor copies a slot between two loads of
//! its stamp (the seqlock of `seqlock.rs`, per slot): a frame overwritten while it was copied
//! is reported as lost, never returned torn.
//!
//! A whole-frame write ([`Ring::begin_append`]) fills the slot first and copies it into the
//! payload after, still inside the bracket: the head moves before the even sequence, and a
//! cursor (which waits for either) reads the frame while the payload copy runs. A writer
//! killed between the two leaves a complete frame that cursors may return, and an
//! unfinished publication that readers of the latest frame see aborted; the header already
//! holds that frame's count, so the next writer's (pyshmem's, which stamps `count + 1`, or
//! ours) goes on past it ([`Ring::finish_append`]).

use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::time::{Duration, Instant};

use ndarray::ArrayD;

use crate::dtype::Element;
use crate::error::{Error, LossCause, Result};
use crate::format::FormatError;
use crate::name;
use crate::notify::{ADAPTIVE_SPIN, WaitStrategy, Waiter};
use crate::read::{FrameInfo, Publication};
use crate::segment::{Mapping, Segment};
use crate::seqlock::{self, Observed};
use crate::spin::Spin;
use crate::stream::Stream;

mod frame;

pub use frame::RingFrame;

/// Pauses a cursor spinning on its next frame's slot (spinning, or adaptive for its
/// budget) makes between the stream's checks (tens of µs).
const SLOT_SPIN_ROUNDS: u32 = 1024;

/// Rings of at least this many bytes take frames of at least [`STREAM_MIN_FRAME`] with
/// streaming (non-temporal) stores: a slot comes round again only after the whole ring,
/// long after it left the caches, so ordinary stores would first read every line of it
/// back from memory (read for ownership), doubling the traffic of an append.
const STREAM_MIN_RING: usize = 8 << 20;
/// See [`STREAM_MIN_RING`].
const STREAM_MIN_FRAME: usize = 16 << 10;

/// Whether a ring of `ring_bytes` appends frames of `frame_bytes` with streaming stores.
fn streams(ring_bytes: usize, frame_bytes: usize) -> bool {
    cfg!(target_arch = "x86_64") && ring_bytes >= STREAM_MIN_RING && frame_bytes >= STREAM_MIN_FRAME
}

/// Copies `len` bytes with streaming stores, fenced on both sides. Streaming stores are
/// weakly ordered, even after earlier ordinary stores (Intel SDM vol. 3, 8.2.2): without the
/// first fence, part of a new frame could become visible before the odd stamp stored ahead
/// of the copy, and a cursor copying that slot would find its old even stamp on both sides
/// of a torn copy; without the last, the even stamp stored after the copy could become
/// visible before the frame.
///
/// # Safety
/// `src` and `dst` are valid for `len` bytes and do not overlap; `dst` is 16-byte aligned.
#[cfg(target_arch = "x86_64")]
unsafe fn stream_copy(dst: *mut u8, src: *const u8, len: usize) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};
    // SAFETY: `_mm_sfence` has no preconditions (SSE is part of the x86_64 baseline).
    unsafe { _mm_sfence() };
    let whole = len / 64 * 64;
    let mut at = 0;
    while at < whole {
        // SAFETY: `at + 64 <= len`, so the four 16-byte loads and stores are in bounds;
        // `dst + at` is 16-byte aligned (dst is, and `at` is a multiple of 64). SSE2 is
        // part of the x86_64 baseline.
        unsafe {
            let s = src.add(at).cast::<__m128i>();
            let d = dst.add(at).cast::<__m128i>();
            let (a, b, c, e) = (
                _mm_loadu_si128(s),
                _mm_loadu_si128(s.add(1)),
                _mm_loadu_si128(s.add(2)),
                _mm_loadu_si128(s.add(3)),
            );
            _mm_stream_si128(d, a);
            _mm_stream_si128(d.add(1), b);
            _mm_stream_si128(d.add(2), c);
            _mm_stream_si128(d.add(3), e);
        }
        at += 64;
    }
    // SAFETY: the tail `whole..len` is in bounds of both (caller contract); `_mm_sfence`
    // has no preconditions.
    unsafe {
        std::ptr::copy_nonoverlapping(src.add(whole), dst.add(whole), len - whole);
        _mm_sfence();
    }
}

/// Never called: `streams` is false off x86_64.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn stream_copy(dst: *mut u8, src: *const u8, len: usize) {
    // SAFETY: the caller's contract.
    unsafe { std::ptr::copy_nonoverlapping(src, dst, len) }
}

/// The deepest history a stream may keep.
pub const MAX_HISTORY: usize = 1 << 20;
/// The largest ring segment a stream may create (the payloads of all slots): 64 GiB.
const MAX_RING_BYTES: u64 = 1 << 36;

const MAGIC: [u8; 8] = *b"SHMHIST1";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 64;
const SLOT_HEADER_BYTES: usize = 64;

mod off {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 8;
    pub const CAPACITY: usize = 12;
    pub const FRAME_BYTES: usize = 16;
    pub const INSTANCE_ID: usize = 24;
    pub const HEAD: usize = 40;
    // Within a slot header.
    pub const STAMP: usize = 0;
    pub const COUNT: usize = 8;
    pub const FRAME_ID: usize = 16;
    pub const WRITE_TIME: usize = 24;
}

/// The stamp of a slot while append `k` writes it (`2k + 1`), and once it holds that frame
/// (`2k + 2`). Wrapping: a head planted near `u64::MAX` (the ring is shared memory) makes
/// mismatched stamps, which cursors report, never an overflow panic. At `k` of `2^63 - 1` or
/// `u64::MAX` (no ring gets there by appending) the written stamp wraps to 0, a slot's
/// stamp before any append: readers take a stamp of 0 for never written ([`Ring::read`],
/// [`Ring::finished`]).
fn writing_stamp(k: u64) -> u64 {
    k.wrapping_mul(2).wrapping_add(1)
}

/// See [`writing_stamp`].
fn written_stamp(k: u64) -> u64 {
    k.wrapping_mul(2).wrapping_add(2)
}

/// Bytes from one slot to the next for frames of `frame_bytes`.
fn stride(frame_bytes: usize) -> Option<usize> {
    frame_bytes
        .checked_next_multiple_of(64)?
        .checked_add(SLOT_HEADER_BYTES)
}

/// The ring segment's size for `capacity` frames of `frame_bytes`, or why it is refused.
pub(crate) fn ring_bytes(
    capacity: usize,
    frame_bytes: usize,
) -> std::result::Result<usize, String> {
    if capacity == 0 || capacity > MAX_HISTORY {
        return Err(format!(
            "history depth {capacity} is outside 1..={MAX_HISTORY} (leave history unset for none)"
        ));
    }
    let total = stride(frame_bytes)
        .and_then(|s| s.checked_mul(capacity))
        .and_then(|b| b.checked_add(HEADER_BYTES))
        .filter(|&b| b as u64 <= MAX_RING_BYTES);
    total.ok_or_else(|| {
        format!(
            "{capacity} frames of {frame_bytes} bytes exceed the {} GiB a history ring may take: use a smaller depth",
            MAX_RING_BYTES >> 30
        )
    })
}

/// One stream's mapped history ring.
#[derive(Debug)]
pub(crate) struct Ring {
    /// Without its descriptor: a stream with history holds one open file fewer.
    seg: Mapping,
    capacity: u64,
    frame_bytes: usize,
    stride: usize,
    /// Append with streaming stores ([`STREAM_MIN_RING`]).
    streaming: bool,
}

impl Ring {
    /// Creates the ring of a new stream generation under the private id `id` (the creator
    /// publishes it under the stream's `_hist` id with its other segments).
    pub(crate) fn create(
        stream: &str,
        id: &str,
        capacity: usize,
        frame_bytes: usize,
        instance_id: [u8; 16],
    ) -> Result<Ring> {
        let bytes = ring_bytes(capacity, frame_bytes).map_err(|reason| Error::InvalidHistory {
            name: stream.to_owned(),
            reason,
        })?;
        let seg = Segment::create(id, bytes)
            .map_err(|e| Error::creating(stream, "creating the history segment", bytes, e))?;
        Ok(Ring::init(
            seg.into_mapping(),
            capacity,
            frame_bytes,
            instance_id,
        ))
    }

    /// Writes a new ring's header into `seg`: zeroed, private to its creator until the
    /// stream's header is published, and [`ring_bytes`] long (asserted).
    fn init(seg: Mapping, capacity: usize, frame_bytes: usize, instance_id: [u8; 16]) -> Ring {
        let bytes = seg.len();
        assert!(ring_bytes(capacity, frame_bytes).is_ok_and(|need| need <= bytes));
        let ring = Ring {
            seg,
            capacity: capacity as u64,
            frame_bytes,
            stride: stride(frame_bytes).unwrap_or(usize::MAX),
            streaming: streams(bytes, frame_bytes),
        };
        let p = ring.seg.as_ptr();
        // SAFETY: the segment is the ring's alone (see above) and holds every slot
        // (asserted), so `bytes >= HEADER_BYTES`; the fields written are inside it.
        unsafe {
            p.add(off::VERSION)
                .cast::<u32>()
                .write_unaligned(VERSION.to_le());
            p.add(off::CAPACITY)
                .cast::<u32>()
                .write_unaligned((capacity as u32).to_le());
            p.add(off::FRAME_BYTES)
                .cast::<u64>()
                .write_unaligned((frame_bytes as u64).to_le());
            std::ptr::copy_nonoverlapping(instance_id.as_ptr(), p.add(off::INSTANCE_ID), 16);
        }
        ring.word(off::MAGIC)
            .store(u64::from_le_bytes(MAGIC), Ordering::Release);
        ring
    }

    /// Attaches the ring of the stream generation `instance_id`, if it keeps one.
    pub(crate) fn attach(
        stream: &str,
        frame_bytes: usize,
        instance_id: [u8; 16],
        writable: bool,
    ) -> Result<Option<Ring>> {
        let Some((head, capacity)) = open_header(stream, instance_id, false, HEADER_BYTES)? else {
            return Ok(None);
        };
        let need = declared_bytes(stream, &head, capacity, frame_bytes)?;
        // Map the slots the header declares, no more: a ring grown past them (corrupt or
        // hostile) is not faulted in, nor one never written. The header is checked again on
        // this second mapping.
        let seg = match Segment::open_written(&name::history_id(stream), writable, need) {
            Ok(seg) => seg,
            // Removed since the header was read (the stream unlinked, perhaps made again):
            // not this generation's ring any more, which the caller finds out.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound || head.is_unlinked() => {
                return Ok(None);
            }
            // Sparse: populating its slots would allocate them in RAM (see `open_written`).
            Err(e) if crate::segment::unwritten(&e).is_some() => {
                return Err(unwritten(stream, need, &e));
            }
            // The process or system out of descriptors or memory: nothing wrong with the ring.
            Err(e) if crate::error::out_of_resources(&e) => {
                return Err(Error::io(stream, "opening the history segment", e));
            }
            // This generation's ring, which this handle cannot map: without it, its writes
            // would append nothing and its cursors blame the frames on a writer that does not
            // append (pyshmem).
            Err(e) => return Err(unmappable(stream, writable, e)),
        };
        let Some(again) = check_header(stream, &seg, instance_id)? else {
            return Ok(None);
        };
        if again != capacity {
            return Err(corrupt(
                stream,
                format!("the history segment's capacity changed from {capacity} to {again} frames"),
            ));
        }
        check_holds(stream, seg.len(), need)?;
        Ok(Some(Ring {
            seg: seg.into_mapping(),
            capacity: capacity as u64,
            frame_bytes,
            stride: stride(frame_bytes).unwrap_or(usize::MAX),
            streaming: streams(need, frame_bytes),
        }))
    }

    /// Frames the ring holds at most.
    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    fn word(&self, at: usize) -> &AtomicU64 {
        debug_assert!(at.is_multiple_of(8) && at + 8 <= self.seg.len());
        // SAFETY: the mapping is page aligned and `at` is a multiple of 8 inside it (the
        // callers' offsets are header fields or slot-header fields of a slot < capacity, and
        // `attach`/`create` checked the segment holds every slot). Other processes touch
        // these words only with aligned 8-byte atomics.
        unsafe { &*self.seg.as_ptr().add(at).cast::<AtomicU64>() }
    }

    fn head(&self) -> &AtomicU64 {
        self.word(off::HEAD)
    }

    fn slot_at(&self, index: u64) -> usize {
        HEADER_BYTES + (index % self.capacity) as usize * self.stride
    }

    /// Appends one frame from `src` (the host payload, `frame_bytes` long) as `append`
    /// ([`Ring::next_append`]). The caller holds the write lock and is inside the
    /// publication bracket of the write whose count would be `count`; `count_ahead` stores
    /// the frame's count into it before the frame becomes visible; returns that count
    /// ([`Ring::finish_append`]).
    pub(crate) fn append(
        &self,
        append: Append,
        src: *const u8,
        count: u64,
        frame_id: u64,
        write_time: f64,
        count_ahead: impl FnOnce(u64),
    ) -> u64 {
        let dst = self.begin_append(&append);
        // SAFETY: `src` is the host payload of `frame_bytes` (caller contract); `dst` is the
        // slot's frame area, `frame_bytes` long inside the mapping (checked at
        // attach/create), 64-byte aligned (page-aligned mapping, 64-byte header and stride),
        // and not the payload. Cursors copying it concurrently detect the overlap through
        // the stamp.
        unsafe {
            if self.streaming {
                stream_copy(dst, src, self.frame_bytes);
            } else {
                std::ptr::copy_nonoverlapping(src, dst, self.frame_bytes);
            }
        }
        self.finish_append(append, count, frame_id, write_time, count_ahead)
    }

    /// Whether a publication may fill the next slot first and copy it into the payload
    /// after ([`Ring::begin_append`]): not for rings that append with streaming stores,
    /// whose slots the fill would first read back from memory.
    pub(crate) fn fills_first(&self) -> bool {
        !self.streaming
    }

    /// The next append, determined without a store (so a caller refuses it before its
    /// publication bracket, the frame and sequence untouched): its index, past a frame a
    /// writer killed before its head store left complete, and the count of the frame before
    /// it. The caller holds the write lock, then passes it to [`Ring::begin_append`] or
    /// [`Ring::append`]. Refused ([`FormatError::CountExhausted`]) when the previous frame is
    /// counted `u64::MAX` (a planted or corrupted slot): the frame's count would wrap.
    #[inline]
    pub(crate) fn next_append(&self) -> Result<Append, FormatError> {
        // Relaxed: only the lock holder stores the head, and taking the lock ordered us after
        // the previous holder's stores.
        let mut k = self.head().load(Ordering::Relaxed);
        // A writer killed between its slot's even stamp and its head store left frame `k`
        // complete, and a cursor waiting on the slot may have returned it: keep it as
        // appended and append after it (rewriting the slot hid this frame from that cursor).
        let recovered = self
            .word(self.slot_at(k) + off::STAMP)
            .load(Ordering::Relaxed)
            == written_stamp(k);
        if recovered {
            k = k.wrapping_add(1);
        }
        // The count of the frame before this one, read before a ring of one slot rewrites it:
        // a writer of an earlier version, killed after its append (before or after its head
        // store) and before its publication stamped the header's count, left that frame
        // counted past the header (this version stores the count before the even stamp).
        let prev = k.checked_sub(1).and_then(|p| {
            let at = self.slot_at(p);
            (self.word(at + off::STAMP).load(Ordering::Relaxed) == written_stamp(p))
                .then(|| self.word(at + off::COUNT).load(Ordering::Relaxed))
        });
        if prev == Some(u64::MAX) {
            return Err(FormatError::CountExhausted(u64::MAX));
        }
        Ok(Append {
            index: k,
            slot: self.slot_at(k),
            prev,
            recovered,
        })
    }

    /// Starts `append` ([`Ring::next_append`], under the same hold of the lock): stores the
    /// head past a frame a killed writer left complete, stamps the slot odd (being written)
    /// and returns the slot's frame area (`frame_bytes`, 64-byte aligned) for the caller to
    /// fill. The caller is inside the publication bracket; an append never finished leaves
    /// the stamp odd and the head unmoved, so no cursor returns the slot and the next append
    /// reuses it.
    #[inline]
    pub(crate) fn begin_append(&self, append: &Append) -> *mut u8 {
        if append.recovered {
            self.head().store(append.index, Ordering::Release);
        }
        self.word(append.slot + off::STAMP)
            .store(writing_stamp(append.index), Ordering::Relaxed);
        // Keeps the frame stores that follow from becoming visible before the odd stamp
        // (ordinary stores; a streaming copy fences itself).
        fence(Ordering::Release);
        // SAFETY: the slot's frame area lies inside the mapping (checked at attach/create).
        unsafe { self.seg.as_ptr().add(append.slot + SLOT_HEADER_BYTES) }
    }

    /// Completes `append`, its frame filled: the slot's metadata, then the frame's count to
    /// `count_ahead` (the publication stores it into the stream's header:
    /// [`Bracket::count_ahead`]), even stamp, head. From here cursors return the frame. Its
    /// count: `count`
    /// (the header's next), or the one after the previous frame's where that is higher (a
    /// writer of an earlier version, killed before stamping the header, left it counted
    /// past the header): two frames never share a count. The header holds the count before
    /// the slot's even stamp, so a writer killed from there on leaves it counted, and the
    /// next writer (pyshmem's too) counts past the frame cursors may return. Returns it.
    ///
    /// [`Bracket::count_ahead`]: crate::seqlock::Bracket::count_ahead
    #[inline]
    pub(crate) fn finish_append(
        &self,
        append: Append,
        count: u64,
        frame_id: u64,
        write_time: f64,
        count_ahead: impl FnOnce(u64),
    ) -> u64 {
        let Append {
            index: k,
            slot,
            prev,
            ..
        } = append;
        // `next_append` refused a previous count without a next.
        let count = prev.map_or(count, |p| count.max(p + 1));
        self.word(slot + off::COUNT).store(count, Ordering::Relaxed);
        self.word(slot + off::FRAME_ID)
            .store(frame_id, Ordering::Relaxed);
        self.word(slot + off::WRITE_TIME)
            .store(write_time.to_bits(), Ordering::Relaxed);
        // Last before the even stamp, whose Release orders it first: a writer killed in
        // between leaves a count no frame got (which cursors report lost), as one killed
        // between its count stamp and its even sequence always did.
        count_ahead(count);
        // Release: a cursor that acquires the even stamp (or the new head) sees the frame.
        self.word(slot + off::STAMP)
            .store(written_stamp(k), Ordering::Release);
        self.head().store(k.wrapping_add(1), Ordering::Release);
        count
    }

    /// Frames appended so far (Acquire: a cursor that sees the head sees the frames).
    #[inline]
    pub(crate) fn appended(&self) -> u64 {
        self.head().load(Ordering::Acquire)
    }

    /// Whether append `index` has finished, or a later lap took its slot: the slot's stamp
    /// reached `2·index + 2` (Acquire, as [`Ring::read`]'s load). An append stores the even
    /// stamp before the head, so this can hold while the head still reads `index`.
    #[inline]
    fn finished(&self, index: u64) -> bool {
        // A written stamp of 0 (a planted head: see `writing_stamp`) is no append's.
        let written = written_stamp(index);
        written != 0
            && self
                .word(self.slot_at(index) + off::STAMP)
                .load(Ordering::Acquire)
                >= written
    }

    /// Spins for up to `rounds` pauses of `spin` until [`Ring::finished`]`(index)`; whether
    /// it did. It loads that slot's metadata line alone: neither the stream's header nor the
    /// head, which the writer stores to in the same publication.
    #[inline]
    fn spin_until_finished(&self, index: u64, rounds: u32, spin: &mut Spin) -> bool {
        for _ in 0..rounds {
            if self.finished(index) {
                return true;
            }
            spin.pause();
        }
        false
    }

    /// Copies frame `index` with `copy`, or says which later append overwrote its slot.
    fn read(&self, index: u64, copy: &mut impl FnMut(*const u8)) -> SlotRead {
        let slot = self.slot_at(index);
        let stamp = self.word(slot + off::STAMP);
        // Acquire: synchronizes with the Release store of the even stamp in `append`.
        let s = stamp.load(Ordering::Acquire);
        // 0: never written, though a planted head's written stamp wraps to it.
        if s == 0 || s != written_stamp(index) {
            // Odd 2k+1 or even 2k+2: append k holds or is writing the slot.
            return SlotRead::Overwritten(s.saturating_sub(1) / 2);
        }
        let count = self.word(slot + off::COUNT).load(Ordering::Relaxed);
        let frame_id = self.word(slot + off::FRAME_ID).load(Ordering::Relaxed);
        let write_time = f64::from_bits(self.word(slot + off::WRITE_TIME).load(Ordering::Relaxed));
        // SAFETY: the slot's frame area is `frame_bytes` long inside the mapping.
        copy(unsafe { self.seg.as_ptr().add(slot + SLOT_HEADER_BYTES) });
        // Orders the copy's loads before the stamp reload (see `seqlock::validate_read`).
        fence(Ordering::Acquire);
        let again = stamp.load(Ordering::Relaxed);
        if again != s {
            return SlotRead::Overwritten(again.saturating_sub(1) / 2);
        }
        SlotRead::Frame(FrameInfo {
            count,
            frame_id,
            write_time,
            missed: 0,
        })
    }
}

/// An append [`Ring::next_append`] determined: its index, its slot's offset, the count of
/// the frame before it where the ring still holds that frame, and whether the head is to
/// move past a frame a killed writer left complete.
#[derive(Debug)]
pub(crate) struct Append {
    index: u64,
    slot: usize,
    prev: Option<u64>,
    recovered: bool,
}

/// What [`Cursor::unrecorded_gap`] found.
enum Gap {
    /// Nothing past the last frame returned, or no last frame.
    None,
    /// A ring frame is there after all: read it.
    Moved,
    /// Publications that never reached the ring, reported.
    Lost(Error),
}

enum SlotRead {
    Frame(FrameInfo),
    /// The slot holds (or is being written with) append `k`.
    Overwritten(u64),
}

fn read_u64(seg: &Segment, at: usize) -> u64 {
    let b = seg.snapshot(at + 8);
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]))
}

/// Opens `_hist`, mapping at most `max_len` bytes, and checks its header: `None` when there
/// is none, it belongs to another generation (a leftover), or it is not ours to use (another
/// user's file or a FIFO planted under the name of a stream without a ring: the stream is
/// usable, without history); else the segment and its capacity. A file of ours that cannot
/// be opened (its mode changed) is [`unmappable`]: it may be this generation's ring.
fn open_header(
    stream: &str,
    instance_id: [u8; 16],
    writable: bool,
    max_len: usize,
) -> Result<Option<(Segment, usize)>> {
    let id = name::history_id(stream);
    let seg = match Segment::open_prefix(&id, writable, max_len) {
        Ok(s) => s,
        Err(e) if crate::trust::denied(&e).is_some() => {
            return Err(unmappable(stream, writable, e));
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::InvalidData
                    | std::io::ErrorKind::PermissionDenied
            ) || crate::trust::is_refused(&e) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(Error::io(stream, "opening the history segment", e)),
    };
    Ok(check_header(stream, &seg, instance_id)?.map(|capacity| (seg, capacity)))
}

/// The capacity the header of the ring segment `seg` declares, if it is a ring of the
/// generation `instance_id` (`None` for one too short to hold a header, or another
/// generation's); an error for another format version.
fn check_header(stream: &str, seg: &Segment, instance_id: [u8; 16]) -> Result<Option<usize>> {
    if seg.len() < HEADER_BYTES {
        return Ok(None);
    }
    let h = seg.snapshot(HEADER_BYTES);
    if h[..8] != MAGIC || h[off::INSTANCE_ID..off::INSTANCE_ID + 16] != instance_id {
        return Ok(None);
    }
    check_version(stream, &h)?;
    let capacity = u32::from_le_bytes(
        h[off::CAPACITY..off::CAPACITY + 4]
            .try_into()
            .unwrap_or([0; 4]),
    );
    Ok(Some(capacity as usize))
}

/// The stream's ring (this generation's, or one of ours whose header cannot be read) could
/// not be mapped (`writable` or not) for the reason `e`: one this user may not open
/// ([`crate::trust::Denied`]) says how to restore access, as [`Error::AccessDenied`] does;
/// another user's file (or no regular file) now at its path is [`Error::Untrusted`].
fn unmappable(stream: &str, writable: bool, e: std::io::Error) -> Error {
    if crate::trust::is_refused(&e) {
        // Another user's file, or no regular file, now at the ring's path.
        return Error::io(stream, "opening the history segment", e);
    }
    let how = if writable { "writable" } else { "read-only" };
    let reason = match crate::trust::denied(&e) {
        Some(d) => format!(
            "the stream's history segment cannot be mapped {how}: {}",
            crate::error::access_denied(
                &d.path,
                d.mode,
                d.writable,
                &std::io::Error::from_raw_os_error(d.errno),
                true,
            )
        ),
        None => format!(
            "the stream's history segment {} cannot be mapped {how}: {e}",
            crate::segment::path(&name::history_id(stream)).display(),
        ),
    };
    Error::InvalidHistory {
        name: stream.to_owned(),
        reason,
    }
}

/// Refuses a ring header `h` of another format version.
fn check_version(stream: &str, h: &[u8]) -> Result<()> {
    let version = u32::from_le_bytes(
        h[off::VERSION..off::VERSION + 4]
            .try_into()
            .unwrap_or([0; 4]),
    );
    if version != VERSION {
        return Err(Error::InvalidHistory {
            name: stream.to_owned(),
            reason: format!(
                "history format version {version}, this build reads {VERSION}: use the same shmstream version"
            ),
        });
    }
    Ok(())
}

/// Whether the `_hist` of `stream` is the ring of a generation other than `instance_id` (an
/// earlier one's, which pyshmem's unlink left), from its header alone (for `purge`, which
/// must not map every ring): `false` when there is none or it names this generation; an
/// error when it cannot be read or is no ring of this format (too short, no magic, another
/// version), which proves nothing.
pub(crate) fn of_another_generation(stream: &str, instance_id: [u8; 16]) -> Result<bool> {
    let seg = match Segment::open_prefix(&name::history_id(stream), false, HEADER_BYTES) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(stream, "opening the history segment", e)),
    };
    let h = seg.snapshot(HEADER_BYTES);
    if h.len() < HEADER_BYTES || h[..8] != MAGIC {
        return Err(Error::InvalidHistory {
            name: stream.to_owned(),
            reason: "the history segment has no ring header: unlink and recreate the stream"
                .to_owned(),
        });
    }
    check_version(stream, &h)?;
    Ok(h[off::INSTANCE_ID..off::INSTANCE_ID + 16] != instance_id)
}

/// A ring [`Ring::attach`] refuses: its header or size contradicts the stream.
fn corrupt(stream: &str, reason: String) -> Error {
    Error::InvalidHistory {
        name: stream.to_owned(),
        reason: format!("{reason}: unlink and recreate the stream"),
    }
}

/// The bytes the ring whose header `head` declares `capacity` frames needs, if it fits a
/// stream of frames of `frame_bytes`. Checked by [`Ring::attach`] before it maps the slots
/// and by [`depth`], which never maps them: `stat` refuses exactly the rings `open` does.
fn declared_bytes(
    stream: &str,
    head: &Segment,
    capacity: usize,
    frame_bytes: usize,
) -> Result<usize> {
    let declared = read_u64(head, off::FRAME_BYTES);
    if declared != frame_bytes as u64 {
        return Err(corrupt(
            stream,
            format!(
                "the history segment holds frames of {declared} bytes, the stream {frame_bytes}"
            ),
        ));
    }
    // The creator's limits, said as what the header declares (their remedies are a
    // creator's: the opener's is in `corrupt`).
    ring_bytes(capacity, frame_bytes).map_err(|_| {
        corrupt(
            stream,
            format!(
                "the history segment declares {capacity} frames of {frame_bytes} bytes, outside \
                 what a ring may hold (1..={MAX_HISTORY} frames, at most {} GiB)",
                MAX_RING_BYTES >> 30
            ),
        )
    })
}

/// Refuses a ring segment of `len` bytes where its header declares `need`
/// ([`declared_bytes`]): its last slots would lie past the end of the object.
fn check_holds(stream: &str, len: usize, need: usize) -> Result<()> {
    if len < need {
        return Err(corrupt(
            stream,
            format!("the history segment is {len} bytes, {need} expected"),
        ));
    }
    Ok(())
}

/// A ring segment [`crate::segment::Segment::open_written`] refused (`e`): its slots, `need`
/// bytes, were never written.
fn unwritten(stream: &str, need: usize, e: &std::io::Error) -> Error {
    let stored = crate::segment::unwritten(e).map_or(0, |u| u.stored);
    corrupt(
        stream,
        format!(
            "the history segment was never written: only {stored} of the {need} bytes its \
             header declares have storage (a producer left it sparse)"
        ),
    )
}

/// The history depth of a stream generation with frames of `frame_bytes`, for `stat` and
/// `list`: 0 when it keeps none, else the ring's capacity, or the error [`Ring::attach`]
/// would refuse it with (the same checks, from the header and the object's size: the
/// slots are never mapped, so `stat` stays cheap beside rings of gigabytes).
pub(crate) fn depth(stream: &str, frame_bytes: usize, instance_id: [u8; 16]) -> Result<usize> {
    let Some((head, capacity)) = open_header(stream, instance_id, false, HEADER_BYTES)? else {
        return Ok(0);
    };
    let need = declared_bytes(stream, &head, capacity, frame_bytes)?;
    // An object no longer under its name (the stream was unlinked or recreated meanwhile) is
    // not this generation's ring, which `open` then ignores too.
    if head.is_unlinked() {
        return Ok(0);
    }
    let size = head
        .object_len()
        .map_err(|e| Error::io(stream, "reading the history segment's size", e))?;
    // In `attach`'s order: storage first (for the bytes it would map), then size.
    head.check_written(size.min(need))
        .map_err(|e| match crate::segment::unwritten(&e) {
            Some(_) => unwritten(stream, need, &e),
            None => Error::io(stream, "reading the history segment's storage", e),
        })?;
    check_holds(stream, size, need)?;
    Ok(capacity)
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

impl Stream {
    /// A cursor over this stream's history, positioned at the next frame to be written.
    /// Fails with [`Error::NoHistory`] when the stream was not created with
    /// [`StreamOptions::history`](crate::StreamOptions::history).
    pub fn cursor(&self) -> Result<Cursor<'_>> {
        self.ensure_open()?;
        let ring = self.history.as_ref().ok_or_else(|| Error::NoHistory {
            name: self.name.clone(),
        })?;
        Ok(Cursor::after_newest(self, ring))
    }

    /// Frames this stream's history keeps (0 = none).
    pub fn history_depth(&self) -> usize {
        self.history.as_ref().map_or(0, |r| r.capacity() as usize)
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
        let (len, stream) = (self.stream.size_bytes(), self.stream);
        let mut consume = Some(consume);
        let mut result = None;
        let info = self.next_with(timeout, |ptr| {
            if let Some(f) = consume.take() {
                result = Some(f(RingFrame { ptr, len, stream }));
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
    use std::fs::File;
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn the_streaming_copy_copies_every_byte_including_a_ragged_tail() {
        for len in [0usize, 1, 63, 64, 65, 4096 + 17] {
            let src: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut dst = vec![0u128; len.div_ceil(16) + 1];
            let d = dst.as_mut_ptr().cast::<u8>();
            assert!((d as usize).is_multiple_of(16));
            // SAFETY: both buffers hold `len` bytes and do not overlap; `d` is 16-byte aligned.
            unsafe { stream_copy(d, src.as_ptr(), len) };
            // SAFETY: `dst` holds at least `len` initialized bytes.
            let got = unsafe { std::slice::from_raw_parts(d, len) };
            assert_eq!(got, &src[..], "len {len}");
        }
        assert!(streams(STREAM_MIN_RING, STREAM_MIN_FRAME) == cfg!(target_arch = "x86_64"));
        assert!(!streams(STREAM_MIN_RING - 1, STREAM_MIN_FRAME));
        assert!(!streams(STREAM_MIN_RING, STREAM_MIN_FRAME - 1));
    }

    /// A ring over an anonymous mapping (Miri cannot map shm objects): appends through the
    /// payload copy, the streaming copy and a fill of the slot in place, of frames with a
    /// ragged tail, lap the ring; each slot reads back its last frame, and a lapped frame
    /// names the append that took its slot. Miri checks the slot arithmetic's bounds.
    #[test]
    fn appends_lap_a_ring_over_a_mapping_and_read_back_from_their_slots() {
        // Small frames copy; a ring of `STREAM_MIN_RING` with frames of `STREAM_MIN_FRAME`
        // streams (on x86_64).
        for (capacity, frame_bytes) in [(3, 5), (1, 64), (512, STREAM_MIN_FRAME + 17)] {
            let bytes = ring_bytes(capacity, frame_bytes).unwrap();
            if cfg!(miri) && streams(bytes, frame_bytes) {
                continue; // Miri cannot run the streaming stores (inline assembly)
            }
            let id = [7; 16];
            let r = Ring::init(Mapping::anonymous(bytes), capacity, frame_bytes, id);
            let appends = if capacity > 4 {
                3
            } else {
                2 * capacity as u64 + 1
            };
            let frame = |k: u64| -> Vec<u8> {
                (0..frame_bytes)
                    .map(|i| (i as u64 * 31 + k) as u8)
                    .collect()
            };
            let read = |k: u64| {
                let mut got = vec![0u8; frame_bytes];
                let out = r.read(k, &mut |src| {
                    // SAFETY: `src` is a slot's frame of `frame_bytes`; `got` as long.
                    unsafe { std::ptr::copy_nonoverlapping(src, got.as_mut_ptr(), frame_bytes) }
                });
                (out, got)
            };
            assert!(
                matches!(read(0).0, SlotRead::Overwritten(0)),
                "never written"
            );
            for k in 0..appends {
                let a = r.next_append().unwrap();
                let src = frame(k);
                let mut ahead = None;
                let count = if k % 2 == 0 {
                    r.append(a, src.as_ptr(), k + 1, 100 + k, 1.5, |c| ahead = Some(c))
                } else {
                    let dst = r.begin_append(&a);
                    // SAFETY: the slot's frame area, `frame_bytes` long, written only here.
                    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, frame_bytes) };
                    r.finish_append(a, k + 1, 100 + k, 1.5, |c| ahead = Some(c))
                };
                assert_eq!((count, ahead), (k + 1, Some(k + 1)));
            }
            assert_eq!(r.appended(), appends);
            let kept = appends.saturating_sub(capacity as u64);
            for k in kept..appends {
                let (out, got) = read(k);
                let SlotRead::Frame(f) = out else {
                    panic!("frame {k} of {capacity}x{frame_bytes} not read")
                };
                assert_eq!((f.count, f.frame_id, f.write_time), (k + 1, 100 + k, 1.5));
                assert!(got == frame(k), "frame {k} of {capacity}x{frame_bytes}");
            }
            if kept > 0 {
                let lapped = kept - 1;
                assert!(matches!(
                    read(lapped).0,
                    SlotRead::Overwritten(by) if by == lapped + capacity as u64
                ));
            }
        }
    }

    #[test]
    fn ring_sizes_are_bounded_and_aligned() {
        assert_eq!(stride(1), Some(128));
        assert_eq!(stride(64), Some(128));
        assert_eq!(stride(65), Some(192));
        assert_eq!(
            ring_bytes(2, 40_000),
            Ok(64 + 2 * (64 + 40_000usize.next_multiple_of(64)))
        );
        assert!(ring_bytes(0, 4).is_err());
        assert!(ring_bytes(MAX_HISTORY + 1, 4).is_err());
        assert!(ring_bytes(MAX_HISTORY, 1 << 20).is_err(), "1 TiB ring");
        assert!(ring_bytes(1, usize::MAX - 10).is_err(), "overflow");
    }

    /// Whether this process has a descriptor open on `/dev/shm/<id>`.
    fn holds_open(id: &str) -> bool {
        let object = std::path::Path::new(crate::sys::SHM_DIR).join(id);
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|to| to == object))
    }

    /// A ring keeps its mapping, not its descriptor: a stream with history holds as many open
    /// files as one without (its `_meta`, payload and lock file), for the creator and for an
    /// opener alike, and its frames still go through.
    #[test]
    fn a_ring_holds_no_descriptor() {
        let (name, s) = stream("no-fd", 4, 4);
        let r = Stream::open_readonly(&name).unwrap();
        let hist = crate::name::history_id(&name);
        assert!(!holds_open(&hist), "a descriptor of {hist} is open");
        assert!(
            holds_open(&crate::name::meta_id(&name)),
            "the check sees none"
        );
        let mut c = r.cursor().unwrap();
        s.write_slice(&[1u32, 2, 3, 4]).unwrap();
        assert_eq!(
            c.next::<u32>(Some(Duration::from_secs(5)))
                .unwrap()
                .into_raw_vec_and_offset()
                .0,
            [1, 2, 3, 4]
        );
        drop((r, s));
        crate::unlink(&name).unwrap();
    }

    /// The next append of `ring`, started ([`Ring::next_append`], [`Ring::begin_append`]).
    fn start_append(ring: &Ring) -> (Append, *mut u8) {
        let append = ring.next_append().unwrap();
        let frame = ring.begin_append(&append);
        (append, frame)
    }

    fn stream(tag: &str, len: usize, depth: usize) -> (String, Stream) {
        let name = format!("hist-{tag}-{}", std::process::id());
        let _ = crate::unlink(&name);
        let s = crate::StreamOptions::new(&name)
            .shape(&[len])
            .dtype(crate::Dtype::U32)
            .history(depth)
            .create()
            .unwrap();
        (name, s)
    }

    /// The header-only check `purge` uses: a ring naming this generation is not another's,
    /// one naming another is; a missing ring is none; a truncated header, garbage and
    /// another format version prove nothing (an error, so purge keeps the ring).
    #[test]
    fn a_rings_header_alone_tells_another_generation() {
        let (name, s) = stream("generation", 4, 2);
        let id = s.instance_id;
        let mut other = id;
        other[0] ^= 1;
        assert!(matches!(of_another_generation(&name, id), Ok(false)));
        assert!(matches!(of_another_generation(&name, other), Ok(true)));
        let path = crate::segment::path(&name::history_id(&name));
        let header = std::fs::read(&path).unwrap()[..HEADER_BYTES].to_vec();
        let mut bad_version = header.clone();
        bad_version[off::VERSION] ^= 0xff;
        for (what, planted) in [
            ("truncated", header[..HEADER_BYTES - 8].to_vec()),
            ("garbage", vec![0xab; HEADER_BYTES]),
            ("another version", bad_version),
            ("empty", Vec::new()),
        ] {
            // A new file: the stream's mapping of the ring is left as it was.
            std::fs::remove_file(&path).unwrap();
            std::fs::write(&path, &planted).unwrap();
            let r = of_another_generation(&name, other);
            assert!(
                matches!(r, Err(Error::InvalidHistory { .. } | Error::Io { .. })),
                "{what}: {r:?}"
            );
        }
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(of_another_generation(&name, other), Ok(false)));
        drop(s);
        crate::unlink(&name).unwrap();
    }

    /// Sets (`on`) or clears the immutable attribute of the file at `path`
    /// (`FS_IOC_SETFLAGS`): a file root cannot open for writing either.
    fn set_immutable(path: &std::path::Path, on: bool) -> std::io::Result<()> {
        const FS_IMMUTABLE_FL: libc::c_int = 0x10;
        let f = File::open(path)?;
        let mut flags: libc::c_int = 0;
        // SAFETY: FS_IOC_GETFLAGS stores one int through the pointer, a live local.
        if unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        flags = if on {
            flags | FS_IMMUTABLE_FL
        } else {
            flags & !FS_IMMUTABLE_FL
        };
        // SAFETY: FS_IOC_SETFLAGS reads one int through the pointer, a live local.
        if unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// A writable open of a stream whose ring it cannot map writable (the owner made the
    /// `_hist` file 0400; for root, whom modes do not stop, the file is made immutable) is
    /// refused with `InvalidHistory` naming the file: it opened without history, its writes
    /// appended nothing, and its cursors blamed the frames they missed on pyshmem. A read-only
    /// open still gets the ring.
    #[test]
    fn a_writable_open_that_cannot_map_the_ring_writable_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let (name, s) = stream("ring-unwritable", 4, 4);
        let path = crate::segment::path(&name::history_id(&name));
        let mode = |m| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m));
        mode(0o400).unwrap();
        /// Clears the immutable attribute again, whatever the test does (an immutable file
        /// cannot be unlinked).
        struct Mutable<'p>(&'p std::path::Path);
        impl Drop for Mutable<'_> {
            fn drop(&mut self) {
                let _ = set_immutable(self.0, false);
            }
        }
        let _mutable = Mutable(&path);
        if crate::sys::euid() == 0
            && let Err(e) = set_immutable(&path, true)
        {
            eprintln!(
                "skipped: running as root, which the mode does not stop, and the ring cannot be made immutable ({e})"
            );
            mode(0o600).unwrap();
            drop(s);
            crate::unlink(&name).unwrap();
            return;
        }
        match Stream::open(&name) {
            Err(Error::InvalidHistory { reason, .. }) => {
                assert!(reason.contains(&*path.to_string_lossy()), "{reason}");
                assert!(reason.contains("cannot be mapped writable"), "{reason}");
                assert!(reason.contains("open the stream read-only"), "{reason}");
            }
            other => panic!(
                "{:?}",
                other.map(|o| format!("opened with history depth {}", o.history_depth()))
            ),
        }
        let reader = Stream::open_readonly(&name).unwrap();
        assert_eq!(reader.history_depth(), 4);
        drop(reader);
        drop(_mutable);
        mode(0o600).unwrap();
        assert_eq!(Stream::open(&name).unwrap().history_depth(), 4);
        drop(s);
        crate::unlink(&name).unwrap();
    }

    /// A ring whose header declares a depth no ring may have is refused at open with the
    /// opener's remedy, not the creator's (which said to leave history unset, or to use a
    /// smaller depth, to someone who chose neither).
    #[test]
    fn a_ring_declaring_an_impossible_depth_is_refused_with_the_openers_remedy() {
        let (name, s) = stream("depth", 4, 2);
        let path = crate::segment::path(&name::history_id(&name));
        let ring = std::fs::read(&path).unwrap();
        for capacity in [0, u32::MAX] {
            let mut planted = ring.clone();
            planted[off::CAPACITY..off::CAPACITY + 4].copy_from_slice(&capacity.to_le_bytes());
            // A new file: the stream's mapping of the ring is left as it was.
            std::fs::remove_file(&path).unwrap();
            std::fs::write(&path, &planted).unwrap();
            match Stream::open_readonly(&name) {
                Err(Error::InvalidHistory { reason, .. }) => {
                    assert!(
                        reason.contains(&format!("declares {capacity} frames of 16 bytes")),
                        "{reason}"
                    );
                    assert!(
                        reason.ends_with("unlink and recreate the stream"),
                        "{reason}"
                    );
                    assert!(
                        !reason.contains("leave history unset") && !reason.contains("smaller"),
                        "{reason}"
                    );
                }
                other => panic!("capacity {capacity}: {other:?}"),
            }
        }
        drop(s);
        crate::unlink(&name).unwrap();
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
            crate::notify::PARK_CAP.set(Duration::from_secs(3600));
            crate::notify::LOOK_EVERY.set(Duration::from_secs(3600));
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
            let got = c.next_into_slice(&mut dst, Some(Duration::from_secs(2)));
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
        assert!(took < Duration::from_secs(1), "the cursor took {took:?}");
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
    /// the cursor is still made, after [`START_LOOKS`], taking its first frame whatever its
    /// count, and the next call reports what the slot's stamp says was overwritten.
    #[test]
    fn a_cursor_every_look_of_which_fails_is_still_made() {
        let (name, s) = stream("looks-fail", 4, 4);
        s.write_slice(&[1u32; 4]).unwrap();
        s.write_slice(&[2u32; 4]).unwrap();
        let ring = s.history.as_ref().unwrap();
        ring.word(ring.slot_at(2) + off::STAMP)
            .store(written_stamp(6), Ordering::Release);
        let mut c = s.cursor().unwrap();
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

    /// A ring slot counted `u64::MAX` (planted) before the header's count: the next write is
    /// refused (rather than counted `p + 1` wrapped to 0, a count going backwards) before
    /// its publication bracket, its fill never run: the sequence, the latest frame and the
    /// ring stay as they were, readable, on both append paths (the slot filled first; the
    /// payload filled first, as in-place fills and rings of streaming stores do).
    #[test]
    fn an_append_after_a_frame_counted_u64_max_is_refused_before_its_bracket() {
        use crate::write::Fill;
        let big = (STREAM_MIN_FRAME / 4, STREAM_MIN_RING / STREAM_MIN_FRAME);
        let cases = [
            ("small", 4, 4, Fill::Whole),
            ("view", 4, 4, Fill::InPlace),
            ("big", big.0, big.1, Fill::Whole),
        ];
        for (tag, len, depth, how) in cases {
            let (name, s) = stream(&format!("count-max-{tag}"), len, depth);
            let frame = vec![1u32; len];
            s.write_slice(&frame).unwrap();
            let ring = s.history.as_ref().unwrap();
            ring.word(ring.slot_at(0) + off::COUNT)
                .store(u64::MAX, Ordering::Relaxed);
            let sequence = s.write_sequence();
            let g = s.lock(Some(Duration::from_secs(1))).unwrap();
            let e = s
                .publish_locked(None, how, |dst| {
                    // SAFETY: `dst` holds the frame's `len` u32s (payload or slot).
                    unsafe { std::ptr::write_bytes(dst, 2, len * 4) };
                    Ok(())
                })
                .unwrap_err();
            drop(g);
            let text = e.to_string();
            assert!(
                matches!(&e, Error::InvalidHistory { .. })
                    && text.contains(&format!("stream '{name}'"))
                    && text.contains("18446744073709551615 has no next value")
                    && text.contains(&crate::error::count_exhausted_remedy(&name)),
                "{tag}: {text}"
            );
            let seen = (s.write_sequence(), s.count(), ring.appended());
            assert_eq!(seen, (sequence, 1, 1), "{tag}: sequence, count, head");
            let latest = s.read::<u32>().unwrap();
            assert_eq!(
                latest.as_slice().unwrap(),
                &frame[..],
                "{tag}: latest frame"
            );
            let at = ring.slot_at(0);
            // SAFETY: slot 0's frame area holds `len` u32s inside the mapping, 64-byte
            // aligned; nobody writes the ring now.
            let kept = unsafe {
                std::slice::from_raw_parts(
                    ring.seg.as_ptr().add(at + SLOT_HEADER_BYTES).cast::<u32>(),
                    len,
                )
            };
            assert_eq!(kept, &frame[..], "{tag}: the ring's frame");
            let stamp = ring.word(at + off::STAMP).load(Ordering::Relaxed);
            assert_eq!(stamp, written_stamp(0), "{tag}: the ring slot's stamp");
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
    fn drain(c: &mut Cursor<'_>) -> Vec<String> {
        let mut events = vec![];
        loop {
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

    /// Whole-frame writes fill the ring's slot first on rings of ordinary stores; views
    /// (which start from the previous frame), streams without history and rings that
    /// append with streaming stores fill the payload; every path leaves the same frame in
    /// both.
    #[test]
    fn whole_frame_writes_fill_the_ring_first_and_views_the_payload() {
        let cases = [("small", 4usize, 4usize, true), ("none", 4, 0, false)];
        // A ring that streams where streaming stores are used (x86_64): 16 KiB frames, 8 MiB
        // of them.
        let big = (STREAM_MIN_FRAME / 4, STREAM_MIN_RING / STREAM_MIN_FRAME);
        let big_streams = streams(
            ring_bytes(big.1, STREAM_MIN_FRAME).unwrap(),
            STREAM_MIN_FRAME,
        );
        let cases = cases
            .into_iter()
            .chain([("big", big.0, big.1, !big_streams)]);
        for (tag, len, depth, first) in cases {
            let (name, s) = stream(tag, len, depth);
            let payload = s.payload.as_ref().unwrap().as_ptr() as usize;
            let g = s.lock(Some(Duration::from_secs(1))).unwrap();
            let frame = vec![9u32; len];
            let filled = s
                .publish_locked(None, crate::write::Fill::Whole, |dst: *mut u8| {
                    // SAFETY: `dst` holds the frame's `len` u32s (payload or slot).
                    unsafe { std::ptr::copy_nonoverlapping(frame.as_ptr().cast(), dst, len * 4) };
                    Ok(dst as usize)
                })
                .unwrap();
            assert_eq!(filled != payload, first, "{tag}: whole-frame fill");
            let viewed = s
                .publish_locked(None, crate::write::Fill::InPlace, |dst| Ok(dst as usize))
                .unwrap();
            assert_eq!(viewed, payload, "{tag}: in-place fill");
            drop(g);
            assert_eq!(s.read::<u32>().unwrap().as_slice().unwrap(), &frame[..]);
            if depth > 0 {
                let mut c = s.cursor().unwrap();
                c.rewind_to_oldest();
                let mut dst = vec![0u32; len];
                for _ in 0..2 {
                    c.next_into_slice(&mut dst, Some(Duration::ZERO)).unwrap();
                    assert_eq!(dst, frame, "{tag}: the ring's frames");
                }
            }
            drop(s);
            crate::unlink(&name).unwrap();
        }
    }
}
