//! The driver against a real OpenBao (`bao server -dev`), its Kubernetes
//! auth reviewing tokens through a TokenReview stand-in, the database
//! engine issuing real PostgreSQL roles, PKI, namespaces, quotas, seals and
//! operator revocations. What the driver sent is counted from the server's
//! own audit log, never from the driver.
//!
//! Without `bao` (or PostgreSQL, for the database tests) each test says so
//! and skips; with `CI=true` it fails instead.

mod support;

#[path = "openbao/withheld.rs"]
mod withheld;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::json;
use support::openbao::{AuditLog, OpenBao, PASSWORD, wait_for_audit};
use support::postgres::Postgres;
use support::{CREDS_TEMPLATE, Harness, INDEX_TEMPLATE, expected_index, wait_for};
use tonic::Code;

const ROLE: (&str, &str) = ("roleName", "example");
const KV: &str = "secret/data/myapp/config";
/// Where the driver asks which mount `KV` lies on (once per mount).
const MOUNT_OF_KV: &str = "sys/internal/ui/mounts/secret/data/myapp/config";
const CREDS: &str = "database/creds/app";
const HOUR: Duration = Duration::from_secs(3600);

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `user=<u> pass=<p>` from [`CREDS_TEMPLATE`].
fn credential(content: &str) -> Option<(String, String)> {
    let rest = content.strip_prefix("user=")?;
    let (user, pass) = rest.split_once(" pass=")?;
    Some((user.to_owned(), pass.to_owned()))
}

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

/// The walkthrough's ConfigMap and Pod converted by `convert`: the CSI
/// volume's attributes.
fn converted_walkthrough() -> Vec<(String, String)> {
    use vault_csi_driver::convert::{self, Options};
    let mut docs = Vec::new();
    for f in [
        "walkthrough/configmap.yaml",
        "walkthrough/example-k8s-spec.yaml",
    ] {
        let text = std::fs::read_to_string(fixture(f)).unwrap();
        docs.extend(convert::parse_yaml(&text, f).unwrap());
    }
    let options = Options::parse(&[
        "--vault-addr".to_owned(),
        "http://EXTERNAL_VAULT_ADDR:8200".to_owned(),
    ])
    .unwrap();
    let (out, _) = convert::convert_documents(docs, &options, &convert::DriverChecks).unwrap();
    let docs = convert::parse_yaml(&out, "output").unwrap();
    let pod = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("Pod"))
        .unwrap();
    let volume = pod["spec"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v.get("csi").is_some())
        .unwrap();
    volume["csi"]["volumeAttributes"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_owned(),
                v.as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The walkthrough's agent configuration (from its ConfigMap), with the
/// paths that were the pod's moved into `dir`, the service-account token
/// read from `dir/token`: otherwise byte for byte what the pod ran.
fn walkthrough_agent_config(dir: &Path) -> String {
    let text = std::fs::read_to_string(fixture("walkthrough/configmap.yaml")).unwrap();
    let map: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    let hcl = map["data"]["vault-agent-config.hcl"].as_str().unwrap();
    let d = dir.display();
    let out = hcl
        .replace("/home/vault/pidfile", &format!("{d}/pidfile"))
        .replace("/home/vault/.vault-token", &format!("{d}/.vault-token"))
        .replace("/etc/secrets/", &format!("{d}/secrets/"))
        .replace(
            r#"role = "example""#,
            &format!("role = \"example\"\n            token_path = \"{d}/token\""),
        );
    assert!(out.contains("token_path"), "{out}");
    out
}

/// Runs the real `bao agent` once (`exit_after_auth`) on `config` with
/// `VAULT_ADDR` as the walkthrough's pod sets it; its output.
async fn run_agent(bao: &OpenBao, dir: &Path, config: &str) -> std::process::Output {
    std::fs::write(dir.join("agent.hcl"), config).unwrap();
    let run = tokio::process::Command::new(bao.binary())
        .arg("agent")
        .arg(format!("-config={}", dir.join("agent.hcl").display()))
        .env("VAULT_ADDR", bao.addr())
        .env_remove("BAO_ADDR")
        .env_remove("BAO_TOKEN")
        .env_remove("VAULT_TOKEN")
        .env("HOME", dir)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("bao agent finished within 60 s")
        .expect("run bao agent")
}

/// The walkthrough, on the real server: the real `bao agent` runs the
/// walkthrough's own configuration and template, the driver publishes what
/// `convert` made of it, and the two pages are the same bytes. One login
/// and one KV read each, as the audit log shows.
#[tokio::test]
async fn walkthrough_renders_the_same_bytes_as_the_real_agent() {
    let Some(bao) = OpenBao::walkthrough().await else {
        return;
    };
    let h = Harness::builder().vault(bao).start().await;
    let attributes = converted_walkthrough();
    let attrs: Vec<(&str, &str)> = attributes
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let target = h.send_ok(h.request("shared-data", &attrs)).await;
    let driver_page = std::fs::read(target.join("index.html")).unwrap();

    let dir = h.node.root.join("agent");
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    std::fs::write(dir.join("token"), h.pod.token(&h.vault, "vault", HOUR)).unwrap();
    let output = run_agent(&h.vault, &dir, &walkthrough_agent_config(&dir)).await;
    assert!(
        output.status.success(),
        "bao agent failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let agent_page = std::fs::read(dir.join("secrets/index.html")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&driver_page),
        String::from_utf8_lossy(&agent_page),
        "the driver's page and the agent's"
    );
    assert_eq!(driver_page, agent_page);
    assert!(String::from_utf8_lossy(&agent_page).contains(PASSWORD));

    // The driver's own template renders the walkthrough's data too.
    let native = h
        .send_ok(h.request("v", &[ROLE, ("template.index.html", INDEX_TEMPLATE)]))
        .await;
    assert_eq!(
        read(&native.join("index.html")),
        expected_index("appuser", PASSWORD)
    );

    let audit = h.vault.audit();
    assert_eq!(audit.logins("kubernetes"), 3, "{}", audit.describe());
    assert_eq!(
        audit.successful_logins("kubernetes").len(),
        3,
        "{}",
        audit.describe()
    );
    assert_eq!(audit.count("read", KV), 3, "{}", audit.describe());
    h.unpublish_ok("shared-data").await;
    h.unpublish_ok("v").await;
    h.stop().await;
}

/// PostgreSQL and an OpenBao seeded like the double's `dynamic_vault`
/// (database leases of `creds_ttl`, at most `creds_max`; tokens of
/// `token_ttl`, at most `token_max`); `None` when either is missing.
async fn dynamic(
    creds_ttl: Duration,
    creds_max: Duration,
    token_ttl: Duration,
    token_max: Duration,
) -> Option<(Postgres, OpenBao)> {
    let pg = Postgres::start().await?;
    let bao = OpenBao::dynamic(&pg, creds_ttl, creds_max, token_ttl, token_max).await?;
    Some((pg, bao))
}

/// Like [`wait_for`], with `context` (the audit log, the driver's log) in
/// the failure.
async fn wait_explained(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the server saw and what the driver said, for failure messages.
fn explain(bao: &OpenBao, driver_log: &str) -> String {
    let log = plain(driver_log);
    let tail: Vec<&str> = log.lines().rev().take(25).collect();
    format!(
        "--- OpenBao's audit log (client requests) ---\n{}--- the driver's log (last lines) ---\n{}",
        bao.audit().describe(),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}

/// The driver's log without terminal colour codes.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `/metrics` of a driver started with `--metrics-addr=127.0.0.1:<port>`.
async fn metrics(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The sum of the samples of every metric family whose name contains
/// `word` (labels ignored), `None` when there is none.
fn metric_sum(text: &str, word: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, rest) = l.split_once(['{', ' '])?;
            name.contains(word).then_some(())?;
            rest.rsplit(' ').next()?.parse().ok()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// KV v2 paths as Vault Agent's users write them, without `data/` (a
/// read) or `metadata/` (a `secrets` list), render on the real server:
/// the driver asks which mount the first path lies on, once, and reads
/// and lists where the agent does, as the audit log shows; nothing is sent
/// at the paths as written.
#[tokio::test]
async fn kv2_paths_without_data_render_on_the_real_server() {
    let Some(bao) = OpenBao::walkthrough().await else {
        return;
    };
    bao.kv_put("myapp/second", &json!({"password": "two"}))
        .await;
    let h = Harness::builder().vault(bao).start().await;
    let page = r#"{{#with (secret "secret/myapp/config")}}{{data.data.username}}:{{data.data.password}}{{/with}}"#;
    let target = h.publish_ok(&[ROLE, ("template.page", page)]).await;
    assert_eq!(read(&target.join("page")), format!("appuser:{PASSWORD}"));
    let keys =
        r#"{{#with (secrets "secret/myapp")}}{{#each data.keys}}{{this}};{{/each}}{{/with}}"#;
    let listed = h
        .send_ok(h.request("keys", &[ROLE, ("template.keys", keys)]))
        .await;
    assert_eq!(read(&listed.join("keys")), "config;second;");

    let audit = h.vault.audit();
    let lookups = audit.count_prefix("read", "sys/internal/ui/mounts/");
    assert_eq!(lookups, 1, "{}", audit.describe());
    assert_eq!(
        audit.count("read", "sys/internal/ui/mounts/secret/myapp/config"),
        1,
        "{}",
        audit.describe()
    );
    assert_eq!(audit.count("read", KV), 1, "{}", audit.describe());
    assert_eq!(
        audit.count("list", "secret/metadata/myapp/"),
        1,
        "{}",
        audit.describe()
    );
    let as_written: Vec<String> = audit
        .requests()
        .filter(|e| e.path.starts_with("secret/myapp"))
        .map(|e| format!("{} {}", e.operation, e.path))
        .collect();
    assert!(as_written.is_empty(), "{as_written:?}");
    assert!(
        audit.responses().all(|e| e.error.is_none()),
        "{}",
        audit.describe()
    );
    h.unpublish_ok("v").await;
    h.unpublish_ok("keys").await;
    h.stop().await;
}

/// A KV change reaches the file on the next re-read, through the real
/// server; one login, and every re-read is a KV read.
#[tokio::test]
async fn kv_rotation_reaches_the_file() {
    let Some(bao) = OpenBao::walkthrough().await else {
        return;
    };
    let h = Harness::builder().vault(bao).start().await;
    let target = h
        .publish_ok(&[
            ROLE,
            ("template.index.html", INDEX_TEMPLATE),
            ("staticSecretRefreshInterval", "1s"),
        ])
        .await;
    assert_eq!(
        read(&target.join("index.html")),
        expected_index("appuser", PASSWORD)
    );
    h.vault
        .kv_put(
            "myapp/config",
            &json!({"username": "appuser", "password": "rotated-on-bao"}),
        )
        .await;
    wait_for("the rotated password", Duration::from_secs(15), || {
        read(&target.join("index.html")) == expected_index("appuser", "rotated-on-bao")
    })
    .await;
    let audit = h.vault.audit();
    assert_eq!(audit.logins("kubernetes"), 1, "{}", audit.describe());
    assert!(audit.count("read", KV) >= 2, "{}", audit.describe());
    let others: Vec<String> = audit
        .requests()
        .filter(|e| e.path != KV && e.path != "auth/kubernetes/login" && e.path != MOUNT_OF_KV)
        .map(|e| format!("{} {}", e.operation, e.path))
        .collect();
    assert!(others.is_empty(), "only KV reads: {others:?}");
    assert_eq!(
        audit.count("read", MOUNT_OF_KV),
        1,
        "the mount is asked about once: {}",
        audit.describe()
    );
    h.unpublish_ok("v").await;
    h.stop().await;
}

/// The token of a successful login in `audit` (the `n`th), and its accessor.
fn login_token(audit: &AuditLog, n: usize) -> (String, String) {
    let logins = audit.successful_logins("kubernetes");
    let auth = &logins
        .get(n)
        .unwrap_or_else(|| panic!("login {n}: {}", audit.describe()))
        .answer["auth"];
    (
        auth["client_token"].as_str().unwrap().to_owned(),
        // Batch tokens have no accessor.
        auth["accessor"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Unpublish revokes the volume's token: `revoke-self` in the audit log,
/// and the server no longer knows its accessor.
#[tokio::test]
async fn unpublish_revokes_the_token() {
    let Some(bao) = OpenBao::walkthrough().await else {
        return;
    };
    let h = Harness::builder().vault(bao).start().await;
    h.publish_ok(&[ROLE, ("template.index.html", INDEX_TEMPLATE)])
        .await;
    let (token, accessor) = login_token(&h.vault.audit(), 0);
    let lookup = json!({ "accessor": accessor });
    let before = h
        .vault
        .call(
            "POST",
            "auth/token/lookup-accessor",
            Some(support::openbao::ROOT_TOKEN),
            None,
            Some(&lookup),
        )
        .await;
    assert_eq!(before.status, 200, "{}", before.body);

    h.unpublish_ok("v").await;
    let audit = h.vault.audit();
    let revoked = audit.responses().any(|e| {
        e.path == "auth/token/revoke-self"
            && e.client_token.as_deref() == Some(token.as_str())
            && e.error.is_none()
    });
    assert!(
        revoked,
        "revoke-self with the volume's token: {}",
        audit.describe()
    );
    let after = h
        .vault
        .call(
            "POST",
            "auth/token/lookup-accessor",
            Some(support::openbao::ROOT_TOKEN),
            None,
            Some(&lookup),
        )
        .await;
    assert_eq!(after.status, 400, "{}", after.body);
    assert!(
        after.errors().contains("invalid accessor"),
        "{}",
        after.body
    );
    h.stop().await;
}

/// Database leases on the real engine: renewed in place (the same lease
/// id, the same PostgreSQL role, the file untouched) until a renewal comes
/// back capped by `max_ttl`; only then a new credential is issued, before
/// the old one ends. Every credential the file held logs in to
/// PostgreSQL. Unpublish revokes them: the roles are gone from `pg_roles`.
#[tokio::test]
async fn database_leases_are_renewed_then_reissued_at_the_cap_then_revoked() {
    let Some((pg, bao)) = dynamic(
        Duration::from_secs(3),
        Duration::from_secs(10),
        HOUR,
        2 * HOUR,
    )
    .await
    else {
        return;
    };
    let h = Harness::builder().vault(bao).start().await;
    let target = h
        .publish_ok(&[ROLE, ("template.creds", CREDS_TEMPLATE)])
        .await;
    let first = credential(&read(&target.join("creds"))).expect("a credential");
    assert!(
        pg.can_log_in(&first.0, &first.1),
        "the file's credential logs in"
    );
    let first_lease = h.vault.audit().issued_leases()[0].clone();

    // Renewed in place: the same lease, the same file.
    wait_for_audit(&h.vault, "two renewals", Duration::from_secs(15), |a| {
        a.responses()
            .filter(|e| e.path == "sys/leases/renew" && e.error.is_none())
            .count()
            >= 2
    })
    .await;
    let audit = h.vault.audit();
    assert_eq!(audit.count("read", CREDS), 1, "{}", audit.describe());
    let renewed: Vec<&str> = audit
        .requests()
        .filter(|e| e.path == "sys/leases/renew")
        .filter_map(|e| e.data["lease_id"].as_str())
        .collect();
    assert!(renewed.iter().all(|l| *l == first_lease), "{renewed:?}");
    assert_eq!(
        credential(&read(&target.join("creds"))),
        Some(first.clone())
    );

    // Capped near max_ttl: a new credential, issued only after a capped
    // renewal, while the old one still logs in.
    wait_for("a second credential", Duration::from_secs(20), || {
        credential(&read(&target.join("creds"))).is_some_and(|c| c != first)
    })
    .await;
    let second = credential(&read(&target.join("creds"))).unwrap();
    assert!(pg.can_log_in(&second.0, &second.1));
    let audit = h.vault.audit();
    let entries: Vec<_> = audit.responses().collect();
    let reissue = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.path == CREDS)
        .nth(1)
        .map(|(i, _)| i)
        .expect("a second issue");
    assert!(
        entries[..reissue]
            .iter()
            .any(|e| e.path == "sys/leases/renew"
                && e.answer["warnings"].as_array().is_some_and(|w| w
                    .iter()
                    .any(|w| w.as_str().unwrap_or("").contains("capped")))),
        "the re-issue followed a capped renewal: {}",
        audit.describe()
    );

    let roles = pg.vault_roles();
    assert!(roles.contains(&second.0), "{roles:?}");
    h.unpublish_ok("v").await;
    wait_for(
        "the volume's PostgreSQL roles dropped",
        Duration::from_secs(10),
        || !pg.role_exists(&second.0),
    )
    .await;
    assert!(!pg.can_log_in(&second.0, &second.1));
    h.stop().await;
}

/// A template issuing a certificate from `pki/issue/web`.
const CERT_TEMPLATE: &str = r#"{{#with (secret "pki/issue/web" common_name="web.example")}}{{data.serial_number}}
{{data.certificate}}{{/with}}"#;

/// PKI certificates (no lease) are issued again at about 70 % of the time
/// to their NotAfter: not early, never after it.
#[tokio::test]
async fn pki_certificates_are_reissued_at_about_seventy_percent_of_their_life() {
    let Some(bao) = OpenBao::walkthrough().await else {
        return;
    };
    bao.enable_pki(Duration::from_secs(6), Duration::from_secs(60))
        .await;
    bao.put_policy("myapp-kv-ro", support::openbao::DYNAMIC_POLICY)
        .await;
    let h = Harness::builder().vault(bao).start().await;
    let target = h
        .publish_ok(&[ROLE, ("template.cert", CERT_TEMPLATE)])
        .await;
    let first = read(&target.join("cert"));
    assert!(first.contains("BEGIN CERTIFICATE"), "{first}");
    wait_for_audit(&h.vault, "three issues", Duration::from_secs(30), |a| {
        a.count("update", "pki/issue/web") >= 3
    })
    .await;
    let audit = h.vault.audit();
    let issues: Vec<_> = audit
        .responses()
        .filter(|e| e.path == "pki/issue/web" && e.error.is_none())
        .collect();
    for pair in issues.windows(2) {
        let issued_at = pair[0].time;
        let not_after = SystemTime::UNIX_EPOCH
            + Duration::from_secs(pair[0].answer["data"]["expiration"].as_u64().unwrap());
        let life = not_after.duration_since(issued_at).unwrap().as_secs_f64();
        let at = pair[1]
            .time
            .duration_since(issued_at)
            .unwrap()
            .as_secs_f64();
        let share = at / life;
        assert!(
            (0.6..1.0).contains(&share),
            "re-issued at {:.0} % of the certificate's life ({at:.2} s of {life:.2} s)",
            share * 100.0
        );
    }
    wait_for(
        "the file holds the newest certificate",
        Duration::from_secs(5),
        || {
            let serial = issues.last().unwrap().answer["data"]["serial_number"]
                .as_str()
                .unwrap();
            read(&target.join("cert")).starts_with(serial)
                || h.vault.audit().count("update", "pki/issue/web") > issues.len()
        },
    )
    .await;
    h.unpublish_ok("v").await;
    h.stop().await;
}

/// kill -9, then SIGTERM: the restarted driver renders a KV change next to
/// the same database credential and certificate, with 0 logins, 0
/// credentials or certificates issued: the audit log shows only the due KV
/// re-reads. The unpublish afterwards revokes the credential.
#[tokio::test]
async fn a_restart_costs_no_login_and_no_issue_on_the_real_server() {
    let Some((pg, bao)) = dynamic(HOUR, 2 * HOUR, HOUR, 2 * HOUR).await else {
        return;
    };
    // Certificates that outlive the test.
    bao.write(
        "pki/roles/web",
        &json!({"allow_any_name": true, "ttl": "1h", "max_ttl": "2h", "key_type": "ec"}),
    )
    .await;
    let mut h = Harness::builder().vault(bao).spawn(&[]).await;
    let target = h
        .publish_ok(&[
            ROLE,
            ("template.index.html", INDEX_TEMPLATE),
            ("template.creds", CREDS_TEMPLATE),
            ("template.cert", CERT_TEMPLATE),
            ("staticSecretRefreshInterval", "1s"),
        ])
        .await;
    let creds = read(&target.join("creds"));
    let cert = read(&target.join("cert"));
    let (user, pass) = credential(&creds).unwrap();
    assert!(pg.can_log_in(&user, &pass));

    for (round, kill) in [(1, true), (2, false)] {
        if kill {
            h.driver.kill9();
        } else {
            assert!(h.driver.terminate().await.success());
        }
        let password = format!("after-restart-{round}");
        h.vault
            .kv_put(
                "myapp/config",
                &json!({"username": "appuser", "password": password}),
            )
            .await;
        let mark = h.vault.audit().entries.len();
        h.respawn(&format!("driver-{round}.log"), &[]).await;
        wait_for(
            "the KV change rendered by the restarted driver",
            Duration::from_secs(15),
            || read(&target.join("index.html")) == expected_index("appuser", &password),
        )
        .await;
        assert_eq!(read(&target.join("creds")), creds, "round {round}");
        assert_eq!(read(&target.join("cert")), cert, "round {round}");
        let audit = h.vault.audit();
        let since: Vec<String> = audit.entries[mark..]
            .iter()
            .filter(|e| !e.response && !e.root && e.path != KV && e.path != MOUNT_OF_KV)
            .map(|e| format!("{} {}", e.operation, e.path))
            .collect();
        assert!(
            since.is_empty(),
            "round {round}: a restart sent more than the due KV re-reads: {since:?}"
        );
        assert_eq!(audit.logins("kubernetes"), 1, "round {round}");
        assert_eq!(audit.count("read", CREDS), 1, "round {round}");
        assert_eq!(audit.count("update", "pki/issue/web"), 1, "round {round}");
    }
    h.unpublish_ok("v").await;
    wait_for(
        "the PostgreSQL role dropped",
        Duration::from_secs(10),
        || !pg.role_exists(&user),
    )
    .await;
    let _ = h.driver.terminate().await;
}

/// A role with `token_max_ttl`: renewals come back capped, and the driver
/// logs in again before the token dies. Each new login comes before the
/// expiry OpenBao itself granted the token it replaces (the latest login
/// or renewal answer's time plus its TTL, and never past the login's time
/// plus the max TTL), no request ever carries a dead token (the audit log
/// has no error), and the database credential is replaced under the new
/// token.
///
/// The TTLs are long enough that the margin the plan leaves (at least a
/// tenth of the capped remainder, about 0.7 s here) is not eaten by a
/// loaded CI machine's scheduling; the invariant checked is the server's.
#[tokio::test]
async fn a_capped_token_is_replaced_by_a_new_login_before_it_dies() {
    let token_max = Duration::from_secs(20);
    let Some((pg, bao)) = dynamic(
        Duration::from_secs(60),
        HOUR,
        Duration::from_secs(10),
        token_max,
    )
    .await
    else {
        return;
    };
    let h = Harness::builder().vault(bao).start().await;
    let target = h
        .publish_ok(&[
            ROLE,
            ("template.index.html", INDEX_TEMPLATE),
            ("template.creds", CREDS_TEMPLATE),
            ("staticSecretRefreshInterval", "1s"),
        ])
        .await;
    wait_for_audit(&h.vault, "a second login", Duration::from_secs(45), |a| {
        a.successful_logins("kubernetes").len() >= 2
    })
    .await;
    let audit = h.vault.audit();
    let logins = audit.successful_logins("kubernetes");
    for pair in logins.windows(2) {
        let token = pair[0].answer["auth"]["client_token"].as_str().unwrap();
        let expiry = granted_expiry(&audit, token).min(pair[0].time + token_max);
        assert!(
            pair[1].time < expiry,
            "the next login came {:?} after the token it replaces had expired",
            pair[1].time.duration_since(expiry).unwrap()
        );
    }
    let denied: Vec<String> = audit
        .responses()
        .filter(|e| e.error.is_some())
        .map(|e| format!("{} {}: {:?}", e.operation, e.path, e.error))
        .collect();
    assert!(denied.is_empty(), "no request failed: {denied:?}");
    let (user, pass) = credential(&read(&target.join("creds"))).unwrap();
    assert!(pg.can_log_in(&user, &pass));
    h.unpublish_ok("v").await;
    h.stop().await;
}

/// When OpenBao's own answers say `token` expires: the latest of its login
/// and `renew-self` answers, plus the TTL that answer granted (the audit
/// device logs it as `token_ttl`, rounded up to whole seconds, so callers
/// also bound it by the role's max TTL from the login).
fn granted_expiry(audit: &AuditLog, token: &str) -> SystemTime {
    audit
        .responses()
        .filter(|e| {
            e.answer["auth"]["client_token"].as_str() == Some(token)
                && (e.path == "auth/token/renew-self" || e.path.ends_with("/login"))
        })
        .map(|e| {
            let auth = &e.answer["auth"];
            let ttl = auth["token_ttl"]
                .as_u64()
                .unwrap_or_else(|| panic!("no token_ttl in the audit entry's auth: {auth}"));
            e.time + Duration::from_secs(ttl)
        })
        .max()
        .expect("the token was answered at least once")
}

/// A rate-limit quota on the KV mount that the node's re-reads exceed:
/// OpenBao answers 429 to them, while lease renewals (another path) keep
/// going, so the credential is never re-issued and never lapses.
#[tokio::test]
async fn renewals_keep_going_under_a_rate_limit_quota() {
    let Some((pg, bao)) = dynamic(Duration::from_secs(3), HOUR, HOUR, 2 * HOUR).await else {
        return;
    };
    let port = support::free_port();
    let h = Harness::builder()
        .vault(bao)
        .spawn(&[&format!("--metrics-addr=127.0.0.1:{port}")])
        .await;
    let mut targets = Vec::new();
    for volume in ["a", "b", "c"] {
        targets.push(
            h.send_ok(h.request(
                volume,
                &[
                    ROLE,
                    ("template.index.html", INDEX_TEMPLATE),
                    ("template.creds", CREDS_TEMPLATE),
                    ("staticSecretRefreshInterval", "1s"),
                ],
            ))
            .await,
        );
    }
    let creds: Vec<String> = targets.iter().map(|t| read(&t.join("creds"))).collect();
    // Three volumes re-read KV every second; the quota allows one read in
    // two seconds.
    h.vault
        .write(
            "sys/quotas/rate-limit/kv",
            &json!({"path": "secret/", "rate": 1, "interval": "2s"}),
        )
        .await;
    let renewed_before = h.vault.audit().count("update", "sys/leases/renew");
    wait_for_audit(
        &h.vault,
        "three more renewals per lease",
        Duration::from_secs(30),
        |a| {
            a.responses()
                .filter(|e| e.path == "sys/leases/renew" && e.error.is_none())
                .count()
                >= renewed_before + 9
        },
    )
    .await;
    let text = metrics(port).await;
    assert!(
        metric_sum(&text, "vault_csi_vault_pushback_total").unwrap_or(0.0) >= 1.0,
        "OpenBao refused KV re-reads with 429:\n{text}"
    );
    let audit = h.vault.audit();
    assert_eq!(audit.count("read", CREDS), 3, "{}", audit.describe());
    for (target, before) in targets.iter().zip(&creds) {
        assert_eq!(&read(&target.join("creds")), before);
        let (user, pass) = credential(before).unwrap();
        assert!(pg.can_log_in(&user, &pass), "{user} still logs in");
    }
    for volume in ["a", "b", "c"] {
        h.unpublish_ok(volume).await;
    }
}

/// `vaultNamespace`: the login, the reads and the revocation happen in the
/// namespace (OpenBao has namespaces without Enterprise), and the file
/// shows the namespace's own secret.
#[tokio::test]
async fn a_volume_lives_in_its_vault_namespace() {
    let Some(bao) = OpenBao::walkthrough().await else {
        return;
    };
    bao.create_namespace("team1").await;
    bao.seed_walkthrough(Some("team1")).await;
    bao.kv_put_in(
        Some("team1"),
        "myapp/config",
        &json!({"username": "team1-user", "password": "team1-secret"}),
    )
    .await;
    let h = Harness::builder().vault(bao).start().await;
    let target = h
        .publish_ok(&[
            ROLE,
            ("template.index.html", INDEX_TEMPLATE),
            ("vaultNamespace", "team1"),
        ])
        .await;
    assert_eq!(
        read(&target.join("index.html")),
        expected_index("team1-user", "team1-secret")
    );
    h.unpublish_ok("v").await;
    let audit = h.vault.audit();
    let mine: Vec<String> = audit
        .requests()
        .map(|e| format!("{}{}", e.namespace, e.path))
        .collect();
    assert_eq!(
        mine,
        [
            "team1/auth/kubernetes/login",
            &format!("team1/{MOUNT_OF_KV}"),
            &format!("team1/{KV}"),
            "team1/auth/token/revoke-self"
        ],
        "{}",
        audit.describe()
    );
    assert!(
        audit.responses().all(|e| e.error.is_none()),
        "{}",
        audit.describe()
    );
    h.stop().await;
}

/// Whether `text` holds something shaped like a Vault or OpenBao token
/// (`s.`, `b.`, `r.`, `hvs.`, `hvb.`, `hvr.` and at least 20 more
/// characters of a token's alphabet), other than the ones in `allowed`.
fn token_shapes(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let bytes = text.as_bytes();
    for prefix in ["s.", "b.", "r.", "hvs.", "hvb.", "hvr."] {
        let mut from = 0;
        while let Some(at) = text[from..].find(prefix).map(|i| i + from) {
            from = at + prefix.len();
            let boundary =
                at == 0 || !bytes[at - 1].is_ascii_alphanumeric() && bytes[at - 1] != b'.';
            let body: String = text[from..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                .collect();
            if boundary && body.len() >= 20 {
                found.push(format!("{prefix}{body}"));
            }
        }
    }
    found
}

/// Nothing secret in the driver's logs, at debug level, across a publish,
/// renewals, a re-login, a restart and an unpublish: no token the server
/// issued (nor anything token-shaped), no JWT, no KV or database password,
/// no private key.
#[tokio::test]
async fn the_drivers_logs_hold_no_token_jwt_or_secret() {
    let Some((_pg, bao)) = dynamic(
        Duration::from_secs(3),
        HOUR,
        Duration::from_secs(4),
        Duration::from_secs(8),
    )
    .await
    else {
        return;
    };
    let mut h = Harness::builder()
        .vault(bao)
        .spawn(&["--log-level=debug"])
        .await;
    let request = h.request(
        "v",
        &[
            ROLE,
            ("template.index.html", INDEX_TEMPLATE),
            ("template.creds", CREDS_TEMPLATE),
            ("template.cert", CERT_TEMPLATE),
            ("tokenFile", "token"),
            ("staticSecretRefreshInterval", "1s"),
        ],
    );
    let jwts: Vec<String> = request.volume_context[support::kubelet_wire::TOKENS_KEY]
        .split('"')
        .filter(|s| s.starts_with("eyJ"))
        .map(str::to_owned)
        .collect();
    assert!(!jwts.is_empty());
    h.send_ok(request.clone()).await;
    wait_for_audit(
        &h.vault,
        "a re-login and renewals",
        Duration::from_secs(30),
        |a| {
            a.successful_logins("kubernetes").len() >= 2
                && a.count("update", "sys/leases/renew") >= 2
        },
    )
    .await;
    h.respawn("driver-2.log", &["--log-level=debug"]).await;
    h.send_ok(request).await;
    h.unpublish_ok("v").await;
    let _ = h.driver.terminate().await;

    let logs = format!(
        "{}{}",
        read(&h.node.root.join("driver.log")),
        read(&h.node.root.join("driver-2.log"))
    );
    assert!(
        logs.contains("Refreshed volume"),
        "debug logs were written:\n{logs}"
    );
    let audit = h.vault.audit();
    let mut secrets: Vec<(String, String)> = Vec::new();
    for token in audit.issued_tokens() {
        secrets.push(("a Vault token".to_owned(), token));
    }
    for jwt in jwts {
        secrets.push(("the service-account JWT".to_owned(), jwt));
    }
    secrets.push(("the KV password".to_owned(), PASSWORD.to_owned()));
    for e in audit.responses() {
        if let Some(password) = e.answer["data"]["password"].as_str() {
            secrets.push(("a database password".to_owned(), password.to_owned()));
        }
        if let Some(key) = e.answer["data"]["private_key"].as_str() {
            let body = key.lines().nth(1).unwrap_or(key);
            secrets.push(("a private key".to_owned(), body.to_owned()));
        }
    }
    for (what, value) in &secrets {
        assert!(
            !logs.contains(value.as_str()),
            "{what} is in the driver's logs"
        );
    }
    let shapes = token_shapes(&logs);
    assert!(
        shapes.is_empty(),
        "token-shaped strings in the logs: {shapes:?}"
    );
}

/// The jwt method refuses a subject its role does not bind with 400 (where
/// kubernetes auth says 403): kubelet must still see `PERMISSION_DENIED`,
/// with OpenBao's reason, not `INVALID_ARGUMENT`.
#[tokio::test]
async fn a_jwt_refusal_reaches_kubelet_as_permission_denied() {
    let Some(bao) = OpenBao::walkthrough().await else {
        return;
    };
    bao.enable_jwt_auth().await;
    for (role, subject) in [
        ("example", "system:serviceaccount:default:vault-auth"),
        ("someone-else", "system:serviceaccount:default:other"),
    ] {
        bao.write(
            &format!("auth/jwt/role/{role}"),
            &json!({
                "role_type": "jwt",
                "bound_audiences": ["vault"],
                "user_claim": "sub",
                "bound_subject": subject,
                "token_policies": ["myapp-kv-ro"],
            }),
        )
        .await;
    }
    let h = Harness::builder().vault(bao).start().await;
    let target = h
        .publish_ok(&[
            ROLE,
            ("vaultAuthMountPath", "jwt"),
            ("template.index.html", INDEX_TEMPLATE),
        ])
        .await;
    assert_eq!(
        read(&target.join("index.html")),
        expected_index("appuser", PASSWORD)
    );

    let other = support::Pod::new("default", "other-pod", "vault-auth");
    let status = h
        .send_err(h.request_for(
            &other,
            "v",
            &[
                ("roleName", "someone-else"),
                ("vaultAuthMountPath", "jwt"),
                ("template.index.html", INDEX_TEMPLATE),
            ],
        ))
        .await;
    let audit = h.vault.audit();
    let refused = audit
        .responses()
        .filter(|e| e.path == "auth/jwt/login")
        .find_map(|e| e.error.clone())
        .expect("OpenBao refused the login");
    assert!(refused.contains("invalid subject"), "{refused}");
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("invalid subject (sub) claim"),
        "Vault's reason reaches kubelet: {}",
        status.message()
    );
    h.unpublish_ok("v").await;
    h.stop().await;
}

/// An operator revokes the volume's token (`token revoke -accessor`):
/// every later request with it answers 403 and nothing else tells the
/// driver. At its next request (the lease renewal, seconds later) the
/// driver must log in again once, right away, and fetch again: a new
/// database credential in the file, and KV re-reads that work, long before
/// the token's own renewal (40 minutes away).
#[tokio::test]
async fn an_operator_revocation_is_noticed_and_the_volume_logs_in_again() {
    let Some((pg, bao)) = dynamic(Duration::from_secs(4), HOUR, HOUR, 2 * HOUR).await else {
        return;
    };
    let h = Harness::builder().vault(bao).spawn(&[]).await;
    let target = h
        .publish_ok(&[
            ROLE,
            ("template.index.html", INDEX_TEMPLATE),
            ("template.creds", CREDS_TEMPLATE),
            ("staticSecretRefreshInterval", "1s"),
        ])
        .await;
    let first = credential(&read(&target.join("creds"))).unwrap();
    let (old_token, accessor) = login_token(&h.vault.audit(), 0);
    h.vault
        .write(
            "auth/token/revoke-accessor",
            &json!({ "accessor": accessor }),
        )
        .await;
    let revoked_at = h.vault.audit().entries.len();

    wait_explained(
        "a new credential in the file after the revocation",
        Duration::from_secs(20),
        || credential(&read(&target.join("creds"))).is_some_and(|c| c != first),
        || explain(&h.vault, &h.driver.logs()),
    )
    .await;
    let second = credential(&read(&target.join("creds"))).unwrap();
    assert!(pg.can_log_in(&second.0, &second.1));
    h.vault
        .kv_put(
            "myapp/config",
            &json!({"username": "appuser", "password": "after-revocation"}),
        )
        .await;
    wait_explained(
        "KV re-reads work again",
        Duration::from_secs(10),
        || read(&target.join("index.html")) == expected_index("appuser", "after-revocation"),
        || explain(&h.vault, &h.driver.logs()),
    )
    .await;
    let audit = h.vault.audit();
    let logins = audit.entries[revoked_at..]
        .iter()
        .filter(|e| !e.response && e.path == "auth/kubernetes/login")
        .count();
    assert_eq!(
        logins,
        1,
        "one login after the revocation: {}",
        audit.describe()
    );
    let denied = audit.entries[revoked_at..]
        .iter()
        .filter(|e| e.response && e.client_token.as_deref() == Some(old_token.as_str()))
        .count();
    assert!(
        denied <= 2,
        "the revoked token was used {denied} times before the new login"
    );
    h.unpublish_ok("v").await;
}

/// An outage longer than a lease: OpenBao sealed for about 10 s while the
/// volume's database lease lasts 6 s. While the file holds the credential
/// PostgreSQL already refuses, the driver reports the volume degraded (log
/// field and metrics); after the unseal the dead credential is replaced
/// within a few seconds, and the volume is no longer degraded.
#[tokio::test]
async fn an_outage_longer_than_a_lease_is_repaired_right_after_the_unseal() {
    let Some((pg, bao)) = dynamic(Duration::from_secs(6), HOUR, HOUR, 2 * HOUR).await else {
        return;
    };
    let port = support::free_port();
    let h = Harness::builder()
        .vault(bao)
        .spawn(&[&format!("--metrics-addr=127.0.0.1:{port}")])
        .await;
    let target = h
        .publish_ok(&[ROLE, ("template.creds", CREDS_TEMPLATE)])
        .await;
    let first = credential(&read(&target.join("creds"))).unwrap();
    wait_for_audit(&h.vault, "a first renewal", Duration::from_secs(10), |a| {
        a.count("update", "sys/leases/renew") >= 1
    })
    .await;

    h.vault.seal().await;
    let sealed_at = tokio::time::Instant::now();
    wait_for(
        "the file's credential to die (PostgreSQL refuses it)",
        Duration::from_secs(15),
        || !pg.can_log_in(&first.0, &first.1),
    )
    .await;
    assert_eq!(
        credential(&read(&target.join("creds"))),
        Some(first.clone())
    );
    let mut degraded_metric = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        degraded_metric = metric_sum(&metrics(port).await, "degraded");
        if degraded_metric.is_some_and(|v| v >= 1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logged_degraded = plain(&h.driver.logs()).contains("degraded=true");
    // Hold the seal for the outage's length (about 10 s in all).
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(sealed_at.elapsed())).await;
    h.vault.unseal().await;
    let unsealed_at = tokio::time::Instant::now();
    wait_for(
        "a live credential in the file",
        Duration::from_secs(60),
        || credential(&read(&target.join("creds"))).is_some_and(|c| c != first),
    )
    .await;
    let repaired_after = unsealed_at.elapsed();
    let second = credential(&read(&target.join("creds"))).unwrap();
    assert!(pg.can_log_in(&second.0, &second.1));
    let mut problems = Vec::new();
    if !logged_degraded {
        problems.push(
            "the log did not say degraded=true while the file held the dead credential".to_owned(),
        );
    }
    if !degraded_metric.is_some_and(|v| v >= 1.0) {
        problems.push(format!(
            "the metrics did not say degraded while the file held the dead credential (sum of `*degraded*` samples: {degraded_metric:?})"
        ));
    }
    if repaired_after >= Duration::from_secs(5) {
        problems.push(format!(
            "the dead credential was replaced {repaired_after:?} after the unseal"
        ));
    }
    assert!(
        problems.is_empty(),
        "{problems:#?}\n{}",
        explain(&h.vault, &h.driver.logs())
    );
    wait_for_degraded_cleared(port).await;
    h.unpublish_ok("v").await;
}

async fn wait_for_degraded_cleared(port: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics(port).await;
        if metric_sum(&text, "degraded").is_some_and(|v| v == 0.0) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the volume is still degraded after the repair:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Policy for batch-token roles: database credentials and, with
/// `revoke`, `sys/leases/revoke` (not in the default policy).
fn batch_policy(revoke: bool) -> String {
    let mut hcl = r#"path "database/creds/*" { capabilities = ["read"] }
"#
    .to_owned();
    if revoke {
        hcl.push_str(
            r#"path "sys/leases/revoke" { capabilities = ["update"] }
"#,
        );
    }
    hcl
}

/// Role `batch` of batch tokens for `default/vault-auth`, whose policy
/// reads the database credentials and, with `may_revoke_leases`, revokes
/// leases (`batch_policy`).
async fn batch_role(bao: &OpenBao, may_revoke_leases: bool) {
    bao.put_policy("batch-db", &batch_policy(may_revoke_leases))
        .await;
    bao.kubernetes_role(
        "batch",
        "batch-db",
        HOUR,
        2 * HOUR,
        &[("token_type", "batch")],
    )
    .await;
}

/// A batch-token role (`token_type=batch`): `revoke-self` answers 400
/// ("batch tokens cannot be revoked"), so at unpublish the driver revokes
/// the volume's leases with `sys/leases/revoke` and the volume's token,
/// which the policy allows here: the PostgreSQL role is gone long before
/// its lease (an hour) would end.
#[tokio::test]
async fn batch_token_volumes_revoke_their_leases_one_by_one() {
    let Some((pg, bao)) = dynamic(HOUR, 2 * HOUR, HOUR, 2 * HOUR).await else {
        return;
    };
    batch_role(&bao, true).await;
    let h = Harness::builder().vault(bao).start().await;
    let target = h
        .publish_ok(&[("roleName", "batch"), ("template.creds", CREDS_TEMPLATE)])
        .await;
    let (user, pass) = credential(&read(&target.join("creds"))).unwrap();
    assert!(pg.can_log_in(&user, &pass));
    let (token, _) = login_token(&h.vault.audit(), 0);
    assert!(token.starts_with("b."), "a batch token");

    h.unpublish_ok("v").await;
    wait_for(
        "the batch volume's PostgreSQL role dropped",
        Duration::from_secs(10),
        || !pg.role_exists(&user),
    )
    .await;
    let audit = h.vault.audit();
    assert!(
        audit
            .responses()
            .any(|e| e.path == "sys/leases/revoke" && e.error.is_none()),
        "{}",
        audit.describe()
    );
    h.stop().await;
}

/// A batch-token role whose policy does not allow `sys/leases/revoke`: the
/// leases cannot be revoked and will live until they expire. The publish
/// says so in a warning, and a metric counts the leases left to expire at
/// unpublish.
#[tokio::test]
async fn batch_token_leases_that_cannot_be_revoked_are_reported() {
    let Some((pg, bao)) = dynamic(HOUR, 2 * HOUR, HOUR, 2 * HOUR).await else {
        return;
    };
    batch_role(&bao, false).await;
    let port = support::free_port();
    let h = Harness::builder()
        .vault(bao)
        .spawn(&[&format!("--metrics-addr=127.0.0.1:{port}")])
        .await;
    let target = h
        .publish_ok(&[("roleName", "batch"), ("template.creds", CREDS_TEMPLATE)])
        .await;
    let (user, _) = credential(&read(&target.join("creds"))).unwrap();
    let warned = plain(&h.driver.logs())
        .lines()
        .any(|l| l.contains("WARN") && l.to_lowercase().contains("batch"));
    h.unpublish_ok("v").await;
    assert!(pg.role_exists(&user), "the lease lives on until it expires");
    assert!(
        warned,
        "the publish warned that the batch token's leases cannot be revoked:\n{}",
        plain(&h.driver.logs())
    );
    let text = metrics(port).await;
    assert!(
        metric_sum(&text, "lease").is_some_and(|v| v >= 1.0),
        "a metric counts the lease left to expire:\n{text}"
    );
}

/// The volume's lease id is revocable by the volume's own token only
/// through `sys/leases/revoke`: checked here so the batch tests above test
/// the driver, not a policy mistake.
#[tokio::test]
async fn a_batch_token_can_revoke_its_lease_where_the_policy_allows() {
    let Some((pg, bao)) = dynamic(HOUR, 2 * HOUR, HOUR, 2 * HOUR).await else {
        return;
    };
    batch_role(&bao, true).await;
    let pod = support::Pod::walkthrough();
    let jwt = pod.token(&bao, "vault", HOUR);
    let login = bao
        .call(
            "POST",
            "auth/kubernetes/login",
            None,
            None,
            Some(&json!({"role": "batch", "jwt": jwt})),
        )
        .await;
    let token = login.body["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let creds = bao.call("GET", CREDS, Some(&token), None, None).await;
    let lease = creds.body["lease_id"].as_str().unwrap().to_owned();
    let user = creds.body["data"]["username"].as_str().unwrap().to_owned();
    let revoke_self = bao
        .call("POST", "auth/token/revoke-self", Some(&token), None, None)
        .await;
    assert_eq!(revoke_self.status, 400, "{}", revoke_self.body);
    assert!(
        revoke_self
            .errors()
            .contains("batch tokens cannot be revoked")
    );
    assert!(pg.role_exists(&user));
    let revoke = bao
        .call(
            "PUT",
            "sys/leases/revoke",
            Some(&token),
            None,
            Some(&json!({ "lease_id": lease })),
        )
        .await;
    assert_eq!(revoke.status, 204, "{}", revoke.body);
    wait_for("the role dropped", Duration::from_secs(10), || {
        !pg.role_exists(&user)
    })
    .await;
}

/// The log check's detector finds what it must find.
#[test]
fn token_shapes_finds_tokens_and_nothing_else() {
    let log = "token=s.XdafSTryzFJVBoSoHxXJrSbw x hvs.CAESIJ1234567890abcdefghijklmn b.AAAAAQKx1234567890abcdefghij";
    assert_eq!(token_shapes(log).len(), 3, "{:?}", token_shapes(log));
    let clean = "pods.example volume.id=csi-0c0f refreshes.total lease.id=\"database/creds/app/1CkogvOJkmrp0RjxBAxOF8IY\"";
    assert!(token_shapes(clean).is_empty(), "{:?}", token_shapes(clean));
}
