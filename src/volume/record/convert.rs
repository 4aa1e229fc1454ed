//! Every conversion between a record and the live volume: what a live
//! volume writes ([`VolumeRecord::of`]), and what a record gives back to
//! build one ([`VolumeRecord::restored`]). Templates are compiled and
//! clients chosen by the restore, not here.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use super::{
    Phase, RECORD_VERSION, SalvagedToken, StoredAction, StoredIdentity, StoredSalvage,
    StoredSecret, StoredToken, Unreadable, VolumeRecord, from_ms, to_ms,
};
use crate::secret::Secret;
use crate::storage::selinux;
use crate::timing::Step;
use crate::vault::ServiceAccountToken;
use crate::volume::Error;
use crate::volume::live::{self, LiveSecret, LiveVolume, Placement, Published, Session};
use crate::volume::spec::{self, SpecDefaults, TargetPath};

/// What a record gives back, to build a live volume from (with its
/// templates compiled by the caller).
pub(in crate::volume) struct Restored {
    pub placement: Placement,
    pub published: Published,
    pub identity: Option<ServiceAccountToken>,
    pub session: Option<Session>,
    pub secrets: Vec<LiveSecret>,
}

impl<'a> VolumeRecord<'a> {
    /// The record of `volume` as it stands, borrowing its answers.
    /// `salvaged`: the tokens an adopting publish revokes once the files
    /// are replaced (kept in the record so no crash loses them).
    pub(in crate::volume) fn of(
        volume: &'a LiveVolume,
        phase: Phase,
        salvaged: &[SalvagedToken],
    ) -> Self {
        let placement = &volume.placement;
        let published = &volume.published;
        Self {
            version: RECORD_VERSION,
            volume_id: volume.id.to_string(),
            target_path: placement.target.as_path().to_path_buf(),
            readonly: placement.readonly,
            fs_group: placement.fs_group,
            // Only a label the request asked for is the volume's own; the
            // node's default is applied again from the flags after a restart.
            selinux_context: placement
                .selinux_context
                .as_ref()
                .filter(|c| c.required)
                .map(|c| c.label.clone()),
            vault_addr: Some(published.spec.vault_addr.to_string()),
            fingerprint: published.fingerprint.clone(),
            attributes: published.attributes.clone(),
            phase,
            identity: volume.identity.as_ref().map(|i| StoredIdentity {
                jwt: i.jwt().expose().clone(),
                expires_at_ms: to_ms(i.expires_at()),
            }),
            token: volume.token.session.as_ref().map(|s| StoredToken {
                token: s.token.expose().clone(),
                expires_at_ms: to_ms(live::wall_clock(s.expires_at)),
                requested_ttl_secs: s.requested_ttl.as_secs(),
                renewable: s.renewable,
                batch: s.batch,
                exhausted: s.exhausted,
                due_ms: to_ms(live::wall_clock(s.due)),
            }),
            secrets: volume.secrets.iter().map(stored_secret).collect(),
            salvaged: salvaged
                .iter()
                .map(|s| StoredSalvage {
                    token: s.token.expose().clone(),
                    vault_addr: s.vault_addr.clone(),
                    attributes: s.attributes.clone(),
                })
                .collect(),
        }
    }

    /// What this record gives back at its checked `target`: attributes
    /// read again (with `defaults`, see [`VolumeRecord::spec_defaults`]),
    /// token, identity and secrets with their answers and deadlines.
    /// `node_context` is the node's SELinux default, applied when the
    /// request named none.
    pub(in crate::volume) fn restored(
        &self,
        target: TargetPath,
        defaults: &SpecDefaults,
        node_context: Option<selinux::Context>,
    ) -> Result<Restored, Error> {
        let context: HashMap<String, String> = self.attributes.clone().into_iter().collect();
        let (spec, pod) = spec::parse_attributes(&context, defaults)?;
        Ok(Restored {
            placement: Placement {
                target,
                readonly: self.readonly,
                fs_group: self.fs_group,
                selinux_context: self
                    .selinux_context
                    .clone()
                    .map(selinux::Context::required)
                    .or(node_context),
            },
            published: Published {
                fingerprint: self.fingerprint.clone(),
                attributes: self.attributes.clone(),
                spec,
                pod,
            },
            identity: self.identity.as_ref().map(|stored| {
                ServiceAccountToken::from_parts(
                    Secret::new(stored.jwt.clone()),
                    from_ms(stored.expires_at_ms),
                )
            }),
            session: self.token.as_ref().map(session_of),
            secrets: self.secrets.iter().map(live_secret).collect(),
        })
    }

    /// The Vault tokens this record holds, for a volume that cannot be
    /// resumed from it (or whose adoption did not finish): revoked once the
    /// volume's next publish replaces its files.
    pub(in crate::volume) fn salvaged_tokens(&self) -> Vec<SalvagedToken> {
        self.salvaged
            .iter()
            .map(SalvagedToken::from)
            .chain(self.token.as_ref().map(|t| SalvagedToken {
                token: Secret::new(t.token.clone()),
                vault_addr: self.vault_addr.clone(),
                attributes: self.attributes.clone(),
            }))
            .collect()
    }

    /// This record as one that cannot be resumed: its volume stays as it
    /// is until a publish adopts it.
    pub(in crate::volume) fn unreadable(&self, reason: String) -> Unreadable {
        Unreadable {
            volume_id: self.volume_id.clone(),
            reason,
            target: Some(self.target_path.clone()),
            salvaged: self.salvaged_tokens(),
        }
    }

    /// The Vault token the record holds, as the live volume holds it.
    pub(in crate::volume) fn session(&self) -> Option<Session> {
        self.token.as_ref().map(session_of)
    }
}

fn stored_secret(t: &LiveSecret) -> StoredSecret<'_> {
    StoredSecret {
        request: t.request.clone(),
        lease_id: t.lease_id.clone(),
        action: match t.step {
            Step::Renew => StoredAction::Renew,
            Step::Refetch => StoredAction::Refetch,
        },
        increment_secs: t.increment.as_secs(),
        expires_at_ms: t.expires_at.map(|e| to_ms(live::wall_clock(e))),
        due_ms: to_ms(live::wall_clock(t.due)),
        // Vault's answers are JSON, hence UTF-8; one that is not is
        // simply fetched again after a restart.
        answer: t
            .answer
            .as_ref()
            .and_then(|a| std::str::from_utf8(a.expose()).ok())
            .map(Cow::Borrowed),
    }
}

fn live_secret(stored: &StoredSecret<'_>) -> LiveSecret {
    LiveSecret {
        request: stored.request.clone(),
        answer: stored
            .answer
            .as_ref()
            .map(|a| Secret::new(a.as_bytes().to_vec())),
        lease_id: stored.lease_id.clone(),
        step: match stored.action {
            StoredAction::Renew => Step::Renew,
            StoredAction::Refetch => Step::Refetch,
        },
        increment: Duration::from_secs(stored.increment_secs),
        expires_at: stored.expires_at_ms.map(|ms| live::monotonic(from_ms(ms))),
        due: live::monotonic(from_ms(stored.due_ms)),
        failures: 0,
    }
}

fn session_of(stored: &StoredToken) -> Session {
    Session {
        token: Secret::new(stored.token.clone()),
        expires_at: live::monotonic(from_ms(stored.expires_at_ms)),
        requested_ttl: Duration::from_secs(stored.requested_ttl_secs),
        renewable: stored.renewable,
        batch: stored.batch,
        exhausted: stored.exhausted,
        due: live::monotonic(from_ms(stored.due_ms)),
    }
}
