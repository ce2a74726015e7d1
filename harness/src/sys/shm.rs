//! A bare shared-memory region for the floor measurements.
//!
//! The region is a file in `/dev/shm` (what `shm_open` creates on Linux) mapped
//! `MAP_SHARED` by both processes. It offers exactly what the C floors use: 64-bit and
//! 32-bit atomics at fixed offsets, and plain `memcpy` into and out of a payload.
//!
//! ## Safety of the copies
//! [`ShmRegion::copy_in`] and [`ShmRegion::copy_out`] may race with the other process
//! (that is the point of a seqlock). A racing copy can tear; the floor protocol, like
//! the library's, re-checks the sequence after the copy and discards torn data, and the
//! bytes are never interpreted as anything but bytes (or, for `bool`, checked as the library
//! checks them). This is the compromise that
//! crossbeam's `AtomicCell::atomic_load` documents; it is the code the floor has to
//! measure, because it is what `memcpy` on a shared mapping does.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64};

use memmap2::{MmapOptions, MmapRaw};

/// A named, mapped, shared-memory region. The creator removes the name on drop.
#[derive(Debug)]
pub struct ShmRegion {
    map: MmapRaw,
    path: PathBuf,
    is_owner: bool,
    _file: File,
}

/// The directory that holds POSIX shared-memory objects on Linux.
const SHM_DIR: &str = "/dev/shm";

impl ShmRegion {
    /// Creates a new region of `len` bytes (zero-filled, its storage reserved as the
    /// library's segments': a `/dev/shm` without room for it is an error here, not a
    /// `SIGBUS` at the first touch); fails if the name exists. Its errors name the path; a
    /// failure after the file was made removes it.
    pub fn create(name: &str, len: usize) -> io::Result<Self> {
        let path = Self::path_of(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| {
                let why = if e.kind() == io::ErrorKind::AlreadyExists {
                    "already exists (left by a run that died hard, its pid reused): \
                     remove it if no process uses it"
                        .to_string()
                } else {
                    format!("cannot be created: {e}")
                };
                io::Error::new(e.kind(), format!("{}: {why}", path.display()))
            })?;
        let sized = file.set_len(len.max(1) as u64);
        let reserved = sized.and_then(|()| {
            shmstream::harness_support::reserve(&file, len.max(1)).map_err(|e| {
                if e.raw_os_error() != Some(libc::ENOSPC) {
                    return e;
                }
                let free = shmstream::harness_support::shm_available()
                    .map_or(String::new(), |b| format!(" ({b} bytes free)"));
                io::Error::new(
                    e.kind(),
                    format!(
                        "{SHM_DIR} has no room for it{free}: remove streams left by dead \
                         processes (`shmstream purge`), enlarge {SHM_DIR} (`mount -o \
                         remount,size=... {SHM_DIR}`), or give the job smaller sizes ({e})"
                    ),
                )
            })
        });
        let map = match reserved.and_then(|()| MmapOptions::new().len(len.max(1)).map_raw(&file)) {
            Ok(map) => map,
            Err(e) => {
                // The file is this call's (`create_new`), and no region owns it yet.
                let _ = std::fs::remove_file(&path);
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "sizing, reserving or mapping {} to {len} bytes: {e}",
                        path.display()
                    ),
                ));
            }
        };
        Ok(Self {
            map,
            path,
            is_owner: true,
            _file: file,
        })
    }

    /// Opens an existing region; its size must be at least `len` bytes.
    pub fn open(name: &str, len: usize) -> io::Result<Self> {
        let path = Self::path_of(name)?;
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let size = file.metadata()?.len();
        if size < len as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("shm region {name} has {size} bytes, expected at least {len}"),
            ));
        }
        let map = MmapOptions::new().len(len.max(1)).map_raw(&file)?;
        Ok(Self {
            map,
            path,
            is_owner: false,
            _file: file,
        })
    }

    fn path_of(name: &str) -> io::Result<PathBuf> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad shm region name {name:?}"),
            ));
        }
        Ok(PathBuf::from(SHM_DIR).join(name))
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Always false: a region has at least one byte.
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    #[inline]
    fn check(&self, offset: usize, len: usize, align: usize) {
        assert!(
            offset.is_multiple_of(align),
            "offset {offset} is not {align}-aligned"
        );
        assert!(
            offset
                .checked_add(len)
                .is_some_and(|end| end <= self.map.len()),
            "range {offset}+{len} outside region"
        );
    }

    /// The 64-bit atomic at `offset` (must be 8-aligned and inside the region).
    #[inline]
    pub fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        self.check(offset, 8, 8);
        // SAFETY:
        // - the pointer is inside the mapping (checked above) and 8-aligned (the mapping
        //   is page-aligned and `offset` is a multiple of 8);
        // - the mapping lives as long as `&self`, which bounds the returned lifetime;
        // - every access to these bytes, in this and the other process, is atomic
        //   (the floor protocol never copies over its control words).
        unsafe { AtomicU64::from_ptr(self.map.as_mut_ptr().add(offset).cast::<u64>()) }
    }

    /// The 32-bit atomic at `offset` (must be 4-aligned and inside the region); futex words.
    #[inline]
    pub fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        self.check(offset, 4, 4);
        // SAFETY: as in `atomic_u64`, with 4-byte size and alignment.
        unsafe { AtomicU32::from_ptr(self.map.as_mut_ptr().add(offset).cast::<u32>()) }
    }

    /// `memcpy` of `src`'s bytes into the region at `offset` (any element type: a floor
    /// copies from the same buffers as the stream it bounds).
    pub fn copy_in<T: shmstream::Element>(&self, offset: usize, src: &[T]) {
        let len = std::mem::size_of_val(src);
        self.check(offset, len, 1);
        // SAFETY:
        // - destination range is inside the mapping (checked), source is a valid slice of
        //   `len` bytes; element types have no padding, so every source byte is initialized;
        // - the two cannot overlap: `src` is private memory of this process;
        // - a concurrent reader in another process may observe a torn copy; the floor
        //   protocol validates with its sequence word (see the module docs).
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.as_ptr().cast::<u8>(),
                self.map.as_mut_ptr().add(offset),
                len,
            )
        }
    }

    /// Copies out of the region at `offset` into `dst` as the library copies a frame out
    /// ([`shmstream::Element::copy_from_shared`]: a plain `memcpy`, a bool byte read as
    /// `byte != 0`).
    pub fn copy_out<T: shmstream::Element>(&self, offset: usize, dst: &mut [T]) {
        self.check(offset, std::mem::size_of_val(dst), 1);
        // SAFETY:
        // - source range is inside the mapping (checked) and `dst` is valid for writes of
        //   `dst.len()` elements; `dst` is private, so they cannot overlap;
        // - the bytes may be torn by a concurrent writer; callers re-check their sequence
        //   word and discard the copy (module docs); `copy_from_shared` writes only valid
        //   values of `T`, whatever the bytes.
        unsafe { T::copy_from_shared(self.map.as_ptr().add(offset), dst.as_mut_ptr(), dst.len()) };
    }

    /// Touches every page so that the measurement loop takes no page faults.
    pub fn prefault(&self) {
        let page = 4096;
        let zero = [0u8; 1];
        let mut off = 0;
        while off < self.map.len() {
            self.copy_in(off, &zero);
            off += page;
        }
    }
}

impl Drop for ShmRegion {
    fn drop(&mut self) {
        if self.is_owner {
            // Ignore errors: the name may already be gone, and Drop must not panic.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    /// A region that cannot be sized (a length past `off_t`) or mapped (past the address
    /// space) leaves no file behind, and the error names the path.
    #[test]
    fn a_region_that_cannot_be_sized_or_mapped_leaves_no_file() {
        for (i, len) in [usize::MAX, 1 << 62].into_iter().enumerate() {
            let name = format!("harness-sys-unsized-{i}-{}", std::process::id());
            let path = PathBuf::from(SHM_DIR).join(&name);
            let err = ShmRegion::create(&name, len).unwrap_err().to_string();
            let left = path.exists();
            let _ = std::fs::remove_file(&path);
            assert!(!left, "{} was left ({err})", path.display());
            assert!(err.contains(&*path.to_string_lossy()), "{err}");
        }
    }

    /// A region larger than /dev/shm is refused at creation, naming the path, its size and
    /// the remedies, and no file is left (it was once created sparse, and the floor child
    /// touching its pages died of SIGBUS, said only as "signal: 7"). The request is the
    /// file system's whole size plus a page: tmpfs refuses that at once, where a size just
    /// over the free room would have it allocate every free byte before giving up.
    #[test]
    fn a_region_larger_than_the_room_in_dev_shm_is_refused() {
        let path_c = std::ffi::CString::new(SHM_DIR).unwrap();
        // SAFETY: a zeroed statvfs is valid; `path_c` is a NUL-terminated path.
        let (total, page) = unsafe {
            let mut st: libc::statvfs = std::mem::zeroed();
            if libc::statvfs(path_c.as_ptr(), &mut st) != 0 {
                eprintln!("skipped: statvfs {SHM_DIR} failed");
                return;
            }
            let blocks: u64 = st.f_blocks;
            let block: u64 = st.f_frsize;
            (
                blocks.checked_mul(block),
                libc::sysconf(libc::_SC_PAGESIZE) as u64,
            )
        };
        let Some(len) = total
            .and_then(|n| n.checked_add(page))
            .and_then(|n| usize::try_from(n).ok())
        else {
            eprintln!("skipped: {SHM_DIR} is too large ({total:?} bytes) to ask for more");
            return;
        };
        let name = format!("harness-sys-nospace-{}", std::process::id());
        let path = PathBuf::from(SHM_DIR).join(&name);
        let err = ShmRegion::create(&name, len).unwrap_err().to_string();
        let left = path.exists();
        let _ = std::fs::remove_file(&path);
        assert!(!left, "{} was left ({err})", path.display());
        assert!(
            err.contains(&format!(
                "sizing, reserving or mapping {} to {len} bytes: {SHM_DIR} has no room for it (",
                path.display()
            )) && err.contains("`shmstream purge`")
                && err.contains("give the job smaller sizes"),
            "{err}"
        );
    }

    #[test]
    fn a_created_region_is_visible_to_an_opener() {
        let name = format!("harness-sys-test-{}", std::process::id());
        let sut = ShmRegion::create(&name, 8192).unwrap();
        sut.atomic_u64(64).store(7, Ordering::Release);
        sut.copy_in(128, b"hello");
        let other = ShmRegion::open(&name, 8192).unwrap();
        assert_eq!(other.atomic_u64(64).load(Ordering::Acquire), 7);
        let mut buf = [0u8; 5];
        other.copy_out(128, &mut buf);
        assert_eq!(&buf, b"hello");
        drop(other);
        drop(sut);
        assert!(ShmRegion::open(&name, 8192).is_err());
    }
}
