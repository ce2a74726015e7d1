//! What the tool prints to a terminal: stream names come from shared memory that any
//! process of the user can write, so control characters (ESC, newline, ...), bidi
//! overrides and invisible format characters are escaped instead of reaching the terminal;
//! a closed stdout pipe ends the tool quietly, as it does `cat` or `head` (not `unlink` or
//! `purge`: there it is a stdout error like any other, reported once every name was tried,
//! or every failed removal reported; nor `record`); any other failed write to stdout (a full
//! disk, `> /dev/full`) is an error, through [`outln!`] (`println!` panics) or, for output
//! a stop signal must be able to cut short, [`write_or_stop`];
//! and a failed write to stderr (a terminal hung up, `2> /dev/full`) is ignored, through
//! [`err!`] and [`errln!`] (`eprintln!` panics): there is nowhere left to report it. Those,
//! and every write a stop signal must be able to end, go through [`Out`], which never
//! blocks in `write`.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{ErrorKind, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// `println!` that returns a [`Fallible`](crate::Fallible) instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::term::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprint!` that ignores a failed write instead of panicking.
macro_rules! err {
    ($($arg:tt)*) => {
        $crate::term::write_stderr(format_args!($($arg)*))
    };
}

/// `eprintln!` that ignores a failed write instead of panicking.
macro_rules! errln {
    () => {
        $crate::term::write_stderr(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::term::write_stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {err, errln, outln};

/// Writes to stdout (line-buffered: a line's failure shows at its end). Every stdout write
/// of the tool but `watch`'s and `dump`'s status line ([`write_or_stop`]) goes through here.
pub(crate) fn write_stdout(args: std::fmt::Arguments<'_>) -> crate::Fallible {
    std::io::Write::write_fmt(&mut std::io::stdout().lock(), args).map_err(stdout_error)
}

/// Stdout without std's buffer, for [`write_or_stop`].
pub(crate) fn unbuffered_stdout() -> crate::Fallible<Out> {
    Out::of(std::io::stdout().as_fd()).map_err(stdout_error)
}

/// Writes all of `text` to `out`, or returns early (`Ok`) once `stop()` is true: checked
/// before the first write, and while a write waits for a reader that stopped reading (`|
/// less` paused, `| sleep 600`), which then holds up nothing (see [`Out`]).
pub(crate) fn write_or_stop(out: &Out, text: &str, stop: fn() -> bool) -> crate::Fallible {
    if stop() {
        return Ok(());
    }
    out.write_all(text.as_bytes(), &mut || stop())
        .map(drop)
        .map_err(stdout_error)
}

/// How long output waits, once a stop signal came, for a reader that takes none (a paused
/// `| less`, a terminal held by Ctrl-S) before it is dropped: the summary after a Ctrl-C,
/// or the terminal's modes given back.
pub(crate) const AFTER_STOP: Duration = Duration::from_millis(100);

/// How long a write that would block waits in `poll` before it asks again whether to give
/// up: the most a stop signal that came just before that wait holds up the tool.
const WRITE_POLL_MS: i32 = 50;

/// A descriptor written without ever blocking in `write`, so that a stop signal, whenever it
/// comes, ends a write a reader that stopped reading holds up (one just before a blocking
/// `write` would leave the tool in it until a second signal). A pipe, FIFO or terminal (not
/// a pty master, which opened anew would be a new pty) that a descriptor of the process
/// refers to is opened anew, non-blocking, through `/proc/self/fd` (an open file
/// description of its own: `O_NONBLOCK` on the descriptor would be the shell's too), and one
/// the tool opened itself is made non-blocking; a write that would block waits in `poll`
/// ([`WRITE_POLL_MS`] at a time), asking between waits whether to give up. Anything else,
/// and where reopening fails (no `/proc`, a terminal of another user after `su`, whose mode
/// forbids opening it), is duplicated: each write waits in `poll` first and writes at most
/// `PIPE_BUF` bytes, which a pipe or socket with room takes at once. A regular file, block
/// device or memory device (`/dev/null`, `/dev/full`: major 1) is written as it is: it waits
/// for no reader, and opened anew a file would have an offset of its own.
#[derive(Debug)]
pub(crate) struct Out {
    file: File,
    /// Blocking: wait in `poll` before each write.
    poll_first: bool,
}

impl std::ops::Deref for Out {
    type Target = File;
    fn deref(&self) -> &File {
        &self.file
    }
}

/// How [`Out::of`] writes a descriptor.
#[derive(PartialEq)]
enum Kind {
    /// A regular file, block device or memory device (major 1: `/dev/null`, `/dev/zero`,
    /// `/dev/full`, `/dev/urandom`, ...): waits for no reader.
    WaitsForNoReader,
    /// A pipe, FIFO or terminal (not a pty master): opened anew.
    Reopened,
    /// Anything else (a socket, a pty master, what cannot be told): `poll` first.
    Other,
}

/// What `fd` is, for [`Out`].
fn kind_of(fd: BorrowedFd<'_>) -> Kind {
    // SAFETY: all zeros is a valid `stat`, which `fstat` fills in for a descriptor we hold.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open for this call; `st` is a local.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Kind::Other;
    }
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG | libc::S_IFBLK => Kind::WaitsForNoReader,
        libc::S_IFCHR if libc::major(st.st_rdev) == 1 => Kind::WaitsForNoReader,
        libc::S_IFIFO => Kind::Reopened,
        // SAFETY: isatty only queries the descriptor, open for this call.
        libc::S_IFCHR if unsafe { libc::isatty(fd.as_raw_fd()) } == 1 && !pty_master(&st) => {
            Kind::Reopened
        }
        _ => Kind::Other,
    }
}

/// Whether a terminal with status `st` is a pty master: `/dev/ptmx` (major 5, minor 2), or
/// a BSD-style master (`/dev/pty*`, major 2).
fn pty_master(st: &libc::stat) -> bool {
    let (major, minor) = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
    (major, minor) == (5, 2) || major == 2
}

impl Out {
    /// Descriptor `fd` of the process (stdout, stderr), opened anew non-blocking where it
    /// is a pipe, FIFO or terminal (see [`Out`]).
    pub(crate) fn of(fd: BorrowedFd<'_>) -> std::io::Result<Out> {
        let dup = |poll_first| {
            Ok(Out {
                file: fd.try_clone_to_owned().map(File::from)?,
                poll_first,
            })
        };
        match kind_of(fd) {
            Kind::WaitsForNoReader => return dup(false),
            Kind::Other => return dup(true),
            Kind::Reopened => {}
        }
        let anew = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        match anew {
            Ok(file) => Ok(Out {
                file,
                poll_first: false,
            }),
            Err(_) => dup(true),
        }
    }

    /// A file the tool opened itself (an open file description of its own), made
    /// non-blocking where it is not a regular file, a block device or a memory device
    /// (`/dev/null`).
    pub(crate) fn own(file: File) -> Out {
        let poll_first = kind_of(file.as_fd()) != Kind::WaitsForNoReader && {
            // SAFETY: F_GETFL and F_SETFL on a descriptor `file` holds open change only
            // its open file description's status flags, which no one else shares.
            let set = unsafe {
                let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
                flags >= 0
                    && libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
            };
            !set
        };
        Out { file, poll_first }
    }

    /// Writes some of `buf` and says how much, or `None` once `give_up()` says so, asked
    /// only when the write would wait for the reader (where each write waits in `poll`
    /// first, a zero-timeout `poll` that finds room writes without asking).
    pub(crate) fn write_some(
        &self,
        buf: &[u8],
        give_up: &mut dyn FnMut() -> bool,
    ) -> std::io::Result<Option<usize>> {
        write_some(
            &mut &self.file,
            self.file.as_fd(),
            self.poll_first,
            buf,
            give_up,
        )
    }

    /// Writes all of `buf`; `false` if `give_up()` said so first (see [`Out::write_some`]).
    pub(crate) fn write_all(
        &self,
        buf: &[u8],
        give_up: &mut dyn FnMut() -> bool,
    ) -> std::io::Result<bool> {
        write_all(
            &mut &self.file,
            self.file.as_fd(),
            self.poll_first,
            buf,
            give_up,
        )
    }
}

/// [`Out::write_some`] through `w`, which writes to `fd` with one `write` per call; with
/// `poll_first`, it waits in `poll` first and writes at most `PIPE_BUF` bytes.
fn write_some(
    w: &mut dyn Write,
    fd: BorrowedFd<'_>,
    poll_first: bool,
    buf: &[u8],
    give_up: &mut dyn FnMut() -> bool,
) -> std::io::Result<Option<usize>> {
    let buf = if poll_first {
        &buf[..buf.len().min(libc::PIPE_BUF)]
    } else {
        buf
    };
    // A descriptor that takes bytes now is written without asking `give_up`, so the cut-off
    // after a stop starts at the first write that found its reader taking nothing.
    let mut ready = !poll_first || writable(fd, 0)?;
    loop {
        if ready {
            match w.write(buf) {
                Ok(n) => return Ok(Some(n)),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(e) => return Err(e),
            }
        }
        if give_up() {
            return Ok(None);
        }
        ready = writable(fd, WRITE_POLL_MS)?;
    }
}

/// [`Out::write_all`] through `w` (see [`write_some`]).
fn write_all(
    w: &mut dyn Write,
    fd: BorrowedFd<'_>,
    poll_first: bool,
    mut buf: &[u8],
    give_up: &mut dyn FnMut() -> bool,
) -> std::io::Result<bool> {
    while !buf.is_empty() {
        match write_some(w, fd, poll_first, buf, give_up)? {
            Some(0) => return Err(ErrorKind::WriteZero.into()),
            Some(n) => buf = &buf[n..],
            None => return Ok(false),
        }
    }
    Ok(true)
}

/// Waits up to `ms` milliseconds for `fd` to take bytes (or report an error, which the next
/// write returns); `false` if it did not, or a signal cut the wait short.
fn writable(fd: BorrowedFd<'_>, ms: libc::c_int) -> std::io::Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, of a descriptor `fd` holds open.
    match unsafe { libc::poll(&mut p, 1, ms) } {
        -1 => {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
        n => Ok(n > 0),
    }
}

/// Writes to stderr (unbuffered), ignoring a failure: stderr is where failures are
/// reported. Every stderr write of the tool goes through here, through an [`Out`] (or, where
/// one cannot be made, std's stderr with `poll` before each write of at most `PIPE_BUF`
/// bytes): once a stop signal came, a reader that takes nothing for [`AFTER_STOP`] loses the
/// rest (`record`'s summary after a Ctrl-C with its `| less` paused), and the tool exits.
pub(crate) fn write_stderr(args: std::fmt::Arguments<'_>) {
    static STDERR: OnceLock<Out> = OnceLock::new();
    // Set once, at the first write a stop found waiting: every later write that would have
    // to wait gives up at once, so that the whole output after a stop waits [`AFTER_STOP`]
    // at most.
    static GAVE_UP: OnceLock<Instant> = OnceLock::new();
    // Held so that lines from threads do not interleave.
    let mut lock = std::io::stderr().lock();
    let text = std::fmt::format(args);
    // A failure to make it (EMFILE) is not kept: the next line tries again.
    let out = match STDERR.get() {
        Some(out) => Some(out),
        None => Out::of(std::io::stderr().as_fd())
            .ok()
            .map(|out| STDERR.get_or_init(|| out)),
    };
    let mut give_up = || {
        crate::watch::stop_requested() && GAVE_UP.get_or_init(Instant::now).elapsed() >= AFTER_STOP
    };
    let _ = write_line(
        out,
        &mut lock,
        std::io::stderr().as_fd(),
        &text,
        &mut give_up,
    );
}

/// Writes `text` through `out`, or where there is none through `fallback` (unbuffered,
/// writing `fd`) with `poll` first, so that it waits in `poll`, where `give_up()` is asked
/// (a `write` after a `poll` can still block where another writer fills the pipe between
/// the two, or a terminal is stopped with Ctrl-S).
fn write_line(
    out: Option<&Out>,
    fallback: &mut dyn Write,
    fd: BorrowedFd<'_>,
    text: &str,
    give_up: &mut dyn FnMut() -> bool,
) -> std::io::Result<bool> {
    match out {
        Some(out) => out.write_all(text.as_bytes(), give_up),
        None => write_all(fallback, fd, true, text.as_bytes(), give_up),
    }
}

/// The error of a failed write to stdout.
pub(crate) fn stdout_error(e: std::io::Error) -> Box<dyn std::error::Error> {
    format!("cannot write to standard output: {e}").into()
}

/// `s` with control characters, bidi controls, invisible format characters and
/// backslashes escaped Rust-style (`\u{1b}`, `\n`, `\u{200b}`, `\\`): the library's, which
/// the bridge's lines use too.
pub(crate) use shmstream::name::printable;

/// `json` as serde_json writes it with the characters [`printable`] escapes that JSON
/// leaves raw (DEL, C1 controls, bidi controls, invisible format characters) written as
/// `\uXXXX` (a character past U+FFFF as its UTF-16 surrogate pair, as JSON spells it):
/// they occur only inside strings, where the escape stands for the same character.
/// (serde_json escapes the backslash and the C0 controls, and writes its own line ends raw.)
pub(crate) fn printable_json(json: &str) -> Cow<'_, str> {
    let raw = |c: char| shmstream::name::is_escaped(c) && c > '\u{1f}' && c != '\\';
    if !json.chars().any(raw) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if raw(c) {
            for unit in c.encode_utf16(&mut [0; 2]) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Restores the default action of `SIGPIPE` (Rust ignores it, so a write to a closed pipe
/// fails and `println!` panics): the tool then ends silently when its reader goes away,
/// with the status a shell shows as 141 (128 + SIGPIPE).
pub(crate) fn die_quietly_on_closed_pipe() {
    // SAFETY: setting a signal's disposition to SIG_DFL installs no handler code and is
    // done first thing in main, before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Ignores `SIGXFSZ`, whose default action kills the tool at a write past the file-size
/// limit (`ulimit -f`, `RLIMIT_FSIZE`): such a write then fails with EFBIG as one to a full
/// disk does, and every command handles it as that (`dump -o` leaves the file as it was,
/// `record` finishes its files with the whole frames): exit status 1, with the reason.
pub(crate) fn fail_writes_past_file_size_limit() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code and is
    // done first thing in main, before any thread is started.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// Raises the soft limit on open files (`ulimit -n`, often 1024) to the hard one, as many
/// tools do: each stream holds a few descriptors, and `record` also its files. Left as it
/// is where that fails.
pub(crate) fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the `rlimit` passed by reference.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The soft limit on open files (`ulimit -n`); `None` when unlimited or unknown.
pub(crate) fn open_file_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the `rlimit` passed by reference.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (rc == 0 && lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

/// Ignores `SIGPIPE` again, for a command that must finish its work past a reader that
/// went away (`unlink`, `purge`, `record`): a write to the closed pipe then fails with EPIPE, an
/// ordinary stdout error.
pub(crate) fn fail_on_closed_pipe() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new pipe: its read end and its write end.
    fn pipe() -> (File, File) {
        let mut fds = [0; 2];
        // SAFETY: `pipe` writes two descriptors into the array, which we then own.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both just made by `pipe`, owned by nothing else.
        unsafe {
            use std::os::fd::FromRawFd;
            (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1]))
        }
    }

    /// Writes `out`, a pipe nobody reads, until it is full (a write that would wait).
    fn fill(out: &Out) {
        while out
            .write_some(&[b'x'; 4096], &mut || true)
            .unwrap()
            .is_some()
        {}
    }

    /// A new pty: its master (`/dev/ptmx`) and its slave.
    fn pty() -> (File, File) {
        use std::os::fd::FromRawFd;
        // SAFETY: posix_openpt, grantpt, unlockpt and ptsname_r on a descriptor we then own.
        let (master, slave) = unsafe {
            let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
            assert!(fd >= 0, "{}", std::io::Error::last_os_error());
            let master = File::from_raw_fd(fd);
            assert_eq!(libc::grantpt(fd), 0);
            assert_eq!(libc::unlockpt(fd), 0);
            let mut buf = [0 as libc::c_char; 128];
            assert_eq!(libc::ptsname_r(fd, buf.as_mut_ptr(), buf.len()), 0);
            let slave = std::ffi::CStr::from_ptr(buf.as_ptr())
                .to_str()
                .unwrap()
                .to_owned();
            (master, slave)
        };
        let slave = File::options()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(slave)
            .unwrap();
        (master, slave)
    }

    /// A new regular file, its name already removed: nothing is left behind where a test
    /// fails.
    fn unnamed_file(tag: &str) -> File {
        let path =
            std::env::temp_dir().join(format!("shmstream-term-{tag}-{}", std::process::id()));
        let file = File::create(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }

    /// Whether `file`'s open file description is non-blocking.
    fn non_blocking(file: &File) -> bool {
        // SAFETY: F_GETFL on a descriptor `file` holds open.
        let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
        assert!(flags >= 0);
        flags & libc::O_NONBLOCK != 0
    }

    /// A regular file and a memory device wait for no reader; a pipe and a terminal (a pty's
    /// slave) are opened anew; a pty's master and a socket are polled first.
    #[test]
    fn each_kind_of_descriptor_is_told_apart() {
        let regular = unnamed_file("kinds");
        let null = File::options().write(true).open("/dev/null").unwrap();
        let (_read, pipe) = pipe();
        let (master, slave) = pty();
        let (socket, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(kind_of(regular.as_fd()) == Kind::WaitsForNoReader);
        assert!(kind_of(null.as_fd()) == Kind::WaitsForNoReader);
        assert!(kind_of(pipe.as_fd()) == Kind::Reopened);
        assert!(kind_of(slave.as_fd()) == Kind::Reopened);
        assert!(kind_of(master.as_fd()) == Kind::Other);
        assert!(kind_of(socket.as_fd()) == Kind::Other);
    }

    /// A descriptor polled before each write (a socket) that has room takes the bytes
    /// without asking whether to give up.
    #[test]
    fn a_descriptor_polled_first_with_room_is_written_without_asking() {
        let (socket, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let out = Out::of(socket.as_fd()).unwrap();
        assert!(out.poll_first);
        let written = out.write_some(b"line\n", &mut || panic!("asked to give up"));
        assert_eq!(written.unwrap(), Some(5));
    }

    /// A file the tool opened itself is made non-blocking where it may wait for a reader (a
    /// pipe; one already non-blocking stays so), and then written without a `poll` first; a
    /// regular file is left as it was.
    #[test]
    fn a_file_the_tool_opened_is_made_non_blocking_where_it_waits_for_a_reader() {
        let (_read, write) = pipe();
        let reopen = |flags| {
            File::options()
                .write(true)
                .custom_flags(flags)
                .open(format!("/proc/self/fd/{}", write.as_raw_fd()))
                .unwrap()
        };
        for flags in [0, libc::O_NONBLOCK] {
            let out = Out::own(reopen(flags));
            assert!(!out.poll_first, "flags {flags:#x}");
            assert!(non_blocking(&out), "flags {flags:#x}");
        }
        let out = Out::own(unnamed_file("own"));
        assert!(!out.poll_first);
        assert!(!non_blocking(&out));
    }

    /// A write to a pipe nobody reads, full, comes back to ask whether to give up instead of
    /// blocking (where a stop signal just before it would be lost), through a descriptor
    /// opened anew as it is for stdout and stderr.
    #[test]
    fn a_write_to_a_full_pipe_asks_whether_to_give_up_instead_of_blocking() {
        let (_read, write) = pipe();
        let out = Out::of(write.as_fd()).unwrap();
        assert!(!out.poll_first, "opened anew, non-blocking");
        let chunk = [b'x'; 4096];
        let mut asked = 0;
        loop {
            match out.write_some(&chunk, &mut || {
                asked += 1;
                asked >= 3
            }) {
                Ok(Some(n)) => assert!(n > 0),
                Ok(None) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(asked, 3, "asked at each wait until it said to give up");
        // The shared descriptor (the shell's, for stdout) stays blocking.
        // SAFETY: F_GETFL on a descriptor `write` holds open.
        let flags = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(flags & libc::O_NONBLOCK, 0);
    }

    /// Where no [`Out`] could be made (EMFILE), a stderr line to a full pipe, blocking (the
    /// shell's descriptor), still asks whether to give up instead of blocking in `write`
    /// (where a stop signal would leave the tool waiting for a reader that stalled).
    #[test]
    fn a_line_without_an_out_to_a_full_blocking_pipe_asks_whether_to_give_up() {
        let (read, write) = pipe();
        // Fill it through a non-blocking description of its own; `write` stays blocking.
        let filler = Out::own(
            std::fs::OpenOptions::new()
                .write(true)
                .open(format!("/proc/self/fd/{}", write.as_raw_fd()))
                .unwrap(),
        );
        fill(&filler);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut asked = 0;
            let text = "x".repeat(10_000);
            let written = write_line(None, &mut &write, write.as_fd(), &text, &mut || {
                asked += 1;
                asked >= 3
            });
            let _ = tx.send((written.unwrap(), asked));
        });
        let (written, asked) = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the line blocked in write");
        assert!(!written, "gave up");
        assert_eq!(asked, 3, "asked at each wait until it said to give up");
        drop(read);
    }

    /// `/dev/null` (`dump -o - > /dev/null`) is written whole, not `PIPE_BUF` bytes at a
    /// time each after a `poll`, and `/dev/full` still fails the write.
    #[test]
    fn memory_devices_are_written_whole() {
        let null = File::options().write(true).open("/dev/null").unwrap();
        let out = Out::of(null.as_fd()).unwrap();
        assert!(!out.poll_first, "/dev/null polled before each write");
        let big = vec![0u8; 1 << 20];
        assert_eq!(out.write_some(&big, &mut || true).unwrap(), Some(big.len()));
        let full = Out::own(File::options().write(true).open("/dev/full").unwrap());
        assert!(!full.poll_first);
        let e = full.write_all(b"x", &mut || true).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    }

    /// A signal while a write waits in `poll` for a reader (a second Ctrl-C, a Ctrl-Z while
    /// `watch` gives the terminal back its modes) does not end the wait: the write goes on
    /// once the reader reads. (It gave up at EINTR, leaving the cursor hidden.)
    #[test]
    fn a_signal_while_a_write_waits_for_its_reader_does_not_end_the_wait() {
        use std::sync::atomic::{AtomicBool, Ordering};
        static HANDLED: AtomicBool = AtomicBool::new(false);
        extern "C" fn handled(_: libc::c_int) {
            HANDLED.store(true, Ordering::Relaxed);
        }
        // SAFETY: a handler that stores to an atomic (async-signal-safe), without
        // SA_RESTART, for SIGUSR1, which nothing else in the tests uses; `sa_mask` set by
        // `sigemptyset`.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            let handler: extern "C" fn(libc::c_int) = handled;
            sa.sa_sigaction = handler as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
        }
        let (mut read, write) = pipe();
        let out = Out::of(write.as_fd()).unwrap();
        fill(&out);
        // SAFETY: pthread_self and gettid have no preconditions.
        let (me, tid) = unsafe { (libc::pthread_self(), libc::gettid()) };
        let deadline = Instant::now() + Duration::from_secs(20);
        let written = std::thread::scope(|scope| {
            scope.spawn(|| {
                let polling = || {
                    std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).is_ok_and(
                        |s| {
                            let nr = s.split(' ').next().and_then(|n| n.parse().ok());
                            #[cfg(target_arch = "x86_64")]
                            if nr == Some(libc::SYS_poll) {
                                return true;
                            }
                            nr == Some(libc::SYS_ppoll)
                        },
                    )
                };
                while !polling() {
                    assert!(Instant::now() < deadline, "the write never waited in poll");
                    std::thread::yield_now();
                }
                // SAFETY: signalling a thread of this process that outlives the scope.
                assert_eq!(unsafe { libc::pthread_kill(me, libc::SIGUSR1) }, 0);
                // The reader reads again once the signal cut the wait short (the handler ran on
                // its way out of `poll`, the pipe still full).
                while !HANDLED.load(Ordering::Relaxed) {
                    assert!(Instant::now() < deadline, "the signal was never handled");
                    std::thread::yield_now();
                }
                let mut buf = [0; 65536];
                std::io::Read::read(&mut read, &mut buf).unwrap();
            });
            out.write_all(b"after", &mut || Instant::now() >= deadline)
        });
        assert!(written.unwrap(), "gave up before the reader read");
    }

    #[test]
    fn control_and_bidi_characters_are_escaped_and_plain_names_borrowed() {
        assert!(matches!(printable("cam0 ü"), Cow::Borrowed("cam0 ü")));
        assert_eq!(printable("a\x1b[2Jb\nc\\"), "a\\u{1b}[2Jb\\nc\\\\");
        assert_eq!(printable("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(printable("cam0\u{200b}"), "cam0\\u{200b}");
    }

    #[test]
    fn json_escapes_what_serde_json_leaves_raw_and_keeps_its_layout() {
        let json = serde_json::to_string_pretty(&["a\u{7f}\u{9b}\u{202e}\u{2066}b\n ü"]).unwrap();
        let safe = printable_json(&json);
        assert_eq!(safe, "[\n  \"a\\u007f\\u009b\\u202e\\u2066b\\n ü\"\n]");
        let back: Vec<String> = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, ["a\u{7f}\u{9b}\u{202e}\u{2066}b\n ü"]);
        // Invisible ones too, one past U+FFFF as its surrogate pair.
        let json = serde_json::to_string(&["cam0\u{200b}\u{feff}\u{e0041}"]).unwrap();
        let safe = printable_json(&json);
        assert_eq!(safe, r#"["cam0\u200b\ufeff\udb40\udc41"]"#);
        let back: Vec<String> = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, ["cam0\u{200b}\u{feff}\u{e0041}"]);
        assert!(matches!(
            printable_json("{\n  \"a\": 1\n}"),
            Cow::Borrowed(_)
        ));
    }
}
