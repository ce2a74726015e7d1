//! The same loop written the way pyRTC runs it: each stage a Python process with
//! pyshmem 1.4.0 notify streams, `read_new` and numpy (`harness/peer/pyshmem_ao.py`),
//! same geometry, same pinning, analysed from the same logs. The stages run without the
//! OpenBLAS tuning variables, as the MVM peer does (note `openblas_env`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use super::analysis::{LogOf, Logs};
use super::geometry::{Geometry, SignalKind};
use super::placement::Placement;
use super::runner::LoopRun;
use super::stage::read_log;
use crate::error::{Result, bail};
use crate::peer::PeerSetup;
use crate::run::Runner;
use crate::scenario::Job;
use crate::spawn::{GroupMember, run_members};

/// The peer script, embedded so the harness binary is self-contained.
pub const SCRIPT: &str = include_str!("../../../peer/pyshmem_ao.py");

/// Runs the Python loop once; with it, the notes to record on the peer's side.
pub fn run(
    runner: &Runner,
    setup: &PeerSetup,
    idx: usize,
    job: &Job,
    g: &Geometry,
) -> Result<(LoopRun, Vec<(String, String)>)> {
    let PeerSetup::Ready { python, .. } = setup else {
        bail!("peer unavailable");
    };
    let Some(ao) = &job.ao else {
        bail!("ao-loop job without [case.ao]");
    };
    let names = runner.names(idx, "py");
    // pyRTC's way: notify streams, whatever our stages do; unlinked when the peer is done.
    let _streams = crate::spawn::unless_stopping("creating the peer's streams", || {
        Ok(crate::cases::JobStreams::from(super::create_streams(
            job, &names, true,
        )?))
    })?;
    let place = Placement::of(job);
    let prefix = runner.work().join(format!("{idx}-aopeer"));
    let script = prefix.with_extension("py");
    std::fs::write(&script, SCRIPT)?;
    let spec = json!({
        "geometry": {
            "wfs": g.wfs,
            "kind": match g.kind { SignalKind::Centroids => "centroids", SignalKind::Pixels => "pixels" },
            "subapertures": g.subapertures,
            "signals": g.signals,
            "matrices": g.matrices(),
        },
        "names": names,
        "cpus": { "camera": place.camera, "slopes": place.slopes, "recon": place.recon,
                  "merged": place.slopes },
        "rate_hz": ao.rate_hz,
        "frames": place.frames(job),
        "merged": place.merged,
        "gain": ao.gain,
        "leak": ao.leak,
        "timeout_s": job.timeout_s,
        "rt_priority": job.rt_priority,
        "slice_ns": job.slice_ns,
        "log_prefix": prefix.to_string_lossy(),
    });
    let spec_path = prefix.with_extension("json");
    std::fs::write(&spec_path, serde_json::to_vec_pretty(&spec)?)?;
    let roles: &[&str] = if place.merged {
        &["merged", "camera"]
    } else {
        &["recon", "slopes", "camera"]
    };
    let mut openblas = None;
    let members = roles
        .iter()
        .map(|role| {
            let (command, note) = stage_command(python, &script, &spec_path, role, ao.threads);
            openblas = Some(note);
            GroupMember {
                command,
                label: format!("python {role} stage"),
                stderr: prefix.with_extension(format!("{role}.stderr")),
            }
        })
        .collect();
    run_members(
        members,
        Duration::from_secs_f64(job.timeout_s),
        &job.timeout_remedy(),
    )?;
    let logs = Logs::read(place.merged, |of| {
        let role = match (of, place.merged) {
            (LogOf::Camera, _) => "camera",
            (LogOf::Slopes, _) => "slopes",
            (LogOf::Dm, true) => "merged",
            (LogOf::Dm, false) => "recon",
        };
        read_log(&prefix.with_extension(format!("{role}.aolog")))
    })?;
    let warm = Placement::warmup_frames(job);
    let placement = format!("{} (python)", place.describe());
    let run = LoopRun::analysed(&[logs], warm, place.camera_alone_here(), placement)?;
    Ok((run, openblas.into_iter().collect()))
}

/// The command of the Python stage `role`, and the note of the OpenBLAS tuning taken from
/// its environment ([`crate::peer::unset_openblas_tuning`], as for the MVM peer).
fn stage_command(
    python: &Path,
    script: &Path,
    spec: &Path,
    role: &str,
    threads: usize,
) -> (Command, (String, String)) {
    let mut command = Command::new(python);
    command.arg(script).arg(spec).arg(role);
    // numpy's BLAS gets the reconstructor's threads, as our kernel does (it would start one
    // per core of the machine).
    for var in ["OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"] {
        command.env(var, threads.to_string());
    }
    let note = crate::peer::unset_openblas_tuning(&mut command);
    (command, note)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    /// The Python stages run without the OpenBLAS tuning the MVM peer drops too, with the
    /// reconstructor's threads, and say so in the note.
    #[test]
    fn a_python_stage_runs_without_the_openblas_tuning() {
        let p = Path::new("/x");
        let (command, note) = stage_command(p, p, p, "recon", 2);
        let envs: Vec<(&OsStr, Option<&OsStr>)> = command.get_envs().collect();
        for var in crate::peer::OPENBLAS_VARS {
            assert!(
                envs.contains(&(OsStr::new(var), None)),
                "{var} kept: {envs:?}"
            );
        }
        assert!(envs.contains(&(OsStr::new("OPENBLAS_NUM_THREADS"), Some(OsStr::new("2")))));
        assert_eq!(note.0, "openblas_env");
        assert!(note.1.starts_with("unset (were "), "{note:?}");
    }
}
