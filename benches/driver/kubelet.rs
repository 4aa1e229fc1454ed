//! The kubelet side: service-account JWTs signed with the demo key, publish
//! and unpublish requests built exactly as kubelet builds them, tonic
//! channels over the driver's unix socket, and a pool of concurrent callers.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tokio::time::Instant;
use tonic::transport::Channel;
use vault_csi_driver::proto::node_client::NodeClient;
use vault_csi_driver::proto::{NodePublishVolumeRequest, NodeUnpublishVolumeRequest};

// Shared with the tests and the quickstart; not every item is used here.
#[allow(dead_code)]
#[path = "../../tests/support/kubelet_wire.rs"]
mod wire;

/// Namespace, service account and audience of every benchmark pod (the
/// walkthrough's role `example` binds them).
pub const NAMESPACE: &str = "default";
/// See [`NAMESPACE`].
pub const SERVICE_ACCOUNT: &str = "vault-auth";
/// See [`NAMESPACE`].
pub const AUDIENCE: &str = "vault";
/// The Vault role the volumes log in as.
pub const ROLE: &str = "example";

static KEY: LazyLock<EncodingKey> = LazyLock::new(|| {
    EncodingKey::from_rsa_pem(vault_double::DEMO_SIGNING_KEY_PEM.as_bytes())
        .expect("the demo signing key is a valid RSA key")
});

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// A projected service-account token for a pod, with the claims the
/// Kubernetes API server puts in (the shape `vault-double/src/jwt.rs`
/// verifies), valid for two hours.
pub fn mint(pod_name: &str, pod_uid: &str) -> String {
    let now = unix_now();
    let claims = serde_json::json!({
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": format!("system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"),
        "aud": [AUDIENCE],
        "exp": now + 7200,
        "iat": now,
        "nbf": now,
        "kubernetes.io": {
            "namespace": NAMESPACE,
            "pod": {"name": pod_name, "uid": pod_uid},
            "serviceaccount": {"name": SERVICE_ACCOUNT, "uid": "4f1a2c6e-0000-4000-8000-00000000beef"},
        },
    });
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("vault-double-demo".to_owned());
    jsonwebtoken::encode(&header, &claims, &KEY).expect("signing with the demo key")
}

/// A benchmark pod with one CSI inline volume named `secrets`.
#[derive(Debug, Clone)]
pub struct Pod {
    /// Pod name.
    pub name: String,
    /// Pod UID (unique per benchmark run and pod).
    pub uid: String,
    /// The pod's service-account JWT for audience `vault`.
    pub jwt: String,
}

/// The volume name inside each pod.
const VOLUME: &str = "secrets";

impl Pod {
    /// The publish target, `<kubelet>/pods/<uid>/volumes/kubernetes.io~csi/secrets/mount`.
    pub fn target(&self, kubelet_dir: &Path) -> PathBuf {
        wire::target_path(kubelet_dir, &self.uid, VOLUME)
    }

    /// What kubelet does before NodePublishVolume: the volume directory
    /// (0750) with `vol_data.json`; `mount` itself is the driver's to create.
    pub fn prepare(&self, kubelet_dir: &Path) {
        wire::prepare_target(kubelet_dir, &self.uid, VOLUME)
            .expect("create the pod's volume directory");
    }

    /// NodePublishVolume exactly as kubelet sends it for an inline volume
    /// with `podInfoOnMount` and `tokenRequests: [{audience: vault}]`.
    pub fn publish(&self, kubelet_dir: &Path, template: &str) -> NodePublishVolumeRequest {
        let pod = wire::PodInfo {
            namespace: NAMESPACE,
            name: &self.name,
            uid: &self.uid,
            service_account: SERVICE_ACCOUNT,
        };
        wire::publish_request(
            pod,
            VOLUME,
            &self.target(kubelet_dir),
            wire::tokens_json(&[(AUDIENCE, &self.jwt, "2099-01-01T00:00:00Z")]),
            &[("roleName", ROLE), ("template.secrets.txt", template)],
        )
    }

    /// NodeUnpublishVolume for the pod's volume.
    pub fn unpublish(&self, kubelet_dir: &Path) -> NodeUnpublishVolumeRequest {
        wire::unpublish_request(&self.uid, VOLUME, &self.target(kubelet_dir))
    }
}

/// `count` pods named `<prefix>-<i>` with JWTs, minted on every core (RSA
/// signing costs about a millisecond each), and their directories prepared.
pub fn pods(prefix: &str, count: usize, kubelet_dir: &Path) -> Vec<Pod> {
    let run = std::process::id();
    let threads = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let chunk = count.div_ceil(threads).max(1);
    let indices: Vec<usize> = (0..count).collect();
    let mut pods: Vec<Pod> = std::thread::scope(|scope| {
        let handles: Vec<_> = indices
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|i| {
                            let name = format!("{prefix}-{i}");
                            let uid = format!("{prefix}-{run:x}-{i:06}");
                            let jwt = mint(&name, &uid);
                            Pod { name, uid, jwt }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("minting thread"))
            .collect()
    });
    pods.sort_by(|a, b| a.uid.cmp(&b.uid));
    for pod in &pods {
        pod.prepare(kubelet_dir);
    }
    pods
}

/// A tonic channel over the unix socket, as kubelet dials it.
pub async fn channel(socket: &Path) -> Channel {
    wire::dial(socket)
        .await
        .expect("connect to the driver's socket")
}

/// One CSI call.
#[derive(Debug, Clone)]
pub enum Call {
    /// NodePublishVolume.
    Publish(Box<NodePublishVolumeRequest>),
    /// NodeUnpublishVolume.
    Unpublish(NodeUnpublishVolumeRequest),
}

impl Call {
    /// Sends the call; the error is the gRPC status text.
    pub async fn send(self, client: &mut NodeClient<Channel>) -> Result<(), String> {
        match self {
            Call::Publish(r) => client.node_publish_volume(*r).await.map(drop),
            Call::Unpublish(r) => client.node_unpublish_volume(r).await.map(drop),
        }
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    }
}

/// What a batch of calls took.
#[derive(Debug, Clone)]
pub struct Batch {
    /// First send to last answer.
    pub wall: Duration,
    /// Each call's latency, in completion order.
    pub latencies: Vec<Duration>,
    /// Each call's completion time.
    pub completed_at: Vec<SystemTime>,
}

impl Batch {
    /// Calls per second over the whole batch.
    pub fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }
}

/// Sends `calls` from `channels.len()` concurrent callers (each on its own
/// connection, as separate kubelet workers would be), each taking the next
/// call as soon as its previous one is answered. Panics on any failed call:
/// a benchmark with failures measures nothing.
pub async fn run_batch(channels: &[Channel], calls: Vec<Call>) -> Batch {
    let calls = Arc::new(calls);
    let next = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(Vec::with_capacity(calls.len())));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for channel in channels {
        let mut client = NodeClient::new(channel.clone());
        let calls = Arc::clone(&calls);
        let next = Arc::clone(&next);
        let results = Arc::clone(&results);
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(call) = calls.get(i) else { break };
                let t = Instant::now();
                if let Err(e) = call.clone().send(&mut client).await {
                    panic!("call {i} failed: {e}");
                }
                let latency = t.elapsed();
                results
                    .lock()
                    .expect("results lock")
                    .push((latency, SystemTime::now()));
            }
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined.expect("caller task");
    }
    let wall = started.elapsed();
    let results = std::mem::take(&mut *results.lock().expect("results lock"));
    Batch {
        wall,
        latencies: results.iter().map(|r| r.0).collect(),
        completed_at: results.iter().map(|r| r.1).collect(),
    }
}

/// `n` channels to the driver's socket.
pub async fn channels(socket: &Path, n: usize) -> Vec<Channel> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(channel(socket).await);
    }
    out
}
