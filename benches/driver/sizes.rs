//! How big each phase of the benchmark is: the full run that writes
//! `BENCHMARKS.md`, and the quick smoke run (`VCD_BENCH_QUICK=1`).

use std::time::Duration;

/// How big each phase is.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Measured publishes per secret count.
    pub latency_iterations: usize,
    /// Unmeasured publishes first.
    pub latency_warmup: usize,
    /// Volumes for the throughput and idle phases.
    pub throughput_volumes: usize,
    /// Concurrent callers for throughput and memory.
    pub callers: usize,
    /// Memory checkpoints.
    pub memory_points: [usize; 3],
    /// Idle observation.
    pub idle: Duration,
    /// Volumes for the refresh phase.
    pub refresh_volumes: usize,
    /// Concurrent callers publishing them.
    pub refresh_callers: usize,
    /// Observation after they are published.
    pub refresh_window: Duration,
    /// Lease and token TTL in the refresh phase.
    pub refresh_ttl: Duration,
    /// Each load-generator measurement.
    pub hammer: Duration,
    /// Measured publishes against OpenBao.
    pub openbao_iterations: usize,
    /// Pods served by one driver, and by as many `bao agent`s.
    pub openbao_pods: [usize; 3],
    /// The idle window of each of those rows.
    pub openbao_idle: Duration,
}

impl Sizes {
    pub fn full() -> Self {
        Self {
            latency_iterations: 1000,
            latency_warmup: 50,
            throughput_volumes: 1000,
            callers: 16,
            memory_points: [100, 1000, 5000],
            idle: Duration::from_secs(60),
            refresh_volumes: 1000,
            refresh_callers: 16,
            refresh_window: Duration::from_secs(90),
            refresh_ttl: Duration::from_secs(30),
            hammer: Duration::from_secs(2),
            openbao_iterations: 300,
            openbao_pods: [1, 10, 50],
            openbao_idle: Duration::from_secs(60),
        }
    }

    pub fn quick() -> Self {
        Self {
            latency_iterations: 100,
            latency_warmup: 10,
            throughput_volumes: 200,
            callers: 16,
            memory_points: [50, 200, 500],
            idle: Duration::from_secs(5),
            refresh_volumes: 200,
            refresh_callers: 16,
            refresh_window: Duration::from_secs(25),
            refresh_ttl: Duration::from_secs(30),
            hammer: Duration::from_millis(500),
            openbao_iterations: 50,
            openbao_pods: [1, 5, 10],
            openbao_idle: Duration::from_secs(10),
        }
    }
}
