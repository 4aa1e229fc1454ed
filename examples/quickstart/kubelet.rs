//! The quickstart's stand-in for kubelet: a pod, the paths kubelet would
//! use for its volume, and NodePublishVolume/NodeUnpublishVolume requests
//! built exactly as kubelet builds them for an inline CSI volume with
//! `podInfoOnMount` and `tokenRequests`, sent over the driver's socket.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};
use tower::service_fn;
use vault_csi_driver::proto::node_client::NodeClient;
use vault_csi_driver::proto::volume_capability::access_mode::Mode;
use vault_csi_driver::proto::volume_capability::{AccessMode, AccessType, MountVolume};
use vault_csi_driver::proto::{
    NodePublishVolumeRequest, NodeUnpublishVolumeRequest, VolumeCapability,
};

/// The volume's name in the pod spec.
pub const VOLUME_NAME: &str = "secrets";

/// A pod as kubelet sees it.
#[derive(Clone, Debug)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub service_account: String,
    pub service_account_uid: String,
}

impl Pod {
    /// The walkthrough's nginx pod in `default`, service account
    /// `vault-auth`.
    pub fn walkthrough() -> Self {
        Self {
            namespace: "default".to_owned(),
            name: "nginx".to_owned(),
            uid: uuid(),
            service_account: "vault-auth".to_owned(),
            service_account_uid: uuid(),
        }
    }

    /// `csi-` + hex(sha256(podUID + volume name)), as kubelet makes it.
    pub fn volume_id(&self) -> String {
        let digest = Sha256::digest(format!("{}{VOLUME_NAME}", self.uid));
        let mut id = String::from("csi-");
        for b in digest {
            let _ = write!(id, "{b:02x}");
        }
        id
    }

    /// `<kubelet>/pods/<uid>/volumes/kubernetes.io~csi/<vol>/mount`.
    pub fn target(&self, kubelet_dir: &Path) -> PathBuf {
        kubelet_dir
            .join("pods")
            .join(&self.uid)
            .join("volumes/kubernetes.io~csi")
            .join(VOLUME_NAME)
            .join("mount")
    }

    /// Creates the target's parent (with `vol_data.json`), as kubelet does
    /// before it calls the driver.
    pub fn prepare_target(&self, kubelet_dir: &Path) -> anyhow::Result<PathBuf> {
        let target = self.target(kubelet_dir);
        let parent = target.parent().context("the target has a parent")?;
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        std::fs::write(parent.join("vol_data.json"), b"{}")
            .with_context(|| format!("cannot write {}", parent.display()))?;
        Ok(target)
    }

    /// NodePublishVolume for this pod's volume with the pod's own
    /// `attributes`, plus the `csi.storage.k8s.io/*` keys kubelet adds.
    pub fn publish(
        &self,
        target: &Path,
        token: &str,
        attributes: &[(&str, &str)],
    ) -> anyhow::Result<NodePublishVolumeRequest> {
        let mut context: HashMap<String, String> = attributes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        context.insert("csi.storage.k8s.io/pod.name".into(), self.name.clone());
        context.insert(
            "csi.storage.k8s.io/pod.namespace".into(),
            self.namespace.clone(),
        );
        context.insert("csi.storage.k8s.io/pod.uid".into(), self.uid.clone());
        context.insert(
            "csi.storage.k8s.io/serviceAccount.name".into(),
            self.service_account.clone(),
        );
        context.insert("csi.storage.k8s.io/ephemeral".into(), "true".into());
        let expires = time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .context("zero nanoseconds are valid")?
            + time::Duration::hours(1);
        let expires = expires
            .format(&time::format_description::well_known::Rfc3339)
            .context("cannot format the token expiry")?;
        context.insert(
            "csi.storage.k8s.io/serviceAccount.tokens".into(),
            serde_json::json!({"vault": {"token": token, "expirationTimestamp": expires}})
                .to_string(),
        );
        Ok(NodePublishVolumeRequest {
            volume_id: self.volume_id(),
            publish_context: HashMap::new(),
            staging_target_path: String::new(),
            target_path: target.to_string_lossy().into_owned(),
            volume_capability: Some(VolumeCapability {
                access_type: Some(AccessType::Mount(MountVolume {
                    fs_type: String::new(),
                    mount_flags: Vec::new(),
                    volume_mount_group: String::new(),
                })),
                access_mode: Some(AccessMode {
                    mode: Mode::SingleNodeWriter.into(),
                }),
            }),
            readonly: false,
            secrets: HashMap::new(),
            volume_context: context,
        })
    }

    /// NodeUnpublishVolume for this pod's volume.
    pub fn unpublish(&self, target: &Path) -> NodeUnpublishVolumeRequest {
        NodeUnpublishVolumeRequest {
            volume_id: self.volume_id(),
            target_path: target.to_string_lossy().into_owned(),
        }
    }
}

/// A CSI Node client over the driver's unix socket, as kubelet dials it.
pub async fn connect(socket: &Path) -> anyhow::Result<NodeClient<Channel>> {
    let socket = socket.to_path_buf();
    let channel = Endpoint::try_from("http://[::]:50051")?
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(service_fn(move |_| {
            let socket = socket.clone();
            async move { UnixStream::connect(socket).await.map(TokioIo::new) }
        }))
        .await
        .context("cannot connect to the driver's socket")?;
    Ok(NodeClient::new(channel))
}

/// A random version-4 UUID, the shape of Kubernetes uids.
fn uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex = crate::hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}
