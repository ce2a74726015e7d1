//! The ack word of GPU consumers, as plain integer logic (no driver).
//!
//! A CUDA stream cannot retry a torn read, so a GPU consumer does not use the optimistic
//! copy-and-check. The payload holds one frame; frame `k` is the one published at even
//! sequence `2k`. The consumer's CUDA stream waits until the `_gpu` segment's published-frame
//! word reaches `k` (GEQ), reads the payload, then writes `k` into the ack word; a writer does
//! not overwrite the payload before the ack reaches the frame in it ([`writer_gate`]).
//!
//! A consumer that gives up waiting sets [`RELEASED_BIT`] in the published-frame word, so its
//! own stream's pending waits pass ([`published_frame`] reads the word without it); one that
//! died is released by the next writer that waits for it, which raises the ack itself
//! ([`release_target`], [`raised_ack`]).
//!
//! Counters are `u64` and compared the way the driver's GEQ wait compares them (the
//! difference read as signed), so wrap-around is harmless. The host-side wait for an ack
//! ([`wait_ack`]) always has a deadline and checks the peer's liveness: a dead or stuck
//! consumer is an error, never a hang.

use std::time::{Duration, Instant};

use super::layout::RELEASED_BIT;

/// `a ≥ b` as the driver's `CU_STREAM_WAIT_VALUE_GEQ` evaluates it: `(a - b)` as a signed
/// number is ≥ 0, so a counter that wrapped still compares after its predecessors.
pub fn geq_wrapping(a: u64, b: u64) -> bool {
    (a.wrapping_sub(b) as i64) >= 0
}

/// The frame number in the published-frame word: the word without [`RELEASED_BIT`].
pub fn published_frame(word: u64) -> u64 {
    word & !RELEASED_BIT
}

/// Whether a consumer that gave up released its stream's waits through the published-frame
/// word ([`RELEASED_BIT`]): the word holds no frame number until the next publication (or
/// consumer) stores one.
pub fn is_released(word: u64) -> bool {
    word & RELEASED_BIT != 0
}

/// The ack that releases a GPU consumer that died: every frame published so far (the
/// published-frame `word`, [`RELEASED_BIT`] ignored), and at least `awaited`, the ack a
/// writer's CUDA stream was last told to wait for (its publication may not have reached the
/// word yet), whichever is later in the wrap-around order.
pub fn release_target(word: u64, awaited: u64) -> u64 {
    let published = published_frame(word);
    if geq_wrapping(published, awaited) {
        published
    } else {
        awaited
    }
}

/// What to store in the ack word, now `ack`, to raise it to `target`; `None` when it is
/// there already (an ack never steps back).
pub fn raised_ack(ack: u64, target: u64) -> Option<u64> {
    (!geq_wrapping(ack, target)).then_some(target)
}

/// The last frame published before sequence value `seq`: its generation / 2, rounded down
/// (an odd value is a write in progress, or one abandoned, whose frame is not there yet; a
/// negative one marks the generation it negates invalid: a write aborted or abandoned on a
/// live stream, or an unlink, and the frames published before it stay published).
pub fn last_frame(seq: i64) -> u64 {
    crate::seqlock::generation(seq) as u64 / 2
}

/// What a writer does about the stream's GPU consumer before it overwrites the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterGate {
    /// No consumer, or it has acknowledged the frame in the payload: write.
    Free,
    /// The consumer's process is gone: release its claim (and any wait on its ack), write.
    ReleaseDead,
    /// Wait until the ack word reaches this frame, then write.
    WaitAck(u64),
}

/// The gate for a write, given the consumer word (`consumer_pid`, 0 for none), whether that
/// process is alive (asked only when the write would wait for it: the probe is a system call,
/// and a consumer that has acknowledged the frame in the payload holds no write back), the
/// sequence before the write, and the ack word. The payload holds one frame, the last
/// published: it must be acknowledged. An odd (abandoned) sequence counts its last *published*
/// frame, so a consumer waiting for the abandoned frame never deadlocks the writer that
/// replaces it.
pub fn writer_gate(
    consumer_pid: i64,
    consumer_alive: impl FnOnce() -> bool,
    seq: i64,
    acked: u64,
) -> WriterGate {
    let in_payload = last_frame(seq);
    if consumer_pid == 0 || geq_wrapping(acked, in_payload) {
        WriterGate::Free
    } else if !consumer_alive() {
        WriterGate::ReleaseDead
    } else {
        WriterGate::WaitAck(in_payload)
    }
}

/// A new consumer's first frame and initial ack, from the sequence it read after its claim
/// became visible: the frame after the last published one (for an odd sequence, the frame
/// being written, whose even value it waits for), the previous one acknowledged.
pub fn consumer_start(seq: i64) -> (u64, u64) {
    let last = last_frame(seq);
    (last + 1, last)
}

/// Why a host-side wait for an ack ended without it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckWaitError {
    /// The consumer process is gone: its ack will never come.
    PeerDead,
    /// The deadline passed with the consumer alive (stuck, or far behind).
    Timeout {
        /// The ack word's last value.
        acked: u64,
        /// The value waited for.
        wanted: u64,
    },
}

/// Waits on the host until `read_ack()` reaches `wanted` (GEQ), checking `peer_alive()`
/// between polls and giving up at `timeout`. `pause` is called between polls (a futex wait,
/// a yield) so the caller chooses how to idle; it is never the synchronization itself.
pub fn wait_ack(
    wanted: u64,
    timeout: Duration,
    mut read_ack: impl FnMut() -> u64,
    mut peer_alive: impl FnMut() -> bool,
    mut pause: impl FnMut(),
) -> Result<u64, AckWaitError> {
    let deadline = crate::deadline::after(Instant::now(), Some(timeout));
    loop {
        let acked = read_ack();
        if geq_wrapping(acked, wanted) {
            return Ok(acked);
        }
        if !peer_alive() {
            // One last look: the consumer may have acknowledged just before exiting.
            let acked = read_ack();
            return if geq_wrapping(acked, wanted) {
                Ok(acked)
            } else {
                Err(AckWaitError::PeerDead)
            };
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(AckWaitError::Timeout { acked, wanted });
        }
        pause();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn geq_is_wraparound_safe() {
        assert!(geq_wrapping(5, 5));
        assert!(geq_wrapping(6, 5));
        assert!(!geq_wrapping(4, 5));
        assert!(geq_wrapping(2, u64::MAX - 1), "a wrapped counter is ahead");
        assert!(!geq_wrapping(u64::MAX - 1, 2));
    }

    #[test]
    fn a_release_acknowledges_every_published_frame_and_the_awaited_one() {
        // Frames up to 7 published, a writer's stream waits for the ack of 5: ack 7.
        assert_eq!(release_target(7, 5), 7);
        // A GPU-side publication whose frame number has not reached the word yet: the ack its
        // writer's stream waits for is later than the word, and is what frees that stream.
        assert_eq!(release_target(7, 8), 8);
        // Nothing awaited yet (0): the published frames.
        assert_eq!(release_target(3, 0), 3);
    }

    #[test]
    fn a_release_ignores_the_released_bit() {
        // A consumer that gave up set the bit: the word's frame number is the one below it,
        // and an ack with the bit would count frames never written as acknowledged.
        let word = 7 | RELEASED_BIT;
        assert!(is_released(word) && !is_released(7));
        assert_eq!(published_frame(word), 7);
        assert_eq!(published_frame(7), 7, "a word without the bit is its frame");
        assert_eq!(release_target(word, 5), 7);
        assert_eq!(release_target(word, 9), 9);
        // Once the bit is set the word passes every wait a consumer can have pending; the
        // frame number alone does not.
        for next in [8, 9, 1 << 40] {
            assert!(geq_wrapping(word, next) && !geq_wrapping(7, next), "{next}");
        }
    }

    #[test]
    fn a_release_holds_at_the_largest_frame_numbers_and_across_the_wrap() {
        // Frames are generation / 2, below the bit: the bit is never part of a frame number.
        let top = last_frame(i64::MAX);
        assert!(top < RELEASED_BIT && top > RELEASED_BIT / 2, "{top}");
        assert_eq!(published_frame(top | RELEASED_BIT), top);
        assert_eq!(release_target(top | RELEASED_BIT, top - 1), top);
        assert_eq!(release_target(top - 1, top), top);
        // The ack word compares as the driver's GEQ wait does: a counter that wrapped past 0
        // is later than one just below the wrap.
        let near = u64::MAX - 1;
        assert_eq!(release_target(near, 1), 1);
        assert_eq!(raised_ack(near, 1), Some(1), "raised across the wrap");
        assert_eq!(raised_ack(1, near), None, "never stepped back across it");
    }

    #[test]
    fn an_ack_is_only_raised() {
        assert_eq!(raised_ack(3, 7), Some(7));
        assert_eq!(raised_ack(7, 7), None);
        assert_eq!(raised_ack(9, 7), None, "a consumer ahead keeps its ack");
    }

    #[test]
    fn a_consumer_takes_every_frame_after_its_start_and_the_writer_waits_for_each() {
        // Registered on a stream that published frame 3 (seq 6): it takes frame 4 first.
        assert_eq!(consumer_start(6), (4, 3));
        // Registered while frame 4 is being written (seq 7): it takes frame 4 (waiting for
        // its even value), frame 3 counts as acknowledged.
        assert_eq!(consumer_start(7), (4, 3));
        assert_eq!(consumer_start(0), (1, 0), "a fresh stream");
        // Frames 1-3 published (seq 6), then the write of frame 4 aborted or its writer
        // found dead (seq -7): a new consumer waits for the next frame, 4, as after seq 6 or
        // 7, not for frames 1-3 again; a writer waits for the ack of frame 3. (An unlink
        // marks -6: the same count, and the consumer of an unlinked stream gets `Stale`.)
        assert_eq!(
            consumer_start(-7),
            (4, 3),
            "an aborted write's negative sequence"
        );
        assert_eq!(
            consumer_start(-6),
            (4, 3),
            "an unlinked stream's negative sequence"
        );
        assert_eq!(writer_gate(42, || true, -7, 2), WriterGate::WaitAck(3));
        assert_eq!(writer_gate(42, || true, -7, 3), WriterGate::Free);
        // Writer of frame 4 over frame 3 (seq 6): the consumer acknowledged 3 → free.
        assert_eq!(writer_gate(42, || true, 6, 3), WriterGate::Free);
        // Writer of frame 5 (seq 8) before the consumer acknowledged 4 → wait for 4.
        assert_eq!(writer_gate(42, || true, 8, 3), WriterGate::WaitAck(4));
        assert_eq!(writer_gate(42, || true, 8, 4), WriterGate::Free);
        // A consumer ahead (it took a duplicate after a recovery) never blocks.
        assert_eq!(writer_gate(42, || true, 8, 9), WriterGate::Free);
    }

    #[test]
    fn no_consumer_or_a_dead_one_never_blocks_the_writer() {
        assert_eq!(writer_gate(0, || false, 100, 0), WriterGate::Free);
        assert_eq!(writer_gate(0, || true, 100, 0), WriterGate::Free);
        assert_eq!(writer_gate(42, || false, 100, 0), WriterGate::ReleaseDead);
    }

    #[test]
    fn the_consumer_is_probed_only_when_the_write_would_wait_for_it() {
        // Frame 3 acknowledged: no probe (a system call) on the write path.
        let free = writer_gate(
            42,
            || panic!("probed a consumer that holds nothing back"),
            6,
            3,
        );
        assert_eq!(free, WriterGate::Free);
        let probes = Cell::new(0);
        let alive = || {
            probes.set(probes.get() + 1);
            true
        };
        assert_eq!(writer_gate(42, alive, 8, 3), WriterGate::WaitAck(4));
        assert_eq!(probes.get(), 1, "probed once, before waiting");
    }

    #[test]
    fn an_abandoned_write_does_not_deadlock_a_consumer_waiting_for_its_frame() {
        // Frame 3 published (seq 6); its writer died in frame 4 (seq 7 left odd). The consumer
        // took 3 and waits for 4; the next writer (frame 4 again, seq 9 → 10) must not wait for
        // an ack of 4, which only comes once it has written.
        let (next, acked) = consumer_start(6);
        assert_eq!((next, acked), (4, 3));
        assert_eq!(writer_gate(42, || true, 7, acked), WriterGate::Free);
        assert_eq!(last_frame(7), 3);
    }

    #[test]
    fn wait_ack_returns_once_acked() {
        let ack = Cell::new(0u64);
        let got = wait_ack(
            3,
            Duration::from_secs(5),
            || ack.get(),
            || true,
            || ack.set(ack.get() + 1),
        );
        assert_eq!(got, Ok(3));
    }

    #[test]
    fn wait_ack_reports_a_dead_peer_instead_of_hanging() {
        let polls = Cell::new(0u32);
        let got = wait_ack(
            1,
            Duration::from_secs(3600),
            || 0,
            || {
                polls.set(polls.get() + 1);
                polls.get() < 3
            },
            || {},
        );
        assert_eq!(got, Err(AckWaitError::PeerDead));
        assert_eq!(polls.get(), 3);
    }

    #[test]
    fn wait_ack_accepts_an_ack_written_just_before_the_peer_died() {
        let reads = Cell::new(0u32);
        let got = wait_ack(
            1,
            Duration::from_secs(3600),
            || {
                reads.set(reads.get() + 1);
                u64::from(reads.get() >= 2)
            },
            || false,
            || {},
        );
        assert_eq!(got, Ok(1));
    }

    #[test]
    fn wait_ack_times_out_on_a_live_but_stuck_peer() {
        let got = wait_ack(9, Duration::ZERO, || 4, || true, || {});
        assert_eq!(
            got,
            Err(AckWaitError::Timeout {
                acked: 4,
                wanted: 9
            })
        );
    }
}
