//! The driver against Vault as Vault's own code behaves (the stricter
//! double): each test fails with the behaviour it replaced.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{
    CREDS_TEMPLATE, Harness, INDEX_TEMPLATE, Pod, assert_walkthrough_page, dynamic_vault, wait_for,
    walkthrough_vault,
};
use tonic::Code;
use vault_double::{DynamicRole, RetryAfterFormat, Role, VaultDouble};

const ROLE: (&str, &str) = ("roleName", "example");

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

fn example_role(ttl: Duration, max: Duration) -> Role {
    Role::new("example", ["vault-auth"], ["default"], ["myapp-kv-ro"])
        .with_audience("vault")
        .with_ttl(ttl, max)
}

/// KV v1 `data` is the user's map: `expiration: 0` used to re-read in a
/// tight loop, a millisecond epoch put the next read years away. Both are
/// re-read on the static interval.
#[tokio::test]
async fn kv1_expiration_keys_are_user_data() {
    let vault = walkthrough_vault().await;
    vault.kv1_put("kv", "zero", json!({"password": "a", "expiration": 0}));
    vault.kv1_put(
        "kv",
        "millis",
        json!({"password": "b", "expiration": 1_900_000_000_000_u64}),
    );
    vault.put_policy(
        "myapp-kv-ro",
        &[("secret/data/myapp/*", &["read"]), ("kv/*", &["read"])],
    );
    let h = Harness::builder().vault(vault).start().await;
    let attrs = [
        ROLE,
        (
            "template.pw",
            r#"{{#with (secret "kv/zero")}}{{data.password}}{{/with}}{{#with (secret "kv/millis")}}{{data.password}}{{/with}}"#,
        ),
        ("staticSecretRefreshInterval", "1s"),
    ];
    let target = h.publish_ok(&attrs).await;
    assert_eq!(read(&target.join("pw")), "ab");
    wait_for(
        "re-reads of the millisecond secret",
        Duration::from_secs(10),
        || h.vault.count("GET", "/v1/kv/millis") >= 3,
    )
    .await;
    let (zero, millis) = (
        h.vault.count("GET", "/v1/kv/zero"),
        h.vault.count("GET", "/v1/kv/millis"),
    );
    assert!(
        zero <= millis + 2,
        "kv/zero read {zero} times while kv/millis was read {millis} times"
    );
    h.stop().await;
}

/// A standby's 307 is temporary: the publish retries at the configured
/// address and never sends the JWT to an address nobody allowed; once the
/// redirects outlast the retries, the publish fails `UNAVAILABLE`.
#[tokio::test]
async fn standby_redirects_are_retried_at_the_configured_address() {
    let vault = walkthrough_vault().await;
    let elsewhere = VaultDouble::start().await;
    let h = Harness::builder().vault(vault).start().await;
    h.vault.set_standby(Some(&elsewhere.addr()));
    let clear = {
        let vault = h.vault.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            vault.set_standby(None);
        })
    };
    let target = h
        .publish_ok(&[ROLE, ("template.index.html", INDEX_TEMPLATE)])
        .await;
    clear.await.unwrap();
    assert_walkthrough_page(&target);
    assert!(h.vault.requests().iter().any(|r| r.status == 307));

    h.vault.set_standby(Some(&elsewhere.addr()));
    let other = Pod::new("default", "other", "vault-auth");
    let status = h
        .client()
        .await
        .node_publish_volume(h.request_for(
            &other,
            "v",
            &[ROLE, ("template.index.html", INDEX_TEMPLATE)],
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    assert!(status.message().contains("standby"), "{}", status.message());
    assert!(
        elsewhere.requests().is_empty(),
        "nothing was sent to an address nobody allowed"
    );
    h.stop().await;
}

/// A redirect to an allowed address is followed once, as Vault's client
/// does.
#[tokio::test]
async fn redirects_to_allowed_addresses_are_followed() {
    let standby = walkthrough_vault().await;
    let active = walkthrough_vault().await;
    standby.set_standby(Some(&active.addr()));
    let allowed = active.addr().parse().unwrap();
    let h = Harness::builder()
        .vault(standby)
        .config(move |config| config.allowed_vault_addrs = vec![allowed])
        .start()
        .await;
    let target = h
        .publish_ok(&[ROLE, ("template.index.html", INDEX_TEMPLATE)])
        .await;
    assert_walkthrough_page(&target);
    assert_eq!(active.count("POST", "/v1/auth/kubernetes/login"), 1);
    h.stop().await;
}

/// A token or lease renewal answered 307 is retried, not replaced by a new
/// login or a new credential.
#[tokio::test]
async fn renewals_answered_307_are_retried_not_replaced() {
    // Long enough that the redirects end before the token does.
    let creds = DynamicRole::new(Duration::from_secs(12), Duration::from_secs(600));
    let h = Harness::builder()
        .vault(dynamic_vault(creds, Duration::from_secs(12), Duration::from_secs(600)).await)
        .start()
        .await;
    let target = h
        .publish_ok(&[ROLE, ("template.creds", CREDS_TEMPLATE)])
        .await;
    let first = read(&target.join("creds"));
    h.vault.set_standby(Some("http://127.0.0.1:9"));
    let redirected = |path: &str, status: u16| {
        h.vault
            .requests()
            .iter()
            .any(|r| r.path == path && r.status == status)
    };
    wait_for("redirected renewals", Duration::from_secs(20), || {
        redirected("/v1/auth/token/renew-self", 307) && redirected("/v1/sys/leases/renew", 307)
    })
    .await;
    h.vault.set_standby(None);
    wait_for("renewals", Duration::from_secs(15), || {
        redirected("/v1/auth/token/renew-self", 200) && redirected("/v1/sys/leases/renew", 200)
    })
    .await;
    assert_eq!(h.vault.count("POST", "/v1/auth/kubernetes/login"), 1);
    assert_eq!(h.vault.count("GET", "/v1/database/creds/app"), 1);
    assert_eq!(read(&target.join("creds")), first);
    h.stop().await;
}

/// `Retry-After` as an HTTP-date is honoured during a publish.
#[tokio::test]
async fn http_date_retry_after_is_honoured() {
    let vault = walkthrough_vault().await;
    vault.set_rate_limit_headers(Some(RetryAfterFormat::HttpDate));
    let h = Harness::builder().vault(vault).start().await;
    h.vault.rate_limit_next(1, 2);
    h.publish_ok(&[ROLE, ("template.index.html", INDEX_TEMPLATE)])
        .await;
    let requests = h.vault.requests();
    let limited = requests.iter().find(|r| r.status == 429).unwrap();
    let retry = requests
        .iter()
        .find(|r| r.path == limited.path && r.status == 200)
        .unwrap();
    let waited = retry.at.duration_since(limited.at).unwrap();
    assert!(waited >= Duration::from_secs(2), "retried after {waited:?}");
    h.stop().await;
}

/// A `Retry-After` longer than a publish can wait fails the publish at
/// once with `UNAVAILABLE` saying when to retry, instead of retrying inside
/// Vault's block interval.
#[tokio::test]
async fn a_long_retry_after_fails_the_publish_saying_when() {
    let vault = walkthrough_vault().await;
    vault.set_rate_limit_headers(Some(RetryAfterFormat::Seconds));
    let h = Harness::builder().vault(vault).start().await;
    h.vault.rate_limit_next(50, 60);
    let status = tokio::time::timeout(Duration::from_secs(20), async {
        h.client()
            .await
            .node_publish_volume(h.request_for(
                &h.pod,
                "v",
                &[ROLE, ("template.index.html", INDEX_TEMPLATE)],
            ))
            .await
    })
    .await
    .expect("the publish does not wait a minute")
    .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    assert!(
        status.message().contains("retry in 60 s"),
        "{}",
        status.message()
    );
    assert_eq!(
        h.vault
            .requests()
            .iter()
            .filter(|r| r.status == 429)
            .count(),
        1
    );
    h.stop().await;
}

/// renew-self answered 500 (the role was deleted, or the token is past its
/// max TTL) is not retried until the token expires: the driver logs in
/// again.
#[tokio::test]
async fn a_token_renewal_answered_500_leads_to_a_new_login() {
    let vault = walkthrough_vault().await;
    vault.add_role(
        "kubernetes",
        example_role(Duration::from_secs(6), Duration::from_secs(600)),
    );
    let h = Harness::builder().vault(vault).start().await;
    h.publish_ok(&[ROLE, ("template.index.html", INDEX_TEMPLATE)])
        .await;
    h.vault.remove_role("kubernetes", "example");
    wait_for("a renewal answered 500", Duration::from_secs(15), || {
        h.vault
            .requests()
            .iter()
            .any(|r| r.path == "/v1/auth/token/renew-self" && r.status == 500)
    })
    .await;
    wait_for("a new login", Duration::from_secs(15), || {
        h.vault.count("POST", "/v1/auth/kubernetes/login") >= 2
    })
    .await;
    let requests = h.vault.requests();
    let first_500 = requests
        .iter()
        .position(|r| r.path == "/v1/auth/token/renew-self" && r.status == 500)
        .unwrap();
    let next_login = first_500
        + requests[first_500..]
            .iter()
            .position(|r| r.path == "/v1/auth/kubernetes/login")
            .unwrap();
    assert_eq!(
        requests[first_500..next_login]
            .iter()
            .filter(|r| r.path == "/v1/auth/token/renew-self")
            .count(),
        1,
        "the failed renewal was not retried before logging in again"
    );
    h.vault.add_role(
        "kubernetes",
        example_role(Duration::from_secs(6), Duration::from_secs(600)),
    );
    wait_for("a successful login", Duration::from_secs(30), || {
        h.vault
            .requests()
            .iter()
            .filter(|r| r.path == "/v1/auth/kubernetes/login" && r.status == 200)
            .count()
            >= 2
    })
    .await;
    h.stop().await;
}

/// A write answered 204 is a success with no data.
#[tokio::test]
async fn writes_answered_204_succeed() {
    let vault = walkthrough_vault().await;
    vault.enable_kv1("kv");
    vault.put_policy(
        "myapp-kv-ro",
        &[
            ("secret/data/myapp/*", &["read"]),
            ("kv/*", &["create", "update"]),
        ],
    );
    let h = Harness::builder().vault(vault).start().await;
    let attrs = [
        ROLE,
        (
            "template.ack",
            r#"{{#with (secret "kv/seen" by="driver")}}written{{/with}}"#,
        ),
    ];
    let target = h.publish_ok(&attrs).await;
    assert_eq!(read(&target.join("ack")), "written");
    assert!(
        h.vault
            .requests()
            .iter()
            .any(|r| r.path == "/v1/kv/seen" && r.status == 204)
    );
    h.stop().await;
}

/// A deleted KV v2 version is named in the error, and a refresh that meets
/// it keeps the last good files.
#[tokio::test]
async fn deleted_kv2_versions_are_named_and_the_files_kept() {
    let h = Harness::walkthrough().await;
    let attrs = [
        ROLE,
        ("template.index.html", INDEX_TEMPLATE),
        ("staticSecretRefreshInterval", "1s"),
    ];
    let target = h.publish_ok(&attrs).await;
    h.vault.kv2_delete("secret", "myapp/config", &[]);
    wait_for(
        "a read of the deleted version",
        Duration::from_secs(10),
        || {
            h.vault
                .requests()
                .iter()
                .any(|r| r.path == "/v1/secret/data/myapp/config" && r.status == 404)
        },
    )
    .await;
    assert_walkthrough_page(&target);

    let other = Pod::new("default", "other", "vault-auth");
    let status = h
        .client()
        .await
        .node_publish_volume(h.request_for(&other, "v", &attrs))
        .await
        .unwrap_err();
    assert!(
        status
            .message()
            .contains("version 1 of secret/data/myapp/config was deleted at "),
        "{}",
        status.message()
    );
    h.stop().await;
}

/// Static database credentials carry no lease: they are read again just
/// after their rotation, not at the KV interval.
#[tokio::test]
async fn static_credentials_are_read_again_after_rotation() {
    let vault = walkthrough_vault().await;
    vault.add_static_role("database", "app", Duration::from_secs(3));
    vault.put_policy("myapp-kv-ro", &[("database/static-creds/*", &["read"])]);
    let h = Harness::builder().vault(vault).start().await;
    let attrs = [
        ROLE,
        (
            "template.pw",
            r#"{{#with (secret "database/static-creds/app")}}{{data.password}}{{/with}}"#,
        ),
    ];
    let target = h.publish_ok(&attrs).await;
    let first = read(&target.join("pw"));
    wait_for("the rotated password", Duration::from_secs(10), || {
        read(&target.join("pw")) != first
    })
    .await;
    h.stop().await;
}

/// Unpublish revokes with revoke-self only: `sys/leases/revoke` is not in
/// Vault's default policy, and revoke-self revokes the token's leases.
#[tokio::test]
async fn unpublish_sends_no_lease_revocations() {
    let creds = DynamicRole::new(Duration::from_secs(600), Duration::from_secs(1200));
    let h = Harness::dynamic(creds).await;
    let _target = h
        .publish_ok(&[ROLE, ("template.creds", CREDS_TEMPLATE)])
        .await;
    h.unpublish_ok("v").await;
    assert_eq!(h.vault.count("PUT", "/v1/sys/leases/revoke"), 0);
    assert_eq!(h.vault.count("POST", "/v1/auth/token/revoke-self"), 1);
    assert!(h.vault.leases().iter().all(|l| l.revoked));
    h.stop().await;
}

/// The walkthrough's template reading `secret/myapp/config`, the KV v2
/// path as Vault Agent's users write it (no `data/`).
const INDEX_WITHOUT_DATA: &str = r#"{{#with (secret "secret/myapp/config")}}{{data.data.username}}:{{data.data.password}}{{/with}}"#;

/// Requests the double answered at exactly `path` (no query).
fn sent(vault: &VaultDouble, method: &str, path: &str) -> usize {
    vault
        .requests()
        .iter()
        .filter(|r| r.method == method && r.path == format!("/v1/{path}"))
        .count()
}

/// A KV v2 path written without `data/` is read where Vault Agent reads
/// it: the mount is looked up once (`sys/internal/ui/mounts`), and the
/// read goes to `secret/data/…`; later reads on that mount, by any pod,
/// use the kept answer.
#[tokio::test]
async fn kv2_paths_without_data_are_read_where_the_agent_reads_them() {
    let h = Harness::walkthrough().await;
    let target = h
        .publish_ok(&[ROLE, ("template.page", INDEX_WITHOUT_DATA)])
        .await;
    assert_eq!(read(&target.join("page")), "appuser:suP3rsec(et!");
    let v = &h.vault;
    assert_eq!(
        sent(v, "GET", "sys/internal/ui/mounts/secret/myapp/config"),
        1
    );
    assert_eq!(sent(v, "GET", "secret/data/myapp/config"), 1);
    assert_eq!(
        sent(v, "GET", "secret/myapp/config"),
        0,
        "{:?}",
        v.requests()
    );

    // Another pod's volume on the same mount, and the walkthrough's own
    // `data/` path: no more lookups.
    let other = Pod::new("default", "other", "vault-auth");
    h.send_ok(h.request_for(&other, "v", &[ROLE, ("template.page", INDEX_WITHOUT_DATA)]))
        .await;
    let third = Pod::new("default", "third", "vault-auth");
    h.send_ok(h.request_for(
        &third,
        "v",
        &[ROLE, ("template.index.html", INDEX_TEMPLATE)],
    ))
    .await;
    assert_eq!(v.count("GET", "/v1/sys/internal/ui/mounts/"), 1);
    assert_eq!(sent(v, "GET", "secret/data/myapp/config"), 3);
    h.stop().await;
}

/// KV v1 paths are read as written; a token Vault refuses the lookup
/// (no capability under the mount) reads the path as written, as the
/// agent does, and is refused there.
#[tokio::test]
async fn kv1_paths_and_refused_lookups_read_the_path_as_written() {
    let vault = walkthrough_vault().await;
    vault.kv1_put("kv", "app", json!({"password": "v1"}));
    vault.enable_kv2("private");
    vault.kv2_put("private", "app", json!({"password": "hidden"}));
    vault.put_policy(
        "myapp-kv-ro",
        &[("secret/data/myapp/*", &["read"]), ("kv/*", &["read"])],
    );
    let h = Harness::builder().vault(vault).start().await;
    let v1 = r#"{{#with (secret "kv/app")}}{{data.password}}{{/with}}"#;
    let target = h.publish_ok(&[ROLE, ("template.pw", v1)]).await;
    assert_eq!(read(&target.join("pw")), "v1");
    assert_eq!(sent(&h.vault, "GET", "sys/internal/ui/mounts/kv/app"), 1);
    assert_eq!(sent(&h.vault, "GET", "kv/app"), 1);

    let private = r#"{{#with (secret "private/app")}}{{data.data.password}}{{/with}}"#;
    let status = h
        .send_err(h.request("p", &[ROLE, ("template.pw", private)]))
        .await;
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "{}",
        status.message()
    );
    let requests = h.vault.requests();
    let lookup = requests
        .iter()
        .find(|r| r.path == "/v1/sys/internal/ui/mounts/private/app")
        .expect("the mount was asked about");
    assert_eq!(lookup.status, 403);
    assert!(sent(&h.vault, "GET", "private/app") >= 1, "{requests:?}");
    assert_eq!(sent(&h.vault, "GET", "private/data/app"), 0);
    h.stop().await;
}

/// `secrets` lists as Vault's Go client does (`GET …?list=true`); a KV v2
/// folder written without `metadata/` is listed where the agent lists it,
/// and a folder with no keys (404) lists nothing.
#[tokio::test]
async fn secrets_lists_keys_and_an_empty_folder_lists_nothing() {
    let h = Harness::walkthrough().await;
    h.vault
        .kv2_put("secret", "myapp/second", json!({"password": "2"}));
    let each =
        r#"{{#with (secrets "secret/myapp")}}{{#each data.keys}}{{this}};{{/each}}{{/with}}"#;
    let empty = r#"[{{#with (secrets "secret/metadata/myapp/none/")}}{{#each data.keys}}{{this}};{{/each}}{{/with}}]"#;
    let target = h
        .publish_ok(&[ROLE, ("template.keys", each), ("template.none", empty)])
        .await;
    assert_eq!(read(&target.join("keys")), "config;second;");
    assert_eq!(read(&target.join("none")), "[]");
    let requests = h.vault.requests();
    let mut lists: Vec<(&str, u16)> = requests
        .iter()
        .filter(|r| r.method == "GET" && r.query == "list=true")
        .map(|r| (r.path.as_str(), r.status))
        .collect();
    lists.sort_unstable();
    assert_eq!(
        lists,
        [
            ("/v1/secret/metadata/myapp", 200),
            ("/v1/secret/metadata/myapp/none", 404)
        ],
        "{requests:?}"
    );
    h.stop().await;
}

/// A lookup Vault pushes back on (429) is no answer: the publish fails as
/// temporary (kubelet retries) instead of reading the path as written,
/// where KV v2 could only refuse it; once Vault answers, it renders.
#[tokio::test]
async fn a_lookup_vault_pushes_back_on_fails_the_publish_as_temporary() {
    let h = Harness::walkthrough().await;
    h.vault.rate_limit_path("sys/internal/ui/mounts/", Some(60));
    let attrs = [ROLE, ("template.page", INDEX_WITHOUT_DATA)];
    let status = h.send_err(h.request("v", &attrs)).await;
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    assert_eq!(sent(&h.vault, "GET", "secret/myapp/config"), 0);
    h.vault.clear_rate_limit_path("sys/internal/ui/mounts/");
    let target = h.publish_ok(&attrs).await;
    assert_eq!(read(&target.join("page")), "appuser:suP3rsec(et!");
    h.stop().await;
}
