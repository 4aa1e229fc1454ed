//! `NodePublishVolume`: a new volume (compile, log in as the pod, fetch and
//! render, write the first files, seal), a republish of a managed one
//! (kubelet's periodic call with a fresh service-account token), and the
//! adoption of a volume an earlier run left serving its pod. Every wait on
//! Vault is bounded by `--publish-timeout`; a publish that fails leaves
//! nothing behind (no root, no record, its token revoked), except that a
//! volume that was serving its pod before stays as it was.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Error;
use super::guard::Operation;
use super::live::{LiveVolume, Placement, Published, Session, VolumeParts};
use super::manager::{PublishOutcome, Volume, VolumeManager};
use super::materialise::{Files, Mode, Seen, WriteAt, dir_mode, off_runtime};
use super::memory::{Charge, cost};
use super::record::{Phase, SalvagedToken, VolumeRecord};
use super::request::CheckedPublish;
use crate::metrics::PublishStep;
use crate::render::{self, CompiledTemplates};
use crate::storage::{Prepared, RootOptions, selinux};
use crate::timing;
use crate::vault::Caller;

/// Time left, past `--publish-timeout`, for a publish to roll back and
/// report why before the caller gives up waiting.
const ANSWER_MARGIN: Duration = Duration::from_secs(2);

impl VolumeManager {
    /// `NodePublishVolume` with a bounded answer. The publish runs on the
    /// task tracker, so the gRPC call being dropped (kubelet's deadline, a
    /// cancelled client: tonic drops the handler) never cuts it half-way:
    /// it ends on its own, published or rolled back with every Vault token
    /// it obtained revoked, within `--publish-timeout`. The caller gets its
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
            .tracker
            .spawn(async move { manager.publish(request, started).await });
        // The work answers by its own bound; this margin lets a rolled-back
        // publish report why rather than a bare deadline.
        let answer_by = answer_by.min(started + self.config.publish_timeout + ANSWER_MARGIN);
        answer_within(answer_by, work).await
    }

    /// `NodePublishVolume` itself, bounded by `--publish-timeout` wherever
    /// it waits on Vault or on the volume's lock. Run through
    /// [`VolumeManager::publish_by`], never directly from a gRPC handler.
    async fn publish(
        &self,
        request: CheckedPublish,
        started: Instant,
    ) -> Result<PublishOutcome, Error> {
        let _guard = self.guards.begin(&request.id, Operation::Publish)?;
        let target = request.target.as_path();
        self.roots.check_target(target)?;
        if let Some(holder) = self.target_holder(target).filter(|h| *h != request.id) {
            return Err(Error::TargetInUse {
                target: target.display().to_string(),
                volume_id: holder.to_string(),
            });
        }
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
        let pending = || Error::OperationPending {
            volume_id: id.to_string(),
        };
        let mut guard = self
            .bounded(deadline, volume.state.lock())
            .await
            .map_err(|_| pending())?;
        let live = guard.as_mut().ok_or_else(pending)?;
        if live.placement.target != request.target {
            return Err(Error::TargetMismatch {
                volume_id: id.to_string(),
                existing: live.placement.target.as_path().display().to_string(),
            });
        }
        if live.published.fingerprint != request.fingerprint {
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
        let mounted = self.roots.is_root(live.placement.target.as_path())?;
        let needs_attention = !mounted
            || live.degraded
            || live
                .token
                .session
                .as_ref()
                .is_none_or(|s| s.needs_login(Instant::now()));
        self.persist(live, Phase::Published)?;
        if !mounted {
            tracing::warn!(volume.id = %id, "The volume's root is gone; creating and rendering it again");
            self.recreate(live, deadline).await?;
        }
        if needs_attention && live.spec().refresh {
            self.scheduler.schedule(id.clone(), Instant::now());
        }
        Ok(PublishOutcome::Republished)
    }

    async fn publish_new(&self, new: CheckedPublish, started: Instant) -> Result<(), Error> {
        let mut steps = StepClock::new(started);
        let (memory, attributes, templates) = self.admit(&new).await?;
        if let Some(holder) = self.bind_target(new.target.as_path(), &new.id) {
            return Err(Error::TargetInUse {
                target: new.target.as_path().display().to_string(),
                volume_id: holder.to_string(),
            });
        }
        // A volume known from a record that could not be read is adopted:
        // the tokens it held are revoked once its files are replaced.
        let adopted = self.take_unread(&new.id);
        let was_unread = adopted.is_some();
        let salvaged: Vec<SalvagedToken> = adopted.map(|u| u.salvaged).unwrap_or_default();
        let mut volume = self.assemble(new, memory, attributes, templates);
        // The target and the first record do not depend on Vault: they are
        // made ready on the blocking pool while the login and reads are in
        // flight.
        let (saved, on_record) = tokio::sync::oneshot::channel::<Phase>();
        let prepare = self.prepare_off_thread(&volume, was_unread, &salvaged, saved);
        steps.lap(PublishStep::Checks);
        let mut answered = None;
        let fetch = async {
            let files = self
                .log_in_and_render(&mut volume, on_record, &salvaged)
                .await;
            answered = Some(Instant::now());
            files
        };
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
        let adopting = was_unread || prepared.as_ref().is_ok_and(|p| p.is_existing());
        let (prepared, files) = match (prepared, fetched) {
            (Ok(prepared), Ok(files)) => (prepared, files),
            // Vault's answer explains more to the pod's author than a
            // failure of the node, so it wins when both fail.
            (_, Err(error)) | (Err(error), Ok(_)) => {
                self.rollback(volume, adopting, salvaged);
                return Err(error);
            }
        };
        let written = match self.write_first(&mut volume, prepared, files).await {
            Ok(()) => {
                steps.lap(PublishStep::Write);
                self.persist(&mut volume, Phase::Published)
            }
            Err(error) => Err(error),
        };
        if let Err(error) = written {
            self.rollback(volume, adopting, salvaged);
            return Err(error);
        }
        steps.lap(PublishStep::Record);
        self.metrics.observe_publish_steps(&steps.laps);
        if adopting {
            if was_unread && salvaged.is_empty() {
                tracing::warn!(volume.id = %volume.id, "Adopted a volume whose record was unreadable; its old Vault token could not be salvaged and ends with its TTL");
            }
            self.revoke_salvaged(&volume.id, salvaged);
        }
        self.adopt(volume);
        Ok(())
    }

    /// Admission: what the request makes the driver hold before Vault
    /// answers (its attributes, the compile's worst case, the driver's
    /// bookkeeping) is reserved first, and a cgroup already near its limit
    /// admits nothing. Compiling then collects the `secret` calls and
    /// checks their paths and count before the pod's token is sent
    /// anywhere. Returns the charge, the attributes' cost and the
    /// templates.
    async fn admit(
        &self,
        new: &CheckedPublish,
    ) -> Result<(Charge, u64, Arc<CompiledTemplates>), Error> {
        self.config.memory_pressure.check()?;
        let memory = self.memory.charge(&new.pod.namespace);
        let attributes = LiveVolume::attributes_cost(&new.attributes);
        let compile = match self.materialiser.renderer.cached(&new.spec.templates) {
            Some(templates) => templates.held_bytes(),
            None => render::compile_reservation(&new.spec.templates),
        };
        memory.resize(attributes + compile + cost::VOLUME_BOOKKEEPING_BYTES)?;
        let templates = self
            .materialiser
            .renderer
            .compile_off_thread(&new.spec.templates)
            .await?;
        Ok((memory, attributes, templates))
    }

    /// The live volume of an admitted publish, charged for its templates
    /// rather than the compile's worst case.
    fn assemble(
        &self,
        new: CheckedPublish,
        memory: Charge,
        attributes: u64,
        templates: Arc<CompiledTemplates>,
    ) -> LiveVolume {
        let templates_held = templates.held_bytes();
        let mut volume = LiveVolume::new(VolumeParts {
            id: new.id,
            placement: Placement {
                target: new.target,
                readonly: new.readonly,
                fs_group: new.fs_group,
                selinux_context: new
                    .selinux_label
                    .map(selinux::Context::required)
                    .or_else(|| self.config.selinux_context.clone()),
            },
            published: Published {
                fingerprint: new.fingerprint,
                attributes: new.attributes,
                spec: new.spec,
                pod: new.pod,
            },
            templates,
            identity: Some(new.identity),
            session: None,
            secrets: Vec::new(),
            memory,
        });
        volume.cost.attributes = attributes;
        volume.cost.templates = templates_held;
        volume.force_charge();
        volume
    }

    /// Logs in as the pod and renders. The token goes on record before
    /// anything is fetched with it (once the first record is written,
    /// never racing it): a driver killed from here on revokes it, and the
    /// leases it owns, at its next start. An adopting publish's record
    /// keeps the `salvaged` tokens beside it, so a crash before its files
    /// are replaced loses none of them.
    async fn log_in_and_render(
        &self,
        volume: &mut LiveVolume,
        on_record: tokio::sync::oneshot::Receiver<Phase>,
        salvaged: &[SalvagedToken],
    ) -> Result<Files, Error> {
        let spec = volume.spec();
        let identity = volume.identity.as_ref().expect("a publish has an identity");
        let auth = self
            .vault
            .login(
                &volume.endpoint,
                Caller::publish(volume.tenant()),
                &spec.auth_mount,
                &spec.role,
                identity.jwt(),
            )
            .await
            .map_err(|source| Error::Login {
                mount: spec.auth_mount.clone(),
                role: spec.role.clone(),
                source,
            })?;
        volume.token.session = Some(Session::from_login(auth, timing::draw()));
        if let Ok(phase) = on_record.await {
            let salvaged = if phase == Phase::Adopting {
                salvaged
            } else {
                &[]
            };
            self.persist_with(volume, phase, salvaged)?;
        }
        let mut seen = Seen::default();
        let files = self
            .materialiser
            .render(volume, Mode::Publish, &mut seen)
            .await?;
        self.warn_unrevocable(volume).await;
        Ok(files)
    }

    /// A batch token cannot be revoked: its leases outlive the volume
    /// unless the token may revoke them one by one. Says so at publish.
    async fn warn_unrevocable(&self, volume: &LiveVolume) {
        let Some(session) = volume.token.session.as_ref().filter(|s| s.batch) else {
            return;
        };
        let leases = volume
            .secrets
            .iter()
            .filter(|s| s.lease_id.is_some())
            .count();
        if leases == 0 {
            return;
        }
        let caller = Caller::publish(volume.tenant());
        let allowed = self
            .vault
            .can_revoke_leases(&volume.endpoint, caller, &session.token)
            .await
            .unwrap_or(false);
        if !allowed {
            tracing::warn!(volume.id = %volume.id, pod.namespace = %volume.tenant(), leases, "The role issues batch tokens, which cannot be revoked, and the token's policy does not allow sys/leases/revoke: this volume's leases outlive it until their TTLs end. Use a service token role, or grant update on sys/leases/revoke");
        }
    }

    /// Makes the target ready, then writes the first record, on the
    /// blocking pool; `saved` then says which phase it wrote.
    fn prepare_off_thread(
        &self,
        volume: &LiveVolume,
        was_unread: bool,
        salvaged: &[SalvagedToken],
        saved: tokio::sync::oneshot::Sender<Phase>,
    ) -> impl Future<Output = Result<Box<dyn Prepared>, Error>> + use<> {
        // Encoded on the blocking pool too, once the phase is known.
        let mut record = VolumeRecord::of(volume, Phase::Adopting, salvaged).into_owned();
        let (store, roots) = (Arc::clone(&self.store), Arc::clone(&self.roots));
        let (target, id) = (volume.placement.target.clone(), volume.id.clone());
        let options = root_options(volume);
        let work = off_runtime(move || {
            let prepared = roots.prepare(target.as_path(), id.as_str(), &options)?;
            if !was_unread && !prepared.is_existing() {
                record.phase = Phase::Publishing;
                record.salvaged.clear();
            }
            store.save(&id, &record.encode())?;
            let _ = saved.send(record.phase);
            Ok(prepared)
        });
        async move { work.await.and_then(|prepared| prepared) }
    }

    /// Writes the first file set into a prepared target, then seals it. A
    /// new tmpfs is filled while staged, then sealed read-only and
    /// attached: the pod's view is read-only in every mount namespace from
    /// its first instant, whatever the volume's `readOnly` says, because a
    /// pod that could write into its volume could plant links for the
    /// driver, as root, to follow on the next update. A target that already
    /// held a root (left by an earlier run) is written in place, so a
    /// container already using it sees the files.
    async fn write_first(
        &self,
        volume: &mut LiveVolume,
        prepared: Box<dyn Prepared>,
        files: Files,
    ) -> Result<(), Error> {
        self.materialiser
            .write(volume, files, WriteAt::First(prepared))
            .await
            .map(drop)
    }

    /// Re-creates a volume whose root disappeared, from its kept answers
    /// (fetching only what it has none for).
    async fn recreate(&self, volume: &mut LiveVolume, deadline: Instant) -> Result<(), Error> {
        let timeout = self.config.publish_timeout;
        let mut seen = Seen::default();
        let files = self
            .bounded(
                deadline,
                self.materialiser.render(volume, Mode::Recreate, &mut seen),
            )
            .await
            .map_err(|stopped| stopped.into_error(timeout))??;
        self.persist(volume, Phase::Publishing)?;
        let prepared = self.roots.prepare(
            volume.placement.target.as_path(),
            volume.id.as_str(),
            &root_options(volume),
        )?;
        self.write_first(volume, prepared, files).await?;
        self.persist(volume, Phase::Published)
    }

    /// Undoes a failed publish. A new volume leaves nothing: no root, no
    /// directory, no record, its target unbound and its Vault token
    /// revoked. A volume that was serving its pod (`adopting`) stays as it
    /// was: mounted, bound, unread, with a record saying so that keeps
    /// every token to revoke once a publish replaces its files.
    fn rollback(&self, volume: LiveVolume, adopting: bool, mut salvaged: Vec<SalvagedToken>) {
        let (id, target) = (&volume.id, volume.placement.target.as_path());
        if adopting {
            if let Some(session) = &volume.token.session {
                salvaged.push(SalvagedToken {
                    token: session.token.clone(),
                    vault_addr: Some(volume.spec().vault_addr.to_string()),
                    attributes: volume.published.attributes.clone(),
                });
            }
            let mut kept = volume;
            kept.recorded = None;
            if let Err(error) = self.persist_with(&mut kept, Phase::Adopting, &salvaged) {
                tracing::error!(volume.id = %kept.id, %error, "Could not record a volume left to adopt");
            }
            let unreadable = VolumeRecord::of(&kept, Phase::Adopting, &salvaged)
                .unreadable("its adoption by a publish did not finish".to_owned());
            self.keep_unread(kept.id.clone(), unreadable);
            return;
        }
        if let Err(error) = self.roots.remove(target) {
            tracing::error!(volume.id = %id, %error, "Could not undo a failed publish; unpublish will retry");
        }
        let _ = self.store.remove(id);
        self.unbind_target(target, id);
        if let Some(session) = &volume.token.session {
            self.revoke_in_background(volume.endpoint.clone(), session.token.clone());
        }
    }

    /// Runs `work` until `deadline` or shutdown, whichever comes first.
    pub(super) async fn bounded<T>(
        &self,
        deadline: Instant,
        work: impl Future<Output = T>,
    ) -> Result<T, Stopped> {
        tokio::select! {
            result = tokio::time::timeout_at(deadline, work) => result.map_err(|_| Stopped::Deadline),
            () = self.stopping.cancelled() => Err(Stopped::Shutdown),
        }
    }
}

/// The root options of a volume: directory mode from its file mode, its
/// fsGroup and SELinux label.
pub(super) fn root_options(volume: &LiveVolume) -> RootOptions {
    RootOptions {
        mode: dir_mode(volume.file_mode()),
        gid: volume.placement.fs_group,
        selinux_context: volume.placement.selinux_context.clone(),
    }
}

/// Why bounded work was cut short.
#[derive(Debug, Clone, Copy)]
pub(super) enum Stopped {
    /// `--publish-timeout` passed.
    Deadline,
    /// The driver is shutting down.
    Shutdown,
}

impl Stopped {
    pub(super) fn into_error(self, timeout: Duration) -> Error {
        match self {
            Self::Deadline => Error::VaultTimeout {
                secs: timeout.as_secs_f64(),
            },
            Self::Shutdown => Error::ShuttingDown,
        }
    }
}

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
pub(super) fn joined_result<T>(
    joined: Result<Result<T, Error>, tokio::task::JoinError>,
) -> Result<T, Error> {
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
