//! Host noise: how often this machine takes a core from a thread that never gives it up.
//!
//! Before the cases, a thread pinned to each core the scenario places its processes on
//! spins on the monotonic clock for a few seconds, all cores at once, and keeps every gap
//! between two readings: a gap is time the core spent on something else (another task,
//! an interrupt, the hypervisor). Per core: the gaps of 100 µs and more, of 1 ms and more,
//! the longest, the time lost, and the host's steal over the probe (`/proc/stat`); for the
//! machine, the other tasks that used the most CPU meanwhile (`/proc/<pid>/stat`). A frame
//! due during a pause comes late by up to its length, so the pauses bound a loop's max
//! latency and jitter from below on this host, measured in the same run; its p99 leaves out
//! the slowest 1% of frames, so they reach it only where they take 1% of the time or more.

use std::collections::HashMap;

use harness_sys::clock::monotonic_ns;
use serde::Serialize;

use crate::spawn::pin_to;

/// Gaps from this length on are counted (a clock reading and a loop turn take tens of ns).
const SHORT_NS: u64 = 100_000;
/// Gaps from this length on are a frame's worth at 1 kHz.
const LONG_NS: u64 = 1_000_000;
/// `/proc/stat` and `/proc/<pid>/stat` count in USER_HZ ticks, 100 a second on Linux (ABI).
const TICK_MS: f64 = 10.0;
/// Other tasks listed.
const BUSIEST: usize = 3;

/// What one core's spinning thread saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CoreNoise {
    /// The core.
    pub cpu: usize,
    /// Whether the thread could be pinned there (else the core was not probed).
    pub pinned: bool,
    /// Gaps of 100 µs and more.
    pub gaps_over_100us: u64,
    /// Gaps of 1 ms and more.
    pub gaps_over_1ms: u64,
    /// The longest gap, ns.
    pub longest_ns: u64,
    /// The gaps of 100 µs and more, summed, ns.
    pub lost_ns: u64,
    /// The gaps of 1 ms and more, summed, ns.
    pub lost_over_1ms_ns: u64,
    /// The host's steal on this core over the probe, ms (ticks of 10 ms), when readable.
    pub steal_ms: Option<f64>,
}

/// The probe's result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostNoise {
    /// How long each core was probed, s.
    pub seconds: f64,
    /// One entry per probed core.
    pub cores: Vec<CoreNoise>,
    /// The other tasks (processes and kernel threads) that used the most CPU over the
    /// probe: name and ms (ticks of 10 ms).
    pub busiest_other_tasks: Vec<(String, f64)>,
}

impl HostNoise {
    /// One line for the report's environment table.
    pub fn line(&self) -> String {
        if self.cores.is_empty() {
            return "not probed".into();
        }
        let cores = self
            .cores
            .iter()
            .map(|c| {
                if !c.pinned {
                    return format!("cpu {}: could not pin a thread there", c.cpu);
                }
                let steal = c
                    .steal_ms
                    .map(|s| format!(", host steal {s:.0} ms"))
                    .unwrap_or_default();
                format!(
                    "cpu {}: {} pauses ≥ 1 ms and {} ≥ 100 µs, longest {:.2} ms, {:.1} ms lost{steal}",
                    c.cpu,
                    c.gaps_over_1ms,
                    c.gaps_over_100us,
                    c.longest_ns as f64 / 1e6,
                    c.lost_ns as f64 / 1e6,
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let others = if self.busiest_other_tasks.is_empty() {
            "no other task used a tick".to_string()
        } else {
            self.busiest_other_tasks
                .iter()
                .map(|(n, ms)| format!("{n} {ms:.0} ms"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "a thread spinning {:.1} s on each core: {cores}. Other tasks meanwhile: {others}",
            self.seconds
        )
    }

    /// The probed entries of `cpus`, each once, in core order (the cores a run's stages
    /// ran on).
    pub fn cores_of(&self, cpus: impl IntoIterator<Item = usize>) -> Vec<&CoreNoise> {
        let cpus: std::collections::BTreeSet<usize> = cpus.into_iter().collect();
        cpus.into_iter()
            .filter_map(|cpu| self.cores.iter().find(|c| c.cpu == cpu && c.pinned))
            .collect()
    }

    /// "N times for 1 ms or more in S s, the longest X ms": what `c` saw, for a sentence.
    pub fn pauses(&self, c: &CoreNoise) -> String {
        format!(
            "{} times for 1 ms or more in {:.1} s, the longest {:.2} ms",
            c.gaps_over_1ms,
            self.seconds,
            c.longest_ns as f64 / 1e6
        )
    }
}

/// Spins on each of `cpus` (duplicates once) for `seconds`, all at once.
pub fn probe(cpus: &[usize], seconds: f64) -> HostNoise {
    let mut cpus = cpus.to_vec();
    cpus.sort_unstable();
    cpus.dedup();
    if seconds <= 0.0 || cpus.is_empty() {
        return HostNoise::default();
    }
    let steal_before = steal_ticks();
    let tasks_before = task_ticks();
    let span_ns = (seconds * 1e9) as u64;
    let mut cores: Vec<CoreNoise> = std::thread::scope(|s| {
        let handles: Vec<_> = cpus
            .iter()
            .map(|&cpu| s.spawn(move || spin(cpu, span_ns)))
            .collect();
        handles
            .into_iter()
            .zip(&cpus)
            .map(|(h, &cpu)| {
                h.join().unwrap_or(CoreNoise {
                    cpu,
                    ..CoreNoise::default()
                })
            })
            .collect()
    });
    let steal_after = steal_ticks();
    for c in &mut cores {
        c.steal_ms = steal_over(&steal_before, &steal_after, c.cpu);
    }
    HostNoise {
        seconds,
        cores,
        busiest_other_tasks: busiest(&tasks_before, &task_ticks(), std::process::id()),
    }
}

/// One core's spinning thread.
fn spin(cpu: usize, span_ns: u64) -> CoreNoise {
    let mut n = CoreNoise {
        cpu,
        ..CoreNoise::default()
    };
    if !pin_to(cpu) {
        return n;
    }
    n.pinned = true;
    let start = monotonic_ns();
    let mut prev = start;
    while prev - start < span_ns {
        let now = monotonic_ns();
        n.record(now - prev);
        prev = now;
    }
    n
}

impl CoreNoise {
    fn record(&mut self, gap: u64) {
        self.longest_ns = self.longest_ns.max(gap);
        if gap >= SHORT_NS {
            self.gaps_over_100us += 1;
            self.lost_ns += gap;
        }
        if gap >= LONG_NS {
            self.gaps_over_1ms += 1;
            self.lost_over_1ms_ns += gap;
        }
    }
}

/// Steal ticks per core, from `/proc/stat` (empty when unreadable).
fn steal_ticks() -> HashMap<usize, u64> {
    std::fs::read_to_string("/proc/stat")
        .map(|t| parse_steal(&t))
        .unwrap_or_default()
}

/// The steal on core `cpu` between two [`steal_ticks`] snapshots, ms; `None` where
/// either lacks the core.
fn steal_over(
    before: &HashMap<usize, u64>,
    after: &HashMap<usize, u64>,
    cpu: usize,
) -> Option<f64> {
    Some(after.get(&cpu)?.saturating_sub(*before.get(&cpu)?) as f64 * TICK_MS)
}

/// `cpuN user nice system idle iowait irq softirq steal …` → N → steal.
fn parse_steal(stat: &str) -> HashMap<usize, u64> {
    stat.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let cpu = f.next()?.strip_prefix("cpu")?.parse().ok()?;
            let steal = f.nth(7)?.parse().ok()?;
            Some((cpu, steal))
        })
        .collect()
}

/// User + system ticks of every process and kernel thread, by pid: (name, ticks).
fn task_ticks() -> HashMap<u32, (String, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        Some((pid, parse_task(&stat)?))
    })
    .collect()
}

/// `pid (comm) state ppid … utime stime …` → (comm, utime + stime). The name may hold
/// spaces and parentheses, so the fields are counted from the last `)`.
fn parse_task(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_string();
    let mut f = stat.get(close + 1..)?.split_whitespace();
    // After the name: state is field 3, utime 14 and stime 15 (proc(5)).
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some((name, utime + stime))
}

/// The tasks other than `own` whose ticks grew most between the snapshots.
fn busiest(
    before: &HashMap<u32, (String, u64)>,
    after: &HashMap<u32, (String, u64)>,
    own: u32,
) -> Vec<(String, f64)> {
    let mut grew: Vec<(String, u64)> = after
        .iter()
        .filter(|(pid, _)| **pid != own)
        .filter_map(|(pid, (name, t))| {
            let d = t.saturating_sub(before.get(pid).map_or(0, |b| b.1));
            (d > 0).then(|| (format!("{name} ({pid})"), d))
        })
        .collect();
    grew.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    grew.into_iter()
        .take(BUSIEST)
        .map(|(n, d)| (n, d as f64 * TICK_MS))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_counted_by_length() {
        let mut c = CoreNoise::default();
        for gap in [50, 99_999, 100_000, 999_999, 1_000_000, 4_000_000] {
            c.record(gap);
        }
        assert_eq!((c.gaps_over_100us, c.gaps_over_1ms), (4, 2));
        assert_eq!(c.longest_ns, 4_000_000);
        assert_eq!(c.lost_ns, 100_000 + 999_999 + 1_000_000 + 4_000_000);
        assert_eq!(c.lost_over_1ms_ns, 1_000_000 + 4_000_000);
    }

    #[test]
    fn steal_is_read_per_core_and_the_total_line_is_skipped() {
        let stat = "cpu  3804656 0 447436 2500283 18951 0 28104 2029 0 0\n\
                    cpu0 1 2 3 4 5 6 7 11 0 0\n\
                    cpu1 1 2 3 4 5 6 7 22 0 0\n\
                    intr 123\n";
        let s = parse_steal(stat);
        assert_eq!(s.len(), 2);
        assert_eq!((s[&0], s[&1]), (11, 22));
        let (before, after) = ([(0, 5), (1, 9)].into(), [(0, 7), (2, 1)].into());
        assert_eq!(steal_over(&before, &after, 0), Some(20.0));
        assert_eq!(steal_over(&before, &after, 1), None);
        assert_eq!(steal_over(&before, &after, 2), None);
    }

    /// This machine's `/proc` is read: the steal of every core this process may run on,
    /// and every task's ticks, this process's own under its name.
    #[test]
    fn the_steal_and_the_tasks_ticks_are_read_from_this_machines_proc() {
        let cores = std::thread::available_parallelism().unwrap().get();
        assert!(steal_ticks().len() >= cores, "{:?}", steal_ticks());
        let tasks = task_ticks();
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(tasks[&std::process::id()].0, comm.trim());
        assert!(tasks.len() > 1, "{tasks:?}");
    }

    #[test]
    fn a_tasks_ticks_are_read_past_a_name_with_spaces_and_parentheses() {
        let stat = "77 (kd (a) b) S 2 0 0 0 -1 2129984 0 0 0 0 600 40 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_task(stat), Some(("kd (a) b".into(), 640)));
        assert_eq!(parse_task("garbage"), None);
    }

    #[test]
    fn the_busiest_other_tasks_come_first_and_our_own_is_left_out() {
        let before: HashMap<u32, (String, u64)> = [
            (1, ("a".into(), 10)),
            (2, ("b".into(), 10)),
            (9, ("us".into(), 0)),
        ]
        .into();
        let after: HashMap<u32, (String, u64)> = [
            (1, ("a".into(), 11)),
            (2, ("b".into(), 16)),
            (3, ("new".into(), 3)),
            (9, ("us".into(), 500)),
        ]
        .into();
        assert_eq!(
            busiest(&before, &after, 9),
            vec![
                ("b (2)".to_string(), 60.0),
                ("new (3)".to_string(), 30.0),
                ("a (1)".to_string(), 10.0)
            ]
        );
        assert_eq!(
            busiest(&before, &before, 9),
            Vec::<(String, f64)>::new(),
            "tasks that used no tick were listed"
        );
    }

    /// The line names each probed core's pauses, lost time and steal, or that it could not
    /// be pinned, then the busiest other tasks.
    #[test]
    fn the_line_names_each_cores_pauses_and_the_busiest_other_tasks() {
        let sut = HostNoise {
            seconds: 2.0,
            cores: vec![
                CoreNoise {
                    cpu: 0,
                    pinned: true,
                    gaps_over_100us: 5,
                    gaps_over_1ms: 2,
                    longest_ns: 3_500_000,
                    lost_ns: 6_200_000,
                    lost_over_1ms_ns: 5_000_000,
                    steal_ms: Some(20.0),
                },
                CoreNoise {
                    cpu: 3,
                    ..CoreNoise::default()
                },
            ],
            busiest_other_tasks: vec![("kworker (12)".into(), 30.0)],
        };
        assert_eq!(
            sut.line(),
            "a thread spinning 2.0 s on each core: cpu 0: 2 pauses ≥ 1 ms and 5 ≥ 100 µs, \
             longest 3.50 ms, 6.2 ms lost, host steal 20 ms; cpu 3: could not pin a thread \
             there. Other tasks meanwhile: kworker (12) 30 ms"
        );
        assert_eq!(sut.cores_of([3, 0]).len(), 1, "an unpinned core was listed");
    }

    /// A core the probe shares with a busy thread shows the time that thread takes from it
    /// as pauses: each of its turns on the core is a gap in the probe's clock readings.
    #[test]
    fn a_core_shared_with_a_busy_thread_shows_its_pauses() {
        let cpu = *crate::spawn::allowed_cores().unwrap().last().unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let start = std::time::Instant::now();
        let n = std::thread::scope(|s| {
            s.spawn(|| {
                assert!(pin_to(cpu));
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            });
            let n = probe(&[cpu], 0.2);
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            n
        });
        assert!(
            start.elapsed().as_secs_f64() >= 0.2,
            "{:?}",
            start.elapsed()
        );
        let c = &n.cores[..];
        assert!(c.len() == 1 && c[0].cpu == cpu && c[0].pinned, "{c:?}");
        assert!(
            c[0].gaps_over_100us >= 1 && c[0].longest_ns >= 100_000,
            "{c:?}"
        );
        assert!(c[0].lost_ns >= c[0].longest_ns, "{c:?}");
        assert!(c[0].steal_ms.is_some(), "{c:?}");
    }

    #[test]
    fn a_short_probe_covers_each_core_once_and_says_so() {
        let n = probe(&[0, 0], 0.1);
        assert_eq!(n.cores.len(), 1);
        assert!(n.cores[0].pinned, "core 0 exists on every machine");
        assert!(
            n.line()
                .starts_with("a thread spinning 0.1 s on each core: cpu 0: ")
        );
        assert!(probe(&[0], 0.0).line() == "not probed");
        assert_eq!(
            n.cores_of([0, 0, 7]).len(),
            1,
            "core 0 once, core 7 not probed"
        );
        assert!(
            n.pauses(&n.cores[0])
                .contains(" times for 1 ms or more in 0.1 s, the longest ")
        );
    }
}
