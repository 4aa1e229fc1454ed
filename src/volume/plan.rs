//! What one refresh of a volume does, decided from its state and the time
//! alone: [`plan`] (what is due, what to renew, whether to log in again)
//! and the decisions on what came back ([`after_renewal_error`],
//! [`may_check_token`]). Pure, so every rule has a table test; the
//! executor in `refresh.rs` runs the plan through the ports.
//!
//! | state | step |
//! |---|---|
//! | no token, an expired one, or one whose renewal is exhausted and due | log in (or wait for kubelet's fresh service-account token) |
//! | token due | renew it |
//! | token step failed, retry not due, token still valid | wait |
//! | renewable lease due | renew in place |
//! | anything else due (static re-read, capped lease, certificate) | fetch again |
//! | anything already past its end | due now, whatever its backoff says: it is dead anyway, and this is how a volume recovers at once after an outage |
//! | static re-read while Vault pushes back | put off until the pushback ends |
//! | a new login | every lease fetched again (leases end with the token that made them) |
//! | a request refused with 403 | ask Vault whether the token is still valid (at most every [`VALIDITY_CHECK_INTERVAL`]); if not, log in again at once |

use std::time::Duration;

use tokio::time::Instant;

use crate::timing::Step;
use crate::vault;

/// Shortest time between two checks of a volume's token after refusals:
/// a policy that denies a path keeps refusing, and must not cost a check
/// on every refresh.
pub(super) const VALIDITY_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// The token's timing, as the plan sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TokenClock {
    /// The session: when it expires, is next due, and whether renewal is
    /// exhausted. `None`: no token (the last login failed).
    pub session: Option<(Instant, Instant, bool)>,
    /// When a failed token step may be tried again.
    pub retry_at: Option<Instant>,
    /// The pod's service-account token is still valid (a login is
    /// possible).
    pub identity_valid: bool,
}

/// One secret's timing, as the plan sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SecretClock {
    /// When it is next due.
    pub due: Instant,
    /// What happens when it is due.
    pub step: Step,
    /// It holds a lease.
    pub leased: bool,
    /// When what it protects ends, if it ends.
    pub expires_at: Option<Instant>,
    /// The volume has an answer for it.
    pub has_answer: bool,
}

/// What to do with the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TokenStep {
    /// Nothing.
    Keep,
    /// Renew it.
    Renew,
    /// Log in again.
    Login,
    /// A login is needed, but kubelet's service-account token has expired:
    /// wait for its next republish.
    Stale,
    /// A failed token step's retry is not due yet.
    Wait,
}

/// What one refresh does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RefreshPlan {
    /// The token.
    pub token: TokenStep,
    /// Secrets (by index) whose lease is renewed in place.
    pub renew: Vec<usize>,
    /// Secrets fetched again.
    pub refetch: Vec<usize>,
    /// Static re-reads put off until Vault's pushback ends.
    pub defer: Vec<usize>,
}

/// Plans one refresh at `now`. `paused_until`: Vault pushed back and
/// cosmetic re-reads wait until then.
pub(super) fn plan(
    token: TokenClock,
    secrets: &[SecretClock],
    now: Instant,
    paused_until: Option<Instant>,
) -> RefreshPlan {
    let mut plan = RefreshPlan {
        token: token_step(token, now),
        renew: Vec::new(),
        refetch: Vec::new(),
        defer: Vec::new(),
    };
    for (i, secret) in secrets.iter().enumerate() {
        let ended = secret.expires_at.is_some_and(|end| end <= now);
        if secret.due > now && !ended {
            continue;
        }
        let cosmetic = secret.expires_at.is_none() && secret.has_answer;
        if secret.step == Step::Renew && secret.leased && !ended {
            plan.renew.push(i);
        } else if cosmetic && paused_until.is_some_and(|until| until > now) {
            plan.defer.push(i);
        } else {
            plan.refetch.push(i);
        }
    }
    plan
}

fn token_step(token: TokenClock, now: Instant) -> TokenStep {
    let login = if token.identity_valid {
        TokenStep::Login
    } else {
        TokenStep::Stale
    };
    match token.session {
        // No token, or it has ended: a login is due whatever the backoff
        // says (nothing can be fetched without one).
        None => login,
        Some((expires_at, _, _)) if expires_at <= now => login,
        Some(_) if token.retry_at.is_some_and(|at| at > now) => TokenStep::Wait,
        Some((_, due, true)) if due <= now => login,
        Some((_, due, false)) if due <= now => TokenStep::Renew,
        Some(_) => TokenStep::Keep,
    }
}

/// The secrets (by index) a new token must fetch again: every lease, since
/// leases end with the token that created them.
pub(super) fn after_new_token(secrets: &[SecretClock]) -> Vec<usize> {
    secrets
        .iter()
        .enumerate()
        .filter(|(_, s)| s.leased)
        .map(|(i, _)| i)
        .collect()
}

/// What a failed lease renewal leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterRenewal {
    /// It may pass on its own: retry with backoff, keep the credential.
    Retry,
    /// The lease cannot be renewed (gone, expired, not renewable): fetch a
    /// new secret.
    Refetch,
    /// Refused: the token itself may have been revoked; check it, then
    /// fetch a new secret.
    CheckToken,
}

/// Decides what a failed lease renewal leads to.
pub(super) fn after_renewal_error(error: &vault::Error) -> AfterRenewal {
    if error.is_permission_denied() {
        AfterRenewal::CheckToken
    } else if error.is_transient() {
        AfterRenewal::Retry
    } else {
        AfterRenewal::Refetch
    }
}

/// Whether a refusal may lead to asking Vault whether the token is still
/// valid: not more often than [`VALIDITY_CHECK_INTERVAL`] per volume.
pub(super) fn may_check_token(checked_at: Option<Instant>, now: Instant) -> bool {
    checked_at.is_none_or(|at| now.saturating_duration_since(at) >= VALIDITY_CHECK_INTERVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    /// The token step for every state a token can be in.
    #[tokio::test(start_paused = true)]
    async fn the_token_step_follows_the_tokens_state() {
        let now = Instant::now() + s(1000);
        let later = now + s(100);
        let earlier = now - s(100);
        // (session (expires, due, exhausted), retry_at, identity valid, step)
        let table = [
            (None, None, true, TokenStep::Login),
            (None, Some(later), true, TokenStep::Login),
            (None, None, false, TokenStep::Stale),
            (Some((later, later, false)), None, true, TokenStep::Keep),
            (Some((later, earlier, false)), None, true, TokenStep::Renew),
            (Some((later, earlier, true)), None, true, TokenStep::Login),
            (Some((later, earlier, true)), None, false, TokenStep::Stale),
            (Some((later, later, true)), None, true, TokenStep::Keep),
            (
                Some((earlier, earlier, false)),
                None,
                true,
                TokenStep::Login,
            ),
            (
                Some((later, earlier, false)),
                Some(later),
                true,
                TokenStep::Wait,
            ),
            (
                Some((later, earlier, false)),
                Some(earlier),
                true,
                TokenStep::Renew,
            ),
            // An expired token is replaced whatever the backoff says: this
            // is how a volume recovers at once after an outage.
            (
                Some((earlier, earlier, false)),
                Some(later),
                true,
                TokenStep::Login,
            ),
        ];
        for (session, retry_at, identity_valid, step) in table {
            let clock = TokenClock {
                session,
                retry_at,
                identity_valid,
            };
            assert_eq!(token_step(clock, now), step, "{clock:?}");
        }
    }

    /// Each secret lands in exactly the step its state calls for.
    #[tokio::test(start_paused = true)]
    async fn secrets_are_renewed_fetched_deferred_or_left() {
        let now = Instant::now() + s(1000);
        let (later, earlier) = (now + s(100), now - s(10));
        let secret = |due, step, leased, expires_at, has_answer| SecretClock {
            due,
            step,
            leased,
            expires_at,
            has_answer,
        };
        let secrets = [
            // 0: a renewable lease, not due.
            secret(later, Step::Renew, true, Some(later), true),
            // 1: a renewable lease, due.
            secret(earlier, Step::Renew, true, Some(later), true),
            // 2: a capped lease, due.
            secret(earlier, Step::Refetch, true, Some(later), true),
            // 3: a static secret, due.
            secret(earlier, Step::Refetch, false, None, true),
            // 4: a lease already ended, its retry not due: due anyway.
            secret(later, Step::Renew, true, Some(earlier), true),
            // 5: a certificate already ended, in backoff: due anyway.
            secret(later, Step::Refetch, false, Some(earlier), true),
            // 6: a static secret with no answer (restored), due.
            secret(earlier, Step::Refetch, false, None, false),
        ];
        let token = TokenClock {
            session: Some((later, later, false)),
            retry_at: None,
            identity_valid: true,
        };
        let plan_now = plan(token, &secrets, now, None);
        assert_eq!(plan_now.token, TokenStep::Keep);
        assert_eq!(plan_now.renew, [1]);
        assert_eq!(plan_now.refetch, [2, 3, 4, 5, 6]);
        assert!(plan_now.defer.is_empty());

        let paused = plan(token, &secrets, now, Some(later));
        assert_eq!(paused.refetch, [2, 4, 5, 6], "what expires still goes out");
        assert_eq!(paused.defer, [3], "static re-reads wait");
        let over = plan(token, &secrets, now, Some(earlier));
        assert!(over.defer.is_empty(), "a pause that ended defers nothing");

        assert_eq!(after_new_token(&secrets), [0, 1, 2, 4]);
    }

    #[test]
    fn renewal_errors_lead_to_a_retry_a_refetch_or_a_token_check() {
        let status = |status| vault::Error::Status {
            operation: "renew_lease",
            status,
            message: String::new(),
        };
        let unreachable = vault::Error::Unreachable {
            operation: "renew_lease",
            address: String::new(),
            reason: String::new(),
        };
        // (error, outcome)
        let table = [
            (status(403), AfterRenewal::CheckToken),
            (status(400), AfterRenewal::Refetch),
            (status(404), AfterRenewal::Refetch),
            (status(500), AfterRenewal::Retry),
            (status(503), AfterRenewal::Retry),
            (unreachable, AfterRenewal::Retry),
        ];
        for (error, outcome) in table {
            assert_eq!(after_renewal_error(&error), outcome, "{error}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn token_checks_are_rate_limited() {
        let now = Instant::now() + s(1000);
        assert!(may_check_token(None, now));
        assert!(!may_check_token(Some(now - s(5)), now));
        assert!(may_check_token(Some(now - VALIDITY_CHECK_INTERVAL), now));
    }
}
