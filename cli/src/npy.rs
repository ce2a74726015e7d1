//! `load` and `dump`: `.npy` files in and out of streams, through the `npyz` crate (with its
//! `half` and `complex` features, it covers all 14 stream dtypes: ints, uints, float16/32/64,
//! bool and complex64/128).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::path::Path;
use std::time::Duration;

use npyz::{DType, Order, TypeChar, WriterBuilder};
use shmstream::ndarray::{ArrayD, IxDyn, ShapeBuilder};
use shmstream::{Complex32, Complex64, Dtype, Error, Stream, StreamOptions, f16, with_dtype};

use crate::Fallible;

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

/// `shmstream load NAME FILE.npy`.
/// npyz multiplies the header's dimensions unchecked (a debug build panics, a release build
/// wraps), so a shape whose element count overflows is refused before npyz sees the file.
fn check_shape_product(file: &Path) -> Fallible {
    let mut head = Vec::new();
    File::open(file)
        .and_then(|f| f.take(65_536 + 10).read_to_end(&mut head))
        .map_err(|e| format!("cannot open {}: {e}", file.display()))?;
    let text = String::from_utf8_lossy(&head);
    let Some(key) = text.find("'shape'").or_else(|| text.find("\"shape\"")) else {
        return Ok(()); // npyz reports the missing key
    };
    let rest = &text[key..];
    let (Some(open), Some(close)) = (rest.find('('), rest.find(')')) else {
        return Ok(());
    };
    if open > close {
        return Ok(());
    }
    let mut count: u64 = 1;
    for dim in rest[open + 1..close]
        .split(',')
        .filter_map(|d| d.trim().parse::<u64>().ok())
    {
        count = count.checked_mul(dim).ok_or_else(|| {
            format!(
                "{} is not a readable .npy file: its shape {} has more elements than fit in 64 bits",
                file.display(),
                &rest[open..=close]
            )
        })?;
    }
    Ok(())
}

pub(crate) fn load(name: &str, file: &Path, frame_id: Option<u64>, timeout: Duration) -> Fallible {
    check_shape_product(file)?;
    let reader = BufReader::new(
        File::open(file).map_err(|e| format!("cannot open {}: {e}", file.display()))?,
    );
    let npy = npyz::NpyFile::new(reader)
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
                "shape/dtype mismatch: stream '{name}' holds {}, but {} holds {}",
                describe(s.dtype(), s.shape()),
                file.display(),
                describe(dtype, &shape)
            )
            .into());
        }
        Ok(())
    };
    // Opened (or created) only once the data was read: a file that fails to read creates
    // nothing.
    let open_or_create = || -> Fallible<(Stream, bool)> {
        let (stream, created) = match Stream::open(name) {
            Ok(s) => (s, false),
            Err(Error::NotFound { .. }) => {
                match StreamOptions::new(name).shape(&shape).dtype(dtype).create() {
                    Ok(s) => (s, true),
                    Err(Error::AlreadyExists { .. }) => (Stream::open(name)?, false),
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        mismatch(&stream)?;
        stream.set_default_timeout(timeout);
        Ok((stream, created))
    };
    with_dtype!(dtype, T => {
        let data: Vec<T> = npy.into_vec::<T>().map_err(|e| format!("reading {}: {e}", file.display()))?;
        let (stream, created) = open_or_create()?;
        if fortran {
            let a = ArrayD::from_shape_vec(IxDyn(&shape).f(), data).map_err(|e| format!("{}: {e}", file.display()))?;
            match frame_id {
                Some(id) => stream.write_frame(&a, id)?,
                None => stream.write(&a)?,
            }
        } else {
            match frame_id {
                Some(id) => stream.write_slice_frame(&data, id)?,
                None => stream.write_slice(&data)?,
            }
        }
        println!(
            "loaded {} into '{name}'{}: {} (count {})",
            file.display(),
            if created { " (created)" } else { "" },
            describe(dtype, &shape),
            stream.count()
        );
    });
    Ok(())
}

/// `shmstream dump NAME [-o FILE.npy]`.
pub(crate) fn dump(name: &str, output: Option<&Path>) -> Fallible {
    let stream = Stream::open_readonly(name)?;
    with_dtype!(stream.dtype(), T => {
        let p = stream.read_publication::<T>()?;
        let data = p.payload.as_slice().ok_or("internal: snapshot not contiguous")?;
        match output {
            Some(path) => {
                write_npy(path, stream.shape(), data)?;
                println!("dumped '{name}' ({}, count {}) to {}", describe(stream.dtype(), stream.shape()), p.info.count, path.display());
            }
            None => {
                let s = T::summarize(data);
                println!("name:   {name}");
                println!("shape:  {:?}", stream.shape());
                println!("dtype:  {}", stream.dtype());
                println!("count:  {}", p.info.count);
                println!("min:    {}", s.min);
                println!("max:    {}", s.max);
                println!("mean:   {}", s.mean);
            }
        }
    });
    Ok(())
}

fn write_npy<T: npyz::AutoSerialize + Copy>(path: &Path, shape: &[usize], data: &[T]) -> Fallible {
    let ctx = |e: std::io::Error| format!("writing {}: {e}", path.display());
    let file = File::create(path).map_err(ctx)?;
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(BufWriter::new(file))
        .begin_nd()
        .map_err(ctx)?;
    w.extend(data.iter().copied()).map_err(ctx)?;
    w.finish().map_err(ctx)?;
    Ok(())
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

fn fmt_f64(v: f64) -> String {
    if v.is_finite() && v == v.trunc() && v.abs() < 1e15 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

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
                Summary { min: min.to_string(), max: max.to_string(), mean: fmt_f64(sum / data.len() as f64) }
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
                let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
                let (mut re, mut im) = (0.0f64, 0.0f64);
                for z in data {
                    let m = f64::from(z.norm());
                    lo = lo.min(m);
                    hi = hi.max(m);
                    re += f64::from(z.re);
                    im += f64::from(z.im);
                }
                let n = data.len() as f64;
                Summary { min: format!("{} (|z|)", fmt_f64(lo)), max: format!("{} (|z|)", fmt_f64(hi)), mean: format!("{}{:+}j", fmt_f64(re / n), im / n) }
            }
        }
    )*};
}

complex_summary!(Complex32, Complex64);
