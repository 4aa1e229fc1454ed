//! The vault-csi-driver benchmark: the real driver binary on a unix socket
//! against the Vault double in its own process, measured the way a node
//! sees it. One run reports publish latency against the Vault floor,
//! publish/unpublish throughput, memory per volume, idle CPU, refresh
//! behaviour at scale, what a driver restart costs Vault, and how fast the
//! double itself answers; it prints a markdown report and writes it to
//! `BENCHMARKS.md`.
//!
//! ```text
//! cargo build --release --workspace --bins
//! sudo cargo bench --bench driver            # as root: every volume is a tmpfs mount
//! VCD_BENCH_QUICK=1 sudo cargo bench --bench driver   # small smoke run, no BENCHMARKS.md
//! VCD_BENCH_ONLY=latency,memory sudo cargo bench --bench driver   # some phases, no BENCHMARKS.md
//! VCD_BENCH_DRIVER=/path/to/vault-csi-driver …   # measure another driver build
//! ```

// Statistics turn counts and durations into floats and back; the values
// are far from the limits where these casts lose anything that matters.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

// One file per phase (capacity, latency, throughput, memory,
// refresh_at_scale, restart, openbao); the rest is shared: sizes and workload
// (what is published), floor (the Vault floor and the load generator), host
// and procs (the double's and the driver's processes), kubelet (its calls),
// refresh (reading the double's request log), bao_support (the tests'
// OpenBao fixtures), stats and report.
mod bao_support;
mod capacity;
mod floor;
mod host;
mod kubelet;
mod latency;
mod memory;
mod openbao;
mod procs;
mod refresh;
mod refresh_at_scale;
mod report;
mod restart;
mod sizes;
mod stats;
mod throughput;
mod workload;

use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use crate::capacity::Capacity;
use crate::latency::Latency;
use crate::memory::Memory;
use crate::procs::Scratch;
use crate::sizes::Sizes;
use crate::stats::Summary;
use crate::throughput::Throughput;

/// Everything a run measured.
#[derive(Debug, Clone, Default)]
pub struct Results {
    /// Sizes used.
    pub quick: bool,
    /// Double capacity.
    pub capacity: Vec<Capacity>,
    /// CPU the standalone double was pinned to.
    pub capacity_pinned: Option<usize>,
    /// gRPC round trip (NodeGetCapabilities), back to back.
    pub grpc_rtt: Summary,
    /// The same after the driver sat idle for [`latency::IDLE_GAP`] (as it does
    /// while a slow Vault answers).
    pub grpc_rtt_after_gap: Summary,
    /// Creating and mounting a tmpfs from the benchmark itself.
    pub mount_cost: Summary,
    /// Unmounting and removing it.
    pub umount_cost: Summary,
    /// Publish latency rows.
    pub latency: Vec<Latency>,
    /// Throughput and idle.
    pub throughput: Throughput,
    /// Memory.
    pub memory: Memory,
    /// Refresh at scale.
    pub refresh: refresh::RefreshResult,
    /// What restarting the driver cost Vault.
    pub restart: restart::RestartCost,
    /// The driver against a real OpenBao, and against `bao agent`.
    pub openbao: openbao::OpenBaoResults,
    /// The refresh phase's TTL.
    pub refresh_ttl: Duration,
    /// Driver warnings and errors per phase.
    pub driver_log: Vec<(String, Vec<String>)>,
    /// Mounts left under the scratch directory at the end.
    pub leftover_mounts: usize,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// The machine.
    pub machine: Vec<String>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--double-host") {
        host::run(&args[i + 1..]);
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("driver benchmark: skipped (run it with `cargo bench --bench driver`)");
        return;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "the benchmark mounts thousands of tmpfs volumes: run it as root"
    );
    let quick = std::env::var("VCD_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let only = std::env::var("VCD_BENCH_ONLY").unwrap_or_default();
    let sizes = if quick { Sizes::quick() } else { Sizes::full() };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("benchmark runtime");
    let results = runtime.block_on(run(sizes, quick, &only));
    let markdown = report::markdown(&results, &sizes);
    println!("\n{markdown}");
    if quick || !only.is_empty() {
        eprintln!("VCD_BENCH_QUICK or VCD_BENCH_ONLY: BENCHMARKS.md left unchanged");
    } else {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
        report::write(&path, &markdown);
        eprintln!("wrote {}", path.display());
    }
}

/// Prints a progress line for a phase or a step of one.
pub fn step(what: &str) {
    eprintln!("[bench] {what}");
}

/// Runs every phase, or only those named in `only` (comma-separated:
/// `capacity,latency,throughput,memory,refresh,restart,openbao`; for
/// development).
async fn run(sizes: Sizes, quick: bool, only: &str) -> Results {
    let wanted = |phase: &str| only.is_empty() || only.split(',').any(|p| p.trim() == phase);
    let started = Instant::now();
    let busy_before = procs::machine_busy_seconds();
    let own_before = procs::own_seconds();
    let scratch = Scratch::new();
    let mut results = Results {
        quick,
        refresh_ttl: sizes.refresh_ttl,
        machine: procs::machine(),
        ..Results::default()
    };

    if wanted("capacity") {
        step("the standalone vault-double on its own");
        capacity::capacity(&sizes, &mut results).await;
    }
    if wanted("latency") {
        step("publish latency against the Vault floor");
        latency::latency(&scratch, &sizes, &mut results).await;
    }
    if wanted("throughput") {
        step("throughput and idle cost");
        throughput::throughput(&scratch, &sizes, &mut results).await;
    }
    if wanted("memory") {
        step("memory per volume");
        memory::memory(&scratch, &sizes, &mut results).await;
    }
    if wanted("refresh") {
        step("refresh at scale");
        refresh_at_scale::refresh_at_scale(&scratch, &sizes, &mut results).await;
    }
    if wanted("restart") {
        step("what a driver restart costs Vault");
        restart::restart(&scratch, &sizes, &mut results).await;
    }
    if wanted("openbao") {
        step("against a real OpenBao, and against bao agent");
        openbao::openbao(&scratch, &sizes, &mut results).await;
    }

    let left = scratch.mounts().len();
    results.leftover_mounts = scratch.cleanup();
    assert!(
        mounts_gone(&scratch.root),
        "mounts remain under {}",
        scratch.root.display()
    );
    step(&format!(
        "cleaned up {left} mount(s) under {} ({} left by the phases)",
        scratch.root.display(),
        results.leftover_mounts
    ));
    results.elapsed = started.elapsed();
    let others =
        (procs::machine_busy_seconds() - busy_before) - (procs::own_seconds() - own_before);
    results.machine.insert(
        1,
        format!(
            "Other processes used {:.2} CPUs on average during the run (machine busy time minus \
this benchmark's own processes); the higher this is, the noisier the figures",
            (others / results.elapsed.as_secs_f64()).max(0.0)
        ),
    );
    results
}

fn mounts_gone(root: &Path) -> bool {
    procs::mounts_under(root).is_empty()
}
