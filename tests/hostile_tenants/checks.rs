//! What every hostile-tenant test checks ([`Checks`]), and the monitor
//! that samples the driver's cgroup and charges while tenants attack.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use tonic::Code;
use vault_csi_driver::volume::memory::RESERVE_BYTES;

use super::{TRACKING_FACTOR, TRACKING_SLACK, excerpt};

/// What the monitor and the calls observed, checked at the end.
#[derive(Default)]
pub struct Checks {
    inner: StdMutex<Observed>,
}

#[derive(Default)]
struct Observed {
    samples: u64,
    max_working_set: u64,
    max_charged: u64,
    /// Samples that broke the reserve: (working set, charged).
    reserve_broken: Vec<(u64, u64)>,
    /// Samples that broke the tracking bound: (working set, charged).
    untracked: Vec<(u64, u64)>,
    /// Every status a call returned: (what, code, message).
    statuses: Vec<(String, Code, String)>,
    /// Calls answered later than their bound: (what, took).
    slow: Vec<(String, Duration)>,
    /// Secret values tenants wrote to Vault.
    secrets: Vec<String>,
}

/// Samples the cgroup and the charges every 50 ms, on a thread of its own,
/// until stopped.
///
/// Each sample reads the charges, then the working set, then the charges
/// again, with nothing of the test's runtime in between: the Vault double
/// serves megabytes on that runtime, and a sample taken there compared
/// charges read before such a pause with a working set read after it, in
/// which the driver had charged and filled 30 MiB more. Memory
/// is charged before it is held and given back after it is freed, so the
/// memory of the middle reading is counted by one of the two others
/// unless it was charged and given back within the sample; the larger of
/// the two is what the sample holds the working set against.
pub struct Monitor {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Monitor {
    /// Starts sampling `cgroup_dir` and the metrics at `port` into `checks`.
    pub fn start(checks: Arc<Checks>, cgroup_dir: PathBuf, port: u16, baseline: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let cgroup = CgroupReader(cgroup_dir);
            while !stopped.load(Ordering::Relaxed) {
                let before = charged(port);
                let working_set = cgroup.working_set();
                let after = charged(port);
                if let (Some(before), Some(after)) = (before, after) {
                    checks.sample(baseline, working_set, before.max(after));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling and waits for the last sample.
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            tokio::task::spawn_blocking(move || thread.join().unwrap())
                .await
                .unwrap();
        }
    }
}

/// The cgroup's files, readable from the monitor's thread.
struct CgroupReader(PathBuf);

impl CgroupReader {
    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.0.join(file)).unwrap_or_default()
    }

    fn working_set(&self) -> u64 {
        let (usage, inactive_key) = if self.0.join("memory.usage_in_bytes").exists() {
            (self.read("memory.usage_in_bytes"), "total_inactive_file ")
        } else {
            (self.read("memory.current"), "inactive_file ")
        };
        let usage: u64 = usage.trim().parse().unwrap_or(0);
        let inactive: u64 = self
            .read("memory.stat")
            .lines()
            .find_map(|l| l.strip_prefix(inactive_key)?.trim().parse().ok())
            .unwrap_or(0);
        usage.saturating_sub(inactive)
    }
}

impl Checks {
    fn lock(&self) -> std::sync::MutexGuard<'_, Observed> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remembers a secret value that must never show outside its volume.
    pub fn secret(&self, value: &str) {
        self.lock().secrets.push(value.to_owned());
    }

    pub fn sample(&self, baseline: u64, working_set: u64, charged: u64) {
        let mut o = self.lock();
        o.samples += 1;
        o.max_working_set = o.max_working_set.max(working_set);
        o.max_charged = o.max_charged.max(charged);
        if working_set > charged + RESERVE_BYTES {
            o.reserve_broken.push((working_set, charged));
        }
        if working_set.saturating_sub(baseline) > TRACKING_FACTOR * charged + TRACKING_SLACK {
            o.untracked.push((working_set, charged));
        }
    }

    /// Records a call's outcome and how long it took against `bound`.
    pub fn call(
        &self,
        what: &str,
        result: &Result<(), tonic::Status>,
        took: Duration,
        bound: Duration,
    ) {
        let mut o = self.lock();
        if let Err(status) = result {
            o.statuses
                .push((what.to_owned(), status.code(), status.message().to_owned()));
        }
        if took > bound {
            o.slow.push((what.to_owned(), took));
        }
    }

    /// Everything that broke, as sentences.
    pub fn broken(&self, baseline: u64, log: &str, metrics: &str) -> Vec<String> {
        let o = self.lock();
        let mut broken = Vec::new();
        if let Some(&(ws, charged)) = o.reserve_broken.iter().max_by_key(|(ws, c)| ws - c.min(ws)) {
            broken.push(format!(
                "{} samples broke the reserve: working set {ws} with {charged} charged is more than {} bytes of the driver's own",
                o.reserve_broken.len(),
                RESERVE_BYTES
            ));
        }
        if let Some(&(ws, charged)) = o.untracked.iter().max_by_key(|(ws, _)| *ws) {
            broken.push(format!(
                "{} samples where the charges did not track the working set: {ws} bytes ({} over the baseline) for {charged} charged (bound: {TRACKING_FACTOR} x charged + {TRACKING_SLACK})",
                o.untracked.len(),
                ws.saturating_sub(baseline)
            ));
        }
        for (what, took) in &o.slow {
            broken.push(format!("{what} took {took:?}"));
        }
        for (what, code, message) in &o.statuses {
            for secret in &o.secrets {
                if message.contains(secret.as_str()) {
                    broken.push(format!(
                        "a tenant's secret is in the status of {what} ({code:?}): {}",
                        excerpt(message)
                    ));
                }
            }
            if what.starts_with("good") {
                broken.push(format!("{what} failed ({code:?}): {}", excerpt(message)));
            }
            if matches!(code, Code::Internal | Code::Unknown) {
                broken.push(format!("{what} got {code:?}: {}", excerpt(message)));
            }
            if *code == Code::ResourceExhausted
                && message.contains("memory")
                && !message.contains("--")
            {
                broken.push(format!(
                    "a memory refusal names no flag ({what}): {}",
                    excerpt(message)
                ));
            }
        }
        for secret in &o.secrets {
            if log.contains(secret.as_str()) {
                let line = log
                    .lines()
                    .find(|l| l.contains(secret.as_str()))
                    .unwrap_or_default();
                broken.push(format!(
                    "a tenant's secret is in the driver's log: {}",
                    excerpt(line)
                ));
            }
            if metrics.contains(secret.as_str()) {
                broken.push("a tenant's secret is in the metrics".to_owned());
            }
        }
        broken
    }

    /// A line of figures for the test's output.
    pub fn summary(&self, baseline: u64, peak: u64) -> String {
        let o = self.lock();
        let mut codes: BTreeMap<String, usize> = BTreeMap::new();
        for (_, code, _) in &o.statuses {
            *codes.entry(format!("{code:?}")).or_default() += 1;
        }
        format!(
            "{} samples; baseline {} KiB, peak usage {} KiB, max working set {} KiB, max charged {} KiB; refusals {codes:?}",
            o.samples,
            baseline / 1024,
            peak / 1024,
            o.max_working_set / 1024,
            o.max_charged / 1024
        )
    }
}

/// The driver's metrics page (`GET /metrics` over HTTP/1.0, blocking: the
/// monitor's thread reads it with nothing else in between).
pub fn scrape(port: u16) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut page = String::new();
    stream.read_to_string(&mut page).ok()?;
    let (head, body) = page.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.to_owned())
        .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_owned()))
}

/// The charged bytes (`vault_csi_memory_budget_used_bytes`).
pub fn charged(port: u16) -> Option<u64> {
    metric(&scrape(port)?, "vault_csi_memory_budget_used_bytes")
}

fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let value = l.strip_prefix(name)?.strip_prefix(' ')?;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // a byte count
        value.trim().parse::<f64>().ok().map(|v| v as u64)
    })
}

/// The driver's threads and what their stacks hold (the resident part of
/// its 2 MiB anonymous mappings, as pthread makes stacks), for the figures.
pub fn threads(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let count = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap_or_default()
        .trim()
        .to_owned();
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut stacks_kib = 0u64;
    let mut in_stack = false;
    for line in smaps.lines() {
        if let Some(size) = line.strip_prefix("Size:") {
            in_stack = size.trim() == "2048 kB";
        } else if let Some(rss) = line.strip_prefix("Rss:").filter(|_| in_stack) {
            stacks_kib += rss
                .trim()
                .trim_end_matches(" kB")
                .parse::<u64>()
                .unwrap_or(0);
        }
    }
    let sockets = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| {
        dir.filter_map(Result::ok)
            .filter(|e| {
                std::fs::read_link(e.path())
                    .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
            })
            .count()
    });
    format!("{count} threads, stacks {stacks_kib} KiB, {sockets} sockets")
}
