//! The per-volume work: logging in, fetching and rendering, writing files,
//! and the scheduled refresh that renews, re-fetches and re-renders.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;
use tokio::time::Instant;

use super::Error;
use super::manager::{Volume, VolumeManager, dir_mode};
use super::memory;
use super::spec::{VolumeId, VolumeSpec};
use super::state::Phase;
use super::tracked::{Action, Session, Tracked, VolumeState};
use crate::refresh::{Refresher, policy};
use crate::render::{self, CompiledTemplates, SecretRequest};
use crate::secret::Secret;
use crate::signal::PodRef;
use crate::storage::tmpfs::WritableView;
use crate::storage::{
    AtomicWriter, FileContent, Payload, RelativePath, WriteOptions, WriteOutcome,
};
use crate::vault::{self, Priority, ServiceAccountToken, VaultClient};

type Files = render::RenderedFiles;

impl VolumeManager {
    /// Runs `call` up to `attempts` times while it fails transiently, with a
    /// short jittered backoff that never undercuts Vault's `Retry-After`; a
    /// `Retry-After` longer than a publish can afford ends the retries, and
    /// the error says when to retry.
    pub(super) async fn with_retry<T, F, Fut>(
        &self,
        attempts: u32,
        mut call: F,
    ) -> Result<T, vault::Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, vault::Error>>,
    {
        let mut attempt = 0;
        loop {
            match call().await {
                Err(error) if error.is_transient() && attempt + 1 < attempts => {
                    let Some(delay) =
                        policy::publish_retry_delay(attempt, policy::draw(), error.retry_after())
                    else {
                        return Err(error);
                    };
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Sends one Vault request under the node's fairness rules: it waits
    /// for `namespace`'s request budget (urgent requests never wait), a
    /// cosmetic one is held back while Vault pushes back, and a 429 or 503
    /// answer pauses cosmetic work node-wide.
    pub(super) async fn governed<T, F, Fut>(
        &self,
        namespace: Option<&str>,
        priority: Priority,
        operation: &'static str,
        call: F,
    ) -> Result<T, vault::Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, vault::Error>>,
    {
        let governor = &self.scheduler.fairness().governor;
        if let Some(namespace) = namespace {
            match governor.admit(namespace, priority, operation).await {
                Ok(waited) => {
                    if !waited.is_zero() {
                        self.metrics.observe_namespace_budget(namespace, "delayed");
                    }
                }
                Err(error) => {
                    if governor.paused_until().is_some() && priority == Priority::Cosmetic {
                        self.metrics.observe_cosmetic_deferred(1);
                    } else {
                        self.metrics.observe_namespace_budget(namespace, "refused");
                    }
                    return Err(error);
                }
            }
        }
        let result = call().await;
        if let Err(error) = &result
            && let Some(pause) = governor.observe(error)
        {
            self.metrics.observe_vault_pushback();
            tracing::warn!(
                vault.operation = operation,
                http.status = error.status(),
                pause_secs = pause.as_secs_f64(),
                "Vault pushed back; re-reads of static secrets pause node-wide while renewals go on"
            );
        }
        result
    }

    /// Logs in as the pod. During a publish, transient failures are retried
    /// a few times.
    pub(super) async fn login(
        &self,
        client: &VaultClient,
        spec: &VolumeSpec,
        identity: &ServiceAccountToken,
        publishing: bool,
    ) -> Result<Session, Error> {
        self.login_as(client, spec, identity, publishing, None)
            .await
    }

    /// [`Self::login`], counted against `namespace`'s budget when given (a
    /// refresh's login replaces a token that is running out: urgent).
    async fn login_as(
        &self,
        client: &VaultClient,
        spec: &VolumeSpec,
        identity: &ServiceAccountToken,
        publishing: bool,
        namespace: Option<&str>,
    ) -> Result<Session, Error> {
        let attempts = if publishing {
            self.config.publish_attempts
        } else {
            1
        };
        let priority = if publishing {
            Priority::Normal
        } else {
            Priority::Urgent
        };
        let auth = self
            .with_retry(attempts, || {
                self.governed(namespace, priority, "login", || {
                    client.login(&spec.auth_mount, &spec.role, identity.jwt())
                })
            })
            .await
            .map_err(|source| Error::Login {
                mount: spec.auth_mount.clone(),
                role: spec.role.clone(),
                source,
            })?;
        Ok(Session::from_login(auth, policy::draw()))
    }

    /// The volume's static re-read interval, raised to
    /// `--min-refresh-interval`; a publish says so when it is.
    fn static_interval(&self, state: &VolumeState, publishing: bool) -> Duration {
        let (interval, clamped) = policy::clamp_interval(
            state.spec.static_interval,
            self.scheduler.fairness().min_interval,
        );
        if clamped && publishing {
            self.metrics
                .observe_interval_clamped(&state.labels.pod_namespace);
            tracing::info!(
                volume.id = %state.labels.volume_id,
                pod.namespace = %state.pod.namespace,
                asked_secs = state.spec.static_interval.as_secs_f64(),
                used_secs = interval.as_secs_f64(),
                "staticSecretRefreshInterval is below --min-refresh-interval; static secrets are re-read at the floor instead"
            );
        }
        interval
    }

    /// Compiles a volume's templates: from the cache when another volume
    /// uses the same ones, else on the render threads.
    pub(super) async fn compile(
        &self,
        sources: &[(RelativePath, String)],
    ) -> Result<Arc<CompiledTemplates>, Error> {
        Ok(self.renderer.compile_off_thread(sources).await?)
    }

    /// Fetches what the templates need (everything not cached, plus
    /// `refetch`), concurrently, and renders (`collected`: the templates'
    /// `secret` calls, when the caller already has them). Fetch failures during a
    /// refresh keep the previous answer when there is one.
    pub(super) async fn fetch_and_render(
        &self,
        state: &mut VolumeState,
        refetch: &HashSet<SecretRequest>,
        publishing: bool,
        collected: Option<Vec<SecretRequest>>,
    ) -> Result<Files, Error> {
        let mut wanted: Vec<SecretRequest> = match collected {
            Some(requests) => requests,
            None if state.secrets.is_empty() => state.templates.requests().to_vec(),
            None => state.secrets.iter().map(|t| t.request.clone()).collect(),
        };
        let attempts = if publishing {
            self.config.publish_attempts
        } else {
            1
        };
        let static_interval = self.static_interval(state, publishing);
        for _round in 0..=render::MAX_SECRETS_PER_VOLUME {
            let to_fetch: Vec<SecretRequest> = wanted
                .iter()
                .filter(|r| {
                    refetch.contains(*r)
                        || !state
                            .secrets
                            .iter()
                            .any(|t| &t.request == *r && t.response.is_some())
                })
                .cloned()
                .collect();
            let token = match &state.session {
                Some(s) => s.token.clone(),
                None => {
                    return Err(Error::Login {
                        mount: state.spec.auth_mount.clone(),
                        role: state.spec.role.clone(),
                        source: vault::Error::Config {
                            reason: "no Vault token yet".to_owned(),
                        },
                    });
                }
            };
            let client = &state.client;
            let namespace = state.pod.namespace.as_str();
            let results = join_all(to_fetch.iter().map(|request| {
                let token = &token;
                let priority = fetch_priority(state, refetch, request, publishing);
                async move {
                    let result = self
                        .with_retry(attempts, || {
                            self.governed(Some(namespace), priority, "read", || {
                                client.fetch(token, request)
                            })
                        })
                        .await;
                    (request.clone(), result)
                }
            }))
            .await;
            let now = Instant::now();
            let mut first_error = None;
            for (request, result) in results {
                let existing = state.secrets.iter().position(|t| t.request == request);
                match result {
                    Ok(response) => {
                        let tracked = Tracked::from_response(
                            request,
                            response,
                            static_interval,
                            policy::draw(),
                        );
                        match existing {
                            Some(i) => state.secrets[i] = tracked,
                            None => state.secrets.push(tracked),
                        }
                    }
                    Err(vault::Error::Held { retry_after, .. })
                        if !publishing
                            && existing.is_some_and(|i| state.secrets[i].response.is_some()) =>
                    {
                        // Held back, not failed: the previous value stays.
                        let i = existing.expect("checked above");
                        state.secrets[i].deferred(now, retry_after, policy::draw());
                    }
                    Err(source) => {
                        let retry_after = source.retry_after();
                        if let Some(i) = existing {
                            state.secrets[i].failed(now, retry_after, policy::draw());
                            if state.secrets[i].response.is_some() && !publishing {
                                let error = render::withhold_for(&request, source);
                                tracing::warn!(volume.id = %state.labels.volume_id, vault.path = request.shown_path(), %error, "Re-fetching a secret failed; keeping the previous value");
                                continue;
                            }
                        }
                        first_error.get_or_insert(Error::Fetch {
                            path: request.shown_path().to_owned(),
                            source: render::withhold_for(&request, source),
                        });
                    }
                }
            }
            if let Some(error) = first_error {
                return Err(error);
            }
            let responses: Vec<(SecretRequest, Secret<Vec<u8>>)> = state
                .secrets
                .iter()
                .filter(|t| wanted.contains(&t.request))
                .filter_map(|t| Some((t.request.clone(), t.response.as_ref()?.raw.clone())))
                .collect();
            // Parsed and rendered on the render threads, never on the async
            // workers.
            let rendered = self
                .renderer
                .render_off_thread(Arc::clone(&state.templates), responses)
                .await;
            match rendered {
                Ok(files) => {
                    // Forget secrets the templates no longer ask for.
                    state.secrets.retain(|t| wanted.contains(&t.request));
                    return Ok(files);
                }
                Err(render::Error::NeedsSecrets(more)) => wanted.extend(more),
                Err(other) => return Err(other.into()),
            }
        }
        Err(render::Error::TooManySecrets {
            count: wanted.len(),
        }
        .into())
    }

    /// Writes a rendered file set (plus the token file) atomically: at
    /// `root` (a new volume's staged tmpfs), or into the volume's sealed
    /// target through a private writable view of the same tmpfs, opened
    /// only when the files change (a refresh that renders the same bytes
    /// mounts nothing).
    pub(super) fn write_files(
        &self,
        id: &VolumeId,
        state: &VolumeState,
        files: Files,
        root: Option<&std::path::Path>,
    ) -> Result<WriteOutcome, Error> {
        let mode = state.file_mode();
        let mut payload: Payload = files
            .into_iter()
            .map(|(path, bytes)| (path, FileContent { bytes, mode }))
            .collect();
        if let (Some(path), Some(session)) = (&state.spec.token_file, &state.session) {
            payload.insert(
                path.clone(),
                FileContent {
                    bytes: Secret::new(session.token.expose().as_bytes().to_vec()),
                    mode,
                },
            );
        }
        let options = WriteOptions {
            gid: state.fs_group,
            dir_mode: dir_mode(mode),
            max_bytes: self.config.max_payload_bytes(),
        };
        // The files' pages and the kept answers must fit the node's memory
        // budget; a refused write keeps the previous files.
        let kept: u64 = state
            .secrets
            .iter()
            .filter_map(|s| s.response.as_ref())
            .map(|r| r.raw.expose().len() as u64)
            .sum();
        let held = state.memory.resize(memory::volume_cost(&payload, kept))?;
        let written = self.write_payload(id, state, &payload, options, root);
        if written.is_err() {
            state.memory.force(held);
        }
        written
    }

    /// Writes `payload` at `root` (a staged tmpfs, or a plain directory), or
    /// into the volume's sealed target through a writable view when the
    /// files changed.
    fn write_payload(
        &self,
        id: &VolumeId,
        state: &VolumeState,
        payload: &Payload,
        options: WriteOptions,
        root: Option<&std::path::Path>,
    ) -> Result<WriteOutcome, Error> {
        let outcome = match root {
            Some(root) => AtomicWriter::new(root).write(payload, options)?,
            None if self.config.plain_directories => {
                AtomicWriter::new(state.target.as_path()).write(payload, options)?
            }
            None => {
                if AtomicWriter::new(state.target.as_path()).is_current(payload)? {
                    return Ok(WriteOutcome::Unchanged);
                }
                let view =
                    WritableView::open(state.target.as_path(), &self.scratch_path("view", id))?;
                AtomicWriter::new(view.path()).write(payload, options)?
            }
        };
        Ok(outcome)
    }

    /// Reads the current template outputs back from the volume, for a
    /// token-only rewrite after a restart emptied the response cache.
    fn files_on_disk(&self, state: &VolumeState) -> Option<Files> {
        let writer = AtomicWriter::new(state.target.as_path());
        let limit = self.config.max_payload_bytes();
        state
            .templates
            .paths()
            .map(|p| {
                writer
                    .read(p, limit)
                    .ok()
                    .flatten()
                    .map(|bytes| (p.clone(), bytes))
            })
            .collect()
    }

    /// The token step: renew the Vault token when due, or log in again
    /// when it cannot be renewed any further. Returns whether the token
    /// changed (a new login), which invalidates the old token's leases.
    async fn refresh_token(&self, state: &mut VolumeState, now: Instant) -> Result<bool, Error> {
        if state.token_retry_at.is_some_and(|at| at > now) {
            return Ok(false);
        }
        let needs_login = state.session.as_ref().is_none_or(|s| s.needs_login(now));
        if !needs_login {
            let session = state.session.as_mut().expect("checked above");
            if session.due > now {
                return Ok(false);
            }
            let client = &state.client;
            let renewal = self
                .governed(
                    Some(state.pod.namespace.as_str()),
                    Priority::Urgent,
                    "renew_self",
                    || client.renew_self(&session.token, session.requested_ttl),
                )
                .await;
            match renewal {
                Ok(auth) => {
                    session.renewed(&auth, policy::draw());
                    self.metrics.observe_refresh("renew_token", "ok");
                    state.token_failures = 0;
                    state.token_retry_at = None;
                    return Ok(false);
                }
                Err(error) if error.is_transient() && !error.ends_token_renewal() => {
                    self.metrics.observe_refresh("renew_token", "error");
                    let remaining = session.expires_at.saturating_duration_since(now);
                    let delay = policy::backoff_delay(
                        state.token_failures,
                        policy::draw(),
                        error.retry_after(),
                    );
                    state.token_failures += 1;
                    state.token_retry_at =
                        Some(now + policy::before_expiry(delay, Some(remaining)));
                    return Err(Error::Login {
                        mount: "token".to_owned(),
                        role: state.spec.role.clone(),
                        source: error,
                    });
                }
                Err(error) => {
                    // Revoked, expired, not renewable, past its max TTL or
                    // its role deleted (Vault's 500s): log in again, and
                    // keep to logins if this one fails.
                    session.exhausted = true;
                    self.metrics.observe_refresh("renew_token", "error");
                    tracing::info!(volume.id = %state.labels.volume_id, %error, "The Vault token cannot be renewed; logging in again");
                }
            }
        }
        let identity = state
            .identity
            .as_ref()
            .filter(|i| i.is_valid_at(std::time::SystemTime::now()))
            .cloned();
        let Some(identity) = identity else {
            // Kubelet's next republish brings a fresh service-account token.
            let delay = policy::backoff_delay(state.token_failures, policy::draw(), None);
            state.token_failures += 1;
            state.token_retry_at = Some(now + delay);
            self.metrics.observe_refresh("login", "error");
            return Err(Error::Identity(vault::IdentityError::Expired {
                audience: state.spec.audience.clone(),
                ago_secs: 0,
            }));
        };
        match self
            .login_as(
                &state.client,
                &state.spec,
                &identity,
                false,
                Some(state.pod.namespace.as_str()),
            )
            .await
        {
            Ok(session) => {
                self.metrics.observe_refresh("login", "ok");
                let had_session = state.session.replace(session).is_some();
                state.token_failures = 0;
                state.token_retry_at = None;
                Ok(had_session)
            }
            Err(error) => {
                self.metrics.observe_refresh("login", "error");
                let retry_after = match &error {
                    Error::Login { source, .. } => source.retry_after(),
                    _ => None,
                };
                let delay =
                    policy::backoff_delay(state.token_failures, policy::draw(), retry_after);
                state.token_failures += 1;
                let remaining = state
                    .session
                    .as_ref()
                    .map(|s| s.expires_at.saturating_duration_since(now));
                state.token_retry_at = Some(now + policy::before_expiry(delay, remaining));
                Err(error)
            }
        }
    }

    /// Renews every due renewable lease in place, up to
    /// [`policy::RENEWALS_IN_FLIGHT`] at once so one slow answer does not
    /// hold up the others; leases that cannot be renewed (or are not
    /// renewable) go into `refetch`. Returns how many were renewed and
    /// whether any failed transiently.
    async fn renew_due_leases(
        &self,
        id: &VolumeId,
        state: &mut VolumeState,
        now: Instant,
        refetch: &mut HashSet<SecretRequest>,
    ) -> (usize, bool) {
        let Some(token) = state.session.as_ref().map(|s| s.token.clone()) else {
            return (0, false);
        };
        let (mut renewed, mut degraded) = (0, false);
        let mut due = Vec::new();
        for (i, tracked) in state.secrets.iter().enumerate() {
            if tracked.due > now || refetch.contains(&tracked.request) {
                continue;
            }
            match (tracked.action, &tracked.lease_id) {
                (Action::Renew, Some(lease)) => due.push((i, lease.clone(), tracked.increment)),
                _ => {
                    refetch.insert(tracked.request.clone());
                }
            }
        }
        let (client, namespace, token) = (&state.client, state.pod.namespace.as_str(), &token);
        let results: Vec<_> =
            futures::stream::iter(due.into_iter().map(|(i, lease, increment)| async move {
                let result = self
                    .governed(Some(namespace), Priority::Urgent, "renew_lease", || {
                        client.renew_lease(token, &lease, increment)
                    })
                    .await;
                (i, lease, result, Instant::now())
            }))
            .buffer_unordered(policy::RENEWALS_IN_FLIGHT)
            .collect()
            .await;
        for (i, lease, result, at) in results {
            let tracked = &mut state.secrets[i];
            match result {
                Ok(renewal) => {
                    renewed += 1;
                    self.metrics.observe_refresh("renew_lease", "ok");
                    tracked.expires_at = Some(at + renewal.ttl);
                    tracked.failures = 0;
                    if policy::renewal_capped(tracked.increment, renewal.ttl) {
                        // Max TTL reached: replace it before it ends.
                        tracked.action = Action::Refetch;
                        tracked.due = at + policy::refetch_delay(renewal.ttl, policy::draw());
                    } else {
                        tracked.due = at + policy::renew_delay(renewal.ttl, policy::draw());
                    }
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
    async fn refresh_state(&self, id: &VolumeId, state: &mut VolumeState) -> Option<Instant> {
        let now = Instant::now();
        let mut degraded = false;
        let mut refetch: HashSet<SecretRequest> = HashSet::new();
        let mut token_changed = false;
        match self.refresh_token(state, now).await {
            Ok(changed) => {
                token_changed = changed;
                if changed {
                    // Leases belong to the token that created them and end
                    // with it: replace them under the new token now.
                    refetch.extend(
                        state
                            .secrets
                            .iter()
                            .filter(|t| t.lease_id.is_some())
                            .map(|t| t.request.clone()),
                    );
                }
            }
            Err(error) => {
                tracing::warn!(volume.id = %id, pod.namespace = %state.pod.namespace, pod.name = %state.pod.name, %error, "Refreshing the Vault token failed; files stay as they are");
                degraded = true;
            }
        }
        let session_ok = state.session.as_ref().is_some_and(|s| s.expires_at > now);
        let mut renewed = 0usize;
        if session_ok {
            let (count, failed) = self.renew_due_leases(id, state, now, &mut refetch).await;
            renewed = count;
            degraded |= failed;
        }
        if session_ok {
            self.defer_cosmetic(id, state, now, &mut refetch);
        }
        let cache_complete = state.secrets.iter().all(|t| t.response.is_some());
        let rewrite_token = token_changed && state.spec.token_file.is_some();
        let mut outcome = None;
        if session_ok && (!refetch.is_empty() || (rewrite_token && cache_complete)) {
            let kind_static = refetch.iter().all(|r| {
                state
                    .secrets
                    .iter()
                    .any(|t| &t.request == r && t.lease_id.is_none())
            });
            let kind = if kind_static { "static" } else { "refetch" };
            match self.fetch_and_render(state, &refetch, false, None).await {
                Ok(files) => match self.write_files(id, state, files, None) {
                    Ok(written) => {
                        self.metrics.observe_refresh(kind, "ok");
                        outcome = Some(written);
                    }
                    Err(error) => {
                        self.metrics.observe_refresh(kind, "error");
                        tracing::error!(volume.id = %id, %error, "Writing refreshed files failed; the previous files stay");
                        degraded = true;
                        for t in state
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
                    for t in state
                        .secrets
                        .iter_mut()
                        .filter(|t| refetch.contains(&t.request) && t.due <= now)
                    {
                        t.failed(now, None, policy::draw());
                    }
                }
            }
        } else if session_ok && rewrite_token {
            if let Some(files) = self.files_on_disk(state) {
                match self.write_files(id, state, files, None) {
                    Ok(written) => outcome = Some(written),
                    Err(error) => {
                        tracing::error!(volume.id = %id, %error, "Writing the token file failed");
                        degraded = true;
                    }
                }
            }
        } else if !session_ok {
            // No usable token: push secret deadlines behind the token retry.
            if let Some(retry) = state.token_retry_at {
                for t in state.secrets.iter_mut().filter(|t| t.due <= now) {
                    t.due = retry;
                }
            }
        }
        if let (Some(WriteOutcome::Replaced), Some(app)) = (outcome, &state.spec.signal) {
            let pod = PodRef::new(
                state.target.pod_uid(),
                &state.pod.namespace,
                &state.pod.name,
            );
            app.after_change(&self.tracker, &self.metrics, pod);
        }
        state.degraded = degraded;
        if let Err(error) = self.persist(id, state, Phase::Published) {
            tracing::error!(volume.id = %id, %error, "Could not persist the volume's state");
        }
        let next = state.next_due();
        self.publish_schedule_metrics(state, next);
        tracing::info!(
            volume.id = %id,
            pod.namespace = %state.pod.namespace,
            pod.name = %state.pod.name,
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
}

impl VolumeManager {
    /// While Vault pushes back, static re-reads (which replace nothing that
    /// expires) wait node-wide until the pause ends; what expires still
    /// goes out.
    fn defer_cosmetic(
        &self,
        id: &VolumeId,
        state: &mut VolumeState,
        now: Instant,
        refetch: &mut HashSet<SecretRequest>,
    ) {
        let Some(until) = self.scheduler.fairness().governor.paused_until() else {
            return;
        };
        let mut deferred = 0;
        for tracked in state
            .secrets
            .iter_mut()
            .filter(|t| t.expires_at.is_none() && t.response.is_some())
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
                pod.namespace = %state.pod.namespace,
                deferred,
                pause_secs = until.saturating_duration_since(now).as_secs_f64(),
                "Vault pushed back; re-reading static secrets waits for the pause to end"
            );
        }
    }

    /// A refresh that ran out of `--refresh-timeout`: whatever was due is
    /// retried with backoff (never past its expiry), the files stay as they
    /// are.
    fn refresh_timed_out(
        &self,
        id: &VolumeId,
        state: &mut VolumeState,
        limit: Duration,
    ) -> Option<Instant> {
        let now = Instant::now();
        self.metrics.observe_refresh("timeout", "error");
        self.metrics
            .observe_refresh_timeout(&state.labels.pod_namespace);
        for tracked in state.secrets.iter_mut().filter(|t| t.due <= now) {
            tracked.failed(now, None, policy::draw());
        }
        let token_due = state.session.as_ref().is_none_or(|s| s.due <= now);
        if token_due && state.token_retry_at.is_none_or(|at| at <= now) {
            let delay = policy::backoff_delay(state.token_failures, policy::draw(), None);
            state.token_failures = state.token_failures.saturating_add(1);
            let remaining = state
                .session
                .as_ref()
                .map(|s| s.expires_at.saturating_duration_since(now));
            state.token_retry_at = Some(now + policy::before_expiry(delay, remaining));
        }
        state.degraded = true;
        tracing::warn!(
            volume.id = %id,
            pod.namespace = %state.pod.namespace,
            pod.name = %state.pod.name,
            timeout_secs = limit.as_secs_f64(),
            "Refreshing the volume took longer than --refresh-timeout; the previous files stay and it is retried with backoff"
        );
        if let Err(error) = self.persist(id, state, Phase::Published) {
            tracing::error!(volume.id = %id, %error, "Could not persist the volume's state");
        }
        let next = state.next_due();
        self.publish_schedule_metrics(state, next);
        next
    }
}

/// How much fetching `request` matters (see [`policy::fetch_priority`]):
/// replacing a lease or certificate is urgent, re-reading a static secret
/// whose value the volume has is cosmetic.
fn fetch_priority(
    state: &VolumeState,
    refetch: &HashSet<SecretRequest>,
    request: &SecretRequest,
    publishing: bool,
) -> Priority {
    let expires = refetch
        .contains(request)
        .then(|| {
            state
                .secrets
                .iter()
                .find(|t| &t.request == request)
                // A static secret with no value yet (after a restart) is
                // needed for the render: not cosmetic.
                .and_then(|t| match (t.expires_at, &t.response) {
                    (Some(_), _) => Some(true),
                    (None, Some(_)) => Some(false),
                    (None, None) => None,
                })
        })
        .flatten();
    policy::fetch_priority(publishing, expires)
}

impl Refresher for VolumeManager {
    /// One refresh, bounded by `--refresh-timeout` so no volume holds a
    /// refresh slot (or its namespace's) for longer.
    async fn refresh(&self, volume: VolumeId) -> Option<Instant> {
        let entry: std::sync::Arc<Volume> = self.volume(&volume)?;
        let mut guard = entry.state.lock().await;
        let state = guard.as_mut()?;
        if !state.spec.refresh {
            return None;
        }
        let limit = self.scheduler.fairness().refresh_timeout;
        match tokio::time::timeout(limit, self.refresh_state(&volume, state)).await {
            Ok(next) => next,
            Err(_elapsed) => self.refresh_timed_out(&volume, state, limit),
        }
    }

    async fn namespace(&self, volume: &VolumeId) -> Option<String> {
        let entry = self.volume(volume)?;
        let guard = entry.state.lock().await;
        guard.as_ref().map(|s| s.pod.namespace.clone())
    }
}
