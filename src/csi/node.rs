//! The CSI Node service: publish and unpublish (handed to the volume
//! manager), node info and capabilities. Everything else is
//! `UNIMPLEMENTED`. Each publish and unpublish is logged once, with the
//! volume, the pod, the outcome and the time it took, never with a token.
//! Kubelet's unpublish names no pod: its pod fields are those of the
//! volume's last publish or republish this process served.
//!
//! Publish and unpublish run on the driver's task tracker and the handler
//! only waits for them, until a little before the caller's `grpc-timeout`:
//! tonic drops a handler when its client cancels, and that must never cut
//! a publish or unpublish half-way.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;
use tonic::{Request, Response, Status};

use super::intake::IntakeSlot;
use super::redact::{RedactedContext, RedactedSecrets};
use super::{deadline, status};
use crate::metrics::Metrics;
use crate::proto::node_server::Node;
use crate::proto::node_service_capability::rpc::Type as RpcType;
use crate::proto::node_service_capability::{Rpc, Type as CapabilityType};
use crate::proto::volume_capability::AccessType;
use crate::proto::{
    NodeExpandVolumeRequest, NodeExpandVolumeResponse, NodeGetCapabilitiesRequest,
    NodeGetCapabilitiesResponse, NodeGetInfoRequest, NodeGetInfoResponse,
    NodeGetVolumeStatsRequest, NodeGetVolumeStatsResponse, NodePublishVolumeRequest,
    NodePublishVolumeResponse, NodeServiceCapability, NodeStageVolumeRequest,
    NodeStageVolumeResponse, NodeUnpublishVolumeRequest, NodeUnpublishVolumeResponse,
    NodeUnstageVolumeRequest, NodeUnstageVolumeResponse,
};
use crate::volume::{PublishCapability, PublishOutcome, PublishRequest, VolumeManager};

const POD_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";
const POD_NAME: &str = "csi.storage.k8s.io/pod.name";

/// The pod a volume was published for, as kubelet's `podInfoOnMount`
/// keys named it: for the log lines of calls that carry no pod.
#[derive(Debug, Clone, Default)]
struct PodName {
    namespace: String,
    name: String,
}

/// Serves the Node service for one node.
#[derive(Debug)]
pub struct NodeService {
    node_id: String,
    manager: Arc<VolumeManager>,
    metrics: Arc<Metrics>,
    /// The pod of each volume this process published or republished, by
    /// volume id, so its unpublish is logged with the pod. Kubelet
    /// republishes every volume each minute or so (`requiresRepublish`),
    /// so after a restart this fills again by itself. One entry per
    /// managed volume, removed at its unpublish.
    pods: Mutex<HashMap<String, PodName>>,
}

impl NodeService {
    /// A node service for `node_id`, backed by `manager`.
    pub fn new(node_id: String, manager: Arc<VolumeManager>, metrics: Arc<Metrics>) -> Self {
        Self {
            node_id,
            manager,
            metrics,
            pods: Mutex::default(),
        }
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_publish_volume(
        &self,
        mut request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let started = Instant::now();
        let answer_by = deadline::answer_by(request.metadata());
        // The request's share of the intake budget, given back once the
        // request is checked and let go of (`csi::intake`).
        let intake = request.extensions_mut().remove::<IntakeSlot>();
        let r = request.into_inner();
        let pod_ns = r
            .volume_context
            .get(POD_NAMESPACE)
            .cloned()
            .unwrap_or_default();
        let pod_name = r.volume_context.get(POD_NAME).cloned().unwrap_or_default();
        tracing::debug!(
            volume.id = %r.volume_id,
            target = %r.target_path,
            readonly = r.readonly,
            volume_context = ?RedactedContext(&r.volume_context),
            secrets = ?RedactedSecrets(&r.secrets),
            "NodePublishVolume request"
        );
        let capability = r.volume_capability.as_ref().map(|c| match &c.access_type {
            Some(AccessType::Block(_)) => PublishCapability::Block,
            Some(AccessType::Mount(m)) => PublishCapability::Mount {
                mount_group: m.volume_mount_group.clone(),
                mount_flags: m.mount_flags.clone(),
            },
            None => PublishCapability::Mount {
                mount_group: String::new(),
                mount_flags: Vec::new(),
            },
        });
        let volume_id = r.volume_id.clone();
        let request = PublishRequest {
            volume_id: r.volume_id,
            target_path: r.target_path,
            capability,
            readonly: r.readonly,
            volume_context: r.volume_context,
            secrets: r.secrets,
        };
        // Checked here, before anything is claimed or spawned: the manager
        // only ever sees typed, validated values.
        let checked = self.manager.check_publish(&request);
        drop(request);
        drop(intake);
        let result = match checked {
            Ok(checked) => self.manager.publish_by(checked, answer_by).await,
            Err(error) => Err(error),
        };
        let elapsed = started.elapsed();
        match result {
            Ok(outcome) => {
                let label = match outcome {
                    PublishOutcome::Published => "published",
                    PublishOutcome::Republished => "republished",
                };
                self.metrics.observe_publish(label, elapsed);
                self.pods.lock().expect("pod names poisoned").insert(
                    volume_id.clone(),
                    PodName {
                        namespace: pod_ns.clone(),
                        name: pod_name.clone(),
                    },
                );
                tracing::info!(volume.id = %volume_id, pod.namespace = %pod_ns, pod.name = %pod_name, outcome = label, elapsed_ms = millis(elapsed), "NodePublishVolume");
                Ok(Response::new(NodePublishVolumeResponse {}))
            }
            Err(error) => {
                let status = status::to_status(&error);
                self.metrics.observe_publish("error", elapsed);
                tracing::warn!(volume.id = %volume_id, pod.namespace = %pod_ns, pod.name = %pod_name, code = ?status.code(), error = %status.message(), elapsed_ms = millis(elapsed), "NodePublishVolume failed");
                Err(status)
            }
        }
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let started = Instant::now();
        let answer_by = deadline::answer_by(request.metadata());
        let r = request.into_inner();
        let pod = self
            .pods
            .lock()
            .expect("pod names poisoned")
            .get(&r.volume_id)
            .cloned()
            .unwrap_or_default();
        let result = match self.manager.check_unpublish(&r.volume_id, &r.target_path) {
            Ok(checked) => self.manager.unpublish_by(checked, answer_by).await,
            Err(error) => Err(error),
        };
        let elapsed = started.elapsed();
        match result {
            Ok(()) => {
                self.metrics.observe_unpublish("ok");
                self.pods
                    .lock()
                    .expect("pod names poisoned")
                    .remove(&r.volume_id);
                tracing::info!(volume.id = %r.volume_id, pod.namespace = %pod.namespace, pod.name = %pod.name, target = %r.target_path, outcome = "unpublished", elapsed_ms = millis(elapsed), "NodeUnpublishVolume");
                Ok(Response::new(NodeUnpublishVolumeResponse {}))
            }
            Err(error) => {
                let status = status::to_status(&error);
                self.metrics.observe_unpublish("error");
                tracing::warn!(volume.id = %r.volume_id, pod.namespace = %pod.namespace, pod.name = %pod.name, target = %r.target_path, code = ?status.code(), error = %status.message(), elapsed_ms = millis(elapsed), "NodeUnpublishVolume failed");
                Err(status)
            }
        }
    }

    /// `VOLUME_MOUNT_GROUP`: kubelet hands the pod's fsGroup to the driver,
    /// which sets file ownership itself (kubelet never chowns the volume).
    async fn node_get_capabilities(
        &self,
        _: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        Ok(Response::new(NodeGetCapabilitiesResponse {
            capabilities: vec![NodeServiceCapability {
                r#type: Some(CapabilityType::Rpc(Rpc {
                    r#type: RpcType::VolumeMountGroup.into(),
                })),
            }],
        }))
    }

    /// The node id; no volume limit (0).
    async fn node_get_info(
        &self,
        _: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: None,
        }))
    }

    async fn node_stage_volume(
        &self,
        _: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "NodeStageVolume is not supported: this driver serves ephemeral inline volumes",
        ))
    }

    async fn node_unstage_volume(
        &self,
        _: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "NodeUnstageVolume is not supported: this driver serves ephemeral inline volumes",
        ))
    }

    async fn node_get_volume_stats(
        &self,
        _: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        Err(Status::unimplemented("NodeGetVolumeStats is not supported"))
    }

    async fn node_expand_volume(
        &self,
        _: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        Err(Status::unimplemented("NodeExpandVolume is not supported"))
    }
}

fn millis(elapsed: std::time::Duration) -> u64 {
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}
