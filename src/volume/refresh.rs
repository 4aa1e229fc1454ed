//! The per-volume work: logging in, fetching and rendering, writing files,
//! and the scheduled refresh that renews, re-fetches and re-renders.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use futures::future::join_all;
use serde_json::Value;
use tokio::time::Instant;

use super::manager::{Volume, VolumeManager, dir_mode};
use super::spec::{VolumeId, VolumeSpec};
use super::state::Phase;
use super::tracked::{Action, Session, Tracked, VolumeState};
use super::{Error, memory, off_runtime};
use crate::refresh::{Refresher, policy};
use crate::render::{self, CompiledTemplates, InlineRender, SecretRequest};
use crate::secret::Secret;
use crate::storage::tmpfs::WritableView;
use crate::storage::{
    AtomicWriter, FileContent, Payload, RelativePath, WriteOptions, WriteOutcome,
};
use crate::vault::{self, ServiceAccountToken, VaultClient};

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

    /// Logs in as the pod. During a publish, transient failures are retried
    /// a few times.
    pub(super) async fn login(
        &self,
        client: &VaultClient,
        spec: &VolumeSpec,
        identity: &ServiceAccountToken,
        publishing: bool,
    ) -> Result<Session, Error> {
        let attempts = if publishing {
            self.config.publish_attempts
        } else {
            1
        };
        let auth = self
            .with_retry(attempts, || {
                client.login(&spec.auth_mount, &spec.role, identity.jwt())
            })
            .await
            .map_err(|source| Error::Login {
                mount: spec.auth_mount.clone(),
                role: spec.role.clone(),
                source,
            })?;
        Ok(Session::from_login(auth, policy::draw()))
    }

    /// Compiles a volume's templates: from the cache when another volume
    /// uses the same ones, else on the blocking pool.
    pub(super) async fn compile(
        &self,
        sources: &[(RelativePath, String)],
    ) -> Result<Arc<CompiledTemplates>, Error> {
        if let Some(templates) = self.renderer.cached(sources) {
            return Ok(templates);
        }
        let renderer = Arc::clone(&self.renderer);
        let sources = sources.to_vec();
        Ok(off_runtime(move || renderer.compile(&sources)).await??)
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
            let results = join_all(to_fetch.iter().map(|request| {
                let token = &token;
                async move {
                    let result = self
                        .with_retry(attempts, || client.fetch(token, request))
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
                            state.spec.static_interval,
                            policy::draw(),
                        );
                        match existing {
                            Some(i) => state.secrets[i] = tracked,
                            None => state.secrets.push(tracked),
                        }
                    }
                    Err(source) => {
                        let retry_after = source.retry_after();
                        if let Some(i) = existing {
                            state.secrets[i].failed(now, retry_after, policy::draw());
                            if state.secrets[i].response.is_some() && !publishing {
                                tracing::warn!(volume.id = %state.labels.volume_id, vault.path = request.path(), error = %source, "Re-fetching a secret failed; keeping the previous value");
                                continue;
                            }
                        }
                        first_error.get_or_insert(Error::Fetch {
                            path: request.path().to_owned(),
                            source,
                        });
                    }
                }
            }
            if let Some(error) = first_error {
                return Err(error);
            }
            let responses: HashMap<SecretRequest, Value> = state
                .secrets
                .iter()
                .filter(|t| wanted.contains(&t.request))
                .filter_map(|t| {
                    let response = t.response.as_ref()?;
                    let value = serde_json::from_slice(response.raw.expose()).ok()?;
                    Some((t.request.clone(), value))
                })
                .collect();
            // Typical templates render in microseconds: inline, within a
            // small budget. Longer renders move to the blocking pool.
            let rendered = match self.renderer.render_inline(&state.templates, responses) {
                InlineRender::Done(result) => result,
                InlineRender::TooLong(responses) => {
                    let renderer = Arc::clone(&self.renderer);
                    let templates = Arc::clone(&state.templates);
                    off_runtime(move || renderer.render(&templates, responses)).await?
                }
            };
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

    /// Writes a rendered file set (plus the token file) atomically. After
    /// the first write the pod's view is read-only, so later writes go
    /// through a private writable view of the same tmpfs, opened only when
    /// the files change (a refresh that renders the same bytes mounts
    /// nothing).
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
            state.memory.restore(held);
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
            match state
                .client
                .renew_self(&session.token, session.requested_ttl)
                .await
            {
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
            .login(&state.client, &state.spec, &identity, false)
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

    /// Renews every due renewable lease in place; leases that cannot be
    /// renewed (or are not renewable) go into `refetch`. Returns how many
    /// were renewed and whether any failed transiently.
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
        let forced = refetch.clone();
        for tracked in state
            .secrets
            .iter_mut()
            .filter(|t| t.due <= now && !forced.contains(&t.request))
        {
            let (Action::Renew, Some(lease)) = (tracked.action, tracked.lease_id.clone()) else {
                refetch.insert(tracked.request.clone());
                continue;
            };
            match state
                .client
                .renew_lease(&token, &lease, tracked.increment)
                .await
            {
                Ok(renewal) => {
                    renewed += 1;
                    self.metrics.observe_refresh("renew_lease", "ok");
                    let at = Instant::now();
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

impl Refresher for VolumeManager {
    async fn refresh(&self, volume: VolumeId) -> Option<Instant> {
        let entry: std::sync::Arc<Volume> = self.volume(&volume)?;
        let mut guard = entry.state.lock().await;
        let state = guard.as_mut()?;
        if !state.spec.refresh {
            return None;
        }
        self.refresh_state(&volume, state).await
    }
}
