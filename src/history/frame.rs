//! [`RingFrame`]: a frame of the history ring lent where it lies, and the only ways to move
//! its bytes out (a copy into a buffer, whole, in part or word by word through a map, and a
//! write to a file), none of which lets Rust code read bytes the writer may be overwriting.

use std::fs::File;
use std::os::fd::AsRawFd;

use crate::error::{Error, Result};
use crate::stream::Stream;

/// A frame in the history ring, lent by [`Cursor::next_in_place`]. Its bytes may change
/// under it (the writer laps the cursor), which that call detects afterwards; so it offers
/// no slice of them, only moves that never let Rust code read them.
///
/// [`Cursor::next_in_place`]: super::Cursor::next_in_place
#[derive(Debug)]
pub struct RingFrame<'a> {
    ptr: *const u8,
    stream: &'a Stream,
}

impl<'a> RingFrame<'a> {
    /// The frame at `ptr` in `stream`'s history ring, of the stream's frame size
    /// ([`Stream::size_bytes`]), which every move below takes as its length.
    ///
    /// # Safety
    /// `ptr` must point to a whole frame of a slot of `stream`'s ring mapping (the stream's
    /// frame size in bytes), which the borrow of `stream` keeps mapped for `'a`. The writer
    /// may overwrite those bytes meanwhile: the moves below never let Rust code read them.
    /// (Not for soundness but for correctness, the caller checks afterwards and discards
    /// what was done with a frame the writer lapped.)
    pub(super) unsafe fn new(ptr: *const u8, stream: &'a Stream) -> RingFrame<'a> {
        RingFrame { ptr, stream }
    }
}

impl RingFrame<'_> {
    /// The frame's size in bytes.
    pub fn len(&self) -> usize {
        self.stream.size_bytes()
    }

    /// Whether the frame has no bytes (a stream of an empty shape).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies the frame into `dst`, which must be [`RingFrame::len`] bytes long.
    pub fn copy_into(&self, dst: &mut [u8]) -> Result<()> {
        self.stream.ensure_byte_len(std::mem::size_of_val(dst))?;
        // SAFETY: `ptr` is the slot's frame of `len` bytes inside the mapping the borrow
        // keeps mapped, and `dst` the caller's exclusive buffer of `len` bytes (checked). The
        // copy may race an append; the cursor discards the frame then.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr, dst.as_mut_ptr(), self.len()) };
        Ok(())
    }

    /// Copies `dst.len()` bytes from `offset` in the frame into `dst`: a part of the frame
    /// (a header, a region of interest) without copying the rest.
    pub fn copy_range_into(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        if offset
            .checked_add(dst.len())
            .is_none_or(|end| end > self.len())
        {
            return Err(Error::Unsupported {
                name: self.stream.name.clone(),
                what: format!(
                    "bytes {offset}..{} of a {}-byte frame: read a range within the frame",
                    offset.saturating_add(dst.len()),
                    self.len()
                ),
            });
        }
        // SAFETY: `offset + dst.len() <= len` (checked), so the source lies within the slot's
        // frame inside the mapping the borrow keeps mapped; `dst` is the caller's exclusive
        // buffer. The copy may race an append; the cursor discards the frame then.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(offset), dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    /// Copies the frame into `dst` as words of `T`, each passed through `map` on the way:
    /// one pass over the ring for a tool that converts pixels (a recorder writing
    /// big-endian FITS). `dst` must hold exactly [`RingFrame::len`] bytes.
    pub fn map_into<T: bytemuck::Pod>(&self, dst: &mut [T], map: impl Fn(T) -> T) -> Result<()> {
        self.stream.ensure_byte_len(std::mem::size_of_val(dst))?;
        let src = self.ptr.cast::<T>();
        for (i, d) in dst.iter_mut().enumerate() {
            // SAFETY: word `i` lies within the frame's `len` bytes (checked: `dst` holds as
            // many words); unaligned reads need no alignment; `T: Pod` accepts any bits. The
            // read may race an append; the cursor discards the frame then.
            *d = map(unsafe { src.add(i).read_unaligned() });
        }
        Ok(())
    }

    /// Writes the frame to `file` at `offset` straight from the ring: the kernel copies it
    /// into the file, nothing is copied in user space. An error leaves part of the frame
    /// written; the file's cursor does not move.
    pub fn write_at(&self, file: &File, offset: u64) -> std::io::Result<()> {
        let mut done = 0usize;
        while done < self.len() {
            let at = offset
                .checked_add(done as u64)
                .and_then(|o| libc::off_t::try_from(o).ok())
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
            // SAFETY: `ptr..ptr + len` is the slot's frame inside the ring's mapping, which
            // the borrow `'a` keeps mapped; `done < len`. The kernel only reads the bytes
            // (concurrent stores by the writer make them garbage, not unsound: no Rust
            // reference to them exists), and the cursor discards a frame overwritten meanwhile.
            let n = unsafe {
                libc::pwrite(
                    file.as_raw_fd(),
                    self.ptr.add(done).cast(),
                    self.len() - done,
                    at,
                )
            };
            match n {
                0 => return Err(std::io::ErrorKind::WriteZero.into()),
                n if n > 0 => done += n as usize,
                _ => {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }
}
