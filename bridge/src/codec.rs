//! The attachment that travels with every frame: what a subscriber needs to mirror it.
//!
//! Little-endian, fixed order, no padding:
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `SHMB` |
//! | 1 | format version (3) |
//! | 1 | dtype (pyshmem's dtype code) |
//! | 1 | number of dimensions `n` (1..=19, as the v3 header) |
//! | 1 | flags: bit 0 lossless, the others 0 |
//! | 8 | frame id |
//! | 8 | count (the writer's publication count) |
//! | 8 | write time (UNIX seconds, f64) |
//! | 16 | instance id of the source stream (its generation; zeros: none) |
//! | 8 | frames of the source the publisher reported lost so far |
//! | 2 | length in bytes of the source stream's name (1..=256) |
//! | 8·n | shape |
//!
//! Decoding checks every field and bounds the frame size, so a hostile or corrupt attachment
//! is refused with a reason before anything is created or written.
//!
//! The name's length tells the publisher's split of the key `PREFIX/NAME`, which stream
//! names holding `/` make ambiguous (`c` under prefix `a/b` and `b/c` under `a` share key
//! `a/b/c`): with the key, it gives the publisher's name and prefix.

use shmstream::Dtype;
use shmstream::format::MAX_DIMS;
use shmstream::name::MAX_NAME_BYTES;

const MAGIC: [u8; 4] = *b"SHMB";
/// The attachment format this build writes and reads.
pub const VERSION: u8 = 3;
const FIXED: usize = 58;
/// Flags bit: the frame is carried lossless (every frame of the source, in order).
const LOSSLESS: u8 = 1;
/// The largest frame the bridge carries (1 GiB): a publisher refuses a stream of larger
/// frames at open, a subscriber refuses an attachment that describes one.
pub const MAX_FRAME_BYTES: u64 = 1 << 30;
/// The largest message the receiving end of a link accepts (Zenoh's
/// `transport/link/rx/max_message_size`, set by [`crate::open_session`]): the largest frame
/// and room for what travels with it, its attachment (at most 210 bytes), its key and
/// Zenoh's headers. Zenoh's default (1 GiB) drops a message of a 1 GiB frame, saying so only
/// in its trace log.
pub const MAX_MESSAGE_BYTES: u64 = MAX_FRAME_BYTES + (1 << 20);

/// One frame's description.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameHeader {
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// The writer's frame id.
    pub frame_id: u64,
    /// The writer's publication count.
    pub count: u64,
    /// UNIX time of the write on the publishing host.
    pub write_time: f64,
    /// The source stream's instance id (zeros where it has none).
    pub source: [u8; 16],
    /// Whether the publisher carries every frame (`--lossless`).
    pub lossless: bool,
    /// Frames of the source the publisher reported lost so far.
    pub lost: u64,
    /// Length in bytes of the source stream's name (1..=[`MAX_NAME_BYTES`]): the end of the
    /// key that is the name, the rest (less a `/`) the publisher's key prefix.
    pub name_len: usize,
}

/// Why a [`FrameHeader`] cannot be encoded, or its frame sized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// More dimensions than the attachment (and a stream) holds, or none.
    #[error("{0} dimensions: a frame header holds 1..={MAX_DIMS}: give a stream's shape")]
    Dims(usize),
    /// A shape whose frame size overflows `usize`.
    #[error(
        "shape {shape:?} of {itemsize}-byte elements overflows the address space: give a \
         stream's shape"
    )]
    Overflow {
        /// The shape.
        shape: Vec<usize>,
        /// Bytes per element.
        itemsize: usize,
    },
    /// A source stream name length outside 1..=[`MAX_NAME_BYTES`].
    #[error(
        "a source stream name of {0} bytes (1..={MAX_NAME_BYTES} allowed): give the \
         stream name's length"
    )]
    NameLength(usize),
}

impl FrameHeader {
    /// Bytes of the frame it describes; an error where that overflows `usize`.
    pub fn frame_bytes(&self) -> Result<usize, HeaderError> {
        let itemsize = self.dtype.itemsize();
        self.shape
            .iter()
            .try_fold(itemsize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| HeaderError::Overflow {
                shape: self.shape.clone(),
                itemsize,
            })
    }

    /// The attachment bytes; an error for a shape of no or over [`MAX_DIMS`] dimensions or
    /// a name length outside 1..=[`MAX_NAME_BYTES`] (which [`FrameHeader::decode`] would
    /// refuse).
    pub fn encode(&self) -> Result<Vec<u8>, HeaderError> {
        let dims = self.shape.len();
        if dims == 0 || dims > MAX_DIMS {
            return Err(HeaderError::Dims(dims));
        }
        if self.name_len == 0 || self.name_len > MAX_NAME_BYTES {
            return Err(HeaderError::NameLength(self.name_len));
        }
        let mut b = Vec::with_capacity(FIXED + 8 * dims);
        b.extend_from_slice(&MAGIC);
        b.push(VERSION);
        b.push(self.dtype.code() as u8);
        // Checked above: both fit.
        b.push(dims as u8);
        b.push(if self.lossless { LOSSLESS } else { 0 });
        b.extend_from_slice(&self.frame_id.to_le_bytes());
        b.extend_from_slice(&self.count.to_le_bytes());
        b.extend_from_slice(&self.write_time.to_le_bytes());
        b.extend_from_slice(&self.source);
        b.extend_from_slice(&self.lost.to_le_bytes());
        b.extend_from_slice(&(self.name_len as u16).to_le_bytes());
        for &d in &self.shape {
            b.extend_from_slice(&(d as u64).to_le_bytes());
        }
        Ok(b)
    }

    /// Parses and checks an attachment; the error says what is wrong.
    pub fn decode(b: &[u8]) -> Result<FrameHeader, String> {
        let too_short = || format!("attachment of {} bytes is too short", b.len());
        // Magic and version first: an attachment of another version has another length.
        if b.len() < MAGIC.len() + 1 {
            return Err(too_short());
        }
        if b[..4] != MAGIC {
            return Err("attachment is not a shmstream frame header (bad magic)".into());
        }
        if b[4] != VERSION {
            return Err(format!(
                "attachment format version {} (this bridge reads {VERSION}): run the same shmstream-bridge version on both hosts",
                b[4]
            ));
        }
        if b.len() < FIXED {
            return Err(too_short());
        }
        const NEWER: &str = "a newer shmstream-bridge on the other host? run the same shmstream-bridge version on both hosts";
        let dtype = Dtype::from_code(u16::from(b[5]))
            .ok_or_else(|| format!("unknown dtype code {} ({NEWER})", b[5]))?;
        let ndim = usize::from(b[6]);
        if ndim == 0 || ndim > MAX_DIMS {
            return Err(format!(
                "{ndim} dimensions (1..={MAX_DIMS} allowed; {NEWER})"
            ));
        }
        if b[7] & !LOSSLESS != 0 {
            return Err(format!(
                "flags {:#04x} has unknown bits: run the same shmstream-bridge version on both hosts",
                b[7]
            ));
        }
        if b.len() != FIXED + 8 * ndim {
            return Err(format!(
                "attachment of {} bytes for {ndim} dimensions ({} expected)",
                b.len(),
                FIXED + 8 * ndim
            ));
        }
        let name_len = usize::from(u16::from_le_bytes([b[56], b[57]]));
        if name_len == 0 || name_len > MAX_NAME_BYTES {
            return Err(format!(
                "a source stream name of {name_len} bytes (1..={MAX_NAME_BYTES} allowed)"
            ));
        }
        let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
        let mut shape = Vec::with_capacity(ndim);
        let mut bytes = dtype.itemsize() as u64;
        for i in 0..ndim {
            let d = word(FIXED + 8 * i);
            bytes = bytes.saturating_mul(d);
            if d == 0 || bytes > MAX_FRAME_BYTES {
                return Err(format!(
                    "shape dimension {i} = {d} gives a frame outside 1..={MAX_FRAME_BYTES} bytes"
                ));
            }
            shape.push(d as usize);
        }
        Ok(FrameHeader {
            dtype,
            shape,
            frame_id: word(8),
            count: word(16),
            write_time: f64::from_bits(word(24)),
            source: b[32..48].try_into().unwrap_or([0; 16]),
            lossless: b[7] & LOSSLESS != 0,
            lost: word(48),
            name_len,
        })
    }
}

/// A lossless subscriber's request that the publisher answer, from its history, with the
/// frames of source instance `source` counted after `after` and before `before` (the
/// payload of a query on the stream's resend key, [`crate::resend_key`]): 16 bytes of
/// instance id, then the two counts, 8 bytes little-endian each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResendRequest {
    /// The source stream's instance id.
    pub source: [u8; 16],
    /// The count of the subscriber's newest frame of it: those after it are asked for.
    pub after: u64,
    /// The count of the first frame the subscriber holds past the gap (`u64::MAX`: none):
    /// those before it are asked for.
    pub before: u64,
}

/// The payload of the error reply that ends a publisher's whole answer to a
/// [`ResendRequest`] (its frames are replies before it): an answer without it was lost, or
/// ran out of time, and is asked for again.
pub const ANSWER_END: &[u8] = b"shmstream-bridge: answer end";

impl ResendRequest {
    /// The query payload.
    pub fn encode(&self) -> [u8; 32] {
        let mut b = [0; 32];
        b[..16].copy_from_slice(&self.source);
        b[16..24].copy_from_slice(&self.after.to_le_bytes());
        b[24..].copy_from_slice(&self.before.to_le_bytes());
        b
    }

    /// The request in a query payload; `None` for any other payload.
    pub fn decode(b: &[u8]) -> Option<ResendRequest> {
        let b: &[u8; 32] = b.try_into().ok()?;
        Some(ResendRequest {
            source: b[..16].try_into().ok()?,
            after: u64::from_le_bytes(b[16..24].try_into().ok()?),
            before: u64::from_le_bytes(b[24..].try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resend_request_round_trips_and_nothing_else_is_one() {
        let r = ResendRequest {
            source: [7; 16],
            after: 1 << 40,
            before: u64::MAX - 1,
        };
        assert_eq!(ResendRequest::decode(&r.encode()), Some(r));
        assert_eq!(ResendRequest::decode(&[]), None);
        assert_eq!(ResendRequest::decode(&r.encode()[..31]), None);
        assert_eq!(ResendRequest::decode(&[0; 33]), None);
    }

    fn sample() -> FrameHeader {
        FrameHeader {
            dtype: Dtype::U16,
            shape: vec![240, 240],
            frame_id: 7,
            count: 9,
            write_time: 1.5e9,
            source: [3; 16],
            lossless: true,
            lost: 4,
            name_len: 4,
        }
    }

    #[test]
    fn round_trips_every_dtype() {
        for &dtype in Dtype::ALL.iter() {
            let h = FrameHeader { dtype, ..sample() };
            assert_eq!(FrameHeader::decode(&h.encode().unwrap()), Ok(h.clone()));
            assert_eq!(h.frame_bytes(), Ok(240 * 240 * dtype.itemsize()));
        }
    }

    /// The largest frame, with the largest attachment, fits the message a link accepts
    /// (with room to spare for its key and Zenoh's headers), and each bound is allowed: a
    /// frame of [`MAX_FRAME_BYTES`], [`MAX_DIMS`] dimensions, a name of [`MAX_NAME_BYTES`].
    /// A frame that is not lossless reads back so.
    #[test]
    fn the_largest_frame_and_attachment_fit_a_link_message() {
        let mut shape = vec![1; MAX_DIMS];
        shape[0] = MAX_FRAME_BYTES as usize;
        let h = FrameHeader {
            dtype: Dtype::U8,
            shape,
            name_len: MAX_NAME_BYTES,
            lossless: false,
            ..sample()
        };
        let attachment = h.encode().unwrap();
        let len = attachment.len() as u64;
        assert_eq!(len, 210, "the bound said in MAX_MESSAGE_BYTES' doc");
        assert!(MAX_FRAME_BYTES + len + 64 * 1024 <= MAX_MESSAGE_BYTES);
        assert_eq!(FrameHeader::decode(&attachment), Ok(h));
    }

    /// Each length check reads the bytes it has: five bytes are enough to tell a bad magic,
    /// and the fixed part alone is checked against its dimensions' count.
    #[test]
    fn an_attachment_is_refused_by_the_first_thing_its_bytes_show_wrong() {
        let good = sample().encode().unwrap();
        let e = FrameHeader::decode(&[b"XXXX".as_slice(), &good[4..5]].concat()).unwrap_err();
        assert!(e.contains("bad magic"), "{e}");
        let e = FrameHeader::decode(&good[..FIXED]).unwrap_err();
        assert_eq!(e, "attachment of 58 bytes for 2 dimensions (74 expected)");
    }

    #[test]
    fn hostile_attachments_are_refused_with_a_reason() {
        let good = sample().encode().unwrap();
        let mut cases: Vec<(&str, Vec<u8>)> = vec![
            ("too short", good[..10].to_vec()),
            ("a version 2 header cut short", good[..32 + 16].to_vec()),
            ("bad magic", [b"XXXX".as_slice(), &good[4..]].concat()),
            ("trailing bytes", [good.as_slice(), &[0]].concat()),
        ];
        let mut v = good.clone();
        v[4] = 9;
        cases.push(("version", v));
        let mut v = good.clone();
        v[5] = 200;
        cases.push(("dtype", v));
        let mut v = good.clone();
        v[6] = 0;
        cases.push(("no dims", v));
        let mut v = good.clone();
        v[6] = 40;
        cases.push(("too many dims", v));
        let mut v = good.clone();
        v[7] = 2;
        cases.push(("unknown flag", v));
        let mut v = good.clone();
        v[FIXED..FIXED + 8].copy_from_slice(&0u64.to_le_bytes());
        cases.push(("zero dim", v));
        let mut v = good.clone();
        v[FIXED..FIXED + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        cases.push(("huge", v));
        for len in [0u16, MAX_NAME_BYTES as u16 + 1] {
            let mut v = good.clone();
            v[56..58].copy_from_slice(&len.to_le_bytes());
            cases.push(("name length", v));
        }
        for (what, bytes) in cases {
            assert!(FrameHeader::decode(&bytes).is_err(), "{what} was accepted");
        }
    }

    /// A version 1 attachment (`FIXED` was 32) of a 1-d or 2-d stream is 40 or 48 bytes, and
    /// a version 2 one (`FIXED` was 56, no name length) of a 1-d stream 64, shorter than
    /// this version's fixed part or its size for its dimensions: its version is said, not
    /// "too short".
    #[test]
    fn an_older_attachment_is_refused_for_its_version_whatever_its_length() {
        let good = sample().encode().unwrap();
        for (version, len) in [(1, 40), (1, 48), (2, 64)] {
            let mut old = good[..len].to_vec();
            old[4] = version;
            let e = FrameHeader::decode(&old).unwrap_err();
            assert!(
                e.starts_with(&format!(
                    "attachment format version {version} (this bridge reads 3)"
                )) && e.ends_with("run the same shmstream-bridge version on both hosts"),
                "{len} bytes: {e}"
            );
        }
        assert!(
            FrameHeader::decode(&good[..4])
                .unwrap_err()
                .contains("too short")
        );
        for (at, code) in [(5, 200), (6, 0), (6, 40)] {
            let mut v = good.clone();
            v[at] = code;
            let e = FrameHeader::decode(&v).unwrap_err();
            assert!(
                e.contains("a newer shmstream-bridge on the other host? run the same"),
                "byte {at} = {code}: {e}"
            );
        }
    }

    /// A header a library caller builds with a shape of 256 dimensions was encoded as 0
    /// dimensions, and a huge shape's size overflowed (a panic in a debug build): both are
    /// typed errors, as a name length the decoder would refuse.
    #[test]
    fn a_header_that_cannot_be_encoded_or_sized_is_a_typed_error() {
        let with = |shape: Vec<usize>, name_len| FrameHeader {
            shape,
            name_len,
            ..sample()
        };
        assert_eq!(with(vec![1; 256], 4).encode(), Err(HeaderError::Dims(256)));
        assert_eq!(with(vec![], 4).encode(), Err(HeaderError::Dims(0)));
        for len in [0, MAX_NAME_BYTES + 1] {
            assert_eq!(
                with(vec![1], len).encode(),
                Err(HeaderError::NameLength(len))
            );
        }
        assert!(with(vec![1; MAX_DIMS], MAX_NAME_BYTES).encode().is_ok());
        let huge = with(vec![usize::MAX, 2], 4);
        assert_eq!(
            huge.frame_bytes(),
            Err(HeaderError::Overflow {
                shape: vec![usize::MAX, 2],
                itemsize: 2
            })
        );
        assert!(
            huge.encode().is_ok(),
            "sized by the decoder, not the encoder"
        );
    }
}
