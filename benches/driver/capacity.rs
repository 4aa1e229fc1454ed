//! Phase `capacity`: the standalone Vault double on its own, one thread,
//! hammered with KV reads and logins by 1, 16 and 64 clients, so the other
//! phases' figures can be read against what the double itself can answer.

use std::time::Duration;

use crate::floor::{self, Floor, Load};
use crate::procs::Standalone;
use crate::sizes::Sizes;
use crate::{Results, kubelet, stats, step};

/// One double-capacity measurement.
#[derive(Debug, Clone)]
pub struct Capacity {
    /// `read` or `login`.
    pub load: &'static str,
    /// Concurrent clients.
    pub clients: usize,
    /// Requests per second.
    pub rate: f64,
    /// Requests per CPU-second of the double.
    pub per_cpu_second: f64,
    /// Median latency.
    pub p50: Duration,
}

/// Requests/s of the standalone double, `--threads 1`, for reads and logins.
pub async fn capacity(sizes: &Sizes, results: &mut Results) {
    let double = Standalone::spawn(1);
    results.capacity_pinned = double.pinned;
    let floor = Floor::new(&double.addr);
    let jwt = kubelet::mint("capacity", "capacity-pod");
    let token = floor.login(&jwt).await;
    for (name, load) in [
        ("KV read", Load::Read { token }),
        ("login (RS256 JWT)", Load::Login { jwt }),
    ] {
        for clients in [1, 16, 64] {
            let h = floor::hammer(&double.addr, double.pid(), &load, clients, sizes.hammer).await;
            let rate = h.requests as f64 / h.wall.as_secs_f64();
            let per_cpu_second = h.requests as f64 / h.server_cpu.max(1e-9);
            step(&format!(
                "  {name}, {clients} clients: {rate:.0} req/s, {per_cpu_second:.0} per CPU-second, p50 {}",
                stats::ms(h.p50)
            ));
            results.capacity.push(Capacity {
                load: name,
                clients,
                rate,
                per_cpu_second,
                p50: h.p50,
            });
        }
    }
}
