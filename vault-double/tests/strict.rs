//! The behaviours that make the double as strict as Vault's own code: each
//! test names the Vault source it follows (see the table in README.md).

use std::time::{Duration, SystemTime};

use reqwest::{Client, Method};
use serde_json::{Value, json};
use vault_double::{DynamicRole, RetryAfterFormat, Role, SaToken, VaultDouble, seed_walkthrough};

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Option<Value>,
}

impl Answer {
    fn json(&self) -> &Value {
        self.body.as_ref().expect("a JSON body")
    }

    fn errors(&self) -> Vec<String> {
        serde_json::from_value(self.json()["errors"].clone()).unwrap_or_default()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

struct Env {
    vault: VaultDouble,
    http: Client,
}

impl Env {
    async fn new() -> Self {
        let vault = VaultDouble::start().await;
        seed_walkthrough(&vault);
        let http = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self { vault, http }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Answer {
        let mut req = self.http.request(
            Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}/v1/{path}", self.vault.addr()),
        );
        if let Some(token) = token {
            req = req.header("X-Vault-Token", token);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        Answer {
            status,
            headers,
            body: serde_json::from_slice(&bytes).ok(),
        }
    }

    async fn login_in(&self, role: &str, sa_namespace: &str, vault_ns: Option<&str>) -> Answer {
        let jwt = self
            .vault
            .sign_sa_token(&SaToken::new(sa_namespace, "vault-auth", ["vault"]));
        let headers: Vec<(&str, &str)> = vault_ns
            .map(|ns| vec![("X-Vault-Namespace", ns)])
            .unwrap_or_default();
        self.call(
            "POST",
            "auth/kubernetes/login",
            None,
            &headers,
            Some(json!({"role": role, "jwt": jwt})),
        )
        .await
    }

    async fn token(&self, role: &str) -> String {
        let r = self.login_in(role, "default", None).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.json()["auth"]["client_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

fn role(name: &str) -> Role {
    Role::new(name, ["vault-auth"], ["default"], ["myapp-kv-ro"]).with_audience("vault")
}

/// `http/handler.go` `respondStandby`: 307 with the active node's address;
/// health says standby with 429.
#[tokio::test]
async fn a_standby_redirects_every_request_to_the_active_node() {
    let env = Env::new().await;
    let token = env.token("example").await;
    env.vault.set_standby(Some("https://active.example:8200"));
    let r = env
        .call(
            "GET",
            "secret/data/myapp/config?version=1",
            Some(&token),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, 307);
    assert_eq!(
        r.header("location"),
        Some("https://active.example:8200/v1/secret/data/myapp/config?version=1")
    );
    let r = env.call("GET", "sys/health", None, &[], None).await;
    assert_eq!((r.status, &r.json()["standby"]), (429, &json!(true)));
    env.vault.set_standby(None);
    let r = env
        .call("GET", "secret/data/myapp/config", Some(&token), &[], None)
        .await;
    assert_eq!(r.status, 200);
}

/// A write answers `X-Vault-Index`; a request requiring an index state the
/// node does not have answers 412 (`logical.ErrMissingRequiredState`).
#[tokio::test]
async fn a_missing_index_state_answers_412() {
    let env = Env::new().await;
    let token = env.token("example").await;
    env.vault.put_policy(
        "myapp-kv-ro",
        &[("secret/data/myapp/*", &["read", "create", "update"])],
    );
    let token2 = env.token("example").await;
    let w = env
        .call(
            "POST",
            "secret/data/myapp/other",
            Some(&token2),
            &[],
            Some(json!({"data": {"a": 1}})),
        )
        .await;
    assert_eq!(w.status, 200);
    let index = w.header("x-vault-index").unwrap().to_owned();
    let r = env
        .call(
            "GET",
            "secret/data/myapp/other",
            Some(&token),
            &[("X-Vault-Index", &index)],
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let r = env
        .call(
            "GET",
            "secret/data/myapp/other",
            Some(&token),
            &[("X-Vault-Index", "vd-999")],
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (412, vec!["required index state not present".to_owned()])
    );
}

/// Tokens and leases carry their namespace's `.<nsid>` and are not found
/// from another namespace.
#[tokio::test]
async fn tokens_and_leases_belong_to_their_namespace() {
    let env = Env::new().await;
    env.vault.add_dynamic_role(
        "database",
        "app",
        DynamicRole::new(Duration::from_secs(60), Duration::from_secs(600)),
    );
    env.vault
        .put_policy("db", &[("database/creds/*", &["read"])]);
    env.vault.add_role(
        "kubernetes",
        Role::new("db", ["vault-auth"], ["default"], ["db"]),
    );
    let ns = [("X-Vault-Namespace", "team-a")];
    let r = env.login_in("db", "default", Some("team-a")).await;
    let team_token = r.json()["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (prefix, suffix) = team_token.rsplit_once('.').unwrap();
    assert!(
        prefix.starts_with("hvs.") && suffix.len() == 5,
        "{team_token}"
    );
    let r = env
        .call("GET", "database/creds/app", Some(&team_token), &ns, None)
        .await;
    assert_eq!(r.status, 200);
    let lease = r.json()["lease_id"].as_str().unwrap().to_owned();
    assert!(lease.ends_with(&format!(".{suffix}")), "{lease}");
    assert_eq!(
        env.vault.lease(&lease).unwrap().vault_namespace.as_deref(),
        Some("team-a")
    );
    // The token is not found from the root namespace.
    let r = env
        .call(
            "GET",
            "auth/token/lookup-self",
            Some(&team_token),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, 403);
    // A root token cannot renew the namespaced lease.
    let root_token = env.login_in("db", "default", None).await.json()["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = env
        .call(
            "PUT",
            "sys/leases/renew",
            Some(&root_token),
            &[],
            Some(json!({"lease_id": lease})),
        )
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (400, vec!["lease not found".to_owned()])
    );
    let r = env
        .call(
            "PUT",
            "sys/leases/renew",
            Some(&team_token),
            &ns,
            Some(json!({"lease_id": lease})),
        )
        .await;
    assert_eq!(r.status, 200);
}

/// `path_data.go`: a deleted or destroyed version answers 404 with the
/// whole envelope and no `errors`; undelete brings a deleted one back.
#[tokio::test]
async fn kv2_deleted_and_destroyed_versions_answer_404_with_the_envelope() {
    let env = Env::new().await;
    let token = env.token("example").await;
    env.vault
        .kv2_put("secret", "myapp/config", json!({"password": "two"}));
    env.vault.kv2_delete("secret", "myapp/config", &[]);
    let r = env
        .call("GET", "secret/data/myapp/config", Some(&token), &[], None)
        .await;
    assert_eq!(r.status, 404);
    let body = r.json();
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(body["data"]["data"], Value::Null);
    assert_eq!(body["data"]["metadata"]["version"], 2);
    assert_eq!(body["data"]["metadata"]["destroyed"], false);
    assert!(
        !body["data"]["metadata"]["deletion_time"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    // Older versions still read.
    let r = env
        .call(
            "GET",
            "secret/data/myapp/config?version=1",
            Some(&token),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, 200);

    env.vault.put_policy(
        "myapp-kv-ro",
        &[("secret/*", &["read", "create", "update", "delete"])],
    );
    let admin = env.token("example").await;
    let r = env
        .call(
            "POST",
            "secret/undelete/myapp/config",
            Some(&admin),
            &[],
            Some(json!({"versions": [2]})),
        )
        .await;
    assert_eq!(r.status, 204);
    let r = env
        .call("GET", "secret/data/myapp/config", Some(&admin), &[], None)
        .await;
    assert_eq!(r.json()["data"]["data"]["password"], "two");
    let r = env
        .call(
            "POST",
            "secret/destroy/myapp/config",
            Some(&admin),
            &[],
            Some(json!({"versions": [2]})),
        )
        .await;
    assert_eq!(r.status, 204);
    let r = env
        .call("GET", "secret/data/myapp/config", Some(&admin), &[], None)
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["data"]["metadata"]["destroyed"], true);
    assert_eq!(r.json()["data"]["metadata"]["deletion_time"], "");
    // DELETE on data/ soft-deletes the latest version.
    env.vault
        .kv2_put("secret", "myapp/config", json!({"password": "three"}));
    let r = env
        .call(
            "DELETE",
            "secret/data/myapp/config",
            Some(&admin),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    let r = env
        .call("GET", "secret/data/myapp/config", Some(&admin), &[], None)
        .await;
    assert_eq!(
        (r.status, &r.json()["data"]["metadata"]["version"]),
        (404, &json!(3))
    );
}

/// Batch tokens (`hvb.`) cannot be renewed; periodic tokens renew to their
/// period with no max TTL; `renewable` follows the role.
#[tokio::test]
async fn batch_periodic_and_non_renewable_tokens() {
    let env = Env::new().await;
    env.vault.add_role("kubernetes", role("batch").batch());
    env.vault.add_role(
        "kubernetes",
        role("periodic")
            .with_ttl(Duration::from_secs(60), Duration::from_secs(120))
            .with_period(Duration::from_secs(90)),
    );
    env.vault
        .add_role("kubernetes", role("fixed").non_renewable());

    let r = env.login_in("batch", "default", None).await;
    let auth = &r.json()["auth"];
    assert!(auth["client_token"].as_str().unwrap().starts_with("hvb."));
    assert_eq!(
        (&auth["renewable"], &auth["token_type"]),
        (&json!(false), &json!("batch"))
    );
    let batch = auth["client_token"].as_str().unwrap().to_owned();
    let r = env
        .call(
            "POST",
            "auth/token/renew-self",
            Some(&batch),
            &[],
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (400, vec!["batch tokens cannot be renewed".to_owned()])
    );

    let r = env.login_in("periodic", "default", None).await;
    assert_eq!(r.json()["auth"]["lease_duration"], 90);
    let periodic = r.json()["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = env
        .call(
            "POST",
            "auth/token/renew-self",
            Some(&periodic),
            &[],
            Some(json!({"increment": 3600})),
        )
        .await;
    assert_eq!(
        (r.status, &r.json()["auth"]["lease_duration"]),
        (200, &json!(90))
    );
    assert_eq!(r.json()["warnings"], Value::Null);

    let r = env.login_in("fixed", "default", None).await;
    assert_eq!(r.json()["auth"]["renewable"], false);
    let fixed = r.json()["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = env
        .call(
            "POST",
            "auth/token/renew-self",
            Some(&fixed),
            &[],
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (400, vec!["lease is not renewable".to_owned()])
    );
}

/// The token self endpoints and `sys/leases/*` are ACL paths: the default
/// policy grants the former and `sys/leases/renew`, never
/// `sys/leases/revoke`; `token_no_default_policy` loses them all.
#[tokio::test]
async fn token_endpoints_and_lease_revocation_follow_policy() {
    let env = Env::new().await;
    env.vault
        .add_role("kubernetes", role("bare").without_default_policy());
    let bare = env.token("bare").await;
    for (method, path) in [
        ("GET", "auth/token/lookup-self"),
        ("POST", "auth/token/renew-self"),
        ("POST", "auth/token/revoke-self"),
    ] {
        let r = env
            .call(method, path, Some(&bare), &[], Some(json!({})))
            .await;
        assert_eq!(r.status, 403, "{path}");
    }
    let token = env.token("example").await;
    let r = env
        .call("GET", "auth/token/lookup-self", Some(&token), &[], None)
        .await;
    assert_eq!(r.status, 200);
    let r = env
        .call(
            "PUT",
            "sys/leases/revoke",
            Some(&token),
            &[],
            Some(json!({"lease_id": "x/y"})),
        )
        .await;
    assert_eq!(r.status, 403);
    let r = env
        .call("POST", "auth/token/revoke-self", Some(&token), &[], None)
        .await;
    assert_eq!(r.status, 204);
}

/// Renewing a token whose role was deleted answers 500, as the Kubernetes
/// plugin's `pathLoginRenew` returns a plain error.
#[tokio::test]
async fn renewing_after_the_role_is_deleted_answers_500() {
    let env = Env::new().await;
    let token = env.token("example").await;
    env.vault.remove_role("kubernetes", "example");
    let r = env
        .call(
            "POST",
            "auth/token/renew-self",
            Some(&token),
            &[],
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (
            500,
            vec!["role example does not exist during renewal".to_owned()]
        )
    );
}

/// `quotas_rate_limit.go`: `Retry-After` only with response headers on, as
/// seconds or (older versions) an HTTP-date.
#[tokio::test]
async fn retry_after_comes_in_both_formats_only_when_enabled() {
    let env = Env::new().await;
    env.vault.rate_limit_next(1, 30);
    let r = env.call("GET", "sys/health", None, &[], None).await;
    assert_eq!((r.status, r.header("retry-after")), (429, None));
    env.vault
        .set_rate_limit_headers(Some(RetryAfterFormat::HttpDate));
    env.vault.rate_limit_next(1, 30);
    let r = env.call("GET", "sys/health", None, &[], None).await;
    assert_eq!(r.status, 429);
    let date = httpdate_parse(r.header("retry-after").unwrap());
    let wait = date.duration_since(SystemTime::now()).unwrap();
    assert!(
        wait >= Duration::from_secs(29) && wait <= Duration::from_secs(32),
        "{wait:?}"
    );
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    env.vault
        .set_rate_limit_headers(Some(RetryAfterFormat::Seconds));
    env.vault.rate_limit_next(1, 0);
    let r = env.call("GET", "sys/health", None, &[], None).await;
    assert_eq!(r.header("retry-after"), Some("0"));
}

fn httpdate_parse(s: &str) -> SystemTime {
    // `Wed, 21 Oct 2015 07:28:00 GMT`
    let parts: Vec<&str> = s.split_whitespace().collect();
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = months.iter().position(|m| *m == parts[2]).unwrap() + 1;
    let (day, year): (i64, i64) = (parts[1].parse().unwrap(), parts[3].parse().unwrap());
    let hms: Vec<i64> = parts[4].split(':').map(|x| x.parse().unwrap()).collect();
    // Days from civil (Howard Hinnant).
    let (y, m) = if month <= 2 {
        (year - 1, month as i64 + 9)
    } else {
        (year, month as i64 - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86400 + hms[0] * 3600 + hms[1] * 60 + hms[2];
    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap())
}

/// `tokenutil`: a role whose `token_ttl` exceeds its `token_max_ttl` is
/// refused when written.
#[tokio::test]
async fn roles_with_ttl_above_max_are_refused() {
    let env = Env::new().await;
    let refused = env.vault.try_add_role(
        "kubernetes",
        role("bad").with_ttl(Duration::from_secs(7200), Duration::from_secs(3600)),
    );
    assert_eq!(
        refused.unwrap_err(),
        "'token_ttl' cannot be greater than 'token_max_ttl'"
    );
    assert!(
        env.vault
            .try_add_role(
                "kubernetes",
                role("ok").with_ttl(Duration::from_secs(7200), Duration::ZERO)
            )
            .is_ok()
    );
}

/// Warnings print durations as `humanDuration` does: `1h5s`, not `1h0m5s`.
#[tokio::test]
async fn warnings_use_vaults_duration_format() {
    let env = Env::new().await;
    env.vault.add_role(
        "kubernetes",
        role("short").with_ttl(Duration::from_secs(60), Duration::from_secs(3600)),
    );
    let token = env.token("short").await;
    let r = env
        .call(
            "POST",
            "auth/token/renew-self",
            Some(&token),
            &[],
            Some(json!({"increment": 3605})),
        )
        .await;
    let warning = r.json()["warnings"][0].as_str().unwrap().to_owned();
    assert!(
        warning.starts_with("TTL of \"1h5s\" exceeded the effective max_ttl of \""),
        "{warning}"
    );
}

/// `bound_service_account_namespaces` takes globs.
#[tokio::test]
async fn bound_namespaces_take_globs() {
    let env = Env::new().await;
    env.vault.add_role(
        "kubernetes",
        Role::new("teams", ["vault-auth"], ["team-*"], ["myapp-kv-ro"]),
    );
    assert_eq!(env.login_in("teams", "team-blue", None).await.status, 200);
    let r = env.login_in("teams", "default", None).await;
    assert_eq!(
        (r.status, r.errors()),
        (403, vec!["namespace not authorized".to_owned()])
    );
}

/// `database/static-creds/<role>`: no lease, `ttl` to the next rotation,
/// a new password after it.
#[tokio::test]
async fn static_roles_rotate_without_a_lease() {
    let env = Env::new().await;
    env.vault
        .add_static_role("database", "app", Duration::from_secs(2));
    env.vault
        .put_policy("db", &[("database/static-creds/*", &["read"])]);
    env.vault.add_role(
        "kubernetes",
        Role::new("db", ["vault-auth"], ["default"], ["db"]),
    );
    let token = env.token("db").await;
    let r = env
        .call("GET", "database/static-creds/app", Some(&token), &[], None)
        .await;
    assert_eq!(r.status, 200);
    let body = r.json().clone();
    assert_eq!(
        (&body["lease_id"], &body["lease_duration"]),
        (&json!(""), &json!(0))
    );
    let ttl = body["data"]["ttl"].as_u64().unwrap();
    assert!((1..=2).contains(&ttl), "{ttl}");
    tokio::time::sleep(Duration::from_secs(ttl) + Duration::from_millis(200)).await;
    let r = env
        .call("GET", "database/static-creds/app", Some(&token), &[], None)
        .await;
    assert_ne!(r.json()["data"]["password"], body["data"]["password"]);
    assert!(env.vault.leases().is_empty());
}

/// The fault injection for hostile answers patches only 2xx JSON answers
/// under the prefix.
#[tokio::test]
async fn answers_can_be_patched() {
    let env = Env::new().await;
    env.vault.patch_answers(
        "/v1/auth/kubernetes/login",
        "/auth/lease_duration",
        json!(0),
    );
    let r = env.login_in("example", "default", None).await;
    assert_eq!(r.json()["auth"]["lease_duration"], 0);
    let r = env.login_in("nope", "default", None).await;
    assert_eq!(r.status, 400);
}
