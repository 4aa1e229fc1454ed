//! The processes the benchmark runs (the driver binary, the Vault double
//! in its own process) and what it reads about them from `/proc`, plus the
//! scratch directory that holds every mount and is cleaned up at the end.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use nix::mount::{MntFlags, MsFlags};
use tokio::time::Instant;

/// The benchmark's scratch directory under `/tmp`. Its `state` subdirectory
/// is a tmpfs (the driver's state directory belongs on tmpfs, like `/run`);
/// everything mounted below the root is unmounted on drop.
pub struct Scratch {
    /// The root, `/tmp/vcd-bench-<pid>`.
    pub root: PathBuf,
}

impl Scratch {
    /// Creates the root and mounts the state tmpfs.
    pub fn new() -> Self {
        let root = std::env::temp_dir().join(format!("vcd-bench-{}", std::process::id()));
        std::fs::create_dir_all(root.join("state")).expect("create the scratch directory");
        nix::mount::mount(
            Some("tmpfs"),
            &root.join("state"),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("size=256m,mode=0700"),
        )
        .expect("mount the state tmpfs (run the benchmark as root)");
        Self { root }
    }

    /// A fresh node layout for one phase: `kubelet/pods`, a state
    /// directory on the tmpfs, and the socket path.
    pub fn node(&self, phase: &str) -> NodeDirs {
        let dir = self.root.join(phase);
        let kubelet = dir.join("kubelet");
        std::fs::create_dir_all(kubelet.join("pods")).expect("create kubelet/pods");
        let state = self.root.join("state").join(phase);
        std::fs::create_dir_all(&state).expect("create the state directory");
        NodeDirs {
            socket: dir.join("csi.sock"),
            log: dir.join("driver.log"),
            kubelet,
            state,
        }
    }

    /// Mount points below the root, from `/proc/self/mountinfo`.
    pub fn mounts(&self) -> Vec<String> {
        mounts_under(&self.root)
    }

    /// Unmounts everything below the root (deepest first) and removes it.
    /// Returns how many mounts were left over (besides the state tmpfs).
    pub fn cleanup(&self) -> usize {
        let mounts = self.mounts();
        let state = self.root.join("state").to_string_lossy().into_owned();
        let leftovers = mounts.iter().filter(|m| **m != state).count();
        for mount in mounts.iter().rev() {
            let _ = nix::mount::umount2(mount.as_str(), MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.root);
        leftovers
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.root.exists() {
            self.cleanup();
        }
    }
}

/// Mount points whose path starts with `root`.
pub fn mounts_under(root: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = root.to_string_lossy().into_owned();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|p| p.starts_with(&prefix))
        .collect()
}

/// One node's directories.
#[derive(Debug, Clone)]
pub struct NodeDirs {
    /// `--kubelet-dir`.
    pub kubelet: PathBuf,
    /// `--state-dir` (on tmpfs).
    pub state: PathBuf,
    /// The CSI socket.
    pub socket: PathBuf,
    /// The driver's stdout and stderr.
    pub log: PathBuf,
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// The directory holding the release binaries (`target/release`).
pub fn release_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_vault-csi-driver"))
        .parent()
        .expect("the driver binary has a directory")
        .to_path_buf()
}

/// The driver binary: `target/release/vault-csi-driver`, or the one named
/// by `VCD_BENCH_DRIVER` (to compare or profile another build).
pub fn driver_binary() -> PathBuf {
    std::env::var_os("VCD_BENCH_DRIVER").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_vault-csi-driver")),
        PathBuf::from,
    )
}

/// The driver binary running as its own process.
pub struct Driver {
    child: Child,
    /// Its socket.
    pub socket: PathBuf,
    /// The port of its metrics listener on 127.0.0.1.
    pub metrics_port: u16,
    log: PathBuf,
}

impl Driver {
    /// Starts `target/release/vault-csi-driver` for `node`, talking to
    /// `vault_addr`, and waits for its socket.
    pub async fn spawn(node: &NodeDirs, vault_addr: &str) -> Self {
        Self::spawn_with_interval(node, vault_addr, "1h").await
    }

    /// [`Driver::spawn`], with `interval` as the default re-read interval
    /// of static secrets (`--static-secret-refresh-interval`).
    pub async fn spawn_with_interval(node: &NodeDirs, vault_addr: &str, interval: &str) -> Self {
        let out = std::fs::File::create(&node.log).expect("create the driver log");
        let err = out.try_clone().expect("clone the log handle");
        let _ = std::fs::remove_file(&node.socket);
        let metrics_port = free_port();
        let child = Command::new(driver_binary())
            .arg(format!("--endpoint=unix://{}", node.socket.display()))
            .arg("--node-id=bench-node")
            .arg(format!("--vault-addr={vault_addr}"))
            .arg(format!("--state-dir={}", node.state.display()))
            .arg(format!("--kubelet-dir={}", node.kubelet.display()))
            .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
            .arg("--log-level=warn")
            .arg(format!("--static-secret-refresh-interval={interval}"))
            // Every benchmark pod is in one namespace: without this, the
            // per-namespace Vault budget (10/s after a burst of 50) would
            // be what the throughput rows measure, not the driver.
            .arg("--namespace-vault-rate=0")
            .env_remove("VAULT_ADDR")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start target/release/vault-csi-driver");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !node.socket.exists() {
            assert!(
                Instant::now() < deadline,
                "the driver did not create its socket"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Self {
            child,
            socket: node.socket.clone(),
            metrics_port,
            log: node.log.clone(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and wait; returns the driver's log lines (warnings and
    /// errors, since it runs at `--log-level=warn`).
    pub async fn stop(mut self) -> Vec<String> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.child.try_wait().ok().flatten().is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How the Vault double host process is seeded.
#[derive(Debug, Clone, Copy)]
pub struct DoubleSeed {
    /// Tokio worker threads serving requests.
    pub threads: usize,
    /// Token TTL of role `example`.
    pub token_ttl: Duration,
    /// Token max TTL of role `example`.
    pub token_max: Duration,
    /// Lease TTL of `database/creds/app`.
    pub lease_ttl: Duration,
    /// Lease max TTL of `database/creds/app`.
    pub lease_max: Duration,
}

/// The Vault double in its own process: this benchmark binary re-executed
/// with `--double-host` (see `host.rs`), so it can be seeded with the
/// benchmark's secrets and roles and asked for its request log over a pipe.
pub struct DoubleHost {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// `http://127.0.0.1:PORT`.
    pub addr: String,
}

impl DoubleHost {
    /// Starts the host process and waits for its address.
    pub fn spawn(seed: DoubleSeed) -> Self {
        let exe = std::env::current_exe().expect("the benchmark's own path");
        let mut child = Command::new(exe)
            .arg("--double-host")
            .arg(seed.threads.to_string())
            .arg(seed.token_ttl.as_secs().to_string())
            .arg(seed.token_max.as_secs().to_string())
            .arg(seed.lease_ttl.as_secs().to_string())
            .arg(seed.lease_max.as_secs().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the double host");
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("read the double's address");
        let addr = line
            .trim()
            .strip_prefix("ADDR ")
            .unwrap_or_else(|| panic!("unexpected double host greeting {line:?}"))
            .to_owned();
        Self {
            child,
            stdin,
            stdout,
            addr,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Makes the double's answers wait (see `VaultDouble::set_latency`).
    pub fn set_latency(&mut self, login: Duration, other: Duration) {
        self.command(&format!(
            "latency {} {}",
            login.as_millis(),
            other.as_millis()
        ));
    }

    /// Sends one command line and waits for its `OK`.
    fn command(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("write to the double host");
        self.stdin.flush().expect("flush the double host pipe");
        let mut answer = String::new();
        self.stdout
            .read_line(&mut answer)
            .expect("read the double host's answer");
        assert!(answer.starts_with("OK"), "double host answered {answer:?}");
    }

    /// Asks for a dump (`requests`, `leases` or `tokens`), returns its lines.
    pub fn dump(&mut self, what: &str, scratch: &Path) -> Vec<String> {
        let file = scratch.join(format!("double-{what}.tsv"));
        self.command(&format!("{what} {}", file.display()));
        let text = std::fs::read_to_string(&file).expect("read the dump");
        let _ = std::fs::remove_file(&file);
        text.lines().map(str::to_owned).collect()
    }
}

impl Drop for DoubleHost {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let deadline = std::time::SystemTime::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() {
            if std::time::SystemTime::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.wait();
    }
}

/// The standalone `target/release/vault-double` binary, seeded with the
/// walkthrough.
pub struct Standalone {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub addr: String,
    /// CPU the process is pinned to, if it was.
    pub pinned: Option<usize>,
}

impl Standalone {
    /// Starts it with `--threads threads`, pinned to the last CPU with
    /// `taskset` when there is more than one, and waits for its address.
    pub fn spawn(threads: usize) -> Self {
        let binary = release_dir().join("vault-double");
        assert!(
            binary.exists(),
            "{} is missing: run `cargo build --release --workspace --bins` first",
            binary.display()
        );
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let taskset = Path::new("/usr/bin/taskset").exists() && cpus > 1;
        let port = free_port();
        let mut command = if taskset {
            let mut c = Command::new("/usr/bin/taskset");
            c.arg("-c").arg((cpus - 1).to_string()).arg(&binary);
            c
        } else {
            Command::new(&binary)
        };
        let mut child = command
            .arg(format!("--listen=127.0.0.1:{port}"))
            .arg("--seed=walkthrough")
            .arg(format!("--threads={threads}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start target/release/vault-double");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut addr = None;
        let mut line = String::new();
        while addr.is_none() {
            line.clear();
            let n = stdout
                .read_line(&mut line)
                .expect("read vault-double output");
            assert!(n > 0, "vault-double exited before printing VAULT_ADDR");
            addr = line.trim().strip_prefix("VAULT_ADDR=").map(str::to_owned);
        }
        // Keep draining its stdout so it never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while stdout.read_line(&mut sink).unwrap_or(0) > 0 {
                sink.clear();
            }
        });
        Self {
            child,
            addr: addr.expect("checked above"),
            pinned: taskset.then_some(cpus - 1),
        }
    }

    /// The process id (of vault-double itself: `taskset` execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmRSS` of `pid` in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// CPU time of `pid` (all threads): `utime + stime` from `/proc/<pid>/stat`,
/// in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let (user, system) = cpu_split(pid);
    user + system
}

/// `(utime, stime)` of `pid` in seconds, from `/proc/<pid>/stat`.
pub fn cpu_split(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return (0.0, 0.0);
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, so utime (14) and stime (15)
    // are at 11 and 12.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (
        ticks(11) as f64 / clock_ticks(),
        ticks(12) as f64 / clock_ticks(),
    )
}

/// Per-thread CPU time (`schedstat`) of a process, to subtract readings
/// thread by thread: a thread that exits between two readings (the blocking
/// pool retires idle threads after 10 s) must not make the total go down.
#[derive(Debug, Clone, Default)]
pub struct ThreadCpu(std::collections::HashMap<u32, u64>);

impl ThreadCpu {
    /// Reads every thread's CPU nanoseconds now.
    pub fn read(pid: u32) -> Self {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return Self::default();
        };
        Self(
            tasks
                .filter_map(Result::ok)
                .filter_map(|t| {
                    let tid = t.file_name().to_str()?.parse::<u32>().ok()?;
                    let text = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
                    Some((tid, text.split_whitespace().next()?.parse::<u64>().ok()?))
                })
                .collect(),
        )
    }

    /// CPU seconds the threads alive now used since `earlier` (threads
    /// started since then count whole; threads gone since then are left out,
    /// with what they used after `earlier`).
    pub fn since(&self, earlier: &Self) -> f64 {
        let nanos: u64 = self
            .0
            .iter()
            .map(|(tid, now)| now.saturating_sub(earlier.0.get(tid).copied().unwrap_or(0)))
            .sum();
        nanos as f64 / 1e9
    }
}

/// CPU seconds a process's live threads used (`schedstat`), for deltas
/// over a short window in which no thread exits.
pub fn sched_seconds(pid: u32) -> f64 {
    ThreadCpu::read(pid).since(&ThreadCpu::default())
}

/// CPU seconds all CPUs spent busy (user, nice, system, irq, softirq,
/// steal) since boot, from `/proc/stat`.
pub fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else {
        return 0.0;
    };
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| ticks.get(i))
        .sum();
    busy as f64 / clock_ticks()
}

/// CPU seconds of this process and its reaped children (the drivers and
/// doubles it ran): utime, stime, cutime and cstime.
pub fn own_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12, 13, 14]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    ticks as f64 / clock_ticks()
}

/// Threads of `pid`.
pub fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count)
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .unwrap_or(100.0)
    })
}

/// The machine: CPU model, `nproc`, `free -h`, kernel.
pub fn machine() -> Vec<String> {
    let run = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .unwrap_or_default()
    };
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let mut lines = vec![
        format!("CPU: {model}, `nproc` = {}", run("nproc", &[]).trim()),
        format!("Kernel: {}", run("uname", &["-sr"]).trim()),
        format!("Rust: {}", run("rustc", &["--version"]).trim()),
        "`free -h`:".to_owned(),
    ];
    lines.extend(run("free", &["-h"]).lines().map(|l| format!("    {l}")));
    lines
}
