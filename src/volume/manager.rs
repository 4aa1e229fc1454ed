//! [`VolumeManager`]: the volumes of the node, and the CSI calls on them
//! (publish, republish, unpublish) and restart (restore). It owns the
//! volume map, one operation per volume, rollback and the bounds on every
//! wait; the work on a volume itself is the [`Pipeline`]'s.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::guard::{Operation, OperationGuards};
use super::live::LiveVolume;
use super::memory::MemoryBudget;
use super::pipeline::{Pipeline, WriteAt, dir_mode};
use super::record::{Phase, SalvagedToken, StateStore, Unreadable, VolumeRecord};
use super::request::{self, CheckedPublish, CheckedUnpublish, PublishRequest};
use super::spec::{self, SpecDefaults, TargetPath, VolumeId};
use super::{Error, off_runtime};
use crate::metrics::{Metrics, PublishStep, VolumeLabels};
use crate::refresh::RefreshScheduler;
use crate::render::{RenderedFiles, Renderer};
use crate::storage::selinux;
use crate::storage::tmpfs;
use crate::storage::{PlainDirectories, Prepared, RootOptions, TmpfsRoots, VolumeRoots};

/// Node-wide settings of the volume manager.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// `--kubelet-dir`: targets must lie under its `pods/`.
    pub kubelet_dir: PathBuf,
    /// Defaults and the Vault allow-list applied to every volume.
    pub spec_defaults: SpecDefaults,
    /// Size limit of each volume's tmpfs.
    pub tmpfs_size_bytes: u64,
    /// Inode limit of each volume's tmpfs.
    pub tmpfs_inodes: u64,
    /// Attempts per Vault call during a publish (transient errors only).
    pub publish_attempts: u32,
    /// Time allowed to revoke a volume's token and leases on unpublish.
    pub revoke_timeout: Duration,
    /// Write volumes as plain directories instead of tmpfs mounts: for
    /// unprivileged demos and tests only (files land on disk, `readOnly` is
    /// not enforced). Never set in production.
    pub plain_directories: bool,
    /// The node's memory budget for volumes in bytes (`None`: unlimited).
    pub memory_budget_bytes: Option<u64>,
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
}

impl ManagerConfig {
    /// Largest payload per volume: under half the tmpfs, so the old and new
    /// file sets both fit during an atomic swap.
    pub fn max_payload_bytes(&self) -> u64 {
        self.tmpfs_size_bytes / 2 - 4096
    }
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

/// Owns every volume on the node. See the module docs for the rules.
pub struct VolumeManager {
    config: ManagerConfig,
    work: Pipeline,
    volumes: Mutex<HashMap<VolumeId, Arc<Volume>>>,
    /// Volumes whose records could not be read at start-up: left mounted
    /// for their pods, adopted by their next publish, which revokes the
    /// token salvaged here.
    unread: Mutex<HashMap<VolumeId, Unreadable>>,
    /// The node's memory budget for volumes.
    memory: Arc<MemoryBudget>,
    guards: Arc<OperationGuards>,
    /// Fired at shutdown: publishes still waiting for Vault stop and roll
    /// back, so the driver exits inside its grace period.
    stopping: CancellationToken,
}

impl std::fmt::Debug for VolumeManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeManager")
            .field("volumes", &self.volume_count())
            .field("roots", &self.work.roots.kind())
            .finish_non_exhaustive()
    }
}

impl VolumeManager {
    /// A manager writing state to `store`, scheduling refreshes on
    /// `scheduler` and running background work (revocations) on `tracker`.
    /// Volumes are tmpfs mounts, or plain directories when the config says
    /// so: the only place the two are told apart.
    pub fn new(
        config: ManagerConfig,
        http: reqwest::Client,
        store: StateStore,
        scheduler: RefreshScheduler<VolumeId>,
        metrics: Arc<Metrics>,
        tracker: TaskTracker,
    ) -> Self {
        let memory = MemoryBudget::with_gauge(
            config.memory_budget_bytes,
            metrics.memory_budget(config.memory_budget_bytes),
        );
        let roots: Arc<dyn VolumeRoots> = if config.plain_directories {
            Arc::new(PlainDirectories)
        } else {
            Arc::new(TmpfsRoots::new(
                store.dir().join(PRIVATE_MOUNTS),
                config.tmpfs_size_bytes,
                config.tmpfs_inodes,
            ))
        };
        let work = Pipeline {
            http,
            allowed_redirects: config.spec_defaults.allowed_vault_addrs.clone(),
            renderer: Arc::new(Renderer::new()),
            metrics,
            scheduler,
            roots,
            store,
            tracker,
            publish_attempts: config.publish_attempts,
            max_payload_bytes: config.max_payload_bytes(),
            revoke_timeout: config.revoke_timeout,
        };
        Self {
            memory,
            config,
            work,
            volumes: Mutex::new(HashMap::new()),
            unread: Mutex::new(HashMap::new()),
            guards: Arc::default(),
            stopping: CancellationToken::new(),
        }
    }

    /// The per-volume work, for the refresh.
    pub(super) fn pipeline(&self) -> &Pipeline {
        &self.work
    }

    /// Makes publishes still waiting for Vault (or for a refresh holding
    /// their volume) give up and roll back: called during shutdown so the
    /// work in flight ends inside `--shutdown-timeout`.
    pub fn stop_publishes(&self) {
        self.stopping.cancel();
    }

    /// Checks a NodePublishVolume request against the node's settings,
    /// before anything is claimed or spawned.
    pub fn check_publish(&self, request: &PublishRequest) -> Result<CheckedPublish, Error> {
        request.check(&self.config.kubelet_dir, &self.config.spec_defaults)
    }

    /// Checks a NodeUnpublishVolume request's fields.
    pub fn check_unpublish(
        &self,
        volume_id: &str,
        target_path: &str,
    ) -> Result<CheckedUnpublish, Error> {
        request::check_unpublish(volume_id, target_path, &self.config.kubelet_dir)
    }

    /// NodePublishVolume with a bounded answer. The publish runs on the task
    /// tracker, so the gRPC call being dropped (kubelet's deadline, a
    /// cancelled client: tonic drops the handler) never cuts it half-way: it
    /// ends on its own, published or rolled back with every Vault token it
    /// obtained revoked, within `--publish-timeout`. The caller gets its
    /// outcome, or `DeadlineExceeded` at `answer_by` (kubelet's retry then
    /// sees the outcome: `ABORTED` while it still runs, a republish after).
    pub async fn publish_by(
        self: &Arc<Self>,
        request: CheckedPublish,
        answer_by: Instant,
    ) -> Result<PublishOutcome, Error> {
        let started = Instant::now();
        let manager = Arc::clone(self);
        let work = self
            .work
            .tracker
            .spawn(async move { manager.publish(request, started).await });
        // The work answers by its own bound; this margin lets a rolled-back
        // publish report why rather than a bare deadline.
        let answer_by = answer_by.min(started + self.config.publish_timeout + ANSWER_MARGIN);
        answer_within(answer_by, work).await
    }

    /// NodeUnpublishVolume with a bounded answer: the target is unmounted
    /// and removed first; the Vault clean-up (which may wait behind a
    /// refresh in flight) runs on the task tracker and is awaited until
    /// `answer_by` or `unpublish_wait`, whichever is sooner. The pod never
    /// waits in Terminating on a slow Vault, and a cancelled call never
    /// leaves a refresh to resurrect the volume's record.
    pub async fn unpublish_by(
        self: &Arc<Self>,
        request: CheckedUnpublish,
        answer_by: Instant,
    ) -> Result<(), Error> {
        let answer_by = answer_by.min(Instant::now() + self.config.unpublish_wait);
        let volume_id = request.id.to_string();
        let Some(cleanup) = self.unpublish_start(request)? else {
            return Ok(());
        };
        if let Ok(joined) = tokio::time::timeout_at(answer_by, cleanup).await {
            return joined_result(joined);
        }
        tracing::info!(
            volume.id = volume_id,
            "The volume is unmounted; revoking its Vault token waits for a refresh in flight and finishes in the background"
        );
        Ok(())
    }

    /// How many volumes are managed.
    pub fn volume_count(&self) -> usize {
        self.volumes.lock().expect("volume map poisoned").len()
    }

    pub(super) fn volume(&self, id: &VolumeId) -> Option<Arc<Volume>> {
        self.volumes
            .lock()
            .expect("volume map poisoned")
            .get(id)
            .cloned()
    }

    /// NodePublishVolume itself, bounded by `--publish-timeout` wherever it
    /// waits on Vault or on the volume's lock. Run through
    /// [`VolumeManager::publish_by`], never directly from a gRPC handler.
    async fn publish(
        &self,
        request: CheckedPublish,
        started: Instant,
    ) -> Result<PublishOutcome, Error> {
        let _guard = self.guards.begin(&request.id, Operation::Publish)?;
        tmpfs::check_target(
            &self.config.kubelet_dir.join("pods"),
            request.target.as_path(),
        )?;
        if let Some(volume) = self.volume(&request.id) {
            return self.republish(&volume, request, started).await;
        }
        self.publish_new(request, started).await?;
        Ok(PublishOutcome::Published)
    }

    async fn republish(
        &self,
        volume: &Volume,
        request: CheckedPublish,
        started: Instant,
    ) -> Result<PublishOutcome, Error> {
        let id = &request.id;
        // A refresh holding the volume may wait on a slow Vault: kubelet is
        // told to retry rather than kept waiting past the publish bound.
        let deadline = started + self.config.publish_timeout;
        let mut guard = self
            .bounded(deadline, volume.state.lock())
            .await
            .map_err(|_| Error::OperationPending {
                volume_id: id.to_string(),
            })?;
        let Some(live) = guard.as_mut() else {
            return Err(Error::OperationPending {
                volume_id: id.to_string(),
            });
        };
        if live.target != request.target {
            return Err(Error::TargetMismatch {
                volume_id: id.to_string(),
                existing: live.target.as_path().display().to_string(),
            });
        }
        if live.fingerprint != request.fingerprint {
            return Err(Error::AlreadyExists {
                volume_id: id.to_string(),
            });
        }
        let newer = live
            .identity
            .as_ref()
            .is_none_or(|old| request.identity.expires_at() >= old.expires_at());
        if newer {
            live.identity = Some(request.identity);
        }
        let mounted = self.work.roots.is_root(live.target.as_path())?;
        let needs_attention = !mounted
            || live.degraded
            || live
                .session
                .as_ref()
                .is_none_or(|s| s.needs_login(Instant::now()));
        self.work.persist(id, live, Phase::Published)?;
        if !mounted {
            tracing::warn!(volume.id = %id, "The volume's root is gone; creating and rendering it again");
            self.recreate(id, live, deadline).await?;
        }
        if needs_attention && live.spec.refresh {
            self.work.scheduler.schedule(id.clone(), Instant::now());
        }
        Ok(PublishOutcome::Republished)
    }

    async fn publish_new(&self, new: CheckedPublish, started: Instant) -> Result<(), Error> {
        let work = &self.work;
        // Compiling collects the `secret` calls and checks their paths and
        // count before the pod's token is sent anywhere.
        let templates = work.compile(&new.spec.templates).await?;
        let wanted = templates.requests().to_vec();
        let labels = VolumeLabels {
            pod_namespace: new.pod.namespace.clone(),
            pod_name: new.pod.name.clone(),
            volume_id: new.id.to_string(),
        };
        let mut volume = LiveVolume {
            target: new.target,
            readonly: new.readonly,
            fs_group: new.fs_group,
            selinux_context: new
                .selinux_label
                .map(selinux::Context::required)
                .or_else(|| self.config.selinux_context.clone()),
            fingerprint: new.fingerprint,
            attributes: new.attributes,
            client: work.client_for(&new.spec),
            spec: new.spec,
            pod: new.pod,
            labels,
            templates,
            identity: Some(new.identity),
            session: None,
            secrets: Vec::new(),
            token_failures: 0,
            token_retry_at: None,
            degraded: false,
            memory: self.memory.charge(),
        };
        let (id, mut steps) = (new.id, StepClock::new(started));
        // The record (phase `publishing`, so a crash from here on is undone
        // at start-up) and the target do not depend on Vault: they are made
        // ready on the blocking pool while the login and reads are in flight.
        let (saved, on_record) = tokio::sync::oneshot::channel::<()>();
        let prepare = self.prepare_off_thread(&id, &volume, saved);
        steps.lap(PublishStep::Checks);
        let mut answered = None;
        let fetch = async {
            let identity = volume.identity.as_ref().expect("set above");
            let session = work
                .login(&volume.client, &volume.spec, identity, None)
                .await?;
            volume.session = Some(session);
            // The token goes on record before anything is fetched with it
            // (after the first record, never racing it): a driver killed from
            // here on revokes it, and the leases it owns, at its next start.
            if on_record.await.is_ok() {
                work.persist(&id, &volume, Phase::Publishing)?;
            }
            let files = work
                .fetch_and_render(&mut volume, &HashSet::default(), true, Some(wanted))
                .await;
            answered = Some(Instant::now());
            files
        };
        // Vault's wait is bounded; what was obtained before the bound (the
        // token, whose revocation ends its leases) is revoked by the rollback.
        let timeout = self.config.publish_timeout;
        let fetch = async {
            self.bounded(started + timeout, fetch)
                .await
                .map_err(|stopped| stopped.into_error(timeout))?
        };
        let (prepared, fetched) = tokio::join!(prepare, fetch);
        if let Some(at) = answered {
            steps.lap_at(PublishStep::Vault, at);
        }
        steps.lap(PublishStep::Mount);
        let (prepared, files) = match (prepared, fetched) {
            (Ok(prepared), Ok(files)) => (prepared, files),
            // Vault's answer explains more to the pod's author than a
            // failure of the node, so it wins when both fail.
            (prepared, Err(error)) => {
                let keep = prepared.as_ref().is_ok_and(Prepared::is_existing);
                self.rollback(&id, &volume, keep);
                return Err(error);
            }
            (Err(error), Ok(_)) => {
                self.rollback(&id, &volume, false);
                return Err(error);
            }
        };
        let existing = prepared.is_existing();
        let written = self
            .write_first(&id, &volume, prepared, files)
            .and_then(|()| {
                steps.lap(PublishStep::Write);
                work.persist(&id, &volume, Phase::Published)
            });
        if let Err(error) = written {
            self.rollback(&id, &volume, existing);
            return Err(error);
        }
        steps.lap(PublishStep::Record);
        work.metrics.observe_publish_steps(&steps.laps);
        if existing {
            self.replaced_unread(&id);
        }
        self.adopt(id, volume);
        work.metrics.set_volumes(self.volume_count());
        Ok(())
    }

    /// Saves the first record (then says so on `saved`) and makes the
    /// target ready, on the blocking pool.
    fn prepare_off_thread(
        &self,
        id: &VolumeId,
        volume: &LiveVolume,
        saved: tokio::sync::oneshot::Sender<()>,
    ) -> impl Future<Output = Result<Prepared, Error>> + use<> {
        let record = VolumeRecord::of(id, volume, Phase::Publishing);
        let (store, roots) = (self.work.store.clone(), Arc::clone(&self.work.roots));
        let (target, id) = (volume.target.as_path().to_path_buf(), id.to_string());
        let options = root_options(volume);
        let work = off_runtime(move || {
            store.save(&record)?;
            let _ = saved.send(());
            Ok(roots.prepare(&target, &id, &options)?)
        });
        async move { work.await.and_then(|prepared| prepared) }
    }

    /// Takes `id` out of the volumes known from unreadable records.
    fn take_unread(&self, id: &VolumeId) -> Option<Unreadable> {
        let mut unread = self.unread.lock().expect("unread map poisoned");
        let taken = unread.remove(id);
        self.work.metrics.set_unadopted(unread.len());
        taken
    }

    /// Adds a volume known only from a record that could not be read or
    /// resumed: it stays as it is until its next publish adopts it.
    fn keep_unread(&self, id: VolumeId, unreadable: Unreadable) {
        let mut unread = self.unread.lock().expect("unread map poisoned");
        unread.insert(id, unreadable);
        self.work.metrics.set_unadopted(unread.len());
    }

    /// A volume whose record could not be read at start-up was adopted by
    /// this publish: the token its old record held (if it could be
    /// salvaged) is revoked, with every lease it created, so nothing is
    /// orphaned.
    fn replaced_unread(&self, id: &VolumeId) {
        let Some(unread) = self.take_unread(id) else {
            return;
        };
        match unread.salvaged {
            Some(salvaged) => {
                tracing::info!(volume.id = %id, "Adopted a volume whose record was unreadable; revoking the Vault token it held");
                self.revoke_salvaged(id, salvaged);
            }
            None => {
                tracing::warn!(volume.id = %id, "Adopted a volume whose record was unreadable; its old Vault token could not be salvaged and ends with its TTL");
            }
        }
    }

    /// Starts managing a volume: its metrics, its place in the map and, if
    /// it refreshes, its first deadline.
    fn adopt(&self, id: VolumeId, volume: LiveVolume) {
        let next = volume.spec.refresh.then(|| volume.next_due()).flatten();
        self.work.publish_schedule_metrics(&volume, next);
        self.volumes.lock().expect("volume map poisoned").insert(
            id.clone(),
            Arc::new(Volume {
                state: tokio::sync::Mutex::new(Some(volume)),
            }),
        );
        if let Some(at) = next {
            self.work.scheduler.schedule(id, at);
        }
    }

    /// Writes the first file set into a prepared target, then seals it. A
    /// new tmpfs is filled while staged, then sealed read-only and
    /// attached: the pod's view is read-only in every mount namespace from
    /// its first instant, whatever the volume's `readOnly` says, because a
    /// pod that could write into its volume could plant links for the
    /// driver, as root, to follow on the next update. A target that already
    /// held a root (left by an earlier run) is updated in place, so a
    /// container already using it sees the files.
    fn write_first(
        &self,
        id: &VolumeId,
        volume: &LiveVolume,
        prepared: Prepared,
        files: RenderedFiles,
    ) -> Result<(), Error> {
        if prepared.is_existing() {
            self.work.write_files(id, volume, files, WriteAt::Sealed)?;
            return Ok(());
        }
        self.work
            .write_files(id, volume, files, WriteAt::Fresh(prepared.path()))?;
        Ok(prepared.seal(volume.target.as_path())?)
    }

    /// Re-creates a volume whose root disappeared, from its kept answers
    /// (fetching only what it has none for).
    async fn recreate(
        &self,
        id: &VolumeId,
        volume: &mut LiveVolume,
        deadline: Instant,
    ) -> Result<(), Error> {
        let timeout = self.config.publish_timeout;
        let files = self
            .bounded(
                deadline,
                self.work
                    .fetch_and_render(volume, &HashSet::default(), true, None),
            )
            .await
            .map_err(|stopped| stopped.into_error(timeout))??;
        self.work.persist(id, volume, Phase::Publishing)?;
        let prepared =
            self.work
                .roots
                .prepare(volume.target.as_path(), id.as_str(), &root_options(volume))?;
        self.write_first(id, volume, prepared, files)?;
        self.work.persist(id, volume, Phase::Published)
    }

    /// Undoes a failed publish: no root (unless `keep_target`: it was
    /// there before this publish and may be serving the pod), no directory,
    /// no record, and the Vault token revoked.
    fn rollback(&self, id: &VolumeId, volume: &LiveVolume, keep_target: bool) {
        if !keep_target && let Err(error) = self.work.roots.remove(volume.target.as_path()) {
            tracing::error!(volume.id = %id, %error, "Could not undo a failed publish; unpublish will retry");
        }
        let _ = self.work.store.remove(id);
        if let Some(session) = &volume.session {
            self.work
                .revoke_in_background(volume.client.clone(), session.token.clone());
        }
    }

    /// NodeUnpublishVolume, first half: removes the target (the pod's view
    /// goes first, without waiting for a refresh in flight), forgets the
    /// volume and starts its clean-up (token and leases revoked, record
    /// removed) on the task tracker. `None` when a clean-up for the volume
    /// is already running. Unknown volumes and missing targets are OK.
    fn unpublish_start(
        self: &Arc<Self>,
        request: CheckedUnpublish,
    ) -> Result<Option<tokio::task::JoinHandle<Result<(), Error>>>, Error> {
        let CheckedUnpublish { id, target } = request;
        let guard = match self.guards.begin(&id, Operation::Unpublish) {
            Ok(guard) => guard,
            // A retry of an unpublish whose clean-up still waits behind a
            // refresh: the target is gone, the rest finishes on its own.
            Err(_) if self.guards.running(&id) == Some(Operation::Unpublish) => {
                self.work.roots.remove(target.as_path())?;
                return Ok(None);
            }
            Err(busy) => return Err(busy),
        };
        // Nothing below awaits until the clean-up is spawned: a cancelled
        // call cannot stop between forgetting the volume and revoking.
        // If removing fails, the volume stays managed and kubelet retries.
        self.work.roots.remove(target.as_path())?;
        let volume = self
            .volumes
            .lock()
            .expect("volume map poisoned")
            .remove(&id);
        self.work.scheduler.cancel(id.clone());
        self.work.metrics.set_volumes(self.volume_count());
        let manager = Arc::clone(self);
        Ok(Some(self.work.tracker.spawn(async move {
            let _guard = guard;
            manager.retire(&id, volume).await
        })))
    }

    /// NodeUnpublishVolume, second half: waits for a refresh holding the
    /// volume (so its last token is the one revoked and its last record
    /// write comes before the removal), revokes and removes the record.
    async fn retire(&self, id: &VolumeId, volume: Option<Arc<Volume>>) -> Result<(), Error> {
        let mut removed = Ok(());
        if let Some(volume) = volume {
            let live = volume.state.lock().await.take();
            if let Some(live) = live {
                removed = self.work.roots.remove(live.target.as_path());
                self.work.revoke(&live).await;
                self.work.metrics.forget_volume(&live.labels);
            }
        } else if let Some(record) = self.work.store.load(id) {
            self.revoke_record(&record).await;
        }
        if let Some(salvaged) = self.take_unread(id).and_then(|u| u.salvaged) {
            self.revoke_salvaged(id, salvaged);
        }
        removed?;
        self.work.store.remove(id)
    }

    /// Runs `work` until `deadline` or shutdown, whichever comes first.
    async fn bounded<T>(
        &self,
        deadline: Instant,
        work: impl Future<Output = T>,
    ) -> Result<T, Stopped> {
        tokio::select! {
            result = tokio::time::timeout_at(deadline, work) => result.map_err(|_| Stopped::Deadline),
            () = self.stopping.cancelled() => Err(Stopped::Shutdown),
        }
    }

    /// Re-adopts the volumes recorded in the state directory after a
    /// restart: finished publishes resume their schedules, re-rendering
    /// from the Vault answers they kept (no login, no fetch of what is not
    /// due); unfinished ones are undone. A record that cannot be read
    /// leaves its volume as it is, for its next publish to adopt. Returns
    /// how many volumes are managed.
    pub async fn restore(&self) -> Result<usize, Error> {
        self.work.roots.open()?;
        let loaded = self.work.store.load_all()?;
        for unreadable in loaded.unreadable {
            let Ok(id) = VolumeId::parse(&unreadable.volume_id) else {
                continue;
            };
            tracing::error!(volume.id = %id, reason = %unreadable.reason, salvaged_token = unreadable.salvaged.is_some(), "A volume record cannot be read; the volume stays as it is (mounted, serving its pod, not refreshed) until kubelet's next publish of it adopts it");
            self.keep_unread(id, unreadable);
        }
        for record in loaded.records {
            let Ok(id) = VolumeId::parse(&record.volume_id) else {
                continue;
            };
            self.restore_one(id, &record).await?;
        }
        let count = self.volume_count();
        self.work.metrics.set_volumes(count);
        Ok(count)
    }

    async fn restore_one(&self, id: VolumeId, record: &VolumeRecord) -> Result<(), Error> {
        // The record is the driver's own, but nothing it names is touched
        // unless it passes the checks a publish applies: a target outside
        // kubelet's pods directory, or reached through a symlink, is never
        // unmounted, removed or written.
        let target = match self.checked_target(record) {
            Ok(target) => target,
            Err(error) => {
                tracing::error!(volume.id = %id, %error, "Ignoring a state record whose target path fails the publish checks; nothing it names is touched");
                return self.work.store.remove(&id);
            }
        };
        let roots = &self.work.roots;
        let mounted = roots.is_root(target.as_path()).unwrap_or(false);
        if record.phase == Phase::Publishing || !mounted {
            tracing::info!(volume.id = %id, "Cleaning up a volume left unfinished or unmounted by a previous run");
            if let Err(error) = roots.remove(target.as_path()) {
                tracing::warn!(volume.id = %id, %error, "Could not clean up the volume's target");
            }
            self.revoke_record(record).await;
            return self.work.store.remove(&id);
        }
        let defaults = match record.spec_defaults(&self.config.spec_defaults) {
            Ok(defaults) => defaults,
            Err(addr) => {
                tracing::error!(volume.id = %id, vault.addr = %addr, "A volume was published against a Vault address the flags no longer allow (--vault-addr, --allowed-vault-addrs); nothing is sent there, so its files are no longer refreshed and its Vault token and leases are not revoked (they end with their TTLs). Allow the address again to keep managing the volume, or delete the pod");
                return Ok(());
            }
        };
        let node_context = self.config.selinux_context.clone();
        match record
            .to_live(
                &self.work,
                target,
                &defaults,
                node_context,
                self.memory.charge(),
            )
            .await
        {
            Ok(live) => {
                // What the files already take counts, whatever the budget
                // says: they exist.
                live.memory
                    .force(2 * roots.bytes_used(live.target.as_path()) + live.kept_bytes());
                tracing::info!(volume.id = %id, kept_answers = live.secrets.iter().filter(|s| s.answer.is_some()).count(), "Resumed managing a published volume");
                self.adopt(id, live);
            }
            Err(error) => {
                // The files stay; kubelet's next publish adopts the volume
                // in place and revokes the token this record holds.
                tracing::warn!(volume.id = %id, %error, "Could not resume a volume from its record; waiting for kubelet to publish it again");
                self.keep_unread(
                    id,
                    Unreadable {
                        volume_id: record.volume_id.clone(),
                        reason: error.to_string(),
                        salvaged: record.salvaged_token(),
                    },
                );
            }
        }
        Ok(())
    }

    /// Releases what the driver holds for itself (a tmpfs root's private
    /// mount directory) when it stops; volumes stay for their pods.
    pub fn release_private_mounts(&self) {
        self.work.roots.close();
    }

    /// The record's target path, checked as a publish checks kubelet's.
    fn checked_target(&self, record: &VolumeRecord) -> Result<TargetPath, Error> {
        let raw = record
            .target_path
            .to_str()
            .ok_or_else(|| Error::InvalidTargetPath {
                path: record.target_path.display().to_string(),
                reason: "it is not UTF-8".to_owned(),
            })?;
        let target = TargetPath::parse(raw, &self.config.kubelet_dir)?;
        tmpfs::check_target(&self.config.kubelet_dir.join("pods"), target.as_path())?;
        Ok(target)
    }

    /// Revokes the token a record holds, at the Vault it was published
    /// with (while the flags allow it), bounded by the revoke timeout.
    async fn revoke_record(&self, record: &VolumeRecord) {
        let Some(session) = record.live_session() else {
            return;
        };
        let Some(client) = self.client_for_recorded(
            &record.volume_id,
            record.spec_defaults(&self.config.spec_defaults),
            &record.attributes,
        ) else {
            return;
        };
        let work = client.revoke_self(&session.token);
        let _ = tokio::time::timeout(self.config.revoke_timeout, work).await;
    }

    /// Revokes a token salvaged from an unreadable record, in the
    /// background.
    fn revoke_salvaged(&self, id: &VolumeId, salvaged: SalvagedToken) {
        let defaults = salvaged.spec_defaults(&self.config.spec_defaults);
        if let Some(client) = self.client_for_recorded(id.as_str(), defaults, &salvaged.attributes)
        {
            self.work.revoke_in_background(client, salvaged.token);
        }
    }

    /// The Vault client for a recorded volume's attributes, when its
    /// address is still allowed.
    fn client_for_recorded(
        &self,
        volume_id: &str,
        defaults: Result<SpecDefaults, String>,
        attributes: &std::collections::BTreeMap<String, String>,
    ) -> Option<crate::vault::VaultClient> {
        let defaults = match defaults {
            Ok(defaults) => defaults,
            Err(addr) => {
                tracing::warn!(volume.id = %volume_id, vault.addr = %addr, "Not revoking a volume's Vault token: its Vault address is no longer allowed; the token and its leases end with their TTLs");
                return None;
            }
        };
        let context: HashMap<String, String> = attributes.clone().into_iter().collect();
        let (spec, _) = spec::parse_attributes(&context, &defaults).ok()?;
        Some(self.work.client_for(&spec))
    }
}

/// The root options of a volume: directory mode from its file mode, its
/// fsGroup and SELinux label.
fn root_options(volume: &LiveVolume) -> RootOptions {
    RootOptions {
        mode: dir_mode(volume.file_mode()),
        gid: volume.fs_group,
        selinux_context: volume.selinux_context.clone(),
    }
}

/// Why bounded work was cut short.
#[derive(Debug, Clone, Copy)]
enum Stopped {
    /// `--publish-timeout` passed.
    Deadline,
    /// The driver is shutting down.
    Shutdown,
}

impl Stopped {
    fn into_error(self, timeout: Duration) -> Error {
        match self {
            Self::Deadline => Error::VaultTimeout {
                secs: timeout.as_secs_f64(),
            },
            Self::Shutdown => Error::ShuttingDown,
        }
    }
}

/// Time left, past `--publish-timeout`, for a publish to roll back and
/// report why before the caller gives up waiting.
const ANSWER_MARGIN: Duration = Duration::from_secs(2);

/// Waits for spawned work until `answer_by`; the work goes on if it is not
/// done by then.
async fn answer_within<T>(
    answer_by: Instant,
    work: tokio::task::JoinHandle<Result<T, Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout_at(answer_by, work).await {
        Ok(joined) => joined_result(joined),
        Err(_) => Err(Error::CallDeadline),
    }
}

/// The result of spawned work; a panic in it is a bug and propagates.
fn joined_result<T>(joined: Result<Result<T, Error>, tokio::task::JoinError>) -> Result<T, Error> {
    match joined {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(Error::ShuttingDown),
    }
}

/// Times the steps of one new publish, for
/// `vault_csi_node_publish_step_duration_seconds`. Recorded only when the
/// publish succeeds, so the figures describe complete publishes.
struct StepClock {
    last: Instant,
    laps: Vec<(PublishStep, Duration)>,
}

impl StepClock {
    fn new(started: Instant) -> Self {
        Self {
            last: started,
            laps: Vec::with_capacity(5),
        }
    }

    /// Ends `step` now.
    fn lap(&mut self, step: PublishStep) {
        self.lap_at(step, Instant::now());
    }

    /// Ends `step` at `at` (the next step starts there).
    fn lap_at(&mut self, step: PublishStep, at: Instant) {
        self.laps
            .push((step, at.saturating_duration_since(self.last)));
        self.last = self.last.max(at);
    }
}

/// The directory below the state directory that holds the driver's private
/// mounts (staged volumes, writable views).
const PRIVATE_MOUNTS: &str = "mounts";
