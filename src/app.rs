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
use crate::refresh::{Fairness, RefreshScheduler};
use crate::storage::selinux;
use crate::vault::{HttpSettings, build_http};
use crate::volume::{ManagerConfig, SpecDefaults, VolumeManager, record::StateStore};
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
/// gone (the revocation has 5 s; a refresh in flight may hold the volume
/// longer, and the clean-up then finishes in the background).
const UNPUBLISH_WAIT: Duration = Duration::from_secs(10);

/// The memory budget for volumes: the flag, else what the cgroup's memory
/// limit leaves after the driver's reserve. Logged once, as it decides how
/// many volumes the node can hold.
fn memory_budget(flag: Option<u64>) -> Option<u64> {
    let limit = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|text| {
            volume::memory::cgroup_memory_limit(&text, std::path::Path::new("/sys/fs/cgroup"))
        });
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
    let ca_bundle_pem = match &config.vault_ca_cert {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            Error::Config(format!(
                "cannot read --vault-ca-cert {}: {e}",
                path.display()
            ))
        })?),
        None => None,
    };
    let http = build_http(&HttpSettings {
        ca_bundle_pem,
        connect_timeout: config
            .vault_request_timeout
            .min(std::time::Duration::from_secs(5)),
        request_timeout: config.vault_request_timeout,
    })?;
    let mut allowed = config.allowed_vault_addrs.clone();
    allowed.extend(config.vault_addr.iter().cloned());

    let memory_budget_bytes = memory_budget(config.memory_budget_bytes);
    let selinux_context = selinux::Setting::parse(&config.selinux_context)
        .map_err(Error::Config)?
        .resolve();
    let metrics = Arc::new(Metrics::with_per_volume(config.metrics_per_volume));
    let store = StateStore::open(&config.state_dir)?;
    let tracker = TaskTracker::new();
    let (scheduler, scheduler_task) = RefreshScheduler::with_fairness(Fairness::from_config(
        &config.fairness,
        config.vault_request_timeout,
    ));
    let manager = Arc::new(VolumeManager::new(
        ManagerConfig {
            kubelet_dir: config.kubelet_dir.clone(),
            spec_defaults: SpecDefaults {
                vault_addr: config.vault_addr.clone(),
                allowed_vault_addrs: allowed,
                static_refresh_interval: config.static_secret_refresh_interval,
            },
            tmpfs_size_bytes: config.volume_size_bytes,
            tmpfs_inodes: 1024,
            publish_attempts: 3,
            revoke_timeout: std::time::Duration::from_secs(5),
            plain_directories: config.insecure_plain_directories,
            memory_budget_bytes,
            selinux_context,
            publish_timeout: config.publish_timeout,
            unpublish_wait: UNPUBLISH_WAIT,
        },
        http,
        store,
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

    tracker.spawn(scheduler_task.run(
        Arc::clone(&manager),
        shutdown.clone(),
        tracker.clone(),
        config.max_concurrent_refreshes,
    ));
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
    manager.stop_publishes();

    tracker.close();
    if tokio::time::timeout_at(stop_by, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("Work in flight did not finish within --shutdown-timeout; exiting anyway");
    }
    let _ = std::fs::remove_file(&socket);
    manager.release_private_mounts();
    tracing::info!(
        volumes = manager.volume_count(),
        "vault-csi-driver stopped; mounted volumes stay in place"
    );
    served.map_err(Error::from)
}
