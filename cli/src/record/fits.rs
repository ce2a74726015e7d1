//! FITS cubes for `record`: the frames as one image (the frame axis last, NAXIS(ndim+1) =
//! frames, so numpy sees `(frames, *shape)`; the stream's dtype mapped to BITPIX with
//! cfitsio's BZERO convention for unsigned types, uint64 included: BITPIX 64 with
//! `BZERO = 9223372036854775808`, the exact integer, as cfitsio writes it) and a binary table `FRAMES` of frame id,
//! count, write time and record time per frame (UNIX seconds, `TUNITn = 's'`), marked as
//! FITS time columns (FITS 4.0 §9: `TCUNIn`, `TIMEUNIT = 's'`, `TIMESYS = 'TAI'`, reference
//! `MJDREFI`/`MJDREFF`/`DATEREF` = 1970-01-01T00:00:37 TAI, which makes UNIX times since 2017
//! exact while TAI − UTC is 37 s; a UTC reference would count the leap seconds since 1970),
//! so astropy's `astropy_native` reads them as `Time` giving the UNIX times back. The
//! primary header has `DATE` (the file's creation) and `DATE-OBS` and `DATE-END` (the first
//! and last frame's write time, blank cards until the first checkpoint), UTC (`TIMESYS`) to
//! the microsecond. The header's `STREAM` card holds the
//! stream's name whole, continued over `CONTINUE` cards past 68 characters (the FITS 4.0
//! long-string convention, which astropy joins), with `%`, every byte outside printable
//! ASCII, the spaces it ends with (which FITS ignores), `'` (doubled in a FITS string,
//! which cfitsio's continuation does not cut safely) and `&` (the continuation mark, lost at
//! the end of a value) written `%XX` (the bytes of its UTF-8, as in URLs:
//! `urllib.parse.unquote` gives the name back). Two cards say what the file lacks, once it is
//! finished: `LOST`, the frames of the stream lost (overwritten before they were read, or
//! published while the recorder could not take them) since its previous file was closed
//! (before the first file: since the recording started), and `COMPLETE`, `T` when the file
//! holds every frame taken for it and its recording went on or ended without an error (a
//! stop signal is no error), else `F`. With `--fsync`, `T` is written only once the rest of
//! the file is on the disk (and then put there itself); without it, before the file is
//! written back, so a write error met then (said in the summary, exit status 1) leaves a
//! `T`. A file left unfinished (the recorder killed) says `LOST` with a blank value
//! (undefined: unknown; astropy reads `fits.card.Undefined`) and `COMPLETE = F`, and
//! `DATE-OBS`/`DATE-END` of the frames its last checkpoint counted.
//!
//! cfitsio (the `fitsio` crate) makes the primary header, in memory: we create the file
//! (`O_EXCL`, so never over an existing file nor through a link, however late it appeared;
//! the one descriptor kept, so a umask that makes it read-only does not stop us) and write
//! the header to it, so a failed write names its OS error. The pixels after it are
//! big-endian values, offset by BZERO where the type needs it; we encode each frame in one
//! pass and append it to the data unit ourselves, because cfitsio's own path (convert, swap,
//! write in 28,800-byte pieces, and zero-fill the whole cube first) does not keep up with a
//! 2 kHz camera on a small host. The cube is created with a frame axis of 0 (so cfitsio
//! fills nothing) and that axis's card set to the frames written when the file is finished
//! (and, with `DATE-OBS`/`DATE-END`, at each checkpoint).
//!
//! The table we write ourselves too, when the file is finished: its size is then known to
//! the byte (one header block and the rows, each padded to 2880 bytes), so after a full disk
//! the cube keeps as many whole frames as fit with their table, and every write error is
//! seen (cfitsio reports none of those it meets when it closes a file; with `--fsync` the
//! file is put on the disk with `sync_data` before it counts as finished, so errors a disk
//! reports late are seen too, and its `close` is checked, where a network file system
//! reports them without `--fsync`).

use std::ffi::{CString, c_void};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use fitsio::hdu::FitsHdu;
use fitsio::images::{ImageDescription, ImageType};
use fitsio::{FileOpenMode, FitsFile};
use shmstream::{Dtype, RingFrame};

use super::checkpoint::Checkpoints;
use super::frame_file::{self, Closed, FrameFile, TailError, write_counted};
use super::{CubeSink, Finished, FrameMeta};
use crate::Fallible;

/// FITS files are made of blocks of this many bytes.
const BLOCK: u64 = 2880;

/// The tries at finishing a file ([`FitsCube::finish`]) that a full disk may take, each
/// keeping fewer frames.
const TAIL_TRIES: usize = 3;

/// Bytes of one row of the `FRAMES` table (four 8-byte columns).
const ROW_BYTES: u64 = 32;
/// At most this many frames' metadata is reserved up front (`--per-file` may be huge).
const META_RESERVE: usize = 4096;

/// The FITS image type of a stream dtype, or why it has none. uint64 is a 64-bit image
/// with `BZERO = 2^63` ([`U64_ZERO`], which [`FitsCube::create`] adds: `fitsio` has no
/// type for cfitsio's `ULONGLONG_IMG`).
pub(crate) fn image_type(dtype: Dtype) -> Result<ImageType, String> {
    Ok(match dtype {
        Dtype::U8 | Dtype::Bool => ImageType::UnsignedByte,
        Dtype::I8 => ImageType::Byte,
        Dtype::I16 => ImageType::Short,
        Dtype::U16 => ImageType::UnsignedShort,
        Dtype::I32 => ImageType::Long,
        Dtype::U32 => ImageType::UnsignedLong,
        Dtype::I64 | Dtype::U64 => ImageType::LongLong,
        Dtype::F32 => ImageType::Float,
        Dtype::F64 => ImageType::Double,
        other => {
            return Err(format!(
                "FITS images have no {other} pixels: record this stream with --format npy"
            ));
        }
    })
}

/// Where [`encode`] takes a frame's pixels from.
enum Pixels<'a, 'r> {
    /// The buffer it encodes, in place.
    InPlace,
    /// A frame still in a history ring, encoded into the buffer as it is copied.
    Ring(&'a RingFrame<'r>),
}

/// Encodes a frame of `dtype` pixels (little-endian) into `frame` (aligned to 8 bytes) as
/// FITS pixels of [`image_type`]: big-endian, and for the types FITS stores with a BZERO
/// offset (u16, u32 and u64 as signed, i8 as unsigned) the offset applied, which is
/// flipping the sign bit. A bool byte other than 0 or 1 (a foreign writer's, true to numpy) is 1, as
/// every read gives it.
fn encode(dtype: Dtype, from: Pixels<'_, '_>, frame: &mut [u8]) -> Result<(), String> {
    fn words<T: bytemuck::Pod>(
        from: Pixels<'_, '_>,
        frame: &mut [u8],
        f: impl Fn(T) -> T,
    ) -> Result<(), String> {
        let w: &mut [T] = bytemuck::try_cast_slice_mut(frame).map_err(|e| e.to_string())?;
        match from {
            Pixels::InPlace => w.iter_mut().for_each(|x| *x = f(*x)),
            Pixels::Ring(ring) => ring.map_into(w, f).map_err(|e| e.to_string())?,
        }
        Ok(())
    }
    let flip = matches!(dtype, Dtype::I8 | Dtype::U16 | Dtype::U32 | Dtype::U64);
    match dtype.itemsize() {
        1 if dtype == Dtype::Bool => words(from, frame, |x: u8| x.min(1)),
        1 => {
            let m = if flip { 0x80 } else { 0 };
            words(from, frame, |x: u8| x ^ m)
        }
        2 => {
            let m = if flip { 0x8000 } else { 0 };
            words(from, frame, |x: u16| (x ^ m).swap_bytes())
        }
        4 => {
            let m = if flip { 0x8000_0000 } else { 0 };
            words(from, frame, |x: u32| (x ^ m).swap_bytes())
        }
        _ => {
            let m = if flip { U64_FLIP } else { 0 };
            words(from, frame, |x: u64| (x ^ m).swap_bytes())
        }
    }
}

/// In a primary header: where the card of axis `axis` (`NAXISn`) is and where the data unit
/// starts (after the 2880-byte block holding `END`).
fn primary_layout(header: &[u8], axis: usize) -> Option<(u64, u64)> {
    let key = format!("{:<8}=", format!("NAXIS{axis}"));
    let mut axis_at = None;
    for (i, card) in header.chunks_exact(80).enumerate() {
        let at = i as u64 * 80;
        if card.starts_with(key.as_bytes()) {
            axis_at = Some(at);
        }
        if card.starts_with(b"END     ") {
            return Some((axis_at?, (at + 80).next_multiple_of(BLOCK)));
        }
    }
    None
}

/// A fixed-format card: `value` as written (an integer right-justified in columns 11-30,
/// a quoted string from column 11), then ` / comment`.
fn card(key: &str, value: &str, comment: &str) -> Vec<u8> {
    let mut card = format!("{key:<8}= {value:>20}");
    if !comment.is_empty() {
        card.push_str(&format!(" / {comment}"));
    }
    let mut card = card.into_bytes();
    card.resize(80, b' ');
    card
}

/// A fixed-format string value: quoted, at least 8 characters between the quotes.
fn text(s: &str) -> String {
    format!("{:<20}", format!("'{s:<8}'"))
}

/// In a header: where the card of `key` is (before `END`).
fn card_at(header: &[u8], key: &str) -> Option<u64> {
    let key = format!("{key:<8}=");
    for (i, card) in header.chunks_exact(80).enumerate() {
        if card.starts_with(key.as_bytes()) {
            return Some(i as u64 * 80);
        }
        if card.starts_with(b"END     ") {
            break;
        }
    }
    None
}

/// The `LOST` card: the stream's frames lost since its previous file was closed; a blank
/// value (undefined, to astropy `fits.card.Undefined`) while unknown, until it is finished.
fn lost_card(lost: Option<u64>) -> Vec<u8> {
    card(
        "LOST",
        &lost.map_or(String::new(), |n| n.to_string()),
        "frames lost before or within this file",
    )
}

/// The `COMPLETE` card: T once the file holds every frame taken for it and its recording
/// went on or ended without an error.
fn complete_card(complete: bool) -> Vec<u8> {
    card(
        "COMPLETE",
        if complete { "T" } else { "F" },
        "T: every frame taken is here, no error",
    )
}

/// The card giving the length of data axis `axis`: `frames`.
fn axis_card(axis: usize, frames: usize) -> Vec<u8> {
    card(
        &format!("NAXIS{axis}"),
        &frames.to_string(),
        &format!("length of data axis {axis}"),
    )
}

/// The TZEROn of the u64 columns (frame id and count): FITS stores an unsigned 64-bit
/// value `v` as the signed `v - 2^63`, which is `v` with its sign bit flipped.
const U64_ZERO: &str = "9223372036854775808";
const U64_FLIP: u64 = 1 << 63;

/// The `BZERO` and `BSCALE` cards of a uint64 image, as cfitsio writes them for its
/// `ULONGLONG_IMG` (BZERO the exact integer 2^63, not a float).
fn u64_bzero_cards() -> [Vec<u8>; 2] {
    [
        card(
            "BZERO",
            U64_ZERO,
            "offset data range to that of unsigned long long",
        ),
        card("BSCALE", "1", "default scaling factor"),
    ]
}

/// What the `FRAMES` times are (their unit, `TUNITn`, is `s`).
const UNIX_TIME: &str = "UNIX time, s since 1970-01-01 UTC";

/// TAI − UTC in seconds since 2017-01-01 (the last leap second; none is announced). A UNIX
/// time `t` (UTC, leap seconds not counted) since then is the instant `t` SI seconds after
/// `1970-01-01T00:00:37 TAI`, the time reference of the `FRAMES` table: with it, readers of
/// FITS time columns (FITS 4.0 §9) get the UNIX times back exactly. Referred to 1970 UTC
/// instead, they would count the 29 s of leap seconds (and the rate offset of UTC before
/// 1972) since then.
const TAI_MINUS_UTC: u32 = 37;

/// The MJD of 1970-01-01 (the UNIX epoch).
const UNIX_EPOCH_MJD: u32 = 40587;

/// `unix` (UNIX seconds) as a UTC ISO-8601 date and time to the microsecond, as FITS
/// writes dates (`2023-11-14T22:13:20.123456`).
fn iso_utc(unix: f64) -> String {
    // Exact to the microsecond for any time a clock gives (below 2^53 µs, year 2255).
    let us = (unix * 1e6).round() as i64;
    let (secs, us) = (us.div_euclid(1_000_000), us.rem_euclid(1_000_000));
    let (days, s) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // The civil date of a day count since 1970-01-01 (H. Hinnant's `civil_from_days`).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{us:06}",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// The `DATE-OBS` and `DATE-END` cards (adjacent) of a file holding the frames of `meta`:
/// the first and the last frame's write time; blank cards while it holds none.
fn date_cards(meta: &[FrameMeta]) -> Vec<u8> {
    let (Some(first), Some(last)) = (meta.first(), meta.last()) else {
        return vec![b' '; 160];
    };
    [
        card(
            "DATE-OBS",
            &text(&iso_utc(first.write_time)),
            "first frame's write time",
        ),
        card(
            "DATE-END",
            &text(&iso_utc(last.write_time)),
            "last frame's write time",
        ),
    ]
    .concat()
}

/// The `FRAMES` binary table extension of `meta`, header and rows, padded to whole blocks.
fn frames_table(meta: &[FrameMeta]) -> Vec<u8> {
    let int = |key: &str, v: u64, comment: &str| card(key, &v.to_string(), comment);
    let mut hdu = [
        card("XTENSION", &text("BINTABLE"), "binary table extension"),
        int("BITPIX", 8, "8-bit bytes"),
        int("NAXIS", 2, "2-dimensional binary table"),
        int("NAXIS1", ROW_BYTES, "width of table in bytes"),
        int("NAXIS2", meta.len() as u64, "number of rows in table"),
        int("PCOUNT", 0, "size of special data area"),
        int("GCOUNT", 1, "one data group (required keyword)"),
        int("TFIELDS", 4, "number of fields in each row"),
        card("TTYPE1", &text("FRAME_ID"), "label for field 1"),
        card(
            "TFORM1",
            &text("1K"),
            "data format of field: 8-byte INTEGER",
        ),
        card("TZERO1", U64_ZERO, "offset for unsigned integers"),
        card("TTYPE2", &text("COUNT"), "label for field 2"),
        card(
            "TFORM2",
            &text("1K"),
            "data format of field: 8-byte INTEGER",
        ),
        card("TZERO2", U64_ZERO, "offset for unsigned integers"),
        card("TTYPE3", &text("WRITE_TIME"), "label for field 3"),
        card("TFORM3", &text("1D"), "data format of field: 8-byte DOUBLE"),
        card("TUNIT3", &text("s"), UNIX_TIME),
        card("TTYPE4", &text("RECORD_TIME"), "label for field 4"),
        card("TFORM4", &text("1D"), "data format of field: 8-byte DOUBLE"),
        card("TUNIT4", &text("s"), UNIX_TIME),
        format!(
            "{:<80}",
            format!("COMMENT WRITE_TIME, RECORD_TIME: {UNIX_TIME}")
        )
        .into_bytes(),
        // FITS time columns (FITS 4.0 §9): see `TAI_MINUS_UTC`.
        card("TIMESYS", &text("TAI"), "time scale of the time columns"),
        int(
            "MJDREFI",
            UNIX_EPOCH_MJD.into(),
            "time reference: MJD, integer part",
        ),
        card(
            "MJDREFF",
            &format!("{:?}", f64::from(TAI_MINUS_UTC) / 86_400.0),
            "fraction of day: 37 s",
        ),
        card(
            "DATEREF",
            &text(&format!("1970-01-01T00:00:{TAI_MINUS_UTC}")),
            "time reference (TAI)",
        ),
        card("TIMEUNIT", &text("s"), "unit of the time columns"),
        card("TCUNI3", &text("s"), "WRITE_TIME is a time column"),
        card("TCUNI4", &text("s"), "RECORD_TIME is a time column"),
        format!(
            "{:<80}",
            "COMMENT so read as TAI: exact for UNIX times since 2017 (TAI-UTC = 37 s)"
        )
        .into_bytes(),
        card(
            "EXTNAME",
            &text("FRAMES"),
            "name of this binary table extension",
        ),
    ]
    .concat();
    hdu.extend_from_slice(format!("{:<80}", "END").as_bytes());
    // One block, as `FitsCube::file_len` counts it.
    debug_assert!(hdu.len() <= BLOCK as usize, "FRAMES header past one block");
    hdu.resize(BLOCK as usize, b' ');
    for m in meta {
        hdu.extend_from_slice(&(m.frame_id ^ U64_FLIP).to_be_bytes());
        hdu.extend_from_slice(&(m.count ^ U64_FLIP).to_be_bytes());
        hdu.extend_from_slice(&m.write_time.to_be_bytes());
        hdu.extend_from_slice(&m.record_time.to_be_bytes());
    }
    hdu.resize(hdu.len().next_multiple_of(BLOCK as usize), 0);
    hdu
}

/// A FITS file cfitsio writes in memory (`ffimem`): the buffer and its size, which cfitsio
/// reallocates as the file grows.
struct MemFile {
    buf: *mut c_void,
    len: usize,
}

impl MemFile {
    /// The primary header cfitsio makes of `desc` with the cards `cards` write: its bytes,
    /// built without a file on the disk (we create that ourselves).
    fn header(
        desc: &ImageDescription,
        cards: impl FnOnce(&mut FitsFile, &FitsHdu) -> Fallible,
    ) -> Fallible<Vec<u8>> {
        // Boxed: cfitsio keeps pointers to both fields until the file is closed.
        let mut mem = Box::new(MemFile {
            buf: std::ptr::null_mut(),
            len: 0,
        });
        let (mut fptr, mut status) = (std::ptr::null_mut(), 0);
        // SAFETY: pointers to locals and to `mem`'s fields, which outlive the memory file
        // (closed below, before `mem` is dropped); an empty buffer (null, 0) that cfitsio
        // grows with `realloc`, whose blocks `MemFile`'s drop frees.
        unsafe {
            fitsio::sys::ffimem(
                &mut fptr,
                &raw mut mem.buf,
                &raw mut mem.len,
                0,
                Some(libc::realloc),
                &mut status,
            )
        };
        fitsio::errors::check_status(status)?;
        // SAFETY: cfitsio just created `fptr` without error: an open read-write file.
        let mut fits = unsafe { FitsFile::from_raw(fptr, FileOpenMode::READWRITE) }?;
        let hdu = fits.create_image("_PRIMARY", desc)?;
        // fitsio names every image it creates, the primary one too: `EXTNAME` belongs to
        // extensions, and FITS tools stricter than astropy may refuse it there.
        delete_key(&mut fits, "EXTNAME")?;
        cards(&mut fits, &hdu)?;
        // SAFETY: `as_raw` gives the open file's pointer, used only during the call, and a
        // pointer to a local.
        unsafe { fitsio::sys::ffflus(fits.as_raw(), &mut status) };
        fitsio::errors::check_status(status)?;
        // Closes the file (its header is in the buffer already, flushed).
        drop(fits);
        if mem.buf.is_null() {
            return Err("cfitsio wrote no header".into());
        }
        // SAFETY: the file is closed: `buf` is cfitsio's last allocation, `len` bytes long.
        Ok(unsafe { std::slice::from_raw_parts(mem.buf.cast::<u8>(), mem.len) }.to_vec())
    }
}

impl Drop for MemFile {
    fn drop(&mut self) {
        // SAFETY: `buf` is null or the block cfitsio last got from `realloc`, freed once.
        unsafe { libc::free(self.buf) };
    }
}

/// A stream name as a FITS string value: see the module doc.
fn escaped(name: &str) -> String {
    let kept = name.trim_end_matches(' ').len();
    let mut s = String::with_capacity(name.len());
    for (i, &b) in name.as_bytes().iter().enumerate() {
        if i < kept && (b' '..=b'~').contains(&b) && !b"%'&".contains(&b) {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// Writes the string `value` (printable ASCII without `'` or `&`) as keyword `key` of the
/// current HDU, continued over `CONTINUE` cards past 68 characters, where `write_key`
/// (cfitsio's `ffpkys`) would cut it. `ffpkls` takes 68 less the number of quotes for each
/// card without a floor: mostly quotes make it loop forever or read before its buffer.
fn write_long_string(fits: &mut FitsFile, key: &str, value: &str) -> Fallible {
    let (key, value) = (CString::new(key)?, CString::new(value)?);
    let mut status = 0;
    // SAFETY: `as_raw` gives the open file's pointer, used only during the call (`fits` is
    // borrowed mutably meanwhile); NUL-terminated strings, a null comment (none) and a
    // pointer to a local, all valid for the call.
    unsafe {
        fitsio::sys::ffpkls(
            fits.as_raw(),
            key.as_ptr(),
            value.as_ptr(),
            std::ptr::null(),
            &mut status,
        )
    };
    fitsio::errors::check_status(status)?;
    Ok(())
}

/// Appends the 80-byte `card` to the current HDU's header as it is (cfitsio's `ffprec`).
fn write_card(fits: &mut FitsFile, card: &[u8]) -> Fallible {
    let card = CString::new(card)?;
    let mut status = 0;
    // SAFETY: `as_raw` gives the open file's pointer, used only during the call (`fits` is
    // borrowed mutably meanwhile); a NUL-terminated string and a pointer to a local, both
    // valid for the call.
    unsafe { fitsio::sys::ffprec(fits.as_raw(), card.as_ptr(), &mut status) };
    fitsio::errors::check_status(status)?;
    Ok(())
}

/// Deletes keyword `key` from the current HDU (cfitsio's `ffdkey`; fitsio has no call for it).
fn delete_key(fits: &mut FitsFile, key: &str) -> Fallible {
    let key = CString::new(key)?;
    let mut status = 0;
    // SAFETY: `as_raw` gives the open file's pointer, used only during the call (`fits` is
    // borrowed mutably meanwhile); a NUL-terminated string and a pointer to a local, both
    // valid for the call.
    unsafe { fitsio::sys::ffdkey(fits.as_raw(), key.as_ptr(), &mut status) };
    fitsio::errors::check_status(status)?;
    Ok(())
}

/// One FITS file being filled.
pub(crate) struct FitsCube {
    path: PathBuf,
    frames: Option<FrameFile>,
    /// The frame axis: NAXISn with n = the stream's ndim + 1 (the last FITS axis).
    axis: usize,
    /// Offset of that axis's card in the file.
    axis_at: u64,
    /// The frames that card gives as last written (0 as created).
    card: usize,
    /// When to rewrite it with the frames on file.
    checkpoints: Checkpoints,
    /// Offset of the `DATE-OBS` card, followed by `DATE-END`.
    dates_at: u64,
    /// Offsets of the `LOST` and `COMPLETE` cards in the file.
    lost_at: u64,
    complete_at: u64,
    /// What they say once the file is finished (see [`CubeSink::ending`]).
    lost: u64,
    complete: bool,
    /// Where the data unit starts.
    data_start: u64,
    frame_bytes: u64,
    dtype: Dtype,
    meta: Vec<FrameMeta>,
}

impl FitsCube {
    /// Creates `path` (never over an existing file, nor through a link there) for frames of
    /// `shape`, `capacity` of them at most; on failure no file is left behind.
    pub(crate) fn create(
        path: &Path,
        stream: &str,
        dtype: Dtype,
        shape: &[usize],
        capacity: usize,
    ) -> Fallible<FitsCube> {
        // fitsio gives cfitsio the dimensions last first: the frames (0 for now) are the
        // last FITS axis.
        let mut dims = vec![0];
        dims.extend_from_slice(shape);
        let desc = ImageDescription {
            data_type: image_type(dtype)?,
            dimensions: &dims,
        };
        let axis = shape.len() + 1;
        let mut header = MemFile::header(&desc, |fits, hdu| {
            if dtype == Dtype::U64 {
                for card in u64_bzero_cards() {
                    write_card(fits, &card)?;
                }
            }
            write_long_string(fits, "STREAM", &escaped(stream))?;
            hdu.write_key(fits, "DTYPE", dtype.numpy_name().to_owned())?;
            hdu.write_key(fits, "ORIGIN", "shmstream record".to_owned())?;
            hdu.write_key(fits, "DATE", iso_utc(super::unix_now()))?;
            hdu.write_key(fits, "TIMESYS", "UTC".to_owned())?;
            // Room for the cards written at checkpoints and when the file is finished
            // (see `date_cards` and `ending_cards`).
            hdu.write_key(fits, "DATE-OBS", String::new())?;
            hdu.write_key(fits, "DATE-END", String::new())?;
            hdu.write_key(fits, "LOST", 0i64)?;
            hdu.write_key(fits, "COMPLETE", 0i64)?;
            Ok(())
        })
        .map_err(|e| format!("{}: making the FITS header: {e}", path.display()))?;
        let layout = primary_layout(&header, axis)
            .filter(|&(_, end)| end <= header.len() as u64)
            .zip(card_at(&header, "LOST").zip(card_at(&header, "COMPLETE")))
            .zip(
                card_at(&header, "DATE-OBS")
                    .filter(|&at| card_at(&header, "DATE-END") == Some(at + 80)),
            );
        let Some((((axis_at, data_start), (lost_at, complete_at)), dates_at)) = layout else {
            return Err(format!("{}: cfitsio made no whole FITS header", path.display()).into());
        };
        // As a file cut short (the recorder killed) is left: no frame dates, LOST undefined,
        // COMPLETE F.
        for (at, card) in [
            (dates_at, date_cards(&[])),
            (lost_at, lost_card(None)),
            (complete_at, complete_card(false)),
        ] {
            header[at as usize..at as usize + card.len()].copy_from_slice(&card);
        }
        // O_EXCL: atomic, and never through a symbolic link; the descriptor is kept (the
        // file's mode, after a umask, may not let it be opened for writing again).
        let file = super::files::create_new(path)?;
        let (_, written) = write_counted(&file, &header[..data_start as usize], 0);
        if let Err(e) = written {
            drop(file);
            let _ = std::fs::remove_file(path);
            let step = "writing the FITS header: ";
            return Err(
                frame_file::write_failed(path, step, &e, frame_file::NOT_ROOM_REMEDY).into(),
            );
        }
        let frame_bytes = (shape.iter().product::<usize>() * dtype.itemsize()) as u64;
        Ok(FitsCube {
            path: path.to_owned(),
            frames: Some(
                FrameFile::new(path, file, data_start, frame_bytes as usize).keep_length_off(BLOCK),
            ),
            axis,
            axis_at,
            card: 0,
            checkpoints: Checkpoints::default(),
            dates_at,
            lost_at,
            complete_at,
            lost: 0,
            complete: false,
            data_start,
            frame_bytes,
            dtype,
            meta: Vec::with_capacity(capacity.min(META_RESERVE)),
        })
    }

    /// Where the data unit of `frames` frames ends, padded to a whole block.
    fn image_end(&self, frames: usize) -> u64 {
        self.data_start + (frames as u64 * self.frame_bytes).next_multiple_of(BLOCK)
    }

    /// The length of a file of `frames` frames and their table.
    fn file_len(&self, frames: usize) -> u64 {
        self.image_end(frames) + BLOCK + (frames as u64 * ROW_BYTES).next_multiple_of(BLOCK)
    }

    /// The most of the first `frames` frames that fit in `room` bytes with their table (all
    /// of them without a limit; none if not even an empty table fits).
    fn frames_that_fit(&self, frames: usize, room: Option<u64>) -> usize {
        let Some(room) = room else { return frames };
        let (mut fit, mut over) = (0, frames + 1);
        while over - fit > 1 {
            let mid = fit + (over - fit) / 2;
            if self.file_len(mid) <= room {
                fit = mid;
            } else {
                over = mid;
            }
        }
        fit
    }

    /// Makes `file` a cube of its first `frames` frames and their table: sets the frame
    /// axis, cuts the file after them (dropping any part-written frame), pads the data unit
    /// with zeros to a whole block and writes the table after it. The card first: the file
    /// still holds the frames it gives when a later step fails (or it does).
    /// `complete`: whether they are all the frames taken for it (see [`CubeSink::ending`]).
    fn write_tail(&mut self, file: &File, frames: usize, complete: bool) -> Result<(), TailError> {
        let failed = |step: String| move |e| TailError { step, e };
        // Fewer frames than the card gives (a retry after a full disk): the frames past
        // them must not end on a block boundary while the cut is to come (a hole byte).
        if frames < self.card
            && let Ok(m) = file.metadata()
            && m.len().is_multiple_of(BLOCK)
        {
            let _ = file.set_len(m.len() + 1);
        }
        self.set_card(file, frames).map_err(failed(format!(
            "writing the frame-axis card (NAXIS{})",
            self.axis
        )))?;
        self.date_cards(file, frames)
            .map_err(failed("writing the DATE-OBS and DATE-END cards".into()))?;
        self.ending_cards(file, complete)
            .map_err(failed("writing the LOST and COMPLETE cards".into()))?;
        self.cut_image(file, frames)
            .map_err(failed("cutting the image after its whole frames".into()))?;
        file.write_all_at(&frames_table(&self.meta[..frames]), self.image_end(frames))
            .map_err(failed("writing the FRAMES table".into()))
    }

    /// Writes the frame axis card for `frames`.
    fn set_card(&mut self, file: &File, frames: usize) -> std::io::Result<()> {
        file.write_all_at(&axis_card(self.axis, frames), self.axis_at)?;
        self.card = frames;
        Ok(())
    }

    /// Writes the `DATE-OBS` and `DATE-END` cards of the first `frames` frames.
    fn date_cards(&self, file: &File, frames: usize) -> std::io::Result<()> {
        file.write_all_at(&date_cards(&self.meta[..frames]), self.dates_at)
    }

    /// Writes the `LOST` and `COMPLETE` cards: the frames lost, and `complete`.
    fn ending_cards(&self, file: &File, complete: bool) -> std::io::Result<()> {
        file.write_all_at(&lost_card(Some(self.lost)), self.lost_at)?;
        file.write_all_at(&complete_card(complete), self.complete_at)
    }

    /// Cuts `file` after `frames` frames and pads their data unit with zeros.
    fn cut_image(&self, file: &File, frames: usize) -> std::io::Result<()> {
        file.set_len(self.data_start + frames as u64 * self.frame_bytes)?;
        file.set_len(self.image_end(frames))
    }
}

impl CubeSink for FitsCube {
    fn push(&mut self, frame: &mut [u8], meta: FrameMeta) -> Fallible {
        encode(self.dtype, Pixels::InPlace, frame)
            .map_err(|e| format!("{}: encoding a frame: {e}", self.path.display()))?;
        self.push_stored(frame, meta)
    }

    fn store_from_ring(&self, frame: &RingFrame<'_>, dst: &mut [u8]) -> Result<(), String> {
        encode(self.dtype, Pixels::Ring(frame), dst)
    }

    fn push_stored(&mut self, frame: &[u8], meta: FrameMeta) -> Fallible {
        let frames = self.frames.as_mut().ok_or("FITS image already closed")?;
        frames.push(frame)?;
        self.meta.push(meta);
        if !self.checkpoints.due(meta.record_time) {
            return Ok(());
        }
        // A checkpoint (see [`CHECKPOINT_S`](super::checkpoint::CHECKPOINT_S)): the file reads with the frames on file now.
        let stored = frames.flush()?;
        frames
            .file()
            .write_all_at(&axis_card(self.axis, stored), self.axis_at)
            .map_err(|e| {
                format!(
                    "{}: rewriting its frame-axis card (NAXIS{}): {e}",
                    self.path.display(),
                    self.axis
                )
            })?;
        self.card = stored;
        frames
            .file()
            .write_all_at(&date_cards(&self.meta[..stored]), self.dates_at)
            .map_err(|e| {
                format!(
                    "{}: rewriting its DATE-OBS and DATE-END cards: {e}",
                    self.path.display()
                )
            })?;
        Ok(())
    }

    /// Never: FITS pixels are encoded first.
    fn in_place(&self) -> Option<(&File, u64)> {
        None
    }

    fn commit_in_place(&mut self, _: std::io::Result<()>, _: FrameMeta) -> Fallible {
        Err(format!(
            "{}: FITS frames are encoded, not written in place",
            self.path.display()
        )
        .into())
    }

    fn frames(&self) -> usize {
        self.meta.len()
    }

    fn ending(&mut self, lost: u64, complete: bool) {
        (self.lost, self.complete) = (lost, complete);
    }

    /// Keeps every whole frame with its table; after a full disk, the most whole frames
    /// whose table still fits in the room the file had (the rest are dropped, and said so).
    fn finish(&mut self, sync: bool) -> Finished {
        let Some(frames) = self.frames.take() else {
            return Finished::new(0, Vec::new());
        };
        let Closed {
            file,
            frames: whole,
            flushed,
            room,
            full,
            ..
        } = frames.close();
        let path = self.path.display().to_string();
        // Complete only with every frame taken for it on file, the gathered ones too.
        let complete = self.complete && flushed.is_ok();
        let mut errors: Vec<String> = flushed.err().into_iter().collect();
        // Only a write that found no room bounds the room the table has: after any other
        // failed write (an I/O error) every whole frame is kept.
        let mut room = room.filter(|_| full.is_some());
        // What ran out of room, once the disk filled up (here or at a frame).
        let mut full = full.unwrap_or(frame_file::Full::Disk);
        let mut tries = 0;
        let written = loop {
            tries += 1;
            let keep = self.frames_that_fit(whole, room);
            // With `sync`, `COMPLETE = T` only once the rest is on the disk (below).
            let e = match self.write_tail(&file, keep, complete && keep == whole && !sync) {
                Ok(()) => break Ok(keep),
                Err(e) => e,
            };
            // The disk filled up just now: again in the room the file has now (said once),
            // up to [`TAIL_TRIES`] in all and as long as that keeps fewer frames: the file on
            // the same disk that the next frames go to may take the room a cut frees, but a
            // disk that frees none (a snapshot holding the blocks) must not cost them all.
            // Any other error is no reason to drop frames.
            let now = file.metadata().map(|m| m.len()).ok();
            match e.no_room() {
                Some(no_room)
                    if tries < TAIL_TRIES
                        && now.is_some()
                        && (room.is_none() || self.frames_that_fit(whole, now) < keep) =>
                {
                    if room.is_none() {
                        errors.push(format!("{path}: {e}"));
                    }
                    full = no_room;
                    room = now;
                }
                _ => break Err((keep, e)),
            }
        };
        let complete = complete && matches!(written, Ok(keep) if keep == whole);
        let kept = match written {
            Ok(keep) => {
                if keep < whole {
                    errors.push(format!(
                        "{path}: {}: kept the first {keep} of {whole} whole frames, dropping the last {} to make room for the FRAMES table of those kept; {}",
                        full.said(),
                        whole - keep,
                        full.remedy()
                    ));
                }
                keep
            }
            Err((keep, e)) => {
                // A valid FITS file still: the image of the frames its card gives (`keep`
                // if it can be written), without the table.
                if self.card != keep {
                    let _ = self.set_card(&file, keep);
                }
                let _ = self.ending_cards(&file, false);
                let held = self.card;
                let _ = self.date_cards(&file, held);
                let _ = self.cut_image(&file, held);
                errors.push(format!(
                    "{path}: {e}: the file holds {held} frames without their frame ids and times; {}",
                    e.remedy()
                ));
                held
            }
        };
        if sync {
            let mut synced = frame_file::sync(&self.path, &file);
            if synced.is_ok() && complete {
                synced = file
                    .write_all_at(&complete_card(true), self.complete_at)
                    .map_err(|e| {
                        format!(
                            "{path}: writing its COMPLETE card: {e}: it says F though it holds every frame; check the disk (space, quota, errors)"
                        )
                    })
                    .and_then(|()| {
                        frame_file::sync(&self.path, &file).inspect_err(|_| {
                            // Not on the disk after all: F again where it is read (the
                            // page cache), best effort.
                            let _ = file.write_all_at(&complete_card(false), self.complete_at);
                        })
                    });
            }
            errors.extend(synced.err());
        }
        errors.extend(frame_file::close(&self.path, file).err());
        Finished::new(kept, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(dtype: Dtype, src: &[u8]) -> Vec<u8> {
        let mut w = vec![0u64; src.len().div_ceil(8)];
        let frame = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut w)[..src.len()];
        frame.copy_from_slice(src);
        encode(dtype, Pixels::InPlace, frame).unwrap();
        frame.to_vec()
    }

    /// A bool byte other than 0 or 1 (a pyshmem mask of 255s) is recorded as 1, as every read
    /// gives it; it was recorded as 255.
    #[test]
    fn a_foreign_bool_byte_is_recorded_as_1() {
        assert_eq!(encoded(Dtype::Bool, &[0, 255, 2, 1]), [0, 1, 1, 1]);
        assert_eq!(encoded(Dtype::U8, &[0, 255, 2, 1]), [0, 255, 2, 1]);
    }

    #[test]
    fn stream_names_are_escaped_only_where_fits_would_lose_them() {
        assert_eq!(escaped("cam 0 o'brien"), "cam 0 o%27brien");
        assert_eq!(escaped("a&b&"), "a%26b%26");
        assert_eq!(escaped(" 5% µ  "), " 5%25 %C2%B5%20%20");
        assert_eq!(escaped("a\tb\u{7f}"), "a%09b%7F");
    }

    #[test]
    fn types_fits_has_no_pixels_for_are_refused_with_the_remedy() {
        assert!(
            image_type(Dtype::Complex64)
                .unwrap_err()
                .contains("--format npy")
        );
    }

    /// uint64's cards are cfitsio's for `ULONGLONG_IMG` (its `putkey.c`), and its BSCALE
    /// card is the one cfitsio writes for the unsigned types `fitsio` has.
    #[test]
    fn uint64_bzero_cards_are_cfitsio_s() {
        let [bzero, bscale] = u64_bzero_cards();
        let expected = format!(
            "{:<80}",
            "BZERO   =  9223372036854775808 / offset data range to that of unsigned long long"
        );
        assert_eq!(String::from_utf8_lossy(&bzero), expected);
        let desc = ImageDescription {
            data_type: ImageType::UnsignedLong,
            dimensions: &[0, 2],
        };
        let header = MemFile::header(&desc, |_, _| Ok(())).unwrap();
        let at = card_at(&header, "BSCALE").unwrap() as usize;
        assert_eq!(
            String::from_utf8_lossy(&header[at..at + 80]),
            String::from_utf8_lossy(&bscale)
        );
    }

    #[test]
    fn unix_times_become_utc_iso_dates_to_the_microsecond() {
        assert_eq!(iso_utc(0.0), "1970-01-01T00:00:00.000000");
        assert_eq!(iso_utc(1_700_000_000.123456), "2023-11-14T22:13:20.123456");
        assert_eq!(iso_utc(951_782_400.0), "2000-02-29T00:00:00.000000");
        assert_eq!(
            iso_utc(4_102_444_799.999_999_5),
            "2100-01-01T00:00:00.000000"
        );
        assert_eq!(iso_utc(-1.5), "1969-12-31T23:59:58.500000");
        // Past a century of the 400-year era (2000-03-01 on), and its last day.
        assert_eq!(iso_utc(4_107_542_400.0), "2100-03-01T00:00:00.000000");
        assert_eq!(iso_utc(13_569_465_599.0), "2399-12-31T23:59:59.000000");
        assert_eq!(iso_utc(13_574_606_400.0), "2400-02-29T12:00:00.000000");
        assert_eq!(date_cards(&[]), [b' '; 160]);
    }

    #[test]
    fn the_frame_axis_card_is_a_fixed_format_integer() {
        let card = axis_card(3, 1234);
        assert_eq!(card.len(), 80);
        assert_eq!(&card[..30], b"NAXIS3  =                 1234");
        assert_eq!(&axis_card(20, 5)[..30], b"NAXIS20 =                    5");
    }

    #[test]
    fn the_frames_table_is_one_header_block_and_its_rows_in_whole_blocks() {
        let meta = FrameMeta {
            frame_id: 7,
            count: 8,
            write_time: 1.5,
            record_time: 2.5,
        };
        let t = frames_table(&[meta; 91]);
        assert_eq!(t.len(), 3 * 2880, "91 rows of 32 bytes take two blocks");
        assert_eq!(&t[..30], b"XTENSION= 'BINTABLE'          ");
        let cards: Vec<&[u8]> = t[..2880].chunks(80).collect();
        assert!(cards.contains(&&card("TUNIT3", &text("s"), UNIX_TIME)[..]));
        assert!(cards.contains(&&card("TUNIT4", &text("s"), UNIX_TIME)[..]));
        let time = |key: &str| {
            cards
                .iter()
                .find(|c| c.starts_with(key.as_bytes()))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c[10..]);
                    c.split(" / ").next().unwrap_or_default().trim().to_owned()
                })
        };
        assert_eq!(time("TIMESYS ").as_deref(), Some("'TAI     '"));
        assert_eq!(time("MJDREFI ").as_deref(), Some("40587"));
        assert_eq!(time("MJDREFF ").as_deref(), Some("0.00042824074074074075"));
        assert_eq!(time("DATEREF ").as_deref(), Some("'1970-01-01T00:00:37'"));
        assert_eq!(time("TCUNI3  ").as_deref(), Some("'s       '"));
        assert!(
            cards.iter().any(|c| c.starts_with(b"END     ")),
            "one block"
        );
        assert_eq!(
            &t[2880..2888],
            &(7 - i64::MAX - 1).to_be_bytes(),
            "7 - TZERO1"
        );
        assert_eq!(&t[2880 + 24..2880 + 32], &2.5f64.to_be_bytes());
        assert!(t[2880 + 91 * 32..].iter().all(|&b| b == 0));
        assert_eq!(frames_table(&[]).len(), 2880);
    }

    #[test]
    fn pixels_become_big_endian_with_the_bzero_offset_of_their_type() {
        // u16 0 and 65535 are stored as i16 -32768 and 32767 (BZERO 32768).
        let u16s: Vec<u8> = [0u16, 65535, 0x1234]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(
            encoded(Dtype::U16, &u16s),
            [-32768i16, 32767, (0x1234 - 0x8000_i32) as i16]
                .iter()
                .flat_map(|v: &i16| v.to_be_bytes())
                .collect::<Vec<u8>>()
        );
        // u32 (BZERO 2^31), i8 (BZERO -128), and plain big-endian words.
        assert_eq!(
            encoded(Dtype::U32, &7u32.to_le_bytes()),
            (7i64 - (1 << 31)).to_be_bytes()[4..]
        );
        assert_eq!(
            encoded(Dtype::U32, &u32::MAX.to_le_bytes()),
            i32::MAX.to_be_bytes()
        );
        assert_eq!(encoded(Dtype::I8, &[0x80, 0x7f, 0]), [0, 0xff, 0x80]);
        assert_eq!(encoded(Dtype::U8, &[1, 2, 255]), [1, 2, 255]);
        assert_eq!(
            encoded(Dtype::F64, &1.5f64.to_le_bytes()),
            1.5f64.to_be_bytes()
        );
        assert_eq!(
            encoded(Dtype::I64, &(-2i64).to_le_bytes()),
            (-2i64).to_be_bytes()
        );
        // u64 (BZERO 2^63): 0 and u64::MAX are stored as i64::MIN and i64::MAX.
        assert_eq!(
            encoded(
                Dtype::U64,
                &[0u64, u64::MAX, 5].map(u64::to_le_bytes).concat()
            ),
            [i64::MIN, i64::MAX, 5 - i64::MAX - 1]
                .map(i64::to_be_bytes)
                .concat()
        );
        assert_eq!(
            encoded(Dtype::F32, &(-0.25f32).to_le_bytes()),
            (-0.25f32).to_be_bytes()
        );
    }

    /// The `FRAMES` columns of unsigned 64-bit values hold `v - 2^63` (TZERO): the largest
    /// value is the largest signed one, 0 the smallest.
    #[test]
    fn frame_ids_and_counts_are_stored_less_their_tzero() {
        let meta = |frame_id, count| FrameMeta {
            frame_id,
            count,
            write_time: 0.0,
            record_time: 0.0,
        };
        let t = frames_table(&[meta(u64::MAX, 8), meta(0, u64::MAX)]);
        let column = |row: usize, col: usize| {
            let at = 2880 + row * 32 + col * 8;
            i64::from_be_bytes(t[at..at + 8].try_into().unwrap())
        };
        assert_eq!((column(0, 0), column(0, 1)), (i64::MAX, 8 - i64::MAX - 1));
        assert_eq!((column(1, 0), column(1, 1)), (i64::MIN, i64::MAX));
    }

    /// The cards written when a file is finished are fixed-format: `LOST` blank until known.
    #[test]
    fn the_lost_and_complete_cards_are_fixed_format() {
        assert_eq!(
            &lost_card(Some(12))[..30],
            b"LOST    =                   12"
        );
        assert_eq!(
            String::from_utf8_lossy(&lost_card(None)),
            format!(
                "{:<80}",
                "LOST    =                      / frames lost before or within this file"
            )
        );
        assert_eq!(
            &complete_card(true)[..30],
            b"COMPLETE=                    T"
        );
        assert_eq!(
            &complete_card(false)[..30],
            b"COMPLETE=                    F"
        );
        assert_eq!(complete_card(false).len(), 80);
    }

    /// A header of 80-byte `cards`, padded to whole blocks.
    fn header_of(cards: &[&str]) -> Vec<u8> {
        let mut h: Vec<u8> = cards
            .iter()
            .flat_map(|c| format!("{c:<80}").into_bytes())
            .collect();
        h.resize(h.len().next_multiple_of(BLOCK as usize), b' ');
        h
    }

    /// The frame axis card is found where it is, and the data unit starts at the block after
    /// the one holding `END`, also when `END` is the first card of a block.
    #[test]
    fn the_primary_layout_is_the_axis_card_and_the_block_after_end() {
        let mut cards = vec![
            "SIMPLE  =                    T",
            "BITPIX  =                   16",
        ];
        cards.extend([
            "NAXIS   =                    2",
            "NAXIS1  =                    5",
        ]);
        cards.push("NAXIS2  =                    0");
        cards.resize(35, "COMMENT filler");
        let in_one_block = header_of(&[&cards[..], &["END"]].concat());
        assert_eq!(primary_layout(&in_one_block, 2), Some((4 * 80, 2880)));
        assert_eq!(primary_layout(&in_one_block, 1), Some((3 * 80, 2880)));
        assert_eq!(primary_layout(&in_one_block, 3), None, "no such axis");
        cards.push("COMMENT one more");
        let in_two_blocks = header_of(&[&cards[..], &["END"]].concat());
        assert_eq!(primary_layout(&in_two_blocks, 2), Some((4 * 80, 5760)));
        assert_eq!(primary_layout(&header_of(&cards), 2), None, "no END");
    }

    /// A cube being filled, removed on drop.
    struct Scratch {
        path: PathBuf,
        cube: FitsCube,
    }
    impl Scratch {
        fn new(tag: &str, dtype: Dtype) -> Scratch {
            let path = std::env::temp_dir()
                .join(format!("shmstream-fits-{tag}-{}.fits", std::process::id()));
            let _ = std::fs::remove_file(&path);
            let cube = FitsCube::create(&path, "cam", dtype, &[6, 5], 10).unwrap();
            Scratch { path, cube }
        }
        fn bytes(&self) -> Vec<u8> {
            std::fs::read(&self.path).unwrap()
        }
        /// The 80-byte card at `at` in the file, as text.
        fn card(&self, at: u64) -> String {
            let at = at as usize;
            String::from_utf8_lossy(&self.bytes()[at..at + 80]).into_owned()
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// A new cube holds its header alone, its frame axis 0; its data unit and table each take
    /// whole blocks, and the frames that fit in some room are the most whose table fits too.
    #[test]
    fn a_cube_s_data_unit_and_table_take_whole_blocks() {
        let s = Scratch::new("layout", Dtype::U16);
        let c = &s.cube;
        let ds = c.data_start;
        assert_eq!((c.axis, c.frame_bytes, ds % BLOCK), (3, 60, 0));
        assert_eq!(s.bytes().len() as u64, ds);
        assert_eq!(s.card(c.axis_at).as_bytes(), axis_card(3, 0));
        assert!(!String::from_utf8_lossy(&s.bytes()).contains("unsigned long long"));
        // 48 frames of 60 bytes fill a block; 90 rows of 32 bytes do.
        assert_eq!(
            [c.image_end(0), c.image_end(48), c.image_end(49)],
            [ds, ds + 2880, ds + 5760]
        );
        assert_eq!(c.file_len(0), ds + 2880);
        assert_eq!(c.file_len(48), ds + 3 * 2880);
        assert_eq!(c.file_len(90), ds + 4 * 2880);
        assert_eq!(c.file_len(91), ds + 5 * 2880);
        for (room, fit) in [
            (None, 100),
            (Some(ds + 2880), 0),
            (Some(ds + 3 * 2880 - 1), 0),
            (Some(ds + 3 * 2880), 48),
            (Some(ds + 4 * 2880), 90),
            (Some(ds + 5 * 2880), 96),
            (Some(ds + 6 * 2880), 100),
            (Some(ds + 100 * 2880), 100),
        ] {
            assert_eq!(c.frames_that_fit(100, room), fit, "{room:?}");
        }
        assert_eq!(c.frames_that_fit(0, Some(ds + 2880)), 0);
        let u64s = Scratch::new("layout-u64", Dtype::U64);
        let at = card_at(&u64s.bytes(), "BZERO").unwrap();
        assert_eq!(u64s.card(at).as_bytes(), u64_bzero_cards()[0]);
        assert_eq!(u64s.cube.frame_bytes, 240);
    }

    /// The frame axis card and the dates follow the frames at each checkpoint; finished, the
    /// file is the frames, padded, and their table, and says the frames lost and whether it
    /// is complete (with `--fsync` too).
    #[test]
    fn a_finished_cube_says_its_frames_dates_losses_and_completeness() {
        let meta = |i: u64, t: f64| FrameMeta {
            frame_id: 100 + i,
            count: 1,
            write_time: 1_700_000_000.0 + t,
            record_time: t,
        };
        let times = [0.0, 0.5, 1.0, 1.2, 1.4];
        let metas: Vec<FrameMeta> = (0..5).map(|i| meta(i, times[i as usize])).collect();
        for (sync, ending, complete) in [
            (false, Some((2, true)), true),
            (false, Some((0, false)), false),
            (false, None, false),
            (true, Some((0, true)), true),
            (true, None, false),
        ] {
            let mut s = Scratch::new(&format!("finish-{sync}-{complete}"), Dtype::U16);
            let (axis_at, dates_at) = (s.cube.axis_at, s.cube.dates_at);
            for (i, m) in metas.iter().enumerate() {
                let mut frame = [i as u8, 0].repeat(30);
                s.cube.push(&mut frame, *m).unwrap();
                let counted = if i < 2 { 0 } else { 3 };
                assert_eq!(
                    s.card(axis_at).as_bytes(),
                    axis_card(3, counted),
                    "after {i}"
                );
                let dated = &s.bytes()[dates_at as usize..dates_at as usize + 160];
                assert_eq!(dated, date_cards(&metas[..counted]), "after {i}");
            }
            assert_eq!(s.cube.frames(), 5);
            // A frame that reached the file only in part, after the five gathered: cut.
            let file = s.cube.frames.as_ref().unwrap().file();
            file.write_all_at(&[0xab; 30], s.cube.data_start + 5 * 60)
                .unwrap();
            if let Some((lost, complete)) = ending {
                s.cube.ending(lost, complete);
            }
            let done = s.cube.finish(sync);
            assert_eq!((done.frames, done.result), (5, Ok(())));
            let c = &s.cube;
            let bytes = s.bytes();
            assert_eq!(bytes.len() as u64, c.file_len(5));
            assert_eq!(s.card(axis_at).as_bytes(), axis_card(3, 5));
            assert_eq!(
                &bytes[dates_at as usize..dates_at as usize + 160],
                date_cards(&metas)
            );
            let lost = ending.map_or(0, |e| e.0);
            assert_eq!(s.card(c.lost_at).as_bytes(), lost_card(Some(lost)));
            assert_eq!(
                s.card(c.complete_at).as_bytes(),
                complete_card(complete),
                "{sync} {ending:?}"
            );
            // Frame 4's first pixel (4, stored less BZERO 32768), then zeros to the block (the
            // part-written frame's bytes gone).
            let last = (c.data_start + 4 * 60) as usize;
            assert_eq!(&bytes[last..last + 2], &[0x80, 4]);
            assert!(
                bytes[last + 60..c.image_end(5) as usize]
                    .iter()
                    .all(|&b| b == 0)
            );
            let table = &bytes[c.image_end(5) as usize..];
            assert_eq!(table, frames_table(&metas));
        }
    }

    /// A file in memory, `len` bytes long, that takes no write (sealed with `F_SEAL_WRITE`)
    /// but may change length: a write after a length change fails.
    fn sealed_against_writes(len: u64) -> File {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: a NUL-terminated name and a flag, valid for the call; it returns a new
        // descriptor or -1.
        let fd = unsafe { libc::memfd_create(c"fits-tail".as_ptr(), libc::MFD_ALLOW_SEALING) };
        assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` is a new open descriptor that nothing else owns or closes.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(len).unwrap();
        // SAFETY: an open descriptor (`file` owns it for the call) and a seal flag.
        let sealed =
            unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_WRITE) };
        assert_eq!(
            sealed,
            0,
            "F_ADD_SEALS: {}",
            std::io::Error::last_os_error()
        );
        file
    }

    /// A tail written for fewer frames than the card gives (a retry after a full disk) first
    /// takes the file off a block boundary, so that until the cut the bytes past those frames
    /// never read as a header block without `END`; for as many frames or more, the length
    /// is left alone. (The card's write then fails: the file takes no write.)
    #[test]
    fn a_tail_for_fewer_frames_than_the_card_gives_first_takes_the_file_off_a_block() {
        let mut s = Scratch::new("retry", Dtype::U16);
        for (i, t) in [0.0, 0.5, 1.0].into_iter().enumerate() {
            let meta = FrameMeta::at(i as u64, t);
            s.cube.push(&mut [0; 60], meta).unwrap();
        }
        assert_eq!(s.cube.card, 3);
        for (frames, len) in [(2, 2 * BLOCK + 1), (3, 2 * BLOCK), (4, 2 * BLOCK)] {
            let file = sealed_against_writes(2 * BLOCK);
            let e = s.cube.write_tail(&file, frames, false).unwrap_err();
            assert_eq!(e.step, "writing the frame-axis card (NAXIS3)");
            assert_eq!(e.e.raw_os_error(), Some(libc::EPERM), "{}", e.e);
            assert_eq!(file.metadata().unwrap().len(), len, "{frames} frames");
            assert_eq!(s.cube.card, 3, "the card is not written");
        }
    }
}
