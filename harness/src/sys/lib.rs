//! `harness_sys`: the only place in the harness package that may use `unsafe`.
//!
//! The harness binary is `#![forbid(unsafe_code)]`. These things cannot be written
//! without `unsafe`, and each one sits here behind a small safe API:
//!
//! - [`shm`]: a bare POSIX shared-memory region (a file under `/dev/shm`) with atomics
//!   and raw copies over it. The *floors* must be cross-process (the same placement as
//!   the library's writer and reader), so they need a mapping shared between two
//!   processes and atomics on it; std threads would measure something else.
//! - [`futex`] and [`flock`]: the two system calls of the floor protocol, as the C floors in
//!   `shared/reference/limits/` call them.
//! - [`kernel`]: the float32 matrix-vector kernel, compiled for AVX2+FMA and dispatched
//!   at run time (`is_x86_feature_detected!`), because the workspace builds for the
//!   baseline x86-64 target.
//! - [`gpu`] and [`ao_gpu`]: cuBLAS `sgemv`, page-locked host buffers, the GPU floors' bare
//!   driver copies, and the ao-loop's GPU kernels (launches whose arguments the safe wrappers
//!   check first); [`ao_step`]: the ao-loop's device work a frame, captured as one CUDA graph
//!   (its page-locked buffers are copied by bare driver calls a capture can hold).
//!
//! - [`bare`] (safe code over [`shm`]): the floors' bare publication and re-checked copy,
//!   here so that the harness's floors and its examples time one and the same bare hop.
//!
//! Every `unsafe` block carries a `// SAFETY:` comment naming its obligations.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod ao_gpu;
pub mod ao_step;
pub mod bare;
pub mod clock;
pub mod flock;
pub mod futex;
pub mod gpu;
pub mod kernel;
pub mod shm;

/// Puts the calling thread under `SCHED_FIFO` at `priority` (1-99) (`sched_setscheduler`
/// on thread id 0: this thread; threads it spawns later inherit the policy).
pub fn set_fifo(priority: u8) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    // SAFETY: `param` is a valid `sched_param` that the call only reads; pid 0 is the
    // calling thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The kernel's `struct sched_attr` as `sched_setattr`/`sched_getattr` take it
/// (`SCHED_ATTR_SIZE_VER1`: 56 bytes).
#[repr(C)]
#[derive(Debug, Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

/// Asks the fair scheduler for a time slice of `ns` for the calling thread: `sched_setattr`
/// with `SCHED_OTHER` (the thread's nice value kept) and `sched_runtime = ns`, which EEVDF
/// (Linux 6.12 and later) takes as the thread's slice, clamped to 0.1-100 ms; no privilege
/// needed. Threads it spawns later inherit it. Returns the slice the kernel then reports:
/// 0 where the kernel ignores `sched_runtime` for fair threads.
pub fn set_fair_slice(ns: u64) -> std::io::Result<u64> {
    // SAFETY: `getpriority` takes two integers and touches no memory of ours; on the calling
    // process it cannot fail, so its result is the nice value (-1 included).
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        nice,
        runtime: ns,
        ..SchedAttr::default()
    };
    // SAFETY: `attr` is a valid `sched_attr` of the size it declares, which the kernel
    // only reads; pid 0 is the calling thread; flags 0.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut got = SchedAttr::default();
    // SAFETY: `got` is writable for the size passed (its own); pid 0 is the calling
    // thread; flags 0.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0,
            &mut got as *mut SchedAttr,
            std::mem::size_of::<SchedAttr>() as u32,
            0,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(got.runtime)
}

/// The calling thread's scheduling policy (`sched_getscheduler`), e.g. `libc::SCHED_FIFO`.
pub fn scheduler() -> std::io::Result<i32> {
    // SAFETY: no arguments but the pid (0: the calling thread); touches no memory of ours.
    let p = unsafe { libc::sched_getscheduler(0) };
    if p < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(p)
    }
}

/// The CPU the calling thread runs on now (`sched_getcpu`), if the call succeeds.
pub fn current_cpu() -> Option<usize> {
    // SAFETY: `sched_getcpu` takes no arguments, touches no memory of ours and only
    // returns a number or -1.
    let cpu = unsafe { libc::sched_getcpu() };
    usize::try_from(cpu).ok()
}

/// Sends `SIGKILL` to process `pid` (a child this process spawned); errors are ignored
/// because the child may already have exited.
pub fn kill(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pid <= 0 {
        return;
    }
    // SAFETY: `kill` takes two integers and touches no memory; a positive pid names one
    // process (never a group), so the worst case is signalling an exited child's pid.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// Sends `SIGKILL` to every process of group `pgid` (a child this process started as the
/// leader of a group of its own, and what it started); errors are ignored because the
/// group may already be gone.
pub fn kill_group(pgid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    // SAFETY: `kill` takes two integers and touches no memory; `-pgid` (pgid > 1) names the
    // group `pgid` only, never every process (-1) nor our own group (0).
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// Waits until child `pid` (of this process) has exited, leaving it unreaped (`waitid` with
/// `WNOWAIT`): until it is reaped (`Child::wait`) its pid, and a group id equal to it,
/// cannot be reused, so its group can still be killed safely.
pub fn wait_exited(pid: u32) -> std::io::Result<()> {
    let pid = libc::id_t::from(pid);
    loop {
        // SAFETY: `siginfo_t` is a plain C struct, for which all zero bytes is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOWAIT;
        // SAFETY: `waitid` writes only `info`, which is ours and lives across the call;
        // `WNOWAIT` leaves the child to be reaped by its `Child`.
        let rc = unsafe { libc::waitid(libc::P_PID, pid, &mut info, flags) };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Has `command`'s process killed (`SIGKILL`) when the thread that spawns it ends: for a
/// child spawned by the main thread, when this process exits, however it exits
/// (`PR_SET_PDEATHSIG`). The child does not start if this process is already gone.
pub fn die_with_parent(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: the hook runs in the forked child before `exec`; it calls only `prctl` and
    // `getppid`, both async-signal-safe, and allocates nothing (its errors are OS codes).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent exited before the `prctl`: no signal would come.
            if u32::try_from(libc::getppid()) != Ok(parent) {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Has `command`'s process start on core `cpu` alone (`sched_setaffinity` in the forked
/// child before `exec`, whatever the spawning thread's affinity); its threads inherit it.
/// Fails for a core past `CPU_SETSIZE`; the spawn fails if the kernel refuses the core.
pub fn pin_on_exec(command: &mut std::process::Command, cpu: usize) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("cpu {cpu} is past CPU_SETSIZE ({})", libc::CPU_SETSIZE),
        ));
    }
    // SAFETY: `cpu_set_t` is a plain bit array, for which all zero bytes is the empty set;
    // `CPU_SET` sets bit `cpu` of it, which is in range (checked above).
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        set
    };
    // SAFETY: the hook runs in the forked child before `exec`; it calls only
    // `sched_setaffinity` (a system call, async-signal-safe) on the set it owns, and
    // allocates nothing (its error is an OS code).
    unsafe {
        command.pre_exec(move || {
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

/// The signals that stop a run from outside: `SIGINT`, `SIGTERM` and `SIGHUP`, less those
/// this process was started ignoring (`nohup` ignores `SIGHUP`: a run under it must outlive
/// the terminal, and a blocked signal is taken by `sigwait` even when ignored).
fn termination_signals() -> libc::sigset_t {
    // SAFETY: `sigemptyset` initialises the set `set` points to; `sigaddset` adds valid
    // signal numbers to that initialised set; `sigaction` with a null new action only writes
    // the current one into the zeroed `old`.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            let mut old = std::mem::zeroed::<libc::sigaction>();
            let ignored = libc::sigaction(s, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction == libc::SIG_IGN;
            if !ignored {
                libc::sigaddset(&mut set, s);
            }
        }
        set
    }
}

/// Blocks the termination signals in the calling thread and the threads it spawns from
/// then on, so that [`wait_termination`] takes them; call it before spawning any thread.
/// Spawned processes start with no signal blocked (`std::process::Command` clears the mask).
pub fn block_termination() -> std::io::Result<()> {
    let set = termination_signals();
    // SAFETY: `set` is an initialised signal set the call only reads; the old mask is not
    // asked for (null).
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(rc))
    }
}

/// Waits for a termination signal blocked by [`block_termination`] and returns its number.
pub fn wait_termination() -> std::io::Result<i32> {
    let set = termination_signals();
    let mut sig = 0;
    // SAFETY: `set` is an initialised signal set the call only reads; `sig` is writable.
    let rc = unsafe { libc::sigwait(&set, &mut sig) };
    if rc == 0 {
        Ok(sig)
    } else {
        Err(std::io::Error::from_raw_os_error(rc))
    }
}

/// Ends the process at once with exit status `code` (`_exit`): no atexit handler (CUDA's),
/// no stdio flush, no destructor, no lock waited for.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` takes no pointer and never returns. Skipping the atexit handlers and
    // destructors is the point: what they would have released the kernel releases with the
    // process (mappings, locks, descriptors); what lives on in /dev/shm the caller names.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    /// A signal the process was started ignoring (`nohup`'s `SIGHUP`) does not stop a run;
    /// the others still do.
    #[test]
    fn a_signal_ignored_at_start_is_not_a_termination_signal() {
        let member = |set: &libc::sigset_t, s| {
            // SAFETY: `set` is an initialised signal set; `s` a valid signal number.
            unsafe { libc::sigismember(set, s) == 1 }
        };
        let signals = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];
        // SAFETY: setting dispositions to SIG_DFL or SIG_IGN (and back) installs no handler
        // code; no other test of this binary sends or waits for these signals. From the
        // default, whatever this test run was started with (`nohup`, a background job).
        let before = signals.map(|s| unsafe { libc::signal(s, libc::SIG_DFL) });
        let all = termination_signals();
        // SAFETY: as above.
        unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
        let without_hup = termination_signals();
        for (s, b) in signals.into_iter().zip(before) {
            // SAFETY: as above, restoring the disposition `signal` returned.
            unsafe { libc::signal(s, b) };
        }
        assert!(signals.iter().all(|&s| member(&all, s)));
        assert!(!member(&without_hup, libc::SIGHUP));
        assert!(member(&without_hup, libc::SIGINT) && member(&without_hup, libc::SIGTERM));
    }

    /// A child spawned with [`die_with_parent`] is killed when its spawning thread ends
    /// (as the harness's children are when the harness exits), not left to finish.
    #[test]
    fn a_child_dies_with_the_thread_that_spawned_it() {
        let mut child = std::thread::spawn(|| {
            let mut c = std::process::Command::new("sleep");
            c.arg("30");
            die_with_parent(&mut c);
            c.spawn().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    }
}
