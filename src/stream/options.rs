//! [`StreamOptions`], the builder that creates a stream, and [`StreamConfig`], the
//! serializable form of a stream's settings (pyshmem's `to_config()` keys).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{DEFAULT_TIMEOUT, Stream};
use crate::dtype::Dtype;
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;

/// Settings for creating a stream. Start with [`StreamOptions::new`].
///
/// ```
/// use shmstream::{Dtype, StreamOptions};
/// let name = format!("doc-options-{}", std::process::id());
/// let s = StreamOptions::new(&name).shape(&[2, 3]).dtype(Dtype::F64).notify(true).auto_unlink(true).create()?;
/// assert_eq!(s.shape(), &[2, 3]);
/// # Ok::<(), shmstream::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct StreamOptions {
    pub(crate) name: String,
    pub(crate) shape: Vec<usize>,
    pub(crate) dtype: Dtype,
    pub(crate) notify: bool,
    pub(crate) auto_unlink: bool,
    /// The CUDA device asked for: its ordinal, or why the name given to [`Self::device`]
    /// names none (each reported by `create`, a negative ordinal too).
    pub(crate) gpu_device: Option<std::result::Result<i32, String>>,
    pub(crate) cpu_mirror: bool,
    pub(crate) history: usize,
}

impl StreamOptions {
    /// Options for a stream called `name`: shape `[1]`, `float32`, no notify.
    pub fn new(name: &str) -> StreamOptions {
        StreamOptions {
            name: name.to_owned(),
            shape: vec![1],
            dtype: Dtype::F32,
            notify: false,
            auto_unlink: false,
            gpu_device: None,
            cpu_mirror: false,
            history: 0,
        }
    }
    /// The array shape (1 to 19 positive dimensions), C order.
    pub fn shape(&mut self, shape: &[usize]) -> &mut Self {
        self.shape = shape.to_vec();
        self
    }
    /// The element type.
    pub fn dtype(&mut self, dtype: Dtype) -> &mut Self {
        self.dtype = dtype;
        self
    }
    /// Writers wake blocked readers through a futex (readers park instead of polling).
    pub fn notify(&mut self, notify: bool) -> &mut Self {
        self.notify = notify;
        self
    }
    /// Unlink the stream when the creating handle is dropped (in the creating process: a
    /// child forked without exec that drops its copy leaves the stream). The drop takes the
    /// name's lock as [`Stream::unlink`] does, so it waits up to 5 s while another process
    /// holds it; a drop that cannot unlink then (or out of descriptors) leaves the stream,
    /// silently (drops cannot fail), for `unlink` or `purge` to remove. A GPU stream's drop
    /// first waits for its queued GPU work (up to the handle's default timeout, then up to
    /// 10 s for its CUDA stream). So do not drop the last handle on an async executor's
    /// thread; call [`Stream::unlink`] where its error can be seen.
    pub fn auto_unlink(&mut self, auto_unlink: bool) -> &mut Self {
        self.auto_unlink = auto_unlink;
        self
    }
    /// Puts the payload on a CUDA device: `"cuda:N"`, `"cudaN"` or `"N"` (see
    /// [`StreamOptions::gpu_device`]). An invalid name is reported by `create`.
    pub fn device(&mut self, device: &str) -> &mut Self {
        self.gpu_device = Some(
            crate::gpu::parse_device(&self.name, device).map_err(|e| match e {
                crate::Error::Unsupported { what, .. } => what,
                other => other.to_string(),
            }),
        );
        self
    }
    /// Puts the payload on CUDA device `ordinal` (one IPC-capable allocation shared with other
    /// processes; the dtype must be in [`crate::GPU_SUPPORTED_DTYPES`]). The creating process
    /// owns the allocation: see the producer lifetime contract in [`crate::gpu`].
    pub fn gpu_device(&mut self, ordinal: i32) -> &mut Self {
        self.gpu_device = Some(Ok(ordinal));
        self
    }
    /// GPU streams: also keep a host copy of the payload, current after every write, so
    /// CPU-only processes can read it (default false; costs a device-to-host copy per write).
    pub fn cpu_mirror(&mut self, cpu_mirror: bool) -> &mut Self {
        self.cpu_mirror = cpu_mirror;
        self
    }
    /// Also keep the last `frames` frames in a history ring (`1..=MAX_HISTORY`; 0, the
    /// default, keeps none), read in order by [`Stream::cursor`]. Every write through this
    /// library appends to it in the same publication; pyshmem still opens, reads and writes
    /// the stream (its writes are reported as gaps by cursors). Costs one more copy of the
    /// frame per write. GPU streams need a CPU mirror for it.
    pub fn history(&mut self, frames: usize) -> &mut Self {
        self.history = frames;
        self
    }
    /// Creates the stream; fails with [`Error::AlreadyExists`] if the name is taken (by a
    /// stream, or by another process's creation at work).
    pub fn create(&self) -> Result<Stream> {
        Stream::create_with(self, DEFAULT_TIMEOUT)
    }
    /// [`StreamOptions::create`], waiting at most `wait` (instead of 5 s) for the name's lock
    /// held by another process: past it, [`Error::AlreadyExists`] (`being_created`) for a
    /// creation at work, else [`Error::Timeout`].
    pub fn create_within(&self, wait: Duration) -> Result<Stream> {
        Stream::create_with(self, wait)
    }
}

/// A stream's configuration, as plain data (serde): [`Stream::to_config`] and
/// [`Stream::create_from_config`] round-trip it. Same keys as pyshmem's `to_config()`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamConfig {
    /// Name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Element type: its numpy name in serialized form, and only that (`"uint8"`; `"u8"`,
    /// which numpy reads as `uint64`, is refused: [`Dtype::from_numpy_name_only`]).
    #[serde(
        default = "default_dtype",
        deserialize_with = "crate::dtype::deserialize_numpy_name"
    )]
    pub dtype: Dtype,
    /// `"cuda:N"` for GPU streams.
    #[serde(default)]
    pub gpu_device: Option<String>,
    /// Whether a GPU stream keeps a host mirror (always true for CPU streams).
    #[serde(default)]
    pub cpu_mirror: Option<bool>,
    /// Futex wake-ups.
    #[serde(default)]
    pub notify: bool,
    /// Frames of history kept (0 = none; the key is left out then, as pyshmem has none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub history: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn default_dtype() -> Dtype {
    Dtype::F32
}
