//! The test harness: a Vault double, the real driver serving a real unix
//! socket, and a tonic client that sends exactly what kubelet sends.
//!
//! Mount tests need root (tmpfs). Outside CI a non-root run skips them; with
//! `CI=true` a missing privilege fails the test instead of skipping it.
#![allow(dead_code, clippy::missing_panics_doc)]

pub mod kubelet_wire;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use vault_csi_driver::config::{Config, FairnessConfig, LogFormat};
use vault_csi_driver::proto::identity_client::IdentityClient;
use vault_csi_driver::proto::node_client::NodeClient;
use vault_csi_driver::proto::{NodePublishVolumeRequest, NodeUnpublishVolumeRequest};
use vault_double::{SaToken, VaultDouble};

/// The walkthrough's `index.html` template, written for the driver.
pub const INDEX_TEMPLATE: &str = r#"<html>
<body>
<p>Some secrets:</p>
{{#with (secret "secret/data/myapp/config")}}
<ul>
<li><pre>username: {{data.data.username}}</pre></li>
<li><pre>password: {{data.data.password}}</pre></li>
</ul>
{{/with}}
</body>
</html>
"#;

/// What the template renders for the walkthrough's data.
pub fn expected_index(username: &str, password: &str) -> String {
    format!(
        "<html>\n<body>\n<p>Some secrets:</p>\n<ul>\n<li><pre>username: {username}</pre></li>\n<li><pre>password: {password}</pre></li>\n</ul>\n</body>\n</html>\n"
    )
}

/// Publishes as kubelet does, expects success and returns the target path.
pub async fn publish_ok(
    mut node: NodeClient<Channel>,
    request: NodePublishVolumeRequest,
) -> PathBuf {
    let target = PathBuf::from(&request.target_path);
    node.node_publish_volume(request)
        .await
        .unwrap_or_else(|status| panic!("publish failed: {status:?}"));
    target
}

/// Unpublishes as kubelet does and expects success.
pub async fn unpublish_ok(mut node: NodeClient<Channel>, request: NodeUnpublishVolumeRequest) {
    node.node_unpublish_volume(request)
        .await
        .unwrap_or_else(|status| panic!("unpublish failed: {status:?}"));
}

/// Publishes a volume named `v` for the walkthrough's pod with
/// `attributes` and expects success: the pod and the target path.
pub async fn publish_walkthrough(
    node: &Node,
    vault: &VaultDouble,
    driver: &Driver,
    attributes: &[(&str, &str)],
) -> (Pod, PathBuf) {
    let pod = Pod::walkthrough();
    let request = pod.publish(node, vault, "v", attributes);
    let target = publish_ok(driver.node().await, request).await;
    (pod, target)
}

/// Asserts that the volume at `target` holds the walkthrough's page with
/// the credentials [`walkthrough_vault`] seeds.
pub fn assert_walkthrough_page(target: &Path) {
    assert_eq!(
        std::fs::read_to_string(target.join("index.html")).unwrap(),
        expected_index("appuser", "suP3rsec(et!")
    );
}

/// True when mount tests can run; panics under `CI=true` if they cannot.
pub fn can_mount() -> bool {
    let root = nix::unistd::geteuid().is_root();
    assert!(
        root || std::env::var("CI").as_deref() != Ok("true"),
        "mount tests need root and CI=true forbids skipping them"
    );
    if !root {
        eprintln!("skipping: mount tests need root");
    }
    root
}

/// Polls `check` every 20 ms until it holds or `timeout` passes.
pub async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A scratch directory laid out like a node: `kubelet/pods`, `state`, the
/// socket. Everything mounted below it is unmounted on drop.
pub struct Node {
    pub root: PathBuf,
}

impl Node {
    pub fn new() -> Self {
        let root = std::env::temp_dir().join(format!("vcd-{}", rand_suffix()));
        std::fs::create_dir_all(root.join("kubelet/pods")).unwrap();
        Self { root }
    }

    pub fn kubelet_dir(&self) -> PathBuf {
        self.root.join("kubelet")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }

    pub fn socket(&self) -> PathBuf {
        self.root.join("csi/csi.sock")
    }

    /// Mount points currently under this node's root.
    pub fn mounts(&self) -> Vec<String> {
        mounts_under(&self.root)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for mount in mounts_under(&self.root).into_iter().rev() {
            let _ = nix::mount::umount2(mount.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Mount points whose path starts with `root`, from `/proc/self/mountinfo`.
pub fn mounts_under(root: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = root.to_string_lossy().into_owned();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|p| p.starts_with(&prefix))
        .collect()
}

/// The mount options of the mount at `path`, e.g. `ro,nosuid,nodev,noexec`.
pub fn mount_options(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let target = path.to_string_lossy().into_owned();
    info.lines().rev().find_map(|l| {
        let fields: Vec<&str> = l.split(' ').collect();
        (fields.get(4) == Some(&target.as_str())).then(|| fields[5].to_owned())
    })
}

pub fn rand_suffix() -> String {
    let mut s = String::new();
    for b in rand_bytes() {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn rand_bytes() -> [u8; 6] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let digest = Sha256::digest(format!("{nanos}-{:?}", std::thread::current().id()));
    let mut out = [0u8; 6];
    out.copy_from_slice(&digest[..6]);
    out
}

/// Driver flags for a node, talking to `vault`.
pub fn driver_config(node: &Node, vault: &VaultDouble) -> Config {
    Config {
        endpoint: format!("unix://{}", node.socket().display()),
        node_id: "test-node".to_owned(),
        driver_name: "vault.csi.driver".to_owned(),
        vault_addr: Some(vault.addr().parse().unwrap()),
        allowed_vault_addrs: Vec::new(),
        vault_ca_cert: None,
        state_dir: node.state_dir(),
        kubelet_dir: node.kubelet_dir(),
        metrics_addr: None,
        log_format: LogFormat::Text,
        log_level: "info".to_owned(),
        static_secret_refresh_interval: Duration::from_secs(300),
        volume_size_bytes: 1024 * 1024,
        max_concurrent_refreshes: 64,
        insecure_plain_directories: false,
        vault_request_timeout: Duration::from_secs(30),
        shutdown_timeout: Duration::from_secs(10),
        // Tests of refresh mechanics use intervals of a second or two.
        fairness: FairnessConfig {
            min_refresh_interval: Duration::ZERO,
            ..FairnessConfig::default()
        },
    }
}

/// The driver running in-process on a real socket.
pub struct Driver {
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), vault_csi_driver::app::Error>>,
    pub socket: PathBuf,
}

impl Driver {
    pub async fn start(config: Config) -> Self {
        let socket = PathBuf::from(config.endpoint.trim_start_matches("unix://"));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(vault_csi_driver::app::run(config, shutdown.clone()));
        wait_for("the CSI socket", Duration::from_secs(10), || {
            socket.exists()
        })
        .await;
        Self {
            shutdown,
            task,
            socket,
        }
    }

    pub async fn node(&self) -> NodeClient<Channel> {
        NodeClient::new(channel(&self.socket).await)
    }

    pub async fn identity(&self) -> IdentityClient<Channel> {
        IdentityClient::new(channel(&self.socket).await)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// A tonic channel over the unix socket, as kubelet dials it. The socket
/// file appears at `bind`, a moment before `listen`: connecting is retried
/// for a few seconds, as kubelet's dialer does.
pub async fn channel(socket: &Path) -> Channel {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match kubelet_wire::dial(socket).await {
            Ok(channel) => return channel,
            Err(error) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "cannot connect to {}: {error}",
                    socket.display()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// A pod as kubelet sees it.
#[derive(Clone, Debug)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub service_account: String,
}

impl Pod {
    pub fn new(namespace: &str, name: &str, service_account: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: format!("{}-{}", name, rand_suffix()),
            service_account: service_account.to_owned(),
        }
    }

    pub fn walkthrough() -> Self {
        Self::new("default", "nginx", "vault-auth")
    }

    /// `csi-` + hex(sha256(podUID + volume name)), as kubelet makes it.
    pub fn volume_id(&self, volume: &str) -> String {
        kubelet_wire::volume_id(&self.uid, volume)
    }

    /// `<kubelet>/pods/<uid>/volumes/kubernetes.io~csi/<vol>/mount`; the
    /// parent is created (0750) with `vol_data.json`, as kubelet does.
    pub fn target(&self, node: &Node, volume: &str) -> PathBuf {
        kubelet_wire::prepare_target(&node.kubelet_dir(), &self.uid, volume)
            .expect("create the target's parent")
    }

    /// A token for this pod's service account, as kubelet's `TokenRequest`
    /// would mint it.
    pub fn token(&self, vault: &VaultDouble, audience: &str, expires_in: Duration) -> String {
        let mut claims = SaToken::new(&self.namespace, &self.service_account, [audience]);
        claims.expires_in = expires_in;
        claims.pod_name.clone_from(&self.name);
        claims.pod_uid.clone_from(&self.uid);
        vault.sign_sa_token(&claims)
    }

    /// `csi.storage.k8s.io/serviceAccount.tokens` JSON.
    pub fn tokens_json(&self, vault: &VaultDouble, audiences: &[&str]) -> String {
        let tokens: Vec<String> = audiences
            .iter()
            .map(|audience| self.token(vault, audience, Duration::from_secs(3600)))
            .collect();
        let entries: Vec<(&str, &str, &str)> = audiences
            .iter()
            .zip(&tokens)
            .map(|(audience, token)| (*audience, token.as_str(), "2099-01-01T00:00:00Z"))
            .collect();
        kubelet_wire::tokens_json(&entries)
    }

    /// A NodePublishVolume request exactly as kubelet builds it for an
    /// inline volume with `podInfoOnMount` and `tokenRequests`.
    pub fn publish(
        &self,
        node: &Node,
        vault: &VaultDouble,
        volume: &str,
        attributes: &[(&str, &str)],
    ) -> NodePublishVolumeRequest {
        kubelet_wire::publish_request(
            self.info(),
            volume,
            &self.target(node, volume),
            self.tokens_json(vault, &["vault"]),
            attributes,
        )
    }

    pub fn unpublish(&self, node: &Node, volume: &str) -> NodeUnpublishVolumeRequest {
        kubelet_wire::unpublish_request(&self.uid, volume, &self.target(node, volume))
    }

    /// The fields kubelet passes with `podInfoOnMount`.
    pub fn info(&self) -> kubelet_wire::PodInfo<'_> {
        kubelet_wire::PodInfo {
            namespace: &self.namespace,
            name: &self.name,
            uid: &self.uid,
            service_account: &self.service_account,
        }
    }
}

/// A Vault double seeded with the walkthrough.
pub async fn walkthrough_vault() -> VaultDouble {
    let vault = VaultDouble::start().await;
    vault_double::seed_walkthrough(&vault);
    vault
}

/// The walkthrough plus a `database` dynamic-secrets role `app` and a PKI
/// role `web`, all readable by role `example`, whose tokens live `token_ttl`
/// (max `token_max`).
pub async fn dynamic_vault(
    creds: vault_double::DynamicRole,
    token_ttl: Duration,
    token_max: Duration,
) -> VaultDouble {
    let vault = walkthrough_vault().await;
    vault.put_policy(
        "myapp-kv-ro",
        &[
            ("secret/data/myapp/*", &["read"]),
            ("database/creds/*", &["read"]),
            ("pki/issue/*", &["create", "update"]),
        ],
    );
    vault.add_dynamic_role("database", "app", creds);
    vault.add_pki_role(
        "pki",
        "web",
        Duration::from_secs(3),
        Duration::from_secs(60),
    );
    vault.add_role(
        "kubernetes",
        vault_double::Role::new("example", ["vault-auth"], ["default"], ["myapp-kv-ro"])
            .with_audience("vault")
            .with_ttl(token_ttl, token_max),
    );
    vault
}

/// Template for the dynamic database credentials: `user=<u> pass=<p>`.
pub const CREDS_TEMPLATE: &str = r#"{{#with (secret "database/creds/app")}}user={{data.username}} pass={{data.password}}{{/with}}"#;

/// The driver binary running as its own process (for kill -9, SIGTERM and
/// log-capture tests).
pub struct DriverProcess {
    pub child: std::process::Child,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl DriverProcess {
    /// Starts the binary with flags equivalent to [`driver_config`], extra
    /// `args`, and stdout/stderr captured to `log_name` under the node root.
    pub async fn spawn(node: &Node, vault: &VaultDouble, log_name: &str, args: &[&str]) -> Self {
        let log = node.root.join(log_name);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let err = out.try_clone().unwrap();
        let socket = node.socket();
        let _ = std::fs::remove_file(&socket);
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_vault-csi-driver"))
            .arg(format!("--endpoint=unix://{}", socket.display()))
            .arg("--node-id=test-node")
            .arg(format!("--vault-addr={}", vault.addr()))
            .arg(format!("--state-dir={}", node.state_dir().display()))
            .arg(format!("--kubelet-dir={}", node.kubelet_dir().display()))
            .arg("--min-refresh-interval=0s")
            .args(args)
            .env_remove("VAULT_ADDR")
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        let probe = socket.clone();
        wait_for("the driver's socket", Duration::from_secs(10), || {
            probe.exists()
        })
        .await;
        Self { child, socket, log }
    }

    pub async fn node(&self) -> NodeClient<Channel> {
        NodeClient::new(channel(&self.socket).await)
    }

    /// SIGKILL: no cleanup at all.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait for the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the driver did not exit after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for DriverProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
