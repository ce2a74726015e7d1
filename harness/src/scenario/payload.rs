//! The payload's items and shapes: the numpy dtype names pyshmem supports with their item
//! sizes, a shape's bytes (`None` past what can be counted), and its "100x100" form.

/// The numpy dtype names pyshmem (and shmstream) support, with their item sizes.
pub(super) const DTYPES: [(&str, usize); 14] = [
    ("bool", 1),
    ("int8", 1),
    ("uint8", 1),
    ("int16", 2),
    ("uint16", 2),
    ("int32", 4),
    ("uint32", 4),
    ("int64", 8),
    ("uint64", 8),
    ("float16", 2),
    ("float32", 4),
    ("float64", 8),
    ("complex64", 8),
    ("complex128", 16),
];

/// Bytes of a payload of `shape` with items of `itemsize` bytes, `None` when they cannot be
/// counted (the product overflows).
pub(super) fn shape_bytes(shape: &[usize], itemsize: usize) -> Option<usize> {
    shape
        .iter()
        .try_fold(itemsize, |bytes, d| bytes.checked_mul(*d))
}

/// Item size in bytes of a numpy dtype name, if it is one of [`DTYPES`].
pub(super) fn itemsize(dtype: &str) -> Option<usize> {
    DTYPES.iter().find(|(n, _)| *n == dtype).map(|(_, s)| *s)
}

/// "100x100" for `[100, 100]`.
pub fn shape_str(shape: &[usize]) -> String {
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x")
}
