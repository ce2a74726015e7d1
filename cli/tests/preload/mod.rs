//! Fault-injecting libraries for `LD_PRELOAD`, built with the C compiler at test time, shared
//! by the CLI's test files (each is its own crate).

// Each test file uses its own part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A library for `LD_PRELOAD` whose `fdatasync` and `fsync` fail with EIO, as they do when
/// the disk refuses data it had accepted (a writeback EIO, NFS ENOSPC or quota at the flush),
/// and say on stderr that they were called ([`SYNC_CALLED`]).
pub const FAILING_SYNC: &str = r#"
#include <errno.h>
#include <string.h>
#include <unistd.h>
static int refuse(const char *said) {
    (void)!write(2, said, strlen(said));
    errno = EIO;
    return -1;
}
int fdatasync(int fd) { (void)fd; return refuse("failing_sync: fdatasync called\n"); }
int fsync(int fd) { (void)fd; return refuse("failing_sync: fsync called\n"); }
__attribute__((constructor)) static void loaded(void) {
    (void)!write(2, "failing_sync loaded\n", 20);
}
"#;

/// What [`FAILING_SYNC`] writes on stderr when the loader preloads it: without it a test
/// of the library's effect would test nothing.
pub const SYNC_LOADED: &str = "failing_sync loaded";

/// What [`FAILING_SYNC`] writes on stderr when it is called.
pub const SYNC_CALLED: &str = "failing_sync: ";

/// Builds the C `source` into `dir/<name>.so` for `LD_PRELOAD`; `None` (said on stderr)
/// without a C compiler (`cc` not found), unless `SHMSTREAM_REQUIRE_PYTHON=1` (CI, where
/// every test must run). Panics with the compiler's stderr when it fails, or cannot be run.
pub fn preload_lib(dir: &Path, name: &str, source: &str) -> Option<PathBuf> {
    let (src, lib) = (
        dir.join(format!("{name}.c")),
        dir.join(format!("{name}.so")),
    );
    std::fs::write(&src, source).unwrap();
    // The C compiler that builds cfitsio for this crate.
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .output();
    match built {
        Ok(o) if o.status.success() => Some(lib),
        Ok(o) => panic!(
            "cc could not build the fault-injecting library {name} ({}):\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && std::env::var("SHMSTREAM_REQUIRE_PYTHON").is_ok_and(|v| v == "1") =>
        {
            panic!("SHMSTREAM_REQUIRE_PYTHON=1 but no C compiler (cc) to build {name}: {e}")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIP: no C compiler (cc) to build the fault-injecting library {name}: {e}");
            None
        }
        Err(e) => panic!("running cc to build the fault-injecting library {name}: {e}"),
    }
}

/// A library for `LD_PRELOAD` whose `shm_open` of any object whose name ends in `_meta` (a
/// stream's header in `/dev/shm`), or in `$SHM_EMFILE_SUFFIX` when that is set (`_hist`: a
/// history ring), fails with EMFILE, as it does in a process out of file descriptors, saying
/// so on stderr ([`SHM_EMFILE_REFUSED`]); every other object opens through the real
/// `shm_open`. `shm_open` is the call the library opens segments with (`sys::shm_open`);
/// glibc's own `open` inside it cannot be interposed, so `open`/`openat` are left alone.
pub const SHM_EMFILE: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>
typedef int (*shm_open_fn)(const char *, int, mode_t);
int shm_open(const char *name, int oflag, mode_t mode) {
    const char *suffix = getenv("SHM_EMFILE_SUFFIX");
    if (suffix == NULL || *suffix == '\0') {
        suffix = "_meta";
    }
    size_t n = strlen(name), k = strlen(suffix);
    if (n >= k && strcmp(name + n - k, suffix) == 0) {
        static const char said[] = "shm_emfile: refused ";
        (void)!write(2, said, sizeof said - 1);
        (void)!write(2, name, n);
        (void)!write(2, "\n", 1);
        errno = EMFILE;
        return -1;
    }
    shm_open_fn real = (shm_open_fn)dlsym(RTLD_NEXT, "shm_open");
    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return real(name, oflag, mode);
}
__attribute__((constructor)) static void loaded(void) {
    static const char said[] = "shm_emfile loaded\n";
    (void)!write(2, said, sizeof said - 1);
}
"#;

/// What [`SHM_EMFILE`] writes on stderr when the loader preloads it.
pub const SHM_EMFILE_LOADED: &str = "shm_emfile loaded";

/// What [`SHM_EMFILE`] writes on stderr each time it refuses an object (its name follows).
pub const SHM_EMFILE_REFUSED: &str = "shm_emfile: refused ";
