//! SELinux labelling of volumes, as far as a kernel without SELinux can
//! show it: the `context=` option is built and sent, a kernel that refuses
//! it still gets a working volume (with a warning naming the flag), and
//! `mount_flags` other than `context=` are refused, never ignored. What
//! only an SELinux-enforcing node can show is the checklist in docs/security.md.
#![allow(clippy::missing_panics_doc)]

mod support;

use std::path::Path;

use support::{Harness, INDEX_TEMPLATE, Node, Pod};
use tonic::Code;
use vault_csi_driver::proto::NodePublishVolumeRequest;
use vault_csi_driver::proto::volume_capability::AccessType;

const ROLE: (&str, &str) = ("roleName", "example");

fn with_mount_flags(
    mut request: NodePublishVolumeRequest,
    flags: &[&str],
) -> NodePublishVolumeRequest {
    let Some(AccessType::Mount(mount)) = request
        .volume_capability
        .as_mut()
        .and_then(|c| c.access_type.as_mut())
    else {
        panic!("kubelet's request has a mount capability");
    };
    mount.mount_flags = flags.iter().map(|f| (*f).to_owned()).collect();
    request
}

/// The superblock options of the mount at `path` (where `context=` shows).
fn superblock_options(path: &Path) -> String {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let target = path.to_string_lossy();
    info.lines()
        .rev()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            (fields.get(4) == Some(&target.as_ref())).then(|| fields.last().unwrap().to_string())
        })
        .unwrap_or_default()
}

/// With a label set (by flag or by `mount_flags`), the tmpfs is mounted
/// with `context=` where the kernel has SELinux; where it refuses the
/// option (this machine's kernel has no SELinux), the volume is mounted
/// without it and the driver says so, naming the flag, instead of failing
/// every publish.
#[tokio::test]
async fn a_label_is_applied_or_the_kernel_refusal_is_reported() {
    if !support::requires_root("the tmpfs mount's SELinux context= option") {
        return;
    }
    let selinux_kernel = Path::new("/sys/fs/selinux/enforce").exists();
    let mut h = Harness::builder()
        .spawn(&["--selinux-context=system_u:object_r:container_file_t:s0"])
        .await;
    let by_flag = h.pod.clone();
    let by_mount_flags = Pod::new("default", "nginx-2", "vault-auth");
    let attributes = [ROLE, ("template.index.html", INDEX_TEMPLATE)];
    let first = h.request_for(&by_flag, "v", &attributes);
    let second = with_mount_flags(
        h.request_for(&by_mount_flags, "v", &attributes),
        &["context=\"system_u:object_r:container_file_t:s0:c1,c2\""],
    );
    for request in [first, second] {
        let target = h.send_ok(request).await;
        support::assert_walkthrough_page(&target);
        let options = superblock_options(&target);
        if selinux_kernel {
            assert!(options.contains("context="), "{options}");
        } else {
            assert!(!options.contains("context="), "{options}");
        }
    }
    if !selinux_kernel {
        // Both labels were asked for explicitly: each refusal is a warning.
        let logs = h.driver.logs();
        assert_eq!(
            logs.matches("The kernel refused the SELinux context= mount option")
                .count(),
            2,
            "{logs}"
        );
        assert!(logs.contains("--selinux-context"), "{logs}");
    }
    for pod in [&by_flag, &by_mount_flags] {
        h.unpublish_pod_ok(pod, "v").await;
    }
    assert!(h.node.mounts().is_empty());
    h.driver.terminate().await;
}

/// Kubelet sends no `mount_flags` for inline volumes today; a flag the
/// driver does not apply is refused with the reason rather than dropped.
#[tokio::test]
async fn mount_flags_other_than_a_context_are_refused() {
    let mut h = Harness::builder().spawn(&["--selinux-context=none"]).await;
    for flags in [
        &["ro"][..],
        &["noexec", "context=a:b:c_t:s0"],
        &["context=\"bad label\""],
    ] {
        let request = with_mount_flags(
            h.request("v", &[ROLE, ("template.index.html", INDEX_TEMPLATE)]),
            flags,
        );
        let status = h.send_err(request).await;
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{flags:?}: {status:?}"
        );
        assert!(
            status.message().contains("mount_flags"),
            "{flags:?}: {}",
            status.message()
        );
        assert!(
            h.node.volumes().is_empty(),
            "{flags:?}: something was mounted"
        );
    }
    assert_eq!(h.vault.count("POST", "/v1/auth/kubernetes/login"), 0);
    h.driver.terminate().await;
}

/// `--selinux-context=auto` (the default) labels volumes where the kernel
/// has SELinux and, on a kernel without it, mounts them unlabelled after
/// one refusal, logged once at info and never as a warning.
#[tokio::test]
async fn auto_labels_only_where_the_kernel_has_selinux() {
    if !support::requires_root("the tmpfs mount's SELinux context= option") {
        return;
    }
    let selinux_kernel = Path::new("/sys/fs/selinux/enforce").exists();
    let mut h = Harness::builder().spawn(&[]).await;
    let pods: Vec<Pod> = (0..3)
        .map(|i| Pod::new("default", &format!("auto{i}"), "vault-auth"))
        .collect();
    for pod in &pods {
        let request = h.request_for(pod, "v", &[ROLE, ("template.index.html", INDEX_TEMPLATE)]);
        let target = h.send_ok(request).await;
        assert_eq!(
            superblock_options(&target).contains("context="),
            selinux_kernel
        );
    }
    let logs = h.driver.logs();
    assert!(!logs.contains("The kernel refused"), "{logs}");
    if !selinux_kernel {
        assert_eq!(
            logs.matches("SELinux is not enabled on this node").count(),
            1,
            "{logs}"
        );
    }
    for pod in &pods {
        h.unpublish_pod_ok(pod, "v").await;
    }
    h.driver.terminate().await;
}

/// `--selinux-context` takes `auto`, `none` or a label; anything else stops
/// the driver at start-up with a message naming the flag.
#[tokio::test]
async fn a_bad_selinux_flag_stops_the_driver_at_start() {
    let node = Node::new();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_vault-csi-driver"))
        .arg(format!("--endpoint=unix://{}", node.socket().display()))
        .arg("--node-id=test-node")
        .arg(format!("--state-dir={}", node.state_dir().display()))
        .arg(format!("--kubelet-dir={}", node.kubelet_dir().display()))
        .arg("--selinux-context=enforcing")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--selinux-context must be auto, none or a label"),
        "{stderr}"
    );
}
