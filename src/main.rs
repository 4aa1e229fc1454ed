//! The `vault-csi-driver` binary: parse flags, set up logging, run until
//! SIGTERM or Ctrl-C. `vault-csi-driver convert …` runs the manifest
//! converter instead (the `vault-csi-convert` crate, checked with the driver's
//! own rules through `vault_csi_driver::convert::DriverChecks`).

use anyhow::Context as _;
use clap::Parser as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use vault_csi_driver::config::{Config, LogFormat};
use vault_csi_driver::{app, telemetry};

/// The allocator: jemalloc, which keeps small allocations of one size
/// together and can give back any page no allocation uses, wherever it
/// lies. glibc's malloc gives back only the top of each heap: one block
/// still in use above the freed ones keeps them all, and a driver that
/// compiled and rendered large volumes held tens of MiB after they were
/// all unpublished, memory the budget had given back and would admit
/// again. The memory model (`volume::memory`) counts on freed memory
/// leaving the cgroup.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, unless the environment already sets them: pages
/// nothing uses any more go back to the kernel at once (by default
/// jemalloc keeps them for about 10 s, for reuse), and no thread keeps a
/// cache of freed blocks (each would keep up to a few MiB, for as long as
/// the thread idles), so what the driver holds follows what its volumes
/// are charged. The driver waits on Vault and the disk, not on malloc.
const ALLOCATOR_CONF: &str = "dirty_decay_ms:0,muzzy_decay_ms:0,tcache:false";

/// The variable jemalloc reads its settings from (prefixed, as the
/// `tikv-jemallocator` build names its symbols).
const ALLOCATOR_CONF_VAR: &str = "_RJEM_MALLOC_CONF";

/// Runs the driver again, as the same process (`exec`), with
/// [`ALLOCATOR_CONF`] in its environment: jemalloc reads it only at start,
/// and its settings cannot be changed afterwards without `unsafe` code.
/// Returns only when that is not needed (the variable is set: an
/// operator's own settings, or this is the run started with it), or when
/// it failed.
fn exec_with_allocator_conf() -> Option<std::io::Error> {
    use std::os::unix::process::CommandExt as _;
    if std::env::var_os(ALLOCATOR_CONF_VAR).is_some() {
        return None;
    }
    let binary = match std::env::current_exe() {
        Ok(binary) => binary,
        Err(error) => return Some(error),
    };
    let mut argv = std::env::args_os();
    let name = argv.next().unwrap_or_default();
    Some(
        std::process::Command::new(binary)
            .arg0(name)
            .args(argv)
            .env(ALLOCATOR_CONF_VAR, ALLOCATOR_CONF)
            .exec(),
    )
}

fn main() -> anyhow::Result<()> {
    // `convert` as the first argument selects the converter; the driver's
    // own flags all start with `--`, so no driver invocation is taken for it.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("convert") {
        std::process::exit(vault_csi_driver::convert::main(
            &args[2..],
            &vault_csi_driver::convert::DriverChecks,
        ));
    }
    let config = Config::parse();
    let not_tuned = exec_with_allocator_conf();
    let filter =
        telemetry::filter(&config.log_level).context("--log-level is not a valid filter")?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    if let Some(error) = not_tuned {
        tracing::warn!(%error, "Could not restart with the allocator told to give freed memory back at once; memory freed after large volumes stays with the driver for a while. Set {ALLOCATOR_CONF_VAR}={ALLOCATOR_CONF} in its environment");
    }
    raise_fd_limit();
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

/// Raises the soft limit on open files to the hard limit. Container
/// runtimes start processes with a soft limit of 1024, and this one process
/// holds the sockets of every pod's Vault calls, the CSI socket and the
/// metrics listener for the whole node; the hard limit is what the node
/// allows it. Failing to raise it is logged, not fatal.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(from = soft, to = hard, "Raised the open-file limit"),
            Err(error) => {
                tracing::warn!(%error, soft, hard, "Could not raise the open-file limit");
            }
        },
        Ok((soft, _)) => tracing::info!(
            limit = soft,
            "The open-file limit is already the hard limit"
        ),
        Err(error) => tracing::warn!(%error, "Could not read the open-file limit"),
    }
}
