//! The HTTP/1.1 listener. Each run owns its listening socket and a registry
//! of open connections so that `shutdown` can cut everything off
//! synchronously: the listening socket stops accepting at once (new
//! connections are refused) and every open connection is shut down, the
//! way clients see a real Vault outage.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{Shutdown, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Request as HttpRequest, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::state::{Request, Shared};

/// Largest request body accepted (Vault's default is 32 MiB).
const MAX_BODY: usize = 32 * 1024 * 1024;

/// Open connections of one run, by id, as duplicated std sockets that
/// exist only so `shutdown` can cut them.
#[derive(Default)]
struct Connections {
    stopped: bool,
    next_id: u64,
    open: HashMap<u64, std::net::TcpStream>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One listening period (between `start`/`restart` and `shutdown`).
pub(crate) struct Run {
    listener: Arc<TcpListener>,
    conns: Arc<Mutex<Connections>>,
    task: JoinHandle<()>,
}

impl Run {
    /// Stops accepting, cuts every open connection and ends the tasks.
    pub(crate) fn stop(self) {
        // SHUT_RD on a listening socket moves it out of LISTEN at once, so
        // the kernel refuses new connections even before the task is gone.
        let _ = socket2::SockRef::from(self.listener.as_ref()).shutdown(Shutdown::Both);
        {
            let mut conns = lock(&self.conns);
            conns.stopped = true;
            for (_, stream) in conns.open.drain() {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
        self.task.abort();
    }
}

/// Binds `addr` (retrying briefly while a just-stopped socket lets go of
/// the port) and starts serving.
pub(crate) async fn bind_and_serve(
    shared: Arc<Shared>,
    addr: SocketAddr,
) -> std::io::Result<(Run, SocketAddr)> {
    let mut attempts = 0;
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempts < 50 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let local = listener.local_addr()?;
    let listener = Arc::new(listener);
    let conns = Arc::new(Mutex::new(Connections::default()));
    let task = tokio::spawn(accept_loop(
        Arc::clone(&listener),
        Arc::clone(&conns),
        shared,
    ));
    Ok((
        Run {
            listener,
            conns,
            task,
        },
        local,
    ))
}

async fn accept_loop(
    listener: Arc<TcpListener>,
    conns: Arc<Mutex<Connections>>,
    shared: Arc<Shared>,
) {
    // Dropping the JoinSet (when this task is aborted) aborts every
    // connection task with it.
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    if let Some((id, stream)) = register(&conns, stream) {
                        let conns = Arc::clone(&conns);
                        let shared = Arc::clone(&shared);
                        tasks.spawn(async move {
                            serve_connection(stream, shared).await;
                            lock(&conns).open.remove(&id);
                        });
                    }
                }
                Err(e) if lock(&conns).stopped => {
                    tracing::debug!(error = %e, "vault-double listener stopped");
                    break;
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "vault-double accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

/// Records a duplicate of the socket for `shutdown`; `None` if the run
/// was stopped meanwhile (the stream is then closed).
fn register(conns: &Mutex<Connections>, stream: TcpStream) -> Option<(u64, TcpStream)> {
    let _ = stream.set_nodelay(true);
    let std_stream = stream.into_std().ok()?;
    let killer = std_stream.try_clone().ok()?;
    let mut guard = lock(conns);
    if guard.stopped {
        let _ = killer.shutdown(Shutdown::Both);
        return None;
    }
    let id = guard.next_id;
    guard.next_id += 1;
    guard.open.insert(id, killer);
    drop(guard);
    TcpStream::from_std(std_stream).ok().map(|s| (id, s))
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let service = hyper::service::service_fn(move |req| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(respond(&shared, req).await) }
    });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "vault-double connection ended with an error");
    }
}

fn header_str(req: &HttpRequest<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn respond(shared: &Shared, req: HttpRequest<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().as_str().to_ascii_uppercase();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let token = header_str(&req, "x-vault-token")
        .filter(|t| !t.is_empty())
        .or_else(|| {
            header_str(&req, AUTHORIZATION.as_str()).and_then(|a| {
                a.strip_prefix("Bearer ")
                    .or_else(|| a.strip_prefix("bearer "))
                    .map(|t| t.trim().to_owned())
            })
        });
    let namespace = header_str(&req, "x-vault-namespace");
    let index = header_str(&req, "x-vault-index");
    let bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return build(
                413,
                Some(br#"{"errors":["http: request body too large"]}"#.to_vec()),
            );
        }
    };
    let body = if bytes.iter().all(u8::is_ascii_whitespace) {
        Ok(None)
    } else {
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| e.to_string())
    };
    let head = method == "HEAD";
    let delay = shared.latency_for(&path);
    let reply = shared.handle(Request {
        method,
        path,
        query,
        token,
        namespace,
        index,
        body,
    });
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let body = reply
        .body
        .filter(|_| !head)
        .map(|v| serde_json::to_vec(&v).unwrap_or_default());
    let mut resp = build(reply.status, body);
    for (name, value) in reply.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            resp.headers_mut().insert(name, value);
        }
    }
    resp
}

fn build(status: u16, body: Option<Vec<u8>>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.unwrap_or_default())));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status != 204 && !(300..400).contains(&status) {
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    resp
}
