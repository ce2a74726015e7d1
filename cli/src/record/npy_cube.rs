//! `.npy` cubes for `record` (shape `(frames, *frame_shape)`, every stream dtype) with a
//! sidecar table `<file>.frames.csv` of frame id, count, write time and record time.
//!
//! The header is written with room for any frame count and rewritten with the real count
//! when the file is finished, so frames stream to disk as they arrive.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use shmstream::{Dtype, RingFrame};

use super::frame_file::FrameFile;
use super::{CubeSink, FrameMeta};
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

pub(crate) struct NpyCube {
    path: PathBuf,
    frames: Option<FrameFile>,
    dtype: Dtype,
    shape: Vec<usize>,
    header_len: usize,
    meta: Vec<FrameMeta>,
}

impl NpyCube {
    pub(crate) fn create(
        path: &Path,
        dtype: Dtype,
        shape: &[usize],
        frame_bytes: usize,
    ) -> Fallible<NpyCube> {
        let mut file = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let h = header(dtype, 0, shape, 0);
        file.write_all(&h)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(NpyCube {
            path: path.to_owned(),
            frames: Some(FrameFile::new(path, file, h.len() as u64, frame_bytes)),
            dtype,
            shape: shape.to_vec(),
            header_len: h.len(),
            meta: Vec::new(),
        })
    }
}

impl CubeSink for NpyCube {
    fn push(&mut self, frame: &mut [u8], meta: FrameMeta) -> Fallible {
        self.push_stored(frame, meta)
    }

    fn store_from_ring(&self, frame: &RingFrame<'_>, dst: &mut [u8]) -> Result<(), String> {
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

    fn in_place(&self) -> Option<(&File, u64)> {
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

    fn finish(&mut self) -> Fallible {
        let Some(frames) = self.frames.take() else {
            return Ok(());
        };
        // On a full disk keep only the frames that reached the file whole: the file is cut
        // after the last of them and the header and table say how many.
        let (mut file, end, frames, flushed) = frames.close();
        file.set_len(end)?;
        let h = header(self.dtype, frames as u64, &self.shape, self.header_len);
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&h)?;
        let mut table = String::from("frame_id,count,write_time,record_time\n");
        for m in &self.meta[..frames] {
            table.push_str(&format!(
                "{},{},{:.9},{:.9}\n",
                m.frame_id, m.count, m.write_time, m.record_time
            ));
        }
        let sidecar = self.path.with_extension("frames.csv");
        std::fs::write(&sidecar, table).map_err(|e| format!("{}: {e}", sidecar.display()))?;
        flushed.map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
