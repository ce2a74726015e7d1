//! Async waits (feature `tokio`): the writer is another process (a re-executed child of
//! this test binary), and a ticker task proves the runtime keeps running other tasks while a read
//! waits. The runtime is multi-threaded with ONE worker: a wait that blocked the worker would
//! stop the ticker and fail the test.
#![cfg(feature = "tokio")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Cleanup, unique_name};
use shmstream::{Dtype, Error, Stream, StreamOptions};
use tokio::sync::mpsc;

/// The child process entry: `write` opens the stream named `name` and writes `values`
/// (comma-separated, parsed as the stream's dtype: float32 or int32).
#[test]
fn child_entry() {
    let Some(role) = common::child_role() else {
        return;
    };
    assert_eq!(role, "write", "unknown role {role}");
    let name: String = common::param("name");
    let values: String = common::param("values");
    let s = Stream::open(&name).unwrap();
    match s.dtype() {
        Dtype::F32 => s.write_slice(&parse::<f32>(&values)).unwrap(),
        Dtype::I32 => s.write_slice(&parse::<i32>(&values)).unwrap(),
        other => panic!("child writer: unsupported dtype {other}"),
    };
}

fn parse<T: std::str::FromStr>(values: &str) -> Vec<T> {
    values.split(',').map(|v| v.parse().ok().unwrap()).collect()
}

/// Writes `values` to `name` from another process (a re-executed child) and waits for it.
async fn write_in_another_process(name: &str, values: &str) {
    let mut child = common::child("child_entry", "write")
        .param("name", name)
        .param("values", values)
        .spawn();
    tokio::task::spawn_blocking(move || child.wait_success(common::LONG))
        .await
        .unwrap();
}

/// A task that ticks every millisecond and reports each tick on a channel.
fn ticker() -> mpsc::UnboundedReceiver<u64> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut iv = tokio::time::interval(Duration::from_millis(1));
        for n in 0u64.. {
            iv.tick().await;
            if tx.send(n).is_err() {
                break;
            }
        }
    });
    rx
}

async fn ticks(rx: &mut mpsc::UnboundedReceiver<u64>, n: usize) {
    for _ in 0..n {
        tokio::time::timeout(common::LONG, rx.recv())
            .await
            .expect("ticker stalled: the executor is blocked")
            .unwrap();
    }
}

/// Waits (up to [`common::LONG`], yielding to the runtime's other tasks) until `done()`;
/// panics with `what` past that.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(t0.elapsed() < common::LONG, "{what}");
        tokio::task::yield_now().await;
    }
}

/// The value a thread of this process parked in `futex` on stream `name`'s header waits
/// for the word to leave, if one is parked there: a park with another value than one seen
/// before a write began after the waiter saw that write.
fn parked_value_on(name: &str) -> Option<u64> {
    let pid = std::process::id();
    threads().find_map(|tid| {
        common::futex_args_on_stream(pid, tid, name)?
            .get(2)
            .copied()
    })
}

/// A read waiting for a write from another process gets it, while the single worker keeps
/// running other tasks. That the write's wake (not the read's 50 ms park cap, a constant an
/// integration test cannot raise) ends the park is shown by the unit test
/// `asynchronous::tests::a_parked_async_read_is_woken_by_the_writers_wake_not_its_cap`.
async fn read_new_from_another_process(notify: bool) {
    let name = unique_name(if notify { "async-notify" } else { "async-poll" });
    let _c = Cleanup::new([&name]);
    let s = Arc::new(
        StreamOptions::new(&name)
            .shape(&[4])
            .dtype(Dtype::F32)
            .notify(notify)
            .create()
            .unwrap(),
    );
    let mut tick = ticker();

    let reader = tokio::spawn({
        let s = s.clone();
        async move {
            s.read_new_publication_async::<f32>(Some(common::LONG))
                .await
        }
    });
    // The read waits on the blocking pool: its background wait holds a clone of the stream
    // (the handle, the task's clone, the wait's, the background wait's) and, on a notify
    // stream, is parked on its futex.
    until("the read never waited", || {
        Arc::strong_count(&s) == 4 && (!notify || thread_parked_on(&name).is_some())
    })
    .await;
    // While the read waits, the single worker keeps running the ticker.
    ticks(&mut tick, 5).await;
    assert!(!reader.is_finished(), "nothing was written yet");
    write_in_another_process(&name, "1,2,3,4").await;
    let p = tokio::time::timeout(common::LONG, reader)
        .await
        .expect("read_new_async did not wake")
        .unwrap()
        .unwrap();
    assert_eq!(p.payload.as_slice().unwrap(), &[1.0, 2.0, 3.0, 4.0]);
    assert_eq!(p.info.count, 1);
    assert_eq!(s.last_read_count(), 1);
    ticks(&mut tick, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn read_new_async_gets_a_write_from_another_process_notify() {
    read_new_from_another_process(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn read_new_async_gets_a_write_from_another_process_polling() {
    read_new_from_another_process(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn wait_for_count_and_read_after_into_slice_async() {
    let name = unique_name("async-count");
    let _c = Cleanup::new([&name]);
    let s = Arc::new(
        StreamOptions::new(&name)
            .shape(&[3])
            .dtype(Dtype::F32)
            .notify(true)
            .create()
            .unwrap(),
    );
    let mut tick = ticker();

    let waiter = tokio::spawn({
        let s = s.clone();
        async move { s.wait_for_count_async(1, Some(common::LONG)).await }
    });
    let mut parked_at = None;
    until("the wait never parked", || {
        parked_at = parked_value_on(&name);
        parked_at.is_some()
    })
    .await;
    ticks(&mut tick, 5).await;
    write_in_another_process(&name, "1,1,1").await;
    // Parked anew, on the word the write moved: it saw count 1 and waits on.
    until("the wait never parked again after count 1", || {
        assert!(!waiter.is_finished(), "count 1 is not past 1");
        parked_value_on(&name).is_some_and(|v| Some(v) != parked_at)
    })
    .await;
    assert!(!waiter.is_finished(), "count 1 is not past 1");
    write_in_another_process(&name, "2,2,2").await;
    assert_eq!(
        tokio::time::timeout(common::LONG, waiter)
            .await
            .unwrap()
            .unwrap()
            .unwrap(),
        2
    );

    // Level-triggered and inline: the frame is there, so no wait.
    assert_eq!(
        s.wait_for_count_async(0, Some(Duration::ZERO))
            .await
            .unwrap(),
        2
    );
    let mut buf = [0.0f32; 3];
    assert_eq!(
        s.read_after_into_slice_async(1, &mut buf, Some(Duration::ZERO))
            .await
            .unwrap(),
        2
    );
    assert_eq!(buf, [2.0; 3]);

    // A caller-owned buffer filled after a real wait.
    let mut buf = vec![0.0f32; 3];
    let (got, ()) = tokio::join!(
        s.read_after_into_slice_async(2, &mut buf, Some(common::LONG)),
        async {
            until("the read never parked", || {
                thread_parked_on(&name).is_some()
            })
            .await;
            ticks(&mut tick, 5).await;
            write_in_another_process(&name, "3,3,3").await;
        }
    );
    assert_eq!(got.unwrap(), 3);
    assert_eq!(buf, vec![3.0; 3]);

    // Wrong element type / length: refused before any wait.
    assert!(matches!(
        s.read_after_async::<f64>(0, None).await,
        Err(Error::DtypeMismatch { .. })
    ));
    let mut short = [0.0f32; 2];
    assert!(matches!(
        s.read_after_into_slice_async(0, &mut short, None).await,
        Err(Error::SliceLength { .. })
    ));
}

/// A multi-thread runtime with ONE worker that a failing test does not hang in: dropped
/// while the test panics, it shuts down without waiting for a wait still parked on its
/// blocking pool (a plain drop waits for that one forever).
struct OneWorker(Option<tokio::runtime::Runtime>);

impl OneWorker {
    fn new() -> OneWorker {
        OneWorker::with_blocking_threads(512)
    }

    /// One worker, and at most `n` blocking-pool threads.
    fn with_blocking_threads(n: usize) -> OneWorker {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(n)
            .enable_all()
            .build()
            .unwrap();
        OneWorker(Some(rt))
    }
}

impl std::ops::Deref for OneWorker {
    type Target = tokio::runtime::Runtime;
    fn deref(&self) -> &Self::Target {
        self.0.as_ref().unwrap()
    }
}

impl Drop for OneWorker {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(rt) = self.0.take()
        {
            rt.shutdown_background();
        }
    }
}

#[test]
fn timeouts_expire_while_other_tasks_run_and_dropped_waits_are_harmless() {
    // Not `#[tokio::test]`: that runtime's drop, when this test fails, would wait forever
    // for a wait without a timeout still parked on its blocking pool.
    OneWorker::new().block_on(timeouts_and_dropped_waits());
}

async fn timeouts_and_dropped_waits() {
    let name = unique_name("async-timeout");
    let _c = Cleanup::new([&name]);
    let s = Arc::new(
        StreamOptions::new(&name)
            .shape(&[2])
            .dtype(Dtype::U8)
            .notify(true)
            .create()
            .unwrap(),
    );
    // The read runs as a task on the one worker, beside a task made ready before the read is
    // first polled: that one runs as soon as the read yields the worker, so before the read
    // ends unless the read blocks the worker (awaited here, on the `block_on` thread, it would
    // not). Order, not a time window: a stall of the whole process cannot fail it.
    let (err, t0, end, other_ran) = tokio::spawn({
        let s = s.clone();
        async move {
            let ran = Arc::new(AtomicBool::new(false));
            tokio::spawn({
                let ran = ran.clone();
                async move { ran.store(true, Ordering::SeqCst) }
            });
            let t0 = Instant::now();
            let err = s
                .read_new_async::<u8>(Some(Duration::from_millis(300)))
                .await
                .unwrap_err();
            (err, t0, Instant::now(), ran.load(Ordering::SeqCst))
        }
    })
    .await
    .unwrap();
    let took = end - t0;
    assert!(
        matches!(&err, Error::Timeout { name: n, timeout, .. } if n == &name && *timeout == Duration::from_millis(300)),
        "{err}"
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert!(
        other_ran,
        "no other task ran during the 300 ms wait: it blocked the worker"
    );

    // An abandoned wait (select!/timeout around it) does not disturb later ones.
    assert!(
        tokio::time::timeout(Duration::from_millis(50), s.read_new_async::<u8>(None))
            .await
            .is_err()
    );
    s.write_slice(&[7u8, 8]).unwrap();
    assert_eq!(
        s.read_new_async::<u8>(Some(common::LONG))
            .await
            .unwrap()
            .as_slice()
            .unwrap(),
        &[7, 8]
    );
    // Consumed: the next read_new waits again.
    assert!(matches!(
        s.read_new_async::<u8>(Some(Duration::from_millis(20)))
            .await,
        Err(Error::Timeout { .. })
    ));

    // Closing the handle ends a pending wait with Closed.
    let pending = tokio::spawn({
        let s = s.clone();
        async move { s.read_new_async::<u8>(None).await }
    });
    // The pending read holds one clone, its parked wait on the blocking pool another.
    while Arc::strong_count(&s) < 3 {
        tokio::task::yield_now().await;
    }
    s.close();
    let r = tokio::time::timeout(common::LONG, pending)
        .await
        .expect("close did not end the wait")
        .unwrap();
    assert!(matches!(r, Err(Error::Closed { .. })), "{r:?}");
}

#[test]
fn works_on_a_current_thread_runtime_too() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let name = unique_name("async-current");
        let _c = Cleanup::new([&name]);
        let s = Arc::new(Stream::create(&name, &[1], Dtype::I32).unwrap());
        let mut tick = ticker();
        let (r, ()) = tokio::join!(s.read_new_async::<i32>(Some(common::LONG)), async {
            // Its background wait holds a clone of the stream (the handle, the wait's, the
            // background wait's).
            until("the read never waited", || Arc::strong_count(&s) == 3).await;
            ticks(&mut tick, 5).await;
            write_in_another_process(&name, "42").await;
        });
        assert_eq!(r.unwrap()[[0]], 42);
    });
}

/// A wait abandoned (its future dropped) after its background wait saw the writer fail
/// mid-write does not swallow the report of it: the handle reports each invalid generation
/// once, and the next wait on the handle makes that report instead of waiting in silence.
/// The future is polled once by hand and dropped only once its background wait has ended in
/// the report, so the report always sits in the hand-off, to be given back.
#[test]
fn an_abandoned_wait_leaves_a_failed_writes_report_to_the_next_wait() {
    with_an_abandoned_report("async-report", |_, r, abandoned| {
        drop(abandoned);
        let next = r.read_new::<u8>(Some(Duration::from_millis(300)));
        assert!(matches!(next, Err(Error::Inconsistent { .. })), "{next:?}");
    });
}

/// An abandoned wait gives back only the report it made: a report of another failed write
/// that a blocking read on the handle made meanwhile stays, so the handle's next read does
/// not report that write a second time (the give-back swapped whatever mark the handle held
/// back to the one before the abandoned wait).
#[test]
fn an_abandoned_waits_give_back_leaves_a_report_made_meanwhile() {
    with_an_abandoned_report("async-report-meanwhile", |w, r, abandoned| {
        // Another failed write, reported by a blocking read on the handle.
        failed_write(w);
        let reported = r.read_new::<u8>(Some(Duration::ZERO));
        assert!(
            matches!(reported, Err(Error::Inconsistent { .. })),
            "{reported:?}"
        );
        // Gives back the first report only: the second stays made.
        drop(abandoned);
        let next = r.read_new::<u8>(Some(Duration::ZERO));
        assert!(
            matches!(next, Err(Error::Timeout { .. })),
            "the second failed write reported twice: {next:?}"
        );
    });
}

/// A wait abandoned with a report in its hand-off: runs `then` with a notify stream's
/// writer, a reader handle and an async wait on that handle (polled once by hand, inside a
/// runtime) whose background wait has ended in the report of a failed write of the writer;
/// `then` drops the wait when it chooses.
fn with_an_abandoned_report(
    label: &str,
    then: impl FnOnce(
        &Stream,
        &Arc<Stream>,
        std::pin::Pin<
            Box<dyn Future<Output = shmstream::Result<shmstream::ndarray::ArrayD<u8>>> + '_>,
        >,
    ),
) {
    use std::task::{Context, Waker};
    let name = unique_name(label);
    let _c = Cleanup::new([&name]);
    let w = notify_stream_with_one_frame(&name);
    let r = Arc::new(Stream::open_readonly(&name).unwrap());
    let rt = OneWorker::new();
    let _in_runtime = rt.enter();
    let mut abandoned = Box::pin(r.read_new_async::<u8>(None));
    let polled = abandoned
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()));
    assert!(polled.is_pending(), "{polled:?}");
    // The handle, the future's clone, and the background wait's on the pool.
    let until = |clones: usize, what: &str| {
        common::eventually(
            common::LONG,
            || what.to_owned(),
            || {
                (Arc::strong_count(&r) == clones)
                    .then_some(())
                    .or_else(common::yield_now)
            },
        );
    };
    until(3, "the background wait never started");
    // The background wait wakes on this failed write and ends in its report.
    failed_write(&w);
    until(2, "the background wait never ended");
    then(&w, &r, abandoned);
}

/// A write of `w` whose fill fails (aborted: an invalid generation).
fn failed_write(w: &Stream) {
    let aborted = w.write_view(|_: &mut [u8]| Err::<(), _>(std::io::Error::other("fill failed")));
    assert!(
        matches!(aborted, Err(Error::WriteAborted { .. })),
        "{aborted:?}"
    );
}

/// A wait that reaches its deadline reports what its blocking twin reports instead of a
/// timeout, zero timeout included: an aborted write (`Inconsistent`), an unlinked stream
/// (`Stale`). A loop polling with a zero timeout would otherwise never learn of either.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_wait_at_its_deadline_reports_what_its_blocking_twin_does() {
    let name = unique_name("async-deadline");
    let _c = Cleanup::new([&name]);
    let w = notify_stream_with_one_frame(&name);
    let r = Arc::new(Stream::open_readonly(&name).unwrap());
    let twin = Stream::open_readonly(&name).unwrap();
    let _ = w.write_view(|_: &mut [u8]| Err::<(), _>(std::io::Error::other("aborted")));
    let blocking = twin.read_new::<u8>(Some(Duration::ZERO)).unwrap_err();
    assert!(
        matches!(blocking, Error::Inconsistent { .. }),
        "{blocking:?}"
    );
    for timeout in [Duration::ZERO, Duration::from_millis(20)] {
        let r = Arc::new(Stream::open_readonly(&name).unwrap());
        let e = r.read_new_async::<u8>(Some(timeout)).await.unwrap_err();
        assert!(
            matches!(e, Error::Inconsistent { .. }),
            "{timeout:?}: {e:?}"
        );
    }
    shmstream::unlink(&name).unwrap();
    for timeout in [Duration::ZERO, Duration::from_millis(20)] {
        let e = r.wait_for_count_async(1, Some(timeout)).await.unwrap_err();
        assert!(matches!(e, Error::Stale { .. }), "{timeout:?}: {e:?}");
    }
}

/// A notify stream of 4 bytes named `name`, with one frame (all 1) written.
fn notify_stream_with_one_frame(name: &str) -> Stream {
    let w = StreamOptions::new(name)
        .shape(&[4])
        .dtype(Dtype::U8)
        .notify(true)
        .create()
        .unwrap();
    w.write_slice(&[1u8; 4]).unwrap();
    w
}

/// An async wait on a single-threaded runtime whose other task holds the stream's write
/// lock gets the frame that task writes: the wait parks on the blocking pool, not on the
/// holder's thread (a refusal of waits under the thread's own lock must not reach it).
#[test]
fn an_async_wait_beside_a_task_holding_the_lock_on_one_thread_gets_its_frame() {
    let name = unique_name("async-own-lock");
    let _c = Cleanup::new([&name]);
    let s = Arc::new(notify_stream_with_one_frame(&name));
    let r = Arc::new(Stream::open_readonly(&name).unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let got = rt.block_on(async {
        let g = s.lock(Some(Duration::from_secs(5))).unwrap();
        let wait = tokio::spawn({
            let r = Arc::clone(&r);
            async move { r.read_new_async::<u8>(Some(Duration::from_secs(20))).await }
        });
        // The waiting task runs until it parks (one thread: it runs while this one yields).
        tokio::task::yield_now().await;
        g.write_slice(&[7u8; 4]).unwrap();
        drop(g);
        wait.await.unwrap()
    });
    assert_eq!(got.unwrap().as_slice().unwrap(), &[7; 4]);
}

/// A timed wait returns at its timeout even while no blocking-pool thread is free to run its
/// background wait: the pool's only thread is taken by another stream's endless wait.
#[test]
fn a_timed_wait_times_out_while_the_blocking_pool_is_full() {
    use std::future::Future;
    use std::task::Poll;
    let (a_name, b_name) = (unique_name("async-pool-a"), unique_name("async-pool-b"));
    let _c = Cleanup::new([&a_name, &b_name]);
    let idle = |name: &str| Arc::new(Stream::create(name, &[2], Dtype::U8).unwrap());
    let (a, b) = (idle(&a_name), idle(&b_name));
    OneWorker::with_blocking_threads(1).block_on(async {
        // Polled once: its background wait takes the pool's only thread, for good.
        let mut endless = Box::pin(a.read_new_async::<u8>(None));
        std::future::poll_fn(|cx| {
            assert!(endless.as_mut().poll(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        let t0 = Instant::now();
        let timeout = Duration::from_millis(200);
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            b.read_new_async::<u8>(Some(timeout)),
        )
        .await
        .expect("the wait did not return at its timeout: it waited for a pool thread");
        assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
        assert!(t0.elapsed() >= timeout, "{:?}", t0.elapsed());
        // The timed-out wait's background wait, still queued for the pool, holds no clone
        // of the stream: an `auto_unlink` stream goes with its last handle, and retries
        // queued behind a busy pool do not pile up clones.
        assert_eq!(Arc::strong_count(&b), 1, "a queued wait kept the stream");
        a.close();
        drop(endless);
    });
}

/// The thread of this process parked in `futex` on the header of stream `name` (in its
/// `_meta` mapping), if one is (seen through `/proc`).
fn thread_parked_on(name: &str) -> Option<u32> {
    let pid = std::process::id();
    threads().find(|&tid| common::futex_parked_on_stream(pid, tid, name))
}

/// The ids of this process's threads (`/proc/self/task`).
fn threads() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
}

/// Dropping a pending wait releases its background wait's clone of the stream, so an
/// `auto_unlink` stream is gone once its last user-visible handle is. The drop comes once
/// the background wait is parked in `futex` on the stream's header (seen through `/proc`).
/// That the drop's wake, not the wait's 50 ms park cap, ends the park (a constant this test
/// cannot raise) is shown by the unit test
/// `asynchronous::tests::a_dropped_parked_wait_lets_go_of_the_stream_on_the_drops_wake_not_its_cap`.
#[test]
fn an_abandoned_wait_lets_go_of_an_auto_unlink_stream() {
    use std::future::Future;
    use std::task::{Context, Waker};
    let rt = OneWorker::new();
    let _in_runtime = rt.enter();
    let name = unique_name("async-release");
    let _c = Cleanup::new([&name]);
    let s = Arc::new(
        StreamOptions::new(&name)
            .shape(&[2])
            .dtype(Dtype::U8)
            .notify(true)
            .auto_unlink(true)
            .create()
            .unwrap(),
    );
    let meta_path = format!("/dev/shm/{}", shmstream::name::meta_id(&name));
    let mut abandoned = Box::pin(s.read_new_async::<u8>(None));
    let polled = abandoned
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()));
    assert!(polled.is_pending(), "{polled:?}");
    // The background wait, parked on the stream's futex on a pool thread.
    let t0 = Instant::now();
    while thread_parked_on(&name).is_none() {
        assert!(
            t0.elapsed() < common::LONG,
            "the background wait never parked"
        );
        std::thread::yield_now();
    }
    // The handle, the future's clone, and the background wait's.
    assert_eq!(Arc::strong_count(&s), 3);
    drop(abandoned);
    drop(s);
    let t0 = Instant::now();
    while shmstream::stat(&name).is_ok() || std::path::Path::new(&meta_path).exists() {
        assert!(t0.elapsed() < common::LONG, "the stream was never unlinked");
        std::thread::yield_now();
    }
    assert!(matches!(
        shmstream::stat(&name),
        Err(Error::NotFound { .. })
    ));
    drop(Stream::create(&name, &[2], Dtype::U8).unwrap());
}

/// An async read of a GPU stream without a CPU mirror is refused before any wait, as its
/// blocking twin is: the first poll returns `Unsupported`. (A planted `_meta`: the stream
/// relabelled a mirrorless GPU stream, no GPU needed.)
#[test]
fn an_async_read_without_a_host_payload_is_refused_before_waiting() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let name = unique_name("async-no-mirror");
    let _c = Cleanup::new([&name]);
    drop(Stream::create(&name, &[4], Dtype::F32).unwrap());
    common::relabel_as_gpu(&name, false);
    let s = Arc::new(Stream::open_readonly(&name).unwrap());
    assert!(s.gpu_enabled() && !s.cpu_mirror());
    let rt = OneWorker::new();
    let _in_runtime = rt.enter();
    fn first_poll<R: std::fmt::Debug>(f: impl Future<Output = shmstream::Result<R>>) {
        let got = std::pin::pin!(f).poll(&mut Context::from_waker(Waker::noop()));
        assert!(
            matches!(got, Poll::Ready(Err(Error::Unsupported { .. }))),
            "{got:?}"
        );
    }
    let t = Some(common::LONG);
    let mut buf = [0.0f32; 4];
    first_poll(s.read_after_async::<f32>(0, t));
    first_poll(s.read_after_publication_async::<f32>(0, t));
    first_poll(s.read_after_into_slice_async(0, &mut buf, t));
    first_poll(s.read_new_async::<f32>(t));
    first_poll(s.read_new_publication_async::<f32>(t));
    first_poll(s.read_new_into_slice_async(&mut buf, t));
}

/// Outside a tokio runtime an async wait is refused on its first poll with `Unsupported`
/// naming the stream and the remedy, whether or not its frame is already there: it neither
/// panics when it would have to wait (its background wait needs a runtime's blocking pool)
/// nor succeeds only while the reader is behind the writer.
#[test]
fn an_async_wait_outside_a_tokio_runtime_is_refused_whether_or_not_a_frame_is_ready() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let name = unique_name("async-no-runtime");
    let _c = Cleanup::new([&name]);
    let w = Stream::create(&name, &[4], Dtype::U8).unwrap();
    let s = Arc::new(Stream::open_readonly(&name).unwrap());
    w.write_slice(&[1u8; 4]).unwrap();
    fn first_poll<R: std::fmt::Debug>(name: &str, f: impl Future<Output = shmstream::Result<R>>) {
        let got = std::pin::pin!(f).poll(&mut Context::from_waker(Waker::noop()));
        let Poll::Ready(Err(Error::Unsupported { name: n, what })) = &got else {
            panic!("{got:?}");
        };
        assert_eq!(n, name);
        assert!(what.contains("tokio runtime"), "{what}");
        assert!(what.contains("blocking"), "{what}");
    }
    let t = Some(common::LONG);
    let mut buf = [0u8; 4];
    // A frame is there (count 1 is past 0, and this handle has returned none yet).
    first_poll(&name, s.wait_for_count_async(0, t));
    first_poll(&name, s.read_after_async::<u8>(0, t));
    first_poll(&name, s.read_new_async::<u8>(t));
    // None is: each would have to wait.
    first_poll(&name, s.wait_for_count_async(1, t));
    first_poll(&name, s.read_after_into_slice_async(1, &mut buf, t));
    assert_eq!(
        s.read_new::<u8>(Some(Duration::ZERO))
            .unwrap()
            .as_slice()
            .unwrap(),
        &[1; 4]
    );
    first_poll(&name, s.read_new_async::<u8>(t));
    first_poll(&name, s.read_new_publication_async::<u8>(None));
    drop(w);
}

/// A wait polled with the handle of a runtime that has shut down is refused with
/// `Unsupported` naming the runtime: the pool cancels its background wait at the spawn, and a
/// cancellation is not a panic to resume (that panicked, on a `JoinError` that holds none).
#[test]
fn an_async_wait_on_a_runtime_that_shut_down_is_refused_not_a_panic() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let name = unique_name("async-shut-down");
    let _c = Cleanup::new([&name]);
    let s = Arc::new(Stream::create(&name, &[2], Dtype::U8).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let handle = rt.handle().clone();
    rt.shutdown_background();
    let _in_runtime = handle.enter();
    let mut wait = Box::pin(s.read_new_async::<u8>(None));
    let mut cx = Context::from_waker(Waker::noop());
    let t0 = std::time::Instant::now();
    let got = loop {
        if let Poll::Ready(r) = wait.as_mut().poll(&mut cx) {
            break r;
        }
        assert!(
            t0.elapsed() < common::LONG,
            "the cancelled wait never ended"
        );
        std::thread::yield_now();
    };
    let Err(Error::Unsupported { name: n, what }) = &got else {
        panic!("{got:?}");
    };
    assert_eq!(n, &name);
    assert!(what.contains("runtime shut down"), "{what}");
}

/// A wait first polled inside a runtime and polled again outside one (the guard of
/// `Runtime::enter` dropped) when it has to wait anew is refused with `Unsupported`, as on a
/// first poll outside one: it panicked in `spawn_blocking`. The next round needs a spawn
/// because another read of the handle took the frame the first background wait saw.
#[test]
fn an_async_wait_polled_again_outside_the_runtime_is_refused_not_a_panic() {
    use std::future::Future;
    use std::sync::mpsc as std_mpsc;
    use std::task::{Context, Poll, Wake, Waker};
    struct Signal(std::sync::Mutex<std_mpsc::Sender<()>>);
    impl Wake for Signal {
        fn wake(self: Arc<Self>) {
            let _ = self.0.lock().unwrap().send(());
        }
    }
    let name = unique_name("async-left-runtime");
    let _c = Cleanup::new([&name]);
    let s = Arc::new(
        StreamOptions::new(&name)
            .shape(&[2])
            .dtype(Dtype::U8)
            .notify(true)
            .create()
            .unwrap(),
    );
    let rt = OneWorker::new();
    let in_runtime = rt.enter();
    let (tx, woken) = std_mpsc::channel();
    let waker = Waker::from(Arc::new(Signal(std::sync::Mutex::new(tx))));
    let mut cx = Context::from_waker(&waker);
    let mut wait = Box::pin(s.read_new_async::<u8>(None));
    assert!(wait.as_mut().poll(&mut cx).is_pending());
    // The handle, the future's clone and the running background wait's.
    let count_is = |n: usize, what: &str| {
        let t0 = std::time::Instant::now();
        while Arc::strong_count(&s) != n {
            assert!(t0.elapsed() < common::LONG, "{what}");
            std::thread::yield_now();
        }
    };
    count_is(3, "the background wait never started");
    s.write_slice(&[1u8, 1]).unwrap();
    assert_eq!(
        s.read_new::<u8>(Some(common::LONG))
            .unwrap()
            .as_slice()
            .unwrap(),
        &[1, 1]
    );
    // The background wait saw the frame and ended (a poll while it was queued, the timer's,
    // may have woken the task before: the end is what the next poll must follow).
    count_is(2, "the background wait never ended");
    woken
        .recv_timeout(common::LONG)
        .expect("the background wait never woke the task");
    drop(in_runtime);
    let got = wait.as_mut().poll(&mut cx);
    let Poll::Ready(Err(Error::Unsupported { name: n, what })) = &got else {
        panic!("{got:?}");
    };
    assert_eq!(n, &name);
    assert!(what.contains("tokio runtime"), "{what}");
}

/// Closing a handle (or unlinking its stream) ends a wait whose background wait is still
/// queued for a pool thread (the pool's only one is held by another stream's endless wait)
/// with `Closed` (or `Stale`), as it ends a running one: an untimed one, and a timed one long
/// before its deadline. The queued wait looked at neither, and waited for a pool thread
/// forever (or until its deadline).
#[test]
fn close_or_unlink_ends_a_wait_queued_for_a_pool_thread() {
    use std::future::Future;
    use std::task::Poll;
    let names = ["a", "b", "c"].map(|t| unique_name(&format!("async-queued-{t}")));
    let _c = Cleanup::new(&names);
    let [a, b, c] = names
        .each_ref()
        .map(|n| Arc::new(Stream::create(n, &[2], Dtype::U8).unwrap()));
    OneWorker::with_blocking_threads(1).block_on(async {
        // Polled once: its background wait takes the pool's only thread, for good.
        let mut endless = Box::pin(a.read_new_async::<u8>(None));
        std::future::poll_fn(|cx| {
            assert!(endless.as_mut().poll(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        let queued_on = |s: &Arc<Stream>, timeout: Option<Duration>| {
            let s = Arc::clone(s);
            tokio::spawn(async move { s.read_new_async::<u8>(timeout).await })
        };
        let (on_b, on_c) = (queued_on(&b, None), queued_on(&c, Some(4 * common::LONG)));
        // Each task's clone and its pending wait's (the queued background wait holds none).
        let t0 = Instant::now();
        while Arc::strong_count(&b) < 3 || Arc::strong_count(&c) < 3 {
            assert!(t0.elapsed() < common::LONG, "the waits never queued");
            tokio::task::yield_now().await;
        }
        b.close();
        shmstream::unlink(&names[2]).unwrap();
        let ended = |task: tokio::task::JoinHandle<shmstream::Result<_>>| async {
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("the queued wait did not end")
                .unwrap()
        };
        let r = ended(on_b).await;
        assert!(
            matches!(&r, Err(Error::Closed { name }) if name == &names[1]),
            "{r:?}"
        );
        let r = ended(on_c).await;
        assert!(
            matches!(&r, Err(Error::Stale { name }) if name == &names[2]),
            "{r:?}"
        );
        a.close();
        drop(endless);
    });
}
