//! The public API, in one process (plus one short-lived child for `producer_alive`/purge):
//! lifecycle, catalog, every dtype, shapes and layouts, reads into buffers, publications,
//! aborted writes, the lock guard, read-only and closed handles, config, metadata, errors.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Cleanup, LONG, child, child_role, param, param_opt, say, unique_name};
use shmstream::ndarray::{Array, Array2, ArrayD, IxDyn, s};
use shmstream::{
    Complex32, Complex64, Dtype, Element, Error, PurgeOptions, Stream, StreamConfig, StreamOptions,
    f16,
};

const SEC: Duration = Duration::from_secs(1);

/// Child roles run by re-executing this binary (see tests/common/mod.rs).
#[test]
fn child_entry() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        // Creates a stream, writes one frame and exits, leaving a stream with a dead creator.
        "create_and_exit" => {
            let name: String = param("name");
            let s = Stream::create(&name, &[4], Dtype::U32).unwrap();
            s.write_slice(&[1u32, 2, 3, 4]).unwrap();
            say(&format!("created {}", std::process::id()));
        }
        // Creates a stream of `size` bytes (4 MiB) keeping `history` frames (none) under a
        // 1 MiB file-size limit, SIGXFSZ at its default action (kill): says why it was
        // refused, or that it was created (and writes a frame to it), and each object it made
        // in /dev/shm under the stream's segment id (`made <file>`, seen by inotify: a creator
        // refused removes them before it returns).
        "create_under_a_file_size_limit" => {
            let name: String = param("name");
            let size: usize = param_opt("size").unwrap_or(4 << 20);
            let history: usize = param_opt("history").unwrap_or(0);
            // SAFETY: SIG_DFL installs no handler code.
            unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_DFL) };
            let limit = libc::rlimit {
                rlim_cur: 1 << 20,
                rlim_max: 1 << 20,
            };
            // SAFETY: `limit` is a valid rlimit for the call.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &limit) }, 0);
            let mut watch = shm_creations();
            let made = StreamOptions::new(&name)
                .shape(&[size])
                .dtype(Dtype::U8)
                .history(history)
                .create();
            let id = shmstream::name::segment_id(&name);
            for file in watch().into_iter().filter(|f| f.starts_with(&id)) {
                say(&format!("made {file}"));
            }
            match made {
                Err(e @ Error::FileSizeLimit { .. }) => say(&format!("refused {e}")),
                Ok(s) => {
                    s.write_slice(&vec![7u8; size]).unwrap();
                    say("created");
                }
                Err(e) => panic!("{e}"),
            }
        }
        // Reads a frame into new arrays (a snapshot, a cursor's next) under an address-space
        // limit (`ulimit -v`) that leaves no room for them: says each refusal, then reads the
        // same frames into a buffer allocated before the limit.
        "read_under_an_address_space_limit" => {
            let name: String = param("name");
            let s = Stream::open(&name).unwrap();
            let mut c = s.cursor().unwrap();
            let mut buf = vec![7u8; s.len()];
            s.write_slice(&buf).unwrap();
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let vm_kib: u64 = status
                .lines()
                .find_map(|l| l.strip_prefix("VmSize:"))
                .and_then(|v| v.trim().strip_suffix("kB"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap();
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: `limit` is a valid rlimit to fill.
            assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) }, 0);
            // Room for small allocations, not for a frame (96 MiB: more than a malloc arena
            // reserves ahead, 64 MiB).
            limit.rlim_cur = (vm_kib << 10) + (8 << 20);
            // SAFETY: `limit` is a valid rlimit for the call.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) }, 0);
            for got in [s.read::<u8>().map(drop), c.next::<u8>(Some(LONG)).map(drop)] {
                match got {
                    Err(e @ Error::Io { .. }) => say(&format!("refused {e}")),
                    other => panic!("{other:?}"),
                }
            }
            buf.fill(0);
            s.read_into_slice(&mut buf).unwrap();
            assert!(buf.iter().all(|&b| b == 7));
            buf.fill(0);
            c.next_into_slice(&mut buf, Some(LONG)).unwrap();
            assert!(buf.iter().all(|&b| b == 7));
            say("read into the buffer");
        }
        other => panic!("unknown role {other}"),
    }
}

/// A read into a new array (a snapshot, a cursor's next frame) that cannot allocate it is
/// a typed error naming the stream and the remedy, and the frame stays readable into a
/// buffer: `shmstream dump` of a 256 MiB stream under `ulimit -v 500000` aborted the
/// process ("memory allocation of 268435456 bytes failed").
#[test]
fn a_read_into_a_new_array_that_cannot_be_allocated_is_refused_not_aborted() {
    // The payload and a 2-frame ring of 96 MiB each, and some margin.
    let needs: u64 = 3 * (96 << 20) + (32 << 20);
    if let Some(free) = shmstream::harness_support::shm_available()
        && free < needs
    {
        eprintln!("skipping: /dev/shm has {free} bytes free, this test needs {needs}");
        return;
    }
    let name = unique_name("as-limit");
    let _c = Cleanup::new([&name]);
    let s = StreamOptions::new(&name)
        .shape(&[96 << 20])
        .dtype(Dtype::U8)
        .history(2)
        .create()
        .unwrap();
    let lines = child("child_entry", "read_under_an_address_space_limit")
        .param("name", &name)
        .run(LONG);
    let refused: Vec<&String> = lines.iter().filter(|l| l.starts_with("refused")).collect();
    assert_eq!(refused.len(), 2, "{lines:?}");
    for line in refused {
        for want in [name.as_str(), "read_*_into", "ulimit -v", "os error 12"] {
            assert!(line.contains(want), "{want:?} not in {line}");
        }
        assert_eq!(line.matches("ulimit -v").count(), 1, "one remedy: {line}");
    }
    assert!(
        lines.iter().any(|l| l == "read into the buffer"),
        "{lines:?}"
    );
    drop(s);
}

/// Watches `/dev/shm` (inotify): each call of the function returned gives the names of the
/// files created there since the last.
fn shm_creations() -> impl FnMut() -> Vec<String> {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    // SAFETY: plain syscalls; the path is a NUL-terminated literal.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    assert!(fd >= 0, "{}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a fresh descriptor this function alone owns from here on.
    let mut events = std::fs::File::from(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
    // SAFETY: as above.
    let wd = unsafe { libc::inotify_add_watch(fd, c"/dev/shm".as_ptr(), libc::IN_CREATE) };
    assert!(wd >= 0, "{}", std::io::Error::last_os_error());
    move || {
        let mut names = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        // Each event: wd, mask, cookie, len (4 bytes each), then `len` bytes of NUL-padded name.
        while let Ok(n) = events.read(&mut buf) {
            let mut at = 0;
            while at + 16 <= n {
                let len = u32::from_ne_bytes(buf[at + 12..at + 16].try_into().unwrap()) as usize;
                let name = &buf[at + 16..at + 16 + len];
                let end = name.iter().position(|&c| c == 0).unwrap_or(len);
                names.push(String::from_utf8_lossy(&name[..end]).into_owned());
                at += 16 + len;
            }
        }
        names
    }
}

/// The refusal a `create_under_a_file_size_limit` child printed, checking that it saw no
/// segment made.
fn refused_before_any_segment(lines: &[String]) -> &str {
    let made: Vec<_> = lines.iter().filter(|l| l.starts_with("made ")).collect();
    assert!(made.is_empty(), "{made:?}");
    lines
        .iter()
        .find_map(|l| l.strip_prefix("refused "))
        .unwrap_or_else(|| panic!("{lines:?}"))
}

/// A stream over the file-size limit (`ulimit -f`) is refused with an error naming the
/// stream, the limit and the remedy, and leaves nothing: sizing its segment raised SIGXFSZ,
/// whose default action killed the process.
#[test]
fn a_stream_over_the_file_size_limit_is_refused_not_killed() {
    let name = unique_name("fsize");
    let _c = Cleanup::new([&name]);
    let lines = child("child_entry", "create_under_a_file_size_limit")
        .param("name", &name)
        .run(LONG);
    let refused = refused_before_any_segment(&lines);
    for want in [
        name.as_str(),
        "`ulimit -f`",
        "1048576 bytes",
        "4194304 bytes",
    ] {
        assert!(refused.contains(want), "{want:?} not in {refused}");
    }
    assert!(matches!(
        shmstream::stat(&name),
        Err(Error::NotFound { .. })
    ));
    assert!(!shmstream::name::lock_path(&name).exists());
}

/// A stream whose payload fits under the file-size limit but whose history ring does not
/// is refused before any segment is made, saying to keep fewer frames: its payload and
/// `_meta` were made first, then the ring was refused, with "make the stream smaller".
#[test]
fn a_history_ring_over_the_file_size_limit_is_refused_naming_history() {
    let name = unique_name("fsize-ring");
    let _c = Cleanup::new([&name]);
    let lines = child("child_entry", "create_under_a_file_size_limit")
        .param("name", &name)
        .param("size", 512 << 10)
        .param("history", 4)
        .run(LONG);
    // Refused before any segment was made (its payload and `_meta` were, then removed).
    let refused = refused_before_any_segment(&lines);
    for want in [
        name.as_str(),
        "`ulimit -f`",
        "1048576 bytes",
        "history ring",
        "keep fewer history frames (history(n))",
    ] {
        assert!(refused.contains(want), "{want:?} not in {refused}");
    }
    assert!(!refused.contains("make the stream smaller"), "{refused}");
    let id = shmstream::name::segment_id(&name);
    let left: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| f.starts_with(&id))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(!shmstream::name::lock_path(&name).exists());
}

/// A stream whose every segment fits under the file-size limit is created there, its ring
/// included, and takes frames: the limit refuses only what is over it, and a payload or a
/// ring of the limit's size is not (`ulimit -f` bounds a file's size, not one byte short of
/// it). The ring of 5 461 frames of 128 bytes is 64 + 5 461 × (128 + 64) bytes: 1 MiB.
#[test]
fn a_stream_under_the_file_size_limit_is_created() {
    for (size, history) in [(64 << 10, 4), (1 << 20, 0), (128, 5461)] {
        let name = unique_name("fsize-fits");
        let _c = Cleanup::new([&name]);
        let lines = child("child_entry", "create_under_a_file_size_limit")
            .param("name", &name)
            .param("size", size)
            .param("history", history)
            .run(LONG);
        assert!(lines.iter().any(|l| l == "created"), "{size}: {lines:?}");
    }
}

// ----- lifecycle and catalog -----

#[test]
fn create_open_stat_list_unlink() {
    let name = unique_name("life");
    let _c = Cleanup::new([&name]);
    let w = StreamOptions::new(&name)
        .shape(&[2, 3])
        .dtype(Dtype::F64)
        .notify(true)
        .create()
        .unwrap();
    assert!(w.is_owner());
    assert!(!w.is_readonly());
    assert!(w.notify());
    assert_eq!(w.name(), name);
    assert_eq!(w.shape(), &[2, 3]);
    assert_eq!(w.dtype(), Dtype::F64);
    assert_eq!(w.len(), 6);
    assert!(!w.is_empty(), "a stream has elements");
    assert!(w.cpu_mirror(), "a CPU stream's payload is on the host");
    assert_eq!(w.size_bytes(), 48);
    assert_eq!(w.count(), 0);
    assert_eq!(w.creator_pid(), std::process::id() as i64);
    let id = w.instance_id();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(id, "0".repeat(32));

    assert!(shmstream::list_streams().unwrap().contains(&name));
    let st = shmstream::stat(&name).unwrap();
    assert_eq!(st.name, name);
    assert_eq!(st.shape, vec![2, 3]);
    assert_eq!(st.dtype, Dtype::F64);
    assert_eq!(st.size, 48);
    assert_eq!(st.count, 0);
    assert_eq!(st.creator_pid, std::process::id() as i64);
    assert!(st.creator_alive);
    assert!(st.notify);
    assert!(!st.gpu_enabled);
    assert!(st.cpu_mirror);
    assert_eq!(st.instance_id.as_deref(), Some(id.as_str()));
    assert!(
        shmstream::list_stats()
            .unwrap()
            .iter()
            .any(|s| s.name == name && s.instance_id.as_deref() == Some(id.as_str()))
    );

    let r = Stream::open(&name).unwrap();
    assert!(!r.is_owner());
    assert_eq!(r.instance_id(), id);
    assert_eq!(r.shape(), &[2, 3]);
    assert_eq!(r.dtype(), Dtype::F64);
    w.write_slice(&[1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    assert_eq!(r.count(), 1);
    assert_eq!(shmstream::stat(&name).unwrap().count, 1);
    assert_eq!(shmstream::stat(&name).unwrap().write_sequence, 2);

    // A second create of the same name fails and leaves the first intact.
    let e = Stream::create(&name, &[9], Dtype::U8).unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e:?}");
    assert!(
        e.to_string().contains(&name) && e.to_string().contains("unlink"),
        "{e}"
    );
    assert_eq!(
        r.read::<f64>().unwrap().as_slice().unwrap(),
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    );

    shmstream::unlink(&name).unwrap();
    assert!(!shmstream::list_streams().unwrap().contains(&name));
    assert!(matches!(
        shmstream::stat(&name),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(Stream::open(&name), Err(Error::NotFound { .. })));
    assert!(matches!(
        Stream::open_readonly(&name),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        shmstream::unlink(&name),
        Err(Error::NotFound { .. })
    ));
    assert!(!shmstream::unlink_quiet(&name).unwrap());
    // Handles still attached learn that their stream is gone.
    assert!(
        matches!(r.read::<f64>(), Err(Error::Stale { .. })),
        "{:?}",
        r.read::<f64>()
    );
    assert!(
        matches!(w.write_slice(&[0.0f64; 6]), Err(Error::Stale { .. })),
        "{:?}",
        w.write_slice(&[0.0f64; 6])
    );
}

#[test]
fn recreated_name_makes_old_handles_stale() {
    let name = unique_name("stale");
    let _c = Cleanup::new([&name]);
    let old = Stream::create(&name, &[2], Dtype::I32).unwrap();
    old.write_slice(&[1i32, 2]).unwrap();
    let old_id = old.instance_id();
    assert!(!old.is_unlinked());
    shmstream::unlink(&name).unwrap();
    assert!(old.is_unlinked());
    let new = Stream::create(&name, &[2], Dtype::I32).unwrap();
    assert_ne!(new.instance_id(), old_id);
    assert!(old.is_unlinked() && !new.is_unlinked());
    new.write_slice(&[7i32, 8]).unwrap();
    let e = old.read::<i32>().unwrap_err();
    assert!(matches!(e, Error::Stale { .. }), "{e:?}");
    assert!(
        e.to_string().contains(&name) && e.to_string().contains("open it again"),
        "{e}"
    );
    // Unlinking through the stale handle must not remove the new generation.
    assert!(matches!(old.unlink(), Err(Error::Stale { .. })));
    assert_eq!(
        shmstream::stat(&name).unwrap().instance_id.unwrap(),
        new.instance_id()
    );
    assert_eq!(
        Stream::open(&name)
            .unwrap()
            .read::<i32>()
            .unwrap()
            .as_slice()
            .unwrap(),
        &[7, 8]
    );
    new.unlink().unwrap();
    assert!(shmstream::stat(&name).is_err());
}

/// The first lock of a handle whose stream another handle unlinked (its lock file with it):
/// Stale, and the removed stream's lock file is not made again at its path.
#[test]
fn locking_an_unlinked_stream_is_stale_and_leaves_no_lock_file() {
    let name = unique_name("stale-lock");
    let _c = Cleanup::new([&name]);
    let creator = Stream::create(&name, &[2], Dtype::I32).unwrap();
    let s = Stream::open(&name).unwrap();
    let lock_path = shmstream::name::lock_path(&name);
    assert!(lock_path.exists());
    creator.unlink().unwrap();
    assert!(!lock_path.exists());
    let e = s.write_slice(&[1i32, 2]).unwrap_err();
    assert!(matches!(e, Error::Stale { .. }), "{e:?}");
    let e = s.lock(Some(SEC)).map(drop).unwrap_err();
    assert!(matches!(e, Error::Stale { .. }), "{e:?}");
    let e = shmstream::lock_many(&[&s], Some(SEC))
        .map(drop)
        .unwrap_err();
    assert!(matches!(e, Error::Stale { .. }), "{e:?}");
    assert!(
        !lock_path.exists(),
        "the removed stream's lock file made again"
    );
}

/// A creator at work (its `<id>.creating-<pid>` objects there, the name's lock held for its
/// whole build: seconds for a large or GPU stream) has the name: `create` waits out the lock
/// and says `AlreadyExists` (it said `Timeout`, which "open or create" code does not handle),
/// and `open` says `NotFound` with `unfinished` set. Here the creator is this process: a
/// plain file of ours at its build id, and the lock held through a descriptor of our own.
#[test]
fn a_creation_at_work_holds_the_name_for_create_and_open() {
    use std::os::fd::AsRawFd;
    /// Removes the planted build object, also when the test fails.
    struct Planted(String);
    impl Drop for Planted {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let name = unique_name("at-work");
    let _c = Cleanup::new([&name]);
    // The name's lock file, left behind by a stream whose segments are gone.
    drop(Stream::create(&name, &[4], Dtype::U8).unwrap());
    for id in [
        shmstream::name::segment_id(&name),
        shmstream::name::meta_id(&name),
    ] {
        std::fs::remove_file(format!("/dev/shm/{id}")).unwrap();
    }
    let building = Planted(format!(
        "/dev/shm/{}.creating-{}",
        shmstream::name::segment_id(&name),
        std::process::id()
    ));
    std::fs::write(&building.0, [0u8; 4]).unwrap();
    let lock = std::fs::File::open(shmstream::name::lock_path(&name)).unwrap();
    // SAFETY: flock on a descriptor this test owns.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);

    let made = Stream::create(&name, &[4], Dtype::U8).map(drop);
    assert!(
        matches!(&made, Err(Error::AlreadyExists { name: n, being_created: true }) if *n == name),
        "{made:?}"
    );
    // Not only "open it": an open waits out the creation and says `NotFound`.
    let text = made.unwrap_err().to_string();
    assert!(
        text.contains("being created by another process")
            && text.contains("once its creator finishes"),
        "{text}"
    );
    let opened = Stream::open(&name).map(drop);
    assert!(
        matches!(&opened, Err(Error::NotFound { unfinished: true, known, .. }) if known.is_empty()),
        "{opened:?}"
    );
    drop(lock);
    drop(building);
}

/// What is no creation at work leaves an open of a name that has only its lock file saying
/// plain `NotFound`, not "unfinished": the build object of a dead creator, another name's
/// build object made by a live one (this process), and any other stream's segments.
#[test]
fn only_a_live_creators_build_of_the_name_is_a_creation_at_work() {
    let (name, other) = (unique_name("not-at-work"), unique_name("at-work-other"));
    let _c = Cleanup::new([&name, &other]);
    // The name's lock file, left behind by a stream whose segments are gone.
    drop(Stream::create(&name, &[4], Dtype::U8).unwrap());
    for id in [
        shmstream::name::segment_id(&name),
        shmstream::name::meta_id(&name),
    ] {
        std::fs::remove_file(format!("/dev/shm/{id}")).unwrap();
    }
    let _other = Stream::create(&other, &[4], Dtype::U8).unwrap();
    let mut exited = std::process::Command::new("true").spawn().unwrap();
    let dead = exited.id();
    assert!(exited.wait().unwrap().success());
    let building = |of: &str, pid: u32| {
        format!(
            "/dev/shm/{}.creating-{pid}",
            shmstream::name::segment_id(of)
        )
    };
    let mut said = Vec::new();
    for planted in [
        None,
        Some(building(&name, dead)),
        Some(building(&other, std::process::id())),
    ] {
        if let Some(p) = &planted {
            std::fs::write(p, [0u8; 4]).unwrap();
        }
        let opened = Stream::open(&name).map(drop);
        if let Some(p) = &planted {
            std::fs::remove_file(p).unwrap();
        }
        said.push(match opened {
            Err(Error::NotFound { unfinished, .. }) => format!("unfinished {unfinished}"),
            other => format!("{other:?}"),
        });
    }
    assert_eq!(said, ["unfinished false"; 3]);
}

#[test]
fn invalid_names_and_shapes_are_refused() {
    for bad in ["", "   ", "nul\0byte"] {
        let e = Stream::create(bad, &[1], Dtype::U8).unwrap_err();
        assert!(matches!(e, Error::InvalidName { .. }), "{bad:?}: {e:?}");
    }
    let long = "x".repeat(257);
    assert!(matches!(
        Stream::create(&long, &[1], Dtype::U8),
        Err(Error::InvalidName { .. })
    ));
    let name = unique_name("shape");
    let _c = Cleanup::new([&name]);
    for shape in [vec![], vec![0], vec![3, 0, 2], vec![1; 20]] {
        let e = Stream::create(&name, &shape, Dtype::U8).unwrap_err();
        assert!(matches!(e, Error::InvalidShape { .. }), "{shape:?}: {e:?}");
        assert!(e.to_string().contains(&name), "{e}");
        assert!(
            shmstream::stat(&name).is_err(),
            "a refused create left a stream behind"
        );
    }
    let e = Stream::create(&name, &[usize::MAX / 2, 4], Dtype::F64).unwrap_err();
    assert!(matches!(e, Error::InvalidShape { .. }), "{e:?}");
    // 19 dimensions is the maximum and works.
    let s = Stream::create(&name, &[1; 19], Dtype::U8).unwrap();
    s.write_slice(&[5u8]).unwrap();
    assert_eq!(s.read::<u8>().unwrap().shape(), &[1; 19]);
}

#[test]
fn scratch_and_auto_unlink_remove_the_stream_on_drop() {
    let name = unique_name("scratch");
    {
        let s = shmstream::scratch(&name, &[8], Dtype::U8).unwrap();
        s.write_slice(&[3u8; 8]).unwrap();
        assert_eq!(
            Stream::open(&name)
                .unwrap()
                .read::<u8>()
                .unwrap()
                .as_slice()
                .unwrap(),
            &[3u8; 8]
        );
        assert!(shmstream::list_streams().unwrap().contains(&name));
    }
    assert!(matches!(
        shmstream::stat(&name),
        Err(Error::NotFound { .. })
    ));

    let name = unique_name("autounlink");
    {
        let _s = StreamOptions::new(&name)
            .shape(&[2])
            .auto_unlink(true)
            .create()
            .unwrap();
        // A non-owning handle dropping first must not unlink.
        drop(Stream::open(&name).unwrap());
        assert!(shmstream::stat(&name).is_ok());
    }
    assert!(shmstream::stat(&name).is_err());

    // Without auto_unlink the stream outlives its handle.
    let name = unique_name("persist");
    let _c = Cleanup::new([&name]);
    drop(Stream::create(&name, &[2], Dtype::U8).unwrap());
    assert!(shmstream::stat(&name).is_ok());
}

#[test]
fn dead_producer_is_detected_and_purge_dry_run_lists_without_removing() {
    let dead = unique_name("dead");
    let live = unique_name("live");
    let _c = Cleanup::new([&dead, &live]);
    let _live = Stream::create(&live, &[1], Dtype::U8).unwrap();
    let lines = child("child_entry", "create_and_exit")
        .param("name", &dead)
        .run(common::LONG);
    let child_pid: i64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("created "))
        .expect("child said created")
        .parse()
        .unwrap();

    let st = shmstream::stat(&dead).unwrap();
    assert_eq!(st.creator_pid, child_pid);
    assert!(!st.creator_alive);
    let h = Stream::open(&dead).unwrap();
    assert!(!h.producer_alive());
    assert_eq!(h.creator_pid(), child_pid);
    assert_eq!(h.read::<u32>().unwrap().as_slice().unwrap(), &[1, 2, 3, 4]);
    assert!(Stream::open(&live).unwrap().producer_alive());

    // Dry run: reports the dead-creator stream, keeps it, never lists a live one.
    let would = shmstream::purge_with(PurgeOptions {
        all: false,
        dry_run: true,
    })
    .unwrap()
    .names();
    assert!(would.contains(&dead), "{would:?}");
    assert!(!would.contains(&live), "{would:?}");
    assert!(shmstream::stat(&dead).is_ok(), "dry run removed the stream");
    let would_all = shmstream::purge_with(PurgeOptions {
        all: true,
        dry_run: true,
    })
    .unwrap()
    .names();
    assert!(
        would_all.contains(&dead) && would_all.contains(&live),
        "{would_all:?}"
    );
    assert!(shmstream::stat(&live).is_ok());
    // (A real purge would also remove other concurrently running tests' streams; not here.)
}

// ----- element types -----

fn round_trip<T: Element + PartialEq + std::fmt::Debug>(dtype: Dtype, make: impl Fn(usize) -> T) {
    let name = unique_name(&format!("dt-{dtype}"));
    let _c = Cleanup::new([&name]);
    let shape = [2usize, 3, 4];
    let w = Stream::create(&name, &shape, dtype).unwrap();
    assert_eq!(w.size_bytes(), 24 * dtype.itemsize());
    let data: Vec<T> = (0..24).map(&make).collect();
    let arr = ArrayD::from_shape_vec(IxDyn(&shape), data.clone()).unwrap();
    w.write(&arr).unwrap();
    let r = Stream::open_readonly(&name).unwrap();
    let got = r.read::<T>().unwrap();
    assert_eq!(got, arr, "{dtype}");
    assert_eq!(got.shape(), &shape);
    assert_eq!(got[[1, 2, 3]], make(23), "{dtype}: C order");

    // write_slice, then read_into (no allocation) and read_into_slice.
    let data2: Vec<T> = (0..24).map(|i| make(23 - i)).collect();
    w.write_slice(&data2).unwrap();
    let mut out = Array::from_elem((2, 3, 4), T::default());
    assert_eq!(r.read_into(&mut out.view_mut()).unwrap(), 2);
    assert_eq!(out.as_slice().unwrap(), data2.as_slice(), "{dtype}");
    let mut flat = vec![T::default(); 24];
    assert_eq!(r.read_into_slice(&mut flat).unwrap(), 2);
    assert_eq!(flat, data2);

    // The stream's dtype is checked at every typed call.
    if dtype != Dtype::U8 {
        let e = w.write_slice(&[0u8; 24]).unwrap_err();
        assert!(
            matches!(e, Error::DtypeMismatch { expected, given: Dtype::U8, .. } if expected == dtype),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains(&name) && msg.contains(dtype.numpy_name()) && msg.contains("uint8"),
            "{msg}"
        );
        assert!(matches!(r.read::<u8>(), Err(Error::DtypeMismatch { .. })));
        assert_eq!(r.count(), 2, "a refused write must not publish");
    }
}

#[test]
fn every_dtype_round_trips_in_3d() {
    round_trip(Dtype::I8, |i| (i as i8).wrapping_mul(11).wrapping_sub(100));
    round_trip(Dtype::I16, |i| (i as i16) * -1000 + 7);
    round_trip(Dtype::I32, |i| {
        if i == 0 {
            i32::MIN
        } else {
            (i as i32) * 100_003 - 1
        }
    });
    round_trip(Dtype::I64, |i| {
        if i == 5 { i64::MAX } else { -(i as i64) << 40 }
    });
    round_trip(Dtype::U8, |i| if i == 3 { 255 } else { (i * 7) as u8 });
    round_trip(Dtype::U16, |i| (i as u16) * 2731);
    round_trip(Dtype::U32, |i| {
        if i == 1 {
            u32::MAX
        } else {
            (i as u32) * 178_956_970
        }
    });
    round_trip(Dtype::U64, |i| u64::MAX - (i as u64) * 0x0123_4567_89ab);
    round_trip(Dtype::F16, |i| f16::from_f32(i as f32 * 0.5 - 3.25));
    round_trip(Dtype::F32, |i| {
        if i == 2 {
            f32::MIN_POSITIVE
        } else {
            i as f32 * -1.5e7 + 0.125
        }
    });
    round_trip(Dtype::F64, |i| {
        if i == 4 {
            f64::INFINITY
        } else {
            (i as f64).sqrt() * 1e-300
        }
    });
    round_trip(Dtype::Bool, |i| i % 3 == 1);
    round_trip(Dtype::Complex64, |i| {
        Complex32::new(i as f32 + 0.5, -(i as f32) * 2.0)
    });
    round_trip(Dtype::Complex128, |i| {
        Complex64::new(-(i as f64) / 3.0, i as f64 * 1e100)
    });
}

#[test]
fn dtype_names_and_codes_match_numpy() {
    let names = [
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
        "bool",
        "complex64",
        "complex128",
    ];
    assert_eq!(Dtype::ALL.len(), 14);
    for (i, (d, n)) in Dtype::ALL.iter().zip(names).enumerate() {
        assert_eq!(d.code() as usize, i);
        assert_eq!(Dtype::from_code(i as u16), Some(*d));
        assert_eq!(d.numpy_name(), n);
        assert_eq!(d.to_string(), n);
        assert_eq!(n.parse::<Dtype>().unwrap(), *d);
    }
    assert_eq!(Dtype::from_code(14), None);
    assert!("float128".parse::<Dtype>().is_err());
}

// ----- shapes and layouts -----

#[test]
fn non_contiguous_views_are_written_in_logical_order() {
    let name = unique_name("layout");
    let _c = Cleanup::new([&name]);
    let s = Stream::create(&name, &[4, 3], Dtype::I64).unwrap();
    let a = Array2::from_shape_fn((3, 4), |(i, j)| (i * 10 + j) as i64);
    let t = a.t();
    assert!(
        t.as_slice().is_none(),
        "the test needs a non-contiguous view"
    );
    s.write(&t).unwrap();
    let got = s.read::<i64>().unwrap();
    assert_eq!(got, t.to_owned().into_dyn());
    assert_eq!(
        got.as_slice().unwrap(),
        &[0, 10, 20, 1, 11, 21, 2, 12, 22, 3, 13, 23]
    );

    // A strided slice (every other row) of a bigger array.
    let big = Array2::from_shape_fn((8, 3), |(i, j)| (i * 100 + j) as i64);
    let strided = big.slice(s![..;2, ..]);
    assert!(strided.as_slice().is_none());
    s.write(&strided).unwrap();
    assert_eq!(s.read::<i64>().unwrap(), strided.to_owned().into_dyn());

    // A 3-D permuted view.
    let name3 = unique_name("layout3");
    let _c3 = Cleanup::new([&name3]);
    let s3 = Stream::create(&name3, &[4, 2, 3], Dtype::F32).unwrap();
    let cube = Array::from_shape_fn((2, 3, 4), |(i, j, k)| (i * 100 + j * 10 + k) as f32);
    let p = cube.view().permuted_axes([2, 0, 1]);
    s3.write(&p).unwrap();
    let got = s3.read::<f32>().unwrap();
    assert_eq!(got, p.to_owned().into_dyn());
    assert_eq!(got[[3, 1, 2]], 123.0);
}

#[test]
fn wrong_shapes_are_refused_and_keep_the_previous_frame() {
    let name = unique_name("badshape");
    let _c = Cleanup::new([&name]);
    let s = Stream::create(&name, &[2, 3], Dtype::U16).unwrap();
    s.write_slice(&[1u16, 2, 3, 4, 5, 6]).unwrap();
    let e = s.write_slice(&[1u16; 5]).unwrap_err();
    assert!(matches!(e, Error::SliceLength { .. }), "{e:?}");
    assert!(
        e.to_string().contains(&name) && e.to_string().contains("[2, 3]"),
        "{e}"
    );
    let e = s.write(&Array2::<u16>::zeros((3, 2))).unwrap_err();
    assert!(
        matches!(e, Error::ShapeMismatch { ref given, .. } if given == &[3, 2]),
        "{e:?}"
    );
    assert!(
        e.to_string().ends_with(": pass an array of shape [2, 3]"),
        "{e}"
    );
    assert!(matches!(
        s.read_into_slice(&mut [0u16; 7]),
        Err(Error::SliceLength { .. })
    ));
    let mut wrong = Array2::<u16>::zeros((3, 2));
    assert!(matches!(
        s.read_into(&mut wrong.view_mut()),
        Err(Error::ShapeMismatch { .. })
    ));
    assert_eq!(s.count(), 1);
    assert_eq!(
        s.read::<u16>().unwrap().as_slice().unwrap(),
        &[1, 2, 3, 4, 5, 6]
    );
}

#[test]
fn read_into_needs_a_contiguous_destination() {
    let name = unique_name("readinto");
    let _c = Cleanup::new([&name]);
    let s = Stream::create(&name, &[2, 2], Dtype::F64).unwrap();
    s.write_slice(&[1.0f64, 2.0, 3.0, 4.0]).unwrap();
    let mut dst = Array2::<f64>::zeros((2, 2));
    assert_eq!(s.read_into(&mut dst.view_mut()).unwrap(), 1);
    assert_eq!(
        dst,
        Array2::from_shape_vec((2, 2), vec![1.0, 2.0, 3.0, 4.0]).unwrap()
    );
    let mut t = Array2::<f64>::zeros((2, 2));
    let mut tv = t.view_mut().reversed_axes();
    let e = s.read_into(&mut tv).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    assert!(e.to_string().contains("contiguous"), "{e}");
}

// ----- publications and waits -----

#[test]
fn publications_carry_count_frame_id_time_and_missed() {
    let name = unique_name("pub");
    let _c = Cleanup::new([&name]);
    let w = Stream::create(&name, &[3], Dtype::U32).unwrap();
    let r = Stream::open_readonly(&name).unwrap();
    assert_eq!(w.frame_id(), 0);
    assert_eq!(w.write_time(), 0.0);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    w.write_slice_frame(&[1u32, 1, 1], 42).unwrap();
    let p = r.read_publication::<u32>().unwrap();
    assert_eq!(p.payload.as_slice().unwrap(), &[1, 1, 1]);
    assert_eq!(p.info.count, 1);
    assert_eq!(p.info.frame_id, 42);
    assert_eq!(p.info.missed, 0);
    assert!(
        p.info.write_time >= before - 1.0 && p.info.write_time < before + 60.0,
        "{}",
        p.info.write_time
    );
    assert_eq!(r.frame_id(), 42);
    assert_eq!(r.last_read_count(), 1);

    // Three writes unread: the next read reports two missed.
    w.write_frame(&shmstream::ndarray::arr1(&[2u32, 2, 2]), 43)
        .unwrap();
    w.write_view_frame(44, |b: &mut [u32]| -> Result<(), Error> {
        b.fill(3);
        Ok(())
    })
    .unwrap();
    {
        let g = w.lock(Some(SEC)).unwrap();
        g.write_slice_frame(&[4u32, 4, 4], 45).unwrap();
    }
    let p = r.read_publication::<u32>().unwrap();
    assert_eq!(
        (
            p.payload.as_slice().unwrap(),
            p.info.count,
            p.info.frame_id,
            p.info.missed
        ),
        (&[4u32, 4, 4][..], 4, 45, 2)
    );
    assert_eq!(r.missed_writes(), 2);
    assert_eq!(r.total_missed_writes(), 2);
    // A write without a frame id keeps the last one (pyshmem's rule).
    w.write_slice(&[5u32; 3]).unwrap();
    let mut buf = [0u32; 3];
    let info = r.read_publication_into(&mut buf).unwrap();
    assert_eq!(
        (buf, info.count, info.frame_id, info.missed),
        ([5; 3], 5, 45, 0)
    );
    assert_eq!(r.missed_writes(), 0);
    assert_eq!(r.total_missed_writes(), 2);
}

#[test]
fn read_new_returns_frames_newer_than_the_last_read_and_times_out_otherwise() {
    let name = unique_name("readnew");
    let _c = Cleanup::new([&name]);
    let w = StreamOptions::new(&name)
        .shape(&[1])
        .dtype(Dtype::I64)
        .notify(true)
        .create()
        .unwrap();
    let r = Stream::open_readonly(&name).unwrap();
    assert_eq!(r.last_read_count(), 0);
    // A frame published before the call still counts (documented difference from pyshmem).
    w.write_slice(&[1i64]).unwrap();
    assert_eq!(r.read_new::<i64>(Some(SEC)).unwrap()[[0]], 1);
    let t0 = Instant::now();
    let e = r
        .read_new::<i64>(Some(Duration::from_millis(50)))
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    assert!(
        t0.elapsed() >= Duration::from_millis(50) && t0.elapsed() < 5 * SEC,
        "{:?}",
        t0.elapsed()
    );
    assert!(e.to_string().contains(&name), "{e}");

    // Another thread writes while this one is parked (or about to park).
    std::thread::scope(|sc| {
        sc.spawn(|| w.write_slice(&[2i64]).unwrap());
        assert_eq!(r.read_new::<i64>(Some(common::LONG)).unwrap()[[0]], 2);
    });
    let mut one = [0i64];
    w.write_slice(&[3i64]).unwrap();
    assert_eq!(r.read_new_into_slice(&mut one, Some(SEC)).unwrap(), 3);
    assert_eq!(one, [3]);
    w.write_slice_frame(&[4i64], 9).unwrap();
    let p = r.read_new_publication::<i64>(Some(SEC)).unwrap();
    assert_eq!((p.payload[[0]], p.info.count, p.info.frame_id), (4, 4, 9));

    // wait_for_count / read_after are level-triggered.
    assert_eq!(r.wait_for_count(2, Some(Duration::ZERO)).unwrap(), 4);
    assert_eq!(
        r.read_after::<i64>(0, Some(Duration::ZERO)).unwrap()[[0]],
        4
    );
    assert!(matches!(
        r.wait_for_count(4, Some(Duration::from_millis(20))),
        Err(Error::Timeout { .. })
    ));
    let mut one = [0i64];
    assert!(matches!(
        r.read_after_into_slice(4, &mut one, Some(Duration::from_millis(20))),
        Err(Error::Timeout { .. })
    ));
    std::thread::scope(|sc| {
        sc.spawn(|| w.write_slice(&[5i64]).unwrap());
        assert_eq!(r.wait_for_count(4, Some(common::LONG)).unwrap(), 5);
    });
    let p = r.read_after_publication::<i64>(4, Some(SEC)).unwrap();
    assert_eq!((p.payload[[0]], p.info.count), (5, 5));

    // wait_for_frame: the same wait, and the frame's id with its count.
    w.write_slice_frame(&[6i64], 42).unwrap();
    let info = r.wait_for_frame(5, Some(SEC)).unwrap();
    assert_eq!((info.count, info.frame_id), (6, 42));
    assert!(matches!(
        r.wait_for_frame(6, Some(Duration::from_millis(20))),
        Err(Error::Timeout { .. })
    ));
}

#[test]
fn waits_without_notify_also_wake() {
    let name = unique_name("nonotify");
    let _c = Cleanup::new([&name]);
    let w = Stream::create(&name, &[2], Dtype::F32).unwrap();
    assert!(!w.notify());
    let r = Stream::open_readonly(&name).unwrap();
    std::thread::scope(|sc| {
        sc.spawn(|| {
            for i in 1..=20 {
                w.write_slice(&[i as f32; 2]).unwrap();
            }
        });
        let mut last = 0.0;
        while last < 20.0 {
            let a = r.read_new::<f32>(Some(common::LONG)).unwrap();
            assert_eq!(a[[0]], a[[1]]);
            assert!(
                a[[0]] > last,
                "read_new went backwards: {} after {last}",
                a[[0]]
            );
            last = a[[0]];
        }
    });
    assert_eq!(r.last_read_count(), 20);
}

// ----- aborted writes -----

#[test]
fn write_view_error_aborts_the_generation_and_the_next_write_recovers() {
    let name = unique_name("abort");
    let _c = Cleanup::new([&name]);
    let w = Stream::create(&name, &[4], Dtype::F32).unwrap();
    let r = Stream::open_readonly(&name).unwrap();
    w.write_slice(&[1.0f32; 4]).unwrap();
    let e = w
        .write_view(|buf: &mut [f32]| -> Result<(), std::io::Error> {
            assert_eq!(buf, &[1.0; 4], "the buffer holds the previous frame");
            buf[0] = 99.0;
            Err(std::io::Error::other("camera unplugged"))
        })
        .unwrap_err();
    assert!(matches!(e, Error::WriteAborted { .. }), "{e:?}");
    assert!(e.to_string().contains(&name), "{e}");
    assert_eq!(
        std::error::Error::source(&e).unwrap().to_string(),
        "camera unplugged"
    );
    assert!(
        w.write_sequence() < 0,
        "sequence {} should be the invalid generation",
        w.write_sequence()
    );
    assert_eq!(w.count(), 1);
    let e = r.read::<f32>().unwrap_err();
    assert!(matches!(e, Error::Inconsistent { .. }), "{e:?}");
    assert!(
        e.to_string().contains(&name) && e.to_string().contains("successful write"),
        "{e}"
    );
    assert!(matches!(
        r.read_publication::<f32>(),
        Err(Error::Inconsistent { .. })
    ));
    assert!(matches!(
        r.read_into_slice(&mut [0f32; 4]),
        Err(Error::Inconsistent { .. })
    ));

    w.write_slice(&[2.0f32; 4]).unwrap();
    assert!(w.write_sequence() > 0 && w.write_sequence() % 2 == 0);
    assert_eq!(r.read::<f32>().unwrap().as_slice().unwrap(), &[2.0; 4]);
    assert_eq!(r.count(), 2);
}

#[test]
fn raw_bytes_are_written_in_place_with_their_frame_id_under_a_held_lock_or_not() {
    let name = unique_name("bytesview");
    let bools = unique_name("bytesview-bool");
    let _c = Cleanup::new([&name, &bools]);
    let w = StreamOptions::new(&name)
        .shape(&[2, 2])
        .dtype(Dtype::F32)
        .history(4)
        .create()
        .unwrap();
    let mut cursor = w.cursor().unwrap();
    let frame: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect();
    // Filled from pieces, as a bridge fills a frame from what it received.
    w.write_bytes_view_frame(7, |buf: &mut [u8]| -> Result<(), Error> {
        assert_eq!(buf.len(), 16, "the whole frame, whatever the dtype");
        let (a, b) = frame.split_at(5);
        buf[..5].copy_from_slice(a);
        buf[5..].copy_from_slice(b);
        Ok(())
    })
    .unwrap();
    {
        let g = w.lock(Some(SEC)).unwrap();
        g.write_bytes_view_frame(8, |buf: &mut [u8]| -> Result<(), Error> {
            buf.copy_from_slice(&frame);
            buf[..4].copy_from_slice(&9.0f32.to_ne_bytes());
            Ok(())
        })
        .unwrap();
    }
    let first = cursor.next_publication::<f32>(Some(SEC)).unwrap();
    assert_eq!(first.info.frame_id, 7);
    assert_eq!(first.payload.as_slice().unwrap(), &[1.0, 2.0, 3.0, 4.0]);
    let second = cursor.next_publication::<f32>(Some(SEC)).unwrap();
    assert_eq!(second.info.frame_id, 8);
    assert_eq!(second.payload.as_slice().unwrap(), &[9.0, 2.0, 3.0, 4.0]);
    assert_eq!(w.frame_id(), 8);

    // A failing fill aborts like write_view; the next write recovers.
    let e = w
        .write_bytes_view_frame(9, |_: &mut [u8]| Err::<(), _>("link lost"))
        .unwrap_err();
    assert!(
        matches!(e, Error::WriteAborted { .. }) && e.to_string().contains(&name),
        "{e}"
    );
    assert!(matches!(w.read::<f32>(), Err(Error::Inconsistent { .. })));

    // A bool byte other than 0 or 1 is refused, naming the stream.
    let b = Stream::create(&bools, &[3], Dtype::Bool).unwrap();
    let e = b
        .write_bytes_view_frame(1, |buf: &mut [u8]| -> Result<(), Error> {
            buf.copy_from_slice(&[1, 0, 2]);
            Ok(())
        })
        .unwrap_err();
    assert!(
        matches!(e, Error::InvalidData { .. }) && e.to_string().contains(&bools),
        "{e}"
    );
    b.write_bytes_view_frame(2, |buf: &mut [u8]| -> Result<(), Error> {
        buf.copy_from_slice(&[1, 0, 1]);
        Ok(())
    })
    .unwrap();
    assert_eq!(
        b.read::<bool>().unwrap().as_slice().unwrap(),
        &[true, false, true]
    );
}

#[test]
fn write_view_panic_aborts_releases_the_lock_and_recovers() {
    let name = unique_name("panic");
    let _c = Cleanup::new([&name]);
    let w = StreamOptions::new(&name)
        .shape(&[3])
        .dtype(Dtype::I16)
        .notify(true)
        .create()
        .unwrap();
    let r = Stream::open_readonly(&name).unwrap();
    w.write_slice(&[5i16; 3]).unwrap();
    let caught = catch_unwind(AssertUnwindSafe(|| {
        let _ = w.write_view(|buf: &mut [i16]| -> Result<(), Error> {
            buf[1] = -1;
            panic!("fill panicked");
        });
    }));
    assert!(caught.is_err(), "the panic must propagate");
    assert!(
        matches!(r.read::<i16>(), Err(Error::Inconsistent { .. })),
        "{:?}",
        r.read::<i16>()
    );
    // A waiting reader reports the aborted generation instead of hanging.
    let r2 = Stream::open_readonly(&name).unwrap();
    assert!(matches!(
        r2.read_new::<i16>(Some(common::LONG)),
        Err(Error::Inconsistent { .. })
    ));
    // The lock was released by the unwinding: another thread (another handle) can take it.
    let w2 = Stream::open(&name).unwrap();
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let g = w2
                .lock(Some(5 * SEC))
                .expect("lock left held after a panic");
            g.write_slice(&[6i16; 3]).unwrap();
        });
    });
    assert_eq!(r.read::<i16>().unwrap().as_slice().unwrap(), &[6, 6, 6]);
    assert_eq!(r.count(), 2);
    // Through a guard too.
    let g = w.lock(Some(SEC)).unwrap();
    let e = g
        .write_view(|_: &mut [i16]| Err::<(), _>("nope"))
        .unwrap_err();
    assert!(matches!(e, Error::WriteAborted { .. }));
    drop(g);
    assert!(matches!(r.read::<i16>(), Err(Error::Inconsistent { .. })));
    w.clear().unwrap();
    assert_eq!(r.read::<i16>().unwrap().as_slice().unwrap(), &[0, 0, 0]);
}

#[test]
fn clear_publishes_zeros() {
    let name = unique_name("clear");
    let _c = Cleanup::new([&name]);
    let w = Stream::create(&name, &[2, 2], Dtype::Complex128).unwrap();
    w.write_slice(&[Complex64::new(1.0, -1.0); 4]).unwrap();
    w.clear().unwrap();
    assert_eq!(w.count(), 2);
    assert!(
        w.read::<Complex64>()
            .unwrap()
            .iter()
            .all(|c| *c == Complex64::new(0.0, 0.0))
    );
}

// ----- the lock guard -----

#[test]
fn lock_guard_is_reentrant_exclusive_and_exposes_the_live_buffer() {
    let name = unique_name("lock");
    let _c = Cleanup::new([&name]);
    let s = Stream::create(&name, &[4], Dtype::U64).unwrap();
    let other = Stream::open(&name).unwrap();
    let g1 = s.lock(Some(SEC)).unwrap();
    let g2 = s.lock(Some(SEC)).expect("reentrant in the same thread");
    // A plain write re-locks reentrantly; so does a second handle in the same thread.
    s.write_slice(&[1u64, 2, 3, 4]).unwrap();
    other.write_slice(&[2u64, 3, 4, 5]).unwrap();
    g2.write_slice(&[3u64, 4, 5, 6]).unwrap();
    assert_eq!(g1.live::<u64>().unwrap().as_slice().unwrap(), &[3, 4, 5, 6]);
    assert_eq!(g1.stream().name(), name);
    assert!(matches!(g1.live::<u32>(), Err(Error::DtypeMismatch { .. })));
    // Another thread is excluded until both guards are gone.
    std::thread::scope(|sc| {
        let t = sc.spawn(|| other.lock(Some(Duration::from_millis(100))).map(|_| ()));
        let e = t.join().unwrap().unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
        assert!(e.to_string().contains(&name), "{e}");
    });
    drop(g2);
    std::thread::scope(|sc| {
        let t = sc.spawn(|| other.lock(Some(Duration::from_millis(100))).map(|_| ()));
        assert!(
            matches!(t.join().unwrap(), Err(Error::Timeout { .. })),
            "one level still held"
        );
    });
    drop(g1);
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let g = other.lock(Some(5 * SEC)).unwrap();
            g.write(&shmstream::ndarray::arr1(&[9u64, 9, 9, 9]))
                .unwrap();
            let live = g.live::<u64>().unwrap();
            assert_eq!(live.as_slice().unwrap(), &[9, 9, 9, 9]);
        });
    });
    assert_eq!(s.read::<u64>().unwrap().as_slice().unwrap(), &[9, 9, 9, 9]);
    assert_eq!(s.count(), 4);
}

#[test]
fn lock_serializes_read_modify_write_across_threads() {
    let name = unique_name("rmw");
    let _c = Cleanup::new([&name]);
    let s = Arc::new(Stream::create(&name, &[1], Dtype::I64).unwrap());
    s.write_slice(&[0i64]).unwrap();
    const N: i64 = 300;
    std::thread::scope(|sc| {
        for _ in 0..3 {
            let h = Stream::open(&name).unwrap();
            sc.spawn(move || {
                for _ in 0..N {
                    let g = h.lock(Some(common::LONG)).unwrap();
                    let v = g.live::<i64>().unwrap()[[0]];
                    g.write_slice(&[v + 1]).unwrap();
                }
            });
        }
    });
    assert_eq!(s.read::<i64>().unwrap()[[0]], 3 * N);
    assert_eq!(s.count(), 3 * N as u64 + 1);
}

/// A live view after a fill aborted under the same guard is refused: the payload holds the
/// aborted bytes (it used to be lent as the frame, so a read-modify-write published torn
/// data); the next fill starts from those bytes, and a whole-frame write recovers.
#[test]
fn a_live_view_after_an_aborted_write_is_refused_until_a_whole_frame_is_written() {
    let name = unique_name("live-abort");
    let _c = Cleanup::new([&name]);
    let s = Stream::create(&name, &[4], Dtype::U32).unwrap();
    s.write_slice(&[1u32; 4]).unwrap();
    let g = s.lock(Some(SEC)).unwrap();
    let aborted = g.write_view(|buf: &mut [u32]| {
        buf[0] = 9;
        Err::<(), _>(std::io::Error::other("camera unplugged"))
    });
    assert!(
        matches!(aborted, Err(Error::WriteAborted { .. })),
        "{aborted:?}"
    );
    let e = g.live::<u32>().map(|_| ()).unwrap_err();
    assert!(matches!(e, Error::Inconsistent { .. }), "{e:?}");
    let m = e.to_string();
    assert!(m.contains(&name) && m.contains("write_slice"), "{m}");
    g.write_view(|buf: &mut [u32]| {
        assert_eq!(
            buf,
            &[9, 1, 1, 1],
            "the aborted write's bytes, not the previous frame"
        );
        Err::<(), _>(std::io::Error::other("again"))
    })
    .unwrap_err();
    g.write_slice(&[2u32; 4]).unwrap();
    assert_eq!(g.live::<u32>().unwrap().as_slice().unwrap(), &[2; 4]);
}

/// A wait for a new frame while this thread holds the stream's write lock is refused at
/// once (nobody else can publish: it waited out its whole timeout, or forever); a frame
/// already newer than the one waited past is still returned, and after the guard the same
/// wait works.
#[test]
fn waits_for_a_new_frame_under_this_threads_own_lock_are_refused_at_once() {
    let name = unique_name("wait-own-lock");
    let _c = Cleanup::new([&name]);
    let s = Stream::create(&name, &[2], Dtype::U16).unwrap();
    let g = s.lock(Some(SEC)).unwrap();
    g.write_slice(&[1u16, 2]).unwrap();
    assert_eq!(
        s.read_new::<u16>(Some(SEC)).unwrap().as_slice().unwrap(),
        &[1, 2]
    );
    assert_eq!(s.wait_for_count(0, Some(SEC)).unwrap(), 1);
    // Long timeouts: a wait that is not refused but waits its timeout out fails the bound
    // below, which a descheduled thread on a loaded host does not reach.
    let t0 = Instant::now();
    for e in [
        s.read_new::<u16>(Some(LONG)).map(|_| ()).unwrap_err(),
        s.read_new_into_slice(&mut [0u16; 2], Some(LONG))
            .map(|_| ())
            .unwrap_err(),
        s.wait_for_count(1, Some(LONG)).map(|_| ()).unwrap_err(),
        s.read_after::<u16>(1, Some(LONG)).map(|_| ()).unwrap_err(),
    ] {
        assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
        let m = e.to_string();
        assert!(m.contains(&name) && m.contains("WriteGuard"), "{m}");
    }
    assert!(t0.elapsed() < LONG / 2, "refused late: {:?}", t0.elapsed());
    // A poll waits for nothing: it times out as it does without the lock.
    let polled = s.read_new::<u16>(Some(Duration::ZERO)).unwrap_err();
    assert!(matches!(polled, Error::Timeout { .. }), "{polled:?}");
    // An aborted write under the guard is reported once, then a wait is refused.
    g.write_view(|_: &mut [u16]| Err::<(), _>(std::io::Error::other("aborted")))
        .unwrap_err();
    let first = s.read_new::<u16>(Some(SEC)).unwrap_err();
    assert!(matches!(first, Error::Inconsistent { .. }), "{first:?}");
    let again = s.read_new::<u16>(Some(SEC)).unwrap_err();
    assert!(matches!(again, Error::Unsupported { .. }), "{again:?}");
    drop(g);
    std::thread::scope(|sc| {
        sc.spawn(|| s.write_slice(&[3u16, 4]).unwrap());
        assert_eq!(
            s.read_new::<u16>(Some(5 * SEC))
                .unwrap()
                .as_slice()
                .unwrap(),
            &[3, 4]
        );
    });
}

// ----- read-only and closed handles -----

#[test]
fn readonly_handles_refuse_every_write() {
    let name = unique_name("ro");
    let _c = Cleanup::new([&name]);
    let w = Stream::create(&name, &[2], Dtype::U8).unwrap();
    w.write_slice(&[1u8, 2]).unwrap();
    let r = Stream::open_readonly(&name).unwrap();
    assert!(r.is_readonly());
    let check = |e: Error| {
        assert!(matches!(e, Error::ReadOnly { .. }), "{e:?}");
        let m = e.to_string();
        assert!(m.contains(&name) && m.contains("Stream::open"), "{m}");
    };
    check(r.write_slice(&[3u8, 4]).unwrap_err());
    check(r.write_slice_frame(&[3u8, 4], 1).unwrap_err());
    check(r.write(&shmstream::ndarray::arr1(&[3u8, 4])).unwrap_err());
    check(
        r.write_view(|_: &mut [u8]| Ok::<(), Error>(()))
            .unwrap_err(),
    );
    check(r.clear().unwrap_err());
    check(r.lock(Some(SEC)).map(|_| ()).unwrap_err());
    check(r.unlink().unwrap_err());
    assert!(
        shmstream::stat(&name).is_ok(),
        "a read-only handle unlinked"
    );
    assert_eq!(r.count(), 1);
    assert_eq!(r.read::<u8>().unwrap().as_slice().unwrap(), &[1, 2]);
}

#[test]
fn closed_handles_error_naming_the_stream() {
    let name = unique_name("closed");
    let _c = Cleanup::new([&name]);
    let s = Stream::create(&name, &[2], Dtype::I8).unwrap();
    let other = Stream::open(&name).unwrap();
    s.write_slice(&[1i8, 2]).unwrap();
    let g = s.lock(Some(SEC)).unwrap();
    assert!(!s.is_closed());
    s.close();
    s.close(); // idempotent
    assert!(s.is_closed());
    assert!(!other.is_closed(), "closing one handle closed another");
    let check = |e: Error| {
        assert!(matches!(e, Error::Closed { .. }), "{e:?}");
        assert_eq!(e.stream_name(), name);
        assert!(
            e.to_string().contains(&name) && e.to_string().contains("open the stream again"),
            "{e}"
        );
    };
    check(g.write_slice(&[3i8, 4]).unwrap_err());
    check(g.live::<i8>().map(|_| ()).unwrap_err());
    drop(g);
    check(s.read::<i8>().unwrap_err());
    check(s.write_slice(&[3i8, 4]).unwrap_err());
    check(s.lock(Some(SEC)).map(|_| ()).unwrap_err());
    check(s.read_new::<i8>(Some(SEC)).unwrap_err());
    check(s.wait_for_count(0, Some(SEC)).unwrap_err());
    check(s.read_into_slice(&mut [0i8; 2]).unwrap_err());
    // Other handles are unaffected, and the lock was released.
    other.write_slice(&[5i8, 6]).unwrap();
    assert_eq!(other.read::<i8>().unwrap().as_slice().unwrap(), &[5, 6]);
}

fn close_wakes_blocked_reader(notify: bool) {
    let name = unique_name("closewake");
    let _c = Cleanup::new([&name]);
    let w = StreamOptions::new(&name)
        .shape(&[1])
        .dtype(Dtype::F64)
        .notify(notify)
        .create()
        .unwrap();
    let r = Arc::new(Stream::open_readonly(&name).unwrap());
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let r2 = r.clone();
    let t = std::thread::spawn(move || {
        tid_tx.send(common::gettid()).unwrap();
        let t0 = Instant::now();
        (
            r2.read_new::<f64>(Some(Duration::from_secs(60))),
            t0.elapsed(),
        )
    });
    // Closed once the reader is parked in its wait (a close before it would be refused on
    // entry, and wake nothing).
    let tid = tid_rx.recv().unwrap();
    common::wait_parked_on_stream(std::process::id(), tid as u32, &name, notify);
    r.close();
    let (res, waited) = t.join().unwrap();
    assert!(
        matches!(res, Err(Error::Closed { .. })),
        "notify={notify}: {res:?}"
    );
    assert!(
        waited < Duration::from_secs(10),
        "close did not wake the reader: {waited:?}"
    );
    // The writer and the stream are fine.
    w.write_slice(&[1.0f64]).unwrap();
    assert_eq!(
        Stream::open_readonly(&name).unwrap().read::<f64>().unwrap()[[0]],
        1.0
    );
}

#[test]
fn close_wakes_a_thread_blocked_in_read_new() {
    close_wakes_blocked_reader(true);
    close_wakes_blocked_reader(false);
}

// ----- configuration, description, metadata -----

#[test]
fn config_round_trips_through_serde_json() {
    let name = unique_name("config");
    let _c = Cleanup::new([&name]);
    let s = StreamOptions::new(&name)
        .shape(&[3, 5])
        .dtype(Dtype::Complex64)
        .notify(true)
        .create()
        .unwrap();
    let cfg = s.to_config();
    assert_eq!(cfg.name, name);
    assert_eq!(cfg.shape, vec![3, 5]);
    assert_eq!(cfg.dtype, Dtype::Complex64);
    assert!(cfg.notify);
    assert_eq!(cfg.gpu_device, None);
    let json = serde_json::to_string(&cfg).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["dtype"], "complex64");
    assert_eq!(v["shape"], serde_json::json!([3, 5]));
    assert_eq!(v["notify"], true);
    // pyshmem's keys alone for a stream without history; the depth where it keeps some.
    assert!(v.get("history").is_none(), "{json}");
    let kept = StreamConfig {
        history: 4,
        ..cfg.clone()
    };
    assert_eq!(serde_json::to_value(&kept).unwrap()["history"], 4);
    let back: StreamConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, cfg);
    let old_id = s.instance_id();
    drop(s);
    shmstream::unlink(&name).unwrap();
    let again = Stream::create_from_config(&back).unwrap();
    assert_eq!(
        (again.name(), again.shape(), again.dtype(), again.notify()),
        (name.as_str(), &[3usize, 5][..], Dtype::Complex64, true)
    );
    assert_ne!(again.instance_id(), old_id);
    assert_eq!(again.to_config(), cfg);
    // A minimal config (pyshmem's keys) defaults the rest.
    let name2 = unique_name("config2");
    let _c2 = Cleanup::new([&name2]);
    let min: StreamConfig =
        serde_json::from_value(serde_json::json!({"name": name2, "shape": [4]})).unwrap();
    let s2 = Stream::create_from_config(&min).unwrap();
    assert_eq!((s2.dtype(), s2.notify()), (Dtype::F32, false));
    // Creating from the config of an existing stream fails cleanly.
    assert!(matches!(
        Stream::create_from_config(&min),
        Err(Error::AlreadyExists { .. })
    ));
}

/// A config's dtype is a numpy name, as pyshmem reads it: `"u8"`, `uint64` to numpy and
/// `uint8` to this crate's parser, is refused (it created a `uint8` stream here and a
/// `uint64` one in pyshmem).
#[test]
fn a_config_dtype_is_a_numpy_name_only() {
    let parsed = serde_json::from_str::<StreamConfig>(r#"{"name":"x","shape":[1],"dtype":"u8"}"#);
    let e = parsed.map(|c| c.dtype).unwrap_err().to_string();
    assert!(e.contains("uint64") && e.contains("\"uint8\""), "{e}");
    let ok: StreamConfig =
        serde_json::from_str(r#"{"name":"x","shape":[1],"dtype":"uint8"}"#).unwrap();
    assert_eq!(ok.dtype, Dtype::U8);
    // Rust-side parsing (the CLI's `--dtype`) keeps the short names.
    assert_eq!("u8".parse::<Dtype>(), Ok(Dtype::U8));
}

/// A `Dtype` read by serde anywhere (not only in a config) is a numpy name, as serde writes
/// it: `"u8"` was read as `uint8`, which numpy and pyshmem read as `uint64`. What the crate
/// writes (a stat's JSON) reads back.
#[test]
fn a_dtype_deserializes_from_its_numpy_name_only() {
    let e = serde_json::from_str::<Dtype>("\"u8\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("uint64") && e.contains("\"uint8\""), "{e}");
    for d in Dtype::ALL {
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{}\"", d.numpy_name()));
        assert_eq!(serde_json::from_str::<Dtype>(&json).unwrap(), d);
    }
    let name = unique_name("dtype-json");
    let _c = Cleanup::new([&name]);
    let _s = Stream::create(&name, &[3], Dtype::U64).unwrap();
    let stat = shmstream::stat(&name).unwrap();
    let back: shmstream::StreamStat =
        serde_json::from_str(&serde_json::to_string(&stat).unwrap()).unwrap();
    assert_eq!(back, stat);
    // `FromStr` (the CLI's `--dtype`) keeps the short names.
    assert_eq!("u8".parse::<Dtype>(), Ok(Dtype::U8));
}

#[test]
fn describe_and_display_summarize_the_stream() {
    let name = unique_name("describe");
    let _c = Cleanup::new([&name]);
    let s = Stream::create(&name, &[2, 7], Dtype::U16).unwrap();
    s.write_slice_frame(&[1u16; 14], 77).unwrap();
    let d = s.describe();
    for want in [
        name.as_str(),
        "[2, 7]",
        "uint16",
        "28 bytes",
        "count:        1",
        "frame_id:     77",
        "owner:        true",
        "notify:       false",
        "producer:     alive",
    ] {
        assert!(d.contains(want), "describe() lacks {want:?}:\n{d}");
    }
    assert!(d.contains(&s.instance_id()), "{d}");
    // The same summary, but for the age, which moves between the two calls.
    let without_age = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with("age:"))
            .map(str::to_owned)
            .collect()
    };
    let shown = format!("{s}");
    for t in [&d, &shown] {
        assert_eq!(
            t.lines().filter(|l| l.starts_with("age:")).count(),
            1,
            "{t}"
        );
    }
    assert_eq!(without_age(&shown), without_age(&d));
}

#[test]
fn age_staleness_and_producer_liveness() {
    let name = unique_name("age");
    let _c = Cleanup::new([&name]);
    let s = Stream::create(&name, &[1], Dtype::F32).unwrap();
    assert_eq!(s.age(), None);
    assert!(
        s.is_stale(Duration::from_secs(3600)),
        "a never-written stream is stale"
    );
    assert!(s.producer_alive());
    let unix_now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let before = unix_now();
    s.write_slice(&[1.0f32]).unwrap();
    let age = s.age().expect("written");
    let after = unix_now();
    // The stamp falls between the two clock reads, and the age is now − stamp (not, say,
    // now / stamp, which is about 1 s); 1 ms covers the rounding of f64 seconds (0.24 µs
    // steps) many times over.
    assert!(
        age.as_secs_f64() <= after - before + 1e-3,
        "{age:?} after a write {} s ago at most",
        after - before
    );
    assert!(!s.is_stale(Duration::from_secs(3600)));
    // Stale past any age at all once the clock has moved past the stamp.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while s.age().expect("written").is_zero() {
        assert!(
            std::time::Instant::now() < deadline,
            "the clock stood still"
        );
    }
    assert!(s.is_stale(Duration::ZERO), "older than zero is stale");
    assert!((unix_now() - s.write_time()).abs() < 30.0);
}

#[test]
fn error_messages_name_the_stream_and_the_remedy() {
    let name = unique_name("errors");
    let _c = Cleanup::new([&name]);
    let e = Stream::open(&name).unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }));
    let m = e.to_string();
    assert!(
        m.starts_with(&format!(
            "stream '{name}' not found: create it first or check the name"
        )),
        "{m}"
    );
    assert_eq!(e.stream_name(), name);
    // The hint lists existing streams (a similar name created now shows up).
    let similar = format!("{name}_raw");
    let _c2 = Cleanup::new([&similar]);
    let _s = Stream::create(&similar, &[1], Dtype::U8).unwrap();
    let m = shmstream::stat(&name).unwrap_err().to_string();
    assert!(
        m.contains("(streams: ") && m.contains(&similar) || m.contains("more)"),
        "{m}"
    );

    let s = Stream::create(&name, &[2], Dtype::F32).unwrap();
    let m = s.write_slice(&[1.0f64, 2.0]).unwrap_err().to_string();
    assert!(
        m.contains(&name) && m.contains("float32") && m.contains("float64"),
        "{m}"
    );
    let m = s.write_slice(&[1.0f32]).unwrap_err().to_string();
    assert!(
        m.contains(&name) && m.contains("2 elements ([2])") && m.contains("the slice has 1"),
        "{m}"
    );
    let m = Stream::create(&name, &[2], Dtype::F32)
        .unwrap_err()
        .to_string();
    assert!(m.contains(&name) && m.contains("Stream::open"), "{m}");
    let m = s
        .wait_for_count(0, Some(Duration::from_millis(1)))
        .unwrap_err()
        .to_string();
    assert!(m.contains(&name) && m.contains("timed out"), "{m}");
}

/// Review item: a byte buffer of the wrong size was a `ShapeMismatch` calling byte counts
/// shapes; it is a `BufferSize` saying both sizes and the buffer to pass.
#[test]
fn a_byte_buffer_of_the_wrong_size_says_the_frame_and_buffer_bytes() {
    let name = unique_name("bufsize");
    let _c = Cleanup::new([&name]);
    let s = Stream::create(&name, &[2, 3], Dtype::U16).unwrap();
    let e = s.write_bytes_frame(&[0u8; 11], 1).unwrap_err();
    assert!(
        matches!(
            e,
            Error::BufferSize {
                expected_bytes: 12,
                given_bytes: 11,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "buffer size mismatch on stream '{name}': a frame is 12 bytes, the buffer 11: pass \
             a buffer of size_bytes() (12) bytes"
        )
    );
    let e = s.read_publication_into_bytes(&mut [0u8; 13]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::BufferSize {
                expected_bytes: 12,
                given_bytes: 13,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.stream_name(), name);
    // Bytes of the right size are written as they are: only a bool stream's must be 0 or 1.
    let bytes: Vec<u8> = (0..12).map(|i| 200 + i).collect();
    s.write_bytes_frame(&bytes, 9).unwrap();
    let mut back = [0u8; 12];
    let info = s.read_publication_into_bytes(&mut back).unwrap();
    assert_eq!((back.to_vec(), info.frame_id), (bytes, 9));
    // A slice of the wrong number of elements says elements, not a shape of its length.
    let e = s.write_slice(&[0u16; 5]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::SliceLength {
                expected_len: 6,
                given_len: 5,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "slice length mismatch on stream '{name}': a frame is 6 elements ([2, 3]), the \
             slice has 5: pass a slice of len() (6) elements"
        )
    );
    let e = s.read_into_slice(&mut [0u16; 7]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::SliceLength {
                expected_len: 6,
                given_len: 7,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("len() (6) elements"), "{e}");
    assert_eq!(e.stream_name(), name);
}

/// Writes `meta` as `name`'s `_meta` and a payload of `payload` bytes, as another program's
/// stream (no lock file).
fn plant_stream(name: &str, meta: &[u8], payload: usize) -> [std::path::PathBuf; 2] {
    use std::os::unix::fs::OpenOptionsExt;
    let ids = [
        shmstream::name::meta_id(name),
        shmstream::name::segment_id(name),
    ];
    let paths = ids.map(|id| std::path::Path::new("/dev/shm").join(id));
    for (path, bytes) in paths.iter().zip([meta.to_vec(), vec![0u8; payload]]) {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes))
            .unwrap();
    }
    paths
}

/// Review item: a header of another pyshmem format version (a legacy v2 header as pyshmem
/// 1.0.4 made them, a v3 header of version 4, unknown flags, an unknown dtype code) is
/// refused naming the pyshmem that made it as the remedy, never telling the user to unlink
/// and recreate a live producer's stream (only to remove it once nobody uses it); a header
/// broken for good still says to unlink and recreate it.
#[test]
fn another_pyshmem_format_version_is_refused_without_saying_to_unlink_it() {
    use shmstream::format::{self, FormatError, offset};
    let name = unique_name("otherversion");
    let _c = Cleanup::new([&name]);
    let v3 = |set: &dyn Fn(&mut [u8; format::META_BYTES])| {
        let mut b = format::encode_new(&format::NewHeader {
            name: &name,
            dtype: Dtype::F32,
            shape: &[4],
            flags: 0,
            device_index: -1,
            creator_pid: 1,
            instance_id: [5; 16],
        });
        set(&mut b);
        let crc = format::crc(&b);
        b[offset::HEADER_CRC..offset::HEADER_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        b.to_vec()
    };
    // pyshmem 1.0.4's v2 header: 32 float64s, the version (2.0) first.
    let v2: Vec<u8> = [2.0f64, 0.0, 9.0, 1.0, 16.0, 0.0, -1.0, 1.0]
        .into_iter()
        .chain(std::iter::repeat_n(0.0, 24))
        .flat_map(f64::to_le_bytes)
        .collect();
    /// What is planted, the rule it breaks, and whether that means another version.
    type Case = (&'static str, Vec<u8>, fn(&FormatError) -> bool, bool);
    let cases: [Case; 5] = [
        ("v2", v2, |r| *r == FormatError::LegacyV2, true),
        (
            "version 4",
            v3(&|b| b[offset::VERSION] = 4),
            |r| *r == FormatError::Version(4),
            true,
        ),
        (
            "flags",
            v3(&|b| b[offset::FLAGS + 1] |= 2),
            |r| matches!(r, FormatError::UnknownFlags(_)),
            true,
        ),
        (
            "dtype",
            v3(&|b| b[offset::DTYPE] = 14),
            |r| *r == FormatError::DtypeCode(14),
            true,
        ),
        (
            "ndim",
            v3(&|b| b[offset::NDIM] = 20),
            |r| *r == FormatError::Ndim(20),
            false,
        ),
    ];
    for (case, meta, rule, other_version) in cases {
        let planted = plant_stream(&name, &meta, 16);
        let got = [
            Stream::open(&name).map(drop),
            Stream::open_readonly(&name).map(drop),
            shmstream::stat(&name).map(drop),
        ];
        for p in &planted {
            let _ = std::fs::remove_file(p);
        }
        for e in got.map(Result::unwrap_err) {
            assert!(
                matches!(&e, Error::CorruptHeader { rule: r, .. } if rule(r)),
                "{case}: {e:?}"
            );
            let text = e.to_string();
            assert!(text.contains(&name), "{case}: {text}");
            assert_eq!(
                !text.contains("unlink and recreate"),
                other_version,
                "{case}: {text}"
            );
            // Removal only once nobody uses it; v2 is read by no shmstream at all.
            assert_eq!(
                text.contains("once no process uses it"),
                other_version,
                "{case}: {text}"
            );
            assert_eq!(
                text.contains("upgrade shmstream"),
                other_version && case != "v2",
                "{case}: {text}"
            );
            // pyshmem 1.4.0 reads v2 too: not "open it with that pyshmem" (1.0.x).
            assert_eq!(
                text.contains("pyshmem up to 1.4.0 reads it")
                    && text.contains("create it again with a current writer"),
                case == "v2",
                "{case}: {text}"
            );
        }
    }
}

/// Review item: a dtype mismatch says which Rust type reads the stream (a complex64 stream
/// is read as `Complex32`, `shmstream::Complex64` being numpy's complex128).
#[test]
fn a_dtype_mismatch_names_the_rust_type_that_reads_the_stream() {
    let name = unique_name("rusttype");
    let _c = Cleanup::new([&name]);
    let s = Stream::create(&name, &[2], Dtype::Complex64).unwrap();
    let e = s.read::<Complex64>().unwrap_err();
    assert!(
        matches!(
            e,
            Error::DtypeMismatch {
                expected: Dtype::Complex64,
                given: Dtype::Complex128,
                ..
            }
        ),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains(&name)
            && text.contains("use the element type Complex32")
            && text.contains("with_dtype!"),
        "{text}"
    );
    assert!(s.read::<Complex32>().is_ok());
}

#[test]
fn a_yielding_waiter_reads_each_new_frame_and_keeps_its_deadline() {
    for notify in [true, false] {
        let name = unique_name(if notify { "yieldn" } else { "yieldp" });
        let _c = Cleanup::new([&name]);
        let s = StreamOptions::new(&name)
            .shape(&[1])
            .dtype(Dtype::U32)
            .notify(notify)
            .create()
            .unwrap();
        s.set_wait_strategy(shmstream::WaitStrategy::Yield);
        assert_eq!(s.wait_strategy(), shmstream::WaitStrategy::Yield);
        let w = Stream::open(&name).unwrap();
        let seen = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|sc| {
            sc.spawn(|| {
                let give_up = Instant::now() + common::LONG;
                for v in 1..=50u32 {
                    // Each frame only once the reader has the one before (or the reader
                    // failed: then stop, so its assertion is what the test reports).
                    while seen.load(std::sync::atomic::Ordering::Acquire) != v - 1 {
                        if Instant::now() > give_up {
                            return;
                        }
                        std::thread::yield_now();
                    }
                    w.write_slice(&[v]).unwrap();
                }
            });
            for v in 1..=50u32 {
                assert_eq!(s.read_new::<u32>(Some(common::LONG)).unwrap()[[0]], v);
                seen.store(v, std::sync::atomic::Ordering::Release);
            }
        });
        let t0 = Instant::now();
        let res = s.read_new::<u32>(Some(Duration::from_millis(30)));
        assert!(matches!(res, Err(Error::Timeout { .. })), "{res:?}");
        assert!(
            t0.elapsed() >= Duration::from_millis(30),
            "{:?}",
            t0.elapsed()
        );
    }
}

#[test]
fn default_timeout_and_wait_strategy_are_settable() {
    let name = unique_name("cfgwait");
    let _c = Cleanup::new([&name]);
    let s = Stream::create(&name, &[1], Dtype::U8).unwrap();
    assert_eq!(s.default_timeout(), Duration::from_secs(5));
    s.set_default_timeout(Duration::from_millis(250));
    assert_eq!(s.default_timeout(), Duration::from_millis(250));
    use shmstream::WaitStrategy::{Adaptive, Park, Spin, Yield};
    assert_eq!(s.wait_strategy(), Adaptive);
    for strategy in [Park, Yield, Adaptive, Spin] {
        s.set_wait_strategy(strategy);
        assert_eq!(s.wait_strategy(), strategy);
    }
    let w = Stream::open(&name).unwrap();
    std::thread::scope(|sc| {
        sc.spawn(|| w.write_slice(&[8u8]).unwrap());
        assert_eq!(s.read_new::<u8>(Some(common::LONG)).unwrap()[[0]], 8);
    });
    // The default timeout bounds `write` when another thread holds the lock.
    let g = w.lock(Some(SEC)).unwrap();
    std::thread::scope(|sc| {
        let t = sc.spawn(|| {
            let t0 = Instant::now();
            (s.write_slice(&[1u8]), t0.elapsed())
        });
        let (res, took) = t.join().unwrap();
        assert!(matches!(res, Err(Error::Timeout { .. })), "{res:?}");
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(5),
            "{took:?}"
        );
    });
    drop(g);
}

/// A write from inside a `write_view` fill, or while a `WriteGuard::live` view lives, is
/// refused: it would publish in the middle of the open bracket (readers would take a frame
/// never published, and the sequence would go back) or change the payload under the view.
#[test]
fn writes_while_the_payload_is_lent_out_are_refused() {
    let name = unique_name("lent");
    let _c = Cleanup::new([&name]);
    let s = Stream::create(&name, &[4], Dtype::U32).unwrap();
    s.write_slice(&[1u32; 4]).unwrap();
    let r = Stream::open_readonly(&name).unwrap();
    r.set_default_timeout(Duration::from_millis(50));
    let before = s.write_sequence();
    s.write_view(|buf: &mut [u32]| {
        buf[0] = 2;
        let nested = s.write_slice(&[7u32; 4]);
        assert!(
            matches!(nested, Err(Error::Unsupported { .. })),
            "{nested:?}"
        );
        buf[1] = 3;
        // Still inside the bracket: nothing was published halfway, and this thread's own
        // open bracket is not taken for a dead writer's (no generation marked invalid).
        let seen = r.read::<u32>();
        assert!(
            matches!(seen, Err(Error::Unsupported { .. })),
            "a reader inside the fill got {seen:?}"
        );
        assert!(
            s.write_sequence() > 0,
            "the fill's generation was invalidated"
        );
        Ok::<(), std::io::Error>(())
    })
    .unwrap();
    assert_eq!(s.read::<u32>().unwrap().as_slice().unwrap(), &[2, 3, 1, 1]);
    assert_eq!(s.write_sequence(), before + 2, "one publication");
    let g = s.lock(Some(SEC)).unwrap();
    let v = g.live::<u32>().unwrap();
    for e in [
        g.write_slice(&[5u32; 4]).unwrap_err(),
        s.write_slice(&[5u32; 4]).unwrap_err(),
    ] {
        assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    }
    assert_eq!(v.as_slice().unwrap(), &[2, 3, 1, 1]);
    // Views share the payload with each other, never with a fill.
    assert_eq!(g.live::<u32>().unwrap().as_slice(), v.as_slice());
    drop(v);
    g.write_view(|buf: &mut [u32]| {
        let aliased = g.live::<u32>().map(|_| ());
        assert!(
            matches!(aliased, Err(Error::Unsupported { .. })),
            "a live view inside the fill: {aliased:?}"
        );
        buf.fill(6);
        Ok::<(), std::io::Error>(())
    })
    .unwrap();
    g.write_slice(&[5u32; 4]).unwrap();
    drop(g);
    assert_eq!(s.read::<u32>().unwrap().as_slice().unwrap(), &[5u32; 4]);
}
