//! Phase `memory`: the driver's RSS and threads before any volume and at
//! each checkpoint, after unpublishing everything, and after publishing as
//! many volumes again (reuse or leak?).

use std::time::Duration;

use crate::procs::{self, DoubleHost, Driver, Scratch};
use crate::sizes::Sizes;
use crate::workload::{DAY, HOUR, kv_template, publishes, seed, unpublishes};
use crate::{Results, kubelet, stats, step};

/// Memory results.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    /// `(volumes, RSS bytes, driver threads)`; the first is the baseline.
    pub points: Vec<(usize, u64, usize)>,
    /// RSS after unpublishing everything.
    pub after_unpublish: u64,
    /// RSS after publishing as many new volumes again (reuse or leak?).
    pub second_round: u64,
    /// Unpublishes per second of the largest set.
    pub unpublish_rate: f64,
    /// Publishes per second of the last step.
    pub publish_rate: f64,
}

/// RSS before any volume and at each checkpoint (one KV secret each).
pub async fn memory(scratch: &Scratch, sizes: &Sizes, results: &mut Results) {
    let host = DoubleHost::spawn(seed(2, DAY, 32 * DAY, HOUR));
    let node = scratch.node("memory");
    let total = sizes.memory_points[2];
    let pods = kubelet::pods("mem", total, &node.kubelet);
    let template = kv_template(1);
    let driver = Driver::spawn(&node, &host.addr).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut m = Memory::default();
    m.points.push((
        0,
        procs::rss_bytes(driver.pid()),
        procs::threads(driver.pid()),
    ));
    step(&format!(
        "  baseline RSS {}",
        stats::bytes(m.points[0].1 as f64)
    ));
    let channels = kubelet::channels(&driver.socket, sizes.callers).await;
    let mut done = 0;
    for point in sizes.memory_points {
        let batch = kubelet::run_batch(
            &channels,
            publishes(&pods[done..point], &node.kubelet, &template),
        )
        .await;
        m.publish_rate = batch.rate();
        done = point;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = procs::rss_bytes(driver.pid());
        m.points.push((point, rss, procs::threads(driver.pid())));
        step(&format!(
            "  {point} volumes: RSS {} ({} mounts)",
            stats::bytes(rss as f64),
            procs::mounts_under(&node.kubelet).len()
        ));
    }
    assert_eq!(procs::mounts_under(&node.kubelet).len(), total);
    let batch = kubelet::run_batch(&channels, unpublishes(&pods, &node.kubelet)).await;
    m.unpublish_rate = batch.rate();
    tokio::time::sleep(Duration::from_secs(1)).await;
    m.after_unpublish = procs::rss_bytes(driver.pid());
    step(&format!(
        "  after unpublishing: RSS {}",
        stats::bytes(m.after_unpublish as f64)
    ));

    // A second round of as many new volumes: freed memory is reused (RSS
    // stays) or leaked (RSS grows by another round's worth).
    let again = kubelet::pods("mem2", total, &node.kubelet);
    kubelet::run_batch(&channels, publishes(&again, &node.kubelet, &template)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    m.second_round = procs::rss_bytes(driver.pid());
    step(&format!(
        "  {total} new volumes again: RSS {}",
        stats::bytes(m.second_round as f64)
    ));
    kubelet::run_batch(&channels, unpublishes(&again, &node.kubelet)).await;
    drop(channels);
    drop(host);
    results.memory = m;
    results
        .driver_log
        .push(("memory".to_owned(), driver.stop().await));
}
