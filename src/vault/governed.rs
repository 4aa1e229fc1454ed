//! [`GovernedVault`]: every Vault request the node sends, under the node's
//! rules. One per process, shared by every volume. It builds the request
//! for the volume's Vault ([`Endpoint`]), waits for the pod namespace's
//! request budget ([`Governor`]; urgent requests never wait), retries what
//! may pass on its own while a pod waits for a publish, pauses cosmetic
//! work node-wide when Vault pushes back, and bounds revocations. It
//! returns Vault's own types; what the answers mean to a volume is the
//! volume core's business.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use url::Url;

use super::{
    AuthToken, BodyMeter, BudgetSettings, Error, Governor, LeaseId, MountCache, Renewal,
    SecretRequest, SecretResponse, VaultClient,
};
use crate::metrics::Metrics;
use crate::secret::Secret;
use crate::timing::{self, Priority};

/// A volume's Vault: its address and, for Vault Enterprise and OpenBao
/// namespaces, the namespace every request is sent in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The server's address (`vaultAddress`, or `--vault-addr`).
    pub address: Url,
    /// `vaultNamespace`, if any.
    pub namespace: Option<String>,
}

/// Who a request is for, and how much it matters when the node's Vault
/// budget is tight.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The pod namespace (the tenant) whose budget the request spends.
    pub tenant: &'a str,
    /// How the request is sent.
    pub urgency: Urgency,
}

/// How a request is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// A pod waits for it (a publish): ordinary priority, and failures
    /// that may pass on their own are retried a few times at once.
    Publish,
    /// A refresh: sent once at this priority; the refresh's own backoff
    /// decides when to try again.
    Refresh(Priority),
}

impl<'a> Caller<'a> {
    /// A request a publish waits for.
    pub fn publish(tenant: &'a str) -> Self {
        Self {
            tenant,
            urgency: Urgency::Publish,
        }
    }

    /// A request of a refresh, at `priority`.
    pub fn refresh(tenant: &'a str, priority: Priority) -> Self {
        Self {
            tenant,
            urgency: Urgency::Refresh(priority),
        }
    }

    fn priority(self) -> Priority {
        match self.urgency {
            Urgency::Publish => Priority::Normal,
            Urgency::Refresh(priority) => priority,
        }
    }
}

/// What the governed client is built from.
#[derive(Debug, Clone)]
pub struct GovernedSettings {
    /// Addresses a standby's redirect may be followed to.
    pub allowed_redirects: Vec<Url>,
    /// The per-namespace request budget.
    pub budget: BudgetSettings,
    /// Attempts per request while a pod waits (transient failures only).
    pub publish_attempts: u32,
    /// Longest a revocation may take; a token or lease not revoked in time
    /// ends with its TTL.
    pub revoke_timeout: Duration,
}

/// Every Vault request of the node, under its budget and retry rules.
#[derive(Debug)]
pub struct GovernedVault {
    http: reqwest::Client,
    redirects: Arc<[Url]>,
    metrics: Arc<Metrics>,
    governor: Governor,
    publish_attempts: u32,
    revoke_timeout: Duration,
    /// Mount answers for KV version 2 paths written without `data/`.
    mounts: MountCache,
}

/// How often a Vault that stopped answering is asked whether it is back.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

impl GovernedVault {
    /// The node's client over the shared `http` connection pool.
    pub fn new(http: reqwest::Client, metrics: Arc<Metrics>, settings: GovernedSettings) -> Self {
        Self {
            http,
            redirects: Arc::from(settings.allowed_redirects),
            metrics,
            governor: Governor::new(settings.budget),
            publish_attempts: settings.publish_attempts.max(1),
            revoke_timeout: settings.revoke_timeout,
            mounts: MountCache::default(),
        }
    }

    fn client(&self, at: &Endpoint) -> VaultClient {
        VaultClient::new(
            self.http.clone(),
            at.address.clone(),
            at.namespace.clone(),
            Arc::clone(&self.metrics),
        )
        .with_allowed_redirects(&self.redirects)
    }

    /// Logs in with a service-account token (`auth/<mount>/login`).
    pub async fn login(
        &self,
        at: &Endpoint,
        caller: Caller<'_>,
        mount: &str,
        role: &str,
        jwt: &Secret<String>,
    ) -> Result<AuthToken, Error> {
        let client = self.client(at);
        self.send(caller, "login", || client.login(mount, role, jwt))
            .await
    }

    /// Reads, writes or lists one `secret` (`secrets`) call, charging the
    /// answer to `meter` as it is read.
    ///
    /// A read or list is sent where Vault Agent sends it (see
    /// [`super::mounts`]): on a KV version 2 mount, a path written without
    /// `data/` (`metadata/` for a list) gets it, the mount being asked
    /// about once (`sys/internal/ui/mounts`) and its answer kept for the
    /// node. A list Vault answers 404 has no keys, as its Go client reads
    /// it.
    pub async fn fetch(
        &self,
        at: &Endpoint,
        caller: Caller<'_>,
        token: &Secret<String>,
        request: &SecretRequest,
        meter: &dyn BodyMeter,
    ) -> Result<SecretResponse, Error> {
        let shimmed = self
            .agent_path(at, caller, token, request)
            .await?
            .map(|path| request.at_path(&path));
        let sent = shimmed.as_ref().unwrap_or(request);
        let client = self.client(at);
        let operation = if request.is_list() { "list" } else { "read" };
        let answer = self
            .send(caller, operation, || client.fetch(token, sent, meter))
            .await;
        match answer {
            Err(error) if request.is_list() && error.status() == Some(404) => {
                Ok(SecretResponse::empty_list())
            }
            other => other,
        }
    }

    /// Where the agent sends `request`, when that is not the path as
    /// written: a read or list on a KV version 2 mount. The mount comes
    /// from the cache, or is asked about now. As the agent does, a lookup
    /// refused (403), unknown (404) or answered unusably leaves the path
    /// as written; one that may pass on its own (Vault unreachable,
    /// sealed, rate-limited, the node's request budget) fails the request instead, to be
    /// retried like any other (the agent would read the path as written
    /// for the rest of its life).
    async fn agent_path(
        &self,
        at: &Endpoint,
        caller: Caller<'_>,
        token: &Secret<String>,
        request: &SecretRequest,
    ) -> Result<Option<String>, Error> {
        if request.body().is_some() {
            // Writes go where they are written.
            return Ok(None);
        }
        let path = request.path();
        if let Some(mount) = self.mounts.get(at, path) {
            return Ok(mount.agent_path(request));
        }
        let client = self.client(at);
        match self
            .send(caller, "mount", || client.mount_of(token, path))
            .await
        {
            Ok(mount) => {
                if path.starts_with(&mount.path) || mount.path.strip_suffix('/') == Some(path) {
                    self.mounts.put(at, mount.clone());
                }
                Ok(mount.agent_path(request))
            }
            Err(error) if error.is_transient() || matches!(error, Error::Config { .. }) => {
                Err(error)
            }
            Err(_) => Ok(None),
        }
    }

    /// Renews a lease in place.
    pub async fn renew_lease(
        &self,
        at: &Endpoint,
        caller: Caller<'_>,
        token: &Secret<String>,
        lease: &LeaseId,
        increment: Duration,
    ) -> Result<Renewal, Error> {
        let client = self.client(at);
        self.send(caller, "renew_lease", || {
            client.renew_lease(token, lease, increment)
        })
        .await
    }

    /// Renews the token itself (`renew-self`).
    pub async fn renew_token(
        &self,
        at: &Endpoint,
        caller: Caller<'_>,
        token: &Secret<String>,
        increment: Duration,
    ) -> Result<AuthToken, Error> {
        let client = self.client(at);
        self.send(caller, "renew_self", || client.renew_self(token, increment))
            .await
    }

    /// Whether Vault still honours the token (`lookup-self`, which the
    /// default policy grants): after a request was refused, this tells a
    /// token revoked by an operator from a policy that denies the path.
    pub async fn token_is_valid(
        &self,
        at: &Endpoint,
        caller: Caller<'_>,
        token: &Secret<String>,
    ) -> Result<bool, Error> {
        let client = self.client(at);
        match self
            .send(caller, "lookup_self", || client.lookup_self(token))
            .await
        {
            Ok(()) => Ok(true),
            Err(Error::Status { status: 403, .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Whether the token's policies let it revoke leases itself
    /// (`sys/leases/revoke`, asked through `sys/capabilities-self`): what a
    /// batch token, which cannot be revoked, needs to end its leases.
    pub async fn can_revoke_leases(
        &self,
        at: &Endpoint,
        caller: Caller<'_>,
        token: &Secret<String>,
    ) -> Result<bool, Error> {
        let client = self.client(at);
        let capabilities = self
            .send(caller, "capabilities_self", || {
                client.capabilities_self(token, "sys/leases/revoke")
            })
            .await?;
        Ok(capabilities
            .iter()
            .any(|c| matches!(c.as_str(), "update" | "sudo" | "root")))
    }

    /// Revokes a token and every lease it created (`revoke-self`), within
    /// the revoke timeout. Never waits for a budget: clean-up is not
    /// optional work.
    pub async fn revoke_token(&self, at: &Endpoint, token: &Secret<String>) -> Result<(), Error> {
        let client = self.client(at);
        self.bounded(at, "revoke_self", client.revoke_self(token))
            .await
    }

    /// Revokes one lease with the token that owns it (`sys/leases/revoke`),
    /// within the revoke timeout.
    pub async fn revoke_lease(
        &self,
        at: &Endpoint,
        token: &Secret<String>,
        lease: &LeaseId,
    ) -> Result<(), Error> {
        let client = self.client(at);
        self.bounded(at, "revoke_lease", client.revoke_lease(token, lease))
            .await
    }

    /// Until when cosmetic work is paused because Vault pushed back.
    pub fn paused_until(&self) -> Option<Instant> {
        self.governor.paused_until()
    }

    /// Resolves once the Vault at `at` answers again after an outage
    /// (unreachable, sealed): asks `sys/health`, which needs no token,
    /// about once a second.
    pub async fn answering(&self, at: &Endpoint) {
        let client = VaultClient::new(
            self.http.clone(),
            at.address.clone(),
            None,
            Arc::clone(&self.metrics),
        );
        loop {
            match client.health().await {
                Ok(()) => return,
                Err(Error::Status { status, .. }) if status != 503 && status != 501 => return,
                Err(_) => {}
            }
            let wait = PROBE_INTERVAL.mul_f64(0.5 + timing::draw());
            tokio::time::sleep(wait).await;
        }
    }

    async fn bounded(
        &self,
        at: &Endpoint,
        operation: &'static str,
        work: impl Future<Output = Result<(), Error>>,
    ) -> Result<(), Error> {
        tokio::time::timeout(self.revoke_timeout, work)
            .await
            .unwrap_or_else(|_| {
                Err(Error::Unreachable {
                    operation,
                    address: at.address.to_string(),
                    reason: format!(
                        "no answer within {}s; what it would end ends with its TTL",
                        self.revoke_timeout.as_secs()
                    ),
                })
            })
    }

    /// Sends one request for `caller`: governed, and retried while a pod
    /// waits.
    async fn send<T, F, Fut>(
        &self,
        caller: Caller<'_>,
        operation: &'static str,
        mut call: F,
    ) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let attempts = match caller.urgency {
            Urgency::Publish => self.publish_attempts,
            Urgency::Refresh(_) => 1,
        };
        let mut attempt = 0;
        loop {
            match self.governed(caller, operation, call()).await {
                Err(error) if error.is_transient() && attempt + 1 < attempts => {
                    let Some(delay) =
                        timing::publish_retry_delay(attempt, timing::draw(), error.retry_after())
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

    /// One request under the node's fairness rules: it waits for the
    /// tenant's budget (urgent requests never wait), a cosmetic one is held
    /// back while Vault pushes back, and a 429 or 503 answer pauses cosmetic
    /// work node-wide.
    async fn governed<T>(
        &self,
        caller: Caller<'_>,
        operation: &'static str,
        call: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let (tenant, priority) = (caller.tenant, caller.priority());
        match self.governor.admit(tenant, priority, operation).await {
            Ok(waited) => {
                if !waited.is_zero() {
                    self.metrics.observe_namespace_budget(tenant, "delayed");
                }
            }
            Err(error) => {
                if self.governor.paused_until().is_some() && priority == Priority::Cosmetic {
                    self.metrics.observe_cosmetic_deferred(1);
                } else {
                    self.metrics.observe_namespace_budget(tenant, "refused");
                }
                return Err(error);
            }
        }
        let result = call.await;
        if let Err(error) = &result
            && let Some(pause) = self.governor.observe(error)
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
}
