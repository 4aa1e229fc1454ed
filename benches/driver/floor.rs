//! The floor: the Vault requests a publish makes (login as the pod, then
//! one read per secret), sent directly with a plain keep-alive HTTP client,
//! and the load generator that measures how fast the double answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::future::join_all;
use serde_json::Value;
use tokio::time::Instant;

use crate::kubelet::ROLE;

/// A plain Vault HTTP client (the same `reqwest` the driver uses, HTTP/1.1
/// keep-alive pool, no retries).
#[derive(Clone)]
pub struct Floor {
    http: reqwest::Client,
    addr: String,
}

impl Floor {
    /// A client for the Vault at `addr`.
    pub fn new(addr: &str) -> Self {
        let http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .expect("build the HTTP client");
        Self {
            http,
            addr: addr.trim_end_matches('/').to_owned(),
        }
    }

    /// `POST auth/kubernetes/login`; returns the client token.
    pub async fn login(&self, jwt: &str) -> String {
        let body = serde_json::json!({"role": ROLE, "jwt": jwt});
        let response = self
            .http
            .post(format!("{}/v1/auth/kubernetes/login", self.addr))
            .header("X-Vault-Request", "true")
            .json(&body)
            .send()
            .await
            .expect("login request");
        assert!(
            response.status().is_success(),
            "login failed: {}",
            response.status()
        );
        let bytes = response.bytes().await.expect("login body");
        let parsed: Value = serde_json::from_slice(&bytes).expect("login JSON");
        parsed["auth"]["client_token"]
            .as_str()
            .expect("auth.client_token")
            .to_owned()
    }

    /// `GET <path>` with the token; returns the body length.
    pub async fn read(&self, token: &str, path: &str) -> usize {
        let response = self
            .http
            .get(format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Request", "true")
            .header("X-Vault-Token", token)
            .send()
            .await
            .expect("read request");
        assert!(
            response.status().is_success(),
            "read {path} failed: {}",
            response.status()
        );
        response.bytes().await.expect("read body").len()
    }

    /// Login, then the reads one after another. Returns the elapsed time.
    pub async fn sequential(&self, jwt: &str, paths: &[String]) -> Duration {
        let started = Instant::now();
        let token = self.login(jwt).await;
        for path in paths {
            self.read(&token, path).await;
        }
        started.elapsed()
    }

    /// Login, then all reads at once (what the driver does). Returns the
    /// elapsed time.
    pub async fn concurrent(&self, jwt: &str, paths: &[String]) -> Duration {
        let started = Instant::now();
        let token = self.login(jwt).await;
        join_all(paths.iter().map(|p| self.read(&token, p))).await;
        started.elapsed()
    }
}

/// What to hammer the double with.
#[derive(Debug, Clone)]
pub enum Load {
    /// `GET secret/data/myapp/config` with a logged-in token.
    Read {
        /// The token.
        token: String,
    },
    /// `POST auth/kubernetes/login` (RS256 verification of the JWT).
    Login {
        /// A valid service-account JWT.
        jwt: String,
    },
}

/// Requests answered and the per-request latencies' median.
#[derive(Debug, Clone, Copy)]
pub struct Hammered {
    /// Requests answered.
    pub requests: u64,
    /// Wall time.
    pub wall: Duration,
    /// Median latency.
    pub p50: Duration,
    /// CPU seconds the server process used meanwhile.
    pub server_cpu: f64,
}

/// `clients` concurrent clients (each its own connection) sending `load`
/// back to back for `duration`, while the CPU time of the server process
/// `server_pid` is measured.
pub async fn hammer(
    addr: &str,
    server_pid: u32,
    load: &Load,
    clients: usize,
    duration: Duration,
) -> Hammered {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        // One client per caller so each holds its own connection.
        let floor = Floor::new(addr);
        let load = load.clone();
        let stop = Arc::clone(&stop);
        let done = Arc::clone(&done);
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match &load {
                    Load::Read { token } => {
                        floor.read(token, "secret/data/myapp/config").await;
                    }
                    Load::Login { jwt } => {
                        floor.login(jwt).await;
                    }
                }
                latencies.push(t.elapsed());
                done.fetch_add(1, Ordering::Relaxed);
            }
            latencies
        });
    }
    // Let every client connect and warm up before counting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start_count = done.load(Ordering::Relaxed);
    let cpu_before = crate::procs::sched_seconds(server_pid);
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    let requests = done.load(Ordering::Relaxed) - start_count;
    let wall = started.elapsed();
    let server_cpu = crate::procs::sched_seconds(server_pid) - cpu_before;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        latencies.extend(joined.expect("hammer task"));
    }
    Hammered {
        requests,
        wall,
        p50: crate::stats::summarize(&latencies).p50,
        server_cpu,
    }
}
