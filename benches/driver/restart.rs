//! Phase `restart`: what restarting the driver costs Vault. 1,000 volumes,
//! each rendering one dynamic database credential (a one-hour lease) and
//! one KV secret re-read every 30 s, are published; the driver is stopped
//! with SIGTERM (as a DaemonSet rolling update does) and a new one started
//! on the same state. Every Vault request from the stop until every volume
//! has re-rendered once is counted by kind. Kept answers make a restart
//! cost nothing but the re-reads that were due anyway: no login, no
//! credential issued again, no write.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::procs::{self, DoubleHost, Driver, Scratch};
use crate::sizes::Sizes;
use crate::workload::{DAY, HOUR, kv_template, publishes, seed, unpublishes};
use crate::{Results, kubelet, refresh, step};

/// The volumes' static re-read interval: the default floor
/// (`--min-refresh-interval`), so the window holds one re-read of each.
const INTERVAL: Duration = Duration::from_secs(30);

/// What one restart cost.
#[derive(Debug, Clone, Default)]
pub struct RestartCost {
    /// Volumes published when the driver was restarted.
    pub volumes: usize,
    /// From the new driver's start to `/readyz` answering 200 (every
    /// volume restored from its record; the socket serves from then on).
    pub restore: Duration,
    /// From the stop until every volume had re-read its KV secret.
    pub window: Duration,
    /// Logins in the window.
    pub logins: usize,
    /// Dynamic credentials issued in the window.
    pub issued: usize,
    /// Writes (`PUT`/`POST` other than renewals) in the window.
    pub writes: usize,
    /// KV re-reads in the window (due anyway).
    pub kv_reads: usize,
    /// Lease and token renewals in the window (due anyway).
    pub renewals: usize,
    /// Live leases after the window (one per volume when nothing leaked).
    pub live_leases: usize,
}

/// Publishes the volumes, restarts the driver once, counts what Vault saw.
pub async fn restart(scratch: &Scratch, sizes: &Sizes, results: &mut Results) {
    let mut host = DoubleHost::spawn(seed(2, HOUR, DAY, HOUR));
    let node = scratch.node("restart");
    let interval = format!("{}s", INTERVAL.as_secs());
    let driver = Driver::spawn_with_interval(&node, &host.addr, &interval).await;
    let pods = kubelet::pods("restart", sizes.throughput_volumes, &node.kubelet);
    let template = format!(
        "{}{{{{#with (secret \"database/creds/app\")}}}}user={{{{data.username}}}}{{{{/with}}}}",
        kv_template(1)
    );
    let channels = kubelet::channels(&driver.socket, sizes.callers).await;
    let batch = kubelet::run_batch(&channels, publishes(&pods, &node.kubelet, &template)).await;
    drop(channels);
    assert_eq!(
        procs::mounts_under(&node.kubelet).len(),
        pods.len(),
        "every volume published"
    );
    step(&format!(
        "  {} volumes published in {:.1} s; restarting the driver",
        pods.len(),
        batch.wall.as_secs_f64()
    ));

    let stopped_at = SystemTime::now();
    let window_start = Instant::now();
    let mut log = driver.stop().await;
    let started = Instant::now();
    let driver = Driver::spawn_with_interval(&node, &host.addr, &interval).await;
    wait_ready(driver.metrics_port).await;
    let restore = started.elapsed();

    // Every volume re-reads its KV secret within one interval of its last
    // read; wait for all of them (or three intervals).
    let deadline = Instant::now() + 3 * INTERVAL;
    let requests = loop {
        let since = requests_since(&mut host, scratch, stopped_at);
        let kv_reads = since
            .iter()
            .filter(|(method, path)| method == "GET" && path.starts_with("/v1/secret/data/"))
            .count();
        if kv_reads >= pods.len() || Instant::now() > deadline {
            break since;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let window = window_start.elapsed();
    let count = |f: &dyn Fn(&str, &str) -> bool| {
        requests
            .iter()
            .filter(|(method, path)| f(method, path))
            .count()
    };
    let renewal =
        |path: &str| path == "/v1/sys/leases/renew" || path == "/v1/auth/token/renew-self";
    let cost = RestartCost {
        volumes: pods.len(),
        restore,
        window,
        logins: count(&|_, p| p.starts_with("/v1/auth/") && p.ends_with("/login")),
        issued: count(&|_, p| p.starts_with("/v1/database/creds/")),
        writes: count(&|m, p| (m == "PUT" || m == "POST") && !renewal(p) && !p.ends_with("/login")),
        kv_reads: count(&|m, p| m == "GET" && p.starts_with("/v1/secret/data/")),
        renewals: count(&|_, p| renewal(p)),
        live_leases: host
            .dump("leases", &scratch.root)
            .iter()
            .filter(|l| l.split('\t').nth(3) == Some("false"))
            .count(),
    };
    step(&format!(
        "  restart: restored in {:.2} s; in {:.0} s Vault saw {} logins, {} credentials issued, \
{} writes, {} KV re-reads, {} renewals; {} leases live",
        cost.restore.as_secs_f64(),
        cost.window.as_secs_f64(),
        cost.logins,
        cost.issued,
        cost.writes,
        cost.kv_reads,
        cost.renewals,
        cost.live_leases
    ));

    let channels = kubelet::channels(&driver.socket, sizes.callers).await;
    kubelet::run_batch(&channels, unpublishes(&pods, &node.kubelet)).await;
    drop(channels);
    assert!(
        procs::mounts_under(&node.kubelet).is_empty(),
        "unpublish removes every mount"
    );
    log.extend(driver.stop().await);
    results.restart = cost;
    results.driver_log.push(("restart".to_owned(), log));
}

/// Waits for the driver's `/readyz` to answer 200, which it does once
/// every volume is restored.
async fn wait_ready(port: u16) {
    let url = format!("http://127.0.0.1:{port}/readyz");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(response) = reqwest::get(&url).await
            && response.status().is_success()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted driver never became ready"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `(method, path)` of every request the double saw since `since`.
fn requests_since(
    host: &mut DoubleHost,
    scratch: &Scratch,
    since: SystemTime,
) -> Vec<(String, String)> {
    let from = refresh::ns(since);
    host.dump("requests", &scratch.root)
        .iter()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let at: u128 = fields.next()?.parse().ok()?;
            let method = fields.next()?;
            let path = fields.next()?;
            (at >= from).then(|| (method.to_owned(), path.to_owned()))
        })
        .collect()
}
