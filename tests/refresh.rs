//! Refresh in place against the Vault double with leases of seconds:
//! renewals instead of re-issues, replacement before expiry, KV changes,
//! outages, token renewal and re-login, atomic rewrites, `refresh: "false"`
//! and `tokenFile`.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use support::{CREDS_TEMPLATE, Harness, INDEX_TEMPLATE, dynamic_vault, expected_index, wait_for};
use vault_double::{DynamicRole, Fault, VaultDouble};

const ROLE: (&str, &str) = ("roleName", "example");

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn user_of(content: &str) -> Option<String> {
    content
        .strip_prefix("user=")
        .and_then(|rest| rest.split(' ').next())
        .map(str::to_owned)
}

/// A renewable lease is renewed through `sys/leases/renew` and the
/// credentials stay the same (no re-issue, no re-render).
#[tokio::test]
async fn renewable_leases_are_renewed_not_reissued() {
    let creds = DynamicRole::new(Duration::from_secs(3), Duration::from_secs(120));
    let h = Harness::dynamic(creds).await;
    let target = h
        .publish_ok(&[ROLE, ("template.creds", CREDS_TEMPLATE)])
        .await;
    let first = read(&target.join("creds"));
    let lease_id = h.vault.leases()[0].lease_id.clone();

    wait_for("three renewals", Duration::from_secs(15), || {
        h.vault.lease(&lease_id).is_some_and(|l| l.renew_count >= 3)
    })
    .await;
    assert_eq!(
        h.vault.count("GET", "/v1/database/creds/app"),
        1,
        "the credentials were never re-issued"
    );
    assert_eq!(
        read(&target.join("creds")),
        first,
        "the file is untouched while renewals extend the lease"
    );
    let lease = h.vault.lease(&lease_id).unwrap();
    assert!(!lease.revoked && lease.expires_at > SystemTime::now());
    let renewals: Vec<_> = h
        .vault
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/sys/leases/renew")
        .collect();
    assert!(renewals.iter().all(|r| r.status == 200));
    assert_eq!(
        renewals[0].body.as_ref().unwrap()["lease_id"],
        lease_id.as_str()
    );

    h.unpublish_ok("v").await;
    assert!(
        h.vault.lease(&lease_id).unwrap().revoked,
        "unpublish revokes the lease"
    );
    h.stop().await;
}

/// Samples the file every 25 ms for `duration`; every credential seen must
/// belong to a live lease at the moment it was read. Returns the distinct
/// usernames seen.
async fn assert_no_credential_outlives_its_lease(
    vault: &VaultDouble,
    file: &Path,
    duration: Duration,
) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let end = tokio::time::Instant::now() + duration;
    while tokio::time::Instant::now() < end {
        let sampled_at = SystemTime::now();
        let content = read(file);
        let user = user_of(&content).unwrap_or_else(|| panic!("unexpected content {content:?}"));
        let lease = vault
            .leases()
            .into_iter()
            .find(|l| l.data["username"] == user.as_str())
            .expect("every credential comes from a lease");
        assert!(
            lease.expires_at > sampled_at,
            "credential {user} was still in the volume after its lease ended"
        );
        if !seen.contains(&user) {
            seen.push(user);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    seen
}

/// Near the max TTL renewals come back capped; the secret is re-fetched
/// and re-rendered before the old lease ends, every time.
#[tokio::test]
async fn capped_leases_are_replaced_before_they_end() {
    let creds = DynamicRole::new(Duration::from_secs(2), Duration::from_secs(4));
    let h = Harness::dynamic(creds).await;
    let target = h
        .publish_ok(&[ROLE, ("template.creds", CREDS_TEMPLATE)])
        .await;

    let seen = assert_no_credential_outlives_its_lease(
        &h.vault,
        &target.join("creds"),
        Duration::from_secs(10),
    )
    .await;
    assert!(
        seen.len() >= 3,
        "the credentials were replaced repeatedly: {seen:?}"
    );
    assert!(
        h.vault.count("PUT", "/v1/sys/leases/renew") >= 2,
        "renewals came first"
    );
    h.stop().await;
}

/// Non-renewable leases are re-fetched between 2/3 and 9/10 of their life.
#[tokio::test]
async fn non_renewable_leases_are_replaced_before_they_end() {
    let creds = DynamicRole {
        default_ttl: Duration::from_secs(2),
        max_ttl: Duration::from_secs(60),
        renewable: false,
    };
    let h = Harness::dynamic(creds).await;
    let target = h
        .publish_ok(&[ROLE, ("template.creds", CREDS_TEMPLATE)])
        .await;
    let seen = assert_no_credential_outlives_its_lease(
        &h.vault,
        &target.join("creds"),
        Duration::from_secs(7),
    )
    .await;
    assert!(seen.len() >= 3, "{seen:?}");
    assert_eq!(
        h.vault.count("PUT", "/v1/sys/leases/renew"),
        0,
        "nothing non-renewable is renewed"
    );
    h.stop().await;
}

/// KV secrets are re-read every `staticSecretRefreshInterval`; a change is
/// rendered in place, and an unchanged secret rewrites nothing.
#[tokio::test]
async fn kv_changes_are_picked_up_and_unchanged_reads_rewrite_nothing() {
    let h = Harness::walkthrough().await;
    let attrs = [
        ROLE,
        ("template.index.html", INDEX_TEMPLATE),
        ("staticSecretRefreshInterval", "1s"),
    ];
    let target = h.publish_ok(&attrs).await;
    let data_dir = std::fs::read_link(target.join("..data")).unwrap();
    let reads = h.vault.count("GET", "/v1/secret/data/myapp/config");
    wait_for("two more reads", Duration::from_secs(10), || {
        h.vault.count("GET", "/v1/secret/data/myapp/config") >= reads + 2
    })
    .await;
    assert_eq!(
        std::fs::read_link(target.join("..data")).unwrap(),
        data_dir,
        "identical output is not rewritten"
    );

    h.vault.kv2_put(
        "secret",
        "myapp/config",
        serde_json::json!({"username": "appuser", "password": "rotated!"}),
    );
    wait_for("the new password", Duration::from_secs(10), || {
        read(&target.join("index.html")) == expected_index("appuser", "rotated!")
    })
    .await;
    assert_ne!(std::fs::read_link(target.join("..data")).unwrap(), data_dir);
    h.stop().await;
}

/// An outage of several seconds: the last good files stay, a republish
/// during the outage is OK (kubelet keeps the volume), and refresh resumes
/// by itself when Vault is back.
#[tokio::test]
async fn an_outage_keeps_the_last_good_files_and_refresh_resumes() {
    let h = Harness::walkthrough().await;
    let attrs = [
        ROLE,
        ("template.index.html", INDEX_TEMPLATE),
        ("staticSecretRefreshInterval", "1s"),
    ];
    let target = h.publish_ok(&attrs).await;
    let good = expected_index("appuser", "suP3rsec(et!");

    h.vault.set_fault(Some(Fault::sealed()));
    let failures_before = h
        .vault
        .requests()
        .iter()
        .filter(|r| r.status == 503)
        .count();
    let outage_end = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < outage_end {
        assert_eq!(
            read(&target.join("index.html")),
            good,
            "files stay through the outage"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        h.vault
            .requests()
            .iter()
            .filter(|r| r.status == 503)
            .count()
            > failures_before,
        "the driver kept trying during the outage"
    );
    // kubelet's periodic republish during the outage succeeds.
    h.client()
        .await
        .node_publish_volume(h.request("v", &attrs))
        .await
        .unwrap();

    h.vault.shutdown();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        read(&target.join("index.html")),
        good,
        "files stay while Vault refuses connections"
    );
    h.vault.restart().await.unwrap();
    h.vault.set_fault(None);
    h.vault.kv2_put(
        "secret",
        "myapp/config",
        serde_json::json!({"username": "appuser", "password": "after-outage"}),
    );
    wait_for("refresh to resume", Duration::from_secs(70), || {
        read(&target.join("index.html")) == expected_index("appuser", "after-outage")
    })
    .await;
    h.stop().await;
}

/// The Vault token is renewed with renew-self, and when it reaches its max
/// TTL the driver logs in again before it lapses: no request ever fails
/// with an invalid token.
#[tokio::test]
async fn the_vault_token_never_lapses() {
    let creds = DynamicRole::new(Duration::from_secs(60), Duration::from_secs(120));
    let h = Harness::builder()
        .vault(dynamic_vault(creds, Duration::from_secs(2), Duration::from_secs(5)).await)
        .start()
        .await;
    let attrs = [
        ROLE,
        ("template.index.html", INDEX_TEMPLATE),
        ("staticSecretRefreshInterval", "1s"),
        ("tokenFile", "token"),
    ];
    let target = h.publish_ok(&attrs).await;
    assert_eq!(
        read(&target.join("token")),
        h.vault.tokens()[0].client_token,
        "tokenFile holds the volume's token"
    );

    wait_for("a second login", Duration::from_secs(15), || {
        h.vault.count("POST", "/v1/auth/kubernetes/login") >= 2
    })
    .await;
    let newest = h.vault.tokens().last().unwrap().client_token.clone();
    wait_for(
        "the token file to follow the re-login",
        Duration::from_secs(5),
        || read(&target.join("token")) == newest,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        h.vault.count("POST", "/v1/auth/token/renew-self") >= 1,
        "the token was renewed first"
    );
    let denied: Vec<_> = h
        .vault
        .requests()
        .into_iter()
        .filter(|r| r.status == 403)
        .collect();
    assert!(
        denied.is_empty(),
        "no request was made with a lapsed token: {denied:?}"
    );
    h.stop().await;
}

/// Readers never see a missing, empty or partial file while the volume is
/// rewritten again and again.
#[tokio::test]
async fn readers_never_see_a_partial_file() {
    let creds = DynamicRole {
        default_ttl: Duration::from_secs(1),
        max_ttl: Duration::from_secs(60),
        renewable: false,
    };
    let h = Harness::dynamic(creds).await;
    let attrs = [
        ROLE,
        ("template.creds", CREDS_TEMPLATE),
        ("template.dir/copy", CREDS_TEMPLATE),
    ];
    let target = h.publish_ok(&attrs).await;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = Arc::clone(&stop);
        let file = target.join("creds");
        let copy = target.join("dir/copy");
        std::thread::spawn(move || {
            let (mut reads, mut distinct) = (0u64, std::collections::HashSet::new());
            while !stop.load(Ordering::Relaxed) {
                let content = std::fs::read_to_string(&file).expect("the file is never missing");
                assert!(
                    content.starts_with("user=v-")
                        && content.contains(" pass=")
                        && !content.ends_with("pass="),
                    "partial or empty read: {content:?}"
                );
                let other =
                    std::fs::read_to_string(&copy).expect("the nested file is never missing");
                assert!(
                    other.starts_with("user=v-"),
                    "partial nested read: {other:?}"
                );
                distinct.insert(content);
                reads += 1;
            }
            (reads, distinct.len())
        })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    let (reads, distinct) = reader.join().expect("the reader saw only whole files");
    assert!(reads > 1000, "the reader ran ({reads} reads)");
    assert!(
        distinct >= 3,
        "the file was replaced while being read ({distinct} versions)"
    );
    h.stop().await;
}

/// A certificate (PKI issue with no lease) is re-issued before its
/// `expiration` (NotAfter) passes.
#[tokio::test]
async fn certificates_are_reissued_before_not_after() {
    let creds = DynamicRole::new(Duration::from_secs(60), Duration::from_secs(120));
    let h = Harness::dynamic(creds).await;
    let template = r#"{{#with (secret "pki/issue/web" common_name="web.example" ttl="3s")}}{{data.serial_number}} {{data.expiration}}{{/with}}"#;
    let target = h.publish_ok(&[ROLE, ("template.cert", template)]).await;
    let end = tokio::time::Instant::now() + Duration::from_secs(7);
    let mut serials = std::collections::HashSet::new();
    while tokio::time::Instant::now() < end {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let content = read(&target.join("cert"));
        let (serial, expiration) = content.split_once(' ').expect("serial and expiration");
        let not_after: u64 = expiration.parse().unwrap();
        assert!(
            not_after >= now,
            "certificate {serial} expired at {not_after} but was still in the volume at {now}"
        );
        serials.insert(serial.to_owned());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(serials.len() >= 2, "re-issued: {serials:?}");
    assert!(
        h.vault
            .requests()
            .iter()
            .filter(|r| r.path == "/v1/pki/issue/web")
            .all(|r| r.method == "PUT" || r.method == "POST"),
        "issuing is a write"
    );
    h.stop().await;
}
