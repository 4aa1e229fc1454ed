use std::path::PathBuf;

use super::*;

const UID: &str = "3f0a6c1e-8d2b-4c5f-9e7a-1b2c3d4e5f60";
const OTHER: &str = "7c9d2e4f-1a3b-4c5d-8e6f-0a1b2c3d4e5f";

/// `/proc/<pid>/cgroup` of a container process in each layout, cgroup
/// version and cgroup-namespace view, and whether it belongs to `UID`.
const CGROUP_FILES: &[(&str, &str, bool)] = &[
    (
        "v2, systemd driver",
        "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod3f0a6c1e_8d2b_4c5f_9e7a_1b2c3d4e5f60.slice/cri-containerd-0123abcd.scope\n",
        true,
    ),
    (
        "v2, systemd driver, Guaranteed pod",
        "0::/kubepods.slice/kubepods-pod3f0a6c1e_8d2b_4c5f_9e7a_1b2c3d4e5f60.slice/crio-0123abcd.scope\n",
        true,
    ),
    (
        "v2, cgroupfs driver",
        "0::/kubepods/besteffort/pod3f0a6c1e-8d2b-4c5f-9e7a-1b2c3d4e5f60/0123abcd\n",
        true,
    ),
    (
        "v2, cgroupfs driver, Guaranteed pod",
        "0::/kubepods/pod3f0a6c1e-8d2b-4c5f-9e7a-1b2c3d4e5f60/0123abcd\n",
        true,
    ),
    (
        "v1, systemd driver, every hierarchy",
        "12:pids:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod3f0a6c1e_8d2b_4c5f_9e7a_1b2c3d4e5f60.slice/docker-0123.scope\n\
             4:memory:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod3f0a6c1e_8d2b_4c5f_9e7a_1b2c3d4e5f60.slice/docker-0123.scope\n\
             1:name=systemd:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod3f0a6c1e_8d2b_4c5f_9e7a_1b2c3d4e5f60.slice/docker-0123.scope\n\
             0::/\n",
        true,
    ),
    (
        "v1, cgroupfs driver",
        "8:cpu,cpuacct:/kubepods/burstable/pod3f0a6c1e-8d2b-4c5f-9e7a-1b2c3d4e5f60/0123abcd\n\
             1:name=systemd:/kubepods/burstable/pod3f0a6c1e-8d2b-4c5f-9e7a-1b2c3d4e5f60/0123abcd\n",
        true,
    ),
    (
        "kind-style nested node (systemd, kubelet.slice)",
        "0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod3f0a6c1e_8d2b_4c5f_9e7a_1b2c3d4e5f60.slice/cri-containerd-0123.scope\n",
        true,
    ),
    (
        "reader in its own cgroup namespace, systemd driver",
        "0::/../../kubepods-besteffort-pod3f0a6c1e_8d2b_4c5f_9e7a_1b2c3d4e5f60.slice/cri-containerd-0123.scope\n",
        true,
    ),
    (
        "reader in its own cgroup namespace, cgroupfs driver, other QoS",
        "0::/../../../besteffort/pod3f0a6c1e-8d2b-4c5f-9e7a-1b2c3d4e5f60/0123abcd\n",
        true,
    ),
    (
        "reader in its own cgroup namespace, cgroupfs driver, same QoS",
        "0::/../../pod3f0a6c1e-8d2b-4c5f-9e7a-1b2c3d4e5f60/0123abcd\n",
        true,
    ),
    (
        "the pod's sandbox cgroup is still the pod",
        "0::/kubepods/besteffort/pod3f0a6c1e-8d2b-4c5f-9e7a-1b2c3d4e5f60/ffff\n",
        true,
    ),
    (
        "another pod, systemd driver",
        "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7c9d2e4f_1a3b_4c5d_8e6f_0a1b2c3d4e5f.slice/cri-containerd-0123.scope\n",
        false,
    ),
    (
        "another pod, cgroupfs driver",
        "0::/kubepods/besteffort/pod7c9d2e4f-1a3b-4c5d-8e6f-0a1b2c3d4e5f/0123abcd\n",
        false,
    ),
    (
        "another pod naming ours in a cgroup it made below its own",
        "0::/kubepods/besteffort/pod7c9d2e4f-1a3b-4c5d-8e6f-0a1b2c3d4e5f/0123abcd/kubepods/pod3f0a6c1e-8d2b-4c5f-9e7a-1b2c3d4e5f60\n",
        false,
    ),
    (
        "another pod in one hierarchy, ours in another",
        "8:pids:/kubepods/besteffort/pod3f0a6c1e-8d2b-4c5f-9e7a-1b2c3d4e5f60/0123abcd\n\
             0::/kubepods/besteffort/pod7c9d2e4f-1a3b-4c5d-8e6f-0a1b2c3d4e5f/0123abcd\n",
        false,
    ),
    (
        "a host daemon",
        "0::/system.slice/containerd.service\n",
        false,
    ),
    ("host init", "0::/init.scope\n", false),
    (
        "a prefix of the UID is not the UID",
        "0::/kubepods/besteffort/pod3f0a6c1e-8d2b-4c5f-9e7a/0123abcd\n",
        false,
    ),
    (
        "the UID not as kubelet's pod cgroup (no kubepods parent)",
        "0::/user.slice/pod3f0a6c1e-8d2b-4c5f-9e7a-1b2c3d4e5f60/x\n",
        false,
    ),
    (
        "the UID in a slice that is not kubepods'",
        "0::/machine.slice/machine-pod3f0a6c1e_8d2b_4c5f_9e7a_1b2c3d4e5f60.slice\n",
        false,
    ),
    (
        "a systemd UID spelled with dashes",
        "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod3f0a6c1e-8d2b-4c5f-9e7a-1b2c3d4e5f60.slice/x.scope\n",
        false,
    ),
    ("empty file", "", false),
    ("garbage", "not a cgroup file\n::\n", false),
];

#[test]
fn cgroup_files_name_the_pod_in_every_layout() {
    let table = CGROUP_FILES;
    for (case, contents, expected) in table {
        assert_eq!(belongs_to_pod(contents, UID), *expected, "{case}");
    }
    assert!(
        !belongs_to_pod(table[0].1, ""),
        "an empty UID matches nothing"
    );
    assert!(
        belongs_to_pod(table[11].1, OTHER),
        "the other pod's own check"
    );
}

#[test]
fn signals_parse_with_or_without_the_prefix() {
    let table = [
        ("SIGHUP", Signal::Hup),
        ("HUP", Signal::Hup),
        ("sighup", Signal::Hup),
        ("SIGINT", Signal::Int),
        ("QUIT", Signal::Quit),
        ("SIGUSR1", Signal::Usr1),
        ("USR2", Signal::Usr2),
        ("SIGTERM", Signal::Term),
        ("WINCH", Signal::Winch),
    ];
    for (text, signal) in table {
        assert_eq!(Signal::parse(text).unwrap(), signal, "{text}");
    }
    for bad in [
        "", "SIG", "SIGKILL", "KILL", "SIGSTOP", "9", "1", "SIGHUPX", "HUP1",
    ] {
        let error = Signal::parse(bad).unwrap_err();
        assert!(error.to_string().contains("SIGUSR1"), "{bad}: {error}");
    }
}

#[test]
fn process_names_are_names() {
    assert_eq!(
        AppSignal::new(Signal::Hup, "nginx").unwrap().process,
        "nginx"
    );
    assert!(AppSignal::new(Signal::Hup, "java-with-a-long-name-beyond-comm").is_ok());
    for bad in ["", "/usr/sbin/nginx", "a\nb", &"x".repeat(256)] {
        assert!(
            matches!(
                AppSignal::new(Signal::Hup, bad),
                Err(Error::InvalidProcessName { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        AppSignal::new(Signal::Term, "pause"),
        Err(Error::Sandbox)
    ));
}

/// A fake `/proc` tree, removed on drop.
struct FakeProc(PathBuf);

impl FakeProc {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "vcd-fake-proc-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn process(&self, pid: i32, comm: &str, exe: Option<&str>, cgroup: &str) -> &Self {
        let dir = self.0.join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
        std::fs::write(dir.join("cgroup"), cgroup).unwrap();
        if let Some(exe) = exe {
            std::os::unix::fs::symlink(exe, dir.join("exe")).unwrap();
        }
        self
    }

    fn own_pid(&self, pid: i32) -> &Self {
        std::os::unix::fs::symlink(pid.to_string(), self.0.join("self")).unwrap();
        self
    }
}

impl Drop for FakeProc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_scan_finds_only_the_pods_processes_with_the_name() {
    let ours = format!("0::/kubepods/besteffort/pod{UID}/c1\n");
    let theirs = format!("0::/kubepods/besteffort/pod{OTHER}/c1\n");
    let proc = FakeProc::new();
    proc.process(
        1,
        "systemd",
        Some("/usr/lib/systemd/systemd"),
        "0::/init.scope\n",
    )
    .process(10, "nginx", Some("/usr/sbin/nginx"), &ours)
    .process(11, "nginx", Some("/usr/sbin/nginx"), &theirs)
    .process(
        12,
        "nginx",
        Some("/usr/sbin/nginx"),
        "0::/system.slice/nginx.service\n",
    )
    .process(13, "sh", Some("/bin/sh"), &ours)
    .process(14, "pause", Some("/pause"), &ours)
    // comm is cut to 15 bytes; the executable's name is whole.
    .process(
        15,
        "java-with-a-lon",
        Some("/opt/java-with-a-long-name"),
        &ours,
    )
    .process(
        16,
        "nginx: worker",
        Some("/usr/sbin/nginx (deleted)"),
        &ours,
    )
    .process(17, "nginx", None, &ours);
    std::fs::create_dir_all(proc.0.join("net")).unwrap();
    let pod = PodProcesses::new(&proc.0, UID);
    assert_eq!(pod.named("nginx"), vec![10, 16, 17]);
    assert_eq!(pod.named("java-with-a-long-name"), vec![15]);
    assert_eq!(pod.named("pause"), Vec::<i32>::new());
    assert_eq!(pod.named("sh"), vec![13]);
    assert_eq!(PodProcesses::new(&proc.0, OTHER).named("nginx"), vec![11]);
    assert_eq!(
        PodProcesses::new(proc.0.join("missing"), UID).named("nginx"),
        Vec::<i32>::new()
    );
}

#[test]
fn the_host_pid_namespace_is_told_from_a_containers() {
    let host = FakeProc::new();
    host.own_pid(4242)
        .process(1, "systemd", None, "0::/init.scope\n");
    assert!(sees_host_processes(&host.0));
    drop(host);

    let alone = FakeProc::new();
    alone
        .own_pid(1)
        .process(1, "vault-csi-drive", None, "0::/\n");
    assert!(!sees_host_processes(&alone.0), "the driver is PID 1");
    drop(alone);

    let shared = FakeProc::new();
    shared.own_pid(7).process(1, "pause", None, "0::/\n");
    assert!(!sees_host_processes(&shared.0), "the sandbox is PID 1");
    drop(shared);

    let pod_init = FakeProc::new();
    pod_init.own_pid(7).process(
        1,
        "tini",
        None,
        &format!("0::/kubepods/besteffort/pod{UID}/c1\n"),
    );
    assert!(!sees_host_processes(&pod_init.0), "PID 1 is in a pod");
}
