//! Streams by name: list, stat (metadata without mapping the payload), unlink, purge, and
//! the scratch guard that creates a stream and unlinks it on drop.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::format::{self, Header};
use crate::header::MappedHeader;
use crate::lock::LockFile;
use crate::segment::{self, Segment};
use crate::stream::{NameLock, Stream, StreamOptions, decode_retrying, not_found, open_meta};
use crate::{name, notify, seqlock, sys};

/// A stream's metadata, read without mapping its payload (the JSON of `shmstream stat`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamStat {
    /// Name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Element type (numpy's name in JSON).
    pub dtype: Dtype,
    /// Payload bytes.
    pub size: u64,
    /// Completed writes.
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
    /// Frames of history kept (0 = none; see `StreamOptions::history`).
    #[serde(default)]
    pub history: usize,
    /// GPU streams: the pid whose CUDA stream published the last write (GPU-side
    /// publication), 0 when the host published it; `None` for CPU streams or an unreadable
    /// `_gpu` segment.
    #[serde(default)]
    pub gpu_publisher_pid: Option<i64>,
    /// GPU streams: the pid holding the stream's GPU consumer (`Stream::gpu_consumer`), 0 when
    /// none; `None` for CPU streams or an unreadable `_gpu` segment.
    #[serde(default)]
    pub gpu_consumer_pid: Option<i64>,
}

impl StreamStat {
    fn from_header(h: &Header) -> StreamStat {
        // GPU streams: the `_gpu` segment's mutable words, from one snapshot.
        let gpu = h
            .gpu()
            .then(|| crate::gpu::segment_bytes(&h.name))
            .flatten();
        StreamStat {
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
            history: crate::history::depth(&h.name, h.instance_id),
            gpu_publisher_pid: gpu.as_deref().and_then(crate::gpu::layout::publisher_pid),
            gpu_consumer_pid: gpu.as_deref().and_then(crate::gpu::layout::consumer_pid),
        }
    }
}

/// The validated metadata of one stream, without mapping its payload.
pub fn stat(name: &str) -> Result<StreamStat> {
    name::check(name).map_err(|reason| Error::InvalidName {
        name: name.to_owned(),
        reason,
    })?;
    let (_meta, h) = open_meta(name)?;
    Ok(StreamStat::from_header(&h))
}

/// Validates the stream behind a payload segment id: its metadata's name must hash back to
/// the id and the header must pass every rule. Anything else in `/dev/shm` is not ours.
fn validated(id: &str) -> Option<Header> {
    if !name::looks_like_segment_id(id) {
        return None;
    }
    let meta = Segment::open_prefix(&format!("{id}_meta"), false, format::META_BYTES).ok()?;
    let stored = format::stored_name(&meta.snapshot(format::META_BYTES))?;
    if name::segment_id(&stored) != id {
        return None;
    }
    decode_retrying(&meta, Some(&stored)).ok()
}

fn scan() -> Result<Vec<Header>> {
    let dir = match std::fs::read_dir("/dev/shm") {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("*", "listing /dev/shm", e)),
    };
    let mut out: Vec<Header> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(validated))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Names of every valid stream (ours and pyshmem's), sorted.
pub fn list_streams() -> Result<Vec<String>> {
    Ok(scan()?.into_iter().map(|h| h.name).collect())
}

/// Metadata of every valid stream, sorted by name.
pub fn list_stats() -> Result<Vec<StreamStat>> {
    Ok(scan()?.iter().map(StreamStat::from_header).collect())
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

/// Unlinks the current generation; with `expected`, only if it is that generation.
pub(crate) fn unlink_generation(name: &str, expected: Option<[u8; 16]>) -> Result<()> {
    name::check(name).map_err(|reason| Error::InvalidName {
        name: name.to_owned(),
        reason,
    })?;
    let lock_path = name::lock_path(name);
    let lock = LockFile::attach(&lock_path, name)?;
    let _held = NameLock::take(&lock, name)?;
    let meta = Segment::open_prefix(&name::meta_id(name), true, format::META_BYTES).ok();
    let payload_exists = segment::exists(&name::segment_id(name));
    if meta.is_none() && !payload_exists {
        if !segment::exists(&name::meta_id(name)) {
            // No stream by that name: the lock file attach just made would only leak.
            let _ = std::fs::remove_file(&lock_path);
        }
        return Err(match expected {
            Some(_) => Error::Stale {
                name: name.to_owned(),
            },
            None => not_found(name),
        });
    }
    let meta = meta.filter(|m| m.len() >= format::META_BYTES);
    if let (Some(meta), Some(want)) = (meta.as_ref(), expected) {
        let mut current = [0u8; 16];
        current.copy_from_slice(
            &meta.snapshot(format::META_BYTES)
                [format::offset::INSTANCE_ID..format::offset::INSTANCE_ID + 16],
        );
        if current != want {
            return Err(Error::Stale {
                name: name.to_owned(),
            });
        }
    }
    for id in [
        name::segment_id(name),
        name::meta_id(name),
        name::gpu_id(name),
        name::history_id(name),
    ] {
        segment::unlink(&id).map_err(|e| Error::io(name, "unlinking a segment", e))?;
    }
    if let Some(meta) = meta.as_ref() {
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

/// What [`purge_with`] removes.
#[derive(Debug, Clone, Copy, Default)]
pub struct PurgeOptions {
    /// Remove every valid stream, not only those whose creator is dead.
    pub all: bool,
    /// Only report what would be removed: what has no stream now, without taking locks (a
    /// real purge spares the parts and lock files whose lock somebody holds).
    pub dry_run: bool,
}

/// What a purge did: it carries on past streams it cannot remove and reports each.
#[derive(Debug, Default)]
pub struct PurgeReport {
    /// Streams removed (or, with `dry_run`, that would be).
    pub removed: Vec<StreamStat>,
    /// `/dev/shm` objects of creations whose creator died before publishing the stream
    /// (`ps_….creating-<pid>`), removed (or, with `dry_run`, that would be).
    pub abandoned: Vec<String>,
    /// Parts of no stream: `<id>_hist` rings and `<id>_gpu` segments beside neither `_meta`
    /// nor payload (pyshmem's unlink leaves our history ring; a GPU creator killed before it
    /// published its header leaves its `_gpu`), removed (or, with `dry_run`, that would be).
    pub leftovers: Vec<String>,
    /// Lock files no stream owns (`<lock dir>/ps_….lock` beside no segment), removed (or,
    /// with `dry_run`, that would be).
    pub lock_files: Vec<PathBuf>,
    /// One error per stream or object that could not be removed.
    pub failed: Vec<Error>,
}

impl PurgeReport {
    /// The names of the streams removed.
    pub fn names(&self) -> Vec<String> {
        self.removed.iter().map(|s| s.name.clone()).collect()
    }
}

/// Removes every valid stream (pyshmem's `purge()`), returning their names. Files in
/// `/dev/shm` that are not validated streams are never touched. Streams that cannot be
/// removed do not stop it: the first such error is returned after trying every stream.
pub fn purge() -> Result<Vec<String>> {
    let mut report = purge_with(PurgeOptions {
        all: true,
        dry_run: false,
    })?;
    if !report.failed.is_empty() {
        return Err(report.failed.swap_remove(0));
    }
    Ok(report.names())
}

/// Removes valid streams whose creator is dead (or all with `all`), and abandoned creations.
pub fn purge_with(opts: PurgeOptions) -> Result<PurgeReport> {
    purge_matching(opts, |_| true)
}

/// [`purge_with`] restricted to streams whose name `select` accepts. Abandoned creations and
/// orphan lock files (whose names are unknown) are removed whatever `select` says: no stream
/// owns them.
pub fn purge_matching(opts: PurgeOptions, select: impl Fn(&str) -> bool) -> Result<PurgeReport> {
    let mut report = PurgeReport::default();
    for h in scan()? {
        if !select(&h.name) || (!opts.all && sys::process_running(h.creator_pid)) {
            continue;
        }
        if !opts.dry_run {
            match unlink_scanned(&h) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    report.failed.push(e);
                    continue;
                }
            }
        }
        report.removed.push(StreamStat::from_header(&h));
    }
    sweep_abandoned(opts.dry_run, &mut report)?;
    sweep_leftovers(opts.dry_run, &mut report)?;
    sweep_orphan_locks(opts.dry_run, &mut report)?;
    Ok(report)
}

/// Removes the parts of no stream (see [`PurgeReport::leftovers`]) that are this user's
/// files. Each goes under its name's lock (taken through the lock file of its payload id),
/// after checking again that neither `_meta` nor payload has appeared: a creation or unlink
/// under way holds that lock, and is left to finish.
fn sweep_leftovers(dry_run: bool, report: &mut PurgeReport) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = match std::fs::read_dir(sys::SHM_DIR) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("*", "listing /dev/shm", e)),
    };
    for entry in dir.filter_map(|e| e.ok()) {
        let Some(file) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Some(id) = ["_hist", "_gpu"]
            .iter()
            .find_map(|part| file.strip_suffix(part))
            .filter(|id| name::looks_like_segment_id(id))
        else {
            continue;
        };
        let ours = entry
            .metadata()
            .is_ok_and(|m| m.file_type().is_file() && m.uid() == crate::trust::euid());
        if !ours || has_stream(id) {
            continue;
        }
        match remove_leftover(id, &file, dry_run) {
            Ok(true) => report.leftovers.push(file),
            Ok(false) => {}
            Err(e) => report.failed.push(e),
        }
    }
    Ok(())
}

/// Whether payload id `id` has its `_meta` or its payload (a stream, or one being removed).
fn has_stream(id: &str) -> bool {
    segment::exists(id) || segment::exists(&format!("{id}_meta"))
}

/// Removes leftover `file` of payload id `id` under the name's lock (with `dry_run`, only
/// says it would); `false` if somebody holds the lock or the stream has appeared. A lock file made
/// for this goes with the next step of the purge (it belongs to no stream).
fn remove_leftover(id: &str, file: &str, dry_run: bool) -> Result<bool> {
    if dry_run {
        return Ok(true);
    }
    let lock = LockFile::attach(&name::lock_dir().join(format!("{id}.lock")), id)?;
    let Some(_held) = NameLock::try_take(&lock, id)? else {
        return Ok(false);
    };
    if has_stream(id) {
        return Ok(false);
    }
    segment::unlink(file).map_err(|e| Error::io(file, "removing a part of no stream", e))?;
    Ok(true)
}

/// Removes lock files that no stream owns: pyshmem never removes its lock files, and a
/// process killed between making one and its cleanup leaves one. Each goes as `unlink`
/// removes a missing stream's lock file: under its lock, after checking again that no
/// segment has appeared. One that somebody holds (a creation under way) is left. A process
/// that opened the file before it went and then waits for its flock moves to the file now at
/// the path once it gets it ([`NameLock`]); pyshmem checks the file only before its flock.
fn sweep_orphan_locks(dry_run: bool, report: &mut PurgeReport) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = match std::fs::read_dir(name::lock_dir()) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("*", "listing the lock directory", e)),
    };
    for entry in dir.filter_map(|e| e.ok()) {
        let file = entry.file_name();
        let Some(id) = file
            .to_str()
            .and_then(|f| f.strip_suffix(".lock"))
            .filter(|id| name::looks_like_segment_id(id))
        else {
            continue;
        };
        let ours = entry
            .metadata()
            .is_ok_and(|m| m.file_type().is_file() && m.uid() == crate::trust::euid());
        if !ours || has_segments(id) {
            continue;
        }
        let path = entry.path();
        match remove_orphan_lock(&path, id, dry_run) {
            Ok(true) => report.lock_files.push(path),
            Ok(false) => {}
            Err(e) => report.failed.push(e),
        }
    }
    Ok(())
}

/// Whether any segment of payload id `id` exists (a stream, or a part of one).
fn has_segments(id: &str) -> bool {
    ["", "_meta", "_hist", "_gpu"]
        .iter()
        .any(|suffix| segment::exists(&format!("{id}{suffix}")))
}

/// Removes the orphan lock file at `path` under its lock (with `dry_run`, only says it would);
/// `false` if somebody holds the lock or a segment has appeared.
fn remove_orphan_lock(path: &Path, id: &str, dry_run: bool) -> Result<bool> {
    if dry_run {
        return Ok(true);
    }
    let lock = LockFile::attach(path, id)?;
    let Some(_held) = NameLock::try_take(&lock, id)? else {
        return Ok(false);
    };
    if has_segments(id) {
        return Ok(false);
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(id, "removing its orphan lock file", e)),
    }
}

/// Unlinks the generation `h` describes; `false` if it is gone or was replaced since it was
/// scanned. A stream made again under the name meanwhile (by a live process, perhaps, which
/// a purge of dead creators' streams must spare) is not the one purge chose.
fn unlink_scanned(h: &Header) -> Result<bool> {
    match unlink_generation(&h.name, Some(h.instance_id)) {
        Ok(()) => Ok(true),
        Err(Error::Stale { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes `ps_….creating-<pid>` objects of dead creators that are this user's files.
fn sweep_abandoned(dry_run: bool, report: &mut PurgeReport) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = match std::fs::read_dir("/dev/shm") {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("*", "listing /dev/shm", e)),
    };
    for entry in dir.filter_map(|e| e.ok()) {
        let Some(file) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Some(pid) = segment::abandoned_creation(&file) else {
            continue;
        };
        let ours = entry
            .metadata()
            .is_ok_and(|m| m.file_type().is_file() && m.uid() == crate::trust::euid());
        if !ours || sys::process_running(pid) {
            continue;
        }
        if !dry_run && let Err(e) = segment::unlink(&file) {
            report
                .failed
                .push(Error::io(&file, "removing an abandoned creation", e));
            continue;
        }
        report.abandoned.push(file);
    }
    Ok(())
}

/// A stream that is unlinked when this guard drops (pyshmem's `stream(...)` context manager).
/// Derefs to [`Stream`].
#[derive(Debug)]
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

impl TryFrom<String> for Dtype {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Dtype, String> {
        s.parse()
    }
}

#[allow(dead_code)]
fn _assert_stream_is_send_sync() {
    fn ok<T: Send + Sync>() {}
    ok::<Stream>();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_unlinks_only_the_generation_it_scanned() {
        let name = format!("catalog-regen-{}", std::process::id());
        let _ = unlink(&name);
        let old = Stream::create(&name, &[4], Dtype::U8).unwrap();
        let scanned = validated(&name::segment_id(&name)).expect("the stream is listed");
        drop(old);
        unlink(&name).unwrap();
        let new = Stream::create(&name, &[4], Dtype::U8).unwrap();
        assert!(
            !unlink_scanned(&scanned).unwrap(),
            "a stream made again since the scan was taken for the one scanned"
        );
        let current = validated(&name::segment_id(&name)).expect("the new stream is left");
        assert_eq!(current.instance_id, new.instance_id);
        assert!(unlink_scanned(&current).unwrap());
        assert!(matches!(stat(&name), Err(Error::NotFound { .. })));
        assert!(
            !unlink_scanned(&current).unwrap(),
            "gone: nothing to unlink"
        );
    }
}
