//! `purge`: removing the streams whose creator is dead (or all of them), and whatever belongs
//! to no stream: creations abandoned mid-way, stream parts left without their stream, and
//! lock files of no stream.
//!
//! Streams go by [`unlink`](crate::unlink) of the generation listed. Everything else goes
//! under its name's lock (the lock file of its payload id, [`NameLock`]), after checking
//! again that no stream has appeared, so a creation or unlink under way, which holds that
//! lock, is left to finish.

use std::io;
use std::path::{Path, PathBuf};

use crate::catalog::{
    StreamStat, exhausted, listed_ids, unlink_named_generation, validated, validated_all,
};
use crate::error::{Error, Result};
use crate::format::Header;
use crate::lock::{self, LockFile};
use crate::segment;
use crate::stream::NameLock;
use crate::{name, sys};

/// What [`purge_with`] removes.
#[derive(Debug, Clone, Copy, Default)]
pub struct PurgeOptions {
    /// Remove every valid stream, not only those whose creator is dead.
    pub all: bool,
    /// Only report what would be removed: what has no stream now, without taking locks to
    /// remove anything (a real purge spares the abandoned creations, parts and lock files
    /// whose lock somebody holds: a creator still building, or the writer of a stream made
    /// since that keeps its guard for its run). Its scan opens each stream as
    /// [`crate::list_streams`] does, and so clears the lock stamps a dead writer left.
    pub dry_run: bool,
}

/// What a purge did: it carries on past streams it cannot remove and reports each.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct PurgeReport {
    /// Streams removed (or, with `dry_run`, that would be).
    pub removed: Vec<StreamStat>,
    /// `/dev/shm` objects of creations whose creator died before publishing the stream
    /// (`ps_….creating-<pid>`), removed under the name's lock (or, with `dry_run`, that
    /// would be).
    pub abandoned: Vec<String>,
    /// Parts of no stream: `<id>_hist` rings and `<id>_gpu` segments beside neither `_meta`
    /// nor payload (pyshmem's unlink leaves our history ring; a GPU creator killed before it
    /// published its header leaves its `_gpu`), and parts of an earlier generation beside the
    /// stream now under the name (a ring pyshmem's unlink left, the name created again
    /// without history; a `_gpu` beside a CPU stream, or whose record names another
    /// generation), removed (or, with `dry_run`, that would be).
    pub leftovers: Vec<String>,
    /// Lock files no stream owns (`<lock dir>/ps_….lock` beside no segment), removed (or,
    /// with `dry_run`, that would be).
    pub lock_files: Vec<PathBuf>,
    /// One per stream or object that could not be removed, or directory that could not be
    /// listed: what, and why. A stream whose `_meta` this user may not open
    /// ([`PurgeItem::Unreadable`]) is one whatever the options and selection say.
    pub failed: Vec<PurgeFailure>,
}

/// What a purge could not remove ([`PurgeFailure::item`]), by [`PurgeReport`]'s categories.
/// More kinds may come (a directory it could not list came later): match with a `_` arm.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PurgeItem {
    /// A stream, by name.
    Stream(String),
    /// An abandoned creation's object in `/dev/shm` (its file name).
    Abandoned(String),
    /// A part of no stream in `/dev/shm` (its file name).
    Leftover(String),
    /// A lock file of no stream.
    LockFile(PathBuf),
    /// A directory that could not be listed (`/dev/shm`, or the lock directory): what it
    /// holds was not looked at. The rest of the purge went on, but for the lock files when
    /// `/dev/shm` could not be listed for its streams: whether a stream owns one could not
    /// be checked (a lock file is kept wherever a segment's lookup fails).
    Directory(PathBuf),
    /// The `_meta` segment (its file name in `/dev/shm`) of a stream of this user's whose
    /// mode denies the open: its name and creator are inside it, so the stream is neither
    /// selected nor removed, nor are its other parts and lock file. The error is
    /// [`Error::AccessDenied`] (no stream name), with the remedy (`chmod 600`). One whose
    /// name was read (readable, but a writable open to clear a dead writer's lock stamps
    /// denied) is a [`PurgeItem::Stream`] failure.
    Unreadable(String),
}

/// Something a purge could not remove, and why. Shown as the error for a stream (which
/// names it), else as what the object is and its path, then why: the [`Error`] of an object
/// of no stream carries its segment id where a stream's name would be.
#[derive(Debug)]
pub struct PurgeFailure {
    /// What could not be removed.
    pub item: PurgeItem,
    /// Why.
    pub error: Error,
}

impl PurgeItem {
    /// What it is, in a word or two: `stream`, `abandoned creation`, `leftover part`,
    /// `leftover lock file`, `directory` or `unreadable stream`.
    pub fn kind(&self) -> &'static str {
        match self {
            PurgeItem::Stream(_) => "stream",
            PurgeItem::Abandoned(_) => "abandoned creation",
            PurgeItem::Leftover(_) => "leftover part",
            PurgeItem::LockFile(_) => "leftover lock file",
            PurgeItem::Directory(_) => "directory",
            PurgeItem::Unreadable(_) => "unreadable stream",
        }
    }
}

impl PurgeFailure {
    fn new(item: PurgeItem, error: Error) -> PurgeFailure {
        PurgeFailure { item, error }
    }
}

impl std::fmt::Display for PurgeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = match &self.item {
            PurgeItem::Stream(_) => return write!(f, "{}", self.error),
            PurgeItem::Abandoned(file)
            | PurgeItem::Leftover(file)
            | PurgeItem::Unreadable(file) => segment::path(file),
            PurgeItem::LockFile(path) | PurgeItem::Directory(path) => path.clone(),
        };
        let kind = self.item.kind();
        let failed = match self.item {
            PurgeItem::Directory(_) => "listed",
            // Not looked at, so neither judged nor removed (a dry run removes nothing).
            PurgeItem::Unreadable(_) => "read",
            _ => "removed",
        };
        write!(f, "the {kind} {} could not be {failed}: ", path.display())?;
        match &self.error {
            Error::Io { op, source, .. } => write!(
                f,
                "{op} failed: {source}{}",
                crate::error::exhaustion_remedy(source)
            ),
            Error::Untrusted { path, reason, .. } => write!(
                f,
                "{} is refused: {reason}; remove it (as its owner)",
                path.display()
            ),
            Error::AccessDenied {
                path,
                mode,
                writable,
                source,
                ..
            } => f.write_str(&crate::error::access_denied(
                path, *mode, *writable, source, false,
            )),
            Error::LockDir { path, reason, .. } => write!(
                f,
                "lock directory {} is refused: {reason} (set PYSHMEM_LOCK_DIR to a private \
                 directory)",
                path.display()
            ),
            e => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for PurgeFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl PurgeReport {
    /// The names of the streams removed.
    pub fn names(&self) -> Vec<String> {
        self.removed.iter().map(|s| s.name.clone()).collect()
    }
}

/// Removes every valid stream (pyshmem's `purge()`), returning their names, and what
/// belongs to no stream, as [`purge_with`] does: abandoned creations, parts of no stream and
/// lock files of no stream (see [`PurgeReport`]'s categories). Nothing else in `/dev/shm` is
/// touched. What cannot be removed does not stop it: the first such error is returned
/// after trying everything. That of a directory it could not list is about no stream
/// ([`Error::stream_name`] is empty).
pub fn purge() -> Result<Vec<String>> {
    names_or_first_failure(purge_with(PurgeOptions {
        all: true,
        dry_run: false,
    })?)
}

/// [`purge`]'s answer from its report.
fn names_or_first_failure(mut report: PurgeReport) -> Result<Vec<String>> {
    if !report.failed.is_empty() {
        return Err(report.failed.swap_remove(0).error);
    }
    Ok(report.names())
}

/// Removes valid streams whose creator is dead (or all with `all`), and what belongs to no
/// stream (see [`PurgeReport`]).
pub fn purge_with(opts: PurgeOptions) -> Result<PurgeReport> {
    purge_matching(opts, |_| true)
}

/// [`purge_with`] restricted to streams whose name `select` accepts. Abandoned creations,
/// parts and lock files of no stream (whose names are unknown) are removed whatever `select`
/// says: no stream owns them. A `_meta` this user may not open is a failure whatever
/// `select` and `opts` say ([`PurgeItem::Unreadable`]): its name is unknown, so it may match.
pub fn purge_matching(opts: PurgeOptions, select: impl Fn(&str) -> bool) -> Result<PurgeReport> {
    purge_in(Path::new(sys::SHM_DIR), &name::lock_dir(), opts, select)
}

/// [`purge_matching`] listing `shm` (`/dev/shm`) and the lock directory `locks`. One that
/// cannot be listed is a failure of [`PurgeItem::Directory`]; an unlisted `shm` stops the
/// purge there, as which lock files its streams own cannot be checked (an unsearchable
/// `/dev/shm` would make every one look orphaned).
fn purge_in(
    shm: &Path,
    locks: &Path,
    opts: PurgeOptions,
    select: impl Fn(&str) -> bool,
) -> Result<PurgeReport> {
    let mut report = PurgeReport::default();
    match listed_ids(shm) {
        Ok(ids) => {
            purge_streams(&ids, opts, select, &mut report)?;
            sweep_shm(shm, opts.dry_run, &mut report);
        }
        // Its objects (streams, abandoned creations, parts) were not looked at, nor are the
        // lock files, whose streams cannot be checked.
        Err(e) => {
            report.failed.push(unlisted_shm(shm, e));
            return Ok(report);
        }
    }
    sweep_orphan_locks(locks, opts.dry_run, &mut report);
    Ok(report)
}

/// The failure of a `/dev/shm` (`dir`) that could not be listed: an [`Error::Io`] about no
/// stream (an empty name).
fn unlisted_shm(dir: &Path, e: io::Error) -> PurgeFailure {
    let error = Error::io("", "listing /dev/shm", e);
    PurgeFailure::new(PurgeItem::Directory(dir.to_owned()), error)
}

/// Removes the streams of payload ids `ids` that `select` and `opts` choose; each whose
/// `_meta` this user may not open is a failure ([`PurgeItem::Unreadable`], or
/// [`PurgeItem::Stream`] where its name was read), whatever `select` says.
fn purge_streams(
    ids: &[String],
    opts: PurgeOptions,
    select: impl Fn(&str) -> bool,
    report: &mut PurgeReport,
) -> Result<()> {
    let scan = validated_all(ids)?;
    for (file, e) in scan.denied {
        // Named where its name was read (a `_meta` it may read but not write).
        let item = match e.stream_name() {
            "" => PurgeItem::Unreadable(file),
            name => PurgeItem::Stream(name.to_owned()),
        };
        report.failed.push(PurgeFailure::new(item, e));
    }
    for h in scan.streams {
        if !select(&h.name) || (!opts.all && sys::process_running(h.creator_pid)) {
            continue;
        }
        // Before the unlink: its ring's depth and GPU record go with it.
        let failed = |e| PurgeFailure::new(PurgeItem::Stream(h.name.clone()), e);
        let stat = match StreamStat::from_header(&h) {
            Ok(stat) => stat,
            Err(e) => {
                report.failed.push(failed(e));
                continue;
            }
        };
        if !opts.dry_run {
            match unlink_scanned(&h) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    report.failed.push(failed(e));
                    continue;
                }
            }
        }
        report.removed.push(stat);
    }
    Ok(())
}

/// Unlinks the generation `h` describes; `false` if it is gone or was replaced since it was
/// scanned. A stream made again under the name meanwhile (by a live process, perhaps, which
/// a purge of dead creators' streams must spare) is not the one purge chose.
fn unlink_scanned(h: &Header) -> Result<bool> {
    match unlink_named_generation(&h.name, Some(h.instance_id)) {
        Ok(()) => Ok(true),
        Err(Error::Stale { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes from `/dev/shm` (`dir`), in one listing, the `ps_….creating-<pid>` objects of dead
/// creators and the parts of no stream (see [`PurgeReport::leftovers`]).
fn sweep_shm(dir: &Path, dry_run: bool, report: &mut PurgeReport) {
    let files = match our_files(dir) {
        Ok(files) => files,
        Err(e) => {
            report.failed.push(unlisted_shm(dir, e));
            return;
        }
    };
    for (file, _) in files {
        if let Some((id, pid)) = segment::abandoned_creation(&file) {
            // A dead pid, then under the name's lock, which a live creator holds for its whole
            // build: its pid alone can misjudge it (a process whose main thread exited shows
            // as a zombie; a creator in another pid namespace). Both, since a creator using
            // another lock directory (`PYSHMEM_LOCK_DIR`, a private `$TMPDIR`) holds a lock
            // this purge does not see; a live process that took a dead creator's pid keeps
            // its objects until it is gone.
            let dead = || Ok(!sys::process_running(pid));
            match remove_unowned(id, dry_run, dead, || segment::unlink(&file)) {
                Ok(true) => report.abandoned.push(file),
                Ok(false) => {}
                Err(e) => report
                    .failed
                    .push(PurgeFailure::new(PurgeItem::Abandoned(file), e)),
            }
            continue;
        }
        let Some((id, part)) = ["_hist", "_gpu"]
            .iter()
            .find_map(|part| Some((file.strip_suffix(part)?, *part)))
            .filter(|(id, _)| name::looks_like_segment_id(id))
        else {
            continue;
        };
        let unowned = || {
            Ok(!segment::stream_parts_exist(id)
                || match part {
                    "_hist" => ring_of_another_generation(id)?,
                    _ => gpu_record_of_another_generation(id)?,
                })
        };
        let removed = remove_unowned(id, dry_run, unowned, || segment::unlink(&file));
        match removed {
            Ok(true) => report.leftovers.push(file),
            Ok(false) => {}
            Err(e) => report
                .failed
                .push(PurgeFailure::new(PurgeItem::Leftover(file), e)),
        }
    }
}

/// Removes lock files that no stream owns: pyshmem never removes its lock files, and a
/// process killed between making one and its cleanup leaves one. Each goes as `unlink`
/// removes a missing stream's lock file. A process that opened the file before it went and
/// then waits for its flock moves to the file now at the path once it gets it
/// ([`NameLock`]); pyshmem checks the file only before its flock.
fn sweep_orphan_locks(dir: &Path, dry_run: bool, report: &mut PurgeReport) {
    let files = match our_files(dir) {
        Ok(files) => files,
        Err(e) => {
            let error = unlisted_lock_dir(dir, e);
            report.failed.push(PurgeFailure::new(
                PurgeItem::Directory(dir.to_owned()),
                error,
            ));
            return;
        }
    };
    for (file, path) in files {
        let Some(id) = file
            .strip_suffix(".lock")
            .filter(|id| name::looks_like_segment_id(id))
        else {
            continue;
        };
        let unowned = || Ok(!has_segments(id));
        let removed = remove_unowned(id, dry_run, unowned, || std::fs::remove_file(&path));
        match removed {
            Ok(true) => report.lock_files.push(path),
            Ok(false) => {}
            Err(e) => report
                .failed
                .push(PurgeFailure::new(PurgeItem::LockFile(path), e)),
        }
    }
}

/// The regular files of this user in `dir` (name and path); none if `dir` does not exist.
fn our_files(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    use std::os::unix::fs::MetadataExt;
    let entries = match std::fs::read_dir(dir) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.metadata()
                .is_ok_and(|m| m.file_type().is_file() && m.uid() == crate::sys::euid())
        })
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .collect())
}

/// Why the lock directory `dir` could not be listed (`e`): [`Error::LockDir`] where every
/// lock taken there is refused too, by [`lock::dir_refusal`]'s rules, else [`Error::Io`]
/// (out of descriptors, say). Either is about no stream (an empty name).
fn unlisted_lock_dir(dir: &Path, e: io::Error) -> Error {
    let refusal = std::fs::symlink_metadata(dir)
        .ok()
        .and_then(|m| lock::dir_refusal(&m, crate::sys::euid()));
    match refusal {
        Some(reason) => Error::LockDir {
            name: String::new(),
            path: dir.to_owned(),
            reason,
        },
        None => Error::io("", "listing the lock directory", e),
    }
}

/// Whether the `_hist` of payload id `id` is not the ring of the stream there (an earlier
/// generation's, which pyshmem's unlink left before the name was created again without
/// history): compared by the instance id in the ring's header, which alone is mapped (a ring
/// may be 64 GiB). A ring beside a `_meta` that does not validate is kept, as is one whose
/// header cannot be read or is no ring header of this format. An error only when the system
/// is out of a resource ([`exhausted`]) reading the `_meta` or the ring's header.
fn ring_of_another_generation(id: &str) -> Result<bool> {
    let Some(h) = validated(id)? else {
        return Ok(false);
    };
    match crate::history::of_another_generation(&h.name, h.instance_id) {
        Ok(another) => Ok(another),
        Err(e) if exhausted(&e) => Err(e),
        Err(_) => Ok(false),
    }
}

/// Whether the `_gpu` of payload id `id` is not the GPU record of the stream there: the
/// stream is a CPU stream (an earlier GPU generation's creator was killed before it published
/// its header, and the name was created again without a device), or a stream of ours on the
/// GPU whose record names another generation. A `_gpu` beside a `_meta` that does not
/// validate is kept, as is one beside a pyshmem GPU stream (a torch IPC pickle, not read
/// here) or one whose record cannot be read or decoded. An error only when the system is out
/// of a resource ([`exhausted`]) reading the `_meta`.
fn gpu_record_of_another_generation(id: &str) -> Result<bool> {
    Ok(validated(id)?.is_some_and(|h| {
        if !h.gpu() {
            return true;
        }
        h.flags & crate::format::FLAG_CUDA_IPC != 0
            && crate::gpu::segment_bytes(&h.name)
                .and_then(|b| crate::gpu::layout::decode(&b).ok())
                .is_some_and(|r| r.instance_id != h.instance_id)
    }))
}

/// Whether any segment of payload id `id` may exist (a stream, or a part of one): one that
/// cannot be looked up (an unsearchable `/dev/shm`) counts, so its lock file is kept.
fn has_segments(id: &str) -> bool {
    ["", "_meta", "_hist", "_gpu"].iter().any(|suffix| {
        let path = segment::path(&format!("{id}{suffix}"));
        !matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == io::ErrorKind::NotFound)
    })
}

/// Removes something of payload id `id` that `unowned` says belongs to no stream, under the
/// name's lock once `unowned` says so again there (with `dry_run`, only says it would, taking
/// no lock). `false` if it belongs to a stream (whose lock is then left alone), somebody
/// holds the lock, or the thing is gone. A lock file made to take the lock belongs to no
/// stream: the lock-file sweep, which runs last, removes it. An error from `unowned` (the
/// system out of a resource, which proves nothing either way) is returned.
fn remove_unowned(
    id: &str,
    dry_run: bool,
    unowned: impl Fn() -> Result<bool>,
    remove: impl FnOnce() -> io::Result<()>,
) -> Result<bool> {
    let no_stream = unowned()?;
    if !no_stream || dry_run {
        return Ok(no_stream);
    }
    let lock = LockFile::attach(&name::lock_path_of_id(id), id)?;
    let Some(_held) = NameLock::try_take(&lock, id)? else {
        return Ok(false);
    };
    if !unowned()? {
        return Ok(false);
    }
    match remove() {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(id, "removing what belongs to no stream", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Dtype, Stream, unlink};

    #[test]
    fn a_leftover_failing_for_want_of_files_is_not_called_a_stream() {
        let id = name::segment_id("purge-emfile");
        let file = format!("{id}_hist");
        let error = Error::io(
            &id,
            "removing what belongs to no stream",
            io::Error::from_raw_os_error(libc::EMFILE),
        );
        let failure = PurgeFailure::new(PurgeItem::Leftover(file.clone()), error);
        // The error chain reaches the cause (an EMFILE), as a caller's `source()` walk sees it.
        let source = std::error::Error::source(&failure).expect("a purge failure has its cause");
        assert_eq!(source.to_string(), failure.error.to_string());
        let shown = failure.to_string();
        let path = segment::path(&file);
        assert!(
            shown.starts_with(&format!(
                "the leftover part {} could not be removed: removing what belongs to no \
                 stream failed: ",
                path.display()
            )),
            "{shown}"
        );
        assert!(!shown.contains("stream 'ps_"), "{shown}");
        assert!(shown.contains("ulimit -n"), "the remedy is lost: {shown}");
        // Nor one of a directory, whose error is about no stream.
        let error = Error::io(
            "",
            "listing /dev/shm",
            io::Error::from_raw_os_error(libc::EMFILE),
        );
        let item = PurgeItem::Directory(PathBuf::from("/dev/shm"));
        let shown = PurgeFailure::new(item, error).to_string();
        assert!(
            shown.starts_with(
                "the directory /dev/shm could not be listed: listing /dev/shm failed: "
            ),
            "{shown}"
        );
        assert!(shown.contains("ulimit -n"), "the remedy is lost: {shown}");
    }

    /// A scratch directory of this test process, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("shmstream-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const DRY_RUN: PurgeOptions = PurgeOptions {
        all: true,
        dry_run: true,
    };

    /// A `/dev/shm` that cannot be listed (here a file) is one failure of a directory (the
    /// listing's error was the whole purge's), and the lock sweep is skipped: which lock
    /// files no stream owns cannot be checked (an unsearchable `/dev/shm` made every one look
    /// orphaned, and purge removed them all).
    #[test]
    fn an_unlistable_shm_is_one_directory_failure_and_the_lock_sweep_is_skipped() {
        let scratch = Scratch::new("purge-unlisted-shm");
        let shm = scratch.0.join("shm");
        std::fs::write(&shm, b"").unwrap();
        let locks = scratch.0.join("locks");
        std::fs::create_dir(&locks).unwrap();
        let orphan = locks.join(format!(
            "{}.lock",
            name::segment_id(&format!("purge-unlisted-shm-{}", std::process::id()))
        ));
        std::fs::write(&orphan, b"").unwrap();
        let report = purge_in(&shm, &locks, DRY_RUN, |_| true).unwrap();
        let failed: Vec<_> = report.failed.iter().map(|f| &f.item).collect();
        assert_eq!(failed, [&PurgeItem::Directory(shm.clone())], "{report:?}");
        assert_eq!(report.lock_files, [] as [PathBuf; 0], "the lock sweep ran");
        assert!(orphan.exists());
        let shown = report.failed[0].to_string();
        assert!(
            shown.starts_with(&format!(
                "the directory {} could not be listed: listing /dev/shm failed",
                shm.display()
            )),
            "{shown}"
        );
    }

    /// The error `purge` returns for a directory it could not list is about no stream: it
    /// carried the directory as the stream's name ("lock directory "/x" for stream '/x'").
    #[test]
    fn a_directory_purge_could_not_list_is_no_streams_error() {
        let scratch = Scratch::new("purge-unlisted-name");
        let file = scratch.0.join("file");
        std::fs::write(&file, b"").unwrap();
        let empty = scratch.0.join("empty");
        std::fs::create_dir(&empty).unwrap();
        let quoted = format!("'{}'", file.display());
        // An unlisted `/dev/shm`, then an unlisted lock directory.
        let [shm, locks] = [(&file, &empty), (&empty, &file)].map(|(shm, locks)| {
            let report = purge_in(shm, locks, DRY_RUN, |_| true).unwrap();
            assert_eq!(report.failed.len(), 1, "{report:?}");
            let f = &report.failed[0];
            assert_eq!(f.item, PurgeItem::Directory(file.clone()));
            assert_eq!(f.error.stream_name(), "", "{}", f.error);
            assert!(!f.error.to_string().contains(&quoted), "{}", f.error);
            names_or_first_failure(report).unwrap_err()
        });
        assert!(matches!(shm, Error::Io { .. }), "{shm:?}");
        assert!(
            matches!(
                locks,
                Error::LockDir {
                    reason: "it is not a directory",
                    ..
                }
            ),
            "{locks:?}"
        );
    }

    /// A lock directory purge cannot list is refused as taking a lock there refuses it (one
    /// rule, [`lock::dir_refusal`]): a path under a file is an I/O error to both (purge
    /// called it "not a directory", judging by the listing's errno).
    #[test]
    fn an_unlisted_lock_directory_is_refused_as_a_lock_there_is() {
        let scratch = Scratch::new("purge-unlisted-rule");
        let file = scratch.0.join("file");
        std::fs::write(&file, b"").unwrap();
        let link = scratch.0.join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let refusal = |e: &Error| match e {
            Error::LockDir { reason, .. } => Some(*reason),
            _ => None,
        };
        for dir in [file.clone(), file.join("locks"), link] {
            let listed = std::fs::read_dir(&dir).unwrap_err();
            let purged = unlisted_lock_dir(&dir, listed);
            let locked = lock::prepare_dir(&dir, "x").unwrap_err();
            assert_eq!(
                refusal(&purged),
                refusal(&locked),
                "{}: purge {purged:?}, lock {locked:?}",
                dir.display()
            );
        }
        assert!(matches!(
            unlisted_lock_dir(&file, io::Error::from_raw_os_error(libc::ENOTDIR)),
            Error::LockDir {
                reason: "it is not a directory",
                ..
            }
        ));
    }

    #[test]
    fn purge_unlinks_only_the_generation_it_scanned() {
        let name = format!("catalog-regen-{}", std::process::id());
        let _ = unlink(&name);
        let old = Stream::create(&name, &[4], Dtype::U8).unwrap();
        let scanned = validated(&name::segment_id(&name))
            .unwrap()
            .expect("the stream is listed");
        drop(old);
        unlink(&name).unwrap();
        let new = Stream::create(&name, &[4], Dtype::U8).unwrap();
        assert!(
            !unlink_scanned(&scanned).unwrap(),
            "a stream made again since the scan was taken for the one scanned"
        );
        let current = validated(&name::segment_id(&name))
            .unwrap()
            .expect("the new stream is left");
        assert_eq!(current.instance_id, new.instance_id);
        assert!(unlink_scanned(&current).unwrap());
        assert!(matches!(crate::stat(&name), Err(Error::NotFound { .. })));
        assert!(
            !unlink_scanned(&current).unwrap(),
            "gone: nothing to unlink"
        );
    }

    /// A `_gpu` beside a stream is an earlier generation's when the stream is a CPU stream
    /// or its record names another generation; one beside a pyshmem GPU stream, or whose
    /// record does not decode, is kept.
    #[test]
    fn a_gpu_record_is_another_generations_only_when_it_says_so() {
        use crate::gpu::layout;
        let name = format!("purge-gpu-gen-{}", std::process::id());
        let id = name::segment_id(&name);
        let gpu = name::gpu_id(&name);
        let gpu_path = segment::path(&gpu);
        let _ = unlink(&name);
        let cpu = Stream::create(&name, &[4], Dtype::U8).unwrap();
        std::fs::write(&gpu_path, [0u8; 256]).unwrap();
        assert!(
            gpu_record_of_another_generation(&id).unwrap(),
            "beside a CPU stream"
        );
        drop(cpu);
        unlink(&name).unwrap();

        crate::gpu::tests::fake_gpu_stream(&name, false, true, layout::STATE_LIVE);
        assert!(
            !gpu_record_of_another_generation(&id).unwrap(),
            "the stream's own record"
        );
        let mut record = layout::decode(&crate::gpu::segment_bytes(&name).unwrap()).unwrap();
        record.instance_id = [1; 16];
        std::fs::write(&gpu_path, layout::encode(&record)).unwrap();
        assert!(
            gpu_record_of_another_generation(&id).unwrap(),
            "a record of another generation"
        );
        std::fs::write(&gpu_path, [0u8; 256]).unwrap();
        assert!(
            !gpu_record_of_another_generation(&id).unwrap(),
            "a record that does not decode"
        );
        unlink(&name).unwrap();

        crate::gpu::tests::fake_gpu_stream(&name, false, false, layout::STATE_LIVE);
        std::fs::write(&gpu_path, [0u8; 256]).unwrap();
        assert!(
            !gpu_record_of_another_generation(&id).unwrap(),
            "a pyshmem GPU stream's"
        );
        unlink(&name).unwrap();
        assert!(!segment::exists(&gpu));
    }
}
