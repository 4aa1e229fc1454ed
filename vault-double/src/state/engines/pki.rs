//! PKI issuing (`builtin/logical/pki/path_issue_sign.go`, `cert_util.go`):
//! `issue/<role>` answers `certificate`, `issuing_ca`, `ca_chain`,
//! `private_key`, `serial_number` and a numeric `expiration`, with no
//! lease. A `ttl` above the role's max is capped with a warning, not
//! refused. The PEM blocks hold placeholder text, not real certificates.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::Mount;
use crate::state::router::Op;
use crate::state::{Reply, Shared, duration_secs, envelope, lock, str_field};
use crate::wire::effective_max;
use crate::wire::{base62, go_duration_string, parse_duration_value, pem, unix_secs, uuid};

/// A PKI role's TTLs, in seconds.
#[derive(Clone, Copy)]
pub(in crate::state) struct PkiRole {
    ttl: u64,
    max_ttl: u64,
}

impl Shared {
    pub(crate) fn add_pki_role(&self, mount: &str, role: &str, ttl: Duration, max_ttl: Duration) {
        let mut st = lock(&self.state);
        let Mount::Pki(roles) = st.ensure_mount(mount, || Mount::Pki(HashMap::new())) else {
            unreachable!("ensure_mount checked the mount kind");
        };
        roles.insert(
            role.to_owned(),
            PkiRole {
                ttl: duration_secs(ttl),
                max_ttl: duration_secs(max_ttl),
            },
        );
    }
}

/// `<mount>/issue/<role>`.
pub(super) fn pki_request(
    roles: &HashMap<String, PkiRole>,
    rest: &str,
    op: Op,
    body: &Value,
    now: SystemTime,
) -> Reply {
    let Some(role) = rest.strip_prefix("issue/") else {
        return Reply::error(404, "unsupported path");
    };
    if op != Op::Write {
        return Reply::unsupported_operation();
    }
    pki_issue(roles, role, body, now)
}

fn pki_issue(roles: &HashMap<String, PkiRole>, role: &str, body: &Value, now: SystemTime) -> Reply {
    let Some(cfg) = roles.get(role).copied() else {
        return Reply::error(400, &format!("unknown role: {role}"));
    };
    let common_name = str_field(body, "common_name");
    if common_name.is_empty() {
        return Reply::error(
            400,
            "the common_name field is required, or must be provided in a CSR with \"use_csr_common_name\" set to true, unless \"require_cn\" is set to false",
        );
    }
    let max_ttl = effective_max(cfg.max_ttl);
    let requested = match body.get("ttl").map(parse_duration_value) {
        None | Some(Some(0)) => None,
        Some(Some(t)) => Some(t),
        Some(None) => {
            return Reply::error(
                400,
                "error converting input for field \"ttl\": invalid duration",
            );
        }
    };
    let mut warnings = Vec::new();
    // A `ttl` above the role's max is capped with a warning, not refused.
    let requested = requested.map(|t| {
        if t > max_ttl {
            warnings.push(format!(
                "TTL {:?} is longer than permitted maxTTL {:?}, so maxTTL is being used",
                go_duration_string(t),
                go_duration_string(max_ttl)
            ));
            max_ttl
        } else {
            t
        }
    });
    let ttl = requested.unwrap_or(match cfg.ttl {
        0 => max_ttl,
        t => t.min(max_ttl),
    });
    let not_after = unix_secs(now) + ttl;
    let serial: Vec<String> = uuid()
        .replace('-', "")
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    let serial = serial.join(":");
    let ca = pem(
        "CERTIFICATE",
        b"vault-double fake issuing CA\nCN=vault-double Root CA\n",
    );
    let cert = pem(
        "CERTIFICATE",
        format!(
            "vault-double fake certificate\nCN={common_name}\nserial={serial}\nnot_after={not_after}\n"
        )
        .as_bytes(),
    );
    let key = pem(
        "RSA PRIVATE KEY",
        format!(
            "vault-double fake private key for {common_name} {}\n",
            base62(32)
        )
        .as_bytes(),
    );
    let data = json!({
        "certificate": cert,
        "issuing_ca": ca,
        "ca_chain": [ca],
        "private_key": key,
        "private_key_type": "rsa",
        "serial_number": serial,
        "expiration": not_after,
    });
    Reply::ok(envelope("", false, 0, data, &warnings, Value::Null, "pki"))
}
