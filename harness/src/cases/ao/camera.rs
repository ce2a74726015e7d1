//! The camera stage: synthetic WFS frames (u16) published at a fixed rate with absolute
//! deadlines ([`harness_sys::clock::sleep_then_spin_until`]), a frame id per frame. Its log
//! keeps each frame's deadline, so the report separates source jitter from pipeline jitter.

use super::geometry::{Geometry, SignalKind};
use super::slopes::Calibration;

/// Frames the camera cycles through (precomputed: generating costs more than publishing).
pub const FRAMES: usize = 4;

/// A raw frame whose calibrated centroids are `shifts` (x, y per subaperture, pixels):
/// a Gaussian spot per cell, divided by the flat and added to the dark.
pub fn synthetic_frame(g: &Geometry, cal: &Calibration, shifts: &[(f32, f32)]) -> Vec<u16> {
    let [h, w] = g.wfs;
    let mut spots = vec![0.0f32; h * w];
    match g.kind {
        SignalKind::Centroids => {
            let [sy, sx] = g.subapertures;
            let [ch, cw] = g.cell();
            let sigma = (ch.min(cw) as f32 / 6.0).max(0.6);
            for (s, (dx, dy)) in shifts.iter().enumerate().take(sy * sx) {
                let (y0, x0) = ((s / sx) * ch, (s % sx) * cw);
                let cy = (ch as f32 - 1.0) / 2.0 + dy;
                let cx = (cw as f32 - 1.0) / 2.0 + dx;
                for y in 0..ch {
                    for x in 0..cw {
                        let r2 = (y as f32 - cy).powi(2) + (x as f32 - cx).powi(2);
                        spots[(y0 + y) * w + x0 + x] = 4000.0 * (-r2 / (2.0 * sigma * sigma)).exp();
                    }
                }
            }
        }
        SignalKind::Pixels => {
            for (i, v) in spots.iter_mut().enumerate() {
                let (a, b) = shifts.first().copied().unwrap_or((0.0, 0.0));
                *v = 1000.0 + 300.0 * ((i as f32 * 0.37 + a).sin() + (i as f32 * 0.11 + b).cos());
            }
        }
    }
    spots
        .iter()
        .enumerate()
        .map(|(i, v)| (cal.dark[i] as f32 + v / cal.flat[i]).round().min(65535.0) as u16)
        .collect()
}

/// The frames the camera cycles through: spots moving by a fraction of a pixel.
pub fn frames(g: &Geometry) -> Vec<Vec<u16>> {
    let cal = Calibration::synthetic(g);
    let n = (g.subapertures[0] * g.subapertures[1]).max(1);
    (0..FRAMES)
        .map(|k| {
            let shifts: Vec<(f32, f32)> = (0..n)
                .map(|s| {
                    let p = (s + k) as f32;
                    (0.5 * (p * 0.7).sin(), 0.5 * (p * 0.3).cos())
                })
                .collect();
            synthetic_frame(g, &cal, &shifts)
        })
        .collect()
}
