//! `shmstream`: manage and inspect shared-memory streams from a shell.
//!
//! Subcommands: `list`, `stat`, `create`, `load`, `dump`, `unlink`, `purge`, `watch`, `record`
//! (see `shmstream --help`, the README's "Command-line tool" section and `docs/cli.md`). Exit
//! status 0 on success, 1 on any error (usage errors included), with the reason on stderr; a closed
//! stdout pipe ends the tool silently by SIGPIPE (status 141 in a shell), except `unlink`,
//! which removes every name first and then exits 1, `purge`, which reports the removals
//! that failed first and then exits 1, and `record`, which finishes its files first.

mod npy;
mod record;
mod show;
mod term;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use shmstream::{Dtype, Error, PurgeOptions, StreamOptions};

/// Errors a subcommand returns: printed as `shmstream: error: <message>`.
pub(crate) type Fallible<T = ()> = Result<T, Box<dyn std::error::Error>>;

#[derive(Debug, Parser)]
#[command(
    name = "shmstream",
    version,
    about = "Named shared-memory streams of n-d arrays (pyshmem 1.4.0 compatible)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every valid stream (ours and pyshmem's): name, shape, dtype, count, age, creator, notify, gpu,
    /// history (depth, or `unusable`).
    List {
        /// A JSON array of the same objects as `stat --json`.
        #[arg(long)]
        json: bool,
    },
    /// The metadata of one stream, without mapping its payload.
    Stat {
        /// Stream name.
        name: String,
        /// JSON with the keys name, shape, dtype, size, count, write_sequence, write_time,
        /// frame_id, creator_pid, creator_alive, notify, gpu_enabled, gpu_device, cpu_mirror,
        /// instance_id, history, gpu_publisher_pid, gpu_consumer_pid, lock_owner_pid, and
        /// history_problem where every open refuses the stream's history ring.
        #[arg(long)]
        json: bool,
    },
    /// Creates a stream (it outlives this command; remove it with `unlink`).
    Create {
        /// Stream name.
        name: String,
        /// Comma-separated dimensions, e.g. 480,640.
        #[arg(long, value_parser = parse_shape)]
        shape: Shape,
        /// numpy dtype name: int8..int64, uint8..uint64, float16, float32, float64, bool,
        /// complex64, complex128.
        #[arg(long, default_value = "float32", value_parser = parse_dtype)]
        dtype: Dtype,
        /// Writers wake waiting readers through a futex.
        #[arg(long)]
        notify: bool,
        /// Also keep the last N frames in a history ring (1..=1048576; 0, the default, keeps
        /// none), which `record` and `shmstream-bridge publish --lossless` read losing none
        /// while they keep up with the writer (the ring holds N frames).
        #[arg(long, value_name = "N", default_value_t = 0)]
        history: usize,
    },
    /// Writes a .npy file into a stream, creating the stream with the file's shape and dtype
    /// if it does not exist.
    Load {
        /// Stream name.
        name: String,
        /// The .npy file.
        file: PathBuf,
        /// Frame id to stamp on the write.
        #[arg(long)]
        frame_id: Option<u64>,
        /// Seconds to wait in all: for a creation of the stream already under way, for the
        /// name's lock to create it, and for the write lock.
        #[arg(long, default_value = "5", value_parser = parse_seconds)]
        timeout: Duration,
    },
    /// A safe snapshot of the current frame: to a .npy file with -o, else a summary
    /// (shape, dtype, count, min/max/mean).
    Dump {
        /// Stream name.
        name: String,
        /// Output .npy file (`-` for stdout; `./-` for a file named `-`).
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
    },
    /// Removes streams (segments and lock file), waiting up to 5 s for each one's write lock;
    /// each name is reported.
    Unlink {
        /// Stream names.
        #[arg(required = true)]
        names: Vec<String>,
        /// A missing stream is reported but is not an error.
        #[arg(long)]
        quiet_missing: bool,
    },
    /// Removes validated streams whose creator process is dead (all validated streams with
    /// --all), abandoned creations, and the parts (`_hist`, `_gpu`) and lock files of no
    /// stream. Other files in /dev/shm are never touched.
    Purge {
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Remove every validated stream, creator alive or not.
        #[arg(long)]
        all: bool,
        /// Only streams whose name starts with this prefix (abandoned creations, and parts
        /// and lock files of no stream, are removed whatever the prefix: their names are
        /// hashes).
        #[arg(long)]
        prefix: Option<String>,
    },
    /// A live view of count, rate, age, missed frames and creator liveness, until Ctrl-C,
    /// SIGTERM, SIGHUP or SIGQUIT (or --duration); one ignored at the start (`nohup`) stays
    /// ignored.
    Watch {
        /// Stream names.
        #[arg(required = true)]
        names: Vec<String>,
        /// Seconds between refreshes.
        #[arg(long, default_value = "0.5", value_parser = parse_seconds)]
        interval: Duration,
        /// Stop after this many seconds (default: until Ctrl-C).
        #[arg(long, value_parser = parse_seconds)]
        duration: Option<Duration>,
    },
    /// Records every frame of streams into FITS (or .npy) cubes: history streams losslessly
    /// through cursors; plain streams with a warning (frames missed once the recorder waits
    /// for them are counted lost). A stream unlinked (its producer ended) ends its
    /// recording: complete, or, before the --frames are taken, a short recording (exit 1);
    /// one replaced by a newer stream of its name fails it. Exit status 1 if any frame was
    /// lost or any recording failed. Ctrl-C, SIGTERM, SIGHUP and SIGQUIT
    /// stop it cleanly (the files finished; one ignored at the start, as under `nohup`, stays
    /// ignored). Killed (SIGKILL, an OOM kill), it leaves the current file (and one still
    /// being finished on its own thread) readable with the frames of its last checkpoint,
    /// about a second old (those after it are lost): a `.npy` that `np.load` reads, with at
    /// least their `.frames.csv` rows; a FITS file with `COMPLETE = F` and no `FRAMES` table.
    #[command(group(clap::ArgGroup::new("stop").required(true).args(["frames", "duration"])))]
    Record {
        /// Stream names.
        #[arg(required = true)]
        names: Vec<String>,
        /// Directory for the files (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Stop after this many frames of each stream.
        #[arg(long)]
        frames: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long, value_parser = parse_seconds)]
        duration: Option<Duration>,
        /// Frames per file.
        #[arg(long, default_value_t = 1000)]
        per_file: usize,
        /// File format.
        #[arg(long, value_enum, default_value = "fits")]
        format: record::Format,
        /// Put each file on the disk (fdatasync) as it is finished, with its entry in the
        /// directory (fsync of DIR, and of the directories created for --out, once), and fail
        /// on the write errors a disk reports only then (writeback EIO; without --fsync a
        /// network file system's ENOSPC or quota errors still fail the file, when it is
        /// closed); the recording then goes at the disk's write speed, not the page cache's.
        #[arg(long)]
        fsync: bool,
    },
}

/// A shape given as `480,640` (or `480x640`).
#[derive(Debug, Clone)]
struct Shape(Vec<usize>);

fn parse_shape(s: &str) -> Result<Shape, String> {
    let dims: Result<Vec<usize>, _> = s
        .split([',', 'x'])
        .map(|d| d.trim().parse::<usize>())
        .collect();
    match dims {
        Ok(d) if !d.is_empty() && !d.contains(&0) => Ok(Shape(d)),
        _ => Err(format!(
            "'{s}' is not a shape: give positive dimensions separated by commas, e.g. 480,640"
        )),
    }
}

/// numpy's names only, as a stream's config spells them: numpy reads `u8`, `i8` and `f16`
/// as uint64, int64 and float128.
fn parse_dtype(s: &str) -> Result<Dtype, String> {
    Dtype::from_numpy_name_only(s.trim())
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..1e9).contains(&v) => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!("'{s}' is not a number of seconds")),
    }
}

/// `create`'s refusal of a taken name with this tool's remedies (the library's names
/// `Stream::open`); any other error as it is.
fn create_refusal(e: Error) -> Box<dyn std::error::Error> {
    match e {
        Error::AlreadyExists {
            name,
            being_created: false,
        } => format!(
            "stream '{name}' already exists: write to it with `shmstream load`, or remove it \
             first with {}",
            shmstream::name::unlink_remedy(&name)
        )
        .into(),
        Error::AlreadyExists { name, .. } => format!(
            "stream '{name}' is being created by another process: retry once its creator \
             finishes, or find the process holding its lock file (`fuser -v {}`)",
            shmstream::name::shell_word(&shmstream::name::lock_path(&name).display().to_string())
        )
        .into(),
        e => e.into(),
    }
}

/// A wait for the write lock that ran out, as `unlink`, `purge` and `load` (whose
/// `--timeout` is `given`) say it: the lock file, the holder's pid where its writer stamped
/// one (`stat`'s lock_owner_pid: shmstream and pyshmem writers do, a create, unlink or purge
/// holds the lock unstamped), and `lslocks`, which names the process holding the `flock`
/// (`fuser` would list every handle of the stream, readers too). `None` for any other error.
fn lock_timeout(e: &Error, given: Option<Duration>) -> Option<String> {
    let Error::Timeout {
        name,
        op,
        awaited: shmstream::Awaited::Writer,
        timeout,
        ..
    } = e
    else {
        return None;
    };
    let lock = shmstream::name::lock_path(name);
    let holder = match shmstream::stat_within(name, Duration::ZERO) {
        Ok(st) if st.lock_owner_pid > 0 => {
            format!(" (its writer stamped pid {})", st.lock_owner_pid)
        }
        _ => String::new(),
    };
    let (waited, retry) = match given {
        Some(t) => (
            format!("after --timeout {}", t.as_secs_f64()),
            "retry, or give a longer --timeout S",
        ),
        None => (format!("after {timeout:?}"), "retry"),
    };
    Some(format!(
        "timed out {waited} waiting to {op} on stream '{name}': another process holds its \
         lock file {}{holder}; `lslocks -o PID,COMMAND,PATH` names it: let it finish (or stop \
         it), then {retry}",
        lock.display()
    ))
}

/// `unlink`'s text for `e`: its own remedies for a missing name and a lock wait that ran
/// out; any other error as it is.
fn unlink_error(e: &Error) -> String {
    match e {
        Error::NotFound {
            name,
            known,
            unfinished: false,
            ..
        } => {
            let hint = match known.len() {
                0 => String::new(),
                n if n <= 8 => format!(" (streams: {})", known.join(", ")),
                n => format!(" (streams: {}, and {} more)", known[..8].join(", "), n - 8),
            };
            format!(
                "stream '{name}' not found: check the name{hint}, or pass --quiet-missing to \
                 ignore a missing one"
            )
        }
        e => lock_timeout(e, None).unwrap_or_else(|| e.to_string()),
    }
}

fn main() -> ExitCode {
    term::die_quietly_on_closed_pipe();
    term::fail_writes_past_file_size_limit();
    term::raise_open_file_limit();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // Help and version (on stdout) exit 0 unless stdout fails; every usage error
            // exits 1 (clap's own code is 2).
            return match e.print() {
                Ok(()) if e.exit_code() == 0 => ExitCode::SUCCESS,
                Err(p) if e.exit_code() == 0 => fail(&*term::stdout_error(p)),
                _ => ExitCode::from(1),
            };
        }
    };
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&*e),
    }
}

/// Reports `e` on stderr; exit status 1.
fn fail(e: &dyn std::error::Error) -> ExitCode {
    term::errln!("shmstream: error: {}", term::printable(&e.to_string()));
    ExitCode::from(1)
}

fn run(command: Command) -> Fallible {
    match command {
        Command::List { json } => show::list(json),
        Command::Stat { name, json } => show::stat(&name, json),
        Command::Create {
            name,
            shape,
            dtype,
            notify,
            history,
        } => {
            let s = StreamOptions::new(&name)
                .shape(&shape.0)
                .dtype(dtype)
                .notify(notify)
                .history(history)
                .create()
                .map_err(create_refusal)?;
            term::outln!(
                "created '{}': {} {:?}{}{}",
                term::printable(s.name()),
                s.dtype(),
                s.shape(),
                if notify { " (notify)" } else { "" },
                match s.history_depth() {
                    0 => String::new(),
                    n => format!(" (history {n})"),
                }
            )
        }
        Command::Load {
            name,
            file,
            frame_id,
            timeout,
        } => npy::load(&name, &file, frame_id, timeout).map_err(|e| {
            match e
                .downcast_ref::<Error>()
                .and_then(|e| lock_timeout(e, Some(timeout)))
            {
                Some(said) => said.into(),
                None => e,
            }
        }),
        Command::Dump { name, output } => npy::dump(&name, output.as_deref()),
        Command::Unlink {
            names,
            quiet_missing,
        } => unlink(&names, quiet_missing),
        Command::Purge {
            dry_run,
            all,
            prefix,
        } => purge(PurgeOptions { all, dry_run }, prefix.as_deref()),
        Command::Watch {
            names,
            interval,
            duration,
        } => watch::watch(&names, interval, duration),
        Command::Record {
            names,
            out,
            frames,
            duration,
            per_file,
            format,
            fsync,
        } => record::record(&record::Plan {
            names,
            out,
            frames,
            duration,
            per_file,
            format,
            fsync,
        }),
    }
}

/// `unlink`: removes each name, carrying on past those it cannot remove (each reported on
/// stderr) and past a failed stdout (a closed pipe included: no SIGPIPE), whose error it
/// ends with once every name was tried.
fn unlink(names: &[String], quiet_missing: bool) -> Fallible {
    term::fail_on_closed_pipe();
    let mut failed = 0;
    let mut printed = Ok(());
    for name in names {
        let shown = term::printable(name);
        let line = match shmstream::unlink(name) {
            Ok(()) => term::outln!("unlinked '{shown}'"),
            Err(Error::NotFound { .. }) if quiet_missing => {
                term::outln!("'{shown}' not found (ignored)")
            }
            Err(e) => {
                term::errln!("shmstream: error: {}", term::printable(&unlink_error(&e)));
                failed += 1;
                Ok(())
            }
        };
        printed = printed.and(line);
    }
    printed?;
    match failed {
        0 => Ok(()),
        n => Err(format!("{n} of {} name(s) could not be unlinked", names.len()).into()),
    }
}

/// `purge`: the library's [`shmstream::purge_matching`] rule (validated streams only;
/// creator dead unless `all`), optionally restricted to a name prefix. It carries on past
/// streams it cannot remove, reports each on stderr and then fails; a failed stdout (a
/// closed pipe included: no SIGPIPE, which would kill it before the failures are reported)
/// is reported last, after everything else.
fn purge(opts: PurgeOptions, prefix: Option<&str>) -> Fallible {
    term::fail_on_closed_pipe();
    let report =
        shmstream::purge_matching(opts, |name| prefix.is_none_or(|p| name.starts_with(p)))?;
    let verb = if opts.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let mut printed = Ok(());
    for s in &report.removed {
        let why = if s.creator_alive {
            "creator alive".to_owned()
        } else {
            format!("creator {} dead", s.creator_pid)
        };
        printed = printed.and(term::outln!(
            "{verb} '{}' ({why})",
            term::printable(&s.name)
        ));
    }
    for id in &report.abandoned {
        printed = printed.and(term::outln!("{verb} /dev/shm/{id} (abandoned creation)"));
    }
    for file in &report.leftovers {
        printed = printed.and(term::outln!("{verb} /dev/shm/{file} (part of no stream)"));
    }
    for path in &report.lock_files {
        let path = path.display().to_string();
        printed = printed.and(term::outln!(
            "{verb} {} (lock file of no stream)",
            term::printable(&path)
        ));
    }
    for f in &report.failed {
        let said = match f.item {
            shmstream::PurgeItem::Stream(_) => lock_timeout(&f.error, None),
            _ => None,
        };
        let said = said.unwrap_or_else(|| f.to_string());
        term::errln!("shmstream: error: {}", term::printable(&said));
    }
    if report.removed.is_empty()
        && report.abandoned.is_empty()
        && report.leftovers.is_empty()
        && report.lock_files.is_empty()
        && report.failed.is_empty()
    {
        printed = printed.and(term::outln!("nothing to purge"));
    }
    printed?;
    // Counted by kind, in the order met: "1 stream(s), 2 leftover part(s) could not be
    // removed"; a directory could not be listed.
    let mut kinds: Vec<(&str, usize)> = Vec::new();
    let mut unlisted = 0;
    for f in &report.failed {
        if matches!(f.item, shmstream::PurgeItem::Directory(_)) {
            unlisted += 1;
            continue;
        }
        let kind = f.item.kind();
        match kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => kinds.push((kind, 1)),
        }
    }
    let mut said: Vec<String> = Vec::new();
    if !kinds.is_empty() {
        let counts: Vec<_> = kinds.iter().map(|(k, n)| format!("{n} {k}(s)")).collect();
        let failed = if opts.dry_run {
            "handled (a dry run removes nothing)"
        } else {
            "removed"
        };
        said.push(format!("{} could not be {failed}", counts.join(", ")));
    }
    if unlisted > 0 {
        said.push(format!("{unlisted} directory(s) could not be listed"));
    }
    match said.is_empty() {
        true => Ok(()),
        false => Err(said.join("; ").into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shape is positive dimensions separated by commas or `x`, spaces allowed around
    /// them; anything else names what was given and how to write one.
    #[test]
    fn shapes_are_positive_dimensions_separated_by_commas_or_x() {
        assert_eq!(parse_shape("480,640").unwrap().0, [480, 640]);
        assert_eq!(parse_shape(" 3 x 4 ,5").unwrap().0, [3, 4, 5]);
        assert_eq!(parse_shape("7").unwrap().0, [7]);
        for bad in ["0", "480,0", "", "480,", "a", "-1", "2.5"] {
            assert_eq!(
                parse_shape(bad).unwrap_err(),
                format!(
                    "'{bad}' is not a shape: give positive dimensions separated by commas, e.g. 480,640"
                )
            );
        }
    }

    /// Seconds are a number from 0 up to (not including) 10^9, fractions allowed.
    #[test]
    fn seconds_are_a_number_from_0_under_a_billion() {
        assert_eq!(parse_seconds("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_seconds(" 2 "), Ok(Duration::from_secs(2)));
        assert_eq!(parse_seconds("0"), Ok(Duration::ZERO));
        for bad in ["-1", "1e9", "nan", "inf", "five", ""] {
            assert_eq!(
                parse_seconds(bad),
                Err(format!("'{bad}' is not a number of seconds"))
            );
        }
    }

    /// `unlink` names a missing stream's remedy, with up to 8 of the streams there are (and
    /// how many more); other errors read as they are.
    #[test]
    fn unlink_names_a_missing_stream_s_remedy_and_the_streams_there_are() {
        let missing = |n: usize| Error::NotFound {
            name: "cam".into(),
            known: (0..n).map(|i| format!("s{i}")).collect(),
            unfinished: false,
        };
        let said = |hint: &str| {
            format!(
                "stream 'cam' not found: check the name{hint}, or pass --quiet-missing to ignore a missing one"
            )
        };
        assert_eq!(unlink_error(&missing(0)), said(""));
        assert_eq!(unlink_error(&missing(2)), said(" (streams: s0, s1)"));
        let eight = " (streams: s0, s1, s2, s3, s4, s5, s6, s7)";
        assert_eq!(unlink_error(&missing(8)), said(eight));
        let nine = " (streams: s0, s1, s2, s3, s4, s5, s6, s7, and 1 more)";
        assert_eq!(unlink_error(&missing(9)), said(nine));
        let taken = Error::AlreadyExists {
            name: "cam".into(),
            being_created: false,
        };
        assert_eq!(unlink_error(&taken), taken.to_string());
    }

    /// A wait for the write lock that ran out names the lock file, the pid its holder
    /// stamped if it did, `lslocks` and the retry (with `--timeout` where one was given);
    /// other waits and errors are not it.
    #[test]
    fn a_lock_wait_that_ran_out_names_the_lock_file_and_lslocks() {
        let name = format!("t-main-no-such-{}", std::process::id());
        let timeout = |awaited| Error::Timeout {
            name: name.clone(),
            op: "write",
            awaited,
            timeout: Duration::from_secs(5),
        };
        let lock = shmstream::name::lock_path(&name);
        let said_of = |waited: &str, retry: &str| {
            format!(
                "timed out {waited} waiting to write on stream '{name}': another process holds its lock file {}; `lslocks -o PID,COMMAND,PATH` names it: let it finish (or stop it), then {retry}",
                lock.display()
            )
        };
        let writer = timeout(shmstream::Awaited::Writer);
        assert_eq!(
            lock_timeout(&writer, None),
            Some(said_of("after 5s", "retry"))
        );
        assert_eq!(
            lock_timeout(&writer, Some(Duration::from_millis(2500))),
            Some(said_of(
                "after --timeout 2.5",
                "retry, or give a longer --timeout S"
            ))
        );
        assert_eq!(unlink_error(&writer), said_of("after 5s", "retry"));
        assert_eq!(
            lock_timeout(&timeout(shmstream::Awaited::GpuFrame), None),
            None
        );
        let missing = Error::NotFound {
            name: name.clone(),
            known: Vec::new(),
            unfinished: true,
        };
        assert_eq!(lock_timeout(&missing, None), None);
        // Held by a writer that stamps its pid (this one): said.
        let stream = shmstream::scratch(&name, &[1], shmstream::Dtype::U8).unwrap();
        let held = stream.lock(None).unwrap();
        let stamped = lock_timeout(&writer, None).unwrap();
        let pid = std::process::id();
        let stamp = format!("{} (its writer stamped pid {pid});", lock.display());
        assert!(stamped.contains(&stamp), "{stamped}");
        drop(held);
        // Not held (pid 0 in its header): no pid said.
        let unstamped = Some(said_of("after 5s", "retry"));
        assert_eq!(lock_timeout(&writer, None), unstamped);
    }
}
