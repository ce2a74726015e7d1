//! What the tool prints to a terminal: stream names come from shared memory that any
//! process of the user can write, so control characters (ESC, newline, ...), bidi
//! overrides and invisible format characters are escaped instead of reaching the terminal;
//! a closed stdout pipe ends the tool quietly, as it does `cat` or `head` (not `unlink` or
//! `purge`: there it is a stdout error like any other, reported once every name was tried,
//! or every failed removal reported; nor `record`); any other failed write to stdout (a full
//! disk, `> /dev/full`) is an error, through [`outln!`] (`println!` panics) or, for output
//! a stop signal must be able to cut short, [`write_or_stop`];
//! and a failed write to stderr (a terminal hung up, `2> /dev/full`) is ignored, through
//! [`err!`] and [`errln!`] (`eprintln!` panics): there is nowhere left to report it.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{ErrorKind, Write as _};
use std::os::fd::AsFd;

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
/// of the tool but `watch`'s ([`write_or_stop`]) goes through here.
pub(crate) fn write_stdout(args: std::fmt::Arguments<'_>) -> crate::Fallible {
    std::io::Write::write_fmt(&mut std::io::stdout().lock(), args).map_err(stdout_error)
}

/// Stdout without std's buffer (a duplicate of descriptor 1), for [`write_or_stop`].
pub(crate) fn unbuffered_stdout() -> crate::Fallible<File> {
    let fd = std::io::stdout().as_fd().try_clone_to_owned();
    Ok(File::from(fd.map_err(stdout_error)?))
}

/// Writes all of `text` to `out`, or returns early (`Ok`) once `stop()` is true, checked
/// before each write: after a write a signal cut short, and before the first (a signal that
/// came before it interrupts no write). std's writes retry an interrupted write, so a
/// reader that stopped reading (`| less` paused, `| sleep 600`) would keep a tool blocked
/// past a stop signal.
pub(crate) fn write_or_stop(mut out: &File, text: &str, stop: fn() -> bool) -> crate::Fallible {
    let mut rest = text.as_bytes();
    while !rest.is_empty() && !stop() {
        match out.write(rest) {
            Ok(0) => return Err(stdout_error(ErrorKind::WriteZero.into())),
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(stdout_error(e)),
        }
    }
    Ok(())
}

/// Writes to stderr (unbuffered), ignoring a failure: stderr is where failures are
/// reported. Every stderr write of the tool goes through here.
pub(crate) fn write_stderr(args: std::fmt::Arguments<'_>) {
    let _ = std::io::Write::write_fmt(&mut std::io::stderr().lock(), args);
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
