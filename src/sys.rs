//! Thin, safe wrappers over the Linux calls the crate makes: POSIX shm objects, `flock`,
//! futex, and process liveness. Raw `libc` use lives here, but for a call on memory another
//! module maps (the history ring's `pwrite` of a slot), which stays beside that mapping, and
//! the CUDA modules' own.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// The real user id of this process.
pub(crate) fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// The effective user id (the owner of the files this process creates).
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// This process's file-size limit (`ulimit -f`, `RLIMIT_FSIZE`) in bytes; `None` when
/// unlimited or unknown. Sizing a segment past it raises `SIGXFSZ`, whose default action
/// kills the process (`Segment::create` refuses such a size first).
pub(crate) fn file_size_limit() -> Option<u64> {
    soft_limit(libc::RLIMIT_FSIZE as i32)
}

/// This process's address-space limit (`ulimit -v`, `RLIMIT_AS`) in bytes, if finite.
pub(crate) fn address_space_limit() -> Option<u64> {
    soft_limit(libc::RLIMIT_AS as i32)
}

/// The soft limit on `resource`, if finite.
fn soft_limit(resource: i32) -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is valid for writes of one `rlimit` for the call.
    let rc = unsafe { libc::getrlimit(resource as _, &mut lim) };
    #[allow(clippy::unnecessary_cast)] // the field type differs between targets
    (rc == 0 && lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur as u64)
}

/// Whether `dir` is a directory this process may create files in, as its effective uid
/// (`faccessat(W_OK | X_OK, AT_EACCESS)`): what the lock directory's probe falls back to
/// when it has no descriptor to probe with (`name::python_usable`).
pub(crate) fn writable_dir(dir: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a NUL-terminated path that outlives the call; faccessat reads it only.
    let ok = unsafe {
        libc::faccessat(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::W_OK | libc::X_OK,
            libc::AT_EACCESS,
        )
    } == 0;
    ok && dir.is_dir()
}

/// This process's id, cached (`getpid` is a system call) and renewed in a forked child.
pub(crate) fn pid() -> i64 {
    let p = OWN_PID.load(Ordering::Relaxed);
    if p != 0 {
        return p;
    }
    watch_forks();
    let p = i64::from(std::process::id());
    OWN_PID.store(p, Ordering::Relaxed);
    p
}

/// [`pid`]'s cache; 0 until first asked.
static OWN_PID: AtomicI64 = AtomicI64::new(0);

/// How many forks this process descends through since [`watch_forks`] (0 in the process that
/// called it): state inherited across a fork without exec (a lock's file description and
/// owner) is the parent's, which a changed count tells.
static FORKS: AtomicU64 = AtomicU64::new(0);

/// The fork count ([`FORKS`]); one relaxed load.
pub(crate) fn forks() -> u64 {
    FORKS.load(Ordering::Relaxed)
}

/// Runs in a child right after `fork`: atomic loads and stores, `getpid` and `dup3`, all
/// async-signal-safe (no allocation, no lock), as a child handler of a multi-threaded parent
/// must be. Every registered lock descriptor ([`register_lock_fd`]) is made a descriptor of
/// `/dev/null`: a flock belongs to the open file description, which fork shares, so a child
/// that kept it (a helper that never touches the stream) would keep a dead parent's lock
/// held until it exits. The number stays open, so the child's own close of it later is
/// harmless; a child that locks opens the file afresh (`LockFile::adopt_after_fork`).
extern "C" fn after_fork_in_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: getpid has no preconditions and cannot fail.
    OWN_PID.store(i64::from(unsafe { libc::getpid() }), Ordering::Relaxed);
    drop_listed(&LOCK_FDS, &DEV_NULL);
}

/// [`after_fork_in_child`]'s work on the given list and `/dev/null` descriptor (tests pass
/// their own): each listed descriptor made a copy of `dev_null`, none while it is unset.
fn drop_listed(slots: &[AtomicI32], dev_null: &AtomicI32) {
    let null = dev_null.load(Ordering::Relaxed);
    if null < 0 {
        return;
    }
    for slot in slots {
        let fd = slot.load(Ordering::Relaxed);
        if fd < 0 {
            continue;
        }
        loop {
            // SAFETY: dup3 takes plain integers: it closes `fd` (ours: registered only while
            // open) and makes it a copy of the `/dev/null` descriptor kept for good.
            let rc = unsafe { libc::dup3(null, fd, libc::O_CLOEXEC) };
            if rc >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break;
            }
        }
    }
}

/// How many lock descriptors [`register_lock_fd`] can list; one past them (a process with
/// more than this many lock files open at once) is not covered: a child forked without exec
/// keeps it, and the parent's flock on it, as before the registry existed.
const LOCK_FD_SLOTS: usize = 1024;
/// An empty slot of [`LOCK_FDS`].
const NO_FD: i32 = -1;
/// The open lock descriptors of this process, for [`after_fork_in_child`]: lock-free, as a
/// fork handler needs (a fork while another thread held a mutex would leave it locked).
static LOCK_FDS: [AtomicI32; LOCK_FD_SLOTS] = [const { AtomicI32::new(NO_FD) }; LOCK_FD_SLOTS];
/// A descriptor of `/dev/null` (close-on-exec), opened with the first lock file and kept for
/// the process's life: what a forked child's lock descriptors become. [`NO_FD`] until then,
/// or if it could not be opened (then children keep their lock descriptors).
static DEV_NULL: AtomicI32 = AtomicI32::new(NO_FD);

/// Lists `fd`, an open lock file descriptor, for a child forked without exec to drop (see
/// [`after_fork_in_child`]); call it before the descriptor is first locked, and
/// [`unregister_lock_fd`] before it is closed (a listed number reused by another file would
/// be clobbered in the child). Returns whether it is covered now: `false` when every slot is
/// taken, or when `/dev/null` cannot be opened yet (`EMFILE`; [`prepare_lock_fd_cover`]
/// opens it before the lock file is); it is listed all the same, and covered once a later
/// registration opens `/dev/null`.
pub(crate) fn register_lock_fd(fd: std::os::fd::RawFd) -> bool {
    watch_forks();
    register_in(&LOCK_FDS, &DEV_NULL, fd, open_dev_null)
}

/// Opens the `/dev/null` descriptor that [`register_lock_fd`] copies over lock descriptors
/// in a forked child, if not yet open, and starts counting forks: called before a lock file
/// is opened, so that one taking the last free descriptor is still covered.
pub(crate) fn prepare_lock_fd_cover() {
    watch_forks();
    dev_null_open(&DEV_NULL, open_dev_null);
}

/// `/dev/null`, read-only and close-on-exec; -1 on failure.
fn open_dev_null() -> std::os::fd::RawFd {
    // SAFETY: a constant NUL-terminated path and plain flags.
    unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) }
}

/// Whether `dev_null` holds a descriptor, opening one with `open_null` (-1 on failure) if
/// unset; a thread that loses the race closes its own.
fn dev_null_open(dev_null: &AtomicI32, open_null: impl FnOnce() -> std::os::fd::RawFd) -> bool {
    if dev_null.load(Ordering::Acquire) >= 0 {
        return true;
    }
    let null = open_null();
    if null < 0 {
        return false;
    }
    if dev_null
        .compare_exchange(NO_FD, null, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        // SAFETY: `null` was just opened here, and another thread's won the slot.
        unsafe { libc::close(null) };
    }
    true
}

/// [`register_lock_fd`]'s work on the given list and `/dev/null` descriptor, which
/// `open_null` opens while `dev_null` is unset (tests pass their own).
fn register_in(
    slots: &[AtomicI32],
    dev_null: &AtomicI32,
    fd: std::os::fd::RawFd,
    open_null: impl FnOnce() -> std::os::fd::RawFd,
) -> bool {
    let null_open = dev_null_open(dev_null, open_null);
    // SeqCst: listed before the caller locks it, so a fork that sees the lock sees the entry.
    let listed = slots.iter().any(|slot| {
        slot.compare_exchange(NO_FD, fd, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
    });
    listed && null_open
}

/// Takes `fd` off the list [`register_lock_fd`] made, before it is closed (no-op if it was
/// not listed).
pub(crate) fn unregister_lock_fd(fd: std::os::fd::RawFd) {
    if fd < 0 {
        return;
    }
    for slot in &LOCK_FDS {
        if slot
            .compare_exchange(fd, NO_FD, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
    }
}

/// Starts counting forks ([`forks`]), once per process; before any state a child would
/// inherit exists.
pub(crate) fn watch_forks() {
    // Not a `Once`: a fork while another thread ran it would leave the child's copy running
    // for good, and every lock there waiting on it. A thread that finds the registration
    // under way waits for it a moment (in such a child, that moment ends).
    const NONE: u8 = 0;
    const UNDER_WAY: u8 = 1;
    const DONE: u8 = 2;
    static WATCHING: AtomicU8 = AtomicU8::new(NONE);
    if WATCHING.load(Ordering::Acquire) == DONE {
        return;
    }
    if WATCHING
        .compare_exchange(NONE, UNDER_WAY, Ordering::Acquire, Ordering::Acquire)
        .is_ok()
    {
        // SAFETY: the handler is a plain `extern "C" fn()` that lives for the whole program
        // and only does what is allowed in a child of a multi-threaded fork (see above). A
        // failure (ENOMEM) leaves forks uncounted, as before this existed.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
        WATCHING.store(DONE, Ordering::Release);
        return;
    }
    let since = std::time::Instant::now();
    while WATCHING.load(Ordering::Acquire) != DONE && since.elapsed() < Duration::from_millis(1) {
        std::hint::spin_loop();
    }
}

/// Whether `pid` is this process (`own`) or a live one (the kill(2) probe is skipped for
/// ourselves).
#[cfg(feature = "cuda")]
pub(crate) fn is_self_or_alive(own: i64, pid: i64) -> bool {
    pid == own || pid_alive(pid)
}

/// Whether `pid` is this process or one still running: [`is_self_or_alive`] that counts a
/// zombie (killed, not yet reaped by its parent) as dead, for waits on a process that must
/// act (land, publish, acknowledge). Another process costs a `/proc` read
/// ([`process_running`]), so this serves rate-limited liveness probes (a waiting reader's
/// look for a dead writer, spaced by `Waiter::writer_check_due`; a writer's waits for a
/// landing or an acknowledgement, at most once a millisecond; one-off checks), never one per
/// write or per wake.
pub(crate) fn is_self_or_running(pid: i64) -> bool {
    pid == self::pid() || process_running(pid)
}

/// Whether a process with this pid exists (`kill(pid, 0)`; EPERM counts as existing). One
/// system call, for the paths that ask often; a zombie (exited, not yet reaped by its parent)
/// exists: [`process_running`] tells them apart.
pub(crate) fn pid_alive(pid: i64) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 performs the permission and existence checks only.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether a process with this pid exists and has not exited: a zombie is dead (it holds no
/// lock and will never finish a write). Reads `/proc` (about 12 µs here, against 0.5 µs for
/// [`pid_alive`]), so it serves listings and purges, not waits.
pub(crate) fn process_running(pid: i64) -> bool {
    pid_alive(pid) && !exited(pid)
}

/// Whether `/proc` shows `pid` as exited and not reaped (state `Z`, or `X` while it goes),
/// with no thread left: a main thread that ended while others run shows `Z` too, and the
/// process lives on. A `/proc` that does not show the process (another pid namespace,
/// `hidepid`) says nothing.
fn exited(pid: i64) -> bool {
    leader_exited(pid) && !has_live_threads(pid)
}

/// Whether a thread of `pid`'s group besides its leader has not exited (`/proc/PID/task`; a
/// traced process's dead threads stay there, exited, until their tracer reaps them).
fn has_live_threads(pid: i64) -> bool {
    let leader = pid.to_string();
    std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|d| {
        d.flatten().any(|t| {
            t.file_name() != leader.as_str()
                && !shows_exited(&t.path().join("stat")).unwrap_or(true)
        })
    })
}

/// Whether `/proc` shows `pid`'s main thread as exited (state `Z` or `X`).
fn leader_exited(pid: i64) -> bool {
    shows_exited(std::path::Path::new(&format!("/proc/{pid}/stat"))).unwrap_or(false)
}

/// Whether a `/proc` `stat` file shows state `Z` or `X`; `None` if it cannot be read.
fn shows_exited(stat: &std::path::Path) -> Option<bool> {
    let stat = std::fs::read(stat).ok()?;
    // "PID (COMM) STATE ...": COMM may hold spaces and parentheses, so look after the last ')'.
    let state = stat
        .iter()
        .rposition(|&b| b == b')')
        .and_then(|close| stat.get(close + 2));
    Some(matches!(state, Some(b'Z' | b'X')))
}

/// Reserves the first `len` bytes of `file`'s storage (`posix_fallocate`): a shared-memory
/// object larger than the room left in `/dev/shm` then fails here with `ENOSPC`, where a
/// sparse one would be created and kill its writer with `SIGBUS` when the pages run out. A
/// file system (or libc: musl) that cannot reserve (`EOPNOTSUPP`) gets a zero written into
/// each page of the new, zero-filled object instead, as glibc's own fallback does: readers
/// refuse an object with holes (`Segment::open_written`). Reserved in chunks
/// (`reserve_in_chunks`): tmpfs gives up a whole call at a pending signal. Only for a new
/// file just sized with `set_len`: the fallback writes zeros over whatever it holds.
pub fn reserve(file: &File, len: usize) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(file);
    let allocate = |at, n| {
        // SAFETY: plain integers and a descriptor that `file` keeps open for the call.
        unsafe { libc::posix_fallocate(fd, at, n) }
    };
    match reserve_in_chunks(len, allocate) {
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => write_each_page(file, len as u64),
        r => r,
    }
}

/// Calls `allocate(offset, len)` (an errno, 0 for success) over `[0, len)`: once whole, so
/// that tmpfs refuses a length larger than the file system at once and undoes a partial
/// allocation that runs out of room; then, only if that call was interrupted, in chunks of up
/// to 8 MiB, keeping the finished ones. tmpfs (before Linux 6.10) fails a call with `EINTR`
/// whenever a signal is pending and undoes all it allocated, so the whole length retried
/// under a periodic signal (a profiler's `SIGPROF`) may never finish: an interrupted chunk
/// is retried at half its size (down to a 4 KiB page), and a finished one lets the next grow
/// back. Any other errno ends it.
fn reserve_in_chunks(
    len: libc::off_t,
    mut allocate: impl FnMut(libc::off_t, libc::off_t) -> libc::c_int,
) -> io::Result<()> {
    const MAX: libc::off_t = 8 << 20;
    const PAGE: libc::off_t = 4096;
    if len == 0 {
        return Ok(());
    }
    match allocate(0, len) {
        0 => return Ok(()),
        libc::EINTR => {}
        e => return Err(io::Error::from_raw_os_error(e)),
    }
    let (mut at, mut chunk) = (0, MAX);
    while at < len {
        let n = chunk.min(len - at);
        match allocate(at, n) {
            0 => {
                at += n;
                chunk = (chunk * 2).min(MAX);
            }
            libc::EINTR => chunk = (n / 2).max(PAGE),
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
    Ok(())
}

/// Gives each 4 KiB page of `file`'s first `len` bytes (a new object: all zero) its storage by
/// writing a zero into it ([`reserve`] where `posix_fallocate` cannot).
fn write_each_page(file: &File, len: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    for at in (0..len).step_by(4096) {
        file.write_all_at(&[0], at)?;
    }
    Ok(())
}

/// The system's page size (4096 if `sysconf` cannot say).
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf with a valid name has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as usize } else { 4096 }
}

/// `bytes` rounded up to whole pages of `page` bytes (saturating): what tmpfs stores for a
/// segment of `bytes`.
pub(crate) fn whole_pages(bytes: u64, page: u64) -> u64 {
    bytes.div_ceil(page).saturating_mul(page)
}

/// Room left in `/dev/shm` for an unprivileged process (`statvfs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ShmRoom {
    /// Bytes free.
    pub bytes: u64,
    /// Inodes (files) the filesystem has in all; 0 when it has no inode limit (tmpfs
    /// `nr_inodes=0`).
    pub inodes: u64,
    /// Inodes free.
    pub inodes_free: u64,
}

impl ShmRoom {
    /// Whether a creation of `segments` segments that failed with `ENOSPC` ran out of inodes
    /// (tmpfs `nr_inodes`) rather than bytes, measured once its parts were removed: the
    /// filesystem limits inodes and has fewer free than the creation makes. (Bytes free now
    /// say nothing: another process may have freed them since.)
    pub(crate) fn out_of_inodes(&self, segments: u64) -> bool {
        self.inodes > 0 && self.inodes_free < segments
    }
}

/// The room left in `/dev/shm` (`statvfs`), if it can be read.
pub(crate) fn shm_room() -> Option<ShmRoom> {
    let path = CString::new(SHM_DIR).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `st` is valid for writes of one `statvfs`.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs filled `st` (it returned 0).
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    Some(ShmRoom {
        bytes: st.f_bavail as u64 * st.f_frsize as u64,
        inodes: st.f_files as u64,
        inodes_free: st.f_favail as u64,
    })
}

/// Bytes free for an unprivileged process in `/dev/shm` (`statvfs`), if it can be read.
pub fn shm_available() -> Option<u64> {
    shm_room().map(|room| room.bytes)
}

/// Where Linux keeps POSIX shared-memory objects.
pub(crate) const SHM_DIR: &str = "/dev/shm";

fn shm_path(id: &str) -> io::Result<CString> {
    CString::new(format!("/{id}")).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// `shm_open(id, flags, 0600)` as a `File` (closed on drop, `O_CLOEXEC` set by glibc).
pub(crate) fn shm_open(id: &str, flags: libc::c_int) -> io::Result<File> {
    let path = shm_path(id)?;
    // SAFETY: `path` is a valid NUL-terminated string; flags and mode are plain integers.
    let fd = unsafe { libc::shm_open(path.as_ptr(), flags | libc::O_CLOEXEC, 0o600) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by shm_open and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// `shm_unlink(id)`.
pub(crate) fn shm_unlink(id: &str) -> io::Result<()> {
    let path = shm_path(id)?;
    // SAFETY: `path` is a valid NUL-terminated string.
    if unsafe { libc::shm_unlink(path.as_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `renameat2(from, to, RENAME_NOREPLACE)`: `to` names the object at once and `from` no
/// longer does, with no moment where it has both names; `AlreadyExists` if `to` is taken.
/// `Unsupported` where the file system or kernel lacks the flag.
pub(crate) fn rename_noreplace(from: &std::path::Path, to: &std::path::Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &std::path::Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    };
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call; the other
    // arguments are plain integers (AT_FDCWD: paths taken as given).
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::c_long::from(libc::AT_FDCWD),
            from.as_ptr(),
            libc::c_long::from(libc::AT_FDCWD),
            to.as_ptr(),
            libc::c_long::from(libc::RENAME_NOREPLACE),
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EINVAL | libc::ENOSYS) => io::Error::from(io::ErrorKind::Unsupported),
            _ => e,
        });
    }
    Ok(())
}

/// `flock(fd, op)`; `Ok(false)` when `LOCK_NB` was given and the lock is held elsewhere.
#[cfg(test)]
pub(crate) fn flock(file: &File, op: libc::c_int) -> io::Result<bool> {
    flock_fd(std::os::fd::AsRawFd::as_raw_fd(file), op)
}

#[cfg(test)]
thread_local! {
    /// `flock` calls this thread made (unit tests count a lock try's system calls).
    pub(crate) static FLOCKS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// `flock(2)` on a raw fd the caller keeps open for the duration of the call.
pub(crate) fn flock_fd(fd: std::os::fd::RawFd, op: libc::c_int) -> io::Result<bool> {
    #[cfg(test)]
    FLOCKS.with(|n| n.set(n.get() + 1));
    loop {
        // SAFETY: flock only operates on the descriptor number; an fd closed meanwhile yields
        // EBADF (an error), never memory unsafety.
        if unsafe { libc::flock(fd, op) } == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(err),
        }
    }
}

/// Blocks while `*word == expected`, for at most `timeout` (shared, not private: the word
/// lives in a mapping other processes use). Spurious returns are allowed; callers re-check.
/// Whether it ended before its timeout: a wake, a word that did not hold `expected`, or a
/// signal handler (`EINTR`: not a timeout, the caller re-checks as after a wake).
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) -> bool {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `word` is a valid, aligned 32-bit location for the duration of the call;
    // FUTEX_WAIT only reads it and takes a relative timeout.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            0usize,
            0u32,
        )
    };
    // EAGAIN: the word moved before the park. ETIMEDOUT, or an error no retry mends: the
    // caller pauses no longer than a park.
    rc == 0
        || matches!(
            io::Error::last_os_error().raw_os_error(),
            Some(libc::EAGAIN | libc::EINTR)
        )
}

/// Wakes every waiter parked on `word` (in any process).
pub(crate) fn futex_wake_all(word: &AtomicU32) {
    futex_wake_all_at(word.as_ptr());
}

/// Wakes every waiter parked on the 32-bit word at `addr`, which need not be mapped any
/// more: nothing is dereferenced, the address is only the futex key (a CUDA host function
/// runs this after a GPU-side publication, see `gpu::publish`).
pub(crate) fn futex_wake_all_at(addr: *const u32) {
    // SAFETY: FUTEX_WAKE only keys on the address; an unmapped one returns EFAULT.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            addr,
            libc::FUTEX_WAKE,
            i32::MAX,
            0usize,
            0usize,
            0u32,
        );
    }
}

/// Hard links of an open file (0 once it was unlinked).
pub(crate) fn nlink(file: &File) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(file.metadata()?.nlink())
}

/// Whether `path` names the open `file` (same device and inode; no symlink followed).
pub(crate) fn same_file_at(file: &File, path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// 16 random bytes from the kernel (`getrandom(2)`), for instance ids.
pub(crate) fn random_id() -> io::Result<[u8; 16]> {
    let mut out = [0u8; 16];
    let mut filled = 0;
    while filled < out.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `out`.
        let n =
            unsafe { libc::getrandom(out[filled..].as_mut_ptr().cast(), out.len() - filled, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    if out == [0; 16] {
        out[0] = 1; // a zero id is invalid in the format
    }
    Ok(out)
}

/// `clock_gettime(clock)` (vDSO for the clocks used here: no system call).
#[inline]
fn clock_now(clock: libc::clockid_t) -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; the callers pass constant clock ids Linux supports.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts
}

/// Seconds since the UNIX epoch (the format's `write_time`), computed as std's
/// `Duration::as_secs_f64` does: one `clock_gettime`, inlined into the publication bracket.
#[inline]
pub(crate) fn unix_now() -> f64 {
    let ts = clock_now(libc::CLOCK_REALTIME);
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Milliseconds on `CLOCK_MONOTONIC_COARSE` (vDSO, a few ns; resolution one tick, ~4 ms).
#[inline]
pub(crate) fn coarse_now_ms() -> u64 {
    let ts = clock_now(libc::CLOCK_MONOTONIC_COARSE);
    (ts.tv_sec as u64)
        .wrapping_mul(1000)
        .wrapping_add(ts.tv_nsec as u64 / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file-size and address-space limits are this process's soft limits, as the kernel
    /// shows them (`None` for unlimited), here and in a child whose shell set a file-size
    /// limit (not an address-space one: a sanitizer's shadow memory would not fit under it).
    #[test]
    fn the_limits_are_the_soft_limits_the_kernel_shows() {
        const TEST: &str = "sys::tests::the_limits_are_the_soft_limits_the_kernel_shows";
        const CHILD: &str = "SHMSTREAM_SYS_LIMITS";
        let shown = |limit: &str| {
            let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
            let line = limits.lines().find(|l| l.starts_with(limit)).unwrap();
            let soft = line[limit.len()..].split_whitespace().next().unwrap();
            (soft != "unlimited").then(|| soft.parse::<u64>().unwrap())
        };
        let both = || {
            assert_eq!(file_size_limit(), shown("Max file size"));
            assert_eq!(address_space_limit(), shown("Max address space"));
            (file_size_limit(), address_space_limit())
        };
        if std::env::var_os(CHILD).is_some() {
            let (file_size, _) = both();
            println!("said: file-size limit {}", file_size.is_some());
            return;
        }
        both();
        let said = crate::few_descriptors::said_in_a_shell_child(
            "ulimit -f 4096",
            TEST,
            (CHILD, "1".as_ref()),
        );
        assert_eq!(said, ["file-size limit true"]);
    }

    /// The `/dev/null` descriptor kept for forked children's lock descriptors is closed on
    /// exec: a program the process runs does not inherit it.
    #[test]
    fn the_dev_null_kept_for_forked_children_is_closed_on_exec() {
        let fd = open_dev_null();
        assert!(fd >= 0, "{}", io::Error::last_os_error());
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
        // SAFETY: `fd` was opened above, and nothing else holds it.
        unsafe { libc::close(fd) };
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
            .unwrap();
        assert_ne!(flags & libc::O_CLOEXEC as u32, 0, "{info}");
        assert_eq!(
            flags & libc::O_ACCMODE as u32,
            libc::O_RDONLY as u32,
            "{info}"
        );
    }

    /// A directory this process may create files in is writable; a missing path, a file
    /// that is no directory, and a path no system call can take are not.
    #[test]
    fn only_an_existing_directory_open_to_this_user_is_writable() {
        let dir = std::env::temp_dir().join(format!("sys-writable-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(writable_dir(&dir));
        assert!(!writable_dir(&file));
        assert!(!writable_dir(&dir.join("missing")));
        assert!(!writable_dir(std::path::Path::new("nul\0inside")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Where `posix_fallocate` cannot reserve, each page of a new object gets its storage
    /// (readers refuse an object with holes): a sparse 64 KiB object then holds 64 KiB.
    #[test]
    fn writing_each_page_gives_a_sparse_object_its_storage() {
        use std::os::unix::fs::MetadataExt;
        let id = format!("sys-each-page-{}", std::process::id());
        let file = shm_open(&id, libc::O_CREAT | libc::O_EXCL | libc::O_RDWR).unwrap();
        let len = 64 * 1024 + 1;
        file.set_len(len).unwrap();
        assert_eq!(file.metadata().unwrap().blocks(), 0, "sized sparse");
        write_each_page(&file, len).unwrap();
        let stored = file.metadata().unwrap().blocks() * 512;
        shm_unlink(&id).unwrap();
        assert!(stored >= len, "{stored} bytes of storage for {len}");
    }

    /// An allocation that tmpfs interrupts whenever it takes long (here: over 1 MiB) still
    /// finishes, in chunks that cover the length exactly once; other errors end it. An
    /// interrupted chunk is asked for again at half its size (a page at least), and the chunk
    /// after one that succeeded is twice as large (8 MiB at most, the rest at the end).
    #[test]
    fn an_interrupted_reservation_finishes_in_smaller_chunks() {
        const MIB: libc::off_t = 1 << 20;
        let len: libc::off_t = (64 * MIB) + 123;
        let (mut calls, mut done) = (Vec::new(), Vec::new());
        let r = reserve_in_chunks(len, |at, n| {
            assert!(
                calls.len() < 10_000,
                "still retrying after {} calls",
                calls.len()
            );
            let rc = if n > MIB { libc::EINTR } else { 0 };
            calls.push((at, n, rc));
            if rc == 0 {
                done.push((at, n));
            }
            rc
        });
        r.unwrap();
        assert_eq!(
            calls[..2],
            [(0, len, libc::EINTR), (0, 8 * MIB, libc::EINTR)]
        );
        for pair in calls[1..].windows(2) {
            let ((at, n, rc), (next_at, next_n, _)) = (pair[0], pair[1]);
            let (expected_at, expected_n) = match rc {
                0 => (at + n, (2 * n).min(8 * MIB).min(len - at - n)),
                _ => (at, (n / 2).max(4096)),
            };
            assert_eq!((next_at, next_n), (expected_at, expected_n), "{calls:?}");
        }
        done.sort_unstable();
        let mut end = 0;
        for &(at, n) in &done {
            assert_eq!(at, end, "a gap or an overlap at {at}: {done:?}");
            end = at + n;
        }
        assert_eq!(end, len);
        let r = reserve_in_chunks(len, |at, n| match (at, n) {
            (0, n) if n == len => libc::EINTR,
            (0, _) => 0,
            _ => libc::ENOSPC,
        });
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ENOSPC));
    }

    /// The room `statvfs` gives is what `stat -f` shows for `/dev/shm`: bytes free to an
    /// unprivileged process, and inodes. Compared where two `stat -f` runs around ours agree
    /// (other tests create and remove streams meanwhile).
    #[test]
    fn the_room_in_dev_shm_is_what_stat_shows() {
        let shown = || {
            let out = std::process::Command::new("stat")
                .args(["-f", "-c", "%a %S %c %d", SHM_DIR])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            let text = String::from_utf8(out.stdout).unwrap();
            let v: Vec<u64> = text
                .split_whitespace()
                .map(|n| n.parse().unwrap())
                .collect();
            ShmRoom {
                bytes: v[0] * v[1],
                inodes: v[2],
                inodes_free: v[3],
            }
        };
        for _ in 0..100 {
            let (before, room, available, after) = (shown(), shm_room(), shm_available(), shown());
            if before == after {
                assert_eq!((room, available), (Some(before), Some(before.bytes)));
                return;
            }
        }
        panic!("/dev/shm's room changed between every two `stat -f` runs");
    }

    /// `shm_unlink` of a name no object has is `NotFound`; `same_file_at` is true only for a
    /// path that names the open file itself: not another file, not a symbolic link to it, not
    /// a missing path.
    #[test]
    fn a_missing_object_is_not_found_and_only_the_file_itself_is_the_same() {
        let id = format!("sys-missing-{}", std::process::id());
        let e = shm_unlink(&id).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        let dir = std::env::temp_dir().join(format!("sys-same-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b, link) = (dir.join("a"), dir.join("b"), dir.join("link"));
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"b").unwrap();
        std::os::unix::fs::symlink(&a, &link).unwrap();
        let file = File::open(&a).unwrap();
        let same = [&a, &b, &link, &dir.join("missing")].map(|p| same_file_at(&file, p));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(same, [true, false, false, false]);
    }

    /// Instance ids are the kernel's random bytes, never all zero (invalid in the format):
    /// 64 draws are all different, and their first bytes are not all the same.
    #[test]
    fn instance_ids_are_random_and_never_zero() {
        let ids: Vec<[u8; 16]> = (0..64).map(|_| random_id().unwrap()).collect();
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        assert!(ids.iter().all(|id| *id != [0; 16]));
        assert!(ids.iter().any(|id| id[0] != ids[0][0]), "{ids:?}");
    }

    /// The write time is the wall clock in seconds (between two `SystemTime` reads around
    /// it); the coarse clock is `CLOCK_MONOTONIC`'s milliseconds, as of the last tick. It is
    /// allowed 250 ms behind: the kernel updates it late when the vCPU that keeps time is
    /// preempted (up to 5 ticks, 50 ms at 100 Hz).
    #[test]
    fn the_clocks_read_the_wall_and_the_monotonic_time() {
        let wall = || {
            let t = std::time::SystemTime::now();
            t.duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64()
        };
        let (before, now, after) = (wall(), unix_now(), wall());
        assert!(
            before - 1e-6 <= now && now <= after + 1e-6,
            "{before} {now} {after}"
        );
        let fine_ms = || {
            let ts = clock_now(libc::CLOCK_MONOTONIC);
            ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
        };
        let (before, coarse, after) = (fine_ms(), coarse_now_ms(), fine_ms());
        assert!(
            before <= coarse + 250 && coarse <= after,
            "{before} {coarse} {after}"
        );
    }

    /// The whole length is asked for first, so a length tmpfs refuses at once (larger than
    /// the file system) is refused without chunks that would fill `/dev/shm` first.
    #[test]
    fn a_refused_reservation_is_asked_for_once_whole() {
        let len: libc::off_t = 1 << 50;
        let mut calls = Vec::new();
        let r = reserve_in_chunks(len, |at, n| {
            calls.push((at, n));
            libc::ENOSPC
        });
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(calls, [(0, len)]);
    }

    /// Yields until `done()`; fails saying `never` after 10 s.
    fn until(never: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{never}");
            std::thread::yield_now();
        }
    }

    /// (device, inode) of an open descriptor, with fstat only (async-signal-safe, for a
    /// forked child).
    fn identity(fd: std::os::fd::RawFd) -> Option<(u64, u64)> {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: `st` is valid for writes of one `stat`; fstat takes a plain descriptor.
        if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
            return None;
        }
        // SAFETY: fstat filled `st` (it returned 0).
        let st = unsafe { st.assume_init() };
        #[allow(clippy::unnecessary_cast)] // the field types differ between targets
        Some((st.st_dev as u64, st.st_ino as u64))
    }

    /// Forks; the child exits 0 if `fd` is `expected` there and 1 otherwise. Returns whether
    /// it was.
    fn in_a_forked_child(fd: std::os::fd::RawFd, expected: (u64, u64)) -> bool {
        in_a_forked_child_after(|| {}, fd, expected)
    }

    /// [`in_a_forked_child`], the child running `first` (async-signal-safe) before it looks.
    fn in_a_forked_child_after(
        first: impl FnOnce(),
        fd: std::os::fd::RawFd,
        expected: (u64, u64),
    ) -> bool {
        // SAFETY: the child only runs `first` (async-signal-safe), fstat and `_exit`, and
        // never returns here.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork failed");
        if child == 0 {
            first();
            let code = if identity(fd) == Some(expected) { 0 } else { 1 };
            // SAFETY: ends the forked child without running the parent's exit handlers.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: our own child; `status` outlives the call.
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
    }

    #[test]
    fn a_forked_child_holds_dev_null_where_a_registered_lock_descriptor_was() {
        use std::os::fd::AsRawFd;
        let file = File::open(std::env::current_exe().unwrap()).unwrap();
        let fd = file.as_raw_fd();
        let own = identity(fd).unwrap();
        let null = identity(File::open("/dev/null").unwrap().as_raw_fd()).unwrap();
        assert!(in_a_forked_child(fd, own), "unlisted: the child keeps it");
        assert!(register_lock_fd(fd));
        assert!(
            in_a_forked_child(fd, null),
            "listed: the child holds /dev/null"
        );
        assert_eq!(
            identity(fd),
            Some(own),
            "the parent's descriptor is untouched"
        );
        unregister_lock_fd(fd);
        assert!(
            in_a_forked_child(fd, own),
            "unlisted again: the child keeps it"
        );
    }

    /// A lock descriptor registered while `/dev/null` cannot be opened (the lock file took the
    /// last descriptor) is listed all the same: dropped in a child forked after a later
    /// registration opened `/dev/null`, not kept with the parent's flock.
    #[test]
    fn a_lock_descriptor_registered_before_dev_null_opens_is_dropped_after() {
        use std::os::fd::AsRawFd;
        let slots = [const { AtomicI32::new(NO_FD) }; 4];
        let null = AtomicI32::new(NO_FD);
        let (first, second) = (
            File::open(std::env::current_exe().unwrap()).unwrap(),
            File::open(std::env::current_exe().unwrap()).unwrap(),
        );
        let dev_null = File::open("/dev/null").unwrap();
        let null_id = identity(dev_null.as_raw_fd()).unwrap();
        let fd = first.as_raw_fd();
        assert!(
            !register_in(&slots, &null, fd, || -1),
            "not covered before /dev/null opens"
        );
        assert!(register_in(&slots, &null, second.as_raw_fd(), || {
            dev_null.as_raw_fd()
        }));
        assert!(
            in_a_forked_child_after(|| drop_listed(&slots, &null), fd, null_id),
            "the first lock descriptor was kept in the child"
        );
    }

    #[test]
    fn a_zombie_exists_but_is_not_running() {
        assert!(pid_alive(pid()) && process_running(pid()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let p = i64::from(child.id());
        // Not reaped yet: it becomes a zombie once it exits.
        until("the child never exited", || exited(p));
        assert!(pid_alive(p), "kill(2) still finds a zombie");
        assert!(
            !process_running(p),
            "a zombie was taken for a running process"
        );
        child.wait().unwrap();
        assert!(!pid_alive(p) && !process_running(p));
        assert!(!process_running(0) && !process_running(-1) && !process_running(i64::MAX));
    }

    /// This process is itself without a probe (its own pid is taken as given); another is
    /// alive, and running, while it runs, and neither once reaped.
    #[test]
    fn this_process_is_itself_and_another_is_what_it_probes_as() {
        let unused = i64::from(i32::MAX);
        assert!(!pid_alive(unused), "pid {unused} is in use");
        #[cfg(feature = "cuda")]
        assert!(is_self_or_alive(unused, unused) && !is_self_or_alive(pid(), unused));
        assert!(is_self_or_running(pid()) && !is_self_or_running(unused));
        /// Killed and reaped when dropped, after a failed assertion too: a `sleep` left
        /// running would hold the test's output pipe open.
        struct Reaped(std::process::Child);
        impl Drop for Reaped {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let child = Reaped(
            std::process::Command::new("sleep")
                .arg("600")
                .spawn()
                .unwrap(),
        );
        let p = i64::from(child.0.id());
        #[cfg(feature = "cuda")]
        assert!(is_self_or_alive(pid(), p));
        assert!(is_self_or_running(p));
        drop(child);
        #[cfg(feature = "cuda")]
        assert!(!is_self_or_alive(pid(), p));
        assert!(!is_self_or_running(p));
    }

    /// A process whose main thread ended while another thread runs (`pthread_exit` in
    /// `main`, the `exit` system call here) shows its leader as a zombie, and is running: its streams are live ones
    /// (`list` called them dead, and `purge` removed them).
    #[test]
    fn a_process_whose_main_thread_ended_is_running_while_another_thread_runs() {
        extern "C" fn sleeper(_: *mut libc::c_void) -> *mut libc::c_void {
            // SAFETY: plain calls; the parent kills the process well before the sleep ends.
            unsafe {
                libc::sleep(60);
                libc::_exit(0)
            }
        }
        // SAFETY: the forked child only starts a thread and ends its own (async-signal-safe
        // enough under glibc, whose fork resets the allocator's locks); it never returns here.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork failed");
        if child == 0 {
            let mut t: libc::pthread_t = 0;
            // SAFETY: `t` is a valid out-pointer; `sleeper` lives for the whole program.
            unsafe {
                if libc::pthread_create(&mut t, std::ptr::null(), sleeper, std::ptr::null_mut())
                    != 0
                {
                    libc::_exit(1);
                }
                // The thread alone ends (`exit`, not `exit_group`; `pthread_exit` would
                // unwind through Rust frames).
                libc::syscall(libc::SYS_exit, 0);
                libc::_exit(1);
            }
        }
        let p = i64::from(child);
        until("the child's main thread never ended", || leader_exited(p));
        let running = process_running(p);
        // SAFETY: our own child, killed and reaped.
        unsafe {
            libc::kill(child, libc::SIGKILL);
            libc::waitpid(child, std::ptr::null_mut(), 0);
        }
        assert!(running, "a process with a live thread was taken for exited");
    }
}
