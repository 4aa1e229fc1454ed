//! The scheduled refresh of one volume: the executor of a
//! [`plan::RefreshPlan`]. It renews or replaces the Vault token, renews
//! due leases in place, re-fetches what must be replaced or re-read,
//! re-renders and writes only when the files changed (then signals the
//! app, if the volume asks). A request refused because an operator revoked
//! the token leads to one immediate new login. Failures keep the previous
//! files and are retried on the backoff [`crate::timing`] decides.

mod secrets;
mod token;

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::live::{self, LiveVolume};
use super::manager::VolumeManager;
use super::materialise::Seen;
use super::plan::{self, SecretClock, TokenClock};
use super::record::Phase;
use super::spec::VolumeId;
use crate::refresh::Refresher;
use crate::signal::PodRef;
use crate::storage::WriteOutcome;
use crate::timing;
use crate::vault::SecretRequest;

/// What one refresh did, for its log line and its caller.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Round {
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
