//! Phase `latency`: publish latency for 1, 3 and 10 secrets against the
//! Vault floor (the same requests sent directly), one caller at a time;
//! where a publish's time goes (gRPC round trip, template work, tmpfs
//! mount, the driver's own steps), and the rows against a remote Vault.

use std::path::Path;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use vault_csi_driver::proto::NodeGetCapabilitiesRequest;
use vault_csi_driver::proto::node_client::NodeClient;

use crate::floor::Floor;
use crate::procs::{self, DoubleHost, Driver, Scratch};
use crate::sizes::Sizes;
use crate::stats::{self, Summary};
use crate::workload::{DAY, HOUR, kv_paths, kv_template, seed};
use crate::{Results, kubelet, refresh, step};

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
pub struct Timings {
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

/// What the latency rows need: a kubelet connection, the floor client,
/// the double (for its request log) and where the node lives.
pub struct Rig<'a> {
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

/// The gRPC round trip alone, back to back and after a pause as long as
/// the remote rows' Vault calls.
async fn grpc_round_trips(rig: &mut Rig<'_>, sizes: &Sizes, results: &mut Results) {
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
    // After a pause as long as the remote rows' Vault calls.
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
}

/// One local row's line on the console.
fn report_local_row(k: usize, row: &Latency) {
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
}

/// Publish latency for 1, 3 and 10 secrets, interleaved with the same
/// requests sent directly, one caller at a time.
pub async fn latency(scratch: &Scratch, sizes: &Sizes, results: &mut Results) {
    let mut host = DoubleHost::spawn(seed(2, DAY, 32 * DAY, HOUR));
    let node = scratch.node("latency");
    let driver = Driver::spawn(&node, &host.addr).await;
    let mut rig = Rig::new(&driver, &mut host, &node, &scratch.root).await;

    grpc_round_trips(&mut rig, sizes, results).await;
    (results.mount_cost, results.umount_cost) = mount_cost(&node.kubelet, sizes.latency_iterations);

    for k in [1, 3, 10] {
        let row = latency_row(&mut rig, sizes, k, &format!("lat{k}")).await;
        report_local_row(k, &row);
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
pub const IDLE_GAP: Duration = Duration::from_millis(7);

/// The remote rows' login latency: a real Vault's Kubernetes login first
/// asks the API server to review the token.
pub const REMOTE_LOGIN: Duration = Duration::from_millis(3);
/// The remote rows' latency of every other request.
pub const REMOTE_READ: Duration = Duration::from_millis(1);

pub fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

/// Splits each call window `[sent, answered]` at the moments the double
/// started handling the login and the last read inside it: the time
/// before Vault saw the login, from login to the last read, and after.
pub fn split_windows(log: &[String], windows: &[(u128, u128)]) -> [Duration; 3] {
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

pub async fn latency_row(rig: &mut Rig<'_>, sizes: &Sizes, k: usize, prefix: &str) -> Latency {
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
pub fn template_cost(source: &str, k: usize, n: usize) -> [Duration; 3] {
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
pub fn mount_cost(kubelet_dir: &Path, n: usize) -> (Summary, Summary) {
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
