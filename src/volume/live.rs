//! The in-memory form of a published volume ([`LiveVolume`]), built in one
//! place ([`LiveVolume::new`]) from what a publish or a restore gathered:
//! where its files are ([`Placement`]), what kubelet asked for
//! ([`Published`]), its Vault token ([`TokenState`]) and its secrets
//! ([`LiveSecret`]), each with its next deadline. *When* something is due
//! comes from [`crate::timing`]; this module only applies the plans. The
//! persisted form is [`super::record`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::memory::cost::VolumeCost;
use super::memory::{Charge, Exhausted};
use super::spec::{PodInfo, TargetPath, VolumeId, VolumeSpec};
use crate::metrics::VolumeLabels;
use crate::render::CompiledTemplates;
use crate::secret::Secret;
use crate::storage::selinux;
use crate::timing::{self, Lifetime, Step};
use crate::vault::{
    AuthToken, Endpoint, LeaseId, SecretRequest, SecretResponse, ServiceAccountToken,
};

/// A volume's Vault token and when to renew or replace it.
#[derive(Debug)]
pub(super) struct Session {
    pub token: Secret<String>,
    pub expires_at: Instant,
    /// TTL asked for on each renewal (the TTL granted at login).
    pub requested_ttl: Duration,
    pub renewable: bool,
    /// A batch token: it cannot be revoked, so its leases are revoked one
    /// by one at unpublish.
    pub batch: bool,
    /// Renewal stopped extending the token: log in again at `due`.
    pub exhausted: bool,
    pub due: Instant,
}

impl Session {
    /// A session from a fresh login, planned by [`timing::plan_login`].
    pub fn from_login(auth: AuthToken, u: f64) -> Self {
        let plan = timing::plan_login(auth.ttl, auth.renewable, u);
        let now = auth.obtained_at;
        Self {
            expires_at: now + plan.lifetime,
            requested_ttl: plan.lifetime,
            renewable: !plan.exhausted,
            batch: auth.batch,
            exhausted: plan.exhausted,
            due: now + plan.due_in,
            token: auth.token,
        }
    }

    /// Applies a `renew-self` answer ([`timing::plan_token_renewal`]).
    pub fn renewed(&mut self, auth: &AuthToken, u: f64) {
        let plan = timing::plan_token_renewal(self.requested_ttl, auth.ttl, u);
        let now = auth.obtained_at;
        self.expires_at = now + plan.lifetime;
        self.exhausted = plan.exhausted;
        self.due = now + plan.due_in;
    }

    /// True when the token must be replaced by a new login now.
    pub fn needs_login(&self, now: Instant) -> bool {
        self.expires_at <= now || (self.exhausted && self.due <= now)
    }
}

/// The token side of a volume: the session (if a login succeeded) and the
/// backoff of the token step.
#[derive(Debug, Default)]
pub(super) struct TokenState {
    pub session: Option<Session>,
    /// Failures of the token step in a row.
    pub failures: u32,
    /// When the token step may be tried again after a failure.
    pub retry_at: Option<Instant>,
    /// When Vault was last asked whether the token is still valid after a
    /// refusal (see [`super::plan::VALIDITY_CHECK_INTERVAL`]).
    pub checked_at: Option<Instant>,
}

impl TokenState {
    /// Schedules the token step's retry after a failure, never past the
    /// current token's end.
    pub fn failed(&mut self, now: Instant, retry_after: Option<Duration>) {
        let remaining = self
            .session
            .as_ref()
            .map(|s| s.expires_at.saturating_duration_since(now));
        let delay = timing::retry_delay(self.failures, timing::draw(), retry_after, remaining);
        self.failures = self.failures.saturating_add(1);
        self.retry_at = Some(now + delay);
    }

    /// The token step succeeded.
    pub fn recovered(&mut self) {
        self.failures = 0;
        self.retry_at = None;
    }

    /// The token, while it has not expired.
    pub fn usable(&self, now: Instant) -> Option<&Secret<String>> {
        self.session
            .as_ref()
            .filter(|s| s.expires_at > now)
            .map(|s| &s.token)
    }
}

/// One `secret` call of a volume, with the answer it was last rendered
/// from and its next deadline.
#[derive(Debug)]
pub(super) struct LiveSecret {
    pub request: SecretRequest,
    /// Vault's answer (the whole JSON body) the files were rendered from;
    /// `None` only after a restart from a record that kept none.
    pub answer: Option<Secret<Vec<u8>>>,
    pub lease_id: Option<LeaseId>,
    pub step: Step,
    pub increment: Duration,
    pub expires_at: Option<Instant>,
    pub due: Instant,
    pub failures: u32,
}

impl LiveSecret {
    /// A fresh answer, planned by [`timing::plan_secret`].
    pub fn from_response(
        request: SecretRequest,
        response: SecretResponse,
        static_interval: Duration,
        u: f64,
    ) -> Self {
        let now = response.fetched_at;
        let life = Lifetime {
            leased: response.lease_id.is_some(),
            lease: response.lease_duration,
            renewable: response.renewable,
            rotation: response.rotation,
            certificate: response.expiration.map(unix_to_remaining),
        };
        let plan = timing::plan_secret(life, static_interval, u);
        Self {
            request,
            lease_id: response.lease_id,
            answer: Some(response.raw),
            step: plan.step,
            increment: plan.increment,
            expires_at: plan.expires_in.map(|d| now + d),
            due: now + plan.due_in,
            failures: 0,
        }
    }

    /// Applies a lease renewal granted `ttl` at `at`
    /// ([`timing::plan_lease_renewal`]).
    pub fn renewed(&mut self, at: Instant, ttl: Duration, u: f64) {
        let (step, due_in) = timing::plan_lease_renewal(self.increment, ttl, u);
        self.expires_at = Some(at + ttl);
        self.failures = 0;
        self.step = step;
        self.due = at + due_in;
    }

    /// Puts off a re-read the node held back ([`timing::deferral_delay`]).
    /// Not a failure: the backoff is not raised.
    pub fn deferred(&mut self, now: Instant, wait: Duration, u: f64) {
        self.due = now + timing::deferral_delay(wait, u, self.remaining(now));
    }

    /// Schedules a retry after a failure ([`timing::retry_delay`]).
    pub fn failed(&mut self, now: Instant, retry_after: Option<Duration>, u: f64) {
        self.due = now + timing::retry_delay(self.failures, u, retry_after, self.remaining(now));
        self.failures = self.failures.saturating_add(1);
    }

    /// True once what the secret protects has ended (its lease, or its
    /// certificate): the file holds a dead credential.
    pub fn has_ended(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|end| end <= now)
    }

    fn remaining(&self, now: Instant) -> Option<Duration> {
        self.expires_at.map(|e| e.saturating_duration_since(now))
    }
}

/// Where and how a volume's files are held; fixed at publish.
#[derive(Debug, Clone)]
pub(super) struct Placement {
    pub target: TargetPath,
    pub readonly: bool,
    pub fs_group: Option<u32>,
    /// The SELinux label of the volume's tmpfs, if any.
    pub selinux_context: Option<selinux::Context>,
}

/// What kubelet asked for; fixed at publish (a republish that differs in
/// anything but the token is refused).
#[derive(Debug)]
pub(super) struct Published {
    pub fingerprint: String,
    /// The attributes, without kubelet's token attribute.
    pub attributes: BTreeMap<String, String>,
    pub spec: VolumeSpec,
    pub pod: PodInfo,
}

/// What a publish or a restore gathered to build a [`LiveVolume`].
pub(super) struct VolumeParts {
    pub id: VolumeId,
    pub placement: Placement,
    pub published: Published,
    pub templates: Arc<CompiledTemplates>,
    pub identity: Option<ServiceAccountToken>,
    pub session: Option<Session>,
    pub secrets: Vec<LiveSecret>,
    pub memory: Charge,
}

/// Everything the driver knows about one published volume.
pub(super) struct LiveVolume {
    pub id: VolumeId,
    pub placement: Placement,
    pub published: Published,
    /// The volume's Vault, from its spec.
    pub endpoint: Endpoint,
    pub labels: VolumeLabels,
    pub templates: Arc<CompiledTemplates>,
    /// The newest service-account token kubelet sent.
    pub identity: Option<ServiceAccountToken>,
    pub token: TokenState,
    pub secrets: Vec<LiveSecret>,
    /// The last refresh left something failed, or a file holds something
    /// past its end.
    pub degraded: bool,
    /// Renders in a row that stopped at a render limit (time, work, …).
    pub render_strikes: u32,
    /// The volume's share of the node's memory budget, holding `cost`.
    pub memory: Charge,
    /// What the volume costs, part by part.
    pub cost: VolumeCost,
    /// A digest of the record last written, so an unchanged record is not
    /// written again.
    pub recorded: Option<u64>,
}

impl LiveVolume {
    /// The one place a live volume is built, for a publish and a restore
    /// alike.
    pub fn new(parts: VolumeParts) -> Self {
        let VolumeParts {
            id,
            placement,
            published,
            templates,
            identity,
            session,
            secrets,
            memory,
        } = parts;
        Self {
            endpoint: Endpoint {
                address: published.spec.vault_addr.clone(),
                namespace: published.spec.namespace.clone(),
            },
            labels: VolumeLabels {
                pod_namespace: published.pod.namespace.clone(),
                pod_name: published.pod.name.clone(),
                volume_id: id.to_string(),
            },
            id,
            placement,
            published,
            templates,
            identity,
            token: TokenState {
                session,
                ..TokenState::default()
            },
            secrets,
            degraded: false,
            render_strikes: 0,
            memory,
            cost: VolumeCost::default(),
            recorded: None,
        }
    }

    /// Charges the volume's cost as it stands, if the budget allows.
    pub fn charge(&self) -> Result<(), Exhausted> {
        self.memory.resize(self.cost.total()).map(drop)
    }

    /// Charges the volume's cost whatever the budget says (what exists).
    pub fn force_charge(&self) {
        self.memory.force(self.cost.total());
    }

    /// The cost of the volume's attributes as held: by the request and by
    /// the record, each a copy.
    pub fn attributes_cost(attributes: &BTreeMap<String, String>) -> u64 {
        2 * attributes
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64 + 64)
            .sum::<u64>()
    }

    /// The volume's spec.
    pub fn spec(&self) -> &VolumeSpec {
        &self.published.spec
    }

    /// The pod namespace: the tenant whose budgets the volume spends.
    pub fn tenant(&self) -> &str {
        &self.published.pod.namespace
    }

    /// Mode of the files: `fileMode`, else 0440 with an fsGroup, else 0444.
    pub fn file_mode(&self) -> u32 {
        self.spec()
            .file_mode
            .unwrap_or(if self.placement.fs_group.is_some() {
                0o440
            } else {
                0o444
            })
    }

    /// The earliest deadline of the token and every secret.
    pub fn next_due(&self) -> Option<Instant> {
        let token = match (&self.token.session, self.token.retry_at) {
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
        self.token
            .session
            .as_ref()
            .map(|s| s.expires_at)
            .into_iter()
            .chain(self.secrets.iter().filter_map(|t| t.expires_at))
            .min()
    }

    /// True while a file holds a credential past its end.
    pub fn holds_ended(&self, now: Instant) -> bool {
        self.secrets.iter().any(|s| s.has_ended(now))
    }

    /// Bytes of the Vault answers the volume keeps.
    pub fn kept_bytes(&self) -> u64 {
        self.secrets
            .iter()
            .filter_map(|s| s.answer.as_ref())
            .map(|a| a.expose().len() as u64)
            .sum()
    }
}

/// Time left until `unix_secs` (a certificate's NotAfter), capped at
/// Vault's longest TTL; zero when it has passed.
fn unix_to_remaining(unix_secs: u64) -> Duration {
    let at = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(unix_secs));
    at.and_then(|at| at.duration_since(SystemTime::now()).ok())
        .map_or(Duration::ZERO, |d| d.min(crate::vault::MAX_TTL))
}

/// The one pairing of the monotonic clock with the wall clock this
/// process converts deadlines by: taken once, so converting the same
/// deadline twice gives the same wall-clock time (a record that did not
/// change is byte for byte the same, and is not written again).
fn anchor() -> (Instant, SystemTime) {
    static ANCHOR: std::sync::OnceLock<(Instant, SystemTime)> = std::sync::OnceLock::new();
    *ANCHOR.get_or_init(|| (Instant::now(), SystemTime::now()))
}

/// The wall-clock time of a monotonic deadline (for metrics and records).
pub(super) fn wall_clock(at: Instant) -> SystemTime {
    let (anchor_i, anchor_s) = anchor();
    if at >= anchor_i {
        anchor_s + (at - anchor_i)
    } else {
        anchor_s
            .checked_sub(anchor_i - at)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

/// The monotonic deadline of a wall-clock time (capped at Vault's longest
/// TTL ahead of now; a time in the past is now or earlier).
pub(super) fn monotonic(at: SystemTime) -> Instant {
    let (anchor_i, anchor_s) = anchor();
    let deadline = match at.duration_since(anchor_s) {
        Ok(ahead) => anchor_i + ahead.min(crate::vault::MAX_TTL),
        Err(behind) => anchor_i.checked_sub(behind.duration()).unwrap_or(anchor_i),
    };
    deadline.min(Instant::now() + crate::vault::MAX_TTL)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn auth(ttl: u64, renewable: bool, at: Instant) -> AuthToken {
        AuthToken {
            token: Secret::new("hvs.t".to_owned()),
            ttl: secs(ttl),
            renewable,
            warnings: Vec::new(),
            batch: false,
            obtained_at: at,
        }
    }

    fn response(lease: Option<&str>, ttl: u64, renewable: bool, at: Instant) -> SecretResponse {
        SecretResponse {
            lease_id: lease.map(LeaseId::new),
            lease_duration: secs(ttl),
            renewable,
            expiration: None,
            rotation: None,
            raw: Secret::new(b"{}".to_vec()),
            fetched_at: at,
        }
    }

    fn request() -> SecretRequest {
        SecretRequest::new("database/creds/app", &serde_json::Map::new()).unwrap()
    }

    /// A token is renewed until a renewal comes back capped; from then on
    /// it needs a login at its deadline, and always once it has expired.
    #[tokio::test(start_paused = true)]
    async fn a_session_renews_until_capped_then_needs_a_login() {
        let t0 = Instant::now();
        let mut session = Session::from_login(auth(3600, true, t0), 0.0);
        assert_eq!(session.expires_at, t0 + secs(3600));
        assert_eq!(session.due, t0 + secs(2160));
        assert!(!session.needs_login(session.due));

        session.renewed(&auth(3600, true, t0 + secs(2160)), 0.0);
        assert!(!session.exhausted);
        session.renewed(&auth(600, true, t0 + secs(4000)), 0.0);
        assert!(
            session.exhausted,
            "a renewal granting less than asked is capped"
        );
        assert!(!session.needs_login(t0 + secs(4000)));
        assert!(session.needs_login(session.due));
        assert!(session.needs_login(session.expires_at));

        let unrenewable = Session::from_login(auth(60, false, t0), 0.0);
        assert!(unrenewable.exhausted && !unrenewable.renewable);
    }

    /// A secret follows its plan: renewed in place until capped, retried
    /// with growing backoff never past its end, deferred without backoff.
    #[tokio::test(start_paused = true)]
    async fn a_secret_applies_its_plan_and_never_waits_past_its_end() {
        let t0 = Instant::now();
        let mut secret = LiveSecret::from_response(
            request(),
            response(Some("database/creds/app/1"), 600, true, t0),
            secs(300),
            0.0,
        );
        assert_eq!(secret.step, Step::Renew);
        assert_eq!(secret.expires_at, Some(t0 + secs(600)));
        assert_eq!(secret.due, t0 + secs(360));

        secret.renewed(t0 + secs(360), secs(600), 0.0);
        assert_eq!((secret.step, secret.due), (Step::Renew, t0 + secs(720)));
        secret.renewed(t0 + secs(720), secs(90), 0.0);
        assert_eq!(secret.step, Step::Refetch, "capped: replace it");
        assert_eq!(secret.due, t0 + secs(780));

        let now = t0 + secs(800);
        let mut last = Duration::ZERO;
        for _ in 0..10 {
            secret.failed(now, None, 0.0);
            let wait = secret.due - now;
            assert!(wait >= last, "backoff grows");
            assert!(now + wait < t0 + secs(810), "never past the end");
            last = wait;
        }
        let failures = secret.failures;
        secret.deferred(now, secs(2), 0.0);
        assert_eq!(secret.failures, failures, "a deferral is not a failure");
        assert_eq!(secret.due, now + secs(2));
        assert!(!secret.has_ended(now));
        assert!(secret.has_ended(t0 + secs(810)));
    }
}
