//! The node-wide memory budget for volumes, and the memory model it
//! enforces: **every byte a volume can make the driver (or its tmpfs)
//! hold has a bound known at admission, and is charged, or reserved,
//! before it is held.**
//!
//! A volume's files are tmpfs pages, and tmpfs pages (and inodes) are
//! charged to the memory cgroup of the process that wrote them: the
//! driver's. They count against the DaemonSet's memory limit like the
//! driver's own heap, and they outlive the process, so a driver killed for
//! exceeding its limit is killed again on restart. One tenant could
//! therefore take down every tenant's refreshes on the node.
//!
//! | what a volume makes the driver hold | bound | charged |
//! |---|---|---|
//! | its attributes (templates included) | [`MAX_ATTRIBUTES`](crate::volume::MAX_ATTRIBUTES) keys, [`MAX_ATTRIBUTE_BYTES`](crate::volume::MAX_ATTRIBUTE_BYTES); control characters refused | twice (request and record), from the admission on |
//! | its compiled templates | [`crate::render::compile_reservation`] of the sources, before compiling | the compiled set's size while the volume uses it |
//! | Vault answers in flight | [`crate::vault::MAX_RESPONSE_BYTES`] each, read chunk by chunk | each chunk before it is kept (weighed while read, before parsing) |
//! | answers parsed for a render | [`crate::render::parse_reservation`] of the bodies | reserved before parsing, released after the render |
//! | rendered files | `max_payload_bytes` | reserved before rendering; then twice their pages (an update holds old and new) |
//! | tmpfs inodes | the tmpfs' `nr_inodes` | [`cost::INODE_BYTES`] per file, directory and link |
//! | answers kept for re-rendering | the answers' sizes | while kept |
//! | the state record | its serialised size | page-rounded, while it exists |
//! | the driver's own bookkeeping | fixed | [`cost::VOLUME_BOOKKEEPING_BYTES`] per volume |
//!
//! Each pod namespace may hold at most a share of the budget
//! (`--namespace-memory-share`), so a tenant that filled its share still
//! leaves room for another namespace's volumes. A charge that would take
//! the total or the tenant past its limit is refused with a message naming
//! the limit and the flag that sets it; a refused refresh keeps the
//! previous files. The budget is the driver's cgroup memory limit minus a
//! fixed reserve for the driver itself ([`budget_from_limit`]), or
//! `--memory-budget-bytes`. As a second line, [`pressure`] watches the
//! cgroup's real usage and refuses new volumes near the limit, so a kind of
//! memory the model missed shows up as refusals and a metric, not an OOM
//! kill.
//!
//! A charge given back is memory given back: the binary's allocator
//! (jemalloc, set up in `main.rs`) returns every page no allocation uses
//! to the kernel at once, wherever it lies in the heap, and keeps no
//! per-thread caches. With glibc's malloc a driver whose volumes were all
//! unpublished still held 30 to 50 MiB that the budget would admit again.

pub mod cgroup;
pub mod cost;
pub mod pressure;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::gauge::Gauge;

pub use cgroup::cgroup_memory_limit;

/// What the driver keeps for itself below its memory limit: its baseline
/// (about 8 MiB), HTTP and gRPC buffers, and the transient memory of
/// requests the model bounds but does not charge (gRPC requests being
/// received, decoded and checked: [`crate::csi::intake::INTAKE_BYTES`]
/// for the node, and a flow-control window for each request waiting for
/// it).
pub const RESERVE_BYTES: u64 = 48 * 1024 * 1024;

/// The budget a memory limit leaves for volumes: the limit minus
/// [`RESERVE_BYTES`], and never less than an eighth of the limit (a limit
/// too small for the reserve still admits a few small volumes rather than
/// none; the DaemonSet's limit should leave room for the reserve).
pub fn budget_from_limit(limit: u64) -> u64 {
    limit.saturating_sub(RESERVE_BYTES).max(limit / 8)
}

/// Which limit a refused charge ran into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limit {
    /// The node's budget.
    Node,
    /// The pod namespace's share of it.
    Namespace(String),
}

/// The budget is used up: the volume is not written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", describe(self))]
pub struct Exhausted {
    /// What the volume asked to hold, in bytes.
    pub needed: u64,
    /// What the others under the same limit hold.
    pub used: u64,
    /// The limit.
    pub budget: u64,
    /// Which limit.
    pub limit: Limit,
}

fn describe(e: &Exhausted) -> String {
    match &e.limit {
        Limit::Node => format!(
            "the node's memory budget for volumes is used up: this volume needs {} bytes, {} of {} are in use by other volumes; raise the driver's memory limit (the budget is the limit minus {RESERVE_BYTES} bytes) or set --memory-budget-bytes, or render less into the volume",
            e.needed, e.used, e.budget
        ),
        Limit::Namespace(namespace) => format!(
            "pod namespace {namespace:?} holds its whole share of the node's memory budget for volumes: this volume needs {} bytes, its other volumes hold {} of the {} its share allows; delete some of its volumes, render less into them, or raise --namespace-memory-share or the driver's memory limit",
            e.needed, e.used, e.budget
        ),
    }
}

#[derive(Debug, Default)]
struct Used {
    total: u64,
    by_tenant: HashMap<Arc<str>, u64>,
}

/// The node-wide budget. `None` as a limit: nothing is refused (no cgroup
/// limit was found and no flag was set), but use is still counted.
#[derive(Debug)]
pub struct MemoryBudget {
    budget: Option<u64>,
    /// The largest part of the budget one tenant may hold.
    tenant_limit: Option<u64>,
    used: Mutex<Used>,
    gauge: Gauge,
}

impl MemoryBudget {
    /// A budget of `budget` bytes (`None`: unlimited), of which each
    /// tenant may hold `share` (0 to 1).
    pub fn new(budget: Option<u64>, share: f64) -> Arc<Self> {
        Self::with_gauge(budget, share, Gauge::default())
    }

    /// A budget that keeps `gauge` at its use (the metric
    /// `vault_csi_memory_budget_used_bytes`).
    pub fn with_gauge(budget: Option<u64>, share: f64, gauge: Gauge) -> Arc<Self> {
        let share = if share.is_finite() {
            share.clamp(0.0, 1.0)
        } else {
            1.0
        };
        Arc::new(Self {
            budget,
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)] // a share of a u64, within 0..=1
            tenant_limit: budget.map(|b| ((b as f64) * share) as u64),
            used: Mutex::new(Used::default()),
            gauge,
        })
    }

    /// Bytes held by all volumes.
    pub fn used(&self) -> u64 {
        self.lock().total
    }

    /// Bytes held by `tenant`'s volumes.
    pub fn used_by(&self, tenant: &str) -> u64 {
        self.lock().by_tenant.get(tenant).copied().unwrap_or(0)
    }

    /// A new, empty charge for something of `tenant`'s.
    pub fn charge(self: &Arc<Self>, tenant: &str) -> Charge {
        Charge {
            budget: Arc::clone(self),
            tenant: Arc::from(tenant),
            bytes: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Used> {
        self.used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Moves `tenant`'s charge from `from` bytes to `to`; refuses growth
    /// past the budget or the tenant's share unless `force`.
    fn resize(&self, tenant: &Arc<str>, from: u64, to: u64, force: bool) -> Result<(), Exhausted> {
        let mut used = self.lock();
        let mine = used.by_tenant.get(tenant).copied().unwrap_or(0);
        let others = used.total.saturating_sub(from);
        let mine_others = mine.saturating_sub(from);
        if !force && to > from {
            if let Some(budget) = self.budget
                && others + to > budget
            {
                return Err(Exhausted {
                    needed: to,
                    used: others,
                    budget,
                    limit: Limit::Node,
                });
            }
            if let Some(share) = self.tenant_limit
                && mine_others + to > share
            {
                return Err(Exhausted {
                    needed: to,
                    used: mine_others,
                    budget: share,
                    limit: Limit::Namespace(tenant.to_string()),
                });
            }
        }
        used.total = others + to;
        let tenant_total = mine_others + to;
        if tenant_total == 0 {
            used.by_tenant.remove(tenant);
        } else {
            used.by_tenant.insert(Arc::clone(tenant), tenant_total);
        }
        self.gauge
            .set(i64::try_from(used.total).unwrap_or(i64::MAX));
        Ok(())
    }
}

/// Something of one tenant's held against the budget (a volume's standing
/// cost, or a reservation for work in flight), given back when dropped.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<MemoryBudget>,
    tenant: Arc<str>,
    bytes: AtomicU64,
}

impl Charge {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Holds `bytes` from now on, if the budget and the tenant's share
    /// allow growing to it; returns what was held before, to
    /// [`Charge::force`] back when the work that needed it fails.
    pub fn resize(&self, bytes: u64) -> Result<u64, Exhausted> {
        let before = self.bytes();
        self.budget.resize(&self.tenant, before, bytes, false)?;
        self.bytes.store(bytes, Ordering::Relaxed);
        Ok(before)
    }

    /// Holds `more` bytes on top of what is held, if the limits allow.
    pub fn grow(&self, more: u64) -> Result<(), Exhausted> {
        self.resize(self.bytes().saturating_add(more)).map(drop)
    }

    /// Holds `bytes` whatever the limits say: for what already exists
    /// (volumes adopted after a restart, a failed write's previous size).
    pub fn force(&self, bytes: u64) {
        let before = self.bytes.swap(bytes, Ordering::Relaxed);
        let _ = self.budget.resize(&self.tenant, before, bytes, true);
    }

    /// A new, empty charge for the same tenant: a reservation for work in
    /// flight, given back when the work is done.
    #[must_use]
    pub fn reservation(&self) -> Self {
        self.budget.charge(&self.tenant)
    }
}

impl crate::vault::BodyMeter for Charge {
    fn take(&self, bytes: u64) -> Result<(), String> {
        self.grow(bytes).map_err(|e| e.to_string())
    }
}

impl crate::render::Reserve for Charge {
    fn reserve(&self, bytes: u64) -> Result<(), String> {
        self.grow(bytes).map_err(|e| e.to_string())
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
    fn charges_are_refused_past_the_budget_and_given_back() {
        let budget = MemoryBudget::new(Some(1000), 1.0);
        let a = budget.charge("t");
        let b = budget.charge("u");
        assert_eq!(a.resize(600), Ok(0));
        assert_eq!(
            b.resize(500),
            Err(Exhausted {
                needed: 500,
                used: 600,
                budget: 1000,
                limit: Limit::Node,
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
        let c = budget.charge("t");
        c.force(5000);
        assert_eq!(budget.used(), 5000);
        assert!(budget.charge("t").resize(1).is_err());
    }

    /// A tenant that filled its share is refused; another tenant's small
    /// charge still fits.
    #[test]
    fn no_tenant_holds_more_than_its_share() {
        let budget = MemoryBudget::new(Some(1000), 0.5);
        let hog = budget.charge("hog");
        assert!(hog.resize(500).is_ok());
        let more = hog.reservation();
        let refused = more.grow(1).unwrap_err();
        assert_eq!(refused.limit, Limit::Namespace("hog".to_owned()));
        assert!(refused.to_string().contains("--namespace-memory-share"));
        let other = budget.charge("quiet");
        assert!(other.resize(100).is_ok());
        assert_eq!(budget.used_by("hog"), 500);
        assert_eq!(budget.used_by("quiet"), 100);
        drop(hog);
        assert_eq!(budget.used_by("hog"), 0);
        assert!(more.grow(500).is_ok());
    }

    #[test]
    fn an_unlimited_budget_counts_but_never_refuses() {
        let budget = MemoryBudget::new(None, 0.5);
        let a = budget.charge("t");
        assert_eq!(a.resize(u64::MAX / 2), Ok(0));
        assert_eq!(budget.used(), u64::MAX / 2);
    }
}
