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
/// leaving the cgroup: its settings (freed pages back at once, no
/// per-thread caches) are compiled in (`.cargo/config.toml`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    let filter =
        telemetry::filter(&config.log_level).context("--log-level is not a valid filter")?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
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

#[cfg(test)]
mod tests {
    use tikv_jemalloc_ctl::{epoch, opt, stats};

    fn resident() -> usize {
        epoch::advance().unwrap();
        stats::resident::read().unwrap()
    }

    /// The settings `.cargo/config.toml` compiles into jemalloc are the
    /// ones it runs with: no thread caches, and pages freed go back to the
    /// kernel at once (64 MiB freed leave the allocator's resident pages;
    /// with jemalloc's default decay they would stay for about 10 s).
    #[test]
    fn the_allocator_gives_freed_memory_back_at_once() {
        if std::env::var_os("_RJEM_MALLOC_CONF").is_some() {
            return; // an operator's own settings win, by design
        }
        assert!(!opt::tcache::read().unwrap());
        let before = resident();
        let blocks: Vec<Vec<u8>> = (0..64).map(|i| vec![i; 1 << 20]).collect();
        let held = resident();
        assert!(held >= before + (60 << 20), "{before} then {held}");
        drop(blocks);
        let after = resident();
        assert!(
            after < before + (8 << 20),
            "64 MiB freed, yet {} MiB more stay resident",
            (after.saturating_sub(before)) >> 20
        );
    }
}
