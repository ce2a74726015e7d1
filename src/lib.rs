//! # shmstream
//!
//! Named shared-memory streams of n-d arrays on one Linux host: a latest-value frame per
//! stream, published with a seqlock (readers never wait for the write lock, only try it to
//! find a writer dead mid-write, and never see a torn frame from a shmstream writer: `docs/guarantees.md`, *Limits*), written
//! under a cross-process, thread-reentrant lock, with optional futex wake-ups. The on-memory
//! format is pyshmem 1.4.0's v3, byte for byte, so Python processes using `pyshmem` open,
//! read, write and lock the same streams.
//!
//! ```
//! use shmstream::{Dtype, Stream, StreamOptions};
//! use std::time::Duration;
//!
//! let name = format!("doc-lib-{}", std::process::id());
//! let writer = StreamOptions::new(&name).shape(&[2, 3]).dtype(Dtype::F32).notify(true).create()?;
//! let reader = Stream::open_readonly(&name)?;
//! writer.write(&ndarray::arr2(&[[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]]))?;
//! let frame = reader.read_new::<f32>(Some(Duration::from_secs(1)))?;
//! assert_eq!(frame[[1, 2]], 6.0);
//! shmstream::unlink(&name)?;
//! # Ok::<(), shmstream::Error>(())
//! ```
//!
//! Modules, bottom up: `format` (the header, pure), `segment` (shm objects), `header`
//! (atomics over the mapped header), `lock` (write lock), `seqlock` (publication protocol),
//! `spin` (one pause of a busy wait), `notify` (waiting), `history` (the frame ring and its
//! cursors), then `stream`, `write`, `read`, `catalog` (the public API).
//!
//! Several streams at once: [`lock_many()`] takes their write locks in one global order under
//! one deadline. Async waits for tokio (`read_new_async`, `wait_for_count_async`,
//! `read_after_async`, ...): feature `tokio`, documented in the `asynchronous` module.

#![warn(missing_docs)]

// The header's fields are read and written as native-endian atomics in place, while the
// format (pyshmem's) is little-endian: a big-endian build would misread every stream.
#[cfg(target_endian = "big")]
compile_error!(
    "shmstream supports little-endian targets only: its shared-memory format is little-endian, \
     as pyshmem's, and the header's atomics are used in native byte order"
);

#[cfg(feature = "tokio")]
pub mod asynchronous;
mod backoff;
mod catalog;
mod cgroup;
mod create;
mod deadline;
mod dtype;
mod error;
#[cfg(test)]
mod few_descriptors;
pub mod format;
pub mod gpu;
mod header;
mod history;
mod lock;
mod lock_many;
mod metadata;
pub mod name;
mod notify;
mod purge;
mod read;
mod segment;
mod seqlock;
#[doc(hidden)]
pub mod slowdown;
pub mod spin;
mod stream;
mod sys;
mod trust;
mod write;

pub use catalog::{
    Scratch, StreamStat, list_stats, list_streams, scratch, stat, stat_within, unlink,
    unlink_quiet, unreadable_streams,
};
pub use dtype::{Dtype, Element};
pub use error::{Awaited, Error, LossCause, Result, Shortage};
pub use gpu::{GPU_SUPPORTED_DTYPES, device_count, gpu_available};
pub use history::{Cursor, MAX_HISTORY, RingFrame};
pub use lock_many::{ManyGuard, lock_many};
pub use notify::{ADAPTIVE_SPIN, WaitStrategy};
pub use purge::{
    PurgeFailure, PurgeItem, PurgeOptions, PurgeReport, purge, purge_matching, purge_with,
};
pub use read::{FrameInfo, Publication, frame_buffer, frame_buffer_room};
pub use stream::{Stream, StreamConfig, StreamOptions, check_shape};
pub use write::LiveView;
pub use write::WriteGuard;

/// For the harness's bare floor region; not part of the API. `reserve`
/// reserves a shared-memory file's storage as the library reserves its segments' (a full
/// `/dev/shm` is `ENOSPC` at creation, not `SIGBUS` at the first touch), only for a new file
/// just sized with `set_len`: where the file system cannot reserve, it writes zeros over it.
/// `shm_available` is the bytes free in `/dev/shm`.
#[doc(hidden)]
pub mod harness_support {
    pub use crate::sys::{reserve, shm_available};
}

/// Whether this build of the library has debug assertions on (a benchmark report says how
/// the code it measured was built; the dev profile keeps them on here, off in the harness).
#[doc(hidden)]
pub const BUILT_WITH_DEBUG_ASSERTIONS: bool = cfg!(debug_assertions);

pub use half::f16;
pub use ndarray;
pub use num_complex::{Complex32, Complex64};
