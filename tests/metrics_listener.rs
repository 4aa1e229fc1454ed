//! The metrics listener under clients that hold connections: the driver's
//! open files stay bounded and the probes still answer; half-sent and idle
//! connections are closed; the per-volume series (pod names) are off by
//! default; the open-file limit is raised at start-up.

mod support;

use std::path::Path;
use std::time::Duration;

use support::{DriverProcess, Harness, Node, free_port, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Time a request on a fresh connection may take before the test calls
/// the listener hung.
const PROMPT: Duration = Duration::from_secs(5);

/// One GET on a fresh connection (`Connection: close`): status and body,
/// or why it failed within [`PROMPT`].
async fn get(port: u16, path: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no status line in {text:?}"))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    };
    tokio::time::timeout(PROMPT, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {PROMPT:?}")))
}

/// The number of files `pid` has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// The soft and hard "Max open files" of `pid`.
fn nofile_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_owned();
    let mut fields = line["Max open files".len()..].split_whitespace();
    (
        fields.next().unwrap().to_owned(),
        fields.next().unwrap().to_owned(),
    )
}

/// Starts the driver binary with its metrics listener on a free port.
async fn driver_with_listener(args: &[&str]) -> (Harness<DriverProcess>, u16) {
    let port = free_port();
    let addr = format!("--metrics-addr=127.0.0.1:{port}");
    let mut all = vec![addr.as_str()];
    all.extend_from_slice(args);
    let h = Harness::builder().spawn(&all).await;
    let mut ready = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !ready && tokio::time::Instant::now() < deadline {
        ready = get(port, "/readyz").await == Ok((200, "ready".to_owned()));
        if !ready {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(ready, "the driver never became ready: {}", h.driver.logs());
    (h, port)
}

/// Waits until the server closes `stream` (EOF or reset), or fails after
/// `within`, the bound that stands for "never".
async fn assert_closed_by_server(stream: &mut TcpStream, within: Duration, what: &str) {
    let mut buf = [0_u8; 4096];
    let closed = tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "{what}: the server still held the connection after {within:?}"
    );
}

/// More connections than the cap, sending nothing or half a request head
/// and held open, with the driver's open-file limit lowered to 128 (what
/// containerd's 1024 is to a real attacker's thousands): the driver keeps
/// at most the cap of them, and `/readyz` and `/metrics` on fresh
/// connections still answer promptly.
#[tokio::test]
async fn held_connections_past_the_cap_cost_nothing_and_probes_still_answer() {
    const CAP: usize = 16;
    const HELD: usize = 200;
    let (h, port) = driver_with_listener(&[
        &format!("--metrics-max-connections={CAP}"),
        // Long, so that only the cap frees anything during the test.
        "--metrics-header-timeout=10m",
        "--metrics-idle-timeout=10m",
    ])
    .await;
    let pid = h.driver.child.id();
    let lowered = std::process::Command::new("prlimit")
        .args([format!("--pid={pid}"), "--nofile=128:128".to_owned()])
        .status()
        .expect("prlimit (util-linux) runs");
    assert!(lowered.success(), "prlimit could not lower the limit");
    let baseline = open_fds(pid);

    let mut held = Vec::with_capacity(HELD);
    for i in 0..HELD {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        if i % 2 == 1 {
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: loc")
                .await
                .unwrap();
        }
        held.push(stream);
    }

    // The listener accepts in order, so once this is answered every held
    // connection has been accepted (and all but the cap closed).
    assert_eq!(
        get(port, "/readyz").await,
        Ok((200, "ready".to_owned())),
        "/readyz on a fresh connection while {HELD} are held"
    );
    let during = open_fds(pid);
    assert!(
        during <= baseline + CAP + 2,
        "the driver holds {during} files with {HELD} connections held open (baseline {baseline}, cap {CAP})"
    );
    let (status, metrics) = get(port, "/metrics")
        .await
        .expect("/metrics on a fresh connection while connections are held");
    assert_eq!(status, 200);
    assert!(metrics.contains("vault_csi_volumes "), "{metrics}");
    assert!(
        metrics
            .contains("vault_csi_metrics_listener_dropped_connections_total{reason=\"evicted\"}"),
        "{metrics}"
    );
    for _ in 0..3 {
        assert_eq!(get(port, "/healthz").await, Ok((200, "ok".to_owned())));
    }
    assert!(open_fds(pid) <= baseline + CAP + 2);
    drop(held);
}

/// A connection that sends half a request head, or nothing, is closed
/// after the header timeout; a kept-alive connection after the idle
/// timeout.
#[tokio::test]
async fn half_sent_and_idle_connections_are_closed_by_their_timeouts() {
    let (h, port) =
        driver_with_listener(&["--metrics-header-timeout=1s", "--metrics-idle-timeout=1s"]).await;
    let bound = Duration::from_secs(15);

    let mut half = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    half.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAcc")
        .await
        .unwrap();
    let mut silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert_closed_by_server(&mut half, bound, "half a request head").await;
    assert_closed_by_server(&mut silent, bound, "a connection that sent nothing").await;

    let mut kept = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let mut buf = [0_u8; 1024];
    while !String::from_utf8_lossy(&response).ends_with("\r\n\r\nok") {
        let n = tokio::time::timeout(PROMPT, kept.read(&mut buf))
            .await
            .expect("the kept-alive request is answered")
            .unwrap();
        assert!(n > 0, "closed before answering");
        response.extend_from_slice(&buf[..n]);
    }
    assert_closed_by_server(&mut kept, bound, "an idle kept-alive connection").await;

    let logs = h.driver.logs();
    let (status, metrics) = get(port, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    let timeouts = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                "vault_csi_metrics_listener_dropped_connections_total{reason=\"timeout\"}",
            )
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert!(
        timeouts >= Some(3.0),
        "three connections timed out: {metrics}\n{logs}"
    );
}

/// By default `/metrics` names no pod and no volume, even with a volume
/// published.
#[tokio::test]
async fn per_volume_series_are_off_by_default() {
    let port = free_port();
    let h = Harness::builder()
        .config(move |config| {
            config.metrics_addr = Some(format!("127.0.0.1:{port}").parse().unwrap());
        })
        .start()
        .await;
    h.publish_ok(&[
        ("roleName", "example"),
        ("template.index.html", support::INDEX_TEMPLATE),
    ])
    .await;
    let (status, metrics) = get(port, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("vault_csi_volumes 1"), "{metrics}");
    let volume_id = h.pod.volume_id("v");
    for revealing in [
        "nginx",
        // Label names appear in help texts; label values must not.
        "pod_name=\"",
        "pod_namespace=\"",
        volume_id.as_str(),
        "vault_csi_volume_lease_expiry_timestamp_seconds",
        "vault_csi_volume_next_refresh_timestamp_seconds",
    ] {
        assert!(
            !metrics.contains(revealing),
            "/metrics shows {revealing:?} without --metrics-per-volume:\n{metrics}"
        );
    }
    h.stop().await;
}

/// The driver raises its soft open-file limit to the hard limit at
/// start-up (runtimes start it at 1024).
#[tokio::test]
async fn the_open_file_limit_is_raised_to_the_hard_limit() {
    let node = Node::new();
    let socket = node.socket();
    let mut child = std::process::Command::new("prlimit")
        .arg("--nofile=256:4096")
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_vault-csi-driver"))
        .arg(format!("--endpoint=unix://{}", socket.display()))
        .arg("--node-id=test-node")
        .arg(format!("--state-dir={}", node.state_dir().display()))
        .arg(format!("--kubelet-dir={}", node.kubelet_dir().display()))
        .env_remove("VAULT_ADDR")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prlimit (util-linux) runs");
    let probe = socket.clone();
    wait_for("the driver's socket", Duration::from_secs(10), || {
        Path::new(&probe).exists()
    })
    .await;
    let limits = nofile_limits(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(limits, ("4096".to_owned(), "4096".to_owned()));
}
