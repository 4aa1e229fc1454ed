//! Hostile input and faults: every refusal is `INVALID_ARGUMENT` (or the
//! documented code) with nothing written anywhere and, where it matters,
//! nothing sent to Vault; a misbehaving Vault gives a clear status; crashes
//! and races leave no half-published volume, leaked mount or state file.

mod support;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use support::{
    CREDS_TEMPLATE, Driver, DriverProcess, INDEX_TEMPLATE, Node, Pod, assert_walkthrough_page,
    can_mount, driver_config, dynamic_vault, expected_index, publish_ok, publish_walkthrough,
    wait_for, walkthrough_vault,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use vault_double::{DynamicRole, VaultDouble};

const ROLE: (&str, &str) = ("roleName", "example");

fn state_files(node: &Node) -> usize {
    std::fs::read_dir(node.state_dir().join("volumes")).map_or(0, Iterator::count)
}

/// Asserts a refusal with `code` and that nothing was mounted, written or
/// sent to Vault's login.
async fn assert_refused(
    driver: &Driver,
    node: &Node,
    vault: &VaultDouble,
    request: vault_csi_driver::proto::NodePublishVolumeRequest,
    code: Code,
    what: &str,
) -> String {
    let target = PathBuf::from(&request.target_path);
    let logins = vault.count("POST", "/v1/auth/kubernetes/login");
    let status = driver
        .node()
        .await
        .node_publish_volume(request)
        .await
        .unwrap_err();
    assert_eq!(status.code(), code, "{what}: {}", status.message());
    assert!(node.mounts().is_empty(), "{what}: something was mounted");
    assert_eq!(state_files(node), 0, "{what}: state was written");
    assert_eq!(
        vault.count("POST", "/v1/auth/kubernetes/login"),
        logins,
        "{what}: Vault was contacted"
    );
    if target.starts_with(node.root.join("kubelet/pods")) {
        assert!(
            !target.join("..data").exists(),
            "{what}: files were written"
        );
    }
    status.message().to_owned()
}

/// Template paths that escape, collide or are reserved.
#[tokio::test]
async fn hostile_template_paths_are_refused() {
    if !can_mount() {
        return;
    }
    let node = Node::new();
    let vault = walkthrough_vault().await;
    let driver = Driver::start(driver_config(&node, &vault)).await;
    let pod = Pod::walkthrough();
    let long_element = format!("template.{}", "e".repeat(256));
    let long_path = format!("template.{}", vec!["p"; 2100].join("/"));
    let many: Vec<(String, String)> = (0..=vault_csi_driver::volume::MAX_FILES_PER_VOLUME)
        .map(|i| (format!("template.f{i}"), "x".to_owned()))
        .collect();
    let rows: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("absolute", vec![("template./etc/cron.d/x", "x")]),
        ("dotdot anywhere", vec![("template.a/../x", "x")]),
        ("escaping", vec![("template.a/../../x", "x")]),
        ("leading dotdot", vec![("template../x", "x")]),
        ("reserved ..data", vec![("template...data", "x")]),
        ("reserved ..prefix", vec![("template...2024_01_01", "x")]),
        ("empty element", vec![("template.a//b", "x")]),
        ("trailing slash", vec![("template.a/", "x")]),
        ("NUL", vec![("template.a\0b", "x")]),
        ("element over 255", vec![(long_element.as_str(), "x")]),
        ("path over 4096", vec![(long_path.as_str(), "x")]),
        (
            "file and directory",
            vec![("template.a", "x"), ("template.a/b", "y")],
        ),
        (
            "token file duplicates a template",
            vec![("template.a", "x"), ("tokenFile", "a")],
        ),
        ("no template", vec![]),
    ];
    for (what, extra) in rows {
        let mut attrs = vec![ROLE];
        attrs.extend(extra);
        let request = pod.publish(&node, &vault, "v", &attrs);
        assert_refused(&driver, &node, &vault, request, Code::InvalidArgument, what).await;
    }
    let mut request = pod.publish(&node, &vault, "v", &[ROLE]);
    request.volume_context.extend(many);
    let message = assert_refused(
        &driver,
        &node,
        &vault,
        request,
        Code::InvalidArgument,
        "too many files",
    )
    .await;
    assert!(message.contains("at most 64"), "{message}");
    driver.stop().await;
}

/// Target paths outside kubelet's pods directory, with `..`, through a
/// symlink or a file, or a symlink at the target: refused, never followed.
#[tokio::test]
async fn hostile_target_paths_are_refused_and_never_followed() {
    if !can_mount() {
        return;
    }
    let node = Node::new();
    let vault = walkthrough_vault().await;
    let driver = Driver::start(driver_config(&node, &vault)).await;
    let pod = Pod::walkthrough();
    let attrs = [ROLE, ("template.index.html", INDEX_TEMPLATE)];
    let outside = node.root.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let pods = node.kubelet_dir().join("pods");

    // Parent is a symlink to a directory outside the kubelet tree.
    let link_parent = pods.join("uid-link/volumes/kubernetes.io~csi");
    std::fs::create_dir_all(&link_parent).unwrap();
    std::os::unix::fs::symlink(&outside, link_parent.join("vol")).unwrap();
    // Parent is a regular file.
    let file_parent = pods.join("uid-file/volumes/kubernetes.io~csi");
    std::fs::create_dir_all(&file_parent).unwrap();
    std::fs::write(file_parent.join("vol"), b"file").unwrap();
    // A symlink sits at the target itself.
    let link_target = pods.join("uid-target/volumes/kubernetes.io~csi/vol");
    std::fs::create_dir_all(&link_target).unwrap();
    std::os::unix::fs::symlink(&outside, link_target.join("mount")).unwrap();

    let rows = [
        (
            "relative",
            "var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/v/mount".to_owned(),
        ),
        (
            "outside the kubelet dir",
            outside.join("mount").display().to_string(),
        ),
        (
            "plugins instead of pods",
            node.kubelet_dir()
                .join("plugins/x/mount")
                .display()
                .to_string(),
        ),
        (
            "dotdot",
            format!("{}/u/../../../outside/mount", pods.display()),
        ),
        (
            "parent is a symlink",
            link_parent.join("vol/mount").display().to_string(),
        ),
        (
            "parent is a file",
            file_parent.join("vol/mount").display().to_string(),
        ),
        (
            "target is a symlink",
            link_target.join("mount").display().to_string(),
        ),
        (
            "parent missing",
            pods.join("nope/volumes/kubernetes.io~csi/vol/mount")
                .display()
                .to_string(),
        ),
    ];
    for (what, target) in rows {
        let mut request = pod.publish(&node, &vault, "v", &attrs);
        request.target_path = target;
        assert_refused(&driver, &node, &vault, request, Code::InvalidArgument, what).await;
        assert!(
            std::fs::read_dir(&outside).unwrap().next().is_none(),
            "{what}: something was written outside"
        );
    }
    assert!(
        std::fs::symlink_metadata(link_target.join("mount"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    driver.stop().await;
}

/// Volume ids, templates and attributes that must be refused.
#[tokio::test]
async fn hostile_ids_templates_and_attributes_are_refused() {
    if !can_mount() {
        return;
    }
    let node = Node::new();
    let vault = walkthrough_vault().await;
    let evil = VaultDouble::start().await;
    vault_double::seed_walkthrough(&evil);
    let driver = Driver::start(driver_config(&node, &vault)).await;
    let pod = Pod::walkthrough();
    let template = ("template.index.html", INDEX_TEMPLATE);

    for (what, id) in [
        ("empty id", String::new()),
        ("long id", "x".repeat(129)),
        ("slash", "a/b".into()),
        ("NUL", "a\0b".into()),
    ] {
        let mut request = pod.publish(&node, &vault, "v", &[ROLE, template]);
        request.volume_id = id;
        assert_refused(&driver, &node, &vault, request, Code::InvalidArgument, what).await;
    }

    let big = "x".repeat(vault_csi_driver::render::MAX_TEMPLATE_BYTES + 1);
    let many_secrets: String =
        (0..=vault_csi_driver::render::MAX_SECRETS_PER_VOLUME).fold(String::new(), |mut acc, i| {
            let _ = write!(
                acc,
                "{{{{#with (secret \"secret/data/myapp/s{i}\")}}}}{{{{/with}}}}"
            );
            acc
        });
    let template_rows = [
        ("template too large", big.as_str(), "limit"),
        ("parse error", "line one\n{{#with x}}\nunclosed", "line 3"),
        ("helper misuse", "{{base64Encode}}", "exactly one argument"),
        ("too many secrets", many_secrets.as_str(), "at most 32"),
    ];
    for (what, source, expect) in template_rows {
        let request = pod.publish(&node, &vault, "v", &[ROLE, ("template.f", source)]);
        let logins = vault.count("POST", "/v1/auth/kubernetes/login");
        let status = driver
            .node()
            .await
            .node_publish_volume(request)
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{what}: {}",
            status.message()
        );
        assert!(
            status.message().contains(expect),
            "{what}: {}",
            status.message()
        );
        assert!(
            node.mounts().is_empty() && state_files(&node) == 0,
            "{what}"
        );
        if what != "helper misuse" {
            assert_eq!(
                vault.count("POST", "/v1/auth/kubernetes/login"),
                logins,
                "{what}: refused before Vault"
            );
        }
    }

    // vaultAddress outside the allow-list: the pod's token never goes there.
    let request = pod.publish(
        &node,
        &vault,
        "v",
        &[ROLE, template, ("vaultAddress", &evil.addr())],
    );
    let message = assert_refused(
        &driver,
        &node,
        &vault,
        request,
        Code::InvalidArgument,
        "evil vault",
    )
    .await;
    assert!(
        message.contains("not an allowed Vault address"),
        "{message}"
    );
    assert!(
        evil.requests().is_empty(),
        "nothing was sent to the unlisted Vault"
    );

    let mut request = pod.publish(&node, &vault, "v", &[ROLE, template]);
    request.volume_context.insert(
        "csi.storage.k8s.io/serviceAccount.tokens".into(),
        "{\"vault\":".into(),
    );
    assert_refused(
        &driver,
        &node,
        &vault,
        request,
        Code::InvalidArgument,
        "malformed tokens JSON",
    )
    .await;

    let mut request = pod.publish(&node, &vault, "v", &[ROLE, template]);
    let wrong = serde_json::json!({"vault": {"token": pod.token(&vault, "api", Duration::from_secs(600)), "expirationTimestamp": "2099-01-01T00:00:00Z"}});
    request.volume_context.insert(
        "csi.storage.k8s.io/serviceAccount.tokens".into(),
        wrong.to_string(),
    );
    let message = assert_refused(
        &driver,
        &node,
        &vault,
        request,
        Code::InvalidArgument,
        "wrong audience",
    )
    .await;
    assert!(message.contains("minted for"), "{message}");

    let mut request = pod.publish(&node, &vault, "v", &[ROLE, template]);
    let expired = serde_json::json!({"vault": {"token": pod.token(&vault, "vault", Duration::ZERO), "expirationTimestamp": "2000-01-01T00:00:00Z"}});
    request.volume_context.insert(
        "csi.storage.k8s.io/serviceAccount.tokens".into(),
        expired.to_string(),
    );
    let message = assert_refused(
        &driver,
        &node,
        &vault,
        request,
        Code::InvalidArgument,
        "expired token",
    )
    .await;
    assert!(message.contains("expired"), "{message}");
    driver.stop().await;
}

/// Rendered output larger than the volume may hold: refused at publish;
/// during a refresh the previous files stay.
#[tokio::test]
async fn oversized_output_fails_cleanly_and_keeps_previous_files() {
    if !can_mount() {
        return;
    }
    let node = Node::new();
    let vault = walkthrough_vault().await;
    let mut config = driver_config(&node, &vault);
    config.volume_size_bytes = 64 * 1024;
    let driver = Driver::start(config).await;
    let attrs = [
        ROLE,
        ("template.index.html", INDEX_TEMPLATE),
        ("staticSecretRefreshInterval", "1s"),
    ];
    let (_, target) = publish_walkthrough(&node, &vault, &driver, &attrs).await;

    vault.kv2_put(
        "secret",
        "myapp/config",
        serde_json::json!({"username": "appuser", "password": "p".repeat(40_000)}),
    );
    let reads = vault.count("GET", "/v1/secret/data/myapp/config");
    wait_for(
        "refreshes to try the large secret",
        Duration::from_secs(10),
        || vault.count("GET", "/v1/secret/data/myapp/config") >= reads + 2,
    )
    .await;
    assert_walkthrough_page(&target);

    let other = Pod::new("default", "big", "vault-auth");
    let request = other.publish(&node, &vault, "v", &attrs);
    let status = driver
        .node()
        .await
        .node_publish_volume(request.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert!(status.message().contains("limit"), "{}", status.message());
    assert!(!PathBuf::from(&request.target_path).exists());
    assert_eq!(node.mounts().len(), 1, "only the first volume is mounted");
    driver.stop().await;
}

/// A template that nests loops over Vault data asks for a billion
/// iterations with no output; the render budget stops it with a status that
/// names the limit, nothing is left behind, and the driver keeps serving
/// other pods (rendering runs off the gRPC workers).
#[tokio::test]
async fn loops_over_large_vault_data_are_cut_off() {
    if !can_mount() {
        return;
    }
    let node = Node::new();
    let vault = walkthrough_vault().await;
    let items: Vec<u32> = (0..1000).collect();
    vault.kv2_put(
        "secret",
        "myapp/list",
        serde_json::json!({ "items": items }),
    );
    let driver = Driver::start(driver_config(&node, &vault)).await;
    let hostile = Pod::new("default", "loops", "vault-auth");
    let template = r#"{{#with (secret "secret/data/myapp/list")}}{{#each data.data.items}}{{#each ../data.data.items}}{{#each ../../data.data.items}}{{/each}}{{/each}}{{/each}}{{/with}}"#;
    let request = hostile.publish(&node, &vault, "loops", &[ROLE, ("template.x", template)]);
    let mut client = driver.node().await;
    let publish = tokio::spawn(async move { client.node_publish_volume(request).await });

    // Meanwhile an ordinary pod is served.
    let pod = Pod::walkthrough();
    let request = pod.publish(
        &node,
        &vault,
        "ok",
        &[ROLE, ("template.index.html", INDEX_TEMPLATE)],
    );
    let target = publish_ok(driver.node().await, request).await;
    assert_walkthrough_page(&target);

    let status = tokio::time::timeout(Duration::from_secs(60), publish)
        .await
        .expect("the render budget stops the loops")
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert!(
        status.message().contains("iterations"),
        "{}",
        status.message()
    );
    assert_eq!(
        node.mounts().len(),
        1,
        "only the ordinary pod's volume is mounted"
    );
    assert_eq!(
        state_files(&node),
        1,
        "only the ordinary pod's volume has state"
    );
}

/// A raw HTTP server that answers every request with `response` (or never
/// answers, when `None`).
async fn raw_server(response: Option<Vec<u8>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let response = response.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = socket.read(&mut buf).await;
                match response {
                    Some(bytes) => {
                        let _ = socket.write_all(&bytes).await;
                        let _ = socket.shutdown().await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(3600)).await,
                }
            });
        }
    });
    format!("http://{addr}")
}

fn http_response(status: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A Vault that sends garbage, huge bodies, no `data`, or never answers:
/// each is a clear `UNAVAILABLE`, bounded in time, with nothing mounted.
#[tokio::test]
async fn misbehaving_vaults_give_clear_statuses() {
    if !can_mount() {
        return;
    }
    let node = Node::new();
    let vault = walkthrough_vault().await;
    let login_ok = br#"{"request_id":"1","lease_id":"","renewable":false,"lease_duration":0,"data":null,"wrap_info":null,"warnings":null,"auth":{"client_token":"hvs.fake","accessor":"a","policies":["default"],"lease_duration":3600,"renewable":true},"mount_type":""}"#;
    let huge = format!("{{\"errors\":[\"{}\"]}}", "x".repeat(2 * 1024 * 1024));
    let rows: Vec<(&str, Option<Vec<u8>>, &str)> = vec![
        (
            "non-JSON body",
            Some(http_response("200 OK", b"<html>hello</html>")),
        ),
        (
            "body over the size limit",
            Some(http_response("200 OK", huge.as_bytes())),
        ),
        (
            "missing auth",
            Some(http_response("200 OK", br#"{"data":{}}"#)),
        ),
        ("never answers", None),
    ]
    .into_iter()
    .map(|(what, r)| (what, r, "Vault"))
    .collect();
    for (what, response, _) in rows {
        let addr = raw_server(response).await;
        let mut config = driver_config(&node, &vault);
        config.vault_addr = Some(addr.parse().unwrap());
        config.vault_request_timeout = Duration::from_secs(1);
        let driver = Driver::start(config).await;
        let pod = Pod::walkthrough();
        let request = pod.publish(
            &node,
            &vault,
            "v",
            &[ROLE, ("template.index.html", INDEX_TEMPLATE)],
        );
        let status = tokio::time::timeout(
            Duration::from_secs(30),
            driver.node().await.node_publish_volume(request),
        )
        .await
        .unwrap_or_else(|_| panic!("{what}: the publish was not bounded in time"))
        .unwrap_err();
        assert_eq!(
            status.code(),
            Code::Unavailable,
            "{what}: {}",
            status.message()
        );
        assert!(node.mounts().is_empty(), "{what}");
        driver.stop().await;
    }

    // Login works but the secret read has no `data`.
    let no_data = http_response("200 OK", br#"{"request_id":"1","lease_id":"","renewable":false,"lease_duration":0,"data":null,"auth":null}"#);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let login = http_response("200 OK", login_ok);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let (login, no_data) = (login.clone(), no_data.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                let reply = if head.starts_with("POST /v1/auth/") {
                    login
                } else {
                    no_data
                };
                let _ = socket.write_all(&reply).await;
            });
        }
    });
    let mut config = driver_config(&node, &vault);
    config.vault_addr = Some(format!("http://{addr}").parse().unwrap());
    let driver = Driver::start(config).await;
    let request = Pod::walkthrough().publish(
        &node,
        &vault,
        "v",
        &[ROLE, ("template.index.html", INDEX_TEMPLATE)],
    );
    let status = driver
        .node()
        .await
        .node_publish_volume(request)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    assert!(
        status.message().contains("no `data`"),
        "{}",
        status.message()
    );
    assert!(node.mounts().is_empty());
    driver.stop().await;
}

/// 429s: a publish retries after Vault's `Retry-After` and succeeds.
#[tokio::test]
async fn rate_limits_honour_retry_after() {
    if !can_mount() {
        return;
    }
    let node = Node::new();
    let vault = walkthrough_vault().await;
    // Vault sends Retry-After only with the quota's response headers on.
    vault.set_rate_limit_headers(Some(vault_double::RetryAfterFormat::Seconds));
    let driver = Driver::start(driver_config(&node, &vault)).await;
    vault.rate_limit_next(1, 1);
    let pod = Pod::walkthrough();
    driver
        .node()
        .await
        .node_publish_volume(pod.publish(
            &node,
            &vault,
            "v",
            &[ROLE, ("template.index.html", INDEX_TEMPLATE)],
        ))
        .await
        .unwrap();
    let requests = vault.requests();
    let limited = requests
        .iter()
        .find(|r| r.status == 429)
        .expect("a 429 was served");
    let retry = requests
        .iter()
        .find(|r| r.path == limited.path && r.status == 200)
        .unwrap();
    let waited = retry.at.duration_since(limited.at).unwrap();
    assert!(
        waited >= Duration::from_millis(990),
        "the retry came {waited:?} after the 429, before Retry-After"
    );

    vault.rate_limit_next(50, 1);
    let other = Pod::new("default", "storm", "vault-auth");
    let status = driver
        .node()
        .await
        .node_publish_volume(other.publish(
            &node,
            &vault,
            "v",
            &[ROLE, ("template.index.html", INDEX_TEMPLATE)],
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    assert!(
        status.message().contains("rate limit quota exceeded"),
        "{}",
        status.message()
    );
    driver.stop().await;
}

/// A TLS proxy in front of the double with a self-signed certificate.
async fn tls_vault(vault: &VaultDouble) -> (String, String) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert_pem = cert.cert.pem();
    let chain = vec![cert.cert.der().clone()];
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = vault.socket_addr();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (format!("https://127.0.0.1:{}", addr.port()), cert_pem)
}

/// TLS with an unknown CA is refused (`UNAVAILABLE`, the token never sent);
/// with `--vault-ca-cert` it works.
#[tokio::test]
async fn tls_with_an_unknown_ca_is_refused_unless_configured() {
    if !can_mount() {
        return;
    }
    let node = Node::new();
    let vault = walkthrough_vault().await;
    let (addr, ca_pem) = tls_vault(&vault).await;
    let mut config = driver_config(&node, &vault);
    config.vault_addr = Some(addr.parse().unwrap());
    let driver = Driver::start(config.clone()).await;
    let pod = Pod::walkthrough();
    let attrs = [ROLE, ("template.index.html", INDEX_TEMPLATE)];
    let status = driver
        .node()
        .await
        .node_publish_volume(pod.publish(&node, &vault, "v", &attrs))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    assert!(
        status.message().to_lowercase().contains("certificate"),
        "{}",
        status.message()
    );
    assert!(
        vault.requests().is_empty(),
        "nothing reached Vault through the untrusted TLS"
    );
    driver.stop().await;

    let ca = node.root.join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    config.vault_ca_cert = Some(ca);
    let driver = Driver::start(config).await;
    let request = pod.publish(&node, &vault, "v", &attrs);
    let target = publish_ok(driver.node().await, request).await;
    assert_walkthrough_page(&target);
    driver.stop().await;
}

/// 200 concurrent publishes and unpublishes of different and of the same
/// volumes: only OK or `ABORTED`, no deadlock, and afterwards no leaked mount
/// or state file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishes_and_unpublishes_leak_nothing() {
    if !can_mount() {
        return;
    }
    let node = Arc::new(Node::new());
    let vault = walkthrough_vault().await;
    let driver = Driver::start(driver_config(&node, &vault)).await;
    let shared = Pod::walkthrough();
    let attrs = [ROLE, ("template.index.html", INDEX_TEMPLATE)];
    let mut tasks = Vec::new();
    for i in 0..200 {
        let pod = if i % 2 == 0 {
            Pod::new("default", &format!("p{i}"), "vault-auth")
        } else {
            shared.clone()
        };
        let request = pod.publish(&node, &vault, "v", &attrs);
        let unpublish = pod.unpublish(&node, "v");
        let mut client = driver.node().await;
        tasks.push(tokio::spawn(async move {
            let mut codes = Vec::new();
            for r in [
                client.node_publish_volume(request).await.map(drop),
                client.node_unpublish_volume(unpublish).await.map(drop),
            ] {
                codes.push(r.err().map(|s| s.code()));
            }
            codes
        }));
    }
    let all = tokio::time::timeout(Duration::from_secs(120), futures::future::join_all(tasks))
        .await
        .expect("no deadlock");
    let allowed: HashSet<Option<Code>> = [None, Some(Code::Aborted)].into_iter().collect();
    for codes in all {
        for code in codes.unwrap() {
            assert!(allowed.contains(&code), "unexpected {code:?}");
        }
    }
    // The shared volume may still be published if its last call was a publish.
    support::unpublish_ok(driver.node().await, shared.unpublish(&node, "v")).await;
    assert!(
        node.mounts().is_empty(),
        "leaked mounts: {}",
        node.mounts().len()
    );
    assert_eq!(state_files(&node), 0, "leaked state files");
    driver.stop().await;
}

/// `kill -9` at random moments during publishes: after a restart, every
/// volume is either fully published (record, mount, complete files) or
/// entirely absent; nothing half-published survives.
#[tokio::test]
async fn kill_9_mid_publish_leaves_nothing_half_published() {
    if !can_mount() {
        return;
    }
    let node = Node::new();
    let vault = walkthrough_vault().await;
    let attrs = [
        ROLE,
        ("template.index.html", INDEX_TEMPLATE),
        ("template.b/copy", INDEX_TEMPLATE),
    ];
    let mut pods = Vec::new();
    for round in 0..12u64 {
        let driver = DriverProcess::spawn(&node, &vault, "driver.log", &[]).await;
        let pod = Pod::new("default", &format!("crash{round}"), "vault-auth");
        let request = pod.publish(&node, &vault, "v", &attrs);
        let mut client = driver.node().await;
        let call = tokio::spawn(async move { client.node_publish_volume(request).await });
        tokio::time::sleep(Duration::from_micros(round * 700)).await;
        driver.kill9();
        let _ = call.await;
        pods.push(pod);
    }
    let driver = DriverProcess::spawn(&node, &vault, "driver-final.log", &[]).await;
    let mut published = 0;
    for pod in &pods {
        let target = pod.target(&node, "v");
        let mounted = node
            .mounts()
            .iter()
            .any(|m| std::path::Path::new(m) == target);
        let record = node
            .state_dir()
            .join("volumes")
            .join(format!("{}.json", pod.volume_id("v")));
        if mounted {
            published += 1;
            let text = std::fs::read_to_string(&record).expect("a mounted volume has its record");
            assert!(
                text.contains("\"phase\":\"published\""),
                "a mounted volume is fully published"
            );
            assert_walkthrough_page(&target);
            assert_eq!(
                std::fs::read_to_string(target.join("b/copy")).unwrap(),
                expected_index("appuser", "suP3rsec(et!")
            );
        } else {
            assert!(!record.exists(), "an unmounted volume has no record");
            assert!(!target.join("..data").exists());
        }
        let mut client = driver.node().await;
        client
            .node_unpublish_volume(pod.unpublish(&node, "v"))
            .await
            .unwrap();
    }
    eprintln!(
        "{published} of {} volumes survived their crash fully published",
        pods.len()
    );
    assert!(node.mounts().is_empty());
    assert_eq!(state_files(&node), 0);
}

/// `kill -9` while a volume is being refreshed over and over: after each
/// crash its two files come from the same render (old set or new set, never
/// a mix), and the next driver carries on.
#[tokio::test]
async fn kill_9_mid_refresh_leaves_the_old_or_the_new_set() {
    if !can_mount() {
        return;
    }
    let node = Node::new();
    let creds = DynamicRole {
        default_ttl: Duration::from_secs(1),
        max_ttl: Duration::from_secs(600),
        renewable: false,
    };
    let vault = dynamic_vault(creds, Duration::from_secs(3600), Duration::from_secs(7200)).await;
    let attrs = [
        ROLE,
        ("template.creds", CREDS_TEMPLATE),
        ("template.dir/again", CREDS_TEMPLATE),
    ];
    let pod = Pod::walkthrough();
    let target = pod.target(&node, "v");
    let driver = DriverProcess::spawn(&node, &vault, "driver.log", &[]).await;
    driver
        .node()
        .await
        .node_publish_volume(pod.publish(&node, &vault, "v", &attrs))
        .await
        .unwrap();
    let mut driver = Some(driver);
    for round in 0..8u64 {
        tokio::time::sleep(Duration::from_millis(600 + round * 97)).await;
        driver.take().unwrap().kill9();
        let a = std::fs::read_to_string(target.join("creds")).unwrap();
        let b = std::fs::read_to_string(target.join("dir/again")).unwrap();
        assert_eq!(a, b, "round {round}: the files come from different renders");
        assert!(a.starts_with("user=v-"), "round {round}: {a:?}");
        driver =
            Some(DriverProcess::spawn(&node, &vault, &format!("driver-{round}.log"), &[]).await);
    }
    let creds_seen: HashSet<String> = vault.leases().into_iter().map(|l| l.lease_id).collect();
    assert!(
        creds_seen.len() >= 5,
        "refreshes kept happening across restarts"
    );
    let driver = driver.unwrap();
    support::unpublish_ok(driver.node().await, pod.unpublish(&node, "v")).await;
    assert!(node.mounts().is_empty());
}

/// The volume's tmpfs fills up: refreshes fail cleanly with the previous
/// files intact, and succeed again once space is freed. The pod's view is
/// read-only, so the test fills the tmpfs through a writable bind mount of
/// its own, as the driver writes updates.
#[tokio::test]
async fn a_full_tmpfs_keeps_the_previous_files() {
    if !can_mount() {
        return;
    }
    let node = Node::new();
    let vault = walkthrough_vault().await;
    let driver = Driver::start(driver_config(&node, &vault)).await;
    let attrs = [
        ROLE,
        ("template.index.html", INDEX_TEMPLATE),
        ("staticSecretRefreshInterval", "1s"),
    ];
    let (_, target) = publish_walkthrough(&node, &vault, &driver, &attrs).await;

    let view = target.with_file_name("writable-view");
    std::fs::create_dir_all(&view).unwrap();
    let bind = nix::mount::MsFlags::MS_BIND;
    nix::mount::mount(Some(&target), &view, None::<&str>, bind, None::<&str>).unwrap();
    let writable = nix::mount::MsFlags::MS_REMOUNT | bind;
    nix::mount::mount(None::<&str>, &view, None::<&str>, writable, None::<&str>).unwrap();
    // Fill the volume until the kernel says no.
    let filler = view.join("filler");
    let chunk = vec![0u8; 64 * 1024];
    {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&filler).unwrap();
        let error = loop {
            if let Err(e) = file.write_all(&chunk) {
                break e;
            }
        };
        assert_eq!(error.raw_os_error(), Some(nix::libc::ENOSPC));
    }
    vault.kv2_put(
        "secret",
        "myapp/config",
        serde_json::json!({"username": "appuser", "password": "while-full"}),
    );
    let reads = vault.count("GET", "/v1/secret/data/myapp/config");
    wait_for(
        "refreshes against the full volume",
        Duration::from_secs(10),
        || vault.count("GET", "/v1/secret/data/myapp/config") >= reads + 2,
    )
    .await;
    assert_walkthrough_page(&target);
    let leftovers: Vec<_> = std::fs::read_dir(&target)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("..") && n != "..data")
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "failed writes leave no partial directories: {leftovers:?}"
    );

    std::fs::remove_file(&filler).unwrap();
    nix::mount::umount2(&view, nix::mount::MntFlags::MNT_DETACH).unwrap();
    wait_for(
        "the refresh to land once space is free",
        Duration::from_secs(70),
        || {
            std::fs::read_to_string(target.join("index.html"))
                .is_ok_and(|t| t == expected_index("appuser", "while-full"))
        },
    )
    .await;
    driver.stop().await;
}
