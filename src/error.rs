//! The crate's one error type. Every message names the stream and says what to do.

use std::path::PathBuf;
use std::time::Duration;

use crate::dtype::Dtype;
use crate::format::FormatError;

/// Shorthand for `Result<T, shmstream::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong with a stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No stream of that name exists, or only part of one does (see `unfinished`).
    #[error("stream '{name}' not found: {}", not_found_advice(.name, .known, *.unfinished))]
    NotFound {
        /// The name asked for.
        name: String,
        /// Streams that do exist (for the hint; empty when `unfinished`, the name being right).
        known: Vec<String>,
        /// Its creation is unfinished: under way (its creator has held the name's lock past
        /// the wait, or only part of it exists: its header without its payload or its
        /// payload without its header; pyshmem makes the payload before the `_meta`, ours
        /// publish the `_meta` first), or abandoned by a creator that died. Still `NotFound`,
        /// so callers waiting for a stream to appear keep waiting.
        unfinished: bool,
    },
    /// A stream of that name already exists, or another process's creation of it is at work.
    #[error("{}", already_exists(.name, *.being_created))]
    AlreadyExists {
        /// The name.
        name: String,
        /// Another process holds the name's lock to create it: [`Stream::open`] waits for
        /// it, then says [`Error::NotFound`] (unfinished) while that creation is at work.
        ///
        /// [`Stream::open`]: crate::Stream::open
        being_created: bool,
    },
    /// The name breaks a naming rule.
    #[error("invalid stream name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// A shape that cannot be a stream's (0 or more than 19 dims, a zero dim, overflow).
    #[error("invalid shape {shape:?} for stream '{name}': {reason}")]
    InvalidShape {
        /// The stream.
        name: String,
        /// The shape given.
        shape: Vec<usize>,
        /// Why.
        reason: &'static str,
    },
    /// Data of the wrong shape.
    #[error(
        "shape mismatch on stream '{name}': the stream holds {expected:?}, got {given:?}: pass an array of shape {expected:?}"
    )]
    ShapeMismatch {
        /// The stream.
        name: String,
        /// The stream's shape.
        expected: Vec<usize>,
        /// The shape given.
        given: Vec<usize>,
    },
    /// Data of the wrong element type.
    #[error(
        "dtype mismatch on stream '{name}': the stream holds {expected}, got {given}: use the element type {} (or dispatch on its dtype with with_dtype!)",
        .expected.rust_type()
    )]
    DtypeMismatch {
        /// The stream.
        name: String,
        /// The stream's dtype.
        expected: Dtype,
        /// The dtype given.
        given: Dtype,
    },
    /// The `_meta` segment breaks a format rule, or is another pyshmem format version's
    /// ([`FormatError::is_other_version`]: not to be unlinked from under its producer).
    #[error(
        "stream '{name}' has {} ({rule}): {}",
        if .rule.is_other_version() { "a header this build cannot read" } else { "a corrupt header" },
        header_remedy(.name, .rule)
    )]
    CorruptHeader {
        /// The stream.
        name: String,
        /// The rule broken.
        #[source]
        rule: FormatError,
    },
    /// The payload segment is smaller than the header says, or has storage for less
    /// (`unwritten`: pages never written, which mapping it would allocate in RAM).
    #[error("{}", payload_too_small(.name, *.declared, *.actual, *.unwritten))]
    PayloadTooSmall {
        /// The stream.
        name: String,
        /// Bytes the header declares.
        declared: u64,
        /// Bytes the segment has (`unwritten`: bytes its storage holds).
        actual: u64,
        /// Long enough or not, the segment was never written in full: a producer sized it
        /// sparse (ours reserve the storage, pyshmem writes zeros over it).
        unwritten: bool,
    },
    /// A slice (host or device) of the wrong number of elements for the stream's frame.
    #[error(
        "slice length mismatch on stream '{name}': a frame is {expected_len} elements ({shape:?}), the slice has {given_len}: pass a slice of len() ({expected_len}) elements"
    )]
    SliceLength {
        /// The stream.
        name: String,
        /// The stream's shape.
        shape: Vec<usize>,
        /// Elements per frame (`len()`).
        expected_len: usize,
        /// Elements of the slice given.
        given_len: usize,
    },
    /// A byte buffer of the wrong size for the stream's frame.
    #[error(
        "buffer size mismatch on stream '{name}': a frame is {expected_bytes} bytes, the buffer {given_bytes}: pass a buffer of size_bytes() ({expected_bytes}) bytes"
    )]
    BufferSize {
        /// The stream.
        name: String,
        /// Bytes per frame (`size_bytes()`).
        expected_bytes: usize,
        /// Bytes of the buffer given.
        given_bytes: usize,
    },
    /// A wait ran out of time.
    #[error(
        "timed out after {timeout:?} waiting to {op} on stream '{name}': retry (with a longer timeout, where the call takes one), or check that {}",
        awaited.suspect(.name)
    )]
    Timeout {
        /// The stream.
        name: String,
        /// What was being waited for.
        op: &'static str,
        /// Whom the wait was waiting on: the process to check.
        awaited: Awaited,
        /// The timeout.
        timeout: Duration,
    },
    /// The last write was aborted or its writer died mid-write; the next good write recovers.
    #[error(
        "stream '{name}' holds an incomplete write ({reason}); a successful write is required before it can be read"
    )]
    Inconsistent {
        /// The stream.
        name: String,
        /// Which kind of failure.
        reason: &'static str,
    },
    /// The handle's stream was unlinked, or the name now belongs to a newer generation.
    #[error(
        "stream '{name}' was unlinked or replaced by a newer stream of the same name: open it again"
    )]
    Stale {
        /// The stream.
        name: String,
    },
    /// The handle was closed.
    #[error("stream '{name}' handle is closed: open the stream again")]
    Closed {
        /// The stream.
        name: String,
    },
    /// A write through a read-only handle.
    #[error("stream '{name}' was opened read-only: open it with Stream::open to {op}")]
    ReadOnly {
        /// The stream.
        name: String,
        /// The refused operation.
        op: &'static str,
    },
    /// The operation is not possible for this stream or build.
    #[error("stream '{name}': {what}")]
    Unsupported {
        /// The stream.
        name: String,
        /// What and how to fix it.
        what: String,
    },
    /// Bytes that are not valid values (a `bool` byte other than 0/1): given to a write
    /// (refused before anything changed, or its generation aborted), or in a frame a live view
    /// would lend as `bool`s (reads copy such a byte as `true`, as numpy reads it); `reason`
    /// says which, and the remedy.
    #[error("stream '{name}': invalid {dtype} data: {reason}")]
    InvalidData {
        /// The stream.
        name: String,
        /// Its dtype.
        dtype: Dtype,
        /// What was wrong.
        reason: &'static str,
    },
    /// A `write_view` closure failed; the generation was aborted.
    #[error(
        "write to stream '{name}' was aborted by its closure ({source}); readers see an incomplete write until the next one"
    )]
    WriteAborted {
        /// The stream.
        name: String,
        /// The closure's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The lock directory is unsafe to use, or can never hold this user's lock files
    /// (read-only, or not writable by this user).
    #[error(
        "lock directory {path:?}{} is refused: {reason} (set PYSHMEM_LOCK_DIR to a private directory)",
        for_stream(.name)
    )]
    LockDir {
        /// The stream.
        name: String,
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// A segment or lock file under the stream's name is not a regular file owned by this
    /// user (a FIFO, socket, directory or symlink, or another user's file): it is not used.
    #[error(
        "stream '{name}': {path:?} is refused: {reason}; remove it (as its owner) or use another name"
    )]
    Untrusted {
        /// The stream.
        name: String,
        /// The refused file.
        path: PathBuf,
        /// What it is, or who owns it.
        reason: String,
    },
    /// A segment or lock file of the stream is this user's own, but its mode (or an
    /// attribute) denies this user the open: the message says how to restore access.
    #[error(
        "{}{}",
        stream_colon(.name),
        access_denied(.path, *.mode, *.writable, .source, read_only_helps(.name, .path))
    )]
    AccessDenied {
        /// The stream.
        name: String,
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// Whether the open asked for write access.
        writable: bool,
        /// The OS error (`EACCES`, or `EPERM` for an immutable file).
        #[source]
        source: std::io::Error,
    },
    /// A GPU operation failed (or no GPU is usable).
    #[error("GPU error on stream '{name}': {reason}")]
    Gpu {
        /// The stream.
        name: String,
        /// What the driver said and what to do.
        reason: String,
    },
    /// Frames of a history stream were lost before this cursor could read them; the
    /// cursor's next call goes on with the oldest frame still held.
    #[error("stream '{name}': {lost} frame(s) lost on this cursor: {cause}")]
    Overrun {
        /// The stream.
        name: String,
        /// Exactly how many frames this cursor will never return.
        lost: u64,
        /// Why they were lost.
        cause: LossCause,
    },
    /// A cursor was asked of a stream that keeps no history.
    #[error("stream '{name}' keeps no frame history, which a cursor reads: {remedy}")]
    NoHistory {
        /// The stream.
        name: String,
        /// How this stream gets one ([`Stream::history_remedy`](crate::Stream::history_remedy)):
        /// a CPU stream's producer, or a GPU stream's with a CPU mirror.
        remedy: String,
    },
    /// A history depth that cannot be created, a history segment that does not fit its
    /// stream, or a write refused because the ring's newest frame is counted `u64::MAX` (a
    /// corrupted or planted slot: no frame can follow it; nothing is written; the remedy is
    /// to unlink and recreate the stream), or a cursor's next ring frame counted below the
    /// count due there (a corrupt ring: above the frame before it, at least the count a new
    /// cursor started from; the cursor stays on that frame).
    #[error("history of stream '{name}': {reason}")]
    InvalidHistory {
        /// The stream.
        name: String,
        /// What is wrong, and the remedy.
        reason: String,
    },
    /// No room for a new stream: `/dev/shm` is short of bytes or inodes, or the process's
    /// memory cgroup is short of memory under its limit (see `shortage`).
    #[error("{}", no_space(.name, *.needed, .available, .shortage))]
    NoSpace {
        /// The stream.
        name: String,
        /// Bytes of the whole stream: payload, `_meta` and history ring, each rounded up to
        /// whole pages as tmpfs stores them.
        needed: u64,
        /// Bytes free in `/dev/shm` once the parts made so far were removed, if known (the
        /// room under a cgroup's limit is in [`Shortage::Cgroup`]).
        available: Option<u64>,
        /// What ran out.
        shortage: Shortage,
    },
    /// A segment of a new stream is larger than this process's file-size limit
    /// (`ulimit -f`, `RLIMIT_FSIZE`): nothing was made.
    #[error(
        "stream '{name}' needs a shared-memory segment of {needed} bytes{}, over this process's file-size limit (`ulimit -f`) of {limit} bytes: raise the limit (`ulimit -f unlimited`){}",
        if *.ring { " (its history ring)" } else { "" },
        file_size_remedy(*.ring, *.limit)
    )]
    FileSizeLimit {
        /// The stream.
        name: String,
        /// Bytes of the segment refused.
        needed: u64,
        /// The limit, in bytes.
        limit: u64,
        /// Whether the segment is the history ring (the payload fits): fewer frames fit.
        ring: bool,
    },
    /// An operating-system call failed. The process or the system out of file descriptors
    /// (`EMFILE`, `ENFILE`) or memory (`ENOMEM`) is said with the remedy.
    #[error("{op} failed{}: {source}{}", for_stream(.name), exhaustion_remedy(.source))]
    Io {
        /// The stream.
        name: String,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Why a history cursor lost frames ([`Error::Overrun`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LossCause {
    /// The writer lapped the cursor: the ring overwrote frames it had not read.
    Overwritten,
    /// The frames were counted without entering the history: written by a writer that does
    /// not append to it (pyshmem), or a count a writer killed during its publication used up.
    NotRecorded,
}

impl std::fmt::Display for LossCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LossCause::Overwritten => {
                "the writer overwrote them in the history ring before they were read; the cursor resumes at the oldest frame held (read faster or create the stream with a deeper history(n))"
            }
            LossCause::NotRecorded => {
                "they were counted without entering the history (written by a writer that does not append to it, e.g. pyshmem, or a count used up by a writer killed during its publication); the cursor goes on with the next recorded frame"
            }
        })
    }
}

fn payload_too_small(name: &str, declared: u64, actual: u64, unwritten: bool) -> String {
    if unwritten {
        format!(
            "stream '{name}' payload segment was never written: only {actual} of the {declared} \
             bytes its header declares have storage (a producer left it sparse; it is not \
             mapped, which would fill RAM with its pages): remove it with {} and create it again",
            crate::name::unlink_remedy(name)
        )
    } else {
        format!(
            "stream '{name}' payload segment is {actual} bytes but its header declares \
             {declared}: unlink and recreate it"
        )
    }
}

/// What to do about a `_meta` that breaks `rule`: another pyshmem format version's is opened
/// with a pyshmem that reads it (a v2 one is recreated to be used here) and removed only once
/// nobody uses it; a corrupt one is recreated.
fn header_remedy(name: &str, rule: &crate::format::FormatError) -> String {
    let unlink = crate::name::unlink_remedy(name);
    match rule {
        crate::format::FormatError::LegacyV2 => format!(
            "it was made by pyshmem 1.0.x (format v2), which shmstream does not read (pyshmem \
             up to 1.4.0 reads it): to use it here, once no process uses it, remove it with \
             {unlink} and create it again with a current writer"
        ),
        r if r.is_other_version() => format!(
            "it was made by another pyshmem format version: open it with the pyshmem that made \
             it, or upgrade shmstream; once no process uses it, {unlink} removes it"
        ),
        crate::format::FormatError::CountExhausted(_) => count_exhausted_remedy(name),
        _ => "unlink and recreate it".to_owned(),
    }
}

/// What to do when a write finds no count to stamp its frame with (a write count, in the
/// header or the ring's newest slot, with no next value): one wording for both.
pub(crate) fn count_exhausted_remedy(name: &str) -> String {
    format!(
        "no frame can follow it and nothing was written: remove the stream with {} and \
         create it again",
        crate::name::unlink_remedy(name)
    )
}

/// An unfinished stream is waited for or removed; any other missing name is created or
/// corrected, with the streams that do exist as a hint. (`create` calls an unfinished name
/// taken: "create it first" would send the caller back and forth.)
fn not_found_advice(name: &str, known: &[String], unfinished: bool) -> String {
    if unfinished {
        return format!(
            "its creation is unfinished (under way: its creator holding the name's lock, or \
             its header there without its payload or its payload without its header; or \
             abandoned by a creator that died): wait and retry, or once its creator is gone \
             remove what is left with `shmstream purge` (a header without its payload) or {}",
            crate::name::unlink_remedy(name)
        );
    }
    format!("create it first or check the name{}", known_hint(known))
}

fn known_hint(known: &[String]) -> String {
    match known.len() {
        0 => String::new(),
        n if n <= 8 => format!(" (streams: {})", known.join(", ")),
        n => format!(" (streams: {}, and {} more)", known[..8].join(", "), n - 8),
    }
}

/// Why this user may not open its own file `path` (mode `mode`, `writable` or not; the open
/// failed with `e`) and the remedy: for `EPERM`, the immutable attribute cleared first (by
/// root); the mode restored where it denies the open (root ignores modes); for `EACCES` the
/// mode allows, an ACL or a security policy named as the cause; or, where `read_only_helps`
/// (a payload or ring, which a read-only handle maps read-only) and reading is allowed, a
/// read-only open.
pub(crate) fn access_denied(
    path: &std::path::Path,
    mode: u32,
    writable: bool,
    e: &std::io::Error,
    read_only_helps: bool,
) -> String {
    let root = crate::sys::euid() == 0;
    access_denied_as(root, path, mode, writable, e, read_only_helps)
}

/// [`access_denied`] for root (`root`) or another user.
fn access_denied_as(
    root: bool,
    path: &std::path::Path,
    mode: u32,
    writable: bool,
    e: &std::io::Error,
    read_only_helps: bool,
) -> String {
    let p = crate::name::shell_word(&path.to_string_lossy());
    let want = if writable { 0o600 } else { 0o400 };
    // An immutable file gives EPERM (never EACCES), and only root may clear the attribute;
    // chmod fails on it, so that comes first.
    let immutable = format!("clear its immutable attribute (as root: `chattr -i {p}`)");
    let chmod =
        format!("restore this user's read and write access to it (mode 0600: `chmod 600 {p}`)");
    let why = if root {
        "root ignores modes"
    } else {
        "its mode allows it"
    };
    let eperm = e.raw_os_error() == Some(libc::EPERM);
    let fix = match (eperm, !root && mode & want != want) {
        (true, true) => format!("{immutable} first, then {chmod}"),
        (false, true) => chmod,
        (true, false) => {
            format!("{why}, so {immutable}, or ask an administrator what security policy denies it")
        }
        (false, false) => format!(
            "{why}, so an ACL or a security policy denies it: see `getfacl {p}`, or ask an administrator"
        ),
    };
    let read_only = read_only_helps && writable && (root || mode & 0o400 != 0);
    format!(
        "this user may not open {} for {} ({e}; mode {mode:04o}): {fix}{}",
        path.display(),
        if writable {
            "reading and writing"
        } else {
            "reading"
        },
        if read_only {
            ", or open the stream read-only"
        } else {
            ""
        }
    )
}

/// Whether a read-only open of `stream` would not need write access to `path`: its payload
/// or its history ring (its `_meta`, `_gpu` and lock file are opened writable regardless).
fn read_only_helps(stream: &str, path: &std::path::Path) -> bool {
    use crate::{name, segment};
    [name::segment_id(stream), name::history_id(stream)]
        .iter()
        .any(|id| segment::path(id) == path)
}

/// Whether `e` is the process or the system out of a resource (descriptors: `EMFILE`,
/// `ENFILE`; memory: `ENOMEM`): a transient failure, which proves nothing about the file it
/// was opening (that it is not a stream's, that a stream's part is unusable).
pub(crate) fn out_of_resources(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM)
    )
}

/// `stream '<name>': `, or nothing for an error whose stream is unknown (an empty name: a
/// `_meta` holding it could not be read).
fn stream_colon(name: &str) -> String {
    match name {
        "" => String::new(),
        name => format!("stream '{name}': "),
    }
}

/// ` for stream '<name>'`, or nothing for an error about no stream (an empty name: a
/// directory `list` or `purge` could not read).
fn for_stream(name: &str) -> String {
    match name {
        "" => String::new(),
        name => format!(" for stream '{name}'"),
    }
}

/// What to do about an [`out_of_resources`] error ("" for any other).
pub(crate) fn exhaustion_remedy(e: &std::io::Error) -> std::borrow::Cow<'static, str> {
    match e.raw_os_error() {
        Some(libc::EMFILE) => ": close some files or raise `ulimit -n`, then retry".into(),
        Some(libc::ENFILE) => ": the system's open-file table is full: close some files (or \
                               raise fs.file-max), then retry"
            .into(),
        Some(libc::ENOMEM) => out_of_memory_remedy(crate::sys::address_space_limit()).into(),
        _ => "".into(),
    }
}

/// The remedy for `ENOMEM` under an address-space limit (`ulimit -v`) of `limit` bytes, if
/// finite: the limit, not the host's memory, may be what ran out.
fn out_of_memory_remedy(limit: Option<u64>) -> String {
    match limit {
        Some(n) => format!(": free some memory or raise `ulimit -v` (now {n} bytes), then retry"),
        None => ": free some memory, then retry".to_owned(),
    }
}

/// [`Error::AlreadyExists`]'s text: open an existing stream, or retry once its creator is done.
fn already_exists(name: &str, being_created: bool) -> String {
    if being_created {
        format!(
            "stream '{name}' is being created by another process: open it with Stream::open once \
             its creator finishes (retry), or find the creator holding its lock file (`fuser -v \
             {}`)",
            crate::name::shell_word(&crate::name::lock_path(name).display().to_string())
        )
    } else {
        format!("stream '{name}' already exists: open it with Stream::open, or unlink it first")
    }
}

/// Whom a wait that timed out was waiting on ([`Error::Timeout`]): the process its message
/// asks the user to check, and the `shmstream stat` field that names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Awaited {
    /// The stream's writer, for a frame, or the write lock's holder (`lock_owner_pid`).
    Writer,
    /// A writer of a GPU consumer's stream, for the frame the consumer waits for
    /// (`gpu_publisher_pid`): the caller is the consumer.
    GpuFrame,
    /// The publisher of the previous GPU-side publication, for its landing
    /// (`gpu_publisher_pid`).
    GpuPublisher,
    /// The previous GPU-side publication's publisher and the GPU consumer its CUDA stream
    /// waits for (`gpu_publisher_pid`, `gpu_consumer_pid`).
    GpuPublisherAndConsumer,
    /// The stream's GPU consumer, for its acknowledgement (`gpu_consumer_pid`).
    GpuConsumer,
}

impl Awaited {
    /// What a timeout's message asks the user to check on `name`, and how to find it.
    fn suspect(self, name: &str) -> String {
        let stat = stat_command(name);
        match self {
            Awaited::Writer => {
                format!("its writer (or the lock holder: {stat} shows lock_owner_pid) is alive")
            }
            Awaited::GpuFrame => {
                format!("a writer publishes the awaited frame ({stat} shows gpu_publisher_pid)")
            }
            Awaited::GpuPublisher => {
                format!("the publisher of that frame ({stat} shows gpu_publisher_pid) is alive")
            }
            Awaited::GpuPublisherAndConsumer => format!(
                "the publisher of that frame and the GPU consumer it waits for ({stat} shows \
                 gpu_publisher_pid and gpu_consumer_pid) are alive"
            ),
            Awaited::GpuConsumer => {
                format!("its GPU consumer ({stat} shows gpu_consumer_pid) is alive")
            }
        }
    }
}

/// The command that shows `name`'s lock holder, for a message: `NAME` in place of a name not
/// [`crate::name::copyable`].
fn stat_command(name: &str) -> String {
    let word = crate::name::copyable(name).unwrap_or_else(|| "NAME".to_owned());
    format!("`shmstream stat {word}`")
}

fn room(available: &Option<u64>) -> String {
    match available {
        Some(b) => format!("{b} bytes free"),
        None => "no room".into(),
    }
}

/// What [`Error::NoSpace`] ran out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Shortage {
    /// Bytes in `/dev/shm`.
    Bytes,
    /// Inodes (files) in `/dev/shm`: its tmpfs `nr_inodes` limit.
    Inodes,
    /// Memory under the process's memory cgroup (v2) limits, its own and its parents',
    /// which its shared memory counts against: refused at create, as filling past them (and
    /// any swap the cgroup may still fill) gets the process OOM-killed.
    #[non_exhaustive]
    Cgroup {
        /// The `memory.max` with the least room left, that of the cgroup or a parent, in
        /// bytes.
        limit: u64,
        /// Bytes left under that limit, at most the limit.
        left: u64,
        /// Bytes of swap the cgroup may still fill (the host's free swap, capped by the
        /// `memory.swap.max` of the cgroup and its parents).
        swap: u64,
    },
}

/// [`Error::NoSpace`]'s text: the bytes needed and free, and a remedy for what ran out.
fn no_space(name: &str, needed: u64, available: &Option<u64>, shortage: &Shortage) -> String {
    if let Shortage::Cgroup { limit, left, swap } = shortage {
        return format!(
            "stream '{name}' needs {needed} bytes of shared memory and this process's memory \
             cgroup has {left} bytes left under its limit of {limit} bytes (the memory.max of \
             it or a parent with the least room) and {swap} bytes of swap it may still fill \
             (shared memory counts against the limit, and filling past that and the swap gets \
             the process OOM-killed): raise the container's memory limit, or make this stream \
             smaller"
        );
    }
    if *shortage == Shortage::Inodes {
        format!(
            "stream '{name}' needs {needed} bytes of shared memory and /dev/shm has {} but no \
             free inodes (its tmpfs `nr_inodes` limit on files): remove streams nobody uses \
             (`shmstream purge`), or remount /dev/shm with more inodes (`mount -o \
             remount,nr_inodes=N /dev/shm`)",
            room(available)
        )
    } else {
        format!(
            "stream '{name}' needs {needed} bytes of shared memory and /dev/shm has {}: remove \
             streams nobody uses (`shmstream purge`), make this one smaller, or enlarge /dev/shm",
            room(available)
        )
    }
}

impl Error {
    /// An OS error; a [`crate::trust::Refused`] file becomes [`Error::Untrusted`], a
    /// [`crate::trust::Denied`] one [`Error::AccessDenied`].
    pub(crate) fn io(name: &str, op: &'static str, source: std::io::Error) -> Error {
        if let Some(d) = crate::trust::denied(&source) {
            return Error::AccessDenied {
                name: name.to_owned(),
                path: d.path.clone(),
                mode: d.mode,
                writable: d.writable,
                source: std::io::Error::from_raw_os_error(d.errno),
            };
        }
        if let Some(r) = source
            .get_ref()
            .and_then(|e| e.downcast_ref::<crate::trust::Refused>())
        {
            return Error::Untrusted {
                name: name.to_owned(),
                path: r.path.clone(),
                reason: r.reason.clone(),
            };
        }
        Error::Io {
            name: name.to_owned(),
            op,
            source,
        }
    }

    /// Creating a shared-memory segment of `bytes` failed: [`Error::NoSpace`] when `/dev/shm`
    /// is full (`needed` is the segment's; the creator says the stream's, and the room
    /// once it removed what it made), [`Error::FileSizeLimit`] when `bytes` is over the
    /// file-size limit, else [`Error::Io`] doing `op`.
    pub(crate) fn creating(
        name: &str,
        op: &'static str,
        bytes: usize,
        source: std::io::Error,
    ) -> Error {
        match source.raw_os_error() {
            Some(libc::ENOSPC) => Error::NoSpace {
                name: name.to_owned(),
                needed: bytes as u64,
                available: None,
                shortage: Shortage::Bytes,
            },
            Some(libc::EFBIG) => match crate::sys::file_size_limit() {
                Some(limit) if bytes as u64 > limit => Error::FileSizeLimit {
                    name: name.to_owned(),
                    needed: bytes as u64,
                    limit,
                    // `history::Ring::create`'s `op`.
                    ring: op == "creating the history segment",
                },
                _ => Error::io(name, op, source),
            },
            _ => Error::io(name, op, source),
        }
    }

    /// The stream the error is about; empty when it is about none (a directory `list` or
    /// `purge` could not read) or its name is unknown (inside a `_meta` it may not open).
    pub fn stream_name(&self) -> &str {
        match self {
            Error::NotFound { name, .. }
            | Error::AlreadyExists { name, .. }
            | Error::InvalidName { name, .. }
            | Error::InvalidShape { name, .. }
            | Error::ShapeMismatch { name, .. }
            | Error::DtypeMismatch { name, .. }
            | Error::CorruptHeader { name, .. }
            | Error::PayloadTooSmall { name, .. }
            | Error::SliceLength { name, .. }
            | Error::BufferSize { name, .. }
            | Error::Timeout { name, .. }
            | Error::Inconsistent { name, .. }
            | Error::Stale { name }
            | Error::Closed { name }
            | Error::ReadOnly { name, .. }
            | Error::Unsupported { name, .. }
            | Error::InvalidData { name, .. }
            | Error::WriteAborted { name, .. }
            | Error::LockDir { name, .. }
            | Error::Untrusted { name, .. }
            | Error::AccessDenied { name, .. }
            | Error::Gpu { name, .. }
            | Error::Overrun { name, .. }
            | Error::NoHistory { name, .. }
            | Error::InvalidHistory { name, .. }
            | Error::NoSpace { name, .. }
            | Error::FileSizeLimit { name, .. }
            | Error::Io { name, .. } => name,
        }
    }
}

/// What besides raising the limit lets a stream fit under a file-size limit: nothing when even
/// the `_meta` segment every stream has is over it.
fn file_size_remedy(ring: bool, limit: u64) -> &'static str {
    if limit < crate::format::META_BYTES as u64 {
        " (no stream fits: every stream has a metadata segment of 512 bytes)"
    } else if ring {
        " or keep fewer history frames (history(n))"
    } else {
        " or make the stream smaller"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_size_limit_under_the_metadata_segment_offers_no_smaller_stream() {
        let refusal = |limit, ring| {
            Error::FileSizeLimit {
                name: "cam0".into(),
                needed: 512,
                limit,
                ring,
            }
            .to_string()
        };
        assert!(
            refusal(0, false)
                .ends_with("(no stream fits: every stream has a metadata segment of 512 bytes)")
        );
        assert!(!refusal(0, false).contains("smaller"));
        assert!(refusal(4096, false).ends_with("or make the stream smaller"));
        assert!(refusal(4096, true).ends_with("or keep fewer history frames (history(n))"));
        // A limit of exactly the metadata segment's size holds it: a smaller stream may fit.
        assert!(refusal(512, false).ends_with("or make the stream smaller"));
        assert!(refusal(511, false).contains("no stream fits"));
    }

    /// A segment the kernel refused to size (`EFBIG`) over this process's file-size limit
    /// is [`Error::FileSizeLimit`] (a ring's when the history segment was being made); one
    /// at or under the limit, or refused without a limit, is an I/O error: the limit is not
    /// the cause. Run again in a child whose limit the shell set (`ulimit -f`): a limit is
    /// the whole process's.
    #[test]
    fn efbig_is_the_file_size_limit_only_past_it() {
        const TEST: &str = "error::tests::efbig_is_the_file_size_limit_only_past_it";
        const CHILD: &str = "SHMSTREAM_ERROR_FSIZE";
        // What `creating` made of `EFBIG` for `bytes`: the bytes past the limit it names.
        let refused = |op, bytes: u64| {
            let efbig = std::io::Error::from_raw_os_error(libc::EFBIG);
            match Error::creating("cam0", op, bytes as usize, efbig) {
                Error::FileSizeLimit {
                    needed,
                    limit,
                    ring,
                    ..
                } => format!("limit {} past, ring {ring}", needed - limit),
                e @ Error::Io { .. } => format!("io {}", e.stream_name()),
                e => format!("other {e:?}"),
            }
        };
        let ring = "creating the history segment";
        let payload = "sizing the payload segment";
        if std::env::var_os(CHILD).is_some() {
            let limit = crate::sys::file_size_limit().unwrap();
            for (op, bytes) in [(ring, limit + 1), (payload, limit + 1), (payload, limit)] {
                println!("said: {}", refused(op, bytes));
            }
            return;
        }
        if crate::sys::file_size_limit().is_none() {
            assert_eq!(refused(payload, u64::MAX >> 1), "io cam0");
        }
        let said = crate::few_descriptors::said_in_a_shell_child(
            "ulimit -f 2048",
            TEST,
            (CHILD, "1".as_ref()),
        );
        assert_eq!(
            said,
            [
                "limit 1 past, ring true",
                "limit 1 past, ring false",
                "io cam0"
            ]
        );
    }

    #[test]
    fn not_found_names_the_stream_and_lists_others() {
        let e = Error::NotFound {
            name: "cam0".into(),
            known: vec!["cam0_raw".into(), "cam1".into()],
            unfinished: false,
        };
        assert_eq!(
            e.to_string(),
            "stream 'cam0' not found: create it first or check the name (streams: cam0_raw, cam1)"
        );
        assert_eq!(e.stream_name(), "cam0");
        // Eight are listed; past eight, how many more.
        let names = |n: usize| (0..n).map(|i| format!("s{i}")).collect::<Vec<_>>();
        let eight = names(8).join(", ");
        assert_eq!(known_hint(&names(8)), format!(" (streams: {eight})"));
        assert_eq!(
            known_hint(&names(10)),
            format!(" (streams: {eight}, and 2 more)")
        );
        assert_eq!(known_hint(&[]), "");
    }

    #[test]
    fn an_unfinished_stream_is_not_found_saying_to_wait_or_remove_it() {
        let e = Error::NotFound {
            name: "cam0".into(),
            known: Vec::new(),
            unfinished: true,
        };
        assert_eq!(
            e.to_string(),
            "stream 'cam0' not found: its creation is unfinished (under way: its creator \
             holding the name's lock, or its header there without its payload or its payload \
             without its header; or abandoned by a creator that died): wait and retry, or once \
             its creator is gone remove what is left with `shmstream purge` (a header without \
             its payload) or `shmstream unlink cam0`"
        );
        assert_eq!(e.stream_name(), "cam0");
        let spaced = Error::NotFound {
            name: "my cam".into(),
            known: Vec::new(),
            unfinished: true,
        };
        assert!(
            spaced.to_string().ends_with("`shmstream unlink 'my cam'`"),
            "{spaced}"
        );
    }

    /// `ENOSPC` with fewer inodes free than the creation's segments is out of inodes, and
    /// says so: the bytes remedy would not help. Bytes free afterwards do not make it inodes
    /// (another process may have freed them).
    #[test]
    fn no_space_tells_inodes_from_bytes() {
        use crate::sys::ShmRoom;
        let room = |bytes, inodes, inodes_free| ShmRoom {
            bytes,
            inodes,
            inodes_free,
        };
        assert!(!room(4096, 1000, 10).out_of_inodes(3), "short of bytes");
        assert!(
            !room(1 << 20, 1000, 10).out_of_inodes(3),
            "bytes freed since: still bytes"
        );
        assert!(
            room(1 << 20, 1000, 2).out_of_inodes(3),
            "too few inodes free"
        );
        assert!(room(0, 1000, 0).out_of_inodes(2), "no inode free");
        assert!(!room(1 << 20, 1000, 2).out_of_inodes(2), "inodes enough");
        assert!(!room(1 << 20, 0, 0).out_of_inodes(2), "no inode limit");
        let e = |shortage| {
            Error::NoSpace {
                name: "cam0".into(),
                needed: 8192,
                available: Some(1 << 20),
                shortage,
            }
            .to_string()
        };
        let inodes = e(Shortage::Inodes);
        assert!(
            inodes.starts_with("stream 'cam0' needs 8192 bytes")
                && inodes.contains("no free inodes")
                && inodes.contains("nr_inodes")
                && !inodes.contains("make this one smaller"),
            "{inodes}"
        );
        let bytes = e(Shortage::Bytes);
        assert!(
            bytes.contains("make this one smaller") && !bytes.contains("inodes"),
            "{bytes}"
        );
        // The room, as measured, or none.
        assert!(inodes.contains("/dev/shm has 1048576 bytes free but no free inodes"));
        assert!(
            bytes.contains("/dev/shm has 1048576 bytes free: remove"),
            "{bytes}"
        );
        let unmeasured = Error::NoSpace {
            name: "cam0".into(),
            needed: 8192,
            available: None,
            shortage: Shortage::Bytes,
        }
        .to_string();
        assert!(
            unmeasured.contains("/dev/shm has no room: remove"),
            "{unmeasured}"
        );
        let cgroup = e(Shortage::Cgroup {
            limit: 1 << 21,
            left: 1 << 19,
            swap: 4096,
        });
        assert!(
            cgroup.starts_with("stream 'cam0' needs 8192 bytes")
                && cgroup.contains("524288 bytes left under its limit of 2097152 bytes")
                && cgroup.contains("and 4096 bytes of swap it may still fill")
                && cgroup.contains("raise the container's memory limit")
                && !cgroup.contains("/dev/shm has"),
            "{cgroup}"
        );
    }

    #[test]
    fn a_full_dev_shm_is_no_space_naming_the_stream_the_room_and_the_remedy() {
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let e = Error::creating("cam0", "creating a shared-memory segment", 4096, full);
        assert!(matches!(e, Error::NoSpace { needed: 4096, .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.starts_with("stream 'cam0' needs 4096 bytes of shared memory and /dev/shm has "),
            "{text}"
        );
        assert!(text.contains("shmstream purge"), "{text}");
        let other = std::io::Error::from_raw_os_error(libc::EACCES);
        let e = Error::creating("cam0", "creating a shared-memory segment", 4096, other);
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
    }

    /// Out of descriptors or memory, an OS error says what to do; others read as before.
    #[test]
    fn an_io_error_out_of_resources_says_the_remedy() {
        let io = |errno| {
            Error::io(
                "ps_x_meta",
                "opening",
                std::io::Error::from_raw_os_error(errno),
            )
        };
        let text = io(libc::EMFILE).to_string();
        assert!(
            text.starts_with("opening failed for stream 'ps_x_meta': Too many open files")
                && text.ends_with("close some files or raise `ulimit -n`, then retry"),
            "{text}"
        );
        assert!(io(libc::ENFILE).to_string().contains("fs.file-max"));
        let text = io(libc::ENOMEM).to_string();
        assert!(text.contains(": free some memory"), "{text}");
        assert_eq!(out_of_memory_remedy(None), ": free some memory, then retry");
        let limited = out_of_memory_remedy(Some(1 << 30));
        assert_eq!(
            limited,
            ": free some memory or raise `ulimit -v` (now 1073741824 bytes), then retry"
        );
        let text = io(libc::EACCES).to_string();
        assert!(text.ends_with("Permission denied (os error 13)"), "{text}");
        // About no stream (a directory `list` or `purge` could not read): no stream named.
        let e = Error::io(
            "",
            "listing /dev/shm",
            std::io::Error::from_raw_os_error(libc::EACCES),
        );
        assert!(
            e.to_string().starts_with("listing /dev/shm failed: "),
            "{e}"
        );
        let e = Error::LockDir {
            name: String::new(),
            path: "/x".into(),
            reason: "it is not a directory",
        };
        assert!(
            e.to_string()
                .starts_with("lock directory \"/x\" is refused: "),
            "{e}"
        );
        assert!(out_of_resources(&std::io::Error::from_raw_os_error(
            libc::ENFILE
        )));
        assert!(!out_of_resources(&std::io::Error::from_raw_os_error(
            libc::ENOENT
        )));
    }

    /// This user's own file whose mode denies the open is `AccessDenied` naming the stream,
    /// the file, its mode and the remedy (`chmod 600`; a read-only open where only writing
    /// is denied a payload). The immutable attribute only for `EPERM` (what it gives), first
    /// (chmod fails on it) and as root; for `EACCES` where the mode allows the open (or as
    /// root, whom modes do not stop), an ACL or a security policy.
    #[test]
    fn access_denied_to_our_own_file_names_the_file_its_mode_and_the_remedy() {
        let name = "cam0";
        let meta = crate::segment::path(&crate::name::meta_id(name));
        let payload = crate::segment::path(&crate::name::segment_id(name));
        let eacces = || std::io::Error::from_raw_os_error(libc::EACCES);
        let denied = |path: &std::path::Path, mode, writable| {
            let d = crate::trust::Denied {
                path: path.to_owned(),
                mode,
                writable,
                errno: libc::EACCES,
            };
            Error::io(
                name,
                "opening",
                std::io::Error::new(std::io::ErrorKind::PermissionDenied, d),
            )
        };
        let e = denied(&meta, 0o000, true);
        assert!(
            matches!(&e, Error::AccessDenied { path, mode: 0, writable: true, .. } if *path == meta),
            "{e:?}"
        );
        assert_eq!(e.stream_name(), name);
        let text = e.to_string();
        let expected = format!(
            "stream 'cam0': this user may not open {} for reading and writing (Permission denied (os error 13); mode 0000): ",
            meta.display()
        );
        assert!(text.starts_with(&expected), "{text}");
        // Only the payload and ring are mapped read-only by a read-only handle.
        assert!(!denied(&meta, 0o400, true).to_string().contains("read-only"));
        for path in [
            &payload,
            &crate::segment::path(&crate::name::history_id(name)),
        ] {
            let text = denied(path, 0o400, true).to_string();
            assert!(text.ends_with("or open the stream read-only"), "{text}");
        }
        // Root is this process's effective user: root is told that modes are not the cause.
        let text = access_denied(&payload, 0o000, true, &eacces(), false);
        assert_eq!(
            text.contains("root ignores modes"),
            crate::sys::euid() == 0,
            "{text}"
        );
        let text = access_denied_as(false, &payload, 0o400, true, &eacces(), true);
        assert!(
            text.ends_with(&format!(
                "restore this user's read and write access to it (mode 0600: `chmod 600 {}`), or open the stream read-only",
                payload.display()
            )),
            "{text}"
        );
        let text = access_denied_as(false, &payload, 0o000, false, &eacces(), true);
        assert!(
            text.contains("for reading (") && text.contains("`chmod 600 "),
            "{text}"
        );
        assert!(!text.contains("read-only"), "{text}");
        let eperm = || std::io::Error::from_raw_os_error(libc::EPERM);
        let text = access_denied_as(true, &payload, 0o400, true, &eperm(), true);
        assert!(
            text.contains(
                "root ignores modes, so clear its immutable attribute (as root: `chattr -i "
            ) && text.ends_with("or open the stream read-only"),
            "{text}"
        );
        let p = payload.display();
        let text = access_denied_as(false, &payload, 0o400, true, &eperm(), true);
        assert!(
            text.contains(&format!(
                ": clear its immutable attribute (as root: `chattr -i {p}`) first, then restore \
                 this user's read and write access to it (mode 0600: `chmod 600 {p}`)"
            )),
            "{text}"
        );
        // EACCES is never the immutable attribute: where the mode allows the open, an ACL or
        // a security policy denies it.
        for (root, why) in [(false, "its mode allows it"), (true, "root ignores modes")] {
            let text = access_denied_as(root, &payload, 0o600, true, &eacces(), true);
            assert!(
                text.contains(&format!(
                    "): {why}, so an ACL or a security policy denies it: see `getfacl {p}`, \
                     or ask an administrator"
                )) && !text.contains("chattr"),
                "{text}"
            );
        }
        // A mode that denies reading too: a read-only open would be denied as well.
        let text = access_denied_as(false, &payload, 0o000, true, &eacces(), true);
        assert!(
            !text.contains("chattr") && !text.contains("read-only"),
            "{text}"
        );
        let text = access_denied_as(false, &payload, 0o200, true, &eacces(), true);
        assert!(!text.contains("read-only"), "{text}");
    }

    /// A cursor's loss says how many frames, and why with what to do: read faster or keep
    /// a deeper history for frames overwritten; for frames never recorded, who counts
    /// without recording.
    #[test]
    fn a_loss_says_how_many_frames_why_and_what_to_do() {
        let lost = |cause| {
            Error::Overrun {
                name: "cam0".into(),
                lost: 3,
                cause,
            }
            .to_string()
        };
        let text = lost(LossCause::Overwritten);
        assert!(
            text.starts_with(
                "stream 'cam0': 3 frame(s) lost on this cursor: the writer overwrote them"
            ) && text.contains("read faster or create the stream with a deeper history(n)"),
            "{text}"
        );
        let text = lost(LossCause::NotRecorded);
        assert!(
            text.contains(": they were counted without entering the history")
                && text.contains("pyshmem"),
            "{text}"
        );
    }

    /// The closure's error is in the message: callers that print only `{e}` (the bridge's
    /// refusals) said the write was aborted, not why.
    #[test]
    fn an_aborted_write_says_what_its_closure_said() {
        let e = Error::WriteAborted {
            name: "cam0".into(),
            source: "the payload outgrew the frame".into(),
        };
        assert!(
            e.to_string()
                .contains("aborted by its closure (the payload outgrew the frame)"),
            "{e}"
        );
    }

    #[test]
    fn a_timeout_names_the_stream_and_the_remedy() {
        let e = Error::Timeout {
            name: "cam0".into(),
            op: "take the write lock",
            awaited: Awaited::Writer,
            timeout: Duration::from_secs(1),
        };
        let text = e.to_string();
        assert!(
            text.starts_with("timed out after 1s waiting to take the write lock on stream 'cam0'")
                && text.contains("longer timeout")
                && text.ends_with(
                    "or check that its writer (or the lock holder: `shmstream stat cam0` shows \
                     lock_owner_pid) is alive"
                ),
            "{text}"
        );
        let escaped = Error::Timeout {
            name: "cam\n0".into(),
            op: "take the write lock",
            awaited: Awaited::Writer,
            timeout: Duration::from_secs(1),
        };
        assert!(
            escaped.to_string().contains("`shmstream stat NAME` shows"),
            "{escaped}"
        );
    }

    /// pyshmem 1.4.0 reads v2 headers too: the remedy is not "open it with that pyshmem"
    /// (1.0.x) but a current writer's stream, the old one removed once nobody uses it.
    #[test]
    fn a_v2_header_says_which_pyshmem_reads_it_and_to_recreate_it() {
        let e = Error::CorruptHeader {
            name: "cam0".into(),
            rule: FormatError::LegacyV2,
        };
        assert_eq!(
            e.to_string(),
            "stream 'cam0' has a header this build cannot read (a pyshmem v2 header (this build \
             reads version 3)): it was made by pyshmem 1.0.x (format v2), which shmstream does \
             not read (pyshmem up to 1.4.0 reads it): to use it here, once no process uses \
             it, remove it with `shmstream unlink cam0` and create it again with a current \
             writer"
        );
    }

    /// A timed-out wait names whom it waited for: the GPU consumer for its acknowledgement,
    /// not the lock holder (the writer that timed out holds the lock itself).
    #[test]
    fn a_timeout_names_the_process_it_waited_for() {
        let text = |awaited| {
            Error::Timeout {
                name: "cam0".into(),
                op: "read a new frame",
                awaited,
                timeout: Duration::from_secs(1),
            }
            .to_string()
        };
        let ack = text(Awaited::GpuConsumer);
        assert!(
            ack.ends_with("check that its GPU consumer (`shmstream stat cam0` shows gpu_consumer_pid) is alive")
                && !ack.contains("lock_owner_pid"),
            "{ack}"
        );
        let landing = text(Awaited::GpuPublisher);
        assert!(
            landing.contains("gpu_publisher_pid")
                && !landing.contains("lock_owner_pid")
                && !landing.contains("gpu_consumer_pid"),
            "{landing}"
        );
        assert!(text(Awaited::Writer).contains("lock_owner_pid"));
        // `synchronize`: the consumer itself timed out waiting for a writer's frame.
        let sync = text(Awaited::GpuFrame);
        assert!(
            sync.contains("a writer publishes") && !sync.contains("its GPU consumer ("),
            "{sync}"
        );
        // The landing that waits for a live consumer's acknowledgement names both.
        let landing_acked = text(Awaited::GpuPublisherAndConsumer);
        assert!(
            landing_acked.contains("gpu_consumer_pid")
                && landing_acked.contains("gpu_publisher_pid"),
            "{landing_acked}"
        );
    }

    #[test]
    fn a_name_being_created_says_to_open_it_once_its_creator_finishes() {
        let text = |being_created| {
            Error::AlreadyExists {
                name: "cam0".into(),
                being_created,
            }
            .to_string()
        };
        assert_eq!(
            text(false),
            "stream 'cam0' already exists: open it with Stream::open, or unlink it first"
        );
        let lock = crate::name::lock_path("cam0");
        assert_eq!(
            text(true),
            format!(
                "stream 'cam0' is being created by another process: open it with Stream::open \
                 once its creator finishes (retry), or find the creator holding its lock file \
                 (`fuser -v {}`)",
                crate::name::shell_word(&lock.display().to_string())
            )
        );
    }
}
