//! A stand-in for the Kubernetes API server's `TokenReview` endpoint, so a
//! real OpenBao's `kubernetes` auth method can run here without a cluster.
//!
//! Vault's (and OpenBao's) Kubernetes auth never checks a service-account
//! JWT itself: it posts it to `POST
//! /apis/authentication.k8s.io/v1/tokenreviews` on `kubernetes_host` and
//! believes the answer. This responder answers as kube-apiserver does for
//! the tokens the tests sign (the Vault double's demo key,
//! [`vault_double::sign_sa_token`], which is what `Pod::token` mints):
//!
//! - the caller must present a bearer token that verifies (OpenBao sends
//!   the client's own JWT when `token_reviewer_jwt` is unset);
//! - `spec.token` is verified (signature, `exp`, `nbf`, the `sub` and
//!   `kubernetes.io` claims); a token that does not verify is answered
//!   `authenticated: false` with the reason, which OpenBao turns into 403;
//! - `spec.audiences`, when given, must share an audience with the
//!   token's `aud` (the answer's `audiences` is that intersection); with
//!   none, the API server's own audience is required, as kube-apiserver
//!   does. OpenBao sends the role's `audience`, or the token's own `aud`
//!   for a role without one;
//! - `user.username` is `system:serviceaccount:<ns>:<name>` and
//!   `user.uid` the service account's uid from the token, which OpenBao
//!   compares with the token's claims.
//!
//! It does not model the API server's authorization of the reviewer
//! (`system:auth-delegator`) or deleted service accounts. Every accepted
//! socket gets `TCP_NODELAY`, as Go's net/http sets it: without it, each
//! review waits out Nagle's algorithm against delayed ACKs (40 ms).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use axum::serve::ListenerExt as _;
use serde_json::{Value, json};

/// The path OpenBao posts reviews to.
pub const REVIEW_PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

/// The audience kube-apiserver's own tokens carry, required when a review
/// names none.
const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// The responder, serving on a loopback port until dropped.
pub struct TokenReviewer {
    addr: SocketAddr,
    reviews: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TokenReviewer {
    /// Serves on a free loopback port on the current runtime.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the TokenReview stand-in");
        let addr = listener.local_addr().unwrap();
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let reviews = Arc::new(AtomicUsize::new(0));
        let app = Router::new()
            .route(REVIEW_PATH, post(review))
            .with_state(Arc::clone(&reviews));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            reviews,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`, the `kubernetes_host` to configure.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many reviews were answered (authenticated or not).
    pub fn reviews(&self) -> usize {
        self.reviews.load(Ordering::SeqCst)
    }
}

impl Drop for TokenReviewer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn review(
    State(reviews): State<Arc<AtomicUsize>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
    let json_type = [(header::CONTENT_TYPE, "application/json")];
    let caller = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if caller.is_none_or(|jwt| vault_double::verify_sa_token(jwt).is_err()) {
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "Unauthorized", "reason": "Unauthorized", "code": 401});
        return (StatusCode::UNAUTHORIZED, json_type, status.to_string());
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, json_type, "{}".to_owned());
    };
    reviews.fetch_add(1, Ordering::SeqCst);
    let token = request["spec"]["token"].as_str().unwrap_or_default();
    let wanted: Vec<String> = request["spec"]["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .filter(|a: &Vec<String>| !a.is_empty())
        .unwrap_or_else(|| vec![API_AUDIENCE.to_owned()]);
    let status = match vault_double::verify_sa_token(token) {
        Err(error) => json!({"authenticated": false, "error": error}),
        Ok(sa) => {
            let granted: Vec<&String> = wanted.iter().filter(|a| sa.audience.contains(a)).collect();
            if granted.is_empty() {
                json!({"authenticated": false, "error": format!(
                    "[invalid bearer token, token audiences {:?} is invalid for the target audiences {:?}]",
                    sa.audience, wanted)})
            } else {
                json!({
                    "authenticated": true,
                    "user": {
                        "username": format!("system:serviceaccount:{}:{}", sa.namespace, sa.name),
                        "uid": sa.uid,
                        "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", sa.namespace), "system:authenticated"],
                    },
                    "audiences": granted,
                })
            }
        }
    };
    let answer = json!({
        "kind": "TokenReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": request["spec"],
        "status": status,
    });
    (StatusCode::CREATED, json_type, answer.to_string())
}
