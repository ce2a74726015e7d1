//! Turns the stages' logs into the loop's figures: end-to-end latency per frame id (DM
//! publish − camera publish), per-stage compute and per-hop latencies, missed frames,
//! camera pacing error, achieved rate.

use std::collections::HashMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::stage::Entry;
use crate::error::{Result, bail};
use crate::hist;

/// p50 / p99 of one stage's compute or one hop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageStat {
    /// "slopes", "recon", "camera→slopes", "slopes→recon".
    pub name: String,
    /// Median, ns.
    pub p50_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
}

/// The figures of one loop run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoopStats {
    /// Camera frames after the warm-up.
    pub frames: u64,
    /// Of those, frames whose id never reached the DM.
    pub missed: u64,
    /// DM frames per second over the measured part.
    pub achieved_hz: f64,
    /// Standard deviation of the end-to-end latency, ns.
    pub jitter_ns: f64,
    /// Compute stages then hops, in loop order.
    pub stages: Vec<StageStat>,
    /// Camera publish − deadline: p50, p99, max (ns).
    pub pacing_ns: [u64; 3],
}

impl LoopStats {
    /// The stage or hop with the largest median.
    pub fn dominant(&self) -> Option<&StageStat> {
        self.stages.iter().max_by_key(|s| s.p50_ns)
    }
}

fn stat(name: &str, v: &Histogram<u64>) -> StageStat {
    StageStat {
        name: name.into(),
        p50_ns: v.value_at_quantile(0.5),
        p99_ns: v.value_at_quantile(0.99),
    }
}

/// Analyses one run. `dm` is the reconstructor's log, or the merged stage's (then
/// `slopes` is `None` and each entry's 4th field is the slopes-done time).
pub fn analyse(
    camera: &[Entry],
    slopes: Option<&[Entry]>,
    dm: &[Entry],
    warmup: u64,
) -> Result<(LoopStats, Histogram<u64>)> {
    let published: HashMap<u64, u64> = camera.iter().map(|e| (e[0], e[2])).collect();
    let slopes_at: HashMap<u64, (u64, u64)> = slopes
        .unwrap_or(&[])
        .iter()
        .map(|e| (e[0], (e[1], e[2])))
        .collect();
    let mut e2e = hist::new();
    let mut pacing = hist::new();
    let mut h_slopes = hist::new();
    let mut h_recon = hist::new();
    let mut hop1 = hist::new();
    let mut hop2 = hist::new();
    for e in camera.iter().filter(|e| e[0] > warmup) {
        pacing.saturating_record(e[2].saturating_sub(e[1]));
    }
    let mut seen = 0u64;
    let (mut first, mut last) = (u64::MAX, 0u64);
    for &[id, t_in, t_pub, mid] in dm.iter().filter(|e| e[0] > warmup) {
        let Some(&cam) = published.get(&id) else {
            bail!("frame id {id} reached the DM but the camera never published it");
        };
        seen += 1;
        first = first.min(t_pub);
        last = last.max(t_pub);
        e2e.saturating_record(t_pub.saturating_sub(cam));
        match slopes_at.get(&id) {
            Some(&(s_in, s_pub)) => {
                hop1.saturating_record(s_in.saturating_sub(cam));
                h_slopes.saturating_record(s_pub.saturating_sub(s_in));
                hop2.saturating_record(t_in.saturating_sub(s_pub));
                h_recon.saturating_record(t_pub.saturating_sub(t_in));
            }
            None if slopes.is_none() => {
                hop1.saturating_record(t_in.saturating_sub(cam));
                h_slopes.saturating_record(mid.saturating_sub(t_in));
                h_recon.saturating_record(t_pub.saturating_sub(mid));
            }
            None => bail!("frame id {id} reached the DM without passing the slopes stage"),
        }
    }
    let frames = camera.iter().filter(|e| e[0] > warmup).count() as u64;
    if seen == 0 {
        bail!("no frame reached the DM after the warm-up ({frames} camera frames)");
    }
    let mut stages = vec![stat("camera→slopes", &hop1), stat("slopes", &h_slopes)];
    if slopes.is_some() {
        stages.push(stat("slopes→recon", &hop2));
    }
    stages.push(stat("recon", &h_recon));
    let stats = LoopStats {
        frames,
        missed: frames.saturating_sub(seen),
        achieved_hz: if last > first {
            (seen - 1) as f64 * 1e9 / (last - first) as f64
        } else {
            0.0
        },
        jitter_ns: e2e.stdev(),
        stages,
        pacing_ns: [
            pacing.value_at_quantile(0.5),
            pacing.value_at_quantile(0.99),
            pacing.max(),
        ],
    };
    Ok((stats, e2e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_ids_are_matched_and_missed_frames_counted() {
        let cam: Vec<Entry> = (1..=10).map(|i| [i, i * 1000, i * 1000 + 5, 0]).collect();
        let slopes: Vec<Entry> = (1..=10)
            .filter(|i| *i != 7)
            .map(|i| [i, i * 1000 + 10, i * 1000 + 40, 0])
            .collect();
        let dm: Vec<Entry> = slopes
            .iter()
            .map(|e| [e[0], e[2] + 5, e[2] + 65, 0])
            .collect();
        let (s, h) = analyse(&cam, Some(&slopes), &dm, 2).unwrap();
        assert_eq!((s.frames, s.missed), (8, 1));
        assert_eq!(h.value_at_quantile(0.5), 100);
        let names: Vec<_> = s
            .stages
            .iter()
            .map(|s| (s.name.as_str(), s.p50_ns))
            .collect();
        assert_eq!(
            names,
            vec![
                ("camera→slopes", 5),
                ("slopes", 30),
                ("slopes→recon", 5),
                ("recon", 60)
            ]
        );
        assert_eq!(s.dominant().unwrap().name, "recon");
        assert_eq!(s.pacing_ns[0], 5);
    }

    #[test]
    fn a_frame_id_the_camera_never_sent_is_an_error() {
        let cam: Vec<Entry> = vec![[1, 0, 1, 0]];
        let dm: Vec<Entry> = vec![[5, 2, 3, 1]];
        assert!(analyse(&cam, None, &dm, 0).is_err());
    }
}
