//! `--double-host`: this binary re-executed as the Vault double's own
//! process. It serves the same `vault_double` server as
//! `target/release/vault-double`, seeded with what the benchmark needs (the
//! walkthrough, ten KV secrets, a dynamic-secrets role, the role's token
//! TTLs), and answers dump commands on stdin so the benchmark can read the
//! request log, leases and tokens from outside:
//!
//! ```text
//! requests <file>   one line per request: at_ns method path status token# lease_id
//! leases <file>     lease_id issued_ns expires_ns revoked renew_count
//! tokens <file>     token# issued_ns expires_ns revoked renew_count
//! quit
//! ```

use std::fmt::Write as _;
use std::io::{BufRead as _, Write as _};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use sha2::{Digest, Sha256};
use vault_double::{DynamicRole, Role, VaultDouble, seed_walkthrough};

/// How many KV secrets are seeded (`secret/data/bench/s0` …).
pub const KV_SECRETS: usize = 10;

fn secs(arg: Option<&String>, name: &str) -> Duration {
    Duration::from_secs(
        arg.and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("--double-host needs {name}")),
    )
}

fn nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos()
}

/// A short stable name for a token, so dumps never carry one.
fn token_tag(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest[..6].iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Runs the host: `args` are `threads token_ttl token_max lease_ttl lease_max`
/// (seconds).
pub fn run(args: &[String]) {
    let threads: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(1);
    let token_ttl = secs(args.get(1), "token_ttl");
    let token_max = secs(args.get(2), "token_max");
    let lease_ttl = secs(args.get(3), "lease_ttl");
    let lease_max = secs(args.get(4), "lease_max");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .expect("double host runtime");
    let vault = runtime.block_on(VaultDouble::start());
    seed_walkthrough(&vault);
    for i in 0..KV_SECRETS {
        vault.kv2_put(
            "secret",
            &format!("bench/s{i}"),
            json!({"value": format!("bench-secret-{i}-0123456789abcdef")}),
        );
    }
    vault.put_policy(
        "myapp-kv-ro",
        &[
            ("secret/data/myapp/*", &["read"]),
            ("secret/metadata/myapp/*", &["list"]),
            ("secret/data/bench/*", &["read"]),
            ("database/creds/*", &["read"]),
        ],
    );
    vault.add_dynamic_role("database", "app", DynamicRole::new(lease_ttl, lease_max));
    vault.add_role(
        "kubernetes",
        Role::new("example", ["vault-auth"], ["default"], ["myapp-kv-ro"])
            .with_audience("vault")
            .with_ttl(token_ttl, token_max),
    );
    let mut out = std::io::stdout().lock();
    writeln!(out, "ADDR {}", vault.addr()).expect("stdout");
    out.flush().expect("stdout");
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let (command, file) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        if command == "latency" {
            let ms: Vec<u64> = file
                .split_whitespace()
                .map(|v| v.parse().expect("latency in milliseconds"))
                .collect();
            let ms = |i: usize| Duration::from_millis(ms.get(i).copied().unwrap_or(0));
            vault.set_latency(ms(0), ms(1));
            writeln!(out, "OK").expect("stdout");
            out.flush().expect("stdout");
            continue;
        }
        let text = match command {
            "requests" => requests(&vault),
            "leases" => leases(&vault),
            "tokens" => tokens(&vault),
            _ => break,
        };
        std::fs::write(file, text).expect("write the dump");
        writeln!(out, "OK").expect("stdout");
        out.flush().expect("stdout");
    }
    vault.shutdown();
    drop(vault);
    runtime.shutdown_timeout(Duration::from_secs(1));
}

fn requests(vault: &VaultDouble) -> String {
    let mut text = String::new();
    for r in vault.requests() {
        let lease = r
            .body
            .as_ref()
            .and_then(|b| b.get("lease_id"))
            .and_then(serde_json::Value::as_str)
            .unwrap_or("-");
        let token = r.token.as_deref().map_or_else(|| "-".to_owned(), token_tag);
        let _ = writeln!(
            text,
            "{}\t{}\t{}\t{}\t{}\t{}",
            nanos(r.at),
            r.method,
            r.path,
            r.status,
            token,
            lease
        );
    }
    text
}

fn leases(vault: &VaultDouble) -> String {
    let mut text = String::new();
    for l in vault.leases() {
        let _ = writeln!(
            text,
            "{}\t{}\t{}\t{}\t{}",
            l.lease_id,
            nanos(l.issued_at),
            nanos(l.expires_at),
            l.revoked,
            l.renew_count
        );
    }
    text
}

fn tokens(vault: &VaultDouble) -> String {
    let mut text = String::new();
    for t in vault.tokens() {
        let _ = writeln!(
            text,
            "{}\t{}\t{}\t{}\t{}",
            token_tag(&t.client_token),
            nanos(t.issued_at),
            nanos(t.expires_at),
            t.revoked,
            t.renew_count
        );
    }
    text
}
