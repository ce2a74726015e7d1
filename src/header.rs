//! The mapped header's mutable fields as atomics, at the offsets `format` defines.
//!
//! The immutable fields are read once at open (from a validated snapshot); only the fields
//! writers change after creation are touched here, always through atomics, because other
//! processes (ours or pyshmem's) load and store them concurrently.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64};

use crate::format::{META_BYTES, offset};
use crate::segment::Segment;

/// Atomic views of one mapped `_meta` segment. Valid while the owning [`Segment`] lives:
/// the stream keeps both in one struct and never moves the mapping.
#[derive(Debug)]
pub(crate) struct MappedHeader {
    base: *mut u8,
}

// SAFETY: the header is only accessed through atomics, which are safe to share and send.
unsafe impl Send for MappedHeader {}
// SAFETY: as above.
unsafe impl Sync for MappedHeader {}

impl MappedHeader {
    /// # Safety
    /// `meta` must be a writable mapping of at least [`META_BYTES`] bytes that outlives the
    /// returned value.
    pub(crate) unsafe fn new(meta: &Segment) -> MappedHeader {
        debug_assert!(meta.len() >= META_BYTES);
        MappedHeader {
            base: meta.as_ptr(),
        }
    }

    /// A header over an anonymous mapping, for tests Miri can run (no shm object).
    ///
    /// # Safety
    /// As [`MappedHeader::new`]: `meta` outlives the returned value.
    #[cfg(test)]
    pub(crate) unsafe fn over(meta: &crate::segment::Mapping) -> MappedHeader {
        assert!(meta.len() >= META_BYTES);
        MappedHeader {
            base: meta.as_ptr(),
        }
    }

    fn at<A>(&self, off: usize) -> &A {
        debug_assert!(
            off.is_multiple_of(std::mem::align_of::<A>())
                && off + std::mem::size_of::<A>() <= META_BYTES
        );
        // SAFETY: the mapping is page aligned and every offset used is a multiple of the
        // atomic's size (asserted above), inside the 512-byte segment (constructor contract);
        // other processes access these words only with aligned loads/stores of the same width
        // (pyshmem uses direct aligned accesses on x86-64 and libatomic elsewhere).
        unsafe { &*self.base.add(off).cast::<A>() }
    }

    /// The seqlock word.
    pub(crate) fn sequence(&self) -> &AtomicI64 {
        self.at(offset::WRITE_SEQUENCE)
    }
    /// The futex word: the low 32 bits of the sequence (little-endian). Only its address is
    /// used, as the kernel's futex key: a load through this view would be a mixed-size
    /// access racing the sequence's 8-byte stores. FUTEX_WAIT's 4-byte read is the kernel's
    /// (atomic on the hardware); Miri models it as a Rust atomic load and reports that race.
    pub(crate) fn futex_word(&self) -> &AtomicU32 {
        self.at(offset::WRITE_SEQUENCE)
    }
    /// Completed writes.
    pub(crate) fn count(&self) -> &AtomicU64 {
        self.at(offset::COUNT)
    }
    /// `f64` bits of the last write's UNIX time.
    pub(crate) fn write_time(&self) -> &AtomicU64 {
        self.at(offset::WRITE_TIME)
    }
    /// User frame token.
    pub(crate) fn frame_id(&self) -> &AtomicU64 {
        self.at(offset::FRAME_ID)
    }
    /// Pid holding the write lock (0 = none).
    pub(crate) fn lock_owner_pid(&self) -> &AtomicI64 {
        self.at(offset::LOCK_OWNER_PID)
    }
    /// Re-entrant depth of the write lock.
    pub(crate) fn lock_depth(&self) -> &AtomicU32 {
        self.at(offset::LOCK_DEPTH)
    }
    /// The first 8 bytes (the magic), as one word.
    pub(crate) fn magic_word(&self) -> &AtomicU64 {
        self.at(offset::MAGIC)
    }
}
