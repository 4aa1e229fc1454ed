//! The scheduled refresh of one volume: the executor of a
//! [`plan::RefreshPlan`]. It renews or replaces the Vault token, renews
//! due leases in place, re-fetches what must be replaced or re-read,
//! re-renders and writes only when the files changed (then signals the
//! app, if the volume asks). A request refused because an operator revoked
//! the token leads to one immediate new login. Failures keep the previous
//! files and are retried on the backoff [`crate::timing`] decides.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use tokio::time::Instant;

use super::Error;
use super::live::{self, LiveVolume, Session};
use super::manager::VolumeManager;
use super::materialise::{Mode, Seen, WriteAt};
use super::plan::{self, AfterRenewal, SecretClock, TokenClock, TokenStep};
use super::record::Phase;
use super::spec::VolumeId;
use crate::refresh::Refresher;
use crate::secret::Secret;
use crate::signal::PodRef;
use crate::storage::WriteOutcome;
use crate::timing::{self, Priority, fairness};
use crate::vault::{Caller, LeaseId, SecretRequest};

/// What one refresh did, for its log line and its caller.
#[derive(Debug, Default, Clone, Copy)]
struct Round {
    renewed: usize,
    refetched: usize,
    written: Option<WriteOutcome>,
    /// Something failed.
    failed: bool,
    /// Vault said the token the round began with is no longer valid.
    token_dead: bool,
    seen: Seen,
}

fn token_clock(volume: &LiveVolume) -> TokenClock {
    TokenClock {
        session: volume
            .token
            .session
            .as_ref()
            .map(|s| (s.expires_at, s.due, s.exhausted)),
        retry_at: volume.token.retry_at,
        identity_valid: volume
            .identity
            .as_ref()
            .is_some_and(|i| i.is_valid_at(SystemTime::now())),
    }
}

fn secret_clocks(volume: &LiveVolume) -> Vec<SecretClock> {
    volume
        .secrets
        .iter()
        .map(|s| SecretClock {
            due: s.due,
            step: s.step,
            leased: s.lease_id.is_some(),
            expires_at: s.expires_at,
            has_answer: s.answer.is_some(),
        })
        .collect()
}

fn requests_at(volume: &LiveVolume, indices: &[usize]) -> HashSet<SecretRequest> {
    indices
        .iter()
        .map(|&i| volume.secrets[i].request.clone())
        .collect()
}

impl VolumeManager {
    /// One scheduled refresh of a volume. Returns its next deadline.
    pub(super) async fn refresh_volume(&self, volume: &mut LiveVolume) -> Option<Instant> {
        let now = Instant::now();
        let plan = plan::plan(
            token_clock(volume),
            &secret_clocks(volume),
            now,
            self.vault.paused_until(),
        );
        let mut round = Round::default();
        let old_token = volume.token.session.as_ref().map(|s| s.token.clone());
        let mut refetch = requests_at(volume, &plan.refetch);
        let token_changed = self.token_step(volume, plan.token, now, &mut round).await;
        if token_changed {
            refetch.extend(requests_at(
                volume,
                &plan::after_new_token(&secret_clocks(volume)),
            ));
        }
        if volume.token.usable(now).is_some() {
            let renew: Vec<usize> = plan
                .renew
                .into_iter()
                .filter(|&i| !refetch.contains(&volume.secrets[i].request))
                .collect();
            self.renew_leases(volume, &renew, now, &mut refetch, &mut round)
                .await;
            self.defer(volume, &plan.defer, now);
        } else if let Some(retry) = volume.token.retry_at {
            // No usable token: secret deadlines wait behind its retry.
            for t in volume.secrets.iter_mut().filter(|t| t.due <= now) {
                t.due = retry;
            }
        }
        // A renewal refused: the token may have been revoked. Asking now,
        // before fetching with it, spares requests doomed to be refused.
        if round.seen.denied && self.token_revoked(volume, now).await {
            self.replace_revoked_token(volume, refetch, &mut round)
                .await;
        } else {
            self.rewrite(volume, &refetch, token_changed, now, &mut round)
                .await;
            if round.seen.denied && self.token_revoked(volume, now).await {
                self.replace_revoked_token(volume, HashSet::new(), &mut round)
                    .await;
            }
        }
        self.retire_replaced_token(volume, old_token, round);
        self.finish_refresh(volume, round)
    }

    /// The token step. Returns whether a new login replaced the token
    /// (which ends the old token's leases).
    async fn token_step(
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
    fn identity_stale(&self, volume: &mut LiveVolume, now: Instant, round: &mut Round) {
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
    async fn renew_token(&self, volume: &mut LiveVolume, now: Instant, round: &mut Round) -> bool {
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
    async fn login(&self, volume: &mut LiveVolume, now: Instant, round: &mut Round) -> bool {
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

    /// Renews the leases at `due` in place, up to
    /// [`fairness::RENEWALS_IN_FLIGHT`] at once so one slow answer does not
    /// hold up the others; leases that cannot be renewed go into `refetch`.
    async fn renew_leases(
        &self,
        volume: &mut LiveVolume,
        due: &[usize],
        now: Instant,
        refetch: &mut HashSet<SecretRequest>,
        round: &mut Round,
    ) {
        let Some(token) = volume.token.usable(now).cloned() else {
            return;
        };
        let (vault, at, tenant, token) = (&self.vault, &volume.endpoint, volume.tenant(), &token);
        let secrets = &volume.secrets;
        let leases: Vec<(usize, LeaseId, Duration)> = due
            .iter()
            .filter_map(|&i| Some((i, secrets[i].lease_id.clone()?, secrets[i].increment)))
            .collect();
        let results: Vec<_> =
            futures::stream::iter(leases.into_iter().map(|(i, lease, increment)| async move {
                let caller = Caller::refresh(tenant, Priority::Urgent);
                let result = vault
                    .renew_lease(at, caller, token, &lease, increment)
                    .await;
                (i, result, Instant::now())
            }))
            .buffer_unordered(fairness::RENEWALS_IN_FLIGHT)
            .collect()
            .await;
        for (i, result, at) in results {
            let tracked = &mut volume.secrets[i];
            let lease = tracked.lease_id.as_ref().map_or("", |l| l.as_str());
            match result {
                Ok(renewal) => {
                    round.renewed += 1;
                    self.metrics.observe_refresh("renew_lease", "ok");
                    tracked.renewed(at, renewal.ttl, timing::draw());
                }
                Err(error) => {
                    self.metrics.observe_refresh("renew_lease", "error");
                    round.seen.note(&error);
                    match plan::after_renewal_error(&error) {
                        AfterRenewal::Retry => {
                            tracing::warn!(volume.id = %volume.id, lease.id = lease, %error, "Renewing a lease failed; retrying");
                            tracked.failed(now, error.retry_after(), timing::draw());
                            round.failed = true;
                        }
                        AfterRenewal::Refetch | AfterRenewal::CheckToken => {
                            tracing::info!(volume.id = %volume.id, lease.id = lease, %error, "A lease cannot be renewed; fetching a new secret");
                            refetch.insert(tracked.request.clone());
                        }
                    }
                }
            }
        }
    }

    /// While Vault pushes back, static re-reads (which replace nothing that
    /// expires) wait node-wide until the pause ends.
    fn defer(&self, volume: &mut LiveVolume, deferred: &[usize], now: Instant) {
        let Some(until) = self.vault.paused_until() else {
            return;
        };
        for &i in deferred {
            volume.secrets[i].deferred(now, until.saturating_duration_since(now), timing::draw());
        }
        if !deferred.is_empty() {
            self.metrics
                .observe_cosmetic_deferred(deferred.len() as u64);
            tracing::info!(
                volume.id = %volume.id,
                pod.namespace = %volume.tenant(),
                deferred = deferred.len(),
                pause_secs = until.saturating_duration_since(now).as_secs_f64(),
                "Vault pushed back; re-reading static secrets waits for the pause to end"
            );
        }
    }

    /// Fetches `refetch` again, re-renders and writes; or, when only the
    /// token changed and the volume has a token file, rewrites that.
    async fn rewrite(
        &self,
        volume: &mut LiveVolume,
        refetch: &HashSet<SecretRequest>,
        token_changed: bool,
        now: Instant,
        round: &mut Round,
    ) {
        if volume.token.usable(now).is_none() {
            return;
        }
        let rewrite_token = token_changed && volume.spec().token_file.is_some();
        let cache_complete = volume.secrets.iter().all(|t| t.answer.is_some());
        if refetch.is_empty() && !(rewrite_token && cache_complete) {
            if rewrite_token && let Some(files) = self.materialiser.files_in_volume(volume) {
                self.write_refreshed(volume, files, round, "token").await;
            }
            return;
        }
        let kind_static = refetch.iter().all(|r| {
            volume
                .secrets
                .iter()
                .any(|t| &t.request == r && t.lease_id.is_none())
        });
        let kind = if kind_static { "static" } else { "refetch" };
        round.refetched += refetch.len();
        let rendered = self
            .materialiser
            .render(volume, Mode::Refresh { due: refetch }, &mut round.seen)
            .await;
        match rendered {
            Ok(files) => {
                if !self.write_refreshed(volume, files, round, kind).await {
                    for t in volume
                        .secrets
                        .iter_mut()
                        .filter(|t| refetch.contains(&t.request))
                    {
                        t.failed(now, None, timing::draw());
                    }
                }
            }
            Err(error) => {
                self.metrics.observe_refresh(kind, "error");
                tracing::warn!(volume.id = %volume.id, %error, "Refreshing secrets failed; the previous files stay");
                round.failed = true;
                // A render stopped at its limits would stop there again:
                // the volume waits long before it gets a render thread
                // again, so one tenant cannot keep them busy.
                let penalty = match &error {
                    Error::Template(e) if e.is_limit() => {
                        volume.render_strikes = volume.render_strikes.saturating_add(1);
                        Some(timing::render_limit_delay(
                            volume.render_strikes,
                            timing::draw(),
                        ))
                    }
                    _ => None,
                };
                for t in volume
                    .secrets
                    .iter_mut()
                    .filter(|t| refetch.contains(&t.request) && t.due <= now)
                {
                    t.failed(now, None, timing::draw());
                    if let Some(penalty) = penalty {
                        t.due = t.due.max(now + penalty);
                    }
                }
            }
        }
    }

    /// Writes refreshed files into the sealed root. Returns whether it did.
    async fn write_refreshed(
        &self,
        volume: &mut LiveVolume,
        files: super::materialise::Files,
        round: &mut Round,
        kind: &'static str,
    ) -> bool {
        // The render finished within its limits.
        volume.render_strikes = 0;
        match self
            .materialiser
            .write(volume, files, WriteAt::Sealed)
            .await
        {
            Ok(written) => {
                self.metrics.observe_refresh(kind, "ok");
                round.written = Some(written);
                true
            }
            Err(error) => {
                self.metrics.observe_refresh(kind, "error");
                tracing::error!(volume.id = %volume.id, %error, "Writing refreshed files failed; the previous files stay");
                round.failed = true;
                false
            }
        }
    }

    /// After a refusal: whether Vault says the volume's token is no longer
    /// valid (revoked by an operator). Asked at most every
    /// [`plan::VALIDITY_CHECK_INTERVAL`].
    async fn token_revoked(&self, volume: &mut LiveVolume, now: Instant) -> bool {
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
    async fn replace_revoked_token(
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
    fn retire_replaced_token(
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

    /// Ends a refresh: signals the app if the files changed, records the
    /// outcome, and returns the next deadline.
    fn finish_refresh(&self, volume: &mut LiveVolume, round: Round) -> Option<Instant> {
        if let (Some(WriteOutcome::Replaced), Some(app)) = (round.written, &volume.spec().signal) {
            let pod = PodRef::new(
                volume.placement.target.pod_uid(),
                &volume.published.pod.namespace,
                &volume.published.pod.name,
            );
            app.after_change(&self.tracker, &self.metrics, pod);
        }
        let now = Instant::now();
        self.set_degraded(volume, round.failed || volume.holds_ended(now));
        if round.seen.outage {
            self.outages.wait(&volume.endpoint, volume.id.clone());
        }
        self.persist_logged(volume, Phase::Published);
        let next = volume.next_due();
        self.publish_schedule_metrics(volume, next);
        tracing::info!(
            volume.id = %volume.id,
            pod.namespace = %volume.tenant(),
            pod.name = %volume.published.pod.name,
            renewed = round.renewed,
            refetched = round.refetched,
            files = match round.written {
                Some(WriteOutcome::Replaced) => "replaced",
                Some(WriteOutcome::Unchanged) => "unchanged",
                None => "untouched",
            },
            degraded = volume.degraded,
            "Refreshed volume"
        );
        next
    }

    /// A refresh that ran out of `--refresh-timeout`: whatever was due is
    /// retried with backoff (never past its expiry), the files stay as they
    /// are.
    fn refresh_timed_out(&self, volume: &mut LiveVolume, limit: Duration) -> Option<Instant> {
        let now = Instant::now();
        self.metrics.observe_refresh("timeout", "error");
        self.metrics.observe_refresh_timeout(volume.tenant());
        for tracked in volume.secrets.iter_mut().filter(|t| t.due <= now) {
            tracked.failed(now, None, timing::draw());
        }
        let token_due = volume.token.session.as_ref().is_none_or(|s| s.due <= now);
        if token_due && volume.token.retry_at.is_none_or(|at| at <= now) {
            volume.token.failed(now, None);
        }
        self.set_degraded(volume, true);
        tracing::warn!(
            volume.id = %volume.id,
            pod.namespace = %volume.tenant(),
            pod.name = %volume.published.pod.name,
            timeout_secs = limit.as_secs_f64(),
            "Refreshing the volume took longer than --refresh-timeout; the previous files stay and it is retried with backoff"
        );
        self.persist_logged(volume, Phase::Published);
        let next = volume.next_due();
        self.publish_schedule_metrics(volume, next);
        next
    }

    /// Sets whether the volume is degraded, keeping the gauge in step.
    pub(super) fn set_degraded(&self, volume: &mut LiveVolume, degraded: bool) {
        if volume.degraded != degraded {
            volume.degraded = degraded;
            self.metrics.observe_degraded(degraded);
        }
    }

    /// Only what the driver acts on is exported: a `refresh: "false"`
    /// volume's expiry is nobody's deadline, so it has no gauges at all and
    /// an alert on them never fires for it.
    pub(super) fn publish_schedule_metrics(&self, volume: &LiveVolume, next: Option<Instant>) {
        self.metrics.set_volume_schedule(
            &volume.labels,
            volume
                .spec()
                .refresh
                .then(|| volume.soonest_expiry())
                .flatten()
                .map(live::wall_clock),
            next.map(live::wall_clock),
        );
    }
}

impl Refresher<VolumeId> for VolumeManager {
    /// One refresh, bounded by `--refresh-timeout` so no volume holds a
    /// refresh slot (or its namespace's) for longer.
    async fn refresh(&self, id: VolumeId) -> Option<Instant> {
        let entry = self.volume(&id)?;
        let mut guard = entry.state.lock().await;
        let volume = guard.as_mut()?;
        if !volume.spec().refresh {
            return None;
        }
        let limit = self.config.refresh_timeout;
        match tokio::time::timeout(limit, self.refresh_volume(volume)).await {
            Ok(next) => next,
            Err(_elapsed) => self.refresh_timed_out(volume, limit),
        }
    }

    async fn namespace(&self, id: &VolumeId) -> Option<String> {
        let entry = self.volume(id)?;
        let guard = entry.state.lock().await;
        guard.as_ref().map(|s| s.tenant().to_owned())
    }
}
