//! The memory cgroup (v2) limits a new stream's shared memory counts against: tmpfs pages
//! are charged to the creator's cgroup, and filling them past the `memory.max` of that cgroup
//! or of any parent gets the process OOM-killed rather than refused with `ENOSPC`, unless it
//! can swap them out instead. Read once per `create` (a few small files per level), never on
//! the hot path. A level whose limit cannot be read or parsed is not checked, one whose
//! `memory.stat` cannot counts its whole limit as room, and unreadable swap figures mean no
//! swap room. Limits above a cgroup namespace's root (a pod's, seen from its container) are
//! not visible.

use std::path::Path;

/// Levels of the hierarchy read above a process's cgroup, its own included.
const MAX_LEVELS: usize = 32;

/// Room under a process's memory cgroup limits: the tightest level's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Room {
    /// That level's `memory.max`, in bytes.
    pub limit: u64,
    /// The limit less the memory there that cannot be reclaimed (`anon` + `shmem` +
    /// `kernel` less `slab_reclaimable` of `memory.stat`; page cache is reclaimable and not
    /// counted): at most `limit`.
    pub left: u64,
    /// The swap the cgroup may still fill ([`swap_room`]), on top of `left`.
    pub swap: u64,
}

/// This process's cgroup v2 path, from the contents of `/proc/self/cgroup` (its `0::` line).
pub(crate) fn v2_path(proc_self_cgroup: &str) -> Option<&str> {
    proc_self_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .filter(|p| p.starts_with('/'))
}

/// The cgroup directories, relative to the cgroup2 mount, from the cgroup at `v2_path` up to
/// the mount itself (`""`: the root cgroup, or a cgroup namespace's), at most
/// [`MAX_LEVELS`], leaf first; none for a path with `.` or `..` (a cgroup outside this
/// namespace's mount).
pub(crate) fn levels(v2_path: &str) -> Vec<&str> {
    let rel = v2_path.trim_matches('/');
    if rel.split('/').any(|c| c == "." || c == "..") {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut at = rel;
    while out.len() < MAX_LEVELS {
        out.push(at);
        if at.is_empty() {
            break;
        }
        at = at.rfind('/').map_or("", |i| &at[..i]);
    }
    out
}

/// A level's limit from the contents of its `memory.max`: `None` for `max` (none) or what
/// does not parse.
pub(crate) fn limit(memory_max: &str) -> Option<u64> {
    memory_max.trim().parse().ok()
}

/// The room under a level's `limit` from the contents of its `memory.stat`, without swap;
/// `None` when it does not parse (`anon` and `shmem` must be there).
pub(crate) fn room(limit: u64, memory_stat: &str) -> Option<Room> {
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
        left: limit.saturating_sub(used),
        swap: 0,
    })
}

/// Bytes of shared memory past the limits that a cgroup can swap out rather than be
/// OOM-killed for: the host's `SwapFree` (from `/proc/meminfo`'s contents), capped at each
/// level (`memory.swap.max` and `memory.swap.current`, leaf first, `None` where a level has
/// no such file) by its max less its current (`max`, or no file: no cap). 0 when anything
/// needed does not parse, as on a host without swap.
pub(crate) fn swap_room<'a>(
    levels: impl IntoIterator<Item = (Option<&'a str>, Option<&'a str>)>,
    meminfo: &str,
) -> u64 {
    let free_kib: Option<u64> = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("SwapFree:"))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok());
    let host = free_kib.unwrap_or(0).saturating_mul(1024);
    levels
        .into_iter()
        .map(|(swap_max, swap_current)| match swap_max.map(str::trim) {
            None | Some("max") => Some(u64::MAX),
            Some(max) => max.parse::<u64>().ok().and_then(|max| {
                let current: u64 = swap_current?.trim().parse().ok()?;
                Some(max.saturating_sub(current))
            }),
        })
        .try_fold(host, |room, cap| Some(room.min(cap?)))
        .unwrap_or(0)
}

/// The room under this process's memory cgroup (v2) and its parents ([`room_under`] the
/// cgroup2 mount, `/proc/self/cgroup` and `/proc/meminfo`); `None` without a limit.
pub(crate) fn room_now() -> Option<Room> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    room_under(Path::new("/sys/fs/cgroup"), &cgroup, &meminfo)
}

/// The room under the cgroup that `proc_self_cgroup` (its contents) names and its parents,
/// in the cgroup2 hierarchy mounted at `mount`: the smallest of the levels with a limit that
/// can be read, with the swap room of every level (`meminfo`: `/proc/meminfo`'s contents);
/// `None` without one. `memory.max` is read first: without a limit nothing else is.
fn room_under(mount: &Path, proc_self_cgroup: &str, meminfo: &str) -> Option<Room> {
    let dirs: Vec<_> = levels(v2_path(proc_self_cgroup)?)
        .into_iter()
        .map(|l| mount.join(l))
        .collect();
    let read = |dir: &Path, file: &str| std::fs::read_to_string(dir.join(file)).ok();
    // No level with a limit: `None` here, before any other file is read.
    let memory = dirs
        .iter()
        .filter_map(|d| Some((d, limit(&read(d, "memory.max")?)?)))
        // A level whose usage cannot be read still bounds the stream by its limit.
        .map(|(d, limit)| {
            read(d, "memory.stat")
                .and_then(|stat| room(limit, &stat))
                .unwrap_or(Room {
                    limit,
                    left: limit,
                    swap: 0,
                })
        })
        .min_by_key(|r| r.left)?;
    let swap: Vec<_> = dirs
        .iter()
        .map(|d| (read(d, "memory.swap.max"), read(d, "memory.swap.current")))
        .collect();
    Some(Room {
        swap: swap_room(
            swap.iter().map(|(m, c)| (m.as_deref(), c.as_deref())),
            meminfo,
        ),
        ..memory
    })
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
    fn the_levels_run_from_the_leaf_to_the_mount() {
        assert_eq!(levels("/a/b/c"), ["a/b/c", "a/b", "a", ""]);
        assert_eq!(levels("/"), [""], "the root or a namespace's");
        assert!(levels("/../x").is_empty(), "outside this namespace");
        let deep = "/x".repeat(40);
        let up = levels(&deep);
        assert_eq!((up.len(), up[0]), (MAX_LEVELS, &deep[1..]));
    }

    #[test]
    fn the_room_is_the_limit_less_what_cannot_be_reclaimed() {
        let stat = "anon 100000\nfile 5000000\nkernel 20000\nkernel_stack 300\nshmem 400000\n";
        // Page cache (`file`) is not counted; `kernel_stack` is not read as `kernel`.
        assert_eq!(
            room(1_000_000, stat),
            Some(Room {
                limit: 1_000_000,
                left: 1_000_000 - 100_000 - 20_000 - 400_000,
                swap: 0,
            })
        );
        // An older kernel without `kernel`.
        assert_eq!(
            room(1_000_000, "anon 100\nshmem 200\n").map(|r| r.left),
            Some(1_000_000 - 300)
        );
        assert_eq!(
            room(1000, "anon 900\nshmem 900\n").map(|r| r.left),
            Some(0),
            "over the limit"
        );
        assert_eq!(limit("1000000\n"), Some(1_000_000));
        assert_eq!(limit("max\n"), None, "no limit");
        assert_eq!(limit("12x"), None);
        assert_eq!(room(1000, "anon 1\n"), None, "no shmem line");
        assert_eq!(room(1000, "anon x\nshmem 1\n"), None);
    }

    #[test]
    fn reclaimable_slab_is_not_counted() {
        let stat = "anon 100\nkernel 5000\nshmem 200\nslab_reclaimable 4000\nslab 4500\n";
        assert_eq!(
            room(100_000, stat).map(|r| r.left),
            Some(100_000 - 100 - 200 - 1000)
        );
    }

    #[test]
    fn the_swap_room_is_the_host_free_swap_capped_by_every_level() {
        let meminfo = "MemTotal:  16000 kB\nSwapTotal:  8000 kB\nSwapFree:   6000 kB\n";
        let free = 6000 * 1024;
        let one = |max, current| swap_room([(max, current)], meminfo);
        assert_eq!(one(Some("max\n"), Some("0\n")), free);
        assert_eq!(one(None, None), free, "no swap controller");
        assert_eq!(one(Some("0\n"), Some("0\n")), 0, "may not swap");
        assert_eq!(one(Some("5000\n"), Some("1000\n")), 4000);
        assert_eq!(one(Some("5000"), Some("9000")), 0, "over");
        assert_eq!(one(Some("99999999999"), Some("0")), free);
        assert_eq!(one(Some("99999999999"), None), 0, "a cap without its usage");
        assert_eq!(one(Some("x"), None), 0);
        // A parent slice that may not swap caps a leaf that may.
        let leaf_then_parent = [
            (Some("max"), Some("0")),
            (Some("0"), Some("0")),
            (None, None),
        ];
        assert_eq!(swap_room(leaf_then_parent, meminfo), 0, "parent at 0");
        let both = [(Some("9000"), Some("1000")), (Some("5000"), Some("2000"))];
        assert_eq!(swap_room(both, meminfo), 3000, "the smallest room");
        let no_swap = "MemTotal:  16000 kB\nSwapTotal:  0 kB\nSwapFree:  0 kB\n";
        assert_eq!(
            swap_room([(Some("max"), Some("0"))], no_swap),
            0,
            "host without swap"
        );
        assert_eq!(
            swap_room([(Some("max"), None)], ""),
            0,
            "unreadable meminfo"
        );
    }

    /// A cgroup2 tree in a fresh temporary directory, removed on drop.
    struct Tree(std::path::PathBuf);

    impl Tree {
        fn new(tag: &str) -> Tree {
            let dir = std::env::temp_dir().join(format!(
                "shmstream-cgroup-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Tree(dir)
        }

        /// Writes `files` (name, contents) into the level at `rel` ("" is the mount).
        fn level(&self, rel: &str, files: &[(&str, &str)]) {
            let dir = self.0.join(rel);
            std::fs::create_dir_all(&dir).unwrap();
            for (name, text) in files {
                std::fs::write(dir.join(name), text).unwrap();
            }
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const MEMINFO: &str = "MemTotal:  16000 kB\nSwapFree:   6000 kB\n";

    #[test]
    fn the_room_under_a_tree_is_the_tightest_level_with_every_level_s_swap_cap() {
        let t = Tree::new("tight");
        let me = "0::/pod/leaf\n";
        // The leaf: a loose limit, little used, may swap freely.
        t.level(
            "pod/leaf",
            &[
                ("memory.max", "1000000\n"),
                ("memory.stat", "anon 1000\nshmem 0\n"),
                ("memory.swap.max", "max\n"),
                ("memory.swap.current", "0\n"),
            ],
        );
        // The parent: a tighter limit and no memory.stat (its whole limit is room).
        t.level(
            "pod",
            &[
                ("memory.max", "50000\n"),
                ("memory.swap.max", "max\n"),
                ("memory.swap.current", "0\n"),
            ],
        );
        // The mount: no limit, no swap files.
        t.level("", &[("memory.max", "max\n")]);
        assert_eq!(
            room_under(&t.0, me, MEMINFO),
            Some(Room {
                limit: 50_000,
                left: 50_000,
                swap: 6000 * 1024,
            })
        );
        // A parent that may not swap caps the leaf that may.
        t.level("pod", &[("memory.swap.max", "0\n")]);
        assert_eq!(room_under(&t.0, me, MEMINFO).map(|r| r.swap), Some(0));
        // The leaf's usage leaves it less room than the parent's limit: the leaf's counts.
        t.level("pod/leaf", &[("memory.stat", "anon 980000\nshmem 0\n")]);
        assert_eq!(
            room_under(&t.0, me, MEMINFO).map(|r| (r.limit, r.left)),
            Some((1_000_000, 20_000))
        );
    }

    #[test]
    fn no_limit_anywhere_in_a_tree_is_no_room_to_check() {
        let t = Tree::new("none");
        t.level("a/b", &[("memory.max", "max\n")]);
        t.level("a", &[]);
        t.level("", &[("memory.max", "max\n")]);
        assert_eq!(room_under(&t.0, "0::/a/b\n", MEMINFO), None);
        assert_eq!(
            room_under(&t.0, "4:memory:/a/b\n", MEMINFO),
            None,
            "v1 only"
        );
    }
}
