//! The secrets engines, one file each: `kv2.rs`, `kv1.rs`, `database.rs`
//! (dynamic and static credentials) and `pki.rs`. Here: the mount table's
//! entry type, the creation of mounts while seeding, and
//! `mount_request`, which hands a request to the engine of its mount.

mod database;
mod kv1;
mod kv2;
mod pki;

use std::collections::HashMap;
use std::time::SystemTime;

use serde_json::{Value, json};

use super::router::Op;
use super::{Reply, State, clean_mount, data_envelope, duration_secs};
use crate::DynamicRole;
use crate::wire::effective_max;

/// A secret engine mount.
pub(super) enum Mount {
    Kv2(HashMap<String, Vec<kv2::Kv2Version>>),
    Kv1(HashMap<String, Value>),
    Dynamic(HashMap<String, DynamicRole>),
    Pki(HashMap<String, pki::PkiRole>),
}

impl Mount {
    fn kind(&self) -> &'static str {
        match self {
            Mount::Kv2(_) => "kv-v2",
            Mount::Kv1(_) => "kv-v1",
            Mount::Dynamic(_) => "database",
            Mount::Pki(_) => "pki",
        }
    }
}

impl State {
    /// A dynamic role's TTLs as a renewal re-reads them: its default and
    /// its effective max, in seconds.
    pub(in crate::state) fn role_ttls(&self, mount: &str, role: &str) -> Option<(u64, u64)> {
        match self.mounts.get(mount) {
            Some(Mount::Dynamic(roles)) => roles.get(role).map(|r| {
                (
                    duration_secs(r.default_ttl),
                    effective_max(duration_secs(r.max_ttl)),
                )
            }),
            _ => None,
        }
    }

    /// Returns mount `name`, creating it with `make` if absent.
    ///
    /// # Panics
    /// If the mount exists with a different engine type (a seeding bug).
    fn ensure_mount(&mut self, name: &str, make: impl FnOnce() -> Mount) -> &mut Mount {
        let fresh = make();
        let kind = fresh.kind();
        let mount = self.mounts.entry(clean_mount(name)).or_insert(fresh);
        assert_eq!(
            mount.kind(),
            kind,
            "vault-double: mount {name:?} is already a {} mount",
            mount.kind()
        );
        mount
    }

    /// Answers a request for `rest` under `mount`, by the mount's engine.
    #[allow(clippy::too_many_arguments)] // One request's worth of context.
    pub(super) fn mount_request(
        &mut self,
        mount: &str,
        rest: &str,
        op: Op,
        query: &str,
        body: &Value,
        token: &str,
        now: SystemTime,
    ) -> Reply {
        let Some(m) = self.mounts.get_mut(mount) else {
            return Reply::no_handler(rest);
        };
        match m {
            Mount::Kv2(entries) => kv2::kv2_request(entries, rest, op, query, body, now),
            Mount::Kv1(entries) => kv1::kv1_request(entries, rest, op, body),
            Mount::Pki(roles) => pki::pki_request(roles, rest, op, body, now),
            Mount::Dynamic(_) => self.database_request(mount, rest, op, token, now),
        }
    }
}

/// The keys under `prefix`, one level deep (directories end in `/`), as
/// both KV engines list them; 404 when there are none.
fn list_keys<'k>(keys: impl Iterator<Item = &'k String>, prefix: &str) -> Reply {
    let prefix = prefix.trim_matches('/');
    let prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    let mut out: Vec<String> = keys
        .filter_map(|k| k.strip_prefix(prefix.as_str()))
        .map(|rest| match rest.find('/') {
            Some(i) => rest[..=i].to_owned(),
            None => rest.to_owned(),
        })
        .collect();
    out.sort();
    out.dedup();
    if out.is_empty() {
        return Reply::not_found_empty();
    }
    Reply::ok(data_envelope(json!({ "keys": out }), "kv"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_keys_folds_directories() {
        let keys = ["a/b".to_owned(), "a/c/d".to_owned(), "x".to_owned()];
        let reply = list_keys(keys.iter(), "a");
        assert_eq!(reply.body.unwrap()["data"]["keys"], json!(["b", "c/"]));
        assert_eq!(
            list_keys(keys.iter(), "").body.unwrap()["data"]["keys"],
            json!(["a/", "x"])
        );
        assert_eq!(list_keys(keys.iter(), "zzz").status, 404);
    }
}
