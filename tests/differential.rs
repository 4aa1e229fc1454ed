//! The Vault double against a real OpenBao: the same request sequence
//! (logins and their refusals, KV v1 and v2 reads including a deleted
//! version, a missing path, a denied path, database credentials, lease
//! renewals including a capped one, token renewal and revocation, PKI
//! issuing, a sealed server) sent to both, comparing each answer's status
//! and shape (the JSON keys and value types, not the values). Where they
//! differ, the double is what changes: it stands for the real server in
//! every other test.
//!
//! Without `bao` the test says so and skips; with `CI=true` it fails.

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};
use support::openbao::{self, Answer, OpenBao};
use support::postgres::Postgres;
use support::{TestVault, walkthrough_vault};
use vault_double::{DynamicRole, Fault, Flavor, VaultDouble};

/// The policy both servers give role `example`.
const POLICY_HCL: &str = r#"
path "secret/data/myapp/*" { capabilities = ["read"] }
path "secret/metadata/myapp/*" { capabilities = ["list"] }
path "database/creds/*" { capabilities = ["read"] }
path "pki/issue/*" { capabilities = ["create", "update"] }
path "kv/*" { capabilities = ["read"] }
"#;

const CREDS_TTL: Duration = Duration::from_secs(60);
const CREDS_MAX: Duration = Duration::from_secs(120);

/// A JSON value's shape: object keys (recursively), array element shapes,
/// scalar types.
fn shape(value: &Value) -> Value {
    match value {
        Value::Null => json!("null"),
        Value::Bool(_) => json!("bool"),
        Value::Number(_) => json!("number"),
        Value::String(_) => json!("string"),
        Value::Array(items) => {
            let mut shapes: Vec<Value> = items.iter().map(shape).collect();
            shapes.dedup();
            Value::Array(shapes)
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), shape(v)))
                .collect::<serde_json::Map<_, _>>(),
        ),
    }
}

/// Where two shapes differ, as `path: double … / openbao …` lines.
fn differences(path: &str, double: &Value, bao: &Value, out: &mut Vec<String>) {
    match (double, bao) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let sub = format!("{path}.{key}");
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => differences(&sub, x, y, out),
                    (Some(x), None) => out.push(format!("{sub}: only the double has it ({x})")),
                    (None, Some(y)) => out.push(format!("{sub}: only OpenBao has it ({y})")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() <= 1 && b.len() <= 1 => {
            if let (Some(x), Some(y)) = (a.first(), b.first()) {
                differences(&format!("{path}[]"), x, y, out);
            } else if a.len() != b.len() {
                out.push(format!("{path}: double {double} / OpenBao {bao}"));
            }
        }
        _ if double != bao => out.push(format!("{path}: double {double} / OpenBao {bao}")),
        _ => {}
    }
}

/// One server's side of the sequence.
struct Side {
    http: reqwest::Client,
    addr: String,
    answers: BTreeMap<String, Answer>,
    order: Vec<String>,
}

impl Side {
    async fn send(
        &mut self,
        step: &str,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let answer = openbao::call(&self.http, &self.addr, method, path, token, None, body).await;
        self.order.push(step.to_owned());
        self.answers.insert(step.to_owned(), answer.clone());
        answer
    }
}

/// A service-account JWT for `namespace/account`, audience `audience`,
/// expiring in `expires_in` (zero: already expired), signed with the key
/// both servers trust.
fn jwt(namespace: &str, account: &str, audience: &str, expires_in: Duration) -> String {
    let mut claims = vault_double::SaToken::new(namespace, account, [audience]);
    claims.expires_in = expires_in;
    vault_double::sign_sa_token(&claims)
}

/// The sequence, on one server (the seal is the caller's).
async fn run(side: &mut Side) {
    let token = logins(side).await;
    reads(side, &token).await;
    leases_and_tokens(side, &token).await;
}

/// Logins, refused in each way and then accepted: the token.
async fn logins(side: &mut Side) -> String {
    let hour = Duration::from_secs(3600);
    let good = jwt("default", "vault-auth", "vault", hour);
    let login = |role: &str, jwt: &str| json!({"role": role, "jwt": jwt});
    for (step, token) in [
        (
            "login with an expired JWT",
            jwt("default", "vault-auth", "vault", Duration::ZERO),
        ),
        (
            "login with another audience",
            jwt("default", "vault-auth", "elsewhere", hour),
        ),
        (
            "login as an unbound service account",
            jwt("default", "intruder", "vault", hour),
        ),
        (
            "login from an unbound namespace",
            jwt("other", "vault-auth", "vault", hour),
        ),
    ] {
        side.send(
            step,
            "POST",
            "auth/kubernetes/login",
            None,
            Some(&login("example", &token)),
        )
        .await;
    }
    side.send(
        "login with an unknown role",
        "POST",
        "auth/kubernetes/login",
        None,
        Some(&login("nope", &good)),
    )
    .await;
    side.send(
        "login with a malformed JWT",
        "POST",
        "auth/kubernetes/login",
        None,
        Some(&login("example", "not-a-jwt")),
    )
    .await;
    let answer = side
        .send(
            "login",
            "POST",
            "auth/kubernetes/login",
            None,
            Some(&login("example", &good)),
        )
        .await;
    answer.body["auth"]["client_token"]
        .as_str()
        .unwrap_or_else(|| panic!("login: {}", answer.body))
        .to_owned()
}

/// KV v1 and v2 reads: found, deleted, missing, denied.
async fn reads(side: &mut Side, token: &str) {
    let t = Some(token);
    side.send(
        "token lookup-self",
        "GET",
        "auth/token/lookup-self",
        t,
        None,
    )
    .await;
    side.send("KV v2 read", "GET", "secret/data/myapp/config", t, None)
        .await;
    side.send(
        "KV v2 read of a deleted version",
        "GET",
        "secret/data/myapp/deleted",
        t,
        None,
    )
    .await;
    side.send(
        "KV v2 read of an older version",
        "GET",
        "secret/data/myapp/deleted?version=1",
        t,
        None,
    )
    .await;
    side.send(
        "KV v2 missing path",
        "GET",
        "secret/data/myapp/missing",
        t,
        None,
    )
    .await;
    side.send("KV v1 read", "GET", "kv/app", t, None).await;
    side.send("KV v1 missing path", "GET", "kv/missing", t, None)
        .await;
    side.send(
        "permission denied",
        "GET",
        "secret/data/elsewhere/config",
        t,
        None,
    )
    .await;
    mounts_and_lists(side, token).await;
}

/// What the driver asks to read KV v2 paths written without `data/` and
/// to list (`secrets`): the mount of a path (KV v2, KV v1, none the token
/// may use, none at all), a path as written on KV v2, and LISTs found,
/// empty and denied.
async fn mounts_and_lists(side: &mut Side, token: &str) {
    let t = Some(token);
    for (step, path) in [
        ("mount of a KV v2 path", "secret/myapp/config"),
        ("mount of a KV v1 path", "kv/app"),
        ("mount of a path under no mount", "nowhere/app"),
        ("mount of the database mount", "database/creds/app"),
    ] {
        side.send(
            step,
            "GET",
            &format!("sys/internal/ui/mounts/{path}"),
            t,
            None,
        )
        .await;
    }
    side.send(
        "KV v2 read without data/",
        "GET",
        "secret/myapp/config",
        t,
        None,
    )
    .await;
    side.send(
        "LIST of KV v2 metadata",
        "LIST",
        "secret/metadata/myapp",
        t,
        None,
    )
    .await;
    side.send(
        "LIST of an empty KV v2 folder",
        "LIST",
        "secret/metadata/myapp/none",
        t,
        None,
    )
    .await;
    side.send("LIST without metadata/", "LIST", "secret/myapp", t, None)
        .await;
    side.send(
        "list as Vault's Go client sends it",
        "GET",
        "secret/metadata/myapp?list=true",
        t,
        None,
    )
    .await;
    side.send(
        "LIST of a mount's entry",
        "LIST",
        "sys/internal/ui/mounts/secret/myapp",
        t,
        None,
    )
    .await;
}

/// Database credentials, lease and token renewal and revocation, PKI.
async fn leases_and_tokens(side: &mut Side, token: &str) {
    let t = Some(token);
    let creds = side
        .send("database credentials", "GET", "database/creds/app", t, None)
        .await;
    let lease = creds.body["lease_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    side.send(
        "lease renewal",
        "PUT",
        "sys/leases/renew",
        t,
        Some(&json!({"lease_id": lease, "increment": CREDS_TTL.as_secs()})),
    )
    .await;
    side.send(
        "lease renewal capped by max_ttl",
        "PUT",
        "sys/leases/renew",
        t,
        Some(&json!({"lease_id": lease, "increment": 3600})),
    )
    .await;
    side.send(
        "renewal of an unknown lease",
        "PUT",
        "sys/leases/renew",
        t,
        Some(&json!({"lease_id": "database/creds/app/nope", "increment": 60})),
    )
    .await;
    side.send(
        "lease revocation (not in the default policy)",
        "PUT",
        "sys/leases/revoke",
        t,
        Some(&json!({ "lease_id": lease })),
    )
    .await;
    side.send(
        "token renew-self",
        "POST",
        "auth/token/renew-self",
        t,
        Some(&json!({"increment": 3600})),
    )
    .await;
    side.send(
        "PKI issue",
        "POST",
        "pki/issue/web",
        t,
        Some(&json!({"common_name": "web.example", "ttl": "30s"})),
    )
    .await;
    side.send(
        "PKI issue with a TTL above the role's max",
        "POST",
        "pki/issue/web",
        t,
        Some(&json!({"common_name": "web.example", "ttl": "1h"})),
    )
    .await;
    side.send(
        "token revoke-self",
        "POST",
        "auth/token/revoke-self",
        t,
        None,
    )
    .await;
    side.send(
        "a read with the revoked token",
        "GET",
        "secret/data/myapp/config",
        t,
        None,
    )
    .await;
    side.send(
        "renew-self with the revoked token",
        "POST",
        "auth/token/renew-self",
        t,
        Some(&json!({"increment": 3600})),
    )
    .await;
}

/// The double, seeded as [`seed_openbao`] seeds OpenBao.
async fn seed_double() -> VaultDouble {
    let vault = walkthrough_vault().await;
    vault.put_policy(
        "myapp-kv-ro",
        &[
            ("secret/data/myapp/*", &["read"]),
            ("secret/metadata/myapp/*", &["list"]),
            ("database/creds/*", &["read"]),
            ("pki/issue/*", &["create", "update"]),
            ("kv/*", &["read"]),
        ],
    );
    vault.add_dynamic_role("database", "app", DynamicRole::new(CREDS_TTL, CREDS_MAX));
    vault.add_pki_role(
        "pki",
        "web",
        Duration::from_secs(60),
        Duration::from_secs(600),
    );
    vault.kv1_put("kv", "app", json!({"password": "v1-secret"}));
    vault.kv2_put("secret", "myapp/deleted", json!({"password": "one"}));
    vault.kv2_put("secret", "myapp/deleted", json!({"password": "two"}));
    vault.kv2_delete("secret", "myapp/deleted", &[]);
    vault
}

async fn seed_openbao(bao: &OpenBao, pg: &Postgres) {
    bao.seed_walkthrough(None).await;
    bao.put_policy("myapp-kv-ro", POLICY_HCL).await;
    bao.enable_database(pg).await;
    bao.database_role("app", CREDS_TTL, CREDS_MAX).await;
    bao.enable_pki(Duration::from_secs(60), Duration::from_secs(600))
        .await;
    bao.write(
        "sys/mounts/kv",
        &json!({"type": "kv", "options": {"version": "1"}}),
    )
    .await;
    bao.write("kv/app", &json!({"password": "v1-secret"})).await;
    bao.kv_put("myapp/deleted", &json!({"password": "one"}))
        .await;
    bao.kv_put("myapp/deleted", &json!({"password": "two"}))
        .await;
    bao.write("secret/delete/myapp/deleted", &json!({"versions": [2]}))
        .await;
}

/// The same requests to the double and to OpenBao get the same statuses
/// and the same shapes of answer.
#[tokio::test]
async fn the_double_answers_as_openbao_does() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let Some(bao) = OpenBao::start().await else {
        return;
    };
    seed_openbao(&bao, &pg).await;
    let double = seed_double().await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();

    double.set_flavor(Flavor::OpenBao);
    let mut ours = Side {
        http: http.clone(),
        addr: TestVault::addr(&double),
        answers: BTreeMap::new(),
        order: Vec::new(),
    };
    run(&mut ours).await;
    double.set_fault(Some(Fault::sealed()));
    ours.send("sealed", "GET", "secret/data/myapp/config", Some("x"), None)
        .await;
    double.set_fault(None);

    let mut theirs = Side {
        http,
        addr: bao.addr().to_owned(),
        answers: BTreeMap::new(),
        order: Vec::new(),
    };
    run(&mut theirs).await;
    bao.seal().await;
    theirs
        .send("sealed", "GET", "secret/data/myapp/config", Some("x"), None)
        .await;
    bao.unseal().await;

    let report = compare(&ours, &theirs, |_, _| false);
    assert!(
        report.is_empty(),
        "the double differs from OpenBao:\n{report}"
    );

    // The double as HashiCorp Vault differs from OpenBao only where the two
    // servers do (what `Flavor` documents).
    double.set_flavor(Flavor::Vault);
    let mut vault = Side {
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        addr: TestVault::addr(&double),
        answers: BTreeMap::new(),
        order: Vec::new(),
    };
    run(&mut vault).await;
    double.set_fault(Some(Fault::sealed()));
    vault
        .send("sealed", "GET", "secret/data/myapp/config", Some("x"), None)
        .await;
    double.set_fault(None);
    let report = compare(&vault, &theirs, |step, difference| {
        difference.starts_with(".mount_type: only the double has it")
            || difference.starts_with(".data.not_before: only OpenBao has it")
            || (difference.starts_with("errors:")
                && [
                    "login with an expired JWT",
                    "login with another audience",
                    "login with a malformed JWT",
                    "a read with the revoked token",
                    "renew-self with the revoked token",
                ]
                .contains(&step))
    });
    assert!(
        report.is_empty(),
        "the double as Vault differs from OpenBao beyond what Flavor documents:\n{report}"
    );
}

/// Each step's differences between `ours` (the double) and `theirs`
/// (OpenBao) that `expected(step, difference)` does not allow, with both
/// bodies; empty when there are none.
fn compare(ours: &Side, theirs: &Side, expected: impl Fn(&str, &str) -> bool) -> String {
    let mut report = String::new();
    for step in &ours.order {
        let (a, b) = (&ours.answers[step], &theirs.answers[step]);
        let mut diffs = Vec::new();
        if a.status != b.status {
            diffs.push(format!(
                "status: double {} / OpenBao {}",
                a.status, b.status
            ));
        }
        differences("", &shape(&a.body), &shape(&b.body), &mut diffs);
        for field in ["errors", "warnings"] {
            if a.body[field] != b.body[field] {
                diffs.push(format!(
                    "{field}: double {} / OpenBao {}",
                    a.body[field], b.body[field]
                ));
            }
        }
        diffs.retain(|d| !expected(step, d));
        if !diffs.is_empty() {
            let _ = writeln!(report, "{step}:");
            for d in diffs {
                let _ = writeln!(report, "    {d}");
            }
            let _ = writeln!(report, "    double:  {}", a.body);
            let _ = writeln!(report, "    OpenBao: {}", b.body);
        }
    }
    report
}
