//! The output files: the names a stream's cubes get in `--out` (`<stem>_<index>.<ext>`), and
//! the checks that refuse a recording before it writes over a file, writes two streams into
//! one, or runs out of descriptors at a file change.

use std::collections::HashMap;
use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::{Format, Plan, npy_cube};
use crate::{Fallible, term};

/// Digits of a cube index in a file name: fixed, so that the files sort in order by name
/// (a million 1-frame files take 8 minutes at 2 kHz; a billion, 6 days).
const INDEX_DIGITS: usize = 9;

/// Longest [`file_stem`]: with `_`, a cube index of up to 20 digits and `.frames.csv`,
/// file names stay under the 255 bytes of `NAME_MAX`.
const MAX_STEM: usize = 200;

/// The start of a stream's file names: its name with every character but `[A-Za-z0-9._-]`
/// made `_`, and a leading `.` or `-` too (no hidden file missed by `*.fits`, no file name
/// taken for an option); one longer than [`MAX_STEM`] is cut to fit with `-` and the 14
/// hex digits of the stream's segment id (a SHA-1 of the whole name) at the end.
pub(super) fn file_stem(name: &str) -> String {
    let stem: String = name
        .chars()
        .enumerate()
        .map(|(i, c)| {
            let kept = if i == 0 { "_" } else { "-_." };
            if c.is_ascii_alphanumeric() || kept.contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if stem.len() <= MAX_STEM {
        return stem;
    }
    // `ps_` + 14 hex digits.
    let hash = &shmstream::name::segment_id(name)[3..];
    // Only ASCII is left: any byte is a character boundary.
    format!("{}-{hash}", &stem[..MAX_STEM - 1 - hash.len()])
}

/// The file of cube `index` of a stream with files `stem`.
pub(super) fn cube_path(plan: &Plan, stem: &str, index: usize) -> PathBuf {
    let ext = match plan.format {
        Format::Fits => "fits",
        Format::Npy => "npy",
    };
    plan.out
        .join(format!("{stem}_{index:0INDEX_DIGITS$}.{ext}"))
}

/// That file and any table beside it.
pub(super) fn cube_files(plan: &Plan, stem: &str, index: usize) -> Vec<PathBuf> {
    let cube = cube_path(plan, stem, index);
    match plan.format {
        Format::Fits => vec![cube],
        Format::Npy => vec![npy_cube::sidecar(&cube), cube],
    }
}

/// Refuses two streams whose files would share names (one name twice, or names that differ
/// only in characters [`file_stem`] replaces, or in ASCII case: one file on a
/// case-insensitive file system): both would write into one file.
pub(super) fn refuse_shared_files(names: &[String]) -> Fallible {
    let mut seen: HashMap<String, &str> = HashMap::new();
    for name in names {
        if let Some(first) = seen.insert(file_stem(name).to_ascii_lowercase(), name) {
            return Err(if first == name {
                format!("stream '{name}' is given twice: give each stream once")
            } else {
                let (a, b) = (file_stem(first), file_stem(name));
                let shared = if a == b {
                    format!("files named '{a}_*'")
                } else {
                    format!("files named '{a}_*' and '{b}_*', one on a case-insensitive file system")
                };
                format!(
                    "streams '{first}' and '{name}' would both be recorded into {shared}: record them in separate --out directories"
                )
            }
            .into());
        }
    }
    Ok(())
}

/// Refuses to record over `path` if anything is there, or if whether it is cannot be told.
pub(super) fn refuse_existing(path: &Path) -> Fallible {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Ok(_) => Err(already_there(path)),
        Err(e) => Err(format!(
            "{}: cannot check that no file is there: {e}: record into another --out directory",
            path.display()
        )
        .into()),
    }
}

/// Creates `path` for writing, never over an existing file; a failure says what to do.
pub(super) fn create_new(path: &Path) -> Fallible<File> {
    File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| match e.kind() {
            ErrorKind::AlreadyExists => already_there(path),
            _ => super::frame_file::write_failed(
                path,
                "",
                &e,
                "check that its directory is there and this user may write in it, and record again",
            )
            .into(),
        })
}

/// Refuses a recording whose files would not all fit under the open-file limit (`ulimit
/// -n`): with the streams open (their descriptors counted in `/proc/self/fd`), each stream
/// writes a file at a time and finishes the one before it meanwhile; a descriptor short would
/// fail that stream at a file change, hours in.
pub(super) fn refuse_too_many_open_files(plan: &Plan) -> Fallible {
    let Some(limit) = term::open_file_limit() else {
        return Ok(());
    };
    // Less the descriptor `read_dir` itself holds.
    let open = std::fs::read_dir("/proc/self/fd")
        .map_or(plan.names.len() * 4 + 3, |d| d.count().saturating_sub(1));
    let per_file = cube_files(plan, "x", 0).len();
    check_open_files(plan.names.len(), open, per_file, limit)
}

/// Refuses a recording of `streams` streams, `open` descriptors being open now, that writes
/// cubes of `per_file` files each, where it needs more descriptors than `limit`.
fn check_open_files(streams: usize, open: usize, per_file: usize, limit: u64) -> Fallible {
    // A few more: `--fsync`'s directory, a pipe, the standard three if closed now.
    let need = open + streams * 2 * per_file + 8;
    if need as u64 > limit {
        return Err(format!(
            "recording {streams} streams needs about {need} open files ({open} open now for the streams, and {} for each stream's file being written and the one being finished) but the hard limit is {limit} (the soft one was raised to it): raise it (as root: `ulimit -Hn {need}`, or in /etc/security/limits.conf or systemd's LimitNOFILE) or record fewer streams per run",
            2 * per_file
        )
        .into());
    }
    Ok(())
}

fn already_there(path: &Path) -> Box<dyn std::error::Error> {
    format!(
        "{}: already exists (record never overwrites a file): move it away or record into another --out directory",
        path.display()
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file that cannot be made names itself, the OS error and what to do.
    #[test]
    fn a_file_that_cannot_be_created_says_what_to_do() {
        let path = std::env::temp_dir()
            .join(format!("no-such-dir-{}", std::process::id()))
            .join("cam_000000000.fits");
        let e = create_new(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: ", path.display()))
                && e.contains("No such file or directory")
                && e.ends_with("check that its directory is there and this user may write in it, and record again"),
            "{e}"
        );
    }

    #[test]
    fn long_names_get_short_distinct_stems_and_short_ones_keep_theirs() {
        assert_eq!(file_stem("cam 0/µ"), "cam_0__");
        let long = "a".repeat(256);
        let stem = file_stem(&long);
        assert_eq!(stem.len(), MAX_STEM);
        assert!(stem.starts_with(&"a".repeat(185)), "{stem}");
        assert_eq!(stem, file_stem(&long), "the same every time");
        let other = format!("{}b", "a".repeat(255));
        assert_ne!(file_stem(&other), stem, "the cut-off part still counts");
        assert_eq!(file_stem(&long[..MAX_STEM]), long[..MAX_STEM]);
    }

    #[test]
    fn a_leading_dot_or_dash_becomes_an_underscore_and_still_collides() {
        assert_eq!(file_stem(".cam"), "_cam");
        assert_eq!(file_stem("-x"), "_x");
        assert_eq!(
            file_stem("a.b-c"),
            "a.b-c",
            "kept after the first character"
        );
        let names = |n: &[&str]| n.iter().map(|&n| n.to_owned()).collect::<Vec<_>>();
        let e = refuse_shared_files(&names(&[".cam", "_cam"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("'.cam' and '_cam'"), "{e}");
        refuse_shared_files(&names(&[".cam", "cam"])).unwrap();
    }

    #[test]
    fn names_that_differ_only_in_case_are_refused() {
        let names = ["Cam".to_owned(), "cam".to_owned()];
        let e = refuse_shared_files(&names).unwrap_err().to_string();
        assert!(e.contains("case-insensitive"), "{e}");
    }

    #[test]
    fn cube_files_sort_by_name_in_index_order_past_a_million() {
        let plan = Plan::for_test(Format::Fits, "out");
        let [a, b, c] = [999_999, 1_000_000, 999_999_999].map(|i| cube_path(&plan, "cam", i));
        assert!(a < b && b < c, "{a:?} {b:?} {c:?}");
        assert_eq!(
            cube_path(&plan, "cam", 0),
            Path::new("out/cam_000000000.fits")
        );
    }

    /// Each stream needs two cubes' files open (the one being written, the one being
    /// finished), and a few descriptors more are kept free: up to the limit is recorded,
    /// past it refused with the count and the remedy.
    #[test]
    fn a_recording_needing_more_open_files_than_the_limit_is_refused() {
        // 10 open, 3 streams of 2 files a cube: 10 + 3 × 2 × 2 + 8.
        check_open_files(3, 10, 2, 30).unwrap();
        let e = check_open_files(3, 10, 2, 29).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "recording 3 streams needs about 30 open files (10 open now for the streams, \
                 and 4 for each stream's file being written and the one being finished) but \
                 the hard limit is 29 "
            ) && e.contains("`ulimit -Hn 30`"),
            "{e}"
        );
        check_open_files(5, 3, 1, 21).unwrap();
        assert!(check_open_files(5, 3, 1, 20).is_err());
    }

    /// A FITS cube is one file; a `.npy` cube has its frame table beside it, created first.
    #[test]
    fn a_cubes_files_are_its_cube_and_any_table_beside_it() {
        let mut plan = Plan::for_test(Format::Fits, "out");
        assert_eq!(
            cube_files(&plan, "cam", 3),
            [PathBuf::from("out/cam_000000003.fits")]
        );
        plan.format = Format::Npy;
        assert_eq!(
            cube_files(&plan, "cam", 3),
            [
                PathBuf::from("out/cam_000000003.frames.csv"),
                PathBuf::from("out/cam_000000003.npy")
            ]
        );
    }

    /// Nothing there: recorded into. Anything there (a file, a dangling symlink) is refused,
    /// checked before and again when the file is created, and left as it is.
    #[test]
    fn a_file_already_there_is_refused_and_left_as_it_is() {
        let dir = std::env::temp_dir().join(format!("rec-files-there-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let (file, link) = (dir.join("cam_000000000.npy"), dir.join("link.npy"));
        refuse_existing(&file).unwrap();
        std::fs::write(&file, b"kept").unwrap();
        std::os::unix::fs::symlink(dir.join("nowhere"), &link).unwrap();
        for path in [&file, &link] {
            for e in [
                refuse_existing(path).unwrap_err(),
                create_new(path).unwrap_err(),
            ] {
                let e = e.to_string();
                assert!(
                    e.starts_with(&format!("{}: already exists", path.display())),
                    "{e}"
                );
            }
        }
        assert_eq!(std::fs::read(&file).unwrap(), b"kept");
        assert!(!dir.join("nowhere").exists(), "made through the symlink");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_path_that_cannot_be_checked_is_reported_as_itself_not_as_existing() {
        let path = std::env::temp_dir().join("x".repeat(300));
        let e = refuse_existing(&path).unwrap_err().to_string();
        let too_long = std::io::Error::from_raw_os_error(libc::ENAMETOOLONG).to_string();
        assert!(e.contains(&too_long) && e.contains("--out"), "{e}");
        assert!(!e.contains("already exists"), "{e}");
    }
}
