//! A stream with history, its `_hist` ring segment overwritten with the input (header, slot
//! metadata, frames) and perhaps resized, then opened (writable or read-only), read through
//! cursors (zero timeouts), rewound, skipped, written and `stat`ed: never panics, never reads
//! or writes out of bounds; every error is typed and names the stream; the frames a cursor
//! returns between rewinds have rising counts.
#![no_main]

use std::os::unix::fs::FileExt;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use shmstream::{Dtype, Error, LossCause, Stream, StreamOptions};

unsafe extern "C" {
    #[link_name = "atexit"]
    fn libc_atexit(f: extern "C" fn()) -> i32;
}

/// Elements (u32) per frame and frames the ring keeps: a 576-byte ring segment.
const LEN: usize = 4;
const DEPTH: usize = 4;
/// Flags (the input's first byte).
const KEEP_IDENTITY: u8 = 1;
const READ_ONLY: u8 = 2;
const WRITE: u8 = 4;
/// The two bytes after the flags give the ring segment a new length (u16, little-endian)
/// after planting: a ring shorter or longer than its header declares.
const RESIZE: u8 = 8;
/// With `RESIZE`, a longer segment's new bytes are written out (zeros), not left a hole.
const FILL: u8 = 16;

fn name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| format!("fuzz-hist-{}", std::process::id()))
}

/// Errors a cursor may return on a hostile ring: typed, about this stream.
fn check_read_error(e: &Error) {
    assert_eq!(e.stream_name(), name(), "{e:?}");
    match e {
        Error::Overrun { .. } | Error::Timeout { .. } => {}
        Error::InvalidHistory { reason, .. } => assert!(!reason.contains("bug"), "{e:?}"),
        other => panic!("unexpected cursor error: {other:?}"),
    }
}

/// Reads and moves a cursor of `s` every way a consumer does, with zero timeouts: the counts
/// of the frames it returns rise (a corrupt ring's repeat is refused), except across a rewind.
fn exercise(s: &Stream) {
    let zero = Some(Duration::ZERO);
    let mut c = match s.cursor() {
        Ok(c) => c,
        Err(e) => return assert!(matches!(e, Error::NoHistory { .. }), "{e:?}"),
    };
    let mut buf = [0u8; LEN * 4];
    let mut cause = LossCause::Overwritten;
    let mut last_count = None;
    for round in 0..12 {
        let got = match round % 3 {
            0 => c
                .next_in_place(zero, |f| {
                    assert_eq!(f.len(), buf.len());
                    f.copy_into(&mut buf)
                })
                .map(|(info, copied)| copied.map(|()| info.count).unwrap()),
            1 => c.next_publication::<u32>(zero).map(|p| {
                assert_eq!(p.payload.len(), LEN);
                p.info.count
            }),
            _ => c.next_into_bytes(&mut buf, zero).map(|info| info.count),
        };
        match &got {
            Ok(count) => {
                if let Some(last) = last_count {
                    assert!(*count > last, "count {count} returned after {last}");
                }
                last_count = Some(*count);
            }
            Err(e) => {
                check_read_error(e);
                if let Error::Overrun { cause: c, .. } = e {
                    cause = *c;
                }
            }
        }
        match round {
            3 => {
                c.rewind_to_start();
                last_count = None;
            }
            5 => drop(c.skip_after_overrun(cause)),
            7 => {
                c.rewind_to_oldest();
                last_count = None;
            }
            9 => drop(c.skip_to_recent(2)),
            _ => {}
        }
        let _ = c.lag();
    }
}

fuzz_target!(|data: &[u8]| {
    let name = name();
    let (flags, ring) = match data {
        [f, rest @ ..] => (*f, rest),
        [] => (0, data),
    };
    let (resize, ring) = match ring {
        [a, b, rest @ ..] if flags & RESIZE != 0 => {
            (Some(u64::from(u16::from_le_bytes([*a, *b]))), rest)
        }
        _ => (None, ring),
    };
    let _ = shmstream::unlink_quiet(name);
    let creator = StreamOptions::new(name)
        .shape(&[LEN])
        .dtype(Dtype::U32)
        .history(DEPTH)
        .create()
        .unwrap();
    // Leave nothing behind in /dev/shm when the fuzzer stops.
    static CLEANUP: OnceLock<()> = OnceLock::new();
    CLEANUP.get_or_init(|| {
        extern "C" fn remove() {
            let _ = shmstream::unlink_quiet(crate::name());
        }
        // SAFETY: registering a plain extern "C" function with no arguments.
        unsafe { libc_atexit(remove) };
    });
    creator.write_slice(&[1u32; LEN]).unwrap();
    creator.write_slice(&[2u32; LEN]).unwrap();

    // Plant the input over the ring, as far as the segment goes.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/dev/shm/{}", shmstream::name::history_id(name)))
        .unwrap();
    let len = file.metadata().unwrap().len() as usize;
    let mut identity = [0u8; 40];
    file.read_exact_at(&mut identity, 0).unwrap();
    file.write_all_at(&ring[..ring.len().min(len)], 0).unwrap();
    if flags & KEEP_IDENTITY != 0 {
        // Magic and instance id (offsets 0 and 24): the rules past them are reached.
        file.write_all_at(&identity[..8], 0).unwrap();
        file.write_all_at(&identity[24..40], 24).unwrap();
    }
    if let Some(new) = resize {
        file.set_len(new).unwrap();
        if flags & FILL != 0 && new > len as u64 {
            file.write_all_at(&vec![0; new as usize - len], len as u64)
                .unwrap();
        }
    }
    // Truncated under the creator's mapping, its ring would fault (SIGBUS) where the
    // slots were: shared memory offers no defence against that, so it is not exercised.
    let creator_mapped = resize.is_none_or(|new| new >= len as u64);

    let opened = if flags & READ_ONLY != 0 {
        Stream::open_readonly(name)
    } else {
        Stream::open(name)
    };
    // `stat` refuses exactly the rings `open` does, saying why in `history_problem`.
    let stat = shmstream::stat(name).unwrap();
    match &opened {
        Ok(s) => {
            assert_eq!(s.history_depth(), stat.history, "{stat:?}");
            assert_eq!(stat.history_problem, None);
        }
        Err(Error::InvalidHistory { name: n, reason }) => {
            assert_eq!(n, name);
            assert_eq!(stat.history_problem.as_ref(), Some(reason), "{stat:?}");
        }
        Err(e) => panic!("unexpected open error: {e:?}"),
    }
    // The creator's ring stays mapped as created: its cursors read the planted slots too.
    if creator_mapped {
        exercise(&creator);
    }
    if let Ok(s) = &opened {
        exercise(s);
        if flags & WRITE != 0 && flags & READ_ONLY == 0 {
            // A writer appending onto the planted head and slots: typed errors only, and
            // the latest frame is what it wrote.
            match s.write_slice(&[3u32; LEN]) {
                Ok(()) => assert_eq!(s.read::<u32>().unwrap().as_slice().unwrap(), &[3; LEN]),
                Err(e) => assert_eq!(e.stream_name(), name, "{e:?}"),
            }
            exercise(s);
        }
    }
    drop(opened);
    drop(creator);
    let _ = shmstream::unlink_quiet(name);
});
