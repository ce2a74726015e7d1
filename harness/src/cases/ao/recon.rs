//! The reconstructor stage's computation: modes = R · signals (the harness's MVM
//! kernel), a leaky integrator on the modes, commands = M2C · modes, clipped to ±1.
//! Zonal control (no modes): one MVM straight to the actuators, integrated and clipped.

use super::geometry::Geometry;
use crate::error::Result;
use crate::kernel::{MvmKernel, test_matrix};

/// Commands are clipped to ±`CLIP` (normalized DM stroke).
pub const CLIP: f32 = 1.0;

/// The reconstructor: matrices, kernels and integrator state, reused every frame.
#[derive(Debug)]
pub struct Recon {
    r: Vec<f32>,
    m2c: Option<Vec<f32>>,
    k_r: MvmKernel,
    k_m2c: Option<MvmKernel>,
    modes: Vec<f32>,
    state: Vec<f32>,
    gain: f32,
    leak: f32,
}

/// A deterministic matrix scaled so that products stay O(1).
pub fn matrix(rows: usize, cols: usize) -> Vec<f32> {
    let s = 1.0 / cols as f32;
    let mut a = test_matrix(rows, cols);
    a.iter_mut().for_each(|v| *v *= s);
    a
}

impl Recon {
    /// The reconstructor for `g`, its kernels on `threads` threads pinned to `cpus`.
    pub fn new(g: &Geometry, threads: usize, cpus: &[usize], gain: f32, leak: f32) -> Result<Self> {
        let mats = g.matrices();
        let (rr, rc) = mats[0];
        let k_r = MvmKernel::new(rr, rc, threads, cpus.to_vec())?;
        let (m2c, k_m2c) = match mats.get(1) {
            Some(&(ar, ac)) => (
                Some(matrix(ar, ac)),
                Some(MvmKernel::new(ar, ac, threads, cpus.to_vec())?),
            ),
            None => (None, None),
        };
        Ok(Self {
            r: matrix(rr, rc),
            m2c,
            k_r,
            k_m2c,
            modes: vec![0.0; rr],
            state: vec![0.0; rr],
            gain,
            leak,
        })
    }

    /// One frame: `signals` in, DM `commands` out.
    pub fn step(&mut self, signals: &[f32], commands: &mut [f32]) {
        self.k_r.run(&self.r, signals, &mut self.modes);
        for (s, m) in self.state.iter_mut().zip(&self.modes) {
            *s = self.leak * *s - self.gain * m;
        }
        match (&self.m2c, &self.k_m2c) {
            (Some(m2c), Some(k)) => k.run(m2c, &self.state, commands),
            _ => commands.copy_from_slice(&self.state),
        }
        commands.iter_mut().for_each(|c| *c = c.clamp(-CLIP, CLIP));
    }

    /// A fresh integrator state for [`Self::step_on`].
    pub fn fresh_state(&self) -> Vec<f32> {
        vec![0.0; self.state.len()]
    }

    /// [`Self::step`] on the integrator state `state` (from [`Self::fresh_state`]) instead
    /// of the loop's own, which it leaves as it was: the floor timed between the loop's
    /// frames runs the same matrices without touching the loop's control.
    pub fn step_on(&mut self, state: &mut Vec<f32>, signals: &[f32], commands: &mut [f32]) {
        std::mem::swap(&mut self.state, state);
        self.step(signals, commands);
        std::mem::swap(&mut self.state, state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::ao::geometry::tests::case;

    fn reference(a: &[f32], cols: usize, x: &[f32]) -> Vec<f32> {
        a.chunks(cols)
            .map(|row| {
                row.iter()
                    .zip(x)
                    .map(|(a, b)| (*a as f64 * *b as f64) as f32)
                    .sum()
            })
            .collect()
    }

    #[test]
    fn the_reconstructor_equals_the_reference_product() {
        for modes in [Some(30), None] {
            let g = Geometry::new(&[40, 40], &case(Some([8, 8]), modes, 45)).unwrap();
            let mut sut = Recon::new(&g, 1, &[0], 0.5, 0.9).unwrap();
            let s: Vec<f32> = (0..g.signals)
                .map(|i| ((i % 9) as f32 - 4.0) * 0.3)
                .collect();
            let mut cmd = vec![0.0; g.actuators];
            let mut state = vec![0.0f32; g.matrices()[0].0];
            for _ in 0..3 {
                sut.step(&s, &mut cmd);
                let m = reference(&matrix(state.len(), g.signals), g.signals, &s);
                for (st, m) in state.iter_mut().zip(&m) {
                    *st = 0.9 * *st - 0.5 * m;
                }
            }
            let want: Vec<f32> = match modes {
                Some(n) => reference(&matrix(45, n), n, &state),
                None => state.clone(),
            }
            .into_iter()
            .map(|c| c.clamp(-CLIP, CLIP))
            .collect();
            for (i, (got, want)) in cmd.iter().zip(&want).enumerate() {
                assert!(
                    (got - want).abs() < 1e-4,
                    "{modes:?} actuator {i}: {got} vs {want}"
                );
            }
            assert!(
                want.iter().any(|w| w.abs() > 1e-3),
                "a trivial reference proves nothing"
            );
        }
    }

    /// A step on a state of its own computes from that state and leaves the loop's: the
    /// loop's next command is the one it would have been without it.
    #[test]
    fn a_step_on_its_own_state_leaves_the_loops_control_as_it_was() {
        let g = Geometry::new(&[40, 40], &case(Some([8, 8]), Some(30), 45)).unwrap();
        let s: Vec<f32> = (0..g.signals)
            .map(|i| ((i % 7) as f32 - 3.0) * 0.2)
            .collect();
        let (mut plain, mut interleaved) = (
            Recon::new(&g, 1, &[0], 0.5, 0.9).unwrap(),
            Recon::new(&g, 1, &[0], 0.5, 0.9).unwrap(),
        );
        let mut own = interleaved.fresh_state();
        let (mut a, mut b, mut c) = (
            vec![0.0; g.actuators],
            vec![0.0; g.actuators],
            vec![0.0; g.actuators],
        );
        for _ in 0..3 {
            plain.step(&s, &mut a);
            interleaved.step(&s, &mut b);
            interleaved.step_on(&mut own, &s, &mut c);
            assert_eq!(a, b);
        }
        // Its own state ran the same three steps as the loop's.
        assert_eq!(a, c);
        assert!(own.iter().any(|v| v.abs() > 1e-3), "the own state moved");
    }
}
