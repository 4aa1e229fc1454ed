//! What kubelet puts on the CSI socket for an inline (ephemeral) volume:
//! the volume id, the target path, the NodePublishVolume and
//! NodeUnpublishVolume requests with the `csi.storage.k8s.io/*` keys, and
//! the dial over the unix socket. One copy, shared by the tests (as
//! `support::kubelet_wire`), the quickstart example and the benchmark
//! (both include this file by path), so the three speak exactly the same
//! protocol.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};
use tower::service_fn;
use vault_csi_driver::proto::volume_capability::access_mode::Mode;
use vault_csi_driver::proto::volume_capability::{AccessMode, AccessType, MountVolume};
use vault_csi_driver::proto::{
    NodePublishVolumeRequest, NodeUnpublishVolumeRequest, VolumeCapability,
};

/// The `csi.storage.k8s.io/serviceAccount.tokens` key.
pub const TOKENS_KEY: &str = "csi.storage.k8s.io/serviceAccount.tokens";

/// The pod fields kubelet passes with `podInfoOnMount: true`.
#[derive(Debug, Clone, Copy)]
pub struct PodInfo<'a> {
    /// `metadata.namespace`.
    pub namespace: &'a str,
    /// `metadata.name`.
    pub name: &'a str,
    /// `metadata.uid`.
    pub uid: &'a str,
    /// `spec.serviceAccountName`.
    pub service_account: &'a str,
}

/// `csi-` + hex(sha256(podUID + volume name)): kubelet's id for an inline
/// volume.
pub fn volume_id(pod_uid: &str, volume: &str) -> String {
    let digest = Sha256::digest(format!("{pod_uid}{volume}"));
    let mut id = String::from("csi-");
    for b in digest {
        let _ = write!(id, "{b:02x}");
    }
    id
}

/// `<kubelet>/pods/<uid>/volumes/kubernetes.io~csi/<volume>/mount`.
pub fn target_path(kubelet_dir: &Path, pod_uid: &str, volume: &str) -> PathBuf {
    kubelet_dir
        .join("pods")
        .join(pod_uid)
        .join("volumes/kubernetes.io~csi")
        .join(volume)
        .join("mount")
}

/// What kubelet does before NodePublishVolume: the target's parent (0750)
/// with `vol_data.json`; the target itself is the driver's to create.
/// Returns the target.
pub fn prepare_target(kubelet_dir: &Path, pod_uid: &str, volume: &str) -> std::io::Result<PathBuf> {
    let target = target_path(kubelet_dir, pod_uid, volume);
    let parent = target.parent().expect("the target has a parent");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(parent)?;
    std::fs::write(parent.join("vol_data.json"), b"{}")?;
    Ok(target)
}

/// The tokens attribute for one or more audiences: `(audience, JWT,
/// RFC 3339 expiry)` each.
pub fn tokens_json(tokens: &[(&str, &str, &str)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .map(|(audience, token, expires)| {
            (
                (*audience).to_owned(),
                serde_json::json!({"token": token, "expirationTimestamp": expires}),
            )
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// What varies between the NodePublishVolume calls kubelet makes for an
/// inline volume, beside the pod and its attributes.
#[derive(Debug, Clone, Default)]
pub struct PublishVariant {
    /// `readOnly: true` on the pod's CSI volume: kubelet sets `readonly`
    /// (and binds the volume read-only into the container).
    pub readonly: bool,
    /// The pod's `fsGroup`, which kubelet passes as `volume_mount_group`
    /// when the driver advertises `VOLUME_MOUNT_GROUP`; empty for none.
    pub volume_mount_group: String,
    /// `serviceAccountTokenInSecrets: true` on the CSIDriver (Kubernetes
    /// 1.35+): the tokens travel in `secrets` and not in `volume_context`.
    pub tokens_in_secrets: bool,
}

/// NodePublishVolume exactly as kubelet sends it for an inline volume of a
/// CSIDriver with `podInfoOnMount: true` and `tokenRequests`: the pod's own
/// `attributes` plus the `csi.storage.k8s.io/*` keys, a mount capability,
/// not read-only, no secrets (Kubernetes before 1.35).
pub fn publish_request(
    pod: PodInfo<'_>,
    volume: &str,
    target: &Path,
    tokens: String,
    attributes: &[(&str, &str)],
) -> NodePublishVolumeRequest {
    publish_request_variant(
        pod,
        volume,
        target,
        tokens,
        attributes,
        &PublishVariant::default(),
    )
}

/// NodePublishVolume as kubelet sends it with `variant`'s differences
/// from [`publish_request`]'s defaults.
pub fn publish_request_variant(
    pod: PodInfo<'_>,
    volume: &str,
    target: &Path,
    tokens: String,
    attributes: &[(&str, &str)],
    variant: &PublishVariant,
) -> NodePublishVolumeRequest {
    let mut context: HashMap<String, String> = attributes
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    for (key, value) in [
        ("csi.storage.k8s.io/pod.name", pod.name),
        ("csi.storage.k8s.io/pod.namespace", pod.namespace),
        ("csi.storage.k8s.io/pod.uid", pod.uid),
        (
            "csi.storage.k8s.io/serviceAccount.name",
            pod.service_account,
        ),
        ("csi.storage.k8s.io/ephemeral", "true"),
    ] {
        context.insert(key.to_owned(), value.to_owned());
    }
    let mut secrets = HashMap::new();
    if variant.tokens_in_secrets {
        secrets.insert(TOKENS_KEY.to_owned(), tokens);
    } else {
        context.insert(TOKENS_KEY.to_owned(), tokens);
    }
    NodePublishVolumeRequest {
        volume_id: volume_id(pod.uid, volume),
        publish_context: HashMap::new(),
        staging_target_path: String::new(),
        target_path: target.to_string_lossy().into_owned(),
        volume_capability: Some(VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume {
                fs_type: String::new(),
                mount_flags: Vec::new(),
                volume_mount_group: variant.volume_mount_group.clone(),
            })),
            access_mode: Some(AccessMode {
                mode: Mode::SingleNodeWriter.into(),
            }),
        }),
        readonly: variant.readonly,
        secrets,
        volume_context: context,
    }
}

/// What is left of a pod's volume after a reboot: `/run` (and with it the
/// driver's state) is empty, nothing is mounted, and the target kubelet's
/// earlier publish created still exists, empty, beside `vol_data.json`.
/// Kubelet reconstructs the volume and publishes it again. Returns the
/// target.
pub fn target_after_reboot(
    kubelet_dir: &Path,
    pod_uid: &str,
    volume: &str,
) -> std::io::Result<PathBuf> {
    let target = prepare_target(kubelet_dir, pod_uid, volume)?;
    std::fs::DirBuilder::new().mode(0o750).create(&target)?;
    Ok(target)
}

/// NodeUnpublishVolume for one pod's volume.
pub fn unpublish_request(pod_uid: &str, volume: &str, target: &Path) -> NodeUnpublishVolumeRequest {
    NodeUnpublishVolumeRequest {
        volume_id: volume_id(pod_uid, volume),
        target_path: target.to_string_lossy().into_owned(),
    }
}

/// One connection attempt to the driver's unix socket, as kubelet dials it
/// (the URI is a placeholder; the connector ignores it).
pub async fn dial(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let socket = socket.to_path_buf();
    Endpoint::try_from("http://[::]:50051")
        .expect("a static URI")
        .connect_with_connector(service_fn(move |_| {
            let socket = socket.clone();
            async move { UnixStream::connect(socket).await.map(TokioIo::new) }
        }))
        .await
}
