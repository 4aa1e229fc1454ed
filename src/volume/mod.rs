//! The volume core: turns publish and unpublish calls into mounted,
//! rendered, refreshed volumes, and owns every volume's state. It reaches
//! the world only through its ports ([`ports`]: the secret source, the
//! record store, the volume roots), injected where the manager is built,
//! so it is unit-tested against in-memory fakes under paused time.
//!
//! * **Idempotency**: a repeated publish of the same volume and target is a
//!   republish (kubelet sends one about every minute under
//!   `requiresRepublish`, with its cached service-account token, which it
//!   replaces after 80 % of the token's life); it refreshes the identity
//!   and checks the volume, and never re-mints secrets. A publish that
//!   differs in anything but the token is `ALREADY_EXISTS`.
//! * **One operation per volume**: a second CSI call for a volume while one
//!   runs is refused with `ABORTED` (kubelet retries); refreshes and CSI
//!   calls on one volume are serialised by the volume's lock.
//! * **One volume per target**: a target is bound to the volume id that
//!   mounted it; another id's publish there is refused, and its unpublish
//!   leaves it alone.
//! * **Rollback**: a publish that fails leaves nothing mounted, no files, no
//!   state, and revokes whatever Vault token it obtained; a volume that was
//!   serving its pod before (an adoption) stays as it was.
//! * **Restart**: every change is persisted ([`record`]), Vault's answers
//!   included, so a restarted driver re-adopts its volumes and re-renders
//!   them without asking Vault again ([`VolumeManager::restore`]).
//!
//! One home per concern:
//!
//! | file | what |
//! |---|---|
//! | `request.rs` | CSI requests checked into typed values, before the manager |
//! | `spec/` | volume attributes, ids, target paths |
//! | `ports.rs` | what the core needs from the world, as traits |
//! | `manager.rs` | the volume map, target bindings, records written |
//! | `publish.rs`, `unpublish.rs`, `restore.rs` | the operations |
//! | `materialise.rs` | the step publish and refresh share: fetch, render, write, with an explicit mode |
//! | `plan.rs` | what a refresh does, as a pure function of state and time |
//! | `refresh.rs` | the executor of a refresh plan |
//! | `outage.rs` | volumes waiting for their Vault to answer again |
//! | `live.rs` | the in-memory volume, applying [`crate::timing`]'s plans |
//! | `record/` | the persisted volume: format and migration, conversions, stores |
//! | `memory.rs`, `guard.rs` | the node's memory budget; one operation per volume |

mod guard;
mod live;
mod manager;
mod materialise;
pub mod memory;
mod outage;
mod plan;
pub mod ports;
mod publish;
pub mod record;
mod refresh;
mod request;
mod restore;
mod spec;
mod unpublish;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use manager::{ManagerConfig, Ports, PublishOutcome, VolumeManager};
pub use request::{CheckedPublish, CheckedUnpublish, PublishCapability, PublishRequest};
pub use spec::{
    ATTRIBUTES, MAX_ATTRIBUTE_BYTES, MAX_ATTRIBUTES, MAX_FILES_PER_VOLUME, MAX_VOLUME_ID_BYTES,
    PodInfo, SpecDefaults, TargetPath, VolumeId, VolumeSpec, normalise_addr, parse_attributes,
};

use crate::{render, storage, vault};

/// Everything a publish, unpublish or refresh can fail with. Each message
/// says what to fix; the gRPC code for each is chosen in `csi::status`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A required request field is empty.
    #[error("{field} is required")]
    MissingField {
        /// The CSI request field.
        field: &'static str,
    },
    /// The volume id is unusable.
    #[error("invalid volume_id: {reason}")]
    InvalidVolumeId {
        /// What is wrong.
        reason: String,
    },
    /// The target path is outside kubelet's pods directory or not clean.
    #[error("invalid target_path {path}: {reason}")]
    InvalidTargetPath {
        /// The path as sent (escaped).
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A block volume was requested; this driver only provides files.
    #[error("block volumes are not supported: use a filesystem (mount) volume")]
    BlockVolume,
    /// The volume is not an inline ephemeral volume.
    #[error(
        "only inline ephemeral volumes are supported: declare the volume with `csi:` in the pod spec"
    )]
    NotEphemeral,
    /// A volume attribute has a bad value.
    #[error("volume attribute {key:?}: {reason}")]
    InvalidAttribute {
        /// The attribute.
        key: String,
        /// What is wrong and what to write instead.
        reason: String,
    },
    /// A volume attribute the driver does not know (likely a typo).
    #[error(
        "unknown volume attribute {key:?}; known: roleName, vaultAddress, vaultAuthMountPath, vaultNamespace, audience, fileMode, refresh, tokenFile, staticSecretRefreshInterval, signal, signalProcess, template.<file>"
    )]
    UnknownAttribute {
        /// The attribute.
        key: String,
    },
    /// A required volume attribute is missing.
    #[error("volume attribute {key:?} is required")]
    MissingAttribute {
        /// The attribute.
        key: &'static str,
    },
    /// Kubelet passed no usable service-account token.
    #[error(transparent)]
    Identity(#[from] vault::IdentityError),
    /// The templates are wrong.
    #[error(transparent)]
    Template(#[from] render::Error),
    /// Logging in to Vault as the pod failed.
    #[error("logging in to Vault at auth/{mount} with role {role:?} failed: {source}")]
    Login {
        /// The auth mount.
        mount: String,
        /// The role.
        role: String,
        /// What Vault said.
        #[source]
        source: vault::Error,
    },
    /// A refresh found no Vault token to use: the volume's last login
    /// failed and is being retried.
    #[error(
        "the volume has no Vault token (its last login failed); the login is retried with backoff"
    )]
    NoVaultToken,
    /// Renewing the volume's Vault token failed transiently.
    #[error(
        "renewing the volume's Vault token failed: {source}; retried with backoff before the token expires"
    )]
    TokenRenewal {
        /// What Vault said.
        #[source]
        source: vault::Error,
    },
    /// The Vault token must be replaced by a login, but the pod's
    /// service-account token kubelet last sent has expired.
    #[error(
        "the pod's service-account token for audience {audience:?} has expired, so the driver cannot log in to Vault again until kubelet republishes the volume with a fresh one; check that the CSIDriver sets requiresRepublish: true"
    )]
    IdentityStale {
        /// The audience of the token.
        audience: String,
    },
    /// Reading or writing a secret failed.
    #[error("fetching secret {path:?} failed: {source}")]
    Fetch {
        /// The secret path.
        path: String,
        /// What Vault said.
        #[source]
        source: vault::Error,
    },
    /// Placing files failed.
    #[error(transparent)]
    Storage(#[from] storage::Error),
    /// The node's memory budget for volumes cannot hold this volume's
    /// files; its previous files (if any) stay.
    #[error(transparent)]
    MemoryBudget(#[from] memory::Exhausted),
    /// The driver's memory cgroup is near its limit: a volume is refused
    /// before the kernel's OOM killer acts.
    #[error(transparent)]
    MemoryPressure(#[from] memory::pressure::Pressure),
    /// The state directory could not be written.
    #[error("could not write the driver's state at {path}: {source}; check --state-dir")]
    State {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Another operation on the volume is in flight.
    #[error("an operation on volume {volume_id} is already in progress; retry shortly")]
    OperationPending {
        /// The volume.
        volume_id: String,
    },
    /// The volume is published with different attributes.
    #[error(
        "volume {volume_id} is already published with different attributes; delete the pod before changing its volume"
    )]
    AlreadyExists {
        /// The volume.
        volume_id: String,
    },
    /// The runtime is shutting down and dropped work handed to its blocking
    /// pool; kubelet retries against the next driver.
    #[error("the driver is shutting down; kubelet will retry the call")]
    ShuttingDown,
    /// Vault (or a refresh holding the volume) did not answer in time; the
    /// publish was rolled back and whatever token it obtained is revoked.
    #[error(
        "Vault did not answer within --publish-timeout ({secs}s); the publish was rolled back and kubelet will retry it"
    )]
    VaultTimeout {
        /// The bound, in seconds.
        secs: f64,
    },
    /// The caller's deadline came before the operation ended; it goes on
    /// in the background and the caller's retry sees its outcome.
    #[error(
        "the call's deadline is about to pass; the operation goes on and kubelet's retry will see its outcome"
    )]
    CallDeadline,
    /// Another volume is published at the target path.
    #[error(
        "target path {target} belongs to volume {volume_id}; kubelet must unpublish that volume first"
    )]
    TargetInUse {
        /// The target path.
        target: String,
        /// The volume holding it.
        volume_id: String,
    },
    /// The volume is published at another target path.
    #[error("volume {volume_id} is already published at {existing}")]
    TargetMismatch {
        /// The volume.
        volume_id: String,
        /// Where it is.
        existing: String,
    },
}
