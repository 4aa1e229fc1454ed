//! The test harness: a Vault double, the real driver serving a real unix
//! socket, and a tonic client that sends exactly what kubelet sends.
//! [`Harness`] builds all of it for one test.
//!
//! The Vault can also be a real OpenBao ([`openbao::OpenBao`]: `bao server
//! -dev` with an audit log to count requests from, its Kubernetes auth
//! reviewing tokens through [`token_review`]'s stand-in for kube-apiserver,
//! and [`postgres`] for its database engine): anything implementing
//! [`TestVault`] goes to [`HarnessBuilder::vault`], and `Pod` tokens log in
//! to both. Tests that need OpenBao or PostgreSQL skip with a message when
//! they are not installed, and fail under `CI=true`.
//!
//! Storage follows the privilege the tests run with: as root every volume
//! is a real tmpfs mount, as today's nodes have it; without root the driver
//! runs with `--insecure-plain-directories` and volumes are plain
//! directories, so nearly every test runs on a contributor's machine.
//! [`Node::volumes`] and [`is_volume`] look for volumes the way the mode
//! makes them. A test whose assertion needs a real mount, namespace or
//! cgroup starts with [`requires_root`]: outside CI a non-root run skips it
//! with a message; with `CI=true` it fails instead of skipping.
#![allow(dead_code, clippy::missing_panics_doc)]

pub mod kubelet_wire;
pub mod openbao;
pub mod postgres;
mod test_vault;
pub mod token_review;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
pub use test_vault::TestVault;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use vault_csi_driver::config::{Config, FairnessConfig, LogFormat};
use vault_csi_driver::proto::identity_client::IdentityClient;
use vault_csi_driver::proto::node_client::NodeClient;
use vault_csi_driver::proto::{NodePublishVolumeRequest, NodeUnpublishVolumeRequest};
use vault_double::{SaToken, VaultDouble};

impl TestVault for VaultDouble {
    fn addr(&self) -> String {
        VaultDouble::addr(self)
    }

    fn sign_sa_token(&self, claims: &SaToken) -> String {
        VaultDouble::sign_sa_token(self, claims)
    }

    async fn walkthrough() -> Self {
        walkthrough_vault().await
    }
}

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

/// Asserts that the volume at `target` holds the walkthrough's page with
/// the credentials [`walkthrough_vault`] seeds.
pub fn assert_walkthrough_page(target: &Path) {
    assert_eq!(
        std::fs::read_to_string(target.join("index.html")).unwrap(),
        expected_index("appuser", "suP3rsec(et!")
    );
}

/// True when the tests run as root: volumes are tmpfs mounts. Otherwise
/// the driver writes plain directories (`--insecure-plain-directories`).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// True when volumes are plain directories (the tests do not run as root).
pub fn plain_directories() -> bool {
    !is_root()
}

/// True when a test that needs root (`why`: what in it needs a real mount,
/// namespace or cgroup) can run. Without root it is skipped with a message,
/// except under `CI=true`, where nothing may be skipped: it fails.
pub fn requires_root(why: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "this test needs root ({why}) and CI=true forbids skipping it"
    );
    eprintln!("skipping: needs root ({why})");
    false
}

/// True when `path` is a volume of the driver: a mount point with tmpfs,
/// a directory holding the atomic writer's `..data` with plain directories.
pub fn is_volume(path: &Path) -> bool {
    if plain_directories() {
        return path.join("..data").symlink_metadata().is_ok();
    }
    mounts_under(path).iter().any(|m| Path::new(m) == path)
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

    /// Mount points currently under this node's root, except the
    /// driver's private mount directory itself (`<state>/mounts`, made once
    /// at start-up); staged volumes and writable views below it count.
    pub fn mounts(&self) -> Vec<String> {
        let private = self.state_dir().join("mounts");
        mounts_under(&self.root)
            .into_iter()
            .filter(|m| Path::new(m) != private)
            .collect()
    }

    /// The driver's volumes on this node. With tmpfs: the mount points under
    /// the root, as [`Node::mounts`]. With plain directories: every
    /// directory under the root (symlinks not followed) that holds the
    /// atomic writer's `..data`, a volume's only mark there.
    pub fn volumes(&self) -> Vec<String> {
        if !plain_directories() {
            return self.mounts();
        }
        let mut found = Vec::new();
        let mut pending = vec![self.root.clone()];
        while let Some(dir) = pending.pop() {
            if dir.join("..data").symlink_metadata().is_ok() {
                found.push(dir.display().to_string());
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    pending.push(entry.path());
                }
            }
        }
        found.sort();
        found
    }

    /// How many volume records the driver keeps in its state directory.
    pub fn state_files(&self) -> usize {
        std::fs::read_dir(self.state_dir().join("volumes")).map_or(0, Iterator::count)
    }

    /// The state record of volume `volume_id`.
    pub fn record(&self, volume_id: &str) -> PathBuf {
        self.state_dir()
            .join("volumes")
            .join(format!("{volume_id}.json"))
    }

    /// Makes kubelet's `pods/` directory a shared mount in this (the
    /// host's) mount namespace, as it is on a node, so a driver in its own
    /// namespace ([`DriverProcess::spawn_in_own_namespace`]) reaches it the
    /// way `mountPropagation: Bidirectional` does: what the driver mounts
    /// below it propagates here as a copy, and only that copy is what
    /// kubelet binds into pods.
    pub fn share_pods_dir(&self) {
        let pods = self.kubelet_dir().join("pods");
        nix::mount::mount(
            Some(&pods),
            &pods,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind kubelet's pods directory onto itself");
        nix::mount::mount(
            None::<&str>,
            &pods,
            None::<&str>,
            nix::mount::MsFlags::MS_SHARED | nix::mount::MsFlags::MS_REC,
            None::<&str>,
        )
        .expect("make kubelet's pods directory shared");
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

/// A memory cgroup with a limit, made for one test (cgroup v1's memory
/// controller, or a v2 child with `memory.max`); removed on drop.
pub struct MemoryCgroup {
    dir: PathBuf,
    v2: bool,
}

impl MemoryCgroup {
    pub fn new(limit_bytes: u64) -> Self {
        let name = format!("vcd-test-{}", rand_suffix());
        let v1 = Path::new("/sys/fs/cgroup/memory");
        let v2 = Path::new("/sys/fs/cgroup");
        let (dir, file, v2) = if v1.join("memory.limit_in_bytes").exists() {
            (v1.join(&name), "memory.limit_in_bytes", false)
        } else if v2.join("cgroup.controllers").exists() {
            (v2.join(&name), "memory.max", true)
        } else {
            panic!("no memory cgroup controller (v1 or v2) is mounted under /sys/fs/cgroup");
        };
        std::fs::create_dir(&dir).expect("create a memory cgroup");
        std::fs::write(dir.join(file), limit_bytes.to_string()).expect("set its limit");
        Self { dir, v2 }
    }

    pub fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// The cgroup's limit, in bytes.
    pub fn limit(&self) -> u64 {
        let file = if self.v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        self.read_u64(file).unwrap_or(u64::MAX)
    }

    /// What the cgroup holds now (`memory.usage_in_bytes`, v2
    /// `memory.current`): heap, tmpfs pages, page cache and, where the
    /// kernel accounts it, kernel memory (inodes, dentries).
    pub fn usage(&self) -> u64 {
        let file = if self.v2 {
            "memory.current"
        } else {
            "memory.usage_in_bytes"
        };
        self.read_u64(file).unwrap_or(0)
    }

    /// The highest usage since the cgroup was made (v1
    /// `memory.max_usage_in_bytes`, v2 `memory.peak`), kept by the kernel
    /// between any two samples a test takes.
    pub fn peak(&self) -> u64 {
        let file = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        self.read_u64(file).unwrap_or(0)
    }

    /// How many times usage reached the limit (v1 `memory.failcnt`, v2
    /// `max` in `memory.events`): each one made the kernel reclaim, or
    /// fail a charge, to stay under it.
    pub fn limit_hits(&self) -> u64 {
        if self.v2 {
            self.event("max ")
        } else {
            self.read_u64("memory.failcnt").unwrap_or(0)
        }
    }

    /// One counter of `memory.stat` (`shmem`, `rss`, `inactive_file`, …);
    /// 0 when absent.
    pub fn stat(&self, key: &str) -> u64 {
        std::fs::read_to_string(self.dir.join("memory.stat"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == key).then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0)
    }

    /// The working set as kubelet computes it for eviction, and as the
    /// driver's second line reads it: usage less the inactive file cache
    /// the kernel reclaims before it kills.
    pub fn working_set(&self) -> u64 {
        let inactive = if self.v2 {
            self.stat("inactive_file")
        } else {
            self.stat("total_inactive_file")
        };
        self.usage().saturating_sub(inactive)
    }

    /// What the usage is made of, for a test's figures: the heap and
    /// stacks (anonymous memory), tmpfs pages (shmem), the page cache and,
    /// where the kernel accounts it, its own memory (inodes, dentries,
    /// socket buffers).
    pub fn composition(&self) -> String {
        let (anon, shmem, file, kernel) = if self.v2 {
            (
                self.stat("anon"),
                self.stat("shmem"),
                self.stat("file"),
                self.stat("kernel"),
            )
        } else {
            (
                self.stat("total_rss"),
                self.stat("total_shmem"),
                self.stat("total_cache"),
                self.read_u64("memory.kmem.usage_in_bytes").unwrap_or(0),
            )
        };
        format!(
            "anon {} KiB, shmem {} KiB, page cache {} KiB (shmem included), kernel {} KiB",
            anon / 1024,
            shmem / 1024,
            file / 1024,
            kernel / 1024
        )
    }

    fn read_u64(&self, file: &str) -> Option<u64> {
        std::fs::read_to_string(self.dir.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn event(&self, key: &str) -> u64 {
        std::fs::read_to_string(self.dir.join("memory.events"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// How many times the kernel's OOM killer acted in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        let (file, key) = if self.v2 {
            ("memory.events", "oom_kill ")
        } else {
            ("memory.oom_control", "oom_kill ")
        };
        std::fs::read_to_string(self.dir.join(file))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // Processes must be gone first; charged tmpfs pages move to the
        // parent.
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
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
    mount_options_in("/proc/self/mountinfo", path)
}

/// The mount options of the mount at `path` in the mount table `mountinfo`
/// (another process's `/proc/<pid>/mountinfo`).
pub fn mount_options_in(mountinfo: &str, path: &Path) -> Option<String> {
    let info = std::fs::read_to_string(mountinfo).ok()?;
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

/// Driver flags for a node, talking to `vault`; plain-directory volumes
/// unless the tests run as root.
pub fn driver_config(node: &Node, vault: &impl TestVault) -> Config {
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
        metrics_max_connections: 64,
        metrics_header_timeout: Duration::from_secs(5),
        metrics_request_timeout: Duration::from_secs(10),
        metrics_idle_timeout: Duration::from_secs(15),
        metrics_per_volume: false,
        log_format: LogFormat::Text,
        log_level: "info".to_owned(),
        static_secret_refresh_interval: Duration::from_secs(300),
        volume_size_bytes: 1024 * 1024,
        memory_budget_bytes: None,
        selinux_context: "auto".to_owned(),
        max_concurrent_refreshes: 64,
        insecure_plain_directories: plain_directories(),
        vault_request_timeout: Duration::from_secs(30),
        shutdown_timeout: Duration::from_secs(10),
        publish_timeout: Duration::from_secs(60),
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
    pub fn token(&self, vault: &impl TestVault, audience: &str, expires_in: Duration) -> String {
        let mut claims = SaToken::new(&self.namespace, &self.service_account, [audience]);
        claims.expires_in = expires_in;
        claims.pod_name.clone_from(&self.name);
        claims.pod_uid.clone_from(&self.uid);
        vault.sign_sa_token(&claims)
    }

    /// `csi.storage.k8s.io/serviceAccount.tokens` JSON.
    pub fn tokens_json(&self, vault: &impl TestVault, audiences: &[&str]) -> String {
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
        vault: &impl TestVault,
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
    /// Starts the binary with flags equivalent to [`driver_config`] (so
    /// `--insecure-plain-directories` without root), extra
    /// `args`, and stdout/stderr captured to `log_name` under the node root.
    pub async fn spawn(node: &Node, vault: &impl TestVault, log_name: &str, args: &[&str]) -> Self {
        Self::spawn_with(node, vault, log_name, args, false).await
    }

    /// Like [`DriverProcess::spawn`], but in a mount namespace of its own
    /// that keeps the propagation of every mount (`unshare -m
    /// --propagation unchanged`): the DaemonSet's topology, once
    /// [`Node::share_pods_dir`] has made `pods/` shared. The child's pid is
    /// the driver's (unshare execs it).
    pub async fn spawn_in_own_namespace(
        node: &Node,
        vault: &impl TestVault,
        log_name: &str,
        args: &[&str],
    ) -> Self {
        Self::spawn_with(node, vault, log_name, args, true).await
    }

    /// Like [`DriverProcess::spawn_in_own_namespace`], inside `cgroup` from
    /// its first instruction (it joins before exec), so its memory limit
    /// applies to everything the driver allocates and writes to tmpfs.
    pub async fn spawn_in_cgroup(
        node: &Node,
        vault: &impl TestVault,
        log_name: &str,
        args: &[&str],
        cgroup: &MemoryCgroup,
    ) -> Self {
        Self::spawn_full(node, vault, log_name, args, true, Some(cgroup)).await
    }

    /// Like [`DriverProcess::spawn_in_cgroup`], running `binary` (the
    /// release build, say) instead of the test build's.
    pub async fn spawn_binary_in_cgroup(
        node: &Node,
        vault: &impl TestVault,
        log_name: &str,
        args: &[&str],
        cgroup: &MemoryCgroup,
        binary: &Path,
    ) -> Self {
        Self::spawn_binary(node, vault, log_name, args, true, Some(cgroup), binary).await
    }

    async fn spawn_with(
        node: &Node,
        vault: &impl TestVault,
        log_name: &str,
        args: &[&str],
        own_namespace: bool,
    ) -> Self {
        Self::spawn_full(node, vault, log_name, args, own_namespace, None).await
    }

    async fn spawn_full(
        node: &Node,
        vault: &impl TestVault,
        log_name: &str,
        args: &[&str],
        own_namespace: bool,
        cgroup: Option<&MemoryCgroup>,
    ) -> Self {
        let binary = Path::new(env!("CARGO_BIN_EXE_vault-csi-driver"));
        Self::spawn_binary(node, vault, log_name, args, own_namespace, cgroup, binary).await
    }

    async fn spawn_binary(
        node: &Node,
        vault: &impl TestVault,
        log_name: &str,
        args: &[&str],
        own_namespace: bool,
        cgroup: Option<&MemoryCgroup>,
        binary: &Path,
    ) -> Self {
        let log = node.root.join(log_name);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let err = out.try_clone().unwrap();
        let socket = node.socket();
        let _ = std::fs::remove_file(&socket);
        let mut command = std::process::Command::new("sh");
        command.arg("-c");
        match cgroup {
            Some(cgroup) => command.arg(format!(
                "echo $$ > '{}' && exec \"$@\"",
                cgroup.procs().display()
            )),
            None => command.arg("exec \"$@\""),
        };
        command.arg("driver");
        if own_namespace {
            command.args(["unshare", "--mount", "--propagation", "unchanged", "--"]);
        }
        command.arg(binary);
        let child = command
            .arg(format!("--endpoint=unix://{}", socket.display()))
            .arg("--node-id=test-node")
            .arg(format!("--vault-addr={}", vault.addr()))
            .arg(format!("--state-dir={}", node.state_dir().display()))
            .arg(format!("--kubelet-dir={}", node.kubelet_dir().display()))
            .arg("--min-refresh-interval=0s")
            .args(plain_directories().then_some("--insecure-plain-directories"))
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

    /// The mount options of `path` as the driver's mount namespace sees it.
    pub fn mount_options(&self, path: &Path) -> Option<String> {
        mount_options_in(&format!("/proc/{}/mountinfo", self.child.id()), path)
    }

    /// SIGKILL: no cleanup at all.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait for the exit status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
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

/// The driver binary for tests that measure it as deployed: the release
/// build named by `VCD_NODE_BOX_DRIVER` (`.ci/run` builds it and sets it;
/// relative to the repository), else the test build's.
pub fn deployed_driver_binary() -> PathBuf {
    match std::env::var_os("VCD_NODE_BOX_DRIVER") {
        Some(path) => Path::new(env!("CARGO_MANIFEST_DIR")).join(path),
        None => PathBuf::from(env!("CARGO_BIN_EXE_vault-csi-driver")),
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

/// A driver a test talks to over its socket: in-process ([`Driver`]) or
/// its own process ([`DriverProcess`]).
pub trait Serves {
    /// The CSI socket it serves.
    fn socket(&self) -> &Path;
}

impl Serves for Driver {
    fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Serves for DriverProcess {
    fn socket(&self) -> &Path {
        &self.socket
    }
}

/// One test's world: a [`Node`], a Vault (the double unless a test
/// passes a real OpenBao to [`HarnessBuilder::vault`]), the driver serving
/// the node's socket, and the walkthrough's pod. [`Harness::walkthrough`]
/// is the common case (Vault seeded with the walkthrough, the driver
/// in-process with [`driver_config`]); [`Harness::builder`] sets up the
/// variants. Fields drop driver first, node last, as a test's locals did.
pub struct Harness<D = Driver, V = VaultDouble> {
    /// The driver, in-process or its own process.
    pub driver: D,
    /// The Vault the driver talks to.
    pub vault: V,
    /// The walkthrough's pod (`default/nginx`, service account
    /// `vault-auth`), whose volumes the `publish_ok`/`unpublish_ok`
    /// helpers publish.
    pub pod: Pod,
    /// The scratch node: kubelet's directory, the driver's state, the socket.
    pub node: Node,
}

impl Harness {
    /// The walkthrough: Vault seeded by [`walkthrough_vault`], the driver
    /// in-process with [`driver_config`].
    pub async fn walkthrough() -> Self {
        Self::builder().start().await
    }

    /// Dynamic secrets: Vault seeded by [`dynamic_vault`] with `creds` and
    /// tokens that live an hour (two at most), the driver in-process.
    pub async fn dynamic(creds: vault_double::DynamicRole) -> Self {
        let vault =
            dynamic_vault(creds, Duration::from_secs(3600), Duration::from_secs(7200)).await;
        Self::builder().vault(vault).start().await
    }

    /// A harness to configure: the Vault, the driver's configuration or
    /// flags, in-process or its own process.
    pub fn builder() -> HarnessBuilder {
        HarnessBuilder {
            node: Node::new(),
            vault: None,
            tweaks: Vec::new(),
        }
    }
}

impl<V: TestVault> Harness<Driver, V> {
    /// Stops the in-process driver and checks it stopped cleanly.
    pub async fn stop(self) {
        self.driver.stop().await;
    }

    /// Stops the in-process driver, then starts the next one on the same
    /// node and Vault with [`driver_config`] changed by `tweak` (the
    /// builder's tweaks do not carry over).
    pub async fn restart(&mut self, tweak: impl FnOnce(&mut Config)) {
        self.driver.shutdown.cancel();
        (&mut self.driver.task).await.unwrap().unwrap();
        let mut config = driver_config(&self.node, &self.vault);
        tweak(&mut config);
        self.driver = Driver::start(config).await;
    }
}

impl<D: Serves, V: TestVault> Harness<D, V> {
    /// A client of the driver's node service, as kubelet dials it.
    pub async fn client(&self) -> NodeClient<Channel> {
        NodeClient::new(channel(self.driver.socket()).await)
    }

    /// Kubelet's NodePublishVolume for the walkthrough pod's `volume`.
    pub fn request(&self, volume: &str, attributes: &[(&str, &str)]) -> NodePublishVolumeRequest {
        self.pod
            .publish(&self.node, &self.vault, volume, attributes)
    }

    /// Kubelet's NodePublishVolume for `pod`'s `volume`.
    pub fn request_for(
        &self,
        pod: &Pod,
        volume: &str,
        attributes: &[(&str, &str)],
    ) -> NodePublishVolumeRequest {
        pod.publish(&self.node, &self.vault, volume, attributes)
    }

    /// Publishes the walkthrough pod's volume `v` with `attributes`,
    /// expects success and returns the target path.
    pub async fn publish_ok(&self, attributes: &[(&str, &str)]) -> PathBuf {
        self.send_ok(self.request("v", attributes)).await
    }

    /// Sends `request`, expects success and returns its target path.
    pub async fn send_ok(&self, request: NodePublishVolumeRequest) -> PathBuf {
        publish_ok(self.client().await, request).await
    }

    /// Sends `request` and expects a refusal: its status.
    pub async fn send_err(&self, request: NodePublishVolumeRequest) -> tonic::Status {
        let what = format!("the publish of {}", request.volume_id);
        self.client()
            .await
            .node_publish_volume(request)
            .await
            .map(drop)
            .expect_err(&what)
    }

    /// Unpublishes the walkthrough pod's `volume` and expects success.
    pub async fn unpublish_ok(&self, volume: &str) {
        self.unpublish_pod_ok(&self.pod, volume).await;
    }

    /// Unpublishes `pod`'s `volume` and expects success.
    pub async fn unpublish_pod_ok(&self, pod: &Pod, volume: &str) {
        unpublish_ok(self.client().await, pod.unpublish(&self.node, volume)).await;
    }
}

impl<V: TestVault> Harness<DriverProcess, V> {
    /// Starts the next driver process, as after a crash or an upgrade, with
    /// `args`, its output in `log_name`; the current one is killed first if
    /// it still runs.
    pub async fn respawn(&mut self, log_name: &str, args: &[&str]) {
        let _ = self.driver.child.kill();
        let _ = self.driver.child.wait();
        self.driver = DriverProcess::spawn(&self.node, &self.vault, log_name, args).await;
    }
}

/// Sets up a [`Harness`]: which Vault, which driver settings, and whether
/// the driver runs in-process ([`HarnessBuilder::start`]) or as its own
/// process ([`HarnessBuilder::spawn`]).
pub struct HarnessBuilder<V = VaultDouble> {
    node: Node,
    vault: Option<V>,
    tweaks: Vec<ConfigTweak>,
}

/// A change to the in-process driver's configuration.
type ConfigTweak = Box<dyn FnOnce(&mut Config)>;

impl<V: TestVault> HarnessBuilder<V> {
    /// The node the driver will serve, to prepare before it starts.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Talks to `vault` (a Vault double, or a real OpenBao) instead of
    /// the walkthrough's double.
    pub fn vault<W: TestVault>(self, vault: W) -> HarnessBuilder<W> {
        HarnessBuilder {
            node: self.node,
            vault: Some(vault),
            tweaks: self.tweaks,
        }
    }

    /// Changes the in-process driver's configuration after
    /// [`driver_config`] (applied in order; [`HarnessBuilder::start`] only).
    pub fn config(mut self, tweak: impl FnOnce(&mut Config) + 'static) -> Self {
        self.tweaks.push(Box::new(tweak));
        self
    }

    async fn take_vault(&mut self) -> V {
        match self.vault.take() {
            Some(vault) => vault,
            None => V::walkthrough().await,
        }
    }

    /// Starts the driver in-process.
    pub async fn start(mut self) -> Harness<Driver, V> {
        let vault = self.take_vault().await;
        let mut config = driver_config(&self.node, &vault);
        for tweak in self.tweaks {
            tweak(&mut config);
        }
        let driver = Driver::start(config).await;
        Harness {
            driver,
            vault,
            pod: Pod::walkthrough(),
            node: self.node,
        }
    }

    /// Starts the driver binary as its own process with extra `args`, its
    /// output in `driver.log` under the node's root.
    pub async fn spawn(mut self, args: &[&str]) -> Harness<DriverProcess, V> {
        assert!(
            self.tweaks.is_empty(),
            "configuration tweaks apply in-process only: pass flags"
        );
        let vault = self.take_vault().await;
        let driver = DriverProcess::spawn(&self.node, &vault, "driver.log", args).await;
        Harness {
            driver,
            vault,
            pod: Pod::walkthrough(),
            node: self.node,
        }
    }
}
