//! # vault-csi-driver
//!
//! A Kubernetes CSI node plugin that delivers HashiCorp Vault (and
//! OpenBao) secrets to pods as files, replacing the Vault Agent container
//! each pod would otherwise run. One process per node serves every pod: it logs in to
//! Vault *as the pod's own service account* (kubelet passes the token via
//! the CSIDriver's `tokenRequests`), renders handlebars templates into a
//! tmpfs mounted at the pod's volume path, and keeps the files fresh by
//! renewing leases and re-fetching before anything expires.
//!
//! ## Architecture
//!
//! The volume core is a hub; the arrows are imports, without cycles
//! (ARCHITECTURE.md has the walk of a publish and of a refresh):
//!
//! ```text
//!  kubelet ──gRPC over a unix socket──▶ csi ──▶ volume ◀── refresh (one scheduler:
//!                                                 │          due volumes go back to
//!                                                 │          volume as a Refresher)
//!                     ┌──────────────┬────────────┼─────────────┐
//!                     ▼              ▼            ▼             ▼
//!                   vault          render      storage        signal
//!             (SecretSource     (templates)  (VolumeRoots)  (app signals)
//!                 port)
//!
//!  timing: when things are due, pure; a leaf every module may use
//!  convert: the vault-csi-convert crate, reaching the driver through a port
//! ```
//!
//! * [`csi`]: the gRPC services and the socket; [`csi::status`] is the only
//!   place errors become gRPC codes.
//! * [`volume`]: the [`volume::VolumeManager`] (publish, unpublish,
//!   restore, refresh), which reaches the world only through its ports
//!   ([`volume::ports`]: Vault, the record store, the volume roots), so it
//!   is unit-tested against in-memory fakes; the records
//!   ([`volume::record`]) and the memory budget ([`volume::memory`]).
//! * [`vault`]: the HTTP client and [`vault::GovernedVault`] (every request
//!   under the node's budget), the pod identity.
//! * [`render`]: the [`render::Renderer`] and its helpers, on render threads
//!   of their own.
//! * [`storage`]: the [`storage::VolumeRoots`] seam (tmpfs mounts, or plain
//!   directories) and the [`storage::AtomicWriter`].
//! * [`refresh`]: the [`refresh::RefreshScheduler`], generic over its key.
//! * [`timing`]: every timing rule as a pure function; imports nothing of
//!   the crate.
//! * [`signal`]: the signal a volume asks for after its files changed,
//!   sent to its pod's processes ([`signal::AppSignal`]).
//! * [`metrics`]: Prometheus metrics, `/healthz`, `/readyz`.
//! * [`app`]: wiring (it chooses the ports) and graceful shutdown;
//!   [`config`]: flags; [`telemetry`]: log set-up.
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
