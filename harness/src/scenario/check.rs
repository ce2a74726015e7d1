//! Reading a scenario file and refusing, naming the key and the remedy, what could not run:
//! values out of range, keys that do not apply to the case's kind, and cases whose jobs
//! cannot end within their timeout or would busy-wait on a shared core.

use std::path::Path;

use shmstream::WaitStrategy;

use super::payload::{DTYPES, itemsize, shape_bytes, shape_str};
use super::{CaseSpec, HotOp, Job, Kind, Pipeline, Scenario, Wait};
use crate::error::{Context, Result, bail};

/// A finite number > 0 (NaN and infinities are rejected).
fn positive(v: f64) -> bool {
    v.is_finite() && v > 0.0
}

/// A finite number >= 0.
fn non_negative(v: f64) -> bool {
    v.is_finite() && v >= 0.0
}

/// The longest `timeout_s` a scenario may give, seconds (a day): every timeout becomes an
/// instant ahead of now, which a number of seconds beyond any run cannot be.
pub const MAX_TIMEOUT_S: f64 = 86_400.0;

/// Refuses a `timeout_s` that is not a number of seconds in (0, [`MAX_TIMEOUT_S`]]; `table`
/// says where it was set (`"[defaults]"`, or empty inside a `[[case]]`, whose context names it).
fn check_timeout(table: &str, v: f64) -> Result<()> {
    if !(positive(v) && v <= MAX_TIMEOUT_S) {
        bail!(
            "{table}timeout_s = {v} must be a number of seconds above 0 and at most {MAX_TIMEOUT_S} \
             (a day): a case's process still running then is killed and the case reported failed"
        );
    }
    Ok(())
}

/// Refuses a job that times its floor in alternation with ours
/// ([`crate::cases::floor_timer`]) whose timing cannot end within `timeout_s`: the warm-up
/// and every repeat (2 × `min_seconds`, one per side) run whole pairs of slices
/// ([`crate::measure::alternate`]) until their time is up, and a slice runs at least one
/// call, each after a pingpong's `gap_us`: with `P` = 2 × gap, a phase of `secs` lasts at
/// least `P × max(1, ⌈secs / P⌉)`, else its processes would be killed with nothing measured.
fn check_alternated_timeout(j: &Job) -> Result<()> {
    if crate::cases::floor_timer(j).is_none() {
        return Ok(());
    }
    let t = &j.timing;
    let gap = j.gap_us / 1e6;
    let pair = 2.0 * gap;
    // Whole pairs of slices: the phase ends at the first pair that ends past `secs` (the
    // tolerance keeps a whole number of pairs from counting one more).
    let pairs = |secs: f64| (secs / pair - 1e-9).ceil().max(1.0);
    let phase = |secs: f64| if pair > 0.0 { pair * pairs(secs) } else { secs };
    let need = phase(t.warmup) + f64::from(t.repeats) * phase(2.0 * t.min_seconds);
    if need < j.timeout_s {
        return Ok(());
    }
    let (w, m, r) = (t.warmup, t.min_seconds, t.repeats);
    // Sums of tenths print as 2.4000000000000004.
    let need = (need * 1e6).round() / 1e6;
    if gap > 0.0 {
        bail!(
            "P × max(1, ⌈warmup / P⌉) + repeats × P × max(1, ⌈2 × min_seconds / P⌉) with P = \
             2 × gap = {pair} s: {pair} × {} + {r} × {pair} × {} = {need} s, not under \
             timeout_s = {} (ours and its floor alternate a slice at a time, whole pairs of \
             slices until each phase is over, each repeat lasting 2 × min_seconds = 2 × {m}, \
             the warm-up {w}, and every slice runs at least one round trip, after gap_us = \
             {} µs, assuming round trips short against the gap: longer ones end a phase \
             sooner): its processes would be killed with nothing measured; lower gap_us, \
             min_seconds or repeats, or raise timeout_s",
            pairs(w),
            pairs(2.0 * m),
            j.timeout_s,
            j.gap_us
        );
    }
    bail!(
        "warmup + 2 × min_seconds × repeats = {w} + 2 × {m} × {r} = {need} s, not under \
         timeout_s = {} (ours and its floor alternate, each repeat lasting 2 × \
         min_seconds): its processes would be killed with nothing measured; lower \
         min_seconds or repeats, or raise timeout_s",
        j.timeout_s
    );
}

/// Refuses a pingpong or MVM job whose two processes both busy-wait on one core
/// (`[defaults] writer_cpu = reader_cpu`): `wait = "spin"`, the default but for a CPU MVM
/// kernel on every core (whose driver yields). Each would spin through the other's time
/// slice, and every round trip would last a scheduler tick, ours and its floor's alike.
fn check_shared_spin(j: &Job) -> Result<()> {
    let spins = match j.kind {
        Kind::Mvm if !j.device.is_gpu() => crate::cases::mvm_driver_wait(j) == WaitStrategy::Spin,
        Kind::Pingpong | Kind::Mvm => j.wait.is_none_or(|w| w == Wait::Spin),
        _ => false,
    };
    if spins && j.writer_cpu == j.reader_cpu {
        bail!(
            "{}: both processes busy-wait (wait = \"spin\"{}) on one core, [defaults] \
             writer_cpu = reader_cpu = {}: each would spin through the other's time slice, and \
             every round trip would measure the scheduler's tick; give [defaults] writer_cpu \
             and reader_cpu a core each, or set wait = \"park\" or \"adaptive\" in the case",
            j.kind.name(),
            if j.wait.is_none() {
                ", the default"
            } else {
                ""
            },
            j.writer_cpu
        );
    }
    Ok(())
}

/// Refuses a core id no CPU set can name ([`crate::spawn::MAX_CORES`]): pinning there would
/// fail in every process, and no machine has that core, so it is a typo.
fn check_core(table: &str, key: &str, cpu: usize) -> Result<()> {
    let max = crate::spawn::MAX_CORES;
    if cpu >= max {
        bail!(
            "{table}{key} = {cpu}: core ids must be below {max} (the most a CPU set names); \
             set {key} to a core this machine has"
        );
    }
    Ok(())
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading scenario {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("scenario {}", path.display()))
    }

    /// Parses and validates scenario text.
    pub fn parse(text: &str) -> Result<Self> {
        let s: Scenario =
            toml::from_str(text).map_err(|e| crate::error::Error::msg(e.to_string().trim_end()))?;
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> Result<()> {
        if self.name.is_empty() || self.name.contains(['/', '\\']) || self.name.starts_with('.') {
            bail!("name {:?} must be a plain folder name", self.name);
        }
        let d = &self.defaults;
        if !positive(d.min_seconds)
            || !non_negative(d.warmup)
            || d.repeats == 0
            || d.min_seconds.max(d.warmup) > MAX_TIMEOUT_S
        {
            bail!(
                "[defaults]: min_seconds must be > 0, warmup >= 0 (both at most {MAX_TIMEOUT_S} s, a day), repeats >= 1"
            );
        }
        check_timeout("[defaults] ", d.timeout_s)?;
        check_core("[defaults] ", "writer_cpu", d.writer_cpu)?;
        check_core("[defaults] ", "reader_cpu", d.reader_cpu)?;
        if !non_negative(self.noise_seconds) || self.noise_seconds > 60.0 {
            bail!(
                "noise_seconds = {} must be between 0 (no probe) and 60",
                self.noise_seconds
            );
        }
        if self.cases.is_empty() {
            bail!("no [[case]] tables");
        }
        let mut names = std::collections::HashSet::new();
        for (i, c) in self.cases.iter().enumerate() {
            let name = c.resolved_name();
            // File names (hgrm, plots) and report tables are built from it: other characters
            // would be replaced in file names (two cases sharing one) or break a table's row.
            if name.is_empty()
                || !name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-'))
            {
                bail!(
                    "[[case]] #{}: case name {name:?} must be non-empty and use only letters, \
                     digits, '_', '.' and '-' (set `name` to such a name)",
                    i + 1
                );
            }
            c.validate()
                .and_then(|()| {
                    // A floor timed in alternation with ours fits the case's timeout.
                    // ao-loop: every process paces its frames within the case's timeout, a
                    // run fits this machine's memory, its stages' logs included, the
                    // reconstructor has a core per kernel thread, and busy-waiting stages are
                    // placed on a core each: refused here, not when the case's turn comes.
                    // (Whether those cores can be pinned to here is the job's own matter: a
                    // job that cannot is skipped when its turn comes, `--cases` may leave it
                    // out, and the other cases run.)
                    use crate::cases::ao::placement::Placement;
                    self.case_jobs(c, false).iter().try_for_each(|j| {
                        check_alternated_timeout(j)
                            .and_then(|()| check_shared_spin(j))
                            .and_then(|()| Placement::check_timeout(j))
                            .and_then(|()| Placement::check_memory(j))
                            .and_then(|()| Placement::check_threads(j))
                            .and_then(|()| Placement::check_spin(j))
                    })
                })
                .with_context(|| format!("[[case]] #{} ({name})", i + 1))?;
            if !names.insert(name.clone()) {
                bail!(
                    "[[case]] #{}: duplicate case name {name:?} (set `name`)",
                    i + 1
                );
            }
        }
        Ok(())
    }
}

impl CaseSpec {
    fn validate(&self) -> Result<()> {
        let dtype = self.resolved_dtype();
        if itemsize(dtype).is_none() {
            let names: Vec<_> = DTYPES.iter().map(|(n, _)| *n).collect();
            bail!("dtype {dtype:?} is not one of {}", names.join(", "));
        }
        if self.sizes.is_empty() {
            bail!("sizes is empty");
        }
        let item = itemsize(dtype).unwrap_or(1);
        for (i, s) in self.sizes.iter().enumerate() {
            // Its rows would share one key: compare keeps one, hgrm files overwrite each other.
            if self.sizes[..i].contains(s) {
                bail!("sizes lists the shape {} twice", shape_str(s));
            }
            if s.is_empty() || s.contains(&0) {
                bail!("shape {s:?}: every shape needs at least one dimension, all > 0");
            }
            // The library's own limits (`Stream::create`), found here rather than when the
            // case's turn comes, after the cases before it.
            if s.len() > shmstream::format::MAX_DIMS {
                bail!(
                    "shape {s:?}: a stream has at most {} dimensions",
                    shmstream::format::MAX_DIMS
                );
            }
            if shape_bytes(s, item).is_none_or(|b| isize::try_from(b).is_err()) {
                bail!(
                    "shape {s:?}: a payload of {item}-byte items that large is more than this \
                     machine can map (over 2^{} bytes); use a smaller shape",
                    isize::BITS - 1
                );
            }
        }
        if let Some(t) = self.timeout_s {
            check_timeout("", t)?;
        }
        if self.mirror.is_some() && !self.device.is_gpu() {
            bail!(
                "mirror applies to GPU devices only (device = \"{}\")",
                self.device
            );
        }
        if self.pipeline.is_some() && self.kind != Kind::Mvm && !self.device.is_gpu() {
            bail!("pipeline applies to kind = \"mvm\" and to GPU cases only");
        }
        // The ao-loop's GPU form meets on host streams of uint16 frames.
        if self.device.is_gpu() && self.kind != Kind::AoLoop && dtype != "float32" {
            bail!("GPU cases support dtype = \"float32\" only");
        }
        if self.pipeline == Some(Pipeline::DeviceResident) && !self.device.is_gpu() {
            bail!("pipeline = \"device-resident\" needs a GPU device");
        }
        if self.pipeline == Some(Pipeline::GpuConsumer)
            && !(self.device.is_gpu() && matches!(self.kind, Kind::Pingpong | Kind::Mvm))
        {
            bail!("pipeline = \"gpu-consumer\" applies to GPU pingpong and mvm cases");
        }
        if self.pipeline == Some(Pipeline::GpuConsumer) && self.mirror == Some(true) {
            bail!("pipeline = \"gpu-consumer\" reads device buffers: mirror = true adds nothing");
        }
        if self.wait.is_some() && matches!(self.kind, Kind::Roundtrip | Kind::Op) {
            bail!("wait applies to pingpong, mvm and bridge only");
        }
        if self.pinned.is_some() && self.kind != Kind::Bridge {
            bail!("pinned applies to kind = \"bridge\" only (the other kinds are always pinned)");
        }
        if let Some(p) = self.rt_priority {
            if self.kind != Kind::Bridge {
                bail!(
                    "rt_priority applies to kind = \"bridge\" only (an ao-loop case sets ao.rt_priority)"
                );
            }
            if !(1..=99).contains(&p) {
                bail!("rt_priority is a SCHED_FIFO priority, 1 to 99");
            }
        }
        if self.kind == Kind::Bridge {
            match self.wait {
                Some(Wait::Adaptive) => {
                    bail!("the bridge case's reader parks or spins: wait = \"park\" or \"spin\"")
                }
                // Left to the scheduler, a spinning reader shares its core with Zenoh's
                // threads, and ours came in under Zenoh's floor (0.56-0.67x at 64 B).
                Some(Wait::Spin) if self.pinned != Some(true) => bail!(
                    "a spinning bridge reader needs pinned = true (unpinned, it takes a core the bridges' threads land on)"
                ),
                _ => {}
            }
        }
        if self.gap_us.is_some() && !matches!(self.kind, Kind::Pingpong | Kind::Bridge) {
            bail!("gap_us applies to kind = \"pingpong\" and \"bridge\" only");
        }
        if self.kind == Kind::Bridge {
            if self.device.is_gpu() {
                bail!("kind = \"bridge\" carries host streams only");
            }
            if self.gap_us.is_some_and(|g| !positive(g)) {
                bail!("gap_us of a bridge case must be > 0 (the latency phase's frame period)");
            }
            let small = self
                .sizes
                .iter()
                .any(|s| shape_bytes(s, item).is_some_and(|b| b < 16));
            if small {
                bail!("bridge payloads must be at least 16 bytes (they carry a write time)");
            }
        }
        if self.threads.is_some() && self.kind != Kind::Mvm {
            bail!("threads applies to kind = \"mvm\" only");
        }
        if self.threads == Some(0) {
            bail!(
                "threads = 0: the MVM kernel needs at least 1 thread (1 runs it on the compute \
                 core alone; leave threads out for one per core)"
            );
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if let Some(t) = self.threads.filter(|t| *t > cores) {
            bail!(
                "threads = {t}: this machine has {cores} core(s); the MVM kernel's workers are \
                 pinned one per core (leave threads out for one per core)"
            );
        }
        match (self.kind, self.op) {
            (Kind::Op, None) => {
                bail!(
                    "kind = \"op\" needs op = \"write\", \"read\", \"lock\", \"wake\" or \"kernel\""
                )
            }
            (Kind::Op, Some(op)) => {
                if self.device.is_gpu() {
                    bail!("kind = \"op\" runs on the CPU only");
                }
                if op == HotOp::Kernel
                    && (dtype != "float32" || self.sizes.iter().any(|s| s.len() != 2))
                {
                    bail!("op = \"kernel\" takes float32 matrix shapes [rows, cols]");
                }
            }
            (_, Some(_)) => bail!("op applies to kind = \"op\" only"),
            _ => {}
        }
        if self.kind == Kind::AoLoop {
            self.validate_ao()?;
        } else if self.ao.is_some() {
            bail!("[case.ao] applies to kind = \"ao-loop\" only");
        }
        if self.kind == Kind::Mvm {
            if dtype != "float32" {
                bail!("mvm supports dtype = \"float32\" only");
            }
            if self.sizes.iter().any(|s| s.len() != 2) {
                bail!("mvm sizes are matrix shapes [rows, cols]");
            }
        }
        if self
            .min_seconds
            .is_some_and(|v| !positive(v) || v > MAX_TIMEOUT_S)
            || self.repeats == Some(0)
            || self
                .warmup
                .is_some_and(|v| !non_negative(v) || v > MAX_TIMEOUT_S)
        {
            bail!(
                "min_seconds must be > 0, warmup >= 0 (both at most {MAX_TIMEOUT_S} s, a day), repeats >= 1"
            );
        }
        if self
            .gap_us
            .is_some_and(|g| !non_negative(g) || g > MAX_TIMEOUT_S * 1e6)
        {
            bail!("gap_us must be a number of microseconds >= 0 and at most a day");
        }
        Ok(())
    }

    fn validate_ao(&self) -> Result<()> {
        let Some(ao) = &self.ao else {
            bail!("kind = \"ao-loop\" needs a [case.ao] table (actuators, rate_hz, ...)");
        };
        for (key, cpu) in [
            ("camera_cpu", ao.camera_cpu),
            ("slopes_cpu", ao.slopes_cpu),
            ("recon_cpu", ao.recon_cpu),
        ] {
            cpu.map_or(Ok(()), |cpu| check_core("[case.ao] ", key, cpu))?;
        }
        if let Some(d) = self.dtype.as_deref().filter(|d| *d != "uint16") {
            bail!(
                "ao-loop frames are uint16, not dtype = {d:?}: leave dtype out or set \
                 dtype = \"uint16\""
            );
        }
        if self.wait.is_some() || self.pipeline.is_some() {
            bail!("ao-loop: set wait inside [case.ao]; pipeline does not apply");
        }
        if let Some(r) = self.repeats {
            bail!(
                "ao-loop: repeats = {r} does not apply (the loop runs its min_seconds once, \
                 cut into runs with a floor pass beside each): remove repeats from this case \
                 and set [case.ao] runs (1 to 20) instead"
            );
        }
        for s in &self.sizes {
            crate::cases::ao::geometry::Geometry::new(s, ao)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::GOOD;

    #[test]
    fn a_shape_listed_twice_in_a_case_is_an_error_naming_the_case_and_shape() {
        let err =
            Scenario::parse("name = \"x\"\n[[case]]\nkind=\"roundtrip\"\nsizes=[[16],[4],[16]]\n")
                .unwrap_err()
                .to_string();
        assert_eq!(
            err, "[[case]] #1 (roundtrip): sizes lists the shape 16 twice",
            "{err}"
        );
    }

    #[test]
    fn an_unknown_top_level_key_is_an_error_naming_it() {
        let err =
            Scenario::parse("name = \"x\"\nbogus = 1\n[[case]]\nkind=\"mvm\"\nsizes=[[2,2]]\n")
                .unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn the_noise_probe_lasts_3_s_unless_the_scenario_says_and_stays_within_a_minute() {
        assert_eq!(Scenario::parse(GOOD).unwrap().noise_seconds, 3.0);
        let with = |v: &str| {
            Scenario::parse(&format!(
                "name = \"x\"\nnoise_seconds = {v}\n[[case]]\nkind=\"mvm\"\nsizes=[[2,2]]\n"
            ))
        };
        assert_eq!(with("0").unwrap().noise_seconds, 0.0);
        assert_eq!(with("0.5").unwrap().noise_seconds, 0.5);
        assert_eq!(with("60").unwrap().noise_seconds, 60.0);
        for bad in ["-1", "61", "nan"] {
            let err = with(bad).unwrap_err().to_string();
            assert!(err.contains("noise_seconds"), "{bad}: {err}");
        }
    }

    /// The scenario's name is the report's folder name: one that would reach another folder
    /// or hide the report is refused.
    #[test]
    fn a_scenario_name_that_is_no_plain_folder_name_is_refused() {
        let with = |name: &str| {
            Scenario::parse(&format!(
                "name = {name:?}\n[[case]]\nkind=\"roundtrip\"\nsizes=[[2]]\n"
            ))
        };
        for bad in ["", "a/b", "a\\b", ".x", "..", "/x", "x/"] {
            let err = with(bad).unwrap_err().to_string();
            assert_eq!(
                err,
                format!("name {bad:?} must be a plain folder name"),
                "{bad}"
            );
        }
        assert_eq!(with("a.b-c_d").unwrap().name, "a.b-c_d");
    }

    /// Each `[defaults]` timing key out of its range is refused alone; the day itself is a
    /// bound that is taken.
    #[test]
    fn defaults_out_of_range_are_refused_each_alone() {
        let with = |defaults: &str| {
            Scenario::parse(&format!(
                "name = \"x\"\n[defaults]\n{defaults}\n[[case]]\nkind=\"roundtrip\"\n\
                 device = \"cuda:0\"\nsizes=[[2]]\n"
            ))
        };
        for bad in [
            "min_seconds = 0",
            "min_seconds = nan",
            "warmup = -1",
            "warmup = inf",
            "repeats = 0",
            "min_seconds = 86401",
            "warmup = 86401",
        ] {
            let err = with(bad).unwrap_err().to_string();
            assert!(
                err.starts_with("[defaults]: min_seconds must be > 0, warmup >= 0"),
                "{bad}: {err}"
            );
        }
        // A GPU round trip times no floor in alternation: nothing else bounds these.
        let s = with("warmup = 86400\nmin_seconds = 86400").unwrap();
        assert_eq!(
            (s.defaults.warmup, s.defaults.min_seconds),
            (86400.0, 86400.0)
        );
    }

    #[test]
    fn an_unknown_case_key_is_an_error_naming_it() {
        let err = Scenario::parse(
            "name = \"x\"\n[[case]]\nkind=\"roundtrip\"\nsizes=[[2]]\nsize=[[3]]\n",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("size") && msg.contains("unknown field"),
            "{msg}"
        );
    }

    #[test]
    fn an_unknown_defaults_key_is_an_error_naming_it() {
        let err = Scenario::parse(
            "name = \"x\"\n[defaults]\nwarmup_s = 1\n[[case]]\nkind=\"roundtrip\"\nsizes=[[2]]\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("warmup_s"), "{err}");
    }

    #[test]
    fn misplaced_keys_and_bad_values_are_rejected() {
        for (body, needle) in [
            (
                "kind=\"roundtrip\"\nsizes=[[2]]\nwait=\"spin\"",
                "wait applies",
            ),
            (
                "kind=\"roundtrip\"\nsizes=[[2]]\nmirror=true",
                "mirror applies",
            ),
            (
                "kind=\"pingpong\"\nsizes=[[2]]\npipeline=\"host-upload\"",
                "pipeline applies",
            ),
            ("kind=\"mvm\"\nsizes=[[2]]", "[rows, cols]"),
            ("kind=\"mvm\"\nsizes=[[2,2]]\ndtype=\"float64\"", "float32"),
            (
                "kind=\"roundtrip\"\nsizes=[[2]]\ndtype=\"float128\"",
                "float128",
            ),
            ("kind=\"roundtrip\"\nsizes=[[0]]", "all > 0"),
            ("kind=\"roundtrip\"\nsizes=[[2]]\ndevice=\"tpu\"", "tpu"),
            ("kind=\"teleport\"\nsizes=[[2]]", "teleport"),
            ("kind=\"op\"\nsizes=[[2]]", "needs op ="),
            (
                "kind=\"roundtrip\"\nsizes=[[2]]\nop=\"write\"",
                "op applies",
            ),
            ("kind=\"op\"\nop=\"kernel\"\nsizes=[[2]]", "matrix shapes"),
            (
                "kind=\"op\"\nop=\"write\"\nsizes=[[2]]\nwait=\"spin\"",
                "wait applies",
            ),
            (
                "kind=\"bridge\"\nsizes=[[64]]\ndtype=\"uint8\"\nwait=\"adaptive\"",
                "parks or spins",
            ),
            (
                "kind=\"bridge\"\nsizes=[[64]]\ndtype=\"uint8\"\nwait=\"spin\"",
                "needs pinned = true",
            ),
            (
                "kind=\"roundtrip\"\nsizes=[[2]]\npinned=true",
                "pinned applies",
            ),
            (
                "kind=\"pingpong\"\nsizes=[[2]]\nrt_priority=20",
                "rt_priority applies",
            ),
            (
                "kind=\"bridge\"\nsizes=[[64]]\ndtype=\"uint8\"\nrt_priority=100",
                "1 to 99",
            ),
            (
                "kind=\"bridge\"\nsizes=[[64], [15]]\ndtype=\"uint8\"",
                "at least 16 bytes",
            ),
            (
                "kind=\"ao-loop\"\nsizes=[[8, 8]]\nwait=\"spin\"\n[case.ao]\nactuators=5\n\
                 rate_hz=100",
                "set wait inside [case.ao]",
            ),
            (
                "kind=\"ao-loop\"\nsizes=[[8, 8]]\ndevice=\"cuda:0\"\npipeline=\"host-upload\"\n\
                 [case.ao]\nactuators=5\nrate_hz=100",
                "pipeline does not apply",
            ),
        ] {
            let err = Scenario::parse(&format!("name=\"x\"\n[[case]]\n{body}\n")).unwrap_err();
            assert!(err.to_string().contains(needle), "{body}: {err}");
        }
        // The bounds themselves are taken.
        let bridge = "kind=\"bridge\"\nsizes=[[16]]\ndtype=\"uint8\"";
        let parsed = Scenario::parse(&format!("name=\"x\"\n[[case]]\n{bridge}\n"));
        assert!(parsed.is_ok(), "{:?}", parsed.err());
    }

    /// `[defaults] timeout_s` and a case's own are numbers of seconds up to a day: beyond,
    /// the runner's `Duration::from_secs_f64` or `Instant::now() + timeout` panicked.
    #[test]
    fn every_timeout_is_a_number_of_seconds_up_to_a_day() {
        let with = |defaults: &str, case: &str| {
            Scenario::parse(&format!(
                "name=\"x\"\n[defaults]\n{defaults}\n[[case]]\nkind=\"roundtrip\"\nsizes=[[2]]\n{case}\n"
            ))
        };
        for bad in ["1e20", "0", "-1", "nan", "inf", "86401"] {
            let err = with(&format!("timeout_s = {bad}"), "")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("[defaults] timeout_s = ") && err.contains("at most 86400"),
                "{bad}: {err}"
            );
            let err = with("", &format!("timeout_s = {bad}"))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("[[case]] #1 (roundtrip): timeout_s = ")
                    && err.contains("at most 86400"),
                "{bad}: {err}"
            );
        }
        let s = with(
            "timeout_s = 86400",
            "timeout_s = 0.5\nmin_seconds = 0.1\nrepeats = 1",
        )
        .unwrap();
        assert_eq!(s.jobs(false, None)[0].timeout_s, 0.5);
        // The other durations become instants ahead of now as well.
        for (defaults, case) in [
            ("min_seconds = 1e20", ""),
            ("warmup = 1e20", ""),
            ("", "min_seconds = 1e20"),
            ("", "warmup = 1e20"),
        ] {
            let err = with(defaults, case).unwrap_err().to_string();
            assert!(err.contains("at most 86400 s"), "{defaults}{case}: {err}");
        }
        for gap in ["-1", "1e30", "nan"] {
            let err = Scenario::parse(&format!(
                "name=\"x\"\n[[case]]\nkind=\"pingpong\"\nsizes=[[8]]\ngap_us = {gap}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(err.contains("gap_us must be"), "{gap}: {err}");
        }
        // A case's own bounds are taken (a GPU case times no floor in alternation, which
        // would bound them first), and a case's warm-up may be any length up to them.
        let gpu = |kind: &str, keys: &str| {
            Scenario::parse(&format!(
                "name=\"x\"\n[[case]]\nkind=\"{kind}\"\nsizes=[[8]]\ndevice=\"cuda:0\"\n{keys}\n"
            ))
        };
        for keys in ["min_seconds = 86400", "warmup = 86400", "warmup = 1"] {
            assert!(gpu("roundtrip", keys).is_ok(), "{keys}");
        }
        assert!(gpu("roundtrip", "warmup = -1").is_err());
        assert!(gpu("pingpong", "gap_us = 86400e6").is_ok());
        assert!(gpu("pingpong", "gap_us = 86401e6").is_err());
    }

    /// A shape whose bytes overflow is refused at parse, for every kind (the bridge's size
    /// check and `Job::payload_bytes` multiplied without a check and panicked), as is one
    /// the library would refuse when the case's turn came, after the cases before it: over
    /// `isize::MAX` bytes (2^63 here: counted, not mappable) or over 19 dimensions.
    #[test]
    fn a_shape_the_library_cannot_make_is_refused_at_parse_not_a_panic() {
        let too_big = "more than this machine can map (over 2^63 bytes); use a smaller shape";
        for (body, why) in [
            (
                "kind=\"roundtrip\"\nsizes=[[4294967296, 4294967296]]",
                too_big,
            ),
            (
                "kind=\"pingpong\"\nsizes=[[8], [4294967296, 4294967296]]",
                too_big,
            ),
            (
                "kind=\"bridge\"\ndtype=\"uint8\"\nsizes=[[4294967296, 4294967296]]",
                too_big,
            ),
            ("kind=\"mvm\"\nsizes=[[4294967296, 4294967296]]", too_big),
            (
                "kind=\"roundtrip\"\ndtype=\"complex128\"\nsizes=[[1152921504606846976]]",
                too_big,
            ),
            ("kind=\"roundtrip\"\nsizes=[[2305843009213693952]]", too_big),
            (
                "kind=\"pingpong\"\nsizes=[[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]]",
                "a stream has at most 19 dimensions",
            ),
        ] {
            let err = Scenario::parse(&format!("name=\"x\"\n[[case]]\n{body}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("[[case]] #1") && err.contains(why),
                "{body}: {err}"
            );
        }
        // 19 dimensions and 2^63 - 4 bytes are what the library takes.
        Scenario::parse(
            "name=\"x\"\n[[case]]\nkind=\"roundtrip\"\n\
             sizes=[[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,8]]\n",
        )
        .unwrap();
        Scenario::parse(
            "name=\"x\"\n[[case]]\nkind=\"roundtrip\"\nsizes=[[2305843009213693951]]\n",
        )
        .unwrap();
        // A job made by hand saturates rather than panicking.
        let mut job = Scenario::parse(GOOD).unwrap().jobs(false, None).remove(0);
        job.shape = vec![1 << 32, 1 << 32];
        assert_eq!(job.payload_bytes(), usize::MAX);
        assert_eq!(job.elements(), usize::MAX);
    }

    /// An ao-loop rate so low that the fewest frames a process paces take longer than the
    /// case's timeout could only time out: refused, naming both figures; so is a case whose
    /// seconds run its peer past it.
    #[test]
    fn an_ao_rate_whose_frames_cannot_fit_the_timeout_is_refused_naming_both() {
        let ao = |rate: &str, defaults: &str, case: &str| {
            Scenario::parse(&format!(
                "name=\"x\"\n[defaults]\n{defaults}\n[[case]]\nkind=\"ao-loop\"\n\
                 sizes=[[8, 8]]\n{case}\n[case.ao]\nsubapertures=[2, 2]\nactuators=5\nrate_hz={rate}\n\
                 ladder=false\n"
            ))
        };
        // 0.1 Hz: the floor's 50 + 10 frames take 600 s, the runs' 30 + 1 take 310 s.
        let err = ao("0.1", "peer = false", "").unwrap_err().to_string();
        assert!(
            err.starts_with("[[case]] #1 (ao-loop): ao-loop: at rate_hz = 0.1")
                && err.contains("60 frames, 600.0 s")
                && err.contains("timeout_s = 120")
                && err.contains("above 600.0")
                && err.contains("rate_hz above 0.500 Hz"),
            "{err}"
        );
        // The case's own timeout is the one compared.
        let err = ao("1", "peer = false", "timeout_s = 45")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("60 frames, 60.0 s") && err.contains("timeout_s = 45"),
            "{err}"
        );
        assert!(ao("1", "peer = false", "timeout_s = 61").is_ok());
        assert!(ao("0.6", "timeout_s = 120\npeer = false", "").is_ok());
        // The peer's loop runs the case's whole seconds in one go.
        let err = ao("1000", "timeout_s = 60\npeer = true\nmin_seconds = 100", "")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the pyshmem peer's loop publishes 100200 frames, 100.2 s")
                && err.contains("shorten min_seconds / warmup, or set peer = false"),
            "{err}"
        );
    }

    /// An ao-loop case refuses `repeats` (the loop is cut by `[case.ao] runs`), naming the
    /// key and the remedy; `[defaults] repeats`, which every case shares, stays accepted.
    #[test]
    fn an_ao_loop_case_refuses_repeats_pointing_to_runs() {
        let ao = |defaults: &str, case: &str| {
            Scenario::parse(&format!(
                "name=\"x\"\n[defaults]\npeer = false\n{defaults}\n[[case]]\nkind=\"ao-loop\"\n\
                 sizes=[[8, 8]]\n{case}\n[case.ao]\nsubapertures=[2, 2]\nactuators=5\n\
                 rate_hz=1000\nladder=false\n"
            ))
        };
        let err = ao("", "repeats = 3").unwrap_err().to_string();
        assert!(
            err.starts_with("[[case]] #1 (ao-loop): ao-loop: repeats = 3 does not apply")
                && err.contains("set [case.ao] runs"),
            "{err}"
        );
        assert!(ao("repeats = 3", "").is_ok());
    }

    /// The rate ladder's rungs must fit the case's timeout too: its slowest possible rung
    /// (the rate halved at each try) or a long `ladder_seconds` is refused at parse, naming
    /// the case, the figures and the remedies.
    #[test]
    fn an_ao_ladder_whose_rungs_cannot_fit_the_timeout_is_refused_naming_the_case() {
        let ao = |rate: &str, timeout: &str, extra: &str| {
            Scenario::parse(&format!(
                "name=\"x\"\n[defaults]\npeer = false\ntimeout_s = {timeout}\n[[case]]\n\
                 kind=\"ao-loop\"\nsizes=[[8, 8]]\n[case.ao]\nsubapertures=[2, 2]\n\
                 actuators=5\nrate_hz={rate}\n{extra}"
            ))
        };
        // 10 Hz: the runs fit 61 s, but a rung at 10/128 Hz publishes 31 frames in 396.8 s.
        let err = ao("10", "61", "").unwrap_err().to_string();
        assert!(
            err.starts_with("[[case]] #1 (ao-loop): ao-loop: at rate_hz = 10 the rate ladder's")
                && err.contains("slowest rung, at 0.078125 Hz")
                && err.contains("31 frames, 396.8 s")
                && err.contains("raise timeout_s above 396.8")
                && err.contains("raise rate_hz above 65.049 Hz, or set ladder = false"),
            "{err}"
        );
        assert!(ao("10", "61", "ladder = false").is_ok());
        assert!(ao("10", "400", "").is_ok());
        // Long rungs: their seconds, not their rate, are the remedy.
        let err = ao("1000", "61", "ladder_seconds = 100")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("shorten ladder_seconds / warmup, or set ladder = false"),
            "{err}"
        );
        // Rungs longer than any timeout: refused naming the key, not an overflow panic in
        // counting their frames.
        let err = ao("1000", "61", "ladder_seconds = 1e20")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ladder_seconds = 100000000000000000000 must be at most 86400"),
            "{err}"
        );
    }

    /// A split ao-loop case whose busy-waiting stages share a core is refused when the
    /// scenario is read, before the cases ahead of it run, naming the case and the core.
    #[test]
    fn a_spinning_ao_case_on_a_shared_core_is_refused_before_any_case_runs() {
        let text = |wait: &str| {
            format!(
                "name=\"x\"\n[[case]]\nkind=\"roundtrip\"\nsizes=[[2]]\n[[case]]\n\
                 kind=\"ao-loop\"\nsizes=[[8, 8]]\n[case.ao]\nsubapertures=[2, 2]\n\
                 actuators=5\nrate_hz=1000\nladder=false\nslopes_cpu=1\nrecon_cpu=1\n\
                 wait=\"{wait}\"\n"
            )
        };
        let err = Scenario::parse(&text("spin")).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "[[case]] #2 (ao-loop): ao-loop: wait = \"spin\" needs a core per stage"
            ) && err.contains("slopes and recon share cpu 1"),
            "{err}"
        );
        assert!(Scenario::parse(&text("park")).is_ok());
    }

    /// A core id no CPU set can name (1024 and up) panicked in every process that pinned to
    /// it: refused, naming the table and the key, the default keys and a stage's alike.
    #[test]
    fn a_core_id_no_cpu_set_can_name_is_refused_naming_the_case_and_key() {
        for key in ["writer_cpu", "reader_cpu"] {
            let err = Scenario::parse(&format!(
                "name=\"x\"\n[defaults]\n{key} = 100000\n[[case]]\nkind=\"roundtrip\"\nsizes=[[2]]\n"
            ))
            .unwrap_err()
            .to_string();
            assert_eq!(
                err,
                format!(
                    "[defaults] {key} = 100000: core ids must be below 1024 (the most a CPU set \
                     names); set {key} to a core this machine has"
                )
            );
        }
        for key in ["camera_cpu", "slopes_cpu", "recon_cpu"] {
            let err = Scenario::parse(&format!(
                "name=\"x\"\n[[case]]\nkind=\"roundtrip\"\nsizes=[[2]]\n[[case]]\n\
                 kind=\"ao-loop\"\nsizes=[[8, 8]]\n[case.ao]\nsubapertures=[2, 2]\n\
                 actuators=5\nrate_hz=1000\n{key} = 1024\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(
                err.starts_with(&format!(
                    "[[case]] #2 (ao-loop): [case.ao] {key} = 1024: core ids must be below 1024"
                )),
                "{err}"
            );
        }
        assert!(!crate::spawn::pin_to(100_000));
    }

    /// `threads = 0` was run on one thread without a word: refused, naming the remedy.
    #[test]
    fn an_mvm_case_with_no_threads_is_refused() {
        let err =
            Scenario::parse("name=\"x\"\n[[case]]\nkind=\"mvm\"\nsizes=[[2, 2]]\nthreads = 0\n")
                .unwrap_err()
                .to_string();
        assert_eq!(
            err,
            "[[case]] #1 (mvm-host-upload): threads = 0: the MVM kernel needs at least 1 thread \
             (1 runs it on the compute core alone; leave threads out for one per core)"
        );
    }

    /// A case name becomes file names and a table cell: one outside [A-Za-z0-9_.-] (two such
    /// names sanitised to one file, a '|' splitting a report row) is refused, naming it.
    #[test]
    fn a_case_name_outside_the_file_name_characters_is_refused() {
        let parse = |name: &str| {
            Scenario::parse(&format!(
                "name=\"x\"\n[[case]]\nname={name:?}\nkind=\"roundtrip\"\nsizes=[[2]]\n"
            ))
        };
        for bad in ["a|b", "a b", "a/b", "é", "a:b", ""] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(
                err.contains(&format!("case name {bad:?} must be non-empty"))
                    && err.contains("'_', '.' and '-'"),
                "{bad}: {err}"
            );
        }
        for good in ["a.b_c-1", "A9"] {
            parse(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
    }

    /// A pingpong or MVM case whose two processes busy-wait on one core is refused, naming
    /// the case, the keys and the remedy (it ran, exited 0, and measured the scheduler's
    /// tick); a waiting form that sleeps, or two cores, is not.
    #[test]
    fn a_spinning_pingpong_or_mvm_case_on_one_core_is_refused() {
        let with = |kind: &str, reader: usize, case: &str| {
            Scenario::parse(&format!(
                "name=\"x\"\n[defaults]\nwriter_cpu = 0\nreader_cpu = {reader}\n[[case]]\n\
                 kind=\"roundtrip\"\nsizes=[[2]]\n[[case]]\nkind=\"{kind}\"\n\
                 sizes=[[64, 64]]\n{case}\n"
            ))
        };
        for (kind, extra) in [("pingpong", ""), ("mvm", "threads = 1")] {
            for wait in ["", "wait = \"spin\""] {
                let err = with(kind, 0, &format!("{extra}\n{wait}"))
                    .unwrap_err()
                    .to_string();
                assert!(
                    err.starts_with(&format!("[[case]] #2 ({kind}")),
                    "{kind} {wait}: {err}"
                );
                assert!(
                    err.contains("[defaults] writer_cpu = reader_cpu = 0")
                        && err.contains("set wait = \"park\""),
                    "{kind} {wait}: {err}"
                );
            }
            assert!(with(kind, 0, &format!("{extra}\nwait = \"park\"")).is_ok());
            assert!(with(kind, 1, &format!("{extra}\nwait = \"spin\"")).is_ok());
        }
        // A GPU MVM's driver spins by default whatever its threads; a CPU kernel on more
        // than one thread has its driver yield, which may share a core.
        let gpu = "device = \"cuda:0\"";
        let err = with("mvm", 0, gpu).unwrap_err().to_string();
        assert!(err.starts_with("[[case]] #2 (mvm"), "{err}");
        assert!(with("mvm", 0, &format!("{gpu}\nwait = \"park\"")).is_ok());
        // (Two threads need two cores: a machine of one refuses them.)
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cores >= 2 {
            let parallel = |device: &str| {
                Scenario::parse(&format!(
                    "name=\"x\"\n[defaults]\nwriter_cpu = 0\nreader_cpu = 0\n[[case]]\n\
                     kind=\"mvm\"\nsizes=[[1024, 1024]]\nthreads = 2\ndevice = \"{device}\"\n"
                ))
            };
            assert!(parallel("cpu").is_ok(), "{:?}", parallel("cpu").err());
            assert!(parallel("cuda:0").is_err());
        }
    }

    /// Ours and its floor alternate, each repeat lasting 2 × min_seconds: a timing that
    /// cannot end within timeout_s is refused, naming the three keys.
    #[test]
    fn an_alternated_timing_longer_than_the_timeout_is_refused() {
        let with = |kind: &str, case: &str| {
            Scenario::parse(&format!(
                "name=\"x\"\n[defaults]\nwarmup = 0.5\n[[case]]\nkind=\"{kind}\"\n\
                 sizes=[[2, 2]]\n{case}\n"
            ))
        };
        for kind in ["roundtrip", "pingpong", "mvm"] {
            let err = with(kind, "min_seconds = 30\nrepeats = 3")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("warmup + 2 × min_seconds × repeats = 0.5 + 2 × 30 × 3 = 180.5 s")
                    && err.contains("timeout_s = 120"),
                "{kind}: {err}"
            );
            assert!(with(kind, "min_seconds = 30\nrepeats = 3\ntimeout_s = 181").is_ok());
            assert!(with(kind, "min_seconds = 19\nrepeats = 3").is_ok());
        }
        let op = with("op", "op = \"write\"\nmin_seconds = 60\nrepeats = 1");
        assert!(op.unwrap_err().to_string().contains("= 120.5 s"));
    }

    /// An ao-loop case's frames are uint16: `dtype = "float32"` written out is refused
    /// (it was taken for the default and silently run as uint16), left out or "uint16" runs.
    #[test]
    fn an_ao_loop_case_refuses_an_explicit_float32_dtype() {
        let with = |dtype: &str| {
            Scenario::parse(&format!(
                "name=\"x\"\n[[case]]\nkind=\"ao-loop\"\nsizes=[[8, 8]]\n{dtype}\n\
                 [case.ao]\nsubapertures=[2, 2]\nactuators=5\nrate_hz=1000\nladder=false\n"
            ))
        };
        let err = with("dtype = \"float32\"").unwrap_err().to_string();
        assert!(
            err.contains("ao-loop frames are uint16, not dtype = \"float32\""),
            "{err}"
        );
        for ok in ["", "dtype = \"uint16\""] {
            let job = with(ok).unwrap().jobs(false, None).remove(0);
            assert_eq!((job.dtype.as_str(), job.itemsize), ("uint16", 2), "{ok}");
        }
        let plain = Scenario::parse("name=\"x\"\n[[case]]\nkind=\"roundtrip\"\nsizes=[[2]]\n");
        assert_eq!(plain.unwrap().jobs(false, None)[0].dtype, "float32");
    }

    /// A pingpong whose gap alone outlasts timeout_s is refused up front, naming gap_us:
    /// the warm-up and every repeat run at least one round trip a side, each after the gap
    /// (it passed, then failed "timed out after 3 s; killed").
    #[test]
    fn a_pingpong_gap_that_cannot_fit_the_timeout_is_refused_naming_gap_us() {
        let with = |gap: &str| {
            Scenario::parse(&format!(
                "name=\"x\"\n[defaults]\nmin_seconds = 0.01\nwarmup = 0.01\nrepeats = 1\n\
                 timeout_s = 3\n[[case]]\nkind=\"pingpong\"\nwait=\"park\"\nsizes=[[8]]\n\
                 gap_us = {gap}\n"
            ))
        };
        let err = with("2000000").unwrap_err().to_string();
        assert!(
            err.contains(
                "with P = 2 × gap = 4 s: 4 × 1 + 1 × 4 × 1 = 8 s, not under timeout_s = 3"
            ) && err.contains("gap_us = 2000000 µs")
                && err.contains("lower gap_us"),
            "{err}"
        );
        assert!(with("1000000").is_err(), "2 + 2 s leave nothing to measure");
        assert!(with("500000").is_ok());
        let job = with("500000").unwrap().jobs(false, None).remove(0);
        let remedy = job.timeout_remedy();
        assert!(
            remedy.contains("timeout_s = 3 s")
                && remedy.contains("min_seconds = 0.01 s")
                && remedy.contains("gap_us = 500000 µs")
                && remedy.contains("lower min_seconds or repeats or gap_us"),
            "{remedy}"
        );
    }

    /// Each phase runs whole pairs of slices, each at least 2 × gap long: a gap of 0.4 s
    /// makes the warm-up 0.8 s and a 1 s repeat 1.6 s (2.4 s in all), not max(warmup, 0.8)
    /// + max(1, 0.8) = 1.8 s, which passed a 2 s timeout_s its run could not meet.
    #[test]
    fn a_pingpong_gap_counts_whole_pairs_of_slices_per_phase() {
        let with = |timeout: &str| {
            Scenario::parse(&format!(
                "name=\"x\"\n[defaults]\nmin_seconds = 0.5\nwarmup = 0.01\nrepeats = 1\n\
                 timeout_s = {timeout}\n[[case]]\nkind=\"pingpong\"\nwait=\"park\"\n\
                 sizes=[[8]]\ngap_us = 400000\n"
            ))
        };
        let err = with("2").unwrap_err().to_string();
        assert!(
            err.contains(
                "with P = 2 × gap = 0.8 s: 0.8 × 1 + 1 × 0.8 × 2 = 2.4 s, not under timeout_s = 2"
            ),
            "{err}"
        );
        assert!(with("2.4").is_err());
        assert!(with("2.5").is_ok());
        // A phase of a whole number of pairs (2 × 0.5 s over P = 0.5 s: two) takes no more,
        // and a timing that needs the whole timeout is refused.
        let exact = |timeout: &str| {
            Scenario::parse(&format!(
                "name=\"x\"\n[defaults]\nmin_seconds = 0.5\nwarmup = 0.01\nrepeats = 1\n\
                 timeout_s = {timeout}\n[[case]]\nkind=\"pingpong\"\nwait=\"park\"\n\
                 sizes=[[8]]\ngap_us = 250000\n"
            ))
        };
        let err = exact("1.5").unwrap_err().to_string();
        assert!(
            err.contains("with P = 2 × gap = 0.5 s: 0.5 × 1 + 1 × 0.5 × 2 = 1.5 s, not under"),
            "{err}"
        );
        assert!(exact("1.6").is_ok());
    }

    /// A GPU consumer reads device buffers: a CPU MVM case cannot take one.
    #[test]
    fn a_gpu_consumer_on_a_cpu_case_is_refused() {
        let with = |device: &str| {
            Scenario::parse(&format!(
                "name=\"x\"\n[[case]]\nkind=\"mvm\"\nsizes=[[64, 64]]\ndevice = \"{device}\"\n\
                 pipeline = \"gpu-consumer\"\n"
            ))
        };
        let err = with("cpu").unwrap_err().to_string();
        assert!(
            err.ends_with("pipeline = \"gpu-consumer\" applies to GPU pingpong and mvm cases"),
            "{err}"
        );
        assert!(with("cuda:0").is_ok());
    }

    /// The MVM kernel pins a worker per core: more threads than cores is refused (a
    /// huge count overflowed the kernel's chunk size and started 65 535 pinned threads).
    #[test]
    fn more_mvm_threads_than_cores_are_refused() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let with = |t: usize| {
            Scenario::parse(&format!(
                "name=\"x\"\n[[case]]\nkind=\"mvm\"\nsizes=[[2, 2]]\nthreads = {t}\n"
            ))
        };
        assert_eq!(with(cores).unwrap().jobs(false, None)[0].threads, cores);
        for t in [cores + 1, 100_000, usize::MAX / 2] {
            let err = with(t).unwrap_err().to_string();
            assert!(
                err.contains(&format!("threads = {t}: this machine has {cores} core(s)")),
                "{err}"
            );
        }
    }

    #[test]
    fn the_shipped_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let mut parsed = Vec::new();
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.extension().is_some_and(|x| x == "toml") {
                Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                parsed.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
        for f in [
            "smoke.toml",
            "gate.toml",
            "ao.toml",
            "ao-newest.toml",
            "bridge.toml",
        ] {
            assert!(parsed.iter().any(|p| p == f), "{f} missing: {parsed:?}");
        }
    }
}
