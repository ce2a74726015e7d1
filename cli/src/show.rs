//! `list` and `stat`: metadata from the `_meta` segments (payloads are never mapped).

use shmstream::StreamStat;

use crate::Fallible;
use crate::term::{errln, outln};

/// Seconds since the last write, or `None` if never written.
pub(crate) fn age_secs(write_time: f64) -> Option<f64> {
    (write_time > 0.0).then(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        (now - write_time).max(0.0)
    })
}

/// A short human age: `0.25s`, `42s`, `5m03s`, `2h01m`, `3d04h`, or `never`.
pub(crate) fn human_age(write_time: f64) -> String {
    let Some(a) = age_secs(write_time) else {
        return "never".into();
    };
    let s = a as u64;
    match s {
        _ if a < 10.0 => format!("{a:.2}s"),
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

pub(crate) fn shape_str(shape: &[usize]) -> String {
    shape
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join("x")
}

/// A stream's creator: its pid and whether it is alive (not whoever writes now).
pub(crate) fn creator_str(pid: i64, alive: bool) -> String {
    format!("{pid} {}", if alive { "alive" } else { "dead" })
}

fn gpu_str(s: &StreamStat) -> String {
    match (&s.gpu_device, s.gpu_enabled) {
        (Some(d), true) if s.cpu_mirror => format!("{d}+mirror"),
        (Some(d), true) => d.clone(),
        _ => "-".into(),
    }
}

/// Prints rows as left-aligned columns separated by two spaces.
pub(crate) fn print_table(rows: &[Vec<String>]) -> Fallible {
    for line in table(rows) {
        outln!("{line}")?;
    }
    Ok(())
}

/// The lines of rows as left-aligned columns separated by two spaces.
pub(crate) fn table(rows: &[Vec<String>]) -> Vec<String> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|v| v.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|r| {
            let line: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(c, v)| format!("{v:<w$}", w = widths[c]))
                .collect();
            line.join("  ").trim_end().to_owned()
        })
        .collect()
}

/// A name in `list`'s padded column: [`printable`](crate::term::printable), in double quotes
/// when it starts or ends with a space (`"cam0 "` beside `cam0`), or starts with a quote (so
/// a name shown quoted is never one whose own text starts with `"`).
fn name_cell(name: &str) -> String {
    let shown = crate::term::printable(name);
    if shown.starts_with([' ', '"']) || shown.ends_with(' ') {
        format!("\"{shown}\"")
    } else {
        shown.into_owned()
    }
}

/// `shmstream list [--json]`. A stream of this user's whose `_meta` it may not open is not
/// listed (its name is inside): a note on stderr names the file and the remedy, stdout
/// keeps the list.
pub(crate) fn list(json: bool) -> Fallible {
    let stats = shmstream::list_stats()?;
    for note in unreadable() {
        errln!("shmstream: note: {}", crate::term::printable(&note));
    }
    if json {
        let json = serde_json::to_string_pretty(&stats)?;
        return outln!("{}", crate::term::printable_json(&json));
    }
    if stats.is_empty() {
        return outln!("no streams");
    }
    let mut rows = vec![
        [
            "NAME", "SHAPE", "DTYPE", "COUNT", "AGE", "CREATOR", "NOTIFY", "GPU", "HISTORY",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for s in &stats {
        rows.push(vec![
            name_cell(&s.name),
            shape_str(&s.shape),
            s.dtype.to_string(),
            s.count.to_string(),
            human_age(s.write_time),
            creator_str(s.creator_pid, s.creator_alive),
            if s.notify { "yes" } else { "no" }.into(),
            gpu_str(s),
            match (s.history, &s.history_problem) {
                (_, Some(_)) => "unusable".to_owned(),
                (0, None) => "-".to_owned(),
                (n, None) => n.to_string(),
            },
        ]);
    }
    print_table(&rows)
}

/// What `list` says of each stream of this user's whose `_meta` it may not open
/// ([`shmstream::unreadable_streams`]). Best effort: a second scan that fails (out of
/// descriptors, say) is one note, and the list read before it stands.
fn unreadable() -> Vec<String> {
    let streams = match shmstream::unreadable_streams() {
        Ok(streams) => streams,
        Err(e) => {
            return vec![format!(
                "streams whose metadata cannot be read may be missing from the list: {e}"
            )];
        }
    };
    let notes = streams.into_iter().map(|e| match e.stream_name() {
        "" => format!("a stream is not listed, as its metadata cannot be read: {e}"),
        _ => format!("a stream is not listed: {e}"),
    });
    notes.collect()
}

/// A GPU stream's publisher or consumer when its `_gpu` segment does not say (missing, or
/// pyshmem's torch IPC pickle).
const GPU_WORD_UNKNOWN: &str = "unknown (its _gpu segment is unreadable or pyshmem's)";

/// `shmstream stat NAME [--json]`.
pub(crate) fn stat(name: &str, json: bool) -> Fallible {
    let s = shmstream::stat(name)?;
    if json {
        let json = serde_json::to_string_pretty(&s)?;
        return outln!("{}", crate::term::printable_json(&json));
    }
    for (k, v) in stat_rows(&s) {
        outln!("{:<15} {v}", format!("{k}:"))?;
    }
    Ok(())
}

/// The rows `stat` prints for `s`: each field's name and what it says.
fn stat_rows(s: &StreamStat) -> [(&'static str, String); 18] {
    [
        ("name", crate::term::printable(&s.name).into_owned()),
        ("shape", format!("{:?}", s.shape)),
        ("dtype", s.dtype.to_string()),
        ("size", format!("{} bytes", s.size)),
        ("count", s.count.to_string()),
        ("write_sequence", s.write_sequence.to_string()),
        (
            "write_time",
            format!("{} (age {})", s.write_time, human_age(s.write_time)),
        ),
        ("frame_id", s.frame_id.to_string()),
        ("creator_pid", creator_str(s.creator_pid, s.creator_alive)),
        ("notify", s.notify.to_string()),
        ("gpu_enabled", s.gpu_enabled.to_string()),
        (
            "gpu_device",
            s.gpu_device.clone().unwrap_or_else(|| "none".into()),
        ),
        ("cpu_mirror", s.cpu_mirror.to_string()),
        (
            "instance_id",
            s.instance_id.clone().unwrap_or_else(|| "none".into()),
        ),
        (
            "history",
            match (s.history, &s.history_problem) {
                (_, Some(why)) => format!(
                    "unusable, so every open refuses the stream: {}",
                    crate::term::printable(why)
                ),
                (0, None) => "none".to_owned(),
                (n, None) => format!("{n} frames"),
            },
        ),
        (
            "published_by",
            match s.gpu_publisher_pid {
                None if s.gpu_enabled => GPU_WORD_UNKNOWN.to_owned(),
                None => "host".to_owned(),
                Some(0) => "host (after a stream synchronize)".to_owned(),
                Some(pid) => format!("the CUDA stream of pid {pid}"),
            },
        ),
        (
            "gpu_consumer",
            match s.gpu_consumer_pid {
                None if s.gpu_enabled => GPU_WORD_UNKNOWN.to_owned(),
                None | Some(0) => "none".to_owned(),
                Some(pid) => format!("pid {pid} (acknowledges every frame)"),
            },
        ),
        (
            "lock_owner_pid",
            match s.lock_owner_pid {
                0 => "0 (no holder stamped in the header)".to_owned(),
                pid => format!("{pid} (holds the write lock, or died holding it)"),
            },
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This clock's UNIX time, s.
    fn now() -> f64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    }

    /// An age reads in the largest unit that keeps it short: hundredths of a second under
    /// 10 s, then seconds, minutes and seconds, hours and minutes, days and hours, each from
    /// its first whole value; a stream never written reads `never`, and a write time ahead
    /// of this clock (skewed) is age 0, not negative.
    #[test]
    fn an_age_reads_in_the_largest_unit_that_keeps_it_short() {
        let ago = |s: f64| human_age(now() - s);
        assert_eq!((human_age(0.0), age_secs(0.0)), ("never".to_owned(), None));
        let short = ago(1.0);
        let secs: f64 = short.strip_suffix('s').unwrap().parse().unwrap();
        assert!(
            short.contains('.') && (1.0..10.0).contains(&secs),
            "{short}"
        );
        for (secs, shown) in [
            (10.5, "10s"),
            (42.5, "42s"),
            (60.5, "1m00s"),
            (5.0 * 60.0 + 3.5, "5m03s"),
            (3600.5, "1h00m"),
            (2.0 * 3600.0 + 90.0, "2h01m"),
            (86400.5, "1d00h"),
            (3.0 * 86400.0 + 4.0 * 3600.0 + 90.0, "3d04h"),
        ] {
            assert_eq!(ago(secs), shown, "{secs} s");
        }
        assert_eq!(age_secs(now() + 100.0), Some(0.0));
        assert_eq!(human_age(now() + 100.0), "0.00s");
    }

    /// A shape reads as its dimensions joined by `x`; a creator as its pid and whether it
    /// lives.
    #[test]
    fn a_shape_and_a_creator_read_as_list_shows_them() {
        assert_eq!(shape_str(&[240, 320, 3]), "240x320x3");
        assert_eq!(shape_str(&[7]), "7");
        assert_eq!(creator_str(42, true), "42 alive");
        assert_eq!(creator_str(42, false), "42 dead");
    }

    /// Columns are as wide as their widest cell in characters (not bytes), two spaces
    /// apart, with no trailing blanks; a short row ends where its cells do.
    #[test]
    fn a_table_aligns_its_columns_by_characters() {
        let rows: Vec<Vec<String>> = [
            vec!["NAME", "SHAPE", "DTYPE"],
            vec!["éé", "1x2"],
            vec!["cam0", "240x320", "uint16"],
        ]
        .iter()
        .map(|r| r.iter().map(|c| c.to_string()).collect())
        .collect();
        assert_eq!(
            table(&rows),
            ["NAME  SHAPE    DTYPE", "éé    1x2", "cam0  240x320  uint16"]
        );
        assert!(table(&[]).is_empty());
    }

    /// A name shows quoted where a space at either end, or a leading quote, would be lost or
    /// misread in the padded column; other names show as they are.
    #[test]
    fn a_name_is_quoted_where_its_ends_would_mislead() {
        assert_eq!(name_cell("cam0"), "cam0");
        assert_eq!(name_cell("cam 0"), "cam 0");
        assert_eq!(name_cell("cam0 "), "\"cam0 \"");
        assert_eq!(name_cell(" cam0"), "\" cam0\"");
        assert_eq!(name_cell("\"cam0"), "\"\"cam0\"");
        assert_eq!(name_cell("cam0\""), "cam0\"");
    }

    /// A CPU stream's `stat` (a scratch stream), to plant GPU fields in.
    fn cpu_stat(tag: &str) -> (shmstream::Scratch, StreamStat) {
        let name = format!("t-show-{tag}-{}", std::process::id());
        let stream = shmstream::scratch(&name, &[1], shmstream::Dtype::U8).unwrap();
        (stream, shmstream::stat(&name).unwrap())
    }

    /// `list`'s GPU column: the device of a GPU stream, with `+mirror` when it keeps a CPU
    /// mirror; `-` for a CPU stream, one whose device is named but GPU use is off included.
    #[test]
    fn list_shows_a_gpu_stream_s_device_and_its_mirror() {
        let (_stream, mut s) = cpu_stat("gpu-column");
        assert_eq!(gpu_str(&s), "-");
        s.gpu_device = Some("cuda:0".into());
        assert_eq!(gpu_str(&s), "-", "GPU use off");
        (s.gpu_enabled, s.cpu_mirror) = (true, false);
        assert_eq!(gpu_str(&s), "cuda:0");
        s.cpu_mirror = true;
        assert_eq!(gpu_str(&s), "cuda:0+mirror");
    }

    /// `stat` says who publishes a stream's frames and who consumes them: the host and none
    /// for a CPU stream; for a GPU stream, the pids its `_gpu` segment gives, or unknown
    /// where it gives none.
    #[test]
    fn stat_says_who_publishes_and_who_consumes_a_stream() {
        let (_stream, mut s) = cpu_stat("publisher");
        let said = |s: &StreamStat| {
            let rows = stat_rows(s);
            let row = |key: &str| rows.iter().find(|(k, _)| *k == key).unwrap().1.clone();
            (row("published_by"), row("gpu_consumer"))
        };
        assert_eq!(said(&s), ("host".to_owned(), "none".to_owned()));
        s.gpu_enabled = true;
        let unknown = GPU_WORD_UNKNOWN.to_owned();
        assert_eq!(said(&s), (unknown.clone(), unknown));
        (s.gpu_publisher_pid, s.gpu_consumer_pid) = (Some(0), Some(0));
        let synchronized = "host (after a stream synchronize)".to_owned();
        assert_eq!(said(&s), (synchronized, "none".to_owned()));
        (s.gpu_publisher_pid, s.gpu_consumer_pid) = (Some(42), Some(43));
        let by_pid = (
            "the CUDA stream of pid 42".to_owned(),
            "pid 43 (acknowledges every frame)".to_owned(),
        );
        assert_eq!(said(&s), by_pid);
    }
}
