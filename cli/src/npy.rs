//! `load` and `dump`: `.npy` files in and out of streams, through the `npyz` crate (with its
//! `half` and `complex` features, it covers all 14 stream dtypes: ints, uints, float16/32/64,
//! bool and complex64/128).

use std::cell::Cell;
use std::fs::{File, Metadata};
use std::io::{self, BufReader, BufWriter, Cursor, IsTerminal, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use npyz::{DType, Order, TypeChar, WriterBuilder};
use shmstream::ndarray::{ArrayD, IxDyn, ShapeBuilder};
use shmstream::{Complex32, Complex64, Dtype, Error, Stream, StreamOptions, f16, with_dtype};

use crate::{Fallible, term};

/// The stream dtype of a `.npy` type string, or an error naming what the file holds.
fn stream_dtype(file: &Path, dtype: &DType) -> Fallible<Dtype> {
    let unsupported = || -> Box<dyn std::error::Error> {
        let known: Vec<_> = Dtype::ALL.iter().map(|d| d.numpy_name()).collect();
        format!(
            "{}: unsupported .npy dtype {} (streams hold {})",
            file.display(),
            dtype.descr(),
            known.join(", ")
        )
        .into()
    };
    let DType::Plain(ts) = dtype else {
        return Err(unsupported());
    };
    let d = match (ts.type_char(), ts.size_field()) {
        (TypeChar::Int, 1) => Dtype::I8,
        (TypeChar::Int, 2) => Dtype::I16,
        (TypeChar::Int, 4) => Dtype::I32,
        (TypeChar::Int, 8) => Dtype::I64,
        (TypeChar::Uint, 1) => Dtype::U8,
        (TypeChar::Uint, 2) => Dtype::U16,
        (TypeChar::Uint, 4) => Dtype::U32,
        (TypeChar::Uint, 8) => Dtype::U64,
        (TypeChar::Float, 2) => Dtype::F16,
        (TypeChar::Float, 4) => Dtype::F32,
        (TypeChar::Float, 8) => Dtype::F64,
        (TypeChar::Bool, 1) => Dtype::Bool,
        (TypeChar::Complex, 8) => Dtype::Complex64,
        (TypeChar::Complex, 16) => Dtype::Complex128,
        _ => return Err(unsupported()),
    };
    Ok(d)
}

fn describe(dtype: Dtype, shape: &[usize]) -> String {
    format!("{dtype} {shape:?}")
}

/// The longest `.npy` header `load` reads. numpy's `np.load` refuses those over 10 000
/// bytes unless told otherwise, and numpy writes a plain dtype's in 128; a version 1 header
/// is at most 65 535. npyz's parser (`py_literal`, a PEG grammar built with pest) takes
/// about a second for 128 KiB of the slowest literals.
const MAX_HEADER_LEN: u64 = 1 << 17;

/// How many brackets the header of a dtype a stream holds opens: the dict, and the shape
/// tuple in it. More is a structured dtype (or values besides), which `load` refuses before
/// npyz parses it: the parser reads the last element of every list, tuple and dict twice,
/// and a dict's elements once more when they are a set's, so each level of nesting doubles
/// or quadruples its time (a 100-byte header nesting 25 deep takes it hours). Brackets are
/// counted as [`brackets_opened`] counts them: outside strings (a datetime dtype's
/// `'<M8[ns]'` opens none, and is refused for its dtype) the parser reads as they are read
/// there, and anywhere in a header with another string: the nesting the parser sees is
/// never deeper.
const MAX_HEADER_BRACKETS: usize = 2;

/// How many brackets (`(`, `[`, `{`) the `.npy` header `text` opens outside its strings.
/// Only strings of plain characters between their quotes are skipped (no backslash, no line
/// end, the closing quote there): npyz's parser (`py_literal`) reads such a string as
/// ending at the next quote too, so the two see the same brackets outside. With any other
/// string (an escape, whose `\N{...}` may hold a quote; a line end, at which the parser's
/// short string fails and a long one is tried; none closed) every bracket counts, in strings
/// too.
fn brackets_opened(text: &str) -> usize {
    let opens = |c: char| matches!(c, '(' | '[' | '{');
    let mut chars = text.chars();
    let mut n = 0;
    while let Some(c) = chars.next() {
        if opens(c) {
            n += 1;
        } else if matches!(c, '\'' | '"') {
            loop {
                match chars.next() {
                    Some(q) if q == c => break,
                    None | Some('\\' | '\n' | '\r') => {
                        return text.chars().filter(|&c| opens(c)).count();
                    }
                    Some(_) => {}
                }
            }
        }
    }
    n
}

/// `load`'s check of a `.npy` header before npyz reads the file. npyz multiplies the
/// dimensions unchecked (their product, and the strides: every partial product, from the
/// left for Fortran order, from the right for C order), so a debug build panics and a
/// release build wraps on a shape whose product overflows, even one with a zero in it. So
/// the header is read here as npyz reads it: the whole length the file declares (at most
/// [`MAX_HEADER_LEN`]) and, when it opens no more brackets than a plain dtype's
/// ([`MAX_HEADER_BRACKETS`]), parsed with `py_literal`, npyz's parser. A header that does
/// not parse is refused, and so is every `shape` entry (a key may repeat; npyz keeps the
/// last) but a list or tuple of 64-bit integers whose nonzero ones multiply within 64 bits
/// (then every partial product does). What npyz refuses before it reads the header (no
/// magic, an unknown version) is left to it. Returns the bytes it read from `f`, which npyz
/// reads again ahead of the rest: the file is read once, so it may be a pipe
/// (`/dev/stdin`, `<(...)`).
fn check_header(file: &Path, f: &mut impl Read) -> Fallible<Vec<u8>> {
    let refuse = |why: String| -> Box<dyn std::error::Error> {
        format!("{} is not a readable .npy file: {why}", file.display()).into()
    };
    let mut seen = Vec::new();
    // Appends up to `n` more bytes of the file to `seen` (fewer at its end).
    let mut read = |seen: &mut Vec<u8>, n: u64| f.by_ref().take(n).read_to_end(seen);
    if read(&mut seen, 8).is_err() || seen.len() < 8 || !seen.starts_with(b"\x93NUMPY") {
        return Ok(seen); // npyz reports it
    }
    let len_size = match (seen[6], seen[7]) {
        (1, 0) => 2,
        (2, 0) | (3, 0) => 4,
        _ => return Ok(seen), // npyz reports the version
    };
    if !matches!(read(&mut seen, len_size), Ok(n) if n as u64 == len_size) {
        return Err(refuse("the file ends in its header length".into()));
    }
    let mut le = [0u8; 4];
    le[..seen.len() - 8].copy_from_slice(&seen[8..]);
    let len = u64::from(u32::from_le_bytes(le));
    if len > MAX_HEADER_LEN {
        return Err(refuse(format!(
            "its header is {len} bytes long (load reads headers of at most {MAX_HEADER_LEN})"
        )));
    }
    let got = read(&mut seen, len).map_err(|e| refuse(format!("reading its header: {e}")))?;
    if got as u64 != len {
        return Err(refuse(format!(
            "its header is cut short ({got} of the {len} bytes it declares)"
        )));
    }
    // As npyz: one line end dropped, UTF-8, a Python literal.
    let header = &seen[seen.len() - got..];
    let header = header.strip_suffix(b"\n").unwrap_or(header);
    let text = std::str::from_utf8(header).map_err(|_| refuse("its header is not UTF-8".into()))?;
    let brackets = brackets_opened(text);
    if brackets > MAX_HEADER_BRACKETS {
        let known: Vec<_> = Dtype::ALL.iter().map(|d| d.numpy_name()).collect();
        return Err(format!(
            "{}: unsupported .npy header: it opens {brackets} brackets, as a structured dtype's does (streams hold {}, whose headers open {MAX_HEADER_BRACKETS}: the dict and the shape)",
            file.display(),
            known.join(", ")
        )
        .into());
    }
    let value: py_literal::Value = text.parse().map_err(|e: py_literal::ParseError| {
        // A syntax error quotes the whole line it is in (up to the whole header): keep its
        // first line (the position) and what was expected.
        let e = e.to_string();
        let mut lines = e.lines().map(str::trim);
        let first = lines.next().unwrap_or_default();
        let expected = lines.filter(|l| l.starts_with('='));
        let why: String = std::iter::once(first)
            .chain(expected)
            .collect::<Vec<_>>()
            .join(" ");
        refuse(format!(
            "its header is not a Python literal: {}",
            why.chars().take(300).collect::<String>()
        ))
    })?;
    let py_literal::Value::Dict(entries) = value else {
        return Err(refuse("its header is not a Python dict".into()));
    };
    for (key, value) in &entries {
        if key.as_string().map(String::as_str) != Some("shape") {
            continue;
        }
        let (py_literal::Value::Tuple(dims) | py_literal::Value::List(dims)) = value else {
            return Err(refuse("its shape is not a tuple".into()));
        };
        let dims = dims
            .iter()
            .map(|d| match d {
                py_literal::Value::Integer(n) => u64::try_from(n).map_err(|_| {
                    refuse(if n.to_string().starts_with('-') {
                        "its shape has a negative dimension".into()
                    } else {
                        "its shape has a dimension larger than 64 bits".into()
                    })
                }),
                _ => Err(refuse(
                    "its shape holds something other than integers".into(),
                )),
            })
            .collect::<Fallible<Vec<u64>>>()?;
        let mut nonzero = dims.iter().filter(|&&d| d != 0);
        if nonzero.try_fold(1u64, |n, &d| n.checked_mul(d)).is_none() {
            let shown: Vec<String> = dims.iter().map(u64::to_string).collect();
            return Err(refuse(format!(
                "its shape ({}) has dimensions that multiply past 64 bits",
                shown.join(", ")
            )));
        }
    }
    Ok(seen)
}

/// `shmstream load NAME FILE.npy`.
pub(crate) fn load(name: &str, file: &Path, frame_id: Option<u64>, timeout: Duration) -> Fallible {
    let opened = File::open(file).map_err(|e| format!("cannot open {}: {e}", file.display()))?;
    // A regular file's length says before its data is read whether it holds all of it.
    let file_len = opened
        .metadata()
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    let mut reader = BufReader::new(opened);
    let seen = check_header(file, &mut reader)?;
    let data_at = seen.len() as u64;
    let npy = npyz::NpyFile::new(Cursor::new(seen).chain(reader))
        .map_err(|e| format!("{} is not a readable .npy file: {e}", file.display()))?;
    let dtype = stream_dtype(file, &npy.dtype())?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    if shape.is_empty() || shape.contains(&0) {
        return Err(format!(
            "{} holds {}: a stream needs at least one dimension and no empty ones",
            file.display(),
            describe(dtype, &shape)
        )
        .into());
    }
    let fortran = npy.order() == Order::Fortran;

    // Open the stream, or create it with the file's shape and dtype.
    let mismatch = |s: &Stream| -> Fallible {
        if s.shape() != shape.as_slice() || s.dtype() != dtype {
            return Err(format!(
                "shape/dtype mismatch: stream '{name}' holds {}, but {} holds {}: load it under another name, or remove it first with {}",
                describe(s.dtype(), s.shape()),
                file.display(),
                describe(dtype, &shape),
                shmstream::name::unlink_remedy(name)
            )
            .into());
        }
        Ok(())
    };
    // The shape as a creation would check it, before the data is read or a stream opened:
    // more than 19 dimensions, or more bytes than this machine can map, are no stream's.
    let bytes = shmstream::check_shape(name, &shape, dtype)
        .map_err(|e| format!("{} holds {}: {e}", file.display(), describe(dtype, &shape)))?;
    // Every wait (the opens, a create's wait for the name's lock, the write lock) takes from
    // one budget of `timeout`: beside a stalled creation the command ends within it.
    let left = Cell::new(timeout);
    // A stream already there is checked before the data is read: a file of another shape
    // (a huge one included) is refused by its header, before anything is allocated.
    match within(&left, |wait| Stream::open_within(name, wait)) {
        Ok(s) => mismatch(&s)?,
        Err(Error::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    // A regular file shorter than its header declares is no file to read first.
    if file_len.is_some_and(|len| len.saturating_sub(data_at) < bytes as u64) {
        return Err(read_error(
            file,
            dtype,
            &shape,
            bytes,
            &io::ErrorKind::UnexpectedEof.into(),
        )
        .into());
    }
    // Opened (or created) only once the data was read: a file that fails to read creates
    // nothing. (Opened again: the stream may have been replaced meanwhile.)
    let open_or_create = || -> Fallible<(Stream, bool)> {
        let open = || within(&left, |wait| Stream::open_within(name, wait));
        let (stream, created) = match open() {
            Ok(s) => (s, false),
            Err(Error::NotFound { .. }) => {
                let mut options = StreamOptions::new(name);
                options.shape(&shape).dtype(dtype);
                match within(&left, |wait| options.create_within(wait)) {
                    Ok(s) => (s, true),
                    Err(Error::AlreadyExists { .. }) => (open()?, false),
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        mismatch(&stream)?;
        stream.set_default_timeout(left.get());
        Ok((stream, created))
    };
    with_dtype!(dtype, T => {
        // Where memory runs out, a typed error, not an abort: a regular file's data (its
        // length checked above) in room made before it is read; a pipe's in room grown as
        // it is read, so a cut-short one takes no more than it holds.
        let n = bytes / dtype.itemsize();
        let mut data: Vec<T> = match file_len {
            Some(_) => shmstream::frame_buffer_room(name, n)?,
            None => Vec::new(),
        };
        T::read_into(npy, &mut data, n).map_err(|e| read_error(file, dtype, &shape, bytes, &e))?;
        let (fortran, c_order) = match fortran {
            true => {
                let a = ArrayD::from_shape_vec(IxDyn(&shape).f(), data)
                    .map_err(|e| format!("{}: {e}", file.display()))?;
                (Some(a), Vec::new())
            }
            false => (None, data),
        };
        let (stream, created) = open_or_create()?;
        // The write lock is taken first (a stop signal still ends that wait), then the stop
        // signals are held off until the frame is whole: one that killed the tool mid-copy
        // would leave the stream unreadable until the next write.
        let lock = within(&left, |wait| stream.lock(Some(wait)))?;
        let held = HeldSignals::hold()?;
        let written = match (&fortran, frame_id) {
            (Some(a), Some(id)) => stream.write_frame(a, id),
            (Some(a), None) => stream.write(a),
            (None, Some(id)) => stream.write_slice_frame(&c_order, id),
            (None, None) => stream.write_slice(&c_order),
        };
        drop(lock);
        match written {
            // Said before a stop signal held off meanwhile ends the tool: kept blocked, it
            // never does, and the tool exits 1 with the error.
            Err(e) => {
                std::mem::forget(held);
                return Err(e.into());
            }
            Ok(_) => drop(held),
        }
        term::outln!(
            "loaded {} into '{}'{}: {} (count {})",
            term::printable(&file.display().to_string()),
            term::printable(name),
            if created { " (created)" } else { "" },
            describe(dtype, &shape),
            stream.count()
        )?;
    });
    Ok(())
}

/// The stop signals ([`crate::watch::STOP_SIGNALS`]) blocked in this thread (the tool's
/// only one) while it lives: one that comes meanwhile takes effect when it is dropped.
struct HeldSignals(libc::sigset_t);

impl HeldSignals {
    fn hold() -> Fallible<HeldSignals> {
        // SAFETY: zeroed sigsets are valid values for sigemptyset to initialize; the old
        // mask is written into a local.
        let (rc, old) = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in crate::watch::STOP_SIGNALS {
                libc::sigaddset(&mut set, sig);
            }
            let mut old: libc::sigset_t = std::mem::zeroed();
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            (rc, old)
        };
        if rc != 0 {
            let e = io::Error::from_raw_os_error(rc);
            return Err(format!("blocking stop signals for the write: {e}").into());
        }
        Ok(HeldSignals(old))
    }
}

impl Drop for HeldSignals {
    fn drop(&mut self) {
        // SAFETY: restores the mask `hold` saved.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}

/// Runs `wait` with the time `left`, then takes the time it ran from `left`.
fn within<R>(left: &Cell<Duration>, wait: impl FnOnce(Duration) -> R) -> R {
    let start = Instant::now();
    let r = wait(left.get());
    left.set(left.get().saturating_sub(start.elapsed()));
    r
}

/// The elements of a `.npy` file, as numpy reads them.
trait FromNpy: npyz::Deserialize + Sized {
    /// Appends the file's `n` elements to `data`, growing it where its room runs out
    /// ([`grow`]). A file that ends before them is `UnexpectedEof`.
    fn read_into(npy: npyz::NpyFile<impl Read>, data: &mut Vec<Self>, n: usize) -> io::Result<()> {
        let mut read = npy
            .data::<Self>()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        for _ in 0..n {
            grow(data, n)?;
            data.push(read.next().ok_or(io::ErrorKind::UnexpectedEof)??);
        }
        Ok(())
    }
}

/// Room in `data` for one more of its `n` elements: a pipe's data, whose length is known
/// only once read, doubled from a mebi-element (so a cut-short one holds at most about twice
/// what it sent), without aborting where memory runs out (`ENOMEM`).
fn grow<T>(data: &mut Vec<T>, n: usize) -> io::Result<()> {
    if data.len() < data.capacity() {
        return Ok(());
    }
    let more = data.len().max(1 << 20).min(n - data.len());
    data.try_reserve_exact(more)
        .map_err(|_| io::Error::from_raw_os_error(libc::ENOMEM))
}

macro_rules! from_npy {
    ($($t:ty),*) => {$(impl FromNpy for $t {})*};
}

from_npy!(
    i8, i16, i32, i64, u8, u16, u32, u64, f16, f32, f64, Complex32, Complex64
);

/// npyz refuses a bool byte other than 0 or 1; numpy (`np.load`) reads any nonzero byte as
/// True (a uint8 mask viewed as bool holds 255), and so does `load`, storing 0 or 1.
impl FromNpy for bool {
    fn read_into(npy: npyz::NpyFile<impl Read>, data: &mut Vec<bool>, n: usize) -> io::Result<()> {
        let mut r = npy.into_inner();
        let mut chunk = [0u8; 1 << 16];
        while data.len() < n {
            let bytes = &mut chunk[..(n - data.len()).min(1 << 16)];
            r.read_exact(bytes)?;
            for &byte in bytes.iter() {
                grow(data, n)?;
                data.push(byte != 0);
            }
        }
        Ok(())
    }
}

/// The error of reading the data of `file`, whose header declares `dtype` and `shape`
/// (`bytes` of data): a file that ends before them is said to be cut short (npyz says
/// "failed to fill whole buffer").
fn read_error(file: &Path, dtype: Dtype, shape: &[usize], bytes: usize, e: &io::Error) -> String {
    if e.raw_os_error() == Some(libc::ENOMEM) {
        return format!(
            "reading {}: no memory for its {bytes} bytes of data: free some memory (or raise \
             the process's limit, `ulimit -v`, where one is set)",
            file.display()
        );
    }
    if e.kind() != io::ErrorKind::UnexpectedEof {
        return format!("reading {}: {e}", file.display());
    }
    format!(
        "{} is cut short: its header declares {} ({bytes} bytes of data) but the file ends before them; write it again",
        file.display(),
        describe(dtype, shape)
    )
}

/// `shmstream dump NAME [-o FILE.npy]`.
pub(crate) fn dump(name: &str, output: Option<&Path>) -> Fallible {
    let stream = Stream::open_readonly(name)?;
    with_dtype!(stream.dtype(), T => {
        let p = stream.read_publication::<T>()?;
        let data = p.payload.as_slice().ok_or("internal: snapshot not contiguous")?;
        match output {
            Some(path) => {
                // `-o -` is descriptor 1 as it is (a file named `-` is `-o ./-`).
                let to_stdout = path == Path::new("-");
                if to_stdout && io::stdout().is_terminal() {
                    return Err(format!("cannot dump '{name}' with -o -: stdout is a terminal: redirect or pipe it (-o - writes the .npy's bytes)").into());
                }
                // A stop signal fails the write, which then leaves a file as it was.
                crate::watch::install_handlers()?;
                let (written, to) = match to_stdout {
                    true => (
                        write_npy(None, stream.shape(), data).map_err(|e| format!("dumping '{name}' to standard output: {e}"))?,
                        "standard output".to_string(),
                    ),
                    false => (
                        write_npy(Some(path), stream.shape(), data).map_err(|e| format!("dumping '{name}' to {}: {e}", path.display()))?,
                        term::printable(&path.display().to_string()).into_owned(),
                    ),
                };
                let line = format!("dumped '{}' ({}, count {}) to {to}", term::printable(name), describe(stream.dtype(), stream.shape()), p.info.count);
                // Lines for a person, never in the .npy: the status line on stdout unless the
                // .npy went there (`-o -`, `-o /dev/stdout`, `-o F > F`: it would follow the
                // bytes, or overwrite the header), then on stderr unless it went there too
                // (`2>&1`); a warning on stderr unless the .npy went there.
                let on_stderr = is_open_on(&written, io::stderr().as_fd());
                // The stdout line is cut short by a stop as the .npy's bytes are (a reader
                // that stopped reading holds it up).
                if !is_open_on(&written, io::stdout().as_fd()) {
                    let out = term::unbuffered_stdout()?;
                    term::write_or_stop(&out, &format!("{line}\n"), crate::watch::stop_requested)?;
                } else if !on_stderr {
                    term::errln!("{line}");
                }
                if p.info.count == 0 && !on_stderr {
                    term::errln!("shmstream: warning: stream '{}' was never written: the file holds its initial zeros", term::printable(name));
                }
            }
            None => {
                let s = T::summarize(data);
                term::outln!("name:   {}", term::printable(name))?;
                term::outln!("shape:  {:?}", stream.shape())?;
                term::outln!("dtype:  {}", stream.dtype())?;
                term::outln!("count:  {}", p.info.count)?;
                term::outln!("min:    {}", s.min)?;
                term::outln!("max:    {}", s.max)?;
                term::outln!("mean:   {}", s.mean)?;
            }
        }
    });
    Ok(())
}

/// Whether `fd` is open on the file `written` describes (same device and inode): the pipe
/// or terminal `/dev/stdout` opens, or the file a shell's `>` opened. A descriptor that
/// cannot be duplicated or stat'ed counts as another file.
fn is_open_on(written: &Metadata, fd: BorrowedFd<'_>) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(fd) = fd.try_clone_to_owned() else {
        return false;
    };
    File::from(fd)
        .metadata()
        .is_ok_and(|m| m.dev() == written.dev() && m.ino() == written.ino())
}

/// Writes `data` as a `.npy` to `path` (see [`write_whole`]), or to stdout when `None`
/// (see [`write_stdout`]); returns what it wrote to.
fn write_npy<T: npyz::AutoSerialize + Copy>(
    path: Option<&Path>,
    shape: &[usize],
    data: &[T],
) -> io::Result<Metadata> {
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let write = |out: &mut dyn Write| {
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&shape)
            .writer(out)
            .begin_nd()?;
        w.extend(data.iter().copied())?;
        w.finish()
    };
    let stopped = &crate::watch::stop_requested;
    match path {
        Some(path) => write_whole(path, stopped, write),
        None => write_stdout(stopped, write),
    }
}

/// Writes to descriptor 1 as it is: nothing opened or truncated, so what the file or pipe
/// already holds stays (`{ echo header; shmstream dump NAME -o -; } > F`, `>> F`), and a
/// socket works. A failure leaves what it took so far, cut short: its error says so once a
/// byte went out.
fn write_stdout(
    stopped: &dyn Fn() -> bool,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<Metadata> {
    if stopped() {
        return Err(Stoppable::stop_error());
    }
    let file = term::Out::of(io::stdout().as_fd())
        .map_err(|e| io::Error::new(e.kind(), format!("standard output cannot be written: {e}")))?;
    let meta = file.metadata()?;
    let mut out = BufWriter::new(Stoppable::new(file, stopped));
    let wrote = write(&mut out).and_then(|()| out.flush());
    // Not flushed again on an error (as a dropped BufWriter would be).
    let (Stoppable { file, written, .. }, _) = out.into_parts();
    let synced = wrote.and_then(|()| match meta.is_file() {
        true => file
            .sync_data()
            .map_err(|e| io::Error::new(e.kind(), format!("putting it on the disk: {e}"))),
        false => Ok(()),
    });
    match synced {
        Err(e) if written > 0 => Err(io::Error::new(
            e.kind(),
            format!("{e}; what it took is a cut-short .npy: discard it"),
        )),
        r => r.map(|()| meta),
    }
}

/// Writes `path` whole or not at all; returns the metadata of the file it wrote (fstat of
/// its descriptor).
///
/// A regular file, new or existing (through any symlinks), is written to a temporary file
/// beside it (`.NAME.shmstream-dump-PID-N.partial`, created exclusively, given the existing
/// file's mode and, where allowed, owner), put on the disk (`fdatasync`: NFS reports ENOSPC
/// and quotas, and a disk writeback EIO, only then or at close, never to a write) and
/// renamed over `path`. When anything fails before the rename (as every write does once
/// `stopped()` says a stop signal came, and a stop during the sync) the temporary file is
/// removed and `path` is left as it was: an existing file keeps its bytes, a new one is not
/// made. A rename refused (a bind-mounted file, `EBUSY`) leaves `path` as it was and the
/// whole dump in the temporary file, named in the error. (The file replaced is a new inode:
/// a second hard link keeps the old bytes, and ACLs, extended attributes and security labels
/// are not copied; a symlink keeps pointing at the new file.)
///
/// What is not a regular file (`/dev/stdout` to a terminal or pipe, a FIFO), a file this
/// process already has open as stdout or stderr (`-o F > F`), a new file behind a dangling
/// symlink or in a directory this user cannot create files in, and another user's file in
/// a sticky directory not ours (`/tmp`: writable, but not ours to replace) is written in
/// place; when that fails a regular file is emptied through its handle and its name
/// removed if it is the file's only one (a cut-short `.npy` keeps its full header and
/// would read as a whole dump).
fn write_whole(
    path: &Path,
    stopped: &dyn Fn() -> bool,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<Metadata> {
    // A stop before anything is written leaves an existing file as it was.
    if stopped() {
        return Err(Stoppable::stop_error());
    }
    // A name whose last part is empty, '.' or '..' (`DIR/`, `DIR/.`, `..`) is a directory's,
    // existing or not: no file to write (a temporary beside it was named after the
    // directory, written whole and left when the rename onto the directory failed).
    let name = path.as_os_str().as_encoded_bytes();
    let last = name.rsplit(|&b| b == b'/').next().unwrap_or_default();
    if !name.is_empty() && matches!(last, b"" | b"." | b"..") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is a directory's name: give -o a file's name (such as DIR/NAME.npy)",
                path.display()
            ),
        ));
    }
    let existing = match std::fs::metadata(path) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let replaced = match &existing {
        // A file this user may not write is refused (as writing it in place was), not
        // replaced.
        Some(m)
            if m.is_file()
                && !is_open_on(m, io::stdout().as_fd())
                && !is_open_on(m, io::stderr().as_fd()) =>
        {
            // An existing file on a read-only file system is said as a new one there is.
            drop(std::fs::OpenOptions::new().write(true).open(path).map_err(
                |e| match e.kind() {
                    io::ErrorKind::ReadOnlyFilesystem => dir_refusal(dir_of(path), e),
                    _ => e,
                },
            )?);
            let real = std::fs::canonicalize(path)?;
            let dir = std::fs::metadata(dir_of(&real))?;
            // SAFETY: geteuid takes nothing and cannot fail.
            let me = unsafe { libc::geteuid() };
            (!sticky_keeps_from_replacing(dir.mode(), dir.uid(), m.uid(), me)).then_some(real)
        }
        Some(_) => None,
        None if path.symlink_metadata().is_ok() => None,
        None => Some(path.to_path_buf()),
    };
    if let Some(real) = replaced
        && let Some(temp) = TempBeside::create(&real, existing.as_ref())?
    {
        return temp.write_and_replace(&real, stopped, write);
    }
    write_in_place(path, stopped, write)
}

/// The directory a file's name is in (`.` for a bare name).
fn dir_of(file: &Path) -> &Path {
    file.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A failure to create a file in `dir` said of the directory, with the remedy, where it is
/// the directory's (missing, read-only, not this user's to write); any other as it is.
fn dir_refusal(dir: &Path, e: io::Error) -> io::Error {
    let there = dir.is_dir();
    let dir = dir.display();
    let said = match e.kind() {
        io::ErrorKind::NotFound if !there => {
            format!("directory {dir} does not exist: create it, or give another -o")
        }
        // The directory is there, but its file system makes no new files (`/proc`).
        io::ErrorKind::NotFound => format!(
            "cannot create a file in directory {dir} ({e}): its file system makes no new \
             files there: give another -o"
        ),
        io::ErrorKind::ReadOnlyFilesystem => {
            format!("directory {dir} is on a read-only file system: give another -o")
        }
        io::ErrorKind::PermissionDenied => format!(
            "this user may not create files in directory {dir}: it (or a directory above it) \
             cannot be searched or written by this user: give another -o"
        ),
        _ => return e,
    };
    io::Error::new(e.kind(), said)
}

/// Whether a sticky directory (mode `dir_mode`, owned by `dir_uid`) keeps user `me` from
/// renaming over a file of `file_uid` there, though the file's mode lets `me` write it: only
/// the file's owner, the directory's, and root may.
fn sticky_keeps_from_replacing(dir_mode: u32, dir_uid: u32, file_uid: u32, me: u32) -> bool {
    dir_mode & libc::S_ISVTX != 0 && me != 0 && me != file_uid && me != dir_uid
}

/// A temporary file beside the file it will replace, removed on drop unless renamed.
struct TempBeside {
    path: std::path::PathBuf,
    file: Option<File>,
}

impl TempBeside {
    /// Creates the temporary file for `real` (`existing`: its metadata, when it exists);
    /// `None` where this user may not create files in its directory.
    fn create(real: &Path, existing: Option<&Metadata>) -> io::Result<Option<TempBeside>> {
        use std::ffi::{OsStr, OsString};
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
        let Some(name) = real.file_name() else {
            return Ok(None);
        };
        let dir = dir_of(real);
        // Within NAME_MAX (255 bytes) whatever the target's name.
        let short = OsStr::from_bytes(&name.as_bytes()[..name.len().min(160)]);
        let mut n = 0;
        loop {
            n += 1;
            let mut temp = OsString::from(".");
            temp.push(short);
            temp.push(format!(
                ".shmstream-dump-{}-{n}.partial",
                std::process::id()
            ));
            let path = dir.join(temp);
            let file = match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o666)
                .open(&path)
            {
                Ok(f) => f,
                // A name left by a dump killed with its process id: the next one.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 100 => continue,
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Ok(None),
                Err(e) => return Err(dir_refusal(dir, e)),
            };
            let temp = TempBeside {
                path,
                file: Some(file),
            };
            if let (Some(m), Some(file)) = (existing, &temp.file) {
                // The owner only where allowed (root, or a group of this user's); the mode
                // after it (a change of owner clears set-user-ID).
                let _ = std::os::unix::fs::fchown(file, Some(m.uid()), Some(m.gid()))
                    .or_else(|_| std::os::unix::fs::fchown(file, None, Some(m.gid())));
                file.set_permissions(std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
            }
            return Ok(Some(temp));
        }
    }

    /// Writes the file whole, puts it on the disk and renames it over `real`.
    fn write_and_replace(
        mut self,
        real: &Path,
        stopped: &dyn Fn() -> bool,
        write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<Metadata> {
        let file = self.file.take().expect("created with its file");
        let mut out = BufWriter::new(Stoppable::new(term::Out::own(file), stopped));
        write(&mut out).and_then(|()| out.flush())?;
        let (Stoppable { file, .. }, _) = out.into_parts();
        file.sync_data()
            .map_err(|e| io::Error::new(e.kind(), format!("putting it on the disk: {e}")))?;
        let meta = file.metadata()?;
        drop(file);
        // A stop that came during the sync (long on NFS) fails the dump as one during the
        // write does: `path` left as it was.
        if stopped() {
            return Err(Stoppable::stop_error());
        }
        if let Err(e) = std::fs::rename(&self.path, real) {
            // The dump is whole: kept, and said where, rather than removed.
            let kept = std::mem::take(&mut self.path);
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "replacing it failed: {e}; it is left as it was, and the whole dump is in {}: move it there yourself, or dump to another path",
                    kept.display()
                ),
            ));
        }
        self.path = std::path::PathBuf::new();
        // The rename on the disk too, where the directory can be synced.
        if let Ok(dir) = File::open(dir_of(real)) {
            let _ = dir.sync_all();
        }
        Ok(meta)
    }
}

impl Drop for TempBeside {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// [`write_whole`] in place: `path` truncated first (as `numpy.save` does) and, when the
/// write fails, a regular file emptied and its name removed if it is the file's only one.
fn write_in_place(
    path: &Path,
    stopped: &dyn Fn() -> bool,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<Metadata> {
    use std::os::unix::fs::MetadataExt;
    // An existing file is opened without O_CREAT: `fs.protected_regular` (systemd's default)
    // refuses an O_CREAT open of another user's file in a sticky directory, which is written
    // here.
    let file = match std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
    {
        // A name that is not a symlink is created in its own directory (a dangling symlink's
        // target is elsewhere).
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            File::create(path).map_err(|e| match path.symlink_metadata() {
                Err(_) => dir_refusal(dir_of(path), e),
                Ok(_) => e,
            })?
        }
        opened => opened?,
    };
    let meta = file.metadata()?;
    let mut out = BufWriter::new(Stoppable::new(term::Out::own(file), stopped));
    let mut written = write(&mut out).and_then(|()| out.flush());
    // After a failure, the bytes still buffered are dropped, not written after the
    // truncation.
    let (Stoppable { file, .. }, _unwritten) = out.into_parts();
    if written.is_ok() && meta.is_file() {
        written = file
            .sync_data()
            .map_err(|e| io::Error::new(e.kind(), format!("putting it on the disk: {e}")));
    }
    if written.is_err() && meta.is_file() {
        let _ = file.set_len(0);
        let only_name = std::fs::symlink_metadata(path).is_ok_and(|m| {
            m.is_file() && m.dev() == meta.dev() && m.ino() == meta.ino() && m.nlink() == 1
        });
        if only_name {
            let _ = std::fs::remove_file(path);
        }
    }
    written.map(|()| meta)
}

/// A file whose writes fail once `stopped()` says a stop signal came (checked before each
/// write, and while one waits for a reader that stopped reading, which then holds up
/// nothing: see [`term::Out`]).
struct Stoppable<'a> {
    file: term::Out,
    stopped: &'a dyn Fn() -> bool,
    /// Bytes written so far.
    written: u64,
}

impl<'a> Stoppable<'a> {
    fn new(file: term::Out, stopped: &'a dyn Fn() -> bool) -> Self {
        Stoppable {
            file,
            stopped,
            written: 0,
        }
    }

    fn stop_error() -> io::Error {
        io::Error::other("stopped by a signal before the .npy was whole: dump again")
    }
}

impl Write for Stoppable<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let stopped = self.stopped;
        if stopped() {
            return Err(Self::stop_error());
        }
        let n = self
            .file
            .write_some(buf, &mut || stopped())?
            .ok_or_else(Self::stop_error)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// min / max / mean as printed by `dump` without `-o`.
pub(crate) struct Summary {
    min: String,
    max: String,
    mean: String,
}

trait Summarize: Sized {
    fn summarize(data: &[Self]) -> Summary;
}

/// Whether `v` is printed in scientific notation: finite, non-zero and outside 1e-4..1e15
/// (not as `0.000000000000000000000000000001` or 39 digits).
fn scientific(v: f64) -> bool {
    v != 0.0 && v.is_finite() && !(1e-4..1e15).contains(&v.abs())
}

/// A mean: `nan`, scientific notation (see [`scientific`]), whole numbers with `.0`.
fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if scientific(v) {
        format!("{v:e}")
    } else if v == v.trunc() {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

/// An element as `dump` prints it: floats far from 1 in scientific notation.
trait Shown: Copy {
    fn shown(self) -> String;
}

macro_rules! shown {
    (as_is: $($t:ty),*; float: $($f:ty),*) => {
        $(impl Shown for $t {
            fn shown(self) -> String {
                self.to_string()
            }
        })*
        $(impl Shown for $f {
            fn shown(self) -> String {
                if scientific(f64::from(self)) { format!("{self:e}") } else { self.to_string() }
            }
        })*
    };
}

shown!(as_is: i8, i16, i32, i64, u8, u16, u32, u64, bool; float: f16, f32, f64);

macro_rules! real_summary {
    ($($t:ty => |$v:ident| $f:expr),* $(,)?) => {$(
        impl Summarize for $t {
            fn summarize(data: &[$t]) -> Summary {
                let to_f64 = |$v: $t| -> f64 { $f };
                let (mut min, mut max, mut sum, mut nan) = (data[0], data[0], 0.0f64, false);
                for &x in data {
                    let f = to_f64(x);
                    nan |= f.is_nan();
                    if x < min { min = x; }
                    if x > max { max = x; }
                    sum += f;
                }
                if nan {
                    // numpy's min/max/mean all propagate NaN.
                    return Summary { min: "nan".into(), max: "nan".into(), mean: "nan".into() };
                }
                Summary { min: min.shown(), max: max.shown(), mean: fmt_f64(sum / data.len() as f64) }
            }
        }
    )*};
}

real_summary!(
    i8 => |v| f64::from(v), i16 => |v| f64::from(v), i32 => |v| f64::from(v), i64 => |v| v as f64,
    u8 => |v| f64::from(v), u16 => |v| f64::from(v), u32 => |v| f64::from(v), u64 => |v| v as f64,
    f16 => |v| v.to_f64(), f32 => |v| f64::from(v), f64 => |v| v,
    bool => |v| f64::from(u8::from(v)),
);

macro_rules! complex_summary {
    ($($t:ty),*) => {$(
        impl Summarize for $t {
            fn summarize(data: &[$t]) -> Summary {
                let (mut lo, mut hi, mut nan) = (f64::INFINITY, f64::NEG_INFINITY, false);
                let (mut re, mut im) = (0.0f64, 0.0f64);
                for z in data {
                    let m = f64::from(z.norm());
                    nan |= m.is_nan();
                    lo = lo.min(m);
                    hi = hi.max(m);
                    re += f64::from(z.re);
                    im += f64::from(z.im);
                }
                if nan {
                    // As numpy's min/max of |z|, NaN propagates (`f64::min` skips it).
                    (lo, hi) = (f64::NAN, f64::NAN);
                }
                let (re, im) = (re / data.len() as f64, im / data.len() as f64);
                let sign = if im.is_sign_negative() && !im.is_nan() { "-" } else { "+" };
                Summary { min: format!("{} (|z|)", fmt_f64(lo)), max: format!("{} (|z|)", fmt_f64(hi)), mean: format!("{}{sign}{}j", fmt_f64(re), fmt_f64(im.abs())) }
            }
        }
    )*};
}

complex_summary!(Complex32, Complex64);

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    /// A scratch directory, removed on drop.
    struct Scratch(PathBuf);
    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let d =
                std::env::temp_dir().join(format!("shmstream-npy-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&d).unwrap();
            Scratch(d)
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A name ending in '/' (a directory there or not) is refused before anything is
    /// written: no temporary is left beside it.
    #[test]
    fn a_name_ending_in_a_slash_is_refused_and_leaves_no_file() {
        let dir = Scratch::new("slash");
        std::fs::create_dir(dir.0.join("there")).unwrap();
        for name in ["absent/", "there/", "absent/.", "there/.."] {
            let target = PathBuf::from(format!("{}/{name}", dir.0.display()));
            let e = write_whole(&target, &|| false, |out| out.write_all(b"new")).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
            assert!(e.to_string().contains("is a directory's name"), "{e}");
        }
        assert_eq!(names(&dir.0), ["there"]);
        assert!(names(&dir.0.join("there")).is_empty());
    }

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A stop signal that came before anything was written leaves an existing file as it
    /// was, and no temporary file.
    #[test]
    fn a_stop_before_the_write_leaves_an_existing_file_alone() {
        let dir = Scratch::new("stopped-first");
        let target = dir.0.join("frame.npy");
        std::fs::write(&target, b"earlier").unwrap();
        let e = write_whole(&target, &|| true, |out| out.write_all(b"new")).unwrap_err();
        assert!(e.to_string().contains("stopped by a signal"), "{e}");
        assert_eq!(std::fs::read(&target).unwrap(), b"earlier");
        assert_eq!(names(&dir.0), ["frame.npy"]);
    }

    /// A stop that comes once the bytes are written (during the sync) fails the dump before
    /// the rename: an existing file keeps its bytes, a new one is not made, and no temporary
    /// file is left.
    #[test]
    fn a_stop_after_the_write_leaves_an_existing_file_alone() {
        let dir = Scratch::new("stopped-last");
        let target = dir.0.join("frame.npy");
        std::fs::write(&target, b"earlier").unwrap();
        for path in [&target, &dir.0.join("fresh.npy")] {
            let written = std::cell::Cell::new(false);
            let e = write_whole(path, &|| written.get(), |out| {
                out.write_all(b"new")?;
                out.flush()?;
                written.set(true);
                Ok(())
            })
            .unwrap_err();
            assert!(e.to_string().contains("stopped by a signal"), "{e}");
        }
        assert_eq!(std::fs::read(&target).unwrap(), b"earlier");
        assert_eq!(names(&dir.0), ["frame.npy"]);
    }

    /// A dump through a dangling symlink makes the file it points at, and the symlink
    /// stays.
    #[test]
    fn a_dump_through_a_dangling_symlink_makes_its_target() {
        let dir = Scratch::new("dangling");
        let link = dir.0.join("link.npy");
        std::os::unix::fs::symlink("target.npy", &link).unwrap();
        write_whole(&link, &|| false, |out| out.write_all(b"new")).unwrap();
        assert!(link.symlink_metadata().unwrap().is_symlink());
        assert_eq!(std::fs::read(dir.0.join("target.npy")).unwrap(), b"new");
        assert_eq!(names(&dir.0), ["link.npy", "target.npy"]);
    }

    /// Another user's file in a sticky directory not ours is written in place: a rename over
    /// it would be refused (EPERM) after the whole dump was written.
    #[test]
    fn a_sticky_directory_keeps_only_others_files_from_being_replaced() {
        let (sticky, plain) = (0o1777, 0o777);
        let (me, other, root) = (1000, 1001, 0);
        assert!(sticky_keeps_from_replacing(sticky, root, other, me));
        assert!(!sticky_keeps_from_replacing(plain, root, other, me));
        assert!(
            !sticky_keeps_from_replacing(sticky, root, me, me),
            "my file"
        );
        assert!(
            !sticky_keeps_from_replacing(sticky, me, other, me),
            "my directory"
        );
        assert!(
            !sticky_keeps_from_replacing(sticky, other, other, root),
            "root"
        );
    }

    /// A write that fails after its bytes reached the disk leaves an existing file with its
    /// old bytes, a new one unmade, and no temporary file: a cut-short `.npy` would read as
    /// a whole one, and the old one was data.
    #[test]
    fn a_failed_write_leaves_an_existing_file_as_it_was() {
        let dir = Scratch::new("failed");
        let target = dir.0.join("frame.npy");
        let fresh = dir.0.join("fresh.npy");
        std::fs::write(&target, b"earlier").unwrap();
        for path in [&target, &fresh] {
            let e = write_whole(path, &|| false, |out| {
                // More than BufWriter holds: the bytes reach the file.
                out.write_all(&[0u8; 100_000])?;
                Err(io::Error::other("the disk is full"))
            })
            .unwrap_err();
            assert_eq!(e.to_string(), "the disk is full");
        }
        assert_eq!(std::fs::read(&target).unwrap(), b"earlier");
        assert_eq!(
            names(&dir.0),
            ["frame.npy"],
            "a new or temporary file is left"
        );
    }

    /// Through a symlink or a second hard link, a failed write leaves the file as it was.
    #[test]
    fn a_failed_write_through_a_link_leaves_the_file_alone() {
        let dir = Scratch::new("linked");
        let real = dir.0.join("real.npy");
        let soft = dir.0.join("soft.npy");
        let hard = dir.0.join("hard.npy");
        std::fs::write(&real, b"earlier").unwrap();
        std::os::unix::fs::symlink("real.npy", &soft).unwrap();
        std::fs::hard_link(&real, &hard).unwrap();
        for via in [&soft, &hard] {
            write_whole(via, &|| false, |out| {
                out.write_all(&[1u8; 100_000])?;
                Err(io::Error::other("the disk is full"))
            })
            .unwrap_err();
            assert!(soft.symlink_metadata().unwrap().is_symlink());
            assert_eq!(std::fs::read(&real).unwrap(), b"earlier", "via {via:?}");
            assert_eq!(std::fs::read(&hard).unwrap(), b"earlier", "via {via:?}");
            assert_eq!(names(&dir.0), ["hard.npy", "real.npy", "soft.npy"]);
        }
    }

    /// A target whose name is as long as a name may be gets a temporary name that fits.
    #[test]
    fn a_dump_to_a_name_of_255_bytes_is_written() {
        let dir = Scratch::new("long");
        let target = dir.0.join(format!("{}.npy", "é".repeat(125)));
        write_whole(&target, &|| false, |out| out.write_all(b"new")).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(names(&dir.0).len(), 1);
    }

    /// Brackets in a plain string (a datetime dtype's `'<M8[ns]'`) are not the header's
    /// nesting; with any other string every bracket counts.
    #[test]
    fn brackets_in_plain_strings_are_not_counted() {
        let plain = "{'descr': '<M8[ns]', 'fortran_order': False, 'shape': (3,), }";
        assert_eq!(brackets_opened(plain), 2);
        assert_eq!(brackets_opened(r#"{"a(": '"[', 'b': ("{",)}"#), 2);
        assert_eq!(
            brackets_opened("{'descr': [('a', '<f4')], 'shape': (6,), }"),
            4
        );
        // An escape, a line end, a string left open: all counted.
        assert_eq!(brackets_opened(r"{'\N{'}' (((( ': 1}"), 6);
        assert_eq!(brackets_opened("{'a\n[': ('b[',)}"), 4);
        assert_eq!(brackets_opened("{'a': ('b[',), 'c[[[}"), 6);
    }

    /// A stream's name, unlinked on drop.
    struct Unlink<'a>(&'a str);
    impl Drop for Unlink<'_> {
        fn drop(&mut self) {
            let _ = shmstream::unlink_quiet(self.0);
        }
    }

    /// A file whose shape holds no element is refused before a stream is made.
    #[test]
    fn a_file_of_a_shape_without_elements_is_refused() {
        let dir = Scratch::new("no-elements");
        let name = format!("t-npy-no-elements-{}", std::process::id());
        let _u = Unlink(&name);
        let file = dir.0.join("empty.npy");
        for shape in ["()", "(0, 3)"] {
            let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
            std::fs::write(&file, npy_header(1, &header, 118)).unwrap();
            let e = load(&name, &file, None, Duration::from_secs(10)).unwrap_err();
            assert!(
                e.to_string()
                    .ends_with("a stream needs at least one dimension and no empty ones"),
                "{shape}: {e}"
            );
        }
        assert!(matches!(
            Stream::open_readonly(&name),
            Err(Error::NotFound { .. })
        ));
    }

    /// A file holding bytes past the data its header declares is loaded (as numpy reads it);
    /// one holding fewer is cut short.
    #[test]
    fn a_file_with_bytes_past_its_data_is_loaded() {
        let dir = Scratch::new("past-data");
        let name = format!("t-npy-past-data-{}", std::process::id());
        let _u = Unlink(&name);
        let header = "{'descr': '|u1', 'fortran_order': False, 'shape': (3,), }";
        let mut bytes = npy_header(1, header, 118);
        bytes.extend_from_slice(&[1, 2, 3, 4]);
        let file = dir.0.join("frame.npy");
        std::fs::write(&file, &bytes).unwrap();
        load(&name, &file, None, Duration::from_secs(10)).unwrap();
        let mut raw = [0u8; 3];
        let s = Stream::open_readonly(&name).unwrap();
        s.read_publication_into_bytes(&mut raw).unwrap();
        assert_eq!(raw, [1, 2, 3]);
        std::fs::write(&file, &bytes[..bytes.len() - 2]).unwrap();
        let e = load(&name, &file, None, Duration::from_secs(10)).unwrap_err();
        assert!(e.to_string().contains("frame.npy is cut short"), "{e}");
    }

    /// A bool byte other than 0 or 1 reads as True, as numpy reads it: `load` of such a file
    /// (a uint8 mask saved as bool) stores 0 and 1, and `dump` of a stream holding such
    /// bytes (a pyshmem producer's) writes a `.npy` of 0 and 1.
    #[test]
    fn bool_bytes_other_than_0_or_1_load_and_dump_as_true() {
        use std::os::unix::fs::FileExt;
        let dir = Scratch::new("bool");
        let name = format!("t-npy-bool-{}", std::process::id());
        let _u = Unlink(&name);
        let mask = [0u8, 255, 2, 1];
        // A version 1 `.npy`: magic, header length, the header padded to 128 bytes, the data.
        let mut header = "{'descr': '|b1', 'fortran_order': False, 'shape': (4,), }".to_string();
        header.push_str(&" ".repeat(128 - 10 - 1 - header.len()));
        header.push('\n');
        let mut file = b"\x93NUMPY\x01\x00".to_vec();
        file.extend_from_slice(&(header.len() as u16).to_le_bytes());
        file.extend_from_slice(header.as_bytes());
        file.extend_from_slice(&mask);
        let input = dir.0.join("mask.npy");
        std::fs::write(&input, &file).unwrap();
        load(&name, &input, None, Duration::from_secs(10)).unwrap();
        let s = Stream::open_readonly(&name).unwrap();
        let mut raw = [0u8; 4];
        s.read_publication_into_bytes(&mut raw).unwrap();
        assert_eq!(raw, [0, 1, 1, 1], "load stores 0 and 1");

        // The stream's payload as a pyshmem producer leaves it.
        std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/dev/shm/{}", shmstream::name::segment_id(&name)))
            .unwrap()
            .write_all_at(&mask, 0)
            .unwrap();
        let output = dir.0.join("dumped.npy");
        dump(&name, Some(&output)).unwrap();
        let dumped = std::fs::read(&output).unwrap();
        let npy = npyz::NpyFile::new(&dumped[..]).unwrap();
        assert_eq!(npy.into_vec::<bool>().unwrap(), [false, true, true, true]);
    }

    /// A file replaced by a dump keeps its mode, a link to it stays a link, and no
    /// temporary file is left.
    #[test]
    fn a_dump_over_a_file_keeps_its_mode_and_links() {
        let dir = Scratch::new("replaced");
        let real = dir.0.join("real.npy");
        let link = dir.0.join("link.npy");
        std::fs::write(&real, b"earlier").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink("real.npy", &link).unwrap();
        write_whole(&link, &|| false, |out| out.write_all(b"new")).unwrap();
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
        assert!(link.symlink_metadata().unwrap().is_symlink());
        let mode = real.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert_eq!(names(&dir.0), ["link.npy", "real.npy"]);
    }

    /// Each `.npy` type string of a dtype a stream holds, in either byte order, gives that
    /// dtype; any other (a wider float, bytes, a datetime) is refused, naming the file and
    /// the dtypes streams hold.
    #[test]
    fn each_npy_type_string_of_a_stream_dtype_gives_that_dtype() {
        let file = Path::new("in.npy");
        let dtype_of = |descr: &str| stream_dtype(file, &DType::Plain(descr.parse().unwrap()));
        let table = [
            ("i1", Dtype::I8),
            ("i2", Dtype::I16),
            ("i4", Dtype::I32),
            ("i8", Dtype::I64),
            ("u1", Dtype::U8),
            ("u2", Dtype::U16),
            ("u4", Dtype::U32),
            ("u8", Dtype::U64),
            ("f2", Dtype::F16),
            ("f4", Dtype::F32),
            ("f8", Dtype::F64),
            ("b1", Dtype::Bool),
            ("c8", Dtype::Complex64),
            ("c16", Dtype::Complex128),
        ];
        for (code, want) in table {
            for order in ["|", "<", ">"] {
                if order == "|" && want.itemsize() > 1 {
                    continue;
                }
                let descr = format!("{order}{code}");
                assert_eq!(dtype_of(&descr).unwrap(), want, "{descr}");
            }
        }
        for other in ["<f16", "|S4", "<M8[ns]"] {
            let e = dtype_of(other).unwrap_err().to_string();
            assert!(e.starts_with("in.npy: unsupported .npy dtype"), "{e}");
            assert!(e.contains("(streams hold int8, int16, "), "{e}");
        }
    }

    /// A `.npy` header as numpy writes it: the version, the header's length (2 bytes for
    /// version 1, 4 after), the header padded with spaces to `len` bytes, a line end.
    fn npy_header(version: u8, header: &str, len: usize) -> Vec<u8> {
        let mut text = header.to_string();
        text.push_str(&" ".repeat(len - 1 - header.len()));
        text.push('\n');
        let mut file = vec![0x93, b'N', b'U', b'M', b'P', b'Y', version, 0];
        match version {
            1 => file.extend_from_slice(&u16::try_from(len).unwrap().to_le_bytes()),
            _ => file.extend_from_slice(&u32::try_from(len).unwrap().to_le_bytes()),
        }
        file.extend_from_slice(text.as_bytes());
        file
    }

    const PLAIN: &str = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";

    /// `check_header` on a file of `bytes`: what it read, or its error.
    fn checked(bytes: &[u8]) -> Result<Vec<u8>, String> {
        check_header(Path::new("in.npy"), &mut &bytes[..]).map_err(|e| e.to_string())
    }

    /// `bytes` followed by some data.
    fn with_data(bytes: &[u8]) -> Vec<u8> {
        [bytes, b"DATA"].concat()
    }

    /// A header is read whole in each version (a 2-byte length in version 1, 4 in versions
    /// 2 and 3), and none of the data after it; what is no `.npy` at all, or of a version
    /// npyz does not know, is read only as far as its first 8 bytes, for npyz to refuse.
    #[test]
    fn a_header_is_read_whole_in_each_version_and_no_further() {
        for version in [1, 2, 3] {
            let header = npy_header(version, PLAIN, 118);
            assert_eq!(
                checked(&with_data(&header)).unwrap(),
                header,
                "version {version}"
            );
        }
        let unknown = npy_header(4, PLAIN, 118);
        assert_eq!(checked(&unknown).unwrap(), &unknown[..8]);
        let no_magic = with_data(b"\x93NUMPX\x01\x00\x76\x00");
        assert_eq!(checked(&no_magic).unwrap(), &no_magic[..8]);
        assert_eq!(checked(b"\x93NUM").unwrap(), b"\x93NUM");
        assert_eq!(checked(b"\x93NUMPY\x01").unwrap(), b"\x93NUMPY\x01");
        let e = checked(b"\x93NUMPY\x02\x00\x76").unwrap_err();
        assert!(e.ends_with("the file ends in its header length"), "{e}");
        let e = checked(&npy_header(1, PLAIN, 118)[..60]).unwrap_err();
        assert!(
            e.ends_with("its header is cut short (50 of the 118 bytes it declares)"),
            "{e}"
        );
    }

    /// A header of the longest length `load` reads is read; one a byte longer is refused by
    /// its length, before it is read.
    #[test]
    fn a_header_of_the_longest_length_is_read_and_a_longer_one_refused() {
        let longest = usize::try_from(MAX_HEADER_LEN).unwrap();
        let header = npy_header(2, PLAIN, longest);
        assert_eq!(checked(&header).unwrap(), header);
        let e = checked(&npy_header(2, PLAIN, longest + 1)).unwrap_err();
        assert!(
            e.ends_with("its header is 131073 bytes long (load reads headers of at most 131072)"),
            "{e}"
        );
    }

    /// A header opening as many brackets as a plain dtype's (the dict and the shape) is
    /// parsed; one more is refused before it is parsed.
    #[test]
    fn a_header_opening_more_brackets_than_a_plain_dtypes_is_refused() {
        assert!(checked(&npy_header(1, PLAIN, 118)).is_ok());
        let nested = "{'descr': '<f4', 'fortran_order': False, 'shape': [(2, 3)], }";
        let e = checked(&npy_header(1, nested, 118)).unwrap_err();
        assert!(
            e.starts_with("in.npy: unsupported .npy header: it opens 3 brackets"),
            "{e}"
        );
    }

    /// The `shape` entry's dimensions must multiply within 64 bits; the other entries (a
    /// string, a bool) are no shape's.
    #[test]
    fn a_shape_must_multiply_within_64_bits_and_no_other_entry_is_read_as_one() {
        assert!(checked(&npy_header(1, PLAIN, 118)).is_ok());
        let huge = "(4294967296, 4294967296)";
        let shape = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {huge}}}");
        let e = checked(&npy_header(1, &shape, 118)).unwrap_err();
        assert!(
            e.ends_with("has dimensions that multiply past 64 bits"),
            "{e}"
        );
    }

    /// Room for a file's elements grows by a mebi-element at first, then doubles, never past
    /// the `n` the header declares; where there is room left it stays as it is.
    #[test]
    fn room_for_a_pipes_data_grows_by_doubling_up_to_what_its_header_declares() {
        let mut small: Vec<u8> = Vec::new();
        grow(&mut small, 3).unwrap();
        assert_eq!(small.capacity(), 3, "all 3 at once");
        small.push(1);
        grow(&mut small, 3).unwrap();
        assert_eq!(small.capacity(), 3, "room left: unchanged");

        let mega = 1 << 20;
        let mut large: Vec<u8> = Vec::new();
        grow(&mut large, 5 * mega).unwrap();
        assert_eq!(large.capacity(), mega, "a mebi-element first");
        large.resize(mega, 0);
        grow(&mut large, 5 * mega).unwrap();
        assert_eq!(large.capacity(), 2 * mega, "doubled");
        large.push(0);
        grow(&mut large, 5 * mega).unwrap();
        assert_eq!(large.capacity(), 2 * mega, "room left: unchanged");
        large.resize(2 * mega, 0);
        grow(&mut large, 5 * mega).unwrap();
        assert_eq!(large.capacity(), 4 * mega, "doubled again");
        large.resize(4 * mega, 0);
        grow(&mut large, 5 * mega).unwrap();
        assert_eq!(large.capacity(), 5 * mega, "up to what the header declares");
    }

    /// A bool file longer than one chunk of bytes is read whole, each nonzero byte as true.
    #[test]
    fn a_bool_file_longer_than_a_chunk_is_read_whole() {
        let n = (1 << 16) + 5;
        let bytes: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
        let mut file = npy_header(
            1,
            &format!("{{'descr': '|b1', 'fortran_order': False, 'shape': ({n},), }}"),
            118,
        );
        file.extend_from_slice(&bytes);
        let npy = npyz::NpyFile::new(&file[..]).unwrap();
        let mut data = Vec::new();
        bool::read_into(npy, &mut data, n).unwrap();
        let want: Vec<bool> = bytes.iter().map(|&b| b != 0).collect();
        assert_eq!(data, want);
    }

    /// Means and elements far from 1 are written in scientific notation, whole means with
    /// `.0`, and what is not a number as `nan`.
    #[test]
    fn values_far_from_1_are_written_in_scientific_notation() {
        let cases = [
            (0.0, "0.0"),
            (2.0, "2.0"),
            (-2.5, "-2.5"),
            (1e-4, "0.0001"),
            (9e-5, "9e-5"),
            (1e15, "1e15"),
            (-3e20, "-3e20"),
            (f64::INFINITY, "inf"),
            (f64::NAN, "nan"),
        ];
        for (v, shown) in cases {
            assert_eq!(fmt_f64(v), shown, "{v}");
        }
        assert_eq!(1.5e20f32.shown(), "1.5e20");
        assert_eq!(0.25f32.shown(), "0.25");
    }

    /// A bare name's directory is `.`; any other's is the part before its last `/`.
    #[test]
    fn a_bare_names_directory_is_the_current_one() {
        assert_eq!(dir_of(Path::new("frame.npy")), Path::new("."));
        assert_eq!(dir_of(Path::new("out/frame.npy")), Path::new("out"));
        assert_eq!(dir_of(Path::new("/frame.npy")), Path::new("/"));
    }

    /// A failure to create a file is said of its directory, with the remedy, where the
    /// directory is the cause; any other failure is kept as it is.
    #[test]
    fn a_failure_to_create_a_file_names_its_directory_where_that_is_the_cause() {
        let there = Scratch::new("refusal");
        let missing = there.0.join("missing");
        let said = |dir: &Path, kind: io::ErrorKind| dir_refusal(dir, kind.into()).to_string();
        assert!(
            said(&missing, io::ErrorKind::NotFound)
                .ends_with("missing does not exist: create it, or give another -o")
        );
        assert!(
            said(&there.0, io::ErrorKind::NotFound)
                .contains("its file system makes no new files there")
        );
        assert!(
            said(&there.0, io::ErrorKind::ReadOnlyFilesystem)
                .ends_with("is on a read-only file system: give another -o")
        );
        assert!(
            said(&there.0, io::ErrorKind::PermissionDenied)
                .contains("this user may not create files in directory")
        );
        let other = dir_refusal(&there.0, io::ErrorKind::StorageFull.into());
        assert_eq!(other.kind(), io::ErrorKind::StorageFull);
        assert_eq!(
            other.to_string(),
            io::Error::from(io::ErrorKind::StorageFull).to_string()
        );
    }

    /// A temporary name left by a dump killed with this process id is passed over for the
    /// next; after 100 such names the dump fails rather than trying on.
    #[test]
    fn temporary_names_left_by_killed_dumps_are_passed_over_up_to_100() {
        let dir = Scratch::new("temps");
        let real = dir.0.join("frame.npy");
        let temp = |n: u32| {
            dir.0.join(format!(
                ".frame.npy.shmstream-dump-{}-{n}.partial",
                std::process::id()
            ))
        };
        for n in 1..=2 {
            std::fs::write(temp(n), b"left").unwrap();
        }
        let made = TempBeside::create(&real, None).unwrap().unwrap();
        assert_eq!(made.path, temp(3));
        drop(made);
        assert!(!temp(3).exists(), "removed on drop");
        for n in 3..=100 {
            std::fs::write(temp(n), b"left").unwrap();
        }
        let e = TempBeside::create(&real, None).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(names(&dir.0).len(), 100);
    }

    /// A file is open on a descriptor when the descriptor's file is the same (device and
    /// inode), not another file of the same bytes.
    #[test]
    fn a_descriptor_is_open_on_the_same_file_only() {
        let dir = Scratch::new("open-on");
        let (a, b) = (dir.0.join("a"), dir.0.join("b"));
        std::fs::write(&a, b"same").unwrap();
        std::fs::write(&b, b"same").unwrap();
        let opened = File::open(&a).unwrap();
        assert!(is_open_on(&a.metadata().unwrap(), opened.as_fd()));
        assert!(!is_open_on(&b.metadata().unwrap(), opened.as_fd()));
    }

    /// Written in place, a new file is made in its directory; a write that fails empties a
    /// file and removes its name where it is the only one, and keeps a name with a second
    /// link (emptied, so no cut-short `.npy` reads as whole); a missing directory is named.
    #[test]
    fn a_write_in_place_that_fails_leaves_no_cut_short_file() {
        let dir = Scratch::new("in-place");
        let fresh = dir.0.join("fresh.npy");
        write_in_place(&fresh, &|| false, |out| out.write_all(b"new")).unwrap();
        assert_eq!(std::fs::read(&fresh).unwrap(), b"new");

        let fail = |out: &mut dyn Write| {
            out.write_all(&[1u8; 100_000])?;
            Err(io::Error::other("the disk is full"))
        };
        let e = write_in_place(&fresh, &|| false, fail).unwrap_err();
        assert_eq!(e.to_string(), "the disk is full");
        assert!(!fresh.exists(), "its only name is removed");

        let (linked, second) = (dir.0.join("linked.npy"), dir.0.join("second.npy"));
        std::fs::write(&linked, b"earlier").unwrap();
        std::fs::hard_link(&linked, &second).unwrap();
        write_in_place(&linked, &|| false, fail).unwrap_err();
        assert_eq!(std::fs::read(&linked).unwrap(), b"", "emptied, name kept");
        assert_eq!(std::fs::read(&second).unwrap(), b"");

        let e = write_in_place(&dir.0.join("missing/x.npy"), &|| false, |out| {
            out.write_all(b"new")
        })
        .unwrap_err();
        assert!(
            e.to_string()
                .ends_with("missing does not exist: create it, or give another -o"),
            "{e}"
        );
    }
}
