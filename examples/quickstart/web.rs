//! A tiny static file server standing in for the walkthrough's nginx: it
//! serves the volume's folder read-only on `127.0.0.1:8080` (or the next
//! free port), `/` → `index.html`, and refuses any path with `..`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The first port tried; the next ones follow if it is taken.
const FIRST_PORT: u16 = 8080;
/// How many ports from [`FIRST_PORT`] are tried before any free port.
const PORTS_TRIED: u16 = 100;

/// The running server.
pub struct Web {
    /// `http://127.0.0.1:PORT/`.
    pub url: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Web {
    /// Serves `root` on the first free port from 8080.
    pub async fn start(root: PathBuf) -> anyhow::Result<Self> {
        let listener = bind().await?;
        let addr = listener.local_addr()?;
        let router = Router::new()
            .fallback(serve_file)
            .with_state(Arc::new(root));
        let stop = CancellationToken::new();
        let signal = stop.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { signal.cancelled().await })
                .await
        });
        Ok(Self {
            url: format!("http://{addr}/"),
            stop,
            task,
        })
    }

    /// Stops listening; open connections get 2 s to finish.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        let mut task = self.task;
        if let Ok(joined) = tokio::time::timeout(Duration::from_secs(2), &mut task).await {
            joined.context("the web server task failed")??;
        } else {
            task.abort();
        }
        Ok(())
    }
}

async fn bind() -> anyhow::Result<TcpListener> {
    for port in FIRST_PORT..FIRST_PORT + PORTS_TRIED {
        match TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await {
            Ok(listener) => return Ok(listener),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {}
            Err(e) => return Err(e).context(format!("cannot listen on 127.0.0.1:{port}")),
        }
    }
    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .context("cannot listen on any loopback port")
}

/// GET/HEAD of a file under the root.
async fn serve_file(State(root): State<Arc<PathBuf>>, method: Method, uri: Uri) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n").into_response();
    }
    let Some(relative) = relative_path(uri.path()) else {
        return (StatusCode::BAD_REQUEST, "refusing a path with `..`\n").into_response();
    };
    let path = root.join(relative);
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            let mut response = bytes.into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, content_type(&path));
            // The page changes in place; a reload must show the new file.
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory
            ) =>
        {
            (StatusCode::NOT_FOUND, "not found\n").into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// The file a request path names, relative to the root: `None` if the
/// path contains `..` anywhere; empty segments are dropped (so the result
/// is never absolute) and a trailing `/` means `index.html`.
fn relative_path(path: &str) -> Option<PathBuf> {
    if path.contains("..") || path.contains('\0') {
        return None;
    }
    let mut out: PathBuf = path
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    if path.ends_with('/') || out.as_os_str().is_empty() {
        out.push("index.html");
    }
    Some(out)
}

fn content_type(path: &Path) -> HeaderValue {
    HeaderValue::from_static(match path.extension().and_then(|e| e.to_str()) {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("json") => "application/json",
        Some("txt" | "conf" | "yaml" | "yml" | "env" | "properties") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    })
}
