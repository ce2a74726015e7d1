//! Which files the crate relies on: `/dev/shm` is world-writable (sticky) and anyone can
//! plant a FIFO, socket, directory, symlink or a file of their own under a stream's name.
//! Segments and lock files are used only if they are regular files owned by this user;
//! anything else is refused with [`Refused`], which `Error::io` turns into
//! [`crate::Error::Untrusted`].

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Flags every open of an existing segment or lock file adds: never block (a FIFO would
/// wait for a writer forever) and never follow a symlink.
pub(crate) const OPEN_FLAGS: libc::c_int = libc::O_NONBLOCK | libc::O_NOFOLLOW;

/// Why a file was refused; travels inside an `io::Error` of kind `Other`.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) path: PathBuf,
    pub(crate) reason: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for Refused {}

/// Whether `e` is a [`Refused`] file (not a regular file of this user).
pub(crate) fn is_refused(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|r| r.is::<Refused>())
}

fn refuse(path: &Path, reason: String) -> io::Error {
    io::Error::other(Refused {
        path: path.to_owned(),
        reason,
    })
}

/// Checks an opened file: a regular file owned by this process's effective user.
pub(crate) fn check_file(file: &File, path: &Path) -> io::Result<()> {
    check_metadata(&file.metadata()?, path)
}

/// [`check_file`] on metadata (from `fstat`, or `lstat` for a path not to be opened).
pub(crate) fn check_metadata(m: &std::fs::Metadata, path: &Path) -> io::Result<()> {
    match refusal(m) {
        Some(reason) => Err(refuse(path, reason)),
        None => Ok(()),
    }
}

/// Why a file of metadata `m` is refused: what it is, or who owns it; `None` for a regular
/// file of this user.
fn refusal(m: &std::fs::Metadata) -> Option<String> {
    let t = m.file_type();
    let kind = if t.is_file() {
        None
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_socket() {
        Some("a socket")
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_symlink() {
        Some("a symbolic link")
    } else if t.is_char_device() || t.is_block_device() {
        Some("a device")
    } else {
        Some("not a regular file")
    };
    if let Some(kind) = kind {
        return Some(format!("it is {kind}, not a regular file"));
    }
    let me = crate::sys::euid();
    (m.uid() != me).then(|| {
        format!(
            "it is owned by uid {}, not by this user (uid {me}); another user may have planted it",
            m.uid()
        )
    })
}

/// Maps an unlink's `EPERM`, `EACCES` or `EISDIR` at `path` to [`Refused`] when what is
/// there is not a regular file of this user (another user's file in the sticky `/dev/shm`,
/// a directory), saying what it is and who can remove it; others pass through.
pub(crate) fn unlink_error(e: io::Error, path: &Path) -> io::Error {
    if !matches!(
        e.raw_os_error(),
        Some(libc::EPERM | libc::EACCES | libc::EISDIR)
    ) {
        return e;
    }
    let Some((reason, m)) = std::fs::symlink_metadata(path)
        .ok()
        .and_then(|m| Some((refusal(&m)?, m)))
    else {
        return e;
    };
    let rm = if m.is_dir() { "rm -r" } else { "rm" };
    let who = match m.uid() {
        uid if uid == crate::sys::euid() => "remove it".to_owned(),
        0 => "only root can remove it".to_owned(),
        uid => format!("only uid {uid} or root can remove it"),
    };
    refuse(path, format!("{reason}; {who} (`{rm} {}`)", path.display()))
}

/// Whether `path` is a regular file of this user.
pub(crate) fn is_ours(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| refusal(&m).is_none())
}

/// This user's own regular file whose open was denied (`EACCES`, `EPERM`: its mode, an
/// immutable attribute); travels inside an `io::Error` of kind `PermissionDenied`, which
/// `Error::io` turns into [`crate::Error::AccessDenied`].
#[derive(Debug)]
pub(crate) struct Denied {
    pub(crate) path: PathBuf,
    /// The file's permission bits.
    pub(crate) mode: u32,
    /// Whether the open asked for write access.
    pub(crate) writable: bool,
    /// The open's `errno`.
    pub(crate) errno: i32,
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let e = io::Error::from_raw_os_error(self.errno);
        let text = crate::error::access_denied(&self.path, self.mode, self.writable, &e, false);
        f.write_str(&text)
    }
}

impl std::error::Error for Denied {}

/// The [`Denied`] open `e` carries, if any.
pub(crate) fn denied(e: &io::Error) -> Option<&Denied> {
    e.get_ref().and_then(|r| r.downcast_ref::<Denied>())
}

/// [`open_error_as`] for an open for reading and writing (a lock file's).
pub(crate) fn open_error(e: io::Error, path: &Path) -> io::Error {
    open_error_as(e, path, true)
}

/// Maps the errors an open with [`OPEN_FLAGS`] (`writable` or not) gives for non-files
/// (`ELOOP` for a symlink, `ENXIO` for a socket, `EISDIR` for a directory, which `shm_open`
/// reports as `EINVAL`) and for another user's file (`EACCES`, `EPERM`) to [`Refused`],
/// saying what is there or who owns it; `EACCES` or `EPERM` on a regular file of this user
/// (its mode changed) to [`Denied`]; others pass through.
pub(crate) fn open_error_as(e: io::Error, path: &Path, writable: bool) -> io::Error {
    let maybe_not_ours = matches!(
        e.raw_os_error(),
        Some(libc::ELOOP | libc::ENXIO | libc::EISDIR | libc::EINVAL | libc::EACCES | libc::EPERM)
    );
    let Some(m) = maybe_not_ours
        .then(|| std::fs::symlink_metadata(path).ok())
        .flatten()
    else {
        return e;
    };
    match (check_metadata(&m, path), e.raw_os_error()) {
        (Err(refused), _) => refused,
        (Ok(()), Some(errno @ (libc::EACCES | libc::EPERM))) => io::Error::new(
            io::ErrorKind::PermissionDenied,
            Denied {
                path: path.to_owned(),
                mode: m.mode() & 0o7777,
                writable,
                errno,
            },
        ),
        (Ok(()), _) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// What is refused is said as what it is: a device (character or block) as a device.
    #[test]
    fn a_device_is_refused_as_a_device() {
        let null = Path::new("/dev/null");
        let e = check_metadata(&std::fs::symlink_metadata(null).unwrap(), null).unwrap_err();
        assert!(
            is_refused(&e)
                && e.to_string()
                    .ends_with("it is a device, not a regular file"),
            "{e}"
        );
    }

    /// `EACCES` from opening another user's file names its owner; from our own unreadable
    /// file it is [`Denied`], with the file's mode (ours to fix).
    #[test]
    fn open_error_names_the_owner_of_a_file_it_may_not_open() {
        let dir = std::env::temp_dir().join(format!("shmstream-trust-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ours = dir.join("ours");
        std::fs::write(&ours, b"x").unwrap();
        std::fs::set_permissions(&ours, std::fs::Permissions::from_mode(0o000)).unwrap();
        let eacces = || io::Error::from_raw_os_error(libc::EACCES);
        let e = open_error_as(eacces(), &ours, false);
        let ours_denied = !is_refused(&e)
            && e.kind() == io::ErrorKind::PermissionDenied
            && denied(&e).is_some_and(|d| {
                d.path == ours && d.mode == 0 && !d.writable && d.errno == libc::EACCES
            });
        // Any other error passes through.
        let other = open_error_as(io::Error::from_raw_os_error(libc::EMFILE), &ours, true);
        // Another user's file: a chown where we are root, else root's /etc/passwd.
        let (theirs, owner) = if crate::sys::euid() == 0 {
            let p = dir.join("theirs");
            std::fs::write(&p, b"x").unwrap();
            std::os::unix::fs::chown(&p, Some(64_123), Some(64_123)).unwrap();
            (p, "owned by uid 64123")
        } else {
            (PathBuf::from("/etc/passwd"), "owned by uid 0")
        };
        let refused = [
            open_error(eacces(), &theirs),
            open_error(io::Error::from_raw_os_error(libc::EPERM), &theirs),
        ];
        let _ = std::fs::remove_dir_all(&dir);
        assert!(ours_denied, "{e:?}");
        assert_eq!(other.raw_os_error(), Some(libc::EMFILE));
        for e in refused {
            assert!(is_refused(&e) && e.to_string().contains(owner), "{e}");
        }
    }
}
