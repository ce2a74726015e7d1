//! GPU-side publication (feature `cuda`): the writer's CUDA stream stores the even sequence.
//!
//! The bracket is the stream's one publication bracket (`Stream::publish_locked`); on this
//! path three of its steps change:
//! - **before it opens** ([`begin`]): a previous GPU-side publication that has not landed
//!   yet (the sequence still odd, its publisher alive) is waited for, with the handle's
//!   timeout; then the `_gpu` segment's publisher word names this process (or 0 on the host
//!   path), so that others read an odd sequence right ([`probe::judge_odd`]).
//! - **the fill** enqueues its copies (and the mirror's) without waiting for them.
//! - **the end** ([`end`]): the host stamps time, frame id and count while the sequence is
//!   still odd, then enqueues the even store (`cuStreamWriteValue64_v2` on the registered
//!   header word, after a stream-scoped system fence) and, on notify streams, a host
//!   function that wakes parked readers. The host does not wait.
//!
//! The host stores the odd value itself, before any copy is enqueued, so a reader whose
//! copy overlaps the new write's sees it when it re-checks. See `docs/format-gpu.md`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use cudarc::driver::sys;

use super::driver::{Attachment, describe, past_stale_error};
use super::layout;
use super::probe::{self, OddSequence, PathChoice, PublishPath};
use super::publish;
use crate::error::{Error, Result};
use crate::seqlock::{self, Bracket};
use crate::stream::Stream;

/// How one handle's writes are published, decided once: at open for a writable handle
/// (`super::prepare`), on the first `gpu_publish_path` for a read-only one.
#[derive(Debug)]
pub(crate) struct HandlePath {
    /// The path and why.
    pub(crate) choice: PathChoice,
    /// On the GPU-side path, the device addresses of the words its CUDA stream touches.
    words: Option<Words>,
}

/// Device addresses of the registered host words a GPU-side publication's CUDA stream writes
/// or waits on, resolved once per handle.
#[derive(Debug, Clone, Copy)]
struct Words {
    /// The header's sequence word.
    seq: sys::CUdeviceptr,
    /// The `_gpu` segment's published-frame word.
    published: sys::CUdeviceptr,
    /// The `_gpu` segment's consumer ack word (a GPU consumer's gate).
    ack: sys::CUdeviceptr,
}

/// Whether this handle's writes are published by its CUDA stream (the fills then enqueue
/// without waiting).
pub(crate) fn on_gpu(a: &Attachment) -> bool {
    a.gpu_publish.get().is_some_and(|p| p.words.is_some())
}

/// The path this handle's writes use (decided once per handle, on first asking). A writable
/// handle of a mirrored stream registers the CPU mirror first: the path depends on it.
pub(crate) fn path<'a>(s: &Stream, a: &'a Attachment) -> &'a HandlePath {
    a.gpu_publish.get_or_init(|| {
        let mirror = s.payload.as_ref().map(|m| m.as_ptr());
        let mirror_registered = mirror.filter(|_| !s.readonly).map(|m| {
            // SAFETY: the handle drops its GPU link (and so this registration) before its
            // host payload mapping.
            unsafe { a.mirror_reg.ensure(&a.ctx, m, a.bytes) };
            match (a.mirror_reg.device_ptr(m), a.mirror_reg.error()) {
                (Some(_), _) => Ok(()),
                (None, Some(e)) => Err(describe(e)),
                (None, None) => Err("the driver gave no device address".into()),
            }
        });
        let device = publish::path_for(s.device_index);
        let choice = probe::for_handle(&device, s.history.is_some(), super::ops::ipc_event_mode());
        decide(choice, s.readonly, mirror_registered, || {
            let seq = header_device_ptr(s, a)
                .map_err(|e| format!("registering the stream header failed: {e}"))?;
            let seg = |off| a.seg_device_ptr(off);
            match (
                seg(layout::gpu_offset::PUBLISHED_FRAME),
                seg(layout::gpu_offset::CONSUMER_ACK),
            ) {
                (Some(published), Some(ack)) => Ok(Words {
                    seq,
                    published,
                    ack,
                }),
                _ => Err("registering the `_gpu` segment failed".into()),
            }
        })
    })
}

/// The handle's path from the device's (after history and event mode, `probe::for_handle`):
/// `host-sync` for a read-only handle, for a CPU mirror the driver did not register
/// (`mirror_registered` holds the driver's error, said in the reason; `None` without a mirror
/// or for a read-only handle: device→host copies into pageable memory run synchronously, so
/// on the GPU-side path they would wait behind a GPU consumer's gate with the write lock
/// held and no deadline), or when `words` cannot register the words the CUDA stream writes.
fn decide(
    choice: PathChoice,
    readonly: bool,
    mirror_registered: Option<std::result::Result<(), String>>,
    words: impl FnOnce() -> std::result::Result<Words, String>,
) -> HandlePath {
    let sync = |reason: String| HandlePath {
        choice: PathChoice {
            path: PublishPath::HostSync,
            reason,
        },
        words: None,
    };
    if choice.path == PublishPath::HostSync {
        return HandlePath {
            choice,
            words: None,
        };
    }
    if readonly {
        return sync("a read-only handle does not publish".into());
    }
    if let Some(Err(e)) = mirror_registered {
        return sync(format!("registering the CPU mirror failed: {e}"));
    }
    match words() {
        Ok(w) => HandlePath {
            choice,
            words: Some(w),
        },
        Err(reason) => sync(reason),
    }
}

fn sequence_ptr(s: &Stream) -> *mut u8 {
    std::ptr::from_ref::<AtomicI64>(s.header.sequence())
        .cast_mut()
        .cast()
}

/// Registers the header page; returns the sequence word's device address.
pub(crate) fn header_device_ptr(
    s: &Stream,
    a: &Attachment,
) -> std::result::Result<sys::CUdeviceptr, String> {
    past_stale_error(|| a.ctx.bind_to_thread()).map_err(describe)?;
    // SAFETY: the header mapping outlives the attachment (`Stream` declares its GPU link
    // first, so it drops first).
    unsafe { a.header_reg.ensure(&a.ctx, sequence_ptr(s), 8) };
    a.header_reg.device_ptr(sequence_ptr(s)).ok_or_else(|| {
        let why = a.header_reg.error().map(|e| format!(": {}", describe(e)));
        format!(
            "cuMemHostRegister refused the header page{}",
            why.unwrap_or_default()
        )
    })
}

/// Publish hook before the bracket opens (the write lock is held): waits for a previous
/// GPU-side publication to land, records who publishes this one, and says whether it is
/// published by the CUDA stream.
pub(crate) fn begin(s: &Stream, a: &Attachment) -> Result<bool> {
    wait_for_landing(s, a)?;
    let words = path(s, a).words;
    let on_gpu = words.is_some();
    // A GPU consumer's frame is not overwritten before it acknowledged it (on the GPU-side
    // path our CUDA stream waits for the ack word).
    super::consumer::gate_writer(s, a, words.map(|w| w.ack))?;
    let pid = if on_gpu { crate::sys::pid() } else { 0 };
    let word = a.publisher_pid();
    if word.load(Ordering::Relaxed) != pid {
        word.store(pid, Ordering::Relaxed);
        // Orders the word before the odd store that follows: a reader whose acquire load
        // sees this bracket's odd value sees its publisher.
        std::sync::atomic::fence(Ordering::Release);
    }
    Ok(on_gpu)
}

/// Waits (up to the handle's timeout) while the header's odd sequence is a GPU-side
/// publication landing: its CUDA stream has yet to copy the frame and store the even value.
pub(crate) fn wait_for_landing(s: &Stream, a: &Attachment) -> Result<()> {
    let h = &s.header;
    let seq = h.sequence().load(Ordering::Acquire);
    if seq <= 0 || seq & 1 == 0 {
        return Ok(());
    }
    let alive = crate::sys::is_self_or_running;
    let publisher = a.publisher_pid().load(Ordering::Acquire);
    if probe::judge_odd(publisher, alive) == OddSequence::Abandoned {
        return Ok(()); // `seqlock::begin_write` recovers it
    }
    // Polls the sequence (our own stream, or another writer's, stores it) with a backoff; the
    // liveness probes (`/proc`) run at most once a millisecond, and once more at the deadline.
    // A probe: whether the publisher is gone (`seqlock::begin_write` recovers the bracket);
    // before that, our stream may wait for a GPU consumer that died: release it.
    let gone_or_release = || {
        probe::judge_odd(publisher, alive) == OddSequence::Abandoned || {
            super::consumer::release_if_dead(a, crate::sys::pid());
            false
        }
    };
    let timeout = s.default_timeout();
    let deadline = crate::deadline::after(Instant::now(), Some(timeout));
    let mut ticker = super::consumer::ProbeTicker::within(timeout);
    let landed = super::consumer::poll_until(deadline, || {
        let moved = h.sequence().load(Ordering::Acquire) != seq;
        (moved || (ticker.due(Instant::now()) && gone_or_release())).then_some(())
    });
    // A landing in the last moments is a landing, not a timeout.
    if landed.is_some() || h.sequence().load(Ordering::Acquire) != seq || gone_or_release() {
        return Ok(());
    }
    let (op, awaited) = if super::consumer::has_live_consumer(a) {
        (
            "see the previous GPU-side publication land (its CUDA stream waits for the stream's GPU consumer to acknowledge the frame before it)",
            crate::Awaited::GpuPublisherAndConsumer,
        )
    } else {
        (
            "see the previous GPU-side publication land (its CUDA stream has not stored the even sequence)",
            crate::Awaited::GpuPublisher,
        )
    };
    Err(Error::Timeout {
        name: s.name.clone(),
        op,
        awaited,
        timeout,
    })
}

/// Publish hook that ends a GPU-side bracket: metadata and count by the host, the even
/// sequence (and the wake) by the CUDA stream. If the driver refuses to enqueue the store,
/// the host waits for the stream and stores it itself: the frame is published either way.
pub(crate) fn end(s: &Stream, a: &Attachment, b: Bracket, write_time: f64, frame_id: Option<u64>) {
    let h = &s.header;
    // The count too, unless the history append stored it ahead (`Bracket::count_ahead`).
    seqlock::stamp_bracket(h, &b, write_time, frame_id);
    // Defence in depth: the driver's barrier before its doorbell is what orders the stamps
    // before the device's even store (so for the reader); this fence does not reach MMIO.
    std::sync::atomic::fence(Ordering::Release);
    let st = a.stream.cu_stream();
    let even = b.even() as u64;
    let enqueued = path(s, a).words.is_some_and(|w| {
        // SAFETY: `w.seq` and `w.published` are the device addresses of registered, 8-aligned
        // words (the header's sequence, the `_gpu` segment's published frame), registered
        // until the attachment drops once its stream is idle, or never (a drop that timed out
        // waiting for the stream leaks the registrations): they outlive every store it makes.
        unsafe { publish::enqueue_write_u64(st, w.seq, even) }.is_ok()
            && unsafe { publish::enqueue_write_u64(st, w.published, even / 2) }.is_ok()
    });
    if !enqueued {
        settle(s, a);
        seqlock::end_write_even(h, b);
        published_on_host(a, even);
        return;
    }
    if s.notify() {
        // SAFETY: our live stream (context bound by the fill); the word is only a futex key.
        let woken = unsafe { publish::enqueue_wake(st, h.futex_word().as_ptr()) };
        if woken.is_err() {
            // Parked readers wake at their next capped park (50 ms) instead.
            settle(s, a);
            crate::notify::wake_all(h);
        }
    }
}

/// The host published frame `even / 2` (after its even sequence): GPU consumers wait on it.
pub(crate) fn published_on_host(a: &Attachment, even: u64) {
    a.published_frame().store(even / 2, Ordering::Release);
}

/// Waits for everything this handle's stream has enqueued (a failed GPU-side fill, before
/// the bracket is aborted), up to the handle's timeout (the stream may wait for a GPU
/// consumer's acknowledgement). If the stream is still busy then, the abort goes ahead and
/// releases the lock anyway: copies still enqueued may land after it, on the next writer's
/// frame (a known gap).
pub(crate) fn settle(s: &Stream, a: &Attachment) {
    let _ = a.settle_within(s.default_timeout());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu_side() -> PathChoice {
        PathChoice {
            path: PublishPath::GpuStream,
            reason: "the probe passed".into(),
        }
    }

    fn words() -> std::result::Result<Words, String> {
        Ok(Words {
            seq: 8,
            published: 16,
            ack: 24,
        })
    }

    /// A mirror the driver did not register makes the handle `host-sync` with the reason
    /// (without the check the GPU-side path was chosen on the header and `_gpu` words alone).
    #[test]
    fn an_unregistered_cpu_mirror_makes_the_handle_host_sync() {
        let refused = || Some(Err("CUDA_ERROR_INVALID_VALUE (invalid argument)".to_owned()));
        let p = decide(gpu_side(), false, refused(), words);
        assert_eq!(p.choice.path, PublishPath::HostSync);
        assert_eq!(
            p.choice.reason,
            "registering the CPU mirror failed: CUDA_ERROR_INVALID_VALUE (invalid argument)"
        );
        assert!(p.words.is_none());
        for mirror in [None, Some(Ok(()))] {
            let p = decide(gpu_side(), false, mirror.clone(), words);
            assert_eq!(p.choice.path, PublishPath::GpuStream, "{mirror:?}");
            assert!(p.words.is_some());
        }
        let p = decide(gpu_side(), true, Some(Ok(())), || unreachable!("read-only"));
        assert_eq!(p.choice.reason, "a read-only handle does not publish");
        let p = decide(gpu_side(), false, None, || Err("no header".into()));
        assert_eq!(
            (p.choice.path, p.choice.reason.as_str()),
            (PublishPath::HostSync, "no header")
        );
    }
}
