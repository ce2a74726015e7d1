//! Opening a stream's `_meta` and decoding its header ([`open_meta`]): a header that looks
//! torn is decoded again for a moment, one that a creation in progress holds is waited for
//! under the name's lock, and a dead writer's lock stamps are cleared.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::not_found::{meta_not_found, not_found};
use super::{DECODE_RETRY, NameLock};
use crate::error::{Error, Result};
use crate::format::{self, FormatError, Header, META_BYTES};
use crate::header::MappedHeader;
use crate::lock::LockFile;
use crate::segment::Segment;
use crate::{catalog, name};

/// Opens and validates a `_meta` segment, retrying a torn-looking header for a moment.
/// A `_meta` shorter than a header (pyshmem sizes it after creating it) is reopened for
/// [`DECODE_RETRY`]; still short then, it is a creation in progress while somebody else
/// holds the name's lock (pyshmem 1.4.0's `create` makes and sizes it under the lock, and
/// its creator may be descheduled in between): it is waited for as
/// [`wait_for_creation`] does (row 19). Short with the lock free (a creator killed before
/// sizing it), it is corrupt. A header still invalid after [`DECODE_RETRY`] in a way that
/// pyshmem's `create`, writing it in place under the lock, leaves it for a moment
/// ([`format::may_be_mid_creation`]) is waited for the same way ([`decode_after_creation`]);
/// one that breaks any other rule is corrupt at once. Short, or without its magic or name,
/// beside a lock this process cannot take (a refused lock directory), it is that lock's
/// error: whether a creation holds it is unknown. All waiting for a creation (the retry of
/// a short `_meta` included) ends `wait` after the call, as the open's other waits (in
/// `stream/mod.rs`) end theirs.
pub(crate) fn open_meta(name: &str, wait: Duration) -> Result<(Segment, Header)> {
    let start = Instant::now();
    let deadline = start + DECODE_RETRY.min(wait);
    let until = wait_until(start, wait);
    let id = name::meta_id(name);
    let open = || Segment::open_prefix(&id, true, META_BYTES);
    // Empty (`InvalidData`), or shorter than a header (but a whole pyshmem v2 one).
    let short = |r: &std::io::Result<Segment>| match r {
        Ok(m) => m.len() < META_BYTES && !format::is_legacy_v2(&m.snapshot(META_BYTES)),
        Err(e) => e.kind() == std::io::ErrorKind::InvalidData,
    };
    // A `_meta` removed under a creation we waited for (it failed) is looked for again: a
    // new generation may have taken the name since.
    'look: loop {
        let mut opened = loop {
            let r = open();
            if !short(&r) || Instant::now() >= deadline {
                break r;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        if short(&opened) {
            opened = match wait_for_creation(
                name,
                until,
                || {
                    let r = open();
                    (!short(&r)).then_some(r)
                },
                open,
            ) {
                Waited::Saw(r) => r,
                // Short as a creation leaves it: whether one is under way is unknown.
                Waited::Unknown(e) => return Err(e),
                Waited::TimedOut => return Err(creation_unfinished(name)),
            };
        }
        let meta = opened.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => meta_not_found(name),
            std::io::ErrorKind::InvalidData => Error::CorruptHeader {
                name: name.to_owned(),
                rule: FormatError::TooShort(0),
            },
            _ => Error::io(name, "opening the metadata segment", e),
        })?;
        // A dead writer's stamps, in a header valid but for them, cleared where nobody holds
        // the lock: a look-alike that breaks another rule too is left byte for byte, and no
        // lock file is made for it.
        let stamps_of_a_dead_writer = |rule: &FormatError| -> Result<bool> {
            Ok(
                format::valid_but_for_lock_stamps(&meta.snapshot(META_BYTES), Some(name), rule)
                    && clear_dead_lock_stamps(&meta, name)?,
            )
        };
        // The 50 ms retry inside what is left of the caller's wait (a zeroed `_meta`,
        // pyshmem's longest creation step, took 50 ms of a 5 ms `stat_within`), 2 ms at
        // least: a live writer between its two lock stamps is not called corrupt at once.
        let left = until.saturating_duration_since(Instant::now());
        let retry = DECODE_RETRY.min(left).max(Duration::from_millis(2));
        let h = match decode_retrying_for(&meta, Some(name), retry) {
            // Stamps cleared: decoded again within the same retry as the first look.
            Err(rule) if stamps_of_a_dead_writer(&rule)? => {
                decode_retrying_for(&meta, Some(name), retry)
            }
            // pyshmem writes its header in place under the name's lock, in steps that each
            // leave it invalid for a moment, and a live writer stores its two lock stamps one
            // after the other: only the rules those steps break are waited for (a header
            // corrupt for good is said at once, though a writer holds the lock).
            Err(e)
                if format::may_be_mid_creation(&e)
                    || format::valid_but_for_lock_stamps(
                        &meta.snapshot(META_BYTES),
                        Some(name),
                        &e,
                    ) =>
            {
                match decode_after_creation(&meta, name, e, until)? {
                    // Its holder died between its stamps while we waited: leftovers now.
                    Some(Err(rule)) if stamps_of_a_dead_writer(&rule)? => {
                        decode_retrying_for(&meta, Some(name), retry)
                    }
                    Some(decoded) => decoded,
                    None if Instant::now() < until => continue 'look,
                    None => return Err(not_found(name)),
                }
            }
            decoded => decoded,
        };
        let h = h.map_err(|rule| match rule {
            // Another stream's header, whose name has this name's ids: not corrupt, and not
            // this name's to unlink.
            FormatError::NameMismatch { ref found, .. } if collides_by_name(name, &rule) => {
                catalog::collision(name, found)
            }
            rule => Error::CorruptHeader {
                name: name.to_owned(),
                rule,
            },
        })?;
        return Ok((meta, h));
    }
}

/// `start + wait`; a wait too long for the clock (`Duration::MAX`, "forever") is 136 years.
pub(super) fn wait_until(start: Instant, wait: Duration) -> Instant {
    crate::deadline::after(start, Some(wait))
        .unwrap_or_else(|| start + Duration::from_secs(u32::MAX.into()))
}

/// Whether `e` says the header under `name`'s ids is another stream's, whose name has the
/// same ids ([`catalog::collides`]): not corrupt, and no creation of `name`'s.
fn collides_by_name(name: &str, e: &FormatError) -> bool {
    matches!(e, FormatError::NameMismatch { found, .. } if catalog::collides(name, found))
}

/// pyshmem's `create` writes the header in place under the name's lock, in steps: it
/// zero-fills the payload before the magic, sets up CUDA before the name, and stores the
/// version, header size, instance id flag and CRC each after the word before it (the CRC
/// flag before the CRC). A header that breaks a rule those steps break
/// ([`format::may_be_mid_creation`]) while somebody else holds the lock may be a creation
/// in progress (seconds for a large or GPU stream): waits for it ([`wait_for_creation`],
/// until `until`), decoding it again every millisecond. A header still without its magic or
/// name then is not there yet (`NotFound`, row 19); one that breaks another rule is
/// returned as it last decoded (corrupt), as is one a creator that died left. A lock this
/// process cannot take is its error for a header without its magic or name (a creation
/// under way, for all it can tell), else the rule last broken. `None`: the creation failed
/// and removed this `_meta` (look at the name again).
fn decode_after_creation(
    meta: &Segment,
    name: &str,
    first: FormatError,
    until: Instant,
) -> Result<Option<std::result::Result<Header, FormatError>>> {
    let decode = || format::decode(&meta.snapshot(META_BYTES), Some(name));
    let last = std::cell::RefCell::new(first);
    let waited = wait_for_creation(
        name,
        until,
        || match decode() {
            Ok(h) => Some(Some(Ok(h))),
            Err(e) => {
                *last.borrow_mut() = e;
                None
            }
        },
        // A creation that failed removed what it made (pyshmem unlinks its segments when its
        // CUDA setup fails): the stream is not there, whatever our mapping shows.
        || (!meta.is_unlinked()).then(decode),
    );
    let last = last.into_inner();
    Ok(match waited {
        Waited::Saw(decoded) => decoded,
        Waited::TimedOut if matches!(last, FormatError::BadMagic | FormatError::MissingName) => {
            return Err(creation_unfinished(name));
        }
        // A header not there yet may be a creation under way, which the lock would tell.
        Waited::Unknown(e) if matches!(last, FormatError::BadMagic | FormatError::MissingName) => {
            return Err(e);
        }
        Waited::TimedOut | Waited::Unknown(_) => Some(Err(last)),
    })
}

/// `NotFound` for a name whose creation somebody still held the lock over when
/// [`wait_for_creation`] gave up: `unfinished`, as `create` calls the name taken.
fn creation_unfinished(name: &str) -> Error {
    Error::NotFound {
        name: name.to_owned(),
        known: Vec::new(),
        unfinished: true,
    }
}

/// What [`wait_for_creation`] saw.
enum Waited<T> {
    /// The creation's work (`look`), or what `under_lock` saw.
    Saw(T),
    /// Somebody else held the lock for all of the wait.
    TimedOut,
    /// A lock this process cannot take or look at (a refused lock directory, a lock file not
    /// ours, out of descriptors): why.
    Unknown(Error),
}

/// Waits for a creation in progress under `name`'s lock, which every creator holds while it
/// builds (ours, and pyshmem 1.4.0's `create`, under its `_locked_stream_name`): while
/// somebody else holds the lock, calls `look` every millisecond until it sees the creation's
/// work (`Some`), up to `until` and at least once (the caller says what that means: row 19).
/// Once this call takes the lock (the creator finished, or died and the kernel dropped its
/// flock), returns what `under_lock` sees while it holds it. No lock file at the path:
/// nobody holds it, so `under_lock` runs at once, and none is made here.
fn wait_for_creation<T>(
    name: &str,
    until: Instant,
    mut look: impl FnMut() -> Option<T>,
    under_lock: impl FnOnce() -> T,
) -> Waited<T> {
    #[cfg(test)]
    tests::CREATION_WAITS.with(|n| n.set(n.get() + 1));
    let path = name::lock_path(name);
    // Any other failure to look is said as attaching says it (a lock directory that is a
    // file: refused, not a directory).
    if std::fs::symlink_metadata(&path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
        return Waited::Saw(under_lock());
    }
    let lock = match LockFile::attach(&path, name) {
        Ok(lock) => lock,
        Err(e) => return Waited::Unknown(e),
    };
    loop {
        match NameLock::try_take(&lock, name) {
            Ok(Some(_held)) => return Waited::Saw(under_lock()),
            Ok(None) => {}
            Err(e) => return Waited::Unknown(e),
        }
        if let Some(seen) = look() {
            return Waited::Saw(seen);
        }
        if Instant::now() >= until {
            return Waited::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A writer killed between its two lock stamps (owner pid, then depth; or the reverse on
/// release) leaves them inconsistent, which the format refuses, so nobody could open the
/// stream again. When nobody holds the write lock (the kernel dropped the dead holder's
/// flock), the stamps are leftovers: clear them under the lock. Returns whether it did.
/// A mapping shorter than a header (a `_meta` replaced by a short one since it was decoded)
/// is left alone (`false`).
pub(crate) fn clear_dead_lock_stamps(meta: &Segment, name: &str) -> Result<bool> {
    if meta.len() < META_BYTES {
        return Ok(false);
    }
    let lock = LockFile::attach(&name::lock_path(name), name)?;
    if !lock.try_acquire(name)? {
        return Ok(false);
    }
    // SAFETY: `meta` is a writable mapping of at least META_BYTES (checked above), alive for
    // this scope.
    let h = unsafe { MappedHeader::new(meta) };
    h.lock_owner_pid().store(0, Ordering::Relaxed);
    h.lock_depth().store(0, Ordering::Relaxed);
    lock.release(|_| {});
    Ok(true)
}

/// Decodes a header from private snapshots, retrying for [`DECODE_RETRY`] while it fails
/// (a live writer may be between two metadata stores, or a creator still initializing).
pub(crate) fn decode_retrying(
    meta: &Segment,
    expected: Option<&str>,
) -> std::result::Result<Header, FormatError> {
    decode_retrying_for(meta, expected, DECODE_RETRY)
}

/// [`decode_retrying`] for `retry` instead of [`DECODE_RETRY`] (one look at least).
fn decode_retrying_for(
    meta: &Segment,
    expected: Option<&str>,
    retry: Duration,
) -> std::result::Result<Header, FormatError> {
    if meta.len() < META_BYTES {
        return Err(match format::is_legacy_v2(&meta.snapshot(META_BYTES)) {
            true => FormatError::LegacyV2,
            false => FormatError::TooShort(meta.len()),
        });
    }
    let deadline = Instant::now() + retry;
    loop {
        match format::decode(&meta.snapshot(META_BYTES), expected) {
            Ok(h) => return Ok(h),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(FormatError::NameMismatch { .. }) => {}
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::Dtype;
    use crate::stream::Stream;
    use crate::sys;

    thread_local! {
        /// How many times this thread entered [`wait_for_creation`].
        pub(super) static CREATION_WAITS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    /// A mapping shorter than a header (a scan reopens a `_meta` that may have been replaced
    /// by a short one) is left alone: no store past its end, no lock file made.
    #[test]
    fn clearing_lock_stamps_leaves_a_short_mapping_alone() {
        use std::os::unix::fs::FileExt;
        let name = format!("short-stamps-{}", sys::pid());
        let id = format!("ps_test_short_stamps_{}", sys::pid());
        let _ = crate::segment::unlink(&id);
        let _ = std::fs::remove_file(name::lock_path(&name));
        let object = Segment::create(&id, META_BYTES).unwrap();
        let stamp = 4_000_000i64.to_le_bytes();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(crate::segment::path(&id))
            .unwrap();
        file.write_all_at(&stamp, format::offset::LOCK_OWNER_PID as u64)
            .unwrap();
        let short = Segment::open_prefix(&id, true, 64).unwrap();
        assert_eq!(short.len(), 64);
        assert!(!clear_dead_lock_stamps(&short, &name).unwrap());
        let after = object.snapshot(META_BYTES);
        assert_eq!(after[format::offset::LOCK_OWNER_PID..][..8], stamp);
        assert!(!name::lock_path(&name).exists());
        crate::segment::unlink(&id).unwrap();
    }

    /// Review item: a header corrupt for good (a stored CRC of 5, its flag set) is said at
    /// once while somebody holds the name's lock, without waiting for a creation:
    /// `open_meta` waited the whole creation timeout (5 s) on any rule broken, so
    /// `shmstream watch` beside a writer holding a long lock froze 5 s per tick.
    #[test]
    fn a_header_corrupt_for_good_is_said_at_once_under_a_held_lock() {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::FileExt;
        let stream = format!("crc5-locked-{}", sys::pid());
        let _ = catalog::unlink(&stream);
        drop(Stream::create(&stream, &[4], Dtype::U8).unwrap());
        std::fs::OpenOptions::new()
            .write(true)
            .open(crate::segment::path(&name::meta_id(&stream)))
            .unwrap()
            .write_all_at(&5u32.to_le_bytes(), format::offset::HEADER_CRC as u64)
            .unwrap();
        let lock = std::fs::File::open(name::lock_path(&stream)).unwrap();
        // SAFETY: flock on a descriptor this scope owns.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
        CREATION_WAITS.with(|n| n.set(0));
        let got = catalog::stat(&stream).map(drop);
        let waits = CREATION_WAITS.with(std::cell::Cell::get);
        drop(lock);
        let _ = catalog::unlink(&stream);
        assert!(
            matches!(
                got,
                Err(Error::CorruptHeader {
                    rule: FormatError::Crc { stored: 5, .. },
                    ..
                })
            ),
            "{got:?}"
        );
        assert_eq!(waits, 0, "waited for a creation");
    }

    /// Creates stream `tag`, takes its name's lock from another open file (as another
    /// process's creation holds it), plants each of `planted` as its `_meta` and stats it
    /// with a 100 ms wait: each outcome with the number of creation waits it entered.
    fn stat_planted_under_a_held_lock(tag: &str, planted: &[Vec<u8>]) -> Vec<(Result<()>, u64)> {
        use std::os::fd::AsRawFd;
        let stream = format!("{tag}-{}", sys::pid());
        let _ = catalog::unlink(&stream);
        drop(Stream::create(&stream, &[4], Dtype::U8).unwrap());
        let meta = crate::segment::path(&name::meta_id(&stream));
        let lock = std::fs::File::open(name::lock_path(&stream)).unwrap();
        // SAFETY: flock on a descriptor this scope owns.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
        let mut got = Vec::new();
        for planted in planted {
            std::fs::write(&meta, planted).unwrap();
            CREATION_WAITS.with(|n| n.set(0));
            got.push((
                catalog::stat_within(&stream, Duration::from_millis(100)).map(drop),
                CREATION_WAITS.with(std::cell::Cell::get),
            ));
        }
        drop(lock);
        let _ = catalog::unlink(&stream);
        let payload = crate::segment::path(&name::segment_id(&stream));
        for left in [meta, payload, name::lock_path(&stream)] {
            let _ = std::fs::remove_file(left);
        }
        got
    }

    /// Review item: a `_meta` still zeroed (no magic), still empty, or shorter than a header
    /// (pyshmem sizes it after creating it) after the creation wait while somebody holds the
    /// name's lock is `NotFound` with `unfinished` set, as `create` calls the name taken (it
    /// said "create it first").
    #[test]
    fn a_creation_held_past_the_wait_is_an_unfinished_not_found() {
        let got = stat_planted_under_a_held_lock(
            "held-creation",
            &[vec![0u8; META_BYTES], Vec::new(), vec![7u8; 100]],
        );
        for (got, waits) in got {
            assert!(
                matches!(&got, Err(Error::NotFound { unfinished: true, known, .. }) if known.is_empty()),
                "{got:?}"
            );
            assert_eq!(waits, 1, "{got:?}");
            let text = got.unwrap_err().to_string();
            assert!(!text.contains("create it first"), "{text}");
            assert!(text.contains("holding the name's lock"), "{text}");
        }
    }

    /// Under a held lock, only a header without its magic or name is a creation unfinished:
    /// a pyshmem v2 header (256 bytes, shorter than ours) is said at once, without a wait,
    /// and one whose version is still 0 after the wait, its magic and name in place, is
    /// corrupt by that rule.
    #[test]
    fn under_a_held_lock_other_versions_and_half_written_headers_are_said_as_they_are() {
        let v2: Vec<u8> = std::iter::once(2.0f64)
            .chain(std::iter::repeat_n(0.0, 31))
            .flat_map(f64::to_le_bytes)
            .collect();
        let mut version_0 = format::encode_new(&format::NewHeader {
            name: &format!("held-versions-{}", sys::pid()),
            dtype: Dtype::U8,
            shape: &[4],
            flags: 0,
            device_index: -1,
            creator_pid: sys::pid(),
            instance_id: [3; 16],
        });
        version_0[format::offset::VERSION..][..2].fill(0);
        let got = stat_planted_under_a_held_lock("held-versions", &[v2, version_0.to_vec()]);
        assert!(
            matches!(
                got[0],
                (
                    Err(Error::CorruptHeader {
                        rule: FormatError::LegacyV2,
                        ..
                    }),
                    0
                )
            ),
            "{:?}",
            got[0]
        );
        assert!(
            matches!(
                got[1],
                (
                    Err(Error::CorruptHeader {
                        rule: FormatError::Version(0),
                        ..
                    }),
                    1
                )
            ),
            "{:?}",
            got[1]
        );
    }

    /// A wait too long for the clock ("forever") ends 136 years from now, not before it.
    #[test]
    fn a_wait_too_long_for_the_clock_is_136_years() {
        let start = Instant::now();
        let until = wait_until(start, Duration::MAX);
        assert_eq!(until - start, Duration::from_secs(u32::MAX.into()));
        assert_eq!(
            wait_until(start, Duration::from_millis(5)) - start,
            Duration::from_millis(5)
        );
    }
}
