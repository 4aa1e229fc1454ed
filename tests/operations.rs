//! Operating the driver: health during start-up, restarts with changed
//! flags (an upgrade that edits `VAULT_ADDR` or `ALLOWED_VAULT_ADDRS`), and
//! flag values refused at start.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{
    DriverProcess, Harness, INDEX_TEMPLATE, Node, expected_index, free_port, wait_for,
    walkthrough_vault,
};

const ROLE: (&str, &str) = ("roleName", "example");

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.unwrap_or_default()))
}

/// The record of `id`, rewritten by `edit`.
fn edit_record(node: &Node, id: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = node.state_dir().join("volumes").join(format!("{id}.json"));
    let mut record: serde_json::Value = serde_json::from_str(&read(&path)).unwrap();
    edit(&mut record);
    std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
}

/// A driver restarting with a volume left unfinished, whose Vault answers
/// slowly, answers `/healthz` (and `/readyz` with 503 `starting`) while
/// restore is still revoking that volume's token, and becomes ready after.
#[tokio::test]
async fn health_answers_while_restore_revokes_against_a_slow_vault() {
    let mut h = Harness::builder().spawn(&[]).await;
    let request = h.request("v", &[ROLE, ("template.index.html", INDEX_TEMPLATE)]);
    let id = request.volume_id.clone();
    h.send_ok(request).await;
    h.driver.kill9();
    // As if the driver had died mid-publish: restore undoes the volume and
    // revokes its token, which this Vault takes 4 s to answer.
    edit_record(&h.node, &id, |record| record["phase"] = "publishing".into());
    h.vault.set_latency(Duration::ZERO, Duration::from_secs(4));

    let port = free_port();
    let metrics = format!("--metrics-addr=127.0.0.1:{port}");
    h.respawn("driver-2.log", &[&metrics]).await;
    let (driver, vault) = (&h.driver, &h.vault);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no answer from /healthz during restore; log: {}",
            driver.logs()
        );
        let restoring = vault.count("POST", "/v1/auth/token/revoke-self") == 1
            && !driver.logs().contains("vault-csi-driver started");
        if restoring && let Some((200, body)) = get(port, "/healthz").await {
            assert_eq!(body.trim(), "ok");
            let ready = get(port, "/readyz").await;
            // Restore may have finished between the two calls.
            if !driver.logs().contains("vault-csi-driver started") {
                let (status, body) = ready.expect("/readyz answers");
                assert_eq!((status, body.trim()), (503, "starting"));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    vault.set_latency(Duration::ZERO, Duration::ZERO);
    wait_for("readiness after restore", Duration::from_secs(20), || {
        driver.logs().contains("vault-csi-driver started")
    })
    .await;
    assert_eq!(get(port, "/readyz").await.map(|r| r.0), Some(200));
    assert!(h.node.volumes().is_empty(), "{:?}", h.node.volumes());
    let _ = h.driver.terminate().await;
}

async fn second_vault() -> vault_double::VaultDouble {
    let vault = walkthrough_vault().await;
    vault.kv2_put(
        "secret",
        "myapp/config",
        serde_json::json!({"username": "appuser", "password": "from-the-new-vault"}),
    );
    vault
}

/// Publishes the walkthrough page with a 1 s KV refresh through a driver
/// whose `--vault-addr` is the walkthrough's Vault (the old one), then
/// kills it: the harness and the target.
async fn publish_then_kill() -> (Harness<DriverProcess>, PathBuf) {
    let mut h = Harness::builder().spawn(&[]).await;
    let target = h
        .publish_ok(&[
            ROLE,
            ("template.index.html", INDEX_TEMPLATE),
            ("staticSecretRefreshInterval", "1s"),
        ])
        .await;
    h.driver.kill9();
    (h, target)
}

/// An upgrade that changes `VAULT_ADDR` but keeps the old address allowed:
/// the restarted driver keeps the published volume on the Vault it was
/// published with (its token lives there), refreshes it from there, and
/// revokes it there at unpublish; the new default Vault sees nothing of it.
#[tokio::test]
async fn a_new_vault_addr_keeps_published_volumes_on_their_own_vault() {
    let (mut h, target) = publish_then_kill().await;
    let new = second_vault().await;
    let old = &h.vault;

    // The upgraded driver: its --vault-addr is now the new Vault.
    let allowed = format!("--allowed-vault-addrs={}", old.addr());
    h.driver = DriverProcess::spawn(&h.node, &new, "driver-new.log", &[&allowed]).await;
    old.kv2_put(
        "secret",
        "myapp/config",
        serde_json::json!({"username": "appuser", "password": "still-the-old-vault"}),
    );
    wait_for(
        "the volume to refresh from the Vault it was published with",
        Duration::from_secs(15),
        || read(&target.join("index.html")) == expected_index("appuser", "still-the-old-vault"),
    )
    .await;
    h.unpublish_ok("v").await;
    assert_eq!(old.count("POST", "/v1/auth/token/revoke-self"), 1);
    assert!(
        new.requests().is_empty(),
        "the new default Vault got {:?}",
        new.requests()
            .iter()
            .map(|r| r.path.clone())
            .collect::<Vec<_>>()
    );
    let _ = h.driver.terminate().await;
}

/// An upgrade that drops the address a volume was published with: the
/// restarted driver sends nothing there (not even the revocation), says so
/// in its log, sends the volume's token nowhere else, leaves the pod's
/// files in place, and still unmounts the volume at unpublish.
#[tokio::test]
async fn a_vault_addr_no_longer_allowed_is_left_alone_and_logged() {
    let (mut h, target) = publish_then_kill().await;
    let new = second_vault().await;
    let old = &h.vault;
    let requests_before = old.requests().len();

    // The upgraded driver: its --vault-addr is now the new Vault.
    h.driver = DriverProcess::spawn(&h.node, &new, "driver-new.log", &[]).await;
    let driver = &h.driver;
    wait_for(
        "the log line naming the address",
        Duration::from_secs(10),
        || driver.logs().contains("no longer allow"),
    )
    .await;
    assert!(driver.logs().contains(&old.addr()), "{}", driver.logs());
    assert_eq!(
        read(&target.join("index.html")),
        expected_index("appuser", "suP3rsec(et!"),
        "the pod keeps its files"
    );
    h.unpublish_ok("v").await;
    assert_eq!(
        old.requests().len(),
        requests_before,
        "nothing went to the old Vault"
    );
    assert!(new.requests().is_empty(), "the old token went nowhere else");
    assert!(h.node.volumes().is_empty(), "{:?}", h.node.volumes());
    let _ = h.driver.terminate().await;
}

/// With `--metrics-per-volume`, a volume the driver refreshes has both
/// gauges; a `refresh: "false"` volume, whose token nothing renews, has
/// neither, so an alert on expiry never fires for what nobody will act on.
/// And every metric `deploy/monitoring/rules.yaml` reads is exported.
#[tokio::test]
async fn per_volume_gauges_cover_only_volumes_the_driver_refreshes() {
    let port = free_port();
    let metrics = format!("--metrics-addr=127.0.0.1:{port}");
    let mut h = Harness::builder()
        .spawn(&[&metrics, "--metrics-per-volume"])
        .await;
    let page = ("template.index.html", INDEX_TEMPLATE);
    let refreshed = h.request("refreshed", &[ROLE, page]);
    let once = h.request("once", &[ROLE, page, ("refresh", "false")]);
    let (refreshed_id, once_id) = (refreshed.volume_id.clone(), once.volume_id.clone());
    h.send_ok(refreshed).await;
    h.send_ok(once).await;

    let (status, text) = get(port, "/metrics").await.expect("/metrics answers");
    assert_eq!(status, 200);
    let series = |family: &str, id: &str| {
        text.lines()
            .any(|line| line.starts_with(family) && line.contains(&format!("volume_id=\"{id}\"")))
    };
    for family in [
        "vault_csi_volume_lease_expiry_timestamp_seconds",
        "vault_csi_volume_next_refresh_timestamp_seconds",
    ] {
        assert!(series(family, &refreshed_id), "{family} missing:\n{text}");
        assert!(
            !series(family, &once_id),
            "{family} for refresh=false:\n{text}"
        );
    }
    // Every metric the shipped alerting rules read is one the driver
    // exports (a renamed metric would silence its alert for ever).
    let rules = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/monitoring/rules.yaml"));
    let mut names: Vec<&str> = rules
        .match_indices("vault_csi_")
        .map(|(at, _)| {
            let rest = &rules[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(names.len() >= 6, "{names:?}");
    for name in names {
        let family = name.strip_suffix("_total").unwrap_or(name);
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "rules.yaml reads {name}, which /metrics does not export:\n{text}"
        );
    }
    h.unpublish_ok("refreshed").await;
    h.unpublish_ok("once").await;
    let _ = h.driver.terminate().await;
}

/// Runs the binary with `args` and `env` (for the child only) against a
/// scratch node, its output in `log`.
fn driver_command(
    node: &Node,
    log: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Child {
    let out = std::fs::File::create(log).unwrap();
    let err = out.try_clone().unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_vault-csi-driver"))
        .arg(format!("--endpoint=unix://{}", node.socket().display()))
        .arg("--node-id=test-node")
        .arg("--vault-addr=http://127.0.0.1:1")
        .arg(format!("--state-dir={}", node.state_dir().display()))
        .arg(format!("--kubelet-dir={}", node.kubelet_dir().display()))
        .args(args)
        .env_remove("INSECURE_PLAIN_DIRECTORIES")
        .env_remove("STATIC_SECRET_REFRESH_INTERVAL")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap()
}

/// `--static-secret-refresh-interval` below the attribute's 1 s minimum
/// (0 would re-read KV secrets in a loop) stops the driver at start with a
/// message naming the flag.
#[tokio::test]
async fn a_static_refresh_interval_under_a_second_is_refused_at_start() {
    let node = Node::new();
    for value in ["0", "500ms"] {
        let log = node.root.join(format!("driver-{value}.log"));
        let mut child = driver_command(
            &node,
            &log,
            &[&format!("--static-secret-refresh-interval={value}")],
            &[],
        );
        let mut status = None;
        wait_for("the driver to exit", Duration::from_secs(20), || {
            status = child.try_wait().unwrap();
            status.is_some()
        })
        .await;
        assert!(!status.unwrap().success());
        let text = read(&log);
        assert!(
            text.contains("--static-secret-refresh-interval") && text.contains("at least 1s"),
            "{text}"
        );
    }
}

/// Boolean variables take 1/0 (and yes/no) as well as true/false, as
/// operators write them in a DaemonSet's env.
#[tokio::test]
async fn boolean_variables_take_one_and_zero() {
    let node = Node::new();
    let log = node.root.join("driver.log");
    let mut child = driver_command(
        &node,
        &log,
        &[],
        &[
            ("INSECURE_PLAIN_DIRECTORIES", "1"),
            ("METRICS_PER_VOLUME", "0"),
        ],
    );
    wait_for("the driver to start", Duration::from_secs(20), || {
        read(&log).contains("vault-csi-driver started") || child.try_wait().unwrap().is_some()
    })
    .await;
    let text = read(&log);
    assert!(
        text.contains("--insecure-plain-directories: volumes are plain directories"),
        "{text}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// A real Prometheus (Debian's `prometheus` package) scrapes the driver
/// with the shipped rules loaded: it parses `/metrics`, sees the volume,
/// and evaluates every rule without an error. Skipped when no `prometheus`
/// binary is installed, unless `CI=true`.
#[tokio::test]
async fn a_real_prometheus_scrapes_the_driver_and_evaluates_the_rules() {
    let Some(prometheus) = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
    else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but no prometheus binary (apt-get install prometheus)"
        );
        eprintln!("skipping: no prometheus binary");
        return;
    };
    let port = free_port();
    let metrics = format!("--metrics-addr=127.0.0.1:{port}");
    let mut h = Harness::builder()
        .spawn(&[&metrics, "--metrics-per-volume"])
        .await;
    h.publish_ok(&[ROLE, ("template.index.html", INDEX_TEMPLATE)])
        .await;
    let node = &h.node;

    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/monitoring/rules.yaml");
    let config = node.root.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: vault-csi-driver\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n",
            rules.display()
        ),
    )
    .unwrap();
    let web = free_port();
    let log = node.root.join("prometheus.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut server = std::process::Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            node.root.join("prometheus-data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{web}"))
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();

    let api = |path: String| async move {
        let (status, body) = get(web, &path).await?;
        (status == 200).then_some(())?;
        serde_json::from_str::<serde_json::Value>(&body).ok()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (mut scraped, mut evaluated) = (false, false);
    while !(scraped && evaluated) {
        assert!(
            tokio::time::Instant::now() < deadline && server.try_wait().unwrap().is_none(),
            "Prometheus did not scrape the driver and evaluate the rules (scraped {scraped}, evaluated {evaluated}); its log:\n{}",
            read(&log)
        );
        if let Some(answer) = api("/api/v1/query?query=vault_csi_volumes".to_owned()).await {
            scraped = answer["data"]["result"][0]["value"][1] == "1";
        }
        if let Some(answer) = api("/api/v1/rules".to_owned()).await {
            let rules: Vec<&serde_json::Value> = answer["data"]["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .collect();
            for rule in &rules {
                assert_ne!(rule["health"], "err", "{rule}");
            }
            evaluated = rules.len() >= 6 && rules.iter().all(|r| r["health"] == "ok");
            // Nothing is wrong with this node: no alert is pending or firing.
            if evaluated {
                for rule in &rules {
                    assert_eq!(rule["state"], "inactive", "{rule}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = server.kill();
    let _ = server.wait();
    h.unpublish_ok("v").await;
    let _ = h.driver.terminate().await;
}
