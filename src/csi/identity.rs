//! The CSI Identity service: who the plugin is and whether it is alive.
//! node-driver-registrar reads the name; the livenessprobe sidecar calls
//! `Probe`.

use std::collections::HashMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::metrics::Metrics;
use crate::proto::identity_server::Identity;
use crate::proto::{
    GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginInfoRequest,
    GetPluginInfoResponse, ProbeRequest, ProbeResponse,
};

/// Serves GetPluginInfo, GetPluginCapabilities and Probe.
#[derive(Debug)]
pub struct IdentityService {
    driver_name: String,
    metrics: Arc<Metrics>,
}

impl IdentityService {
    /// An identity service announcing `driver_name`.
    pub fn new(driver_name: String, metrics: Arc<Metrics>) -> Self {
        Self {
            driver_name,
            metrics,
        }
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: self.driver_name.clone(),
            vendor_version: env!("CARGO_PKG_VERSION").to_owned(),
            manifest: HashMap::new(),
        }))
    }

    /// No capabilities: there is no controller service.
    async fn get_plugin_capabilities(
        &self,
        _: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities: Vec::new(),
        }))
    }

    /// Ready once restored volumes are re-adopted and the socket serves.
    async fn probe(&self, _: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        Ok(Response::new(ProbeResponse {
            ready: Some(self.metrics.is_ready()),
        }))
    }
}
