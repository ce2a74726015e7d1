//! FITS cubes for `record`: the frames as one image (NAXIS3 = frames, the stream's dtype
//! mapped to BITPIX with cfitsio's BZERO convention for unsigned types) and a binary table
//! `FRAMES` of frame id, count, write time and record time per frame.
//!
//! cfitsio (the `fitsio` crate) writes the headers and the table. The pixels in between are
//! big-endian values, offset by BZERO where the type needs it; we encode each frame in one
//! pass and append it to the data unit ourselves, because cfitsio's own path (convert, swap,
//! write in 28,800-byte pieces, and zero-fill the whole cube first) does not keep up with a
//! 2 kHz camera on a small host. The cube is created with NAXIS3 = 0 (so cfitsio fills
//! nothing) and its NAXIS3 card set to the frames written when the file is finished.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use fitsio::FitsFile;
use fitsio::images::{ImageDescription, ImageType};
use fitsio::tables::{ColumnDataType, ColumnDescription};
use shmstream::{Dtype, RingFrame};

use super::frame_file::FrameFile;
use super::{CubeSink, FrameMeta};
use crate::Fallible;

/// The FITS image type of a stream dtype, or why it has none.
pub(crate) fn image_type(dtype: Dtype) -> Result<ImageType, String> {
    Ok(match dtype {
        Dtype::U8 | Dtype::Bool => ImageType::UnsignedByte,
        Dtype::I8 => ImageType::Byte,
        Dtype::I16 => ImageType::Short,
        Dtype::U16 => ImageType::UnsignedShort,
        Dtype::I32 => ImageType::Long,
        Dtype::U32 => ImageType::UnsignedLong,
        Dtype::I64 => ImageType::LongLong,
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
/// offset (u16 and u32 as signed, i8 as unsigned) the offset applied, which is flipping
/// the sign bit.
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
    let flip = matches!(dtype, Dtype::I8 | Dtype::U16 | Dtype::U32);
    match dtype.itemsize() {
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
        _ => words(from, frame, |x: u64| x.swap_bytes()),
    }
}

/// The primary header of a FITS file as cfitsio wrote it: where its `NAXIS3` card is and
/// where the data unit starts (after the 2880-byte block holding `END`).
fn primary_layout(path: &Path) -> Fallible<(u64, u64)> {
    let mut f = File::open(path)?;
    let mut block = [0u8; 2880];
    let mut naxis3 = None;
    let mut at = 0u64;
    loop {
        f.read_exact(&mut block)
            .map_err(|e| format!("{}: reading the FITS header back: {e}", path.display()))?;
        for card in block.chunks(80) {
            if card.starts_with(b"NAXIS3  =") {
                naxis3 = Some(at);
            }
            if card.starts_with(b"END     ") {
                let naxis3 = naxis3.ok_or_else(|| format!("{}: no NAXIS3 card", path.display()))?;
                return Ok((naxis3, (at + 80).next_multiple_of(2880)));
            }
            at += 80;
        }
    }
}

/// A fixed-format integer card (the value right-justified in columns 11-30).
fn naxis3_card(frames: usize) -> Vec<u8> {
    let mut card = format!("NAXIS3  = {frames:>20} / length of data axis 3").into_bytes();
    card.resize(80, b' ');
    card
}

/// One FITS file being filled.
pub(crate) struct FitsCube {
    path: PathBuf,
    frames: Option<FrameFile>,
    /// Offset of the NAXIS3 card in the file.
    naxis3_at: u64,
    dtype: Dtype,
    meta: Vec<FrameMeta>,
}

impl FitsCube {
    pub(crate) fn create(
        path: &Path,
        stream: &str,
        dtype: Dtype,
        shape: &[usize],
        capacity: usize,
    ) -> Fallible<FitsCube> {
        let mut dims = vec![0];
        dims.extend_from_slice(shape);
        let desc = ImageDescription {
            data_type: image_type(dtype)?,
            dimensions: &dims,
        };
        {
            let mut file = FitsFile::create(path)
                .with_custom_primary(&desc)
                .open()
                .map_err(|e| format!("{}: creating the FITS file: {e}", path.display()))?;
            let hdu = file.primary_hdu()?;
            hdu.write_key(&mut file, "STREAM", stream.to_owned())?;
            hdu.write_key(&mut file, "DTYPE", dtype.numpy_name().to_owned())?;
            hdu.write_key(&mut file, "ORIGIN", "shmstream record".to_owned())?;
        }
        let frame_bytes = shape.iter().product::<usize>() * dtype.itemsize();
        let (naxis3_at, data_start) = primary_layout(path)?;
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(FitsCube {
            path: path.to_owned(),
            frames: Some(FrameFile::new(path, file, data_start, frame_bytes)),
            naxis3_at,
            dtype,
            meta: Vec::with_capacity(capacity),
        })
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

    fn finish(&mut self) -> Fallible {
        let Some(frames) = self.frames.take() else {
            return Ok(());
        };
        // On a full disk the cube keeps the frames that reached the file whole: the file is
        // cut after them (and zero-padded to a whole 2880-byte block, as FITS requires; the
        // data unit starts on one) and NAXIS3 says how many.
        let (mut file, end, frames, flushed) = frames.close();
        file.set_len(end)?;
        file.seek(SeekFrom::Start(self.naxis3_at))?;
        file.write_all(&naxis3_card(frames))
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        file.set_len(end.next_multiple_of(2880))?;
        drop(file);
        let mut fits = FitsFile::edit(&self.path)
            .map_err(|e| format!("{}: reopening the FITS file: {e}", self.path.display()))?;
        let col =
            |name: &str, t: ColumnDataType| ColumnDescription::new(name).with_type(t).create();
        let table = fits.create_table(
            "FRAMES",
            &[
                col("FRAME_ID", ColumnDataType::LongLong)?,
                col("COUNT", ColumnDataType::LongLong)?,
                col("WRITE_TIME", ColumnDataType::Double)?,
                col("RECORD_TIME", ColumnDataType::Double)?,
            ],
        )?;
        let meta = &self.meta[..frames];
        let ids: Vec<i64> = meta.iter().map(|m| m.frame_id as i64).collect();
        let counts: Vec<i64> = meta.iter().map(|m| m.count as i64).collect();
        let writes: Vec<f64> = meta.iter().map(|m| m.write_time).collect();
        let records: Vec<f64> = meta.iter().map(|m| m.record_time).collect();
        table.write_col(&mut fits, "FRAME_ID", &ids)?;
        table.write_col(&mut fits, "COUNT", &counts)?;
        table.write_col(&mut fits, "WRITE_TIME", &writes)?;
        table.write_col(&mut fits, "RECORD_TIME", &records)?;
        flushed.map_err(Into::into)
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

    #[test]
    fn the_naxis3_card_is_a_fixed_format_integer() {
        let card = naxis3_card(1234);
        assert_eq!(card.len(), 80);
        assert_eq!(&card[..30], b"NAXIS3  =                 1234");
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
        assert_eq!(
            encoded(Dtype::F32, &(-0.25f32).to_le_bytes()),
            (-0.25f32).to_be_bytes()
        );
    }
}
