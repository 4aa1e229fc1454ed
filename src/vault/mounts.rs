//! KV version 2 paths written without `data/`: `secret "secret/myapp/config"`
//! as Vault Agent (consul-template) accepts it. Before its first read or
//! list of a path, the agent asks Vault which mount the path lies on
//! (`sys/internal/ui/mounts/<path>`: an unauthenticated endpoint that
//! answers a token about a mount only when its policies grant something
//! under that mount) and, on a KV version 2 mount, inserts `data/` after
//! the mount for a read (`metadata/` for a list) unless the path has it.
//!
//! The driver does the same, with the rules of OpenBao's agent
//! (`openbao-template`'s `isKVv2`, `shimKVv2Path`, `shimKvV2ListPath`): a
//! mount is KV version 2 when its `type` is `kv` and `options.version` is
//! `"2"`; a refused (403) or unknown (404) lookup, or an answer that names
//! no mount, leaves the path as written. Writes (`secret` with arguments,
//! `pkiCert`) are sent as written, as the agent sends them.
//!
//! The answers are kept in a [`MountCache`]: bounded in entries (a tenant
//! chooses the paths), each for a while ([`MOUNT_TTL`]), per Vault address,
//! namespace and mount path. A refusal is not kept: it names no mount.
//!
//! The cache is shared by every tenant of the node. That is safe because
//! what it holds is not secret and cannot be chosen by a tenant: a mount's
//! path and engine version are the same for every token of the namespace,
//! they come from Vault itself, and they only ever decide which path a
//! request is sent at. The request is then sent with the tenant's own
//! token, which Vault checks as for any other path. A token that would
//! have been refused the lookup has no capability anywhere under the
//! mount, so its request is refused at either path, as the agent's would
//! be.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::{Endpoint, SecretRequest};

/// Most mount answers kept per node. A node's pods read from a handful of
/// mounts; a tenant naming thousands of paths only evicts older answers.
pub const MAX_CACHED_MOUNTS: usize = 256;

/// How long a mount answer is believed: a mount remounted as another
/// version is followed within this time.
pub const MOUNT_TTL: Duration = Duration::from_secs(600);

/// What `sys/internal/ui/mounts/<path>` said about a path's mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The mount's path, with its trailing `/` (`secret/`).
    pub path: String,
    /// A KV version 2 mount (`type` `kv`, `options.version` `"2"`), as
    /// consul-template's `isKVv2` decides it.
    pub kv2: bool,
}

impl Mount {
    /// Reads the answer's `data` as consul-template's `isKVv2` does.
    pub fn from_data(data: &serde_json::Value) -> Option<Self> {
        let path = data.get("path")?.as_str()?.to_owned();
        if path.is_empty() {
            return None;
        }
        let kind = data.get("type").and_then(serde_json::Value::as_str);
        let version = data
            .get("options")
            .and_then(|o| o.get("version"))
            .and_then(serde_json::Value::as_str);
        Some(Self {
            path,
            kv2: kind == Some("kv") && version == Some("2"),
        })
    }

    /// The path the agent sends `request` at on this mount: the request's
    /// own path unless the mount is KV version 2, where `shimKVv2Path`
    /// (reads) or `shimKvV2ListPath` (lists) inserts `data/` or
    /// `metadata/`. `None` when nothing changes.
    pub fn agent_path(&self, request: &SecretRequest) -> Option<String> {
        if !self.kv2 {
            return None;
        }
        let raw = request.path();
        let shimmed = if request.is_list() {
            list_path(raw, &self.path)
        } else {
            read_path(raw, &self.path)
        };
        (shimmed != raw).then_some(shimmed)
    }
}

/// `shimKVv2Path`, literally: the mount itself reads `<mount>/data`; any
/// other path gets `data/` after the mount unless what follows the mount
/// starts with `data/` or `metadata/`.
fn read_path(raw: &str, mount: &str) -> String {
    if raw == mount || raw == mount.strip_suffix('/').unwrap_or(mount) {
        return join(&[mount, "data"]);
    }
    let rest = raw.strip_prefix(mount).unwrap_or(raw);
    if rest.starts_with("data/") || rest.starts_with("metadata/") {
        return raw.to_owned();
    }
    join(&[mount, "data", rest])
}

/// `shimKvV2ListPath`, literally: unchanged when the path starts with
/// `<mount>/metadata` (a plain prefix test: `<mount>/metadataX` too, and a
/// list of `<mount>/data/x` becomes `<mount>/metadata/data/x`), else
/// `metadata/` after the mount.
fn list_path(raw: &str, mount: &str) -> String {
    let mount = mount.strip_suffix('/').unwrap_or(mount);
    if raw.starts_with(&join(&[mount, "metadata"])) {
        return raw.to_owned();
    }
    if raw == mount {
        return join(&[mount, "metadata"]);
    }
    let rest = raw.strip_prefix(mount).unwrap_or(raw);
    join(&[mount, "metadata", rest])
}

/// Go's `path.Join` for these paths (which hold no `.`, `..` or empty
/// segments, see [`SecretRequest::build`]): the non-empty segments joined
/// by single `/`.
fn join(parts: &[&str]) -> String {
    parts
        .iter()
        .flat_map(|p| p.split('/'))
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

/// Where an answer is kept: the Vault, its namespace, the mount's path.
type Key = (String, Option<String>, String);

/// Mount answers of the node's Vaults, at most [`MAX_CACHED_MOUNTS`], each
/// for [`MOUNT_TTL`]. See the module's docs for why they are shared.
#[derive(Debug, Default)]
pub struct MountCache {
    entries: Mutex<Entries>,
}

/// The answers, each with when it came and its place in arrival order.
#[derive(Debug, Default)]
struct Entries {
    by_key: HashMap<Key, (Mount, Instant, u64)>,
    arrivals: u64,
}

impl MountCache {
    /// The known mount `path` lies on at `at`, if an answer about it is
    /// still fresh (the longest mount path that `path` starts with).
    pub fn get(&self, at: &Endpoint, path: &str) -> Option<Mount> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let mut best: Option<&Mount> = None;
        for (end, _) in path
            .match_indices('/')
            .chain(std::iter::once((path.len(), "")))
        {
            let prefix = format!("{}/", &path[..end]);
            let key = (at.address.to_string(), at.namespace.clone(), prefix);
            if let Some((mount, seen, _)) = entries.by_key.get(&key)
                && now.duration_since(*seen) < MOUNT_TTL
            {
                best = Some(mount);
            }
        }
        best.cloned()
    }

    /// Keeps `mount`'s answer for `at`; the oldest answer goes when the
    /// cache is full.
    pub fn put(&self, at: &Endpoint, mount: Mount) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        entries
            .by_key
            .retain(|_, (_, seen, _)| now.duration_since(*seen) < MOUNT_TTL);
        let key = (
            at.address.to_string(),
            at.namespace.clone(),
            mount.path.clone(),
        );
        if entries.by_key.len() >= MAX_CACHED_MOUNTS && !entries.by_key.contains_key(&key) {
            let oldest = entries
                .by_key
                .iter()
                .min_by_key(|(_, (_, _, arrival))| *arrival)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                entries.by_key.remove(&oldest);
            }
        }
        entries.arrivals += 1;
        let arrival = entries.arrivals;
        entries.by_key.insert(key, (mount, now, arrival));
    }

    /// How many answers are kept.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_key
            .len()
    }

    /// Whether no answer is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_CACHED_MOUNTS, Mount, MountCache};
    use crate::vault::{Endpoint, SecretRequest};
    use serde_json::json;

    fn read(path: &str) -> SecretRequest {
        SecretRequest::new(path, &serde_json::Map::new()).unwrap()
    }

    fn list(path: &str) -> SecretRequest {
        SecretRequest::list(path, false).unwrap()
    }

    fn kv2(path: &str) -> Mount {
        Mount {
            path: path.to_owned(),
            kv2: true,
        }
    }

    /// The paths the agent's shims give (`openbao-template`'s
    /// `vault_read.go` and `vault_list.go`), quirks included: (mount, read
    /// or list, path as written, path sent).
    #[test]
    fn paths_are_shimmed_as_the_agent_shims_them() {
        let table: &[(&str, bool, &str, &str)] = &[
            // Reads: `data/` after the mount, unless it is there already.
            (
                "secret/",
                false,
                "secret/myapp/config",
                "secret/data/myapp/config",
            ),
            (
                "secret/",
                false,
                "secret/data/myapp/config",
                "secret/data/myapp/config",
            ),
            (
                "secret/",
                false,
                "secret/metadata/myapp",
                "secret/metadata/myapp",
            ),
            ("secret/", false, "secret", "secret/data"),
            ("secret/", false, "secret/config", "secret/data/config"),
            (
                "secret/",
                false,
                "secret/subkeys/app",
                "secret/data/subkeys/app",
            ),
            (
                "secret/",
                false,
                "secret/datax/app",
                "secret/data/datax/app",
            ),
            ("secret/", false, "secret/data", "secret/data/data"),
            ("team/kv/", false, "team/kv/app", "team/kv/data/app"),
            // Lists: `metadata/` after the mount; `data/` is not
            // recognised, and any path starting `<mount>/metadata` stays.
            ("secret/", true, "secret/myapp", "secret/metadata/myapp"),
            ("secret/", true, "secret", "secret/metadata"),
            (
                "secret/",
                true,
                "secret/metadata/myapp",
                "secret/metadata/myapp",
            ),
            ("secret/", true, "secret/metadata", "secret/metadata"),
            ("secret/", true, "secret/metadatax", "secret/metadatax"),
            (
                "secret/",
                true,
                "secret/data/myapp",
                "secret/metadata/data/myapp",
            ),
        ];
        for &(mount, is_list, written, sent) in table {
            let request = if is_list {
                list(written)
            } else {
                read(written)
            };
            let shimmed = kv2(mount).agent_path(&request);
            assert_eq!(
                shimmed.as_deref().unwrap_or(written),
                sent,
                "{mount} {} {written}",
                if is_list { "list" } else { "read" }
            );
            assert_eq!(shimmed.is_none(), written == sent, "None when unchanged");
        }
        // KV version 1 (or any other engine): every path as written.
        let v1 = Mount {
            path: "kv/".to_owned(),
            kv2: false,
        };
        assert_eq!(v1.agent_path(&read("kv/app")), None);
        assert_eq!(v1.agent_path(&list("kv/app")), None);
    }

    #[test]
    fn the_answer_is_read_as_consul_templates_is_kv_v2() {
        let m = |d| Mount::from_data(&d);
        assert_eq!(
            m(json!({"path": "secret/", "type": "kv", "options": {"version": "2"}})),
            Some(kv2("secret/"))
        );
        assert!(
            !m(json!({"path": "kv/", "type": "kv", "options": {"version": "1"}}))
                .unwrap()
                .kv2
        );
        assert!(
            !m(json!({"path": "kv/", "type": "kv", "options": null}))
                .unwrap()
                .kv2
        );
        assert!(
            !m(json!({"path": "x/", "type": "generic", "options": {"version": "2"}}))
                .unwrap()
                .kv2
        );
        assert_eq!(m(json!({"type": "kv"})), None);
    }

    /// A path finds the mount it lies on, per Vault address and
    /// namespace; nothing else.
    #[test]
    fn the_cache_finds_a_paths_mount() {
        let cache = MountCache::default();
        let at = Endpoint {
            address: "https://vault:8200".parse().unwrap(),
            namespace: None,
        };
        let other = Endpoint {
            namespace: Some("team1".to_owned()),
            ..at.clone()
        };
        assert_eq!(cache.get(&at, "secret/myapp/config"), None);
        cache.put(&at, kv2("secret/"));
        cache.put(&at, kv2("team/kv/"));
        assert_eq!(cache.get(&at, "secret/myapp/config"), Some(kv2("secret/")));
        assert_eq!(cache.get(&at, "secret"), Some(kv2("secret/")));
        assert_eq!(cache.get(&at, "team/kv/a/b"), Some(kv2("team/kv/")));
        assert_eq!(cache.get(&at, "team/other"), None);
        assert_eq!(
            cache.get(&other, "secret/myapp/config"),
            None,
            "per namespace"
        );
        assert_eq!(cache.get(&at, "secretx/a"), None);
    }

    /// A tenant naming many mounts never grows the cache past its bound.
    #[test]
    fn the_cache_is_bounded() {
        let cache = MountCache::default();
        let at = Endpoint {
            address: "https://vault:8200".parse().unwrap(),
            namespace: None,
        };
        for i in 0..(MAX_CACHED_MOUNTS * 3) {
            cache.put(&at, kv2(&format!("m{i}/")));
        }
        assert_eq!(cache.len(), MAX_CACHED_MOUNTS);
        let last = format!("m{}/x", MAX_CACHED_MOUNTS * 3 - 1);
        assert!(cache.get(&at, &last).is_some(), "the newest answer stays");
    }
}
