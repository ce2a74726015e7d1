//! Waiting for the sequence to move: spin, then park on the futex (notify streams) or back
//! off (others), always against a monotonic deadline.
//!
//! Lost-wakeup window (as in crossbeam's `parker.rs`): a waiter decides to sleep after seeing
//! sequence `s`, and a writer publishes `s + 2` and wakes just before the waiter parks. The
//! futex compares the word with the low 32 bits of `s` inside the kernel and returns at once
//! when they differ, so the publication is never slept through. That is why the writer stores
//! the new sequence *before* `FUTEX_WAKE`, and why a parked wait is capped (50 ms, as in
//! pyshmem) so dead-writer checks and `close()` keep running.

#[cfg(feature = "tokio")]
use std::sync::Arc;
#[cfg(feature = "tokio")]
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::backoff::Sleeps;
use crate::header::MappedHeader;
use crate::spin::Spin;
use crate::sys;

/// Longest single futex park; checks between parks catch dead writers and closed handles.
pub(crate) const MAX_PARK: Duration = Duration::from_millis(50);

/// The longest a parking or sleeping wait goes, from its first park or its last look for a
/// dead writer, before the next look falls due at an open bracket, however often wakes end
/// its parks (another process's `close`, a waker of every waiter at each publication of its
/// own); a park ends by then ([`Waiter::give_way`]), so a death is found within about this
/// long (plus a wake's delay) whatever wakes do.
const LOOK_AT_LEAST_EVERY: Duration = MAX_PARK;

#[cfg(test)]
thread_local! {
    /// This thread's park cap in unit tests: a test raises it (and [`LOOK_EVERY`]) so that a
    /// wake that misses leaves its waiter parked until the timeout instead of polling every
    /// [`MAX_PARK`].
    pub(crate) static PARK_CAP: std::cell::Cell<Duration> =
        const { std::cell::Cell::new(MAX_PARK) };
    /// This thread's [`LOOK_AT_LEAST_EVERY`] in unit tests, which a park is cut at too.
    pub(crate) static LOOK_EVERY: std::cell::Cell<Duration> =
        const { std::cell::Cell::new(LOOK_AT_LEAST_EVERY) };
    /// Run by this thread's parks after every look of their caller, before their last
    /// look at its condition (unit tests: a publication landing in that window).
    #[allow(clippy::type_complexity)]
    pub(crate) static BEFORE_PARK: std::cell::RefCell<Option<Box<dyn FnMut()>>> =
        const { std::cell::RefCell::new(None) };
}

/// Raises this thread's park cap and look interval ([`PARK_CAP`], [`LOOK_EVERY`]) to an
/// hour (unit tests): a wait whose wake is missed then stays parked past any bound of a test
/// instead of looking again within [`MAX_PARK`].
#[cfg(test)]
pub(crate) fn uncap_this_thread() {
    PARK_CAP.set(Duration::from_secs(3600));
    LOOK_EVERY.set(Duration::from_secs(3600));
}

/// [`LOOK_AT_LEAST_EVERY`].
#[cfg(not(test))]
#[inline]
fn look_every() -> Duration {
    LOOK_AT_LEAST_EVERY
}

/// This thread's `LOOK_EVERY`.
#[cfg(test)]
fn look_every() -> Duration {
    LOOK_EVERY.with(std::cell::Cell::get)
}

/// The longest single park.
#[cfg(not(test))]
#[inline]
fn max_park() -> Duration {
    MAX_PARK
}

/// The longest single park: this thread's `PARK_CAP`.
#[cfg(test)]
fn max_park() -> Duration {
    PARK_CAP.with(std::cell::Cell::get)
}

/// An async wait's cancel flag, and whether its background wait is parked on the futex
/// (the only pause a wake has to end). Only async waits have one: without the `tokio`
/// feature, a blocking wait's pauses look at no flag.
#[cfg(feature = "tokio")]
#[derive(Debug, Default)]
pub(crate) struct Cancel {
    cancel: AtomicBool,
    parked: AtomicBool,
}

#[cfg(feature = "tokio")]
impl Cancel {
    /// Whether the wait was cancelled.
    pub(crate) fn is_set(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    /// Cancels the wait; returns whether it may be parked (then the caller wakes it). Both
    /// sides store, then load the other's flag (SeqCst): a park either sees the cancel and
    /// does not start, or is seen here. A wake that lands just before the park ends it only
    /// if the word moved meanwhile; else the park lasts its cap ([`MAX_PARK`]).
    pub(crate) fn cancel(&self) -> bool {
        self.cancel.store(true, Ordering::SeqCst);
        self.parked.load(Ordering::SeqCst)
    }
}

#[cfg(feature = "tokio")]
thread_local! {
    /// This thread's cancel flag (an async wait's, on a blocking-pool thread): once set, the
    /// thread's waits end at their next pause as if their deadline had passed.
    static CANCEL: std::cell::RefCell<Option<Arc<Cancel>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with `cancel` as this thread's cancel flag: its waits end (time out) at the
/// first pause after the flag is set.
#[cfg(feature = "tokio")]
pub(crate) fn cancellable<R>(cancel: Arc<Cancel>, f: impl FnOnce() -> R) -> R {
    struct Reset(Option<Arc<Cancel>>);
    impl Drop for Reset {
        fn drop(&mut self) {
            CANCEL.with(|c| *c.borrow_mut() = self.0.take());
        }
    }
    let _reset = Reset(CANCEL.with(|c| c.borrow_mut().replace(cancel)));
    f()
}

/// Whether this thread's wait was cancelled.
#[cfg(feature = "tokio")]
fn cancelled() -> bool {
    CANCEL.with(|c| c.borrow().as_ref().is_some_and(|f| f.is_set()))
}

/// Whether this thread's wait was cancelled: never, without async waits.
#[cfg(not(feature = "tokio"))]
#[inline(always)]
fn cancelled() -> bool {
    false
}

/// Parks on `h`'s futex word while it holds `observed`, for at most `timeout`, unless the
/// caller's condition holds already (`ready`, looked at last, just before the system call:
/// a history append moves no futex word, so its wake reaches only a cursor already parked).
/// The last look narrows that window but does not close it: for an append landing between
/// `ready()` and the futex call, the cursor still sleeps until the frame's even-store wake
/// (latency, no loss). Returns whether a wake, a moved word, a signal handler or `ready`
/// ended it ([`sys::futex_wait`]): only a park that ran out makes the caller's next pause
/// look for a dead writer.
fn futex_park(
    h: &MappedHeader,
    observed: i64,
    timeout: Duration,
    ready: impl FnOnce() -> bool,
) -> bool {
    #[cfg(test)]
    BEFORE_PARK.with(|f| {
        if let Some(f) = f.borrow_mut().as_mut() {
            f();
        }
    });
    ready() || sys::futex_wait(h.futex_word(), observed as u32, timeout)
}

/// [`futex_park`].
#[cfg(not(feature = "tokio"))]
fn park(h: &MappedHeader, observed: i64, timeout: Duration, ready: impl FnOnce() -> bool) -> bool {
    futex_park(h, observed, timeout, ready)
}

/// [`futex_park`], with a cancel flag marked parked meanwhile, and not at all once
/// cancelled ([`Cancel::cancel`]); the cancel counts as a wake.
#[cfg(feature = "tokio")]
fn park(h: &MappedHeader, observed: i64, timeout: Duration, ready: impl FnOnce() -> bool) -> bool {
    CANCEL.with(|c| match c.borrow().as_ref() {
        None => futex_park(h, observed, timeout, ready),
        Some(c) => {
            c.parked.store(true, Ordering::SeqCst);
            let woken = c.is_set() || futex_park(h, observed, timeout, ready);
            c.parked.store(false, Ordering::SeqCst);
            woken
        }
    })
}

/// How a handle waits for new data.
///
/// A park sleeps on a timer: the caller's timeout, or 50 ms at a time without one. In a
/// virtual machine, a same-core hand-off to or from a thread asleep on a timer that ends
/// before the kernel's next tick can cost more than with a long one: about 5 µs more on the
/// project's host (`scripts/probes/timer-handoff.c`). Where a thread sharing the waiter's
/// core must run at once, wait without a short timeout, or yield before the wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
#[non_exhaustive]
pub enum WaitStrategy {
    /// Spin for [`ADAPTIVE_SPIN`], then park on the futex (notify streams) or back off with
    /// yields and short sleeps (others). Good for most consumers.
    #[default]
    Adaptive = 0,
    /// Busy-wait on the sequence until the deadline: lowest latency, one core per waiter.
    Spin = 1,
    /// Park at once: futex wait on notify streams, yields then short sleeps on others. Frees
    /// the core for other work (e.g. a compute thread sharing it) at the cost of the wake-up
    /// latency (a few µs with notify).
    Park = 2,
    /// Yield the core between checks (`sched_yield`), never park: for a waiter that shares
    /// its core with a thread doing the work it waits for (a compute worker). That thread
    /// gets the core whenever it is runnable, and the waiter sees the publication as soon
    /// as it runs again, with no wake-up to wait for (a parked waiter on an idle core waits
    /// for the writer's wake to reach that core: microseconds in a virtual machine). One
    /// core per waiter when nothing else is runnable on it, as with `Spin`.
    Yield = 3,
}

impl WaitStrategy {
    pub(crate) fn from_u8(v: u8) -> WaitStrategy {
        match v {
            1 => WaitStrategy::Spin,
            2 => WaitStrategy::Park,
            3 => WaitStrategy::Yield,
            _ => WaitStrategy::Adaptive,
        }
    }
}

/// How long [`WaitStrategy::Adaptive`] spins before it parks (the harness's adaptive floor
/// spins as long). A time, not a count of pauses: a `pause` instruction takes from about
/// ten to about 150 cycles depending on the core, and the 4 000 pauses this budget once
/// was took 100 µs on this project's AMD EPYC host, where every committed figure was
/// measured; the budget keeps that time on every core.
pub const ADAPTIVE_SPIN: Duration = Duration::from_micros(100);
/// Yields after spinning, before sleeping (non-notify streams).
const YIELD_ROUNDS: u64 = 200;

/// Spins between two looks for a dead writer while a bracket stays open (about 100 µs of
/// spinning here). Every 64, the look (a system call) often fell inside a live writer's
/// bracket of a 4.8 KB frame and held a spinning cursor's hop p90 at 2.2-2.6 µs (1.4-1.7
/// without it).
const SPINS_PER_WRITER_CHECK: u64 = 4096;
/// Yields between two looks for a dead writer: a yield is a system call already, and on a
/// busy core one may last a time slice, so a dead writer is still reported within
/// tens of ms. (At every yield, the look was a second system call in each pause of the MVM
/// driver, on the core its kernel's worker shares, all the while the kernel ran inside y's
/// bracket.)
const YIELDS_PER_WRITER_CHECK: u64 = 16;

/// What one pause of a wait does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pause {
    /// A spin-loop hint.
    Spin,
    /// `sched_yield`.
    Yield,
    /// `FUTEX_WAIT` on the stream's word (notify streams).
    Park,
    /// A short sleep, doubling up to 1 ms (streams without notify).
    Sleep,
}

/// One wait: call [`Waiter::pause`] each time the condition is still false.
#[derive(Debug)]
pub(crate) struct Waiter {
    strategy: WaitStrategy,
    notify: bool,
    deadline: Option<Instant>,
    /// The deadline had passed when the wait began (a zero timeout: a poll): it pauses not
    /// once, and leaves the look for a dead writer to the caller's timeout path.
    spent: bool,
    /// Adaptive: when its spin ends, then the round it ended at.
    spin: AdaptiveSpin,
    /// Pauses so far: 64 bits, which no wait exhausts (32 saturated after two minutes of
    /// spinning, and the dead-writer look then fell due at every pause).
    rounds: u64,
    /// The spin's pauses, and its breaks' clock reads.
    pauses: Spin,
    sleeps: Sleeps,
    /// What the last pause waited on, where it was a park or sleep that ran its full length
    /// (no wake nor moved word ended it: a dead writer wakes nobody).
    ran_out_on: Option<i64>,
    /// The odd sequence this wait found at its first look, until a look for a dead writer
    /// covered it (0: none).
    arrived_on: i64,
    /// When this wait last looked for a dead writer from a park or sleep, or parked or slept
    /// first (`None` before).
    looked_at: Option<Instant>,
}

/// Where an adaptive waiter is in its spin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AdaptiveSpin {
    /// Spinning until this time.
    Until(Instant),
    /// Spun out at this round (for other strategies: from the start).
    EndedAt(u64),
}

impl Waiter {
    pub(crate) fn new(strategy: WaitStrategy, notify: bool, timeout: Option<Duration>) -> Waiter {
        // One clock read, and none where nothing needs it.
        let adaptive = strategy == WaitStrategy::Adaptive;
        let now = (adaptive || timeout.is_some()).then(Instant::now);
        let deadline = now.and_then(|n| crate::deadline::after(n, timeout));
        let spent = now.zip(deadline).is_some_and(|(n, d)| d <= n);
        Waiter {
            strategy,
            notify,
            deadline,
            spent,
            spin: match now {
                Some(n) if adaptive && !spent => AdaptiveSpin::Until(n + ADAPTIVE_SPIN),
                _ => AdaptiveSpin::EndedAt(0),
            },
            rounds: 0,
            pauses: Spin::new(),
            sleeps: Sleeps::new(Duration::from_micros(20), Duration::from_millis(1)),
            ran_out_on: None,
            arrived_on: 0,
            looked_at: None,
        }
    }

    /// Whether the deadline passed or the wait was cancelled (an abandoned async wait): a
    /// read retrying without pauses looks here, not at [`Waiter::pause`].
    pub(crate) fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d) || cancelled()
    }

    /// What pause number `round` is: spins first (adaptive, until its spin ends), then
    /// yields, parks on the futex (notify streams) or sleeps, as the strategy says.
    fn kind(&self, round: u64) -> Pause {
        let after_spin = match self.spin {
            AdaptiveSpin::Until(_) => return Pause::Spin,
            AdaptiveSpin::EndedAt(r) => round.saturating_sub(r),
        };
        match self.strategy {
            WaitStrategy::Spin => Pause::Spin,
            WaitStrategy::Yield => Pause::Yield,
            _ if self.notify => Pause::Park,
            _ if after_spin < YIELD_ROUNDS => Pause::Yield,
            _ => Pause::Sleep,
        }
    }

    /// Whether the caller, finding odd sequence `s` (a writer inside its bracket), should
    /// look for a writer that died there before its next pause. The look tries the write
    /// lock (a system call or two; a GPU stream's also reads `/proc`), so it is rate limited:
    /// spins and yields take it every [`SPINS_PER_WRITER_CHECK`] / [`YIELDS_PER_WRITER_CHECK`]
    /// rounds; parks and sleeps after a park that ran out (a dead writer wakes nobody;
    /// whatever the park waited on) or once `s` outlived a whole sleep (at most 1 ms), and
    /// once [`LOOK_AT_LEAST_EVERY`] passed since the last look or the first park, but not
    /// at every wake (a live writer wakes its readers inside its bracket, see `write.rs`, at
    /// every large frame). A wait that found `s` at its first look (a reader arriving at an
    /// open bracket) looks at its first park or sleep: at once on a notify stream, at the
    /// yields' count or its first sleep otherwise, once its adaptive spin (`s` lasted all
    /// of it) ends for an adaptive wait. A poll ([`Waiter::spent`]) never looks here: its
    /// timeout path looks once.
    pub(crate) fn writer_check_due(&mut self, s: i64) -> bool {
        if self.spent {
            return false;
        }
        if self.rounds == 0 {
            self.arrived_on = s;
        }
        let due = match self.kind(self.rounds) {
            Pause::Spin => self.rounds % SPINS_PER_WRITER_CHECK == SPINS_PER_WRITER_CHECK - 1,
            Pause::Yield => self.rounds % YIELDS_PER_WRITER_CHECK == YIELDS_PER_WRITER_CHECK - 1,
            kind @ (Pause::Park | Pause::Sleep) => {
                let now = Instant::now();
                let since = *self.looked_at.get_or_insert(now);
                let due = self.arrived_on == s
                    || match kind {
                        Pause::Park => self.ran_out_on.is_some(),
                        _ => self.ran_out_on == Some(s),
                    }
                    || now.duration_since(since) >= look_every();
                if due {
                    self.looked_at = Some(now);
                }
                due
            }
        };
        if due {
            self.arrived_on = 0;
        }
        due
    }

    /// Waits one step. `observed` is the sequence the caller's condition was evaluated
    /// against; a park looks at the condition again (`ready`) just before it sleeps, for a
    /// change that moves no futex word (see [`futex_park`]). Returns `false` once the
    /// deadline has passed. The spin step is inlined into the caller's loop; the others,
    /// which give the core away, are not.
    #[inline]
    pub(crate) fn pause(
        &mut self,
        h: &MappedHeader,
        observed: i64,
        ready: impl FnOnce() -> bool,
    ) -> bool {
        #[cfg(test)]
        PAUSES.with(|p| p.set(p.get() + 1));
        if self.spent {
            return false;
        }
        self.rounds = self.rounds.saturating_add(1);
        let kind = self.kind(self.rounds);
        if kind == Pause::Spin {
            return self.spin_once();
        }
        self.give_way(kind, h, observed, ready)
    }

    /// One spin ([`Spin::pause`]); at each of its breaks, a look at the clock it read for the
    /// deadline and the end of an adaptive spin, and at the thread's cancel flag. Returns
    /// `false` once the deadline has passed or the wait was cancelled.
    #[inline]
    fn spin_once(&mut self) -> bool {
        let Some(now) = self.pauses.pause() else {
            return true;
        };
        if let AdaptiveSpin::Until(end) = self.spin
            && now >= end
        {
            self.spin = AdaptiveSpin::EndedAt(self.rounds);
        }
        self.deadline.is_none_or(|d| now < d) && !cancelled()
    }

    /// A step that yields, parks or sleeps, within the deadline (a park cut where the next
    /// look for a dead writer falls due; at an open bracket where it is due already, none:
    /// it returns as if a park ran out); `false` once the deadline has passed or the wait
    /// was cancelled.
    #[inline(never)]
    fn give_way(
        &mut self,
        kind: Pause,
        h: &MappedHeader,
        observed: i64,
        ready: impl FnOnce() -> bool,
    ) -> bool {
        let left = match self.deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                left
            }
            None => max_park(),
        };
        self.ran_out_on = match kind {
            Pause::Spin | Pause::Yield => {
                std::thread::yield_now();
                None
            }
            Pause::Park => {
                // Ended by the time the next look falls due, so that wakes that keep coming
                // (each ends a park early) cannot hold a look off for a whole park more.
                let now = Instant::now();
                let since = *self.looked_at.get_or_insert(now);
                let park_for = match since
                    .checked_add(look_every())
                    .and_then(|due| due.checked_duration_since(now))
                {
                    Some(d) if !d.is_zero() => Some(left.min(d.min(max_park()))),
                    // Due already at an open bracket (the thread was held up since its
                    // caller found the look undue): no park, as if one ran out, so the
                    // caller looks next (and starts the count again). On a stable frame or
                    // an invalid one, where nobody looks, a whole park.
                    _ if observed > 0 && observed & 1 == 1 => None,
                    _ => Some(left.min(max_park())),
                };
                match park_for {
                    Some(t) => (!park(h, observed, t, ready)).then_some(observed),
                    None => Some(observed),
                }
            }
            Pause::Sleep => {
                self.looked_at.get_or_insert_with(Instant::now);
                self.sleeps.sleep(left);
                Some(observed)
            }
        };
        !cancelled()
    }
}

#[cfg(test)]
thread_local! {
    /// How many wakes this thread made (unit tests).
    pub(crate) static WAKES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// How many times this thread's waits called [`Waiter::pause`] (unit tests).
    pub(crate) static PAUSES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Wakes every waiter on the stream (all processes).
pub(crate) fn wake_all(h: &MappedHeader) {
    #[cfg(test)]
    WAKES.with(|w| w.set(w.get() + 1));
    let _slow = crate::slowdown::guard(crate::slowdown::HotPath::Wake);
    sys::futex_wake_all(h.futex_word());
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The rounds, out of the first `n`, at which a waiter that finds one odd sequence at
    /// every look, its parks ended by wakes, looks for a dead writer.
    fn checks(strategy: WaitStrategy, notify: bool, n: u64) -> Vec<u64> {
        let mut w = Waiter::new(strategy, notify, None);
        (0..n)
            .filter(|&r| {
                w.rounds = r;
                w.writer_check_due(7)
            })
            .collect()
    }

    /// An adaptive waiter whose spin ended at round `at`.
    fn spun_out(notify: bool, at: u64) -> Waiter {
        let mut w = Waiter::new(WaitStrategy::Adaptive, notify, None);
        w.spin = AdaptiveSpin::EndedAt(at);
        w
    }

    /// Each strategy's pauses, in order: where each kind of pause starts.
    #[test]
    fn each_strategy_spins_yields_parks_or_sleeps_in_its_order() {
        use Pause::*;
        let kinds = |w: &Waiter, rounds: &[u64]| -> Vec<Pause> {
            rounds.iter().map(|&r| w.kind(r)).collect()
        };
        let at = |strategy, notify, rounds: &[u64]| -> Vec<Pause> {
            kinds(&Waiter::new(strategy, notify, None), rounds)
        };
        let (s, y) = (4000, YIELD_ROUNDS);
        assert_eq!(at(WaitStrategy::Spin, true, &[0, s + y + 1]), [Spin, Spin]);
        assert_eq!(
            at(WaitStrategy::Yield, false, &[0, s + y + 1]),
            [Yield, Yield]
        );
        // Adaptive spins while its time lasts, whatever the round.
        assert_eq!(
            at(WaitStrategy::Adaptive, true, &[0, s, u64::MAX]),
            [Spin, Spin, Spin]
        );
        assert_eq!(kinds(&spun_out(true, s), &[s, s + y + 1]), [Park, Park]);
        assert_eq!(
            kinds(&spun_out(false, s), &[s, s + y - 1, s + y]),
            [Yield, Yield, Sleep]
        );
        assert_eq!(at(WaitStrategy::Park, true, &[0, y + 1]), [Park, Park]);
        assert_eq!(
            at(WaitStrategy::Park, false, &[0, y - 1, y]),
            [Yield, Yield, Sleep]
        );
    }

    /// The adaptive spin lasts [`ADAPTIVE_SPIN`] of time, however long a pause takes on
    /// this core, and then ends.
    #[test]
    fn an_adaptive_wait_spins_for_its_time_then_stops_spinning() {
        let start = Instant::now();
        let mut w = Waiter::new(WaitStrategy::Adaptive, true, Some(Duration::from_secs(10)));
        while w.kind(w.rounds + 1) == Pause::Spin {
            w.rounds += 1;
            assert!(w.spin_once(), "the spin outlived its 10 s deadline");
        }
        assert!(start.elapsed() >= ADAPTIVE_SPIN, "{:?}", start.elapsed());
        assert_eq!(w.kind(w.rounds + 1), Pause::Park);
        // A deadline inside the spin ends the wait at the spin's next break.
        let mut w = Waiter::new(WaitStrategy::Adaptive, true, Some(Duration::from_nanos(1)));
        let mut spins = 0;
        while {
            w.rounds += 1;
            spins += 1;
            w.spin_once()
        } {}
        assert_eq!(spins, crate::spin::PAUSES_PER_BREAK);
    }

    /// Spins and yields look every so many rounds. Parks and sleeps look only where no wake
    /// came: at a wait's first look (a reader arriving at an open bracket), after a park
    /// that ran out, or once the odd sequence outlived a whole sleep. They looked at every
    /// park, so every reader parked on a stream whose writer wakes it inside its bracket
    /// (large frames) tried the write lock at every frame.
    #[test]
    fn spins_and_yields_look_for_a_dead_writer_rarely_and_parks_and_sleeps_without_a_wake() {
        // Spinning: once per SPINS_PER_WRITER_CHECK rounds.
        let spin = checks(WaitStrategy::Spin, true, 3 * SPINS_PER_WRITER_CHECK);
        assert_eq!(
            spin,
            [1, 2, 3].map(|k| k * SPINS_PER_WRITER_CHECK - 1).to_vec()
        );
        // Yielding (never parks): once per YIELDS_PER_WRITER_CHECK rounds.
        let y = checks(WaitStrategy::Yield, true, 4 * YIELDS_PER_WRITER_CHECK);
        assert_eq!(y.len(), 4);
        assert!(
            y.iter()
                .all(|r| r % YIELDS_PER_WRITER_CHECK == YIELDS_PER_WRITER_CHECK - 1)
        );
        // Adaptive on a notify stream: rarely while it spins.
        let spinning = checks(WaitStrategy::Adaptive, true, 4000);
        assert!(spinning.len() <= 1, "{spinning:?}");
        // Spun out: at its first park if the bracket it arrived at outlasted the spin,
        // then not after parks a wake ended; after one that ran out, whatever it waited on.
        let mut w = Waiter::new(WaitStrategy::Adaptive, true, None);
        assert!(!w.writer_check_due(7), "looked at its first spin");
        w.spin = AdaptiveSpin::EndedAt(4000);
        let due = |w: &mut Waiter, r, s| {
            w.rounds = r;
            w.writer_check_due(s)
        };
        assert!(
            due(&mut w, 4000, 7),
            "the arrival's bracket outlasted the spin"
        );
        assert!(
            !(4001..4010).any(|r| due(&mut w, r, 7)),
            "looked after a wake"
        );
        w.ran_out_on = Some(6);
        assert!(due(&mut w, 4010, 9), "a park that ran out");
        // Arrived on a bracket that closed meanwhile: a new one is not the arrival's.
        let mut w = Waiter::new(WaitStrategy::Adaptive, true, None);
        assert!(!w.writer_check_due(7));
        w.spin = AdaptiveSpin::EndedAt(4000);
        assert!(!due(&mut w, 4000, 9), "a bracket found after a wake");
        // Park on a notify stream parks at once: looks at its first look only.
        assert_eq!(checks(WaitStrategy::Park, true, 10), [0]);
        // Park without notify yields YIELD_ROUNDS times (and its arrival's look falls to the
        // yields' count), then sleeps: only once the odd value outlived a whole sleep.
        let p = checks(WaitStrategy::Park, false, YIELD_ROUNDS + 10);
        assert_eq!(p.len() as u64, YIELD_ROUNDS / YIELDS_PER_WRITER_CHECK);
        assert!(p.iter().all(|&r| r < YIELD_ROUNDS), "{p:?}");
        let mut w = Waiter::new(WaitStrategy::Park, false, None);
        w.ran_out_on = Some(6);
        assert!(!due(&mut w, YIELD_ROUNDS + 1, 7), "slept on another value");
        w.ran_out_on = Some(7);
        assert!(due(&mut w, YIELD_ROUNDS + 2, 7), "7 outlived a sleep");
    }

    /// A one-byte notify stream `notify-<tag>-<pid>`, made afresh, and its name.
    fn one_byte_notify_stream(tag: &str) -> (String, crate::Stream) {
        let name = format!("notify-{tag}-{}", std::process::id());
        let s = fresh_notify_stream(&name, &[1], crate::Dtype::U8);
        (name, s)
    }

    /// Real parks on a notify stream's open bracket: one that a wake ended leaves the look
    /// for a dead writer undue; one that ran its full length makes it due.
    #[test]
    fn a_park_ended_by_a_wake_does_not_make_the_look_due_and_one_that_ran_out_does() {
        let (name, s) = one_byte_notify_stream("park-look");
        // A writer inside its bracket.
        let b = crate::seqlock::begin_write(&s.header);
        let odd = s
            .header
            .sequence()
            .load(std::sync::atomic::Ordering::Acquire);
        let mut w = Waiter::new(WaitStrategy::Park, true, None);
        assert!(
            w.writer_check_due(odd),
            "a reader arriving at the bracket looks"
        );
        // The next look far off, so that only a wake or a park that ran out ends a park.
        w.looked_at = Some(Instant::now() + Duration::from_secs(3600));
        // Woken (the word unchanged, as by a writer's early wake): no look.
        let task = std::fs::read_link("/proc/thread-self").unwrap();
        let word = s.header.futex_word().as_ptr() as usize;
        PARK_CAP.with(|c| c.set(Duration::from_secs(3600)));
        pause_while(&mut w, &s.header, odd, &task, || wake_all(&s.header));
        assert!(!w.writer_check_due(odd), "looked after a wake");
        // Interrupted by a signal handler (a profiler's periodic timer): no look either.
        // Before, it counted as a park that ran out, and a 1 kHz timer made 1000 looks a
        // second.
        extern "C" fn no_op(_: libc::c_int) {}
        // SAFETY: zeroed `sigaction`s are valid (no flags, empty mask); the handler does
        // nothing, so it is async-signal-safe. SIGURG is ignored by default and nothing
        // else in these tests sends it; no SA_RESTART, as a profiler's handler.
        let old = unsafe {
            let mut new: libc::sigaction = std::mem::zeroed();
            new.sa_sigaction = no_op as extern "C" fn(libc::c_int) as libc::sighandler_t;
            let mut old: libc::sigaction = std::mem::zeroed();
            assert_eq!(libc::sigaction(libc::SIGURG, &new, &mut old), 0);
            old
        };
        // SAFETY: no precondition.
        let me = unsafe { libc::pthread_self() };
        pause_while(&mut w, &s.header, odd, &task, || {
            // SAFETY: `me` is the pausing thread, alive until this closure's thread is
            // joined.
            assert_eq!(unsafe { libc::pthread_kill(me, libc::SIGURG) }, 0);
        });
        // SAFETY: `old` is the disposition `sigaction` returned above.
        unsafe { libc::sigaction(libc::SIGURG, &old, std::ptr::null_mut()) };
        assert!(!w.writer_check_due(odd), "looked after a signal");
        // Wakes that keep coming (another process's, at a dead writer's bracket) do not keep
        // the look off for good, nor bring it before LOOK_AT_LEAST_EVERY.
        let stop = std::sync::atomic::AtomicBool::new(false);
        let since = Instant::now();
        w.looked_at = Some(since);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if parked_on(&task, word) {
                        wake_all(&s.header);
                    }
                    std::thread::yield_now();
                }
            });
            let deadline = since + Duration::from_secs(30);
            loop {
                assert!(Instant::now() < deadline, "no look in 30 s of wakes");
                assert!(w.pause(&s.header, odd, || false));
                if w.writer_check_due(odd) {
                    break;
                }
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        assert!(
            since.elapsed() >= LOOK_AT_LEAST_EVERY,
            "{:?}",
            since.elapsed()
        );
        // Ran out (nobody wakes it, as after a writer's death): a look.
        PARK_CAP.with(|c| c.set(Duration::from_millis(1)));
        assert!(w.pause(&s.header, odd, || false));
        assert!(w.writer_check_due(odd), "no look after a park that ran out");
        PARK_CAP.with(|c| c.set(MAX_PARK));
        crate::seqlock::end_write_even(&s.header, b);
        drop(s);
        crate::unlink(&name).unwrap();
    }

    /// A wait parked on a stable frame, when its writer opens a bracket and dies there, looks
    /// within [`LOOK_AT_LEAST_EVERY`] of its first park whatever ends its parks: the first
    /// park ends by then (its cap here is an hour), and an open bracket seen after it is
    /// looked at. The count used to start at the first sight of the bracket, and a look
    /// waited for a whole park more (up to 135 ms under wakes every 45 ms).
    #[test]
    fn a_wait_parked_on_a_stable_frame_looks_within_the_bound_of_its_first_park() {
        let (name, s) = one_byte_notify_stream("first-park");
        let s = std::sync::Arc::new(s);
        let stable = s
            .header
            .sequence()
            .load(std::sync::atomic::Ordering::Acquire);
        let (tx, rx) = std::sync::mpsc::channel();
        let waiting = s.clone();
        // Detached: a park that the next look does not cut stays parked (an hour), and the
        // test fails at its bound instead of hanging.
        std::thread::spawn(move || {
            let header = &waiting.header;
            PARK_CAP.with(|c| c.set(Duration::from_secs(3600)));
            let mut w = Waiter::new(WaitStrategy::Park, true, None);
            let since = Instant::now();
            assert!(w.pause(header, stable, || false));
            let parked = since.elapsed();
            // The writer opened a bracket meanwhile and died there; a wake ended the park
            // (as another process's may have): the look is due by the time alone.
            w.ran_out_on = None;
            let b = crate::seqlock::begin_write(header);
            let odd = header.sequence().load(std::sync::atomic::Ordering::Acquire);
            let due = w.writer_check_due(odd);
            crate::seqlock::end_write_even(header, b);
            let _ = tx.send((parked, due));
        });
        let got = rx.recv_timeout(Duration::from_secs(30));
        crate::unlink(&name).unwrap();
        let (parked, due) = got.expect("the first park was not cut at the next look");
        assert!(parked >= LOOK_AT_LEAST_EVERY, "{parked:?}");
        assert!(due, "no look at a bracket seen after the first park");
    }

    /// A wait held up past the time its look fell due (its caller found the look undue just
    /// before) does not park at an open bracket: it returns as if a park ran out, and the
    /// look is due next. It parked a whole park more (up to 100 ms between looks).
    #[test]
    fn a_wait_past_its_look_at_an_open_bracket_does_not_park() {
        let (name, s) = one_byte_notify_stream("past-due");
        // A frame first: the bracket is at 3, not at the first sequence, 1.
        s.write_slice(&[1u8]).unwrap();
        let s = std::sync::Arc::new(s);
        let (tx, rx) = std::sync::mpsc::channel();
        let waiting = s.clone();
        // Detached: a park there stays parked (an hour), and the test fails at its bound.
        std::thread::spawn(move || {
            let header = &waiting.header;
            let b = crate::seqlock::begin_write(header);
            let odd = header.sequence().load(std::sync::atomic::Ordering::Acquire);
            PARK_CAP.with(|c| c.set(Duration::from_secs(3600)));
            let mut w = Waiter::new(WaitStrategy::Park, true, None);
            assert!(w.writer_check_due(odd), "the arrival's look");
            w.looked_at = Instant::now().checked_sub(2 * LOOK_AT_LEAST_EVERY);
            let paused = w.pause(header, odd, || false);
            let _ = tx.send((paused, w.ran_out_on == Some(odd), w.writer_check_due(odd)));
            crate::seqlock::end_write_even(header, b);
        });
        let got = rx.recv_timeout(Duration::from_secs(30));
        crate::unlink(&name).unwrap();
        assert_eq!(
            got.expect("it parked past its look"),
            (true, true, true),
            "(paused, ran out, look due)"
        );
    }

    /// A wait past its look on a stable frame, where nobody looks for a dead writer, parks
    /// as ever, until a wake: only at an open bracket does it return without parking, for
    /// the look to come next.
    #[test]
    fn a_wait_past_its_look_on_a_stable_frame_parks() {
        let (name, s) = one_byte_notify_stream("past-due-stable");
        s.write_slice(&[1u8]).unwrap();
        let stable = s
            .header
            .sequence()
            .load(std::sync::atomic::Ordering::Acquire);
        assert_eq!(stable, 2);
        let task = std::fs::read_link("/proc/thread-self").unwrap();
        PARK_CAP.with(|c| c.set(Duration::from_secs(3600)));
        let mut w = Waiter::new(WaitStrategy::Park, true, None);
        w.looked_at = Instant::now().checked_sub(2 * LOOK_AT_LEAST_EVERY);
        // Fails (the waiter never parked) where the pause returns without parking.
        pause_while(&mut w, &s.header, stable, &task, || wake_all(&s.header));
        assert_eq!(w.ran_out_on, None);
        PARK_CAP.with(|c| c.set(MAX_PARK));
        drop(s);
        crate::unlink(&name).unwrap();
    }

    /// A wait that has paused more than `u32::MAX` times (about two minutes of spinning)
    /// still looks for a dead writer once per [`SPINS_PER_WRITER_CHECK`] pauses: its count
    /// once saturated at `u32::MAX`, where the look fell due at every pause.
    #[test]
    fn a_spin_past_u32_max_pauses_still_looks_for_a_dead_writer_rarely() {
        let name = format!("notify-long-spin-{}", std::process::id());
        let _ = crate::unlink(&name);
        let s = crate::Stream::create(&name, &[4], crate::Dtype::U8).unwrap();
        let mut w = Waiter::new(WaitStrategy::Spin, false, None);
        w.rounds = u64::from(u32::MAX) - 10;
        let mut due = 0;
        for _ in 0..2 * SPINS_PER_WRITER_CHECK {
            assert!(
                w.pause(&s.header, 0, || false),
                "a wait without a deadline ended"
            );
            due += u64::from(w.writer_check_due(7));
        }
        assert_eq!(due, 2);
        drop(s);
        crate::unlink(&name).unwrap();
    }

    /// One `pause` of `w` (this thread, `task`) at `odd`, which must return `true`, with
    /// `then` run on another thread once this one is seen parked on `h`'s futex word.
    fn pause_while(
        w: &mut Waiter,
        h: &MappedHeader,
        odd: i64,
        task: &std::path::Path,
        then: impl FnOnce() + Send,
    ) {
        let word = h.futex_word().as_ptr() as usize;
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let deadline = Instant::now() + Duration::from_secs(30);
                while !parked_on(task, word) {
                    assert!(Instant::now() < deadline, "the waiter never parked");
                    std::thread::yield_now();
                }
                then();
            });
            assert!(w.pause(h, odd, || false));
        });
    }

    /// A cancel flag is its thread's only while its wait runs, and the flag before it is
    /// back after: a blocking-pool thread's next wait (another task's, or a blocking one)
    /// must not end at once for a wait cancelled before it.
    #[cfg(feature = "tokio")]
    #[test]
    fn a_cancel_flag_is_its_thread_s_only_while_its_wait_runs() {
        let cancelled_wait = Arc::new(Cancel::default());
        cancelled_wait.cancel();
        assert!(cancellable(cancelled_wait.clone(), cancelled));
        assert!(
            !cancelled(),
            "a finished wait's cancel ends this thread's next wait"
        );
        let outer = Arc::new(Cancel::default());
        let inner_then_outer = cancellable(outer, || {
            (cancellable(cancelled_wait, cancelled), cancelled())
        });
        assert_eq!(inner_then_outer, (true, false));
    }

    /// A notify stream `name` of `shape` and `dtype`, made afresh (a leftover of an earlier
    /// run removed first): the parking and waking tests' stream.
    pub(crate) fn fresh_notify_stream(
        name: &str,
        shape: &[usize],
        dtype: crate::Dtype,
    ) -> crate::Stream {
        let _ = crate::unlink(name);
        crate::StreamOptions::new(name)
            .shape(shape)
            .dtype(dtype)
            .notify(true)
            .create()
            .unwrap()
    }

    /// Waits (up to 30 s) until a thread of this process is parked on `s`'s futex word
    /// (the async waits' tests, `write::tests`); `what` names the waiter in the failure.
    pub(crate) fn wait_parked(s: &crate::Stream, what: &str) {
        let word = s.header.futex_word().as_ptr() as usize;
        let t0 = std::time::Instant::now();
        while !task_parked_on(word) {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "{what} never parked"
            );
            std::thread::yield_now();
        }
    }

    /// This process's tasks (threads), each as "PID/task/TID" under `/proc`.
    pub(crate) fn own_tasks() -> Vec<std::path::PathBuf> {
        let me = std::path::PathBuf::from(std::process::id().to_string()).join("task");
        std::fs::read_dir("/proc/self/task")
            .map(|tasks| {
                tasks
                    .filter_map(|e| Some(me.join(e.ok()?.file_name())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The system call task `task` ("PID/task/TID") is blocked in, as `/proc` shows it: its
    /// number, then its arguments in hex (nothing when unreadable).
    pub(crate) fn blocked_in(task: &std::path::Path) -> Vec<String> {
        let path = std::path::Path::new("/proc").join(task).join("syscall");
        let syscall = std::fs::read_to_string(path).unwrap_or_default();
        syscall.split_whitespace().map(str::to_owned).collect()
    }

    /// Whether a task of this process is blocked in a shared `FUTEX_WAIT` on `word`.
    fn task_parked_on(word: usize) -> bool {
        own_tasks().iter().any(|task| parked_on(task, word))
    }

    /// Whether task `task` ("PID/task/TID") is blocked in a shared `FUTEX_WAIT` on `word`.
    fn parked_on(task: &std::path::Path, word: usize) -> bool {
        let call = blocked_in(task);
        call.first() == Some(&libc::SYS_futex.to_string())
            && call.get(1) == Some(&format!("{word:#x}"))
            && call.get(2).is_some_and(|op| op == "0x0")
    }

    /// A waiter parked on a notify stream's futex is woken by a write's wake, not by its
    /// park cap: the wait has no timeout and its thread's cap is raised to an hour, so a
    /// wake that missed the word it waits on (another address, a private futex) leaves it
    /// parked past the test's bound. tests/interop.rs shows the same wake reaching a parked
    /// pyshmem reader.
    #[test]
    fn a_parked_wait_is_woken_by_the_writers_wake_not_its_cap() {
        let name = format!("notify-wake-{}", std::process::id());
        let w = fresh_notify_stream(&name, &[1], crate::Dtype::U32);
        w.write_slice(&[1u32]).unwrap();
        let r = crate::Stream::open_readonly(&name).unwrap();
        r.set_wait_strategy(WaitStrategy::Park);
        let word = r.header.futex_word().as_ptr() as usize;
        let (task_tx, task_rx) = std::sync::mpsc::channel();
        let (got_tx, got_rx) = std::sync::mpsc::channel();
        // Detached: a wait never woken leaves only this thread parked, and the test fails.
        std::thread::spawn(move || {
            crate::notify::uncap_this_thread();
            task_tx
                .send(std::fs::read_link("/proc/thread-self").unwrap())
                .unwrap();
            let got = r
                .read_new_publication::<u32>(None)
                .map(|p| (p.payload.into_raw_vec_and_offset().0, p.info.count));
            let _ = got_tx.send(got);
        });
        let task = task_rx.recv().unwrap();
        let bound = Duration::from_secs(30);
        let deadline = Instant::now() + bound;
        while !parked_on(&task, word) {
            assert!(Instant::now() < deadline, "the reader never parked");
            std::thread::yield_now();
        }
        w.write_slice(&[2u32]).unwrap();
        let got = got_rx.recv_timeout(bound);
        drop(w);
        crate::unlink(&name).unwrap();
        let got = got.expect("the write's wake missed the parked reader");
        assert_eq!(got.unwrap(), (vec![2], 2));
    }
}
