//! `.npy` cubes for `record` (shape `(frames, *frame_shape)`, every stream dtype) with a
//! sidecar table `<file>.frames.csv` of frame id, count, write time and record time.
//!
//! The header is written padded to the length of the widest count, giving 0 frames, and
//! rewritten in place with the frames on file every [`CHECKPOINT_S`](super::checkpoint::CHECKPOINT_S) and when the file is
//! finished, so frames stream to disk as they arrive and the data never moves. The table's
//! rows (the column names first) are gathered in memory and appended at those same
//! moments, before the header: a killed recorder (SIGKILL, an OOM kill, a crash of the
//! recorder) leaves a cube that `np.load` reads with the frames of the last rewrite (any
//! bytes after them are ignored) and a table with at least their rows. That order is the
//! page cache's, not the disk's: after a power loss or kernel crash the count can be ahead
//! of what reached the disk (see the `record` module).
//! Both files are created when the cube is (neither over an existing file); when a full disk
//! cuts the table short the cube keeps only the frames whose rows reached it whole (after
//! any other error, all of them).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use shmstream::{Dtype, RingFrame};

use super::checkpoint::Checkpoints;
use super::frame_file::{self, Closed, FrameFile, TailError, write_counted};
use super::{CubeSink, Finished, FrameMeta};
use crate::Fallible;

/// numpy's type string for a stream dtype (little-endian, as streams are on x86-64).
fn descr(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::I8 => "|i1",
        Dtype::I16 => "<i2",
        Dtype::I32 => "<i4",
        Dtype::I64 => "<i8",
        Dtype::U8 => "|u1",
        Dtype::U16 => "<u2",
        Dtype::U32 => "<u4",
        Dtype::U64 => "<u8",
        Dtype::F16 => "<f2",
        Dtype::F32 => "<f4",
        Dtype::F64 => "<f8",
        Dtype::Bool => "|b1",
        Dtype::Complex64 => "<c8",
        Dtype::Complex128 => "<c16",
    }
}

/// A `.npy` v1.0 header for `frames` frames, padded to `len` bytes (0: its natural length).
fn header(dtype: Dtype, frames: u64, shape: &[usize], len: usize) -> Vec<u8> {
    let mut dims = frames.to_string();
    for d in shape {
        dims.push_str(&format!(", {d}"));
    }
    let dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': ({dims}), }}",
        descr(dtype)
    );
    let natural = (10 + dict.len() + 1).next_multiple_of(64);
    let total = if len == 0 { natural } else { len };
    let mut h = b"\x93NUMPY\x01\x00".to_vec();
    h.extend_from_slice(&((total - 10) as u16).to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h.resize(total - 1, b' ');
    h.push(b'\n');
    h
}

/// The table beside the cube `path`: `<stem>.frames.csv`.
pub(crate) fn sidecar(path: &Path) -> PathBuf {
    path.with_extension("frames.csv")
}

/// The table's first line: the column names, written with the first rows.
const COLUMNS: &str = "frame_id,count,write_time,record_time\n";

/// The most of the `lens.len()` frames (of `frame_bytes`) whose table rows (of `lens`
/// bytes, after `head` bytes still to write before them) fit in `room` table bytes plus the
/// bytes freed by dropping the frames after them: on a full disk shared by the cube and its
/// table, what a table cut short at `room` can be made whole for.
fn frames_that_fit(head: usize, lens: &[usize], frame_bytes: usize, room: usize) -> usize {
    let whole = lens.len();
    let (mut len, mut fit) = (head as u64, 0);
    // The table grows by a row as the cube shrinks by a frame: the first that does not fit
    // is the last to look at.
    for k in 0..=whole {
        if k > 0 {
            len += lens[k - 1] as u64;
        }
        let freed = (whole - k) as u64 * frame_bytes as u64;
        if len > room as u64 + freed {
            break;
        }
        fit = k;
    }
    fit
}

pub(crate) struct NpyCube {
    path: PathBuf,
    frames: Option<FrameFile>,
    /// The sidecar table (closed with the cube).
    table: Option<File>,
    dtype: Dtype,
    shape: Vec<usize>,
    header_len: usize,
    frame_bytes: usize,
    /// Frames appended.
    pushed: usize,
    /// Rows on file in the table, and where they end (0: not even the column names yet).
    table_rows: usize,
    table_len: u64,
    /// The rows of the frames after those, not yet written (the column names first while
    /// the table has none), and where each row ends in it.
    rows: Vec<u8>,
    row_ends: Vec<usize>,
    /// When to write them and rewrite the count.
    checkpoints: Checkpoints,
    /// The frames the header gives as last written.
    counted: usize,
}

impl NpyCube {
    /// Creates `path` and its [`sidecar`] (neither over an existing file); on failure
    /// neither is left behind.
    pub(crate) fn create(
        path: &Path,
        dtype: Dtype,
        shape: &[usize],
        frame_bytes: usize,
    ) -> Fallible<NpyCube> {
        let file = super::files::create_new(path)?;
        let table_path = sidecar(path);
        let table = match super::files::create_new(&table_path) {
            Ok(t) => t,
            Err(e) => {
                let _ = std::fs::remove_file(path);
                return Err(e);
            }
        };
        let wide = header(dtype, u64::MAX, shape, 0).len();
        let h = header(dtype, 0, shape, wide);
        if let Err(e) = file.write_all_at(&h, 0) {
            let _ = std::fs::remove_file(path);
            let _ = std::fs::remove_file(&table_path);
            let step = "writing the .npy header: ";
            let otherwise = super::frame_file::NOT_ROOM_REMEDY;
            return Err(super::frame_file::write_failed(path, step, &e, otherwise).into());
        }
        Ok(NpyCube {
            path: path.to_owned(),
            frames: Some(FrameFile::new(path, file, h.len() as u64, frame_bytes)),
            table: Some(table),
            dtype,
            shape: shape.to_vec(),
            header_len: h.len(),
            frame_bytes,
            pushed: 0,
            table_rows: 0,
            table_len: 0,
            rows: COLUMNS.as_bytes().to_vec(),
            row_ends: Vec::new(),
            checkpoints: Checkpoints::default(),
            counted: 0,
        })
    }

    /// Counts a frame on file: gathers its row, and at a checkpoint makes the files
    /// readable as they stand ([`CHECKPOINT_S`](super::checkpoint::CHECKPOINT_S)).
    fn pushed(&mut self, meta: FrameMeta) -> Fallible {
        use std::io::Write;
        self.pushed += 1;
        // Into a Vec: formatting without an allocation once it has grown.
        let _ = writeln!(
            self.rows,
            "{},{},{:.9},{:.9}",
            meta.frame_id, meta.count, meta.write_time, meta.record_time
        );
        self.row_ends.push(self.rows.len());
        if !self.checkpoints.due(meta.record_time) {
            return Ok(());
        }
        self.checkpoint()
    }

    /// Hands the gathered frames to the kernel, writes their rows, and rewrites the
    /// header's count with the frames the table then holds.
    fn checkpoint(&mut self) -> Fallible {
        let (Some(frames), Some(table)) = (self.frames.as_mut(), self.table.as_ref()) else {
            return Ok(());
        };
        let stored = frames.flush()?;
        let (_, written) = write_rows(
            table,
            stored - self.table_rows,
            &mut self.rows,
            &mut self.row_ends,
            (&mut self.table_rows, &mut self.table_len),
        );
        if let Err(e) = written {
            return Err(format!("{}: {e}", sidecar(&self.path).display()).into());
        }
        let h = header(
            self.dtype,
            self.table_rows as u64,
            &self.shape,
            self.header_len,
        );
        frames
            .file()
            .write_all_at(&h, 0)
            .map_err(|e| format!("{}: rewriting its frame count: {e}", self.path.display()))?;
        self.counted = self.table_rows;
        Ok(())
    }
}

/// Appends the first `n` of the gathered `rows` (ending at `row_ends`; the column names
/// before them while the table is empty) to `table` after its `on_file` rows (which end at
/// its byte `on_file.1`), counting and dropping those that landed whole. The bytes that
/// landed only in part after them (the room the disk had beyond the whole rows; the caller
/// cuts them), and why not all landed.
fn write_rows(
    table: &File,
    n: usize,
    rows: &mut Vec<u8>,
    row_ends: &mut Vec<usize>,
    on_file: (&mut usize, &mut u64),
) -> (usize, Result<(), TailError>) {
    let head = columns_pending(*on_file.1);
    let len = n.checked_sub(1).map_or(head, |i| row_ends[i]);
    let (done, written) = write_counted(table, &rows[..len], *on_file.1);
    let whole = row_ends[..n].partition_point(|&end| end <= done);
    let names = if done >= head { head } else { 0 };
    let landed = whole.checked_sub(1).map_or(names, |i| row_ends[i]);
    *on_file.0 += whole;
    *on_file.1 += landed as u64;
    rows.drain(..landed);
    row_ends.drain(..whole);
    row_ends.iter_mut().for_each(|end| *end -= landed);
    let result = written.map_err(|e| TailError {
        step: "writing the frame table".into(),
        e,
    });
    (done - landed, result)
}

/// The bytes of column names still to write before the rows of a table of `len` bytes.
fn columns_pending(len: u64) -> usize {
    if len == 0 { COLUMNS.len() } else { 0 }
}

impl CubeSink for NpyCube {
    fn push(&mut self, frame: &mut [u8], meta: FrameMeta) -> Fallible {
        if self.dtype == Dtype::Bool {
            frame.iter_mut().for_each(|b| *b = (*b).min(1));
        }
        self.push_stored(frame, meta)
    }

    fn store_from_ring(&self, frame: &RingFrame<'_>, dst: &mut [u8]) -> Result<(), String> {
        if self.dtype == Dtype::Bool {
            return frame
                .map_into(dst, |b: u8| b.min(1))
                .map_err(|e| e.to_string());
        }
        frame.copy_into(dst).map_err(|e| e.to_string())
    }

    fn push_stored(&mut self, frame: &[u8], meta: FrameMeta) -> Fallible {
        self.frames
            .as_mut()
            .ok_or("file already closed")?
            .push(frame)?;
        self.pushed(meta)
    }

    /// None for a bool stream: its frames are stored as 0 or 1 ([`CubeSink::store_from_ring`]),
    /// not written from the ring as a foreign writer left them (a 255 that npyz refuses).
    fn in_place(&self) -> Option<(&File, u64)> {
        if self.dtype == Dtype::Bool {
            return None;
        }
        self.frames.as_ref()?.in_place()
    }

    fn commit_in_place(&mut self, written: std::io::Result<()>, meta: FrameMeta) -> Fallible {
        self.frames
            .as_mut()
            .ok_or("file already closed")?
            .commit_in_place(written)?;
        self.pushed(meta)
    }

    fn frames(&self) -> usize {
        self.pushed
    }

    /// A `.npy` has no place for them: the summary and the exit status say them.
    fn ending(&mut self, _: u64, _: bool) {}

    /// Keeps the whole frames whose rows reach the table whole (a full disk can cut the
    /// table short: the frames after its last row are dropped, and said so; on a disk the
    /// cube shares, first only as many of its last frames as make room for the rows of the
    /// rest; any other error drops none); closes both files, also after an error.
    fn finish(&mut self, sync: bool) -> Finished {
        let (Some(frames), Some(table)) = (self.frames.take(), self.table.take()) else {
            return Finished::new(0, Vec::new());
        };
        let Closed {
            file,
            end,
            frames: whole,
            flushed,
            ..
        } = frames.close();
        let mut errors: Vec<String> = flushed.err().into_iter().collect();
        let kept = self.finish_files(&file, &table, end, whole, sync, &mut errors);
        for (path, f) in [(self.path.clone(), file), (sidecar(&self.path), table)] {
            errors.extend(frame_file::close(&path, f).err());
        }
        Finished::new(kept, errors)
    }
}

impl NpyCube {
    /// The work of [`CubeSink::finish`] short of closing the files: the cube `file`, whose
    /// `whole` frames end at `end`, and its `table`. The frames kept (`errors` says why
    /// not all).
    fn finish_files(
        &mut self,
        file: &File,
        table: &File,
        end: u64,
        whole: usize,
        sync: bool,
        errors: &mut Vec<String>,
    ) -> usize {
        let (cube, table_path) = (self.path.display().to_string(), sidecar(&self.path));
        let table_path = table_path.display().to_string();
        let failed = |step: String| move |e| TailError { step, e };
        // First cut any part-written frame: on a full disk that frees room for the table.
        if let Err(e) = file.set_len(end) {
            let e = failed("cutting the cube after its whole frames".into())(e);
            return self.as_last_counted(&cube, e, errors);
        }
        // The frames in the cube: `whole` unless some are dropped to make room for the table.
        let mut frames = whole;
        let (room, mut tabled) = self.write_rows(table, whole - self.table_rows);
        // One disk for both files: the room the table had past its whole rows, and the
        // frames dropped to make more. Only a disk without room is a reason to drop frames.
        if let Err(e) = &tabled
            && let Some(full) = e.no_room()
        {
            let head = columns_pending(self.table_len);
            let lens: Vec<usize> = (0..whole - self.table_rows)
                .map(|i| self.row_ends[i] - i.checked_sub(1).map_or(head, |j| self.row_ends[j]))
                .collect();
            let keep = self.table_rows + frames_that_fit(head, &lens, self.frame_bytes, room);
            if keep > self.table_rows && file.set_len(self.cube_len(keep)).is_ok() {
                frames = keep;
                let first = e.to_string();
                (_, tabled) = self.write_rows(table, keep - self.table_rows);
                if tabled.is_ok() {
                    errors.push(format!(
                        "{table_path}: {first}: {}: kept the first {keep} of {whole} whole frames, dropping the last {} to make room for the rows of those kept; {}",
                        full.said(),
                        whole - keep,
                        full.remedy()
                    ));
                }
            }
        }
        let rows = self.table_rows;
        let tabled = tabled.and(table.set_len(self.table_len).map_err(failed(
            "cutting the frame table after its last whole row".into(),
        )));
        let held = match tabled {
            Ok(()) => frames,
            Err(e) if e.no_room().is_some() => {
                errors.push(format!(
                    "{table_path}: {e}: kept the {rows} of {whole} whole frames whose rows it holds, dropping the last {}; {}",
                    whole - rows,
                    e.remedy()
                ));
                rows
            }
            // No reason to drop frames: the cube keeps them, the table the rows it could.
            Err(e) => {
                errors.push(format!(
                    "{table_path}: {e}: the cube keeps {frames} of {whole} whole frames, the table the rows of the first {rows}; {}",
                    e.remedy()
                ));
                frames
            }
        };
        let h = header(self.dtype, held as u64, &self.shape, self.header_len);
        // Without it, the cube's header gives the frames of its last checkpoint.
        let written = file
            .set_len(self.cube_len(held))
            .map_err(failed(format!("cutting the cube after its {held} frames")))
            .and_then(|()| {
                file.write_all_at(&h, 0)
                    .map_err(failed(format!("rewriting its header for {held} frames")))
            });
        let kept = match written {
            Ok(()) => held,
            Err(e) => self.as_last_counted(&cube, e, errors),
        };
        if sync {
            for (path, f) in [(self.path.clone(), file), (sidecar(&self.path), table)] {
                errors.extend(frame_file::sync(&path, f).err());
            }
        }
        kept
    }

    /// After `e` stopped the cube's finishing short of its header: says so in `errors`, and
    /// gives the frames its header still counts (from its last checkpoint; all on file).
    fn as_last_counted(&self, cube: &str, e: TailError, errors: &mut Vec<String>) -> usize {
        let counted = self.counted;
        errors.push(format!(
            "{cube}: {e}: np.load reads the first {counted} frames, which its header gave before; {}",
            e.remedy()
        ));
        counted
    }

    /// [`write_rows`] of the first `n` gathered rows to `table`.
    fn write_rows(&mut self, table: &File, n: usize) -> (usize, Result<(), TailError>) {
        write_rows(
            table,
            n,
            &mut self.rows,
            &mut self.row_ends,
            (&mut self.table_rows, &mut self.table_len),
        )
    }

    /// The length of the cube of `frames` frames.
    fn cube_len(&self, frames: usize) -> u64 {
        (self.header_len + frames * self.frame_bytes) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty directory of this process's in the temporary directory.
    fn empty_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("npy-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A foreign writer's bool byte (255: true to numpy) is recorded as 1, as every read gives
    /// it (npyz refuses a bool byte above 1); it was recorded as it was.
    #[test]
    fn a_foreign_bool_byte_is_recorded_as_1() {
        let dir = empty_dir("bool");
        let path = dir.join("m.npy");
        // A frame large enough to be written from the ring (64 KiB or more) of another dtype
        // is; a bool one is not (it is copied, its bytes stored as 0 or 1).
        let big = 1 << 16;
        for (dtype, from_ring) in [(Dtype::U8, true), (Dtype::Bool, false)] {
            let p = dir.join(format!("big-{dtype}.npy"));
            let c = NpyCube::create(&p, dtype, &[big], big).unwrap();
            assert_eq!(c.in_place().is_some(), from_ring, "{dtype}");
        }
        let mut cube = NpyCube::create(&path, Dtype::Bool, &[4], 4).unwrap();
        let meta = FrameMeta {
            frame_id: 1,
            count: 1,
            write_time: 1.0,
            record_time: 2.0,
        };
        cube.push(&mut [0, 255, 2, 1], meta).unwrap();
        let done = cube.finish(false);
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(done.frames, 1, "{:?}", done.result);
        assert_eq!(&bytes[bytes.len() - 4..], &[0, 1, 1, 1]);
    }

    /// At each checkpoint the table gets the rows of the frames since the last, and the
    /// header the count of frames the table holds; finishing counts the rest.
    #[test]
    fn each_checkpoint_counts_the_frames_since_the_last_in_the_table_and_the_header() {
        let dir = empty_dir("checkpoints");
        let path = dir.join("c.npy");
        let mut cube = NpyCube::create(&path, Dtype::U16, &[2], 4).unwrap();
        let on_file = || {
            let h = std::fs::read(&path).unwrap();
            let text = String::from_utf8_lossy(&h[10..cube_header_len(&h)]).into_owned();
            let table = std::fs::read_to_string(sidecar(&path)).unwrap();
            (
                text,
                table.lines().skip(1).map(str::to_owned).collect::<Vec<_>>(),
            )
        };
        // Frames recorded at these times: the third and the fourth are due a checkpoint.
        let mut seen = Vec::new();
        for (i, t) in [0.0, 0.5, 1.0, 2.0, 2.5].into_iter().enumerate() {
            let meta = FrameMeta::at(i as u64 + 7, t);
            cube.push(&mut [i as u8; 4], meta).unwrap();
            let (header, rows) = on_file();
            let counted = if i < 2 { 0 } else { i.min(3) + 1 };
            assert!(
                header.contains(&format!("'shape': ({counted}, 2)")),
                "{i}: {header}"
            );
            assert_eq!(rows.len(), counted, "{i}: {rows:?}");
            seen.push(rows);
        }
        assert!(seen[4][3].starts_with("10,1,2.000000000,"), "{:?}", seen[4]);
        let done = cube.finish(false);
        let (header, rows) = on_file();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(done.frames, 5, "{:?}", done.result);
        assert!(header.contains("'shape': (5, 2)"), "{header}");
        let ids: Vec<&str> = rows.iter().map(|r| r.split(',').next().unwrap()).collect();
        assert_eq!(ids, ["7", "8", "9", "10", "11"]);
    }

    /// Rows that land whole are counted and dropped from those gathered, the column names
    /// with the first; nothing is left over past them.
    #[test]
    fn written_rows_are_counted_on_file_and_dropped_from_those_gathered() {
        let path = std::env::temp_dir().join(format!("npy-rows-{}.csv", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let table = crate::record::files::create_new(&path).unwrap();
        let mut rows = COLUMNS.as_bytes().to_vec();
        let mut row_ends = Vec::new();
        for row in ["1,1,0.5,0.6\n", "2,1,0.7,0.8\n", "3,2,0.9,1.0\n"] {
            rows.extend_from_slice(row.as_bytes());
            row_ends.push(rows.len());
        }
        let (mut on_file, mut len) = (0, 0);
        let (past, written) = write_rows(
            &table,
            2,
            &mut rows,
            &mut row_ends,
            (&mut on_file, &mut len),
        );
        assert!(
            written.is_ok() && past == 0,
            "{past} bytes past the whole rows"
        );
        assert_eq!((on_file, len), (2, (COLUMNS.len() + 24) as u64));
        assert_eq!(
            (&rows[..], &row_ends[..]),
            (&b"3,2,0.9,1.0\n"[..], &[12][..])
        );
        let (past, written) = write_rows(
            &table,
            1,
            &mut rows,
            &mut row_ends,
            (&mut on_file, &mut len),
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(
            written.is_ok() && past == 0,
            "{past} bytes past the whole rows"
        );
        assert_eq!(
            (on_file, len, rows.len(), row_ends.len()),
            (3, text.len() as u64, 0, 0)
        );
        assert_eq!(
            text,
            format!("{COLUMNS}1,1,0.5,0.6\n2,1,0.7,0.8\n3,2,0.9,1.0\n")
        );
    }

    /// A cube finished without a frame has a table of the column names only: a CSV reader
    /// reads no rows, not no columns.
    #[test]
    fn a_cube_finished_without_frames_has_a_table_of_its_column_names() {
        let path = std::env::temp_dir().join(format!("npy-empty-{}.npy", std::process::id()));
        let mut cube = NpyCube::create(&path, Dtype::F32, &[3], 12).unwrap();
        let done = cube.finish(false);
        let table = std::fs::read_to_string(sidecar(&path)).unwrap();
        let cube_len = std::fs::metadata(&path).unwrap().len();
        let _ = std::fs::remove_file(sidecar(&path));
        let _ = std::fs::remove_file(&path);
        assert_eq!((done.frames, done.result), (0, Ok(())));
        assert_eq!(table, COLUMNS);
        assert_eq!(cube_len % 64, 0, "the header alone");
    }

    /// A table the disk has no room for after a checkpoint (`/dev/full` stands in for it)
    /// keeps the rows it holds, and the cube their frames: dropping the frames after them
    /// frees too little for a row of theirs, so none is written again.
    #[test]
    fn a_table_the_disk_refuses_keeps_the_frames_of_the_rows_it_holds() {
        let path = std::env::temp_dir().join(format!("npy-refused-{}.npy", std::process::id()));
        let mut cube = NpyCube::create(&path, Dtype::U8, &[4], 4).unwrap();
        for (i, t) in [0.0, 0.5, 1.0, 1.1, 1.2].into_iter().enumerate() {
            let meta = FrameMeta::at(i as u64, t);
            cube.push(&mut [i as u8; 4], meta).unwrap();
        }
        assert_eq!(cube.table_rows, 3, "the third frame's checkpoint");
        cube.table = Some(File::options().write(true).open("/dev/full").unwrap());
        let done = cube.finish(false);
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(sidecar(&path));
        let _ = std::fs::remove_file(&path);
        let e = done.result.unwrap_err();
        assert!(
            e.contains(".frames.csv: writing the frame table: ")
                && e.contains("No space left on device")
                && e.contains(
                    "kept the 3 of 5 whole frames whose rows it holds, dropping the last 2; free some space and record again"
                )
                && !e.contains("kept the first"),
            "{e}"
        );
        assert_eq!(done.frames, 3);
        let header_len = cube_header_len(&bytes);
        assert_eq!(&bytes[header_len..], &[0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
        assert!(String::from_utf8_lossy(&bytes[..header_len]).contains("'shape': (3, 4)"));
    }

    /// The length of the `.npy` header at the start of `file`.
    fn cube_header_len(file: &[u8]) -> usize {
        10 + usize::from(u16::from_le_bytes([file[8], file[9]]))
    }

    #[test]
    fn headers_keep_their_length_when_the_count_is_rewritten() {
        let wide = header(Dtype::U16, u64::MAX, &[240, 240], 0).len();
        assert_eq!(wide % 64, 0);
        for frames in [0, 12, u64::MAX] {
            let real = header(Dtype::U16, frames, &[240, 240], wide);
            assert_eq!(real.len(), wide);
            let text = String::from_utf8_lossy(&real[10..]);
            assert!(
                text.contains(&format!("'shape': ({frames}, 240, 240)")),
                "{text}"
            );
            assert!(text.ends_with('\n'));
        }
    }

    /// A header's natural length is the multiple of 64 bytes that holds its dict and the
    /// newline after it, at every dict length (those one or two short of a multiple too).
    #[test]
    fn natural_headers_hold_their_dict_and_newline_in_the_fewest_64_byte_blocks() {
        for dims in 0..40 {
            for last in [1, 10, 100] {
                let mut shape = vec![1; dims];
                shape.push(last);
                let h = header(Dtype::U8, 0, &shape, 0);
                let text = String::from_utf8_lossy(&h[10..]).into_owned();
                let dict = text.trim_end();
                assert!(dict.ends_with("), }") && text.ends_with('\n'), "{text:?}");
                assert_eq!(h.len() % 64, 0, "{text:?}");
                assert!(
                    h.len() < 10 + dict.len() + 1 + 64,
                    "{} for {text:?}",
                    h.len()
                );
                assert_eq!(usize::from(u16::from_le_bytes([h[8], h[9]])), h.len() - 10);
            }
        }
    }

    #[test]
    fn a_table_cut_short_keeps_the_frames_whose_rows_the_dropped_ones_make_room_for() {
        // Rows of 10 bytes: 100 frames of 40 bytes, 30 bytes of room past the table's rows.
        let lens = [10; 100];
        // 10k <= 30 + 40 (100 - k): k <= 80.
        assert_eq!(frames_that_fit(0, &lens, 40, 30), 80);
        assert_eq!(frames_that_fit(0, &lens, 0, 30), 3, "nothing freed");
        // Column names of 10 bytes still to write: 10 + 10k <= 30 + 40 (100 - k).
        assert_eq!(frames_that_fit(10, &lens, 40, 30), 80);
        assert_eq!(frames_that_fit(10, &lens, 0, 30), 2, "nothing freed");
        assert_eq!(frames_that_fit(0, &lens, 40, 1000), 100);
        assert_eq!(frames_that_fit(0, &[], 40, 5), 0);
        assert_eq!(frames_that_fit(10, &[], 40, 5), 0, "not even the names");
    }
}
