//! The slopes stage's computation: dark subtraction and flat, then Shack-Hartmann
//! centroids per subaperture, or the valid pixels normalized by their mean.

use super::geometry::{Geometry, SignalKind};

/// Per-pixel dark (u16 counts) and flat (gain) of the synthetic camera.
#[derive(Debug, Clone)]
pub struct Calibration {
    /// Dark frame.
    pub dark: Vec<u16>,
    /// Flat-field gain applied after dark subtraction.
    pub flat: Vec<f32>,
}

impl Calibration {
    /// A deterministic calibration for `g` (dark 100…106 counts, flat 0.98…1.02).
    pub fn synthetic(g: &Geometry) -> Self {
        let n = g.pixels();
        Self {
            dark: (0..n).map(|i| 100 + (i % 7) as u16).collect(),
            flat: (0..n)
                .map(|i| 1.0 + 0.01 * ((i % 5) as f32 - 2.0))
                .collect(),
        }
    }

    /// The dark as f32, as the stages subtract it.
    pub fn dark_f32(&self) -> Vec<f32> {
        self.dark.iter().map(|d| *d as f32).collect()
    }
}

/// The valid pixels of a pixel-signal geometry: the `signals` pixels nearest the
/// frame's centre (a pupil-like disk), in raster order.
pub fn valid_pixels(g: &Geometry) -> Vec<u32> {
    let [h, w] = g.wfs;
    let (cy, cx) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
    let mut idx: Vec<u32> = (0..(h * w) as u32).collect();
    let d = |i: u32| {
        let (y, x) = ((i as usize / w) as f64, (i as usize % w) as f64);
        (y - cy).powi(2) + (x - cx).powi(2)
    };
    idx.sort_by(|a, b| d(*a).total_cmp(&d(*b)).then(a.cmp(b)));
    idx.truncate(g.signals);
    idx.sort_unstable();
    idx
}

/// The slopes stage: calibration, valid pixels and a work buffer, reused every frame.
#[derive(Debug)]
pub struct Slopes {
    g: Geometry,
    cal: Calibration,
    /// The dark as f32 (converted once).
    dark: Vec<f32>,
    valid: Vec<u32>,
    /// Two frame-wide rows of scratch for the centroids.
    work: Vec<f32>,
}

impl Slopes {
    /// The stage for `g` with the synthetic calibration.
    pub fn new(g: &Geometry) -> Self {
        let valid = match g.kind {
            SignalKind::Pixels => valid_pixels(g),
            SignalKind::Centroids => Vec::new(),
        };
        let cal = Calibration::synthetic(g);
        Self {
            g: *g,
            dark: cal.dark_f32(),
            cal,
            valid,
            work: vec![0.0; 2 * g.wfs[1]],
        }
    }

    /// Signals of one frame into `out` (`g.signals` long).
    pub fn compute(&mut self, frame: &[u16], out: &mut [f32]) {
        debug_assert_eq!(frame.len(), self.g.pixels());
        debug_assert_eq!(out.len(), self.g.signals);
        match self.g.kind {
            SignalKind::Centroids => self.centroids(frame, out),
            SignalKind::Pixels => self.pixels(frame, out),
        }
    }

    fn calibrated(&self, frame: &[u16], i: usize) -> f32 {
        (frame[i] as f32 - self.dark[i]).max(0.0) * self.cal.flat[i]
    }

    /// x then y offset of each subaperture's centre of gravity from its cell centre, px.
    ///
    /// Per band of subaperture rows, two full-width accumulations (column sums, and
    /// column sums weighted by the row in the cell) that the compiler vectorizes; then
    /// per cell three short sums.
    fn centroids(&mut self, frame: &[u16], out: &mut [f32]) {
        let w = self.g.wfs[1];
        let [sy, sx] = self.g.subapertures;
        let [ch, cw] = self.g.cell();
        let (my, mx) = ((ch as f32 - 1.0) / 2.0, (cw as f32 - 1.0) / 2.0);
        let n = sy * sx;
        let (col, wcol) = self.work.split_at_mut(w);
        for band in 0..sy {
            col.fill(0.0);
            wcol.fill(0.0);
            for dy in 0..ch {
                let r = (band * ch + dy) * w;
                let fy = dy as f32;
                let px = &frame[r..r + w];
                let dark = &self.dark[r..r + w];
                let flat = &self.cal.flat[r..r + w];
                for ((((c, wc), p), d), f) in col
                    .iter_mut()
                    .zip(wcol.iter_mut())
                    .zip(px)
                    .zip(dark)
                    .zip(flat)
                {
                    let v = (*p as f32 - d).max(0.0) * f;
                    *c += v;
                    *wc += v * fy;
                }
            }
            for cx_i in 0..sx {
                let cells = cx_i * cw..(cx_i + 1) * cw;
                let (mut sum, mut ssx, mut ssy) = (0.0f32, 0.0f32, 0.0f32);
                for (dx, (c, wc)) in col[cells.clone()].iter().zip(&wcol[cells]).enumerate() {
                    sum += c;
                    ssx += c * dx as f32;
                    ssy += wc;
                }
                let s = band * sx + cx_i;
                let (cx, cy) = if sum > 0.0 {
                    (ssx / sum - mx, ssy / sum - my)
                } else {
                    (0.0, 0.0)
                };
                out[s] = cx;
                out[n + s] = cy;
            }
        }
    }

    fn pixels(&self, frame: &[u16], out: &mut [f32]) {
        let mut total = 0.0f32;
        for (o, &i) in out.iter_mut().zip(&self.valid) {
            *o = self.calibrated(frame, i as usize);
            total += *o;
        }
        let mean = total / self.valid.len() as f32;
        let inv = if mean > 0.0 { 1.0 / mean } else { 0.0 };
        out.iter_mut().for_each(|o| *o = *o * inv - 1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::ao::camera::synthetic_frame;
    use crate::cases::ao::geometry::tests::case;

    #[test]
    fn centroids_of_spots_with_known_shifts_are_recovered() {
        let g = Geometry::new(&[48, 64], &case(Some([6, 8]), None, 10)).unwrap();
        let n = 6 * 8;
        let shifts: Vec<(f32, f32)> = (0..n)
            .map(|s| {
                (
                    0.9 * ((s % 5) as f32 - 2.0) / 2.0,
                    0.7 * ((s % 3) as f32 - 1.0),
                )
            })
            .collect();
        let frame = synthetic_frame(&g, &Calibration::synthetic(&g), &shifts);
        let mut out = vec![0.0; g.signals];
        Slopes::new(&g).compute(&frame, &mut out);
        for (s, (dx, dy)) in shifts.iter().enumerate() {
            assert!(
                (out[s] - dx).abs() < 0.05,
                "subap {s}: x {} vs {dx}",
                out[s]
            );
            assert!(
                (out[n + s] - dy).abs() < 0.05,
                "subap {s}: y {} vs {dy}",
                out[n + s]
            );
        }
    }

    #[test]
    fn pixel_signals_are_the_valid_pixels_normalized_by_their_mean() {
        let mut c = case(None, None, 10);
        c.slopes = SignalKind::Pixels;
        c.valid_pixels = Some(12);
        let g = Geometry::new(&[6, 6], &c).unwrap();
        let valid = valid_pixels(&g);
        assert_eq!(valid.len(), 12);
        assert!(valid.contains(&14) && !valid.contains(&0), "{valid:?}");
        let cal = Calibration::synthetic(&g);
        let frame: Vec<u16> = (0..36)
            .map(|i| (cal.dark[i] as f32 + 200.0 / cal.flat[i]).round() as u16)
            .collect();
        let mut out = vec![1.0; 12];
        Slopes::new(&g).compute(&frame, &mut out);
        assert!(out.iter().all(|v| v.abs() < 0.01), "{out:?}");
    }
}
