//! [`VolumeManager`]: the volumes of the node and what every operation on
//! them shares: the volume map, one operation per volume, which target
//! belongs to which volume, the ports, and persisting a volume's record.
//! The operations themselves have files of their own: `publish.rs`,
//! `unpublish.rs`, `restore.rs` and `refresh.rs`.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Error;
use super::guard::OperationGuards;
use super::live::LiveVolume;
use super::materialise::Materialiser;
use super::memory::pressure::MemoryPressure;
use super::memory::{MemoryBudget, cost};
use super::outage::Outages;
use super::ports::{RecordStore, SecretSource};
use super::record::{Phase, SalvagedToken, Unreadable, VolumeRecord};
use super::request::{self, CheckedPublish, CheckedUnpublish, PublishRequest};
use super::spec::{SpecDefaults, VolumeId};
use crate::metrics::Metrics;
use crate::refresh::RefreshScheduler;
use crate::render::Renderer;
use crate::storage::{VolumeRoots, selinux};

/// Node-wide settings of the volume manager.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// `--kubelet-dir`: targets must lie under its `pods/`.
    pub kubelet_dir: PathBuf,
    /// Defaults and the Vault allow-list applied to every volume.
    pub spec_defaults: SpecDefaults,
    /// Largest payload per volume (under half of a volume's tmpfs, so the
    /// old and new file sets both fit during an atomic swap).
    pub max_payload_bytes: u64,
    /// The node's memory budget for volumes in bytes (`None`: unlimited).
    pub memory_budget_bytes: Option<u64>,
    /// `--namespace-memory-share`: the part of the budget one pod
    /// namespace may hold (0 to 1).
    pub namespace_memory_share: f64,
    /// The driver's memory cgroup, watched as a second line of defence.
    pub memory_pressure: MemoryPressure,
    /// The SELinux context every volume's tmpfs gets (`--selinux-context`,
    /// resolved), unless a request's `mount_flags` name one.
    pub selinux_context: Option<selinux::Context>,
    /// `--publish-timeout`: how long a publish may wait for Vault (logins,
    /// reads and their retries) and for a refresh holding the volume,
    /// before it is rolled back. Kubelet gives every call 2 minutes.
    pub publish_timeout: Duration,
    /// How long an unpublish waits, once the target is gone, for the
    /// volume's Vault clean-up (which may wait behind a refresh in flight)
    /// before answering; the clean-up then finishes in the background.
    pub unpublish_wait: Duration,
    /// `--refresh-timeout`: longest time one refresh of one volume may
    /// take; after it the refresh gives up, keeps the files and is retried
    /// with backoff.
    pub refresh_timeout: Duration,
    /// `--min-refresh-interval`: floor for static re-read intervals.
    pub min_refresh_interval: Duration,
}

impl ManagerConfig {
    /// The largest payload a volume of `tmpfs_size_bytes` holds: under
    /// half the tmpfs, so the old and new file sets both fit during an
    /// atomic swap.
    pub fn payload_limit(tmpfs_size_bytes: u64) -> u64 {
        (tmpfs_size_bytes / 2).saturating_sub(4096)
    }
}

/// What the volume core is given to reach the world (see
/// [`super::ports`]): chosen by whoever builds the manager.
#[derive(Debug, Clone)]
pub struct Ports {
    /// Where secrets come from.
    pub vault: Arc<dyn SecretSource>,
    /// Where records are kept.
    pub store: Arc<dyn RecordStore>,
    /// Where files are held.
    pub roots: Arc<dyn VolumeRoots>,
}

/// What a successful publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    /// A new volume was mounted and rendered.
    Published,
    /// A republish of a managed volume: identity refreshed, volume checked.
    Republished,
}

/// One managed volume: its live state behind the lock that serialises the
/// CSI calls and refreshes on it (`None` once unpublished).
pub(super) struct Volume {
    pub state: tokio::sync::Mutex<Option<LiveVolume>>,
}

/// Owns every volume on the node. See the module docs of [`super`] for
/// the rules.
pub struct VolumeManager {
    pub(super) config: ManagerConfig,
    pub(super) vault: Arc<dyn SecretSource>,
    pub(super) store: Arc<dyn RecordStore>,
    pub(super) roots: Arc<dyn VolumeRoots>,
    pub(super) materialiser: Materialiser,
    pub(super) metrics: Arc<Metrics>,
    pub(super) scheduler: RefreshScheduler<VolumeId>,
    /// Background work (signals to apps, revocations, outage watches).
    pub(super) tracker: TaskTracker,
    /// The node's memory budget for volumes.
    pub(super) memory: Arc<MemoryBudget>,
    pub(super) guards: Arc<OperationGuards>,
    pub(super) outages: Arc<Outages>,
    /// Fired at shutdown: publishes still waiting for Vault stop and roll
    /// back, so the driver exits inside its grace period.
    pub(super) stopping: CancellationToken,
    volumes: Mutex<HashMap<VolumeId, Arc<Volume>>>,
    /// Volumes whose records could not be read or resumed: left mounted
    /// for their pods, adopted by their next publish, which revokes the
    /// tokens salvaged here.
    unread: Mutex<HashMap<VolumeId, Unreadable>>,
    /// Which volume each target belongs to: a target is bound to the
    /// volume id that mounted it, from the start of its publish (or its
    /// restore) to the end of its unpublish.
    targets: Mutex<HashMap<PathBuf, VolumeId>>,
}

impl std::fmt::Debug for VolumeManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeManager")
            .field("volumes", &self.volume_count())
            .field("roots", &self.roots.kind())
            .finish_non_exhaustive()
    }
}

impl VolumeManager {
    /// A manager reaching the world through `ports`, scheduling refreshes
    /// on `scheduler` and running background work on `tracker`.
    pub fn new(
        config: ManagerConfig,
        ports: Ports,
        scheduler: RefreshScheduler<VolumeId>,
        metrics: Arc<Metrics>,
        tracker: TaskTracker,
    ) -> Self {
        let memory = MemoryBudget::with_gauge(
            config.memory_budget_bytes,
            config.namespace_memory_share,
            metrics.memory_budget(config.memory_budget_bytes),
        );
        let stopping = CancellationToken::new();
        let materialiser = Materialiser {
            vault: Arc::clone(&ports.vault),
            renderer: Arc::new(Renderer::new()),
            roots: Arc::clone(&ports.roots),
            metrics: Arc::clone(&metrics),
            max_payload_bytes: config.max_payload_bytes,
            min_interval: config.min_refresh_interval,
        };
        let outages = Outages::new(
            Arc::clone(&ports.vault),
            scheduler.clone(),
            tracker.clone(),
            stopping.clone(),
        );
        Self {
            config,
            vault: ports.vault,
            store: ports.store,
            roots: ports.roots,
            materialiser,
            metrics,
            scheduler,
            tracker,
            memory,
            guards: Arc::default(),
            outages,
            stopping,
            volumes: Mutex::new(HashMap::new()),
            unread: Mutex::new(HashMap::new()),
            targets: Mutex::new(HashMap::new()),
        }
    }

    /// The same manager compiling and rendering with `renderer` (tests run
    /// it inline, under paused time).
    #[cfg(test)]
    pub(super) fn with_renderer(mut self, renderer: Arc<Renderer>) -> Self {
        self.materialiser.renderer = renderer;
        self
    }

    /// Makes publishes still waiting for Vault (or for a refresh holding
    /// their volume) give up and roll back: called during shutdown so the
    /// work in flight ends inside `--shutdown-timeout`.
    pub fn stop_publishes(&self) {
        self.stopping.cancel();
    }

    /// Checks a `NodePublishVolume` request against the node's settings,
    /// before anything is claimed or spawned.
    pub fn check_publish(&self, request: &PublishRequest) -> Result<CheckedPublish, Error> {
        request.check(&self.config.kubelet_dir, &self.config.spec_defaults)
    }

    /// Checks a `NodeUnpublishVolume` request's fields.
    pub fn check_unpublish(
        &self,
        volume_id: &str,
        target_path: &str,
    ) -> Result<CheckedUnpublish, Error> {
        request::check_unpublish(volume_id, target_path, &self.config.kubelet_dir)
    }

    /// How many volumes are managed.
    pub fn volume_count(&self) -> usize {
        self.volumes.lock().expect("volume map poisoned").len()
    }

    /// Releases what the driver holds for itself (a tmpfs root's private
    /// mount directory) when it stops; volumes stay for their pods.
    pub fn release_private_mounts(&self) {
        self.roots.close();
    }

    pub(super) fn volume(&self, id: &VolumeId) -> Option<Arc<Volume>> {
        self.volumes
            .lock()
            .expect("volume map poisoned")
            .get(id)
            .cloned()
    }

    /// Starts managing a volume: its metrics, its place in the map and, if
    /// it refreshes, its first deadline.
    pub(super) fn adopt(&self, volume: LiveVolume) {
        let next = volume.spec().refresh.then(|| volume.next_due()).flatten();
        self.publish_schedule_metrics(&volume, next);
        let id = volume.id.clone();
        self.bind_target(volume.placement.target.as_path(), &id);
        self.volumes.lock().expect("volume map poisoned").insert(
            id.clone(),
            Arc::new(Volume {
                state: tokio::sync::Mutex::new(Some(volume)),
            }),
        );
        if let Some(at) = next {
            self.scheduler.schedule(id, at);
        }
        self.metrics.set_volumes(self.volume_count());
    }

    /// Stops managing a volume; returns it if it was managed.
    pub(super) fn forget(&self, id: &VolumeId) -> Option<Arc<Volume>> {
        let volume = self.volumes.lock().expect("volume map poisoned").remove(id);
        self.scheduler.cancel(id.clone());
        self.outages.forget(id);
        self.metrics.set_volumes(self.volume_count());
        volume
    }

    /// Binds `target` to `id` unless another volume holds it; returns the
    /// volume that does.
    pub(super) fn bind_target(&self, target: &Path, id: &VolumeId) -> Option<VolumeId> {
        let mut targets = self.targets.lock().expect("target map poisoned");
        match targets.get(target) {
            Some(holder) if holder != id => Some(holder.clone()),
            _ => {
                targets.insert(target.to_path_buf(), id.clone());
                None
            }
        }
    }

    /// Releases `target` if `id` holds it.
    pub(super) fn unbind_target(&self, target: &Path, id: &VolumeId) {
        let mut targets = self.targets.lock().expect("target map poisoned");
        if targets.get(target) == Some(id) {
            targets.remove(target);
        }
    }

    /// The volume bound to `target`, if any.
    pub(super) fn target_holder(&self, target: &Path) -> Option<VolumeId> {
        self.targets
            .lock()
            .expect("target map poisoned")
            .get(target)
            .cloned()
    }

    /// Takes `id` out of the volumes known from unreadable records.
    pub(super) fn take_unread(&self, id: &VolumeId) -> Option<Unreadable> {
        let mut unread = self.unread.lock().expect("unread map poisoned");
        let taken = unread.remove(id);
        self.metrics.set_unadopted(unread.len());
        taken
    }

    /// Adds a volume known only from a record that could not be read or
    /// resumed: it stays as it is (its target bound to it) until its next
    /// publish adopts it.
    pub(super) fn keep_unread(&self, id: VolumeId, unreadable: Unreadable) {
        if let Some(target) = &unreadable.target {
            self.bind_target(target, &id);
        }
        let mut unread = self.unread.lock().expect("unread map poisoned");
        unread.insert(id, unreadable);
        self.metrics.set_unadopted(unread.len());
    }

    /// Writes the volume's record if it changed since it was last written.
    pub(super) fn persist(&self, volume: &mut LiveVolume, phase: Phase) -> Result<(), Error> {
        self.persist_with(volume, phase, &[])
    }

    /// [`VolumeManager::persist`] of a record that also keeps `salvaged`
    /// tokens (an adopting publish's).
    pub(super) fn persist_with(
        &self,
        volume: &mut LiveVolume,
        phase: Phase,
        salvaged: &[SalvagedToken],
    ) -> Result<(), Error> {
        // Serialising holds a copy of the record: its worst case (answers
        // escaped at most twice, attributes already bounded) is reserved
        // first; the stored record is then charged at its real size.
        let buffer = volume.memory.reservation();
        buffer.resize(2 * volume.kept_bytes() + volume.cost.attributes + RECORD_SLACK)?;
        let bytes = VolumeRecord::of(volume, phase, salvaged).encode();
        let digest = digest(&bytes);
        if volume.recorded == Some(digest) {
            return Ok(());
        }
        self.store.save(&volume.id, &bytes)?;
        volume.recorded = Some(digest);
        volume.cost.record = cost::record_cost(bytes.len() as u64);
        volume.force_charge();
        Ok(())
    }

    /// [`VolumeManager::persist`], logging a failure (a refresh goes on).
    pub(super) fn persist_logged(&self, volume: &mut LiveVolume, phase: Phase) {
        if let Err(error) = self.persist(volume, phase) {
            tracing::error!(volume.id = %volume.id, %error, "Could not persist the volume's state");
        }
    }
}

/// Room in a record beyond its answers and attributes: tokens, deadlines,
/// requests, field names.
const RECORD_SLACK: u64 = 64 * 1024;

/// A digest of a record's bytes, to skip writing an unchanged record.
fn digest(bytes: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}
