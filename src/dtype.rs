//! The 14 element types a stream can hold, in pyshmem 1.4.0's order.
//!
//! [`Dtype`] is the runtime tag stored in the header (its numeric code is the index into
//! pyshmem's `DTYPE_TABLE`); [`Element`] is the sealed compile-time side that typed calls use.

use half::f16;
use num_complex::{Complex32, Complex64};
use serde::{Deserialize, Serialize};

/// A stream's element type. The discriminant is the pyshmem v3 dtype code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
#[repr(u16)]
pub enum Dtype {
    /// `int8`
    I8 = 0,
    /// `int16`
    I16 = 1,
    /// `int32`
    I32 = 2,
    /// `int64`
    I64 = 3,
    /// `uint8`
    U8 = 4,
    /// `uint16`
    U16 = 5,
    /// `uint32`
    U32 = 6,
    /// `uint64`
    U64 = 7,
    /// `float16` (IEEE half, via the `half` crate)
    F16 = 8,
    /// `float32`
    F32 = 9,
    /// `float64`
    F64 = 10,
    /// `bool` (one byte: writes store 0 or 1; reads take any nonzero byte as `true`, as
    /// numpy does)
    Bool = 11,
    /// `complex64` (two `f32`)
    Complex64 = 12,
    /// `complex128` (two `f64`)
    Complex128 = 13,
}

impl Dtype {
    /// Every dtype, in code order.
    pub const ALL: [Dtype; 14] = [
        Dtype::I8,
        Dtype::I16,
        Dtype::I32,
        Dtype::I64,
        Dtype::U8,
        Dtype::U16,
        Dtype::U32,
        Dtype::U64,
        Dtype::F16,
        Dtype::F32,
        Dtype::F64,
        Dtype::Bool,
        Dtype::Complex64,
        Dtype::Complex128,
    ];

    /// The dtype for a pyshmem v3 code, if the code is known.
    pub fn from_code(code: u16) -> Option<Dtype> {
        Self::ALL.get(usize::from(code)).copied()
    }

    /// The pyshmem v3 code stored in the header.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// Bytes per element.
    pub fn itemsize(self) -> usize {
        match self {
            Dtype::I8 | Dtype::U8 | Dtype::Bool => 1,
            Dtype::I16 | Dtype::U16 | Dtype::F16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::I64 | Dtype::U64 | Dtype::F64 | Dtype::Complex64 => 8,
            Dtype::Complex128 => 16,
        }
    }

    /// numpy's name for the type (`"float32"`, `"bool"`, ...).
    pub fn numpy_name(self) -> &'static str {
        match self {
            Dtype::I8 => "int8",
            Dtype::I16 => "int16",
            Dtype::I32 => "int32",
            Dtype::I64 => "int64",
            Dtype::U8 => "uint8",
            Dtype::U16 => "uint16",
            Dtype::U32 => "uint32",
            Dtype::U64 => "uint64",
            Dtype::F16 => "float16",
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
            Dtype::Bool => "bool",
            Dtype::Complex64 => "complex64",
            Dtype::Complex128 => "complex128",
        }
    }

    /// The Rust element type that reads and writes it (`"f32"`, `"f16"` for
    /// `shmstream::f16`, `"Complex32"` for complex64, `"Complex64"` for complex128).
    pub fn rust_type(self) -> &'static str {
        match self {
            Dtype::Complex64 => "Complex32",
            Dtype::Complex128 => "Complex64",
            d => d.short_name(),
        }
    }

    /// Parses numpy's name (also accepts the short forms `f32`, `u8`, `c64`, ...).
    pub fn from_numpy_name(name: &str) -> Option<Dtype> {
        let name = name.trim().to_ascii_lowercase();
        Self::ALL.into_iter().find(|d| {
            d.numpy_name() == name
                || d.short_name() == name
                || format!("{d:?}").to_lowercase() == name
        })
    }

    /// Parses numpy's name only (`"uint8"`, not `"u8"`), as a [`crate::StreamConfig`] spells
    /// its dtype: pyshmem hands the string to numpy, which reads some of this crate's short
    /// names as other types (`"u8"` is `uint64` there). Any other spelling is refused with
    /// the numpy name to write instead.
    pub fn from_numpy_name_only(name: &str) -> Result<Dtype, String> {
        if let Some(d) = Self::ALL.into_iter().find(|d| d.numpy_name() == name) {
            return Ok(d);
        }
        // numpy's reading of the short names that are numpy spellings too.
        let numpy_reads = match name {
            "u8" => Some("uint64"),
            "i8" => Some("int64"),
            "f16" => Some("float128"),
            _ => None,
        };
        if let Some(d) = numpy_alias(name) {
            return Err(format!(
                "dtype '{name}' is numpy's other spelling of {d} (on Linux, little-endian): \
                 write \"{d}\""
            ));
        }
        if name.starts_with('>') {
            return Err(format!(
                "dtype '{name}' is big-endian: streams hold little-endian elements; write the \
                 numpy name of the type (\"float32\", ...) and swap the bytes before writing"
            ));
        }
        Err(match (Dtype::from_numpy_name(name), numpy_reads) {
            (Some(d), Some(theirs)) => format!(
                "dtype '{name}' is ambiguous: numpy (and pyshmem) read it as {theirs}, this \
                 library as {d}; write \"{d}\" (or the numpy name of the type meant)"
            ),
            (Some(d), None) => format!("dtype '{name}' is not a numpy name: write \"{d}\""),
            (None, _) => {
                let known: Vec<_> = Dtype::ALL.iter().map(|d| d.numpy_name()).collect();
                format!("unknown dtype '{name}' (numpy names: {})", known.join(", "))
            }
        })
    }

    /// The short Rust-style name (`f32`, `u8`, `c64`, `bool`).
    pub fn short_name(self) -> &'static str {
        match self {
            Dtype::I8 => "i8",
            Dtype::I16 => "i16",
            Dtype::I32 => "i32",
            Dtype::I64 => "i64",
            Dtype::U8 => "u8",
            Dtype::U16 => "u16",
            Dtype::U32 => "u32",
            Dtype::U64 => "u64",
            Dtype::F16 => "f16",
            Dtype::F32 => "f32",
            Dtype::F64 => "f64",
            Dtype::Bool => "bool",
            Dtype::Complex64 => "c64",
            Dtype::Complex128 => "c128",
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.numpy_name())
    }
}

impl std::str::FromStr for Dtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Dtype::from_numpy_name(s).ok_or_else(|| {
            let known: Vec<_> = Dtype::ALL.iter().map(|d| d.numpy_name()).collect();
            format!("unknown dtype '{s}' (known: {})", known.join(", "))
        })
    }
}

/// The type numpy reads `name` as, where that is another spelling of a [`Dtype`]'s numpy
/// name on Linux (64-bit, little-endian): its aliases (`"float"`, `"double"`, `"int"`, ...)
/// and type codes (`"f4"`, `"<u2"`, `"?"`); a code with a byte-order mark (`<`, `=`, `|`)
/// in numpy's meaning (`"<i8"` is int64). Not the short names this library reads otherwise
/// (`"u8"` and `"i8"` unmarked, `"f16"`): [`Dtype::from_numpy_name_only`] says both readings.
fn numpy_alias(name: &str) -> Option<Dtype> {
    use Dtype::*;
    let code = |c: &str| {
        Some(match c {
            "?" | "b1" => Bool,
            "i1" => I8,
            "i2" => I16,
            "i4" => I32,
            "i8" => I64,
            "u1" => U8,
            "u2" => U16,
            "u4" => U32,
            "u8" => U64,
            "f2" => F16,
            "f4" => F32,
            "f8" => F64,
            "c8" => Complex64,
            "c16" => Complex128,
            _ => return None,
        })
    };
    if let Some(marked) = name.strip_prefix(['<', '=', '|']) {
        return code(marked);
    }
    Some(match name {
        "bool_" => Bool,
        "byte" => I8,
        "ubyte" => U8,
        "short" => I16,
        "ushort" => U16,
        "intc" => I32,
        "uintc" => U32,
        "int" | "int_" | "intp" | "long" | "longlong" => I64,
        "uint" | "uintp" | "ulong" | "ulonglong" => U64,
        "half" => F16,
        "single" => F32,
        "float" | "double" => F64,
        "csingle" => Complex64,
        "complex" | "cdouble" => Complex128,
        "u8" | "i8" => return None,
        c => return code(c),
    })
}

/// Deserializes a [`Dtype`] from its numpy name only ([`Dtype::from_numpy_name_only`]).
pub(crate) fn deserialize_numpy_name<'de, D>(d: D) -> Result<Dtype, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let name = String::deserialize(d)?;
    Dtype::from_numpy_name_only(&name).map_err(serde::de::Error::custom)
}

mod sealed {
    pub trait Sealed {}
}

/// An element type a stream can hold. Sealed: implemented for the 14 [`Dtype`]s only.
///
/// # Safety
/// Implementors are plain values of exactly `DTYPE.itemsize()` bytes with no padding, and
/// [`Element::copy_from_shared`] must produce a valid value from any bytes.
pub unsafe trait Element: sealed::Sealed + Copy + Default + Send + Sync + 'static {
    /// The runtime tag of this type.
    const DTYPE: Dtype;

    /// Copies `n` elements from shared memory at `src` into `dst`. Any bytes make valid
    /// values: a `bool` is `true` for any nonzero byte, as numpy reads it (a uint8 mask viewed
    /// as bool stores 255), never made from a byte other than 0 or 1.
    ///
    /// # Safety
    /// `src` must be valid for reads of `n * size_of::<Self>()` bytes and `dst` valid for
    /// writes of `n` elements; the two must not overlap.
    unsafe fn copy_from_shared(src: *const u8, dst: *mut Self, n: usize) {
        // SAFETY: the caller guarantees both ranges; `Self` accepts any bit pattern (every
        // implementor but `bool`, which overrides this method).
        unsafe {
            std::ptr::copy_nonoverlapping(src, dst.cast::<u8>(), n * std::mem::size_of::<Self>())
        };
    }
}

macro_rules! pod_element {
    ($($t:ty => $d:ident),* $(,)?) => {$(
        impl sealed::Sealed for $t {}
        // SAFETY: a plain number type of the stated size, valid for every bit pattern.
        unsafe impl Element for $t {
            const DTYPE: Dtype = Dtype::$d;
        }
    )*};
}

pod_element!(
    i8 => I8, i16 => I16, i32 => I32, i64 => I64,
    u8 => U8, u16 => U16, u32 => U32, u64 => U64,
    f16 => F16, f32 => F32, f64 => F64,
    Complex32 => Complex64, Complex64 => Complex128,
);

/// Stores each byte other than 0 or 1 of a bool frame as 1 (true, as numpy reads it), so
/// the bytes can be lent as `bool` or published by our writers.
pub(crate) fn bool_bytes_as_0_or_1(bytes: &mut [u8]) {
    bytes.iter_mut().filter(|b| **b > 1).for_each(|b| *b = 1);
}

impl sealed::Sealed for bool {}
// SAFETY: `bool` is one byte; `copy_from_shared` leaves each byte 0 or 1 before it returns.
unsafe impl Element for bool {
    const DTYPE: Dtype = Dtype::Bool;

    /// One `memcpy` of the shared bytes, then each byte of the private copy made 0 or 1 (a
    /// byte-by-byte volatile copy ran about 1 byte a cycle).
    unsafe fn copy_from_shared(src: *const u8, dst: *mut Self, n: usize) {
        // SAFETY: `src` is valid for `n` bytes and `dst` for `n` bools, not overlapping
        // (caller contract). `dst` is the caller's exclusive buffer, seen as bytes until each
        // is 0 or 1: no byte is read as a `bool` before then, and no panic can come between.
        // The shared bytes are read once (the copy); what a racing writer does after that
        // changes nothing here.
        unsafe {
            std::ptr::copy_nonoverlapping(src, dst.cast::<u8>(), n);
            bool_bytes_as_0_or_1(std::slice::from_raw_parts_mut(dst.cast::<u8>(), n));
        }
    }
}

/// Runs `$body` with the type alias `$T` bound to the Rust element type of a runtime
/// [`Dtype`], so code generic over [`Element`] can be called on a stream whose dtype is only
/// known at run time.
///
/// ```
/// use shmstream::{Dtype, Element, with_dtype};
/// fn size_of_elem<T: Element>() -> usize { std::mem::size_of::<T>() }
/// let d = Dtype::Complex64;
/// assert_eq!(with_dtype!(d, T => size_of_elem::<T>()), 8);
/// ```
#[macro_export]
macro_rules! with_dtype {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            $crate::Dtype::I8 => {
                type $T = i8;
                $body
            }
            $crate::Dtype::I16 => {
                type $T = i16;
                $body
            }
            $crate::Dtype::I32 => {
                type $T = i32;
                $body
            }
            $crate::Dtype::I64 => {
                type $T = i64;
                $body
            }
            $crate::Dtype::U8 => {
                type $T = u8;
                $body
            }
            $crate::Dtype::U16 => {
                type $T = u16;
                $body
            }
            $crate::Dtype::U32 => {
                type $T = u32;
                $body
            }
            $crate::Dtype::U64 => {
                type $T = u64;
                $body
            }
            $crate::Dtype::F16 => {
                type $T = $crate::f16;
                $body
            }
            $crate::Dtype::F32 => {
                type $T = f32;
                $body
            }
            $crate::Dtype::F64 => {
                type $T = f64;
                $body
            }
            $crate::Dtype::Bool => {
                type $T = bool;
                $body
            }
            $crate::Dtype::Complex64 => {
                type $T = $crate::Complex32;
                $body
            }
            $crate::Dtype::Complex128 => {
                type $T = $crate::Complex64;
                $body
            }
        }
    };
}

/// Views a slice of elements as its bytes (for copying into shared memory).
pub(crate) fn as_bytes<T: Element>(data: &[T]) -> &[u8] {
    // SAFETY: every `Element` is a padding-free plain value (trait contract), so its bytes
    // are initialized; the length is exactly the slice's size in bytes.
    unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), std::mem::size_of_val(data)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_pyshmem_table_order() {
        for (i, d) in Dtype::ALL.iter().enumerate() {
            assert_eq!(usize::from(d.code()), i);
            assert_eq!(Dtype::from_code(d.code()), Some(*d));
        }
        assert_eq!(Dtype::from_code(14), None);
        assert_eq!(Dtype::F32.code(), 9);
        assert_eq!(Dtype::Bool.code(), 11);
    }

    #[test]
    fn element_sizes_match_itemsize() {
        fn check<T: Element>() {
            assert_eq!(
                std::mem::size_of::<T>(),
                T::DTYPE.itemsize(),
                "{}",
                T::DTYPE
            );
        }
        check::<i8>();
        check::<i16>();
        check::<i32>();
        check::<i64>();
        check::<u8>();
        check::<u16>();
        check::<u32>();
        check::<u64>();
        check::<f16>();
        check::<f32>();
        check::<f64>();
        check::<bool>();
        check::<Complex32>();
        check::<Complex64>();
    }

    #[test]
    fn names_parse_both_ways() {
        for d in Dtype::ALL {
            assert_eq!(Dtype::from_numpy_name(d.numpy_name()), Some(d));
            assert_eq!(d.short_name().parse::<Dtype>(), Ok(d));
        }
        assert!("float128".parse::<Dtype>().unwrap_err().contains("float32"));
    }

    /// `rust_type` names the type `with_dtype!` binds (the complex ones one size down).
    #[test]
    fn rust_type_names_the_element_type_of_each_dtype() {
        fn name<T>() -> &'static str {
            let full = std::any::type_name::<T>();
            match full {
                "num_complex::Complex<f32>" => "Complex32",
                "num_complex::Complex<f64>" => "Complex64",
                _ => full.rsplit("::").next().unwrap_or(full),
            }
        }
        for d in Dtype::ALL {
            assert_eq!(
                d.rust_type(),
                crate::with_dtype!(d, T => name::<T>()),
                "{d}"
            );
        }
        assert_eq!(Dtype::Complex64.rust_type(), "Complex32");
    }

    /// The short names numpy reads as other types are refused, naming both readings.
    #[test]
    fn numpy_names_only_refuse_the_short_names() {
        for d in Dtype::ALL {
            assert_eq!(Dtype::from_numpy_name_only(d.numpy_name()), Ok(d));
        }
        let e = Dtype::from_numpy_name_only("u8").unwrap_err();
        assert!(e.contains("uint64") && e.contains("\"uint8\""), "{e}");
        assert!(e.contains("this library as uint8"), "{e}");
        assert!(
            Dtype::from_numpy_name_only("i8")
                .unwrap_err()
                .contains("int64")
        );
        assert!(
            Dtype::from_numpy_name_only("f16")
                .unwrap_err()
                .contains("float128")
        );
        let e = Dtype::from_numpy_name_only("c64").unwrap_err();
        assert!(e.contains("\"complex64\""), "{e}");
        // numpy's other spellings (what `numpy.dtype(...)` gives for each, numpy 2.4 on
        // x86-64 Linux) are refused naming the numpy name to write.
        for (alias, d) in [
            ("float", "float64"),
            ("double", "float64"),
            ("int", "int64"),
            ("uint", "uint64"),
            ("half", "float16"),
            ("complex", "complex128"),
            ("f4", "float32"),
            ("<i8", "int64"),
            ("=u2", "uint16"),
            ("?", "bool"),
            ("c8", "complex64"),
        ] {
            let e = Dtype::from_numpy_name_only(alias).unwrap_err();
            assert!(
                e.contains(&format!("other spelling of {d}")) && e.contains(&format!("\"{d}\"")),
                "{alias}: {e}"
            );
        }
        let e = Dtype::from_numpy_name_only(">f4").unwrap_err();
        assert!(e.contains("big-endian"), "{e}");
        assert!(
            Dtype::from_numpy_name_only("float128")
                .unwrap_err()
                .contains("float32")
        );
    }

    /// Every numpy type code, unmarked and with each little-endian or "not applicable" byte
    /// order mark, is refused naming the type numpy 2.4 reads it as (x86-64 Linux: the table
    /// `numpy.dtype(mark + code)` printed); unmarked `i8` and `u8` are this library's short
    /// names, refused above as ambiguous.
    #[test]
    fn every_type_code_is_refused_naming_the_type_numpy_reads() {
        let codes = [
            ("?", "bool"),
            ("b1", "bool"),
            ("i1", "int8"),
            ("i2", "int16"),
            ("i4", "int32"),
            ("i8", "int64"),
            ("u1", "uint8"),
            ("u2", "uint16"),
            ("u4", "uint32"),
            ("u8", "uint64"),
            ("f2", "float16"),
            ("f4", "float32"),
            ("f8", "float64"),
            ("c8", "complex64"),
            ("c16", "complex128"),
        ];
        for (code, d) in codes {
            for mark in ["", "<", "=", "|"] {
                if mark.is_empty() && (code == "i8" || code == "u8") {
                    continue;
                }
                let alias = format!("{mark}{code}");
                let e = Dtype::from_numpy_name_only(&alias).unwrap_err();
                assert!(
                    e.contains(&format!("other spelling of {d} ")),
                    "{alias}: {e}"
                );
            }
        }
    }

    /// Every dtype's copy out of shared memory, from a misaligned source into the
    /// uninitialized capacity of a new array, of 0, 1 and 5 elements, gives the bytes back
    /// (a bool's as 0 or 1); Miri checks the copies' bounds, alignment and validity.
    #[test]
    fn copies_from_shared_take_any_alignment_and_length_into_uninitialized_buffers() {
        fn check<T: Element>() {
            let size = std::mem::size_of::<T>();
            for n in [0usize, 1, 5] {
                // Bytes 0, 1 and others (bools other than 0 or 1, NaN floats).
                let words: Vec<u64> = (0..n * size / 8 + 2)
                    .map(|i| 0x00ff_0102_8000_7f01u64.rotate_left(8 * i as u32))
                    .collect();
                // One byte past an 8-aligned start: misaligned for every wider element.
                let shared = &bytemuck::cast_slice::<u64, u8>(&words)[1..1 + n * size];
                let mut out: Vec<T> = Vec::with_capacity(n);
                // SAFETY: `shared` holds `n` elements' bytes, `out` capacity for `n`, apart;
                // the copy initializes all `n`.
                unsafe {
                    T::copy_from_shared(shared.as_ptr(), out.as_mut_ptr(), n);
                    out.set_len(n);
                }
                let want: Vec<u8> = match T::DTYPE {
                    Dtype::Bool => shared.iter().map(|&b| u8::from(b != 0)).collect(),
                    _ => shared.to_vec(),
                };
                assert_eq!(as_bytes(&out), want, "{:?} x{n}", T::DTYPE);
            }
        }
        for d in Dtype::ALL {
            with_dtype!(d, T => check::<T>());
        }
    }

    /// numpy's meaning: any nonzero byte is `true` (a uint8 mask viewed as bool).
    #[test]
    fn bool_copy_reads_any_nonzero_byte_as_true() {
        let bytes = [0u8, 1, 255, 2, 0, 128];
        let mut out = [true; 6];
        // SAFETY: `bytes` is 6 readable bytes, `out` 6 writable bools.
        unsafe { bool::copy_from_shared(bytes.as_ptr(), out.as_mut_ptr(), 6) };
        assert_eq!(out, [false, true, true, true, false, true]);
    }
}
