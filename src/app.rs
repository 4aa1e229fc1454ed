//! Wiring: builds every component from the [`Config`], restores published
//! volumes, serves until the shutdown token fires, then drains.
//!
//! Shutdown (SIGTERM from a DaemonSet rolling update) stops accepting CSI
//! calls, lets calls and refreshes in flight finish and exits, all within
//! `--shutdown-timeout`: at half of it, publishes still waiting for Vault
//! are stopped and rolled back (kubelet retries against the next driver);
//! at the end, whatever is left is abandoned (a publish cut there has its
//! token on record, and the next driver revokes it at start-up). Mounts stay where they are: pods keep
//! their files while the driver is away, and the next driver re-adopts the
//! volumes from the state directory.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::metrics::{self, Metrics};
use crate::refresh::{RefreshScheduler, Slots};
use crate::storage::{PlainDirectories, TmpfsRoots, VolumeRoots, selinux};
use crate::vault::{BudgetSettings, GovernedSettings, GovernedVault, HttpSettings, build_http};
use crate::volume::memory::pressure::MemoryPressure;
use crate::volume::record::FileStore;
use crate::volume::{ManagerConfig, Ports, SpecDefaults, VolumeManager};
use crate::{csi, volume};

/// Why the driver could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag value is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A flag value is refused at start-up (`Config::check`).
    #[error("invalid configuration: {0}")]
    Flag(#[from] crate::config::InvalidFlag),
    /// The Vault HTTP client could not be built (bad CA bundle).
    #[error(transparent)]
    Vault(#[from] crate::vault::Error),
    /// The state directory is unusable.
    #[error(transparent)]
    Volume(#[from] volume::Error),
    /// The CSI socket could not be served.
    #[error(transparent)]
    Csi(#[from] csi::Error),
    /// The metrics listener could not be bound.
    #[error("could not listen on --metrics-addr {addr}: {source}")]
    Metrics {
        /// The address.
        addr: std::net::SocketAddr,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
}

/// How long an unpublish waits for its Vault clean-up once the target is
/// gone (the revocation has [`REVOKE_TIMEOUT`]; a refresh in flight may
/// hold the volume longer, and the clean-up then finishes in the
/// background).
const UNPUBLISH_WAIT: Duration = Duration::from_secs(10);

/// Longest a revocation of a volume's token or lease may take; what is not
/// revoked in time ends with its TTL.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Attempts per Vault request while a pod waits for its publish (failures
/// that may pass on their own only).
const PUBLISH_ATTEMPTS: u32 = 3;

/// Inodes of one volume's tmpfs: files, their directories and the atomic
/// writer's links.
const VOLUME_INODES: u64 = 1024;

/// The directory below the state directory that holds the driver's private
/// mounts (staged volumes, writable views).
const PRIVATE_MOUNTS: &str = "mounts";

/// The memory budget for volumes: the flag, else what the cgroup's memory
/// limit leaves after the driver's reserve. Logged once, as it decides how
/// many volumes the node can hold.
fn memory_budget(flag: Option<u64>, limit: Option<u64>) -> Option<u64> {
    let budget = flag.or_else(|| limit.map(volume::memory::budget_from_limit));
    match (flag, limit, budget) {
        (Some(_), _, Some(budget)) => {
            tracing::info!(
                budget,
                "Memory budget for volumes set by --memory-budget-bytes"
            );
        }
        (None, Some(limit), Some(budget)) => {
            tracing::info!(
                limit,
                budget,
                "Memory budget for volumes: the cgroup memory limit less the driver's reserve"
            );
        }
        _ => tracing::warn!(
            "No cgroup memory limit found and --memory-budget-bytes unset: volumes are not limited by memory"
        ),
    }
    budget
}

/// Serves CSI until `shutdown` fires, then drains within `timeout`:
/// publishes still waiting for Vault get half of it, then roll back and
/// their handlers answer; calls still open at the end are cut. Returns the
/// server's result and when the whole shutdown must be over.
async fn serve_bounded(
    serve: impl std::future::Future<Output = Result<(), csi::Error>>,
    shutdown: &CancellationToken,
    manager: &Arc<VolumeManager>,
    timeout: Duration,
) -> (Result<(), csi::Error>, Instant) {
    tokio::pin!(serve);
    tokio::select! {
        served = &mut serve => (served, Instant::now() + timeout),
        () = shutdown.cancelled() => {
            let stop_by = Instant::now() + timeout;
            let stopper = {
                let manager = Arc::clone(manager);
                tokio::spawn(async move {
                    tokio::time::sleep_until(stop_by - timeout / 2).await;
                    manager.stop_publishes();
                })
            };
            let served = tokio::time::timeout_at(stop_by, &mut serve)
                .await
                .unwrap_or_else(|_| {
                    tracing::warn!("CSI calls in flight did not end within --shutdown-timeout; closing their connections");
                    Ok(())
                });
            stopper.abort();
            (served, stop_by)
        }
    }
}

/// The volume core's ports, chosen from the flags: Vault through the
/// node's request budget, records under `--state-dir`, and volumes as tmpfs
/// mounts (or plain directories with `--insecure-plain-directories`).
fn ports(
    config: &Config,
    http: reqwest::Client,
    allowed_redirects: Vec<url::Url>,
    metrics: &Arc<Metrics>,
) -> Result<Ports, Error> {
    let vault = GovernedVault::new(
        http,
        Arc::clone(metrics),
        GovernedSettings {
            allowed_redirects,
            budget: BudgetSettings {
                rate: config.fairness.namespace_vault_rate,
                burst: config.fairness.namespace_vault_burst,
                // Waiting longer for the budget than a request may take is
                // refused.
                max_wait: config.vault_request_timeout,
            },
            publish_attempts: PUBLISH_ATTEMPTS,
            revoke_timeout: REVOKE_TIMEOUT,
        },
    );
    let pods_dir = config.kubelet_dir.join("pods");
    let roots: Arc<dyn VolumeRoots> = if config.insecure_plain_directories {
        Arc::new(PlainDirectories::new(pods_dir))
    } else {
        Arc::new(TmpfsRoots::new(
            pods_dir,
            config.state_dir.join(PRIVATE_MOUNTS),
            config.volume_size_bytes,
            VOLUME_INODES,
        ))
    };
    Ok(Ports {
        vault: Arc::new(vault),
        store: Arc::new(FileStore::open(&config.state_dir)?),
        roots,
    })
}

/// Runs the driver until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    config.check()?;
    let metrics_limits = metrics::ListenerLimits {
        max_connections: config.metrics_max_connections,
        header_timeout: config.metrics_header_timeout,
        request_timeout: config.metrics_request_timeout,
        idle_timeout: config.metrics_idle_timeout,
    };
    let socket = csi::socket_path(&config.endpoint)?;
    let mut allowed = config.allowed_vault_addrs.clone();
    allowed.extend(config.vault_addr.iter().cloned());
    let metrics = Arc::new(Metrics::with_per_volume(config.metrics_per_volume));
    let tracker = TaskTracker::new();
    let (scheduler, scheduler_task) = RefreshScheduler::new(Slots {
        total: config.max_concurrent_refreshes,
        per_namespace: config.fairness.max_concurrent_refreshes_per_namespace,
    });
    let manager = Arc::new(VolumeManager::new(
        manager_config(&config, allowed.clone())?,
        ports(&config, vault_http(&config)?, allowed, &metrics)?,
        scheduler,
        Arc::clone(&metrics),
        tracker.clone(),
    ));

    let metrics_listener = match config.metrics_addr {
        Some(addr) => Some(
            metrics::bind(addr)
                .await
                .map_err(|source| Error::Metrics { addr, source })?,
        ),
        None => None,
    };
    let listener = csi::bind_socket(&socket)?;
    // Health first: restore may spend seconds per unfinished volume revoking
    // its token (bounded by the revoke timeout), and kubelet's probes must
    // see a live process meanwhile. `/readyz` says `starting` until the CSI
    // socket serves.
    if let Some(listener) = metrics_listener {
        let metrics = Arc::clone(&metrics);
        let stop = shutdown.clone();
        tracker.spawn(metrics::serve(listener, metrics, metrics_limits, stop));
    }

    if config.insecure_plain_directories {
        tracing::warn!(
            "--insecure-plain-directories: volumes are plain directories on disk, not tmpfs; for demos only"
        );
    }
    let restored = manager.restore().await?;
    tracing::info!(
        endpoint = %config.endpoint,
        driver = %config.driver_name,
        node = %config.node_id,
        volumes = restored,
        "vault-csi-driver started"
    );

    tracker.spawn(scheduler_task.run(Arc::clone(&manager), shutdown.clone(), tracker.clone()));
    let (identity, node) = csi::services(
        config.driver_name.clone(),
        config.node_id.clone(),
        Arc::clone(&manager),
        Arc::clone(&metrics),
    );
    metrics.set_ready(true);
    let (served, stop_by) = serve_bounded(
        csi::serve(listener, identity, node, shutdown.clone()),
        &shutdown,
        &manager,
        config.shutdown_timeout,
    )
    .await;
    metrics.set_ready(false);
    drain(&manager, &tracker, stop_by).await;
    let _ = std::fs::remove_file(&socket);
    served.map_err(Error::from)
}

/// Lets the work in flight finish until `stop_by`, then releases the
/// driver's private mounts; volumes stay for their pods.
async fn drain(manager: &VolumeManager, tracker: &TaskTracker, stop_by: Instant) {
    manager.stop_publishes();
    tracker.close();
    if tokio::time::timeout_at(stop_by, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("Work in flight did not finish within --shutdown-timeout; exiting anyway");
    }
    manager.release_private_mounts();
    tracing::info!(
        volumes = manager.volume_count(),
        "vault-csi-driver stopped; mounted volumes stay in place"
    );
}

/// The process-wide HTTP client for Vault: `--vault-ca-cert` trusted,
/// `--vault-request-timeout` bounding every request.
fn vault_http(config: &Config) -> Result<reqwest::Client, Error> {
    let ca_bundle_pem = match &config.vault_ca_cert {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            Error::Config(format!(
                "cannot read --vault-ca-cert {}: {e}",
                path.display()
            ))
        })?),
        None => None,
    };
    Ok(build_http(&HttpSettings {
        ca_bundle_pem,
        connect_timeout: config.vault_request_timeout.min(Duration::from_secs(5)),
        request_timeout: config.vault_request_timeout,
    })?)
}

/// The volume manager's settings from the flags.
fn manager_config(config: &Config, allowed: Vec<url::Url>) -> Result<ManagerConfig, Error> {
    let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let cgroup_root = std::path::Path::new("/sys/fs/cgroup");
    let limit = volume::memory::cgroup_memory_limit(&proc_cgroup, cgroup_root);
    Ok(ManagerConfig {
        kubelet_dir: config.kubelet_dir.clone(),
        spec_defaults: SpecDefaults {
            vault_addr: config.vault_addr.clone(),
            allowed_vault_addrs: allowed,
            static_refresh_interval: config.static_secret_refresh_interval,
        },
        max_payload_bytes: ManagerConfig::payload_limit(config.volume_size_bytes),
        memory_budget_bytes: memory_budget(config.memory_budget_bytes, limit),
        namespace_memory_share: config.fairness.namespace_memory_share,
        memory_pressure: MemoryPressure::of_process(&proc_cgroup, cgroup_root, limit),
        selinux_context: selinux::Setting::parse(&config.selinux_context)
            .map_err(Error::Config)?
            .resolve(),
        publish_timeout: config.publish_timeout,
        unpublish_wait: UNPUBLISH_WAIT,
        // A refresh is allowed at least a second.
        refresh_timeout: config.fairness.refresh_timeout.max(Duration::from_secs(1)),
        min_refresh_interval: config.fairness.min_refresh_interval,
    })
}
