//! Which publication path a device supports: GPU-side publication (stream memory operations
//! on the host-registered header word) or the synchronize fallback (host `cuStreamSynchronize`
//! before the even store). The choice is pure logic over attribute values, unit tested here;
//! the driver queries that feed it are in `publish.rs` (feature `cuda`).

use std::fmt;

/// `CU_DEVICE_ATTRIBUTE_CAN_USE_64_BIT_STREAM_MEM_OPS` (the `_v2` entry points, CUDA ≥ 11.7).
pub const ATTR_STREAM_MEM_OPS_64: i32 = 122;
/// `CU_DEVICE_ATTRIBUTE_HOST_REGISTER_SUPPORTED`.
pub const ATTR_HOST_REGISTER: i32 = 99;
/// `CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY`.
pub const ATTR_CAN_MAP_HOST_MEMORY: i32 = 19;

/// The environment variable that selects the path in this process: `gpu` (GPU-side
/// publication where the probe allows), `sync`, or `auto` (default: the same as `gpu`).
pub const PUBLISH_ENV: &str = "SHMSTREAM_GPU_PUBLISH";

/// How a GPU stream's writes are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishPath {
    /// The odd and even sequence are written by the writer's CUDA stream
    /// (`cuStreamWriteValue64_v2` on the registered header word); no host synchronize.
    GpuStream,
    /// The host synchronizes the writer's CUDA stream, then stores the even sequence.
    HostSync,
}

impl PublishPath {
    /// The short name shown by `describe`, `stat` and the harness report.
    pub fn as_str(self) -> &'static str {
        match self {
            PublishPath::GpuStream => "gpu-stream",
            PublishPath::HostSync => "host-sync",
        }
    }
}

impl fmt::Display for PublishPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The device attributes the choice depends on, as the driver reports them (`None`: the
/// query failed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceCaps {
    /// Attribute 122.
    pub stream_mem_ops_64: Option<i32>,
    /// Attribute 99.
    pub host_register: Option<i32>,
    /// Attribute 19.
    pub can_map_host_memory: Option<i32>,
}

/// The path chosen for a device, and why (shown to users beside the path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathChoice {
    /// The path.
    pub path: PublishPath,
    /// Why this path (the missing capability, the failed trial, the override).
    pub reason: String,
}

impl fmt::Display for PathChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.path, self.reason)
    }
}

/// The first capability the device lacks, or `None` when all three attributes are set.
pub fn missing_capability(caps: &DeviceCaps) -> Option<String> {
    let need = [
        (
            caps.stream_mem_ops_64,
            ATTR_STREAM_MEM_OPS_64,
            "64-bit stream memory operations",
        ),
        (caps.host_register, ATTR_HOST_REGISTER, "cuMemHostRegister"),
        (
            caps.can_map_host_memory,
            ATTR_CAN_MAP_HOST_MEMORY,
            "mapping host memory",
        ),
    ];
    need.iter().find_map(|(v, attr, what)| match v {
        Some(x) if *x != 0 => None,
        Some(_) => Some(format!(
            "the device does not support {what} (attribute {attr} is 0)"
        )),
        None => Some(format!("querying device attribute {attr} ({what}) failed")),
    })
}

/// Why the synchronize path was taken without probing.
pub fn forced_sync() -> String {
    format!("forced by {PUBLISH_ENV}=sync")
}

/// What `SHMSTREAM_GPU_PUBLISH` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishSetting {
    /// Unset, empty or `auto`: GPU-side publication where the device passes the probe (the
    /// default since its GPU check passed on an H200, 2026-11-30).
    Default,
    /// `gpu`: GPU-side publication where the device passes the probe.
    Gpu,
    /// `sync`: the synchronize path, without probing.
    Sync,
}

/// Reads `SHMSTREAM_GPU_PUBLISH`; any other value is an error naming the accepted ones.
pub fn env_setting(value: Option<&str>) -> Result<PublishSetting, String> {
    match value {
        None | Some("") | Some("auto") => Ok(PublishSetting::Default),
        Some("gpu") => Ok(PublishSetting::Gpu),
        Some("sync") => Ok(PublishSetting::Sync),
        Some(other) => Err(format!(
            "{PUBLISH_ENV}={other:?} is not understood: use `auto` (default), `gpu` or `sync`"
        )),
    }
}

/// The choice: the synchronize path when forced, when a capability is missing or when the
/// trial write failed or was not attempted (`trial` is `None`); GPU-side publication
/// otherwise.
pub fn choose(
    caps: &DeviceCaps,
    setting: PublishSetting,
    trial: Option<Result<(), String>>,
) -> PathChoice {
    let sync = |reason: String| PathChoice {
        path: PublishPath::HostSync,
        reason,
    };
    if setting == PublishSetting::Sync {
        return sync(forced_sync());
    }
    if let Some(missing) = missing_capability(caps) {
        return sync(missing);
    }
    const CAPABLE: &str = "attributes 122/99/19 set and a trial stream write reached host memory";
    match trial {
        Some(Ok(())) => PathChoice {
            path: PublishPath::GpuStream,
            reason: CAPABLE.into(),
        },
        Some(Err(e)) => sync(format!("the trial stream write failed: {e}")),
        None => sync("the trial stream write was not attempted".into()),
    }
}

/// The path one writer handle uses, from its device's path and what the stream is: a
/// history ring's slots are filled by the host from the payload right after the fill, and the
/// opt-in interprocess-event ordering (`SHMSTREAM_GPU_IPC_EVENT=1`) publishes its own way, so
/// both keep the synchronize path.
pub fn for_handle(device: &PathChoice, history: bool, ipc_event: bool) -> PathChoice {
    let sync = |reason: &str| PathChoice {
        path: PublishPath::HostSync,
        reason: reason.into(),
    };
    if device.path == PublishPath::HostSync {
        device.clone()
    } else if history {
        sync("the stream keeps a history ring, which the host fills from the written payload")
    } else if ipc_event {
        sync("SHMSTREAM_GPU_IPC_EVENT=1 orders writes with the interprocess event instead")
    } else {
        device.clone()
    }
}

/// What an odd sequence on a GPU stream means, seen by a writer about to write or a reader
/// that has waited a while: the `_gpu` segment's publisher word says whether the last write
/// was published by a CUDA stream (its pid) or by the host (0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OddSequence {
    /// A GPU-side publication whose stream has not stored the even value yet: wait for it
    /// (with a deadline).
    Landing,
    /// A host-published bracket (or a publisher that exited) left it odd: its writer died
    /// mid-write; recover it as any abandoned write.
    Abandoned,
}

/// Judges an odd sequence from the publisher word and whether that pid is alive.
pub fn judge_odd(publisher_pid: i64, alive: impl Fn(i64) -> bool) -> OddSequence {
    if publisher_pid > 0 && alive(publisher_pid) {
        OddSequence::Landing
    } else {
        OddSequence::Abandoned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_keeps_the_device_path_unless_its_stream_needs_the_host() {
        let gpu = choose(&all(1), PublishSetting::Gpu, Some(Ok(())));
        assert_eq!(for_handle(&gpu, false, false), gpu);
        let ring = for_handle(&gpu, true, false);
        assert_eq!(ring.path, PublishPath::HostSync);
        assert!(ring.reason.contains("history"), "{ring}");
        let event = for_handle(&gpu, false, true);
        assert_eq!(event.path, PublishPath::HostSync);
        assert!(event.reason.contains("SHMSTREAM_GPU_IPC_EVENT"), "{event}");
        let forced = choose(&all(1), PublishSetting::Sync, Some(Ok(())));
        assert_eq!(for_handle(&forced, false, false), forced);
        // As `describe`, `stat` and the harness show it: the path, then why.
        assert_eq!(
            ring.to_string(),
            format!("host-sync ({})", ring.reason),
            "{ring:?}"
        );
    }

    #[test]
    fn an_odd_sequence_waits_only_for_a_live_gpu_publisher() {
        assert_eq!(judge_odd(42, |_| true), OddSequence::Landing);
        assert_eq!(judge_odd(42, |_| false), OddSequence::Abandoned);
        // Host-published (0) or a corrupt word: a dead writer, whoever is alive.
        assert_eq!(judge_odd(0, |_| true), OddSequence::Abandoned);
        assert_eq!(judge_odd(-7, |_| true), OddSequence::Abandoned);
    }

    fn all(v: i32) -> DeviceCaps {
        DeviceCaps {
            stream_mem_ops_64: Some(v),
            host_register: Some(v),
            can_map_host_memory: Some(v),
        }
    }

    #[test]
    fn capable_device_with_a_good_trial_publishes_on_the_gpu() {
        let c = choose(&all(1), PublishSetting::Gpu, Some(Ok(())));
        assert_eq!(c.path, PublishPath::GpuStream);
        assert_eq!(c.path.to_string(), "gpu-stream");
        // The default is the same choice.
        let d = choose(&all(1), PublishSetting::Default, Some(Ok(())));
        assert_eq!(d, c);
        assert!(d.reason.contains("trial stream write reached"), "{d}");
    }

    #[test]
    fn each_missing_attribute_falls_back_and_is_named() {
        for (i, attr) in [122, 99, 19].into_iter().enumerate() {
            let mut caps = all(1);
            let slot = [
                &mut caps.stream_mem_ops_64,
                &mut caps.host_register,
                &mut caps.can_map_host_memory,
            ];
            *slot.into_iter().nth(i).unwrap() = Some(0);
            let c = choose(&caps, PublishSetting::Gpu, Some(Ok(())));
            assert_eq!(c.path, PublishPath::HostSync);
            assert!(c.reason.contains(&format!("attribute {attr} is 0")), "{c}");
        }
    }

    #[test]
    fn a_failed_attribute_query_falls_back() {
        let caps = DeviceCaps {
            host_register: None,
            ..all(1)
        };
        let c = choose(&caps, PublishSetting::Gpu, Some(Ok(())));
        assert_eq!(c.path, PublishPath::HostSync);
        assert!(c.reason.contains("querying device attribute 99"), "{c}");
    }

    #[test]
    fn a_failed_or_missing_trial_falls_back() {
        let c = choose(
            &all(1),
            PublishSetting::Gpu,
            Some(Err("CUDA_ERROR_NOT_SUPPORTED".into())),
        );
        assert_eq!(c.path, PublishPath::HostSync);
        assert!(c.reason.contains("CUDA_ERROR_NOT_SUPPORTED"));
        assert_eq!(
            choose(&all(1), PublishSetting::Gpu, None).path,
            PublishPath::HostSync
        );
    }

    #[test]
    fn the_environment_can_force_the_fallback() {
        let c = choose(&all(1), PublishSetting::Sync, Some(Ok(())));
        assert_eq!(c.path, PublishPath::HostSync);
        assert!(c.reason.contains(PUBLISH_ENV));
    }

    #[test]
    fn env_values_are_checked() {
        assert_eq!(env_setting(None), Ok(PublishSetting::Default));
        assert_eq!(env_setting(Some("auto")), Ok(PublishSetting::Default));
        assert_eq!(env_setting(Some("gpu")), Ok(PublishSetting::Gpu));
        assert_eq!(env_setting(Some("sync")), Ok(PublishSetting::Sync));
        let e = env_setting(Some("fast")).unwrap_err();
        assert!(
            e.contains("auto") && e.contains("gpu") && e.contains("sync"),
            "{e}"
        );
    }
}
