//! `.npy` cubes for `record` (shape `(frames, *frame_shape)`, every stream dtype) with a
//! sidecar table `<file>.frames.csv` of frame id, count, write time and record time.
//!
//! The header is written with room for any frame count and rewritten with the real count
//! when the file is finished, so frames stream to disk as they arrive. Both files are
//! created when the cube is (neither over an existing file); the table is written when the
//! cube is finished, and when a full disk cuts it short the cube keeps only the frames whose
//! rows reached it whole (after any other error, all of them).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use shmstream::{Dtype, RingFrame};

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

/// A `.npy` v1.0 header for `frames` frames, padded to `len` bytes (0: the natural length
/// for the widest count, so a rewrite with the real count fits in place).
fn header(dtype: Dtype, frames: u64, shape: &[usize], len: usize) -> Vec<u8> {
    let mut dims = frames.to_string();
    if len == 0 {
        dims = u64::MAX.to_string();
    }
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

/// The frame table as CSV lines, the column names first.
fn table_lines(meta: &[FrameMeta]) -> Vec<String> {
    let names = "frame_id,count,write_time,record_time\n".to_string();
    let rows = meta.iter().map(|m| {
        format!(
            "{},{},{:.9},{:.9}\n",
            m.frame_id, m.count, m.write_time, m.record_time
        )
    });
    std::iter::once(names).chain(rows).collect()
}

/// Writes `lines` to `file` from its start and cuts it after the last that landed whole: the
/// rows on file (lines after the first), the bytes that landed, and why not all.
fn write_table(file: &File, lines: &[String]) -> (usize, usize, Result<(), TailError>) {
    let (done, written) = write_counted(file, lines.concat().as_bytes(), 0);
    let (mut end, mut whole) = (0, 0usize);
    for l in lines {
        if end + l.len() > done {
            break;
        }
        end += l.len();
        whole += 1;
    }
    let failed = |step: &str| {
        let step = step.to_owned();
        move |e| TailError { step, e }
    };
    let cut = file.set_len(end as u64);
    let result = written
        .map_err(failed("writing the frame table"))
        .and(cut.map_err(failed("cutting the frame table after its last whole row")));
    (whole.saturating_sub(1), done, result)
}

/// The most of the `whole` frames of `frame_bytes` whose rows (`lines`, the column names
/// first) fit in `room` table bytes plus the bytes freed by dropping the frames after them:
/// on a full disk shared by the cube and its table, what a table cut short at `room` can
/// be made whole for.
fn frames_that_fit(lines: &[String], whole: usize, frame_bytes: usize, room: usize) -> usize {
    let (mut len, mut fit) = (0u64, 0);
    // The table grows by a row as the cube shrinks by a frame: the first that does not fit
    // is the last to look at.
    for (k, l) in lines.iter().enumerate().take(whole + 1) {
        len += l.len() as u64;
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
    /// The sidecar table, empty until the cube is finished (and closed with it).
    table: Option<File>,
    dtype: Dtype,
    shape: Vec<usize>,
    header_len: usize,
    frame_bytes: usize,
    meta: Vec<FrameMeta>,
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
        let file = super::create_new(path)?;
        let table_path = sidecar(path);
        let table = match super::create_new(&table_path) {
            Ok(t) => t,
            Err(e) => {
                let _ = std::fs::remove_file(path);
                return Err(e);
            }
        };
        let h = header(dtype, 0, shape, 0);
        if let Err(e) = file.write_all_at(&h, 0) {
            let _ = std::fs::remove_file(path);
            let _ = std::fs::remove_file(&table_path);
            return Err(format!("{}: {e}", path.display()).into());
        }
        Ok(NpyCube {
            path: path.to_owned(),
            frames: Some(FrameFile::new(path, file, h.len() as u64, frame_bytes)),
            table: Some(table),
            dtype,
            shape: shape.to_vec(),
            header_len: h.len(),
            frame_bytes,
            meta: Vec::new(),
        })
    }
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
        self.meta.push(meta);
        Ok(())
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
        self.meta.push(meta);
        Ok(())
    }

    fn frames(&self) -> usize {
        self.meta.len()
    }

    /// Keeps the whole frames whose rows reach the table whole (a full disk can cut the
    /// table short: the frames after its last row are dropped, and said so; on a disk the
    /// cube shares, first only as many of its last frames as make room for the rows of the
    /// rest; any other error drops none); closes both files, also after an error.
    /// A `.npy` has no place for them: the summary and the exit status say them.
    fn ending(&mut self, _: u64, _: bool) {}

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
        &self,
        file: &File,
        table: &File,
        end: u64,
        whole: usize,
        sync: bool,
        errors: &mut Vec<String>,
    ) -> usize {
        let (cube, table_path) = (self.path.display(), sidecar(&self.path));
        let table_path = table_path.display();
        let failed = |step: String| move |e| TailError { step, e };
        // First cut any part-written frame: on a full disk that frees room for the table.
        if let Err(e) = file.set_len(end) {
            let e = failed("cutting the cube after its whole frames".into())(e);
            errors.push(format!(
                "{cube}: {e}: it holds no frame np.load reads; {}",
                e.remedy()
            ));
            return 0;
        }
        let lines = table_lines(&self.meta[..whole]);
        // The frames in the cube: `whole` unless some are dropped to make room for the table.
        let mut frames = whole;
        let (mut rows, room, mut tabled) = write_table(table, &lines);
        // One disk for both files: the table's room, and the frames dropped to make more.
        // Only a disk without room is a reason to drop frames.
        if let Err(e) = &tabled
            && let Some(full) = e.no_room()
        {
            let keep = frames_that_fit(&lines, whole, self.frame_bytes, room);
            if keep > rows && file.set_len(self.cube_len(keep)).is_ok() {
                frames = keep;
                let first = e.to_string();
                (rows, _, tabled) = write_table(table, &lines[..=keep]);
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
        // Without its real header the cube holds no frame `np.load` reads.
        let written = file
            .set_len(self.cube_len(held))
            .map_err(failed(format!("cutting the cube after its {held} frames")))
            .and_then(|()| {
                file.write_all_at(&h, 0)
                    .map_err(failed(format!("rewriting its header for {held} frames")))
            });
        let kept = match written {
            Ok(()) => held,
            Err(e) => {
                errors.push(format!(
                    "{cube}: {e}: it holds no frame np.load reads; {}",
                    e.remedy()
                ));
                0
            }
        };
        if sync {
            for (path, f) in [(self.path.clone(), file), (sidecar(&self.path), table)] {
                errors.extend(frame_file::sync(&path, f).err());
            }
        }
        kept
    }

    /// The length of the cube of `frames` frames.
    fn cube_len(&self, frames: usize) -> u64 {
        (self.header_len + frames * self.frame_bytes) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A foreign writer's bool byte (255: true to numpy) is recorded as 1, as every read gives
    /// it (npyz refuses a bool byte above 1); it was recorded as it was.
    #[test]
    fn a_foreign_bool_byte_is_recorded_as_1() {
        let dir = std::env::temp_dir().join(format!("npy-bool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
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

    #[test]
    fn headers_keep_their_length_when_the_count_is_rewritten() {
        let wide = header(Dtype::U16, 0, &[240, 240], 0);
        assert_eq!(wide.len() % 64, 0);
        let real = header(Dtype::U16, 12, &[240, 240], wide.len());
        assert_eq!(real.len(), wide.len());
        let text = String::from_utf8_lossy(&real[10..]);
        assert!(text.contains("'shape': (12, 240, 240)"), "{text}");
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn a_table_cut_short_keeps_the_frames_whose_rows_the_dropped_ones_make_room_for() {
        // Names of 10 bytes, rows of 10: 100 frames of 40 bytes, 30 bytes of table on file.
        let lines: Vec<String> = std::iter::once("n".repeat(9) + "\n")
            .chain((0..100).map(|_| "r".repeat(9) + "\n"))
            .collect();
        // 10 + 10k <= 30 + 40 (100 - k): k <= 80.
        assert_eq!(frames_that_fit(&lines, 100, 40, 30), 80);
        assert_eq!(frames_that_fit(&lines, 100, 0, 30), 2, "nothing freed");
        assert_eq!(frames_that_fit(&lines, 100, 40, 1010), 100);
        assert_eq!(frames_that_fit(&lines, 0, 40, 5), 0);
    }
}
