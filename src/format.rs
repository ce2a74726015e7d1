//! The on-memory header: pyshmem 1.4.0's v3 layout, byte for byte. Pure functions, no I/O.
//!
//! A `_meta` segment is 512 bytes: a 256-byte little-endian header followed by a 256-byte
//! UTF-8 name region padded with NULs. See `docs/format.md` for the table and the rules.
//! [`decode`] checks every rule pyshmem's `_validate_metadata_header` checks, in its order
//! (except that a segment shorter than 512 bytes, not a v2 one, is [`FormatError::TooShort`]
//! before its magic and version are read), and reports the first one broken as a
//! [`FormatError`]. Two deliberate differences:
//! - pyshmem refuses [`FLAG_CUDA_IPC`] as an unknown bit; we accept it on a GPU header
//!   (shmstream's own GPU streams set it) and refuse it on a CPU one
//!   ([`FormatError::CudaIpcWithoutGpu`]).
//! - pyshmem reads each integer field through a float64 and refuses one above 2^53 that the
//!   float does not hold exactly; we take the integer as it is. A count or a sequence only
//!   gets there planted (they are outside the CRC): we handle one to the end of its range
//!   (a count with no next value refuses the write, [`FormatError::CountExhausted`]; the
//!   sequence's generation restarts), where pyshmem no longer lists the stream. Sizes,
//!   shapes and pids that large are under the CRC and no real stream's.

use crate::dtype::Dtype;

/// `PYSHMEM\0`
pub const MAGIC: [u8; 8] = *b"PYSHMEM\0";
/// The only header version this crate reads and writes.
pub const VERSION: u16 = 3;
/// Bytes in the fixed header (before the name region).
pub const HEADER_BYTES: usize = 256;
/// Bytes in the name region.
pub const NAME_BYTES: usize = 256;
/// Bytes in a whole `_meta` segment.
pub const META_BYTES: usize = HEADER_BYTES + NAME_BYTES;
/// Most dimensions a shape can have.
pub const MAX_DIMS: usize = 19;

/// The stream lives on a GPU (`device_index` ≥ 0).
pub const FLAG_GPU: u32 = 1 << 0;
/// The stream has a host payload (always set on CPU streams).
pub const FLAG_CPU_MIRROR: u32 = 1 << 1;
/// `instance_id` holds a non-zero 128-bit generation id.
pub const FLAG_INSTANCE_ID: u32 = 1 << 2;
/// `header_crc` is valid.
pub const FLAG_HEADER_CRC: u32 = 1 << 3;
/// Writers wake futex waiters on the low 32 bits of `write_sequence`.
pub const FLAG_NOTIFY: u32 = 1 << 4;
/// shmstream's own CUDA IPC layout in `_gpu` (pyshmem refuses the unknown bit, as intended).
pub const FLAG_CUDA_IPC: u32 = 1 << 5;
/// Flags pyshmem 1.4.0 knows.
pub const PYSHMEM_FLAGS: u32 =
    FLAG_GPU | FLAG_CPU_MIRROR | FLAG_INSTANCE_ID | FLAG_HEADER_CRC | FLAG_NOTIFY;
/// Flags this crate knows.
pub const KNOWN_FLAGS: u32 = PYSHMEM_FLAGS | FLAG_CUDA_IPC;

/// Byte offsets of the header fields.
pub mod offset {
    /// `[u8; 8]` magic.
    pub const MAGIC: usize = 0;
    /// `u16` version (3).
    pub const VERSION: usize = 8;
    /// `u16` header size (256).
    pub const HEADER_SIZE: usize = 10;
    /// `u32` feature flags.
    pub const FLAGS: usize = 12;
    /// `u16` dtype code.
    pub const DTYPE: usize = 16;
    /// `u16` number of dimensions.
    pub const NDIM: usize = 18;
    /// `i32` CUDA device, −1 for CPU.
    pub const DEVICE_INDEX: usize = 20;
    /// `i64` pid of the creator.
    pub const CREATOR_PID: usize = 24;
    /// `u64` payload bytes.
    pub const SIZE: usize = 32;
    /// `u64` completed writes (mutable).
    pub const COUNT: usize = 40;
    /// `i64` seqlock word (mutable): even stable, odd writing, negative invalid.
    pub const WRITE_SEQUENCE: usize = 48;
    /// `f64` UNIX time of the last completed write (mutable).
    pub const WRITE_TIME: usize = 56;
    /// `i64` pid holding the write lock, 0 if none (mutable).
    pub const LOCK_OWNER_PID: usize = 64;
    /// `u32` re-entrant depth of the write lock (mutable).
    pub const LOCK_DEPTH: usize = 72;
    /// `[u8; 16]` generation id.
    pub const INSTANCE_ID: usize = 76;
    /// `u32` CRC-32 of the immutable bytes.
    pub const HEADER_CRC: usize = 92;
    /// `u64` user frame token (mutable).
    pub const FRAME_ID: usize = 96;
    /// `[u64; 19]` shape, unused entries 0.
    pub const SHAPE: usize = 104;
}

/// Byte ranges that change after creation (or hold the CRC); zeroed before hashing.
const CRC_EXCLUDED: [(usize, usize); 7] = [
    (offset::COUNT, 8),
    (offset::WRITE_SEQUENCE, 8),
    (offset::WRITE_TIME, 8),
    (offset::LOCK_OWNER_PID, 8),
    (offset::LOCK_DEPTH, 4),
    (offset::HEADER_CRC, 4),
    (offset::FRAME_ID, 8),
];

/// Why [`FormatError::Shape`] refuses `shape`.
fn shape_problem(shape: &[u64]) -> String {
    let why = match shape.iter().find(|&&d| d > i64::MAX as u64) {
        _ if shape.contains(&0) => "every dimension must be positive".to_owned(),
        Some(d) => format!("dimension {d} is more than 2^63 - 1, the largest numpy takes"),
        None => "a dimension is more than this platform addresses".to_owned(),
    };
    format!("invalid shape {shape:?}: {why}")
}

/// Why [`FormatError::Size`] refuses the stored size `found` (shape × itemsize `expected`,
/// `None` on overflow).
fn size_problem(expected: Option<u64>, found: u64) -> String {
    match expected {
        None => format!(
            "metadata size does not match shape and dtype: shape × itemsize is more than 2^64 \
             bytes (it overflows), got {found}"
        ),
        Some(e) if e != found => {
            format!("metadata size does not match shape and dtype: expected {e}, got {found}")
        }
        Some(_) => format!(
            "metadata size {found} bytes is more than this platform can map (isize::MAX bytes)"
        ),
    }
}

/// A rule of the format that a header breaks.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The segment is smaller than 512 bytes.
    #[error("metadata segment too small: expected at least {META_BYTES} bytes, got {0}")]
    TooShort(usize),
    /// Not `PYSHMEM\0`.
    #[error("bad magic (not a pyshmem v3 header)")]
    BadMagic,
    /// A version other than 3.
    #[error("unsupported metadata version {0} (this build reads version 3)")]
    Version(u16),
    /// `header_size` is not 256.
    #[error("invalid header size {0} (expected 256)")]
    HeaderSize(u16),
    /// Unknown feature bits.
    #[error("unsupported metadata flags 0x{0:x}")]
    UnknownFlags(u32),
    /// The CUDA IPC bit on a header without the GPU bit (nothing creates one).
    #[error("CUDA_IPC flag without the GPU flag (flags 0x{0:x})")]
    CudaIpcWithoutGpu(u32),
    /// The instance-id flag with a zero id.
    #[error("instance_id metadata cannot be zero")]
    ZeroInstanceId,
    /// A non-zero id without its flag.
    #[error("instance_id requires its metadata feature flag")]
    InstanceIdWithoutFlag,
    /// The name region is empty or not UTF-8.
    #[error("metadata does not contain a valid UTF-8 stream name")]
    MissingName,
    /// The stored name differs from the expected one.
    #[error("metadata name mismatch: expected '{expected}', found '{found}'")]
    NameMismatch {
        /// The name asked for.
        expected: String,
        /// The name in the segment.
        found: String,
    },
    /// Unknown dtype code.
    #[error("invalid dtype code {0} (known: 0..=13)")]
    DtypeCode(u16),
    /// `ndim` out of 1..=19.
    #[error("invalid ndim {0} (must be 1..=19)")]
    Ndim(u16),
    /// A zero dimension, or one above `i64::MAX`.
    #[error("{}", shape_problem(.0))]
    Shape(Vec<u64>),
    /// Shape entries past `ndim` must be zero.
    #[error("unused shape entries in metadata must be zero")]
    UnusedShape,
    /// `size` disagrees with shape × itemsize (or overflows), or is more than a mapping holds.
    #[error("{}", size_problem(*.expected, *.found))]
    Size {
        /// prod(shape) × itemsize, `None` on overflow.
        expected: Option<u64>,
        /// The stored size.
        found: u64,
    },
    /// A GPU stream without a device, or a CPU stream with one.
    #[error("device index {0} does not match the GPU flag")]
    DeviceIndex(i32),
    /// A CPU stream must have its host payload.
    #[error("CPU metadata requires its shared payload (CPU_MIRROR flag)")]
    NoPayload,
    /// `creator_pid` ≤ 0.
    #[error("invalid creator_pid {0}")]
    CreatorPid(i64),
    /// `write_time` negative or not finite.
    #[error("invalid write_time {0}")]
    WriteTime(f64),
    /// `lock_owner_pid` negative.
    #[error("lock metadata cannot be negative")]
    LockNegative,
    /// Owner and depth must both be zero or both be non-zero.
    #[error("lock owner and depth metadata are inconsistent")]
    LockInconsistent,
    /// The CRC does not match.
    #[error("metadata header checksum mismatch (stored 0x{stored:08x}, computed 0x{computed:08x})")]
    Crc {
        /// Stored CRC.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// A CRC without its flag.
    #[error("header_crc requires its metadata feature flag")]
    CrcWithoutFlag,
    /// A write count with no next value: a writer would wrap it to 0, and every handle
    /// that read the frame counted `u64::MAX` would wait past all later frames.
    #[error("write count {0} has no next value")]
    CountExhausted(u64),
    /// A legacy pyshmem v2 header (a 256-byte float64 block starting with 2.0, as pyshmem
    /// 1.0.x made them), which this build does not read.
    #[error("a pyshmem v2 header (this build reads version 3)")]
    LegacyV2,
}

impl FormatError {
    /// Whether the header is another pyshmem format version's rather than broken: a version
    /// other than 3 (0 is a creation's zero fill), unknown flag bits, an unknown dtype code,
    /// or a v2 header. Its remedy is a pyshmem that reads it (for a v2 one, or recreating it
    /// once nobody uses it), not an unlink at once.
    pub fn is_other_version(&self) -> bool {
        matches!(
            self,
            FormatError::Version(1..)
                | FormatError::UnknownFlags(_)
                | FormatError::DtypeCode(_)
                | FormatError::LegacyV2
        )
    }
}

/// Whether `bytes` (at least 256 of them) start as a pyshmem v2 header: the float64
/// version word 2.0 where v3 has its magic.
pub(crate) fn is_legacy_v2(bytes: &[u8]) -> bool {
    bytes.len() >= HEADER_BYTES && bytes[..8] == 2.0f64.to_le_bytes()
}

/// The decoded, validated content of a `_meta` segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// Feature flags.
    pub flags: u32,
    /// Element type.
    pub dtype: Dtype,
    /// Shape (1..=19 positive dimensions).
    pub shape: Vec<usize>,
    /// Payload bytes.
    pub size: u64,
    /// CUDA device, −1 on CPU.
    pub device_index: i32,
    /// Creator's pid.
    pub creator_pid: i64,
    /// Completed writes.
    pub count: u64,
    /// Seqlock word.
    pub write_sequence: i64,
    /// UNIX time of the last write (0 = never).
    pub write_time: f64,
    /// Lock owner pid (0 = unlocked).
    pub lock_owner_pid: i64,
    /// Lock depth.
    pub lock_depth: u32,
    /// Generation id (zero when the flag is absent).
    pub instance_id: [u8; 16],
    /// User frame token.
    pub frame_id: u64,
    /// The stream's name.
    pub name: String,
}

impl Header {
    /// Whether the stream's payload lives on a GPU.
    pub fn gpu(&self) -> bool {
        self.flags & FLAG_GPU != 0
    }
    /// Whether the stream has a host payload.
    pub fn cpu_mirror(&self) -> bool {
        self.flags & FLAG_CPU_MIRROR != 0
    }
    /// Whether writers wake futex waiters.
    pub fn notify(&self) -> bool {
        self.flags & FLAG_NOTIFY != 0
    }
}

/// What a creator chooses; the rest of a new header is zero.
#[derive(Debug, Clone)]
pub struct NewHeader<'a> {
    /// Stream name (already validated).
    pub name: &'a str,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: &'a [usize],
    /// Extra flags (NOTIFY, GPU, CPU_MIRROR, CUDA_IPC); CPU streams get CPU_MIRROR automatically.
    pub flags: u32,
    /// CUDA device or −1.
    pub device_index: i32,
    /// Creator's pid.
    pub creator_pid: i64,
    /// Random non-zero generation id.
    pub instance_id: [u8; 16],
}

/// Payload bytes for a shape, or `None` when the product overflows.
pub fn payload_bytes(shape: &[usize], dtype: Dtype) -> Option<u64> {
    shape
        .iter()
        .try_fold(dtype.itemsize() as u64, |acc, &d| acc.checked_mul(d as u64))
}

/// Encodes a new header with its CRC. The magic is included; callers that publish it last
/// write bytes `8..` first (see `segment`).
pub fn encode_new(h: &NewHeader<'_>) -> [u8; META_BYTES] {
    let mut b = [0u8; META_BYTES];
    let mut flags = h.flags | FLAG_INSTANCE_ID | FLAG_HEADER_CRC;
    if flags & FLAG_GPU == 0 {
        flags |= FLAG_CPU_MIRROR;
    }
    b[offset::MAGIC..offset::MAGIC + 8].copy_from_slice(&MAGIC);
    put(&mut b, offset::VERSION, &VERSION.to_le_bytes());
    put(
        &mut b,
        offset::HEADER_SIZE,
        &(HEADER_BYTES as u16).to_le_bytes(),
    );
    put(&mut b, offset::FLAGS, &flags.to_le_bytes());
    put(&mut b, offset::DTYPE, &h.dtype.code().to_le_bytes());
    put(&mut b, offset::NDIM, &(h.shape.len() as u16).to_le_bytes());
    put(&mut b, offset::DEVICE_INDEX, &h.device_index.to_le_bytes());
    put(&mut b, offset::CREATOR_PID, &h.creator_pid.to_le_bytes());
    let size = payload_bytes(h.shape, h.dtype).unwrap_or(0);
    put(&mut b, offset::SIZE, &size.to_le_bytes());
    put(&mut b, offset::INSTANCE_ID, &h.instance_id);
    for (i, &d) in h.shape.iter().enumerate().take(MAX_DIMS) {
        put(&mut b, offset::SHAPE + 8 * i, &(d as u64).to_le_bytes());
    }
    let name = h.name.as_bytes();
    let n = name.len().min(NAME_BYTES);
    b[HEADER_BYTES..HEADER_BYTES + n].copy_from_slice(&name[..n]);
    let crc = crc(&b);
    put(&mut b, offset::HEADER_CRC, &crc.to_le_bytes());
    b
}

/// CRC-32 (zlib) over the header with the mutable fields and the CRC zeroed, then the name region.
pub fn crc(meta: &[u8; META_BYTES]) -> u32 {
    let mut header = [0u8; HEADER_BYTES];
    header.copy_from_slice(&meta[..HEADER_BYTES]);
    for (off, len) in CRC_EXCLUDED {
        header[off..off + len].fill(0);
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header);
    hasher.update(&meta[HEADER_BYTES..]);
    hasher.finalize()
}

/// Decodes and validates a snapshot of a `_meta` segment.
///
/// `expected_name`, when given, must equal the stored name (pyshmem's rule; `list` passes
/// `None` and checks the hash instead).
pub fn decode(bytes: &[u8], expected_name: Option<&str>) -> Result<Header, FormatError> {
    if is_legacy_v2(bytes) {
        return Err(FormatError::LegacyV2);
    }
    let b: &[u8; META_BYTES] = bytes
        .get(..META_BYTES)
        .and_then(|s| s.try_into().ok())
        .ok_or(FormatError::TooShort(bytes.len()))?;
    if b[..8] != MAGIC {
        return Err(FormatError::BadMagic);
    }
    let version = u16_at(b, offset::VERSION);
    if version != VERSION {
        return Err(FormatError::Version(version));
    }
    let header_size = u16_at(b, offset::HEADER_SIZE);
    if usize::from(header_size) != HEADER_BYTES {
        return Err(FormatError::HeaderSize(header_size));
    }
    let flags = u32_at(b, offset::FLAGS);
    if flags & !KNOWN_FLAGS != 0 {
        return Err(FormatError::UnknownFlags(flags));
    }
    if flags & FLAG_CUDA_IPC != 0 && flags & FLAG_GPU == 0 {
        return Err(FormatError::CudaIpcWithoutGpu(flags));
    }
    let mut instance_id = [0u8; 16];
    instance_id.copy_from_slice(&b[offset::INSTANCE_ID..offset::INSTANCE_ID + 16]);
    if flags & FLAG_INSTANCE_ID != 0 {
        if instance_id == [0; 16] {
            return Err(FormatError::ZeroInstanceId);
        }
    } else if instance_id != [0; 16] {
        return Err(FormatError::InstanceIdWithoutFlag);
    }
    let name = stored_name(b).ok_or(FormatError::MissingName)?;
    if let Some(expected) = expected_name
        && name != expected
    {
        return Err(FormatError::NameMismatch {
            expected: expected.to_owned(),
            found: name,
        });
    }
    let code = u16_at(b, offset::DTYPE);
    let dtype = Dtype::from_code(code).ok_or(FormatError::DtypeCode(code))?;
    let ndim = u16_at(b, offset::NDIM);
    if ndim == 0 || usize::from(ndim) > MAX_DIMS {
        return Err(FormatError::Ndim(ndim));
    }
    let raw_shape: Vec<u64> = (0..MAX_DIMS)
        .map(|i| u64_at(b, offset::SHAPE + 8 * i))
        .collect();
    let (used, unused) = raw_shape.split_at(usize::from(ndim));
    // Dimensions beyond i64 are refused like zero ones: pyshmem stores them as uint64, but
    // numpy's dimensions are signed 64-bit (`npy_intp`), so no array has one.
    if used
        .iter()
        .any(|&d| d == 0 || d > i64::MAX as u64 || usize::try_from(d).is_err())
    {
        return Err(FormatError::Shape(used.to_vec()));
    }
    if unused.iter().any(|&d| d != 0) {
        return Err(FormatError::UnusedShape);
    }
    let shape: Vec<usize> = used.iter().map(|&d| d as usize).collect();
    let size = u64_at(b, offset::SIZE);
    let expected = payload_bytes(&shape, dtype);
    if expected != Some(size) || isize::try_from(size).is_err() {
        return Err(FormatError::Size {
            expected,
            found: size,
        });
    }
    let gpu = flags & FLAG_GPU != 0;
    let mirror = flags & FLAG_CPU_MIRROR != 0;
    let device_index = i32_at(b, offset::DEVICE_INDEX);
    if (gpu && device_index < 0) || (!gpu && device_index != -1) {
        return Err(FormatError::DeviceIndex(device_index));
    }
    if !gpu && !mirror {
        return Err(FormatError::NoPayload);
    }
    let creator_pid = i64_at(b, offset::CREATOR_PID);
    if creator_pid <= 0 {
        return Err(FormatError::CreatorPid(creator_pid));
    }
    let write_time = f64::from_bits(u64_at(b, offset::WRITE_TIME));
    if !write_time.is_finite() || write_time < 0.0 {
        return Err(FormatError::WriteTime(write_time));
    }
    let lock_owner_pid = i64_at(b, offset::LOCK_OWNER_PID);
    let lock_depth = u32_at(b, offset::LOCK_DEPTH);
    if lock_owner_pid < 0 {
        return Err(FormatError::LockNegative);
    }
    if (lock_owner_pid == 0) != (lock_depth == 0) {
        return Err(FormatError::LockInconsistent);
    }
    let stored = u32_at(b, offset::HEADER_CRC);
    if flags & FLAG_HEADER_CRC != 0 {
        let computed = crc(b);
        if stored != computed {
            return Err(FormatError::Crc { stored, computed });
        }
    } else if stored != 0 {
        return Err(FormatError::CrcWithoutFlag);
    }
    Ok(Header {
        flags,
        dtype,
        shape,
        size,
        device_index,
        creator_pid,
        count: u64_at(b, offset::COUNT),
        write_sequence: i64_at(b, offset::WRITE_SEQUENCE),
        write_time,
        lock_owner_pid,
        lock_depth,
        instance_id,
        frame_id: u64_at(b, offset::FRAME_ID),
        name,
    })
}

/// The UTF-8 name in the name region (up to the first NUL), if any.
pub fn stored_name(meta: &[u8]) -> Option<String> {
    let region = meta.get(HEADER_BYTES..META_BYTES)?;
    let end = region.iter().position(|&c| c == 0).unwrap_or(region.len());
    if end == 0 {
        return None;
    }
    std::str::from_utf8(&region[..end]).ok().map(str::to_owned)
}

/// Whether `bytes`, a header that broke `rule`, breaks only the lock-stamp rule: `rule` is
/// [`FormatError::LockInconsistent`] and the header is valid with both stamps zeroed (what
/// a writer killed between its two stamps leaves). Only such stamps may be cleared: a
/// look-alike that breaks another rule too (a bad CRC, checked after the stamps) is left
/// as it is.
pub(crate) fn valid_but_for_lock_stamps(
    bytes: &[u8],
    expected_name: Option<&str>,
    rule: &FormatError,
) -> bool {
    if *rule != FormatError::LockInconsistent || bytes.len() < META_BYTES {
        return false;
    }
    let mut cleared = bytes[..META_BYTES].to_vec();
    cleared[offset::LOCK_OWNER_PID..offset::LOCK_OWNER_PID + 8].fill(0);
    cleared[offset::LOCK_DEPTH..offset::LOCK_DEPTH + 4].fill(0);
    decode(&cleared, expected_name).is_ok()
}

/// Whether a header that breaks `rule` may be one pyshmem 1.4.0's `create` is still writing
/// in place, under the name's lock: zeros before its magic, then the version and header
/// size, the instance id before its flag, the name after those, the CRC flag before the CRC
/// (`stored` 0). A creation never leaves any other rule broken: those are broken for good.
pub(crate) fn may_be_mid_creation(rule: &FormatError) -> bool {
    matches!(
        rule,
        FormatError::BadMagic
            | FormatError::MissingName
            | FormatError::Version(0)
            | FormatError::HeaderSize(0)
            | FormatError::InstanceIdWithoutFlag
            | FormatError::Crc { stored: 0, .. }
    )
}

fn put(b: &mut [u8], off: usize, v: &[u8]) {
    b[off..off + v.len()].copy_from_slice(v);
}
fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap_or([0; 4]))
}
fn i32_at(b: &[u8], off: usize) -> i32 {
    i32::from_le_bytes(b[off..off + 4].try_into().unwrap_or([0; 4]))
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap_or([0; 8]))
}
fn i64_at(b: &[u8], off: usize) -> i64 {
    i64::from_le_bytes(b[off..off + 8].try_into().unwrap_or([0; 8]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_new() -> NewHeader<'static> {
        NewHeader {
            name: "cam0",
            dtype: Dtype::F32,
            shape: &[480, 640],
            flags: FLAG_NOTIFY,
            device_index: -1,
            creator_pid: 1234,
            instance_id: [7; 16],
        }
    }

    fn sample() -> [u8; META_BYTES] {
        encode_new(&sample_new())
    }

    fn set(b: &mut [u8; META_BYTES], off: usize, v: &[u8]) {
        b[off..off + v.len()].copy_from_slice(v);
    }

    /// Re-stamps the CRC so a test reaches the rule it targets.
    fn recrc(b: &mut [u8; META_BYTES]) {
        let c = crc(b);
        set(b, offset::HEADER_CRC, &c.to_le_bytes());
    }

    /// The shape and size errors print numbers and say what is wrong: they printed
    /// "expected Some(48)" or "expected None" (an overflow), and called a dimension above
    /// `i64::MAX` not positive.
    #[test]
    fn shape_and_size_errors_say_what_is_wrong_in_numbers() {
        let text = |shape: [u64; 2], size: Option<u64>| {
            let mut b = sample();
            set(&mut b, offset::SHAPE, &shape[0].to_le_bytes());
            set(&mut b, offset::SHAPE + 8, &shape[1].to_le_bytes());
            if let Some(size) = size {
                set(&mut b, offset::SIZE, &size.to_le_bytes());
            }
            recrc(&mut b);
            decode(&b, Some("cam0")).unwrap_err().to_string()
        };
        assert_eq!(
            text([480, 640], Some(12)),
            "metadata size does not match shape and dtype: expected 1228800, got 12"
        );
        assert_eq!(
            text([1 << 40, 1 << 40], None),
            "metadata size does not match shape and dtype: shape × itemsize is more than 2^64 \
             bytes (it overflows), got 1228800"
        );
        assert_eq!(
            text([1 << 61, 1], Some(1 << 63)),
            "metadata size 9223372036854775808 bytes is more than this platform can map \
             (isize::MAX bytes)"
        );
        assert_eq!(
            text([1 << 63, 640], None),
            "invalid shape [9223372036854775808, 640]: dimension 9223372036854775808 is more \
             than 2^63 - 1, the largest numpy takes"
        );
        assert_eq!(
            text([0, 640], None),
            "invalid shape [0, 640]: every dimension must be positive"
        );
    }

    #[test]
    fn round_trip() {
        let h = decode(&sample(), Some("cam0")).expect("valid");
        assert_eq!(h.shape, vec![480, 640]);
        assert_eq!(h.dtype, Dtype::F32);
        assert_eq!(h.size, 480 * 640 * 4);
        assert!(h.notify() && h.cpu_mirror() && !h.gpu());
        assert_eq!(
            h.flags,
            FLAG_NOTIFY | FLAG_CPU_MIRROR | FLAG_INSTANCE_ID | FLAG_HEADER_CRC
        );
        assert_eq!(h.creator_pid, 1234);
        assert_eq!(h.instance_id, [7; 16]);
        assert_eq!(h.name, "cam0");
        assert_eq!(h.device_index, -1);
    }

    /// A header made without NOTIFY says so, and carries only the flags a creation adds.
    #[test]
    fn a_header_without_notify_says_so() {
        let b = encode_new(&NewHeader {
            flags: 0,
            ..sample_new()
        });
        let h = decode(&b, Some("cam0")).expect("valid");
        assert!(!h.notify() && h.cpu_mirror() && !h.gpu());
        assert_eq!(
            h.flags,
            FLAG_CPU_MIRROR | FLAG_INSTANCE_ID | FLAG_HEADER_CRC
        );
    }

    /// Nineteen dimensions, the most the shape table holds, round-trip; the twentieth is
    /// `Ndim` (tested with the other rules).
    #[test]
    fn nineteen_dimensions_are_the_most_a_header_holds() {
        let shape = [1usize; MAX_DIMS];
        let b = encode_new(&NewHeader {
            shape: &shape,
            ..sample_new()
        });
        let h = decode(&b, Some("cam0")).expect("19 dimensions are valid");
        assert_eq!(h.shape, shape.to_vec());
        assert_eq!(h.size, 4);
    }

    /// The lock-stamp check takes a snapshot of any length: a short one (a `_meta` truncated
    /// under the reader) is not "valid but for its stamps", and a longer one is judged by
    /// its first 512 bytes.
    #[test]
    fn the_lock_stamp_check_takes_snapshots_of_any_length() {
        let mut stamped = sample();
        set(&mut stamped, offset::LOCK_OWNER_PID, &5i64.to_le_bytes());
        let rule = FormatError::LockInconsistent;
        assert!(valid_but_for_lock_stamps(&stamped, Some("cam0"), &rule));
        let mut longer = stamped.to_vec();
        longer.extend_from_slice(&[0xaa; 64]);
        assert!(valid_but_for_lock_stamps(&longer, Some("cam0"), &rule));
        assert!(!valid_but_for_lock_stamps(
            &stamped[..300],
            Some("cam0"),
            &rule
        ));
        assert!(!valid_but_for_lock_stamps(
            &stamped,
            Some("cam0"),
            &FormatError::BadMagic
        ));
    }

    #[test]
    fn mutable_fields_do_not_change_the_crc() {
        let mut b = sample();
        let before = crc(&b);
        set(&mut b, offset::COUNT, &5u64.to_le_bytes());
        set(&mut b, offset::WRITE_SEQUENCE, &10i64.to_le_bytes());
        set(&mut b, offset::WRITE_TIME, &1.5f64.to_le_bytes());
        set(&mut b, offset::LOCK_OWNER_PID, &99i64.to_le_bytes());
        set(&mut b, offset::LOCK_DEPTH, &1u32.to_le_bytes());
        set(&mut b, offset::FRAME_ID, &77u64.to_le_bytes());
        assert_eq!(crc(&b), before);
        assert!(decode(&b, Some("cam0")).is_ok());
    }

    /// A pyshmem v2 header (32 float64s, 2.0 first) is its own rule, as are the rules that
    /// mean another format version; a creation's zero version is not one.
    #[test]
    fn a_v2_header_and_other_versions_are_told_apart() {
        let v2: Vec<u8> = std::iter::once(2.0f64)
            .chain(std::iter::repeat_n(0.0, 31))
            .flat_map(f64::to_le_bytes)
            .collect();
        assert_eq!(decode(&v2, None), Err(FormatError::LegacyV2));
        assert_eq!(decode(&v2[..100], None), Err(FormatError::TooShort(100)));
        for other in [
            FormatError::LegacyV2,
            FormatError::Version(4),
            FormatError::UnknownFlags(1 << 9),
            FormatError::DtypeCode(14),
        ] {
            assert!(other.is_other_version(), "{other:?}");
        }
        for broken in [
            FormatError::Version(0),
            FormatError::BadMagic,
            FormatError::Ndim(0),
        ] {
            assert!(!broken.is_other_version(), "{broken:?}");
        }
    }

    #[test]
    fn every_rule_rejects_a_header_that_breaks_it() {
        type Breaker = fn(&mut [u8; META_BYTES]);
        type Check = fn(&FormatError) -> bool;
        let cases: Vec<(&str, Breaker, Check)> = vec![
            (
                "magic",
                |b| b[0] = b'X',
                |e| matches!(e, FormatError::BadMagic),
            ),
            (
                "version",
                |b| set(b, offset::VERSION, &2u16.to_le_bytes()),
                |e| matches!(e, FormatError::Version(2)),
            ),
            (
                "header size",
                |b| set(b, offset::HEADER_SIZE, &128u16.to_le_bytes()),
                |e| matches!(e, FormatError::HeaderSize(128)),
            ),
            (
                "flags",
                |b| {
                    set(
                        b,
                        offset::FLAGS,
                        &(1u32 << 9 | FLAG_CPU_MIRROR).to_le_bytes(),
                    )
                },
                |e| matches!(e, FormatError::UnknownFlags(_)),
            ),
            (
                "cuda ipc without gpu",
                |b| {
                    let f = u32_at(b, offset::FLAGS) | FLAG_CUDA_IPC;
                    set(b, offset::FLAGS, &f.to_le_bytes())
                },
                |e| matches!(e, FormatError::CudaIpcWithoutGpu(_)),
            ),
            (
                "zero id",
                |b| b[offset::INSTANCE_ID..offset::INSTANCE_ID + 16].fill(0),
                |e| matches!(e, FormatError::ZeroInstanceId),
            ),
            (
                "id without flag",
                |b| {
                    let f = u32_at(b, offset::FLAGS) & !FLAG_INSTANCE_ID;
                    set(b, offset::FLAGS, &f.to_le_bytes())
                },
                |e| matches!(e, FormatError::InstanceIdWithoutFlag),
            ),
            (
                "name missing",
                |b| b[HEADER_BYTES..].fill(0),
                |e| matches!(e, FormatError::MissingName),
            ),
            (
                "name not utf8",
                |b| b[HEADER_BYTES] = 0xff,
                |e| matches!(e, FormatError::MissingName),
            ),
            (
                "name",
                |b| b[HEADER_BYTES] = b'x',
                |e| matches!(e, FormatError::NameMismatch { .. }),
            ),
            (
                "dtype",
                |b| set(b, offset::DTYPE, &14u16.to_le_bytes()),
                |e| matches!(e, FormatError::DtypeCode(14)),
            ),
            (
                "ndim 0",
                |b| set(b, offset::NDIM, &0u16.to_le_bytes()),
                |e| matches!(e, FormatError::Ndim(0)),
            ),
            (
                "ndim 20",
                |b| set(b, offset::NDIM, &20u16.to_le_bytes()),
                |e| matches!(e, FormatError::Ndim(20)),
            ),
            (
                "zero dim",
                |b| set(b, offset::SHAPE, &0u64.to_le_bytes()),
                |e| matches!(e, FormatError::Shape(_)),
            ),
            (
                "unused shape",
                |b| set(b, offset::SHAPE + 8 * 5, &3u64.to_le_bytes()),
                |e| matches!(e, FormatError::UnusedShape),
            ),
            (
                "size",
                |b| set(b, offset::SIZE, &12u64.to_le_bytes()),
                |e| matches!(e, FormatError::Size { .. }),
            ),
            (
                "size overflow",
                |b| {
                    set(b, offset::SHAPE, &(1u64 << 40).to_le_bytes());
                    set(b, offset::SHAPE + 8, &(1u64 << 40).to_le_bytes());
                },
                |e| matches!(e, FormatError::Size { expected: None, .. }),
            ),
            (
                "cpu device",
                |b| set(b, offset::DEVICE_INDEX, &0i32.to_le_bytes()),
                |e| matches!(e, FormatError::DeviceIndex(0)),
            ),
            (
                "gpu device",
                |b| {
                    let f = u32_at(b, offset::FLAGS) | FLAG_GPU;
                    set(b, offset::FLAGS, &f.to_le_bytes())
                },
                |e| matches!(e, FormatError::DeviceIndex(-1)),
            ),
            (
                "no payload",
                |b| {
                    let f = u32_at(b, offset::FLAGS) & !FLAG_CPU_MIRROR;
                    set(b, offset::FLAGS, &f.to_le_bytes())
                },
                |e| matches!(e, FormatError::NoPayload),
            ),
            (
                "creator",
                |b| set(b, offset::CREATOR_PID, &0i64.to_le_bytes()),
                |e| matches!(e, FormatError::CreatorPid(0)),
            ),
            (
                "write time nan",
                |b| set(b, offset::WRITE_TIME, &f64::NAN.to_le_bytes()),
                |e| matches!(e, FormatError::WriteTime(_)),
            ),
            (
                "write time negative",
                |b| set(b, offset::WRITE_TIME, &(-1.0f64).to_le_bytes()),
                |e| matches!(e, FormatError::WriteTime(_)),
            ),
            (
                "lock negative",
                |b| set(b, offset::LOCK_OWNER_PID, &(-3i64).to_le_bytes()),
                |e| matches!(e, FormatError::LockNegative),
            ),
            (
                "lock inconsistent",
                |b| set(b, offset::LOCK_OWNER_PID, &5i64.to_le_bytes()),
                |e| matches!(e, FormatError::LockInconsistent),
            ),
            (
                "crc",
                |b| set(b, offset::CREATOR_PID, &4321i64.to_le_bytes()),
                |e| matches!(e, FormatError::Crc { .. }),
            ),
            (
                "crc without flag",
                |b| {
                    let f = u32_at(b, offset::FLAGS) & !FLAG_HEADER_CRC;
                    set(b, offset::FLAGS, &f.to_le_bytes())
                },
                |e| matches!(e, FormatError::CrcWithoutFlag),
            ),
        ];
        for (rule, breaker, expected) in cases {
            let mut b = sample();
            breaker(&mut b);
            if rule != "crc" && rule != "crc without flag" {
                recrc(&mut b);
            }
            let err = decode(&b, Some("cam0")).expect_err(rule);
            assert!(expected(&err), "rule {rule}: got {err:?}");
        }
        assert!(matches!(
            decode(&sample()[..100], None),
            Err(FormatError::TooShort(100))
        ));
    }
}
