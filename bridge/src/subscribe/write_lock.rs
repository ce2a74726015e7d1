//! Waiting for the mirror's write lock: how long a frame waits for it before it is refused
//! ([`LOCK_WAIT`], [`LOSSLESS_LOCK_WAIT`]), and the lock-out after a refusal, in which the
//! frames that follow only try it ([`lock_wait`]), so a lock held idle does not hold up the
//! receive task that carries every stream of the connection.

use std::time::{Duration, Instant};

/// How long the mirror waits for its local stream's write lock before refusing a
/// latest-value frame. Short: the write runs in Zenoh's receive callback, on the task that
/// receives every key of the connection, so while it waits no frame of any other stream
/// from that publisher is received. Long enough for a local tool's write of a frame to end
/// (a copy of tens of MiB), not for a lock held idle (a `WriteGuard` kept, a stuck writer):
/// those frames are refused, said ([`locked_out`]), and the other streams go on. After a
/// refusal the frames that follow only try the lock, without waiting
/// ([`Mirror::locked_out`](super::Mirror::locked_out)), until one gets in or one comes over
/// [`LOCK_OUT_LASTS`] after the last refusal ([`lock_wait`]): at a high frame rate even
/// this wait at every frame would take the receive task's whole time (10 ms a frame at 100
/// Hz), and hold up the other streams after all.
pub(super) const LOCK_WAIT: Duration = Duration::from_millis(10);

/// How long the mirror waits for its local stream's write lock before refusing a lossless
/// frame. Long: a zero-copy reader holds the write lock while it works on a frame (pyshmem's
/// `with shm.locked(): work(shm.read(safe=False))`, the library's `WriteGuard::live`), and a
/// lossless frame refused for that is lost. Lossless trades the other streams' latency for
/// completeness: while it waits, no frame of any other stream of the connection is received,
/// and the receive task is its backpressure (TCP holds the publisher's blocking put, whose
/// frames wait in its ring). After a refusal the frames that follow only try the lock until
/// one gets in (or [`LOCK_OUT_LASTS`] passes), as for [`LOCK_WAIT`]: a lock held idle would
/// otherwise take a second of the receive task per frame, a backlog that grows without end
/// and stalls every stream of the connection. A reader working under the lock for less than
/// this wait never causes that.
pub(super) const LOSSLESS_LOCK_WAIT: Duration = Duration::from_secs(1);

/// How long a lock-out lasts ([`Mirror::locked_out`](super::Mirror::locked_out)): a frame
/// that comes longer than this after the last frame refused for the write lock waits for it
/// as usual ([`LOCK_WAIT`], [`LOSSLESS_LOCK_WAIT`]) instead of only trying it. Otherwise
/// the first frame after a quiet spell would be refused for meeting a local process that
/// holds the lock for an instant (its own write, a reader's moment under it), said as a
/// lock held "for over" a wait it was never given, and, lossless, lost. The lock-out is for
/// frames that come in a run, closer together than this: while the lock is held idle, a
/// frame waits for it in vain only after a second in which no frame of the stream was
/// refused (at most 1% of the receive task for latest value; for lossless, no longer than
/// the quiet second before it, so no backlog builds up). As long as [`LOSSLESS_LOCK_WAIT`],
/// the longest of the waits it cuts short.
pub(super) const LOCK_OUT_LASTS: Duration = Duration::from_secs(1);

/// The reason a frame of remote stream `remote` is refused when its mirror `name` stayed
/// write-locked for [`LOCK_WAIT`] (latest value) or [`LOSSLESS_LOCK_WAIT`] (`lossless`),
/// then not waited for while locked out ([`lock_wait`]).
pub(super) fn locked_out(name: &str, remote: &str, lossless: bool) -> String {
    let or_later = format!(" or comes over {LOCK_OUT_LASTS:?} after the last one refused");
    let how = if lossless {
        format!(
            "for over {LOSSLESS_LOCK_WAIT:?}, the wait for a lossless frame, during which \
             every other stream on this connection was held up): lossless frames of remote \
             stream '{remote}' are refused (lost), and those that follow are not waited for \
             until one gets the lock{or_later}"
        )
    } else {
        format!(
            "for over {LOCK_WAIT:?}): frames of remote stream '{remote}' are refused, and \
             those that follow are not waited for until one gets the lock{or_later}, \
             so that the other streams on this connection are not held up"
        )
    };
    format!(
        "something local holds the write lock of the mirror '{name}' ({how}; release the lock \
         (an idle write guard, a stuck writer: its pid is the header's lock_owner_pid) and \
         mirroring resumes with the next frame"
    )
}

/// How long a frame (`lossless` or not) waits for its mirror's write lock at `now`, the
/// mirror locked out since `locked_out` (the last frame refused for the lock, none written
/// since): not at all within [`LOCK_OUT_LASTS`] of it, the usual wait otherwise.
pub(super) fn lock_wait(lossless: bool, locked_out: Option<Instant>, now: Instant) -> Duration {
    match locked_out {
        Some(t) if now.saturating_duration_since(t) <= LOCK_OUT_LASTS => Duration::ZERO,
        _ if lossless => LOSSLESS_LOCK_WAIT,
        _ => LOCK_WAIT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lock-out stops a run of frames from each waiting for a lock held idle; a frame
    /// after a quiet spell waits as usual, so a local process holding the lock for an
    /// instant does not get it refused. (Before, the lock-out lasted until a frame got the
    /// lock, however long after.)
    #[test]
    fn a_lock_out_lets_frames_try_the_lock_only_until_it_is_old() {
        let t0 = Instant::now();
        for (lossless, usual) in [(false, LOCK_WAIT), (true, LOSSLESS_LOCK_WAIT)] {
            assert_eq!(lock_wait(lossless, None, t0), usual, "lossless {lossless}");
            let fresh = [Duration::ZERO, Duration::from_millis(1), LOCK_OUT_LASTS];
            for since in fresh {
                assert_eq!(
                    lock_wait(lossless, Some(t0), t0 + since),
                    Duration::ZERO,
                    "lossless {lossless}, locked out {since:?} ago"
                );
            }
            let old = [
                LOCK_OUT_LASTS + Duration::from_millis(1),
                300 * LOCK_OUT_LASTS,
            ];
            for since in old {
                assert_eq!(
                    lock_wait(lossless, Some(t0), t0 + since),
                    usual,
                    "lossless {lossless}, locked out {since:?} ago"
                );
            }
        }
    }
}
