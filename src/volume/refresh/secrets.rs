//! The secrets of a refresh: leases renewed in place, static re-reads put
//! off while Vault pushes back, what is due fetched again, rendered and
//! written.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;

use super::Round;
use crate::timing::{self, Priority, fairness};
use crate::vault::{Caller, LeaseId, SecretRequest};
use crate::volume::Error;
use crate::volume::live::LiveVolume;
use crate::volume::manager::VolumeManager;
use crate::volume::materialise::{Files, Mode, WriteAt};
use crate::volume::plan::{self, AfterRenewal};

impl VolumeManager {
    /// Renews the leases at `due` in place, up to
    /// [`fairness::RENEWALS_IN_FLIGHT`] at once so one slow answer does not
    /// hold up the others; leases that cannot be renewed go into `refetch`.
    pub(super) async fn renew_leases(
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
    pub(super) fn defer(&self, volume: &mut LiveVolume, deferred: &[usize], now: Instant) {
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
    pub(super) async fn rewrite(
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
    pub(super) async fn write_refreshed(
        &self,
        volume: &mut LiveVolume,
        files: Files,
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
}
