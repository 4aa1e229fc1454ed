//! `NodeUnpublishVolume`: the pod's view goes first (the target unmounted
//! and removed, without waiting for a refresh in flight), then the Vault
//! clean-up (the token revoked with its leases, the record removed) on the
//! task tracker. An unpublish never touches a target bound to another
//! volume.

use std::sync::Arc;

use tokio::time::Instant;

use super::Error;
use super::guard::Operation;
use super::live::LiveVolume;
use super::manager::{Volume, VolumeManager};
use super::materialise::off_runtime;
use super::publish::joined_result;
use super::record;
use super::request::CheckedUnpublish;
use super::spec::VolumeId;
use crate::secret::Secret;
use crate::vault::Endpoint;

impl VolumeManager {
    /// `NodeUnpublishVolume` with a bounded answer: the target is unmounted
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
        // On the task tracker: a cancelled call never stops between the
        // unmount and the start of the clean-up.
        let manager = Arc::clone(self);
        let start = self
            .tracker
            .spawn(async move { manager.unpublish_start(request).await });
        let Some(cleanup) = joined_result(start.await)? else {
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

    /// First half: removes the target, forgets the volume and starts its
    /// clean-up. `None` when there is nothing more to do (a clean-up for
    /// the volume already runs, or the target is another volume's).
    /// Unknown volumes and missing targets are OK. The target is removed
    /// on the blocking pool: unmounting a tmpfs frees every inode in it,
    /// and a tenant's tree of 128,000 directories takes the kernel a third
    /// of a second, which must not stop the workers that answer kubelet.
    async fn unpublish_start(
        self: &Arc<Self>,
        request: CheckedUnpublish,
    ) -> Result<Option<tokio::task::JoinHandle<Result<(), Error>>>, Error> {
        let CheckedUnpublish { id, target } = request;
        let path = target.as_path();
        if let Some(holder) = self.target_holder(path).filter(|h| *h != id) {
            tracing::warn!(volume.id = %id, target = %path.display(), holder = %holder, "Unpublish names a target another volume holds; leaving it alone");
            return Ok(None);
        }
        let guard = match self.guards.begin(&id, Operation::Unpublish) {
            Ok(guard) => guard,
            // A retry of an unpublish whose clean-up still waits behind a
            // refresh: the target is gone, the rest finishes on its own.
            Err(_) if self.guards.running(&id) == Some(Operation::Unpublish) => {
                self.remove_off_runtime(path).await?;
                return Ok(None);
            }
            Err(busy) => return Err(busy),
        };
        // If removing fails, the volume stays managed and kubelet retries.
        self.remove_off_runtime(path).await?;
        let volume = self.forget(&id);
        self.unbind_target(path, &id);
        let manager = Arc::clone(self);
        Ok(Some(self.tracker.spawn(async move {
            let _guard = guard;
            manager.retire(&id, volume).await
        })))
    }

    /// Second half: waits for a refresh holding the volume (so its last
    /// token is the one revoked and its last record write comes before the
    /// removal), revokes and removes the record.
    async fn retire(&self, id: &VolumeId, volume: Option<Arc<Volume>>) -> Result<(), Error> {
        let mut removed = Ok(());
        if let Some(volume) = volume {
            let live = volume.state.lock().await.take();
            if let Some(mut live) = live {
                self.set_degraded(&mut live, false);
                removed = self
                    .remove_off_runtime(live.placement.target.as_path())
                    .await;
                self.revoke_volume(&live).await;
                self.metrics.forget_volume(&live.labels);
            }
        } else if let Some(bytes) = self.store.load(id)
            && let Ok(recorded) = record::decode(&bytes)
        {
            self.revoke_recorded(&recorded).await;
        }
        if let Some(unread) = self.take_unread(id) {
            self.revoke_salvaged(id, unread.salvaged);
        }
        removed?;
        self.store.remove(id)
    }

    /// Removes `target` (unmounts its root) on the blocking pool.
    async fn remove_off_runtime(&self, target: &std::path::Path) -> Result<(), Error> {
        let (roots, target) = (Arc::clone(&self.roots), target.to_path_buf());
        off_runtime(move || roots.remove(&target)).await??;
        Ok(())
    }

    /// Revokes a live volume's token, and with it every lease it created.
    /// A batch token cannot be revoked: its leases are revoked one by one
    /// where its policy allows. Failures are logged: TTLs end them anyway.
    async fn revoke_volume(&self, volume: &LiveVolume) {
        let Some(session) = &volume.token.session else {
            return;
        };
        if session.expires_at <= Instant::now() {
            return;
        }
        if !session.batch {
            // revoke-self revokes every lease the token created.
            if let Err(error) = self
                .vault
                .revoke_token(&volume.endpoint, &session.token)
                .await
            {
                tracing::warn!(volume.id = %volume.id, %error, "Could not revoke the volume's Vault token; it ends with its TTL");
            }
            return;
        }
        let mut left = 0;
        for lease in volume.secrets.iter().filter_map(|s| s.lease_id.as_ref()) {
            if let Err(error) = self
                .vault
                .revoke_lease(&volume.endpoint, &session.token, lease)
                .await
            {
                left += 1;
                tracing::warn!(volume.id = %volume.id, lease.id = lease.as_str(), %error, "Could not revoke a lease of a batch token; it ends with its TTL");
            }
        }
        if left > 0 {
            self.metrics.observe_unrevoked_leases(volume.tenant(), left);
        }
    }

    /// Revokes `token` at `at` on the task tracker.
    pub(super) fn revoke_in_background(&self, at: Endpoint, token: Secret<String>) {
        let vault = Arc::clone(&self.vault);
        self.tracker.spawn(async move {
            let _ = vault.revoke_token(&at, &token).await;
        });
    }
}
