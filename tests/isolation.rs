//! Tenant isolation in the DaemonSet's real mount topology: the driver in a
//! mount namespace of its own, kubelet's `pods/` shared with the host (as
//! `mountPropagation: Bidirectional` makes it), and the host's copy of each
//! volume being what kubelet binds into the pod. A property checked in one
//! namespace only is not checked: these tests look at the host's copy.
#![allow(clippy::missing_panics_doc)]

mod support;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{DriverProcess, INDEX_TEMPLATE, Node, Pod, expected_index, walkthrough_vault};
use vault_double::VaultDouble;

const ROLE: (&str, &str) = ("roleName", "example");

fn is_read_only(options: Option<String>) -> bool {
    options.is_some_and(|o| o.split(',').any(|flag| flag == "ro"))
}

/// Every way a pod (root in its container) could change its volume fails
/// with EROFS on `dir`.
fn assert_pod_cannot_write(dir: &Path) {
    for (what, attempt) in [
        ("create a file", std::fs::write(dir.join("planted"), b"x")),
        ("replace ..data", std::fs::remove_file(dir.join("..data"))),
        (
            "plant a link",
            std::os::unix::fs::symlink("/etc", dir.join("..evil")),
        ),
        ("make a directory", std::fs::create_dir(dir.join("..2099"))),
    ] {
        let error = attempt.expect_err(what);
        assert_eq!(
            error.raw_os_error(),
            Some(nix::libc::EROFS),
            "{what} in {}: {error}",
            dir.display()
        );
    }
}

/// Binds the host's copy of `target` into a "container" directory the way
/// kubelet and the runtime do for a volume mount that is not `readOnly`
/// (a plain bind, no read-only flag requested), and checks the container
/// cannot write either.
fn assert_container_bind_cannot_write(node: &Node, target: &Path) {
    let container = node
        .root
        .join(format!("container-{}", support::rand_suffix()));
    std::fs::create_dir_all(&container).unwrap();
    nix::mount::mount(
        Some(target),
        &container,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    let result = std::panic::catch_unwind(|| assert_pod_cannot_write(&container));
    nix::mount::umount2(&container, nix::mount::MntFlags::MNT_DETACH).unwrap();
    std::fs::remove_dir(&container).unwrap();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Mounts the host sees under kubelet's pods directory, besides the
/// directory's own bind.
fn host_volume_mounts(node: &Node) -> Vec<String> {
    let pods = node.kubelet_dir().join("pods");
    support::mounts_under(&pods)
        .into_iter()
        .filter(|m| Path::new(m) != pods)
        .collect()
}

/// Changes the walkthrough's password in Vault and waits until every
/// target shows the new page on the host.
async fn rotate_and_wait(vault: &VaultDouble, targets: &[PathBuf], password: &str) {
    vault.kv2_put(
        "secret",
        "myapp/config",
        serde_json::json!({"username": "appuser", "password": password}),
    );
    support::wait_for(
        &format!("the page with {password} on the host"),
        Duration::from_secs(15),
        || {
            targets
                .iter()
                .all(|t| read(&t.join("index.html")) == expected_index("appuser", password))
        },
    )
    .await;
}

async fn publish(
    driver: &DriverProcess,
    node: &Node,
    vault: &VaultDouble,
    pod: &Pod,
    readonly: bool,
) -> PathBuf {
    let mut request = pod.publish(
        node,
        vault,
        "v",
        &[
            ROLE,
            ("template.index.html", INDEX_TEMPLATE),
            ("staticSecretRefreshInterval", "1s"),
        ],
    );
    request.readonly = readonly;
    support::publish_ok(driver.node().await, request).await
}

/// Reproduces the first isolation attack: on a volume without
/// `readOnly: true`, the driver used to seal only its own copy of the mount
/// (remounts do not propagate), so the host's copy, which kubelet binds into
/// the pod, stayed writable and a pod could plant `..data` links for the
/// driver to follow. Now the host's and the container's copies are
/// read-only from the first instant, stay so across refreshes and a driver
/// restart, and the driver's private mounts never reach the host.
#[tokio::test]
async fn every_copy_of_a_volume_is_read_only_in_the_real_topology() {
    if !support::requires_root("mount namespaces and propagation, read-only mounts (EROFS)") {
        return;
    }
    let node = Node::new();
    node.share_pods_dir();
    let vault = walkthrough_vault().await;
    let mut driver = DriverProcess::spawn_in_own_namespace(&node, &vault, "driver.log", &[]).await;

    let writable = Pod::new("default", "nginx", "vault-auth");
    let sealed = Pod::new("default", "nginx-ro", "vault-auth");
    let targets = [
        publish(&driver, &node, &vault, &writable, false).await,
        publish(&driver, &node, &vault, &sealed, true).await,
    ];
    let check_all = |driver: &DriverProcess, password: &str| {
        for target in &targets {
            assert_eq!(
                read(&target.join("index.html")),
                expected_index("appuser", password)
            );
            assert!(
                is_read_only(support::mount_options(target)),
                "the host's copy of {} is writable: {:?}",
                target.display(),
                support::mount_options(target)
            );
            assert!(
                is_read_only(driver.mount_options(target)),
                "the driver's copy of {} is writable",
                target.display()
            );
            assert_pod_cannot_write(target);
            assert_container_bind_cannot_write(&node, target);
        }
        let host_mounts = host_volume_mounts(&node);
        assert_eq!(host_mounts.len(), 2, "{host_mounts:?}");
        assert!(
            support::mounts_under(&node.state_dir()).is_empty(),
            "the driver's private mounts reached the host: {:?}",
            support::mounts_under(&node.state_dir())
        );
    };
    check_all(&driver, "suP3rsec(et!");

    // A refresh writes through the driver's private writable view; the
    // host sees the new files and still only a read-only copy.
    rotate_and_wait(&vault, &targets, "rotated-1").await;
    check_all(&driver, "rotated-1");

    // A new driver in a new namespace (a DaemonSet update) adopts the
    // volumes and keeps them sealed.
    driver.kill9();
    let mut driver =
        DriverProcess::spawn_in_own_namespace(&node, &vault, "driver-2.log", &[]).await;
    rotate_and_wait(&vault, &targets, "rotated-2").await;
    check_all(&driver, "rotated-2");

    for pod in [&writable, &sealed] {
        support::unpublish_ok(driver.node().await, pod.unpublish(&node, "v")).await;
    }
    assert!(host_volume_mounts(&node).is_empty());
    for target in &targets {
        assert!(!target.exists(), "{} stays", target.display());
    }
    driver.terminate().await;
}

/// Restore trusts nothing a record names: a record whose target is outside
/// kubelet's pods directory, or reached through a symlink, is dropped
/// without unmounting, removing or writing anything there (before, an
/// unfinished record made restore unmount and delete whatever it named).
#[tokio::test]
async fn restore_never_touches_a_target_that_fails_the_publish_checks() {
    if !support::requires_root("a mount namespace and a tmpfs victim mount") {
        return;
    }
    let node = Node::new();
    node.share_pods_dir();
    let vault = walkthrough_vault().await;
    let mut driver = DriverProcess::spawn_in_own_namespace(&node, &vault, "driver.log", &[]).await;
    let pod = Pod::walkthrough();
    let target = publish(&driver, &node, &vault, &pod, false).await;
    driver.terminate().await;

    // Someone else's volume, outside the pods directory.
    let victim = node.root.join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &victim,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=64k"),
    )
    .unwrap();
    std::fs::write(victim.join("secret"), b"not yours").unwrap();
    // And a path under pods/ that reaches it through a symlink.
    let linked_pod = node.kubelet_dir().join("pods/linked");
    std::os::unix::fs::symlink(&node.root, &linked_pod).unwrap();

    let record_path = node
        .state_dir()
        .join("volumes")
        .join(format!("{}.json", pod.volume_id("v")));
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    for forged_target in [victim.clone(), linked_pod.join("victim")] {
        let mut forged = record.clone();
        forged["target_path"] = serde_json::json!(forged_target);
        forged["phase"] = serde_json::json!("publishing");
        std::fs::write(&record_path, serde_json::to_vec(&forged).unwrap()).unwrap();

        let mut driver =
            DriverProcess::spawn_in_own_namespace(&node, &vault, "driver-forged.log", &[]).await;
        support::wait_for("the forged record dropped", Duration::from_secs(10), || {
            !record_path.exists()
        })
        .await;
        assert!(
            support::mounts_under(&victim).contains(&victim.display().to_string()),
            "restore unmounted {}",
            forged_target.display()
        );
        assert_eq!(std::fs::read(victim.join("secret")).unwrap(), b"not yours");
        assert!(
            driver
                .logs()
                .contains("fails the publish checks; nothing it names is touched"),
            "{}",
            driver.logs()
        );
        driver.terminate().await;
    }
    // The pod's own volume was never the record's business any more: it
    // stays mounted, and kubelet's unpublish still cleans it up.
    let mut driver =
        DriverProcess::spawn_in_own_namespace(&node, &vault, "driver-3.log", &[]).await;
    support::unpublish_ok(driver.node().await, pod.unpublish(&node, "v")).await;
    assert!(!target.exists());
    driver.terminate().await;
    nix::mount::umount2(&victim, nix::mount::MntFlags::MNT_DETACH).unwrap();
}

/// Reproduces the out-of-memory attack: rendered files are tmpfs pages
/// charged to the driver's memory cgroup, so one tenant publishing many
/// volumes of a 400 KB secret (100 under a 64 MiB limit) used to get the
/// driver OOM-killed (exit 137),
/// and killed again on restart, since the pages outlive it. Now the driver
/// reads its cgroup's limit, refuses what does not fit its share with
/// `RESOURCE_EXHAUSTED` naming the flag, stays alive, still admits another
/// namespace's volume, and admits again once volumes go away.
#[tokio::test]
async fn one_tenant_cannot_get_the_driver_oom_killed() {
    if !support::requires_root("a memory cgroup charged with tmpfs pages") {
        return;
    }
    let node = Node::new();
    node.share_pods_dir();
    let vault = walkthrough_vault().await;
    vault.kv2_put(
        "secret",
        "myapp/big",
        serde_json::json!({"blob": "x".repeat(400 * 1024)}),
    );
    let cgroup = support::MemoryCgroup::new(64 * 1024 * 1024);
    let mut driver =
        DriverProcess::spawn_in_cgroup(&node, &vault, "driver.log", &[], &cgroup).await;
    let template = r#"{{#with (secret "secret/data/myapp/big")}}{{data.data.blob}}{{/with}}"#;

    let mut published = Vec::new();
    let mut refused = None;
    for i in 0..100 {
        let pod = Pod::new("default", &format!("big{i}"), "vault-auth");
        let mut request = pod.publish(&node, &vault, "v", &[ROLE, ("template.blob", template)]);
        request.readonly = true;
        match driver.node().await.node_publish_volume(request).await {
            Ok(_) => published.push(pod),
            Err(status) => {
                assert_eq!(
                    driver.child.try_wait().unwrap(),
                    None,
                    "the driver died after {} volumes: {status:?}\n{}",
                    published.len(),
                    driver.logs()
                );
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                // The tenant's share (half the budget) is used up first.
                assert!(
                    status.message().contains("--namespace-memory-share"),
                    "{}",
                    status.message()
                );
                assert!(
                    !pod.target(&node, "v").join("blob").exists(),
                    "a refused volume has no files"
                );
                refused = Some(pod);
            }
        }
    }
    let refused = refused.expect("the budget never refused a volume");
    assert!(!published.is_empty(), "no volume fit at all");
    assert_eq!(driver.child.try_wait().unwrap(), None, "the driver exited");
    assert_eq!(cgroup.oom_kills(), 0, "the OOM killer acted");
    for pod in &published {
        let blob = std::fs::metadata(pod.target(&node, "v").join("blob")).unwrap();
        assert_eq!(blob.len(), 400 * 1024);
    }

    // Another namespace still has room: one tenant cannot take the node.
    vault.add_role(
        "kubernetes",
        vault_double::Role::new("quiet", ["vault-auth"], ["quiet"], ["myapp-kv-ro"])
            .with_audience("vault"),
    );
    let other = Pod::new("quiet", "small", "vault-auth");
    let small = r#"{{#with (secret "secret/data/myapp/config")}}{{data.data.username}}{{/with}}"#;
    let mut request = other.publish(
        &node,
        &vault,
        "v",
        &[("roleName", "quiet"), ("template.user", small)],
    );
    request.readonly = true;
    support::publish_ok(driver.node().await, request).await;
    support::unpublish_ok(driver.node().await, other.unpublish(&node, "v")).await;

    // Once a volume goes, its share comes back and the refused one fits.
    let first = published.remove(0);
    support::unpublish_ok(driver.node().await, first.unpublish(&node, "v")).await;
    let mut retry = refused.publish(&node, &vault, "v", &[ROLE, ("template.blob", template)]);
    retry.readonly = true;
    support::publish_ok(driver.node().await, retry).await;
    published.push(refused);

    for pod in &published {
        support::unpublish_ok(driver.node().await, pod.unpublish(&node, "v")).await;
    }
    assert!(host_volume_mounts(&node).is_empty());
    driver.terminate().await;
}

/// Reproduces the parse-memory attack: 32 Vault answers of about 600 KB of
/// small numbers each used to be parsed all at once for one render, taking
/// the driver from a few MB to hundreds (OOM-killed under a 128 MiB limit).
/// Now a volume's answers are weighed before they are parsed, the publish
/// is refused naming the limit, and the driver stays up.
#[tokio::test]
async fn vault_answers_too_large_to_parse_are_refused_before_parsing() {
    if !support::requires_root("a memory cgroup and a mount namespace") {
        return;
    }
    let node = Node::new();
    node.share_pods_dir();
    let vault = walkthrough_vault().await;
    let numbers: Vec<u8> = vec![1; 300_000];
    let mut template = String::new();
    for i in 0..32 {
        vault.kv2_put(
            "secret",
            &format!("myapp/n{i}"),
            serde_json::json!({ "numbers": numbers }),
        );
        let _ = write!(
            template,
            "{{{{#with (secret \"secret/data/myapp/n{i}\")}}}}{{{{/with}}}}"
        );
    }
    let cgroup = support::MemoryCgroup::new(128 * 1024 * 1024);
    let mut driver =
        DriverProcess::spawn_in_cgroup(&node, &vault, "driver.log", &[], &cgroup).await;
    let pod = Pod::walkthrough();
    let request = pod.publish(&node, &vault, "v", &[ROLE, ("template.n", &template)]);
    let status = driver
        .node()
        .await
        .node_publish_volume(request)
        .await
        .unwrap_err();
    assert_eq!(
        driver.child.try_wait().unwrap(),
        None,
        "the driver died: {status:?}"
    );
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("weigh more than"), "{status:?}");
    assert_eq!(cgroup.oom_kills(), 0, "the OOM killer acted");
    assert!(host_volume_mounts(&node).is_empty());

    // Another pod on the node is served as usual.
    let other = Pod::new("default", "other", "vault-auth");
    let target = publish(&driver, &node, &vault, &other, true).await;
    support::assert_walkthrough_page(&target);
    support::unpublish_ok(driver.node().await, other.unpublish(&node, "v")).await;
    driver.terminate().await;
}
