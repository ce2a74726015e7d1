//! `Stream::open` / `stat` on a crafted `_meta` segment planted in /dev/shm (with a payload
//! whose length the input also picks): never panics, never maps out of bounds; the result is
//! a usable stream or a typed error naming it.
#![no_main]

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shmstream::format::{self, HEADER_BYTES, META_BYTES, offset};
use shmstream::{Error, Stream};

unsafe extern "C" {
    #[link_name = "atexit"]
    fn libc_atexit(f: extern "C" fn()) -> i32;
}

fn name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| format!("fuzz-open-{}", std::process::id()))
}

fn plant(id: &str, bytes: &[u8], len: u64) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(format!("/dev/shm/{id}"))
        .unwrap();
    f.write_all(bytes).unwrap();
    // Written out (zeros past `bytes`), as producers do: a sparse payload is refused
    // before its header's rules are reached.
    let pad = usize::try_from(len).unwrap().saturating_sub(bytes.len());
    f.write_all(&vec![0; pad]).unwrap();
    f.set_len(len).unwrap();
}

fuzz_target!(|data: &[u8]| {
    let name = name();
    // Two bytes pick the payload length (up to 64 KiB); the rest is the `_meta` segment.
    // Inputs that start with a valid-looking header (magic) but a foreign name get this
    // fuzz stream's name patched in 1 time in 2, so the rules past the name are reached.
    let (len, meta) = match data {
        [a, b, rest @ ..] => (u64::from(u16::from_le_bytes([*a, *b])), rest),
        _ => (0, data),
    };
    let mut meta = meta.to_vec();
    if len & 1 == 1 && meta.len() >= META_BYTES {
        meta[HEADER_BYTES..META_BYTES].fill(0);
        meta[HEADER_BYTES..HEADER_BYTES + name.len()].copy_from_slice(name.as_bytes());
        // Re-stamp the CRC so the patched name does not stop every input at the checksum.
        let stamped: &[u8; META_BYTES] = meta[..META_BYTES].try_into().unwrap();
        let crc = format::crc(stamped);
        if u32::from_le_bytes(meta[offset::FLAGS..offset::FLAGS + 4].try_into().unwrap())
            & format::FLAG_HEADER_CRC
            != 0
        {
            meta[offset::HEADER_CRC..offset::HEADER_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        }
    }
    plant(&shmstream::name::meta_id(name), &meta, meta.len() as u64);
    plant(&shmstream::name::segment_id(name), &[], len);
    let opened = Stream::open(name);
    // Leave nothing behind in /dev/shm when the fuzzer stops.
    static CLEANUP: OnceLock<()> = OnceLock::new();
    CLEANUP.get_or_init(|| {
        extern "C" fn remove() {
            let _ = shmstream::unlink_quiet(crate::name());
        }
        // SAFETY: registering a plain extern "C" function with no arguments.
        unsafe { libc_atexit(remove) };
    });
    let stat = shmstream::stat(name);
    match (&opened, &stat) {
        (Ok(s), Ok(st)) => {
            assert_eq!(s.shape(), st.shape.as_slice());
            // A payload is mapped (and so must be long enough) unless the stream is GPU-only.
            assert!(!s.cpu_mirror() || s.size_bytes() as u64 <= len);
            let _ = s.count();
        }
        (
            Err(Error::PayloadTooSmall {
                declared, actual, ..
            }),
            Ok(st),
        ) => {
            assert_eq!(*declared, st.size);
            assert!(actual < declared);
        }
        (Err(a), Err(b)) => {
            assert_eq!(a.to_string(), b.to_string());
            assert!(matches!(a, Error::CorruptHeader { .. }), "{a:?}");
            assert_eq!(a.stream_name(), name);
        }
        other => panic!("open and stat disagree: {other:?}"),
    }
});
