//! The in-memory state of one published volume and the bookkeeping of its
//! Vault token and secrets: what is due when, and what to do about it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::spec::{PodInfo, TargetPath, VolumeSpec};
use super::state::{StoredAction, StoredIdentity, StoredSecret, StoredToken};
use crate::metrics::VolumeLabels;
use crate::refresh::policy;
use crate::render::{CompiledTemplates, SecretRequest};
use crate::secret::Secret;
use crate::vault::{AuthToken, LeaseId, SecretResponse, ServiceAccountToken, VaultClient};

/// A volume's Vault token and when to renew or replace it.
#[derive(Debug)]
pub(super) struct Session {
    pub token: Secret<String>,
    pub expires_at: Instant,
    /// TTL asked for on each renewal (the TTL granted at login).
    pub requested_ttl: Duration,
    pub renewable: bool,
    /// Renewal stopped extending the token: log in again at `due`.
    pub exhausted: bool,
    pub due: Instant,
}

impl Session {
    /// A session from a fresh login. A token without a TTL is planned as
    /// a non-renewable one of [`policy::NO_TTL_LIFETIME`], so a login
    /// answered `lease_duration: 0` cannot make the driver log in again at
    /// once.
    pub fn from_login(auth: AuthToken, u: f64) -> Self {
        let now = auth.obtained_at;
        let ttl = policy::token_lifetime(auth.ttl);
        let renewable = auth.renewable && !auth.ttl.is_zero();
        let due = if renewable {
            now + policy::renew_delay(ttl, u)
        } else {
            now + policy::refetch_delay(ttl, u)
        };
        Self {
            expires_at: now + ttl,
            requested_ttl: ttl,
            renewable,
            exhausted: !renewable,
            due,
            token: auth.token,
        }
    }

    /// Applies a `renew-self` answer.
    pub fn renewed(&mut self, auth: &AuthToken, u: f64) {
        let now = auth.obtained_at;
        let ttl = policy::token_lifetime(auth.ttl);
        self.expires_at = now + ttl;
        if policy::renewal_capped(self.requested_ttl, ttl) {
            self.exhausted = true;
            self.due = now + policy::refetch_delay(ttl, u);
        } else {
            self.due = now + policy::renew_delay(ttl, u);
        }
    }

    /// True when the token must be replaced by a new login now.
    pub fn needs_login(&self, now: Instant) -> bool {
        self.expires_at <= now || (self.exhausted && self.due <= now)
    }
}

/// What happens to a secret at its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// Renew its lease in place (same credentials, no re-render).
    Renew,
    /// Fetch it again and re-render.
    Refetch,
}

/// One `secret` call of a volume, with its latest answer and deadline.
#[derive(Debug)]
pub(super) struct Tracked {
    pub request: SecretRequest,
    /// The latest answer; `None` after a restart until fetched again.
    pub response: Option<SecretResponse>,
    pub lease_id: Option<LeaseId>,
    pub action: Action,
    pub increment: Duration,
    pub expires_at: Option<Instant>,
    pub due: Instant,
    pub failures: u32,
}

impl Tracked {
    /// Classifies a fresh answer and schedules its next step:
    /// renewable lease → renew at ~2/3; non-renewable lease or certificate →
    /// re-fetch between 2/3 and 9/10; static database/LDAP credentials →
    /// re-read just after their next rotation; anything else (KV) → re-read
    /// every `static_interval`. Every delay has the policy's floor.
    pub fn from_response(
        request: SecretRequest,
        response: SecretResponse,
        static_interval: Duration,
        u: f64,
    ) -> Self {
        let now = response.fetched_at;
        let lease = response.lease_duration;
        let (action, expires_at, due, increment) = match (&response.lease_id, response.expiration) {
            (Some(_), _) if response.renewable && !lease.is_zero() => (
                Action::Renew,
                Some(now + lease),
                now + policy::renew_delay(lease, u),
                lease,
            ),
            (Some(_), _) if !lease.is_zero() => (
                Action::Refetch,
                Some(now + lease),
                now + policy::refetch_delay(lease, u),
                lease,
            ),
            (None, _) if response.rotation.is_some() => {
                let to_rotation = response.rotation.unwrap_or_default();
                (
                    Action::Refetch,
                    None,
                    now + policy::rotation_delay(to_rotation, u),
                    Duration::ZERO,
                )
            }
            (_, Some(not_after)) => {
                let remaining = unix_to_remaining(not_after);
                (
                    Action::Refetch,
                    Some(now + remaining),
                    now + policy::refetch_delay(remaining, u),
                    remaining,
                )
            }
            _ => (
                Action::Refetch,
                None,
                now + policy::static_delay(static_interval, u),
                Duration::ZERO,
            ),
        };
        Self {
            request,
            lease_id: response.lease_id.clone(),
            response: Some(response),
            action,
            increment,
            expires_at,
            due,
            failures: 0,
        }
    }

    /// Puts off a re-read the node held back (Vault pushed back, or the
    /// namespace's budget is spent): due again after `wait`, spread by up to
    /// a fifth so deferred volumes do not return together, never past the
    /// end of what it protects. Not a failure: the backoff is not raised.
    pub fn deferred(&mut self, now: Instant, wait: Duration, u: f64) {
        let remaining = self.expires_at.map(|e| e.saturating_duration_since(now));
        let spread = wait.mul_f64(1.0 + 0.2 * u);
        self.due = now + policy::before_expiry(spread.max(policy::MIN_DELAY), remaining);
    }

    /// Schedules a retry after a failure, never past the lease's end.
    pub fn failed(&mut self, now: Instant, retry_after: Option<Duration>, u: f64) {
        let delay = policy::backoff_delay(self.failures, u, retry_after);
        self.failures = self.failures.saturating_add(1);
        let remaining = self.expires_at.map(|e| e.saturating_duration_since(now));
        self.due = now + policy::before_expiry(delay, remaining);
    }
}

/// Everything the driver knows about one published volume.
pub(super) struct VolumeState {
    pub target: TargetPath,
    pub readonly: bool,
    pub fs_group: Option<u32>,
    /// The SELinux label of the volume's tmpfs, if any.
    pub selinux_context: Option<crate::storage::selinux::Context>,
    pub fingerprint: String,
    pub attributes: BTreeMap<String, String>,
    pub spec: VolumeSpec,
    pub pod: PodInfo,
    pub labels: VolumeLabels,
    pub templates: Arc<CompiledTemplates>,
    pub client: VaultClient,
    pub identity: Option<ServiceAccountToken>,
    pub session: Option<Session>,
    pub secrets: Vec<Tracked>,
    /// Retry counter for the token step.
    pub token_failures: u32,
    /// When the token step may be tried again after a failure.
    pub token_retry_at: Option<Instant>,
    /// The last refresh left something failed.
    pub degraded: bool,
    /// The volume's share of the node's memory budget.
    pub memory: super::memory::Charge,
}

impl VolumeState {
    /// Mode of the files: `fileMode`, else 0440 with an fsGroup, else 0444.
    pub fn file_mode(&self) -> u32 {
        self.spec.file_mode.unwrap_or(if self.fs_group.is_some() {
            0o440
        } else {
            0o444
        })
    }

    /// The earliest deadline of the token and every secret.
    pub fn next_due(&self) -> Option<Instant> {
        let token = match (&self.session, self.token_retry_at) {
            (_, Some(retry)) => Some(retry),
            (Some(s), None) => Some(s.due.min(s.expires_at)),
            (None, None) => None,
        };
        token
            .into_iter()
            .chain(self.secrets.iter().map(|t| t.due))
            .min()
    }

    /// The soonest moment something in the volume expires.
    pub fn soonest_expiry(&self) -> Option<Instant> {
        self.session
            .as_ref()
            .map(|s| s.expires_at)
            .into_iter()
            .chain(self.secrets.iter().filter_map(|t| t.expires_at))
            .min()
    }

    /// The persisted form of the token, identity and leases.
    pub fn stored_parts(
        &self,
    ) -> (
        Option<StoredIdentity>,
        Option<StoredToken>,
        Vec<StoredSecret>,
    ) {
        let identity = self.identity.as_ref().map(|i| StoredIdentity {
            jwt: i.jwt().expose().clone(),
            expires_at_ms: system_to_ms(i.expires_at()),
        });
        let token = self.session.as_ref().map(|s| StoredToken {
            token: s.token.expose().clone(),
            expires_at_ms: instant_to_ms(s.expires_at),
            requested_ttl_secs: s.requested_ttl.as_secs(),
            renewable: s.renewable,
            exhausted: s.exhausted,
            due_ms: instant_to_ms(s.due),
        });
        let secrets = self
            .secrets
            .iter()
            .map(|t| StoredSecret {
                request: t.request.clone(),
                lease_id: t.lease_id.clone(),
                action: match t.action {
                    Action::Renew => StoredAction::Renew,
                    Action::Refetch => StoredAction::Refetch,
                },
                increment_secs: t.increment.as_secs(),
                expires_at_ms: t.expires_at.map(instant_to_ms),
                due_ms: instant_to_ms(t.due),
            })
            .collect();
        (identity, token, secrets)
    }
}

/// Rebuilds a session from its persisted form.
pub(super) fn session_from_stored(stored: &StoredToken) -> Session {
    Session {
        token: Secret::new(stored.token.clone()),
        expires_at: ms_to_instant(stored.expires_at_ms),
        requested_ttl: Duration::from_secs(stored.requested_ttl_secs),
        renewable: stored.renewable,
        exhausted: stored.exhausted,
        due: ms_to_instant(stored.due_ms),
    }
}

/// Rebuilds a secret's bookkeeping from its persisted form (no data: the
/// next render fetches it again).
pub(super) fn tracked_from_stored(stored: &StoredSecret) -> Tracked {
    Tracked {
        request: stored.request.clone(),
        response: None,
        lease_id: stored.lease_id.clone(),
        action: match stored.action {
            StoredAction::Renew => Action::Renew,
            StoredAction::Refetch => Action::Refetch,
        },
        increment: Duration::from_secs(stored.increment_secs),
        expires_at: stored.expires_at_ms.map(ms_to_instant),
        due: ms_to_instant(stored.due_ms),
        failures: 0,
    }
}

/// Rebuilds a service-account token from its persisted form.
pub(super) fn identity_from_stored(stored: &StoredIdentity) -> ServiceAccountToken {
    ServiceAccountToken::from_parts(
        Secret::new(stored.jwt.clone()),
        ms_to_system(stored.expires_at_ms),
    )
}

fn unix_to_remaining(unix_secs: u64) -> Duration {
    let at = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(unix_secs));
    at.and_then(|at| at.duration_since(SystemTime::now()).ok())
        .map_or(Duration::ZERO, |d| d.min(crate::vault::MAX_TTL))
}

fn system_to_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn ms_to_system(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Converts a monotonic deadline to wall-clock unix milliseconds.
pub(super) fn instant_to_system(at: Instant) -> SystemTime {
    let (now_i, now_s) = (Instant::now(), SystemTime::now());
    if at >= now_i {
        now_s + (at - now_i)
    } else {
        now_s
            .checked_sub(now_i - at)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

fn instant_to_ms(at: Instant) -> u64 {
    system_to_ms(instant_to_system(at))
}

fn ms_to_instant(ms: u64) -> Instant {
    let (now_i, now_s) = (Instant::now(), SystemTime::now());
    let at = ms_to_system(ms);
    match at.duration_since(now_s) {
        Ok(ahead) => now_i + ahead.min(crate::vault::MAX_TTL),
        Err(behind) => now_i.checked_sub(behind.duration()).unwrap_or(now_i),
    }
}
