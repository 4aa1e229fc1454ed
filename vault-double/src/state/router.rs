//! The router: from a request's method and path to the code that answers
//! it, in this order: the rate limits (429, with `Retry-After` and
//! `X-Ratelimit-*` only with `enable_rate_limit_response_headers`, as in
//! `vault/quotas/quotas_rate_limit.go`), the unauthenticated endpoints
//! (`sys/health`, `sys/seal-status`, logins), then a live token from the
//! request's namespace, the token endpoints (checked against the token's
//! policies), `sys/leases/*`, the UI mounts endpoint and the secrets
//! engine mounts. An unknown mount is 404 `no handler for route` before
//! the mount's policy is checked (Vault checks policy first; this order
//! lets tests see the 404 without granting the path).

use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::{Reply, Request, State};
use crate::RetryAfterFormat;
use crate::policy::cap;
use crate::wire::{http_date, unix_secs};

/// What a request wants to do, after PUT/POST and GET?list folding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    Read,
    Head,
    List,
    Write,
    Delete,
    Other,
}

impl Op {
    pub(super) fn of(method: &str, query: &str) -> Self {
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

/// The value of `name` in a raw query string, undecoded.
pub(super) fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

/// The request's namespace, `None` for the root namespace.
fn namespace_of(req: &Request) -> Option<String> {
    req.namespace
        .as_deref()
        .map(|ns| ns.trim_matches('/'))
        .filter(|ns| !ns.is_empty() && *ns != "root")
        .map(str::to_owned)
}

/// The entry of `table` whose prefix is the longest one `path` starts with.
pub(super) fn longest_prefix<'a, T>(
    table: &'a [(String, T)],
    path: &str,
) -> Option<&'a (String, T)> {
    table
        .iter()
        .filter(|(prefix, _)| path.starts_with(prefix.as_str()))
        .max_by_key(|(prefix, _)| prefix.len())
}

impl State {
    pub(super) fn route(&mut self, req: &Request, now: SystemTime) -> Reply {
        let Some(path) = req.path.strip_prefix("/v1/") else {
            return Reply::not_found_empty();
        };
        if let Some(reply) = self.rate_limit(path, now) {
            return reply;
        }
        let body = match &req.body {
            Ok(Some(v)) => v,
            Ok(None) => &Value::Null,
            Err(e) => return Reply::error(400, &format!("failed to parse JSON input: {e}")),
        };
        let op = Op::of(&req.method, &req.query);
        if let Some(reply) = self.unauthenticated(req, path, op, body, now) {
            return reply;
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
        if let Some(reply) = self.token_self(&token, path, op, body, now) {
            return reply;
        }
        if let Some(reply) = self.lease_request(&token, path, op, body, now) {
            return reply;
        }
        if let Some(target) = path.strip_prefix("sys/internal/ui/mounts/") {
            return self.ui_mount(op, &token, target);
        }
        self.engine_request(&token, path, op, req, body, now)
    }

    /// A 429 from the global quota (with its headers, if asked) or from a
    /// path's.
    fn rate_limit(&mut self, path: &str, now: SystemTime) -> Option<Reply> {
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
            return Some(reply);
        }
        let (_, retry_after) = longest_prefix(&self.path_limits, path)?;
        let mut reply = Reply::error(
            429,
            &format!("request path {path:?}: rate limit quota exceeded"),
        );
        // A test fault: the header exactly as the test asked for it.
        if let Some(secs) = retry_after {
            reply.headers.push(("retry-after", secs.to_string()));
        }
        Some(reply)
    }

    /// The endpoints that need no token: health, seal status and logins.
    fn unauthenticated(
        &mut self,
        req: &Request,
        path: &str,
        op: Op,
        body: &Value,
        now: SystemTime,
    ) -> Option<Reply> {
        match (path, op) {
            ("sys/health", Op::Read | Op::Head) => return Some(self.health(now)),
            ("sys/seal-status", Op::Read) => return Some(self.seal_status()),
            _ => {}
        }
        let mount = path
            .strip_prefix("auth/")
            .and_then(|p| p.strip_suffix("/login"))
            .filter(|m| *m != "token")?;
        Some(if !self.auth_mounts.contains_key(mount) {
            Reply::no_handler(path)
        } else if op != Op::Write {
            Reply::unsupported_operation()
        } else {
            self.login(mount, body, namespace_of(req), now)
        })
    }

    /// `auth/token/{lookup,renew,revoke}-self`, under the token's policies.
    fn token_self(
        &mut self,
        token: &str,
        path: &str,
        op: Op,
        body: &Value,
        now: SystemTime,
    ) -> Option<Reply> {
        if matches!(
            path,
            "auth/token/lookup-self" | "auth/token/renew-self" | "auth/token/revoke-self"
        ) {
            // The default policy grants these; a token without it may not.
            let policies = &self.tokens[token].state.policies;
            if self.policies.capabilities(policies, path) & op.required() == 0 {
                return Some(Reply::policy_denied());
            }
        }
        match (path, op) {
            ("auth/token/lookup-self", Op::Read | Op::Write) => Some(self.lookup_self(token, now)),
            ("auth/token/renew-self", Op::Write) => Some(self.renew_self(token, body, now)),
            ("auth/token/revoke-self", Op::Write) => {
                self.revoke_token(token);
                Some(Reply::no_content())
            }
            _ => None,
        }
    }

    /// `sys/leases/renew`, `sys/leases/revoke` and their old names.
    fn lease_request(
        &mut self,
        token: &str,
        path: &str,
        op: Op,
        body: &Value,
        now: SystemTime,
    ) -> Option<Reply> {
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
                return Some(Reply::unsupported_operation());
            }
            return Some(if renew {
                self.lease_renew(token, url_id, body, now)
            } else {
                self.lease_revoke(token, url_id, body, now)
            });
        }
        None
    }

    /// A request to a secrets engine, under the token's policies.
    fn engine_request(
        &mut self,
        token: &str,
        path: &str,
        op: Op,
        req: &Request,
        body: &Value,
        now: SystemTime,
    ) -> Reply {
        let Some((mount, rest)) = self.find_mount(path) else {
            return Reply::no_handler(path);
        };
        let acl_path = if op == Op::List && !path.ends_with('/') {
            format!("{path}/")
        } else {
            path.to_owned()
        };
        let policies = &self.tokens[token].state.policies;
        if self.policies.capabilities(policies, &acl_path) & op.required() == 0 {
            return Reply::policy_denied();
        }
        let rest = rest.to_owned();
        self.mount_request(&mount, &rest, op, &req.query, body, token, now)
    }

    /// The longest mount that `path` lives under, and the remainder.
    pub(super) fn find_mount<'p>(&self, path: &'p str) -> Option<(String, &'p str)> {
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
