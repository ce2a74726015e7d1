//! Scenario files (TOML): the schema, its validation, and the expansion into jobs
//! (one per case × size). The schema is documented in `scenarios/README.md`.
//!
//! Every table rejects unknown keys (`deny_unknown_fields`); the error names the key,
//! the table and the line.
//!
//! [`schema`] holds the tables as they are written, [`check`] reads a file and refuses what
//! could not run, [`jobs`] expands the cases into jobs, [`cores`] lists the cores the keys
//! pin to, and [`payload`] the dtypes and shapes.

mod check;
mod cores;
mod jobs;
mod payload;
mod schema;

pub use check::MAX_TIMEOUT_S;
pub use jobs::{Job, OneWay, Timing};
pub use payload::shape_str;
pub use schema::{CaseSpec, Device, HotOp, Kind, Pipeline, Scenario, Wait};

#[cfg(test)]
const GOOD: &str = r#"
name = "t"
[defaults]
min_seconds = 0.1
[[case]]
kind = "roundtrip"
sizes = [[100, 100], [10]]
[[case]]
kind = "pingpong"
wait = "futex"
sizes = [[16]]
dtype = "uint8"
[[case]]
kind = "mvm"
sizes = [[100, 100]]
device = "cuda:0"
pipeline = "device-resident"
"#;
