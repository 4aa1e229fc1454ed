//! KV version 1 (`vault-plugin-secrets-kv`'s `passthrough.go`): `data` is
//! the stored map as written, `lease_duration` the mount default or the
//! secret's own `ttl` (or `lease`), and no lease is registered.

use std::collections::HashMap;

use serde_json::Value;

use super::{Mount, list_keys};
use crate::state::router::Op;
use crate::state::{Reply, Shared, envelope, lock};
use crate::wire::{SYSTEM_MAX_TTL, parse_duration_value};

impl Shared {
    pub(crate) fn enable_kv1(&self, mount: &str) {
        let mut st = lock(&self.state);
        st.ensure_mount(mount, || Mount::Kv1(HashMap::new()));
    }

    pub(crate) fn kv1_put(&self, mount: &str, path: &str, data: Value) {
        let mut st = lock(&self.state);
        let Mount::Kv1(entries) = st.ensure_mount(mount, || Mount::Kv1(HashMap::new())) else {
            unreachable!("ensure_mount checked the mount kind");
        };
        entries.insert(path.trim_matches('/').to_owned(), data);
    }
}

/// `<mount>/<path>`: read, list, write and delete.
pub(super) fn kv1_request(
    entries: &mut HashMap<String, Value>,
    rest: &str,
    op: Op,
    body: &Value,
) -> Reply {
    let key = rest.trim_matches('/');
    match op {
        Op::List => list_keys(entries.keys(), key),
        Op::Read => {
            let Some(data) = entries.get(key) else {
                return Reply::not_found_empty();
            };
            let ttl = data
                .get("ttl")
                .or_else(|| data.get("lease"))
                .and_then(parse_duration_value)
                .unwrap_or(SYSTEM_MAX_TTL);
            Reply::ok(envelope(
                "",
                false,
                ttl,
                data.clone(),
                &[],
                Value::Null,
                "kv",
            ))
        }
        Op::Write => {
            if key.is_empty() || !body.is_object() {
                return Reply::error(400, "missing data fields");
            }
            entries.insert(key.to_owned(), body.clone());
            Reply::no_content()
        }
        Op::Delete => {
            entries.remove(key);
            Reply::no_content()
        }
        Op::Head | Op::Other => Reply::unsupported_operation(),
    }
}
