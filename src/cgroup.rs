//! The memory cgroup (v2) limit a new stream's shared memory counts against: tmpfs pages
//! are charged to the creator's cgroup, and filling them past `memory.max` gets the process
//! OOM-killed rather than refused with `ENOSPC`. Read once per `create` (a few small files),
//! never on the hot path; anything unreadable or unparsable means no check.

use std::path::Path;

/// Room under a memory cgroup's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Room {
    /// `memory.max`, in bytes.
    pub limit: u64,
    /// The limit less the memory that cannot be reclaimed (`anon` + `shmem` + `kernel` of
    /// `memory.stat`; page cache is reclaimable and not counted).
    pub left: u64,
}

/// This process's cgroup v2 path, from the contents of `/proc/self/cgroup` (its `0::` line).
pub(crate) fn v2_path(proc_self_cgroup: &str) -> Option<&str> {
    proc_self_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .filter(|p| p.starts_with('/'))
}

/// The room under a cgroup from the contents of its `memory.max` and `memory.stat`; `None`
/// when it has no limit (`max`) or either does not parse (`anon` and `shmem` must be there).
pub(crate) fn room(memory_max: &str, memory_stat: &str) -> Option<Room> {
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
    let used = stat("anon")??
        .saturating_add(stat("shmem")??)
        .saturating_add(stat("kernel")?.unwrap_or(0));
    Some(Room {
        limit,
        left: limit.saturating_sub(used),
    })
}

/// The room under this process's memory cgroup (v2), if it has a limit that can be read.
pub(crate) fn room_now() -> Option<Room> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let dir = Path::new("/sys/fs/cgroup").join(v2_path(&cgroup)?.trim_start_matches('/'));
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).ok();
    room(&read("memory.max")?, &read("memory.stat")?)
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
            room("1000000\n", stat),
            Some(Room {
                limit: 1_000_000,
                left: 1_000_000 - 100_000 - 20_000 - 400_000
            })
        );
        // An older kernel without `kernel`.
        assert_eq!(
            room("1000000", "anon 100\nshmem 200\n").map(|r| r.left),
            Some(1_000_000 - 300)
        );
        assert_eq!(
            room("1000", "anon 900\nshmem 900\n").map(|r| r.left),
            Some(0),
            "over the limit"
        );
        assert_eq!(room("max\n", stat), None, "no limit");
        assert_eq!(room("12x", stat), None);
        assert_eq!(room("1000", "anon 1\n"), None, "no shmem line");
        assert_eq!(room("1000", "anon x\nshmem 1\n"), None);
    }
}
