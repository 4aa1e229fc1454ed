//! The driver's memory cgroup, as the kernel sees it: the limit the budget
//! is carved from ([`cgroup_memory_limit`]) and the usage the second line
//! of defence watches ([`cgroup_memory_usage`]), under cgroup v2
//! (`memory.max`, `memory.current`) and v1 (`memory.limit_in_bytes`,
//! `memory.usage_in_bytes`).

use std::path::{Path, PathBuf};

/// The memory limit of the cgroup this process runs in, from the text of
/// `/proc/self/cgroup` and the cgroup file systems under `root`
/// (`/sys/fs/cgroup`): the smallest limit on the way from the process's
/// cgroup up to the hierarchy's root, under cgroup v2 (`memory.max`) and
/// v1 (`memory/…/memory.limit_in_bytes`). `None` when nothing limits it.
pub fn cgroup_memory_limit(proc_self_cgroup: &str, root: &Path) -> Option<u64> {
    let mut smallest: Option<u64> = None;
    for line in proc_self_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (hierarchy, file) = if id == "0" && controllers.is_empty() {
            (root.to_path_buf(), "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            (root.join("memory"), "memory.limit_in_bytes")
        } else {
            continue;
        };
        let mut dir = Some(Path::new(path.trim_start_matches('/')));
        while let Some(relative) = dir {
            let value = std::fs::read_to_string(hierarchy.join(relative).join(file)).ok();
            if let Some(limit) = value.as_deref().and_then(parse_limit) {
                smallest = Some(smallest.map_or(limit, |s| s.min(limit)));
            }
            dir = relative.parent();
        }
    }
    smallest
}

/// A limit file's value: bytes, or `None` for "max" and v1's "unlimited"
/// (a value near `i64::MAX`).
fn parse_limit(text: &str) -> Option<u64> {
    let value: u64 = text.trim().parse().ok()?;
    (value < 1 << 60).then_some(value)
}

/// The memory cgroup file `file` of this process: the cgroup's own
/// directory under cgroup v2 (`memory.current`) or v1 (`memory/…`), from
/// the text of `/proc/self/cgroup`, when the file can be read.
fn own_cgroup_file(proc_self_cgroup: &str, root: &Path, v2: &str, v1: &str) -> Option<PathBuf> {
    for line in proc_self_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let relative = path.trim_start_matches('/');
        let candidate = if id == "0" && controllers.is_empty() {
            root.join(relative).join(v2)
        } else if controllers.split(',').any(|c| c == "memory") {
            root.join("memory").join(relative).join(v1)
        } else {
            continue;
        };
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    None
}

/// Where this process's memory cgroup reports its usage: read with
/// [`cgroup_memory_usage`]. `None` when no memory cgroup is visible.
pub fn cgroup_usage_file(proc_self_cgroup: &str, root: &Path) -> Option<PathBuf> {
    own_cgroup_file(
        proc_self_cgroup,
        root,
        "memory.current",
        "memory.usage_in_bytes",
    )
}

/// The bytes a cgroup usage file reports (anonymous memory, page cache,
/// tmpfs pages and kernel memory charged to the cgroup).
pub fn cgroup_memory_usage(file: &Path) -> Option<u64> {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|text| text.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempdir::Dir {
        tempdir::Dir::with(files)
    }

    /// A throwaway directory of files, for fake cgroup file systems.
    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn with(files: &[(&str, &str)]) -> Self {
                let root = std::env::temp_dir().join(format!("cgroup-{}", rand::random::<u64>()));
                for (path, content) in files {
                    let file = root.join(path);
                    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                    std::fs::write(file, content).unwrap();
                }
                std::fs::create_dir_all(&root).unwrap();
                Self(root)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn the_smallest_limit_on_the_way_up_wins() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Option<u64>);
        let cases: &[Case] = &[
            // cgroup v2, limit on the container's own cgroup.
            (
                "0::/kubepods/pod1/c1\n",
                &[("kubepods/pod1/c1/memory.max", "134217728\n")],
                Some(134_217_728),
            ),
            // v2 with cgroupns: the container sees itself as the root.
            ("0::/\n", &[("memory.max", "67108864\n")], Some(67_108_864)),
            // v2 unlimited at every level.
            (
                "0::/a/b\n",
                &[("a/b/memory.max", "max\n"), ("a/memory.max", "max\n")],
                None,
            ),
            // v2: the pod's limit is smaller than the container's.
            (
                "0::/pod/c\n",
                &[
                    ("pod/c/memory.max", "200000000"),
                    ("pod/memory.max", "100000000"),
                ],
                Some(100_000_000),
            ),
            // cgroup v1 memory controller, unlimited value near i64::MAX.
            (
                "4:memory:/kubepods/pod1/c1\n0::/\n",
                &[
                    (
                        "memory/kubepods/pod1/c1/memory.limit_in_bytes",
                        "134217728\n",
                    ),
                    ("memory/memory.limit_in_bytes", "9223372036854771712\n"),
                ],
                Some(134_217_728),
            ),
            // v1 with the controller listed with others, path not visible:
            // the hierarchy's root counts.
            (
                "3:cpu,memory:/elsewhere\n",
                &[("memory/memory.limit_in_bytes", "1048576\n")],
                Some(1_048_576),
            ),
            // Nothing mounted.
            ("0::/\n4:memory:/x\n", &[], None),
        ];
        for (proc_cgroup, files, expected) in cases {
            let root = tree(files);
            assert_eq!(
                cgroup_memory_limit(proc_cgroup, &root.0),
                *expected,
                "{proc_cgroup:?} with {files:?}"
            );
        }
    }

    #[test]
    fn the_usage_file_is_the_processes_own_cgroups() {
        let v2 = tree(&[("kubepods/c1/memory.current", "1234\n")]);
        let file = cgroup_usage_file("0::/kubepods/c1\n", &v2.0).unwrap();
        assert_eq!(cgroup_memory_usage(&file), Some(1234));
        let v1 = tree(&[("memory/kubepods/c1/memory.usage_in_bytes", "99\n")]);
        let file = cgroup_usage_file("4:memory:/kubepods/c1\n0::/\n", &v1.0).unwrap();
        assert_eq!(cgroup_memory_usage(&file), Some(99));
        assert!(cgroup_usage_file("0::/none\n", &v1.0).is_none());
    }
}
