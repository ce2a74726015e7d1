//! Zenoh → local streams: each remote frame is checked against its attachment and written,
//! with its frame id, into a local stream of the remote shape and dtype.

mod opening;
mod recovery;
mod refusals;
mod sources;
mod write_lock;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use shmstream::{Dtype, Error, MAX_HISTORY, Stream, WriteGuard};
use zenoh::Wait;
use zenoh::handlers::{RingChannel, RingChannelHandler};
use zenoh::matching::{MatchingListener, MatchingStatus};
use zenoh::query::Querier;
use zenoh::sample::Sample;

use crate::codec::FrameHeader;
use crate::{
    BridgeError, Endpoints, Losses, POLL, Role, SUM_UP_EVERY, Stop, check_keys, key,
    open_session_as, per_stream, zenoh_err,
};
use opening::{
    Opening, RETRY_CREATE, RETRY_OPEN, Uncreatable, Unopenable, create_failure_lasts, meta_file,
    open_failure_lasts, open_or_create,
};
use recovery::{Resender, Resends, recover};
use refusals::Refusals;
use sources::{Arrival, Sources, missed, new_source_line, uncarried};
use write_lock::{lock_wait, locked_out};

/// What [`subscribe`] mirrors and where.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    /// Remote stream names.
    pub names: Vec<String>,
    /// Zenoh endpoints.
    pub endpoints: Endpoints,
    /// Key prefix the publisher uses.
    pub prefix: String,
    /// Local stream `P + NAME` mirrors remote `NAME`.
    pub local_prefix: String,
    /// History depth of local streams this bridge creates (0: none), so local readers can
    /// read every mirrored frame with a cursor.
    pub history: usize,
    /// Mirror into a local stream that was there before this run created it: one made for
    /// the bridge on purpose, or an earlier run's mirror (continued after a restart).
    /// Without it such a stream is refused, and the bridge ends saying so: it may be
    /// another writer's (the host's own `cam0`, whether or not its creator still runs, or a
    /// subscriber's mirror, which would loop frames between two hosts), and remote frames
    /// would be mixed into it.
    pub into_existing: bool,
}

/// Mirrors until `stop` is set (checked every 100 ms). A frame that does not fit its local
/// stream, or whose attachment is malformed, is refused with a message on stderr and the
/// local stream is left as it was.
///
/// Each time a stream's publisher goes, the Zenoh session is closed and opened anew, the
/// mirrors kept: the new session has a new peer id and connects again under it. Under the
/// old one, a reconnection could be lost for good. A lossless put blocked in a connection
/// that died (the link cut) holds that connection's send queue until its deadline
/// ([`crate::HANDOVER_DEADLINE`], longer than Zenoh's 10 s lease), and the publisher's Zenoh
/// (1.10.2) finishes closing the connection only then, taking with it what it then holds
/// for the subscriber's peer id: a connection the subscriber made again meanwhile stayed
/// open, each peer taking the other for connected, and no frame and no answer went through
/// it (seen with debug logs in `bridge/tests/two_hosts`, about one cut in ten). A new peer
/// id is a connection of its own.
pub fn subscribe(o: &SubscribeOptions, stop: &AtomicBool) -> Result<(), BridgeError> {
    check_keys(&o.prefix, &o.names)?;
    check_local(o)?;
    let mirrors: Vec<Arc<Mutex<Mirror>>> = o
        .names
        .iter()
        .map(|name| {
            let mut m = Mirror::new(name, format!("{}{name}", o.local_prefix), o.history);
            m.into_existing = o.into_existing;
            Arc::new(Mutex::new(m))
        })
        .collect();
    let result = loop {
        let session = match open_session_as(&o.endpoints, Role::Subscribe) {
            Ok(s) => s,
            Err(e) => break Err(e),
        };
        let renew = AtomicBool::new(false);
        let result = per_stream(&o.names, "subscriber", &[stop, &renew], |name, stop| {
            let i = o.names.iter().position(|n| n == name).unwrap_or_default();
            mirror(&session, o, name, &mirrors[i], stop, &renew)
        });
        let _ = session.close().wait();
        if let Err(e) = result {
            break Err(e);
        }
        if stop.load(Ordering::Relaxed) || !renew.load(Ordering::Relaxed) {
            break Ok(());
        }
        crate::say_line(format_args!(
            "shmstream-bridge: connecting again in a new Zenoh session (a new peer id)"
        ));
    };
    // Neither dropping a subscriber nor closing the session waits for a callback that is
    // running, and the process may exit next: wait here for a frame being written into a
    // local stream (the lock), and let no other start, so each mirror is left whole.
    for m in &mirrors {
        let mut m = m.lock().unwrap_or_else(PoisonError::into_inner);
        for line in m.close() {
            m.say(&line);
        }
    }
    result
}

/// Refuses, before anything is opened, options no frame could be mirrored with: a history
/// depth over the library's bound, a local name (`--local-prefix` + name) it refuses, and,
/// without [`SubscribeOptions::into_existing`], a local stream already there under a mirror's
/// name ([`not_ours`]; the first frame would find it and end the bridge, hours later
/// perhaps), and with it, one whose history depth is not the one asked (a history depth is
/// given only to a mirror the bridge creates). Each frame's open checks again for a stream
/// it did not create, made after this.
fn check_local(o: &SubscribeOptions) -> Result<(), BridgeError> {
    if o.history > MAX_HISTORY {
        return Err(BridgeError::Usage(format!(
            "--history {}: a stream keeps at most {MAX_HISTORY} frames: give a smaller depth",
            o.history
        )));
    }
    for name in &o.names {
        let local = format!("{}{name}", o.local_prefix);
        match shmstream::stat(&local) {
            Err(Error::InvalidName { reason, .. }) => {
                return Err(BridgeError::Usage(format!(
                    "stream '{name}': its mirror '{local}' is not a valid stream name \
                     ({reason}): give a shorter or other --local-prefix"
                )));
            }
            Ok(there) if !o.into_existing => {
                return Err(not_ours(name, &local, there.creator_pid));
            }
            Ok(there) if o.history > 0 && there.history != o.history => {
                let keeps = match there.history {
                    0 => "no history".to_owned(),
                    h => format!("a history of {h} frames"),
                };
                let n = o.history;
                let unlink = shmstream::name::unlink_remedy(&local);
                return Err(BridgeError::Usage(format!(
                    "stream '{name}': its mirror '{local}' keeps {keeps}, not the --history \
                     {n} given: --history applies only to a mirror this bridge creates; \
                     unlink the mirror ({unlink}) so it is made again with --history {n}, \
                     or drop --history to mirror into it as it is"
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The error for mirror `local` of remote stream `remote`: a local stream this bridge did
/// not create (made by process `creator`), refused without
/// [`SubscribeOptions::into_existing`]. A mirror of the remote's very name (no
/// `--local-prefix`) may be the stream a publisher on this host sends: that is said too.
fn not_ours(remote: &str, local: &str, creator: i64) -> BridgeError {
    let source = if local == remote {
        format!(
            "; if it is the stream a publisher on this host sends as '{remote}', it would be \
             the source stream itself and loop its frames back to the publisher"
        )
    } else {
        String::new()
    };
    let prefix = if local == remote {
        "give --local-prefix (e.g. --local-prefix remote-)"
    } else {
        "give another --local-prefix"
    };
    let unlink = shmstream::name::unlink_remedy(local);
    BridgeError::Usage(format!(
        "stream '{remote}': its mirror '{local}' is a local stream this bridge did not \
         create (process {creator} did): it may be the host's own stream of that name or \
         an earlier run's mirror, and mirroring into it would mix remote frames \
         into it{source}; {prefix} so the mirror is a stream of its own, unlink it \
         ({unlink}) if it is an earlier run's mirror no longer needed, \
         or give --into-existing to write into it (e.g. to continue an earlier run's \
         mirror after a restart)"
    ))
}

/// How long a subscriber waits for a publisher before it says, once, that none is there
/// ([`follow`]): a wrong `--connect` (host, port, a firewall) or `--key-prefix` is otherwise
/// never reported (Zenoh retries a connect for ever, saying its failures only in its debug
/// log). Long enough for a publisher started at the same time, or a connect's first retries.
const NO_PUBLISHER_AFTER: Duration = Duration::from_secs(5);

/// How long a query for a publisher's current frame waits for its reply.
const QUERY_WAIT: Duration = Duration::from_secs(5);
/// How often the mirror asks the publisher for its current frame again while its last frame
/// could not be written for want of a local stream that a new try could make
/// ([`Mirror::wants_frame_again`]): the local stream unlinked (as a refusal for a new shape
/// says to), or its create (or open) due to be tried again.
const ASK_AGAIN_EVERY: Duration = Duration::from_secs(1);

/// Mirrors remote stream `name` into `state` in `session` until `stop` is set, or until its
/// publisher goes: then sets `renew`, for [`subscribe`] to open the session anew.
///
/// Zenoh's receiving thread writes each frame into the local stream as it comes
/// ([`Mirror::write`]): no hand-off to a thread of ours, whose wake-up would lie on every
/// frame's path (a bare subscriber wakes its consumer once; so does a local stream, waking
/// its readers), and frames go in the order they arrive. The exception is a lossless
/// source's gap: this thread asks for the frames missed and writes the answer, the live
/// frames held meanwhile ([`recover`]).
///
/// A put reaches only the subscribers its publisher knows at that moment, and a publisher
/// puts its current frame again only when it goes from no matched subscriber to one; a
/// subscriber that arrives while another is matched would wait for the writer's next frame.
/// So each time a latest-value publisher's queryable appears (at the start, after a link
/// comes back), the mirror asks it for its current frame ([`ask`]).
fn mirror(
    session: &zenoh::Session,
    o: &SubscribeOptions,
    name: &str,
    state: &Arc<Mutex<Mirror>>,
    stop: &Stop,
    renew: &AtomicBool,
) -> Result<(), BridgeError> {
    let k = key(&o.prefix, name);
    let receiving = Arc::clone(state);
    let sub = session
        .declare_subscriber(k.clone())
        .callback(move |sample| {
            // A panic while writing poisons nothing we rely on: the stream is reopened or
            // the frame refused the next time.
            let mut m = receiving.lock().unwrap_or_else(PoisonError::into_inner);
            if !m.closed {
                m.write(&sample);
            }
        })
        .wait()
        .map_err(zenoh_err(format!("declaring the subscriber on {k}")))?;
    let querier = session
        .declare_querier(k.clone())
        .timeout(QUERY_WAIT)
        .wait()
        .map_err(zenoh_err(format!("declaring the querier on {k}")))?;
    // A ring channel: only the newest status matters.
    let publishers = querier
        .matching_listener()
        .with(RingChannel::new(1))
        .wait()
        .map_err(zenoh_err(format!("declaring the matching listener on {k}")))?;
    let mut resend = Resender::declare(session, &k)?;
    let shown = |v: &[String]| match v {
        [] => "none".to_owned(),
        v => v.join(" "),
    };
    let absent = format!(
        "no publisher on {k} after {NO_PUBLISHER_AFTER:?} (connect: {}, listen: {}, key \
         prefix: {}): check that `shmstream-bridge publish {name}` runs with that \
         --key-prefix, and that one side's --connect names the host and port the other \
         listens on, not blocked by a firewall",
        shown(&o.endpoints.connect),
        shown(&o.endpoints.listen),
        o.prefix
    );
    let result = follow(stop, state, &querier, &publishers, &mut resend, &k, &absent);
    if let Ok(Followed::PublisherGone) = result {
        renew.store(true, Ordering::Relaxed);
    }
    // The subscriber undeclared before the session closes; the mirror is closed (or kept
    // for the next session) by the caller, [`subscribe`].
    drop(sub);
    result.map(drop)
}

/// Why [`follow`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Followed {
    /// The bridge stops, or the session is to be opened anew for another stream.
    Stopped,
    /// The last publisher of the stream went.
    PublisherGone,
}

/// Asks each publisher on `k` that appears for its current frame, until `stop` is set or the
/// mirror fails; the result is the mirror's. While one is there, asks it again every
/// [`ASK_AGAIN_EVERY`] as long as its last frame could not be written for want of a local
/// stream that a new try could make ([`Mirror::wants_frame_again`]): a writer that wrote
/// once (a calibration map) and then changed shape sends nothing more, and its mirror,
/// unlinked as the refusal says, would otherwise not come back until it wrote again.
///
/// Says when a publisher appears and when the last one goes (its queryable, which a
/// lossless publisher declares too, matched or no longer), and `absent`, once, when none
/// has matched and no frame arrived within [`NO_PUBLISHER_AFTER`] of the bridge's start
/// ([`Mirror::absent_due`]). Returns as the last publisher goes, for the session to be
/// opened anew ([`subscribe`]).
fn follow(
    stop: &Stop,
    state: &Arc<Mutex<Mirror>>,
    querier: &Querier<'_>,
    publishers: &MatchingListener<RingChannelHandler<MatchingStatus>>,
    resend: &mut Resender<'_>,
    k: &str,
    absent: &str,
) -> Result<Followed, BridgeError> {
    // Whether a publisher is there, and when it was last asked.
    let mut matched = false;
    let mut asked = Instant::now();
    let remote = state
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remote
        .clone();
    let say = |line: &str| crate::say(&remote, line);
    while !stop.is_set() {
        if let Some(e) = state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .fatal
            .take()
        {
            return Err(e);
        }
        match publishers.recv_timeout(POLL) {
            Ok(Some(status)) => {
                if matched && !status.matching() {
                    say(&format!(
                        "publisher of {k} gone; the mirror keeps its last frame"
                    ));
                    return Ok(Followed::PublisherGone);
                }
                if status.matching() && !matched {
                    say(&format!("publisher of {k} appeared"));
                }
                matched = status.matching();
                if matched {
                    state
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .absent_due = None;
                    ask(querier, state, k)?;
                    asked = Instant::now();
                }
            }
            Ok(None) => {}
            // The session is closing: no status will come.
            Err(_) => std::thread::sleep(POLL),
        }
        let absent_now = state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .no_publisher_due(Instant::now());
        if absent_now {
            say(absent);
        }
        if matched
            && asked.elapsed() >= ASK_AGAIN_EVERY
            && state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .wants_frame_again()
        {
            ask(querier, state, k)?;
            asked = Instant::now();
        }
        resend.poll(state);
        recover(stop, state, resend, k)?;
    }
    Ok(Followed::Stopped)
}

/// Asks the publishers on `k` for their current frame, and writes a reply as a sample
/// ([`Mirror::write`]) only if no frame was written since: a reply never overwrites a newer
/// live frame.
fn ask(querier: &Querier<'_>, state: &Arc<Mutex<Mirror>>, k: &str) -> Result<(), BridgeError> {
    let asked_at = state.lock().unwrap_or_else(PoisonError::into_inner).written;
    let answering = Arc::clone(state);
    querier
        .get()
        .callback(move |reply| {
            if let Ok(sample) = reply.result() {
                let mut m = answering.lock().unwrap_or_else(PoisonError::into_inner);
                if !m.closed && m.written == asked_at {
                    m.write(sample);
                }
            }
        })
        .wait()
        .map_err(zenoh_err(format!("asking {k} for its current frame")))
}

/// One mirrored stream: its local name, and the local stream once a frame opened or
/// created it.
struct Mirror {
    /// The remote stream's name.
    remote: String,
    name: String,
    /// History depth of a local stream this bridge creates.
    history: usize,
    local: Option<Stream>,
    /// The instance id of `local`.
    local_id: [u8; 16],
    refusals: Refusals,
    /// Set when the bridge stops, or on a fatal error: no frame is written after.
    closed: bool,
    /// Why the mirror cannot go on (its thread ends the bridge with it).
    fatal: Option<BridgeError>,
    /// The local stream that could not be created, why, and when.
    uncreatable: Option<Uncreatable>,
    /// The last try to open the local stream, where it failed other than for want of one
    /// (see [`RETRY_OPEN`]); `None` once one opened it, or the stream was not there.
    unopenable: Option<Unopenable>,
    /// The (source, count, frame id, write time bits) of the last frame written: the same
    /// frame put again, or also answering a query, is not written twice.
    last: Option<([u8; 16], u64, u64, u64)>,
    /// Frames written so far.
    written: u64,
    /// Whether a frame (a sample, well-formed or not) arrived.
    received: bool,
    /// When to say that no publisher came ([`NO_PUBLISHER_AFTER`] after the mirror was
    /// made), unless one has matched or a frame arrived by then; `None` once a publisher
    /// matched or it was said: said once however often the session is opened anew.
    absent_due: Option<Instant>,
    /// The source instances whose frames arrived here.
    sources: Sources,
    /// Whether frames of several sources were said to arrive interleaved (said once).
    interleaving_said: bool,
    /// Whether frames without a source instance id were said to arrive (said once).
    unknown_source_said: bool,
    /// When the source without an instance id was last said to restart its count
    /// ([`Mirror::restarted`]).
    restart_said_at: Option<Instant>,
    /// When frames of a new source before its first one received were last said: at most
    /// every [`SUM_UP_EVERY`] (sources interleaving past
    /// [`SOURCES_KEPT`](sources::SOURCES_KEPT) are each new again).
    new_source_said_at: Option<Instant>,
    /// Lossless frames missed in transit.
    gaps: Losses,
    /// Whether the last well-formed frame received was not written (refused): then, if a
    /// new try could make its local stream, the publisher is asked for its frame again
    /// ([`Mirror::wants_frame_again`]).
    unwritten: bool,
    /// Whether a local stream this run did not create is mirrored into
    /// ([`SubscribeOptions::into_existing`]).
    into_existing: bool,
    /// When a frame was last refused for the write lock, where none got it since: the frames
    /// that follow within [`LOCK_OUT_LASTS`](write_lock::LOCK_OUT_LASTS) of it try the lock
    /// without waiting ([`LOCK_WAIT`](write_lock::LOCK_WAIT),
    /// [`LOSSLESS_LOCK_WAIT`](write_lock::LOSSLESS_LOCK_WAIT)), later ones wait as usual
    /// ([`lock_wait`]).
    locked_out: Option<Instant>,
    /// Lossless frames missed in transit asked for again, and what follows from it.
    resends: Resends,
}

impl Mirror {
    /// The mirror of remote stream `remote` into local stream `name`, which this bridge
    /// creates (where it has to) with `history` frames of history.
    fn new(remote: &str, name: String, history: usize) -> Mirror {
        Mirror {
            remote: remote.to_owned(),
            name,
            history,
            local: None,
            local_id: [0; 16],
            refusals: Refusals::default(),
            closed: false,
            fatal: None,
            uncreatable: None,
            unopenable: None,
            last: None,
            written: 0,
            received: false,
            absent_due: Some(Instant::now() + NO_PUBLISHER_AFTER),
            sources: Sources::default(),
            interleaving_said: false,
            unknown_source_said: false,
            restart_said_at: None,
            new_source_said_at: None,
            gaps: Losses::new(
                "lost in transit (put while the link or a subscriber was down) and not reported by the publisher",
            ),
            unwritten: false,
            into_existing: false,
            locked_out: None,
            resends: Resends::new(),
        }
    }

    /// Whether to say at `now` that no publisher came: the first time it is asked from
    /// [`Mirror::absent_due`] on, where no frame arrived by then.
    fn no_publisher_due(&mut self, now: Instant) -> bool {
        if self.absent_due.is_none_or(|at| now < at) {
            return false;
        }
        self.absent_due = None;
        !self.received
    }

    /// Whether asking the publisher for its current frame again could get it written: the
    /// last frame was refused, and its local stream is gone (unlinked, as a refusal for a new
    /// shape says to) or was not had (not there as it was opened, one it could not open gone
    /// since, or its create or open is due to be tried again, [`RETRY_CREATE`],
    /// [`RETRY_OPEN`]). Not for a refusal a new try would meet again (the lock held, the
    /// shape still the old one, an open or create that just failed: a corrupt header or
    /// another user's stream stays so, and each reply is a whole frame).
    fn wants_frame_again(&self) -> bool {
        !self.closed
            && self.unwritten
            && match &self.local {
                Some(s) => s.is_unlinked(),
                None => match &self.unopenable {
                    Some(u) => u.at.elapsed() >= RETRY_OPEN || !u.still_there(&self.name),
                    None => self
                        .uncreatable
                        .as_ref()
                        .is_none_or(|u| u.at.elapsed() >= RETRY_CREATE),
                },
            }
    }

    /// Writes no frame from now on (the bridge stops) and gives the lines still unsaid:
    /// losses and refusals not summed up yet, which would otherwise go unreported.
    fn close(&mut self) -> Vec<String> {
        self.closed = true;
        self.close_recovery();
        [self.gaps.rest(), self.refusals.rest()]
            .into_iter()
            .flatten()
            .collect()
    }

    /// Writes `sample` into the local stream under its write lock, taken for the frame alone
    /// (a local `unlink`, the remedy for a new upstream shape, or another tool gets it
    /// between frames), or refuses it on stderr, leaving the local stream as it was. A
    /// local stream unlinked meanwhile is opened (or created) again for the frame. The frame
    /// last written, received again (put again, or a reply), is skipped: local readers
    /// never see one publication twice.
    fn write(&mut self, sample: &Sample) {
        self.received = true;
        if let Some(h) = self.checked(sample)
            && !self.held_for_resend(sample, &h)
        {
            self.write_checked(sample, h);
        }
    }

    /// The header of `sample`, or `None` where it is refused (said).
    fn checked(&mut self, sample: &Sample) -> Option<FrameHeader> {
        let h = match check(sample) {
            Ok(h) => h,
            Err(reason) => {
                self.refuse(&reason);
                return None;
            }
        };
        if h.name_len != self.remote.len() {
            let reason = another_stream(sample.key_expr().as_str(), &self.remote, h.name_len);
            self.refuse(&reason);
            return None;
        }
        Some(h)
    }

    /// Writes `sample`, checked into `h`.
    fn write_checked(&mut self, sample: &Sample, h: FrameHeader) {
        if let Err(reason) = self.account(&h) {
            return self.refuse(&reason);
        }
        let id = (h.source, h.count, h.frame_id, h.write_time.to_bits());
        if self.last == Some(id) && self.local.as_ref().is_some_and(|s| !s.is_unlinked()) {
            return;
        }
        // Until it is written.
        self.unwritten = true;
        if self.local.is_none()
            && let Some(reason) = self.create_refused(&h)
        {
            let reason = reason.to_owned();
            return self.refuse(&reason);
        }
        if self.local.is_none()
            && let Some(reason) = self.open_refused()
        {
            let reason = reason.to_owned();
            return self.refuse(&reason);
        }
        // A frame of another source than the last written, sources having interleaved:
        // several publishers on one key. (Not whether this frame came back after another
        // source's: of two publishers, that flips with each one's runs of frames, and so
        // would the reason, each refusal then said on a line of its own.)
        let several = self.interleaving_said && self.last.is_some_and(|l| l.0 != h.source);
        for _ in 0..2 {
            // `found`: the local stream was opened for this frame, there before (not
            // created by this run).
            let (local, found) = match self.local.take() {
                Some(s) => (s, false),
                // Looked at before the open: a `_meta` replaced meanwhile is tried again.
                None => match (
                    meta_file(&self.name),
                    open_or_create(&self.name, &h, self.history),
                ) {
                    (_, Ok((s, created))) => {
                        self.unopenable = None;
                        self.local_id = crate::instance_of(&s);
                        (s, !created)
                    }
                    (meta, Err(Opening::Open(e))) => {
                        self.unopenable = open_failure_lasts(&e).then(|| Unopenable {
                            meta,
                            reason: e.to_string(),
                            at: Instant::now(),
                        });
                        return self.refuse(&e);
                    }
                    (_, Err(Opening::Create(e))) => {
                        self.unopenable = None;
                        let reason = format!("creating the mirror failed: {e}");
                        self.uncreatable = create_failure_lasts(&e).then(|| Uncreatable {
                            dtype: h.dtype,
                            shape: h.shape.clone(),
                            no_space: matches!(e, Error::NoSpace { .. }),
                            reason: reason.clone(),
                            at: Instant::now(),
                        });
                        return self.refuse(&reason);
                    }
                },
            };
            if h.source != [0; 16] && h.source == self.local_id {
                let hex: String = h.source.iter().map(|b| format!("{b:02x}")).collect();
                return self.fail(BridgeError::Usage(format!(
                    "stream '{}': its mirror '{}' is the source stream itself (instance id {hex}): \
                     writing into it would loop the frames back to the publisher; give \
                     --local-prefix (e.g. --local-prefix mirror-) so the mirror is a stream of its own",
                    self.remote, self.name
                )));
            }
            if found && !self.into_existing {
                let e = not_ours(&self.remote, &self.name, local.creator_pid());
                return self.fail(e);
            }
            // The mirror's last frame id, where this is the first frame this run writes,
            // lossless, into a mirror that holds frames (said once written, [`Mirror::resumed`]).
            let resumed_from =
                (self.written == 0 && h.lossless && local.count() > 0).then(|| local.frame_id());
            let wait = lock_wait(h.lossless, self.locked_out, Instant::now());
            let written = match local.lock(Some(wait)) {
                Ok(guard) => {
                    self.locked_out = None;
                    write_sample(&guard, sample, &h, several)
                }
                Err(Error::Stale { .. }) => Err(Refusal::Stale),
                Err(Error::Timeout { .. }) => {
                    self.locked_out = Some(Instant::now());
                    Err(Refusal::Reason(locked_out(
                        &self.name,
                        &self.remote,
                        h.lossless,
                    )))
                }
                Err(e) => Err(Refusal::Reason(e.to_string())),
            };
            match written {
                Ok(()) => {
                    self.local = Some(local);
                    self.last = Some(id);
                    self.resends.wrote(&h);
                    self.written += 1;
                    self.unwritten = false;
                    if let Some(before) = resumed_from {
                        self.resumed(&h, before);
                    }
                    if let Some(line) = self.refusals.end_run() {
                        self.say(&line);
                    }
                    return;
                }
                Err(Refusal::Stale) => {}
                Err(Refusal::Reason(r)) => {
                    self.local = Some(local);
                    return self.refuse(&r);
                }
            }
        }
        self.refuse(&"the local stream was unlinked again as it was reopened")
    }

    /// The reason a create of the mirror for `h` is not tried (the mirror not there): one
    /// that failed (no room, no permission) is not tried again on Zenoh's receiving thread
    /// for every frame, only after [`RETRY_CREATE`] (room freed or permission given
    /// meanwhile; a mirror someone made meanwhile is then found, and written only with
    /// `--into-existing`). One that failed for want of room is not tried for any shape
    /// meanwhile (a sender varying its shape would have a whole segment allocated at every
    /// frame); any other, not for that dtype and shape.
    fn create_refused(&self, h: &FrameHeader) -> Option<&str> {
        let u = self.uncreatable.as_ref()?;
        ((u.no_space || (u.dtype, u.shape.as_slice()) == (h.dtype, h.shape.as_slice()))
            && u.at.elapsed() < RETRY_CREATE)
            .then_some(u.reason.as_str())
    }

    /// The reason an open of the mirror is not tried (no local stream had): one that failed
    /// less than [`RETRY_OPEN`] ago, on the `_meta` still there.
    fn open_refused(&self) -> Option<&str> {
        let u = self.unopenable.as_ref()?;
        (u.at.elapsed() < RETRY_OPEN && u.still_there(&self.name)).then_some(u.reason.as_str())
    }

    /// Follows the sources of the frames that arrive: says once when several interleave
    /// (publishers on one key). Of a lossless frame, counts (and says) the frames not
    /// received before `h`, gaps in the counts of its source, and says those of a new source
    /// before its first one received. Err: why `h` is refused, a lossless frame whose count
    /// goes back from its source's newest received, or repeats it with another frame id (not
    /// the newest, or the frame last written, again: a frame refused for the lock and put
    /// again by a restarted publisher is written): a lossless mirror keeps the frames in
    /// order.
    ///
    /// A frame without a source instance id (all zeros: a source stream of a writer that
    /// gives none) is followed as one source, by its count, gaps counted as for any: a
    /// lossless one whose count goes back (or repeats with another frame id) to its start
    /// (no frame before it uncarried, [`uncarried`]: count 1, or 1 past the frames the
    /// publisher reported lost since) is taken for that source made again, followed anew
    /// from it ([`Mirror::restarted`]); one going back elsewhere (late, repeated) is refused
    /// as for any source. Frames of several such publishers on one key cannot be told apart
    /// (they show as gaps, restarts and refusals); that is said once.
    fn account(&mut self, h: &FrameHeader) -> Result<(), String> {
        let unknown = h.source == [0; 16];
        if unknown && !std::mem::replace(&mut self.unknown_source_said, true) {
            self.say(&format!(
                "frames of remote stream '{}' carry no source instance id (its writer gives \
                 none): they are followed as of one source, by count (frames lost in transit \
                 counted; a lossless count going back to its start taken for the source made \
                 again and followed anew, one going back elsewhere refused as out of order); \
                 frames of several publishers on its key cannot be told apart here and would \
                 show as gaps, restarts and refusals",
                self.remote
            ));
        }
        let mut behind = None;
        match self.sources.arrived(h) {
            Arrival::First => {}
            Arrival::Known {
                last,
                last_id,
                back,
            } => {
                let again = self.last.is_some_and(|(src, count, id, _)| {
                    (src, count, id) == (h.source, h.count, h.frame_id)
                });
                let out_of_order = h.count < last.0 || (h.count == last.0 && h.frame_id != last_id);
                if h.lossless && out_of_order && !again {
                    if unknown && uncarried(last.1, h) == 0 {
                        self.restarted(last.0, h);
                    } else {
                        behind = Some(last.0);
                    }
                } else if h.lossless {
                    self.gaps.lost(missed(last, h));
                }
                if back && !std::mem::replace(&mut self.interleaving_said, true) {
                    self.say(&format!(
                        "frames of several source streams '{}' arrive interleaved (several \
                         publishers on one --key-prefix) and are mixed in this mirror: give \
                         each publisher its own --key-prefix",
                        self.remote
                    ));
                }
            }
            Arrival::New { lost } => self.new_source(lost, h),
        }
        if let Some(line) = self.gaps.due() {
            self.say(&line);
        }
        match behind {
            Some(newest) => Err(format!(
                "a lossless frame at count {} (frame id {}) after its source's frame at count \
                 {newest}: out of order or repeated, and a lossless mirror keeps the frames in \
                 order (two publishers of one source on one key? give each its own \
                 --key-prefix)",
                h.count, h.frame_id
            )),
            None => Ok(()),
        }
    }

    /// Says, of `h`, the first lossless frame of a new source generation received here, the
    /// frames of it before that were not carried ([`new_source_line`]), `lost` the losses
    /// reported with the frame received before it: at most every [`SUM_UP_EVERY`].
    fn new_source(&mut self, lost: u64, h: &FrameHeader) {
        if h.lossless
            && let Some(line) = new_source_line(lost, h)
            && self
                .new_source_said_at
                .is_none_or(|t| t.elapsed() >= SUM_UP_EVERY)
        {
            self.new_source_said_at = Some(Instant::now());
            self.say(&line);
        }
    }

    /// `h`, a lossless frame without a source instance id, went back to its start from that
    /// source's newest received, at count `last` (no frame of it before `h` uncarried):
    /// taken for the source made again, followed anew from `h` (its later frames counted
    /// from it), said at most every [`SUM_UP_EVERY`] (two such publishers interleaving would
    /// restart at every frame).
    fn restarted(&mut self, last: u64, h: &FrameHeader) {
        self.sources.follow_anew(h);
        if self
            .restart_said_at
            .is_none_or(|t| t.elapsed() >= SUM_UP_EVERY)
        {
            self.restart_said_at = Some(Instant::now());
            self.say(&format!(
                "the source without an instance id restarted its count (a lossless frame at \
                 count {} after count {}); following it anew",
                h.count, last
            ));
        }
    }

    /// The first frame this run wrote, `h`, lossless, into a mirror that held frames, the
    /// last of frame id `before` (a restarted subscriber's, `--into-existing`): frames the
    /// publisher put to the one before it as it went away are not known here, so that
    /// possible gap is said. Said once written: a mirror refused is not resumed.
    fn resumed(&self, h: &FrameHeader, before: u64) {
        self.say(&format!(
            "resumed at the publisher's frame count {} (frame id {}) into a mirror that holds \
             frames (the last, frame id {before}): frames put as the previous subscriber went \
             away are not known here and may be missing",
            h.count, h.frame_id
        ));
    }

    /// Stops the mirror for good: nothing more is written, and its thread ends the bridge
    /// with `e`.
    fn fail(&mut self, e: BridgeError) {
        self.local = None;
        self.closed = true;
        self.fatal.get_or_insert(e);
    }

    /// Says why a frame was refused: the first of a run of frames refused for one reason,
    /// then how many more were, when the reason changes or every [`SUM_UP_EVERY`] (a sender
    /// that keeps sending a bad frame at its rate must not fill the log, nor frames refused
    /// between written ones: [`Refusals`]).
    fn refuse(&mut self, reason: &dyn std::fmt::Display) {
        for line in self.refusals.refused(reason.to_string(), Instant::now()) {
            self.say(&line);
        }
    }

    fn say(&self, line: &str) {
        crate::say(&self.name, line);
    }
}

/// Why a checked frame was not written.
enum Refusal {
    /// The local stream was unlinked: open it again.
    Stale,
    /// Anything else, said on stderr; the local stream is left as it was.
    Reason(String),
}

/// The header of a sample whose attachment decodes and whose payload has the size the
/// header gives; the error is the reason it is refused.
fn check(sample: &Sample) -> Result<FrameHeader, String> {
    let att = sample
        .attachment()
        .ok_or("no attachment (not sent by shmstream-bridge)")?;
    let h = FrameHeader::decode(&att.to_bytes())?;
    // Decoded: its size is bounded.
    let bytes = h.frame_bytes().map_err(|e| e.to_string())?;
    let len = sample.payload().len();
    if len != bytes {
        return Err(format!(
            "payload of {len} bytes, but its header says {} {:?} ({bytes} bytes)",
            h.dtype, h.shape,
        ));
    }
    Ok(h)
}

/// The reason a frame on key `k` is refused for remote stream `remote` when its attachment
/// gives its source stream's name as `name_len` bytes long: the publisher's stream is another,
/// whose name and key prefix split the key elsewhere (names holding `/`: `c` under prefix
/// `a/b` and `b/c` under `a` share key `a/b/c`).
fn another_stream(k: &str, remote: &str, name_len: usize) -> String {
    // At a '/', the last byte of the prefix's key.
    let split = |n: usize| {
        let at = k.len().checked_sub(n)?;
        let slash = at.checked_sub(1)?;
        (k.as_bytes()[slash] == b'/').then_some((k.get(..slash)?, k.get(at..)?))
    };
    let ours = split(remote.len()).map_or(String::new(), |(prefix, _)| {
        format!(" under --key-prefix '{prefix}'")
    });
    match split(name_len) {
        Some((prefix, name)) => format!(
            "a frame of stream '{name}' under --key-prefix '{prefix}', not of stream \
             '{remote}'{ours}: both have key '{k}': give that publisher or this stream's \
             another --key-prefix"
        ),
        None => format!(
            "a frame whose source stream name is {name_len} bytes long, not the {} of \
             '{remote}', on key '{k}' (sent by another program?)",
            remote.len()
        ),
    }
}

/// Writes a checked sample into the locked local stream, straight from the pieces Zenoh
/// received it in.
/// `several`: frames of several sources interleave, the last written another's than `h`'s
/// (the cause of a shape that differs, said).
fn write_sample(
    guard: &WriteGuard<'_>,
    sample: &Sample,
    h: &FrameHeader,
    several: bool,
) -> Result<(), Refusal> {
    let s = guard.stream();
    if s.dtype() != h.dtype || s.shape() != h.shape.as_slice() {
        if s.is_unlinked() {
            // Unlinked (to follow the new shape, as the refusal says): open or create again.
            return Err(Refusal::Stale);
        }
        let remedy = if several {
            "several publishers on one key: give each its own --key-prefix".to_owned()
        } else {
            format!(
                "unlink it ({}) to follow the new shape if it is this bridge's mirror, else \
                 mirror into another local stream (--local-prefix)",
                shmstream::name::unlink_remedy(s.name())
            )
        };
        return Err(Refusal::Reason(format!(
            "upstream sends {} {:?}, the local stream holds {} {:?}: {remedy}",
            h.dtype,
            h.shape,
            s.dtype(),
            s.shape()
        )));
    }
    // A bool byte other than 0 or 1 (a pyshmem writer's uint8 mask viewed as bool, sent as
    // it is) is written as numpy reads it: nonzero is true. Local writes take only 0 or 1.
    let bools = h.dtype == Dtype::Bool;
    let fill = |frame: &mut [u8]| -> Result<(), &'static str> {
        let mut at = 0;
        for piece in sample.payload().slices() {
            let dst = frame
                .get_mut(at..at + piece.len())
                .ok_or("the payload outgrew the frame")?;
            if bools {
                for (d, &b) in dst.iter_mut().zip(piece) {
                    *d = u8::from(b != 0);
                }
            } else {
                dst.copy_from_slice(piece);
            }
            at += piece.len();
        }
        Ok(())
    };
    match guard.write_bytes_view_frame(h.frame_id, fill) {
        Ok(()) => Ok(()),
        Err(Error::Stale { .. }) => Err(Refusal::Stale),
        Err(e) => Err(Refusal::Reason(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame whose mirror could not be created for want of a file descriptor does not get
    /// the next frame refused for [`RETRY_CREATE`]: once descriptors are free again, it is
    /// created and written. In a child process of its own, whose descriptors it uses up.
    #[test]
    fn a_transient_create_failure_does_not_refuse_the_next_frame() {
        const CHILD: &str = "SHMSTREAM_BRIDGE_TEST_CREATE_EMFILE";
        let test = "subscribe::tests::a_transient_create_failure_does_not_refuse_the_next_frame";
        let Some(name) = std::env::var_os(CHILD) else {
            let name = format!("br-emfile-{}", std::process::id());
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", test, "--test-threads=1", "--nocapture"])
                .env(CHILD, &name)
                .output()
                .unwrap();
            let _ = shmstream::unlink(&name);
            let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{text}");
            assert!(text.contains("1 passed"), "the child ran no test: {text}");
            return;
        };
        let name = name.into_string().unwrap();
        let h = FrameHeader {
            lossless: true,
            ..h(1, 1, 0)
        };
        // Every descriptor but one taken: the open finds no stream, and the create takes the
        // last one (for `/dev/null`, opened before the name's lock file) and then finds none
        // for the lock file or its segments.
        let limit = libc::rlimit {
            rlim_cur: 64,
            rlim_max: 64,
        };
        // SAFETY: `limit` is a valid rlimit; lowering our own limit only.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
        let mut taken = Vec::new();
        while let Ok(f) = std::fs::File::open("/dev/null") {
            taken.push(f);
        }
        taken.pop();
        let mut m = Mirror::new("cam0", name.clone(), 0);
        m.write(&sample_of(&h));
        assert_eq!(m.written, 0, "written with no descriptor free");
        let reason = m.refusals.last_reason().unwrap();
        assert!(
            reason.starts_with("creating the mirror failed") && reason.contains("ulimit -n"),
            "not a create out of descriptors: {reason}"
        );
        drop(taken);
        let h2 = FrameHeader {
            count: 2,
            frame_id: 2,
            ..h
        };
        assert!(m.wants_frame_again(), "the frame is not asked for again");
        m.write(&sample_of(&h2));
        assert_eq!(m.written, 1, "the next frame was refused");
        assert_eq!(shmstream::Stream::open(&name).unwrap().frame_id(), 2);
    }

    /// A lossless frame of source instance `source` ([u8; 16] of it) at `count`, its
    /// publisher having reported `lost` frames lost.
    pub(super) fn h(source: u8, count: u64, lost: u64) -> FrameHeader {
        FrameHeader {
            dtype: Dtype::U8,
            shape: vec![1],
            frame_id: count,
            count,
            write_time: 0.0,
            source: [source; 16],
            lossless: true,
            lost,
            // "cam0", the remote stream of the subscriber's test mirrors.
            name_len: 4,
        }
    }

    /// A sample on "cam0" of the frame `h` describes, each byte the frame id's.
    pub(super) fn sample_of(h: &FrameHeader) -> Sample {
        let bytes = h.frame_bytes().unwrap();
        zenoh::sample::SampleBuilder::put(
            zenoh::key_expr::KeyExpr::try_from("cam0").unwrap(),
            vec![h.frame_id as u8; bytes],
        )
        .attachment(h.encode().unwrap())
        .into()
    }

    /// A source made again with another shape (one publisher, a new instance id) has its
    /// frame refused with the remedy for a new shape, to unlink the mirror: "several
    /// publishers on one key" is said only where sources were seen interleaving.
    #[test]
    fn a_source_made_again_with_another_shape_is_refused_saying_to_unlink_the_mirror() {
        let name = format!("br-reshaped-{}", std::process::id());
        let _ = shmstream::unlink(&name);
        let mut m = Mirror::new("cam0", name.clone(), 0);
        m.write(&sample_of(&h(1, 1, 0)));
        let reshaped = FrameHeader {
            shape: vec![2],
            ..h(2, 1, 0)
        };
        m.write(&sample_of(&reshaped));
        let (written, reason) = (m.written, m.refusals.last_reason().map(str::to_owned));
        drop(m);
        let _ = shmstream::unlink(&name);
        assert_eq!(written, 1);
        let reason = reason.expect("the new shape refused");
        assert!(
            reason.contains("to follow the new shape") && !reason.contains("several"),
            "{reason}"
        );
    }

    /// Two publishers of streams of one name on one key prefix (two hosts' `cam0`): each
    /// source's frames are compared with its own, never with the other's.
    #[test]
    fn interleaved_sources_count_no_gaps() {
        let mut m = Mirror::new("cam0", "br-no-such-mirror".into(), 0);
        // A at counts 100 to 109, having reported 5 lost; B at 10 to 19, none.
        for count in 100..110 {
            m.account(&h(1, count, 5)).unwrap();
            m.account(&h(2, count - 90, 0)).unwrap();
            assert_eq!(m.gaps.total, 0);
        }
        assert!(m.interleaving_said);
        // Each source's gap of 2, against its own count and losses: 1 reported by each.
        m.account(&h(1, 112, 6)).unwrap();
        m.account(&h(2, 22, 1)).unwrap();
        assert_eq!(m.gaps.total, 1 + 1);
    }

    /// Latest-value frames carry their source too: two publishers on one key interleaving
    /// are said (they were not: only lossless frames were followed), and no gaps counted.
    #[test]
    fn interleaved_latest_value_sources_are_said_and_count_no_gaps() {
        let mut m = Mirror::new("cam0", "br-no-such-mirror".into(), 0);
        let latest = |source, count| FrameHeader {
            lossless: false,
            ..h(source, count, 0)
        };
        assert_eq!(m.account(&latest(1, 100)), Ok(()));
        assert_eq!(m.account(&latest(2, 10)), Ok(()), "a new source");
        assert!(!m.interleaving_said);
        assert_eq!(m.account(&latest(1, 105)), Ok(()), "back after another's");
        assert!(m.interleaving_said);
        assert_eq!(m.account(&latest(1, 110)), Ok(()));
        // Frames skipped, older ones after newer: latest value, none of it counted or refused.
        assert_eq!(m.account(&latest(2, 50)), Ok(()));
        assert_eq!(m.account(&latest(2, 40)), Ok(()));
        assert_eq!(m.gaps.total, 0);
    }

    /// A lossless frame of a source whose count repeats (another frame id) or goes back is
    /// refused, saying why; the frame last written, received again, is not.
    #[test]
    fn a_lossless_frame_out_of_order_is_refused() {
        let mut m = Mirror::new("cam0", "br-no-such-mirror".into(), 0);
        assert_eq!(m.account(&h(1, 10, 0)), Ok(()));
        let e = m.account(&h(1, 9, 0)).unwrap_err();
        assert!(
            e.starts_with(
                "a lossless frame at count 9 (frame id 9) after its source's frame at count 10: \
                 out of order or repeated"
            ),
            "{e}"
        );
        let again = FrameHeader {
            frame_id: 77,
            ..h(1, 10, 0)
        };
        assert!(
            m.account(&again).is_err(),
            "count 10 again, another frame id"
        );
        // The frame last written, put again: left to the check that skips it.
        m.last = Some(([1; 16], 10, 10, 0));
        assert_eq!(m.account(&h(1, 10, 0)), Ok(()));
        assert_eq!(m.account(&h(1, 11, 0)), Ok(()));
        assert_eq!(m.gaps.total, 0);
    }

    /// A lossless frame refused (its mirror locked over a second) and put again, with its
    /// count and frame id, by a restarted publisher is written: its count is its source's
    /// newest received, not past the frame last written, and it was refused as "out of
    /// order or repeated", lost for good.
    #[test]
    fn a_lossless_frame_refused_and_put_again_is_not_refused_as_repeated() {
        let mut m = Mirror::new("cam0", "br-no-such-mirror".into(), 0);
        assert_eq!(m.account(&h(1, 9, 0)), Ok(()));
        m.last = Some(([1; 16], 9, 9, 0));
        // Frame 10 arrives and is refused for the lock: the frame last written stays 9.
        assert_eq!(m.account(&h(1, 10, 0)), Ok(()));
        assert_eq!(m.account(&h(1, 10, 0)), Ok(()), "frame 10 put again");
        let other = FrameHeader {
            frame_id: 77,
            ..h(1, 10, 0)
        };
        assert!(m.account(&other).is_err(), "count 10, another frame id");
        assert!(m.account(&h(1, 9, 0)).is_ok(), "the frame last written");
        assert!(m.account(&h(1, 8, 0)).is_err(), "an older one");
        assert_eq!(m.gaps.total, 0);
    }

    /// A create that failed for want of room is not tried again for a frame of another
    /// shape before [`RETRY_CREATE`] (a sender varying one dimension had a whole segment
    /// allocated at every frame); another failure is remembered for its shape alone.
    #[test]
    fn a_create_failed_for_want_of_room_is_not_tried_again_for_any_shape() {
        let mut m = Mirror::new("cam0", "br-no-such-mirror".into(), 0);
        let shaped = |shape: usize| FrameHeader {
            shape: vec![shape],
            ..h(1, 1, 0)
        };
        assert_eq!(m.create_refused(&shaped(4)), None, "nothing failed");
        let reason = "creating the mirror failed: no room".to_owned();
        for no_space in [true, false] {
            m.uncreatable = Some(Uncreatable {
                dtype: Dtype::U8,
                shape: vec![4],
                no_space,
                reason: reason.clone(),
                at: Instant::now(),
            });
            assert_eq!(m.create_refused(&shaped(4)), Some(reason.as_str()));
            let other = m.create_refused(&shaped(5));
            assert_eq!(other.is_some(), no_space, "no space {no_space}");
        }
        // The frame refused is asked for again only once a create is due again.
        m.unwritten = true;
        assert!(
            !m.wants_frame_again(),
            "asked for again before RETRY_CREATE"
        );
        // Due again after RETRY_CREATE.
        if let Some(at) = Instant::now().checked_sub(RETRY_CREATE) {
            m.uncreatable.as_mut().unwrap().at = at;
            assert_eq!(m.create_refused(&shaped(4)), None);
            assert!(
                m.wants_frame_again(),
                "not asked for again after RETRY_CREATE"
            );
        }
    }

    /// That no publisher came is said once, at [`NO_PUBLISHER_AFTER`] and not before,
    /// however often it is asked (each session the subscriber opens asks), and not where a
    /// frame arrived or a publisher matched (which clears the due time) by then.
    #[test]
    fn no_publisher_is_said_once_when_due_and_only_where_nothing_arrived() {
        let mut m = Mirror::new("cam0", "m-cam0".into(), 0);
        let due = m.absent_due.unwrap();
        assert!(due > Instant::now() + NO_PUBLISHER_AFTER - Duration::from_secs(1));
        assert!(!m.no_publisher_due(due - Duration::from_millis(1)));
        assert!(m.no_publisher_due(due));
        assert!(!m.no_publisher_due(due), "said once");
        assert!(!m.no_publisher_due(due + NO_PUBLISHER_AFTER), "said once");
        let mut m = Mirror::new("cam0", "m-cam0".into(), 0);
        m.received = true;
        let due = m.absent_due.unwrap();
        assert!(!m.no_publisher_due(due), "a frame arrived");
        assert!(m.absent_due.is_none());
        let mut m = Mirror::new("cam0", "m-cam0".into(), 0);
        m.absent_due = None;
        assert!(
            !m.no_publisher_due(due + NO_PUBLISHER_AFTER),
            "a publisher matched"
        );
    }

    /// Losses and refusals not summed up yet when the bridge stops are said then, not lost
    /// with it; the mirror writes nothing more.
    #[test]
    fn what_is_unsaid_at_close_is_said() {
        let mut m = Mirror::new("cam0", "m-cam0".into(), 0);
        assert!(m.close().is_empty(), "nothing unsaid");
        let mut m = Mirror::new("cam0", "m-cam0".into(), 0);
        m.refuse(&"no attachment");
        m.refuse(&"no attachment");
        m.gaps.lost(1);
        m.gaps.lost(2);
        let lines = m.close();
        assert!(m.closed);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with("3 frame(s) lost in transit"),
            "{lines:?}"
        );
        assert_eq!(
            lines[1],
            "refused 1 more frame(s) for the same reason: no attachment"
        );
    }

    /// Frames without a source instance id (all zeros) are followed by count: gaps are
    /// counted, and a lossless source made again, from count 1, is followed anew, not refused
    /// as out of order until its count passed the old one's. (They were not followed at all
    /// for a while: frames lost in transit went unreported.)
    #[test]
    fn frames_without_a_source_id_are_followed_by_count_and_a_restart_anew() {
        let mut m = Mirror::new("cam0", "br-no-such-mirror".into(), 0);
        assert_eq!(m.account(&h(0, 10, 0)), Ok(()));
        assert!(m.unknown_source_said);
        assert_eq!(m.account(&h(0, 13, 0)), Ok(()));
        assert_eq!(m.gaps.total, 2, "frames 11 and 12 lost in transit");
        assert!(m.restart_said_at.is_none());
        assert_eq!(m.account(&h(0, 1, 0)), Ok(()), "made again, from count 1");
        assert!(m.restart_said_at.is_some(), "the restart not said");
        assert_eq!(m.account(&h(0, 2, 0)), Ok(()));
        assert_eq!(m.gaps.total, 2, "a gap counted across the restart");
        assert_eq!(m.account(&h(0, 5, 0)), Ok(()));
        assert_eq!(m.gaps.total, 4, "frames 3 and 4 of the new generation");
        // Made again with one frame: count 1 again, another frame id. (A restart is said
        // at most every SUM_UP_EVERY.)
        let said = m.restart_said_at;
        assert_eq!(m.account(&h(0, 1, 0)), Ok(()));
        assert_eq!(m.restart_said_at, said, "said again within SUM_UP_EVERY");
        let other = FrameHeader {
            frame_id: 77,
            ..h(0, 1, 0)
        };
        assert_eq!(m.account(&other), Ok(()));
        // The frame last written, received again, is no restart.
        m.last = Some(([0; 16], 1, 77, 0));
        assert_eq!(m.account(&h(0, 2, 0)), Ok(()));
        assert_eq!(m.account(&other), Ok(()));
        assert_eq!(m.account(&h(0, 4, 0)), Ok(()));
        assert_eq!(m.gaps.total, 5, "frame 3: counted from 2, not from 1");
        // A source with an id is still refused out of order.
        assert_eq!(m.account(&h(1, 10, 0)), Ok(()));
        assert!(m.account(&h(1, 9, 0)).is_err());

        // A late frame is no restart: refused as out of order (the mirror never goes back),
        // the newest left at 12, so 13 counts nothing lost.
        let mut m = Mirror::new("cam0", "br-no-such-mirror".into(), 0);
        assert_eq!(m.account(&h(0, 10, 0)), Ok(()));
        assert_eq!(m.account(&h(0, 12, 0)), Ok(()));
        assert_eq!(m.gaps.total, 1, "frame 11 not received yet");
        let late = m.account(&h(0, 11, 0)).unwrap_err();
        assert!(
            late.contains(
                "at count 11 (frame id 11) after its source's frame at count 12: out of order"
            ),
            "{late}"
        );
        assert!(
            m.restart_said_at.is_none(),
            "a late frame taken for a restart"
        );
        assert_eq!(m.account(&h(0, 13, 0)), Ok(()));
        assert_eq!(m.gaps.total, 1, "frame 12, received, counted lost");
        // Nor is a repeated one with another frame id, far from the start.
        let repeated = FrameHeader {
            frame_id: 77,
            ..h(0, 13, 0)
        };
        assert!(m.account(&repeated).is_err());
        // Back to its start past the frames the publisher reported lost: made again.
        assert!(m.account(&h(0, 4, 2)).is_err(), "frame 3 not reported");
        assert_eq!(
            m.account(&h(0, 3, 2)),
            Ok(()),
            "frames 1 and 2 reported lost"
        );
        assert!(m.restart_said_at.is_some(), "the restart not said");
        assert_eq!(m.account(&h(0, 4, 2)), Ok(()));
        assert_eq!(m.gaps.total, 1);
    }

    /// A key split by the attachment's name length where no '/' is named no stream: the
    /// generic reason, not a stream 'am0' under --key-prefix 'pfx/c'.
    #[test]
    fn a_name_length_that_splits_no_key_names_no_stream() {
        let generic = another_stream("pfx/cam0", "cam0", 3);
        assert!(
            generic.starts_with("a frame whose source stream name is 3 bytes long, not the 4 of"),
            "{generic}"
        );
        for n in [0, 8, 9] {
            let e = another_stream("pfx/cam0", "cam0", n);
            assert!(
                e.starts_with("a frame whose source stream name is"),
                "{n}: {e}"
            );
        }
        let named = another_stream("a/b/c", "c", 3);
        assert!(
            named.starts_with(
                "a frame of stream 'b/c' under --key-prefix 'a', not of stream 'c' under \
                 --key-prefix 'a/b'"
            ),
            "{named}"
        );
    }

    /// A local stream under the mirror's very name (no --local-prefix) may be the stream a
    /// publisher on this host sends: the refusal at start says it would loop frames back (it
    /// said so only with --into-existing, at the first frame).
    #[test]
    fn a_mirror_of_the_remote_name_is_refused_saying_it_may_loop_back() {
        let loops = "it would be the source stream itself and loop its frames back";
        let e = not_ours("cam0", "cam0", 7).to_string();
        assert!(
            e.contains(loops) && e.contains("give --local-prefix"),
            "{e}"
        );
        let e = not_ours("cam0", "m-cam0", 7).to_string();
        assert!(!e.contains(loops), "{e}");
        // A --local-prefix was given: another one, or the unlink of an old mirror.
        assert!(
            e.contains("give another --local-prefix")
                && !e.contains("e.g. --local-prefix")
                && e.contains("`shmstream unlink m-cam0`"),
            "{e}"
        );
        // A name a shell would split is quoted in the command to copy.
        let e = not_ours("my cam", "m-my cam", 7).to_string();
        assert!(e.contains("`shmstream unlink 'm-my cam'`"), "{e}");
    }
}
