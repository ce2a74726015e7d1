//! Frame history: the last `n` frames of a stream in a ring beside the latest frame, and
//! [`Cursor`], which returns every frame strictly in order and says exactly how many it lost.
//! The ring is this module; the cursor is `cursor`, and [`RingFrame`], a ring frame lent where
//! it lies, is `frame`.
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

use crate::error::{Error, Result};
use crate::format::FormatError;
use crate::name;
use crate::read::FrameInfo;
use crate::segment::{Mapping, Segment};
use crate::spin::Spin;

mod cursor;
mod frame;

pub use cursor::Cursor;
pub use frame::RingFrame;

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
            "history depth {capacity} is outside 1..={MAX_HISTORY} (0 keeps no history)"
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
        #[cfg(test)]
        tests::between_header_and_slots();
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

/// Helpers the ring's tests and the cursor's share.
#[cfg(test)]
mod test_support {
    use crate::stream::Stream;

    pub(super) fn stream(tag: &str, len: usize, depth: usize) -> (String, Stream) {
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
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use super::test_support::stream;
    use super::*;
    use crate::stream::Stream;

    use crate::stream::tests::{Hook, run, set};

    thread_local! {
        /// Run once by this thread's next [`Ring::attach`], between the ring's header and
        /// its slots.
        static BETWEEN_HEADER_AND_SLOTS: Hook = std::cell::RefCell::new(None);
    }

    pub(super) fn between_header_and_slots() {
        run(&BETWEEN_HEADER_AND_SLOTS);
    }

    /// A ring moved away from its name between its header and its slots (the stream
    /// unlinked, perhaps made again, under an open) is no ring of this generation: `attach`
    /// finds none, which the open then finds out, rather than refusing the ring as one it
    /// cannot map. Put back, it attaches.
    #[test]
    fn a_ring_gone_between_its_header_and_its_slots_is_none() {
        let (name, s) = stream("gone-mid-attach", 4, 2);
        let path = crate::segment::path(&name::history_id(&name));
        let aside = path.with_extension("aside");
        let (from, to) = (path.clone(), aside.clone());
        // Renamed, not removed: the header's object is still linked, so only the slots'
        // open tells that the ring is gone.
        set(&BETWEEN_HEADER_AND_SLOTS, move || {
            std::fs::rename(from, to).unwrap()
        });
        let r = Ring::attach(&name, 16, s.instance_id, false);
        assert!(matches!(r, Ok(None)), "{r:?}");
        std::fs::rename(&aside, &path).unwrap();
        let r = Ring::attach(&name, 16, s.instance_id, false);
        assert!(
            matches!(&r, Ok(Some(ring)) if ring.capacity() == 2),
            "{r:?}"
        );
        drop(s);
        crate::unlink(&name).unwrap();
    }

    /// A ring that a process out of descriptors cannot open, at its header or (taken
    /// between) at its slots, is an I/O error of the history segment with the remedy:
    /// nothing is wrong with the ring, so it is neither taken for no ring (the stream would
    /// open without its history) nor said to be unmappable. `depth` (stat) says the same.
    /// Run again in a child whose descriptor limit the shell lowered: a full descriptor
    /// table is the whole process's.
    #[test]
    fn a_ring_opened_without_a_descriptor_left_is_an_io_error() {
        const TEST: &str = "history::tests::a_ring_opened_without_a_descriptor_left_is_an_io_error";
        const CHILD: &str = "SHMSTREAM_HISTORY_FDLESS";
        fn say(what: &str, r: Result<impl std::fmt::Debug>) {
            match r {
                Err(e @ Error::Io { .. }) => println!("said: {what} io {e}"),
                other => println!("said: {what} other {other:?}"),
            }
        }
        if std::env::var_os(CHILD).is_some() {
            let (name, s) = stream("fdless", 4, 2);
            let fillers = crate::few_descriptors::take_every_descriptor();
            say("header", Ring::attach(&name, 16, s.instance_id, false));
            say("depth", depth(&name, 16, s.instance_id));
            drop(fillers);
            let fillers = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
            let taken = fillers.clone();
            set(&BETWEEN_HEADER_AND_SLOTS, move || {
                *taken.borrow_mut() = crate::few_descriptors::take_every_descriptor();
            });
            say("slots", Ring::attach(&name, 16, s.instance_id, false));
            fillers.borrow_mut().clear();
            drop(s);
            crate::unlink(&name).unwrap();
            return;
        }
        let said = crate::few_descriptors::said_in_a_child(TEST, (CHILD, "1".as_ref()));
        assert_eq!(said.len(), 3, "{said:?}");
        for (line, what) in said.iter().zip(["header", "depth", "slots"]) {
            assert!(
                line.starts_with(&format!("{what} io opening the history segment failed"))
                    && line.contains("ulimit -n"),
                "{said:?}"
            );
        }
    }

    /// Only this generation's ring is attached or counted: a ring whose header names
    /// another generation (a leftover under the name) is none, for `attach` and `depth`
    /// alike, as is one of this generation with the magic gone.
    #[test]
    fn a_ring_of_another_generation_is_none() {
        let (name, s) = stream("other-generation", 4, 2);
        let mut other = s.instance_id;
        other[15] ^= 1;
        assert!(matches!(
            Ring::attach(&name, 16, s.instance_id, false),
            Ok(Some(_))
        ));
        assert!(matches!(depth(&name, 16, s.instance_id), Ok(2)));
        let r = Ring::attach(&name, 16, other, false);
        assert!(matches!(r, Ok(None)), "{r:?}");
        assert!(matches!(depth(&name, 16, other), Ok(0)));
        let path = crate::segment::path(&name::history_id(&name));
        let mut ring = std::fs::read(&path).unwrap();
        ring[0] ^= 0xff;
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, &ring).unwrap();
        let r = Ring::attach(&name, 16, s.instance_id, false);
        assert!(matches!(r, Ok(None)), "{r:?}");
        assert!(matches!(depth(&name, 16, s.instance_id), Ok(0)));
        drop(s);
        crate::unlink(&name).unwrap();
    }

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
        // The deepest ring a depth may ask for (1..=MAX_HISTORY) is made.
        assert_eq!(
            ring_bytes(MAX_HISTORY, 4),
            Ok(64 + MAX_HISTORY * (64 + 64)),
            "the largest depth"
        );
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
    /// opener's remedy, not the creator's (which said that 0 keeps no history, or to use a
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
                        !reason.contains("keeps no history") && !reason.contains("smaller"),
                        "{reason}"
                    );
                }
                other => panic!("capacity {capacity}: {other:?}"),
            }
        }
        drop(s);
        crate::unlink(&name).unwrap();
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
