//! The driver as a process: kill -9 and restart, SIGTERM drain, metrics
//! during a publish/refresh/unpublish cycle, and secret hygiene in logs and
//! metrics at the most verbose level.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::{
    CREDS_TEMPLATE, Harness, INDEX_TEMPLATE, dynamic_vault, expected_index, free_port, wait_for,
};
use vault_double::DynamicRole;

const ROLE: (&str, &str) = ("roleName", "example");

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn test_vault_creds() -> DynamicRole {
    DynamicRole::new(Duration::from_secs(3), Duration::from_secs(600))
}

/// `kill -9` and a restart: every published volume is found again and
/// refreshed on schedule without kubelet republishing; the mount and files
/// survive; a republish after the restart is a normal republish.
#[tokio::test]
async fn kill_9_and_restart_resumes_every_volume() {
    let mut h = Harness::builder()
        .vault(
            dynamic_vault(
                test_vault_creds(),
                Duration::from_secs(3600),
                Duration::from_secs(7200),
            )
            .await,
        )
        .spawn(&[])
        .await;
    let kv = [
        ROLE,
        ("template.index.html", INDEX_TEMPLATE),
        ("staticSecretRefreshInterval", "1s"),
    ];
    let dynamic = [ROLE, ("template.creds", CREDS_TEMPLATE)];
    let kv_target = h.send_ok(h.request("kv", &kv)).await;
    let db_target = h.send_ok(h.request("db", &dynamic)).await;
    let creds = read(&db_target.join("creds"));
    let lease_id = h.vault.leases()[0].lease_id.clone();

    h.driver.kill9();
    assert_eq!(
        read(&kv_target.join("index.html")),
        expected_index("appuser", "suP3rsec(et!"),
        "files survive the crash"
    );
    let state_dir = h.node.state_dir();
    let meta = std::fs::metadata(&state_dir).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o700
    );
    for entry in std::fs::read_dir(state_dir.join("volumes")).unwrap() {
        let path = entry.unwrap().path();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        // The record holds what the volume was rendered from (Vault's
        // answers), so a restart re-renders without asking again: 0600, in
        // the 0700 tmpfs state directory.
        assert!(read(&path).contains("\"answer\""), "{}", path.display());
    }

    let renewals_before = h.vault.lease(&lease_id).unwrap().renew_count;
    h.vault.kv2_put(
        "secret",
        "myapp/config",
        serde_json::json!({"username": "appuser", "password": "after-restart"}),
    );
    h.respawn("driver-2.log", &[]).await;
    wait_for(
        "the KV change without a republish",
        Duration::from_secs(10),
        || read(&kv_target.join("index.html")) == expected_index("appuser", "after-restart"),
    )
    .await;
    wait_for("lease renewals to resume", Duration::from_secs(10), || {
        h.vault
            .lease(&lease_id)
            .is_some_and(|l| l.renew_count > renewals_before)
    })
    .await;
    assert_eq!(
        h.vault.count("POST", "/v1/auth/kubernetes/login"),
        2,
        "the persisted Vault tokens were reused"
    );
    assert_eq!(
        read(&db_target.join("creds")),
        creds,
        "the credential survives the restart: nothing was re-issued"
    );

    h.send_ok(h.request("kv", &kv)).await;
    h.unpublish_ok("kv").await;
    h.unpublish_ok("db").await;
    assert!(h.vault.lease(&lease_id).unwrap().revoked);
    assert!(h.node.volumes().is_empty(), "{:?}", h.node.volumes());
    assert!(
        std::fs::read_dir(h.node.state_dir().join("volumes"))
            .unwrap()
            .next()
            .is_none()
    );
    let _ = h.driver.terminate().await;
}

/// SIGTERM with volumes published: a clean exit, the mounts and files stay
/// for the pods, and the next driver carries on.
#[tokio::test]
async fn sigterm_drains_and_leaves_volumes_in_place() {
    let mut h = Harness::builder()
        .vault(
            dynamic_vault(
                test_vault_creds(),
                Duration::from_secs(3600),
                Duration::from_secs(7200),
            )
            .await,
        )
        .spawn(&[])
        .await;
    let target = h
        .publish_ok(&[
            ROLE,
            ("template.index.html", INDEX_TEMPLATE),
            ("staticSecretRefreshInterval", "1s"),
        ])
        .await;
    let status = h.driver.terminate().await;
    assert!(status.success(), "exit status {status:?}");
    assert!(
        !h.node.socket().exists(),
        "the socket is removed on a clean exit"
    );
    assert_eq!(h.node.volumes().len(), 1, "the volume stays mounted");
    assert_eq!(
        read(&target.join("index.html")),
        expected_index("appuser", "suP3rsec(et!")
    );
    assert_eq!(
        h.vault.count("POST", "/v1/auth/token/revoke-self"),
        0,
        "shutdown revokes nothing"
    );

    h.vault.kv2_put(
        "secret",
        "myapp/config",
        serde_json::json!({"username": "appuser", "password": "next-driver"}),
    );
    h.respawn("driver-2.log", &[]).await;
    wait_for(
        "the restarted driver to refresh",
        Duration::from_secs(10),
        || read(&target.join("index.html")) == expected_index("appuser", "next-driver"),
    )
    .await;
    h.unpublish_ok("v").await;
    assert!(h.driver.terminate().await.success());
}

async fn scrape(port: u16, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The one publish's steps were each recorded once and add up to no more
/// than the whole call.
fn assert_publish_steps(text: &str) {
    let mut steps_total = 0.0;
    for step in ["checks", "vault", "mount", "write", "record"] {
        let series =
            format!("vault_csi_node_publish_step_duration_seconds_count{{step=\"{step}\"}}");
        assert_eq!(metric(text, &series), Some(1.0), "{series} in {text}");
        steps_total += metric(
            text,
            &format!("vault_csi_node_publish_step_duration_seconds_sum{{step=\"{step}\"}}"),
        )
        .unwrap();
    }
    let publish_total = metric(text, "vault_csi_node_publish_duration_seconds_sum").unwrap();
    assert!(
        steps_total > 0.0 && steps_total <= publish_total,
        "steps {steps_total} s vs the whole publish {publish_total} s"
    );
}

/// None of `secrets` (what, value) in the logs or any metrics page.
fn assert_no_leak(logs: &str, pages: &[&str], secrets: &[(&str, &str)]) {
    for &(what, secret) in secrets {
        assert!(secret.len() > 8, "{what} is a real value");
        let leaks: Vec<String> = logs
            .lines()
            .filter(|l| l.contains(secret))
            .map(|l| l.replace(secret, "<SECRET>").chars().take(400).collect())
            .collect();
        assert!(
            leaks.is_empty(),
            "the {what} leaked into the logs: {leaks:#?}"
        );
        assert!(
            pages.iter().all(|page| !page.contains(secret)),
            "the {what} leaked into the metrics"
        );
    }
}

/// The per-volume gauges of the cycle's volume: its soonest expiry is the
/// 4 s lease, and its next refresh comes before it.
fn assert_volume_gauges(text: &str, volume_id: &str) {
    let labels =
        format!("{{pod_namespace=\"default\",pod_name=\"nginx\",volume_id=\"{volume_id}\"}}");
    let now = SystemTimeSecs::now();
    let expiry = metric(
        text,
        &format!("vault_csi_volume_lease_expiry_timestamp_seconds{labels}"),
    )
    .expect("expiry gauge");
    let next = metric(
        text,
        &format!("vault_csi_volume_next_refresh_timestamp_seconds{labels}"),
    )
    .expect("next refresh gauge");
    assert!(
        expiry > now && expiry < now + 10.0,
        "the soonest expiry is the 4s lease: {expiry} vs {now}"
    );
    assert!(
        next > now - 1.0 && next <= expiry,
        "the next refresh comes before the expiry: {next} vs {expiry}"
    );
}

/// The metrics endpoint shows every family with correct values during a
/// publish/refresh/unpublish cycle, and no secret, token or JWT, while the
/// driver logs at the most verbose level without leaking one either.
#[tokio::test]
async fn metrics_and_logs_show_the_cycle_and_never_a_secret() {
    let port = free_port();
    let mut h = Harness::builder()
        .vault(
            dynamic_vault(
                test_vault_creds(),
                Duration::from_secs(4),
                Duration::from_secs(600),
            )
            .await,
        )
        .spawn(&[
            &format!("--metrics-addr=127.0.0.1:{port}"),
            "--metrics-per-volume",
            "--log-level=trace",
            "--log-format=json",
        ])
        .await;
    assert_eq!(scrape(port, "/healthz").await.0, 200);
    wait_for("readiness", Duration::from_secs(5), || true).await;
    assert_eq!(scrape(port, "/readyz").await, (200, "ready".to_owned()));

    let attrs = [
        ROLE,
        ("template.index.html", INDEX_TEMPLATE),
        ("template.creds", CREDS_TEMPLATE),
        ("tokenFile", "token"),
    ];
    let request = h.request("v", &attrs);
    let jwt_json = request.volume_context["csi.storage.k8s.io/serviceAccount.tokens"].clone();
    let jwt: serde_json::Value = serde_json::from_str(&jwt_json).unwrap();
    let jwt = jwt["vault"]["token"].as_str().unwrap().to_owned();
    let target = PathBuf::from(&request.target_path);
    h.send_ok(request).await;
    let volume_id = h.pod.volume_id("v");

    wait_for("a lease renewal", Duration::from_secs(10), || {
        h.vault.count("PUT", "/v1/sys/leases/renew") >= 1
    })
    .await;
    let (_, text) = scrape(port, "/metrics").await;
    assert_eq!(
        metric(&text, "vault_csi_node_publish_total{result=\"published\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(metric(&text, "vault_csi_volumes "), Some(1.0));
    assert!(metric(&text, "vault_csi_node_publish_duration_seconds_count").unwrap() >= 1.0);
    assert_publish_steps(&text);
    assert!(
        metric(
            &text,
            "vault_csi_refresh_total{kind=\"renew_lease\",result=\"ok\"}"
        )
        .unwrap()
            >= 1.0,
        "{text}"
    );
    assert!(text.contains("vault_csi_vault_request_duration_seconds_count{operation=\"login\",status_class=\"2xx\"} 1"), "{text}");
    assert!(text.contains("operation=\"read\""));
    assert_volume_gauges(&text, &volume_id);

    let token = read(&target.join("token"));
    let creds = read(&target.join("creds"));
    let password = creds.split(" pass=").nth(1).unwrap().to_owned();
    h.unpublish_ok("v").await;
    let (_, after) = scrape(port, "/metrics").await;
    assert_eq!(metric(&after, "vault_csi_volumes "), Some(0.0));
    assert_eq!(
        metric(&after, "vault_csi_node_unpublish_total{result=\"ok\"}"),
        Some(1.0)
    );
    assert!(
        !after.contains(&volume_id),
        "per-volume series are removed on unpublish"
    );

    let status = h.driver.terminate().await;
    assert!(status.success());
    let logs = std::fs::read_to_string(h.node.root.join("driver.log")).unwrap();
    assert!(
        logs.contains("NodePublishVolume") && logs.contains(&volume_id),
        "one line per call with the volume id"
    );
    assert!(
        logs.contains("\"level\":\"TRACE\"") || logs.contains("\"level\":\"DEBUG\""),
        "verbose logging was on"
    );
    let secrets = [
        ("service-account JWT", jwt.as_str()),
        ("Vault token", token.as_str()),
        ("KV password", "suP3rsec(et!"),
        ("dynamic password", password.as_str()),
    ];
    assert_no_leak(&logs, &[&text, &after], &secrets);
    assert!(!logs.contains("eyJ"), "nothing JWT-shaped is logged");
    assert!(!logs.contains("hvs."), "nothing token-shaped is logged");
}

struct SystemTimeSecs;

impl SystemTimeSecs {
    fn now() -> f64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    }
}

/// The one JSON log line whose `message` is `message` and whose
/// `volume.id` is `volume_id`, from a driver logging with
/// `--log-format=json`.
fn call_line(logs: &str, message: &str, volume_id: &str) -> serde_json::Value {
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["message"] == message && line["volume.id"] == volume_id)
        .collect();
    assert_eq!(lines.len(), 1, "one {message} line for {volume_id}: {logs}");
    lines.into_iter().next().unwrap()
}

/// Asserts the fields every publish and unpublish line carries.
fn assert_call_fields(line: &serde_json::Value) {
    assert_eq!(line["pod.namespace"], "default", "{line}");
    assert_eq!(line["pod.name"], "nginx", "{line}");
    assert!(line["elapsed_ms"].is_u64(), "{line}");
}

/// Each NodePublishVolume and NodeUnpublishVolume is logged once with the
/// volume id, the pod's namespace and name and the time it took. Kubelet's
/// unpublish names no pod: the line takes it from the volume's publish,
/// and after a restart from the republish kubelet sends every minute.
#[tokio::test]
async fn every_publish_and_unpublish_is_logged_with_its_pod_and_time() {
    let mut h = Harness::builder().spawn(&["--log-format=json"]).await;
    let attrs = [ROLE, ("template.index.html", INDEX_TEMPLATE)];
    h.send_ok(h.request("a", &attrs)).await;
    h.send_ok(h.request("b", &attrs)).await;
    h.unpublish_ok("a").await;
    let logs = h.driver.logs();
    let a = h.pod.volume_id("a");
    assert_call_fields(&call_line(&logs, "NodePublishVolume", &a));
    assert_call_fields(&call_line(&logs, "NodeUnpublishVolume", &a));

    // A restart: the pod of `b` is known again from kubelet's republish.
    h.respawn("driver-2.log", &["--log-format=json"]).await;
    h.send_ok(h.request("b", &attrs)).await;
    h.unpublish_ok("b").await;
    let logs = h.driver.logs();
    let b = h.pod.volume_id("b");
    let republish = call_line(&logs, "NodePublishVolume", &b);
    assert_eq!(republish["outcome"], "republished", "{republish}");
    assert_call_fields(&call_line(&logs, "NodeUnpublishVolume", &b));
}
