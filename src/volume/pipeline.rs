//! The work done on one volume, shared by publish and refresh: log in as
//! the pod, compile the templates, fetch what they ask for and render, write
//! the files. [`Pipeline`] holds exactly what that work depends on; it knows
//! nothing of the volume map, CSI calls or their idempotency (that is the
//! [manager](super::manager)). The scheduled refresh built on it is in
//! [`super::refresh`].

use std::collections::HashSet;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use url::Url;

use super::Error;
use super::live::{LiveSecret, LiveVolume, Session};
use super::memory;
use super::record::{Phase, StateStore, VolumeRecord};
use super::spec::{VolumeId, VolumeSpec};
use crate::metrics::Metrics;
use crate::refresh::{RefreshScheduler, policy};
use crate::render::{self, CompiledTemplates, Renderer};
use crate::secret::Secret;
use crate::storage::{
    AtomicWriter, FileContent, Payload, RelativePath, VolumeRoots, WriteOptions, WriteOutcome,
};
use crate::vault::{self, Priority, SecretRequest, ServiceAccountToken, VaultClient};

/// Rendered files, before the token file is added.
pub(super) type Files = render::RenderedFiles;

/// What the per-volume work depends on; nothing else reaches it.
pub(super) struct Pipeline {
    /// The HTTP client every volume's Vault client shares.
    pub http: reqwest::Client,
    /// Where Vault may redirect (the allow-list).
    pub allowed_redirects: Vec<Url>,
    /// Compiles (with a cache) and renders on the render threads.
    pub renderer: Arc<Renderer>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Refresh deadlines and the node's fairness rules (Vault budgets).
    pub scheduler: RefreshScheduler<VolumeId>,
    /// How volumes' files are held (tmpfs, or plain directories).
    pub roots: Arc<dyn VolumeRoots>,
    /// Where volume records are persisted.
    pub store: StateStore,
    /// Background work (signals to apps, revocations).
    pub tracker: TaskTracker,
    /// Attempts per Vault call during a publish (transient errors only).
    pub publish_attempts: u32,
    /// Largest payload per volume.
    pub max_payload_bytes: u64,
    /// Time allowed to revoke a token.
    pub revoke_timeout: Duration,
}

/// Where a file set is written.
#[derive(Debug, Clone, Copy)]
pub(super) enum WriteAt<'a> {
    /// A new root being filled before it is sealed (a staged tmpfs, or a
    /// plain directory).
    Fresh(&'a Path),
    /// The volume's sealed root at its target.
    Sealed,
}

impl Pipeline {
    /// A Vault client for a volume's address and namespace.
    pub fn client_for(&self, spec: &VolumeSpec) -> VaultClient {
        VaultClient::new(
            self.http.clone(),
            spec.vault_addr.clone(),
            spec.namespace.clone(),
            Arc::clone(&self.metrics),
        )
        .with_allowed_redirects(&self.allowed_redirects)
    }

    /// Writes the volume's record.
    pub fn persist(&self, id: &VolumeId, volume: &LiveVolume, phase: Phase) -> Result<(), Error> {
        self.store.save(&VolumeRecord::of(id, volume, phase))
    }

    /// Runs `call` up to `attempts` times while it fails transiently, waiting
    /// [`policy::publish_retry_delay`] between tries; a `Retry-After` longer
    /// than a publish can afford ends the retries, and the error says when
    /// to retry.
    pub async fn with_retry<T, F, Fut>(&self, attempts: u32, mut call: F) -> Result<T, vault::Error>
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
    pub async fn governed<T, F, Fut>(
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

    /// Logs in as the pod. A publish retries transient failures a few
    /// times; a refresh's login (`namespace` given, counted against its
    /// budget) replaces a token that is running out: urgent, tried once.
    pub async fn login(
        &self,
        client: &VaultClient,
        spec: &VolumeSpec,
        identity: &ServiceAccountToken,
        refreshing: Option<&str>,
    ) -> Result<Session, Error> {
        let (attempts, priority) = match refreshing {
            None => (self.publish_attempts, Priority::Normal),
            Some(_) => (1, Priority::Urgent),
        };
        let auth = self
            .with_retry(attempts, || {
                self.governed(refreshing, priority, "login", || {
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
    fn static_interval(&self, volume: &LiveVolume, publishing: bool) -> Duration {
        let (interval, clamped) = policy::clamp_interval(
            volume.spec.static_interval,
            self.scheduler.fairness().min_interval,
        );
        if clamped && publishing {
            self.metrics
                .observe_interval_clamped(&volume.labels.pod_namespace);
            tracing::info!(
                volume.id = %volume.labels.volume_id,
                pod.namespace = %volume.pod.namespace,
                asked_secs = volume.spec.static_interval.as_secs_f64(),
                used_secs = interval.as_secs_f64(),
                "staticSecretRefreshInterval is below --min-refresh-interval; static secrets are re-read at the floor instead"
            );
        }
        interval
    }

    /// Compiles a volume's templates: from the cache when another volume
    /// uses the same ones, else on the render threads.
    pub async fn compile(
        &self,
        sources: &[(RelativePath, String)],
    ) -> Result<Arc<CompiledTemplates>, Error> {
        Ok(self.renderer.compile_off_thread(sources).await?)
    }

    /// Fetches what the templates need (every secret without an answer,
    /// plus `refetch`), concurrently, and renders (`collected`: the
    /// templates' `secret` calls, when the caller already has them). During
    /// a refresh, a failed fetch keeps the previous answer when there is
    /// one.
    pub async fn fetch_and_render(
        &self,
        volume: &mut LiveVolume,
        refetch: &HashSet<SecretRequest>,
        publishing: bool,
        collected: Option<Vec<SecretRequest>>,
    ) -> Result<Files, Error> {
        let mut wanted: Vec<SecretRequest> = match collected {
            Some(requests) => requests,
            None if volume.secrets.is_empty() => volume.templates.requests().to_vec(),
            None => volume.secrets.iter().map(|t| t.request.clone()).collect(),
        };
        let attempts = if publishing { self.publish_attempts } else { 1 };
        let static_interval = self.static_interval(volume, publishing);
        for _round in 0..=render::MAX_SECRETS_PER_VOLUME {
            let to_fetch: Vec<SecretRequest> = wanted
                .iter()
                .filter(|r| {
                    refetch.contains(*r)
                        || !volume
                            .secrets
                            .iter()
                            .any(|t| &t.request == *r && t.answer.is_some())
                })
                .cloned()
                .collect();
            let Some(token) = volume.session.as_ref().map(|s| s.token.clone()) else {
                return Err(Error::NoVaultToken);
            };
            let client = &volume.client;
            let namespace = volume.pod.namespace.as_str();
            let results = join_all(to_fetch.iter().map(|request| {
                let token = &token;
                let priority = fetch_priority(volume, refetch, request, publishing);
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
                let existing = volume.secrets.iter().position(|t| t.request == request);
                match result {
                    Ok(response) => {
                        let live = LiveSecret::from_response(
                            request,
                            response,
                            static_interval,
                            policy::draw(),
                        );
                        match existing {
                            Some(i) => volume.secrets[i] = live,
                            None => volume.secrets.push(live),
                        }
                    }
                    Err(vault::Error::Held { retry_after, .. })
                        if !publishing
                            && existing.is_some_and(|i| volume.secrets[i].answer.is_some()) =>
                    {
                        // Held back, not failed: the previous value stays.
                        let i = existing.expect("checked above");
                        volume.secrets[i].deferred(now, retry_after, policy::draw());
                    }
                    Err(source) => {
                        let retry_after = source.retry_after();
                        if let Some(i) = existing {
                            volume.secrets[i].failed(now, retry_after, policy::draw());
                            if volume.secrets[i].answer.is_some() && !publishing {
                                let error = vault::withhold_for(&request, source);
                                tracing::warn!(volume.id = %volume.labels.volume_id, vault.path = request.shown_path(), %error, "Re-fetching a secret failed; keeping the previous value");
                                continue;
                            }
                        }
                        first_error.get_or_insert(Error::Fetch {
                            path: request.shown_path().to_owned(),
                            source: vault::withhold_for(&request, source),
                        });
                    }
                }
            }
            if let Some(error) = first_error {
                return Err(error);
            }
            let answers: Vec<(SecretRequest, Secret<Vec<u8>>)> = volume
                .secrets
                .iter()
                .filter(|t| wanted.contains(&t.request))
                .filter_map(|t| Some((t.request.clone(), t.answer.clone()?)))
                .collect();
            // Parsed and rendered on the render threads, never on the async
            // workers.
            let rendered = self
                .renderer
                .render_off_thread(Arc::clone(&volume.templates), answers)
                .await;
            match rendered? {
                render::Rendered::Files(files) => {
                    // Forget secrets the templates no longer ask for.
                    volume.secrets.retain(|t| wanted.contains(&t.request));
                    return Ok(files);
                }
                render::Rendered::NeedsSecrets(more) => wanted.extend(more),
            }
        }
        Err(render::Error::TooManySecrets {
            count: wanted.len(),
        }
        .into())
    }

    /// Writes a rendered file set (plus the token file) atomically, at
    /// `at`. A sealed root is written through the storage seam, which
    /// writes nothing when the files are unchanged.
    pub fn write_files(
        &self,
        id: &VolumeId,
        volume: &LiveVolume,
        files: Files,
        at: WriteAt<'_>,
    ) -> Result<WriteOutcome, Error> {
        let mode = volume.file_mode();
        let mut payload: Payload = files
            .into_iter()
            .map(|(path, bytes)| (path, FileContent { bytes, mode }))
            .collect();
        if let (Some(path), Some(session)) = (&volume.spec.token_file, &volume.session) {
            payload.insert(
                path.clone(),
                FileContent {
                    bytes: Secret::new(session.token.expose().as_bytes().to_vec()),
                    mode,
                },
            );
        }
        let options = WriteOptions {
            gid: volume.fs_group,
            dir_mode: dir_mode(mode),
            max_bytes: self.max_payload_bytes,
        };
        // The files' pages and the kept answers must fit the node's memory
        // budget; a refused write keeps the previous files.
        let held = volume
            .memory
            .resize(memory::volume_cost(&payload, volume.kept_bytes()))?;
        let written = match at {
            WriteAt::Fresh(root) => AtomicWriter::new(root).write(&payload, options),
            WriteAt::Sealed => {
                self.roots
                    .update(volume.target.as_path(), id.as_str(), &payload, options)
            }
        };
        if written.is_err() {
            volume.memory.force(held);
        }
        Ok(written?)
    }

    /// The template outputs as they are in the volume, for a token-only
    /// rewrite when the answers they came from are not kept.
    pub fn files_in_volume(&self, volume: &LiveVolume) -> Option<Files> {
        let writer = AtomicWriter::new(volume.target.as_path());
        volume
            .templates
            .paths()
            .map(|p| {
                writer
                    .read(p, self.max_payload_bytes)
                    .ok()
                    .flatten()
                    .map(|bytes| (p.clone(), bytes))
            })
            .collect()
    }

    /// Revokes the volume's token (and with it every lease it created),
    /// bounded by the revoke timeout. Failures are logged: the token's TTL
    /// ends it anyway.
    pub async fn revoke(&self, volume: &LiveVolume) {
        let Some(session) = &volume.session else {
            return;
        };
        if session.expires_at <= Instant::now() {
            return;
        }
        // revoke-self revokes every lease the token created; the default
        // policy does not grant `sys/leases/revoke`, so nothing else is sent.
        let work = volume.client.revoke_self(&session.token);
        match tokio::time::timeout(self.revoke_timeout, work).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(volume.pod = %volume.pod.name, %error, "Could not revoke the volume's Vault token; it ends with its TTL");
            }
            Err(_) => {
                tracing::warn!(volume.pod = %volume.pod.name, "Revoking the volume's Vault token timed out; it ends with its TTL");
            }
        }
    }

    /// [`Pipeline::revoke`] of `token` on `client`, on the task tracker.
    pub fn revoke_in_background(&self, client: VaultClient, token: Secret<String>) {
        let timeout = self.revoke_timeout;
        self.tracker.spawn(async move {
            let _ = tokio::time::timeout(timeout, client.revoke_self(&token)).await;
        });
    }
}

/// How much fetching `request` matters (see [`policy::fetch_priority`]):
/// replacing a lease or certificate is urgent, re-reading a static secret
/// whose value the volume has is cosmetic.
fn fetch_priority(
    volume: &LiveVolume,
    refetch: &HashSet<SecretRequest>,
    request: &SecretRequest,
    publishing: bool,
) -> Priority {
    let expires = refetch
        .contains(request)
        .then(|| {
            volume
                .secrets
                .iter()
                .find(|t| &t.request == request)
                // A static secret with no value yet (restored from a record
                // that kept none) is
                // needed for the render: not cosmetic.
                .and_then(|t| match (t.expires_at, &t.answer) {
                    (Some(_), _) => Some(true),
                    (None, Some(_)) => Some(false),
                    (None, None) => None,
                })
        })
        .flatten();
    policy::fetch_priority(publishing, expires)
}

/// Directory mode matching a file mode: each class that may read may also
/// traverse.
pub(super) fn dir_mode(file_mode: u32) -> u32 {
    let mut mode = file_mode & 0o777;
    for (read, exec) in [(0o400, 0o100), (0o040, 0o010), (0o004, 0o001)] {
        if mode & read != 0 {
            mode |= exec;
        }
    }
    mode | 0o100
}

#[cfg(test)]
mod tests {
    use super::dir_mode;

    #[test]
    fn directories_are_traversable_by_whoever_may_read() {
        assert_eq!(dir_mode(0o444), 0o555);
        assert_eq!(dir_mode(0o440), 0o550);
        assert_eq!(dir_mode(0o400), 0o500);
        assert_eq!(dir_mode(0o640), 0o750);
        assert_eq!(dir_mode(0o000), 0o100);
    }
}
