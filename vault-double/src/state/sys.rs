//! The `sys/` endpoints that are not about leases: `sys/health` and
//! `sys/seal-status` (unauthenticated, raw JSON as `http/sys_health.go` and
//! `http/sys_seal.go` answer them) and `sys/internal/ui/mounts/<path>`,
//! which clients read to tell KV v1 from KV v2. Also `sys_inject`, the shape
//! every enveloped `sys/*` answer takes (lease renewal's too).

use std::time::SystemTime;

use serde_json::json;

use super::engines::Mount;
use super::router::Op;
use super::{Reply, State, data_envelope};
use crate::wire::{stable_uuid, unix_secs};

impl State {
    /// `sys/health`: unauthenticated, raw JSON (no envelope).
    pub(super) fn health(&self, now: SystemTime) -> Reply {
        Reply::ok(json!({
            "initialized": true,
            "sealed": false,
            "standby": false,
            "performance_standby": false,
            "replication_performance_mode": "disabled",
            "replication_dr_mode": "disabled",
            "server_time_utc": unix_secs(now),
            "version": crate::VERSION,
            "cluster_name": "vault-double",
            "cluster_id": self.cluster_id,
        }))
    }

    /// `sys/seal-status`: unauthenticated, raw JSON (no envelope).
    pub(super) fn seal_status(&self) -> Reply {
        Reply::ok(json!({
            "type": "shamir",
            "initialized": true,
            "sealed": false,
            "t": 1,
            "n": 1,
            "progress": 0,
            "nonce": "",
            "version": crate::VERSION,
            "build_date": "2024-01-01T00:00:00Z",
            "migration": false,
            "cluster_name": "vault-double",
            "cluster_id": self.cluster_id,
            "recovery_seal": false,
            "storage_type": "inmem",
        }))
    }

    /// `sys/internal/ui/mounts/<path>`: the mount `path` lives under, which
    /// clients (consul-template, the driver) read to tell KV v1 from KV v2.
    /// As Vault and OpenBao answer it (`vault/logical_system.go`
    /// `pathInternalUIMountRead`): no policy is needed to ask, but a token
    /// is answered only about a mount its policies grant some path under
    /// (`hasMountAccess`), and a path under no mount is refused the same
    /// way, so the endpoint cannot be used to find mounts. The answer is
    /// the mount's entry, without the top-level copies other `sys/`
    /// answers carry.
    pub(super) fn ui_mount(&self, op: Op, token: &str, target: &str) -> Reply {
        if op != Op::Read {
            return Reply::unsupported_operation();
        }
        let denied = || {
            Reply::error(
                403,
                &format!(
                    "preflight capability check returned 403, please ensure client's policies grant access to path \"{}/\"",
                    target.trim_end_matches('/')
                ),
            )
        };
        let Some((name, _)) = self.find_mount(target) else {
            return denied();
        };
        let policies = &self.tokens[token].state.policies;
        if !self.policies.grants_under(policies, &format!("{name}/")) {
            return denied();
        }
        let (kind, options, description) = match &self.mounts[&name] {
            Mount::Kv2(_) => ("kv", json!({"version": "2"}), "key/value secret storage"),
            Mount::Kv1(_) => ("kv", json!({"version": "1"}), ""),
            // Mounted through `sys/mounts` without options: an empty map.
            Mount::Dynamic(_) => ("database", json!({}), ""),
            Mount::Pki(_) => ("pki", json!({}), ""),
        };
        let mut data = json!({
            "accessor": format!("{kind}_{}", &stable_uuid(&name)[..8]),
            "config": {"default_lease_ttl": 0, "force_no_cache": false, "max_lease_ttl": 0},
            "description": description,
            "external_entropy_access": false,
            "local": false,
            "options": options,
            "path": format!("{name}/"),
            "plugin_version": "",
            "running_plugin_version": format!("v{}+builtin", crate::VERSION),
            "running_sha256": "",
            "seal_wrap": false,
            "type": kind,
            "uuid": stable_uuid(&format!("mount/{name}")),
        });
        // Built-in engines that can be deprecated say they are supported
        // (the database engine does not say).
        if kind != "database" {
            data["deprecation_status"] = json!("supported");
        }
        Reply::ok(data_envelope(data, "system"))
    }
}
