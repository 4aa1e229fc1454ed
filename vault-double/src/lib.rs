//! An in-process test double for the parts of `HashiCorp` Vault's HTTP API
//! that `vault-csi-driver` speaks, because no Vault binary can run where the
//! driver's integration tests, benchmarks and quickstart run.
//!
//! The double verifies service-account JWTs (RS256 signature against the
//! demo key in `keys/`, expiry, audience, bound names and namespaces),
//! issues real-expiring tokens, and serves KV v2, KV v1, a leased dynamic
//! secret and PKI issuing, with Vault's exact response envelope,
//! `{"errors":[…]}` bodies, status codes and lease TTL math
//! (`CalculateTTL`). Faults (a fixed error status, 429 rate limiting of
//! the next requests or of a path), latency (overall or of a path) and
//! outages (`shutdown`/`restart`) can be injected, and every request is
//! recorded for assertions.
//!
//! It is as strict as Vault's own code where the driver depends on it:
//! standby redirects, index states, namespaces, KV v2 deletion, batch and
//! periodic tokens, policy-checked token endpoints, rate-limit headers.
//! `README.md` lists each behaviour with the Vault source it follows.
//!
//! # Endpoints (all under `/v1/`)
//! - `auth/<mount>/login` (PUT/POST `{"role","jwt"}`), unauthenticated.
//! - `auth/token/lookup-self`, `auth/token/renew-self`, `auth/token/revoke-self`.
//! - `sys/leases/renew[/<id>]`, `sys/leases/revoke[/<id>]` (and the legacy
//!   `sys/renew`, `sys/revoke`).
//! - `sys/health`, `sys/seal-status` (raw JSON, unauthenticated) and
//!   `sys/internal/ui/mounts/<path>` (KV version detection).
//! - KV v2: `<mount>/data/<path>` (GET, `?version=N`, PUT/POST
//!   `{"data":{…}}`), `<mount>/metadata/<path>` (GET, LIST).
//! - KV v1: `<mount>/<path>` (GET, LIST, PUT/POST, DELETE).
//! - Dynamic secrets: `<mount>/creds/<role>` (GET, leased).
//! - PKI: `<mount>/issue/<role>` (PUT/POST).
//!
//! Requests other than login, health and seal-status need a live token;
//! then an unknown mount is 404 `no handler for route`, and only then is
//! the token's policy checked (Vault checks policy first; this order lets
//! tests see the 404 without granting the path). Renewals re-read the
//! current role TTLs, as Vault's `LeaseExtend` does.
//!
//! # Layout
//! - [`VaultDouble`]: the handle (seeding, faults, observation, lifecycle).
//! - `server`: the hyper listener with synchronous outage simulation.
//! - `state`: mounts, tokens, leases and the request dispatcher, one file
//!   per concern (router, auth, leases, sys, one per secrets engine).
//! - `policy`: Vault ACL path matching.
//! - `jwt`: service-account token minting and verification.
//!
//! ```no_run
//! # async fn demo() {
//! use vault_double::{SaToken, VaultDouble, seed_walkthrough};
//! let vault = VaultDouble::start().await;
//! seed_walkthrough(&vault);
//! let jwt = vault.sign_sa_token(&SaToken::new("default", "vault-auth", ["vault"]));
//! // POST {vault.addr()}/v1/auth/kubernetes/login {"role":"example","jwt":jwt}
//! # let _ = jwt;
//! # }
//! ```

#![warn(clippy::pedantic)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// The workspace MSRV is 1.85, older than `Duration::from_hours`/`from_mins`.
#![allow(clippy::duration_suboptimal_units)]

mod jwt;
mod policy;
mod server;
mod state;
mod wire;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::server::Run;
use crate::state::Shared;

/// The demo service-account signing key (PKCS#8 PEM). The double trusts
/// tokens it signs; the quickstart also configures a real `vault` dev
/// server's Kubernetes auth with the matching public key.
pub const DEMO_SIGNING_KEY_PEM: &str = include_str!("../keys/demo-sa-signing-key.pem");
/// The public half of [`DEMO_SIGNING_KEY_PEM`] (SPKI PEM), what Vault's
/// Kubernetes auth `pem_keys` would be set to.
pub const DEMO_PUBLIC_KEY_PEM: &str = include_str!("../keys/demo-sa-signing-key.pub.pem");

/// Version string the double reports from `sys/health`, so logs show which
/// server answered.
pub const VERSION: &str = concat!("1.17.0+vault-double.", env!("CARGO_PKG_VERSION"));

/// A Kubernetes auth role: which service accounts may log in and what
/// token they get. Mirrors the fields of Vault's `auth/kubernetes/role/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// Role name, the `role` field of the login body.
    pub name: String,
    /// Allowed service-account names; `*` (or a glob like `app-*`) matches.
    pub bound_service_account_names: Vec<String>,
    /// Allowed namespaces; `*` matches any.
    pub bound_service_account_namespaces: Vec<String>,
    /// If set, the JWT's `aud` must contain it (else 403 `permission denied`).
    pub audience: Option<String>,
    /// Policies attached to issued tokens (`default` is always added).
    pub policies: Vec<String>,
    /// Token TTL (the login `lease_duration` and renewal default).
    pub token_ttl: Duration,
    /// Token max TTL, measured from login; renewals are capped to it.
    pub token_max_ttl: Duration,
    /// `service` (renewable, revocable, `hvs.`) or `batch` (`hvb.`, never
    /// renewed: renew-self answers 400 `batch tokens cannot be renewed`).
    pub token_type: TokenType,
    /// `token_period`: a periodic token's every renewal grants this TTL
    /// again, with no max TTL. Zero: not periodic.
    pub token_period: Duration,
    /// `token_no_default_policy`: the token lacks the `default` policy, and
    /// with it the token self endpoints and lease renewal.
    pub token_no_default_policy: bool,
    /// The `renewable` flag of the login's `auth` block (the auth plugin
    /// decides it; Kubernetes and JWT say `true`). A non-renewable token's
    /// renew-self answers 400 `lease is not renewable`.
    pub renewable: bool,
}

/// Vault's two token types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenType {
    /// Stored, renewable, revocable tokens (`hvs.`).
    #[default]
    Service,
    /// Unstored tokens (`hvb.`) that cannot be renewed or revoked.
    Batch,
}

/// Which server's answers the double gives where HashiCorp Vault and
/// OpenBao differ. Everything else (statuses, envelopes, TTL arithmetic,
/// error texts) is the same in both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flavor {
    /// HashiCorp Vault: `hvs.`/`hvb.` tokens, `mount_type` in every
    /// envelope, a dead token answered `2 errors occurred: permission
    /// denied, invalid token`.
    #[default]
    Vault,
    /// OpenBao 2.x, as `tests/differential.rs` observes it: `s.`/`b.`
    /// tokens, no `mount_type`, a dead token answered `permission denied`;
    /// Kubernetes logins refused with its own texts (`invalid expiration
    /// time (exp) claim: token is expired`, `invalid audience (aud) claim:
    /// …`, and `permission denied` for a JWT its TokenReview rejects); PKI
    /// answers carrying `not_before` (NotBefore, backdated 30 s).
    OpenBao,
}

/// How a 429 states `Retry-After` when rate-limit response headers are on
/// (`enable_rate_limit_response_headers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfterFormat {
    /// Whole seconds, as current Vault versions send.
    Seconds,
    /// An RFC 1123 HTTP-date, as older versions sent.
    HttpDate,
}

impl Role {
    /// A role with the given bindings and policies, `token_ttl` 1h,
    /// `token_max_ttl` 24h and no audience.
    pub fn new<N, S, P>(name: impl Into<String>, sa_names: N, sa_namespaces: S, policies: P) -> Self
    where
        N: IntoIterator,
        N::Item: AsRef<str>,
        S: IntoIterator,
        S::Item: AsRef<str>,
        P: IntoIterator,
        P::Item: AsRef<str>,
    {
        Self {
            name: name.into(),
            bound_service_account_names: sa_names
                .into_iter()
                .map(|s| s.as_ref().to_owned())
                .collect(),
            bound_service_account_namespaces: sa_namespaces
                .into_iter()
                .map(|s| s.as_ref().to_owned())
                .collect(),
            audience: None,
            policies: policies
                .into_iter()
                .map(|s| s.as_ref().to_owned())
                .collect(),
            token_ttl: Duration::from_secs(3600),
            token_max_ttl: Duration::from_secs(24 * 3600),
            token_type: TokenType::Service,
            token_period: Duration::ZERO,
            token_no_default_policy: false,
            renewable: true,
        }
    }

    /// Issues batch tokens.
    #[must_use]
    pub fn batch(mut self) -> Self {
        self.token_type = TokenType::Batch;
        self
    }

    /// Issues periodic tokens renewed to `period` each time.
    #[must_use]
    pub fn with_period(mut self, period: Duration) -> Self {
        self.token_period = period;
        self
    }

    /// Leaves the `default` policy off the tokens (`token_no_default_policy`).
    #[must_use]
    pub fn without_default_policy(mut self) -> Self {
        self.token_no_default_policy = true;
        self
    }

    /// Marks the login's token non-renewable.
    #[must_use]
    pub fn non_renewable(mut self) -> Self {
        self.renewable = false;
        self
    }

    /// Requires the JWT audience to contain `audience`.
    #[must_use]
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Sets `token_ttl` and `token_max_ttl`.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration, max_ttl: Duration) -> Self {
        self.token_ttl = ttl;
        self.token_max_ttl = max_ttl;
        self
    }
}

/// Configuration of a dynamic-secret role (`<mount>/creds/<role>`), the
/// double's stand-in for a database secrets engine role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DynamicRole {
    /// Lease TTL at issue and the renewal default when `increment` is 0.
    pub default_ttl: Duration,
    /// Max lease lifetime from issue; renewals are capped to it.
    pub max_ttl: Duration,
    /// Whether the lease may be renewed (else 400 `lease is not renewable`).
    pub renewable: bool,
}

impl DynamicRole {
    /// A renewable role with the given TTLs.
    #[must_use]
    pub fn new(default_ttl: Duration, max_ttl: Duration) -> Self {
        Self {
            default_ttl,
            max_ttl,
            renewable: true,
        }
    }
}

/// Claims of a projected service-account token to mint with
/// [`VaultDouble::sign_sa_token`] (the double acts as the API server's
/// token issuer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaToken {
    /// Pod namespace (`kubernetes.io.namespace`, and in `sub`).
    pub namespace: String,
    /// Service account name (`kubernetes.io.serviceaccount.name`, and in `sub`).
    pub service_account: String,
    /// `aud` claim.
    pub audience: Vec<String>,
    /// Lifetime from now. `Duration::ZERO` mints an already-expired token
    /// (`exp` one minute in the past) for testing the expired-JWT path.
    pub expires_in: Duration,
    /// `kubernetes.io.pod.name`.
    pub pod_name: String,
    /// `kubernetes.io.pod.uid`.
    pub pod_uid: String,
}

impl SaToken {
    /// Claims for `namespace/service_account` with the given audiences,
    /// expiring in 1h, pod `app` with a random uid.
    pub fn new<A>(
        namespace: impl Into<String>,
        service_account: impl Into<String>,
        audience: A,
    ) -> Self
    where
        A: IntoIterator,
        A::Item: AsRef<str>,
    {
        Self {
            namespace: namespace.into(),
            service_account: service_account.into(),
            audience: audience
                .into_iter()
                .map(|a| a.as_ref().to_owned())
                .collect(),
            expires_in: Duration::from_secs(3600),
            pod_name: "app".to_owned(),
            pod_uid: wire::uuid(),
        }
    }
}

/// The service account a verified token asserts, as a Kubernetes
/// `TokenReview` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountIdentity {
    /// The service account's namespace.
    pub namespace: String,
    /// The service account's name.
    pub name: String,
    /// The service account's uid (Vault's Kubernetes auth compares it with
    /// the token's `kubernetes.io.serviceaccount.uid`).
    pub uid: String,
    /// The token's `aud` claim.
    pub audience: Vec<String>,
}

/// Mints an RS256 projected service-account token with the demo key, as
/// [`VaultDouble::sign_sa_token`] does, without a running double: tests
/// that talk to a real Vault sign the same tokens for it.
#[must_use]
pub fn sign_sa_token(claims: &SaToken) -> String {
    jwt::sign(claims)
}

/// Verifies a token signed with the demo key (signature, `exp`, `nbf`,
/// and a `sub` of the form `system:serviceaccount:<ns>:<name>` that agrees
/// with the `kubernetes.io` claims), as the Kubernetes API server's
/// `TokenReview` does for a real Vault's Kubernetes auth.
///
/// # Errors
/// The message Vault's Kubernetes auth would answer with.
pub fn verify_sa_token(jwt: &str) -> Result<ServiceAccountIdentity, String> {
    jwt::verify(jwt).map(|v| ServiceAccountIdentity {
        namespace: v.namespace,
        name: v.name,
        uid: v.uid,
        audience: v.audience,
    })
}

/// An injected failure: every request gets `status` with
/// `{"errors":[message]}` until cleared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// HTTP status, e.g. 503.
    pub status: u16,
    /// The single `errors` entry, e.g. `Vault is sealed`.
    pub message: String,
}

impl Fault {
    /// A fault with the given status and message.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 503 `Vault is sealed`, the most common outage shape.
    #[must_use]
    pub fn sealed() -> Self {
        Self::new(503, "Vault is sealed")
    }
}

/// One request as the double saw it, for assertions about what the driver
/// sent and what it got back.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// Upper-case HTTP method (`GET`, `PUT`, `POST`, `LIST`, ...).
    pub method: String,
    /// Request path without query, including `/v1/`.
    pub path: String,
    /// The raw query string (`list=true` for a list sent as Vault's Go
    /// client sends it), empty for none.
    pub query: String,
    /// Status the double answered with.
    pub status: u16,
    /// `X-Vault-Token` (or `Authorization: Bearer`) value, if any.
    pub token: Option<String>,
    /// `X-Vault-Namespace` header, if any.
    pub namespace: Option<String>,
    /// Parsed JSON body, if the request had a valid one.
    pub body: Option<Value>,
    /// When the request was handled.
    pub at: SystemTime,
}

/// A lease as the double tracks it (dynamic secrets), for assertions about
/// renewal and revocation.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseState {
    /// `<mount>/creds/<role>/<random>`.
    pub lease_id: String,
    /// The path that created it, `<mount>/creds/<role>`.
    pub path: String,
    /// Issue time; the max TTL counts from here.
    pub issued_at: SystemTime,
    /// Current expiry (moves with each renewal).
    pub expires_at: SystemTime,
    /// Renewal limit: `issued_at` (whole seconds) + the role's max TTL.
    /// As in Vault, the final `expires_at` may pass it by under a second,
    /// and renewing in that window gives `past the max TTL, cannot renew`.
    pub max_expires_at: SystemTime,
    /// Whether renewal is allowed.
    pub renewable: bool,
    /// Revoked explicitly, with its token, or by expiring.
    pub revoked: bool,
    /// Successful renewals so far.
    pub renew_count: u32,
    /// The secret data that was returned.
    pub data: Value,
    /// Client token that created (owns) the lease.
    pub token: String,
    /// The Vault namespace it was created in; its id carries the
    /// namespace's `.<nsid>` suffix, and only that namespace finds it.
    pub vault_namespace: Option<String>,
}

/// A token as the double tracks it, for assertions about login, renewal,
/// expiry and revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenState {
    /// The `hvs.`-prefixed client token.
    pub client_token: String,
    /// Its accessor.
    pub accessor: String,
    /// Policies, including `default`, sorted.
    pub policies: Vec<String>,
    /// Login time; the max TTL counts from here.
    pub issued_at: SystemTime,
    /// Current expiry (moves with each renewal).
    pub expires_at: SystemTime,
    /// Renewal limit: `issued_at` (whole seconds) + the role's
    /// `token_max_ttl` (the final expiry may pass it by under a second).
    pub max_expires_at: SystemTime,
    /// Revoked explicitly (revoke-self) or by expiring.
    pub revoked: bool,
    /// Successful renew-self calls so far.
    pub renew_count: u32,
    /// Role used at login.
    pub role: String,
    /// Service account name from the JWT.
    pub service_account: String,
    /// Namespace from the JWT.
    pub namespace: String,
    /// `service` or `batch`.
    pub token_type: TokenType,
    /// The Vault (Enterprise) namespace the token was created in
    /// (`X-Vault-Namespace` of the login), `None` for the root namespace.
    pub vault_namespace: Option<String>,
}

/// Handle to a running double. Cheap to clone; the server stops when the
/// last clone is dropped or [`VaultDouble::shutdown`] is called.
#[derive(Clone)]
pub struct VaultDouble {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    addr: SocketAddr,
    run: Mutex<Option<Run>>,
}

impl Inner {
    fn stop(&self) {
        let run = self
            .run
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(run) = run {
            run.stop();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for VaultDouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultDouble")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

impl VaultDouble {
    /// Starts on `127.0.0.1:0` on the current tokio runtime; the server
    /// runs until the handle (and all clones) are dropped or
    /// [`shutdown`](Self::shutdown) is called.
    ///
    /// # Panics
    /// If no loopback port can be bound or there is no tokio runtime.
    pub async fn start() -> VaultDouble {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("vault-double: cannot bind 127.0.0.1:0")
    }

    /// Like [`start`](Self::start) but binds `addr` (a standalone process,
    /// or a fixed port that survives restarts).
    ///
    /// # Errors
    /// If `addr` cannot be bound.
    ///
    /// # Panics
    /// If there is no tokio runtime.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<VaultDouble> {
        let shared = Arc::new(Shared::new());
        let (run, local) = server::bind_and_serve(Arc::clone(&shared), addr).await?;
        Ok(VaultDouble {
            inner: Arc::new(Inner {
                shared,
                addr: local,
                run: Mutex::new(Some(run)),
            }),
        })
    }

    /// Base URL, `http://127.0.0.1:PORT`, what `VAULT_ADDR` would be.
    #[must_use]
    pub fn addr(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// The bound socket address.
    #[must_use]
    pub fn socket_addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Simulates an outage: stops listening (new connections are refused)
    /// and cuts open connections. State is kept for
    /// [`restart`](Self::restart).
    pub fn shutdown(&self) {
        self.inner.stop();
    }

    /// Listens again on the same port with the same state, ending a
    /// simulated outage. A no-op if already running.
    ///
    /// # Errors
    /// If the port cannot be bound again.
    pub async fn restart(&self) -> std::io::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let (run, _) =
            server::bind_and_serve(Arc::clone(&self.inner.shared), self.inner.addr).await?;
        let mut slot = self
            .inner
            .run
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.is_some() {
            // A concurrent restart won; keep its listener.
            drop(slot);
            run.stop();
        } else {
            *slot = Some(run);
        }
        Ok(())
    }

    /// Whether the double is currently listening.
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.inner
            .run
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    // ---- seeding ----

    /// Answers as `flavor` where Vault and OpenBao differ (tokens issued
    /// before keep their prefix).
    pub fn set_flavor(&self, flavor: Flavor) {
        self.inner.shared.set_flavor(flavor);
    }

    /// Enables a Kubernetes-style JWT login at `auth/<mount>/login` (mount
    /// e.g. `kubernetes`, `jwt`); JWTs are verified with
    /// [`DEMO_PUBLIC_KEY_PEM`] (RS256).
    pub fn enable_kubernetes_auth(&self, mount: &str) {
        self.inner.shared.enable_auth(mount);
    }

    /// Adds (or replaces) a login role on auth mount `mount`, enabling the
    /// mount if needed.
    ///
    /// # Panics
    /// If Vault would refuse the role (see [`try_add_role`](Self::try_add_role)).
    pub fn add_role(&self, mount: &str, role: Role) {
        if let Err(message) = self.try_add_role(mount, role) {
            panic!("vault-double: Vault refuses this role: {message}");
        }
    }

    /// Like [`add_role`](Self::add_role), returning Vault's 400 message
    /// when the role is refused, as `tokenutil` refuses a `token_ttl`
    /// above a (non-zero) `token_max_ttl`.
    ///
    /// # Errors
    /// The message Vault answers the role write with.
    pub fn try_add_role(&self, mount: &str, role: Role) -> Result<(), String> {
        self.inner.shared.add_role(mount, role)
    }

    /// Deletes a login role: logins with it fail, and renewing a token it
    /// issued answers 500 `role "<name>" does not exist during renewal`.
    pub fn remove_role(&self, mount: &str, name: &str) {
        self.inner.shared.remove_role(mount, name);
    }

    /// Writes policy `name`: path glob (trailing `*` = prefix, `+` = one
    /// path segment) to capabilities (`read`, `create`, `update`, `list`,
    /// `delete`, `deny`, ...). The most specific matching rule wins, as in
    /// Vault. The built-in `default` policy covers the token self endpoints
    /// and `sys/leases/renew`; the name `root` grants everything.
    pub fn put_policy(&self, name: &str, rules: &[(&str, &[&str])]) {
        self.inner.shared.put_policy(name, rules);
    }

    /// Mounts a KV version 2 engine at `mount`.
    ///
    /// # Panics
    /// If `mount` already holds a different engine.
    pub fn enable_kv2(&self, mount: &str) {
        self.inner.shared.enable_kv2(mount);
    }

    /// Mounts a KV version 1 engine at `mount`.
    ///
    /// # Panics
    /// If `mount` already holds a different engine.
    pub fn enable_kv1(&self, mount: &str) {
        self.inner.shared.enable_kv1(mount);
    }

    /// Writes a new version of `<mount>/data/<path>` (mounting KV v2 if
    /// needed).
    ///
    /// # Panics
    /// If `mount` holds a different engine.
    pub fn kv2_put(&self, mount: &str, path: &str, data: Value) {
        self.inner.shared.kv2_put(mount, path, data);
    }

    /// Soft-deletes `versions` of `<mount>/data/<path>` (the latest when
    /// empty), as `<mount>/delete/<path>` does: reads of them answer 404
    /// with the whole envelope and `deletion_time` set.
    pub fn kv2_delete(&self, mount: &str, path: &str, versions: &[u64]) {
        self.inner.shared.kv2_mark(mount, path, versions, false);
    }

    /// Destroys `versions` (the latest when empty), as
    /// `<mount>/destroy/<path>` does: the data is gone for good.
    pub fn kv2_destroy(&self, mount: &str, path: &str, versions: &[u64]) {
        self.inner.shared.kv2_mark(mount, path, versions, true);
    }

    /// Writes `<mount>/<path>` (mounting KV v1 if needed). A `ttl` key sets
    /// the advisory `lease_duration` of reads.
    ///
    /// # Panics
    /// If `mount` holds a different engine.
    pub fn kv1_put(&self, mount: &str, path: &str, data: Value) {
        self.inner.shared.kv1_put(mount, path, data);
    }

    /// Adds a dynamic-secret role: `GET /v1/<mount>/creds/<role>` issues a
    /// new username/password each call with a lease
    /// `<mount>/creds/<role>/<random>` owned by the calling token.
    ///
    /// # Panics
    /// If `mount` holds a different engine.
    pub fn add_dynamic_role(&self, mount: &str, role: &str, cfg: DynamicRole) {
        self.inner.shared.add_dynamic_role(mount, role, cfg);
    }

    /// Adds a static database role: `GET /v1/<mount>/static-creds/<role>`
    /// answers without a lease, with `data.ttl` the seconds to the next
    /// rotation; the password changes every `rotation_period`.
    ///
    /// # Panics
    /// If `mount` holds a different engine.
    pub fn add_static_role(&self, mount: &str, role: &str, rotation_period: Duration) {
        self.inner
            .shared
            .add_static_role(mount, role, rotation_period);
    }

    /// Adds a PKI role: `POST|PUT /v1/<mount>/issue/<role>` with
    /// `{"common_name", "ttl"}` returns a fake PEM certificate, numeric
    /// `expiration` (unix `NotAfter`), `serial_number` and `private_key`,
    /// without a lease (`generate_lease=false`).
    ///
    /// # Panics
    /// If `mount` holds a different engine.
    pub fn add_pki_role(&self, mount: &str, role: &str, ttl: Duration, max_ttl: Duration) {
        self.inner.shared.add_pki_role(mount, role, ttl, max_ttl);
    }

    // ---- JWT minting ----

    /// Mints an RS256 projected service-account token with the demo key,
    /// as the Kubernetes API server would for a pod.
    #[must_use]
    pub fn sign_sa_token(&self, claims: &SaToken) -> String {
        jwt::sign(claims)
    }

    // ---- faults ----

    /// Every request (health included) gets this status and
    /// `{"errors":[message]}` until cleared with `None`.
    pub fn set_fault(&self, fault: Option<Fault>) {
        self.inner.shared.set_fault(fault);
    }

    /// Makes answers wait, like a real Vault across a network: `login` for
    /// `auth/<mount>/login` (where a real Vault first asks the Kubernetes
    /// API to review the token), `other` for every other request. Zero, the
    /// default, answers at once; the timer rounds up to whole milliseconds.
    /// The request log still stamps the moment a request arrives.
    pub fn set_latency(&self, login: Duration, other: Duration) {
        self.inner.shared.set_latency(login, other);
    }

    /// Makes answers for paths under `prefix` (after `/v1/`, e.g.
    /// `slow/` or `database/creds/`) wait `latency`, whatever
    /// [`set_latency`](Self::set_latency) says: one slow secrets engine.
    /// The longest matching prefix wins; `None` removes the prefix.
    pub fn set_path_latency(&self, prefix: &str, latency: Option<Duration>) {
        self.inner.shared.set_path_latency(prefix, latency);
    }

    /// Every request for a path under `prefix` (after `/v1/`) gets 429
    /// `request path "<p>": rate limit quota exceeded`, with
    /// `Retry-After: <secs>` when `retry_after_secs` is set (Vault sends it
    /// only with `enable_rate_limit_response_headers`), until
    /// [`clear_rate_limit_path`](Self::clear_rate_limit_path): a
    /// rate-limit quota on one path that the client is over.
    pub fn rate_limit_path(&self, prefix: &str, retry_after_secs: Option<u64>) {
        self.inner.shared.rate_limit_path(prefix, retry_after_secs);
    }

    /// Ends [`rate_limit_path`](Self::rate_limit_path) for `prefix`.
    pub fn clear_rate_limit_path(&self, prefix: &str) {
        self.inner.shared.clear_rate_limit_path(prefix);
    }

    /// The next `n` requests get 429 `request path "<p>": rate limit quota
    /// exceeded`, blocked for `retry_after_secs`. Vault states the wait in
    /// `Retry-After` only when the quota's response headers are enabled
    /// (see [`set_rate_limit_headers`](Self::set_rate_limit_headers)).
    pub fn rate_limit_next(&self, n: usize, retry_after_secs: u64) {
        self.inner.shared.rate_limit_next(n, retry_after_secs);
    }

    /// `enable_rate_limit_response_headers`: `None` (Vault's default) sends
    /// no `Retry-After`; otherwise in the given form, with the
    /// `X-Ratelimit-*` headers.
    pub fn set_rate_limit_headers(&self, format: Option<RetryAfterFormat>) {
        self.inner.shared.set_rate_limit_headers(format);
    }

    /// Makes this node a standby without request forwarding: every request
    /// but `sys/health` answers 307 with `Location: <active><path>`, as
    /// `respondStandby` does. `None` makes it active again.
    pub fn set_standby(&self, active_addr: Option<&str>) {
        self.inner.shared.set_standby(active_addr);
    }

    /// Fault injection for a broken or hostile Vault: in every 2xx JSON
    /// answer to a path starting with `path_prefix`, sets the value at the
    /// JSON pointer `pointer` (e.g. `/auth/lease_duration`) to `value`.
    pub fn patch_answers(&self, path_prefix: &str, pointer: &str, value: Value) {
        self.inner.shared.patch_answers(path_prefix, pointer, value);
    }

    // ---- observation ----

    /// Every request so far, oldest first (the last 200 000 are kept).
    #[must_use]
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.shared.requests()
    }

    /// Requests whose method matches and whose path starts with
    /// `path_prefix`. `PUT` and `POST` count as the same method (Vault
    /// treats them as synonyms); `*` or `""` matches any method.
    #[must_use]
    pub fn count(&self, method: &str, path_prefix: &str) -> usize {
        self.inner.shared.count(method, path_prefix)
    }

    /// The lease `lease_id`, brought up to date with the clock (expired
    /// leases and leases of dead tokens show `revoked`).
    #[must_use]
    pub fn lease(&self, lease_id: &str) -> Option<LeaseState> {
        self.inner.shared.lease(lease_id)
    }

    /// All leases ever issued (oldest first), brought up to date.
    #[must_use]
    pub fn leases(&self) -> Vec<LeaseState> {
        self.inner.shared.leases()
    }

    /// The token with this client token or accessor, brought up to date
    /// (an expired token shows `revoked`).
    #[must_use]
    pub fn token(&self, accessor_or_token: &str) -> Option<TokenState> {
        self.inner.shared.token(accessor_or_token)
    }

    /// All tokens ever issued (oldest first), brought up to date.
    #[must_use]
    pub fn tokens(&self) -> Vec<TokenState> {
        self.inner.shared.tokens()
    }
}

/// Seeds the classic "Vault Agent with Kubernetes auth" walkthrough:
/// Kubernetes auth at `kubernetes`; KV v2 at `secret` with
/// `secret/myapp/config` = `{"username":"appuser","password":"suP3rsec(et!","ttl":"30s"}`;
/// policy `myapp-kv-ro` (read on `secret/data/myapp/*`, list on
/// `secret/metadata/myapp/*`); role `example` bound to service account
/// `vault-auth` in namespace `default`, audience `vault`, policies
/// `[myapp-kv-ro]`, token TTL 24h (max TTL 768h, the stock mount max a
/// role without `token_max_ttl` gets).
pub fn seed_walkthrough(v: &VaultDouble) {
    v.enable_kubernetes_auth("kubernetes");
    v.enable_kv2("secret");
    v.kv2_put(
        "secret",
        "myapp/config",
        json!({"username": "appuser", "password": "suP3rsec(et!", "ttl": "30s"}),
    );
    v.put_policy(
        "myapp-kv-ro",
        &[
            ("secret/data/myapp/*", &["read"]),
            ("secret/metadata/myapp/*", &["list"]),
        ],
    );
    v.add_role(
        "kubernetes",
        Role::new("example", ["vault-auth"], ["default"], ["myapp-kv-ro"])
            .with_audience("vault")
            .with_ttl(
                Duration::from_secs(24 * 3600),
                Duration::from_secs(768 * 3600),
            ),
    );
}

#[cfg(test)]
mod tests {
    use super::VaultDouble;

    #[test]
    fn handle_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<VaultDouble>();
    }
}
