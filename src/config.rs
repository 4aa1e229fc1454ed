//! Command-line flags (each also read from an environment variable). The
//! doc comments are the `--help` text.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, Parser, ValueEnum};
use url::Url;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// vault-csi-driver: a Kubernetes CSI node plugin that logs in to Vault as
/// each pod's own service account, renders handlebars templates into a
/// tmpfs at the pod's volume path, and keeps the files fresh.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "vault-csi-driver",
    version,
    about,
    long_about = None,
    after_help = "Subcommand:\n  vault-csi-driver convert [FILE...]  convert Vault Agent / OpenBao Agent pods (agent containers,\n                                     injector annotations) to this driver's CSI volume;\n                                     `vault-csi-driver convert --help` for its options"
)]
pub struct Config {
    /// CSI endpoint kubelet and the sidecars connect to. Only unix sockets;
    /// the socket is created with mode 0600.
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    pub endpoint: String,

    /// This node's name, reported in NodeGetInfo (set it from the downward
    /// API's spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    pub node_id: String,

    /// CSI driver name; must match the CSIDriver object.
    #[arg(long, env = "DRIVER_NAME", default_value = "vault.csi.driver")]
    pub driver_name: String,

    /// Default Vault address for volumes that set no `vaultAddress`. Always
    /// allowed.
    #[arg(long, env = "VAULT_ADDR")]
    pub vault_addr: Option<Url>,

    /// Further Vault addresses volumes may name in `vaultAddress`
    /// (comma-separated). A pod's token is never sent anywhere else.
    #[arg(long, env = "ALLOWED_VAULT_ADDRS", value_delimiter = ',')]
    pub allowed_vault_addrs: Vec<Url>,

    /// PEM bundle of CA certificates to trust for Vault's TLS certificate,
    /// in addition to the system roots.
    #[arg(long, env = "VAULT_CACERT")]
    pub vault_ca_cert: Option<PathBuf>,

    /// Where per-volume state lives (tmpfs on the host, e.g. under /run).
    /// Holds Vault tokens, lease ids and the Vault answers each volume
    /// was rendered from (secret data), so keep it on tmpfs.
    #[arg(long, env = "STATE_DIR", default_value = "/run/vault-csi-driver")]
    pub state_dir: PathBuf,

    /// Kubelet's root directory; publish targets must lie under its pods/.
    #[arg(long, env = "KUBELET_DIR", default_value = "/var/lib/kubelet")]
    pub kubelet_dir: PathBuf,

    /// Address for /metrics, /healthz and /readyz (e.g. 0.0.0.0:9090).
    /// Unset: no HTTP listener.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Most connections the metrics listener keeps open at once. When all
    /// are taken, the oldest one not answering a request is closed to make
    /// room; if every one is answering, the new connection is closed.
    #[arg(long, env = "METRICS_MAX_CONNECTIONS", default_value_t = 64)]
    pub metrics_max_connections: usize,

    /// Time a metrics connection has, from being accepted, to send its
    /// complete request head before it is closed.
    #[arg(long, env = "METRICS_HEADER_TIMEOUT", default_value = "5s", value_parser = go_duration::parse)]
    pub metrics_header_timeout: Duration,

    /// Time the metrics listener allows from a request head until the
    /// response is handed over.
    #[arg(long, env = "METRICS_REQUEST_TIMEOUT", default_value = "10s", value_parser = go_duration::parse)]
    pub metrics_request_timeout: Duration,

    /// Time a kept-alive metrics connection has after a response to take
    /// it and send its next request head before it is closed.
    #[arg(long, env = "METRICS_IDLE_TIMEOUT", default_value = "15s", value_parser = go_duration::parse)]
    pub metrics_idle_timeout: Duration,

    /// Export the per-volume gauges
    /// (`vault_csi_volume_lease_expiry_timestamp_seconds`,
    /// `vault_csi_volume_next_refresh_timestamp_seconds`), labelled with
    /// each volume's pod namespace, pod name and volume id. Off by default:
    /// they list every Vault-using pod on the node and when its credentials
    /// expire to whoever can reach the listener. The variable takes
    /// true/false, 1/0, yes/no or on/off.
    #[arg(long, env = "METRICS_PER_VOLUME", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub metrics_per_volume: bool,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter (`info`, `debug`, or `vault_csi_driver=debug,info`).
    /// Tokens and secret values are never logged at any level.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Default `staticSecretRefreshInterval`: how often KV secrets (which
    /// have no lease) are re-read. Go duration syntax (30s, 5m, 1h); at
    /// least 1s, as for the attribute.
    #[arg(long, env = "STATIC_SECRET_REFRESH_INTERVAL", default_value = "5m", value_parser = go_duration::parse)]
    pub static_secret_refresh_interval: Duration,

    /// Size limit of each volume's tmpfs in bytes; at least 65536. Rendered
    /// files may use at most half of it minus 4 KiB, so an update's old and
    /// new sets both fit.
    #[arg(long, env = "VOLUME_SIZE_BYTES", default_value_t = 1024 * 1024)]
    pub volume_size_bytes: u64,

    /// The node's memory budget for volumes, in bytes: everything a volume
    /// makes the driver hold (tmpfs pages twice for updates, inodes, kept
    /// Vault answers, records, compiled templates, attributes, bookkeeping),
    /// reserved before a publish or refresh holds it. A publish or refresh
    /// past it is refused with `ResourceExhausted`. Unset: the
    /// driver's cgroup memory limit minus 48 MiB; no limit found and no
    /// flag: unlimited.
    #[arg(long, env = "MEMORY_BUDGET_BYTES")]
    pub memory_budget_bytes: Option<u64>,

    /// SELinux label of every volume's tmpfs (`context=` mount option), so
    /// that SELinux-enforcing nodes need no relabel of the read-only volume:
    /// `auto` (label with `container_file_t` where the kernel has SELinux
    /// enabled), `none`, or a label such as
    /// `system_u:object_r:container_file_t:s0`.
    #[arg(long, env = "SELINUX_CONTEXT", default_value = "auto")]
    pub selinux_context: String,

    /// Most refreshes running at once across all volumes; at least 1.
    #[arg(long, env = "MAX_CONCURRENT_REFRESHES", default_value_t = 64)]
    pub max_concurrent_refreshes: usize,

    /// Time allowed for one Vault request, body included. Connecting is
    /// allowed at most 5 seconds of it.
    #[arg(long, env = "VAULT_REQUEST_TIMEOUT", default_value = "30s", value_parser = go_duration::parse)]
    pub vault_request_timeout: Duration,

    /// Write volumes as plain directories instead of tmpfs mounts, so the
    /// driver can run unprivileged for demos and development. Files then
    /// land on disk and `readOnly` is not enforced: never use in a cluster.
    /// The variable takes true/false, 1/0, yes/no or on/off.
    #[arg(long, env = "INSECURE_PLAIN_DIRECTORIES", hide_short_help = true, action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub insecure_plain_directories: bool,

    /// Bound on the whole shutdown after SIGTERM: CSI calls in flight,
    /// publishes waiting for Vault (stopped and rolled back at half of it),
    /// revocations and refreshes. Keep it under the pod's
    /// `terminationGracePeriodSeconds` (30 s), after which kubelet kills
    /// the driver.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "25s", value_parser = go_duration::parse)]
    pub shutdown_timeout: Duration,

    /// Longest a publish waits for Vault (the login, the reads and their
    /// retries) or for a refresh holding the volume; past it the publish is
    /// rolled back, its Vault token revoked, and kubelet told
    /// `DeadlineExceeded` (it retries). Kubelet gives every CSI call 2
    /// minutes; the driver also answers a little before the deadline the
    /// caller sends.
    #[arg(long, env = "PUBLISH_TIMEOUT", default_value = "60s", value_parser = go_duration::parse)]
    pub publish_timeout: Duration,

    /// Fairness between tenants: refresh deadlines and slots, the floor
    /// for re-read intervals, per-namespace Vault budgets.
    #[command(flatten)]
    pub fairness: FairnessConfig,
}

/// Flags that keep one tenant (pod namespace) from starving the others'
/// refreshes or spending the node's Vault rate-limit quota, which Vault
/// counts per client address: one node is one client.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct FairnessConfig {
    /// Longest time one refresh of one volume may take (renewals, re-reads,
    /// render, write). After it the refresh gives up, the previous files
    /// stay, and the volume is retried with backoff before anything expires.
    /// At least 1s.
    #[arg(long, env = "REFRESH_TIMEOUT", default_value = "60s", value_parser = go_duration::parse)]
    pub refresh_timeout: Duration,

    /// Most refreshes of one pod namespace running at once, out of
    /// --max-concurrent-refreshes: one tenant's slow secrets engine cannot
    /// hold every slot. At least 1.
    #[arg(
        long,
        env = "MAX_CONCURRENT_REFRESHES_PER_NAMESPACE",
        default_value_t = 8
    )]
    pub max_concurrent_refreshes_per_namespace: usize,

    /// Floor for `staticSecretRefreshInterval`: a volume asking for less is
    /// re-read this often instead (logged, and counted in
    /// `vault_csi_refresh_interval_clamped_total`).
    #[arg(long, env = "MIN_REFRESH_INTERVAL", default_value = "30s", value_parser = go_duration::parse)]
    pub min_refresh_interval: Duration,

    /// Vault requests a second each pod namespace may send (sustained).
    /// Requests over budget wait, at most --vault-request-timeout; renewals
    /// never wait. 0 turns the budget off.
    #[arg(long, env = "NAMESPACE_VAULT_RATE", default_value_t = 10.0)]
    pub namespace_vault_rate: f64,

    /// Vault requests a pod namespace may send at once after a quiet spell;
    /// at least 1 while the rate is on.
    #[arg(long, env = "NAMESPACE_VAULT_BURST", default_value_t = 50)]
    pub namespace_vault_burst: u32,

    /// The part of the node's memory budget for volumes (more than 0, at
    /// most 1) one pod namespace may hold, so a namespace that filled its
    /// share still leaves room for the others' volumes.
    #[arg(long, env = "NAMESPACE_MEMORY_SHARE", default_value_t = 0.5)]
    pub namespace_memory_share: f64,
}

/// A flag value the driver cannot run with. The driver refuses it at
/// start-up rather than run with another value than the one asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag} ({env}) {requirement}; it is {value}")]
pub struct InvalidFlag {
    /// The flag, e.g. `--refresh-timeout`.
    pub flag: &'static str,
    /// The environment variable that sets it.
    pub env: &'static str,
    /// What the value must be, e.g. `must be at least 1s`.
    pub requirement: &'static str,
    /// The value given.
    pub value: String,
}

impl InvalidFlag {
    fn new(
        flag: &'static str,
        env: &'static str,
        requirement: &'static str,
        value: impl fmt::Display,
    ) -> Self {
        Self {
            flag,
            env,
            requirement,
            value: value.to_string(),
        }
    }
}

/// A duration as the flags take it (`500ms`, `1m 30s`).
fn shown(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

impl Config {
    /// Refuses values the driver cannot run with, or could only run with by
    /// quietly using another value (a refresh timeout under a second, no
    /// refresh slots), naming the flag, its variable and what to set.
    pub fn check(&self) -> Result<(), InvalidFlag> {
        if self.node_id.is_empty() {
            return Err(InvalidFlag::new(
                "--node-id",
                "NODE_NAME",
                "must not be empty (the DaemonSet sets it from spec.nodeName)",
                "empty",
            ));
        }
        if self.volume_size_bytes < 64 * 1024 {
            return Err(InvalidFlag::new(
                "--volume-size-bytes",
                "VOLUME_SIZE_BYTES",
                "must be at least 65536",
                self.volume_size_bytes,
            ));
        }
        if self.static_secret_refresh_interval < Duration::from_secs(1) {
            return Err(InvalidFlag::new(
                "--static-secret-refresh-interval",
                "STATIC_SECRET_REFRESH_INTERVAL",
                "must be at least 1s, as the staticSecretRefreshInterval attribute must",
                shown(self.static_secret_refresh_interval),
            ));
        }
        for (flag, env, value) in [
            (
                "--metrics-max-connections",
                "METRICS_MAX_CONNECTIONS",
                self.metrics_max_connections,
            ),
            (
                "--max-concurrent-refreshes",
                "MAX_CONCURRENT_REFRESHES",
                self.max_concurrent_refreshes,
            ),
            (
                "--max-concurrent-refreshes-per-namespace",
                "MAX_CONCURRENT_REFRESHES_PER_NAMESPACE",
                self.fairness.max_concurrent_refreshes_per_namespace,
            ),
        ] {
            if value == 0 {
                return Err(InvalidFlag::new(flag, env, "must be at least 1", value));
            }
        }
        for (flag, env, value) in [
            ("--publish-timeout", "PUBLISH_TIMEOUT", self.publish_timeout),
            (
                "--shutdown-timeout",
                "SHUTDOWN_TIMEOUT",
                self.shutdown_timeout,
            ),
            (
                "--metrics-header-timeout",
                "METRICS_HEADER_TIMEOUT",
                self.metrics_header_timeout,
            ),
            (
                "--metrics-request-timeout",
                "METRICS_REQUEST_TIMEOUT",
                self.metrics_request_timeout,
            ),
            (
                "--metrics-idle-timeout",
                "METRICS_IDLE_TIMEOUT",
                self.metrics_idle_timeout,
            ),
        ] {
            if value.is_zero() {
                return Err(InvalidFlag::new(flag, env, "must be more than 0s", "0s"));
            }
        }
        self.fairness.check()
    }
}

impl FairnessConfig {
    fn check(&self) -> Result<(), InvalidFlag> {
        if self.refresh_timeout < Duration::from_secs(1) {
            return Err(InvalidFlag::new(
                "--refresh-timeout",
                "REFRESH_TIMEOUT",
                "must be at least 1s",
                shown(self.refresh_timeout),
            ));
        }
        if !(self.namespace_vault_rate >= 0.0 && self.namespace_vault_rate.is_finite()) {
            return Err(InvalidFlag::new(
                "--namespace-vault-rate",
                "NAMESPACE_VAULT_RATE",
                "must be a number of requests a second, 0 (no budget) or more",
                self.namespace_vault_rate,
            ));
        }
        if !(self.namespace_memory_share > 0.0 && self.namespace_memory_share <= 1.0) {
            return Err(InvalidFlag::new(
                "--namespace-memory-share",
                "NAMESPACE_MEMORY_SHARE",
                "must be more than 0 and at most 1",
                self.namespace_memory_share,
            ));
        }
        if self.namespace_vault_burst == 0 && self.namespace_vault_rate > 0.0 {
            return Err(InvalidFlag::new(
                "--namespace-vault-burst",
                "NAMESPACE_VAULT_BURST",
                "must be at least 1 while --namespace-vault-rate is more than 0",
                0,
            ));
        }
        Ok(())
    }
}

impl Default for FairnessConfig {
    /// The flags' defaults.
    fn default() -> Self {
        Self {
            refresh_timeout: Duration::from_secs(60),
            max_concurrent_refreshes_per_namespace: 8,
            min_refresh_interval: Duration::from_secs(30),
            namespace_vault_rate: 10.0,
            namespace_vault_burst: 50,
            namespace_memory_share: 0.5,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `FairnessConfig::default()` (used where a `Config` is built in code)
    /// matches the flags' defaults, and the new flags parse.
    #[test]
    fn fairness_defaults_match_the_flags() {
        let parsed = Config::try_parse_from(["vault-csi-driver", "--node-id=n"]).unwrap();
        assert_eq!(parsed.fairness, FairnessConfig::default());
        let parsed = Config::try_parse_from([
            "vault-csi-driver",
            "--node-id=n",
            "--refresh-timeout=15s",
            "--max-concurrent-refreshes-per-namespace=2",
            "--min-refresh-interval=1m",
            "--namespace-vault-rate=2.5",
            "--namespace-vault-burst=5",
            "--namespace-memory-share=0.25",
        ])
        .unwrap();
        assert_eq!(
            parsed.fairness,
            FairnessConfig {
                refresh_timeout: Duration::from_secs(15),
                max_concurrent_refreshes_per_namespace: 2,
                min_refresh_interval: Duration::from_secs(60),
                namespace_vault_rate: 2.5,
                namespace_vault_burst: 5,
                namespace_memory_share: 0.25,
            }
        );
    }

    fn parsed(args: &[&str]) -> Config {
        let mut all = vec!["vault-csi-driver", "--node-id=n"];
        all.extend_from_slice(args);
        Config::try_parse_from(all).unwrap()
    }

    /// The defaults start.
    #[test]
    fn the_defaults_pass_the_check() {
        assert_eq!(parsed(&[]).check(), Ok(()));
        assert_eq!(
            parsed(&["--namespace-vault-rate=0", "--namespace-vault-burst=0"]).check(),
            Ok(()),
            "a burst of 0 is meaningless but harmless with the budget off"
        );
    }

    /// Values the driver used to raise quietly (a refresh timeout under a
    /// second, no refresh slots) are refused at start-up, naming the flag,
    /// its variable, the rule and the value given.
    #[test]
    fn values_the_driver_would_change_are_refused_with_the_flag_named() {
        let cases: [(&[&str], &str); 7] = [
            (
                &["--refresh-timeout=500ms"],
                "--refresh-timeout (REFRESH_TIMEOUT) must be at least 1s; it is 500ms",
            ),
            (
                &["--max-concurrent-refreshes=0"],
                "--max-concurrent-refreshes (MAX_CONCURRENT_REFRESHES) must be at least 1; it is 0",
            ),
            (
                &["--max-concurrent-refreshes-per-namespace=0"],
                "--max-concurrent-refreshes-per-namespace (MAX_CONCURRENT_REFRESHES_PER_NAMESPACE) must be at least 1; it is 0",
            ),
            (
                &["--namespace-vault-rate=-1"],
                "--namespace-vault-rate (NAMESPACE_VAULT_RATE) must be a number of requests a second, 0 (no budget) or more; it is -1",
            ),
            (
                &["--namespace-vault-burst=0"],
                "--namespace-vault-burst (NAMESPACE_VAULT_BURST) must be at least 1 while --namespace-vault-rate is more than 0; it is 0",
            ),
            (
                &["--static-secret-refresh-interval=900ms"],
                "--static-secret-refresh-interval (STATIC_SECRET_REFRESH_INTERVAL) must be at least 1s, as the staticSecretRefreshInterval attribute must; it is 900ms",
            ),
            (
                &["--publish-timeout=0s"],
                "--publish-timeout (PUBLISH_TIMEOUT) must be more than 0s; it is 0s",
            ),
        ];
        for (args, message) in cases {
            let refused = parsed(args).check().expect_err(message);
            assert_eq!(refused.to_string(), message);
        }
        let empty = Config::try_parse_from(["vault-csi-driver", "--node-id="]).unwrap();
        assert_eq!(empty.check().unwrap_err().flag, "--node-id");
    }
}
