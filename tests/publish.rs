//! NodePublishVolume / NodeUnpublishVolume over the real socket, with real
//! volumes (tmpfs mounts as root, plain directories otherwise) and a Vault
//! double speaking Vault's HTTP API: the walkthrough end to end, and the
//! CSI semantics kubelet relies on.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use support::{
    Driver, Harness, INDEX_TEMPLATE, Node, Pod, assert_walkthrough_page, driver_config,
    expected_index, requires_root, walkthrough_vault,
};
use tonic::Code;
use vault_csi_driver::proto::node_service_capability::Type as CapType;
use vault_csi_driver::proto::node_service_capability::rpc::Type as RpcType;
use vault_csi_driver::proto::{
    GetPluginCapabilitiesRequest, GetPluginInfoRequest, NodeGetCapabilitiesRequest,
    NodeGetInfoRequest, NodeStageVolumeRequest, ProbeRequest,
};

const ROLE: (&str, &str) = ("roleName", "example");

/// The walkthrough: nginx's `index.html` rendered byte-exact from
/// `secret/data/myapp/config` into the volume at the target path, then
/// unpublished with the Vault token revoked.
#[tokio::test]
async fn walkthrough_publishes_renders_and_unpublishes() {
    let h = Harness::walkthrough().await;
    let mut client = h.client().await;
    let request = h.request("secrets", &[ROLE, ("template.index.html", INDEX_TEMPLATE)]);
    let target = std::path::PathBuf::from(&request.target_path);

    client.node_publish_volume(request).await.unwrap();

    let page = std::fs::read_to_string(target.join("index.html")).unwrap();
    assert_eq!(page, expected_index("appuser", "suP3rsec(et!"));
    let meta = std::fs::metadata(target.join("index.html")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o444);
    assert_eq!(h.vault.count("POST", "/v1/auth/kubernetes/login"), 1);
    let logins: Vec<_> = h.vault.tokens();
    assert_eq!(logins.len(), 1);
    assert_eq!(logins[0].service_account, "vault-auth");

    client
        .node_unpublish_volume(h.pod.unpublish(&h.node, "secrets"))
        .await
        .unwrap();
    assert!(!target.exists(), "the target directory is removed");
    assert!(
        h.node.volumes().is_empty(),
        "no volume stays: {:?}",
        h.node.volumes()
    );
    assert!(
        h.vault.tokens()[0].revoked,
        "the volume's Vault token is revoked"
    );
    assert_eq!(h.vault.count("POST", "/v1/auth/token/revoke-self"), 1);

    // Unpublishing again (kubelet retries) is fine.
    client
        .node_unpublish_volume(h.pod.unpublish(&h.node, "secrets"))
        .await
        .unwrap();
    h.stop().await;
}

/// The walkthrough's volume is a tmpfs of its own, mounted `nosuid`,
/// `nodev` and `noexec` at the target path.
#[tokio::test]
async fn a_volume_is_a_tmpfs_mounted_nosuid_nodev_noexec() {
    if !requires_root("the volume's tmpfs mount and its options") {
        return;
    }
    let h = Harness::walkthrough().await;
    let target = h
        .publish_ok(&[ROLE, ("template.index.html", INDEX_TEMPLATE)])
        .await;
    let options = support::mount_options(&target).expect("the target is a mount point");
    for flag in ["nosuid", "nodev", "noexec"] {
        assert!(options.contains(flag), "mount options {options}");
    }
    let statfs = nix::sys::statfs::statfs(&target).unwrap();
    assert_eq!(statfs.filesystem_type(), nix::sys::statfs::TMPFS_MAGIC);
    h.unpublish_ok("v").await;
    assert!(h.node.mounts().is_empty(), "{:?}", h.node.mounts());
    h.stop().await;
}

/// A pod whose service account is not bound to the role gets
/// `PERMISSION_DENIED` and nothing is mounted or written.
#[tokio::test]
async fn unbound_service_account_is_denied_and_nothing_is_mounted() {
    let h = Harness::walkthrough().await;
    let attrs = [ROLE, ("template.index.html", INDEX_TEMPLATE)];
    let intruder = Pod::new("default", "intruder", "someone-else");
    let request = h.request_for(&intruder, "secrets", &attrs);
    let target = std::path::PathBuf::from(&request.target_path);

    let status = h.send_err(request).await;
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "{}",
        status.message()
    );
    assert!(
        status
            .message()
            .contains("service account name not authorized"),
        "{}",
        status.message()
    );
    assert!(!target.exists(), "no target directory is left behind");
    assert!(h.node.volumes().is_empty());
    assert!(
        std::fs::read_dir(h.node.state_dir().join("volumes"))
            .unwrap()
            .next()
            .is_none(),
        "no state is left"
    );

    // Bound name, wrong namespace.
    let elsewhere = Pod::new("other", "nginx", "vault-auth");
    let status = h
        .send_err(h.request_for(&elsewhere, "secrets", &attrs))
        .await;
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "{}",
        status.message()
    );
    assert!(h.node.volumes().is_empty());
    h.stop().await;
}

/// A republish (kubelet every minute under `requiresRepublish`) with a
/// rotated token is OK and re-mints nothing; a publish that differs in
/// anything else is `ALREADY_EXISTS`.
#[tokio::test]
async fn republish_refreshes_the_token_and_conflicts_are_already_exists() {
    let h = Harness::walkthrough().await;
    let mut client = h.client().await;
    let attrs = [ROLE, ("template.index.html", INDEX_TEMPLATE)];
    client
        .node_publish_volume(h.request("v", &attrs))
        .await
        .unwrap();
    let reads = h.vault.count("GET", "/v1/secret/data/myapp/config");
    for _ in 0..3 {
        // Each call carries a freshly minted (different) token.
        client
            .node_publish_volume(h.request("v", &attrs))
            .await
            .unwrap();
    }
    assert_eq!(
        h.vault.count("GET", "/v1/secret/data/myapp/config"),
        reads,
        "republish re-reads nothing"
    );
    assert_eq!(
        h.vault.count("POST", "/v1/auth/kubernetes/login"),
        1,
        "republish does not log in again"
    );

    let changed = [ROLE, ("template.index.html", "different")];
    let status = client
        .node_publish_volume(h.request("v", &changed))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{}", status.message());

    let mut readonly = h.request("v", &attrs);
    readonly.readonly = true;
    let status = client.node_publish_volume(readonly).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);

    h.unpublish_ok("v").await;
    h.stop().await;
}

/// Kubernetes 1.35+ (`serviceAccountTokenInSecrets`) passes the tokens in
/// the request's `secrets` field; they are used from there first.
#[tokio::test]
async fn tokens_in_the_secrets_field_are_used() {
    let h = Harness::walkthrough().await;
    let mut request = h.request("v", &[ROLE, ("template.index.html", INDEX_TEMPLATE)]);
    let tokens = request
        .volume_context
        .remove("csi.storage.k8s.io/serviceAccount.tokens")
        .unwrap();
    request
        .secrets
        .insert("csi.storage.k8s.io/serviceAccount.tokens".into(), tokens);
    let target = h.send_ok(request).await;
    assert_walkthrough_page(&target);
    h.unpublish_ok("v").await;
    h.stop().await;
}

/// `readOnly: true` gives the pod a read-only mount; fsGroup makes the files
/// 0440 owned by that group.
#[tokio::test]
async fn readonly_volume_with_fs_group() {
    if !requires_root("a read-only mount, and files chowned to the pod's fsGroup") {
        return;
    }
    let h = Harness::walkthrough().await;
    let mut request = h.request("v", &[ROLE, ("template.conf/app.txt", INDEX_TEMPLATE)]);
    request.readonly = true;
    if let Some(vault_csi_driver::proto::volume_capability::AccessType::Mount(m)) = request
        .volume_capability
        .as_mut()
        .and_then(|c| c.access_type.as_mut())
    {
        m.volume_mount_group = "2000".into();
    }
    let target = h.send_ok(request).await;

    let file = target.join("conf/app.txt");
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o440);
    assert_eq!(meta.gid(), 2000);
    let options = support::mount_options(&target).unwrap();
    assert!(
        options.split(',').any(|o| o == "ro"),
        "mount options {options}"
    );
    let err = std::fs::write(target.join("new"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(nix::libc::EROFS));
    h.unpublish_ok("v").await;
    assert!(h.node.mounts().is_empty());
    h.stop().await;
}

/// Without `readOnly` the pod's view is read-only all the same (as with
/// Kubernetes' Secret volumes): a pod that could write into its volume
/// could plant a `..data` link for the driver to follow on the next update.
#[tokio::test]
async fn writable_requests_still_give_the_pod_a_read_only_view() {
    if !requires_root("the pod's read-only mount (EROFS)") {
        return;
    }
    let h = Harness::walkthrough().await;
    let target = h
        .publish_ok(&[ROLE, ("template.index.html", INDEX_TEMPLATE)])
        .await;
    let options = support::mount_options(&target).unwrap();
    assert!(
        options.split(',').any(|o| o == "ro"),
        "mount options {options}"
    );
    for attempt in [
        std::fs::write(target.join("new"), b"x"),
        std::fs::remove_file(target.join("..data")),
        std::os::unix::fs::symlink("/etc", target.join("..planted")),
    ] {
        assert_eq!(attempt.unwrap_err().raw_os_error(), Some(nix::libc::EROFS));
    }
    assert_walkthrough_page(&target);
    h.unpublish_ok("v").await;
    assert!(h.node.mounts().is_empty());
    h.stop().await;
}

/// Bad input is `INVALID_ARGUMENT` with a message that says what to fix, and
/// nothing is mounted.
#[tokio::test]
async fn invalid_requests_name_what_to_fix() {
    let h = Harness::walkthrough().await;
    let template = ("template.index.html", INDEX_TEMPLATE);

    let typo = h.request("v", &[ROLE, template, ("fileMod", "0400")]);
    let status = h.send_err(typo).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("\"fileMod\""),
        "{}",
        status.message()
    );

    let mut no_token = h.request("v", &[ROLE, template]);
    no_token
        .volume_context
        .remove("csi.storage.k8s.io/serviceAccount.tokens");
    let status = h.send_err(no_token).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("tokenRequests"),
        "{}",
        status.message()
    );

    let other_audience = h.request("v", &[ROLE, template, ("audience", "other")]);
    let status = h.send_err(other_audience).await;
    assert!(
        status.message().contains("audience \"other\""),
        "{}",
        status.message()
    );

    let strict = h.request(
        "v",
        &[
            ROLE,
            (
                "template.f",
                r#"{{#with (secret "secret/data/myapp/config")}}{{data.data.nope}}{{/with}}"#,
            ),
        ],
    );
    let status = h.send_err(strict).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());

    let missing = h.request(
        "v",
        &[
            ROLE,
            (
                "template.f",
                r#"{{#with (secret "secret/data/myapp/nothing")}}x{{/with}}"#,
            ),
        ],
    );
    let status = h.send_err(missing).await;
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "{}",
        status.message()
    );

    // A login Vault refuses is PermissionDenied whatever status the auth
    // method answered with (here 400, as for the jwt method's refusals).
    let bad_role = h.request("v", &[("roleName", "nope"), template]);
    let status = h.send_err(bad_role).await;
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("invalid role name"),
        "{}",
        status.message()
    );

    let mut block = h.request("v", &[ROLE, template]);
    block.volume_capability.as_mut().unwrap().access_type = Some(
        vault_csi_driver::proto::volume_capability::AccessType::Block(
            vault_csi_driver::proto::volume_capability::BlockVolume::default(),
        ),
    );
    assert_eq!(h.send_err(block).await.code(), Code::InvalidArgument);

    let mut no_cap = h.request("v", &[ROLE, template]);
    no_cap.volume_capability = None;
    assert_eq!(h.send_err(no_cap).await.code(), Code::InvalidArgument);

    assert!(h.node.volumes().is_empty());
    h.stop().await;
}

/// Vault down at publish: `UNAVAILABLE` (kubelet retries), nothing mounted.
#[tokio::test]
async fn vault_down_is_unavailable_and_leaves_nothing() {
    let h = Harness::walkthrough().await;
    h.vault.set_fault(Some(vault_double::Fault::sealed()));
    let request = h.request("v", &[ROLE, ("template.index.html", INDEX_TEMPLATE)]);
    let target = std::path::PathBuf::from(&request.target_path);
    let status = h.send_err(request.clone()).await;
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    assert!(status.message().contains("sealed"), "{}", status.message());
    assert!(!target.exists());

    h.vault.set_fault(None);
    h.vault.shutdown();
    let status = h.send_err(request).await;
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    assert!(h.node.volumes().is_empty());
    h.stop().await;
}

/// Identity and node info, capabilities, and `UNIMPLEMENTED` for the rest.
#[tokio::test]
async fn identity_and_node_info() {
    let h = Harness::walkthrough().await;
    let mut identity = h.driver.identity().await;
    let info = identity
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, "vault.csi.driver");
    assert_eq!(info.vendor_version, env!("CARGO_PKG_VERSION"));
    let caps = identity
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(caps.capabilities.is_empty(), "no controller service");
    let probe = identity.probe(ProbeRequest {}).await.unwrap().into_inner();
    assert_eq!(probe.ready, Some(true));

    let mut client = h.client().await;
    let info = client
        .node_get_info(NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, "test-node");
    assert_eq!(info.max_volumes_per_node, 0);
    let caps = client
        .node_get_capabilities(NodeGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    let types: Vec<_> = caps
        .capabilities
        .iter()
        .filter_map(|c| c.r#type.as_ref().map(|CapType::Rpc(rpc)| rpc.r#type))
        .collect();
    assert_eq!(types, vec![i32::from(RpcType::VolumeMountGroup)]);
    let status = client
        .node_stage_volume(NodeStageVolumeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);

    let mode = std::fs::metadata(&h.driver.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the socket is private");
    h.stop().await;
}

/// A stale socket file is replaced; anything else at the path is an error.
#[tokio::test]
async fn stale_socket_is_replaced_but_other_files_are_not() {
    let node = Node::new();
    let vault = walkthrough_vault().await;
    let config = driver_config(&node, &vault);
    std::fs::create_dir_all(node.socket().parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(node.socket()).unwrap());
    let driver = Driver::start(config.clone()).await;
    driver.stop().await;

    std::fs::write(node.socket(), b"not a socket").unwrap();
    let error = vault_csi_driver::app::run(config, tokio_util::sync::CancellationToken::new())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("not a socket"), "{error}");
    assert_eq!(std::fs::read(node.socket()).unwrap(), b"not a socket");
}

/// nginx (Debian's package) serves the rendered page from the volume, as in
/// the walkthrough.
#[tokio::test]
async fn nginx_serves_the_rendered_page() {
    let Ok(nginx) = which("nginx") else {
        assert!(std::env::var("CI").is_err(), "CI must install nginx");
        eprintln!("skipping: nginx is not installed");
        return;
    };
    let h = Harness::walkthrough().await;
    let node = &h.node;
    let target = h
        .publish_ok(&[ROLE, ("template.index.html", INDEX_TEMPLATE)])
        .await;

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = node.root.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\npid {root}/nginx.pid;\nerror_log {root}/nginx-error.log;\nevents {{}}\nhttp {{\n access_log off;\n server {{\n  listen 127.0.0.1:{port};\n  root {target};\n }}\n}}\n",
            root = node.root.display(),
            target = target.display()
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(nginx)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(node.root.join("nginx-error.log"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/index.html");
    let mut body = None;
    for _ in 0..250 {
        if let Ok(response) = reqwest::get(&url).await
            && response.status().is_success()
        {
            body = Some(response.text().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill().await;
    let body = body.unwrap_or_else(|| {
        panic!(
            "nginx never served the page: {}",
            std::fs::read_to_string(node.root.join("nginx-error.log")).unwrap_or_default()
        )
    });
    assert_eq!(body, expected_index("appuser", "suP3rsec(et!"));
    assert!(body.contains("<pre>password: suP3rsec(et!</pre>"));
    h.unpublish_ok("v").await;
    h.stop().await;
}

fn which(binary: &str) -> Result<std::path::PathBuf, ()> {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
    {
        let candidate = std::path::Path::new(dir).join(binary);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(())
}
