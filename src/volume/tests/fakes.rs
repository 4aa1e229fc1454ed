//! In-memory fakes of the core's ports, and a builder for a manager wired
//! to them. [`FakeVault`] keeps the rules a real Vault keeps that the core
//! depends on (tokens expire and can be revoked, leases belong to the token
//! that made them and die with it, batch tokens cannot be revoked) and can
//! be told to fail or to stop answering.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use url::Url;

use crate::metrics::Metrics;
use crate::refresh::{RefreshScheduler, SchedulerTask, Slots};
use crate::render::Renderer;
use crate::secret::Secret;
use crate::storage::memory::MemoryRoots;
use crate::vault::{
    self, AuthToken, BodyMeter, Caller, Endpoint, LeaseId, Renewal, SecretRequest, SecretResponse,
};
use crate::volume::ports::{BoxFuture, SecretSource};
use crate::volume::record::MemoryStore;
use crate::volume::{
    CheckedPublish, ManagerConfig, Ports, PublishCapability, PublishRequest, SpecDefaults,
    VolumeId, VolumeManager,
};

/// The kubelet directory every fake target lives under.
pub const KUBELET: &str = "/var/lib/kubelet";

/// One Vault token of the fake.
#[derive(Debug, Clone)]
pub struct FakeToken {
    pub expires_at: Instant,
    pub revoked: bool,
    pub batch: bool,
}

/// One secret the fake serves.
#[derive(Debug, Clone)]
pub struct FakeSecret {
    /// What `data` holds.
    pub data: serde_json::Value,
    /// A lease of this TTL (renewable up to `max_ttl`), if leased.
    pub lease: Option<(Duration, Duration)>,
    /// A certificate's NotAfter (unix seconds), if it carries one.
    pub expiration: Option<u64>,
}

/// One lease of the fake.
#[derive(Debug, Clone)]
pub struct FakeLease {
    pub token: String,
    pub expires_at: Instant,
    pub max_at: Instant,
    pub revoked: bool,
}

#[derive(Debug, Default)]
struct State {
    secrets: HashMap<String, FakeSecret>,
    tokens: HashMap<String, FakeToken>,
    leases: HashMap<String, FakeLease>,
    /// `operation path` of every request, in order.
    calls: Vec<String>,
    faults: HashMap<&'static str, VecDeque<vault::Error>>,
    token_ttl: Duration,
    batch: bool,
    down: bool,
    /// Reads wait (as on a Vault that does not answer) while set.
    reads_held: bool,
    next: u64,
}

/// A Vault in memory. Clones share their state.
#[derive(Debug, Clone)]
pub struct FakeVault {
    state: Arc<Mutex<State>>,
}

impl Default for FakeVault {
    fn default() -> Self {
        let vault = Self {
            state: Arc::default(),
        };
        vault.state().token_ttl = Duration::from_secs(3600);
        vault
    }
}

fn status(operation: &'static str, status: u16, message: &str) -> vault::Error {
    vault::Error::Status {
        operation,
        status,
        message: message.to_owned(),
    }
}

impl FakeVault {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake vault poisoned")
    }

    /// Serves `data` at `path`, leased when `lease` is given (TTL, max TTL).
    pub fn put(&self, path: &str, data: serde_json::Value, lease: Option<(u64, u64)>) {
        self.state().secrets.insert(
            path.to_owned(),
            FakeSecret {
                data,
                lease: lease.map(|(ttl, max)| (Duration::from_secs(ttl), Duration::from_secs(max))),
                expiration: None,
            },
        );
    }

    /// Serves a certificate at `path` whose NotAfter is `expiration`.
    pub fn put_certificate(&self, path: &str, expiration: u64) {
        self.state().secrets.insert(
            path.to_owned(),
            FakeSecret {
                data: serde_json::json!({ "certificate": "PEM", "expiration": expiration }),
                lease: None,
                expiration: Some(expiration),
            },
        );
    }

    /// Tokens from now on live `ttl`.
    pub fn token_ttl(&self, ttl: Duration) {
        self.state().token_ttl = ttl;
    }

    /// Logins from now on issue batch tokens.
    pub fn batch_tokens(&self) {
        self.state().batch = true;
    }

    /// Makes the next `operation` fail with `error`.
    pub fn fail_next(&self, operation: &'static str, error: vault::Error) {
        self.state()
            .faults
            .entry(operation)
            .or_default()
            .push_back(error);
    }

    /// Stops (`true`) or resumes answering.
    pub fn set_down(&self, down: bool) {
        self.state().down = down;
    }

    /// Makes reads wait (`true`), as on a Vault that does not answer, or
    /// answer again.
    pub fn hold_reads(&self, held: bool) {
        self.state().reads_held = held;
    }

    /// Revokes a token as an operator would (`token revoke -accessor`): its
    /// leases die with it.
    pub fn revoke(&self, token: &str) {
        let mut state = self.state();
        if let Some(t) = state.tokens.get_mut(token) {
            t.revoked = true;
        }
        for lease in state.leases.values_mut().filter(|l| l.token == token) {
            lease.revoked = true;
        }
    }

    /// Every request so far, as `operation path`.
    pub fn calls(&self) -> Vec<String> {
        self.state().calls.clone()
    }

    /// How many requests of `operation` were made.
    pub fn count(&self, operation: &str) -> usize {
        self.state()
            .calls
            .iter()
            .filter(|c| c.split(' ').next() == Some(operation))
            .count()
    }

    /// The tokens issued, by token.
    pub fn tokens(&self) -> HashMap<String, FakeToken> {
        self.state().tokens.clone()
    }

    /// The leases issued, by lease id.
    pub fn leases(&self) -> HashMap<String, FakeLease> {
        self.state().leases.clone()
    }

    /// The newest token issued.
    pub fn newest_token(&self) -> String {
        let state = self.state();
        let mut tokens: Vec<&String> = state.tokens.keys().collect();
        tokens.sort_by_key(|t| t.trim_start_matches("s.token-").parse::<u64>().unwrap_or(0));
        tokens.last().map(|t| (*t).clone()).unwrap_or_default()
    }

    /// Records a call and returns the fault to answer it with, if any.
    fn begin(&self, operation: &'static str, path: &str) -> Result<(), vault::Error> {
        let mut state = self.state();
        state.calls.push(format!("{operation} {path}"));
        if state.down {
            return Err(vault::Error::Unreachable {
                operation,
                address: "http://fake".to_owned(),
                reason: "connection refused".to_owned(),
            });
        }
        match state
            .faults
            .get_mut(operation)
            .and_then(VecDeque::pop_front)
        {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Checks a token as Vault does before any request.
    fn authorise(
        &self,
        operation: &'static str,
        token: &Secret<String>,
    ) -> Result<(), vault::Error> {
        let state = self.state();
        match state.tokens.get(token.expose()) {
            Some(t) if !t.revoked && t.expires_at > Instant::now() => Ok(()),
            _ => Err(status(operation, 403, "permission denied")),
        }
    }

    fn issue(&self) -> AuthToken {
        let mut state = self.state();
        state.next += 1;
        let token = format!("s.token-{}", state.next);
        let (ttl, batch) = (state.token_ttl, state.batch);
        state.tokens.insert(
            token.clone(),
            FakeToken {
                // Vault's tokens without a TTL (root-like) never expire.
                expires_at: if ttl.is_zero() {
                    Instant::now() + Duration::from_secs(100 * 365 * 86_400)
                } else {
                    Instant::now() + ttl
                },
                revoked: false,
                batch,
            },
        );
        AuthToken {
            token: Secret::new(token),
            ttl,
            renewable: !batch,
            warnings: Vec::new(),
            batch,
            obtained_at: Instant::now(),
        }
    }

    fn read(&self, token: &Secret<String>, path: &str) -> Result<SecretResponse, vault::Error> {
        let mut state = self.state();
        let Some(secret) = state.secrets.get(path).cloned() else {
            return Err(status("read", 404, "no secret here"));
        };
        let mut lease_id = None;
        if let Some((ttl, max)) = secret.lease {
            state.next += 1;
            let id = format!("{path}/{}", state.next);
            let now = Instant::now();
            state.leases.insert(
                id.clone(),
                FakeLease {
                    token: token.expose().clone(),
                    expires_at: now + ttl,
                    max_at: now + max,
                    revoked: false,
                },
            );
            lease_id = Some(id);
        }
        let ttl = secret.lease.map_or(0, |(ttl, _)| ttl.as_secs());
        let body = serde_json::json!({
            "lease_id": lease_id.clone().unwrap_or_default(),
            "lease_duration": ttl,
            "renewable": secret.lease.is_some(),
            "data": secret.data,
        });
        Ok(SecretResponse {
            lease_id: lease_id.map(LeaseId::new),
            lease_duration: Duration::from_secs(ttl),
            renewable: secret.lease.is_some(),
            expiration: secret.expiration,
            rotation: None,
            raw: Secret::new(body.to_string().into_bytes()),
            fetched_at: Instant::now(),
        })
    }

    fn renew(&self, lease: &LeaseId, increment: Duration) -> Result<Renewal, vault::Error> {
        let mut state = self.state();
        let now = Instant::now();
        let Some(lease) = state
            .leases
            .get_mut(lease.as_str())
            .filter(|l| !l.revoked && l.expires_at > now)
        else {
            return Err(status("renew_lease", 400, "lease not found"));
        };
        let until = (now + increment).min(lease.max_at);
        lease.expires_at = until;
        Ok(Renewal {
            ttl: until.saturating_duration_since(now),
            warnings: Vec::new(),
        })
    }
}

impl SecretSource for FakeVault {
    fn login<'a>(
        &'a self,
        _at: &'a Endpoint,
        _caller: Caller<'a>,
        _mount: &'a str,
        role: &'a str,
        _jwt: &'a Secret<String>,
    ) -> BoxFuture<'a, Result<AuthToken, vault::Error>> {
        Box::pin(async move {
            self.begin("login", role)?;
            if role == "unknown" {
                return Err(status("login", 400, "invalid role name"));
            }
            Ok(self.issue())
        })
    }

    fn fetch<'a>(
        &'a self,
        _at: &'a Endpoint,
        _caller: Caller<'a>,
        token: &'a Secret<String>,
        request: &'a SecretRequest,
        meter: &'a dyn BodyMeter,
    ) -> BoxFuture<'a, Result<SecretResponse, vault::Error>> {
        Box::pin(async move {
            self.begin("read", request.path())?;
            while self.state().reads_held {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            self.authorise("read", token)?;
            let response = self.read(token, request.path())?;
            meter
                .take(response.raw.expose().len() as u64)
                .map_err(|reason| vault::Error::OverBudget {
                    operation: "read",
                    reason,
                })?;
            Ok(response)
        })
    }

    fn renew_lease<'a>(
        &'a self,
        _at: &'a Endpoint,
        _caller: Caller<'a>,
        token: &'a Secret<String>,
        lease: &'a LeaseId,
        increment: Duration,
    ) -> BoxFuture<'a, Result<Renewal, vault::Error>> {
        Box::pin(async move {
            self.begin("renew_lease", lease.as_str())?;
            self.authorise("renew_lease", token)?;
            self.renew(lease, increment)
        })
    }

    fn renew_token<'a>(
        &'a self,
        _at: &'a Endpoint,
        _caller: Caller<'a>,
        token: &'a Secret<String>,
        increment: Duration,
    ) -> BoxFuture<'a, Result<AuthToken, vault::Error>> {
        Box::pin(async move {
            self.begin("renew_self", "")?;
            self.authorise("renew_self", token)?;
            let mut state = self.state();
            let t = state.tokens.get_mut(token.expose()).expect("authorised");
            if t.batch {
                return Err(status("renew_self", 400, "batch tokens cannot be renewed"));
            }
            t.expires_at = Instant::now() + increment;
            Ok(AuthToken {
                token: token.clone(),
                ttl: increment,
                renewable: true,
                warnings: Vec::new(),
                batch: false,
                obtained_at: Instant::now(),
            })
        })
    }

    fn token_is_valid<'a>(
        &'a self,
        _at: &'a Endpoint,
        _caller: Caller<'a>,
        token: &'a Secret<String>,
    ) -> BoxFuture<'a, Result<bool, vault::Error>> {
        Box::pin(async move {
            self.begin("lookup_self", "")?;
            Ok(self.authorise("lookup_self", token).is_ok())
        })
    }

    fn can_revoke_leases<'a>(
        &'a self,
        _at: &'a Endpoint,
        _caller: Caller<'a>,
        _token: &'a Secret<String>,
    ) -> BoxFuture<'a, Result<bool, vault::Error>> {
        Box::pin(async move {
            self.begin("capabilities_self", "sys/leases/revoke")?;
            Ok(true)
        })
    }

    fn revoke_token<'a>(
        &'a self,
        _at: &'a Endpoint,
        token: &'a Secret<String>,
    ) -> BoxFuture<'a, Result<(), vault::Error>> {
        Box::pin(async move {
            self.begin("revoke_self", "")?;
            self.authorise("revoke_self", token)?;
            if self.state().tokens[token.expose()].batch {
                return Err(status("revoke_self", 400, "batch tokens cannot be revoked"));
            }
            self.revoke(token.expose());
            Ok(())
        })
    }

    fn revoke_lease<'a>(
        &'a self,
        _at: &'a Endpoint,
        token: &'a Secret<String>,
        lease: &'a LeaseId,
    ) -> BoxFuture<'a, Result<(), vault::Error>> {
        Box::pin(async move {
            self.begin("revoke_lease", lease.as_str())?;
            self.authorise("revoke_lease", token)?;
            if let Some(l) = self.state().leases.get_mut(lease.as_str()) {
                l.revoked = true;
            }
            Ok(())
        })
    }

    fn paused_until(&self) -> Option<Instant> {
        None
    }

    fn answering<'a>(&'a self, _at: &'a Endpoint) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            while self.state().down {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }
}

/// A manager wired to fakes, with its scheduler, and the fakes themselves.
pub struct Core {
    pub manager: Arc<VolumeManager>,
    pub vault: FakeVault,
    pub store: MemoryStore,
    pub roots: MemoryRoots,
    task: Option<SchedulerTask<VolumeId>>,
}

/// The config of every fake manager.
pub fn config() -> ManagerConfig {
    let vault = Url::parse("http://vault.test:8200").unwrap();
    ManagerConfig {
        kubelet_dir: KUBELET.into(),
        spec_defaults: SpecDefaults {
            vault_addr: Some(vault.clone()),
            allowed_vault_addrs: vec![vault],
            static_refresh_interval: Duration::from_secs(300),
        },
        max_payload_bytes: 1 << 20,
        memory_budget_bytes: None,
        namespace_memory_share: 0.5,
        memory_pressure: crate::volume::memory::pressure::MemoryPressure::none(),
        selinux_context: None,
        publish_timeout: Duration::from_secs(60),
        unpublish_wait: Duration::from_secs(10),
        refresh_timeout: Duration::from_secs(60),
        min_refresh_interval: Duration::from_secs(30),
    }
}

impl Core {
    /// A manager over fresh fakes.
    pub fn new() -> Self {
        Self::over(
            FakeVault::default(),
            MemoryStore::default(),
            MemoryRoots::default(),
        )
    }

    /// A manager over these fakes (a restarted driver keeps the store and
    /// the roots). Jitter comes from a seeded generator, so a test repeats
    /// exactly (the tests run on one thread).
    pub fn over(vault: FakeVault, store: MemoryStore, roots: MemoryRoots) -> Self {
        crate::timing::seed(0x5eed);
        let (scheduler, task) = RefreshScheduler::new(Slots::default());
        let ports = Ports {
            vault: Arc::new(vault.clone()),
            store: Arc::new(store.clone()),
            roots: Arc::new(roots.clone()),
        };
        let manager = VolumeManager::new(
            config(),
            ports,
            scheduler,
            Arc::new(Metrics::new()),
            TaskTracker::new(),
        )
        .with_renderer(Arc::new(Renderer::inline()));
        Self {
            manager: Arc::new(manager),
            vault,
            store,
            roots,
            task: Some(task),
        }
    }

    /// Runs the refresh scheduler (until the test ends).
    pub fn run_scheduler(&mut self) {
        let task = self.task.take().expect("the scheduler runs once");
        tokio::spawn(task.run(
            Arc::clone(&self.manager),
            tokio_util::sync::CancellationToken::new(),
            TaskTracker::new(),
        ));
    }

    /// A restart: a new manager over the same store, roots and Vault.
    pub fn restarted(&self) -> Self {
        Self::over(self.vault.clone(), self.store.clone(), self.roots.clone())
    }
}

/// A pod and its volume, as kubelet describes them.
#[derive(Debug, Clone)]
pub struct Pod {
    pub uid: String,
    pub volume: String,
    pub attributes: Vec<(String, String)>,
}

impl Pod {
    /// The walkthrough's pod with `template.index.html = template`.
    pub fn with_template(uid: &str, template: &str) -> Self {
        Self {
            uid: uid.to_owned(),
            volume: "secrets".to_owned(),
            attributes: vec![
                ("roleName".to_owned(), "example".to_owned()),
                ("template.index.html".to_owned(), template.to_owned()),
            ],
        }
    }

    /// Adds or replaces an attribute.
    pub fn attribute(mut self, key: &str, value: &str) -> Self {
        self.attributes.retain(|(k, _)| k != key);
        self.attributes.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The volume id kubelet gives it.
    pub fn volume_id(&self) -> String {
        format!("csi-{}-{}", self.uid, self.volume)
    }

    /// The target kubelet gives it.
    pub fn target(&self) -> String {
        format!(
            "{KUBELET}/pods/{}/volumes/kubernetes.io~csi/{}/mount",
            self.uid, self.volume
        )
    }

    /// Kubelet's request, with a service-account token valid for `valid`.
    pub fn request(&self, valid: Duration) -> PublishRequest {
        self.request_at(&self.target(), valid)
    }

    /// Kubelet's request for another target.
    pub fn request_at(&self, target: &str, valid: Duration) -> PublishRequest {
        let mut context: HashMap<String, String> = self.attributes.iter().cloned().collect();
        for (k, v) in [
            ("csi.storage.k8s.io/pod.name", "app"),
            ("csi.storage.k8s.io/pod.namespace", "team"),
            ("csi.storage.k8s.io/pod.uid", self.uid.as_str()),
            ("csi.storage.k8s.io/serviceAccount.name", "app"),
            ("csi.storage.k8s.io/ephemeral", "true"),
        ] {
            context.insert(k.to_owned(), v.to_owned());
        }
        let mut secrets = HashMap::new();
        secrets.insert(crate::vault::TOKENS_KEY.to_owned(), tokens_json(valid));
        PublishRequest {
            volume_id: self.volume_id(),
            target_path: target.to_owned(),
            capability: Some(PublishCapability::Mount {
                mount_group: String::new(),
                mount_flags: Vec::new(),
            }),
            readonly: true,
            volume_context: context,
            secrets,
        }
    }

    /// The request, checked as the CSI service checks it.
    pub fn checked(&self, core: &Core, valid: Duration) -> CheckedPublish {
        core.manager
            .check_publish(&self.request(valid))
            .expect("a valid request")
    }
}

/// Kubelet's token attribute with a JWT for audience `vault`, valid for
/// `valid` from now.
fn tokens_json(valid: Duration) -> String {
    let exp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + valid.as_secs();
    let claims = serde_json::json!({ "aud": ["vault"], "exp": exp, "sub": "system:serviceaccount:team:app" });
    let jwt = format!(
        "eyJhbGciOiJSUzI1NiJ9.{}.c2ln",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
    );
    serde_json::json!({ "vault": { "token": jwt, "expirationTimestamp": "2030-01-01T00:00:00Z" } })
        .to_string()
}
