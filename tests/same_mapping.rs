//! Readers and a writer on threads of one process sharing ONE handle, so that they touch the
//! same mapping (the same addresses): the other concurrency tests put writer and readers in
//! other processes, or on other handles (other mappings of the same file), where a race
//! detector sees no shared memory. Under ThreadSanitizer (scripts/tsan.sh) these are the
//! tests that exercise the seqlock's racy copies and their validation; run normally they
//! check, as tests/torture.rs does across processes, that no torn frame is ever returned.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Cleanup, unique_name};
use shmstream::{Dtype, Error, Stream, StreamOptions};

const LEN: usize = 4096;
const FRAMES: u64 = 300;

fn uniform(buf: &[u32]) -> bool {
    buf.iter().all(|&x| x == buf[0])
}

/// Snapshot reads (spinning) and waiting reads on the writer's own handle.
#[test]
fn snapshots_on_the_writers_handle_are_never_torn() {
    let name = unique_name("same-map");
    let _c = Cleanup::new([&name]);
    let s = StreamOptions::new(&name)
        .shape(&[LEN])
        .dtype(Dtype::U32)
        .notify(true)
        .create()
        .unwrap();
    let done = AtomicBool::new(false);
    std::thread::scope(|sc| {
        let spinner = sc.spawn(|| {
            let mut buf = vec![0u32; LEN];
            let mut seen = 0u64;
            // At least one frame, even where this thread starts after the last write.
            while !done.load(Ordering::Relaxed) || seen == 0 {
                let info = s.read_publication_into(&mut buf).unwrap();
                if info.count == 0 {
                    continue;
                }
                assert!(uniform(&buf), "torn snapshot at count {}", info.count);
                assert_eq!(
                    u64::from(buf[0]),
                    info.frame_id,
                    "payload and frame id differ"
                );
                assert_eq!(info.count, info.frame_id + 1, "count and frame id differ");
                seen += 1;
            }
            seen
        });
        let waiter = sc.spawn(|| {
            // Level-triggered on an explicit count: the spinner's reads move the handle's
            // own "last read" count, which `read_new` would wait past.
            let (mut last, mut after) = (None, 0u64);
            loop {
                match s.read_after_publication::<u32>(after, Some(Duration::from_secs(60))) {
                    Ok(p) => {
                        let a = p.payload.as_slice().unwrap();
                        assert!(uniform(a), "torn frame at count {}", p.info.count);
                        assert_eq!(u64::from(a[0]), p.info.frame_id);
                        assert!(last < Some(p.info.frame_id), "went backwards");
                        last = Some(p.info.frame_id);
                        after = p.info.count;
                        if p.info.frame_id == FRAMES - 1 {
                            return;
                        }
                    }
                    Err(e) => panic!("read_after_publication: {e}"),
                }
            }
        });
        for i in 0..FRAMES {
            s.write_slice_frame(&vec![i as u32; LEN], i).unwrap();
        }
        waiter.join().unwrap();
        done.store(true, Ordering::Relaxed);
        let seen = spinner.join().unwrap();
        assert!(seen > 0);
    });
}

/// A cursor on the writer's own handle while it appends, lapping the ring.
fn cursor_on_the_writers_handle(tag: &str, len: usize, depth: usize) {
    let name = unique_name(tag);
    let _c = Cleanup::new([&name]);
    let s = StreamOptions::new(&name)
        .shape(&[len])
        .dtype(Dtype::U32)
        .notify(true)
        .history(depth)
        .create()
        .unwrap();
    // Made before the first append, so that it returns frame 0 first.
    let mut c = s.cursor().unwrap();
    std::thread::scope(|sc| {
        let reader = sc.spawn(move || {
            let mut buf = vec![0u32; len];
            let (mut expected, mut returned) = (0u64, 0u64);
            while expected < FRAMES {
                match c.next_into_slice(&mut buf, Some(Duration::from_secs(60))) {
                    Ok(info) => {
                        assert_eq!(info.frame_id, expected, "out of order");
                        assert!(uniform(&buf), "torn ring frame {expected}");
                        assert_eq!(u64::from(buf[0]), expected);
                        expected += 1;
                        returned += 1;
                    }
                    Err(Error::Overrun { lost, .. }) => expected += lost,
                    Err(e) => panic!("cursor: {e}"),
                }
            }
            returned
        });
        for i in 0..FRAMES {
            s.write_slice_frame(&vec![i as u32; len], i).unwrap();
        }
        assert!(reader.join().unwrap() > 0);
    });
}

/// A small ring: the frame is filled into its slot first, then copied to the payload.
#[test]
fn a_cursor_on_the_writers_handle_returns_whole_frames_or_an_overrun() {
    cursor_on_the_writers_handle("same-map-hist", LEN, 4);
}

/// A ring of 8 MiB of 64 KiB frames: appended with streaming stores from the payload.
#[test]
fn a_cursor_on_a_streaming_ring_returns_whole_frames_or_an_overrun() {
    cursor_on_the_writers_handle("same-map-hist-nt", 16 << 10, 128);
}

/// A writer filling the payload in place (`write_view`, bool frames: the reader's copy
/// normalizes bytes) while a reader on the same handle snapshots it.
#[test]
fn in_place_fills_on_the_readers_handle_are_never_returned_torn() {
    let name = unique_name("same-map-view");
    let _c = Cleanup::new([&name]);
    let s = Stream::create(&name, &[LEN], Dtype::Bool).unwrap();
    let done = AtomicBool::new(false);
    std::thread::scope(|sc| {
        let reader = sc.spawn(|| {
            let mut buf = vec![false; LEN];
            let mut seen = 0u64;
            while !done.load(Ordering::Relaxed) {
                let info = s.read_publication_into(&mut buf).unwrap();
                if info.count == 0 {
                    continue;
                }
                assert!(buf.iter().all(|&b| b == buf[0]), "torn at {}", info.count);
                assert_eq!(
                    buf[0],
                    info.frame_id % 2 == 1,
                    "payload and frame id differ"
                );
                seen += 1;
            }
            seen
        });
        for i in 0..FRAMES {
            s.write_view_frame(i, |v: &mut [bool]| {
                v.fill(i % 2 == 1);
                Ok::<_, std::convert::Infallible>(())
            })
            .unwrap();
        }
        done.store(true, Ordering::Relaxed);
        reader.join().unwrap();
    });
}

/// A cursor consuming frames in place (`next_in_place`: a word-by-word map and a write to
/// a file straight from the ring) on the writer's own handle.
#[test]
fn frames_consumed_in_place_on_the_writers_handle_are_whole_or_refused() {
    use std::os::unix::fs::FileExt;
    let name = unique_name("same-map-inplace");
    let _c = Cleanup::new([&name]);
    let s = StreamOptions::new(&name)
        .shape(&[LEN])
        .dtype(Dtype::U32)
        .history(4)
        .create()
        .unwrap();
    let path = std::env::temp_dir().join(format!("{name}.bin"));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let mut c = s.cursor().unwrap();
    std::thread::scope(|sc| {
        let reader = sc.spawn(|| {
            let mut words = vec![0u32; LEN];
            let mut back = vec![0u8; LEN * 4];
            let mut expected = 0u64;
            while expected < FRAMES {
                let r = c.next_in_place(Some(Duration::from_secs(60)), |f| {
                    f.map_into(&mut words, u32::swap_bytes).unwrap();
                    f.write_at(&file, 0).unwrap();
                });
                match r {
                    Ok((info, ())) => {
                        assert_eq!(info.frame_id, expected, "out of order");
                        let want = (expected as u32).swap_bytes();
                        assert!(words.iter().all(|&w| w == want), "torn map {expected}");
                        file.read_exact_at(&mut back, 0).unwrap();
                        assert!(
                            back.chunks(4).all(|b| b == (expected as u32).to_ne_bytes()),
                            "torn file frame {expected}"
                        );
                        expected += 1;
                    }
                    Err(Error::Overrun { lost, .. }) => expected += lost,
                    Err(e) => panic!("cursor: {e}"),
                }
            }
        });
        for i in 0..FRAMES {
            s.write_slice_frame(&vec![i as u32; LEN], i).unwrap();
        }
        reader.join().unwrap();
    });
    std::fs::remove_file(&path).unwrap();
}

/// Async waits (their background wait and the read after it) on the writer's own handle.
#[cfg(feature = "tokio")]
#[test]
fn async_reads_on_the_writers_handle_are_never_torn() {
    let name = unique_name("same-map-async");
    let _c = Cleanup::new([&name]);
    let s = std::sync::Arc::new(
        StreamOptions::new(&name)
            .shape(&[LEN])
            .dtype(Dtype::U32)
            .notify(true)
            .create()
            .unwrap(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let r = std::sync::Arc::clone(&s);
    let reader = rt.spawn(async move {
        let mut after = 0u64;
        loop {
            let p = r
                .read_after_publication_async::<u32>(after, Some(Duration::from_secs(60)))
                .await
                .unwrap();
            let a = p.payload.as_slice().unwrap();
            assert!(uniform(a), "torn frame at count {}", p.info.count);
            assert_eq!(u64::from(a[0]), p.info.frame_id);
            after = p.info.count;
            if p.info.frame_id == FRAMES - 1 {
                return;
            }
        }
    });
    for i in 0..FRAMES {
        s.write_slice_frame(&vec![i as u32; LEN], i).unwrap();
    }
    rt.block_on(reader).unwrap();
}
