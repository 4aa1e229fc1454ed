//! The `sys/` endpoints that are not about leases: `sys/health` and
//! `sys/seal-status` (unauthenticated, raw JSON as `http/sys_health.go` and
//! `http/sys_seal.go` answer them) and `sys/internal/ui/mounts/<path>`,
//! which clients read to tell KV v1 from KV v2. Also `sys_inject`, the shape
//! every enveloped `sys/*` answer takes (lease renewal's too).

use std::time::SystemTime;

use serde_json::{Value, json};

use super::engines::Mount;
use super::{Reply, State, data_envelope, sys_inject};
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
    /// clients read to tell KV v1 from KV v2.
    pub(super) fn ui_mount(&self, target: &str) -> Reply {
        let Some((name, _)) = self.find_mount(target) else {
            return Reply::not_found_empty();
        };
        let (kind, options) = match &self.mounts[&name] {
            Mount::Kv2(_) => ("kv", json!({"version": "2"})),
            Mount::Kv1(_) => ("kv", json!({"version": "1"})),
            Mount::Dynamic(_) => ("database", Value::Null),
            Mount::Pki(_) => ("pki", Value::Null),
        };
        let data = json!({
            "accessor": format!("{kind}_{}", &stable_uuid(&name)[..8]),
            "config": {"default_lease_ttl": 0, "force_no_cache": false, "max_lease_ttl": 0},
            "description": "",
            "external_entropy_access": false,
            "local": false,
            "options": options,
            "path": format!("{name}/"),
            "seal_wrap": false,
            "type": kind,
            "uuid": stable_uuid(&format!("mount/{name}")),
        });
        Reply::ok(sys_inject(data_envelope(data, "system")))
    }
}
