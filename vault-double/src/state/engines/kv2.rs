//! KV version 2, as `vault-plugin-secrets-kv` serves it: versioned writes
//! and `?version=N` reads (`path_data.go`), soft delete, undelete and
//! destroy (`path_delete.go`, `path_destroy.go`), and metadata reads and
//! lists. A deleted or destroyed version answers 404 with the whole
//! envelope (`data.data: null`) and no `errors`.

use std::collections::HashMap;
use std::time::SystemTime;

use serde_json::{Map, Value, json};

use super::{Mount, list_keys};
use crate::state::router::{Op, query_param};
use crate::state::{Reply, Shared, clean_mount, data_envelope, lock};
use crate::wire::rfc3339_nano;

/// One version of a secret.
pub(in crate::state) struct Kv2Version {
    data: Value,
    created: SystemTime,
    /// Soft-deleted at (`delete`), undone by `undelete`.
    deleted: Option<SystemTime>,
    /// Destroyed for good (`destroy`).
    destroyed: bool,
}

impl Kv2Version {
    fn new(data: Value, created: SystemTime) -> Self {
        Self {
            data,
            created,
            deleted: None,
            destroyed: false,
        }
    }
}

/// What `delete`, `undelete` and `destroy` do to versions.
#[derive(Clone, Copy)]
enum Kv2Change {
    Delete,
    Undelete,
    Destroy,
}

/// Applies `change` to `versions` (1-based; the latest when empty).
fn kv2_apply(list: &mut [Kv2Version], versions: &[u64], change: Kv2Change, now: SystemTime) {
    let latest = [list.len() as u64];
    let wanted = if versions.is_empty() {
        &latest[..]
    } else {
        versions
    };
    for n in wanted {
        let Some(v) = usize::try_from(*n)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| list.get_mut(i))
        else {
            continue;
        };
        match change {
            Kv2Change::Delete => {
                v.deleted.get_or_insert(now);
            }
            Kv2Change::Undelete if !v.destroyed => v.deleted = None,
            Kv2Change::Undelete => {}
            Kv2Change::Destroy => {
                v.destroyed = true;
                v.data = Value::Null;
            }
        }
    }
}

impl Shared {
    pub(crate) fn enable_kv2(&self, mount: &str) {
        let mut st = lock(&self.state);
        st.ensure_mount(mount, || Mount::Kv2(HashMap::new()));
    }

    pub(crate) fn kv2_put(&self, mount: &str, path: &str, data: Value) {
        let mut st = lock(&self.state);
        let Mount::Kv2(entries) = st.ensure_mount(mount, || Mount::Kv2(HashMap::new())) else {
            unreachable!("ensure_mount checked the mount kind");
        };
        entries
            .entry(path.trim_matches('/').to_owned())
            .or_default()
            .push(Kv2Version::new(data, SystemTime::now()));
    }

    pub(crate) fn kv2_mark(&self, mount: &str, path: &str, versions: &[u64], destroy: bool) {
        let now = SystemTime::now();
        let mut st = lock(&self.state);
        if let Some(Mount::Kv2(entries)) = st.mounts.get_mut(&clean_mount(mount))
            && let Some(list) = entries.get_mut(path.trim_matches('/'))
        {
            kv2_apply(
                list,
                versions,
                if destroy {
                    Kv2Change::Destroy
                } else {
                    Kv2Change::Delete
                },
                now,
            );
        }
    }
}

fn kv2_metadata(version: &Kv2Version, number: usize) -> Value {
    json!({
        "created_time": rfc3339_nano(version.created),
        "custom_metadata": null,
        "deletion_time": version.deleted.map(rfc3339_nano).unwrap_or_default(),
        "destroyed": version.destroyed,
        "version": number,
    })
}

/// The versions listed in a `delete`/`undelete`/`destroy` body.
fn versions_field(body: &Value) -> Result<Vec<u64>, Reply> {
    match body.get("versions") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .ok_or_else(|| {
                        Reply::error(400, "error converting input for field \"versions\"")
                    })
            })
            .collect(),
        Some(_) => Err(Reply::error(
            400,
            "error converting input for field \"versions\"",
        )),
    }
}

/// `<mount>/data/`, `delete/`, `undelete/`, `destroy/` and `metadata/`.
pub(super) fn kv2_request(
    entries: &mut HashMap<String, Vec<Kv2Version>>,
    rest: &str,
    op: Op,
    query: &str,
    body: &Value,
    now: SystemTime,
) -> Reply {
    if let Some(key) = rest.strip_prefix("data/").map(|k| k.trim_matches('/')) {
        if key.is_empty() {
            return Reply::error(404, "unsupported path");
        }
        return match op {
            Op::Read => read_data(entries, key, query),
            Op::Delete => {
                if let Some(list) = entries.get_mut(key) {
                    kv2_apply(list, &[], Kv2Change::Delete, now);
                }
                Reply::no_content()
            }
            Op::Write => write_data(entries, key, body, now),
            _ => Reply::unsupported_operation(),
        };
    }
    for (prefix, change) in [
        ("delete/", Kv2Change::Delete),
        ("undelete/", Kv2Change::Undelete),
        ("destroy/", Kv2Change::Destroy),
    ] {
        if let Some(key) = rest.strip_prefix(prefix).map(|k| k.trim_matches('/')) {
            return change_versions(entries, key, op, change, body, now);
        }
    }
    if let Some(key) = rest
        .strip_prefix("metadata")
        .filter(|r| r.is_empty() || r.starts_with('/'))
        .map(|k| k.trim_matches('/'))
    {
        return match op {
            Op::List => list_keys(entries.keys(), key),
            Op::Read => read_metadata(entries, key),
            _ => Reply::unsupported_operation(),
        };
    }
    Reply::error(404, "unsupported path")
}

/// A read of `data/<key>` (`?version=` or the latest).
fn read_data(entries: &HashMap<String, Vec<Kv2Version>>, key: &str, query: &str) -> Reply {
    let Some(versions) = entries.get(key) else {
        return Reply::not_found_empty();
    };
    let wanted = match query_param(query, "version").map(str::parse::<usize>) {
        None | Some(Ok(0)) => versions.len(),
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return Reply::error(400, "error converting input for field \"version\"");
        }
    };
    let Some(version) = wanted.checked_sub(1).and_then(|i| versions.get(i)) else {
        return Reply::not_found_empty();
    };
    if version.deleted.is_some() || version.destroyed {
        // `path_data.go`: the whole envelope, data null, 404, no `errors`.
        return Reply::json(
            404,
            data_envelope(
                json!({"data": null, "metadata": kv2_metadata(version, wanted)}),
                "kv",
            ),
        );
    }
    Reply::ok(data_envelope(
        json!({"data": version.data, "metadata": kv2_metadata(version, wanted)}),
        "kv",
    ))
}

/// A write of `data/<key>`: a new version.
fn write_data(
    entries: &mut HashMap<String, Vec<Kv2Version>>,
    key: &str,
    body: &Value,
    now: SystemTime,
) -> Reply {
    let Some(data) = body.get("data").filter(|d| d.is_object()) else {
        return Reply::error(400, "no data provided");
    };
    let versions = entries.entry(key.to_owned()).or_default();
    versions.push(Kv2Version::new(data.clone(), now));
    let n = versions.len();
    Reply::ok(data_envelope(kv2_metadata(&versions[n - 1], n), "kv"))
}

/// `delete/`, `undelete/` or `destroy/` of some versions of a key.
fn change_versions(
    entries: &mut HashMap<String, Vec<Kv2Version>>,
    key: &str,
    op: Op,
    change: Kv2Change,
    body: &Value,
    now: SystemTime,
) -> Reply {
    if op != Op::Write {
        return Reply::unsupported_operation();
    }
    let versions = match versions_field(body) {
        Ok(v) => v,
        Err(reply) => return reply,
    };
    if versions.is_empty() && !matches!(change, Kv2Change::Delete) {
        return Reply::error(400, "no version number provided");
    }
    if let Some(list) = entries.get_mut(key) {
        kv2_apply(list, &versions, change, now);
    }
    Reply::no_content()
}

/// A read of `metadata/<key>`: every version's times.
fn read_metadata(entries: &HashMap<String, Vec<Kv2Version>>, key: &str) -> Reply {
    let Some(versions) = entries.get(key).filter(|v| !v.is_empty()) else {
        return Reply::not_found_empty();
    };
    let history: Map<String, Value> = versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            (
                (i + 1).to_string(),
                json!({"created_time": rfc3339_nano(v.created), "deletion_time": v.deleted.map(rfc3339_nano).unwrap_or_default(), "destroyed": v.destroyed}),
            )
        })
        .collect();
    Reply::ok(data_envelope(
        json!({
            "cas_required": false,
            "created_time": rfc3339_nano(versions[0].created),
            "current_version": versions.len(),
            "custom_metadata": null,
            "delete_version_after": "0s",
            "max_versions": 0,
            "oldest_version": 0,
            "updated_time": rfc3339_nano(versions[versions.len() - 1].created),
            "versions": history,
        }),
        "kv",
    ))
}
