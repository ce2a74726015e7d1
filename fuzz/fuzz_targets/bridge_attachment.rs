//! The bridge's network-facing attachment decoder, `shmstream_bridge::codec`, on arbitrary
//! bytes: never panics; an accepted attachment re-encodes to exactly the same bytes (so it
//! decodes to itself), and its frame size is computed without overflow, within the bridge's
//! limit. The module is compiled from the bridge's source file, not through the bridge
//! crate, so that this build does not pull in Zenoh.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../bridge/src/codec.rs"]
#[allow(dead_code)]
mod codec;

use codec::{FrameHeader, MAX_FRAME_BYTES};

fuzz_target!(|data: &[u8]| {
    match FrameHeader::decode(data) {
        Ok(h) => {
            let again = h.encode().expect("an accepted attachment encodes");
            assert_eq!(again, data, "re-encoded differently: {h:?}");
            let back = FrameHeader::decode(&again).expect("a re-encoded attachment decodes");
            assert_eq!(back.encode().as_deref(), Ok(data));
            let bytes = h.frame_bytes().expect("an accepted shape is sized");
            assert!(
                bytes >= 1 && bytes as u64 <= MAX_FRAME_BYTES,
                "{bytes} for {h:?}"
            );
        }
        Err(reason) => assert!(!reason.is_empty()),
    }
});
