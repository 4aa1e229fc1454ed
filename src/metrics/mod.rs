//! Prometheus metrics and the HTTP listener that serves them with the
//! health endpoints.
//!
//! Labels carry only operational names: results, kinds, Vault operations,
//! and for per-volume gauges the pod namespace, pod name and volume id.
//! Never a secret path's value, a token or secret data.
//!
//! The per-volume gauges are off unless `--metrics-per-volume` is set:
//! they tell whoever can reach the listener which pods on the node use
//! Vault and when their credentials expire.

mod server;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use server::{ListenerLimits, bind, serve};

/// Declares [`VaultOperation`] from one list, so its variants, its label
/// values and the metric's help text cannot drift apart.
macro_rules! vault_operations {
    ($($(#[$doc:meta])* $variant:ident => $label:literal,)*) => {
        /// A Vault API call the driver makes: the `operation` label of
        /// `vault_csi_vault_request_duration_seconds`, and the name its
        /// error messages give the call.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum VaultOperation {
            $($(#[$doc])* $variant,)*
        }

        impl VaultOperation {
            /// Every operation, in the order the help text lists them.
            pub const ALL: &[Self] = &[$(Self::$variant,)*];

            /// The label value.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $label,)*
                }
            }
        }
    };
}

vault_operations! {
    /// `POST auth/<mount>/login`.
    Login => "login",
    /// A `secret` read.
    Read => "read",
    /// A `secrets` list.
    List => "list",
    /// A `secret` write (with arguments).
    Write => "write",
    /// `GET sys/internal/ui/mounts/<path>`: which mount a path is on.
    Mount => "mount",
    /// `GET auth/token/lookup-self`.
    LookupSelf => "lookup_self",
    /// `POST sys/capabilities-self`.
    CapabilitiesSelf => "capabilities_self",
    /// `PUT sys/leases/renew`.
    RenewLease => "renew_lease",
    /// `POST auth/token/renew-self`.
    RenewSelf => "renew_self",
    /// `POST auth/token/revoke-self`.
    RevokeSelf => "revoke_self",
    /// `PUT sys/leases/revoke`.
    RevokeLease => "revoke_lease",
    /// `GET sys/health`.
    Health => "health",
}

impl VaultOperation {
    /// The help text of `vault_request_duration_seconds`: every label.
    fn help() -> String {
        let operations: Vec<&str> = Self::ALL.iter().map(|o| o.as_str()).collect();
        format!(
            "Vault API request latency, by operation ({}) and status_class (2xx, 3xx, 4xx, 5xx; error: no usable HTTP answer, i.e. unreachable, timed out, or an oversized or unreadable body)",
            operations.join(", ")
        )
    }
}

impl std::fmt::Display for VaultOperation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshLabels {
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VaultLabels {
    operation: &'static str,
    status_class: &'static str,
}

/// Labels of the per-volume gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VolumeLabels {
    /// The pod's namespace.
    pub pod_namespace: String,
    /// The pod's name.
    pub pod_name: String,
    /// The CSI volume id.
    pub volume_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceLabels {
    pod_namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabels {
    pod_namespace: String,
    outcome: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs .. ~93 s: kubelet allows a publish two minutes.
    Histogram::new(exponential_buckets(0.000_1, 2.5, 16))
}

fn step_histogram() -> Histogram {
    // 10 µs .. ~90 s: the steps of a publish range from microseconds (a
    // state record on tmpfs) to a slow Vault's seconds.
    Histogram::new(exponential_buckets(0.000_01, 2.5, 18))
}

/// The steps of a new volume's NodePublishVolume, in order, for
/// `vault_csi_node_publish_step_duration_seconds`: where a slow publish
/// spends its time (the node, Vault, or the volume's files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishStep {
    /// From the call's start until the login is sent: request, target and
    /// token checks, template compile (or cache lookup).
    Checks,
    /// The login, every read and the render.
    Vault,
    /// Waiting, after Vault answered, for the tmpfs and the first state
    /// record, which are made while Vault answers (usually zero).
    Mount,
    /// Writing the files (and sealing a read-only volume).
    Write,
    /// Writing the volume's `published` state record.
    Record,
}

impl PublishStep {
    /// The `step` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Checks => "checks",
            Self::Vault => "vault",
            Self::Mount => "mount",
            Self::Write => "write",
            Self::Record => "record",
        }
    }
}

/// Every metric the driver exports, plus the readiness flag.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    publishes: Family<ResultLabels, Counter>,
    unpublishes: Family<ResultLabels, Counter>,
    publish_latency: Histogram,
    publish_steps: HistogramFamily<StepLabels>,
    refreshes: Family<RefreshLabels, Counter>,
    vault_latency: HistogramFamily<VaultLabels>,
    volumes: Gauge,
    unadopted: Gauge,
    memory_budget: Gauge,
    memory_used: Gauge,
    listener_drops: Family<ReasonLabels, Counter>,
    /// The per-volume gauges, when `--metrics-per-volume` is on.
    per_volume: Option<PerVolume>,
    ready: AtomicBool,
    /// What keeps tenants from starving each other.
    fairness: Fairness,
    app_signals: Family<ResultLabels, Counter>,
    unrevoked_leases: Family<NamespaceLabels, Counter>,
    degraded: Gauge,
}

/// The families that count what the node's fairness rules did.
#[derive(Debug)]
struct Fairness {
    namespace_budget: Family<BudgetLabels, Counter>,
    cosmetic_deferred: Counter,
    vault_pushbacks: Counter,
    interval_clamped: Family<NamespaceLabels, Counter>,
    refresh_timeouts: Family<NamespaceLabels, Counter>,
}

/// The gauges labelled with a pod's namespace, name and volume id.
#[derive(Debug)]
struct PerVolume {
    lease_expiry: Family<VolumeLabels, Gauge<f64, AtomicU64>>,
    next_refresh: Family<VolumeLabels, Gauge<f64, AtomicU64>>,
}

impl Fairness {
    fn register(registry: &mut Registry) -> Self {
        let namespace_budget = registered(
            registry,
            "namespace_budget_held",
            "Vault requests a pod namespace's request budget held back, by pod_namespace and outcome: delayed (sent after a wait), refused (put off: the wait would have been longer than --vault-request-timeout)",
            Family::<BudgetLabels, Counter>::default(),
        );
        let cosmetic_deferred = registered(
            registry,
            "cosmetic_deferred",
            "Re-reads of static secrets put off node-wide because Vault answered 429 or 503",
            Counter::default(),
        );
        let vault_pushbacks = registered(
            registry,
            "vault_pushback",
            "Times a 429 or 503 from Vault started or extended the node-wide pause of cosmetic work",
            Counter::default(),
        );
        let interval_clamped = registered(
            registry,
            "refresh_interval_clamped",
            "Volumes published with a staticSecretRefreshInterval below --min-refresh-interval (raised to it), by pod_namespace",
            Family::<NamespaceLabels, Counter>::default(),
        );
        let refresh_timeouts = registered(
            registry,
            "refresh_timeout",
            "Volume refreshes that ran out of --refresh-timeout and were retried with backoff, by pod_namespace",
            Family::<NamespaceLabels, Counter>::default(),
        );
        Self {
            namespace_budget,
            cosmetic_deferred,
            vault_pushbacks,
            interval_clamped,
            refresh_timeouts,
        }
    }
}

impl PerVolume {
    fn register(registry: &mut Registry) -> Self {
        let lease_expiry = Family::<VolumeLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "volume_lease_expiry_timestamp_seconds",
            "Unix time at which the volume's soonest lease, certificate or Vault token expires, by pod_namespace, pod_name and volume_id; absent for refresh: \"false\" volumes",
            lease_expiry.clone(),
        );
        let next_refresh = Family::<VolumeLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "volume_next_refresh_timestamp_seconds",
            "Unix time of the volume's next scheduled refresh, by pod_namespace, pod_name and volume_id; absent for refresh: \"false\" volumes",
            next_refresh.clone(),
        );
        PerVolume {
            lease_expiry,
            next_refresh,
        }
    }
}

/// Registers `metric` and returns it.
fn registered<M: prometheus_client::registry::Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// Registers a plain gauge and returns it.
fn gauge(registry: &mut Registry, name: &str, help: &str) -> Gauge {
    let gauge = Gauge::default();
    registry.register(name, help, gauge.clone());
    gauge
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family under the `vault_csi_` prefix, without the
    /// per-volume gauges (the `--metrics-per-volume` default).
    pub fn new() -> Self {
        Self::with_per_volume(false)
    }

    /// Registers every family under the `vault_csi_` prefix; with
    /// `per_volume`, also the gauges that name each volume's pod.
    pub fn with_per_volume(per_volume: bool) -> Self {
        let mut registry = Registry::with_prefix("vault_csi");
        let publishes = registered(
            &mut registry,
            "node_publish",
            "NodePublishVolume calls, by result: published (a new volume), republished (kubelet's periodic republish of a volume already served), error",
            Family::<ResultLabels, Counter>::default(),
        );
        let unpublishes = registered(
            &mut registry,
            "node_unpublish",
            "NodeUnpublishVolume calls, by result: ok, error",
            Family::<ResultLabels, Counter>::default(),
        );
        let publish_latency = registered(
            &mut registry,
            "node_publish_duration_seconds",
            "Time to serve NodePublishVolume, for every result, Vault round trips included",
            latency_histogram(),
        );
        let publish_steps: HistogramFamily<StepLabels> =
            Family::new_with_constructor(step_histogram);
        registry.register(
            "node_publish_step_duration_seconds",
            "Time each step of a successful new NodePublishVolume took, by step: checks (request, target, token, templates), vault (login, reads, render), mount (waiting for the tmpfs made meanwhile), write (files), record (state record)",
            publish_steps.clone(),
        );
        let refreshes = registered(
            &mut registry,
            "refresh",
            "Background refresh steps, by kind (renew_lease; refetch: a leased secret or certificate fetched again; static: a re-read of lease-less secrets only; renew_token; login; timeout: a refresh that ran out of --refresh-timeout) and result (ok, error)",
            Family::<RefreshLabels, Counter>::default(),
        );
        let vault_latency: HistogramFamily<VaultLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "vault_request_duration_seconds",
            VaultOperation::help(),
            vault_latency.clone(),
        );
        let volumes = gauge(&mut registry, "volumes", "Volumes currently managed");
        let unadopted = gauge(
            &mut registry,
            "unadopted_volumes",
            "Volumes whose records could not be read or resumed at start-up: still mounted for their pods, not refreshed until kubelet's next publish adopts them",
        );
        let memory_budget = gauge(
            &mut registry,
            "memory_budget_bytes",
            "The node's memory budget for everything volumes make the driver hold (files twice, inodes, kept answers, records, compiled templates, attributes, bookkeeping); 0 when unlimited",
        );
        let memory_used = gauge(
            &mut registry,
            "memory_budget_used_bytes",
            "Memory budget held by all volumes and by publishes and refreshes in flight (files twice, inodes, kept answers, records, compiled templates, attributes, bookkeeping); new publishes are refused when it reaches the budget",
        );
        let listener_drops = registered(
            &mut registry,
            "metrics_listener_dropped_connections",
            "Connections the metrics listener closed to stay within its limits, by reason: evicted (to make room at --metrics-max-connections), refused (a new connection while every one was answering), timeout (past a header, request or idle deadline)",
            Family::<ReasonLabels, Counter>::default(),
        );
        let per_volume = per_volume.then(|| PerVolume::register(&mut registry));
        let app_signals = registered(
            &mut registry,
            "app_signals",
            "Signals to apps after their volume's files changed, by result: sent (per process), no_process (no process of the pod had the name, or the driver cannot see the pod's processes), failed",
            Family::<ResultLabels, Counter>::default(),
        );
        let unrevoked_leases = registered(
            &mut registry,
            "unrevoked_leases",
            "Leases left to expire at unpublish because they could not be revoked (batch tokens whose policy does not allow sys/leases/revoke, or Vault unreachable)",
            Family::<NamespaceLabels, Counter>::default(),
        );
        let degraded = gauge(
            &mut registry,
            "degraded_volumes",
            "Volumes whose last refresh left something failed, or whose files hold a credential or certificate past its end",
        );
        let fairness = Fairness::register(&mut registry);
        Self {
            registry,
            publishes,
            unpublishes,
            publish_latency,
            publish_steps,
            refreshes,
            vault_latency,
            volumes,
            unadopted,
            memory_budget,
            memory_used,
            listener_drops,
            per_volume,
            ready: AtomicBool::new(false),
            fairness,
            app_signals,
            unrevoked_leases,
            degraded,
        }
    }

    /// Counts one NodePublishVolume and its latency.
    pub fn observe_publish(&self, result: &'static str, elapsed: Duration) {
        self.publishes.get_or_create(&ResultLabels { result }).inc();
        self.publish_latency.observe(elapsed.as_secs_f64());
    }

    /// Records the steps of one successful new publish.
    pub fn observe_publish_steps(&self, steps: &[(PublishStep, Duration)]) {
        for (step, elapsed) in steps {
            self.publish_steps
                .get_or_create(&StepLabels { step: step.label() })
                .observe(elapsed.as_secs_f64());
        }
    }

    /// Counts one NodeUnpublishVolume.
    pub fn observe_unpublish(&self, result: &'static str) {
        self.unpublishes
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts one refresh step.
    pub fn observe_refresh(&self, kind: &'static str, result: &'static str) {
        self.refreshes
            .get_or_create(&RefreshLabels { kind, result })
            .inc();
    }

    /// Records one Vault API call.
    pub fn observe_vault_request(
        &self,
        operation: VaultOperation,
        status_class: &'static str,
        elapsed: Duration,
    ) {
        self.vault_latency
            .get_or_create(&VaultLabels {
                operation: operation.as_str(),
                status_class,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Sets the number of managed volumes.
    /// Sets the memory budget (`None`: unlimited, exported as 0) and gives
    /// the gauge the budget keeps current with its use.
    pub fn memory_budget(&self, budget: Option<u64>) -> Gauge {
        self.memory_budget
            .set(budget.map_or(0, |b| i64::try_from(b).unwrap_or(i64::MAX)));
        self.memory_used.clone()
    }

    /// Sets the number of managed volumes.
    pub fn set_volumes(&self, count: usize) {
        self.volumes.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Sets the number of volumes known from unreadable records and not
    /// yet adopted by a publish.
    pub fn set_unadopted(&self, count: usize) {
        self.unadopted.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Counts one connection the metrics listener closed to stay within
    /// its limits.
    pub fn observe_listener_drop(&self, reason: &'static str) {
        self.listener_drops
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Publishes a volume's soonest expiry and next refresh (when the
    /// per-volume gauges are on).
    pub fn set_volume_schedule(
        &self,
        labels: &VolumeLabels,
        expiry: Option<SystemTime>,
        next: Option<SystemTime>,
    ) {
        let Some(PerVolume {
            lease_expiry,
            next_refresh,
        }) = &self.per_volume
        else {
            return;
        };
        let secs = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        };
        match expiry {
            Some(t) => {
                lease_expiry.get_or_create(labels).set(secs(t));
            }
            None => {
                lease_expiry.remove(labels);
            }
        }
        match next {
            Some(t) => {
                next_refresh.get_or_create(labels).set(secs(t));
            }
            None => {
                next_refresh.remove(labels);
            }
        }
    }

    /// Drops a volume's gauges when it is unpublished.
    pub fn forget_volume(&self, labels: &VolumeLabels) {
        if let Some(per_volume) = &self.per_volume {
            per_volume.lease_expiry.remove(labels);
            per_volume.next_refresh.remove(labels);
        }
    }

    /// Marks the driver ready (state restored, socket serving) or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts one Vault request of `namespace` its budget held back
    /// (`outcome`: `delayed` or `refused`).
    pub fn observe_namespace_budget(&self, namespace: &str, outcome: &'static str) {
        self.fairness
            .namespace_budget
            .get_or_create(&BudgetLabels {
                pod_namespace: namespace.to_owned(),
                outcome,
            })
            .inc();
    }

    /// Counts `count` static re-reads put off while Vault pushes back.
    pub fn observe_cosmetic_deferred(&self, count: u64) {
        self.fairness.cosmetic_deferred.inc_by(count);
    }

    /// Counts one 429 or 503 that paused cosmetic work.
    pub fn observe_vault_pushback(&self) {
        self.fairness.vault_pushbacks.inc();
    }

    /// Counts one volume whose static interval was raised to the floor.
    pub fn observe_interval_clamped(&self, namespace: &str) {
        self.fairness
            .interval_clamped
            .get_or_create(&NamespaceLabels {
                pod_namespace: namespace.to_owned(),
            })
            .inc();
    }

    /// Counts one refresh that ran out of time.
    pub fn observe_refresh_timeout(&self, namespace: &str) {
        self.fairness
            .refresh_timeouts
            .get_or_create(&NamespaceLabels {
                pod_namespace: namespace.to_owned(),
            })
            .inc();
    }
}

impl Metrics {
    /// Counts leases left to expire at unpublish.
    pub fn observe_unrevoked_leases(&self, namespace: &str, count: usize) {
        self.unrevoked_leases
            .get_or_create(&NamespaceLabels {
                pod_namespace: namespace.to_owned(),
            })
            .inc_by(count as u64);
    }

    /// One volume became degraded (`true`) or recovered (`false`).
    pub fn observe_degraded(&self, degraded: bool) {
        if degraded {
            self.degraded.inc();
        } else {
            self.degraded.dec();
        }
    }

    /// Counts one app signal outcome: `sent`, `no_process` or `failed`.
    pub fn observe_app_signal(&self, result: &'static str) {
        self.app_signals
            .get_or_create(&ResultLabels { result })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::{Metrics, VaultOperation};

    /// The help text names every operation the label can hold, each once.
    #[test]
    fn the_vault_operations_are_listed_once_in_the_help() {
        let labels: Vec<&str> = VaultOperation::ALL.iter().map(|o| o.as_str()).collect();
        let mut unique = labels.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), labels.len(), "{labels:?}");
        let text = Metrics::new().encode();
        let help = text
            .lines()
            .find(|l| l.starts_with("# HELP vault_csi_vault_request_duration_seconds"))
            .expect("the histogram is registered");
        assert!(help.contains(&format!("({})", labels.join(", "))), "{help}");
    }
}
