//! The double's in-memory Vault: mounts, roles, policies, tokens, leases,
//! and the synchronous request dispatcher that turns one HTTP request into
//! one reply. Everything here runs under a single `std::sync::Mutex` that is
//! never held across an `.await`.

mod auth;
mod engines;
mod leases;
mod sys;

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};

use self::auth::TokenEntry;
use self::engines::Mount;
use self::leases::LeaseEntry;
use crate::policy::{PolicyStore, cap};
use crate::wire::{http_date, stable_uuid, unix_secs, uuid};
use crate::{Fault, RecordedRequest, RetryAfterFormat, Role};

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

/// A plain data response without lease.
fn data_envelope(data: Value, mount_type: &str) -> Value {
    envelope("", false, 0, data, &[], Value::Null, mount_type)
}

/// What a request wants to do, after PUT/POST and GET?list folding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Read,
    Head,
    List,
    Write,
    Delete,
    Other,
}

impl Op {
    fn of(method: &str, query: &str) -> Self {
        match method {
            "GET" if query_param(query, "list").is_some_and(|v| v == "true" || v == "1") => {
                Op::List
            }
            "GET" => Op::Read,
            "HEAD" => Op::Head,
            "LIST" => Op::List,
            "POST" | "PUT" => Op::Write,
            "DELETE" => Op::Delete,
            _ => Op::Other,
        }
    }

    fn required(self) -> u16 {
        match self {
            Op::Read | Op::Head => cap::READ,
            Op::List => cap::LIST,
            Op::Write => cap::CREATE | cap::UPDATE,
            Op::Delete => cap::DELETE,
            Op::Other => cap::SUDO,
        }
    }
}

fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

fn str_field<'b>(body: &'b Value, key: &str) -> &'b str {
    body.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Everything mutable about the double.
struct State {
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

/// The request's namespace, `None` for the root namespace.
fn namespace_of(req: &Request) -> Option<String> {
    req.namespace
        .as_deref()
        .map(|ns| ns.trim_matches('/'))
        .filter(|ns| !ns.is_empty() && *ns != "root")
        .map(str::to_owned)
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

    fn route(&mut self, req: &Request, now: SystemTime) -> Reply {
        let Some(path) = req.path.strip_prefix("/v1/") else {
            return Reply::not_found_empty();
        };
        if self.rate_limited > 0 {
            self.rate_limited -= 1;
            let mut reply = Reply::error(
                429,
                &format!("request path {path:?}: rate limit quota exceeded"),
            );
            // `quotas_rate_limit.go`: the headers only with
            // `enable_rate_limit_response_headers`.
            if let Some(format) = self.rate_headers {
                let wait = match format {
                    RetryAfterFormat::Seconds => self.retry_after.to_string(),
                    RetryAfterFormat::HttpDate => {
                        // Rounded up: a date has whole seconds only.
                        http_date(now + Duration::from_secs(self.retry_after + 1))
                    }
                };
                reply.headers.push(("retry-after", wait));
                reply.headers.push(("x-ratelimit-limit", "1".to_owned()));
                reply
                    .headers
                    .push(("x-ratelimit-remaining", "0".to_owned()));
                reply.headers.push((
                    "x-ratelimit-reset",
                    (unix_secs(now) + self.retry_after).to_string(),
                ));
            }
            return reply;
        }
        if let Some((_, retry_after)) = longest_prefix(&self.path_limits, path) {
            let mut reply = Reply::error(
                429,
                &format!("request path {path:?}: rate limit quota exceeded"),
            );
            // A test fault: the header exactly as the test asked for it.
            if let Some(secs) = retry_after {
                reply.headers.push(("retry-after", secs.to_string()));
            }
            return reply;
        }
        let body = match &req.body {
            Ok(Some(v)) => v,
            Ok(None) => &Value::Null,
            Err(e) => return Reply::error(400, &format!("failed to parse JSON input: {e}")),
        };
        let op = Op::of(&req.method, &req.query);

        // Unauthenticated endpoints.
        match (path, op) {
            ("sys/health", Op::Read | Op::Head) => return self.health(now),
            ("sys/seal-status", Op::Read) => return self.seal_status(),
            _ => {}
        }
        if let Some(mount) = path
            .strip_prefix("auth/")
            .and_then(|p| p.strip_suffix("/login"))
            .filter(|m| *m != "token")
        {
            if !self.auth_mounts.contains_key(mount) {
                return Reply::no_handler(path);
            }
            if op != Op::Write {
                return Reply::unsupported_operation();
            }
            return self.login(mount, body, namespace_of(req), now);
        }

        // Everything else needs a live token, from the namespace that
        // created it.
        let namespace = namespace_of(req);
        let Some(token) = req.token.as_deref().filter(|t| {
            !t.is_empty()
                && self.token_live(t, now)
                && self.tokens[*t].state.vault_namespace == namespace
        }) else {
            return Reply::invalid_token();
        };
        let token = token.to_owned();

        if matches!(
            path,
            "auth/token/lookup-self" | "auth/token/renew-self" | "auth/token/revoke-self"
        ) {
            // The default policy grants these; a token without it may not.
            let policies = &self.tokens[&token].state.policies;
            if self.policies.capabilities(policies, path) & op.required() == 0 {
                return Reply::policy_denied();
            }
        }
        match (path, op) {
            ("auth/token/lookup-self", Op::Read | Op::Write) => {
                return self.lookup_self(&token, now);
            }
            ("auth/token/renew-self", Op::Write) => return self.renew_self(&token, body, now),
            ("auth/token/revoke-self", Op::Write) => {
                self.revoke_token(&token);
                return Reply::no_content();
            }
            _ => {}
        }
        for (prefix, renew) in [
            ("sys/leases/renew", true),
            ("sys/renew", true),
            ("sys/leases/revoke", false),
            ("sys/revoke", false),
        ] {
            let Some(rest) = path.strip_prefix(prefix) else {
                continue;
            };
            let url_id = if rest.is_empty() {
                ""
            } else if let Some(id) = rest.strip_prefix('/') {
                id
            } else {
                continue;
            };
            if op != Op::Write {
                return Reply::unsupported_operation();
            }
            return if renew {
                self.lease_renew(&token, url_id, body, now)
            } else {
                self.lease_revoke(&token, url_id, body, now)
            };
        }
        if let Some(target) = path.strip_prefix("sys/internal/ui/mounts/") {
            return self.ui_mount(target);
        }

        // Secret engines.
        let Some((mount, rest)) = self.find_mount(path) else {
            return Reply::no_handler(path);
        };
        let acl_path = if op == Op::List && !path.ends_with('/') {
            format!("{path}/")
        } else {
            path.to_owned()
        };
        let policies = &self.tokens[&token].state.policies;
        if self.policies.capabilities(policies, &acl_path) & op.required() == 0 {
            return Reply::policy_denied();
        }
        let rest = rest.to_owned();
        self.mount_request(&mount, &rest, op, &req.query, body, &token, now)
    }

    /// The longest mount that `path` lives under, and the remainder.
    fn find_mount<'p>(&self, path: &'p str) -> Option<(String, &'p str)> {
        self.mounts
            .keys()
            .filter_map(|m| {
                if path == m {
                    Some((m, ""))
                } else {
                    path.strip_prefix(m.as_str())
                        .and_then(|r| r.strip_prefix('/'))
                        .map(|r| (m, r))
                }
            })
            .max_by_key(|(m, _)| m.len())
            .map(|(m, r)| (m.clone(), r))
    }
}

/// The entry of `table` whose prefix is the longest one `path` starts with.
fn longest_prefix<'a, T>(table: &'a [(String, T)], path: &str) -> Option<&'a (String, T)> {
    table
        .iter()
        .filter(|(prefix, _)| path.starts_with(prefix.as_str()))
        .max_by_key(|(prefix, _)| prefix.len())
}
