//! Tenant isolation proved by attacks, in the topology the driver runs in:
//! the driver binary (the release build when `VCD_NODE_BOX_DRIVER` names
//! it, as `.ci/run` does) in a mount namespace of its own with kubelet's
//! `pods/` shared, its state directory on a tmpfs (the DaemonSet's
//! `/run/vault-csi-driver` hostPath), inside a real **128 MiB memory
//! cgroup** (the DaemonSet's limit), talking to the Vault double in which
//! each tenant writes its own KV data.
//!
//! What every test here checks, whatever a hostile tenant sends
//! ([`Checks`]):
//!
//! * **No OOM kill, the limit never reached**: the cgroup's OOM counter
//!   stays 0 and so does its count of times usage reached the limit
//!   (`memory.failcnt`), which the kernel keeps between any two samples.
//! * **The reserve intact**: at every sample, the working set (usage less
//!   inactive file cache, as kubelet and the driver compute it) is at most
//!   what the volumes are charged plus [`RESERVE_BYTES`]: the driver's own
//!   memory fits the reserve the model sets aside for it, and the charges
//!   never exceed the budget.
//! * **Charges track the real memory** within a stated factor: at every
//!   sample, `working set - baseline <= TRACKING_FACTOR * charged +
//!   TRACKING_SLACK` (see [`TRACKING_FACTOR`] for why these numbers, and
//!   [`checks::Monitor`] for how a sample is taken). Samples go on after
//!   the last unpublish: memory comes back with the charges.
//! * **Secrets stay secret**: no tenant's secret value in any gRPC status
//!   message, in the driver's log or in its metrics.
//!
//! The generative test ([`generated_attacks_never_harm_the_node_or_a_good_tenant`])
//! draws attack shapes from a seed; the findings module has one test per
//! attack that worked against an older version.
//!
//! Seeds: the default list is [`DEFAULT_SEEDS`] (about 35 s each, so CI
//! runs them all); run others with
//! `VCD_HOSTILE_SEEDS=4,5,6 cargo test --test hostile_tenants generated`
//! (as root; add `VCD_NODE_BOX_DRIVER=target/release/vault-csi-driver`
//! after `cargo build --release` to attack the release build, as CI does).
//! Each seed runs for [`ATTACK_TIME`] of attacks plus the drain, every
//! seed runs even after one broke, and the failure lists what broke under
//! each seed.
#![allow(clippy::missing_panics_doc)]

mod support;

#[path = "hostile_tenants/checks.rs"]
mod checks;
#[path = "hostile_tenants/findings.rs"]
mod findings;
#[path = "hostile_tenants/shapes.rs"]
mod shapes;

use std::sync::Arc;
use std::time::Duration;

use checks::{Checks, Monitor};
use support::{DriverProcess, MemoryCgroup, Node, Pod};
use tokio::sync::{Mutex, MutexGuard};
use tokio::time::Instant;
use vault_csi_driver::proto::NodePublishVolumeRequest;
use vault_csi_driver::volume::memory::RESERVE_BYTES;
use vault_double::VaultDouble;

const MIB: u64 = 1024 * 1024;

/// The DaemonSet's memory limit (`deploy/base/daemonset.yaml`).
const LIMIT: u64 = 128 * MIB;

/// How far the working set may grow beyond the baseline per byte charged.
///
/// The model charges tmpfs pages, inodes and records at the kernel's cost
/// and heap at what the renderer measures, so the memory a volume really
/// causes should be at most what it is charged. The factor of 2 leaves
/// room for what the model cannot see byte by byte: the allocator's size
/// classes (jemalloc rounds a block up by as much as a quarter) and
/// partly used slabs of small blocks. It is far below every miss found so
/// far: 20 volumes of deep paths held 18.6 MiB for 0.16 MiB charged (116
/// times), 90,000 attribute keys 31 MiB for nothing charged, and glibc's
/// malloc kept 30 to 50 MiB after every volume was gone.
const TRACKING_FACTOR: u64 = 2;

/// Memory the model leaves uncharged on purpose, on top of the factor:
/// requests being received, decoded and checked (at most
/// `csi::intake::INTAKE_BYTES`, 24 MiB: the largest request decoded and
/// checked, its maps up to twelve times its bytes, and a 64 KiB window per
/// request waiting), HTTP buffers of Vault answers in flight and the gRPC
/// connections of the tenants: half the reserve.
const TRACKING_SLACK: u64 = RESERVE_BYTES / 2;

/// Longest a well-behaved tenant's publish or unpublish may take while
/// hostile tenants attack: a functional bound (kubelet's and the pod's
/// patience), not a benchmark.
const GOOD_TENANT_BOUND: Duration = Duration::from_secs(2);

/// Seeds run when `VCD_HOSTILE_SEEDS` is not set.
const DEFAULT_SEEDS: &[u64] = &[1, 2, 3];

/// How long each seed's attacks run (calls in flight then are waited for).
const ATTACK_TIME: Duration = Duration::from_secs(25);

/// Longest any call may go unanswered: the driver's publish timeout (60 s)
/// and some.
const CALL_BOUND: Duration = Duration::from_secs(75);

/// One test at a time: each runs a driver in a 128 MiB cgroup and measures
/// how long calls take, which a neighbour's attack would disturb.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// The world of one test: the node, the Vault double, the memory cgroup
/// and the driver in it. Dropped driver first, node (its mounts) next.
struct World {
    driver: DriverProcess,
    node: Node,
    cgroup: MemoryCgroup,
    vault: VaultDouble,
    metrics_port: u16,
    /// The driver's flags besides the harness's.
    args: Vec<String>,
    /// The working set at idle after a first publish (code paged in, the
    /// render threads started).
    baseline: u64,
    checks: Arc<Checks>,
    _serial: MutexGuard<'static, ()>,
}

impl World {
    /// Starts the world, or `None` (a skip) without root. `args` are extra
    /// driver flags.
    async fn start(args: &[&str]) -> Option<Self> {
        if !support::requires_root("a 128 MiB memory cgroup, tmpfs volumes, mount namespaces") {
            return None;
        }
        let serial = SERIAL.lock().await;
        let node = Node::new();
        node.share_pods_dir();
        mount_state_tmpfs(&node);
        let vault = support::walkthrough_vault().await;
        vault.add_pki_role(
            "pki",
            "web",
            Duration::from_secs(3600),
            Duration::from_secs(7200),
        );
        let cgroup = MemoryCgroup::new(LIMIT);
        let metrics_port = support::free_port();
        let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        args.push(format!("--metrics-addr=127.0.0.1:{metrics_port}"));
        let driver = spawn_driver(&node, &vault, &cgroup, "driver.log", &args).await;
        let mut world = Self {
            driver,
            node,
            cgroup,
            vault,
            metrics_port,
            args,
            baseline: 0,
            checks: Arc::new(Checks::default()),
            _serial: serial,
        };
        world.wait_for_metrics().await;
        // A first publish pages the code in and starts the render threads.
        let good = world.tenant("warmup");
        let pod = good.pod("first");
        let request = good.request(&world, &pod, "v", &good.walkthrough_attributes());
        world
            .client()
            .await
            .node_publish_volume(request)
            .await
            .expect("the first publish");
        world.unpublish(&pod, "v").await;
        world.wait_charges_back().await;
        world.baseline = world.cgroup.working_set();
        Some(world)
    }

    /// Starts the next driver in the same cgroup with the same flags, as
    /// after a crash or an upgrade, its output in `log_name`; the current
    /// one is killed first if it still runs.
    async fn respawn(&mut self, log_name: &str) {
        let _ = self.driver.child.kill();
        let _ = self.driver.child.wait();
        self.driver =
            spawn_driver(&self.node, &self.vault, &self.cgroup, log_name, &self.args).await;
        self.wait_for_metrics().await;
    }

    async fn wait_for_metrics(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.charged().await.is_none() {
            assert!(
                Instant::now() < deadline,
                "the metrics endpoint never answered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A tenant: a pod namespace whose service account `vault-auth` logs in
    /// as role `<namespace>`, whose policy reads `secret/data/<namespace>/*`
    /// and issues certificates from `pki/issue/*`.
    fn tenant(&self, namespace: &str) -> Tenant {
        let data = format!("secret/data/{namespace}/*");
        self.vault.put_policy(
            namespace,
            &[
                (data.as_str(), &["read"]),
                ("pki/issue/*", &["create", "update"]),
            ],
        );
        self.vault.add_role(
            "kubernetes",
            vault_double::Role::new(namespace, ["vault-auth"], [namespace], [namespace])
                .with_audience("vault"),
        );
        let tenant = Tenant {
            namespace: namespace.to_owned(),
            password: format!("S3cret-{namespace}-{}", support::rand_suffix()),
        };
        self.checks.secret(&tenant.password);
        tenant.put(
            self,
            "config",
            serde_json::json!({"username": "appuser", "password": tenant.password}),
        );
        tenant
    }

    async fn client(
        &self,
    ) -> vault_csi_driver::proto::node_client::NodeClient<tonic::transport::Channel> {
        self.driver.node().await
    }

    /// Unpublishes `pod`'s `volume`, expecting success.
    async fn unpublish(&self, pod: &Pod, volume: &str) {
        support::unpublish_ok(self.client().await, pod.unpublish(&self.node, volume)).await;
    }

    /// The charged bytes (`vault_csi_memory_budget_used_bytes`).
    async fn charged(&self) -> Option<u64> {
        let port = self.metrics_port;
        tokio::task::spawn_blocking(move || checks::charged(port))
            .await
            .unwrap()
    }

    /// Waits until every charge is given back (no volume left); panics
    /// with the charges still held after 15 s.
    async fn wait_charges_back(&self) {
        if let Err(e) = self.charges_back().await {
            panic!("{e}");
        }
    }

    /// Waits up to 15 s for every charge to be given back (no volume
    /// left); says how much is still charged if not.
    async fn charges_back(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let charged = self.charged().await;
            if charged == Some(0) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "charges never given back: {charged:?} bytes still charged with no volume left"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The metrics page.
    async fn metrics(&self) -> Option<String> {
        let port = self.metrics_port;
        tokio::task::spawn_blocking(move || checks::scrape(port))
            .await
            .unwrap()
    }

    fn checks(&self) -> Arc<Checks> {
        Arc::clone(&self.checks)
    }

    /// Starts sampling the cgroup and the charges every 50 ms until the
    /// returned handle is stopped ([`Monitor`]).
    fn monitor(&self) -> Monitor {
        Monitor::start(
            self.checks(),
            self.cgroup.procs().parent().unwrap().to_path_buf(),
            self.metrics_port,
            self.baseline,
        )
    }

    /// Everything [`Checks`] holds, the cgroup's counters, the driver's
    /// log and metrics: panics with all that broke.
    async fn assert_isolated(&mut self, what: &str) {
        let broken = self.isolation_report(what).await;
        assert!(broken.is_empty(), "{}", broken.join("\n"));
    }

    /// Everything [`Checks`] holds, the cgroup's counters, the driver's
    /// log and metrics: one paragraph (with the figures and the log's
    /// last lines) if anything broke, none otherwise. Prints the figures.
    async fn isolation_report(&mut self, what: &str) -> Vec<String> {
        let log = self.driver.logs();
        if let Some(status) = self.driver.child.try_wait().unwrap() {
            return vec![format!(
                "{what}: the driver exited ({status}; OOM kills: {}):\n{}",
                self.cgroup.oom_kills(),
                tail(&log, 40)
            )];
        }
        let mut broken = Vec::new();
        let oom = self.cgroup.oom_kills();
        if oom > 0 {
            broken.push(format!("the OOM killer acted {oom} times"));
        }
        let hits = self.cgroup.limit_hits();
        if hits > 0 {
            broken.push(format!(
                "usage reached the {LIMIT}-byte limit {hits} times (peak {})",
                self.cgroup.peak()
            ));
        }
        let metrics = self.metrics().await.unwrap_or_default();
        broken.extend(self.checks.broken(self.baseline, &log, &metrics));
        let summary = format!(
            "{}; at the end: {}, {}",
            self.checks.summary(self.baseline, self.cgroup.peak()),
            self.cgroup.composition(),
            checks::threads(self.driver.child.id())
        );
        println!("{what}: {summary}");
        if broken.is_empty() {
            return Vec::new();
        }
        vec![format!(
            "{what}: tenant isolation broken:\n- {}\n{summary}\n--- the driver's log (last lines) ---\n{}",
            broken.join("\n- "),
            tail(&log, 30)
        )]
    }
}

async fn spawn_driver(
    node: &Node,
    vault: &VaultDouble,
    cgroup: &MemoryCgroup,
    log_name: &str,
    args: &[String],
) -> DriverProcess {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    DriverProcess::spawn_binary_in_cgroup(
        node,
        vault,
        log_name,
        &args,
        cgroup,
        &support::deployed_driver_binary(),
    )
    .await
}

/// The driver's state directory on a tmpfs of its own, private, as the
/// DaemonSet's `/run/vault-csi-driver` hostPath is on a node: records are
/// tmpfs pages charged to the driver's cgroup.
fn mount_state_tmpfs(node: &Node) {
    let state = node.state_dir();
    std::fs::create_dir_all(&state).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &state,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=256m,mode=0700"),
    )
    .expect("mount the state tmpfs");
    nix::mount::mount(
        None::<&str>,
        &state,
        None::<&str>,
        nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .expect("make the state tmpfs private");
}

/// A pod namespace: its role, its KV data, its secret value.
#[derive(Clone, Debug)]
struct Tenant {
    namespace: String,
    /// The secret in `secret/data/<namespace>/config` and in every other
    /// KV secret the tenant writes: it must never leave a volume.
    password: String,
}

impl Tenant {
    fn pod(&self, name: &str) -> Pod {
        Pod::new(&self.namespace, name, "vault-auth")
    }

    /// Writes `data` (plus the tenant's secret as `password`, when `data`
    /// is an object without one) at `secret/data/<namespace>/<name>`.
    fn put(&self, world: &World, name: &str, mut data: serde_json::Value) {
        if let Some(object) = data.as_object_mut() {
            object
                .entry("password")
                .or_insert_with(|| self.password.clone().into());
        }
        world
            .vault
            .kv2_put("secret", &format!("{}/{name}", self.namespace), data);
    }

    /// `secret/data/<namespace>/<name>`.
    fn path(&self, name: &str) -> String {
        format!("secret/data/{}/{name}", self.namespace)
    }

    fn role(&self) -> (String, String) {
        ("roleName".to_owned(), self.namespace.clone())
    }

    /// The walkthrough's page over the tenant's own config.
    fn walkthrough_attributes(&self) -> Vec<(String, String)> {
        vec![
            self.role(),
            (
                "template.index.html".to_owned(),
                support::INDEX_TEMPLATE.replace("myapp", &self.namespace),
            ),
        ]
    }

    /// Kubelet's request for `pod`'s `volume` (read-only, as the examples
    /// have it).
    fn request(
        &self,
        world: &World,
        pod: &Pod,
        volume: &str,
        attributes: &[(String, String)],
    ) -> NodePublishVolumeRequest {
        assert_eq!(
            pod.namespace, self.namespace,
            "a tenant publishes its own pods"
        );
        let borrowed: Vec<(&str, &str)> = attributes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut request = pod.publish(&world.node, &world.vault, volume, &borrowed);
        request.readonly = true;
        request
    }
}

/// Sends `request`, recording its outcome and time against `bound` in
/// `checks` under `what`; a call unanswered after [`CALL_BOUND`] is
/// recorded as such.
async fn timed_publish(
    checks: &Checks,
    socket: &std::path::Path,
    what: &str,
    request: NodePublishVolumeRequest,
    bound: Duration,
) -> Result<(), tonic::Status> {
    let mut client =
        vault_csi_driver::proto::node_client::NodeClient::new(support::channel(socket).await);
    let started = Instant::now();
    let result = tokio::time::timeout(CALL_BOUND, client.node_publish_volume(request))
        .await
        .unwrap_or_else(|_| {
            Err(tonic::Status::deadline_exceeded(
                "unanswered (test's bound)",
            ))
        })
        .map(drop);
    checks.call(what, &result, started.elapsed(), bound);
    result
}

/// At most 300 bytes of `text`, for failure messages.
fn excerpt(text: &str) -> String {
    let mut end = text.len().min(300);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}{}",
        &text[..end],
        if end < text.len() { "…" } else { "" }
    )
}

fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| excerpt(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The seeds: `VCD_HOSTILE_SEEDS` (comma-separated) or [`DEFAULT_SEEDS`].
fn seeds() -> Vec<u64> {
    match std::env::var("VCD_HOSTILE_SEEDS") {
        Ok(list) => list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .expect("VCD_HOSTILE_SEEDS: numbers separated by commas")
            })
            .collect(),
        Err(_) => DEFAULT_SEEDS.to_vec(),
    }
}

/// Several hostile tenants at once, each drawing attack shapes from the
/// seed ([`shapes::Shape`]: dense templates, PEM bombs, large and many
/// secrets, padded and countless attributes, deep paths, many files, huge
/// outputs, wide and deep JSON, control characters, refreshes with
/// changing data, helpers over adversarial data, secrets fed to failing
/// helpers, many concurrent publishes from one namespace, failing
/// logins), while a well-behaved tenant publishes and unpublishes a
/// volume over and over. Throughout: [`Checks`], and every call of the
/// good tenant answered, successfully, within [`GOOD_TENANT_BOUND`].
///
/// Each of the three hostile namespaces may hold a quarter of the budget
/// (`--namespace-memory-share=0.25`), so they cannot take the node
/// together and the good tenant's refusal would be a defect, not policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generated_attacks_never_harm_the_node_or_a_good_tenant() {
    let mut broken = Vec::new();
    for seed in seeds() {
        let Some(world) = World::start(&["--namespace-memory-share=0.25"]).await else {
            return;
        };
        let started = Instant::now();
        let seed_broken = shapes::run_seed(world, seed).await;
        println!(
            "seed {seed}: {:?}, {}",
            started.elapsed(),
            if seed_broken.is_empty() {
                "held"
            } else {
                "BROKEN"
            }
        );
        broken.extend(seed_broken);
    }
    assert!(
        broken.is_empty(),
        "rerun one seed with VCD_HOSTILE_SEEDS=<seed>:\n{}",
        broken.join("\n\n")
    );
}
