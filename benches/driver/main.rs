//! The vault-csi-driver benchmark: the real driver binary on a unix socket
//! against the Vault double in its own process, measured the way a node
//! sees it. One run reports publish latency against the Vault floor,
//! publish/unpublish throughput, memory per volume, idle CPU, refresh
//! behaviour at scale, and how fast the double itself answers; it prints a
//! markdown report and writes it to `BENCHMARKS.md`.
//!
//! ```text
//! cargo build --release --workspace --bins
//! sudo cargo bench --bench driver            # as root: every volume is a tmpfs mount
//! VCD_BENCH_QUICK=1 sudo cargo bench --bench driver   # small smoke run, no BENCHMARKS.md
//! VCD_BENCH_ONLY=latency,memory sudo cargo bench --bench driver   # some phases, no BENCHMARKS.md
//! VCD_BENCH_DRIVER=/path/to/vault-csi-driver …   # measure another driver build
//! ```

// Statistics turn counts and durations into floats and back; the values
// are far from the limits where these casts lose anything that matters.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

mod floor;
mod host;
mod kubelet;
mod procs;
mod refresh;
mod report;
mod stats;

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use vault_csi_driver::proto::NodeGetCapabilitiesRequest;
use vault_csi_driver::proto::node_client::NodeClient;

use crate::floor::{Floor, Load};
use crate::kubelet::{Call, Pod};
use crate::procs::{DoubleHost, DoubleSeed, Driver, Scratch, Standalone};
use crate::stats::Summary;

/// How big each phase is.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Measured publishes per secret count.
    pub latency_iterations: usize,
    /// Unmeasured publishes first.
    pub latency_warmup: usize,
    /// Volumes for the throughput and idle phases.
    pub throughput_volumes: usize,
    /// Concurrent callers for throughput and memory.
    pub callers: usize,
    /// Memory checkpoints.
    pub memory_points: [usize; 3],
    /// Idle observation.
    pub idle: Duration,
    /// Volumes for the refresh phase.
    pub refresh_volumes: usize,
    /// Concurrent callers publishing them.
    pub refresh_callers: usize,
    /// Observation after they are published.
    pub refresh_window: Duration,
    /// Lease and token TTL in the refresh phase.
    pub refresh_ttl: Duration,
    /// Each load-generator measurement.
    pub hammer: Duration,
}

impl Sizes {
    fn full() -> Self {
        Self {
            latency_iterations: 1000,
            latency_warmup: 50,
            throughput_volumes: 1000,
            callers: 16,
            memory_points: [100, 1000, 5000],
            idle: Duration::from_secs(60),
            refresh_volumes: 1000,
            refresh_callers: 16,
            refresh_window: Duration::from_secs(90),
            refresh_ttl: Duration::from_secs(30),
            hammer: Duration::from_secs(2),
        }
    }

    fn quick() -> Self {
        Self {
            latency_iterations: 100,
            latency_warmup: 10,
            throughput_volumes: 200,
            callers: 16,
            memory_points: [50, 200, 500],
            idle: Duration::from_secs(5),
            refresh_volumes: 200,
            refresh_callers: 16,
            refresh_window: Duration::from_secs(25),
            refresh_ttl: Duration::from_secs(30),
            hammer: Duration::from_millis(500),
        }
    }
}

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// The dynamic-secrets template (one leased secret).
pub const CREDS_TEMPLATE: &str =
    r#"{{#with (secret "database/creds/app")}}{{data.username}}{{/with}}"#;

/// A template reading `k` KV v2 secrets.
fn kv_template(k: usize) -> String {
    let mut template = String::new();
    for i in 0..k {
        let _ = write!(
            template,
            "{{{{#with (secret \"secret/data/bench/s{i}\")}}}}s{i}={{{{data.data.value}}}}\n{{{{/with}}}}"
        );
    }
    template
}

fn kv_paths(k: usize) -> Vec<String> {
    (0..k).map(|i| format!("secret/data/bench/s{i}")).collect()
}

/// One double-capacity measurement.
#[derive(Debug, Clone)]
pub struct Capacity {
    /// `read` or `login`.
    pub load: &'static str,
    /// Concurrent clients.
    pub clients: usize,
    /// Requests per second.
    pub rate: f64,
    /// Requests per CPU-second of the double.
    pub per_cpu_second: f64,
    /// Median latency.
    pub p50: Duration,
}

/// Publish latency for one secret count.
#[derive(Debug, Clone)]
pub struct Latency {
    /// Row label.
    pub label: String,
    /// Secrets per volume.
    pub secrets: usize,
    /// NodePublishVolume over the socket.
    pub publish: Summary,
    /// Login then reads one after another.
    pub sequential: Summary,
    /// Login then reads concurrently.
    pub concurrent: Summary,
    /// Publish medians: before the double saw the login, from the login
    /// to the last read, after the last read until the answer.
    pub publish_split: [Duration; 3],
    /// The same for the concurrent floor.
    pub floor_split: [Duration; 3],
    /// Driver CPU time per publish (all threads, `schedstat`).
    pub publish_cpu: Summary,
    /// The driver's `Renderer` on this row's template, in this process:
    /// the first compile, a cached compile, the render.
    pub template: [Duration; 3],
    /// Means over the measured publishes: over the socket (this process),
    /// inside the driver's handler, and per step (the driver's metrics).
    pub inside: Inside,
}

/// Where a publish's time goes, as means: the call over the socket as the
/// benchmark saw it, the driver's handler (`vault_csi_node_publish_duration_seconds`)
/// and each step of it (`vault_csi_node_publish_step_duration_seconds`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Inside {
    /// NodePublishVolume over the socket.
    pub call: Duration,
    /// The driver's handler.
    pub handler: Duration,
    /// checks, vault, mount, write, record.
    pub steps: [Duration; 5],
    /// The driver's own HTTP client: one login, one read
    /// (`vault_csi_vault_request_duration_seconds`).
    pub requests: [Duration; 2],
    /// The floor client's login and reads one after another.
    pub floor_sequential: Duration,
}

/// The step labels of `vault_csi_node_publish_step_duration_seconds`, in
/// publish order.
pub const STEPS: [&str; 5] = ["checks", "vault", "mount", "write", "record"];

/// Sums and counts of the driver's publish histograms: the handler, then
/// each of [`STEPS`].
#[derive(Debug, Clone, Copy, Default)]
struct Timings {
    handler: (f64, f64),
    steps: [(f64, f64); 5],
    requests: [(f64, f64); 2],
}

impl Timings {
    async fn scrape(port: u16) -> Self {
        let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("scrape the driver's metrics")
            .text()
            .await
            .expect("the driver's metrics");
        let value = |series: &str| {
            text.lines()
                .find_map(|l| {
                    l.strip_prefix(series)?
                        .strip_prefix(' ')?
                        .parse::<f64>()
                        .ok()
                })
                .unwrap_or(0.0)
        };
        let histogram = |name: &str, labels: &str| {
            (
                value(&format!("{name}_sum{labels}")),
                value(&format!("{name}_count{labels}")),
            )
        };
        Self {
            handler: histogram("vault_csi_node_publish_duration_seconds", ""),
            steps: STEPS.map(|step| {
                histogram(
                    "vault_csi_node_publish_step_duration_seconds",
                    &format!("{{step=\"{step}\"}}"),
                )
            }),
            requests: ["login", "read"].map(|operation| {
                histogram(
                    "vault_csi_vault_request_duration_seconds",
                    &format!("{{operation=\"{operation}\",status_class=\"2xx\"}}"),
                )
            }),
        }
    }

    /// Mean durations between two scrapes: the handler, each step, each
    /// kind of Vault request.
    fn means_since(&self, before: &Self) -> (Duration, [Duration; 5], [Duration; 2]) {
        let mean = |after: (f64, f64), before: (f64, f64)| {
            let count = after.1 - before.1;
            Duration::from_secs_f64(if count > 0.0 {
                (after.0 - before.0) / count
            } else {
                0.0
            })
        };
        (
            mean(self.handler, before.handler),
            std::array::from_fn(|i| mean(self.steps[i], before.steps[i])),
            std::array::from_fn(|i| mean(self.requests[i], before.requests[i])),
        )
    }
}

/// Throughput and idle results.
#[derive(Debug, Clone, Default)]
pub struct Throughput {
    /// Volumes.
    pub volumes: usize,
    /// Callers.
    pub callers: usize,
    /// Publishes per second.
    pub publish_rate: f64,
    /// Publish latency under that load.
    pub publish_latency: Summary,
    /// Unpublishes per second.
    pub unpublish_rate: f64,
    /// Unpublish latency under that load.
    pub unpublish_latency: Summary,
    /// Driver CPU per publish.
    pub driver_cpu_per_publish: Duration,
    /// Of which in the kernel (`stime`).
    pub driver_sys_per_publish: Duration,
    /// Driver CPU per unpublish.
    pub driver_cpu_per_unpublish: Duration,
    /// The double's CPU use during the publishes, in cores.
    pub double_cores: f64,
    /// Driver CPU during the idle window, `/proc/<pid>/stat` (10 ms ticks).
    pub idle_cpu_stat: f64,
    /// The same from `schedstat` (ns).
    pub idle_cpu_sched: f64,
    /// Idle window.
    pub idle: Duration,
    /// Vault requests the driver made during the idle window.
    pub idle_requests: usize,
    /// Driver RSS holding the volumes.
    pub rss: u64,
}

/// Memory results.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    /// `(volumes, RSS bytes, driver threads)`; the first is the baseline.
    pub points: Vec<(usize, u64, usize)>,
    /// RSS after unpublishing everything.
    pub after_unpublish: u64,
    /// RSS after publishing as many new volumes again (reuse or leak?).
    pub second_round: u64,
    /// Unpublishes per second of the largest set.
    pub unpublish_rate: f64,
    /// Publishes per second of the last step.
    pub publish_rate: f64,
}

/// Everything a run measured.
#[derive(Debug, Clone, Default)]
pub struct Results {
    /// Sizes used.
    pub quick: bool,
    /// Double capacity.
    pub capacity: Vec<Capacity>,
    /// CPU the standalone double was pinned to.
    pub capacity_pinned: Option<usize>,
    /// gRPC round trip (NodeGetCapabilities), back to back.
    pub grpc_rtt: Summary,
    /// The same after the driver sat idle for [`IDLE_GAP`] (as it does
    /// while a slow Vault answers).
    pub grpc_rtt_after_gap: Summary,
    /// Creating and mounting a tmpfs from the benchmark itself.
    pub mount_cost: Summary,
    /// Unmounting and removing it.
    pub umount_cost: Summary,
    /// Publish latency rows.
    pub latency: Vec<Latency>,
    /// Throughput and idle.
    pub throughput: Throughput,
    /// Memory.
    pub memory: Memory,
    /// Refresh at scale.
    pub refresh: refresh::RefreshResult,
    /// The refresh phase's TTL.
    pub refresh_ttl: Duration,
    /// Driver warnings and errors per phase.
    pub driver_log: Vec<(String, Vec<String>)>,
    /// Mounts left under the scratch directory at the end.
    pub leftover_mounts: usize,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// The machine.
    pub machine: Vec<String>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--double-host") {
        host::run(&args[i + 1..]);
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("driver benchmark: skipped (run it with `cargo bench --bench driver`)");
        return;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "the benchmark mounts thousands of tmpfs volumes: run it as root"
    );
    let quick = std::env::var("VCD_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let only = std::env::var("VCD_BENCH_ONLY").unwrap_or_default();
    let sizes = if quick { Sizes::quick() } else { Sizes::full() };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("benchmark runtime");
    let results = runtime.block_on(run(sizes, quick, &only));
    let markdown = report::markdown(&results, &sizes);
    println!("\n{markdown}");
    if quick || !only.is_empty() {
        eprintln!("VCD_BENCH_QUICK or VCD_BENCH_ONLY: BENCHMARKS.md left unchanged");
    } else {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
        report::write(&path, &markdown);
        eprintln!("wrote {}", path.display());
    }
}

fn step(what: &str) {
    eprintln!("[bench] {what}");
}

/// Runs every phase, or only those named in `only` (comma-separated:
/// `capacity,latency,throughput,memory,refresh`; for development).
async fn run(sizes: Sizes, quick: bool, only: &str) -> Results {
    let wanted = |phase: &str| only.is_empty() || only.split(',').any(|p| p.trim() == phase);
    let started = Instant::now();
    let busy_before = procs::machine_busy_seconds();
    let own_before = procs::own_seconds();
    let scratch = Scratch::new();
    let mut results = Results {
        quick,
        refresh_ttl: sizes.refresh_ttl,
        machine: procs::machine(),
        ..Results::default()
    };

    if wanted("capacity") {
        step("the standalone vault-double on its own");
        capacity(&sizes, &mut results).await;
    }
    if wanted("latency") {
        step("publish latency against the Vault floor");
        latency(&scratch, &sizes, &mut results).await;
    }
    if wanted("throughput") {
        step("throughput and idle cost");
        throughput(&scratch, &sizes, &mut results).await;
    }
    if wanted("memory") {
        step("memory per volume");
        memory(&scratch, &sizes, &mut results).await;
    }
    if wanted("refresh") {
        step("refresh at scale");
        refresh_at_scale(&scratch, &sizes, &mut results).await;
    }

    let left = scratch.mounts().len();
    results.leftover_mounts = scratch.cleanup();
    assert!(
        mounts_gone(&scratch.root),
        "mounts remain under {}",
        scratch.root.display()
    );
    step(&format!(
        "cleaned up {left} mount(s) under {} ({} left by the phases)",
        scratch.root.display(),
        results.leftover_mounts
    ));
    results.elapsed = started.elapsed();
    let others =
        (procs::machine_busy_seconds() - busy_before) - (procs::own_seconds() - own_before);
    results.machine.insert(
        1,
        format!(
            "Other processes used {:.2} CPUs on average during the run (machine busy time minus \
this benchmark's own processes); the higher this is, the noisier the figures",
            (others / results.elapsed.as_secs_f64()).max(0.0)
        ),
    );
    results
}

fn mounts_gone(root: &Path) -> bool {
    procs::mounts_under(root).is_empty()
}

/// Requests/s of the standalone double, `--threads 1`, for reads and logins.
async fn capacity(sizes: &Sizes, results: &mut Results) {
    let double = Standalone::spawn(1);
    results.capacity_pinned = double.pinned;
    let floor = Floor::new(&double.addr);
    let jwt = kubelet::mint("capacity", "capacity-pod");
    let token = floor.login(&jwt).await;
    for (name, load) in [
        ("KV read", Load::Read { token }),
        ("login (RS256 JWT)", Load::Login { jwt }),
    ] {
        for clients in [1, 16, 64] {
            let h = floor::hammer(&double.addr, double.pid(), &load, clients, sizes.hammer).await;
            let rate = h.requests as f64 / h.wall.as_secs_f64();
            let per_cpu_second = h.requests as f64 / h.server_cpu.max(1e-9);
            step(&format!(
                "  {name}, {clients} clients: {rate:.0} req/s, {per_cpu_second:.0} per CPU-second, p50 {}",
                stats::ms(h.p50)
            ));
            results.capacity.push(Capacity {
                load: name,
                clients,
                rate,
                per_cpu_second,
                p50: h.p50,
            });
        }
    }
}

fn seed(threads: usize, token_ttl: Duration, token_max: Duration, lease: Duration) -> DoubleSeed {
    DoubleSeed {
        threads,
        token_ttl,
        token_max,
        lease_ttl: lease,
        lease_max: if lease >= HOUR { DAY } else { HOUR },
    }
}

/// What the latency rows need: a kubelet connection, the floor client,
/// the double (for its request log) and where the node lives.
struct Rig<'a> {
    driver_pid: u32,
    metrics_port: u16,
    client: NodeClient<tonic::transport::Channel>,
    floor: Floor,
    host: &'a mut DoubleHost,
    kubelet_dir: std::path::PathBuf,
    scratch: &'a Path,
}

impl<'a> Rig<'a> {
    /// Connects to `driver` (serving `node`) as kubelet, and to `host`'s
    /// double as the floor client.
    async fn new(
        driver: &Driver,
        host: &'a mut DoubleHost,
        node: &procs::NodeDirs,
        scratch: &'a Path,
    ) -> Self {
        Self {
            driver_pid: driver.pid(),
            metrics_port: driver.metrics_port,
            client: NodeClient::new(kubelet::channel(&driver.socket).await),
            floor: Floor::new(&host.addr),
            host,
            kubelet_dir: node.kubelet.clone(),
            scratch,
        }
    }
}

/// Publish latency for 1, 3 and 10 secrets, interleaved with the same
/// requests sent directly, one caller at a time.
async fn latency(scratch: &Scratch, sizes: &Sizes, results: &mut Results) {
    let mut host = DoubleHost::spawn(seed(2, DAY, 32 * DAY, HOUR));
    let node = scratch.node("latency");
    let driver = Driver::spawn(&node, &host.addr).await;
    let mut rig = Rig::new(&driver, &mut host, &node, &scratch.root).await;

    // The gRPC round trip alone.
    let mut rtt = Vec::new();
    for i in 0..sizes.latency_iterations + sizes.latency_warmup {
        let t = Instant::now();
        rig.client
            .node_get_capabilities(NodeGetCapabilitiesRequest {})
            .await
            .expect("NodeGetCapabilities");
        if i >= sizes.latency_warmup {
            rtt.push(t.elapsed());
        }
    }
    results.grpc_rtt = stats::summarize(&rtt);
    // And after a pause as long as the remote rows' Vault calls.
    let mut rtt = Vec::new();
    for _ in 0..(sizes.latency_iterations / 4).max(1) {
        tokio::time::sleep(IDLE_GAP).await;
        let t = Instant::now();
        rig.client
            .node_get_capabilities(NodeGetCapabilitiesRequest {})
            .await
            .expect("NodeGetCapabilities");
        rtt.push(t.elapsed());
    }
    results.grpc_rtt_after_gap = stats::summarize(&rtt);
    (results.mount_cost, results.umount_cost) = mount_cost(&node.kubelet, sizes.latency_iterations);

    for k in [1, 3, 10] {
        let row = latency_row(&mut rig, sizes, k, &format!("lat{k}")).await;
        step(&format!(
            "  {k} secret(s): publish p50 {} p99 {}, floor concurrent p50 {} (×{:.2}); \
before/between/after Vault: publish {} / {} / {}, floor {} / {} / {}; driver CPU {}; \
template compile first/cached, render {} / {} / {}",
            stats::ms(row.publish.p50),
            stats::ms(row.publish.p99),
            stats::ms(row.concurrent.p50),
            ratio(row.publish.p50, row.concurrent.p50),
            stats::ms(row.publish_split[0]),
            stats::ms(row.publish_split[1]),
            stats::ms(row.publish_split[2]),
            stats::ms(row.floor_split[0]),
            stats::ms(row.floor_split[1]),
            stats::ms(row.floor_split[2]),
            stats::ms(row.publish_cpu.p50),
            stats::ms(row.template[0]),
            stats::ms(row.template[1]),
            stats::ms(row.template[2]),
        ));
        results.latency.push(row);
    }
    drop(rig);
    results
        .driver_log
        .push(("latency".to_owned(), driver.stop().await));

    // The same with the state directory on the root filesystem instead of
    // tmpfs.
    let disk = scratch.node("latency-disk");
    let disk_node = procs::NodeDirs {
        state: scratch.root.join("latency-disk/state"),
        ..disk
    };
    std::fs::create_dir_all(&disk_node.state).expect("create the on-disk state directory");
    let driver = Driver::spawn(&disk_node, &host.addr).await;
    let mut rig = Rig::new(&driver, &mut host, &disk_node, &scratch.root).await;
    let mut row = latency_row(&mut rig, sizes, 1, "latdisk").await;
    "1 (state dir on ext4)".clone_into(&mut row.label);
    step(&format!(
        "  1 secret, state on disk: publish p50 {} p99 {}",
        stats::ms(row.publish.p50),
        stats::ms(row.publish.p99)
    ));
    results.latency.push(row);
    drop(rig);
    results
        .driver_log
        .push(("latency (state on disk)".to_owned(), driver.stop().await));

    // Against a Vault that answers like one across a network: a real login
    // waits for the Kubernetes TokenReview API, reads for storage and the
    // round trip. Fewer iterations: each call now takes milliseconds.
    host.set_latency(REMOTE_LOGIN, REMOTE_READ);
    let remote = scratch.node("latency-remote");
    let driver = Driver::spawn(&remote, &host.addr).await;
    let mut rig = Rig::new(&driver, &mut host, &remote, &scratch.root).await;
    let remote_sizes = Sizes {
        latency_iterations: (sizes.latency_iterations / 4).max(1),
        latency_warmup: (sizes.latency_warmup / 2).max(1),
        ..*sizes
    };
    for k in [1, 10] {
        let mut row = latency_row(&mut rig, &remote_sizes, k, &format!("latremote{k}")).await;
        row.label = format!(
            "{k} ({} ms login, {} ms reads)",
            REMOTE_LOGIN.as_millis(),
            REMOTE_READ.as_millis()
        );
        step(&format!(
            "  {k} secret(s), Vault with latency: publish p50 {} p99 {}, floor concurrent p50 {} (×{:.2})",
            stats::ms(row.publish.p50),
            stats::ms(row.publish.p99),
            stats::ms(row.concurrent.p50),
            ratio(row.publish.p50, row.concurrent.p50),
        ));
        results.latency.push(row);
    }
    drop(rig);
    host.set_latency(Duration::ZERO, Duration::ZERO);
    results.driver_log.push((
        "latency (Vault with latency)".to_owned(),
        driver.stop().await,
    ));
}

/// The pause before each "after a gap" gRPC round trip.
const IDLE_GAP: Duration = Duration::from_millis(7);

/// The remote rows' login latency: a real Vault's Kubernetes login first
/// asks the API server to review the token.
const REMOTE_LOGIN: Duration = Duration::from_millis(3);
/// The remote rows' latency of every other request.
const REMOTE_READ: Duration = Duration::from_millis(1);

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

/// Splits each call window `[sent, answered]` at the moments the double
/// started handling the login and the last read inside it: the time
/// before Vault saw the login, from login to the last read, and after.
fn split_windows(log: &[String], windows: &[(u128, u128)]) -> [Duration; 3] {
    let mut events: Vec<(u128, bool)> = log
        .iter()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let at = f.next()?.parse::<u128>().ok()?;
            let method = f.next()?;
            let path = f.next()?;
            if path.ends_with("/login") {
                Some((at, true))
            } else if method == "GET" {
                Some((at, false))
            } else {
                None
            }
        })
        .collect();
    events.sort_unstable();
    let mut parts: [Vec<Duration>; 3] = Default::default();
    let nanos = |n: u128| Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX));
    for &(sent, answered) in windows {
        let from = events.partition_point(|e| e.0 < sent);
        let inside = events[from..].iter().take_while(|e| e.0 <= answered);
        let login = inside.clone().find(|e| e.1).map(|e| e.0);
        let last_read = inside.filter(|e| !e.1).map(|e| e.0).last();
        if let (Some(login), Some(read)) = (login, last_read) {
            parts[0].push(nanos(login - sent));
            parts[1].push(nanos(read - login));
            parts[2].push(nanos(answered - read));
        }
    }
    parts.map(|p| stats::summarize(&p).p50)
}

async fn latency_row(rig: &mut Rig<'_>, sizes: &Sizes, k: usize, prefix: &str) -> Latency {
    let template = kv_template(k);
    let paths = kv_paths(k);
    let kubelet_dir = rig.kubelet_dir.clone();
    let pods = kubelet::pods(
        prefix,
        sizes.latency_warmup + sizes.latency_iterations,
        &kubelet_dir,
    );
    let (mut publish, mut sequential, mut concurrent) = (Vec::new(), Vec::new(), Vec::new());
    let (mut publish_windows, mut floor_windows) = (Vec::new(), Vec::new());
    let mut cpu = Vec::new();
    let mut timings = Timings::default();
    for (i, pod) in pods.iter().enumerate() {
        if i == sizes.latency_warmup {
            timings = Timings::scrape(rig.metrics_port).await;
        }
        let request = pod.publish(&kubelet_dir, &template);
        let cpu_before = procs::ThreadCpu::read(rig.driver_pid);
        let sent = refresh::ns(SystemTime::now());
        let started = Instant::now();
        rig.client
            .node_publish_volume(request)
            .await
            .unwrap_or_else(|status| panic!("publish failed: {status:?}"));
        let published = started.elapsed();
        let answered = refresh::ns(SystemTime::now());
        let cpu_used = procs::ThreadCpu::read(rig.driver_pid).since(&cpu_before);
        if i == 0 {
            let rendered = std::fs::read_to_string(pod.target(&kubelet_dir).join("secrets.txt"))
                .expect("the published volume holds secrets.txt");
            assert!(
                rendered.contains(&format!("s{}=bench-secret-{}", k - 1, k - 1)),
                "unexpected rendering: {rendered:?}"
            );
        }
        rig.client
            .node_unpublish_volume(pod.unpublish(&kubelet_dir))
            .await
            .unwrap_or_else(|status| panic!("unpublish failed: {status:?}"));
        let one_by_one = rig.floor.sequential(&pod.jwt, &paths).await;
        let floor_sent = refresh::ns(SystemTime::now());
        let all_at_once = rig.floor.concurrent(&pod.jwt, &paths).await;
        let floor_answered = refresh::ns(SystemTime::now());
        if i >= sizes.latency_warmup {
            publish.push(published);
            sequential.push(one_by_one);
            concurrent.push(all_at_once);
            publish_windows.push((sent, answered));
            cpu.push(Duration::from_secs_f64(cpu_used.max(0.0)));
            floor_windows.push((floor_sent, floor_answered));
        }
    }
    let (handler, steps, requests) = Timings::scrape(rig.metrics_port)
        .await
        .means_since(&timings);
    let log = rig.host.dump("requests", rig.scratch);
    Latency {
        label: k.to_string(),
        secrets: k,
        publish: stats::summarize(&publish),
        sequential: stats::summarize(&sequential),
        concurrent: stats::summarize(&concurrent),
        publish_split: split_windows(&log, &publish_windows),
        floor_split: split_windows(&log, &floor_windows),
        publish_cpu: stats::summarize(&cpu),
        template: template_cost(&template, k, sizes.latency_iterations),
        inside: Inside {
            call: stats::mean(&publish),
            handler,
            steps,
            requests,
            floor_sequential: stats::mean(&sequential),
        },
    }
}

/// Medians of what the driver's own `Renderer` takes for one publish's
/// template work, measured in this process: compiling the template (parse
/// plus the pass that collects the `secret` calls) the first time, finding
/// it compiled (any later volume with the same templates), and the render.
fn template_cost(source: &str, k: usize, n: usize) -> [Duration; 3] {
    use std::sync::Arc;
    use vault_csi_driver::render::{Renderer, SecretRequest};
    use vault_csi_driver::storage::RelativePath;
    let sources = vec![(
        RelativePath::parse("secrets.txt").expect("a valid file name"),
        source.to_owned(),
    )];
    let responses: std::collections::HashMap<SecretRequest, serde_json::Value> = (0..k)
        .map(|i| {
            let request =
                SecretRequest::new(&format!("secret/data/bench/s{i}"), &serde_json::Map::new())
                    .expect("a valid path");
            let body =
                serde_json::json!({"data": {"data": {"value": format!("bench-secret-{i}")}}});
            (request, body)
        })
        .collect();
    let (mut cold, mut cached, mut render) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n.max(1) {
        let renderer = Renderer::new();
        let t = Instant::now();
        let compiled = renderer.compile(&sources).expect("the template compiles");
        cold.push(t.elapsed());
        assert_eq!(compiled.requests().len(), k);
        let t = Instant::now();
        let again = renderer.compile(&sources).expect("the template compiles");
        cached.push(t.elapsed());
        assert!(
            Arc::ptr_eq(&compiled, &again),
            "the second compile is a cache hit"
        );
        let responses = responses.clone();
        let t = Instant::now();
        renderer
            .render(&compiled, responses)
            .expect("the template renders");
        render.push(t.elapsed());
    }
    [cold, cached, render].map(|samples| stats::summarize(&samples).p50)
}

/// What creating and mounting a tmpfs (as a publish does), and unmounting
/// and removing it (as an unpublish does), cost this kernel, measured from
/// the benchmark process (no driver involved).
fn mount_cost(kubelet_dir: &Path, n: usize) -> (Summary, Summary) {
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    let dir = kubelet_dir.join("mount-probe");
    let (mut mounts, mut umounts) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let t = Instant::now();
        std::fs::create_dir(&dir).expect("create the probe directory");
        mount(
            Some("tmpfs"),
            &dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("size=1048576,nr_inodes=1024,mode=755,uid=0,gid=0"),
        )
        .expect("mount the probe tmpfs");
        mounts.push(t.elapsed());
        let t = Instant::now();
        umount2(&dir, MntFlags::UMOUNT_NOFOLLOW).expect("unmount the probe tmpfs");
        std::fs::remove_dir(&dir).expect("remove the probe directory");
        umounts.push(t.elapsed());
    }
    (stats::summarize(&mounts), stats::summarize(&umounts))
}

fn publishes(pods: &[Pod], kubelet_dir: &Path, template: &str) -> Vec<Call> {
    pods.iter()
        .map(|p| Call::Publish(Box::new(p.publish(kubelet_dir, template))))
        .collect()
}

fn unpublishes(pods: &[Pod], kubelet_dir: &Path) -> Vec<Call> {
    pods.iter()
        .map(|p| Call::Unpublish(p.unpublish(kubelet_dir)))
        .collect()
}

/// 1,000 volumes with one-hour leases: publish rate with 16 callers, the
/// idle cost of holding them, then the unpublish rate.
async fn throughput(scratch: &Scratch, sizes: &Sizes, results: &mut Results) {
    let mut host = DoubleHost::spawn(seed(2, HOUR, DAY, HOUR));
    let node = scratch.node("throughput");
    let driver = Driver::spawn(&node, &host.addr).await;
    let pods = kubelet::pods("tput", sizes.throughput_volumes, &node.kubelet);
    let calls = publishes(&pods, &node.kubelet, CREDS_TEMPLATE);
    let channels = kubelet::channels(&driver.socket, sizes.callers).await;

    let driver_cpu = procs::sched_seconds(driver.pid());
    let driver_sys = procs::cpu_split(driver.pid()).1;
    let double_cpu = procs::sched_seconds(host.pid());
    let batch = kubelet::run_batch(&channels, calls).await;
    let driver_cpu = procs::sched_seconds(driver.pid()) - driver_cpu;
    let driver_sys = procs::cpu_split(driver.pid()).1 - driver_sys;
    let double_cpu = procs::sched_seconds(host.pid()) - double_cpu;
    let mut t = Throughput {
        volumes: pods.len(),
        callers: sizes.callers,
        publish_rate: batch.rate(),
        publish_latency: stats::summarize(&batch.latencies),
        driver_cpu_per_publish: Duration::from_secs_f64(driver_cpu / pods.len() as f64),
        driver_sys_per_publish: Duration::from_secs_f64(driver_sys / pods.len() as f64),
        double_cores: double_cpu / batch.wall.as_secs_f64(),
        idle: sizes.idle,
        ..Throughput::default()
    };
    step(&format!(
        "  {} publishes in {:.2} s: {:.0}/s (p50 {}, p99 {}); the double used {:.2} cores",
        pods.len(),
        batch.wall.as_secs_f64(),
        t.publish_rate,
        stats::ms(t.publish_latency.p50),
        stats::ms(t.publish_latency.p99),
        t.double_cores
    ));
    assert_eq!(
        procs::mounts_under(&node.kubelet).len(),
        pods.len(),
        "every volume is a mount"
    );
    drop(channels);

    // Idle: nothing due for ~40 minutes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    t.rss = procs::rss_bytes(driver.pid());
    let stat_before = procs::cpu_seconds(driver.pid());
    let sched_before = procs::ThreadCpu::read(driver.pid());
    let idle_from = SystemTime::now();
    tokio::time::sleep(sizes.idle).await;
    t.idle_cpu_stat = procs::cpu_seconds(driver.pid()) - stat_before;
    t.idle_cpu_sched = procs::ThreadCpu::read(driver.pid()).since(&sched_before);
    let idle_to = SystemTime::now();
    t.idle_requests = host
        .dump("requests", &scratch.root)
        .iter()
        .filter_map(|l| l.split('\t').next()?.parse::<u128>().ok())
        .filter(|at| *at >= refresh::ns(idle_from) && *at <= refresh::ns(idle_to))
        .count();
    step(&format!(
        "  idle {} s with {} volumes: {:.3} s CPU (stat), {:.4} s (schedstat), {} Vault requests",
        sizes.idle.as_secs(),
        pods.len(),
        t.idle_cpu_stat,
        t.idle_cpu_sched,
        t.idle_requests
    ));

    let channels = kubelet::channels(&driver.socket, sizes.callers).await;
    let driver_cpu = procs::sched_seconds(driver.pid());
    let batch = kubelet::run_batch(&channels, unpublishes(&pods, &node.kubelet)).await;
    t.driver_cpu_per_unpublish = Duration::from_secs_f64(
        (procs::sched_seconds(driver.pid()) - driver_cpu) / pods.len() as f64,
    );
    t.unpublish_rate = batch.rate();
    t.unpublish_latency = stats::summarize(&batch.latencies);
    step(&format!(
        "  {} unpublishes: {:.0}/s",
        pods.len(),
        t.unpublish_rate
    ));
    assert!(
        procs::mounts_under(&node.kubelet).is_empty(),
        "unpublish removes every mount"
    );
    drop(channels);
    results.throughput = t;
    results
        .driver_log
        .push(("throughput".to_owned(), driver.stop().await));
}

/// RSS before any volume and at each checkpoint (one KV secret each).
async fn memory(scratch: &Scratch, sizes: &Sizes, results: &mut Results) {
    let host = DoubleHost::spawn(seed(2, DAY, 32 * DAY, HOUR));
    let node = scratch.node("memory");
    let total = sizes.memory_points[2];
    let pods = kubelet::pods("mem", total, &node.kubelet);
    let template = kv_template(1);
    let driver = Driver::spawn(&node, &host.addr).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut m = Memory::default();
    m.points.push((
        0,
        procs::rss_bytes(driver.pid()),
        procs::threads(driver.pid()),
    ));
    step(&format!(
        "  baseline RSS {}",
        stats::bytes(m.points[0].1 as f64)
    ));
    let channels = kubelet::channels(&driver.socket, sizes.callers).await;
    let mut done = 0;
    for point in sizes.memory_points {
        let batch = kubelet::run_batch(
            &channels,
            publishes(&pods[done..point], &node.kubelet, &template),
        )
        .await;
        m.publish_rate = batch.rate();
        done = point;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = procs::rss_bytes(driver.pid());
        m.points.push((point, rss, procs::threads(driver.pid())));
        step(&format!(
            "  {point} volumes: RSS {} ({} mounts)",
            stats::bytes(rss as f64),
            procs::mounts_under(&node.kubelet).len()
        ));
    }
    assert_eq!(procs::mounts_under(&node.kubelet).len(), total);
    let batch = kubelet::run_batch(&channels, unpublishes(&pods, &node.kubelet)).await;
    m.unpublish_rate = batch.rate();
    tokio::time::sleep(Duration::from_secs(1)).await;
    m.after_unpublish = procs::rss_bytes(driver.pid());
    step(&format!(
        "  after unpublishing: RSS {}",
        stats::bytes(m.after_unpublish as f64)
    ));

    // A second round of as many new volumes: freed memory is reused (RSS
    // stays) or leaked (RSS grows by another round's worth).
    let again = kubelet::pods("mem2", total, &node.kubelet);
    kubelet::run_batch(&channels, publishes(&again, &node.kubelet, &template)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    m.second_round = procs::rss_bytes(driver.pid());
    step(&format!(
        "  {total} new volumes again: RSS {}",
        stats::bytes(m.second_round as f64)
    ));
    kubelet::run_batch(&channels, unpublishes(&again, &node.kubelet)).await;
    drop(channels);
    drop(host);
    results.memory = m;
    results
        .driver_log
        .push(("memory".to_owned(), driver.stop().await));
}

/// 1,000 volumes with 30 s leases and 30 s tokens published at once, then
/// observed: renewals per second, lapses, requests per volume per hour.
async fn refresh_at_scale(scratch: &Scratch, sizes: &Sizes, results: &mut Results) {
    let mut host = DoubleHost::spawn(seed(2, sizes.refresh_ttl, HOUR, sizes.refresh_ttl));
    let node = scratch.node("refresh");
    let driver = Driver::spawn(&node, &host.addr).await;
    let pods = kubelet::pods("refresh", sizes.refresh_volumes, &node.kubelet);
    let calls = publishes(&pods, &node.kubelet, CREDS_TEMPLATE);
    let channels = kubelet::channels(&driver.socket, sizes.refresh_callers).await;
    let start = SystemTime::now();
    let batch = kubelet::run_batch(&channels, calls).await;
    let published = SystemTime::now();
    step(&format!(
        "  {} volumes published in {:.2} s; observing for {} s",
        pods.len(),
        batch.wall.as_secs_f64(),
        sizes.refresh_window.as_secs()
    ));
    drop(channels);
    let mut progress = String::new();
    let window_end = Instant::now() + sizes.refresh_window;
    while Instant::now() < window_end {
        tokio::time::sleep(Duration::from_secs(15).min(window_end - Instant::now())).await;
        progress.clear();
        let _ = write!(
            progress,
            "  … {:.0} s, driver CPU {:.2} s",
            SystemTime::now()
                .duration_since(start)
                .unwrap_or_default()
                .as_secs_f64(),
            procs::sched_seconds(driver.pid())
        );
        step(&progress);
    }
    let end = SystemTime::now();
    let requests = host.dump("requests", &scratch.root);
    let leases = host.dump("leases", &scratch.root);
    let tokens = host.dump("tokens", &scratch.root);
    let analysed = refresh::analyse(&refresh::Inputs {
        requests: &requests,
        leases: &leases,
        tokens: &tokens,
        start,
        published,
        end,
        completed_at: &batch.completed_at,
        ttl: sizes.refresh_ttl,
        volumes: pods.len(),
    });
    step(&format!(
        "  renewals: at most {}/s (lease {}/s, token {}/s); lapsed leases {}, tokens {}",
        analysed.max_renewals_per_sec,
        analysed.max_lease_renews_per_sec,
        analysed.max_token_renews_per_sec,
        analysed.leases_lapsed,
        analysed.tokens_lapsed
    ));
    results.refresh = analysed;

    let channels = kubelet::channels(&driver.socket, sizes.callers).await;
    kubelet::run_batch(&channels, unpublishes(&pods, &node.kubelet)).await;
    drop(channels);
    results
        .driver_log
        .push(("refresh".to_owned(), driver.stop().await));
}
