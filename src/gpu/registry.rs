//! Per-process registry of attached device payloads, with reference counts.
//!
//! CUDA refuses to open one IPC memory handle twice in a process (and refuses to open it at
//! all in the process that exported it), so every handle on a GPU stream in this process
//! shares one attachment, keyed by (device, IPC memory handle bytes). The first user opens
//! (or, in the creator, registers its own allocation); the last one to leave closes it.
//!
//! The registry is generic over the attached value and takes the open call as a closure,
//! so its logic is tested without a driver.

use std::sync::Mutex;

/// (device ordinal, `CUipcMemHandle` bytes).
pub(crate) type Key = (i32, [u8; 64]);

#[derive(Debug)]
struct Entry<V> {
    key: Key,
    value: V,
    refs: usize,
    owned: bool,
    /// Whether a reference left with work still queued on its CUDA stream.
    unsettled: bool,
}

/// What [`Registry::release`] hands back when the last reference goes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Last<V> {
    pub(crate) value: V,
    /// True for the creator's own allocation (free it); false for an imported one (close it).
    pub(crate) owned: bool,
    /// Whether every reference left with its CUDA stream idle. When one did not, work it
    /// queued may still use the memory: free or close nothing (leak it).
    pub(crate) settled: bool,
}

/// The registry. A `Vec` scanned linearly: a process attaches a handful of streams.
#[derive(Debug)]
pub(crate) struct Registry<V> {
    entries: Mutex<Vec<Entry<V>>>,
}

impl<V: Clone> Registry<V> {
    pub(crate) const fn new() -> Registry<V> {
        Registry {
            entries: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry<V>>> {
        // A panic while holding the lock cannot leave an entry half-updated (each update
        // is one push, one increment or one removal), so a poisoned lock is still usable.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers the creator's own allocation with one reference. Returns false (and
    /// registers nothing) if the key is already known.
    pub(crate) fn insert_owned(&self, key: Key, value: V) -> bool {
        let mut e = self.lock();
        if e.iter().any(|x| x.key == key) {
            return false;
        }
        e.push(Entry {
            key,
            value,
            refs: 1,
            owned: true,
            unsettled: false,
        });
        true
    }

    /// Takes a reference to `key`, opening it with `open` if this process has none yet.
    /// `open` runs under the registry lock, so two threads never open one handle twice.
    pub(crate) fn acquire<E>(&self, key: Key, open: impl FnOnce() -> Result<V, E>) -> Result<V, E> {
        let mut e = self.lock();
        if let Some(x) = e.iter_mut().find(|x| x.key == key) {
            x.refs += 1;
            return Ok(x.value.clone());
        }
        let value = open()?;
        e.push(Entry {
            key,
            value: value.clone(),
            refs: 1,
            owned: false,
            unsettled: false,
        });
        Ok(value)
    }

    /// Drops one reference, whose CUDA stream is idle or not (`settled`); returns the value
    /// when it was the last (the caller closes or frees it, outside the registry lock, if
    /// every reference left settled).
    pub(crate) fn release(&self, key: &Key, settled: bool) -> Option<Last<V>> {
        let mut e = self.lock();
        let i = e.iter().position(|x| &x.key == key)?;
        e[i].refs -= 1;
        e[i].unsettled |= !settled;
        if e[i].refs > 0 {
            return None;
        }
        let x = e.swap_remove(i);
        Some(Last {
            value: x.value,
            owned: x.owned,
            settled: !x.unsettled,
        })
    }

    /// References held on `key` in this process (0 if not attached).
    pub(crate) fn refs(&self, key: &Key) -> usize {
        self.lock()
            .iter()
            .find(|x| &x.key == key)
            .map_or(0, |x| x.refs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn key(b: u8) -> Key {
        (0, [b; 64])
    }

    #[test]
    fn opens_once_and_closes_on_last_release() {
        let r: Registry<u64> = Registry::new();
        let opens = Cell::new(0);
        let open = || -> Result<u64, String> {
            opens.set(opens.get() + 1);
            Ok(0xdead)
        };
        assert_eq!(r.acquire(key(1), open).unwrap(), 0xdead);
        assert_eq!(r.acquire(key(1), open).unwrap(), 0xdead);
        assert_eq!(r.acquire(key(1), open).unwrap(), 0xdead);
        assert_eq!(opens.get(), 1, "one IPC open per process");
        assert_eq!(r.refs(&key(1)), 3);
        assert_eq!(r.release(&key(1), true), None);
        assert_eq!(r.release(&key(1), true), None);
        assert_eq!(
            r.release(&key(1), true),
            Some(Last {
                value: 0xdead,
                owned: false,
                settled: true
            })
        );
        assert_eq!(r.refs(&key(1)), 0);
        assert_eq!(
            r.release(&key(1), true),
            None,
            "releasing an unknown key is a no-op"
        );
        // Re-attaching after the last close opens again.
        r.acquire(key(1), open).unwrap();
        assert_eq!(opens.get(), 2);
    }

    #[test]
    fn failed_open_registers_nothing() {
        let r: Registry<u64> = Registry::new();
        assert_eq!(
            r.acquire(key(2), || Err::<u64, _>("driver says no")),
            Err("driver says no")
        );
        assert_eq!(r.refs(&key(2)), 0);
        assert_eq!(r.acquire(key(2), || Ok::<_, ()>(5)), Ok(5));
    }

    #[test]
    fn the_creators_allocation_is_shared_not_opened() {
        let r: Registry<u64> = Registry::new();
        assert!(r.insert_owned(key(3), 77));
        assert!(!r.insert_owned(key(3), 78), "a key registers once");
        // Another handle in the creating process must not call cuIpcOpenMemHandle.
        assert_eq!(r.acquire(key(3), || Err::<u64, _>("must not open")), Ok(77));
        assert_eq!(r.release(&key(3), true), None);
        assert_eq!(
            r.release(&key(3), true),
            Some(Last {
                value: 77,
                owned: true,
                settled: true
            })
        );
    }

    /// A reference that left with work queued keeps the memory from being freed or closed
    /// by whichever reference leaves last, idle or not.
    #[test]
    fn a_reference_that_left_unsettled_leaks_the_memory() {
        let r: Registry<u64> = Registry::new();
        assert!(r.insert_owned(key(6), 6));
        r.acquire(key(6), || Err::<u64, ()>(())).unwrap();
        assert_eq!(r.release(&key(6), false), None);
        assert_eq!(
            r.release(&key(6), true),
            Some(Last {
                value: 6,
                owned: true,
                settled: false
            })
        );
    }

    #[test]
    fn keys_are_independent() {
        let r: Registry<u64> = Registry::new();
        r.acquire(key(4), || Ok::<_, ()>(4)).unwrap();
        r.acquire((1, [4; 64]), || Ok::<_, ()>(41)).unwrap();
        assert_eq!(r.refs(&key(4)), 1);
        assert_eq!(
            r.release(&(1, [4; 64]), true),
            Some(Last {
                value: 41,
                owned: false,
                settled: true
            })
        );
        assert_eq!(r.refs(&key(4)), 1);
    }

    #[test]
    fn concurrent_acquires_open_once() {
        let r: std::sync::Arc<Registry<u64>> = std::sync::Arc::new(Registry::new());
        let opens = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let ts: Vec<_> = (0..8)
            .map(|_| {
                let (r, opens) = (r.clone(), opens.clone());
                std::thread::spawn(move || {
                    r.acquire(key(5), || {
                        opens.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        Ok::<_, ()>(9)
                    })
                    .unwrap()
                })
            })
            .collect();
        for t in ts {
            assert_eq!(t.join().unwrap(), 9);
        }
        assert_eq!(opens.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(r.refs(&key(5)), 8);
    }
}
