//! One error type for the harness: a message with its chain of context, printed as
//! `context: cause`. The harness reports errors; it never matches on them.

use std::fmt;

/// A harness error: human-readable, already carrying its context.
#[derive(Debug)]
pub struct Error(String);

/// `Result` with the harness [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with this message.
    pub fn msg(m: impl Into<String>) -> Self {
        Error(m.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

macro_rules! from_display {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self { Error(e.to_string()) }
        }
    )*};
}
from_display!(
    std::io::Error,
    serde_json::Error,
    csv::Error,
    regex::Error,
    hdrhistogram::errors::CreationError,
    hdrhistogram::serialization::V2SerializeError,
    hdrhistogram::serialization::DeserializeError,
    std::fmt::Error,
    shmstream::Error,
    shmstream::gpu::cudarc::driver::DriverError
);

impl From<String> for Error {
    fn from(e: String) -> Self {
        Error(e)
    }
}

impl From<&str> for Error {
    fn from(e: &str) -> Self {
        Error(e.to_string())
    }
}

/// Adds context to an error: `op().context("reading scenario")?`.
pub trait Context<T> {
    /// Wraps the error as `ctx: error`.
    fn context(self, ctx: impl fmt::Display) -> Result<T>;
    /// Like `context`, with the context built lazily.
    fn with_context<C: fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, ctx: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error(format!("{ctx}: {e}")))
    }
    fn with_context<C: fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| Error(format!("{}: {e}", f())))
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, ctx: impl fmt::Display) -> Result<T> {
        self.ok_or_else(|| Error(ctx.to_string()))
    }
    fn with_context<C: fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T> {
        self.ok_or_else(|| Error(f().to_string()))
    }
}

/// Returns early with a formatted [`Error`].
macro_rules! bail {
    ($($arg:tt)*) => { return Err($crate::error::Error::msg(format!($($arg)*))) };
}
pub(crate) use bail;
