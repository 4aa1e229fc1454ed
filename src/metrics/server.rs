//! The `--metrics-addr` listener: `/metrics`, `/healthz`, `/readyz`.
//!
//! The listener is reachable from the pod network, so it is built to cost
//! the driver little whatever a client does:
//!
//! - At most [`ListenerLimits::max_connections`] connections are open at
//!   once (a semaphore). When all are taken, the oldest connection that is
//!   not in the middle of answering a request (one waiting for its request
//!   head, or idle between keep-alive requests) is closed to make room, so a
//!   client holding connections open cannot lock out the readiness probe
//!   or the scraper. If every connection is busy answering, the new one is
//!   closed at once; nothing waits in a queue of ours.
//! - Every connection has one deadline at a time: its request head must be
//!   complete within the header timeout of being accepted; answering a
//!   request may take the request timeout; after a response, the next
//!   request must arrive (and the response be taken) within the idle
//!   timeout. A connection past its deadline is dropped.
//! - Request heads are limited to 16 KiB of buffer; bodies are never read.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service as _;

use super::Metrics;

/// How much the listener lets clients hold. The defaults suit a node's
/// scrapers and probes, which open a connection or two at a time and send
/// their request at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Most connections open at once (at least 1).
    pub max_connections: usize,
    /// Time from accepting a connection until its request head is complete.
    pub header_timeout: Duration,
    /// Time from a complete request head until the response is handed over.
    pub request_timeout: Duration,
    /// Time after a response for the client to take it and complete its
    /// next request head on the same connection.
    pub idle_timeout: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            max_connections: 64,
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(15),
        }
    }
}

/// hyper's smallest allowed read buffer is 8 KiB; the endpoints take no
/// body and a probe's or scraper's head is a few hundred bytes.
const MAX_BUF_SIZE: usize = 16 * 1024;

/// How long the accept loop waits for an evicted connection to hand back
/// its slot (it is dropped at its task's next poll, so microseconds).
const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// Pause after an accept error that is not the client's (EMFILE, ENFILE,
/// ENOBUFS), so the loop does not spin while the process is out of them.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves the endpoints on `listener` until `shutdown` fires, within
/// `limits`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    limits: ListenerLimits,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(Arc::clone(&metrics));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let open = Arc::new(OpenConnections::default());
    let tasks = TaskTracker::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true)
        .max_buf_size(MAX_BUF_SIZE)
        // Enforced, with the idle and request timeouts, by each
        // connection's deadline below.
        .header_read_timeout(None);
    let mut next_id = 0_u64;
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) if is_per_connection(&error) => continue,
                Err(error) => {
                    tracing::debug!(%error, "The metrics listener could not accept a connection");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let Some(permit) = admit(&slots, &open, &metrics).await else {
            metrics.observe_listener_drop("refused");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let conn = open.insert(next_id, limits.header_timeout, &shutdown);
        let connection = http.serve_connection(
            TokioIo::new(stream),
            ConnService {
                app: app.clone(),
                conn: Arc::clone(&conn),
                limits,
            },
        );
        let open = Arc::clone(&open);
        let metrics = Arc::clone(&metrics);
        tasks.spawn(async move {
            let timed_out = drive(connection, &conn).await;
            if timed_out {
                metrics.observe_listener_drop("timeout");
            }
            open.remove(conn.id);
            drop(permit);
        });
    }
    tasks.close();
    tasks.wait().await;
}

/// Binds the listener (separately, so a bad address fails start-up).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Errors that concern only the connection being accepted.
fn is_per_connection(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// A slot for a new connection: a free one, or one freed by closing the
/// oldest idle connection. `None` when every connection is busy answering.
async fn admit(
    slots: &Arc<Semaphore>,
    open: &OpenConnections,
    metrics: &Metrics,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(permit) = Arc::clone(slots).try_acquire_owned() {
        return Some(permit);
    }
    if !open.evict_oldest_idle() {
        return None;
    }
    metrics.observe_listener_drop("evicted");
    tokio::time::timeout(EVICTION_WAIT, Arc::clone(slots).acquire_owned())
        .await
        .ok()
        .and_then(Result::ok)
}

/// hyper's HTTP/1 connection with the driver's router.
type Connection = hyper::server::conn::http1::Connection<TokioIo<TcpStream>, ConnService>;

/// Polls one connection until it ends, is evicted, or misses its deadline
/// (then returns true). Shutdown lets a request in flight finish, within
/// the deadline.
async fn drive(connection: Connection, conn: &Conn) -> bool {
    let mut connection = std::pin::pin!(connection);
    let mut deadline = conn.deadline.subscribe();
    let mut shutting_down = false;
    loop {
        let until = *deadline.borrow_and_update();
        tokio::select! {
            _ = connection.as_mut() => return false,
            () = conn.evicted.cancelled() => return false,
            () = conn.shutdown.cancelled(), if !shutting_down => {
                shutting_down = true;
                connection.as_mut().graceful_shutdown();
            }
            // A new deadline: wait for that one instead.
            _ = deadline.changed() => {}
            () = tokio::time::sleep_until(until) => return true,
        }
    }
}

/// One open connection, as the accept loop and its own task see it.
#[derive(Debug)]
struct Conn {
    id: u64,
    /// Between a complete request head and the response handed over; a
    /// busy connection is never evicted.
    busy: AtomicBool,
    /// When the connection is dropped unless something moves it.
    deadline: watch::Sender<Instant>,
    /// Fired to close the connection at once and free its slot.
    evicted: CancellationToken,
    /// The listener's shutdown.
    shutdown: CancellationToken,
}

impl Conn {
    fn set_deadline_in(&self, after: Duration) {
        self.deadline.send_replace(Instant::now() + after);
    }
}

/// The open connections, by accept order.
#[derive(Debug, Default)]
struct OpenConnections {
    by_id: Mutex<BTreeMap<u64, Arc<Conn>>>,
}

impl OpenConnections {
    fn insert(&self, id: u64, header_timeout: Duration, shutdown: &CancellationToken) -> Arc<Conn> {
        let (deadline, _) = watch::channel(Instant::now() + header_timeout);
        let conn = Arc::new(Conn {
            id,
            busy: AtomicBool::new(false),
            deadline,
            evicted: CancellationToken::new(),
            shutdown: shutdown.clone(),
        });
        self.lock().insert(id, Arc::clone(&conn));
        conn
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Closes the oldest connection that is not answering a request.
    /// Newer connections are spared, so a client that connected last (a
    /// probe) has the most time to send its request.
    fn evict_oldest_idle(&self) -> bool {
        let mut by_id = self.lock();
        let victim = by_id
            .values()
            .find(|conn| !conn.busy.load(Ordering::Acquire) && !conn.evicted.is_cancelled())
            .map(|conn| conn.id);
        match victim.and_then(|id| by_id.remove(&id)) {
            Some(conn) => {
                conn.evicted.cancel();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Conn>>> {
        self.by_id
            .lock()
            .expect("metrics connection table poisoned")
    }
}

/// The router for one connection, moving the connection's deadline as
/// requests come and go.
#[derive(Clone)]
struct ConnService {
    app: Router,
    conn: Arc<Conn>,
    limits: ListenerLimits,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send + 'static>,
    >;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let mut app = self.app.clone();
        let conn = Arc::clone(&self.conn);
        let limits = self.limits;
        conn.busy.store(true, Ordering::Release);
        conn.set_deadline_in(limits.request_timeout);
        Box::pin(async move {
            let answered = tokio::time::timeout(limits.request_timeout, app.call(request)).await;
            conn.set_deadline_in(limits.idle_timeout);
            conn.busy.store(false, Ordering::Release);
            Ok(match answered {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "timed out").into_response(),
            })
        })
    }
}

async fn render(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}

async fn ready(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    if metrics.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}
