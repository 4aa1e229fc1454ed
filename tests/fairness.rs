//! Fairness between tenants on one node, against the Vault double: a
//! tenant with a slow secrets engine, a tenant asking for one-second
//! re-reads of many secrets, and Vault answering 429, must not make another
//! tenant's leases or token lapse, nor spend the node's Vault budget.

mod support;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde_json::json;
use support::{CREDS_TEMPLATE, Harness, Pod, dynamic_vault, wait_for};
use vault_double::{DynamicRole, RecordedRequest, Role, VaultDouble};

/// The victim's lease: renewed about every 4 s, gone after 6 s without.
const LEASE_TTL: Duration = Duration::from_secs(6);

/// A Vault with the victim (namespace `default`, role `example`, renewable
/// database leases of [`LEASE_TTL`]) and a `tenant` role for service
/// account `app` in the other namespaces, reading KV v2 `tenant/…`.
async fn shared_vault(tenant_secrets: &[String]) -> VaultDouble {
    let creds = DynamicRole::new(LEASE_TTL, Duration::from_secs(600));
    let vault = dynamic_vault(creds, Duration::from_secs(3600), Duration::from_secs(7200)).await;
    vault.put_policy("tenant-ro", &[("tenant/data/*", &["read"])]);
    vault.add_role(
        "kubernetes",
        Role::new(
            "tenant",
            ["app"],
            ["slow", "noisy", "kv-a", "kv-b"],
            ["tenant-ro"],
        )
        .with_audience("vault"),
    );
    for path in tenant_secrets {
        vault.kv2_put("tenant", path, json!({"v": path}));
    }
    vault
}

/// A template reading `tenant/data/<path>` for every path.
fn kv_template(paths: &[String]) -> String {
    let mut template = String::new();
    for path in paths {
        let _ = writeln!(
            template,
            r#"{{{{#with (secret "tenant/data/{path}")}}}}{{{{data.data.v}}}}{{{{/with}}}}"#
        );
    }
    template
}

/// Publishes the victim's database credentials volume.
async fn publish_victim(h: &Harness) -> PathBuf {
    let request = h.request(
        "creds",
        &[("roleName", "example"), ("template.creds", CREDS_TEMPLATE)],
    );
    h.send_ok(request).await
}

/// Publishes a tenant volume in `namespace` reading `paths`, re-read every
/// `interval`.
async fn publish_tenant(
    h: &Harness,
    namespace: &str,
    name: &str,
    paths: &[String],
    interval: &str,
) -> PathBuf {
    let pod = Pod::new(namespace, name, "app");
    let template = kv_template(paths);
    let request = h.request_for(
        &pod,
        "kv",
        &[
            ("roleName", "tenant"),
            ("template.kv", &template),
            ("staticSecretRefreshInterval", interval),
        ],
    );
    h.send_ok(request).await
}

fn is_renewal(r: &RecordedRequest) -> bool {
    r.path == "/v1/sys/leases/renew"
}

fn tenant_reads(vault: &VaultDouble) -> Vec<RecordedRequest> {
    vault
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/v1/tenant/"))
        .collect()
}

/// The victim's leases and token never lapsed: every lease issued is
/// alive, was renewed at least once, and no two of its renewals (nor issue and the first
/// renewal) are further apart than `max_gap`.
fn assert_victim_never_lapsed(vault: &VaultDouble, max_gap: Duration) {
    let now = SystemTime::now();
    let leases: Vec<_> = vault
        .leases()
        .into_iter()
        .filter(|l| l.path == "database/creds/app")
        .collect();
    assert!(!leases.is_empty(), "the victim has a lease");
    for lease in &leases {
        assert!(
            !lease.revoked && lease.expires_at > now,
            "lease {} lapsed (renewed {} times)",
            lease.lease_id,
            lease.renew_count
        );
        assert!(
            lease.renew_count >= 1,
            "lease {} renewed only {} times",
            lease.lease_id,
            lease.renew_count
        );
        let mut times = vec![lease.issued_at];
        times.extend(
            vault
                .requests()
                .into_iter()
                .filter(|r| {
                    is_renewal(r)
                        && r.status == 200
                        && r.body.as_ref().and_then(|b| b["lease_id"].as_str())
                            == Some(lease.lease_id.as_str())
                })
                .map(|r| r.at),
        );
        for pair in times.windows(2) {
            let gap = pair[1].duration_since(pair[0]).unwrap_or_default();
            assert!(
                gap < max_gap,
                "lease {} went {gap:?} without a renewal (allowed {max_gap:?})",
                lease.lease_id
            );
        }
    }
    for token in vault.tokens().iter().filter(|t| t.role == "example") {
        assert!(!token.revoked, "the victim's Vault token lapsed");
    }
}

/// (a) One tenant's secrets engine answers after 20 s and its volumes are
/// due every second; they may hold only their namespace's share of the
/// refresh slots, and each refresh gives up after `--refresh-timeout`. The
/// victim's 6 s leases are still renewed before they end.
#[tokio::test]
async fn a_slow_tenant_cannot_starve_another_tenants_renewals() {
    let paths: Vec<String> = (0..4).map(|i| format!("slow/s{i}")).collect();
    let h = Harness::builder()
        .vault(shared_vault(&paths).await)
        .config(move |config| {
            config.max_concurrent_refreshes = 4;
            config.fairness.max_concurrent_refreshes_per_namespace = 2;
            config.fairness.refresh_timeout = Duration::from_secs(8);
            config.fairness.min_refresh_interval = Duration::from_secs(1);
        })
        .start()
        .await;
    for (i, path) in paths.iter().enumerate() {
        publish_tenant(
            &h,
            "slow",
            &format!("slow-{i}"),
            std::slice::from_ref(path),
            "1s",
        )
        .await;
    }
    h.vault
        .set_path_latency("tenant/", Some(Duration::from_secs(20)));
    let target = publish_victim(&h).await;
    assert!(target.join("creds").exists());

    wait_for(
        "the slow tenant's refreshes to be stuck in its engine",
        Duration::from_secs(10),
        || tenant_reads(&h.vault).len() >= 4 + 2,
    )
    .await;
    // Stuck refreshes give up after 8 s, long before their 20 s answers,
    // and the tenant's other volumes get their turn.
    wait_for(
        "the stuck refreshes to time out",
        Duration::from_secs(12),
        || tenant_reads(&h.vault).len() >= 4 + 4,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_victim_never_lapsed(&h.vault, LEASE_TTL);

    h.vault.set_path_latency("tenant/", None);
    h.vault.shutdown();
    h.stop().await;
}

/// (b) A tenant asks for one-second re-reads of 2 × 32 secrets. The floor
/// (`--min-refresh-interval`) spaces each secret's re-reads, the
/// namespace's budget caps its request rate, and the victim's renewals in
/// another namespace go out on time.
#[tokio::test]
async fn a_noisy_tenant_is_clamped_by_the_floor_and_its_budget() {
    let a: Vec<String> = (0..32).map(|i| format!("noisy/a{i}")).collect();
    let b: Vec<String> = (0..32).map(|i| format!("noisy/b{i}")).collect();
    let vault = shared_vault(&[a.clone(), b.clone()].concat()).await;
    let floor = Duration::from_secs(2);
    let (rate, burst) = (10.0, 70);
    let h = Harness::builder()
        .vault(vault)
        .config(move |config| {
            config.fairness.min_refresh_interval = floor;
            config.fairness.namespace_vault_rate = rate;
            config.fairness.namespace_vault_burst = burst;
        })
        .start()
        .await;
    publish_victim(&h).await;
    publish_tenant(&h, "noisy", "noisy-a", &a, "1s").await;
    publish_tenant(&h, "noisy", "noisy-b", &b, "1s").await;
    let published = tenant_reads(&h.vault).len();
    assert_eq!(published, 64);
    let start = SystemTime::now();

    let window = Duration::from_secs(10);
    tokio::time::sleep(window).await;
    let reads = tenant_reads(&h.vault);
    let in_window = reads.len() - published;
    // Asked for: 64 reads a second (640). The floor allows 32 a second,
    // the budget `rate` a second plus what is left of the burst.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let allowed = (rate * window.as_secs_f64()) as usize + 10 + 16;
    assert!(
        in_window <= allowed,
        "the noisy namespace sent {in_window} reads in {window:?} (allowed {allowed})"
    );
    assert!(in_window > 0, "its secrets are still re-read");
    for path in &a {
        let times: Vec<SystemTime> = reads
            .iter()
            .filter(|r| r.path == format!("/v1/tenant/data/{path}"))
            .map(|r| r.at)
            .collect();
        for pair in times.windows(2) {
            let gap = pair[1].duration_since(pair[0]).unwrap_or_default();
            assert!(
                gap >= floor.mul_f64(0.85),
                "{path} was re-read after {gap:?}, below the {floor:?} floor"
            );
        }
    }
    // Renewed about every 4 s: never more than a second late.
    assert_victim_never_lapsed(&h.vault, Duration::from_millis(5500));
    let renewals = h
        .vault
        .requests()
        .into_iter()
        .filter(|r| is_renewal(r) && r.at >= start)
        .count();
    assert!(renewals >= 2, "only {renewals} renewals in {window:?}");
    h.stop().await;
}

/// (c) Vault answers 429 (Retry-After 6 s) for the KV mount: re-reads of
/// static secrets pause node-wide, in both namespaces, while the victim's
/// renewals still go out; after the pause the re-reads resume.
#[tokio::test]
async fn under_429_renewals_go_out_and_static_rereads_wait() {
    let paths: Vec<String> = (0..8).map(|i| format!("kv/s{i}")).collect();
    let h = Harness::builder()
        .vault(shared_vault(&paths).await)
        .config(move |config| {
            config.fairness.min_refresh_interval = Duration::from_secs(1);
        })
        .start()
        .await;
    publish_victim(&h).await;
    for (i, path) in paths.iter().enumerate() {
        let namespace = if i % 2 == 0 { "kv-a" } else { "kv-b" };
        publish_tenant(
            &h,
            namespace,
            &format!("kv-{i}"),
            std::slice::from_ref(path),
            "1s",
        )
        .await;
    }
    wait_for("re-reads", Duration::from_secs(10), || {
        tenant_reads(&h.vault).len() >= 8 + 8
    })
    .await;

    h.vault.rate_limit_path("tenant/", Some(6));
    wait_for("a 429", Duration::from_secs(10), || {
        tenant_reads(&h.vault).iter().any(|r| r.status == 429)
    })
    .await;
    let first = tenant_reads(&h.vault)
        .into_iter()
        .find(|r| r.status == 429)
        .unwrap()
        .at;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let window_end = first + Duration::from_secs(5);
    let held: Vec<_> = tenant_reads(&h.vault)
        .into_iter()
        .filter(|r| r.at > first && r.at <= window_end)
        .collect();
    // Requests already in flight when the first 429 came may still land.
    assert!(
        held.len() <= 2,
        "{} KV re-reads went out during the pause: {:?}",
        held.len(),
        held.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    let renewals = h
        .vault
        .requests()
        .into_iter()
        .filter(|r| is_renewal(r) && r.status == 200 && r.at > first && r.at <= window_end)
        .count();
    assert!(renewals >= 1, "no renewal went out during the pause");
    assert_victim_never_lapsed(&h.vault, LEASE_TTL);

    h.vault.clear_rate_limit_path("tenant/");
    let before = tenant_reads(&h.vault).len();
    wait_for("re-reads to resume", Duration::from_secs(15), || {
        tenant_reads(&h.vault)
            .iter()
            .skip(before)
            .filter(|r| r.status == 200)
            .count()
            >= 8
    })
    .await;
    h.stop().await;
}
