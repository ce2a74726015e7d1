//! # shmstream-bridge
//!
//! Shared memory on the host, Zenoh between hosts. [`publish`] waits on local streams
//! (futex wake-ups through the library's waits, no polling loop) and puts each frame on key
//! `PREFIX/NAME` with a [`codec::FrameHeader`] attachment; [`subscribe`] mirrors remote
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
mod publish;
mod resend;
mod subscribe;

pub use publish::{PublishOptions, publish};
pub use subscribe::{SubscribeOptions, subscribe};

use std::sync::PoisonError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often a run of repeated trouble on one stream (frames refused for one reason, frames
/// lost) is summed up on stderr while it lasts: said once at its start, then at most this
/// often, so a stream in trouble at its frame rate cannot fill the log.
pub(crate) const SUM_UP_EVERY: Duration = Duration::from_secs(10);

/// Frames lost on a lossless stream (by a publisher lapped by its writer, or in transit):
/// the first loss is said at once, later ones summed up at most every [`SUM_UP_EVERY`] and
/// when the bridge ends (one that stays behind its writer loses frames at almost every
/// frame, and must not fill the log with a line each).
#[derive(Debug)]
pub(crate) struct Losses {
    /// Frames reported lost so far (a publisher's go out in every frame's attachment).
    pub(crate) total: u64,
    unsaid: u64,
    said_at: Option<Instant>,
    /// How they were lost, and the remedy: the end of the line.
    why: &'static str,
}

impl Losses {
    pub(crate) fn new(why: &'static str) -> Losses {
        Losses {
            total: 0,
            unsaid: 0,
            said_at: None,
            why,
        }
    }

    pub(crate) fn lost(&mut self, frames: u64) {
        // Saturating: a subscriber counts gaps from counts a hostile sender chose.
        self.total = self.total.saturating_add(frames);
        self.unsaid = self.unsaid.saturating_add(frames);
    }

    /// The line to say now, if losses are unsaid and the last line is old enough (the
    /// clock is read only then: this runs after every frame put).
    pub(crate) fn due(&mut self) -> Option<String> {
        if self.unsaid == 0 {
            return None;
        }
        self.due_at(Instant::now())
    }

    /// [`Losses::due`] at `now`.
    pub(crate) fn due_at(&mut self, now: Instant) -> Option<String> {
        if self.unsaid == 0
            || self
                .said_at
                .is_some_and(|t| now.saturating_duration_since(t) < SUM_UP_EVERY)
        {
            return None;
        }
        self.said_at = Some(now);
        self.rest()
    }

    /// The line for the losses not said yet, if any.
    pub(crate) fn rest(&mut self) -> Option<String> {
        let n = std::mem::take(&mut self.unsaid);
        (n > 0).then(|| {
            let why = self.why;
            format!("{n} frame(s) {why}")
        })
    }
}

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

/// Where a bridge listens and what it connects to.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    /// Zenoh endpoints to listen on (e.g. `tcp/127.0.0.1:7447`).
    pub listen: Vec<String>,
    /// Zenoh endpoints to connect to (retried until they answer).
    pub connect: Vec<String>,
}

/// The slowest link the bridge is sized for, in bits per second: 1 Gbit/s (1 GbE). Zenoh
/// gives a message one deadline, [`HANDOVER_DEADLINE`], to be handed to the link whole, and
/// that deadline is sized so a frame of [`codec::MAX_FRAME_BYTES`] fits at this speed. On a
/// slower link a frame that takes longer than the deadline to send is not carried: a
/// latest-value one is dropped partway (silently: the put still succeeds, and so does its
/// idle resend), a lossless one makes Zenoh close the connection (an error on stderr; the
/// peers reconnect, and the frame is lost). Frames that such a link sends within the
/// deadline (about 134 MB at 100 Mbit/s) still get through.
pub const MIN_LINK_BITS_PER_SEC: u64 = 1_000_000_000;

/// How long Zenoh may take to hand one message to the link (Zenoh's defaults: 51 ms from a
/// latest-value frame's first fragment, 5 s for a lossless one): the largest message,
/// [`codec::MAX_MESSAGE_BYTES`], at [`MIN_LINK_BITS_PER_SEC`] (8.6 s), and a quarter more
/// for the TCP/IP and Zenoh headers and a link shared with other traffic: about 10.75 s.
/// Set as congestion control *drop*'s fragment deadline and *block*'s close deadline. The
/// costs: a lossless link whose peer stops reading is closed after this long, not 5 s (the
/// put blocks meanwhile, as it would while a large frame goes out); a large latest-value put
/// to a slow subscriber blocks the stream's thread up to this long, not 51 ms, and Zenoh
/// sends to each subscriber in turn from it, so one slow subscriber throttles the others
/// for frames bigger than the send queue, and small streams of the publisher wait behind it
/// under congestion; a stop ([`stop_on_signals`]) may take as long. (A peer that stops
/// entirely is cut off by Zenoh's 10 s lease all the same.)
pub const HANDOVER_DEADLINE: Duration =
    Duration::from_micros(codec::MAX_MESSAGE_BYTES * 8 * 1_000_000 / MIN_LINK_BITS_PER_SEC * 5 / 4);

/// Opens a Zenoh peer session: the given endpoints only, multicast scouting off, messages
/// up to [`codec::MAX_MESSAGE_BYTES`] received (the largest frame the bridge carries), and
/// [`HANDOVER_DEADLINE`] to send one. A listen endpoint already in use is a usage error
/// naming it and the remedy for `publish`.
pub fn open_session(e: &Endpoints) -> Result<zenoh::Session, BridgeError> {
    open_session_as(e, Role::Publish)
}

/// The command that opens a session, for the remedy when its listen endpoint is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// `publish`: one carries several streams.
    Publish,
    /// `subscribe --listen` (a floor's put or get too): listen elsewhere.
    Subscribe,
}

/// [`open_session`], with the remedy for a listen endpoint in use fit for `role`.
pub(crate) fn open_session_as(e: &Endpoints, role: Role) -> Result<zenoh::Session, BridgeError> {
    use zenoh::Wait;
    zenoh::open(session_config(e)?).wait().map_err(|z| {
        let reason = z.to_string();
        in_use(&e.listen, &reason, role).unwrap_or_else(|| zenoh_err("opening the session")(z))
    })
}

/// Of Zenoh's `reason` a session could not be opened, the usage error where it says that a
/// `listen` endpoint is in use (another bridge listening there, e.g. a second `publish` on
/// the default endpoint): the endpoint it names, or all given, the remedy for `role`, and
/// Zenoh's reason without its source paths.
fn in_use(listen: &[String], reason: &str, role: Role) -> Option<BridgeError> {
    let r = reason.to_ascii_lowercase();
    if listen.is_empty() || !(r.contains("address already in use") || r.contains("addrinuse")) {
        return None;
    }
    let named: Vec<&str> = listen
        .iter()
        .map(String::as_str)
        .filter(|l| reason.contains(*l))
        .collect();
    let endpoints = match named.as_slice() {
        [] => listen.join(" "),
        named => named.join(" "),
    };
    // The endpoint's protocol and address, its port to choose.
    let first = named.first().copied().unwrap_or(&listen[0]);
    let other = first
        .split(['?', '#'])
        .next()
        .and_then(|l| l.rsplit_once(':'))
        .map_or("tcp/127.0.0.1".to_owned(), |(host, _)| host.to_owned());
    let join = match role {
        Role::Publish => {
            "if it is a `publish`, give it all the streams (one carries several: \
             `shmstream-bridge publish cam0 dm0`); or "
        }
        Role::Subscribe => "",
    };
    Some(BridgeError::Usage(format!(
        "--listen {endpoints}: address already in use: another bridge (or another program) \
         listens there: {join}listen elsewhere (`--listen {other}:PORT` here and that PORT \
         in the `--connect` of the bridges that connect to it) ({})",
        without_source_paths(reason)
    )))
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

/// Which flag an endpoint was given with.
#[derive(Clone, Copy, Debug)]
enum EndpointFlag {
    Listen,
    Connect,
}

impl EndpointFlag {
    fn flag(self) -> &'static str {
        match self {
            EndpointFlag::Listen => "--listen",
            EndpointFlag::Connect => "--connect",
        }
    }

    /// The lowest port: 0 (any free port) only to listen on.
    fn lowest_port(self) -> u16 {
        match self {
            EndpointFlag::Listen => 0,
            EndpointFlag::Connect => 1,
        }
    }
}

/// Of an endpoint given with `flag`, the usage error naming it and the remedy, where it is
/// not one `tcp/HOST:PORT` (the one transport this build carries; an IPv6 HOST in brackets;
/// PORT 0, any free port, only to listen on; Zenoh's `?metadata` and `#config` suffixes
/// pass): Zenoh's own refusals are debug dumps.
fn check_endpoint(flag: EndpointFlag, value: &str) -> Result<(), BridgeError> {
    let (lowest, flag) = (flag.lowest_port(), flag.flag());
    let bad = |why: String| Err(BridgeError::Usage(format!("{flag} '{value}' {why}")));
    let bare = value.split(['?', '#']).next().unwrap_or_default();
    let Some((proto, address)) = bare.split_once('/') else {
        let write = match (bare.is_empty(), bare.contains(':')) {
            (true, _) => "HOST:PORT".to_owned(),
            (false, true) => bare.to_owned(),
            (false, false) => format!("{bare}:PORT"),
        };
        return bad(format!("is not an endpoint: write tcp/{write}"));
    };
    if proto != "tcp" {
        return bad(format!(
            "is not an endpoint this build carries: it carries tcp only (write tcp/{address})"
        ));
    }
    if address.contains(',') {
        return bad(format!(
            "is several endpoints: give each its own {flag} tcp/HOST:PORT"
        ));
    }
    let Some((host, port)) = address
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty() && !address.ends_with(']'))
    else {
        return bad("has no HOST:PORT: write tcp/HOST:PORT".to_owned());
    };
    if host.chars().any(char::is_whitespace) {
        return bad(format!(
            "has whitespace in its host '{host}': write tcp/HOST:PORT"
        ));
    }
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if !bracketed && host.contains(':') {
        let ip = host.trim_start_matches('[').trim_end_matches(']');
        return bad(format!(
            "has host '{host}': an IPv6 address goes in brackets: write tcp/[{ip}]:PORT"
        ));
    }
    match port.parse::<u16>() {
        Ok(p) if p >= lowest => Ok(()),
        Ok(_) => bad(format!(
            "has port 0, which cannot be connected to: write tcp/{host}:PORT, PORT from 1 to 65535"
        )),
        Err(_) => bad(format!(
            "has port '{port}', not a port number: write tcp/{host}:PORT, PORT from {lowest} \
             to 65535"
        )),
    }
}

/// The configuration [`open_session`] opens.
fn session_config(e: &Endpoints) -> Result<zenoh::Config, BridgeError> {
    for (flag, values) in [
        (EndpointFlag::Listen, &e.listen),
        (EndpointFlag::Connect, &e.connect),
    ] {
        for v in values {
            check_endpoint(flag, v)?;
        }
    }
    let mut c = zenoh::Config::default();
    let json = |v: &[String]| {
        format!(
            "[{}]",
            v.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    let settings = [
        ("mode", "\"peer\"".to_owned()),
        ("scouting/multicast/enabled", "false".to_owned()),
        ("listen/endpoints", json(&e.listen)),
        ("connect/endpoints", json(&e.connect)),
        ("connect/timeout_ms", "-1".to_owned()),
        ("connect/exit_on_failure", "false".to_owned()),
        (
            "transport/link/rx/max_message_size",
            codec::MAX_MESSAGE_BYTES.to_string(),
        ),
        // Zenoh gives a fragmented message one deadline from its first fragment (in µs):
        // with the defaults a latest-value frame that cannot be queued within ~51 ms is
        // dropped partway, put() still returning Ok, and a lossless one that cannot within
        // 5 s closes the connection, so a large frame over 1 GbE never arrived live.
        (
            "transport/link/tx/queue/congestion_control/drop/max_wait_before_drop_fragments",
            HANDOVER_DEADLINE.as_micros().to_string(),
        ),
        (
            "transport/link/tx/queue/congestion_control/block/wait_before_close",
            HANDOVER_DEADLINE.as_micros().to_string(),
        ),
    ];
    for (key, value) in settings {
        c.insert_json5(key, &value)
            .map_err(zenoh_err(format!("setting {key} = {value}")))?;
    }
    Ok(c)
}

/// When the threads of [`per_stream`] stop: when the caller's flag is set, or once one of
/// them has failed (a bridge that cannot carry one of its streams says so and exits, rather
/// than carrying the others as if nothing were wrong).
pub(crate) struct Stop<'a> {
    asked: &'a AtomicBool,
    failed: AtomicBool,
}

impl Stop<'_> {
    pub(crate) fn is_set(&self) -> bool {
        self.asked.load(Ordering::Relaxed) || self.failed.load(Ordering::Relaxed)
    }
}

/// Runs `each` for every name on a thread of its own, named `ROLE NAME` (Rust's panic
/// message names it; the name escaped, as a thread's name cannot hold a NUL, which the
/// library API lets through), and waits for them all; the first failure stops the others
/// and is the result.
pub(crate) fn per_stream(
    names: &[String],
    role: &str,
    asked: &AtomicBool,
    each: impl Fn(&str, &Stop) -> Result<(), BridgeError> + Sync,
) -> Result<(), BridgeError> {
    let stop = Stop {
        asked,
        failed: AtomicBool::new(false),
    };
    let failed: std::sync::Mutex<Option<BridgeError>> = std::sync::Mutex::new(None);
    std::thread::scope(|scope| {
        for name in names {
            let (each, stop, failed) = (&each, &stop, &failed);
            let fail = move |e: BridgeError| {
                let mut first = failed.lock().unwrap_or_else(PoisonError::into_inner);
                first.get_or_insert(e);
                stop.failed.store(true, Ordering::Relaxed);
            };
            let spawned = std::thread::Builder::new()
                .name(format!("{role} {}", name.escape_debug()))
                .spawn_scoped(scope, move || {
                    let r =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| each(name, stop)))
                            .unwrap_or_else(|_| {
                                Err(BridgeError::Usage(format!(
                                    "stream '{name}': its {role} thread panicked, a bug: report \
                                     it with the message above"
                                )))
                            });
                    if let Err(e) = r {
                        fail(e);
                    }
                });
            if let Err(e) = spawned {
                fail(BridgeError::Usage(format!(
                    "stream '{name}': starting its {role} thread failed ({e})"
                )));
            }
        }
    });
    match failed.into_inner().unwrap_or_else(PoisonError::into_inner) {
        Some(e) => Err(e),
        None => Ok(()),
    }
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

/// The key of stream `name` under `prefix`.
pub fn key(prefix: &str, name: &str) -> String {
    format!("{}/{name}", prefix.trim_end_matches('/'))
}

/// The last `/` part of the key a lossless publisher takes requests for frames again on
/// ([`resend_key`]); no stream name may end with it ([`check_keys`]).
const RESEND_PART: &str = "@resend";

/// The key under which a lossless publisher of stream key `k` answers a subscriber's
/// [`codec::ResendRequest`] with the frames it asks for, from the source's history: its
/// queryable there tells a subscriber that it answers (one of an older bridge does not).
pub fn resend_key(k: &str) -> String {
    format!("{k}/{RESEND_PART}")
}

/// How long a subscriber waits for the answer to a [`codec::ResendRequest`], and a
/// publisher goes on answering one from when it came: an answer cut short by it is asked
/// for again, from the newest frame it brought.
pub(crate) const RESEND_WAIT: Duration = Duration::from_secs(10);

/// Refuses, before anything is opened, a prefix or name whose key Zenoh would read as a
/// wildcard (`*`, `**`, `$*`: it would reach other streams) or refuse (`?`, `#`, a lone `$`,
/// an empty chunk), and a name given twice: its frames would go out twice on one key, or be
/// written twice into one mirror. (Distinct names give distinct keys and local names under
/// one prefix. Across prefixes, names holding `/` may share a key: `c` under `a/b` and `b/c`
/// under `a` both put on `a/b/c`; each frame's attachment gives its stream name's length,
/// and a subscriber refuses the other stream's frames, naming both.)
pub(crate) fn check_keys(prefix: &str, names: &[String]) -> Result<(), BridgeError> {
    use zenoh::key_expr::nonwild_keyexpr;
    let mut seen = std::collections::HashSet::new();
    const WHY: &str =
        "for its wildcard or reserved characters (`*`, `$`, `?`, `#`) or empty '/' parts";
    if nonwild_keyexpr::new(prefix.trim_end_matches('/')).is_err() {
        return Err(BridgeError::Usage(format!(
            "--key-prefix '{prefix}' cannot be carried over Zenoh, {WHY}: give one without them"
        )));
    }
    for name in names {
        let k = key(prefix, name);
        if nonwild_keyexpr::new(k.as_str()).is_err() {
            return Err(BridgeError::Usage(format!(
                "stream '{name}': its name cannot be carried over Zenoh (key '{k}'), {WHY}: \
                 rename the stream without them"
            )));
        }
        if name.rsplit('/').next() == Some(RESEND_PART) {
            return Err(BridgeError::Usage(format!(
                "stream '{name}': a name whose last '/' part is '{RESEND_PART}' would share its \
                 key ('{k}') with the bridge's requests for another stream's lossless frames \
                 again: rename the stream"
            )));
        }
        if !seen.insert(name) {
            return Err(BridgeError::Usage(format!(
                "stream '{name}' is given twice: give each stream once"
            )));
        }
    }
    Ok(())
}

/// The signals that stop the bridge ([`stop_on_signals`]): Ctrl-C, SIGTERM, SIGHUP (the
/// terminal closed, an ssh session dropped) and SIGQUIT (`Ctrl-\`).
const STOP_SIGNALS: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// Whether stop signal `sig`, once a stop was asked for, ends the process at once: all but
/// SIGHUP. A terminal that closes sends SIGHUP more than once, within milliseconds (bash
/// passes it on to its jobs, and the kernel sends it to the foreground process group as the
/// session leader exits): a second one is no one asking twice, and killing the bridge for
/// it would tear the mirror frame being written.
const fn kills_once_stopping(sig: libc::c_int) -> bool {
    sig != libc::SIGHUP
}

/// A stop flag that SIGINT, SIGTERM, SIGHUP and SIGQUIT set (for the binary), once: the
/// first of them sets it and gives SIGINT, SIGTERM and SIGQUIT back their default action, so
/// a second one of those ends the process at once (killed by that signal). A clean stop can
/// take up to [`HANDOVER_DEADLINE`] (a put blocked on it returns first), and a second Ctrl-C
/// must not be lost meanwhile. SIGHUP stays caught, however often it comes
/// (`kills_once_stopping`): a bridge in a closed ssh session or terminal thus ends cleanly,
/// its summaries said and its mirrors whole. A signal ignored when it is called stays
/// ignored (`nohup` ignores SIGHUP, a shell's background jobs SIGINT and SIGQUIT), then too.
pub fn stop_on_signals() -> &'static AtomicBool {
    static STOP: AtomicBool = AtomicBool::new(false);
    /// Which of [`STOP_SIGNALS`] are caught (not ignored at the start).
    static CAUGHT: [AtomicBool; STOP_SIGNALS.len()] =
        [const { AtomicBool::new(false) }; STOP_SIGNALS.len()];
    extern "C" fn on_signal(_: libc::c_int) {
        // Atomics and `sigaction` alone: all async-signal-safe.
        STOP.store(true, Ordering::Relaxed);
        for (sig, caught) in STOP_SIGNALS.iter().zip(&CAUGHT) {
            if kills_once_stopping(*sig) && caught.load(Ordering::Relaxed) {
                set_action(*sig, libc::SIG_DFL, 0);
            }
        }
    }
    for (sig, caught) in STOP_SIGNALS.into_iter().zip(&CAUGHT) {
        if action_of(sig) == libc::SIG_IGN {
            continue;
        }
        caught.store(true, Ordering::Relaxed);
        // SA_RESETHAND: the signal caught is back to its default as it is delivered, before
        // the handler runs (which then resets the others); not SIGHUP, which stays caught.
        let flags = if kills_once_stopping(sig) {
            libc::SA_RESETHAND
        } else {
            0
        };
        set_action(
            sig,
            on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            flags,
        );
    }
    &STOP
}

/// The action of signal `sig` now (`SIG_DFL`, `SIG_IGN` or a handler); `SIG_DFL` where it
/// cannot be read.
fn action_of(sig: libc::c_int) -> libc::sighandler_t {
    // SAFETY: a null new action only reads the current one into `old`, for which a zeroed
    // sigaction is a valid value.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
            return libc::SIG_DFL;
        }
        old.sa_sigaction
    }
}

/// Sets signal `sig`'s action to `handler` (a function, or `SIG_DFL`) with `flags`; the
/// signal is not blocked while it runs beyond what `flags` says. Async-signal-safe.
fn set_action(sig: libc::c_int, handler: libc::sighandler_t, flags: libc::c_int) {
    // SAFETY: a zeroed sigaction is a valid starting value, `sa_mask` is initialized by
    // `sigemptyset`, and `handler` is SIG_DFL or `on_signal`, which only stores to an atomic
    // and calls this (`sigemptyset` and `sigaction` are async-signal-safe).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        sa.sa_flags = flags;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

/// Puts the calling thread under `SCHED_FIFO` at `priority` (1-99); threads it starts
/// afterwards inherit the policy, Zenoh's runtime threads among them when this thread opens
/// the process's first session (the binary calls it first thing for `--rt-priority`).
///
/// A bridge that shares a core with the writer it serves then runs as soon as a frame
/// wakes it, ahead of the writer's own return to sleep: the frame's hop loses the writer's
/// tail, and the writer loses its core for every frame (see the README's bridge section).
pub fn run_real_time(priority: u8) -> Result<(), BridgeError> {
    if !(1..=99).contains(&priority) {
        return Err(BridgeError::Usage(format!(
            "--rt-priority {priority}: a SCHED_FIFO priority is 1 to 99"
        )));
    }
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    // SAFETY: `param` is a valid `sched_param` that the call only reads; pid 0 is the
    // calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0 {
        return Ok(());
    }
    Err(BridgeError::Usage(format!(
        "--rt-priority {priority}: SCHED_FIFO was refused ({}); it needs root, CAP_SYS_NICE \
         or `ulimit -r` >= {priority}: run with one of them or drop --rt-priority",
        std::io::Error::last_os_error()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream's resend key is a plain key under its own, which no wildcard on the streams'
    /// prefix reaches (a chunk beginning with `@` matches only itself): a subscriber of
    /// `PREFIX/**` gets no answers, and no other stream's key is one (its name would end in
    /// `/@resend`, refused at start).
    #[test]
    fn a_resend_key_is_reached_by_no_wildcard_of_the_streams() {
        use zenoh::key_expr::KeyExpr;
        let rk = resend_key(&key("p", "cam"));
        assert_eq!(rk, "p/cam/@resend");
        let rk = KeyExpr::new(rk).unwrap();
        for w in ["p/**", "p/cam/**", "p/cam/*", "**"] {
            assert!(!KeyExpr::new(w).unwrap().intersects(&rk), "{w}");
        }
        assert!(check_keys("p", &["cam/@resend".into()]).is_err());
        assert!(check_keys("p", &["@resend/cam".into()]).is_ok());
    }

    /// One `tcp/HOST:PORT` passes (hostnames, IPv6 in brackets, suffixes, port 0 to
    /// listen on); several in one value, whitespace or an unbracketed `:` in the host, and
    /// port 0 to connect to are refused with the remedy.
    #[test]
    fn endpoints_are_checked_before_zenoh_sees_them() {
        for (flag, ok) in [
            (EndpointFlag::Connect, "tcp/localhost:7447"),
            (EndpointFlag::Listen, "tcp/[::]:7447"),
            (EndpointFlag::Connect, "tcp/[::1]:7447"),
            (EndpointFlag::Connect, "tcp/camera-3.lab.example:7447"),
            (EndpointFlag::Listen, "tcp/0.0.0.0:7447"),
            (EndpointFlag::Listen, "tcp/127.0.0.1:0"),
            (EndpointFlag::Listen, "tcp/0.0.0.0:7447#iface=eth0"),
            (EndpointFlag::Connect, "tcp/10.0.0.2:7447?prio=1-7"),
        ] {
            assert!(check_endpoint(flag, ok).is_ok(), "{flag:?} {ok}");
        }
        for (flag, bad, says) in [
            (
                EndpointFlag::Connect,
                "",
                "is not an endpoint: write tcp/HOST:PORT",
            ),
            (
                EndpointFlag::Listen,
                "0.0.0.0",
                "is not an endpoint: write tcp/0.0.0.0:PORT",
            ),
            (
                EndpointFlag::Connect,
                "tcp/a:1,tcp/b:2",
                "is several endpoints: give each its own --connect tcp/HOST:PORT",
            ),
            (
                EndpointFlag::Listen,
                "tcp/::1:7447",
                "has host '::1': an IPv6 address goes in brackets: write tcp/[::1]:PORT",
            ),
            (
                EndpointFlag::Connect,
                "tcp/ho st:1",
                "has whitespace in its host 'ho st': write tcp/HOST:PORT",
            ),
            (
                EndpointFlag::Connect,
                "tcp/h:0",
                "has port 0, which cannot be connected to: write tcp/h:PORT, PORT from 1 to 65535",
            ),
            (
                EndpointFlag::Connect,
                "tcp/h:x",
                "has port 'x', not a port number: write tcp/h:PORT, PORT from 1 to 65535",
            ),
            (
                EndpointFlag::Listen,
                "tcp/h:x",
                "has port 'x', not a port number: write tcp/h:PORT, PORT from 0 to 65535",
            ),
        ] {
            match check_endpoint(flag, bad) {
                Err(BridgeError::Usage(u)) => {
                    assert_eq!(u, format!("{} '{bad}' {says}", flag.flag()))
                }
                other => panic!("{flag:?} {bad}: {other:?}"),
            }
        }
    }

    /// A listen endpoint in use is a usage error: its remedy fits the role (a `subscribe
    /// --listen` is not told to give its streams to a `publish`), Zenoh's reason last,
    /// without its source paths.
    #[test]
    fn a_listen_endpoint_in_use_says_the_remedy_for_the_role() {
        let ep = "tcp/127.0.0.1:40079";
        let reason = "Can not create a new TCP listener bound to tcp/127.0.0.1:40079: \
            [127.0.0.1:40079: Address already in use (os error 98) at /root/.cargo/registry/\
            src/zenoh-link-commons-1.10.2/src/tcp.rs:61.] at /root/.cargo/registry/src/\
            zenoh-link-tcp-1.10.2/src/unicast.rs:338.";
        let listen = [ep.to_owned()];
        let said = |role| match in_use(&listen, reason, role) {
            Some(BridgeError::Usage(u)) => u,
            other => panic!("{other:?}"),
        };
        let zenoh = "(Can not create a new TCP listener bound to tcp/127.0.0.1:40079: \
            [127.0.0.1:40079: Address already in use (os error 98)])";
        for role in [Role::Publish, Role::Subscribe] {
            let u = said(role);
            assert!(
                u.starts_with(&format!("--listen {ep}: address already in use"))
                    && u.contains("listen elsewhere (`--listen tcp/127.0.0.1:PORT` here")
                    && u.ends_with(zenoh)
                    && !u.contains(".rs:"),
                "{role:?}: {u}"
            );
            assert_eq!(
                u.contains("`publish`"),
                role == Role::Publish,
                "{role:?}: {u}"
            );
        }
        assert!(in_use(&listen, "connection refused", Role::Subscribe).is_none());
    }

    /// Zenoh's default (1 GiB) would drop a message of the largest frame the codec accepts,
    /// silently: the session takes what the codec allows, its attachment and headers.
    #[test]
    fn a_session_receives_messages_of_the_largest_frame_the_codec_accepts() {
        let c = session_config(&Endpoints::default()).unwrap();
        let max: u64 = c
            .get_json("transport/link/rx/max_message_size")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(max, codec::MAX_MESSAGE_BYTES);
        assert!(max > codec::MAX_FRAME_BYTES);
    }

    /// Zenoh's defaults give a message 51 ms (latest value) or 5 s (lossless) to be handed
    /// to the link whole, after which it is dropped partway (silently) or the connection is
    /// closed: the session gives it long enough for the largest frame at the slowest link
    /// speed the bridge is sized for.
    #[test]
    fn a_session_gives_the_largest_frame_time_to_go_out_at_the_slowest_link_it_is_sized_for() {
        let c = session_config(&Endpoints::default()).unwrap();
        let us = |key: &str| -> u64 {
            let key = format!("transport/link/tx/queue/congestion_control/{key}");
            c.get_json(&key).unwrap().parse().unwrap()
        };
        let needed = codec::MAX_MESSAGE_BYTES * 8 * 1_000_000 / MIN_LINK_BITS_PER_SEC;
        assert!(needed >= 8_000_000, "1 GiB at 1 Gbit/s: {needed} µs");
        // Drop: the first batch's wait, then a budget shared by the following fragments.
        let drop = us("drop/wait_before_drop") + us("drop/max_wait_before_drop_fragments");
        assert!(drop >= needed, "drop deadline {drop} µs < {needed} µs");
        // Block: one deadline for the whole message.
        let block = us("block/wait_before_close");
        assert!(block >= needed, "block deadline {block} µs < {needed} µs");
    }

    /// A stop can take up to HANDOVER_DEADLINE (a put blocked on it): the first stop signal
    /// asks for it and gives SIGINT, SIGTERM and SIGQUIT back their default action, so a
    /// second one of those ends the process at once. (Before, the handler stayed, and a second
    /// Ctrl-C did nothing.) A signal ignored at the start (SIGHUP under `nohup`) stays
    /// ignored, before and after; SIGHUP caught stays caught after the first stop signal, so
    /// a terminal that closes, sending it again, does not kill the bridge mid-stop (it was
    /// given back its default action too).
    #[test]
    fn the_first_stop_signal_resets_all_but_sighup_and_an_ignored_one_stays_ignored() {
        // From the defaults, whatever this test process was started with (a background job
        // of a script starts with SIGINT and SIGQUIT ignored, which the bridge keeps).
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGQUIT] {
            set_action(sig, libc::SIG_DFL, 0);
        }
        set_action(libc::SIGHUP, libc::SIG_IGN, 0);
        let stop = stop_on_signals();
        let caught = [libc::SIGINT, libc::SIGTERM, libc::SIGQUIT];
        let is_handler = |sig| {
            let action = action_of(sig);
            action != libc::SIG_DFL && action != libc::SIG_IGN
        };
        for sig in caught {
            assert!(is_handler(sig), "signal {sig} caught");
        }
        assert_eq!(action_of(libc::SIGHUP), libc::SIG_IGN, "SIGHUP ignored");
        // SAFETY: `raise` delivers SIGINT to this thread before it returns, to the handler
        // just installed (which only sets the flag and resets the actions).
        assert_eq!(unsafe { libc::raise(libc::SIGINT) }, 0);
        assert!(stop.load(Ordering::Relaxed));
        for sig in caught {
            assert_eq!(
                action_of(sig),
                libc::SIG_DFL,
                "signal {sig}: a second one would be caught and do nothing"
            );
        }
        assert_eq!(
            action_of(libc::SIGHUP),
            libc::SIG_IGN,
            "SIGHUP still ignored"
        );
        // SIGHUP caught (no `nohup`): the first SIGHUP stops, and SIGHUP stays caught.
        set_action(libc::SIGHUP, libc::SIG_DFL, 0);
        stop.store(false, Ordering::Relaxed);
        stop_on_signals();
        assert!(is_handler(libc::SIGHUP), "SIGHUP caught");
        // SAFETY: as above; SIGHUP goes to the handler just installed.
        assert_eq!(unsafe { libc::raise(libc::SIGHUP) }, 0);
        assert!(stop.load(Ordering::Relaxed));
        for sig in caught {
            assert_eq!(action_of(sig), libc::SIG_DFL, "signal {sig} after SIGHUP");
        }
        assert!(
            is_handler(libc::SIGHUP),
            "SIGHUP given back its default action: a second one would kill the bridge"
        );
        // SAFETY: as above (checked still caught: it does not end this process).
        assert_eq!(unsafe { libc::raise(libc::SIGHUP) }, 0);
        set_action(libc::SIGHUP, libc::SIG_DFL, 0);
    }

    /// Rust's panic message names the thread, `ROLE NAME`; the bridge's error names the
    /// stream and says it is a bug.
    #[test]
    fn a_panicked_stream_thread_is_named_and_its_error_names_the_stream() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let asked = AtomicBool::new(false);
        let r = per_stream(&names(&["cam0"]), "publisher", &asked, |_, _| {
            let me = std::thread::current().name().map(str::to_owned);
            Err(BridgeError::Usage(format!("{me:?}")))
        });
        match r {
            Err(BridgeError::Usage(m)) => assert_eq!(m, r#"Some("publisher cam0")"#),
            other => panic!("{other:?}"),
        }
        let r = per_stream(&names(&["dm0"]), "subscriber", &asked, |_, _| {
            panic!("on purpose")
        });
        match r {
            Err(BridgeError::Usage(m)) => assert_eq!(
                m,
                "stream 'dm0': its subscriber thread panicked, a bug: report it with the \
                 message above"
            ),
            other => panic!("{other:?}"),
        }
    }

    /// A thread whose name holds a NUL cannot be spawned (Rust panics): its name is escaped;
    /// the error names the stream as given.
    #[test]
    fn a_stream_name_holding_a_nul_gets_a_thread_named_with_it_escaped() {
        let names = vec!["cam\0 1".to_owned()];
        let asked = AtomicBool::new(false);
        let r = per_stream(&names, "publisher", &asked, |_, _| {
            let me = std::thread::current().name().map(str::to_owned);
            Err(BridgeError::Usage(format!("{me:?}")))
        });
        match r {
            Err(BridgeError::Usage(m)) => assert_eq!(m, r#"Some("publisher cam\\0 1")"#),
            other => panic!("{other:?}"),
        }
        let r = per_stream(&names, "publisher", &asked, |_, _| panic!("on purpose"));
        match r {
            Err(BridgeError::Usage(m)) => {
                assert!(
                    m.starts_with("stream 'cam\0 1': its publisher thread"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
