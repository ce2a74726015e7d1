//! Building a new stream's segments so that a creator killed at any point leaves either
//! nothing visible or a complete stream.
//!
//! The payload and `_meta` are built under private ids (`<id>.creating-<pid>`, see
//! [`segment::creating_id`]): sized, mapped, header written. Only then are they published
//! under their real ids by exclusive renames ([`segment::publish`]), `_meta` first (an opener
//! that finds the header but not yet the payload retries for a moment), then the payload. So
//! a crash leaves:
//! - before publishing: only `*.creating-<pid>` objects of a dead pid, which `purge` removes;
//! - between the two renames: a valid header without payload, a stream that `list` shows and
//!   `unlink`/`purge` remove;
//! - after: a complete stream.
//!
//! A history ring (`_hist`) is built the same way and published between `_meta` and the
//! payload: an opener that finds the payload finds the ring, and `unlink`/`purge` remove a
//! ring left beside a header without payload.

use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::format::{self, Header, META_BYTES, NewHeader};
use crate::header::MappedHeader;
use crate::segment::{self, Segment};
use crate::stream::StreamOptions;
use crate::{name, sys};

/// What [`build`] hands to the new `Stream`.
pub(crate) type Built = (
    Header,
    MappedHeader,
    Segment,
    Segment,
    crate::gpu::GpuLink,
    Option<crate::history::Ring>,
);

/// Fails when a `_meta` or payload of `name` exists: with [`Error::Untrusted`] when what is
/// there is not a stream of ours, else as [`why_taken`] says. Needs no lock:
/// [`Stream::create`](crate::Stream::create) asks before it waits for the name's lock (a
/// writer may hold that for its whole run), and [`build`] again under it.
pub(crate) fn refuse_taken(name: &str) -> Result<()> {
    for id in [name::meta_id(name), name::segment_id(name)] {
        if let Ok(m) = std::fs::symlink_metadata(segment::path(&id)) {
            crate::trust::check_metadata(&m, &segment::path(&id))
                .map_err(|e| Error::io(name, "creating a shared-memory segment", e))?;
            return Err(why_taken(name));
        }
    }
    Ok(())
}

/// Why `name`, whose `_meta` or payload is there, cannot be created:
/// - the segments are another stream's whose name has the same segment id
///   ([`catalog::collision`](crate::catalog::collision));
/// - they are an abandoned creation, what a pyshmem creator killed before its header leaves
///   (it makes the payload, then the `_meta`, sizes both, fills the payload, and only then
///   writes the header's magic, the rest of the header after; its `create` holds the name's
///   lock throughout): a payload without `_meta`, or a `_meta` without a header (empty, or
///   its magic all zero), still so once this call holds the name's lock. Only `unlink` by
///   name removes it (`purge` leaves a payload without a header alone: any file may look like
///   one), so the error names it;
/// - else [`Error::AlreadyExists`]: a stream, or a creation at work.
///
/// The `_meta` is read with `pread` ([`Segment::snapshot`]): one of holes in a full
/// `/dev/shm` must not be faulted in.
fn why_taken(name: &str) -> Error {
    match headerless(name) {
        Err(collision) => collision,
        Ok(true) => match still_so_under_the_lock(name, || matches!(headerless(name), Ok(true))) {
            Some(true) => abandoned(name),
            // Another process holds the name's lock over a stream without its header: a
            // creation at work (pyshmem's fills its payload before it writes the header).
            None => Error::AlreadyExists {
                name: name.to_owned(),
                being_created: true,
            },
            Some(false) => Error::AlreadyExists {
                name: name.to_owned(),
                being_created: false,
            },
        },
        Ok(false) => Error::AlreadyExists {
            name: name.to_owned(),
            being_created: false,
        },
    }
}

/// Whether what holds `name` is a payload without `_meta` or a `_meta` without a header
/// (see [`why_taken`]); the collision error when the `_meta` is another stream's.
fn headerless(name: &str) -> std::result::Result<bool, Error> {
    Ok(
        match Segment::open_prefix(&name::meta_id(name), false, META_BYTES) {
            Ok(meta) => {
                if let Some(other) = crate::catalog::colliding_stream(name, &meta) {
                    return Err(crate::catalog::collision(name, &other));
                }
                meta.snapshot(format::MAGIC.len()).iter().all(|&b| b == 0)
            }
            // Empty: sized after it was made.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => true,
            // No `_meta`: the payload alone (or nothing any more).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                segment::exists(&name::segment_id(name))
            }
            Err(_) => false,
        },
    )
}

/// Whether `check` holds once nobody else holds `name`'s lock, which every creator holds
/// while it builds (ours, and pyshmem 1.4.0's, whose `create` runs under
/// `_locked_stream_name`): looked at again while this call holds it, as a creator may have
/// finished between the caller's look and the lock. No lock file at the path: nobody who
/// locks it now is excluded by one held elsewhere, and none is made here. The caller's own
/// hold (under [`build`]) is no creator at work: the lock is reentrant. `None` when another
/// process holds the lock (a creator at work), `Some(false)` when it cannot be looked at.
fn still_so_under_the_lock(name: &str, check: impl Fn() -> bool) -> Option<bool> {
    let path = name::lock_path(name);
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(check()),
        Err(_) => return Some(false),
        Ok(_) => {}
    }
    let Ok(lock) = crate::lock::LockFile::attach(&path, name) else {
        return Some(false);
    };
    // A file removed from the path: this thread holds it (an older generation's lock, which
    // `attach` cannot replace while held), and taking it again would exclude nobody working
    // on the one now there.
    if lock.is_unlinked() {
        return Some(false);
    }
    match crate::stream::NameLock::try_take(&lock, name) {
        Ok(Some(_held)) => Some(check()),
        Ok(None) => None,
        Err(_) => Some(false),
    }
}

/// The error of `create` for a name an abandoned creation holds (see [`why_taken`]).
fn abandoned(name: &str) -> Error {
    Error::Unsupported {
        name: name.to_owned(),
        what: format!(
            "the name is held by an abandoned creation (a payload without its `_meta`, or a \
             `_meta` without a header, as a creator killed before it wrote the header leaves \
             them; no creator holds the name's lock): remove it with {}, then create the \
             stream again",
            name::unlink_remedy(name)
        ),
    }
}

/// Bytes of shared memory a stream of `size` payload bytes keeping `history` frames takes:
/// its payload, `_meta` and history ring, each rounded up to whole pages as tmpfs stores
/// them.
pub(crate) fn stream_bytes(size: usize, history: usize) -> u64 {
    let ring = match history {
        0 => 0,
        n => crate::history::ring_bytes(n, size).unwrap_or(usize::MAX),
    };
    segments_bytes(
        &[size as u64, META_BYTES as u64, ring as u64],
        sys::page_size() as u64,
    )
}

/// Bytes tmpfs takes for segments of `lens` bytes: each rounded up to whole `page`s.
fn segments_bytes(lens: &[u64], page: u64) -> u64 {
    lens.iter()
        .map(|&len| sys::whole_pages(len, page))
        .fold(0, u64::saturating_add)
}

/// [`Error::FileSizeLimit`] when a segment of the stream (`size` payload bytes, `history`
/// frames kept) is over [`sys::file_size_limit`]: the payload, else the history ring (whose
/// remedy is fewer frames). Asked before any segment is made, so none is made for nothing.
fn refuse_over_file_size_limit(name: &str, size: usize, history: usize) -> Result<()> {
    let Some(limit) = sys::file_size_limit() else {
        return Ok(());
    };
    // A depth `Ring::create` refuses is said by it.
    let ring = match history {
        0 => 0,
        n => crate::history::ring_bytes(n, size).map_or(0, |b| b as u64),
    };
    let over = |needed: u64, ring| Error::FileSizeLimit {
        name: name.to_owned(),
        needed,
        limit,
        ring,
    };
    match (size as u64).max(META_BYTES as u64) {
        payload if payload > limit => Err(over(payload, false)),
        _ if ring > limit => Err(over(ring, true)),
        _ => Ok(()),
    }
}

/// [`Error::NoSpace`] when a stream of `needed` bytes is more than this process's memory
/// cgroup has left under its limits (its own and its parents'), with the swap it may still
/// fill ([`crate::cgroup`]):
/// filling its pages past that would get the process OOM-killed, leaving its half-made
/// segments behind.
fn refuse_over_cgroup_limit(name: &str, needed: u64) -> Result<()> {
    match crate::cgroup::room_now() {
        Some(room) if needed > room.left.saturating_add(room.swap) => Err(Error::NoSpace {
            name: name.to_owned(),
            needed,
            available: crate::sys::shm_available(),
            shortage: crate::error::Shortage::Cgroup {
                limit: room.limit,
                left: room.left,
                swap: room.swap,
            },
        }),
        _ => Ok(()),
    }
}

/// Builds and publishes the segments of stream `o.name` (`size` payload bytes). The caller
/// holds the stream's name lock.
pub(crate) fn build(
    o: &StreamOptions,
    size: usize,
    flags: u32,
    device_index: i32,
) -> Result<Built> {
    let name = o.name.as_str();
    let taken = || Error::AlreadyExists {
        name: name.to_owned(),
        being_created: false,
    };
    let io = |e| Error::io(name, "creating a shared-memory segment", e);
    let (payload_id, meta_id) = (name::segment_id(name), name::meta_id(name));
    // Fail early without building a large payload for nothing (the renames re-check).
    refuse_taken(name)?;
    refuse_over_file_size_limit(name, size, o.history)?;
    refuse_over_cgroup_limit(name, stream_bytes(size, o.history))?;
    let history_id = name::history_id(name);
    // A ring name squatted by something not ours is said as such too (ours, a leftover, is
    // replaced below).
    if o.history > 0
        && let Ok(m) = std::fs::symlink_metadata(segment::path(&history_id))
    {
        crate::trust::check_metadata(&m, &segment::path(&history_id)).map_err(io)?;
    }
    let building = [
        segment::creating_id(&payload_id),
        segment::creating_id(&meta_id),
        segment::creating_id(&history_id),
    ];
    let forget_building = || {
        for id in &building {
            let _ = segment::unlink(id);
        }
    };
    // Leftovers of an earlier process with our pid are dead creations: replace them.
    forget_building();
    // Parts an earlier generation left under their real ids (no stream of this name exists
    // now, and we hold its lock, as every creator, pyshmem's too, does while it builds): a
    // ring (pyshmem's unlink leaves it, as does a crash), and the `_gpu` of a GPU creator
    // killed before it published its header. Replaced by this stream's own; each goes even
    // when this stream keeps none (it cannot be this generation's).
    let _ = segment::unlink(&history_id);
    let _ = segment::unlink(&name::gpu_id(name));
    let made = (|| {
        let segment = |id: &str, bytes: usize| {
            Segment::create(id, bytes)
                .map_err(|e| Error::creating(name, "creating a shared-memory segment", bytes, e))
        };
        let payload = segment(&building[0], size)?;
        let meta = segment(&building[1], META_BYTES)?;
        let instance_id =
            sys::random_id().map_err(|e| Error::io(name, "drawing an instance id", e))?;
        let history = match o.history {
            0 => None,
            #[cfg(test)]
            n if tests::RING_FULL.with(|f| f.replace(false)) => {
                let bytes = crate::history::ring_bytes(n, size).unwrap_or(0);
                let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
                return Err(Error::creating(
                    name,
                    "creating the history segment",
                    bytes,
                    full,
                ));
            }
            n => Some(crate::history::Ring::create(
                name,
                &building[2],
                n,
                size,
                instance_id,
            )?),
        };
        Ok((payload, meta, instance_id, history))
    })();
    // The whole stream (with `extra` bytes of other segments) did not fit, in the room there
    // is without its parts made so far (called once they are removed).
    let whole_stream = |e: Error, extra: u64| match e {
        Error::NoSpace { name, .. } => {
            let needed = stream_bytes(size, o.history)
                .saturating_add(sys::whole_pages(extra, sys::page_size() as u64));
            let room = sys::shm_room();
            // Payload and `_meta`, the ring, the other segment.
            let segments = 2 + u64::from(o.history > 0) + u64::from(extra > 0);
            Error::NoSpace {
                name,
                needed,
                available: room.map(|r| r.bytes),
                shortage: match room.is_some_and(|r| r.out_of_inodes(segments)) {
                    true => crate::error::Shortage::Inodes,
                    false => crate::error::Shortage::Bytes,
                },
            }
        }
        e => e,
    };
    let (payload, meta, instance_id, history) = made.map_err(|e| {
        forget_building();
        whole_stream(e, 0)
    })?;
    let pid = sys::pid();
    // GPU streams: the device payload and its `_gpu` segment exist before the header is
    // published, so an opener that sees the header can attach.
    #[cfg(feature = "cuda")]
    let gpu = match (flags & format::FLAG_GPU != 0).then_some(device_index) {
        Some(dev) => match crate::gpu::driver::create(name, dev, size, instance_id, pid) {
            Ok(a) => crate::gpu::GpuLink::Attached(Box::new(a)),
            Err(e) => {
                forget_building();
                // Unmapped too: tmpfs frees the pages at the last unmap, not the unlink.
                drop((payload, meta, history));
                return Err(whole_stream(
                    e,
                    crate::gpu::layout::GPU_SEGMENT_BYTES as u64,
                ));
            }
        },
        None => crate::gpu::GpuLink::None,
    };
    #[cfg(not(feature = "cuda"))]
    let gpu = crate::gpu::GpuLink::None;
    let abandon = || {
        forget_building();
        let _ = segment::unlink(&name::gpu_id(name));
    };
    let bytes = format::encode_new(&NewHeader {
        name,
        dtype: o.dtype,
        shape: &o.shape,
        flags,
        device_index,
        creator_pid: pid,
        instance_id,
    });
    // SAFETY: `meta` is a fresh writable mapping of META_BYTES that outlives `header`
    // (both go into the Stream built from the result).
    let header = unsafe { MappedHeader::new(&meta) };
    // SYNC POINT (init): every byte after the magic first, then the magic with Release.
    // The object is still private; the Release store also orders the header before the rename
    // that publishes it.
    // SAFETY: the mapping is META_BYTES long and nobody else can reach it yet.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes[8..].as_ptr(), meta.as_ptr().add(8), META_BYTES - 8)
    };
    header
        .magic_word()
        .store(u64::from_le_bytes(format::MAGIC), Ordering::Release);
    let decoded = format::decode(&meta.snapshot(META_BYTES), Some(name)).map_err(|rule| {
        abandon();
        Error::CorruptHeader {
            name: name.to_owned(),
            rule,
        }
    })?;
    let published = segment::publish(&building[1], &meta_id).and_then(|()| {
        let ring = match history {
            Some(_) => segment::publish(&building[2], &history_id),
            None => Ok(()),
        };
        ring.and_then(|()| segment::publish(&building[0], &payload_id))
            .inspect_err(|_| {
                let _ = segment::unlink(&meta_id);
                let _ = segment::unlink(&history_id);
            })
    });
    if let Err(e) = published {
        abandon();
        return Err(match e.kind() {
            std::io::ErrorKind::AlreadyExists => taken(),
            _ => io(e),
        });
    }
    forget_building();
    Ok((decoded, header, meta, payload, gpu, history))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Dtype, Error};

    thread_local! {
        /// The next history ring this thread's [`build`] makes fails as `/dev/shm` full would.
        pub(super) static RING_FULL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// A `_meta` that cannot be opened (here for want of a descriptor) says nothing of its
    /// header: `headerless` finds no abandoned creation there, whose remedy, an unlink,
    /// would remove a stream. Run again in a child (this test binary, its descriptor limit
    /// lowered by the shell): a full descriptor table is the whole process's.
    #[test]
    fn a_meta_it_cannot_open_is_no_abandoned_creation() {
        const TEST: &str = "create::tests::a_meta_it_cannot_open_is_no_abandoned_creation";
        const CHILD: &str = "SHMSTREAM_CREATE_FDLESS_NAME";
        if let Some(name) = std::env::var_os(CHILD) {
            let name = name.into_string().unwrap();
            let opened = headerless(&name).map_err(|e| e.to_string());
            let fillers = crate::few_descriptors::take_every_descriptor();
            let unopened = headerless(&name).map_err(|e| e.to_string());
            drop(fillers);
            println!("said: {opened:?} {unopened:?}");
            return;
        }
        let name = format!("create-fdless-{}", sys::pid());
        let _s = crate::catalog::scratch(&name, &[4], Dtype::U8).unwrap();
        let said = crate::few_descriptors::said_in_a_child(TEST, (CHILD, name.as_ref()));
        assert_eq!(said, ["Ok(false) Ok(false)"]);
    }

    /// Each segment counts whole pages, as tmpfs stores them: a 100-byte stream on a 4 KiB
    /// tmpfs needs two pages (its payload and its `_meta`), not 612 bytes that would fit.
    #[test]
    fn stream_bytes_counts_whole_pages_per_segment() {
        assert_eq!(segments_bytes(&[100, META_BYTES as u64, 0], 4096), 8192);
        assert_eq!(segments_bytes(&[4096, 512, 4097], 4096), 4096 * 4);
        assert_eq!(segments_bytes(&[100, 512], 65536), 2 * 65536);
        assert_eq!(segments_bytes(&[u64::MAX, 512], 4096), u64::MAX);
        let page = sys::page_size() as u64;
        assert_eq!(stream_bytes(100, 0), 2 * page);
    }

    /// `NoSpace` says the bytes of the whole stream (payload, `_meta` and ring; it said the
    /// failing segment's) and the room once the parts made were removed (it was measured
    /// with them). The payload is really made (256 MiB, or a quarter of the room where that
    /// is less), then its ring fails as a full `/dev/shm` would: filling `/dev/shm` for real
    /// made other tests' streams, created meanwhile, fail with `NoSpace`.
    #[test]
    fn no_space_says_the_whole_stream_and_the_room_without_its_parts() {
        let name = format!("nospace-whole-{}", sys::pid());
        let _ = crate::catalog::unlink(&name);
        let free = sys::shm_room().expect("statvfs /dev/shm").bytes;
        let payload = (256usize << 20).min((free / 4) as usize);
        RING_FULL.with(|f| f.set(true));
        let made = StreamOptions::new(&name)
            .shape(&[payload])
            .dtype(Dtype::U8)
            .history(1)
            .create();
        RING_FULL.with(|f| f.set(false));
        match made {
            Err(Error::NoSpace {
                needed,
                available: Some(available),
                ..
            }) => {
                assert_eq!(needed, stream_bytes(payload, 1));
                assert!(needed >= 2 * payload as u64, "{needed} for {payload}");
                // Measured without the payload made: about the room there was.
                assert!(
                    available >= free - payload as u64 / 2,
                    "{available} free of {free}, payload {payload}"
                );
            }
            other => panic!("{:?}", other.map(drop)),
        }
        assert!(!segment::stream_parts_exist(&name::segment_id(&name)));
    }
}
