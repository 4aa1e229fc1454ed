//! Which pod a process belongs to, read from its `/proc/<pid>/cgroup`.
//!
//! Kubelet puts every container of a pod under one cgroup named after the
//! pod's UID, and only the node's root can move a process there:
//!
//! * cgroupfs driver: `…/kubepods/<qos>/pod<uid>/<container>` (no `<qos>`
//!   for Guaranteed pods);
//! * systemd driver: `…/kubepods.slice/kubepods-<qos>.slice/`
//!   `kubepods-<qos>-pod<uid, - as _>.slice/<runtime>-<container>.scope`.
//!
//! Both appear the same way under cgroup v1 (one line per hierarchy) and v2
//! (the `0::` line). When the reader runs in a cgroup namespace of its own
//! (a container's default under cgroup v2), paths are relative to it and
//! climb out with `..`: `0::/../../kubepods-besteffort-pod<uid>.slice/…`.

/// The pod cgroup a path segment names, if it names one.
#[derive(Debug, PartialEq, Eq)]
enum PodSegment<'a> {
    /// `pod<uid>` (cgroupfs driver).
    Cgroupfs(&'a str),
    /// `…kubepods…-pod<uid with _>.slice` (systemd driver).
    Systemd(&'a str),
}

impl PodSegment<'_> {
    fn is(&self, uid: &str) -> bool {
        match self {
            Self::Cgroupfs(id) => *id == uid,
            // systemd spells the UID's `-` as `_` (`-` nests slices).
            Self::Systemd(id) => {
                id.len() == uid.len()
                    && id
                        .bytes()
                        .zip(uid.bytes())
                        .all(|(a, b)| if b == b'-' { a == b'_' } else { a == b })
            }
        }
    }
}

/// The outermost pod cgroup named by one cgroup path. The outermost one
/// decides: a container allowed to make cgroups below its own could name
/// another pod there, never above.
fn pod_segment(path: &str) -> Option<PodSegment<'_>> {
    let mut previous = "";
    for segment in path.split('/') {
        if let Some(id) = segment.strip_prefix("pod") {
            // Kubelet's pod cgroups sit right under `kubepods` or a QoS
            // class; `..` when the reader's cgroup namespace hides those.
            let parent_ok = matches!(previous, "kubepods" | "besteffort" | "burstable" | "..");
            if parent_ok && !id.is_empty() {
                return Some(PodSegment::Cgroupfs(id));
            }
        }
        let slice = segment
            .strip_suffix(".slice")
            .and_then(|name| name.rsplit_once("-pod"))
            .filter(|(prefix, id)| {
                !id.is_empty() && prefix.split('-').any(|part| part == "kubepods")
            });
        if let Some((_, id)) = slice {
            return Some(PodSegment::Systemd(id));
        }
        previous = segment;
    }
    None
}

/// Whether the process whose `/proc/<pid>/cgroup` is `contents` belongs to
/// the pod with `uid`: some hierarchy places it in that pod's cgroup and
/// none places it in another pod's.
pub fn belongs_to_pod(contents: &str, uid: &str) -> bool {
    if uid.is_empty() {
        return false;
    }
    let mut found = false;
    for line in contents.lines() {
        // `hierarchy-id:controllers:path`; the path may itself hold `:`.
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        match pod_segment(path) {
            Some(segment) if segment.is(uid) => found = true,
            Some(_) => return false,
            None => {}
        }
    }
    found
}

/// Whether `contents` places the process in any pod's cgroup.
pub fn in_a_pod(contents: &str) -> bool {
    contents
        .lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .any(|path| pod_segment(path).is_some())
}
