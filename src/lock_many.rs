//! [`lock_many`]: the write locks of several streams at once, deadlock-free.
//!
//! Deadlock needs a cycle: A holds `x` and waits for `y` while B holds `y` and waits for `x`.
//! Taking every lock set in one global order (by stream name, the key of the lock file)
//! makes such a cycle impossible, whatever order callers list the streams in and however
//! their sets overlap, across threads and processes alike. pyshmem's `locked_many` orders
//! by name too, so Rust and Python callers agree on the order.
//!
//! That needs the locks of the set the thread already holds on entry to come first in the
//! order (a lock outside the set is not looked at: holding `c` while taking `a` and `b` is
//! the caller's own order to keep). A thread holding `b`'s lock (a [`WriteGuard`] from [`Stream::lock`], or an earlier
//! `lock_many`) that took `a` next would take it after `b`, against the order, and could
//! deadlock with a thread taking both in order: `lock_many(&[&a, &b], ..)` is refused then
//! ([`Error::Unsupported`]), before it waits for anything. Locks held that come first in the
//! order are taken again (the locks are reentrant).

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::stream::Stream;
use crate::write::WriteGuard;

/// The write locks of several streams, held; released in reverse order of acquisition when
/// dropped. Not `Send` (the locks belong to the thread that took them). See [`lock_many`].
#[derive(Debug)]
#[must_use = "the write locks are released when this guard is dropped"]
pub struct ManyGuard<'a> {
    /// Sorted by stream name (the acquisition order).
    guards: Vec<WriteGuard<'a>>,
}

impl<'a> ManyGuard<'a> {
    /// The guards, in acquisition order (by stream name, one per distinct name).
    pub fn guards(&self) -> &[WriteGuard<'a>] {
        &self.guards
    }

    /// The guard of the stream called `name`, if it is part of this set.
    pub fn get(&self, name: &str) -> Option<&WriteGuard<'a>> {
        self.guards.iter().find(|g| g.stream().name() == name)
    }

    /// The names locked, in acquisition order.
    pub fn names(&self) -> Vec<&str> {
        self.guards.iter().map(|g| g.stream().name()).collect()
    }

    /// How many distinct streams are locked.
    pub fn len(&self) -> usize {
        self.guards.len()
    }

    /// Whether no stream is locked (an empty input).
    pub fn is_empty(&self) -> bool {
        self.guards.is_empty()
    }
}

impl Drop for ManyGuard<'_> {
    fn drop(&mut self) {
        while let Some(g) = self.guards.pop() {
            drop(g);
        }
    }
}

/// Takes the write locks of all `streams` under one deadline, in a fixed global order (by
/// name), and returns a guard that releases them all (in reverse order) when dropped.
///
/// Handles that name the same stream are locked once (the lock is per name). If any lock
/// cannot be taken before the deadline, the ones already taken are released and
/// [`Error::Timeout`] names the stream that was unavailable; other errors (a read-only or
/// closed handle) are returned the same way. A set in which a lock this thread already holds
/// comes after one it does not is refused with [`Error::Unsupported`] before any wait (it
/// could deadlock: see the module docs). `None` waits forever. The locks are reentrant
/// per thread, like [`Stream::lock`]: writing through the streams themselves while the guard
/// is held does not deadlock.
///
/// ```
/// use shmstream::{Dtype, Stream, lock_many};
/// use std::time::Duration;
/// let (a, b) = (format!("doc-many-a-{}", std::process::id()), format!("doc-many-b-{}", std::process::id()));
/// let sa = Stream::create(&a, &[1], Dtype::I64)?;
/// let sb = Stream::create(&b, &[1], Dtype::I64)?;
/// {
///     let held = lock_many(&[&sb, &sa], Some(Duration::from_secs(1)))?;
///     assert_eq!(held.names(), vec![a.as_str(), b.as_str()]); // by name, whatever the input order
///     held.get(&a).unwrap().write_slice(&[1i64])?;
///     sb.write_slice(&[2i64])?; // reentrant
/// }
/// shmstream::unlink(&a)?;
/// shmstream::unlink(&b)?;
/// # Ok::<(), shmstream::Error>(())
/// ```
pub fn lock_many<'a>(streams: &[&'a Stream], timeout: Option<Duration>) -> Result<ManyGuard<'a>> {
    // Of several handles of one stream, one that may lock it (open, writable) is kept. Each
    // key is taken once: another thread may close a handle during the sort, and a key that
    // changes under it breaks the sort's order.
    let cannot_lock = |s: &Stream| s.is_readonly() || s.is_closed();
    let mut keyed: Vec<(bool, &'a Stream)> = streams.iter().map(|s| (cannot_lock(s), *s)).collect();
    keyed.sort_by(|(a_no, a), (b_no, b)| (a.name(), a_no).cmp(&(b.name(), b_no)));
    keyed.dedup_by(|(_, a), (_, b)| a.name() == b.name());
    let order: Vec<&'a Stream> = keyed.into_iter().map(|(_, s)| s).collect();
    refuse_out_of_order(&order)?;
    let deadline = crate::deadline::from_now(timeout);
    let mut guards = Vec::with_capacity(order.len());
    for s in order {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        match s.lock(left) {
            Ok(g) => guards.push(g),
            Err(e) => {
                // Release what we hold (reverse order) before reporting.
                drop(ManyGuard { guards });
                return Err(match e {
                    Error::Timeout { name, awaited, .. } => Error::Timeout {
                        name,
                        op: "take all the write locks (lock_many)",
                        awaited,
                        timeout: timeout.unwrap_or_default(),
                    },
                    other => other,
                });
            }
        }
    }
    Ok(ManyGuard { guards })
}

/// Refuses a set in which a lock this thread holds comes after one it does not hold: taking
/// the one not held would go against the order (see the module docs).
fn refuse_out_of_order(order: &[&Stream]) -> Result<()> {
    let Some(first_free) = order.iter().position(|s| !s.lock.held_here()) else {
        return Ok(());
    };
    match order[first_free..].iter().find(|s| s.lock.held_here()) {
        None => Ok(()),
        Some(held) => Err(Error::Unsupported {
            name: held.name().to_owned(),
            what: format!(
                "lock_many while this thread already holds this stream's write lock but not \
                 that of '{}', which comes before it in lock_many's order (by name): taking \
                 it now could deadlock with another lock_many of both; drop the guard held \
                 first, or take every lock the thread needs in one lock_many call",
                order[first_free].name()
            ),
        }),
    }
}
