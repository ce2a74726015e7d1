//! The `_gpu` segment: raw bytes that let another process attach a GPU stream's device
//! payload. Pure functions, no I/O, no driver (see `docs/format-gpu.md` for the table).
//!
//! The segment is 256 bytes, little endian. Everything is plain data: the two CUDA IPC
//! handles are opaque 64-byte blobs handed back to the driver as they are; nothing is ever
//! deserialized into code (unlike pyshmem's torch pickles, which this layout replaces; the
//! stream header's `FLAG_CUDA_IPC` bit marks streams that use it, so pyshmem refuses them).

/// `SHMSGPU\0`
pub const GPU_MAGIC: [u8; 8] = *b"SHMSGPU\0";
/// The only `_gpu` layout version this crate reads and writes.
pub const GPU_VERSION: u16 = 1;
/// Bytes in a `_gpu` segment.
pub const GPU_SEGMENT_BYTES: usize = 256;
/// Device allocations are rounded up to (and aligned at) 2 MiB, the driver's large-page size.
pub const GPU_ALLOC_ALIGN: u64 = 2 << 20;
/// Bytes in a CUDA IPC handle (`CUipcMemHandle`, `CUipcEventHandle`).
pub const IPC_HANDLE_BYTES: usize = 64;

/// `state` while the creating handle keeps the device allocation alive.
pub const STATE_LIVE: u32 = 1;
/// `state` once the creating process freed the allocation (its last handle closed).
pub const STATE_RELEASED: u32 = 2;

/// Byte offsets in the `_gpu` segment.
pub mod gpu_offset {
    /// `[u8; 8]` magic `SHMSGPU\0`.
    pub const MAGIC: usize = 0;
    /// `u16` layout version (1).
    pub const VERSION: usize = 8;
    /// `u16` segment size (256).
    pub const HEADER_SIZE: usize = 10;
    /// `i32` CUDA device ordinal of the allocation (in the creator's numbering).
    pub const DEVICE: usize = 12;
    /// `u64` bytes allocated on the device (payload rounded up to the alignment).
    pub const ALLOC_BYTES: usize = 16;
    /// `u64` payload bytes (equals the stream header's `size`).
    pub const PAYLOAD_BYTES: usize = 24;
    /// `u64` allocation alignment (2 MiB).
    pub const ALIGNMENT: usize = 32;
    /// `i64` pid of the process that owns the allocation (the stream's creator).
    pub const CREATOR_PID: usize = 40;
    /// `[u8; 16]` the stream's generation id (equals the header's `instance_id`).
    pub const INSTANCE_ID: usize = 48;
    /// `[u8; 64]` `CUipcMemHandle` of the allocation.
    pub const MEM_HANDLE: usize = 64;
    /// `[u8; 64]` `CUipcEventHandle` of the stream's interprocess event.
    pub const EVENT_HANDLE: usize = 128;
    /// `u32` CRC-32 (IEEE) of bytes 0..192.
    pub const CRC: usize = 192;
    /// `u32` state (mutable): 1 live, 2 released. Not covered by the CRC.
    pub const STATE: usize = 196;
    /// `i64` (mutable) pid of the process whose last write is published by its CUDA stream
    /// (GPU-side publication: the even sequence lands when the stream gets there), 0 when
    /// the last write was published by the host. Not covered by the CRC; zero in segments
    /// written before it existed.
    pub const PUBLISHER_PID: usize = 200;
    /// `u64` (mutable) the last frame the stream's GPU consumer acknowledged (a frame is
    /// numbered by its even sequence / 2); written by the consumer's CUDA stream, read by
    /// writers before they overwrite the payload. Not covered by the CRC.
    pub const CONSUMER_ACK: usize = 208;
    /// `i64` (mutable) pid of the process holding the stream's one acknowledging GPU consumer,
    /// 0 when none. Not covered by the CRC; zero in segments written before it existed.
    pub const CONSUMER_PID: usize = 216;
    /// `u64` (mutable) the frame number of the last publication (its even sequence / 2),
    /// stored after the even sequence by the host or the writer's CUDA stream; GPU consumers
    /// wait on it. A consumer giving up on frames that never came sets [`super::RELEASED_BIT`] to
    /// release its own stream; the next publication (or consumer) clears it. Not covered by
    /// the CRC.
    pub const PUBLISHED_FRAME: usize = 224;
}

/// Set in `published_frame` by a GPU consumer that gave up waiting ([`gpu_offset::PUBLISHED_FRAME`]):
/// above every frame number, so its stream's pending wait passes.
pub const RELEASED_BIT: u64 = 1 << 62;

/// The content of a `_gpu` segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuRecord {
    /// CUDA device ordinal.
    pub device: i32,
    /// Bytes allocated on the device.
    pub alloc_bytes: u64,
    /// Payload bytes.
    pub payload_bytes: u64,
    /// Allocation alignment.
    pub alignment: u64,
    /// Pid of the owning (creating) process.
    pub creator_pid: i64,
    /// The stream's generation id.
    pub instance_id: [u8; 16],
    /// The `CUipcMemHandle`, as bytes.
    pub mem_handle: [u8; IPC_HANDLE_BYTES],
    /// The `CUipcEventHandle`, as bytes.
    pub event_handle: [u8; IPC_HANDLE_BYTES],
    /// 1 live, 2 released.
    pub state: u32,
}

/// A rule of the `_gpu` layout that a segment breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuLayoutError {
    /// Fewer than 256 bytes.
    #[error("GPU segment too small: expected {GPU_SEGMENT_BYTES} bytes, got {0}")]
    TooShort(usize),
    /// Not `SHMSGPU\0` (for example a pyshmem torch pickle).
    #[error(
        "GPU segment has a foreign layout (not shmstream CUDA IPC; a pyshmem/torch GPU stream?)"
    )]
    BadMagic,
    /// Another version.
    #[error("unsupported GPU segment version {0} (this build reads version {GPU_VERSION})")]
    Version(u16),
    /// Another size.
    #[error("invalid GPU segment size {0} (expected {GPU_SEGMENT_BYTES})")]
    HeaderSize(u16),
    /// CRC mismatch.
    #[error("GPU segment checksum mismatch (stored 0x{stored:08x}, computed 0x{computed:08x})")]
    Crc {
        /// Stored.
        stored: u32,
        /// Computed.
        computed: u32,
    },
    /// Negative device ordinal.
    #[error("invalid GPU device ordinal {0}")]
    Device(i32),
    /// Allocation smaller than the payload or not a multiple of the alignment.
    #[error(
        "invalid GPU allocation: {alloc} bytes (alignment {alignment}) for a {payload}-byte payload"
    )]
    Allocation {
        /// Allocated.
        alloc: u64,
        /// Payload.
        payload: u64,
        /// Alignment.
        alignment: u64,
    },
    /// Unknown state word.
    #[error("invalid GPU segment state {0}")]
    State(u32),
}

/// The mutable publisher word of a `_gpu` segment's bytes (`None` when too short, or not this
/// layout: a pyshmem GPU stream's `_gpu` holds a torch IPC pickle, whose bytes there are part
/// of a memory handle, not a pid).
pub fn publisher_pid(b: &[u8]) -> Option<i64> {
    word(b, gpu_offset::PUBLISHER_PID)
}

/// The mutable consumer pid word of a `_gpu` segment's bytes (as [`publisher_pid`]).
pub fn consumer_pid(b: &[u8]) -> Option<i64> {
    word(b, gpu_offset::CONSUMER_PID)
}

/// The little-endian word at `at` of a `_gpu` segment of this layout (its magic first).
fn word(b: &[u8], at: usize) -> Option<i64> {
    if b.get(..8)? != GPU_MAGIC {
        return None;
    }
    let w = b.get(at..at + 8)?;
    Some(i64::from_le_bytes(w.try_into().ok()?))
}

/// Device bytes to allocate for a payload: rounded up to [`GPU_ALLOC_ALIGN`] (at least one
/// unit). `None` on overflow.
pub fn alloc_bytes(payload: u64) -> Option<u64> {
    let units = payload.max(1).checked_add(GPU_ALLOC_ALIGN - 1)? / GPU_ALLOC_ALIGN;
    units.checked_mul(GPU_ALLOC_ALIGN)
}

fn put(b: &mut [u8], off: usize, v: &[u8]) {
    b[off..off + v.len()].copy_from_slice(v);
}

fn arr<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[off..off + N]);
    a
}

/// Encodes a record (with its CRC and the given state).
pub fn encode(r: &GpuRecord) -> [u8; GPU_SEGMENT_BYTES] {
    let mut b = [0u8; GPU_SEGMENT_BYTES];
    put(&mut b, gpu_offset::MAGIC, &GPU_MAGIC);
    put(&mut b, gpu_offset::VERSION, &GPU_VERSION.to_le_bytes());
    put(
        &mut b,
        gpu_offset::HEADER_SIZE,
        &(GPU_SEGMENT_BYTES as u16).to_le_bytes(),
    );
    put(&mut b, gpu_offset::DEVICE, &r.device.to_le_bytes());
    put(
        &mut b,
        gpu_offset::ALLOC_BYTES,
        &r.alloc_bytes.to_le_bytes(),
    );
    put(
        &mut b,
        gpu_offset::PAYLOAD_BYTES,
        &r.payload_bytes.to_le_bytes(),
    );
    put(&mut b, gpu_offset::ALIGNMENT, &r.alignment.to_le_bytes());
    put(
        &mut b,
        gpu_offset::CREATOR_PID,
        &r.creator_pid.to_le_bytes(),
    );
    put(&mut b, gpu_offset::INSTANCE_ID, &r.instance_id);
    put(&mut b, gpu_offset::MEM_HANDLE, &r.mem_handle);
    put(&mut b, gpu_offset::EVENT_HANDLE, &r.event_handle);
    let crc = crc32fast::hash(&b[..gpu_offset::CRC]);
    put(&mut b, gpu_offset::CRC, &crc.to_le_bytes());
    put(&mut b, gpu_offset::STATE, &r.state.to_le_bytes());
    b
}

/// Decodes and validates a `_gpu` segment snapshot.
pub fn decode(b: &[u8]) -> Result<GpuRecord, GpuLayoutError> {
    if b.len() < GPU_SEGMENT_BYTES {
        return Err(GpuLayoutError::TooShort(b.len()));
    }
    if b[..8] != GPU_MAGIC {
        return Err(GpuLayoutError::BadMagic);
    }
    let version = u16::from_le_bytes(arr(b, gpu_offset::VERSION));
    if version != GPU_VERSION {
        return Err(GpuLayoutError::Version(version));
    }
    let size = u16::from_le_bytes(arr(b, gpu_offset::HEADER_SIZE));
    if usize::from(size) != GPU_SEGMENT_BYTES {
        return Err(GpuLayoutError::HeaderSize(size));
    }
    let stored = u32::from_le_bytes(arr(b, gpu_offset::CRC));
    let computed = crc32fast::hash(&b[..gpu_offset::CRC]);
    if stored != computed {
        return Err(GpuLayoutError::Crc { stored, computed });
    }
    let r = GpuRecord {
        device: i32::from_le_bytes(arr(b, gpu_offset::DEVICE)),
        alloc_bytes: u64::from_le_bytes(arr(b, gpu_offset::ALLOC_BYTES)),
        payload_bytes: u64::from_le_bytes(arr(b, gpu_offset::PAYLOAD_BYTES)),
        alignment: u64::from_le_bytes(arr(b, gpu_offset::ALIGNMENT)),
        creator_pid: i64::from_le_bytes(arr(b, gpu_offset::CREATOR_PID)),
        instance_id: arr(b, gpu_offset::INSTANCE_ID),
        mem_handle: arr(b, gpu_offset::MEM_HANDLE),
        event_handle: arr(b, gpu_offset::EVENT_HANDLE),
        state: u32::from_le_bytes(arr(b, gpu_offset::STATE)),
    };
    if r.device < 0 {
        return Err(GpuLayoutError::Device(r.device));
    }
    if r.alignment == 0
        || !r.alloc_bytes.is_multiple_of(r.alignment)
        || r.alloc_bytes < r.payload_bytes
        || r.payload_bytes == 0
    {
        return Err(GpuLayoutError::Allocation {
            alloc: r.alloc_bytes,
            payload: r.payload_bytes,
            alignment: r.alignment,
        });
    }
    if r.state != STATE_LIVE && r.state != STATE_RELEASED {
        return Err(GpuLayoutError::State(r.state));
    }
    Ok(r)
}

/// Checks a decoded record against the stream header it belongs to; returns why not.
pub fn matches_header(r: &GpuRecord, h: &crate::format::Header) -> Result<(), String> {
    if r.instance_id != h.instance_id {
        return Err("the `_gpu` segment belongs to another generation of this stream (it was recreated meanwhile)".into());
    }
    if r.device != h.device_index {
        return Err(format!(
            "the `_gpu` segment names device {} but the header names device {}",
            r.device, h.device_index
        ));
    }
    if r.payload_bytes != h.size {
        return Err(format!(
            "the `_gpu` segment holds {} payload bytes but the header says {}",
            r.payload_bytes, h.size
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pid_words_of_a_segment_not_of_this_layout_are_none() {
        let mut ours = [0u8; GPU_SEGMENT_BYTES];
        put(&mut ours, gpu_offset::MAGIC, &GPU_MAGIC);
        put(&mut ours, gpu_offset::PUBLISHER_PID, &4321i64.to_le_bytes());
        put(&mut ours, gpu_offset::CONSUMER_PID, &765i64.to_le_bytes());
        assert_eq!(
            (publisher_pid(&ours), consumer_pid(&ours)),
            (Some(4321), Some(765))
        );
        // A pickle (protocol 4 starts 0x80 0x04) with handle bytes where our words are.
        let mut pickle = ours;
        pickle[..2].copy_from_slice(&[0x80, 0x04]);
        assert_eq!(
            (publisher_pid(&pickle), consumer_pid(&pickle)),
            (None, None)
        );
    }

    fn record() -> GpuRecord {
        let mut mem = [0u8; 64];
        let mut ev = [0u8; 64];
        for i in 0..64 {
            mem[i] = i as u8;
            ev[i] = 255 - i as u8;
        }
        GpuRecord {
            device: 1,
            alloc_bytes: alloc_bytes(40_000).unwrap(),
            payload_bytes: 40_000,
            alignment: GPU_ALLOC_ALIGN,
            creator_pid: 4242,
            instance_id: [7; 16],
            mem_handle: mem,
            event_handle: ev,
            state: STATE_LIVE,
        }
    }

    #[test]
    fn alloc_rounds_up_to_2_mib() {
        assert_eq!(alloc_bytes(1), Some(2 << 20));
        assert_eq!(alloc_bytes(0), Some(2 << 20));
        assert_eq!(alloc_bytes(2 << 20), Some(2 << 20));
        assert_eq!(alloc_bytes((2 << 20) + 1), Some(4 << 20));
        assert_eq!(alloc_bytes(400_000_000), Some(191 * (2 << 20)));
        assert_eq!(alloc_bytes(u64::MAX), None);
    }

    #[test]
    fn the_publisher_word_is_outside_the_crc_and_zero_when_encoded() {
        let mut b = encode(&record());
        assert_eq!(publisher_pid(&b), Some(0));
        b[gpu_offset::PUBLISHER_PID..gpu_offset::PUBLISHER_PID + 8]
            .copy_from_slice(&4242i64.to_le_bytes());
        assert_eq!(publisher_pid(&b), Some(4242));
        assert_eq!(decode(&b).unwrap(), record(), "still a valid segment");
        assert_eq!(publisher_pid(&b[..100]), None);
        // The GPU consumer's words (issue #11) are mutable too: outside the CRC, zero when
        // encoded, inside the segment, 8-aligned and distinct.
        let words = [
            gpu_offset::PUBLISHER_PID,
            gpu_offset::CONSUMER_ACK,
            gpu_offset::CONSUMER_PID,
            gpu_offset::PUBLISHED_FRAME,
        ];
        for (i, &off) in words.iter().enumerate() {
            assert!(off >= gpu_offset::STATE + 4 && off + 8 <= GPU_SEGMENT_BYTES);
            assert_eq!(off % 8, 0);
            assert!(
                words[i + 1..].iter().all(|&o| o >= off + 8),
                "overlap at {off}"
            );
            let mut c = encode(&record());
            assert!(c[off..off + 8].iter().all(|&x| x == 0));
            c[off..off + 8].copy_from_slice(&u64::MAX.to_le_bytes());
            assert_eq!(
                decode(&c).unwrap(),
                record(),
                "word at {off} is outside the CRC"
            );
        }
        assert!(RELEASED_BIT > u64::from(u32::MAX) && (RELEASED_BIT as i64) > 0);
    }

    #[test]
    fn encode_decode_round_trips_at_documented_offsets() {
        let r = record();
        let b = encode(&r);
        assert_eq!(&b[0..8], b"SHMSGPU\0");
        assert_eq!(u16::from_le_bytes([b[8], b[9]]), 1);
        assert_eq!(u16::from_le_bytes([b[10], b[11]]), 256);
        assert_eq!(i32::from_le_bytes(b[12..16].try_into().unwrap()), 1);
        assert_eq!(u64::from_le_bytes(b[24..32].try_into().unwrap()), 40_000);
        assert_eq!(&b[64..128], &r.mem_handle[..]);
        assert_eq!(&b[128..192], &r.event_handle[..]);
        assert_eq!(
            u32::from_le_bytes(b[196..200].try_into().unwrap()),
            STATE_LIVE
        );
        assert!(b[200..].iter().all(|&x| x == 0));
        assert_eq!(decode(&b).unwrap(), r);
    }

    #[test]
    fn state_is_outside_the_crc() {
        let mut b = encode(&record());
        b[gpu_offset::STATE..gpu_offset::STATE + 4].copy_from_slice(&STATE_RELEASED.to_le_bytes());
        assert_eq!(decode(&b).unwrap().state, STATE_RELEASED);
        b[gpu_offset::STATE] = 9;
        assert_eq!(decode(&b), Err(GpuLayoutError::State(9)));
    }

    #[test]
    fn broken_segments_are_refused() {
        let good = encode(&record());
        assert_eq!(decode(&good[..100]), Err(GpuLayoutError::TooShort(100)));
        let mut b = good;
        b[0] = 0x80; // a pickle starts with 0x80
        assert_eq!(decode(&b), Err(GpuLayoutError::BadMagic));
        let mut b = good;
        b[8] = 2;
        assert_eq!(decode(&b), Err(GpuLayoutError::Version(2)));
        let mut b = good;
        b[gpu_offset::MEM_HANDLE + 3] ^= 1;
        assert!(matches!(decode(&b), Err(GpuLayoutError::Crc { .. })));
        let mut r = record();
        r.alloc_bytes = 1000;
        assert!(matches!(
            decode(&encode(&r)),
            Err(GpuLayoutError::Allocation { .. })
        ));
        let mut r = record();
        r.device = -1;
        assert_eq!(decode(&encode(&r)), Err(GpuLayoutError::Device(-1)));
    }

    /// Each allocation rule refuses alone, on a segment otherwise valid: no alignment, an
    /// allocation not a multiple of it, one smaller than the payload, no payload. A payload
    /// filling its allocation exactly is valid.
    #[test]
    fn each_allocation_rule_refuses_alone() {
        let with = |alloc: u64, payload: u64, alignment: u64| GpuRecord {
            alloc_bytes: alloc,
            payload_bytes: payload,
            alignment,
            ..record()
        };
        let a = GPU_ALLOC_ALIGN;
        for bad in [
            with(a, 100, 0),
            with(a + 1, 100, a),
            with(a, a + 1, a),
            with(a, 0, a),
        ] {
            assert_eq!(
                decode(&encode(&bad)),
                Err(GpuLayoutError::Allocation {
                    alloc: bad.alloc_bytes,
                    payload: bad.payload_bytes,
                    alignment: bad.alignment,
                }),
                "{bad:?}"
            );
        }
        let full = with(2 * a, 2 * a, a);
        assert_eq!(decode(&encode(&full)), Ok(full));
    }

    /// A record matches the header of its stream generation, and each of generation,
    /// device and payload size that differs is named.
    #[test]
    fn a_record_matches_only_its_streams_header() {
        let header = |instance_id: [u8; 16], device_index: i32, len: usize| {
            let b = crate::format::encode_new(&crate::format::NewHeader {
                name: "gpu-layout",
                dtype: crate::Dtype::U8,
                shape: &[len],
                flags: crate::format::FLAG_GPU,
                device_index,
                creator_pid: 4242,
                instance_id,
            });
            crate::format::decode(&b, Some("gpu-layout")).unwrap()
        };
        let r = record();
        assert_eq!(matches_header(&r, &header([7; 16], 1, 40_000)), Ok(()));
        let e = matches_header(&r, &header([8; 16], 1, 40_000)).unwrap_err();
        assert!(e.contains("another generation"), "{e}");
        let e = matches_header(&r, &header([7; 16], 0, 40_000)).unwrap_err();
        assert!(
            e.contains("names device 1 but the header names device 0"),
            "{e}"
        );
        let e = matches_header(&r, &header([7; 16], 1, 40_001)).unwrap_err();
        assert!(
            e.contains("holds 40000 payload bytes but the header says 40001"),
            "{e}"
        );
    }
}
