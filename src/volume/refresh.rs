//! The scheduled refresh of one volume, on the [`Pipeline`]: renew or
//! replace the Vault token, renew due leases in place, re-fetch what must
//! be replaced or re-read, re-render, and write only when the files
//! changed (then signal the app, if the volume asks). Failures keep the
//! previous files and are retried on the backoff [`policy`] decides.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;

use super::Error;
use super::live::{self, LiveVolume};
use super::manager::VolumeManager;
use super::pipeline::{Pipeline, WriteAt};
use super::record::Phase;
use super::spec::VolumeId;
use crate::refresh::Refresher;
use crate::signal::PodRef;
use crate::storage::WriteOutcome;
use crate::timing::{self as policy, Priority, Step, fairness};
use crate::vault::SecretRequest;

impl Pipeline {
    /// The token step: renew the Vault token when due, or log in again
    /// when it cannot be renewed any further. Returns whether the token
    /// changed (a new login), which invalidates the old token's leases.
    async fn refresh_token(&self, volume: &mut LiveVolume, now: Instant) -> Result<bool, Error> {
        if volume.token_retry_at.is_some_and(|at| at > now) {
            return Ok(false);
        }
        let needs_login = volume.session.as_ref().is_none_or(|s| s.needs_login(now));
        if !needs_login {
            let session = volume.session.as_mut().expect("checked above");
            if session.due > now {
                return Ok(false);
            }
            let client = &volume.client;
            let renewal = self
                .governed(
                    Some(volume.pod.namespace.as_str()),
                    Priority::Urgent,
                    "renew_self",
                    || client.renew_self(&session.token, session.requested_ttl),
                )
                .await;
            match renewal {
                Ok(auth) => {
                    session.renewed(&auth, policy::draw());
                    self.metrics.observe_refresh("renew_token", "ok");
                    volume.token_recovered();
                    return Ok(false);
                }
                Err(error) if error.is_transient() && !error.ends_token_renewal() => {
                    self.metrics.observe_refresh("renew_token", "error");
                    volume.token_failed(now, error.retry_after());
                    return Err(Error::TokenRenewal { source: error });
                }
                Err(error) => {
                    // Revoked, expired, not renewable, past its max TTL or
                    // its role deleted (Vault's 500s): log in again, and
                    // keep to logins if this one fails.
                    session.exhausted = true;
                    self.metrics.observe_refresh("renew_token", "error");
                    tracing::info!(volume.id = %volume.labels.volume_id, %error, "The Vault token cannot be renewed; logging in again");
                }
            }
        }
        let identity = volume
            .identity
            .as_ref()
            .filter(|i| i.is_valid_at(std::time::SystemTime::now()))
            .cloned();
        let Some(identity) = identity else {
            // Kubelet's next republish brings a fresh service-account token.
            volume.token_failed(now, None);
            self.metrics.observe_refresh("login", "error");
            return Err(Error::IdentityStale {
                audience: volume.spec.audience.clone(),
            });
        };
        let namespace = volume.pod.namespace.clone();
        match self
            .login(&volume.client, &volume.spec, &identity, Some(&namespace))
            .await
        {
            Ok(session) => {
                self.metrics.observe_refresh("login", "ok");
                let had_session = volume.session.replace(session).is_some();
                volume.token_recovered();
                Ok(had_session)
            }
            Err(error) => {
                self.metrics.observe_refresh("login", "error");
                let retry_after = match &error {
                    Error::Login { source, .. } => source.retry_after(),
                    _ => None,
                };
                volume.token_failed(now, retry_after);
                Err(error)
            }
        }
    }

    /// Renews every due renewable lease in place, up to
    /// [`fairness::RENEWALS_IN_FLIGHT`] at once so one slow answer does not
    /// hold up the others; leases that cannot be renewed (or are not
    /// renewable) go into `refetch`. Returns how many were renewed and
    /// whether any failed transiently.
    async fn renew_due_leases(
        &self,
        id: &VolumeId,
        volume: &mut LiveVolume,
        now: Instant,
        refetch: &mut HashSet<SecretRequest>,
    ) -> (usize, bool) {
        let Some(token) = volume.session.as_ref().map(|s| s.token.clone()) else {
            return (0, false);
        };
        let (mut renewed, mut degraded) = (0, false);
        let mut due = Vec::new();
        for (i, tracked) in volume.secrets.iter().enumerate() {
            if tracked.due > now || refetch.contains(&tracked.request) {
                continue;
            }
            match (tracked.step, &tracked.lease_id) {
                (Step::Renew, Some(lease)) => due.push((i, lease.clone(), tracked.increment)),
                _ => {
                    refetch.insert(tracked.request.clone());
                }
            }
        }
        let (client, namespace, token) = (&volume.client, volume.pod.namespace.as_str(), &token);
        let results: Vec<_> =
            futures::stream::iter(due.into_iter().map(|(i, lease, increment)| async move {
                let result = self
                    .governed(Some(namespace), Priority::Urgent, "renew_lease", || {
                        client.renew_lease(token, &lease, increment)
                    })
                    .await;
                (i, lease, result, Instant::now())
            }))
            .buffer_unordered(fairness::RENEWALS_IN_FLIGHT)
            .collect()
            .await;
        for (i, lease, result, at) in results {
            let tracked = &mut volume.secrets[i];
            match result {
                Ok(renewal) => {
                    renewed += 1;
                    self.metrics.observe_refresh("renew_lease", "ok");
                    tracked.renewed(at, renewal.ttl, policy::draw());
                }
                Err(error) if error.is_transient() => {
                    self.metrics.observe_refresh("renew_lease", "error");
                    tracing::warn!(volume.id = %id, lease.id = lease.as_str(), %error, "Renewing a lease failed; retrying");
                    tracked.failed(now, error.retry_after(), policy::draw());
                    degraded = true;
                }
                Err(error) => {
                    self.metrics.observe_refresh("renew_lease", "error");
                    tracing::info!(volume.id = %id, lease.id = lease.as_str(), %error, "A lease cannot be renewed; fetching a new secret");
                    refetch.insert(tracked.request.clone());
                }
            }
        }
        (renewed, degraded)
    }

    /// One scheduled refresh of a volume. Returns its next deadline.
    pub async fn refresh(&self, id: &VolumeId, volume: &mut LiveVolume) -> Option<Instant> {
        let now = Instant::now();
        let mut degraded = false;
        let mut refetch: HashSet<SecretRequest> = HashSet::new();
        let mut token_changed = false;
        match self.refresh_token(volume, now).await {
            Ok(changed) => {
                token_changed = changed;
                if changed {
                    // Leases belong to the token that created them and end
                    // with it: replace them under the new token now.
                    refetch.extend(
                        volume
                            .secrets
                            .iter()
                            .filter(|t| t.lease_id.is_some())
                            .map(|t| t.request.clone()),
                    );
                }
            }
            Err(error) => {
                tracing::warn!(volume.id = %id, pod.namespace = %volume.pod.namespace, pod.name = %volume.pod.name, %error, "Refreshing the Vault token failed; files stay as they are");
                degraded = true;
            }
        }
        let session_ok = volume.session.as_ref().is_some_and(|s| s.expires_at > now);
        let mut renewed = 0usize;
        if session_ok {
            let (count, failed) = self.renew_due_leases(id, volume, now, &mut refetch).await;
            renewed = count;
            degraded |= failed;
        }
        if session_ok {
            self.defer_cosmetic(id, volume, now, &mut refetch);
        }
        let cache_complete = volume.secrets.iter().all(|t| t.answer.is_some());
        let rewrite_token = token_changed && volume.spec.token_file.is_some();
        let mut outcome = None;
        if session_ok && (!refetch.is_empty() || (rewrite_token && cache_complete)) {
            let kind_static = refetch.iter().all(|r| {
                volume
                    .secrets
                    .iter()
                    .any(|t| &t.request == r && t.lease_id.is_none())
            });
            let kind = if kind_static { "static" } else { "refetch" };
            match self.fetch_and_render(volume, &refetch, false, None).await {
                Ok(files) => match self.write_files(id, volume, files, WriteAt::Sealed) {
                    Ok(written) => {
                        self.metrics.observe_refresh(kind, "ok");
                        outcome = Some(written);
                    }
                    Err(error) => {
                        self.metrics.observe_refresh(kind, "error");
                        tracing::error!(volume.id = %id, %error, "Writing refreshed files failed; the previous files stay");
                        degraded = true;
                        for t in volume
                            .secrets
                            .iter_mut()
                            .filter(|t| refetch.contains(&t.request))
                        {
                            t.failed(now, None, policy::draw());
                        }
                    }
                },
                Err(error) => {
                    self.metrics.observe_refresh(kind, "error");
                    tracing::warn!(volume.id = %id, %error, "Refreshing secrets failed; the previous files stay");
                    degraded = true;
                    for t in volume
                        .secrets
                        .iter_mut()
                        .filter(|t| refetch.contains(&t.request) && t.due <= now)
                    {
                        t.failed(now, None, policy::draw());
                    }
                }
            }
        } else if session_ok && rewrite_token {
            if let Some(files) = self.files_in_volume(volume) {
                match self.write_files(id, volume, files, WriteAt::Sealed) {
                    Ok(written) => outcome = Some(written),
                    Err(error) => {
                        tracing::error!(volume.id = %id, %error, "Writing the token file failed");
                        degraded = true;
                    }
                }
            }
        } else if !session_ok {
            // No usable token: push secret deadlines behind the token retry.
            if let Some(retry) = volume.token_retry_at {
                for t in volume.secrets.iter_mut().filter(|t| t.due <= now) {
                    t.due = retry;
                }
            }
        }
        if let (Some(WriteOutcome::Replaced), Some(app)) = (outcome, &volume.spec.signal) {
            let pod = PodRef::new(
                volume.target.pod_uid(),
                &volume.pod.namespace,
                &volume.pod.name,
            );
            app.after_change(&self.tracker, &self.metrics, pod);
        }
        volume.degraded = degraded;
        if let Err(error) = self.persist(id, volume, Phase::Published) {
            tracing::error!(volume.id = %id, %error, "Could not persist the volume's state");
        }
        let next = volume.next_due();
        self.publish_schedule_metrics(volume, next);
        tracing::info!(
            volume.id = %id,
            pod.namespace = %volume.pod.namespace,
            pod.name = %volume.pod.name,
            renewed,
            refetched = refetch.len(),
            files = match outcome {
                Some(WriteOutcome::Replaced) => "replaced",
                Some(WriteOutcome::Unchanged) => "unchanged",
                None => "untouched",
            },
            degraded,
            "Refreshed volume"
        );
        next
    }

    /// While Vault pushes back, static re-reads (which replace nothing that
    /// expires) wait node-wide until the pause ends; what expires still
    /// goes out.
    fn defer_cosmetic(
        &self,
        id: &VolumeId,
        volume: &mut LiveVolume,
        now: Instant,
        refetch: &mut HashSet<SecretRequest>,
    ) {
        let Some(until) = self.scheduler.fairness().governor.paused_until() else {
            return;
        };
        let mut deferred = 0;
        for tracked in volume
            .secrets
            .iter_mut()
            .filter(|t| t.expires_at.is_none() && t.answer.is_some())
        {
            if !refetch.remove(&tracked.request) {
                continue;
            }
            tracked.deferred(now, until.saturating_duration_since(now), policy::draw());
            deferred += 1;
        }
        if deferred > 0 {
            self.metrics.observe_cosmetic_deferred(deferred);
            tracing::info!(
                volume.id = %id,
                pod.namespace = %volume.pod.namespace,
                deferred,
                pause_secs = until.saturating_duration_since(now).as_secs_f64(),
                "Vault pushed back; re-reading static secrets waits for the pause to end"
            );
        }
    }

    /// A refresh that ran out of `--refresh-timeout`: whatever was due is
    /// retried with backoff (never past its expiry), the files stay as they
    /// are.
    pub fn refresh_timed_out(
        &self,
        id: &VolumeId,
        volume: &mut LiveVolume,
        limit: Duration,
    ) -> Option<Instant> {
        let now = Instant::now();
        self.metrics.observe_refresh("timeout", "error");
        self.metrics
            .observe_refresh_timeout(&volume.labels.pod_namespace);
        for tracked in volume.secrets.iter_mut().filter(|t| t.due <= now) {
            tracked.failed(now, None, policy::draw());
        }
        let token_due = volume.session.as_ref().is_none_or(|s| s.due <= now);
        if token_due && volume.token_retry_at.is_none_or(|at| at <= now) {
            volume.token_failed(now, None);
        }
        volume.degraded = true;
        tracing::warn!(
            volume.id = %id,
            pod.namespace = %volume.pod.namespace,
            pod.name = %volume.pod.name,
            timeout_secs = limit.as_secs_f64(),
            "Refreshing the volume took longer than --refresh-timeout; the previous files stay and it is retried with backoff"
        );
        if let Err(error) = self.persist(id, volume, Phase::Published) {
            tracing::error!(volume.id = %id, %error, "Could not persist the volume's state");
        }
        let next = volume.next_due();
        self.publish_schedule_metrics(volume, next);
        next
    }

    /// Only what the driver acts on is exported: a `refresh: "false"`
    /// volume's expiry is nobody's deadline, so it has no gauges at all and
    /// an alert on them never fires for it.
    pub fn publish_schedule_metrics(&self, volume: &LiveVolume, next: Option<Instant>) {
        self.metrics.set_volume_schedule(
            &volume.labels,
            volume
                .spec
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
        if !volume.spec.refresh {
            return None;
        }
        let work = self.pipeline();
        let limit = work.scheduler.fairness().refresh_timeout;
        match tokio::time::timeout(limit, work.refresh(&id, volume)).await {
            Ok(next) => next,
            Err(_elapsed) => work.refresh_timed_out(&id, volume, limit),
        }
    }

    async fn namespace(&self, id: &VolumeId) -> Option<String> {
        let entry = self.volume(id)?;
        let guard = entry.state.lock().await;
        guard.as_ref().map(|s| s.pod.namespace.clone())
    }
}
