//! The memory cgroup (v2) limit a new stream's shared memory counts against: tmpfs pages
//! are charged to the creator's cgroup, and filling them past `memory.max` gets the process
//! OOM-killed rather than refused with `ENOSPC`, unless it can swap them out instead. Read once
//! per `create` (a few small files), never on the hot path; an unreadable or unparsable limit
//! or `memory.stat` means no check, unreadable swap figures mean no swap room.

use std::path::Path;

/// Room under a memory cgroup's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Room {
    /// `memory.max`, in bytes.
    pub limit: u64,
    /// The limit less the memory that cannot be reclaimed (`anon` + `shmem` + `kernel` less
    /// `slab_reclaimable` of `memory.stat`; page cache is reclaimable and not counted), plus
    /// the swap the cgroup may still fill ([`swap_room`]).
    pub left: u64,
}

/// This process's cgroup v2 path, from the contents of `/proc/self/cgroup` (its `0::` line).
pub(crate) fn v2_path(proc_self_cgroup: &str) -> Option<&str> {
    proc_self_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .filter(|p| p.starts_with('/'))
}

/// The room under a cgroup from the contents of its `memory.max` and `memory.stat`, plus
/// `swap` bytes of [`swap_room`]; `None` when it has no limit (`max`) or either does not
/// parse (`anon` and `shmem` must be there).
pub(crate) fn room(memory_max: &str, memory_stat: &str, swap: u64) -> Option<Room> {
    let limit: u64 = memory_max.trim().parse().ok()?;
    let stat = |key: &str| -> Option<Option<u64>> {
        match memory_stat
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix(' '))
        {
            Some(v) => v.trim().parse().ok().map(Some),
            None => Some(None),
        }
    };
    // `kernel` includes reclaimable slab (dentry and inode caches: gigabytes on a build host).
    let slab_reclaimable = stat("slab_reclaimable")?.unwrap_or(0);
    let kernel = stat("kernel")?.map_or(0, |k| k.saturating_sub(slab_reclaimable));
    let used = stat("anon")??
        .saturating_add(stat("shmem")??)
        .saturating_add(kernel);
    Some(Room {
        limit,
        left: limit.saturating_sub(used).saturating_add(swap),
    })
}

/// Bytes of shared memory past `memory.max` that a cgroup can swap out rather than be
/// OOM-killed for: the host's `SwapFree` (from `/proc/meminfo`'s contents), capped by
/// `memory.swap.max` less `memory.swap.current` when the cgroup has those files (`max`, or no
/// file: no cap). 0 when anything needed does not parse, as on a host without swap.
pub(crate) fn swap_room(swap_max: Option<&str>, swap_current: Option<&str>, meminfo: &str) -> u64 {
    let free_kib: Option<u64> = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("SwapFree:"))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok());
    let host = free_kib.unwrap_or(0).saturating_mul(1024);
    let cap = match swap_max.map(str::trim) {
        None | Some("max") => Some(u64::MAX),
        Some(max) => max.parse::<u64>().ok().and_then(|max| {
            let current: u64 = swap_current.map_or(Some(0), |c| c.trim().parse().ok())?;
            Some(max.saturating_sub(current))
        }),
    };
    cap.map_or(0, |cap| cap.min(host))
}

/// The room under this process's memory cgroup (v2), if it has a limit that can be read.
pub(crate) fn room_now() -> Option<Room> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let dir = Path::new("/sys/fs/cgroup").join(v2_path(&cgroup)?.trim_start_matches('/'));
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).ok();
    let swap = swap_room(
        read("memory.swap.max").as_deref(),
        read("memory.swap.current").as_deref(),
        &std::fs::read_to_string("/proc/meminfo").unwrap_or_default(),
    );
    room(&read("memory.max")?, &read("memory.stat")?, swap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v2_path_is_the_0_line() {
        assert_eq!(
            v2_path("0::/user.slice/a.scope\n"),
            Some("/user.slice/a.scope")
        );
        assert_eq!(
            v2_path("12:memory:/docker/x\n1:name=systemd:/x\n0::/\n"),
            Some("/")
        );
        assert_eq!(v2_path("4:memory:/docker/x\n"), None, "v1 only");
        assert_eq!(v2_path(""), None);
    }

    #[test]
    fn the_room_is_the_limit_less_what_cannot_be_reclaimed() {
        let stat = "anon 100000\nfile 5000000\nkernel 20000\nkernel_stack 300\nshmem 400000\n";
        // Page cache (`file`) is not counted; `kernel_stack` is not read as `kernel`.
        assert_eq!(
            room("1000000\n", stat, 0),
            Some(Room {
                limit: 1_000_000,
                left: 1_000_000 - 100_000 - 20_000 - 400_000
            })
        );
        // An older kernel without `kernel`.
        assert_eq!(
            room("1000000", "anon 100\nshmem 200\n", 0).map(|r| r.left),
            Some(1_000_000 - 300)
        );
        assert_eq!(
            room("1000", "anon 900\nshmem 900\n", 0).map(|r| r.left),
            Some(0),
            "over the limit"
        );
        assert_eq!(room("max\n", stat, 0), None, "no limit");
        assert_eq!(room("12x", stat, 0), None);
        assert_eq!(room("1000", "anon 1\n", 0), None, "no shmem line");
        assert_eq!(room("1000", "anon x\nshmem 1\n", 0), None);
    }

    #[test]
    fn reclaimable_slab_is_not_counted_and_swap_room_is_added() {
        let stat = "anon 100\nkernel 5000\nshmem 200\nslab_reclaimable 4000\nslab 4500\n";
        assert_eq!(
            room("100000", stat, 0).map(|r| r.left),
            Some(100_000 - 100 - 200 - 1000)
        );
        assert_eq!(
            room("100000", stat, 7).map(|r| r.left),
            Some(100_000 - 1300 + 7)
        );
        // Over the limit, the swap is all the room.
        assert_eq!(room("10", stat, 7).map(|r| r.left), Some(7));
    }

    #[test]
    fn the_swap_room_is_the_host_free_swap_capped_by_the_cgroup() {
        let meminfo = "MemTotal:  16000 kB\nSwapTotal:  8000 kB\nSwapFree:   6000 kB\n";
        let free = 6000 * 1024;
        assert_eq!(swap_room(Some("max\n"), Some("0\n"), meminfo), free);
        assert_eq!(swap_room(None, None, meminfo), free, "no swap controller");
        assert_eq!(
            swap_room(Some("0\n"), Some("0\n"), meminfo),
            0,
            "may not swap"
        );
        assert_eq!(swap_room(Some("5000\n"), Some("1000\n"), meminfo), 4000);
        assert_eq!(swap_room(Some("5000"), Some("9000"), meminfo), 0, "over");
        assert_eq!(swap_room(Some("99999999999"), None, meminfo), free);
        let no_swap = "MemTotal:  16000 kB\nSwapTotal:  0 kB\nSwapFree:  0 kB\n";
        assert_eq!(
            swap_room(Some("max"), Some("0"), no_swap),
            0,
            "host without swap"
        );
        assert_eq!(swap_room(Some("max"), None, ""), 0, "unreadable meminfo");
        assert_eq!(swap_room(Some("x"), None, meminfo), 0);
    }
}
