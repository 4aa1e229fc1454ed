//! A node in a box: the driver and nginx run as real containers under a
//! real container engine (Docker), laid out as kubelet and the DaemonSet lay
//! them out on a node.
//!
//! - The driver runs in a container with the DaemonSet's flags and mounts:
//!   kubelet's pods directory bound `rshared` at the same path as on the
//!   host (kubelet sends host paths), the plugin directory at `/csi` and the
//!   state directory, with `CAP_SYS_ADMIN` and the host network (to reach
//!   the in-process Vault double on loopback).
//! - This test is kubelet: on the host it publishes and unpublishes through
//!   the driver's socket, and it binds the published target into an nginx
//!   container as kubelet binds a volume into a pod (`:ro` for a `readOnly`
//!   volume).
//! - The test's kubelet directory is a shared mount on the host, so the
//!   driver's mounts propagate back, as Bidirectional propagation does.
//!
//! Both images are test images built without a registry (`docker import`
//! of a folder holding a binary, its shared libraries and the few files it
//! reads); releases are built with the Dockerfile. The driver image holds
//! what the Dockerfile's runtime stage holds: keep the two in step.
//!
//! Needs root and a running Docker engine. Outside CI a missing engine
//! skips the tests; with `CI=true` it fails them. `VCD_NODE_BOX_DRIVER`
//! names the driver binary to put in the image (`.ci/run` passes the
//! release build); without it the test build's binary is used.
//!
//! Note: Docker resolves bind sources in its own mount namespace, so the
//! test must run in dockerd's mount namespace (it checks).

mod support;

use std::future::Future;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::Duration;

use nix::mount::MsFlags;
use serde_json::json;
use support::{
    INDEX_TEMPLATE, Node, Pod, channel, expected_index, mounts_under, publish_ok, rand_suffix,
    unpublish_ok, walkthrough_vault,
};
use tokio::time::Instant;
use vault_csi_driver::proto::node_client::NodeClient;
use vault_double::VaultDouble;

/// The driver's test image (same content as the Dockerfile's runtime stage).
const DRIVER_IMAGE: &str = "vault-csi-driver-node-box/driver:test";
/// nginx's test image (Debian's nginx, laid out like `nginx:1.27`).
const APP_IMAGE: &str = "vault-csi-driver-node-box/nginx:test";
/// The DaemonSet's driver container runs privileged; `--privileged` does
/// not start in every sandbox, and this is what mount(2) needs.
const MOUNT_PRIVILEGES: [&str; 6] = [
    "--cap-add",
    "SYS_ADMIN",
    "--security-opt",
    "apparmor=unconfined",
    "--security-opt",
    "seccomp=unconfined",
];
/// Where the walkthrough pod mounts the volume in nginx's container.
const HTML: &str = "/usr/share/nginx/html";
/// Bound for conditions that involve containers starting or a refresh.
const PATIENCE: Duration = Duration::from_secs(60);

/// The walkthrough with `readOnly: true`, as deploy/examples/nginx-pod.yaml
/// declares it: nginx serves the page byte for byte, a KV change reaches the
/// container, the container cannot write, nginx keeps serving while the
/// driver is away, a new driver container (an upgrade) resumes refreshing,
/// and unpublish through it removes the host's mount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walkthrough_in_containers_survives_a_driver_upgrade() {
    if !box_can_run() {
        return;
    }
    build_images_once().await;
    let vault = walkthrough_vault().await;
    let mut node_box = NodeBox::new();
    let driver = node_box.start_driver(&vault, "driver-1").await;
    let pod = Pod::walkthrough();
    let target = node_box.publish(&driver, &vault, &pod, true).await;
    let nginx = node_box.start_nginx(&target, true).await;

    assert_eq!(
        nginx.get_index().await,
        expected_index("appuser", "suP3rsec(et!"),
        "nginx serves the walkthrough page byte for byte"
    );

    vault.kv2_put(
        "secret",
        "myapp/config",
        json!({"username": "appuser", "password": "changed-once"}),
    );
    nginx
        .wait_for_index(&expected_index("appuser", "changed-once"))
        .await;

    nginx.assert_cannot_write().await;

    // The driver goes away (a rolling update deletes its pod): the pod keeps
    // its files, and the host keeps the mount.
    driver.stop().await;
    assert_eq!(
        nginx.get_index().await,
        expected_index("appuser", "changed-once"),
        "nginx serves the page while the driver is away"
    );
    assert_eq!(
        mounts_under(&target),
        [target.to_string_lossy()],
        "the host keeps the volume's mount while the driver is away"
    );

    // The new driver resumes refreshing from the state directory.
    let upgraded = node_box.start_driver(&vault, "driver-2").await;
    vault.kv2_put(
        "secret",
        "myapp/config",
        json!({"username": "appuser", "password": "changed-twice"}),
    );
    nginx
        .wait_for_index(&expected_index("appuser", "changed-twice"))
        .await;

    // The pod goes away, then kubelet unpublishes.
    nginx.remove().await;
    unpublish_ok(upgraded.node().await, pod.unpublish(&node_box.node, "v")).await;
    assert!(
        mounts_under(&target).is_empty(),
        "the host still lists the volume after unpublish: {:?}",
        mounts_under(&target)
    );
    assert!(!target.exists(), "unpublish removes the target");
    upgraded.stop().await;
}

/// A volume that is not `readOnly`, bound into nginx without `:ro`: the
/// page is served, and the pod still cannot write into its volume.
///
/// This needs the volume to be read-only in the host's mount namespace
/// too, i.e. read-only before it propagates; a remount in the driver's own
/// namespace does not propagate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_write_volume_is_read_only_in_the_pod() {
    if !box_can_run() {
        return;
    }
    build_images_once().await;
    let vault = walkthrough_vault().await;
    let mut node_box = NodeBox::new();
    let driver = node_box.start_driver(&vault, "driver").await;
    let pod = Pod::walkthrough();
    let target = node_box.publish(&driver, &vault, &pod, false).await;
    let nginx = node_box.start_nginx(&target, false).await;

    assert_eq!(
        nginx.get_index().await,
        expected_index("appuser", "suP3rsec(et!"),
        "nginx serves the walkthrough page byte for byte"
    );
    nginx.assert_cannot_write().await;

    nginx.remove().await;
    unpublish_ok(driver.node().await, pod.unpublish(&node_box.node, "v")).await;
    assert!(mounts_under(&target).is_empty());
    driver.stop().await;
}

/// True when the box can run here. Needs root (mounts) and a Docker engine
/// in this mount namespace, plus nginx and a few coreutils for the app
/// image. Outside CI a missing piece skips the test; `CI=true` fails it.
fn box_can_run() -> bool {
    if !support::requires_root("mounts, and the Docker engine's mount namespace") {
        return false;
    }
    let problem = match std::process::Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
    {
        Err(error) => Some(format!("no docker client ({error})")),
        Ok(out) if !out.status.success() => Some(format!(
            "the Docker engine does not answer ({}); start it with `dockerd &`",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => ["nginx", "touch", "ln", "cat"]
            .into_iter()
            .find(|tool| find_binary(tool).is_none())
            .map(|tool| format!("{tool} is not installed (apt-get install nginx-light)")),
    };
    if let Some(problem) = problem {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "node-in-a-box test: {problem}; CI=true forbids skipping it (.ci/run installs docker.io and starts dockerd)"
        );
        eprintln!("skipping: {problem}");
        return false;
    }
    assert_same_mount_namespace_as_dockerd();
    true
}

/// Docker resolves bind sources, and shares mounts, in dockerd's mount
/// namespace: a test in another one would bind folders it cannot see.
fn assert_same_mount_namespace_as_dockerd() {
    let Some(pid) = ["/run/docker.pid", "/var/run/docker.pid"]
        .iter()
        .find_map(|file| std::fs::read_to_string(file).ok())
    else {
        eprintln!("dockerd's pid file is missing; assuming it shares this mount namespace");
        return;
    };
    let theirs = std::fs::read_link(format!("/proc/{}/ns/mnt", pid.trim()));
    let ours = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    if let Ok(theirs) = theirs {
        assert_eq!(
            theirs, ours,
            "run this test in dockerd's mount namespace: Docker binds paths as dockerd sees them"
        );
    }
}

/// `PATH` lookup, plus the sbin folders a root shell has.
fn find_binary(name: &str) -> Option<PathBuf> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| candidate.is_file())
}

// ---- images ---------------------------------------------------------------

/// Builds both images once per test run (the tests share them).
async fn build_images_once() {
    static BUILT: OnceLock<()> = OnceLock::new();
    tokio::task::spawn_blocking(|| BUILT.get_or_init(build_images))
        .await
        .expect("building the images");
}

/// The driver binary for the image: `VCD_NODE_BOX_DRIVER` (relative paths
/// are from the repository root), else the binary this test run built.
fn driver_binary() -> PathBuf {
    let binary = if let Some(path) = std::env::var_os("VCD_NODE_BOX_DRIVER") {
        let binary = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        eprintln!(
            "node box: driver image from {} (VCD_NODE_BOX_DRIVER)",
            binary.display()
        );
        binary
    } else {
        let binary = PathBuf::from(env!("CARGO_BIN_EXE_vault-csi-driver"));
        eprintln!(
            "node box: driver image from {} (the test build; set VCD_NODE_BOX_DRIVER to use another)",
            binary.display()
        );
        binary
    };
    assert!(
        binary.is_file(),
        "{} does not exist; build it first (cargo build --release --bin vault-csi-driver)",
        binary.display()
    );
    binary
}

fn build_images() {
    let scratch = std::env::temp_dir().join(format!("vcd-box-images-{}", rand_suffix()));
    let _cleanup = RemoveOnDrop(scratch.clone());

    // The driver: the content of the Dockerfile's runtime stage
    // (gcr.io/distroless/cc-debian12): the binary at the same path, glibc and
    // libgcc (whatever the binary links), CA certificates, root's passwd
    // entries and /tmp; run as root with the same entrypoint. Keep in step
    // with the Dockerfile.
    let root = scratch.join("driver");
    add_binary(&root, &driver_binary(), "usr/local/bin/vault-csi-driver");
    add_file(
        &root,
        Path::new("/etc/ssl/certs/ca-certificates.crt"),
        "etc/ssl/certs/ca-certificates.crt",
    );
    add_text(
        &root,
        "etc/passwd",
        "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
    );
    add_text(
        &root,
        "etc/group",
        "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n",
    );
    add_dir(&root, "tmp", 0o1777);
    import_image(
        &root,
        DRIVER_IMAGE,
        &[
            "USER 0",
            r#"ENTRYPOINT ["/usr/local/bin/vault-csi-driver"]"#,
        ],
    );

    // The app: Debian's nginx laid out like the walkthrough's nginx:1.27
    // (workers as user nginx, uid 101; pages from /usr/share/nginx/html),
    // plus touch, ln and cat for the test's `docker exec`.
    let root = scratch.join("nginx");
    add_binary(&root, &find_binary("nginx").unwrap(), "usr/sbin/nginx");
    for tool in ["touch", "ln", "cat"] {
        add_binary(&root, &find_binary(tool).unwrap(), &format!("bin/{tool}"));
    }
    add_text(
        &root,
        "etc/passwd",
        "root:x:0:0:root:/root:/sbin/nologin\nnginx:x:101:101:nginx:/nonexistent:/sbin/nologin\n",
    );
    add_text(&root, "etc/group", "root:x:0:\nnginx:x:101:\n");
    add_text(
        &root,
        "etc/nginx/nginx.conf",
        "daemon off;\nuser nginx;\nworker_processes 1;\npid /run/nginx.pid;\nerror_log stderr;\nevents {}\nhttp {\n  access_log off;\n  types { text/html html; }\n  server {\n    listen 80;\n    root /usr/share/nginx/html;\n  }\n}\n",
    );
    for dir in [
        "var/log/nginx",
        "var/lib/nginx",
        "run",
        HTML.trim_start_matches('/'),
    ] {
        add_dir(&root, dir, 0o755);
    }
    add_dir(&root, "tmp", 0o1777);
    import_image(
        &root,
        APP_IMAGE,
        &[
            "ENV PATH=/usr/sbin:/bin",
            r#"ENTRYPOINT ["/usr/sbin/nginx", "-c", "/etc/nginx/nginx.conf"]"#,
        ],
    );
}

/// Removes a scratch folder when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies `binary` to `root/at` and every shared library `ldd` lists to the
/// same path under `root`.
fn add_binary(root: &Path, binary: &Path, at: &str) {
    add_file(root, binary, at);
    let ldd = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .expect("run ldd");
    let listing = String::from_utf8_lossy(&ldd.stdout);
    if !ldd.status.success() {
        // "not a dynamic executable": nothing to add.
        return;
    }
    for line in listing.lines() {
        assert!(!line.contains("not found"), "{}: {line}", binary.display());
        if let Some(library) = line.split_whitespace().find(|word| word.starts_with('/')) {
            add_file(root, Path::new(library), library.trim_start_matches('/'));
        }
    }
}

/// Copies `source` (following symlinks) to `root/at` with its mode.
fn add_file(root: &Path, source: &Path, at: &str) {
    let destination = root.join(at);
    std::fs::create_dir_all(destination.parent().unwrap()).unwrap();
    std::fs::copy(source, &destination)
        .unwrap_or_else(|error| panic!("copy {} into the image: {error}", source.display()));
}

fn add_text(root: &Path, at: &str, text: &str) {
    let destination = root.join(at);
    std::fs::create_dir_all(destination.parent().unwrap()).unwrap();
    std::fs::write(destination, text).unwrap();
}

fn add_dir(root: &Path, at: &str, mode: u32) {
    let dir = root.join(at);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `docker import` of `root` as `tag`, replacing the previous image of
/// that tag.
fn import_image(root: &Path, tag: &str, changes: &[&str]) {
    let tar = root.with_extension("tar");
    run_blocking(
        std::process::Command::new("tar")
            .arg("--numeric-owner")
            .arg("-C")
            .arg(root)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    );
    let _ = std::process::Command::new("docker")
        .args(["image", "rm", tag])
        .output();
    let mut import = std::process::Command::new("docker");
    import.arg("import");
    for change in changes {
        import.arg("--change").arg(change);
    }
    run_blocking(import.arg(&tar).arg(tag));
    let _ = std::fs::remove_file(tar);
}

fn run_blocking(command: &mut std::process::Command) {
    let out = command.output().expect("run a command");
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---- docker ----------------------------------------------------------------

/// Runs `docker args…` and returns its output, whatever the exit status.
async fn docker(args: &[&str]) -> Output {
    tokio::process::Command::new("docker")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run docker")
}

/// Runs `docker args…`, expects success and returns stdout, trimmed.
async fn docker_ok(args: &[&str]) -> String {
    let out = docker(args).await;
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Tries `attempt` every 100 ms until it succeeds or `timeout` passes; the
/// panic carries the last failure.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(last) => assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; last: {last}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---- the node ----------------------------------------------------------------

/// A scratch node (see [`Node`]) whose kubelet directory is a shared mount
/// on the host, and the containers started on it. Dropping it removes the
/// containers (printing their logs if the test failed), then unmounts
/// everything under the node and removes it.
struct NodeBox {
    node: Node,
    /// Container names start with this.
    prefix: String,
    containers: Vec<String>,
}

impl NodeBox {
    fn new() -> Self {
        let node = Node::new();
        let kubelet = node.kubelet_dir();
        nix::mount::mount(
            Some(&kubelet),
            &kubelet,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind the kubelet directory onto itself");
        nix::mount::mount(
            None::<&str>,
            &kubelet,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
        .expect("make the kubelet directory a shared mount");
        let optional = mountinfo_optional_fields(&kubelet).unwrap_or_default();
        assert!(
            optional.contains("shared:"),
            "the kubelet directory is not a shared mount on the host: {optional:?}"
        );
        std::fs::create_dir_all(node.root.join("csi")).unwrap();
        std::fs::create_dir_all(node.state_dir()).unwrap();
        Self {
            prefix: format!("vcd-box-{}", rand_suffix()),
            node,
            containers: Vec::new(),
        }
    }

    /// Starts the driver container as the DaemonSet runs it and waits until
    /// `/readyz` answers, as the readiness probe does.
    async fn start_driver(&mut self, vault: &VaultDouble, name: &str) -> DriverContainer {
        let name = format!("{}-{name}", self.prefix);
        self.containers.push(name.clone());
        let daemonset = DaemonSetDriver::read();
        let metrics_port = support::free_port();
        let pods = self.node.kubelet_dir().join("pods");
        let pods = pods.to_str().unwrap();
        let mut args: Vec<String> = vec![
            "run".into(),
            "--detach".into(),
            "--name".into(),
            name.clone(),
        ];
        args.extend(MOUNT_PRIVILEGES.map(str::to_owned));
        args.extend(["--network".into(), "host".into()]);
        for (host, container) in [
            // pods-mount-dir, Bidirectional: the same path in and out.
            (pods.to_owned(), format!("{pods}:rshared")),
            // plugin-dir.
            (
                self.node.root.join("csi").display().to_string(),
                daemonset.socket_dir.clone(),
            ),
            // state-dir.
            (
                self.node.state_dir().display().to_string(),
                daemonset.env("STATE_DIR").to_owned(),
            ),
        ] {
            args.extend(["--volume".into(), format!("{host}:{container}")]);
        }
        for (key, value) in &daemonset.env {
            let value = match key.as_str() {
                "VAULT_ADDR" => vault.addr(),
                "KUBELET_DIR" => self.node.kubelet_dir().display().to_string(),
                _ => value.clone(),
            };
            args.extend(["--env".into(), format!("{key}={value}")]);
        }
        // NODE_NAME comes from the downward API in the DaemonSet.
        args.extend(["--env".into(), "NODE_NAME=node-in-a-box".into()]);
        args.push(DRIVER_IMAGE.into());
        for arg in &daemonset.args {
            // The DaemonSet's 0.0.0.0:9090 is per pod; on the host network
            // each driver here needs its own port.
            if arg.starts_with("--metrics-addr=") {
                args.push(format!("--metrics-addr=127.0.0.1:{metrics_port}"));
            } else {
                args.push(arg.clone());
            }
        }
        // The walkthrough's 1 s re-reads, so a KV change shows within
        // seconds (the default floor is 30 s, which a cluster keeps).
        args.push("--min-refresh-interval=1s".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker_ok(&args).await;

        let readyz = format!("http://127.0.0.1:{metrics_port}/readyz");
        let http = http_client();
        eventually("the driver container's /readyz", PATIENCE, || async {
            let state = docker_ok(&["inspect", "--format", "{{.State.Status}}", &name]).await;
            if state == "exited" || state == "dead" {
                let logs = docker(&["logs", &name]).await;
                panic!(
                    "the driver container {state}: {}{}",
                    String::from_utf8_lossy(&logs.stdout),
                    String::from_utf8_lossy(&logs.stderr)
                );
            }
            match http.get(&readyz).send().await {
                Ok(response) if response.status().is_success() => Ok(()),
                Ok(response) => Err(format!("status {}", response.status())),
                Err(error) => Err(error.to_string()),
            }
        })
        .await;
        DriverContainer {
            name,
            socket: self.node.root.join("csi/csi.sock"),
        }
    }

    /// Publishes the walkthrough's volume `v` as kubelet does for `pod`,
    /// and checks that the mount reached the host.
    async fn publish(
        &self,
        driver: &DriverContainer,
        vault: &VaultDouble,
        pod: &Pod,
        read_only: bool,
    ) -> PathBuf {
        let mut request = pod.publish(
            &self.node,
            vault,
            "v",
            &[
                ("roleName", "example"),
                ("template.index.html", INDEX_TEMPLATE),
                ("staticSecretRefreshInterval", "1s"),
            ],
        );
        request.readonly = read_only;
        let target = publish_ok(driver.node().await, request).await;
        assert_eq!(
            mounts_under(&target),
            [target.to_string_lossy()],
            "the driver's mount propagates to the host (rshared)"
        );
        target
    }

    /// Starts nginx with `target` bound at its html root, as kubelet binds
    /// a volume into a pod's container.
    async fn start_nginx(&mut self, target: &Path, read_only: bool) -> NginxContainer {
        let name = format!("{}-nginx", self.prefix);
        self.containers.push(name.clone());
        let volume = format!(
            "{}:{HTML}{}",
            target.display(),
            if read_only { ":ro" } else { "" }
        );
        docker_ok(&[
            "run", "--detach", "--name", &name, "--volume", &volume, APP_IMAGE,
        ])
        .await;
        let ip = docker_ok(&[
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &name,
        ])
        .await;
        assert!(!ip.is_empty(), "nginx's container has no IP address");
        NginxContainer {
            name,
            url: format!("http://{ip}/index.html"),
            target: target.to_path_buf(),
        }
    }
}

impl Drop for NodeBox {
    fn drop(&mut self) {
        for name in self.containers.iter().rev() {
            if std::thread::panicking()
                && let Ok(logs) = std::process::Command::new("docker")
                    .args(["logs", name])
                    .output()
            {
                eprintln!(
                    "---- logs of {name}\n{}{}",
                    String::from_utf8_lossy(&logs.stdout),
                    String::from_utf8_lossy(&logs.stderr)
                );
            }
            let _ = std::process::Command::new("docker")
                .args(["rm", "--force", "--volumes", name])
                .output();
        }
        // `node` drops next: it unmounts everything under its root (the
        // volumes' host copies, then the kubelet bind) and removes it.
    }
}

/// The optional fields (`shared:N`, `master:N`, …) of the mount at `path`
/// in this namespace's mountinfo.
fn mountinfo_optional_fields(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let path = path.to_str()?;
    info.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        (fields.get(4) == Some(&path)).then(|| {
            fields[6..]
                .iter()
                .take_while(|field| **field != "-")
                .copied()
                .collect::<Vec<_>>()
                .join(" ")
        })
    })
}

/// The `driver` container of deploy/base/daemonset.yaml: its args and its
/// literal env values, so the box runs what the DaemonSet runs.
struct DaemonSetDriver {
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// The folder of `--endpoint`'s socket (the plugin directory's mount).
    socket_dir: String,
}

impl DaemonSetDriver {
    fn read() -> Self {
        let yaml = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/base/daemonset.yaml"
        ))
        .unwrap();
        let mut lines = yaml
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'));
        lines
            .by_ref()
            .find(|line| *line == "- name: driver")
            .expect("the DaemonSet has a driver container");
        lines
            .by_ref()
            .find(|line| *line == "args:")
            .expect("the driver container has args");
        let mut args = Vec::new();
        let mut after = None;
        for line in lines.by_ref() {
            if let Some(arg) = line.strip_prefix("- ") {
                args.push(arg.to_owned());
            } else {
                after = Some(line);
                break;
            }
        }
        assert_eq!(after, Some("env:"), "the driver's env follows its args");
        let mut env = Vec::new();
        let mut name = None;
        // The env list ends at the container's next key.
        let next_keys = [
            "ports:",
            "livenessProbe:",
            "readinessProbe:",
            "securityContext:",
            "resources:",
            "volumeMounts:",
        ];
        for line in lines.take_while(|line| !next_keys.contains(line)) {
            if let Some(key) = line.strip_prefix("- name: ") {
                name = Some(key.to_owned());
            } else if let (Some(value), Some(key)) = (line.strip_prefix("value: "), name.take()) {
                env.push((key, value.to_owned()));
            }
        }
        let endpoint = args
            .iter()
            .find_map(|arg| arg.strip_prefix("--endpoint=unix://"))
            .expect("the DaemonSet sets --endpoint");
        let socket_dir = Path::new(endpoint).parent().unwrap().display().to_string();
        assert!(
            args.iter().any(|arg| arg.starts_with("--metrics-addr=")),
            "the DaemonSet sets --metrics-addr (the readiness probe's port)"
        );
        let this = Self {
            args,
            env,
            socket_dir,
        };
        for key in ["VAULT_ADDR", "STATE_DIR", "KUBELET_DIR"] {
            this.env(key);
        }
        this
    }

    fn env(&self, key: &str) -> &str {
        self.env
            .iter()
            .find_map(|(k, v)| (k == key).then_some(v.as_str()))
            .unwrap_or_else(|| panic!("the DaemonSet's driver sets {key}"))
    }
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// The driver's container; this test dials its socket from the host.
struct DriverContainer {
    name: String,
    socket: PathBuf,
}

impl DriverContainer {
    async fn node(&self) -> NodeClient<tonic::transport::Channel> {
        NodeClient::new(channel(&self.socket).await)
    }

    /// `docker stop` (SIGTERM, then the DaemonSet's 30 s grace period) and
    /// expects a clean exit.
    async fn stop(self) {
        docker_ok(&["stop", "--time", "30", &self.name]).await;
        let code = docker_ok(&["inspect", "--format", "{{.State.ExitCode}}", &self.name]).await;
        assert_eq!(code, "0", "the driver exits cleanly on SIGTERM");
    }
}

/// nginx's container, serving the volume.
struct NginxContainer {
    name: String,
    url: String,
    /// The volume's target on the host (for diagnostics).
    target: PathBuf,
}

impl NginxContainer {
    /// The page nginx serves, once it answers.
    async fn get_index(&self) -> String {
        let http = http_client();
        eventually("nginx to serve the page", PATIENCE, || async {
            match http.get(&self.url).send().await {
                Ok(response) if response.status().is_success() => {
                    response.text().await.map_err(|error| error.to_string())
                }
                Ok(response) => Err(format!("status {}", response.status())),
                Err(error) => Err(error.to_string()),
            }
        })
        .await
    }

    /// Waits until `index.html` inside the container, and the page nginx
    /// serves, are `expected`.
    async fn wait_for_index(&self, expected: &str) {
        let inside = format!("{HTML}/index.html");
        eventually(
            "the new page inside nginx's container",
            PATIENCE,
            || async {
                let out = docker(&["exec", &self.name, "cat", &inside]).await;
                let page = String::from_utf8_lossy(&out.stdout);
                if page == expected {
                    Ok(())
                } else {
                    Err(format!("{page:?}"))
                }
            },
        )
        .await;
        assert_eq!(self.get_index().await, expected);
    }

    /// Neither a new file, a symlink nor a change to the page can be made
    /// from inside the pod's container.
    async fn assert_cannot_write(&self) {
        let new_file = format!("{HTML}/written-by-the-pod");
        let page = format!("{HTML}/index.html");
        let link = format!("{HTML}/link-by-the-pod");
        for command in [
            vec!["touch", new_file.as_str()],
            vec!["touch", page.as_str()],
            vec!["ln", "-s", "/etc/passwd", link.as_str()],
        ] {
            let mut args = vec!["exec", self.name.as_str()];
            args.extend(&command);
            let out = docker(&args).await;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() && stderr.contains("Read-only file system"),
                "`{}` inside the pod's container must fail with EROFS, got {} {stderr:?} \
                 (the host's mount of the volume has options {:?})",
                command.join(" "),
                out.status,
                support::mount_options(&self.target)
            );
        }
    }

    /// The pod goes away.
    async fn remove(self) {
        docker_ok(&["rm", "--force", &self.name]).await;
    }
}
