//! The `vault-csi-driver` binary: parse flags, set up logging, run until
//! SIGTERM or Ctrl-C.

use anyhow::Context as _;
use clap::Parser as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use vault_csi_driver::config::{Config, LogFormat};
use vault_csi_driver::{app, telemetry};

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let filter =
        telemetry::filter(&config.log_level).context("--log-level is not a valid filter")?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let mut term = signal(SignalKind::terminate()).context("could not watch SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("could not watch SIGINT")?;
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received; draining"),
                _ = int.recv() => tracing::info!("SIGINT received; draining"),
            }
            trigger.cancel();
        });
        app::run(config, shutdown)
            .await
            .context("vault-csi-driver failed")
    })
}
