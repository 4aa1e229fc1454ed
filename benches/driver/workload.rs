//! What the phases publish and what the Vault double is seeded with: the
//! templates (one leased secret, or `k` KV secrets), the double's token and
//! lease TTLs, and the kubelet calls for a set of pods.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::kubelet::{Call, Pod};
use crate::procs::DoubleSeed;

pub const HOUR: Duration = Duration::from_secs(3600);
pub const DAY: Duration = Duration::from_secs(24 * 3600);

/// The dynamic-secrets template (one leased secret).
pub const CREDS_TEMPLATE: &str =
    r#"{{#with (secret "database/creds/app")}}{{data.username}}{{/with}}"#;

/// A template reading `k` KV v2 secrets.
pub fn kv_template(k: usize) -> String {
    let mut template = String::new();
    for i in 0..k {
        let _ = write!(
            template,
            "{{{{#with (secret \"secret/data/bench/s{i}\")}}}}s{i}={{{{data.data.value}}}}\n{{{{/with}}}}"
        );
    }
    template
}

pub fn kv_paths(k: usize) -> Vec<String> {
    (0..k).map(|i| format!("secret/data/bench/s{i}")).collect()
}

pub fn seed(
    threads: usize,
    token_ttl: Duration,
    token_max: Duration,
    lease: Duration,
) -> DoubleSeed {
    DoubleSeed {
        threads,
        token_ttl,
        token_max,
        lease_ttl: lease,
        lease_max: if lease >= HOUR { DAY } else { HOUR },
    }
}

pub fn publishes(pods: &[Pod], kubelet_dir: &Path, template: &str) -> Vec<Call> {
    pods.iter()
        .map(|p| Call::Publish(Box::new(p.publish(kubelet_dir, template))))
        .collect()
}

pub fn unpublishes(pods: &[Pod], kubelet_dir: &Path) -> Vec<Call> {
    pods.iter()
        .map(|p| Call::Unpublish(p.unpublish(kubelet_dir)))
        .collect()
}
