//! Leases, and the TTL arithmetic leases and tokens share.
//!
//! `calculate_ttl` is `CalculateTTL` of `sdk/framework/lease.go`; renewal
//! and revocation (`sys/leases/renew`, `sys/leases/revoke` and the legacy
//! `sys/renew`, `sys/revoke`) follow `vault/expiration.go`. A lease's
//! condition is brought up to date with the clock and its token whenever it
//! is looked at, and `maybe_gc` drops dead tokens and leases so long
//! benchmarks stay bounded.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::{Reply, Shared, State, envelope, lock, str_field, sys_inject};
use crate::LeaseState;
use crate::policy::cap;
use crate::wire::{SYSTEM_MAX_TTL, from_unix_secs, go_duration, parse_duration_value, unix_secs};

/// Above this many tokens or leases, dead entries are garbage-collected.
const GC_THRESHOLD: usize = 100_000;

/// A lease plus its renewal parameters.
pub(super) struct LeaseEntry {
    pub(super) state: LeaseState,
    pub(super) default_ttl: u64,
    pub(super) max_ttl: u64,
    /// Secret mount and role that issued it (renewal re-reads the role,
    /// as Vault's `LeaseExtend` does).
    pub(super) mount: String,
    pub(super) role: String,
    /// Revoked because it ran out (renewal says `lease expired`), as
    /// opposed to revoked explicitly or with its token (`lease not found`).
    pub(super) expired: bool,
}

/// Where a lease stands, as `State::lease_condition` finds it.
enum LeaseCondition {
    /// Usable.
    Live,
    /// Revoked, explicitly or with its token (`lease not found`).
    Gone,
    /// Ran out (`lease expired`).
    Expired,
}

/// Vault's `CalculateTTL` for the non-periodic case: returns the granted
/// TTL (seconds) and the capping warning, or the renewal error.
pub(super) fn calculate_ttl(
    increment: u64,
    backend_ttl: u64,
    max_ttl: u64,
    start: SystemTime,
    now: SystemTime,
) -> Result<(u64, Option<String>), &'static str> {
    let ttl = if increment > 0 {
        increment
    } else if backend_ttl > 0 {
        backend_ttl
    } else {
        SYSTEM_MAX_TTL
    };
    let max_valid = unix_secs(start) + max_ttl;
    let now_s = unix_secs(now);
    if max_valid <= now_s {
        return Err("past the max TTL, cannot renew");
    }
    let remaining = max_valid - now_s;
    if ttl > remaining {
        let warning = format!(
            "TTL of \"{}\" exceeded the effective max_ttl of \"{}\"; TTL value is capped accordingly",
            go_duration(ttl),
            go_duration(remaining)
        );
        Ok((remaining, Some(warning)))
    } else {
        Ok((ttl, None))
    }
}

/// Expiry for a TTL granted at `now`. As in Vault, the TTL is computed on
/// whole seconds but counted from the precise `now`, so the final
/// expiry can lie up to a second past the (truncated) max; renewing in
/// that window is what yields `past the max TTL, cannot renew`.
pub(super) fn expiry(now: SystemTime, ttl: u64) -> SystemTime {
    now + Duration::from_secs(ttl)
}

/// The `increment` of a renewal body, in seconds (0 when absent).
pub(super) fn parse_increment(body: &Value) -> Result<u64, Reply> {
    match body.get("increment") {
        None => Ok(0),
        Some(v) => parse_duration_value(v).ok_or_else(|| {
            Reply::error(
                400,
                &format!("error converting input {v} for field \"increment\": invalid duration"),
            )
        }),
    }
}

impl Shared {
    pub(crate) fn lease(&self, lease_id: &str) -> Option<LeaseState> {
        let mut st = lock(&self.state);
        st.lease_condition(lease_id, SystemTime::now())?;
        st.leases.get(lease_id).map(|l| l.state.clone())
    }

    pub(crate) fn leases(&self) -> Vec<LeaseState> {
        let mut st = lock(&self.state);
        let now = SystemTime::now();
        let ids: Vec<String> = st.leases.keys().cloned().collect();
        for id in &ids {
            st.lease_condition(id, now);
        }
        let mut all: Vec<LeaseState> = st.leases.values().map(|l| l.state.clone()).collect();
        all.sort_by(|a, b| {
            a.issued_at
                .cmp(&b.issued_at)
                .then_with(|| a.lease_id.cmp(&b.lease_id))
        });
        all
    }
}

impl State {
    /// Brings lease `id` up to date with the clock and its token, and says
    /// whether it can still be used. `None` if it never existed.
    fn lease_condition(&mut self, id: &str, now: SystemTime) -> Option<LeaseCondition> {
        let lease = self.leases.get(id)?;
        if lease.expired {
            return Some(LeaseCondition::Expired);
        }
        if lease.state.revoked {
            return Some(LeaseCondition::Gone);
        }
        let lease_exp = lease.state.expires_at;
        let owner = lease.state.token.clone();
        let token_dead_at = self.tokens.get(&owner).map(|t| {
            if t.state.revoked {
                SystemTime::UNIX_EPOCH
            } else {
                t.state.expires_at
            }
        });
        // Whichever happened first wins: the token's end revokes the lease,
        // the lease's own end expires it.
        if token_dead_at.is_some_and(|dead_at| dead_at <= now && dead_at < lease_exp) {
            self.revoke_token(&owner);
            return Some(LeaseCondition::Gone);
        }
        if lease_exp <= now {
            let lease = self.leases.get_mut(id)?;
            lease.expired = true;
            lease.state.revoked = true;
            return Some(LeaseCondition::Expired);
        }
        Some(LeaseCondition::Live)
    }

    fn lease_id_from(url_id: &str, body: &Value) -> String {
        match str_field(body, "lease_id") {
            "" => url_id.to_owned(),
            id => id.to_owned(),
        }
    }

    /// `sys/leases/*` are ordinary ACL paths: no ownership shortcut. The
    /// default policy grants `sys/leases/renew`, not `sys/leases/revoke`.
    fn may_manage_lease(&self, token: &str, acl_path: &str) -> bool {
        self.policies
            .capabilities(&self.tokens[token].state.policies, acl_path)
            & cap::UPDATE
            != 0
    }

    /// Whether lease `id` exists in the namespace of `token`.
    fn lease_in_namespace(&self, token: &str, id: &str) -> bool {
        self.leases
            .get(id)
            .is_none_or(|l| l.state.vault_namespace == self.tokens[token].state.vault_namespace)
    }

    pub(super) fn lease_renew(
        &mut self,
        token: &str,
        url_id: &str,
        body: &Value,
        now: SystemTime,
    ) -> Reply {
        let id = Self::lease_id_from(url_id, body);
        if id.is_empty() {
            return Reply::error(400, "lease_id must be specified");
        }
        let increment = match parse_increment(body) {
            Ok(i) => i,
            Err(r) => return r,
        };
        if !self.may_manage_lease(token, "sys/leases/renew") {
            return Reply::policy_denied();
        }
        if !self.lease_in_namespace(token, &id) {
            return Reply::error(400, "lease not found");
        }
        match self.lease_condition(&id, now) {
            None | Some(LeaseCondition::Gone) => return Reply::error(400, "lease not found"),
            Some(LeaseCondition::Expired) => return Reply::error(400, "lease expired"),
            Some(LeaseCondition::Live) => {}
        }
        let current = self
            .leases
            .get(&id)
            .and_then(|l| self.role_ttls(&l.mount, &l.role));
        let Some(lease) = self.leases.get_mut(&id) else {
            return Reply::error(400, "lease not found");
        };
        // Like `framework.LeaseExtend`, renewal re-reads the role's TTLs.
        if let Some((ttl, max_ttl)) = current {
            lease.default_ttl = ttl;
            lease.max_ttl = max_ttl;
            lease.state.max_expires_at = from_unix_secs(unix_secs(lease.state.issued_at) + max_ttl);
        }
        if !lease.state.renewable {
            return Reply::error(400, "lease is not renewable");
        }
        let (ttl, warning) = match calculate_ttl(
            increment,
            lease.default_ttl,
            lease.max_ttl,
            lease.state.issued_at,
            now,
        ) {
            Ok(v) => v,
            Err(msg) => return Reply::error(400, msg),
        };
        lease.state.expires_at = expiry(now, ttl);
        lease.state.renew_count += 1;
        let warnings: Vec<String> = warning.into_iter().collect();
        Reply::ok(sys_inject(envelope(
            &id,
            true,
            ttl,
            Value::Null,
            &warnings,
            Value::Null,
            "system",
        )))
    }

    pub(super) fn lease_revoke(
        &mut self,
        token: &str,
        url_id: &str,
        body: &Value,
        now: SystemTime,
    ) -> Reply {
        let id = Self::lease_id_from(url_id, body);
        if id.is_empty() {
            return Reply::error(400, "lease_id must be specified");
        }
        if !self.may_manage_lease(token, "sys/leases/revoke") {
            return Reply::policy_denied();
        }
        if !self.lease_in_namespace(token, &id) {
            return Reply::no_content();
        }
        if matches!(self.lease_condition(&id, now), Some(LeaseCondition::Live))
            && let Some(lease) = self.leases.get_mut(&id)
        {
            lease.state.revoked = true;
        }
        Reply::no_content()
    }
    /// Drops dead tokens and leases once the tables grow large, so long
    /// benchmarks stay bounded.
    pub(super) fn maybe_gc(&mut self, now: SystemTime) {
        if self.leases.len() > GC_THRESHOLD && self.leases.len().is_multiple_of(1024) {
            let ids: Vec<String> = self.leases.keys().cloned().collect();
            for id in &ids {
                if !matches!(self.lease_condition(id, now), Some(LeaseCondition::Live)) {
                    self.leases.remove(id);
                }
            }
        }
        if self.tokens.len() > GC_THRESHOLD && self.tokens.len().is_multiple_of(1024) {
            let ids: Vec<String> = self.tokens.keys().cloned().collect();
            for id in &ids {
                if self.token_live(id, now) {
                    continue;
                }
                if let Some(t) = self.tokens.remove(id) {
                    self.accessors.remove(&t.state.accessor);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calculate_ttl_caps_and_errors() {
        let start = from_unix_secs(1_000_000);
        let now = from_unix_secs(1_000_000 + 590);
        let (ttl, warning) = calculate_ttl(3600, 60, 1200, start, now).unwrap();
        assert_eq!(ttl, 610);
        assert_eq!(
            warning.unwrap(),
            "TTL of \"1h\" exceeded the effective max_ttl of \"10m10s\"; TTL value is capped accordingly"
        );
        assert_eq!(calculate_ttl(0, 60, 1200, start, now).unwrap(), (60, None));
        assert_eq!(
            calculate_ttl(0, 60, 590, start, now).unwrap_err(),
            "past the max TTL, cannot renew"
        );
    }
}
