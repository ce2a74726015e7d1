//! The `report.md` section of the ao-loop jobs: end-to-end table, per-stage and per-hop
//! breakdown with the dominant part named, the composed floor, the pyshmem + numpy
//! loop, the rate ladder and the reconstructor's bandwidth.

use std::fmt::Write as _;

use crate::cases::ao::geometry::MAX_RATE_HZ;
use crate::error::Result;
use crate::hist::Percentiles;
use crate::noise::HostNoise;
use crate::run::JobResult;

use super::{SUPPORT_NOTE, us, us_at};

fn ms_or_us(ns: f64) -> String {
    us(ns as u64)
}

/// `ns` of a loop whose end-to-end histogram is `h` in µs, or "—" where `h` is empty: no
/// frame reached the DM (the loop overloaded), and its figures hold no latency or pacing.
pub fn us_if_any(h: &hdrhistogram::Histogram<u64>, ns: f64) -> String {
    match h.is_empty() {
        true => "—".into(),
        false => ms_or_us(ns),
    }
}

/// Percentile `q` (`ns`) of a loop whose end-to-end histogram is `h`, in µs: "—" where `h`
/// is empty or holds too few frames to support `q` ([`us_at`]).
fn lat_at(h: &hdrhistogram::Histogram<u64>, ns: u64, q: f64) -> String {
    us_at(ns, q, h.len())
}

/// What to say of a verdict judged on the p99 of `n` end-to-end samples where `n` does not
/// support a p99 ([`crate::hist::supports`]); `None` where it does, or where there is none.
pub fn p99_note(n: u64) -> Option<String> {
    (n > 0 && !crate::hist::supports(n, 0.99)).then(|| {
        format!(
            "p99 from {n} frames: a p99 needs {}",
            crate::hist::min_samples(0.99)
        )
    })
}

/// `verdict` with its [`p99_note`].
fn verdict_text(verdict: &str, n: u64) -> String {
    match p99_note(n) {
        Some(note) => format!("{verdict} ({note})"),
        None => verdict.to_string(),
    }
}

/// Frames of `h` that took 1 ms or more: those a pause of the host can make.
fn over_1ms(h: &hdrhistogram::Histogram<u64>) -> u64 {
    h.len() - h.count_between(0, 999_999)
}

/// What the host noise probe saw on the cores the loops' stages ran on, and what it
/// means for a loop's tail and jitter.
fn noise_note(
    o: &mut String,
    rows: &[(&JobResult, &crate::cases::ao::AoSummary)],
    noise: &HostNoise,
) -> Result<()> {
    let stages = rows
        .iter()
        .flat_map(|(r, _)| crate::cases::ao::placement::Placement::of(&r.job).stage_cores());
    for c in noise.cores_of(stages) {
        writeln!(
            o,
            "\nHost noise on the stages' core (cpu {}), measured before the cases: a spinning thread was paused {} ({:.1} ms lost in pauses of 100 µs or more). The frames a loop has due during such a pause come late by up to its length, in ours and in pyshmem's alike (a stage that sleeps between frames is paused less often than a thread that never gives up its core: the scheduler favours a task that has just woken); one frame 4 ms late among 30 000 adds about 23 µs to a std, so on a host that pauses its cores for milliseconds the jitter ratio is decided by the pauses each loop happened to meet as much as by the loops.",
            c.cpu,
            noise.pauses(c),
            c.lost_ns as f64 / 1e6,
        )?;
    }
    Ok(())
}

/// How the stages of an oversubscribed placement of `job` wait ([`AoCase::stage_wait`] and
/// [`AoCase::wake_ahead_ns`] for a stage that shares its core): parked at once on a futex,
/// but for the stage that reads camera frames where it is among those sharing a core
/// ([`Placement::shares`] on `allowed`, the cores a process can be pinned to,
/// [`Placement::pinnable_cores`]) and its case sets a wake-ahead margin: it sleeps until
/// that margin before each frame is due, then spins, yielding its core. (Alone on its core,
/// it is not among the stages the note is about, however it waits.)
///
/// [`AoCase::stage_wait`]: crate::cases::ao::AoCase::stage_wait
/// [`AoCase::wake_ahead_ns`]: crate::cases::ao::AoCase::wake_ahead_ns
/// [`Placement::shares`]: crate::cases::ao::placement::Placement::shares
/// [`Placement::pinnable_cores`]: crate::cases::ao::placement::Placement::pinnable_cores
fn shared_wait(job: &crate::scenario::Job, allowed: Option<&[usize]>) -> String {
    let place = crate::cases::ao::placement::Placement::of(job);
    let ahead = job
        .ao
        .as_ref()
        .filter(|_| place.shares(place.slopes, allowed))
        .and_then(|ao| ao.wake_ahead_ns(true));
    match ahead {
        Some(ns) => format!(
            "those stages wait with futex wake-ups, parked until a frame comes, but for the \
             one reading camera frames, which wakes {} µs before each is due and spins for it, \
             yielding its core",
            us(ns)
        ),
        None => "those stages wait with futex wake-ups, parking at once".into(),
    }
}

/// The section, or an empty string when the run has no ao-loop job.
pub fn section(results: &[JobResult], noise: &HostNoise) -> Result<String> {
    let rows: Vec<(&JobResult, &crate::cases::ao::AoSummary)> = results
        .iter()
        .filter_map(|r| r.ao.as_deref().map(|a| (r, a)))
        .collect();
    let mut o = String::new();
    if rows.is_empty() {
        return Ok(o);
    }
    let late = crate::cases::ao::MAX_LATE_AT_SOURCE * 100.0;
    writeln!(
        o,
        "## AO loops\n\n\
         - **End to end** = DM publish − camera publish of the same frame id (each stage logs \
         frame id and times in memory, handed back at the end); **jitter** = its std.\n\
         - **Missed** = camera frames (after warm-up) whose id never reached the DM. \
         **Late at the camera**: of those, frames the camera published a period or more after \
         their deadline (its own core paused, then the overdue frames back to back, the stale \
         ones skipped), the source's loss, which the verdict leaves out as it does the pacing \
         error, up to {late:.0}% of the camera's frames (beyond, the camera did not hold the rate \
         on this host and the verdict fails); counted only where the camera has its core to \
         itself (on a core it shares with a stage, the stages' overrun is what delays it, and \
         such frames are the pipeline's loss).\n\
         - **Camera pacing** = publish − deadline.\n\
         - µs unless noted. n: frames that reached the DM (pacing: the camera's frames). \
         {SUPPORT_NOTE}\n"
    )?;
    writeln!(
        o,
        "| case | geometry | placement | rate Hz | achieved Hz | n | mean | p50 | p90 | p99 | p99.9 | max | jitter | missed | pacing p99 | verdict |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )?;
    for (r, a) in &rows {
        let label = r.job.label();
        match (&r.ours, &a.stats) {
            (Ok(s), Some(st)) => {
                let p = Percentiles::of(&s.hist);
                let lat = |ns: u64, q: f64| lat_at(&s.hist, ns, q);
                writeln!(
                    o,
                    "| `{label}` | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    a.geometry.describe(),
                    a.placement,
                    super::fmt_rate_plain(a.rate_hz),
                    super::fmt_rate_plain(st.achieved_hz),
                    p.count,
                    us_if_any(&s.hist, p.mean),
                    lat(p.p50, 0.5),
                    lat(p.p90, 0.9),
                    lat(p.p99, 0.99),
                    lat(p.p999, 0.999),
                    lat(p.max, 1.0),
                    us_if_any(&s.hist, st.jitter_ns),
                    st.missed_text(),
                    // No frame reached the DM: no pacing was taken from the logs either.
                    if s.hist.is_empty() {
                        "—".into()
                    } else {
                        us_at(st.pacing_ns[1], 0.99, st.frames)
                    },
                    verdict_text(&a.verdict, p.count)
                )?;
            }
            _ => {
                let e = r.skipped.clone().unwrap_or_else(|| {
                    r.ours
                        .as_ref()
                        .err()
                        .map_or("no statistics", |e| e.lines().next().unwrap_or("failed"))
                        .to_string()
                });
                writeln!(
                    o,
                    "| `{label}` | {} | {} | {} | | | | | | | | | | | | {} |",
                    a.geometry.describe(),
                    a.placement,
                    super::fmt_rate_plain(a.rate_hz),
                    e.replace('|', "\\|")
                )?;
            }
        }
    }
    let notes: Vec<String> = rows
        .iter()
        .filter_map(|(r, a)| {
            a.oversubscribed.as_ref().map(|n| {
                let place = crate::cases::ao::placement::Placement::of(&r.job);
                format!(
                    "`{}`: {n} ({})",
                    r.job.label(),
                    shared_wait(&r.job, place.pinnable_here().as_deref())
                )
            })
        })
        .collect();
    if !notes.is_empty() {
        writeln!(o, "\nOversubscribed placements: {}.", notes.join("; "))?;
    }

    writeln!(
        o,
        "\n### Where the time goes\n\nEach stage's compute and each hop's latency (p50 / p99), beside the composed floor they are set against: what a loop of this form built on this harness's own kernels and hand-offs reaches in this placement on this host. `ratio_to_floor` = floor p50 / our p50. In the split form the slopes stage's time is in two parts: `slopes`, its compute, and `signals write`, from the end of its compute to its write's return, or to the reconstructor's input where that comes first (a reconstructor sharing the core may run inside the wake-up: the part then holds its switch and read); it holds the reconstructor's wake-up where it is parked. `slopes→recon` runs from there to the reconstructor holding the signals. The reconstructor's time includes its publication.\n\nThe floor's parts:\n\n- **compute alone**: each stage's compute on plain memory, one frame a camera period, on a core idle in between as the loop leaves it (spinning when the stages spin, or awake from the stage's wake-ahead margin when it wakes ahead);\n- **publish alone**: the bare publication of each stage's output (the signals in the split form with the stages on two cores, the commands in all), held, into as many slots as the stream keeps frames, the wake included where the streams notify; a stage's own publish time is when its write returned;\n- **each hop's one-way floor**: a bare publish on plain shared memory into the next of as many slots as the stage's input stream keeps history, without the flock pair (each stage holds its output's write lock), and the receiver's copy out, one camera period apart (back to back between spinning stages). It is timed on the shared monotonic clock, as the stages time their hops: from publish start (from a stage, from its write's return; where both stages share a core, from before the write, as the receiver may run inside the sender's wake) to the receiver holding the payload. It waits as the hop's stages do: adaptive across cores by default, parked where they share a core, asleep until the same margin before each frame and then spinning where the stage wakes ahead; the receiver's core is kept busy by a spinning thread where the reconstructor sharing it outlasts a camera period.\n\nHow they are measured and summed:\n\n- The loop runs in `runs` pieces (2 by default) with a pass of every part before, between and after them; each part comes from its fastest pass (the compute log with the lowest median, each hop with the lowest p50).\n- Where the stages' compute takes under a quarter of a period, the parts are also timed between the loop's own frames, in its own processes, so that they see the host as the loop's frames do, and taken from there where faster: the camera publishes the same frame bare half a period after each of its frames and the stage takes it between two of its own (the camera hop's floor); on the CPU that stage also computes on it: in the merged form slopes and reconstructor, publishing the commands bare; in the split form the slopes, published bare to the reconstructor, which takes them between two of its frames (the signals hop's floor), computes and publishes the commands bare (notes `camera hop floor`, `signals hop floor` and `compute floor` in `details.json`).\n- The parts are summed percentile by percentile: the frames' compute sorted, each paired with every hop's sample at the same rank, so each percentile of the floor is the sum of its parts'; or, where lower, with the compute paired independently of the hops (parts mostly slow with a fast minority).\n- A stage's or hop's percentiles, and each floor part's, are shown as the loop's are, judged on the loop's sample count (n in the table above: a floor part's own count is not kept); the floor's p50 from the floor's own samples.\n\n| case | stages and hops (p50 / p99) | dominant | floor parts (p50 / p99) | floor p50 | ratio_to_floor |\n|---|---|---|---|---|---|"
    )?;
    for (r, a) in &rows {
        let Some(st) = &a.stats else { continue };
        let n = r.ours.as_ref().map_or(0, |s| s.hist.len());
        let parts = |v: &[crate::cases::ao::analysis::StageStat]| {
            v.iter()
                .map(|s| {
                    format!(
                        "{} {} / {}",
                        s.name,
                        us_at(s.p50_ns, 0.5, n),
                        us_at(s.p99_ns, 0.99, n)
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        writeln!(
            o,
            "| `{}` | {} | **{}** | {} | {} | {} |",
            r.job.label(),
            parts(&st.stages),
            st.dominant().map_or("—", |s| s.name.as_str()),
            parts(&a.floor_parts),
            r.floor.as_ref().map_or("—".into(), |f| us_at(
                f.hist.value_at_quantile(0.5),
                0.5,
                f.hist.len()
            )),
            r.ratio_to_floor().map_or("—".into(), |v| format!("{v:.2}"))
        )?;
    }

    writeln!(
        o,
        "\n### Against pyshmem 1.4.0 + numpy\n\nThe same stages as Python processes (notify streams, `read_new`, numpy), same geometry, same cores.\n\n- **What each loop skips.** A pyshmem stage waits for a frame published after it calls `read_new`: every frame that came while it was busy, the newest included, is skipped, counts as missed and stays out of its percentiles and jitter, and the next one comes to a waiting stage. Ours read every frame in order through cursors (up to the case's `catch_up` frames behind: 4 unless the placement column says `catch up N`), so a stall shows in ours as late frames instead; where it says `newest frame` (`catch_up = 0`) a stage takes the newest frame that came while it was busy at once, one late frame where pyshmem's skips it.\n- {SUPPORT_NOTE}\n- **Frames ≥ 1 ms**: those of each loop that took a millisecond or more, what a pause of the host makes of a frame (see the host noise below).\n- **Peer ÷ floor**: the same ratios with the composed floor in ours' place (its p50, p99 and std), what a loop as fast as its floor would read against this peer on this host. The floor's p50 is that of this harness's own kernels (single-threaded: the reconstructor has one core, and `threads` > 1 is refused) in this placement: where its ratio is below a target, no loop built on them here meets it (other kernels may); its p99 and std, from per-sample sums of the parts, are estimates, not bounds.\n\n| case | ours p50 / p99 / jitter (n) | pyshmem p50 / p99 / jitter (n) | pyshmem missed | frames ≥ 1 ms (ours / pyshmem) | peer ÷ ours (p50, p99, jitter) | peer ÷ floor (p50, p99, jitter) |\n|---|---|---|---|---|---|---|"
    )?;
    for (r, a) in &rows {
        let (Ok(s), Some(st)) = (&r.ours, &a.stats) else {
            continue;
        };
        let p = Percentiles::of(&s.hist);
        let ours = format!(
            "{} / {} / {} ({})",
            lat_at(&s.hist, p.p50, 0.5),
            lat_at(&s.hist, p.p99, 0.99),
            us_if_any(&s.hist, st.jitter_ns),
            p.count
        );
        match (&r.peer, &a.peer) {
            (Ok(ps), Some(pst)) => {
                let q = Percentiles::of(&ps.hist);
                // A p99 ratio only where both sides' frames support their p99.
                let p99s =
                    |n: u64| crate::hist::supports(q.count, 0.99) && crate::hist::supports(n, 0.99);
                let ratio = |a: f64, b: f64| {
                    if b > 0.0 {
                        format!("{:.1}×", a / b)
                    } else {
                        "—".into()
                    }
                };
                let ceiling = match &r.floor {
                    Ok(f) => {
                        let fp = Percentiles::of(&f.hist);
                        format!(
                            "{}, {}, {}",
                            ratio(q.p50 as f64, fp.p50 as f64),
                            if p99s(fp.count) {
                                ratio(q.p99 as f64, fp.p99 as f64)
                            } else {
                                "—".into()
                            },
                            ratio(pst.jitter_ns, f.hist.stdev())
                        )
                    }
                    Err(_) => "no floor".into(),
                };
                writeln!(
                    o,
                    "| `{}` | {ours} | {} / {} / {} ({}) | {} | {} / {} | {}, {}, {} | {ceiling} |",
                    r.job.label(),
                    us_at(q.p50, 0.5, q.count),
                    us_at(q.p99, 0.99, q.count),
                    ms_or_us(pst.jitter_ns),
                    q.count,
                    pst.missed_text(),
                    over_1ms(&s.hist),
                    over_1ms(&ps.hist),
                    ratio(q.p50 as f64, p.p50 as f64),
                    if p99s(p.count) {
                        ratio(q.p99 as f64, p.p99 as f64)
                    } else {
                        "—".into()
                    },
                    ratio(pst.jitter_ns, st.jitter_ns)
                )?;
            }
            _ => {
                let e = r
                    .peer
                    .as_ref()
                    .err()
                    .map_or("no statistics", |e| e.lines().next().unwrap_or(""));
                writeln!(
                    o,
                    "| `{}` | {ours} | {} | | | | |",
                    r.job.label(),
                    e.replace('|', "\\|")
                )?;
            }
        }
    }

    noise_note(&mut o, &rows, noise)?;

    writeln!(
        o,
        "\n### Highest sustainable rate and bandwidth\n\n- **Rate ladder**: short runs from the case's rate, the main run its first rung: from twice the rate where the main run kept up (the case's rate is then the lowest it reports), from half of it where it did not (the highest it reports is then below the case's rate); doubled while the loop keeps up, up to {MAX_RATE_HZ} Hz, else halved, then bisected.\n- **Sustainable**: no missed frame (the camera's own late frames up to {late:.0}% aside) and p99 below the frame period. The case's `budget_us` does not enter it: the verdict judges the budget at the case's rate.\n- **\"≥ N\"**: no rate it tried failed, the main run's included (it stopped at the limit or after its last try), so N is only a lower bound.\n- **Bandwidth**: reconstructor matrix bytes per frame × rate, against the bandwidth of the reconstructor alone on this machine (matrix bytes / its median time, measured in the floor).\n\n| case | highest sustainable rate Hz (budget aside) | ladder (Hz: ok?) | matrix bytes / frame | needed at the rate GB/s | this machine GB/s (measured) |\n|---|---|---|---|---|---|"
    )?;
    for (r, a) in &rows {
        let ladder = a
            .ladder
            .iter()
            .map(|g| {
                let late = match g.missed_at_source {
                    Some(n) if n > 0 => format!(" ({n} late at the camera)"),
                    _ => String::new(),
                };
                format!(
                    "{}:{}{late}",
                    super::fmt_rate_plain(g.rate_hz),
                    if g.ok { "ok" } else { "no" }
                )
            })
            .collect::<Vec<_>>()
            .join(" ");
        writeln!(
            o,
            "| `{}` | {} | {} | {} | {:.3} | {} |",
            r.job.label(),
            a.max_rate_text(),
            if ladder.is_empty() {
                "not run".into()
            } else {
                ladder
            },
            super::human_bytes(a.recon_bytes as usize),
            a.needed_gbs,
            a.measured_gbs.map_or("—".into(), |v| format!("{v:.1}"))
        )?;
    }
    writeln!(o)?;
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::ao::analysis::LoopStats;

    /// The first row of the table under `header` in `text`.
    fn first_row(text: &str, header: &str) -> String {
        let at = text.find(header).unwrap();
        let mut rows = text[at..].lines().filter(|l| l.starts_with("| `"));
        rows.next().unwrap().to_string()
    }

    /// The note on an oversubscribed placement says how its stages wait: parked at once,
    /// but for a stage that wakes ahead of the camera's frames (`wake_ahead_us`, as
    /// `harness size --rt-priority` sets it for the split form), which spins from that margin.
    #[test]
    fn the_oversubscription_note_says_a_stage_that_wakes_ahead_spins() {
        let note = |extra: &str| {
            let case = format!(
                "sizes = [[8, 8]]\n[case.ao]\nsubapertures = [2, 2]\nactuators = 5\n\
                 rate_hz = 2000\n{extra}"
            );
            let mut sut = crate::report::targets::tests::ao(
                &case,
                [300_000; 3],
                LoopStats::default(),
                LoopStats::default(),
            );
            sut.ao.as_mut().unwrap().oversubscribed = Some("slopes and recon share cpu 1".into());
            let text = section(std::slice::from_ref(&sut), &HostNoise::default()).unwrap();
            text.lines()
                .find(|l| l.starts_with("Oversubscribed placements:"))
                .unwrap()
                .to_string()
        };
        let ahead = note("wake_ahead_us = 125\n");
        assert!(
            !ahead.contains("parking at once")
                && ahead.contains("slopes and recon share cpu 1")
                && ahead.contains("wakes 125.0 µs before each is due and spins for it"),
            "{ahead}"
        );
        let parked = note("");
        assert!(
            parked.contains(
                "slopes and recon share cpu 1 (those stages wait with futex \
                 wake-ups, parking at once)"
            ),
            "{parked}"
        );
    }

    /// Where the stage reading camera frames has its core to itself (camera 0, slopes 1,
    /// recon 0: camera and reconstructor share cpu 0), the note on the sharing stages says
    /// nothing of its wake-ahead margin; where it runs unpinned (cpu 1 cannot be pinned
    /// to), it shares every core, and the note says it wakes ahead.
    #[test]
    fn the_oversubscription_note_leaves_out_a_wake_ahead_stage_alone_on_its_core() {
        let job = crate::scenario::Scenario::parse(
            "name = \"t\"\n[[case]]\nkind = \"ao-loop\"\nsizes = [[8, 8]]\n[case.ao]\n\
             subapertures = [2, 2]\nactuators = 5\nrate_hz = 2000\ncamera_cpu = 0\n\
             slopes_cpu = 1\nrecon_cpu = 0\nwake_ahead_us = 125\n",
        )
        .unwrap()
        .jobs(false, None)
        .remove(0);
        let parked = "those stages wait with futex wake-ups, parking at once";
        for allowed in [Some(&[0, 1][..]), None] {
            assert_eq!(shared_wait(&job, allowed), parked);
        }
        let unpinned = shared_wait(&job, Some(&[0]));
        assert!(
            unpinned.contains("wakes 125.0 µs before each is due"),
            "{unpinned}"
        );
    }

    /// Against pyshmem, each ratio is given where both sides have one (the p99's only where
    /// both loops' frames support a p99, the jitter's only against a jitter), beside each
    /// loop's frames of 1 ms or more; the ladder names the camera's late frames at the rungs
    /// that had some; the host noise on the stages' cores gets its note.
    #[test]
    fn the_peer_row_the_ladder_and_the_noise_note_say_what_was_measured() {
        let case = "sizes = [[8, 8]]\n[case.ao]\nsubapertures = [2, 2]\nactuators = 5\n\
                    rate_hz = 500\nslopes_cpu = 5\nrecon_cpu = 5\n";
        let ours = LoopStats {
            frames: 1000,
            jitter_ns: 10_000.0,
            ..LoopStats::default()
        };
        let peer = LoopStats {
            frames: 100,
            jitter_ns: 20_000.0,
            ..LoopStats::default()
        };
        // Pyshmem's loop and the floor: 100 frames of 300 µs each.
        let mut sut = crate::report::targets::tests::ao(case, [300_000; 3], ours, peer);
        // Ours: 1000 frames, half of 500 µs, half of 1.5 ms.
        let hist = &mut sut.ours.as_mut().unwrap().hist;
        *hist = crate::hist::new();
        for ns in [500_000, 1_500_000] {
            hist.record_n(ns, 500).unwrap();
        }
        let rung = |rate_hz, ok, late| crate::cases::ao::runner::Rung {
            rate_hz,
            ok,
            p50_ns: None,
            p99_ns: None,
            missed: Some(late),
            missed_at_source: Some(late),
        };
        sut.ao.as_mut().unwrap().ladder = vec![rung(500.0, true, 0), rung(1000.0, false, 3)];
        let core = |cpu| crate::noise::CoreNoise {
            cpu,
            pinned: true,
            gaps_over_1ms: 2,
            longest_ns: 3_000_000,
            lost_ns: 6_000_000,
            ..Default::default()
        };
        let noise = HostNoise {
            seconds: 2.0,
            cores: (0..1024).map(core).collect(),
            busiest_other_tasks: Vec::new(),
        };
        let text = section(std::slice::from_ref(&sut), &noise).unwrap();
        let row = |header: &str| first_row(&text, header);
        let peer = row("| case | ours p50");
        assert!(
            peer.ends_with("| 500 / 0 | 0.6×, —, 2.0× | 1.0×, —, — |"),
            "{peer}"
        );
        let ladder = row("| case | highest sustainable rate");
        assert!(
            ladder.contains("| 500:ok 1000:no (3 late at the camera) |"),
            "{ladder}"
        );
        assert!(
            text.contains("up to 5% of the camera's frames")
                && text.contains("own late frames up to 5% aside"),
            "{text}"
        );
        assert!(
            text.contains(
                "\nHost noise on the stages' core (cpu 5), measured before the cases: a \
                 spinning thread was paused 2 times for 1 ms or more in 2.0 s, the longest \
                 3.00 ms (6.0 ms lost in pauses of 100 µs or more)."
            ),
            "{text}"
        );
    }

    /// Rates under 100 Hz keep 3 significant digits, as the ladder's column does: `{:.0}`
    /// showed `--rate 1.5` as 2.
    #[test]
    fn a_rate_below_100_hz_keeps_its_digits() {
        let case = "sizes = [[8, 8]]\n[case.ao]\nsubapertures = [2, 2]\nactuators = 5\n\
                    rate_hz = 1.5\nladder = false\n";
        let stats = LoopStats {
            achieved_hz: 1.4987,
            ..LoopStats::default()
        };
        let mut sut =
            crate::report::targets::tests::ao(case, [300_000; 3], stats, LoopStats::default());
        let row = |sut: &JobResult| {
            let text = section(std::slice::from_ref(sut), &HostNoise::default()).unwrap();
            first_row(&text, "| case | geometry")
        };
        let main = row(&sut);
        assert!(main.contains(" | 1.5 | 1.5 | "), "{main}");
        sut.ao.as_mut().unwrap().stats = None;
        let failed = row(&sut);
        assert!(failed.contains(" | 1.5 | "), "{failed}");
    }

    /// A loop no frame of which reached the DM (overloaded) has no latency to show: its rows
    /// say "—" where an empty histogram would read 0 µs, and keep its missed frames and
    /// verdict.
    #[test]
    fn a_loop_no_frame_of_which_reached_the_dm_shows_no_latency() {
        let case = "sizes = [[8, 8]]\n[case.ao]\nsubapertures = [2, 2]\nactuators = 5\n\
                    rate_hz = 2000\n";
        // Enough frames for a p99, had any pacing been taken.
        let stats = LoopStats {
            frames: 2000,
            missed: 2000,
            ..LoopStats::default()
        };
        let mut sut =
            crate::report::targets::tests::ao(case, [300_000; 3], stats, LoopStats::default());
        sut.ours.as_mut().unwrap().hist = crate::hist::new();
        sut.ao.as_mut().unwrap().verdict = "fail: 2000 missed frames".into();
        let text = section(std::slice::from_ref(&sut), &HostNoise::default()).unwrap();
        let row = |header: &str| first_row(&text, header);
        let main = row("| case | geometry");
        assert!(
            main.ends_with(
                "| 0 | 0 | — | — | — | — | — | — | — | 2000 | — | fail: 2000 missed frames |"
            ),
            "{main}"
        );
        let peer = row("| case | ours p50");
        assert!(peer.contains("| — / — / — (0) |"), "{peer}");
        // Nor in results.csv / results.json, nor in the rate plot.
        let record = crate::report::record::Record::from_result(&sut);
        assert_eq!((record.p50_ns, record.p99_ns), (None, None));
        assert_eq!((record.jitter_ns, record.stages), (None, None));
        let series = crate::report::ao_plots::rate_series(&sut, sut.ao.as_deref().unwrap());
        assert!(series[0].points.is_empty(), "{:?}", series[0].points);
        // The pyRTC targets say why they have no ratio: the peer ran.
        let stats = LoopStats {
            frames: 10,
            missed: 10,
            ..LoopStats::default()
        };
        let peer = LoopStats {
            jitter_ns: 20_000.0,
            ..stats.clone()
        };
        let mut pyrtc = crate::report::targets::tests::ao(
            crate::report::targets::tests::PYRTC,
            [300_000; 3],
            stats,
            peer,
        );
        pyrtc.ours.as_mut().unwrap().hist = crate::hist::new();
        let targets = crate::report::targets::evaluate(&[pyrtc], 5.0);
        let pyshmem: Vec<_> = targets
            .iter()
            .filter(|t| t.name.contains("pyshmem") || t.name.contains("end-to-end"))
            .collect();
        assert_eq!(pyshmem.len(), 4, "{targets:#?}");
        for t in pyshmem {
            assert_eq!(t.pass, None, "{t:?}");
            assert_eq!(t.measured, "n/a (no frame of ours reached the DM)", "{t:?}");
        }
    }
}
