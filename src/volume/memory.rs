//! The node-wide memory budget for volumes.
//!
//! A volume's files are tmpfs pages, and tmpfs pages are charged to the
//! memory cgroup of the process that wrote them: the driver's. They count
//! against the DaemonSet's memory limit like the driver's own heap, and they
//! outlive the process, so a driver killed for exceeding its limit is killed
//! again on restart. One tenant rendering large files into many volumes
//! could therefore take down every tenant's refreshes on the node.
//!
//! So every volume holds a [`Charge`] against one [`MemoryBudget`]: twice
//! its files' pages (during an update the old and the new set both exist)
//! plus the Vault answers it keeps for re-rendering. A publish or refresh
//! that would take the total past the budget is refused (the previous files
//! stay), with a message naming the limit and the flag that sets it. The
//! budget is the driver's cgroup memory limit minus a fixed reserve for the
//! driver itself (see [`budget_from_limit`]), or `--memory-budget-bytes`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::metrics::gauge::Gauge;

use crate::storage::Payload;

/// What the driver keeps for itself below its memory limit: its baseline
/// (about 8 MiB), per-volume bookkeeping, HTTP and gRPC buffers, and the
/// transient memory of parsing and rendering.
pub const RESERVE_BYTES: u64 = 48 * 1024 * 1024;

/// The page size tmpfs allocates in: even a one-byte file takes a page.
const PAGE: u64 = 4096;

/// The budget a memory limit leaves for volumes: the limit minus
/// [`RESERVE_BYTES`], and never less than an eighth of the limit (a limit
/// too small for the reserve still admits a few small volumes rather than
/// none; the DaemonSet's limit should leave room for the reserve).
pub fn budget_from_limit(limit: u64) -> u64 {
    limit.saturating_sub(RESERVE_BYTES).max(limit / 8)
}

/// The memory limit of the cgroup this process runs in, from the text of
/// `/proc/self/cgroup` and the cgroup file systems under `root`
/// (`/sys/fs/cgroup`): the smallest limit on the way from the process's
/// cgroup up to the hierarchy's root, under cgroup v2 (`memory.max`) and
/// v1 (`memory/…/memory.limit_in_bytes`). `None` when nothing limits it.
pub fn cgroup_memory_limit(proc_self_cgroup: &str, root: &Path) -> Option<u64> {
    let mut smallest: Option<u64> = None;
    for line in proc_self_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (hierarchy, file) = if id == "0" && controllers.is_empty() {
            (root.to_path_buf(), "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            (root.join("memory"), "memory.limit_in_bytes")
        } else {
            continue;
        };
        let mut dir = Some(Path::new(path.trim_start_matches('/')));
        while let Some(relative) = dir {
            let value = std::fs::read_to_string(hierarchy.join(relative).join(file)).ok();
            if let Some(limit) = value.as_deref().and_then(parse_limit) {
                smallest = Some(smallest.map_or(limit, |s| s.min(limit)));
            }
            dir = relative.parent();
        }
    }
    smallest
}

/// A limit file's value: bytes, or `None` for "max" and v1's "unlimited"
/// (a value near `i64::MAX`).
fn parse_limit(text: &str) -> Option<u64> {
    let value: u64 = text.trim().parse().ok()?;
    (value < 1 << 60).then_some(value)
}

/// What one volume costs the budget: twice its files' pages (old and new
/// sets coexist during an update) plus the Vault answers kept for it.
pub fn volume_cost(payload: &Payload, kept_answers: u64) -> u64 {
    let pages: u64 = payload
        .values()
        .map(|file| (file.bytes.expose().len() as u64).div_ceil(PAGE).max(1) * PAGE)
        .sum();
    2 * pages + kept_answers
}

/// The budget is used up: the volume is not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the node's memory budget for volumes is used up: this volume needs {needed} bytes, {used} of {budget} are in use by other volumes; raise the driver's memory limit (the budget is the limit minus {RESERVE_BYTES} bytes) or set --memory-budget-bytes, or render less into the volume"
)]
pub struct Exhausted {
    /// What the volume asked for, in bytes.
    pub needed: u64,
    /// What the other volumes hold.
    pub used: u64,
    /// The budget.
    pub budget: u64,
}

/// The node-wide budget. `None` as a limit: nothing is refused (no cgroup
/// limit was found and no flag was set), but use is still counted.
#[derive(Debug)]
pub struct MemoryBudget {
    budget: Option<u64>,
    used: AtomicU64,
    gauge: Gauge,
}

impl MemoryBudget {
    /// A budget of `budget` bytes (`None`: unlimited).
    pub fn new(budget: Option<u64>) -> Arc<Self> {
        Self::with_gauge(budget, Gauge::default())
    }

    /// A budget that keeps `gauge` at its use (the metric
    /// `vault_csi_memory_budget_used_bytes`).
    pub fn with_gauge(budget: Option<u64>, gauge: Gauge) -> Arc<Self> {
        Arc::new(Self {
            budget,
            used: AtomicU64::new(0),
            gauge,
        })
    }

    fn publish(&self) {
        self.gauge
            .set(i64::try_from(self.used()).unwrap_or(i64::MAX));
    }

    /// Bytes held by all volumes.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// A new, empty charge for one volume.
    pub fn charge(self: &Arc<Self>) -> Charge {
        Charge {
            budget: Arc::clone(self),
            bytes: AtomicU64::new(0),
        }
    }

    /// Moves `from` bytes to `to`; refuses growth past the budget.
    fn resize(&self, from: u64, to: u64) -> Result<(), Exhausted> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let others = used.saturating_sub(from);
            let next = others + to;
            if let Some(budget) = self.budget
                && to > from
                && next > budget
            {
                return Err(Exhausted {
                    needed: to,
                    used: others,
                    budget,
                });
            }
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.publish();
                    return Ok(());
                }
                Err(now) => used = now,
            }
        }
    }
}

/// One volume's share of the budget, given back when dropped.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<MemoryBudget>,
    bytes: AtomicU64,
}

impl Charge {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Holds `bytes` from now on, if the budget allows growing to it;
    /// returns what was held before, to [`Charge::force`] back when the
    /// write that needed it fails.
    pub fn resize(&self, bytes: u64) -> Result<u64, Exhausted> {
        let before = self.bytes();
        self.budget.resize(before, bytes)?;
        self.bytes.store(bytes, Ordering::Relaxed);
        Ok(before)
    }

    /// Holds `bytes` whatever the budget says: for what already exists
    /// (volumes adopted after a restart, a failed write's previous size).
    pub fn force(&self, bytes: u64) {
        let before = self.bytes.swap(bytes, Ordering::Relaxed);
        let _ = self
            .budget
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(before) + bytes)
            });
        self.budget.publish();
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.force(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::storage::{FileContent, RelativePath};

    fn tree(files: &[(&str, &str)]) -> tempdir::Dir {
        tempdir::Dir::with(files)
    }

    /// A throwaway directory of files, for fake cgroup file systems.
    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn with(files: &[(&str, &str)]) -> Self {
                let root = std::env::temp_dir().join(format!("cgroup-{}", rand::random::<u64>()));
                for (path, content) in files {
                    let file = root.join(path);
                    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                    std::fs::write(file, content).unwrap();
                }
                std::fs::create_dir_all(&root).unwrap();
                Self(root)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn the_smallest_limit_on_the_way_up_wins() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Option<u64>);
        let cases: &[Case] = &[
            // cgroup v2, limit on the container's own cgroup.
            (
                "0::/kubepods/pod1/c1\n",
                &[("kubepods/pod1/c1/memory.max", "134217728\n")],
                Some(134_217_728),
            ),
            // v2 with cgroupns: the container sees itself as the root.
            ("0::/\n", &[("memory.max", "67108864\n")], Some(67_108_864)),
            // v2 unlimited at every level.
            (
                "0::/a/b\n",
                &[("a/b/memory.max", "max\n"), ("a/memory.max", "max\n")],
                None,
            ),
            // v2: the pod's limit is smaller than the container's.
            (
                "0::/pod/c\n",
                &[
                    ("pod/c/memory.max", "200000000"),
                    ("pod/memory.max", "100000000"),
                ],
                Some(100_000_000),
            ),
            // cgroup v1 memory controller, unlimited value near i64::MAX.
            (
                "4:memory:/kubepods/pod1/c1\n0::/\n",
                &[
                    (
                        "memory/kubepods/pod1/c1/memory.limit_in_bytes",
                        "134217728\n",
                    ),
                    ("memory/memory.limit_in_bytes", "9223372036854771712\n"),
                ],
                Some(134_217_728),
            ),
            // v1 with the controller listed with others, path not visible:
            // the hierarchy's root counts.
            (
                "3:cpu,memory:/elsewhere\n",
                &[("memory/memory.limit_in_bytes", "1048576\n")],
                Some(1_048_576),
            ),
            // Nothing mounted.
            ("0::/\n4:memory:/x\n", &[], None),
        ];
        for (proc_cgroup, files, expected) in cases {
            let root = tree(files);
            assert_eq!(
                cgroup_memory_limit(proc_cgroup, &root.0),
                *expected,
                "{proc_cgroup:?} with {files:?}"
            );
        }
    }

    #[test]
    fn the_reserve_comes_off_the_limit() {
        let mib = 1024 * 1024;
        for (limit, budget) in [
            (128 * mib, 80 * mib),
            (64 * mib, 16 * mib),
            (48 * mib, 6 * mib),
            (8 * mib, mib),
        ] {
            assert_eq!(budget_from_limit(limit), budget, "limit {limit}");
        }
    }

    #[test]
    fn files_cost_twice_their_pages_plus_kept_answers() {
        let file = |len: usize| FileContent {
            bytes: Secret::new(vec![b'x'; len]),
            mode: 0o444,
        };
        let payload: Payload = [
            (RelativePath::parse("a").unwrap(), file(0)),
            (RelativePath::parse("b").unwrap(), file(4096)),
            (RelativePath::parse("c").unwrap(), file(4097)),
        ]
        .into_iter()
        .collect();
        assert_eq!(volume_cost(&payload, 100), 2 * (4096 + 4096 + 8192) + 100);
    }

    #[test]
    fn charges_are_refused_past_the_budget_and_given_back() {
        let budget = MemoryBudget::new(Some(1000));
        let a = budget.charge();
        let b = budget.charge();
        assert_eq!(a.resize(600), Ok(0));
        assert_eq!(
            b.resize(500),
            Err(Exhausted {
                needed: 500,
                used: 600,
                budget: 1000
            })
        );
        assert_eq!(b.bytes(), 0);
        assert_eq!(b.resize(400), Ok(0));
        assert_eq!(budget.used(), 1000);
        // Shrinking is always allowed, growing within the budget too.
        assert_eq!(a.resize(100), Ok(600));
        assert_eq!(b.resize(900), Ok(400));
        a.force(50);
        assert_eq!(budget.used(), 950);
        drop(b);
        assert_eq!(budget.used(), 50);
        drop(a);
        assert_eq!(budget.used(), 0);
        // Forced charges count but are never refused.
        let c = budget.charge();
        c.force(5000);
        assert_eq!(budget.used(), 5000);
        assert!(budget.charge().resize(1).is_err());
    }

    #[test]
    fn an_unlimited_budget_counts_but_never_refuses() {
        let budget = MemoryBudget::new(None);
        let a = budget.charge();
        assert_eq!(a.resize(u64::MAX / 2), Ok(0));
        assert_eq!(budget.used(), u64::MAX / 2);
    }
}
