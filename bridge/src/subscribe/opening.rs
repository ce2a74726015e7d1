//! Having the local stream a mirror writes into: opened, or created for the frame's dtype
//! and shape ([`open_or_create`]), and, where that fails in a way the next frame would meet
//! again ([`open_failure_lasts`], [`create_failure_lasts`]), that failure remembered for a
//! while ([`RETRY_OPEN`], [`RETRY_CREATE`]) so the receive task does not retry it at every
//! frame.

use std::time::{Duration, Instant};

use shmstream::{Dtype, Error, Stream, StreamOptions};

use crate::codec::FrameHeader;

/// How long a failed create of the mirror is remembered before it is tried again.
pub(super) const RETRY_CREATE: Duration = Duration::from_secs(10);

/// How long a failed open of the mirror that would fail alike again
/// ([`open_failure_lasts`]: a corrupt header, another user's stream, a ring it refuses,
/// another name's stream at its path, a creation left unfinished; not a missing stream or a
/// transient failure) is remembered: a frame that comes meanwhile is refused for the same
/// reason without opening ([`Mirror::open_refused`](super::Mirror::open_refused); an open
/// that fails may take 50 ms to 5 s, on the task that receives every stream of the
/// connection), and the publisher is not asked for its frame again to try it
/// ([`Mirror::wants_frame_again`](super::Mirror::wants_frame_again): each reply is a whole
/// frame). Both try at once when that `_meta` is gone ([`Unopenable::still_there`]:
/// unlinked, as the refusal of a corrupt one says to, or made anew).
pub(super) const RETRY_OPEN: Duration = Duration::from_secs(10);

/// Why the local stream could not be had: opening it failed (tried again with the next
/// frame), or creating it did (tried again for that dtype and shape after [`RETRY_CREATE`]
/// where the failure lasts, [`create_failure_lasts`]; else with the next frame).
pub(super) enum Opening {
    Open(Error),
    Create(Error),
}

/// A create of the mirror that failed ([`Mirror::create_refused`](super::Mirror::create_refused)).
pub(super) struct Uncreatable {
    /// The dtype and shape it was for.
    pub(super) dtype: Dtype,
    pub(super) shape: Vec<usize>,
    /// Whether it failed for want of room in `/dev/shm` ([`Error::NoSpace`]).
    pub(super) no_space: bool,
    /// The reason frames are refused for it.
    pub(super) reason: String,
    pub(super) at: Instant,
}

/// A failed open of the mirror ([`Mirror::open_refused`](super::Mirror::open_refused)).
pub(super) struct Unopenable {
    /// The `_meta` it failed on ([`meta_file`]), looked at before the open.
    pub(super) meta: Option<(u64, u64)>,
    /// The reason frames are refused for it.
    pub(super) reason: String,
    pub(super) at: Instant,
}

impl Unopenable {
    /// Whether the `_meta` it failed on is still at `name` (not unlinked, nor made anew).
    pub(super) fn still_there(&self, name: &str) -> bool {
        self.meta.is_some() && meta_file(name) == self.meta
    }
}

/// The device and inode of local stream `name`'s `_meta` in `/dev/shm`, where the library
/// keeps it; `None` if it is not there. One `stat`, no open (an open of a stream that fails
/// may wait for a creation under its lock).
pub(super) fn meta_file(name: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::path::Path::new("/dev/shm").join(shmstream::name::meta_id(name));
    std::fs::symlink_metadata(meta)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Whether a failed open of the mirror would fail alike on the next frame, and is
/// remembered for [`RETRY_OPEN`]: a corrupt header, a refused file, a name, ring or shape
/// refused, a creation left unfinished (its creator holding the name's lock past the wait:
/// the next open would wait as long). Not a stream not there (unlinked as it was opened:
/// asked for again soon), nor a transient failure (out of descriptors or memory, a wait
/// that ran out, any other I/O error): the next frame tries again, as a lossless mirror
/// would otherwise lose the frames of [`RETRY_OPEN`].
pub(super) fn open_failure_lasts(e: &Error) -> bool {
    match e {
        Error::NotFound { unfinished, .. } => *unfinished,
        Error::CorruptHeader { .. }
        | Error::PayloadTooSmall { .. }
        | Error::AccessDenied { .. }
        | Error::Untrusted { .. }
        | Error::LockDir { .. }
        | Error::InvalidName { .. }
        | Error::InvalidShape { .. }
        | Error::InvalidHistory { .. }
        | Error::Unsupported { .. } => true,
        _ => false,
    }
}

/// Whether a failed create of the mirror would fail alike on the next frame, and is
/// remembered for [`RETRY_CREATE`] (no room, no permission, a file not ours, a shape
/// refused). Not a transient failure, as for an open ([`open_failure_lasts`]): out of
/// descriptors, memory or processes (`EMFILE`, `ENFILE`, `ENOMEM`, `EAGAIN`); the next frame
/// tries again, as a lossless mirror would otherwise lose the frames of [`RETRY_CREATE`]. The
/// name's lock held past the create's 5 s wait (by no creator: a process holding a removed
/// stream's lock file) is remembered: waited for again on every frame, it would hold up the
/// receive task that carries every stream of the connection.
pub(super) fn create_failure_lasts(e: &Error) -> bool {
    match e {
        Error::Io { source, .. } => !matches!(
            source.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN)
        ),
        _ => true,
    }
}

/// Local stream `name`, opened, or created for frames like `h`; with whether it was
/// created here (not there before).
pub(super) fn open_or_create(
    name: &str,
    h: &FrameHeader,
    history: usize,
) -> Result<(Stream, bool), Opening> {
    let opened = |s: Result<Stream, Error>| s.map(|s| (s, false)).map_err(Opening::Open);
    match Stream::open(name) {
        Err(Error::NotFound { .. }) => match StreamOptions::new(name)
            .shape(&h.shape)
            .dtype(h.dtype)
            .notify(true)
            .history(history)
            .create()
        {
            Err(Error::AlreadyExists { .. }) => opened(Stream::open(name)),
            other => other.map(|s| (s, true)).map_err(Opening::Create),
        },
        other => opened(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An open of the mirror that would fail alike again is remembered; one not there, or a
    /// transient failure (out of descriptors or memory, a wait run out), is tried again on
    /// the next frame, so a lossless mirror does not refuse frames for [`RETRY_OPEN`].
    #[test]
    fn only_a_lasting_open_failure_is_remembered() {
        let name = || "s".to_owned();
        let path = || std::path::PathBuf::from("/dev/shm/s");
        let os = std::io::Error::from_raw_os_error;
        let io = |errno| Error::Io {
            name: name(),
            op: "opening the payload segment",
            source: os(errno),
        };
        let not_found = |unfinished| Error::NotFound {
            name: name(),
            known: vec![],
            unfinished,
        };
        let lasting = [
            not_found(true),
            Error::CorruptHeader {
                name: name(),
                rule: shmstream::format::FormatError::BadMagic,
            },
            Error::AccessDenied {
                name: name(),
                path: path(),
                mode: 0,
                writable: true,
                source: os(libc::EACCES),
            },
            Error::Untrusted {
                name: name(),
                path: path(),
                reason: "another user's file".into(),
            },
            Error::InvalidHistory {
                name: name(),
                reason: "a ring refused".into(),
            },
        ];
        for e in lasting {
            assert!(open_failure_lasts(&e), "not remembered: {e}");
        }
        let transient = [
            not_found(false),
            io(libc::EMFILE),
            io(libc::ENFILE),
            io(libc::ENOMEM),
            Error::Timeout {
                name: name(),
                op: "open",
                awaited: shmstream::Awaited::Writer,
                timeout: Duration::from_secs(5),
            },
        ];
        for e in transient {
            assert!(!open_failure_lasts(&e), "remembered: {e}");
        }
    }

    /// A create of the mirror that would fail alike again (or whose wait for the name's lock
    /// ran out) is remembered; a transient failure (out of descriptors, memory or processes)
    /// is tried again on the next frame, so a lossless mirror does not refuse frames for
    /// [`RETRY_CREATE`].
    #[test]
    fn only_a_lasting_create_failure_is_remembered() {
        let name = || "s".to_owned();
        let os = std::io::Error::from_raw_os_error;
        let io = |errno| Error::Io {
            name: name(),
            op: "creating a shared-memory segment",
            source: os(errno),
        };
        let lasting = [
            Error::NoSpace {
                name: name(),
                needed: 1 << 30,
                available: Some(0),
                shortage: shmstream::Shortage::Bytes,
            },
            Error::FileSizeLimit {
                name: name(),
                needed: 1 << 30,
                limit: 1 << 20,
                ring: false,
            },
            Error::AccessDenied {
                name: name(),
                path: "/dev/shm/s".into(),
                mode: 0,
                writable: true,
                source: os(libc::EACCES),
            },
            Error::InvalidHistory {
                name: name(),
                reason: "a ring refused".into(),
            },
            io(libc::EIO),
            Error::Timeout {
                name: name(),
                op: "create",
                awaited: shmstream::Awaited::Writer,
                timeout: Duration::from_secs(5),
            },
        ];
        for e in lasting {
            assert!(create_failure_lasts(&e), "not remembered: {e}");
        }
        let transient = [
            io(libc::EMFILE),
            io(libc::ENFILE),
            io(libc::ENOMEM),
            io(libc::EAGAIN),
        ];
        for e in transient {
            assert!(!create_failure_lasts(&e), "remembered: {e}");
        }
    }
}
