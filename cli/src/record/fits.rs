//! FITS cubes for `record`: the frames as one image (NAXIS3 = frames, the stream's dtype
//! mapped to BITPIX with cfitsio's BZERO convention for unsigned types) and a binary table
//! `FRAMES` of frame id, count, write time and record time per frame.

use std::path::Path;

use fitsio::FitsFile;
use fitsio::hdu::FitsHdu;
use fitsio::images::{ImageDescription, ImageType};
use fitsio::tables::{ColumnDataType, ColumnDescription};
use shmstream::Dtype;

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

/// One FITS file being filled.
pub(crate) struct FitsCube {
    file: FitsFile,
    hdu: Option<FitsHdu>,
    dtype: Dtype,
    shape: Vec<usize>,
    frame_elems: usize,
    written: usize,
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
        let mut dims = vec![capacity];
        dims.extend_from_slice(shape);
        let desc = ImageDescription {
            data_type: image_type(dtype)?,
            dimensions: &dims,
        };
        let mut file = FitsFile::create(path)
            .with_custom_primary(&desc)
            .open()
            .map_err(|e| format!("{}: creating the FITS file: {e}", path.display()))?;
        let hdu = file.primary_hdu()?;
        hdu.write_key(&mut file, "STREAM", stream.to_owned())?;
        hdu.write_key(&mut file, "DTYPE", dtype.numpy_name().to_owned())?;
        hdu.write_key(&mut file, "ORIGIN", "shmstream record".to_owned())?;
        Ok(FitsCube {
            file,
            hdu: Some(hdu),
            dtype,
            shape: shape.to_vec(),
            frame_elems: shape.iter().product(),
            written: 0,
            meta: Vec::with_capacity(capacity),
        })
    }
}

macro_rules! write_as {
    ($self:ident, $hdu:ident, $bytes:ident, $t:ty) => {{
        let px: &[$t] = bytemuck::cast_slice($bytes);
        let start = $self.written * $self.frame_elems;
        $hdu.write_section(&mut $self.file, start, start + $self.frame_elems, px)
    }};
}

impl CubeSink for FitsCube {
    fn push(&mut self, bytes: &[u8], meta: FrameMeta) -> Fallible {
        let hdu = self.hdu.as_ref().ok_or("FITS image already closed")?;
        match self.dtype {
            Dtype::U8 | Dtype::Bool => write_as!(self, hdu, bytes, u8),
            Dtype::I8 => write_as!(self, hdu, bytes, i8),
            Dtype::I16 => write_as!(self, hdu, bytes, i16),
            Dtype::U16 => write_as!(self, hdu, bytes, u16),
            Dtype::I32 => write_as!(self, hdu, bytes, i32),
            Dtype::U32 => write_as!(self, hdu, bytes, u32),
            Dtype::I64 => write_as!(self, hdu, bytes, i64),
            Dtype::F32 => write_as!(self, hdu, bytes, f32),
            Dtype::F64 => write_as!(self, hdu, bytes, f64),
            other => return Err(image_type(other).unwrap_err().into()),
        }?;
        self.written += 1;
        self.meta.push(meta);
        Ok(())
    }

    fn frames(&self) -> usize {
        self.written
    }

    fn finish(&mut self) -> Fallible {
        let Some(hdu) = self.hdu.take() else {
            return Ok(());
        };
        if self.written < self.meta.capacity() {
            let mut dims = vec![self.written];
            dims.extend_from_slice(&self.shape);
            hdu.resize(&mut self.file, &dims)?;
        }
        let col =
            |name: &str, t: ColumnDataType| ColumnDescription::new(name).with_type(t).create();
        let table = self.file.create_table(
            "FRAMES",
            &[
                col("FRAME_ID", ColumnDataType::LongLong)?,
                col("COUNT", ColumnDataType::LongLong)?,
                col("WRITE_TIME", ColumnDataType::Double)?,
                col("RECORD_TIME", ColumnDataType::Double)?,
            ],
        )?;
        let ids: Vec<i64> = self.meta.iter().map(|m| m.frame_id as i64).collect();
        let counts: Vec<i64> = self.meta.iter().map(|m| m.count as i64).collect();
        let writes: Vec<f64> = self.meta.iter().map(|m| m.write_time).collect();
        let records: Vec<f64> = self.meta.iter().map(|m| m.record_time).collect();
        table.write_col(&mut self.file, "FRAME_ID", &ids)?;
        table.write_col(&mut self.file, "COUNT", &counts)?;
        table.write_col(&mut self.file, "WRITE_TIME", &writes)?;
        table.write_col(&mut self.file, "RECORD_TIME", &records)?;
        Ok(())
    }
}
