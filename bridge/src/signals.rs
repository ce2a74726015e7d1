//! Stopping on signals: the bridge binary's stop flag, set by the first stop signal, a
//! second one (but SIGHUP) ending the process at once ([`stop_on_signals`]).

use std::sync::atomic::{AtomicBool, Ordering};

/// The signals that stop the bridge ([`stop_on_signals`]): Ctrl-C, SIGTERM, SIGHUP (the
/// terminal closed, an ssh session dropped) and SIGQUIT (`Ctrl-\`).
const STOP_SIGNALS: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// Whether stop signal `sig`, once a stop was asked for, ends the process at once: all but
/// SIGHUP. A terminal that closes sends SIGHUP more than once, within milliseconds (bash
/// passes it on to its jobs, and the kernel sends it to the foreground process group as the
/// session leader exits): a second one is no one asking twice, and killing the bridge for
/// it would tear the mirror frame being written.
const fn kills_once_stopping(sig: libc::c_int) -> bool {
    sig != libc::SIGHUP
}

/// A stop flag that SIGINT, SIGTERM, SIGHUP and SIGQUIT set (for the binary), once: the
/// first of them sets it and gives SIGINT, SIGTERM and SIGQUIT back their default action,
/// so a second one of those ends the process at once (killed by that signal). A clean stop
/// can take up to [`HANDOVER_DEADLINE`](crate::HANDOVER_DEADLINE) (a put blocked on it
/// returns first), and a second Ctrl-C must not be lost meanwhile. SIGHUP stays caught,
/// however often it comes (`kills_once_stopping`): a bridge in a closed ssh session or
/// terminal thus ends cleanly, its summaries said and its mirrors whole. A signal ignored
/// when it is called stays ignored (`nohup` ignores SIGHUP, a shell's background jobs
/// SIGINT and SIGQUIT), then too.
pub fn stop_on_signals() -> &'static AtomicBool {
    static STOP: AtomicBool = AtomicBool::new(false);
    /// Which of [`STOP_SIGNALS`] are caught (not ignored at the start).
    static CAUGHT: [AtomicBool; STOP_SIGNALS.len()] =
        [const { AtomicBool::new(false) }; STOP_SIGNALS.len()];
    extern "C" fn on_signal(_: libc::c_int) {
        // Atomics and `sigaction` alone: all async-signal-safe.
        STOP.store(true, Ordering::Relaxed);
        for (sig, caught) in STOP_SIGNALS.iter().zip(&CAUGHT) {
            if kills_once_stopping(*sig) && caught.load(Ordering::Relaxed) {
                set_action(*sig, libc::SIG_DFL, 0);
            }
        }
    }
    for (sig, caught) in STOP_SIGNALS.into_iter().zip(&CAUGHT) {
        if action_of(sig) == libc::SIG_IGN {
            continue;
        }
        caught.store(true, Ordering::Relaxed);
        // SA_RESETHAND: the signal caught is back to its default as it is delivered, before
        // the handler runs (which then resets the others); not SIGHUP, which stays caught.
        let flags = if kills_once_stopping(sig) {
            libc::SA_RESETHAND
        } else {
            0
        };
        set_action(
            sig,
            on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            flags,
        );
    }
    &STOP
}

/// The action of signal `sig` now (`SIG_DFL`, `SIG_IGN` or a handler); `SIG_DFL` where it
/// cannot be read.
fn action_of(sig: libc::c_int) -> libc::sighandler_t {
    // SAFETY: a null new action only reads the current one into `old`, for which a zeroed
    // sigaction is a valid value.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
            return libc::SIG_DFL;
        }
        old.sa_sigaction
    }
}

/// Sets signal `sig`'s action to `handler` (a function, or `SIG_DFL`) with `flags`; the
/// signal is not blocked while it runs beyond what `flags` says. Async-signal-safe.
fn set_action(sig: libc::c_int, handler: libc::sighandler_t, flags: libc::c_int) {
    // SAFETY: a zeroed sigaction is a valid starting value, `sa_mask` is initialized by
    // `sigemptyset`, and `handler` is SIG_DFL or `on_signal`, which only stores to an atomic
    // and calls this (`sigemptyset` and `sigaction` are async-signal-safe).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        sa.sa_flags = flags;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stop can take up to HANDOVER_DEADLINE (a put blocked on it): the first stop signal
    /// asks for it and gives SIGINT, SIGTERM and SIGQUIT back their default action, so a
    /// second one of those ends the process at once. (Before, the handler stayed, and a second
    /// Ctrl-C did nothing.) A signal ignored at the start (SIGHUP under `nohup`) stays
    /// ignored, before and after; SIGHUP caught stays caught after the first stop signal, so
    /// a terminal that closes, sending it again, does not kill the bridge mid-stop (it was
    /// given back its default action too).
    #[test]
    fn the_first_stop_signal_resets_all_but_sighup_and_an_ignored_one_stays_ignored() {
        // From the defaults, whatever this test process was started with (a background job
        // of a script starts with SIGINT and SIGQUIT ignored, which the bridge keeps).
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGQUIT] {
            set_action(sig, libc::SIG_DFL, 0);
        }
        set_action(libc::SIGHUP, libc::SIG_IGN, 0);
        let stop = stop_on_signals();
        let caught = [libc::SIGINT, libc::SIGTERM, libc::SIGQUIT];
        let is_handler = |sig| {
            let action = action_of(sig);
            action != libc::SIG_DFL && action != libc::SIG_IGN
        };
        for sig in caught {
            assert!(is_handler(sig), "signal {sig} caught");
        }
        assert_eq!(action_of(libc::SIGHUP), libc::SIG_IGN, "SIGHUP ignored");
        // SAFETY: `raise` delivers SIGINT to this thread before it returns, to the handler
        // just installed (which only sets the flag and resets the actions).
        assert_eq!(unsafe { libc::raise(libc::SIGINT) }, 0);
        assert!(stop.load(Ordering::Relaxed));
        for sig in caught {
            assert_eq!(
                action_of(sig),
                libc::SIG_DFL,
                "signal {sig}: a second one would be caught and do nothing"
            );
        }
        assert_eq!(
            action_of(libc::SIGHUP),
            libc::SIG_IGN,
            "SIGHUP still ignored"
        );
        // SIGHUP caught (no `nohup`): the first SIGHUP stops, and SIGHUP stays caught.
        set_action(libc::SIGHUP, libc::SIG_DFL, 0);
        stop.store(false, Ordering::Relaxed);
        stop_on_signals();
        assert!(is_handler(libc::SIGHUP), "SIGHUP caught");
        // SAFETY: as above; SIGHUP goes to the handler just installed.
        assert_eq!(unsafe { libc::raise(libc::SIGHUP) }, 0);
        assert!(stop.load(Ordering::Relaxed));
        for sig in caught {
            assert_eq!(action_of(sig), libc::SIG_DFL, "signal {sig} after SIGHUP");
        }
        assert!(
            is_handler(libc::SIGHUP),
            "SIGHUP given back its default action: a second one would kill the bridge"
        );
        // SAFETY: as above (checked still caught: it does not end this process).
        assert_eq!(unsafe { libc::raise(libc::SIGHUP) }, 0);
        set_action(libc::SIGHUP, libc::SIG_DFL, 0);
    }
}
