//! Streams by name: list, stat (metadata without mapping the payload), unlink, and the
//! scratch guard that creates a stream and unlinks it on drop (`purge` has its own module).

use std::io::ErrorKind;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use crate::dtype::Dtype;
use crate::error::{Error, Result, out_of_resources};
use crate::format::{self, FormatError, Header};
use crate::header::MappedHeader;
use crate::lock::LockFile;
use crate::segment::{self, Segment};
use crate::stream::{
    DEFAULT_TIMEOUT, NameLock, Stream, StreamOptions, clear_dead_lock_stamps, decode_retrying,
    not_found, open_meta,
};
use crate::{name, notify, seqlock, sys, trust};

/// A stream's metadata, read without mapping its payload (the JSON of `shmstream stat`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StreamStat {
    /// Name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Element type (numpy's name in JSON).
    pub dtype: Dtype,
    /// Payload bytes.
    pub size: u64,
    /// Writes counted (it may count the write in progress, as [`Stream::count`] says).
    pub count: u64,
    /// Seqlock word.
    pub write_sequence: i64,
    /// UNIX time of the last write (0 = never).
    pub write_time: f64,
    /// Frame id of the last write.
    pub frame_id: u64,
    /// Creator's pid.
    pub creator_pid: i64,
    /// Whether the creator is alive.
    pub creator_alive: bool,
    /// Futex wake-ups.
    pub notify: bool,
    /// Payload on a GPU.
    pub gpu_enabled: bool,
    /// `"cuda:N"` for GPU streams.
    pub gpu_device: Option<String>,
    /// Host payload present.
    pub cpu_mirror: bool,
    /// Generation id (hex), if the stream has one.
    pub instance_id: Option<String>,
    /// Frames of history kept (0 = none, or a ring every open refuses; see
    /// `StreamOptions::history`).
    #[serde(default)]
    pub history: usize,
    /// Why every open of the stream refuses its history ring (its header contradicts the
    /// stream, the segment is shorter than it declares, another format version, or it cannot
    /// be read), with the remedy; `None` when
    /// the ring is usable or there is none. Left out of the JSON when `None`, so the keys of
    /// a healthy stream are those older readers know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_problem: Option<String>,
    /// GPU streams: the pid whose CUDA stream published the last write (GPU-side
    /// publication), 0 when the host published it; `None` for CPU streams or an unreadable
    /// `_gpu` segment.
    #[serde(default)]
    pub gpu_publisher_pid: Option<i64>,
    /// GPU streams: the pid holding the stream's GPU consumer (`Stream::gpu_consumer`), 0 when
    /// none; `None` for CPU streams or an unreadable `_gpu` segment.
    #[serde(default)]
    pub gpu_consumer_pid: Option<i64>,
    /// The pid holding the write lock (stamped when it is taken, shmstream's and pyshmem's
    /// writers alike), 0 when none is stamped. A holder killed leaves its pid until the lock
    /// is next taken (the lock itself is then free); a create, unlink or purge holds the
    /// name's lock without stamping it.
    #[serde(default)]
    pub lock_owner_pid: i64,
}

impl StreamStat {
    /// The stat of the stream `h` describes. Fails only when the system is out of a resource
    /// ([`exhausted`]) while it reads the history ring's header: that says nothing about the
    /// ring, so it is no [`StreamStat::history_problem`].
    pub(crate) fn from_header(h: &Header) -> Result<StreamStat> {
        // GPU streams: the `_gpu` segment's mutable words, from one snapshot.
        let gpu = h
            .gpu()
            .then(|| crate::gpu::segment_bytes(&h.name))
            .flatten();
        // `open` attaches a ring only beside a host payload: so does the view of it.
        let (history, history_problem) = match h.cpu_mirror() {
            false => (0, None),
            true => match crate::history::depth(&h.name, h.size as usize, h.instance_id) {
                Ok(depth) => (depth, None),
                Err(Error::InvalidHistory { reason, .. }) => (0, Some(reason)),
                Err(e) if exhausted(&e) => return Err(e),
                Err(e) => (0, Some(e.to_string())),
            },
        };
        Ok(StreamStat {
            name: h.name.clone(),
            shape: h.shape.clone(),
            dtype: h.dtype,
            size: h.size,
            count: h.count,
            write_sequence: h.write_sequence,
            write_time: h.write_time,
            frame_id: h.frame_id,
            creator_pid: h.creator_pid,
            creator_alive: sys::process_running(h.creator_pid),
            notify: h.notify(),
            gpu_enabled: h.gpu(),
            gpu_device: h.gpu().then(|| format!("cuda:{}", h.device_index)),
            cpu_mirror: h.cpu_mirror(),
            instance_id: (h.flags & format::FLAG_INSTANCE_ID != 0)
                .then(|| h.instance_id.iter().map(|b| format!("{b:02x}")).collect()),
            history,
            history_problem,
            gpu_publisher_pid: gpu.as_deref().and_then(crate::gpu::layout::publisher_pid),
            gpu_consumer_pid: gpu.as_deref().and_then(crate::gpu::layout::consumer_pid),
            lock_owner_pid: h.lock_owner_pid,
        })
    }
}

/// The validated metadata of one stream, without mapping its payload. A creation at work
/// under the name's lock is waited for up to 5 s: see [`stat_within`].
pub fn stat(name: &str) -> Result<StreamStat> {
    stat_within(name, DEFAULT_TIMEOUT)
}

/// [`stat`], waiting at most `wait` (instead of 5 s) for a creation at work under the
/// name's lock (a `_meta` still empty or without its header while another process holds the
/// lock): past it, [`Error::NotFound`] with `unfinished` set. For callers that must stay
/// responsive, such as a monitor sampling many streams.
pub fn stat_within(name: &str, wait: std::time::Duration) -> Result<StreamStat> {
    name::check(name).map_err(|reason| Error::InvalidName {
        name: name.to_owned(),
        reason,
    })?;
    let (_meta, h) = open_meta(name, wait)?;
    StreamStat::from_header(&h)
}

/// Whether `e` is the system out of a resource (descriptors, memory) while a scan or a stat
/// opened something ([`out_of_resources`]): that proves nothing about what it opened, which
/// is then neither skipped as not ours nor reported as unusable; the caller fails instead.
pub(crate) fn exhausted(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if out_of_resources(source))
}

/// Opens the `_meta` segment of payload id `id` that a scan met (`writable` or not): `None`
/// if it is not one of ours to read (gone since the listing, another user's, not a regular
/// file, empty). An error when the system is out of a resource, when it may be a stream's
/// all the same, and [`Error::AccessDenied`] when it is this user's own file whose mode
/// denies the open ([`Found::Denied`]), named `name` (the stream's once read; empty before).
fn open_scanned(id: &str, name: &str, writable: bool) -> Result<Option<Segment>> {
    let meta_id = format!("{id}_meta");
    let op = "opening a metadata segment found in /dev/shm";
    match Segment::open_prefix(&meta_id, writable, format::META_BYTES) {
        Ok(meta) => Ok(Some(meta)),
        // Named `name`: empty before the stream's own is read (a segment id is no name a
        // user gave).
        Err(e) if out_of_resources(&e) => Err(Error::io(name, op, e)),
        Err(e) if trust::denied(&e).is_some() => Err(Error::io(name, op, e)),
        Err(_) => Ok(None),
    }
}

/// What a scan found under a payload id.
#[derive(Debug)]
pub(crate) enum Found {
    /// A valid stream.
    Stream(Header),
    /// This user's own `_meta` whose mode denies the open: an [`Error::AccessDenied`] with
    /// no stream name where the name is inside the file, the stream's where it was read (a
    /// `_meta` of mode 0400 whose dead writer's lock stamps need a writable open to clear).
    /// Neither listed nor removed; `purge` reports it.
    Denied(Error),
    /// Nothing of ours.
    Nothing,
}

/// Validates the stream behind a payload segment id ([`found`]); `None` for anything else,
/// a `_meta` this user may not open included.
pub(crate) fn validated(id: &str) -> Result<Option<Header>> {
    Ok(match found(id)? {
        Found::Stream(h) => Some(h),
        Found::Denied(_) | Found::Nothing => None,
    })
}

/// What is behind a payload segment id: a stream when its metadata's name hashes back to
/// the id and the header passes every rule; [`Found::Denied`] when its `_meta` is ours but
/// its mode denies the open; anything else in `/dev/shm` is not ours. An error only when the
/// system is out of a resource ([`exhausted`]) reading it: a stream left out for that would
/// be listed as none, and never purged. A `_meta` that [`may_settle`] is looked at again
/// after [`SCAN_RETRY`].
pub(crate) fn found(id: &str) -> Result<Found> {
    Ok(settled(&[id], |id, last| look(id, last))?
        .pop()
        .unwrap_or(Found::Nothing))
}

/// One look of a scan at what is behind an item ([`settled`]).
#[derive(Debug, PartialEq)]
pub(crate) enum Look<T> {
    /// What it is.
    Final(T),
    /// Its `_meta` failed with an error that [`may_settle`]: to look at again after the pause.
    Again,
}

/// What `look` makes of each of `items`, in order. Those it answers [`Look::Again`] (given
/// `last` false) are looked at once more (`last` true), all after one pause of
/// [`SCAN_RETRY`]: a scan beside any number of `_meta` that stay unsettled (planted, or a
/// writer killed between its stamps) waits 2 ms in all, not 2 ms for each. An item answered
/// [`Look::Again`] on its last look is left out.
pub(crate) fn settled<'a, I, T, E>(
    items: &'a [I],
    mut look: impl FnMut(&'a I, bool) -> std::result::Result<Look<T>, E>,
) -> std::result::Result<Vec<T>, E> {
    let mut looked = Vec::with_capacity(items.len());
    for item in items {
        looked.push(look(item, false)?);
    }
    if looked.iter().any(|l| matches!(l, Look::Again)) {
        pause();
    }
    let mut out = Vec::with_capacity(items.len());
    for (item, first) in items.iter().zip(looked) {
        match first {
            Look::Final(t) => out.push(t),
            Look::Again => {
                if let Look::Final(t) = look(item, true)? {
                    out.push(t);
                }
            }
        }
    }
    Ok(out)
}

/// One look at what is behind payload id `id` ([`found`]): [`Look::Again`] when its `_meta`
/// fails with an error that [`may_settle`], unless `last`.
fn look(id: &str, last: bool) -> Result<Look<Found>> {
    match validate(id, last) {
        Ok(Look::Final(Some(h))) => Ok(Look::Final(Found::Stream(h))),
        Ok(Look::Final(None)) => Ok(Look::Final(Found::Nothing)),
        Ok(Look::Again) => Ok(Look::Again),
        Err(e @ Error::AccessDenied { .. }) => Ok(Look::Final(Found::Denied(e))),
        Err(e) => Err(e),
    }
}

/// [`look`], with [`Found::Denied`] as its error. Each look opens the `_meta` afresh: a scan
/// holds no descriptor or mapping across its pause, however many it looks at again.
fn validate(id: &str, last: bool) -> Result<Look<Option<Header>>> {
    if !name::looks_like_segment_id(id) {
        return Ok(Look::Final(None));
    }
    let Some(meta) = open_scanned(id, "", false)? else {
        return Ok(Look::Final(None));
    };
    let Some(stored) = format::stored_name(&meta.snapshot(format::META_BYTES)) else {
        return Ok(Look::Final(None));
    };
    if name::segment_id(&stored) != id {
        return Ok(Look::Final(None));
    }
    let decode = |meta: &Segment| format::decode(&meta.snapshot(format::META_BYTES), Some(&stored));
    Ok(Look::Final(match decode(&meta) {
        Err(e) if !last && may_settle(&e) => return Ok(Look::Again),
        // A writer killed between its lock stamps: listed (and so purged) as `open` finds it.
        // One alive between them holds the lock and is done in a moment: waited for.
        Err(FormatError::LockInconsistent) => {
            let Some(meta) = open_scanned(id, &stored, true)? else {
                return Ok(Look::Final(None));
            };
            match reopened(&meta.snapshot(format::META_BYTES), &stored) {
                Reopened::Valid(h) => Some(h),
                Reopened::DeadStamps => match clear_dead_lock_stamps(&meta, &stored) {
                    Ok(true) => decode(&meta).ok(),
                    Ok(false) => decode_retrying(&meta, Some(&stored)).ok(),
                    Err(e) if exhausted(&e) => return Err(e),
                    Err(_) => None,
                },
                Reopened::Corrupt => None,
            }
        }
        h => h.ok(),
    }))
}

/// What a scan makes of a `_meta` of stream `stored` that it reopened writable, having
/// decoded it as [`FormatError::LockInconsistent`] twice.
#[derive(Debug, PartialEq)]
enum Reopened {
    /// It decodes now (a live writer finished its stamps meanwhile): the stream.
    Valid(Header),
    /// Valid but for its lock stamps ([`format::valid_but_for_lock_stamps`]): a dead
    /// writer's, to clear.
    DeadStamps,
    /// Broken otherwise too (a look-alike with a bad CRC): skipped untouched, and no lock
    /// file is made for it.
    Corrupt,
}

/// Decides [`Reopened`] from one snapshot `bytes`, decoded once.
fn reopened(bytes: &[u8], stored: &str) -> Reopened {
    match format::decode(bytes, Some(stored)) {
        Ok(h) => Reopened::Valid(h),
        Err(rule) if format::valid_but_for_lock_stamps(bytes, Some(stored), &rule) => {
            Reopened::DeadStamps
        }
        Err(_) => Reopened::Corrupt,
    }
}

/// How long a scan waits before it decodes again a `_meta` that [`may_settle`].
const SCAN_RETRY: std::time::Duration = std::time::Duration::from_millis(2);

/// The pause of [`SCAN_RETRY`] before a scan looks again at what [`may_settle`] (counted, in
/// tests, by the calling thread's `tests::PAUSES`).
fn pause() {
    #[cfg(test)]
    tests::PAUSES.with(|n| n.set(n.get() + 1));
    std::thread::sleep(SCAN_RETRY);
}

/// Whether a `_meta` under its real id that fails with `e` (its name hashing to that id) may
/// be valid in a moment: a live writer between its two lock stamps, or pyshmem's `create`,
/// which writes the header in place at the real id, its name last but the CRC (the CRC flag
/// set, the CRC still 0). Ours are published complete; every other rule broken is for good.
/// Of the rules [`format::may_be_mid_creation`] names, only the CRC's is seen once the name
/// is written, which a scan asks for first.
pub(crate) fn may_settle(e: &FormatError) -> bool {
    matches!(
        e,
        FormatError::LockInconsistent | FormatError::Crc { stored: 0, .. }
    )
}

/// Every valid stream in `/dev/shm`, sorted by name.
pub(crate) fn scan() -> Result<Vec<Header>> {
    scan_in(std::path::Path::new(sys::SHM_DIR))
}

/// [`scan`] of `dir`. One that cannot be listed is an [`Error::Io`] about no stream (an
/// empty name).
fn scan_in(dir: &std::path::Path) -> Result<Vec<Header>> {
    let ids = listed_ids(dir).map_err(|e| Error::io("", "listing /dev/shm", e))?;
    Ok(validated_all(&ids)?.streams)
}

/// The payload segment ids that names in `dir` (`/dev/shm`) stand for; none if `dir` does
/// not exist. A stream is found by its payload or by its `_meta`: a creator killed between
/// publishing the two leaves a header without payload, which is listed (and so purged) like
/// any stream.
pub(crate) fn listed_ids(dir: &std::path::Path) -> std::io::Result<Vec<String>> {
    let dir = match std::fs::read_dir(dir) {
        Ok(d) => d,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let ids: std::collections::BTreeSet<String> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let file = e.file_name();
            let file = file.to_str()?;
            let id = file.strip_suffix("_meta").unwrap_or(file);
            name::looks_like_segment_id(id).then(|| id.to_owned())
        })
        .collect();
    Ok(ids.into_iter().collect())
}

/// What a scan found under payload ids ([`found`]).
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// The valid streams, sorted by name.
    pub(crate) streams: Vec<Header>,
    /// This user's own `_meta` segments whose mode denies the open ([`Found::Denied`]), by
    /// file name, each with its [`Error::AccessDenied`].
    pub(crate) denied: Vec<(String, Error)>,
}

/// What is behind each of payload ids `ids` ([`found`]), those that [`may_settle`] looked
/// at again after one pause for all ([`settled`]).
pub(crate) fn validated_all(ids: &[String]) -> Result<Scan> {
    let mut scan = Scan::default();
    let looked = settled(ids, |id, last| {
        Ok::<_, Error>(match look(id, last)? {
            Look::Final(f) => Look::Final((id, f)),
            Look::Again => Look::Again,
        })
    })?;
    for (id, f) in looked {
        match f {
            Found::Stream(h) => scan.streams.push(h),
            Found::Denied(e) => scan.denied.push((format!("{id}_meta"), e)),
            Found::Nothing => {}
        }
    }
    scan.streams.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(scan)
}

/// Names of every valid stream (ours and pyshmem's), sorted. A `_meta` of this user's whose
/// mode denies the open (`chmod 000`) is left out, its name being inside it: `purge` reports
/// it as a failure, [`unreadable_streams`] lists it, and `shmstream list` notes it on stderr.
pub fn list_streams() -> Result<Vec<String>> {
    Ok(scan()?.into_iter().map(|h| h.name).collect())
}

/// Metadata of every valid stream, sorted by name. What [`list_streams`] leaves out, this
/// leaves out.
pub fn list_stats() -> Result<Vec<StreamStat>> {
    scan()?.iter().map(StreamStat::from_header).collect()
}

/// This user's own `_meta` segments in `/dev/shm` whose mode denies the open (`chmod 000`):
/// the streams [`list_streams`] leaves out, each as its [`Error::AccessDenied`] with the path
/// and the remedy (no stream name where it is inside the unreadable file).
pub fn unreadable_streams() -> Result<Vec<Error>> {
    let ids = listed_ids(std::path::Path::new(sys::SHM_DIR))
        .map_err(|e| Error::io("", "listing /dev/shm", e))?;
    Ok(validated_all(&ids)?
        .denied
        .into_iter()
        .map(|(_, e)| e)
        .collect())
}

/// Removes a stream (its segments and lock file). Fails with [`Error::NotFound`] if there is
/// none. Open handles elsewhere get [`Error::Stale`] on their next read or write.
pub fn unlink(name: &str) -> Result<()> {
    unlink_generation(name, None)
}

/// [`unlink`], but a missing stream is not an error. Returns whether one was removed.
pub fn unlink_quiet(name: &str) -> Result<bool> {
    match unlink(name) {
        Ok(()) => Ok(true),
        Err(Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether `stored`, the name in the header under `name`'s segment ids, is another stream's
/// name with the same segment id: the 56 bits of SHA-1 that name a stream's segments (and its
/// lock file) collide for about one pair in 2^28 names. The segments are then that stream's,
/// which `name` must not touch; a stored name that hashes elsewhere is a damaged or planted
/// header under `name`'s ids, which `unlink(name)` removes.
pub(crate) fn collides(name: &str, stored: &str) -> bool {
    collides_by(name, stored, name::segment_id)
}

/// [`collides`] with the segment id function `id`.
fn collides_by(name: &str, stored: &str, id: impl Fn(&str) -> String) -> bool {
    stored != name && id(stored) == id(name)
}

/// The stream whose header `meta` (under `name`'s ids) holds, when it is another stream
/// whose name [`collides`] with `name`. Read with `pread` ([`Segment::snapshot`]), and only
/// past a written magic.
pub(crate) fn colliding_stream(name: &str, meta: &Segment) -> Option<String> {
    if !meta.has_magic() {
        return None;
    }
    format::stored_name(&meta.snapshot(format::META_BYTES)).filter(|s| collides(name, s))
}

/// What `name` gets when its segments are stream `other`'s ([`collides`]): nothing under
/// the name may be created, opened or removed while `other` exists.
pub(crate) fn collision(name: &str, other: &str) -> Error {
    Error::Unsupported {
        name: name.to_owned(),
        what: format!(
            "its segment id {} is also that of stream '{other}' (the two names' hashes \
             collide), whose segments are there: nothing was changed; pick another name, or \
             remove '{other}' by its own name to free the id: {}",
            name::segment_id(name),
            name::unlink_remedy(other)
        ),
    }
}

/// Unlinks the current generation; with `expected`, only if it is that generation.
pub(crate) fn unlink_generation(name: &str, expected: Option<[u8; 16]>) -> Result<()> {
    name::check(name).map_err(|reason| Error::InvalidName {
        name: name.to_owned(),
        reason,
    })?;
    unlink_named_generation(name, expected)
}

/// [`unlink_generation`] of a name a scan read from a validated `_meta`: its name hashes to
/// the ids it was found under, so it is not checked again. A header may carry a name
/// [`name::check`] refuses (blank: pyshmem refuses those, a planted or damaged `_meta` does
/// not), which `list` shows and `purge` must be able to remove.
pub(crate) fn unlink_named_generation(name: &str, expected: Option<[u8; 16]>) -> Result<()> {
    let lock_path = name::lock_path(name);
    let lock = LockFile::attach(&lock_path, name)?;
    let _held = NameLock::take(&lock, name)?;
    // A failure where no part under the name is a regular file of ours (another user's
    // payload or `_meta` alone) leaves no stream: the lock file attach made would only leak.
    let failed = |e: Error| {
        let parts = [name::segment_id(name), name::meta_id(name)];
        if !parts.iter().any(|id| trust::is_ours(&segment::path(id))) {
            let _ = std::fs::remove_file(&lock_path);
        }
        Err(e)
    };
    // A `_meta` too short to hold a header (a creator killed before sizing it) is no
    // generation's, but it holds the name: `unlink` by name removes it. Any other failure to
    // open it (not ours, out of descriptors) must not pass for "no header".
    let meta = match Segment::open_prefix(&name::meta_id(name), true, format::META_BYTES) {
        Ok(m) => Some(m).filter(|m| m.len() >= format::META_BYTES),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::InvalidData) => None,
        Err(e) => return failed(Error::io(name, "opening the metadata segment", e)),
    };
    // Another stream's segments, whose name has the same id: its own name removes them.
    if let Some(other) = meta.as_ref().and_then(|m| colliding_stream(name, m)) {
        return Err(collision(name, &other));
    }
    let stale = || Error::Stale {
        name: name.to_owned(),
    };
    if !segment::stream_parts_exist(&name::segment_id(name)) {
        // No stream by that name: the lock file attach just made would only leak.
        let _ = std::fs::remove_file(&lock_path);
        return Err(match expected {
            Some(_) => stale(),
            None => not_found(name),
        });
    }
    if let Some(want) = expected {
        // Only the generation whose header says so: parts without a header are nobody's.
        let current = meta.as_ref().map(|m| {
            m.snapshot(format::META_BYTES)
                [format::offset::INSTANCE_ID..format::offset::INSTANCE_ID + 16]
                .to_vec()
        });
        if current.as_deref() != Some(&want[..]) {
            return Err(stale());
        }
    }
    for id in [name::segment_id(name), name::meta_id(name)] {
        if let Err(e) = segment::unlink(&id) {
            let e = trust::unlink_error(e, &segment::path(&id));
            return failed(Error::io(name, "unlinking a segment", e));
        }
    }
    // The optional parts: one this user cannot remove is not this stream's (a file another
    // user planted under the name of a stream without a ring), and the stream is gone already.
    for id in [name::gpu_id(name), name::history_id(name)] {
        let _ = segment::unlink(&id);
    }
    // A `_meta` without a header (a creator killed before writing it) has no handles to
    // tell, and touching its words could fault a page in that `/dev/shm` has no room for.
    if let Some(meta) = meta.as_ref().filter(|m| m.has_magic()) {
        // Tell every attached handle: the generation goes invalid (they report Stale, seeing
        // the object unlinked), and parked waiters wake to notice. The segments are unlinked
        // first: a reader that saw the invalid value before the unlink would report an
        // aborted write instead.
        // SAFETY: `meta` is a writable mapping of at least META_BYTES, alive for this scope.
        let h = unsafe { MappedHeader::new(meta) };
        let s = h.sequence().load(Ordering::Acquire);
        h.sequence()
            .store(-seqlock::generation(s).max(1), Ordering::Release);
        notify::wake_all(&h);
    }
    let _ = std::fs::remove_file(&lock_path);
    Ok(())
}

/// A stream that is unlinked when this guard drops (pyshmem's `stream(...)` context manager).
/// Derefs to [`Stream`].
#[derive(Debug)]
#[must_use = "a scratch stream is unlinked when this is dropped"]
pub struct Scratch(Stream);

impl std::ops::Deref for Scratch {
    type Target = Stream;
    fn deref(&self) -> &Stream {
        &self.0
    }
}

/// Creates a scratch stream, unlinked when the returned guard drops.
///
/// ```
/// let name = format!("doc-scratch-{}", std::process::id());
/// {
///     let s = shmstream::scratch(&name, &[8], shmstream::Dtype::U8)?;
///     s.write_slice(&[1u8; 8])?;
/// }
/// assert!(shmstream::stat(&name).is_err());
/// # Ok::<(), shmstream::Error>(())
/// ```
pub fn scratch(name: &str, shape: &[usize], dtype: Dtype) -> Result<Scratch> {
    Ok(Scratch(
        StreamOptions::new(name)
            .shape(shape)
            .dtype(dtype)
            .auto_unlink(true)
            .create()?,
    ))
}

impl From<Dtype> for String {
    fn from(d: Dtype) -> String {
        d.numpy_name().to_owned()
    }
}

/// Serde's reading of a [`Dtype`]: its numpy name only ([`Dtype::from_numpy_name_only`]), as
/// it is written and as numpy reads it (`"u8"`, `uint64` to numpy, is refused). `FromStr`
/// keeps the short names.
impl TryFrom<String> for Dtype {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Dtype, String> {
        Dtype::from_numpy_name_only(&s)
    }
}

#[allow(dead_code)]
fn _assert_stream_is_send_sync() {
    fn ok<T: Send + Sync>() {}
    ok::<Stream>();
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    thread_local! {
        /// How many times this thread paused in a scan ([`pause`]).
        pub(super) static PAUSES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    /// This thread's [`PAUSES`] while it runs `f`, with what `f` returns.
    fn pauses<T>(f: impl FnOnce() -> T) -> (u64, T) {
        PAUSES.with(|n| n.set(0));
        let out = f();
        (PAUSES.with(|n| n.get()), out)
    }

    /// A valid header of stream `name` (4 `uint8`, one instance), as a scan finds it.
    pub(crate) fn header(name: &str) -> [u8; format::META_BYTES] {
        format::encode_new(&format::NewHeader {
            name,
            dtype: Dtype::U8,
            shape: &[4],
            flags: 0,
            device_index: -1,
            creator_pid: 2,
            instance_id: [3; 16],
        })
    }

    /// How many times a scan ([`settled`]) decodes `bytes`, looking again at what
    /// [`may_settle`] as [`validate`] does.
    fn attempts(bytes: &[u8]) -> usize {
        let mut n = 0;
        let items = [bytes];
        let _ = settled(&items, |b, last| {
            n += 1;
            Ok::<_, ()>(match format::decode(b, None) {
                Err(e) if !last && may_settle(&e) => Look::Again,
                h => Look::Final(h),
            })
        });
        n
    }

    /// Review item 2: a scan decoded each bad `_meta` for 50 ms, so `list`, `purge` and every
    /// not-found error slowed by 50 ms per corrupt `_meta`. Now only what a writer or a
    /// pyshmem creation in progress leaves is decoded again, once.
    #[test]
    fn a_scan_decodes_a_bad_meta_again_only_if_it_may_settle() {
        let valid = header("scan-retry");
        assert_eq!(attempts(&valid), 1);
        let mut corrupt = valid;
        corrupt[format::offset::CREATOR_PID] ^= 1;
        assert!(matches!(
            format::decode(&corrupt, None),
            Err(FormatError::Crc { .. })
        ));
        assert_eq!(attempts(&corrupt), 1, "a corrupt CRC is retried");
        assert_eq!(attempts(&[0u8; format::META_BYTES]), 1);
        // pyshmem between setting the CRC flag and stamping the CRC.
        let mut creating = valid;
        creating[format::offset::HEADER_CRC..format::offset::HEADER_CRC + 4].fill(0);
        assert!(matches!(
            format::decode(&creating, None),
            Err(FormatError::Crc { stored: 0, .. })
        ));
        assert_eq!(attempts(&creating), 2);
        // A writer between its lock stamps (owner set, depth not yet).
        let mut stamping = valid;
        stamping[format::offset::LOCK_OWNER_PID] = 1;
        assert!(matches!(
            format::decode(&stamping, None),
            Err(FormatError::LockInconsistent)
        ));
        assert_eq!(attempts(&stamping), 2);
    }

    /// Review item: a scan paused 2 ms for each `_meta` that may settle, one after the other,
    /// so 5,000 planted (CRC flag set, CRC 0) slowed every `list`, `purge` and not-found
    /// error by 10 s. Now a scan pauses once for all of them, and finds what it found: the
    /// live stream, and the one whose dead writer's stamps it clears after the pause.
    #[test]
    fn a_scan_pauses_once_for_all_the_metas_that_may_settle() {
        use std::os::unix::fs::FileExt;
        /// Unlinks the planted `_meta` segments, and the stamped stream, on drop.
        struct Planted(Vec<String>, String);
        impl Drop for Planted {
            fn drop(&mut self) {
                let _ = unlink_quiet(&self.1);
                for n in &self.0 {
                    let _ = segment::unlink(&name::meta_id(n));
                }
            }
        }
        let pid = sys::pid();
        let live = format!("scan-once-live-{pid}");
        let _live = scratch(&live, &[4], Dtype::U8).unwrap();
        let stamped = format!("scan-once-stamped-{pid}");
        let names: Vec<String> = (0..200).map(|i| format!("scan-once-{pid}-{i}")).collect();
        let mut planted = Planted(Vec::new(), stamped.clone());
        let mut plant = |name: &str, bytes: &[u8]| {
            let id = name::meta_id(name);
            let _ = segment::unlink(&id);
            drop(Segment::create(&id, format::META_BYTES).unwrap());
            planted.0.push(name.to_owned());
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(segment::path(&id))
                .unwrap();
            file.write_all_at(bytes, 0).unwrap();
        };
        for n in &names {
            let mut creating = header(n);
            creating[format::offset::HEADER_CRC..][..4].fill(0);
            assert!(matches!(
                format::decode(&creating, Some(n)),
                Err(FormatError::Crc { stored: 0, .. })
            ));
            plant(n, &creating);
        }
        let mut killed = header(&stamped);
        killed[format::offset::LOCK_OWNER_PID..][..8]
            .copy_from_slice(&0x3fff_ffffi64.to_le_bytes());
        plant(&stamped, &killed);
        let ids: Vec<String> = names
            .iter()
            .chain([&live, &stamped])
            .map(|n| name::segment_id(n))
            .collect();

        // The hint of a name not found pauses once too (2 ms for each before: 5,000 planted
        // made every `open` of a missing name take 10 s), and names what a scan lists.
        let missing = format!("scan-once-missing-{pid}");
        let (n, e) = pauses(|| crate::stream::not_found(&missing));
        let Error::NotFound { known, .. } = e else {
            panic!("{e:?}")
        };
        assert_eq!(
            n,
            1,
            "pauses of the hint beside {} unsettled metas",
            names.len()
        );
        assert!(
            known.contains(&live) && known.contains(&stamped),
            "{known:?}"
        );
        assert!(!known.iter().any(|k| names.contains(k)), "{known:?}");

        let (n, scan) = pauses(|| validated_all(&ids).unwrap());
        let listed: Vec<&str> = scan.streams.iter().map(|h| h.name.as_str()).collect();
        let mut expected = [live.as_str(), stamped.as_str()];
        expected.sort();
        assert_eq!(listed, expected);
        assert!(scan.denied.is_empty(), "{:?}", scan.denied);
        assert_eq!(
            n,
            1,
            "pauses of one scan of {} unsettled metas",
            names.len()
        );
        // One id alone pauses as before.
        let (n, one) = pauses(|| found(&ids[0]).unwrap());
        assert!(matches!(one, Found::Nothing), "{one:?}");
        assert_eq!(n, 1);
        // Nothing to settle: no pause.
        let (n, _) = pauses(|| validated_all(&ids[names.len()..]).unwrap());
        assert_eq!(n, 0);
    }

    /// Review item: a `_meta` a scan reopened after two `LockInconsistent` decodes is decoded
    /// once: valid now (a live writer finished its stamps meanwhile), it is the stream (it
    /// was dropped from `list` and `purge`: only "valid but for its stamps" was kept);
    /// inconsistent stamps alone are cleared; with a bad CRC too, it is left alone.
    #[test]
    fn a_reopened_meta_is_the_stream_when_valid_and_cleared_only_when_valid_but_for_stamps() {
        let valid = header("reopened");
        let decoded = format::decode(&valid, Some("reopened")).unwrap();
        assert_eq!(reopened(&valid, "reopened"), Reopened::Valid(decoded));
        let mut stamped = valid;
        stamped[format::offset::LOCK_OWNER_PID] = 7;
        assert_eq!(reopened(&stamped, "reopened"), Reopened::DeadStamps);
        let mut corrupt = stamped;
        corrupt[format::offset::CREATOR_PID] ^= 1;
        assert_eq!(
            format::decode(&corrupt, Some("reopened")),
            Err(FormatError::LockInconsistent)
        );
        assert_eq!(reopened(&corrupt, "reopened"), Reopened::Corrupt);
    }

    /// Only the system out of descriptors or memory fails a scan or a stat: what says a
    /// `_meta` is not ours (gone, another user's) or a ring unusable does not.
    #[test]
    fn only_resource_exhaustion_fails_a_scan() {
        let io = |errno| {
            Error::io(
                "ps_x_meta",
                "opening",
                std::io::Error::from_raw_os_error(errno),
            )
        };
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOMEM] {
            assert!(exhausted(&io(errno)), "{errno}");
        }
        for errno in [libc::ENOENT, libc::EACCES, libc::ELOOP, libc::EINVAL] {
            assert!(!exhausted(&io(errno)), "{errno}");
        }
        assert!(!exhausted(&Error::InvalidHistory {
            name: "x".into(),
            reason: "r".into()
        }));
        // An object of no stream, or gone: not ours, skipped, as before.
        let gone = name::segment_id(&format!("catalog-gone-{}", std::process::id()));
        assert!(matches!(validated(&gone), Ok(None)));
    }

    /// A `/dev/shm` that cannot be listed (here a file) is an I/O error about no stream: it
    /// was one about stream '*'.
    #[test]
    fn an_unlistable_shm_is_an_error_about_no_stream() {
        let file = std::env::temp_dir().join(format!("shmstream-scan-{}", std::process::id()));
        std::fs::write(&file, b"").unwrap();
        let e = scan_in(&file).unwrap_err();
        std::fs::remove_file(&file).unwrap();
        match &e {
            Error::Io { source, .. } => assert_eq!(source.raw_os_error(), Some(libc::ENOTDIR)),
            e => panic!("{e:?}"),
        }
        assert_eq!(e.stream_name(), "", "{e}");
        assert!(!e.to_string().contains("'*'"), "{e}");
    }

    /// Out of descriptors opening a `_meta` it listed, a scan fails with an I/O error about
    /// no stream: it was about stream 'ps_…_meta', a segment id no user named. Run again in a
    /// child (this test binary, its descriptor limit lowered by the shell): a full descriptor
    /// table is the whole process's. `list_streams` itself gets no further than the listing,
    /// whose descriptor the `_meta` open would reuse; the CLI's preload test covers it.
    #[test]
    fn a_scan_out_of_descriptors_is_an_error_about_no_stream() {
        const TEST: &str = "catalog::tests::a_scan_out_of_descriptors_is_an_error_about_no_stream";
        const CHILD: &str = "SHMSTREAM_CATALOG_FDLESS_ID";
        if let Some(id) = std::env::var_os(CHILD) {
            let ids = [id.into_string().unwrap()];
            let fillers = crate::few_descriptors::take_every_descriptor();
            // What `scan_in` does once it has listed `/dev/shm`.
            let scanned = validated_all(&ids).map(|scan| scan.streams.len());
            drop(fillers);
            match scanned {
                Err(e) => println!("said: [{}] {e}", e.stream_name()),
                Ok(n) => println!("said: {n} streams"),
            }
            return;
        }
        let name = format!("catalog-fdless-{}", sys::pid());
        let _s = scratch(&name, &[4], Dtype::U8).unwrap();
        let id = name::segment_id(&name);
        let said = crate::few_descriptors::said_in_a_child(TEST, (CHILD, id.as_ref()));
        let emfile = std::io::Error::from_raw_os_error(libc::EMFILE).to_string();
        assert!(
            matches!(&said[..], [e] if e.starts_with("[] ") && e.contains(&emfile)),
            "{said:?}"
        );
        assert!(!said[0].contains("for stream"), "{said:?}");
    }

    /// A stored name collides only when it differs from the name and hashes to its id (no
    /// real collision is needed: the id function is injected); a name hashing elsewhere is a
    /// damaged or planted header, and the name itself is no collision.
    #[test]
    fn a_stored_name_collides_only_when_it_is_another_name_with_the_same_id() {
        let first_letter = |n: &str| n[..1].to_owned();
        assert!(collides_by("apple", "avocado", first_letter));
        assert!(!collides_by("apple", "apple", first_letter));
        assert!(!collides_by("apple", "banana", first_letter));
        assert!(!collides("cam0", "cam0"));
        assert!(!collides("cam0", "cam1"));
    }

    /// A header without the instance-id flag (valid v3: the flag is optional) has no
    /// instance id in its stat; one with it has the id in hex.
    #[test]
    fn a_stat_shows_the_instance_id_only_under_its_flag() {
        let name = format!("stat-no-instance-{}", sys::pid());
        let bytes = format::encode_new(&format::NewHeader {
            name: &name,
            dtype: Dtype::U8,
            shape: &[4],
            flags: 0,
            device_index: -1,
            creator_pid: sys::pid(),
            instance_id: [0xab; 16],
        });
        let with = format::decode(&bytes, Some(&name)).unwrap();
        let shown = StreamStat::from_header(&with).unwrap().instance_id;
        assert_eq!(shown.as_deref(), Some("ab".repeat(16).as_str()));
        let without = Header {
            flags: with.flags & !format::FLAG_INSTANCE_ID,
            instance_id: [0; 16],
            ..with
        };
        assert_eq!(StreamStat::from_header(&without).unwrap().instance_id, None);
    }

    #[test]
    fn only_what_a_writer_or_creator_in_progress_leaves_may_settle() {
        assert!(may_settle(&FormatError::LockInconsistent));
        assert!(may_settle(&FormatError::Crc {
            stored: 0,
            computed: 7
        }));
        for e in [
            FormatError::Crc {
                stored: 5,
                computed: 7,
            },
            FormatError::CrcWithoutFlag,
            FormatError::BadMagic,
            FormatError::MissingName,
            FormatError::TooShort(0),
            FormatError::Ndim(0),
            FormatError::CreatorPid(0),
        ] {
            assert!(!may_settle(&e), "{e:?}");
        }
    }
}
