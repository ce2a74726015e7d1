//! The slot ring and ack word of GPU consumers, as plain integer logic (no driver).
//!
//! A CUDA stream cannot retry a torn read, so a GPU consumer does not use the optimistic
//! copy-and-check: the writer publishes frame `k` into slot `(k - 1) % n` of an `n`-slot
//! ring, the consumer's stream waits for the frame (`seq ≥ base + 2k`, GEQ), reads the slot, then
//! writes `k` into its ack word. Before reusing a slot the writer waits until the ack
//! reaches `k - n`, so a slot is never overwritten while its reader may still be reading.
//!
//! Counters are `u64` and compared the way the driver's GEQ wait compares them (the
//! difference read as signed), so wrap-around is harmless. The host-side wait for an ack
//! ([`wait_ack`]) always has a deadline and checks the peer's liveness: a dead or stuck
//! consumer is an error, never a hang.

use std::time::{Duration, Instant};

/// `a ≥ b` as the driver's `CU_STREAM_WAIT_VALUE_GEQ` evaluates it: `(a - b)` as a signed
/// number is ≥ 0, so a counter that wrapped still compares after its predecessors.
pub fn geq_wrapping(a: u64, b: u64) -> bool {
    (a.wrapping_sub(b) as i64) >= 0
}

/// The seqlock value at which frame `k` (1-based, counted from when the ring started) is
/// published: the even value `k` brackets after `base` (the even sequence the ring started
/// at), the same number CPU readers see in the header.
pub fn published_seq(base: u64, frame: u64) -> u64 {
    base.wrapping_add(frame.wrapping_mul(2))
}

/// A ring of `n` slots shared by one writer and one acknowledging GPU consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotRing {
    slots: u64,
}

/// What the writer must do before writing a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterStep {
    /// The slot is free: write the frame into it.
    Write {
        /// The slot to write.
        slot: usize,
    },
    /// The slot still holds a frame the consumer has not acknowledged: wait until the ack
    /// word reaches `ack` (GEQ), then write into `slot`.
    WaitAck {
        /// The ack value to wait for.
        ack: u64,
        /// The slot to write after it.
        slot: usize,
    },
}

impl SlotRing {
    /// A ring of `slots` slots; `None` for 0 (a ring needs at least one slot).
    pub fn new(slots: usize) -> Option<Self> {
        (slots > 0).then_some(Self {
            slots: slots as u64,
        })
    }

    /// The number of slots.
    pub fn len(&self) -> usize {
        self.slots as usize
    }

    /// Always false: a ring has at least one slot.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The slot frame `frame` (1-based) goes to.
    pub fn slot_of(&self, frame: u64) -> usize {
        (frame.wrapping_sub(1) % self.slots) as usize
    }

    /// The ack value that frees the slot of `frame`: the consumer has finished the frame
    /// that used that slot before, `frame - n`, wrapping (on the first lap it is "behind"
    /// the initial ack 0 in the wrap-around order, so already satisfied).
    pub fn ack_needed(&self, frame: u64) -> u64 {
        frame.wrapping_sub(self.slots)
    }

    /// Whether the writer may write `frame` now, given the last acknowledged frame.
    pub fn may_write(&self, frame: u64, acked: u64) -> bool {
        geq_wrapping(acked, self.ack_needed(frame))
    }

    /// The writer's next step for `frame`, given the ack word's current value.
    pub fn writer_step(&self, frame: u64, acked: u64) -> WriterStep {
        let slot = self.slot_of(frame);
        if self.may_write(frame, acked) {
            WriterStep::Write { slot }
        } else {
            WriterStep::WaitAck {
                ack: self.ack_needed(frame),
                slot,
            }
        }
    }

    /// Frames written but not yet acknowledged (what is in flight), given the last written
    /// and the last acknowledged frame.
    pub fn in_flight(&self, written: u64, acked: u64) -> u64 {
        if geq_wrapping(written, acked) {
            written.wrapping_sub(acked)
        } else {
            0
        }
    }
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
/// sequence before the write, and the ack word. The payload is a ring of one slot: the frame in
/// it must be acknowledged. An odd (abandoned) sequence counts its last *published* frame, so a
/// consumer waiting for the abandoned frame never deadlocks the writer that replaces it.
pub fn writer_gate(
    consumer_pid: i64,
    consumer_alive: impl FnOnce() -> bool,
    seq: i64,
    acked: u64,
) -> WriterGate {
    if consumer_pid == 0 {
        return WriterGate::Free;
    }
    let ring = SlotRing { slots: 1 };
    match ring.writer_step(last_frame(seq).wrapping_add(1), acked) {
        WriterStep::Write { .. } => WriterGate::Free,
        WriterStep::WaitAck { .. } if !consumer_alive() => WriterGate::ReleaseDead,
        WriterStep::WaitAck { ack, .. } => WriterGate::WaitAck(ack),
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
    fn published_seq_is_the_even_value_after_k_brackets() {
        assert_eq!(published_seq(0, 0), 0);
        assert_eq!(published_seq(0, 1), 2);
        assert_eq!(published_seq(10, 7), 24);
        assert_eq!(published_seq(10, 7) % 2, 0);
    }

    #[test]
    fn empty_ring_is_refused() {
        assert_eq!(SlotRing::new(0), None);
        assert_eq!(SlotRing::new(3).map(|r| r.len()), Some(3));
    }

    #[test]
    fn frames_cycle_through_slots() {
        let r = SlotRing::new(3).unwrap();
        let slots: Vec<usize> = (1..=7).map(|k| r.slot_of(k)).collect();
        assert_eq!(slots, vec![0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn first_lap_needs_no_ack_then_each_slot_waits_for_its_previous_frame() {
        let r = SlotRing::new(2).unwrap();
        assert_eq!(r.writer_step(1, 0), WriterStep::Write { slot: 0 });
        assert_eq!(r.writer_step(2, 0), WriterStep::Write { slot: 1 });
        // Frame 3 reuses slot 0: frame 1 must be acknowledged first.
        assert_eq!(r.writer_step(3, 0), WriterStep::WaitAck { ack: 1, slot: 0 });
        assert_eq!(r.writer_step(3, 1), WriterStep::Write { slot: 0 });
        assert_eq!(r.writer_step(4, 1), WriterStep::WaitAck { ack: 2, slot: 1 });
        assert_eq!(r.writer_step(4, 3), WriterStep::Write { slot: 1 });
    }

    #[test]
    fn writer_never_gets_more_than_n_frames_ahead() {
        // Simulate a slow consumer acking one frame per two writes; at every step the
        // writer's permission must keep in-flight frames within the ring and never hand out
        // a slot whose previous frame is unacknowledged.
        let r = SlotRing::new(4).unwrap();
        let (mut written, mut acked) = (0u64, 0u64);
        let mut holder = [0u64; 4]; // frame currently in each slot
        for step in 0..1000u64 {
            let next = written + 1;
            match r.writer_step(next, acked) {
                WriterStep::Write { slot } => {
                    assert!(
                        holder[slot] <= acked,
                        "slot {slot} reused before frame {} was acknowledged",
                        holder[slot]
                    );
                    holder[slot] = next;
                    written = next;
                }
                WriterStep::WaitAck { ack, .. } => assert!(ack > acked),
            }
            assert!(r.in_flight(written, acked) <= r.len() as u64);
            if step % 2 == 1 && acked < written {
                acked += 1;
            }
        }
        assert!(written > 400, "the writer progressed ({written} frames)");
    }

    #[test]
    fn ring_logic_survives_counter_wrap() {
        let r = SlotRing::new(2).unwrap();
        let near = u64::MAX - 1;
        assert!(r.may_write(near.wrapping_add(3), near.wrapping_add(1)));
        assert!(!r.may_write(near.wrapping_add(3), near));
        assert_eq!(r.in_flight(near.wrapping_add(2), near), 2);
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
