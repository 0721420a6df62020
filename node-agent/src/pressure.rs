//! The node's pressure conditions, from the machine: what the kubelet reports as
//! MemoryPressure, DiskPressure and PIDPressure, by default at the kubelet's default
//! hard eviction thresholds (`memory.available<100Mi`, `nodefs.available<10%`,
//! `nodefs.inodesFree<5%`), and with fewer than 5% of `kernel.pid_max` left for PIDs.
//!
//! The control plane turns a True condition into a NoSchedule taint
//! (`node.kubernetes.io/memory-pressure`, …), so a node short of memory or disk stops
//! receiving pods. The agent does not evict pods itself.

use std::path::Path;

/// Where each condition starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    /// Memory that must stay available (MemAvailable), bytes.
    pub memory_available_min: u64,
    /// Share of the agent's filesystem (blocks) that must stay available.
    pub disk_available_min: f64,
    /// Share of the agent's filesystem's inodes that must stay free.
    pub inodes_free_min: f64,
    /// Share of `kernel.pid_max` that must stay unused.
    pub pids_available_min: f64,
}

impl Default for Thresholds {
    /// The kubelet's defaults.
    fn default() -> Self {
        Thresholds {
            memory_available_min: 100 << 20,
            disk_available_min: 0.10,
            inodes_free_min: 0.05,
            pids_available_min: 0.05,
        }
    }
}

/// Which pressure conditions hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pressure {
    pub memory: bool,
    pub disk: bool,
    pub pid: bool,
}

/// Free and total blocks and inodes of a filesystem.
#[derive(Clone, Copy, Debug, Default)]
pub struct FsUsage {
    pub blocks_available: u64,
    pub blocks: u64,
    pub inodes_free: u64,
    pub inodes: u64,
}

/// `MemAvailable` of `/proc/meminfo` text, in bytes.
pub fn mem_available(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        l.strip_prefix("MemAvailable:")
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    })
}

/// Threads that exist, from `/proc/loadavg` text (its fourth field, `running/total`).
pub fn threads(loadavg: &str) -> Option<u64> {
    loadavg
        .split_whitespace()
        .nth(3)?
        .split_once('/')?
        .1
        .parse()
        .ok()
}

/// The conditions from the readings; a reading that is missing raises no condition.
pub fn judge(
    t: &Thresholds,
    mem_available: Option<u64>,
    fs: Option<FsUsage>,
    threads: Option<u64>,
    pid_max: Option<u64>,
) -> Pressure {
    let share = |part: u64, whole: u64| (whole > 0).then(|| part as f64 / whole as f64);
    Pressure {
        memory: mem_available.is_some_and(|m| m < t.memory_available_min),
        disk: fs.is_some_and(|f| {
            share(f.blocks_available, f.blocks).is_some_and(|s| s < t.disk_available_min)
                || share(f.inodes_free, f.inodes).is_some_and(|s| s < t.inodes_free_min)
        }),
        pid: match (threads, pid_max) {
            (Some(n), Some(max)) => {
                share(max.saturating_sub(n), max).is_some_and(|s| s < t.pids_available_min)
            }
            _ => false,
        },
    }
}

/// Reads the machine: memory, the filesystem holding `root` (the agent's state:
/// images, rootfs layers, logs), threads against `kernel.pid_max`.
pub fn observe(root: &Path, t: &Thresholds) -> Pressure {
    let fs = nix::sys::statvfs::statvfs(root).ok().map(|s| FsUsage {
        blocks_available: s.blocks_available(),
        blocks: s.blocks(),
        inodes_free: s.files_free(),
        inodes: s.files(),
    });
    let read = |p: &str| std::fs::read_to_string(p).ok();
    judge(
        t,
        read("/proc/meminfo").as_deref().and_then(mem_available),
        fs,
        read("/proc/loadavg").as_deref().and_then(threads),
        read("/proc/sys/kernel/pid_max").and_then(|s| s.trim().parse().ok()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_parse() {
        let meminfo = "MemTotal:       24684096 kB\nMemFree:         9601900 kB\nMemAvailable:   23261100 kB\n";
        assert_eq!(mem_available(meminfo), Some(23_261_100 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
        assert_eq!(threads("1.06 1.27 1.37 2/412 24213\n"), Some(412));
        assert_eq!(threads("garbage"), None);
    }

    #[test]
    fn each_threshold_raises_its_condition_and_only_that() {
        let k = Thresholds::default();
        let roomy = FsUsage {
            blocks_available: 50,
            blocks: 100,
            inodes_free: 50,
            inodes: 100,
        };
        let calm = judge(&k, Some(1 << 30), Some(roomy), Some(400), Some(4_194_304));
        assert_eq!(calm, Pressure::default());

        let low_mem = judge(&k, Some(99 << 20), Some(roomy), Some(400), Some(4_194_304));
        assert_eq!(
            low_mem,
            Pressure {
                memory: true,
                ..Default::default()
            }
        );

        let full = FsUsage {
            blocks_available: 9,
            ..roomy
        };
        assert!(judge(&k, Some(1 << 30), Some(full), None, None).disk);
        let no_inodes = FsUsage {
            inodes_free: 4,
            ..roomy
        };
        assert!(judge(&k, Some(1 << 30), Some(no_inodes), None, None).disk);

        let pids = judge(&k, Some(1 << 30), Some(roomy), Some(32_000), Some(32_768));
        assert_eq!(
            pids,
            Pressure {
                pid: true,
                ..Default::default()
            }
        );

        // Missing readings raise nothing.
        assert_eq!(judge(&k, None, None, None, None), Pressure::default());
        let empty = FsUsage::default();
        assert!(!judge(&k, None, Some(empty), Some(1), Some(0)).disk);
    }

    #[test]
    fn thresholds_move_the_lines() {
        let half_full = FsUsage {
            blocks_available: 50,
            blocks: 100,
            inodes_free: 50,
            inodes: 100,
        };
        let strict = Thresholds {
            disk_available_min: 0.6,
            ..Thresholds::default()
        };
        assert!(judge(&strict, None, Some(half_full), None, None).disk);
        let off = Thresholds {
            disk_available_min: 0.0,
            ..Thresholds::default()
        };
        let nearly_full = FsUsage {
            blocks_available: 1,
            ..half_full
        };
        assert!(!judge(&off, None, Some(nearly_full), None, None).disk);
    }
}
