//! Telling an app its files changed, without a sidecar: after a refresh
//! replaced a volume's files, the driver sends the signal the volume names
//! (`signal`) to every process of the volume's pod with the name it names
//! (`signalProcess`), e.g. `SIGHUP` to nginx, which then re-reads its
//! certificates.
//!
//! The pod is the one kubelet chose the target path for
//! (`<kubelet-dir>/pods/<uid>/…`), never one a pod spec names, and a
//! process belongs to it only when its cgroup says so (`cgroup.rs`). Each
//! process is pinned with a pidfd and checked again before the signal, so
//! a reused pid never receives it. Seeing other pods' processes needs the
//! host's PID namespace (`hostPID`, the `app-signals` overlay); without it
//! the driver says so in its log and counts `no_process`.

mod cgroup;
mod procs;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

use tokio_util::task::TaskTracker;

pub use cgroup::{belongs_to_pod, in_a_pod};
pub use procs::{PodProcesses, SANDBOX_PROCESS, sees_host_processes};

use crate::metrics::Metrics;

/// The `/proc` of the driver's PID namespace.
const PROC_ROOT: &str = "/proc";

/// Longest `signalProcess` accepted (a file name's limit).
const MAX_PROCESS_NAME_BYTES: usize = 255;

/// What parsing the attributes or delivering a signal can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `signal` names a signal the driver does not send.
    #[error(
        "{value:?} is not a signal the driver sends; use one of SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGTERM, SIGWINCH"
    )]
    UnknownSignal {
        /// The value as written.
        value: String,
    },
    /// `signalProcess` cannot be a process name.
    #[error(
        "{reason}; name the process as /proc/<pid>/comm or its executable's file name shows it, such as nginx"
    )]
    InvalidProcessName {
        /// What is wrong.
        reason: &'static str,
    },
    /// `signalProcess` names the pod's sandbox.
    #[error("the pod's sandbox process `pause` is never signalled; name the app's own process")]
    Sandbox,
    /// A pidfd for the process could not be opened (the driver lacks the
    /// privilege, or the kernel predates Linux 5.3).
    #[error("opening a pidfd for process {pid} failed: {source}")]
    Pidfd {
        /// The process.
        pid: i32,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused the signal (the driver lacks `CAP_KILL`).
    #[error("sending {signal} to process {pid} failed: {source}")]
    Send {
        /// The process.
        pid: i32,
        /// The signal.
        signal: &'static str,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
}

/// The signals a volume may ask for: the ones apps use to reload, re-open
/// or restart, never one that cannot be handled (`SIGKILL`, `SIGSTOP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `SIGHUP`: reload (nginx, `haproxy`, many daemons).
    Hup,
    /// `SIGINT`.
    Int,
    /// `SIGQUIT`: graceful stop for some servers (nginx).
    Quit,
    /// `SIGUSR1`: re-open files (nginx logs, many JVM agents).
    Usr1,
    /// `SIGUSR2`.
    Usr2,
    /// `SIGTERM`: to the container's main process, a container restart.
    Term,
    /// `SIGWINCH`.
    Winch,
}

impl Signal {
    const ALL: [Self; 7] = [
        Self::Hup,
        Self::Int,
        Self::Quit,
        Self::Usr1,
        Self::Usr2,
        Self::Term,
        Self::Winch,
    ];

    /// Accepts `SIGHUP` or `HUP` (any case) and the others likewise.
    pub fn parse(value: &str) -> Result<Self, Error> {
        let upper = value.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        Self::ALL
            .into_iter()
            .find(|signal| &signal.name()[3..] == bare)
            .ok_or_else(|| Error::UnknownSignal {
                value: value.to_owned(),
            })
    }

    /// The signal's name, `SIGHUP`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hup => "SIGHUP",
            Self::Int => "SIGINT",
            Self::Quit => "SIGQUIT",
            Self::Usr1 => "SIGUSR1",
            Self::Usr2 => "SIGUSR2",
            Self::Term => "SIGTERM",
            Self::Winch => "SIGWINCH",
        }
    }

    fn to_rustix(self) -> rustix::process::Signal {
        use rustix::process::Signal as S;
        match self {
            Self::Hup => S::HUP,
            Self::Int => S::INT,
            Self::Quit => S::QUIT,
            Self::Usr1 => S::USR1,
            Self::Usr2 => S::USR2,
            Self::Term => S::TERM,
            Self::Winch => S::WINCH,
        }
    }
}

/// A volume's `signal` and `signalProcess`: what to send, and to which of
/// its pod's processes, after each change of its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSignal {
    /// The signal.
    pub signal: Signal,
    /// The process name (`comm`, or the executable's file name).
    pub process: String,
}

/// The pod a volume belongs to, for finding its processes and for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    /// The pod's UID, from the volume's target path.
    pub uid: String,
    /// The pod's namespace (for logs).
    pub namespace: String,
    /// The pod's name (for logs).
    pub name: String,
}

impl PodRef {
    /// The pod with `uid` (from the target path), named for logs.
    pub fn new(uid: &str, namespace: &str, name: &str) -> Self {
        Self {
            uid: uid.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

/// What one delivery did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Processes signalled.
    pub sent: usize,
    /// Processes the kernel refused to signal.
    pub failed: usize,
}

impl AppSignal {
    /// Checks `signalProcess`: a process name, never the sandbox's.
    pub fn new(signal: Signal, process: &str) -> Result<Self, Error> {
        let invalid = |reason| Err(Error::InvalidProcessName { reason });
        if process.is_empty() {
            return invalid("it is empty");
        }
        if process.len() > MAX_PROCESS_NAME_BYTES {
            return invalid("it is longer than 255 bytes");
        }
        if process.contains('/') {
            return invalid("it contains `/` (a path, not a name)");
        }
        if process.chars().any(char::is_control) {
            return invalid("it contains control characters");
        }
        if process == SANDBOX_PROCESS {
            return Err(Error::Sandbox);
        }
        Ok(Self {
            signal,
            process: process.to_owned(),
        })
    }

    /// Signals the pod's matching processes off the async workers (it reads
    /// `/proc`), as a task of `tracker` so shutdown waits for it.
    pub fn after_change(&self, tracker: &TaskTracker, metrics: &Arc<Metrics>, pod: PodRef) {
        let app = self.clone();
        let metrics = Arc::clone(metrics);
        tracker.spawn_blocking(move || app.deliver(Path::new(PROC_ROOT), &pod, &metrics));
    }

    /// Signals every process of `pod` named [`AppSignal::process`] seen
    /// through `proc_root`, logging each signal and counting the result in
    /// `vault_csi_app_signals_total`.
    pub fn deliver(&self, proc_root: &Path, pod: &PodRef, metrics: &Metrics) -> Delivery {
        let processes = PodProcesses::new(proc_root, &pod.uid);
        let mut delivery = Delivery::default();
        for pid in processes.named(&self.process) {
            match processes.signal(pid, &self.process, self.signal) {
                Ok(true) => {
                    delivery.sent += 1;
                    metrics.observe_app_signal("sent");
                    tracing::info!(
                        pod.namespace = %pod.namespace,
                        pod.name = %pod.name,
                        process = %self.process,
                        pid,
                        signal = self.signal.name(),
                        "Signalled the app: its files changed"
                    );
                }
                Ok(false) => {}
                Err(error) => {
                    delivery.failed += 1;
                    metrics.observe_app_signal("failed");
                    tracing::warn!(
                        pod.namespace = %pod.namespace,
                        pod.name = %pod.name,
                        process = %self.process,
                        pid,
                        signal = self.signal.name(),
                        %error,
                        "Could not signal the app after its files changed"
                    );
                }
            }
        }
        if delivery == Delivery::default() {
            metrics.observe_app_signal("no_process");
            if sees_host_processes(proc_root) {
                tracing::warn!(
                    pod.namespace = %pod.namespace,
                    pod.name = %pod.name,
                    process = %self.process,
                    signal = self.signal.name(),
                    "The volume's files changed but no process of the pod has this name; nothing was signalled (check signalProcess against the process's comm)"
                );
            } else {
                tracing::warn!(
                    pod.namespace = %pod.namespace,
                    pod.name = %pod.name,
                    process = %self.process,
                    signal = self.signal.name(),
                    "The volume's files changed but the driver cannot signal the app: it does not run in the host's PID namespace, so it sees no pod's processes; install the app-signals overlay (hostPID: true)"
                );
            }
        }
        delivery
    }
}
