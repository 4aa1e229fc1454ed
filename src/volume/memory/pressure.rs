//! The second line of defence: the cgroup's real memory use. The model
//! charges what it knows of; should some kind of memory escape it, the
//! driver still refuses new volumes before the kernel's OOM killer acts,
//! and the refusals show up as a metric. What is read is the working set
//! as kubelet computes it for eviction: the cgroup's usage less its
//! inactive file cache, which the kernel reclaims before it kills.

use std::path::{Path, PathBuf};

use super::RESERVE_BYTES;
use super::cgroup;

/// How close to the limit new volumes are still admitted: above
/// `limit - HEADROOM_BYTES` of working set, publishes are refused.
pub const HEADROOM_BYTES: u64 = RESERVE_BYTES / 4;

/// The cgroup is too close to its limit to admit another volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the driver's memory cgroup holds {working_set} of its {limit} bytes (working set), too close to the limit to admit another volume; this means memory the driver does not account for: report it, and raise the driver's memory limit meanwhile"
)]
pub struct Pressure {
    /// The working set, in bytes.
    pub working_set: u64,
    /// The cgroup's limit.
    pub limit: u64,
}

/// Reads the driver's memory cgroup.
#[derive(Debug, Clone)]
pub struct MemoryPressure {
    usage: Option<PathBuf>,
    stat: Option<PathBuf>,
    limit: Option<u64>,
}

impl MemoryPressure {
    /// The process's own memory cgroup, as `/proc/self/cgroup` names it
    /// under `root` (`/sys/fs/cgroup`), with its `limit`.
    pub fn of_process(proc_self_cgroup: &str, root: &Path, limit: Option<u64>) -> Self {
        let usage = cgroup::cgroup_usage_file(proc_self_cgroup, root);
        let stat = usage
            .as_ref()
            .and_then(|u| u.parent())
            .map(|dir| dir.join("memory.stat"));
        Self { usage, stat, limit }
    }

    /// Nothing watched (no cgroup, or no limit).
    pub fn none() -> Self {
        Self {
            usage: None,
            stat: None,
            limit: None,
        }
    }

    /// The working set, when it can be read.
    pub fn working_set(&self) -> Option<u64> {
        let usage = cgroup::cgroup_memory_usage(self.usage.as_ref()?)?;
        let inactive = self
            .stat
            .as_ref()
            .and_then(|stat| std::fs::read_to_string(stat).ok())
            .and_then(|text| inactive_file(&text))
            .unwrap_or(0);
        Some(usage.saturating_sub(inactive))
    }

    /// Refuses when the working set is within [`HEADROOM_BYTES`] of the
    /// limit.
    pub fn check(&self) -> Result<(), Pressure> {
        let (Some(limit), Some(working_set)) = (self.limit, self.working_set()) else {
            return Ok(());
        };
        if working_set + HEADROOM_BYTES > limit {
            return Err(Pressure { working_set, limit });
        }
        Ok(())
    }
}

/// `inactive_file` (v2) or `total_inactive_file` (v1) of a `memory.stat`.
fn inactive_file(stat: &str) -> Option<u64> {
    stat.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        matches!(key, "inactive_file" | "total_inactive_file")
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_working_set_leaves_out_reclaimable_file_cache() {
        let dir = std::env::temp_dir().join(format!("vcd-pressure-{}", rand::random::<u64>()));
        std::fs::create_dir_all(dir.join("pod/c")).unwrap();
        std::fs::write(dir.join("pod/c/memory.current"), "1000\n").unwrap();
        std::fs::write(
            dir.join("pod/c/memory.stat"),
            "anon 600\nfile 400\ninactive_file 300\n",
        )
        .unwrap();
        let watch = MemoryPressure::of_process("0::/pod/c\n", &dir, Some(1000 + HEADROOM_BYTES));
        assert_eq!(watch.working_set(), Some(700));
        assert!(watch.check().is_ok());
        let tight = MemoryPressure::of_process("0::/pod/c\n", &dir, Some(HEADROOM_BYTES + 600));
        assert_eq!(
            tight.check(),
            Err(Pressure {
                working_set: 700,
                limit: HEADROOM_BYTES + 600
            })
        );
        assert!(MemoryPressure::none().check().is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn inactive_file_is_read_in_both_versions() {
        assert_eq!(inactive_file("anon 1\ninactive_file 42\n"), Some(42));
        assert_eq!(inactive_file("cache 9\ntotal_inactive_file 7\n"), Some(7));
        assert_eq!(inactive_file("anon 1\n"), None);
    }
}
