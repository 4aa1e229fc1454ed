//! Restart: re-adopting the volumes recorded in the state directory.
//! Finished publishes resume their schedules, re-rendering from the Vault
//! answers they kept (no login, no fetch of what is not due); unfinished
//! new publishes are undone. A record that cannot be read or resumed, and
//! an adoption that did not finish, leave the volume as it is (mounted,
//! serving its pod), for its next publish to adopt.

use std::collections::HashMap;
use std::sync::Arc;

use super::Error;
use super::live::{LiveVolume, VolumeParts};
use super::manager::VolumeManager;
use super::memory::cost::{self, VolumeCost};
use super::record::{Loaded, Phase, SalvagedToken, VolumeRecord};
use super::spec::{self, SpecDefaults, TargetPath, VolumeId};
use crate::vault::Endpoint;

impl VolumeManager {
    /// Re-adopts the volumes recorded in the state directory. Returns how
    /// many volumes are managed.
    pub async fn restore(&self) -> Result<usize, Error> {
        self.roots.open()?;
        let loaded = Loaded::read(self.store.list()?);
        for mut unreadable in loaded.unreadable {
            let Ok(id) = VolumeId::parse(&unreadable.volume_id) else {
                continue;
            };
            // Its target is bound to it only if it passes a publish's checks.
            unreadable.target = unreadable
                .target
                .filter(|target| self.checked_path(target).is_ok());
            tracing::error!(volume.id = %id, reason = %unreadable.reason, salvaged_tokens = unreadable.salvaged.len(), "A volume record cannot be read; the volume stays as it is (mounted, serving its pod, not refreshed) until kubelet's next publish of it adopts it");
            self.keep_unread(id, unreadable);
        }
        for record in loaded.records {
            let Ok(id) = VolumeId::parse(&record.volume_id) else {
                continue;
            };
            self.restore_one(id, &record).await?;
        }
        let count = self.volume_count();
        self.metrics.set_volumes(count);
        Ok(count)
    }

    async fn restore_one(&self, id: VolumeId, record: &VolumeRecord<'_>) -> Result<(), Error> {
        // The record is the driver's own, but nothing it names is touched
        // unless it passes the checks a publish applies: a target outside
        // kubelet's pods directory, or reached through a symlink, is never
        // unmounted, removed or written.
        let target = match self.checked_path(&record.target_path) {
            Ok(target) => target,
            Err(error) => {
                tracing::error!(volume.id = %id, %error, "Ignoring a state record whose target path fails the publish checks; nothing it names is touched");
                return self.store.remove(&id);
            }
        };
        if record.phase == Phase::Adopting {
            // The volume was serving its pod when a publish began to adopt
            // it; it still is. Its next publish adopts it again.
            tracing::warn!(volume.id = %id, "A publish adopting this volume did not finish; the volume stays as it is until kubelet publishes it again");
            self.keep_unread(
                id,
                record.unreadable("its adoption by a publish did not finish".to_owned()),
            );
            return Ok(());
        }
        let mounted = self.roots.is_root(target.as_path()).unwrap_or(false);
        if record.phase == Phase::Publishing || !mounted {
            tracing::info!(volume.id = %id, "Cleaning up a volume left unfinished or unmounted by a previous run");
            if let Err(error) = self.roots.remove(target.as_path()) {
                tracing::warn!(volume.id = %id, %error, "Could not clean up the volume's target");
            }
            self.revoke_recorded(record).await;
            return self.store.remove(&id);
        }
        let defaults = match record.spec_defaults(&self.config.spec_defaults) {
            Ok(defaults) => defaults,
            Err(addr) => {
                tracing::error!(volume.id = %id, vault.addr = %addr, "A volume was published against a Vault address the flags no longer allow (--vault-addr, --allowed-vault-addrs); nothing is sent there, so its files are no longer refreshed and its Vault token and leases are not revoked (they end with their TTLs). Allow the address again to keep managing the volume, or delete the pod");
                self.bind_target(target.as_path(), &id);
                return Ok(());
            }
        };
        match self.resume(&id, record, target, &defaults).await {
            Ok(live) => {
                tracing::info!(volume.id = %id, kept_answers = live.secrets.iter().filter(|s| s.answer.is_some()).count(), "Resumed managing a published volume");
                self.adopt(live);
            }
            Err(error) => {
                // The files stay; kubelet's next publish adopts the volume
                // in place and revokes the tokens this record holds.
                tracing::warn!(volume.id = %id, %error, "Could not resume a volume from its record; waiting for kubelet to publish it again");
                self.keep_unread(id, record.unreadable(error.to_string()));
            }
        }
        Ok(())
    }

    /// The live volume a record describes, its templates compiled.
    async fn resume(
        &self,
        id: &VolumeId,
        record: &VolumeRecord<'_>,
        target: TargetPath,
        defaults: &SpecDefaults,
    ) -> Result<LiveVolume, Error> {
        let restored = record.restored(target, defaults, self.config.selinux_context.clone())?;
        let templates = self
            .materialiser
            .renderer
            .compile_off_thread(&restored.published.spec.templates)
            .await?;
        let memory = self.memory.charge(&restored.published.pod.namespace);
        let mut live = LiveVolume::new(VolumeParts {
            id: id.clone(),
            placement: restored.placement,
            published: restored.published,
            templates,
            identity: restored.identity,
            session: restored.session,
            secrets: restored.secrets,
            memory,
        });
        // What exists counts, whatever the budget says: the files (their
        // pages, twice, and at least an inode per template file, directory
        // and link), the kept answers, the record, the attributes.
        let files = 2 * self.roots.bytes_used(live.placement.target.as_path());
        let inodes = (3 * live.templates.paths().count() as u64 + 4) * cost::INODE_BYTES;
        live.cost = VolumeCost {
            files: files + inodes,
            kept_answers: live.kept_bytes(),
            record: cost::record_cost(record.encode().len() as u64),
            templates: live.templates.held_bytes(),
            attributes: LiveVolume::attributes_cost(&live.published.attributes),
        };
        live.force_charge();
        live.recorded = None;
        Ok(live)
    }

    /// A recorded target path, checked as a publish checks kubelet's.
    fn checked_path(&self, path: &std::path::Path) -> Result<TargetPath, Error> {
        let raw = path.to_str().ok_or_else(|| Error::InvalidTargetPath {
            path: path.display().to_string(),
            reason: "it is not UTF-8".to_owned(),
        })?;
        let target = TargetPath::parse(raw, &self.config.kubelet_dir)?;
        self.roots.check_target(target.as_path())?;
        Ok(target)
    }

    /// Revokes the token a record holds, at the Vault it was published
    /// with (while the flags allow it), bounded by the revoke timeout.
    pub(super) async fn revoke_recorded(&self, record: &VolumeRecord<'_>) {
        let Some(session) = record.session() else {
            return;
        };
        let Some(at) = endpoint_for_recorded(
            &record.volume_id,
            record.spec_defaults(&self.config.spec_defaults),
            &record.attributes,
        ) else {
            return;
        };
        let _ = self.vault.revoke_token(&at, &session.token).await;
    }

    /// Revokes the tokens salvaged for a volume that was just adopted (its
    /// files replaced) or unpublished, in the background.
    pub(super) fn revoke_salvaged(&self, id: &VolumeId, salvaged: Vec<SalvagedToken>) {
        if salvaged.is_empty() {
            return;
        }
        tracing::info!(volume.id = %id, tokens = salvaged.len(), "Revoking the Vault tokens the volume held before it was adopted");
        for token in salvaged {
            let defaults = token.spec_defaults(&self.config.spec_defaults);
            if let Some(at) = endpoint_for_recorded(id.as_str(), defaults, &token.attributes) {
                let vault = Arc::clone(&self.vault);
                self.tracker.spawn(async move {
                    let _ = vault.revoke_token(&at, &token.token).await;
                });
            }
        }
    }
}

/// The Vault of a recorded volume's attributes, when its address is
/// still allowed.
fn endpoint_for_recorded(
    volume_id: &str,
    defaults: Result<SpecDefaults, String>,
    attributes: &std::collections::BTreeMap<String, String>,
) -> Option<Endpoint> {
    let defaults = match defaults {
        Ok(defaults) => defaults,
        Err(addr) => {
            tracing::warn!(volume.id = %volume_id, vault.addr = %addr, "Not revoking a volume's Vault token: its Vault address is no longer allowed; the token and its leases end with their TTLs");
            return None;
        }
    };
    let context: HashMap<String, String> = attributes.clone().into_iter().collect();
    let (spec, _) = spec::parse_attributes(&context, &defaults).ok()?;
    Some(Endpoint {
        address: spec.vault_addr,
        namespace: spec.namespace,
    })
}
