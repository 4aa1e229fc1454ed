//! `vault-csi-driver convert`: the converter lives in its own crate,
//! `vault-csi-convert` (re-exported here), which does not depend on the
//! driver. It checks what it writes through its [`Driver`] port; this
//! module implements the port with the driver's own types, so a converted
//! template is refused when converting exactly when the driver would
//! refuse it at publish.

pub use vault_csi_convert::*;

use crate::render::{Renderer, SecretRequest};
use crate::storage::RelativePath;

/// The driver's checks, for the converter: its `secret` request rules and
/// its template compiler.
#[derive(Debug, Default, Clone, Copy)]
pub struct DriverChecks;

impl Driver for DriverChecks {
    fn check_secret(
        &self,
        path: &str,
        args: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), String> {
        SecretRequest::new(path, args)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn check_list(&self, path: &str) -> Result<(), String> {
        SecretRequest::list(path, false)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn check_templates(&self, templates: &[(String, String)]) -> Result<(), String> {
        let mut sources = Vec::with_capacity(templates.len());
        for (path, source) in templates {
            let path =
                RelativePath::parse(path).map_err(|e| format!("template path {path:?}: {e}"))?;
            sources.push((path, source.clone()));
        }
        Renderer::new()
            .compile(&sources)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
