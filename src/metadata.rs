//! What a handle tells about its stream: configuration of the handle (wait strategy,
//! default timeout) and the stream's metadata, `describe`, `to_config` and `Display`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::dtype::Dtype;
use crate::format::{self, FLAG_NOTIFY};
use crate::notify::WaitStrategy;
use crate::stream::{Stream, StreamConfig};
use crate::sys;

impl Stream {
    // ----- configuration -----

    /// How this handle waits for new data (default [`WaitStrategy::Adaptive`]).
    pub fn set_wait_strategy(&self, strategy: WaitStrategy) {
        self.strategy.store(strategy as u8, Ordering::Relaxed);
    }
    /// The current wait strategy.
    pub fn wait_strategy(&self) -> WaitStrategy {
        WaitStrategy::from_u8(self.strategy.load(Ordering::Relaxed))
    }
    /// The timeout used by calls that take none (`read`, `write`, `lock` via `write`): 5 s
    /// unless changed.
    pub fn set_default_timeout(&self, timeout: Duration) {
        self.timeout_ns.store(
            timeout.as_nanos().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }
    /// See [`Stream::set_default_timeout`].
    pub fn default_timeout(&self) -> Duration {
        Duration::from_nanos(self.timeout_ns.load(Ordering::Relaxed))
    }

    // ----- metadata -----

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The array shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// The element type.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }
    /// Elements per frame.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Always false (a stream has at least one element); for clippy's `len` convention.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Bytes per frame.
    pub fn size_bytes(&self) -> usize {
        self.size
    }
    /// Writes counted so far, read without the seqlock. Every write stores its count inside
    /// its bracket, before the even sequence that ends it (a GPU-side publication, from the
    /// host before its CUDA stream lands the frame; a history write, before it copies a frame
    /// filled in the ring into the payload), so this may count the write in progress; a writer
    /// killed mid-write leaves the count it used up (the next write counts past it). For a
    /// count paired with its frame, use [`Stream::read_publication`].
    pub fn count(&self) -> u64 {
        self.header.count().load(Ordering::Acquire)
    }
    /// The seqlock word (even stable, odd writing, negative invalid).
    pub fn write_sequence(&self) -> i64 {
        self.header.sequence().load(Ordering::Acquire)
    }
    /// UNIX time (seconds, the wall clock) stamped by the last write; 0 if never written.
    /// Stamped as a publication ends (pyshmem's writers too), so a GPU publication still
    /// landing or a writer killed in that last instant shows the time of a frame not yet
    /// readable: `read_publication` gives the time of the frame it returns. An `f64` of
    /// seconds (pyshmem's format) steps by 2⁻²² s (about 0.24 µs) at today's dates: enough
    /// to order frames and to see ages, too coarse to time sub-microsecond hops.
    pub fn write_time(&self) -> f64 {
        f64::from_bits(self.header.write_time().load(Ordering::Acquire))
    }
    /// The frame id of the last write (a user token; 0 if never set). For a value paired
    /// with its payload, use [`Stream::read_publication`].
    pub fn frame_id(&self) -> u64 {
        self.header.frame_id().load(Ordering::Acquire)
    }
    /// Pid of the process that created the stream.
    pub fn creator_pid(&self) -> i64 {
        self.creator_pid
    }
    /// Whether this handle created the stream.
    pub fn is_owner(&self) -> bool {
        self.owner
    }
    /// Whether this handle is read-only.
    pub fn is_readonly(&self) -> bool {
        self.readonly
    }
    /// Whether writers wake waiters through the futex.
    pub fn notify(&self) -> bool {
        self.flags & FLAG_NOTIFY != 0
    }
    /// Whether the payload lives on a GPU.
    pub fn gpu_enabled(&self) -> bool {
        self.flags & format::FLAG_GPU != 0
    }
    /// `"cuda:N"` for GPU streams.
    pub fn gpu_device(&self) -> Option<String> {
        self.gpu_enabled()
            .then(|| format!("cuda:{}", self.device_index))
    }
    /// Whether a host copy of the payload exists (always for CPU streams).
    pub fn cpu_mirror(&self) -> bool {
        self.flags & format::FLAG_CPU_MIRROR != 0
    }
    /// The 128-bit generation id, as 32 hex digits.
    pub fn instance_id(&self) -> String {
        self.instance_id
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
    /// The count of the frame this handle last returned (the count at open before any read).
    pub fn last_read_count(&self) -> u64 {
        self.reads.last_count.load(Ordering::Relaxed)
    }
    /// Writes skipped between this handle's last two reads.
    pub fn missed_writes(&self) -> u64 {
        self.reads.last_missed.load(Ordering::Relaxed)
    }
    /// Writes this handle has seen skipped in total.
    pub fn total_missed_writes(&self) -> u64 {
        self.reads.total_missed.load(Ordering::Relaxed)
    }
    /// Wall-clock time since [`write_time`](Self::write_time); `None` if never written. A
    /// stamp ahead of this host's clock (a clock stepped back since) reads as 0, as
    /// pyshmem's `max(0, now - t)` does.
    pub fn age(&self) -> Option<Duration> {
        let t = self.write_time();
        (t > 0.0).then(|| Duration::from_secs_f64((sys::unix_now() - t).max(0.0)))
    }
    /// Whether the last write is older than `max_age` (a never-written stream is stale).
    pub fn is_stale(&self, max_age: Duration) -> bool {
        self.age().is_none_or(|a| a > max_age)
    }
    /// Whether this handle's stream was unlinked since it was opened (its name then holds
    /// nothing, or another stream, or an unlink stopped between the payload and `_meta` left
    /// the payload gone): an `fstat` of `_meta` and of the payload, for a tool deciding
    /// whether to open the name again. Reads, waits, writes, locks and live views through
    /// such a handle fail with [`crate::Error::Stale`] once it looks at its files again (it
    /// does at most every 20 ms, so a call just after a look may still succeed); the getters
    /// and [`Stream::cursor`] still answer from the old header.
    pub fn is_unlinked(&self) -> bool {
        self.check_generation(true).is_err()
    }
    /// Whether the creating process is still running (best effort: pid based, one host; a
    /// zombie, exited but not yet reaped, is not running).
    pub fn producer_alive(&self) -> bool {
        sys::process_running(self.creator_pid)
    }

    /// The configuration to recreate this stream elsewhere.
    pub fn to_config(&self) -> StreamConfig {
        StreamConfig {
            name: self.name.clone(),
            shape: self.shape.clone(),
            dtype: self.dtype,
            gpu_device: self.gpu_device(),
            cpu_mirror: Some(self.cpu_mirror()),
            notify: self.notify(),
            history: self.history_depth(),
        }
    }

    /// A multi-line, human-readable summary (also the `Display` output).
    pub fn describe(&self) -> String {
        let age = self.age().map_or_else(
            || "never written".to_owned(),
            |a| format!("{:.3} s", a.as_secs_f64()),
        );
        format!(
            "name:         {}\nshape:        {:?}\ndtype:        {}\nsize:         {} bytes\ngpu_enabled:  {}\ngpu_device:   {}\ncpu_mirror:   {}\ncount:        {}\nwrite_time:   {}\nwrite_seq:    {}\nframe_id:     {}\nowner:        {}\nreadonly:     {}\ncreator_pid:  {}\nproducer:     {}\nage:          {}\nnotify:       {}\nhistory:      {}\ninstance_id:  {}",
            self.name,
            self.shape,
            self.dtype,
            self.size,
            self.gpu_enabled(),
            self.gpu_device().unwrap_or_else(|| "none".into()),
            self.cpu_mirror(),
            self.count(),
            self.write_time(),
            self.write_sequence(),
            self.frame_id(),
            self.owner,
            self.readonly,
            self.creator_pid,
            if self.producer_alive() {
                "alive"
            } else {
                "dead"
            },
            age,
            self.notify(),
            match self.history_depth() {
                0 => "none".to_owned(),
                n => format!("{n} frames"),
            },
            self.instance_id(),
        )
    }
}

impl std::fmt::Display for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}
