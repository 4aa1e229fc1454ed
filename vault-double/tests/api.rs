//! End-to-end tests of the Vault double over real HTTP: what a Vault client
//! (the driver) sees for login, KV, dynamic leases, tokens, policies,
//! faults and outages.

use std::time::{Duration, SystemTime};

use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Client, Method};
use serde_json::{Value, json};
use vault_double::{
    DynamicRole, Fault, RetryAfterFormat, Role, SaToken, VaultDouble, seed_walkthrough,
};

const INVALID_TOKEN: &str = "2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n";
const POLICY_DENIED: &str = "1 error occurred:\n\t* permission denied\n\n";

/// A client talking to one double.
struct Env {
    vault: VaultDouble,
    http: Client,
}

/// One response: status, `Content-Type`, `Retry-After`, parsed body.
#[derive(Debug)]
struct Resp {
    status: u16,
    content_type: Option<String>,
    retry_after: Option<String>,
    body: Option<Value>,
}

impl Resp {
    fn errors(&self) -> Vec<String> {
        let body = self.body.as_ref().expect("error responses have a body");
        serde_json::from_value(body["errors"].clone()).expect("errors is a string array")
    }

    fn json(&self) -> &Value {
        self.body.as_ref().expect("response has a JSON body")
    }
}

impl Env {
    async fn new() -> Self {
        let vault = VaultDouble::start().await;
        seed_walkthrough(&vault);
        Self {
            vault,
            http: Client::new(),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        self.try_call(method, path, token, body)
            .await
            .expect("request reaches the double")
    }

    async fn try_call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<Resp, reqwest::Error> {
        let method = Method::from_bytes(method.as_bytes()).expect("valid method");
        let mut req = self
            .http
            .request(method, format!("{}/v1/{path}", self.vault.addr()));
        if let Some(t) = token {
            req = req.header("X-Vault-Token", t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header(CONTENT_TYPE);
        let retry_after = header(RETRY_AFTER);
        let bytes = resp.bytes().await?;
        let body = if bytes.is_empty() {
            None
        } else {
            Some(serde_json::from_slice(&bytes).expect("body is JSON"))
        };
        Ok(Resp {
            status,
            content_type,
            retry_after,
            body,
        })
    }

    fn jwt(&self, ns: &str, sa: &str, aud: &[&str]) -> String {
        self.vault.sign_sa_token(&SaToken::new(ns, sa, aud))
    }

    async fn login_as(&self, role: &str, jwt: &str) -> Resp {
        self.call(
            "POST",
            "auth/kubernetes/login",
            None,
            Some(json!({"role": role, "jwt": jwt})),
        )
        .await
    }

    /// Logs in as the walkthrough's `default/vault-auth` and returns the token.
    async fn login(&self) -> String {
        let jwt = self.jwt("default", "vault-auth", &["vault"]);
        let resp = self.login_as("example", &jwt).await;
        assert_eq!(resp.status, 200, "{resp:?}");
        resp.json()["auth"]["client_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

const ENVELOPE_KEYS: [&str; 9] = [
    "auth",
    "data",
    "lease_duration",
    "lease_id",
    "mount_type",
    "renewable",
    "request_id",
    "wrap_info",
    "warnings",
];

/// A successful Kubernetes login returns the full envelope with Vault's
/// `auth` block, and the double tracks the token.
#[tokio::test]
async fn login_success_returns_auth_block() {
    let env = Env::new().await;
    let jwt = env.jwt("default", "vault-auth", &["vault", "other"]);
    let resp = env.login_as("example", &jwt).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.content_type.as_deref(), Some("application/json"));
    let body = resp.json();
    let mut expected = ENVELOPE_KEYS.to_vec();
    expected.sort_unstable();
    assert_eq!(keys(body), expected);
    assert_eq!(body["lease_id"], "");
    assert_eq!(body["lease_duration"], 0);
    assert_eq!(body["renewable"], false);
    assert_eq!(body["data"], Value::Null);
    assert_eq!(body["wrap_info"], Value::Null);
    assert_eq!(body["warnings"], Value::Null);

    let auth = &body["auth"];
    let token = auth["client_token"].as_str().unwrap();
    assert!(token.starts_with("hvs.") && token.len() >= 28, "{token}");
    assert!(!auth["accessor"].as_str().unwrap().is_empty());
    assert_eq!(auth["policies"], json!(["default", "myapp-kv-ro"]));
    assert_eq!(auth["token_policies"], json!(["default", "myapp-kv-ro"]));
    let meta = &auth["metadata"];
    assert_eq!(
        keys(meta),
        [
            "role",
            "service_account_name",
            "service_account_namespace",
            "service_account_secret_name",
            "service_account_uid"
        ]
    );
    assert_eq!(meta["role"], "example");
    assert_eq!(meta["service_account_name"], "vault-auth");
    assert_eq!(meta["service_account_namespace"], "default");
    assert_eq!(meta["service_account_secret_name"], "");
    assert_eq!(auth["lease_duration"], 24 * 3600);
    assert_eq!(auth["renewable"], true);
    assert_eq!(auth["token_type"], "service");
    assert_eq!(auth["orphan"], true);
    assert_eq!(auth["num_uses"], 0);
    assert!(!auth["entity_id"].as_str().unwrap().is_empty());

    let state = env.vault.token(token).expect("token is tracked");
    assert_eq!(state.role, "example");
    assert_eq!(state.service_account, "vault-auth");
    assert_eq!(state.namespace, "default");
    assert!(!state.revoked);
    let by_accessor = env.vault.token(auth["accessor"].as_str().unwrap()).unwrap();
    assert_eq!(by_accessor.client_token, token);
}

/// Each documented login failure gives its status and message.
#[tokio::test]
async fn login_errors_match_the_kubernetes_plugin() {
    let env = Env::new().await;
    let good = env.jwt("default", "vault-auth", &["vault"]);
    let login = |body: Value| env.call("POST", "auth/kubernetes/login", None, Some(body));

    let r = login(json!({"jwt": good})).await;
    assert_eq!(
        (r.status, r.errors()),
        (400, vec!["missing role".to_owned()])
    );

    let r = login(json!({"role": "example"})).await;
    assert_eq!(
        (r.status, r.errors()),
        (400, vec!["missing jwt".to_owned()])
    );

    let r = login(json!({"role": "nope", "jwt": good})).await;
    assert_eq!(
        (r.status, r.errors()),
        (400, vec!["invalid role name \"nope\"".to_owned()])
    );

    // A payload swapped under a valid signature fails verification.
    let other = env.jwt("default", "intruder", &["vault"]);
    let mut parts: Vec<&str> = good.split('.').collect();
    parts[1] = other.split('.').nth(1).unwrap();
    let r = login(json!({"role": "example", "jwt": parts.join(".")})).await;
    assert_eq!(
        (r.status, r.errors()),
        (403, vec!["permission denied".to_owned()])
    );

    let r = login(json!({"role": "example", "jwt": "not-a-jwt"})).await;
    assert_eq!(r.status, 403);

    let mut expired = SaToken::new("default", "vault-auth", ["vault"]);
    expired.expires_in = Duration::ZERO;
    let r = login(json!({"role": "example", "jwt": env.vault.sign_sa_token(&expired)})).await;
    assert_eq!(r.status, 403);
    assert!(r.errors()[0].contains("token is expired"), "{r:?}");

    let r =
        login(json!({"role": "example", "jwt": env.jwt("default", "vault-auth", &["api"])})).await;
    assert_eq!(
        (r.status, r.errors()),
        (403, vec!["permission denied".to_owned()])
    );

    let r =
        login(json!({"role": "example", "jwt": env.jwt("default", "someone", &["vault"])})).await;
    assert_eq!(
        (r.status, r.errors()),
        (403, vec!["service account name not authorized".to_owned()])
    );

    let r =
        login(json!({"role": "example", "jwt": env.jwt("prod", "vault-auth", &["vault"])})).await;
    assert_eq!(
        (r.status, r.errors()),
        (403, vec!["namespace not authorized".to_owned()])
    );

    let r = env
        .call(
            "POST",
            "auth/nosuch/login",
            None,
            Some(json!({"role": "example", "jwt": good})),
        )
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (
            404,
            vec!["no handler for route \"auth/nosuch/login\". route entry not found.".to_owned()]
        )
    );
    assert!(env.vault.tokens().is_empty());
}

/// Wildcard bindings and a role without audience accept any match.
#[tokio::test]
async fn wildcard_roles_accept_any_bound_account() {
    let env = Env::new().await;
    env.vault.enable_kubernetes_auth("jwt");
    env.vault
        .add_role("jwt", Role::new("any", ["app-*"], ["*"], ["p1", "p2"]));
    let jwt = env.jwt("team-a", "app-7", &["whatever"]);
    let r = env
        .call(
            "PUT",
            "auth/jwt/login",
            None,
            Some(json!({"role": "any", "jwt": jwt})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["auth"]["policies"], json!(["default", "p1", "p2"]));
    assert_eq!(r.json()["auth"]["lease_duration"], 3600);
}

/// KV v2 reads return the nested data/metadata envelope; misses are 404
/// with an empty `errors` array; writes create versions.
#[tokio::test]
async fn kv2_envelope_versions_and_misses() {
    let env = Env::new().await;
    let token = env.login().await;
    let r = env
        .call("GET", "secret/data/myapp/config", Some(&token), None)
        .await;
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(body["lease_id"], "");
    assert_eq!(body["lease_duration"], 0);
    assert_eq!(body["renewable"], false);
    assert_eq!(body["mount_type"], "kv");
    assert_eq!(
        body["data"]["data"],
        json!({"username": "appuser", "password": "suP3rsec(et!", "ttl": "30s"})
    );
    let meta = &body["data"]["metadata"];
    assert_eq!(meta["version"], 1);
    assert_eq!(meta["custom_metadata"], Value::Null);
    assert_eq!(meta["deletion_time"], "");
    assert_eq!(meta["destroyed"], false);
    let created = meta["created_time"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.contains('T'), "{created}");

    env.vault
        .kv2_put("secret", "myapp/config", json!({"username": "v2"}));
    let r = env
        .call("GET", "secret/data/myapp/config", Some(&token), None)
        .await;
    assert_eq!(r.json()["data"]["metadata"]["version"], 2);
    assert_eq!(r.json()["data"]["data"]["username"], "v2");
    let r = env
        .call(
            "GET",
            "secret/data/myapp/config?version=1",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.json()["data"]["data"]["username"], "appuser");
    let r = env
        .call(
            "GET",
            "secret/data/myapp/config?version=9",
            Some(&token),
            None,
        )
        .await;
    assert_eq!((r.status, r.errors()), (404, Vec::<String>::new()));

    let r = env
        .call("GET", "secret/data/myapp/missing", Some(&token), None)
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), &json!({"errors": []}));

    let r = env
        .call("LIST", "secret/metadata/myapp", Some(&token), None)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"]["keys"], json!(["config"]));

    // The read-only policy cannot write; a writer policy can.
    let r = env
        .call(
            "POST",
            "secret/data/myapp/new",
            Some(&token),
            Some(json!({"data": {"a": "b"}})),
        )
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (403, vec![POLICY_DENIED.to_owned()])
    );
    env.vault.put_policy(
        "myapp-kv-ro",
        &[
            ("secret/data/myapp/*", &["read", "create", "update"]),
            ("secret/metadata/myapp/*", &["list"]),
        ],
    );
    let r = env
        .call(
            "POST",
            "secret/data/myapp/new",
            Some(&token),
            Some(json!({"data": {"a": "b"}})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["data"]["version"], 1);
    let r = env
        .call("GET", "secret/data/myapp/new", Some(&token), None)
        .await;
    assert_eq!(r.json()["data"]["data"], json!({"a": "b"}));
}

/// KV v1 reads carry the advisory `ttl` as `lease_duration` (else the
/// mount default), no lease id, and 404 `{"errors":[]}` when missing.
#[tokio::test]
async fn kv1_envelope_and_ttl() {
    let env = Env::new().await;
    env.vault.enable_kv1("kv");
    env.vault
        .kv1_put("kv", "app/short", json!({"password": "x", "ttl": "30s"}));
    env.vault
        .kv1_put("kv", "app/int", json!({"password": "y", "ttl": 45}));
    env.vault
        .kv1_put("kv", "app/plain", json!({"password": "z"}));
    env.vault
        .put_policy("kv-read", &[("kv/*", &["read", "list"])]);
    env.vault.add_role(
        "kubernetes",
        Role::new("kv", ["vault-auth"], ["default"], ["kv-read"]),
    );
    let jwt = env.jwt("default", "vault-auth", &["vault"]);
    let token = env.login_as("kv", &jwt).await.json()["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let r = env.call("GET", "kv/app/short", Some(&token), None).await;
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(body["lease_duration"], 30);
    assert_eq!(body["lease_id"], "");
    assert_eq!(body["renewable"], false);
    assert_eq!(body["data"], json!({"password": "x", "ttl": "30s"}));
    let r = env.call("GET", "kv/app/int", Some(&token), None).await;
    assert_eq!(r.json()["lease_duration"], 45);
    let r = env.call("GET", "kv/app/plain", Some(&token), None).await;
    assert_eq!(r.json()["lease_duration"], 2_764_800);
    let r = env.call("GET", "kv/app/nope", Some(&token), None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), &json!({"errors": []}));
    let r = env
        .call("GET", "kv/app?list=true", Some(&token), None)
        .await;
    assert_eq!(r.json()["data"]["keys"], json!(["int", "plain", "short"]));
}

/// Dynamic credentials are new on each read and leased to the caller;
/// renewals near the max TTL are capped with Vault's warning and shrink
/// until `past the max TTL, cannot renew`.
#[tokio::test]
async fn dynamic_creds_renew_caps_then_stops() {
    let env = Env::new().await;
    env.vault.add_dynamic_role(
        "database",
        "app",
        DynamicRole {
            default_ttl: Duration::from_secs(2),
            max_ttl: Duration::from_secs(3),
            renewable: true,
        },
    );
    env.vault
        .put_policy("db", &[("database/creds/app", &["read"])]);
    env.vault.add_role(
        "kubernetes",
        Role::new("db", ["vault-auth"], ["default"], ["db"]),
    );
    let jwt = env.jwt("default", "vault-auth", &["vault"]);
    let token = env.login_as("db", &jwt).await.json()["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let first = env
        .call("GET", "database/creds/app", Some(&token), None)
        .await;
    let second = env
        .call("GET", "database/creds/app", Some(&token), None)
        .await;
    assert_eq!(first.status, 200);
    let (a, b) = (first.json(), second.json());
    assert_ne!(a["data"]["username"], b["data"]["username"]);
    assert_ne!(a["data"]["password"], b["data"]["password"]);
    assert_eq!(a["lease_duration"], 2);
    assert_eq!(a["renewable"], true);
    assert_eq!(a["mount_type"], "database");
    let lease_id = a["lease_id"].as_str().unwrap().to_owned();
    let suffix = lease_id.strip_prefix("database/creds/app/").unwrap();
    assert_eq!(suffix.len(), 24);
    let lease = env.vault.lease(&lease_id).unwrap();
    assert_eq!(lease.token, token);
    assert_eq!(lease.data, a["data"]);

    let max_end = lease.max_expires_at;
    let mut durations = Vec::new();
    let final_error = loop {
        let r = env
            .call(
                "PUT",
                "sys/leases/renew",
                Some(&token),
                Some(json!({"lease_id": lease_id, "increment": 60})),
            )
            .await;
        if r.status != 200 {
            break r;
        }
        let body = r.json();
        assert_eq!(body["lease_id"], lease_id.as_str());
        assert_eq!(body["renewable"], true);
        assert_eq!(body["data"], Value::Null);
        let ttl = body["lease_duration"].as_u64().unwrap();
        let warning = body["warnings"][0].as_str().unwrap();
        assert_eq!(
            warning,
            format!(
                "TTL of \"1m\" exceeded the effective max_ttl of \"{ttl}s\"; TTL value is capped accordingly"
            )
        );
        durations.push(ttl);
        assert!(SystemTime::now() < max_end + Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (final_error.status, final_error.errors()),
        (400, vec!["past the max TTL, cannot renew".to_owned()]),
        "durations {durations:?}"
    );
    assert!(durations.len() >= 2, "{durations:?}");
    assert!(durations.windows(2).all(|w| w[0] >= w[1]), "{durations:?}");
    assert!(durations.first() > durations.last(), "{durations:?}");
    assert_eq!(*durations.last().unwrap(), 1);
    assert!(env.vault.lease(&lease_id).unwrap().renew_count >= 2);

    // Once its time is up the lease is gone.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = env
        .call(
            "PUT",
            &format!("sys/leases/renew/{lease_id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (400, vec!["lease expired".to_owned()])
    );
    assert!(env.vault.lease(&lease_id).unwrap().revoked);
    assert!(env.vault.count("PUT", "/v1/sys/leases/renew") >= 3);
}

/// A renewal without increment uses the role default; non-renewable and
/// unknown leases give Vault's messages.
#[tokio::test]
async fn lease_renew_defaults_and_errors() {
    let env = Env::new().await;
    env.vault.add_dynamic_role(
        "database",
        "app",
        DynamicRole::new(Duration::from_secs(60), Duration::from_secs(600)),
    );
    env.vault.add_dynamic_role(
        "database",
        "fixed",
        DynamicRole {
            default_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(600),
            renewable: false,
        },
    );
    env.vault
        .put_policy("db", &[("database/creds/*", &["read"])]);
    env.vault.add_role(
        "kubernetes",
        Role::new("db", ["vault-auth"], ["default"], ["db"]),
    );
    let jwt = env.jwt("default", "vault-auth", &["vault"]);
    let token = env.login_as("db", &jwt).await.json()["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let lease = |r: Resp| r.json()["lease_id"].as_str().unwrap().to_owned();
    let renewable = lease(
        env.call("GET", "database/creds/app", Some(&token), None)
            .await,
    );
    let fixed = lease(
        env.call("GET", "database/creds/fixed", Some(&token), None)
            .await,
    );

    let r = env
        .call(
            "POST",
            "sys/leases/renew",
            Some(&token),
            Some(json!({"lease_id": renewable})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["lease_duration"], 60);
    assert_eq!(r.json()["warnings"], Value::Null);
    let r = env
        .call(
            "PUT",
            "sys/leases/renew",
            Some(&token),
            Some(json!({"lease_id": renewable, "increment": "2m"})),
        )
        .await;
    assert_eq!(r.json()["lease_duration"], 120);

    let r = env
        .call(
            "PUT",
            "sys/leases/renew",
            Some(&token),
            Some(json!({"lease_id": fixed})),
        )
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (400, vec!["lease is not renewable".to_owned()])
    );
    let r = env
        .call(
            "PUT",
            "sys/leases/renew",
            Some(&token),
            Some(json!({"lease_id": "database/creds/app/nope"})),
        )
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (400, vec!["lease not found".to_owned()])
    );
    let r = env
        .call("PUT", "sys/leases/renew", Some(&token), Some(json!({})))
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (400, vec!["lease_id must be specified".to_owned()])
    );

    // Revoke: `sys/leases/revoke` is not in the default policy, so even the
    // lease's own token is refused; a token whose policy grants it gets a
    // 204 and the lease is gone.
    let r = env
        .call(
            "PUT",
            "sys/leases/revoke",
            Some(&token),
            Some(json!({"lease_id": renewable})),
        )
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (403, vec![POLICY_DENIED.to_owned()])
    );
    env.vault
        .put_policy("revoker", &[("sys/leases/revoke", &["update"])]);
    env.vault.add_role(
        "kubernetes",
        Role::new("revoker", ["vault-auth"], ["default"], ["db", "revoker"]),
    );
    let revoker = env.login_as("revoker", &jwt).await.json()["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = env.login().await;
    let r = env
        .call(
            "PUT",
            &format!("sys/leases/revoke/{renewable}"),
            Some(&other),
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (403, vec![POLICY_DENIED.to_owned()])
    );
    let r = env
        .call(
            "PUT",
            "sys/leases/revoke",
            Some(&revoker),
            Some(json!({"lease_id": renewable})),
        )
        .await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_none() && r.content_type.is_none());
    assert!(env.vault.lease(&renewable).unwrap().revoked);
    let r = env
        .call(
            "PUT",
            "sys/leases/renew",
            Some(&token),
            Some(json!({"lease_id": renewable})),
        )
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (400, vec!["lease not found".to_owned()])
    );
}

/// revoke-self answers 204, kills the token and revokes its leases.
#[tokio::test]
async fn revoke_self_revokes_token_and_leases() {
    let env = Env::new().await;
    env.vault.add_dynamic_role(
        "database",
        "app",
        DynamicRole::new(Duration::from_secs(300), Duration::from_secs(3600)),
    );
    env.vault
        .put_policy("db", &[("database/creds/app", &["read"])]);
    env.vault.add_role(
        "kubernetes",
        Role::new("db", ["vault-auth"], ["default"], ["db"]),
    );
    let jwt = env.jwt("default", "vault-auth", &["vault"]);
    let token = env.login_as("db", &jwt).await.json()["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = env
        .call("GET", "database/creds/app", Some(&token), None)
        .await;
    let lease_id = r.json()["lease_id"].as_str().unwrap().to_owned();

    let r = env
        .call("POST", "auth/token/revoke-self", Some(&token), None)
        .await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_none());
    assert!(r.content_type.is_none());
    assert!(env.vault.token(&token).unwrap().revoked);
    assert!(env.vault.lease(&lease_id).unwrap().revoked);

    let r = env
        .call("GET", "auth/token/lookup-self", Some(&token), None)
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (403, vec![INVALID_TOKEN.to_owned()])
    );
    let other = env.login().await;
    let r = env
        .call(
            "PUT",
            "sys/leases/renew",
            Some(&other),
            Some(json!({"lease_id": lease_id})),
        )
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (400, vec!["lease not found".to_owned()])
    );
}

/// Tokens really expire: after a 1 s TTL the token is invalid and its
/// leases are revoked.
#[tokio::test]
async fn token_expiry_invalidates_token_and_leases() {
    let env = Env::new().await;
    env.vault.add_dynamic_role(
        "database",
        "app",
        DynamicRole::new(Duration::from_secs(300), Duration::from_secs(3600)),
    );
    env.vault.put_policy(
        "short",
        &[
            ("database/creds/app", &["read"]),
            ("secret/data/*", &["read"]),
        ],
    );
    env.vault.add_role(
        "kubernetes",
        Role::new("short", ["vault-auth"], ["default"], ["short"])
            .with_ttl(Duration::from_secs(1), Duration::from_secs(2)),
    );
    let jwt = env.jwt("default", "vault-auth", &["vault"]);
    let r = env.login_as("short", &jwt).await;
    assert_eq!(r.json()["auth"]["lease_duration"], 1);
    let token = r.json()["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = env
        .call("GET", "database/creds/app", Some(&token), None)
        .await;
    let lease_id = r.json()["lease_id"].as_str().unwrap().to_owned();
    let r = env
        .call("GET", "auth/token/lookup-self", Some(&token), None)
        .await;
    assert_eq!(r.status, 200);
    let data = &r.json()["data"];
    assert!(data["ttl"].as_u64().unwrap() <= 1);
    assert_eq!(data["id"], token.as_str());
    assert_eq!(data["path"], "auth/kubernetes/login");
    assert_eq!(data["display_name"], "kubernetes-default-vault-auth");
    assert_eq!(data["policies"], json!(["default", "short"]));
    assert!(data["expire_time"].as_str().unwrap().ends_with('Z'));

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = env
        .call("GET", "secret/data/myapp/config", Some(&token), None)
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (403, vec![INVALID_TOKEN.to_owned()])
    );
    assert!(env.vault.token(&token).unwrap().revoked);
    assert!(env.vault.lease(&lease_id).unwrap().revoked);
}

/// renew-self extends the token, caps at the role max with a warning, and
/// refuses once the max is reached.
#[tokio::test]
async fn renew_self_caps_at_role_max() {
    let env = Env::new().await;
    env.vault.add_role(
        "kubernetes",
        Role::new("tiny", ["vault-auth"], ["default"], ["myapp-kv-ro"])
            .with_ttl(Duration::from_secs(1), Duration::from_secs(2)),
    );
    let jwt = env.jwt("default", "vault-auth", &["vault"]);
    let token = env.login_as("tiny", &jwt).await.json()["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut durations = Vec::new();
    let final_error = loop {
        let r = env
            .call(
                "POST",
                "auth/token/renew-self",
                Some(&token),
                Some(json!({"increment": "1h"})),
            )
            .await;
        if r.status != 200 {
            break r;
        }
        let body = r.json();
        assert_eq!(body["auth"]["client_token"], token.as_str());
        assert_eq!(body["auth"]["renewable"], true);
        assert_eq!(body["data"], Value::Null);
        let ttl = body["auth"]["lease_duration"].as_u64().unwrap();
        assert_eq!(
            body["warnings"][0],
            format!(
                "TTL of \"1h\" exceeded the effective max_ttl of \"{ttl}s\"; TTL value is capped accordingly"
            )
        );
        durations.push(ttl);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (final_error.status, final_error.errors()),
        (500, vec!["past the max TTL, cannot renew".to_owned()]),
        "durations {durations:?}"
    );
    assert_eq!(*durations.last().unwrap(), 1);
    assert!(env.vault.token(&token).unwrap().renew_count >= 1);

    // A plain renewal uses the role's TTL.
    let token = env.login().await;
    let r = env
        .call(
            "PUT",
            "auth/token/renew-self",
            Some(&token),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.json()["auth"]["lease_duration"], 24 * 3600);
    assert_eq!(r.json()["warnings"], Value::Null);
}

/// Token and policy failures use Vault's two different 403 bodies;
/// unknown mounts are 404 `no handler`.
#[tokio::test]
async fn denial_bodies() {
    let env = Env::new().await;
    let r = env
        .call("GET", "secret/data/myapp/config", None, None)
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (403, vec![INVALID_TOKEN.to_owned()])
    );
    let r = env
        .call("GET", "secret/data/myapp/config", Some("hvs.bogus"), None)
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (403, vec![INVALID_TOKEN.to_owned()])
    );

    let token = env.login().await;
    let r = env
        .call("GET", "secret/data/other/config", Some(&token), None)
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (403, vec![POLICY_DENIED.to_owned()])
    );
    assert_eq!(r.content_type.as_deref(), Some("application/json"));

    // Bearer auth works like X-Vault-Token; a root-namespace token is not
    // found from another namespace.
    let resp = env
        .http
        .get(format!("{}/v1/secret/data/myapp/config", env.vault.addr()))
        .bearer_auth(&token)
        .header("X-Vault-Namespace", "team-a/")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let last = env.vault.requests().pop().unwrap();
    assert_eq!(last.namespace.as_deref(), Some("team-a/"));
    assert_eq!(last.token.as_deref(), Some(token.as_str()));
    let resp = env
        .http
        .get(format!("{}/v1/secret/data/myapp/config", env.vault.addr()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    let r = env.call("GET", "nosuch/thing", Some(&token), None).await;
    assert_eq!(
        (r.status, r.errors()),
        (
            404,
            vec!["no handler for route \"nosuch/thing\". route entry not found.".to_owned()]
        )
    );
}

/// Faults answer every request (health included); rate limiting answers
/// the next n requests with 429 and `Retry-After`.
#[tokio::test]
async fn faults_and_rate_limits() {
    let env = Env::new().await;
    let r = env.call("GET", "sys/health", None, None).await;
    assert_eq!(r.status, 200);
    let health = r.json();
    assert_eq!(health["initialized"], true);
    assert_eq!(health["sealed"], false);
    assert!(health.get("request_id").is_none());

    env.vault.set_fault(Some(Fault::sealed()));
    let r = env.call("GET", "sys/health", None, None).await;
    assert_eq!(
        (r.status, r.errors()),
        (503, vec!["Vault is sealed".to_owned()])
    );
    let r = env
        .call("POST", "auth/kubernetes/login", None, Some(json!({})))
        .await;
    assert_eq!(r.status, 503);
    env.vault.set_fault(None);

    let token = env.login().await;
    // Without `enable_rate_limit_response_headers`, no Retry-After.
    env.vault.rate_limit_next(1, 7);
    let r = env
        .call("GET", "secret/data/myapp/config", Some(&token), None)
        .await;
    assert_eq!((r.status, r.retry_after.as_deref()), (429, None));
    env.vault
        .set_rate_limit_headers(Some(RetryAfterFormat::Seconds));
    env.vault.rate_limit_next(2, 7);
    for _ in 0..2 {
        let r = env
            .call("GET", "secret/data/myapp/config", Some(&token), None)
            .await;
        assert_eq!(r.status, 429);
        assert_eq!(r.retry_after.as_deref(), Some("7"));
        assert_eq!(
            r.errors(),
            vec!["request path \"secret/data/myapp/config\": rate limit quota exceeded".to_owned()]
        );
    }
    let r = env
        .call("GET", "secret/data/myapp/config", Some(&token), None)
        .await;
    assert_eq!(r.status, 200);

    let statuses: Vec<u16> = env
        .vault
        .requests()
        .iter()
        .filter(|q| q.path == "/v1/secret/data/myapp/config")
        .map(|q| q.status)
        .collect();
    assert_eq!(statuses, [429, 429, 429, 200]);
    assert_eq!(env.vault.count("GET", "/v1/sys/health"), 2);
    assert_eq!(env.vault.count("PUT", "/v1/auth/kubernetes/login"), 2);
}

/// PKI issue returns a PEM-looking certificate, a numeric `expiration`
/// and no lease.
#[tokio::test]
async fn pki_issue_has_numeric_expiration_and_no_lease() {
    let env = Env::new().await;
    env.vault.add_pki_role(
        "pki",
        "web",
        Duration::from_secs(3600),
        Duration::from_secs(7200),
    );
    env.vault
        .put_policy("pki", &[("pki/issue/web", &["update"])]);
    env.vault.add_role(
        "kubernetes",
        Role::new("pki", ["vault-auth"], ["default"], ["pki"]),
    );
    let jwt = env.jwt("default", "vault-auth", &["vault"]);
    let token = env.login_as("pki", &jwt).await.json()["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let r = env
        .call(
            "PUT",
            "pki/issue/web",
            Some(&token),
            Some(json!({"common_name": "app.example.com", "ttl": "30m"})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let body = r.json();
    assert_eq!(body["lease_id"], "");
    assert_eq!(body["lease_duration"], 0);
    assert_eq!(body["renewable"], false);
    let data = &body["data"];
    let exp = data["expiration"].as_u64().expect("expiration is a number");
    assert!((before + 1800..=before + 1802).contains(&exp), "{exp}");
    assert!(
        data["certificate"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    assert!(
        data["private_key"]
            .as_str()
            .unwrap()
            .contains("PRIVATE KEY")
    );
    assert!(data["serial_number"].as_str().unwrap().contains(':'));

    let r = env
        .call(
            "PUT",
            "pki/issue/web",
            Some(&token),
            Some(json!({"common_name": "a", "ttl": "3h"})),
        )
        .await;
    // Above the role's max: capped, with a warning in Vault's duration form.
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json()["warnings"],
        json!([
            "TTL \"3h0m0s\" is longer than permitted maxTTL \"2h0m0s\", so maxTTL is being used"
        ])
    );
    let expiration = r.json()["data"]["expiration"].as_u64().unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(expiration <= now + 7200 && expiration + 5 >= now + 7200);
    assert!(env.vault.leases().is_empty());
}

/// `shutdown` refuses connections; `restart` serves again on the same
/// port with the same state.
#[tokio::test]
async fn shutdown_and_restart_keep_state() {
    let env = Env::new().await;
    let token = env.login().await;
    let port = env.vault.socket_addr().port();
    env.vault.shutdown();
    assert!(!env.vault.is_running());
    env.try_call("GET", "secret/data/myapp/config", Some(&token), None)
        .await
        .expect_err("the double is down");
    // A fresh connection is refused outright.
    let fresh = Client::new()
        .get(format!("{}/v1/sys/health", env.vault.addr()))
        .send()
        .await
        .expect_err("nothing listens");
    assert!(fresh.is_connect(), "{fresh:?}");

    env.vault.restart().await.unwrap();
    assert_eq!(env.vault.socket_addr().port(), port);
    let r = env
        .call("GET", "secret/data/myapp/config", Some(&token), None)
        .await;
    assert_eq!(r.status, 200);
}

/// Many concurrent callers are served correctly (a smoke test of the
/// locking, not a benchmark).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers() {
    let env = std::sync::Arc::new(Env::new().await);
    let token = env.login().await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let env = std::sync::Arc::clone(&env);
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                let r = env
                    .call("GET", "secret/data/myapp/config", Some(&token), None)
                    .await;
                assert_eq!(r.status, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(env.vault.count("GET", "/v1/secret/data/"), 16 * 25);
}

/// Latency makes logins and other requests wait (at least) as long as set,
/// and the answers stay the same.
#[tokio::test]
async fn latency_delays_answers() {
    let env = Env::new().await;
    env.vault
        .set_latency(Duration::from_millis(60), Duration::from_millis(25));
    let started = tokio::time::Instant::now();
    let token = env.login().await;
    let login = started.elapsed();
    let started = tokio::time::Instant::now();
    let r = env
        .call("GET", "secret/data/myapp/config", Some(&token), None)
        .await;
    let read = started.elapsed();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"]["data"]["username"], "appuser");
    assert!(
        login >= Duration::from_millis(60),
        "login answered after {login:?}"
    );
    assert!(
        read >= Duration::from_millis(25),
        "read answered after {read:?}"
    );
    assert!(read < login, "reads wait for the shorter latency");
}

/// Latency can be set for one path prefix (one slow engine) and 429 for
/// another (a quota on one path) while the rest answers at once.
#[tokio::test]
async fn per_path_latency_and_rate_limits() {
    let env = Env::new().await;
    let token = env.login().await;
    env.vault.kv2_put("secret", "myapp/slow", json!({"a": 1}));
    env.vault
        .set_path_latency("secret/data/myapp/slow", Some(Duration::from_millis(300)));
    let started = tokio::time::Instant::now();
    let r = env
        .call("GET", "secret/data/myapp/slow", Some(&token), None)
        .await;
    assert_eq!(r.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let started = tokio::time::Instant::now();
    let r = env
        .call("GET", "secret/data/myapp/config", Some(&token), None)
        .await;
    assert_eq!(r.status, 200);
    assert!(started.elapsed() < Duration::from_millis(300));
    env.vault.set_path_latency("secret/data/myapp/slow", None);
    let started = tokio::time::Instant::now();
    env.call("GET", "secret/data/myapp/slow", Some(&token), None)
        .await;
    assert!(started.elapsed() < Duration::from_millis(300));

    env.vault.rate_limit_path("secret/", Some(9));
    for _ in 0..3 {
        let r = env
            .call("GET", "secret/data/myapp/config", Some(&token), None)
            .await;
        assert_eq!(r.status, 429);
        assert_eq!(r.retry_after.as_deref(), Some("9"));
    }
    let r = env
        .call(
            "PUT",
            "auth/token/renew-self",
            Some(&token),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, 200, "other paths are not limited");
    env.vault.rate_limit_path("secret/", None);
    let r = env
        .call("GET", "secret/data/myapp/config", Some(&token), None)
        .await;
    assert_eq!(
        (r.status, r.retry_after),
        (429, None),
        "no Retry-After header"
    );
    env.vault.clear_rate_limit_path("secret/");
    let r = env
        .call("GET", "secret/data/myapp/config", Some(&token), None)
        .await;
    assert_eq!(r.status, 200);
}
