//! Criterion benches of the library's hot paths, each beside its raw equivalent measured in
//! the same run: write + read_into round trip vs two `memcpy`s, lock/unlock vs a bare flock
//! pair, the seqlock check vs an atomic load, a futex wake with no waiter, and a write to a
//! stream with history beside a plain write (the ring costs one more copy of the frame).
//!
//! `cargo bench --bench hot_paths -- --quick`

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shmstream::{Dtype, StreamOptions};

fn name(tag: &str) -> String {
    format!("bench-{tag}-{}", std::process::id())
}

/// Write + read_into of a whole f32 frame, beside the same two copies on plain memory.
fn roundtrip(c: &mut Criterion) {
    let mut g = c.benchmark_group("roundtrip_f32");
    for n in [100usize, 1000] {
        let elems = n * n;
        g.throughput(Throughput::Bytes(2 * 4 * elems as u64));
        let src = vec![1.5f32; elems];
        let mut dst = vec![0f32; elems];
        let mut mid = vec![0f32; elems];
        g.bench_with_input(BenchmarkId::new("memcpy_floor", n), &n, |b, _| {
            b.iter(|| {
                mid.copy_from_slice(black_box(&src));
                dst.copy_from_slice(black_box(&mid));
            })
        });
        let s = shmstream::scratch(&name(&format!("rt{n}")), &[n, n], Dtype::F32).expect("create");
        g.bench_with_input(BenchmarkId::new("shmstream", n), &n, |b, _| {
            b.iter(|| {
                s.write_slice(black_box(&src)).expect("write");
                s.read_into_slice(black_box(&mut dst)).expect("read")
            })
        });
        // A single producer may hold the write lock across frames: seqlock-only publication,
        // no flock pair per write.
        g.bench_with_input(BenchmarkId::new("shmstream_lock_held", n), &n, |b, _| {
            let guard = s.lock(Some(Duration::from_secs(1))).expect("lock");
            b.iter(|| {
                guard.write_slice(black_box(&src)).expect("write");
                s.read_into_slice(black_box(&mut dst)).expect("read")
            })
        });
        // One copy each: their bytes/s counts the frame once.
        g.throughput(Throughput::Bytes(4 * elems as u64));
        g.bench_with_input(BenchmarkId::new("write_only", n), &n, |b, _| {
            b.iter(|| s.write_slice(black_box(&src)).expect("write"))
        });
        g.bench_with_input(BenchmarkId::new("read_into_only", n), &n, |b, _| {
            b.iter(|| s.read_into_slice(black_box(&mut dst)).expect("read"))
        });
    }
    g.finish();
}

/// Taking and releasing the write lock, beside a bare flock pair on a file.
fn locking(c: &mut Criterion) {
    let mut g = c.benchmark_group("lock");
    let dir = std::env::temp_dir().join(format!("shmstream-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = std::fs::File::create(dir.join("raw.lock")).expect("file");
    g.bench_function("flock_pair_floor", |b| {
        use std::os::fd::AsRawFd;
        b.iter(|| {
            // SAFETY: the fd is open for the lifetime of `file`.
            unsafe {
                libc::flock(file.as_raw_fd(), libc::LOCK_EX);
                libc::flock(file.as_raw_fd(), libc::LOCK_UN);
            }
        })
    });
    let s = shmstream::scratch(&name("lock"), &[16], Dtype::U8).expect("create");
    g.bench_function("lock_unlock", |b| {
        b.iter(|| drop(s.lock(Some(Duration::from_secs(1))).expect("lock")))
    });
    g.finish();
    let _ = std::fs::remove_dir_all(dir);
}

/// The reader's consistency check (count + sequence loads) and a notify write's wake.
fn signalling(c: &mut Criterion) {
    let mut g = c.benchmark_group("signal");
    let plain = shmstream::scratch(&name("seq"), &[1], Dtype::U64).expect("create");
    plain.write_slice(&[1u64]).expect("write");
    g.bench_function("wait_for_count_ready", |b| {
        b.iter(|| {
            plain
                .wait_for_count(black_box(0), Some(Duration::from_secs(1)))
                .expect("count")
        })
    });
    let atomic = std::sync::atomic::AtomicU64::new(1);
    g.bench_function("atomic_load_floor", |b| {
        b.iter(|| black_box(&atomic).load(std::sync::atomic::Ordering::Acquire))
    });
    let notify = StreamOptions::new(&name("notify"))
        .shape(&[1])
        .dtype(Dtype::U64)
        .notify(true)
        .auto_unlink(true)
        .create()
        .expect("create");
    g.bench_function("write_8B_plain", |b| {
        b.iter(|| plain.write_slice(black_box(&[2u64])).expect("write"))
    });
    g.bench_function("write_8B_notify_wake", |b| {
        b.iter(|| notify.write_slice(black_box(&[2u64])).expect("write"))
    });
    g.finish();
}

/// A write to a stream with `history(256)` beside a plain write, and a read of its latest
/// frame (unchanged by the ring), at 100×100 f32.
fn history(c: &mut Criterion) {
    let mut g = c.benchmark_group("history_f32");
    let n = 100usize;
    let src = vec![1.5f32; n * n];
    let mut dst = vec![0f32; n * n];
    let plain = shmstream::scratch(&name("hist-plain"), &[n, n], Dtype::F32).expect("create");
    let ring_name = name("hist-ring");
    let ring = StreamOptions::new(&ring_name)
        .shape(&[n, n])
        .history(256)
        .auto_unlink(true)
        .create()
        .expect("create");
    g.bench_function("write_plain", |b| {
        b.iter(|| plain.write_slice(black_box(&src)).expect("write"))
    });
    g.bench_function("write_history", |b| {
        b.iter(|| ring.write_slice(black_box(&src)).expect("write"))
    });
    g.bench_function("read_latest_plain", |b| {
        b.iter(|| plain.read_into_slice(black_box(&mut dst)).expect("read"))
    });
    g.bench_function("read_latest_history", |b| {
        b.iter(|| ring.read_into_slice(black_box(&mut dst)).expect("read"))
    });
    let mut cursor = ring.cursor().expect("cursor");
    g.bench_function("write_history_then_cursor_next", |b| {
        b.iter(|| {
            ring.write_slice(black_box(&src)).expect("write");
            cursor
                .next_into_slice(black_box(&mut dst), Some(Duration::from_secs(1)))
                .expect("next")
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(30);
    targets = roundtrip, locking, signalling, history
}
criterion_main!(benches);
