//! The lock directory: made private (0700) where this user made it (or pyshmem made the
//! default one), refused when it is not a directory of this user's or others may write to
//! it, and the errors that name it with the remedy ([`Error::LockDir`]).

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, Result};
use crate::sys;

/// Checks (and creates, 0700) the lock directory: it must belong to us and not be writable
/// by group or others.
pub(crate) fn prepare_dir(dir: &Path, stream: &str) -> Result<()> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut b = std::fs::DirBuilder::new();
            std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
            // `create` also succeeds when a directory (or a link to one, planted since the
            // look above) is there: the check below, which follows no link, decides.
            let made = match b.recursive(true).create(dir) {
                Ok(()) => true,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
                Err(e) => return Err(lock_io(stream, dir, "creating the lock directory", e)),
            };
            prepare_dir_checked(dir, stream, made)
        }
        Err(e) => Err(Error::io(stream, "checking the lock directory", e)),
        Ok(_) => prepare_dir_checked(dir, stream, false),
    }
}

/// Checks the lock directory without following a link, then makes it private (0700) if this
/// call `made` it (a umask may have cut its mode) or pyshmem made the default one with the
/// umask's mode.
fn prepare_dir_checked(dir: &Path, stream: &str, made: bool) -> Result<()> {
    let refuse = |reason| Error::LockDir {
        name: stream.to_owned(),
        path: dir.to_owned(),
        reason,
    };
    let check = || {
        std::fs::symlink_metadata(dir)
            .map_err(|e| Error::io(stream, "checking the lock directory", e))
    };
    let mut meta = check()?;
    if let Some(reason) = dir_refusal(&meta, sys::euid()) {
        return Err(refuse(reason));
    }
    // After a change by path (a directory we may not read, or a file system that keeps its
    // modes): the directory there is looked at whole again, its owner too.
    let check_again = || {
        let meta = check()?;
        match dir_refusal(&meta, sys::euid()) {
            Some(reason) => Err(refuse(reason)),
            None => Ok(meta),
        }
    };
    // Through a descriptor of the directory itself, opened without following a link: a
    // link swapped in for it since the look above is not followed to another directory. A
    // directory of ours that its mode does not let us read (0300) is changed by path, as
    // before: the look above found it ours and no link.
    // A file system whose modes are the mount's (vfat: `EPERM`) keeps the directory's mode,
    // which the write check below then judges, as it did before the directory was tightened.
    let make_private = |meta: &std::fs::Metadata| -> Result<()> {
        let io = |e: std::io::Error| match e.raw_os_error() {
            Some(libc::EPERM | libc::EOPNOTSUPP) => Ok(()),
            _ => Err(Error::io(
                stream,
                "making the lock directory private (0700)",
                e,
            )),
        };
        let private = std::fs::Permissions::from_mode(0o700);
        let d = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(dir)
        {
            Ok(d) => d,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
                return Err(refuse("it is not a directory"));
            }
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                return std::fs::set_permissions(dir, private).or_else(io);
            }
            Err(e) => return Err(Error::io(stream, "opening the lock directory", e)),
        };
        let now = d
            .metadata()
            .map_err(|e| Error::io(stream, "checking the lock directory", e))?;
        if (now.dev(), now.ino()) != (meta.dev(), meta.ino()) {
            return Err(refuse("it was replaced while being checked"));
        }
        d.set_permissions(private).or_else(io)
    };
    if made && meta.mode() & 0o777 != 0o700 {
        make_private(&meta)?;
        meta = check_again()?;
    }
    if meta.mode() & 0o077 != 0 && is_default(dir) {
        // pyshmem makes the default directory with the umask's mode (0755 or 0775 under the
        // common umasks, letting others reach the lock files): ours, made for this use, so
        // tightened. One named by PYSHMEM_LOCK_DIR is the user's to change (its lock files
        // are made private, `open_file`).
        make_private(&meta)?;
        meta = check_again()?;
    }
    if meta.mode() & 0o022 != 0 {
        return Err(refuse("it is writable by group or others"));
    }
    Ok(())
}

/// Why a lock directory of metadata `meta` (from `symlink_metadata`) is refused whatever its
/// mode: it is not a directory (a link to one included), or its owner is not `uid`, the
/// effective uid that created it (its name, `pyshmem-locks-<uid>`, keeps pyshmem's real
/// uid); `None` when neither. `purge` says the same of a lock directory it cannot list.
pub(crate) fn dir_refusal(meta: &std::fs::Metadata, uid: u32) -> Option<&'static str> {
    if !meta.is_dir() {
        Some("it is not a directory")
    } else if meta.uid() != uid {
        Some("it is owned by another user")
    } else {
        None
    }
}

/// Why a lock directory can never hold this user's lock files, from the `errno` of making it
/// or a lock file there: `None` for any other error (a refused or denied file of [`crate::trust`]
/// carries none). Passing conditions (a full file system, a quota, the kernel out of lock
/// records: `ENOSPC`, `EDQUOT`, `ENOLCK`) stay [`Error::Io`]: moving one process's locks
/// elsewhere for them would split the writers that must share the directory.
fn unusable_dir(e: &io::Error) -> Option<&'static str> {
    Some(match e.raw_os_error()? {
        libc::EACCES | libc::EPERM => {
            "this user may not create it or files in it (its mode or attributes, or its parent's)"
        }
        libc::EROFS => "it is on a read-only file system",
        _ => return None,
    })
}

/// `e` from `op` on the lock directory `dir` or a lock file in it: [`Error::LockDir`] naming
/// `dir` where the directory cannot hold lock files ([`unusable_dir`]), else [`Error::io`].
pub(super) fn lock_io(stream: &str, dir: &Path, op: &'static str, e: io::Error) -> Error {
    match unusable_dir(&e) {
        Some(reason) => Error::LockDir {
            name: stream.to_owned(),
            path: dir.to_owned(),
            reason,
        },
        None => Error::io(stream, op, e),
    }
}

/// The directory of lock file `path`.
pub(super) fn dir_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("/"))
}

/// Whether `dir` is the default lock directory (`pyshmem-locks-<uid>`, no PYSHMEM_LOCK_DIR).
fn is_default(dir: &Path) -> bool {
    std::env::var_os("PYSHMEM_LOCK_DIR").is_none_or(|d| d.is_empty())
        && dir
            .file_name()
            .is_some_and(|n| *n == *crate::name::default_lock_dir_name())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lock directory that can never hold this user's lock files (read-only, not
    /// writable) is [`Error::LockDir`] naming it, with the remedy; other errors, passing ones
    /// included (full, over quota, out of lock records), stay [`Error::Io`].
    #[test]
    fn lock_directory_errors_name_the_directory_and_the_remedy() {
        let dir = Path::new("/locks");
        for errno in [libc::EROFS, libc::EACCES, libc::EPERM] {
            let e = lock_io("cam", dir, "flock", io::Error::from_raw_os_error(errno));
            assert!(
                matches!(&e, Error::LockDir { path, .. } if path == dir),
                "{e:?}"
            );
            let text = e.to_string();
            assert!(
                text.contains("\"/locks\"") && text.contains("PYSHMEM_LOCK_DIR"),
                "{text}"
            );
        }
        for errno in [libc::EMFILE, libc::ENOSPC, libc::EDQUOT, libc::ENOLCK] {
            let e = lock_io("cam", dir, "flock", io::Error::from_raw_os_error(errno));
            assert!(matches!(e, Error::Io { .. }), "{e:?}");
        }
    }

    #[test]
    fn world_writable_lock_dir_is_refused() {
        let dir = std::env::temp_dir().join(format!("shmstream-lockdir-{}", std::process::id()));
        // A run of an earlier process of this pid that died mid-test left it.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = prepare_dir(&dir, "cam").unwrap_err();
        assert!(
            err.to_string().contains("writable by group or others"),
            "{err}"
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        prepare_dir(&dir, "cam").unwrap();
        let fresh = dir.join("sub");
        prepare_dir(&fresh, "cam").unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().mode() & 0o777, 0o700);
        // The default directory as pyshmem makes it under umask 002 is made private instead.
        let default = dir.join(crate::name::default_lock_dir_name());
        std::fs::create_dir(&default).unwrap();
        std::fs::set_permissions(&default, std::fs::Permissions::from_mode(0o775)).unwrap();
        if std::env::var_os("PYSHMEM_LOCK_DIR").is_none_or(|d| d.is_empty()) {
            prepare_dir(&default, "cam").unwrap();
            assert_eq!(std::fs::metadata(&default).unwrap().mode() & 0o777, 0o700);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A lock directory this process makes is private (0700) whatever the umask cut from
    /// the mode it asked for: under umask 0277 it is made 0500, in which no process of this
    /// user but root could make a lock file. Run again in a child (this test binary) under
    /// that umask, which the shell sets: a umask is the whole process's.
    #[test]
    fn a_lock_directory_made_under_a_umask_is_made_private() {
        const TEST: &str = "lock::dir::tests::a_lock_directory_made_under_a_umask_is_made_private";
        const CHILD: &str = "SHMSTREAM_LOCKDIR_UMASK_DIR";
        if let Some(dir) = std::env::var_os(CHILD) {
            let dir = Path::new(&dir);
            prepare_dir(dir, "cam").unwrap();
            let mode = std::fs::metadata(dir).unwrap().mode() & 0o777;
            println!("said: {mode:o}");
            return;
        }
        let base =
            std::env::temp_dir().join(format!("shmstream-lockdir-umask-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir(&base).unwrap();
        let locks = base.join("locks");
        let said = crate::few_descriptors::said_in_a_shell_child(
            "umask 0277",
            TEST,
            (CHILD, locks.as_os_str()),
        );
        let _ = std::fs::remove_dir_all(&base);
        assert_eq!(said, ["700"]);
    }

    /// A directory made here is owned by the effective uid (not the real one, which differs
    /// in a set-uid program): it passes against that, and not against another uid.
    #[test]
    fn a_lock_directory_made_here_is_owned_by_the_effective_uid() {
        let dir =
            std::env::temp_dir().join(format!("shmstream-lockdir-euid-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        prepare_dir(&dir, "cam").unwrap();
        let meta = std::fs::symlink_metadata(&dir).unwrap();
        assert_eq!(dir_refusal(&meta, sys::euid()), None);
        assert_eq!(
            dir_refusal(&meta, sys::euid().wrapping_add(1)),
            Some("it is owned by another user")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_link_planted_before_the_lock_directory_is_made_is_refused_and_its_target_untouched() {
        let base =
            std::env::temp_dir().join(format!("shmstream-lockdir-link-{}", std::process::id()));
        let target = base.join("theirs");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
        // As if planted between `prepare_dir`'s first look and its `create`, which then
        // succeeds on the directory the link reaches.
        let dir = base.join("locks");
        std::os::unix::fs::symlink(&target, &dir).unwrap();
        let err = prepare_dir_checked(&dir, "cam", true).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
        assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o777, 0o755);
        let _ = std::fs::remove_dir_all(&base);
    }
}
