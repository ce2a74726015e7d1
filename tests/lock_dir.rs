//! Where the lock file lives, in real child processes (the test binary re-executed with a
//! role, see tests/common/mod.rs): one lock directory per process for its whole life, and
//! one made by a set-uid process is accepted.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Cleanup, LONG, child, child_role, is_root, param, say, unique_name};
use shmstream::{Dtype, Error, Stream, StreamOptions};

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(unique_name(tag));
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn create(name: &str) -> Stream {
    StreamOptions::new(name)
        .shape(&[4])
        .dtype(Dtype::U8)
        .create()
        .unwrap()
}

/// What a lock attempt did, as one word.
fn outcome<T>(r: Result<T, Error>) -> String {
    match r {
        Ok(_) => "took it".to_owned(),
        Err(Error::Timeout { .. }) => "excluded".to_owned(),
        Err(e) => format!("error {e}"),
    }
}

/// The temporary directory is chosen once per process, as Python's `tempfile` does: after
/// `$TMPDIR` is removed (a cleaner), a second handle of a stream still locks the first's
/// file (it moved to `/tmp`, so both held the write lock at once).
#[test]
fn a_removed_tmpdir_does_not_give_a_second_handle_another_lock_file() {
    if child_role().as_deref() == Some("tmpdir_removed") {
        let name: String = param("name");
        let tmpdir: PathBuf = param("tmpdir");
        let before = shmstream::name::lock_path(&name);
        let a = Stream::open(&name).unwrap();
        let held = a.lock(Some(LONG)).unwrap();
        std::fs::remove_dir_all(&tmpdir).unwrap();
        let after = shmstream::name::lock_path(&name);
        // Another thread: this one's lock is reentrant.
        let b = std::thread::scope(|s| {
            s.spawn(|| {
                outcome(Stream::open(&name).and_then(|b| b.lock(Some(Duration::ZERO)).map(drop)))
            })
            .join()
            .unwrap()
        });
        drop(held);
        say(&format!("same path {}, second handle {b}", before == after));
        return;
    }
    let name = unique_name("lockdir-tmpdir");
    let _c = Cleanup::new([&name]);
    let _s = create(&name);
    let scratch = Scratch::new("lockdir-tmpdir");
    let tmpdir = scratch.0.join("t");
    std::fs::create_dir(&tmpdir).unwrap();
    let lines = child(
        "a_removed_tmpdir_does_not_give_a_second_handle_another_lock_file",
        "tmpdir_removed",
    )
    .param("name", &name)
    .param("tmpdir", tmpdir.display())
    .env("TMPDIR", &tmpdir)
    .env("TEMP", "")
    .env("TMP", "")
    .env("PYSHMEM_LOCK_DIR", "")
    .run(LONG);
    assert!(
        lines
            .iter()
            .any(|l| l == "same path true, second handle excluded"),
        "{lines:?}"
    );
}

/// A set-uid process (real uid other than the effective one) makes the lock directory
/// owned by its effective uid, and accepts it (it refused it as "owned by another user").
/// Needs root to switch the real uid; skipped otherwise.
#[test]
fn a_set_uid_process_accepts_the_lock_directory_it_made() {
    if child_role().as_deref() == Some("set_uid") {
        let name: String = param("name");
        let nobody: u32 = param("ruid");
        // SAFETY: plain system call; keeps the effective uid (root), changes the real one.
        assert_eq!(unsafe { libc::setreuid(nobody, libc::geteuid()) }, 0);
        // SAFETY: as above.
        assert_ne!(unsafe { libc::getuid() }, unsafe { libc::geteuid() });
        let got = outcome(Stream::open(&name).and_then(|s| s.lock(Some(LONG)).map(drop)));
        say(&format!("set-uid {got}"));
        return;
    }
    if !is_root() {
        eprintln!("skipped: needs root to run a process whose real and effective uids differ");
        return;
    }
    let name = unique_name("lockdir-setuid");
    let _c = Cleanup::new([&name]);
    let _s = create(&name);
    let scratch = Scratch::new("lockdir-setuid");
    let lines = child(
        "a_set_uid_process_accepts_the_lock_directory_it_made",
        "set_uid",
    )
    .param("name", &name)
    .param("ruid", 65534)
    .env("PYSHMEM_LOCK_DIR", scratch.0.join("locks"))
    .run(LONG);
    assert!(lines.iter().any(|l| l == "set-uid took it"), "{lines:?}");
}

/// A set-uid process picks the temporary directory its effective uid may write, as Python's
/// `tempfile` (which creates a file there) does: `access` judged it by the real uid, so a
/// `$TMPDIR` only root may write sent it to `/tmp`, another lock file than pyshmem's.
/// Needs root; skipped otherwise.
#[test]
fn a_set_uid_process_picks_the_temporary_directory_its_effective_uid_may_write() {
    if child_role().as_deref() == Some("set_uid_tmpdir") {
        let name: String = param("name");
        let tmpdir: PathBuf = param("tmpdir");
        let nobody: u32 = param("ruid");
        // SAFETY: plain system call; keeps the effective uid (root), changes the real one.
        assert_eq!(unsafe { libc::setreuid(nobody, libc::geteuid()) }, 0);
        let path = shmstream::name::lock_path(&name);
        say(&format!("in tmpdir {}", path.starts_with(&tmpdir)));
        return;
    }
    if !is_root() {
        eprintln!("skipped: needs root to run a process whose real and effective uids differ");
        return;
    }
    let scratch = Scratch::new("lockdir-setuid-tmp");
    let tmpdir = scratch.0.join("t");
    std::fs::create_dir(&tmpdir).unwrap();
    // Only root (the effective uid) may write it, not the real uid 65534.
    std::fs::set_permissions(&tmpdir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let lines = child(
        "a_set_uid_process_picks_the_temporary_directory_its_effective_uid_may_write",
        "set_uid_tmpdir",
    )
    .param("name", unique_name("lockdir-setuid-tmp"))
    .param("tmpdir", tmpdir.display())
    .param("ruid", 65534)
    .env("TMPDIR", &tmpdir)
    .env("TEMP", "")
    .env("TMP", "")
    .env("PYSHMEM_LOCK_DIR", "")
    .run(LONG);
    assert!(lines.iter().any(|l| l == "in tmpdir true"), "{lines:?}");
}

/// The default lock directory and a lock file as pyshmem makes them under umask 022 (0755,
/// 0644): another user could open the file read-only and hold its flock, blocking every
/// writer, create and unlink of the stream. A handle's lock makes both private (0700, 0600);
/// another user (checked when root, as uid 64123) then cannot open the file.
#[test]
fn a_lock_directory_and_file_pyshmem_made_readable_are_made_private() {
    use std::os::unix::fs::PermissionsExt;
    let test = "a_lock_directory_and_file_pyshmem_made_readable_are_made_private";
    let set = |p: &std::path::Path, m| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    match child_role().as_deref() {
        Some("pyshmem_modes") => {
            let name: String = param("name");
            let path = shmstream::name::lock_path(&name);
            let dir = path.parent().unwrap();
            std::fs::create_dir(dir).unwrap();
            set(dir, 0o755);
            std::fs::File::create(&path).unwrap();
            set(&path, 0o644);
            let got = outcome(Stream::open(&name).and_then(|s| s.lock(Some(LONG)).map(drop)));
            let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode();
            say(&path.display().to_string());
            say(&format!(
                "{got}, dir {:o}, file {:o}",
                mode(dir) & 0o777,
                mode(&path) & 0o777
            ));
            return;
        }
        Some("other_user") => {
            use std::os::fd::AsRawFd;
            let path: PathBuf = param("path");
            // The squatter's hold: a read-only open, then the flock every writer needs.
            let r = std::fs::File::open(&path).map(|f| {
                // SAFETY: flock on a descriptor this thread owns.
                unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
            });
            say(&format!("other user: {:?}", r.map_err(|e| e.kind())));
            return;
        }
        _ => {}
    }
    let name = unique_name("lockdir-modes");
    let _c = Cleanup::new([&name]);
    let _s = create(&name);
    let scratch = Scratch::new("lockdir-modes");
    let tmpdir = scratch.0.join("t");
    std::fs::create_dir(&tmpdir).unwrap();
    // Reachable by another user, as `/tmp` is.
    set(&scratch.0, 0o755);
    set(&tmpdir, 0o755);
    let lines = child(test, "pyshmem_modes")
        .param("name", &name)
        .env("TMPDIR", &tmpdir)
        .env("TEMP", "")
        .env("TMP", "")
        .env("PYSHMEM_LOCK_DIR", "")
        .run(LONG);
    assert_eq!(
        lines.get(1).map(String::as_str),
        Some("took it, dir 700, file 600"),
        "{lines:?}"
    );
    if !is_root() {
        eprintln!("skipped the other user's open: switching uids needs root");
        return;
    }
    let lines = child(test, "other_user")
        .param("path", &lines[0])
        .run_as_user(64_123)
        .run(LONG);
    assert_eq!(
        lines,
        vec![format!(
            "other user: Err({:?})",
            std::io::ErrorKind::PermissionDenied
        )]
    );
}
