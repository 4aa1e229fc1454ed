//! The quickstart's stand-in for kubelet: a pod, the paths kubelet would
//! use for its volume, and NodePublishVolume/NodeUnpublishVolume requests
//! built exactly as kubelet builds them for an inline CSI volume with
//! `podInfoOnMount` and `tokenRequests`, sent over the driver's socket.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tonic::transport::Channel;
use vault_csi_driver::proto::node_client::NodeClient;
use vault_csi_driver::proto::{NodePublishVolumeRequest, NodeUnpublishVolumeRequest};

// Shared with the tests and the benchmark; not every item is used here.
#[allow(dead_code)]
#[path = "../../tests/support/kubelet_wire.rs"]
mod wire;

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

    /// Creates the target's parent (with `vol_data.json`), as kubelet does
    /// before it calls the driver, and returns
    /// `<kubelet>/pods/<uid>/volumes/kubernetes.io~csi/<vol>/mount`.
    pub fn prepare_target(&self, kubelet_dir: &Path) -> anyhow::Result<PathBuf> {
        wire::prepare_target(kubelet_dir, &self.uid, VOLUME_NAME).with_context(|| {
            format!(
                "cannot create the pod's volume directory under {}",
                kubelet_dir.display()
            )
        })
    }

    /// NodePublishVolume for this pod's volume with the pod's own
    /// `attributes`, plus the `csi.storage.k8s.io/*` keys kubelet adds.
    pub fn publish(
        &self,
        target: &Path,
        token: &str,
        attributes: &[(&str, &str)],
    ) -> anyhow::Result<NodePublishVolumeRequest> {
        let expires = time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .context("zero nanoseconds are valid")?
            + time::Duration::hours(1);
        let expires = expires
            .format(&time::format_description::well_known::Rfc3339)
            .context("cannot format the token expiry")?;
        let pod = wire::PodInfo {
            namespace: &self.namespace,
            name: &self.name,
            uid: &self.uid,
            service_account: &self.service_account,
        };
        Ok(wire::publish_request(
            pod,
            VOLUME_NAME,
            target,
            wire::tokens_json(&[("vault", token, &expires)]),
            attributes,
        ))
    }

    /// NodeUnpublishVolume for this pod's volume.
    pub fn unpublish(&self, target: &Path) -> NodeUnpublishVolumeRequest {
        wire::unpublish_request(&self.uid, VOLUME_NAME, target)
    }
}

/// A CSI Node client over the driver's unix socket, as kubelet dials it.
pub async fn connect(socket: &Path) -> anyhow::Result<NodeClient<Channel>> {
    let channel = wire::dial(socket)
        .await
        .with_context(|| format!("cannot connect to the driver's socket {}", socket.display()))?;
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
