//! GPU streams: the payload lives in one device allocation shared between processes by
//! CUDA IPC; the stream header, seqlock, write lock and futex waits stay exactly the CPU ones.
//!
//! - Driver-free (always compiled, unit tested here): [`GPU_SUPPORTED_DTYPES`], device names,
//!   the `_gpu` segment [`layout`], the per-process attachment registry, [`gpu_available`] and
//!   [`device_count`] (which never panic when no driver is installed).
//! - Feature `cuda`: the driver side (`driver.rs`: contexts, the IPC-capable allocation, its
//!   interprocess event, attaching) and the device reads and writes (`ops.rs`), which run
//!   inside the stream's one publication bracket and its one read loop.
//!
//! # Modes
//! - **No mirror** (default): the payload exists only on the device. A handle without a
//!   driver can read metadata and take the lock; payload reads and all writes are a clear
//!   error naming the fix.
//! - **CPU mirror** (`StreamOptions::cpu_mirror(true)`): the host payload is kept current
//!   inside every write's bracket, so CPU-only readers work. Cost: every write also copies
//!   the frame across PCIe (device→host for device-side writes; a host memcpy for writes from
//!   a host slice), and the writer waits for that copy before publishing.
//!
//! # Producer lifetime contract
//! The device allocation belongs to the process that created the stream. It lives while
//! that process holds at least one handle on the stream (the creating one or any it opened
//! later); when its last handle closes, the allocation is freed and the `_gpu` segment is
//! marked released. Consumers in other processes must therefore be done before the producer
//! closes or exits. A consumer that opens a stream whose producer released it or died gets
//! [`crate::Error::Gpu`] naming the producer pid (payload operations report it;
//! metadata and locking still work); a consumer already attached when the producer dies keeps
//! whatever the driver keeps mapped and never crashes: failed device copies come back as errors.
//!
//! # Ordering
//! Each handle has its own CUDA stream. A writer does its device work on it; where the probe
//! allows (the default), the stream itself stores the even sequence after that work
//! (GPU-side publication, `on_stream.rs`), else the host waits for the stream
//! (`cuStreamSynchronize`, never the whole device) and stores it; either way a published frame
//! is complete in device memory. GPU consumers (`consumer.rs`) wait, read and acknowledge on
//! their own CUDA stream. A reader copies on its own stream, waits for
//! its copy, then re-checks the sequence: a write that overlapped the copy is detected and the
//! read retried, as on the CPU. Ordering through the interprocess event instead
//! (`cuStreamWaitEvent`, no host wait for device-side writes) is an opt-in,
//! `SHMSTREAM_GPU_IPC_EVENT=1` in every process, because it measured ~150 us per hop (see
//! `reports/gpu-h200/README.md`); GPU consumers refuse it. Without MPS, device work of two
//! processes on one GPU is time-sliced (~150 us per switch); run GPU producer/consumer pairs
//! under MPS.

use std::time::Duration;

use crate::backoff::{Backoff, Sleeps, poll_with};
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::format::Header;
use crate::segment::Segment;

pub mod layout;
pub mod probe;
// Used by the CUDA paths; its logic is tested without a driver.
#[cfg(any(feature = "cuda", test))]
pub(crate) mod registry;
pub mod slots;

#[cfg(feature = "cuda")]
mod consumer;
#[cfg(feature = "cuda")]
pub(crate) mod driver;
#[cfg(feature = "cuda")]
mod on_stream;
#[cfg(feature = "cuda")]
mod ops;
#[cfg(feature = "cuda")]
pub(crate) mod publish;

#[cfg(feature = "cuda")]
pub use consumer::GpuConsumer;
/// cudarc, re-exported so users build device buffers with the same version.
#[cfg(feature = "cuda")]
pub use cudarc;
#[cfg(feature = "cuda")]
pub use ops::{DeviceView, DeviceViewMut};

/// Whether a CUDA driver is loadable and reports at least one device. Never panics, also
/// when no driver or library is installed (the library is probed before any driver call).
/// Always false without the `cuda` feature.
pub fn gpu_available() -> bool {
    device_count() > 0
}

/// CUDA devices the driver reports; 0 when no driver is loadable (never panics).
pub fn device_count() -> usize {
    #[cfg(feature = "cuda")]
    {
        driver::probe().unwrap_or(0)
    }
    #[cfg(not(feature = "cuda"))]
    {
        0
    }
}

/// Why GPU streams cannot be used in this process, or `None` when they can.
pub fn unavailable_reason() -> Option<String> {
    #[cfg(feature = "cuda")]
    {
        driver::probe().err()
    }
    #[cfg(not(feature = "cuda"))]
    {
        Some("this build has no CUDA support (the `cuda` feature is off)".into())
    }
}

/// The publication path GPU-side writes on `device` would use, and why: probed once per
/// process (attributes 122/99/19 and one trial stream write). Never panics: without a driver
/// it is the synchronize path with the reason.
pub fn publish_path(device: i32) -> probe::PathChoice {
    #[cfg(feature = "cuda")]
    {
        match driver::probe() {
            Ok(_) => publish::path_for(device),
            Err(reason) => probe::PathChoice {
                path: probe::PublishPath::HostSync,
                reason,
            },
        }
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = device;
        probe::PathChoice {
            path: probe::PublishPath::HostSync,
            reason: unavailable_reason().unwrap_or_default(),
        }
    }
}

/// A stream handle's link to its device payload.
#[derive(Debug, Default)]
pub(crate) enum GpuLink {
    /// A CPU stream.
    #[default]
    None,
    /// A GPU stream this handle cannot reach: why (no driver, producer gone, ...).
    Detached(String),
    /// The device payload, attached.
    #[cfg(feature = "cuda")]
    Attached(Box<driver::Attachment>),
}

impl GpuLink {
    /// The reason payload operations fail on a detached GPU stream.
    pub(crate) fn detached_reason(&self) -> Option<&str> {
        match self {
            GpuLink::Detached(r) => Some(r),
            _ => None,
        }
    }
}

/// Opens and decodes a stream's `_gpu` segment, checked against its header.
/// Mapped writable whatever the handle (as `_meta` is): the creating process's last handle,
/// read-only or not, marks the allocation released there, and any handle's settle releases a
/// dead GPU consumer; stores into a read-only mapping would fault. Only the record's bytes
/// are mapped.
#[cfg(feature = "cuda")]
pub(crate) fn read_record(
    name: &str,
    h: &Header,
) -> std::result::Result<(Segment, layout::GpuRecord), String> {
    if h.flags & crate::format::FLAG_CUDA_IPC == 0 {
        return Err("it was created by pyshmem (torch IPC pickle), which this library does not read; create GPU streams with shmstream".into());
    }
    let id = crate::name::gpu_id(name);
    let seg =
        Segment::open_prefix(&id, true, layout::GPU_SEGMENT_BYTES).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                "its `_gpu` segment is missing (the stream was unlinked or is still being created)"
                    .to_owned()
            }
            _ => format!("opening its `_gpu` segment failed: {e}"),
        })?;
    let rec =
        layout::decode(&seg.snapshot(layout::GPU_SEGMENT_BYTES)).map_err(|e| e.to_string())?;
    layout::matches_header(&rec, h)?;
    Ok((seg, rec))
}

/// Attaches a GPU stream at open; never fails (a detached link carries the reason).
pub(crate) fn attach_at_open(name: &str, h: &Header) -> GpuLink {
    if !h.gpu() {
        return GpuLink::None;
    }
    #[cfg(feature = "cuda")]
    {
        match driver::attach(name, h) {
            Ok(a) => GpuLink::Attached(Box::new(a)),
            Err(r) => GpuLink::Detached(r),
        }
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = name;
        GpuLink::Detached("this build has no CUDA support (the `cuda` feature is off)".into())
    }
}

/// The error for a GPU payload operation on a handle without a device attachment.
pub(crate) fn detached_error(name: &str, reason: &str) -> Error {
    Error::Gpu {
        name: name.to_owned(),
        reason: format!("this handle has no access to the device payload: {reason}"),
    }
}

/// Publish hook, before the bracket opens: a GPU stream is written only through its device
/// payload (a CPU-only writer would leave the device stale), and not through the handle
/// that holds its GPU consumer.
#[inline]
pub(crate) fn check_writable(s: &crate::stream::Stream) -> Result<()> {
    match &s.gpu {
        GpuLink::Detached(r) => Err(detached_error(&s.name, r)),
        #[cfg(feature = "cuda")]
        GpuLink::Attached(a) => s.refuse_while_consuming(a),
        GpuLink::None => Ok(()),
    }
}

/// Whether `s` is a CPU stream: no device payload that a publication keeps in step with
/// the host one ([`after_fill`]).
#[inline]
pub(crate) fn is_cpu(s: &crate::stream::Stream) -> bool {
    matches!(s.gpu, GpuLink::None)
}

/// Publish hook, after the fill and before the even sequence: a CPU fill of a mirrored GPU
/// stream is uploaded to the device (GPU fills did their own device work and set the flag).
#[inline]
pub(crate) fn after_fill(s: &crate::stream::Stream, host: *mut u8) -> Result<()> {
    match &s.gpu {
        #[cfg(feature = "cuda")]
        GpuLink::Attached(a) => ops::after_fill(s, a, host),
        _ => {
            let _ = host;
            Ok(())
        }
    }
}

/// Publish hook before the bracket opens (write lock held): on a GPU stream, waits for a
/// previous GPU-side publication to land and says whether this one is published by the
/// writer's CUDA stream ([`on_stream`]).
#[inline]
pub(crate) fn begin_publication(s: &crate::stream::Stream) -> Result<bool> {
    match &s.gpu {
        #[cfg(feature = "cuda")]
        GpuLink::Attached(a) => on_stream::begin(s, a),
        _ => Ok(false),
    }
}

/// Before the payload is lent under the write lock ([`WriteGuard::live`],
/// [`WriteGuard::device_view`]): the lock is released while a GPU-side publication is still
/// landing (its CUDA stream copies the frame, then stores the even sequence), so wait for it;
/// the view would otherwise alias memory the copy engine writes. A handle without the device
/// waits for another process's landing too ([`wait_for_landing_detached`]).
///
/// [`WriteGuard::live`]: crate::WriteGuard::live
/// [`WriteGuard::device_view`]: crate::WriteGuard::device_view
pub(crate) fn wait_for_landing(s: &crate::stream::Stream) -> Result<()> {
    match &s.gpu {
        #[cfg(feature = "cuda")]
        GpuLink::Attached(a) => on_stream::wait_for_landing(s, a),
        _ => wait_for_landing_detached(s),
    }
}

/// [`wait_for_landing`] on a handle without a device attachment (no CUDA, or a build without
/// `cuda`) of a GPU stream: an odd sequence whose `_gpu` publisher is alive is another
/// process's GPU-side publication still landing, not an aborted write. Waits up to the
/// handle's timeout for the even value, as readers do; the publisher is asked again every
/// [`LANDING_PROBE`] (each ask maps `_gpu` afresh). A publisher gone meanwhile leaves the
/// bracket to the caller's check.
fn wait_for_landing_detached(s: &crate::stream::Stream) -> Result<()> {
    use std::sync::atomic::Ordering::Acquire;
    use std::time::Instant;
    let seq = s.header.sequence().load(Acquire);
    if seq <= 0 || seq & 1 == 0 || !publication_landing(s) {
        return Ok(());
    }
    let timeout = s.default_timeout();
    let deadline = crate::deadline::after(Instant::now(), Some(timeout));
    let mut backoff = Backoff::yielding_rounds(
        64,
        Sleeps::new(Duration::from_micros(5), Duration::from_millis(1)),
    );
    let mut probe_at = Instant::now() + LANDING_PROBE;
    let over = poll_with(&mut backoff, deadline, || {
        if s.header.sequence().load(Acquire) != seq {
            return Some(());
        }
        let now = Instant::now();
        if now < probe_at {
            return None;
        }
        probe_at = now + LANDING_PROBE;
        (!publication_landing(s)).then_some(())
    });
    // A landing in the last moments is a landing, not a timeout.
    if over.is_some() || s.header.sequence().load(Acquire) != seq || !publication_landing(s) {
        return Ok(());
    }
    // Its CUDA stream may wait for the stream's GPU consumer to acknowledge the frame before.
    let consumer = segment_bytes(&s.name)
        .and_then(|b| layout::consumer_pid(&b))
        .unwrap_or(0);
    let awaited = if consumer != 0 && crate::sys::is_self_or_running(consumer) {
        crate::Awaited::GpuPublisherAndConsumer
    } else {
        crate::Awaited::GpuPublisher
    };
    Err(Error::Timeout {
        name: s.name.clone(),
        op: "lend a live view (another process's GPU-side publication has yet to land: its CUDA stream has not stored the even sequence)",
        awaited,
        timeout,
    })
}

/// How often [`wait_for_landing_detached`] asks whether the publisher is still alive.
const LANDING_PROBE: Duration = Duration::from_millis(10);

/// Publish hook that ends a bracket: metadata, count and the even sequence, by the host or
/// (`on_gpu`, as [`begin_publication`] said) by the writer's CUDA stream; on a GPU stream the
/// `_gpu` segment's published frame follows the even sequence (GPU consumers wait on it).
#[inline]
pub(crate) fn end_publication(
    s: &crate::stream::Stream,
    b: crate::seqlock::Bracket,
    write_time: f64,
    frame_id: Option<u64>,
    on_gpu: bool,
) {
    match &s.gpu {
        #[cfg(feature = "cuda")]
        GpuLink::Attached(a) if on_gpu => on_stream::end(s, a, b, write_time, frame_id),
        #[cfg(feature = "cuda")]
        GpuLink::Attached(a) => {
            let even = b.even() as u64;
            crate::seqlock::end_write(&s.header, b, write_time, frame_id);
            on_stream::published_on_host(a, even);
        }
        _ => {
            let _ = on_gpu;
            crate::seqlock::end_write(&s.header, b, write_time, frame_id);
        }
    }
}

/// After a handle is opened or created: a writable handle with a device attachment decides
/// its publication path now (`on_stream::path`), registering the host memory its GPU-side
/// work addresses: the CPU mirror first; then, only where the path is to be `gpu-stream`
/// (the handle's path from the device's, with the mirror, if any, registered), the
/// header's sequence word; and in any case the `_gpu` segment's words (publication and GPU
/// consumers). Registering host memory waits for the work in flight on the device (a GPU
/// check saw a first write's registration wait forever behind a GPU consumer of the same
/// process that was waiting for that very write), so it is done before any wait is
/// enqueued, not on first use. The pinned staging buffer of host writes is allocated on
/// first use (under the write lock), which may wait the same way: a process makes each
/// handle's first host write and read before it enqueues consumer waits.
pub(crate) fn prepare(s: &crate::stream::Stream) {
    #[cfg(feature = "cuda")]
    if let GpuLink::Attached(a) = &s.gpu
        && !s.readonly
    {
        let _ = on_stream::path(s, a);
        let _ = a.seg_device_ptr(layout::gpu_offset::CONSUMER_ACK);
    }
    #[cfg(not(feature = "cuda"))]
    let _ = s;
}

/// Waits (up to the handle's timeout) for the work this handle queued on its CUDA stream:
/// before a failed fill's abort, and before the creator's auto-unlink marks the generation
/// invalid (a publication landing after that mark would overwrite it, and other handles
/// would learn of the unlink only from its `_meta`'s link count).
pub(crate) fn settle(s: &crate::stream::Stream) {
    #[cfg(feature = "cuda")]
    if let GpuLink::Attached(a) = &s.gpu {
        on_stream::settle(s, a);
    }
    #[cfg(not(feature = "cuda"))]
    let _ = s;
}

/// Whether an odd sequence is a GPU-side publication still landing rather than a writer
/// that died mid-write (readers check before they mark a write abandoned). A handle without
/// a device attachment (a CPU reader of the mirror, a process without CUDA) reads the
/// `_gpu` segment's publisher word from a fresh mapping: this runs only when a write looks
/// abandoned. A `_gpu` segment this process cannot open for want of descriptors or memory
/// says nothing: that is taken for a landing (the reader tries again, up to its timeout);
/// one it can never open (refused, denied, too short) names no publisher.
pub(crate) fn publication_landing(s: &crate::stream::Stream) -> bool {
    let publisher = match &s.gpu {
        GpuLink::None => return false,
        #[cfg(feature = "cuda")]
        GpuLink::Attached(a) => a.publisher_pid().load(std::sync::atomic::Ordering::Acquire),
        GpuLink::Detached(_) => match read_segment(&s.name) {
            Ok(b) => layout::publisher_pid(&b).unwrap_or(0),
            Err(e) if crate::error::out_of_resources(&e) => return true,
            Err(_) => 0,
        },
    };
    probe::judge_odd(publisher, crate::sys::is_self_or_running) == probe::OddSequence::Landing
}

/// The bytes of stream `name`'s `_gpu` segment, read from a fresh read-only mapping (its
/// mutable words: the publisher and the GPU consumer, see [`layout`]); `None` when the segment
/// cannot be read.
pub(crate) fn segment_bytes(name: &str) -> Option<Vec<u8>> {
    read_segment(name).ok()
}

/// [`segment_bytes`], with the error of the open.
fn read_segment(name: &str) -> std::io::Result<Vec<u8>> {
    let seg = Segment::open_prefix(&crate::name::gpu_id(name), false, layout::GPU_SEGMENT_BYTES)?;
    Ok(seg.snapshot(layout::GPU_SEGMENT_BYTES))
}

impl crate::stream::Stream {
    /// How this handle's writes are published, and why: `gpu-stream` (the writer's CUDA stream
    /// stores the even sequence; the host does not wait for the copy) or `host-sync` (the host
    /// waits for the stream, then stores it; except that a device-side write to a stream
    /// without a CPU mirror under `SHMSTREAM_GPU_IPC_EVENT=1` stores it at once, readers'
    /// copies waiting on the interprocess event recorded after the copy). `None` for a CPU
    /// stream or a handle without a device attachment.
    pub fn gpu_publish_path(&self) -> Option<probe::PathChoice> {
        match &self.gpu {
            #[cfg(feature = "cuda")]
            GpuLink::Attached(a) => Some(on_stream::path(self, a).choice.clone()),
            _ => None,
        }
    }
}

/// Element types a GPU stream may hold (pyshmem's torch-backed set: no unsigned types wider
/// than 8 bits).
pub const GPU_SUPPORTED_DTYPES: [Dtype; 11] = [
    Dtype::I8,
    Dtype::I16,
    Dtype::I32,
    Dtype::I64,
    Dtype::U8,
    Dtype::F16,
    Dtype::F32,
    Dtype::F64,
    Dtype::Bool,
    Dtype::Complex64,
    Dtype::Complex128,
];

/// Refuses a dtype GPU streams cannot hold.
pub(crate) fn check_gpu_dtype(name: &str, dtype: Dtype) -> Result<()> {
    if GPU_SUPPORTED_DTYPES.contains(&dtype) {
        return Ok(());
    }
    let list: Vec<_> = GPU_SUPPORTED_DTYPES
        .iter()
        .map(|d| d.numpy_name())
        .collect();
    Err(Error::Unsupported {
        name: name.to_owned(),
        what: format!(
            "dtype {dtype} is not supported on GPU streams (supported: {})",
            list.join(", ")
        ),
    })
}

/// Parses `"cuda:N"`, `"cudaN"` or `"N"` (decimal digits only: no sign) into a device
/// ordinal, and `"cuda"` into 0; anything else, `""` and `"cuda:"` included, is refused.
pub(crate) fn parse_device(name: &str, device: &str) -> Result<i32> {
    let s = device.trim();
    let digits = match s {
        "cuda" => "0",
        _ => s
            .strip_prefix("cuda:")
            .or_else(|| s.strip_prefix("cuda"))
            .unwrap_or(s),
    };
    // `i32::from_str` takes a leading `+` and an empty string is no ordinal.
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse::<i32>().ok())
        .flatten()
        .ok_or_else(|| Error::Unsupported {
            name: name.to_owned(),
            what: format!(
                "invalid GPU device {device:?}: use \"cuda:N\" or a non-negative ordinal"
            ),
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A device name that is none is said with the name given, and before any other
    /// setting's remedy (history without a mirror), which needs a device first.
    #[test]
    fn a_bad_device_name_is_said_as_given_before_other_settings() {
        let name = format!("gpu-badname-{}", std::process::id());
        for history in [0, 2] {
            let e = crate::StreamOptions::new(&name)
                .shape(&[4])
                .history(history)
                .device("gpu7")
                .create()
                .unwrap_err();
            assert!(
                matches!(&e, Error::Unsupported { what, .. } if what.contains("\"gpu7\"") && what.contains("cuda:N")),
                "history {history}: {e:?}"
            );
        }
        // A later good name, or an ordinal, replaces it.
        let mut o = crate::StreamOptions::new(&name);
        o.device("gpu7").gpu_device(0);
        assert_eq!(o.gpu_device, Some(Ok(0)));
        let e = crate::StreamOptions::new(&name)
            .gpu_device(-3)
            .create()
            .unwrap_err();
        assert!(
            matches!(&e, Error::Unsupported { what, .. } if what.contains("invalid GPU device -3")),
            "{e:?}"
        );
        assert!(matches!(crate::stat(&name), Err(Error::NotFound { .. })));
    }

    #[test]
    fn device_names_parse() {
        assert_eq!(parse_device("s", "cuda:1").unwrap(), 1);
        assert_eq!(parse_device("s", "0").unwrap(), 0);
        assert_eq!(parse_device("s", "cuda").unwrap(), 0);
        assert!(parse_device("s", "cuda:-1").is_err());
        assert!(parse_device("s", "gpu0").is_err());
        assert_eq!(parse_device("s", "cuda2").unwrap(), 2);
        // No empty ordinal, and no sign (`i32::from_str` takes `+`).
        for bad in ["", "  ", "cuda:", "+1", "cuda:+1", "cuda+1", "-0"] {
            let err = parse_device("s", bad).unwrap_err();
            assert!(
                matches!(&err, Error::Unsupported { what, .. } if what.contains("invalid GPU device")),
                "{bad:?}: {err}"
            );
        }
    }

    /// Builds a GPU stream's segments by hand (as a GPU producer would), so the no-driver
    /// paths are tested here.
    pub(crate) fn fake_gpu_stream(
        name: &str,
        mirror: bool,
        ipc_flag: bool,
        state: u32,
    ) -> [u8; 16] {
        use crate::format::{self, NewHeader};
        let shape = [4usize];
        let mut flags = format::FLAG_GPU;
        if ipc_flag {
            flags |= format::FLAG_CUDA_IPC;
        }
        if mirror {
            flags |= format::FLAG_CPU_MIRROR;
        }
        let instance_id = [9u8; 16];
        let pid = crate::sys::pid();
        let bytes = format::encode_new(&NewHeader {
            name,
            dtype: Dtype::F32,
            shape: &shape,
            flags,
            device_index: 0,
            creator_pid: pid,
            instance_id,
        });
        let meta = Segment::create(&crate::name::meta_id(name), format::META_BYTES).unwrap();
        // SAFETY: fresh private mapping of META_BYTES.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), meta.as_ptr(), bytes.len()) };
        let payload = Segment::create(&crate::name::segment_id(name), 16).unwrap();
        drop(payload);
        let rec = layout::GpuRecord {
            device: 0,
            alloc_bytes: layout::GPU_ALLOC_ALIGN,
            payload_bytes: 16,
            alignment: layout::GPU_ALLOC_ALIGN,
            creator_pid: pid,
            instance_id,
            mem_handle: [1; 64],
            event_handle: [2; 64],
            state,
        };
        let g = Segment::create(&crate::name::gpu_id(name), layout::GPU_SEGMENT_BYTES).unwrap();
        let b = layout::encode(&rec);
        // SAFETY: fresh private mapping of GPU_SEGMENT_BYTES.
        unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), g.as_ptr(), b.len()) };
        instance_id
    }

    #[test]
    fn probe_never_panics() {
        // Here (no driver) this is false; on a GPU machine true. Either way: no panic.
        let n = device_count();
        assert_eq!(gpu_available(), n > 0);
        assert_eq!(unavailable_reason().is_none(), n > 0);
    }

    #[test]
    fn gpu_creation_rules() {
        let name = format!("gpu-rules-{}", std::process::id());
        let e = crate::StreamOptions::new(&name)
            .dtype(Dtype::U64)
            .gpu_device(0)
            .create()
            .unwrap_err();
        assert!(e.to_string().contains("uint64"), "{e}");
        let e = crate::StreamOptions::new(&name)
            .device("gpu7")
            .create()
            .unwrap_err();
        assert!(e.to_string().contains("cuda:N"), "{e}");
        if !gpu_available() {
            let e = crate::StreamOptions::new(&name)
                .shape(&[8])
                .device("cuda:0")
                .create()
                .unwrap_err();
            assert!(
                matches!(e, Error::Gpu { .. } | Error::Unsupported { .. }),
                "{e:?}"
            );
            assert!(
                e.to_string().contains("driver") || e.to_string().contains("cuda"),
                "{e}"
            );
            // Nothing is left behind.
            assert!(!crate::segment::exists(&crate::name::meta_id(&name)));
            assert!(!crate::segment::exists(&crate::name::segment_id(&name)));
            assert!(!crate::segment::exists(&crate::name::gpu_id(&name)));
        }
        let _ = crate::unlink(&name);
    }

    #[test]
    fn a_cpu_only_handle_reads_metadata_and_locks_but_not_the_device_payload() {
        if gpu_available() {
            return; // the fake handles are not real IPC handles
        }
        let name = format!("gpu-nomirror-{}", std::process::id());
        fake_gpu_stream(&name, false, true, layout::STATE_LIVE);
        let s = crate::Stream::open(&name).unwrap();
        assert!(s.gpu_enabled() && !s.cpu_mirror());
        assert_eq!(s.gpu_device().as_deref(), Some("cuda:0"));
        assert_eq!(s.shape(), &[4]);
        assert!(s.gpu.detached_reason().is_some());
        drop(s.lock(Some(std::time::Duration::from_secs(1))).unwrap());
        let e = s.read::<f32>().unwrap_err().to_string();
        assert!(
            e.contains("no CPU mirror")
                && e.contains("cpu_mirror(true)")
                && e.contains("read_device_to_host"),
            "{e}"
        );
        // A write's remedy is a device write, not a read (it named read_device_to_host).
        let e = s.write_slice(&[1.0f32; 4]).unwrap_err();
        assert!(
            matches!(e, Error::Gpu { .. } | Error::Unsupported { .. }),
            "{e}"
        );
        let e = e.to_string();
        assert!(
            e.contains("write_device_from_host") && !e.contains("read_device"),
            "{e}"
        );
        let guard = s.lock(Some(std::time::Duration::from_secs(1))).unwrap();
        let e = guard.live::<f32>().map(drop).unwrap_err().to_string();
        assert!(
            e.contains("device_view") && !e.contains("read_device"),
            "{e}"
        );
        drop(guard);
        assert_eq!(s.count(), 0, "a refused write publishes nothing");
        assert_eq!(s.write_sequence(), 0);
        crate::unlink(&name).unwrap();
        assert!(
            !crate::segment::exists(&crate::name::gpu_id(&name)),
            "unlink removes `_gpu`"
        );
    }

    #[test]
    fn a_mirrored_stream_reads_on_the_cpu_but_refuses_cpu_only_writes() {
        if gpu_available() {
            return;
        }
        let name = format!("gpu-mirror-{}", std::process::id());
        fake_gpu_stream(&name, true, true, layout::STATE_LIVE);
        let s = crate::Stream::open(&name).unwrap();
        assert_eq!(s.read::<f32>().unwrap().as_slice().unwrap(), &[0.0; 4]);
        let e = s.write_slice(&[1.0f32; 4]).unwrap_err().to_string();
        assert!(e.contains("device payload"), "{e}");
        // So while another thread holds the write lock: refused at once, not a timeout
        // waiting for that lock.
        let (held_tx, held) = std::sync::mpsc::channel();
        let (done, done_rx) = std::sync::mpsc::channel::<()>();
        let n = name.as_str();
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let other = crate::Stream::open(n).unwrap();
                let _g = other.lock(Some(Duration::from_secs(10))).unwrap();
                held_tx.send(()).unwrap();
                let _ = done_rx.recv_timeout(Duration::from_secs(60));
            });
            held.recv_timeout(Duration::from_secs(60)).unwrap();
            s.set_default_timeout(Duration::from_millis(200));
            let e = s.write_slice(&[1.0f32; 4]).unwrap_err();
            done.send(()).unwrap();
            assert!(
                matches!(&e, Error::Gpu { reason, .. } if reason.contains("device payload")),
                "{e:?}"
            );
        });
        crate::unlink(&name).unwrap();
    }

    /// How a stream gets a history: a GPU one from its producer with a CPU mirror (a stream
    /// made first by `shmstream create` would be a CPU one), a CPU one made first too.
    #[test]
    fn a_gpu_streams_history_remedy_is_its_producers_with_a_mirror() {
        if gpu_available() {
            return;
        }
        let name = format!("gpu-remedy-{}", std::process::id());
        fake_gpu_stream(&name, true, true, layout::STATE_LIVE);
        let s = crate::Stream::open(&name).unwrap();
        let r = s.history_remedy();
        assert!(
            r.contains("cpu_mirror(true), history(n)") && !r.contains("shmstream create"),
            "{r}"
        );
        // A cursor's refusal gives the same remedy.
        let e = s.cursor().unwrap_err();
        assert!(
            matches!(&e, crate::Error::NoHistory { remedy, .. } if *remedy == r),
            "{e}"
        );
        drop(s);
        crate::unlink(&name).unwrap();
        // pyshmem's (no CUDA-IPC flag) keep none: a shmstream producer in its place.
        fake_gpu_stream(&name, true, false, layout::STATE_LIVE);
        let r = crate::Stream::open(&name).unwrap().history_remedy();
        assert!(
            r.contains("pyshmem keeps no history") && r.contains("a shmstream producer"),
            "{r}"
        );
        crate::unlink(&name).unwrap();
        let cpu = crate::Stream::create(&name, &[4], Dtype::F32).unwrap();
        let r = cpu.history_remedy();
        assert!(
            r.contains("shmstream create") && !r.contains("cpu_mirror"),
            "{r}"
        );
        drop(cpu);
        crate::unlink(&name).unwrap();
    }

    /// A creation on a machine without a driver says so before it reserves anything: a
    /// payload larger than the machine's memory is no reason to refuse it first.
    #[test]
    fn a_gpu_creation_without_a_driver_says_so_before_the_payload_size() {
        if gpu_available() {
            return;
        }
        let name = format!("gpu-huge-{}", std::process::id());
        let e = crate::StreamOptions::new(&name)
            .shape(&[1 << 40])
            .dtype(Dtype::U8)
            .gpu_device(0)
            .create()
            .unwrap_err();
        let said = match &e {
            Error::Gpu { reason, .. } => reason.ends_with("GPU streams need an NVIDIA driver"),
            Error::Unsupported { what, .. } => {
                !cfg!(feature = "cuda") && what.contains("enable the `cuda` feature")
            }
            _ => false,
        };
        assert!(said, "{e:?}");
        assert!(matches!(crate::stat(&name), Err(Error::NotFound { .. })));
    }

    /// Stores `pid` in stream `name`'s `_gpu` publisher word, as a GPU-side writer does.
    fn set_publisher_word(name: &str, pid: i64) {
        let g = Segment::open_prefix(&crate::name::gpu_id(name), true, layout::GPU_SEGMENT_BYTES)
            .unwrap();
        let at = layout::gpu_offset::PUBLISHER_PID;
        // SAFETY: a live 256-byte mapping; PUBLISHER_PID + 8 is inside it.
        unsafe { std::ptr::copy_nonoverlapping(pid.to_le_bytes().as_ptr(), g.as_ptr().add(at), 8) };
        assert_eq!(
            layout::publisher_pid(&g.snapshot(layout::GPU_SEGMENT_BYTES)),
            Some(pid)
        );
    }

    /// A reader without the device that is out of descriptors cannot open `_gpu` to ask for
    /// the publisher: that is no answer, not "no publisher", so it waits out its timeout and
    /// leaves the landing publication's odd sequence alone (it marked it abandoned, and
    /// reported the live writer dead). Run again in a child (this test binary, its
    /// descriptor limit lowered by the shell): a full descriptor table is the whole process's.
    #[test]
    fn a_reader_out_of_descriptors_leaves_a_gpu_publication_landing() {
        use std::sync::atomic::Ordering;
        const TEST: &str =
            "gpu::tests::a_reader_out_of_descriptors_leaves_a_gpu_publication_landing";
        const CHILD: &str = "SHMSTREAM_GPU_FDLESS_NAME";
        if let Some(name) = std::env::var_os(CHILD) {
            let s = crate::Stream::open(name.to_str().unwrap()).unwrap();
            let fillers = crate::few_descriptors::take_every_descriptor();
            let mut buf = [0f32; 4];
            let wait = Some(Duration::from_millis(100));
            let read = s.read_after_into_slice(0, &mut buf, wait);
            drop(fillers);
            println!("said: {read:?}");
            return;
        }
        if gpu_available() {
            return; // the fake handles are not real IPC handles
        }
        let name = format!("gpu-fdless-{}", std::process::id());
        fake_gpu_stream(&name, true, true, layout::STATE_LIVE);
        let s = crate::Stream::open(&name).unwrap();
        // This process's CUDA stream is landing a frame: the lock is free, the sequence odd.
        set_publisher_word(&name, crate::sys::pid());
        s.header.sequence().store(3, Ordering::Release);
        let said = crate::few_descriptors::said_in_a_child(TEST, (CHILD, name.as_ref()));
        assert!(
            matches!(&said[..], [e] if e.starts_with("Err(Timeout")),
            "{said:?}"
        );
        assert_eq!(
            s.header.sequence().load(Ordering::Acquire),
            3,
            "left landing, not marked invalid"
        );
        crate::unlink(&name).unwrap();
    }

    /// Issue #11: a reader that waits on an odd sequence with the write lock free asks the
    /// `_gpu` segment's publisher word before it marks the write abandoned: a live publisher's
    /// CUDA stream is still landing it (here a CPU-only handle of a mirrored stream, which reads
    /// the word from a fresh mapping); a dead one died mid-write.
    #[test]
    fn an_odd_sequence_with_a_live_gpu_publisher_is_landing_not_abandoned() {
        use std::sync::atomic::Ordering;
        if gpu_available() {
            return;
        }
        let name = format!("gpu-landing-{}", std::process::id());
        fake_gpu_stream(&name, true, true, layout::STATE_LIVE);
        let s = crate::Stream::open(&name).unwrap();
        let set_publisher = |pid: i64| set_publisher_word(&name, pid);
        s.header.sequence().store(3, Ordering::Release);
        let mut buf = [0f32; 4];
        let wait = Some(std::time::Duration::from_millis(60));
        set_publisher(crate::sys::pid());
        let e = s.read_after_into_slice(0, &mut buf, wait).unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
        assert_eq!(
            s.header.sequence().load(Ordering::Acquire),
            3,
            "left landing"
        );
        let st = crate::catalog::stat(&name).unwrap();
        assert_eq!(
            st.gpu_publisher_pid,
            Some(crate::sys::pid()),
            "stat shows it"
        );
        assert_eq!(st.gpu_consumer_pid, Some(0), "no GPU consumer");
        // A publisher killed and not reaped yet (a zombie, which kill(2) still finds) is dead.
        let mut zombie = std::process::Command::new("true").spawn().unwrap();
        let z = i64::from(zombie.id());
        let since = std::time::Instant::now();
        while crate::sys::process_running(z) {
            assert!(
                since.elapsed() < std::time::Duration::from_secs(10),
                "`true` never exited"
            );
            std::thread::yield_now();
        }
        assert!(crate::sys::pid_alive(z), "not reaped: still a zombie");
        set_publisher(z);
        assert!(!publication_landing(&s), "a zombie publisher lands nothing");
        zombie.wait().unwrap();
        set_publisher(i64::from(i32::MAX) - 1); // no such process
        let e = s.read_after_into_slice(0, &mut buf, wait).unwrap_err();
        assert!(matches!(e, Error::Inconsistent { .. }), "{e:?}");
        assert!(
            s.header.sequence().load(Ordering::Acquire) < 0,
            "marked invalid"
        );
        crate::unlink(&name).unwrap();
    }

    /// A pyshmem GPU stream without a mirror is unreadable here on every host: the remedy
    /// is pyshmem or a mirror, never a device read that refuses its format.
    #[test]
    fn a_pyshmem_gpu_stream_without_a_mirror_names_pyshmem_as_the_remedy() {
        let name = format!("gpu-pyshmem-nomirror-{}", std::process::id());
        fake_gpu_stream(&name, false, false, layout::STATE_LIVE);
        let s = crate::Stream::open(&name).unwrap();
        let e = s.read::<f32>().unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
        let e = e.to_string();
        assert!(
            e.contains(&name)
                && e.contains("read it with pyshmem on the GPU host")
                && e.contains("cpu_mirror=True")
                && !e.contains("read_device_to_host"),
            "{e}"
        );
        drop(s);
        crate::unlink(&name).unwrap();
    }

    /// (A build without the `cuda` feature gives every handle that one reason instead.)
    #[cfg(feature = "cuda")]
    #[test]
    fn foreign_or_released_gpu_segments_are_reported() {
        let name = format!("gpu-foreign-{}", std::process::id());
        fake_gpu_stream(&name, false, false, layout::STATE_LIVE);
        let s = crate::Stream::open(&name).unwrap();
        let r = s.gpu.detached_reason().unwrap().to_owned();
        assert!(r.contains("pyshmem"), "{r}");
        drop(s);
        crate::unlink(&name).unwrap();

        let name = format!("gpu-let-go-{}", std::process::id());
        fake_gpu_stream(&name, false, true, layout::STATE_RELEASED);
        let s = crate::Stream::open(&name).unwrap();
        let r = s.gpu.detached_reason().unwrap().to_owned();
        assert!(r.contains("released"), "{r}");
        let e = s.read::<f32>().unwrap_err();
        assert!(
            matches!(&e, Error::Unsupported { what, .. } if what.contains("released")),
            "{e:?}"
        );
        drop(s);
        crate::unlink(&name).unwrap();

        let name = format!("gpu-missing-{}", std::process::id());
        fake_gpu_stream(&name, false, true, layout::STATE_LIVE);
        crate::segment::unlink(&crate::name::gpu_id(&name)).unwrap();
        let s = crate::Stream::open(&name).unwrap();
        assert!(s.gpu.detached_reason().unwrap().contains("missing"));
        drop(s);
        crate::unlink(&name).unwrap();
    }

    #[test]
    fn unsupported_gpu_dtype_is_a_clear_error() {
        let e = check_gpu_dtype("cam", Dtype::U32).unwrap_err().to_string();
        assert!(
            e.contains("uint32") && e.contains("cam") && e.contains("float32"),
            "{e}"
        );
        assert!(check_gpu_dtype("cam", Dtype::F32).is_ok());
    }
}
