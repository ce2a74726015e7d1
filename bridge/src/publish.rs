//! Local streams → Zenoh: one thread per stream waits for its frames and puts each one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use shmstream::{Cursor, Error, FrameInfo, Stream, WaitStrategy};
use zenoh::Wait;
use zenoh::handlers::{RingChannel, RingChannelHandler};
use zenoh::matching::{MatchingListener, MatchingStatus};
use zenoh::pubsub::Publisher;
use zenoh::qos::CongestionControl;
use zenoh::query::{Query, Queryable};

use crate::codec::{FrameHeader, MAX_FRAME_BYTES};
use crate::resend::{LossLog, Requests};
use crate::{
    BridgeError, Endpoints, Losses, POLL, Stop, check_keys, key, open_session, per_stream, say,
    zenoh_err,
};

/// What [`publish`] carries and how.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// Local stream names.
    pub names: Vec<String>,
    /// Zenoh endpoints.
    pub endpoints: Endpoints,
    /// Key prefix: stream `NAME` goes on `PREFIX/NAME`.
    pub prefix: String,
    /// At most this many frames per second per stream (the newest frame at each slot).
    pub max_rate: Option<f64>,
    /// Every frame, through a history cursor, with congestion control *block*: of a stream
    /// there at the start from its current frame on (from the next where the current one
    /// is not in the history: a pyshmem write), of one made (again) while the bridge waits
    /// for it from its first frame.
    pub lossless: bool,
}

/// Publishes until `stop` is set (checked every 100 ms) or a stream fails. Says on stderr
/// when it starts carrying a stream (`stream 'NAME': carrying (lossless) from its first
/// frame`), once each time it opens one.
pub fn publish(o: &PublishOptions, stop: &AtomicBool) -> Result<(), BridgeError> {
    check_keys(&o.prefix, &o.names)?;
    if o.lossless && o.max_rate.is_some() {
        return Err(BridgeError::Usage(
            "--max-rate keeps only the latest frame at each slot, --lossless every frame: \
             give one of them"
                .into(),
        ));
    }
    let period = o.max_rate.map(period_of).transpose()?;
    let session = open_session(&o.endpoints)?;
    let result = per_stream(&o.names, "publisher", &[stop], |name, stop| {
        publish_stream(&session, o, period, name, stop)
    });
    let _ = session.close().wait();
    result
}

/// Refuses stream `name` of frames of `bytes` over [`MAX_FRAME_BYTES`]: the subscriber would
/// refuse each one, and Zenoh drop it before that ([`crate::codec::MAX_MESSAGE_BYTES`]).
fn check_carried(name: &str, bytes: usize) -> Result<(), BridgeError> {
    if bytes as u64 <= MAX_FRAME_BYTES {
        return Ok(());
    }
    Err(BridgeError::Usage(format!(
        "stream '{name}': its frames of {bytes} bytes are over the {MAX_FRAME_BYTES} bytes \
         (1 GiB) the bridge carries: split it into smaller streams, or carry a smaller one \
         (cropped, binned or of a narrower dtype)"
    )))
}

/// The pause between two frames that `--max-rate rate` asks for.
fn period_of(rate: f64) -> Result<Duration, BridgeError> {
    match Duration::try_from_secs_f64(1.0 / rate) {
        Ok(p) if rate > 0.0 && rate.is_finite() => Ok(p),
        _ => Err(BridgeError::Usage(format!(
            "--max-rate {rate}: give a positive, finite number of frames per second of at least 1e-19"
        ))),
    }
}

/// Threads of a lossless stream that answer subscribers' requests for frames again, each
/// one request at a time: subscribers asking at once after a cut are answered together.
const ANSWERING_THREADS: usize = 4;

/// Carries stream `name`; lossless, with [`ANSWERING_THREADS`] threads beside that answer
/// subscribers' requests for frames again ([`crate::resend`]).
fn publish_stream(
    session: &zenoh::Session,
    o: &PublishOptions,
    period: Option<Duration>,
    name: &str,
    stop: &Stop,
) -> Result<(), BridgeError> {
    if !o.lossless {
        return carry(session, o, period, name, stop, None);
    }
    let requests = Requests::declare(session, &key(&o.prefix, name))?;
    let losses = LossLog::default();
    let done = AtomicBool::new(false);
    /// Sets `done` however the scope's body ends (a failed spawn included), so that the
    /// answering threads already started end and the scope returns.
    struct Done<'a>(&'a AtomicBool);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    std::thread::scope(|scope| {
        let _done = Done(&done);
        for _ in 0..ANSWERING_THREADS {
            std::thread::Builder::new()
                .name(format!("resend {}", name.escape_debug()))
                .spawn_scoped(scope, || requests.serve(name, &losses, stop, &done))
                .map_err(|e| {
                    BridgeError::Usage(format!(
                        "stream '{name}': starting its resend thread failed ({e})"
                    ))
                })?;
        }
        carry(session, o, period, name, stop, Some(&losses))
    })
}

/// Carries stream `name` until `stop`: waits for it to be made (again), and puts its
/// frames. Lossless, the losses it reports are logged in `losses_log` too.
fn carry(
    session: &zenoh::Session,
    o: &PublishOptions,
    period: Option<Duration>,
    name: &str,
    stop: &Stop,
    losses_log: Option<&LossLog>,
) -> Result<(), BridgeError> {
    let k = key(&o.prefix, name);
    let publisher = session
        .declare_publisher(k.clone())
        .congestion_control(if o.lossless {
            CongestionControl::Block
        } else {
            CongestionControl::Drop
        })
        .express(true)
        .wait()
        .map_err(zenoh_err(format!("declaring the publisher on {k}")))?;
    let mut link = Link::declare(session, &publisher, &k, o.lossless)?;
    // Whether the stream was made (or made again) while this thread waited for it: then every
    // frame of its generation is this bridge's to carry. (A stream there when the bridge
    // starts is carried from its current frame on.)
    let mut made_since = false;
    let mut losses =
        Losses::new("lost before they could be published (deepen the stream's history)");
    // Whether the wait for the stream to be made (again) was said: once per wait.
    let mut waiting_said = false;
    // One for the whole carry: a stream made again does not restart `max_rate`'s pause,
    // which would let a frame of each generation through at once.
    let mut pace = Pace::new(period, !o.lossless);
    while !stop.is_set() {
        // A stream that does not exist yet (or was unlinked) is waited for: the bridge may
        // start before the writer. There is no wait for creation, so look again every 100 ms.
        let s = match Stream::open_readonly(name) {
            Ok(s) => s,
            Err(e @ Error::NotFound { .. }) => {
                // Said once, with the library's reason: it names the streams that do exist
                // (a misspelt name) and one whose creation never finished (and the remedy).
                if !std::mem::replace(&mut waiting_said, true) {
                    say(name, &format!("waiting for it to be created: {e}"));
                }
                made_since = true;
                std::thread::sleep(POLL);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        waiting_said = false;
        check_carried(name, s.size_bytes())?;
        // Sleep in the futex between frames: a network hop follows, and a spinning bridge
        // would take a core from the writer it serves.
        s.set_wait_strategy(WaitStrategy::Park);
        // Said before the stream is said to be carried, not at its first read.
        if s.gpu_enabled() && !s.cpu_mirror() {
            return Err(BridgeError::Usage(format!(
                "stream '{name}' is a GPU stream without a CPU mirror, and the bridge carries \
                 frames from host memory: have its producer create it with a CPU mirror (Rust: \
                 cpu_mirror(true); pyshmem: cpu_mirror=True)"
            )));
        }
        if o.lossless && s.history_depth() == 0 {
            return Err(BridgeError::Usage(format!(
                "stream '{name}' keeps no history: --lossless needs one: {}",
                s.history_remedy()
            )));
        }
        // Each frame is read into `buf` and lent to Zenoh, which copies it out during the put;
        // the buffer comes back for the next frame unless Zenoh kept a reference (then a new
        // one is made), so the hot path neither allocates nor touches fresh pages.
        let mut buf = frame_buffer(&s)?;
        let mut cursor = if o.lossless { Some(s.cursor()?) } else { None };
        // Lossless: the current frame, already read into `buf`, to put first.
        let mut first = None;
        let from = match cursor.as_mut() {
            Some(c) if made_since => {
                c.rewind_to_start();
                "(lossless) from its first frame"
            }
            Some(c) => match current_in_ring(&s, c, &mut buf) {
                Some((after, info)) => {
                    *c = after;
                    first = Some(info);
                    "(lossless) from its current frame"
                }
                // None yet, or one that skipped the ring (a pyshmem write): publications
                // after it that skip the ring too are reported lost, not those before it.
                None => "(lossless) from its next frame",
            },
            None => "(latest value) from its current frame",
        };
        // Said once the read position is set: no frame written after this line is missed
        // (latest value: but for one a newer frame replaced). Operators see the stream
        // picked up, and tests wait for it.
        say(name, &format!("carrying {from}"));
        // Latest-value: the frame the stream holds when it is opened goes first, so a writer
        // that writes once and then idles is mirrored too.
        let mut current_first = cursor.is_none();
        let mut header = header_of(&s, name, o.lossless);
        if let Some(log) = losses_log {
            log.record_start(losses.total);
        }
        // Whether the log waits for the count of the frame read after its last losses.
        let mut resume_due = false;
        pace.new_generation();
        // Latest-value under `max_rate`: a frame `serve` read during a hold, to put at the slot.
        let mut deferred = false;
        while !stop.is_set() {
            if cursor.is_none() {
                match link.serve(&s, &publisher, &mut buf, &mut header, pace.held()) {
                    Ok(Served::Nothing) => {}
                    Ok(Served::Owed) => deferred = true,
                    // A put as the main loop's: `max_rate` holds the next frame back from it.
                    Ok(Served::Put) => pace.put(),
                    // Unlinked or replaced: open the new generation.
                    Err(e) if unlinked(&e) => break,
                    Err(e) => return Err(e),
                }
            } else if !link.wait_matched() {
                continue;
            }
            if let Some(left) = pace.left() {
                if !left.is_zero() {
                    std::thread::sleep(left.min(POLL));
                    continue;
                }
                pace.release();
                // Read again: a failed read since `serve` took the frame may have written
                // into `buf` (a read copies, then checks).
                if std::mem::take(&mut deferred) {
                    match current_again(&s, &mut buf, &mut header, losses.total) {
                        Ok(true) => {
                            put(&publisher, s.name(), &mut buf, &header, &k)?;
                            pace.put();
                            continue;
                        }
                        Ok(false) => {}
                        Err(e) if unlinked(&e) => break,
                        Err(e) => return Err(e),
                    }
                }
            }
            let got = match cursor.as_mut() {
                Some(c) => match first.take() {
                    Some(info) => Ok(info),
                    None => c.next_into_bytes(&mut buf, Some(POLL)),
                },
                None if std::mem::take(&mut current_first) => {
                    match s.read_publication_into_bytes(&mut buf) {
                        Ok(info) if info.count == 0 => continue, // never written
                        other => other,
                    }
                }
                None => s.read_new_into_bytes(&mut buf, Some(POLL)),
            };
            let info = match got {
                Ok(info) => info,
                Err(Error::Timeout { .. }) if pace.resend_due() => {
                    // The current frame read again (the timed-out read may have written
                    // into `buf`): the last one put, or a newer one.
                    match current_again(&s, &mut buf, &mut header, losses.total) {
                        Ok(true) => {
                            put(&publisher, s.name(), &mut buf, &header, &k)?;
                            pace.resent();
                        }
                        Ok(false) => {}
                        Err(e) if unlinked(&e) => break,
                        Err(e) => return Err(e),
                    }
                    continue;
                }
                Err(Error::Timeout { .. }) | Err(Error::Inconsistent { .. }) => continue,
                Err(Error::Overrun { lost, cause, .. }) => {
                    // Lapped: resume an eighth of the ring (at least a frame) ahead of the oldest frame, as
                    // `record` does, not at the slot the writer overwrites next.
                    let skipped = cursor.as_mut().map_or(0, |c| c.skip_after_overrun(cause));
                    losses.lost(lost + skipped);
                    if let Some(log) = losses_log {
                        log.record(header.count, losses.total);
                        resume_due = true;
                    }
                    say_any(name, losses.due());
                    continue;
                }
                // Unlinked or replaced: open the new generation (its shape may differ).
                Err(Error::Stale { .. }) | Err(Error::Closed { .. }) => break,
                Err(e) => return Err(e.into()),
            };
            stamp(&mut header, &info);
            header.lost = losses.total;
            put(&publisher, s.name(), &mut buf, &header, &k)?;
            if let Some(log) = losses_log {
                if std::mem::take(&mut resume_due) {
                    log.resumed(info.count);
                }
                log.put(info.count);
            }
            pace.put();
            say_any(name, losses.due());
        }
        made_since = true;
    }
    say_any(name, losses.rest());
    Ok(())
}

/// What a publisher hears from Zenoh between frames: whether a subscriber is matched, and
/// (latest-value) queries for the current frame.
///
/// Zenoh delivers a put only to the subscribers it knows at that moment, so a frame put
/// before a subscriber arrived (a writer that writes once and idles, a subscriber started or
/// restarted later, a link that comes back) never reaches it. Latest-value therefore puts the
/// current frame again whenever the publisher goes from no matched subscriber to one, and
/// answers queries for it: a subscriber that arrives while another is matched makes no such
/// change, so it asks ([`crate::subscribe()`]). Lossless puts nothing while no subscriber is
/// matched: its frames wait in the ring (and those beyond its depth are reported lost).
struct Link {
    matching: MatchingListener<RingChannelHandler<MatchingStatus>>,
    /// Latest-value only: a lossless frame must not arrive out of its order.
    queries: Option<Queryable<RingChannelHandler<Query>>>,
    /// Lossless only: a queryable that answers nothing (a query dropped gets its final
    /// reply), there so that a subscriber's querier matches this publisher as it matches a
    /// latest-value one, and says when a publisher appears or goes, or that none is there.
    _present: Option<Queryable<()>>,
    /// Queries taken from `queries` and not answered yet: those that came as the stream was
    /// found unlinked, answered with the next generation's frame once it is opened.
    asked: Vec<Query>,
    matched: bool,
}

impl Link {
    fn declare(
        session: &zenoh::Session,
        publisher: &Publisher<'_>,
        k: &str,
        lossless: bool,
    ) -> Result<Link, BridgeError> {
        // Ring channels: a burst of queries or status changes drops the oldest rather than
        // blocking Zenoh's thread (a dropped query gets no reply; only the newest status
        // matters).
        let matching = publisher
            .matching_listener()
            .with(RingChannel::new(8))
            .wait()
            .map_err(zenoh_err(format!("declaring the matching listener on {k}")))?;
        let declared = || zenoh_err(format!("declaring the queryable on {k}"));
        let (queries, present) = if lossless {
            let present = session
                .declare_queryable(k)
                .callback(drop)
                .wait()
                .map_err(declared())?;
            (None, Some(present))
        } else {
            let queries = session
                .declare_queryable(k)
                .with(RingChannel::new(16))
                .wait()
                .map_err(declared())?;
            (Some(queries), None)
        };
        Ok(Link {
            matching,
            queries,
            _present: present,
            asked: Vec::new(),
            matched: false,
        })
    }

    /// Takes the status changes that came since the last call: whether the publisher went
    /// from no matched subscriber to one.
    fn newly_matched(&mut self) -> bool {
        let mut newly = false;
        while let Ok(Some(status)) = self.matching.try_recv() {
            newly |= status.matching() && !self.matched;
            self.matched = status.matching();
        }
        newly
    }

    /// Lossless: whether a subscriber is matched, else waits up to [`POLL`] for a status
    /// change and says `false` (the caller looks at its stop flag and asks again).
    fn wait_matched(&mut self) -> bool {
        self.newly_matched();
        if !self.matched {
            match self.matching.recv_timeout(POLL) {
                Ok(Some(status)) => self.matched = status.matching(),
                Ok(None) => {}
                // The session is closing: no status will come.
                Err(_) => std::thread::sleep(POLL),
            }
        }
        self.matched
    }

    /// Latest-value: answers the queries that came with the current frame, then puts it
    /// (again) if a subscriber newly matched or the main loop has not put it yet (reading it
    /// here makes it this handle's last read, so the loop's next `read_new` waits past it).
    /// Nothing is sent for a stream never written. While `held` (`max_rate`'s pause) queries
    /// are answered but nothing is put: a put is owed at the next slot. A put is said, so
    /// that the caller holds the next frame back from it as from its own. A stream found
    /// unlinked is [`Error::Stale`] (the caller opens the new generation), its frame sent to
    /// no one and the queries kept for the new generation's frame.
    fn serve(
        &mut self,
        s: &Stream,
        publisher: &Publisher<'_>,
        buf: &mut BytesMut,
        header: &mut FrameHeader,
        held: bool,
    ) -> Result<Served, BridgeError> {
        let newly = self.newly_matched();
        if let Some(q) = self.queries.as_ref() {
            self.asked
                .extend(std::iter::from_fn(|| q.try_recv().ok().flatten()));
        }
        if !newly && self.asked.is_empty() {
            return Ok(Served::Nothing);
        }
        // The frame is read afresh (and counts as this handle's last read), so nothing
        // older than a frame already put goes out. `header` describes the last frame put (or
        // served): a newer one is everyone's.
        let last = header.count;
        if !current_again(s, buf, header, header.lost)? {
            // None to answer with: the askers wait for a put.
            self.asked.clear();
            return Ok(Served::Nothing);
        }
        let unput = header.count != last;
        let k = publisher.key_expr();
        let attachment = attachment_of(header, k)?;
        for q in std::mem::take(&mut self.asked) {
            // A reply that fails only means the asker left.
            let _ = lend(buf, s.name(), |frame| {
                q.reply(k.clone(), frame)
                    .attachment(attachment.clone())
                    .wait()
            })?;
        }
        if !newly && !unput {
            return Ok(Served::Nothing);
        }
        if held {
            return Ok(Served::Owed);
        }
        lend(buf, s.name(), |frame| {
            publisher.put(frame).attachment(attachment).wait()
        })?
        .map_err(|e| zenoh_err(format!("putting the current frame again on {k}"))(e))?;
        Ok(Served::Put)
    }
}

/// What [`Link::serve`] did beyond answering queries.
#[derive(Debug, PartialEq)]
enum Served {
    /// Nothing was put.
    Nothing,
    /// The current frame was put.
    Put,
    /// The current frame is owed a put at the next slot (`max_rate` held it back).
    Owed,
}

/// Puts the frame of stream `name` in `buf`, described by `header`, on `k`.
fn put(
    publisher: &Publisher<'_>,
    name: &str,
    buf: &mut BytesMut,
    header: &FrameHeader,
    k: &str,
) -> Result<(), BridgeError> {
    let attachment = attachment_of(header, k)?;
    // The error's text made only on an error: this runs for every frame.
    lend(buf, name, |frame| {
        publisher.put(frame).attachment(attachment).wait()
    })?
    .map_err(|e| zenoh_err(format!("putting a frame on {k}"))(e))
}

/// The header of the frames of `s`, carried as stream `name`, `lossless` or not, before
/// the first is stamped into it ([`stamp`]).
pub(crate) fn header_of(s: &Stream, name: &str, lossless: bool) -> FrameHeader {
    FrameHeader {
        dtype: s.dtype(),
        shape: s.shape().to_vec(),
        frame_id: 0,
        count: 0,
        write_time: 0.0,
        source: crate::instance_of(s),
        lossless,
        lost: 0,
        name_len: name.len(),
    }
}

/// The attachment of a frame described by `header`, put on key `k`.
pub(crate) fn attachment_of(
    header: &FrameHeader,
    k: impl std::fmt::Display,
) -> Result<Vec<u8>, BridgeError> {
    header
        .encode()
        .map_err(|e| BridgeError::Usage(format!("key {k}: {e}")))
}

/// Reads the stream's current frame into `buf` and describes it in `header` (with the
/// publisher's lost count `lost`); whether there is one to put (none: never written, or no
/// stable frame now — then the next frame is put as it comes).
///
/// A stream unlinked since `s` was opened is [`Error::Stale`], though the read succeeded:
/// the library's reads look at the file only every ~20 ms, and the old generation's frame
/// (perhaps of the old shape) would go out as the current one, to a subscriber that then
/// makes its mirror of that shape and refuses every frame of the new one. (Asked only of a
/// frame put again or sent in a reply: one `fstat`, off the path of new frames.)
fn current_again(
    s: &Stream,
    buf: &mut BytesMut,
    header: &mut FrameHeader,
    lost: u64,
) -> Result<bool, BridgeError> {
    match s.read_publication_into_bytes(buf) {
        Ok(_) if s.is_unlinked() => Err(Error::Stale {
            name: s.name().to_owned(),
        }
        .into()),
        Ok(info) if info.count > 0 => {
            stamp(header, &info);
            header.lost = lost;
            Ok(true)
        }
        Ok(_) | Err(Error::Timeout { .. } | Error::Inconsistent { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// What each put sets going: `max_rate`'s hold on the next frame (every put counts, a resend
/// too) and, latest-value, the [`Resend`] of a new frame. One place, so that no put site
/// starts one and forgets the other.
#[derive(Debug)]
struct Pace {
    /// `max_rate`'s pause between two puts.
    period: Option<Duration>,
    /// Until when the next frame is held back (`Some(None)`: a period past the clock's end,
    /// for good).
    held: Option<Option<Instant>>,
    /// Latest-value only: a lossless frame is never put twice.
    resend: Option<Resend>,
}

impl Pace {
    fn new(period: Option<Duration>, latest_value: bool) -> Pace {
        Pace {
            period,
            held: None,
            resend: latest_value.then(Resend::default),
        }
    }

    /// The stream was made (again): the last frame put is not its frame to resend; the
    /// hold stays.
    fn new_generation(&mut self) {
        if let Some(r) = self.resend.as_mut() {
            *r = Resend::default();
        }
    }

    /// A new frame went out.
    fn put(&mut self) {
        self.put_at(Instant::now());
    }

    fn put_at(&mut self, now: Instant) {
        if let Some(r) = self.resend.as_mut() {
            r.put_at(now);
        }
        self.hold_at(now);
    }

    /// The last frame went out again: held back from like any put, but not resent again.
    fn resent(&mut self) {
        self.resent_at(Instant::now());
    }

    fn resent_at(&mut self, now: Instant) {
        self.hold_at(now);
    }

    fn hold_at(&mut self, now: Instant) {
        self.held = self.period.map(|p| now.checked_add(p));
    }

    /// Whether `max_rate` holds the next frame back (until it is released).
    fn held(&self) -> bool {
        self.held.is_some()
    }

    /// Under a hold, how long it has left ([`Duration::MAX`]: for good; zero: run out, to
    /// release).
    fn left(&self) -> Option<Duration> {
        self.left_at(Instant::now())
    }

    fn left_at(&self, now: Instant) -> Option<Duration> {
        self.held
            .map(|until| until.map_or(Duration::MAX, |u| u.saturating_duration_since(now)))
    }

    fn release(&mut self) {
        self.held = None;
    }

    /// The writer idles: whether to put the last frame again (see [`Resend::idle_at`]).
    fn resend_due(&mut self) -> bool {
        self.resend_due_at(Instant::now())
    }

    fn resend_due_at(&mut self, now: Instant) -> bool {
        self.resend.as_mut().is_some_and(|r| r.idle_at(now))
    }
}

/// How long the writer idles after a put before the last frame goes out once more.
const RESEND_AFTER: Duration = Duration::from_secs(1);

/// Latest-value: the last frame put goes out once more (with congestion control drop, as
/// every latest-value put: after a second's idling the link's queue has drained) once the
/// writer has idled [`RESEND_AFTER`] since it, so a put dropped under congestion at the end
/// of a burst is not the last word; a subscriber that got it skips it (same count). Only
/// writers slower than 1 Hz pay a second put for each frame. Under `max_rate` it is a put
/// like the others: the next frame is held back a period from it.
#[derive(Debug, Default)]
struct Resend {
    /// When the last frame was put, until it went out again.
    due: Option<Instant>,
}

impl Resend {
    /// A frame was put.
    fn put_at(&mut self, now: Instant) {
        self.due = Some(now);
    }

    /// The writer idles: whether to put the last frame again (once per frame put, once it
    /// has idled [`RESEND_AFTER`]).
    fn idle_at(&mut self, now: Instant) -> bool {
        match self.due {
            Some(at) if now.saturating_duration_since(at) >= RESEND_AFTER => {
                self.due = None;
                true
            }
            _ => false,
        }
    }
}

/// The ring's newest frame, read into `buf`, and a cursor after it, where that frame is the
/// stream's current one for `c`, a cursor just made at the ring's head. `None` where the
/// ring is empty, a frame came since `c` was made (`c` carries it), or the current frame
/// skipped the ring (a pyshmem write): `c` follows it, and reports later ones that skip the
/// ring lost, not earlier ones (rewound to the newest ring frame, a cursor follows no count:
/// later ones went unreported, and earlier ones after that frame were reported lost).
fn current_in_ring<'s>(
    s: &'s Stream,
    c: &Cursor<'s>,
    buf: &mut [u8],
) -> Option<(Cursor<'s>, FrameInfo)> {
    let mut newest = s.cursor().ok()?;
    newest.rewind_to_oldest();
    newest.skip_to_recent(1);
    let info = newest.next_into_bytes(buf, Some(Duration::ZERO)).ok()?;
    // The head unmoved since `c` was made: that frame was `c`'s newest too. The count `c`
    // follows is at most the header's, loaded after it, so a newest frame counting at least
    // as much is the one `c` follows. A publication stores its count in the header before
    // its frame becomes visible in the ring (the library's `Bracket::count_ahead`): the
    // newest frame counts more than the header only where a writer of an earlier version,
    // killed after its append, left it counted past the header, and a header counting more
    // than it is a publication that skipped the ring (a pyshmem write) or an append not
    // visible yet: `None` for both (`c` follows the first and returns the second).
    (c.lag() == 0 && info.count >= s.count()).then_some((newest, info))
}

/// Whether `e` says the stream was unlinked or replaced: its publisher opens the new
/// generation.
fn unlinked(e: &BridgeError) -> bool {
    matches!(
        e,
        BridgeError::Stream(Error::Stale { .. } | Error::Closed { .. })
    )
}

/// Describes the frame `info` in `header`.
pub(crate) fn stamp(header: &mut FrameHeader, info: &FrameInfo) {
    header.frame_id = info.frame_id;
    header.count = info.count;
    header.write_time = info.write_time;
}

/// A zeroed buffer for a frame of `s`, or a typed error naming the stream where memory runs
/// out (`BytesMut::zeroed` aborted the process, every carried stream with it).
pub(crate) fn frame_buffer(s: &Stream) -> Result<BytesMut, BridgeError> {
    let v = shmstream::frame_buffer::<u8>(s.name(), s.size_bytes())?;
    // Whole (length = capacity): the bytes change hands without a copy.
    Ok(BytesMut::from(Bytes::from(v)))
}

/// Lends the frame in `buf` to `send` (Zenoh copies it out) and takes the buffer back, or,
/// where Zenoh kept a reference, a copy of the frame (`serve` lends one frame several times),
/// made without aborting where memory runs out (an error naming stream `name`).
pub(crate) fn lend<R>(
    buf: &mut BytesMut,
    name: &str,
    send: impl FnOnce(Bytes) -> R,
) -> Result<R, BridgeError> {
    let frame = std::mem::take(buf).freeze();
    let r = send(frame.clone());
    *buf = match frame.try_into_mut() {
        Ok(back) => back,
        Err(kept) => {
            let mut copy = shmstream::frame_buffer_room::<u8>(name, kept.len())?;
            copy.extend_from_slice(&kept);
            BytesMut::from(Bytes::from(copy))
        }
    };
    Ok(r)
}

/// Says `line`, if there is one.
fn say_any(name: &str, line: Option<String>) {
    if let Some(line) = line {
        say(name, &line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame Zenoh kept a reference to comes back as a copy, not zeros: `serve` lends one
    /// frame to every query reply and then to the put.
    #[test]
    fn a_frame_lent_and_kept_comes_back_whole() {
        let mut buf = BytesMut::from(&b"frame"[..]);
        let mut kept = Vec::new();
        for _ in 0..3 {
            lend(&mut buf, "s", |f| kept.push(f)).unwrap();
        }
        assert!(kept.iter().all(|f| &f[..] == b"frame"), "{kept:?}");
        assert_eq!(&buf[..], b"frame");
    }

    #[test]
    fn losses_are_said_at_once_then_summed_up_every_ten_seconds_and_at_the_end() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut l =
            Losses::new("lost before they could be published (deepen the stream's history)");
        assert_eq!(l.due_at(at(0)), None);
        l.lost(3);
        let line = |n: u64| {
            Some(format!(
                "{n} frame(s) lost before they could be published (deepen the stream's history)"
            ))
        };
        assert_eq!(l.due_at(at(0)), line(3));
        for s in 1..10 {
            l.lost(1);
            assert_eq!(l.due_at(at(s)), None, "said again at {s} s");
        }
        assert_eq!(l.due_at(at(10)), line(9));
        assert_eq!(l.due_at(at(25)), None, "nothing unsaid");
        l.lost(2);
        assert_eq!(l.due_at(at(25)), line(2));
        l.lost(4);
        assert_eq!(l.rest(), line(4));
        assert_eq!(l.rest(), None);
    }

    #[test]
    fn a_max_rate_whose_period_does_not_fit_is_a_usage_error_not_a_panic() {
        assert_eq!(period_of(2.0).unwrap(), Duration::from_millis(500));
        assert_eq!(
            period_of(1e-19).unwrap(),
            Duration::from_secs(10u64.pow(19))
        );
        for r in [0.0, -1.0, 1e-20, 5e-324, f64::NAN, f64::INFINITY] {
            match period_of(r) {
                Err(BridgeError::Usage(m)) => assert!(m.starts_with("--max-rate "), "{m}"),
                other => panic!("--max-rate {r}: {other:?}"),
            }
        }
    }

    /// Latest-value: the frame last put goes out again once when the writer has idled a
    /// second after it, not at every idle read, nor sooner.
    #[test]
    fn the_last_frame_is_put_again_once_when_the_writer_idles() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut r = Resend::default();
        assert!(!r.idle_at(at(2000)), "nothing put yet");
        r.put_at(at(0));
        assert!(
            !r.idle_at(at(100)),
            "a short idle (a writer under 10 Hz) is no idle"
        );
        assert!(!r.idle_at(at(999)), "not sooner than a second");
        assert!(r.idle_at(at(1000)));
        assert!(!r.idle_at(at(2200)), "once");
        r.put_at(at(3000));
        r.put_at(at(3500));
        assert!(
            !r.idle_at(at(4400)),
            "a second from the last put, not the first"
        );
        assert!(r.idle_at(at(4500)));
        assert!(!r.idle_at(at(4600)));
    }

    /// Every put holds the next frame back a period, a resend too; only a new latest-value
    /// frame is resent, and without `max_rate` nothing is held.
    #[test]
    fn a_put_holds_the_next_frame_back_and_only_a_new_latest_value_frame_is_resent() {
        let hour = Duration::from_secs(3600);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut p = Pace::new(Some(hour), true);
        assert!(!p.held() && p.left_at(at(0)).is_none(), "nothing put yet");
        p.put_at(at(0));
        assert!(p.held());
        assert_eq!(p.left_at(at(0)), Some(hour));
        assert_eq!(p.left_at(at(1000)), Some(hour - Duration::from_secs(1)));
        assert_eq!(p.left_at(at(3_600_000)), Some(Duration::ZERO), "run out");
        p.release();
        assert!(!p.held());
        assert!(!p.resend_due_at(at(999)), "not idle yet");
        assert!(p.resend_due_at(at(1000)), "put armed the resend");
        assert!(!p.resend_due_at(at(2000)), "once");

        let mut p = Pace::new(Some(hour), true);
        p.resent_at(at(0));
        assert_eq!(
            p.left_at(at(0)),
            Some(hour),
            "a resend is held back from too"
        );
        assert!(!p.resend_due_at(at(1100)), "resend not armed");

        let mut p = Pace::new(Some(Duration::MAX), true);
        p.put_at(at(0));
        assert_eq!(p.left_at(at(3_601_000)), Some(Duration::MAX), "for good");

        // The clock-reading wrappers, where no instant matters.
        let mut p = Pace::new(None, false);
        p.put();
        p.resent();
        assert!(!p.held() && p.left().is_none(), "no max_rate: never held");
        assert!(
            p.resend.is_none() && !p.resend_due(),
            "lossless: nothing to resend"
        );
    }

    /// Zenoh would drop a larger frame at the receiving end, saying so only in its trace log:
    /// refused at open, with the stream and the remedy.
    #[test]
    fn a_stream_of_frames_over_what_the_bridge_carries_is_refused() {
        let most = MAX_FRAME_BYTES as usize;
        assert!(check_carried("cam0", 1).is_ok());
        assert!(check_carried("cam0", most).is_ok());
        match check_carried("cam0", most + 1) {
            Err(BridgeError::Usage(m)) => {
                assert!(m.starts_with("stream 'cam0': "), "{m}");
                assert!(m.contains("split it into smaller streams"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// A query answered right after the source was unlinked by pyshmem (its segments removed,
    /// the header left valid: the library's `unlink` also invalidates it, which reads see at
    /// once) and made again with another shape, before the library's reads notice (they look
    /// at the file every ~20 ms), gets no frame of the old shape (a subscriber would make its
    /// mirror of that shape and refuse every real frame): `serve` says the stream is stale,
    /// and the query is answered with the new generation's frame once that is opened. The
    /// sequence runs again until it fits in 10 ms from the open, well inside the reads'
    /// blind spot.
    #[test]
    fn a_query_as_the_source_is_made_again_gets_no_frame_of_the_old_generation() {
        use shmstream::{Dtype, StreamOptions};
        let name = format!("br-unit-serve-{}", std::process::id());
        let _ = shmstream::unlink(&name);
        let session = crate::open_session(&Endpoints::default()).unwrap();
        let k = key("br-unit", &name);
        let publisher = session.declare_publisher(k.clone()).wait().unwrap();
        let mut link = Link::declare(&session, &publisher, &k, false).unwrap();
        let make = |elems: usize, id: u64| {
            let s = StreamOptions::new(&name)
                .shape(&[elems])
                .dtype(Dtype::U8)
                .create()
                .unwrap();
            s.write_bytes_frame(&vec![1; elems], id).unwrap();
            s
        };
        let header_of = |s: &Stream| FrameHeader {
            dtype: s.dtype(),
            shape: s.shape().to_vec(),
            frame_id: 0,
            count: 0,
            write_time: 0.0,
            source: [0; 16],
            lossless: false,
            lost: 0,
            name_len: 1,
        };
        // As pyshmem's `unlink` does.
        let pyshmem_unlink = || {
            use shmstream::name::{meta_id, segment_id};
            for id in [segment_id(&name), meta_id(&name)] {
                std::fs::remove_file(format!("/dev/shm/{id}")).unwrap();
            }
        };
        let mut in_time = false;
        for _ in 0..50 {
            let _old = make(4, 1);
            let opened = Instant::now();
            let s = Stream::open_readonly(&name).unwrap();
            pyshmem_unlink();
            let _new = make(8, 2);
            let replies = session.get(k.as_str()).wait().unwrap();
            let (mut buf, mut header) = (BytesMut::zeroed(s.size_bytes()), header_of(&s));
            let served = link.serve(&s, &publisher, &mut buf, &mut header, false);
            in_time = opened.elapsed() < Duration::from_millis(10);
            // The new generation, as the publisher opens it next.
            let s2 = Stream::open_readonly(&name).unwrap();
            let (mut buf2, mut header2) = (BytesMut::zeroed(s2.size_bytes()), header_of(&s2));
            let served2 = link.serve(&s2, &publisher, &mut buf2, &mut header2, false);
            let reply = replies.recv_timeout(Duration::from_secs(5)).unwrap();
            let shape = reply.map(|r| {
                let sample = r.result().unwrap();
                let h = FrameHeader::decode(&sample.attachment().unwrap().to_bytes()).unwrap();
                (h.shape, h.frame_id)
            });
            shmstream::unlink(&name).unwrap();
            if !in_time {
                continue;
            }
            assert!(
                matches!(served, Err(BridgeError::Stream(Error::Stale { .. }))),
                "served from a generation unlinked {:?} before: {served:?}",
                opened.elapsed()
            );
            assert!(served2.is_ok(), "{served2:?}");
            assert_eq!(
                shape,
                Some((vec![8], 2)),
                "answered with the new generation"
            );
            break;
        }
        assert!(in_time, "never within 10 ms of the open in 50 tries");
        let _ = session.close().wait();
    }

    #[test]
    fn max_rate_with_lossless_is_refused_at_start() {
        let o = PublishOptions {
            names: vec!["x".into()],
            endpoints: Endpoints::default(),
            prefix: "p".into(),
            max_rate: Some(5.0),
            lossless: true,
        };
        match publish(&o, &AtomicBool::new(true)) {
            Err(BridgeError::Usage(m)) => assert!(m.contains("--max-rate"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
