//! POSIX shared-memory objects: create, open, map, unlink.
//!
//! ## Safety
//! A mapping of a shared object can be changed by another process at any time, so nothing
//! here hands out Rust references into it: [`Segment`] only exposes its base pointer and
//! length, and the modules that touch the bytes (`header` through atomics, `seqlock` through
//! copies whose result is validated afterwards) each say why their access is sound.

use std::fs::File;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use memmap2::{MmapOptions, MmapRaw};

use crate::sys::{self, SHM_DIR};
use crate::trust;

/// Infix of the ids a creator builds its segments under before publishing them.
const CREATING: &str = ".creating-";

/// One mapped shm object. Unmapped and closed on drop (the object itself stays until unlinked).
#[derive(Debug)]
pub(crate) struct Segment {
    file: File,
    map: MmapRaw,
}

impl Segment {
    /// Creates a new object of `len` bytes (mode 0600, zero-filled), failing if it exists or
    /// if `/dev/shm` has no room for all of it (`ENOSPC`). A `len` past the file-size limit
    /// (`ulimit -f`) fails with `EFBIG` before anything is made: sizing the object would
    /// raise `SIGXFSZ`, whose default action kills the process.
    pub(crate) fn create(id: &str, len: usize) -> io::Result<Segment> {
        if crate::sys::file_size_limit().is_some_and(|limit| len as u64 > limit) {
            return Err(io::Error::from_raw_os_error(libc::EFBIG));
        }
        let file = sys::shm_open(id, libc::O_CREAT | libc::O_EXCL | libc::O_RDWR)
            .map_err(|e| taken_by_what(e, id))?;
        let made = (|| {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            file.set_len(len as u64)?;
            sys::reserve(&file, len)?;
            map(&file, len, true)
        })();
        match made {
            Ok(map) => Ok(Segment { file, map }),
            Err(e) => {
                let _ = sys::shm_unlink(id);
                Err(e)
            }
        }
    }

    /// Opens an existing object and maps at most its first `max_len` bytes: the bytes the
    /// caller uses. An object grown larger (corrupt or hostile) is not faulted in, since the
    /// mapping is populated. `len()` is then `min(object size, max_len)`; an empty object is
    /// an `InvalidData` error. Anything but a regular file owned by this user (a FIFO, socket,
    /// directory, symlink, another user's file) is refused without blocking
    /// ([`trust::Refused`]); a file of ours whose mode denies the open is [`trust::Denied`].
    pub(crate) fn open_prefix(id: &str, writable: bool, max_len: usize) -> io::Result<Segment> {
        Segment::open_checked(id, writable, max_len, false)
    }

    /// [`Segment::open_prefix`] for bytes a producer must have written (a payload, a ring's
    /// slots): an object whose storage (`st_blocks`) is short of the pages to be mapped is
    /// refused with [`Unwritten`] before it is mapped. Populating its holes would allocate
    /// them in `/dev/shm` (RAM), and once that is full the next touch of a page left
    /// unpopulated dies of `SIGBUS`. Producers never leave holes: ours reserve the storage
    /// (`posix_fallocate`, counted in `st_blocks` though `SEEK_HOLE` calls it a hole), pyshmem
    /// writes zeros over its payload before its header.
    pub(crate) fn open_written(id: &str, writable: bool, max_len: usize) -> io::Result<Segment> {
        Segment::open_checked(id, writable, max_len, true)
    }

    fn open_checked(
        id: &str,
        writable: bool,
        max_len: usize,
        written: bool,
    ) -> io::Result<Segment> {
        let flags = if writable {
            libc::O_RDWR
        } else {
            libc::O_RDONLY
        };
        let file = sys::shm_open(id, flags | trust::OPEN_FLAGS)
            .map_err(|e| trust::open_error_as(e, &path(id), writable))?;
        trust::check_file(&file, &path(id))?;
        let meta = file.metadata()?;
        let len = usize::try_from(meta.len())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?
            .min(max_len);
        if written {
            check_written(&meta, len)?;
        }
        let map = map(&file, len, writable)?;
        Ok(Segment { file, map })
    }

    /// The object's size when it was mapped.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The object's size now (`fstat` of the descriptor this mapping was made from), which
    /// may exceed [`Segment::len`] for an object opened by [`Segment::open_prefix`].
    pub(crate) fn object_len(&self) -> io::Result<usize> {
        usize::try_from(self.file.metadata()?.len())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
    }

    /// Refuses with [`Unwritten`], as [`Segment::open_written`] does, an object (now) whose
    /// storage is short of its first `len` bytes.
    pub(crate) fn check_written(&self, len: usize) -> io::Result<()> {
        check_written(&self.file.metadata()?, len)
    }

    /// Base address of the mapping (page aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Whether the object has been unlinked since it was opened.
    pub(crate) fn is_unlinked(&self) -> bool {
        sys::nlink(&self.file).map(|n| n == 0).unwrap_or(false)
    }

    /// A private copy of the first `n` bytes (for validation without re-reading shared memory),
    /// read with `pread`, not through the mapping: a page never written (pyshmem sizes its
    /// objects sparse, and a creator killed before writing leaves holes) reads as zeros
    /// without being allocated, where a fault on the mapping would have to allocate it and,
    /// `/dev/shm` full, dies of SIGBUS; an object cut short since it was mapped reads as
    /// zeros past its end, where the mapping faults too. Zeros are no valid header.
    pub(crate) fn snapshot(&self, n: usize) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        let n = n.min(self.len());
        let mut out = vec![0u8; n];
        let mut done = 0;
        while done < n {
            match self.file.read_at(&mut out[done..], done as u64) {
                Ok(0) => break,
                Ok(k) => done += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        out
    }

    /// Whether the object holds a written pyshmem header ([`crate::format::MAGIC`] at its
    /// start, read as [`Segment::snapshot`] does): only then may the header's words be
    /// touched through the mapping without a page to allocate (see `snapshot`).
    pub(crate) fn has_magic(&self) -> bool {
        self.snapshot(crate::format::MAGIC.len()) == crate::format::MAGIC
    }
}

/// A segment's mapping kept without its descriptor (one open file fewer per handle; the
/// mapping stays valid once the file is closed): for an object whose size, storage and
/// links are never asked again once it is validated (a history ring).
#[derive(Debug)]
pub(crate) struct Mapping(MmapRaw);

impl Mapping {
    /// The mapped length.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Base address of the mapping (page aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.0.as_mut_ptr()
    }
}

#[cfg(test)]
impl Mapping {
    /// A private anonymous mapping of `len` zeroed bytes, page aligned as a segment's: for
    /// tests of the code over mappings that Miri can run (it cannot map shm objects).
    pub(crate) fn anonymous(len: usize) -> Mapping {
        Mapping(MmapOptions::new().len(len).map_anon().unwrap().into())
    }
}

impl Segment {
    /// The mapping alone; the descriptor is closed.
    pub(crate) fn into_mapping(self) -> Mapping {
        Mapping(self.map)
    }
}

/// An object [`Segment::open_written`] refused: pages never written (sparse), of which
/// only `stored` bytes have storage. Travels inside an `io::Error` of kind `InvalidData`.
#[derive(Debug)]
pub(crate) struct Unwritten {
    pub(crate) stored: u64,
}

impl std::fmt::Display for Unwritten {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "never written: only {} bytes have storage (a producer left it sparse)",
            self.stored
        )
    }
}

impl std::error::Error for Unwritten {}

fn check_written(meta: &std::fs::Metadata, len: usize) -> io::Result<()> {
    // tmpfs stores whole pages: storage for `len` bytes rounded up to the smallest page
    // size is storage for every page they span, whatever the page size.
    let stored = meta.blocks().saturating_mul(512);
    if stored < (len as u64).next_multiple_of(4096) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            Unwritten { stored },
        ));
    }
    Ok(())
}

/// The [`Unwritten`] refusal `e` carries, if any.
pub(crate) fn unwritten(e: &io::Error) -> Option<&Unwritten> {
    e.get_ref().and_then(|r| r.downcast_ref::<Unwritten>())
}

fn map(file: &File, len: usize, writable: bool) -> io::Result<MmapRaw> {
    if len == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "shared memory object is empty",
        ));
    }
    // Populate: fault every page in now, so the hot path never takes a page fault.
    let mut opts = MmapOptions::new();
    opts.len(len).populate();
    if writable {
        opts.map_raw(file)
    } else {
        opts.map_raw_read_only(file)
    }
}

/// Removes an object by id; a missing object is not an error.
pub(crate) fn unlink(id: &str) -> io::Result<()> {
    match sys::shm_unlink(id) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Whether an object (of any kind, a dangling symlink included) exists under `id`. A look
/// that fails for another reason than its absence counts as one there: callers take `false`
/// as leave to remove what a stream of that id would own (its ring, its lock file).
pub(crate) fn exists(id: &str) -> bool {
    match std::fs::symlink_metadata(path(id)) {
        Ok(_) => true,
        Err(e) => e.kind() != io::ErrorKind::NotFound,
    }
}

/// Whether payload id `id` has its payload or its `_meta` (a stream, one being made or
/// removed, or what a creator killed midway left): what holds a name, whose lock file stays.
pub(crate) fn stream_parts_exist(id: &str) -> bool {
    exists(id) || exists(&format!("{id}_meta"))
}

/// The path of an object.
pub(crate) fn path(id: &str) -> std::path::PathBuf {
    std::path::Path::new(SHM_DIR).join(id)
}

/// An exclusive create's `EEXIST` where what holds the id is not a regular file of this
/// user (another user's file, a directory, a FIFO, a symlink planted in the world-writable
/// `/dev/shm`) becomes [`crate::trust::Refused`] saying what is there: no unlink of ours can
/// make room, and "exists" would send the caller looking for a stream that is not there.
fn taken_by_what(e: io::Error, id: &str) -> io::Error {
    if e.kind() != io::ErrorKind::AlreadyExists {
        return e;
    }
    let p = path(id);
    match std::fs::symlink_metadata(&p) {
        Ok(m) => trust::check_metadata(&m, &p).err().unwrap_or(e),
        Err(_) => e,
    }
}

/// The id this process builds segment `id` under before [`publish`]ing it:
/// `<id>.creating-<pid>`. A creator killed before publishing leaves only such objects,
/// which [`abandoned_creation`] recognises.
pub(crate) fn creating_id(id: &str) -> String {
    format!("{id}{CREATING}{}", std::process::id())
}

/// Gives the object `building` its final id, at once and complete; `AlreadyExists` if the id
/// is taken. A rename that refuses to replace: the object never has both names (a creator
/// killed between a hard link and the unlink of `building` left a second name, and with it
/// a stream whose unlink no handle noticed, their check being that the object has none).
/// Where the file system lacks such a rename, a hard link, then `building` unlinked.
pub(crate) fn publish(building: &str, id: &str) -> io::Result<()> {
    let (from, to) = (path(building), path(id));
    match sys::rename_noreplace(&from, &to) {
        Err(e) if e.kind() == io::ErrorKind::Unsupported => {
            std::fs::hard_link(&from, &to)?;
            // Published only with one name: else the caller's clean-up misses `to` (which is
            // ours: every creator and remover holds the name's lock, as the caller does).
            match std::fs::remove_file(&from) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    let _ = std::fs::remove_file(&to);
                    Err(e)
                }
                _ => Ok(()),
            }
        }
        r => r,
    }
}

/// For a `/dev/shm` entry named like [`creating_id`] of a stream segment: its stream's payload
/// id (whose lock names the stream) and the creator's pid.
pub(crate) fn abandoned_creation(file_name: &str) -> Option<(&str, i64)> {
    let (id, pid) = file_name.split_once(CREATING)?;
    let base = ["_meta", "_hist"]
        .iter()
        .find_map(|s| id.strip_suffix(s))
        .unwrap_or(id);
    if !crate::name::looks_like_segment_id(base) || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((base, pid.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Only an object's absence makes `exists` false: a look that fails otherwise (here a
    /// name too long for the file system) says nothing of what is there.
    #[test]
    fn a_look_that_fails_is_no_proof_of_absence() {
        let id = format!("ps_test_absent_{}", std::process::id());
        assert!(!exists(&id));
        let too_long = "x".repeat(300);
        assert_eq!(
            std::fs::symlink_metadata(path(&too_long))
                .map_err(|e| e.kind())
                .err(),
            Some(io::ErrorKind::InvalidFilename)
        );
        assert!(exists(&too_long));
    }

    /// Only a stream segment's building id (payload, `_meta` or ring, then `.creating-` and
    /// a pid) is an abandoned creation, which `purge` removes once its creator is dead: any
    /// other file in `/dev/shm` so named is no file of ours.
    #[test]
    fn only_a_segment_s_building_id_is_an_abandoned_creation() {
        let id = crate::name::segment_id("cam");
        for part in ["", "_meta", "_hist"] {
            assert_eq!(
                abandoned_creation(&format!("{id}{part}.creating-42")),
                Some((id.as_str(), 42)),
                "{part}"
            );
        }
        for other in [
            "report.creating-42".to_owned(),
            format!("{id}_gpu.creating-42"),
            format!("{id}.creating-4x2"),
            format!("{id}.creating-"),
            format!("{id}.creating--42"),
        ] {
            assert_eq!(abandoned_creation(&other), None, "{other}");
        }
    }

    /// A published object has its final id alone (a second name, from a creator killed
    /// before it removed it, hid the stream's unlink from every handle); an id taken is
    /// refused, the object left under its building id.
    #[test]
    fn a_published_object_has_one_name() {
        let id = format!("ps_test_publish_{}", std::process::id());
        let building = creating_id(&id);
        let _ = unlink(&id);
        let seg = Segment::create(&building, 64).unwrap();
        publish(&building, &id).unwrap();
        assert!(!exists(&building), "the building id still names the object");
        assert_eq!(std::fs::metadata(path(&id)).unwrap().nlink(), 1);
        unlink(&id).unwrap();
        assert!(seg.is_unlinked(), "an unlink by its id went unnoticed");

        let other = Segment::create(&building, 64).unwrap();
        let taken = Segment::create(&id, 64).unwrap();
        let e = publish(&building, &id).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert!(exists(&building) && !other.is_unlinked() && !taken.is_unlinked());
        unlink(&building).unwrap();
        unlink(&id).unwrap();
    }
}
