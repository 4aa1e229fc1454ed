//! A misbehaving Vault in front of the driver: garbage, huge or
//! incomplete answers and no answer at all, rate limits with
//! `Retry-After`, and TLS with an unknown CA. Each is a clear gRPC status,
//! bounded in time, with nothing mounted, and the pod's token is never
//! sent where it should not go.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::{Harness, INDEX_TEMPLATE, Pod, assert_walkthrough_page, walkthrough_vault};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use vault_double::VaultDouble;

const ROLE: (&str, &str) = ("roleName", "example");

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
    let login_ok = br#"{"request_id":"1","lease_id":"","renewable":false,"lease_duration":0,"data":null,"wrap_info":null,"warnings":null,"auth":{"client_token":"hvs.fake","accessor":"a","policies":["default"],"lease_duration":3600,"renewable":true},"mount_type":""}"#;
    let huge = format!("{{\"errors\":[\"{}\"]}}", "x".repeat(2 * 1024 * 1024));
    let rows: Vec<(&str, Option<Vec<u8>>)> = vec![
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
    ];
    for (what, response) in rows {
        let addr = raw_server(response).await;
        let h = Harness::builder()
            .config(move |config| {
                config.vault_addr = Some(addr.parse().unwrap());
                config.vault_request_timeout = Duration::from_secs(1);
            })
            .start()
            .await;
        let request = h.request("v", &[ROLE, ("template.index.html", INDEX_TEMPLATE)]);
        let status = tokio::time::timeout(Duration::from_secs(30), h.send_err(request))
            .await
            .unwrap_or_else(|_| panic!("{what}: the publish was not bounded in time"));
        assert_eq!(
            status.code(),
            Code::Unavailable,
            "{what}: {}",
            status.message()
        );
        assert!(h.node.volumes().is_empty(), "{what}");
        h.stop().await;
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
    let h = Harness::builder()
        .config(move |config| {
            config.vault_addr = Some(format!("http://{addr}").parse().unwrap());
        })
        .start()
        .await;
    let request = h.request("v", &[ROLE, ("template.index.html", INDEX_TEMPLATE)]);
    let status = h.send_err(request).await;
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    assert!(
        status.message().contains("no `data`"),
        "{}",
        status.message()
    );
    assert!(h.node.volumes().is_empty());
    h.stop().await;
}

/// 429s: a publish retries after Vault's `Retry-After` and succeeds.
#[tokio::test]
async fn rate_limits_honour_retry_after() {
    let vault = walkthrough_vault().await;
    // Vault sends Retry-After only with the quota's response headers on.
    vault.set_rate_limit_headers(Some(vault_double::RetryAfterFormat::Seconds));
    let h = Harness::builder().vault(vault).start().await;
    h.vault.rate_limit_next(1, 1);
    h.publish_ok(&[ROLE, ("template.index.html", INDEX_TEMPLATE)])
        .await;
    let requests = h.vault.requests();
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

    h.vault.rate_limit_next(50, 1);
    let other = Pod::new("default", "storm", "vault-auth");
    let status = h
        .send_err(h.request_for(
            &other,
            "v",
            &[ROLE, ("template.index.html", INDEX_TEMPLATE)],
        ))
        .await;
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    assert!(
        status.message().contains("rate limit quota exceeded"),
        "{}",
        status.message()
    );
    h.stop().await;
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
    let vault = walkthrough_vault().await;
    let (addr, ca_pem) = tls_vault(&vault).await;
    let tls_addr = addr.clone();
    let mut h = Harness::builder()
        .vault(vault)
        .config(move |config| config.vault_addr = Some(tls_addr.parse().unwrap()))
        .start()
        .await;
    let attrs = [ROLE, ("template.index.html", INDEX_TEMPLATE)];
    let status = h.send_err(h.request("v", &attrs)).await;
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    assert!(
        status.message().to_lowercase().contains("certificate"),
        "{}",
        status.message()
    );
    assert!(
        h.vault.requests().is_empty(),
        "nothing reached Vault through the untrusted TLS"
    );

    let ca = h.node.root.join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    h.restart(|config| {
        config.vault_addr = Some(addr.parse().unwrap());
        config.vault_ca_cert = Some(ca);
    })
    .await;
    let target = h.publish_ok(&attrs).await;
    assert_walkthrough_page(&target);
    h.stop().await;
}
