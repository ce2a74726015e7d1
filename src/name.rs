//! Stream names and the names derived from them: the `ps_<sha1(name)[:14]>` segment id
//! pyshmem uses, its `_meta` / `_gpu` companions, and the lock-file path.

use std::borrow::Cow;
use std::path::{Component, Path, PathBuf};

use sha1::{Digest, Sha1};

/// Longest name in UTF-8 bytes (the size of the header's name region).
pub const MAX_NAME_BYTES: usize = 256;

/// Why a name was refused.
pub(crate) fn check(name: &str) -> Result<(), &'static str> {
    // Python's `str.strip()` (pyshmem's check) also strips the separators U+001C-U+001F,
    // which Rust's `trim` keeps: a name of only those would be ours alone.
    if name
        .trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
        .is_empty()
    {
        return Err("a name must contain a non-space character");
    }
    if name.len() > MAX_NAME_BYTES {
        return Err("a name is at most 256 UTF-8 bytes");
    }
    if name.contains('\0') {
        return Err("a name cannot contain NUL");
    }
    Ok(())
}

/// `name` as one shell word, for a command in a message: as it is when nothing in it is
/// special to a shell (nor a leading `=`), else single-quoted (a `'` in it as `'"'"'`: no backslash, which a
/// message shown through [`printable`] would double); after `--` when it starts with `-`
/// (not an option).
pub fn shell_word(name: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_.,:/@%+=".contains(c);
    // A leading `=` is zsh's `=cmd` expansion.
    let word = if name.chars().all(plain) && !name.starts_with('=') {
        name.to_owned()
    } else {
        format!("'{}'", name.replace('\'', r#"'"'"'"#))
    };
    if name.starts_with('-') {
        format!("-- {word}")
    } else {
        word
    }
}

/// `name` as a shell word to copy into a command shown in a message ([`shell_word`]), or
/// `None` where [`printable`] would show it escaped: a command copied from the terminal would
/// then name another stream.
pub(crate) fn copyable(name: &str) -> Option<String> {
    (printable(name) == name).then(|| shell_word(name))
}

/// The advice to remove stream `name` with `shmstream unlink`, for a message (which a tool
/// shows through [`printable`]): the command to copy (`` `shmstream unlink 'my cam'` ``),
/// unless the name is not `copyable` (a backslash, a control, bidi or invisible
/// character), when it says to give the name itself.
pub fn unlink_remedy(name: &str) -> String {
    match copyable(name) {
        Some(word) => format!("`shmstream unlink {word}`"),
        None => "`shmstream unlink` given the name itself (it has characters a terminal shows \
                 escaped, Rust-style, so a command copied from there would name another stream)"
            .to_owned(),
    }
}

/// The advice for stream `name`, which exists and keeps no history, to get one (for a
/// message, as [`unlink_remedy`]): its producer creates it with a history, or it is removed
/// ([`unlink_remedy`]) and made first with `shmstream create` (the command to copy, with
/// `NAME` for a name not `copyable`) before the producer starts, which then opens it.
pub fn history_remedy(name: &str) -> String {
    let unlink = unlink_remedy(name);
    let word = copyable(name).unwrap_or_else(|| "NAME".to_owned());
    format!(
        "have its producer create it with a history (Rust: StreamOptions history(n)), or \
         remove it with {unlink} and make it first with `shmstream create {word} --shape ... \
         --dtype ... --history N` before the producer starts (opening it)"
    )
}

/// `s` (a name, or a line that holds names) as shown on a terminal: the characters
/// [`is_escaped`] (control, bidi control and invisible format characters, and backslashes)
/// escaped Rust-style (`\u{1b}`, `\n`, `\u{200b}`, `\\`), so a name from shared memory
/// cannot move the cursor, reorder or split a line, or pass for another name; borrowed
/// unchanged when there is nothing to escape.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_escaped) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_escaped(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Whether [`printable`] escapes `c`: a backslash, a control character, whitespace other
/// than the space (U+00A0, U+2009, U+3000, ...: `cam0\u{a0}` would pass for `cam0 `), a bidi
/// control ([`is_bidi_control`]) or an invisible format character ([`is_invisible`]).
pub fn is_escaped(c: char) -> bool {
    c == '\\'
        || c.is_control()
        || (c.is_whitespace() && c != ' ')
        || is_bidi_control(c)
        || is_invisible(c)
}

/// Whether `c` is shown as nothing (a default-ignorable code point of Unicode, or a filler
/// drawn blank): `cam0\u{200b}` would pass for `cam0`. The soft hyphen, the combining
/// grapheme joiner, the Hangul fillers, the braille pattern blank (U+2800), the musical
/// symbol null notehead (U+1D159), the Khmer inherent vowels (U+17B4, U+17B5), the
/// Mongolian free variation selectors and vowel separator, the zero-width space,
/// (non-)joiners and marks (U+200B-U+200F), the word joiner, invisible operators and
/// deprecated format characters (U+2060-U+206F), the variation selectors (U+FE00-U+FE0F,
/// U+E0100-U+E01EF), the byte order mark (zero-width no-break space), the unassigned
/// U+FFF0-U+FFF8 and the interlinear annotation controls (U+FFF9-U+FFFB), the Egyptian
/// hieroglyph format controls (U+13430-U+1343F), the shorthand format controls
/// (U+1BCA0-U+1BCA3), the musical symbol format controls (U+1D173-U+1D17A) and the tag
/// characters and the rest of plane 14's ignorables (U+E0000-U+E0FFF).
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00ad}'
            | '\u{034f}'
            | '\u{115f}'
            | '\u{1160}'
            | '\u{17b4}'
            | '\u{17b5}'
            | '\u{180b}'..='\u{180f}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2060}'..='\u{206f}'
            | '\u{2800}'
            | '\u{3164}'
            | '\u{fe00}'..='\u{fe0f}'
            | '\u{feff}'
            | '\u{ffa0}'
            | '\u{fff0}'..='\u{fffb}'
            | '\u{13430}'..='\u{1343f}'
            | '\u{1bca0}'..='\u{1bca3}'
            | '\u{1d159}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0000}'..='\u{e0fff}'
    )
}

/// Whether `c` is a bidi control: it reorders the text shown after it.
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    )
}

/// The payload segment id: `ps_` + the first 14 hex digits of SHA-1 of the UTF-8 name.
pub fn segment_id(name: &str) -> String {
    let digest = Sha1::digest(name.as_bytes());
    let mut id = String::with_capacity(17);
    id.push_str("ps_");
    for byte in &digest[..7] {
        id.push_str(&format!("{byte:02x}"));
    }
    id
}

/// The metadata segment id (`<segment_id>_meta`).
pub fn meta_id(name: &str) -> String {
    format!("{}_meta", segment_id(name))
}

/// The GPU handle segment id (`<segment_id>_gpu`).
pub fn gpu_id(name: &str) -> String {
    format!("{}_gpu", segment_id(name))
}

/// The history ring segment id (`<segment_id>_hist`; pyshmem never opens it).
pub fn history_id(name: &str) -> String {
    format!("{}_hist", segment_id(name))
}

/// Whether a file name in `/dev/shm` has the shape of a payload segment id.
pub(crate) fn looks_like_segment_id(id: &str) -> bool {
    id.len() == 17
        && id.starts_with("ps_")
        && id[3..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The directory holding lock files, pyshmem's: `$PYSHMEM_LOCK_DIR`, else
/// `pyshmem-locks-<uid>` in Python's temporary directory (`tempfile.gettempdir()`: the first
/// usable of `$TMPDIR`, `$TEMP`, `$TMP`, `/tmp`, `/var/tmp`, `/usr/tmp`, made absolute).
pub fn lock_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PYSHMEM_LOCK_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    python_tempdir().join(default_lock_dir_name())
}

/// The name of the default lock directory, `pyshmem-locks-<uid>`.
pub(crate) fn default_lock_dir_name() -> String {
    format!("pyshmem-locks-{}", crate::sys::uid())
}

/// Python's `tempfile.gettempdir()`, as pyshmem gets it: the first of `$TMPDIR`, `$TEMP`,
/// `$TMP` (those set and not empty), `/tmp`, `/var/tmp` and `/usr/tmp`, made absolute as
/// `os.path.abspath` does (lexically), where Python's probe succeeds ([`python_usable`]);
/// else the working directory. (A different choice put Rust's lock files beside pyshmem's
/// and let writers of both write at once.) Chosen once per process, as Python does: a
/// later change of the working directory or of the directories' state (a cleaner removing
/// `$TMPDIR`) must not move the lock files of a process's later handles. (`PYSHMEM_LOCK_DIR`
/// and the uid in the directory's name are read at each call, as pyshmem reads them.)
fn python_tempdir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(choose_python_tempdir)
}

/// [`python_tempdir`]'s choice, made now.
fn choose_python_tempdir() -> PathBuf {
    let cwd = std::env::current_dir().ok();
    let from_env = ["TMPDIR", "TEMP", "TMP"]
        .into_iter()
        .filter_map(std::env::var_os)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from);
    let fixed = ["/tmp", "/var/tmp", "/usr/tmp"]
        .into_iter()
        .map(PathBuf::from);
    from_env
        .chain(fixed)
        .map(|d| absolute(&d, cwd.as_deref()))
        .find(|d| python_usable(d))
        .or(cwd)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Whether `tempfile._get_default_tempdir` accepts `dir`: a new file of a random name
/// (`O_CREAT | O_EXCL | O_NOFOLLOW`, 0600) can be made there, written `blat` (one `write`;
/// a short one counts) and removed. A name taken is tried again with another, up to 100
/// names; any other failure refuses the directory, but for a process out of descriptors
/// or memory, which falls back to the permissions ([`crate::sys::writable_dir`]). Access
/// checks alone differ: a full tmpfs creates the file but fails the write, and root passes
/// `access` where sysfs refuses creation; pyshmem would then lock files elsewhere.
fn python_usable(dir: &Path) -> bool {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // A file-size limit of 0 fails the write with `EFBIG` after `SIGXFSZ`, which Python
    // ignores and which would kill us: refused unwritten. (Under 4, the write is short.)
    if crate::sys::file_size_limit() == Some(0) {
        return false;
    }
    for attempt in 0..100u8 {
        let path = dir.join(probe_name(attempt));
        let mut file = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            // Out of descriptors or memory, this process cannot probe; Python would raise.
            // The choice is kept for the process's life, so it rests on the permissions
            // rather than on this moment's shortage (else every directory fails, the working
            // directory is chosen and pyshmem's writers no longer exclude ours).
            Err(e) if crate::error::out_of_resources(&e) => return crate::sys::writable_dir(dir),
            Err(_) => return false,
        };
        let wrote = loop {
            match file.write(b"blat") {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r.is_ok(),
            }
        };
        drop(file);
        return std::fs::remove_file(&path).is_ok() && wrote;
    }
    false
}

/// A random 8-character name from Python's `_RandomNameSequence` alphabet.
fn probe_name(attempt: u8) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_";
    // Without the kernel's random bytes, a name from the pid and attempt (`O_EXCL` still).
    let bytes = crate::sys::random_id().unwrap_or_else(|_| {
        let mut b = [attempt; 16];
        b[..4].copy_from_slice(&std::process::id().to_le_bytes());
        b
    });
    bytes[..8]
        .iter()
        .map(|&b| CHARS[usize::from(b) % CHARS.len()] as char)
        .collect()
}

/// `path` joined to `cwd` if relative, with `.` and `..` resolved lexically (Python's
/// `os.path.abspath`).
fn absolute(path: &Path, cwd: Option<&Path>) -> PathBuf {
    let joined = match cwd {
        Some(c) if path.is_relative() => c.join(path),
        _ => path.to_owned(),
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The lock file of a stream: `<lock_dir>/<segment_id>.lock`.
pub fn lock_path(name: &str) -> PathBuf {
    lock_path_of_id(&segment_id(name))
}

/// The lock file of the stream whose payload id is `id`.
pub(crate) fn lock_path_of_id(id: &str) -> PathBuf {
    lock_dir().join(format!("{id}.lock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names from shared memory (and the bridge's remote keys): a control character, bidi
    /// control or backslash in one is escaped, not sent to the terminal; other text, UTF-8
    /// included, is left as it is.
    #[test]
    fn control_characters_in_a_line_are_escaped_and_other_text_is_not() {
        for plain in [
            "",
            "stream 'cam0': carrying frames",
            "kamera-ü 相机 ✓ 'q\"",
            "é",
        ] {
            assert!(
                matches!(printable(plain), std::borrow::Cow::Borrowed(p) if p == plain),
                "{plain:?}"
            );
        }
        let cases = [
            ("a\nb", "a\\nb"),
            ("a\r\tb", "a\\r\\tb"),
            ("\u{1b}[31mred\u{1b}[0m", "\\u{1b}[31mred\\u{1b}[0m"),
            ("nul\0 del\u{7f}", "nul\\u{0} del\\u{7f}"),
            ("c1 \u{9b}2J csi", "c1 \\u{9b}2J csi"),
            ("ü\u{85}ü", "ü\\u{85}ü"),
            ("bidi \u{202e}txt", "bidi \\u{202e}txt"),
            // Shown as nothing: `cam0\u{200b}` does not pass for `cam0`.
            ("cam0\u{200b}", "cam0\\u{200b}"),
            ("\u{feff}cam0", "\\u{feff}cam0"),
            (
                "ca\u{ad}m\u{2060}0\u{200d}",
                "ca\\u{ad}m\\u{2060}0\\u{200d}",
            ),
            ("tag\u{e0041}", "tag\\u{e0041}"),
            // Whitespace but the space, and more ignorables: `cam0\u{a0}` is not `cam0 `.
            ("cam0\u{a0}", "cam0\\u{a0}"),
            ("\u{3000}cam0\u{2009}", "\\u{3000}cam0\\u{2009}"),
            ("cam0\u{2028}", "cam0\\u{2028}"),
            ("cam0\u{17b4}\u{17b5}", "cam0\\u{17b4}\\u{17b5}"),
            ("cam0\u{1d173}\u{13430}", "cam0\\u{1d173}\\u{13430}"),
            (
                "cam0\u{2065}\u{fff0}\u{e0fff}",
                "cam0\\u{2065}\\u{fff0}\\u{e0fff}",
            ),
            ("cam0\u{fe0f}", "cam0\\u{fe0f}"),
            ("\u{3164}cam0\u{e0100}", "\\u{3164}cam0\\u{e0100}"),
            // Drawn blank though neither whitespace nor ignorable.
            ("cam0\u{2800}", "cam0\\u{2800}"),
            (
                "cam0\u{115f}\u{1160}\u{ffa0}\u{1d159}",
                "cam0\\u{115f}\\u{1160}\\u{ffa0}\\u{1d159}",
            ),
            // A name holding the text `\u{1b}` is not shown as one holding ESC.
            ("a\\u{1b}b", "a\\\\u{1b}b"),
        ];
        for (raw, shown) in cases {
            assert_eq!(printable(raw), shown, "{raw:?}");
        }
    }

    #[test]
    fn a_name_in_a_command_is_one_shell_word() {
        assert_eq!(shell_word("cam0"), "cam0");
        assert_eq!(shell_word("my cam's"), r#"'my cam'"'"'s'"#);
        // No backslash: a message shown through `printable` keeps the command as it is.
        assert_eq!(printable(&shell_word("my cam's")), shell_word("my cam's"));
        assert_eq!(shell_word("-x"), "-- -x");
        assert_eq!(shell_word("-my cam"), "-- '-my cam'");
        // zsh expands a word starting with `=` (`=x` is the path of command `x`).
        assert_eq!(shell_word("=x"), "'=x'");
        assert_eq!(shell_word("a=x"), "a=x");
    }

    #[test]
    fn a_remedy_gives_a_command_only_for_a_name_shown_as_it_is() {
        assert_eq!(unlink_remedy("cam0"), "`shmstream unlink cam0`");
        assert_eq!(
            unlink_remedy("my cam's"),
            r#"`shmstream unlink 'my cam'"'"'s'`"#
        );
        // Shown escaped in a message (`a\\b`, `a\nb`): no command naming another stream.
        for name in ["a\\b", "a\nb", "a\u{202e}b", "cam0\u{200b}"] {
            let r = unlink_remedy(name);
            assert!(
                r.contains("shows escaped") && !r.contains(&shell_word(name)),
                "{r}"
            );
            let h = history_remedy(name);
            assert!(
                h.contains(&r) && h.contains("`shmstream create NAME ") && !h.contains(name),
                "{h}"
            );
        }
        let h = history_remedy("my cam");
        assert!(
            h.contains(
                "remove it with `shmstream unlink 'my cam'` and make it first with \
                 `shmstream create 'my cam' --shape"
            ),
            "{h}"
        );
    }

    #[test]
    fn segment_id_is_pyshmem_sha1_prefix() {
        // python3 -c "import hashlib;print(hashlib.sha1(b'cam0').hexdigest()[:14])"
        assert_eq!(segment_id("cam0"), "ps_dd33c901d45621");
        assert!(looks_like_segment_id(&segment_id("anything")));
        assert_eq!(meta_id("a"), format!("{}_meta", segment_id("a")));
    }

    #[test]
    fn paths_are_made_absolute_as_python_does() {
        let cwd = Path::new("/w/d");
        assert_eq!(
            absolute(Path::new("a/./b/../c"), Some(cwd)),
            Path::new("/w/d/a/c")
        );
        assert_eq!(absolute(Path::new("../.."), Some(cwd)), Path::new("/"));
        assert_eq!(
            absolute(Path::new("/x/../../y/"), Some(cwd)),
            Path::new("/y")
        );
    }

    /// A process out of descriptors when it first needs the lock directory cannot run
    /// Python's probe: it still chooses the temporary directory a process with descriptors
    /// does (by its permissions), not the working directory, which it would keep for good.
    /// The child (this test binary again, its descriptor limit lowered by the shell) uses
    /// every descriptor before it chooses.
    #[test]
    fn a_process_out_of_descriptors_chooses_the_same_temporary_directory() {
        const TEST: &str =
            "name::tests::a_process_out_of_descriptors_chooses_the_same_temporary_directory";
        const CHILD: &str = "SHMSTREAM_NAME_FDLESS";
        if std::env::var_os(CHILD).is_some() {
            let fillers = crate::few_descriptors::take_every_descriptor();
            let chosen = python_tempdir();
            drop(fillers);
            println!("said: {}", chosen.display());
            return;
        }
        let said = crate::few_descriptors::said_in_a_child(TEST, (CHILD, "1".as_ref()));
        let expected = python_tempdir().display().to_string();
        assert_eq!(said, [expected]);
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(check("").is_err());
        assert!(check("   ").is_err());
        // Blank to Python's `str.strip()` too (pyshmem refuses them): U+001C-U+001F, U+0085,
        // U+00A0, U+3000.
        assert!(check("\u{1c}\u{1d}\u{1e}\u{1f}").is_err());
        assert!(check("\u{85}\u{a0}\u{3000}").is_err());
        assert!(check("\u{1f}x").is_ok());
        assert!(check(&"x".repeat(257)).is_err());
        // Names are hashed into segment ids: '/' is a plain character (pyshmem's too).
        assert!(check("a/b").is_ok() && check("/").is_ok());
        assert!(check("a\0b").is_err());
        assert!(check(&"x".repeat(256)).is_ok());
        assert!(check("cam0").is_ok());
    }

    #[test]
    fn look_alikes_are_not_segment_ids() {
        assert!(!looks_like_segment_id("ps_0123456789abcd_meta"));
        assert!(!looks_like_segment_id("ps_0123456789abcG"));
        assert!(!looks_like_segment_id("xx_0123456789abcd"));
        assert!(looks_like_segment_id("ps_0123456789abcd"));
    }
}
