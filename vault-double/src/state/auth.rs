//! Kubernetes auth logins and the tokens they issue, renew, describe and
//! revoke.
//!
//! Logins check what `vault-plugin-auth-kubernetes`'s `path_login.go`
//! checks (role, JWT, bound service account names and namespaces as globs,
//! audience) and answer with its statuses. Tokens follow
//! `vault/token_store.go`: service (`hvs.`) and batch (`hvb.`) tokens,
//! periodic tokens renewed to their period, `lookup-self` and
//! `revoke-self`; `renew-self` re-reads the role as `pathLoginRenew` does
//! and caps the TTL with `CalculateTTL` (`leases.rs`). Roles are refused
//! on write as `sdk/helper/tokenutil` refuses them.

use std::time::SystemTime;

use serde_json::{Map, Value, json};

use super::leases::{calculate_ttl, expiry, parse_increment};
use super::{
    Reply, Shared, State, clean_mount, data_envelope, duration_secs, envelope, lock, nsid,
    str_field,
};
use crate::wire::effective_max;
use crate::wire::{
    SYSTEM_MAX_TTL, base62, from_unix_secs, glob_match, go_duration, rfc3339_nano, secs_until,
    stable_uuid, unix_secs,
};
use crate::{Flavor, Role, TokenState, TokenType, jwt};

/// A token plus what the double needs to renew and describe it.
pub(super) struct TokenEntry {
    pub(super) state: TokenState,
    /// The `renewable` flag of the `auth` block.
    renewable: bool,
    /// `token_period` in seconds (0: not periodic).
    period: u64,
    pub(super) mount: String,
    /// The role's `token_ttl` (the renewal default), seconds.
    ttl: u64,
    /// The effective max TTL, seconds.
    max_ttl: u64,
    creation_ttl: u64,
    meta: Map<String, Value>,
    entity_id: String,
    last_renewal: Option<SystemTime>,
}

impl TokenEntry {
    fn type_name(&self) -> &'static str {
        match self.state.token_type {
            TokenType::Service => "service",
            TokenType::Batch => "batch",
        }
    }

    fn auth_json(&self, lease_duration: u64) -> Value {
        json!({
            "client_token": self.state.client_token,
            "accessor": self.state.accessor,
            "policies": self.state.policies,
            "token_policies": self.state.policies,
            "metadata": self.meta,
            "lease_duration": lease_duration,
            "renewable": self.renewable,
            "entity_id": self.entity_id,
            "token_type": self.type_name(),
            "orphan": true,
            "mfa_requirement": null,
            "num_uses": 0,
        })
    }
}

impl Shared {
    pub(crate) fn enable_auth(&self, mount: &str) {
        lock(&self.state)
            .auth_mounts
            .entry(clean_mount(mount))
            .or_default();
    }

    /// Writes a role, refused as `tokenutil` refuses a `token_ttl` above a
    /// non-zero `token_max_ttl`.
    pub(crate) fn add_role(&self, mount: &str, role: Role) -> Result<(), String> {
        if !role.token_max_ttl.is_zero() && role.token_ttl > role.token_max_ttl {
            return Err("'token_ttl' cannot be greater than 'token_max_ttl'".to_owned());
        }
        lock(&self.state)
            .auth_mounts
            .entry(clean_mount(mount))
            .or_default()
            .insert(role.name.clone(), role);
        Ok(())
    }

    pub(crate) fn remove_role(&self, mount: &str, name: &str) {
        if let Some(roles) = lock(&self.state).auth_mounts.get_mut(&clean_mount(mount)) {
            roles.remove(name);
        }
    }

    pub(crate) fn token(&self, accessor_or_token: &str) -> Option<TokenState> {
        let mut st = lock(&self.state);
        let token = if st.tokens.contains_key(accessor_or_token) {
            accessor_or_token.to_owned()
        } else {
            st.accessors.get(accessor_or_token)?.clone()
        };
        st.token_live(&token, SystemTime::now());
        st.tokens.get(&token).map(|t| t.state.clone())
    }

    pub(crate) fn tokens(&self) -> Vec<TokenState> {
        let mut st = lock(&self.state);
        let now = SystemTime::now();
        let ids: Vec<String> = st.tokens.keys().cloned().collect();
        for id in &ids {
            st.token_live(id, now);
        }
        let mut all: Vec<TokenState> = st.tokens.values().map(|t| t.state.clone()).collect();
        all.sort_by(|a, b| {
            a.issued_at
                .cmp(&b.issued_at)
                .then_with(|| a.client_token.cmp(&b.client_token))
        });
        all
    }
}

impl State {
    /// Whether `token` is usable; an expired token is revoked (with its
    /// leases) on the spot.
    pub(super) fn token_live(&mut self, token: &str, now: SystemTime) -> bool {
        let Some(entry) = self.tokens.get(token) else {
            return false;
        };
        if entry.state.revoked {
            return false;
        }
        if now >= entry.state.expires_at {
            self.revoke_token(token);
            return false;
        }
        true
    }

    pub(super) fn revoke_token(&mut self, token: &str) {
        if let Some(entry) = self.tokens.get_mut(token) {
            entry.state.revoked = true;
        }
        for id in self.token_leases.remove(token).unwrap_or_default() {
            if let Some(lease) = self.leases.get_mut(&id) {
                lease.state.revoked = true;
            }
        }
    }

    pub(super) fn login(
        &mut self,
        mount: &str,
        body: &Value,
        namespace: Option<String>,
        now: SystemTime,
    ) -> Reply {
        let role_name = str_field(body, "role");
        if role_name.is_empty() {
            return Reply::error(400, "missing role");
        }
        let jwt_str = str_field(body, "jwt");
        if jwt_str.is_empty() {
            return Reply::error(400, "missing jwt");
        }
        let Some(role) = self
            .auth_mounts
            .get(mount)
            .and_then(|roles| roles.get(role_name))
            .cloned()
        else {
            return Reply::error(400, &format!("invalid role name {role_name:?}"));
        };
        let sa = match jwt::verify(jwt_str) {
            Ok(sa) => sa,
            // OpenBao checks `exp` itself and leaves the rest to the
            // TokenReview API, which only says no.
            Err(msg) if self.flavor == Flavor::OpenBao => {
                let msg = if msg.contains("token is expired (exp)") {
                    "invalid expiration time (exp) claim: token is expired"
                } else {
                    "permission denied"
                };
                return Reply::error(403, msg);
            }
            Err(msg) => return Reply::error(403, &msg),
        };
        if !role
            .bound_service_account_names
            .iter()
            .any(|p| glob_match(p, &sa.name))
        {
            return Reply::error(403, "service account name not authorized");
        }
        if !role
            .bound_service_account_namespaces
            .iter()
            .any(|p| glob_match(p, &sa.namespace))
        {
            return Reply::error(403, "namespace not authorized");
        }
        if role
            .audience
            .as_deref()
            .is_some_and(|aud| !aud.is_empty() && !sa.audience.iter().any(|a| a == aud))
        {
            return Reply::error(
                403,
                match self.flavor {
                    Flavor::Vault => "permission denied",
                    Flavor::OpenBao => {
                        "invalid audience (aud) claim: audience claim does not match any expected audience"
                    }
                },
            );
        }
        self.issue_token(mount, &role, &sa, namespace, now)
    }

    /// Creates the token for a successful login and answers with its
    /// `auth` block.
    fn issue_token(
        &mut self,
        mount: &str,
        role: &Role,
        sa: &jwt::Verified,
        namespace: Option<String>,
        now: SystemTime,
    ) -> Reply {
        let period = duration_secs(role.token_period);
        let max_ttl = effective_max(duration_secs(role.token_max_ttl));
        let wanted = match (period, duration_secs(role.token_ttl)) {
            (p, _) if p > 0 => p,
            (_, 0) => SYSTEM_MAX_TTL,
            (_, t) => t,
        };
        let mut warnings = Vec::new();
        let ttl = if wanted > max_ttl {
            warnings.push(format!(
                "TTL of \"{}\" exceeded the effective max_ttl of \"{}\"; TTL value is capped accordingly",
                go_duration(wanted),
                go_duration(max_ttl)
            ));
            max_ttl
        } else {
            wanted
        };
        let mut policies: Vec<String> = role.policies.clone();
        if !role.token_no_default_policy {
            policies.push("default".to_owned());
        }
        policies.sort();
        policies.dedup();
        // A periodic token has no max TTL: each renewal grants the period.
        let max_ttl = if period > 0 {
            SYSTEM_MAX_TTL * 1000
        } else {
            max_ttl
        };
        let max_at = from_unix_secs(unix_secs(now) + max_ttl);
        let prefix = match (self.flavor, role.token_type) {
            (Flavor::Vault, TokenType::Service) => "hvs",
            (Flavor::Vault, TokenType::Batch) => "hvb",
            (Flavor::OpenBao, TokenType::Service) => "s",
            (Flavor::OpenBao, TokenType::Batch) => "b",
        };
        let suffix = namespace
            .as_deref()
            .map(|ns| format!(".{}", nsid(ns)))
            .unwrap_or_default();
        let client_token = format!("{prefix}.{}{suffix}", base62(24));
        let accessor = base62(24);
        let mut meta = Map::new();
        meta.insert("role".into(), json!(role.name));
        meta.insert("service_account_name".into(), json!(sa.name));
        meta.insert("service_account_namespace".into(), json!(sa.namespace));
        meta.insert("service_account_secret_name".into(), json!(""));
        meta.insert("service_account_uid".into(), json!(sa.uid));
        let entry = TokenEntry {
            state: TokenState {
                client_token: client_token.clone(),
                accessor: accessor.clone(),
                policies,
                issued_at: now,
                expires_at: expiry(now, ttl),
                max_expires_at: max_at,
                revoked: false,
                renew_count: 0,
                role: role.name.clone(),
                service_account: sa.name.clone(),
                namespace: sa.namespace.clone(),
                token_type: role.token_type,
                vault_namespace: namespace,
            },
            renewable: role.renewable && role.token_type == TokenType::Service,
            period,
            mount: mount.to_owned(),
            ttl: duration_secs(role.token_ttl),
            max_ttl,
            creation_ttl: ttl,
            meta,
            entity_id: stable_uuid(&format!("entity/{mount}/{}", sa.uid)),
            last_renewal: None,
        };
        let auth = entry.auth_json(ttl);
        self.accessors.insert(accessor, client_token.clone());
        self.tokens.insert(client_token, entry);
        self.maybe_gc(now);
        Reply::ok(envelope(
            "",
            false,
            0,
            Value::Null,
            &warnings,
            auth,
            "kubernetes",
        ))
    }

    pub(super) fn renew_self(&mut self, token: &str, body: &Value, now: SystemTime) -> Reply {
        let increment = match parse_increment(body) {
            Ok(i) => i,
            Err(r) => return r,
        };
        let current = self.tokens.get(token).and_then(|e| {
            self.auth_mounts
                .get(&e.mount)
                .and_then(|roles| roles.get(&e.state.role))
                .map(|r| {
                    (
                        duration_secs(r.token_ttl),
                        effective_max(duration_secs(r.token_max_ttl)),
                    )
                })
        });
        let Some(entry) = self.tokens.get_mut(token) else {
            return Reply::invalid_token();
        };
        if entry.state.token_type == TokenType::Batch {
            return Reply::error(400, "batch tokens cannot be renewed");
        }
        if !entry.renewable {
            return Reply::error(400, "lease is not renewable");
        }
        // Like `pathLoginRenew`, renewal re-reads the role's TTLs, and a
        // deleted role ends renewals with a plain error: a 500.
        let Some((ttl, max_ttl)) = current else {
            return Reply::error(
                500,
                &format!("role {} does not exist during renewal", entry.state.role),
            );
        };
        let (ttl, warning) = if entry.period > 0 {
            (entry.period, None)
        } else {
            entry.ttl = ttl;
            entry.max_ttl = max_ttl;
            entry.state.max_expires_at = from_unix_secs(unix_secs(entry.state.issued_at) + max_ttl);
            match calculate_ttl(
                increment,
                entry.ttl,
                entry.max_ttl,
                entry.state.issued_at,
                now,
            ) {
                Ok(v) => v,
                // `CalculateTTL`'s error is not a user error: Vault answers 500.
                Err(msg) => return Reply::error(500, msg),
            }
        };
        entry.state.expires_at = expiry(now, ttl);
        entry.state.renew_count += 1;
        entry.last_renewal = Some(now);
        let warnings: Vec<String> = warning.into_iter().collect();
        Reply::ok(envelope(
            "",
            false,
            0,
            Value::Null,
            &warnings,
            entry.auth_json(ttl),
            "token",
        ))
    }

    pub(super) fn lookup_self(&self, token: &str, now: SystemTime) -> Reply {
        let Some(e) = self.tokens.get(token) else {
            return Reply::invalid_token();
        };
        let s = &e.state;
        let mut data = json!({
            "accessor": s.accessor,
            "creation_time": unix_secs(s.issued_at),
            "creation_ttl": e.creation_ttl,
            "display_name": format!("{}-{}-{}", e.mount.replace('/', "-"), s.namespace, s.service_account),
            "entity_id": e.entity_id,
            "expire_time": rfc3339_nano(s.expires_at),
            "explicit_max_ttl": 0,
            "id": s.client_token,
            "issue_time": rfc3339_nano(s.issued_at),
            "meta": e.meta,
            "num_uses": 0,
            "orphan": true,
            "path": format!("auth/{}/login", e.mount),
            "policies": s.policies,
            "renewable": e.renewable,
            "ttl": secs_until(s.expires_at, now),
            "type": e.type_name(),
        });
        // `period` only for periodic tokens (`token_store.go` handleLookup).
        if let (true, Value::Object(map)) = (e.period > 0, &mut data) {
            map.insert("period".into(), json!(e.period));
        }
        if let (Some(at), Value::Object(map)) = (e.last_renewal, &mut data) {
            map.insert("last_renewal".into(), json!(rfc3339_nano(at)));
            map.insert("last_renewal_time".into(), json!(unix_secs(at)));
        }
        Reply::ok(data_envelope(data, "token"))
    }
}
