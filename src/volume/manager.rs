//! [`VolumeManager`]: publish, unpublish and restore.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::guard::{Operation, OperationGuards};
use super::memory::MemoryBudget;
use super::spec::{self, PodInfo, SpecDefaults, TargetPath, VolumeId, VolumeSpec};
use super::state::{Phase, RECORD_VERSION, StateStore, VolumeRecord};
use super::tracked::{self, VolumeState};
use super::{Error, off_runtime};
use crate::metrics::{Metrics, PublishStep, VolumeLabels};
use crate::refresh::RefreshScheduler;
use crate::render::Renderer;
use crate::storage::selinux;
use crate::storage::tmpfs::{self, TmpfsOptions};
use crate::vault::{ServiceAccountToken, TOKENS_KEY, VaultClient};

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
    /// unprivileged demos only (files land on disk, `readOnly` is not
    /// enforced). Never set in production.
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

/// The volume capability of a publish request, reduced to what matters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishCapability {
    /// A filesystem volume, with kubelet's fsGroup (if any) in `mount_group`.
    Mount {
        /// `volume_mount_group`: the pod's fsGroup when the driver
        /// advertises `VOLUME_MOUNT_GROUP`.
        mount_group: String,
        /// `mount_flags`: empty for inline volumes today; only an SELinux
        /// `context=` is accepted.
        mount_flags: Vec<String>,
    },
    /// A raw block volume (refused).
    Block,
}

/// A NodePublishVolume request, without the fields this driver ignores.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    /// `volume_id`.
    pub volume_id: String,
    /// `target_path`.
    pub target_path: String,
    /// `volume_capability`, if sent.
    pub capability: Option<PublishCapability>,
    /// `readonly`.
    pub readonly: bool,
    /// `volume_context` (holds the tokens before Kubernetes 1.35).
    pub volume_context: HashMap<String, String>,
    /// `secrets` (holds the tokens with `serviceAccountTokenInSecrets`).
    pub secrets: HashMap<String, String>,
}

/// What a successful publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    /// A new volume was mounted and rendered.
    Published,
    /// A republish of a managed volume: identity refreshed, volume checked.
    Republished,
}

pub(super) struct Volume {
    pub state: tokio::sync::Mutex<Option<VolumeState>>,
}

/// Owns every volume on the node. See the module docs for the rules.
pub struct VolumeManager {
    pub(super) config: ManagerConfig,
    pub(super) http: reqwest::Client,
    pub(super) renderer: Arc<Renderer>,
    pub(super) store: StateStore,
    pub(super) scheduler: RefreshScheduler,
    pub(super) metrics: Arc<Metrics>,
    pub(super) volumes: Mutex<HashMap<VolumeId, Arc<Volume>>>,
    pub(super) tracker: TaskTracker,
    /// The node's memory budget for volumes.
    pub(super) memory: Arc<MemoryBudget>,
    guards: Arc<OperationGuards>,
    /// Fired at shutdown: publishes still waiting for Vault stop and roll
    /// back, so the driver exits inside its grace period.
    stopping: CancellationToken,
}

impl std::fmt::Debug for VolumeManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeManager")
            .field("volumes", &self.volume_count())
            .finish_non_exhaustive()
    }
}

struct NewVolume {
    id: VolumeId,
    target: TargetPath,
    readonly: bool,
    fs_group: Option<u32>,
    selinux_context: Option<selinux::Context>,
    fingerprint: String,
    attributes: BTreeMap<String, String>,
    spec: VolumeSpec,
    pod: PodInfo,
    identity: ServiceAccountToken,
    started: Instant,
}

impl VolumeManager {
    /// A manager writing state to `store`, scheduling refreshes on
    /// `scheduler` and running background work (revocations) on `tracker`.
    pub fn new(
        config: ManagerConfig,
        http: reqwest::Client,
        store: StateStore,
        scheduler: RefreshScheduler,
        metrics: Arc<Metrics>,
        tracker: TaskTracker,
    ) -> Self {
        let memory = MemoryBudget::with_gauge(
            config.memory_budget_bytes,
            metrics.memory_budget(config.memory_budget_bytes),
        );
        Self {
            memory,
            config,
            http,
            renderer: Arc::new(Renderer::new()),
            store,
            scheduler,
            metrics,
            volumes: Mutex::new(HashMap::new()),
            tracker,
            guards: Arc::default(),
            stopping: CancellationToken::new(),
        }
    }

    /// Makes publishes still waiting for Vault (or for a refresh holding
    /// their volume) give up and roll back: called during shutdown so the
    /// work in flight ends inside `--shutdown-timeout`.
    pub fn stop_publishes(&self) {
        self.stopping.cancel();
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
        request: PublishRequest,
        answer_by: Instant,
    ) -> Result<PublishOutcome, Error> {
        let started = Instant::now();
        let manager = Arc::clone(self);
        let work = self
            .tracker
            .spawn(async move { manager.publish(request).await });
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
        volume_id: &str,
        target_path: &str,
        answer_by: Instant,
    ) -> Result<(), Error> {
        let answer_by = answer_by.min(Instant::now() + self.config.unpublish_wait);
        let Some(cleanup) = self.unpublish_start(volume_id, target_path)? else {
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
    async fn publish(&self, request: PublishRequest) -> Result<PublishOutcome, Error> {
        let started = Instant::now();
        if request.volume_id.is_empty() {
            return Err(Error::MissingField { field: "volume_id" });
        }
        if request.target_path.is_empty() {
            return Err(Error::MissingField {
                field: "target_path",
            });
        }
        let id = VolumeId::parse(&request.volume_id)?;
        let target = TargetPath::parse(&request.target_path, &self.config.kubelet_dir)?;
        let (mount_group, mount_flags) = match &request.capability {
            None => {
                return Err(Error::MissingField {
                    field: "volume_capability",
                });
            }
            Some(PublishCapability::Block) => return Err(Error::BlockVolume),
            Some(PublishCapability::Mount {
                mount_group,
                mount_flags,
            }) => (mount_group.clone(), mount_flags.clone()),
        };
        let fs_group = if mount_group.is_empty() {
            None
        } else {
            Some(
                mount_group
                    .parse::<u32>()
                    .map_err(|_| Error::InvalidAttribute {
                        key: "volume_capability.mount.volume_mount_group".to_owned(),
                        reason: format!("{mount_group:?} is not a numeric group id"),
                    })?,
            )
        };
        let selinux_context = selinux::context_from_mount_flags(&mount_flags)
            .map_err(|reason| Error::InvalidAttribute {
                key: "volume_capability.mount.mount_flags".to_owned(),
                reason,
            })?
            .map(selinux::Context::required)
            .or_else(|| self.config.selinux_context.clone());
        let _guard = self.guards.begin(&id, Operation::Publish)?;
        tmpfs::check_target(&self.config.kubelet_dir.join("pods"), target.as_path())?;
        // Mount flags join the fingerprint only when sent, so volumes
        // published before they were read keep theirs.
        let mount_options = if mount_flags.is_empty() {
            mount_group
        } else {
            format!("{mount_group}\0{}", mount_flags.join("\0"))
        };
        let fingerprint =
            spec::fingerprint(&request.volume_context, request.readonly, &mount_options);
        let (volume_spec, pod) =
            spec::parse_attributes(&request.volume_context, &self.config.spec_defaults)?;
        let identity = identity_from(&request, &volume_spec.audience)?;

        if let Some(volume) = self.volume(&id) {
            return self
                .republish(&id, &volume, &target, &fingerprint, identity, started)
                .await;
        }
        let attributes = request
            .volume_context
            .iter()
            .filter(|(k, _)| k.as_str() != TOKENS_KEY)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.publish_new(NewVolume {
            id,
            target,
            readonly: request.readonly,
            fs_group,
            selinux_context,
            fingerprint,
            attributes,
            spec: volume_spec,
            pod,
            identity,
            started,
        })
        .await?;
        Ok(PublishOutcome::Published)
    }

    async fn republish(
        &self,
        id: &VolumeId,
        volume: &Volume,
        target: &TargetPath,
        fingerprint: &str,
        identity: ServiceAccountToken,
        started: Instant,
    ) -> Result<PublishOutcome, Error> {
        // A refresh holding the volume may wait on a slow Vault: kubelet is
        // told to retry rather than kept waiting past the publish bound.
        let deadline = started + self.config.publish_timeout;
        let mut guard = self
            .bounded(deadline, volume.state.lock())
            .await
            .map_err(|_| Error::OperationPending {
                volume_id: id.to_string(),
            })?;
        let Some(state) = guard.as_mut() else {
            return Err(Error::OperationPending {
                volume_id: id.to_string(),
            });
        };
        if &state.target != target {
            return Err(Error::TargetMismatch {
                volume_id: id.to_string(),
                existing: state.target.as_path().display().to_string(),
            });
        }
        if state.fingerprint != fingerprint {
            return Err(Error::AlreadyExists {
                volume_id: id.to_string(),
            });
        }
        let newer = state
            .identity
            .as_ref()
            .is_none_or(|old| identity.expires_at() >= old.expires_at());
        if newer {
            state.identity = Some(identity);
        }
        let mounted = self.is_volume_root(target.as_path())?;
        let needs_attention = !mounted
            || state.degraded
            || state
                .session
                .as_ref()
                .is_none_or(|s| s.needs_login(Instant::now()));
        self.persist(id, state, Phase::Published)?;
        if !mounted {
            tracing::warn!(volume.id = %id, "The volume's tmpfs is gone; mounting and rendering it again");
            self.remount(id, state, deadline).await?;
        }
        if needs_attention && state.spec.refresh {
            self.scheduler.schedule(id.clone(), Instant::now());
        }
        Ok(PublishOutcome::Republished)
    }

    async fn publish_new(&self, new: NewVolume) -> Result<(), Error> {
        // Compiling collects the `secret` calls and checks their paths and
        // count before the pod's token is sent anywhere.
        let templates = self.compile(&new.spec.templates).await?;
        let wanted = templates.requests().to_vec();
        let client = VaultClient::new(
            self.http.clone(),
            new.spec.vault_addr.clone(),
            new.spec.namespace.clone(),
            Arc::clone(&self.metrics),
        )
        .with_allowed_redirects(&self.config.spec_defaults.allowed_vault_addrs);
        let labels = VolumeLabels {
            pod_namespace: new.pod.namespace.clone(),
            pod_name: new.pod.name.clone(),
            volume_id: new.id.to_string(),
        };
        let mut state = VolumeState {
            target: new.target,
            readonly: new.readonly,
            fs_group: new.fs_group,
            selinux_context: new.selinux_context,
            fingerprint: new.fingerprint,
            attributes: new.attributes,
            spec: new.spec,
            pod: new.pod,
            labels,
            templates,
            client,
            identity: Some(new.identity),
            session: None,
            secrets: Vec::new(),
            token_failures: 0,
            token_retry_at: None,
            degraded: false,
            memory: self.memory.charge(),
        };
        let (id, mut steps) = (new.id, StepClock::new(new.started));
        // The record (phase `publishing`, so a crash from here on is undone
        // at start-up) and the mount do not depend on Vault: they run on
        // the blocking pool while the login and reads are in flight.
        let record = record(&id, &state, Phase::Publishing);
        let (store, mount) = (self.store.clone(), self.mount_plan(&id, &state));
        let (saved, on_record) = tokio::sync::oneshot::channel::<()>();
        let prepare = off_runtime(move || {
            store.save(&record)?;
            let _ = saved.send(());
            mount.apply()
        });
        steps.lap(PublishStep::Checks);
        let mut answered = None;
        let fetch = async {
            let identity = state.identity.as_ref().expect("set above");
            let session = self
                .login(&state.client, &state.spec, identity, true)
                .await?;
            state.session = Some(session);
            // The token goes on record before anything is fetched with it
            // (after the first record, never racing it): a driver killed from
            // here on revokes it, and the leases it owns, at its next start.
            if on_record.await.is_ok() {
                self.persist(&id, &state, Phase::Publishing)?;
            }
            let files = self
                .fetch_and_render(&mut state, &HashSet::default(), true, Some(wanted))
                .await;
            answered = Some(Instant::now());
            files
        };
        // Vault's wait is bounded; what was obtained before the bound (the
        // token, whose revocation ends its leases) is revoked by the rollback.
        let timeout = self.config.publish_timeout;
        let fetch = async {
            self.bounded(new.started + timeout, fetch)
                .await
                .map_err(|stopped| stopped.into_error(timeout))?
        };
        let (prepared, fetched) = tokio::join!(prepare, fetch);
        if let Some(at) = answered {
            steps.lap_at(PublishStep::Vault, at);
        }
        steps.lap(PublishStep::Mount);
        let (prepared, files) = match (prepared.and_then(|prepared| prepared), fetched) {
            (Ok(prepared), Ok(files)) => (prepared, files),
            // Vault's answer explains more to the pod's author than a
            // failure of the node, so it wins when both fail.
            (_, Err(error)) | (Err(error), Ok(_)) => {
                self.rollback(&id, &state);
                return Err(error);
            }
        };
        let written = self
            .write_first(&id, &state, prepared, files)
            .and_then(|()| {
                steps.lap(PublishStep::Write);
                self.persist(&id, &state, Phase::Published)
            });
        if let Err(error) = written {
            self.rollback(&id, &state);
            return Err(error);
        }
        steps.lap(PublishStep::Record);
        self.metrics.observe_publish_steps(&steps.laps);
        self.adopt(id, state);
        self.metrics.set_volumes(self.volume_count());
        Ok(())
    }

    /// Starts managing a volume: its metrics, its place in the map and, if
    /// it refreshes, its first deadline.
    fn adopt(&self, id: VolumeId, state: VolumeState) {
        let next = state.spec.refresh.then(|| state.next_due()).flatten();
        self.publish_schedule_metrics(&state, next);
        self.volumes.lock().expect("volume map poisoned").insert(
            id.clone(),
            Arc::new(Volume {
                state: tokio::sync::Mutex::new(Some(state)),
            }),
        );
        if let Some(at) = next {
            self.scheduler.schedule(id, at);
        }
    }

    /// Creates the tmpfs and writes the first file set; the record is
    /// written first (phase `publishing`) so a crash here is cleaned up.
    fn mount_and_write(
        &self,
        id: &VolumeId,
        state: &mut VolumeState,
        files: crate::render::RenderedFiles,
    ) -> Result<(), Error> {
        self.persist(id, state, Phase::Publishing)?;
        let prepared = self.mount_plan(id, state).apply()?;
        self.write_first(id, state, prepared, files)
    }

    /// How this volume's target is made ready for its first write.
    fn mount_plan(&self, id: &VolumeId, state: &VolumeState) -> MountPlan {
        MountPlan {
            target: state.target.as_path().to_path_buf(),
            staging: self.scratch_path("stage", id),
            tmpfs: (!self.config.plain_directories).then(|| TmpfsOptions {
                size_bytes: self.config.tmpfs_size_bytes,
                inodes: self.config.tmpfs_inodes,
                mode: dir_mode(state.file_mode()),
                gid: state.fs_group,
                selinux_context: state.selinux_context.clone(),
            }),
        }
    }

    /// Writes the first file set into a prepared target. A new tmpfs is
    /// filled while staged, then sealed read-only and attached: the pod's
    /// view is read-only in every mount namespace from its first instant,
    /// whatever the volume's `readOnly` says, because a pod that could write
    /// into its volume could plant links for the driver, as root, to follow
    /// on the next update (`..data` pointing into another pod's volume, say).
    /// Updates go through a private writable view.
    fn write_first(
        &self,
        id: &VolumeId,
        state: &VolumeState,
        staged: Option<tmpfs::StagedTmpfs>,
        files: crate::render::RenderedFiles,
    ) -> Result<(), Error> {
        let root = staged.as_ref().map(tmpfs::StagedTmpfs::path);
        self.write_files(id, state, files, root)?;
        match staged {
            Some(staged) => staged.attach(state.target.as_path()),
            None => Ok(()),
        }
        .map_err(Error::from)
    }

    /// A scratch mount point in the driver's private mount directory
    /// (`<state-dir>/mounts`, never propagated), one per volume and use.
    pub(super) fn scratch_path(&self, use_: &str, id: &VolumeId) -> PathBuf {
        self.store
            .dir()
            .join(PRIVATE_MOUNTS)
            .join(format!("{use_}-{id}"))
    }

    /// Re-creates a volume whose mount disappeared, from cached responses.
    async fn remount(
        &self,
        id: &VolumeId,
        state: &mut VolumeState,
        deadline: Instant,
    ) -> Result<(), Error> {
        let timeout = self.config.publish_timeout;
        let files = self
            .bounded(
                deadline,
                self.fetch_and_render(state, &HashSet::default(), true, None),
            )
            .await
            .map_err(|stopped| stopped.into_error(timeout))??;
        self.mount_and_write(id, state, files)?;
        self.persist(id, state, Phase::Published)
    }

    /// Undoes a failed publish: no mount, no directory, no record, and the
    /// Vault token revoked.
    fn rollback(&self, id: &VolumeId, state: &VolumeState) {
        if let Err(error) = self.remove_volume_root(state.target.as_path()) {
            tracing::error!(volume.id = %id, %error, "Could not undo a failed publish; unpublish will retry");
        }
        let _ = self.store.remove(id);
        self.revoke_in_background(state);
    }

    /// NodeUnpublishVolume, first half: unmounts and removes the target
    /// (the pod's view goes first, without waiting for a refresh in
    /// flight), forgets the volume and starts its clean-up (token and
    /// leases revoked, record removed) on the task tracker. `None` when a
    /// clean-up for the volume is already running. Unknown volumes and
    /// missing targets are OK.
    fn unpublish_start(
        self: &Arc<Self>,
        volume_id: &str,
        target_path: &str,
    ) -> Result<Option<tokio::task::JoinHandle<Result<(), Error>>>, Error> {
        if volume_id.is_empty() {
            return Err(Error::MissingField { field: "volume_id" });
        }
        if target_path.is_empty() {
            return Err(Error::MissingField {
                field: "target_path",
            });
        }
        let id = VolumeId::parse(volume_id)?;
        let target = TargetPath::parse(target_path, &self.config.kubelet_dir)?;
        let guard = match self.guards.begin(&id, Operation::Unpublish) {
            Ok(guard) => guard,
            // A retry of an unpublish whose clean-up still waits behind a
            // refresh: the target is gone, the rest finishes on its own.
            Err(_) if self.guards.running(&id) == Some(Operation::Unpublish) => {
                self.remove_volume_root(target.as_path())?;
                return Ok(None);
            }
            Err(busy) => return Err(busy),
        };
        // Nothing below awaits until the clean-up is spawned: a cancelled
        // call cannot stop between forgetting the volume and revoking.
        // If unmounting fails, the volume stays managed and kubelet retries.
        self.remove_volume_root(target.as_path())?;
        let volume = self
            .volumes
            .lock()
            .expect("volume map poisoned")
            .remove(&id);
        self.scheduler.cancel(id.clone());
        self.metrics.set_volumes(self.volume_count());
        let manager = Arc::clone(self);
        Ok(Some(self.tracker.spawn(async move {
            let _guard = guard;
            manager.retire(&id, volume).await
        })))
    }

    /// NodeUnpublishVolume, second half: waits for a refresh holding the
    /// volume (so its last token is the one revoked and its last record
    /// write comes before the removal), revokes and removes the record.
    async fn retire(&self, id: &VolumeId, volume: Option<Arc<Volume>>) -> Result<(), Error> {
        let mut unmounted = Ok(());
        if let Some(volume) = volume {
            let state = volume.state.lock().await.take();
            if let Some(state) = state {
                unmounted = self.remove_volume_root(state.target.as_path());
                self.revoke(&state).await;
                self.metrics.forget_volume(&state.labels);
            }
        } else if let Some(record) = self.store.load(id) {
            self.revoke_record(&record).await;
        }
        unmounted?;
        self.store.remove(id)
    }

    /// Runs `work` until `deadline` or shutdown, whichever comes first.
    async fn bounded<T>(
        &self,
        deadline: Instant,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, Stopped> {
        tokio::select! {
            result = tokio::time::timeout_at(deadline, work) => result.map_err(|_| Stopped::Deadline),
            () = self.stopping.cancelled() => Err(Stopped::Shutdown),
        }
    }

    /// Re-adopts the volumes recorded in the state directory after a
    /// restart: finished publishes resume their schedules; unfinished ones
    /// are undone. Returns how many volumes are managed.
    pub async fn restore(&self) -> Result<usize, Error> {
        if !self.config.plain_directories {
            tmpfs::private_mount_dir(&self.store.dir().join(PRIVATE_MOUNTS))?;
        }
        for record in self.store.load_all()? {
            let Ok(id) = VolumeId::parse(&record.volume_id) else {
                continue;
            };
            // The record is the driver's own, but nothing it names is
            // touched unless it passes the checks a publish applies: a
            // target outside kubelet's pods directory, or reached through a
            // symlink, is never unmounted, removed or written.
            let target = match self.checked_target(&record) {
                Ok(target) => target,
                Err(error) => {
                    tracing::error!(volume.id = %id, %error, "Ignoring a state record whose target path fails the publish checks; nothing it names is touched");
                    self.store.remove(&id)?;
                    continue;
                }
            };
            let mounted = self.is_volume_root(target.as_path()).unwrap_or(false);
            if record.phase == Phase::Publishing || !mounted {
                tracing::info!(volume.id = %id, "Cleaning up a volume left unfinished or unmounted by a previous run");
                if let Err(error) = self.remove_volume_root(target.as_path()) {
                    tracing::warn!(volume.id = %id, %error, "Could not clean up the volume's target");
                }
                self.revoke_record(&record).await;
                self.store.remove(&id)?;
                continue;
            }
            if let Err(addr) = record.spec_defaults(&self.config.spec_defaults) {
                // The record stays, so an unpublish still unmounts it.
                tracing::error!(volume.id = %id, vault.addr = %addr, "A volume was published against a Vault address the flags no longer allow (--vault-addr, --allowed-vault-addrs); nothing is sent there, so its files are no longer refreshed and its Vault token and leases are not revoked (they end with their TTLs). Allow the address again to keep managing the volume, or delete the pod");
                continue;
            }
            match self.state_from_record(&record, target).await {
                Ok(state) => {
                    // What the files already take counts, whatever the
                    // budget says: they exist.
                    state
                        .memory
                        .force(2 * tmpfs::bytes_used(state.target.as_path()));
                    tracing::info!(volume.id = %id, "Resumed managing a published volume");
                    self.adopt(id, state);
                }
                Err(error) => {
                    // The files stay; kubelet's next republish re-adopts it.
                    tracing::warn!(volume.id = %id, %error, "Could not resume a volume from its record; waiting for kubelet to republish it");
                }
            }
        }
        let count = self.volume_count();
        self.metrics.set_volumes(count);
        Ok(count)
    }

    /// Releases what the driver mounted for itself (its private mount
    /// directory) when it stops; volumes stay mounted for their pods.
    pub fn release_private_mounts(&self) {
        if !self.config.plain_directories {
            tmpfs::release_private_mount_dir(&self.store.dir().join(PRIVATE_MOUNTS));
        }
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

    async fn state_from_record(
        &self,
        record: &VolumeRecord,
        target: TargetPath,
    ) -> Result<VolumeState, Error> {
        let context: HashMap<String, String> = record.attributes.clone().into_iter().collect();
        let defaults = record
            .spec_defaults(&self.config.spec_defaults)
            .unwrap_or_else(|_| self.config.spec_defaults.clone());
        let (spec, pod) = spec::parse_attributes(&context, &defaults)?;
        let templates = self.compile(&spec.templates).await?;
        let client = VaultClient::new(
            self.http.clone(),
            spec.vault_addr.clone(),
            spec.namespace.clone(),
            Arc::clone(&self.metrics),
        )
        .with_allowed_redirects(&self.config.spec_defaults.allowed_vault_addrs);
        let labels = VolumeLabels {
            pod_namespace: pod.namespace.clone(),
            pod_name: pod.name.clone(),
            volume_id: record.volume_id.clone(),
        };
        Ok(VolumeState {
            target,
            readonly: record.readonly,
            fs_group: record.fs_group,
            selinux_context: record
                .selinux_context
                .clone()
                .map(selinux::Context::required)
                .or_else(|| self.config.selinux_context.clone()),
            fingerprint: record.fingerprint.clone(),
            attributes: record.attributes.clone(),
            spec,
            pod,
            labels,
            templates,
            client,
            identity: record.identity.as_ref().map(tracked::identity_from_stored),
            session: record.token.as_ref().map(tracked::session_from_stored),
            secrets: record
                .secrets
                .iter()
                .map(tracked::tracked_from_stored)
                .collect(),
            token_failures: 0,
            token_retry_at: None,
            degraded: false,
            memory: self.memory.charge(),
        })
    }

    /// True when `path` holds a volume of this driver: a tmpfs mount, or in
    /// plain-directory mode a directory with the atomic writer's `..data`.
    pub(super) fn is_volume_root(&self, path: &std::path::Path) -> Result<bool, Error> {
        if self.config.plain_directories {
            return Ok(path.join("..data").symlink_metadata().is_ok());
        }
        Ok(tmpfs::is_tmpfs_mount(path)?)
    }

    /// Unmounts and removes a volume's target (plain mode: deletes the
    /// directory tree, which only ever holds the driver's files).
    fn remove_volume_root(&self, path: &std::path::Path) -> Result<(), Error> {
        if self.config.plain_directories {
            return match crate::storage::remove_tree(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(crate::storage::Error::Io {
                    action: "remove the target directory",
                    path: path.to_path_buf(),
                    source,
                }
                .into()),
            };
        }
        Ok(tmpfs::unmount_and_remove(path)?)
    }

    /// Writes the volume's record.
    pub(super) fn persist(
        &self,
        id: &VolumeId,
        state: &VolumeState,
        phase: Phase,
    ) -> Result<(), Error> {
        self.store.save(&record(id, state, phase))
    }

    /// Only what the driver acts on is exported: a `refresh: "false"`
    /// volume's expiry is nobody's deadline, so it has no gauges at all and
    /// an alert on them never fires for it.
    pub(super) fn publish_schedule_metrics(&self, state: &VolumeState, next: Option<Instant>) {
        self.metrics.set_volume_schedule(
            &state.labels,
            state
                .spec
                .refresh
                .then(|| state.soonest_expiry())
                .flatten()
                .map(tracked::instant_to_system),
            next.map(tracked::instant_to_system),
        );
    }

    async fn revoke_record(&self, record: &VolumeRecord) {
        let Some(token) = &record.token else { return };
        let defaults = match record.spec_defaults(&self.config.spec_defaults) {
            Ok(defaults) => defaults,
            Err(addr) => {
                tracing::warn!(volume.id = %record.volume_id, vault.addr = %addr, "Not revoking a volume's Vault token: its Vault address is no longer allowed; the token and its leases end with their TTLs");
                return;
            }
        };
        let context: HashMap<String, String> = record.attributes.clone().into_iter().collect();
        let Ok((spec, _)) = spec::parse_attributes(&context, &defaults) else {
            return;
        };
        let client = VaultClient::new(
            self.http.clone(),
            spec.vault_addr,
            spec.namespace,
            Arc::clone(&self.metrics),
        )
        .with_allowed_redirects(&self.config.spec_defaults.allowed_vault_addrs);
        let session = tracked::session_from_stored(token);
        // revoke-self revokes the token's leases too; `sys/leases/revoke`
        // is not in Vault's default policy.
        let work = client.revoke_self(&session.token);
        let _ = tokio::time::timeout(self.config.revoke_timeout, work).await;
    }

    /// Revokes the volume's leases and token, bounded by the revoke timeout.
    /// Failures are logged: the token's TTL ends it anyway.
    pub(super) async fn revoke(&self, state: &VolumeState) {
        let Some(session) = &state.session else {
            return;
        };
        if session.expires_at <= Instant::now() {
            return;
        }
        // revoke-self revokes every lease the token created; the default
        // policy does not grant `sys/leases/revoke`, so nothing else is sent.
        let work = state.client.revoke_self(&session.token);
        match tokio::time::timeout(self.config.revoke_timeout, work).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(volume.pod = %state.pod.name, %error, "Could not revoke the volume's Vault token; it ends with its TTL");
            }
            Err(_) => {
                tracing::warn!(volume.pod = %state.pod.name, "Revoking the volume's Vault token timed out; it ends with its TTL");
            }
        }
    }

    fn revoke_in_background(&self, state: &VolumeState) {
        let Some(session) = &state.session else {
            return;
        };
        let client = state.client.clone();
        let token = session.token.clone();
        let timeout = self.config.revoke_timeout;
        self.tracker.spawn(async move {
            let _ = tokio::time::timeout(timeout, client.revoke_self(&token)).await;
        });
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

/// Directory mode matching a file mode: each class that may read may also
/// traverse.
pub(super) fn dir_mode(file_mode: u32) -> u32 {
    let mut mode = file_mode & 0o777;
    for (read, exec) in [(0o400, 0o100), (0o040, 0o010), (0o004, 0o001)] {
        if mode & read != 0 {
            mode |= exec;
        }
    }
    mode | 0o100
}

/// The pod's service-account token: from `secrets` first (Kubernetes 1.35+
/// with `serviceAccountTokenInSecrets`), then `volume_context`.
fn identity_from(request: &PublishRequest, audience: &str) -> Result<ServiceAccountToken, Error> {
    let json = request
        .secrets
        .get(TOKENS_KEY)
        .or_else(|| request.volume_context.get(TOKENS_KEY))
        .ok_or_else(|| crate::vault::IdentityError::MissingAudience {
            audience: audience.to_owned(),
            available: Vec::new(),
        })?;
    Ok(ServiceAccountToken::from_kubelet_json(
        json,
        audience,
        SystemTime::now(),
    )?)
}

/// The record of a volume as it stands.
fn record(id: &VolumeId, state: &VolumeState, phase: Phase) -> VolumeRecord {
    let (identity, token, secrets) = state.stored_parts();
    VolumeRecord {
        version: RECORD_VERSION,
        volume_id: id.to_string(),
        target_path: state.target.as_path().to_path_buf(),
        readonly: state.readonly,
        fs_group: state.fs_group,
        // Only a label the request asked for is the volume's own; the
        // node's default is applied again from the flags after a restart.
        selinux_context: state
            .selinux_context
            .as_ref()
            .filter(|c| c.required)
            .map(|c| c.label.clone()),
        vault_addr: Some(state.spec.vault_addr.to_string()),
        fingerprint: state.fingerprint.clone(),
        attributes: state.attributes.clone(),
        phase,
        identity,
        token,
        secrets,
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

/// What a publish does to the target before the first write: create it and
/// stage the volume's tmpfs privately (with `--insecure-plain-directories`,
/// only create it). Owned, so it can run on the blocking pool while Vault
/// answers.
struct MountPlan {
    target: PathBuf,
    staging: PathBuf,
    tmpfs: Option<TmpfsOptions>,
}

impl MountPlan {
    /// Makes the target ready for its first write: a new tmpfs, staged
    /// privately (fill it, then attach it sealed), or `None` when the
    /// target is written as it stands: a plain directory, or a tmpfs an
    /// earlier run left there (written through a writable view, so a
    /// container already using it sees the files).
    fn apply(&self) -> Result<Option<tmpfs::StagedTmpfs>, Error> {
        let Some(options) = &self.tmpfs else {
            std::fs::create_dir_all(&self.target).map_err(|source| crate::storage::Error::Io {
                action: "create the target directory",
                path: self.target.clone(),
                source,
            })?;
            return Ok(None);
        };
        if tmpfs::is_tmpfs_mount(&self.target)? {
            return Ok(None);
        }
        tmpfs::create_target(&self.target)?;
        Ok(Some(tmpfs::StagedTmpfs::mount(&self.staging, options)?))
    }
}

#[cfg(test)]
mod tests {
    use super::dir_mode;

    #[test]
    fn directories_are_traversable_by_whoever_may_read() {
        assert_eq!(dir_mode(0o444), 0o555);
        assert_eq!(dir_mode(0o440), 0o550);
        assert_eq!(dir_mode(0o400), 0o500);
        assert_eq!(dir_mode(0o640), 0o750);
        assert_eq!(dir_mode(0o000), 0o100);
    }
}
