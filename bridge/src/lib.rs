//! # shmstream-bridge
//!
//! Shared memory on the host, Zenoh between hosts. [`publish()`] waits on local streams
//! (futex wake-ups through the library's waits, no polling loop) and puts each frame on key
//! `PREFIX/NAME` with a [`codec::FrameHeader`] attachment; [`subscribe()`] mirrors remote
//! frames into local streams of the same shape and dtype, stamped with the remote frame id,
//! so local readers (Rust or pyshmem) see them as ordinary streams.
//!
//! - Latest-value by default: congestion control *drop* (a frame that finds the link's
//!   queue full is dropped), and the subscriber writes each frame into its local stream on
//!   Zenoh's receiving thread as it comes, so local readers see the newest. `max_rate` caps
//!   the frames put per second (a GUI feed). A subscriber that arrives after a frame was put
//!   still gets the current frame: the publisher puts it again when it goes from no matched
//!   subscriber to one, and answers the subscriber's query for it; a frame received twice
//!   is written once.
//! - Lossless: the publisher reads through a history cursor
//!   ([`shmstream::Stream::cursor`]) with congestion control *block*, from the current frame
//!   on, and only while a subscriber is matched (frames wait in the ring meanwhile); lost
//!   frames (a lapped cursor) are reported, never hidden. Frames a subscriber missed in
//!   transit (put into a connection that died) are asked for and answered from the ring
//!   ([`resend_key`]).
//! - Loopback by default, multicast scouting off: nothing listens beyond this host unless
//!   asked. Peers that go away are reconnected by Zenoh (`connect` endpoints retry forever).

pub mod codec;
mod freed_memory;
mod keys;
mod losses;
mod publish;
mod real_time;
mod resend;
mod session;
mod signals;
mod subscribe;
mod threads;

pub use freed_memory::keep_freed_memory;
pub use keys::{key, resend_key};
pub use publish::{PublishOptions, publish};
pub use real_time::run_real_time;
pub use session::{Endpoints, HANDOVER_DEADLINE, MIN_LINK_BITS_PER_SEC, open_session};
pub use signals::stop_on_signals;
pub use subscribe::{SubscribeOptions, subscribe};

pub(crate) use keys::check_keys;
pub(crate) use losses::Losses;
pub(crate) use session::{Role, open_session_as};
pub(crate) use threads::{Stop, per_stream};

use std::time::Duration;

/// How often a run of repeated trouble on one stream (frames refused for one reason, frames
/// lost) is summed up on stderr while it lasts: said once at its start, then at most this
/// often, so a stream in trouble at its frame rate cannot fill the log.
pub(crate) const SUM_UP_EVERY: Duration = Duration::from_secs(10);

/// Says `line` on stderr about stream `name`.
pub(crate) fn say(name: &str, line: &str) {
    say_line(format_args!("shmstream-bridge: stream '{name}': {line}"));
}

/// Writes a line to stderr, ignoring a failure (a full disk, a closed pipe, a terminal that
/// hung up): the bridge carries on, as there is nowhere left to say it (`eprintln!` would
/// panic and stop every stream). Its control characters are escaped (`shmstream::name::printable`): stream
/// names come from shared memory any local user can write (the library's errors list others
/// found there) and from remote keys, and must not reach the terminal as escape sequences or
/// break one line into several.
pub fn say_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let line = line.to_string();
    let _ = writeln!(
        std::io::stderr().lock(),
        "{}",
        shmstream::name::printable(&line)
    );
}

/// How often a waiting bridge thread checks its stop flag.
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "shmstream";
/// The default endpoint a publisher listens on.
pub const DEFAULT_LISTEN: &str = "tcp/127.0.0.1:7447";

/// Errors of the bridge; every message names the stream or endpoint and the remedy.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// A local stream operation failed.
    #[error(transparent)]
    Stream(#[from] shmstream::Error),
    /// Zenoh refused the configuration or an operation.
    #[error("zenoh: {what}: {reason}")]
    Zenoh {
        /// What was being done.
        what: String,
        /// Zenoh's reason.
        reason: String,
    },
    /// Bad options.
    #[error("{0}")]
    Usage(String),
}

/// Turns a Zenoh error into a [`BridgeError`] saying what was being done.
pub fn zenoh_err(what: impl Into<String>) -> impl FnOnce(zenoh::Error) -> BridgeError {
    let what = what.into();
    move |e| BridgeError::Zenoh {
        what,
        reason: without_source_paths(&e.to_string()),
    }
}

/// `reason` without the ` at <file>.rs:<line>.` that Zenoh's errors append.
fn without_source_paths(reason: &str) -> String {
    let mut out = String::new();
    let mut rest = reason;
    while let Some(i) = rest.find(" at ") {
        let after = &rest[i + 4..];
        let end = after.find(".rs:").and_then(|j| {
            let line = &after[j + 4..];
            let digits = line.find(|c: char| !c.is_ascii_digit())?;
            (digits > 0 && line[digits..].starts_with('.') && !after[..j].contains(' '))
                .then_some(j + 4 + digits + 1)
        });
        match end {
            Some(end) => {
                out.push_str(&rest[..i]);
                rest = &after[end..];
            }
            None => {
                out.push_str(&rest[..i + 4]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The instance id (generation) of stream `s` as bytes: zeros where it has none.
pub(crate) fn instance_of(s: &shmstream::Stream) -> [u8; 16] {
    let hex = s.instance_id();
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = hex
            .get(2 * i..2 * i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0);
    }
    id
}

/// How long a subscriber waits for the answer to a [`codec::ResendRequest`], and a
/// publisher goes on answering one from when it came: an answer cut short by it is asked
/// for again, from the newest frame it brought.
pub(crate) const RESEND_WAIT: Duration = Duration::from_secs(10);
