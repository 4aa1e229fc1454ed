//! `signal` / `signalProcess`: after each refresh that changed a volume's
//! files, the driver signals the processes of the volume's pod with that
//! name, found by their cgroup as kubelet lays pods out (systemd driver
//! under cgroup v2, cgroupfs driver under cgroup v1), with real processes
//! in real cgroups. The same name in another pod or in no pod is never
//! signalled; nor is anything at the first publish or when a refresh
//! rendered the same bytes.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{
    DriverProcess, Harness, INDEX_TEMPLATE, Node, Pod, expected_index, free_port, publish_ok,
    rand_suffix, requires_root, wait_for, walkthrough_vault,
};
use tonic::Code;
use vault_double::VaultDouble;

const SECRET: &str = "/v1/secret/data/myapp/config";
const WAIT: Duration = Duration::from_secs(15);

/// How kubelet names a pod's container cgroup.
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/cri-containerd-<id>.scope`
    /// in the cgroup v2 hierarchy.
    SystemdV2,
    /// `kubepods/besteffort/pod<uid>/<id>` in cgroup v1's `pids` hierarchy.
    CgroupfsV1,
}

impl Layout {
    fn hierarchy(self) -> PathBuf {
        let path = PathBuf::from(match self {
            Self::SystemdV2 => "/sys/fs/cgroup/unified",
            Self::CgroupfsV1 => "/sys/fs/cgroup/pids",
        });
        let marker = match self {
            Self::SystemdV2 => "cgroup.controllers",
            Self::CgroupfsV1 => "cgroup.clone_children",
        };
        assert!(
            path.join(marker).exists(),
            "{self:?} needs a writable cgroup hierarchy at {}",
            path.display()
        );
        path
    }

    /// The container cgroup's directories, outermost first, below `prefix`.
    fn container(self, uid: &str, container: &str) -> Vec<String> {
        match self {
            Self::SystemdV2 => {
                let escaped = uid.replace('-', "_");
                vec![
                    "kubepods.slice".to_owned(),
                    "kubepods-burstable.slice".to_owned(),
                    format!("kubepods-burstable-pod{escaped}.slice"),
                    format!("cri-containerd-{container}.scope"),
                ]
            }
            Self::CgroupfsV1 => vec![
                "kubepods".to_owned(),
                "besteffort".to_owned(),
                format!("pod{uid}"),
                container.to_owned(),
            ],
        }
    }
}

/// A shell, copied under the app's name (so its `comm` is that name),
/// counting the signals it receives in a file. It runs only builtins, so no
/// child of it ever carries the name.
struct App {
    child: Child,
    count: PathBuf,
}

impl App {
    fn spawn(dir: &Path, name: &str, label: &str, signal: &str) -> Self {
        let binary = dir.join(name);
        if !binary.exists() {
            std::fs::copy("/bin/bash", &binary).expect("copy bash");
        }
        let fifo = dir.join(format!("{label}.fifo"));
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let count = dir.join(format!("{label}.count"));
        let ready = dir.join(format!("{label}.ready"));
        let script = format!(
            "trap 'echo got >> {count}' {signal}; echo > {ready}; exec 3<>{fifo}; while :; do read -t 1 -u 3 _; done",
            count = count.display(),
            ready = ready.display(),
            fifo = fifo.display(),
        );
        // `env --default-signal`: a signal ignored by whatever started the
        // tests (`nohup` ignores SIGHUP) stays ignored across exec, and a
        // shell cannot trap a signal ignored when it started.
        let child = Command::new("env")
            .arg(format!("--default-signal={signal}"))
            .arg(&binary)
            .args(["-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .expect("start the app");
        // Up to 15 s, in 10 ms steps.
        for _ in 0..1500 {
            if ready.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(ready.exists(), "{label} never started");
        Self { child, count }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signals(&self) -> usize {
        std::fs::read_to_string(&self.count)
            .unwrap_or_default()
            .lines()
            .count()
    }
}

/// The apps and the cgroups made for one test: processes are killed, then
/// the cgroups removed, innermost first.
struct Fixture {
    dir: PathBuf,
    apps: Vec<App>,
    cgroups: Vec<PathBuf>,
}

impl Fixture {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("vcd-apps-{}", rand_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            dir,
            apps: Vec::new(),
            cgroups: Vec::new(),
        }
    }

    /// Starts `name` and, with a pod, moves it into that pod's container
    /// cgroup in `layout` (below a prefix of its own, as nested nodes have).
    fn app(&mut self, name: &str, signal: &str, pod: Option<(&Pod, Layout)>) -> usize {
        let label = format!("app{}", self.apps.len());
        let app = App::spawn(&self.dir, name, &label, signal);
        if let Some((pod, layout)) = pod {
            let mut dir = layout
                .hierarchy()
                .join(format!("vcd-test-{}", rand_suffix()));
            let mut made = vec![dir.clone()];
            for part in layout.container(&pod.uid, &rand_suffix()) {
                dir = dir.join(part);
                made.push(dir.clone());
            }
            std::fs::create_dir_all(&dir).expect("make the pod's cgroup");
            self.cgroups.extend(made.into_iter().rev());
            std::fs::write(dir.join("cgroup.procs"), app.pid().to_string())
                .expect("move the app into its pod's cgroup");
            let cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", app.pid())).unwrap();
            let shown = dir.strip_prefix(layout.hierarchy()).unwrap();
            assert!(
                cgroup.contains(&*shown.to_string_lossy()),
                "the app is not in {}: {cgroup}",
                shown.display()
            );
        }
        self.apps.push(app);
        self.apps.len() - 1
    }

    fn signals(&self) -> Vec<usize> {
        self.apps.iter().map(App::signals).collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for app in &mut self.apps {
            let _ = app.child.kill();
            let _ = app.child.wait();
        }
        for cgroup in &self.cgroups {
            // A killed process leaves its cgroup a moment after wait().
            for _ in 0..100 {
                if std::fs::remove_dir(cgroup).is_ok() || !cgroup.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn driver_with_metrics() -> (Harness<DriverProcess>, u16) {
    let port = free_port();
    let addr = format!("--metrics-addr=127.0.0.1:{port}");
    let h = Harness::builder()
        .spawn(&[&addr, "--log-format=json"])
        .await;
    (h, port)
}

async fn app_signals(port: u16) -> [u64; 3] {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    ["sent", "no_process", "failed"].map(|result| {
        let series = format!("vault_csi_app_signals_total{{result=\"{result}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(0, |v| v.trim().parse().unwrap())
    })
}

/// Waits until Vault served `more` further reads of the secret: that many
/// refreshes ran (and, at a 1 s interval, any signal a refresh before them
/// sent has long arrived).
async fn refreshes(vault: &VaultDouble, more: usize) {
    let seen = vault.count("GET", SECRET);
    wait_for("more refreshes", WAIT, || {
        vault.count("GET", SECRET) >= seen + more
    })
    .await;
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The whole story in one layout: no signal at publish or for identical
/// refreshes, exactly one per change to the pod's process only, and the
/// metric and log lines; a volume naming a process the pod does not run
/// counts `no_process` and says so.
async fn signals_reach_only_the_pods_process(layout: Layout, signal: &str, trapped: &str) {
    let (h, port) = driver_with_metrics().await;
    let pod = &h.pod;
    let other = Pod::new("default", "nginx-other", "vault-auth");

    let mut fixture = Fixture::new();
    let ours = fixture.app("nginx", trapped, Some((pod, layout)));
    let theirs = fixture.app("nginx", trapped, Some((&other, layout)));
    let podless = fixture.app("nginx", trapped, None);
    let sidecar = fixture.app("envoy", trapped, Some((pod, layout)));

    let attributes = [
        ("roleName", "example"),
        ("template.index.html", INDEX_TEMPLATE),
        ("staticSecretRefreshInterval", "1s"),
        ("signal", signal),
        ("signalProcess", "nginx"),
    ];
    let target = h.publish_ok(&attributes).await;
    let mut absent = attributes;
    absent[4] = ("signalProcess", "haproxy");
    h.send_ok(h.request("w", &absent)).await;

    refreshes(&h.vault, 4).await;
    assert_eq!(
        fixture.signals(),
        [0, 0, 0, 0],
        "nothing at the first publish nor for refreshes that rendered the same bytes"
    );
    assert_eq!(app_signals(port).await, [0, 0, 0]);

    for (change, password) in ["rotated-1", "rotated-2"].into_iter().enumerate() {
        h.vault.kv2_put(
            "secret",
            "myapp/config",
            serde_json::json!({"username": "appuser", "password": password}),
        );
        wait_for("the changed file", WAIT, || {
            read(&target.join("index.html")) == expected_index("appuser", password)
        })
        .await;
        wait_for("the pod's nginx to be signalled", WAIT, || {
            fixture.apps[ours].signals() == change + 1
        })
        .await;
        refreshes(&h.vault, 4).await;
        let mut expected = [0; 4];
        expected[ours] = change + 1;
        assert_eq!(
            fixture.signals(),
            expected,
            "one signal per change, to the pod's nginx only (ours, other pod's, pod-less, sidecar)"
        );
    }
    let _ = (theirs, podless, sidecar);

    let [sent, no_process, failed] = app_signals(port).await;
    assert_eq!(sent, 2, "one process, two changes");
    assert_eq!(no_process, 2, "volume w's haproxy, at each change");
    assert_eq!(failed, 0);
    let logs: Vec<serde_json::Value> = h
        .driver
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let signalled: Vec<&serde_json::Value> = logs
        .iter()
        .filter(|l| l["message"] == "Signalled the app: its files changed")
        .collect();
    assert_eq!(signalled.len(), 2, "{logs:#?}");
    for line in signalled {
        assert_eq!(line["pod.namespace"], "default", "{line}");
        assert_eq!(line["pod.name"], "nginx", "{line}");
        assert_eq!(line["process"], "nginx", "{line}");
        assert_eq!(line["pid"], fixture.apps[ours].pid(), "{line}");
        assert_eq!(line["signal"], format!("SIG{trapped}"), "{line}");
    }
    assert!(
        logs.iter().any(|l| l["process"] == "haproxy"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.contains("no process of the pod has this name"))),
        "{logs:#?}"
    );

    for volume in ["v", "w"] {
        h.unpublish_ok(volume).await;
    }
    drop(h);
}

#[tokio::test]
async fn systemd_pods_under_cgroup_v2_get_sighup_once_per_change() {
    if !requires_root("real processes moved into pod cgroups") {
        return;
    }
    signals_reach_only_the_pods_process(Layout::SystemdV2, "SIGHUP", "HUP").await;
}

#[tokio::test]
async fn cgroupfs_pods_under_cgroup_v1_get_sigusr1_once_per_change() {
    if !requires_root("real processes moved into pod cgroups") {
        return;
    }
    signals_reach_only_the_pods_process(Layout::CgroupfsV1, "usr1", "USR1").await;
}

/// The driver without the host's PID namespace (the base install, without
/// the `app-signals` overlay): it is PID 1 of its own namespace and sees no
/// pod's process. A change signals nothing, and the driver says why, in
/// its log and in `no_process`.
#[tokio::test]
async fn without_the_host_pid_namespace_the_driver_says_it_cannot_signal() {
    if !requires_root("real processes moved into pod cgroups") {
        return;
    }
    let node = Node::new();
    let vault = walkthrough_vault().await;
    let pod = Pod::walkthrough();
    let mut fixture = Fixture::new();
    let app = fixture.app("nginx", "HUP", Some((&pod, Layout::CgroupfsV1)));

    // `unshare --pid --fork --mount-proc`: the driver is PID 1 of a new PID
    // namespace with its own /proc, as in a pod without hostPID. Its mounts
    // stay in its own mount namespace; the test watches Vault and the log.
    let port = free_port();
    let log = node.root.join("driver.log");
    let out = std::fs::File::create(&log).unwrap();
    let driver = Command::new("unshare")
        .args(["--pid", "--kill-child", "--mount-proc", "--"])
        .arg(env!("CARGO_BIN_EXE_vault-csi-driver"))
        .arg(format!("--endpoint=unix://{}", node.socket().display()))
        .arg("--node-id=test-node")
        .arg(format!("--vault-addr={}", vault.addr()))
        .arg(format!("--state-dir={}", node.state_dir().display()))
        .arg(format!("--kubelet-dir={}", node.kubelet_dir().display()))
        .arg(format!("--metrics-addr=127.0.0.1:{port}"))
        .arg("--log-format=json")
        .arg("--min-refresh-interval=0s")
        .env_remove("VAULT_ADDR")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    // Killed whatever happens, so a failed assertion leaves no driver
    // behind (it would hold the mounts and the log open).
    let driver = KillOnDrop(driver);
    let socket = node.socket();
    wait_for("the driver's socket", WAIT, || socket.exists()).await;
    let node_client =
        vault_csi_driver::proto::node_client::NodeClient::new(support::channel(&socket).await);

    let attributes = [
        ("roleName", "example"),
        ("template.index.html", INDEX_TEMPLATE),
        ("staticSecretRefreshInterval", "1s"),
        ("signal", "SIGHUP"),
        ("signalProcess", "nginx"),
    ];
    publish_ok(
        node_client.clone(),
        pod.publish(&node, &vault, "v", &attributes),
    )
    .await;
    vault.kv2_put(
        "secret",
        "myapp/config",
        serde_json::json!({"username": "appuser", "password": "rotated"}),
    );
    let said = "it does not run in the host's PID namespace";
    wait_for("the driver to say it cannot signal", WAIT, || {
        read(&log).contains(said)
    })
    .await;
    refreshes(&vault, 2).await;
    assert_eq!(
        app_signals(port).await,
        [0, 1, 0],
        "one change, nobody seen"
    );
    assert_eq!(fixture.apps[app].signals(), 0);
    let line: serde_json::Value = read(&log)
        .lines()
        .find(|l| l.contains(said))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap();
    assert_eq!(line["level"], "WARN", "{line}");
    assert_eq!(line["pod.name"], "nginx", "{line}");
    assert!(
        line["message"]
            .as_str()
            .unwrap()
            .contains("install the app-signals overlay (hostPID: true)"),
        "{line}"
    );

    support::unpublish_ok(node_client, pod.unpublish(&node, "v")).await;
    drop(driver);
}

/// A child process killed and reaped when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A bad `signal`, or one without `signalProcess`, is refused before
/// anything is mounted.
#[tokio::test]
async fn bad_signal_attributes_are_invalid_argument() {
    let h = Harness::walkthrough().await;
    let base = [
        ("roleName", "example"),
        ("template.index.html", INDEX_TEMPLATE),
    ];
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("signal", "SIGKILL"), ("signalProcess", "nginx")],
            "SIGKILL",
        ),
        (&[("signal", "SIGHUP")], "signalProcess"),
        (&[("signalProcess", "nginx")], "signal"),
        (
            &[("signal", "SIGTERM"), ("signalProcess", "pause")],
            "pause",
        ),
    ];
    for (extra, expected) in cases {
        let attributes: Vec<(&str, &str)> = base.iter().chain(extra.iter()).copied().collect();
        let status = h.send_err(h.request("v", &attributes)).await;
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{extra:?}: {status:?}"
        );
        assert!(status.message().contains(expected), "{extra:?}: {status:?}");
        assert!(h.node.volumes().is_empty(), "nothing mounted for {extra:?}");
    }
    assert_eq!(h.vault.count("POST", "/v1/auth"), 0, "Vault never asked");
    h.stop().await;
}
