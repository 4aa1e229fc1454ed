//! Phase `throughput`: 1,000 volumes published and unpublished by
//! concurrent callers, and the idle cost (CPU, Vault requests) of holding
//! them in between.

use std::time::{Duration, SystemTime};

use crate::procs::{self, DoubleHost, Driver, Scratch};
use crate::sizes::Sizes;
use crate::stats::{self, Summary};
use crate::workload::{CREDS_TEMPLATE, DAY, HOUR, publishes, seed, unpublishes};
use crate::{Results, kubelet, refresh, step};

/// Throughput and idle results.
#[derive(Debug, Clone, Default)]
pub struct Throughput {
    /// Volumes.
    pub volumes: usize,
    /// Callers.
    pub callers: usize,
    /// Publishes per second.
    pub publish_rate: f64,
    /// Publish latency under that load.
    pub publish_latency: Summary,
    /// Unpublishes per second.
    pub unpublish_rate: f64,
    /// Unpublish latency under that load.
    pub unpublish_latency: Summary,
    /// Driver CPU per publish.
    pub driver_cpu_per_publish: Duration,
    /// Of which in the kernel (`stime`).
    pub driver_sys_per_publish: Duration,
    /// Driver CPU per unpublish.
    pub driver_cpu_per_unpublish: Duration,
    /// The double's CPU use during the publishes, in cores.
    pub double_cores: f64,
    /// Driver CPU during the idle window, `/proc/<pid>/stat` (10 ms ticks).
    pub idle_cpu_stat: f64,
    /// The same from `schedstat` (ns).
    pub idle_cpu_sched: f64,
    /// Idle window.
    pub idle: Duration,
    /// Vault requests the driver made during the idle window.
    pub idle_requests: usize,
    /// Driver RSS holding the volumes.
    pub rss: u64,
}

/// 1,000 volumes with one-hour leases: publish rate with 16 callers, the
/// idle cost of holding them, then the unpublish rate.
pub async fn throughput(scratch: &Scratch, sizes: &Sizes, results: &mut Results) {
    let mut host = DoubleHost::spawn(seed(2, HOUR, DAY, HOUR));
    let node = scratch.node("throughput");
    let driver = Driver::spawn(&node, &host.addr).await;
    let pods = kubelet::pods("tput", sizes.throughput_volumes, &node.kubelet);
    let calls = publishes(&pods, &node.kubelet, CREDS_TEMPLATE);
    let channels = kubelet::channels(&driver.socket, sizes.callers).await;

    let driver_cpu = procs::sched_seconds(driver.pid());
    let driver_sys = procs::cpu_split(driver.pid()).1;
    let double_cpu = procs::sched_seconds(host.pid());
    let batch = kubelet::run_batch(&channels, calls).await;
    let driver_cpu = procs::sched_seconds(driver.pid()) - driver_cpu;
    let driver_sys = procs::cpu_split(driver.pid()).1 - driver_sys;
    let double_cpu = procs::sched_seconds(host.pid()) - double_cpu;
    let mut t = Throughput {
        volumes: pods.len(),
        callers: sizes.callers,
        publish_rate: batch.rate(),
        publish_latency: stats::summarize(&batch.latencies),
        driver_cpu_per_publish: Duration::from_secs_f64(driver_cpu / pods.len() as f64),
        driver_sys_per_publish: Duration::from_secs_f64(driver_sys / pods.len() as f64),
        double_cores: double_cpu / batch.wall.as_secs_f64(),
        idle: sizes.idle,
        ..Throughput::default()
    };
    step(&format!(
        "  {} publishes in {:.2} s: {:.0}/s (p50 {}, p99 {}); the double used {:.2} cores",
        pods.len(),
        batch.wall.as_secs_f64(),
        t.publish_rate,
        stats::ms(t.publish_latency.p50),
        stats::ms(t.publish_latency.p99),
        t.double_cores
    ));
    assert_eq!(
        procs::mounts_under(&node.kubelet).len(),
        pods.len(),
        "every volume is a mount"
    );
    drop(channels);

    // Idle: nothing due for ~40 minutes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    t.rss = procs::rss_bytes(driver.pid());
    let stat_before = procs::cpu_seconds(driver.pid());
    let sched_before = procs::ThreadCpu::read(driver.pid());
    let idle_from = SystemTime::now();
    tokio::time::sleep(sizes.idle).await;
    t.idle_cpu_stat = procs::cpu_seconds(driver.pid()) - stat_before;
    t.idle_cpu_sched = procs::ThreadCpu::read(driver.pid()).since(&sched_before);
    let idle_to = SystemTime::now();
    t.idle_requests = host
        .dump("requests", &scratch.root)
        .iter()
        .filter_map(|l| l.split('\t').next()?.parse::<u128>().ok())
        .filter(|at| *at >= refresh::ns(idle_from) && *at <= refresh::ns(idle_to))
        .count();
    step(&format!(
        "  idle {} s with {} volumes: {:.3} s CPU (stat), {:.4} s (schedstat), {} Vault requests",
        sizes.idle.as_secs(),
        pods.len(),
        t.idle_cpu_stat,
        t.idle_cpu_sched,
        t.idle_requests
    ));

    let channels = kubelet::channels(&driver.socket, sizes.callers).await;
    let driver_cpu = procs::sched_seconds(driver.pid());
    let batch = kubelet::run_batch(&channels, unpublishes(&pods, &node.kubelet)).await;
    t.driver_cpu_per_unpublish = Duration::from_secs_f64(
        (procs::sched_seconds(driver.pid()) - driver_cpu) / pods.len() as f64,
    );
    t.unpublish_rate = batch.rate();
    t.unpublish_latency = stats::summarize(&batch.latencies);
    step(&format!(
        "  {} unpublishes: {:.0}/s",
        pods.len(),
        t.unpublish_rate
    ));
    assert!(
        procs::mounts_under(&node.kubelet).is_empty(),
        "unpublish removes every mount"
    );
    drop(channels);
    results.throughput = t;
    results
        .driver_log
        .push(("throughput".to_owned(), driver.stop().await));
}
