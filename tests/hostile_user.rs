//! A hostile local user and a crashing creator (issue 14): objects planted under a stream's
//! name (FIFOs, sockets, directories, symlinks, another user's files), creators killed
//! mid-create, openers racing creators, unlinks the waiters must notice. Every library call
//! that could hang runs under a bound ([`within`]), so a regression fails instead of hanging.
//! Tests that need a second user switch uids in a child (root only) and print why they skip
//! otherwise.

mod common;

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Cleanup, LONG, child, child_role, is_root, param, say, unique_name};
use shmstream::{Dtype, Error, PurgeOptions, Stream, StreamOptions, name};

/// A uid nobody on a test machine logs in as.
const OTHER_UID: u32 = 64_123;
/// How long any single call may take before it counts as hung.
const BOUND: Duration = Duration::from_secs(10);

fn shm(id: &str) -> PathBuf {
    PathBuf::from("/dev/shm").join(id)
}

/// Runs `f` on a thread and fails the test if it has not returned within [`BOUND`].
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(BOUND)
        .unwrap_or_else(|_| panic!("{what} did not return within {BOUND:?} (blocked?)"))
}

/// Serializes this binary's tests that purge, and those that check a lock file is gone: a
/// purge sweeps what belongs to no stream, whichever test planted it, and each such test
/// checks what its own purge removed; and a purge's lock-file sweep opens a path it listed
/// (making the file again for a moment if its stream's failed create just removed it) to
/// lock it before it removes it.
fn purging() -> std::sync::MutexGuard<'static, ()> {
    static PURGING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    PURGING.lock().unwrap_or_else(|e| e.into_inner())
}

/// A purge of the stream `name` alone (whatever its creator), within [`BOUND`].
fn purge_only(name: &str) -> shmstream::PurgeReport {
    let n = name.to_owned();
    within("purge", move || {
        shmstream::purge_matching(
            PurgeOptions {
                all: true,
                dry_run: false,
            },
            |x| x == n,
        )
    })
    .unwrap()
}

/// A purge that selects no stream: it removes only what belongs to none (abandoned
/// creations, parts and lock files of no stream), within [`BOUND`].
fn purge_no_stream(dry_run: bool) -> shmstream::PurgeReport {
    within("purge", move || {
        shmstream::purge_matching(
            PurgeOptions {
                all: false,
                dry_run,
            },
            |_| false,
        )
    })
    .unwrap()
}

/// `/dev/shm` entries whose name starts with `id` (the segments of one stream, and any
/// `.creating-<pid>` objects of its creators).
fn entries_of(id: &str) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| f.starts_with(id))
        .collect()
}

#[derive(Debug, Clone, Copy)]
enum Plant {
    Fifo,
    Socket,
    Directory,
    DanglingSymlink,
    SymlinkToOurFile,
}

impl Plant {
    const ALL: [Plant; 5] = [
        Plant::Fifo,
        Plant::Socket,
        Plant::Directory,
        Plant::DanglingSymlink,
        Plant::SymlinkToOurFile,
    ];

    /// Creates the object at `path`; returns what must be removed afterwards.
    fn make(self, path: &PathBuf) -> Vec<PathBuf> {
        match self {
            Plant::Fifo => {
                let ok = std::process::Command::new("mkfifo")
                    .arg(path)
                    .status()
                    .unwrap();
                assert!(ok.success(), "mkfifo {path:?}");
            }
            Plant::Socket => {
                std::mem::forget(UnixListener::bind(path).unwrap());
            }
            Plant::Directory => std::fs::create_dir(path).unwrap(),
            Plant::DanglingSymlink => {
                let target = std::env::temp_dir().join(format!(
                    "shmstream-dangling-{}",
                    path.file_name().unwrap().to_string_lossy()
                ));
                std::os::unix::fs::symlink(&target, path).unwrap();
                return vec![path.clone(), target];
            }
            Plant::SymlinkToOurFile => {
                let target = PathBuf::from(format!("{}.target", path.display()));
                std::fs::write(&target, vec![0u8; 4096]).unwrap();
                std::os::unix::fs::symlink(&target, path).unwrap();
                return vec![path.clone(), target];
            }
        }
        vec![path.clone()]
    }
}

fn remove(paths: &[PathBuf]) {
    for p in paths {
        let _ = std::fs::remove_dir(p);
        let _ = std::fs::remove_file(p);
    }
}

/// Defect 1: a FIFO (or socket, directory, symlink) planted as `_meta` or as the payload
/// made every tool block in `open`. Each call must now return within the bound: `open`,
/// `open_readonly`, and for a planted `_meta` `stat` and `create`, with `Error::Untrusted` for
/// the stream it names; a planted `_meta` is left alone (a planted payload beside a valid
/// header is the stream's, removed with it by `purge`).
#[test]
fn planted_non_files_never_block_and_are_refused() {
    let _purging = purging();
    for plant in Plant::ALL {
        for as_meta in [true, false] {
            let name = unique_name("plant");
            let _c = Cleanup::new([&name]);
            let (payload_id, meta_id) = (name::segment_id(&name), name::meta_id(&name));
            let planted = if as_meta {
                std::fs::write(shm(&payload_id), [0u8; 16]).unwrap();
                let mut p = plant.make(&shm(&meta_id));
                p.push(shm(&payload_id));
                p
            } else {
                Stream::create(&name, &[4], Dtype::U8).unwrap();
                std::fs::remove_file(shm(&payload_id)).unwrap();
                plant.make(&shm(&payload_id))
            };
            let what = format!("{plant:?} as {}", if as_meta { "_meta" } else { "payload" });
            let n = name.clone();
            let opened = within(&format!("open with a {what}"), move || {
                Stream::open_readonly(&n).map(|_| ())
            });
            assert!(
                matches!(&opened, Err(Error::Untrusted { name: n, .. }) if *n == name),
                "{what}: open gave {opened:?}"
            );
            let n = name.clone();
            let opened = within(&format!("writable open with a {what}"), move || {
                Stream::open(&n).map(|_| ())
            });
            assert!(
                matches!(&opened, Err(Error::Untrusted { name: n, .. }) if *n == name),
                "{what}: writable open gave {opened:?}"
            );
            let n = name.clone();
            let made = within(&format!("create with a {what}"), move || {
                Stream::create(&n, &[4], Dtype::U8).map(|_| ())
            });
            // A planted payload beside a valid header of ours: the name is taken.
            assert!(
                match &made {
                    Err(Error::Untrusted { name: n, .. }) => as_meta && *n == name,
                    Err(Error::AlreadyExists { name: n, .. }) => !as_meta && *n == name,
                    _ => false,
                },
                "{what}: create gave {made:?}"
            );
            let n = name.clone();
            let stat = within("stat", move || shmstream::stat(&n).map(|_| ()));
            // `stat` reads the header alone: a planted payload beside a valid one is not looked at.
            assert!(
                matches!(stat, Err(Error::Untrusted { .. }) if as_meta)
                    || (stat.is_ok() && !as_meta),
                "{what}: stat gave {stat:?}"
            );
            if as_meta {
                let listed = within("list", shmstream::list_streams).unwrap();
                assert!(!listed.contains(&name), "{what}: listed");
            }
            let missing = unique_name("missing");
            let m = missing.clone();
            let gone = within("open of a missing name", move || {
                Stream::open(&m).map(|_| ())
            });
            assert!(
                matches!(gone, Err(Error::NotFound { .. })),
                "{what}: {gone:?}"
            );
            let m = missing.clone();
            let gone = within("unlink of a missing name", move || shmstream::unlink(&m));
            assert!(
                matches!(gone, Err(Error::NotFound { .. })),
                "{what}: {gone:?}"
            );
            let prefix = name.clone();
            let report = within("purge", move || {
                shmstream::purge_matching(
                    PurgeOptions {
                        all: true,
                        dry_run: false,
                    },
                    |n| n == prefix,
                )
            })
            .unwrap();
            if !as_meta {
                // A valid header of ours: the stream is ours to remove, planted payload and all.
                // (A directory cannot be removed by shm_unlink: reported, not fatal.)
                if matches!(plant, Plant::Directory) {
                    let failed: Vec<_> = report
                        .failed
                        .iter()
                        .map(|f| f.error.stream_name())
                        .collect();
                    assert_eq!(failed, vec![name.as_str()], "{what}: {report:?}");
                } else {
                    assert_eq!(report.names(), vec![name.clone()], "{what}: {report:?}");
                    // The planted entry itself, not what a planted link points at.
                    assert!(
                        std::fs::symlink_metadata(shm(&payload_id)).is_err(),
                        "{what}: purged, yet left"
                    );
                    if matches!(plant, Plant::SymlinkToOurFile) {
                        assert!(planted[1].exists(), "{what}: the link was followed");
                    }
                }
                remove(&planted);
                let _ = std::fs::remove_file(shm(&meta_id));
                continue;
            }
            assert!(report.removed.is_empty(), "{what}: purged");
            for (i, p) in planted.iter().enumerate() {
                // A dangling symlink's target must still not exist (nothing followed it).
                let dangling_target = i == 1 && matches!(plant, Plant::DanglingSymlink);
                assert_eq!(
                    std::fs::symlink_metadata(p).is_ok(),
                    !dangling_target,
                    "{what}: {p:?} was touched"
                );
            }
            remove(&planted);
            let _ = std::fs::remove_file(shm(&meta_id));
            let _ = std::fs::remove_file(shm(&payload_id));
        }
    }
}

/// `create` builds a stream under ids anyone can predict (`<id>.creating-<pid>`); what it
/// cannot remove there (a directory; another user's file, where it is not root) is named,
/// with what it is, instead of an "exists" for a name that has no stream.
#[test]
fn a_planted_build_id_is_named_by_create() {
    let _purging = purging();
    let name = unique_name("buildplant");
    let _c = Cleanup::new([&name]);
    let building = shm(&format!(
        "{}.creating-{}",
        name::segment_id(&name),
        std::process::id()
    ));
    let planted = Plant::Directory.make(&building);
    let n = name.clone();
    let made = within("create", move || {
        Stream::create(&n, &[4], Dtype::U8).map(|_| ())
    });
    remove(&planted);
    match made {
        Err(Error::Untrusted {
            name: n,
            path,
            reason,
        }) => {
            assert_eq!((n, path), (name.clone(), building), "{reason}");
            assert!(reason.contains("directory"), "{reason}");
        }
        other => panic!("create gave {other:?}"),
    }
    assert!(matches!(
        shmstream::stat(&name),
        Err(Error::NotFound { .. })
    ));
    Stream::create(&name, &[4], Dtype::U8).unwrap();
}

/// The ring's name of a stream without history is free while the stream lives, so anyone may
/// plant something there. The stream stays usable (without history): `open` and `stat` work,
/// `unlink` removes the stream and its lock file, and a `create` with history of a name whose
/// ring is squatted says so instead of "already exists" (one without history succeeds).
#[test]
fn a_planted_ring_leaves_the_stream_usable_and_is_named_by_create() {
    let _purging = purging();
    for plant in Plant::ALL {
        let name = unique_name("ringplant");
        let _c = Cleanup::new([&name]);
        Stream::create(&name, &[4], Dtype::U8).unwrap();
        let planted = plant.make(&shm(&name::history_id(&name)));
        let n = name.clone();
        let opened = within("open", move || {
            Stream::open_readonly(&n).map(|s| s.history_depth())
        });
        assert!(matches!(opened, Ok(0)), "{plant:?}: open gave {opened:?}");
        let n = name.clone();
        let stat = within("stat", move || shmstream::stat(&n).map(|s| s.history));
        assert!(matches!(stat, Ok(0)), "{plant:?}: stat gave {stat:?}");
        let n = name.clone();
        let unlinked = within("unlink", move || shmstream::unlink(&n));
        assert!(unlinked.is_ok(), "{plant:?}: unlink gave {unlinked:?}");
        assert!(
            !name::lock_path(&name).exists() && entries_of(&name::segment_id(&name)).len() <= 1,
            "{plant:?}: left {:?}",
            entries_of(&name::segment_id(&name))
        );
        // The name is free, its ring's name squatted (planted again: ours, it may be gone).
        remove(&planted);
        let planted = plant.make(&shm(&name::history_id(&name)));
        let n = name.clone();
        let created = within("create", move || {
            StreamOptions::new(&n)
                .shape(&[4])
                .dtype(Dtype::U8)
                .history(4)
                .create()
                .map(|_| ())
        });
        assert!(
            matches!(&created, Err(Error::Untrusted { name: n, .. }) if *n == name),
            "{plant:?}: create gave {created:?}"
        );
        // A stream without history has no ring: what squats the ring's name is no concern of
        // its `create`.
        let n = name.clone();
        let created = within("create", move || {
            Stream::create(&n, &[4], Dtype::U8).map(|s| s.history_depth())
        });
        assert!(
            matches!(created, Ok(0)),
            "{plant:?}: create without history gave {created:?}"
        );
        remove(&planted);
    }
}

/// Defect 1, lock files: a dangling symlink (or FIFO) in place of a lock file is neither
/// followed nor blocks; the stream's operations fail with `Untrusted` naming it.
#[test]
fn a_lock_file_that_is_a_symlink_or_fifo_is_refused_not_followed() {
    for plant in [Plant::DanglingSymlink, Plant::Fifo] {
        let name = unique_name("lockplant");
        let _c = Cleanup::new([&name]);
        let lock = name::lock_path(&name);
        std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
        let planted = plant.make(&lock);
        let n = name.clone();
        let made = within("create", move || {
            Stream::create(&n, &[4], Dtype::U8).map(|_| ())
        });
        assert!(
            matches!(&made, Err(Error::Untrusted { path, .. }) if *path == lock),
            "{plant:?}: {made:?}"
        );
        if let Plant::DanglingSymlink = plant {
            assert!(!planted[1].exists(), "the symlink was followed");
        }
        assert!(entries_of(&name::segment_id(&name)).is_empty());
        remove(&planted);
    }
}

/// Defect 2, without a second process: segments owned by another uid (as if that user
/// made them, `chmod 666`) are refused with the owner named; the name is reported as
/// squatted; and `list` does not show them.
#[test]
fn segments_owned_by_another_user_are_refused_naming_the_owner() {
    if !is_root() {
        eprintln!("skipping: chown to another uid needs root");
        return;
    }
    let name = unique_name("foreign");
    let _c = Cleanup::new([&name]);
    Stream::create(&name, &[4], Dtype::U8).unwrap();
    let ids = [name::segment_id(&name), name::meta_id(&name)];
    // Given back before `_c` unlinks (which refuses another user's segments): the test
    // left both in /dev/shm on every run.
    struct ChownBack(Vec<std::path::PathBuf>);
    impl Drop for ChownBack {
        fn drop(&mut self) {
            for p in &self.0 {
                let _ = std::os::unix::fs::chown(p, Some(0), Some(0));
            }
        }
    }
    let _back = ChownBack(ids.iter().map(|id| shm(id)).collect());
    for id in &ids {
        std::os::unix::fs::chown(shm(id), Some(OTHER_UID), Some(OTHER_UID)).unwrap();
    }
    let owner = format!("uid {OTHER_UID}");
    let refused = |r: &Result<(), Error>| matches!(r, Err(e @ Error::Untrusted { .. }) if e.to_string().contains(&owner));
    let opened = Stream::open(&name).map(|_| ());
    assert!(refused(&opened), "{opened:?}");
    let stat = shmstream::stat(&name).map(|_| ());
    assert!(refused(&stat), "{stat:?}");
    let again = Stream::create(&name, &[4], Dtype::U8).map(|_| ());
    assert!(refused(&again), "create over a squatted name: {again:?}");
    assert!(!shmstream::list_streams().unwrap().contains(&name));
}

/// Defect 2 with real users: a stream another user made world-writable cannot be opened
/// (so not written) by us, and ours cannot be opened by them, even at mode 0666.
#[test]
fn another_user_cannot_attach_to_our_streams_nor_we_to_theirs() {
    if let Some(role) = child_role() {
        let name: String = param("name");
        match role.as_str() {
            "attach" => {
                let r = Stream::open(&name).map(|_| ());
                say(&format!(
                    "attach {}",
                    matches!(r, Err(Error::Untrusted { .. }))
                ));
            }
            "create_shared" => {
                let s = Stream::create(&name, &[4], Dtype::U8).unwrap();
                s.write_slice(&[7u8; 4]).unwrap();
                for id in [name::segment_id(&name), name::meta_id(&name)] {
                    let p = shm(&id);
                    std::fs::set_permissions(
                        &p,
                        std::os::unix::fs::PermissionsExt::from_mode(0o666),
                    )
                    .unwrap();
                }
                std::mem::forget(s);
                say("created");
            }
            other => panic!("unknown role {other}"),
        }
        return;
    }
    if !is_root() {
        eprintln!("skipping: switching to another uid needs root");
        return;
    }
    let lock_dir = std::env::temp_dir().join(format!("shmstream-hostile-{OTHER_UID}"));
    let theirs = unique_name("theirs");
    let ours = unique_name("ours");
    let _c = Cleanup::new([&ours]);
    let w = Stream::create(&ours, &[4], Dtype::U8).unwrap();
    w.write_slice(&[1u8; 4]).unwrap();
    for id in [name::segment_id(&ours), name::meta_id(&ours)] {
        std::fs::set_permissions(
            shm(&id),
            std::os::unix::fs::PermissionsExt::from_mode(0o666),
        )
        .unwrap();
    }
    let test = "another_user_cannot_attach_to_our_streams_nor_we_to_theirs";
    let lines = child(test, "attach")
        .param("name", &ours)
        .env("PYSHMEM_LOCK_DIR", &lock_dir)
        .run_as_user(OTHER_UID)
        .run(LONG);
    assert_eq!(
        lines,
        vec!["attach true"],
        "the other user attached to ours"
    );
    assert_eq!(w.read::<u8>().unwrap().as_slice().unwrap(), &[1u8; 4]);
    let lines = child(test, "create_shared")
        .param("name", &theirs)
        .env("PYSHMEM_LOCK_DIR", &lock_dir)
        .run_as_user(OTHER_UID)
        .run(LONG);
    assert_eq!(lines, vec!["created"]);
    let r = Stream::open(&theirs).map(|_| ());
    let segs = [name::segment_id(&theirs), name::meta_id(&theirs)];
    for id in &segs {
        let _ = std::fs::remove_file(shm(id));
    }
    assert!(
        matches!(r, Err(Error::Untrusted { .. })),
        "we attached to theirs: {r:?}"
    );
}

/// Defect 3: purge carries on past a stream it cannot remove (a payload another user
/// planted after ours went away; the sticky `/dev/shm` forbids removing it), removes the
/// rest and reports the failure.
#[test]
fn purge_carries_on_past_a_stream_it_cannot_remove() {
    if let Some(role) = child_role() {
        let prefix: String = param("prefix");
        match role.as_str() {
            "make" => {
                for tag in ["a", "b", "c"] {
                    std::mem::forget(
                        Stream::create(&format!("{prefix}{tag}"), &[4], Dtype::U8).unwrap(),
                    );
                }
                say("made");
            }
            "purge" => {
                let report = shmstream::purge_matching(
                    PurgeOptions {
                        all: true,
                        dry_run: false,
                    },
                    |n| n.starts_with(&prefix),
                )
                .unwrap();
                say(&format!("removed {}", report.names().join(",")));
                say(&format!("failed {}", report.failed.len()));
                for f in &report.failed {
                    let untrusted = matches!(f.error, Error::Untrusted { .. });
                    say(&format!("{} untrusted {untrusted}: {f}", f.item.kind()));
                }
            }
            other => panic!("unknown role {other}"),
        }
        return;
    }
    if !is_root() {
        eprintln!("skipping: switching to another uid needs root");
        return;
    }
    let _purging = purging();
    let prefix = unique_name("purgeon");
    let lock_dir = std::env::temp_dir().join(format!("shmstream-hostile-{OTHER_UID}"));
    let test = "purge_carries_on_past_a_stream_it_cannot_remove";
    let run = |role| {
        child(test, role)
            .param("prefix", &prefix)
            .env("PYSHMEM_LOCK_DIR", &lock_dir)
            .run_as_user(OTHER_UID)
            .run(LONG)
    };
    assert_eq!(run("make"), vec!["made"]);
    // Root swaps b's payload for a file of its own.
    let b = format!("{prefix}b");
    let b_payload = shm(&name::segment_id(&b));
    std::fs::remove_file(&b_payload).unwrap();
    std::fs::write(&b_payload, [0u8; 4]).unwrap();
    let lines = run("purge");
    let left: Vec<_> = ["a", "c"]
        .iter()
        .filter(|t| !entries_of(&name::segment_id(&format!("{prefix}{t}"))).is_empty())
        .collect();
    for id in entries_of(&name::segment_id(&b)) {
        let _ = std::fs::remove_file(shm(&id));
    }
    assert_eq!(
        lines[..2],
        [format!("removed {prefix}a,{prefix}c"), "failed 1".into()]
    );
    // The failure names the stream, the payload and its owner (it said "unlinking a segment
    // failed for stream '…b': Operation not permitted").
    let failure = &lines[2];
    assert!(
        failure.starts_with("stream untrusted true: ")
            && failure.contains(&format!("stream '{b}'"))
            && failure.contains(&b_payload.display().to_string())
            && failure.contains("owned by uid 0"),
        "{failure}"
    );
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Review item: what `unlink` cannot remove of a name (a directory as the payload) is named
/// with its path and what it is, and the lock file it made goes, no part being a file of
/// ours: it said "unlinking a segment failed for stream '…': Is a directory" and left the
/// lock file.
#[test]
fn unlink_names_a_payload_it_cannot_remove_and_leaves_no_lock_file() {
    let _purging = purging();
    let name = unique_name("dirpayload");
    let payload = shm(&name::segment_id(&name));
    let planted = Plant::Directory.make(&payload);
    let n = name.clone();
    let unlinked = within("unlink", move || shmstream::unlink(&n));
    let lock_left = name::lock_path(&name).exists();
    remove(&planted);
    match unlinked {
        Err(Error::Untrusted {
            name: n,
            path,
            reason,
        }) => {
            assert_eq!((n, path), (name.clone(), payload.clone()), "{reason}");
            let rm = format!("rm -r {}", payload.display());
            assert!(
                reason.contains("directory") && reason.contains(&rm),
                "{reason}"
            );
            // Ours: we can remove it, so no one else is said to have to.
            assert!(!reason.contains("only"), "{reason}");
        }
        other => panic!("unlink gave {other:?}"),
    }
    assert!(!lock_left, "unlink left a lock file");
}

/// Review item, with a real second user: a name whose only part is another user's payload
/// (no `_meta`) is refused by `unlink` naming the file and its owner, and leaves no lock file.
#[test]
fn unlink_of_another_users_payload_names_its_owner_and_leaves_no_lock_file() {
    if let Some(role) = child_role() {
        assert_eq!(role, "unlink");
        let name: String = param("name");
        let unlinked = shmstream::unlink(&name);
        let untrusted = matches!(&unlinked, Err(Error::Untrusted { path, .. })
            if *path == shm(&name::segment_id(&name)));
        say(&format!("untrusted {untrusted}"));
        say(&format!("lock left {}", name::lock_path(&name).exists()));
        say(&unlinked.map_or_else(|e| e.to_string(), |()| "ok".into()));
        return;
    }
    if !is_root() {
        eprintln!("skipping: switching to another uid needs root");
        return;
    }
    let name = unique_name("theirpayload");
    let payload = shm(&name::segment_id(&name));
    std::fs::write(&payload, [0u8; 4]).unwrap(); // root's: the user cannot remove it
    let lock_dir = std::env::temp_dir().join(format!("shmstream-hostile-{OTHER_UID}"));
    let test = "unlink_of_another_users_payload_names_its_owner_and_leaves_no_lock_file";
    let lines = child(test, "unlink")
        .param("name", &name)
        .env("PYSHMEM_LOCK_DIR", &lock_dir)
        .run_as_user(OTHER_UID)
        .run(LONG);
    let _ = std::fs::remove_file(&payload);
    assert_eq!(
        lines[..2],
        ["untrusted true", "lock left false"],
        "{lines:?}"
    );
    // Who can remove it: not this user.
    assert!(
        lines[2].contains("owned by uid 0") && lines[2].contains("only root can remove it"),
        "{}",
        lines[2]
    );
}

/// Another user's stream at its default mode (0600): `open`, `stat` and `unlink` gave
/// `Error::Io` ("Permission denied") where `create` said `Untrusted`; all name the owner now.
#[test]
fn another_users_private_stream_is_refused_naming_its_owner() {
    if let Some(role) = child_role() {
        assert_eq!(role, "use");
        let name: String = param("name");
        let calls: [(&str, Result<(), Error>); 3] = [
            ("open", Stream::open(&name).map(|_| ())),
            ("stat", shmstream::stat(&name).map(|_| ())),
            ("unlink", shmstream::unlink(&name)),
        ];
        for (call, r) in calls {
            let untrusted = matches!(&r, Err(Error::Untrusted { .. }));
            let said = r.map_or_else(|e| e.to_string(), |()| "ok".into());
            say(&format!("{call} untrusted {untrusted}: {said}"));
        }
        return;
    }
    if !is_root() {
        eprintln!("skipping: switching to another uid needs root");
        return;
    }
    let name = unique_name("private");
    let _c = Cleanup::new([&name]);
    let s = Stream::create(&name, &[4], Dtype::U8).unwrap();
    let lock_dir = std::env::temp_dir().join(format!("shmstream-hostile-{OTHER_UID}"));
    let lines = child(
        "another_users_private_stream_is_refused_naming_its_owner",
        "use",
    )
    .param("name", &name)
    .env("PYSHMEM_LOCK_DIR", &lock_dir)
    .run_as_user(OTHER_UID)
    .run(LONG);
    assert_eq!(lines.len(), 3, "{lines:?}");
    for (line, call) in lines.iter().zip(["open", "stat", "unlink"]) {
        assert!(
            line.starts_with(&format!("{call} untrusted true: "))
                && line.contains("owned by uid 0")
                && line.contains("remove it (as its owner) or use another name"),
            "{line}"
        );
    }
    // Still ours, untouched.
    s.write_slice(&[3u8; 4]).unwrap();
    assert!(Stream::open(&name).is_ok());
}

/// This user's own stream whose file's mode was changed so the user may not open it: `open`,
/// `stat` and `unlink` gave a bare `Error::Io` ("Permission denied"). They are
/// `AccessDenied` naming the stream, the file, its mode and the remedy (`chmod 600`, or a
/// read-only open where only writing the payload is denied). Root ignores modes, so as
/// root (CI) the check runs in a child switched to another uid.
#[test]
fn our_own_stream_we_may_not_open_says_how_to_restore_access() {
    use std::os::unix::fs::PermissionsExt;
    // A `_meta` of mode 0000 is a failure of any purge of its user meanwhile.
    let _purging = purging();
    let check = |name: &str| {
        let s = StreamOptions::new(name)
            .shape(&[4])
            .dtype(Dtype::U8)
            .create()
            .unwrap();
        let meta = shm(&name::meta_id(name));
        let payload = shm(&name::segment_id(name));
        let chmod = |p: &PathBuf, m| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        // Dropped before the caller's `Cleanup`, a panicking check's too.
        let _readable = common::Readable(vec![meta.clone(), payload.clone()]);
        let mut said = Vec::new();
        // What an error says: whether it is `AccessDenied` of `path` (mode `mode`), naming
        // the stream, and its remedy.
        let denied = |r: Result<(), Error>, path: &PathBuf, mode: u32| match r {
            Err(e @ Error::AccessDenied { .. }) => {
                let text = e.to_string();
                let named = matches!(&e, Error::AccessDenied { name: n, path: p, mode: m, .. }
                    if n == name && p == path && *m == mode)
                    && text.starts_with(&format!("stream '{name}': "))
                    && text.contains(&format!("mode {mode:04o}"));
                let read_only = text.ends_with("or open the stream read-only");
                let chmod = text.contains(&format!("`chmod 600 {}`", path.display()));
                format!("named {named}, chmod {chmod}, read-only {read_only}")
            }
            other => format!("{other:?}"),
        };
        chmod(&meta, 0o000);
        said.push(denied(Stream::open(name).map(|_| ()), &meta, 0));
        said.push(denied(shmstream::stat(name).map(|_| ()), &meta, 0));
        said.push(denied(shmstream::unlink(name), &meta, 0));
        chmod(&meta, 0o600);
        chmod(&payload, 0o400);
        said.push(denied(Stream::open(name).map(|_| ()), &payload, 0o400));
        said.push(format!(
            "read-only open {}",
            Stream::open_readonly(name).is_ok()
        ));
        chmod(&payload, 0o000);
        said.push(denied(Stream::open_readonly(name).map(|_| ()), &payload, 0));
        chmod(&payload, 0o600);
        drop(s);
        shmstream::unlink(name).unwrap();
        said
    };
    let said = if child_role().as_deref() == Some("other_uid") {
        for line in check(&param::<String>("name")) {
            say(&line);
        }
        return;
    } else if is_root() {
        let name = unique_name("own-denied");
        let lock_dir = std::env::temp_dir().join(format!("shmstream-hostile-{OTHER_UID}"));
        /// Removes the child's files, should it fail before its unlink (root may).
        struct Remove(Vec<PathBuf>);
        impl Drop for Remove {
            fn drop(&mut self) {
                for p in &self.0 {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
        let _remove = Remove(vec![
            shm(&name::meta_id(&name)),
            shm(&name::segment_id(&name)),
        ]);
        child(
            "our_own_stream_we_may_not_open_says_how_to_restore_access",
            "other_uid",
        )
        .param("name", &name)
        .env("PYSHMEM_LOCK_DIR", &lock_dir)
        .run_as_user(OTHER_UID)
        .run(LONG)
    } else {
        let name = unique_name("own-denied");
        let _c = Cleanup::new([&name]);
        check(&name)
    };
    let denied = |read_only| format!("named true, chmod true, read-only {read_only}");
    let expected = [
        denied(false),
        denied(false),
        denied(false),
        denied(true),
        "read-only open true".to_owned(),
        denied(false),
    ];
    assert_eq!(said, expected);
}

/// A process out of file descriptors at the second open of a stream's history ring (the
/// header mapped, the slots not yet) said the ring was `InvalidHistory`, with the chmod
/// remedy. A child fills its descriptor table, then frees one at a time and opens the
/// stream each time: every failure is the I/O error of a process out of descriptors.
#[test]
fn a_ring_out_of_file_descriptors_is_no_history_problem() {
    let test = "a_ring_out_of_file_descriptors_is_no_history_problem";
    if child_role().as_deref() == Some("fdless") {
        let name = param::<String>("name");
        // A child process of its own: the lowered limit affects no other test.
        let mut fillers = common::fill_descriptors();
        let mut said = std::collections::BTreeSet::new();
        while let Some(f) = fillers.pop() {
            drop(f);
            match Stream::open_readonly(&name) {
                Ok(s) => {
                    said.insert(format!("opened, history {}", s.history_depth()));
                    break;
                }
                Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::EMFILE) => {
                    said.insert("out of descriptors".to_owned());
                }
                Err(e) => {
                    said.insert(format!("{e:?}"));
                }
            }
        }
        drop(fillers);
        for line in said {
            say(&line);
        }
        return;
    }
    let name = unique_name("ring-fdless");
    let _c = Cleanup::new([&name]);
    let _s = StreamOptions::new(&name)
        .shape(&[4])
        .dtype(Dtype::U8)
        .history(4)
        .create()
        .unwrap();
    let said = child(test, "fdless").param("name", &name).run(LONG);
    assert_eq!(said, ["opened, history 4", "out of descriptors"]);
}

/// Defect 4: `open` and `stat` racing a creator that makes and unlinks the stream in a loop
/// see either the stream or `NotFound`, never a corrupt header or a short payload. Rust
/// creators publish complete segments; pyshmem's (when available) sizes `_meta` after
/// creating it, so the empty-`_meta` window is real there.
#[test]
fn open_racing_create_and_unlink_sees_the_stream_or_not_found() {
    if let Some(role) = child_role() {
        assert_eq!(role, "loop");
        let name: String = param("name");
        let n: usize = param("n");
        for _ in 0..n {
            let s = Stream::create(&name, &[4], Dtype::U8).unwrap();
            drop(s);
            shmstream::unlink(&name).unwrap();
        }
        say("looped");
        return;
    }
    let name = unique_name("race");
    let python = common::python();
    let py_name = unique_name("race-py");
    // Declared before the creators, so it drops after them: a creator still running when the
    // test fails is killed (and reaped) before its names are unlinked.
    let _c = Cleanup::new([&name, &py_name]);
    let mut creators = vec![(
        name.clone(),
        child(
            "open_racing_create_and_unlink_sees_the_stream_or_not_found",
            "loop",
        )
        .param("name", &name)
        .param("n", 1500)
        .spawn(),
    )];
    if let Some(py) = &python {
        creators.push((
            py_name.clone(),
            common::Proc::spawn(common::py_command(
                py,
                "peer.py",
                &["create_unlink_loop", &py_name, "1500"],
            )),
        ));
    }
    // Opens and stats race each creator until it has made and unlinked its stream all its
    // times (a creator that fails ends the test with its output).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut opened = vec![0usize; creators.len()];
    let mut missing = 0usize;
    let mut done = vec![false; creators.len()];
    while !done.iter().all(|d| *d) {
        for ((n, c), d) in creators.iter_mut().zip(done.iter_mut()) {
            if !*d {
                match c.line_within(Duration::ZERO) {
                    Some(l) => {
                        assert_eq!(l, "looped", "creator of {n}");
                        *d = true;
                    }
                    None if c.try_status().is_some_and(|st| !st.success()) => {
                        c.wait_success(LONG); // fails, showing the creator's output
                    }
                    None => {}
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "the creators did not finish within 60 s (done: {done:?})"
        );
        for ((n, _), opened) in creators.iter().zip(opened.iter_mut()) {
            for r in [
                Stream::open_readonly(n).map(|_| ()),
                shmstream::stat(n).map(|_| ()),
            ] {
                match r {
                    Ok(()) => *opened += 1,
                    Err(Error::NotFound { .. }) => missing += 1,
                    Err(e) => panic!("open/stat of {n} racing create gave {e:?}"),
                }
            }
        }
    }
    for (_, c) in &mut creators {
        c.wait_success(LONG);
    }
    eprintln!("racing opens: {opened:?} found, {missing} not found");
    for ((n, _), opened) in creators.iter().zip(&opened) {
        assert!(
            *opened > 0,
            "never saw {n} while its creator was recreating it"
        );
    }
}

/// How a reader waits for a frame that never comes.
#[derive(Debug, Clone, Copy)]
enum Wait {
    ReadNew(Option<Duration>),
    ReadAfter(Option<Duration>),
    Count(Option<Duration>),
}

/// Each wait the row names, with a timeout (20 s, far past the bound) and without.
const WAITS: [Wait; 5] = [
    Wait::ReadNew(Some(Duration::from_secs(20))),
    Wait::ReadNew(None),
    Wait::ReadAfter(Some(Duration::from_secs(20))),
    Wait::Count(Some(Duration::from_secs(20))),
    Wait::Count(None),
];

fn wait_sees_unlink(notify: bool, wait: Wait, unlink: impl FnOnce(&str)) {
    let name = unique_name(if notify { "unl-n" } else { "unl-p" });
    let _c = Cleanup::new([&name]);
    let w = StreamOptions::new(&name)
        .shape(&[4])
        .dtype(Dtype::U8)
        .notify(notify)
        .create()
        .unwrap();
    w.write_slice(&[1u8; 4]).unwrap();
    let r = Stream::open_readonly(&name).unwrap();
    r.read::<u8>().unwrap();
    let seen = r.count();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (end_tx, end_rx) = std::sync::mpsc::channel();
    // Detached: a wait without timeout that never ends fails the test below instead of
    // hanging it.
    std::thread::spawn(move || {
        tid_tx.send(common::gettid()).unwrap();
        let res = match wait {
            Wait::ReadNew(t) => r.read_new::<u8>(t).map(drop),
            Wait::ReadAfter(t) => r.read_after::<u8>(seen, t).map(drop),
            Wait::Count(t) => r.wait_for_count(seen, t).map(drop),
        };
        let _ = end_tx.send((res, Instant::now()));
    });
    let tid = tid_rx.recv().unwrap();
    // The unlink lands while the reader waits, not before its wait began.
    common::wait_parked_on_stream(std::process::id(), tid as u32, &name, notify);
    unlink(&name);
    let unlinked = Instant::now();
    let (res, returned) = end_rx
        .recv_timeout(LONG)
        .unwrap_or_else(|e| panic!("notify={notify} {wait:?}: the wait did not end ({e})"));
    // From the end of the unlink (a Python peer takes a while to start) to the waiter's return.
    let took = returned.saturating_duration_since(unlinked);
    assert!(
        matches!(res, Err(Error::Stale { .. })),
        "notify={notify} {wait:?}: {res:?}"
    );
    assert!(
        took < Duration::from_secs(2),
        "notify={notify} {wait:?}: the waiter saw the unlink {took:?} after it"
    );
    std::mem::forget(w); // its segments are gone; dropping would try to unlink again
}

/// Defect 5: a reader waiting for a new frame (`read_new`, `read_after`, `wait_for_count`,
/// with a timeout or without) notices an unlink that leaves the header valid (pyshmem's: it
/// only removes the objects), well before its 20 s timeout.
#[test]
fn a_waiting_reader_notices_an_unlink_that_leaves_the_header_valid() {
    for notify in [true, false] {
        for wait in WAITS {
            wait_sees_unlink(notify, wait, |name| {
                for id in [name::segment_id(name), name::meta_id(name)] {
                    std::fs::remove_file(shm(&id)).unwrap();
                }
            });
        }
    }
    let Some(py) = common::python() else { return };
    for notify in [true, false] {
        for wait in [WAITS[0], WAITS[4]] {
            wait_sees_unlink(notify, wait, |name| {
                common::run_py(&py, "peer.py", &["unlink", name], LONG);
            });
        }
    }
}

/// Makes this process die (SIGSYS, as a kill) at its first rename or hard link: a creator
/// then dies with every object built under its private ids and none published, the state
/// before the renames. Only this thread is filtered (the creator's). On the architectures
/// whose system call numbers it knows ([`DIES_AT_RENAME`]).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn die_at_first_rename() {
    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xC000_003E;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xC000_00B7;
    #[cfg(target_arch = "x86_64")]
    let nrs = [
        libc::SYS_renameat2,
        libc::SYS_renameat,
        libc::SYS_linkat,
        libc::SYS_rename,
        libc::SYS_link,
    ];
    #[cfg(target_arch = "aarch64")]
    let nrs = [libc::SYS_renameat2, libc::SYS_renameat, libc::SYS_linkat];
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `no_core` is a valid rlimit that outlives the call.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) }, 0);
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: u32, jt: usize, jf: usize| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt: jt as u8,
        jf: jf as u8,
        k,
    };
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let k = nrs.len();
    // seccomp_data: nr at offset 0, arch at offset 4. Another arch: allowed; one of `nrs`:
    // killed; anything else: allowed.
    let mut prog = vec![stmt(load, 4), jeq(AUDIT_ARCH, 0, k + 1), stmt(load, 0)];
    prog.extend(
        nrs.iter()
            .enumerate()
            .map(|(i, &nr)| jeq(nr as u32, k - i, 0)),
    );
    prog.push(stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW));
    prog.push(stmt(
        libc::BPF_RET | libc::BPF_K,
        libc::SECCOMP_RET_KILL_PROCESS,
    ));
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // No new privileges: required to install a filter without CAP_SYS_ADMIN.
    // SAFETY: plain integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    // SAFETY: `fprog` points at `prog`, a valid filter program, both alive for the call (the
    // kernel copies it).
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &fprog as *const libc::sock_fprog,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn die_at_first_rename() {
    unreachable!("no seccomp filter for this architecture");
}

/// Whether [`die_at_first_rename`] works here.
const DIES_AT_RENAME: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

/// Where a creator of the test below dies.
#[derive(Debug, Clone, Copy)]
enum CreatorDeath {
    /// At its first rename (deterministic: the state before the renames).
    AtFirstRename,
    /// SIGKILL this many ms after its first object appeared (a random point).
    KilledAfterMs(u64),
}

/// Defect 6: a creator killed at any point of `create` (here, a 256 MiB stream) leaves
/// nothing visible or a complete stream; `purge` removes what is left; the name can then
/// be created again. A creator dead before the renames (one made to die at its first rename,
/// and any random kill that landed there) leaves only its private objects, which `open`,
/// `stat` and `list` do not see and which do not keep `create` from the name.
#[test]
fn a_creator_killed_mid_create_leaves_nothing_purge_cannot_clean() {
    let _purging = purging();
    if let Some(role) = child_role() {
        if role == "create_big_until_rename" {
            die_at_first_rename();
        } else {
            assert_eq!(role, "create_big");
        }
        let name: String = param("name");
        let s = Stream::create(&name, &[256 << 20], Dtype::U8).unwrap();
        std::mem::forget(s);
        say("created");
        common::block_on_stdin();
        return;
    }
    let test = "a_creator_killed_mid_create_leaves_nothing_purge_cannot_clean";
    let deaths: Vec<CreatorDeath> = [
        CreatorDeath::AtFirstRename,
        CreatorDeath::KilledAfterMs(0),
        CreatorDeath::KilledAfterMs(0),
        CreatorDeath::KilledAfterMs(3),
        CreatorDeath::KilledAfterMs(10),
        CreatorDeath::KilledAfterMs(30),
    ]
    .into_iter()
    .filter(|d| DIES_AT_RENAME || !matches!(d, CreatorDeath::AtFirstRename))
    .collect();
    let mut before_renames = 0;
    for (trial, &death) in deaths.iter().enumerate() {
        let name = unique_name(&format!("killed{trial}"));
        let _c = Cleanup::new([&name]);
        let id = name::segment_id(&name);
        let role = match death {
            CreatorDeath::AtFirstRename => "create_big_until_rename",
            CreatorDeath::KilledAfterMs(_) => "create_big",
        };
        let mut p = child(test, role).param("name", &name).spawn();
        let pid = p.pid();
        match death {
            CreatorDeath::AtFirstRename => {
                use std::os::unix::process::ExitStatusExt;
                let st = p.wait_timeout(LONG);
                assert_eq!(
                    st.signal(),
                    Some(libc::SIGSYS),
                    "trial {trial}: the creator did not die at its rename: {st}\n{}",
                    p.diagnostics()
                );
            }
            CreatorDeath::KilledAfterMs(extra_ms) => {
                let building = format!("{id}.creating-{pid}");
                common::eventually(
                    LONG,
                    || "the creator never started building".into(),
                    || {
                        (shm(&building).exists() || p.line_within(Duration::ZERO).is_some())
                            .then_some(())
                            .or_else(common::yield_now)
                    },
                );
                std::thread::sleep(Duration::from_millis(extra_ms)); // a random kill point, not sync
                p.kill();
            }
        }
        let left = entries_of(&id);
        let unpublished = !left.is_empty() && left.iter().all(|e| e.contains(".creating-"));
        if let CreatorDeath::AtFirstRename = death {
            let mut built = left.clone();
            built.sort();
            let mut expected = vec![
                format!("{id}.creating-{pid}"),
                format!("{}.creating-{pid}", name::meta_id(&name)),
            ];
            expected.sort();
            assert_eq!(
                built, expected,
                "trial {trial}: not the state before the renames"
            );
        }
        let stat = shmstream::stat(&name);
        let listed = shmstream::list_streams().unwrap().contains(&name);
        assert_eq!(
            stat.is_ok(),
            listed,
            "trial {trial}: stat {stat:?} vs list {listed}"
        );
        if unpublished {
            // Invisible to `open`, `stat` and `list`, and no obstacle to `create`.
            before_renames += 1;
            assert!(
                matches!(stat, Err(Error::NotFound { .. })),
                "trial {trial} ({left:?}): stat {stat:?}"
            );
            for opened in [Stream::open(&name), Stream::open_readonly(&name)] {
                assert!(
                    matches!(opened, Err(Error::NotFound { .. })),
                    "trial {trial} ({left:?}): open {opened:?}"
                );
            }
            let made = Stream::create(&name, &[4], Dtype::U8).map(drop);
            assert!(made.is_ok(), "trial {trial} ({left:?}): create {made:?}");
            shmstream::unlink(&name).unwrap();
        }
        let report = purge_only(&name);
        assert!(
            report.failed.is_empty(),
            "trial {trial}: {:?}",
            report.failed
        );
        assert!(
            entries_of(&id).is_empty(),
            "trial {trial}: left {:?}",
            entries_of(&id)
        );
        assert!(
            !name::lock_path(&name).exists(),
            "trial {trial}: the killed creator's lock file is left"
        );
        let again = Stream::create(&name, &[4], Dtype::U8);
        assert!(again.is_ok(), "trial {trial}: {again:?}");
    }
    eprintln!(
        "{before_renames} of {} creators died before their renames",
        deaths.len()
    );
    // The creator made to die at its rename is one at least (a random kill may land anywhere).
    assert!(before_renames >= usize::from(DIES_AT_RENAME));
}

/// The state a creator killed between publishing `_meta` and the payload leaves (a
/// microseconds-wide window the random kills above rarely hit), made by hand: a valid header
/// and history ring without payload. `list` shows the stream as `stat` does, `purge`
/// removes all of it, and the name can be created again.
#[test]
fn a_header_left_without_its_payload_is_listed_and_purged() {
    let _purging = purging();
    let name = unique_name("nopayload");
    let _c = Cleanup::new([&name]);
    let id = name::segment_id(&name);
    drop(
        shmstream::StreamOptions::new(&name)
            .shape(&[4])
            .dtype(Dtype::U8)
            .history(4)
            .create()
            .unwrap(),
    );
    std::fs::remove_file(shm(&id)).unwrap();
    assert!(shmstream::stat(&name).is_ok());
    assert!(
        shmstream::list_streams().unwrap().contains(&name),
        "a header without payload is not listed"
    );
    let report = purge_only(&name);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.names(), [name.as_str()]);
    assert!(entries_of(&id).is_empty(), "left {:?}", entries_of(&id));
    let again = Stream::create(&name, &[4], Dtype::U8);
    assert!(again.is_ok(), "{again:?}");
}

/// Defect 7: `unlink` of a missing name and a failed `create` leave no lock file behind.
#[test]
fn failed_calls_leave_no_lock_files() {
    let _purging = purging();
    let missing = unique_name("nolock");
    assert!(matches!(
        shmstream::unlink(&missing),
        Err(Error::NotFound { .. })
    ));
    assert!(
        !name::lock_path(&missing).exists(),
        "unlink of a missing name left a lock file"
    );
    let huge = unique_name("nolock-huge");
    let made = Stream::create(&huge, &[1 << 50], Dtype::U8);
    assert!(made.is_err(), "a 1 PiB stream was created");
    assert!(
        !name::lock_path(&huge).exists(),
        "a failed create left a lock file"
    );
    assert!(entries_of(&name::segment_id(&huge)).is_empty());
    if is_root() {
        let squatted = unique_name("nolock-squat");
        let payload = shm(&name::segment_id(&squatted));
        std::fs::write(&payload, [0u8; 4]).unwrap();
        std::os::unix::fs::chown(&payload, Some(OTHER_UID), None).unwrap();
        let made = Stream::create(&squatted, &[4], Dtype::U8).map(|_| ());
        let _ = std::fs::remove_file(&payload);
        assert!(matches!(made, Err(Error::Untrusted { .. })), "{made:?}");
        assert!(
            !name::lock_path(&squatted).exists(),
            "a refused create left a lock file"
        );
    }
}

/// Defect 8: `purge` removes lock files no stream owns (pyshmem leaves one for every stream
/// it unlinks; a process killed between making one and its cleanup leaves one), each under
/// its lock. A lock file somebody holds (here a child process's flock, as during a creation),
/// a live stream's, and anything that is not a `ps_….lock` file of ours stay. The body runs
/// in a child with a lock directory of its own, which no other test's purge sweeps.
#[test]
fn purge_sweeps_lock_files_of_no_stream_and_leaves_held_ones() {
    let test = "purge_sweeps_lock_files_of_no_stream_and_leaves_held_ones";
    match child_role().as_deref() {
        None => {
            let _purging = purging();
            let dir = std::env::temp_dir().join(format!("shmstream-sweep-{}", std::process::id()));
            child(test, "body").env("PYSHMEM_LOCK_DIR", &dir).run(LONG);
            std::fs::remove_dir_all(&dir).unwrap();
        }
        Some("body") => sweep_lock_files(test),
        Some(role) => hold_lock(role),
    }
}

/// Child role `hold_lock`: holds the flock of the file at parameter `path` (as a creation
/// under way does) until the parent writes to stdin or dies.
fn hold_lock(role: &str) {
    use std::os::fd::AsRawFd;
    assert_eq!(role, "hold_lock");
    let f = std::fs::File::create(param::<String>("path")).unwrap();
    // SAFETY: flock on a descriptor this process owns, open for the call.
    assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
    say("held");
    common::block_on_stdin();
}

fn sweep_lock_files(test: &str) {
    let [orphan, held, live, linked] =
        ["orphan", "held", "live", "linked"].map(|t| unique_name(&format!("lockfile-{t}")));
    let _c = Cleanup::new([&orphan, &held, &live, &linked]);
    let _live = Stream::create(&live, &[4], Dtype::U8).unwrap();
    let lock = |n: &str| name::lock_path(n);
    assert!(lock(&live).exists(), "the live stream has no lock file");
    std::fs::write(lock(&orphan), b"").unwrap();
    let mut holder = child(test, "hold_lock")
        .param("path", lock(&held).display())
        .spawn();
    holder.expect_line("held", LONG);
    // Look-alikes: another suffix, and a symlink named as a lock file.
    let notes = lock(&orphan).with_extension("notes");
    std::fs::write(&notes, b"not a lock file").unwrap();
    std::os::unix::fs::symlink(&notes, lock(&linked)).unwrap();

    // A dry run takes no lock: it lists the held file too.
    let mut would = purge_no_stream(true).lock_files;
    would.sort();
    let mut no_stream = vec![lock(&orphan), lock(&held)];
    no_stream.sort();
    assert_eq!(would, no_stream);
    assert!(lock(&orphan).exists(), "a dry run removed a lock file");
    let report = purge_no_stream(false);
    assert_eq!(report.lock_files, [lock(&orphan)], "{report:?}");
    assert!(!lock(&orphan).exists(), "the orphan lock file is left");
    for kept in [lock(&held), lock(&live), lock(&linked), notes.clone()] {
        assert!(
            std::fs::symlink_metadata(&kept).is_ok(),
            "{} is gone",
            kept.display()
        );
    }
    // Once the holder is gone, nothing owns its lock file.
    holder.kill();
    assert_eq!(purge_no_stream(false).lock_files, [lock(&held)]);
    assert!(!lock(&held).exists());
    std::fs::remove_file(lock(&linked)).unwrap();
    std::fs::remove_file(&notes).unwrap();

    // pyshmem keeps the lock files of the streams it unlinks.
    let Some(py) = common::python() else { return };
    let by_python = unique_name("lockfile-pyshmem");
    let _c = Cleanup::new([&by_python]);
    common::run_py(
        &py,
        "peer.py",
        &["create_unlink_loop", &by_python, "1"],
        LONG,
    );
    assert!(
        lock(&by_python).exists(),
        "pyshmem removed its lock file (this test's premise)"
    );
    assert_eq!(purge_no_stream(false).lock_files, [lock(&by_python)]);
    assert!(!lock(&by_python).exists());
}

/// Defect 9: a stream larger than `/dev/shm` is refused at `create` with `Error::NoSpace`
/// naming the stream, the room and the remedy (it used to be created sparse, and its first
/// write would have died of `SIGBUS`), and leaves nothing behind.
#[test]
fn a_stream_larger_than_dev_shm_is_refused_up_front() {
    let _purging = purging();
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a NUL-terminated path and room for one statvfs.
    let rc = unsafe { libc::statvfs(c"/dev/shm".as_ptr(), st.as_mut_ptr()) };
    assert_eq!(rc, 0, "statvfs /dev/shm");
    // SAFETY: the call above filled it.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    let total = st.f_blocks as u64 * st.f_frsize as u64;
    if total == 0 {
        eprintln!("skipping: /dev/shm has no size limit");
        return;
    }
    let name = unique_name("nospace");
    let _c = Cleanup::new([&name]);
    let too_big = total as usize + (1 << 20);
    let n = name.clone();
    let made = within("create", move || {
        Stream::create(&n, &[too_big], Dtype::U8).map(drop)
    });
    // SAFETY: sysconf reads a constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    match &made {
        // A memory cgroup limit below /dev/shm's size (a container) refuses first.
        Err(
            e @ Error::NoSpace {
                name: n,
                needed,
                available,
                shortage:
                    shortage @ (shmstream::Shortage::Bytes | shmstream::Shortage::Cgroup { .. }),
            },
        ) => {
            assert_eq!(n, &name);
            // The whole stream: its payload and its `_meta` (the header and name), each in
            // whole pages as tmpfs stores them.
            assert_eq!(
                *needed,
                too_big.div_ceil(page) as u64 * page as u64 + page as u64
            );
            let text = e.to_string();
            // Either way, `available` is the room in /dev/shm.
            assert!(available.is_some_and(|a| a <= total), "{available:?}");
            if let shmstream::Shortage::Cgroup {
                limit, left, swap, ..
            } = shortage
            {
                assert!(
                    left <= limit && left + swap < *needed,
                    "{left} {limit} {swap}"
                );
                assert!(
                    text.contains(&format!(
                        "{left} bytes left under its limit of {limit} bytes"
                    )) && text.contains("raise the container's memory limit"),
                    "{e}"
                );
            } else {
                assert!(text.contains("shmstream purge"), "{e}");
            }
        }
        other => panic!("a stream larger than /dev/shm ({total} bytes): {other:?}"),
    }
    assert!(entries_of(&name::segment_id(&name)).is_empty());
    assert!(!name::lock_path(&name).exists());
}

/// Defect 10: `purge` removes the parts of no stream: the history ring of a stream that
/// pyshmem unlinked (pyshmem removes the payload, `_meta` and `_gpu` only; the ring held
/// shared memory until reboot) and the `_gpu` segment of a GPU creator killed before it
/// published its header (planted here). A live stream's ring and a part whose name's lock is
/// held (a creation under way) stay.
#[test]
fn purge_removes_parts_of_no_stream_and_spares_held_ones() {
    let test = "purge_removes_parts_of_no_stream_and_spares_held_ones";
    if let Some(role) = child_role() {
        return hold_lock(&role);
    }
    let _purging = purging();
    let [ringed, crashed, live, held] =
        ["ringed", "crashed", "live", "held"].map(|t| unique_name(&format!("parts-{t}")));
    let _c = Cleanup::new([&ringed, &crashed, &live, &held]);
    let with_ring = |n: &str| {
        StreamOptions::new(n)
            .shape(&[4])
            .dtype(Dtype::U8)
            .history(2)
            .create()
            .unwrap()
    };
    let live_stream = with_ring(&live);
    drop(with_ring(&ringed));
    match common::python() {
        Some(py) => drop(common::run_py(&py, "peer.py", &["unlink", &ringed], LONG)),
        // pyshmem's unlink, by hand.
        None => {
            for id in [name::segment_id(&ringed), name::meta_id(&ringed)] {
                std::fs::remove_file(shm(&id)).unwrap();
            }
        }
    }
    let ring = name::history_id(&ringed);
    assert!(
        shm(&ring).exists(),
        "pyshmem's unlink removed our ring (the premise)"
    );
    let gpu = name::gpu_id(&crashed);
    std::fs::write(shm(&gpu), [0u8; 256]).unwrap();
    let held_gpu = name::gpu_id(&held);
    std::fs::write(shm(&held_gpu), [0u8; 256]).unwrap();
    // A creation whose pid looks dead (above pid_max) but whose name's lock is held: a live
    // creator holds it for its whole build (its pid may be one this namespace cannot see).
    let held_building = format!("{}.creating-{}", name::segment_id(&held), 0x3fff_ffff);
    std::fs::write(shm(&held_building), [0u8; 64]).unwrap();
    let mut holder = child(test, "hold_lock")
        .param("path", name::lock_path(&held).display())
        .spawn();
    holder.expect_line("held", LONG);

    let would = purge_no_stream(true);
    for part in [&ring, &gpu, &held_gpu] {
        assert!(would.leftovers.contains(part), "{part}: {would:?}");
        assert!(shm(part).exists(), "a dry run removed {part}");
    }
    let report = purge_no_stream(false);
    assert!(report.failed.is_empty(), "{report:?}");
    for part in [&ring, &gpu] {
        assert!(report.leftovers.contains(part), "{part}: {report:?}");
        assert!(!shm(part).exists(), "{part} is left");
    }
    assert!(!report.leftovers.contains(&held_gpu), "{report:?}");
    assert!(
        shm(&held_gpu).exists(),
        "a part whose lock is held was removed"
    );
    assert!(!report.abandoned.contains(&held_building), "{report:?}");
    assert!(
        shm(&held_building).exists(),
        "a creation whose name's lock is held was removed"
    );
    assert!(
        shm(&name::history_id(&live)).exists() && live_stream.cursor().is_ok(),
        "a live stream's ring was removed"
    );
    // The creation holding the lock dies without finishing: its part goes next time.
    holder.kill();
    let report = purge_no_stream(false);
    assert!(report.leftovers.contains(&held_gpu), "{report:?}");
    assert!(report.abandoned.contains(&held_building), "{report:?}");
    assert!(!shm(&held_gpu).exists() && !shm(&held_building).exists());
}

/// A stream of ours with a ring, unlinked as pyshmem unlinks (by pyshmem when there is one,
/// else by hand): its payload and `_meta` go, its ring stays. Returns the ring's id.
fn ringed_then_unlinked_by_pyshmem(name: &str) -> String {
    drop(
        StreamOptions::new(name)
            .shape(&[4])
            .dtype(Dtype::U8)
            .history(2)
            .create()
            .unwrap(),
    );
    match common::python() {
        Some(py) => drop(common::run_py(&py, "peer.py", &["unlink", name], LONG)),
        None => {
            for id in [name::segment_id(name), name::meta_id(name)] {
                std::fs::remove_file(shm(&id)).unwrap();
            }
        }
    }
    let ring = name::history_id(name);
    assert!(
        shm(&ring).exists(),
        "pyshmem's unlink removed our ring (the premise)"
    );
    ring
}

/// Review item 1: the ring an earlier generation left (pyshmem's unlink) beside a stream
/// created again under the name without history is removed by the default purge; the new
/// stream stays. The new generation is made by `create`, the old ring put back after it
/// (as pyshmem's create, which never touches the ring, leaves it).
#[test]
fn purge_removes_an_earlier_generations_ring_beside_a_new_stream() {
    let _purging = purging();
    let name = unique_name("oldring");
    let _c = Cleanup::new([&name]);
    let ring = ringed_then_unlinked_by_pyshmem(&name);
    let aside = shm(&format!("{ring}.aside"));
    std::fs::rename(shm(&ring), &aside).unwrap();
    let made = Stream::create(&name, &[4], Dtype::U8);
    std::fs::rename(&aside, shm(&ring)).unwrap();
    let new = made.unwrap();
    new.write_slice(&[7u8; 4]).unwrap();

    let would = purge_no_stream(true);
    assert!(would.leftovers.contains(&ring), "{would:?}");
    assert!(shm(&ring).exists(), "a dry run removed the ring");
    let report = purge_no_stream(false);
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(report.leftovers.contains(&ring), "{report:?}");
    assert!(
        !shm(&ring).exists(),
        "the earlier generation's ring is left"
    );
    let opened = Stream::open_readonly(&name).unwrap();
    assert_eq!(opened.instance_id(), new.instance_id());
    let mut got = [0u8; 4];
    opened.read_into_slice(&mut got).unwrap();
    assert_eq!(got, [7u8; 4]);
}

/// Purge tells an earlier generation's ring from a live stream's own by the ring's header
/// alone: it mapped the whole ring (up to 64 GiB) on every run, dry runs included, faulting
/// in every page. The ring planted here names the stream's generation and declares 2^18
/// slots over a sparse file: every purge keeps it, and it stays sparse.
#[test]
fn purge_maps_only_the_header_of_a_ring_beside_a_live_stream() {
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    let _purging = purging();
    let name = unique_name("bigring");
    let _c = Cleanup::new([&name]);
    let s = Stream::create(&name, &[4], Dtype::U8).unwrap();
    let hex = s.instance_id();
    let capacity = 1u32 << 18;
    let mut header = b"SHMHIST1".to_vec();
    header.extend(1u32.to_le_bytes());
    header.extend(capacity.to_le_bytes());
    header.extend(4u64.to_le_bytes());
    header.extend((0..16).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()));
    header.resize(64, 0);
    let ring = name::history_id(&name);
    let mut file = std::fs::File::create(shm(&ring)).unwrap();
    file.write_all(&header).unwrap();
    // 64 bytes of header and slots of 64 + 64 bytes (frames of 4 bytes): 32 MiB.
    file.set_len(64 + u64::from(capacity) * 128).unwrap();
    let resident = || shm(&ring).metadata().unwrap().blocks() * 512;
    for dry_run in [true, false] {
        let report = purge_no_stream(dry_run);
        assert!(report.failed.is_empty(), "{report:?}");
        assert!(!report.leftovers.contains(&ring), "{report:?}");
        assert!(shm(&ring).exists(), "the stream's own ring was removed");
        assert!(
            resident() < 1 << 20,
            "purge (dry run {dry_run}) faulted in {} bytes of the ring",
            resident()
        );
    }
}

/// Review item 1: `create` without history removes the ring an earlier generation left
/// (it cannot be the new generation's), as `create` with history replaces it.
#[test]
fn create_without_history_removes_an_earlier_generations_ring() {
    let _purging = purging();
    let name = unique_name("ringless");
    let _c = Cleanup::new([&name]);
    let ring = ringed_then_unlinked_by_pyshmem(&name);
    let s = Stream::create(&name, &[4], Dtype::U8).unwrap();
    assert!(
        !shm(&ring).exists(),
        "the earlier generation's ring is left"
    );
    assert_eq!(s.history_depth(), 0);
}

/// The `_gpu` a GPU creator killed before it published its header leaves (planted here) is no
/// part of a CPU stream made later under the name: `create` removes it, and the default purge
/// removes one put back beside the CPU stream (as a pyshmem create, which never touches it,
/// would leave it); the stream stays, its data intact.
#[test]
fn an_earlier_generations_gpu_record_goes_beside_a_cpu_stream() {
    let _purging = purging();
    let name = unique_name("oldgpu");
    let _c = Cleanup::new([&name]);
    let gpu = name::gpu_id(&name);
    std::fs::write(shm(&gpu), [0u8; 256]).unwrap();
    let s = Stream::create(&name, &[4], Dtype::U8).unwrap();
    assert!(
        !shm(&gpu).exists(),
        "create left an earlier generation's `_gpu`"
    );
    s.write_slice(&[7u8; 4]).unwrap();
    std::fs::write(shm(&gpu), [0u8; 256]).unwrap();

    let would = purge_no_stream(true);
    assert!(would.leftovers.contains(&gpu), "{would:?}");
    assert!(shm(&gpu).exists(), "a dry run removed the `_gpu`");
    let report = purge_no_stream(false);
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(report.leftovers.contains(&gpu), "{report:?}");
    assert!(
        !shm(&gpu).exists(),
        "the `_gpu` beside a CPU stream is left"
    );
    let opened = Stream::open_readonly(&name).unwrap();
    assert_eq!(opened.instance_id(), s.instance_id());
    let mut got = [0u8; 4];
    opened.read_into_slice(&mut got).unwrap();
    assert_eq!(got, [7u8; 4]);
}

/// A purged stream is reported as it was, its history depth included (it was read after
/// the unlink had removed the ring: 0).
#[test]
fn a_purged_stream_is_reported_with_its_history() {
    let _purging = purging();
    let name = unique_name("purgedring");
    let _c = Cleanup::new([&name]);
    drop(
        StreamOptions::new(&name)
            .shape(&[4])
            .dtype(Dtype::U8)
            .history(3)
            .create()
            .unwrap(),
    );
    let report = purge_only(&name);
    assert_eq!(report.names(), std::slice::from_ref(&name), "{report:?}");
    assert_eq!(report.removed[0].history, 3, "{report:?}");
}

/// A creation of a live pid whose name's lock is free is spared: its creator may hold the
/// lock in another lock directory (`PYSHMEM_LOCK_DIR`, a private `$TMPDIR`), which this
/// purge does not see. (Here the pid is this test's own.)
#[test]
fn a_creation_of_a_live_pid_is_spared_whatever_its_lock() {
    let _purging = purging();
    let name = unique_name("livepid");
    let _c = Cleanup::new([&name]);
    let building = format!(
        "{}.creating-{}",
        name::segment_id(&name),
        std::process::id()
    );
    std::fs::write(shm(&building), [0u8; 64]).unwrap();
    for dry_run in [true, false] {
        let report = purge_no_stream(dry_run);
        assert!(!report.abandoned.contains(&building), "{report:?}");
        assert!(
            shm(&building).exists(),
            "a live creator's build was removed"
        );
    }
    std::fs::remove_file(shm(&building)).unwrap();
}

/// A lock directory purge cannot list (`PYSHMEM_LOCK_DIR` naming a file; another user's
/// 0700 directory) is one failure naming it ([`Error::LockDir`]), and the purge goes on:
/// the streams it removes are still reported. The listing's error was the whole purge's,
/// for "stream '*'". Dry runs in children, with the variable set there.
#[test]
fn purge_reports_a_lock_directory_it_cannot_list_and_goes_on() {
    use std::os::unix::fs::PermissionsExt;
    let test = "purge_reports_a_lock_directory_it_cannot_list_and_goes_on";
    if let Some(role) = child_role() {
        assert_eq!(role, "purge");
        let prefix: String = param("prefix");
        let opts = PurgeOptions {
            all: true,
            dry_run: true,
        };
        match shmstream::purge_matching(opts, |n| n.starts_with(&prefix)) {
            Err(e) => say(&format!("error {e}")),
            Ok(report) => {
                say(&format!("removed {}", report.names().join(",")));
                for f in &report.failed {
                    let why = match &f.error {
                        Error::LockDir { path, reason, .. } => format!("{path:?} {reason}"),
                        e => format!("{e:?}"),
                    };
                    say(&format!("failed {} {:?} {why}", f.item.kind(), f.item));
                    say(&format!("shown {f}"));
                    say(&format!("shown {}", f.error));
                }
            }
        }
        return;
    }
    let base = std::env::temp_dir().join(format!("shmstream-unlisted-{}", std::process::id()));
    std::fs::create_dir_all(&base).unwrap();
    let check = |dir: &PathBuf, reason: &str, lines: &[String]| {
        assert!(
            lines.iter().all(|l| !l.contains("stream '*'")),
            "{lines:#?}"
        );
        let failed: Vec<_> = lines
            .iter()
            .filter(|l| l.starts_with("failed directory"))
            .collect();
        let item = shmstream::PurgeItem::Directory(dir.clone());
        assert_eq!(
            failed,
            [&format!("failed directory {item:?} {dir:?} {reason}")],
            "{lines:#?}"
        );
        let shown = format!(
            "shown the directory {} could not be listed: ",
            dir.display()
        );
        assert!(lines.iter().any(|l| l.starts_with(&shown)), "{lines:#?}");
    };

    let prefix = unique_name("unlisted");
    let name = format!("{prefix}-a");
    let _c = Cleanup::new([&name]);
    let _s = Stream::create(&name, &[4], Dtype::U8).unwrap();
    let file = base.join("file");
    std::fs::write(&file, b"").unwrap();
    let lines = child(test, "purge")
        .param("prefix", &prefix)
        .env("PYSHMEM_LOCK_DIR", &file)
        .run(LONG);
    assert_eq!(lines[0], format!("removed {name}"), "{lines:#?}");
    check(&file, "it is not a directory", &lines);

    if !is_root() {
        eprintln!("skipping another user's lock directory: switching uids needs root");
    } else {
        let private = base.join("private");
        std::fs::create_dir(&private).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
        let lines = child(test, "purge")
            .param("prefix", &prefix)
            .env("PYSHMEM_LOCK_DIR", &private)
            .run_as_user(OTHER_UID)
            .run(LONG);
        // Root's stream is not this user's to see.
        assert_eq!(lines[0], "removed", "{lines:#?}");
        check(&private, "it is owned by another user", &lines);
    }
    std::fs::remove_dir_all(&base).unwrap();
}
