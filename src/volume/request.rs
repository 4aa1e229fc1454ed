//! CSI requests, checked before the manager sees them: a publish or
//! unpublish reaches [`VolumeManager`](super::VolumeManager) as typed,
//! validated values ([`CheckedPublish`], [`CheckedUnpublish`]), so the
//! manager never handles a raw string from kubelet or the pod spec.
//!
//! Everything here is pure (no file system, no Vault): a malformed request
//! is refused before anything is claimed, spawned or touched.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::SystemTime;

use super::Error;
use super::spec::{self, PodInfo, SpecDefaults, TargetPath, VolumeId, VolumeSpec};
use crate::storage::selinux;
use crate::vault::{IdentityError, ServiceAccountToken, TOKENS_KEY};

/// The volume capability of a publish request, reduced to what matters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishCapability {
    /// A filesystem volume, with kubelet's fsGroup (if any) in `mount_group`.
    Mount {
        /// `volume_mount_group`: the pod's fsGroup when the driver
        /// advertises `VOLUME_MOUNT_GROUP`.
        mount_group: String,
        /// `mount_flags`: empty for inline volumes today; only an SELinux
        /// `context=` is accepted.
        mount_flags: Vec<String>,
    },
    /// A raw block volume (refused).
    Block,
}

/// A NodePublishVolume request as kubelet sent it, without the fields this
/// driver ignores.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    /// `volume_id`.
    pub volume_id: String,
    /// `target_path`.
    pub target_path: String,
    /// `volume_capability`, if sent.
    pub capability: Option<PublishCapability>,
    /// `readonly`.
    pub readonly: bool,
    /// `volume_context` (holds the tokens before Kubernetes 1.35).
    pub volume_context: HashMap<String, String>,
    /// `secrets` (holds the tokens with `serviceAccountTokenInSecrets`).
    pub secrets: HashMap<String, String>,
}

/// A publish that passed every check that needs no file system or Vault.
pub struct CheckedPublish {
    /// The volume.
    pub id: VolumeId,
    /// Where kubelet wants it, lexically inside its pods directory.
    pub target: TargetPath,
    /// `readonly`.
    pub readonly: bool,
    /// The pod's fsGroup, if kubelet passed one.
    pub fs_group: Option<u32>,
    /// The SELinux label the request's mount flags ask for, if any.
    pub selinux_label: Option<selinux::Label>,
    /// What makes two publishes of one volume the same publish.
    pub fingerprint: String,
    /// The attributes without kubelet's token attribute (what is recorded).
    pub attributes: BTreeMap<String, String>,
    /// The attributes, read.
    pub spec: VolumeSpec,
    /// The pod kubelet named.
    pub pod: PodInfo,
    /// The pod's service-account token for the volume's audience.
    pub identity: ServiceAccountToken,
}

impl std::fmt::Debug for CheckedPublish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckedPublish")
            .field("id", &self.id)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// An unpublish with a valid volume id and target path.
#[derive(Debug, Clone)]
pub struct CheckedUnpublish {
    /// The volume.
    pub id: VolumeId,
    /// Its target path.
    pub target: TargetPath,
}

impl PublishRequest {
    /// Checks the request against the node's `kubelet_dir` and `defaults`.
    pub fn check(
        &self,
        kubelet_dir: &Path,
        defaults: &SpecDefaults,
    ) -> Result<CheckedPublish, Error> {
        spec::check_attribute_sizes(&self.volume_context)?;
        let id = required_id(&self.volume_id)?;
        let target = required_target(&self.target_path, kubelet_dir)?;
        let (mount_group, mount_flags) = match &self.capability {
            None => {
                return Err(Error::MissingField {
                    field: "volume_capability",
                });
            }
            Some(PublishCapability::Block) => return Err(Error::BlockVolume),
            Some(PublishCapability::Mount {
                mount_group,
                mount_flags,
            }) => (mount_group, mount_flags),
        };
        let fs_group = if mount_group.is_empty() {
            None
        } else {
            Some(
                mount_group
                    .parse::<u32>()
                    .map_err(|_| Error::InvalidAttribute {
                        key: "volume_capability.mount.volume_mount_group".to_owned(),
                        reason: format!("{mount_group:?} is not a numeric group id"),
                    })?,
            )
        };
        let selinux_label = selinux::context_from_mount_flags(mount_flags).map_err(|reason| {
            Error::InvalidAttribute {
                key: "volume_capability.mount.mount_flags".to_owned(),
                reason,
            }
        })?;
        // Mount flags join the fingerprint only when sent, so volumes
        // published before they were read keep theirs.
        let mount_options = if mount_flags.is_empty() {
            mount_group.clone()
        } else {
            format!("{mount_group}\0{}", mount_flags.join("\0"))
        };
        let fingerprint = spec::fingerprint(&self.volume_context, self.readonly, &mount_options);
        let (spec, pod) = spec::parse_attributes(&self.volume_context, defaults)?;
        let identity = self.identity(&spec.audience)?;
        let attributes = self
            .volume_context
            .iter()
            .filter(|(k, _)| k.as_str() != TOKENS_KEY)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(CheckedPublish {
            id,
            target,
            readonly: self.readonly,
            fs_group,
            selinux_label,
            fingerprint,
            attributes,
            spec,
            pod,
            identity,
        })
    }

    /// The pod's service-account token: from `secrets` first (Kubernetes
    /// 1.35+ with `serviceAccountTokenInSecrets`), then `volume_context`.
    fn identity(&self, audience: &str) -> Result<ServiceAccountToken, Error> {
        let json = self
            .secrets
            .get(TOKENS_KEY)
            .or_else(|| self.volume_context.get(TOKENS_KEY))
            .ok_or_else(|| IdentityError::MissingAudience {
                audience: audience.to_owned(),
                available: Vec::new(),
            })?;
        Ok(ServiceAccountToken::from_kubelet_json(
            json,
            audience,
            SystemTime::now(),
        )?)
    }
}

/// Checks a NodeUnpublishVolume's fields against the node's `kubelet_dir`.
pub fn check_unpublish(
    volume_id: &str,
    target_path: &str,
    kubelet_dir: &Path,
) -> Result<CheckedUnpublish, Error> {
    Ok(CheckedUnpublish {
        id: required_id(volume_id)?,
        target: required_target(target_path, kubelet_dir)?,
    })
}

fn required_id(raw: &str) -> Result<VolumeId, Error> {
    if raw.is_empty() {
        return Err(Error::MissingField { field: "volume_id" });
    }
    VolumeId::parse(raw)
}

fn required_target(raw: &str, kubelet_dir: &Path) -> Result<TargetPath, Error> {
    if raw.is_empty() {
        return Err(Error::MissingField {
            field: "target_path",
        });
    }
    TargetPath::parse(raw, kubelet_dir)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;

    /// Spoils one field of a good request.
    type Spoil = fn(&mut PublishRequest);

    fn request() -> PublishRequest {
        PublishRequest {
            volume_id: "csi-1".into(),
            target_path: "/k/pods/u/volumes/kubernetes.io~csi/v/mount".into(),
            capability: Some(PublishCapability::Mount {
                mount_group: String::new(),
                mount_flags: Vec::new(),
            }),
            readonly: true,
            volume_context: HashMap::new(),
            secrets: HashMap::new(),
        }
    }

    fn defaults() -> SpecDefaults {
        let addr = url::Url::parse("http://vault:8200").unwrap();
        SpecDefaults {
            vault_addr: Some(addr.clone()),
            allowed_vault_addrs: vec![addr],
            static_refresh_interval: Duration::from_secs(300),
        }
    }

    /// Every field kubelet controls is refused with the error that names
    /// it, before any attribute or token is read.
    #[test]
    fn malformed_requests_are_refused_by_field() {
        let kubelet = PathBuf::from("/k");
        let table: Vec<(Spoil, &str)> = vec![
            (|r| r.volume_id.clear(), "volume_id is required"),
            (|r| r.target_path.clear(), "target_path is required"),
            (|r| r.volume_id = "../x".into(), "invalid volume_id"),
            (
                |r| r.target_path = "/elsewhere/x".into(),
                "invalid target_path",
            ),
            (|r| r.capability = None, "volume_capability is required"),
            (
                |r| r.capability = Some(PublishCapability::Block),
                "block volumes",
            ),
            (
                |r| {
                    r.capability = Some(PublishCapability::Mount {
                        mount_group: "staff".into(),
                        mount_flags: Vec::new(),
                    });
                },
                "not a numeric group id",
            ),
            (
                |r| {
                    r.capability = Some(PublishCapability::Mount {
                        mount_group: String::new(),
                        mount_flags: vec!["exec".into()],
                    });
                },
                "mount_flags",
            ),
        ];
        for (spoil, expected) in table {
            let mut r = request();
            spoil(&mut r);
            let error = r.check(&kubelet, &defaults()).unwrap_err().to_string();
            assert!(error.contains(expected), "{expected}: {error}");
        }
        let error = check_unpublish("", "/k/pods/u/v", &kubelet).unwrap_err();
        assert!(error.to_string().contains("volume_id is required"));
        let error = check_unpublish("v", "/k/../etc", &kubelet).unwrap_err();
        assert!(error.to_string().contains("invalid target_path"), "{error}");
    }
}
