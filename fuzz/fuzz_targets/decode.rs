//! `format::decode` over arbitrary bytes: never panics; what it accepts is sound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmstream::format::{self, FLAG_HEADER_CRC, KNOWN_FLAGS, MAX_DIMS, META_BYTES};

fuzz_target!(|data: &[u8]| {
    // The first byte picks whether a name is expected (and which), the rest is the segment.
    let (expect, bytes) = match data.split_first() {
        Some((b, rest)) if b & 1 == 1 => (format::stored_name(rest), rest),
        Some((_, rest)) => (None, rest),
        None => (None, data),
    };
    match format::decode(bytes, expect.as_deref()) {
        Ok(h) => {
            assert!((1..=MAX_DIMS).contains(&h.shape.len()));
            assert!(h.shape.iter().all(|&d| d > 0));
            let size = h
                .shape
                .iter()
                .try_fold(h.dtype.itemsize() as u64, |a, &d| a.checked_mul(d as u64));
            assert_eq!(size, Some(h.size));
            assert_eq!(h.flags & !KNOWN_FLAGS, 0);
            assert!(h.creator_pid > 0 && h.write_time.is_finite() && h.write_time >= 0.0);
            assert_eq!(h.lock_owner_pid == 0, h.lock_depth == 0);
            if h.flags & FLAG_HEADER_CRC != 0 {
                let meta: &[u8; META_BYTES] = bytes[..META_BYTES].try_into().unwrap();
                let stored = u32::from_le_bytes(bytes[92..96].try_into().unwrap());
                assert_eq!(format::crc(meta), stored);
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
