//! Runs the Vault test double as a standalone process, so benchmarks can
//! keep it off the driver's runtime and the quickstart can point
//! `VAULT_ADDR` at it.

#![warn(clippy::pedantic)]
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use vault_double::{SaToken, VaultDouble, seed_walkthrough};

/// Standalone Vault HTTP API test double.
#[derive(Debug, Parser)]
#[command(name = "vault-double", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8200")]
    listen: SocketAddr,

    /// Data set to load at start.
    #[arg(long, value_enum, default_value_t = Seed::None)]
    seed: Seed,

    /// Tokio worker threads serving requests.
    #[arg(long, default_value_t = 1)]
    threads: usize,

    /// Also print a service-account JWT for the seeded role (walkthrough:
    /// `default/vault-auth`, audience `vault`) to use with `auth/kubernetes/login`,
    /// as `SA_JWT=<jwt>` after `VAULT_ADDR=<address>` on standard output.
    #[arg(long)]
    print_jwt: bool,
}

/// Built-in data sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Seed {
    /// Empty double.
    None,
    /// The "Vault Agent with Kubernetes auth" walkthrough (`seed_walkthrough`).
    Walkthrough,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vault-double: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(&args))
}

async fn run(args: &Args) -> ExitCode {
    let vault = match VaultDouble::start_on(args.listen).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("vault-double: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    if args.seed == Seed::Walkthrough {
        seed_walkthrough(&vault);
    }
    // Standard output holds only shell assignments, so that
    // `eval "$(head -n 2 file)"` (or a script reading `NAME=value` lines)
    // can take them; anything for people goes to standard error.
    eprintln!("vault-double listening on {}", vault.addr());
    println!("VAULT_ADDR={}", vault.addr());
    if args.print_jwt {
        println!(
            "SA_JWT={}",
            vault.sign_sa_token(&SaToken::new("default", "vault-auth", ["vault"]))
        );
    }
    wait_for_signal().await;
    vault.shutdown();
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vault-double: cannot watch SIGTERM ({e}); waiting for Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
