//! Finding and signalling one pod's processes through a `/proc` tree.

use std::path::{Path, PathBuf};

use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, pidfd_open, pidfd_send_signal};

use super::{Error, Signal, cgroup};

/// The pod sandbox's process, which holds the pod's namespaces: never
/// signalled.
pub const SANDBOX_PROCESS: &str = "pause";

/// The processes of one pod, as seen through the `/proc` at `proc_root`.
#[derive(Debug, Clone)]
pub struct PodProcesses {
    proc_root: PathBuf,
    pod_uid: String,
}

impl PodProcesses {
    /// The pod with `pod_uid` (from the volume's target path), seen through
    /// `proc_root` (`/proc` on a node).
    pub fn new(proc_root: impl Into<PathBuf>, pod_uid: &str) -> Self {
        Self {
            proc_root: proc_root.into(),
            pod_uid: pod_uid.to_owned(),
        }
    }

    /// The pids of the pod's processes named `name` (by `comm` or by the
    /// file name of their executable), lowest first.
    pub fn named(&self, name: &str) -> Vec<i32> {
        let Ok(entries) = std::fs::read_dir(&self.proc_root) else {
            return Vec::new();
        };
        let mut pids: Vec<i32> = entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .filter(|pid| *pid > 0 && self.matches(*pid, name))
            .collect();
        pids.sort_unstable();
        pids
    }

    /// Whether `pid` is, right now, one of the pod's processes named `name`
    /// (and not the sandbox).
    fn matches(&self, pid: i32, name: &str) -> bool {
        let dir = self.proc_root.join(pid.to_string());
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let comm = comm.trim_end_matches('\n');
        if comm == SANDBOX_PROCESS {
            return false;
        }
        let named = comm == name || executable_name(&dir).as_deref() == Some(name);
        named
            && std::fs::read_to_string(dir.join("cgroup"))
                .is_ok_and(|contents| cgroup::belongs_to_pod(&contents, &self.pod_uid))
    }

    /// Sends `signal` to `pid` if it is still one of the pod's processes
    /// named `name`. The process is pinned with a pidfd first and checked
    /// again through it, so a pid reused after [`PodProcesses::named`] is
    /// never signalled. `Ok(false)`: the process is gone or is no longer
    /// the one found.
    pub fn signal(&self, pid: i32, name: &str, signal: Signal) -> Result<bool, Error> {
        let Some(raw) = Pid::from_raw(pid) else {
            return Ok(false);
        };
        let pidfd = match pidfd_open(raw, PidfdFlags::empty()) {
            Ok(fd) => fd,
            Err(Errno::SRCH) => return Ok(false),
            Err(errno) => {
                return Err(Error::Pidfd {
                    pid,
                    source: errno.into(),
                });
            }
        };
        // The pidfd names this process for good; if the pid was reused
        // before it was opened, this check sees the newcomer.
        if !self.matches(pid, name) {
            return Ok(false);
        }
        match pidfd_send_signal(&pidfd, signal.to_rustix()) {
            Ok(()) => Ok(true),
            Err(Errno::SRCH) => Ok(false),
            Err(errno) => Err(Error::Send {
                pid,
                signal: signal.name(),
                source: errno.into(),
            }),
        }
    }
}

/// The file name of the process's executable, without the ` (deleted)` the
/// kernel appends once the file was replaced.
fn executable_name(dir: &Path) -> Option<String> {
    let target = std::fs::read_link(dir.join("exe")).ok()?;
    let name = target.file_name()?.to_str()?;
    Some(name.strip_suffix(" (deleted)").unwrap_or(name).to_owned())
}

/// Whether the `/proc` at `proc_root` shows the node's processes rather
/// than only the driver's container: without `hostPID`, PID 1 is the
/// driver itself (or the pod's `pause` when the pod shares its PID
/// namespace).
pub fn sees_host_processes(proc_root: &Path) -> bool {
    let own = std::fs::read_link(proc_root.join("self"))
        .ok()
        .and_then(|target| target.to_str()?.parse::<i32>().ok());
    if own == Some(1) {
        return false;
    }
    let init = std::fs::read_to_string(proc_root.join("1/comm")).unwrap_or_default();
    let init_cgroup = std::fs::read_to_string(proc_root.join("1/cgroup")).unwrap_or_default();
    init.trim_end_matches('\n') != SANDBOX_PROCESS && !cgroup::in_a_pod(&init_cgroup)
}
