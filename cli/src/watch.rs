//! `watch`: samples each stream's metadata every `--interval` and shows count, update rate,
//! age, missed frames and creator liveness (`unfinished` for one whose creation still holds
//! its lock after a short wait: a stalled creator holds up no row). On a terminal the table
//! is redrawn in place (autowrap off, cut to the terminal's height); when stdout is not a
//! terminal, every sample is printed as plain lines. Stops on Ctrl-C (SIGINT), SIGTERM,
//! SIGHUP (terminal closed) or SIGQUIT (those not ignored when it started, as `nohup`
//! ignores SIGHUP), also while a reader that stopped reading holds up its output, or after
//! `--duration`. On a terminal, Ctrl-Z (SIGTSTP, unless ignored when it started) gives the
//! terminal back its cursor and autowrap before the process stops, and on `fg` the table is
//! drawn afresh below what the shell wrote meanwhile. A sample due while the process was
//! stopped (Ctrl-Z, a suspend) is taken on waking and the next one an interval later:
//! samples never come back to back to make up for the stall.
//!
//! "Missed" counts frames the writer skipped according to its own frame ids: over one
//! interval, `(frame_id advance) - (count advance)` when the writer stamps frame ids (a
//! camera frame counter, say); `-` for streams whose frame id is never set.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use shmstream::{Error, StreamStat};

use crate::Fallible;
use crate::show::{creator_str, human_age, table};
use crate::term::{AFTER_STOP, unbuffered_stdout, write_or_stop};

static STOP: AtomicBool = AtomicBool::new(false);

/// The signals that stop the tool cleanly ([`install_handlers`]), or that `load` holds off
/// while it writes a frame.
pub(crate) const STOP_SIGNALS: [libc::c_int; 4] =
    [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// Set by Ctrl-Z (SIGTSTP) while `watch` draws on a terminal: see [`suspend`].
static SUSPEND: AtomicBool = AtomicBool::new(false);

/// Whether a stopping signal arrived since [`install_handlers`].
pub(crate) fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Sets the stop flag as a stopping signal does: the recorders end as they would at Ctrl-C.
pub(crate) fn request_stop() {
    STOP.store(true, Ordering::Relaxed);
}

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::Relaxed);
}

extern "C" fn on_suspend(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    SUSPEND.store(true, Ordering::Relaxed);
}

/// Whether a stopping signal or a Ctrl-Z arrived: what cuts a draw short.
fn stop_or_suspend() -> bool {
    stop_requested() || SUSPEND.load(Ordering::Relaxed)
}

/// Makes SIGINT, SIGTERM, SIGHUP (the terminal closed, an SSH session dropped) and SIGQUIT
/// set the stop flag, so `watch` and `record` end cleanly (`record` finishes its files) on
/// any of them, and `dump -o` fails its write (removing its temporary file). A signal
/// ignored when we started stays ignored: `nohup` ignores SIGHUP, and a shell's background
/// jobs SIGINT and SIGQUIT, so that they outlive the terminal or a Ctrl-C. SIGKILL cannot
/// be handled: see `record`'s module doc for what it leaves.
pub(crate) fn install_handlers() -> Fallible {
    for sig in STOP_SIGNALS {
        catch(sig, on_signal)?;
    }
    Ok(())
}

/// Makes `handler` (an atomic store) catch `sig`, without `SA_RESTART` (a blocked write
/// returns), unless `sig` is ignored: returns whether it catches it.
fn catch(sig: libc::c_int, handler: extern "C" fn(libc::c_int)) -> Fallible<bool> {
    // SAFETY: zeroed sigactions are valid starting values; a null new action only reads
    // the current one into `old`; the handler only stores to an atomic
    // (async-signal-safe), and `sa_mask` is initialized by `sigemptyset`.
    let (rc, caught) = unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        let mut rc = libc::sigaction(sig, std::ptr::null(), &mut old);
        let caught = rc == 0 && old.sa_sigaction != libc::SIG_IGN;
        if caught {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            rc = libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
        (rc, caught)
    };
    if rc != 0 {
        return Err(format!(
            "installing the signal handler: {}",
            std::io::Error::last_os_error()
        )
        .into());
    }
    Ok(caught)
}

/// Ctrl-Z (SIGTSTP, caught on a terminal): gives the terminal back its cursor and autowrap
/// (as after a stop signal: without waiting for a terminal that does not take them), stops
/// the process as SIGTSTP's default action does, and once it is continued (`fg`, SIGCONT)
/// catches SIGTSTP again. The caller then enters its modes again and draws the table afresh:
/// the shell wrote below the last draw meanwhile. (In an orphaned process group the kernel
/// discards the stop, as it would the default action's: `watch` carries on.)
fn suspend() -> Fallible {
    leave_after_stop();
    // SAFETY: SIG_DFL installs no handler code; `raise` sends SIGTSTP to this thread, whose
    // default action stops the process until SIGCONT.
    unsafe {
        libc::signal(libc::SIGTSTP, libc::SIG_DFL);
        libc::raise(libc::SIGTSTP);
    }
    // A second Ctrl-Z caught while the modes were being left (before the default action was
    // back) is spent by this stop: it must not stop the process again right after `fg`.
    SUSPEND.store(false, Ordering::Relaxed);
    catch(libc::SIGTSTP, on_suspend)?;
    Ok(())
}

/// What one stream looked like at the previous sample.
struct Track {
    name: String,
    last: Option<(Instant, StreamStat)>,
    rate: Option<f64>,
    missed: Option<Missed>,
    state: String,
}

/// Frames missed over the samples of one instance: per interval, the frame ids the writer
/// moved past beyond the frames it wrote (one frame id a frame). A sample taken inside a
/// write can see its new count with the frame id before it (a history stream stores the
/// count before it copies the frame into the payload, the frame id after), or the count
/// before it with its frame id: that interval then reads one short and the next one over,
/// or the reverse, and the pair cancels.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Missed {
    total: u64,
    /// The last interval: 1 where it counted frames (one short next takes one back), -1
    /// where it read one short (one over next pays it back), else 0.
    last: i8,
}

impl Missed {
    /// An interval in which `written` frames were written and the frame id moved forward by
    /// `ids` (`None`: it went back, a writer starting its ids again: nothing missed).
    fn add(&mut self, written: u64, ids: Option<u64>) {
        let Some(ids) = ids else {
            self.last = 0;
            return;
        };
        let mut surplus = i128::from(ids) - i128::from(written);
        // The second of a pair settles the first: one short takes back the last interval's
        // one over, one over pays back its one short.
        if surplus < 0 && self.last == 1 {
            self.total = self.total.saturating_sub(1);
            (surplus, self.last) = (surplus + 1, 0);
        } else if surplus > 0 && self.last == -1 {
            (surplus, self.last) = (surplus - 1, 0);
        }
        match surplus {
            0 => {}
            -1 => self.last = -1,
            // Ids repeated: nothing missed.
            s if s < 0 => self.last = 0,
            s => {
                self.total = self
                    .total
                    .saturating_add(u64::try_from(s).unwrap_or(u64::MAX));
                self.last = 1;
            }
        }
    }
}

impl Track {
    /// A stream not looked at yet.
    fn new(name: &str) -> Track {
        Track {
            name: name.to_owned(),
            last: None,
            rate: None,
            missed: None,
            state: String::new(),
        }
    }

    /// Samples the stream, waiting at most about `wait` for a creation at work on it.
    fn sample(&mut self, wait: Duration) {
        let now = Instant::now();
        match shmstream::stat_within(&self.name, wait) {
            Ok(s) => {
                if let Some((t, prev)) = &self.last {
                    if prev.instance_id == s.instance_id {
                        let dc = s.count.saturating_sub(prev.count);
                        let dt = now.duration_since(*t).as_secs_f64();
                        self.rate = (dt > 0.0).then(|| dc as f64 / dt);
                        // Also where no frame was written: an id that moved on pays back a
                        // sample inside the last write.
                        if s.frame_id != 0 && prev.frame_id != 0 {
                            // A writer's ids may jump anywhere in the 64 bits (counted
                            // saturating), and back (`None`: nothing missed).
                            let ids = s.frame_id.checked_sub(prev.frame_id);
                            self.missed.get_or_insert_default().add(dc, ids);
                        }
                    } else {
                        self.rate = None;
                        self.missed = None;
                    }
                }
                if s.frame_id != 0 && self.missed.is_none() {
                    self.missed = Some(Missed::default());
                }
                self.state = if s.write_sequence < 0 {
                    "invalid".into()
                } else {
                    "ok".into()
                };
                self.last = Some((now, s));
            }
            // What is counted next is a new instance's, if any. An unfinished one is being
            // created (still, after `wait`), or its creator died while creating it (`stat`
            // says which remedy): not gone.
            Err(Error::NotFound {
                unfinished: true, ..
            }) => self.forget("unfinished".into()),
            Err(Error::NotFound { .. }) => self.forget("gone".into()),
            Err(e) => self.forget(format!("error: {}", crate::term::printable(&e.to_string()))),
        }
    }

    /// Drops what was seen of the stream, now in `state`.
    fn forget(&mut self, state: String) {
        self.state = state;
        self.last = None;
        self.rate = None;
        self.missed = None;
    }

    fn row(&self) -> Vec<String> {
        let rate = self.rate.map_or_else(|| "-".into(), |r| format!("{r:.1}"));
        let missed = self
            .missed
            .map_or_else(|| "-".into(), |m| m.total.to_string());
        match &self.last {
            Some((_, s)) => vec![
                crate::term::printable(&self.name).into_owned(),
                s.count.to_string(),
                rate,
                human_age(s.write_time),
                missed,
                creator_str(s.creator_pid, s.creator_alive),
                self.state.clone(),
            ],
            None => vec![
                crate::term::printable(&self.name).into_owned(),
                "-".into(),
                "-".into(),
                "-".into(),
                missed,
                "-".into(),
                self.state.clone(),
            ],
        }
    }
}

const HEADER: [&str; 7] = [
    "NAME", "COUNT", "RATE_HZ", "AGE", "MISSED", "CREATOR", "STATE",
];

/// Terminal modes while the table is redrawn in place: cursor hidden, and autowrap off, so
/// that a line wider than the terminal is cut at its edge instead of wrapping onto a row
/// the next redraw would not go back over.
const TTY_ENTER: &str = "\x1b[?25l\x1b[?7l";

/// Undoes [`TTY_ENTER`].
const TTY_LEAVE: &str = "\x1b[?7h\x1b[?25h";

/// Writes [`TTY_LEAVE`] after a stop signal or a Ctrl-Z if the terminal takes it within
/// [`AFTER_STOP`], and never blocks (see [`Out`](crate::term::Out)): no signal is left to
/// end a write the terminal holds up (Ctrl-S, a terminal program that stopped reading). A
/// terminal that does not take it is left as it is: it was not reading anyway.
fn leave_after_stop() {
    let Ok(out) = unbuffered_stdout() else {
        return;
    };
    let deadline = Instant::now() + AFTER_STOP;
    let _ = out.write_all(TTY_LEAVE.as_bytes(), &mut || Instant::now() >= deadline);
}

/// The text that draws `rows` over the previous draw of `drawn` lines, and its number of
/// lines: on a terminal of `height` rows, at most `height - 1` of them, the last saying how
/// many were left out (lines scrolled off the top cannot be gone back over).
fn redraw(drawn: usize, rows: &[Vec<String>], height: Option<usize>) -> (String, usize) {
    let mut lines = table(rows);
    let fit = height.map_or(usize::MAX, |h| h.saturating_sub(1).max(2));
    if lines.len() > fit {
        let left_out = lines.len() - (fit - 1);
        lines.truncate(fit - 1);
        lines.push(format!(
            "({left_out} more streams: the terminal is too short)"
        ));
    }
    let mut text = String::new();
    if drawn > 0 {
        let _ = write!(text, "\x1b[{drawn}F"); // back to the first line of the last draw
    }
    text.push_str("\x1b[J"); // clear from here down
    for l in &lines {
        text.push_str(l);
        text.push('\n');
    }
    (text, lines.len())
}

/// The height in rows of the terminal on stdout, if it tells.
fn terminal_height() -> Option<usize> {
    // SAFETY: TIOCGWINSZ only writes one `winsize` through the pointer, to a zeroed one.
    let (rc, ws) = unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        (libc::ioctl(1, libc::TIOCGWINSZ, &mut ws), ws)
    };
    (rc == 0 && ws.ws_row > 0).then_some(usize::from(ws.ws_row))
}

/// `shown` (text already made [`printable`](crate::term::printable)) as the value of a
/// `key=value` field of a plain line: one shell word, quoted when it holds a space or
/// another character special to a shell, so that a stream name (or an error naming it)
/// cannot forge fields: `shlex.split` parses the line.
fn field(shown: &str) -> String {
    let word = shmstream::name::shell_word(shown);
    // `shell_word` puts a leading `-` after `--` (a command's argument); a value needs none.
    match word.strip_prefix("-- ") {
        Some(w) if shown.starts_with('-') => w.to_owned(),
        _ => word,
    }
}

/// The longest a sample waits for a creation at work under a stream's lock (a stalled
/// creator holds it for as long as it likes): past it the stream shows as `unfinished`, and
/// the other rows and a stop signal are not held up.
const CREATION_WAIT: Duration = Duration::from_millis(50);

/// When the sample after the one due at `due` is due, it now being `now`: an interval
/// later, or, after a stall (Ctrl-Z, a suspend) that left that tick behind, an interval from
/// now, not one per tick missed, back to back (with rates over microseconds). Never after
/// `end`.
fn next_due(due: Instant, interval: Duration, now: Instant, end: Option<Instant>) -> Instant {
    let mut next = due + interval;
    if next < now {
        next = now + interval;
    }
    end.map_or(next, |e| next.min(e))
}

/// `shmstream watch NAME... [--interval S] [--duration S]`.
pub(crate) fn watch(names: &[String], interval: Duration, duration: Option<Duration>) -> Fallible {
    let interval = interval.max(Duration::from_millis(10));
    let wait = interval.min(CREATION_WAIT);
    // Every name must exist when the watch starts (a typo is an error, not an empty view);
    // one whose creation is unfinished does (shown as `unfinished`).
    for n in names {
        match shmstream::stat_within(n, wait) {
            Ok(_)
            | Err(Error::NotFound {
                unfinished: true, ..
            }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    install_handlers()?;
    let tty = std::io::stdout().is_terminal();
    if tty {
        catch(libc::SIGTSTP, on_suspend)?;
    }
    let start = Instant::now();
    let end = duration.map(|d| start + d);
    let mut tracks: Vec<Track> = names.iter().map(|n| Track::new(n)).collect();
    // Unbuffered, so that a stop signal ends a write blocked on a reader that stopped.
    let stdout = unbuffered_stdout()?;
    // A draw is cut short by a Ctrl-Z too, so that the process stops at once, also while a
    // terminal that stopped reading holds it up.
    let write = |text: &str| write_or_stop(&stdout, text, stop_or_suspend);
    let mut drawn_lines = 0usize;
    if tty {
        write(TTY_ENTER)?;
    }
    let mut next = start;
    let mut draw = || -> Fallible {
        loop {
            for t in &mut tracks {
                if stop_requested() {
                    return Ok(());
                }
                t.sample(wait);
            }
            if tty {
                let mut rows = vec![HEADER.map(String::from).to_vec()];
                rows.extend(tracks.iter().map(Track::row));
                let (text, lines) = redraw(drawn_lines, &rows, terminal_height());
                write(&text)?;
                drawn_lines = lines;
            } else {
                let t = start.elapsed().as_secs_f64();
                let mut text = String::new();
                for tr in &tracks {
                    let r = tr.row();
                    // No rate before a second sample: "-", not "-Hz".
                    let rate = match r[2].as_str() {
                        "-" => "-".to_owned(),
                        hz => format!("{hz}Hz"),
                    };
                    let _ = writeln!(
                        text,
                        "t={t:.2}s name={} count={} rate={rate} age={} missed={} creator={} state={}",
                        field(&r[0]),
                        r[1],
                        r[3],
                        r[4],
                        r[5].replace(' ', ":"),
                        field(&r[6])
                    );
                }
                write(&text)?;
            }
            next = next_due(next, interval, Instant::now(), end);
            // Sleep to the next sample in short steps so Ctrl-C and Ctrl-Z are handled
            // promptly.
            while !STOP.load(Ordering::Relaxed) {
                if SUSPEND.swap(false, Ordering::Relaxed) {
                    suspend()?;
                    // Continued: the modes again, and the table drawn now, below what the
                    // shell wrote, not over it.
                    write(TTY_ENTER)?;
                    drawn_lines = 0;
                    break;
                }
                let now = Instant::now();
                if now >= next {
                    break;
                }
                std::thread::sleep((next - now).min(Duration::from_millis(20)));
            }
            if STOP.load(Ordering::Relaxed) || end.is_some_and(|e| Instant::now() >= e) {
                return Ok(());
            }
        }
    };
    let mut drawn = draw();
    // The cursor and autowrap come back however the loop ended, a failed write included;
    // after a stop signal, only if the terminal takes them without waiting.
    if tty && stop_requested() {
        leave_after_stop();
    } else if tty {
        // Not cut short by a Ctrl-Z that came last.
        drawn = drawn.and(write_or_stop(&stdout, TTY_LEAVE, stop_requested));
    }
    // A stop by signal is a clean stop, also when the terminal is gone: a hangup makes
    // writes to it fail (EIO) and then sends SIGHUP.
    if stop_requested() { Ok(()) } else { drawn }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shmstream::Dtype;

    /// Unlinks the stream on drop, also when the test fails.
    struct Unlink(String);
    impl Drop for Unlink {
        fn drop(&mut self) {
            let _ = shmstream::unlink_quiet(&self.0);
        }
    }

    #[test]
    fn a_recreated_stream_starts_counting_missed_frames_afresh() {
        let name = format!("t-watch-missed-{}", std::process::id());
        let _u = Unlink(name.clone());
        let mut t = Track::new(&name);
        let missed = |t: &mut Track| {
            t.sample(CREATION_WAIT);
            t.row()[4].clone()
        };
        let s = shmstream::Stream::create(&name, &[1], Dtype::U8).unwrap();
        s.write_slice_frame(&[0u8], 1).unwrap();
        assert_eq!(missed(&mut t), "0");
        // One frame written, frame ids 2 to 9 skipped.
        s.write_slice_frame(&[0u8], 10).unwrap();
        assert_eq!(missed(&mut t), "8");
        s.unlink().unwrap();
        drop(s);
        assert_eq!(missed(&mut t), "-");
        assert_eq!(t.state, "gone");
        let s = shmstream::Stream::create(&name, &[1], Dtype::U8).unwrap();
        s.write_slice_frame(&[0u8], 1).unwrap();
        assert_eq!(missed(&mut t), "0", "the new instance has missed nothing");
    }

    #[test]
    fn a_stream_being_created_shows_as_unfinished_not_gone() {
        let name = format!("t-watch-creating-{}", std::process::id());
        let _u = Unlink(name.clone());
        drop(shmstream::Stream::create(&name, &[1], Dtype::U8).unwrap());
        // Its payload without its header, as pyshmem's create leaves it for a moment: an
        // unfinished creation, told at once (no lock to wait for).
        let meta = format!("/dev/shm/{}", shmstream::name::meta_id(&name));
        std::fs::remove_file(meta).unwrap();
        let mut t = Track::new(&name);
        t.sample(CREATION_WAIT);
        let payload = format!("/dev/shm/{}", shmstream::name::segment_id(&name));
        let _ = std::fs::remove_file(payload);
        assert_eq!(t.row()[6], "unfinished", "the table's STATE column");
    }

    #[test]
    fn plain_line_fields_are_one_shell_word_each() {
        assert_eq!(field("cam0"), "cam0");
        assert_eq!(field("cam0 count=9"), "'cam0 count=9'");
        assert_eq!(field("-cam0"), "-cam0");
        assert_eq!(field("-- x"), "'-- x'");
        assert_eq!(field("it's"), r#"'it'"'"'s'"#);
        // An error state, already printable: its backslashes are not doubled again.
        assert_eq!(field(r"error: 'a\nb'"), r#"'error: '"'"'a\nb'"'"''"#);
    }

    /// A sample inside a write (its count with the frame id before it, or the reverse) makes
    /// one interval read one short and the next one over: the pair adds nothing, in either
    /// order; a real skip is counted, and one after a pair too.
    #[test]
    fn a_sample_taken_inside_a_write_adds_no_missed_frame() {
        let run = |intervals: &[(u64, u64)]| {
            let mut m = Missed::default();
            for &(written, ids) in intervals {
                m.add(written, Some(ids));
            }
            m.total
        };
        // Counts 10 → 21 (frame 21 under way, its id still 20) → 30, ids 10 → 20 → 30.
        assert_eq!(run(&[(11, 10), (9, 10)]), 0);
        // Counts 10 → 20 (frame 21's id read, its count not) → 30, ids 10 → 21 → 30.
        assert_eq!(run(&[(10, 11), (10, 9)]), 0);
        // Ids 2 to 9 skipped, then a pair, then one more skipped.
        assert_eq!(run(&[(1, 9), (11, 10), (9, 10), (5, 6)]), 9);
        // Two samples inside writes in a row (counts 10 → 21 → 31 → 40, ids 10 → 20 → 30
        // → 40), in either order.
        assert_eq!(run(&[(11, 10), (10, 10), (9, 10)]), 0);
        assert_eq!(run(&[(10, 11), (10, 10), (10, 9)]), 0);
        // One of each kind in a row (counts 10 → 20 → 31 → 40, ids 10 → 21 → 30 → 40), in
        // either order.
        assert_eq!(run(&[(10, 11), (11, 9), (9, 10)]), 0);
        assert_eq!(run(&[(11, 10), (9, 11), (10, 9)]), 0);
        // Paid back in an interval with no frame written (the writer slower than the
        // samples), and a later skip still counted.
        assert_eq!(run(&[(11, 10), (0, 1), (10, 10), (5, 6)]), 1);
        // Ids repeated (more than one short) are nothing missed, and pay nothing back.
        assert_eq!(run(&[(10, 2), (10, 12)]), 2);
        // Ids going back count nothing, and end a pair.
        let mut m = Missed::default();
        m.add(10, Some(11));
        m.add(1, None);
        m.add(10, Some(9));
        assert_eq!(m.total, 1);
    }

    /// The rate is the frames written between two samples over the time between them: no
    /// less than over the time around both samples, no more than over the time between them.
    #[test]
    fn the_rate_is_the_frames_written_over_the_time_between_two_samples() {
        let name = format!("t-watch-rate-{}", std::process::id());
        let s = shmstream::scratch(&name, &[1], Dtype::U8).unwrap();
        let mut t = Track::new(&name);
        let before_first = Instant::now();
        t.sample(CREATION_WAIT);
        let after_first = Instant::now();
        assert_eq!(t.rate, None, "no rate before a second sample");
        for _ in 0..5 {
            s.write_slice(&[0u8]).unwrap();
        }
        let before_second = Instant::now();
        t.sample(CREATION_WAIT);
        let after_second = Instant::now();
        let rate = t.rate.expect("a rate after a second sample");
        let around = after_second.duration_since(before_first).as_secs_f64();
        let between = before_second.duration_since(after_first).as_secs_f64();
        assert!(
            5.0 / around <= rate && rate <= 5.0 / between,
            "{rate} Hz for 5 frames, not within 5 over {around} s and 5 over {between} s"
        );
    }

    /// A stream whose writer starts stamping frame ids after frames without one (id 0) has
    /// missed nothing by its first id: counting starts there.
    #[test]
    fn missed_frames_are_counted_from_the_first_frame_id_on() {
        let name = format!("t-watch-first-id-{}", std::process::id());
        let s = shmstream::scratch(&name, &[1], Dtype::U8).unwrap();
        let mut t = Track::new(&name);
        s.write_slice(&[0u8]).unwrap();
        t.sample(CREATION_WAIT);
        assert_eq!(t.row()[4], "-", "no frame id yet");
        s.write_slice_frame(&[0u8], 100).unwrap();
        t.sample(CREATION_WAIT);
        assert_eq!(t.row()[4], "0");
        s.write_slice_frame(&[0u8], 103).unwrap();
        t.sample(CREATION_WAIT);
        assert_eq!(t.row()[4], "2");
    }

    /// A fresh stream is `ok`; one whose write sequence is negative (a writer died inside its
    /// write, and the next holder of its lock marked it) is `invalid`.
    #[test]
    fn a_stream_marked_inconsistent_shows_as_invalid() {
        use std::os::unix::fs::FileExt;
        let name = format!("t-watch-invalid-{}", std::process::id());
        let _s = shmstream::scratch(&name, &[1], Dtype::U8).unwrap();
        let mut t = Track::new(&name);
        t.sample(CREATION_WAIT);
        assert_eq!(t.row()[6], "ok");
        let meta = format!("/dev/shm/{}", shmstream::name::meta_id(&name));
        let f = std::fs::OpenOptions::new().write(true).open(meta).unwrap();
        let at = shmstream::format::offset::WRITE_SEQUENCE as u64;
        f.write_all_at(&(-1i64).to_le_bytes(), at).unwrap();
        t.sample(CREATION_WAIT);
        assert_eq!(t.row()[6], "invalid");
    }

    /// `n` streams' rows under the header, as `watch` draws them.
    fn header_and_rows(n: usize) -> Vec<Vec<String>> {
        let mut rows = vec![HEADER.map(String::from).to_vec()];
        rows.extend((0..n).map(|i| Track::new(&format!("cam{i}")).row()));
        rows
    }

    /// A draw goes back over exactly the lines of the last one, clears below, and draws each
    /// row on a line of its own.
    #[test]
    fn a_redraw_goes_back_over_the_lines_drawn_last() {
        let rows = header_and_rows(2);
        let lines: String = table(&rows).iter().map(|l| format!("{l}\n")).collect();
        assert_eq!(redraw(0, &rows, None), (format!("\x1b[J{lines}"), 3));
        assert_eq!(redraw(7, &rows, None), (format!("\x1b[7F\x1b[J{lines}"), 3));
        // The terminal's last row stays free (a line end there would scroll): 3 lines fit 4
        // rows.
        assert_eq!(
            redraw(3, &rows, Some(4)),
            (format!("\x1b[3F\x1b[J{lines}"), 3)
        );
    }

    /// On a terminal too short for the table, its first lines are drawn and a last one says
    /// how many streams were left out, all within the terminal's height less one row; at
    /// least the header and that line, however short the terminal says it is.
    #[test]
    fn a_table_taller_than_the_terminal_is_cut_and_says_how_many_streams_are_left_out() {
        let rows = header_and_rows(10);
        let lines = table(&rows);
        let cut = |height: usize, kept: usize, left_out: usize| {
            let (text, drawn) = redraw(0, &rows, Some(height));
            let mut want = String::from("\x1b[J");
            for l in &lines[..kept] {
                want.push_str(l);
                want.push('\n');
            }
            want.push_str(&format!(
                "({left_out} more streams: the terminal is too short)\n"
            ));
            assert_eq!(text, want, "on {height} rows");
            assert_eq!(drawn, kept + 1, "on {height} rows");
        };
        // 11 lines on 11 rows: the header and 8 streams, and the line for the other 2.
        cut(11, 9, 2);
        cut(6, 4, 7);
        cut(2, 1, 10);
        cut(0, 1, 10);
        // 11 lines on 12 rows: all of them.
        assert_eq!(redraw(0, &rows, Some(12)).1, 11);
    }

    /// Samples are an interval apart; after a stall past the next tick, the next one is an
    /// interval from the end of the stall, not at once; none is due after the `--duration`.
    #[test]
    fn the_next_sample_is_an_interval_later_or_after_a_stall_an_interval_from_now() {
        let (t0, ms) = (Instant::now(), Duration::from_millis);
        let i = ms(100);
        assert_eq!(next_due(t0, i, t0 + ms(1), None), t0 + i);
        // Due exactly now: taken now.
        assert_eq!(next_due(t0, i, t0 + i, None), t0 + i);
        assert_eq!(next_due(t0, i, t0 + ms(101), None), t0 + ms(201));
        assert_eq!(next_due(t0, i, t0 + ms(1000), None), t0 + ms(1100));
        assert_eq!(next_due(t0, i, t0 + ms(1), Some(t0 + ms(50))), t0 + ms(50));
        assert_eq!(
            next_due(t0, i, t0 + ms(1000), Some(t0 + ms(1050))),
            t0 + ms(1050)
        );
        assert_eq!(next_due(t0, i, t0 + ms(1), Some(t0 + ms(150))), t0 + i);
    }

    #[test]
    fn frame_ids_jumping_across_the_64_bits_saturate_the_missed_count() {
        let name = format!("t-watch-jumps-{}", std::process::id());
        let _u = Unlink(name.clone());
        let mut t = Track::new(&name);
        let s = shmstream::Stream::create(&name, &[1], Dtype::U8).unwrap();
        // 1, MAX, 1, MAX: each jump up skips MAX - 2 ids, each jump back none; the second
        // jump up overflowed the sum (a panic in a debug build).
        for id in [1, u64::MAX, 1, u64::MAX] {
            s.write_slice_frame(&[0u8], id).unwrap();
            t.sample(CREATION_WAIT);
        }
        assert_eq!(t.row()[4], u64::MAX.to_string());
        assert_eq!(t.state, "ok");
    }
}
