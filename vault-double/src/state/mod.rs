//! The double's in-memory Vault: mounts, roles, policies, tokens, leases,
//! and the synchronous request dispatcher that turns one HTTP request into
//! one reply. Everything here runs under a single `std::sync::Mutex` that is
//! never held across an `.await`.
//!
//! This file holds what every part shares: `Shared` (the lock, the request
//! log, faults and settings), the `State` behind the lock, `Request` and
//! `Reply` with Vault's success envelope, and `dispatch`, what Vault's HTTP
//! layer does around the router (faults, a standby's redirect, index
//! states, answer patches). The rest has one file per concern, each with
//! its own `impl State` (and `impl Shared`, for seeding and observation):
//! - `router.rs`: from a request's method and path to its handler.
//! - `auth.rs`: Kubernetes logins and the tokens they issue.
//! - `leases.rs`: leases, their renewal and revocation, and the TTL
//!   arithmetic tokens share.
//! - `sys.rs`: `sys/health`, `sys/seal-status` and the UI mounts endpoint.
//! - `engines/`: the mount table and one file per secrets engine (KV v2,
//!   KV v1, database, PKI).

mod auth;
mod engines;
mod leases;
mod router;
mod sys;

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};

use self::auth::TokenEntry;
use self::engines::Mount;
use self::leases::LeaseEntry;
use self::router::{Op, longest_prefix};
use crate::policy::PolicyStore;
use crate::wire::{stable_uuid, uuid};
use crate::{Fault, Flavor, RecordedRequest, RetryAfterFormat, Role};

/// Body for a missing, expired or revoked token (Vault's multierror text).
pub(crate) const INVALID_TOKEN: &str =
    "2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n";
/// Body for a valid token that the policy does not allow.
pub(crate) const POLICY_DENIED: &str = "1 error occurred:\n\t* permission denied\n\n";

/// How many requests the log keeps before dropping the oldest.
const LOG_CAP: usize = 200_000;

/// Shared between the server tasks and every `VaultDouble` clone.
pub(crate) struct Shared {
    state: Mutex<State>,
    log: Mutex<VecDeque<RecordedRequest>>,
}

/// One parsed HTTP request, as the dispatcher sees it.
pub(crate) struct Request {
    /// Upper-case method as sent (`GET`, `PUT`, `LIST`, ...).
    pub(crate) method: String,
    /// Path without query, e.g. `/v1/secret/data/app`.
    pub(crate) path: String,
    /// Raw query string (no leading `?`).
    pub(crate) query: String,
    pub(crate) token: Option<String>,
    pub(crate) namespace: Option<String>,
    /// `X-Vault-Index`: the index state the client requires.
    pub(crate) index: Option<String>,
    /// Parsed JSON body; `Err` holds the parse error of a non-empty body.
    pub(crate) body: Result<Option<Value>, String>,
}

/// One reply: status, optional JSON body, extra headers.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Option<Value>,
    pub(crate) headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
            headers: Vec::new(),
        }
    }

    fn ok(body: Value) -> Self {
        Self::json(200, body)
    }

    fn errors(status: u16, msgs: &[&str]) -> Self {
        Self::json(status, json!({ "errors": msgs }))
    }

    fn error(status: u16, msg: &str) -> Self {
        Self::errors(status, &[msg])
    }

    fn not_found_empty() -> Self {
        Self::errors(404, &[])
    }

    fn no_content() -> Self {
        Self {
            status: 204,
            body: None,
            headers: Vec::new(),
        }
    }

    fn invalid_token() -> Self {
        Self::error(403, INVALID_TOKEN)
    }

    fn policy_denied() -> Self {
        Self::error(403, POLICY_DENIED)
    }

    fn no_handler(path: &str) -> Self {
        Self::error(
            404,
            &format!("no handler for route {path:?}. route entry not found."),
        )
    }

    fn unsupported_operation() -> Self {
        Self::error(405, "unsupported operation")
    }
}

/// The success envelope of `sdk/logical/translate_response.go`.
fn envelope(
    lease_id: &str,
    renewable: bool,
    lease_duration: u64,
    data: Value,
    warnings: &[String],
    auth: Value,
    mount_type: &str,
) -> Value {
    let mut env = Map::with_capacity(9);
    env.insert("request_id".into(), Value::String(uuid()));
    env.insert("lease_id".into(), Value::String(lease_id.to_owned()));
    env.insert("renewable".into(), Value::Bool(renewable));
    env.insert("lease_duration".into(), Value::from(lease_duration));
    env.insert("data".into(), data);
    env.insert("wrap_info".into(), Value::Null);
    env.insert(
        "warnings".into(),
        if warnings.is_empty() {
            Value::Null
        } else {
            json!(warnings)
        },
    );
    env.insert("auth".into(), auth);
    env.insert("mount_type".into(), Value::String(mount_type.to_owned()));
    Value::Object(env)
}

/// What OpenBao 2.x answers differently from Vault: no `mount_type`, a
/// plain `permission denied` for a dead token, `not_before` (backdated
/// 30 s, as `cert_util.go` does) next to a certificate's `expiration`.
fn as_openbao(reply: &mut Reply, now: SystemTime) {
    let Some(Value::Object(body)) = reply.body.as_mut() else {
        return;
    };
    body.remove("mount_type");
    if body.get("errors") == Some(&json!([INVALID_TOKEN])) {
        body.insert("errors".into(), json!(["permission denied"]));
    }
    if let Some(Value::Object(data)) = body.get_mut("data")
        && data.contains_key("certificate")
        && data.contains_key("expiration")
    {
        let not_before = crate::wire::unix_secs(now).saturating_sub(30);
        data.insert("not_before".into(), Value::from(not_before));
    }
}

/// Vault's `HTTPSysInjector`: `sys/*` responses repeat `data`'s keys at the
/// top level.
fn sys_inject(mut body: Value) -> Value {
    let data = body.get("data").and_then(Value::as_object).cloned();
    if let (Some(data), Value::Object(top)) = (data, &mut body) {
        for (k, v) in data {
            top.entry(k).or_insert(v);
        }
    }
    body
}

/// A plain data response without lease.
fn data_envelope(data: Value, mount_type: &str) -> Value {
    envelope("", false, 0, data, &[], Value::Null, mount_type)
}

fn str_field<'b>(body: &'b Value, key: &str) -> &'b str {
    body.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Everything mutable about the double.
struct State {
    /// Whose answers where Vault and OpenBao differ.
    flavor: Flavor,
    fault: Option<Fault>,
    /// Added to every answer: (logins, everything else).
    latency: (Duration, Duration),
    rate_limited: usize,
    retry_after: u64,
    /// Latency by path prefix (after `/v1/`), longest prefix first wins.
    path_latency: Vec<(String, Duration)>,
    /// Path prefixes (after `/v1/`) answered 429, with their `Retry-After`.
    path_limits: Vec<(String, Option<u64>)>,
    /// `enable_rate_limit_response_headers`, and in which form.
    rate_headers: Option<RetryAfterFormat>,
    /// Standby without forwarding: the active node's address.
    standby: Option<String>,
    /// The node's index state, advanced by every successful write.
    index: u64,
    /// Fault injection: (path prefix, JSON pointer, value) set in 2xx answers.
    patches: Vec<(String, String, Value)>,
    auth_mounts: HashMap<String, HashMap<String, Role>>,
    policies: PolicyStore,
    mounts: HashMap<String, Mount>,
    tokens: HashMap<String, TokenEntry>,
    accessors: HashMap<String, String>,
    leases: HashMap<String, LeaseEntry>,
    token_leases: HashMap<String, Vec<String>>,
    cluster_id: String,
    /// When each static role (`<mount>/<role>`) started rotating.
    static_created: HashMap<String, SystemTime>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn clean_mount(mount: &str) -> String {
    mount.trim_matches('/').to_owned()
}

fn duration_secs(d: Duration) -> u64 {
    d.as_secs()
}

/// A namespace's short id, the `.<nsid>` suffix of its tokens and leases.
fn nsid(namespace: &str) -> String {
    stable_uuid(&format!("namespace/{namespace}"))
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(5)
        .collect()
}

impl Shared {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State {
                flavor: Flavor::Vault,
                fault: None,
                latency: (Duration::ZERO, Duration::ZERO),
                rate_limited: 0,
                retry_after: 0,
                path_latency: Vec::new(),
                path_limits: Vec::new(),
                rate_headers: None,
                standby: None,
                index: 0,
                patches: Vec::new(),
                auth_mounts: HashMap::new(),
                policies: PolicyStore::with_default(),
                mounts: HashMap::new(),
                tokens: HashMap::new(),
                accessors: HashMap::new(),
                leases: HashMap::new(),
                token_leases: HashMap::new(),
                cluster_id: uuid(),
                static_created: HashMap::new(),
            }),
            log: Mutex::new(VecDeque::new()),
        }
    }

    /// Answers one request and records it.
    pub(crate) fn handle(&self, req: Request) -> Reply {
        let now = SystemTime::now();
        let reply = lock(&self.state).dispatch(&req, now);
        tracing::debug!(
            method = %req.method,
            path = %req.path,
            status = reply.status,
            "vault-double request"
        );
        let record = RecordedRequest {
            method: req.method,
            path: req.path,
            query: req.query,
            status: reply.status,
            token: req.token,
            namespace: req.namespace,
            body: req.body.ok().flatten(),
            at: now,
        };
        let mut log = lock(&self.log);
        if log.len() >= LOG_CAP {
            log.pop_front();
        }
        log.push_back(record);
        reply
    }

    // ---- seeding ----

    pub(crate) fn set_rate_limit_headers(&self, format: Option<RetryAfterFormat>) {
        lock(&self.state).rate_headers = format;
    }

    pub(crate) fn set_standby(&self, active: Option<&str>) {
        lock(&self.state).standby = active.map(|a| a.trim_end_matches('/').to_owned());
    }

    pub(crate) fn patch_answers(&self, prefix: &str, pointer: &str, value: Value) {
        lock(&self.state)
            .patches
            .push((prefix.to_owned(), pointer.to_owned(), value));
    }

    pub(crate) fn put_policy(&self, name: &str, rules: &[(&str, &[&str])]) {
        let rules = rules
            .iter()
            .map(|(path, caps)| {
                let bits = caps
                    .iter()
                    .fold(0, |acc, c| acc | crate::policy::capability_bits(c));
                ((*path).trim_start_matches('/').to_owned(), bits)
            })
            .collect();
        lock(&self.state).policies.put(name, rules);
    }

    // ---- faults ----

    pub(crate) fn set_flavor(&self, flavor: Flavor) {
        lock(&self.state).flavor = flavor;
    }

    pub(crate) fn set_fault(&self, fault: Option<Fault>) {
        lock(&self.state).fault = fault;
    }

    pub(crate) fn set_latency(&self, login: Duration, other: Duration) {
        lock(&self.state).latency = (login, other);
    }

    /// How long the answer to a request for `path` waits.
    pub(crate) fn latency_for(&self, path: &str) -> Duration {
        let st = lock(&self.state);
        let tail = path.strip_prefix("/v1/").unwrap_or(path);
        if let Some((_, latency)) = longest_prefix(&st.path_latency, tail) {
            return *latency;
        }
        let (login, other) = st.latency;
        if path.starts_with("/v1/auth/") && path.ends_with("/login") {
            login
        } else {
            other
        }
    }

    pub(crate) fn set_path_latency(&self, prefix: &str, latency: Option<Duration>) {
        let mut st = lock(&self.state);
        st.path_latency.retain(|(p, _)| p != prefix);
        if let Some(latency) = latency {
            st.path_latency.push((prefix.to_owned(), latency));
        }
    }

    /// Answers 429 (with `retry_after_secs` as `Retry-After`, if set) for
    /// every path under `prefix`, replacing an earlier limit on it.
    pub(crate) fn rate_limit_path(&self, prefix: &str, retry_after_secs: Option<u64>) {
        let mut st = lock(&self.state);
        st.path_limits.retain(|(p, _)| p != prefix);
        st.path_limits.push((prefix.to_owned(), retry_after_secs));
    }

    /// Ends [`Self::rate_limit_path`] for `prefix`.
    pub(crate) fn clear_rate_limit_path(&self, prefix: &str) {
        lock(&self.state).path_limits.retain(|(p, _)| p != prefix);
    }

    pub(crate) fn rate_limit_next(&self, n: usize, retry_after_secs: u64) {
        let mut st = lock(&self.state);
        st.rate_limited = n;
        st.retry_after = retry_after_secs;
    }

    // ---- observation ----

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.log).iter().cloned().collect()
    }

    pub(crate) fn count(&self, method: &str, path_prefix: &str) -> usize {
        let write = |m: &str| m.eq_ignore_ascii_case("PUT") || m.eq_ignore_ascii_case("POST");
        lock(&self.log)
            .iter()
            .filter(|r| {
                (method.is_empty()
                    || method == "*"
                    || r.method.eq_ignore_ascii_case(method)
                    || (write(method) && write(&r.method)))
                    && r.path.starts_with(path_prefix)
            })
            .count()
    }
}

impl State {
    /// What the HTTP layer does around the router: faults, a standby's
    /// redirect (`respondStandby`), the index-state check, the index
    /// header on writes, and injected answer patches.
    fn dispatch(&mut self, req: &Request, now: SystemTime) -> Reply {
        let mut reply = self.dispatch_as_vault(req, now);
        if self.flavor == Flavor::OpenBao {
            as_openbao(&mut reply, now);
        }
        reply
    }

    fn dispatch_as_vault(&mut self, req: &Request, now: SystemTime) -> Reply {
        if let Some(fault) = &self.fault {
            return Reply::error(fault.status, &fault.message);
        }
        if let Some(active) = &self.standby {
            if req.path == "/v1/sys/health" {
                let mut reply = self.health(now);
                reply.status = 429;
                if let Some(Value::Object(map)) = reply.body.as_mut() {
                    map.insert("standby".into(), Value::Bool(true));
                }
                return reply;
            }
            let query = if req.query.is_empty() {
                String::new()
            } else {
                format!("?{}", req.query)
            };
            return Reply {
                status: 307,
                body: None,
                headers: vec![("location", format!("{active}{}{query}", req.path))],
            };
        }
        if let Some(wanted) = &req.index {
            let present = wanted
                .strip_prefix("vd-")
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n <= self.index);
            if !present {
                return Reply::error(412, "required index state not present");
            }
        }
        let mut reply = self.route(req, now);
        if !(200..300).contains(&reply.status) {
            return reply;
        }
        if matches!(Op::of(&req.method, &req.query), Op::Write | Op::Delete) {
            self.index += 1;
            reply
                .headers
                .push(("x-vault-index", format!("vd-{}", self.index)));
        }
        for (prefix, pointer, value) in &self.patches {
            if req.path.starts_with(prefix.as_str())
                && let Some(slot) = reply.body.as_mut().and_then(|b| b.pointer_mut(pointer))
            {
                *slot = value.clone();
            }
        }
        reply
    }
}
