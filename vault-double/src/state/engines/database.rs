//! The database engine's credentials (`builtin/logical/database`):
//! dynamic `creds/<role>`, a username and password under a renewable
//! lease, and static `static-creds/<role>` (`path_creds_create.go`), with
//! no lease, `ttl` the seconds to the next rotation and a new password
//! after each. Static roles live in the mount's role table under a
//! `static:` prefix.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::Mount;
use crate::state::leases::{LeaseEntry, expiry};
use crate::state::router::Op;
use crate::state::{Reply, Shared, State, clean_mount, duration_secs, envelope, lock, nsid};
use crate::wire::effective_max;
use crate::wire::{
    SYSTEM_MAX_TTL, base62, from_unix_secs, go_duration, rfc3339_nano, stable_uuid, unix_secs,
};
use crate::{DynamicRole, LeaseState};

/// Static roles live in a database mount's role table under this prefix.
const STATIC_PREFIX: &str = "static:";

impl Shared {
    pub(crate) fn add_dynamic_role(&self, mount: &str, role: &str, cfg: DynamicRole) {
        let mut st = lock(&self.state);
        let Mount::Dynamic(roles) = st.ensure_mount(mount, || Mount::Dynamic(HashMap::new()))
        else {
            unreachable!("ensure_mount checked the mount kind");
        };
        roles.insert(role.to_owned(), cfg);
    }

    pub(crate) fn add_static_role(&self, mount: &str, role: &str, period: Duration) {
        let mut st = lock(&self.state);
        let Mount::Dynamic(roles) = st.ensure_mount(mount, || Mount::Dynamic(HashMap::new()))
        else {
            unreachable!("ensure_mount checked the mount kind");
        };
        roles.insert(
            format!("{STATIC_PREFIX}{role}"),
            DynamicRole {
                default_ttl: period.max(Duration::from_secs(1)),
                max_ttl: Duration::ZERO,
                renewable: false,
            },
        );
        st.static_created
            .insert(format!("{}/{role}", clean_mount(mount)), SystemTime::now());
    }
}

impl State {
    /// `<mount>/creds/<role>` and `<mount>/static-creds/<role>`.
    pub(super) fn database_request(
        &mut self,
        mount: &str,
        rest: &str,
        op: Op,
        token: &str,
        now: SystemTime,
    ) -> Reply {
        let Some(Mount::Dynamic(roles)) = self.mounts.get(mount) else {
            return Reply::no_handler(rest);
        };
        if let Some(role) = rest.strip_prefix("static-creds/") {
            if op != Op::Read {
                return Reply::unsupported_operation();
            }
            let Some(cfg) = roles.get(&format!("{STATIC_PREFIX}{role}")).copied() else {
                return Reply::error(400, &format!("unknown role: {role}"));
            };
            let created = self
                .static_created
                .get(&format!("{mount}/{role}"))
                .copied()
                .unwrap_or(now);
            return static_creds(mount, role, duration_secs(cfg.default_ttl), created, now);
        }
        let Some(role) = rest
            .strip_prefix("creds/")
            .filter(|r| !r.starts_with(STATIC_PREFIX))
        else {
            return Reply::error(404, "unsupported path");
        };
        if op != Op::Read {
            return Reply::unsupported_operation();
        }
        let Some(cfg) = roles.get(role).copied() else {
            return Reply::error(400, &format!("unknown role: {role}"));
        };
        self.issue_creds(mount, role, &cfg, token, now)
    }

    /// New credentials under a lease that `token` owns, capped by the role's
    /// max TTL with a warning.
    fn issue_creds(
        &mut self,
        mount: &str,
        role: &str,
        cfg: &DynamicRole,
        token: &str,
        now: SystemTime,
    ) -> Reply {
        let max_ttl = effective_max(duration_secs(cfg.max_ttl));
        let wanted = match duration_secs(cfg.default_ttl) {
            0 => SYSTEM_MAX_TTL,
            t => t,
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
        let display = self
            .tokens
            .get(token)
            .map_or("token", |t| t.mount.as_str())
            .replace('/', "-");
        let role_part: String = role.chars().take(16).collect();
        let data = json!({
            "username": format!("v-{display}-{role_part}-{}-{}", base62(20), unix_secs(now)),
            "password": format!("A1a-{}", base62(20)),
        });
        let path = format!("{mount}/creds/{role}");
        let namespace = self
            .tokens
            .get(token)
            .and_then(|t| t.state.vault_namespace.clone());
        let suffix = namespace
            .as_deref()
            .map(|ns| format!(".{}", nsid(ns)))
            .unwrap_or_default();
        let lease_id = format!("{path}/{}{suffix}", base62(24));
        let max_at = from_unix_secs(unix_secs(now) + max_ttl);
        self.leases.insert(
            lease_id.clone(),
            LeaseEntry {
                state: LeaseState {
                    lease_id: lease_id.clone(),
                    path,
                    issued_at: now,
                    expires_at: expiry(now, ttl),
                    max_expires_at: max_at,
                    renewable: cfg.renewable,
                    revoked: false,
                    renew_count: 0,
                    data: data.clone(),
                    token: token.to_owned(),
                    vault_namespace: namespace,
                },
                default_ttl: duration_secs(cfg.default_ttl),
                max_ttl,
                mount: mount.to_owned(),
                role: role.to_owned(),
                expired: false,
            },
        );
        self.token_leases
            .entry(token.to_owned())
            .or_default()
            .push(lease_id.clone());
        self.maybe_gc(now);
        Reply::ok(envelope(
            &lease_id,
            cfg.renewable,
            ttl,
            data,
            &warnings,
            Value::Null,
            "database",
        ))
    }
}

/// `database/static-creds/<role>` (`path_creds_create.go`): no lease; `ttl`
/// is the seconds to the next rotation, and the password changes with
/// each one.
fn static_creds(
    mount: &str,
    role: &str,
    period: u64,
    created: SystemTime,
    now: SystemTime,
) -> Reply {
    let elapsed = now.duration_since(created).unwrap_or_default().as_secs();
    let rotation = elapsed / period.max(1);
    let last = created + Duration::from_secs(rotation * period);
    let data = json!({
        "username": format!("static-{role}"),
        "password": format!("A1a-{}", stable_uuid(&format!("{mount}/{role}/{rotation}"))),
        "ttl": period - elapsed % period.max(1),
        "rotation_period": period,
        "last_vault_rotation": rfc3339_nano(last),
    });
    Reply::ok(envelope("", false, 0, data, &[], Value::Null, "database"))
}
