//! GPU streams: the rules that hold with or without a driver (which dtypes, which device
//! names). The CUDA code paths live behind the `cuda` feature.

use crate::dtype::Dtype;
use crate::error::{Error, Result};

/// Element types a GPU stream may hold (pyshmem's torch-backed set: no unsigned types wider
/// than 8 bits).
pub const GPU_SUPPORTED_DTYPES: [Dtype; 11] = [
    Dtype::I8,
    Dtype::I16,
    Dtype::I32,
    Dtype::I64,
    Dtype::U8,
    Dtype::F16,
    Dtype::F32,
    Dtype::F64,
    Dtype::Bool,
    Dtype::Complex64,
    Dtype::Complex128,
];

/// Refuses a dtype GPU streams cannot hold.
pub(crate) fn check_gpu_dtype(name: &str, dtype: Dtype) -> Result<()> {
    if GPU_SUPPORTED_DTYPES.contains(&dtype) {
        return Ok(());
    }
    let list: Vec<_> = GPU_SUPPORTED_DTYPES.iter().map(|d| d.numpy_name()).collect();
    Err(Error::Unsupported { name: name.to_owned(), what: format!("dtype {dtype} is not supported on GPU streams (supported: {})", list.join(", ")) })
}

/// Parses `"cuda:N"`, `"cudaN"` or `"N"` into a device ordinal.
pub(crate) fn parse_device(name: &str, device: &str) -> Result<i32> {
    let s = device.trim();
    let digits = s.strip_prefix("cuda:").or_else(|| s.strip_prefix("cuda")).unwrap_or(s);
    let digits = if digits.is_empty() { "0" } else { digits };
    digits.parse::<i32>().ok().filter(|d| *d >= 0).ok_or_else(|| Error::Unsupported {
        name: name.to_owned(),
        what: format!("invalid GPU device {device:?}: use \"cuda:N\" or a non-negative ordinal"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse() {
        assert_eq!(parse_device("s", "cuda:1").unwrap(), 1);
        assert_eq!(parse_device("s", "0").unwrap(), 0);
        assert_eq!(parse_device("s", "cuda").unwrap(), 0);
        assert!(parse_device("s", "cuda:-1").is_err());
        assert!(parse_device("s", "gpu0").is_err());
    }

    #[test]
    fn unsupported_gpu_dtype_is_a_clear_error() {
        let e = check_gpu_dtype("cam", Dtype::U32).unwrap_err().to_string();
        assert!(e.contains("uint32") && e.contains("cam") && e.contains("float32"), "{e}");
        assert!(check_gpu_dtype("cam", Dtype::F32).is_ok());
    }
}
