//! The token step of a refresh: renew the volume's Vault token, or log in
//! again when it cannot be renewed or Vault says it was revoked; and the
//! old token's end once what it owned was fetched again.

use std::collections::HashSet;
use std::time::SystemTime;

use tokio::time::Instant;

use super::{Round, requests_at, secret_clocks};
use crate::secret::Secret;
use crate::timing::{self, Priority};
use crate::vault::{Caller, SecretRequest};
use crate::volume::Error;
use crate::volume::live::{LiveVolume, Session};
use crate::volume::manager::VolumeManager;
use crate::volume::plan::{self, TokenStep};

impl VolumeManager {
    /// The token step. Returns whether a new login replaced the token
    /// (which ends the old token's leases).
    pub(super) async fn token_step(
        &self,
        volume: &mut LiveVolume,
        step: TokenStep,
        now: Instant,
        round: &mut Round,
    ) -> bool {
        match step {
            TokenStep::Keep | TokenStep::Wait => false,
            TokenStep::Renew => {
                if self.renew_token(volume, now, round).await {
                    false
                } else {
                    self.login(volume, now, round).await
                }
            }
            TokenStep::Login => self.login(volume, now, round).await,
            TokenStep::Stale => {
                self.identity_stale(volume, now, round);
                false
            }
        }
    }

    /// A login is needed, but kubelet's service-account token has expired:
    /// its next republish brings a fresh one.
    pub(super) fn identity_stale(&self, volume: &mut LiveVolume, now: Instant, round: &mut Round) {
        volume.token.failed(now, None);
        self.metrics.observe_refresh("login", "error");
        round.failed = true;
        let error = Error::IdentityStale {
            audience: volume.spec().audience.clone(),
        };
        tracing::warn!(volume.id = %volume.id, pod.namespace = %volume.tenant(), %error, "Cannot replace the volume's Vault token yet");
    }

    /// Renews the token. Returns false when it cannot be renewed any more
    /// and a login must replace it.
    pub(super) async fn renew_token(
        &self,
        volume: &mut LiveVolume,
        now: Instant,
        round: &mut Round,
    ) -> bool {
        let Some(session) = volume.token.session.as_ref() else {
            return false;
        };
        let caller = Caller::refresh(volume.tenant(), Priority::Urgent);
        let renewal = self
            .vault
            .renew_token(
                &volume.endpoint,
                caller,
                &session.token,
                session.requested_ttl,
            )
            .await;
        match renewal {
            Ok(auth) => {
                if let Some(session) = volume.token.session.as_mut() {
                    session.renewed(&auth, timing::draw());
                }
                self.metrics.observe_refresh("renew_token", "ok");
                volume.token.recovered();
                true
            }
            Err(error) if error.is_transient() && !error.ends_token_renewal() => {
                self.metrics.observe_refresh("renew_token", "error");
                round.seen.note(&error);
                round.failed = true;
                volume.token.failed(now, error.retry_after());
                let error = Error::TokenRenewal { source: error };
                tracing::warn!(volume.id = %volume.id, pod.namespace = %volume.tenant(), %error, "Refreshing the Vault token failed; files stay as they are");
                true
            }
            Err(error) => {
                // Revoked, expired, not renewable, past its max TTL or its
                // role deleted (Vault's 500s): log in again.
                if let Some(session) = volume.token.session.as_mut() {
                    session.exhausted = true;
                }
                self.metrics.observe_refresh("renew_token", "error");
                tracing::info!(volume.id = %volume.id, %error, "The Vault token cannot be renewed; logging in again");
                false
            }
        }
    }

    /// Logs in as the pod. Returns whether it succeeded.
    pub(super) async fn login(
        &self,
        volume: &mut LiveVolume,
        now: Instant,
        round: &mut Round,
    ) -> bool {
        let identity = volume
            .identity
            .as_ref()
            .filter(|i| i.is_valid_at(SystemTime::now()))
            .cloned();
        let Some(identity) = identity else {
            self.identity_stale(volume, now, round);
            return false;
        };
        let spec = volume.spec();
        let caller = Caller::refresh(volume.tenant(), Priority::Urgent);
        let login = self
            .vault
            .login(
                &volume.endpoint,
                caller,
                &spec.auth_mount,
                &spec.role,
                identity.jwt(),
            )
            .await;
        match login {
            Ok(auth) => {
                self.metrics.observe_refresh("login", "ok");
                volume.token.session = Some(Session::from_login(auth, timing::draw()));
                volume.token.recovered();
                true
            }
            Err(source) => {
                self.metrics.observe_refresh("login", "error");
                round.seen.note(&source);
                round.failed = true;
                let retry_after = source.retry_after();
                let error = Error::Login {
                    mount: spec.auth_mount.clone(),
                    role: spec.role.clone(),
                    source,
                };
                volume.token.failed(now, retry_after);
                tracing::warn!(volume.id = %volume.id, pod.namespace = %volume.tenant(), pod.name = %volume.published.pod.name, %error, "Logging in to Vault again failed; files stay as they are");
                false
            }
        }
    }

    /// After a refusal: whether Vault says the volume's token is no longer
    /// valid (revoked by an operator). Asked at most every
    /// [`plan::VALIDITY_CHECK_INTERVAL`].
    pub(super) async fn token_revoked(&self, volume: &mut LiveVolume, now: Instant) -> bool {
        if !plan::may_check_token(volume.token.checked_at, now) {
            return false;
        }
        let Some(token) = volume.token.usable(now).cloned() else {
            return false;
        };
        volume.token.checked_at = Some(now);
        let caller = Caller::refresh(volume.tenant(), Priority::Urgent);
        matches!(
            self.vault
                .token_is_valid(&volume.endpoint, caller, &token)
                .await,
            Ok(false)
        )
    }

    /// The token was revoked: log in again at once, then fetch `again`,
    /// every lease and whatever failed, with their backoff reset.
    pub(super) async fn replace_revoked_token(
        &self,
        volume: &mut LiveVolume,
        mut again: HashSet<SecretRequest>,
        round: &mut Round,
    ) {
        tracing::warn!(volume.id = %volume.id, pod.namespace = %volume.tenant(), "Vault no longer honours the volume's token (revoked?); logging in again");
        round.token_dead = true;
        let now = Instant::now();
        if !self.login(volume, now, round).await {
            return;
        }
        again.extend(requests_at(
            volume,
            &plan::after_new_token(&secret_clocks(volume)),
        ));
        for secret in &mut volume.secrets {
            if secret.failures > 0 {
                secret.failures = 0;
                again.insert(secret.request.clone());
            }
        }
        round.failed = false;
        self.rewrite(volume, &again, true, now, round).await;
    }

    /// A new login replaced `old`, and what it owned was fetched again
    /// under the new token: the old token is revoked, so its leases do not
    /// live on until their TTLs. While something still failed, the files
    /// may hold the old token's credentials, and it is left to expire.
    pub(super) fn retire_replaced_token(
        &self,
        volume: &LiveVolume,
        old: Option<Secret<String>>,
        round: Round,
    ) {
        let Some(old) = old else {
            return;
        };
        let replaced = volume
            .token
            .session
            .as_ref()
            .is_some_and(|s| s.token != old);
        if replaced && !round.failed && !round.token_dead {
            self.revoke_in_background(volume.endpoint.clone(), old);
        }
    }
}
