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

    #[test]
    fn a_waiter_wakes_after_a_store_and_wake() {
        let word = Arc::new(AtomicU32::new(0));
        let w2 = Arc::clone(&word);
        let t = std::thread::spawn(move || {
            while w2.load(Ordering::Acquire) == 0 {
                wait(&w2, 0, Duration::from_millis(100));
            }
        });
        std::thread::sleep(Duration::from_millis(5));
        word.store(1, Ordering::Release);
        wake_all(&word);
        t.join().unwrap();
    }
}
