//! # vault-csi-driver
//!
//! A Kubernetes CSI node plugin that delivers HashiCorp Vault secrets to
//! pods as files, replacing the Vault Agent container each pod would
//! otherwise run. One process per node serves every pod: it logs in to
//! Vault *as the pod's own service account* (kubelet passes the token via
//! the CSIDriver's `tokenRequests`), renders handlebars templates into a
//! tmpfs mounted at the pod's volume path, and keeps the files fresh by
//! renewing leases and re-fetching before anything expires.
//!
//! ## Architecture
//!
//! Data flows one way, one module per stage:
//!
//! ```text
//!  kubelet ──gRPC over unix socket──▶ csi       NodePublish/NodeUnpublish, Identity
//!                                      │
//!                                      ▼
//!                                    volume     VolumeManager: idempotency, one op per
//!                                      │        volume, rollback, state for restarts
//!                                      ▼
//!                                    vault      login as the pod, read/write secrets,
//!                                      │        renew/revoke leases and tokens
//!                                      ▼
//!                                    render     handlebars templates + `secret` helper
//!                                      │
//!                                      ▼
//!                                    storage    VolumeRoots (tmpfs per volume, or plain
//!                                               directories), AtomicWriter
//!
//!                                    refresh    one RefreshScheduler (deadline queue) for
//!                                      │        all volumes; pure timing policy
//!                                      └──────▶ hands each due volume back to `volume`,
//!                                               whose refresh runs the same pipeline
//! ```
//!
//! * [`csi`]: the gRPC services and the socket; [`csi::status`] is the only
//!   place errors become gRPC codes.
//! * [`volume`]: the [`volume::VolumeManager`], the checked requests, the
//!   per-volume pipeline and refresh, the live and recorded forms.
//! * [`vault`]: the HTTP client and the pod identity (service-account token).
//! * [`render`]: the [`render::Renderer`] and its helpers.
//! * [`storage`]: the [`storage::VolumeRoots`] seam (tmpfs mounts, or plain
//!   directories) and the [`storage::AtomicWriter`].
//! * [`refresh`]: the [`refresh::RefreshScheduler`] and [`refresh::policy`].
//! * [`signal`]: the signal a volume asks for after its files changed,
//!   sent to its pod's processes ([`signal::AppSignal`]).
//! * [`metrics`]: Prometheus metrics, `/healthz`, `/readyz`.
//! * [`app`]: wiring and graceful shutdown; [`config`]: flags;
//!   [`telemetry`]: log set-up.
//! * [`convert`]: the `vault-csi-driver convert` subcommand, which turns
//!   Vault Agent and `OpenBao` Agent pods (agent containers, injector
//!   annotations) into pods with this driver's volume: the
//!   `vault-csi-convert` crate, with the driver's checks as its port. It is
//!   not part of the data flow above.
//!
//! Secrets never reach logs, errors or metrics: secret-bearing values are
//! [`secret::Secret`]s (`Debug` prints `***`, zeroed on drop), requests are
//! logged through [`csi::RedactedContext`], and Vault error bodies are
//! scrubbed before they travel.

pub mod app;
pub mod config;
pub mod convert;
pub mod csi;
pub mod metrics;
pub mod proto;
pub mod refresh;
pub mod render;
pub mod secret;
pub mod signal;
pub mod storage;
pub mod telemetry;
pub mod timing;
pub mod vault;
pub mod volume;
