//! Vault: the pod's identity (its service-account token), the login that
//! turns it into a Vault token, and the HTTP calls made with that token.
//!
//! The driver holds no Vault credentials of its own. Every call is made with
//! a token obtained by logging in *as the pod*, so Vault's policies for the
//! pod's role decide what a volume can read.

mod client;
mod governed;
mod governor;
mod http;
mod identity;
mod mounts;
mod request;
mod response;
mod scrub;

use std::time::Duration;

use tokio::time::Instant;

pub use client::VaultClient;
pub use governed::{Caller, Endpoint, GovernedSettings, GovernedVault, Urgency};
pub use governor::{BudgetSettings, Governor, Priority};
pub use http::{HttpSettings, MAX_RESPONSE_BYTES, build_http};
pub use identity::{IdentityError, ServiceAccountToken, TOKENS_KEY};
pub use mounts::{MAX_CACHED_MOUNTS, MOUNT_TTL, Mount, MountCache};
pub use request::{InvalidRequest, SecretRequest, withhold_for};
pub use response::{Renewal, parse_retry_after};
pub use scrub::error_message;

use crate::secret::Secret;

/// Where the bytes of a Vault answer are charged as they are read, before
/// they are held: a volume's memory reservation. A body is read chunk by
/// chunk, and every buffer it needs is taken from the meter first.
pub trait BodyMeter: Send + Sync {
    /// Takes `bytes` more; errs (saying which limit and the flag that sets
    /// it) when they would take the volume past its budget.
    fn take(&self, bytes: u64) -> Result<(), String>;
}

/// A meter that takes everything: for answers too small to matter (logins,
/// renewals), bounded by [`MAX_RESPONSE_BYTES`] alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unmetered;

impl BodyMeter for Unmetered {
    fn take(&self, _bytes: u64) -> Result<(), String> {
        Ok(())
    }
}

/// Longest time to live the driver believes (ten years). A hostile or
/// broken Vault can send any number; clamping keeps every deadline
/// computation in range.
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A TTL in seconds from a Vault response, clamped to [`MAX_TTL`].
pub fn ttl_from_secs(secs: u64) -> Duration {
    Duration::from_secs(secs).min(MAX_TTL)
}

/// A Vault lease id (`database/creds/app/AbC…`). Lease ids are not secret:
/// they name a lease but cannot be used to read it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct LeaseId(String);

impl LeaseId {
    /// Wraps a lease id from a Vault response.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as sent to `sys/leases/*`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A Vault token obtained by login or renewed by `renew-self`.
#[derive(Debug, Clone)]
pub struct AuthToken {
    /// The client token (never logged).
    pub token: Secret<String>,
    /// Its time to live at `obtained_at`.
    pub ttl: Duration,
    /// Whether `renew-self` may extend it.
    pub renewable: bool,
    /// Vault's warnings (a capped renewal says so here).
    pub warnings: Vec<String>,
    /// A batch token (`token_type: batch`): it cannot be renewed or
    /// revoked, so its leases outlive it unless revoked one by one.
    pub batch: bool,
    /// When the answer arrived.
    pub obtained_at: Instant,
}

/// One answer to a `secret` call: the raw body for templates (never logged)
/// plus the lease facts the refresh policy needs.
#[derive(Debug, Clone)]
pub struct SecretResponse {
    /// The lease, for dynamic secrets; `None` for KV and unleased PKI.
    pub lease_id: Option<LeaseId>,
    /// `lease_duration` (advisory for KV v1, 0 for KV v2).
    pub lease_duration: Duration,
    /// Whether `sys/leases/renew` may extend the lease.
    pub renewable: bool,
    /// A certificate's NotAfter in unix seconds (`data.expiration`), read
    /// only from answers that carry a certificate (`data.certificate` or
    /// `data.serial_number`): elsewhere, as in KV v1, `data` is the user's
    /// own map and an `expiration` key there means nothing to Vault.
    pub expiration: Option<u64>,
    /// Time to the next rotation of static database or LDAP credentials
    /// (`data.ttl` of `<mount>/static-creds/<role>` or
    /// `<mount>/static-cred/<role>`), which carry no lease.
    pub rotation: Option<Duration>,
    /// The whole JSON response body.
    pub raw: Secret<Vec<u8>>,
    /// When the answer arrived.
    pub fetched_at: Instant,
}

/// What went wrong talking to Vault. Messages carry the operation and
/// Vault's own (scrubbed) words; never a token or a secret value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The driver's Vault settings are unusable (bad CA bundle, bad address).
    #[error("Vault client configuration: {reason}")]
    Config {
        /// What to fix.
        reason: String,
    },
    /// Vault could not be reached, or did not answer in time.
    #[error(
        "Vault at {address} is unreachable during {operation} ({reason}); check the address, the network path and Vault's TLS certificate (--vault-ca-cert)"
    )]
    Unreachable {
        /// The API call being made.
        operation: &'static str,
        /// Vault's address.
        address: String,
        /// Connect, TLS or timeout detail.
        reason: String,
    },
    /// Vault answered 429: a rate-limit or lease-count quota.
    #[error("Vault rate-limited {operation} ({status}): {message}{}", retry_hint(*retry_after))]
    RateLimited {
        /// The API call being made.
        operation: &'static str,
        /// Always 429.
        status: u16,
        /// Vault's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
        /// Vault's message.
        message: String,
    },
    /// Vault answered with an error status.
    #[error("Vault refused {operation} with HTTP {status}: {message}")]
    Status {
        /// The API call being made.
        operation: &'static str,
        /// The HTTP status.
        status: u16,
        /// Vault's `errors`, joined and scrubbed.
        message: String,
    },
    /// The driver held a request back instead of sending it: the pod
    /// namespace is over its request budget, or Vault pushed back and the
    /// request was cosmetic. It is tried again later.
    #[error("{operation} was held back for {}s: {reason}", retry_after.as_secs_f64().ceil())]
    Held {
        /// The API call that was not sent.
        operation: &'static str,
        /// Why, and which flags set the budget.
        reason: &'static str,
        /// When it may be tried again.
        retry_after: Duration,
    },
    /// Holding Vault's answer would take the volume past its memory budget:
    /// it was refused while being read, before it was held.
    #[error("Vault's answer to {operation} was not read: {reason}")]
    OverBudget {
        /// The API call being made.
        operation: &'static str,
        /// Which limit, and the flag that sets it.
        reason: String,
    },
    /// Vault answered 2xx with a body the driver cannot use.
    #[error("Vault's answer to {operation} is unusable: {reason}")]
    InvalidResponse {
        /// The API call being made.
        operation: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

fn retry_hint(retry_after: Option<Duration>) -> String {
    retry_after.map_or_else(String::new, |wait| {
        format!("; Vault asks to retry in {} s", wait.as_secs())
    })
}

impl Error {
    /// True for failures that may pass on their own (network, 5xx, 429, a
    /// standby's redirect, a missing index state), so a retry is worth it.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::RateLimited { .. } | Self::Held { .. } => true,
            Self::Status { status, .. } => {
                *status >= 500 || *status == 412 || (300..400).contains(status)
            }
            Self::Config { .. } | Self::InvalidResponse { .. } | Self::OverBudget { .. } => false,
        }
    }

    /// True when a failed `renew-self` means the token can never be renewed
    /// again, so retrying it until it expires is pointless: Vault answers
    /// 500 when the token is past its max TTL or its role was deleted
    /// ("role does not exist during renewal"), and 4xx when it is revoked
    /// or not renewable. The remedy is a new login.
    pub fn ends_token_renewal(&self) -> bool {
        match self {
            Self::Status { status, .. } => {
                *status == 500 || ((400..500).contains(status) && *status != 412)
            }
            Self::InvalidResponse { .. } => true,
            Self::Unreachable { .. }
            | Self::RateLimited { .. }
            | Self::Held { .. }
            | Self::Config { .. }
            | Self::OverBudget { .. } => false,
        }
    }

    /// True when Vault did not answer at all or answered as a server that
    /// cannot serve (sealed, or a proxy in front of it without a backend):
    /// nothing is wrong with the request, and it may go again as soon as
    /// Vault answers.
    pub fn is_outage(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Status { status, .. } => matches!(status, 502..=504),
            _ => false,
        }
    }

    /// True for Vault's 403: the token may not do this (a policy), or the
    /// token is no longer valid (revoked, expired).
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, Self::Status { status: 403, .. })
    }

    /// How long Vault asked us to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            Self::Held { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The HTTP status Vault answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::RateLimited { status, .. } | Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}
