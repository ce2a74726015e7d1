//! Shared (not `FUTEX_PRIVATE`) futex wait and wake on a word in a [`crate::shm::ShmRegion`].

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Sleeps while `*word == expected`, at most `timeout`. Spurious returns are allowed:
/// the caller re-checks its condition in a loop.
pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().try_into().unwrap_or(libc::time_t::MAX),
        tv_nsec: timeout.subsec_nanos().into(),
    };
    // SAFETY:
    // - `word` is a valid, aligned u32 for the duration of the call (it is borrowed);
    // - FUTEX_WAIT only reads the word and compares it with `expected`;
    // - `ts` is a valid timespec on our stack; the remaining arguments are ignored.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes every waiter on `word`; returns how many were woken.
pub fn wake_all(word: &AtomicU32) -> i64 {
    // SAFETY: `word` is a valid, aligned u32; FUTEX_WAKE does not access it beyond
    // using its address as the key. The remaining arguments are ignored.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    /// Whether the task at `/proc/<task>` is in a shared `FUTEX_WAIT` on `word` now
    /// (`/proc/<task>/syscall`: the syscall number, then its arguments in hex).
    fn parked_on(task: &std::path::Path, word: usize) -> bool {
        let path = std::path::Path::new("/proc").join(task).join("syscall");
        let syscall = std::fs::read_to_string(path).unwrap_or_default();
        let mut f = syscall.split_whitespace();
        f.next() == Some(libc::SYS_futex.to_string().as_str())
            && f.next() == Some(format!("{word:#x}").as_str())
            && f.next() == Some(format!("{:#x}", libc::FUTEX_WAIT).as_str())
    }

    /// A waiter parked in `wait` is woken by `wake_all`, not by its timeout: the wait's
    /// timeout is a minute and the store and wake come only once the waiter's thread is
    /// seen parked on the word, so a `wake_all` that woke nobody leaves it parked past the
    /// test's 10 s bound.
    #[test]
    fn a_waiter_wakes_after_a_store_and_wake() {
        let word = Arc::new(AtomicU32::new(0));
        let w2 = Arc::clone(&word);
        let (task_tx, task_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        // Detached: a waiter never woken leaves only this thread parked, and the test fails.
        std::thread::spawn(move || {
            task_tx
                .send(std::fs::read_link("/proc/thread-self").unwrap())
                .unwrap();
            while w2.load(Ordering::Acquire) == 0 {
                wait(&w2, 0, Duration::from_secs(60));
            }
            let _ = done_tx.send(());
        });
        let task = task_rx.recv().unwrap();
        let addr = word.as_ptr() as usize;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !parked_on(&task, addr) {
            assert!(Instant::now() < deadline, "the waiter never parked");
            std::thread::yield_now();
        }
        word.store(1, Ordering::Release);
        wake_all(&word);
        done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("wake_all did not wake the parked waiter");
    }
}
