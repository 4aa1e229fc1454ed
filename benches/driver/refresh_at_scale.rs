//! Phase `refresh`: 1,000 volumes with short leases and tokens, observed
//! for a window: renewals per second, lapses, and Vault requests per volume
//! per hour by kind (the request log is read by [`crate::refresh`]).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::procs::{self, DoubleHost, Driver, Scratch};
use crate::sizes::Sizes;
use crate::workload::{CREDS_TEMPLATE, HOUR, publishes, seed, unpublishes};
use crate::{Results, kubelet, refresh, step};

/// 1,000 volumes with 30 s leases and 30 s tokens published at once, then
/// observed: renewals per second, lapses, requests per volume per hour.
pub async fn refresh_at_scale(scratch: &Scratch, sizes: &Sizes, results: &mut Results) {
    let mut host = DoubleHost::spawn(seed(2, sizes.refresh_ttl, HOUR, sizes.refresh_ttl));
    let node = scratch.node("refresh");
    let driver = Driver::spawn(&node, &host.addr).await;
    let pods = kubelet::pods("refresh", sizes.refresh_volumes, &node.kubelet);
    let calls = publishes(&pods, &node.kubelet, CREDS_TEMPLATE);
    let channels = kubelet::channels(&driver.socket, sizes.refresh_callers).await;
    let start = SystemTime::now();
    let batch = kubelet::run_batch(&channels, calls).await;
    let published = SystemTime::now();
    step(&format!(
        "  {} volumes published in {:.2} s; observing for {} s",
        pods.len(),
        batch.wall.as_secs_f64(),
        sizes.refresh_window.as_secs()
    ));
    drop(channels);
    let mut progress = String::new();
    let window_end = Instant::now() + sizes.refresh_window;
    while Instant::now() < window_end {
        tokio::time::sleep(Duration::from_secs(15).min(window_end - Instant::now())).await;
        progress.clear();
        let _ = write!(
            progress,
            "  … {:.0} s, driver CPU {:.2} s",
            SystemTime::now()
                .duration_since(start)
                .unwrap_or_default()
                .as_secs_f64(),
            procs::sched_seconds(driver.pid())
        );
        step(&progress);
    }
    let end = SystemTime::now();
    let requests = host.dump("requests", &scratch.root);
    let leases = host.dump("leases", &scratch.root);
    let tokens = host.dump("tokens", &scratch.root);
    let analysed = refresh::analyse(&refresh::Inputs {
        requests: &requests,
        leases: &leases,
        tokens: &tokens,
        start,
        published,
        end,
        completed_at: &batch.completed_at,
        ttl: sizes.refresh_ttl,
        volumes: pods.len(),
    });
    step(&format!(
        "  renewals: at most {}/s (lease {}/s, token {}/s); lapsed leases {}, tokens {}",
        analysed.max_renewals_per_sec,
        analysed.max_lease_renews_per_sec,
        analysed.max_token_renews_per_sec,
        analysed.leases_lapsed,
        analysed.tokens_lapsed
    ));
    results.refresh = analysed;

    let channels = kubelet::channels(&driver.socket, sizes.callers).await;
    kubelet::run_batch(&channels, unpublishes(&pods, &node.kubelet)).await;
    drop(channels);
    results
        .driver_log
        .push(("refresh".to_owned(), driver.stop().await));
}
